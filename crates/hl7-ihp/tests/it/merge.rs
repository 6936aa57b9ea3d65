//! Patient merges end to end (ADT^A40, A34, A47 over MLLP): the prior patient's history
//! joins the survivor's in the store and the files, the prior's file goes away, and what
//! is wrong (the wrong way round, mismatched authorities) is an AE with the reason that
//! changes nothing.

use std::path::Path;

use serde_json::Value;

use crate::common::{self, Client, ack_field, oru, start, wait_until};

/// An ADT merge (`A40`, `A34`, …) of `prior` into `survivor`.
pub fn merge(event: &str, control_id: &str, survivor: &str, prior: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|ADT|HOSP|HL7IHP|IHP|20261126110000||ADT^{event}^ADT_A39|{control_id}|P|2.5\r\
         EVN|{event}|20261126110000\r\
         PID|||{survivor}||Doe^Jane||19700101|F\r\
         MRG|{prior}\r"
    )
    .into_bytes()
}

/// `show KEY --all` as JSON: the control ids of its records, or `None` for no patient.
fn shown(data_dir: &Path, key: &str) -> Option<Vec<String>> {
    let (status, stdout, _) = common::run(&[
        "show",
        key,
        "--all",
        "--json-fields",
        "full",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    if status != 0 {
        return None;
    }
    let document: Value = serde_json::from_str(&stdout).unwrap();
    Some(control_ids(&document))
}

fn control_ids(document: &Value) -> Vec<String> {
    document["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["MessageControlID"].as_str().unwrap().to_owned())
        .collect()
}

fn file(data_dir: &Path, key: &str) -> Option<Value> {
    let text =
        std::fs::read_to_string(data_dir.join(format!("patients/patient_{key}.json"))).ok()?;
    serde_json::from_str(&text).ok()
}

/// The `export_files` rows, `exporter patient`, sorted.
fn file_positions(data_dir: &Path) -> Vec<String> {
    let db = rusqlite::Connection::open_with_flags(
        data_dir.join("hl7-ihp.sqlite3"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut statement = db
        .prepare("SELECT exporter || ' ' || patient FROM export_files ORDER BY 1")
        .unwrap();
    statement
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

fn messages(data_dir: &Path) -> String {
    let (status, stdout, stderr) =
        common::run(&["messages", "--data-dir", data_dir.to_str().unwrap()]);
    assert_eq!(status, 0, "{stderr}");
    stdout
}

fn exchange(client: &mut Client, message: &[u8]) -> (String, String) {
    let ack = client.exchange(message);
    (ack_field(&ack, "MSA-1"), ack_field(&ack, "ERR-8"))
}

#[test]
fn a40_merges_a_into_b_and_the_errors_change_nothing() {
    let (_dir, receiver) = start(&["--json-min-interval", "0s", "--json-fields", "full"]);
    let data_dir = receiver.data_dir.clone();
    let mut client = Client::connect(receiver.mllp);
    for (control_id, patient) in [("A-1", "MRG-A"), ("A-2", "MRG-A"), ("B-1", "MRG-B")] {
        assert_eq!(exchange(&mut client, &oru(control_id, patient, 70)).0, "AA");
    }
    wait_until("both files", || {
        file(&data_dir, "MRG-A").is_some_and(|d| control_ids(&d).len() == 4)
            && file(&data_dir, "MRG-B").is_some_and(|d| control_ids(&d).len() == 2)
    });
    wait_until("both file positions", || {
        file_positions(&data_dir) == ["json MRG-A", "json MRG-B"]
    });

    // The wrong way round: the prior (MRG-1) unknown, the survivor known.
    let (code, text) = exchange(&mut client, &merge("A40", "M-0", "MRG-A", "MRG-NEW"));
    assert_eq!(code, "AE");
    assert!(text.contains("wrong way round"), "{text}");
    // Mismatched assigning authorities.
    let (code, text) = exchange(
        &mut client,
        &merge("A40", "M-1", "MRG-B^^^HOSP", "MRG-A^^^OTHER"),
    );
    assert_eq!(code, "AE");
    assert!(text.contains("mismatched assigning authorities"), "{text}");
    // No MRG-1 id.
    let (code, _) = exchange(&mut client, &merge("A40", "M-2", "MRG-B", ""));
    assert_eq!(code, "AE");
    assert_eq!(
        shown(&data_dir, "MRG-A").unwrap().len(),
        4,
        "nothing changed"
    );
    assert_eq!(
        shown(&data_dir, "MRG-B").unwrap().len(),
        2,
        "nothing changed"
    );

    // A into B.
    let (code, _) = exchange(
        &mut client,
        &merge("A40", "M-3", "MRG-B^^^HOSP", "MRG-A^^^HOSP"),
    );
    assert_eq!(code, "AA");
    let mut both = shown(&data_dir, "MRG-B").unwrap();
    both.sort();
    assert_eq!(both, ["A-1", "A-1", "A-2", "A-2", "B-1", "B-1"]);
    assert_eq!(shown(&data_dir, "MRG-A"), None, "the prior is gone");
    wait_until("A's file gone and B's holding both", || {
        file(&data_dir, "MRG-A").is_none()
            && file(&data_dir, "MRG-B").is_some_and(|d| control_ids(&d).len() == 6)
    });
    // The prior's file position goes with the watermark that passes the merge.
    wait_until("A's file position forgotten", || {
        file_positions(&data_dir) == ["json MRG-B"]
    });
    let listed = messages(&data_dir);
    assert!(listed.contains("merge MRG-A → MRG-B"), "{listed}");
    assert!(listed.contains("wrong way round"), "{listed}");
    let (_, patients, _) = common::run(&["patients", "--data-dir", data_dir.to_str().unwrap()]);
    assert!(!patients.contains("MRG-A"), "{patients}");

    // Merging again, or into the merged-away patient: refused.
    let (code, text) = exchange(&mut client, &merge("A40", "M-4", "MRG-B", "MRG-A"));
    assert_eq!(code, "AE");
    assert!(text.contains("already merged"), "{text}");
    // A message later sent under the prior id joins the survivor.
    assert_eq!(exchange(&mut client, &oru("A-3", "MRG-A", 71)).0, "AA");
    assert_eq!(shown(&data_dir, "MRG-B").unwrap().len(), 8);
    assert_eq!(shown(&data_dir, "MRG-A"), None);

    // A47: a rename to an identifier not yet known.
    let (code, _) = exchange(&mut client, &merge("A47", "M-5", "MRG-C", "MRG-B"));
    assert_eq!(code, "AA");
    assert_eq!(shown(&data_dir, "MRG-C").unwrap().len(), 8);
    assert_eq!(shown(&data_dir, "MRG-B"), None);
    wait_until("B's file renamed to C's", || {
        file(&data_dir, "MRG-B").is_none()
            && file(&data_dir, "MRG-C").is_some_and(|d| control_ids(&d).len() == 8)
    });

    // A34, between two known patients.
    assert_eq!(exchange(&mut client, &oru("D-1", "MRG-D", 72)).0, "AA");
    let (code, _) = exchange(&mut client, &merge("A34", "M-6", "MRG-D", "MRG-C"));
    assert_eq!(code, "AA");
    assert_eq!(shown(&data_dir, "MRG-D").unwrap().len(), 10);
    assert_eq!(shown(&data_dir, "MRG-C"), None);
}
