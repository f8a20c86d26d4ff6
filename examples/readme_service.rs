//! main.rs of a service: jemalloc as the global allocator, heap profiling on.
leakscope::enable_heap_profiling!();

use axum::routing::get;
use leakscope::AgentBuilder;
use leakscope::agent::alert::WebhookOptions;
use leakscope::agent::watch::{Condition, MonitorOptions, Rule, default_rules};
use leakscope::ui::AgentBuilderExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The built-in rules, and one of your own: over 200 threads is a warning.
    let mut rules = default_rules();
    let too_many = Condition::Above {
        warning: Some(200.0),
        critical: None,
    };
    rules.push(Rule::new("threads_high", "threads", too_many));

    let agent = AgentBuilder::new()
        .with_default_env()? // LEAKSCOPE_* settings, if set
        .watch(MonitorOptions::default().rules(rules))
        .webhook(WebhookOptions::new("http://127.0.0.1:9000/hook"))
        .with_ui(); // the viewer at /debug/pprof/ui/

    // The agent's routes (/debug/pprof/*, /debug/leakscope/*, /metrics)
    // merged into your own router; or `agent.spawn().await?` for a listener
    // of its own on 127.0.0.1:6060.
    let app = axum::Router::new()
        .route("/", get(|| async { "hello\n" }))
        .merge(agent.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    axum::serve(listener, app).await?;
    Ok(())
}
