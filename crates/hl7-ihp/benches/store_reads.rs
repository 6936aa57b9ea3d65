//! The store's reads over a day of one patient's bedside vitals (one PCD-01 message with
//! seven OBX a second: 86,400 messages, 604,800 records), as the HTTP API and the live view
//! ask for them: `cargo bench -p hl7-ihp --bench store_reads`. The database is built once
//! per run in a temporary folder (about half a minute).

use std::sync::{Arc, LazyLock};

use hl7_ihp::documents::vitals::VITALS;
use hl7_ihp::store::sqlite::{SqliteOptions, SqliteReader, SqliteStore};
use hl7_ihp::store::{
    ChangeCursor, Content, MessageKey, NewMessage, ObservationData, ObservationQuery, PatientData,
    SQLITE_FILE_NAME, Store, StoreRead, TrendQuery, Verdict,
};
use sha2::{Digest, Sha256};

fn main() {
    // On a machine that is busy with other work, wall times mislead: with
    // `STORE_READS_CPU=N` the bench instead runs the 24 h trend N times and prints the CPU
    // time each took (the process's, from /proc: the read's thread and what it waits on).
    if let Some(n) = std::env::var("STORE_READS_CPU")
        .ok()
        .and_then(|n| n.parse::<u32>().ok())
    {
        cpu_times(n);
        return;
    }
    divan::main();
}

/// The process's CPU time (user and system) so far, in ms.
fn cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The fields after the command's closing parenthesis; utime and stime are 14 and 15.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // Clock ticks are 100 a second on Linux.
    ticks * 10.0
}

fn cpu_times(n: u32) {
    LazyLock::force(&FIXTURE);
    for (name, code) in [("every code", None), ("one code", Some("150456"))] {
        let mut times = Vec::new();
        for _ in 0..n {
            let (cpu, wall) = (cpu_ms(), std::time::Instant::now());
            run(FIXTURE.store.trends("100234", day(code)))
                .unwrap()
                .unwrap();
            times.push((cpu_ms() - cpu, wall.elapsed().as_secs_f64() * 1000.0));
        }
        times.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (cpu, wall) = times[times.len() / 2];
        println!("24 h trend, {name}: median CPU {cpu:.0} ms (wall {wall:.0} ms) of {n}");
    }
}

/// One message a second for a day.
const N_MESSAGES: i64 = 86_400;

/// The last message's time: a whole minute.
const END_MS: i64 = 1_800_000_000_000;

const DAY_MS: i64 = 86_400_000;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    store: Arc<dyn Store>,
    reader: Arc<dyn StoreRead>,
    _dir: tempfile::TempDir,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let path = dir.path().join(SQLITE_FILE_NAME);
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
    runtime.block_on(fill(store.as_ref()));
    // Closed and opened again, so that no checkpoint of the fill runs beside the reads.
    drop(store);
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
    let reader: Arc<dyn StoreRead> = Arc::new(SqliteReader::open(&path).unwrap());
    Fixture {
        runtime,
        store,
        reader,
        _dir: dir,
    }
});

/// A day of one patient's vitals, in batches as a busy receiver commits them.
async fn fill(store: &dyn Store) {
    let start = END_MS - (N_MESSAGES - 1) * 1000;
    let mut batch = Vec::new();
    for n in 0..N_MESSAGES {
        batch.push(message(n, start + n * 1000));
        if batch.len() == 1000 {
            store.commit(std::mem::take(&mut batch)).await.unwrap();
        }
    }
    store.commit(batch).await.unwrap();
}

