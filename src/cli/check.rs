//! `leakscope check`: one leak test of a service under load, for CI (see
//! `leakscope::check`). Reads the flags and the `--config` file (flags
//! win), runs the check with a progress line per phase, prints the summary
//! table (or `--json` on stdout, the human text on stderr), writes the
//! requested reports and returns the exit code: 0 clean, 1 leak, 2 could
//! not run.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use leakscope::agent::client::url::HttpUrl;
use leakscope::check::config::{self, FileSettings};
use leakscope::check::options::{OptionsError, parse_duration, parse_load};
use leakscope::check::report;
use leakscope::check::summary::{self, Progress};
use leakscope::check::{CheckOptions, CheckReport, LoadChoice, Outcome, TargetChoice};
use regex::Regex;

/// Settings of `leakscope check`.
#[derive(Debug, Clone, clap::Args)]
// `{n}` is clap's newline in help texts, with no escape; an empty style
// between its characters (stripped when stdout is not a terminal) keeps it
// literal.
#[command(after_help = "\
Examples:
  leakscope check --spawn './target/release/orders' --health http://127.0.0.1:8080/healthz \\
      --pprof-url http://127.0.0.1:6060 \\
      --load 'http://127.0.0.1:8080/items/{\x1b[0mn}=20' \\
      --load 'POST http://127.0.0.1:8080/orders=1' --load-body '{\"customer\":\"c{\x1b[0mn}\"}' \\
      --rate 200 --allow threads=2,heap=4MiB --junit leaks.xml
  leakscope check --config leakcheck.toml
  leakscope check --pid 4242 --pprof-url http://127.0.0.1:6060 --load-cmd 'ab -n 20000 -c 8 http://127.0.0.1:8080/'

Phases: the counters are read before a warm-up under load (--warmup, 10s: pools and caches
fill), then across the load phase (--duration, 60s: growth is fitted, heap profiles every
few seconds), then after a cool-down with no load (--cooldown, 15s: what the load held must
go). A kind (heap, threads, tasks, fds, goroutines) fails only when what stayed after the
cool-down is over its budget (--allow) and the evidence says it is a leak: a count that
kept growing through the load; an allocation site of your code that kept growing above
the heap sampling noise and still holds its memory. Each leak is named: function and
file:line, or what grew when the code cannot be known.

In a load URL, {\x1b[0mn} is the request's number (1, 2, ...), so each request can name a thing
of its own: --load 'POST http://127.0.0.1:8080/orders/{\x1b[0mn}/notify'.

Exit status:
  0  clean: nothing stayed behind beyond its budget
  1  a leak: at least one kind failed (each named in the summary)
  2  the check could not run: bad options, a service that did not start or exited,
     a health URL that never answered, a load command that failed, ...")]
pub struct CheckArgs {
    /// Read settings from this TOML file (flags given here win).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Start the service with this command (run by `sh -c`); it is stopped at
    /// the end (SIGTERM, then SIGKILL).
    #[arg(long, value_name = "CMD", conflicts_with_all = ["pid", "name"])]
    pub spawn: Option<String>,
    /// Check a running process by pid.
    #[arg(long, value_name = "PID", conflicts_with = "name")]
    pub pid: Option<u32>,
    /// Check the oldest running process whose name or command line matches.
    #[arg(long, value_name = "REGEX")]
    pub name: Option<String>,
    /// With --spawn: wait until this URL answers 2xx before the check starts.
    #[arg(long, value_name = "URL")]
    pub health: Option<String>,
    /// Longest wait for --health [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub health_timeout: Option<Duration>,
    /// Where the service serves pprof (a leakscope agent or Go's net/http/pprof).
    #[arg(long, value_name = "URL")]
    pub pprof_url: Option<String>,
    /// A request of the built-in load: `[METHOD ]URL[=WEIGHT]` (repeatable).
    #[arg(long = "load", value_name = "[METHOD ]URL[=WEIGHT]")]
    pub load: Vec<String>,
    /// The body of the --load requests that send one (POST, PUT, PATCH);
    /// JSON when it starts with { or [.
    #[arg(long, value_name = "BODY")]
    pub load_body: Option<String>,
    /// Requests per second of the built-in load, in all [default: as fast as answers come].
    #[arg(long, value_name = "PER_SECOND")]
    pub rate: Option<f64>,
    /// Connections of the built-in load [default: 8].
    #[arg(short = 'c', long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Drive the load with this command instead (run by `sh -c`); it runs for the
    /// warm-up and the load phase, and is stopped if still running. Its exit status
    /// and last output are kept; a failure fails the check (exit 2).
    #[arg(long, value_name = "CMD", conflicts_with = "load")]
    pub load_cmd: Option<String>,
    /// Load before the measured phase [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub warmup: Option<Duration>,
    /// The measured load phase [default: 60s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// No load, before the final readings [default: 15s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub cooldown: Option<Duration>,
    /// What may stay behind: `threads=2,heap=4MiB,tasks=4,fds=4,goroutines=4`
    /// (repeatable).
    #[arg(long, value_name = "KIND=AMOUNT,...")]
    pub allow: Vec<String>,
    /// Print the report as JSON on stdout (the human text goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Write a JUnit XML report (one test case per kind).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write a self-contained HTML report.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Between SIGTERM and SIGKILL when stopping what the check started [default: 5s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub stop_grace: Option<Duration>,
}

fn url(s: &str, what: &str) -> Result<HttpUrl, OptionsError> {
    HttpUrl::parse(s).map_err(|m| OptionsError(format!("{what} {s}: {m}")))
}

/// Where the reports go: the flags', else the config file's `[reports]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportPaths {
    /// `--junit`.
    pub junit: Option<PathBuf>,
    /// `--report`.
    pub html: Option<PathBuf>,
}

