//! The PostgreSQL store's tests: the store contract against a real server
//! (`testdb.rs`), and what several receivers on one database need.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::testdb;
use super::{PgStore, PostgresLocation};
use crate::store::{Store, StoreOptions};

/// The database a test folder's store lives in: a fresh one the first time, the same one
/// when the folder is opened again (the contract reopens stores).
fn database_for(dir: &Path) -> Option<String> {
    static DATABASES: Mutex<Option<HashMap<PathBuf, String>>> = Mutex::new(None);
    let server = testdb::server()?;
    let mut databases = DATABASES.lock().unwrap();
    let databases = databases.get_or_insert_with(HashMap::new);
    let name = databases
        .entry(dir.to_path_buf())
        .or_insert_with(|| server.create_database());
    Some(server.url(name))
}

fn open(dir: &Path, options: &StoreOptions) -> Option<Arc<dyn Store>> {
    let url = database_for(dir)?;
    let location = PostgresLocation::parse(&url).expect("the test server's URL");
    Some(Arc::new(
        PgStore::open(&location, options).expect("open the PostgreSQL store"),
    ))
}

/// The contract's tests, each skipped (one line, passing) without PostgreSQL binaries.
macro_rules! contract_on_postgres {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if testdb::server().is_none() {
                    return;
                }
                crate::store::contract::$name(|dir, options| {
                    open(dir, options).expect("checked above")
                })
                .await;
            }
        )*
    };
}

contract_on_postgres!(
    commit_and_read_back,
    concurrent_committers_are_each_stored_once,
    retransmissions_are_recognised,
    rejected_messages_are_kept_but_never_matched,
    without_dedupe_every_frame_is_stored,
    adt_updates_the_patient_and_other_messages_only_fill_in,
    observations_without_a_patient_change_no_patient,
    patient_records_are_newest_first_and_limited,
    messages_are_listed_newest_first_and_filtered,
    a_reopened_store_finds_everything,
    the_change_feed_names_each_changed_patient_once,
    exporters_keep_their_own_watermarks,
    file_positions_are_recorded_with_the_watermark,
    a_working_store_is_healthy,
    the_feed_holds_every_message_in_commit_order,
    a_patient_feed_is_their_newest_messages,
    messages_are_filtered_by_every_condition,
    messages_page_by_their_cursor,
    one_message_reads_back_whole,
    observations_page_in_record_order_while_data_arrives,
    observations_are_filtered_by_code_and_observation_time,
    trends_summarise_each_code_per_bucket,
);
