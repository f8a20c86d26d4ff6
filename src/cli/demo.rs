//! `leakscope demo`: the whole story in one command. It starts the leaky
//! example service with the agent (watch loop, snapshot store, viewer) in
//! this process, puts it under load with the built-in load generator (most
//! requests are normal, some leak heap, threads, tokio tasks or file
//! descriptors), shows the counters and the alerts as they move, and ends
//! with a scorecard: for each kind of leak, whether it was found, how fast,
//! and the function and file:line that leaks, plus the viewer page of the
//! diff. The service and the viewer stay up until Ctrl-C (`--exit` stops).

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use leakscope::agent::profile::Profile;
use leakscope::agent::store::{NewSnapshot, Store, StoreOptions, Trigger};
use leakscope::agent::watch::monitor::{MonitorOptions, MonitorView};
use leakscope::agent::watch::rules::{Condition, Rule};
use leakscope::agent::{AgentBuilder, AgentParts};
use leakscope::ui::AgentBuilderExt;
use leakscope::viewer::attribute::{Kind, creation_sites, site_by_count};
use leakscope::viewer::render::table::{format_delta, format_value};
use leakscope::viewer::{DiffOptions, Growth, rank_growth};
use leakscope::{client, load};

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

/// Average bytes between heap samples. Fine enough that the small
/// allocations made when a thread, a task or a file is created are seen:
/// they are how the scorecard names the code that creates them.
const SAMPLE_BYTES: u64 = 1024;

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

/// Growth rules with windows short enough for a demo of seconds.
fn demo_rules() -> Vec<Rule> {
    let growth = |metric: &str, per_minute: f64| {
        Rule::new(
            format!("{metric}_growth"),
            metric,
            Condition::Growth {
                per_minute,
                critical_per_minute: None,
                window_secs: 2.0,
            },
        )
    };
    vec![
        growth("rss_bytes", 30.0 * 1024.0 * 1024.0),
        growth("threads", 30.0),
        growth("tokio_tasks", 60.0),
        growth("open_fds", 30.0),
    ]
}

