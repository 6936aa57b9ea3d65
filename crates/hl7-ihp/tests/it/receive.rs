//! `hl7-ihp receive` end to end through the real binary over 127.0.0.1: framing, ACK rules,
//! duplicates, limits, logs and shutdown.

use crate::common;
use std::thread;

use crate::common::{
    Client, Receiver, ack_field, frame, oru, raise_own_file_limit, sample, start, wait_until,
};

#[test]
fn prototype_messages_get_real_acks() {
    let (_dir, receiver) = start(&[]);
    let mut client = Client::connect(receiver.mllp);
    for n in 1..=3 {
        let ack = client.exchange(&sample(&format!("prototype-{n}.hl7")));
        assert_eq!(ack_field(&ack, "MSA-1"), "AA");
        assert_eq!(ack_field(&ack, "MSA-2"), "CNTRL-3456");
        assert_eq!(ack_field(&ack, "MSH-9"), "ACK^R01^ACK");
        // The prototype's short MSH-2 is answered in kind.
        assert_eq!(ack_field(&ack, "MSH-2"), "^~");
        assert_eq!(ack_field(&ack, "MSH-3"), "GHH OE");
        assert_eq!(ack_field(&ack, "MSH-5"), "GHH LAB");
        assert_eq!(ack_field(&ack, "MSH-12"), "2.4");
    }
}

#[test]
fn ack_control_ids_are_fresh() {
    let (_dir, receiver) = start(&[]);
    let mut client = Client::connect(receiver.mllp);
    let first = ack_field(&client.exchange(&oru("C1", "P1", 70)), "MSH-10");
    let second = ack_field(&client.exchange(&oru("C2", "P1", 71)), "MSH-10");
    assert!(!first.is_empty());
    assert_ne!(first, second);
}

#[test]
fn one_byte_writes_and_two_frames_in_one_write() {
    let (_dir, receiver) = start(&[]);
    let mut client = Client::connect(receiver.mllp);
    for byte in frame(&oru("SPLIT-1", "P2", 80)) {
        client.write_raw(&[byte]);
    }
    assert_eq!(ack_field(&client.read_ack().unwrap(), "MSA-2"), "SPLIT-1");
    let mut both = frame(&oru("PAIR-1", "P2", 81));
    both.extend(frame(&oru("PAIR-2", "P2", 82)));
    client.write_raw(&both);
    assert_eq!(ack_field(&client.read_ack().unwrap(), "MSA-2"), "PAIR-1");
    assert_eq!(ack_field(&client.read_ack().unwrap(), "MSA-2"), "PAIR-2");
}

#[test]
fn garbage_and_oversized_frames_are_rejected_and_the_server_goes_on() {
    let (_dir, receiver) = start(&["--max-frame-bytes", "4096"]);
    let mut client = Client::connect(receiver.mllp);
    // Bytes outside a frame are skipped; the next frame is served.
    client.write_raw(b"noise before the frame\r\n");
    assert_eq!(
        ack_field(&client.exchange(&oru("AFTER-NOISE", "P3", 1)), "MSA-1"),
        "AA"
    );
    // A frame with no MSH: our minimal reject.
    let ack = client.exchange(b"PID|||1\rOBX|1|NM|X||1");
    assert_eq!(ack_field(&ack, "MSA-1"), "AR");
    assert_eq!(ack_field(&ack, "MSA-2"), "");
    assert_eq!(ack_field(&ack, "ERR-3.1"), "100");
    // Broken encoding characters.
    let ack = client.exchange(b"MSH|^&&^|A|B|||2026||ADT^A01|BAD-1|P|2.5");
    assert_eq!(ack_field(&ack, "MSA-1"), "AR");
    // A bad segment after a readable MSH: the reject names the sender's control id. The id
    // holds a character that is no letter or digit; a lower-case `pid` would be accepted.
    let ack = client.exchange(b"MSH|^~\\&|A|B|||2026||ORU^R01|BAD-2|P|2.5\rP@D|x");
    assert_eq!(ack_field(&ack, "MSA-1"), "AR");
    assert_eq!(ack_field(&ack, "MSA-2"), "BAD-2");
    // An oversized frame: rejected, and the connection stays usable.
    let mut big = oru("BIG-1", "P3", 2);
    big.extend(std::iter::repeat_n(b'x', 10_000));
    let ack = client.exchange(&big);
    assert_eq!(ack_field(&ack, "MSA-1"), "AR");
    assert_eq!(ack_field(&ack, "MSA-2"), "BIG-1");
    assert_eq!(
        ack_field(&client.exchange(&oru("AFTER-BIG", "P3", 3)), "MSA-1"),
        "AA"
    );
    // An empty frame.
    assert_eq!(ack_field(&client.exchange(b""), "MSA-1"), "AR");
    assert_eq!(
        ack_field(&client.exchange(&oru("LAST", "P3", 4)), "MSA-1"),
        "AA"
    );
}

