//! The settings of `hl7-ihp receive`, declared once in one table, and the typed groups they
//! are validated into: what the MLLP side, HTTP, the store and the exporter each need.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use hl7::ack::AckMode;
use hl7::bare::Framing;
use jiff::tz::TimeZone;

use super::ConfigError;
use super::settings::{ConfigFile, Effective, Reads, SettingDoc, declare_settings};
use super::values::{
    address, address_or_off, choice, duration, number, path, positive, positive_duration, switch,
    text,
};
use crate::export::{Fields, PatientFiles};
use crate::links::LinkTarget;
use crate::marks::PlaceholderValues;
use crate::net::allow::AddressList;
use crate::retention::{RetentionConfig, parse_retention};
use crate::store::{StoreLocation, StoreOptions};
use crate::tls::ServerTlsFiles;

/// The flags of `hl7-ihp receive`: `--config` and every setting of the table below.
#[derive(Debug, Default, Args)]
pub struct ReceiveArgs {
    /// TOML file with settings (keys are the flag names in snake case).
    #[arg(long, env = "HL7IHP_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The settings as given on the command line or in the environment.
    #[command(flatten)]
    pub settings: ReceiveFlags,
}

// One line per setting: adding a setting is adding a line here and using its value where
// `ReceiveConfig::from_settings` groups them (an unused one fails the build as dead code).
declare_settings! {
    /// The settings of `hl7-ihp receive` as text. Each is also read from `HL7IHP_<NAME>` and
    /// from the config file's `<name>` key; none has a clap default, so that the file can
    /// fill in what neither flag nor environment gave.
    pub struct ReceiveFlags reads Reads::FlagsEnvAndFile;
    /// Each setting of `hl7-ihp receive` validated, before they are grouped.
    #[derive(Clone, Debug)]
    pub(super) struct ReceiveSettings;

    /// MLLP address to listen on (plain TCP), or `off`.
    listen: Option<SocketAddr> = address_or_off, "ADDR|off", default "0.0.0.0:2575";
    /// MLLP-over-TLS address to listen on (needs --tls-cert and --tls-key).
    listen_tls: Option<SocketAddr> = address, "ADDR", optional "no TLS listener";
    /// The TLS listener's certificate chain, PEM, its own certificate first.
    tls_cert: Option<PathBuf> = path, "FILE", optional "none";
    /// The TLS listener's private key, PEM.
    tls_key: Option<PathBuf> = path, "FILE", optional "none";
    /// CA certificates, PEM: a client certificate issued by one of them is then required.
    tls_client_ca: Option<PathBuf> = path, "FILE", optional "no client certificates";
    /// Certificate revocation lists of those CAs, PEM (needs --tls-client-ca).
    tls_crl: Option<PathBuf> = path, "FILE", optional "no CRL";
    /// Time a connection has for its PROXY header and its TLS handshake.
    tls_handshake_timeout: Duration = positive_duration, "DURATION", default "10s";
    /// Refuse to start with MLLP or HTTP on a non-loopback address without TLS.
    require_tls: bool = switch, "on|off", default "off";
    /// Addresses that may connect over MLLP, e.g. `10.20.0.0/16,192.0.2.7`; others are
    /// closed before a byte is read.
    allow: AddressList = AddressList::parse, "CIDR,...|any", default "any";
    /// Load balancers whose PROXY protocol header (v1 or v2) names the device; a header
    /// from anyone else is refused.
    proxy_protocol_from: Option<AddressList> = AddressList::parse, "CIDR,...",
        optional "PROXY headers from no one";
    /// Audit trail: JSON lines of connections, refusals, TLS failures, messages (no
    /// names, no bodies) and reloads; file 0600, reopened on SIGHUP.
    audit_log: Option<PathBuf> = path, "FILE", optional "no audit trail";
    /// Directory for the database and the patient files.
    data_dir: PathBuf = path, "DIR", default "./data";
    /// Where messages are stored: a SQLite file, as PATH or sqlite:PATH, or PostgreSQL,
    /// postgres://user[:password]@host[:port]/db (no TLS to the database yet).
    store: Option<StoreLocation> = StoreLocation::parse, "LOCATION",
        optional "hl7-ihp.sqlite3 in the data directory";
    /// File whose first line is the PostgreSQL password of --store (instead of the URL's).
    store_password_file: Option<PathBuf> = path, "FILE", optional "the URL's password, if any";
    /// HTTP address for /healthz, /metrics and the API, or `off`.
    http: Option<SocketAddr> = address_or_off, "ADDR|off", default "127.0.0.1:8080";
    /// Serve HTTPS instead with this certificate chain, PEM (needs --http-tls-key).
    http_tls_cert: Option<PathBuf> = path, "FILE", optional "plain HTTP";
    /// The HTTPS private key, PEM.
    http_tls_key: Option<PathBuf> = path, "FILE", optional "plain HTTP";
    /// Recognise retransmissions (same MSH-3, MSH-4, MSH-10 and bytes).
    dedupe: bool = switch, "on|off", default "on";
    /// `auto` follows MSH-15/16; `original` answers AA/AE/AR to everything.
    ack_mode: AckMode = ack_mode, "auto|original", default "auto";
    /// Which patient files to keep: `json` (patient_<id>.json, the prototype's document),
    /// `ndjson` (patient_<id>.ndjson, one record a line, appended), `both`, or `off`.
    patient_files: PatientFiles = patient_files, "json|ndjson|both|off", default "json";
    /// Keys of the patient files' records: `prototype` (the prototype's six) or `full`
    /// (also code text, coding system, value type, sub-id, number, status, device,
    /// equipment, received time, control id).
    json_fields: Fields = json_fields, "prototype|full", default "prototype";
    /// Newest records per patient JSON file, 0 for all (README, "Patient files", for
    /// the cost of more).
    json_max_records: usize = number, "N", default "200";
    /// Least time between two rewrites of one patient's JSON file, e.g. `2s`, `0s`.
    json_min_interval: Duration = duration, "DURATION", default "3s";
    /// Largest MLLP payload in bytes.
    max_frame_bytes: usize = positive, "N", default "1048576";
    /// Open connections in total.
    max_connections: usize = positive, "N", default "4096";
    /// Open connections from one peer address.
    max_connections_per_peer: usize = positive, "N", default "1024";
    /// Bytes all connections together may hold in unfinished frames; past it the
    /// connections holding the most are closed. 256 MiB, a sixteenth of a 4 GB host; at
    /// least twice --max-frame-bytes.
    max_partial_bytes: usize = positive, "N", default "268435456";
    /// Time since the last complete frame before a connection is closed, e.g. `300s`, `5m`
    /// (bytes outside frames do not count).
    idle_timeout: Duration = positive_duration, "DURATION", default "300s";
    /// Deadline from a frame's first byte to its end (and for writing an ACK).
    frame_timeout: Duration = positive_duration, "DURATION", default "30s";
    /// Time an HTTP client has to send a request's head.
    http_header_timeout: Duration = positive_duration, "DURATION", default "10s";
    /// Time an HTTP connection may move no byte either way before it is closed.
    http_idle_timeout: Duration = positive_duration, "DURATION", default "60s";
    /// Open HTTP connections; more wait in the kernel's backlog.
    http_max_connections: usize = positive, "N", default "256";
    /// File whose first line is the bearer token the HTTP side requires (or give the token
    /// itself in HL7IHP_HTTP_TOKEN); needed when --http is not a loopback address.
    http_token_file: Option<PathBuf> = path, "FILE",
        optional "no token; only a loopback --http is allowed";
    /// A monitor with no message for longer than this is shown `stale` (API, dashboard).
    stale_after: Duration = positive_duration, "DURATION", default "30s";
    /// A monitor with no message for longer than this is shown `offline`.
    offline_after: Duration = positive_duration, "DURATION", default "5m";
    /// Our MSH-3 in ACKs where the sender left MSH-5 empty.
    ack_application: String = text, "NAME", default "HL7IHP";
    /// Our MSH-4 in ACKs where the sender left MSH-6 empty.
    ack_facility: String = text, "NAME", default "";
    /// What identifies a patient: `id` (PID-3.1, the prototype's rule) or `authority-id`
    /// (PID-3.4 and PID-3.1, for ids from several authorities).
    patient_identity: PatientIdentity = patient_identity, "id|authority-id", default "id";
    /// The site's IANA time zone, e.g. `Europe/Zurich`: an HL7 time without an offset then
    /// takes MSH-7's offset, else this zone's at that local time.
    timezone: Option<TimeZone> = time_zone, "ZONE", optional "none: times without an offset stay as written";
    /// Log lines as `text` or `json`.
    log_format: LogFormat = log_format_of, "text|json", default "text";
    /// Remove accepted messages and their observations received longer ago than this, e.g.
    /// `90d`, `12h`, in the background; only those the patient files already hold.
    retention: Option<Duration> = parse_retention, "DURATION|off", default "off";
    /// Remove refused frames (errors and rejects) received longer ago than this; `off`
    /// keeps them for inspection, whatever --retention says.
    retention_rejected: Option<Duration> = parse_retention, "DURATION|off", default "off";
    /// Framing on the plain MLLP listener: `mllp`, `none` (bare HL7, as some monitors
    /// write it), or `auto` (bare HL7 when a connection starts with MSH, FHS or BHS
    /// instead of 0x0B). The TLS listener is MLLP only.
    framing: Framing = framing_of, "mllp|auto|none", default "auto";
    /// Quiet time after which a bare HL7 message is taken as whole (it also ends at the
    /// next MSH), e.g. `200ms`; within --frame-timeout.
    unframed_gap: Duration = positive_duration, "DURATION", default "200ms";
    /// Also keep `device_<id>.json` in the patients folder for each device whose messages
    /// name no patient (PID-3 empty or absent): the patient files' shape, with the device
    /// and its location (docs/patient-files.md, "Unassigned devices").
    device_files: bool = switch, "on|off", default "off";
    /// An extra plain MLLP address for devices that ask demographic queries (QRY^A19,
    /// QBP^Q22) on a port of their own, e.g. `0.0.0.0:3502` (a Mindray VS8), or `off`; it
    /// answers every message as --listen does.
    query_listen: Option<SocketAddr> = address_or_off, "ADDR|off", default "off";
    /// Devices or gateways that serve HL7 (they push to whoever connects) to connect to,
    /// as `NAME=HOST:PORT` (or `HOST:PORT`, named by its address), comma-separated; in the
    /// file also a list of such strings. Read and answered as on the listener, reconnected
    /// with back-off (0.5 s doubling to 30 s).
    connect: Vec<LinkTarget> = LinkTarget::parse_list, "NAME=HOST:PORT,...", default "";
    /// Framing on the --connect links: `mllp`, `none` (bare HL7) or `auto` (from the
    /// first bytes).
    connect_framing: Framing = framing_of, "mllp|auto|none", default "auto";
    /// TLS on every --connect link, the device's certificate checked against
    /// --connect-tls-ca and the link's host (or --connect-tls-server-name).
    connect_tls: bool = switch, "on|off", default "off";
    /// CA certificates, PEM, that the devices' certificates must come from (needs
    /// --connect-tls on).
    connect_tls_ca: Option<PathBuf> = path, "FILE", optional "the system's CA bundle";
    /// Client certificate chain to present to the devices, PEM (with --connect-tls-key).
    connect_tls_cert: Option<PathBuf> = path, "FILE", optional "no client certificate";
    /// Private key of --connect-tls-cert, PEM.
    connect_tls_key: Option<PathBuf> = path, "FILE", optional "no client certificate";
    /// Name every device's certificate must carry, a DNS name or an IP address.
    connect_tls_server_name: Option<String> = server_name, "NAME", optional "each link's host";
    /// Values that mean "no value" per sending application (MSH-3), stored marked and never
    /// as numbers: `APP=V,V;APP=V`, `*` for every application, `off` for none (in the file
    /// also a list of `APP=V,V` strings). The default names only XH80X monitors.
    placeholder_values: PlaceholderValues = PlaceholderValues::parse, "APP=V,...;...|off",
        default "XH80X=-999,-99.9";
}

