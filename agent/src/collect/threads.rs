//! Thread dumps in the shape of Go's goroutine profile: a count profile
//! (sample type and period type `threads/count`, period 1) with one sample
//! per distinct (stack, thread name), valued by the number of threads, and
//! a `thread` label; threads that did not answer appear as one sample per
//! name whose only frame is a pseudo frame
//! `<thread did not answer within 200ms>`. A comment gives the totals.
//!
//! The text forms follow Go's too: [`text`] with `debug=1` is the legacy
//! count profile (`threads profile: total N`, `COUNT @ 0x... 0x...`, a
//! `# labels:` line and one `#\tADDRESS\tFUNCTION\tFILE:LINE` line per frame,
//! inlined frames expanded), which `go tool pprof` can also parse; with
//! `debug=2` it is one block per thread like Go's goroutine dump
//! (`thread TID [NAME]:`, then `FUNCTION` and `\tFILE:LINE` per frame).
//! Both are cut at [`MAX_TEXT_BYTES`] with a note saying so.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use crate::collect::cpu::adjust_callers;
use crate::collect::unix_nanos;
use crate::profile::{Profile, ProfileMeta, PseudoFrame, SampleLabel, StackSample, build_profile};
use crate::symbolize::{ProcessMaps, Resolved, Symbolizer};
use crate::threads::{RawThreadDump, ThreadDumpOptions};

/// Largest text form, in bytes; what does not fit is cut with a note.
pub const MAX_TEXT_BYTES: usize = 4 << 20;

/// Takes a thread dump and builds its profile: the one call for code that
/// wants a threads profile as evidence (the watch loop, a test). Blocks for
/// up to the dump's timeout plus symbolization; run it on a plain or
/// blocking thread.
pub fn capture(options: &ThreadDumpOptions, symbolizer: &Symbolizer) -> crate::Result<Profile> {
    crate::threads::dump(options).map(|raw| build(&raw, symbolizer))
}

/// Builds the pprof profile of a thread dump.
pub fn build(dump: &RawThreadDump, symbolizer: &Symbolizer) -> Profile {
    let meta = ProfileMeta {
        sample_types: vec![("threads", "count")],
        period_type: ("threads", "count"),
        period: 1,
        default_sample_type: None,
        time_nanos: unix_nanos(dump.time),
        duration_nanos: i64::try_from(dump.elapsed.as_nanos()).unwrap_or(i64::MAX),
    };
    let mut samples: Vec<StackSample> = groups(dump)
        .into_iter()
        .map(|g| StackSample {
            stack: adjust_callers(g.stack),
            values: vec![count(g.count)],
            labels: vec![SampleLabel::Str("thread", g.name.to_owned())],
            pseudo: Vec::new(),
        })
        .collect();
    let silent = PseudoFrame::named(silent_frame(dump));
    for (name, tids) in unanswered_by_name(dump) {
        samples.push(StackSample {
            stack: Vec::new(),
            values: vec![count(tids.len())],
            labels: vec![SampleLabel::Str("thread", name.to_owned())],
            pseudo: vec![silent.clone()],
        });
    }
    // Mappings are read after the dump so that every address it holds is
    // covered; a failure leaves addresses unsymbolized rather than failing.
    let maps = ProcessMaps::current().unwrap_or_default();
    let mut profile = build_profile(&meta, samples, &maps, symbolizer, None);
    profile.add_comment(&totals(dump));
    profile
}

/// The text form: `debug` 2 or more gives one block per thread, anything
/// else the legacy count profile. At most [`MAX_TEXT_BYTES`] long.
pub fn text(dump: &RawThreadDump, debug: i64, symbolizer: &Symbolizer) -> String {
    let maps = ProcessMaps::current().unwrap_or_default();
    let mut addrs: Vec<u64> = dump
        .threads
        .iter()
        .flat_map(|t| adjust_callers(&t.stack))
        .collect();
    addrs.sort_unstable();
    addrs.dedup();
    let resolved = symbolizer.resolve(&maps, &addrs);
    let frames = Frames {
        maps: &maps,
        resolved: &resolved,
    };
    let mut out = Capped::new(MAX_TEXT_BYTES);
    if debug >= 2 {
        per_thread(dump, &frames, &mut out);
    } else {
        counts(dump, &frames, &mut out);
    }
    out.finish()
}

/// Threads with one stack and one name.
struct Group<'a> {
    stack: &'a [u64],
    name: &'a str,
    count: usize,
}

/// The answered threads grouped by (raw stack, name), largest group first
/// (then by name and stack, so the order is stable).
fn groups(dump: &RawThreadDump) -> Vec<Group<'_>> {
    let mut by_key: HashMap<(&[u64], &str), usize> = HashMap::new();
    for t in &dump.threads {
        *by_key.entry((&t.stack[..], &t.name[..])).or_default() += 1;
    }
    let mut groups: Vec<Group<'_>> = by_key
        .into_iter()
        .map(|((stack, name), count)| Group { stack, name, count })
        .collect();
    groups.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(a.name.cmp(b.name))
            .then(a.stack.cmp(b.stack))
    });
    groups
}

