//! The deployment example `deploy/haproxy.cfg` run by the real `haproxy` in front of a
//! receiver: a device on 127.0.0.2 reaches it through HAProxy on 127.0.0.1, over plain MLLP
//! and over TLS passed through, and the receiver stores the device's address (from the
//! PROXY header) and its certificate's identity, while HAProxy's health checks leave no
//! refusal in the audit trail.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Client, DEADLINE, Receiver, ack_field, messages_table, oru, wait_until};
use crate::pki::Pki;

/// Where the device connects from: not HAProxy's address, so only the PROXY header can
/// tell the receiver who it is.
const DEVICE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// The identity `pki.device` carries, as `hl7-ihp messages` shows it.
const DEVICE_IDENTITY: &str = "CN=monitor-7,OU=ICU,O=St Example; DNS:monitor-7.icu.example";

/// How often a start is retried when a port picked for HAProxy was taken meanwhile.
const START_ATTEMPTS: usize = 5;

/// One change to the example: in its non-comment lines, `needle` becomes `with` (a line
/// left blank is nothing to HAProxy), and exactly `lines` lines must hold it, so that an edit to the
/// example that a replacement would miss fails here instead of testing something else.
struct Rewrite {
    needle: &'static str,
    with: String,
    lines: usize,
}

fn rewrite(needle: &'static str, with: impl Into<String>, lines: usize) -> Rewrite {
    Rewrite {
        needle,
        with: with.into(),
        lines,
    }
}

/// `deploy/haproxy.cfg` as run here. The replacements are the only differences: the two
/// frontends bind free ports on 127.0.0.1; both example receivers (10.0.0.11 and
/// 10.0.0.12) are the one receiver under test, whose HTTP address the checks ask (with
/// `addr`, since its TLS listener is on another loopback address, see the test); the stats
/// socket is in the test's folder; and `chroot`, `user` and `group` go, since a test need
/// not run as root.
fn derive_config(
    example: &str,
    frontends: (u16, u16),
    receiver: &Receiver,
    socket: &Path,
) -> String {
    let mllp = receiver.mllp.to_string();
    let mllp_tls = receiver.mllp_tls.expect("a TLS listener").to_string();
    let http = receiver.http.expect("an HTTP listener");
    let rewrites = [
        rewrite("bind :2575", format!("bind 127.0.0.1:{}", frontends.0), 1),
        rewrite("bind :2576", format!("bind 127.0.0.1:{}", frontends.1), 1),
        rewrite("10.0.0.11:2575", mllp.clone(), 1),
        rewrite("10.0.0.12:2575", mllp, 1),
        rewrite("10.0.0.11:2576", mllp_tls.clone(), 1),
        rewrite("10.0.0.12:2576", mllp_tls, 1),
        rewrite(
            "check port 8080",
            format!("check addr {} port {}", http.ip(), http.port()),
            2,
        ),
        rewrite(
            "/run/haproxy/admin.sock",
            socket.to_str().unwrap().to_owned(),
            1,
        ),
        rewrite("chroot /var/lib/haproxy", "", 1),
        rewrite("user haproxy", "", 1),
        rewrite("group haproxy", "", 1),
    ];
    let mut n_lines = vec![0; rewrites.len()];
    let mut config = String::new();
    for line in example.lines() {
        let mut line = line.to_owned();
        if !line.trim_start().starts_with('#') {
            for (rewrite, n) in rewrites.iter().zip(&mut n_lines) {
                if line.contains(rewrite.needle) {
                    line = line.replace(rewrite.needle, &rewrite.with);
                    *n += 1;
                }
            }
        }
        config.push_str(&line);
        config.push('\n');
    }
    for (rewrite, n) in rewrites.iter().zip(n_lines) {
        assert_eq!(
            n, rewrite.lines,
            "deploy/haproxy.cfg: `{}` on {n} lines, the test expects {}",
            rewrite.needle, rewrite.lines
        );
    }
    config
}

/// The `haproxy` binary: on the PATH, or where Debian puts it (`/usr/sbin` is not on a
/// user's PATH there).
fn haproxy_binary() -> Option<PathBuf> {
    ["haproxy", "/usr/sbin/haproxy"]
        .into_iter()
        .map(PathBuf::from)
        .find(|binary| crate::common::runs(binary.to_str().unwrap(), &["-v"]))
}

/// A running `haproxy -db`, killed when dropped.
struct Haproxy {
    child: Child,
    output: Arc<Mutex<String>>,
    plain: SocketAddr,
    tls: SocketAddr,
    socket: PathBuf,
}

