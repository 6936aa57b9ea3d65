//! The PostgreSQL store through the real binary: `receive --store postgres://…` acknowledges
//! what it stored, `messages` and `patients` read it back, and a receiver killed with SIGKILL
//! loses nothing it acknowledged. The server is the tests' own (`pg_server`).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::common::{self, Client, ack_field, oru, wait_until};
use crate::pg_server;

#[test]
fn receive_into_postgres_and_read_it_back() {
    let Some(server) = pg_server::server() else {
        return;
    };
    let db = server.create_database();
    let url = server.url(&db);
    let (_dir, receiver) = common::start(&["--store", &url]);
    let mut client = Client::connect(receiver.mllp);
    for n in 0..20 {
        let id = format!("PG{n}");
        let ack = client.exchange(&oru(&id, "PGPAT", n));
        assert_eq!(ack_field(&ack, "MSA-1"), "AA", "{}", receiver.logs());
        assert_eq!(ack_field(&ack, "MSA-2"), id);
    }
    // A retransmission is a duplicate, answered AA, not stored again.
    let ack = client.exchange(&oru("PG3", "PGPAT", 3));
    assert_eq!(ack_field(&ack, "MSA-1"), "AA");
    assert_eq!(server.psql(&db, "SELECT count(*) FROM messages"), "20");
    let (code, out, err) = common::run(&["messages", "--store", &url, "--limit", "0"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("PG19") && out.contains("PG0 "), "{out}");
    let (code, out, err) = common::run(&["patients", "--store", &url]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("PGPAT"), "{out}");
    // The password never reaches the logs.
    assert!(!receiver.logs().contains("password"), "{}", receiver.logs());
}

#[test]
fn a_receiver_killed_with_sigkill_loses_nothing_it_acknowledged() {
    let Some(server) = pg_server::server() else {
        return;
    };
    let db = server.create_database();
    let url = server.url(&db);
    let (_dir, receiver) = common::start(&["--store", &url]);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let senders: Vec<_> = (0..4)
        .map(|sender| {
            let (stop, acked, address) = (Arc::clone(&stop), Arc::clone(&acked), receiver.mllp);
            std::thread::spawn(move || {
                let Some(mut client) = Client::try_connect(address) else {
                    return;
                };
                for n in 0..100_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let id = format!("K{sender}-{n}");
                    if !client.try_send(&oru(&id, &format!("KILL-{sender}"), n)) {
                        break;
                    }
                    match client.read_ack() {
                        Some(ack) if ack_field(&ack, "MSA-1") == "AA" => {
                            acked.lock().unwrap().insert(id);
                        }
                        Some(_) => {}
                        None => break,
                    }
                }
            })
        })
        .collect();
    wait_until("200 acknowledged messages", || {
        acked.lock().unwrap().len() >= 200
    });
    receiver.kill();
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.join().unwrap();
    }
    let stored: BTreeSet<String> = server
        .psql(
            &db,
            "SELECT control_id FROM messages WHERE outcome = 'accepted'",
        )
        .lines()
        .map(str::to_string)
        .collect();
    let acked = acked.lock().unwrap();
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
}