/// Tids (ascending) of the threads that did not answer, by name.
fn unanswered_by_name(dump: &RawThreadDump) -> BTreeMap<&str, Vec<u32>> {
    let mut by_name: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for t in &dump.unanswered {
        by_name.entry(&t.name).or_default().push(t.tid);
    }
    for tids in by_name.values_mut() {
        tids.sort_unstable();
    }
    by_name
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The pseudo frame of threads that did not answer.
fn silent_frame(dump: &RawThreadDump) -> String {
    format!(
        "<thread did not answer within {}ms>",
        dump.timeout.as_millis()
    )
}

/// One line with the dump's totals.
fn totals(dump: &RawThreadDump) -> String {
    format!(
        "leakscope: {} threads, {} answered, {} did not answer within {}ms, {} skipped \
         (limit {}), {} exited during the dump",
        dump.total(),
        dump.threads.len(),
        dump.unanswered.len(),
        dump.timeout.as_millis(),
        dump.skipped,
        dump.max_threads,
        dump.gone
    )
}

/// Symbolized frames of the dump's addresses.
struct Frames<'a> {
    maps: &'a ProcessMaps,
    resolved: &'a HashMap<u64, Resolved>,
}

/// One frame as text: its function (or the address), and where it is
/// (file:line, or the object it is in, or nothing).
struct FrameText {
    function: String,
    place: Option<String>,
}

impl Frames<'_> {
    /// Every frame at the (adjusted) address `addr`, innermost inlined
    /// frame first; one frame naming only the address when nothing is known.
    fn at(&self, addr: u64) -> Vec<FrameText> {
        let resolved = self.resolved.get(&addr);
        let object = resolved
            .and_then(|r| r.mapping)
            .and_then(|i| self.maps.entries.get(i))
            .map(|m| m.path.clone());
        let frames = resolved.map(|r| &r.frames[..]).unwrap_or(&[]);
        if frames.is_empty() {
            return vec![FrameText {
                function: format!("{addr:#x}"),
                place: object,
            }];
        }
        frames
            .iter()
            .map(|f| FrameText {
                function: f.name.to_string(),
                place: match &f.file {
                    Some(file) => Some(format!("{file}:{}", f.line)),
                    None => object.clone(),
                },
            })
            .collect()
    }
}

/// `debug=1`: Go's legacy count profile.
fn counts(dump: &RawThreadDump, frames: &Frames<'_>, out: &mut Capped) {
    let mut head = format!("threads profile: total {}\n", dump.total());
    let _ = writeln!(head, "# {}", totals(dump));
    out.push(&head);
    let groups = groups(dump);
    let left = groups.len();
    for (i, g) in groups.iter().enumerate() {
        let mut block = format!("{} @", g.count);
        for pc in g.stack {
            let _ = write!(block, " {pc:#x}");
        }
        let _ = writeln!(block, "\n# labels: {{\"thread\":{}}}", json(g.name));
        for addr in adjust_callers(g.stack) {
            for f in frames.at(addr) {
                let _ = write!(block, "#\t{addr:#x}\t{}", f.function);
                if let Some(place) = f.place {
                    let _ = write!(block, "\t{place}");
                }
                block.push('\n');
            }
        }
        block.push('\n');
        if !out.push(&block) {
            out.note(&format!(
                "# output cut at {} bytes: {} more stacks not shown; the protobuf form (no debug \
                 parameter) has them all\n",
                MAX_TEXT_BYTES,
                left - i
            ));
            return;
        }
    }
    let silent = unanswered_by_name(dump);
    if silent.is_empty() {
        return;
    }
    let mut block = format!(
        "# {} threads did not answer within {}ms:\n",
        dump.unanswered.len(),
        dump.timeout.as_millis()
    );
    for (name, tids) in silent {
        let tids: Vec<String> = tids.iter().map(u32::to_string).collect();
        let _ = writeln!(
            block,
            "#\t{}\t{}\ttids {}",
            tids.len(),
            name,
            tids.join(" ")
        );
    }
    if !out.push(&block) {
        out.note("# output cut: the list of threads that did not answer is not shown\n");
    }
}

