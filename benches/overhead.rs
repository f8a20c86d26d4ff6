//! Overhead of the leakscope agent on the leaky example service.
//!
//! A plain `fn main` harness (no criterion). It runs the already-built
//! `target/release/examples/leaky_service` twice side by side:
//!
//! - OFF: `_RJEM_MALLOC_CONF=prof:false` (jemalloc heap profiling off), no CPU profile;
//! - ON: the default (heap profiling on, one sample per 512 KiB) plus a CPU
//!   profile (`/debug/pprof/profile`, 100 Hz) running during the load;
//!
//! drives both with a closed-loop keep-alive HTTP/1.1 load generator (8
//! connections on `GET /`), rounds alternated OFF, ON, OFF, ON, ..., and
//! reports, as ratios measured in the same run: throughput, server CPU per
//! request, heap-profile latency, RSS growth after profiling, and CPU samples
//! captured versus expected.
//!
//! ```text
//! cargo build --release --example leaky_service
//! cargo bench --bench overhead
//! ```
//!
//! Environment: `LEAKSCOPE_BENCH_SECS` (seconds per round, default 3),
//! `LEAKSCOPE_BENCH_ROUNDS` (rounds per variant, default 3),
//! `LEAKSCOPE_BENCH_MAX_REQUESTS` (cap per round, default 2000000),
//! `CARGO_TARGET_DIR` (where the example binary is looked for).

use std::io::BufRead;
use std::net::SocketAddr;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use leakscope::agent::profile::Profile;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Load connections per round.
const CONNECTIONS: usize = 8;
/// Seconds of the CPU profile taken before measuring RSS growth.
const RSS_CPU_PROFILE_SECS: u64 = 5;
/// Heap profiles in the latency and RSS phases.
const HEAP_PROFILES: usize = 20;
/// `/leak/heap?kb=64` requests before the heap-profile latency phase.
const HEAP_WARM_LEAKS: usize = 50;
/// Longest any single ordinary request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a heap profile request may take.
const HEAP_PROFILE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest the service may take to print its listening line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);
/// Time between asking for a CPU profile and starting the load, so that the
/// sampler is running for the whole load window.
const PROFILE_LEAD: Duration = Duration::from_millis(200);
/// How often the server's CPU time is polled while a CPU profile runs.
const CPU_POLL: Duration = Duration::from_millis(5);
/// Largest response body accepted.
const MAX_BODY: usize = 256 << 20;

/// PIDs of the services still running, for the watchdog.
static LIVE_PIDS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn main() {
    // `cargo bench` passes `--bench`; nothing here takes arguments.
    match run() {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("overhead: the service misbehaved during the run (see ERRORS above)");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("overhead: error: {e:#}");
            std::process::exit(1);
        }
    }
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

struct Config {
    bin: PathBuf,
    secs: u64,
    rounds: usize,
    max_requests: u64,
    clk_tck: f64,
}

fn env_number<T: std::str::FromStr>(
    name: &str,
    default: T,
    valid: impl Fn(&T) -> bool,
) -> Result<T> {
    match std::env::var(name) {
        Ok(v) => match v.trim().parse::<T>() {
            Ok(n) if valid(&n) => Ok(n),
            _ => bail!("{name}={v:?} is not a valid value"),
        },
        Err(_) => Ok(default),
    }
}

impl Config {
    fn from_env() -> Result<Config> {
        let secs = env_number("LEAKSCOPE_BENCH_SECS", 3u64, |&n| (1..=300).contains(&n))?;
        let rounds = env_number("LEAKSCOPE_BENCH_ROUNDS", 3usize, |&n| (1..=50).contains(&n))?;
        let max_requests = env_number("LEAKSCOPE_BENCH_MAX_REQUESTS", 2_000_000u64, |&n| n > 0)?;
        // SAFETY: sysconf only reads a configuration value.
        let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if tck <= 0 {
            bail!("sysconf(_SC_CLK_TCK) failed");
        }
        Ok(Config {
            bin: find_service_binary()?,
            secs,
            rounds,
            max_requests,
            clk_tck: tck as f64,
        })
    }
}

