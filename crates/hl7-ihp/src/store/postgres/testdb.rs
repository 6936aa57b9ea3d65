//! A real PostgreSQL for the tests: one server per test binary, started from the machine's
//! binaries in a temporary directory on a free port of 127.0.0.1, one fresh database per test.
//!
//! Used by the unit tests (`store/postgres/tests.rs`) and, through `#[path]`, by the
//! integration tests (`tests/it/postgres.rs`), so it needs only `std` and `tempfile`.
//! Durable as in production: `fsync` and `synchronous_commit` stay on. `initdb` refuses to
//! run as root, so as root the server runs as the `postgres` user (the data directory is
//! handed to it, mode 0700). A watchdog shell stops the server and removes its directory
//! when the test binary exits (its standard input, a pipe from the binary, then closes);
//! directories left by a run that could not clean up are removed at the next start.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The prefix of the servers' temporary directories (also how stale ones are found).
const DIR_PREFIX: &str = "hl7-ihp-pg-";

/// How long a server may take to start on a busy machine.
const START_DEADLINE: Duration = Duration::from_secs(120);

/// A running test server.
#[derive(Debug)]
pub struct TestServer {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    /// The binaries' folder.
    bin: PathBuf,
    /// The temporary directory (data, socket, log); removed by the next run if not now.
    dir: PathBuf,
}

impl TestServer {
    /// A `postgres://` URL of database `db` as the superuser, without a password (trust).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Makes a new, empty database and returns its name.
    pub fn create_database(&self) -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "t_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        name
    }

    /// Runs one SQL command with `psql` and returns what it printed (unaligned, no header).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let output = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", db])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg(sql)
            .output()
            .expect("run psql");
        assert!(
            output.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// The server's log so far, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

/// The shared server, started on first use; `None` (after printing one line) when the
/// PostgreSQL binaries are missing. Under `CI=true` their absence fails the test instead.
pub fn server() -> Option<&'static TestServer> {
    static SERVER: OnceLock<Option<TestServer>> = OnceLock::new();
    let server = SERVER.get_or_init(|| {
        let bin = find_binaries()?;
        Some(start(bin))
    });
    if server.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "PostgreSQL binaries not found (initdb, pg_ctl, postgres) and CI=true"
        );
        println!("skipped: PostgreSQL binaries not found");
    }
    server.as_ref()
}

/// `pg_config --bindir`, else a Debian folder `/usr/lib/postgresql/<version>/bin`, if it
/// holds the binaries.
fn find_binaries() -> Option<PathBuf> {
    let from_config = Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    // Debian's folders, newest version first (15 is what CI installs).
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dir| dir.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    debian.sort();
    debian.reverse();
    std::iter::once(from_config)
        .flatten()
        .chain(debian)
        .find(|bin| {
            ["initdb", "postgres", "psql", "pg_isready"]
                .iter()
                .all(|b| bin.join(b).is_file())
        })
}

/// The `postgres` user's uid and gid when this process runs as root.
fn run_as() -> Option<(u32, u32)> {
    if rustix::process::geteuid().as_raw() != 0 {
        return None;
    }
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("run id");
        assert!(
            out.status.success(),
            "running as root needs a `postgres` user"
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a numeric id")
    };
    Some((id("-u"), id("-g")))
}

