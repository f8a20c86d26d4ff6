//! The sidecar behind `leakscope watch`: watches processes it is not linked
//! into, through /proc, and pulls profiles from their pprof endpoints (a
//! leakscope agent or any Go service with `net/http/pprof`).
//!
//! For each [`TargetSpec`] it runs:
//!
//! - a [`Monitor`] on a thread of its own: the agent's sampler, series,
//!   threshold rules and alerts, following a `--name` target across
//!   restarts;
//! - a pull task on the async runtime: heap profiles on a schedule (and CPU
//!   profiles if asked), with a Go target's goroutine dump beside each; the
//!   goroutine, tokio-task and heap counts; and a heap profile on every
//!   breach, all through one [`Endpoint`] per target (timeouts, retries with
//!   backoff, a circuit breaker), so a target that is down or slow only
//!   delays itself;
//!
//! and stores every profile in one [`Store`] with its trigger and the
//! resource sample at capture. [`api`] serves all of it over HTTP. When a
//! heap, goroutine, thread, fd or tokio-task rule goes up, the `naming`
//! module names the leak (function and file:line, or what grew when the
//! code cannot be known from outside) for the alert; the healthy readings
//! of threads, fds and tasks it compares with are taken by `kinds`.

pub mod api;
pub mod config;
mod counts;
pub mod goroutines;
mod kinds;
pub mod locate;
mod naming;
mod pull;
pub mod remote;
pub mod threads;
#[cfg(feature = "viewer")]
pub mod ui;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leakscope_agent::alert::alertmanager::{AlertmanagerOptions, AlertmanagerSink};
use leakscope_agent::alert::webhook::{WebhookOptions, WebhookSink};
use leakscope_agent::alert::{AlertmanagerHook, WebhookHook};
use leakscope_agent::client::url::HttpUrl;
use leakscope_agent::client::{Endpoint, RetryPolicy, TlsRoots};
use leakscope_agent::explain::Finding;
use leakscope_agent::resource::{ResourceSample, Target};
use leakscope_agent::store::{SnapshotMeta, Store, StoreOptions};
use leakscope_agent::watch::monitor::{
    ExtraMetrics, Monitor, MonitorOptions, TargetStatus, WatchHook, WatchTarget,
};
use leakscope_agent::watch::rules::{Rule, Transition, default_rules};
use regex::Regex;

pub use counts::TEXT_CAP as COUNTS_TEXT_CAP;
pub use kinds::{COUNT_PROFILE_CAP, THREAD_DUMP_CAP, THREAD_IDS_EVERY};
pub use leakscope_agent::watch::baselines::{BASELINE_SPAN, MAX_BASELINES};
pub use naming::{EXPLAIN_TIMEOUT, GOROUTINE_DUMP_CAP, GOROUTINE_RING, HEAP_RING};
pub use pull::{PROFILE_KINDS, SnapshotError};

/// How a target's process is found.
#[derive(Debug, Clone)]
pub enum Selector {
    /// One pid, for the sidecar's life (when it exits, the target is gone).
    Pid(u32),
    /// The oldest process whose comm or command line matches; found again
    /// after it exits.
    Name(Regex),
}

impl Selector {
    /// In words: `pid 1234`, `a process matching 'api'`.
    pub fn describe(&self) -> String {
        match self {
            Selector::Pid(pid) => format!("pid {pid}"),
            Selector::Name(re) => format!("a process matching '{}'", re.as_str()),
        }
    }
}

/// One process to watch.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TargetSpec {
    /// Its name in the terminal, the API, alerts and metrics (letters,
    /// digits, `.`, `_`, `-`).
    pub name: String,
    /// How the process is found.
    pub selector: Selector,
    /// Where its pprof endpoints are (base URL; `/debug/pprof/...` is added).
    pub pprof_url: Option<HttpUrl>,
    /// Threshold rules evaluated on its samples.
    pub rules: Vec<Rule>,
    /// Extra labels stored with its snapshots.
    pub labels: BTreeMap<String, String>,
    /// Time between scheduled heap profiles; `None` for none.
    pub heap_every: Option<Duration>,
    /// Time between scheduled CPU profiles; `None` for none.
    pub cpu_every: Option<Duration>,
    /// Length of each CPU profile.
    pub cpu_seconds: u32,
    /// Time between reads of the goroutine (Go) or tokio-task (leakscope
    /// agent) count and of the heap in use from the pprof endpoint; zero
    /// for never.
    pub counts_every: Duration,
    /// Time between the healthy readings that thread, fd and tokio-task
    /// alerts are compared with (an fds profile, a tasks profile; thread
    /// ids every 10 s at most); zero for none (those alerts then name
    /// nothing).
    pub evidence_every: Duration,
}

