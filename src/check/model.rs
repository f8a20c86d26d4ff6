//! What one `leakscope check` found: the data every report (terminal,
//! JUnit, HTML, JSON) is rendered from. Plain data, serializable, so a
//! report can also be rendered again from `--json` output.

use leakscope_agent::explain::Finding;
use serde::{Deserialize, Serialize};

/// The outcome of a check, and its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Nothing leaked beyond its budget: exit 0.
    Clean,
    /// At least one kind leaked: exit 1.
    Leak,
    /// The check could not run to its end (the service did not start, the
    /// load command failed to start, ...): exit 2.
    Error,
}

impl Outcome {
    /// The process exit code for this outcome.
    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Clean => 0,
            Outcome::Leak => 1,
            Outcome::Error => 2,
        }
    }
}

/// One phase of the check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    /// `warm-up`, `load` or `cool-down`.
    pub name: String,
    /// Start, Unix seconds.
    pub start: f64,
    /// End, Unix seconds.
    pub end: f64,
}

/// The verdict on one kind of resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KindVerdict {
    /// `heap`, `threads`, `tasks`, `fds` or `goroutines`.
    pub kind: String,
    /// Unit of the amounts: `bytes`, `threads`, `tasks`, `fds`, `goroutines`.
    pub unit: String,
    /// Before the warm-up.
    pub before: f64,
    /// Highest during the load.
    pub peak: f64,
    /// After the cool-down.
    pub after: f64,
    /// What may stay behind without failing the check (`--allow`).
    pub allowed: f64,
    /// Growth fitted across the load phase, per minute.
    pub growth_per_minute: f64,
    /// True when this kind failed the check.
    pub leaked: bool,
    /// Why it passed or failed, in one sentence.
    pub reason: String,
    /// What stayed behind and where (function, file:line), when named.
    pub finding: Option<Finding>,
    /// The two profiles the finding compared (gzipped pprof), for the HTML
    /// report's differential flamegraphs; not in `--json` output.
    #[serde(skip)]
    pub evidence: Option<Evidence>,
}

/// Two profiles of one kind, before and after, and the sample type to
/// compare.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Evidence {
    /// Sample type (`inuse_space`, `threads`, `fds`, ...).
    pub sample_type: String,
    /// The profile before the warm-up (gzipped pprof).
    pub base: Vec<u8>,
    /// The profile after the cool-down (gzipped pprof).
    pub new: Vec<u8>,
}

/// One counter over the whole check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// Metric name (`threads`, `open_fds`, `heap_bytes`, `tokio_tasks`,
    /// `goroutines`, `rss_bytes`).
    pub metric: String,
    /// `bytes` for sizes, `` for counts.
    pub unit: String,
    /// `(Unix seconds, value)`, oldest first.
    pub points: Vec<(f64, f64)>,
}

/// What the load did.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LoadSummary {
    /// `built-in` or the load command as given.
    pub source: String,
    /// Requests sent (built-in load only).
    pub requests: u64,
    /// Requests that failed (built-in load only).
    pub errors: u64,
    /// Latency quantiles in milliseconds (built-in load only): p50, p99.
    pub latency_ms: Option<(f64, f64)>,
    /// Exit status of a load command.
    pub exit_status: Option<i32>,
    /// The last lines of a load command's output.
    pub output_tail: Vec<String>,
}

/// Everything one check found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    /// The service checked, as the user named it (`--name`, the spawn
    /// command, or `pid N`).
    pub target: String,
    /// Its pid (the last one, if it was spawned).
    pub pid: Option<u32>,
    /// `go` or `leakscope agent` or `process` (no pprof URL).
    pub flavor: String,
    /// The outcome.
    pub outcome: Outcome,
    /// Why the check could not run, with `Outcome::Error`.
    pub error: Option<String>,
    /// The phases, in order.
    pub phases: Vec<Phase>,
    /// One verdict per kind watched.
    pub kinds: Vec<KindVerdict>,
    /// The counters' timelines.
    pub series: Vec<Series>,
    /// The load.
    pub load: LoadSummary,
    /// Settings that shaped the verdicts (duration, cool-down, budgets), as
    /// `(name, value)` for the reports.
    pub settings: Vec<(String, String)>,
}
