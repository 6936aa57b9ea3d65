//! `hl7-ihp backup DEST`: an online copy of the store, with a progress line and a last line
//! that says what the checked copy holds.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Instant;

use crate::cli::BackupArgs;
use crate::store::{self, BackupError, BackupOptions, BackupProgress};

/// Without a terminal, a progress line each time the copy passes another tenth.
const PROGRESS_STEPS: u64 = 10;

/// Copies the store to `DEST`. Exit status 0 when the copy is written and checked, 1 when
/// it fails, 2 when DEST exists without `--force` (a usage error: nothing was tried).
pub fn run(args: &BackupArgs) -> anyhow::Result<ExitCode> {
    let location = super::inspect::location(&args.store)?;
    let dest = args.dest.display().to_string();
    let started = Instant::now();
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "backup: {percent:>3}% {bytes}/{total_bytes} {elapsed}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut last_tenth = None;
    let mut progress = |p: BackupProgress| {
        if let Some(bar) = &bar {
            bar.set_length(p.n_bytes_total);
            bar.set_position(p.n_bytes_done);
        } else if let Some(tenth) = (p.n_bytes_done * PROGRESS_STEPS).checked_div(p.n_bytes_total)
            && last_tenth != Some(tenth)
        {
            last_tenth = Some(tenth);
            eprintln!(
                "backup: {}% ({:.1} of {:.1} MB)",
                tenth * 100 / PROGRESS_STEPS,
                p.n_bytes_done as f64 / 1e6,
                p.n_bytes_total as f64 / 1e6
            );
        }
    };
    let result = store::backup(
        &location,
        &args.dest,
        BackupOptions { force: args.force },
        &mut progress,
    );
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    match result {
        Ok(summary) => {
            println!(
                "backup: {dest}, {} messages, schema {}, {:.1} MB in {:.1} s, integrity ok",
                summary.n_messages,
                summary.schema_version,
                summary.n_bytes as f64 / 1e6,
                started.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(error @ BackupError::Exists(_)) => {
            eprintln!("hl7-ihp: {error}");
            Ok(ExitCode::from(2))
        }
        Err(error) => Err(anyhow::Error::new(error).context(format!("backing up to {dest}"))),
    }
}
