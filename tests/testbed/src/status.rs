//! `status`: what of a testbed exists and runs, read from its state directory and the system.

use std::fmt::Write;
use std::path::Path;

use anyhow::Result;

use crate::journal::{self, Entry};
use crate::layout::Names;
use crate::testbed::read_info;
use crate::{mounts, net, procs};

/// A human-readable report on the testbed at `state_dir`.
pub async fn status(state_dir: &Path) -> Result<String> {
    let names = Names::new(state_dir)?;
    let dir = names.state_dir.as_path();
    let mut out = String::new();
    let entries = journal::read(dir);
    let namespaces = net::namespaces().await.unwrap_or_default();
    let links = net::links().await.unwrap_or_default();
    let ours_ns: Vec<&String> = namespaces
        .iter()
        .filter(|n| n.starts_with(&names.netns_prefix()))
        .collect();
    let ours_links: Vec<&String> = links.iter().filter(|l| names.owns_link(l)).collect();

    if entries.is_empty() && ours_ns.is_empty() && ours_links.is_empty() {
        writeln!(out, "no testbed at {}", dir.display())?;
        return Ok(out);
    }
    writeln!(out, "testbed {} (id {})", dir.display(), names.id)?;
    if let Ok(info) = read_info(dir) {
        writeln!(
            out,
            "bridge {} {}: {}",
            info.bridge,
            info.bridge_address,
            present(links.contains(&info.bridge))
        )?;
        for h in &info.hosts {
            let pids = net::namespace_pids(&h.netns).await;
            writeln!(
                out,
                "host {} {} netns {}: {}, {} processes",
                h.name,
                h.address,
                h.netns,
                present(namespaces.contains(&h.netns)),
                pids.len()
            )?;
        }
        if let Some(url) = &info.heketi_url {
            let how = match info.executor {
                crate::host::ExecutorKind::Ssh => "reaches the hosts over ssh",
                crate::host::ExecutorKind::Local => "works on the shared file system",
            };
            writeln!(out, "heketi-server {url} ({how})")?;
        }
        for (what, sock) in [
            ("controller", &info.controller_socket),
            ("node plugin", &info.node_socket),
        ] {
            if let Some(s) = sock {
                writeln!(
                    out,
                    "{what} unix://{}: {}",
                    s.display(),
                    present(s.exists())
                )?;
            }
        }
    } else {
        for ns in &ours_ns {
            writeln!(out, "netns {ns}: present")?;
        }
        for l in &ours_links {
            writeln!(out, "link {l}: present")?;
        }
    }

    writeln!(out, "processes:")?;
    for e in &entries {
        if let Entry::Process {
            role,
            pid,
            start,
            pid_namespace,
        } = e
        {
            let state = if procs::is_same(*pid, *start) {
                if *pid_namespace {
                    format!(
                        "running ({} processes in its pid namespace)",
                        procs::pid_namespace_members(*pid).len()
                    )
                } else {
                    "running".to_string()
                }
            } else {
                "gone".to_string()
            };
            writeln!(out, "  {role} pid {pid}: {state}")?;
        }
    }
    let mounted = mounts::under(dir);
    writeln!(out, "mounts under the state directory: {}", mounted.len())?;
    for m in mounted {
        writeln!(out, "  {} {} {}", m.path.display(), m.fstype, m.source)?;
    }
    for e in &entries {
        if let Entry::Mount { path } = e
            && !path.starts_with(dir)
            && mounts::is_mounted(path)
        {
            writeln!(out, "  {} (recorded)", path.display())?;
        }
    }
    Ok(out)
}

fn present(yes: bool) -> &'static str {
    if yes { "present" } else { "missing" }
}
