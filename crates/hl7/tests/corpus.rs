//! Conformance tests over the shared reference corpus: a golden summary of every file, the
//! values other projects' test suites assert, the malformed inputs, and a differential check
//! against python-hl7's parse of the same bytes.
//!
//! The corpus is data we did not write and do not copy into the repository: it is read from
//! `HL7_CORPUS`, or from `shared/corpus` beside the clone. Without it these tests say so and
//! pass, except under CI (`CI=true`), where a missing corpus is a failure. Where the project's
//! rules (docs/acks.md and the README's parser section) differ from what a source project expects, the expectation is
//! kept in an explicit list below with the reason, and the tests check that exactly those differ.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path as FsPath;

use hl7::{Batch, Charset, Message, ParseError, ParseErrorKind, Path, SegmentId, Tree};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Where the corpus is, and reading it.

#[path = "support/corpus_dir.rs"]
mod support;
use support::corpus_dir;
#[path = "support/golden.rs"]
mod golden;
use golden::check_golden;

/// Every `*.hl7` file of the corpus, sorted by name.
fn hl7_files(dir: &FsPath) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus folder entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "hl7"))
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            (name, bytes)
        })
        .collect();
    files.sort();
    // An empty folder would make every test below pass without checking anything.
    assert!(!files.is_empty(), "no *.hl7 files in {}", dir.display());
    files
}

fn read_corpus_file(dir: &FsPath, name: &str) -> Vec<u8> {
    let path = dir.join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The objects of a JSON-lines file.
fn json_lines(path: &FsPath) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), i + 1))
        })
        .collect()
}

fn str_field<'v>(value: &'v Value, key: &str) -> &'v str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string {key:?} in {value}"))
}

/// `parse_batch`, turning a panic into a failure that names the file.
fn parse_guarded<'a>(name: &str, bytes: &'a [u8]) -> Result<Batch<'a>, ParseError> {
    panic::catch_unwind(|| hl7::parse_batch(bytes))
        .unwrap_or_else(|_| panic!("{name}: parse_batch panicked"))
}

// ---------------------------------------------------------------------------------------------
// a. Golden summary of every file.

const GOLDEN: &str = "tests/golden/corpus.txt";

#[test]
fn golden_summary_of_every_file() {
    let Some(dir) = corpus_dir() else { return };
    let mut actual = String::from(
        "# hl7::parse_batch over every corpus file (tests/corpus.rs; UPDATE_EXPECT=1 rewrites).\n\
         # Per message: delimiters, charset from MSH-18, segment count, segment ids (X*n = n in a row).\n",
    );
    for (name, bytes) in hl7_files(&dir) {
        actual.push('\n');
        actual.push_str(&summary(&name, &bytes));
    }
    check_golden(
        &FsPath::new(env!("CARGO_MANIFEST_DIR")).join(GOLDEN),
        &actual,
    );
}

/// A few lines that say what the parser made of a file, without its data.
fn summary(name: &str, bytes: &[u8]) -> String {
    let mut out = format!("{name}\n");
    match parse_guarded(name, bytes) {
        Err(error) => writeln!(out, "  error: {error}").unwrap(),
        Ok(batch) => {
            writeln!(out, "  ok: {}", counted(batch.messages().len(), "message")).unwrap();
            let envelope = batch.envelope();
            if envelope.segment_count() > 0 {
                writeln!(out, "  envelope: {}", segment_ids(envelope)).unwrap();
            }
            for (i, message) in batch.messages().iter().enumerate() {
                let delimiters = message.delimiters();
                let charset = if message.charset_known() {
                    format!("{:?}", message.charset())
                } else {
                    format!("{:?} (MSH-18 not understood)", message.charset())
                };
                writeln!(
                    out,
                    "  {}: {}{} {charset}, {}: {}",
                    i + 1,
                    char::from(delimiters.field),
                    delimiters.encoding_characters(),
                    counted(message.segment_count(), "segment"),
                    segment_ids(message),
                )
                .unwrap();
            }
        }
    }
    out
}