fn with_ack_types(accept: &str, application: &str, control_id: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|MON|ICU|||20261126101500+0100||ORU^R01^ORU_R01|{control_id}|P|2.6|||{accept}|{application}\rOBX|1|NM|147842^MDC_ECG_HEART_RATE^MDC|1.1.1.1|72|264864^MDC_DIM_BEAT_PER_MIN^MDC\r"
    )
    .into_bytes()
}

#[test]
fn ack_rules_follow_msh_15_and_16() {
    let (_dir, receiver) = start(&[]);
    let mut client = Client::connect(receiver.mllp);
    let ack = client.exchange(&with_ack_types("AL", "NE", "E-1"));
    assert_eq!(
        (ack_field(&ack, "MSA-1"), ack_field(&ack, "MSA-2")),
        ("CA".into(), "E-1".into())
    );
    let ack = client.exchange(&with_ack_types("NE", "AL", "E-2"));
    assert_eq!(ack_field(&ack, "MSA-1"), "AA");
    // NE/NE asks for nothing: no ACK; the next message's ACK is the next thing read.
    client.send(&with_ack_types("NE", "NE", "E-3"));
    client.send(&with_ack_types("ER", "NE", "E-4"));
    let ack = client.exchange(&with_ack_types("AL", "AL", "E-5"));
    assert_eq!(
        (ack_field(&ack, "MSA-1"), ack_field(&ack, "MSA-2")),
        ("CA".into(), "E-5".into())
    );
    // ER: only on error. A missing MSH-10 is an error.
    let ack = client.exchange(&with_ack_types("ER", "NE", ""));
    assert_eq!(ack_field(&ack, "MSA-1"), "CE");
    assert_eq!(ack_field(&ack, "ERR-3.1"), "101");
    assert_eq!(ack_field(&ack, "ERR-2"), "MSH^1^10");
    // Original mode: AE with ERR-1 before v2.5.
    let ack = client.exchange(b"MSH|^~\\&|A|B|||2026||ORU^R01||P|2.3\rPID|||1");
    assert_eq!(ack_field(&ack, "MSA-1"), "AE");
    assert_eq!(ack_field(&ack, "ERR-1.4.1"), "101");
}

#[test]
fn original_ack_mode_answers_aa_to_everything() {
    let (_dir, receiver) = start(&["--ack-mode", "original"]);
    let mut client = Client::connect(receiver.mllp);
    assert_eq!(
        ack_field(
            &client.exchange(&with_ack_types("AL", "NE", "O-1")),
            "MSA-1"
        ),
        "AA"
    );
    assert_eq!(
        ack_field(
            &client.exchange(&with_ack_types("NE", "NE", "O-2")),
            "MSA-1"
        ),
        "AA"
    );
}

#[test]
fn batches_get_one_ack_per_message_in_order() {
    let (_dir, receiver) = start(&[]);
    let mut client = Client::connect(receiver.mllp);
    client.send(&sample("batch.hl7"));
    assert_eq!(ack_field(&client.read_ack().unwrap(), "MSA-2"), "B-1");
    assert_eq!(ack_field(&client.read_ack().unwrap(), "MSA-2"), "B-2");
}

