//! The data directory, end to end: one receiver at a time, the checks made before any port
//! is bound, a database file that stands alone after a clean stop, and the file system's
//! edge cases (a symlinked `patients/`, loose permissions).

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::common::{self, Client, Receiver, ack_field, oru, start, wait_until};

/// Runs `hl7-ihp` with `args` until it exits, or until it shows that it started serving
/// (the receiver's "listening" log line, the demo's banner), when it is killed: its exit
/// status (`None` when it started) and everything it wrote.
fn run_until_exit_or_start(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(common::binary())
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hl7-ihp");
    let output = Arc::new(Mutex::new(String::new()));
    let copy = |stream: Box<dyn Read + Send>| {
        let output = Arc::clone(&output);
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let mut output = output.lock().unwrap();
                output.push_str(&line);
                output.push('\n');
            }
        })
    };
    let readers = [
        copy(Box::new(child.stdout.take().unwrap())),
        copy(Box::new(child.stderr.take().unwrap())),
    ];
    let started = || {
        let output = output.lock().unwrap();
        output.contains("\"listening\"") || output.contains("bedside monitors")
    };
    let mut status = None;
    wait_until("hl7-ihp to exit or start", || {
        status = child.try_wait().unwrap();
        status.is_some() || started()
    });
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    for reader in readers {
        reader.join().unwrap();
    }
    let output = output.lock().unwrap().clone();
    (status.and_then(|s| s.code()), output)
}

/// `hl7-ihp receive` over `data_dir` on `listen`, until it exits or starts.
fn receive_until_exit(data_dir: &Path, listen: &str) -> (Option<i32>, String) {
    let data_dir = data_dir.to_str().unwrap();
    run_until_exit_or_start(&[
        "receive",
        "--listen",
        listen,
        "--http",
        "off",
        "--log-format",
        "json",
        "--data-dir",
        data_dir,
    ])
}

/// Control ids stored in the database file `path`, read with SQLite directly.
fn control_ids_in(path: &Path) -> Vec<String> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut select = conn
        .prepare("SELECT control_id FROM messages ORDER BY id")
        .unwrap();
    select
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn after_sigterm_the_database_file_alone_holds_every_message() {
    let (dir, receiver) = start(&[]);
    let mut client = Client::connect(receiver.mllp);
    let ids: Vec<String> = (0..50).map(|n| format!("BACKUP-{n:03}")).collect();
    for (n, id) in ids.iter().enumerate() {
        let ack = client.exchange(&oru(id, &format!("BK{}", n % 5), 60));
        assert_eq!(ack_field(&ack, "MSA-1"), "AA");
    }
    drop(client);
    let data = receiver.data_dir.clone();
    let (status, logs) = receiver.terminate();
    assert!(status.success(), "{status:?} {logs}");

    // Only the database file, copied elsewhere, as a backup would.
    let copy = dir.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    std::fs::copy(data.join("hl7-ihp.sqlite3"), copy.join("hl7-ihp.sqlite3")).unwrap();
    assert_eq!(control_ids_in(&copy.join("hl7-ihp.sqlite3")), ids);
    let copy_arg = copy.to_str().unwrap();
    let (status, stdout, stderr) =
        common::run(&["messages", "--limit", "1000", "--data-dir", copy_arg]);
    assert_eq!(status, 0, "{stderr}");
    for id in &ids {
        assert!(stdout.contains(id.as_str()), "{id} missing: {stdout}");
    }
    let (status, stdout, stderr) = common::run(&["patients", "--data-dir", copy_arg]);
    assert_eq!(status, 0, "{stderr}");
    assert!(stdout.contains("BK4"), "{stdout}");

    // And nothing is left in the WAL beside the original either.
    let wal = data.join("hl7-ihp.sqlite3-wal");
    let wal_bytes = std::fs::metadata(&wal).map_or(0, |m| m.len());
    assert_eq!(wal_bytes, 0, "the WAL still holds frames");
}

