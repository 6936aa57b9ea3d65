//! The HTTP API of the real binary over a socket: every response checked against the
//! OpenAPI document the receiver serves (by path, method, status and content type), the
//! document's own structure, paging while data arrives, and the bearer token's rules.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde_json::Value;

use crate::common::{self, Client, HttpResponse, Receiver, ack_field, http_request};
use crate::schema::{self, Document};

/// A client of one receiver's API that checks every response against its document.
struct Api {
    address: SocketAddr,
    token: Option<String>,
    document: Document,
}

impl Api {
    fn new(receiver: &Receiver, token: Option<&str>) -> Api {
        let address = receiver.http.expect("http enabled");
        let mut api = Api {
            address,
            token: token.map(str::to_owned),
            document: Document::new(Value::Null),
        };
        let response = api.send("GET", "/api/v1/openapi.json", &[]);
        assert_eq!(response.status, 200, "{}", response.text());
        api.document = Document::new(response.json());
        api.check("GET", "/api/v1/openapi.json", &response);
        api
    }

    /// A request with the client's token (if any) and `headers`, its response checked.
    fn send(&self, method: &str, target: &str, headers: &[(&str, &str)]) -> HttpResponse {
        let authorization = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if let Some(value) = &authorization {
            all.push(("Authorization", value));
        }
        let response = http_request(self.address, method, target, &all);
        if !self.document.root.is_null() {
            self.check(method, target, &response);
        }
        response
    }

    fn get(&self, target: &str) -> HttpResponse {
        self.send("GET", target, &[])
    }

    /// A GET that must answer 200; its JSON.
    fn ok(&self, target: &str) -> Value {
        let response = self.get(target);
        assert_eq!(response.status, 200, "{target}: {}", response.text());
        response.json()
    }

    /// A GET that must answer a problem with `status` (and, for a 400, name `parameter`).
    fn problem(&self, target: &str, status: u16, parameter: Option<&str>) -> Value {
        let response = self.get(target);
        assert_eq!(response.status, status, "{target}: {}", response.text());
        let json = response.json();
        assert_eq!(json["status"], status, "{target}");
        if let Some(parameter) = parameter {
            assert_eq!(json["parameter"], parameter, "{target}: {json}");
        }
        json
    }

    /// The response matches the document: its status is documented for the path and method,
    /// its content type too, and a JSON body validates against that schema. A path the
    /// document does not name must answer a problem (404 under /api/v1, 401 without a token).
    fn check(&self, method: &str, target: &str, response: &HttpResponse) {
        let path = target.split('?').next().unwrap();
        let content_type = response.header("content-type").unwrap_or_default();
        let context = format!("{method} {target} → {}", response.status);
        if response.status >= 400 {
            assert_eq!(content_type, "application/problem+json", "{context}");
        }
        let schema = match self.document.template_of(path) {
            Some(template) if response.status != 405 => self
                .document
                .response_schema(&template, method, response.status, content_type)
                .unwrap_or_else(|e| panic!("{context}: {e}")),
            _ => {
                assert!(
                    matches!(response.status, 401 | 404 | 405),
                    "{context}: undocumented path"
                );
                self.document
                    .resolve("#/components/schemas/Problem")
                    .expect("a Problem schema")
            }
        };
        if content_type.starts_with("application/json")
            || content_type.starts_with("application/problem+json")
        {
            let json: Value = serde_json::from_slice(&response.body)
                .unwrap_or_else(|e| panic!("{context}: not JSON: {e}"));
            self.document
                .validate(schema, &json, "$")
                .unwrap_or_else(|e| panic!("{context}: {e}\n{json}"));
        } else {
            assert!(
                schema.get("type") == Some(&Value::from("string")),
                "{context}: a {content_type} body for a schema that is not a string"
            );
        }
        if response.status == 401 {
            assert_eq!(
                response.header("www-authenticate"),
                Some("Bearer"),
                "{context}"
            );
        }
    }
}

/// Observation times are minutes after a base 20 to 30 minutes ago, on a multiple of 10
/// minutes: near their arrival, as the store's time filters expect (docs/api.md).
fn minute(n: u32) -> jiff::Timestamp {
    static BASE: std::sync::LazyLock<i64> = std::sync::LazyLock::new(|| {
        let now = jiff::Timestamp::now().as_second();
        now - now.rem_euclid(600) - 1200
    });
    jiff::Timestamp::from_second(*BASE + 60 * i64::from(n)).unwrap()
}

