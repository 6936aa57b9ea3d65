//! The dashboard in a real browser: headless Chromium, driven over the DevTools protocol by
//! `tests/browser/cdp.py`, against the real receiver fed by the real simulator. Skipped with
//! one line when Chromium (or Python 3) is missing, except under `CI=true`.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;

use serde_json::{Value, json};

use crate::common::{self, Client, DEADLINE};

/// Where screenshots go: `screenshots/` in the cargo target directory.
fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
}

/// True when the test can run; false (after one line) when it skips; a panic under CI.
fn browser_available() -> bool {
    let chromium = std::env::var_os("CHROMIUM").is_some()
        || [
            "chromium",
            "chromium-browser",
            "google-chrome",
            "google-chrome-stable",
        ]
        .iter()
        .any(|name| on_path(name));
    let missing = match (chromium, on_path("python3")) {
        (true, true) => return true,
        (false, _) => "chromium",
        (true, false) => "python3",
    };
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "browser test: {missing} not found, and CI=true"
    );
    println!("browser test skipped: {missing} not found (apt-get install chromium)");
    false
}

/// Headless Chromium behind `cdp.py serve`: one JSON request a line, one answer a line.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    answers: mpsc::Receiver<String>,
}

impl Browser {
    fn start(width: u32, height: u32) -> Browser {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser/cdp.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args([
                "--width",
                &width.to_string(),
                "--height",
                &height.to_string(),
            ])
            .arg("serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start cdp.py");
        let stdin = child.stdin.take().unwrap();
        let (tx, answers) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut browser = Browser {
            child,
            stdin,
            answers,
        };
        assert_eq!(browser.answer(), json!("ready"));
        browser
    }

    fn answer(&mut self) -> Value {
        // The driver's own waits end within 60 s; this one only catches a hung driver.
        let line = self
            .answers
            .recv_timeout(DEADLINE * 2)
            .expect("an answer from cdp.py");
        let answer: Value = serde_json::from_str(&line).expect("json from cdp.py");
        assert_eq!(answer["ok"], true, "cdp.py: {}", answer["error"]);
        answer["value"].clone()
    }

    fn request(&mut self, request: Value) -> Value {
        writeln!(self.stdin, "{request}").expect("write to cdp.py");
        self.answer()
    }

    fn goto(&mut self, url: &str) {
        self.request(json!({"cmd": "goto", "url": url}));
    }

    fn eval(&mut self, expression: &str) -> Value {
        self.request(json!({"cmd": "eval", "expr": expression}))
    }

    /// Waits (60 s at most) until `expression` is truthy; its value.
    fn wait(&mut self, what: &str, expression: &str) -> Value {
        self.request(
            json!({"cmd": "wait", "expr": expression, "what": what, "timeout": DEADLINE.as_secs()}),
        )
    }

    fn click(&mut self, selector: &str) {
        self.request(json!({"cmd": "click", "selector": selector}));
    }

    fn viewport(&mut self, width: u32, height: u32) {
        self.request(json!({"cmd": "viewport", "width": width, "height": height}));
    }

    fn screenshot(&mut self, name: &str) -> PathBuf {
        let path = screenshots().join(name);
        self.request(json!({"cmd": "screenshot", "path": path}));
        path
    }

    /// Exceptions and console errors the page had.
    fn errors(&mut self) -> Vec<String> {
        serde_json::from_value(self.request(json!({"cmd": "errors"}))).unwrap()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"cmd": "quit"}));
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_secs(15) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `hl7-ihp send` in simulator mode, killed when dropped.
struct Simulator(Child);

