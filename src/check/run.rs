//! One check from start to end ([`run`]): start or find the service, read
//! it before the warm-up, drive the load through the warm-up and the load
//! phase (heap profiles every few seconds), let it cool down, read it
//! again, stop it, and judge each kind ([`super::verdict`]). Whatever
//! happens, a [`CheckReport`] comes back: with `Outcome::Error` and the
//! reason when the check could not run to its end.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use leakscope_agent::explain::Finding;
use leakscope_agent::explain::counts::{Counted, finding as counts_finding};
use leakscope_agent::explain::format_bytes;
use leakscope_agent::explain::heap::site_trends;

use super::model::{CheckReport, Evidence, LoadSummary, Outcome, Phase, Series};
use super::observe::{Capture, HeapPull, Observer, ThreadsNow, unix_now};
use super::options::{CheckOptions, LoadChoice, TargetChoice, builtin_target};
use super::target::{Spawned, describe_status, service_pid, wait_healthy};
use super::verdict;
use crate::sidecar::remote::{self, Flavor};
use crate::sidecar::threads::{MISSING_GO, compare_dump, compare_names};

/// What a running check tells its caller, for a progress display.
#[derive(Debug, Clone)]
pub enum Event {
    /// A step: the service started, what serves its URL, ...
    Note(String),
    /// A phase began, with its planned length in seconds.
    Phase {
        /// `warm-up`, `load` or `cool-down`.
        name: &'static str,
        /// Planned length.
        seconds: f64,
    },
    /// About every interval during a phase.
    Tick {
        /// The phase.
        phase: &'static str,
        /// Seconds into it.
        elapsed: f64,
        /// Its planned length.
        total: f64,
        /// The latest counters (`threads`, `open_fds`, `heap_bytes`, ...).
        counters: Vec<(String, f64)>,
        /// Requests sent so far (built-in load).
        requests: Option<u64>,
    },
}

/// Receives [`Event`]s.
pub type Events<'a> = &'a (dyn Fn(&Event) + Sync);

/// Seconds of readings before the warm-up, and at the end of the
/// cool-down, whose median is the "before" and "after" of each count (a
/// connection or thread alive for a moment does not count).
const SETTLE: Duration = Duration::from_secs(3);
/// Longest wait for the pprof URL to answer once the service is up.
const PPROF_WAIT: Duration = Duration::from_secs(15);

/// The metrics read, their units, in the order reports show them.
const METRICS: &[(&str, &str)] = &[
    ("threads", ""),
    ("open_fds", ""),
    ("rss_bytes", "bytes"),
    ("heap_bytes", "bytes"),
    ("tokio_tasks", ""),
    ("goroutines", ""),
];

/// Runs one check as `opts` say, telling `events` how it goes.
pub async fn run(opts: &CheckOptions, events: Events<'_>) -> CheckReport {
    let mut report = CheckReport {
        target: describe_target(&opts.target),
        pid: None,
        flavor: "process".into(),
        outcome: Outcome::Error,
        error: None,
        phases: Vec::new(),
        kinds: Vec::new(),
        series: Vec::new(),
        load: LoadSummary {
            source: match &opts.load {
                LoadChoice::Builtin { .. } => "built-in".into(),
                LoadChoice::Command(c) => c.clone(),
            },
            ..LoadSummary::default()
        },
        settings: settings(opts),
    };
    if let Err(e) = opts.validate() {
        report.error = Some(e.0);
        return report;
    }
    let mut service: Option<Spawned> = None;
    let result = checked(opts, events, &mut report, &mut service).await;
    if let Some(s) = service.as_mut() {
        events(&Event::Note("stopping the service".into()));
        if s.stop(opts.stop_grace).await.is_none() {
            events(&Event::Note(format!(
                "the service (pid {}) did not end after SIGKILL",
                s.pid()
            )));
        }
    }
    match result {
        Ok(()) => report.outcome = verdict::outcome(&report.kinds),
        Err(e) => {
            report.outcome = Outcome::Error;
            report.error = Some(e);
        }
    }
    report
}

/// `--spawn`'s command, `pid N`, or the `--name` pattern.
fn describe_target(t: &TargetChoice) -> String {
    match t {
        TargetChoice::Spawn { command, .. } => command.clone(),
        TargetChoice::Pid(p) => format!("pid {p}"),
        TargetChoice::Name(re) => format!("a process matching '{}'", re.as_str()),
    }
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s:.1} s")
    }
}

