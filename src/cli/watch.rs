//! `leakscope watch`: the sidecar on the command line. Targets come from
//! `--pid`/`--name` flags and from a `--config` file; progress goes to the
//! terminal (a line per target on start, then status changes, alerts with
//! the leak they name, snapshots, and a status line every `--status-every`).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use leakscope::agent::alert::alertmanager::AlertmanagerOptions;
use leakscope::agent::alert::webhook::WebhookOptions;
use leakscope::agent::client::RetryPolicy;
use leakscope::agent::client::url::HttpUrl;
use leakscope::agent::watch::config::rules_from_file;
use leakscope::agent::watch::rules::Level;
use leakscope::sidecar::{Event, Selector, Sidecar, SidecarOptions, TargetSpec, config};
use leakscope::viewer::render::table::format_value;

/// Settings of `leakscope watch`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Examples:
  leakscope watch --name my-api --pprof-url http://127.0.0.1:6060
  leakscope watch --pid 4242 --heap-every 0
  leakscope watch --config deploy/sidecar.toml

The API (GET /api/targets, /api/snapshots, /metrics, ...) is described in
docs/sidecar.md; the viewer is at /ui/ on the same address. Durations take
ms, s, m, h or d suffixes (bare numbers are seconds; 0 turns a schedule off).")]
pub struct WatchArgs {
    /// Watch this pid (repeatable). When it exits, the target shows as gone.
    #[arg(long, value_name = "PID")]
    pub pid: Vec<u32>,
    /// Watch the oldest process whose name or command line matches this
    /// regular expression (repeatable); after it exits, the next match is
    /// picked up.
    #[arg(long, value_name = "REGEX")]
    pub name: Vec<String>,
    /// Base URL of the target's pprof endpoints (a leakscope agent or a Go
    /// service with net/http/pprof). Give one for a single target, or one
    /// per --pid/--name target, in order.
    #[arg(long, value_name = "URL")]
    pub pprof_url: Vec<String>,
    /// Name the flag targets (repeatable, in order; default: pid-PID or
    /// the pattern).
    #[arg(long = "target-name", value_name = "NAME")]
    pub target_name: Vec<String>,
    /// TOML file with [[target]] entries, [sidecar] settings and rules
    /// (docs/configuration.md).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Threshold rules for the flag targets (TOML; default: built-in rules).
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// Where snapshots are stored.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the HTTP API; anything but loopback needs --token.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// Bearer token the API requires.
    #[arg(long, env = "LEAKSCOPE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Sampling interval of /proc.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// Time between heap profiles of the flag targets.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub heap_every: Duration,
    /// Time between CPU profiles of the flag targets (default: none).
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = parse_duration)]
    pub cpu_every: Duration,
    /// Length of each CPU profile, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = TargetSpec::DEFAULT_CPU_SECONDS)]
    pub cpu_seconds: u32,
    /// Time between reads of the goroutine / tokio task count and the heap
    /// in use (0: never).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub counts_every: Duration,
    /// Time between the healthy readings that thread, fd and tokio-task
    /// alerts are compared with (an fds or tasks profile; thread ids every
    /// 10s at most); 0: none.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub evidence_every: Duration,
    /// Post alerts to this http:// webhook (JSON with a Slack-style `text`).
    #[arg(long, value_name = "URL")]
    pub webhook: Option<String>,
    /// Post alerts to Prometheus Alertmanager at this http:// base URL
    /// (API v2; resolved when the rule recovers).
    #[arg(long, value_name = "URL")]
    pub alertmanager: Option<String>,
    /// Bound of each profile pull attempt (CPU profiles add their length).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Bound of connecting to a pprof endpoint.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Retries of a failed pull.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub retries: u32,
    /// Failed pulls in a row that open a target's circuit breaker.
    #[arg(long, value_name = "N", default_value_t = RetryPolicy::DEFAULT_BREAKER_FAILURES)]
    pub breaker_failures: u32,
    /// How long an open breaker refuses pulls before one trial.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub breaker_open_for: Duration,
    /// Keep at most this many snapshots.
    #[arg(long, value_name = "N")]
    pub max_snapshots: Option<usize>,
    /// Keep at most this many bytes of snapshots (suffixes K, M, G).
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub max_bytes: Option<u64>,
    /// Drop snapshots older than this.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_age: Option<Duration>,
    /// Print a status line for every target this often (0: never).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub status_every: Duration,
    /// Stop after this long (default: run until Ctrl-C).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
}

