//! Names, addresses and paths of a testbed, all derived from its state directory so that two
//! testbeds with different state directories never collide.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Number of /24 subnets in 198.18.0.0/15 (the benchmarking range, RFC 2544).
pub const SUBNETS: u32 = 512;
/// Most hosts a testbed may have (addresses .11 up to .210).
pub const MAX_HOSTS: usize = 200;
/// Longest state directory path accepted: unix socket paths (glusterd's, the CSI sockets) must
/// stay under the kernel's 108-byte limit.
pub const MAX_STATE_DIR_LEN: usize = 64;

/// The absolute, symlink-free form of `dir`, also when `dir` (but not its parent) is missing,
/// so that `up` and a later `down` derive the same names.
pub fn canonical_state_dir(dir: &Path) -> Result<PathBuf> {
    if let Ok(p) = dir.canonicalize() {
        return Ok(p);
    }
    let abs = std::path::absolute(dir)
        .with_context(|| format!("cannot make {} absolute", dir.display()))?;
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => match parent.canonicalize() {
            Ok(p) => Ok(p.join(name)),
            Err(_) => Ok(abs),
        },
        _ => Ok(abs),
    }
}

/// Short hex id of a state directory (first 8 hex digits of the SHA-256 of its canonical path).
pub fn testbed_id(canonical: &Path) -> String {
    let digest = Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    hex::encode(&digest[..4])
}

/// Where the hash puts the testbed's subnet before free-subnet probing (0..SUBNETS).
pub fn preferred_subnet(id: &str) -> u32 {
    u32::from_str_radix(id, 16).unwrap_or(0) % SUBNETS
}

/// The first three octets of subnet number `n` of 198.18.0.0/15.
pub fn subnet_prefix(n: u32) -> [u8; 3] {
    let n = n % SUBNETS;
    // n < 512, so both parts fit in a byte.
    [198, 18 + (n / 256) as u8, (n % 256) as u8]
}

/// The static part of a testbed's layout: everything derived from the state directory alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Names {
    /// Canonical state directory.
    pub state_dir: PathBuf,
    /// 8 hex digits derived from `state_dir`.
    pub id: String,
}

impl Names {
    /// Derives the names for `state_dir` (made canonical here).
    pub fn new(state_dir: &Path) -> Result<Self> {
        let state_dir = canonical_state_dir(state_dir)?;
        let id = testbed_id(&state_dir);
        Ok(Self { state_dir, id })
    }

    /// Prefix of every network namespace of this testbed.
    pub fn netns_prefix(&self) -> String {
        format!("gcsi-{}-", self.id)
    }

    /// Network namespace of host `n` (1-based).
    pub fn netns(&self, n: usize) -> String {
        format!("{}{n}", self.netns_prefix())
    }

    /// The bridge in the root namespace (11 characters).
    pub fn bridge(&self) -> String {
        format!("gcb{}", self.id)
    }

    /// Prefix of every veth end in the root namespace.
    pub fn veth_prefix(&self) -> String {
        format!("gcv{}-", self.id)
    }

    /// Root-namespace end of host `n`'s veth pair (at most 15 characters for n ≤ 999).
    pub fn veth(&self, n: usize) -> String {
        format!("{}{n}", self.veth_prefix())
    }

    /// Whether a link name belongs to this testbed.
    pub fn owns_link(&self, link: &str) -> bool {
        link == self.bridge() || link.starts_with(&self.veth_prefix())
    }

    /// Directory of host `n` (1-based).
    pub fn host_dir(&self, n: usize) -> PathBuf {
        self.state_dir.join(format!("h{n}"))
    }

    /// Directory holding every host's disk (the backing store of its device), seen only from the
    /// root namespace: each host sees its own disk at its device path and none of the others.
    pub fn disks_dir(&self) -> PathBuf {
        self.state_dir.join("disks")
    }

    /// Directory of the SSH keys the testbed's heketi-server uses (client key, known_hosts).
    pub fn ssh_dir(&self) -> PathBuf {
        self.state_dir.join("ssh")
    }

    /// Directory for daemon logs.
    pub fn log_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }

    /// Checks that the state directory path is short enough for the sockets under it.
    pub fn check_path_length(&self) -> Result<()> {
        let len = self.state_dir.as_os_str().len();
        if len > MAX_STATE_DIR_LEN {
            bail!(
                "state directory {} is {len} bytes long; at most {MAX_STATE_DIR_LEN} are \
                 allowed so that unix socket paths under it fit the kernel's limit",
                self.state_dir.display()
            );
        }
        Ok(())
    }
}

