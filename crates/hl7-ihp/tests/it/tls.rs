//! MLLP over TLS from the outside: mutual TLS with certificates made here (a good device,
//! none, another CA's, expired, revoked), old protocol versions and plain MLLP on the TLS
//! port, reloading the certificate while a connection stays open, the allowlist, PROXY
//! headers from trusted and untrusted addresses, HTTPS, and the audit trail of it all.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use crate::common::{
    Client, DEADLINE, Receiver, ack_field, messages_table, metric, oru, run, wait_until,
};
use crate::pki::Pki;

/// A client configuration trusting the test CA, presenting `identity` when given.
fn client(pki: &Pki, identity: Option<&crate::pki::Pair>) -> Arc<rustls::ClientConfig> {
    hl7_ihp::tls::install_provider();
    hl7_ihp::tls::client_config(
        Some(&pki.ca),
        identity.map(|pair| (pair.cert.as_path(), pair.key.as_path())),
    )
    .unwrap()
}

/// A receiver with only a TLS listener, mutual TLS against the test CA and its CRL, and an
/// audit trail.
fn mutual_tls(dir: &Path, pki: &Pki, extra: &[&str]) -> Receiver {
    let audit = dir.join("audit.jsonl");
    let mut flags = vec!["--listen-tls", "127.0.0.1:0"];
    flags.extend(pki.listener_flags());
    flags.extend([
        "--tls-crl",
        pki.crl(),
        "--audit-log",
        audit.to_str().unwrap(),
    ]);
    flags.extend_from_slice(extra);
    Receiver::start_listening(&dir.join("data"), "off", &flags)
}

/// The audit trail's events, once it holds one for which `until` is true.
fn audit_until(dir: &Path, what: &str, until: impl Fn(&Value) -> bool) -> Vec<Value> {
    let path = dir.join("audit.jsonl");
    let mut events = Vec::new();
    wait_until(what, || {
        events = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        events.iter().any(&until)
    });
    events
}

/// The audit trail's events once it holds `n` events named `text`, or with `text` as their
/// reason (parsed lines only: a line being written is not counted yet).
fn audit_count(dir: &Path, text: &str, n: usize) -> Vec<Value> {
    let path = dir.join("audit.jsonl");
    let mut events = Vec::new();
    wait_until(&format!("{n} × {text} in the audit trail"), || {
        events = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .collect();
        events
            .iter()
            .filter(|e| e["event"] == text || e["reason"] == text)
            .count()
            == n
    });
    events
}

/// The reasons of the events named `name`, sorted (the order of the connections' tasks is
/// not the tests' to assert).
fn reasons<'a>(events: &'a [Value], name: &str) -> Vec<&'a str> {
    let mut reasons: Vec<&str> = event(events, name)
        .into_iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    reasons.sort_unstable();
    reasons
}

fn event<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}

