//! Parser throughput: ours against hl7kit and hl7-parser, on an IHE PCD-01 message and the corpus.
//!
//! Run with `cargo bench -p hl7 --bench parse`. Every benchmark counts the input bytes, so
//! divan prints MB/s next to the time. Each library does the same work:
//!
//! - `parse`: bytes in, a parsed message out (whatever the library's API needs on the way:
//!   hl7kit copies the bytes into a `String`, hl7-parser wants a `&str`, so both pay for
//!   UTF-8 validation here while ours validates only the fields it decodes);
//! - `parse_extract`: parse, then read the fields [`hl7::extract::extract`] reads (MSH,
//!   the first PID and PV1, OBR-7 and fifteen fields of every OBX), escapes decoded, NM
//!   values as numbers, into a structure. Ours also parses the MSH-7, OBR-7 and OBX-14
//!   times into timestamps, which the others skip: the comparison leans in their favour;
//! - `ack` (ours only): parse, then build the ACK.
//!
//! The corpus is every file of `$HL7_CORPUS` (default `../../../shared/corpus` from this
//! crate) that all three libraries parse to the same segments and read without panicking;
//! one iteration goes through all of them.

use std::borrow::Cow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::LazyLock;

use divan::counter::BytesCount;
use divan::{Bencher, black_box};

/// A bedside monitor's IHE PCD-01 report (PCD-01.md): v2.6 ORU^R01^ORU_R01 with six metrics,
/// each with its MDC code, containment path, UTC-offset time and the monitor's EUI-64.
const PCD01: &[u8] = b"MSH|^~\\&|MONITOR^0012A3FFFE45B6C7^EUI-64|ICU_GATEWAY|HL7IHP|HOSP|20261126101500+0100||ORU^R01^ORU_R01|MON000418|P|2.6|||AL|NE||UNICODE UTF-8|||IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO\r\
PID|||4711023^^^HOSP^MR||Doe^Jane^Q^^Dr.||19620315|F\r\
PV1||I|ICU^^BED07^HOSP\r\
OBR|1|MON000418^MONITOR|0012A3FFFE45B6C7^MONITOR^0012A3FFFE45B6C7^EUI-64|69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|||20261126101458+0100\r\
OBX|1|NM|147842^MDC_ECG_HEART_RATE^MDC|1.2.1.1|72|264864^MDC_DIM_BEAT_PER_MIN^MDC|50-120||||R|||20261126101458+0100||||0012A3FFFE45B6C7^EUI-64\r\
OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.3.1.1|97|262688^MDC_DIM_PERCENT^MDC|90-100||||R|||20261126101458+0100||||0012A3FFFE45B6C7^EUI-64\r\
OBX|3|NM|149530^MDC_PULS_OXIM_PULS_RATE^MDC|1.3.1.2|73|264864^MDC_DIM_BEAT_PER_MIN^MDC|50-120||||R|||20261126101458+0100||||0012A3FFFE45B6C7^EUI-64\r\
OBX|4|NM|151562^MDC_RESP_RATE^MDC|1.4.1.1|16|264928^MDC_DIM_RESP_PER_MIN^MDC|8-30||||R|||20261126101458+0100||||0012A3FFFE45B6C7^EUI-64\r\
OBX|5|NM|150021^MDC_PRESS_BLD_NONINV_SYS^MDC|1.5.1.1|148|266016^MDC_DIM_MMHG^MDC|90-140|H|||R|||20261126101312+0100||||0012A3FFFE45B6C7^EUI-64\r\
OBX|6|NM|150344^MDC_TEMP^MDC|1.6.1.1|36.8|268192^MDC_DIM_DEGC^MDC|36.0-38.0||||R|||20261126101458+0100||||0012A3FFFE45B6C7^EUI-64\r";

/// The inputs a benchmark runs over: the PCD-01 message alone, or every corpus file.
struct Input {
    files: Vec<Vec<u8>>,
    n_bytes: usize,
}

impl Input {
    fn new(files: Vec<Vec<u8>>) -> Self {
        let n_bytes = files.iter().map(Vec::len).sum();
        Self { files, n_bytes }
    }
}

static PCD01_INPUT: LazyLock<Input> = LazyLock::new(|| Input::new(vec![PCD01.to_vec()]));

/// The corpus files all three libraries parse; `None` when the corpus folder is absent.
static CORPUS: LazyLock<Option<Input>> = LazyLock::new(load_corpus);

fn corpus_dir() -> PathBuf {
    match std::env::var_os("HL7_CORPUS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus"),
    }
}