/// One Gluster host: a network namespace with its own glusterd.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlusterHost {
    /// Position in [`crate::Testbed::hosts`] (0-based).
    pub index: usize,
    /// Short name, `h1`, `h2`, … (1-based).
    pub name: String,
    /// Network namespace the host's processes run in.
    pub netns: String,
    /// Address of the host on the testbed bridge; used as peer, node and brick address.
    pub address: Ipv4Addr,
    /// Root-namespace end of the host's veth pair.
    pub veth: String,
    /// glusterd working directory (`glusterd.info`, `peers/`, `vols/`).
    pub working_dir: PathBuf,
    /// glusterd run directory (pid files, sockets).
    pub run_dir: PathBuf,
    /// glusterd log directory.
    pub log_dir: PathBuf,
    /// The host's device: the directory bricks are made under.
    pub brick_root: PathBuf,
    /// glusterd's management socket, for `gluster --glusterd-sock`.
    pub glusterd_socket: PathBuf,
    /// The host's disk as the root namespace sees it. With a private device (the SSH executor)
    /// it is mounted at `brick_root` in the host's mount namespace only; otherwise unused.
    #[serde(default)]
    pub disk: PathBuf,
    /// The host's sshd configuration and host key.
    #[serde(default)]
    pub ssh_dir: PathBuf,
}

impl GlusterHost {
    /// Host `index` (0-based) of a testbed with these names and subnet prefix.
    pub fn new(names: &Names, prefix: [u8; 3], index: usize) -> Self {
        let n = index + 1;
        let dir = names.host_dir(n);
        let run_dir = dir.join("run");
        // index < MAX_HOSTS keeps the last octet in 11..=210.
        let last = u8::try_from(10 + n).unwrap_or(u8::MAX);
        Self {
            index,
            name: format!("h{n}"),
            netns: names.netns(n),
            address: Ipv4Addr::new(prefix[0], prefix[1], prefix[2], last),
            veth: names.veth(n),
            working_dir: dir.join("wd"),
            glusterd_socket: run_dir.join("gd.sock"),
            run_dir,
            log_dir: dir.join("log"),
            brick_root: dir.join("bricks"),
            disk: names.disks_dir().join(format!("h{n}")),
            ssh_dir: dir.join("ssh"),
        }
    }

    /// argv prefix that runs the gluster CLI against this host's glusterd, in script mode.
    pub fn gluster_argv(&self) -> Vec<String> {
        let mut argv = self.gluster_cmd();
        argv.push("--mode=script".into());
        argv
    }

    /// argv prefix that runs the gluster CLI against this host's glusterd (no `--mode`).
    pub fn gluster_cmd(&self) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.netns.clone(),
            "gluster".into(),
            format!("--glusterd-sock={}", self.glusterd_socket.display()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_linux_limits_and_differ_between_state_dirs() -> Result<()> {
        let a = Names::new(Path::new("/tmp/gcsi-a"))?;
        let b = Names::new(Path::new("/tmp/gcsi-b"))?;
        assert_ne!(a.id, b.id);
        assert_ne!(a.bridge(), b.bridge());
        assert!(a.bridge().len() <= 15);
        assert!(a.veth(999).len() <= 15);
        assert!(a.owns_link(&a.veth(3)));
        assert!(a.owns_link(&a.bridge()));
        assert!(!a.owns_link(&b.veth(3)));
        assert!(!a.owns_link(&b.bridge()));
        Ok(())
    }

    #[test]
    fn names_are_stable_for_a_state_dir() -> Result<()> {
        let a = Names::new(Path::new("/tmp/gcsi-stable"))?;
        let b = Names::new(Path::new("/tmp/./gcsi-stable"))?;
        assert_eq!(a, b);
        Ok(())
    }

    #[test]
    fn subnets_cover_198_18_slash_15() {
        assert_eq!(subnet_prefix(0), [198, 18, 0]);
        assert_eq!(subnet_prefix(255), [198, 18, 255]);
        assert_eq!(subnet_prefix(256), [198, 19, 0]);
        assert_eq!(subnet_prefix(511), [198, 19, 255]);
        assert_eq!(subnet_prefix(512), [198, 18, 0]);
    }

    #[test]
    fn host_addresses_and_paths() -> Result<()> {
        let names = Names::new(Path::new("/tmp/gcsi-h"))?;
        let h = GlusterHost::new(&names, [198, 19, 7], 2);
        assert_eq!(h.name, "h3");
        assert_eq!(h.address, Ipv4Addr::new(198, 19, 7, 13));
        assert_eq!(h.netns, names.netns(3));
        assert!(h.glusterd_socket.starts_with(&names.state_dir));
        assert_eq!(
            h.gluster_argv().last().map(String::as_str),
            Some("--mode=script")
        );
        Ok(())
    }

    #[test]
    fn long_state_dirs_are_refused() -> Result<()> {
        let long = format!("/tmp/{}", "x".repeat(MAX_STATE_DIR_LEN));
        assert!(Names::new(Path::new(&long))?.check_path_length().is_err());
        assert!(
            Names::new(Path::new("/tmp/gcsi-short"))?
                .check_path_length()
                .is_ok()
        );
        Ok(())
    }
}