/// `target/release/examples/leaky_service`, with the target directory from
/// `CARGO_TARGET_DIR`, else the workspace's `target/`, else the directory
/// this bench binary was built into.
fn find_service_binary() -> Result<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        candidates.push(if dir.is_absolute() {
            dir
        } else {
            manifest.join(dir)
        });
    }
    candidates.push(manifest.join("target"));
    // <target>/release/deps/overhead-HASH -> <target>
    if let Some(t) = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.parent()?.to_path_buf()))
    {
        candidates.push(t);
    }
    let paths: Vec<PathBuf> = candidates
        .iter()
        .map(|t| t.join("release").join("examples").join("leaky_service"))
        .collect();
    let Some(found) = paths.iter().find(|p| p.is_file()) else {
        bail!(
            "the example service is not built (looked for {}): run \
             `cargo build --release --example leaky_service` first",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    warn_if_stale(found, manifest);
    Ok(found.clone())
}

/// Warns when a Rust source file of the service is newer than its binary.
fn warn_if_stale(bin: &Path, root: &Path) {
    let Ok(built) = std::fs::metadata(bin).and_then(|m| m.modified()) else {
        return;
    };
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    let mut stack: Vec<PathBuf> = ["src", "agent/src", "examples"]
        .iter()
        .map(|p| root.join(p))
        .collect();
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else if p.extension().is_some_and(|e| e == "rs")
            && let Ok(m) = meta.modified()
            && newest.as_ref().is_none_or(|(t, _)| m > *t)
        {
            newest = Some((m, p));
        }
    }
    if let Some((t, p)) = newest
        && t > built
    {
        eprintln!(
            "warning: {} is newer than {}; rebuild with \
             `cargo build --release --example leaky_service` to measure the current code",
            p.display(),
            bin.display()
        );
    }
}

// ---------------------------------------------------------------------------
// The service process
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    Off,
    On,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Off => "off",
            Variant::On => "on",
        }
    }
}

/// Kills and reaps the child when dropped.
struct ChildGuard {
    child: Child,
    pid: u32,
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(mut live) = LIVE_PIDS.lock() {
            live.retain(|&p| p != self.pid);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `leaky_service`.
struct Server {
    guard: ChildGuard,
    addr: SocketAddr,
    variant: Variant,
    label: String,
    /// What the service wrote to stderr (and to stdout after its listening line).
    output: Arc<Mutex<String>>,
}

fn append_capped(out: &Mutex<String>, line: &str) {
    if let Ok(mut s) = out.lock()
        && s.len() < 64 * 1024
    {
        s.push_str(line);
        s.push('\n');
    }
}

impl Server {
    fn start(bin: &Path, variant: Variant, label: &str) -> Result<Server> {
        let mut cmd = Command::new(bin);
        cmd.args(["--addr", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // The agent's defaults, whatever LEAKSCOPE_* settings (CPU Hz, heap
        // sample interval, ...) the calling shell has.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("LEAKSCOPE_") {
                cmd.env_remove(key);
            }
        }
        match variant {
            Variant::Off => cmd.env("_RJEM_MALLOC_CONF", "prof:false"),
            Variant::On => cmd.env_remove("_RJEM_MALLOC_CONF"),
        };
        // SAFETY: the closure runs in the forked child before exec and calls
        // only prctl, which is async-signal-safe; it allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                // The service dies with this harness, whatever ends it.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id();
        LIVE_PIDS
            .lock()
            .map_err(|_| anyhow!("pid list poisoned"))?
            .push(pid);
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let mut guard = ChildGuard { child, pid };
        let output = Arc::new(Mutex::new(String::new()));

        if let Some(err) = stderr {
            let output = Arc::clone(&output);
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(err).lines() {
                    let Ok(line) = line else { break };
                    append_capped(&output, &format!("[stderr] {line}"));
                }
            });
        }
        let (tx, rx) = mpsc::channel::<Result<SocketAddr, String>>();
        if let Some(out) = stdout {
            let output = Arc::clone(&output);
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in std::io::BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if let Some(rest) = line.strip_prefix("leaky_service listening on http://")
                        && let Some(tx) = tx.take()
                    {
                        let addr = rest.split('/').next().unwrap_or("");
                        let _ = tx.send(
                            addr.parse()
                                .map_err(|e| format!("cannot parse address in {line:?}: {e}")),
                        );
                        continue;
                    }
                    append_capped(&output, &format!("[stdout] {line}"));
                }
            });
        }
        let addr = match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(Ok(addr)) => addr,
            Ok(Err(e)) => bail!("{label} service (pid {pid}): {e}"),
            Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                "{label} service (pid {pid}) did not print its listening line within {STARTUP_TIMEOUT:?}"
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // stdout closed: the service most likely exited.
                let status = wait_briefly(&mut guard.child);
                std::thread::sleep(Duration::from_millis(50));
                bail!(
                    "{label} service (pid {pid}) closed stdout before printing its listening line; {}; output:\n{}",
                    status.map_or("still running".to_owned(), describe_status),
                    output.lock().map(|s| s.clone()).unwrap_or_default()
                )
            }
        };
        if !addr.ip().is_loopback() {
            bail!("{label} service listens on {addr}, not on loopback");
        }
        Ok(Server {
            guard,
            addr,
            variant,
            label: label.to_owned(),
            output,
        })
    }

    fn pid(&self) -> u32 {
        self.guard.pid
    }

    /// Err with the exit status and output if the service has exited.
    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self
            .guard
            .child
            .try_wait()
            .context("waiting for the service")?
        {
            std::thread::sleep(Duration::from_millis(50));
            bail!(
                "the {} service ({} variant, pid {}) exited unexpectedly: {}; output:\n{}",
                self.label,
                self.variant.name(),
                self.guard.pid,
                describe_status(status),
                self.output()
            );
        }
        Ok(())
    }

    fn output(&self) -> String {
        self.output.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn cpu_ticks(&self) -> Result<u64> {
        cpu_ticks(self.pid())
    }

    /// VmRSS, RssAnon and RssFile (+ RssShmem) in KiB.
    fn rss_kib(&self) -> Result<Rss> {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let field = |name: &str| -> Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .ok_or_else(|| anyhow!("no {name} in {path}"))
        };
        Ok(Rss {
            total: field("VmRSS:")?,
            anon: field("RssAnon:")?,
            file: field("RssFile:")? + field("RssShmem:")?,
        })
    }
}

