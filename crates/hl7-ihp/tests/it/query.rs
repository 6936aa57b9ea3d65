//! Demographic queries end to end: a QRY^A19 (Mindray VS8 style) and a QBP^Q22 (IHE PDQ)
//! are answered from the patients the store knows, with ADR^A19 and RSP^K22, on the main
//! listener and on `--query-listen`; they are kept in `messages` as queries, never as data.

use std::net::SocketAddr;

use serde_json::Value;

use crate::common::{Client, Receiver, ack_field, run, sample, start, wait_until};

fn get_json(receiver: &Receiver, path: &str) -> Value {
    let (status, body) = receiver.http_get(path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn segments(answer: &[u8], id: &str) -> Vec<String> {
    String::from_utf8_lossy(answer)
        .split('\r')
        .filter(|s| s.starts_with(id))
        .map(str::to_owned)
        .collect()
}

/// The `--query-listen` address, from the receiver's "listening" line.
fn query_address(receiver: &Receiver) -> SocketAddr {
    let logs = receiver.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("\"listening\""))
        .expect("listening line");
    let event: Value = serde_json::from_str(line).unwrap();
    event["mllp_query"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no mllp_query in {line}"))
}

fn pdq(control_id: &str, tag: &str, parameters: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|eGateway|Mindray|PDQ|HIS|20261201101600||QBP^Q22^QBP_Q21|{control_id}|P|2.5\r\
         QPD|IHE PDQ Query|{tag}|{parameters}\rRCP|I|10^RD\r"
    )
    .into_bytes()
}

fn vs8(control_id: &str, id: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|Mindray|VS8|||20261201101500||QRY^A19|{control_id}|P|2.3.1\r\
         QRD|20261201101500|R|I|{control_id}|||1^RD|{id}|DEM|||\r"
    )
    .into_bytes()
}

