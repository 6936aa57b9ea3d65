//! Test harness: the real `hl7-ihp` binary on 127.0.0.1:0 with a temporary data directory,
//! and a blocking MLLP client. Waits are on conditions with generous deadlines, never on
//! fixed sleeps.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A receiver with `extra` flags over a fresh temporary data directory (`<tmp>/data`); the
/// directory lives as long as the returned guard.
pub fn start(extra: &[&str]) -> (tempfile::TempDir, Receiver) {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(&dir.path().join("data"), extra);
    (dir, receiver)
}

/// Generous: CI machines are busy.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_hl7-ihp")
}

pub fn samples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../samples")
}

pub fn sample(name: &str) -> Vec<u8> {
    std::fs::read(samples().join(name)).expect("sample message")
}

/// Polls `condition` every few milliseconds until it holds or the deadline passes.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    let mut pause = Duration::from_millis(2);
    while !condition() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// A running receiver.
pub struct Receiver {
    child: Child,
    /// The plain MLLP address (`0.0.0.0:0` with `--listen off`).
    pub mllp: SocketAddr,
    /// The MLLP-over-TLS address, with `--listen-tls`.
    pub mllp_tls: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub data_dir: PathBuf,
    logs: Arc<Mutex<String>>,
}

impl Receiver {
    /// Starts `hl7-ihp receive` on loopback port 0 over `data_dir`.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Receiver {
        Receiver::start_on(data_dir, "127.0.0.1:0", extra)
    }

    /// Starts `hl7-ihp receive` on a given MLLP address (to restart on the same port).
    pub fn start_on(data_dir: &Path, listen: &str, extra: &[&str]) -> Receiver {
        Receiver::spawn(Command::new(binary()), data_dir, listen, extra)
    }

    /// Starts `hl7-ihp receive` with `--listen` as given (`off` too), HTTP on loopback.
    pub fn start_listening(data_dir: &Path, listen: &str, extra: &[&str]) -> Receiver {
        Receiver::spawn(Command::new(binary()), data_dir, listen, extra)
    }

    /// Starts `hl7-ihp receive` with HTTP on `http` and extra environment variables.
    pub fn start_with_http(
        data_dir: &Path,
        http: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Receiver {
        let mut command = Command::new(binary());
        command.envs(env.iter().copied());
        Receiver::spawn_with(command, data_dir, "127.0.0.1:0", http, extra)
    }

    /// Starts the receiver with its open-file limit (soft and hard) set to `n`, through the
    /// shell's `ulimit`, so that accepting can run out of descriptors.
    pub fn start_with_file_limit(data_dir: &Path, n: u32, extra: &[&str]) -> Receiver {
        let mut command = Command::new("sh");
        command.args([
            "-c",
            &format!("ulimit -n {n} && exec \"$0\" \"$@\""),
            binary(),
        ]);
        Receiver::spawn(command, data_dir, "127.0.0.1:0", extra)
    }

    fn spawn(command: Command, data_dir: &Path, listen: &str, extra: &[&str]) -> Receiver {
        Receiver::spawn_with(command, data_dir, listen, "127.0.0.1:0", extra)
    }

    fn spawn_with(
        mut command: Command,
        data_dir: &Path,
        listen: &str,
        http: &str,
        extra: &[&str],
    ) -> Receiver {
        let mut child = command
            .args([
                "receive",
                "--listen",
                listen,
                "--http",
                http,
                "--log-format",
                "json",
                "--data-dir",
            ])
            .arg(data_dir)
            .args(extra)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hl7-ihp receive");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let logs = Arc::clone(&logs);
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(sender) = &tx
                        && line.contains("\"listening\"")
                    {
                        let _ = sender.send(line.clone());
                        tx = None;
                    }
                    let mut logs = logs.lock().unwrap();
                    logs.push_str(&line);
                    logs.push('\n');
                }
            });
        }
        let line = match rx.recv_timeout(DEADLINE) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("receiver did not start: {}", logs.lock().unwrap());
            }
        };
        let event: serde_json::Value = serde_json::from_str(&line).expect("json log line");
        let mllp = event["mllp"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let mllp_tls = event["mllp_tls"].as_str().and_then(|a| a.parse().ok());
        let http = event["http"].as_str().and_then(|a| a.parse().ok());
        Receiver {
            child,
            mllp,
            mllp_tls,
            http,
            data_dir: data_dir.to_path_buf(),
            logs,
        }
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(mut self) -> (ExitStatus, String) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.wait();
        (status, self.logs())
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn wait(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if start.elapsed() > DEADLINE {
                let _ = self.child.kill();
                panic!("receiver did not exit: {}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// An HTTP GET on the receiver's HTTP address: status and body.
    pub fn http_get(&self, path: &str) -> (u16, String) {
        let address = self.http.expect("http enabled");
        let mut stream = TcpStream::connect(address).expect("connect http");
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read http");
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `hl7-ihp` with arguments to completion: status, stdout, stderr.
pub fn run(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(binary())
        .args(args)
        .output()
        .expect("run hl7-ihp");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// An HTTP response as read off the socket.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// The status line and the headers as sent.
    pub head: String,
    /// Header names in lower case, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Sends one HTTP/1.1 request (`Connection: close`) with `headers` and reads the whole
/// response; chunked bodies are decoded. An unspecified address (`0.0.0.0`) is reached on
/// loopback.
pub fn http_request(
    address: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    let mut head =
        format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    http_exchange(address, head.as_bytes())
}

/// Writes raw request bytes and reads the response until the server closes.
pub fn http_exchange(address: SocketAddr, request: &[u8]) -> HttpResponse {
    let mut address = address;
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let mut stream = TcpStream::connect(address).expect("connect http");
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(request).unwrap();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).expect("read http");
    parse_http_response(&bytes)
}

fn parse_http_response(bytes: &[u8]) -> HttpResponse {
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {}", String::from_utf8_lossy(bytes)));
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = bytes[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        let mut decoded = Vec::new();
        let mut rest = &body[..];
        while let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
            let size_text = String::from_utf8_lossy(&rest[..end]);
            let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
                .expect("chunk size");
            if size == 0 {
                break;
            }
            let start = end + 2;
            decoded.extend_from_slice(&rest[start..start + size]);
            rest = &rest[start + size + 2..];
        }
        body = decoded;
    }
    HttpResponse {
        status,
        head,
        headers,
        body,
    }
}

/// What a [`Client`] speaks over: plain TCP or TLS.
pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// A blocking MLLP client, over TCP or TLS.
pub struct Client {
    stream: Box<dyn Stream>,
    buffer: Vec<u8>,
}

impl Client {
    pub fn connect(address: SocketAddr) -> Client {
        Client::try_connect(address).expect("connect mllp")
    }

    /// `None` when the server is not there (for tests that kill it).
    pub fn try_connect(address: SocketAddr) -> Option<Client> {
        let stream = TcpStream::connect(address).ok()?;
        stream.set_read_timeout(Some(DEADLINE)).ok()?;
        stream.set_nodelay(true).ok()?;
        Some(Client::over(stream))
    }

    /// A client over an established stream (a TLS one, or TCP after a PROXY header).
    pub fn over(stream: impl Stream + 'static) -> Client {
        Client {
            stream: Box::new(stream),
            buffer: Vec::new(),
        }
    }

    /// A TLS client whose handshake has completed (from its side: with TLS 1.3, the
    /// server checks a client certificate after that, and refuses by closing).
    pub fn connect_tls(
        address: SocketAddr,
        config: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<Client> {
        let mut tcp = TcpStream::connect(address)?;
        tcp.set_read_timeout(Some(DEADLINE))?;
        tcp.set_nodelay(true)?;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
        while tls.is_handshaking() {
            tls.complete_io(&mut tcp)?;
        }
        Ok(Client::over(rustls::StreamOwned::new(tls, tcp)))
    }

    /// Like `send`, reporting a broken connection instead of panicking.
    pub fn try_send(&mut self, message: &[u8]) -> bool {
        self.stream.write_all(&frame(message)).is_ok()
    }

    pub fn write_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    pub fn send(&mut self, message: &[u8]) {
        self.write_raw(&frame(message));
    }

    /// Reads one ACK frame's payload; `None` when the connection closed.
    pub fn read_ack(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(start) = self.buffer.iter().position(|&b| b == 0x0B)
                && let Some(end) = self.buffer[start..]
                    .windows(2)
                    .position(|w| w == [0x1C, 0x0D])
            {
                let payload = self.buffer[start + 1..start + end].to_vec();
                self.buffer.drain(..start + end + 2);
                return Some(payload);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Sends and waits for the ACK.
    pub fn exchange(&mut self, message: &[u8]) -> Vec<u8> {
        self.send(message);
        self.read_ack().expect("an ACK")
    }

    /// One byte of what the server sent, `None` at the close.
    pub fn read_byte(&mut self) -> Option<u8> {
        if !self.buffer.is_empty() {
            return Some(self.buffer.remove(0));
        }
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Ok(1) => Some(byte[0]),
            _ => None,
        }
    }

    /// True when the server closed the connection (reads EOF) within the deadline.
    pub fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 64];
        matches!(self.stream.read(&mut chunk), Ok(0) | Err(_))
    }
}

pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 3);
    out.push(0x0B);
    out.extend_from_slice(message);
    out.extend_from_slice(&[0x1C, 0x0D]);
    out
}

/// A field of an ACK by HL7 path, e.g. `MSA-1`.
pub fn ack_field(ack: &[u8], path: &str) -> String {
    let message = hl7::parse(ack)
        .unwrap_or_else(|e| panic!("ACK does not parse: {e}: {}", String::from_utf8_lossy(ack)));
    String::from_utf8_lossy(message.get(path).unwrap_or_default()).into_owned()
}

/// A message with the given control id, patient and value, standard delimiters, CR.
pub fn oru(control_id: &str, patient: &str, value: u32) -> Vec<u8> {
    format!(
        "MSH|^~\\&|TESTDEV|WARD|HL7IHP|IHP|20261126101500||ORU^R01|{control_id}|P|2.5\rPID|||{patient}^^^HOSP^MR||Doe^Jane||19700101|F\rOBR|1||X|Y|||20261126101400\rOBX|1|NM|8867-4^Heart rate^LN||{value}|/min|60-100|N|||F\rOBX|2|NM|59408-5^SpO2^LN||97|%|90-100|N|||F\r"
    )
    .into_bytes()
}

/// Raises this test process's open-file limit so it can hold many sockets.
pub fn raise_own_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    let _ = setrlimit(Resource::Nofile, limit);
}

/// The value of an unlabelled metric in a `/metrics` body.
pub fn metric(body: &str, name: &str) -> Option<i64> {
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// `hl7-ihp demo` over `data_dir` with `patients` monitors reporting every `interval`, its
/// standard output read line by line on a thread of its own.
pub fn spawn_demo(
    data_dir: &Path,
    patients: &str,
    interval: &str,
) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(binary())
        .args(["demo", "--listen", "127.0.0.1:0", "--http", "off"])
        .args(["--patients", patients, "--interval", interval, "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = lines_of(child.stdout.take().unwrap());
    (child, rx)
}

/// Sends Ctrl+C (SIGINT) to a child and waits until it has exited.
pub fn interrupt_and_wait(child: &mut Child) -> ExitStatus {
    rustix::process::kill_process(
        rustix::process::Pid::from_child(child),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let mut status = None;
    wait_until("the child to stop", || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status.unwrap()
}

/// A child's standard output, line by line, read on a thread of its own so that a test can
/// wait for a line with a deadline.
pub fn lines_of(stdout: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// One server-sent event: its id, its name and its data, as read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

impl SseEvent {
    /// The data as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {}", self.data))
    }
}

/// What an SSE client reads: events, comment lines (without the `:`), and the end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SseItem {
    Event(SseEvent),
    Comment(String),
    End,
}

/// A blocking event-stream client: a GET with `Accept: text/event-stream` (and an optional
/// `Last-Event-ID`), its chunked body de-chunked and read line by line on a thread of its
/// own, so that a test can wait for the next item with a deadline.
pub struct SseClient {
    pub status: u16,
    pub headers: String,
    items: std::sync::mpsc::Receiver<SseItem>,
    stream: TcpStream,
}

impl SseClient {
    pub fn connect(address: SocketAddr, path: &str, last_event_id: Option<&str>) -> SseClient {
        let mut stream = TcpStream::connect(address).expect("connect http");
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let resume = last_event_id
            .map(|id| format!("Last-Event-ID: {id}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n{resume}\r\n"
        )
        .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut headers = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            headers.push_str(&line);
        }
        let status = headers
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let chunked = headers
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        let (tx, items) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let body: Box<dyn BufRead> = if chunked {
                Box::new(BufReader::new(Dechunk {
                    inner: reader,
                    left: 0,
                    done: false,
                }))
            } else {
                Box::new(reader)
            };
            let mut event = SseEvent::default();
            let mut has_data = false;
            for line in body.lines() {
                let Ok(line) = line else { break };
                if line.is_empty() {
                    if has_data || event.id.is_some() || event.event.is_some() {
                        let _ = tx.send(SseItem::Event(std::mem::take(&mut event)));
                    }
                    has_data = false;
                } else if let Some(comment) = line.strip_prefix(':') {
                    let _ = tx.send(SseItem::Comment(comment.trim_start().to_owned()));
                } else {
                    let (field, value) = line.split_once(':').unwrap_or((&line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
                    match field {
                        "id" => event.id = Some(value),
                        "event" => event.event = Some(value),
                        "data" => {
                            if has_data {
                                event.data.push('\n');
                            }
                            event.data.push_str(&value);
                            has_data = true;
                        }
                        _ => {}
                    }
                }
            }
            let _ = tx.send(SseItem::End);
        });
        SseClient {
            status,
            headers,
            items,
            stream,
        }
    }

    /// The next item, or `None` when nothing came within `timeout`.
    pub fn next_within(&self, timeout: Duration) -> Option<SseItem> {
        self.items.recv_timeout(timeout).ok()
    }

    /// The next event, skipping comments; panics at the deadline or the end.
    pub fn next_event(&self) -> SseEvent {
        // One deadline for the event, however many keep-alive comments come meanwhile.
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.items.recv_timeout(left) {
                Ok(SseItem::Event(event)) => return event,
                Ok(SseItem::Comment(_)) => {}
                Ok(SseItem::End) => panic!("the event stream ended"),
                Err(_) => panic!("no event within the deadline"),
            }
        }
    }

    /// Events until one named `name` for which `accept` holds; returns it and those before.
    pub fn until(
        &self,
        name: &str,
        mut accept: impl FnMut(&SseEvent) -> bool,
    ) -> (SseEvent, Vec<SseEvent>) {
        let mut before = Vec::new();
        loop {
            let event = self.next_event();
            if event.event.as_deref() == Some(name) && accept(&event) {
                return (event, before);
            }
            before.push(event);
        }
    }

    /// True when the stream ends (EOF) within the deadline, whatever comes before.
    pub fn ends(&self) -> bool {
        let start = Instant::now();
        while start.elapsed() < DEADLINE {
            match self.items.recv_timeout(DEADLINE) {
                Ok(SseItem::End) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    }

    /// Closes the connection.
    pub fn close(self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// A chunked transfer-encoded body as plain bytes.
struct Dechunk<R> {
    inner: R,
    left: usize,
    done: bool,
}

impl<R: BufRead> Read for Dechunk<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            if self.inner.read_line(&mut line)? == 0 {
                self.done = true;
                return Ok(0);
            }
            if line.trim().is_empty() {
                // The CRLF after the previous chunk.
                line.clear();
                if self.inner.read_line(&mut line)? == 0 {
                    self.done = true;
                    return Ok(0);
                }
            }
            let size = line.trim().split(';').next().unwrap_or("");
            self.left = usize::from_str_radix(size, 16)
                .map_err(|_| std::io::Error::other("bad chunk size"))?;
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let n = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..n])?;
        if n == 0 {
            self.done = true;
        }
        self.left -= n;
        Ok(n)
    }
}

/// A GET on `address` with extra request headers (each line ending in `\r\n`): status,
/// the response's head and its body.
pub fn http_get_with(address: SocketAddr, path: &str, headers: &str) -> (u16, String, String) {
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{headers}\r\n");
    let response = http_exchange(address, request.as_bytes());
    let body = response.text();
    (response.status, response.head, body)
}

/// The table `hl7-ihp messages` prints for a data directory.
pub fn messages_table(data: &Path) -> String {
    let (code, out, err) = run(&["messages", "--data-dir", data.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    out
}

/// Whether a runnable `program args…` is here (exit status 0), asked quietly: a missing
/// peer gets one line from [`peer_present`], not a traceback.
pub fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether a test's outside peer is here. When it is not, the test says so in one line
/// (past the harness's capture, so it shows in the output) and should return; under
/// `CI=true` it fails instead, since CI installs every peer.
pub fn peer_present(test: &str, present: bool, peer: &str, install: &str) -> bool {
    if !present {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must install {peer} ({install})"
        );
        let _ = writeln!(
            std::io::stderr(),
            "{test} skipped: {peer} is not installed ({install})"
        );
    }
    present
}