impl TargetSpec {
    /// Default [`TargetSpec::heap_every`].
    pub const DEFAULT_HEAP_EVERY: Duration = Duration::from_secs(60);
    /// Default [`TargetSpec::cpu_seconds`].
    pub const DEFAULT_CPU_SECONDS: u32 = 10;
    /// Default [`TargetSpec::counts_every`].
    pub const DEFAULT_COUNTS_EVERY: Duration = Duration::from_secs(5);
    /// Default [`TargetSpec::evidence_every`].
    pub const DEFAULT_EVIDENCE_EVERY: Duration = Duration::from_secs(60);

    /// A target with the default rules and schedule.
    pub fn new(name: impl Into<String>, selector: Selector) -> TargetSpec {
        TargetSpec {
            name: name.into(),
            selector,
            pprof_url: None,
            rules: default_rules(),
            labels: BTreeMap::new(),
            heap_every: Some(Self::DEFAULT_HEAP_EVERY),
            cpu_every: None,
            cpu_seconds: Self::DEFAULT_CPU_SECONDS,
            counts_every: Self::DEFAULT_COUNTS_EVERY,
            evidence_every: Self::DEFAULT_EVIDENCE_EVERY,
        }
    }
}

/// Settings of the whole sidecar.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SidecarOptions {
    /// The processes to watch.
    pub targets: Vec<TargetSpec>,
    /// Where snapshots are kept.
    pub data_dir: PathBuf,
    /// Retention of the store.
    pub store: StoreOptions,
    /// Address of the HTTP API (port 0 picks one).
    pub listen: SocketAddr,
    /// Bearer token the API requires; needed when `listen` is not loopback.
    pub token: Option<String>,
    /// Where alerts are posted.
    pub webhook: Option<WebhookOptions>,
    /// Where alerts are posted for Prometheus Alertmanager (the `target`
    /// label is the target's name).
    pub alertmanager: Option<AlertmanagerOptions>,
    /// Timeouts, retries and breaker of every profile pull.
    pub policy: RetryPolicy,
    /// CAs trusted for `https://` pprof URLs (the platform's by default;
    /// `[sidecar] ca_file` adds an internal CA).
    pub tls_roots: TlsRoots,
    /// Sampling interval, history and breakdown period (the rules come from
    /// each target).
    pub monitor: MonitorOptions,
}

impl SidecarOptions {
    /// Default [`SidecarOptions::data_dir`].
    pub const DEFAULT_DATA_DIR: &'static str = "./leakscope-data";
    /// Default [`SidecarOptions::listen`]: loopback only.
    pub const DEFAULT_LISTEN: &'static str = "127.0.0.1:7070";

    /// The defaults, watching `targets`.
    pub fn new(targets: Vec<TargetSpec>) -> SidecarOptions {
        SidecarOptions {
            targets,
            data_dir: PathBuf::from(Self::DEFAULT_DATA_DIR),
            store: StoreOptions::default(),
            listen: Self::DEFAULT_LISTEN
                .parse()
                .expect("a valid literal address"),
            token: None,
            webhook: None,
            alertmanager: None,
            policy: RetryPolicy::default(),
            tls_roots: TlsRoots::platform(),
            monitor: MonitorOptions::default(),
        }
    }
}