impl Haproxy {
    /// HAProxy with the example derived for `receiver`, on two free ports. HAProxy cannot
    /// bind port 0, so ports are picked by binding 0 and letting go; if another process
    /// takes one before HAProxy binds it, the whole start is tried again.
    fn start(binary: &Path, dir: &Path, receiver: &Receiver) -> Haproxy {
        let example_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/haproxy.cfg");
        let example = std::fs::read_to_string(&example_path).expect("deploy/haproxy.cfg");
        let socket = dir.join("haproxy.sock");
        let config_path = dir.join("haproxy.cfg");
        let mut failures = String::new();
        for _ in 0..START_ATTEMPTS {
            let (plain, tls) = two_free_ports();
            let config = derive_config(&example, (plain, tls), receiver, &socket);
            std::fs::write(&config_path, config).unwrap();
            let _ = std::fs::remove_file(&socket);
            let mut child = Command::new(binary)
                .arg("-db")
                .arg("-f")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start haproxy");
            let output = Arc::new(Mutex::new(String::new()));
            collect(child.stdout.take().unwrap(), &output);
            collect(child.stderr.take().unwrap(), &output);
            let mut exited = None;
            wait_until("haproxy to answer on its stats socket, or exit", || {
                exited = child.try_wait().unwrap();
                exited.is_some() || stats_command(&socket, "show info").is_some()
            });
            let haproxy = Haproxy {
                child,
                output,
                plain: SocketAddr::from((Ipv4Addr::LOCALHOST, plain)),
                tls: SocketAddr::from((Ipv4Addr::LOCALHOST, tls)),
                socket: socket.clone(),
            };
            let Some(status) = exited else {
                return haproxy;
            };
            // Its output threads may still be reading the last lines.
            wait_until("haproxy's output to end", || {
                Arc::strong_count(&haproxy.output) == 1
            });
            let output = haproxy.output();
            if !output.contains("cannot bind") {
                panic!("haproxy exited ({status}):\n{output}");
            }
            failures.push_str(&output);
        }
        panic!("haproxy could not bind its ports in {START_ATTEMPTS} attempts:\n{failures}");
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// The CSV of `show stat`, one map of column to value per row.
    fn stats(&self) -> Vec<std::collections::HashMap<String, String>> {
        let csv = stats_command(&self.socket, "show stat").unwrap_or_default();
        let mut lines = csv.lines();
        let Some(header) = lines.next().and_then(|h| h.strip_prefix("# ")) else {
            return Vec::new();
        };
        let columns: Vec<&str> = header.split(',').collect();
        lines
            .filter(|line| !line.is_empty())
            .map(|line| {
                columns
                    .iter()
                    .zip(line.split(','))
                    .map(|(c, v)| ((*c).to_owned(), v.to_owned()))
                    .collect()
            })
            .collect()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Appends what `from` says to `to`, line by line, on a thread of its own.
fn collect(from: impl Read + Send + 'static, to: &Arc<Mutex<String>>) {
    let to = Arc::clone(to);
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            let mut to = to.lock().unwrap();
            to.push_str(&line);
            to.push('\n');
        }
    });
}

/// Two distinct ports free on 127.0.0.1 a moment ago.
fn two_free_ports() -> (u16, u16) {
    let first = TcpListener::bind("127.0.0.1:0").unwrap();
    let second = TcpListener::bind("127.0.0.1:0").unwrap();
    (
        first.local_addr().unwrap().port(),
        second.local_addr().unwrap().port(),
    )
}

