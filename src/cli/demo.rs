//! `leakscope demo`: the whole story in one command. It starts the leaky
//! example service with the agent (watch loop, snapshot store, viewer) in
//! this process, puts it under load with the built-in load generator (most
//! requests are normal, some leak heap, threads, tokio tasks or file
//! descriptors), shows the counters and the alerts as they move, each alert
//! with the leak the agent named in it, and ends with a scorecard built
//! from those alerts: for each kind of leak, how fast it was detected, how
//! sure the naming is, and the function and file:line. The service and the
//! viewer stay up until Ctrl-C (`--exit` stops).
//!
//! To tell in seconds what takes minutes on a real service, the demo uses
//! shorter rule windows, a faster sampling interval and a shorter evidence
//! period than the built-in defaults, and prints them; everything else
//! (heap sampling, how leaks are named) is what a service gets.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use leakscope::agent::explain::{Confidence, Finding};
use leakscope::agent::store::{Store, StoreOptions};
use leakscope::agent::watch::monitor::{MonitorOptions, MonitorView};
use leakscope::agent::watch::rules::{Condition, Rule, Transition};
use leakscope::agent::{AgentBuilder, AgentParts};
use leakscope::load;
use leakscope::ui::AgentBuilderExt;
use leakscope::viewer::render::table::format_value;

/// Settings of the demo.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// How long to load the service.
    #[arg(long, default_value = "10s", value_parser = super::watch::parse_duration)]
    pub duration: Duration,
    /// Concurrent connections of the load.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Stop at the end instead of keeping the service and viewer up.
    #[arg(long)]
    pub exit: bool,
    /// Address for the service (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub addr: SocketAddr,
}

const TIMEOUT: Duration = Duration::from_secs(20);

/// Requests per second of the load, in all.
const RATE: f64 = 800.0;

/// The load: normal requests, and a few that leak each kind.
const MIX: &[(&str, u32)] = &[
    ("/", 80),
    ("/leak/heap?kb=64", 8),
    ("/leak/thread", 2),
    ("/leak/task", 3),
    ("/leak/fd", 2),
];

/// The demo's growth-rule window (built-in: 5 minutes).
const WINDOW_SECS: f64 = 3.0;
/// The demo's sampling interval (built-in: 1 s).
const INTERVAL: Duration = Duration::from_millis(100);
/// The demo's evidence period (built-in: a minute).
const EVIDENCE_EVERY: Duration = Duration::from_secs(2);

/// Each kind of leak: its name, its rule (metric, threshold per minute).
const KINDS: &[(&str, &str, f64)] = &[
    ("heap", "heap_bytes", 30.0 * 1024.0 * 1024.0),
    ("threads", "threads", 30.0),
    ("tasks", "tokio_tasks", 60.0),
    ("fds", "open_fds", 30.0),
];

/// Growth rules with windows short enough for a demo of seconds.
fn demo_rules() -> Vec<Rule> {
    KINDS
        .iter()
        .map(|(_, metric, per_minute)| {
            Rule::new(
                format!("{metric}_growth"),
                *metric,
                Condition::Growth {
                    per_minute: *per_minute,
                    critical_per_minute: None,
                    window_secs: WINDOW_SECS,
                },
            )
        })
        .collect()
}

/// What the demo prints about its settings, before anything runs.
fn settings() -> String {
    let per_minute = |metric: &str, v: f64| {
        if metric.ends_with("_bytes") {
            format!("{}/min", format_value(v as i64, "bytes"))
        } else {
            format!("{v:.0}/min")
        }
    };
    let thresholds: Vec<String> = KINDS
        .iter()
        .map(|(kind, metric, v)| format!("{kind} {}", per_minute(metric, *v)))
        .collect();
    let mut out = format!(
        "  Settings that differ from leakscope's built-in defaults, to show in seconds what takes\n  \
         minutes on a real service:\n\
         \x20   rules     growth over {WINDOW_SECS} s windows (built-in: 5 min); {}\n\
         \x20   sampling  every {} ms (built-in: every second)\n\
         \x20   evidence  every {} s (built-in: every minute): heap snapshots, healthy fds and tasks profiles\n\
         \x20 Built in, as a service gets them: jemalloc's heap sampling (512 KiB), how each alert names its leak.\n",
        thresholds.join(", "),
        INTERVAL.as_millis(),
        EVIDENCE_EVERY.as_secs()
    );
    if !leakscope::agent::tasks::hooks_installed() {
        out.push_str(
            "  This build has no --cfg tokio_unstable: task leaks are counted, not traced to their spawn \n  \
             site (README: \"Naming every leak\" says what a service sets for that).\n",
        );
    }
    out
}

/// One kind of leak on the scorecard: the first alert of its rule during
/// the load.
struct Leak {
    kind: &'static str,
    rule: String,
    alert: Option<Transition>,
}

