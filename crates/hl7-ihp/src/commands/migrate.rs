//! `hl7-ihp migrate --from DIR --to postgres://…`: a SQLite store copied into an empty
//! PostgreSQL store (store/postgres/import.rs), with progress on stderr (counts and rate,
//! no patient data) and the verifying counts as a table on stdout.
//!
//! The SQLite store must not change while it is copied: a data directory's lock is taken as
//! `receive` takes it, so a running receiver is refused (stop it; the devices' messages wait
//! in their queues, or point them at a receiver on PostgreSQL once the copy is done). Run it
//! again after an interruption and it continues where it stopped.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::cli::MigrateArgs;
use crate::datadir::{self, DataDir, DataDirError};
use crate::store::postgres::PostgresLocation;
use crate::store::postgres::import::{self, MigrateError, MigrateOptions, MigrateReport, Progress};
use crate::store::{SQLITE_FILE_NAME, StoreLocation};

/// Progress lines at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// The lock file a data directory holds (`datadir.rs`).
const LOCK_FILE_NAME: &str = "hl7-ihp.lock";

/// Runs `hl7-ihp migrate`. Exit status 0 when copied and verified, 1 when a database fails
/// or the counts differ, 2 for a bad argument, a held data directory or a refused target.
pub fn run(args: &MigrateArgs) -> anyhow::Result<ExitCode> {
    let target = match target(args) {
        Ok(target) => target,
        Err(reason) => {
            eprintln!("hl7-ihp: {reason}");
            return Ok(ExitCode::from(2));
        }
    };
    let (database, lock_dir) = match source(&args.from) {
        Ok(found) => found,
        Err(reason) => {
            eprintln!("hl7-ihp: {reason}");
            return Ok(ExitCode::from(2));
        }
    };
    // Held until the copy is done: no receiver writes the store meanwhile.
    let _lock: Option<DataDir> = match lock_dir.as_deref().map(datadir::prepare).transpose() {
        Ok(lock) => lock,
        Err(DataDirError::Held { path, holder }) => {
            eprintln!(
                "hl7-ihp: a receiver ({holder}) holds the data directory {}; stop it first \
                 (the store must not change while it is copied)",
                path.display()
            );
            return Ok(ExitCode::from(2));
        }
        Err(error) => {
            eprintln!("hl7-ihp: {error}");
            return Ok(ExitCode::from(2));
        }
    };
    eprintln!(
        "migrate: copying {} into {}",
        database.display(),
        target.redacted()
    );
    let options = MigrateOptions {
        batch: usize::try_from(args.batch).unwrap_or(usize::MAX),
        max_rate: args.max_rate,
    };
    let mut last_line: Option<Instant> = None;
    let mut show = |p: &Progress| {
        let due =
            last_line.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY) || p.n_copied == p.n_total;
        if due {
            last_line = Some(Instant::now());
            eprintln!("migrate: {}", progress_line(p));
        }
    };
    match import::migrate(&database, &target, &options, &mut show) {
        Ok(report) => {
            print!("{}", table(&report));
            if report.verified() {
                println!(
                    "migrate: done and verified: {} messages copied in {:.1} s{}",
                    report.n_copied,
                    report.elapsed.as_secs_f64(),
                    if report.resumed_after > 0 {
                        format!(" (continued after message {})", report.resumed_after)
                    } else {
                        String::new()
                    }
                );
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("hl7-ihp: the counts differ (above); the copy is not complete");
                Ok(ExitCode::from(1))
            }
        }
        Err(
            error @ (MigrateError::NotEmpty { .. }
            | MigrateError::OtherSource
            | MigrateError::InUse),
        ) => {
            eprintln!("hl7-ihp: {error}");
            Ok(ExitCode::from(2))
        }
        Err(MigrateError::Store(error)) => {
            eprintln!("hl7-ihp: {error}; run the same command again to continue");
            Ok(ExitCode::from(1))
        }
    }
}

