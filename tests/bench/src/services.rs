//! The processes the benchmark measures, started by the benchmark itself so that it knows their
//! pids and flags: the controller with `--metrics-address`, the node plugin the way the
//! DaemonSet runs it (`--fuse-launcher direct`, in the host's pid namespace). Both are journaled
//! in the testbed, so `down` stops them even after a crash of the benchmark.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::usage::{self, Usage};
use gluster_csi_testbed::journal::{Entry, Journal};
use gluster_csi_testbed::{Testbed, bin_path, csi, procs};

/// How long a service may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running service process.
#[derive(Debug)]
pub struct Service {
    /// `controller`, `node-plugin`, or a name of a reference driver instance.
    pub name: &'static str,
    argv: Vec<String>,
    child: Option<tokio::process::Child>,
    /// Host pid.
    pub pid: u32,
    /// Its socket.
    pub socket: PathBuf,
    /// `unix://` endpoint of the socket.
    pub endpoint: String,
    /// Its log file.
    pub log: PathBuf,
    /// Metrics address, when it serves metrics.
    pub metrics: Option<SocketAddr>,
    state_dir: PathBuf,
}

/// A free TCP port on the loopback address.
fn free_loopback_port() -> Result<u16> {
    let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("cannot find a free port on 127.0.0.1")?;
    Ok(l.local_addr()?.port())
}

impl Service {
    /// Starts the controller against the testbed's heketi-server, with metrics on a loopback
    /// port.
    pub async fn controller(tb: &Testbed, dir: &Path) -> Result<Service> {
        Self::controller_with(tb, dir, &[]).await
    }

    /// [`Self::controller`] with `extra` flags.
    pub async fn controller_with(tb: &Testbed, dir: &Path, extra: &[&str]) -> Result<Service> {
        let socket = dir.join("controller.sock");
        let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, free_loopback_port()?));
        let env = tb.env();
        let argv = vec![
            bin_path("gluster-csi-controller")?.display().to_string(),
            "--endpoint".into(),
            csi::endpoint(&socket),
            "--driver-name".into(),
            csi::DRIVER_NAME.into(),
            "--heketi-url".into(),
            env.heketi_url.clone(),
            "--heketi-user".into(),
            env.heketi_user.clone(),
            "--heketi-key-file".into(),
            env.heketi_key_file.display().to_string(),
            "--metrics-address".into(),
            metrics.to_string(),
        ]
        .into_iter()
        .chain(extra.iter().map(|a| (*a).to_owned()))
        .collect();
        let mut s = Service {
            name: "controller",
            argv,
            child: None,
            pid: 0,
            endpoint: csi::endpoint(&socket),
            socket,
            log: dir.join("controller.log"),
            metrics: Some(metrics),
            state_dir: tb.state_dir().to_path_buf(),
        };
        s.start().await?;
        Ok(s)
    }

    /// Starts the node plugin with `--fuse-launcher direct` (the DaemonSet's way), its state in
    /// `dir/node-state` and `dir/kubelet` as the kubelet directory.
    pub async fn node(tb: &Testbed, dir: &Path) -> Result<Service> {
        let socket = dir.join("node.sock");
        let kubelet = dir.join("kubelet");
        std::fs::create_dir_all(&kubelet)?;
        let argv = vec![
            bin_path("gluster-csi-node")?.display().to_string(),
            "--endpoint".into(),
            csi::endpoint(&socket),
            "--node-id".into(),
            "bench-node".into(),
            "--driver-name".into(),
            csi::DRIVER_NAME.into(),
            "--state-dir".into(),
            dir.join("node-state").display().to_string(),
            "--kubelet-dir".into(),
            kubelet.display().to_string(),
            "--fuse-launcher".into(),
            "direct".into(),
        ];
        let mut s = Service {
            name: "node-plugin",
            argv,
            child: None,
            pid: 0,
            endpoint: csi::endpoint(&socket),
            socket,
            log: dir.join("node-plugin.log"),
            metrics: None,
            state_dir: tb.state_dir().to_path_buf(),
        };
        s.start().await?;
        Ok(s)
    }

    /// Starts the Go reference driver of kubernetes-csi/csi-driver-host-path (`hostpathplugin`
    /// at `bin`), which serves Identity, Controller and Node on one socket; `name` tells its
    /// instances apart (socket, state directory and log in `dir`).
    pub async fn hostpath(
        tb: &Testbed,
        dir: &Path,
        bin: &Path,
        name: &'static str,
    ) -> Result<Service> {
        let socket = dir.join(format!("{name}.sock"));
        let argv = vec![
            bin.display().to_string(),
            "--endpoint".into(),
            csi::endpoint(&socket),
            "--nodeid".into(),
            "bench-node".into(),
            "--drivername".into(),
            "hostpath.csi.k8s.io".into(),
            "--statedir".into(),
            dir.join(format!("{name}-state")).display().to_string(),
        ];
        let mut s = Service {
            name,
            argv,
            child: None,
            pid: 0,
            endpoint: csi::endpoint(&socket),
            socket,
            log: dir.join(format!("{name}.log")),
            metrics: None,
            state_dir: tb.state_dir().to_path_buf(),
        };
        s.start().await?;
        Ok(s)
    }

    /// Starts (or restarts) the process and waits for its socket.
    pub async fn start(&mut self) -> Result<()> {
        let _ = std::fs::remove_file(&self.socket);
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot open {}", self.log.display()))?;
        let (program, args) = self.argv.split_first().context("empty argv")?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", self.name))?;
        let pid = child.id().context("the child has no pid")?;
        Journal::open(&self.state_dir)?.record(&Entry::Process {
            role: format!("bench-{}", self.name),
            pid,
            start: procs::start_time(pid).unwrap_or(0),
            pid_namespace: false,
        })?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                bail!(
                    "{} exited ({status}); log:\n{}",
                    self.name,
                    tail(&self.log, 20)
                );
            }
            if tokio::net::UnixStream::connect(&self.socket).await.is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not listen on {} within {START_TIMEOUT:?}; log:\n{}",
                    self.name,
                    self.socket.display(),
                    tail(&self.log, 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.pid = pid;
        self.child = Some(child);
        Ok(())
    }

    /// Stops the process: SIGTERM, then SIGKILL after 10 s.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        procs::signal(self.pid, Signal::SIGTERM);
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }

    /// Kills the process at once (a crash), so that the next start begins cold.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Its memory and CPU now.
    pub fn usage(&self) -> Result<Usage> {
        usage::of(self.pid).with_context(|| format!("{} (pid {}) is gone", self.name, self.pid))
    }

    /// The metrics page (OpenMetrics text).
    pub async fn metrics_text(&self) -> Result<String> {
        let addr = self.metrics.context("no metrics address")?;
        http_get(addr, "/metrics").await
    }
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A plain HTTP/1.1 GET on a loopback address; returns the body.
async fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        anyhow::Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .with_context(|| format!("GET http://{addr}{path} timed out"))??;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET http://{addr}{path}: no HTTP response"))?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!(
            "GET http://{addr}{path}: {}",
            head.lines().next().unwrap_or("")
        );
    }
    Ok(body.to_owned())
}

