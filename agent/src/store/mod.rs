//! The snapshot store: profile snapshots kept as files under a data
//! directory, with their metadata, so that everything taken before a crash
//! or restart is found again.
//!
//! The store treats a snapshot's data (gzipped pprof bytes, as served by
//! `/debug/pprof/*`) as opaque. It is used by the `leakscope watch` sidecar
//! and, optionally, by the in-process agent.
//!
//! ```no_run
//! use leakscope_agent::store::{ListFilter, NewSnapshot, Store, StoreOptions, Trigger};
//!
//! # fn main() -> leakscope_agent::Result<()> {
//! let store = Store::open("/var/lib/leakscope", StoreOptions::default().max_count(200))?;
//! # let profile: Vec<u8> = Vec::new();
//! let mut snap = NewSnapshot::new("api", "heap", &profile);
//! snap.trigger = Trigger::Breach;
//! let meta = store.put(snap)?;
//! let last_two = store.latest("api", "heap", 2);
//! let bytes = store.read(&meta.id)?; // checked against the stored checksum
//! # drop((last_two, bytes, ListFilter::default()));
//! # Ok(())
//! # }
//! ```
//!
//! ## Layout
//!
//! ```text
//! <dir>/lock                     held (flock) while a Store has the directory open
//! <dir>/snapshots/<id>.pb.gz     the data, exactly the bytes given to put
//! <dir>/snapshots/<id>.json      the metadata (a SnapshotMeta), written last
//! <dir>/snapshots/*.tmp          writes in progress
//! <dir>/quarantine/              damaged snapshots, moved aside, never served
//! ```
//!
//! Ids look like `20261123T130501.123Z-api-heap-000042`: the snapshot's UTC
//! time to the millisecond, a slug of the target name, the kind and a
//! sequence number, so a directory listing sorts by time. Directories the
//! store creates are owner-only (0700) and its files 0600: profiles expose
//! symbols and addresses.
//!
//! ## Durability
//!
//! Each file is written to `<name>.tmp` in the same directory, synced,
//! renamed into place, and then the directory is synced. The data file goes
//! first and the metadata last, and the in-memory index is rebuilt from the
//! metadata files at [`Store::open`], so a snapshot exists exactly when its
//! metadata does, and its data is complete by then. After a crash, open
//! removes `*.tmp` files and data files without metadata (interrupted
//! writes). Metadata that does not parse, or whose data file is missing or
//! has the wrong size, is reported once with `tracing::warn!`, moved to
//! `quarantine/` together with its data file, and skipped. [`Store::read`]
//! checks size and checksum (64-bit FNV-1a) every time; a mismatch
//! quarantines the snapshot the same way and returns
//! [`Error::CorruptSnapshot`]: damaged data is never served.
//!
//! ## Retention
//!
//! After every [`Store::put`], and at open, the oldest snapshots are removed
//! until there are at most [`StoreOptions::max_count`] of them, they take at
//! most [`StoreOptions::max_bytes`], and none is older than
//! [`StoreOptions::max_age`]. A `put` never removes the snapshot it just
//! wrote: one larger than `max_bytes` on its own is kept (with a warning) and
//! everything else goes, and one stored with a `time` already past `max_age`
//! stays until the next `put` or open. Evidence of a large leak is the last
//! thing to drop the moment it is taken. At open the limits apply to every
//! snapshot alike, so lowering `max_bytes` below the size of the newest
//! snapshot removes it then. "Oldest" is by the snapshot's `time`, not by
//! when it was written. Retention removes the metadata file before the data
//! file, so a crash in between leaves only a data file, which open removes.
//!
//! ## Threads and processes
//!
//! [`Store`] is `Clone + Send + Sync`; clones share one index, and puts from
//! several threads may run at once (the files are written outside the
//! index lock). Every method does blocking file I/O: from async code call
//! them inside `tokio::task::spawn_blocking`. One directory belongs to one
//! `Store` at a time: a second [`Store::open`] of it, from this process or
//! another, fails with [`Error::StoreLocked`] until the first is dropped.

mod fsio;
mod id;
pub use id::civil_from_days;
mod index;
mod meta;
mod options;
mod recover;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use crate::error::{Error, Result};
use fsio::DirLock;
use index::State;
use meta::encode_meta;
use recover::{data_path, meta_path};

pub use meta::{NewSnapshot, SnapshotMeta, Trigger};
pub use options::{ListFilter, StoreOptions, StoreStats};

/// Suffix of data files.
const DATA_SUFFIX: &str = ".pb.gz";
/// Suffix of metadata files.
const META_SUFFIX: &str = ".json";

/// The store: an index of snapshot metadata over files in a directory. See
/// the [module docs](self) for the layout and the guarantees.
#[derive(Clone)]
pub struct Store {
    /// Shared by all clones.
    inner: Arc<Inner>,
}

