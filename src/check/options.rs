//! What one check is told to do: the target, the load, the phases and the
//! budgets ([`CheckOptions`]), and the small languages of the command line
//! and the configuration file: a load entry (`[METHOD ]URL[=WEIGHT]`), a
//! budget list (`threads=2,heap=4MiB`), durations and sizes. Pure code.

use std::time::Duration;

use leakscope_agent::client::url::HttpUrl;
use regex::Regex;

/// Why the options cannot be used: the message names the option and the
/// problem. A check with bad options exits 2 before it starts anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OptionsError(pub String);

fn bad(msg: impl Into<String>) -> OptionsError {
    OptionsError(msg.into())
}

/// The service to check.
#[derive(Debug, Clone)]
pub enum TargetChoice {
    /// Start it (`sh -c COMMAND`, in a process group of its own), wait for
    /// its health URL, stop it at the end.
    Spawn {
        /// The command line, as given.
        command: String,
        /// Polled until it answers 2xx.
        health: Option<HttpUrl>,
    },
    /// A running process.
    Pid(u32),
    /// The oldest running process whose comm or command line matches.
    Name(Regex),
}

pub use crate::load::LoadEntry;

/// Where the load comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadChoice {
    /// The built-in load generator.
    Builtin {
        /// The weighted mix (all on one server).
        entries: Vec<LoadEntry>,
        /// Requests per second in all; `None` for a closed loop.
        rate: Option<f64>,
        /// Connections.
        concurrency: usize,
    },
    /// A command run through `sh -c`, for the warm-up and the load phase.
    Command(String),
}

/// What may stay behind after the cool-down without failing the check,
/// per kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budgets {
    /// Heap in use, bytes.
    pub heap: f64,
    /// Threads.
    pub threads: f64,
    /// tokio tasks.
    pub tasks: f64,
    /// Open fds.
    pub fds: f64,
    /// Goroutines.
    pub goroutines: f64,
}

impl Default for Budgets {
    /// A healthy service can hold a few more of each at the end of a
    /// cool-down than before the warm-up without leaking: a thread of a
    /// pool started late, a connection or task alive at the moment of the
    /// reading, allocator caches. Leaks under load leave tens or
    /// thousands behind.
    fn default() -> Budgets {
        Budgets {
            heap: 4.0 * 1024.0 * 1024.0,
            threads: 2.0,
            tasks: 4.0,
            fds: 4.0,
            goroutines: 4.0,
        }
    }
}

/// The kinds a budget can be given for.
pub const KINDS: &[&str] = &["heap", "threads", "tasks", "fds", "goroutines"];

impl Budgets {
    /// The budget of `kind`.
    pub fn get(&self, kind: &str) -> Option<f64> {
        Some(match kind {
            "heap" => self.heap,
            "threads" => self.threads,
            "tasks" => self.tasks,
            "fds" => self.fds,
            "goroutines" => self.goroutines,
            _ => return None,
        })
    }

