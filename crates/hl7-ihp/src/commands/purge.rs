//! `hl7-ihp purge`: removes old messages once, as `receive --retention` does in the
//! background, or counts what would go with `--dry-run`. On SQLite it writes to the store,
//! so it takes the data directory's lock like `receive`: a running receiver is refused (it
//! purges with `--retention`). A PostgreSQL store is shared by several receivers by design
//! and each purge step is a transaction of its own: no lock, a running receiver is fine.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;

use crate::cli::PurgeArgs;
use crate::datadir::{self, DataDirError};
use crate::retention::{self, STEP_MESSAGES};
use crate::store::{self, PurgeCursor, PurgeReport, PurgeRequest, StoreOptions};

/// Steps of `purge` remove this many messages each: no receiver waits for the writer, so
/// larger steps than the background's cost nobody anything.
const COMMAND_STEP: usize = 16 * STEP_MESSAGES;

/// Runs `hl7-ihp purge`. Exit status 0 when done (or counted), 1 when the store fails, 2 for
/// a bad time or a data directory held by a receiver.
pub fn run(args: &PurgeArgs) -> anyhow::Result<ExitCode> {
    let now = jiff::Timestamp::now();
    let parse = |flag: &str, text: &Option<String>| -> Result<Option<i64>, String> {
        text.as_deref()
            .map(|text| retention::parse_before(text, now).map_err(|e| format!("--{flag}: {e}")))
            .transpose()
    };
    let (accepted_before_ms, refused_before_ms) = match (
        parse("before", &args.before),
        parse("rejected-before", &args.rejected_before),
    ) {
        (Ok(accepted), Ok(refused)) => (accepted, refused),
        (Err(error), _) | (_, Err(error)) => {
            eprintln!("hl7-ihp: {error}");
            return Ok(ExitCode::from(2));
        }
    };
    let location = super::inspect::location(&args.store)?;
    // The lock, as `receive` takes it: one writer per data directory (SQLite only).
    let data_dir = match &location {
        store::StoreLocation::Postgres(_) => None,
        _ => Some(datadir::prepare(&args.store.path)),
    };
    let data_dir = match data_dir.transpose() {
        Ok(data_dir) => data_dir,
        Err(DataDirError::Held { path, holder }) => {
            eprintln!(
                "hl7-ihp: a receiver ({holder}) holds the data directory {}; stop it first, \
                 or let it purge in the background with --retention",
                path.display()
            );
            return Ok(ExitCode::from(2));
        }
        Err(error) => {
            eprintln!("hl7-ihp: {error}");
            return Ok(ExitCode::from(2));
        }
    };
    let store = store::open(&location, &StoreOptions::default())
        .with_context(|| format!("opening the store {location:?}"))?;
    let runtime = super::runtime()?;
    let started = Instant::now();
    let mut request = PurgeRequest {
        accepted_before_ms,
        refused_before_ms,
        exporters: retention::exporters(args.patient_files),
        max_messages: COMMAND_STEP,
        cursor: PurgeCursor::START,
        dry_run: args.dry_run,
    };
    let result: anyhow::Result<PurgeReport> = runtime.block_on(async {
        let mut total = PurgeReport::default();
        loop {
            let report = store.purge(request.clone()).await.context("purging")?;
            total.n_accepted += report.n_accepted;
            total.n_refused += report.n_refused;
            // Done, or (never expected) a step that neither removed nor moved on: stop
            // rather than ask again forever.
            let stuck =
                report.cursor == request.cursor && report.n_accepted + report.n_refused == 0;
            if !report.more || stuck {
                total.n_held_back = report.n_held_back;
                total.held_by = report.held_by;
                return Ok(total);
            }
            request.cursor = report.cursor;
        }
    });
    drop(runtime);
    // The store closes (and checkpoints) before the lock goes.
    drop(store);
    drop(data_dir);
    let report = result?;
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    println!(
        "purge: {verb} {} accepted messages and {} refused frames ({:.1} s)",
        report.n_accepted,
        report.n_refused,
        started.elapsed().as_secs_f64()
    );
    if let Some(reason) = &report.held_by
        && report.n_held_back > 0
    {
        println!(
            "purge: {} older accepted messages held back: {reason}",
            report.n_held_back
        );
    }
    Ok(ExitCode::SUCCESS)
}
