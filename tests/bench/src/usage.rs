//! What a process costs, read from `/proc`: resident memory now and at its peak, CPU time.

use std::path::Path;

/// Clock ticks per second of the CPU times in `/proc/PID/stat`: the kernel's `USER_HZ`, which
/// the Linux ABI fixes at 100 on every architecture.
const USER_HZ: f64 = 100.0;

/// Memory and CPU of one process at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    /// Resident set size now (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// Peak resident set size (`VmHWM`), KiB.
    pub hwm_kib: u64,
    /// Anonymous resident memory now (`RssAnon`: heap, stacks), KiB.
    pub anon_kib: u64,
    /// File-backed resident memory now (`RssFile`: the binary's text and shared libraries), KiB.
    pub file_kib: u64,
    /// Threads now.
    pub threads: u64,
    /// User plus system CPU time since start, seconds.
    pub cpu_secs: f64,
}

impl Usage {
    /// RSS in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }

    /// Peak RSS in MiB.
    pub fn hwm_mib(&self) -> f64 {
        self.hwm_kib as f64 / 1024.0
    }

    /// Anonymous RSS in MiB.
    pub fn anon_mib(&self) -> f64 {
        self.anon_kib as f64 / 1024.0
    }

    /// File-backed RSS in MiB.
    pub fn file_mib(&self) -> f64 {
        self.file_kib as f64 / 1024.0
    }
}

/// The usage of `pid`, `None` when it is gone.
pub fn of(pid: u32) -> Option<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(Usage {
        rss_kib: status_kib(&status, "VmRSS:").unwrap_or(0),
        hwm_kib: status_kib(&status, "VmHWM:").unwrap_or(0),
        anon_kib: status_kib(&status, "RssAnon:").unwrap_or(0),
        file_kib: status_kib(&status, "RssFile:").unwrap_or(0),
        threads: status_kib(&status, "Threads:").unwrap_or(0),
        cpu_secs: cpu_ticks(&stat)? as f64 / USER_HZ,
    })
}

/// The number of a `KEY:   1234 kB` (or `KEY:\t6`) line of `/proc/PID/status`.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `utime + stime` (fields 14 and 15) of a `/proc/PID/stat` line.
fn cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces; fields after the last ')' start at 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Resident memory of `pid` by what is mapped, from `/proc/PID/smaps`, KiB: the executable's
/// own file (code, read-only data, relocated data), shared libraries, and anonymous memory
/// (heap, thread stacks, allocator arenas).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mapped {
    /// The executable's executable (code) mappings.
    pub exe_text: u64,
    /// The executable's other mappings (read-only data, `.data.rel.ro`, data).
    pub exe_data: u64,
    /// Other files (shared libraries).
    pub libraries: u64,
    /// Anonymous memory and the heap.
    pub anon: u64,
}

/// [`Mapped`] of `pid`, `None` when it is gone.
pub fn mapped(pid: u32) -> Option<Mapped> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    Some(parse_smaps(&smaps, &exe.display().to_string()))
}

fn parse_smaps(smaps: &str, exe: &str) -> Mapped {
    let mut m = Mapped::default();
    let (mut path, mut exec) = (String::new(), false);
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            exec = f.next().is_some_and(|perm| perm.contains('x'));
            path = f.nth(3).unwrap_or("").to_owned();
        } else if first == "Rss:" {
            let kib: u64 = f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            if path == exe {
                if exec {
                    m.exe_text += kib;
                } else {
                    m.exe_data += kib;
                }
            } else if path.starts_with('/') {
                m.libraries += kib;
            } else {
                m.anon += kib;
            }
        }
    }
    m
}

/// Pids whose executable is named `name` and whose command line mentions `needle`.
pub fn pids_of(name: &str, needle: &str) -> Vec<u32> {
    gluster_csi_testbed::procs::all_pids()
        .into_iter()
        .filter(|p| {
            let exe_ok = std::fs::read_link(format!("/proc/{p}/exe"))
                .ok()
                .as_deref()
                .and_then(Path::file_name)
                .is_some_and(|n| n == name);
            exe_ok
                && std::fs::read(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_and_status_fields() {
        let stat = "1234 (a b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0 99 0 0";
        assert_eq!(cpu_ticks(stat), Some(300));
        let status = "Name:\tx\nVmHWM:\t   2048 kB\nVmRSS:\t    1024 kB\nThreads:\t6\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(1024));
        assert_eq!(status_kib(status, "VmHWM:"), Some(2048));
        assert_eq!(status_kib(status, "VmSwap:"), None);
        assert_eq!(status_kib(status, "Threads:"), Some(6));
    }

    #[test]
    fn smaps_are_grouped_by_mapping() {
        let smaps = "\
55d0-55e0 r--p 00000000 08:01 12 /bin/x
Rss:                 100 kB
55e0-55f0 r-xp 00001000 08:01 12 /bin/x
Size:                400 kB
Rss:                 300 kB
7f00-7f10 r-xp 00000000 08:01 13 /lib/libc.so.6
Rss:                  50 kB
7f20-7f30 rw-p 00000000 00:00 0 
Rss:                  20 kB
7f40-7f50 rw-p 00000000 00:00 0 [heap]
Rss:                   5 kB
";
        assert_eq!(
            parse_smaps(smaps, "/bin/x"),
            Mapped {
                exe_text: 300,
                exe_data: 100,
                libraries: 50,
                anon: 25
            }
        );
    }

    #[test]
    fn own_usage_is_readable() {
        let u = of(std::process::id());
        assert!(u.is_some_and(|u| u.rss_kib > 0 && u.hwm_kib >= u.rss_kib));
    }
}
