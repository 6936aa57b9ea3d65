//! The receiver driven in-process through the library (as mini-redis's `tests/server.rs`):
//! `server::bind` on 127.0.0.1:0, `server::run` with a shutdown of the test's own, raw MLLP
//! bytes over a real socket.

use clap::Parser;
use hl7_ihp::cli::{Cli, Command};
use hl7_ihp::config::ReceiveConfig;
use hl7_ihp::shutdown::Shutdown;
use hl7_ihp::{datadir, server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{self, ack_field};

fn config(data_dir: &std::path::Path) -> ReceiveConfig {
    let data_dir = data_dir.display().to_string();
    let cli = Cli::try_parse_from([
        "hl7-ihp",
        "receive",
        "--listen",
        "127.0.0.1:0",
        "--http",
        "off",
        "--data-dir",
        &data_dir,
    ])
    .unwrap();
    let Command::Receive(args) = cli.command else {
        unreachable!("parsed as receive")
    };
    ReceiveConfig::from_args(&args).unwrap()
}

#[test]
fn server_run_in_process_answers_stores_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&dir.path().join("data"));
    let data_dir = datadir::prepare(&config.data_dir).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let listeners = server::bind(&config).await.unwrap();
        let address = listeners.mllp_addr().unwrap();
        let (stop, shutdown) = Shutdown::new();
        let server =
            async { server::run(config, &data_dir, listeners, shutdown.into_requested()).await };
        let client = async {
            let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
            stream
                .write_all(&common::frame(&common::sample("prototype-1.hl7")))
                .await
                .unwrap();
            let mut ack = Vec::new();
            let deadline = tokio::time::Instant::now() + common::DEADLINE;
            while !ack.ends_with(b"\x1c\r") {
                let mut chunk = [0u8; 1024];
                let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
                    .await
                    .expect("an ACK in time")
                    .unwrap();
                assert!(n > 0, "the connection closed before the ACK");
                ack.extend_from_slice(&chunk[..n]);
            }
            let ack = &ack[1..ack.len() - 2];
            assert_eq!(ack_field(ack, "MSA-1"), "AA");
            assert_eq!(ack_field(ack, "MSA-2"), "CNTRL-3456");
            stop.trigger();
        };
        let (served, ()) = tokio::join!(server, client);
        served.unwrap();
    });
    drop(runtime);
    // The final export round ran before `run` returned.
    let file = dir.path().join("data/patients/patient_555-44-4444.json");
    let document: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(document["Records"][0]["ObservationValue"], "182");
}
