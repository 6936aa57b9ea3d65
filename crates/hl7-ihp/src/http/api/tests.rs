//! The API in-process: the real router over a real SQLite store in a temporary directory,
//! fed through `ingest` as a device would, asked without a socket (axum's `examples/testing`).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::Value;
use tower_service::Service as _;

use crate::config::{HttpToken, PatientIdentity};
use crate::events::Events;
use crate::http::access::Access;
use crate::http::{HttpState, router};
use crate::ingest::{Ingest, IngestSettings};
use crate::metrics::Metrics;
use crate::rate_limit::RateLimit;
use crate::store::sqlite::{SqliteOptions, SqliteStore};
use crate::store::{SQLITE_FILE_NAME, Store};

/// A receiver's store, ingest and router, without sockets.
struct Api {
    _dir: tempfile::TempDir,
    ingest: Ingest,
    router: axum::Router,
    /// What the router reads, for tests that run the live view over it.
    state: HttpState,
    events: Events,
}

/// An answer: status, content type and the body as JSON (`Null` when it is not JSON).
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    content_type: String,
    www_authenticate: Option<String>,
    json: Value,
}

impl Api {
    fn new() -> Api {
        Api::with_access(Access::open())
    }

    fn with_token(token: &str) -> Api {
        Api::with_access(Access::new(Some(&HttpToken::new(token).unwrap())))
    }

