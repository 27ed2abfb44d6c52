//! Tearing a testbed down from what its state directory records (and what its derived names
//! find), so that it works after a crash, after a failed `up`, and twice in a row.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;

use crate::journal::{self, Entry};
use crate::layout::Names;
use crate::{mounts, net, procs};

/// How long stopped processes get to exit after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);
/// How long killed processes get to disappear.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// Removes everything the testbed at `state_dir` made: processes outside the Gluster hosts
/// (heketi-server, controller, node plugin and its pid namespace), mounts under the state
/// directory and journaled ones, every process in its network namespaces, the namespaces and
/// links, and the state directory itself. Missing pieces are skipped.
pub async fn down(state_dir: &Path) -> Result<()> {
    let names = Names::new(state_dir)?;
    let dir = names.state_dir.as_path();
    let entries = journal::read(dir);
    let mut problems: Vec<String> = Vec::new();

    // 1. Our own daemons outside the hosts' namespaces: stop them before their mounts go.
    stop_processes(&entries, |role| !crate::host::is_host_role(role)).await;

    // 2. Mounts (FUSE clients end with their mount).
    unmount_all(dir, &entries, &mut problems).await;

    // 3. Everything in the hosts' namespaces, glusterd first by record, then by namespace.
    stop_processes(&entries, |_| true).await;
    let namespaces = testbed_namespaces(&names, &entries).await;
    let mut pids: Vec<u32> = Vec::new();
    for ns in &namespaces {
        pids.extend(net::namespace_pids(ns).await);
    }
    // Gluster processes outside the namespaces that still serve paths of this testbed (e.g. a
    // FUSE client whose mount was detached lazily).
    pids.extend(procs::gluster_processes_under(dir));
    pids.retain(|p| *p != std::process::id());
    for p in &pids {
        procs::signal(*p, Signal::SIGKILL);
    }
    let left = procs::wait_gone(&pids, KILL_WAIT).await;
    if !left.is_empty() {
        problems.push(format!("processes still alive after SIGKILL: {left:?}"));
    }

    // 4. Mounts once more: a dying process may have left one behind.
    unmount_all(dir, &entries, &mut problems).await;

    // 5. Namespaces (their veth ends go with them), then links.
    for ns in &namespaces {
        if let Err(e) = net::delete_namespace(ns).await {
            problems.push(format!("{e:#}"));
        }
        if let Err(e) = net::remove_etc_netns(ns) {
            problems.push(format!("{e:#}"));
        }
    }
    for link in testbed_links(&names, &entries).await {
        if let Err(e) = net::delete_link(&link).await {
            problems.push(format!("{e:#}"));
        }
    }

    // 6. The directory, unless something is still mounted below it.
    if problems.is_empty()
        && let Err(e) = remove_state_dir(dir)
    {
        problems.push(format!("{e:#}"));
    }
    if !problems.is_empty() {
        bail!(
            "down of {} left things behind:\n  {}",
            dir.display(),
            problems.join("\n  ")
        );
    }
    Ok(())
}

/// Stops journaled processes whose role passes `select` and that are still the process that was
/// started (same start time): SIGTERM, then SIGKILL after a grace period. A process that is the
/// first of its pid namespace takes every process of that namespace with it.
async fn stop_processes(entries: &[Entry], select: impl Fn(&str) -> bool) {
    let mut targets: BTreeSet<u32> = BTreeSet::new();
    let mut namespace_members: BTreeSet<u32> = BTreeSet::new();
    for e in entries {
        if let Entry::Process {
            role,
            pid,
            start,
            pid_namespace,
        } = e
        {
            if !select(role) || !procs::is_same(*pid, *start) {
                continue;
            }
            if *pid_namespace {
                namespace_members.extend(procs::pid_namespace_members(*pid));
            }
            targets.insert(*pid);
        }
    }
    // A pod stop: the namespace goes at once.
    for p in &namespace_members {
        procs::signal(*p, Signal::SIGKILL);
    }
    for p in &targets {
        procs::signal(*p, Signal::SIGTERM);
    }
    let all: Vec<u32> = targets.union(&namespace_members).copied().collect();
    let left = procs::wait_gone(&all, TERM_GRACE).await;
    for p in &left {
        procs::signal(*p, Signal::SIGKILL);
    }
    procs::wait_gone(&left, KILL_WAIT).await;
}

async fn unmount_all(dir: &Path, entries: &[Entry], problems: &mut Vec<String>) {
    let mut paths: Vec<std::path::PathBuf> =
        mounts::under(dir).into_iter().map(|m| m.path).collect();
    for e in entries.iter().rev() {
        if let Entry::Mount { path } = e {
            paths.push(path.clone());
        }
    }
    let mut seen = BTreeSet::new();
    for p in paths {
        if !seen.insert(p.clone()) {
            continue;
        }
        if let Err(e) = mounts::unmount(&p).await {
            problems.push(format!("{e:#}"));
        }
    }
}

/// Journaled namespaces plus any existing one named with this testbed's prefix.
async fn testbed_namespaces(names: &Names, entries: &[Entry]) -> Vec<String> {
    let mut set: BTreeSet<String> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Netns { name } => Some(name.clone()),
            _ => None,
        })
        .collect();
    for e in entries {
        if let Entry::EtcNetns { name } = e {
            set.insert(name.clone());
        }
    }
    let prefix = names.netns_prefix();
    let mut existing = net::namespaces().await.unwrap_or_default();
    existing.extend(net::etc_netns_names());
    for ns in existing {
        if ns.starts_with(&prefix) {
            set.insert(ns);
        }
    }
    set.into_iter().collect()
}

/// Journaled links plus any existing one named like this testbed's; veth ends first.
async fn testbed_links(names: &Names, entries: &[Entry]) -> Vec<String> {
    let mut set: BTreeSet<String> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Link { name } => Some(name.clone()),
            _ => None,
        })
        .collect();
    for l in net::links().await.unwrap_or_default() {
        if names.owns_link(&l) {
            set.insert(l);
        }
    }
    let bridge = names.bridge();
    let mut links: Vec<String> = set.into_iter().filter(|l| *l != bridge).collect();
    links.push(bridge);
    links
}

/// Removes the state directory if it is a testbed's (holds a journal) or is empty.
fn remove_state_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let left = mounts::under(dir);
    if !left.is_empty() {
        bail!(
            "not removing {}: still mounted below it: {:?}",
            dir.display(),
            left.iter().map(|m| &m.path).collect::<Vec<_>>()
        );
    }
    let is_testbed = dir.join(journal::FILE_NAME).exists();
    let is_empty = std::fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false);
    if !is_testbed && !is_empty {
        bail!(
            "not removing {}: it is not a testbed state directory (no {})",
            dir.display(),
            journal::FILE_NAME
        );
    }
    // The journal goes last, so an interrupted removal can be repeated. Entries that vanish
    // meanwhile (another `down` of the same testbed running at once) are fine.
    let gone_ok = |r: std::io::Result<()>| match r {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_name() == journal::FILE_NAME {
            continue;
        }
        let path = entry.path();
        let res = match entry.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(e) => Err(e),
        };
        gone_ok(res).with_context(|| format!("cannot remove {}", path.display()))?;
    }
    gone_ok(std::fs::remove_file(dir.join(journal::FILE_NAME)))
        .with_context(|| format!("cannot remove the journal of {}", dir.display()))?;
    gone_ok(std::fs::remove_dir(dir)).with_context(|| format!("cannot remove {}", dir.display()))
}