/// A PCD-01 ORU^R01 as the simulator sends it, observed when received.
fn message(n: i64, at_ms: i64) -> NewMessage {
    let at = jiff::Timestamp::from_millisecond(at_ms).unwrap();
    let hl7_time = at.strftime("%Y%m%d%H%M%S+0000").to_string();
    let control_id = format!("SIM-{n}");
    let mut raw = format!(
        "MSH|^~\\&|MONITOR-03^0123456789ABCDEF^EUI-64|ICU|IHP|HOSP|{hl7_time}||ORU^R01^ORU_R01|\
         {control_id}|P|2.6|||NE|AL||UNICODE UTF-8|||IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO\r\
         PID|||100234^^^HOSP^MR||Berg^Anna^^^^^L||19510302|F\r\
         PV1||I|ICU^03^A\r\
         OBR|1|{control_id}^MONITOR-03|{control_id}^MONITOR-03|182777000^monitoring of patient^SCT|||{hl7_time}\r"
    );
    let observations: Vec<ObservationData> = VITALS
        .iter()
        .enumerate()
        .map(|(index, vital)| {
            // A value that moves, so that buckets have spread.
            let (lo, hi) = vital.normal;
            let value = lo + (hi - lo) * (((n * 7 + index as i64) % 100) as f64 / 100.0);
            let text = format!("{value:.1}");
            let mut units = vital.units.split('^');
            let (units_code, units_text) = (units.next().unwrap(), units.next().unwrap());
            raw.push_str(&format!(
                "OBX|{}|NM|{}^{}^MDC|{}|{text}|{}|{lo}-{hi}||||F|||{hl7_time}||||0123456789ABCDEF^MONITOR-03^EUI-64\r",
                index + 1,
                vital.code,
                vital.refid,
                vital.containment,
                vital.units,
            ));
            ObservationData {
                index: index as u32,
                value_type: "NM".into(),
                code: vital.code.into(),
                code_text: vital.refid.into(),
                code_system: "MDC".into(),
                sub_id: vital.containment.into(),
                numeric: text.parse().ok(),
                value: text,
                units: units_code.into(),
                units_text: units_text.into(),
                reference_range: format!("{lo}-{hi}"),
                abnormal_flags: String::new(),
                status: "F".into(),
                observed_at: at.strftime("%Y-%m-%dT%H:%M:%S+00:00").to_string(),
                observed_ms: at_ms,
                equipment: "0123456789ABCDEF".into(),
                mark: None,
            }
        })
        .collect();
    NewMessage {
        received_at: at,
        peer: "10.0.0.3:50122".into(),
        peer_identity: None,
        replay_of: None,
        hash: Sha256::digest(raw.as_bytes()).into(),
        key: Some(MessageKey {
            sending_application: "MONITOR-03^0123456789ABCDEF^EUI-64".into(),
            sending_facility: "ICU".into(),
            control_id,
            sent_ms: Some(at_ms),
        }),
        raw: raw.into_bytes(),
        verdict: Verdict::Accept,
        ack_code: Some("AA".into()),
        content: Some(Content {
            message_type: "ORU".into(),
            trigger: "R01".into(),
            version: "2.6".into(),
            patient: Some(PatientData {
                key: "100234".into(),
                id: "100234".into(),
                assigning_authority: "HOSP".into(),
                identifiers: "100234^^^HOSP^MR".into(),
                name: "Anna Berg".into(),
                birth_date: "1951-03-02".into(),
                sex: "F".into(),
                is_update: false,
            }),
            device: "MONITOR-03^0123456789ABCDEF^EUI-64".into(),
            location: Some("ICU^03^A".into()),
            observations,
            merge: None,
            alarms: Vec::new(),
        }),
    }
}

fn day(code: Option<&str>) -> TrendQuery {
    TrendQuery {
        code: code.map(str::to_owned),
        since_ms: END_MS + 1000 - DAY_MS,
        until_ms: END_MS + 1000,
        bucket_ms: 60_000,
    }
}

fn run<T>(read: impl std::future::Future<Output = T>) -> T {
    FIXTURE.runtime.block_on(read)
}

/// The target: under 250 ms on a 2-core machine.
#[divan::bench(sample_count = 10, sample_size = 1)]
fn trend_24h_every_code() -> usize {
    let series = run(FIXTURE.store.trends("100234", day(None)))
        .unwrap()
        .unwrap();
    assert_eq!(series.len(), 7);
    // A day that does not start on a whole minute touches 1,441 minutes.
    assert_eq!(series[0].buckets.len(), 1441);
    series.len()
}

#[divan::bench(sample_count = 10, sample_size = 1)]
fn trend_24h_one_code() -> usize {
    let series = run(FIXTURE.store.trends("100234", day(Some("150456"))))
        .unwrap()
        .unwrap();
    series[0].buckets.len()
}

#[divan::bench(sample_count = 10, sample_size = 1)]
fn trend_24h_every_code_read_only() -> usize {
    let series = run(FIXTURE.reader.trends("100234", day(None)))
        .unwrap()
        .unwrap();
    series.len()
}

#[divan::bench(sample_count = 10, sample_size = 1)]
fn trend_1h_every_code() -> usize {
    let query = TrendQuery {
        since_ms: END_MS + 1000 - 3_600_000,
        ..day(None)
    };
    run(FIXTURE.store.trends("100234", query))
        .unwrap()
        .unwrap()
        .len()
}

fn page(code: Option<&str>, until_ms: Option<i64>) -> ObservationQuery {
    ObservationQuery {
        code: code.map(str::to_owned),
        since_ms: None,
        until_ms,
        after: None,
        limit: 100,
    }
}

#[divan::bench(sample_count = 20)]
fn observations_newest_page() -> usize {
    run(FIXTURE.store.observations("100234", page(None, None)))
        .unwrap()
        .unwrap()
        .len()
}

#[divan::bench(sample_count = 20)]
fn observations_one_code_12h_ago() -> usize {
    let query = page(Some("150344"), Some(END_MS - DAY_MS / 2));
    let records = run(FIXTURE.store.observations("100234", query))
        .unwrap()
        .unwrap();
    assert_eq!(records.len(), 100);
    records.len()
}

#[divan::bench(sample_count = 20)]
fn feed_1000_messages() -> usize {
    let after = ChangeCursor::at(N_MESSAGES - 1000);
    run(FIXTURE.store.feed(after, 1000)).unwrap().messages.len()
}

#[divan::bench(sample_count = 20)]
fn patient_feed_60() -> usize {
    run(FIXTURE.store.patient_feed("100234", 60))
        .unwrap()
        .unwrap()
        .1
        .len()
}
