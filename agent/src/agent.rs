//! The agent's builder: settings with defaults, then either a listener of
//! its own ([`AgentBuilder::spawn`]) or the routes to mount on the service's
//! router ([`AgentBuilder::router`]).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;

use crate::alert::alertmanager::{AlertmanagerOptions, AlertmanagerSink};
use crate::alert::webhook::{WebhookOptions, WebhookSink};
use crate::alert::{AlertmanagerHook, WebhookHook};
use crate::error::{Error, Result};
use crate::http::{self, RouteConfig, WatchParts};
use crate::resource::Target;
use crate::store::Store;
use crate::watch::evidence::Evidence;
use crate::watch::monitor::{ExtraMetrics, Monitor, MonitorOptions, WatchHook};
use std::sync::Arc;

/// Builds an agent. Every setting has a default, listed as a constant.
///
/// ```no_run
/// # async fn run() -> Result<(), leakscope_agent::Error> {
/// let agent = leakscope_agent::AgentBuilder::new()
///     .addr("127.0.0.1:6060".parse().unwrap())
///     .spawn()
///     .await?;
/// println!("pprof at http://{}/debug/pprof/", agent.local_addr());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct AgentBuilder {
    addr: SocketAddr,
    cpu_hz: u32,
    max_profile_duration: Duration,
    heap_sample_interval: Option<u64>,
    watch: Option<MonitorOptions>,
    webhook: Option<WebhookOptions>,
    alertmanager: Option<AlertmanagerOptions>,
    store: Option<Store>,
    extra_routes: Vec<RoutesHook>,
    viewer: Option<String>,
    evidence_every: Duration,
}

/// What a running agent is made of, for [`AgentBuilder::extra_routes`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AgentParts {
    /// The watch loop, unless it is off.
    pub monitor: Option<Arc<Monitor>>,
    /// Its baseline and breach captures.
    pub evidence: Option<Arc<Evidence>>,
    /// The snapshot store, if one was given.
    pub store: Option<Store>,
}

/// A function that builds extra routes.
#[derive(Clone)]
struct RoutesHook(Arc<dyn Fn(&AgentParts) -> Router + Send + Sync>);

impl std::fmt::Debug for RoutesHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoutesHook")
    }
}

/// Where the watch loop's alerts go.
#[derive(Debug, Clone, Default)]
struct Sinks {
    webhook: Option<WebhookOptions>,
    alertmanager: Option<AlertmanagerOptions>,
}

/// Starts the watch loop on this process, with tokio's alive-task count
/// when built inside a runtime, and evidence captures.
fn start_watch(
    options: MonitorOptions,
    sinks: Sinks,
    store: Option<Store>,
    viewer: Option<String>,
    evidence_every: std::time::Duration,
) -> Result<WatchParts> {
    let handle = tokio::runtime::Handle::try_current().ok();
    let runtime = handle.clone();
    let extra: ExtraMetrics = Box::new(move || {
        let mut values = Vec::new();
        if let Some(h) = &handle {
            values.push(("tokio_tasks", h.metrics().num_alive_tasks() as f64));
        }
        // The heap in use, as jemalloc counts it (exact, not sampled),
        // less what the agent's own running work holds (a profile being
        // symbolized parses tens of MB it frees a moment later).
        #[cfg(feature = "heap")]
        if let Some(a) = crate::heap::allocator_stats() {
            let own = crate::heap::agent_bytes_in_flight();
            values.push(("heap_bytes", a.allocated.saturating_sub(own) as f64));
        }
        values
    });
    let mut evidence = Evidence::new(Target::SelfProcess, evidence_every);
    if let Some(path) = viewer {
        evidence = evidence.with_viewer(path);
    }
    if let Some(h) = runtime {
        evidence = evidence.with_runtime(h);
    }
    if let Some(store) = store {
        evidence = evidence.with_store(store, process_name());
    }
    let evidence = Arc::new(evidence);
    let mut hooks: Vec<Arc<dyn WatchHook>> = vec![evidence.clone()];
    let webhook = sinks.webhook.map(WebhookSink::spawn).transpose()?;
    if let Some(sink) = &webhook {
        hooks.push(Arc::new(WebhookHook {
            sink: sink.clone(),
            target: "self".into(),
        }));
    }
    let alertmanager = sinks
        .alertmanager
        .map(AlertmanagerSink::spawn)
        .transpose()?;
    if let Some(sink) = &alertmanager {
        // Alertmanager tells alerts apart by their labels: the program's
        // name, not "self", keeps two services' alerts apart.
        hooks.push(Arc::new(AlertmanagerHook {
            sink: sink.clone(),
            target: process_name(),
        }));
    }
    let monitor = Monitor::spawn(Target::SelfProcess, options, Some(extra), hooks)?;
    Ok(WatchParts {
        monitor: Arc::new(monitor),
        evidence,
        webhook,
        alertmanager,
    })
}

