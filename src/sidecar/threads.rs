//! The threads of a watched process, as the sidecar can know them: a
//! leakscope agent's thread dump, or the names in `/proc/PID/task`; and
//! each thread reduced to *what* it is and *where* (the program's own code
//! it runs), for [`explain::counts`]. Pure code, but for the two /proc reads.
//!
//! A leakscope agent serves `/debug/pprof/threads?debug=2` (its
//! `collect::threads` module writes it): one block per thread, by tid,
//! separated by blank lines, and notes at the end when the text was cut:
//!
//! ```text
//! thread 4242 [leaky-thread]:
//! syscall
//!         /usr/lib/x86_64-linux-gnu/libc.so.6
//! std::thread::park
//!         /rustc/<hash>/library/std/src/thread/mod.rs:1449
//! leakscope::leaky::leak_thread::{{closure}}::{{closure}}
//!         /src/leaky.rs:71
//!
//! thread 4250 [deaf]:
//! <thread did not answer within 200ms>
//!
//! ... output cut at 4194304 bytes: 12 more threads not shown; ...
//! ```
//!
//! Frames go from the innermost call down, each a function line (the
//! address, `0x...`, when nothing is known) and a tab-indented place:
//! `FILE:LINE`, the object the address is in when there is no line table,
//! or `?`. A thread that did not answer the dump's signal has one line in
//! angle brackets instead. A thread is named by the first frame of the
//! program's own code from the top ([`own_frame`]); a place without a line
//! is no file (library code, as the agent itself treats it). A stack with
//! a frame of leakscope's own code (the thread serving the dump) is the
//! agent's, and left out of the counts.
//!
//! From outside, without an agent, only the thread names (`comm`) are
//! known; numbers in them are folded (`conn-17` → `conn-N`) so the threads
//! of one pool group together.
//!
//! [`explain::counts`]: leakscope_agent::explain::counts

use std::collections::{BTreeMap, HashSet};
use std::time::SystemTime;

use leakscope_agent::explain::Site;
use leakscope_agent::explain::counts::Counted;
use leakscope_agent::explain::frames::{is_agent_function, own_frame};
use leakscope_agent::profile::{
    Profile, ProfileMeta, PseudoFrame, SampleLabel, StackSample, build_profile,
};
use leakscope_agent::symbolize::{ProcessMaps, Symbolizer};

/// Most threads read from `/proc/PID/task` (the agent dumps at most as
/// many).
pub const MAX_THREADS: usize = 10_000;

/// One thread of an agent's dump.
#[derive(Debug, Clone, PartialEq)]
pub struct DumpedThread {
    /// Its id (the kernel's tid).
    pub tid: u32,
    /// Its name (`comm`).
    pub name: String,
    /// Its frames, innermost first; `file` is empty and `line` 0 when the
    /// place has no line.
    pub frames: Vec<Site>,
    /// Why it has no stack (`<thread did not answer within 200ms>`).
    pub silent: Option<String>,
}

/// An agent's thread dump, read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ThreadDump {
    /// Every thread listed.
    pub threads: Vec<DumpedThread>,
    /// The notes after the blocks: the text was cut, threads were skipped.
    pub notes: Vec<String>,
}

/// Why a text is not a thread dump.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a thread dump (debug=2): {0}; is the pprof URL a leakscope agent's, built with the cpu feature?"
)]
pub struct ParseError(String);