/// The options and the report paths: the file's settings, then the flags
/// over them.
pub fn settings(args: &CheckArgs) -> Result<(CheckOptions, ReportPaths), OptionsError> {
    let file = match &args.config {
        Some(path) => config::load(path).map_err(OptionsError)?,
        None => FileSettings::default(),
    };
    let flags_target = args.spawn.is_some() || args.pid.is_some() || args.name.is_some();
    let (spawn, pid, name) = if flags_target {
        (args.spawn.clone(), args.pid, args.name.clone())
    } else {
        (file.spawn.clone(), file.pid, file.name.clone())
    };
    let health = args
        .health
        .clone()
        .or(file.health.clone())
        .map(|h| url(&h, "--health"))
        .transpose()?;
    let target = match (spawn, pid, name) {
        (Some(command), None, None) => TargetChoice::Spawn { command, health },
        (None, Some(p), None) => TargetChoice::Pid(p),
        (None, None, Some(n)) => TargetChoice::Name(Regex::new(&n).map_err(|e| {
            OptionsError(format!(
                "--name {n:?} is not a valid regular expression: {e}"
            ))
        })?),
        (None, None, None) => {
            return Err(OptionsError(
                "what to check: give --spawn CMD, --pid PID or --name REGEX (or a --config file \
                 with a [target] section)"
                    .into(),
            ));
        }
        _ => {
            return Err(OptionsError(
                "give one of --spawn, --pid and --name (the config file's [target] has more \
                 than one)"
                    .into(),
            ));
        }
    };
    let load = if !args.load.is_empty() || args.load_cmd.is_some() {
        match &args.load_cmd {
            Some(c) => LoadChoice::Command(c.clone()),
            None => builtin(args, &args.load, &file)?,
        }
    } else {
        match &file.load_cmd {
            Some(c) if file.requests.is_empty() => LoadChoice::Command(c.clone()),
            Some(_) => {
                return Err(OptionsError(
                    "the config file's [load] has both a command and requests: keep one".into(),
                ));
            }
            None => builtin(args, &[], &file)?,
        }
    };
    let mut o = CheckOptions::new(target, load);
    o.pprof_url = args
        .pprof_url
        .clone()
        .or(file.pprof_url.clone())
        .map(|u| url(&u, "--pprof-url"))
        .transpose()?;
    let pick = |flag: Option<Duration>, file: Option<Duration>, default: Duration| {
        flag.or(file).unwrap_or(default)
    };
    o.warmup = pick(args.warmup, file.warmup, o.warmup);
    o.duration = pick(args.duration, file.duration, o.duration);
    o.cooldown = pick(args.cooldown, file.cooldown, o.cooldown);
    o.health_timeout = pick(args.health_timeout, file.health_timeout, o.health_timeout);
    o.stop_grace = pick(args.stop_grace, file.stop_grace, o.stop_grace);
    o.interval = file.interval.unwrap_or(o.interval);
    o.heap_every = file.heap_every;
    for item in &file.allow {
        o.budgets.apply(item)?;
    }
    for list in &args.allow {
        o.budgets.apply(list)?;
    }
    o.validate()?;
    let reports = ReportPaths {
        junit: args.junit.clone().or(file.junit.clone()),
        html: args.report.clone().or(file.html.clone()),
    };
    Ok((o, reports))
}