#[test]
fn a_good_client_certificate_gets_aa_and_is_kept_as_the_peer_identity() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let receiver = mutual_tls(dir.path(), &pki, &[]);
    let address = receiver.mllp_tls.expect("a TLS listener");
    let mut device = Client::connect_tls(address, client(&pki, Some(&pki.device))).unwrap();
    for n in 0..3 {
        let ack = device.exchange(&oru(&format!("TLS-{n}"), "P-TLS", n));
        assert_eq!(ack_field(&ack, "MSA-1"), "AA");
        assert_eq!(ack_field(&ack, "MSA-2"), format!("TLS-{n}"));
    }
    let identity = "CN=monitor-7,OU=ICU,O=St Example; DNS:monitor-7.icu.example";
    let table = messages_table(&receiver.data_dir);
    assert!(table.contains(&format!("[TLS {identity}]")), "{table}");
    let (_, metrics) = receiver.http_get("/metrics");
    assert_eq!(metric(&metrics, "hl7ihp_tls_handshakes_total"), Some(1));
    let (status, body) = receiver.http_get("/api/v1/messages?limit=1");
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["messages"][0]["peer_identity"], identity);
    assert!(
        !receiver.logs().contains("monitor-7"),
        "the identity is for the audit trail"
    );
    drop(device);
    let events = audit_until(dir.path(), "the connection's close audited", |e| {
        e["event"] == "connection_closed"
    });
    let opened = event(&events, "connection_opened");
    assert_eq!(opened.len(), 1, "{events:?}");
    assert_eq!(event(&events, "connection_closed")[0]["identity"], identity);
    assert_eq!(opened[0]["transport"], "tls");
    assert_eq!(opened[0]["identity"], identity);
    assert!(
        opened[0]["tls_version"]
            .as_str()
            .unwrap()
            .starts_with("TLSv1_")
    );
    let received = event(&events, "message_received");
    assert_eq!(received.len(), 3);
    assert_eq!(received[0]["control_id"], "TLS-0");
    assert_eq!(received[0]["patient"], "P-TLS");
    assert_eq!(received[0]["outcome"], "accepted");
    assert_eq!(received[0]["ack_code"], "AA");
    assert_eq!(received[0]["identity"], identity);
    assert_eq!(received[0]["connection"], opened[0]["connection"]);
    let (status, logs) = receiver.terminate();
    assert!(status.success(), "{logs}");
    let events = audit_until(dir.path(), "the stop audited", |e| {
        e["event"] == "receiver_stopped"
    });
    assert_eq!(event(&events, "receiver_started").len(), 1);
    let text = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    // `oru` names every patient Doe^John: no name, no message body in the trail.
    for secret in ["Doe", "John", "OBX", "MSH|"] {
        assert!(
            !text.contains(secret),
            "{secret} in the audit trail: {text}"
        );
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("audit.jsonl"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn no_certificate_another_ca_expired_or_revoked_is_refused_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let receiver = mutual_tls(dir.path(), &pki, &[]);
    let address = receiver.mllp_tls.unwrap();
    let cases = [
        (None, "no certificate"),
        (Some(&pki.stranger), "unknown CA"),
        (Some(&pki.expired), "expired"),
        (Some(&pki.revoked), "revoked"),
    ];
    for (identity, _) in &cases {
        // TLS 1.3 ends the client's handshake before the server has checked the client's
        // certificate: the refusal is an alert and a close where the ACK would be.
        if let Ok(mut refused) = Client::connect_tls(address, client(&pki, *identity)) {
            let _ = refused.try_send(&oru("NOPE", "P-NO", 1));
            assert!(
                refused.read_ack().is_none(),
                "an ACK over a refused handshake"
            );
        }
    }
    let events = audit_count(dir.path(), "node_authentication_failure", 4);
    let reasons = reasons(&events, "node_authentication_failure");
    assert_eq!(
        reasons,
        ["expired", "no certificate", "revoked", "unknown CA"]
    );
    assert!(event(&events, "connection_opened").is_empty());
    assert!(!messages_table(&receiver.data_dir).contains("NOPE"));
    let (_, metrics) = receiver.http_get("/metrics");
    assert_eq!(
        metric(&metrics, "hl7ihp_tls_handshake_failures_total"),
        Some(4)
    );
    assert_eq!(metric(&metrics, "hl7ihp_tls_handshakes_total"), Some(0));
    // The server goes on: a good device still gets its ACK.
    let mut device = Client::connect_tls(address, client(&pki, Some(&pki.device))).unwrap();
    assert_eq!(
        ack_field(&device.exchange(&oru("OK-1", "P-OK", 1)), "MSA-1"),
        "AA"
    );
}

/// A ClientHello offering only `version` (0x0301 TLS 1.0, 0x0302 TLS 1.1) and the suites of
/// its day (RSA key exchange, CBC), no extensions: what an old device sends.
fn old_client_hello(version: [u8; 2]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&version);
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // no session id
    let suites: [[u8; 2]; 3] = [[0x00, 0x2f], [0x00, 0x35], [0xc0, 0x13]];
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for suite in suites {
        body.extend_from_slice(&suite);
    }
    body.extend_from_slice(&[1, 0]); // null compression only
    let mut handshake = vec![1u8]; // client_hello
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// Everything the server sends until it closes.
fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

#[test]
fn old_tls_versions_and_plain_mllp_on_the_tls_port_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let receiver = mutual_tls(dir.path(), &pki, &[]);
    let address = receiver.mllp_tls.unwrap();
    for version in [[3, 1], [3, 2]] {
        let mut old = TcpStream::connect(address).unwrap();
        old.write_all(&old_client_hello(version)).unwrap();
        let answer = read_to_close(&mut old);
        // A fatal alert record (type 21), then the close; never a ServerHello (type 22).
        assert_eq!(answer.first(), Some(&0x15), "{answer:?}");
    }
    let mut plain = TcpStream::connect(address).unwrap();
    plain
        .write_all(&crate::common::frame(&oru("PLAIN-1", "P-PLAIN", 1)))
        .unwrap();
    let answer = read_to_close(&mut plain);
    assert!(
        !answer.contains(&0x0B),
        "an MLLP answer on the TLS port: {answer:?}"
    );
    let events = audit_count(dir.path(), "node_authentication_failure", 3);
    let reasons = reasons(&events, "node_authentication_failure");
    assert_eq!(
        reasons,
        ["not TLS", "old TLS version", "old TLS version"],
        "{}",
        receiver.logs()
    );
    assert!(!messages_table(&receiver.data_dir).contains("PLAIN-1"));
}

