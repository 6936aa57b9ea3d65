//! The patients folder and its files: created private, replaced atomically (write, sync,
//! rename), and the temporary files of a crash removed.
//!
//! The folder is opened once, refusing a symbolic link, and every later operation goes
//! through that handle (`openat`, `renameat`, `unlinkat`, `fsync` of the folder): a symbolic
//! link put in place of `patients/` while the receiver runs is never followed, so the
//! exporter never writes, re-modes or removes anything outside the folder it checked. (A
//! folder renamed while the receiver runs keeps receiving the files under its new name,
//! until the next start.)

use std::fs;
use std::io::{self, Write as _};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags};

use super::names::NameCase;

/// Temporary files start with this; no patient file does.
pub const TEMP_PREFIX: &str = ".tmp-";

/// What tells one version of a file from another: the inode, the size and the modification
/// time. The JSON files are rebuilt from their last version only when it is still the one
/// the exporter wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    ino: u64,
    size: u64,
    mtime: (i64, i64),
}

impl Identity {
    fn of(stat: &rustix::fs::Stat) -> Identity {
        Identity {
            ino: stat.st_ino,
            size: u64::try_from(stat.st_size).unwrap_or(0),
            mtime: (stat.st_mtime, stat.st_mtime_nsec as i64),
        }
    }

    /// The file's size in bytes.
    pub fn size(self) -> u64 {
        self.size
    }
}

/// The patients folder, open: the handle every file operation goes through.
#[derive(Debug)]
pub struct Folder {
    fd: OwnedFd,
}

/// Creates the patients folder if needed and opens it, with mode 0700 (also when it already
/// existed). A symbolic link at `patients_dir` is an error (`ELOOP` or `ENOTDIR`), not
/// followed.
pub fn prepare_dir(patients_dir: &Path) -> io::Result<Folder> {
    match fs::DirBuilder::new().mode(0o700).create(patients_dir) {
        Err(error) if error.kind() != io::ErrorKind::AlreadyExists => return Err(error),
        _ => {}
    }
    let fd = rustix::fs::open(
        patients_dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o700))?;
    Ok(Folder { fd })
}

impl Folder {
    /// Replaces `name` with `bytes` so that a reader sees the old file or the new one, never
    /// a part: a temporary file in the same folder, synced, renamed over it. The folder
    /// itself is synced later, once per round ([`Folder::sync`]).
    /// Returns the new file's [`Identity`].
    pub fn write_atomically(&self, name: &str, bytes: &[u8]) -> io::Result<Identity> {
        let (temp, identity) = self.create_temp(bytes, true)?;
        self.rename(&temp, name)
            .inspect_err(|_| self.remove_temp(&temp))?;
        Ok(identity)
    }

    /// The first half of a batched atomic replacement: `bytes` in a new temporary file of
    /// the folder (0600), not yet synced; returns its name and identity. Then
    /// [`Folder::sync_files`] once for the batch, [`Folder::rename`] each, [`Folder::sync`].
    pub fn write_temp(&self, bytes: &[u8]) -> io::Result<(String, Identity)> {
        self.create_temp(bytes, false)
    }

    /// `bytes` in a new temporary file (0600), synced when `sync`.
    fn create_temp(&self, bytes: &[u8], sync: bool) -> io::Result<(String, Identity)> {
        static N_TEMP_FILES: AtomicU64 = AtomicU64::new(0);
        let n = N_TEMP_FILES.fetch_add(1, Ordering::Relaxed);
        let temp = format!("{TEMP_PREFIX}{}-{n}", std::process::id());
        let result = (|| {
            let fd = rustix::fs::openat(
                &self.fd,
                temp.as_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )?;
            let mut file = fs::File::from(fd);
            // The mode above is filtered by the umask; owner-only is the rule either way.
            file.set_permissions(fs::Permissions::from_mode(0o600))?;
            file.write_all(bytes)?;
            if sync {
                file.sync_all()?;
            }
            Ok(Identity::of(&rustix::fs::fstat(&file)?))
        })();
        match result {
            Ok(identity) => Ok((temp, identity)),
            Err(error) => {
                let _ = rustix::fs::unlinkat(&self.fd, temp.as_str(), AtFlags::empty());
                Err(error)
            }
        }
    }