/// The built-in load from the flags' `--load` entries, else the file's.
fn builtin(
    args: &CheckArgs,
    specs: &[String],
    file: &FileSettings,
) -> Result<LoadChoice, OptionsError> {
    let entries = if specs.is_empty() {
        file.requests.clone()
    } else {
        specs
            .iter()
            .map(|s| parse_load(s, args.load_body.as_deref()))
            .collect::<Result<Vec<_>, _>>()?
    };
    Ok(LoadChoice::Builtin {
        entries,
        rate: args.rate.or(file.rate),
        concurrency: args
            .concurrency
            .or(file.concurrency)
            .unwrap_or(CheckOptions::DEFAULT_CONCURRENCY),
    })
}

/// Runs `leakscope check`; the process exit code.
pub async fn run(args: CheckArgs) -> i32 {
    let human_to_stderr = args.json;
    let tty = colours(human_to_stderr);
    let out: Box<dyn Write + Send> = if human_to_stderr {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    let (opts, reports) = match settings(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("leakscope check: {e}");
            return Outcome::Error.exit_code();
        }
    };
    let progress = Progress::new(out, tty);
    let _ = writeln!(
        progress_writer(human_to_stderr),
        "leakscope check: {}",
        plan(&opts)
    );
    let show = |e: &leakscope::check::Event| progress.show(e);
    let report = leakscope::check::run(&opts, &show).await;
    progress.finish();
    finish(args.json, &reports, &report)
}