/// The certificate a server presents to a new connection.
fn server_certificate(address: SocketAddr, pki: &Pki) -> Vec<u8> {
    let mut tcp = TcpStream::connect(address).unwrap();
    tcp.set_read_timeout(Some(DEADLINE)).unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = rustls::ClientConnection::new(client(pki, Some(&pki.device)), name).unwrap();
    while tls.is_handshaking() {
        tls.complete_io(&mut tcp).unwrap();
    }
    tls.peer_certificates().unwrap()[0].to_vec()
}

fn pem_der(path: &Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_file(path)
        .unwrap()
        .to_vec()
}

#[test]
fn reload_swaps_the_certificate_for_new_connections_and_an_open_one_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    // The receiver's own copies, replaced below as a certificate renewal would.
    let cert = pki.path("live.pem");
    let key = pki.path("live.key");
    std::fs::copy(&pki.server.cert, &cert).unwrap();
    std::fs::copy(&pki.server.key, &key).unwrap();
    let audit = dir.path().join("audit.jsonl");
    let receiver = Receiver::start_listening(
        &dir.path().join("data"),
        "off",
        &[
            "--listen-tls",
            "127.0.0.1:0",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--tls-client-ca",
            pki.ca(),
            "--audit-log",
            audit.to_str().unwrap(),
        ],
    );
    let address = receiver.mllp_tls.unwrap();
    assert_eq!(server_certificate(address, &pki), pem_der(&pki.server.cert));
    let mut open = Client::connect_tls(address, client(&pki, Some(&pki.device))).unwrap();
    assert_eq!(
        ack_field(&open.exchange(&oru("OLD-1", "P-R", 1)), "MSA-1"),
        "AA"
    );

    // A bad key first: refused, logged, the old configuration stays. (The watcher may see
    // the file change before the signal arrives: one refusal or two.)
    replace(
        &key,
        b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
    );
    hangup(&receiver);
    let refusals = |events: &[Value]| event(events, "configuration_reload_failed").len();
    let seen = refusals(&audit_until(
        dir.path(),
        "the refused reload audited",
        |e| e["event"] == "configuration_reload_failed",
    ));
    wait_until("the refusal logged", || {
        receiver.logs().contains("TLS reload refused")
    });
    assert_eq!(server_certificate(address, &pki), pem_der(&pki.server.cert));
    // A key that does not match the certificate: refused too.
    replace(&key, &std::fs::read(&pki.renewed.key).unwrap());
    let path = dir.path().join("audit.jsonl");
    wait_until("the mismatched key refused", || {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains("does not match the certificate"))
            .count()
            >= 1
    });
    assert_eq!(server_certificate(address, &pki), pem_der(&pki.server.cert));

    // The renewed pair, noticed without a signal (the files are polled).
    replace(&cert, &std::fs::read(&pki.renewed.cert).unwrap());
    let events = audit_until(dir.path(), "the reload audited", |e| {
        e["event"] == "configuration_reloaded"
    });
    assert!(refusals(&events) > seen, "{events:?}");
    assert_eq!(
        server_certificate(address, &pki),
        pem_der(&pki.renewed.cert)
    );
    // The connection opened before goes on with its session.
    assert_eq!(
        ack_field(&open.exchange(&oru("OLD-2", "P-R", 2)), "MSA-1"),
        "AA"
    );
    let mut new = Client::connect_tls(address, client(&pki, Some(&pki.device))).unwrap();
    assert_eq!(
        ack_field(&new.exchange(&oru("NEW-1", "P-R", 3)), "MSA-1"),
        "AA"
    );
    let (_, metrics) = receiver.http_get("/metrics");
    assert_eq!(metric(&metrics, "hl7ihp_tls_reloads_total"), Some(1));
    let failures = metric(&metrics, "hl7ihp_tls_reload_failures_total").unwrap();
    assert_eq!(failures as usize, refusals(&events), "{metrics}");
}