/// A name a server certificate can carry: a DNS name or an IP address literal.
fn server_name(text: &str) -> Result<String, String> {
    let text = text.trim();
    rustls::pki_types::ServerName::try_from(text)
        .map(|_| text.to_owned())
        .map_err(|_| "expected a DNS name or an IP address".into())
}

/// The `--connect` links (client mode) and their TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinksConfig {
    /// The links, each with `--connect-framing`.
    pub targets: Vec<LinkTarget>,
    /// `--connect-tls on`: its files; `None`: plain TCP.
    pub tls: Option<ConnectTls>,
}

/// What `--connect-tls` connects with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectTls {
    /// Trusted CAs; `None`: the system's bundle.
    pub ca: Option<PathBuf>,
    /// Our client certificate chain and its key, both or neither.
    pub cert_and_key: Option<(PathBuf, PathBuf)>,
    /// The name to check every device's certificate against; `None`: each link's host.
    pub server_name: Option<String>,
}

/// Every setting of `receive`'s table, in its order: what `config --example` describes.
pub const RECEIVE_SETTINGS: &[SettingDoc] = ReceiveSettings::TABLE;

impl ReceiveArgs {
    /// Each setting's effective text and source, merged as [`ReceiveConfig::from_args`]
    /// merges them (not validated: validate with it first).
    pub fn sources(&self) -> Result<Vec<Effective>, ConfigError> {
        let file = match &self.config {
            Some(path) => ConfigFile::read(path)?,
            None => ConfigFile::none(),
        };
        ReceiveSettings::sources(&self.settings, file)
    }
}

