//! The PostgreSQL schema's numbered migrations (`migrations/*.sql`) and its version, kept in
//! `schema_version`; applied under an advisory lock, so receivers starting together migrate
//! once.

use tokio_postgres::Client;

use super::db_error;
use crate::store::StoreError;

/// The migrations in order: version n is `MIGRATIONS[n - 1]`.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_schema.sql"),
    include_str!("migrations/0002_alarms_devices.sql"),
    include_str!("migrations/0003_compact_observations.sql"),
    include_str!("migrations/0004_leases.sql"),
];

/// The advisory lock key that serialises migrations (`'hl7m'`).
const MIGRATION_LOCK: i64 = 0x686c_376d;

/// The version this program writes.
pub(super) fn supported() -> i64 {
    MIGRATIONS.len() as i64
}

async fn version(client: &Client) -> Result<Option<i64>, StoreError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
        .await
        .map_err(|e| db_error("cannot read the schema version", &e))?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
        .await
        .map_err(|e| db_error("cannot read the schema version", &e))?;
    Ok(Some(i64::from(row.get::<_, i32>(0))))
}

/// Creates or brings the schema to [`supported`]; refuses a newer one.
pub(super) async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| db_error("cannot lock the schema", &e))?;
    let result = apply(client).await;
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    result
}

async fn apply(client: &mut Client) -> Result<(), StoreError> {
    let found = match version(client).await? {
        Some(found) => found,
        None => {
            client
                .batch_execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (
                         version    integer PRIMARY KEY,
                         applied_at timestamptz NOT NULL DEFAULT now()
                     )",
                )
                .await
                .map_err(|e| db_error("cannot create schema_version", &e))?;
            0
        }
    };
    if found > supported() {
        return Err(StoreError::NewerSchema {
            found,
            supported: supported(),
        });
    }
    for (n, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = n as i32 + 1;
        let transaction = client
            .transaction()
            .await
            .map_err(|e| db_error("cannot migrate", &e))?;
        transaction
            .batch_execute(sql)
            .await
            .map_err(|e| db_error(&format!("migration {version} failed"), &e))?;
        transaction
            .execute(
                "INSERT INTO schema_version (version) VALUES ($1)",
                &[&version],
            )
            .await
            .map_err(|e| db_error("cannot record the schema version", &e))?;
        transaction
            .commit()
            .await
            .map_err(|e| db_error("cannot migrate", &e))?;
        tracing::info!(version, "PostgreSQL schema migrated");
    }
    Ok(())
}

/// For a reader: the schema must be exactly the one this program knows.
pub(super) async fn check(client: &Client) -> Result<(), StoreError> {
    match version(client).await? {
        Some(found) if found == supported() => Ok(()),
        Some(found) if found > supported() => Err(StoreError::NewerSchema {
            found,
            supported: supported(),
        }),
        Some(found) => Err(StoreError::Database(format!(
            "the database has schema version {found}; a receiver of this version migrates it to {}",
            supported()
        ))),
        None => Err(StoreError::Database(
            "the database holds no hl7-ihp store (no schema_version table)".into(),
        )),
    }
}