/// The settings that shape the verdicts, for the reports.
fn settings(opts: &CheckOptions) -> Vec<(String, String)> {
    let b = &opts.budgets;
    let mut out = vec![
        ("warm-up".into(), secs(opts.warmup)),
        ("duration".into(), secs(opts.duration)),
        ("cool-down".into(), secs(opts.cooldown)),
        (
            "budgets".into(),
            format!(
                "heap {}, threads {}, tasks {}, fds {}, goroutines {}",
                format_bytes(b.heap),
                b.threads,
                b.tasks,
                b.fds,
                b.goroutines
            ),
        ),
        ("readings".into(), format!("every {}", secs(opts.interval))),
        (
            "heap profiles".into(),
            format!("every {} of the load", secs(opts.heap_every())),
        ),
    ];
    if let LoadChoice::Builtin {
        entries,
        rate,
        concurrency,
    } = &opts.load
    {
        let pace = rate.map_or("closed loop".to_owned(), |r| format!("{r}/s"));
        out.push((
            "load".into(),
            format!(
                "{} request kind(s), {concurrency} connections, {pace}",
                entries.len()
            ),
        ));
    }
    if let Some(u) = &opts.pprof_url {
        out.push(("pprof URL".into(), u.to_string()));
    }
    out
}

/// The median of the values of `points` with a time in `[from, to]`; the
/// last value at or before `to` when none is.
fn median_in(points: &[(f64, f64)], from: f64, to: f64) -> Option<f64> {
    let mut v: Vec<f64> = points
        .iter()
        .filter(|(t, _)| *t >= from && *t <= to)
        .map(|p| p.1)
        .collect();
    if v.is_empty() {
        return points.iter().rev().find(|(t, _)| *t <= to).map(|p| p.1);
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// The service's state during the phases: is it still there?
struct Watch<'a> {
    observer: &'a Observer,
    service: &'a mut Option<Spawned>,
}

impl Watch<'_> {
    fn alive(&mut self, phase: &str) -> Result<(), String> {
        if let Some(s) = self.service.as_mut()
            && let Some(st) = s.exited()
        {
            return Err(format!(
                "the service exited during the {phase} ({}){}",
                describe_status(st),
                s.tail_block()
            ));
        }
        self.observer
            .alive()
            .map_err(|e| format!("the service cannot be read any more during the {phase}: {e}"))
    }
}

/// The load while it runs.
enum Load {
    Builtin {
        task: tokio::task::JoinHandle<Result<crate::load::LoadReport, crate::load::LoadError>>,
        sent: Arc<AtomicU64>,
    },
    Command(Spawned),
}

fn counters(observer: &Observer) -> Vec<(String, f64)> {
    METRICS
        .iter()
        .filter_map(|(m, _)| {
            let last = observer.series(m).last().map(|p| p.1)?;
            Some(((*m).to_owned(), last))
        })
        .collect()
}

