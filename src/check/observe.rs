//! What a check reads of the service, through the sidecar's readers
//! ([`crate::sidecar::remote`]) and the agent's watch loop:
//!
//! - **counts**, every interval through all phases: threads, open fds and
//!   RSS from /proc (a [`Monitor`] on the pid, with no rules), and from the
//!   pprof URL `tokio_tasks` and `heap_bytes` (a leakscope agent's
//!   `/metrics`) or `goroutines` and `heap_bytes` (a Go service);
//! - **captures** before the warm-up and after the cool-down
//!   ([`Observer::capture`]): the fds profile (the agent's, else /proc),
//!   the thread ids, the tasks profile (agent), the goroutine dump and
//!   profile (Go);
//! - at the end, the threads as they are ([`Observer::threads_now`]): one
//!   thread dump (agent) or the names in /proc;
//! - **heap profiles** ([`Observer::heap`]), reduced to allocation sites.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use leakscope_agent::client::url::HttpUrl;
use leakscope_agent::client::{Endpoint, RetryPolicy};
use leakscope_agent::explain::heap::{HeapSnapshot, reduce};
use leakscope_agent::resource::Target;
use leakscope_agent::watch::monitor::{Monitor, MonitorOptions, TargetStatus};

use crate::sidecar::goroutines::Group;
use crate::sidecar::remote::{self, CountProfile, Flavor};
use crate::sidecar::threads::{ThreadDump, read_names, read_tids};

/// Now, in Unix seconds.
pub fn unix_now() -> f64 {
    leakscope_agent::collect::unix_seconds(SystemTime::now())
}

/// Counts read from the pprof URL, shared with the watch loop.
type Counts = Arc<Mutex<Vec<(&'static str, f64)>>>;

/// The readings of one service.
pub struct Observer {
    /// The pid read.
    pub pid: u32,
    /// What serves the pprof URL.
    pub flavor: Flavor,
    endpoint: Option<Endpoint>,
    monitor: Monitor,
    counts: Counts,
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("pid", &self.pid)
            .field("flavor", &self.flavor)
            .finish_non_exhaustive()
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        if let Some(r) = self.reader.take() {
            r.abort();
        }
    }
}

/// A Go goroutine dump's groups, with the `debug=0` profile it came with.
pub type GoroutineDump = (Vec<Group>, Vec<u8>);

/// One capture of the count profiles.
#[derive(Debug)]
pub struct Capture {
    /// When, Unix seconds.
    pub t: f64,
    /// The fds profile, and whether the agent served it (else /proc).
    pub fds: Result<(CountProfile, bool), String>,
    /// The thread ids (/proc).
    pub tids: Result<HashSet<u32>, String>,
    /// The tasks profile (leakscope agent only).
    pub tasks: Option<Result<CountProfile, String>>,
    /// The goroutine dump's groups and the `debug=0` profile (Go only).
    pub goroutines: Option<Result<GoroutineDump, String>>,
}

/// The threads at the end of a check.
#[derive(Debug)]
pub enum ThreadsNow {
    /// An agent's thread dump.
    Dump(ThreadDump),
    /// Names from /proc, and why there is no dump (if one was tried).
    Names(Vec<(u32, String)>, Option<String>),
}

/// One heap profile, reduced to sites, with its bytes.
#[derive(Debug, Clone)]
pub struct HeapPull {
    /// The profile as served (gzipped pprof).
    pub data: Vec<u8>,
    /// Reduced to allocation sites.
    pub snap: HeapSnapshot,
}

impl Observer {
    /// Starts reading `pid` every `interval` (keeping `history` points per
    /// counter), and finds what serves `pprof_url`: an error when it does
    /// not answer within `wait`.
    pub async fn start(
        pid: u32,
        pprof_url: Option<HttpUrl>,
        interval: Duration,
        history: usize,
        wait: Duration,
    ) -> Result<Observer, String> {
        let endpoint = pprof_url.map(|u| {
            let policy =
                RetryPolicy::default().timeouts(Duration::from_secs(2), Duration::from_secs(30));
            Endpoint::new(u, policy)
        });
        let mut flavor = Flavor::Other;
        let mut metrics = None;
        if let Some(e) = &endpoint {
            let start = std::time::Instant::now();
            loop {
                let (found, text) = remote::detect(e).await;
                if found != Flavor::Unknown {
                    (flavor, metrics) = (found, text);
                    break;
                }
                if start.elapsed() >= wait {
                    return Err(format!(
                        "the pprof URL {} does not answer (tried for {} s): is --pprof-url right?",
                        e.url(),
                        wait.as_secs()
                    ));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let counts: Counts = Arc::default();
        if let Some(e) = &endpoint {
            let first = remote::read_counts(e, flavor, metrics).await;
            *counts.lock().unwrap_or_else(|e| e.into_inner()) = first;
        }
        let reader = endpoint.clone().map(|e| {
            let counts = counts.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let read = remote::read_counts(&e, flavor, None).await;
                    let mut c = counts.lock().unwrap_or_else(|e| e.into_inner());
                    for (name, v) in read {
                        c.retain(|(n, _)| *n != name);
                        c.push((name, v));
                    }
                }
            })
        });
        let mut opts = MonitorOptions::default()
            .interval(interval)
            .rules(Vec::new());
        opts.breakdown_every = 0;
        opts.history = history;
        let extra = {
            let counts = counts.clone();
            Box::new(move || counts.lock().unwrap_or_else(|e| e.into_inner()).clone())
        };
        let monitor = Monitor::spawn(Target::Pid(pid), opts, Some(extra), Vec::new())
            .map_err(|e| format!("cannot start reading pid {pid}: {e}"))?;
        Ok(Observer {
            pid,
            flavor,
            endpoint,
            monitor,
            counts,
            reader,
        })
    }

