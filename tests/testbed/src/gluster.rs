//! The Gluster hosts: one glusterd per network namespace, joined into one trusted pool.
//!
//! Gluster keeps some run-time files at a path compiled into it, `/var/run/gluster` (`/run/gluster`
//! on Debian, where `/var/run` is a link to `/run`), whatever glusterd's own run directory is:
//! the sockets and pid files of the quota daemon, the self-heal daemon and the bit-rot daemons,
//! quota's auxiliary mounts. On one machine every host would share it, and the daemons of one
//! host would take over (or delete) those of another — with a single working quotad for all,
//! writes to quota-enabled volumes fail once it is not the right one. So each host's glusterd
//! runs in the host's own mount namespace ([`crate::host`]) in which `/var/run/gluster` is a bind
//! mount of the host's directory `hN/var-run-gluster`, set up by [`host_exec`]
//! (`gluster-csi-testbed host-exec`). Bricks and daemons glusterd starts inherit it.

use std::convert::Infallible;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::mount::MsFlags;

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

/// The path compiled into Gluster for its daemons' sockets and pid files.
pub const GLUSTER_VAR_RUN: &str = "/var/run/gluster";

/// The `gluster-csi-testbed` binary (for `host-exec`): the running executable when it is that
/// binary, else found like the project's other binaries ([`crate::bin_path`]).
pub fn testbed_bin() -> Result<PathBuf> {
    const NAME: &str = "gluster-csi-testbed";
    if let Ok(exe) = std::env::current_exe()
        && exe.file_name().is_some_and(|n| n == NAME)
    {
        return Ok(exe);
    }
    crate::bin_path(NAME)
}

/// `host`'s own directory mounted at [`GLUSTER_VAR_RUN`] in its glusterd's mount namespace.
pub fn var_run_dir(host: &GlusterHost) -> PathBuf {
    host.run_dir.with_file_name("var-run-gluster")
}

/// Prepares `host`'s directories and identity, and starts its glusterd (in the foreground, so the
/// journaled pid is glusterd's own) in the namespaces of the host's holder `holder`.
pub fn start_glusterd(host: &GlusterHost, holder: u32, journal: &Journal) -> Result<Child> {
    let glusterd = cmd::require("glusterd", "install glusterfs-server")?;
    let var_run = var_run_dir(host);
    for d in [
        &host.working_dir,
        &host.run_dir,
        &host.log_dir,
        &host.brick_root,
        &var_run,
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
    let argv = glusterd_argv(host, &glusterd, holder);
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

/// `nsenter -t HOLDER -m -n -- glusterd -N …`: nsenter executes glusterd in place, so the
/// journaled pid is glusterd's.
fn glusterd_argv(host: &GlusterHost, glusterd: &Path, holder: u32) -> Vec<String> {
    let opt = |k: &str, v: &Path| format!("management.{k}={}", v.display());
    let mut argv = crate::host::enter_argv(holder);
    argv.extend([
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
    ]);
    argv
}

/// What `gluster-csi-testbed host-exec` sets up in its new mount namespace, in this order:
/// tmpfs mounts, bind mounts, directories, symbolic links, and last the `hide` tmpfs mounts
/// (which cover what is under them, e.g. the other hosts' disks).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostSetup {
    /// Directories that get an empty tmpfs (mode 0755).
    pub tmpfs: Vec<PathBuf>,
    /// `(source, destination)` bind mounts (both made if missing).
    pub binds: Vec<(PathBuf, PathBuf)>,
    /// Directories to make (mode 0755).
    pub dirs: Vec<PathBuf>,
    /// `(target, link)` symbolic links to make.
    pub symlinks: Vec<(PathBuf, PathBuf)>,
    /// Directories covered by an empty tmpfs after everything else.
    pub hide: Vec<PathBuf>,
}

impl HostSetup {
    /// The `host-exec` flags that describe it.
    pub fn args(&self) -> Vec<String> {
        let mut a = Vec::new();
        let pair = |x: &Path, y: &Path| format!("{}:{}", x.display(), y.display());
        for t in &self.tmpfs {
            a.extend(["--tmpfs".into(), t.display().to_string()]);
        }
        for (src, dst) in &self.binds {
            a.extend(["--bind".into(), pair(src, dst)]);
        }
        for d in &self.dirs {
            a.extend(["--mkdir".into(), d.display().to_string()]);
        }
        for (target, link) in &self.symlinks {
            a.extend(["--symlink".into(), pair(target, link)]);
        }
        for h in &self.hide {
            a.extend(["--hide".into(), h.display().to_string()]);
        }
        a
    }
}

/// A `--bind SRC:DST` (or `--symlink TARGET:LINK`) of `host-exec`: two absolute paths separated
/// by the first `:`.
pub fn parse_bind(text: &str) -> std::result::Result<(PathBuf, PathBuf), String> {
    let (src, dst) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not SRC:DST"))?;
    let (src, dst) = (PathBuf::from(src), PathBuf::from(dst));
    if !src.is_absolute() || !dst.is_absolute() {
        return Err(format!("{text:?}: both paths must be absolute"));
    }
    Ok((src, dst))
}

/// What `gluster-csi-testbed host-exec` does: moves this process into a mount namespace of its
/// own (mounts of the parent's still show up in it, none of its own leave it), carries out
/// `setup`, then executes `argv` in place — no shell, no fork, same pid. Returns only on
/// failure.
pub fn host_exec(setup: &HostSetup, argv: &[OsString]) -> anyhow::Error {
    match enter_and_exec(setup, argv) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn mount_tmpfs(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("host-exec: cannot create {}", dir.display()))?;
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755,size=64m"),
    )
    .with_context(|| format!("host-exec: cannot mount a tmpfs on {}", dir.display()))
}

