//! The real single-node Kubernetes of `../shared/k8s`, driven with its own `kubectl`, for the
//! end-to-end suite (`tests/tests/k8s_e2e.rs`).
//!
//! Nothing of that cluster is copied into the repository: [`Cluster::start`] runs its `up.sh`
//! where it lies (`$GLUSTER_CSI_K8S_DIR`, else `../shared/k8s` next to the repository) and uses
//! the `kubectl` and kubeconfig it leaves under `$K8S_HOME` (default `/var/lib/k8s-test`).
//! Images reach its containerd through its `load-image.sh`: there is no registry.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::cmd;

/// Environment variable naming the directory of the shared cluster (holding `up.sh`).
pub const K8S_DIR_ENV: &str = "GLUSTER_CSI_K8S_DIR";
/// The cluster's state directory, as its scripts read it.
pub const K8S_HOME_ENV: &str = "K8S_HOME";
const DEFAULT_K8S_HOME: &str = "/var/lib/k8s-test";

/// Time `up.sh` may take (a first start installs packages and builds the sidecar images).
const UP_TIMEOUT: Duration = Duration::from_secs(900);
/// The node's name and kubelet's root directory in that cluster.
const NODE: &str = "localhost";
const KUBELET_DIR: &str = "/var/lib/kubelet";
/// Free disk the suite asks for above kubelet's eviction threshold (see [`Cluster::check_disk`]).
pub const DISK_MARGIN: u64 = 2 << 30;
/// Time one `kubectl` call may take.
const KUBECTL_TIMEOUT: Duration = Duration::from_secs(180);

/// The repository's top directory (the parent of this crate's directory).
pub fn repo_dir() -> PathBuf {
    // This crate is tests/testbed.
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors().nth(2).unwrap_or(here).to_path_buf()
}

/// Where the shared cluster's scripts are: `$GLUSTER_CSI_K8S_DIR`, else `../shared/k8s` beside
/// the repository. A missing directory is an error that says so (the suite must never pass
/// without a cluster).
pub fn locate() -> Result<PathBuf> {
    let dir = match std::env::var_os(K8S_DIR_ENV) {
        Some(d) => PathBuf::from(d),
        None => repo_dir().join("../shared/k8s"),
    };
    if !dir.join("up.sh").is_file() {
        bail!(
            "no Kubernetes test cluster at {} (no up.sh there): the real-Kubernetes end-to-end \
             suite needs the single-node cluster of ../shared/k8s; set {K8S_DIR_ENV} to its \
             directory",
            dir.display()
        );
    }
    Ok(dir)
}

/// A running cluster and how to talk to it.
#[derive(Clone, Debug)]
pub struct Cluster {
    dir: PathBuf,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
}