/// This program's name (its executable's file name), naming its snapshots.
fn process_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "self".into())
}

impl Default for AgentBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentBuilder {
    /// Default listen address: loopback only, since profiles expose
    /// symbols and addresses.
    pub const DEFAULT_ADDR: &'static str = "127.0.0.1:6060";
    /// Default CPU sampling frequency, Go's.
    pub const DEFAULT_CPU_HZ: u32 = 100;
    /// Default longest profile a request may ask for.
    pub const DEFAULT_MAX_PROFILE_DURATION: Duration = Duration::from_secs(300);

    /// A builder with the defaults.
    pub fn new() -> Self {
        AgentBuilder {
            addr: SocketAddr::from(([127, 0, 0, 1], 6060)),
            cpu_hz: Self::DEFAULT_CPU_HZ,
            max_profile_duration: Self::DEFAULT_MAX_PROFILE_DURATION,
            heap_sample_interval: None,
            watch: Some(MonitorOptions::default()),
            webhook: None,
            alertmanager: None,
            store: None,
            extra_routes: Vec::new(),
            viewer: None,
            evidence_every: Evidence::DEFAULT_EVERY,
        }
    }

    /// Applies settings from the environment, over the current ones:
    ///
    /// | variable | setting | example |
    /// |----------|---------|---------|
    /// | `LEAKSCOPE_ADDR` | [`addr`](Self::addr) | `127.0.0.1:6060` |
    /// | `LEAKSCOPE_CPU_HZ` | [`cpu_frequency`](Self::cpu_frequency) | `100` |
    /// | `LEAKSCOPE_MAX_PROFILE_SECONDS` | [`max_profile_duration`](Self::max_profile_duration) | `300` |
    /// | `LEAKSCOPE_HEAP_SAMPLE_BYTES` | [`heap_sample_interval`](Self::heap_sample_interval) | `524288` |
    /// | `LEAKSCOPE_ALERTMANAGER_URL` | [`alertmanager`](Self::alertmanager) with [`AlertmanagerOptions::new`] | `http://127.0.0.1:9093` |
    /// | `LEAKSCOPE_ALERTMANAGER_CA_FILE` | that sink's [`ca_file`](AlertmanagerOptions::ca_file) (needs the URL) | `/etc/ssl/internal-ca.pem` |
    ///
    /// Unset or empty variables change nothing; a value that does not parse
    /// is an [`Error::Config`] naming the variable.
    pub fn with_default_env(self) -> Result<Self> {
        self.with_env(|name| std::env::var(name).ok())
    }