impl Leak {
    fn finding(&self) -> Option<&Finding> {
        self.alert.as_ref().and_then(|a| a.finding.as_ref())
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    println!("leakscope demo: a service that leaks under load, and each leak named\n");
    print!("{}", settings());
    println!();
    let data = std::env::temp_dir().join(format!("leakscope-demo-{}", std::process::id()));
    let store = Store::open(&data, StoreOptions::default())
        .with_context(|| format!("opening a snapshot store in {}", data.display()))?;
    let parts: Arc<OnceLock<AgentParts>> = Arc::default();
    let agent = {
        let parts = parts.clone();
        AgentBuilder::new()
            .watch(
                MonitorOptions::default()
                    .interval(INTERVAL)
                    .rules(demo_rules()),
            )
            .evidence_every(EVIDENCE_EVERY)
            .store(store.clone())
            .with_ui()
            .extra_routes(move |p| {
                let _ = parts.set(p.clone());
                axum::Router::new()
            })
            .router()
    };
    let app = leakscope::leaky::router().merge(agent);
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let monitor = parts
        .get()
        .and_then(|p| p.monitor.clone())
        .context("the agent's watch loop did not start")?;
    println!("  service  http://{addr}/");
    println!("  pprof    http://{addr}/debug/pprof/");
    println!("  viewer   http://{addr}/debug/pprof/ui/\n");

    // A quiet start, longer than the rules' window and the evidence
    // period, so the rules settle and healthy evidence is taken.
    drive(
        addr,
        &[("/", 1)],
        Duration::from_millis(2500),
        2,
        Some(100.0),
        &mut |_| {},
    )
    .await?;
    let before = monitor.view();
    println!("  [1/3] healthy: {}", counters(&before));

    println!(
        "  [2/3] load: {} at {RATE:.0} requests/s on {} connections; 1 request in {} leaks something",
        human_secs(args.duration.as_secs_f64()),
        args.concurrency,
        MIX.iter().map(|(_, w)| w).sum::<u32>()
            / MIX[1..].iter().map(|(_, w)| w).sum::<u32>().max(1)
    );
    let started = Instant::now();
    let load_start = now_unix();
    let mut leaks: Vec<Leak> = KINDS
        .iter()
        .map(|(kind, metric, _)| Leak {
            kind,
            rule: format!("{metric}_growth"),
            alert: None,
        })
        .collect();
    let tty = std::io::stdout().is_terminal();
    let mut seen_alerts = before.alerts_total;
    let mut last_line = Instant::now() - Duration::from_secs(10);
    let report = {
        let monitor = monitor.clone();
        let total = args.duration;
        let mut tick = |p: &Tick| {
            let view = monitor.view();
            // Alerts as they fire, each with what it names.
            if view.alerts_total > seen_alerts {
                let new = (view.alerts_total - seen_alerts) as usize;
                for a in view.alerts.iter().rev().take(new).rev() {
                    if tty {
                        print!("\r\x1b[2K");
                    }
                    println!(
                        "        alert {:>5.1}s  {} -> {}: {}",
                        started.elapsed().as_secs_f64(),
                        a.rule,
                        a.to,
                        a.message
                    );
                    if let Some(f) = &a.finding {
                        println!("                      {} ({})", f.summary, f.confidence);
                    }
                }
                seen_alerts = view.alerts_total;
            }
            let progress = (p.elapsed.as_secs_f64() / total.as_secs_f64()).min(1.0);
            let filled = (progress * 24.0) as usize;
            let line = format!(
                "        [{}{}] {:>4.1}s  {} requests ({:.0}/s)  {}",
                "#".repeat(filled),
                "-".repeat(24 - filled),
                p.elapsed.as_secs_f64(),
                p.sent,
                p.sent as f64 / p.elapsed.as_secs_f64().max(0.001),
                counters(&view)
            );
            if tty {
                print!("\r\x1b[2K{line}");
                let _ = std::io::stdout().flush();
            } else if last_line.elapsed() >= Duration::from_secs(2) {
                println!("{line}");
                last_line = Instant::now();
            }
        };
        drive(
            addr,
            MIX,
            args.duration,
            args.concurrency.max(1),
            Some(RATE),
            &mut tick,
        )
        .await?
    };
    if tty {
        println!();
    }
    println!("        {report}");
    // Late alerts: a rule may need one more sample.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = monitor.view();
    for leak in &mut leaks {
        leak.alert = after
            .alerts
            .iter()
            .find(|a| a.rule == leak.rule && a.to > a.from && a.at >= load_start)
            .cloned();
    }

    println!(
        "\n  [3/3] scorecard ({} -> {}), from the alerts:\n",
        counters(&before),
        counters(&after)
    );
    println!("        {:<8} {:>8}  {:<9} where", "leak", "alert", "named");
    for l in &leaks {
        let detected = l
            .alert
            .as_ref()
            .map_or("-".to_owned(), |a| human_secs(a.at - load_start));
        let (named, place) = match l.finding() {
            Some(f) => (
                f.confidence.as_str().to_owned(),
                match &f.site {
                    Some(site) => format!(
                        "{} ({}:{})",
                        site.function,
                        short_path(&site.file),
                        site.line
                    ),
                    None => f
                        .groups
                        .first()
                        .map_or(f.summary.clone(), |g| format!("+{} {}", g.delta(), g.what)),
                },
            ),
            None if l.alert.is_some() => ("-".to_owned(), "(no finding)".to_owned()),
            None => ("-".to_owned(), "not detected".to_owned()),
        };
        println!(
            "        {:<8} {:>8}  {:<9} {place}",
            l.kind, detected, named
        );
    }
    println!();
    for l in &leaks {
        let (Some(alert), Some(f)) = (&l.alert, l.finding()) else {
            continue;
        };
        let when = human_secs(alert.at - load_start);
        match (&f.site, f.confidence) {
            (Some(site), Confidence::Exact | Confidence::Clear | Confidence::Likely) => println!(
                "  FOUND: {} leak at {} ({}:{}), alert after {when}: {}",
                singular(l.kind),
                site.function,
                short_path(&site.file),
                site.line,
                f.summary
            ),
            _ => println!(
                "  FOUND: {} leak, alert after {when}: {} ({})",
                singular(l.kind),
                f.summary,
                f.confidence
            ),
        }
    }
    if let Some(url) = leaks
        .iter()
        .filter_map(|l| l.finding().and_then(|f| f.url.clone()))
        .next()
    {
        println!("\n  The diff of the first finding, in the viewer: http://{addr}{url}");
    }
    let missed: Vec<&str> = leaks
        .iter()
        .filter(|l| l.alert.is_none())
        .map(|l| l.kind)
        .collect();
    if args.exit {
        server.abort();
        println!(
            "  Snapshots kept in {} (leakscope view {} shows them).",
            data.display(),
            data.join("snapshots").display()
        );
        if !missed.is_empty() {
            bail!("not detected: {}", missed.join(", "));
        }
        return Ok(());
    }
    println!("  The service and the viewer stay up; Ctrl-C to stop (--exit stops here).");
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    server.abort();
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}

fn now_unix() -> f64 {
    leakscope::agent::collect::unix_seconds(std::time::SystemTime::now())
}

fn singular(kind: &str) -> &str {
    match kind {
        "threads" => "thread",
        "tasks" => "task",
        "fds" => "fd",
        k => k,
    }
}

fn human_secs(s: f64) -> String {
    format!("{s:.1} s")
}

/// `threads 21 fds 30 rss 40.1 MiB`
fn counters(v: &MonitorView) -> String {
    let Some(s) = &v.last else {
        return "no sample yet".into();
    };
    format!(
        "threads {} fds {} rss {}",
        s.threads,
        s.open_fds,
        format_value(s.rss_bytes as i64, "bytes")
    )
}

/// Progress of the load, for the demo's line.
struct Tick {
    sent: u64,
    elapsed: Duration,
}

/// Puts `addr` under load with the load generator ([`leakscope::load`]): a
/// weighted `mix` of paths for `duration`, paced at `rate` requests per
/// second in all (a closed loop without), calling `tick` about every 200 ms
/// on this task; returns the load's one-line summary.
async fn drive(
    addr: SocketAddr,
    mix: &[(&str, u32)],
    duration: Duration,
    concurrency: usize,
    rate: Option<f64>,
    tick: &mut dyn FnMut(&Tick),
) -> anyhow::Result<String> {
    let target = load::Target::mix(&format!("http://{addr}"), mix.iter().copied())?;
    let mut opts = load::LoadOptions::default()
        .concurrency(concurrency)
        .duration(duration)
        .timeout(TIMEOUT);
    if let Some(r) = rate {
        opts = opts.rate(r);
    }
    let latest = std::sync::Mutex::new(Tick {
        sent: 0,
        elapsed: Duration::ZERO,
    });
    let progress = |p: &load::Progress| {
        *latest.lock().unwrap_or_else(|e| e.into_inner()) = Tick {
            sent: p.sent,
            elapsed: p.elapsed,
        };
    };
    let run = load::run(&target, &opts, Some(&progress));
    tokio::pin!(run);
    let mut every = tokio::time::interval(Duration::from_millis(200));
    let report = loop {
        tokio::select! {
            r = &mut run => break r?,
            _ = every.tick() => {
                let t = latest.lock().unwrap_or_else(|e| e.into_inner());
                tick(&t);
            }
        }
    };
    tick(&Tick {
        sent: report.requests,
        elapsed: report.elapsed,
    });
    Ok(format!(
        "{} requests in {:.1} s ({:.0}/s), {} failed; latency p50 {:?}, p99 {:?}",
        report.requests,
        report.elapsed.as_secs_f64(),
        report.rate(),
        report.failed(),
        report.latency.quantile(0.5),
        report.latency.quantile(0.99),
    ))
}

/// The path relative to this crate when it is inside it.
fn short_path(file: &str) -> &str {
    let root = env!("CARGO_MANIFEST_DIR");
    file.strip_prefix(root)
        .map(|f| f.trim_start_matches('/'))
        .unwrap_or(file)
}