fn wait_briefly(child: &mut Child) -> Option<ExitStatus> {
    for _ in 0..50 {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn describe_status(status: ExitStatus) -> String {
    if let Some(sig) = status.signal() {
        let name = match sig {
            libc::SIGSEGV => "SIGSEGV",
            libc::SIGABRT => "SIGABRT",
            libc::SIGBUS => "SIGBUS",
            libc::SIGILL => "SIGILL",
            libc::SIGKILL => "SIGKILL",
            libc::SIGPROF => "SIGPROF",
            libc::SIGTERM => "SIGTERM",
            _ => "signal",
        };
        format!(
            "killed by signal {sig} ({name}){}",
            if status.core_dumped() {
                ", core dumped"
            } else {
                ""
            }
        )
    } else {
        format!("exit code {}", status.code().unwrap_or(-1))
    }
}

/// utime + stime of the whole process, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // Fields after the command name, which ends at the last ')': state is
    // field 3, utime 14, stime 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("malformed {path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| anyhow!("malformed field {n} in {path}"))
    };
    Ok(field(14)? + field(15)?)
}

/// Polls a process's CPU time on a thread, with wall-clock stamps, so that
/// the CPU spent inside a profile's [start, start + duration] can be read.
struct CpuRecorder {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<(SystemTime, u64)>>>,
}

