//! The Alertmanager sink against a real `prometheus-alertmanager` on
//! loopback: a thread leak in this process fires a rule of the agent's
//! watch loop, the alert is listed active by Alertmanager with its labels
//! and the annotation naming the leaking function and line; the leak
//! stops, the rule recovers and Alertmanager resolves the alert.
//!
//! Needs the `prometheus-alertmanager` binary (Debian's package; CI's
//! `.ci/run` installs it). Without it the test fails and says so.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use leakscope_agent::alert::alertmanager::AlertmanagerOptions;
use leakscope_agent::client;
use leakscope_agent::watch::monitor::MonitorOptions;
use leakscope_agent::watch::rules::{Condition, Rule};

const BINARY: &str = "prometheus-alertmanager";
/// Bound of one HTTP request (the machine may be busy).
const REQUEST: Duration = Duration::from_secs(10);
/// Bound of each wait for a state.
const PATIENCE: Duration = Duration::from_secs(120);

/// A running Alertmanager, killed on drop.
struct Alertmanager {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Alertmanager {
    /// Its log so far, for failure messages.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("alertmanager.log")).unwrap_or_default()
    }

    /// Starts Alertmanager on a free loopback port with a route to a
    /// receiver that notifies nobody, its storage in a scratch directory,
    /// clustering off; waits until `/-/ready` answers 200.
    async fn start() -> Alertmanager {
        let dir = std::env::temp_dir().join(format!(
            "leakscope-alertmanager-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_nanos()
        ));
        std::fs::create_dir_all(dir.join("data")).expect("scratch dir");
        let config = dir.join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n",
        )
        .expect("config");
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            l.local_addr().expect("addr").port()
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = std::fs::File::create(dir.join("alertmanager.log")).expect("log file");
        let child = Command::new(BINARY)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "could not run {BINARY} ({e}): install it (Debian/Ubuntu: \
                     apt-get install prometheus-alertmanager; CI's .ci/run does)"
                )
            });
        let mut am = Alertmanager { child, addr, dir };
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = am.child.try_wait() {
                panic!("{BINARY} exited with {status}:\n{}", am.log());
            }
            if let Ok(r) = client::get(addr, "/-/ready", REQUEST).await
                && r.status == 200
            {
                return am;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "{BINARY} not ready at http://{addr}/-/ready:\n{}",
                am.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET /api/v2/alerts`: the alerts it lists (active, suppressed or
    /// unprocessed; resolved ones are not listed).
    async fn alerts(&self) -> Vec<serde_json::Value> {
        let r = client::get(self.addr, "/api/v2/alerts", REQUEST)
            .await
            .expect("GET /api/v2/alerts");
        assert_eq!(r.status, 200, "{}", r.text());
        match serde_json::from_slice(&r.body).expect("alerts JSON") {
            serde_json::Value::Array(alerts) => alerts,
            other => panic!("not an array: {other}"),
        }
    }
}

/// Starts a thread that waits forever on a channel nobody sends on.
#[inline(never)]
fn park_a_worker() {
    let (tx, rx) = mpsc::channel::<u8>();
    std::mem::forget(tx);
    std::thread::Builder::new()
        .name("stuck-worker".into())
        .spawn(move || {
            let _ = rx.recv(); // the line Alertmanager's alert names
        })
        .expect("spawn");
}

/// The line of this file holding `text`.
fn line_of(text: &str) -> usize {
    include_str!("alertmanager.rs")
        .lines()
        .position(|l| l.contains(text) && !l.contains("line_of("))
        .map(|i| i + 1)
        .expect("the line is in this file")
}

/// The agent's `/debug/leakscope/alerts`.
async fn agent_alerts(addr: SocketAddr) -> serde_json::Value {
    let r = client::get(addr, "/debug/leakscope/alerts", REQUEST)
        .await
        .expect("agent alerts");
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).expect("JSON")
}

fn level(v: &serde_json::Value) -> String {
    v["levels"][0]["level"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leak_is_active_in_alertmanager_then_resolved() {
    let am = Alertmanager::start().await;
    let run = format!("{}", std::process::id());
    let mut opts = AlertmanagerOptions::new(format!("http://{}", am.addr));
    opts.labels.insert("test_run".into(), run.clone());
    opts.generator_url = Some("http://127.0.0.1:6060".into());
    let rule = Rule::new(
        "threads_fast",
        "threads",
        Condition::Growth {
            per_minute: 30.0,
            critical_per_minute: None,
            window_secs: 6.0,
        },
    );
    let agent = leakscope_agent::AgentBuilder::new()
        .addr(SocketAddr::from(([127, 0, 0, 1], 0)))
        .watch(
            MonitorOptions::default()
                .interval(Duration::from_millis(100))
                .rules(vec![rule]),
        )
        .alertmanager(opts)
        .spawn()
        .await
        .expect("agent");
    let addr = agent.local_addr();

    // A healthy second, then a thread every 100 ms until the rule fires.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start = Instant::now();
    loop {
        park_a_worker();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let v = agent_alerts(addr).await;
        if level(&v) != "ok" {
            break;
        }
        assert!(start.elapsed() < PATIENCE, "the rule did not fire: {v:#}");
    }

    // Alertmanager lists it, active, with the labels and the site.
    let ours = |a: &serde_json::Value| a["labels"]["test_run"] == run.as_str();
    let start = Instant::now();
    let listed = loop {
        if let Some(a) = am.alerts().await.into_iter().find(ours) {
            break a;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "not listed by Alertmanager: agent {:#}\nalertmanager log:\n{}",
            agent_alerts(addr).await,
            am.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let exe = std::env::current_exe().expect("exe");
    let exe = exe.file_name().expect("name").to_string_lossy();
    let labels = &listed["labels"];
    assert_eq!(labels["alertname"], "threads_fast", "{listed:#}");
    assert_eq!(labels["rule"], "threads_fast", "{listed:#}");
    assert_eq!(labels["metric"], "threads", "{listed:#}");
    assert_eq!(labels["severity"], "warning", "{listed:#}");
    assert_eq!(labels["target"], exe.as_ref(), "{listed:#}");
    assert_eq!(listed["status"]["state"], "active", "{listed:#}");
    let notes = &listed["annotations"];
    let site = notes["site"].as_str().unwrap_or_default();
    let recv_line = line_of("let _ = rx.recv(); // the line Alertmanager's alert names");
    assert!(
        site.starts_with("alertmanager::park_a_worker::{{closure}} (")
            && site.ends_with(&format!("tests/alertmanager.rs:{recv_line})")),
        "{listed:#}"
    );
    assert_eq!(notes["confidence"], "exact", "{listed:#}");
    let description = notes["description"].as_str().unwrap_or_default();
    assert!(description.contains(site), "{listed:#}");
    assert!(
        notes["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("threads growing")),
        "{listed:#}"
    );
    assert!(
        listed["generatorURL"]
            .as_str()
            .is_some_and(|u| u.starts_with("http://127.0.0.1:6060")),
        "{listed:#}"
    );
    // Firing, it ends minutes ahead unless re-sent (both RFC 3339 in UTC).
    let (starts, ends) = (
        listed["startsAt"].as_str().unwrap_or_default(),
        listed["endsAt"].as_str().unwrap_or_default(),
    );
    assert!(ends > starts, "{listed:#}");

    // The leak has stopped: the rule recovers, and Alertmanager resolves
    // the alert. It was posted with an endsAt four minutes ahead, so
    // leaving the list sooner than that is the resolution's doing.
    let start = Instant::now();
    while level(&agent_alerts(addr).await) != "ok" {
        assert!(
            start.elapsed() < PATIENCE,
            "no recovery: {:#}",
            agent_alerts(addr).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let start = Instant::now();
    loop {
        let still: Vec<_> = am.alerts().await.into_iter().filter(ours).collect();
        if still.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "still listed after the recovery: {still:#?}\nalertmanager log:\n{}",
            am.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let v = agent_alerts(addr).await;
    let stats = &v["alertmanager"];
    assert!(stats["sent"].as_u64() >= Some(2), "{v:#}");
    assert_eq!(stats["firing"], 0, "{v:#}");
    assert_eq!(stats["breaker"], "closed", "{v:#}");
    let m = client::get(addr, "/metrics", REQUEST)
        .await
        .expect("metrics")
        .text();
    for line in [
        "leakscope_alertmanager_firing 0",
        "leakscope_alertmanager_breaker_open 0",
        "leakscope_alertmanager_alerts_total{outcome=\"sent\"} ",
    ] {
        assert!(m.contains(line), "{line}: {m}");
    }
}