fn load_corpus() -> Option<Input> {
    let dir = corpus_dir();
    let entries = std::fs::read_dir(&dir).ok()?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.is_file())
        .collect();
    paths.sort();
    let n_read = paths.len();
    let files: Vec<Vec<u8>> = paths
        .iter()
        .filter_map(|path| std::fs::read(path).ok())
        .filter(|bytes| all_three_parse(bytes))
        .collect();
    let input = Input::new(files);
    println!(
        "corpus {}: {} of {n_read} files parse in all three libraries, {} bytes",
        dir.display(),
        input.files.len(),
        input.n_bytes,
    );
    Some(input)
}

/// True when all three parse the file as one message with the same segments and MSH-10,
/// and reading it does not panic (hl7-parser's unescaping indexes bytes by character
/// count, which panics on some non-ASCII text).
fn all_three_parse(bytes: &[u8]) -> bool {
    let Ok(ours) = hl7::parse(bytes) else {
        return false;
    };
    let Ok(kit) = ::hl7kit::Message::parse_bytes(bytes) else {
        return false;
    };
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    let Ok(other) = ::hl7_parser::Message::parse_with_lenient_newlines(text, true) else {
        return false;
    };
    let ours_ids: Vec<String> = ours.segments().map(|s| s.id().to_string()).collect();
    let kit_ids: Vec<&str> = kit.segments().map(|s| s.name()).collect();
    let other_ids: Vec<&str> = other.segments().map(|s| s.name).collect();
    if ours_ids != kit_ids || ours_ids != other_ids {
        return false;
    }
    let control_id = ours.get("MSH-10").unwrap_or(b"");
    let kit_control_id = kit.get("MSH-10").unwrap_or("");
    let other_control_id = other
        .segment("MSH")
        .and_then(|msh| msh.field(10))
        .map_or("", |field| field.raw_value());
    if control_id != kit_control_id.as_bytes() || control_id != other_control_id.as_bytes() {
        return false;
    }
    catch_unwind(AssertUnwindSafe(|| {
        black_box(hl7kit::read(&kit));
        black_box(hl7_parser::read(&other));
    }))
    .is_ok()
}

/// The argument names: `pcd01`, and `corpus` when the corpus folder is there.
fn inputs() -> Vec<&'static str> {
    if CORPUS.is_some() {
        vec!["pcd01", "corpus"]
    } else {
        println!(
            "note: no corpus at {} (set HL7_CORPUS): skipping the corpus benchmarks",
            corpus_dir().display()
        );
        vec!["pcd01"]
    }
}

fn input(name: &str) -> &'static Input {
    match name {
        "corpus" => CORPUS
            .as_ref()
            .expect("corpus benches run only when it loaded"),
        _ => &PCD01_INPUT,
    }
}

/// Runs `f` over every file of the input once per iteration, counting its bytes.
fn run<R>(bencher: Bencher<'_, '_>, name: &str, f: impl Fn(&'static [u8]) -> R + Sync) {
    let input = input(name);
    bencher.counter(BytesCount::new(input.n_bytes)).bench(|| {
        for file in &input.files {
            black_box(f(black_box(file.as_slice())));
        }
    });
}

/// What the other libraries read, in the shape of [`hl7::extract::Extract`]: the same fields,
/// as text with escapes decoded.
#[derive(Debug, Default)]
struct Fields<'a> {
    header: Vec<Cow<'a, str>>,
    patient: Vec<Cow<'a, str>>,
    location: Option<Cow<'a, str>>,
    request_time: Option<Cow<'a, str>>,
    observations: Vec<Observation<'a>>,
}

#[derive(Debug)]
#[expect(dead_code, reason = "the benchmarks read it only through black_box")]
struct Observation<'a> {
    fields: Vec<Cow<'a, str>>,
    numeric: Option<f64>,
}

/// The fields of MSH that `extract` reads: (field, component), 0 for the whole field.
const MSH_FIELDS: [(usize, usize); 14] = [
    (3, 0),
    (4, 0),
    (5, 0),
    (6, 0),
    (7, 1),
    (9, 1),
    (9, 2),
    (9, 3),
    (10, 0),
    (11, 1),
    (12, 1),
    (15, 0),
    (16, 0),
    (18, 0),
];

/// The fields of OBX that `extract` reads besides OBX-5 (read by value type) and OBX-8 (all
/// repetitions).
const OBX_FIELDS: [(usize, usize); 13] = [
    (1, 0),
    (2, 0),
    (3, 1),
    (3, 2),
    (3, 3),
    (4, 0),
    (6, 1),
    (6, 2),
    (6, 3),
    (7, 0),
    (11, 0),
    (14, 1),
    (18, 1),
];

fn number(text: &str) -> Option<f64> {
    text.trim().parse().ok()
}

mod ours {
    use divan::Bencher;
    use hl7::ack::{AckCode, AckOptions, build_ack};