/// What clones of a [`Store`] share.
struct Inner {
    /// The directory given to [`Store::open`].
    dir: PathBuf,
    /// `<dir>/snapshots`.
    snapshots: PathBuf,
    /// `<dir>/quarantine`.
    quarantine: PathBuf,
    /// The limits.
    options: StoreOptions,
    /// The index and counters.
    state: Mutex<State>,
    /// Keeps other stores out of `dir` while this one lives.
    _lock: DirLock,
}

impl Store {
    /// Opens the store in `dir`, creating the directory if needed, cleaning
    /// up after a crash (see the [module docs](self)) and applying retention.
    ///
    /// Fails with [`Error::StoreDir`] if `dir` cannot be created, read or
    /// written, [`Error::StoreLocked`] if another store has it open, and
    /// [`Error::Config`] for a zero limit in `options`.
    pub fn open(dir: impl AsRef<Path>, options: StoreOptions) -> Result<Store> {
        options.validate()?;
        let dir = dir.as_ref().to_owned();
        let snapshots = dir.join("snapshots");
        let quarantine = dir.join("quarantine");
        for d in [&dir, &snapshots] {
            fsio::create_dir(d).map_err(|source| Error::StoreDir {
                path: d.clone(),
                source,
            })?;
        }
        let lock = DirLock::acquire(&dir)?;
        probe_writable(&snapshots)?;

        let recovered = recover::recover(&snapshots, &quarantine)?;
        let mut state = State {
            skipped: recovered.skipped,
            ..State::default()
        };
        for meta in recovered.metas {
            let seq = id::seq_of(&meta.id).unwrap_or(0);
            state.next_seq = state.next_seq.max(seq.saturating_add(1));
            state.insert(meta);
        }
        let doomed = state.retain(&options, SystemTime::now(), None);
        let store = Store {
            inner: Arc::new(Inner {
                dir,
                snapshots,
                quarantine,
                options,
                state: Mutex::new(state),
                _lock: lock,
            }),
        };
        store.discard(&doomed);
        Ok(store)
    }

    /// Stores a snapshot and returns its metadata, then applies retention.
    ///
    /// The data is durable (synced, with its directory) before the metadata
    /// is written, and both are before this returns. Fails with
    /// [`Error::InvalidSnapshot`] for a bad `kind` or `time`, and with
    /// [`Error::File`] if a file cannot be written (the snapshot is then not
    /// stored).
    pub fn put(&self, snap: NewSnapshot<'_>) -> Result<SnapshotMeta> {
        id::validate_kind(snap.kind)?;
        let since_epoch = id::since_epoch(snap.time.unwrap_or_else(SystemTime::now))?;
        let checksum = id::checksum(snap.data);
        let id = {
            let mut state = self.lock();
            loop {
                let seq = state.next_seq;
                state.next_seq += 1;
                let id = id::make_id(since_epoch, snap.target, snap.kind, seq);
                if !state.keys.contains_key(&id) {
                    break id;
                }
            }
        };
        let meta = SnapshotMeta {
            id,
            target: snap.target.to_owned(),
            pid: snap.pid,
            kind: snap.kind.to_owned(),
            time: since_epoch.as_secs_f64(),
            trigger: snap.trigger,
            labels: snap.labels,
            sample: snap.sample,
            bytes: snap.data.len() as u64,
            checksum,
        };
        // What the next open will read, to the last bit of `time`.
        let (meta, json) = encode_meta(&meta)?;

        let data_file = data_path(&self.inner.snapshots, &meta.id);
        fsio::write_atomic(&data_file, snap.data)?;
        if let Err(err) = fsio::write_atomic(&meta_path(&self.inner.snapshots, &meta.id), &json) {
            // Best effort: a data file without metadata is removed at open.
            let _ = fsio::remove_if_present(&data_file);
            return Err(err);
        }

        let options = &self.inner.options;
        let doomed = {
            let mut state = self.lock();
            let key = state.insert(meta.clone());
            state.retain(options, SystemTime::now(), Some(&key))
        };
        if options.max_bytes.is_some_and(|m| meta.bytes > m) {
            tracing::warn!(
                "snapshot {} has {} bytes, more than max_bytes ({} bytes) on its own: kept as \
                 the only snapshot; raise max_bytes to keep history",
                meta.id,
                meta.bytes,
                options.max_bytes.unwrap_or_default()
            );
        }
        self.discard(&doomed);
        Ok(meta)
    }