/// Removes the directories of earlier runs whose test binary is gone.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn command(bin: &Path, name: &str, user: Option<(u32, u32)>) -> Command {
    let mut command = Command::new(bin.join(name));
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
    command
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A new cluster in a temporary directory of its own (mode 0700, owned by the user the
/// server runs as): the directory, its data folder and that user.
fn init(bin: &Path) -> (PathBuf, PathBuf, Option<(u32, u32)>) {
    remove_stale_dirs();
    let user = run_as();
    let dir = tempfile::Builder::new()
        .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
        .tempdir()
        .expect("a temporary directory")
        .keep();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown to postgres");
    }
    let data = dir.join("data");
    let init = command(bin, "initdb", user)
        .current_dir(&dir)
        .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"])
        .arg("-D")
        .arg(&data)
        .output()
        .expect("run initdb");
    assert!(
        init.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    (dir, data, user)
}

fn start(bin: PathBuf) -> TestServer {
    let (dir, data, user) = init(&bin);
    // A port found free may be taken before the server binds it: try a few.
    for _ in 0..5 {
        let port = free_port();
        if let Some(server) = run(&bin, &dir, &data, port, user) {
            return server;
        }
    }
    panic!(
        "the test PostgreSQL did not start; see {}/log",
        dir.display()
    );
}

/// Starts the server on `port`, with a watchdog that stops it and removes `dir` once this
/// process is gone; `None` when it exits before it is ready (its port was taken).
fn run(
    bin: &Path,
    dir: &Path,
    data: &Path,
    port: u16,
    user: Option<(u32, u32)>,
) -> Option<TestServer> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("log"))
        .expect("the server's log");
    let mut child = command(bin, "postgres", user)
        .current_dir(dir)
        .arg("-D")
        .arg(data)
        .arg("-p")
        .arg(port.to_string())
        .arg("-k")
        .arg(dir)
        .args(["-c", "listen_addresses=127.0.0.1"])
        .args(["-c", "fsync=on", "-c", "synchronous_commit=on"])
        .args(["-c", "max_connections=300", "-c", "shared_buffers=32MB"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start postgres");
    let deadline = Instant::now() + START_DEADLINE;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        let ready = Command::new(bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-U", "postgres"])
            .arg("-p")
            .arg(port.to_string())
            .status()
            .is_ok_and(|s| s.success());
        if ready {
            watch(child.id(), dir);
            // Not waited for: it runs until the watchdog stops it, after this process.
            RUNNING.lock().map(|mut r| r.push(child)).ok();
            return Some(TestServer {
                port,
                bin: bin.to_path_buf(),
                dir: dir.to_path_buf(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the test PostgreSQL was not ready within {START_DEADLINE:?}");
}

/// A shell that waits for the end of its standard input, which is this process's end
/// (however it ends: the pipe's other side is only here), then stops the server at once
/// (SIGQUIT) and removes its directory.
fn watch(pid: u32, dir: &Path) {
    let watchdog = Command::new("sh")
        .arg("-c")
        .arg(
            "cat >/dev/null; kill -QUIT \"$1\" 2>/dev/null; \
             while kill -0 \"$1\" 2>/dev/null; do sleep 0.1; done; rm -rf \"$2\"",
        )
        .arg("watchdog")
        .arg(pid.to_string())
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the test server's watchdog");
    // Kept with its standard input open until this process ends.
    RUNNING.lock().map(|mut r| r.push(watchdog)).ok();
}

/// The server and its watchdog: owned here, never waited for.
static RUNNING: std::sync::Mutex<Vec<std::process::Child>> = std::sync::Mutex::new(Vec::new());

/// A server of a test's own, which the test may stop, start and restart (same port, same
/// data) without disturbing the shared one: for outage tests. Started with `pg_ctl`, its
/// settings in its `postgresql.conf`; stopped at once and removed when dropped, and by a
/// watchdog when the test binary ends first.
#[derive(Debug)]
pub struct PrivateServer {
    server: TestServer,
    data: PathBuf,
    user: Option<(u32, u32)>,
}

impl std::ops::Deref for PrivateServer {
    type Target = TestServer;
    fn deref(&self) -> &TestServer {
        &self.server
    }
}

/// A new private server, running; `None` (after one line) without PostgreSQL binaries, and
/// a failure under `CI=true`, as [`server`].
pub fn private_server() -> Option<PrivateServer> {
    let Some(bin) = find_binaries() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "PostgreSQL binaries not found (initdb, pg_ctl, postgres) and CI=true"
        );
        println!("skipped: PostgreSQL binaries not found");
        return None;
    };
    let (dir, data, user) = init(&bin);
    private_watch(&data, &dir);
    let mut private = PrivateServer {
        server: TestServer { port: 0, bin, dir },
        data,
        user,
    };
    // A port found free may be taken before the server binds it: try a few.
    for _ in 0..5 {
        private.server.port = free_port();
        // The last setting in the file wins: a retry appends a new port.
        let settings = format!(
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = on\nsynchronous_commit = on\nmax_connections = 300\nshared_buffers = 32MB\n",
            private.server.port,
            private.server.dir.display()
        );
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(private.data.join("postgresql.conf"))
            .and_then(|mut f| f.write_all(settings.as_bytes()))
            .expect("write postgresql.conf");
        if private.pg_ctl(&["start"]) {
            return Some(private);
        }
    }
    panic!(
        "the private test PostgreSQL did not start; see {}/log",
        private.server.dir.display()
    );
}

impl PrivateServer {
    /// Runs `pg_ctl ARGS` (waiting, with the start deadline) on this server's data; whether
    /// it succeeded.
    fn pg_ctl(&self, args: &[&str]) -> bool {
        let deadline = START_DEADLINE.as_secs().to_string();
        command(&self.server.bin, "pg_ctl", self.user)
            .current_dir(&self.server.dir)
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.server.dir.join("log"))
            .args(["-w", "-t", &deadline])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`: no checkpoint, the clients'
    /// connections cut), as a crash would.
    pub fn stop(&self) {
        assert!(
            self.pg_ctl(&["stop", "-m", "immediate"]),
            "pg_ctl stop failed: {}",
            self.log()
        );
    }

    /// Starts it again on the same port with the same data (crash recovery first), and
    /// returns once it takes connections.
    pub fn start(&self) {
        assert!(
            self.pg_ctl(&["start"]),
            "pg_ctl start failed: {}",
            self.log()
        );
    }

    /// `pg_ctl restart -m immediate`: stopped at once and started again, one command.
    pub fn restart(&self) {
        assert!(
            self.pg_ctl(&["restart", "-m", "immediate"]),
            "pg_ctl restart failed: {}",
            self.log()
        );
    }
}

impl PrivateServer {
    /// The postmaster and its children (backends, background processes), by pid.
    fn processes(&self) -> Vec<String> {
        let Some(postmaster) = std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next().map(str::to_owned))
        else {
            return Vec::new();
        };
        let mut pids = vec![postmaster.clone()];
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // `pid (comm) state ppid …`: the name may hold spaces, so after the last ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1));
            if ppid == Some(postmaster.as_str()) {
                pids.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        pids
    }

    fn signal(&self, signal: &str) {
        let pids = self.processes();
        assert!(!pids.is_empty(), "the server is not running");
        let status = Command::new("kill")
            .arg(signal)
            .args(&pids)
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Freezes the server (SIGSTOP to all its processes): connections stay open and nothing
    /// answers, as with a hung host or a network that drops packets without a reset.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        // A frozen server would not stop.
        let _ = Command::new("kill")
            .arg("-CONT")
            .args(self.processes())
            .status();
        let _ = self.pg_ctl(&["stop", "-m", "immediate"]);
        let _ = std::fs::remove_dir_all(&self.server.dir);
    }
}

/// A watchdog for a private server, whose process changes with each start: at this
/// process's end it stops whichever postmaster `postmaster.pid` names, then removes `dir`.
fn private_watch(data: &Path, dir: &Path) {
    let watchdog = Command::new("sh")
        .arg("-c")
        .arg(
            "cat >/dev/null; pid=$(head -n 1 \"$1/postmaster.pid\" 2>/dev/null); \
             if [ -n \"$pid\" ]; then kill -QUIT \"$pid\" 2>/dev/null; n=0; \
             while kill -0 \"$pid\" 2>/dev/null && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done; fi; \
             rm -rf \"$2\"",
        )
        .arg("watchdog")
        .arg(data)
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the private server's watchdog");
    RUNNING.lock().map(|mut r| r.push(watchdog)).ok();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_takes_databases() {
        let Some(server) = server() else { return };
        let db = server.create_database();
        assert_eq!(server.psql(&db, "SHOW fsync"), "on", "{}", server.log());
        assert_eq!(server.psql(&db, "SHOW synchronous_commit"), "on");
        assert_eq!(server.psql(&db, "SELECT 1 + 1"), "2");
        let other = server.create_database();
        assert_ne!(db, other);
    }

    #[test]
    fn a_private_server_stops_and_starts_on_its_port_with_its_data() {
        let Some(server) = private_server() else {
            return;
        };
        let db = server.create_database();
        server.psql(&db, "CREATE TABLE t (n int); INSERT INTO t VALUES (7)");
        let port = server.port;
        server.stop();
        assert!(
            !Command::new(server.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1"])
                .arg("-p")
                .arg(port.to_string())
                .status()
                .is_ok_and(|s| s.success()),
            "stopped"
        );
        server.start();
        assert_eq!(server.psql(&db, "SELECT n FROM t"), "7");
        server.restart();
        assert_eq!(server.port, port);
        assert_eq!(server.psql(&db, "SELECT n FROM t"), "7", "{}", server.log());
    }
}