/// Reads a `debug=2` thread dump. Lines it does not understand inside a
/// block are kept as frames without a place; a text with no `thread N
/// [NAME]:` line at all is an error.
pub fn parse(text: &str) -> Result<ThreadDump, ParseError> {
    let mut dump = ThreadDump::default();
    let mut current: Option<DumpedThread> = None;
    // A function line waiting for its place.
    let mut pending: Option<String> = None;
    let flush = |t: &mut DumpedThread, pending: &mut Option<String>| {
        if let Some(function) = pending.take() {
            t.frames.push(Site {
                function,
                file: String::new(),
                line: 0,
            });
        }
    };
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(t) = header(line) {
            if let Some(mut done) = current.take() {
                flush(&mut done, &mut pending);
                dump.threads.push(done);
            }
            current = Some(t);
            continue;
        }
        if line.trim().is_empty() {
            if let Some(mut done) = current.take() {
                flush(&mut done, &mut pending);
                dump.threads.push(done);
            }
            continue;
        }
        let Some(t) = current.as_mut() else {
            if line.starts_with("...") {
                dump.notes
                    .push(line.trim_start_matches('.').trim().to_owned());
            }
            continue;
        };
        if let Some(place) = line.strip_prefix('\t') {
            if let Some(function) = pending.take() {
                let (file, line) = split_place(place);
                t.frames.push(Site {
                    function,
                    file,
                    line,
                });
            }
            continue;
        }
        flush(t, &mut pending);
        if line.starts_with('<') && line.ends_with('>') && t.frames.is_empty() {
            t.silent = Some(line.to_owned());
        } else {
            pending = Some(line.trim().to_owned());
        }
    }
    if let Some(mut done) = current.take() {
        flush(&mut done, &mut pending);
        dump.threads.push(done);
    }
    if dump.threads.is_empty() && !text.trim().is_empty() {
        let first = super::goroutines::opening(text);
        return Err(ParseError(format!(
            "no `thread N [NAME]:` line; it starts {first:?}"
        )));
    }
    Ok(dump)
}

/// `thread 4242 [leaky-thread]:` → the thread, without frames. The name is
/// everything between the first `[` and the last `]:` (a name may hold
/// brackets).
fn header(line: &str) -> Option<DumpedThread> {
    let rest = line.strip_prefix("thread ")?;
    let (tid, rest) = rest.split_once(' ')?;
    let tid = tid.parse().ok()?;
    let name = rest.strip_prefix('[')?.strip_suffix("]:")?;
    Some(DumpedThread {
        tid,
        name: name.to_owned(),
        frames: Vec::new(),
        silent: None,
    })
}

/// A place: `FILE:LINE` → (file, line); an object or `?` → no file.
fn split_place(place: &str) -> (String, i64) {
    let place = place.trim();
    match place.rsplit_once(':') {
        Some((file, line)) if !file.is_empty() => match line.parse() {
            Ok(n) => (file.to_owned(), n),
            Err(_) => (String::new(), 0),
        },
        _ => (String::new(), 0),
    }
}

/// What a thread named `name` is, for a finding: `thread 'conn-N'`.
pub fn thread_what(name: &str) -> String {
    format!(
        "thread '{}'",
        leakscope_agent::explain::counts::fold_digits(name)
    )
}

impl DumpedThread {
    /// The thread reduced: what it is (its folded name, or why it has no
    /// stack) and the program's own code it runs in.
    pub fn counted(&self) -> Counted {
        let frames = || self.frames.iter();
        let site = own_frame(frames().map(|f| (f.function.as_str(), f.file.as_str())))
            .map(|i| self.frames[i].clone());
        Counted {
            what: self
                .silent
                .clone()
                .unwrap_or_else(|| thread_what(&self.name)),
            site,
            count: 1.0,
            agent: frames().any(|f| is_agent_function(&f.function)),
        }
    }
}

/// The ids of the threads of `pid`, from `/proc/PID/task` (at most
/// [`MAX_THREADS`]). Sends nothing to the process.
pub fn read_tids(pid: u32) -> std::io::Result<HashSet<u32>> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task"))?;
    Ok(dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .take(MAX_THREADS)
        .collect())
}