    /// Sets the budget of `kind` to `value` (a size for `heap`, a count
    /// otherwise).
    pub fn set(&mut self, kind: &str, value: &str) -> Result<(), OptionsError> {
        let v = if kind == "heap" {
            parse_size(value).map_err(|e| bad(format!("--allow heap={value}: {e}")))?
        } else {
            let n: f64 = value.trim().parse().map_err(|_| {
                bad(format!(
                    "--allow {kind}={value}: {value:?} is not a count (a whole number >= 0)"
                ))
            })?;
            if !(n >= 0.0 && n.fract() == 0.0 && n.is_finite()) {
                return Err(bad(format!(
                    "--allow {kind}={value}: give a whole number >= 0"
                )));
            }
            n
        };
        match kind {
            "heap" => self.heap = v,
            "threads" => self.threads = v,
            "tasks" => self.tasks = v,
            "fds" => self.fds = v,
            "goroutines" => self.goroutines = v,
            _ => {
                return Err(bad(format!(
                    "--allow {kind}=...: unknown kind {kind:?} (use {})",
                    KINDS.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Applies `threads=2,heap=4MiB` (comma-separated `KIND=AMOUNT`).
    pub fn apply(&mut self, list: &str) -> Result<(), OptionsError> {
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (kind, value) = item.split_once('=').ok_or_else(|| {
                bad(format!(
                    "--allow {item:?}: expected KIND=AMOUNT, such as threads=2 or heap=4MiB"
                ))
            })?;
            self.set(kind.trim(), value.trim())?;
        }
        Ok(())
    }
}

/// Everything one check needs.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// The service.
    pub target: TargetChoice,
    /// Where it serves profiles (a leakscope agent or Go's net/http/pprof).
    pub pprof_url: Option<HttpUrl>,
    /// The load.
    pub load: LoadChoice,
    /// Load before the measured phase: pools and caches fill.
    pub warmup: Duration,
    /// The measured load phase, across which growth is fitted.
    pub duration: Duration,
    /// No load: what the load left behind must go.
    pub cooldown: Duration,
    /// What may stay behind.
    pub budgets: Budgets,
    /// Longest wait for a spawned service's health URL.
    pub health_timeout: Duration,
    /// Between SIGTERM and SIGKILL when a spawned service is stopped.
    pub stop_grace: Duration,
    /// Time between readings of the counters.
    pub interval: Duration,
    /// Time between heap profiles in the load phase; `None` picks one from
    /// the duration ([`CheckOptions::heap_every`]).
    pub heap_every: Option<Duration>,
}

impl CheckOptions {
    /// Default [`CheckOptions::warmup`]: long enough for the pools and
    /// caches of a typical service to fill under load (connections, worker
    /// threads, a cache of thousands of entries at hundreds of requests a
    /// second), so their growth is not in the measured phase.
    pub const DEFAULT_WARMUP: Duration = Duration::from_secs(10);
    /// Default [`CheckOptions::duration`]: a minute of load is a dozen heap
    /// profiles, enough to tell a leak of a few MiB/min from sampling noise,
    /// and thousands of requests for a count leak to show.
    pub const DEFAULT_DURATION: Duration = Duration::from_secs(60);
    /// Default [`CheckOptions::cooldown`]: longer than what holds resources
    /// after a load by design: tokio's blocking threads leave after 10 s
    /// idle, idle keep-alive connections close when the load's client
    /// closes them, timers of a few seconds fire.
    pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(15);
    /// Default [`CheckOptions::health_timeout`].
    pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default [`CheckOptions::stop_grace`].
    pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(5);
    /// Default [`CheckOptions::interval`].
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
    /// Default load concurrency.
    pub const DEFAULT_CONCURRENCY: usize = 8;

    /// Options with the defaults, for `target` under `load`.
    pub fn new(target: TargetChoice, load: LoadChoice) -> CheckOptions {
        CheckOptions {
            target,
            pprof_url: None,
            load,
            warmup: Self::DEFAULT_WARMUP,
            duration: Self::DEFAULT_DURATION,
            cooldown: Self::DEFAULT_COOLDOWN,
            budgets: Budgets::default(),
            health_timeout: Self::DEFAULT_HEALTH_TIMEOUT,
            stop_grace: Self::DEFAULT_STOP_GRACE,
            interval: Self::DEFAULT_INTERVAL,
            heap_every: None,
        }
    }

    /// Time between heap profiles in the load phase: as set, else a
    /// twelfth of the duration, between 2 and 30 s (a dozen profiles for
    /// the trend of each allocation site).
    pub fn heap_every(&self) -> Duration {
        self.heap_every.unwrap_or_else(|| {
            (self.duration / 12).clamp(Duration::from_secs(2), Duration::from_secs(30))
        })
    }

    /// Checks what the parsers cannot: phases long enough to judge, a
    /// load on one server.
    pub fn validate(&self) -> Result<(), OptionsError> {
        if self.duration < Duration::from_secs(3) {
            return Err(bad(format!(
                "--duration {:?} is too short to fit a growth: give at least 3s",
                self.duration
            )));
        }
        if self.interval.is_zero() {
            return Err(bad("the reading interval is 0"));
        }
        if let TargetChoice::Spawn { command, health } = &self.target {
            if command.trim().is_empty() {
                return Err(bad("--spawn: the command is empty"));
            }
            if health.is_none() && self.pprof_url.is_none() {
                return Err(bad(
                    "--spawn needs --health URL (or --pprof-url) to know when the service is up",
                ));
            }
        }
        match &self.load {
            LoadChoice::Builtin {
                entries,
                rate,
                concurrency,
            } => {
                if entries.is_empty() {
                    return Err(bad("no load: give --load URL (repeatable) or --load-cmd"));
                }
                if *concurrency == 0 {
                    return Err(bad("--concurrency 0: use at least one connection"));
                }
                if let Some(r) = rate
                    && !(r.is_finite() && *r > 0.0)
                {
                    return Err(bad(format!(
                        "--rate {r}: give a positive number of requests per second"
                    )));
                }
                builtin_target(entries)?;
            }
            LoadChoice::Command(c) if c.trim().is_empty() => {
                return Err(bad("--load-cmd: the command is empty"));
            }
            LoadChoice::Command(_) => {}
        }
        Ok(())
    }
}

/// The load generator's target for `entries`: every URL on one server
/// ([`Target::from_entries`](crate::load::Target::from_entries)).
pub fn builtin_target(entries: &[LoadEntry]) -> Result<crate::load::Target, OptionsError> {
    use crate::load::LoadError;
    crate::load::Target::from_entries(entries).map_err(|e| match e {
        LoadError::ManyServers { url, first } => bad(format!(
            "--load {url}: every load URL must be on one server ({first} first); use \
             --load-cmd for a load over several"
        )),
        LoadError::BadEntry(m) => bad(format!("--load {m}")),
        e => bad(format!("--load: {e}")),
    })
}

/// Reads a load entry: `[METHOD ]URL[=WEIGHT]`
/// ([`parse_entry`](crate::load::parse_entry)).
pub fn parse_load(spec: &str, body: Option<&str>) -> Result<LoadEntry, OptionsError> {
    crate::load::parse_entry(spec, body).map_err(|e| match e {
        crate::load::LoadError::BadEntry(m) => bad(format!("--load {m}")),
        e => bad(format!("--load {spec:?}: {e}")),
    })
}

/// `4MiB`, `512KiB`, `1GiB`, `4M`, `1048576` → bytes.
pub fn parse_size(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = (&t[..split], t[split..].trim());
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 4MiB, 512KiB or 1048576"))?;
    let scale = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (use B, KiB, MiB or GiB)"
            ));
        }
    };
    Ok(n * scale)
}

