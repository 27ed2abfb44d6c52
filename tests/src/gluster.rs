//! The Gluster hosts: one glusterd per network namespace, joined into one trusted pool.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cmd::{self, GLUSTER};
use crate::daemon;
use crate::journal::Journal;
use crate::layout::GlusterHost;

/// How long a glusterd may take to answer after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the pool may take to show every peer connected.
const POOL_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the gluster CLI on `host` with `args` and returns its standard output.
pub async fn cli(host: &GlusterHost, args: &[&str]) -> Result<String> {
    let mut argv = host.gluster_argv();
    argv.extend(args.iter().map(|a| a.to_string()));
    cmd::run(&argv, GLUSTER).await
}

/// Prepares `host`'s directories and identity, and starts its glusterd (in the foreground, so the
/// journaled pid is glusterd's own).
pub fn start_glusterd(host: &GlusterHost, journal: &Journal) -> Result<Child> {
    let glusterd = cmd::require("glusterd", "install glusterfs-server")?;
    for d in [
        &host.working_dir,
        &host.run_dir,
        &host.log_dir,
        &host.brick_root,
    ] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let info = host.working_dir.join("glusterd.info");
    if !info.exists() {
        std::fs::write(
            &info,
            format!(
                "UUID={}\noperating-version=100000\n",
                uuid::Uuid::new_v4().hyphenated()
            ),
        )
        .with_context(|| format!("cannot write {}", info.display()))?;
    }
    let argv = glusterd_argv(host, &glusterd);
    daemon::spawn(
        &glusterd_role(host),
        &argv,
        &host.log_dir.join("glusterd.out"),
        journal,
        false,
    )
}

/// The journal role of `host`'s glusterd.
pub fn glusterd_role(host: &GlusterHost) -> String {
    format!("glusterd-{}", host.name)
}

fn glusterd_argv(host: &GlusterHost, glusterd: &Path) -> Vec<String> {
    let opt = |k: &str, v: &Path| format!("management.{k}={}", v.display());
    vec![
        "ip".into(),
        "netns".into(),
        "exec".into(),
        host.netns.clone(),
        glusterd.display().to_string(),
        "-N".into(),
        "--xlator-option".into(),
        opt("working-directory", &host.working_dir),
        "--xlator-option".into(),
        opt("run-directory", &host.run_dir),
        "--xlator-option".into(),
        opt("glusterd-sockfile", &host.glusterd_socket),
        "-p".into(),
        host.run_dir.join("glusterd.pid").display().to_string(),
        "-l".into(),
        host.log_dir.join("glusterd.log").display().to_string(),
    ]
}

/// Waits until `host`'s glusterd answers the CLI; fails early if `exited` reports it gone.
pub async fn wait_glusterd(host: &GlusterHost, exited: impl Fn() -> Option<String>) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = exited() {
            bail!(
                "glusterd of {} exited ({status}); its log ends with:\n{}",
                host.name,
                daemon::tail(&host.log_dir.join("glusterd.log"), 20)
            );
        }
        let mut argv = host.gluster_argv();
        argv.extend(["pool".to_string(), "list".to_string()]);
        if let Ok(out) = cmd::output(&argv, Duration::from_secs(10)).await
            && out.status.success()
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "glusterd of {} did not answer within {START_TIMEOUT:?}; its log ends with:\n{}",
                host.name,
                daemon::tail(&host.log_dir.join("glusterd.log"), 20)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Probes every other host from the first one and waits until each host sees all others as
/// `Peer in Cluster (Connected)`.
pub async fn form_pool(hosts: &[GlusterHost]) -> Result<()> {
    let Some((first, others)) = hosts.split_first() else {
        return Ok(());
    };
    for h in others {
        let addr = h.address.to_string();
        cli(first, &["peer", "probe", &addr])
            .await
            .with_context(|| format!("probing {} from {}", h.name, first.name))?;
    }
    let deadline = Instant::now() + POOL_TIMEOUT;
    for h in hosts {
        loop {
            let status = cli(h, &["peer", "status"]).await.unwrap_or_default();
            let connected = connected_peers(&status);
            if connected == hosts.len() - 1 {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} sees {connected} of {} peers connected after {POOL_TIMEOUT:?}:\n{status}",
                    h.name,
                    hosts.len() - 1
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// Number of peers in `gluster peer status` output that are in the pool and connected.
pub fn connected_peers(peer_status: &str) -> usize {
    peer_status
        .lines()
        .filter(|l| l.trim() == "State: Peer in Cluster (Connected)")
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connected_pool_members_count() {
        let out = "Number of Peers: 3\n\nHostname: 198.18.0.12\nUuid: a\n\
                   State: Peer in Cluster (Connected)\n\nHostname: 198.18.0.13\nUuid: b\n\
                   State: Peer in Cluster (Disconnected)\n\nHostname: 198.18.0.14\nUuid: c\n\
                   State: Accepted peer request (Connected)\n";
        assert_eq!(connected_peers(out), 1);
    }
}