/// Sum of the counters `gluster_csi_controller_heketi_requests_total{operation=…}` by operation.
pub fn heketi_calls(metrics: &str) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("gluster_csi_controller_heketi_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let Some(op) = labels.split(',').find_map(|l| {
            l.strip_prefix("operation=\"")
                .and_then(|v| v.strip_suffix('"'))
        }) else {
            continue;
        };
        let v: f64 = value
            .split_whitespace()
            .next()
            .unwrap_or("")
            .parse()
            .unwrap_or(0.0);
        *out.entry(op.to_owned()).or_insert(0.0) += v;
    }
    out
}

/// Requests heketi-server logged (`heketi_server::http: request method=… path=…`), read from its
/// log file between two offsets.
#[derive(Debug)]
pub struct HeketiLog {
    path: PathBuf,
}

impl HeketiLog {
    /// The testbed's heketi-server log.
    pub fn of(tb: &Testbed) -> Self {
        Self {
            path: tb.state_dir().join("logs").join("heketi-server.log"),
        }
    }

    /// Current end of the log.
    pub fn mark(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    /// Every volume operation logged (begun and ended) after `mark`.
    pub fn ops_since(&self, mark: u64) -> Vec<LoggedOp> {
        parse_ops(&self.text_since(mark))
    }

    /// Every request logged after `mark`.
    pub fn requests_since(&self, mark: u64) -> Vec<LoggedRequest> {
        parse_requests(&self.text_since(mark))
    }

    /// The log's lines after `mark`.
    pub fn lines_since(&self, mark: u64) -> Vec<String> {
        self.text_since(mark).lines().map(str::to_owned).collect()
    }

    fn text_since(&self, mark: u64) -> String {
        use std::io::{Read, Seek, SeekFrom};
        let mut bytes = Vec::new();
        let read = std::fs::File::open(&self.path).and_then(|mut f| {
            f.seek(SeekFrom::Start(mark))?;
            f.read_to_end(&mut bytes)
        });
        if read.is_err() {
            return String::new();
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// A volume operation heketi-server ran, timed from its own log lines.
#[derive(Clone, Debug, PartialEq)]
pub struct LoggedOp {
    /// Volume name.
    pub name: String,
    /// A create (`creating volume` or `cloning volume` … `volume created`) or a delete (`deleting volume` …
    /// `volume deleted`).
    pub create: bool,
    /// Seconds between the two lines.
    pub secs: f64,
}

/// Seconds since midnight of a log line's leading RFC 3339 UTC timestamp.
fn line_time(line: &str) -> Option<f64> {
    let ts = line.split_whitespace().next()?;
    let time = ts.split_once('T')?.1.trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|w| w.strip_prefix(key))
}

/// The volume operations of heketi-server log text that both started and ended in it.
pub fn parse_ops(text: &str) -> Vec<LoggedOp> {
    let mut started: std::collections::HashMap<(String, bool), (String, f64)> =
        std::collections::HashMap::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if !line.contains("heketi_server::volumes: ") {
            continue;
        }
        let (Some(t), Some(id)) = (line_time(line), field(line, "volume=")) else {
            continue;
        };
        let id = id.to_owned();
        for (begin, end, create) in [
            ("creating volume", "volume created", true),
            ("cloning volume", "volume created", true),
            ("deleting volume", "volume deleted", false),
        ] {
            if line.contains(&format!(": {begin} ")) {
                let name = field(line, "name=").unwrap_or("").to_owned();
                started.insert((id.clone(), create), (name, t));
            } else if line.contains(&format!(": {end} "))
                && let Some((name, t0)) = started.remove(&(id.clone(), create))
            {
                let mut secs = t - t0;
                if secs < 0.0 {
                    secs += 86_400.0;
                }
                out.push(LoggedOp { name, create, secs });
            }
        }
    }
    out
}

/// One request heketi-server logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedRequest {
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Status code (0 when the line has none).
    pub status: u16,
}

/// The requests of heketi-server request log lines.
pub fn parse_requests(text: &str) -> Vec<LoggedRequest> {
    text.lines()
        .filter_map(|l| {
            let rest = l.split_once("heketi_server::http: request ")?.1;
            let field = |k: &str| {
                rest.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .map(str::to_owned)
            };
            Some(LoggedRequest {
                method: field("method=")?,
                path: field("path=")?,
                status: field("status=").and_then(|s| s.parse().ok()).unwrap_or(0),
            })
        })
        .collect()
}

/// The heketi-server process of the testbed.
pub fn heketi_pid(tb: &Testbed) -> Option<u32> {
    let needle = tb.state_dir().join("heketi").display().to_string();
    usage::pids_of("heketi-server", &needle).first().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_are_parsed() {
        let log = "\
2026-11-22T00:29:54.601897Z  INFO heketi_server::volumes: creating volume volume=1f
2026-11-22T00:29:54.602042Z  INFO heketi_server::http: request method=POST path=/volumes status=202 ms=16
2026-11-22T00:29:54.802042Z DEBUG heketi_server::http: request method=GET path=/queue/ab status=200 ms=0
";
        let r = parse_requests(log);
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].method.as_str(), r[0].path.as_str(), r[0].status),
            ("POST", "/volumes", 202)
        );
        assert_eq!(
            (r[1].method.as_str(), r[1].path.as_str(), r[1].status),
            ("GET", "/queue/ab", 200)
        );
    }

    #[test]
    fn operations_are_timed_from_their_log_lines() {
        let log = "\
2026-11-22T00:29:54.500000Z  INFO heketi_server::volumes: creating volume volume=aa name=csi_x size_gib=1
2026-11-22T00:29:55.000000Z  INFO heketi_server::volumes: creating volume volume=bb name=bench_direct_1 size_gib=1
2026-11-22T00:30:00.500000Z  INFO heketi_server::volumes: volume created volume=aa
2026-11-22T00:30:01.000000Z  INFO heketi_server::volumes: deleting volume volume=aa name=csi_x
2026-11-22T00:30:05.000000Z  INFO heketi_server::volumes: volume deleted volume=aa
";
        let ops = parse_ops(log);
        assert_eq!(
            ops,
            vec![
                LoggedOp {
                    name: "csi_x".into(),
                    create: true,
                    secs: 6.0
                },
                LoggedOp {
                    name: "csi_x".into(),
                    create: false,
                    secs: 4.0
                },
            ]
        );
    }

    #[test]
    fn heketi_counters_are_summed_by_operation() {
        let text = r#"# TYPE gluster_csi_controller_heketi_requests counter
gluster_csi_controller_heketi_requests_total{operation="volume_list",outcome="ok"} 3
gluster_csi_controller_heketi_requests_total{operation="volume_list",outcome="timeout"} 1
gluster_csi_controller_heketi_requests_total{operation="volume_info",outcome="ok"} 2
gluster_csi_controller_rpc_total{method="CreateVolume",code="ok"} 2
"#;
        let m = heketi_calls(text);
        assert_eq!(m.get("volume_list"), Some(&4.0));
        assert_eq!(m.get("volume_info"), Some(&2.0));
        assert_eq!(m.len(), 2);
    }
}
