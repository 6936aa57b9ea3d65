//! `hl7-ihp send --tls` against a mutual-TLS receiver: stored with the device's identity, no
//! client certificate and a wrong server name refused with a reason, load mode, and
//! python-hl7's MLLP client over Python's `ssl` (TLS 1.2/1.3 accepted, TLS 1.1 refused).

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::common::{self, Receiver, messages_table};
use crate::pki::Pki;

/// A receiver with only a TLS listener and mutual TLS against the test CA.
fn mutual_tls(dir: &Path, pki: &Pki) -> (Receiver, SocketAddr) {
    let receiver = Receiver::start_listening(
        &dir.join("data"),
        "off",
        &[&["--listen-tls", "127.0.0.1:0"][..], &pki.listener_flags()].concat(),
    );
    let address = receiver.mllp_tls.expect("a TLS listener");
    (receiver, address)
}

fn send(args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["send"];
    all.extend_from_slice(args);
    common::run(&all)
}

#[test]
fn send_tls_with_the_device_certificate_is_stored_with_its_identity() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let (receiver, address) = mutual_tls(dir.path(), &pki);
    // No --tls-server-name: the IP of --to is checked against the server's IP SAN.
    let to = address.to_string();
    let (status, stdout, stderr) = send(
        &[
            &["--to", &to][..],
            &pki.device_flags(),
            &["--count", "3", "--interval", "0ms"],
        ]
        .concat(),
    );
    assert_eq!(status, 0, "{stdout}{stderr}");
    assert_eq!(stdout.matches(" AA").count(), 3, "{stdout}");
    let table = messages_table(&receiver.data_dir);
    let rows: Vec<_> = table
        .lines()
        .filter(|l| l.contains("[TLS CN=monitor-7"))
        .collect();
    assert_eq!(rows.len(), 3, "{table}");
}

#[test]
fn send_tls_without_a_client_certificate_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let (receiver, address) = mutual_tls(dir.path(), &pki);
    let (status, stdout, stderr) = send(&[
        "--to",
        &address.to_string(),
        "--tls",
        "--tls-ca",
        pki.ca(),
        "--count",
        "1",
        "--retry-for",
        "2s",
    ]);
    assert_eq!(status, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("cannot connect to") && stderr.contains("TLS: "),
        "{stderr}"
    );
    assert!(stderr.contains("client certificate"), "{stderr}");
    assert!(stdout.contains("unacknowledged 1"), "{stdout}");
    let table = messages_table(&receiver.data_dir);
    assert!(!table.contains("accepted"), "{table}");
}

#[test]
fn send_tls_checks_the_receivers_name_and_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let (receiver, address) = mutual_tls(dir.path(), &pki);
    let to = address.to_string();
    let device = [
        "--tls-cert",
        pki.device.cert(),
        "--tls-key",
        pki.device.key(),
    ];
    let mut wrong_name = vec![
        "--to",
        &to,
        "--tls",
        "--tls-ca",
        pki.ca(),
        "--tls-server-name",
        "elsewhere.example",
        "--count",
        "1",
        "--retry-for",
        "1s",
    ];
    wrong_name.extend_from_slice(&device);
    let (status, stdout, stderr) = send(&wrong_name);
    assert_eq!(status, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("TLS: the receiver's certificate is not for elsewhere.example"),
        "{stderr}"
    );
    // The right name, by DNS SAN, from a host --to does not give.
    let mut right_name = wrong_name.clone();
    right_name[6] = "localhost";
    let (status, stdout, stderr) = send(&right_name);
    assert_eq!(status, 0, "{stdout}{stderr}");
    // Trusting another CA (the device's own certificate) refuses the receiver's.
    let mut other_ca = wrong_name.clone();
    other_ca[4] = pki.device.cert();
    other_ca[6] = "localhost";
    let (status, stdout, stderr) = send(&other_ca);
    assert_eq!(status, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("TLS: the receiver's certificate is not from a trusted CA"),
        "{stderr}"
    );
    let table = messages_table(&receiver.data_dir);
    assert_eq!(table.matches("[TLS CN=monitor-7").count(), 1, "{table}");
}

#[test]
fn send_tls_load_mode_prints_its_summary() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let (_receiver, address) = mutual_tls(dir.path(), &pki);
    let to = address.to_string();
    let (status, stdout, stderr) = send(
        &[
            &["--to", &to][..],
            &pki.device_flags(),
            &[
                "--scenario",
                "vitals",
                "--patients",
                "20",
                "--connections",
                "4",
                "--count",
                "200",
                "--json",
            ],
        ]
        .concat(),
    );
    assert_eq!(status, 0, "{stderr}");
    let summary: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(summary["connections"], 4);
    assert_eq!(summary["sent"], 200);
    assert_eq!(summary["acknowledged"], 200);
    assert_eq!(summary["negative"], 0);
    assert_eq!(summary["unacknowledged"], 0);
}