    #[divan::bench(args = super::inputs())]
    fn parse(bencher: Bencher<'_, '_>, input: &str) {
        super::run(bencher, input, |bytes| hl7::parse(bytes).ok());
    }

    #[divan::bench(args = super::inputs())]
    fn parse_extract(bencher: Bencher<'_, '_>, input: &str) {
        super::run(bencher, input, |bytes| {
            let message = hl7::parse(bytes).ok()?;
            Some(
                divan::black_box(hl7::extract::extract(&message))
                    .observations
                    .len(),
            )
        });
    }

    #[divan::bench(args = super::inputs())]
    fn ack(bencher: Bencher<'_, '_>, input: &str) {
        let options = AckOptions {
            application: "HL7IHP",
            facility: "HOSP",
            control_id: "ACK-000001",
            time: "20261126101501+0100",
        };
        super::run(bencher, input, |bytes| {
            let message = hl7::parse(bytes).ok()?;
            Some(build_ack(&message, AckCode::CA, None, &options))
        });
    }
}

mod hl7kit {
    use std::borrow::Cow;

    use divan::Bencher;
    use hl7kit::{Field, Message};

    use super::{Fields, MSH_FIELDS, OBX_FIELDS, Observation, number};

    #[divan::bench(args = super::inputs())]
    fn parse(bencher: Bencher<'_, '_>, input: &str) {
        super::run(bencher, input, |bytes| Message::parse_bytes(bytes).ok());
    }

    #[divan::bench(args = super::inputs())]
    fn parse_extract(bencher: Bencher<'_, '_>, input: &str) {
        super::run(bencher, input, |bytes| {
            let message = Message::parse_bytes(bytes).ok()?;
            Some(divan::black_box(read(&message)).observations.len())
        });
    }

    /// Field `n`, or component `c` of its first repetition, escapes decoded; empty when absent.
    fn text<'m>(field: Option<Field<'m>>, c: usize) -> Cow<'m, str> {
        let Some(field) = field else {
            return Cow::Borrowed("");
        };
        if c == 0 {
            return field.decoded();
        }
        field
            .component(c)
            .map_or(Cow::Borrowed(""), |component| component.decoded())
    }

    pub(super) fn read(message: &Message) -> Fields<'_> {
        let mut out = Fields::default();
        for segment in message.segments() {
            match segment.name() {
                "MSH" if segment.index() == 0 => {
                    for (n, c) in MSH_FIELDS {
                        out.header.push(text(segment.field(n), c));
                    }
                }
                "PID" if out.patient.is_empty() => {
                    if let Some(ids) = segment.field(3) {
                        for repetition in ids.repetitions() {
                            let id = repetition.component(1).map(|c| c.decoded());
                            if let Some(id) = id.filter(|id| !id.trim().is_empty()) {
                                out.patient.push(id);
                                for c in [4, 5] {
                                    out.patient.push(
                                        repetition
                                            .component(c)
                                            .map_or(Cow::Borrowed(""), |c| c.decoded()),
                                    );
                                }
                            }
                        }
                    }
                    let family = segment
                        .field(5)
                        .and_then(|f| f.component(1))
                        .and_then(|c| c.subcomponent(1))
                        .map_or(Cow::Borrowed(""), |s| s.decoded());
                    out.patient.push(family);
                    for c in 2..=5 {
                        out.patient.push(text(segment.field(5), c));
                    }
                    out.patient.push(text(segment.field(7), 1));
                    out.patient.push(text(segment.field(8), 0));
                }
                "PV1" if out.location.is_none() => {
                    out.location = Some(text(segment.field(3), 0));
                }
                "OBR" => out.request_time = Some(text(segment.field(7), 1)),
                "OBX" => {
                    let mut fields: Vec<Cow<'_, str>> = OBX_FIELDS
                        .iter()
                        .map(|&(n, c)| text(segment.field(n), c))
                        .collect();
                    let value = text(segment.field(5), 0);
                    let numeric = (fields[1] == "NM").then(|| number(&value)).flatten();
                    fields.push(value);
                    if let Some(flags) = segment.field(8) {
                        fields.extend(flags.repetitions().map(|r| r.decoded()));
                    }
                    out.observations.push(Observation { fields, numeric });
                }
                _ => {}
            }
        }
        out
    }
}

mod hl7_parser {
    use std::borrow::Cow;

    use divan::Bencher;
    use hl7_parser::Message;
    use hl7_parser::message::{Field, Segment, Separators};

    use super::{Fields, MSH_FIELDS, OBX_FIELDS, Observation, number};

