//! A service that leaks on purpose, with the leakscope agent mounted.
//!
//! Run with: `cargo run --release --example leaky_service -- --addr 127.0.0.1:6060`
//!
//! Then leak something and look:
//!
//! ```text
//! for i in $(seq 50); do curl -s 'http://127.0.0.1:6060/leak/heap?kb=256' >/dev/null; done
//! go tool pprof -top http://127.0.0.1:6060/debug/pprof/heap
//! ```
//!
//! Routes: `/leak/heap?kb=N`, `/leak/thread`, `/leak/fd` (and `POST /leak/fd/close`),
//! `/leak/task`, `/`
//! (see `leakscope::leaky`), and `/debug/pprof/*`. The address comes from
//! `--addr`, else `LEAKSCOPE_ADDR`, else 127.0.0.1:6060.

leakscope::enable_heap_profiling!();

use std::net::SocketAddr;

fn address() -> Result<SocketAddr, String> {
    let mut args = std::env::args().skip(1);
    let mut addr = std::env::var("LEAKSCOPE_ADDR").ok();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => {
                addr = Some(
                    args.next()
                        .ok_or("--addr needs a value, e.g. 127.0.0.1:6060")?,
                )
            }
            s if s.starts_with("--addr=") => addr = Some(s["--addr=".len()..].to_owned()),
            "-h" | "--help" => {
                println!(
                    "usage: leaky_service [--addr HOST:PORT]   (default 127.0.0.1:6060, or LEAKSCOPE_ADDR)"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    let addr = addr.unwrap_or_else(|| leakscope::AgentBuilder::DEFAULT_ADDR.to_owned());
    addr.parse()
        .map_err(|e| format!("bad address {addr:?}: {e} (expected HOST:PORT, e.g. 127.0.0.1:6060)"))
}

#[tokio::main]
async fn main() {
    let addr = match address() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("leaky_service: {e}");
            std::process::exit(2);
        }
    };
    // LEAKSCOPE_CPU_HZ, LEAKSCOPE_MAX_PROFILE_SECONDS, ... (see AgentBuilder::with_default_env).
    let agent = match leakscope::AgentBuilder::new().with_default_env() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("leaky_service: {e}");
            std::process::exit(2);
        }
    };
    // The web viewer at /debug/pprof/ui/ (feature `viewer`, on by default).
    use leakscope::ui::AgentBuilderExt;
    let app = leakscope::leaky::router().merge(agent.with_ui().router());
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("leaky_service: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    let local = listener.local_addr().unwrap_or(addr);
    // The line tests and scripts wait for.
    println!(
        "leaky_service listening on http://{local}/ (pprof at /debug/pprof/, viewer at /debug/pprof/ui/)"
    );
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("leaky_service: server error: {e}");
        std::process::exit(1);
    }
}
