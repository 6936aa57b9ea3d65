//! Limits under attack (issue 8): timeouts are deadlines, unfinished frames share one memory
//! budget, the HTTP side cannot starve MLLP, and a flood of junk logs a few lines, not one
//! per frame. Each test measures what it protects and prints the figures.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{
    Client, DEADLINE, Receiver, ack_field, metric, oru, raise_own_file_limit, start, wait_until,
};

/// The metrics body, or an empty one while HTTP is busy.
fn metrics(receiver: &Receiver) -> String {
    receiver.http_get("/metrics").1
}

/// Connects within a second, or `None` (a full backlog drops the handshake).
fn connect(address: SocketAddr) -> Option<TcpStream> {
    let stream = TcpStream::connect_timeout(&address, Duration::from_secs(1)).ok()?;
    stream.set_nodelay(true).ok()?;
    Some(stream)
}

/// Slowloris: `n` connections that each start a frame and then send one byte of it about
/// every second, reconnecting when the receiver closes them, until `stop` is set (or twice
/// the deadline has passed, so a failed test cannot leave the thread running).
fn dribble(address: SocketAddr, n: usize, stop: Arc<AtomicBool>) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let start_frame = |address| {
            let mut stream = connect(address)?;
            stream.write_all(&[0x0B]).ok()?;
            Some(stream)
        };
        let mut streams: Vec<Option<TcpStream>> = (0..n).map(|_| start_frame(address)).collect();
        let mut n_reconnects = 0u64;
        let started = Instant::now();
        while !stop.load(Ordering::Relaxed) && started.elapsed() < 2 * DEADLINE {
            for slot in &mut streams {
                let alive = slot.as_mut().is_some_and(|s| s.write_all(b"x").is_ok());
                if !alive {
                    *slot = start_frame(address);
                    n_reconnects += 1;
                }
            }
            // Pacing of the attack, not a wait for an outcome.
            thread::sleep(Duration::from_secs(1));
        }
        n_reconnects
    })
}

#[test]
fn a_frame_timeout_is_a_deadline_so_dribbling_connections_do_not_lock_devices_out() {
    raise_own_file_limit();
    let (_dir, receiver) = start(&["--max-connections", "100", "--frame-timeout", "3s"]);
    let stop = Arc::new(AtomicBool::new(false));
    let attack = dribble(receiver.mllp, 150, Arc::clone(&stop));
    wait_until("the dribblers holding every connection", || {
        metric(&metrics(&receiver), "hl7ihp_connections_open") == Some(100)
    });
    let started = Instant::now();
    let mut device = Client::connect(receiver.mllp);
    let ack = device.exchange(&oru("SLOW-1", "P-SLOW", 72));
    let waited = started.elapsed();
    println!("a device behind 150 dribbling connections was answered in {waited:?}");
    assert_eq!(ack_field(&ack, "MSA-1"), "AA");
    assert!(
        waited < Duration::from_secs(30),
        "answered after {waited:?}"
    );
    let mut n_timed_out = 0;
    wait_until("the frame timeouts counted", || {
        n_timed_out =
            metric(&metrics(&receiver), "hl7ihp_connections_timed_out_total").unwrap_or_default();
        n_timed_out >= 100
    });
    stop.store(true, Ordering::Relaxed);
    let n_reconnects = attack.join().expect("dribbler thread");
    println!("{n_timed_out} connections timed out; the dribblers reconnected {n_reconnects} times");
}

/// Writes `noise` every 100 ms until the receiver closes the connection; how long that took,
/// or `None` if it was still open after `limit`.
fn time_until_closed(stream: &mut TcpStream, noise: &[u8], limit: Duration) -> Option<Duration> {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let started = Instant::now();
    let mut chunk = [0u8; 256];
    while started.elapsed() < limit {
        if stream.write_all(noise).is_err() {
            return Some(started.elapsed());
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

#[test]
fn bytes_outside_frames_do_not_keep_an_idle_connection_open() {
    let (_dir, receiver) = start(&["--idle-timeout", "1s"]);
    let mut stream = connect(receiver.mllp).expect("connect");
    stream
        .write_all(&crate::common::frame(&oru("IDLE-1", "P", 1)))
        .unwrap();
    let mut ack = Vec::new();
    let mut chunk = [0u8; 1024];
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    while !ack.ends_with(&[0x1C, 0x0D]) {
        let n = stream.read(&mut chunk).expect("read the ACK");
        assert!(n > 0, "closed before the ACK");
        ack.extend_from_slice(&chunk[..n]);
    }
    let closed = time_until_closed(&mut stream, b"noise\r\n", Duration::from_secs(20));
    println!("noise outside frames: closed after {closed:?} with a 1 s idle timeout");
    let closed = closed.expect("the connection is closed despite the noise");
    assert!(closed < Duration::from_secs(10), "closed after {closed:?}");
    wait_until("the idle timeout log line", || {
        receiver.logs().contains("idle timeout")
    });
}
