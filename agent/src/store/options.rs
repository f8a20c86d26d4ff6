//! What the caller chooses: the store's limits ([`StoreOptions`]), which
//! snapshots to list ([`ListFilter`]), and the counters it reports
//! ([`StoreStats`]).

use std::time::Duration;

use super::SnapshotMeta;
use crate::error::{Error, Result};

/// Limits the store keeps to; `None` turns a limit off.
///
/// ```
/// use std::time::Duration;
/// use leakscope_agent::store::StoreOptions;
///
/// let options = StoreOptions::default()
///     .max_count(500)
///     .max_bytes(None)
///     .max_age(Duration::from_secs(24 * 3600));
/// assert_eq!(options.max_count, Some(500));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreOptions {
    /// Most snapshots kept. Default [`StoreOptions::DEFAULT_MAX_COUNT`].
    pub max_count: Option<usize>,
    /// Most bytes of data kept (metadata not counted). Default
    /// [`StoreOptions::DEFAULT_MAX_BYTES`].
    pub max_bytes: Option<u64>,
    /// Snapshots older than this (by their `time`) are removed. Default
    /// [`StoreOptions::DEFAULT_MAX_AGE`].
    pub max_age: Option<Duration>,
}

impl StoreOptions {
    /// Default [`max_count`](Self::max_count): 1000 snapshots.
    pub const DEFAULT_MAX_COUNT: usize = 1000;
    /// Default [`max_bytes`](Self::max_bytes): 1 GiB.
    pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
    /// Default [`max_age`](Self::max_age): 7 days.
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

    /// Sets the most snapshots kept (`None`: no limit; 0 is refused at open).
    #[must_use]
    pub fn max_count(mut self, max_count: impl Into<Option<usize>>) -> Self {
        self.max_count = max_count.into();
        self
    }

    /// Sets the most bytes of data kept (`None`: no limit; 0 is refused at
    /// open).
    #[must_use]
    pub fn max_bytes(mut self, max_bytes: impl Into<Option<u64>>) -> Self {
        self.max_bytes = max_bytes.into();
        self
    }

    /// Sets the age past which snapshots are removed (`None`: keep them
    /// forever; zero is refused at open).
    #[must_use]
    pub fn max_age(mut self, max_age: impl Into<Option<Duration>>) -> Self {
        self.max_age = max_age.into();
        self
    }

    /// Refuses limits that would remove every snapshot.
    pub(super) fn validate(&self) -> Result<()> {
        let refuse = |setting, what: &str| {
            Err(Error::Config {
                setting,
                message: format!("{what} would remove every snapshot; use None for no limit"),
            })
        };
        if self.max_count == Some(0) {
            return refuse("max_count", "0");
        }
        if self.max_bytes == Some(0) {
            return refuse("max_bytes", "0");
        }
        if self.max_age == Some(Duration::ZERO) {
            return refuse("max_age", "zero");
        }
        Ok(())
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_count: Some(Self::DEFAULT_MAX_COUNT),
            max_bytes: Some(Self::DEFAULT_MAX_BYTES),
            max_age: Some(Self::DEFAULT_MAX_AGE),
        }
    }
}

/// Which snapshots [`Store::list`](super::Store::list) returns; `Default` is all of them.
///
/// ```
/// use leakscope_agent::store::ListFilter;
///
/// let filter = ListFilter::default().target("api").kind("heap").limit(10);
/// assert_eq!(filter.limit, Some(10));
/// ```
#[derive(Default, Clone, Debug)]
#[non_exhaustive]
pub struct ListFilter {
    /// Only this target (exact match).
    pub target: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only snapshots taken at or after this time (Unix seconds).
    pub since: Option<f64>,
    /// Only the newest this many of the matching snapshots.
    pub limit: Option<usize>,
}

impl ListFilter {
    /// Keeps only snapshots of `target`.
    #[must_use]
    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    /// Keeps only snapshots of `kind`.
    #[must_use]
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// Keeps only snapshots taken at or after `since` (Unix seconds).
    #[must_use]
    pub fn since(mut self, since: f64) -> Self {
        self.since = Some(since);
        self
    }

    /// Keeps only the newest `limit` matching snapshots.
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Whether `meta` passes the target, kind and time conditions.
    pub(super) fn matches(&self, meta: &SnapshotMeta) -> bool {
        self.target.as_ref().is_none_or(|t| *t == meta.target)
            && self.kind.as_ref().is_none_or(|k| *k == meta.kind)
            && self.since.is_none_or(|s| meta.time >= s)
    }
}

/// Counters of a [`Store`](super::Store).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Snapshots listed.
    pub count: usize,
    /// Bytes of their data.
    pub bytes: u64,
    /// Snapshots not served since open: corrupt ones moved to quarantine (at
    /// open or at read) and partial writes removed at open.
    pub skipped: usize,
    /// Snapshots removed by retention since open.
    pub removed_by_retention: u64,
}