/// Replaces a file's contents at once (written beside it, then renamed), as certificate
/// tools do, so that the watcher never reads half a file.
fn replace(path: &Path, contents: &[u8]) {
    let temporary = path.with_extension("new");
    std::fs::write(&temporary, contents).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

fn hangup(receiver: &Receiver) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &receiver.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn the_allowlist_refuses_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let receiver = Receiver::start(
        &dir.path().join("data"),
        &[
            "--allow",
            "192.0.2.0/24",
            "--audit-log",
            audit.to_str().unwrap(),
        ],
    );
    for n in 0..3 {
        let mut refused = Client::connect(receiver.mllp);
        // The server closes without reading: the message is never answered nor stored.
        let _ = refused.try_send(&oru(&format!("DENIED-{n}"), "P-DENY", n));
        assert!(refused.read_ack().is_none());
    }
    wait_until("three refusals counted", || {
        let (_, metrics) = receiver.http_get("/metrics");
        metric(&metrics, "hl7ihp_connections_refused_allowlist_total") == Some(3)
    });
    // Audited once: the same address refused for the same reason within 10 s is counted
    // on the next event, not audited each time.
    let events = audit_until(dir.path(), "the refusal audited", |e| {
        e["event"] == "connection_refused"
    });
    let refusals = event(&events, "connection_refused");
    assert_eq!(refusals.len(), 1, "{events:?}");
    assert_eq!(refusals[0]["reason"], "not in the allowlist");
    assert!(event(&events, "connection_opened").is_empty());
    let (_, metrics) = receiver.http_get("/metrics");
    assert_eq!(metric(&metrics, "hl7ihp_frames_total"), Some(0));
    assert!(!messages_table(&receiver.data_dir).contains("DENIED-"));
}

/// A PROXY protocol v2 header for a TCP/IPv4 connection from `source` to `destination`.
fn proxy_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(source), SocketAddr::V4(destination)) = (source, destination) else {
        panic!("IPv4 only here");
    };
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x21, 0x11, 0, 12]);
    header.extend_from_slice(&source.ip().octets());
    header.extend_from_slice(&destination.ip().octets());
    header.extend_from_slice(&source.port().to_be_bytes());
    header.extend_from_slice(&destination.port().to_be_bytes());
    header
}