/// `--to` with the password of `--store-password-file`, if given.
fn target(args: &MigrateArgs) -> Result<PostgresLocation, String> {
    let location = match StoreLocation::parse(&args.to) {
        Ok(StoreLocation::Postgres(location)) => location,
        Ok(StoreLocation::Sqlite(_)) => {
            return Err("--to: expected a postgres:// location".into());
        }
        Err(reason) => return Err(format!("invalid --to: {reason}")),
    };
    let Some(path) = &args.store_password_file else {
        return Ok(location);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--store-password-file: cannot read {}: {e}", path.display()))?;
    let password = text.lines().next().unwrap_or_default().trim();
    if password.is_empty() {
        return Err(format!(
            "--store-password-file: {} holds no password",
            path.display()
        ));
    }
    Ok(location.with_password(password.to_string()))
}

/// The database file `--from` names, and the data directory whose lock guards it: the
/// directory given, or a database file's folder when it is a data directory's (it holds
/// the lock file, or the file has the data directory's name for it). A lone copy (a
/// backup) needs no lock.
fn source(from: &Path) -> Result<(PathBuf, Option<PathBuf>), String> {
    if from.is_dir() {
        let database = from.join(SQLITE_FILE_NAME);
        if !database.is_file() {
            return Err(format!(
                "--from: no {SQLITE_FILE_NAME} in {}",
                from.display()
            ));
        }
        return Ok((database, Some(from.to_path_buf())));
    }
    if !from.is_file() {
        return Err(format!(
            "--from: no data directory or database at {}",
            from.display()
        ));
    }
    let folder = from.parent().map(|p| {
        if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        }
    });
    let is_data_dir = folder.is_some_and(|f| f.join(LOCK_FILE_NAME).exists())
        || from.file_name().is_some_and(|n| n == SQLITE_FILE_NAME);
    Ok((
        from.to_path_buf(),
        folder.filter(|_| is_data_dir).map(Path::to_path_buf),
    ))
}

fn progress_line(p: &Progress) -> String {
    let seconds = p.elapsed.as_secs_f64();
    let rate = if seconds > 0.0 {
        p.n_copied as f64 / seconds
    } else {
        0.0
    };
    let percent = if p.n_total > 0 {
        100.0 * p.n_copied as f64 / p.n_total as f64
    } else {
        100.0
    };
    format!(
        "{} of {} messages ({percent:.0}%), through id {}, {rate:.0} msg/s",
        p.n_copied, p.n_total, p.through
    )
}

/// The verification as a table: each count in SQLite and in PostgreSQL.
fn table(report: &MigrateReport) -> String {
    let width = report
        .counts
        .iter()
        .map(|row| row.name.len())
        .max()
        .unwrap_or(0);
    let mut out = format!(
        "{:<width$}  {:>12}  {:>12}\n",
        "COUNT", "SQLITE", "POSTGRESQL"
    );
    for row in &report.counts {
        let mark = if row.source == row.target {
            ""
        } else {
            "  DIFFERS"
        };
        out.push_str(&format!(
            "{:<width$}  {:>12}  {:>12}{mark}\n",
            row.name, row.source, row.target
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_directory_is_locked_and_a_lone_copy_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        assert!(source(&data).is_err(), "no database in it yet");
        std::fs::write(data.join(SQLITE_FILE_NAME), b"").unwrap();
        let (database, lock) = source(&data).unwrap();
        assert_eq!(database, data.join(SQLITE_FILE_NAME));
        assert_eq!(lock.as_deref(), Some(data.as_path()));
        let (_, lock) = source(&data.join(SQLITE_FILE_NAME)).unwrap();
        assert_eq!(lock.as_deref(), Some(data.as_path()));
        let copy = dir.path().join("copy.sqlite3");
        std::fs::write(&copy, b"").unwrap();
        assert_eq!(source(&copy).unwrap(), (copy.clone(), None));
        assert!(source(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn the_table_marks_a_count_that_differs() {
        let report = MigrateReport {
            resumed_after: 0,
            n_copied: 3,
            counts: vec![
                import::CountRow {
                    name: "messages accepted",
                    source: 3,
                    target: 3,
                },
                import::CountRow {
                    name: "alarms",
                    source: 1,
                    target: 0,
                },
            ],
            elapsed: Duration::ZERO,
        };
        let text = table(&report);
        assert!(!report.verified());
        assert!(
            text.lines().nth(1).is_some_and(|l| !l.contains("DIFFERS")),
            "{text}"
        );
        assert!(
            text.lines().nth(2).is_some_and(|l| l.ends_with("DIFFERS")),
            "{text}"
        );
    }
}