fn enter_and_exec(setup: &HostSetup, argv: &[OsString]) -> Result<Infallible> {
    let (program, args) = argv.split_first().context("host-exec: no command given")?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .context("host-exec: cannot make a mount namespace (needs root)")?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .context("host-exec: cannot make / a slave mount")?;
    for dir in &setup.tmpfs {
        mount_tmpfs(dir)?;
    }
    for (src, dst) in &setup.binds {
        for d in [src, dst] {
            std::fs::create_dir_all(d)
                .with_context(|| format!("host-exec: cannot create {}", d.display()))?;
        }
        nix::mount::mount(
            Some(src.as_path()),
            dst.as_path(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .with_context(|| {
            format!(
                "host-exec: cannot bind-mount {} on {}",
                src.display(),
                dst.display()
            )
        })?;
    }
    for dir in &setup.dirs {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("host-exec: cannot create {}", dir.display()))?;
    }
    for (target, link) in &setup.symlinks {
        std::os::unix::fs::symlink(target, link).with_context(|| {
            format!(
                "host-exec: cannot link {} to {}",
                link.display(),
                target.display()
            )
        })?;
    }
    for dir in &setup.hide {
        mount_tmpfs(dir)?;
    }
    let err = std::process::Command::new(program).args(args).exec();
    Err(anyhow::Error::new(err).context(format!(
        "host-exec: cannot execute {}",
        Path::new(program).display()
    )))
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
    fn binds_are_two_absolute_paths() {
        assert_eq!(
            parse_bind("/s/h1/var-run-gluster:/var/run/gluster"),
            Ok((
                PathBuf::from("/s/h1/var-run-gluster"),
                PathBuf::from("/var/run/gluster")
            ))
        );
        for bad in ["/a", "a:/b", "/a:b", ":/b", "/a:"] {
            assert!(parse_bind(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn glusterd_starts_in_its_host_namespaces() -> Result<()> {
        let names = crate::layout::Names::new(Path::new("/tmp/gcsi-argv"))?;
        let host = GlusterHost::new(&names, [198, 18, 1], 0);
        let argv = glusterd_argv(&host, Path::new("/usr/sbin/glusterd"), 4242);
        let dash = argv.iter().position(|a| a == "--").context("no --")?;
        assert_eq!(argv[..dash], ["nsenter", "-t", "4242", "-m", "-n"]);
        assert_eq!(argv[dash + 1], "/usr/sbin/glusterd");
        assert!(var_run_dir(&host).starts_with(names.host_dir(1)));
        Ok(())
    }

    #[test]
    fn host_setup_flags_keep_their_order_of_application() {
        let s = HostSetup {
            tmpfs: vec!["/run".into()],
            binds: vec![("/s/v".into(), "/var/run/gluster".into())],
            dirs: vec!["/run/sshd".into()],
            symlinks: vec![("/s/gd.sock".into(), "/run/glusterd.socket".into())],
            hide: vec!["/s/disks".into()],
        };
        assert_eq!(
            s.args(),
            [
                "--tmpfs",
                "/run",
                "--bind",
                "/s/v:/var/run/gluster",
                "--mkdir",
                "/run/sshd",
                "--symlink",
                "/s/gd.sock:/run/glusterd.socket",
                "--hide",
                "/s/disks"
            ]
        );
    }

    #[test]
    fn only_connected_pool_members_count() {
        let out = "Number of Peers: 3\n\nHostname: 198.18.0.12\nUuid: a\n\
                   State: Peer in Cluster (Connected)\n\nHostname: 198.18.0.13\nUuid: b\n\
                   State: Peer in Cluster (Disconnected)\n\nHostname: 198.18.0.14\nUuid: c\n\
                   State: Accepted peer request (Connected)\n";
        assert_eq!(connected_peers(out), 1);
    }
}
