//! Running it as a service: `config --print` and `--example` (with deploy/hl7-ihp.toml),
//! `completions`, `man`, and deploy/hl7-ihp.service checked by key and by
//! `systemd-analyze verify` when it is installed.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::binary;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the binary with no `HL7IHP_*` variable but `env`'s.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(binary());
    command.args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("HL7IHP_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    command.output().unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn the_committed_example_is_what_config_example_prints() {
    let example = stdout(&run(&["config", "--example"], &[]));
    crate::golden::check_golden(&repo().join("deploy/hl7-ihp.toml"), &example);
    // Every setting `receive --help` lists is in it (`config` is the file itself).
    let help = stdout(&run(&["receive", "--help"], &[]));
    let flags: Vec<&str> = help
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("--"))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|flag| !["config", "help"].contains(flag))
        .collect();
    assert!(flags.len() > 30, "{flags:?}");
    for flag in flags {
        let key = format!("\n#{} = ", flag.replace('-', "_"));
        assert!(example.contains(&key), "{key:?} missing from the example");
    }
    // And `receive` takes it: `config --print` with it gives only defaults.
    let committed = repo().join("deploy/hl7-ihp.toml");
    let printed = stdout(&run(
        &["config", "--print", "--config", committed.to_str().unwrap()],
        &[],
    ));
    for line in printed.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.ends_with(" # default"), "{line}");
    }
}

#[test]
fn config_print_shows_sources_and_hides_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hl7-ihp.toml");
    std::fs::write(&file, "json_max_records = 50\n").unwrap();
    let token = "t0ken-not-to-be-shown";
    let output = run(
        &[
            "config",
            "--print",
            "--config",
            file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:2575",
        ],
        &[
            ("HL7IHP_ALLOW", "10.0.0.0/8"),
            ("HL7IHP_HTTP_TOKEN", token),
            ("HL7IHP_HTTP", "0.0.0.0:8080"),
        ],
    );
    let text = stdout(&output);
    for line in [
        "listen = \"127.0.0.1:2575\" # from --listen",
        "allow = \"10.0.0.0/8\" # from HL7IHP_ALLOW",
        "http = \"0.0.0.0:8080\" # from HL7IHP_HTTP",
        "json_max_records = 50 # from the config file",
        "data_dir = \"./data\" # default",
        "# HTTP token: set (from HL7IHP_HTTP_TOKEN)",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} not in\n{text}");
    }
    assert!(!text.contains(token));

    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let text = stdout(&run(
        &["config", "--print"],
        &[("HL7IHP_HTTP_TOKEN_FILE", token_file.to_str().unwrap())],
    ));
    assert!(
        text.contains("# HTTP token: set (from http_token_file)") && !text.contains(token),
        "{text}"
    );
}

#[test]
fn config_print_refuses_an_invalid_setting_as_receive_does() {
    for args in [
        &["--json-max-records", "many"][..],
        &["--store", "postgres://hl7:s3cret@db:port/hl7"],
        &["--http", "0.0.0.0:8080"],
    ] {
        let print = run(&[&["config", "--print"], args].concat(), &[]);
        // `receive` stops at the same check, before it binds or touches the data directory.
        let receive = run(&[&["receive"], args].concat(), &[]);
        assert_eq!(print.status.code(), Some(2), "{args:?}");
        assert_eq!(receive.status.code(), Some(2), "{args:?}");
        let message = String::from_utf8_lossy(&print.stderr);
        assert_eq!(
            message,
            String::from_utf8_lossy(&receive.stderr),
            "{args:?}"
        );
        assert!(
            message.starts_with("hl7-ihp: invalid setting `"),
            "{message}"
        );
        assert!(!message.contains("s3cret") && print.stdout.is_empty());
    }
    // One of the two is needed.
    assert_eq!(run(&["config"], &[]).status.code(), Some(2));
    assert_eq!(
        run(&["config", "--print", "--example"], &[]).status.code(),
        Some(2)
    );
}

#[test]
fn completions_name_the_commands_and_flags() {
    let bash = stdout(&run(&["completions", "bash"], &[]));
    assert!(bash.contains("receive") && bash.contains("--listen-tls"));
    assert!(bash.contains("complete -F _hl7__ihp"), "not a bash script");
    let zsh = stdout(&run(&["completions", "zsh"], &[]));
    assert!(zsh.starts_with("#compdef hl7-ihp") && zsh.contains("--listen-tls"));
    let fish = stdout(&run(&["completions", "fish"], &[]));
    assert!(fish.contains("complete -c hl7-ihp") && fish.contains("listen-tls"));
    assert_eq!(run(&["completions", "tcsh"], &[]).status.code(), Some(2));
}