    /// Metadata of the snapshots that pass `filter`, oldest first. With a
    /// `limit`, the newest `limit` of them (still oldest first).
    pub fn list(&self, filter: &ListFilter) -> Vec<SnapshotMeta> {
        let state = self.lock();
        let limit = filter.limit.unwrap_or(usize::MAX);
        let mut out: Vec<SnapshotMeta> = state
            .index
            .values()
            .rev()
            .filter(|m| filter.matches(m))
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    /// Metadata of snapshot `id`, if the store has it.
    pub fn get(&self, id: &str) -> Option<SnapshotMeta> {
        let state = self.lock();
        let key = state.keys.get(id)?;
        state.index.get(key).cloned()
    }

    /// The data of snapshot `id`, after checking its size and checksum.
    ///
    /// Fails with [`Error::UnknownSnapshot`] if the store does not have it,
    /// and with [`Error::CorruptSnapshot`] if the data does not match its
    /// metadata; the snapshot is then moved to quarantine, reported once and
    /// dropped from the index.
    pub fn read(&self, id: &str) -> Result<Vec<u8>> {
        let unknown = || Error::UnknownSnapshot { id: id.to_owned() };
        let meta = self.get(id).ok_or_else(unknown)?;
        let path = data_path(&self.inner.snapshots, id);
        let problem = match std::fs::read(&path) {
            Ok(data) => {
                let actual = id::checksum(&data);
                if data.len() as u64 != meta.bytes {
                    format!(
                        "the data file has {} bytes where the metadata says {}",
                        data.len(),
                        meta.bytes
                    )
                } else if actual != meta.checksum {
                    format!(
                        "checksum {actual} of the data does not match {} in the metadata",
                        meta.checksum
                    )
                } else {
                    return Ok(data);
                }
            }
            // Removed by delete or retention since `get`: no longer stored.
            Err(_) if self.get(id).is_none() => return Err(unknown()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                "the data file is missing".to_owned()
            }
            Err(source) => return Err(Error::File { path, source }),
        };
        // Only the thread that takes it out of the index moves and reports it.
        let first = {
            let mut state = self.lock();
            let removed = state.remove(id).is_some();
            if removed {
                state.skipped += 1;
            }
            removed
        };
        if first {
            recover::quarantine_pair(
                &meta_path(&self.inner.snapshots, id),
                Some(&path),
                &self.inner.quarantine,
                &problem,
            );
        }
        Err(Error::CorruptSnapshot {
            path,
            message: format!(
                "{problem}; its files were moved to {}",
                self.inner.quarantine.display()
            ),
        })
    }

    /// Removes snapshot `id`; `Ok(false)` if the store does not have it.
    ///
    /// The snapshot leaves the index first, then its metadata file and its
    /// data file. If removing a file fails, the error is returned and the
    /// snapshot, no longer listed, may come back at the next open.
    pub fn delete(&self, id: &str) -> Result<bool> {
        let Some(meta) = self.lock().remove(id) else {
            return Ok(false);
        };
        self.remove_files(&[meta])?;
        Ok(true)
    }

    /// The newest `n` snapshots of `target` and `kind`, oldest first.
    pub fn latest(&self, target: &str, kind: &str, n: usize) -> Vec<SnapshotMeta> {
        self.list(&ListFilter::default().target(target).kind(kind).limit(n))
    }

    /// Current counters.
    pub fn stats(&self) -> StoreStats {
        let state = self.lock();
        StoreStats {
            count: state.index.len(),
            bytes: state.bytes,
            skipped: state.skipped,
            removed_by_retention: state.removed_by_retention,
        }
    }

    /// The directory given to [`Store::open`].
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.inner.options
    }

    /// The index, recovered if a thread panicked while holding it (every
    /// update leaves it consistent).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Removes the files of snapshots already dropped from the index:
    /// metadata first, so a crash in between leaves a data file without
    /// metadata, which the next open removes.
    fn remove_files(&self, metas: &[SnapshotMeta]) -> Result<()> {
        if metas.is_empty() {
            return Ok(());
        }
        for meta in metas {
            fsio::remove_if_present(&meta_path(&self.inner.snapshots, &meta.id))?;
            fsio::remove_if_present(&data_path(&self.inner.snapshots, &meta.id))?;
        }
        fsio::sync_dir(&self.inner.snapshots)
    }

    /// [`Store::remove_files`] for retention, which is not the caller's
    /// failure: a file that cannot be removed is reported, and retention
    /// removes it again at the next open.
    fn discard(&self, metas: &[SnapshotMeta]) {
        if let Err(err) = self.remove_files(metas) {
            tracing::warn!("retention could not remove a snapshot: {err}");
        }
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .field("options", &self.inner.options)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Fails with [`Error::StoreDir`] unless files can be created in `dir`.
fn probe_writable(dir: &Path) -> Result<()> {
    let probe = dir.join(format!(".probe-{}{}", std::process::id(), fsio::TMP_SUFFIX));
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&probe);
    match created {
        Ok(_) => fsio::remove_if_present(&probe),
        Err(source) => Err(Error::StoreDir {
            path: dir.to_owned(),
            source,
        }),
    }
}
