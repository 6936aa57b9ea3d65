//! Client mode end to end: `send --serve` plays a device that serves (it listens and pushes
//! to whoever connects), `receive --connect` connects to it, stores and ACKs what it pushes,
//! and reconnects when the device is killed and comes back on the same port.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver as Lines;
use std::time::{Duration, Instant};

use crate::common::{self, DEADLINE, Receiver, lines_of, metric, wait_until};
use crate::pki::Pki;

/// A `send --serve` device: its process, its output's lines and its bound address.
pub(crate) struct Device {
    child: Child,
    lines: Lines<String>,
    pub(crate) addr: SocketAddr,
    /// Control ids it saw answered AA, in order.
    pub(crate) acked: Vec<String>,
}

impl Device {
    pub(crate) fn spawn(listen: &str, extra: &[&str]) -> Device {
        let mut child = Command::new(common::binary())
            .args(["send", "--serve", listen])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start send --serve");
        let lines = lines_of(child.stdout.take().unwrap());
        let first = lines.recv_timeout(DEADLINE).expect("the serving line");
        let addr = first
            .strip_prefix("serving on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("not a serving line: {first}"));
        Device {
            child,
            lines,
            addr,
            acked: Vec::new(),
        }
    }

    /// Reads the lines printed so far; an `AA` line's first word is its control id.
    pub(crate) fn read(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.last() == Some(&"AA") {
                self.acked.push(words[0].to_owned());
            }
        }
    }

    /// Waits until it has seen `n` messages answered AA.
    pub(crate) fn wait_for_acks(&mut self, n: usize) {
        let start = Instant::now();
        loop {
            self.read();
            if self.acked.len() >= n {
                return;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {n} ACKs, got {}",
                self.acked.len()
            );
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                let words: Vec<&str> = line.split_whitespace().collect();
                if words.last() == Some(&"AA") {
                    self.acked.push(words[0].to_owned());
                }
            }
        }
    }

    /// Waits for it to exit (after `--count`), then reads what it printed last.
    fn wait_exit(&mut self) {
        wait_until("the device to stop", || {
            self.child.try_wait().unwrap().is_some()
        });
        // The reader thread may still hold the last lines.
        std::thread::sleep(Duration::from_millis(50));
        self.read();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.read();
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The stored messages' table, which names each one's control id.
fn stored(receiver: &Receiver) -> String {
    common::messages_table(&receiver.data_dir)
}

fn link_metric(receiver: &Receiver, name: &str, link: &str) -> i64 {
    let (_, body) = receiver.http_get("/metrics");
    metric(&body, &format!("{name}{{link=\"{link}\"}}")).unwrap_or(-1)
}

fn link_status(receiver: &Receiver) -> serde_json::Value {
    let (status, body) = receiver.http_get("/api/v1/devices");
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    json["links"][0].clone()
}

#[test]
fn a_receiver_connected_to_a_serving_device_stores_and_acks_what_it_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let mut device = Device::spawn("127.0.0.1:0", &["--interval", "20ms", "--count", "5"]);
    let connect = format!("bed-12={}", device.addr);
    let receiver =
        Receiver::start_listening(&dir.path().join("data"), "off", &["--connect", &connect]);
    device.wait_exit();
    assert_eq!(device.acked.len(), 5, "{:?}", device.acked);
    let table = stored(&receiver);
    for id in &device.acked {
        assert!(table.contains(id.as_str()), "{id} not stored:\n{table}");
    }
    wait_until("the link's messages on /metrics", || {
        link_metric(&receiver, "hl7ihp_link_messages_total", "bed-12") >= 5
    });
    let link = link_status(&receiver);
    assert_eq!(link["name"], "bed-12");
    assert_eq!(link["address"], device.addr.to_string());
    assert!(link["n_messages"].as_u64().unwrap() >= 5, "{link}");
    assert!(link["last_message_at"].as_str().is_some(), "{link}");
    // The device stopped after its count: the link is retrying now.
    wait_until("the link to be down", || {
        link_metric(&receiver, "hl7ihp_link_up", "bed-12") == 0
    });
    let (status, logs) = receiver.terminate();
    assert!(status.success(), "{logs}");
}

#[test]
fn a_device_killed_and_restarted_is_reconnected_and_nothing_acknowledged_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Device::spawn("127.0.0.1:0", &["--interval", "50ms"]);
    let addr = first.addr;
    let connect = format!("bed-7={addr}");
    let receiver =
        Receiver::start_listening(&dir.path().join("data"), "off", &["--connect", &connect]);
    first.wait_for_acks(3);
    wait_until("the link to be up", || {
        link_metric(&receiver, "hl7ihp_link_up", "bed-7") == 1
    });
    // SIGKILL mid-run: no goodbye, maybe a message written and not yet answered.
    first.kill();
    let mut second = Device::spawn(&addr.to_string(), &["--interval", "50ms", "--count", "3"]);
    second.wait_exit();
    assert_eq!(second.acked.len(), 3, "{:?}", second.acked);
    wait_until("a reconnect on /metrics", || {
        link_metric(&receiver, "hl7ihp_link_reconnects_total", "bed-7") >= 1
    });
    let link = link_status(&receiver);
    assert!(link["n_reconnects"].as_u64().unwrap() >= 1, "{link}");
    let table = stored(&receiver);
    for id in first.acked.iter().chain(&second.acked) {
        assert!(
            table.contains(id.as_str()),
            "{id} acknowledged but not stored:\n{table}"
        );
    }
    let (status, logs) = receiver.terminate();
    assert!(status.success(), "{logs}");
}

