//! Parser of jemalloc's `heap_v2` heap dump text (what `prof.dump` writes).
//!
//! The format, as written by jemalloc 5.3 (`prof_data.c`):
//!
//! ```text
//! heap_v2/524288
//!   t*: 28106: 56637512 [0: 0]
//!   t0: 28106: 56637512 [0: 0] optional-thread-name
//!   [...]
//! @ 0x7f1c 0x4a3b [...]
//!   t*: 13: 6688 [0: 0]
//!   t3: 12: 6496 [0: 0]
//!   [...]
//!
//! MAPPED_LIBRARIES:
//! [copy of /proc/self/maps]
//! ```
//!
//! Counts are `<curobjs>: <curbytes> [<accumobjs>: <accumbytes>]`. Only the
//! `t*` (all threads) line of each stack is kept; per-thread lines are
//! skipped, and parsing stops at `MAPPED_LIBRARIES:`.

use std::time::SystemTime;

use super::{RawHeapProfile, RawHeapSample};
use crate::error::{Error, Result};

const HEADER_PREFIX: &str = "heap_v2/";
const MAPS_SENTINEL: &str = "MAPPED_LIBRARIES:";

/// Counts of one `t*:` or `t<N>:` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    cur_objs: u64,
    cur_bytes: u64,
    accum_objs: u64,
    accum_bytes: u64,
}

fn err(line: usize, message: impl Into<String>) -> Error {
    Error::HeapDumpParse {
        line,
        message: message.into(),
    }
}

/// Parses a whole dump. See the module documentation for the format.
pub(super) fn parse(text: &str) -> Result<RawHeapProfile> {
    // Line numbers are 1-based.
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));

    let (n, header) = lines
        .next()
        .ok_or_else(|| err(1, "empty dump: expected `heap_v2/<sample interval>`"))?;
    let period = parse_header(n, header)?;

    let (n, totals) = lines
        .next()
        .ok_or_else(|| err(n + 1, "unexpected end of dump: expected the `t*:` totals"))?;
    match totals.trim().strip_prefix("t*:") {
        Some(rest) => {
            parse_counts(n, rest)?;
        }
        None => {
            return Err(err(
                n,
                format!("expected the `t*:` totals, found {totals:?}"),
            ));
        }
    }

    let mut samples = Vec::new();
    while let Some((n, line)) = lines.next() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        if trimmed.starts_with(MAPS_SENTINEL) {
            break;
        }
        if let Some(addrs) = trimmed.strip_prefix('@') {
            let stack = parse_stack(n, addrs)?;
            let Some((m, counts_line)) = lines.next() else {
                return Err(err(
                    n + 1,
                    format!(
                        "unexpected end of dump: expected `t*:` counts for the stack on line {n}"
                    ),
                ));
            };
            let Some(rest) = counts_line.trim().strip_prefix("t*:") else {
                return Err(err(
                    m,
                    format!(
                        "expected `t*:` counts for the stack on line {n}, found {counts_line:?}"
                    ),
                ));
            };
            let c = parse_counts(m, rest)?;
            samples.push(RawHeapSample {
                stack,
                inuse_objects: c.cur_objs,
                inuse_bytes: c.cur_bytes,
                alloc_objects: c.accum_objs,
                alloc_bytes: c.accum_bytes,
            });
            continue;
        }
        if is_thread_line(trimmed) {
            continue;
        }
        return Err(err(
            n,
            format!(
                "expected a stack (`@ 0x...`), a `t<N>:` thread line or `{MAPS_SENTINEL}`, found {line:?}"
            ),
        ));
    }

    Ok(RawHeapProfile {
        period,
        samples,
        time: SystemTime::now(),
    })
}

fn parse_header(n: usize, line: &str) -> Result<u64> {
    let Some(rest) = line.trim().strip_prefix(HEADER_PREFIX) else {
        return Err(err(
            n,
            format!("expected `{HEADER_PREFIX}<sample interval>`, found {line:?}"),
        ));
    };
    rest.parse::<u64>().map_err(|e| {
        err(
            n,
            format!("expected a sample interval after `{HEADER_PREFIX}`, found {rest:?} ({e})"),
        )
    })
}