impl Cluster {
    /// Starts the cluster at `dir` (its `up.sh` starts only what is not running yet) and waits
    /// until the API server answers.
    pub async fn start(dir: &Path) -> Result<Cluster> {
        let up = dir.join("up.sh");
        // up.sh checks the bridge's address with `ip addr show … | grep -q …` under pipefail:
        // once the bridge has an IPv6 address too, `grep -q` may exit before `ip` has written
        // everything, `ip` fails on the closed pipe and up.sh tries to add the address again
        // ("Address already assigned"). A second run passes; give it three.
        let mut out = cmd::output(&[up.as_os_str()], UP_TIMEOUT).await?;
        for _ in 0..2 {
            if out.status.success() {
                break;
            }
            out = cmd::output(&[up.as_os_str()], UP_TIMEOUT).await?;
        }
        if !out.status.success() {
            bail!(
                "{} failed ({}):\n{}{}",
                up.display(),
                out.status,
                tail(&String::from_utf8_lossy(&out.stdout), 30),
                tail(&String::from_utf8_lossy(&out.stderr), 30)
            );
        }
        let home = std::env::var_os(K8S_HOME_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_K8S_HOME));
        let cluster = Cluster {
            dir: dir.to_path_buf(),
            kubectl: home.join("bin/kubectl"),
            kubeconfig: home.join("conf/admin.kubeconfig"),
        };
        cluster
            .kubectl(&["get", "--raw", "/readyz"])
            .await
            .context("the API server does not answer after up.sh")?;
        cluster.check_disk().await?;
        Ok(cluster)
    }

    /// Fails, saying how full the disk is, when the node's kubelet reports disk pressure or the
    /// disk under `/var/lib/kubelet` is close to kubelet's eviction threshold. Under disk
    /// pressure kubelet taints the node (nothing new schedules), evicts pods and deletes every
    /// image no container uses, the pause image included, which cannot be pulled back here:
    /// each trial would then only time out. The cluster's threshold is 1% free
    /// (`evictionHard`, nodefs.available); this asks for that plus [`DISK_MARGIN`], the room the
    /// suite's images, containers and logs take.
    pub async fn check_disk(&self) -> Result<()> {
        let stat = nix::sys::statvfs::statvfs(KUBELET_DIR)
            .with_context(|| format!("statvfs {KUBELET_DIR}"))?;
        let block = stat.fragment_size() as u64;
        let total = stat.blocks() as u64 * block;
        let avail = stat.blocks_available() as u64 * block;
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        let disk = format!(
            "{:.1} GiB free of {:.1} GiB ({:.1}%) on the file system of {KUBELET_DIR}",
            gib(avail),
            gib(total),
            100.0 * avail as f64 / total.max(1) as f64
        );
        let node = self.json(&["get", "node", NODE]).await?;
        let pressure = node["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "DiskPressure" && c["status"] == "True");
        if pressure {
            bail!(
                "node {NODE} reports DiskPressure ({disk}): kubelet has tainted it and deletes \
                 unused images; free disk space (kubelet lifts the taint about 5 minutes later)"
            );
        }
        if avail < total / 100 + DISK_MARGIN {
            bail!(
                "{disk}: kubelet evicts pods and deletes images below 1% free, and this suite \
                 needs {:.1} GiB above that; free disk space first",
                gib(DISK_MARGIN)
            );
        }
        Ok(())
    }

    /// Runs `kubectl ARGS` with the cluster's admin kubeconfig; fails unless it exits 0.
    pub async fn kubectl(&self, args: &[&str]) -> Result<String> {
        let mut argv: Vec<String> = vec![
            self.kubectl.display().to_string(),
            format!("--kubeconfig={}", self.kubeconfig.display()),
        ];
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        cmd::run(&argv, KUBECTL_TIMEOUT).await
    }

    /// `kubectl ARGS -o json`, parsed.
    pub async fn json(&self, args: &[&str]) -> Result<Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.kubectl(&all).await?;
        serde_json::from_str(&out).with_context(|| format!("kubectl {}: not JSON", args.join(" ")))
    }

    /// `kubectl apply -f FILE` of `yaml`, written to `scratch/NAME.yaml` first.
    pub async fn apply_yaml(&self, scratch: &Path, name: &str, yaml: &str) -> Result<String> {
        let file = scratch.join(format!("{name}.yaml"));
        std::fs::write(&file, yaml).with_context(|| format!("writing {}", file.display()))?;
        self.kubectl(&["apply", "-f", &file.display().to_string()])
            .await
    }

    /// Imports an image archive (docker-archive or oci-archive) into the cluster's containerd.
    pub async fn load_image(&self, archive: &Path) -> Result<()> {
        let script = self.dir.join("load-image.sh");
        cmd::run(
            &[script.as_os_str(), archive.as_os_str()],
            Duration::from_secs(300),
        )
        .await
        .map(drop)
    }

    /// The kubelet's log, for failure messages.
    pub fn kubelet_log_tail(&self, lines: usize) -> String {
        let home = self
            .kubeconfig
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        std::fs::read_to_string(home.join("log/kubelet.log"))
            .map(|s| tail(&s, lines))
            .unwrap_or_default()
    }
}

/// Calls `probe` every `every` until it succeeds, or fails after `limit` with `what` and the
/// last error `probe` gave (a probe says "not yet, because …" by returning an error).
pub async fn wait_for<T, F, Fut>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut probe: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let start = Instant::now();
    loop {
        match probe().await {
            Ok(v) => return Ok(v),
            Err(e) if start.elapsed() >= limit => {
                return Err(e.context(format!("{what}: not reached within {limit:?}")));
            }
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `obj[a][b]…` as a string, or "" when absent.
pub fn field<'a>(obj: &'a Value, path: &[&str]) -> &'a str {
    let mut v = obj;
    for p in path {
        v = &v[*p];
    }
    v.as_str().unwrap_or("")
}
