//! The table, its seqlock under a racing writer, the recorder's stack and
//! inode, and lookups against real fds of this process (fresh tables, so
//! nothing here depends on the feature or on other tests' fds).

use std::fs::File;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::table::{Mapped, Read, Record};
use super::*;
use crate::resource::{ListOptions, Target, list_fds};

fn stat_of(fd: i32) -> (u64, u64) {
    fstat(fd).expect("open fd")
}

#[test]
fn write_read_remove() {
    let m = Mapped::new().expect("mmap");
    let t = m.table();
    assert_eq!(t.read(5), Read::Empty);
    assert!(t.write(5, 7, 42, &[0x10, 0x20, 0x30]));
    assert_eq!(
        t.read(5),
        Read::Found(Record {
            dev: 7,
            ino: 42,
            stack: vec![0x10, 0x20, 0x30]
        })
    );
    // Cut at MAX_DEPTH.
    let long: Vec<u64> = (1..=100).collect();
    assert!(t.write(6, 1, 2, &long));
    let Read::Found(r) = t.read(6) else {
        panic!("found")
    };
    assert_eq!(r.stack, long[..MAX_DEPTH]);
    t.remove(5);
    assert_eq!(t.read(5), Read::Empty);
    // Rewritten after removal.
    assert!(t.write(5, 7, 43, &[]));
    assert!(matches!(t.read(5), Read::Found(Record { ino: 43, .. })));
    // Out of range: neither written nor found.
    assert!(!t.write(MAX_FD as i32, 1, 1, &[1]));
    assert!(!t.write(-1, 1, 1, &[1]));
    assert_eq!(t.read(MAX_FD as i32), Read::Empty);
    t.remove(-3);
}

