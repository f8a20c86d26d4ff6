//! Helpers of the sidecar tests: the Go services (tests/data/goleaky and
//! tests/data/inventory, each built once per test binary with the real
//! `go build`), the `leakscope watch` binary as a child process, and its
//! JSON API.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use leakscope::client;

/// A child process killed (SIGKILL) and reaped on drop.
pub struct Proc {
    pub child: Child,
    /// Every stdout line so far.
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The output so far, for failure messages.
    pub fn output(&self) -> String {
        self.lines.lock().expect("lines").join("\n")
    }

    /// Waits (up to `limit`) for an output line containing `needle`; the
    /// output so far when it does not come.
    pub fn wait_output(&self, needle: &str, limit: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if self
                .lines
                .lock()
                .expect("lines")
                .iter()
                .any(|l| l.contains(needle))
            {
                return Ok(());
            }
            if start.elapsed() > limit {
                return Err(self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns `cmd` with stdout piped and waits (up to 60 s) for a line
/// containing `marker`; returns the process and that line.
pub fn spawn_until(mut cmd: Command, marker: &str) -> (Proc, String) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    // A binary just copied may still be open for writing in a child that
    // another test thread forked meanwhile (ETXTBSY until it execs).
    let mut tries = 0;
    let mut child = loop {
        match cmd.spawn() {
            Ok(c) => break c,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("cannot start {cmd:?}: {e}"),
        }
    };
    let stdout = child.stdout.take().expect("stdout");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let lines = lines.clone();
        let marker = marker.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains(&marker) {
                    let _ = tx.send(line.clone());
                }
                lines.lock().expect("lines").push(line);
            }
        });
    }
    let proc = Proc { child, lines };
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("no {marker:?} line from {cmd:?}:\n{}", proc.output()));
    (proc, line)
}

/// The goleaky binary, built once per test binary.
fn goleaky_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("goleaky");
        std::fs::create_dir_all(&dir).expect("goleaky dir");
        let bin = dir.join(format!("goleaky-{}", std::process::id()));
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/goleaky/main.go");
        let out = Command::new("go")
            .arg("build")
            .arg("-o")
            .arg(&bin)
            .arg(&src)
            .env("GOCACHE", dir.join("gocache"))
            .env("GOPATH", dir.join("gopath"))
            .env("GOFLAGS", "-mod=mod")
            .env("HOME", &dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run `go build` (install golang-go): {e}"));
        assert!(
            out.status.success(),
            "go build {}: {}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        bin
    })
    .clone()
}

/// Builds the Go program in `tests/data/NAME` (a directory with a go.mod)
/// once per test binary.
pub fn go_binary(name: &'static str) -> PathBuf {
    static BINS: Mutex<Vec<(&'static str, PathBuf)>> = Mutex::new(Vec::new());
    let mut bins = BINS.lock().expect("go binaries");
    if let Some((_, bin)) = bins.iter().find(|(n, _)| *n == name) {
        return bin.clone();
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("go-{name}"));
    std::fs::create_dir_all(&dir).expect("go build dir");
    let bin = dir.join(format!("{name}-{}", std::process::id()));
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    let out = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&bin)
        .arg(".")
        .current_dir(&src)
        .env("GOCACHE", dir.join("gocache"))
        .env("GOPATH", dir.join("gopath"))
        .env("GOFLAGS", "-mod=mod")
        .env("HOME", &dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `go build` (install golang-go): {e}"));
    assert!(
        out.status.success(),
        "go build in {}: {}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    bins.push((name, bin.clone()));
    bin
}

/// Starts the inventory service (tests/data/inventory) under a unique name
/// (`inventory-<tag>`, so `--name` finds this one only) and returns it with
/// its address.
pub fn start_inventory(dir: &Path, tag: &str) -> (Proc, SocketAddr) {
    let bin = dir.join(format!("inventory-{tag}"));
    if !bin.exists() {
        std::fs::copy(go_binary("inventory"), &bin).expect("copy inventory");
    }
    let mut cmd = Command::new(&bin);
    cmd.args(["-addr", "127.0.0.1:0"]);
    let (proc, line) = spawn_until(cmd, "inventory on http://");
    let addr = line
        .trim()
        .trim_start_matches("inventory on http://")
        .parse()
        .unwrap_or_else(|e| panic!("address in {line:?}: {e}"));
    (proc, addr)
}

/// Starts the Go leaky service under a unique name (`goleaky-<tag>`, so
/// `--name` finds this one only) and returns it with its address.
pub fn start_goleaky(dir: &Path, tag: &str) -> (Proc, SocketAddr) {
    let bin = dir.join(format!("goleaky-{tag}"));
    if !bin.exists() {
        std::fs::copy(goleaky_binary(), &bin).expect("copy goleaky");
    }
    let mut cmd = Command::new(&bin);
    cmd.args(["-addr", "127.0.0.1:0"]);
    let (proc, line) = spawn_until(cmd, "listening on http://");
    let addr = line
        .trim()
        .trim_start_matches("listening on http://")
        .parse()
        .unwrap_or_else(|e| panic!("address in {line:?}: {e}"));
    (proc, addr)
}

/// Runs `leakscope watch ARGS --listen 127.0.0.1:0 --status-every 0` and
/// returns it with its API address.
pub fn start_sidecar(args: &[&str]) -> (Proc, SocketAddr) {
    start_sidecar_as(args, None)
}

/// [`start_sidecar`], switching to user `uid` first when given (root only).
pub fn start_sidecar_as(args: &[&str], uid: Option<u32>) -> (Proc, SocketAddr) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_leakscope"));
    if let Some(uid) = uid {
        use std::os::unix::process::CommandExt;
        cmd.uid(uid).gid(uid);
    }
    cmd.arg("watch")
        .args(args)
        .args(["--listen", "127.0.0.1:0", "--status-every", "0"])
        .env_remove("RUST_LOG");
    let (proc, line) = spawn_until(cmd, "API on http://");
    let addr = line
        .split("API on http://")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("API address in {line:?}"));
    (proc, addr)
}

/// GET `path` from the API as JSON (status must be 2xx).
pub async fn api(addr: SocketAddr, path: &str) -> serde_json::Value {
    let r = client::get(addr, path, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert!(
        (200..300).contains(&r.status),
        "GET {path}: {} {}",
        r.status,
        r.text()
    );
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("GET {path}: {e}: {}", r.text()))
}

/// Downloads a stored snapshot's profile from the sidecar (status 200).
pub async fn download(addr: SocketAddr, id: &str) -> Vec<u8> {
    let r = client::get(
        addr,
        &format!("/api/snapshots/{id}/profile"),
        Duration::from_secs(30),
    )
    .await
    .unwrap_or_else(|e| panic!("download {id}: {e}"));
    assert_eq!(r.status, 200, "{id}: {}", r.text());
    r.body
}

/// Polls `path` every 100 ms until `ok` holds, for at most `limit`.
pub async fn wait_until(
    addr: SocketAddr,
    path: &str,
    what: &str,
    limit: Duration,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let v = api(addr, path).await;
        if ok(&v) {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "gave up waiting {limit:?} for {what}; last {path}:\n{v:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The level of `rule` in a target's JSON.
pub fn level(target: &serde_json::Value, rule: &str) -> String {
    target["levels"]
        .as_array()
        .and_then(|l| l.iter().find(|r| r["rule"] == rule))
        .and_then(|r| r["level"].as_str())
        .unwrap_or("missing")
        .to_owned()
}
