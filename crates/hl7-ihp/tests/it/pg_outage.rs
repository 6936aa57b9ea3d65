//! PostgreSQL outages through the real binary, on a server of the test's own
//! (`pg_server::private_server`, so stopping it disturbs no other test):
//!
//! - PostgreSQL stopped at once under load: every message is answered within the sender's
//!   ACK timeout with AR and ERR 207, never AA, and `/healthz` says failing; started again,
//!   the same receiver stores again (AA, `/healthz` ok) without a restart.
//! - PostgreSQL restarted at once while two receivers on one database take load and one of
//!   them is killed with SIGKILL and started again: every message either acknowledged AA is
//!   stored exactly once.
//!
//! The senders behave as devices: a message answered with anything but AA, or not answered
//! because the connection broke, is sent again (same control id) until it is acknowledged,
//! so "exactly once" also covers a message committed whose ACK was lost. Each test prints
//! the timings it measured (`cargo nextest run … --no-capture` shows them).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::{Client, Receiver, ack_field, oru, wait_until};
use crate::pg_server::{self, PrivateServer};

/// `hl7-ihp send`'s default ACK timeout: a device waits this long for an answer.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a sender keeps reconnecting to a receiver that is not there (being restarted).
const RECONNECT_FOR: Duration = Duration::from_secs(120);

/// One answer a sender got.
#[derive(Clone, Debug)]
struct Answer {
    /// Which sender (index into the load's targets).
    sender: usize,
    control_id: String,
    /// When the message was written, and when its ACK was read.
    sent: Instant,
    answered: Instant,
    /// MSA-1 and ERR-3.1.
    code: String,
    error: String,
}

impl Answer {
    fn accepted(&self) -> bool {
        self.code == "AA"
    }
}

/// Senders running against receivers, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Answer>>>,
    /// Exchanges cut by a closed connection: (sender, how long it waited).
    broken: Arc<Mutex<Vec<(usize, Duration)>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    /// One sender per target; a target is an address that may change (a receiver restarted
    /// on the same port keeps it). Sender `i` sends control ids `{prefix}{i}-{n}`.
    fn start(prefix: &str, targets: &[Arc<Mutex<SocketAddr>>]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let broken = Arc::new(Mutex::new(Vec::new()));
        let threads = targets
            .iter()
            .enumerate()
            .map(|(sender, target)| {
                let (stop, answers, broken, target) = (
                    Arc::clone(&stop),
                    Arc::clone(&answers),
                    Arc::clone(&broken),
                    Arc::clone(target),
                );
                let prefix = prefix.to_string();
                std::thread::spawn(move || {
                    send_until_stopped(sender, &prefix, &target, &stop, &answers, &broken)
                })
            })
            .collect();
        Load {
            stop,
            answers,
            broken,
            threads,
        }
    }

    fn answers(&self) -> Vec<Answer> {
        self.answers.lock().unwrap().clone()
    }

    fn n_accepted(&self) -> usize {
        self.answers
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.accepted())
            .count()
    }

    /// Stops the senders and returns every answer, in the order they came.
    fn finish(self) -> (Vec<Answer>, Vec<(usize, Duration)>) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().expect("a sender panicked");
        }
        let answers = self.answers.lock().unwrap().clone();
        let broken = self.broken.lock().unwrap().clone();
        (answers, broken)
    }
}

