//! The data directory of a receiver: prepared, checked and locked before any port is bound,
//! so that a directory the receiver cannot use stops it with a clear message (exit 2)
//! instead of after it said "listening".
//!
//! [`prepare`] checks that the directory is one (or creates it, owner-only), that it can
//! write there (the lock file is the proof), that no other receiver holds it, and that
//! `patients/` is a real folder: a symbolic link there is refused, because following it
//! would re-mode its target and remove files in it. A directory open to other users is made
//! owner-only (0700) with a warning; it holds patient data. Last, a probe file
//! finds out whether the folder's file system ignores case, which decides the file names
//! ([`crate::export::NameCase`]).
//!
//! One receiver per data directory (docs/storage.md): the store's writer keeps state in
//! memory (waiting index entries, the next message id) that a second writer would
//! contradict, and two exporters would fight over the files. [`prepare`] takes an exclusive
//! `flock` on `hl7-ihp.lock` in the directory and writes its pid there; the lock lasts as
//! long as the returned [`DataDir`], and the kernel drops it when the process ends, however
//! it ends, so a crash leaves no stale lock. The inspection commands (`patients`, `show`,
//! `messages`) take no lock: they only read, and SQLite lets them beside the receiver.
//!
//! With a PostgreSQL store, receivers may share one data directory ([`prepare_shared`]):
//! the store keeps no state in the directory, and the store's `export` lease decides which
//! of them writes `patients/`. They take a *shared* `flock` instead, so a receiver or a
//! command that needs the directory alone (a SQLite store, `demo`, `purge`, `replay`) is
//! still refused while any of them runs, and they are refused while it does.

use std::fs::{self, File};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

use crate::export::NameCase;

/// The lock file's name in the data directory.
pub const LOCK_FILE_NAME: &str = "hl7-ihp.lock";
/// The patient files' folder in the data directory.
pub const PATIENTS_DIR_NAME: &str = "patients";

/// A data directory prepared for one receiver, locked for as long as this value lives.
///
/// Whoever holds it should keep it until the store has closed: the commands hold it outside
/// their async runtime, so that it is released only after every task (and with them the
/// store, which checkpoints as it closes) is gone.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    patients: PathBuf,
    name_case: NameCase,
    /// Holds the `flock`; closing it releases the lock.
    _lock: File,
}

impl DataDir {
    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The patient files' folder inside it.
    pub fn patients_dir(&self) -> &Path {
        &self.patients
    }

    /// Whether the patients folder's file system tells names apart by case, and so how the
    /// file names must be written.
    pub fn name_case(&self) -> NameCase {
        self.name_case
    }
}

/// Why a data directory cannot be used. Each names the directory (a setting, not patient
/// data) and is a configuration error: exit status 2.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// The directory does not exist and cannot be created, or cannot be looked at.
    #[error("cannot use the data directory {}: {source}", path.display())]
    Unusable {
        /// The data directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The lock file cannot be created or opened for writing.
    #[error("cannot write in the data directory {}: {source}", path.display())]
    NotWritable {
        /// The data directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Another process holds the lock.
    #[error("another receiver ({holder}) holds the data directory {}", path.display())]
    Held {
        /// The data directory.
        path: PathBuf,
        /// The holder's pid, as it wrote it into the lock file.
        holder: Holder,
    },
    /// The lock could not be taken for another reason (a file system without locks).
    #[error("cannot lock the data directory {}: {source}", path.display())]
    Lock {
        /// The data directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The path exists and is something else than a directory.
    #[error("the data directory {} is not a directory", path.display())]
    NotADirectory {
        /// The path given as the data directory.
        path: PathBuf,
    },
    /// The directory is open to other users and cannot be made owner-only.
    #[error("cannot make the data directory {} owner-only: {source}", path.display())]
    Permissions {
        /// The data directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// `patients/` is a symbolic link.
    #[error(
        "{} is a symbolic link; patient files are written only into a real folder \
         (move the folder there, or point the data directory at its real place)",
        path.display()
    )]
    PatientsSymlink {
        /// The patients folder.
        path: PathBuf,
    },
    /// `patients/` is a file or other non-folder.
    #[error("{} is not a folder", path.display())]
    PatientsNotAFolder {
        /// The patients folder.
        path: PathBuf,
    },
    /// `patients/` cannot be created or made private.
    #[error("cannot prepare the patients folder {}: {source}", path.display())]
    Patients {
        /// The patients folder.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// The process holding a data directory, as far as its lock file tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holder {
    /// `None` when the file holds no pid yet (the holder has just taken the lock).
    pub pid: Option<u32>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "pid {pid}"),
            None => f.write_str("pid unknown"),
        }
    }
}

