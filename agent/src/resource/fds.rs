//! File-descriptor counting and classification for one process.
//!
//! The count uses `st_size` of `/proc/PID/fd` (the number of open fds on
//! Linux >= 6.2), falling back to listing the directory. The breakdown
//! `readlink`s every fd; fds closed between listing and readlink are skipped.
//! Socket fds are resolved to a protocol by `tcp::resolve`.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use std::collections::{HashMap, HashSet};

use super::procfs::{FdTarget, SocketEntry, classify_fd_target};
use super::{FdKinds, io_error, proc_entries, vanished};
use crate::error::Error;

/// Number of open fds of the process.
pub(super) fn count(pid: u32, dir: &Path, is_self: bool) -> Result<u64, Error> {
    let fd_dir = dir.join("fd");
    let md = fs::metadata(&fd_dir).map_err(|e| io_error(pid, &fd_dir, e))?;
    if md.len() > 0 {
        return Ok(md.len());
    }
    // Older kernels report 0: count the entries instead.
    count_by_listing(pid, &fd_dir, is_self)
}

/// Counts the entries of `fd_dir` (the fallback for kernels < 6.2).
fn count_by_listing(pid: u32, fd_dir: &Path, is_self: bool) -> Result<u64, Error> {
    let n = proc_entries(pid, fd_dir)?.len() as u64;
    // Listing our own fd directory holds one extra fd open for the listing.
    Ok(if is_self { n.saturating_sub(1) } else { n })
}

/// Classified link targets of every open fd.
pub(super) fn targets(pid: u32, dir: &Path, is_self: bool) -> Result<Vec<FdTarget>, Error> {
    let fd_dir = dir.join("fd");
    let mut out = Vec::new();
    for path in proc_entries(pid, &fd_dir)? {
        let link = match fs::read_link(&path) {
            Ok(l) => l,
            Err(e) if vanished(&e) => continue,
            Err(e) => return Err(io_error(pid, &path, e)),
        };
        // Skip the handle of this very listing when sampling ourselves.
        if is_self && link == fd_dir {
            continue;
        }
        out.push(classify_fd_target(link.as_os_str().as_bytes()));
    }
    Ok(out)
}

/// The distinct socket inodes among `targets`.
pub(super) fn socket_inodes(targets: &[FdTarget]) -> HashSet<u64> {
    targets
        .iter()
        .filter_map(|t| match *t {
            FdTarget::Socket(inode) => Some(inode),
            _ => None,
        })
        .collect()
}

/// Counts fds per kind; sockets are resolved through the socket tables.
pub(super) fn breakdown(targets: &[FdTarget], sockets: &HashMap<u64, SocketEntry>) -> FdKinds {
    let mut k = FdKinds::default();
    for t in targets {
        match *t {
            FdTarget::Socket(inode) => match sockets.get(&inode) {
                Some(SocketEntry::Inet(proto, _)) if proto.is_tcp() => k.tcp += 1,
                Some(SocketEntry::Inet(..)) => k.udp += 1,
                Some(SocketEntry::Unix(_)) => k.unix += 1,
                None => k.other_socket += 1,
            },
            FdTarget::Pipe => k.pipe += 1,
            FdTarget::EventFd => k.eventfd += 1,
            FdTarget::Epoll => k.epoll += 1,
            FdTarget::TimerFd => k.timerfd += 1,
            FdTarget::File => k.file += 1,
            FdTarget::Other => k.other += 1,
        }
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::TcpState;
    use crate::resource::procfs::{InetProto, InetSocket, UnixSocket, UnixState, UnixType};

    fn inet(proto: InetProto, state: Option<TcpState>) -> SocketEntry {
        let any = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
        SocketEntry::Inet(
            proto,
            InetSocket {
                state_code: state.map_or(7, TcpState::code),
                inode: 0,
                local: any,
                peer: any,
            },
        )
    }

    #[test]
    fn listing_fallback_matches_st_size() {
        let pid = std::process::id();
        let dir = std::path::PathBuf::from(format!("/proc/{pid}"));
        let st_size = fs::metadata(dir.join("fd")).unwrap().len();
        let listed = count_by_listing(pid, &dir.join("fd"), true).unwrap();
        if st_size > 0 {
            assert_eq!(listed, st_size);
        }
        assert!(listed > 0);
    }

    #[test]
    fn breakdown_of_fake_targets() {
        use FdTarget::*;
        let targets = [
            Socket(1),
            Socket(2),
            Socket(3),
            Socket(4),
            Socket(9),
            Pipe,
            Pipe,
            EventFd,
            Epoll,
            TimerFd,
            File,
            Other,
        ];
        let sockets = HashMap::from([
            (1, inet(InetProto::Tcp, Some(TcpState::Listen))),
            (2, inet(InetProto::Tcp6, Some(TcpState::CloseWait))),
            (3, inet(InetProto::Udp, None)),
            (
                4,
                SocketEntry::Unix(UnixSocket {
                    inode: 4,
                    path: None,
                    socket_type: UnixType::Stream,
                    state: UnixState::Connected,
                }),
            ),
        ]);
        let want = FdKinds {
            tcp: 2,
            udp: 1,
            unix: 1,
            other_socket: 1,
            pipe: 2,
            eventfd: 1,
            epoll: 1,
            timerfd: 1,
            file: 1,
            other: 1,
        };
        assert_eq!(breakdown(&targets, &sockets), want);
        // A dup'ed socket fd counts once in the TCP states.
        let dup = [Socket(1), Socket(1), Socket(2), Socket(3)];
        assert_eq!(
            crate::resource::tcp::states(&socket_inodes(&dup), &sockets),
            vec![(TcpState::CloseWait, 1), (TcpState::Listen, 1)]
        );
    }
}