/// A device's loop: send, wait for the ACK, the next message after an AA, the same one
/// again after anything else (a short pause first, as devices do) or a broken connection.
fn send_until_stopped(
    sender: usize,
    prefix: &str,
    target: &Mutex<SocketAddr>,
    stop: &AtomicBool,
    answers: &Mutex<Vec<Answer>>,
    broken: &Mutex<Vec<(usize, Duration)>>,
) {
    let mut client: Option<Client> = None;
    let mut n: u32 = 0;
    let mut unreachable_since: Option<Instant> = None;
    for _ in 0..10_000_000u64 {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Some(connected) = client.as_mut() else {
            let address = *target.lock().unwrap();
            client = Client::try_connect(address);
            if client.is_none() {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                assert!(
                    since.elapsed() < RECONNECT_FOR,
                    "sender {sender}: no receiver at {address} for {RECONNECT_FOR:?}"
                );
                std::thread::sleep(Duration::from_millis(20));
            } else {
                unreachable_since = None;
            }
            continue;
        };
        let control_id = format!("{prefix}{sender}-{n}");
        let sent = Instant::now();
        let exchanged = connected
            .try_send(&oru(&control_id, &format!("OUT-{sender}-{}", n % 7), n))
            .then(|| connected.read_ack())
            .flatten();
        let Some(ack) = exchanged else {
            broken.lock().unwrap().push((sender, sent.elapsed()));
            client = None;
            continue;
        };
        let answer = Answer {
            sender,
            control_id,
            sent,
            answered: Instant::now(),
            code: ack_field(&ack, "MSA-1"),
            error: ack_field(&ack, "ERR-3.1"),
        };
        let accepted = answer.accepted();
        answers.lock().unwrap().push(answer);
        if accepted {
            n += 1;
        } else {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `/healthz` polled every few milliseconds: each change of its status, with when.
struct HealthWatch {
    stop: Arc<AtomicBool>,
    changes: Arc<Mutex<Vec<(Instant, u16)>>>,
    thread: Option<JoinHandle<()>>,
}

impl HealthWatch {
    fn start(receiver: &Receiver) -> HealthWatch {
        let address = receiver.http.expect("the receiver serves HTTP");
        let stop = Arc::new(AtomicBool::new(false));
        let changes = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, changes) = (Arc::clone(&stop), Arc::clone(&changes));
            std::thread::spawn(move || {
                let mut last = 0;
                for _ in 0..10_000_000u64 {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let (status, _, _) = crate::common::http_get_with(address, "/healthz", "");
                    if status != last {
                        changes.lock().unwrap().push((Instant::now(), status));
                        last = status;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        HealthWatch {
            stop,
            changes,
            thread: Some(thread),
        }
    }

    /// The first time after `after` that `/healthz` answered `status`.
    fn first(&self, status: u16, after: Instant) -> Option<Instant> {
        self.changes
            .lock()
            .unwrap()
            .iter()
            .find(|(at, s)| *s == status && *at >= after)
            .map(|(at, _)| *at)
    }
}

impl Drop for HealthWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How many rows each control id has in `messages`.
fn stored_counts(server: &PrivateServer, db: &str) -> BTreeMap<String, u64> {
    server
        .psql(
            db,
            "SELECT control_id, count(*) FROM messages WHERE outcome = 'accepted' \
             GROUP BY control_id",
        )
        .lines()
        .filter_map(|line| {
            let (id, n) = line.split_once('|')?;
            Some((id.to_string(), n.parse().ok()?))
        })
        .collect()
}

/// Every control id acknowledged AA is stored exactly once, and no control id twice.
/// Returns the acknowledged ids (for further checks, e.g. the patient files).
fn assert_stored_once(server: &PrivateServer, db: &str, answers: &[Answer]) -> BTreeSet<String> {
    let acked: BTreeSet<String> = answers
        .iter()
        .filter(|a| a.accepted())
        .map(|a| a.control_id.clone())
        .collect();
    let stored = stored_counts(server, db);
    let lost: Vec<&String> = acked
        .iter()
        .filter(|id| !stored.contains_key(*id))
        .collect();
    assert!(lost.is_empty(), "acknowledged AA but not stored: {lost:?}");
    let twice: Vec<(&String, &u64)> = stored.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    acked
}

/// The longest wait for an ACK, and every answer that was neither AA nor AR with ERR 207.
fn check_answers(answers: &[Answer]) -> Duration {
    let odd: Vec<&Answer> = answers
        .iter()
        .filter(|a| !a.accepted() && (a.code != "AR" || a.error != "207"))
        .collect();
    assert!(odd.is_empty(), "answers other than AA or AR/207: {odd:?}");
    answers
        .iter()
        .map(|a| a.answered - a.sent)
        .max()
        .unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// One receiver storing into a private server of its own, `/healthz` watched, and
/// [`Self::SENDERS`] senders loading it (control ids `prefix…`).
struct UnderLoad {
    server: PrivateServer,
    db: String,
    _dir: tempfile::TempDir,
    receiver: Receiver,
    health: HealthWatch,
    load: Load,
}

impl UnderLoad {
    const SENDERS: usize = 4;

    /// `None` (the test skipped, said in one line) without PostgreSQL binaries.
    fn start(prefix: &str) -> Option<UnderLoad> {
        let server = pg_server::private_server()?;
        let db = server.create_database();
        let url = server.url(&db);
        let (dir, receiver) = crate::common::start(&["--store", &url]);
        let health = HealthWatch::start(&receiver);
        let targets: Vec<_> = (0..Self::SENDERS)
            .map(|_| Arc::new(Mutex::new(receiver.mllp)))
            .collect();
        let load = Load::start(prefix, &targets);
        Some(UnderLoad {
            server,
            db,
            _dir: dir,
            receiver,
            health,
            load,
        })
    }
}

#[test]
fn postgres_stopped_gets_rejects_and_started_again_stores_without_a_restart() {
    // Bound in this order, dropped in the reverse: the senders first, the server last.
    let Some(UnderLoad {
        server,
        db,
        _dir,
        receiver,
        health,
        load,
    }) = UnderLoad::start("OUT")
    else {
        return;
    };
    let n_senders = UnderLoad::SENDERS;
    wait_until("100 messages acknowledged", || load.n_accepted() >= 100);

    let stop_called = Instant::now();
    server.stop();
    let stopped = Instant::now();
    wait_until("a reject after PostgreSQL stopped", || {
        load.answers()
            .iter()
            .any(|a| !a.accepted() && a.answered >= stop_called)
    });
    wait_until("/healthz failing", || {
        health.first(503, stop_called).is_some()
    });
    // An outage long enough for every sender to be rejected a few times.
    wait_until("every sender rejected three times", || {
        let answers = load.answers();
        (0..n_senders).all(|s| {
            answers
                .iter()
                .filter(|a| a.sender == s && !a.accepted() && a.sent >= stopped)
                .count()
                >= 3
        })
    });

    let start_called = Instant::now();
    server.start();
    let started = Instant::now();
    wait_until("every sender acknowledged AA again", || {
        let answers = load.answers();
        (0..n_senders).all(|s| {
            answers
                .iter()
                .any(|a| a.sender == s && a.accepted() && a.sent >= started)
        })
    });
    wait_until("/healthz ok again", || {
        health.first(200, start_called).is_some()
    });
    let n_before = load.n_accepted();
    wait_until("100 more acknowledged", || {
        load.n_accepted() >= n_before + 100
    });
    let (answers, broken) = load.finish();
    let logs = receiver.logs();

    assert!(broken.is_empty(), "connections broke: {broken:?}\n{logs}");
    let longest = check_answers(&answers);
    assert!(
        longest < ACK_TIMEOUT,
        "an ACK took {longest:?}, longer than the ACK timeout {ACK_TIMEOUT:?}"
    );
    // Sent once PostgreSQL was down and answered before it was started: never AA.
    let accepted_while_down: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.accepted() && a.sent >= stopped && a.answered <= start_called)
        .collect();
    assert!(
        accepted_while_down.is_empty(),
        "AA while PostgreSQL was down: {accepted_while_down:?}"
    );
    let acked = assert_stored_once(&server, &db, &answers);
    // The receiver said why, without patient data.
    assert!(logs.contains("PostgreSQL store failing"), "{logs}");
    assert!(logs.contains("PostgreSQL store works again"), "{logs}");
    assert!(!logs.contains("OUT-0-"), "patient ids in the log: {logs}");

    let first_reject = answers
        .iter()
        .filter(|a| !a.accepted() && a.answered >= stop_called)
        .map(|a| a.answered)
        .min()
        .expect("a reject");
    let first_accept_again = answers
        .iter()
        .filter(|a| a.accepted() && a.sent >= started)
        .map(|a| a.answered)
        .min()
        .expect("an AA");
    let n_rejects = answers.iter().filter(|a| !a.accepted()).count();
    let failing = health.first(503, stop_called).expect("failing");
    let ok = health.first(200, start_called).expect("ok");
    println!(
        "outage timings: pg_ctl stop -m immediate took {}; stop → first AR {}; \
         stop → /healthz 503 {}; pg_ctl start took {}; start ready → first AA {}; \
         start ready → /healthz 200 {}; longest ACK wait {}; {} AR/207 answers, {} AA, \
         {} messages stored",
        ms(stopped - stop_called),
        ms(first_reject.saturating_duration_since(stop_called)),
        ms(failing.saturating_duration_since(stop_called)),
        ms(started - start_called),
        ms(first_accept_again.saturating_duration_since(started)),
        ms(ok.saturating_duration_since(started)),
        ms(longest),
        n_rejects,
        answers.len() - n_rejects,
        acked.len(),
    );
}

/// Starts a receiver on `listen` over `data`, trying again while PostgreSQL is not back yet
/// (a receiver whose store cannot connect at start exits).
fn start_receiver(data: &std::path::Path, listen: &str, url: &str) -> Receiver {
    let deadline = Instant::now() + RECONNECT_FOR;
    loop {
        let started =
            std::panic::catch_unwind(|| Receiver::start_on(data, listen, &["--store", url]));
        match started {
            Ok(receiver) => return receiver,
            Err(panic) if Instant::now() >= deadline => std::panic::resume_unwind(panic),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

#[test]
fn two_receivers_through_a_postgres_restart_and_a_sigkill_store_each_acknowledged_message_once() {
    let Some(server) = pg_server::private_server() else {
        return;
    };
    let db = server.create_database();
    let url = server.url(&db);
    // One data directory for both (a PostgreSQL store allows it): the holder of the
    // `export` lease writes the patient files there.
    let (_dir, a) = crate::common::start(&["--store", &url]);
    let b = Receiver::start(&a.data_dir, &["--store", &url]);
    let (a_address, b_address) = (a.mllp, b.mllp);
    let b_data = b.data_dir.clone();
    // Two senders on each receiver.
    let targets: Vec<_> = [a_address, a_address, b_address, b_address]
        .into_iter()
        .map(|address| Arc::new(Mutex::new(address)))
        .collect();
    let load = Load::start("TWO", &targets);
    wait_until("200 messages acknowledged", || load.n_accepted() >= 200);

    // At the same time: PostgreSQL restarted at once, and receiver B killed.
    let restart_called = Instant::now();
    let restart = {
        let server = &server;
        std::thread::scope(|scope| {
            let restart = scope.spawn(move || {
                server.restart();
                Instant::now()
            });
            b.kill();
            restart.join().expect("restart")
        })
    };
    let b = start_receiver(&b_data, &b_address.to_string(), &url);
    let b_back = Instant::now();
    wait_until("every sender acknowledged AA after both", || {
        let answers = load.answers();
        (0..targets.len()).all(|s| {
            answers
                .iter()
                .any(|x| x.sender == s && x.accepted() && x.sent >= b_back)
        })
    });
    let n_before = load.n_accepted();
    wait_until("200 more acknowledged", || {
        load.n_accepted() >= n_before + 200
    });
    let (answers, broken) = load.finish();

    let longest = check_answers(&answers);
    assert!(
        longest < ACK_TIMEOUT,
        "an ACK took {longest:?}, longer than the ACK timeout {ACK_TIMEOUT:?}"
    );
    let acked = assert_stored_once(&server, &db, &answers);
    let n_rejects = answers.iter().filter(|x| !x.accepted()).count();
    // The patient files are complete: each acknowledged message's heart rate (its `n`) in
    // its patient's file (`OUT-<sender>-<n % 7>`) once, whichever receiver took it and
    // whichever held the `export` lease when.
    let files_done = Instant::now();
    let mut missing = Vec::new();
    wait_until(
        "every acknowledged message in the patient files, once",
        || {
            missing = files_missing(&a.data_dir, &acked);
            missing.is_empty()
        },
    );
    let files_done = files_done.elapsed();
    drop((a, b));
    println!(
        "restart with two receivers: pg_ctl restart -m immediate took {}; receiver B back {} \
         after the kill; {} AA, {} AR/207, {} exchanges cut by the kill or the restart; \
         longest ACK wait {}; {} messages stored once and in the patient files ({} after \
         the load stopped)",
        ms(restart - restart_called),
        ms(b_back - restart_called),
        answers.len() - n_rejects,
        n_rejects,
        broken.len(),
        ms(longest),
        acked.len(),
        ms(files_done),
    );
}

/// The acknowledged control ids (`TWO<sender>-<n>`) whose heart rate `n` is not in their
/// patient's file exactly once, and any heart rate a file holds twice.
fn files_missing(data_dir: &std::path::Path, acked: &BTreeSet<String>) -> Vec<String> {
    let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut wrong = Vec::new();
    for id in acked {
        let Some((sender, n)) = id.strip_prefix("TWO").and_then(|rest| rest.split_once('-')) else {
            wrong.push(format!("{id}: not a control id of this test"));
            continue;
        };
        let Ok(n) = n.parse::<u32>() else {
            wrong.push(format!("{id}: not a control id of this test"));
            continue;
        };
        let patient = format!("OUT-{sender}-{}", n % 7);
        let heart_rates = values.entry(patient.clone()).or_insert_with(|| {
            let path = data_dir
                .join("patients")
                .join(format!("patient_{patient}.json"));
            let records = std::fs::read_to_string(path)
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .and_then(|file| file["Records"].as_array().cloned())
                .unwrap_or_default();
            records
                .iter()
                .filter(|r| {
                    r["ObservationID"]
                        .as_str()
                        .is_some_and(|o| o.contains("8867-4"))
                })
                .filter_map(|r| r["ObservationValue"].as_str().map(str::to_owned))
                .collect()
        });
        let found = heart_rates.iter().filter(|v| **v == n.to_string()).count();
        if found != 1 {
            wrong.push(format!("{id}: {found} times in {patient}'s file"));
        }
    }
    wrong
}

#[test]
fn a_frozen_postgres_gets_rejects_within_the_ack_timeout_not_silence() {
    // Bound in this order, dropped in the reverse: the senders first, the server last.
    let Some(UnderLoad {
        server,
        db,
        _dir,
        receiver: _receiver,
        health,
        load,
    }) = UnderLoad::start("FRZ")
    else {
        return;
    };
    let n_senders = UnderLoad::SENDERS;
    wait_until("50 messages acknowledged", || load.n_accepted() >= 50);

    let frozen = Instant::now();
    server.freeze();
    wait_until(
        "every sender rejected twice while PostgreSQL is frozen",
        || {
            let answers = load.answers();
            (0..n_senders).all(|s| {
                answers
                    .iter()
                    .filter(|a| a.sender == s && !a.accepted() && a.sent >= frozen)
                    .count()
                    >= 2
            })
        },
    );
    wait_until("/healthz failing", || health.first(503, frozen).is_some());
    let thawed = Instant::now();
    server.thaw();
    wait_until("every sender acknowledged AA again", || {
        let answers = load.answers();
        (0..n_senders).all(|s| {
            answers
                .iter()
                .any(|a| a.sender == s && a.accepted() && a.sent >= thawed)
        })
    });
    wait_until("/healthz ok again", || health.first(200, thawed).is_some());
    let (answers, broken) = load.finish();

    assert!(broken.is_empty(), "connections broke: {broken:?}");
    let longest = check_answers(&answers);
    assert!(
        longest < ACK_TIMEOUT,
        "an ACK took {longest:?}, longer than the ACK timeout {ACK_TIMEOUT:?}"
    );
    let acked = assert_stored_once(&server, &db, &answers);
    let first_reject = answers
        .iter()
        .filter(|a| !a.accepted() && a.answered >= frozen)
        .map(|a| a.answered)
        .min()
        .expect("a reject");
    let first_accept_again = answers
        .iter()
        .filter(|a| a.accepted() && a.sent >= thawed)
        .map(|a| a.answered)
        .min()
        .expect("an AA");
    println!(
        "frozen PostgreSQL: freeze → first AR {}; freeze → /healthz 503 {}; thaw → first AA \
         {}; longest ACK wait {}; {} AR/207, {} messages stored once",
        ms(first_reject - frozen),
        ms(health.first(503, frozen).expect("failing") - frozen),
        ms(first_accept_again.saturating_duration_since(thawed)),
        ms(longest),
        answers.iter().filter(|a| !a.accepted()).count(),
        acked.len(),
    );
}