/// Something the terminal (or a log) should hear about.
#[derive(Debug, Clone)]
pub enum Event {
    /// A target's status changed (found, gone, no access, waiting).
    Status {
        /// The target.
        target: String,
        /// Its new status.
        status: TargetStatus,
        /// Its pid, when known.
        pid: Option<u32>,
        /// What happened, in words.
        message: String,
    },
    /// A rule changed state.
    Alert {
        /// The target.
        target: String,
        /// The change.
        transition: Box<Transition>,
    },
    /// A profile was stored.
    Snapshot {
        /// What was stored.
        meta: Box<SnapshotMeta>,
        /// For heap profiles after the first: what grew most since the
        /// previous one.
        growth: Option<String>,
    },
    /// A pull failed (the endpoint's retries and breaker already applied).
    PullFailed {
        /// The target.
        target: String,
        /// The profile kind.
        kind: String,
        /// Why.
        error: String,
    },
}

/// Receives [`Event`]s; called from the watch threads and the runtime, so
/// it must be quick.
pub type EventSink = Arc<dyn Fn(Event) + Send + Sync>;

/// A watched target while the sidecar runs.
pub struct TargetState {
    /// Its settings.
    pub spec: TargetSpec,
    /// Its watch loop.
    pub monitor: Monitor,
    /// Its pprof endpoint.
    pub endpoint: Option<Endpoint>,
    /// Profiles stored for it since start.
    pub snapshots_total: AtomicU64,
    /// Pulls that failed since start.
    pub pull_failures_total: AtomicU64,
    /// The last pull error, if the last pull failed.
    pub last_pull_error: Mutex<Option<String>>,
    /// Counts read from the pprof endpoint (`goroutines` or `tokio_tasks`,
    /// and `heap_bytes`).
    counts: Arc<Mutex<Vec<(&'static str, f64)>>>,
    /// What serves the pprof URL, and for which pid that was found.
    flavor: Mutex<(Option<u32>, counts::Flavor)>,
    /// Held while finding out what serves the URL: one detection at a time.
    detecting: tokio::sync::Mutex<()>,
    /// What names its leaks: reduced heap profiles, goroutine groups.
    evidence: Mutex<naming::Evidence>,
    /// The healthy readings of its threads, fds and tasks (shared with its
    /// watch hook, which starts them).
    readings: Arc<Mutex<kinds::Readings>>,
    /// The last heap profile pulled, for the growth line of the next one.
    last_heap: tokio::sync::Mutex<Option<leakscope_agent::profile::Profile>>,
}

impl std::fmt::Debug for TargetState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetState")
            .field("name", &self.spec.name)
            .finish_non_exhaustive()
    }
}

/// Everything the API and the pull tasks share.
pub struct Shared {
    /// The targets, in configuration order.
    pub targets: Vec<Arc<TargetState>>,
    /// The snapshot store.
    pub store: Store,
    /// The webhook, if any.
    pub webhook: Option<WebhookSink>,
    /// Where events go.
    pub events: EventSink,
    /// Bearer token of the API.
    pub token: Option<String>,
    /// The API's address, once bound (for the viewer links of findings).
    addr: std::sync::OnceLock<SocketAddr>,
}

impl Shared {
    /// The target called `name`.
    pub fn target(&self, name: &str) -> Option<&Arc<TargetState>> {
        self.targets.iter().find(|t| t.spec.name == name)
    }
}

/// A running sidecar; dropping it stops the watch loops (the API server
/// and pull tasks end with the runtime).
pub struct Sidecar {
    shared: Arc<Shared>,
    addr: SocketAddr,
}