fn counted(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// The segment ids in order, runs of one id written `OBX*5`.
fn segment_ids(message: &Message<'_>) -> String {
    let mut runs: Vec<(SegmentId, usize)> = Vec::new();
    for segment in message.segments() {
        match runs.last_mut() {
            Some((id, n)) if *id == segment.id() => *n += 1,
            _ => runs.push((segment.id(), 1)),
        }
    }
    let words: Vec<String> = runs
        .into_iter()
        .map(|(id, n)| {
            if n == 1 {
                id.to_string()
            } else {
                format!("{id}*{n}")
            }
        })
        .collect();
    words.join(" ")
}

// ---------------------------------------------------------------------------------------------
// b. Values asserted by the source projects' test suites (expected/assertions.jsonl).

/// Assertions where our rules give another answer than the source test, as
/// (file, path, reason). The test fails if one of these agrees or another one differs.
///
/// Empty today: every value, count and text the source suites assert is also ours. (The
/// hl7apy file whose three-character MSH-2 we accept is an error expectation, handled with
/// the other inputs of errors.jsonl below.)
const ASSERTION_DIFFERENCES: &[(&str, &str, &str)] = &[];

#[test]
fn assertions_from_source_test_suites() {
    let Some(dir) = corpus_dir() else { return };
    let assertions = json_lines(&dir.join("expected/assertions.jsonl"));
    let mut n_checked = 0;
    let mut skipped: Vec<String> = Vec::new();
    let mut differing: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut failures: Vec<String> = Vec::new();
    for assertion in &assertions {
        let file = str_field(assertion, "file");
        let path = str_field(assertion, "path");
        let kind = str_field(assertion, "kind");
        let expected = &assertion["value"];
        if path.ends_with("(ack)") {
            // A value of the ACK the receiver sends back, not of the message: the receiver's
            // end-to-end tests cover it.
            skipped.push(format!("{file} {path}"));
            continue;
        }
        if !matches!(
            kind,
            "raw" | "raw-field-text" | "unescaped" | "decoded-cp1252"
        ) {
            failures.push(format!(
                "{file} {path}: unknown kind {kind:?}; decide how to check it"
            ));
            continue;
        }
        let bytes = read_corpus_file(&dir, file);
        let actual = match parse_guarded(file, &bytes) {
            Ok(batch) => {
                actual_value(&batch, path, kind).unwrap_or_else(|e| Value::String(format!("<{e}>")))
            }
            Err(error) => Value::String(format!("<parse error: {error}>")),
        };
        n_checked += 1;
        if &actual != expected {
            differing.insert(
                (file.to_owned(), path.to_owned()),
                format!("{kind}: expected {expected}, we give {actual}"),
            );
        }
    }
    let allowed: BTreeSet<(String, String)> = ASSERTION_DIFFERENCES
        .iter()
        .map(|(file, path, _)| ((*file).to_owned(), (*path).to_owned()))
        .collect();
    for (key, detail) in &differing {
        if !allowed.contains(key) {
            failures.push(format!("{} {}: {detail}", key.0, key.1));
        }
    }
    for key in &allowed {
        if !differing.contains_key(key) {
            failures.push(format!(
                "{} {}: listed in ASSERTION_DIFFERENCES but agrees now; remove it from the list",
                key.0, key.1
            ));
        }
    }
    eprintln!(
        "assertions: {n_checked} checked, {} agree, {} differ (listed), {} skipped (receiver ACK: {})",
        n_checked - differing.len(),
        differing.len(),
        skipped.len(),
        skipped.join(", "),
    );
    assert!(n_checked > 0, "no assertion was checked");
    assert!(
        failures.is_empty(),
        "{} assertion(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// What we give for one assertion path, as the JSON value the assertion holds: a string for
/// values, a number for counts, a bool for `#repetitions>1`, null for an absent segment.
fn actual_value(batch: &Batch<'_>, path: &str, kind: &str) -> Result<Value, String> {
    let all: Vec<&Message<'_>> = std::iter::once(batch.envelope())
        .chain(batch.messages())
        .collect();
    let count = |keep: &dyn Fn(&hl7::Segment<'_, '_>) -> bool| -> Value {
        let n: usize = all
            .iter()
            .map(|message| message.segments().filter(|s| keep(s)).count())
            .sum();
        Value::from(n)
    };
    match path {
        "#segments" => return Ok(count(&|_| true)),
        // We skip blank lines, so every segment we report has content; the check still
        // counts them by content so that a change to that rule shows here.
        "#segments(non-empty)" => return Ok(count(&|s| !s.raw().trim_ascii().is_empty())),
        "#messages" => return Ok(Value::from(batch.messages().len())),
        // python-hl7's File holds one Batch per BHS, or a single implicit one when it has
        // no BHS at all.
        "#batches" => {
            let n = batch.envelope().segments_by_id("BHS").count();
            return Ok(Value::from(n.max(1)));
        }
        _ => {}
    }
    if let Some(id) = path
        .strip_prefix("#segments(")
        .and_then(|rest| rest.strip_suffix(')'))
    {
        return Ok(count(&|s| s.id().as_str() == id));
    }
    if let Some(field_path) = path.strip_suffix("#repetitions>1") {
        let field_path: Path = field_path.parse().map_err(|e| format!("{e}"))?;
        let Some((message, local)) = locate(batch, &field_path) else {
            return Ok(Value::Null);
        };
        let segment = message
            .segments_by_id(local.segment.as_str())
            .nth(local.occurrence - 1)
            .ok_or("segment absent")?;
        return Ok(Value::Bool(
            segment.field(local.field).repetitions().count() > 1,
        ));
    }
    let path: Path = path.parse().map_err(|e| format!("{e}"))?;
    let Some((message, local)) = locate(batch, &path) else {
        return Ok(Value::Null);
    };
    let value = match kind {
        "raw" | "raw-field-text" => {
            message
                .query(&local)
                .map(|raw| match std::str::from_utf8(raw) {
                    Ok(text) => text.to_owned(),
                    Err(_) => format!("<not UTF-8: {}>", raw.escape_ascii()),
                })
        }
        _ => message
            .get_text(&local.to_string())
            .map(|text| text.into_owned()),
    };
    Ok(value.map_or(Value::Null, Value::String))
}

/// Resolves a path over a whole file: FHS, BHS, BTS and FTS live in the envelope, and the
/// occurrence of any other segment counts across the file's messages (`MSH[2]` is the second
/// message's header), as the source suites mean it. Returns the message and the path within it.
fn locate<'b, 'a>(batch: &'b Batch<'a>, path: &Path) -> Option<(&'b Message<'a>, Path)> {
    if matches!(&path.segment.0, b"FHS" | b"BHS" | b"BTS" | b"FTS") {
        return Some((batch.envelope(), *path));
    }
    let mut occurrence = path.occurrence;
    for message in batch.messages() {
        let n = message.segments_by_id(path.segment.as_str()).count();
        if occurrence <= n {
            return Some((
                message,
                Path {
                    occurrence,
                    ..*path
                },
            ));
        }
        occurrence -= n;
    }
    None
}

// ---------------------------------------------------------------------------------------------
// c. Malformed and special inputs (expected/errors.jsonl).

/// What our rules say about an input the corpus lists with an expected error.
#[derive(Clone, Copy, Debug)]
enum Verdict {
    /// Rejected with this kind of error.
    Reject(ParseErrorKind),
    /// Accepted, although the source expects an error; the reason says why.
    Accept(&'static str),
}

/// Every non-fuzz file of errors.jsonl with our verdict. NHapi's fuzz inputs are not listed:
/// for them the contract is only "no panic, a message or a typed error", and the golden file
/// records which.
const VERDICTS: &[(&str, Verdict)] = &[
    // python-hl7's batch and file structure errors; ours carry the same meaning.
    (
        "python-hl7__bad-batch-no-msh.hl7",
        Verdict::Reject(ParseErrorKind::SegmentOutsideMessage),
    ),
    (
        "python-hl7__bad-batch-two-bhs.hl7",
        Verdict::Reject(ParseErrorKind::NestedBatchHeader),
    ),
    (
        "python-hl7__bad-file-no-msh.hl7",
        Verdict::Reject(ParseErrorKind::SegmentOutsideMessage),
    ),
    (
        "python-hl7__bad-file-two-bhs.hl7",
        Verdict::Reject(ParseErrorKind::NestedBatchHeader),
    ),
    (
        "python-hl7__bad-file-two-fhs.hl7",
        Verdict::Reject(ParseErrorKind::RepeatedFileHeader),
    ),
    (
        "python-hl7__bad-file-fhs-no-msh.hl7",
        Verdict::Reject(ParseErrorKind::SegmentOutsideMessage),
    ),
    (
        "python-hl7__bad-first-segment-pid.hl7",
        Verdict::Reject(ParseErrorKind::NotAMessage),
    ),
    // hl7apy's encoding-character checks.
    (
        "hl7apy__bad-msh-all-empty.hl7",
        Verdict::Reject(ParseErrorKind::MissingEncodingCharacters),
    ),
    (
        "hl7apy__bad-msh-3-encoding-chars.hl7",
        Verdict::Accept(
            "MSH-2 `^~\\` has 3 distinct encoding characters: component, repetition and escape \
             with no subcomponent separator; our rule takes 2 to 5, hl7apy wants exactly 4",
        ),
    ),
    (
        "hl7apy__bad-msh-too-many-encoding-chars.hl7",
        Verdict::Reject(ParseErrorKind::EncodingCharactersLength(6)),
    ),
    (
        "hl7apy__bad-msh-duplicate-encoding-chars.hl7",
        Verdict::Reject(ParseErrorKind::DuplicateDelimiter),
    ),
    (
        "hl7apy__bad-first-segment-pid.hl7",
        Verdict::Reject(ParseErrorKind::NotAMessage),
    ),
    (
        "nhapi__msa-only-no-msh.hl7",
        Verdict::Reject(ParseErrorKind::NotAMessage),
    ),
    // Expectations about a receiver or a validator, not about parsing.
    (
        "hapi__oru-r01-ihe-pcd-bp-device.hl7",
        Verdict::Accept(
            "HAPI rejects it only under its v2.6 datatype validation (a withdrawn datatype in \
             PID-13); we parse any well-formed ER7 and never refuse a device's data for a \
             cosmetic fault (docs/acks.md)",
        ),
    ),
    (
        "gcp-mllp__adt-a01-lf-rejected.hl7",
        Verdict::Accept(
            "Google's HL7v2 store refuses LF segment terminators; our rule ends segments at \
             CR, LF or CRLF",
        ),
    ),
];

#[test]
fn malformed_inputs_give_a_clean_result() {
    let Some(dir) = corpus_dir() else { return };
    let listed = json_lines(&dir.join("expected/errors.jsonl"));
    let mut failures: Vec<String> = Vec::new();
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let mut accepted: Vec<String> = Vec::new();
    let (mut n_rejected, mut n_fuzz_ok, mut n_fuzz_err) = (0, 0, 0);
    for entry in &listed {
        let file = str_field(entry, "file");
        seen.insert(file);
        let bytes = read_corpus_file(&dir, file);
        let outcome = match exercise(&bytes) {
            Ok(outcome) => outcome,
            Err(panic) => {
                failures.push(format!("{file}: panicked: {panic}"));
                continue;
            }
        };
        if file.starts_with("nhapi__fuzz-") {
            match outcome {
                Ok(_) => n_fuzz_ok += 1,
                Err(_) => n_fuzz_err += 1,
            }
            continue;
        }
        let Some((_, verdict)) = VERDICTS.iter().find(|(name, _)| *name == file) else {
            failures.push(format!(
                "{file}: no verdict in VERDICTS (the corpus expects: {})",
                str_field(entry, "expected")
            ));
            continue;
        };
        match (verdict, outcome) {
            (Verdict::Reject(kind), Err(error)) if error.kind == *kind => n_rejected += 1,
            (Verdict::Accept(reason), Ok(_)) => accepted.push(format!("{file}: {reason}")),
            (verdict, outcome) => failures.push(format!(
                "{file}: our rules say {verdict:?}, the parser gives {outcome:?}"
            )),
        }
    }
    for (file, _) in VERDICTS {
        if !seen.contains(file) {
            failures.push(format!(
                "{file}: has a verdict but is not in errors.jsonl; remove it from VERDICTS"
            ));
        }
    }
    for line in &accepted {
        eprintln!("errors.jsonl accepted by our rules: {line}");
    }
    eprintln!(
        "errors.jsonl: {} files: {n_rejected} rejected as our rules say, {} accepted by our \
         rules, {} fuzz inputs ({n_fuzz_ok} parsed, {n_fuzz_err} rejected, none panicked)",
        listed.len(),
        accepted.len(),
        n_fuzz_ok + n_fuzz_err,
    );
    assert!(
        failures.is_empty(),
        "{} malformed input(s) went wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Parses with both entry points and reads every part of the result, catching a panic
/// anywhere in that; returns the batch outcome (message count or error).
fn exercise(bytes: &[u8]) -> Result<Result<usize, ParseError>, String> {
    panic::catch_unwind(AssertUnwindSafe(|| {
        let _ = hl7::parse(bytes);
        let batch = hl7::parse_batch(bytes)?;
        for message in std::iter::once(batch.envelope()).chain(batch.messages()) {
            let _ = message.tree(true);
            let _ = message.tree(false);
            for segment in message.segments() {
                let _ = message.get_text(&format!("{}-1.1.1", segment.id()));
            }
        }
        Ok(batch.messages().len())
    }))
    .map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "a non-text panic".to_owned())
    })
}

// ---------------------------------------------------------------------------------------------
// d. Differential check against python-hl7 (oracle/).

/// How our tree differs from python-hl7's for a listed file. Each is checked: a file listed
/// here must differ, and in exactly this way.
#[derive(Clone, Copy, Debug)]
enum Difference {
    /// python-hl7 keeps each blank line as an empty segment (one field holding one empty
    /// string); our rule skips blank lines. The trees must agree once those are dropped.
    BlankLines,
    /// We reject the file with this error, by the reason given; python-hl7's `hl7.parse`
    /// checks neither encoding characters, segment ids nor batch structure, and parses it.
    Rejected(ParseErrorKind, &'static str),
}

const NOT_PUNCTUATION: &str = "an encoding character is a letter, digit, space, control or \
                               non-ASCII byte; ours must be punctuation";
const ONE_ENCODING_CHARACTER: &str = "MSH-2 has 1 character; ours must have 2 to 5";
const BAD_SEGMENT_ID: &str = "a segment id that is not 3 letters or digits starting with a letter";
const NO_MSH_IN_BATCH: &str = "a segment between BHS/FHS and the first MSH belongs to no message; \
                               python-hl7's own parse_batch rejects it too";
const TWO_BHS: &str = "a second BHS before BTS; python-hl7's own parse_batch rejects it too";

/// Files where our tree and python-hl7's differ, each with how and why.
const ORACLE_DIFFERENCES: &[(&str, Difference)] = &[
    ("hapi__oml-o21-long.hl7", Difference::BlankLines),
    (
        "hl7-dotnetcore__double-lf-then-crlf.hl7",
        Difference::BlankLines,
    ),
    (
        "hl7-dotnetcore__sample-adt-crlf-blankline.hl7",
        Difference::BlankLines,
    ),
    ("nhapi__oml-o21-multi-lf.hl7", Difference::BlankLines),
    (
        "hl7apy__bad-msh-all-empty.hl7",
        Difference::Rejected(
            ParseErrorKind::MissingEncodingCharacters,
            "MSH-2 is empty, so there are no delimiters to read the message with",
        ),
    ),
    (
        "hl7apy__bad-msh-too-many-encoding-chars.hl7",
        Difference::Rejected(
            ParseErrorKind::EncodingCharactersLength(6),
            "MSH-2 `^~\\&#$` has 6 characters; v2.7 defines 5 at most",
        ),
    ),
    (
        "lfh-hl7v2-fhir__adt-a01-unix-lf.hl7",
        Difference::Rejected(
            ParseErrorKind::DuplicateDelimiter,
            "MSH-2 `^~\\\\&` repeats the escape character (a source-code escaping slip \
             in the originating repository); a character cannot be two delimiters",
        ),
    ),
    (
        "lfh-hl7v2-fhir__adt-a01-win-crlf.hl7",
        Difference::Rejected(
            ParseErrorKind::DuplicateDelimiter,
            "the same MSH-2 `^~\\\\&` as the LF file",
        ),
    ),
    (
        "python-hl7__bad-batch-no-msh.hl7",
        Difference::Rejected(ParseErrorKind::SegmentOutsideMessage, NO_MSH_IN_BATCH),
    ),
    (
        "python-hl7__bad-file-fhs-no-msh.hl7",
        Difference::Rejected(ParseErrorKind::SegmentOutsideMessage, NO_MSH_IN_BATCH),
    ),
    (
        "python-hl7__bad-file-no-msh.hl7",
        Difference::Rejected(ParseErrorKind::SegmentOutsideMessage, NO_MSH_IN_BATCH),
    ),
    (
        "python-hl7__bad-batch-two-bhs.hl7",
        Difference::Rejected(ParseErrorKind::NestedBatchHeader, TWO_BHS),
    ),
    (
        "python-hl7__bad-file-two-bhs.hl7",
        Difference::Rejected(ParseErrorKind::NestedBatchHeader, TWO_BHS),
    ),
    (
        "python-hl7__bad-file-two-fhs.hl7",
        Difference::Rejected(
            ParseErrorKind::RepeatedFileHeader,
            "a second FHS; python-hl7's own parse_file rejects it too",
        ),
    ),
    // NHapi's fuzz inputs that python-hl7 takes as messages, because it validates nothing.
    (
        "nhapi__fuzz-hl7exc-id000064.hl7",
        Difference::Rejected(
            ParseErrorKind::MissingEncodingCharacters,
            "`MSH||||…`: MSH-2 is empty",
        ),
    ),
    (
        "nhapi__fuzz-hl7exc-id000087.hl7",
        Difference::Rejected(ParseErrorKind::InvalidDelimiter, NOT_PUNCTUATION),
    ),
    (
        "nhapi__fuzz-hl7exc-id000092.hl7",
        Difference::Rejected(ParseErrorKind::InvalidSegmentId, BAD_SEGMENT_ID),
    ),
    (
        "nhapi__fuzz-hl7exc-id000118.hl7",
        Difference::Rejected(ParseErrorKind::InvalidDelimiter, NOT_PUNCTUATION),
    ),
    (
        "nhapi__fuzz-hl7exc-id000119.hl7",
        Difference::Rejected(ParseErrorKind::InvalidDelimiter, NOT_PUNCTUATION),
    ),
    (
        "nhapi__fuzz-hl7exc-id000123.hl7",
        Difference::Rejected(ParseErrorKind::InvalidDelimiter, NOT_PUNCTUATION),
    ),
    (
        "nhapi__fuzz-hl7exc-id000151.hl7",
        Difference::Rejected(ParseErrorKind::InvalidDelimiter, NOT_PUNCTUATION),
    ),
    (
        "nhapi__fuzz-hl7exc-id000176.hl7",
        Difference::Rejected(ParseErrorKind::InvalidDelimiter, NOT_PUNCTUATION),
    ),
    (
        "nhapi__fuzz-legacy-encnotsupp-nullref1.hl7",
        Difference::Rejected(
            ParseErrorKind::InvalidDelimiter,
            "`MSHH0`: the field separator is a letter",
        ),
    ),
    (
        "nhapi__fuzz-legacy-hl7exc-hang1.hl7",
        Difference::Rejected(
            ParseErrorKind::EncodingCharactersLength(1),
            ONE_ENCODING_CHARACTER,
        ),
    ),
    (
        "nhapi__fuzz-legacy-hl7exc-ioor1.hl7",
        Difference::Rejected(
            ParseErrorKind::EncodingCharactersLength(1),
            ONE_ENCODING_CHARACTER,
        ),
    ),
    (
        "nhapi__fuzz-legacy-hl7exc-stackoverflow1.hl7",
        Difference::Rejected(
            ParseErrorKind::EncodingCharactersLength(1),
            ONE_ENCODING_CHARACTER,
        ),
    ),
    (
        "nhapi__fuzz-legacy-hl7exc-stackoverflow2.hl7",
        Difference::Rejected(
            ParseErrorKind::EncodingCharactersLength(1),
            ONE_ENCODING_CHARACTER,
        ),
    ),
    (
        "nhapi__fuzz-legacy-hl7exc-sys1.hl7",
        Difference::Rejected(
            ParseErrorKind::EncodingCharactersLength(1),
            ONE_ENCODING_CHARACTER,
        ),
    ),
    (
        "nhapi__fuzz-legacy-hl7exc-sys2.hl7",
        Difference::Rejected(
            ParseErrorKind::EncodingCharactersLength(1),
            ONE_ENCODING_CHARACTER,
        ),
    ),
    (
        "nhapi__fuzz-legacy-noexc-regex1.hl7",
        Difference::Rejected(ParseErrorKind::InvalidDelimiter, NOT_PUNCTUATION),
    ),
    (
        "nhapi__fuzz-noexc-id000109.hl7",
        Difference::Rejected(ParseErrorKind::InvalidSegmentId, BAD_SEGMENT_ID),
    ),
    (
        "nhapi__fuzz-noexc-id000146.hl7",
        Difference::Rejected(ParseErrorKind::InvalidSegmentId, BAD_SEGMENT_ID),
    ),
    (
        "nhapi__fuzz-noexc-id000168.hl7",
        Difference::Rejected(ParseErrorKind::InvalidDelimiter, NOT_PUNCTUATION),
    ),
];

#[test]
fn trees_agree_with_python_hl7() {
    let Some(dir) = corpus_dir() else { return };
    let oracle_dir = dir.join("oracle");
    let mut names: Vec<String> = std::fs::read_dir(&oracle_dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", oracle_dir.display()))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".hl7.json"))
        .collect();
    names.sort();
    assert!(
        !names.is_empty(),
        "no oracle files in {}",
        oracle_dir.display()
    );
    let mut agree = 0;
    let mut differ: Vec<String> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    for name in &names {
        let oracle: Value =
            serde_json::from_str(&std::fs::read_to_string(oracle_dir.join(name)).unwrap())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        let file = str_field(&oracle, "file");
        // python-hl7 splits segments only at CR, so for a file with LF in it the oracle's
        // LF-normalised run is the one that means what the file means.
        let run = match &oracle["lf_normalized"] {
            Value::Null => &oracle["raw"],
            lf => lf,
        };
        let listed = ORACLE_DIFFERENCES
            .iter()
            .find(|(listed, _)| *listed == file)
            .map(|(_, difference)| *difference);
        let bytes = read_corpus_file(&dir, file);
        let ours = parse_guarded(file, &bytes);
        if run["ok"] != Value::Bool(true) {
            // Typically a UTF-8 BOM, which python-hl7 does not strip and our rule ignores.
            let ours = match &ours {
                Ok(batch) => format!("we parse {} message(s)", batch.messages().len()),
                Err(error) => format!("we reject it: {error}"),
            };
            skipped.push(format!(
                "{file}: python-hl7 failed ({}); {ours}",
                run["error"].as_str().unwrap_or("?").escape_debug()
            ));
            if listed.is_some() {
                failures.push(format!(
                    "{file}: listed in ORACLE_DIFFERENCES but python-hl7 failed on it; remove it"
                ));
            }
            continue;
        }
        let python: Tree = serde_json::from_value(run["segments"].clone())
            .unwrap_or_else(|e| panic!("{name}: segments: {e}"));
        let latin1 = str_field(&oracle, "decoded_as").starts_with("latin-1");
        let difference = compare(&ours, &python, latin1);
        match (listed, difference) {
            (None, None) => agree += 1,
            (None, Some(difference)) => failures.push(format!("{file}: {difference}")),
            (Some(listed), None) => failures.push(format!(
                "{file}: listed in ORACLE_DIFFERENCES as {listed:?} but agrees now; remove it"
            )),
            (Some(Difference::BlankLines), Some(difference)) => {
                let blank: SegmentTree = vec![vec![vec![vec![String::new()]]]];
                let without_blank: Tree = python
                    .iter()
                    .filter(|segment| **segment != blank)
                    .cloned()
                    .collect();
                if without_blank.len() == python.len() {
                    failures.push(format!(
                        "{file}: listed as BlankLines, but python-hl7 has no empty segment: \
                         {difference}"
                    ));
                } else if let Some(rest) = compare(&ours, &without_blank, latin1) {
                    failures.push(format!(
                        "{file}: differs beyond python-hl7's empty segments: {rest}"
                    ));
                } else {
                    differ.push(format!(
                        "{file}: python-hl7 has {} empty segments for blank lines",
                        python.len() - without_blank.len()
                    ));
                }
            }
            (Some(Difference::Rejected(kind, reason)), Some(difference)) => match &ours {
                Err(error) if error.kind == kind => {
                    differ.push(format!("{file}: we reject it: {reason}"));
                }
                _ => failures.push(format!(
                    "{file}: listed as rejected with {kind:?}, but: {difference}"
                )),
            },
        }
    }
    for (file, _) in ORACLE_DIFFERENCES {
        let name = format!("{file}.json");
        if !names.contains(&name) {
            failures.push(format!(
                "{file}: listed in ORACLE_DIFFERENCES but has no oracle file"
            ));
        }
    }
    for line in &skipped {
        eprintln!("oracle skipped: {line}");
    }
    for line in &differ {
        eprintln!("oracle differs: {line}");
    }
    eprintln!(
        "oracle: {agree} agree, {} differ (listed), {} skipped (python-hl7 failed)",
        differ.len(),
        skipped.len()
    );
    assert!(
        failures.is_empty(),
        "{} file(s) compare with python-hl7 other than expected:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// One segment of a [`Tree`]: fields, repetitions, components, subcomponent strings.
type SegmentTree = Vec<Vec<Vec<Vec<String>>>>;

/// A segment of our parse with where it starts and the charset its strings were decoded by.
struct FileSegment {
    offset: usize,
    charset: Charset,
    tree: SegmentTree,
}

/// Our file as python-hl7 sees it: every segment, envelope and messages, in file order.
fn file_segments(batch: &Batch<'_>) -> Vec<FileSegment> {
    let mut out = Vec::new();
    for message in std::iter::once(batch.envelope()).chain(batch.messages()) {
        let offsets = message.segments().map(|segment| segment.offset());
        for (offset, tree) in offsets.zip(message.tree(false)) {
            out.push(FileSegment {
                offset,
                charset: message.charset(),
                tree,
            });
        }
    }
    out.sort_by_key(|segment| segment.offset);
    out
}

/// `None` when python-hl7's segments equal ours; otherwise where they first differ.
///
/// python-hl7 decoded the file as UTF-8 (or Latin-1 when that failed); we decode by MSH-18.
/// So its strings are turned back into the file's bytes and decoded by our charset before
/// comparing, which compares the bytes of each part.
fn compare(ours: &Result<Batch<'_>, ParseError>, python: &Tree, latin1: bool) -> Option<String> {
    let batch = match ours {
        Ok(batch) => batch,
        Err(error) => {
            return Some(format!(
                "we reject it ({error}); python-hl7 parses {} segments",
                python.len()
            ));
        }
    };
    let ours = file_segments(batch);
    for (index, (ours, python)) in ours.iter().zip(python).enumerate() {
        let python = recode(python, ours.charset, latin1);
        if ours.tree != python {
            let tree = &ours.tree;
            let field = (0..tree.len().max(python.len()))
                .find(|&n| tree.get(n) != python.get(n))
                .unwrap_or(0);
            return Some(format!(
                "segment {} first differs at field {field}: ours {:?}, python-hl7 {:?}",
                index + 1,
                tree.get(field),
                python.get(field)
            ));
        }
    }
    (ours.len() != python.len()).then(|| {
        format!(
            "{} segments here, {} in python-hl7; the first {} agree",
            ours.len(),
            python.len(),
            ours.len().min(python.len())
        )
    })
}

/// python-hl7's strings re-read as we read them: back to the file's bytes, then decoded by
/// the message's charset.
fn recode(segment: &SegmentTree, charset: Charset, latin1: bool) -> SegmentTree {
    let text = |s: &String| -> String {
        if latin1 {
            // Latin-1 maps each byte to the code point of the same value, so this is exact.
            let bytes: Vec<u8> = s.chars().map(|c| c as u32 as u8).collect();
            charset.decode(&bytes).into_owned()
        } else {
            charset.decode(s.as_bytes()).into_owned()
        }
    };
    segment
        .iter()
        .map(|field| {
            field
                .iter()
                .map(|rep| {
                    rep.iter()
                        .map(|comp| comp.iter().map(text).collect())
                        .collect()
                })
                .collect()
        })
        .collect()
}
