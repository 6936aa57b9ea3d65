//! The machinery that lets each setting be declared once: `declare_settings!` turns a table
//! of settings into the clap flags (with their `HL7IHP_<NAME>` variables), the config file's
//! keys, the defaults and the validation, and names the setting and its source in errors.

use std::path::Path;

use clap::builder::{OsStr, Resettable};

use super::ConfigError;

/// Declares a command's settings, one line each (with its help as a doc comment):
///
/// ```text
/// /// MLLP address to listen on.
/// listen: SocketAddr = address, "ADDR", default "0.0.0.0:2575";
/// ```
///
/// `name: Type = parser, "VALUE NAME", default "TEXT"` makes the flag `--name` (read also
/// from `HL7IHP_NAME` and the config file's `name` key when the table reads them), its help
/// with `[default: TEXT]`, and a field `name: Type` validated by `parser` (a
/// `fn(&str) -> Result<Type, String>`, see [`super::values`]); the default is text too, so
/// it goes through the same parser. `optional "WHAT THEN"` instead of `default` makes the
/// field an `Option` that is `None` when no source gives the setting; the text says in the
/// help what happens then.
///
/// It generates two structs: the flags (every value as text, for clap; `Debug` shows only
/// which were given, as a value may carry a password) and the validated values, with
/// `resolve` that merges flag, then environment, then file, then default.
macro_rules! declare_settings {
    (
        $(#[$flags_meta:meta])*
        pub struct $flags:ident reads $reads:expr;
        $(#[$values_meta:meta])*
        $vis:vis struct $values:ident;
        $(
            $(#[doc = $help:literal])+
            $name:ident: $ty:ty = $parse:expr, $value_name:literal, $fallback:ident $shown:literal;
        )+
    ) => {
        $(#[$flags_meta])*
        #[derive(Clone, Default, clap::Args)]
        pub struct $flags {
            $(
                $(#[doc = $help])+
                #[arg(
                    long,
                    env = $crate::config::settings::env($reads, stringify!($name)),
                    value_name = $value_name,
                    help = $crate::config::settings::help(concat!($($help),+), $shown),
                )]
                pub $name: Option<String>,
            )+
        }

        impl std::fmt::Debug for $flags {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut given = Vec::new();
                $(
                    if self.$name.is_some() {
                        given.push(stringify!($name));
                    }
                )+
                f.debug_struct(stringify!($flags)).field("given", &given).finish()
            }
        }

        $(#[$values_meta])*
        $vis struct $values {
            $(
                $(#[doc = $help])+
                pub $name: $ty,
            )+
        }

        impl $values {
            /// Merges each setting's flag (and environment variable), then the config file,
            /// then its default, and validates it; a key of the file that names no setting
            /// is an error too.
            $vis fn resolve(
                flags: &$flags,
                mut file: $crate::config::settings::ConfigFile,
            ) -> Result<$values, $crate::config::ConfigError> {
                let values = $values {
                    $(
                        $name: $crate::config::settings::$fallback(
                            $crate::config::settings::given(
                                $reads,
                                stringify!($name),
                                flags.$name.as_deref(),
                                &mut file,
                            )?,
                            stringify!($name),
                            $shown,
                            $parse,
                        )?,
                    )+
                };
                file.finish()?;
                Ok(values)
            }
        }

        // Only `receive`'s table reads a file, so only it is described by `hl7-ihp config`.
        #[allow(dead_code)]
        impl $values {
            /// Every setting of the table, in its order, as `config --example` describes it.
            $vis const TABLE: &'static [$crate::config::settings::SettingDoc] = &[
                $(
                    $crate::config::settings::SettingDoc {
                        name: stringify!($name),
                        value_name: $value_name,
                        help: concat!($($help),+),
                        fallback: $crate::config::settings::Fallback::$fallback($shown),
                    },
                )+
            ];

            /// Each setting's text and the source it came from, merged as `resolve` merges
            /// them but not validated, for `config --print`.
            $vis fn sources(
                flags: &$flags,
                mut file: $crate::config::settings::ConfigFile,
            ) -> Result<Vec<$crate::config::settings::Effective>, $crate::config::ConfigError> {
                let sources = vec![
                    $(
                        $crate::config::settings::Effective::of(
                            $crate::config::settings::given(
                                $reads,
                                stringify!($name),
                                flags.$name.as_deref(),
                                &mut file,
                            )?,
                            stringify!($name),
                            $crate::config::settings::Fallback::$fallback($shown),
                        ),
                    )+
                ];
                file.finish()?;
                Ok(sources)
            }
        }
    };
}

pub(crate) use declare_settings;

/// Where a command's settings come from besides its flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reads {
    /// Flags only (`send`, `demo`).
    Flags,
    /// Flags, `HL7IHP_<NAME>` environment variables and the `--config` file (`receive`).
    FlagsEnvAndFile,
}

/// The environment variable clap reads for a setting, if the command reads any.
pub fn env(reads: Reads, name: &str) -> Resettable<OsStr> {
    match reads {
        Reads::Flags => Resettable::Reset,
        Reads::FlagsEnvAndFile => {
            Resettable::Value(OsStr::from(format!("HL7IHP_{}", name.to_uppercase())))
        }
    }
}

/// A setting's help line with its default, as `--help` shows it; without the doc comment's
/// final period, as clap writes the help it takes from doc comments.
pub fn help(doc: &str, shown: &str) -> String {
    let shown = if shown.is_empty() { "empty" } else { shown };
    let doc = doc.trim();
    let doc = doc.strip_suffix('.').unwrap_or(doc);
    format!("{doc} [default: {shown}]")
}

/// One line of a settings table, as `config --example` describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SettingDoc {
    /// The setting's name: the config file's key, the flag in kebab case.
    pub name: &'static str,
    /// What its value looks like, as `--help` shows it.
    pub value_name: &'static str,
    /// Its doc comment's lines, joined.
    pub help: &'static str,
    /// Its default, or what happens without it.
    pub fallback: Fallback,
}

/// What a setting is when no source gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// The default's text, parsed like any given text.
    Default(&'static str),
    /// No value; the text says what happens then.
    Optional(&'static str),
}

// Named as the table's keywords, so that the macro can call them by those.
impl Fallback {
    /// `default "TEXT"`.
    pub const fn default(shown: &'static str) -> Fallback {
        Fallback::Default(shown)
    }

    /// `optional "WHAT THEN"`.
    pub const fn optional(shown: &'static str) -> Fallback {
        Fallback::Optional(shown)
    }
}

/// Where a setting's effective text came from, as `config --print` says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The flag or its `HL7IHP_<NAME>` variable (clap reads both into the flag; the command,
    /// which has clap's matches, tells them apart).
    FlagOrEnv,
    /// The `--config` file.
    File,
    /// The table's default.
    Default,
    /// No source and no default.
    NotSet,
}

/// A setting's effective text (`None` when not set) and its source, not validated.
#[derive(Clone, PartialEq, Eq)]
pub struct Effective {
    /// The setting's name.
    pub name: &'static str,
    /// Its text as given, or its default's.
    pub text: Option<String>,
    /// Where the text came from.
    pub source: Source,
    /// What happens without it (for an optional setting).
    pub fallback: Fallback,
}

impl Effective {
    /// The text a source gave, else the fallback's.
    pub fn of(given: Option<Given>, name: &'static str, fallback: Fallback) -> Effective {
        let (text, source) = match (given, fallback) {
            (Some(given), _) => {
                let source = match given.origin {
                    Origin::Flag(_) => Source::FlagOrEnv,
                    Origin::File => Source::File,
                    Origin::Default => Source::Default,
                };
                (Some(given.text), source)
            }
            (None, Fallback::Default(text)) => (Some(text.to_owned()), Source::Default),
            (None, Fallback::Optional(_)) => (None, Source::NotSet),
        };
        Effective {
            name,
            text,
            source,
            fallback,
        }
    }
}

// A value may carry a password one day (a store's URI): `Debug` shows only the name and
// the source.
impl std::fmt::Debug for Effective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Effective")
            .field("name", &self.name)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Where a value came from, for the error message.
#[derive(Clone, Copy, Debug)]
enum Origin {
    Flag(Reads),
    File,
    Default,
}

/// A setting's text as one source gave it, not yet validated.
#[derive(Debug)]
pub struct Given {
    name: &'static str,
    text: String,
    origin: Origin,
}

impl Given {
    fn parse<T>(self, parse: impl FnOnce(&str) -> Result<T, String>) -> Result<T, ConfigError> {
        parse(&self.text).map_err(|reason| self.error(reason))
    }

    fn error(&self, reason: String) -> ConfigError {
        let name = self.name;
        let flag = name.replace('_', "-");
        let source_name = match self.origin {
            Origin::Flag(Reads::Flags) => format!("--{flag}"),
            Origin::Flag(Reads::FlagsEnvAndFile) => {
                format!("--{flag} or HL7IHP_{}", name.to_uppercase())
            }
            Origin::File => format!("`{name}` in the config file"),
            Origin::Default => "its default".to_owned(),
        };
        ConfigError {
            name,
            source_name,
            reason,
        }
    }
}

/// Settings whose text is a `;`-separated list, which the config file may also give as a
/// TOML list of strings.
const LIST_SETTINGS: &[&str] = &["placeholder_values"];

/// The first source that gives a setting: its flag (clap has already read the environment
/// variable into it), else the config file's key. The key is taken from the file either way,
/// so that what is left at the end names no setting.
pub fn given(
    reads: Reads,
    name: &'static str,
    flag: Option<&str>,
    file: &mut ConfigFile,
) -> Result<Option<Given>, ConfigError> {
    let from_file = file.table.remove(name);
    if let Some(text) = flag {
        return Ok(Some(Given {
            name,
            text: text.to_owned(),
            origin: Origin::Flag(reads),
        }));
    }
    let Some(value) = from_file else {
        return Ok(None);
    };
    let given = |text: String| Given {
        name,
        text,
        origin: Origin::File,
    };
    match value {
        toml::Value::String(s) => Ok(Some(given(s))),
        toml::Value::Integer(i) => Ok(Some(given(i.to_string()))),
        toml::Value::Boolean(b) => Ok(Some(given(if b { "on" } else { "off" }.to_owned()))),
        // A list of strings: a `;`-separated setting's items (`placeholder_values`), else
        // the flag's commas (`connect = ["bed-12=10.0.0.5:4001", …]`).
        toml::Value::Array(items) => {
            let texts: Option<Vec<&str>> = items.iter().map(toml::Value::as_str).collect();
            let separator = if LIST_SETTINGS.contains(&name) {
                ";"
            } else {
                ","
            };
            match texts {
                Some(texts) => Ok(Some(given(texts.join(separator)))),
                None => Err(given(String::new()).error("expected a list of strings".into())),
            }
        }
        _ => Err(given(String::new())
            .error("expected a string, a number, a boolean or a list of strings".into())),
    }
}

/// A setting with a default: the given text, else the default's, through the same parser.
pub fn default<T>(
    given: Option<Given>,
    name: &'static str,
    default: &'static str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    given
        .unwrap_or_else(|| Given {
            name,
            text: default.to_owned(),
            origin: Origin::Default,
        })
        .parse(parse)
}

/// A setting without a default: `None` when no source gives it.
pub fn optional<T>(
    given: Option<Given>,
    _name: &'static str,
    _when_not_given: &'static str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, ConfigError> {
    given.map(|given| given.parse(parse)).transpose()
}

/// The settings of a `--config` TOML file that no setting has taken yet.
#[derive(Debug, Default)]
pub struct ConfigFile {
    table: toml::Table,
    path: Option<std::path::PathBuf>,
}

impl ConfigFile {
    /// No file: every setting comes from its flag or its default.
    pub fn none() -> ConfigFile {
        ConfigFile::default()
    }

    /// Reads a file given by `--config`.
    pub fn read(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| config_error(format!("cannot read {}: {e}", path.display())))?;
        let table = toml::from_str(&text)
            .map_err(|e| config_error(format!("{}: {}", path.display(), e.message())))?;
        Ok(ConfigFile {
            table,
            path: Some(path.to_owned()),
        })
    }

    /// Fails on keys that name no setting, as a misspelt key would otherwise be ignored.
    pub fn finish(self) -> Result<(), ConfigError> {
        let (Some(path), false) = (&self.path, self.table.is_empty()) else {
            return Ok(());
        };
        let keys: Vec<String> = self.table.keys().map(|k| format!("`{k}`")).collect();
        Err(config_error(format!(
            "{}: unknown setting {}",
            path.display(),
            keys.join(", ")
        )))
    }
}

/// An error of the `--config` setting itself: the file cannot be read or holds an unknown key.
fn config_error(reason: String) -> ConfigError {
    ConfigError {
        name: "config",
        source_name: "--config or HL7IHP_CONFIG".into(),
        reason,
    }
}