    /// The points of `metric` so far, `(unix seconds, value)`.
    pub fn series(&self, metric: &str) -> Vec<(f64, f64)> {
        self.monitor.series(metric)
    }

    /// The names of every counter read.
    pub fn metrics(&self) -> Vec<String> {
        self.monitor.series_names()
    }

    /// `Err(why)` once the process cannot be read any more (it exited, or
    /// access was refused).
    pub fn alive(&self) -> Result<(), String> {
        let v = self.monitor.view();
        match v.status {
            TargetStatus::Starting | TargetStatus::Running | TargetStatus::Waiting => Ok(()),
            s => Err(format!(
                "pid {} is {s}{}",
                self.pid,
                v.error.map_or(String::new(), |e| format!(": {e}"))
            )),
        }
    }

    /// The latest counts read from the pprof URL.
    pub fn counts(&self) -> Vec<(&'static str, f64)> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the pprof URL's counts now; `name`'s value.
    pub async fn count_now(&self, name: &str) -> Option<f64> {
        let e = self.endpoint.as_ref()?;
        remote::read_counts(e, self.flavor, None)
            .await
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }

    /// True when heap profiles can be pulled (an agent or a Go service).
    pub fn has_heap(&self) -> bool {
        matches!(self.flavor, Flavor::Agent | Flavor::Go)
    }

    /// The count profiles now.
    pub async fn capture(&self) -> Capture {
        let t = unix_now();
        let pid = self.pid;
        let tids = remote::blocking(move || read_tids(pid).map_err(|e| e.to_string())).await;
        let agent = self.flavor == Flavor::Agent;
        let fds = match (&self.endpoint, agent) {
            (Some(e), true) => match remote::count_profile(e, "/debug/pprof/fds").await {
                Ok(p) => Ok((p, true)),
                Err(_) => remote::proc_fds(pid).await.map(|p| (p, false)),
            },
            _ => remote::proc_fds(pid).await.map(|p| (p, false)),
        };
        let tasks = match (&self.endpoint, agent) {
            (Some(e), true) => Some(remote::count_profile(e, "/debug/pprof/tasks").await),
            _ => None,
        };
        let goroutines = match (&self.endpoint, self.flavor) {
            (Some(e), Flavor::Go) => Some(
                async {
                    let groups = remote::goroutine_groups(e).await?;
                    let data = remote::raw_profile(
                        e,
                        "/debug/pprof/goroutine",
                        remote::GOROUTINE_DUMP_CAP,
                    )
                    .await?;
                    Ok((groups, data))
                }
                .await,
            ),
            _ => None,
        };
        Capture {
            t,
            fds,
            tids,
            tasks,
            goroutines,
        }
    }

    /// The threads now: an agent's dump, else (or when it fails) the names
    /// in /proc.
    pub async fn threads_now(&self) -> Result<ThreadsNow, String> {
        let mut why = None;
        if let (Some(e), Flavor::Agent) = (&self.endpoint, self.flavor) {
            match remote::thread_dump(e).await {
                Ok(d) => return Ok(ThreadsNow::Dump(d)),
                Err(e) => why = Some(format!("no thread dump from the agent ({e})")),
            }
        }
        let pid = self.pid;
        let names = remote::blocking(move || read_names(pid).map_err(|e| e.to_string())).await?;
        Ok(ThreadsNow::Names(names, why))
    }

    /// A heap profile now, reduced.
    pub async fn heap(&self) -> Result<HeapPull, String> {
        let e = self
            .endpoint
            .as_ref()
            .ok_or("no pprof URL: no heap profiles")?;
        let (profile, data) = remote::heap_profile(e, self.flavor).await?;
        let t = unix_now();
        let snap = remote::blocking(move || {
            reduce(&profile, t).ok_or_else(|| "the heap profile has no inuse_space".to_owned())
        })
        .await?;
        Ok(HeapPull { data, snap })
    }
}