/// How a patient is identified (docs/storage.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatientIdentity {
    /// PID-3.1 of the first repetition with an id.
    Id,
    /// PID-3.4 and PID-3.1, as `authority/id`.
    AuthorityAndId,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn ack_mode(text: &str) -> Result<AckMode, String> {
    choice(
        text,
        &[("auto", AckMode::Auto), ("original", AckMode::Original)],
    )
}

fn patient_identity(text: &str) -> Result<PatientIdentity, String> {
    choice(
        text,
        &[
            ("id", PatientIdentity::Id),
            ("authority-id", PatientIdentity::AuthorityAndId),
        ],
    )
}

/// An IANA time zone name, looked up in the system's time zone database at start-up.
fn time_zone(text: &str) -> Result<TimeZone, String> {
    TimeZone::get(text.trim()).map_err(|_| {
        "expected an IANA time zone name such as Europe/Zurich, found in the time zone database"
            .to_owned()
    })
}

fn patient_files(text: &str) -> Result<PatientFiles, String> {
    choice(
        text,
        &[
            ("json", PatientFiles::Json),
            ("ndjson", PatientFiles::Ndjson),
            ("both", PatientFiles::Both),
            ("off", PatientFiles::Off),
        ],
    )
}

fn json_fields(text: &str) -> Result<Fields, String> {
    choice(
        text,
        &[("prototype", Fields::Prototype), ("full", Fields::Full)],
    )
}

fn framing_of(text: &str) -> Result<Framing, String> {
    choice(
        text,
        &[
            ("mllp", Framing::Mllp),
            ("auto", Framing::Auto),
            ("none", Framing::None),
        ],
    )
}

fn log_format_of(text: &str) -> Result<LogFormat, String> {
    choice(
        text,
        &[("text", LogFormat::Text), ("json", LogFormat::Json)],
    )
}

/// Limits on connections and frames (README, "Limits").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest MLLP payload.
    pub max_frame_bytes: usize,
    /// Bytes all connections together may hold in unfinished frames.
    pub max_partial_bytes: usize,
    /// Open connections in total.
    pub max_connections: usize,
    /// Open connections per peer address.
    pub max_connections_per_peer: usize,
    /// Time since the last complete frame before closing (outside a frame).
    pub idle_timeout: Duration,
    /// Deadline from a frame's first byte to its end.
    pub frame_timeout: Duration,
    /// How the connections' messages are framed.
    pub framing: Framing,
    /// Quiet time that ends a bare HL7 message.
    pub unframed_gap: Duration,
}

/// Limits of the HTTP side, its own so that HTTP can never starve MLLP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time an HTTP client has to send a request's head.
    pub header_timeout: Duration,
    /// Time an HTTP connection may move no byte before it is closed.
    pub idle_timeout: Duration,
    /// Open HTTP connections.
    pub max_connections: usize,
}

/// The TLS listener of the MLLP side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MllpTlsConfig {
    /// Its address.
    pub listen: SocketAddr,
    /// Its certificate, key, client CA and CRL.
    pub files: ServerTlsFiles,
}

/// Who may connect over MLLP, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessConfig {
    /// `--allow`.
    pub allow: AddressList,
    /// `--proxy-protocol-from`.
    pub proxy_from: Option<AddressList>,
    /// Time for the PROXY header and the TLS handshake.
    pub handshake_timeout: Duration,
}

/// What the MLLP side needs: where to listen, its limits, and how to answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MllpConfig {
    /// The plain MLLP address, `None` when off.
    pub listen: Option<SocketAddr>,
    /// The TLS listener.
    pub tls: Option<MllpTlsConfig>,
    /// The allowlist, PROXY headers and the handshake timeout.
    pub access: AccessConfig,
    /// Connection and frame limits.
    pub limits: Limits,
    /// ACK mode.
    pub ack_mode: AckMode,
    /// Our MSH-3 in ACKs.
    pub ack_application: String,
    /// Our MSH-4 in ACKs.
    pub ack_facility: String,
    /// Patient identity rule.
    pub patient_identity: PatientIdentity,
    /// `--timezone`: where a time without an offset is read; `None` leaves it as written.
    pub time_zone: Option<TimeZone>,
    /// `--query-listen`: an extra plain listener (demographic queries), `None` when off.
    pub query_listen: Option<SocketAddr>,
    /// `--placeholder-values`: each sending application's values for "no value".
    pub placeholder_values: PlaceholderValues,
}

/// What the HTTP side needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    /// HTTP address, `None` when off.
    pub listen: Option<SocketAddr>,
    /// Its limits.
    pub limits: HttpLimits,
    /// HTTPS's certificate and key (`client_ca` and `crl` unused).
    pub tls: Option<ServerTlsFiles>,
    /// The bearer token every path but `/healthz` requires; `None`: no token (then only a
    /// loopback address is allowed).
    pub token: Option<HttpToken>,
}

/// The environment variable that gives the HTTP token itself. Not a flag (a command line is
/// visible in `ps`) nor a config file key (a config file is often readable by all): the file
/// way is `--http-token-file`.
pub const HTTP_TOKEN_ENV: &str = "HL7IHP_HTTP_TOKEN";

/// A bearer token: visible ASCII, no spaces. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpToken(String);

impl HttpToken {
    /// Checks a token's text (already trimmed).
    pub fn new(text: &str) -> Result<HttpToken, String> {
        if text.is_empty() {
            return Err("the token is empty".into());
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("expected a token of visible ASCII characters without spaces".into());
        }
        Ok(HttpToken(text.to_owned()))
    }

    /// The secret itself, for the one comparison that needs it.
    pub fn secret(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for HttpToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpToken(<redacted>)")
    }
}

