//! Resolves a process's socket inodes against its network namespace's
//! socket tables (`/proc/PID/net/*`) and counts TCP sockets by state.
//!
//! Reading `/proc/net/tcp{,6}` walks the kernel's whole TCP hash table, which
//! costs milliseconds even when few sockets exist, so tables are read lazily:
//! only when the process has sockets, cheapest first (unix, udp, udp6, tcp,
//! tcp6), stopping as soon as every socket inode of the process is resolved.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::Path;

use super::procfs::{FdTarget, parse_inet_table, parse_unix_table};
use super::{TcpState, io_error, parse_error, read_text};
use crate::error::Error;

/// Protocol (and TCP state) of one socket inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SocketKind {
    Tcp(TcpState),
    Udp,
    Unix,
}

/// Kinds of the process's socket inodes; inodes found in no table (netlink,
/// packet, ...) are absent.
pub(super) fn resolve(
    pid: u32,
    dir: &Path,
    targets: &[FdTarget],
) -> Result<HashMap<u64, SocketKind>, Error> {
    let mut pending = socket_inodes(targets);
    let mut out = HashMap::new();
    let net = dir.join("net");
    let tables = [
        ("unix", false),
        ("udp", true),
        ("udp6", false),
        ("tcp", true),
        ("tcp6", false),
    ];
    for (name, required) in tables {
        if pending.is_empty() {
            break;
        }
        let path = net.join(name);
        let Some(text) = read_maybe(pid, &path, required)? else {
            continue;
        };
        if name == "unix" {
            for inode in parse_unix_table(&text).map_err(|m| parse_error(&path, m))? {
                if pending.remove(&inode) {
                    out.insert(inode, SocketKind::Unix);
                }
            }
            continue;
        }
        let is_tcp = name.starts_with("tcp");
        for s in parse_inet_table(&text).map_err(|m| parse_error(&path, m))? {
            let kind = match (is_tcp, s.tcp_state()) {
                (false, _) => SocketKind::Udp,
                (true, Some(st)) => SocketKind::Tcp(st),
                (true, None) => continue,
            };
            if pending.remove(&s.inode) {
                out.insert(s.inode, kind);
            }
        }
    }
    Ok(out)
}

fn socket_inodes(targets: &[FdTarget]) -> HashSet<u64> {
    targets
        .iter()
        .filter_map(|t| match *t {
            FdTarget::Socket(inode) => Some(inode),
            _ => None,
        })
        .collect()
}

/// Reads a file; a missing optional file (e.g. tcp6 without IPv6) is `None`.
fn read_maybe(pid: u32, path: &Path, required: bool) -> Result<Option<String>, Error> {
    if required {
        return read_text(pid, path).map(Some);
    }
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(pid, path, e)),
    }
}

/// Counts the process's distinct TCP sockets by state (an fd duplicated with
/// `dup` counts once). Non-zero states only, in kernel code order.
pub(super) fn states(
    targets: &[FdTarget],
    kinds: &HashMap<u64, SocketKind>,
) -> Vec<(TcpState, u64)> {
    let mut counts = BTreeMap::<TcpState, u64>::new();
    for inode in socket_inodes(targets) {
        if let Some(SocketKind::Tcp(st)) = kinds.get(&inode) {
            *counts.entry(*st).or_insert(0) += 1;
        }
    }
    counts.into_iter().collect()
}
