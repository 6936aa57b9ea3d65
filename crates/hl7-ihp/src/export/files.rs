//! The patients folder and its files: created private, replaced atomically (write, sync,
//! rename), and the temporary files of a crash removed.

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Temporary files start with this; no patient file does.
pub const TEMP_PREFIX: &str = ".tmp-";

/// Creates the patients folder if needed, with mode 0700 (also when it already existed).
pub fn prepare_dir(patients_dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(patients_dir)?;
    fs::set_permissions(patients_dir, fs::Permissions::from_mode(0o700))
}

/// Replaces `dir/name` with `bytes` so that a reader sees the old file or the new one, never
/// a part: a temporary file in the same folder, synced, renamed over it. The folder itself is
/// synced later, once per round.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    static N_TEMP_FILES: AtomicU64 = AtomicU64::new(0);
    let n = N_TEMP_FILES.fetch_add(1, Ordering::Relaxed);
    let temp = dir.join(format!("{TEMP_PREFIX}{}-{n}", std::process::id()));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        // The mode above is filtered by the umask; owner-only is the rule either way.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, dir.join(name))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Removes temporary files a crash left behind; returns how many.
pub fn remove_stale_temp_files(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut n_removed = 0;
    for entry in entries.flatten() {
        let is_temp = entry
            .file_name()
            .as_encoded_bytes()
            .starts_with(TEMP_PREFIX.as_bytes());
        if is_temp && fs::remove_file(entry.path()).is_ok() {
            n_removed += 1;
        }
    }
    n_removed
}