/// Reads a token file: its first line, trimmed. Refuses an unreadable or empty file; warns
/// when group or others may read it.
fn read_token_file(path: &std::path::Path) -> Result<HttpToken, String> {
    use std::os::unix::fs::PermissionsExt;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let first = text.lines().next().unwrap_or_default().trim();
    let token = HttpToken::new(first).map_err(|reason| format!("{}: {reason}", path.display()))?;
    if let Ok(metadata) = std::fs::metadata(path)
        && metadata.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            file = %path.display(),
            "the HTTP token file is readable by group or others; chmod 600 it"
        );
    }
    Ok(token)
}

/// `--store` with the password of `--store-password-file` (its first line, trimmed), which
/// only a PostgreSQL location takes.
pub(crate) fn with_password_file(
    store: Option<StoreLocation>,
    path: &std::path::Path,
) -> Result<StoreLocation, ConfigError> {
    let error = |reason: String| {
        ConfigError::new(
            "store_password_file",
            "--store-password-file, HL7IHP_STORE_PASSWORD_FILE or the config file",
            reason,
        )
    };
    let Some(StoreLocation::Postgres(location)) = store else {
        return Err(error("a password file needs a postgres:// --store".into()));
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| error(format!("cannot read {}: {e}", path.display())))?;
    let password = text.lines().next().unwrap_or_default().trim();
    if password.is_empty() {
        return Err(error(format!("{} holds no password", path.display())));
    }
    Ok(StoreLocation::Postgres(
        location.with_password(password.to_string()),
    ))
}

/// The token from `--http-token-file` or [`HTTP_TOKEN_ENV`] (not both), if either is given.
fn http_token(
    file: Option<&std::path::Path>,
    env: Option<std::ffi::OsString>,
) -> Result<Option<HttpToken>, ConfigError> {
    let file_error = |reason: String| {
        ConfigError::new(
            "http_token_file",
            "--http-token-file, HL7IHP_HTTP_TOKEN_FILE or the config file",
            reason,
        )
    };
    let env_error =
        |reason: String| ConfigError::new("http_token", HTTP_TOKEN_ENV, reason.to_owned());
    match (file, env) {
        (Some(_), Some(_)) => Err(file_error(format!(
            "give the token either in a file or in {HTTP_TOKEN_ENV}, not both"
        ))),
        (Some(path), None) => read_token_file(path).map(Some).map_err(file_error),
        (None, Some(text)) => {
            let text = text
                .into_string()
                .map_err(|_| env_error("expected a token of visible ASCII characters".into()))?;
            HttpToken::new(text.trim()).map(Some).map_err(env_error)
        }
        (None, None) => Ok(None),
    }
}

impl HttpConfig {
    /// Refuses an HTTP side that anyone on the network could use: a non-loopback address
    /// needs a token.
    pub fn check_access(&self) -> Result<(), ConfigError> {
        match self.listen {
            Some(address) if !address.ip().is_loopback() && self.token.is_none() => {
                Err(ConfigError::new(
                    "http",
                    "--http, HL7IHP_HTTP or the config file",
                    format!(
                        "{address} is not a loopback address, so the HTTP side needs a token: \
                         set --http-token-file (HL7IHP_HTTP_TOKEN_FILE, `http_token_file`) or \
                         {HTTP_TOKEN_ENV}, or bind --http to 127.0.0.1"
                    ),
                ))
            }
            _ => Ok(()),
        }
    }
}

/// When a monitor counts as gone quiet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveConfig {
    /// `--stale-after`.
    pub stale_after: Duration,
    /// `--offline-after`, longer than `stale_after`.
    pub offline_after: Duration,
}

/// Where the store is and how it behaves; `location`'s `Debug` shows no password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// `--store`, by default the SQLite file in the data directory.
    pub location: StoreLocation,
    /// Duplicate recognition.
    pub options: StoreOptions,
}

/// What the JSON exporter needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportConfig {
    /// The patient files' folder, `patients/` in the data directory.
    pub patients_dir: PathBuf,
    /// Which files.
    pub files: PatientFiles,
    /// Which keys.
    pub fields: Fields,
    /// Newest records per JSON file, 0 for all.
    pub json_max_records: usize,
    /// Least time between two rewrites of one JSON file.
    pub json_min_interval: Duration,
    /// `device_<id>.json` for unassigned devices.
    pub device_files: bool,
}

/// The validated settings of `hl7-ihp receive`, grouped by the part that uses them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiveConfig {
    /// The MLLP listener and the ACKs.
    pub mllp: MllpConfig,
    /// `/healthz`, `/metrics`.
    pub http: HttpConfig,
    /// The store.
    pub store: StoreConfig,
    /// The patient JSON files.
    pub export: ExportConfig,
    /// The live view behind the API's patients, devices and event stream.
    pub live: LiveConfig,
    /// What the purger removes (`--retention`, `--retention-rejected`).
    pub retention: RetentionConfig,
    /// Database and patient files, unless `--store` puts the database elsewhere.
    pub data_dir: PathBuf,
    /// The audit trail's file.
    pub audit_log: Option<PathBuf>,
    /// Log format.
    pub log_format: LogFormat,
    /// The `--connect` links.
    pub links: LinksConfig,
}

impl ReceiveConfig {
    /// Merges flags (and environment, which clap reads), the config file and defaults, and
    /// validates every value.
    pub fn from_args(args: &ReceiveArgs) -> Result<ReceiveConfig, ConfigError> {
        ReceiveConfig::from_args_and_token(args, std::env::var_os(HTTP_TOKEN_ENV))
    }