#[test]
fn a_second_receiver_on_the_same_directory_exits_2_naming_the_first() {
    let (_dir, receiver) = start(&[]);
    let mut client = Client::connect(receiver.mllp);
    assert_eq!(
        ack_field(&client.exchange(&oru("ONE-1", "ONE", 1)), "MSA-1"),
        "AA"
    );

    let (status, output) = receive_until_exit(&receiver.data_dir, "127.0.0.1:0");
    assert_eq!(status, Some(2), "{output}");
    let expected = format!(
        "another receiver (pid {}) holds the data directory",
        receiver.pid()
    );
    assert!(output.contains(&expected), "{output}");

    // The demo runs a receiver too.
    let data_dir = receiver.data_dir.to_str().unwrap().to_owned();
    let (status, output) = run_until_exit_or_start(&[
        "demo",
        "--listen",
        "127.0.0.1:0",
        "--http",
        "off",
        "--data-dir",
        &data_dir,
    ]);
    assert_eq!(status, Some(2), "{output}");
    assert!(output.contains(&expected), "{output}");

    // The inspection commands take no lock: they read beside the receiver.
    for command in ["patients", "messages"] {
        let (status, stdout, stderr) = common::run(&[command, "--data-dir", &data_dir]);
        assert_eq!(status, 0, "{command}: {stderr}");
        assert!(stdout.contains("ONE"), "{command}: {stdout}");
    }
    let (status, _, stderr) = common::run(&["show", "ONE", "--data-dir", &data_dir]);
    assert_eq!(status, 0, "{stderr}");

    // The first receiver was not disturbed, and its lock goes with it.
    assert_eq!(
        ack_field(&client.exchange(&oru("ONE-2", "ONE", 2)), "MSA-1"),
        "AA"
    );
    drop(client);
    let data = receiver.data_dir.clone();
    let (status, logs) = receiver.terminate();
    assert!(status.success(), "{logs}");
    let again = Receiver::start(&data, &[]);
    let mut client = Client::connect(again.mllp);
    assert_eq!(
        ack_field(&client.exchange(&oru("ONE-3", "ONE", 3)), "MSA-1"),
        "AA"
    );
}

#[test]
fn a_killed_receivers_lock_does_not_outlive_it() {
    let (_dir, receiver) = start(&[]);
    let data = receiver.data_dir.clone();
    receiver.kill();
    let again = Receiver::start(&data, &[]);
    let mut client = Client::connect(again.mllp);
    assert_eq!(
        ack_field(&client.exchange(&oru("K-1", "K", 1)), "MSA-1"),
        "AA"
    );
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A read-only tmpfs (needs root; `None` otherwise), unmounted on drop.
struct ReadOnlyMount(std::path::PathBuf);

impl ReadOnlyMount {
    fn at(path: &Path) -> Option<ReadOnlyMount> {
        std::fs::create_dir_all(path).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
            .arg(path)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then(|| ReadOnlyMount(path.to_path_buf()))
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn an_unusable_data_directory_exits_2_before_any_port_is_bound() {
    let dir = tempfile::tempdir().unwrap();
    // The test holds the port: a receiver that bound it before checking its directory would
    // fail with "cannot listen" and status 1 instead.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = held.local_addr().unwrap().to_string();
    let check = |data_dir: &Path, expected: &str| {
        let (status, output) = receive_until_exit(data_dir, &listen);
        assert_eq!(status, Some(2), "{output}");
        assert!(output.contains(expected), "{expected:?} not in {output}");
        assert!(!output.contains("listening"), "{output}");
    };

    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    check(&file, "is not a directory");
    check(&file.join("data"), "cannot use the data directory");

    let read_only = dir.path().join("read-only");
    match ReadOnlyMount::at(&read_only) {
        Some(_mount) => check(&read_only, "cannot write in the data directory"),
        // Without root, the permission bits stop writes; as root they do not.
        None if !rustix::process::getuid().is_root() => {
            set_mode(&read_only, 0o500);
            check(&read_only, "cannot write in the data directory");
        }
        None => eprintln!("skipped the read-only part: cannot mount a tmpfs"),
    }
}

#[test]
fn a_symlinked_patients_folder_is_refused_and_its_target_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    set_mode(&elsewhere, 0o755);
    // Looks like an unfinished patient file, which the exporter would remove in its folder.
    std::fs::write(elsewhere.join(".tmp-1-0"), b"not the receiver's").unwrap();
    std::os::unix::fs::symlink(&elsewhere, data.join("patients")).unwrap();

    let (status, output) = receive_until_exit(&data, "127.0.0.1:0");
    assert_eq!(status, Some(2), "{output}");
    assert!(output.contains("is a symbolic link"), "{output}");
    assert_eq!(mode(&elsewhere), 0o755);
    assert!(elsewhere.join(".tmp-1-0").exists());
    assert!(!data.join("hl7-ihp.sqlite3").exists(), "nothing stored");

    // A file where the folder belongs is refused too.
    std::fs::remove_file(data.join("patients")).unwrap();
    std::fs::write(data.join("patients"), b"").unwrap();
    let (status, output) = receive_until_exit(&data, "127.0.0.1:0");
    assert_eq!(status, Some(2), "{output}");
    assert!(output.contains("is not a folder"), "{output}");
}

#[test]
fn a_data_directory_open_to_others_is_made_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("patients")).unwrap();
    set_mode(&data, 0o755);
    set_mode(&data.join("patients"), 0o777);
    let receiver = Receiver::start(&data, &[]);
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("patients")), 0o700);
    let logs = receiver.logs();
    assert!(
        logs.contains("\"WARN\"") && logs.contains("owner-only") && logs.contains("\"755\""),
        "{logs}"
    );
}
