//! The processes a check runs: the service it spawns (`--spawn`, waited
//! for on its health URL, stopped at the end) or attaches to (`--pid`,
//! `--name`), and a load command (`--load-cmd`). Each spawned command runs
//! as `sh -c COMMAND` in a process group of its own, with its output kept
//! (the last lines, for messages), and is stopped with SIGTERM to the
//! group, then SIGKILL after a grace period.

use std::collections::VecDeque;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use leakscope_agent::client::url::HttpUrl;

/// Lines of output kept per spawned command.
pub const TAIL_LINES: usize = 20;
/// Longest line kept (longer ones are cut).
const MAX_LINE: usize = 512;

/// The last lines a command printed (stdout and stderr together).
#[derive(Debug, Default)]
struct Tail {
    lines: VecDeque<String>,
    partial: Vec<u8>,
}

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                let line = String::from_utf8_lossy(&self.partial).into_owned();
                self.partial.clear();
                self.lines.push_back(line);
                while self.lines.len() > TAIL_LINES {
                    self.lines.pop_front();
                }
            } else if self.partial.len() < MAX_LINE {
                self.partial.push(b);
            }
        }
    }

    fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self.lines.iter().cloned().collect();
        if !self.partial.is_empty() {
            out.push(String::from_utf8_lossy(&self.partial).into_owned());
        }
        out
    }
}

/// A command running as `sh -c COMMAND` in its own process group.
#[derive(Debug)]
pub struct Spawned {
    child: Child,
    tail: Arc<Mutex<Tail>>,
    status: Option<ExitStatus>,
    /// True once we sent it a signal (its end is then ours, not a failure).
    stopped: bool,
}

impl Spawned {
    /// Starts `command` through `sh -c`, its output kept.
    pub fn start(command: &str) -> Result<Spawned, String> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot run `sh -c {command:?}`: {e}"))?;
        let tail = Arc::new(Mutex::new(Tail::default()));
        let readers: Vec<Box<dyn Read + Send>> = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        .collect();
        for mut r in readers {
            let tail = tail.clone();
            let _ = std::thread::Builder::new()
                .name("leakscope-check-output".into())
                .spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = r.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        tail.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(&buf[..n]);
                    }
                });
        }
        Ok(Spawned {
            child,
            tail,
            status: None,
            stopped: false,
        })
    }

    /// The pid of `sh` (and the process group's id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status once it has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// True when the check stopped it (then its status is no failure).
    pub fn stopped_by_us(&self) -> bool {
        self.stopped
    }

    /// The last lines it printed.
    pub fn tail(&self) -> Vec<String> {
        self.tail.lock().unwrap_or_else(|e| e.into_inner()).lines()
    }

    /// The last lines, as one indented block for a message ("" when none).
    pub fn tail_block(&self) -> String {
        let lines = self.tail();
        if lines.is_empty() {
            return String::new();
        }
        format!("; its last output:\n    {}", lines.join("\n    "))
    }

    fn signal(&self, signal: libc::c_int) {
        let Ok(pgid) = libc::pid_t::try_from(self.child.id()) else {
            return;
        };
        // SAFETY: kill(2) with a negative pid signals the process group we
        // created for this child (process_group(0)); no memory is involved.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }

    /// Stops the process group: SIGTERM, then SIGKILL after `grace`; its
    /// exit status (of `sh`, or of the command it became).
    pub async fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.exited() {
            // The group may outlive its leader: make sure it is gone.
            self.signal(libc::SIGKILL);
            return Some(s);
        }
        self.stopped = true;
        self.signal(libc::SIGTERM);
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if let Some(s) = self.exited() {
                self.signal(libc::SIGKILL);
                return Some(s);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.signal(libc::SIGKILL);
        for _ in 0..100 {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.exited().is_none() {
            self.signal(libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// `exit status 3`, `killed by signal 9`.
pub fn describe_status(s: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => s.to_string(),
    }
}

/// Shells whose single child is the command they run.
const SHELLS: &[&str] = &["sh", "bash", "dash", "zsh", "ash", "env"];

/// The children of `pid`, from /proc (a racy read: a process may vanish).
fn children(pid: u32) -> Vec<u32> {
    let direct = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"));
    if let Ok(text) = direct {
        return text
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect();
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s.rsplit_once(')')?.1;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_owned())
}

/// The service behind a spawned `sh -c`: `sh` itself when it became the
/// command (`exec`), else the one child of each shell down the line.
pub fn service_pid(sh: u32) -> u32 {
    let mut pid = sh;
    for _ in 0..8 {
        let is_shell = comm(pid).is_some_and(|c| SHELLS.contains(&c.as_str()));
        if !is_shell {
            break;
        }
        match children(pid).as_slice() {
            [only] => pid = *only,
            _ => break,
        }
    }
    pid
}

/// Polls `url` every 200 ms until it answers 2xx (`any_status`: any HTTP
/// answer), while `alive` says the service runs, for at most `limit`.
pub async fn wait_healthy(
    url: &HttpUrl,
    any_status: bool,
    limit: Duration,
    alive: &mut dyn FnMut() -> Result<(), String>,
) -> Result<(), String> {
    use leakscope_agent::client::backoff::Backoff;
    use leakscope_agent::client::{ClientError, Endpoint, RetryPolicy};

    // One attempt per poll, and no breaker: the loop is the retry.
    let two = Duration::from_secs(2);
    let policy = RetryPolicy::default()
        .timeouts(two, two)
        .retries(0, Backoff::default())
        .breaker(u32::MAX, Duration::ZERO);
    let endpoint = Endpoint::new(url.clone(), policy);
    let start = Instant::now();
    let mut last;
    loop {
        alive()?;
        match endpoint.get(url.path(), None).await {
            Ok(_) => return Ok(()),
            Err(ClientError::Status { .. }) if any_status => return Ok(()),
            Err(ClientError::Status { status, .. }) => last = format!("HTTP {status}"),
            Err(e) => last = e.to_string(),
        }
        if start.elapsed() >= limit {
            return Err(format!(
                "the health URL {url} did not answer 2xx within {} s (last: {last}); is it the \
                 right URL, and does the service start that fast? (--health-timeout)",
                limit.as_secs_f64()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_last_lines() {
        let mut t = Tail::default();
        for i in 0..30 {
            t.push(format!("line {i}\n").as_bytes());
        }
        t.push(b"no newline");
        let lines = t.lines();
        assert_eq!(lines.len(), TAIL_LINES + 1);
        assert_eq!(lines[0], "line 10");
        assert_eq!(lines[TAIL_LINES], "no newline");
    }

    #[tokio::test]
    async fn a_spawned_group_is_stopped_and_its_output_kept() {
        let mut s = Spawned::start("echo started; exec sleep 30").unwrap();
        // `sh -c 'x; exec sleep'` becomes sleep: its pid is the service.
        for _ in 0..100 {
            if comm(s.pid()).as_deref() == Some("sleep") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(service_pid(s.pid()), s.pid());
        let status = s.stop(Duration::from_secs(5)).await.expect("stopped");
        assert_eq!(describe_status(status), "killed by signal 15");
        assert!(s.stopped_by_us());
        assert_eq!(s.tail(), ["started"]);

        let mut quick = Spawned::start("echo oops >&2; exit 3").unwrap();
        let status = loop {
            if let Some(st) = quick.exited() {
                break st;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(describe_status(status), "exit status 3");
        assert!(!quick.stopped_by_us());
        // The reader thread may lag the exit a little.
        for _ in 0..100 {
            if !quick.tail().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(quick.tail_block().contains("oops"), "{:?}", quick.tail());
    }
}