impl CpuRecorder {
    fn start(pid: u32) -> CpuRecorder {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut trace = Vec::new();
            while !flag.load(Ordering::Acquire) {
                match cpu_ticks(pid) {
                    Ok(t) => trace.push((SystemTime::now(), t)),
                    Err(_) => break,
                }
                std::thread::sleep(CPU_POLL);
            }
            if let Ok(t) = cpu_ticks(pid) {
                trace.push((SystemTime::now(), t));
            }
            trace
        });
        CpuRecorder {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<(SystemTime, u64)> {
        self.stop.store(true, Ordering::Release);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for CpuRecorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// CPU ticks at `t`, interpolated linearly in the trace; None outside it.
fn ticks_at(trace: &[(SystemTime, u64)], t: SystemTime) -> Option<f64> {
    let i = trace.iter().position(|(ts, _)| *ts >= t)?;
    if i == 0 {
        return (trace[0].0 == t).then_some(trace[0].1 as f64);
    }
    let (t0, c0) = trace[i - 1];
    let (t1, c1) = trace[i];
    let span = t1.duration_since(t0).ok()?.as_secs_f64();
    let frac = if span > 0.0 {
        t.duration_since(t0).ok()?.as_secs_f64() / span
    } else {
        1.0
    };
    Some(c0 as f64 + (c1 as f64 - c0 as f64) * frac)
}

// ---------------------------------------------------------------------------
// A small keep-alive HTTP/1.1 client
// ---------------------------------------------------------------------------

struct Conn {
    addr: SocketAddr,
    r: BufReader<TcpStream>,
    line: Vec<u8>,
    body: Vec<u8>,
    /// The server said `Connection: close` or ended the body by closing.
    closed: bool,
}

impl Conn {
    async fn connect(addr: SocketAddr) -> Result<Conn> {
        let s = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| anyhow!("connecting to {addr}: no answer within {CONNECT_TIMEOUT:?}"))?
            .with_context(|| format!("connecting to {addr}"))?;
        s.set_nodelay(true)?;
        Ok(Conn {
            addr,
            r: BufReader::with_capacity(64 * 1024, s),
            line: Vec::with_capacity(256),
            body: Vec::with_capacity(1024),
            closed: false,
        })
    }

    /// GET `path`; the body is left in `self.body`. Returns the status code.
    async fn get(&mut self, path: &str, limit: Duration) -> Result<u16> {
        if self.closed {
            *self = Conn::connect(self.addr).await?;
        }
        match tokio::time::timeout(limit, self.exchange(path)).await {
            Ok(r) => r.with_context(|| format!("GET {path}")),
            Err(_) => {
                self.closed = true;
                bail!("GET {path}: no complete response within {limit:?}")
            }
        }
    }

    async fn read_line(&mut self) -> Result<()> {
        self.line.clear();
        let n = self.r.read_until(b'\n', &mut self.line).await?;
        if n == 0 {
            self.closed = true;
            bail!("connection closed by the server in the middle of a response");
        }
        if !self.line.ends_with(b"\r\n") || self.line.len() > 16 * 1024 {
            self.closed = true;
            bail!(
                "malformed HTTP line {:?}",
                String::from_utf8_lossy(&self.line)
            );
        }
        self.line.truncate(self.line.len() - 2);
        Ok(())
    }

    async fn exchange(&mut self, path: &str) -> Result<u16> {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: leakscope-overhead-bench\r\n\r\n",
            self.addr
        );
        if let Err(e) = self.r.get_mut().write_all(req.as_bytes()).await {
            self.closed = true;
            return Err(e.into());
        }
        let result = self.read_response().await;
        if result.is_err() {
            self.closed = true;
        }
        result
    }

    async fn read_response(&mut self) -> Result<u16> {
        self.body.clear();
        self.read_line().await?;
        let status_line = String::from_utf8_lossy(&self.line).into_owned();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .filter(|_| version.starts_with("HTTP/1."))
            .ok_or_else(|| anyhow!("malformed status line {status_line:?}"))?;
        let mut length: Option<usize> = None;
        let mut chunked = false;
        loop {
            self.read_line().await?;
            if self.line.is_empty() {
                break;
            }
            let Some(colon) = self.line.iter().position(|&b| b == b':') else {
                bail!("malformed header {:?}", String::from_utf8_lossy(&self.line));
            };
            let (name, value) = self.line.split_at(colon);
            let value = String::from_utf8_lossy(&value[1..])
                .trim()
                .to_ascii_lowercase();
            if name.eq_ignore_ascii_case(b"content-length") {
                length = Some(
                    value
                        .parse()
                        .map_err(|_| anyhow!("bad content-length {value:?}"))?,
                );
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                chunked = value.split(',').any(|v| v.trim() == "chunked");
            } else if name.eq_ignore_ascii_case(b"connection")
                && value.split(',').any(|v| v.trim() == "close")
            {
                self.closed = true;
            }
        }
        if chunked {
            loop {
                self.read_line().await?;
                let text = String::from_utf8_lossy(&self.line).into_owned();
                let size_text = text.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_text, 16)
                    .map_err(|_| anyhow!("bad chunk size {text:?}"))?;
                if size == 0 {
                    // Trailers, then the empty line.
                    loop {
                        self.read_line().await?;
                        if self.line.is_empty() {
                            break;
                        }
                    }
                    break;
                }
                if self.body.len() + size > MAX_BODY {
                    bail!("response body larger than {MAX_BODY} bytes");
                }
                let start = self.body.len();
                self.body.resize(start + size, 0);
                self.r.read_exact(&mut self.body[start..]).await?;
                self.read_line().await?;
                if !self.line.is_empty() {
                    bail!("chunk not followed by CRLF");
                }
            }
        } else if let Some(n) = length {
            if n > MAX_BODY {
                bail!("response body of {n} bytes is larger than {MAX_BODY}");
            }
            self.body.resize(n, 0);
            self.r.read_exact(&mut self.body).await?;
        } else if !(status / 100 == 1 || status == 204 || status == 304) {
            // No length: the body runs to the end of the connection.
            (&mut self.r)
                .take(MAX_BODY as u64)
                .read_to_end(&mut self.body)
                .await?;
            self.closed = true;
        }
        Ok(status)
    }

    fn body_text(&self) -> String {
        let b = &self.body[..self.body.len().min(300)];
        String::from_utf8_lossy(b).trim_end().to_owned()
    }
}

/// GET on a fresh connection: status, body and time to the whole body.
async fn fetch(addr: SocketAddr, path: &str, limit: Duration) -> Result<(u16, Vec<u8>, Duration)> {
    let mut c = Conn::connect(addr).await?;
    let t0 = Instant::now();
    let status = c.get(path, limit).await?;
    let took = t0.elapsed();
    Ok((status, std::mem::take(&mut c.body), took))
}