impl std::fmt::Debug for Sidecar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sidecar")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Errors starting the sidecar.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The options do not make sense; the message says which and why.
    #[error("{0}")]
    Invalid(String),
    /// The store or a watch thread could not be started.
    #[error(transparent)]
    Agent(#[from] leakscope_agent::Error),
    /// The API address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Checks names, URLs and the bind/token pairing.
fn validate(opts: &SidecarOptions) -> Result<(), StartError> {
    if opts.targets.is_empty() {
        return Err(StartError::Invalid(
            "nothing to watch: give --pid, --name or a --config file with [[target]] entries"
                .into(),
        ));
    }
    for (i, t) in opts.targets.iter().enumerate() {
        let ok = !t.name.is_empty()
            && t.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !ok {
            return Err(StartError::Invalid(format!(
                "target name {:?}: use letters, digits, '.', '_' or '-'",
                t.name
            )));
        }
        if opts.targets[..i].iter().any(|o| o.name == t.name) {
            return Err(StartError::Invalid(format!(
                "two targets are called {:?}: give each its own name",
                t.name
            )));
        }
        if t.cpu_every.is_some() && t.cpu_seconds == 0 {
            return Err(StartError::Invalid(format!(
                "target {:?}: cpu profiles need cpu_seconds > 0",
                t.name
            )));
        }
    }
    let loopback = opts.listen.ip().is_loopback();
    if !loopback && opts.token.as_deref().is_none_or(str::is_empty) {
        return Err(StartError::Invalid(format!(
            "--listen {} is not a loopback address: set a bearer token (--token or \
             LEAKSCOPE_TOKEN), since profiles expose symbols and addresses",
            opts.listen
        )));
    }
    Ok(())
}

/// The monitor hook of one target: events, the webhook, breach pulls, the
/// healthy readings and the findings.
struct Hook {
    target: String,
    events: EventSink,
    /// Set once the target state exists (the monitor starts first).
    state: Arc<std::sync::OnceLock<(std::sync::Weak<TargetState>, std::sync::Weak<Shared>)>>,
    runtime: tokio::runtime::Handle,
    /// The healthy readings of threads, fds and tasks to start.
    schedule: kinds::Schedule,
}

impl WatchHook for Hook {
    fn on_sample(
        &self,
        sample: &ResourceSample,
        levels: &leakscope_agent::watch::monitor::Levels<'_>,
    ) {
        kinds::on_sample(
            &self.schedule,
            &self.runtime,
            self.state.get(),
            sample,
            levels,
        );
    }

    fn explain(&self, transition: &Transition, sample: &ResourceSample) -> Option<Finding> {
        let kind = naming::Kind::of(&transition.metric)?;
        let (t, shared) = self.state.get()?;
        let (t, shared) = (t.upgrade()?, shared.upgrade()?);
        naming::explain_blocking(
            &self.runtime,
            shared,
            t,
            kind,
            transition.rule.clone(),
            sample.clone(),
        )
    }

    fn on_transition(&self, transition: &Transition, _sample: &ResourceSample) {
        (self.events)(Event::Alert {
            target: self.target.clone(),
            transition: Box::new(transition.clone()),
        });
        // A heap rule pulled its breach profile while explaining.
        if transition.to <= transition.from
            || naming::Kind::of(&transition.metric) == Some(naming::Kind::Heap)
        {
            return;
        }
        // A breach: capture a heap profile, off this thread.
        let Some((t, shared)) = self.state.get() else {
            return;
        };
        if let (Some(t), Some(shared)) = (t.upgrade(), shared.upgrade())
            && t.endpoint.is_some()
        {
            let labels = BTreeMap::from([("rule".to_owned(), transition.rule.clone())]);
            self.runtime.spawn(async move {
                let _ = pull::snapshot(
                    &shared,
                    &t,
                    "heap",
                    leakscope_agent::store::Trigger::Breach,
                    None,
                    labels,
                )
                .await;
            });
        }
    }

    fn on_status(&self, status: TargetStatus, pid: Option<u32>, message: &str) {
        (self.events)(Event::Status {
            target: self.target.clone(),
            status,
            pid,
            message: message.to_owned(),
        });
    }
}

impl Sidecar {
    /// Opens the store, starts a watch loop and a pull task per target and
    /// the API server. Call inside a tokio runtime.
    pub async fn start(opts: SidecarOptions, events: EventSink) -> Result<Sidecar, StartError> {
        validate(&opts)?;
        let store = {
            let (dir, store_opts) = (opts.data_dir.clone(), opts.store.clone());
            tokio::task::spawn_blocking(move || Store::open(dir, store_opts))
                .await
                .map_err(|e| StartError::Invalid(format!("opening the store: {e}")))??
        };
        let webhook = opts.webhook.clone().map(WebhookSink::spawn).transpose()?;
        let alertmanager = opts
            .alertmanager
            .clone()
            .map(AlertmanagerSink::spawn)
            .transpose()?;
        let runtime = tokio::runtime::Handle::current();
        let mut targets = Vec::new();
        let mut links = Vec::new();
        for spec in &opts.targets {
            let counts: Arc<Mutex<Vec<(&'static str, f64)>>> = Arc::default();
            let extra: ExtraMetrics = {
                let counts = counts.clone();
                Box::new(move || counts.lock().unwrap_or_else(|e| e.into_inner()).clone())
            };
            let link = Arc::new(std::sync::OnceLock::new());
            let readings: Arc<Mutex<kinds::Readings>> = Arc::default();
            let mut hooks: Vec<Arc<dyn WatchHook>> = vec![Arc::new(Hook {
                target: spec.name.clone(),
                events: events.clone(),
                state: link.clone(),
                runtime: runtime.clone(),
                schedule: kinds::Schedule {
                    readings: readings.clone(),
                    watched: kinds::Watched::of(&spec.rules),
                    every: spec.evidence_every,
                    has_url: spec.pprof_url.is_some(),
                    busy: Arc::default(),
                },
            })];
            if let Some(sink) = &webhook {
                hooks.push(Arc::new(WebhookHook {
                    sink: sink.clone(),
                    target: spec.name.clone(),
                }));
            }
            if let Some(sink) = &alertmanager {
                hooks.push(Arc::new(AlertmanagerHook {
                    sink: sink.clone(),
                    target: spec.name.clone(),
                }));
            }
            let watch_target = match &spec.selector {
                Selector::Pid(pid) => WatchTarget::Fixed(Target::Pid(*pid)),
                Selector::Name(re) => {
                    let re = re.clone();
                    WatchTarget::Located {
                        locate: Box::new(move || locate::first(&re)),
                        describe: spec.selector.describe(),
                    }
                }
            };
            let mut monitor_opts = opts.monitor.clone();
            monitor_opts.rules = spec.rules.clone();
            let monitor = Monitor::spawn(watch_target, monitor_opts, Some(extra), hooks)?;
            let endpoint = spec
                .pprof_url
                .clone()
                .map(|url| Endpoint::with_roots(url, opts.policy.clone(), &opts.tls_roots));
            targets.push(Arc::new(TargetState {
                spec: spec.clone(),
                monitor,
                endpoint,
                snapshots_total: AtomicU64::new(0),
                pull_failures_total: AtomicU64::new(0),
                last_pull_error: Mutex::new(None),
                counts,
                flavor: Mutex::new((None, counts::Flavor::Unknown)),
                detecting: tokio::sync::Mutex::new(()),
                evidence: Mutex::new(naming::Evidence::default()),
                readings,
                last_heap: tokio::sync::Mutex::new(None),
            }));
            links.push(link);
        }
        let shared = Arc::new(Shared {
            targets,
            store,
            webhook,
            events,
            token: opts.token.clone().filter(|t| !t.is_empty()),
            addr: std::sync::OnceLock::new(),
        });
        for (t, link) in shared.targets.iter().zip(links) {
            let _ = link.set((Arc::downgrade(t), Arc::downgrade(&shared)));
            if t.endpoint.is_some() {
                tokio::spawn(pull::schedule(Arc::downgrade(&shared), Arc::downgrade(t)));
            }
        }
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: opts.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Listen {
            addr: opts.listen,
            source,
        })?;
        let _ = shared.addr.set(addr);
        let app = api::router(shared.clone());
        #[cfg(feature = "viewer")]
        let app = {
            let ui =
                leakscope_viewer::web::router(Arc::new(ui::SidecarSource(shared.clone())), "/ui")
                    .layer(axum::middleware::from_fn_with_state(
                        shared.clone(),
                        api::auth,
                    ));
            app.merge(ui).route(
                "/",
                axum::routing::get(|| async { axum::response::Redirect::to("/ui/") }),
            )
        };
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the sidecar's API server stopped");
            }
        });
        Ok(Sidecar { shared, addr })
    }

    /// The API's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the API and the pull tasks share.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}
