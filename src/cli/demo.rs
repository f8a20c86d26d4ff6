//! `leakscope demo`: starts the leaky service with the agent in this
//! process, takes a heap profile, puts the service under load (some
//! requests leak heap, threads and file descriptors), takes a second
//! profile, and names what grew: function, file and line.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use leakscope::agent::profile::Profile;
use leakscope::viewer::{DiffOptions, rank_growth};

use leakscope::client;

/// Settings of the demo.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Requests to send during the load phase.
    #[arg(long, default_value_t = 400)]
    pub requests: usize,
    /// Concurrent connections of the load phase.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Stop at the end instead of keeping the service up for a look.
    #[arg(long)]
    pub exit: bool,
    /// Address for the service (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub addr: SocketAddr,
}

const TIMEOUT: Duration = Duration::from_secs(20);
/// KiB kept by each leaking heap request.
const LEAK_KIB: u64 = 256;

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    println!("leakscope demo: a service that leaks under load, and the leak named\n");
    // A finer sample interval than jemalloc's 512 KiB default, so a short
    // demo gets plenty of samples. It resets the heap profile, which is fine
    // before the service starts.
    use leakscope::ui::AgentBuilderExt;
    let agent = leakscope::AgentBuilder::new()
        .heap_sample_interval(64 * 1024)?
        .with_ui()
        .router();
    let app = leakscope::leaky::router().merge(agent);
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    println!(
        "  service     http://{addr}/   (pprof at http://{addr}/debug/pprof/, viewer at http://{addr}/debug/pprof/ui/)"
    );

    let (threads0, fds0) = counts()?;
    let started = Instant::now();
    println!("  [1/4] baseline heap profile");
    let base = fetch_profile(addr, "/debug/pprof/heap").await?;
    println!("        {} stacks", base.sample.len());

    println!(
        "  [2/4] load: {} requests on {} connections; 1 in 4 leaks {LEAK_KIB} KiB, 1 in 40 a thread, 1 in 40 an fd",
        args.requests, args.concurrency
    );
    load(addr, args.requests, args.concurrency.max(1)).await?;

    println!("  [3/4] heap profile after load");
    let after = fetch_profile(addr, "/debug/pprof/heap").await?;
    let elapsed = started.elapsed();

    println!("  [4/4] what grew (inuse_space), largest first:\n");
    let options = DiffOptions::default().with_sample_type("inuse_space");
    let ranked = rank_growth(&base, &after, &options)?;
    println!(
        "        {:>4}  {:>10}  {:<44} file:line",
        "rank", "growth", "function"
    );
    for (i, g) in ranked.iter().take(5).enumerate() {
        println!(
            "        {:>4}  {:>10}  {:<44} {}:{}",
            i + 1,
            human_bytes(g.delta()),
            g.function,
            short_path(&g.file),
            g.line
        );
    }
    let (threads1, fds1) = counts()?;
    println!();
    println!("        threads {threads0} -> {threads1}, open fds {fds0} -> {fds1}");
    let Some(top) = ranked.first().filter(|g| g.delta() > 0) else {
        bail!("no heap growth was found; the demo's leak was not seen");
    };
    let verdict = if top.function.ends_with("leak_heap_kib") {
        "FOUND"
    } else {
        "SUSPECT"
    };
    println!(
        "\n  {verdict}: heap leak at {} ({}:{}), +{} in {:.1}s",
        top.function,
        short_path(&top.file),
        top.line,
        human_bytes(top.delta()),
        elapsed.as_secs_f64()
    );
    if args.exit {
        server.abort();
        return Ok(());
    }
    println!(
        "\n  The service stays up. Look for yourself:\n    go tool pprof -top http://{addr}/debug/pprof/heap\n  Ctrl-C to stop (--exit stops here)."
    );
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    server.abort();
    Ok(())
}

async fn fetch_profile(addr: SocketAddr, path: &str) -> anyhow::Result<Profile> {
    let res = client::get(addr, path, TIMEOUT).await?;
    if res.status != 200 {
        bail!("GET {path}: {}: {}", res.status, res.text().trim());
    }
    Ok(Profile::decode_bytes(&res.body, path)?)
}

/// Sends `total` requests from `concurrency` workers, printing progress.
async fn load(addr: SocketAddr, total: usize, concurrency: usize) -> anyhow::Result<()> {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let next = next.clone();
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return anyhow::Ok(());
                }
                let path = match i {
                    i if i % 40 == 1 => "/leak/thread".to_owned(),
                    i if i % 40 == 2 => "/leak/fd".to_owned(),
                    i if i % 4 == 0 => format!("/leak/heap?kb={LEAK_KIB}"),
                    _ => "/".to_owned(),
                };
                let res = client::get(addr, &path, TIMEOUT).await?;
                if res.status != 200 {
                    bail!("GET {path}: status {}", res.status);
                }
            }
        });
    }
    let width = 30;
    let mut shown = usize::MAX;
    loop {
        let done = next.load(std::sync::atomic::Ordering::Relaxed).min(total);
        if done != shown {
            shown = done;
            let filled = (done * width).checked_div(total).unwrap_or(width);
            print!(
                "\r        [{}{}] {done}/{total}",
                "#".repeat(filled),
                "-".repeat(width - filled)
            );
            use std::io::Write;
            let _ = std::io::stdout().flush();
        }
        if workers.is_empty() {
            break;
        }
        tokio::select! {
            r = workers.join_next() => {
                if let Some(r) = r {
                    r.context("load worker panicked")??;
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    println!();
    Ok(())
}

/// Threads and open fds of this process, from the agent's /proc sampler.
fn counts() -> anyhow::Result<(u64, u64)> {
    let s = leakscope::agent::resource::sample(
        leakscope::agent::resource::Target::SelfProcess,
        &Default::default(),
    )?;
    Ok((s.threads, s.open_fds))
}

fn human_bytes(b: i64) -> String {
    let a = b.unsigned_abs() as f64;
    let sign = if b < 0 { "-" } else { "" };
    if a >= 1024.0 * 1024.0 {
        format!("{sign}{:.1} MiB", a / 1024.0 / 1024.0)
    } else if a >= 1024.0 {
        format!("{sign}{:.1} KiB", a / 1024.0)
    } else {
        format!("{sign}{a} B")
    }
}

/// The path relative to this crate when it is inside it.
fn short_path(file: &str) -> &str {
    let root = env!("CARGO_MANIFEST_DIR");
    file.strip_prefix(root)
        .map(|s| s.trim_start_matches('/'))
        .unwrap_or(file)
}