#[test]
fn proxy_headers_from_a_trusted_balancer_name_the_device_and_others_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let receiver = Receiver::start(
        &dir.path().join("data"),
        &[
            "--proxy-protocol-from",
            "127.0.0.1",
            "--allow",
            "192.0.2.0/24",
            "--audit-log",
            audit.to_str().unwrap(),
        ],
    );
    // v1 and v2 from the trusted balancer (this test, on 127.0.0.1).
    let mut v1 = TcpStream::connect(receiver.mllp).unwrap();
    v1.write_all(b"PROXY TCP4 192.0.2.7 10.0.0.1 40007 2575\r\n")
        .unwrap();
    let mut v1 = Client::over(v1);
    assert_eq!(
        ack_field(&v1.exchange(&oru("PX-1", "P-PX", 1)), "MSA-1"),
        "AA"
    );
    let mut v2 = TcpStream::connect(receiver.mllp).unwrap();
    v2.write_all(&proxy_v2(
        "192.0.2.8:40008".parse().unwrap(),
        "10.0.0.1:2575".parse().unwrap(),
    ))
    .unwrap();
    let mut v2 = Client::over(v2);
    assert_eq!(
        ack_field(&v2.exchange(&oru("PX-2", "P-PX", 2)), "MSA-1"),
        "AA"
    );
    let table = messages_table(&receiver.data_dir);
    assert!(
        table
            .lines()
            .any(|l| l.contains("PX-1") && l.contains("192.0.2.7:40007")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.contains("PX-2") && l.contains("192.0.2.8:40008")),
        "{table}"
    );
    // The balancer speaking for itself (v2 LOCAL, a health check) is not a device: the
    // allowlist, which does not list it, does not apply.
    let mut local = TcpStream::connect(receiver.mllp).unwrap();
    local
        .write_all(b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00")
        .unwrap();
    let mut local = Client::over(local);
    assert_eq!(
        ack_field(&local.exchange(&oru("PX-L", "P-PX", 9)), "MSA-1"),
        "AA"
    );
    drop(local);
    // The allowlist applies to the device the header names.
    let mut outsider = TcpStream::connect(receiver.mllp).unwrap();
    outsider
        .write_all(b"PROXY TCP4 198.51.100.1 10.0.0.1 40001 2575\r\n")
        .unwrap();
    let mut outsider = Client::over(outsider);
    let _ = outsider.try_send(&oru("PX-3", "P-PX", 3));
    assert!(outsider.read_ack().is_none());
    // A garbled header is refused.
    let mut garbled = TcpStream::connect(receiver.mllp).unwrap();
    garbled
        .write_all(b"PROXY TCP4 192.0.2.7 nonsense\r\n")
        .unwrap();
    assert!(read_to_close(&mut garbled).is_empty());
    // A relayed connection from a source the balancer does not know: the balancer is the
    // peer, and not a device the allowlist lists.
    let mut unknown = TcpStream::connect(receiver.mllp).unwrap();
    unknown.write_all(b"PROXY UNKNOWN\r\n").unwrap();
    unknown
        .write_all(&crate::common::frame(&oru("PX-U", "P-PX", 4)))
        .unwrap();
    assert!(!read_to_close(&mut unknown).contains(&0x0B));
    let events = audit_count(dir.path(), "connection_refused", 3);
    let opened = event(&events, "connection_opened");
    assert_eq!(opened[0]["peer"], "192.0.2.7:40007");
    assert_eq!(
        opened[0]["via"].as_str().unwrap().split(':').next(),
        Some("127.0.0.1")
    );
    let refused = event(&events, "connection_refused");
    assert_eq!(refused[0]["peer"], "198.51.100.1:40001");
    assert_eq!(refused[0]["reason"], "not in the allowlist");
    assert_eq!(refused[1]["reason"], "invalid PROXY header");
    assert_eq!(refused[2]["reason"], "not in the allowlist");
    assert!(
        refused[2]["peer"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    drop((v1, v2));
    let (status, _) = receiver.terminate();
    assert!(status.success());

    // From an address that is not a trusted balancer, a PROXY header is refused.
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(
        &dir.path().join("data"),
        &["--proxy-protocol-from", "10.9.9.9"],
    );
    let mut spoof = TcpStream::connect(receiver.mllp).unwrap();
    spoof
        .write_all(b"PROXY TCP4 192.0.2.7 10.0.0.1 40007 2575\r\n")
        .unwrap();
    spoof
        .write_all(&crate::common::frame(&oru("SPOOF-1", "P-SP", 1)))
        .unwrap();
    assert!(!read_to_close(&mut spoof).contains(&0x0B));
    // Plain MLLP from there is served as ever.
    let mut direct = Client::connect(receiver.mllp);
    assert_eq!(
        ack_field(&direct.exchange(&oru("DIRECT-1", "P-SP", 2)), "MSA-1"),
        "AA"
    );
    let (_, metrics) = receiver.http_get("/metrics");
    assert_eq!(
        metric(&metrics, "hl7ihp_connections_refused_proxy_total"),
        Some(1)
    );
    let table = messages_table(&receiver.data_dir);
    assert!(
        !table.contains("SPOOF-1") && table.contains("DIRECT-1"),
        "{table}"
    );
}

#[test]
fn tls_settings_are_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let garbage = pki.path("garbage.pem");
    std::fs::write(&garbage, "not pem").unwrap();
    for (args, says) in [
        (vec!["--listen", "off"], "listen"),
        (
            vec!["--listen-tls", "127.0.0.1:0"],
            "--tls-cert FILE and --tls-key FILE",
        ),
        (
            vec!["--tls-cert", pki.server.cert()],
            "without --listen-tls",
        ),
        (
            vec![
                "--listen-tls",
                "127.0.0.1:0",
                "--tls-cert",
                pki.server.cert(),
                "--tls-key",
                pki.server.key(),
                "--tls-crl",
                pki.crl(),
            ],
            "--tls-client-ca",
        ),
        (
            vec!["--require-tls", "on", "--listen", "0.0.0.0:0"],
            "--require-tls",
        ),
        (
            vec![
                "--listen-tls",
                "127.0.0.1:0",
                "--tls-cert",
                pki.server.cert(),
                "--tls-key",
                pki.renewed.key(),
            ],
            "does not match the certificate",
        ),
        (
            vec![
                "--listen-tls",
                "127.0.0.1:0",
                "--tls-cert",
                garbage.to_str().unwrap(),
                "--tls-key",
                pki.server.key(),
            ],
            "holds no PEM certificate",
        ),
        (vec!["--allow", "10.0.0.1/8"], "did you mean 10.0.0.0/8"),
        (vec!["--http-tls-cert", pki.server.cert()], "--http-tls-key"),
    ] {
        let mut full = vec!["receive", "--data-dir", data, "--http", "off"];
        full.extend(args.iter().copied());
        let (code, _, err) = run(&full);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn https_serves_the_http_side_and_plain_http_gets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let receiver = Receiver::start(
        &dir.path().join("data"),
        &[
            "--http-tls-cert",
            pki.server.cert(),
            "--http-tls-key",
            pki.server.key(),
        ],
    );
    let address = receiver.http.unwrap();
    let mut https = Client::connect_tls(address, client(&pki, None)).unwrap();
    https.write_raw(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let mut response = Vec::new();
    while let Some(byte) = https.read_byte() {
        response.push(byte);
    }
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let mut plain = TcpStream::connect(address).unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    assert!(!String::from_utf8_lossy(&read_to_close(&mut plain)).contains("200"));
}

#[test]
fn a_silent_handshake_times_out_in_its_own_task_and_holds_only_its_permit() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let receiver = mutual_tls(
        dir.path(),
        &pki,
        &["--tls-handshake-timeout", "1s", "--max-connections", "3"],
    );
    let address = receiver.mllp_tls.unwrap();
    // Two clients that connect and say nothing hold two of the three permits...
    let mut silent: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(address).unwrap())
        .collect();
    // ...and the accept loop goes on: a device is served meanwhile.
    let mut device = Client::connect_tls(address, client(&pki, Some(&pki.device))).unwrap();
    assert_eq!(
        ack_field(&device.exchange(&oru("HS-1", "P-HS", 1)), "MSA-1"),
        "AA"
    );
    // The third permit is the device's: a fourth connection waits in the backlog until a
    // silent one's handshake times out, then it is served.
    let mut late = Client::connect_tls(address, client(&pki, Some(&pki.device))).unwrap();
    assert_eq!(
        ack_field(&late.exchange(&oru("HS-2", "P-HS", 2)), "MSA-1"),
        "AA"
    );
    for stream in &mut silent {
        assert!(read_to_close(stream).is_empty(), "closed without a word");
    }
    audit_count(dir.path(), "handshake timeout", 2);
    // Both timeouts may come before the late device's opening is recorded: wait for it too.
    let events = audit_count(dir.path(), "connection_opened", 2);
    // The late device was opened after a timeout freed its permit.
    let position = |what: &dyn Fn(&Value) -> bool| events.iter().position(what).unwrap();
    let first_timeout = position(&|e| e["reason"] == "handshake timeout");
    let late_opened = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e["event"] == "connection_opened")
        .map(|(n, _)| n)
        .nth(1)
        .unwrap();
    assert!(first_timeout < late_opened, "{events:?}");
}