    fn with_env(mut self, get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        fn parse<T: std::str::FromStr>(var: &'static str, value: &str) -> Result<T>
        where
            T::Err: std::fmt::Display,
        {
            value.trim().parse().map_err(|e| Error::Config {
                setting: var,
                message: format!("{value:?}: {e}"),
            })
        }
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        if let Some(v) = get("LEAKSCOPE_ADDR") {
            self = self.addr(parse("LEAKSCOPE_ADDR", &v)?);
        }
        if let Some(v) = get("LEAKSCOPE_CPU_HZ") {
            self = self.cpu_frequency(parse("LEAKSCOPE_CPU_HZ", &v)?)?;
        }
        if let Some(v) = get("LEAKSCOPE_MAX_PROFILE_SECONDS") {
            let secs: u64 = parse("LEAKSCOPE_MAX_PROFILE_SECONDS", &v)?;
            self = self.max_profile_duration(Duration::from_secs(secs));
        }
        if let Some(v) = get("LEAKSCOPE_HEAP_SAMPLE_BYTES") {
            self = self.heap_sample_interval(parse("LEAKSCOPE_HEAP_SAMPLE_BYTES", &v)?)?;
        }
        if let Some(v) = get("LEAKSCOPE_ALERTMANAGER_URL") {
            crate::client::url::HttpUrl::parse(&v).map_err(|message| Error::Config {
                setting: "LEAKSCOPE_ALERTMANAGER_URL",
                message,
            })?;
            let mut am = AlertmanagerOptions::new(v.trim());
            am.ca_file = get("LEAKSCOPE_ALERTMANAGER_CA_FILE").map(|f| f.trim().into());
            self = self.alertmanager(am);
        }
        Ok(self)
    }

    /// Address the listener binds ([`AgentBuilder::spawn`] only).
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// CPU sampling frequency, 1 to 1000 Hz.
    pub fn cpu_frequency(mut self, hz: u32) -> Result<Self> {
        if !(1..=1000).contains(&hz) {
            return Err(Error::Config {
                setting: "cpu_frequency",
                message: format!("{hz} Hz is outside 1..=1000"),
            });
        }
        self.cpu_hz = hz;
        Ok(self)
    }

    /// Longest `seconds` a CPU or delta profile request may ask for; longer
    /// requests get 400.
    pub fn max_profile_duration(mut self, max: Duration) -> Self {
        self.max_profile_duration = max;
        self
    }

    /// Average bytes between heap samples; a power of two from 1 B to 1 GiB.
    /// jemalloc's default, set by [`enable_heap_profiling!`](crate::enable_heap_profiling),
    /// is 512 KiB. Changing it resets the heap profile collected so far.
    pub fn heap_sample_interval(mut self, bytes: u64) -> Result<Self> {
        if !bytes.is_power_of_two() || bytes > 1 << 30 {
            return Err(Error::Config {
                setting: "heap_sample_interval",
                message: format!("{bytes} is not a power of two between 1 and 2^30"),
            });
        }
        self.heap_sample_interval = Some(bytes);
        Ok(self)
    }

    /// Settings of the watch loop (interval, rules, ...); it runs by
    /// default with [`MonitorOptions::default`].
    pub fn watch(mut self, options: MonitorOptions) -> Self {
        self.watch = Some(options);
        self
    }

    /// Posts every alert of the watch loop to an `http(s)://` webhook (JSON with
    /// a Slack-compatible `text` field), with retries, backoff and a circuit
    /// breaker. Call [`router`](Self::router) or [`spawn`](Self::spawn)
    /// inside a tokio runtime: delivery runs on a task of it.
    pub fn webhook(mut self, options: WebhookOptions) -> Self {
        self.webhook = Some(options);
        self
    }

    /// Posts every alert of the watch loop to Prometheus Alertmanager (API
    /// v2), resolving it there when its rule recovers and re-sending it
    /// while it fires; the same retries, backoff and breaker as the
    /// webhook. The alerts' `target` label is this program's name. Call
    /// [`router`](Self::router) or [`spawn`](Self::spawn) inside a tokio
    /// runtime: delivery runs on a task of it.
    ///
    /// ```no_run
    /// # async fn f() {
    /// use leakscope_agent::alert::alertmanager::AlertmanagerOptions;
    /// let mut am = AlertmanagerOptions::new("http://127.0.0.1:9093");
    /// am.labels.insert("service".into(), "orders".into());
    /// let routes = leakscope_agent::AgentBuilder::new().alertmanager(am).router();
    /// # let _ = routes; }
    /// ```
    pub fn alertmanager(mut self, options: AlertmanagerOptions) -> Self {
        self.alertmanager = Some(options);
        self
    }

    /// Keeps the watch loop's captures (the healthy baseline, refreshed
    /// every minute, and every breach) as heap snapshots in `store`, so the
    /// service has its own history across restarts; the sidecar's API and
    /// `go tool pprof` read the same files. Without it, only the last two
    /// captures are kept, in memory.
    ///
    /// ```no_run
    /// # fn f() -> leakscope_agent::Result<()> {
    /// use leakscope_agent::store::{Store, StoreOptions};
    /// let store = Store::open("/var/lib/my-service/leakscope", StoreOptions::default())?;
    /// let routes = leakscope_agent::AgentBuilder::new().store(store).router();
    /// # let _ = routes; Ok(()) }
    /// ```
    pub fn store(mut self, store: Store) -> Self {
        self.store = Some(store);
        self
    }

    /// How often the watch loop takes the evidence that names leaks (a heap
    /// snapshot for its ring, a healthy fds profile, the baseline capture);
    /// default [`Evidence::DEFAULT_EVERY`] (a minute). Shorter names heap
    /// leaks sooner and costs a heap dump each time.
    pub fn evidence_every(mut self, every: Duration) -> Self {
        self.evidence_every = every.max(Duration::from_millis(100));
        self
    }

    /// No watch loop: no background sampling, thresholds or captures.
    pub fn without_watch(mut self) -> Self {
        self.watch = None;
        self
    }

    /// The `/debug/pprof/*`, `/metrics` and `/debug/leakscope/*` routes, to
    /// merge into the service's own router:
    /// `app.merge(AgentBuilder::new().router())`. Starts the watch loop,
    /// which lives as long as the routes.
    pub fn router(self) -> Router {
        self.apply_heap_settings();
        let sinks = Sinks {
            webhook: self.webhook.clone(),
            alertmanager: self.alertmanager.clone(),
        };
        let watch = match self
            .watch
            .clone()
            .map(|w| {
                start_watch(
                    w,
                    sinks,
                    self.store.clone(),
                    self.viewer.clone(),
                    self.evidence_every,
                )
            })
            .transpose()
        {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "leakscope: the watch loop could not start");
                None
            }
        };
        let parts = AgentParts {
            monitor: watch.as_ref().map(|w| w.monitor.clone()),
            evidence: watch.as_ref().map(|w| w.evidence.clone()),
            store: self.store.clone(),
        };
        let mut router = http::router(RouteConfig {
            cpu_hz: self.cpu_hz,
            max_profile_duration: self.max_profile_duration,
            watch,
        });
        for hook in &self.extra_routes {
            router = router.merge((hook.0)(&parts));
        }
        router
    }

    /// Adds routes built from the agent's running parts (its watch loop,
    /// captures and store), merged beside its own: how the `leakscope`
    /// crate mounts the web viewer at `/debug/pprof/ui/`.
    pub fn extra_routes(
        mut self,
        build: impl Fn(&AgentParts) -> Router + Send + Sync + 'static,
    ) -> Self {
        self.extra_routes.push(RoutesHook(Arc::new(build)));
        self
    }

    /// Where the web viewer is mounted beside the routes (a path such as
    /// `/debug/pprof/ui`): alerts' findings then link to their diff there.
    /// `leakscope::ui::AgentBuilderExt::with_ui` sets it.
    pub fn viewer_path(mut self, path: impl Into<String>) -> Self {
        self.viewer = Some(path.into());
        self
    }

    /// Binds [`AgentBuilder::addr`] and serves the routes on a task of the
    /// current tokio runtime until the returned [`Agent`] is dropped or shut
    /// down.
    pub async fn spawn(self) -> Result<Agent> {
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .map_err(|source| Error::Io {
                context: "could not bind the pprof listener",
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| Error::Io {
            context: "could not read the pprof listener's address",
            source,
        })?;
        let app = self.router();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = rx.await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::warn!(error = %e, "leakscope pprof listener stopped");
            }
        });
        tracing::info!(addr = %local_addr, "leakscope pprof listening on http://{local_addr}/debug/pprof/");
        Ok(Agent {
            local_addr,
            shutdown: Some(tx),
            task,
        })
    }

    fn apply_heap_settings(&self) {
        #[cfg(feature = "heap")]
        if let Some(bytes) = self.heap_sample_interval
            && let Err(e) = crate::heap::set_sample_interval(bytes)
        {
            tracing::warn!(error = %e, "could not change the heap sample interval");
        }
    }
}

