//! Unframed HL7 (issue 13): with `--framing auto` a connection that starts with `MSH` is read
//! as bare HL7 and answered bare, beside MLLP devices on the same listener; `send --framing
//! none` plays such a device; with `--framing mllp` bare bytes stay skipped and counted.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use crate::common::{Client, DEADLINE, Receiver, ack_field, metric, oru, run, start, wait_until};

/// A raw TCP connection that writes bare HL7.
fn bare_connect(address: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Reads until `n` bare ACKs are in (each with its MSA segment ended), and returns them, split
/// at their MSH. Panics on a close or the deadline.
fn read_bare_acks(stream: &mut TcpStream, n: usize) -> Vec<Vec<u8>> {
    let mut buffer = Vec::new();
    loop {
        let text = String::from_utf8_lossy(&buffer).into_owned();
        let n_msa = text.matches("MSA|").count();
        let last_ended = text.rsplit("MSA|").next().is_some_and(|t| t.contains('\r'));
        if n_msa >= n && last_ended {
            assert!(
                !buffer.contains(&0x0B) && !buffer.contains(&0x1C),
                "ACKs carry MLLP bytes: {text:?}"
            );
            return text
                .split("MSH|")
                .filter(|part| !part.is_empty())
                .map(|part| format!("MSH|{part}").into_bytes())
                .collect();
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) => panic!("closed after {text:?}"),
            Ok(k) => buffer.extend_from_slice(&chunk[..k]),
            Err(error) => panic!("no ACK after {text:?}: {error}"),
        }
    }
}

fn metrics(receiver: &Receiver) -> String {
    receiver.http_get("/metrics").1
}

#[test]
fn bare_hl7_gets_bare_acks_and_is_stored_beside_mllp_devices() {
    let (_dir, receiver) = start(&[]);
    let mut bare = bare_connect(receiver.mllp);
    // Two messages in one write: the first ends at the second's MSH, the second by the gap.
    let mut two = oru("BARE-1", "P-BARE", 71);
    two.extend(oru("BARE-2", "P-BARE", 72));
    bare.write_all(&two).unwrap();
    let acks = read_bare_acks(&mut bare, 2);
    assert_eq!(acks.len(), 2);
    assert_eq!(ack_field(&acks[0], "MSA-1"), "AA");
    assert_eq!(ack_field(&acks[0], "MSA-2"), "BARE-1");
    assert_eq!(ack_field(&acks[1], "MSA-2"), "BARE-2");
    // LF-terminated, on the same connection, ended by the gap.
    let lf: Vec<u8> = oru("BARE-3", "P-BARE", 73)
        .into_iter()
        .map(|b| if b == b'\r' { b'\n' } else { b })
        .collect();
    bare.write_all(&lf).unwrap();
    let acks = read_bare_acks(&mut bare, 1);
    assert_eq!(ack_field(&acks[0], "MSA-2"), "BARE-3");

    // An MLLP device on the same listener is answered in MLLP.
    let mut framed = Client::connect(receiver.mllp);
    let ack = framed.exchange(&oru("MLLP-1", "P-MLLP", 80));
    assert_eq!(ack_field(&ack, "MSA-1"), "AA");

    let body = metrics(&receiver);
    assert_eq!(metric(&body, "hl7ihp_unframed_messages_total"), Some(3));
    assert_eq!(metric(&body, "hl7ihp_messages_accepted_total"), Some(4));
    assert_eq!(metric(&body, "hl7ihp_mllp_bytes_skipped_total"), Some(0));
    let (code, out, err) = run(&[
        "show",
        "P-BARE",
        "--all",
        "--data-dir",
        receiver.data_dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    for value in ["\"71\"", "\"72\"", "\"73\""] {
        assert!(out.contains(value), "{value} not stored: {out}");
    }
}

#[test]
fn a_bare_message_whose_peer_closes_is_still_stored() {
    let (_dir, receiver) = start(&["--unframed-gap", "30s"]);
    let mut bare = bare_connect(receiver.mllp);
    bare.write_all(&oru("BARE-EOF", "P-EOF", 64)).unwrap();
    bare.shutdown(std::net::Shutdown::Write).unwrap();
    let acks = read_bare_acks(&mut bare, 1);
    assert_eq!(ack_field(&acks[0], "MSA-2"), "BARE-EOF");
    assert_eq!(
        metric(&metrics(&receiver), "hl7ihp_unframed_messages_total"),
        Some(1)
    );
}

#[test]
fn send_framing_none_to_an_auto_receiver() {
    let (_dir, receiver) = start(&[]);
    let to = receiver.mllp.to_string();
    let (code, out, err) = run(&[
        "send",
        "--to",
        &to,
        "--count",
        "3",
        "--interval",
        "0ms",
        "--framing",
        "none",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<_> = out.lines().filter(|l| l.contains("glucose")).collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines.iter().all(|l| l.ends_with(" AA")), "{out}");
    let body = metrics(&receiver);
    assert_eq!(metric(&body, "hl7ihp_unframed_messages_total"), Some(3));
    assert_eq!(metric(&body, "hl7ihp_messages_accepted_total"), Some(3));
}

#[test]
fn framing_mllp_skips_bare_bytes_and_stores_nothing() {
    let (_dir, receiver) = start(&["--framing", "mllp"]);
    let message = oru("BARE-NO", "P-NO", 70);
    let mut bare = bare_connect(receiver.mllp);
    bare.write_all(&message).unwrap();
    let n = i64::try_from(message.len()).unwrap();
    wait_until("the bare bytes counted as skipped", || {
        metric(&metrics(&receiver), "hl7ihp_mllp_bytes_skipped_total") == Some(n)
    });
    // An MLLP message afterwards on the same connection is read; the bare one never was.
    bare.write_all(&crate::common::frame(&oru("MLLP-OK", "P-NO", 71)))
        .unwrap();
    let mut client = Client::over(bare);
    let ack = client.read_ack().expect("an ACK");
    assert_eq!(ack_field(&ack, "MSA-2"), "MLLP-OK");
    let body = metrics(&receiver);
    assert_eq!(metric(&body, "hl7ihp_unframed_messages_total"), Some(0));
    assert_eq!(metric(&body, "hl7ihp_messages_accepted_total"), Some(1));
}

#[test]
fn framing_none_and_a_bad_framing_value() {
    let (_dir, receiver) = start(&["--framing", "none"]);
    let mut bare = bare_connect(receiver.mllp);
    bare.write_all(&oru("NONE-1", "P-NONE", 60)).unwrap();
    let acks = read_bare_acks(&mut bare, 1);
    assert_eq!(ack_field(&acks[0], "MSA-2"), "NONE-1");
    let (code, _, err) = run(&["receive", "--framing", "sometimes", "--listen", "off"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("framing"), "{err}");
}