/// Every thread of `pid` with its name (`/proc/PID/task/TID/comm`), at most
/// [`MAX_THREADS`]; a thread that ends between the two reads is left out.
pub fn read_names(pid: u32) -> std::io::Result<Vec<(u32, String)>> {
    let mut out = Vec::new();
    for tid in read_tids(pid)? {
        if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")) {
            out.push((tid, comm.trim_end_matches('\n').to_owned()));
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// A thread as a sample of a stored profile: its name and its frames.
pub struct ThreadSample<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its frames, innermost first (none from /proc).
    pub frames: &'a [Site],
    /// Its one pseudo frame when it has no frames: why (a silent thread),
    /// or what it is (a name read from /proc).
    pub label: Option<String>,
}

/// A `threads/count` profile of `threads` (one sample per distinct name and
/// stack), for the store and the viewer. The sidecar has no addresses from
/// outside: each frame is a location of its own without one, with its
/// function, file and line.
pub fn profile<'a>(threads: impl IntoIterator<Item = ThreadSample<'a>>, at: SystemTime) -> Profile {
    let mut groups: BTreeMap<(&str, &[Site], Option<String>), i64> = BTreeMap::new();
    for t in threads {
        *groups.entry((t.name, t.frames, t.label)).or_default() += 1;
    }
    let meta = ProfileMeta {
        sample_types: vec![("threads", "count")],
        period_type: ("threads", "count"),
        period: 1,
        default_sample_type: None,
        time_nanos: at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
        duration_nanos: 0,
    };
    let samples = groups
        .into_iter()
        .map(|((name, frames, label), n)| {
            let mut pseudo: Vec<PseudoFrame> = frames
                .iter()
                .map(|f| PseudoFrame {
                    name: f.function.clone(),
                    file: (!f.file.is_empty()).then(|| f.file.clone()),
                    line: u32::try_from(f.line).unwrap_or(0),
                })
                .collect();
            pseudo.extend(label.map(PseudoFrame::named));
            StackSample {
                stack: Vec::new(),
                values: vec![n],
                labels: vec![SampleLabel::Str("thread", name.to_owned())],
                pseudo,
            }
        })
        .collect();
    build_profile(
        &meta,
        samples,
        &ProcessMaps::default(),
        Symbolizer::global(),
        None,
    )
}

/// A dumped thread as a sample of a profile.
fn dumped(d: &DumpedThread) -> ThreadSample<'_> {
    ThreadSample {
        name: &d.name,
        frames: &d.frames,
        label: d.silent.clone(),
    }
}

/// A thread known by name only as a sample of a profile.
fn named((_, name): &(u32, String)) -> ThreadSample<'_> {
    ThreadSample {
        name,
        frames: &[],
        label: Some(thread_what(name)),
    }
}

/// Said of threads that grew when they run only library code (an agent's
/// dump).
pub const LIBRARY_ONLY: &str =
    "they run only library code (no frame of the program's own on their stacks)";
/// Said of a Go service's threads, which are known by name only.
pub const MISSING_GO: &str = "a Go service's OS threads carry the program's name and run \
     goroutines of any code; the goroutines name the code";

/// Two thread readings compared: the finding, and the two `threads/count`
/// profiles it compared (for the store, the viewer and reports).
#[derive(Debug, Clone)]
pub struct Compared {
    /// What grew ([`explain::counts::finding`]).
    ///
    /// [`explain::counts::finding`]: leakscope_agent::explain::counts::finding
    pub finding: leakscope_agent::explain::Finding,
    /// The threads alive at the earlier reading, as they are now.
    pub base: Profile,
    /// Every thread now.
    pub new: Profile,
}

/// The threads of an agent's `dump` that were not alive at an earlier
/// reading of the thread ids `tids`, by the code they run: the base is the
/// threads of `tids` as they are in the dump, so a thread that was there
/// and is still there never counts.
pub fn compare_dump(tids: &HashSet<u32>, dump: &ThreadDump, at: SystemTime) -> Compared {
    let before: Vec<&DumpedThread> = dump
        .threads
        .iter()
        .filter(|d| tids.contains(&d.tid))
        .collect();
    let b: Vec<Counted> = before.iter().map(|d| d.counted()).collect();
    let n: Vec<Counted> = dump.threads.iter().map(DumpedThread::counted).collect();
    let all: Vec<&DumpedThread> = dump.threads.iter().collect();
    Compared {
        finding: leakscope_agent::explain::counts::finding(
            "threads",
            "threads",
            &b,
            &n,
            LIBRARY_ONLY,
        ),
        base: profile(before.iter().map(|d| dumped(d)), at),
        new: profile(all.iter().map(|d| dumped(d)), at),
    }
}

