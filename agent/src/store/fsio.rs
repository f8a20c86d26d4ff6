//! The file operations the store's durability rests on: atomic replacement
//! of a file (temporary file, `fsync`, rename, directory `fsync`), moves into
//! quarantine, private directories and the directory lock.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Suffix of files being written; any left at open are removed.
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// Mode of the directories the store creates: profiles carry symbols and
/// addresses, so only the owner may look.
const DIR_MODE: u32 = 0o700;
/// Mode of the files the store creates.
const FILE_MODE: u32 = 0o600;

/// Creates `dir` and its missing parents (new ones owner-only).
pub(crate) fn create_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Writes `data` to `path` so that, after a crash at any point, `path` holds
/// either its old content (or nothing) or all of `data`, and once this
/// returns the new content survives a power cut.
///
/// The bytes go to `<path>.tmp` in the same directory, are synced, renamed
/// over `path`, and then the directory is synced so the rename is durable.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    let written = write_synced(&tmp, data).and_then(|()| {
        fs::rename(&tmp, path).map_err(|source| Error::File {
            path: path.to_owned(),
            source,
        })
    });
    if let Err(err) = written {
        // Best effort: a leftover is removed at the next open anyway.
        let _ = fs::remove_file(&tmp);
        return Err(err);
    }
    sync_dir(parent_of(path))
}

/// Creates (or truncates) `path`, writes `data` and syncs it.
fn write_synced(path: &Path, data: &[u8]) -> Result<()> {
    let file_error = |source| Error::File {
        path: path.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(file_error)?;
    file.write_all(data).map_err(file_error)?;
    file.sync_all().map_err(file_error)
}

/// `<path>.tmp`.
fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(TMP_SUFFIX);
    PathBuf::from(name)
}

/// The directory holding `path`.
fn parent_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// Makes renames, creations and removals in `dir` durable.
///
/// File systems that cannot sync a directory (they answer `EINVAL`) are
/// accepted: there is nothing more to do on them.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    let synced = File::open(dir).and_then(|d| d.sync_all());
    match synced {
        Err(err) if err.raw_os_error() != Some(libc::EINVAL) => Err(Error::File {
            path: dir.to_owned(),
            source: err,
        }),
        _ => Ok(()),
    }
}

/// Removes `path`; a file that is already gone is not an error.
pub(crate) fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(Error::File {
            path: path.to_owned(),
            source: err,
        }),
        _ => Ok(()),
    }
}

/// Moves `path` into `quarantine` under its own name, or with `.1`, `.2`, ...
/// appended if that name is taken. Returns the new path, or `None` if `path`
/// no longer exists.
pub(crate) fn quarantine(path: &Path, quarantine: &Path) -> Result<Option<PathBuf>> {
    if fs::symlink_metadata(path).is_err() {
        return Ok(None);
    }
    create_dir(quarantine).map_err(|source| Error::File {
        path: quarantine.to_owned(),
        source,
    })?;
    let name = path.file_name().unwrap_or(path.as_os_str());
    let mut target = quarantine.join(name);
    let mut n = 0u32;
    while fs::symlink_metadata(&target).is_ok() {
        n += 1;
        let mut numbered = name.to_owned();
        numbered.push(format!(".{n}"));
        target = quarantine.join(numbered);
    }
    match fs::rename(path, &target) {
        Ok(()) => Ok(Some(target)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::File {
            path: path.to_owned(),
            source,
        }),
    }
}

/// An exclusive `flock` on `<dir>/lock`, held for as long as the value lives,
/// so two stores (in one process or two) never work on one directory: the
/// clean-up at open would otherwise remove the other one's files in flight.
#[derive(Debug)]
pub(crate) struct DirLock {
    /// The open lock file; closing it releases the lock.
    _file: File,
}

impl DirLock {
    /// Takes the lock of `dir` without waiting.
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock> {
        let path = dir.join("lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(&path)
            .map_err(|source| Error::StoreDir {
                path: dir.to_owned(),
                source,
            })?;
        // SAFETY: `flock` only reads the descriptor number, which `file` keeps
        // open for the duration of the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(DirLock { _file: file });
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            Err(Error::StoreLocked {
                path: dir.to_owned(),
            })
        } else {
            Err(Error::File { path, source: err })
        }
    }
}