    /// [`ReceiveConfig::from_args`] with [`HTTP_TOKEN_ENV`]'s value given (for the tests,
    /// which must not set the process's environment).
    fn from_args_and_token(
        args: &ReceiveArgs,
        token_env: Option<std::ffi::OsString>,
    ) -> Result<ReceiveConfig, ConfigError> {
        let file = match &args.config {
            Some(path) => ConfigFile::read(path)?,
            None => ConfigFile::none(),
        };
        let mut settings = ReceiveSettings::resolve(&args.settings, file)?;
        let token = http_token(settings.http_token_file.take().as_deref(), token_env)?;
        if let Some(path) = settings.store_password_file.take() {
            settings.store = Some(with_password_file(settings.store.take(), &path)?);
        }
        // One frame at the limit (whose buffer is up to two reads larger than the frame)
        // must never be closed for being alone over the budget.
        let least = settings
            .max_frame_bytes
            .saturating_add(2 * crate::mllp::connection::READ_CHUNK)
            .saturating_mul(2);
        if settings.max_partial_bytes < least {
            return Err(ConfigError::new(
                "max_partial_bytes",
                "--max-partial-bytes, HL7IHP_MAX_PARTIAL_BYTES or the config file",
                format!(
                    "expected at least {least} (twice max_frame_bytes and two reads of 16 KiB)"
                ),
            ));
        }
        if settings.offline_after <= settings.stale_after {
            return Err(ConfigError::new(
                "offline_after",
                "--offline-after, HL7IHP_OFFLINE_AFTER or the config file",
                "expected a duration longer than stale_after".to_owned(),
            ));
        }
        check_tls(&settings)?;
        let require_tls = settings.require_tls;
        let mut config = ReceiveConfig::from_settings(settings);
        config.http.token = token;
        config.http.check_access()?;
        if require_tls {
            config.check_required_tls()?;
        }
        Ok(config)
    }

    /// Puts each validated setting into the group that uses it; the values that follow from
    /// others (the default store, the patients folder) are decided here.
    pub(super) fn from_settings(s: ReceiveSettings) -> ReceiveConfig {
        ReceiveConfig {
            mllp: MllpConfig {
                listen: s.listen,
                query_listen: s.query_listen,
                // Checked by `check_tls`: a TLS address comes with a certificate and a key.
                tls: s
                    .listen_tls
                    .zip(s.tls_cert.zip(s.tls_key))
                    .map(|(listen, (cert, key))| MllpTlsConfig {
                        listen,
                        files: ServerTlsFiles {
                            cert,
                            key,
                            client_ca: s.tls_client_ca,
                            crl: s.tls_crl,
                        },
                    }),
                access: AccessConfig {
                    allow: s.allow,
                    proxy_from: s.proxy_protocol_from,
                    handshake_timeout: s.tls_handshake_timeout,
                },
                limits: Limits {
                    max_frame_bytes: s.max_frame_bytes,
                    max_partial_bytes: s.max_partial_bytes,
                    max_connections: s.max_connections,
                    max_connections_per_peer: s.max_connections_per_peer,
                    idle_timeout: s.idle_timeout,
                    frame_timeout: s.frame_timeout,
                    framing: s.framing,
                    unframed_gap: s.unframed_gap,
                },
                ack_mode: s.ack_mode,
                ack_application: s.ack_application,
                ack_facility: s.ack_facility,
                patient_identity: s.patient_identity,
                time_zone: s.timezone,
                placeholder_values: s.placeholder_values,
            },
            http: HttpConfig {
                listen: s.http,
                limits: HttpLimits {
                    header_timeout: s.http_header_timeout,
                    idle_timeout: s.http_idle_timeout,
                    max_connections: s.http_max_connections,
                },
                tls: s
                    .http_tls_cert
                    .zip(s.http_tls_key)
                    .map(|(cert, key)| ServerTlsFiles {
                        cert,
                        key,
                        client_ca: None,
                        crl: None,
                    }),
                // Read by `from_args`: a file, or the environment.
                token: None,
            },
            store: StoreConfig {
                location: s
                    .store
                    .unwrap_or_else(|| StoreLocation::in_data_dir(&s.data_dir)),
                options: StoreOptions { dedupe: s.dedupe },
            },
            export: ExportConfig {
                patients_dir: s.data_dir.join("patients"),
                files: s.patient_files,
                fields: s.json_fields,
                json_max_records: s.json_max_records,
                json_min_interval: s.json_min_interval,
                device_files: s.device_files,
            },
            live: LiveConfig {
                stale_after: s.stale_after,
                offline_after: s.offline_after,
            },
            retention: RetentionConfig {
                accepted: s.retention,
                refused: s.retention_rejected,
            },
            data_dir: s.data_dir,
            audit_log: s.audit_log,
            log_format: s.log_format,
            links: LinksConfig {
                targets: s
                    .connect
                    .into_iter()
                    .map(|target| LinkTarget {
                        framing: s.connect_framing,
                        ..target
                    })
                    .collect(),
                // Checked by `check_tls`: a key goes with a certificate.
                tls: s.connect_tls.then(|| ConnectTls {
                    ca: s.connect_tls_ca,
                    cert_and_key: s.connect_tls_cert.zip(s.connect_tls_key),
                    server_name: s.connect_tls_server_name,
                }),
            },
        }
    }
}

/// The TLS settings go together: a TLS address with a certificate and a key, a CRL with a
/// client CA, no TLS file without the listener it is for, and at least one MLLP listener.
fn check_tls(s: &ReceiveSettings) -> Result<(), ConfigError> {
    let error = |name: &'static str, reason: &str| {
        let flag = name.replace('_', "-");
        ConfigError::new(
            name,
            &format!(
                "--{flag}, HL7IHP_{} or the config file",
                name.to_ascii_uppercase()
            ),
            reason.to_owned(),
        )
    };
    if s.connect_tls {
        if s.connect_tls_cert.is_some() != s.connect_tls_key.is_some() {
            return Err(error(
                "connect_tls_cert",
                "--connect-tls-cert and --connect-tls-key go together",
            ));
        }
    } else {
        for (name, given) in [
            ("connect_tls_ca", s.connect_tls_ca.is_some()),
            ("connect_tls_cert", s.connect_tls_cert.is_some()),
            ("connect_tls_key", s.connect_tls_key.is_some()),
            (
                "connect_tls_server_name",
                s.connect_tls_server_name.is_some(),
            ),
        ] {
            if given {
                return Err(error(name, "has no effect without --connect-tls on"));
            }
        }
    }
    // Client mode alone needs no listener: the links are the receiver's devices.
    if s.listen.is_none() && s.listen_tls.is_none() && s.connect.is_empty() {
        return Err(error(
            "listen",
            "`off` leaves nothing to listen on: give --listen-tls ADDR too, or an address",
        ));
    }
    if s.listen_tls.is_some() {
        for (name, value) in [("tls_cert", &s.tls_cert), ("tls_key", &s.tls_key)] {
            if value.is_none() {
                return Err(error(
                    name,
                    "--listen-tls needs --tls-cert FILE and --tls-key FILE",
                ));
            }
        }
        // Port 0 asks the system for a free port: two of them are two listeners.
        if s.listen == s.listen_tls && s.listen.is_some_and(|a| a.port() != 0) {
            return Err(error(
                "listen_tls",
                "the TLS listener needs an address of its own, not --listen's",
            ));
        }
    } else {
        for (name, given) in [
            ("tls_cert", s.tls_cert.is_some()),
            ("tls_key", s.tls_key.is_some()),
            ("tls_client_ca", s.tls_client_ca.is_some()),
            ("tls_crl", s.tls_crl.is_some()),
        ] {
            if given {
                return Err(error(name, "has no effect without --listen-tls ADDR"));
            }
        }
    }
    if s.tls_crl.is_some() && s.tls_client_ca.is_none() {
        return Err(error(
            "tls_crl",
            "a CRL is for client certificates: give --tls-client-ca FILE too",
        ));
    }
    match (&s.http_tls_cert, &s.http_tls_key) {
        (Some(_), None) => {
            return Err(error(
                "http_tls_key",
                "--http-tls-cert needs --http-tls-key",
            ));
        }
        (None, Some(_)) => {
            return Err(error(
                "http_tls_cert",
                "--http-tls-key needs --http-tls-cert",
            ));
        }
        (Some(_), Some(_)) if s.http.is_none() => {
            return Err(error("http_tls_cert", "has no effect with --http off"));
        }
        _ => {}
    }
    Ok(())
}

