//! `leakscope load URL[=WEIGHT] ...`: puts an HTTP service under load (see
//! `leakscope::load`), shows progress on stderr and prints the summary on
//! stdout. Exits 1 when every request failed.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::bail;
use leakscope::load::{self, LoadError, LoadOptions, Progress, Target};

use super::watch::parse_duration;

/// How long the load runs when neither `--duration` nor `--requests` is
/// given.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// Settings of `leakscope load`.
#[derive(Debug, Clone, clap::Args)]
// `{n}` is clap's newline in help texts, with no escape; an empty style
// between its characters (stripped when stdout is not a terminal) keeps it
// literal.
#[command(after_help = "\
Examples:
  leakscope load http://127.0.0.1:6060/leak/heap?kb=64 --requests 1000
  leakscope load http://127.0.0.1:8080/ --rate 200 --duration 1m -c 16
  leakscope load 'http://127.0.0.1:8080/items/{\x1b[0mn}=20' \\
      'POST http://127.0.0.1:8080/orders=1' --body '{\"customer\":\"c{\x1b[0mn}\"}'

Each URL may end in =WEIGHT, its share of the requests (default 1), and start
with a method (GET, POST, PUT, PATCH, DELETE; quote the pair). {\x1b[0mn} in a URL or
the body is the request's number (1, 2, ...). Every URL must be on one server.
With several, the summary breaks requests and errors down per URL.

Without --rate, each connection sends its next request as soon as the previous
answer arrived (closed loop), and latency counts from the send. With --rate,
request number n is due n/rate seconds after the start and never sent earlier;
when slow answers hold every connection up, the requests that fall due meanwhile
go out late and their latency counts from their due time: they carry the wait,
and a stall shows in p99 instead of hiding in requests never sent. The summary shows
the rate achieved and, in paced mode, the service time from the actual send.
Without --duration and --requests, the load runs for 10s; with both, the first
bound reached ends it.

Exit status: 0 when at least one request succeeded (2xx), 1 when all failed or
the load could not start, 2 on bad usage.")]
pub struct LoadArgs {
    /// What to request: `[METHOD ]URL[=WEIGHT]`, an http:// URL with its
    /// path and query, all on one server (repeatable).
    #[arg(required = true, value_name = "[METHOD ]URL[=WEIGHT]")]
    pub urls: Vec<String>,
    /// The body of the requests whose method sends one (POST, PUT, PATCH);
    /// sent as JSON when it starts with `{` or `[`.
    #[arg(long, value_name = "BODY")]
    pub body: Option<String>,
    /// Connections, each with one request in flight at a time.
    #[arg(short = 'c', long, value_name = "N", default_value_t = LoadOptions::DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// Requests per second in total, on a fixed schedule; latency counts
    /// from each request's due time, so stalls are not hidden (default: a
    /// closed loop, as fast as answers come, latency from the send).
    #[arg(long, value_name = "PER_SECOND")]
    pub rate: Option<f64>,
    /// Stop sending after this long (default 10s unless --requests is given).
    #[arg(short = 'd', long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many requests in total.
    #[arg(short = 'n', long, value_name = "N")]
    pub requests: Option<u64>,
    /// Limit of each request, connecting included.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Runs `leakscope load`.
pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    let target = target(&args.urls, args.body.as_deref())?;
    let mut opts = LoadOptions::default()
        .concurrency(args.concurrency)
        .timeout(args.timeout);
    opts.rate = args.rate;
    opts.duration = args.duration;
    opts.requests = args.requests;
    if opts.duration.is_none() && opts.requests.is_none() {
        opts.duration = Some(DEFAULT_DURATION);
    }
    let printer = ProgressLine::new(std::io::stderr().is_terminal());
    eprintln!("load: {target}, {}", describe(&opts));
    let show = |p: &Progress| printer.show(p);
    let report = load::run(&target, &opts, Some(&show)).await?;
    printer.finish();
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(report.summary().as_bytes())
        .and_then(|()| stdout.flush())
    {
        // A closed pipe (`| head`) is not a failure of the load.
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e.into());
        }
    }
    if report.requests > 0 && report.ok == 0 {
        let (kind, n) = report
            .errors
            .iter()
            .max_by_key(|(_, n)| **n)
            .map_or(("no answer", 0), |(k, n)| (k.as_str(), *n));
        bail!(
            "all {} requests to {target} failed ({n} with {kind}): is the service up and the path right?",
            report.requests
        );
    }
    Ok(())
}

/// The target of the command line's entries: the mix of
/// `leakscope check --load`, parsed by the same code.
fn target(specs: &[String], body: Option<&str>) -> anyhow::Result<Target> {
    let entries = specs
        .iter()
        .map(|spec| load::parse_entry(spec, body))
        .collect::<Result<Vec<_>, _>>()?;
    match Target::from_entries(&entries) {
        Err(LoadError::ManyServers { url, first }) => bail!(
            "{url} is not on {first}, the server of the first URL: one load runs against one \
             server, so start one `leakscope load` per server"
        ),
        target => Ok(target?),
    }
}

/// `8 connections, closed loop, for 10.00s` and the like.
fn describe(opts: &LoadOptions) -> String {
    let pace = match opts.rate {
        Some(rate) => format!("{rate}/s"),
        None => "closed loop".to_owned(),
    };
    let bound = match (opts.duration, opts.requests) {
        (Some(d), Some(n)) => format!("{n} requests or {d:?}, whichever comes first"),
        (Some(d), None) => format!("for {d:?}"),
        (None, Some(n)) => format!("{n} requests"),
        (None, None) => String::new(),
    };
    format!("{} connections, {pace}, {bound}", opts.concurrency)
}

/// The progress display on stderr: one line rewritten in place on a
/// terminal every 0.5 s, otherwise a new line every 2 s.
struct ProgressLine {
    tty: bool,
    /// When the last line was printed (as elapsed load time), and whether
    /// a line is open on the terminal.
    last: Mutex<(Option<Duration>, bool)>,
}

impl ProgressLine {
    fn new(tty: bool) -> ProgressLine {
        ProgressLine {
            tty,
            last: Mutex::new((None, false)),
        }
    }

    fn every(&self) -> Duration {
        if self.tty {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(2)
        }
    }

    fn show(&self, p: &Progress) {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.0.is_some_and(|at| p.elapsed < at + self.every()) {
            return;
        }
        last.0 = Some(p.elapsed);
        let secs = p.elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            p.sent as f64 / secs
        } else {
            0.0
        };
        let line = format!(
            "{:.1}s: {} sent, {} ok, {} errors, {rate:.0}/s",
            secs, p.sent, p.ok, p.errors
        );
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            last.1 = true;
            write!(err, "\r{line}\x1b[K")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }

    /// Clears the line open on the terminal, if any: the summary follows.
    fn finish(&self) {
        let last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.1 {
            eprint!("\r\x1b[K");
        }
    }
}
