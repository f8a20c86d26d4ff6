//! Finding a process by name: a regular expression matched against its
//! `comm` (the short name in `/proc/PID/comm`) or its command line. Used for
//! `leakscope watch --name`, and again each time the process exits, so a
//! restarted service is picked up under its new pid.

use std::fs;

use regex::Regex;

/// A process that matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its pid.
    pub pid: u32,
    /// Its start time in clock ticks since boot (field 22 of `stat`).
    pub start_ticks: u64,
}

/// Every live process (not a zombie, not this sidecar) whose comm or
/// command line (arguments joined by spaces) matches `pattern`, oldest
/// first. Processes that vanish or cannot be read while the list is made are
/// skipped.
pub fn find(pattern: &Regex) -> Vec<Found> {
    let own = std::process::id();
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == own {
            continue;
        }
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Ok(stat) = leakscope_agent::resource::procfs::parse_stat(&stat) else {
            continue;
        };
        if matches!(stat.state, 'Z' | 'X') {
            continue;
        }
        let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
            .map(|raw| {
                raw.split(|&b| b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        // Kernel threads have no command line; they are not services.
        if cmdline.is_empty() {
            continue;
        }
        if pattern.is_match(&stat.comm) || pattern.is_match(&cmdline) {
            out.push(Found {
                pid,
                start_ticks: stat.start_time_ticks,
            });
        }
    }
    out.sort_by_key(|f| (f.start_ticks, f.pid));
    out
}

/// The pid the watcher should follow: the oldest match (the service's
/// main process rather than a short-lived child it forked).
pub fn first(pattern: &Regex) -> Option<u32> {
    find(pattern).first().map(|f| f.pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_child_by_command_line_and_not_after_it_exits() {
        let tag = format!("leakscope-locate-{}", std::process::id());
        // `exec -a` names the process so its command line carries the tag.
        let mut child = std::process::Command::new("bash")
            .args(["-c", &format!("exec -a {tag} sleep 30")])
            .spawn()
            .expect("bash");
        let pattern = Regex::new(&regex::escape(&tag)).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let pid = loop {
            if let Some(pid) = first(&pattern) {
                break pid;
            }
            assert!(std::time::Instant::now() < deadline, "child not found");
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert_eq!(pid, child.id());
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(first(&pattern), None);
    }

    #[test]
    fn never_matches_itself() {
        let me = fs::read_to_string("/proc/self/comm").unwrap();
        let pattern = Regex::new(&format!("^{}$", regex::escape(me.trim()))).unwrap();
        assert!(find(&pattern).iter().all(|f| f.pid != std::process::id()));
    }
}
