//! `receive`'s settings table as text, for `hl7-ihp config`: the commented example file
//! (`--example`) and the effective settings with their sources (`--print`), secrets
//! redacted. Both are generated from the one table, so neither can drift from it.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::Path;

use super::receive::{HTTP_TOKEN_ENV, RECEIVE_SETTINGS};
use super::settings::{Effective, Fallback, Source};

/// Width of the example's comment lines.
const WIDTH: usize = 92;

/// The commented config file: every setting of `receive`, its help, what its value looks
/// like, and its default (or what happens without it), each commented out.
pub fn example() -> String {
    let mut out = String::new();
    for line in [
        "# hl7-ihp receive's config file, given with `--config FILE` (HL7IHP_CONFIG), as",
        "# `hl7-ihp config --example` writes it: every setting, commented out with its default.",
        "# Keys are the flag names in snake case; an unknown key is an error. A flag or its",
        "# HL7IHP_<NAME> variable wins over this file, and the file over the defaults.",
        "# `hl7-ihp config --print --config FILE` shows what a receiver would run with.",
        "#",
        "# The HTTP token is not a key (a config file is often readable by many): give it in",
        &format!("# {HTTP_TOKEN_ENV} or in the file named by `http_token_file`."),
    ] {
        out.push_str(line);
        out.push('\n');
    }
    for setting in RECEIVE_SETTINGS {
        out.push('\n');
        for line in wrap(setting.help, WIDTH - 2) {
            writeln!(out, "# {line}").unwrap();
        }
        match setting.fallback {
            Fallback::Default(text) => {
                writeln!(out, "# {}", setting.value_name).unwrap();
                writeln!(out, "#{} = {}", setting.name, toml_value(text)).unwrap();
            }
            Fallback::Optional(then) => {
                writeln!(out, "# {}; not set: {then}", setting.value_name).unwrap();
                writeln!(
                    out,
                    "#{} = {}",
                    setting.name,
                    toml_string(setting.value_name)
                )
                .unwrap();
            }
        }
    }
    out
}

/// How the HTTP token was given, as `config --print` says it (never the token).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// No token.
    None,
    /// `http_token_file` (flag, variable or file key).
    File,
    /// [`HTTP_TOKEN_ENV`].
    Env,
}

/// The effective settings as TOML, one `name = value` a line with a comment naming its
/// source (`from_env` tells whether clap read a flag's value from its variable), an unset
/// optional setting as a comment; passwords in URIs as `***`, the token only as set or not.
/// The output, given back with `--config`, gives the same settings.
pub fn effective(
    sources: &[Effective],
    from_env: impl Fn(&str) -> bool,
    config_file: Option<&Path>,
    token: TokenSource,
) -> String {
    let mut out = String::new();
    let file = config_file.map_or_else(|| "none".to_owned(), |p| p.display().to_string());
    writeln!(
        out,
        "# The settings `hl7-ihp receive` would run with (config file: {file}), each from"
    )
    .unwrap();
    writeln!(
        out,
        "# its flag, else HL7IHP_<NAME>, else the config file, else its default."
    )
    .unwrap();
    for effective in sources {
        let name = effective.name;
        let Some(text) = &effective.text else {
            let then = match effective.fallback {
                Fallback::Optional(then) | Fallback::Default(then) => then,
            };
            writeln!(out, "# {name}: not set ({then})").unwrap();
            continue;
        };
        let source = match effective.source {
            Source::FlagOrEnv if from_env(name) => {
                format!("from HL7IHP_{}", name.to_ascii_uppercase())
            }
            Source::FlagOrEnv => format!("from --{}", name.replace('_', "-")),
            Source::File => "from the config file".to_owned(),
            Source::Default | Source::NotSet => "default".to_owned(),
        };
        writeln!(
            out,
            "{name} = {} # {source}",
            toml_value(&redact_password(text))
        )
        .unwrap();
    }
    let token = match token {
        TokenSource::None => "not set".to_owned(),
        TokenSource::File => "set (from http_token_file)".to_owned(),
        TokenSource::Env => format!("set (from {HTTP_TOKEN_ENV})"),
    };
    writeln!(out, "# HTTP token: {token}").unwrap();
    out
}