#[test]
fn queries_find_known_patients_and_are_kept_as_queries_not_data() {
    let (dir, receiver) = start(&["--json-min-interval", "0s", "--query-listen", "127.0.0.1:0"]);
    let mut client = Client::connect(receiver.mllp);
    let adt = sample("devices/adt-a01-for-queries.hl7");
    assert_eq!(ack_field(&client.exchange(&adt), "MSA-1"), "AA");
    let file = receiver.data_dir.join("patients/patient_MRN-2001.json");
    wait_until("the patient's file", || file.exists());
    let file_before = std::fs::read(&file).unwrap();

    // QRY^A19 for the known id: ADR^A19, MSA AA naming the query, the QRD, PID and PV1.
    let answer = client.exchange(&sample("devices/vs8-qry-a19.hl7"));
    assert_eq!(ack_field(&answer, "MSH-9"), "ADR^A19^ADR_A19");
    assert_eq!(ack_field(&answer, "MSH-12"), "2.3.1");
    assert_eq!(ack_field(&answer, "MSA-1"), "AA");
    assert_eq!(ack_field(&answer, "MSA-2"), "VS8-Q-0001");
    assert_eq!(segments(&answer, "QRD").len(), 1);
    let pid = segments(&answer, "PID");
    assert_eq!(
        pid,
        vec!["PID|1||MRN-2001^^^HOSP||Mustermann^Erika||19640812|F".to_owned()]
    );
    assert_eq!(ack_field(&answer, "PV1-3"), "ICU^^BED07^HOSP");

    // An unknown id: ADR^A19 with MSA AA and no PID.
    let answer = client.exchange(&vs8("VS8-Q-0002", "NOBODY"));
    assert_eq!(ack_field(&answer, "MSA-1"), "AA");
    assert!(segments(&answer, "PID").is_empty(), "{answer:?}");

    // QBP^Q22 by id and name (the sample), by name alone, and for nobody.
    let answer = client.exchange(&sample("devices/pdq-qbp-q22.hl7"));
    assert_eq!(ack_field(&answer, "MSH-9"), "RSP^K22^RSP_K22");
    assert_eq!(ack_field(&answer, "MSA-2"), "PDQ-0001");
    assert_eq!(ack_field(&answer, "QAK-1"), "Q-7731");
    assert_eq!(ack_field(&answer, "QAK-2"), "OK");
    assert_eq!(ack_field(&answer, "QPD-2"), "Q-7731");
    assert_eq!(ack_field(&answer, "PID-3.1"), "MRN-2001");
    assert_eq!(ack_field(&answer, "PV1-3.3"), "BED07");
    let answer = client.exchange(&pdq("PDQ-0002", "Q-2", "@PID.5.1^MUSTERMANN"));
    assert_eq!(ack_field(&answer, "QAK-2"), "OK");
    assert_eq!(ack_field(&answer, "PID-5.2"), "Erika");
    let answer = client.exchange(&pdq("PDQ-0003", "Q-3", "@PID.3.1^NOBODY"));
    assert_eq!(ack_field(&answer, "QAK-1"), "Q-3");
    assert_eq!(ack_field(&answer, "QAK-2"), "NF");
    assert!(segments(&answer, "PID").is_empty());

    // The query port answers the same way.
    let mut asker = Client::connect(query_address(&receiver));
    let answer = asker.exchange(&vs8("VS8-Q-0004", "MRN-2001"));
    assert_eq!(ack_field(&answer, "MSA-1"), "AA");
    assert_eq!(ack_field(&answer, "PID-3.1"), "MRN-2001");

    // Kept as queries, about no one; the patient's records and file are unchanged.
    let messages = get_json(&receiver, "/api/v1/messages");
    let listed = messages["messages"].as_array().unwrap();
    assert_eq!(listed.len(), 7, "{messages}");
    let queries: Vec<&Value> = listed.iter().filter(|m| m["kind"] == "query").collect();
    assert_eq!(queries.len(), 6, "{messages}");
    for query in &queries {
        assert_eq!(query["patient"], Value::Null, "{query}");
        assert_eq!(query["outcome"], "accepted", "{query}");
        assert_eq!(query["ack_code"], "AA", "{query}");
    }
    let observations = get_json(&receiver, "/api/v1/messages?patient=MRN-2001");
    assert_eq!(
        observations["messages"].as_array().map(Vec::len),
        Some(1),
        "{observations}"
    );
    drop(client);
    drop(asker);
    let (status, logs) = receiver.terminate();
    assert!(status.success(), "{logs}");
    assert!(
        !logs.contains("Mustermann"),
        "no patient data in logs: {logs}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), file_before);
    let data_dir = dir.path().join("data");
    let (code, out, err) = run(&["messages", "--data-dir", data_dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("[query QRY^A19]").count(), 3, "{out}");
    assert_eq!(out.matches("[query QBP^Q22]").count(), 3, "{out}");
}

#[test]
fn send_query_prints_the_patients_found_and_exits_by_the_msa_code() {
    let (_dir, receiver) = start(&["--json-min-interval", "0s"]);
    let mut client = Client::connect(receiver.mllp);
    let adt = sample("devices/adt-a01-for-queries.hl7");
    assert_eq!(ack_field(&client.exchange(&adt), "MSA-1"), "AA");
    drop(client);
    let to = receiver.mllp.to_string();
    let send = |extra: &[&str]| {
        let mut args = vec!["send", "--to", to.as_str()];
        args.extend_from_slice(extra);
        run(&args)
    };

    // QRY^A19 for the known id: its PID and PV1-3 on one line.
    let (code, out, err) = send(&["--query", "MRN-2001"]);
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "MSA AA", "{out}");
    assert_eq!(
        lines[1], "PID MRN-2001 · Mustermann^Erika · 19640812 · F · ICU^^BED07^HOSP",
        "{out}"
    );
    // An unknown id: answered AA with nobody, exit 0.
    let (code, out, err) = send(&["--query", "NOBODY"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), "MSA AA · no match", "{out}");

    // QBP^Q22 by id and family name, and for nobody (QAK NF).
    let q22 = ["--query-kind", "q22", "--query-name", "mustermann"];
    let (code, out, err) = send(&[&["--query", "MRN-2001"][..], &q22].concat());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("MSA AA · QAK OK\n"), "{out}");
    assert!(out.contains("PID MRN-2001 · Mustermann^Erika"), "{out}");
    let (code, out, err) = send(&["--query", "NOBODY", "--query-kind", "q22"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), "MSA AA · QAK NF · no match", "{out}");

    // A query the receiver cannot answer (an empty QRD-8) is an AE: exit 1.
    let (code, out, err) = send(&["--query", ""]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.starts_with("MSA AE"), "{out}");
    // A19 asks for an id only: a usage error.
    let (code, _, err) = send(&["--query", "MRN-2001", "--query-name", "x"]);
    assert_eq!(code, 2, "{err}");
    let (status, logs) = receiver.terminate();
    assert!(status.success(), "{logs}");
}
