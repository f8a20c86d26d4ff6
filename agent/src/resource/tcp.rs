//! Resolves a process's socket inodes against its network namespace's
//! socket tables (`/proc/PID/net/*`) and counts TCP sockets by state.
//!
//! Reading `/proc/net/tcp{,6}` walks the kernel's whole TCP hash table, which
//! costs milliseconds even when few sockets exist, so tables are read lazily:
//! only when the process has sockets, cheapest first (unix, udp, udp6, tcp,
//! tcp6), stopping as soon as every socket inode of the process is resolved.
//! Inodes found in no table (netlink, packet, a socket closed meanwhile) are
//! left out of the answer.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use super::procfs::{InetProto, SocketEntry, parse_inet_table, parse_unix_table};
use super::{TcpState, parse_error, read_bounded};
use crate::error::Error;

/// Most bytes read of one socket table: about 400,000 TCP sockets. A table
/// beyond that is an error rather than an unbounded read.
const MAX_TABLE: u64 = 64 << 20;

/// The table rows of the socket inodes in `inodes`; absent when in no table.
pub(super) fn resolve(
    pid: u32,
    dir: &Path,
    inodes: impl IntoIterator<Item = u64>,
) -> Result<HashMap<u64, SocketEntry>, Error> {
    let mut pending: HashSet<u64> = inodes.into_iter().collect();
    let mut out = HashMap::new();
    let net = dir.join("net");
    let tables = [
        ("unix", None, false),
        ("udp", Some(InetProto::Udp), true),
        ("udp6", Some(InetProto::Udp6), false),
        ("tcp", Some(InetProto::Tcp), true),
        ("tcp6", Some(InetProto::Tcp6), false),
    ];
    for (name, proto, required) in tables {
        if pending.is_empty() {
            break;
        }
        let path = net.join(name);
        let Some(text) = read_maybe(pid, &path, required)? else {
            continue;
        };
        let Some(proto) = proto else {
            let text = String::from_utf8_lossy(&text);
            for s in parse_unix_table(&text).map_err(|m| parse_error(&path, m))? {
                if pending.remove(&s.inode) {
                    out.insert(s.inode, SocketEntry::Unix(s));
                }
            }
            continue;
        };
        for s in parse_inet_table(proto, &text).map_err(|m| parse_error(&path, m))? {
            if pending.remove(&s.inode) {
                out.insert(s.inode, SocketEntry::Inet(proto, s));
            }
        }
    }
    Ok(out)
}

/// Reads a table; a missing optional one (e.g. tcp6 without IPv6) is `None`.
fn read_maybe(pid: u32, path: &Path, required: bool) -> Result<Option<Vec<u8>>, Error> {
    if !required && !path.exists() {
        return Ok(None);
    }
    read_bounded(pid, path, MAX_TABLE).map(Some)
}

/// Counts the distinct TCP sockets among `inodes` by state (an fd duplicated
/// with `dup` counts once). Non-zero states only, in kernel code order.
pub(super) fn states(
    inodes: &HashSet<u64>,
    sockets: &HashMap<u64, SocketEntry>,
) -> Vec<(TcpState, u64)> {
    let mut counts = BTreeMap::<TcpState, u64>::new();
    for inode in inodes {
        if let Some(SocketEntry::Inet(proto, s)) = sockets.get(inode)
            && proto.is_tcp()
            && let Some(st) = s.tcp_state()
        {
            *counts.entry(st).or_insert(0) += 1;
        }
    }
    counts.into_iter().collect()
}