/// Prepares the data directory `path` for a receiver: creates it owner-only if it is
/// missing, takes its lock, makes it owner-only if it was not, and checks and prepares
/// `patients/`. Nothing in the directory is changed before the lock is held.
pub fn prepare(path: &Path) -> Result<DataDir, DataDirError> {
    prepare_with(path, Sharing::Exclusive)
}

/// Prepares the data directory `path` as [`prepare`] does, for a receiver that may share it
/// with others on the same PostgreSQL store: the lock is a shared one, so only a holder of
/// the exclusive lock is refused (and refuses it), and no pid is written.
pub fn prepare_shared(path: &Path) -> Result<DataDir, DataDirError> {
    prepare_with(path, Sharing::Shared)
}

/// Who may hold a data directory beside this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sharing {
    /// Nobody: a SQLite store, whose writer keeps state in memory.
    Exclusive,
    /// Other receivers on the same PostgreSQL store.
    Shared,
}

fn prepare_with(path: &Path, sharing: Sharing) -> Result<DataDir, DataDirError> {
    let unusable = |source| DataDirError::Unusable {
        path: path.to_path_buf(),
        source,
    };
    // `metadata`, which follows a symbolic link: a data directory that is a link to the
    // real one (a mount elsewhere) is an ordinary set-up.
    match fs::metadata(path) {
        Ok(metadata) if metadata.is_dir() => {}
        Ok(_) => {
            return Err(DataDirError::NotADirectory {
                path: path.to_path_buf(),
            });
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(unusable)?;
        }
        Err(error) => return Err(unusable(error)),
    }
    let lock = lock(path, sharing)?;
    make_owner_only(path)?;
    let patients = path.join(PATIENTS_DIR_NAME);
    let name_case = prepare_patients(&patients)?;
    Ok(DataDir {
        path: path.to_path_buf(),
        patients,
        name_case,
        _lock: lock,
    })
}

/// Makes the data directory 0700 when group or others had any access, with a warning: it
/// names the directory and the old mode, nothing of its contents.
fn make_owner_only(path: &Path) -> Result<(), DataDirError> {
    let permissions = |source| DataDirError::Permissions {
        path: path.to_path_buf(),
        source,
    };
    let mode = fs::metadata(path)
        .map_err(permissions)?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(permissions)?;
        tracing::warn!(
            data_dir = %path.display(),
            mode = format!("{mode:o}"),
            "the data directory was open to other users; made it owner-only (0700)"
        );
    }
    Ok(())
}

/// Refuses a `patients/` that is a symbolic link or not a folder, creates it (or makes it
/// owner-only) the way the exporter does, and finds out whether its file system ignores case.
fn prepare_patients(patients: &Path) -> Result<NameCase, DataDirError> {
    // `symlink_metadata`: the link itself, not where it points.
    match fs::symlink_metadata(patients) {
        Ok(metadata) if metadata.file_type().is_symlink() => {
            return Err(DataDirError::PatientsSymlink {
                path: patients.to_path_buf(),
            });
        }
        Ok(metadata) if !metadata.is_dir() => {
            return Err(DataDirError::PatientsNotAFolder {
                path: patients.to_path_buf(),
            });
        }
        _ => {}
    }
    let failed = |source| DataDirError::Patients {
        path: patients.to_path_buf(),
        source,
    };
    let folder = crate::export::prepare_dir(patients).map_err(failed)?;
    let name_case = folder.probe_case().map_err(failed)?;
    if name_case == NameCase::Insensitive {
        tracing::info!(
            "the patients folder's file system ignores case: upper-case letters in patient \
             ids are written as %XX in file names"
        );
    }
    Ok(name_case)
}