/// `t<digits>: ...` (per-thread counts, possibly followed by a thread name).
fn is_thread_line(line: &str) -> bool {
    line.strip_prefix('t')
        .and_then(|r| r.split_once(':'))
        .is_some_and(|(id, _)| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
}

/// Parses the addresses after `@`: hexadecimal, with or without `0x`.
fn parse_stack(n: usize, s: &str) -> Result<Vec<u64>> {
    s.split_ascii_whitespace()
        .map(|word| {
            let hex = word
                .strip_prefix("0x")
                .or_else(|| word.strip_prefix("0X"))
                .unwrap_or(word);
            u64::from_str_radix(hex, 16).map_err(|e| {
                err(
                    n,
                    format!("expected a hexadecimal address, found {word:?} ({e})"),
                )
            })
        })
        .collect()
}

/// Parses `<objs>: <bytes> [<objs>: <bytes>]`, ignoring anything after the
/// closing bracket (a thread name).
fn parse_counts(n: usize, s: &str) -> Result<Counts> {
    let expected = "expected `<objects>: <bytes> [<objects>: <bytes>]`";
    let s = s.trim();
    let (cur, rest) = s
        .split_once('[')
        .ok_or_else(|| err(n, format!("{expected}, found {s:?} (no `[`)")))?;
    let (accum, _after) = rest
        .split_once(']')
        .ok_or_else(|| err(n, format!("{expected}, found {s:?} (no `]`)")))?;
    let (cur_objs, cur_bytes) = parse_pair(n, cur, expected)?;
    let (accum_objs, accum_bytes) = parse_pair(n, accum, expected)?;
    Ok(Counts {
        cur_objs,
        cur_bytes,
        accum_objs,
        accum_bytes,
    })
}

fn parse_pair(n: usize, s: &str, expected: &str) -> Result<(u64, u64)> {
    let (objs, bytes) = s
        .split_once(':')
        .ok_or_else(|| err(n, format!("{expected}, found {s:?} (no `:`)")))?;
    Ok((parse_u64(n, objs)?, parse_u64(n, bytes)?))
}

fn parse_u64(n: usize, s: &str) -> Result<u64> {
    let s = s.trim();
    s.parse::<u64>()
        .map_err(|e| err(n, format!("expected a decimal count, found {s:?} ({e})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "heap_v2/4096
  t*: 3: 12288 [10: 40960]
  t0: 2: 8192 [6: 24576]
  t1: 1: 4096 [4: 16384] worker-1
@ 0x7f0000001234 0x55aa00000010 0x55aa00000020
  t*: 2: 8192 [5: 20480]
  t0: 2: 8192 [5: 20480]
@ 0x10
  t*: 1: 4096 [5: 20480]
  t1: 1: 4096 [5: 20480]
@ 0x20 0x30
  t*: 0: 0 [0: 0]

MAPPED_LIBRARIES:
55aa00000000-55aa00001000 r-xp 00000000 08:01 123 /bin/prog
@ 0xdead
";

    fn parse_err(text: &str) -> (usize, String) {
        match parse(text) {
            Err(Error::HeapDumpParse { line, message }) => (line, message),
            other => panic!("expected HeapDumpParse, got {other:?}"),
        }
    }

    #[test]
    fn parses_valid_dump() {
        let p = parse(VALID).expect("valid dump");
        assert_eq!(p.period, 4096);
        assert_eq!(p.samples.len(), 3, "stops at MAPPED_LIBRARIES");
        assert_eq!(
            p.samples[0],
            RawHeapSample {
                stack: vec![0x7f0000001234, 0x55aa00000010, 0x55aa00000020],
                inuse_objects: 2,
                inuse_bytes: 8192,
                alloc_objects: 5,
                alloc_bytes: 20480,
            }
        );
        assert_eq!(p.samples[1].stack, vec![0x10]);
        assert_eq!(p.samples[1].inuse_bytes, 4096);
        // Zero-count stacks are kept.
        assert_eq!(p.samples[2].inuse_objects, 0);
        assert_eq!(p.samples[2].stack, vec![0x20, 0x30]);
    }

    #[test]
    fn parses_dump_without_stacks_or_maps() {
        let p = parse("heap_v2/524288\n  t*: 0: 0 [0: 0]\n").expect("dump");
        assert_eq!(p.period, 524288);
        assert!(p.samples.is_empty());
        // CRLF line ends and an address of 0 written without 0x.
        let p = parse("heap_v2/1\r\n  t*: 1: 8 [1: 8]\r\n@ 0 0x1\r\n  t*: 1: 8 [1: 8]\r\n")
            .expect("dump");
        assert_eq!(p.samples[0].stack, vec![0, 1]);
    }

    #[test]
    fn empty_input_is_an_error() {
        let (line, msg) = parse_err("");
        assert_eq!(line, 1);
        assert!(msg.contains("heap_v2"), "{msg}");
    }

    #[test]
    fn bad_header_is_an_error() {
        let (line, msg) = parse_err("heap profile: 1: 2 [3: 4] @ heap/2\n");
        assert_eq!(line, 1);
        assert!(msg.contains("heap_v2/"), "{msg}");
        let (line, msg) = parse_err("heap_v2/abc\n  t*: 0: 0 [0: 0]\n");
        assert_eq!(line, 1);
        assert!(msg.contains("\"abc\""), "{msg}");
        // Header without totals.
        let (line, msg) = parse_err("heap_v2/4096\n");
        assert_eq!(line, 2);
        assert!(msg.contains("t*:"), "{msg}");
        let (line, _) = parse_err("heap_v2/4096\n@ 0x1\n");
        assert_eq!(line, 2);
    }

    #[test]
    fn truncated_dump_is_an_error() {
        let text = "heap_v2/4096\n  t*: 1: 4096 [1: 4096]\n@ 0x1 0x2\n";
        let (line, msg) = parse_err(text);
        assert_eq!(line, 4);
        assert!(
            msg.contains("end of dump") && msg.contains("line 3"),
            "{msg}"
        );

        // Cut in the middle of a counts line.
        let text = "heap_v2/4096\n  t*: 1: 4096 [1: 4096]\n@ 0x1 0x2\n  t*: 1: 40";
        let (line, msg) = parse_err(text);
        assert_eq!(line, 4);
        assert!(msg.contains("no `[`"), "{msg}");

        // Cut in the middle of a stack line: the counts line is missing.
        let text = "heap_v2/4096\n  t*: 1: 4096 [1: 4096]\n@ 0x1 0x";
        let (line, _) = parse_err(text);
        assert_eq!(line, 3);
    }

    #[test]
    fn bad_numbers_are_errors() {
        let (line, msg) = parse_err("heap_v2/4096\n  t*: 1: x [1: 4096]\n");
        assert_eq!(line, 2);
        assert!(msg.contains("\"x\""), "{msg}");

        let text = "heap_v2/4096\n  t*: 1: 4096 [1: 4096]\n@ 0x1 0xzz\n  t*: 1: 1 [1: 1]\n";
        let (line, msg) = parse_err(text);
        assert_eq!(line, 3);
        assert!(msg.contains("0xzz"), "{msg}");

        let text = "heap_v2/4096\n  t*: 1: 4096 [1: 4096]\n@ 0x1\n  t*: -1: 1 [1: 1]\n";
        let (line, _) = parse_err(text);
        assert_eq!(line, 4);

        let text =
            "heap_v2/4096\n  t*: 1: 4096 [1: 4096]\n@ 0x1\n  t*: 1: 1 [1: 99999999999999999999]\n";
        let (line, _) = parse_err(text);
        assert_eq!(line, 4);
    }

    #[test]
    fn unexpected_lines_are_errors() {
        let text = "heap_v2/4096\n  t*: 1: 4096 [1: 4096]\n@ 0x1\n  t*: 1: 1 [1: 1]\ngarbage\n";
        let (line, msg) = parse_err(text);
        assert_eq!(line, 5);
        assert!(msg.contains("garbage"), "{msg}");
        // A stack followed by a per-thread line instead of its t* line.
        let text = "heap_v2/4096\n  t*: 1: 4096 [1: 4096]\n@ 0x1\n  t0: 1: 1 [1: 1]\n";
        let (line, _) = parse_err(text);
        assert_eq!(line, 4);
    }

    #[test]
    fn thread_lines() {
        assert!(is_thread_line("t0: 1: 2 [3: 4]"));
        assert!(is_thread_line("t123: 1: 2 [3: 4] name with spaces"));
        assert!(!is_thread_line("t*: 1: 2 [3: 4]"));
        assert!(!is_thread_line("t: 1"));
        assert!(!is_thread_line("tx: 1"));
    }
}