/// `debug=2`: one block per thread, by ascending tid.
fn per_thread(dump: &RawThreadDump, frames: &Frames<'_>, out: &mut Capped) {
    enum Entry<'a> {
        Answered(&'a crate::threads::RawThread),
        Silent(&'a crate::threads::UnansweredThread),
    }
    let mut entries: Vec<(u32, Entry<'_>)> = dump
        .threads
        .iter()
        .map(|t| (t.tid, Entry::Answered(t)))
        .chain(dump.unanswered.iter().map(|t| (t.tid, Entry::Silent(t))))
        .collect();
    entries.sort_by_key(|(tid, _)| *tid);
    let silent = silent_frame(dump);
    let left = entries.len();
    for (i, (tid, entry)) in entries.iter().enumerate() {
        let mut block = String::new();
        match entry {
            Entry::Answered(t) => {
                let _ = writeln!(block, "thread {tid} [{}]:", t.name);
                for addr in adjust_callers(&t.stack) {
                    for f in frames.at(addr) {
                        let _ = writeln!(block, "{}", f.function);
                        let _ = writeln!(block, "\t{}", f.place.as_deref().unwrap_or("?"));
                    }
                }
            }
            Entry::Silent(t) => {
                let _ = writeln!(block, "thread {tid} [{}]:\n{silent}", t.name);
            }
        }
        block.push('\n');
        if !out.push(&block) {
            out.note(&format!(
                "... output cut at {} bytes: {} more threads not shown; the protobuf form (no \
                 debug parameter) has them all\n",
                MAX_TEXT_BYTES,
                left - i
            ));
            return;
        }
    }
    if dump.skipped > 0 {
        out.note(&format!(
            "... {} more threads not dumped (limit of {} threads)\n",
            dump.skipped, dump.max_threads
        ));
    }
}

/// A string as a JSON string literal (Go writes label values with `%q`).
fn json(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

/// Text with a byte limit: whole blocks go in while they fit.
struct Capped {
    text: String,
    limit: usize,
}

impl Capped {
    fn new(limit: usize) -> Capped {
        Capped {
            text: String::new(),
            limit,
        }
    }

    /// Appends `block` if it fits; false (and nothing appended) otherwise.
    fn push(&mut self, block: &str) -> bool {
        if self.text.len() + block.len() > self.limit {
            return false;
        }
        self.text.push_str(block);
        true
    }

    /// Appends a closing note, beyond the limit if need be (it is short).
    fn note(&mut self, note: &str) {
        self.text.push_str(note);
    }

    fn finish(self) -> String {
        self.text
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::threads::{RawThread, UnansweredThread};

    #[inline(never)]
    fn marker_for_thread_text() -> u64 {
        std::hint::black_box(7) * 3
    }

    fn fake_dump(threads: Vec<RawThread>, unanswered: Vec<UnansweredThread>) -> RawThreadDump {
        RawThreadDump {
            time: SystemTime::now(),
            threads,
            unanswered,
            gone: 0,
            skipped: 0,
            max_threads: crate::threads::MAX_THREADS,
            timeout: Duration::from_millis(200),
            elapsed: Duration::from_millis(1),
        }
    }

    fn thread(tid: u32, name: &str, stack: Vec<u64>) -> RawThread {
        RawThread {
            tid,
            name: name.into(),
            stack,
        }
    }

    #[test]
    fn groups_are_largest_first_and_silent_threads_grouped_by_name() {
        let pc = marker_for_thread_text as *const () as usize as u64;
        let dump = fake_dump(
            vec![
                thread(5, "one", vec![pc, pc + 8]),
                thread(6, "two", vec![pc, pc + 16]),
                thread(7, "two", vec![pc, pc + 16]),
            ],
            vec![
                UnansweredThread {
                    tid: 9,
                    name: "deaf".into(),
                },
                UnansweredThread {
                    tid: 8,
                    name: "deaf".into(),
                },
            ],
        );
        let g = groups(&dump);
        assert_eq!(
            g.iter().map(|g| (g.name, g.count)).collect::<Vec<_>>(),
            [("two", 2), ("one", 1)]
        );
        let p = build(&dump, Symbolizer::global());
        p.validate().expect("valid");
        let values: Vec<i64> = p.sample.iter().map(|s| s.value[0]).collect();
        assert_eq!(values, [2, 1, 2]);
        let silent = &p.sample[2];
        assert_eq!(silent.location_id.len(), 1);
        assert_eq!(p.location[silent.location_id[0] as usize - 1].address, 0);

        let text = text(&dump, 1, Symbolizer::global());
        let first = text.lines().nth(2).expect("a group");
        assert_eq!(first, format!("2 @ {:#x} {:#x}", pc, pc + 16));
        assert!(text.contains("marker_for_thread_text\t"), "{text}");
        assert!(text.ends_with("#\t2\tdeaf\ttids 8 9\n"), "{text}");
    }

    #[test]
    fn text_is_cut_at_the_byte_limit_with_a_note() {
        let pc = marker_for_thread_text as *const () as usize as u64;
        let stack: Vec<u64> = (0..crate::cpu::unwind::MAX_DEPTH as u64)
            .map(|i| pc + i)
            .collect();
        let threads: Vec<RawThread> = (0..3000)
            .map(|tid| thread(tid, "many", stack.clone()))
            .collect();
        let dump = fake_dump(threads, Vec::new());
        let text = text(&dump, 2, Symbolizer::global());
        let (body, note) = text.split_at(text.rfind("... output cut").expect("a note"));
        assert!(body.len() <= MAX_TEXT_BYTES, "{}", body.len());
        let shown = body.matches("thread ").count();
        assert!(shown > 0 && shown < 3000, "{shown}");
        assert!(
            note.contains(&format!("{} more threads not shown", 3000 - shown)),
            "{note}"
        );
    }
}