/// Takes the lock on the data directory's lock file; an exclusive holder writes this
/// process's pid into it.
fn lock(data_dir: &Path, sharing: Sharing) -> Result<File, DataDirError> {
    let lock_path = data_dir.join(LOCK_FILE_NAME);
    // Not truncated on opening: until this process holds the lock, the pid in the file is
    // the holder's, and a refused receiver reads it from there.
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&lock_path)
        .map_err(|source| DataDirError::NotWritable {
            path: data_dir.to_path_buf(),
            source,
        })?;
    let operation = match sharing {
        Sharing::Exclusive => FlockOperation::NonBlockingLockExclusive,
        Sharing::Shared => FlockOperation::NonBlockingLockShared,
    };
    if let Err(error) = flock(&file, operation) {
        if error == rustix::io::Errno::WOULDBLOCK {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(DataDirError::Held {
                path: data_dir.to_path_buf(),
                holder: Holder {
                    pid: text.trim().parse().ok(),
                },
            });
        }
        return Err(DataDirError::Lock {
            path: data_dir.to_path_buf(),
            source: error.into(),
        });
    }
    if sharing == Sharing::Shared {
        // The pid of one of several holders would name the wrong one: the file keeps the
        // last exclusive holder's.
        return Ok(file);
    }
    let written = (|| {
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.set_len(0)?;
        writeln!(file, "{}", std::process::id())
    })();
    written.map_err(|source| DataDirError::NotWritable {
        path: data_dir.to_path_buf(),
        source,
    })?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_holders_share_and_exclude_an_exclusive_one() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("data");
        let first = prepare_shared(&path).unwrap();
        let second = prepare_shared(&path).unwrap();
        assert!(
            matches!(prepare(&path), Err(DataDirError::Held { .. })),
            "a SQLite receiver is refused beside PostgreSQL ones"
        );
        drop((first, second));
        let exclusive = prepare(&path).unwrap();
        assert!(matches!(
            prepare_shared(&path),
            Err(DataDirError::Held { .. })
        ));
        drop(exclusive);
    }

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_and_freed_with_the_first() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("data");
        let first = prepare(&path).unwrap();
        let text = fs::read_to_string(path.join(LOCK_FILE_NAME)).unwrap();
        assert_eq!(text, format!("{}\n", std::process::id()));
        // `flock` locks belong to an open file, so a second one conflicts in one process too.
        match prepare(&path) {
            Err(DataDirError::Held { holder, .. }) => {
                assert_eq!(holder.pid, Some(std::process::id()));
            }
            other => panic!("{other:?}"),
        }
        // Refused, the second one left the holder's pid in place.
        assert_eq!(fs::read_to_string(path.join(LOCK_FILE_NAME)).unwrap(), text);
        drop(first);
        prepare(&path).unwrap();
    }

    #[test]
    fn the_holders_message_says_who() {
        let error = DataDirError::Held {
            path: PathBuf::from("/var/lib/hl7-ihp"),
            holder: Holder { pid: Some(42) },
        };
        assert_eq!(
            error.to_string(),
            "another receiver (pid 42) holds the data directory /var/lib/hl7-ihp"
        );
        assert_eq!(Holder { pid: None }.to_string(), "pid unknown");
    }

    #[test]
    fn what_is_not_a_directory_is_refused() {
        let temp = tempfile::tempdir().unwrap();
        let file = temp.path().join("file");
        fs::write(&file, b"").unwrap();
        assert!(matches!(
            prepare(&file),
            Err(DataDirError::NotADirectory { .. })
        ));
        assert!(matches!(
            prepare(&file.join("below")),
            Err(DataDirError::Unusable { .. })
        ));

        let data = temp.path().join("data");
        fs::create_dir(&data).unwrap();
        let elsewhere = temp.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, data.join(PATIENTS_DIR_NAME)).unwrap();
        assert!(matches!(
            prepare(&data),
            Err(DataDirError::PatientsSymlink { .. })
        ));
        fs::remove_file(data.join(PATIENTS_DIR_NAME)).unwrap();
        fs::write(data.join(PATIENTS_DIR_NAME), b"").unwrap();
        assert!(matches!(
            prepare(&data),
            Err(DataDirError::PatientsNotAFolder { .. })
        ));
    }

    #[test]
    fn a_data_directory_that_is_a_link_to_one_is_used() {
        let temp = tempfile::tempdir().unwrap();
        let real = temp.path().join("real");
        fs::create_dir(&real).unwrap();
        let link = temp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        prepare(&link).unwrap();
        assert!(real.join(PATIENTS_DIR_NAME).is_dir());
    }

    #[test]
    fn a_loose_directory_is_made_owner_only() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("data");
        fs::create_dir(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o751)).unwrap();
        prepare(&path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }

    #[test]
    fn a_missing_directory_is_created_owner_only() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("a/b");
        let data_dir = prepare(&path).unwrap();
        assert_eq!(data_dir.path(), path);
        assert_eq!(data_dir.patients_dir(), path.join("patients"));
        assert_eq!(data_dir.name_case(), NameCase::Sensitive);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let mode = fs::metadata(path.join(LOCK_FILE_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