async fn checked(
    opts: &CheckOptions,
    events: Events<'_>,
    report: &mut CheckReport,
    service: &mut Option<Spawned>,
) -> Result<(), String> {
    // The service.
    let pid = match &opts.target {
        TargetChoice::Spawn { command, health } => {
            events(&Event::Note(format!("starting `{command}`")));
            let s = service.insert(Spawned::start(command)?);
            let (url, any) = match (health, &opts.pprof_url) {
                (Some(h), _) => (h.clone(), false),
                (None, Some(p)) => (
                    p.with_path(&format!(
                        "{}/debug/pprof/",
                        remote::base_path(&leakscope_agent::client::Endpoint::new(
                            p.clone(),
                            Default::default()
                        ))
                    )),
                    true,
                ),
                (None, None) => {
                    return Err("--spawn needs --health URL (or --pprof-url)".into());
                }
            };
            let mut alive = || match s.exited() {
                Some(st) => Err(format!(
                    "the service exited ({}) before its health URL answered{}",
                    describe_status(st),
                    s.tail_block()
                )),
                None => Ok(()),
            };
            wait_healthy(&url, any, opts.health_timeout, &mut alive).await?;
            service_pid(s.pid())
        }
        TargetChoice::Pid(p) => *p,
        TargetChoice::Name(re) => crate::sidecar::locate::first(re)
            .ok_or_else(|| format!("no running process matches '{}'", re.as_str()))?,
    };
    report.pid = Some(pid);
    let total = opts.warmup + opts.duration + opts.cooldown + SETTLE * 2;
    let history = (total.as_secs_f64() / opts.interval.as_secs_f64()) as usize + 120;
    let observer = Observer::start(
        pid,
        opts.pprof_url.clone(),
        opts.interval,
        history,
        PPROF_WAIT,
    )
    .await?;
    report.flavor = match observer.flavor {
        Flavor::Agent => "leakscope agent",
        Flavor::Go => "go",
        _ => "process",
    }
    .into();
    events(&Event::Note(format!(
        "reading pid {pid} ({}), every {}",
        match observer.flavor {
            Flavor::Agent => "a leakscope agent at the pprof URL",
            Flavor::Go => "a Go service at the pprof URL",
            Flavor::Other => "the pprof URL serves no counts: /proc only",
            Flavor::Unknown => "no pprof URL: /proc only",
        },
        secs(opts.interval)
    )));
    let mut watch = Watch {
        observer: &observer,
        service,
    };

    // Before the warm-up.
    tokio::time::sleep(SETTLE.max(opts.interval * 3)).await;
    watch.alive("start")?;
    let t_before = unix_now();
    let heap_before = if observer.has_heap() {
        Some(heap_reading(&observer).await?)
    } else {
        None
    };
    let before = observer.capture().await;

    // Warm-up and load.
    let t0 = Instant::now();
    let loaded = opts.warmup + opts.duration;
    let mut load = start_load(opts, loaded)?;
    events(&Event::Phase {
        name: "warm-up",
        seconds: opts.warmup.as_secs_f64(),
    });
    let warm_start = unix_now();
    let sent = |load: &Load| match load {
        Load::Builtin { sent, .. } => Some(sent.load(Ordering::Relaxed)),
        Load::Command(_) => None,
    };
    let mut ended_early: Option<f64> = None;
    while t0.elapsed() < opts.warmup {
        watch.alive("warm-up")?;
        if let Some(early) = load_ended(&mut load, t0)? {
            ended_early = Some(early);
            break;
        }
        events(&Event::Tick {
            phase: "warm-up",
            elapsed: t0.elapsed().as_secs_f64(),
            total: opts.warmup.as_secs_f64(),
            counters: counters(&observer),
            requests: sent(&load),
        });
        sleep_until_next(t0, opts.interval, opts.warmup).await;
    }
    let load_start = unix_now();
    report.phases.push(Phase {
        name: "warm-up".into(),
        start: warm_start,
        end: load_start,
    });
    if let Some(at) = ended_early {
        return Err(format!(
            "the load ended after {at:.1} s, within the warm-up: nothing was loaded to judge \
             (make the load run for --warmup + --duration, {} s)",
            loaded.as_secs_f64()
        ));
    }
    events(&Event::Phase {
        name: "load",
        seconds: opts.duration.as_secs_f64(),
    });
    let heap_every = opts.heap_every();
    let mut heaps: Vec<HeapPull> = Vec::new();
    let mut next_heap = Instant::now();
    let phase_start = Instant::now();
    loop {
        watch.alive("load")?;
        if observer.has_heap() && Instant::now() >= next_heap {
            match observer.heap().await {
                Ok(h) => heaps.push(h),
                Err(e) => events(&Event::Note(format!("a heap profile failed: {e}"))),
            }
            next_heap += heap_every;
        }
        if let Some(at) = load_ended(&mut load, t0)? {
            if at + 0.5 < loaded.as_secs_f64() {
                events(&Event::Note(format!(
                    "the load ended after {at:.1} s, {:.1} s into the load phase",
                    phase_start.elapsed().as_secs_f64()
                )));
            }
            break;
        }
        if t0.elapsed() >= loaded {
            break;
        }
        events(&Event::Tick {
            phase: "load",
            elapsed: phase_start.elapsed().as_secs_f64(),
            total: opts.duration.as_secs_f64(),
            counters: counters(&observer),
            requests: sent(&load),
        });
        let wake = (Instant::now() + opts.interval).min(next_heap.max(Instant::now()));
        let end = t0 + loaded;
        tokio::time::sleep_until(wake.min(end).max(Instant::now()).into()).await;
    }
    // The last heap profile of the load, at its end.
    if observer.has_heap() {
        match observer.heap().await {
            Ok(h) => heaps.push(h),
            Err(e) => events(&Event::Note(format!("a heap profile failed: {e}"))),
        }
    }
    finish_load(opts, load, report).await?;
    let load_end = unix_now();
    report.phases.push(Phase {
        name: "load".into(),
        start: load_start,
        end: load_end,
    });

    // Cool-down.
    events(&Event::Phase {
        name: "cool-down",
        seconds: opts.cooldown.as_secs_f64(),
    });
    let c0 = Instant::now();
    while c0.elapsed() < opts.cooldown {
        watch.alive("cool-down")?;
        events(&Event::Tick {
            phase: "cool-down",
            elapsed: c0.elapsed().as_secs_f64(),
            total: opts.cooldown.as_secs_f64(),
            counters: counters(&observer),
            requests: None,
        });
        sleep_until_next(c0, opts.interval, opts.cooldown).await;
    }
    let t_after = unix_now();
    report.phases.push(Phase {
        name: "cool-down".into(),
        start: load_end,
        end: t_after,
    });

    // After the cool-down.
    let heap_after = if observer.has_heap() {
        Some(heap_reading(&observer).await?)
    } else {
        None
    };
    let after = observer.capture().await;
    let threads_now = observer.threads_now().await;
    watch.alive("last readings")?;

    // The timelines, and the verdicts.
    let settle = SETTLE.as_secs_f64().max(opts.interval.as_secs_f64() * 3.0);
    for (metric, unit) in METRICS {
        let points = observer.series(metric);
        if !points.is_empty() {
            report.series.push(Series {
                metric: (*metric).to_owned(),
                unit: (*unit).to_owned(),
                points,
            });
        }
    }
    let series = |m: &str| {
        report
            .series
            .iter()
            .find(|s| s.metric == m)
            .map(|s| s.points.clone())
            .unwrap_or_default()
    };
    let window = |points: &[(f64, f64)], from: f64, to: f64| -> Vec<(f64, f64)> {
        points
            .iter()
            .copied()
            .filter(|(t, _)| *t >= from && *t <= to)
            .collect()
    };
    let b = &opts.budgets;
    let mut kinds = Vec::new();
    let mut count_kind = |kind: &'static str,
                          unit: &'static str,
                          metric: &str,
                          allowed: f64,
                          found: Option<(Finding, Option<Evidence>)>| {
        let points = series(metric);
        let (Some(before_v), Some(after_v)) = (
            median_in(&points, t_before - settle, t_before),
            median_in(&points, t_after - settle, t_after),
        ) else {
            return;
        };
        let load_points = window(&points, load_start, load_end);
        let (finding, evidence) = match found {
            Some((f, e)) => (Some(f), e),
            None => (None, None),
        };
        let mut v = verdict::counted(verdict::Counted {
            kind,
            unit,
            before: before_v,
            after: after_v,
            load: &load_points,
            allowed,
            finding,
        });
        v.peak = peak(&window(&points, warm_start, load_end), before_v, after_v);
        if v.leaked {
            v.evidence = evidence;
        }
        kinds.push(v);
    };
    let threads_found = threads_finding(&before, threads_now, observer.flavor);
    let fds_found = fds_finding(&before, &after);
    let tasks_found = tasks_finding(&before, &after);
    let goroutines_found = goroutines_finding(&before, &after);
    count_kind("threads", "threads", "threads", b.threads, threads_found);
    if observer.flavor == Flavor::Agent {
        count_kind("tasks", "tasks", "tokio_tasks", b.tasks, tasks_found);
    }
    count_kind("fds", "fds", "open_fds", b.fds, fds_found);
    if observer.flavor == Flavor::Go {
        count_kind(
            "goroutines",
            "goroutines",
            "goroutines",
            b.goroutines,
            goroutines_found,
        );
    }
    if let (Some((bv, bh)), Some((av, ah))) = (heap_before, heap_after) {
        let points = series("heap_bytes");
        let load_points = window(&points, load_start, load_end);
        let snaps: Vec<_> = heaps.iter().map(|h| h.snap.clone()).collect();
        let trends = site_trends(&snaps, 0.0);
        let mut v = verdict::heap(verdict::Heap {
            before: bv,
            after: av,
            load: &load_points,
            allowed: b.heap,
            trends: &trends,
            held: Some(&ah.snap),
        });
        v.peak = peak(&window(&points, warm_start, load_end), bv, av);
        if v.leaked {
            v.evidence = Some(Evidence {
                sample_type: "inuse_space".into(),
                base: bh.data,
                new: ah.data,
            });
        }
        kinds.insert(0, v);
    }
    report.kinds = kinds;
    Ok(())
}