impl ReceiveConfig {
    /// `--require-tls`: no listener on a non-loopback address without TLS.
    fn check_required_tls(&self) -> Result<(), ConfigError> {
        if let Some(address) = self.mllp.listen
            && !address.ip().is_loopback()
        {
            return Err(ConfigError::new(
                "listen",
                "--listen, HL7IHP_LISTEN or the config file",
                format!(
                    "--require-tls is on and {address} is not a loopback address: use \
                     --listen-tls, or --listen off, or bind --listen to 127.0.0.1"
                ),
            ));
        }
        if let Some(address) = self.mllp.query_listen
            && !address.ip().is_loopback()
        {
            return Err(ConfigError::new(
                "query_listen",
                "--query-listen, HL7IHP_QUERY_LISTEN or the config file",
                format!(
                    "--require-tls is on and {address} is not a loopback address: bind \
                     --query-listen to 127.0.0.1, or leave it off"
                ),
            ));
        }
        if let Some(address) = self.http.listen
            && !address.ip().is_loopback()
            && self.http.tls.is_none()
        {
            return Err(ConfigError::new(
                "http",
                "--http, HL7IHP_HTTP or the config file",
                format!(
                    "--require-tls is on and {address} is not a loopback address: give \
                     --http-tls-cert and --http-tls-key, or bind --http to 127.0.0.1"
                ),
            ));
        }
        Ok(())
    }
}

impl ReceiveSettings {
    /// Every setting at its default, for the demo's receiver to change a few.
    pub(super) fn defaults() -> Result<ReceiveSettings, ConfigError> {
        ReceiveSettings::resolve(&ReceiveFlags::default(), ConfigFile::none())
    }
}