/// GET that must answer 200.
async fn get_ok(c: &mut Conn, path: &str, limit: Duration) -> Result<()> {
    let status = c.get(path, limit).await?;
    if status != 200 {
        bail!("GET {path} answered {status}: {}", c.body_text());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------

struct Load {
    requests: u64,
    elapsed: Duration,
    cpu_ticks: u64,
    capped: bool,
    errors: Vec<String>,
}

/// Closed loop: `CONNECTIONS` keep-alive connections each sending `GET /`
/// back to back for `dur` (or until `max_requests` were sent). Server CPU is
/// read just before the first and just after the last request.
async fn run_load(server: &Server, dur: Duration, max_requests: u64) -> Result<Load> {
    let mut conns = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        conns.push(Conn::connect(server.addr).await?);
    }
    let issued = Arc::new(AtomicU64::new(0));
    let cpu0 = server.cpu_ticks()?;
    let start = Instant::now();
    let deadline = start + dur;
    let mut set = tokio::task::JoinSet::new();
    for mut c in conns {
        let issued = Arc::clone(&issued);
        set.spawn(async move {
            let mut done = 0u64;
            let mut errors = Vec::new();
            while Instant::now() < deadline {
                if issued.fetch_add(1, Ordering::Relaxed) >= max_requests {
                    break;
                }
                match c.get("/", REQUEST_TIMEOUT).await {
                    Ok(200) if c.body.starts_with(b"ok ") => done += 1,
                    Ok(status) => {
                        errors.push(format!("GET / answered {status}: {:?}", c.body_text()))
                    }
                    Err(e) => {
                        errors.push(format!("{e:#}"));
                        // Reconnect once; give up on this connection if that fails.
                        match Conn::connect(c.addr).await {
                            Ok(fresh) => c = fresh,
                            Err(e) => {
                                errors.push(format!("reconnect: {e:#}"));
                                break;
                            }
                        }
                    }
                }
                if errors.len() > 20 {
                    break;
                }
            }
            (done, errors)
        });
    }
    let mut requests = 0;
    let mut errors = Vec::new();
    while let Some(r) = set.join_next().await {
        let (done, errs) = r.context("load task panicked")?;
        requests += done;
        errors.extend(errs);
    }
    let elapsed = start.elapsed();
    let cpu1 = server.cpu_ticks()?;
    Ok(Load {
        requests,
        elapsed,
        cpu_ticks: cpu1.saturating_sub(cpu0),
        capped: issued.load(Ordering::Relaxed) >= max_requests,
        errors,
    })
}

// ---------------------------------------------------------------------------
// CPU profiles
// ---------------------------------------------------------------------------

struct CpuCheck {
    captured: i64,
    expected: f64,
    hz: f64,
    lost_window: bool,
}

/// Decodes a CPU profile and compares its sample count with the server's
/// CPU time over the profile's own [time, time + duration] window.
fn check_cpu_profile(bytes: &[u8], trace: &[(SystemTime, u64)], clk_tck: f64) -> Result<CpuCheck> {
    let p = Profile::decode_bytes(bytes, "cpu profile").map_err(|e| anyhow!("{e}"))?;
    let name = |i: i64| {
        p.string_table
            .get(i as usize)
            .map(String::as_str)
            .unwrap_or("")
    };
    let idx = p
        .sample_type
        .iter()
        .position(|t| name(t.r#type) == "samples" && name(t.unit) == "count")
        .ok_or_else(|| anyhow!("cpu profile has no samples/count sample type"))?;
    let captured: i64 = p.sample.iter().filter_map(|s| s.value.get(idx)).sum();
    if p.period <= 0 {
        bail!("cpu profile has period {}", p.period);
    }
    let hz = 1e9 / p.period as f64;
    let start = SystemTime::UNIX_EPOCH + Duration::from_nanos(p.time_nanos.max(0) as u64);
    let end = start + Duration::from_nanos(p.duration_nanos.max(0) as u64);
    let (c0, c1) = match (ticks_at(trace, start), ticks_at(trace, end)) {
        (Some(a), Some(b)) => (a, b),
        _ => {
            return Ok(CpuCheck {
                captured,
                expected: f64::NAN,
                hz,
                lost_window: true,
            });
        }
    };
    Ok(CpuCheck {
        captured,
        expected: (c1 - c0) / clk_tck * hz,
        hz,
        lost_window: false,
    })
}

// ---------------------------------------------------------------------------
// Phases
// ---------------------------------------------------------------------------

struct Round {
    variant: Variant,
    load: Load,
    /// Server CPU seconds from the end of the load to the profile's arrival
    /// (the profile build: symbolize, encode), ON only.
    build_cpu: Option<f64>,
    cpu: Option<CpuCheck>,
}

impl Round {
    fn rps(&self) -> f64 {
        self.load.requests as f64 / self.load.elapsed.as_secs_f64()
    }
    fn cpu_per_req_us(&self, clk_tck: f64) -> f64 {
        self.load.cpu_ticks as f64 / clk_tck / self.load.requests.max(1) as f64 * 1e6
    }
}

/// Asks for a CPU profile of `secs` on its own connection, in the background.
fn spawn_cpu_profile(
    addr: SocketAddr,
    secs: u64,
) -> tokio::task::JoinHandle<Result<(u16, Vec<u8>, Duration)>> {
    let path = format!("/debug/pprof/profile?seconds={secs}");
    tokio::spawn(async move { fetch(addr, &path, Duration::from_secs(secs + 60)).await })
}

async fn await_cpu_profile(
    task: tokio::task::JoinHandle<Result<(u16, Vec<u8>, Duration)>>,
) -> Result<Vec<u8>> {
    let (status, body, _) = task.await.context("cpu profile task panicked")??;
    if status != 200 {
        bail!(
            "GET /debug/pprof/profile answered {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)]).trim_end()
        );
    }
    Ok(body)
}

async fn round(cfg: &Config, server: &mut Server) -> Result<Round> {
    server.check_alive()?;
    let pid = server.pid();
    let recorder = CpuRecorder::start(pid);
    let profile =
        (server.variant == Variant::On).then(|| spawn_cpu_profile(server.addr, cfg.secs + 1));
    tokio::time::sleep(PROFILE_LEAD).await;
    let load = run_load(server, Duration::from_secs(cfg.secs), cfg.max_requests).await?;
    let (build_cpu, cpu) = match profile {
        Some(task) => {
            let after_load = server.cpu_ticks()?;
            let bytes = await_cpu_profile(task).await?;
            let after_profile = server.cpu_ticks()?;
            let trace = recorder.finish();
            let check = check_cpu_profile(&bytes, &trace, cfg.clk_tck)?;
            (
                Some(after_profile.saturating_sub(after_load) as f64 / cfg.clk_tck),
                Some(check),
            )
        }
        None => {
            drop(recorder);
            (None, None)
        }
    };
    server.check_alive()?;
    Ok(Round {
        variant: server.variant,
        load,
        build_cpu,
        cpu,
    })
}

/// Resident memory in KiB.
#[derive(Clone, Copy)]
struct Rss {
    total: u64,
    anon: u64,
    file: u64,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

struct RssResult {
    before_kib: Rss,
    after_kib: Rss,
    cpu: Option<CpuCheck>,
    errors: Vec<String>,
}

impl RssResult {
    fn growth_mib(&self) -> f64 {
        mib(self.after_kib.total) - mib(self.before_kib.total)
    }
}

/// A fresh service: warm-up traffic, RSS; then (ON) one CPU profile under
/// the same traffic and `HEAP_PROFILES` heap profiles, or (OFF) the same
/// traffic alone; RSS again.
async fn rss_phase(cfg: &Config, variant: Variant) -> Result<RssResult> {
    let mut server = Server::start(
        &cfg.bin,
        variant,
        &format!("fresh {} (RSS)", variant.name()),
    )?;
    let mut errors = Vec::new();
    let warm = run_load(&server, Duration::from_secs(2), cfg.max_requests).await?;
    errors.extend(warm.errors);
    server.check_alive()?;
    let before_kib = server.rss_kib()?;
    let recorder = CpuRecorder::start(server.pid());
    let profile =
        (variant == Variant::On).then(|| spawn_cpu_profile(server.addr, RSS_CPU_PROFILE_SECS));
    tokio::time::sleep(PROFILE_LEAD).await;
    let load = run_load(
        &server,
        Duration::from_secs(RSS_CPU_PROFILE_SECS),
        cfg.max_requests,
    )
    .await?;
    errors.extend(load.errors);
    let mut cpu = None;
    if let Some(task) = profile {
        let bytes = await_cpu_profile(task).await?;
        let trace = recorder.finish();
        cpu = Some(check_cpu_profile(&bytes, &trace, cfg.clk_tck)?);
        let mut c = Conn::connect(server.addr).await?;
        for _ in 0..HEAP_PROFILES {
            get_ok(&mut c, "/debug/pprof/heap", HEAP_PROFILE_TIMEOUT).await?;
        }
    } else {
        drop(recorder);
    }
    server.check_alive()?;
    let after_kib = server.rss_kib()?;
    Ok(RssResult {
        before_kib,
        after_kib,
        cpu,
        errors,
    })
}

struct HeapLatency {
    ms: Vec<f64>,
    leak_site_seen: bool,
    bytes: usize,
}

/// `HEAP_WARM_LEAKS` × `/leak/heap?kb=64`, then `HEAP_PROFILES` sequential
/// heap profiles, each timed from request to the end of the body.
async fn heap_latency(server: &mut Server) -> Result<HeapLatency> {
    server.check_alive()?;
    let mut c = Conn::connect(server.addr).await?;
    for _ in 0..HEAP_WARM_LEAKS {
        get_ok(&mut c, "/leak/heap?kb=64", REQUEST_TIMEOUT).await?;
    }
    let mut ms = Vec::with_capacity(HEAP_PROFILES);
    let mut last = Vec::new();
    for _ in 0..HEAP_PROFILES {
        let t0 = Instant::now();
        get_ok(&mut c, "/debug/pprof/heap", HEAP_PROFILE_TIMEOUT).await?;
        ms.push(t0.elapsed().as_secs_f64() * 1e3);
        last = std::mem::take(&mut c.body);
    }
    let p = Profile::decode_bytes(&last, "heap profile").map_err(|e| anyhow!("{e}"))?;
    let leak_site_seen = p
        .function
        .iter()
        .filter_map(|f| p.string_table.get(f.name as usize))
        .any(|n| n.contains("leak_heap_kib"));
    server.check_alive()?;
    Ok(HeapLatency {
        ms,
        leak_site_seen,
        bytes: last.len(),
    })
}

// ---------------------------------------------------------------------------
// Statistics and the report
// ---------------------------------------------------------------------------

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    s.sort_by(|a, b| a.total_cmp(b));
    s
}

fn median(v: &[f64]) -> f64 {
    let s = sorted(v);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Nearest-rank percentile.
fn percentile(v: &[f64], p: f64) -> f64 {
    let s = sorted(v);
    if s.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

fn run() -> Result<bool> {
    let cfg = Config::from_env()?;
    // Everything below is bounded by its own timeouts; this is the backstop.
    let budget = Duration::from_secs(240 + cfg.rounds as u64 * 2 * (cfg.secs + 15));
    std::thread::spawn(move || {
        std::thread::sleep(budget);
        eprintln!("overhead: error: the run took longer than {budget:?}; killing the services");
        if let Ok(live) = LIVE_PIDS.lock() {
            for &pid in live.iter() {
                // SAFETY: kill only sends a signal to a child this harness started.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
        std::process::exit(2);
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    rt.block_on(bench(cfg))
}

async fn bench(cfg: Config) -> Result<bool> {
    println!("service: {}", cfg.bin.display());
    println!(
        "config: {CONNECTIONS} connections, {} rounds x {} s per variant, A/B alternated, cap {} requests/round",
        cfg.rounds, cfg.secs, cfg.max_requests
    );
    let mut errors: Vec<String> = Vec::new();

    let mut off = Server::start(&cfg.bin, Variant::Off, "throughput off")?;
    let mut on = Server::start(&cfg.bin, Variant::On, "throughput on")?;
    println!(
        "off: pid {} on {}    on: pid {} on {}",
        off.pid(),
        off.addr,
        on.pid(),
        on.addr
    );

    // The variants must be what they claim: OFF answers 500 on the heap endpoint.
    let (status, body, _) = fetch(off.addr, "/debug/pprof/heap", HEAP_PROFILE_TIMEOUT).await?;
    if status != 500 {
        errors.push(format!(
            "OFF variant: /debug/pprof/heap answered {status}, expected 500 (heap profiling off); \
             _RJEM_MALLOC_CONF=prof:false did not take effect"
        ));
    }
    drop(body);

    // Warm both (connections, allocator, page cache), not measured.
    for s in [&mut off, &mut on] {
        let w = run_load(s, Duration::from_secs(1), cfg.max_requests).await?;
        errors.extend(
            w.errors
                .into_iter()
                .map(|e| format!("warm-up {}: {e}", s.label)),
        );
    }

    println!();
    println!(
        "{:>5} {:>4} {:>10} {:>11} {:>9} {:>13} {:>22}",
        "round", "var", "requests", "req/s", "cpu s", "cpu us/req", "cpu samples cap/exp"
    );
    let mut rounds: Vec<Round> = Vec::new();
    for i in 0..cfg.rounds {
        for server in [&mut off, &mut on] {
            let r = round(&cfg, server).await?;
            let samples = match &r.cpu {
                Some(c) if !c.lost_window => format!("{} / {:.0}", c.captured, c.expected),
                Some(c) => format!("{} / ?", c.captured),
                None => "-".to_owned(),
            };
            println!(
                "{:>5} {:>4} {:>10} {:>11.0} {:>9.2} {:>13.1} {:>22}{}",
                i + 1,
                r.variant.name(),
                r.load.requests,
                r.rps(),
                r.load.cpu_ticks as f64 / cfg.clk_tck,
                r.cpu_per_req_us(cfg.clk_tck),
                samples,
                if r.load.capped {
                    "  (request cap reached)"
                } else {
                    ""
                }
            );
            for e in &r.load.errors {
                errors.push(format!("round {} {}: {e}", i + 1, server.label));
            }
            rounds.push(r);
        }
    }

    println!();
    println!(
        "heap profile latency on the on server ({HEAP_WARM_LEAKS} x /leak/heap?kb=64 first) ..."
    );
    let heap = heap_latency(&mut on).await?;
    if !heap.leak_site_seen {
        println!(
            "  note: leak_heap_kib not in the last heap profile (sampling can miss {} x 64 KiB, rarely)",
            HEAP_WARM_LEAKS
        );
    }

    // Both throughput servers must have survived everything.
    off.check_alive()?;
    on.check_alive()?;
    let outputs = [
        (off.label.clone(), off.output()),
        (on.label.clone(), on.output()),
    ];
    drop(off);
    drop(on);

    println!(
        "RSS growth on fresh services (2 s warm-up, then {RSS_CPU_PROFILE_SECS} s of load) ..."
    );
    let rss_off = rss_phase(&cfg, Variant::Off).await?;
    let rss_on = rss_phase(&cfg, Variant::On).await?;
    errors.extend(rss_off.errors.iter().map(|e| format!("RSS off: {e}")));
    errors.extend(rss_on.errors.iter().map(|e| format!("RSS on: {e}")));

    // Pairs: round i of OFF with round i of ON (adjacent in time).
    let offs: Vec<&Round> = rounds
        .iter()
        .filter(|r| r.variant == Variant::Off)
        .collect();
    let ons: Vec<&Round> = rounds.iter().filter(|r| r.variant == Variant::On).collect();
    let tput_ratio: Vec<f64> = offs
        .iter()
        .zip(&ons)
        .map(|(a, b)| b.rps() / a.rps())
        .collect();
    let cpu_ratio: Vec<f64> = offs
        .iter()
        .zip(&ons)
        .map(|(a, b)| b.cpu_per_req_us(cfg.clk_tck) / a.cpu_per_req_us(cfg.clk_tck))
        .collect();
    let med = |v: &[&Round], f: &dyn Fn(&Round) -> f64| {
        median(&v.iter().map(|r| f(r)).collect::<Vec<_>>())
    };
    let rps_off = med(&offs, &|r| r.rps());
    let rps_on = med(&ons, &|r| r.rps());
    let cpr_off = med(&offs, &|r| r.cpu_per_req_us(cfg.clk_tck));
    let cpr_on = med(&ons, &|r| r.cpu_per_req_us(cfg.clk_tck));
    let build_cpu_ms = median(
        &ons.iter()
            .filter_map(|r| r.build_cpu)
            .map(|s| s * 1e3)
            .collect::<Vec<_>>(),
    );

    let checks: Vec<&CpuCheck> = ons
        .iter()
        .filter_map(|r| r.cpu.as_ref())
        .chain(rss_on.cpu.as_ref())
        .filter(|c| !c.lost_window)
        .collect();
    let captured: i64 = checks.iter().map(|c| c.captured).sum();
    let expected: f64 = checks.iter().map(|c| c.expected).sum();
    let per_profile: Vec<String> = checks
        .iter()
        .map(|c| format!("{:.2}", c.captured as f64 / c.expected))
        .collect();
    let hz = checks.first().map_or(f64::NAN, |c| c.hz);

    println!();
    println!(
        "leakscope overhead (leaky_service, {CONNECTIONS} connections, {} rounds x {} s, A/B alternated)",
        cfg.rounds, cfg.secs
    );
    println!(
        "throughput on/off             {:.3}  (median of {} paired rounds; on {:.0} req/s, off {:.0} req/s)",
        median(&tput_ratio),
        tput_ratio.len(),
        rps_on,
        rps_off
    );
    println!(
        "server CPU per request on/off {:.3}  (on {:.1} us, off {:.1} us)",
        median(&cpu_ratio),
        cpr_on,
        cpr_off
    );
    println!(
        "cpu profile build after load  {build_cpu_ms:.0} ms server CPU (median, symbolize + encode)"
    );
    println!(
        "heap profile latency          median {:.1} ms, p90 {:.1} ms ({} profiles; first {:.1} ms, max {:.1} ms, {} KiB each)",
        median(&heap.ms),
        percentile(&heap.ms, 90.0),
        heap.ms.len(),
        heap.ms.first().copied().unwrap_or(f64::NAN),
        percentile(&heap.ms, 100.0),
        heap.bytes / 1024
    );
    println!(
        "RSS growth after 1 CPU + {HEAP_PROFILES} heap profiles: {:+.1} MiB (off-variant growth {:+.1} MiB, difference {:+.1} MiB)",
        rss_on.growth_mib(),
        rss_off.growth_mib(),
        rss_on.growth_mib() - rss_off.growth_mib()
    );
    for (name, r) in [("on", &rss_on), ("off", &rss_off)] {
        println!(
            "  {name:>3}: VmRSS {:.1} -> {:.1} MiB (anon {:.1} -> {:.1}, file-backed {:.1} -> {:.1})",
            mib(r.before_kib.total),
            mib(r.after_kib.total),
            mib(r.before_kib.anon),
            mib(r.after_kib.anon),
            mib(r.before_kib.file),
            mib(r.after_kib.file)
        );
    }
    println!(
        "CPU samples captured/expected {:.2} ({} of {:.0} at {:.0} Hz, {} profiles under load: {})",
        captured as f64 / expected,
        captured,
        expected,
        hz,
        checks.len(),
        per_profile.join(" ")
    );

    for (label, out) in &outputs {
        if !out.is_empty() {
            println!("\noutput of the {label} service:\n{out}");
        }
    }
    if errors.is_empty() {
        Ok(true)
    } else {
        println!("\nERRORS ({}):", errors.len());
        for e in &errors {
            println!("  {e}");
        }
        Ok(false)
    }
}