#[test]
fn man_prints_the_top_page_and_writes_one_per_command() {
    let page = stdout(&run(&["man"], &[]));
    // clap_mangen opens with the `Aq` string definition, then the title.
    let title = page
        .lines()
        .position(|l| l.starts_with(".TH hl7-ihp 1"))
        .unwrap();
    assert!(page.lines().take(title).all(|l| !l.starts_with(".SH")));
    for command in [
        "receive",
        "send",
        "demo",
        "config",
        "completions",
        "man",
        "parse",
    ] {
        assert!(
            page.contains(&format!("hl7\\-ihp\\-{command}(1)")),
            "{command}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    stdout(&run(&["man", "--dir", out.to_str().unwrap()], &[]));
    let receive = std::fs::read_to_string(out.join("hl7-ihp-receive.1")).unwrap();
    assert!(receive.contains(".TH hl7-ihp-receive 1") && receive.contains("listen\\-tls"));
    assert!(out.join("hl7-ihp.1").exists() && out.join("hl7-ihp-config.1").exists());
}

/// The `[Service]` section's keys and values (a key given twice keeps both values).
fn service_keys(unit: &str) -> BTreeMap<String, Vec<String>> {
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut in_service = false;
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service && !line.is_empty() && !line.starts_with('#') {
            let (key, value) = line.split_once('=').expect("key=value");
            keys.entry(key.to_owned())
                .or_default()
                .push(value.to_owned());
        }
    }
    keys
}

fn unit_file() -> String {
    std::fs::read_to_string(repo().join("deploy/hl7-ihp.service")).unwrap()
}

#[test]
fn the_unit_file_has_the_hardening_it_promises() {
    let keys = service_keys(&unit_file());
    for (key, value) in [
        ("User", "hl7-ihp"),
        ("Group", "hl7-ihp"),
        ("DynamicUser", "no"),
        (
            "ExecStart",
            "/usr/local/bin/hl7-ihp receive --config /etc/hl7-ihp/hl7-ihp.toml",
        ),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("StateDirectory", "hl7-ihp"),
        ("LogsDirectory", "hl7-ihp"),
        ("Environment", "HL7IHP_DATA_DIR=/var/lib/hl7-ihp"),
        (
            "Environment",
            "HL7IHP_AUDIT_LOG=/var/log/hl7-ihp/audit.jsonl",
        ),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("SystemCallFilter", "@system-service"),
        ("SystemCallFilter", "~@privileged"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("RestrictRealtime", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("ProtectClock", "yes"),
        ("ProtectHostname", "yes"),
        ("UMask", "0077"),
        ("LimitNOFILE", "65536"),
        ("Restart", "on-failure"),
        ("RestartSec", "2"),
        ("KillSignal", "SIGTERM"),
        ("TimeoutStopSec", "30"),
    ] {
        let values = keys.get(key).map(Vec::as_slice).unwrap_or_default();
        assert!(
            values.iter().any(|v| v == value),
            "{key}={value} not in the unit: {values:?}"
        );
    }
    // Nothing gives a capability back or opens the file system again.
    for key in [
        "DynamicUser",
        "CapabilityBoundingSet",
        "AmbientCapabilities",
    ] {
        assert_eq!(keys[key].len(), 1, "{key} more than once");
    }
    for key in [
        "ReadWritePaths",
        "ReadWriteDirectories",
        "PermissionsStartOnly",
    ] {
        assert!(!keys.contains_key(key), "{key}");
    }
}

#[test]
fn systemd_analyze_verifies_the_unit_file() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        // The issue asks for this check only where the tool exists, so CI passes without it.
        let _ = writeln!(
            std::io::stderr(),
            "systemd-analyze verify skipped: systemd-analyze is not installed"
        );
        return;
    };
    assert!(version.status.success());
    // A copy whose commands exist here: verify refuses a unit whose ExecStart= binary is
    // missing. It does not look the User= up, so the hl7-ihp user need not exist.
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_file().replace("/usr/local/bin/hl7-ihp", binary());
    assert_ne!(unit, unit_file());
    let copy = dir.path().join("hl7-ihp.service");
    std::fs::write(&copy, unit).unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // Unknown keys and bad values are only warnings ("…, ignoring"), so any line about the
    // unit is a failure too.
    let about_it: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("hl7-ihp.service"))
        .collect();
    assert!(about_it.is_empty(), "{about_it:#?}");
    check_verify_catches_a_typo(dir.path());
}

/// The check above can fail: a misspelt key is reported.
fn check_verify_catches_a_typo(dir: &Path) {
    let copy = dir.join("hl7-ihp.service");
    let unit = std::fs::read_to_string(&copy)
        .unwrap()
        .replace("ProtectClock=", "ProtectClok=");
    std::fs::write(&copy, unit).unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("ProtectClok"));
}