/// The threads of `names` (from `/proc/PID/task`) that were not alive at
/// an earlier reading of the thread ids `tids`, by name (numbers folded);
/// `missing` says why their code is not known.
pub fn compare_names(
    tids: &HashSet<u32>,
    names: &[(u32, String)],
    missing: &str,
    at: SystemTime,
) -> Compared {
    let counted_of = |(_, name): &&(u32, String)| Counted {
        what: thread_what(name),
        site: None,
        count: 1.0,
        agent: false,
    };
    let before: Vec<&(u32, String)> = names.iter().filter(|(tid, _)| tids.contains(tid)).collect();
    let all: Vec<&(u32, String)> = names.iter().collect();
    let b: Vec<Counted> = before.iter().map(counted_of).collect();
    let n: Vec<Counted> = all.iter().map(counted_of).collect();
    Compared {
        finding: leakscope_agent::explain::counts::finding("threads", "threads", &b, &n, missing),
        base: profile(before.iter().map(|t| named(t)), at),
        new: profile(all.iter().map(|t| named(t)), at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shapes the agent writes (see the module docs), by hand.
    const SHAPES: &str = "thread 7 [main]:\n\
        0x7f00aa\n\
        \t/usr/lib/x86_64-linux-gnu/libc.so.6\n\
        std::thread::park\n\
        \t/rustc/abc/library/std/src/thread/mod.rs:1449\n\
        app::pool::worker::{{closure}}\n\
        \t/srv/app/src/pool.rs:42\n\
        app::main\n\
        \t/srv/app/src/main.rs:9\n\
        \n\
        thread 8 [conn-17]:\n\
        leakscope_agent::http::pprof::threads_profile\n\
        \t/work/agent/src/http/pprof.rs:140\n\
        app::serve\n\
        \t/srv/app/src/main.rs:30\n\
        \n\
        thread 9 [odd ]name]:\n\
        <thread did not answer within 200ms>\n\
        \n\
        thread 10 [conn-2]:\n\
        __futex_wait\n\
        \t?\n\
        orphan_without_place\n\
        \n\
        ... output cut at 4194304 bytes: 3 more threads not shown; the protobuf form (no debug parameter) has them all\n";

    #[test]
    fn reads_every_shape() {
        let d = parse(SHAPES).expect("a dump");
        assert_eq!(d.threads.len(), 4, "{d:#?}");
        let main = &d.threads[0];
        assert_eq!((main.tid, main.name.as_str()), (7, "main"));
        assert_eq!(main.frames.len(), 4);
        // An object or no place: no file.
        assert_eq!((main.frames[0].file.as_str(), main.frames[0].line), ("", 0));
        assert_eq!(main.frames[2].function, "app::pool::worker::{{closure}}");
        assert_eq!(
            (main.frames[2].file.as_str(), main.frames[2].line),
            ("/srv/app/src/pool.rs", 42)
        );
        assert_eq!(d.threads[2].name, "odd ]name");
        assert_eq!(
            d.threads[2].silent.as_deref(),
            Some("<thread did not answer within 200ms>")
        );
        assert!(d.threads[2].frames.is_empty());
        let last = &d.threads[3];
        assert_eq!(last.frames.len(), 2);
        assert_eq!(last.frames[1].function, "orphan_without_place");
        assert_eq!(d.notes.len(), 1);
        assert!(d.notes[0].starts_with("output cut at 4194304 bytes: 3 more threads"));
        // CRLF, and text that is no dump.
        let crlf = parse("thread 1 [a]:\r\nf\r\n\t/a.rs:3\r\n").expect("crlf");
        assert_eq!(crlf.threads[0].frames[0].line, 3);
        assert!(parse("").expect("empty").threads.is_empty());
        let e = parse("goroutine 1 [running]:\n").unwrap_err();
        assert!(e.to_string().contains("not a thread dump"), "{e}");
    }

    #[test]
    fn counted_by_own_frame_and_folded_name() {
        let d = parse(SHAPES).expect("a dump");
        let c: Vec<Counted> = d.threads.iter().map(DumpedThread::counted).collect();
        // Library frames are skipped to the program's own.
        let site = c[0].site.as_ref().expect("own frame");
        assert_eq!(site.function, "app::pool::worker::{{closure}}");
        assert_eq!(c[0].what, "thread 'main'");
        assert!(!c[0].agent);
        // The thread serving the dump is the agent's.
        assert!(c[1].agent);
        assert_eq!(c[1].what, "thread 'conn-N'");
        assert_eq!(c[2].what, "<thread did not answer within 200ms>");
        assert_eq!(c[2].site, None);
        // Nothing of the program's own: no site.
        assert_eq!(c[3].site, None);
        assert_eq!(thread_what("w1x22"), "thread 'wNxN'");
        assert_eq!(thread_what("tokio-runtime-w"), "thread 'tokio-runtime-w'");
    }

    #[test]
    fn a_profile_of_frames_without_addresses() {
        let d = parse(SHAPES).expect("a dump");
        let p = profile(
            d.threads.iter().map(|t| ThreadSample {
                name: &t.name,
                frames: &t.frames,
                label: t.silent.clone(),
            }),
            SystemTime::now(),
        );
        p.validate().expect("a valid profile");
        assert_eq!(p.sample.iter().map(|s| s.value[0]).sum::<i64>(), 4);
        let index = leakscope_agent::profile::ProfileIndex::new(&p);
        let named = p.sample.iter().any(|s| {
            index
                .frames(s)
                .iter()
                .any(|f| f.function == "app::pool::worker::{{closure}}" && f.line == 42)
        });
        assert!(named, "{p:#?}");
    }

    #[test]
    fn reads_this_process_from_proc() {
        let me = std::process::id();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::Builder::new()
            .name("probe-worker-7".into())
            .spawn(move || {
                // The thread names itself once running.
                let _ = ready_tx.send(());
                let _ = rx.recv();
            })
            .expect("thread");
        ready.recv().expect("the worker runs");
        let tids = read_tids(me).expect("tids");
        assert!(tids.contains(&me), "{tids:?}");
        let names = read_names(me).expect("names");
        assert!(
            names.iter().any(|(_, n)| n == "probe-worker-7"),
            "{names:?}"
        );
        assert!(
            names
                .iter()
                .all(|(tid, _)| tids.contains(tid) || *tid != me)
        );
        drop(tx);
        worker.join().expect("join");
        assert!(read_tids(u32::MAX).is_err());
    }

    /// A real dump of this process, as the agent writes it: the format the
    /// parser reads is the one the agent writes.
    #[cfg(feature = "cpu")]
    #[test]
    #[inline(never)]
    fn reads_a_real_agent_dump() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::Builder::new()
            .name("dump-probe-3".into())
            .spawn(move || {
                let _ = ready_tx.send(());
                let _ = rx.recv();
            })
            .expect("thread");
        ready.recv().expect("the worker runs");
        let options = leakscope_agent::threads::ThreadDumpOptions::default();
        let raw = leakscope_agent::threads::dump(&options).expect("a thread dump");
        let text = leakscope_agent::collect::threads::text(&raw, 2, Symbolizer::global());
        drop(tx);
        worker.join().expect("join");
        let d = parse(&text).expect("the agent's text");
        assert_eq!(d.threads.len(), raw.total(), "{text}");
        let probe = d
            .threads
            .iter()
            .find(|t| t.name == "dump-probe-3")
            .unwrap_or_else(|| panic!("the probe thread in:\n{text}"));
        // The probe runs this test's closure, at the line that waits: code
        // of leakscope's own sidecar, so the agent's side of the counts.
        let frame = probe
            .frames
            .iter()
            .find(|f| f.function.contains("reads_a_real_agent_dump"))
            .unwrap_or_else(|| panic!("{probe:#?}"));
        assert!(frame.file.ends_with("src/sidecar/threads.rs"), "{frame}");
        assert!(frame.line > 0, "{frame}");
        assert!(probe.counted().agent, "{probe:#?}");
    }
}
