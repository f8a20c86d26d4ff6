//! `leakscope view FILES|DIR`: the web viewer over saved profiles (Go's
//! too), on a loopback port, until Ctrl-C.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use leakscope::viewer::web::{Files, router};

/// Settings of `leakscope view`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Examples:
  leakscope view base.pb.gz new.pb.gz
  leakscope view ./leakscope-data/snapshots

Then open the printed URL: pick two profiles to diff, or one to see its
flamegraph and top table.")]
pub struct ViewArgs {
    /// Profile files, or directories holding them (one level deep).
    #[arg(required = true, value_name = "FILES|DIR")]
    pub paths: Vec<PathBuf>,
    /// Address to serve on (port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
    /// Stop after this long (default: until Ctrl-C).
    #[arg(long, value_name = "DURATION", value_parser = super::watch::parse_duration)]
    pub duration: Option<std::time::Duration>,
}

pub async fn run(args: ViewArgs) -> anyhow::Result<()> {
    let paths = args.paths.clone();
    let files = tokio::task::spawn_blocking(move || Files::open(&paths)).await?;
    for p in files.problems() {
        eprintln!("leakscope view: skipped {p}");
    }
    if files.is_empty() {
        bail!("no readable pprof profile in {:?}", args.paths);
    }
    if !args.listen.ip().is_loopback() {
        bail!(
            "--listen {}: the viewer serves profiles, which expose symbols; bind a loopback address",
            args.listen
        );
    }
    let count = files.len();
    let app = axum::Router::new()
        .merge(router(Arc::new(files), "/ui"))
        .route(
            "/",
            axum::routing::get(|| async { axum::response::Redirect::to("/ui/") }),
        );
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("leakscope view: {count} profile(s) at http://{addr}/ui/ (Ctrl-C to stop)");
    let server = axum::serve(listener, app);
    match args.duration {
        Some(d) => {
            tokio::select! {
                r = server => r?,
                _ = tokio::time::sleep(d) => {}
            }
        }
        None => {
            tokio::select! {
                r = server => r?,
                _ = tokio::signal::ctrl_c() => {}
            }
        }
    }
    Ok(())
}