/// A running agent listener. Dropping it stops the listener.
#[derive(Debug)]
pub struct Agent {
    local_addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Agent {
    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets requests in flight finish, and waits.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn env_overrides_defaults() {
        let b = AgentBuilder::new()
            .with_env(env(&[
                ("LEAKSCOPE_ADDR", "127.0.0.1:7070"),
                ("LEAKSCOPE_CPU_HZ", "250"),
                ("LEAKSCOPE_MAX_PROFILE_SECONDS", "60"),
                ("LEAKSCOPE_HEAP_SAMPLE_BYTES", ""),
                ("LEAKSCOPE_ALERTMANAGER_URL", " http://127.0.0.1:9093 "),
                ("LEAKSCOPE_ALERTMANAGER_CA_FILE", "/etc/ca.pem"),
            ]))
            .expect("valid env");
        let am = b.alertmanager.as_ref().expect("alertmanager set");
        assert_eq!(am.url, "http://127.0.0.1:9093");
        assert_eq!(
            am.ca_file.as_deref(),
            Some(std::path::Path::new("/etc/ca.pem"))
        );
        assert_eq!(b.addr, SocketAddr::from(([127, 0, 0, 1], 7070)));
        assert_eq!(b.cpu_hz, 250);
        assert_eq!(b.max_profile_duration, Duration::from_secs(60));
        assert_eq!(b.heap_sample_interval, None, "empty means unset");
    }

    #[test]
    fn bad_env_values_name_the_variable() {
        let e = AgentBuilder::new()
            .with_env(env(&[("LEAKSCOPE_CPU_HZ", "fast")]))
            .expect_err("not a number");
        assert!(e.to_string().contains("LEAKSCOPE_CPU_HZ"), "{e}");
        let e = AgentBuilder::new()
            .with_env(env(&[("LEAKSCOPE_CPU_HZ", "5000")]))
            .expect_err("out of range");
        assert!(e.to_string().contains("cpu_frequency"), "{e}");
        let e = AgentBuilder::new()
            .with_env(env(&[("LEAKSCOPE_HEAP_SAMPLE_BYTES", "1000")]))
            .expect_err("not a power of two");
        assert!(e.to_string().contains("power of two"), "{e}");
        let e = AgentBuilder::new()
            .with_env(env(&[("LEAKSCOPE_ALERTMANAGER_URL", "am:9093")]))
            .expect_err("not a URL");
        assert!(e.to_string().contains("LEAKSCOPE_ALERTMANAGER_URL"), "{e}");
    }
}