#[test]
fn many_concurrent_senders() {
    let (_dir, receiver) = start(&[]);
    let address = receiver.mllp;
    let threads: Vec<_> = (0..40)
        .map(|t| {
            thread::spawn(move || {
                let mut client = Client::connect(address);
                for n in 0..25 {
                    let id = format!("T{t}-{n}");
                    let ack = client.exchange(&oru(&id, &format!("PAT-{}", t % 7), n));
                    assert_eq!(ack_field(&ack, "MSA-1"), "AA");
                    assert_eq!(ack_field(&ack, "MSA-2"), id);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("sender thread");
    }
    let (status, body) = receiver.http_get("/metrics");
    assert_eq!(status, 200);
    assert!(
        body.contains("\nhl7ihp_messages_accepted_total 1000\n"),
        "{body}"
    );
}

#[test]
fn health_and_metrics() {
    let (_dir, receiver) = start(&[]);
    let (status, body) = receiver.http_get("/healthz");
    assert_eq!(status, 200);
    assert!(body.contains("ok"));
    let mut client = Client::connect(receiver.mllp);
    client.write_raw(b"xx");
    client.exchange(&oru("M-1", "P9", 1));
    let (_, body) = receiver.http_get("/metrics");
    assert!(
        body.contains("\nhl7ihp_mllp_bytes_skipped_total 2\n"),
        "{body}"
    );
    assert!(body.contains("\nhl7ihp_connections_open 1\n"), "{body}");
}

#[test]
fn invalid_settings_exit_2_naming_the_setting() {
    let (status, _, stderr) = common::run(&["receive", "--listen", "not-an-address"]);
    assert_eq!(status, 2);
    assert!(stderr.contains("listen"), "{stderr}");
    let (status, _, stderr) = common::run(&["receive", "--dedupe", "maybe"]);
    assert_eq!(status, 2);
    assert!(stderr.contains("dedupe"), "{stderr}");
}

#[test]
fn an_unreachable_postgres_store_stops_the_start_without_showing_its_password() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("postgres://hl7:pw-s3cret@127.0.0.1:{port}/hl7");
    let data_dir = dir.path().join("data");
    let (status, _, stderr) = common::run(&[
        "receive",
        "--store",
        &url,
        "--listen",
        "127.0.0.1:0",
        "--http",
        "off",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    assert_ne!(status, 0, "{stderr}");
    assert!(stderr.contains("PostgreSQL"), "{stderr}");
    assert!(
        !stderr.contains("s3cret"),
        "the password is not shown: {stderr}"
    );
    // A location without a user is a configuration error, named by where it came from.
    let output = std::process::Command::new(common::binary())
        .arg("receive")
        .env("HL7IHP_STORE", "postgresql://db/hl7")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("HL7IHP_STORE"), "{stderr}");
}

#[test]
fn config_file_settings_are_validated_and_unknown_keys_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hl7-ihp.toml");
    std::fs::write(&path, "store = \"postgres://db/hl7\"\n").unwrap();
    let config = path.to_str().unwrap();
    let (status, _, stderr) = common::run(&["receive", "--config", config]);
    assert_eq!(status, 2);
    assert!(
        stderr.contains("invalid setting `store` (`store` in the config file)"),
        "{stderr}"
    );
    std::fs::write(&path, "max_conections = 5\n").unwrap();
    let (status, _, stderr) = common::run(&["receive", "--config", config]);
    assert_eq!(status, 2);
    assert!(
        stderr.contains("unknown setting `max_conections`"),
        "{stderr}"
    );
}

#[test]
fn store_setting_puts_the_database_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("db/messages.sqlite3");
    let data = dir.path().join("data");
    let store = format!("sqlite:{}", database.display());
    let receiver = Receiver::start(&data, &["--store", &store]);
    let mut client = Client::connect(receiver.mllp);
    assert_eq!(
        ack_field(&client.exchange(&oru("ST-1", "P", 1)), "MSA-1"),
        "AA"
    );
    // A second receiver with its own data directory but the same database is refused:
    // two writers would each trust their own memory of ids, patients and keys.
    let other = dir.path().join("other");
    let (code, _, stderr) = common::run(&[
        "receive",
        "--listen",
        "127.0.0.1:0",
        "--http",
        "off",
        "--data-dir",
        other.to_str().unwrap(),
        "--store",
        &store,
    ]);
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("another receiver is writing"), "{stderr}");
    assert_eq!(
        ack_field(&client.exchange(&oru("ST-2", "P", 2)), "MSA-1"),
        "AA"
    );
    drop(client);
    let (status, logs) = receiver.terminate();
    assert!(status.success(), "{status:?} {logs}");
    assert!(database.exists());
    assert!(!data.join("hl7-ihp.sqlite3").exists());
    // The patient files stay in the data directory.
    assert!(data.join("patients/patient_P.json").exists(), "{logs}");
    // The inspection commands read it with the same setting.
    let (code, stdout, stderr) = common::run(&["messages", "--store", &store]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("ST-1"), "{stdout}");
    let (code, _, stderr) = common::run(&["patients", "--store", "postgres://u:secret@h/db"]);
    assert_ne!(code, 0);
    assert!(!stderr.contains("secret"), "{stderr}");
}

#[test]
fn per_peer_limit_refuses_extra_connections() {
    let (_dir, receiver) = start(&["--max-connections-per-peer", "2"]);
    let mut first = Client::connect(receiver.mllp);
    let mut second = Client::connect(receiver.mllp);
    assert_eq!(
        ack_field(&first.exchange(&oru("L-1", "P", 1)), "MSA-1"),
        "AA"
    );
    assert_eq!(
        ack_field(&second.exchange(&oru("L-2", "P", 1)), "MSA-1"),
        "AA"
    );
    let mut third = Client::connect(receiver.mllp);
    assert!(
        third.closed(),
        "the third connection from one address is closed"
    );
    drop(first);
    // A slot frees when a connection ends.
    wait_until("a freed slot", || {
        let mut again = Client::connect(receiver.mllp);
        again.send(&oru("L-3", "P", 1));
        again.read_ack().is_some()
    });
}

#[test]
fn idle_connections_are_closed() {
    let (_dir, receiver) = start(&["--idle-timeout", "300ms"]);
    let mut client = Client::connect(receiver.mllp);
    client.exchange(&oru("I-1", "P", 1));
    assert!(client.closed());
    wait_until("the timeout log line", || {
        receiver.logs().contains("idle timeout")
    });
}

#[test]
fn sigterm_finishes_and_exits_0() {
    let (_dir, receiver) = start(&[]);
    let mut client = Client::connect(receiver.mllp);
    client.exchange(&oru("S-1", "P", 1));
    let (status, logs) = receiver.terminate();
    assert!(status.success(), "{status:?} {logs}");
    assert!(logs.contains("stopped"), "{logs}");
}

#[test]
fn logs_carry_no_patient_data() {
    let (_dir, receiver) = start(&[]);
    let mut client = Client::connect(receiver.mllp);
    client.exchange(&sample("prototype-1.hl7"));
    client.exchange(&sample("pcd01-vitals.hl7"));
    client.exchange(
        b"MSH|^~\\&|A|B|||2026||ORU^R01|BAD-3|P|2.5\rPID|||SECRET-ID-77||Geheim^Name\rb@d|segment",
    );
    client.exchange(&with_ack_types("AL", "NE", ""));
    drop(client);
    let (_, logs) = receiver.terminate();
    for secret in [
        "EVERYWOMAN",
        "555-44-4444",
        "Lindqvist",
        "MRN-1042",
        "SECRET-ID-77",
        "Geheim",
        "GLUCOSE",
        "FERNWOOD",
    ] {
        assert!(!logs.contains(secret), "log carries {secret}: {logs}");
    }
    assert!(logs.contains("connection closed"), "{logs}");
}

#[test]
fn a_thousand_connections_at_once() {
    raise_own_file_limit();
    let (_dir, receiver) = start(&[]);
    let mut clients: Vec<Client> = (0..1000).map(|_| Client::connect(receiver.mllp)).collect();
    for (n, client) in clients.iter_mut().enumerate() {
        let ack = client.exchange(&oru(&format!("K-{n}"), &format!("K{}", n % 50), 1));
        assert_eq!(ack_field(&ack, "MSA-1"), "AA");
    }
    let (_, body) = receiver.http_get("/metrics");
    assert!(body.contains("\nhl7ihp_connections_open 1000\n"), "{body}");
    // All still open and served, oldest first.
    let ack = clients[0].exchange(&oru("K-again", "K0", 2));
    assert_eq!(ack_field(&ack, "MSA-1"), "AA");
}

#[test]
fn accept_backs_off_when_file_descriptors_run_out() {
    raise_own_file_limit();
    let dir = tempfile::tempdir().unwrap();
    // Few descriptors: the store, the listeners and the runtime take some, then accept fails.
    let receiver = Receiver::start_with_file_limit(&dir.path().join("data"), 64, &[]);
    let streams: Vec<_> = (0..80)
        .map(|_| std::net::TcpStream::connect(receiver.mllp).unwrap())
        .collect();
    wait_until("the back-off log line", || {
        receiver.logs().contains("out of file descriptors")
    });
    drop(streams);
    // Once descriptors are free again, connections are served.
    wait_until("a connection served after the back-off", || {
        Client::try_connect(receiver.mllp).is_some_and(|mut client| {
            client.send(&oru("FD-1", "FD", 1));
            client.read_ack().is_some()
        })
    });
    let (status, _) = receiver.http_get("/healthz");
    assert_eq!(status, 200);
}

#[test]
fn a_deleted_database_file_fails_health_and_gets_rejects() {
    let (_dir, receiver) = start(&[]);
    let mut client = Client::connect(receiver.mllp);
    assert_eq!(
        ack_field(&client.exchange(&oru("DEL-1", "P1", 1)), "MSA-1"),
        "AA"
    );
    assert_eq!(receiver.http_get("/healthz").0, 200);
    // What a person cleaning up disk space might do to a running receiver.
    std::fs::remove_file(receiver.data_dir.join("hl7-ihp.sqlite3")).unwrap();
    wait_until("health to report the lost file", || {
        let (status, body) = receiver.http_get("/healthz");
        status == 503 && body.contains("deleted or replaced")
    });
    // From now on nothing is acknowledged that a restart would lose.
    let ack = client.exchange(&oru("DEL-2", "P1", 2));
    assert_eq!(ack_field(&ack, "MSA-1"), "AR");
    assert_eq!(ack_field(&ack, "ERR-3.1"), "207");
    // The log reaches the test through a reader thread on the child's stderr: wait for it.
    wait_until("the lost file in the log", || {
        receiver.logs().contains("deleted or replaced")
    });
}

#[test]
fn repeated_junk_frames_are_kept_once_with_a_count() {
    let (dir, receiver) = start(&[]);
    let mut client = Client::connect(receiver.mllp);
    let n_junk = 5_000;
    for _ in 0..n_junk {
        assert_eq!(ack_field(&client.exchange(b""), "MSA-1"), "AR");
    }
    for _ in 0..n_junk {
        assert_eq!(ack_field(&client.exchange(b"not hl7"), "MSA-1"), "AR");
    }
    assert_eq!(
        ack_field(&client.exchange(&oru("REAL-1", "P1", 1)), "MSA-1"),
        "AA"
    );
    let (_, metrics) = receiver.http_get("/metrics");
    assert!(
        metrics.contains(&format!(
            "hl7ihp_store_refusals_repeated_total {}",
            2 * n_junk - 2
        )),
        "{metrics}"
    );
    let data_dir = receiver.data_dir.display().to_string();
    let (code, stdout, _) = common::run(&["messages", "--rejected", "--data-dir", &data_dir]);
    assert_eq!(code, 0);
    assert_eq!(
        stdout.matches(&format!("×{n_junk} received")).count(),
        2,
        "{stdout}"
    );
    let (status, logs) = receiver.terminate();
    assert!(status.success(), "{logs}");
    let database = dir.path().join("data/hl7-ihp.sqlite3");
    let conn = rusqlite::Connection::open(&database).unwrap();
    let rows: Vec<(String, i64)> = conn
        .prepare("SELECT outcome, n_received FROM messages ORDER BY id")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let expected = [
        ("rejected".to_owned(), n_junk),
        ("rejected".to_owned(), n_junk),
        ("accepted".to_owned(), 1),
    ];
    assert_eq!(rows, expected);
    let bytes = std::fs::metadata(&database).unwrap().len();
    eprintln!("{} junk frames: database {bytes} bytes", 2 * n_junk);
    assert!(bytes < 1024 * 1024, "{bytes} bytes of database for junk");
}
