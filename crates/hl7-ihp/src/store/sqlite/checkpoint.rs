//! Checkpoints off the ACK path: the writer counts WAL frames after each commit and a
//! thread of its own copies the WAL into the database, so no caller waits for it. At
//! shutdown the same thread copies the rest and empties the WAL, so that the database file
//! alone holds everything (a copy of it is a backup).

use super::*;

thread_local! {
    /// WAL frames after the writer's last commit, set by SQLite's WAL hook on the writer
    /// thread (the hook is a plain function, so it cannot carry the store with it).
    pub(super) static WAL_FRAMES: Cell<i32> = const { Cell::new(0) };
}

pub(super) fn note_wal_frames(
    _wal: &rusqlite::hooks::Wal,
    n_frames: c_int,
) -> rusqlite::Result<()> {
    WAL_FRAMES.set(n_frames);
    Ok(())
}

/// The hand-over between the writer and the checkpoint thread.
///
/// A PASSIVE checkpoint never blocks the writer, but the WAL starts over from its beginning
/// only when a transaction begins with every frame already copied, and a busy writer always
/// begins its next transaction before another thread finishes copying. So the checkpoint
/// thread copies the bulk (repeating until it has caught up), and then the writer, between
/// two transactions, copies the few frames added since; its next transaction restarts the
/// WAL. The expensive part stays off the ACK path.
#[derive(Default)]
pub(super) struct CheckpointSignal {
    pub(super) state: Mutex<CheckpointState>,
    pub(super) wake: Condvar,
}

#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum Pass {
    #[default]
    Idle,
    Requested,
    Running,
    Done,
}

#[derive(Default)]
pub(super) struct CheckpointState {
    pub(super) pass: Pass,
    pub(super) shutdown: bool,
}

impl CheckpointSignal {
    pub(super) fn lock(&self) -> MutexGuard<'_, CheckpointState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The writer, after each transaction: returns true when the WAL is long and the
    /// checkpoint thread has copied nearly all of it, so the writer should copy the rest.
    pub(super) fn after_commit(&self, n_frames: i32) -> bool {
        let long = n_frames >= CHECKPOINT_FRAMES;
        let mut state = self.lock();
        match (state.pass, long) {
            (Pass::Idle, true) => {
                state.pass = Pass::Requested;
                self.wake.notify_one();
                false
            }
            // Done and still long: the writer's turn. Done but short: the WAL started over
            // by itself, and a later pass must start afresh.
            (Pass::Done, long) => {
                state.pass = Pass::Idle;
                long
            }
            _ => false,
        }
    }

    pub(super) fn shut_down(&self) {
        self.lock().shutdown = true;
        self.wake.notify_one();
    }

    /// The checkpoint thread: waits for a request; false at shutdown.
    pub(super) fn wait(&self) -> bool {
        let mut state = self.lock();
        loop {
            if state.shutdown {
                return false;
            }
            if state.pass == Pass::Requested {
                state.pass = Pass::Running;
                return true;
            }
            state = self.wake.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    pub(super) fn done(&self) {
        self.lock().pass = Pass::Done;
    }
}

/// `PRAGMA wal_checkpoint(PASSIVE)`: copies what it can; returns the frames in the WAL.
pub(super) fn checkpoint_passive(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1))
}

/// `PRAGMA wal_checkpoint(TRUNCATE)`: copies every frame into the database, syncs it, and
/// cuts the WAL to zero bytes; false when a reader (another process) kept it from finishing.
pub(super) fn checkpoint_truncate(conn: &Connection) -> rusqlite::Result<bool> {
    let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))?;
    Ok(busy == 0)
}

/// The checkpoint thread: passes on request until shutdown, then the final checkpoint.
///
/// The store signals shutdown only after the writer thread has ended, so nothing is added
/// to the WAL after the final checkpoint. Without it the last transactions would stay in the
/// WAL file even after a clean stop: the connection that closes last is the read-only
/// reader, and SQLite checkpoints on close only on a connection that may write.
pub(super) fn run_checkpointer(conn: Connection, signal: &CheckpointSignal) {
    run_passes(&conn, signal);
    match checkpoint_truncate(&conn) {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            "a reader kept the final store checkpoint from finishing: until the next start, \
             the database file is complete only with its -wal file"
        ),
        Err(error) => tracing::warn!(%error, "the final store checkpoint failed"),
    }
}

fn run_passes(conn: &Connection, signal: &CheckpointSignal) {
    while signal.wait() {
        let mut previous = 0;
        loop {
            match checkpoint_passive(conn) {
                // Caught up, or the WAL has started over meanwhile.
                Ok(n_frames) if n_frames - previous < CATCH_UP_FRAMES => break,
                Ok(n_frames) => previous = n_frames,
                Err(error) => {
                    tracing::warn!(%error, "store checkpoint failed");
                    break;
                }
            }
        }
        signal.done();
    }
}
