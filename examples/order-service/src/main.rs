//! order-service: a small order API with the leakscope agent linked in.
//!
//! It leaks under load, on purpose, the way real services do: an audit
//! trail that is never trimmed, notification watchers and reservation
//! timers that never end, and shipping connections that are never closed;
//! beside a catalog cache that fills up and then only renews its entries
//! (which is not a leak, and must never be called one).
//!
//! Run with `cargo run` in this folder. Settings come from the environment:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `ORDERS_ADDR` | `127.0.0.1:8080` | the API's address |
//! | `ORDERS_UPSTREAM` | (none) | the carrier's TCP address `/ship` connects to |
//! | `ORDERS_ALERT_WEBHOOK` | (none) | where leakscope posts its alerts |
//! | `LEAKSCOPE_ADDR` | `127.0.0.1:6060` | the agent's pprof listener |

leakscope_agent::enable_heap_profiling!();

mod api;
mod audit;
mod catalog;
mod notifications;
mod reservations;
mod shipping;

use std::net::SocketAddr;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    // Where each task was spawned, for leakscope's tasks profile (needs
    // `--cfg tokio_unstable`, set in .cargo/config.toml).
    #[cfg(tokio_unstable)]
    leakscope_agent::tasks::install_hooks(&mut runtime);
    let runtime = match runtime.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("order-service: cannot start the runtime: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = runtime.block_on(serve()) {
        eprintln!("order-service: {e}");
        std::process::exit(1);
    }
}

async fn serve() -> Result<(), String> {
    let addr: SocketAddr = env_or("ORDERS_ADDR", "127.0.0.1:8080")
        .parse()
        .map_err(|e| format!("ORDERS_ADDR: {e}"))?;
    let upstream = std::env::var("ORDERS_UPSTREAM")
        .ok()
        .map(|u| {
            u.parse::<SocketAddr>()
                .map_err(|e| format!("ORDERS_UPSTREAM: {e}"))
        })
        .transpose()?;
    let mut agent = leakscope_agent::AgentBuilder::new()
        .with_default_env()
        .map_err(|e| e.to_string())?;
    if let Ok(url) = std::env::var("ORDERS_ALERT_WEBHOOK") {
        agent = agent.webhook(leakscope_agent::alert::webhook::WebhookOptions::new(&url));
    }
    let agent = agent.spawn().await.map_err(|e| e.to_string())?;
    let state = api::AppState::new(upstream);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    println!("orders listening on http://{local}");
    println!("leakscope agent on http://{}", agent.local_addr());
    axum::serve(listener, api::router(state))
        .await
        .map_err(|e| e.to_string())
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}
