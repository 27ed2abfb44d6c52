//! Processes as seen through `/proc`: identity that survives pid reuse, liveness, killing.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The start time of `pid` in clock ticks since boot (field 22 of `/proc/PID/stat`). Together with
/// the pid it names one process, even after the pid is reused.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; the fields after the last ')'
    // are plain. Field 3 (state) is the first of them, so field 22 is index 19.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The one-letter state of `pid` (`R`, `S`, `Z`, …).
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().next()?.chars().next()
}

/// Whether `pid` runs: it exists and is not a zombie waiting to be reaped.
pub fn alive(pid: u32) -> bool {
    matches!(state(pid), Some(s) if s != 'Z' && s != 'X')
}

/// Whether `pid` still is the process that had `start` as its start time.
pub fn is_same(pid: u32, start: u64) -> bool {
    alive(pid) && start_time(pid) == Some(start)
}

/// Sends `sig` to `pid`, ignoring a process that is already gone.
pub fn signal(pid: u32, sig: Signal) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(raw), sig);
    }
}

/// Waits until none of `pids` is alive; returns those still alive at the deadline.
pub async fn wait_gone(pids: &[u32], timeout: Duration) -> Vec<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// All pids currently in `/proc`.
pub fn all_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The pid namespace of `pid`, as the target of `/proc/PID/ns/pid` (e.g. `pid:[4026532201]`).
pub fn pid_namespace(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/pid"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Every process in the same pid namespace as `pid` (including `pid`).
pub fn pid_namespace_members(pid: u32) -> Vec<u32> {
    let Some(ns) = pid_namespace(pid) else {
        return Vec::new();
    };
    if pid_namespace(std::process::id()).as_deref() == Some(ns.as_str()) {
        // Never treat our own namespace as the plugin's.
        return Vec::new();
    }
    all_pids()
        .into_iter()
        .filter(|p| pid_namespace(*p).as_deref() == Some(ns.as_str()))
        .collect()
}

/// Direct children of `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|p| parent(*p) == Some(pid))
        .collect()
}

fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Gluster processes (`glusterd`, `glusterfsd`, `glusterfs`) whose command line mentions a path
/// under `dir`: brick servers and FUSE clients that belong to one testbed.
pub fn gluster_processes_under(dir: &Path) -> Vec<u32> {
    let needle = format!("{}/", dir.display());
    all_pids()
        .into_iter()
        .filter(|p| {
            let exe = std::fs::read_link(format!("/proc/{p}/exe")).ok();
            let is_gluster = exe
                .as_ref()
                .and_then(|e| e.file_name())
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("gluster"));
            is_gluster
                && std::fs::read(format!("/proc/{p}/cmdline"))
                    .map(|c| {
                        c.split(|b| *b == 0)
                            .any(|arg| String::from_utf8_lossy(arg).contains(&needle))
                    })
                    .unwrap_or(false)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_process_is_alive_and_identified() {
        let me = std::process::id();
        let start = start_time(me);
        assert!(start.is_some());
        assert!(alive(me));
        assert!(is_same(me, start.unwrap_or_default()));
        assert!(!is_same(me, start.unwrap_or_default() + 1));
    }

    #[test]
    fn own_pid_namespace_is_never_a_plugin_namespace() {
        assert!(pid_namespace_members(std::process::id()).is_empty());
    }
}