/// A setting's text as a TOML value: a plain number bare (as one would write it), anything
/// else a string; the config file reads both.
fn toml_value(text: &str) -> String {
    let number = !text.is_empty()
        && text.len() <= 18
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if number {
        text.to_owned()
    } else {
        toml_string(text)
    }
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => write!(out, "\\u{:04X}", u32::from(c)).unwrap(),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `scheme://user:password@host…` with the password as `***`; other text unchanged.
pub fn redact_password(text: &str) -> Cow<'_, str> {
    let Some(scheme_end) = text.find("://").map(|i| i + 3) else {
        return Cow::Borrowed(text);
    };
    let rest = &text[scheme_end..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let Some(at) = authority.rfind('@') else {
        return Cow::Borrowed(text);
    };
    let Some(colon) = authority[..at].find(':') else {
        return Cow::Borrowed(text);
    };
    Cow::Owned(format!(
        "{}***{}",
        &text[..scheme_end + colon + 1],
        &text[scheme_end + at..]
    ))
}

/// A help text (doc comment lines joined) in lines of at most `width` characters.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ReceiveArgs, ReceiveConfig};

    #[test]
    fn the_example_has_every_setting_with_its_default() {
        let example = example();
        for setting in RECEIVE_SETTINGS {
            let line = match setting.fallback {
                Fallback::Default(text) => format!("\n#{} = {}\n", setting.name, toml_value(text)),
                Fallback::Optional(_) => format!("\n#{} = ", setting.name),
            };
            assert!(example.contains(&line), "{line:?} missing");
        }
        assert!(example.lines().all(|l| l.is_empty() || l.starts_with('#')));
        assert!(
            example.lines().all(|l| l.chars().count() <= WIDTH),
            "a long line"
        );
    }

    #[test]
    fn the_example_with_its_defaults_uncommented_gives_the_defaults() {
        // Uncomment every line that sets a default: the file must parse, name only known
        // settings, and give what no file gives.
        let uncommented: String = example()
            .lines()
            .filter_map(|line| line.strip_prefix('#'))
            .filter(|line| {
                RECEIVE_SETTINGS.iter().any(|s| {
                    matches!(s.fallback, Fallback::Default(_))
                        && line.starts_with(&format!("{} = ", s.name))
                })
            })
            .map(|line| format!("{line}\n"))
            .collect();
        let n_defaults = RECEIVE_SETTINGS
            .iter()
            .filter(|s| matches!(s.fallback, Fallback::Default(_)))
            .count();
        assert_eq!(uncommented.lines().count(), n_defaults);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hl7-ihp.toml");
        std::fs::write(&path, &uncommented).unwrap();
        let args = ReceiveArgs {
            config: Some(path),
            ..ReceiveArgs::default()
        };
        assert_eq!(
            ReceiveConfig::from_args(&args).unwrap(),
            ReceiveConfig::from_args(&ReceiveArgs::default()).unwrap()
        );
        // The commented file itself is valid too.
        std::fs::write(args.config.as_ref().unwrap(), example()).unwrap();
        assert!(ReceiveConfig::from_args(&args).is_ok());
    }

    #[test]
    fn the_effective_settings_name_their_sources_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hl7-ihp.toml");
        std::fs::write(
            &file,
            "json_max_records = 50\nack_facility = 'WARD \"7\"'\n",
        )
        .unwrap();
        let mut args = ReceiveArgs {
            config: Some(file.clone()),
            ..ReceiveArgs::default()
        };
        args.settings.listen = Some("127.0.0.1:2575".into());
        args.settings.allow = Some("10.0.0.0/8".into());
        let sources = args.sources().unwrap();
        let text = effective(
            &sources,
            |name| name == "allow",
            Some(&file),
            TokenSource::Env,
        );
        for line in [
            "listen = \"127.0.0.1:2575\" # from --listen",
            "allow = \"10.0.0.0/8\" # from HL7IHP_ALLOW",
            "json_max_records = 50 # from the config file",
            "ack_facility = \"WARD \\\"7\\\"\" # from the config file",
            "dedupe = \"on\" # default",
            "# listen_tls: not set (no TLS listener)",
            "# HTTP token: set (from HL7IHP_HTTP_TOKEN)",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} not in\n{text}");
        }
        // Printed, then given back as the only source: the same settings.
        let printed = dir.path().join("printed.toml");
        std::fs::write(&printed, &text).unwrap();
        let back = ReceiveArgs {
            config: Some(printed),
            ..ReceiveArgs::default()
        };
        assert_eq!(
            ReceiveConfig::from_args(&back).unwrap(),
            ReceiveConfig::from_args(&args).unwrap()
        );
    }

    #[test]
    fn passwords_in_uris_are_redacted() {
        assert_eq!(
            redact_password("postgres://hl7:s3cret@db.example:5432/hl7?sslmode=require"),
            "postgres://hl7:***@db.example:5432/hl7?sslmode=require"
        );
        assert_eq!(
            redact_password("postgres://hl7@db/x"),
            "postgres://hl7@db/x"
        );
        assert_eq!(
            redact_password("sqlite:/var/lib/a@b:c"),
            "sqlite:/var/lib/a@b:c"
        );
        assert_eq!(redact_password("http://h/p:x@y"), "http://h/p:x@y");
        let mut args = ReceiveArgs::default();
        args.settings.store = Some("postgres://hl7:s3cret@db/hl7".into());
        let sources = args.sources().unwrap();
        let text = effective(&sources, |_| false, None, TokenSource::None);
        assert!(
            !text.contains("s3cret") && text.contains("postgres://hl7:***@db/hl7"),
            "{text}"
        );
        // And the validated configuration never shows it.
        let config = ReceiveConfig::from_args(&args).unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
    }

    #[test]
    fn help_is_wrapped_at_word_boundaries() {
        assert_eq!(wrap(" a bb  ccc dddd", 6), ["a bb", "ccc", "dddd"]);
        assert_eq!(toml_value("0"), "0");
        assert_eq!(toml_value("007"), "\"007\"");
        assert_eq!(toml_value("5m"), "\"5m\"");
        assert_eq!(toml_string("a\u{1}"), "\"a\\u0001\"");
    }
}