/// The highest of `points` and the two readings.
fn peak(points: &[(f64, f64)], before: f64, after: f64) -> f64 {
    points.iter().map(|p| p.1).fold(before.max(after), f64::max)
}

/// A heap profile and `heap_bytes` read right after it (after the
/// collection a Go service's profile forces).
async fn heap_reading(observer: &Observer) -> Result<(f64, HeapPull), String> {
    let pull = observer
        .heap()
        .await
        .map_err(|e| format!("heap profile: {e}"))?;
    let bytes = match observer.count_now("heap_bytes").await {
        Some(b) => b,
        None => pull.snap.sites.values().map(|v| v[0]).sum::<f64>().max(0.0),
    };
    Ok((bytes, pull))
}

/// Sleeps to the next multiple of `every` since `start`, never past
/// `start + end`.
async fn sleep_until_next(start: Instant, every: Duration, end: Duration) {
    let elapsed = start.elapsed();
    let n = (elapsed.as_secs_f64() / every.as_secs_f64()).floor() + 1.0;
    let next = Duration::from_secs_f64(n * every.as_secs_f64()).min(end);
    tokio::time::sleep_until((start + next).into()).await;
}

/// Starts the load for `length`.
fn start_load(opts: &CheckOptions, length: Duration) -> Result<Load, String> {
    match &opts.load {
        LoadChoice::Builtin {
            entries,
            rate,
            concurrency,
        } => {
            let target = builtin_target(entries).map_err(|e| e.0)?;
            let mut lo = crate::load::LoadOptions::default()
                .concurrency(*concurrency)
                .duration(length);
            lo.rate = *rate;
            let sent = Arc::new(AtomicU64::new(0));
            let task = {
                let sent = sent.clone();
                tokio::spawn(async move {
                    let progress = move |p: &crate::load::Progress| {
                        sent.store(p.sent, Ordering::Relaxed);
                    };
                    crate::load::run(&target, &lo, Some(&progress)).await
                })
            };
            Ok(Load::Builtin { task, sent })
        }
        LoadChoice::Command(c) => Ok(Load::Command(Spawned::start(c)?)),
    }
}