#[test]
fn an_unframed_serving_device_is_read_bare_and_answered_bare() {
    let dir = tempfile::tempdir().unwrap();
    let mut device = Device::spawn(
        "127.0.0.1:0",
        &["--framing", "none", "--interval", "20ms", "--count", "3"],
    );
    let connect = format!("monitor={}", device.addr);
    let receiver =
        Receiver::start_listening(&dir.path().join("data"), "off", &["--connect", &connect]);
    device.wait_exit();
    assert_eq!(device.acked.len(), 3, "{:?}", device.acked);
    let table = stored(&receiver);
    for id in &device.acked {
        assert!(table.contains(id.as_str()), "{id} not stored:\n{table}");
    }
    let (status, logs) = receiver.terminate();
    assert!(status.success(), "{logs}");
}

#[test]
fn an_unframed_device_killed_and_restarted_is_reconnected_and_nothing_acknowledged_is_lost() {
    // Issue 13 part 9: a serving device that pushes bare HL7 and restarts mid-run.
    let dir = tempfile::tempdir().unwrap();
    let bare = ["--framing", "none", "--interval", "50ms"];
    let mut first = Device::spawn("127.0.0.1:0", &bare);
    let addr = first.addr;
    let connect = format!("bare-bed={addr}");
    let receiver =
        Receiver::start_listening(&dir.path().join("data"), "off", &["--connect", &connect]);
    first.wait_for_acks(3);
    wait_until("the link to be up", || {
        link_metric(&receiver, "hl7ihp_link_up", "bare-bed") == 1
    });
    // SIGKILL mid-run: a bare message may be cut short, written and never answered.
    first.kill();
    let mut second = Device::spawn(&addr.to_string(), &[&bare[..], &["--count", "3"]].concat());
    second.wait_exit();
    assert_eq!(second.acked.len(), 3, "{:?}", second.acked);
    wait_until("a reconnect on /metrics", || {
        link_metric(&receiver, "hl7ihp_link_reconnects_total", "bare-bed") >= 1
    });
    let table = stored(&receiver);
    for id in first.acked.iter().chain(&second.acked) {
        assert!(
            table.contains(id.as_str()),
            "{id} acknowledged but not stored:\n{table}"
        );
    }
    let (status, logs) = receiver.terminate();
    assert!(status.success(), "{logs}");
}

#[test]
fn a_tls_link_checks_the_devices_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let mut device = Device::spawn(
        "127.0.0.1:0",
        &[
            "--tls",
            "--tls-cert",
            pki.server.cert(),
            "--tls-key",
            pki.server.key(),
            "--interval",
            "20ms",
            "--count",
            "3",
        ],
    );
    let connect = format!("secure={}", device.addr);
    let receiver = Receiver::start_listening(
        &dir.path().join("data"),
        "off",
        &[
            "--connect",
            &connect,
            "--connect-tls",
            "on",
            "--connect-tls-ca",
            pki.ca(),
        ],
    );
    device.wait_exit();
    assert_eq!(device.acked.len(), 3, "{:?}", device.acked);
    let table = stored(&receiver);
    for id in &device.acked {
        assert!(table.contains(id.as_str()), "{id} not stored:\n{table}");
    }
    assert_eq!(link_status(&receiver)["transport"], "tls");
    let (status, logs) = receiver.terminate();
    assert!(status.success(), "{logs}");

    // A device whose certificate is from a CA we do not trust is never read.
    let mut stranger = Device::spawn(
        "127.0.0.1:0",
        &[
            "--tls",
            "--tls-cert",
            pki.stranger.cert(),
            "--tls-key",
            pki.stranger.key(),
            "--count",
            "1",
        ],
    );
    let connect = format!("stranger={}", stranger.addr);
    let receiver = Receiver::start_listening(
        &dir.path().join("other"),
        "off",
        &[
            "--connect",
            &connect,
            "--connect-tls",
            "on",
            "--connect-tls-ca",
            pki.ca(),
        ],
    );
    wait_until("a failed TLS attempt", || {
        link_metric(&receiver, "hl7ihp_link_connect_failures_total", "stranger") >= 1
    });
    let link = link_status(&receiver);
    assert!(
        link["last_error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("TLS"),
        "{link}"
    );
    stranger.read();
    assert!(stranger.acked.is_empty());
    let (status, logs) = receiver.terminate();
    assert!(status.success(), "{logs}");
}