/// One command on HAProxy's stats socket and its whole answer; `None` while it is not
/// there yet.
fn stats_command(socket: &Path, command: &str) -> Option<String> {
    let mut stream = UnixStream::connect(socket).ok()?;
    stream.set_read_timeout(Some(DEADLINE)).ok()?;
    stream.write_all(format!("{command}\n").as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

/// A TCP connection from `source` (port chosen by the kernel) to `to`. std cannot bind
/// before connecting; tokio's `TcpSocket` can, and the stream is then used blocking.
fn connect_from(source: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let stream = runtime
        .block_on(async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::from((source, 0)))?;
            socket.connect(to).await?.into_std()
        })
        .unwrap_or_else(|e| panic!("connect from {source} to {to}: {e}"));
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// A TLS client (server name `localhost`) over an established TCP connection, its
/// handshake completed.
fn tls_over(mut tcp: TcpStream, config: Arc<rustls::ClientConfig>) -> Client {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = rustls::ClientConnection::new(config, name).unwrap();
    while tls.is_handshaking() {
        tls.complete_io(&mut tcp)
            .expect("TLS handshake through haproxy");
    }
    Client::over(rustls::StreamOwned::new(tls, tcp))
}

/// The audit trail's events, once it holds one for which `until` is true.
fn audit_until(path: &Path, what: &str, until: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut events = Vec::new();
    wait_until(what, || {
        events = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        events.iter().any(&until)
    });
    events
}

/// The row of `hl7-ihp messages` for a control id.
fn message_row(data: &Path, control_id: &str) -> String {
    let out = messages_table(data);
    out.lines()
        .find(|line| line.contains(control_id))
        .unwrap_or_else(|| panic!("no row for {control_id}:\n{out}"))
        .to_owned()
}

#[test]
fn the_haproxy_example_passes_devices_through_with_their_address_and_certificate() {
    let binary = haproxy_binary();
    let present = binary.is_some();
    if !crate::common::peer_present(
        "haproxy test",
        present,
        "haproxy",
        "apt-get install haproxy",
    ) {
        return;
    }
    let Some(binary) = binary else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let audit = dir.path().join("audit.jsonl");
    // The TLS listener on another loopback address, 127.0.0.3, so that the two listeners
    // are told apart at a glance in the logs; HAProxy still connects from 127.0.0.1 (the
    // source the kernel gives for all of 127.0.0.0/8).
    let receiver = Receiver::start_listening(
        &dir.path().join("data"),
        "127.0.0.1:0",
        &[
            &["--listen-tls", "127.0.0.3:0"][..],
            &pki.listener_flags(),
            &[
                "--proxy-protocol-from",
                "127.0.0.1",
                "--allow",
                &DEVICE.to_string(),
                "--audit-log",
                audit.to_str().unwrap(),
            ],
        ]
        .concat(),
    );
    let haproxy = Haproxy::start(&binary, dir.path(), &receiver);

    // Every server of both backends checked and found up before a device comes.
    let checked = Instant::now();
    loop {
        let servers: Vec<_> = haproxy
            .stats()
            .into_iter()
            .filter(|row| row["svname"].starts_with("rcv"))
            .map(|row| (row["status"].clone(), row["check_status"].clone()))
            .collect();
        if servers.len() == 4 && servers.iter().all(|s| s.0 == "UP" && s.1 == "L7OK") {
            break;
        }
        assert!(
            checked.elapsed() < DEADLINE,
            "haproxy's health checks did not pass: {servers:?}\nhaproxy:\n{}\nreceiver:\n{}",
            haproxy.output(),
            receiver.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Plain MLLP: the receiver sees HAProxy's connection and the device's address.
    let stream = connect_from(DEVICE, haproxy.plain);
    let device = stream.local_addr().unwrap().to_string();
    let mut plain = Client::over(stream);
    assert_eq!(
        ack_field(&plain.exchange(&oru("HAP-1", "P-HAP", 71)), "MSA-1"),
        "AA",
        "haproxy:\n{}",
        haproxy.output()
    );
    let row = message_row(&receiver.data_dir, "HAP-1");
    assert!(row.contains(&device), "{row}");
    let events = audit_until(&audit, "the plain connection audited", |e| {
        e["event"] == "connection_opened" && e["peer"] == device.as_str()
    });
    let opened = events
        .iter()
        .find(|e| e["event"] == "connection_opened" && e["peer"] == device.as_str())
        .unwrap();
    assert_eq!(opened["transport"], "tcp", "{opened}");
    let via: SocketAddr = opened["via"].as_str().unwrap().parse().unwrap();
    assert_eq!(via.ip(), Ipv4Addr::LOCALHOST, "{opened}");

    // TLS passed through: the device's certificate ends at the receiver.
    hl7_ihp::tls::install_provider();
    let config = hl7_ihp::tls::client_config(
        Some(&pki.ca),
        Some((pki.device.cert.as_path(), pki.device.key.as_path())),
    )
    .unwrap();
    let stream = connect_from(DEVICE, haproxy.tls);
    let device_tls = stream.local_addr().unwrap().to_string();
    let mut tls = tls_over(stream, config);
    assert_eq!(
        ack_field(&tls.exchange(&oru("HAP-2", "P-HAP", 72)), "MSA-1"),
        "AA",
        "haproxy:\n{}",
        haproxy.output()
    );
    let row = message_row(&receiver.data_dir, "HAP-2");
    assert!(row.contains(&device_tls), "{row}");
    assert!(row.contains(&format!("[TLS {DEVICE_IDENTITY}]")), "{row}");
    let events = audit_until(&audit, "the TLS connection audited", |e| {
        e["event"] == "connection_opened" && e["peer"] == device_tls.as_str()
    });
    let opened = events
        .iter()
        .find(|e| e["event"] == "connection_opened" && e["peer"] == device_tls.as_str())
        .unwrap();
    assert_eq!(opened["transport"], "tls", "{opened}");
    assert_eq!(opened["identity"], DEVICE_IDENTITY, "{opened}");

    // The audit trail is written in order, so whatever the checks before caused is in it
    // by now: nothing refused, no failed handshake, no connection but the devices' two.
    let refused: Vec<_> = events
        .iter()
        .filter(|e| {
            e["event"] == "connection_refused" || e["event"] == "node_authentication_failure"
        })
        .collect();
    assert!(refused.is_empty(), "{refused:?}");
    let opened: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "connection_opened")
        .map(|e| e["peer"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(opened, [device.as_str(), device_tls.as_str()]);
    // And the receivers are still up in HAProxy's eyes.
    assert!(
        haproxy
            .stats()
            .iter()
            .filter(|row| row["svname"].starts_with("rcv"))
            .all(|row| row["status"] == "UP"),
        "haproxy:\n{}",
        haproxy.output()
    );
    drop((plain, tls, haproxy));
}