/// `Some(seconds since t0)` when the load ended before its time; an error
/// when a load command failed.
fn load_ended(load: &mut Load, t0: Instant) -> Result<Option<f64>, String> {
    match load {
        Load::Builtin { task, .. } => Ok(task.is_finished().then(|| t0.elapsed().as_secs_f64())),
        Load::Command(s) => match s.exited() {
            None => Ok(None),
            Some(st) if st.success() => Ok(Some(t0.elapsed().as_secs_f64())),
            Some(st) => Err(format!(
                "the load command failed ({}) after {:.1} s{}",
                describe_status(st),
                t0.elapsed().as_secs_f64(),
                s.tail_block()
            )),
        },
    }
}

/// Ends the load (a command still running is stopped) and keeps its
/// summary; an error when it failed.
async fn finish_load(
    opts: &CheckOptions,
    load: Load,
    report: &mut CheckReport,
) -> Result<(), String> {
    match load {
        Load::Builtin { task, .. } => {
            let r = task
                .await
                .map_err(|e| format!("the load generator failed: {e}"))?
                .map_err(|e| e.to_string())?;
            report.load.requests = r.requests;
            report.load.errors = r.failed();
            if !r.latency.is_empty() {
                let ms = |q: f64| r.latency.quantile(q).as_secs_f64() * 1000.0;
                report.load.latency_ms = Some((ms(0.5), ms(0.99)));
            }
            if r.requests > 0 && r.ok == 0 {
                let (kind, n) = r
                    .errors
                    .iter()
                    .max_by_key(|(_, n)| **n)
                    .map_or(("no answer", 0), |(k, n)| (k.as_str(), *n));
                return Err(format!(
                    "every one of the {} load requests failed ({n} with {kind}): is the service \
                     up and the --load URL right?",
                    r.requests
                ));
            }
            Ok(())
        }
        Load::Command(mut s) => {
            let status = s.stop(opts.stop_grace).await;
            report.load.exit_status = status.and_then(|st| st.code());
            report.load.output_tail = s.tail();
            match status {
                Some(st) if !st.success() && !s.stopped_by_us() => Err(format!(
                    "the load command failed ({}){}",
                    describe_status(st),
                    s.tail_block()
                )),
                _ => Ok(()),
            }
        }
    }
}