impl Simulator {
    fn start(to: std::net::SocketAddr, patients: usize, interval: &str) -> Simulator {
        let child = Command::new(common::binary())
            .args(["send", "--to", &to.to_string(), "--scenario", "vitals"])
            .args(["--patients", &patients.to_string(), "--interval", interval])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the simulator");
        Simulator(child)
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A PCD-01 ORU^R01 for the test's own bedside patient with a heart rate and SpO2 as
/// given (OBX-5, OBX-8), so that the test knows exactly what the tile must show.
fn bedside(control_id: &str, heart_rate: &str, hr_flag: &str, spo2: &str) -> Vec<u8> {
    let now = jiff::ZonedDateTime::now()
        .strftime("%Y%m%d%H%M%S%z")
        .to_string();
    format!(
        "MSH|^~\\&|BEDSIDE^0012A3FFFE0000FF^EUI-64|ICU|HL7IHP|IHP|{now}||ORU^R01^ORU_R01|{control_id}|P|2.6|||AL|NE||UNICODE UTF-8\r\
         PID|||BROWSER-1^^^HOSP^MR||Tester^Bea||19700101|F\r\
         PV1||I|ICU^^BED99^HOSP\r\
         OBR|1|{control_id}|0012A3FFFE0000FF|69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|||{now}\r\
         OBX|1|NM|147842^MDC_ECG_HEART_RATE^MDC|1.1.1.1|{heart_rate}|264864^MDC_DIM_BEAT_PER_MIN^MDC|50-120|{hr_flag}|||R|||{now}||||0012A3FFFE0000FF^EUI-64\r\
         OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.2.1.1|{spo2}|262688^MDC_DIM_PERCENT^MDC|90-100||||R|||{now}||||0012A3FFFE0000FF^EUI-64\r"
    )
    .into_bytes()
}

/// The texts of a tile's parts, by the patient's name.
fn tile_js(name: &str, rest: &str) -> String {
    format!(
        "(() => {{ const tile = [...document.querySelectorAll('.ward .tile')].find((t) => t.querySelector('.name').textContent === {name}); if (!tile) return null; {rest} }})()",
        name = json!(name)
    )
}

#[test]
fn the_dashboard_shows_live_values_staleness_trends_and_messages_in_a_real_browser() {
    if !browser_available() {
        return;
    }
    let (_dir, receiver) = common::start(&["--stale-after", "2s"]);
    let http = receiver.http.expect("http");
    let base = format!("http://{http}");
    let mut simulator = Some(Simulator::start(receiver.mllp, 3, "100ms"));
    let mut browser = Browser::start(1920, 1080);
    browser.goto(&format!("{base}/"));

    // The simulator's three patients, by name, with live numbers.
    let names = ["Åsa Lindqvist", "Ben Okafor", "Chiara Rossi"];
    for name in names {
        browser.wait(
            &format!("{name}'s tile with a heart rate and SpO2"),
            &tile_js(
                name,
                "return /^\\d+$/.test(tile.querySelector('.v-hr .v-value').textContent) && /^\\d+$/.test(tile.querySelector('.v-spo2 .v-value').textContent) && tile.dataset.status === 'live';",
            ),
        );
    }
    browser.eval("window.notReloaded = true");

    // Values change as messages arrive, without a reload.
    let first = browser.eval(&tile_js(
        names[0],
        "return [tile.dataset.message, tile.querySelector('.vitals').textContent];",
    ));
    browser.wait(
        "a new message and new values on the first tile",
        &format!(
            "window.notReloaded === true && {}",
            tile_js(
                names[0],
                &format!(
                    "const seen = {first}; return tile.dataset.message !== seen[0] && tile.querySelector('.vitals').textContent !== seen[1];"
                ),
            )
        ),
    );

    // The test's own monitor: exact values, then an abnormal one with its limit, then a
    // message without any valid value.
    let mut client = Client::connect(receiver.mllp);
    let ack = client.exchange(&bedside("BROWSER-1", "77", "N", "98"));
    assert_eq!(common::ack_field(&ack, "MSA-1"), "CA");
    let bea = "Bea Tester";
    browser.wait(
        "Bea Tester's heart rate 77",
        &tile_js(bea, "return tile.querySelector('.v-hr .v-value').textContent === '77' && tile.querySelector('.where').textContent.includes('BED99');"),
    );
    client.exchange(&bedside("BROWSER-2", "134", "H", "97"));
    let alert = browser.wait(
        "HR 134 shown as a warning with its limit",
        &tile_js(bea, "const cell = tile.querySelector('.v-hr'); return cell.querySelector('.v-value').textContent === '134' && cell.classList.contains('warning') && cell.querySelector('.v-alert').textContent;"),
    );
    assert_eq!(alert, json!("HIGH > 120"));
    client.exchange(&bedside("BROWSER-3", "NAV", "", ""));
    browser.wait(
        "a monitor sending only missing values, told apart",
        &tile_js(bea, "return tile.classList.contains('no-values') && tile.querySelector('.banner').textContent.includes('NO VALUES') && tile.querySelector('.v-hr .v-value').textContent === 'NAV' && tile.querySelector('.v-spo2 .v-value').textContent === 'NO VALUE';"),
    );
    browser.screenshot("ward-4-patients-live.png");

    // The simulator stops: its monitors turn stale (--stale-after 2s).
    drop(simulator.take());
    for name in names {
        browser.wait(
            &format!("{name}'s tile stale"),
            &tile_js(
                name,
                "return tile.dataset.status === 'stale' && tile.querySelector('.banner').textContent.startsWith('STALE');",
            ),
        );
    }
    browser.screenshot("ward-4-patients-stale.png");
    browser.viewport(1280, 800);
    browser.screenshot("ward-4-patients-1280x800.png");
    browser.viewport(1920, 1080);

    // A click on a tile opens the patient view at its own address, with trend plots.
    browser.click(".ward .tile[data-key='MRN00001']");
    browser.wait(
        "the patient view's address",
        "location.pathname === '/patients/MRN00001'",
    );
    let points = browser.wait(
        "trend plots with data",
        "(() => { const hr = document.querySelector(\".chart[data-code='147842'] svg.trend\"); const nibp = document.querySelector(\".chart[data-code='nibp'] svg.trend\"); return hr && nibp && Number(hr.dataset.points) > 0 && nibp.querySelectorAll('circle').length > 0 && Number(hr.dataset.points); })()",
    );
    assert!(points.as_u64().unwrap() > 0, "{points}");
    browser.wait(
        "the recent records",
        "document.querySelectorAll('table.records tbody tr.row').length >= 7",
    );
    browser.screenshot("patient.png");

    // From a value to its source message, raw and parsed.
    browser.click(".tile.big .v-hr .v-source");
    browser.wait(
        "the heart rate's message, parsed, its OBX highlighted",
        "location.pathname.startsWith('/messages/') && !!document.querySelector('#parsed .segment.highlight') && document.querySelector('#parsed .segment.highlight').textContent.includes('MDC_ECG_HEART_RATE')",
    );
    browser.screenshot("message-parsed.png");
    browser.click("button[data-tab='raw']");
    browser.wait(
        "the raw message",
        "!!document.querySelector('#raw .seg.highlight') && document.querySelector('#raw').textContent.startsWith('MSH|')",
    );

    // The operations view: message rate, devices, and a rejected frame with its reason,
    // arriving while the view is open.
    browser.click("nav a[data-view='operations']");
    browser.wait(
        "the message rate and the devices",
        "location.pathname === '/operations' && Number(document.querySelector('svg.rate')?.dataset.bins) > 0 && document.querySelectorAll('#devices tr').length >= 4",
    );
    client.write_raw(&common::frame(b"this is not HL7"));
    let ack = client.read_ack().expect("an ACK for the reject");
    assert!(String::from_utf8_lossy(&ack).contains("MSA|AR"), "{ack:?}");
    let reason = browser.wait(
        "the rejected frame in the operations view, with its reason",
        "(() => { const row = document.querySelector('#rejected tr.row'); return row && row.textContent.includes('rejected') && row.querySelector('.reason').textContent; })()",
    );
    assert!(!reason.as_str().unwrap().is_empty(), "{reason}");
    browser.screenshot("operations.png");

    // The message browser with a filter in its address.
    browser.goto(&format!("{base}/messages?patient=BROWSER-1"));
    let n_rows = browser.wait(
        "Bea Tester's three messages",
        "document.querySelectorAll('#messages tr.row').length === 3 && document.querySelectorAll('#messages tr.row').length",
    );
    assert_eq!(n_rows, json!(3));
    browser.goto(&format!("{base}/messages"));
    browser.wait(
        "the message browser",
        "document.querySelectorAll('#messages tr.row').length > 10",
    );
    browser.screenshot("messages.png");

    // The event stream's parser, on chunks split at awkward places.
    let parsed = browser.eval(
        "(async () => { const { SseParser } = await import('/assets/sse.js'); const p = new SseParser(); const out = [];
          for (const chunk of ['\\ufeffid: 7\\r', '\\nevent: patient\\ndata: {\"a\"', ':1}\\r\\n\\r', '\\n: keep-alive\\n\\ndata: x\\ndata: y\\n\\nretry: 500\\nid: 9\\ndata', ': z\\n\\n'])
            out.push(...p.push(chunk));
          return { events: out, retry: p.retry }; })()",
    );
    assert_eq!(
        parsed,
        json!({"events": [
            {"id": "7", "event": "patient", "data": "{\"a\":1}"},
            {"id": "7", "event": "message", "data": "x\ny"},
            {"id": "9", "event": "message", "data": "z"},
        ], "retry": 500})
    );

