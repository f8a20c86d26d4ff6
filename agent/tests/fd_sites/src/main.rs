//! A service linked with the agent's `fd-sites` feature and the `--wrap`
//! argument, run by the agent's `fd_sites` test:
//! `fd_sites_service OUT_DIR`. It opens fds in known functions (each
//! opening call is on a line marked `// site:NAME`, which the test looks
//! up), writes two fds profiles (`before.pb.gz`, then `after.pb.gz` once
//! `open_more_connections` has run) and the `debug=2` text (`fds.txt`), and
//! prints what it did, one `key value...` line each, for the test to
//! check against.

use std::ffi::CString;
use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use leakscope_agent::collect::fds;
use leakscope_agent::resource::{ListOptions, Target, list_fds};
use leakscope_agent::symbolize::Symbolizer;

const CONNECTIONS: usize = 20;
const FILES: usize = 3;

#[inline(never)]
fn open_connections(port: u16) -> Vec<TcpStream> {
    let mut conns = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        conns.push(TcpStream::connect(("127.0.0.1", port)).expect("connect")); // site:connections
    }
    conns
}

#[inline(never)]
fn open_files(dir: &Path) -> Vec<File> {
    (0..FILES)
        .map(|i| File::create(dir.join(format!("file-{i}"))).expect("create")) // site:files
        .collect()
}

#[inline(never)]
fn open_more_connections(port: u16) -> Vec<TcpStream> {
    let mut conns = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        conns.push(TcpStream::connect(("127.0.0.1", port)).expect("connect")); // site:more
    }
    conns
}

/// `openat` by raw syscall: not wrapped, so never recorded.
fn open_unwrapped(path: &Path) -> i32 {
    let c = CString::new(path.as_os_str().as_bytes()).expect("no NUL");
    // SAFETY: a NUL-terminated path; the result is checked.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    assert!(fd >= 0, "openat {}", path.display());
    fd as i32
}

/// A recorded file closed by raw syscall (so the record stays), its number
/// then reused by an unwrapped open of another file: the record is stale.
fn reuse_number_unwrapped(dir: &Path) -> i32 {
    let other = dir.join("reopened-by-syscall");
    std::fs::write(&other, b"x").expect("write");
    let fd = File::create(dir.join("recorded-then-closed-by-syscall"))
        .expect("create")
        .into_raw_fd();
    // SAFETY: closing the fd we own, once.
    assert_eq!(unsafe { libc::syscall(libc::SYS_close, fd) }, 0);
    let reused = open_unwrapped(&other);
    assert_eq!(reused, fd, "the lowest free number is reused");
    reused
}

/// A recorded file closed by `close` (wrapped: the record is removed), its
/// number then reused by an unwrapped open: no record at all.
fn reuse_number_after_close(dir: &Path) -> i32 {
    let other = dir.join("reopened-after-close");
    std::fs::write(&other, b"x").expect("write");
    let file = File::create(dir.join("recorded-then-closed")).expect("create");
    let fd = file.as_raw_fd();
    drop(file);
    let reused = open_unwrapped(&other);
    assert_eq!(reused, fd, "the lowest free number is reused");
    reused
}

fn write_profile(path: &Path) -> Vec<String> {
    let profile = fds::capture(Target::SelfProcess).expect("capture");
    std::fs::write(path, profile.encode_gzip()).expect("write profile");
    profile
        .comment
        .iter()
        .map(|c| profile.string(*c).to_owned())
        .collect()
}

fn fds_list(fds: impl IntoIterator<Item = i32>) -> String {
    fds.into_iter()
        .map(|fd| fd.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    let out = PathBuf::from(
        std::env::args_os()
            .nth(1)
            .expect("usage: fd_sites_service OUT_DIR"),
    );
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    println!("port {port}");
    println!("listener {}", listener.as_raw_fd());
    let conns = open_connections(port);
    println!(
        "connections {}",
        fds_list(conns.iter().map(|c| c.as_raw_fd()))
    );
    let files = open_files(&out);
    println!("files {}", fds_list(files.iter().map(|f| f.as_raw_fd())));
    println!("stale {}", reuse_number_unwrapped(&out));
    println!("forgotten {}", reuse_number_after_close(&out));

    for c in write_profile(&out.join("before.pb.gz")) {
        println!("comment {c}");
    }
    let listing = list_fds(Target::SelfProcess, &ListOptions::default()).expect("list");
    let text = fds::fds_text_recorded(&listing, Symbolizer::global());
    std::fs::write(out.join("fds.txt"), text).expect("write text");

    let more = open_more_connections(port);
    println!("more {}", fds_list(more.iter().map(|c| c.as_raw_fd())));
    write_profile(&out.join("after.pb.gz"));
    if let Some(m) = leakscope_agent::fdsites::table_memory() {
        println!("table {} {}", m.reserved, m.resident);
    }
    println!("done");
    drop((listener, conns, files, more));
}