    fn with_access(access: Access) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&dir.path().join(SQLITE_FILE_NAME), SqliteOptions::default())
                .unwrap(),
        );
        let metrics = Arc::new(Metrics::default());
        let events = Events::new();
        let ingest = Ingest::new(
            Arc::clone(&store),
            IngestSettings {
                ack_mode: hl7::ack::AckMode::Auto,
                ack_application: "HL7IHP".into(),
                ack_facility: String::new(),
                patient_identity: PatientIdentity::Id,
                time_zone: None,
                placeholder_values: Default::default(),
            },
            Arc::clone(&metrics),
            events.clone(),
            Arc::new(RateLimit::default()),
        );
        let state = HttpState {
            metrics,
            extra: Arc::new(Vec::new),
            store,
            access,
            live: crate::live::Live::new(
                crate::config::receive::LiveConfig {
                    stale_after: std::time::Duration::from_secs(30),
                    offline_after: std::time::Duration::from_secs(300),
                },
                None,
            ),
            links: Arc::new(crate::links::Links::default()),
            leases: Arc::new(crate::store::lease::Leases::default()),
        };
        Api {
            _dir: dir,
            ingest,
            router: router(state.clone()),
            state,
            events,
        }
    }

    /// Sends one frame as a device would; its ACKs.
    async fn send(&self, frame: &[u8]) -> Vec<Vec<u8>> {
        let peer = crate::net::Peer::tcp(0, "127.0.0.1:40000".parse().unwrap());
        self.ingest.frame(frame, &peer).await
    }

    async fn get(&mut self, uri: &str) -> Answer {
        self.request(Request::get(uri).body(Body::empty()).unwrap())
            .await
    }

    async fn request(&mut self, request: Request<Body>) -> Answer {
        let response = self.router.call(request).await.unwrap();
        let status = response.status();
        let header_text = |name| {
            response
                .headers()
                .get(name)
                .map(|v: &header::HeaderValue| v.to_str().unwrap().to_owned())
        };
        let content_type = header_text(header::CONTENT_TYPE).unwrap_or_default();
        let www_authenticate = header_text(header::WWW_AUTHENTICATE);
        let bytes = axum::body::to_bytes(response.into_body(), 64 << 20)
            .await
            .unwrap();
        Answer {
            status,
            content_type,
            www_authenticate,
            json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    /// A GET that must be a 400 naming `parameter`.
    async fn bad(&mut self, uri: &str, parameter: &str) {
        let answer = self.get(uri).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{uri}: {answer:?}");
        assert_eq!(answer.content_type, "application/problem+json", "{uri}");
        assert_eq!(answer.json["parameter"], parameter, "{uri}: {answer:?}");
        assert_eq!(answer.json["status"], 400);
    }
}

/// An ORU^R01 from a bedside monitor: heart rate (flagged `H` above 120) and SpO2, both
/// observed at `time` (HL7 `YYYYMMDDHHMMSS`, UTC).
fn vitals(control_id: &str, patient: &str, time: &str, heart_rate: u32, spo2: u32) -> Vec<u8> {
    let flag = if heart_rate > 120 { "H" } else { "N" };
    format!(
        "MSH|^~\\&|MON-1|ICU|HL7IHP|IHP|{time}+0000||ORU^R01|{control_id}|P|2.5\r\
         PID|||{patient}^^^HOSP^MR||Berg^Anna||19510302|F\r\
         PV1||I|ICU^03^A\r\
         OBR|1||X|Y|||{time}+0000\r\
         OBX|1|NM|147842^MDC_ECG_HEART_RATE^MDC|1.1.1.1|{heart_rate}|264864^MDC_DIM_BEAT_PER_MIN^MDC|50-120|{flag}|||F|||{time}+0000||||0123456789ABCDEF\r\
         OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.2|{spo2}|262688^MDC_DIM_PERCENT^MDC|90-100|N|||F|||{time}+0000\r"
    )
    .into_bytes()
}

/// The tests' clock: observation times are `seconds` after a base 20 to 30 minutes ago, on
/// a multiple of 10 minutes (so that buckets of 1 and 5 minutes start at it): near their
/// arrival, as the store's time filters expect (docs/api.md).
fn base() -> jiff::Timestamp {
    static BASE: std::sync::LazyLock<jiff::Timestamp> = std::sync::LazyLock::new(|| {
        let now = jiff::Timestamp::now().as_second();
        jiff::Timestamp::from_second(now - now.rem_euclid(600) - 1200).unwrap()
    });
    *BASE
}

fn time(seconds: u32) -> jiff::Timestamp {
    base() + jiff::SignedDuration::from_secs(i64::from(seconds))
}

/// An observation time as HL7 (`YYYYMMDDHHMMSS`, to be sent with `+0000`) and as RFC 3339.
fn at(seconds: u32) -> (String, String) {
    let time = time(seconds);
    (
        time.strftime("%Y%m%d%H%M%S").to_string(),
        time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

/// A time as the API writes it: UTC with milliseconds.
fn utc(seconds: u32) -> String {
    crate::store::utc_text(time(seconds))
}

fn ack_code(ack: &[u8]) -> String {
    let message = hl7::parse(ack).unwrap();
    String::from_utf8_lossy(message.get("MSA-1").unwrap_or_default()).into_owned()
}

#[tokio::test]
async fn every_bad_parameter_is_a_400_that_names_it() {
    let mut api = Api::new();
    let observations = "/api/v1/patients/P1/observations";
    let trends = "/api/v1/patients/P1/trends";
    for (query, parameter) in [
        ("since=yesterday", "since"),
        ("until=2026-12-01", "until"),
        (
            "since=2026-12-01T12:00:00Z&until=2026-12-01T11:00:00Z",
            "since",
        ),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("cursor=m5", "cursor"),
        ("cursor=r5", "cursor"),
        ("offset=10", "offset"),
        ("code=1&code=2", "code"),
        ("bucket=60s", "bucket"),
    ] {
        api.bad(&format!("{observations}?{query}"), parameter).await;
    }
    for (query, parameter) in [
        ("bucket=500ms", "bucket"),
        ("bucket=60", "bucket"),
        ("bucket=1d", "bucket"),
        ("bucket=soon", "bucket"),
        // A day in buckets of a second: 86,400 buckets.
        (
            "since=2026-12-01T00:00:00Z&until=2026-12-02T00:00:00Z&bucket=1s",
            "bucket",
        ),
        (
            "since=2026-12-01T12:00:00%2B01:00&until=2026-12-01T11:00:00Z",
            "since",
        ),
        ("since=2026-12-01T12:00:00+01:00", "since"),
        ("since=2999-01-01T00:00:00Z", "since"),
        ("limit=5", "limit"),
        ("cursor=r1.0", "cursor"),
    ] {
        api.bad(&format!("{trends}?{query}"), parameter).await;
    }
    for (query, parameter) in [
        ("outcome=lost", "outcome"),
        ("since=now", "since"),
        ("until=12:00", "until"),
        ("limit=-1", "limit"),
        ("cursor=r1.0", "cursor"),
        ("cursor=m0", "cursor"),
        ("page=2", "page"),
        ("bucket=60s", "bucket"),
    ] {
        api.bad(&format!("/api/v1/messages?{query}"), parameter)
            .await;
    }
    for (path, parameter) in [
        ("/api/v1/messages/abc", "id"),
        ("/api/v1/messages/0", "id"),
        ("/api/v1/messages/-3", "id"),
        ("/api/v1/messages/99999999999999999999", "id"),
        ("/api/v1/patients/%FF/observations", "key"),
        ("/api/v1/patients/%FF/trends", "key"),
        ("/api/v1/openapi.json?pretty=1", "pretty"),
    ] {
        api.bad(path, parameter).await;
    }
}

#[tokio::test]
async fn unknown_paths_patients_and_messages_are_404_problems() {
    let mut api = Api::new();
    api.send(&vitals("C1", "P1", &at(0).0, 80, 97)).await;
    for uri in [
        "/api/v1",
        "/api/v1/",
        "/api/v1/nothing",
        "/api/v1/patients/P1/nothing",
        "/api/v1/messages/1/raw",
        "/api/v1/patients/P2/observations",
        "/api/v1/patients/P2/trends",
        "/api/v1/patients/P1%2Fx/observations",
        "/api/v1/messages/2",
    ] {
        let answer = api.get(uri).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{uri}: {answer:?}");
        assert_eq!(answer.content_type, "application/problem+json", "{uri}");
        assert_eq!(answer.json["status"], 404, "{uri}");
    }
    let answer = api
        .request(
            Request::post("/api/v1/messages")
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.content_type, "application/problem+json");
}

#[tokio::test]
async fn a_token_guards_every_path_but_healthz() {
    let mut api = Api::with_token("s3cret-token");
    let with = |uri: &str, authorization: Option<&str>| {
        let mut request = Request::get(uri);
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        request.body(Body::empty()).unwrap()
    };
    for uri in [
        "/metrics",
        "/api/v1/messages",
        "/api/v1/messages/abc",
        "/api/v1/nothing",
        "/api/v1/openapi.json",
        "/healthz/",
    ] {
        for authorization in [
            None,
            Some("Bearer wrong"),
            Some("Bearer s3cret-token2"),
            Some("Basic s3cret-token"),
            Some("s3cret-token"),
        ] {
            let answer = api.request(with(uri, authorization)).await;
            assert_eq!(
                answer.status,
                StatusCode::UNAUTHORIZED,
                "{uri} {authorization:?}"
            );
            assert_eq!(answer.content_type, "application/problem+json");
            assert_eq!(answer.www_authenticate.as_deref(), Some("Bearer"));
            assert_eq!(answer.json["status"], 401);
        }
    }
    assert_eq!(api.get("/healthz").await.status, StatusCode::OK);
    for authorization in ["Bearer s3cret-token", "bearer s3cret-token"] {
        let answer = api.request(with("/metrics", Some(authorization))).await;
        assert_eq!(answer.status, StatusCode::OK, "{authorization}");
    }
    let answer = api
        .request(with("/api/v1/messages/abc", Some("Bearer s3cret-token")))
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn observations_are_paged_newest_first_while_data_arrives() {
    let mut api = Api::new();
    for i in 0..5 {
        api.send(&vitals(&format!("C{i}"), "P1", &at(i).0, 70 + i, 95))
            .await;
    }
    let page = |cursor: &Value| match cursor.as_str() {
        Some(cursor) => format!("/api/v1/patients/P1/observations?limit=4&cursor={cursor}"),
        None => "/api/v1/patients/P1/observations?limit=4".to_owned(),
    };
    let first = api.get(&page(&Value::Null)).await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    let mut seen: Vec<(i64, u64)> = Vec::new();
    let mut collect = |records: &Value| {
        for record in records.as_array().unwrap() {
            seen.push((
                record["message_id"].as_i64().unwrap(),
                record["index"].as_u64().unwrap(),
            ));
        }
    };
    collect(&first.json["records"]);
    assert_eq!(first.json["records"].as_array().unwrap().len(), 4);
    // Three more messages arrive between the pages: none of them is in a later page.
    for i in 5..8 {
        api.send(&vitals(&format!("C{i}"), "P1", &at(i).0, 70 + i, 95))
            .await;
    }
    let mut cursor = first.json["next_cursor"].clone();
    let mut n_pages = 1;
    while !cursor.is_null() {
        let answer = api.get(&page(&cursor)).await;
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        collect(&answer.json["records"]);
        cursor = answer.json["next_cursor"].clone();
        n_pages += 1;
    }
    assert_eq!(n_pages, 3, "10 records in pages of 4, none empty");
    let expected: Vec<(i64, u64)> = (1..=5).rev().flat_map(|id| [(id, 0), (id, 1)]).collect();
    assert_eq!(seen, expected, "each record once, newest message first");
    // A fresh first page starts with what arrived.
    let fresh = api.get("/api/v1/patients/P1/observations?limit=1").await;
    assert_eq!(fresh.json["records"][0]["message_id"], 8);
}

#[tokio::test]
async fn observation_records_carry_the_reading_and_filters_apply() {
    let mut api = Api::new();
    for i in 0..4 {
        api.send(&vitals(&format!("C{i}"), "P1", &at(i * 60).0, 118 + i, 95))
            .await;
    }
    api.send(&vitals("Q0", "P2", &at(0).0, 60, 99)).await;
    let answer = api.get("/api/v1/patients/P1/observations").await;
    let records = answer.json["records"].as_array().unwrap();
    assert_eq!(records.len(), 8);
    assert_eq!(answer.json["next_cursor"], Value::Null);
    let newest = &records[0];
    for (key, value) in [
        ("message_id", Value::from(4)),
        ("index", 0.into()),
        ("control_id", "C3".into()),
        ("device", "MON-1".into()),
        ("code", "147842".into()),
        ("code_text", "MDC_ECG_HEART_RATE".into()),
        ("code_system", "MDC".into()),
        ("sub_id", "1.1.1.1".into()),
        ("value_type", "NM".into()),
        ("value", "121".into()),
        ("numeric", 121.0.into()),
        ("units", "264864".into()),
        ("units_text", "MDC_DIM_BEAT_PER_MIN".into()),
        ("reference_range", "50-120".into()),
        ("abnormal_flags", "H".into()),
        ("result_status", "F".into()),
        ("equipment", "0123456789ABCDEF".into()),
        ("vital", "heart_rate".into()),
        ("state", "ok".into()),
        (
            "observed_at",
            time(180)
                .strftime("%Y-%m-%dT%H:%M:%S+00:00")
                .to_string()
                .into(),
        ),
    ] {
        assert_eq!(newest[key], value, "{key}: {newest}");
    }
    assert_eq!(newest["alert"]["level"], "warning");
    assert_eq!(newest["alert"]["text"], "> 120");
    assert!(newest["received_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(records[1]["code"], "150456");
    assert_eq!(records[1]["equipment"], "");

    let codes = api
        .get("/api/v1/patients/P1/observations?code=150456")
        .await;
    let records = codes.json["records"].as_array().unwrap();
    assert_eq!(records.len(), 4);
    assert!(records.iter().all(|r| r["code"] == "150456"));
    // Observation times at 0, 1, 2 and 3 minutes; [1, 3) holds two messages.
    let range = api
        .get(&format!(
            "/api/v1/patients/P1/observations?since={}&until={}&code=147842",
            at(60).1,
            at(180).1
        ))
        .await;
    let values: Vec<&str> = range.json["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].as_str().unwrap())
        .collect();
    assert_eq!(values, ["120", "119"]);
    // Another offset names the same instant.
    // The same instant written at +01:00: an hour later on the clock.
    let since = (time(120) + jiff::SignedDuration::from_hours(1))
        .strftime("%Y-%m-%dT%H:%M:%S+01:00")
        .to_string();
    assert!(since.ends_with("+01:00"), "{since}");
    let offset = api
        .get(&format!(
            "/api/v1/patients/P1/observations?since={}&code=147842",
            since.replace('+', "%2B")
        ))
        .await;
    assert_eq!(offset.json["records"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn percent_encoded_keys_name_their_patient() {
    let mut api = Api::new();
    api.send(&vitals("C1", "MRN/100234", &at(0).0, 80, 97))
        .await;
    api.send(&vitals("C2", "Zoë 7", &at(0).0, 80, 97)).await;
    for uri in [
        "/api/v1/patients/MRN%2F100234/observations",
        "/api/v1/patients/Zo%C3%AB%207/observations",
    ] {
        let answer = api.get(uri).await;
        assert_eq!(answer.status, StatusCode::OK, "{uri}: {answer:?}");
        assert_eq!(answer.json["records"].as_array().unwrap().len(), 2, "{uri}");
    }
    let answer = api.get("/api/v1/messages?patient=MRN%2F100234").await;
    assert_eq!(answer.json["messages"].as_array().unwrap().len(), 1);
    assert_eq!(answer.json["messages"][0]["patient"], "MRN/100234");
}

#[tokio::test]
async fn trends_summarise_each_bucket() {
    let mut api = Api::new();
    // Heart rate 70, 80, 90 in the first minute, 100 and 110 in the second; SpO2 always 95.
    for (i, (second, heart_rate)) in [(0, 70), (20, 90), (40, 80), (60, 100), (100, 110)]
        .into_iter()
        .enumerate()
    {
        api.send(&vitals(
            &format!("C{i}"),
            "P1",
            &at(second).0,
            heart_rate,
            95,
        ))
        .await;
    }
    let answer = api
        .get(&format!(
            "/api/v1/patients/P1/trends?since={}&until={}&code=147842",
            at(0).1,
            at(300).1
        ))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let json = &answer.json;
    assert_eq!(json["since"], utc(0));
    assert_eq!(json["until"], utc(300));
    assert_eq!(json["bucket_seconds"], 60.0);
    let series = json["series"].as_array().unwrap();
    assert_eq!(series.len(), 1);
    assert_eq!(series[0]["code"], "147842");
    assert_eq!(series[0]["code_text"], "MDC_ECG_HEART_RATE");
    assert_eq!(series[0]["units"], "264864");
    assert_eq!(series[0]["vital"], "heart_rate");
    let buckets = series[0]["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 2, "{buckets:?}");
    let summary = |b: &Value| {
        (
            b["start"].as_str().unwrap().to_owned(),
            b["count"].as_u64().unwrap(),
            b["min"].as_f64().unwrap(),
            b["median"].as_f64().unwrap(),
            b["max"].as_f64().unwrap(),
        )
    };
    assert_eq!(summary(&buckets[0]), (utc(0), 3, 70.0, 80.0, 90.0));
    assert_eq!(summary(&buckets[1]), (utc(60), 2, 100.0, 105.0, 110.0));
    // Every code, in buckets of 5 minutes; `since` defaults to an hour before `until`.
    let answer = api
        .get(&format!(
            "/api/v1/patients/P1/trends?until={}&bucket=5m",
            at(300).1
        ))
        .await;
    assert_eq!(
        answer.json["since"],
        crate::store::utc_text(time(300) - jiff::SignedDuration::from_hours(1))
    );
    assert_eq!(answer.json["bucket_seconds"], 300.0);
    let series = answer.json["series"].as_array().unwrap();
    let mut codes: Vec<&str> = series.iter().map(|s| s["code"].as_str().unwrap()).collect();
    codes.sort_unstable();
    assert_eq!(codes, ["147842", "150456"]);
    for s in series {
        let buckets = s["buckets"].as_array().unwrap();
        assert_eq!(buckets.len(), 1);
        assert_eq!(buckets[0]["count"], 5);
    }
    // By default the range is the hour before now.
    let before = jiff::Timestamp::now();
    let answer = api.get("/api/v1/patients/P1/trends").await;
    assert_eq!(answer.status, StatusCode::OK);
    let time = |key: &str| {
        answer.json[key]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap()
    };
    let (since, until) = (time("since"), time("until"));
    assert!(until >= before - jiff::SignedDuration::from_millis(1));
    assert!(until <= jiff::Timestamp::now());
    assert_eq!(
        since.duration_until(until),
        jiff::SignedDuration::from_hours(1)
    );
}

#[tokio::test]
async fn messages_are_filtered_and_paged() {
    let mut api = Api::new();
    api.send(&vitals("C1", "P1", &at(0).0, 80, 97)).await; // 1
    api.send(b"garbage that is no HL7").await; // 2: rejected
    api.send(&vitals("", "P1", &at(1).0, 80, 97)).await; // 3: error (MSH-10 empty)
    api.send(&vitals("C4", "P2", &at(2).0, 80, 97)).await; // 4
    let adt = format!(
        "MSH|^~\\&|ADT-1|REG|HL7IHP|IHP|{}+0000||ADT^A01|C5|P|2.5\rPID|||P2^^^HOSP^MR||Lund^Per\r",
        at(3).0
    );
    api.send(adt.as_bytes()).await; // 5
    let ids = |answer: &Answer| -> Vec<i64> {
        answer.json["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_i64().unwrap())
            .collect()
    };
    let all = api.get("/api/v1/messages").await;
    assert_eq!(ids(&all), [5, 4, 3, 2, 1]);
    assert_eq!(all.json["next_cursor"], Value::Null);
    for (query, expected) in [
        ("outcome=accepted", &[5, 4, 1][..]),
        ("outcome=refused", &[3, 2]),
        ("outcome=rejected", &[2]),
        ("outcome=error", &[3]),
        ("type=ORU%5ER01", &[4, 1]),
        ("type=ADT%5EA01", &[5]),
        ("facility=REG", &[5]),
        // MSH-3 and MSH-4 are kept only with a whole key (MSH-10 is empty in 3).
        ("facility=ICU", &[4, 1]),
        ("patient=P2", &[5, 4]),
        ("patient=P1&outcome=accepted", &[1]),
        ("patient=nobody", &[]),
    ] {
        let answer = api.get(&format!("/api/v1/messages?{query}")).await;
        assert_eq!(answer.status, StatusCode::OK, "{query}: {answer:?}");
        assert_eq!(ids(&answer), expected, "{query}");
    }
    // Received times: everything arrived in the last minute, nothing after now.
    let now = jiff::Timestamp::now();
    let minute_ago = now - jiff::SignedDuration::from_secs(60);
    let answer = api
        .get(&format!("/api/v1/messages?since={minute_ago}"))
        .await;
    assert_eq!(ids(&answer).len(), 5);
    let answer = api
        .get(&format!("/api/v1/messages?until={minute_ago}"))
        .await;
    assert_eq!(ids(&answer), Vec::<i64>::new());
    let later = now + jiff::SignedDuration::from_secs(60);
    let answer = api.get(&format!("/api/v1/messages?since={later}")).await;
    assert_eq!(ids(&answer), Vec::<i64>::new());

    // Pages of two, with a message arriving between them.
    let first = api.get("/api/v1/messages?limit=2").await;
    assert_eq!(ids(&first), [5, 4]);
    assert_eq!(first.json["next_cursor"], "m4");
    api.send(&vitals("C6", "P1", &at(4).0, 80, 97)).await; // 6
    let second = api.get("/api/v1/messages?limit=2&cursor=m4").await;
    assert_eq!(ids(&second), [3, 2]);
    let third = api
        .get(&format!(
            "/api/v1/messages?limit=2&cursor={}",
            second.json["next_cursor"].as_str().unwrap()
        ))
        .await;
    assert_eq!(ids(&third), [1]);
    assert_eq!(third.json["next_cursor"], Value::Null);
    let refused = api.get("/api/v1/messages?outcome=refused&limit=1").await;
    assert_eq!(ids(&refused), [3]);
    let next = refused.json["next_cursor"].as_str().unwrap().to_owned();
    let refused = api
        .get(&format!(
            "/api/v1/messages?outcome=refused&limit=1&cursor={next}"
        ))
        .await;
    assert_eq!(ids(&refused), [2]);
    assert_eq!(refused.json["next_cursor"], Value::Null);

    let one = &all.json["messages"][4];
    for (key, value) in [
        ("peer", Value::from("127.0.0.1:40000")),
        ("sending_application", "MON-1".into()),
        ("sending_facility", "ICU".into()),
        ("control_id", "C1".into()),
        ("message_type", "ORU^R01".into()),
        ("outcome", "accepted".into()),
        ("reason", Value::Null),
        ("ack_code", "AA".into()),
        ("patient", "P1".into()),
        ("n_received", 1.into()),
        ("replay_of", Value::Null),
        ("replayed_as", Value::Null),
    ] {
        assert_eq!(one[key], value, "{key}: {one}");
    }
    let garbage = &all.json["messages"][3];
    assert_eq!(garbage["outcome"], "rejected");
    assert_eq!(garbage["ack_code"], "AR");
    assert_eq!(garbage["sending_application"], Value::Null);
    assert!(garbage["reason"].is_string());
}

#[tokio::test]
async fn one_message_has_its_raw_text_parsed_tree_and_ack_code() {
    let mut api = Api::new();
    let accepted = vitals("C1", "P1", &at(0).0, 134, 97);
    let acks = api.send(&accepted).await;
    assert_eq!(ack_code(&acks[0]), "AA");
    let acks = api.send(b"MSH|^~\\&|MON-1|ICU\rgarbage\xff").await;
    assert_eq!(ack_code(&acks[0]), "AR");
    let error = vitals("", "P1", &at(1).0, 80, 97);
    let acks = api.send(&error).await;
    assert_eq!(ack_code(&acks[0]), "AE");

    let one = api.get("/api/v1/messages/1").await;
    assert_eq!(one.status, StatusCode::OK, "{one:?}");
    let json = &one.json;
    assert_eq!(json["id"], 1);
    assert_eq!(json["outcome"], "accepted");
    assert_eq!(json["ack_code"], "AA");
    assert_eq!(json["reason"], Value::Null);
    assert_eq!(json["version"], "2.5");
    assert_eq!(json["location"], "ICU^03^A");
    assert_eq!(json["device"], "MON-1");
    assert_eq!(json["sending_application"], "MON-1");
    assert_eq!(json["sending_facility"], "ICU");
    assert_eq!(json["patient"], "P1");
    // Segments separated by `\r`: the frame's last terminator is not part of the message.
    let text = String::from_utf8(accepted).unwrap();
    assert_eq!(json["raw"], text.trim_end_matches('\r'));
    let segments = json["parsed"]["segments"].as_array().unwrap();
    let ids: Vec<&str> = segments.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["MSH", "PID", "PV1", "OBR", "OBX", "OBX"]);
    let msh = &segments[0]["fields"];
    assert_eq!(msh[0]["position"], 1);
    assert_eq!(msh[0]["value"], "|");
    assert_eq!(msh[1]["value"], "^~\\&");
    let pid3 = segments[1]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["position"] == 3)
        .unwrap();
    assert_eq!(pid3["value"], "P1^^^HOSP^MR");
    assert_eq!(
        pid3["repetitions"],
        serde_json::json!([{"components": ["P1", "", "", "HOSP", "MR"]}])
    );
    // Empty fields are left out: PID-1 and PID-2 are.
    assert_eq!(segments[1]["fields"][0]["position"], 3);

    let rejected = api.get("/api/v1/messages/2").await;
    assert_eq!(rejected.status, StatusCode::OK);
    assert_eq!(rejected.json["outcome"], "rejected");
    assert_eq!(rejected.json["ack_code"], "AR");
    assert!(rejected.json["reason"].is_string());
    assert_eq!(rejected.json["parsed"], Value::Null);
    assert_eq!(rejected.json["raw"], "MSH|^~\\&|MON-1|ICU\rgarbage\u{FFFD}");

    let error = api.get("/api/v1/messages/3").await;
    assert_eq!(error.json["outcome"], "error");
    assert_eq!(error.json["ack_code"], "AE");
    assert!(error.json["reason"].as_str().unwrap().contains("MSH-10"));
    assert!(error.json["parsed"]["segments"].is_array());
}

#[test]
fn subcomponents_are_given_only_where_there_are_some() {
    let parsed = super::messages::Parsed::of(
        b"MSH|^~\\&|A|B|||||ORU^R01|1|P|2.5\rOBX|1|CE|a&b^c\\T\\d||x~y\r",
    )
    .unwrap();
    let obx = serde_json::to_value(&parsed.segments[1]).unwrap();
    assert_eq!(
        obx["fields"][2]["repetitions"],
        serde_json::json!([{"components": ["a&b", "c&d"], "subcomponents": [["a", "b"], ["c&d"]]}])
    );
    assert_eq!(
        obx["fields"][3]["repetitions"],
        serde_json::json!([{"components": ["x"]}, {"components": ["y"]}])
    );
}

/// An ADT^A40 merging `prior` into `survivor` (both `HOSP` identifiers).
fn a40(control_id: &str, survivor: &str, prior: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|ADT|HOSP|HL7IHP|IHP|{}+0000||ADT^A40^ADT_A39|{control_id}|P|2.5\r\
         EVN|A40\r\
         PID|||{survivor}^^^HOSP^MR||Berg^Anna||19510302|F\r\
         MRG|{prior}^^^HOSP^MR\r",
        at(0).0
    )
    .into_bytes()
}

#[tokio::test]
async fn messages_carry_the_merge_they_made_and_the_patient_list_drops_the_prior() {
    let mut api = Api::new();
    let (trigger, shutdown) = crate::shutdown::Shutdown::new();
    let live = tokio::spawn(crate::live::run(
        Arc::clone(&api.state.live),
        Arc::clone(&api.state.store) as Arc<dyn crate::store::StoreRead>,
        api.events.subscribe(),
        shutdown.into_requested(),
    ));
    for (control_id, patient, seconds) in [("A1", "A", 0), ("B1", "B", 1)] {
        let acks = api
            .send(&vitals(control_id, patient, &at(seconds).0, 80, 97))
            .await;
        assert_eq!(ack_code(&acks[0]), "AA");
    }
    let keys = |answer: &Answer| -> Vec<String> {
        let mut keys: Vec<String> = answer.json["patients"]
            .as_array()
            .map(|patients| {
                patients
                    .iter()
                    .filter_map(|p| p["key"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        keys.sort();
        keys
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let list = api.get("/api/v1/patients").await;
        if keys(&list) == ["A", "B"] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{list:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // A refused merge (the wrong way round) carries no merge, only its reason.
    let acks = api.send(&a40("M0", "B", "NOBODY")).await;
    assert_eq!(ack_code(&acks[0]), "AE");
    let acks = api.send(&a40("M1", "B", "A")).await;
    assert_eq!(ack_code(&acks[0]), "AA");

    let all = api.get("/api/v1/messages").await;
    assert_eq!(all.status, StatusCode::OK, "{all:?}");
    let listed = all.json["messages"].as_array().unwrap();
    let ids: Vec<&str> = listed
        .iter()
        .map(|m| m["control_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["M1", "M0", "B1", "A1"]);
    let merge = serde_json::json!({"prior": "A", "survivor": "B", "event": "A40"});
    assert_eq!(listed[0]["merge"], merge, "{}", listed[0]);
    assert_eq!(listed[0]["patient"], "B");
    for refused_or_plain in &listed[1..] {
        // Present and null, as the schema says.
        assert_eq!(
            refused_or_plain.get("merge"),
            Some(&Value::Null),
            "{refused_or_plain}"
        );
    }
    assert_eq!(listed[1]["outcome"], "error");
    assert!(
        listed[1]["reason"]
            .as_str()
            .unwrap()
            .contains("wrong way round"),
        "{}",
        listed[1]
    );
    // The prior's message is listed as the survivor's.
    assert_eq!(listed[3]["patient"], "B");
    let id = listed[0]["id"].as_i64().unwrap();
    let one = api.get(&format!("/api/v1/messages/{id}")).await;
    assert_eq!(one.status, StatusCode::OK, "{one:?}");
    assert_eq!(one.json["merge"], merge);
    // Filtering by the survivor finds the prior's message too.
    let of_b = api.get("/api/v1/messages?patient=B").await;
    let of_b: Vec<&str> = of_b.json["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["control_id"].as_str().unwrap())
        .collect();
    assert_eq!(of_b, ["M1", "B1", "A1"]);

    // The live patient list no longer has the prior; the survivor is there.
    loop {
        let list = api.get("/api/v1/patients").await;
        if keys(&list) == ["B"] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{list:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let prior = api.get("/api/v1/patients/A").await;
    assert_eq!(prior.status, StatusCode::NOT_FOUND, "{prior:?}");
    let records = api.get("/api/v1/patients/B/observations").await;
    assert_eq!(
        records.json["records"].as_array().map(Vec::len),
        Some(4),
        "{records:?}"
    );

    // The document describes it.
    let document = api.get("/api/v1/openapi.json").await;
    let schemas = &document.json["components"]["schemas"];
    let item = &schemas["MessageItem"];
    assert!(
        item["required"]
            .as_array()
            .unwrap()
            .contains(&Value::from("merge")),
        "{item}"
    );
    let merge_item = &schemas["MergeItem"];
    for field in ["prior", "survivor", "event"] {
        assert!(merge_item["properties"][field].is_object(), "{merge_item}");
    }
    trigger.trigger();
    live.await.unwrap();
}