/// `minute(n)` as a query parameter.
fn rfc3339(n: u32) -> String {
    minute(n).strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A bedside monitor's ORU^R01 with heart rate and SpO2, observed at `minute(n)`.
fn vitals(control_id: &str, patient: &str, n: u32, heart_rate: u32) -> Vec<u8> {
    let time = minute(n).strftime("%Y%m%d%H%M%S+0000");
    format!(
        "MSH|^~\\&|MON-7|ICU|HL7IHP|IHP|{time}||ORU^R01|{control_id}|P|2.5\r\
         PID|||{patient}^^^HOSP^MR||Berg^Anna||19510302|F\r\
         PV1||I|ICU^03^A\r\
         OBR|1||X|Y|||{time}\r\
         OBX|1|NM|147842^MDC_ECG_HEART_RATE^MDC|1.1.1.1|{heart_rate}|264864^MDC_DIM_BEAT_PER_MIN^MDC|50-120|N|||F|||{time}||||0123456789ABCDEF\r\
         OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.2|97|262688^MDC_DIM_PERCENT^MDC|90-100|N|||F|||{time}\r"
    )
    .into_bytes()
}

/// The head of a response whose body does not end (the event stream).
fn stream_head(address: SocketAddr, target: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(common::DEADLINE)).unwrap();
    write!(stream, "GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "the stream closed early"
        );
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

fn send(receiver: &Receiver, message: &[u8]) -> String {
    let mut client = Client::connect(receiver.mllp);
    ack_field(&client.exchange(message), "MSA-1")
}

/// The patient keys these tests use: distinctive, so that the logs can be searched for them.
const KEY: &str = "PATIENT-4711";
const SLASHED: &str = "MRN/PATIENT-4712";

#[test]
fn every_response_matches_the_document() {
    let (_dir, receiver) = common::start(&[]);
    for minute in 0..3 {
        assert_eq!(
            send(
                &receiver,
                &vitals(&format!("C{minute}"), KEY, minute, 80 + minute)
            ),
            "AA"
        );
    }
    assert_eq!(send(&receiver, &vitals("S1", SLASHED, 0, 70)), "AA");
    assert_eq!(send(&receiver, b"no HL7 at all"), "AR");
    assert_eq!(send(&receiver, &vitals("", KEY, 5, 90)), "AE");
    let api = Api::new(&receiver, None);

    assert_eq!(api.get("/healthz").status, 200);
    assert_eq!(api.get("/metrics").status, 200);
    let base = format!("/api/v1/patients/{KEY}");
    let records = api.ok(&format!("{base}/observations"));
    assert_eq!(records["records"].as_array().unwrap().len(), 6);
    api.ok(&format!("{base}/observations?code=150456&limit=2"));
    let range = api.ok(&format!(
        "{base}/observations?since={}&until={}",
        rfc3339(1),
        rfc3339(2)
    ));
    assert_eq!(range["records"].as_array().unwrap().len(), 2);
    api.ok("/api/v1/patients/MRN%2FPATIENT-4712/observations");
    let trends = api.ok(&format!(
        "{base}/trends?since={}&until={}&bucket=2m",
        rfc3339(0),
        rfc3339(60)
    ));
    let heart_rate = trends["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["code"] == "147842")
        .expect("a heart rate series");
    let buckets = heart_rate["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 2, "{buckets:?}");
    assert_eq!(
        (buckets[0]["count"].as_u64(), buckets[0]["median"].as_f64()),
        (Some(2), Some(80.5))
    );
    api.ok(&format!("{base}/trends"));
    let messages = api.ok("/api/v1/messages");
    let listed = messages["messages"].as_array().unwrap();
    assert_eq!(listed.len(), 6);
    api.ok("/api/v1/messages?outcome=refused&type=ORU%5ER01&facility=ICU&limit=3");
    api.ok(&format!(
        "/api/v1/messages?patient={KEY}&since=2026-01-01T00:00:00Z"
    ));
    for message in listed {
        let id = message["id"].as_i64().unwrap();
        let one = api.ok(&format!("/api/v1/messages/{id}"));
        assert_eq!(one["ack_code"], message["ack_code"]);
        assert_eq!(one["outcome"], message["outcome"]);
        match one["outcome"].as_str().unwrap() {
            "rejected" => assert!(one["parsed"].is_null() && one["reason"].is_string()),
            "error" => assert!(one["parsed"].is_object() && one["reason"].is_string()),
            _ => assert!(one["parsed"]["segments"].is_array() && one["reason"].is_null()),
        }
    }

    for (target, parameter) in [
        (format!("{base}/observations?since=today"), "since"),
        (format!("{base}/observations?limit=0"), "limit"),
        (format!("{base}/observations?cursor=nope"), "cursor"),
        (format!("{base}/observations?offset=5"), "offset"),
        (format!("{base}/trends?bucket=1ms"), "bucket"),
        (format!("{base}/trends?until=noon"), "until"),
        ("/api/v1/messages?outcome=maybe".to_owned(), "outcome"),
        ("/api/v1/messages?limit=5000".to_owned(), "limit"),
        ("/api/v1/messages/x".to_owned(), "id"),
        ("/api/v1/patients/%C0/observations".to_owned(), "key"),
    ] {
        api.problem(&target, 400, Some(parameter));
    }
    for target in [
        "/api/v1/patients/NOBODY/observations",
        "/api/v1/patients/NOBODY/trends",
        "/api/v1/messages/999999",
        "/api/v1/elsewhere",
        "/api/v1/patients/x/y/z",
    ] {
        api.problem(target, 404, None);
    }
    let response = api.send("POST", "/api/v1/messages", &[("Content-Length", "0")]);
    assert_eq!(response.status, 405);

    // The live view's endpoints, once it has caught up with the store.
    common::wait_until("the live view to know the patient", || {
        api.get(&format!("/api/v1/patients/{KEY}")).status == 200
    });
    let patients = api.ok("/api/v1/patients");
    assert_eq!(patients["patients"].as_array().unwrap().len(), 2);
    api.ok("/api/v1/patients?q=4711&sort=severity");
    api.ok("/api/v1/patients/MRN%2FPATIENT-4712");
    api.ok("/api/v1/devices");
    api.ok("/api/v1/stats");
    api.problem("/api/v1/patients?sort=sideways", 400, Some("sort"));
    api.problem("/api/v1/patients/NOBODY", 404, None);
    // The event stream does not end: its head is read, then the connection dropped.
    let head = stream_head(api.address, "/api/v1/events");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let documented =
        api.document.root["paths"]["/api/v1/events"]["get"]["responses"]["200"]["content"]
            .as_object()
            .unwrap();
    assert!(
        documented.keys().any(|media| head
            .to_ascii_lowercase()
            .contains(&format!("content-type: {media}"))),
        "{head}"
    );

    // No log line carries a patient key, though they were in request paths.
    let (_, logs) = receiver.terminate();
    // The patient ids, not their digits alone: a peer's port (127.0.0.1:47112) may hold those.
    assert!(
        !logs.contains("PATIENT-4711") && !logs.contains("PATIENT-4712"),
        "{logs}"
    );
}

#[test]
fn pages_skip_nothing_and_repeat_nothing_while_data_arrives() {
    let (_dir, receiver) = common::start(&[]);
    for n in 0..4 {
        send(&receiver, &vitals(&format!("C{n}"), KEY, n, 80));
    }
    let api = Api::new(&receiver, None);
    let mut seen = Vec::new();
    let mut target = format!("/api/v1/patients/{KEY}/observations?limit=3");
    let mut n_pages = 0;
    loop {
        let page = api.ok(&target);
        for record in page["records"].as_array().unwrap() {
            seen.push((
                record["message_id"].as_i64().unwrap(),
                record["index"].as_i64().unwrap(),
            ));
        }
        n_pages += 1;
        // More arrives after every page.
        send(
            &receiver,
            &vitals(&format!("N{n_pages}"), KEY, 10 + n_pages, 80),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                target = format!("/api/v1/patients/{KEY}/observations?limit=3&cursor={cursor}")
            }
            None => break,
        }
    }
    let expected: Vec<(i64, i64)> = (1..=4).rev().flat_map(|id| [(id, 0), (id, 1)]).collect();
    assert_eq!(seen, expected);
    assert_eq!(n_pages, 3);

    let mut ids = Vec::new();
    let mut target = "/api/v1/messages?limit=2".to_owned();
    let newest_before = api.ok("/api/v1/messages?limit=1")["messages"][0]["id"]
        .as_i64()
        .unwrap();
    loop {
        let page = api.ok(&target);
        ids.extend(
            page["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_i64().unwrap()),
        );
        send(&receiver, &vitals(&format!("M{}", ids.len()), KEY, 40, 80));
        match page["next_cursor"].as_str() {
            Some(cursor) => target = format!("/api/v1/messages?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(ids, (1..=newest_before).rev().collect::<Vec<_>>());
}

#[test]
fn the_openapi_document_is_whole() {
    let (_dir, receiver) = common::start(&[]);
    let api = Api::new(&receiver, None);
    let root = &api.document.root;
    assert!(
        root["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        root["openapi"]
    );
    assert!(root["info"]["title"].is_string() && root["info"]["version"].is_string());
    let mut references = Vec::new();
    schema::references(root, "#", &mut references);
    assert!(references.len() > 10);
    for (at, reference) in &references {
        assert!(
            api.document.resolve(reference).is_some(),
            "{at}: {reference} does not resolve"
        );
    }
    let schemes = &root["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["type"], "http");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    let paths = root["paths"].as_object().unwrap();
    for (path, item) in paths {
        let operations = item.as_object().unwrap();
        assert!(!operations.is_empty(), "{path}");
        for (method, operation) in operations {
            let responses = operation["responses"].as_object().expect("responses");
            assert!(responses.contains_key("200"), "{method} {path}");
            for (status, response) in responses {
                assert!(
                    response["description"].is_string(),
                    "{method} {path} {status}"
                );
            }
            // Every path parameter of the template is declared.
            let declared: Vec<&str> = operation["parameters"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .filter(|p| p["in"] == "path")
                        .map(|p| p["name"].as_str().unwrap())
                        .collect()
                })
                .unwrap_or_default();
            for segment in path.split('/') {
                if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    assert!(
                        declared.contains(&name),
                        "{method} {path}: {name} undeclared"
                    );
                }
            }
            if operation["parameters"]
                .as_array()
                .is_some_and(|list| list.iter().any(|p| p["in"] == "query" || p["in"] == "path"))
            {
                assert!(responses.contains_key("400"), "{method} {path}: no 400");
            }
            if !declared.is_empty() && path.starts_with("/api/v1/") {
                assert!(responses.contains_key("404"), "{method} {path}: no 404");
            }
            if path == "/healthz" {
                assert_eq!(
                    operation["security"],
                    serde_json::json!([]),
                    "{path} is open"
                );
            } else {
                assert!(responses.contains_key("401"), "{method} {path}: no 401");
            }
        }
    }
    // Every route the source registers under /api/v1, and /healthz and /metrics, is here.
    let routes = registered_routes();
    assert!(routes.len() >= 6, "{routes:?}");
    for route in &routes {
        assert!(
            paths.contains_key(route),
            "{route} is served but not documented"
        );
    }
    for path in paths.keys() {
        assert!(
            routes.contains(path),
            "{path} is documented but not registered"
        );
    }
}

/// The paths given to `.route(…)` in the application's source, without the catch-alls that
/// answer 404 and the dashboard's pages outside /api/v1.
fn registered_routes() -> Vec<String> {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect_rust_files(&src, &mut files);
    let mut routes = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find(".route(") {
            rest = rest[at + ".route(".len()..].trim_start();
            let Some(literal) = rest.strip_prefix('"') else {
                continue;
            };
            let end = literal.find('"').unwrap();
            let route = &literal[..end];
            let served = (route.starts_with("/api/v1/") && route.len() > "/api/v1/".len())
                || route == "/healthz"
                || route == "/metrics";
            if served && !route.contains("{*") && !routes.iter().any(|r| r == route) {
                routes.push(route.to_owned());
            }
        }
    }
    routes.sort();
    routes
}

fn collect_rust_files(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A token file with owner-only permissions.
fn token_file(dir: &std::path::Path, contents: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("http-token");
    std::fs::write(&path, contents).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// 401 without the right token, on every path but /healthz; 200 with it.
fn check_token_rules(receiver: &Receiver, token: &str) {
    let with = Api::new(receiver, Some(token));
    let address = with.address;
    for target in [
        "/metrics",
        "/api/v1/openapi.json",
        "/api/v1/messages",
        "/api/v1/messages/1",
        "/api/v1/patients/x/observations?limit=0",
        "/api/v1/nothing",
    ] {
        for authorization in [
            None,
            Some("Bearer not-it".to_owned()),
            Some(format!("Basic {token}")),
        ] {
            let headers: Vec<(&str, &str)> = authorization
                .iter()
                .map(|value| ("Authorization", value.as_str()))
                .collect();
            let response = http_request(address, "GET", target, &headers);
            assert_eq!(response.status, 401, "{target} {authorization:?}");
            with.check("GET", target, &response);
        }
    }
    let open = http_request(address, "GET", "/healthz", &[]);
    assert_eq!(open.status, 200);
    assert_eq!(with.get("/metrics").status, 200);
    with.ok("/api/v1/messages");
    // The token is checked before the body is read: a request that promises a large body
    // and sends none is answered at once.
    let response = common::http_exchange(
        address,
        b"POST /api/v1/messages HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000000\r\n\r\n",
    );
    assert_eq!(response.status, 401);
}

#[test]
fn a_token_from_a_file_guards_everything_but_healthz() {
    let dir = tempfile::tempdir().unwrap();
    let file = token_file(dir.path(), "file-T0ken-0123456789\nignored\n", 0o600);
    let receiver = Receiver::start_with_http(
        &dir.path().join("data"),
        "127.0.0.1:0",
        &["--http-token-file", file.to_str().unwrap()],
        &[],
    );
    check_token_rules(&receiver, "file-T0ken-0123456789");
    let (_, logs) = receiver.terminate();
    assert!(!logs.contains("file-T0ken"), "{logs}");
    assert!(!logs.contains("readable by group or others"), "{logs}");
}

#[test]
fn a_token_from_the_environment_lets_the_receiver_bind_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start_with_http(
        &dir.path().join("data"),
        "0.0.0.0:0",
        &[],
        &[("HL7IHP_HTTP_TOKEN", "env-T0ken-0123456789")],
    );
    assert!(receiver.http.unwrap().ip().is_unspecified());
    check_token_rules(&receiver, "env-T0ken-0123456789");
    let (_, logs) = receiver.terminate();
    assert!(!logs.contains("env-T0ken"), "{logs}");
}

#[test]
fn a_token_file_others_can_read_is_used_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let file = token_file(dir.path(), "shared-token\n", 0o644);
    let receiver = Receiver::start_with_http(
        &dir.path().join("data"),
        "127.0.0.1:0",
        &["--http-token-file", file.to_str().unwrap()],
        &[],
    );
    let api = Api::new(&receiver, Some("shared-token"));
    api.ok("/api/v1/messages");
    let (_, logs) = receiver.terminate();
    assert!(logs.contains("readable by group or others"), "{logs}");
}

#[test]
fn beyond_loopback_without_a_token_the_receiver_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let base = ["receive", "--listen", "127.0.0.1:0", "--data-dir", data];
    let (code, _, stderr) = common::run(&[&base[..], &["--http", "0.0.0.0:0"]].concat());
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("invalid setting `http`")
            && stderr.contains("--http-token-file")
            && stderr.contains("HL7IHP_HTTP_TOKEN"),
        "{stderr}"
    );
    let empty = token_file(dir.path(), "\n", 0o600);
    let (code, _, stderr) = common::run(
        &[
            &base[..],
            &[
                "--http",
                "0.0.0.0:0",
                "--http-token-file",
                empty.to_str().unwrap(),
            ],
        ]
        .concat(),
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("`http_token_file`") && stderr.contains("empty"),
        "{stderr}"
    );
    let missing = dir.path().join("missing");
    let (code, _, stderr) =
        common::run(&[&base[..], &["--http-token-file", missing.to_str().unwrap()]].concat());
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("cannot read"), "{stderr}");
}