/// `250ms`, `5s`, `2m`, `1h`, `7d`, or bare seconds (`1.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 500ms, 5s, 2m, 1h or 7d"))?;
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (use ms, s, m, h or d)"
            ));
        }
    };
    let secs = n * scale;
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `1048576`, `512K`, `100M`, `1G`.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, scale) = match s.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M') => (&s[..s.len() - 1], 1 << 20),
        Some('G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 1048576, 512K, 100M or 1G"))?;
    n.checked_mul(scale)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// A target name from a pattern: its letters, digits, '.', '_' and '-'.
fn name_from_pattern(p: &str) -> String {
    let cleaned: String = p
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed = cleaned.trim_matches('_');
    if trimmed.is_empty() {
        "target".into()
    } else {
        trimmed.chars().take(40).collect()
    }
}

fn options(args: &WatchArgs) -> anyhow::Result<SidecarOptions> {
    let mut opts = SidecarOptions::new(Vec::new());
    if let Some(path) = &args.config {
        let file = config::load(path).map_err(anyhow::Error::msg)?;
        file.apply(&mut opts).map_err(anyhow::Error::msg)?;
        opts.targets = file.targets;
    }
    let mut selectors: Vec<(String, Selector)> = args
        .pid
        .iter()
        .map(|&p| (format!("pid-{p}"), Selector::Pid(p)))
        .collect();
    for n in &args.name {
        let re = regex::Regex::new(n)
            .with_context(|| format!("--name {n:?} is not a valid regular expression"))?;
        selectors.push((name_from_pattern(n), Selector::Name(re)));
    }
    let urls = &args.pprof_url;
    if !urls.is_empty() && urls.len() != 1 && urls.len() != selectors.len() {
        bail!(
            "{} --pprof-url for {} --pid/--name targets: give one per target, in order",
            urls.len(),
            selectors.len()
        );
    }
    if urls.len() == 1 && selectors.len() > 1 {
        bail!(
            "one --pprof-url for {} targets: give one per target, in order",
            selectors.len()
        );
    }
    if !urls.is_empty() && selectors.is_empty() {
        bail!("--pprof-url needs a process to watch: add --pid PID or --name REGEX");
    }
    if args.target_name.len() > selectors.len() {
        bail!("more --target-name than --pid/--name targets");
    }
    let rules = args.rules.as_deref().map(rules_from_file).transpose()?;
    let every = |d: Duration| (!d.is_zero()).then_some(d);
    for (i, (default_name, selector)) in selectors.into_iter().enumerate() {
        let name = args.target_name.get(i).cloned().unwrap_or(default_name);
        let mut spec = TargetSpec::new(name, selector);
        spec.pprof_url = urls
            .get(i)
            .map(|u| HttpUrl::parse(u).map_err(|m| anyhow::anyhow!("--pprof-url {m}")))
            .transpose()?;
        spec.heap_every = every(args.heap_every);
        spec.cpu_every = every(args.cpu_every);
        spec.cpu_seconds = args.cpu_seconds;
        spec.counts_every = args.counts_every;
        spec.evidence_every = args.evidence_every;
        if let Some(r) = &rules {
            spec.rules = r.clone();
        }
        opts.targets.push(spec);
    }
    if let Some(d) = &args.data_dir {
        opts.data_dir = d.clone();
    }
    if let Some(l) = args.listen {
        opts.listen = l;
    }
    if args.token.is_some() {
        opts.token = args.token.clone();
    }
    if let Some(i) = args.interval {
        opts.monitor.interval = i.max(Duration::from_millis(10));
    }
    if let Some(w) = &args.webhook {
        opts.webhook = Some(WebhookOptions::new(w.clone()));
    }
    if let Some(a) = &args.alertmanager {
        opts.alertmanager = Some(AlertmanagerOptions::new(a.clone()));
    }
    let backoff = opts.policy.backoff;
    opts.policy = opts
        .policy
        .timeouts(args.connect_timeout, args.timeout)
        .retries(args.retries, backoff)
        .breaker(args.breaker_failures, args.breaker_open_for);
    if let Some(n) = args.max_snapshots {
        opts.store.max_count = Some(n);
    }
    if let Some(b) = args.max_bytes {
        opts.store.max_bytes = Some(b);
    }
    if let Some(a) = args.max_age {
        opts.store.max_age = Some(a);
    }
    Ok(opts)
}

/// `HH:MM:SS` (UTC) of now.
fn clock() -> String {
    let s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{:02}:{:02}:{:02}", s / 3600 % 24, s / 60 % 60, s % 60)
}

/// One line per event, on stdout.
fn print_event(e: Event) {
    let line = match e {
        Event::Status {
            target,
            status,
            pid,
            message,
        } => {
            let pid = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
            format!("{target}: {status}{pid}: {message}")
        }
        Event::Alert { target, transition } => {
            let level = match transition.to {
                Level::Ok => "ok".to_owned(),
                l => l.to_string().to_uppercase(),
            };
            let mut line = format!(
                "{target}: {level} {}: {}",
                transition.rule, transition.message
            );
            // What leaks and where, under the alert.
            if let Some(f) = &transition.finding {
                line.push_str(&format!("\n           {}", f.summary));
                if let Some(url) = &f.url {
                    line.push_str(&format!("\n           diff: {url}"));
                }
            }
            line
        }
        Event::Snapshot { meta, growth } => {
            let growth = growth.map(|g| format!("; {g}")).unwrap_or_default();
            format!(
                "{}: {} snapshot {} ({}, {} KiB){growth}",
                meta.target,
                meta.kind,
                meta.id,
                meta.trigger,
                meta.bytes.div_ceil(1024)
            )
        }
        Event::PullFailed {
            target,
            kind,
            error,
        } => format!("{target}: {kind} pull failed: {error}"),
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "[{}] {line}", clock());
    let _ = out.flush();
}

fn print_status(sidecar: &Sidecar) {
    for t in &sidecar.shared().targets {
        let v = t.monitor.view();
        let level = v
            .levels
            .iter()
            .map(|(_, _, l)| *l)
            .max()
            .unwrap_or(Level::Ok);
        let mut line = format!("{}: {}", t.spec.name, v.status);
        if let Some(pid) = v.pid {
            line.push_str(&format!(" pid {pid}"));
        }
        if let Some(s) = &v.last {
            line.push_str(&format!(
                " | threads {} fds {} rss {}",
                s.threads,
                s.open_fds,
                format_value(s.rss_bytes as i64, "bytes")
            ));
        }
        for metric in ["goroutines", "tokio_tasks"] {
            if let Some((_, value)) = t.monitor.series(metric).last() {
                line.push_str(&format!(" {metric} {value}"));
            }
        }
        if let Some((_, value)) = t.monitor.series("heap_bytes").last() {
            line.push_str(&format!(" heap {}", format_value(*value as i64, "bytes")));
        }
        let snaps = t.snapshots_total.load(std::sync::atomic::Ordering::Relaxed);
        line.push_str(&format!(" | {level} | {snaps} snapshots"));
        println!("[{}] {line}", clock());
    }
}

/// Runs the sidecar until Ctrl-C (or `--duration`).
pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    let opts = options(&args)?;
    let events: leakscope::sidecar::EventSink = Arc::new(print_event);
    let data_dir = opts.data_dir.clone();
    let targets = opts.targets.clone();
    let sidecar = Sidecar::start(opts, events).await?;
    let addr = sidecar.local_addr();
    let found = sidecar.shared().store.stats().count;
    println!(
        "leakscope watch: {} target(s); snapshots in {} ({found} found); API on http://{addr}/api/targets",
        targets.len(),
        data_dir.display()
    );
    for t in &targets {
        let pulls = match &t.pprof_url {
            Some(u) => {
                let heap = t
                    .heap_every
                    .map_or("no scheduled heap profiles".to_owned(), |d| {
                        format!("heap every {d:?}")
                    });
                let cpu = t.cpu_every.map_or(String::new(), |d| {
                    format!(", cpu {}s every {d:?}", t.cpu_seconds)
                });
                format!("pprof {u}, {heap}{cpu}")
            }
            None => "no pprof URL (counters only)".to_owned(),
        };
        println!(
            "  {}: {}; {}; {} rules",
            t.name,
            t.selector.describe(),
            pulls,
            t.rules.len()
        );
    }
    let stop = async {
        match args.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    tokio::pin!(stop);
    let mut status =
        (!args.status_every.is_zero()).then(|| tokio::time::interval(args.status_every));
    if let Some(s) = &mut status {
        s.tick().await;
    }
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = async {
                match &mut status {
                    Some(s) => { s.tick().await; }
                    None => std::future::pending::<()>().await,
                }
            } => print_status(&sidecar),
        }
    }
    println!("leakscope watch: stopping");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("5x").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("-1s").is_err());
        assert_eq!(parse_bytes("512K"), Ok(512 * 1024));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert!(parse_bytes("lots").is_err());
        assert_eq!(name_from_pattern("^my-api$"), "my-api");
        assert_eq!(name_from_pattern("(a|b)"), "a_b");
    }
}