/// Whether the human text gets colours and redrawn progress: when it goes
/// to a terminal (stderr with `--json`, else stdout) and `NO_COLOR` is not
/// set (<https://no-color.org>).
pub fn colours(to_stderr: bool) -> bool {
    let tty = if to_stderr {
        std::io::stderr().is_terminal()
    } else {
        std::io::stdout().is_terminal()
    };
    tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn progress_writer(stderr: bool) -> Box<dyn Write> {
    if stderr {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    }
}

/// What is about to happen, in one line.
pub fn plan(o: &CheckOptions) -> String {
    let secs = |d: Duration| format!("{} s", d.as_secs_f64());
    format!(
        "warm-up {}, load {}, cool-down {} (about {:.0} s in all)",
        secs(o.warmup),
        secs(o.duration),
        secs(o.cooldown),
        (o.warmup + o.duration + o.cooldown).as_secs_f64() + 8.0
    )
}

/// Prints the summary (and JSON), writes the reports; the exit code.
pub fn finish(json: bool, reports: &ReportPaths, report: &CheckReport) -> i32 {
    let tty = colours(json);
    let text = summary::render(report, tty);
    let mut code = report.outcome.exit_code();
    if json {
        eprint!("{text}");
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{}", summary::json(report));
        let _ = stdout.flush();
    } else {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(text.as_bytes());
        let _ = stdout.flush();
    }
    if let Err(e) = write_reports(report, reports.junit.as_deref(), reports.html.as_deref()) {
        eprintln!("leakscope check: {e}");
        code = Outcome::Error.exit_code();
    }
    code
}

/// Writes `--junit` and `--report` (their folders are made if missing);
/// an error names the file and what went wrong.
fn write_reports(
    report: &CheckReport,
    junit: Option<&Path>,
    html: Option<&Path>,
) -> Result<(), String> {
    let mut failed = Vec::new();
    for (flag, path, render) in [
        (
            "--junit",
            junit,
            report::junit as fn(&CheckReport) -> String,
        ),
        ("--report", html, report::html),
    ] {
        let Some(path) = path else { continue };
        if let Err(e) = write_file(path, &render(report)) {
            failed.push(format!("{flag} {}: {e}", path.display()));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

/// Writes `text` to `path` whole: into a temporary file beside it, then
/// renamed, so a CI step never reads half a report.
pub fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse_settings(args: &[&str]) -> Result<(CheckOptions, ReportPaths), OptionsError> {
        let cli =
            crate::cli::Cli::try_parse_from(["leakscope", "check"].iter().chain(args).copied())
                .expect("clap");
        match cli.command {
            crate::cli::Command::Check(a) => settings(&a),
            _ => unreachable!(),
        }
    }

    fn parse(args: &[&str]) -> Result<CheckOptions, OptionsError> {
        parse_settings(args).map(|(o, _)| o)
    }

    #[test]
    fn flags_make_the_options() {
        let o = parse(&[
            "--spawn",
            "./svc --port 1",
            "--health",
            "http://127.0.0.1:1/healthz",
            "--load",
            "http://127.0.0.1:1/items/{n}=3",
            "--load",
            "POST http://127.0.0.1:1/orders",
            "--load-body",
            "{}",
            "--allow",
            "threads=5",
            "--duration",
            "20s",
        ])
        .unwrap();
        assert!(
            matches!(o.target, TargetChoice::Spawn { ref command, .. } if command == "./svc --port 1")
        );
        assert_eq!(o.duration, Duration::from_secs(20));
        assert_eq!(o.warmup, CheckOptions::DEFAULT_WARMUP);
        assert_eq!(o.budgets.threads, 5.0);
        match &o.load {
            LoadChoice::Builtin { entries, .. } => {
                assert_eq!(entries[1].body.as_deref(), Some("{}"));
                assert_eq!(entries[0].body, None);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_input_says_what() {
        for (args, want) in [
            (&["--pid", "1", "--load", "http://h:1/"][..], ""),
            (
                &["--load", "http://h:1/"][..],
                "give --spawn CMD, --pid PID or --name",
            ),
            (&["--pid", "1"][..], "no load"),
            (
                &["--pid", "1", "--load-cmd", "x", "--allow", "sockets=1"][..],
                "unknown kind",
            ),
            (&["--spawn", "x", "--load-cmd", "y"][..], "--health URL"),
            (
                &["--pid", "1", "--load-cmd", "y", "--duration", "1s"][..],
                "too short",
            ),
        ] {
            match parse(args) {
                Ok(_) => assert!(want.is_empty(), "{args:?} passed"),
                Err(e) => assert!(!want.is_empty() && e.0.contains(want), "{args:?}: {e}"),
            }
        }
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = std::env::temp_dir().join(format!("leakscope-check-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("leakcheck.toml");
        std::fs::write(
            &path,
            "[target]\npid = 7\n[load]\ncommand = \"true\"\n[phases]\nduration = \"30s\"\n\
             warmup = \"4s\"\n[allow]\nthreads = 9\nfds = 1\n\
             [reports]\njunit = \"ci/leaks.xml\"\nhtml = \"ci/leaks.html\"\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let (_, reports) = parse_settings(&["--config", p, "--report", "mine.html"]).unwrap();
        assert_eq!(
            reports,
            ReportPaths {
                junit: Some("ci/leaks.xml".into()),
                html: Some("mine.html".into())
            }
        );
        let o = parse(&["--config", p, "--duration", "5s", "--allow", "fds=3"]).unwrap();
        assert!(matches!(o.target, TargetChoice::Pid(7)));
        assert_eq!(
            (o.duration, o.warmup),
            (Duration::from_secs(5), Duration::from_secs(4))
        );
        assert_eq!((o.budgets.threads, o.budgets.fds), (9.0, 3.0));
        assert_eq!(o.load, LoadChoice::Command("true".into()));
        std::fs::write(&path, "[phases]\ncooldwn = 3\n").unwrap();
        let e = parse(&["--config", p]).unwrap_err();
        assert!(
            e.0.contains("leakcheck.toml") && e.0.contains("cooldwn"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reports_are_written_whole_or_the_error_names_the_file() {
        let report = CheckReport {
            target: "pid 7".into(),
            pid: Some(7),
            flavor: "process".into(),
            outcome: Outcome::Clean,
            error: None,
            phases: Vec::new(),
            kinds: Vec::new(),
            series: Vec::new(),
            load: Default::default(),
            settings: Vec::new(),
        };
        let dir = std::env::temp_dir().join(format!("leakscope-check-out-{}", std::process::id()));
        let junit = dir.join("a/b/leaks.xml");
        let html = dir.join("leaks.html");
        write_reports(&report, Some(&junit), Some(&html)).unwrap();
        assert!(
            std::fs::read_to_string(&junit)
                .unwrap()
                .contains("<testsuites")
        );
        assert!(std::fs::read_to_string(&html).unwrap().contains("<html"));
        assert!(!dir.join("a/b/leaks.xml.tmp").exists());
        // A folder that cannot be made: the message names the flag and the file.
        let bad = html.join("under-a-file.xml");
        let e = write_reports(&report, Some(&bad), None).unwrap_err();
        assert!(
            e.starts_with(&format!("--junit {}: ", bad.display())),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
