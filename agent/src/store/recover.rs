//! What [`Store::open`](super::Store::open) finds on disk: the metadata of
//! every complete snapshot, with leftovers of interrupted writes removed and
//! damaged snapshots moved to quarantine (each reported once).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use super::fsio::{self, TMP_SUFFIX};
use super::id;
use super::{DATA_SUFFIX, META_SUFFIX, SnapshotMeta};
use crate::error::{Error, Result};

/// Metadata files larger than this are not read: ours are a few KiB.
const MAX_META_BYTES: u64 = 1 << 20;

/// The outcome of scanning the snapshot directory.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// Metadata of the snapshots whose files are complete, in no order.
    pub(crate) metas: Vec<SnapshotMeta>,
    /// Snapshots quarantined or removed as partial writes.
    pub(crate) skipped: usize,
}

/// Scans `snapshots`: removes `*.tmp` files and data files without
/// metadata, quarantines metadata that does not parse or does not match its
/// data file, and returns the rest.
pub(crate) fn recover(snapshots: &Path, quarantine: &Path) -> Result<Recovered> {
    let dir_error = |source| Error::StoreDir {
        path: snapshots.to_owned(),
        source,
    };
    let mut metas = BTreeSet::new();
    let mut datas = BTreeMap::new();
    let mut changed = false;
    for entry in fs::read_dir(snapshots).map_err(dir_error)? {
        let entry = entry.map_err(dir_error)?;
        let path = entry.path();
        // Names that are not UTF-8 were not written by the store.
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.ends_with(TMP_SUFFIX) {
            tracing::debug!("{}: removing an unfinished write", path.display());
            fsio::remove_if_present(&path)?;
            changed = true;
        } else if let Some(stem) = name.strip_suffix(META_SUFFIX) {
            metas.insert(stem.to_owned());
        } else if let Some(stem) = name.strip_suffix(DATA_SUFFIX) {
            datas.insert(stem.to_owned(), path);
        }
    }

    let mut out = Recovered::default();
    for stem in &metas {
        let meta_path = snapshots.join(format!("{stem}{META_SUFFIX}"));
        let data_path = datas.remove(stem);
        match check(stem, &meta_path, data_path.as_deref()) {
            Ok(meta) => out.metas.push(meta),
            Err(problem) => {
                out.skipped += 1;
                changed = true;
                quarantine_pair(&meta_path, data_path.as_deref(), quarantine, &problem);
            }
        }
    }
    for (_, path) in datas {
        tracing::info!(
            "{}: data file without metadata, left by an interrupted write; removed",
            path.display()
        );
        fsio::remove_if_present(&path)?;
        out.skipped += 1;
        changed = true;
    }
    if changed {
        fsio::sync_dir(snapshots)?;
    }
    Ok(out)
}

/// Moves a snapshot's files to quarantine and reports it, once.
pub(crate) fn quarantine_pair(
    meta_path: &Path,
    data_path: Option<&Path>,
    quarantine: &Path,
    problem: &str,
) {
    let mut moved = Vec::new();
    for path in [Some(meta_path), data_path].into_iter().flatten() {
        match fsio::quarantine(path, quarantine) {
            Ok(_) => moved.push(path),
            Err(err) => tracing::warn!("could not quarantine {}: {err}", path.display()),
        }
    }
    tracing::warn!(
        "{}: {problem}; snapshot skipped, {} file(s) moved to {}",
        meta_path.display(),
        moved.len(),
        quarantine.display()
    );
}

/// Reads and validates one metadata file against its data file.
fn check(stem: &str, meta_path: &Path, data_path: Option<&Path>) -> Result<SnapshotMeta, String> {
    let text = read_bounded(meta_path)?;
    let meta: SnapshotMeta =
        serde_json::from_slice(&text).map_err(|e| format!("not valid snapshot metadata: {e}"))?;
    if meta.id != stem {
        return Err(format!(
            "its id `{}` does not match the file name",
            meta.id.escape_debug()
        ));
    }
    if !id::is_valid_id(&meta.id) {
        return Err("the file name is not a valid snapshot id".to_owned());
    }
    id::validate_kind(&meta.kind).map_err(|e| e.to_string())?;
    if !id::is_valid_time(meta.time) {
        return Err(format!("time {} is not valid Unix seconds", meta.time));
    }
    if !id::is_checksum(&meta.checksum) {
        return Err(format!(
            "checksum `{}` is not 16 hex digits",
            meta.checksum.escape_debug()
        ));
    }
    let Some(data_path) = data_path else {
        return Err(format!("its data file {stem}{DATA_SUFFIX} is missing"));
    };
    let info = fs::metadata(data_path)
        .map_err(|e| format!("cannot read data file {}: {e}", data_path.display()))?;
    if !info.is_file() {
        return Err(format!("{} is not a regular file", data_path.display()));
    }
    if info.len() != meta.bytes {
        return Err(format!(
            "data file {} has {} bytes where the metadata says {} (truncated or overwritten)",
            data_path.display(),
            info.len(),
            meta.bytes
        ));
    }
    Ok(meta)
}

/// The content of `path`, refused above [`MAX_META_BYTES`].
fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut text = Vec::new();
    file.take(MAX_META_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|e| format!("cannot read: {e}"))?;
    if text.len() as u64 > MAX_META_BYTES {
        return Err(format!(
            "larger than {MAX_META_BYTES} bytes, too large for snapshot metadata"
        ));
    }
    Ok(text)
}

/// Path of a snapshot's data file.
pub(crate) fn data_path(snapshots: &Path, id: &str) -> PathBuf {
    snapshots.join(format!("{id}{DATA_SUFFIX}"))
}

/// Path of a snapshot's metadata file.
pub(crate) fn meta_path(snapshots: &Path, id: &str) -> PathBuf {
    snapshots.join(format!("{id}{META_SUFFIX}"))
}
