//! What is stored about a snapshot: [`SnapshotMeta`] (the `<id>.json`
//! file), its [`Trigger`], and [`NewSnapshot`], what a caller hands to
//! [`Store::put`](super::Store::put)(super::Store::put).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::resource::ResourceSample;

/// Why a snapshot was taken.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// The periodic schedule.
    Schedule,
    /// A watch rule was breached.
    Breach,
    /// Someone asked for it.
    Manual,
}

impl Trigger {
    /// The name used in metadata and on the command line: `"schedule"`,
    /// `"breach"` or `"manual"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Breach => "breach",
            Trigger::Manual => "manual",
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Trigger {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "schedule" => Ok(Trigger::Schedule),
            "breach" => Ok(Trigger::Breach),
            "manual" => Ok(Trigger::Manual),
            _ => Err(Error::InvalidSnapshot {
                field: "trigger",
                value: s.to_owned(),
                message: "use `schedule`, `breach` or `manual`".to_owned(),
            }),
        }
    }
}

/// What the store knows about one snapshot; stored as `<id>.json`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SnapshotMeta {
    /// Unique id, sortable by time, of `[A-Za-z0-9._-]` only, such as
    /// `20261123T130501.123Z-api-heap-000042`.
    pub id: String,
    /// Name of the watched target, as given to [`Store::put`](super::Store::put).
    pub target: String,
    /// Process id of the target, if known.
    pub pid: Option<u32>,
    /// Profile kind: `heap`, `cpu`, `allocs`, `goroutine`, ... (`[a-z0-9_]+`).
    pub kind: String,
    /// When the snapshot was taken, in Unix seconds.
    pub time: f64,
    /// Why it was taken.
    pub trigger: Trigger,
    /// Free-form labels (rule name, build, host, ...).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The target's resources when the snapshot was taken.
    pub sample: Option<ResourceSample>,
    /// Size of the data in bytes.
    pub bytes: u64,
    /// 64-bit FNV-1a of the data, as 16 lower-case hex digits.
    pub checksum: String,
}

/// A snapshot to store with [`Store::put`](super::Store::put).
#[derive(Clone)]
pub struct NewSnapshot<'a> {
    /// Name of the watched target (free text; a slug of it goes in the id).
    pub target: &'a str,
    /// Process id of the target, if known.
    pub pid: Option<u32>,
    /// Profile kind, `[a-z0-9_]+`, at most 32 characters.
    pub kind: &'a str,
    /// Why it was taken.
    pub trigger: Trigger,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
    /// The target's resources at the time.
    pub sample: Option<ResourceSample>,
    /// When it was taken; `None` is now. Between 1970 and year 9999.
    pub time: Option<SystemTime>,
    /// The profile bytes (gzipped pprof), stored as they are.
    pub data: &'a [u8],
}

impl<'a> NewSnapshot<'a> {
    /// A snapshot of `kind` for `target`, taken now, [`Trigger::Manual`], no
    /// pid, labels or sample; set the public fields for more.
    pub fn new(target: &'a str, kind: &'a str, data: &'a [u8]) -> Self {
        NewSnapshot {
            target,
            pid: None,
            kind,
            trigger: Trigger::Manual,
            labels: BTreeMap::new(),
            sample: None,
            time: None,
            data,
        }
    }
}

impl fmt::Debug for NewSnapshot<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewSnapshot")
            .field("target", &self.target)
            .field("pid", &self.pid)
            .field("kind", &self.kind)
            .field("trigger", &self.trigger)
            .field("labels", &self.labels)
            .field("sample", &self.sample)
            .field("time", &self.time)
            .field("data", &format_args!("{} bytes", self.data.len()))
            .finish()
    }
}

/// The metadata as stored (pretty JSON) and as it reads back, which is what
/// the index keeps: JSON numbers do not always parse back to the same last
/// bit of an `f64`, and the index must not change across a restart. Fails
/// if it would not read back at all (a NaN in the sample, say, is written as
/// `null`), so the next open never has to quarantine a fresh snapshot.
pub(super) fn encode_meta(meta: &SnapshotMeta) -> Result<(SnapshotMeta, Vec<u8>)> {
    let invalid = |message: String| Error::InvalidSnapshot {
        field: "metadata",
        value: meta.id.clone(),
        message,
    };
    let mut json = serde_json::to_vec_pretty(meta).map_err(|e| invalid(e.to_string()))?;
    json.push(b'\n');
    let decoded = serde_json::from_slice::<SnapshotMeta>(&json).map_err(|e| {
        invalid(format!(
            "it would not read back ({e}); check the sample for NaN or infinite numbers"
        ))
    })?;
    Ok((decoded, json))
}