/// The threads finding: the threads alive now that were not before the
/// warm-up.
fn threads_finding(
    before: &Capture,
    now: Result<ThreadsNow, String>,
    flavor: Flavor,
) -> Option<(Finding, Option<Evidence>)> {
    let tids = before.tids.as_ref().ok()?;
    let at = std::time::SystemTime::now();
    let compared = match now.ok()? {
        ThreadsNow::Dump(d) => {
            let mut c = compare_dump(tids, &d, at);
            for n in &d.notes {
                c.finding.detail.push_str(&format!("; the dump says: {n}"));
            }
            c
        }
        ThreadsNow::Names(names, why) => {
            let missing = if flavor == Flavor::Go {
                MISSING_GO
            } else {
                "read from /proc/PID/task, outside the process: the code a thread runs is not \
                 known from there (a leakscope agent's pprof URL gives it)"
            };
            let mut c = compare_names(tids, &names, missing, at);
            if let Some(why) = why {
                c.finding.detail.push_str(&format!("; {why}"));
            }
            c
        }
    };
    let evidence = Evidence {
        sample_type: "threads".into(),
        base: compared.base.encode_gzip(),
        new: compared.new.encode_gzip(),
    };
    Some((compared.finding, Some(evidence)))
}

/// `counted` without code sites.
fn without_sites(counted: &[Counted]) -> Vec<Counted> {
    counted
        .iter()
        .cloned()
        .map(|mut c| {
            c.site = None;
            c
        })
        .collect()
}

/// The fds finding: the fds open now by what they are (and the code that
/// opened them, with the agent's fd-sites) against before the warm-up.
fn fds_finding(before: &Capture, after: &Capture) -> Option<(Finding, Option<Evidence>)> {
    let (b, b_agent) = before.fds.as_ref().ok()?;
    let (a, a_agent) = after.fds.as_ref().ok()?;
    let (mut bc, mut ac) = (b.counted.clone(), a.counted.clone());
    if b_agent != a_agent {
        bc = without_sites(&bc);
        ac = without_sites(&ac);
    }
    let missing = if *a_agent {
        "the agent's fds profile records no creation sites (the fd-sites feature and its link \
         flags record them)"
    } else {
        "listed from /proc/PID/fd, outside the process: what each fd is, not the code that \
         opened it"
    };
    let f = counts_finding("fds", "fds", &bc, &ac, missing);
    let evidence = Evidence {
        sample_type: "fds".into(),
        base: b.data.clone(),
        new: a.data.clone(),
    };
    Some((f, Some(evidence)))
}

/// The tasks finding (a leakscope agent).
fn tasks_finding(before: &Capture, after: &Capture) -> Option<(Finding, Option<Evidence>)> {
    let b = before.tasks.as_ref()?.as_ref().ok()?;
    let a = after.tasks.as_ref()?.as_ref().ok()?;
    let f = remote::tasks_finding(&b.counted, &a.counted);
    let evidence = Evidence {
        sample_type: "tasks".into(),
        base: b.data.clone(),
        new: a.data.clone(),
    };
    Some((f, Some(evidence)))
}

/// The goroutines finding (a Go service).
fn goroutines_finding(before: &Capture, after: &Capture) -> Option<(Finding, Option<Evidence>)> {
    let (bg, bd) = before.goroutines.as_ref()?.as_ref().ok()?;
    let (ag, ad) = after.goroutines.as_ref()?.as_ref().ok()?;
    let f = crate::sidecar::goroutines::finding(bg, ag);
    let evidence = Evidence {
        sample_type: "goroutine".into(),
        base: bd.clone(),
        new: ad.clone(),
    };
    Some((f, Some(evidence)))
}

#[cfg(test)]
mod tests;