    pub(super) fn parse_bytes(bytes: &[u8]) -> Option<Message<'_>> {
        let text = std::str::from_utf8(bytes).ok()?;
        // Lenient: the corpus has LF and CRLF terminators, which ours and hl7kit accept too.
        Message::parse_with_lenient_newlines(text, true).ok()
    }

    #[divan::bench(args = super::inputs())]
    fn parse(bencher: Bencher<'_, '_>, input: &str) {
        super::run(bencher, input, parse_bytes);
    }

    #[divan::bench(args = super::inputs())]
    fn parse_extract(bencher: Bencher<'_, '_>, input: &str) {
        super::run(bencher, input, |bytes| {
            let message = parse_bytes(bytes)?;
            Some(divan::black_box(read(&message)).observations.len())
        });
    }

    /// Escapes decoded; the library decodes through `Display`, so only values that hold the
    /// escape character pay for a `String`, as ours and hl7kit borrow the others.
    fn decoded<'m>(separators: &Separators, raw: &'m str) -> Cow<'m, str> {
        if raw.contains(separators.escape) {
            Cow::Owned(separators.decode(raw).to_string())
        } else {
            Cow::Borrowed(raw)
        }
    }

    fn text<'m>(separators: &Separators, field: Option<&Field<'m>>, c: usize) -> Cow<'m, str> {
        let raw = match (field, c) {
            (None, _) => "",
            (Some(field), 0) => field.raw_value(),
            (Some(field), c) => field.component(c).map_or("", |c| c.raw_value()),
        };
        decoded(separators, raw)
    }

    fn field<'s, 'm>(segment: &'s Segment<'m>, n: usize) -> Option<&'s Field<'m>> {
        segment.field(n)
    }

    pub(super) fn read<'m>(message: &Message<'m>) -> Fields<'m> {
        let separators = &message.separators;
        let mut out = Fields::default();
        for (index, segment) in message.segments().enumerate() {
            match segment.name {
                "MSH" if index == 0 => {
                    for (n, c) in MSH_FIELDS {
                        out.header.push(text(separators, field(segment, n), c));
                    }
                }
                "PID" if out.patient.is_empty() => {
                    if let Some(ids) = field(segment, 3) {
                        for repetition in ids.repeats() {
                            let id = repetition.component(1).map(|c| c.raw_value());
                            let id = id.map(|id| decoded(separators, id));
                            if let Some(id) = id.filter(|id| !id.trim().is_empty()) {
                                out.patient.push(id);
                                for c in [4, 5] {
                                    let raw = repetition.component(c).map_or("", |c| c.raw_value());
                                    out.patient.push(decoded(separators, raw));
                                }
                            }
                        }
                    }
                    let family = field(segment, 5)
                        .and_then(|f| f.component(1))
                        .and_then(|c| c.subcomponent(1))
                        .map_or("", |s| s.raw_value());
                    out.patient.push(decoded(separators, family));
                    for c in 2..=5 {
                        out.patient.push(text(separators, field(segment, 5), c));
                    }
                    out.patient.push(text(separators, field(segment, 7), 1));
                    out.patient.push(text(separators, field(segment, 8), 0));
                }
                "PV1" if out.location.is_none() => {
                    out.location = Some(text(separators, field(segment, 3), 0));
                }
                "OBR" => out.request_time = Some(text(separators, field(segment, 7), 1)),
                "OBX" => {
                    let mut fields: Vec<Cow<'m, str>> = OBX_FIELDS
                        .iter()
                        .map(|&(n, c)| text(separators, field(segment, n), c))
                        .collect();
                    let value = text(separators, field(segment, 5), 0);
                    let numeric = (fields[1] == "NM").then(|| number(&value)).flatten();
                    fields.push(value);
                    if let Some(flags) = field(segment, 8) {
                        fields.extend(flags.repeats().map(|r| decoded(separators, r.raw_value())));
                    }
                    out.observations.push(Observation { fields, numeric });
                }
                _ => {}
            }
        }
        out
    }
}

fn main() {
    // The bench is only meaningful if the message is what it claims to be.
    let message = hl7::parse(PCD01).expect("the PCD-01 message parses");
    let extract = hl7::extract::extract(&message);
    assert_eq!(extract.observations.len(), 6);
    assert!(
        extract
            .observations
            .iter()
            .all(|o| o.numeric.is_some() && o.time.is_some())
    );
    let kit = ::hl7kit::Message::parse_bytes(PCD01).expect("hl7kit parses the PCD-01 message");
    let other = hl7_parser::parse_bytes(PCD01).expect("hl7-parser parses the PCD-01 message");
    assert_eq!(hl7kit::read(&kit).observations.len(), 6);
    assert_eq!(hl7_parser::read(&other).observations.len(), 6);
    println!("pcd01: {} bytes", PCD01.len());
    LazyLock::force(&CORPUS);
    divan::main();
}