    /// Renames a temporary file of [`Folder::write_temp`] over `name`.
    pub fn rename(&self, temp: &str, name: &str) -> io::Result<()> {
        Ok(rustix::fs::renameat(&self.fd, temp, &self.fd, name)?)
    }

    /// Removes these files (a merged-away patient's) and syncs the folder, on a blocking
    /// thread: done once every one is gone, or the first error.
    pub async fn remove_all(self: std::sync::Arc<Self>, names: Vec<String>) -> io::Result<()> {
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            for name in &names {
                self.remove(name)?;
            }
            self.sync()
        })
        .await
        .unwrap_or_else(|_| Err(io::Error::other("file remover task failed")))
    }

    /// Removes the file `name` (a merged-away patient's); no such file is no error. The
    /// removal is durable after [`Folder::sync`].
    pub fn remove(&self, name: &str) -> io::Result<()> {
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Removes a temporary file that will not be renamed.
    pub fn remove_temp(&self, temp: &str) {
        let _ = rustix::fs::unlinkat(&self.fd, temp, AtFlags::empty());
    }

    /// Publishes files written under temporary names: makes their data durable
    /// ([`Folder::sync_files`]), renames each `(temp, name)` into place, then syncs the
    /// folder; on a failed data sync the temporary files are removed and nothing is renamed.
    /// Blocking: run it off the async workers.
    pub fn publish(&self, names: &[(String, String)]) -> io::Result<()> {
        if let Err(error) = self.sync_files() {
            for (temp, _) in names {
                self.remove_temp(temp);
            }
            return Err(error);
        }
        for (temp, name) in names {
            self.rename(temp, name)?;
        }
        self.sync()
    }

    /// Makes the data of every file written in the folder's file system durable
    /// (`syncfs`): one call for a batch of files instead of an `fsync` each.
    pub fn sync_files(&self) -> io::Result<()> {
        Ok(rustix::fs::syncfs(&self.fd)?)
    }

    /// Reads `name` whole, with its identity; `None` when there is no such file. A symbolic
    /// link is not followed.
    pub fn read(&self, name: &str) -> io::Result<Option<(Vec<u8>, Identity)>> {
        let fd = match rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        let mut file = fs::File::from(fd);
        let identity = Identity::of(&rustix::fs::fstat(&file)?);
        let mut bytes = Vec::with_capacity(usize::try_from(identity.size).unwrap_or(0));
        io::Read::read_to_end(&mut file, &mut bytes)?;
        Ok(Some((bytes, identity)))
    }

    /// The identity of `name` now; `None` when there is no such file.
    pub fn identity(&self, name: &str) -> io::Result<Option<Identity>> {
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(Some(Identity::of(&stat))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Opens `name` to read and append, creating it owner-only (0600) when missing. A
    /// symbolic link is not followed.
    pub fn open_append(&self, name: &str) -> io::Result<fs::File> {
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDWR | OFlags::CREATE | OFlags::APPEND | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        let file = fs::File::from(fd);
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        Ok(file)
    }

    /// Makes the renames in the folder durable.
    pub fn sync(&self) -> io::Result<()> {
        Ok(rustix::fs::fsync(&self.fd)?)
    }

    /// Whether the folder's file system tells names apart by case: creates
    /// `.tmp-case-probe-<pid>`, looks for `.TMP-CASE-PROBE-<pid>`, and removes the probe.
    ///
    /// The upper-case name counts only if it is the probe itself (same device and inode,
    /// the link not followed), so a file of that name left by anything else, or a link
    /// to the probe, does not pass for a file system that ignores case. The probe has the
    /// temporary files' prefix: a crash's leftover goes with them at the next start.
    pub fn probe_case(&self) -> io::Result<NameCase> {
        let lower = format!("{TEMP_PREFIX}case-probe-{}", std::process::id());
        let upper = lower.to_ascii_uppercase();
        // Left by an earlier process with this pid, which would make `EXCL` fail.
        let _ = rustix::fs::unlinkat(&self.fd, lower.as_str(), AtFlags::empty());
        let probe = rustix::fs::openat(
            &self.fd,
            lower.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        let found = (|| {
            let own = rustix::fs::fstat(&probe)?;
            match rustix::fs::statat(&self.fd, upper.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(other) if other.st_dev == own.st_dev && other.st_ino == own.st_ino => {
                    Ok(NameCase::Insensitive)
                }
                Ok(_) => Ok(NameCase::Sensitive),
                Err(rustix::io::Errno::NOENT) => Ok(NameCase::Sensitive),
                Err(error) => Err(io::Error::from(error)),
            }
        })();
        drop(probe);
        let removed = rustix::fs::unlinkat(&self.fd, lower.as_str(), AtFlags::empty());
        let found = found?;
        removed?;
        Ok(found)
    }

    /// Removes temporary files a crash left behind; returns how many.
    pub fn remove_stale_temp_files(&self) -> usize {
        let Ok(entries) = rustix::fs::Dir::read_from(&self.fd) else {
            return 0;
        };
        let mut n_removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let is_temp = name.to_bytes().starts_with(TEMP_PREFIX.as_bytes());
            if is_temp && rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()).is_ok() {
                n_removed += 1;
            }
        }
        n_removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// `<temp>/elsewhere`, 0755, with a file that looks like an unfinished patient file.
    fn elsewhere(temp: &Path) -> std::path::PathBuf {
        let elsewhere = temp.join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        fs::set_permissions(&elsewhere, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(elsewhere.join(".tmp-9-9"), b"not ours").unwrap();
        elsewhere
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn files_replace_each_other_whole_and_private() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("patients");
        let folder = prepare_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        folder.write_atomically("patient_a.json", b"one").unwrap();
        folder.write_atomically("patient_a.json", b"two").unwrap();
        assert_eq!(fs::read(dir.join("patient_a.json")).unwrap(), b"two");
        assert_eq!(mode(&dir.join("patient_a.json")), 0o600);
        assert_eq!(names(&dir), ["patient_a.json"]);
        // An existing folder is made owner-only again.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        drop(prepare_dir(&dir).unwrap());
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn the_probe_finds_this_file_system_case_sensitive_and_leaves_nothing() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("patients");
        let folder = prepare_dir(&dir).unwrap();
        // ext4 and tmpfs here, as on most Linux systems.
        assert_eq!(folder.probe_case().unwrap(), NameCase::Sensitive);
        assert!(names(&dir).is_empty());

        // Neither a file of the upper-case name nor a link to the probe fools it.
        let pid = std::process::id();
        let upper = dir.join(format!(".TMP-CASE-PROBE-{pid}"));
        fs::write(&upper, b"someone else's").unwrap();
        assert_eq!(folder.probe_case().unwrap(), NameCase::Sensitive);
        fs::remove_file(&upper).unwrap();
        std::os::unix::fs::symlink(format!(".tmp-case-probe-{pid}"), &upper).unwrap();
        assert_eq!(folder.probe_case().unwrap(), NameCase::Sensitive);
        fs::remove_file(&upper).unwrap();

        // A probe left by an earlier process with this pid is replaced, then removed.
        fs::write(dir.join(format!(".tmp-case-probe-{pid}")), b"").unwrap();
        assert_eq!(folder.probe_case().unwrap(), NameCase::Sensitive);
        assert!(names(&dir).is_empty());
    }

    #[test]
    fn a_symlink_in_place_of_the_folder_is_not_followed() {
        let temp = tempfile::tempdir().unwrap();
        let elsewhere = elsewhere(temp.path());
        let link = temp.path().join("patients");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        assert!(prepare_dir(&link).is_err());
        assert_eq!(mode(&elsewhere), 0o755);
        assert_eq!(names(&elsewhere), [".tmp-9-9"]);
    }

    #[test]
    fn a_folder_swapped_for_a_symlink_later_is_still_the_one_written() {
        let temp = tempfile::tempdir().unwrap();
        let elsewhere = elsewhere(temp.path());
        let dir = temp.path().join("patients");
        let folder = prepare_dir(&dir).unwrap();
        let moved = temp.path().join("moved");
        fs::rename(&dir, &moved).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &dir).unwrap();

        folder.write_atomically("patient_x.json", b"{}").unwrap();
        folder.sync().unwrap();
        fs::write(moved.join(".tmp-1-1"), b"a crash's").unwrap();
        assert_eq!(folder.remove_stale_temp_files(), 1);
        assert_eq!(names(&moved), ["patient_x.json"]);
        assert_eq!(names(&elsewhere), [".tmp-9-9"]);
        assert_eq!(mode(&elsewhere), 0o755);
    }
}
