//! The service under test: the `leaky_service` child process (started with
//! heap profiling off or on, killed with the harness), its listening-line
//! parsing, and its CPU time and RSS read from /proc.

use std::io::BufRead;
use std::net::SocketAddr;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, bail};

use crate::{CPU_POLL, STARTUP_TIMEOUT};

/// PIDs of the services still running, for the watchdog.
pub(crate) static LIVE_PIDS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Variant {
    Off,
    On,
}

impl Variant {
    pub(crate) fn name(self) -> &'static str {
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
pub(crate) struct Server {
    guard: ChildGuard,
    pub(crate) addr: SocketAddr,
    pub(crate) variant: Variant,
    pub(crate) label: String,
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
    pub(crate) fn start(bin: &Path, variant: Variant, label: &str) -> Result<Server> {
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

    pub(crate) fn pid(&self) -> u32 {
        self.guard.pid
    }

    /// Err with the exit status and output if the service has exited.
    pub(crate) fn check_alive(&mut self) -> Result<()> {
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

    pub(crate) fn output(&self) -> String {
        self.output.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub(crate) fn cpu_ticks(&self) -> Result<u64> {
        cpu_ticks(self.pid())
    }

    /// VmRSS, RssAnon and RssFile (+ RssShmem) in KiB.
    pub(crate) fn rss_kib(&self) -> Result<Rss> {
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
pub(crate) struct CpuRecorder {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<(SystemTime, u64)>>>,
}

impl CpuRecorder {
    pub(crate) fn start(pid: u32) -> CpuRecorder {
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

    pub(crate) fn finish(mut self) -> Vec<(SystemTime, u64)> {
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
pub(crate) fn ticks_at(trace: &[(SystemTime, u64)], t: SystemTime) -> Option<f64> {
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

/// Resident memory in KiB.
#[derive(Clone, Copy)]
pub(crate) struct Rss {
    pub(crate) total: u64,
    pub(crate) anon: u64,
    pub(crate) file: u64,
}
