//! `leakscope demo`: the whole story in one command, as one `leakscope
//! check` run on the leaky example. It starts the leaky example service
//! (`leakscope::leaky` with the agent, this binary's hidden `leaky-service`
//! command) as a process of its own, then runs the check on it, exactly as
//! `leakscope check --pid ...` would: the built-in load generator sends
//! mostly normal requests and a few that leak heap, a thread, a tokio task
//! or a file; the check reads the service before a warm-up, through the
//! load and after a cool-down, and ends with its summary table, each leak
//! named. Without `--exit` the service and its viewer stay up until Ctrl-C.
//!
//! A CI check runs a minute of load after a 10 s warm-up; the demo loads
//! for 12 s after a 3 s warm-up, and prints that it does.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use leakscope::check::summary::{self, Progress};
use leakscope::check::target::{Spawned, wait_healthy};
use leakscope::check::{CheckOptions, LoadChoice, LoadEntry, Outcome, TargetChoice};
use leakscope::client::url::HttpUrl;

/// Settings of the demo.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// The check's load phase (a CI check loads for a minute).
    #[arg(long, default_value = "12s", value_parser = super::watch::parse_duration)]
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
    /// Where to write the check's HTML report [default: leakscope-demo/report.html
    /// in the temporary directory].
    #[arg(long, value_name = "FILE")]
    pub report: Option<std::path::PathBuf>,
}

/// Settings of the hidden `leaky-service` command.
#[derive(Debug, Clone, clap::Args)]
pub struct LeakyServiceArgs {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:6060")]
    pub addr: SocketAddr,
}

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

/// The demo's warm-up (a CI check's: 10 s).
const WARMUP: Duration = Duration::from_secs(3);
/// The demo's cool-down (a CI check's: 15 s); tokio's blocking threads
/// leave after 10 s idle.
const COOLDOWN: Duration = Duration::from_secs(12);
/// The kinds the demo leaks.
const KINDS: &[&str] = &["heap", "threads", "tasks", "fds"];

/// Serves the leaky example with the agent and its viewer on `addr`.
pub async fn leaky_service(args: LeakyServiceArgs) -> anyhow::Result<()> {
    use leakscope::ui::AgentBuilderExt;
    let agent = leakscope::AgentBuilder::new()
        .with_default_env()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let app = leakscope::leaky::router().merge(agent.with_ui().router());
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    println!("leaky service on http://{}/", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

/// A free loopback port when `addr` asks for port 0.
fn pick(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let l = std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    Ok(l.local_addr()?)
}

/// `'text'` for `sh`.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    println!("leakscope demo: one `leakscope check` on a service that leaks under load\n");
    let addr = pick(args.addr)?;
    let exe = std::env::current_exe().context("finding this program")?;
    let command = format!(
        "exec {} leaky-service --addr {addr}",
        quote(&exe.to_string_lossy())
    );
    let mut service = Spawned::start(&command).map_err(anyhow::Error::msg)?;
    let base = format!("http://{addr}");
    let health = HttpUrl::parse(&format!("{base}/")).map_err(anyhow::Error::msg)?;
    let mut alive = || match service.exited() {
        Some(st) => Err(format!(
            "the leaky service exited ({st}){}",
            service.tail_block()
        )),
        None => Ok(()),
    };
    wait_healthy(&health, false, Duration::from_secs(30), &mut alive)
        .await
        .map_err(anyhow::Error::msg)?;
    let pid = service.pid();
    println!("  service  {base}/ (pid {pid}): leakscope::leaky with the agent");
    println!("  viewer   {base}/debug/pprof/ui/\n");

    let entries: Vec<LoadEntry> = MIX
        .iter()
        .map(|(path, weight)| LoadEntry {
            method: "GET".into(),
            url: format!("{base}{path}"),
            weight: *weight,
            body: None,
        })
        .collect();
    let load = LoadChoice::Builtin {
        entries,
        rate: Some(RATE),
        concurrency: args.concurrency.max(1),
    };
    let mut opts = CheckOptions::new(TargetChoice::Pid(pid), load);
    opts.pprof_url = Some(HttpUrl::parse(&base).map_err(anyhow::Error::msg)?);
    opts.warmup = WARMUP;
    opts.duration = args.duration;
    opts.cooldown = COOLDOWN;
    let loads: Vec<String> = MIX
        .iter()
        .map(|(p, w)| format!("--load '{base}{p}={w}'"))
        .collect();
    println!(
        "  The check, as you would run it:\n    leakscope check --pid {pid} --pprof-url {base} \
         \\\n      {} \\\n      --rate {RATE:.0} -c {} --warmup {}s --duration {}s --cooldown {}s\n",
        loads.join(" "),
        args.concurrency.max(1),
        WARMUP.as_secs(),
        args.duration.as_secs_f64(),
        COOLDOWN.as_secs()
    );
    println!(
        "  Shorter than a CI check (warm-up {} s, load {} s, cool-down {} s by default), to \
         show in about {:.0} s\n  what a CI job would. 1 request in {} leaks something.\n",
        CheckOptions::DEFAULT_WARMUP.as_secs(),
        CheckOptions::DEFAULT_DURATION.as_secs(),
        CheckOptions::DEFAULT_COOLDOWN.as_secs(),
        (WARMUP + args.duration + COOLDOWN).as_secs_f64() + 6.0,
        MIX.iter().map(|(_, w)| w).sum::<u32>() / MIX[1..].iter().map(|(_, w)| w).sum::<u32>()
    );
    if !leakscope::agent::tasks::hooks_installed() {
        println!(
            "  This binary is built without --cfg tokio_unstable and the fd-sites link flags: \
             task leaks are\n  counted, not traced to their spawn site, and fds are named by \
             what they are (README: \"Naming every leak\").\n"
        );
    }
    let tty = super::check::colours(false);
    let progress = Progress::new(Box::new(std::io::stdout()), tty);
    let show = |e: &leakscope::check::Event| progress.show(e);
    let report = leakscope::check::run(&opts, &show).await;
    progress.finish();
    print!("{}", summary::render(&report, tty));
    let page = args
        .report
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("leakscope-demo/report.html"));
    match super::check::write_file(&page, &leakscope::check::report::html(&report)) {
        Ok(()) => println!(
            "\n  The HTML report (verdicts, timelines, flamegraphs of the evidence): file://{}",
            std::path::absolute(&page).unwrap_or(page).display()
        ),
        Err(e) => println!(
            "\n  The HTML report could not be written to {}: {e}",
            page.display()
        ),
    }
    let _ = std::io::stdout().flush();
    let missed: Vec<&str> = KINDS
        .iter()
        .copied()
        .filter(|k| !report.kinds.iter().any(|v| v.kind == *k && v.leaked))
        .collect();
    if args.exit {
        service.stop(Duration::from_secs(5)).await;
        if report.outcome == Outcome::Error {
            bail!(
                "the check could not run: {}",
                report.error.unwrap_or_default()
            );
        }
        if !missed.is_empty() {
            bail!("not found: {}", missed.join(", "));
        }
        return Ok(());
    }
    println!("\n  The service and its viewer stay up ({base}/debug/pprof/ui/); Ctrl-C to stop.");
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    service.stop(Duration::from_secs(5)).await;
    Ok(())
}