/// Reads `--log-format` alone, before the rest is validated, so that errors can be logged
/// in the chosen format.
pub fn log_format(args: &ReceiveArgs) -> LogFormat {
    args.settings
        .log_format
        .as_deref()
        .and_then(|text| log_format_of(text).ok())
        .unwrap_or(LogFormat::Text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn flags(set: impl FnOnce(&mut ReceiveFlags)) -> ReceiveArgs {
        let mut args = ReceiveArgs::default();
        set(&mut args.settings);
        args
    }

    fn error(args: ReceiveArgs) -> String {
        ReceiveConfig::from_args(&args).unwrap_err().to_string()
    }

    fn config_file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hl7-ihp.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn defaults_are_the_prototypes() {
        let config = ReceiveConfig::from_args(&ReceiveArgs::default()).unwrap();
        assert_eq!(config.mllp.listen.unwrap().to_string(), "0.0.0.0:2575");
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(
            config.http.listen.map(|a| a.to_string()).as_deref(),
            Some("127.0.0.1:8080")
        );
        assert!(config.store.options.dedupe);
        assert_eq!(
            config.store.location,
            StoreLocation::in_data_dir(Path::new("./data"))
        );
        assert_eq!(config.mllp.ack_mode, AckMode::Auto);
        assert_eq!(config.mllp.ack_application, "HL7IHP");
        assert_eq!(config.mllp.ack_facility, "");
        assert_eq!(config.mllp.patient_identity, PatientIdentity::Id);
        assert_eq!(config.mllp.time_zone, None);
        assert_eq!(config.export.json_max_records, 200);
        assert_eq!(config.export.files, PatientFiles::Json);
        assert_eq!(config.export.fields, Fields::Prototype);
        assert_eq!(config.export.json_min_interval, Duration::from_secs(3));
        assert_eq!(config.export.patients_dir, PathBuf::from("./data/patients"));
        let limits = config.mllp.limits;
        assert_eq!(limits.max_frame_bytes, 1024 * 1024);
        assert_eq!(limits.max_connections, 4096);
        assert_eq!(limits.max_connections_per_peer, 1024);
        assert_eq!(limits.idle_timeout, Duration::from_secs(300));
        assert_eq!(limits.frame_timeout, Duration::from_secs(30));
        assert_eq!(limits.max_partial_bytes, 256 * 1024 * 1024);
        let http = config.http.limits;
        assert_eq!(http.header_timeout, Duration::from_secs(10));
        assert_eq!(http.idle_timeout, Duration::from_secs(60));
        assert_eq!(http.max_connections, 256);
        assert_eq!(config.log_format, LogFormat::Text);
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let (_dir, path) = config_file(
            "listen = \"127.0.0.1:3000\"\nhttp = \"off\"\ndedupe = false\njson_max_records = 5\nidle_timeout = \"2m\"\n",
        );
        let mut args = flags(|f| f.listen = Some("127.0.0.1:4000".into()));
        args.config = Some(path);
        let config = ReceiveConfig::from_args(&args).unwrap();
        assert_eq!(config.mllp.listen.unwrap().to_string(), "127.0.0.1:4000");
        assert_eq!(config.http.listen, None);
        assert!(!config.store.options.dedupe);
        assert_eq!(config.export.json_max_records, 5);
        assert_eq!(config.mllp.limits.idle_timeout, Duration::from_secs(120));
    }

    #[test]
    fn links_come_from_a_list_in_the_file_or_commas_on_the_flag() {
        let (_dir, path) = config_file(
            "listen = \"off\"\nconnect = [\"bed-12=10.0.0.5:4001\", \"10.0.0.6:4001\"]\nconnect_framing = \"none\"\n",
        );
        let args = ReceiveArgs {
            config: Some(path),
            ..ReceiveArgs::default()
        };
        let config = ReceiveConfig::from_args(&args).unwrap();
        let links = &config.links.targets;
        assert_eq!(links.len(), 2);
        assert_eq!(
            (links[0].name.as_str(), links[0].address.as_str()),
            ("bed-12", "10.0.0.5:4001")
        );
        assert_eq!(links[1].name, "10.0.0.6:4001");
        assert_eq!(links[1].framing, Framing::None);
        assert_eq!(config.mllp.listen, None);
        assert!(config.links.tls.is_none());
        let config = ReceiveConfig::from_args(&flags(|f| {
            f.connect = Some("a=h:1,b=h:2".into());
            f.connect_tls = Some("on".into());
        }))
        .unwrap();
        assert_eq!(config.links.targets.len(), 2);
        assert!(config.links.tls.is_some());
        // TLS files without TLS, and no listener and no link, are refused.
        let message = error(flags(|f| f.connect_tls_ca = Some("ca.pem".into())));
        assert!(message.contains("`connect_tls_ca`"), "{message}");
        let message = error(flags(|f| f.listen = Some("off".into())));
        assert!(message.contains("`listen`"), "{message}");
    }

    #[test]
    fn invalid_settings_name_themselves() {
        let message = error(flags(|f| f.listen = Some("nowhere".into())));
        assert!(
            message.starts_with("invalid setting `listen` (--listen or HL7IHP_LISTEN): expected"),
            "{message}"
        );
        let message = error(flags(|f| f.ack_mode = Some("sometimes".into())));
        assert!(message.contains("`ack_mode`"), "{message}");
        assert!(
            message.ends_with("expected `auto` or `original`"),
            "{message}"
        );
        let message = error(flags(|f| f.max_connections = Some("0".into())));
        assert!(message.contains("`max_connections`"), "{message}");
        let message = error(flags(|f| f.timezone = Some("Europe/Atlantis".into())));
        assert!(
            message.starts_with(
                "invalid setting `timezone` (--timezone or HL7IHP_TIMEZONE): expected an IANA"
            ),
            "{message}"
        );
        let (_dir, path) = config_file("frame_timeout = \"0s\"\n");
        let message = error(ReceiveArgs {
            config: Some(path),
            ..ReceiveArgs::default()
        });
        assert!(
            message.starts_with(
                "invalid setting `frame_timeout` (`frame_timeout` in the config file): expected a duration above zero"
            ),
            "{message}"
        );
    }

    #[test]
    fn config_file_errors_name_the_file() {
        let (_dir, path) = config_file("lisen = \"x\"\n");
        let message = error(ReceiveArgs {
            config: Some(path),
            ..ReceiveArgs::default()
        });
        assert!(
            message.starts_with("invalid setting `config` (--config or HL7IHP_CONFIG)"),
            "{message}"
        );
        assert!(message.ends_with("unknown setting `lisen`"), "{message}");
        let (_dir, path) = config_file("listen = [1]\n");
        let message = error(ReceiveArgs {
            config: Some(path),
            ..ReceiveArgs::default()
        });
        assert!(message.contains("`listen` in the config file"), "{message}");
        let (_dir, path) = config_file("listen = \n");
        let message = error(ReceiveArgs {
            config: Some(path),
            ..ReceiveArgs::default()
        });
        assert!(message.contains("`config`"), "{message}");
    }

    #[test]
    fn store_is_one_setting() {
        let config = ReceiveConfig::from_args(&flags(|f| {
            f.data_dir = Some("/srv/hl7".into());
            f.store = Some("sqlite:/var/lib/hl7/messages.db".into());
        }))
        .unwrap();
        assert_eq!(
            config.store.location,
            StoreLocation::Sqlite(PathBuf::from("/var/lib/hl7/messages.db"))
        );
        // The patient files stay in the data directory.
        assert_eq!(
            config.export.patients_dir,
            PathBuf::from("/srv/hl7/patients")
        );
        let config =
            ReceiveConfig::from_args(&flags(|f| f.data_dir = Some("/srv/hl7".into()))).unwrap();
        assert_eq!(
            config.store.location,
            StoreLocation::in_data_dir(Path::new("/srv/hl7"))
        );
        let config = ReceiveConfig::from_args(&flags(|f| {
            f.store = Some("postgres://hl7:secret@db/hl7".into());
        }))
        .unwrap();
        assert!(matches!(config.store.location, StoreLocation::Postgres(_)));
        let debug = format!("{config:?}");
        assert!(!debug.contains("secret"), "{debug}");
        let message = error(flags(|f| {
            f.store = Some("postgres://hl7:secret@db:port/hl7".into());
        }));
        assert!(
            message.starts_with(
                "invalid setting `store` (--store or HL7IHP_STORE): invalid PostgreSQL"
            ),
            "{message}"
        );
        assert!(!message.contains("secret"), "{message}");
    }

    #[test]
    fn the_store_password_comes_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "s3cret\n").unwrap();
        let config = ReceiveConfig::from_args(&flags(|f| {
            f.store = Some("postgres://hl7@db/hl7".into());
            f.store_password_file = Some(file.display().to_string());
        }))
        .unwrap();
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("s3cret") && debug.contains("password from a file"),
            "{debug}"
        );
        let message = error(flags(|f| {
            f.store_password_file = Some(file.display().to_string());
        }));
        assert!(message.contains("needs a postgres://"), "{message}");
    }

    #[test]
    fn debug_shows_no_setting_text() {
        let args = flags(|f| f.store = Some("postgres://hl7:secret@db/hl7".into()));
        let debug = format!("{args:?}");
        assert!(
            debug.contains("store") && !debug.contains("secret"),
            "{debug}"
        );
    }

    #[test]
    fn log_format_is_read_early() {
        assert_eq!(log_format(&ReceiveArgs::default()), LogFormat::Text);
        let args = flags(|f| f.log_format = Some("json".into()));
        assert_eq!(log_format(&args), LogFormat::Json);
    }

    fn with_token_env(args: &ReceiveArgs, env: &str) -> Result<ReceiveConfig, ConfigError> {
        ReceiveConfig::from_args_and_token(args, Some(env.into()))
    }

    #[test]
    fn the_token_is_the_files_first_line_and_debug_hides_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "  s3cret-T0ken \nsecond line\n").unwrap();
        let args = flags(|f| {
            f.http = Some("0.0.0.0:8080".into());
            f.http_token_file = Some(file.display().to_string());
        });
        let config = ReceiveConfig::from_args_and_token(&args, None).unwrap();
        let token = config.http.token.as_ref().unwrap();
        assert_eq!(token.secret(), b"s3cret-T0ken");
        let debug = format!("{config:?} {args:?}");
        assert!(
            !debug.contains("s3cret") && debug.contains("redacted"),
            "{debug}"
        );
        let config = with_token_env(&flags(|_| {}), " from-env\n").unwrap();
        assert_eq!(config.http.token.unwrap().secret(), b"from-env");
    }

    #[test]
    fn a_bad_token_is_refused_with_the_setting_named() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n  \n").unwrap();
        let from_file = |path: &Path| {
            let args = flags(|f| f.http_token_file = Some(path.display().to_string()));
            ReceiveConfig::from_args_and_token(&args, None)
                .unwrap_err()
                .to_string()
        };
        let message = from_file(&empty);
        assert!(
            message.starts_with("invalid setting `http_token_file` (--http-token-file")
                && message.ends_with("the token is empty"),
            "{message}"
        );
        let message = from_file(&dir.path().join("missing"));
        assert!(message.contains("cannot read"), "{message}");
        let spaced = dir.path().join("spaced");
        std::fs::write(&spaced, "two words\n").unwrap();
        assert!(from_file(&spaced).contains("without spaces"));
        let message = with_token_env(&flags(|_| {}), "  ")
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("invalid setting `http_token` (HL7IHP_HTTP_TOKEN)"),
            "{message}"
        );
        let args = flags(|f| f.http_token_file = Some(spaced.display().to_string()));
        let message = with_token_env(&args, "t").unwrap_err().to_string();
        assert!(message.contains("not both"), "{message}");
    }

    #[test]
    fn a_non_loopback_http_address_needs_a_token() {
        let args = flags(|f| f.http = Some("0.0.0.0:8080".into()));
        let message = ReceiveConfig::from_args_and_token(&args, None)
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("invalid setting `http` (--http, HL7IHP_HTTP or the config file)")
                && message.contains("--http-token-file")
                && message.contains("HL7IHP_HTTP_TOKEN"),
            "{message}"
        );
        assert!(with_token_env(&args, "t0ken").is_ok());
        let args = flags(|f| f.http = Some("[::1]:8080".into()));
        assert!(ReceiveConfig::from_args_and_token(&args, None).is_ok());
    }

    #[test]
    fn the_partial_frame_budget_holds_two_largest_frames() {
        let message = error(flags(|f| {
            f.max_frame_bytes = Some("1000".into());
            f.max_partial_bytes = Some("67535".into());
        }));
        assert!(
            message.contains("`max_partial_bytes`") && message.contains("at least 67536"),
            "{message}"
        );
        let args = flags(|f| {
            f.max_frame_bytes = Some("1000".into());
            f.max_partial_bytes = Some("67536".into());
        });
        assert_eq!(
            ReceiveConfig::from_args(&args)
                .unwrap()
                .mllp
                .limits
                .max_partial_bytes,
            67536
        );
    }

    #[test]
    fn tls_settings_go_together() {
        let tls = |f: &mut ReceiveFlags| {
            f.listen_tls = Some("127.0.0.1:0".into());
            f.tls_cert = Some("cert.pem".into());
            f.tls_key = Some("key.pem".into());
        };
        // Port 0 twice is two listeners; the same fixed address twice is one too many.
        let config = ReceiveConfig::from_args(&flags(|f| {
            tls(f);
            f.listen = Some("127.0.0.1:0".into());
        }))
        .unwrap();
        let tls_config = config.mllp.tls.unwrap();
        assert_eq!(tls_config.files.cert, PathBuf::from("cert.pem"));
        assert_eq!(tls_config.files.client_ca, None);
        let message = error(flags(|f| {
            tls(f);
            f.listen = Some("127.0.0.1:2576".into());
            f.listen_tls = Some("127.0.0.1:2576".into());
        }));
        assert!(message.contains("`listen_tls`"), "{message}");
        for (set, name) in [
            (
                Box::new(|f: &mut ReceiveFlags| {
                    tls(f);
                    f.tls_key = None;
                }) as Box<dyn Fn(&mut ReceiveFlags)>,
                "`tls_key`",
            ),
            (
                Box::new(|f| f.tls_client_ca = Some("ca.pem".into())),
                "`tls_client_ca`",
            ),
            (
                Box::new(|f| {
                    tls(f);
                    f.tls_crl = Some("crl.pem".into());
                }),
                "`tls_crl`",
            ),
            (Box::new(|f| f.listen = Some("off".into())), "`listen`"),
            (
                Box::new(|f| f.http_tls_key = Some("key.pem".into())),
                "`http_tls_cert`",
            ),
            (
                Box::new(|f| {
                    f.http = Some("off".into());
                    f.http_tls_cert = Some("cert.pem".into());
                    f.http_tls_key = Some("key.pem".into());
                }),
                "`http_tls_cert`",
            ),
        ] {
            let message = error(flags(|f| set(f)));
            assert!(message.contains(name), "{name}: {message}");
        }
        // --listen off with a TLS listener is fine.
        let config = ReceiveConfig::from_args(&flags(|f| {
            tls(f);
            f.listen = Some("off".into());
        }))
        .unwrap();
        assert_eq!(config.mllp.listen, None);
    }

    #[test]
    fn require_tls_refuses_plain_listeners_beyond_loopback() {
        let message = error(flags(|f| f.require_tls = Some("on".into())));
        assert!(
            message.contains("`listen`") && message.contains("--require-tls"),
            "{message}"
        );
        let args = flags(|f| {
            f.require_tls = Some("on".into());
            f.listen = Some("127.0.0.1:2575".into());
            f.http = Some("0.0.0.0:8080".into());
        });
        let message = with_token_env(&args, "t0ken").unwrap_err().to_string();
        assert!(
            message.contains("`http`") && message.contains("--http-tls-cert"),
            "{message}"
        );
        let args = flags(|f| {
            f.require_tls = Some("on".into());
            f.listen = Some("127.0.0.1:2575".into());
            f.http = Some("0.0.0.0:8080".into());
            f.http_tls_cert = Some("cert.pem".into());
            f.http_tls_key = Some("key.pem".into());
        });
        assert!(with_token_env(&args, "t0ken").is_ok());
        // Without --require-tls the same plain listener only warns (at start).
        assert!(ReceiveConfig::from_args(&ReceiveArgs::default()).is_ok());
    }
}