/// `250ms`, `5s`, `2m`, `1h`, or bare seconds (`1.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 500ms, 10s, 2m or 1h"))?;
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    let secs = n * scale;
    if !secs.is_finite() || !(0.0..=1e7).contains(&secs) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_entries_name_the_option() {
        let e = parse_load("post http://h:1/orders=2", Some("{}")).unwrap();
        assert_eq!((e.method.as_str(), e.weight), ("POST", 2));
        let e = parse_load("http://h:1/=0", None).unwrap_err();
        assert!(
            e.0.starts_with("--load \"http://h:1/=0\": weight \"0\""),
            "{e}"
        );
    }

    #[test]
    fn one_server_for_the_builtin_load() {
        let entries = [
            parse_load("http://127.0.0.1:8/a=3", None).unwrap(),
            parse_load("POST http://127.0.0.1:8/b/{n}", None).unwrap(),
        ];
        let t = builtin_target(&entries).unwrap();
        assert_eq!(t.paths().collect::<Vec<_>>(), [("/a", 3), ("/b/{n}", 1)]);
        let other = [
            entries[0].clone(),
            parse_load("http://127.0.0.1:9/c", None).unwrap(),
        ];
        let e = builtin_target(&other).unwrap_err();
        assert!(e.0.contains("one server"), "{e}");
    }

    #[test]
    fn budgets() {
        let mut b = Budgets::default();
        b.apply("threads=0, heap=16MiB,fds=10").unwrap();
        assert_eq!((b.threads, b.fds), (0.0, 10.0));
        assert_eq!(b.heap, 16.0 * 1024.0 * 1024.0);
        for (list, want) in [
            ("sockets=3", "unknown kind \"sockets\""),
            ("threads", "expected KIND=AMOUNT"),
            ("threads=-1", "whole number >= 0"),
            ("threads=x", "not a count"),
            ("threads=1.5", "whole number"),
            ("heap=4XB", "unknown unit"),
        ] {
            let e = Budgets::default().apply(list).unwrap_err();
            assert!(e.0.contains(want), "{list}: {e}");
        }
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("512KiB"), Ok(524_288.0));
        assert_eq!(parse_size("1048576"), Ok(1_048_576.0));
        assert_eq!(parse_size("1.5M"), Ok(1.5 * 1_048_576.0));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn heap_every_follows_the_duration() {
        let mut o = CheckOptions::new(TargetChoice::Pid(1), LoadChoice::Command("true".into()));
        assert_eq!(o.heap_every(), Duration::from_secs(5));
        o.duration = Duration::from_secs(12);
        assert_eq!(o.heap_every(), Duration::from_secs(2));
        o.heap_every = Some(Duration::from_secs(7));
        assert_eq!(o.heap_every(), Duration::from_secs(7));
    }
}