/// One leak kind of the scorecard: its rule and how it is named.
struct Leak {
    kind: &'static str,
    rule: &'static str,
    found: Option<Growth>,
    detected: Option<f64>,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    println!("leakscope demo: a service that leaks under load, and each leak named\n");
    let data = std::env::temp_dir().join(format!("leakscope-demo-{}", std::process::id()));
    let store = Store::open(&data, StoreOptions::default())
        .with_context(|| format!("opening a snapshot store in {}", data.display()))?;
    let parts: Arc<OnceLock<AgentParts>> = Arc::default();
    let agent = {
        let parts = parts.clone();
        // A much finer heap sample interval than jemalloc's 512 KiB default
        // (it resets the heap profile, which is fine before the service
        // starts).
        AgentBuilder::new()
            .heap_sample_interval(SAMPLE_BYTES)?
            .watch(
                MonitorOptions::default()
                    .interval(Duration::from_millis(250))
                    .rules(demo_rules()),
            )
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

    // A quiet start, longer than the rules' window so that they settle,
    // then the "before" heap snapshot.
    drive(
        addr,
        &[("/", 1)],
        Duration::from_millis(2500),
        2,
        Some(100.0),
        &mut |_| {},
    )
    .await?;
    let base = snapshot(addr, &store, "before the load").await?;
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
    let mut leaks = vec![
        Leak {
            kind: "heap",
            rule: "rss_bytes_growth",
            found: None,
            detected: None,
        },
        Leak {
            kind: "threads",
            rule: "threads_growth",
            found: None,
            detected: None,
        },
        Leak {
            kind: "tasks",
            rule: "tokio_tasks_growth",
            found: None,
            detected: None,
        },
        Leak {
            kind: "fds",
            rule: "open_fds_growth",
            found: None,
            detected: None,
        },
    ];
    let tty = std::io::stdout().is_terminal();
    let mut seen_alerts = before.alerts_total;
    let mut last_line = Instant::now() - Duration::from_secs(10);
    let report = {
        let monitor = monitor.clone();
        let total = args.duration;
        let mut tick = |p: &Tick| {
            let view = monitor.view();
            // Alerts as they fire, each on a line of its own.
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
                    let at = a.at - load_start;
                    if a.to > a.from && at >= 0.0 {
                        for l in leaks
                            .iter_mut()
                            .filter(|l| l.rule == a.rule && l.detected.is_none())
                        {
                            l.detected = Some(at);
                        }
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
    // Late alerts: the growth rules may need one more sample.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after_view = monitor.view();
    for a in &after_view.alerts {
        let at = a.at - load_start;
        if a.to > a.from && at >= 0.0 {
            for l in leaks
                .iter_mut()
                .filter(|l| l.rule == a.rule && l.detected.is_none())
            {
                l.detected = Some(at);
            }
        }
    }

    println!("  [3/3] the \"after\" heap snapshot, and what grew");
    let new = snapshot(addr, &store, "after the load").await?;
    let (base_p, new_p) = (load_profile(&store, &base)?, load_profile(&store, &new)?);
    let ranked = rank_growth(
        &base_p,
        &new_p,
        &DiffOptions::default().with_sample_type("inuse_space"),
    )?;
    leaks[0].found = ranked
        .iter()
        .find(|g| !leakscope::viewer::attribute::is_library_file(&g.file))
        .filter(|g| g.delta() > 0)
        .cloned();
    for (kind, site) in creation_sites(&base_p, &new_p, &Kind::defaults(), None)? {
        if let Some(l) = leaks.iter_mut().find(|l| l.kind == kind) {
            l.found = site;
        }
    }
    // Opening a file allocates nothing to see; match the fd count's growth
    // to the code that created as many objects (the files' buffers).
    let fd_growth = match (&before.last, &after_view.last) {
        (Some(a), Some(b)) => b.open_fds as i64 - a.open_fds as i64,
        _ => 0,
    };
    let taken: Vec<String> = leaks
        .iter()
        .filter_map(|l| l.found.as_ref().map(|g| g.function.clone()))
        .collect();
    let taken: Vec<&str> = taken.iter().map(String::as_str).collect();
    if let Some(l) = leaks
        .iter_mut()
        .find(|l| l.kind == "fds" && l.found.is_none())
    {
        l.found = site_by_count(&base_p, &new_p, fd_growth, &taken)?;
    }

    println!(
        "\n  Scorecard ({} -> {}):\n",
        counters(&before),
        counters(&after_view)
    );
    println!(
        "        {:<8} {:<6} {:>9}  {:<44} file:line",
        "leak", "found", "detected", "function"
    );
    for l in &leaks {
        let up_before = before.levels.iter().any(|(rule, _, level)| {
            rule == l.rule && *level != leakscope::agent::watch::rules::Level::Ok
        });
        let detected = match l.detected {
            Some(d) => human_secs(d),
            None if up_before => "before".to_owned(),
            None => "-".to_owned(),
        };
        match &l.found {
            Some(g) => println!(
                "        {:<8} {:<6} {:>9}  {:<44} {}:{}",
                l.kind,
                "yes",
                detected,
                g.function,
                short_path(&g.file),
                g.line
            ),
            None => println!("        {:<8} {:<6} {:>9}  -", l.kind, "no", detected),
        }
    }
    println!();
    for l in &leaks {
        if let Some(g) = &l.found {
            let evidence = match l.kind {
                "heap" => format!("{} in use", format_delta(g.delta(), "bytes")),
                "fds" => format!(
                    "~{} more live objects there, as many as the new fds",
                    g.delta()
                ),
                _ => format!("~{} allocations there during the load", g.delta()),
            };
            let alert = l.detected.map_or(String::new(), |d| {
                format!(", alert after {}", human_secs(d))
            });
            println!(
                "  FOUND: {} leak at {} ({}:{}), {evidence}{alert}",
                singular(l.kind),
                g.function,
                short_path(&g.file),
                g.line,
            );
        }
    }
    let diff_url = format!(
        "http://{addr}/debug/pprof/ui/diff?base={}&new={}&type=inuse_space",
        base, new
    );
    println!("\n  The diff, in the viewer: {diff_url}");
    let missed: Vec<&str> = leaks
        .iter()
        .filter(|l| l.found.is_none())
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
            bail!("not found: {}", missed.join(", "));
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

/// Pulls the service's heap profile and keeps it in the store; its id.
async fn snapshot(addr: SocketAddr, store: &Store, label: &str) -> anyhow::Result<String> {
    let res = client::get(addr, "/debug/pprof/heap", TIMEOUT).await?;
    if res.status != 200 {
        bail!(
            "GET /debug/pprof/heap: {}: {}",
            res.status,
            res.text().trim()
        );
    }
    let store = store.clone();
    let label = label.to_owned();
    let meta = tokio::task::spawn_blocking(move || {
        let mut snap = NewSnapshot::new("leaky_service", "heap", &res.body);
        snap.trigger = Trigger::Manual;
        snap.pid = Some(std::process::id());
        snap.labels.insert("demo".into(), label);
        store.put(snap)
    })
    .await??;
    Ok(meta.id)
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

fn load_profile(store: &Store, id: &str) -> anyhow::Result<Profile> {
    Ok(Profile::decode_bytes(&store.read(id)?, id)?)
}

/// The path relative to this crate when it is inside it.
fn short_path(file: &str) -> &str {
    let root = env!("CARGO_MANIFEST_DIR");
    file.strip_prefix(root)
        .map(|f| f.trim_start_matches('/'))
        .unwrap_or(file)
}