    let errors = browser.errors();
    assert!(errors.is_empty(), "the page had errors: {errors:#?}");
    drop(browser);
    receiver.kill();
}

#[test]
fn the_dashboard_asks_for_the_token_once_and_keeps_it_for_the_session() {
    if !browser_available() {
        return;
    }
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("http-token");
    std::fs::write(&token_file, "dashboard-T0ken-0123456789\n").unwrap();
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let (_dir, receiver) = common::start(&["--http-token-file", token_file.to_str().unwrap()]);
    let base = format!("http://{}", receiver.http.expect("http"));
    let mut client = Client::connect(receiver.mllp);
    client.exchange(&bedside("TOKEN-1", "71", "N", "97"));

    let mut browser = Browser::start(1280, 800);
    browser.goto(&format!("{base}/"));
    browser.wait(
        "the token dialog (the API answered 401)",
        "document.getElementById('token-dialog').open",
    );
    browser.click("#token-input");
    browser.request(json!({"cmd": "type", "text": "dashboard-T0ken-0123456789"}));
    browser.click("#token-form button[type='submit']");
    browser.wait(
        "the ward with the token",
        &tile_js(
            "Bea Tester",
            "return tile.querySelector('.v-hr .v-value').textContent === '71';",
        ),
    );
    // The event stream sends the token too: a new value arrives without a reload.
    client.exchange(&bedside("TOKEN-2", "72", "N", "97"));
    browser.wait(
        "a live update through the stream with the token",
        &tile_js(
            "Bea Tester",
            "return tile.querySelector('.v-hr .v-value').textContent === '72';",
        ),
    );
    assert_eq!(
        browser.eval("sessionStorage.getItem('hl7-ihp.token')"),
        json!("dashboard-T0ken-0123456789")
    );
    // Kept for the session: a reload asks no more.
    browser.goto(&format!("{base}/"));
    browser.wait(
        "the ward after a reload, without the dialog",
        &format!(
            "!document.getElementById('token-dialog').open && {}",
            tile_js(
                "Bea Tester",
                "return tile.querySelector('.v-hr .v-value').textContent === '72';"
            )
        ),
    );
    browser.screenshot("token-kept.png");
    let errors = browser.errors();
    // The 401s that asked for the token are the only errors the browser may log.
    let others: Vec<_> = errors.iter().filter(|e| !e.contains("401")).collect();
    assert!(others.is_empty(), "the page had errors: {others:#?}");
}