/// A writer rewrites one entry with stacks whose every word, the inode
/// and the depth derive from one counter; a reader on another thread must
/// only ever see whole records.
#[test]
fn readers_never_see_a_torn_record() {
    let m = Arc::new(Mapped::new().expect("mmap"));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (m, stop) = (Arc::clone(&m), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut k = 1u64;
            while !stop.load(Ordering::Relaxed) {
                let depth = (k % MAX_DEPTH as u64) as usize + 1;
                let stack = [k; MAX_DEPTH];
                m.table().write(9, k, k, &stack[..depth]);
                k += 1;
            }
            k
        })
    };
    let t = m.table();
    let mut seen = 0u32;
    let mut reads = 0u32;
    while seen < 20_000 && reads < 5_000_000 {
        reads += 1;
        if let Read::Found(r) = t.read(9) {
            seen += 1;
            assert_eq!(r.dev, r.ino);
            assert_eq!(r.stack.len(), (r.ino % MAX_DEPTH as u64) as usize + 1);
            assert!(r.stack.iter().all(|a| *a == r.ino), "{r:?}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().unwrap();
    assert!(seen > 0 && writes > 1, "{seen} reads of {writes} writes");
}

#[inline(never)]
fn record_here(fd: i32) {
    let fp = record::frame_pointer();
    // SAFETY: this function's own frame (built with frame pointers).
    unsafe { record::record(fd, fp) };
}

#[test]
fn record_writes_inode_and_callers() {
    let file = File::open("/proc/self/status").expect("open");
    let fd = file.as_raw_fd();
    record_here(fd);
    let t = table::global().expect("mapped by record");
    let Read::Found(r) = t.read(fd) else {
        panic!("recorded")
    };
    assert_eq!((r.dev, r.ino), stat_of(fd));
    // The first address returns into this test function.
    let f = record_writes_inode_and_callers as *const () as u64;
    assert!(
        r.stack[0] > f && r.stack[0] < f + 4096,
        "{:#x} vs {f:#x}",
        r.stack[0]
    );
    assert!(r.stack.len() >= 2);
    record::forget(fd);
    assert_eq!(t.read(fd), Read::Empty);
    // Errno is left as it was.
    // SAFETY: this thread's errno.
    unsafe { *libc::__errno_location() = libc::EAGAIN };
    record_here(fd);
    // SAFETY: as above.
    assert_eq!(unsafe { *libc::__errno_location() }, libc::EAGAIN);
    record::forget(fd);
}

#[test]
fn lookup_checks_each_record_against_the_live_fd() {
    let m = Mapped::new().expect("mmap");
    let t = m.table();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let (reader, writer) = std::io::pipe().expect("pipe");
    let matching = File::open("/proc/self/status").expect("open");
    let reused = File::open("/proc/self/stat").expect("open");
    let unrecorded = File::open("/proc/self/limits").expect("open");
    let ours = [
        listener.as_raw_fd(),
        reader.as_raw_fd(),
        writer.as_raw_fd(),
        matching.as_raw_fd(),
        reused.as_raw_fd(),
        unrecorded.as_raw_fd(),
    ];
    for fd in &ours[..4] {
        let (dev, ino) = stat_of(*fd);
        t.write(*fd, dev, ino, &[0x1001, 0x2001]);
    }
    // As if `reused`'s number had held another file before.
    let (dev, ino) = stat_of(reused.as_raw_fd());
    t.write(reused.as_raw_fd(), dev, ino + 1, &[0x3001]);

    let mut listing = list_fds(Target::SelfProcess, &ListOptions::default()).expect("list");
    listing.fds.retain(|f| ours.contains(&(f.fd as i32)));
    assert_eq!(listing.fds.len(), ours.len(), "{listing:?}");
    listing.fds.push(crate::resource::OpenFd {
        fd: MAX_FD as u32 + 5,
        object: FdObject::Pipe(1),
    });
    let sites = lookup_in(t, &listing);
    assert_eq!(
        sites.counts,
        SiteCounts {
            recorded: 4,
            not_recorded: 1,
            stale: 1,
            above_limit: 1
        }
    );
    for fd in &ours[..4] {
        assert_eq!(sites.stacks[&(*fd as u32)], vec![0x1000, 0x2000]);
    }
    assert!(!sites.stacks.contains_key(&(reused.as_raw_fd() as u32)));
    // A listing whose inode disagrees with the record (the fd was closed
    // and its number reused after listing) is refused too.
    let mut moved = listing.clone();
    for f in &mut moved.fds {
        if let FdObject::Pipe(i) = &mut f.object {
            *i += 1;
        }
    }
    assert_eq!(lookup_in(t, &moved).counts.recorded, 2);
}

#[test]
fn keep_mapped_cuts_at_the_first_unmapped_address() {
    let maps = ProcessMaps::current().expect("maps");
    let code = keep_mapped_cuts_at_the_first_unmapped_address as *const () as u64;
    let mut sites = RecordedSites::default();
    sites.stacks.insert(3, vec![code, code + 1, 8, code]);
    sites.stacks.insert(4, vec![code]);
    sites.keep_mapped(&maps);
    assert_eq!(sites.stacks[&3], vec![code, code + 1]);
    assert_eq!(sites.stacks[&4], vec![code]);
}

#[test]
fn counts_read_as_a_sentence() {
    let all = SiteCounts {
        recorded: 45,
        ..SiteCounts::default()
    };
    assert_eq!(all.to_string(), "creation sites: 45 of 45 fds");
    let some = SiteCounts {
        recorded: 45,
        not_recorded: 9,
        stale: 2,
        above_limit: 1,
    };
    assert_eq!(
        some.to_string(),
        "creation sites: 45 of 57 fds; 12 without (9 not recorded: opened before \
         recording or by code not wrapped; 2 stale: number reused by code not wrapped; \
         1 numbered 65536 or more)"
    );
}

#[test]
fn link_arg_wraps_exactly_the_listed_functions() {
    let names: Vec<&str> = LINK_ARG
        .strip_prefix("-Wl,")
        .expect("a -Wl, argument")
        .split(',')
        .map(|a| a.strip_prefix("--wrap=").expect("--wrap=NAME"))
        .collect();
    assert_eq!(names, WRAPPED);
    let build_rs = include_str!("../../build.rs").replace("\\\n", "");
    assert!(build_rs.contains(&format!("\"{LINK_ARG}\"")), "{build_rs}");
    let readme = include_str!("../../../README.md");
    assert!(
        readme.contains(LINK_ARG),
        "README.md gives the exact link argument"
    );
}

#[test]
fn lookup_is_for_this_process_only() {
    let mut listing = list_fds(Target::SelfProcess, &ListOptions { max_fds: 3 }).expect("list");
    listing.pid = std::process::id() + 1;
    assert_eq!(lookup(&listing), None);
}