#[test]
fn send_tls_settings_go_together() {
    for (args, setting) in [
        (
            &["--tls", "--tls-cert", "device.pem"][..],
            "`tls_cert` (--tls-cert): needs --tls-key FILE too",
        ),
        (
            &["--tls", "--tls-key", "device.key"],
            "`tls_key` (--tls-key): needs --tls-cert FILE too",
        ),
        (
            &["--tls-ca", "ca.pem"],
            "`tls_ca` (--tls-ca): has no effect without --tls",
        ),
        (
            &["--tls-server-name", "hl7.example"],
            "`tls_server_name` (--tls-server-name): has no effect without --tls",
        ),
    ] {
        let (status, _, stderr) = send(args);
        assert_eq!(status, 2, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with(&format!("hl7-ihp: invalid setting {setting}")),
            "{stderr}"
        );
    }
    let (status, _, stderr) = send(&["--tls", "--tls-ca", "/nonexistent/ca.pem"]);
    assert_ne!(status, 0);
    assert!(stderr.contains("/nonexistent/ca.pem"), "{stderr}");
}

/// python-hl7's MLLP client over Python's `ssl`: the prototype's three messages over mutual
/// TLS, each answer's MSA-1 on a line; then a client held to TLS 1.0–1.1, whose outcome is the
/// last line (`refused <reason>`, `not tried <reason>` when the local OpenSSL will not offer
/// those versions, or `connected`).
const PYTHON_CLIENT: &str = r#"
import asyncio, ssl, sys
from hl7.mllp import open_hl7_connection

host, port, ca, cert, key, *samples = sys.argv[1:]

def context():
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.load_verify_locations(ca)
    c.load_cert_chain(cert, key)
    return c

async def main():
    reader, writer = await asyncio.wait_for(
        open_hl7_connection(host, int(port), ssl=context()), 30)
    for path in samples:
        with open(path, encoding="utf-8") as f:
            writer.writemessage(f.read())
        await writer.drain()
        # The raw block: python-hl7's parser guesses separators from MSH-2, and the
        # prototype's is short.
        ack = (await asyncio.wait_for(reader.readblock(), 30)).decode()
        msa = [s for s in ack.split("\r") if s.startswith("MSA|")][0].split("|")
        print(msa[1], msa[2], flush=True)
    writer.close()

    old = context()
    try:
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ssl.SSLError, ValueError) as e:
        print("not tried", e, flush=True)
        return
    try:
        _, w = await asyncio.wait_for(open_hl7_connection(host, int(port), ssl=old), 30)
    except ssl.SSLError as e:
        local = e.reason in ("NO_PROTOCOLS_AVAILABLE", "NO_CIPHERS_AVAILABLE")
        print("not tried" if local else "refused", e.reason or e, flush=True)
    except (ConnectionError, OSError) as e:
        print("refused", type(e).__name__, flush=True)
    else:
        print("connected", flush=True)
        w.close()

asyncio.run(main())
"#;

#[test]
fn python_hl7_client_over_tls() {
    let available = common::runs("python3", &["-c", "import hl7.mllp, ssl"]);
    if !common::peer_present(
        "python-hl7 TLS test",
        available,
        "python-hl7",
        "pip install hl7",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let (receiver, address) = mutual_tls(dir.path(), &pki);
    let samples: Vec<String> = (1..=3)
        .map(|n| {
            common::samples()
                .join(format!("prototype-{n}.hl7"))
                .to_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let output = Command::new("python3")
        .args([
            "-c",
            PYTHON_CLIENT,
            "127.0.0.1",
            &address.port().to_string(),
        ])
        .args([pki.ca(), pki.device.cert(), pki.device.key()])
        .args(&samples)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}{stderr}");
    for line in &lines[..3] {
        assert_eq!(*line, "AA CNTRL-3456", "{stdout}");
    }
    let old = lines[3];
    assert!(!old.starts_with("connected"), "TLS 1.1 got through: {old}");
    if old.starts_with("not tried") {
        let _ = writeln!(
            std::io::stderr(),
            "python-hl7 TLS test: the local OpenSSL refuses to even try TLS 1.1 ({old}); \
             checked only that it does not connect"
        );
    } else {
        assert!(old.starts_with("refused"), "{old}");
    }
    let table = messages_table(&receiver.data_dir);
    assert!(table.contains("[TLS CN=monitor-7"), "{table}");
}
