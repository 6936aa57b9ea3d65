//! The deployment example `deploy/postgres/run.sh` run as a user would: a PostgreSQL, two
//! receivers on it behind HAProxy with PROXY protocol, the prototype's messages through
//! HAProxy twice and stored once; with `--wait` it keeps running until interrupted, and
//! then stops everything and removes its folder.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use crate::common::{DEADLINE, binary, peer_present, runs};

/// Whether the machine has PostgreSQL's server binaries where the example looks.
fn postgres_present() -> bool {
    let from_config = Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let debian = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.flatten()
                .map(|e| e.path().join("bin"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    from_config
        .into_iter()
        .chain(debian)
        .any(|bin| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
}

#[test]
fn the_postgres_example_stores_each_message_once_behind_haproxy_and_stops_on_interrupt() {
    let haproxy = runs("haproxy", &["-v"]) || runs("/usr/sbin/haproxy", &["-v"]);
    if !peer_present(
        "deploy_postgres",
        haproxy,
        "haproxy",
        "apt-get install haproxy",
    ) || !peer_present(
        "deploy_postgres",
        postgres_present(),
        "PostgreSQL",
        "apt-get install postgresql",
    ) {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/postgres/run.sh");
    let mut child = Command::new("bash")
        .arg(&script)
        .arg("--wait")
        .env("HL7IHP", binary())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run deploy/postgres/run.sh");
    let (lines, stdout) = (mpsc::channel(), child.stdout.take().unwrap());
    let tx = lines.0;
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let stderr = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let mut output = String::new();
    let start = Instant::now();
    while !output.contains("Ctrl-C stops everything") {
        let left = DEADLINE.saturating_sub(start.elapsed()) * 2;
        match lines.1.recv_timeout(left) {
            Ok(line) => {
                output.push_str(&line);
                output.push('\n');
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the example did not get to running:\n{output}\n{}",
                    errors.join().unwrap_or_default()
                );
            }
        }
    }
    assert!(
        output.contains("both receivers UP"),
        "HAProxy saw both receivers: {output}"
    );
    assert!(
        output.contains("stored once: 3 messages"),
        "six sent, three stored: {output}"
    );
    assert!(
        output.contains("CNTRL-3456"),
        "`messages` lists them: {output}"
    );
    let folder = output
        .lines()
        .find_map(|l| l.split("(data in ").nth(1))
        .and_then(|rest| rest.strip_suffix(')'))
        .and_then(|pg| Path::new(pg).parent().map(Path::to_path_buf))
        .expect("the example names its folder");
    assert!(folder.is_dir());

    // Ctrl-C (SIGINT to the script): everything stops, the folder goes.
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the example did not stop on SIGINT"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let errors = errors.join().unwrap_or_default();
    assert_eq!(status.code(), Some(130), "{output}\n{errors}");
    assert!(
        !folder.exists(),
        "its folder is removed: {}",
        folder.display()
    );
}
