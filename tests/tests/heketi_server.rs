//! heketi-server against real glusterd: the Heketi REST contract (routes, status codes, headers,
//! plain-text errors, JWT, the exact keys of Heketi v10's replies), real volumes (bricks on
//! distinct hosts, quota size in `df`, group ownership, expand, clone, delete), throttling, and
//! crash recovery after `kill -9`.
//!
//! One testbed (four Gluster hosts, no heketi-server of its own) serves every trial. Each trial
//! runs its own heketi-server process (own state directory, port and device subdirectories) so
//! trials can run in parallel and a trial may kill its server. Host 4 belongs to no topology
//! except the check that detaches and probes it, which runs before the other trials.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail, ensure};
use gluster_csi_testbed::journal::{Entry, Journal};
use gluster_csi_testbed::{Testbed, TestbedOptions, bin_path, harness, procs};
use heketi_client::types::{
    ClusterInfoResponse, ClusterListResponse, DeviceInfoResponse, NodeInfoResponse,
    VolumeInfoResponse, VolumeListResponse,
};
use libtest_mimic::{Failed, Trial};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const HOSTS: usize = 4;
/// Hosts the per-trial topologies use (host 4 is left out).
const TOPOLOGY_HOSTS: usize = 3;
/// Declared size of every test device: 100 GiB.
const DEVICE_KIB: u64 = 100 * 1024 * 1024;
const GIB: u64 = 1 << 30;
/// Longest one asynchronous operation may take before the trial fails.
const OP_TIMEOUT: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_millis(400);

fn main() {
    let opts = TestbedOptions::gluster_only(PathBuf::new(), HOSTS);
    harness::run(opts, |tb| {
        // Probing and detaching a peer starts and stops its quota daemon, and Gluster's quota
        // daemons share one socket path per machine: doing it while other trials use quota
        // volumes could leave their bricks without a quota daemon. So this check runs alone,
        // before every other trial, and its outcome is reported as a trial.
        let listing = std::env::args().any(|a| a == "--list");
        let probe = if listing {
            Ok(())
        } else {
            harness::block_on(node_add_probes_and_delete_detaches(Arc::clone(&tb)))
                .map_err(|e| format!("{e:#}"))
        };
        vec![
            Trial::test(
                "node_add_probes_a_new_peer_and_delete_detaches_it",
                move || probe.map_err(Failed::from),
            ),
            harness::trial(
                "hello_metrics_and_unknown_paths",
                &tb,
                hello_metrics_and_unknown_paths,
            ),
            harness::trial("jwt_errors_are_heketis", &tb, jwt_errors_are_heketis),
            harness::trial(
                "disabled_auth_needs_no_token",
                &tb,
                disabled_auth_needs_no_token,
            ),
            harness::trial("cluster_routes", &tb, cluster_routes),
            harness::trial(
                "a_queue_poll_asking_to_wait_is_answered_when_the_operation_ends",
                &tb,
                a_queue_poll_asking_to_wait_is_answered_when_the_operation_ends,
            ),
            harness::trial("node_and_device_routes", &tb, node_and_device_routes),
            harness::trial(
                "replica3_bricks_on_three_hosts_mount_write_read_df_gid",
                &tb,
                replica3_bricks_on_three_hosts_mount_write_read_df_gid,
            ),
            harness::trial(
                "expand_shows_in_df_and_accounting",
                &tb,
                expand_shows_in_df_and_accounting,
            ),
            harness::trial(
                "clone_holds_the_source_data",
                &tb,
                clone_holds_the_source_data,
            ),
            harness::trial(
                "read_only_clone_refuses_writes_and_its_clone_is_writable",
                &tb,
                read_only_clone_refuses_writes_and_its_clone_is_writable,
            ),
            harness::trial(
                "clone_of_a_source_being_written_is_rejected_then_made_once_writes_stop",
                &tb,
                clone_of_a_source_being_written_is_rejected_then_made_once_writes_stop,
            ),
            harness::trial(
                "kill9_during_clones_ends_rolled_back_or_read_only_without_mounts",
                &tb,
                kill9_during_clones_ends_rolled_back_or_read_only_without_mounts,
            ),
            harness::trial(
                "delete_leaves_no_brick_directory",
                &tb,
                delete_leaves_no_brick_directory,
            ),
            harness::trial(
                "disperse_and_distribute_volumes",
                &tb,
                disperse_and_distribute_volumes,
            ),
            harness::trial(
                "twenty_concurrent_creates_end_created_or_429",
                &tb,
                twenty_concurrent_creates_end_created_or_429,
            ),
            harness::trial(
                "kill9_during_creates_then_restart_lists_agree_with_gluster",
                &tb,
                kill9_during_creates_then_restart_lists_agree_with_gluster,
            ),
            harness::trial(
                "error_paths_give_heketi_codes_and_text",
                &tb,
                error_paths_give_heketi_codes_and_text,
            ),
            harness::trial(
                "failed_create_is_500_in_queue_and_spares_foreign_volume",
                &tb,
                failed_create_is_500_in_queue_and_spares_foreign_volume,
            ),
            harness::trial("sigterm_stops_the_server", &tb, sigterm_stops_the_server),
        ]
    })
}

// =============================================================================== helpers

/// One reply.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn location(&self) -> Result<String> {
        self.header("location")
            .map(str::to_owned)
            .with_context(|| format!("reply {} has no Location: {}", self.status, self.body))
    }

    fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(&self.body).with_context(|| {
            format!(
                "reply {} is not the JSON expected: {}",
                self.status, self.body
            )
        })
    }

    /// Asserts a Heketi plain-text error: status, `text/plain`, exact message plus newline.
    fn expect_error(&self, status: u16, message: &str) -> Result<()> {
        ensure!(
            self.status == status && self.body == format!("{message}\n"),
            "wanted {status} {message:?}, got {} {:?}",
            self.status,
            self.body
        );
        ensure!(
            self.header("content-type") == Some("text/plain; charset=utf-8"),
            "error content type {:?}",
            self.header("content-type")
        );
        Ok(())
    }
}

/// A Heketi JWT: HS256, `qsh = hex(sha256("METHOD&path"))`, times relative to now.
fn token(iss: &str, key: &str, method: &str, path: &str, iat: i64, exp: Option<i64>) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut claims = json!({
        "iss": iss,
        "iat": now + iat,
        "qsh": hex::encode(Sha256::digest(format!("{method}&{path}"))),
    });
    if let Some(e) = exp {
        claims["exp"] = json!(now + e);
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
    )
    .unwrap_or_default()
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(l.local_addr()?.port())
}

/// What `load_topology` made.
struct Topology {
    cluster: String,
    nodes: Vec<String>,
    devices: Vec<String>,
}

/// A heketi-server process of one trial.
struct Server {
    tb: Arc<Testbed>,
    name: String,
    dir: PathBuf,
    url: String,
    admin_key: String,
    user_key: String,
    argv: Vec<String>,
    child: Mutex<Option<Child>>,
    http: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(mut c) = self.child.lock()
            && let Some(mut child) = c.take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Server {
    /// Starts a server named `name` with auth on (admin and user keys) plus `extra` flags.
    async fn start(tb: &Arc<Testbed>, name: &str, extra: &[&str]) -> Result<Self> {
        let dir = tb.scratch_dir(&format!("hs-{name}"))?;
        let admin_key = uuid::Uuid::new_v4().simple().to_string();
        let user_key = uuid::Uuid::new_v4().simple().to_string();
        std::fs::write(dir.join("admin.key"), format!("{admin_key}\n"))?;
        std::fs::write(dir.join("user.key"), &user_key)?;
        let port = free_port()?;
        let bin = bin_path("heketi-server")?;
        let mut argv = vec![
            bin.display().to_string(),
            format!("--listen=127.0.0.1:{port}"),
            format!("--state-dir={}", dir.join("state").display()),
            format!("--admin-key-file={}", dir.join("admin.key").display()),
            format!("--user-key-file={}", dir.join("user.key").display()),
        ];
        argv.extend(tb.heketi_executor_args()?);
        argv.extend(extra.iter().map(|s| (*s).to_owned()));
        let s = Self {
            tb: Arc::clone(tb),
            name: name.to_owned(),
            dir,
            url: format!("http://127.0.0.1:{port}"),
            admin_key,
            user_key,
            argv,
            child: Mutex::new(None),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(60))
                .build()?,
        };
        s.spawn()?;
        s.wait_ready().await?;
        Ok(s)
    }

    fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Starts the process (again), journaled so the testbed's teardown stops it.
    fn spawn(&self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())?;
        let child = Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start heketi-server")?;
        let pid = child.id();
        Journal::open(self.tb.state_dir())?.record(&Entry::Process {
            role: format!("heketi-server-{}", self.name),
            pid,
            start: procs::start_time(pid).unwrap_or(0),
            pid_namespace: false,
        })?;
        *self.child.lock().map_err(|_| anyhow!("poisoned"))? = Some(child);
        Ok(())
    }

    async fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(r) = self.http.get(format!("{}/hello", self.url)).send().await
                && r.status().as_u16() == 200
            {
                return Ok(());
            }
            let exited = self
                .child
                .lock()
                .map_err(|_| anyhow!("poisoned"))?
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                bail!("heketi-server exited ({status}):\n{}", self.log_tail());
            }
            ensure!(
                Instant::now() < deadline,
                "heketi-server not ready:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL, as a crash.
    fn kill9(&self) -> Result<()> {
        if let Some(mut c) = self.child.lock().map_err(|_| anyhow!("poisoned"))?.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// A request with any `Authorization` header (or none).
    async fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        auth: Option<String>,
    ) -> Result<Resp> {
        self.raw_with(method, path, body, auth, &[]).await
    }

    async fn raw_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        auth: Option<String>,
        extra: &[(&str, &str)],
    ) -> Result<Resp> {
        let m = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut req = self.http.request(m, format!("{}{path}", self.url));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        let r = req
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        Ok(Resp {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            body: r.text().await?,
        })
    }

    /// A request signed by the admin.
    /// [`Server::req`] with extra header fields.
    async fn req_with(&self, method: &str, path: &str, extra: &[(&str, &str)]) -> Result<Resp> {
        let t = token("admin", &self.admin_key, method, path, 0, Some(300));
        self.raw_with(method, path, None, Some(format!("bearer {t}")), extra)
            .await
    }

    async fn req(&self, method: &str, path: &str, body: Option<&str>) -> Result<Resp> {
        let qsh_path = path.split('?').next().unwrap_or(path);
        let t = token("admin", &self.admin_key, method, qsh_path, 0, Some(300));
        self.raw(method, path, body, Some(format!("bearer {t}")))
            .await
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let r = self.req("GET", path, None).await?;
        ensure!(r.status == 200, "GET {path}: {} {}", r.status, r.body);
        ensure!(
            r.header("content-type") == Some("application/json; charset=UTF-8"),
            "GET {path}: content type {:?}",
            r.header("content-type")
        );
        r.json()
    }

    /// Polls a queue entry until it is done; checks every pending reply. Returns the final
    /// reply and whether a pending reply was seen.
    async fn wait_queue(&self, queue: &str) -> Result<(Resp, bool)> {
        ensure!(
            queue.starts_with("/queue/"),
            "not a queue location: {queue}"
        );
        let deadline = Instant::now() + OP_TIMEOUT;
        let mut seen_pending = false;
        loop {
            let r = self.req("GET", queue, None).await?;
            if r.status == 200 {
                ensure!(
                    r.header("x-pending") == Some("true") && r.body.is_empty(),
                    "pending reply without X-Pending: {r:?}"
                );
                seen_pending = true;
            } else {
                // A finished entry is read once: the next poll does not know it.
                let again = self.req("GET", queue, None).await?;
                again.expect_error(404, "Id not found")?;
                return Ok((r, seen_pending));
            }
            ensure!(
                Instant::now() < deadline,
                "{queue} still pending after {OP_TIMEOUT:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// An asynchronous call that must be accepted: 202 + Location, then its final reply.
    async fn call(&self, method: &str, path: &str, body: Option<&str>) -> Result<(Resp, bool)> {
        let r = self.req(method, path, body).await?;
        ensure!(
            r.status == 202,
            "{method} {path}: wanted 202, got {} {}",
            r.status,
            r.body
        );
        self.wait_queue(&r.location()?).await
    }

    /// An asynchronous call that must end in 303 to a resource; returns the resource path.
    async fn call_303(&self, method: &str, path: &str, body: Option<&str>) -> Result<String> {
        let (done, _) = self.call(method, path, body).await?;
        ensure!(
            done.status == 303,
            "{method} {path}: wanted 303, got {} {}",
            done.status,
            done.body
        );
        done.location()
    }

    /// An asynchronous call that must end in 204.
    async fn call_204(&self, method: &str, path: &str, body: Option<&str>) -> Result<()> {
        let (done, _) = self.call(method, path, body).await?;
        ensure!(
            done.status == 204,
            "{method} {path}: wanted 204, got {} {}",
            done.status,
            done.body
        );
        Ok(())
    }

    /// Creates a volume; returns its info.
    async fn create_volume(&self, body: Value) -> Result<VolumeInfoResponse> {
        let loc = self
            .call_303("POST", "/volumes", Some(&body.to_string()))
            .await?;
        ensure!(loc.starts_with("/volumes/"), "location {loc}");
        self.get_json(&loc).await
    }

    async fn delete_volume(&self, id: &str) -> Result<()> {
        self.call_204("DELETE", &format!("/volumes/{id}"), None)
            .await
    }

    /// The device directory of this server on host `i`.
    fn device_dir(&self, i: usize) -> PathBuf {
        self.tb.brick_root(i).join(format!("hs-{}", self.name))
    }

    /// One cluster, a node per topology host, a device (a subdirectory of the host's brick
    /// root, declared `DEVICE_KIB`) per node.
    async fn load_topology(&self) -> Result<Topology> {
        let r = self
            .req("POST", "/clusters", Some(r#"{"block":false,"file":true}"#))
            .await?;
        ensure!(r.status == 201, "POST /clusters: {} {}", r.status, r.body);
        let cluster: ClusterInfoResponse = r.json()?;
        let mut nodes = Vec::new();
        let mut devices = Vec::new();
        for i in 0..TOPOLOGY_HOSTS {
            let node = self.add_node(&cluster.id, i).await?;
            let dev = self.add_device(&node, i).await?;
            nodes.push(node);
            devices.push(dev);
        }
        Ok(Topology {
            cluster: cluster.id,
            nodes,
            devices,
        })
    }

    async fn add_node(&self, cluster: &str, i: usize) -> Result<String> {
        let addr = self.tb.hosts()[i].address.to_string();
        let body = json!({"zone": i + 1, "cluster": cluster,
            "hostnames": {"manage": [addr], "storage": [addr]}});
        let loc = self
            .call_303("POST", "/nodes", Some(&body.to_string()))
            .await?;
        loc.strip_prefix("/nodes/")
            .map(str::to_owned)
            .with_context(|| format!("node location {loc}"))
    }

    async fn add_device(&self, node: &str, i: usize) -> Result<String> {
        let dir = self.device_dir(i);
        // Made on the host (its disk), as an administrator prepares a device.
        std::fs::create_dir_all(self.tb.on_disk(i, &dir))?;
        let body = json!({"name": dir.display().to_string(), "node": node, "size_kib": DEVICE_KIB});
        self.call_204("POST", "/devices", Some(&body.to_string()))
            .await?;
        let info: NodeInfoResponse = self.get_json(&format!("/nodes/{node}")).await?;
        info.devices
            .iter()
            .find(|d| d.name == dir.display().to_string())
            .map(|d| d.id.clone())
            .context("added device not listed on its node")
    }

    /// Names of the pool's volumes starting with `prefix`.
    async fn gluster_volumes(&self, prefix: &str) -> Result<BTreeSet<String>> {
        let out = self.tb.gluster(0, &["volume", "list"]).await?;
        Ok(out
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with(prefix))
            .map(str::to_owned)
            .collect())
    }

    /// `brick_*` directories under this server's device directories.
    fn brick_dirs(&self) -> Result<BTreeSet<PathBuf>> {
        let mut out = BTreeSet::new();
        for i in 0..TOPOLOGY_HOSTS {
            // Looked at on the host's disk, named as the host names them.
            let d = self.device_dir(i);
            let on_disk = self.tb.on_disk(i, &d);
            if !on_disk.exists() {
                continue;
            }
            for e in std::fs::read_dir(&on_disk)? {
                let e = e?;
                if e.file_name().to_string_lossy().starts_with("brick_") {
                    out.insert(d.join(e.file_name()));
                }
            }
        }
        Ok(out)
    }
}

// Heketi v10's reply shapes (`pkg/glusterfs/api/types.go`): the exact keys of each object, so
// that a key Heketi does not send, or one it sends and we forgot, fails a trial. Keys Heketi
// leaves out when unset (`omitempty`) are passed by the caller when the object has them.

/// Keys of a volume reply (create, info, expand) that Heketi always sends; `gid` and
/// `glustervolumeoptions` come only when set, `block` only for a block-hosting volume.
const VOLUME_KEYS: &[&str] = &[
    "blockinfo",
    "bricks",
    "cluster",
    "durability",
    "id",
    "mount",
    "name",
    "size",
    "snapshot",
];
/// Keys of a node reply; `tags` comes only when set.
const NODE_KEYS: &[&str] = &["cluster", "devices", "hostnames", "id", "state", "zone"];
/// Keys of a device, alone or inside a node reply; `tags` and `pv_uuid` come only when set.
/// `paths` is there for every device Heketi v10 set up: the device's udev aliases, or its name.
const DEVICE_KEYS: &[&str] = &["bricks", "id", "name", "paths", "state", "storage"];
const BRICK_KEYS: &[&str] = &["device", "id", "node", "path", "size", "volume"];

fn ensure_keys(what: &str, v: &Value, want: &[&str]) -> Result<()> {
    let got: BTreeSet<&str> = v
        .as_object()
        .with_context(|| format!("{what} is not an object: {v}"))?
        .keys()
        .map(String::as_str)
        .collect();
    let want: BTreeSet<&str> = want.iter().copied().collect();
    ensure!(
        got == want,
        "{what}: keys {got:?}, Heketi v10 sends {want:?}"
    );
    Ok(())
}

/// A volume reply has Heketi's keys, nested objects included; `set` names the `omitempty` keys
/// this volume has a value for.
fn ensure_volume_shape(v: &Value, set: &[&str]) -> Result<()> {
    let top: Vec<&str> = VOLUME_KEYS.iter().chain(set).copied().collect();
    ensure_keys("volume", v, &top)?;
    ensure_keys(
        "durability",
        &v["durability"],
        &["disperse", "replicate", "type"],
    )?;
    ensure_keys("snapshot", &v["snapshot"], &["enable", "factor"])?;
    ensure_keys("mount", &v["mount"], &["glusterfs"])?;
    ensure_keys(
        "mount.glusterfs",
        &v["mount"]["glusterfs"],
        &["device", "hosts", "options"],
    )?;
    ensure_keys("blockinfo", &v["blockinfo"], &[])?;
    ensure_bricks_shape(&v["bricks"])
}

/// A node reply has Heketi's keys, its devices and their bricks included.
fn ensure_node_shape(n: &Value) -> Result<()> {
    ensure_keys("node", n, NODE_KEYS)?;
    ensure_keys("node.hostnames", &n["hostnames"], &["manage", "storage"])?;
    let devices = n["devices"].as_array().context("node.devices")?;
    ensure!(!devices.is_empty(), "a node of the topology has its device");
    devices.iter().try_for_each(ensure_device_shape)
}

fn ensure_device_shape(d: &Value) -> Result<()> {
    ensure_keys("device", d, DEVICE_KEYS)?;
    ensure_keys("device.storage", &d["storage"], &["free", "total", "used"])?;
    ensure_bricks_shape(&d["bricks"])
}

fn ensure_bricks_shape(bricks: &Value) -> Result<()> {
    bricks
        .as_array()
        .context("bricks is not an array")?
        .iter()
        .try_for_each(|b| ensure_keys("brick", b, BRICK_KEYS))
}

/// `gluster volume info NAME`: (status, bricks).
async fn gluster_info(tb: &Testbed, name: &str) -> Result<(String, Vec<String>)> {
    let out = tb.gluster(0, &["volume", "info", name]).await?;
    let mut status = String::new();
    let mut bricks = Vec::new();
    for line in out.lines() {
        if let Some(v) = line.strip_prefix("Status:") {
            status = v.trim().to_owned();
        } else if let Some((k, v)) = line.split_once(": ")
            && k.starts_with("Brick")
            && k[5..].chars().all(|c| c.is_ascii_digit())
            && !k[5..].is_empty()
        {
            bricks.push(v.trim().to_owned());
        }
    }
    Ok((status, bricks))
}

/// Size of the file system mounted at `dir`, bytes.
fn df_bytes(dir: &Path) -> Result<u64> {
    let st = nix::sys::statvfs::statvfs(dir)?;
    Ok(st.blocks() as u64 * st.fragment_size() as u64)
}

/// Mounts `volume` under the trial's scratch directory; returns the mount point.
async fn mount(tb: &Testbed, volume: &str, tag: &str) -> Result<PathBuf> {
    let dir = tb.scratch_dir(&format!("hs-mnt-{tag}"))?;
    tb.mount_volume(volume, &dir).await?;
    Ok(dir)
}

fn replica3(size: u64) -> Value {
    json!({"size": size, "durability": {"type": "replicate", "replicate": {"replica": 3}}})
}

// =============================================================================== trials

async fn hello_metrics_and_unknown_paths(tb: Arc<Testbed>) -> Result<()> {
    let s = Server::start(&tb, "hello", &[]).await?;
    let r = s.raw("GET", "/hello", None, None).await?;
    ensure!(r.status == 200 && r.body == "Hello from Heketi", "{r:?}");
    ensure!(r.header("content-type") == Some("text/plain; charset=UTF-8"));
    let m = s.raw("GET", "/metrics", None, None).await?;
    ensure!(m.status == 200 && m.body.contains("heketi_up 1"), "{m:?}");

    for path in [
        "/nope",
        "/volumes/xyz",
        "/volumes/12ab/nope",
        "/queue/not-hex",
    ] {
        s.req("GET", path, None)
            .await?
            .expect_error(404, "Invalid path or request")?;
    }
    let unknown = "0123456789abcdef0123456789abcdef";
    for path in ["volumes", "nodes", "devices", "clusters", "queue"] {
        s.req("GET", &format!("/{path}/{unknown}"), None)
            .await?
            .expect_error(404, "Id not found")?;
    }
    // A route with the wrong method.
    let r = s.req("PUT", "/volumes", None).await?;
    ensure!(r.status == 405, "{r:?}");
    // Unauthenticated requests are refused before routing, like Heketi.
    s.raw("GET", "/nope", None, None)
        .await?
        .expect_error(401, "Required authorization token not found")?;
    Ok(())
}

async fn jwt_errors_are_heketis(tb: Arc<Testbed>) -> Result<()> {
    let s = Server::start(&tb, "jwt", &[]).await?;
    let admin =
        |m: &str, p: &str, iat: i64, exp: Option<i64>| token("admin", &s.admin_key, m, p, iat, exp);
    let get = |auth: Option<String>| s.raw("GET", "/clusters", None, auth);

    get(None)
        .await?
        .expect_error(401, "Required authorization token not found")?;
    get(Some("Basic abc".into()))
        .await?
        .expect_error(400, "Authorization header format must be Bearer {token}")?;
    let ok = get(Some(format!(
        "BEARER {}",
        admin("GET", "/clusters", 0, Some(300))
    )))
    .await?;
    ensure!(ok.status == 200, "scheme is case-insensitive: {ok:?}");
    get(Some(format!(
        "bearer {}",
        token("admin", "wrong", "GET", "/clusters", 0, Some(300))
    )))
    .await?
    .expect_error(
        401,
        "Invalid JWT token: signature is invalid (client and server secrets may not match)",
    )?;
    get(Some(format!(
        "bearer {}",
        admin("GET", "/volumes", 0, Some(300))
    )))
    .await?
    .expect_error(401, "Invalid qsh claim in token")?;
    let no_exp = get(Some(format!(
        "bearer {}",
        admin("GET", "/clusters", 0, None)
    )))
    .await?;
    ensure!(
        no_exp.status == 401
            && no_exp
                .body
                .starts_with("Invalid JWT token: Token is expired by "),
        "a token without exp is refused: {no_exp:?}"
    );
    let expired = get(Some(format!(
        "bearer {}",
        admin("GET", "/clusters", -600, Some(-60))
    )))
    .await?;
    ensure!(
        expired.status == 401
            && expired
                .body
                .starts_with("Invalid JWT token: Token is expired by "),
        "{expired:?}"
    );
    get(Some(format!(
        "bearer {}",
        admin("GET", "/clusters", 3600, Some(7200))
    )))
    .await?
    .expect_error(
        401,
        "Invalid JWT token: Token used before issued (client and server clocks may differ)",
    )?;
    get(Some(format!(
        "bearer {}",
        token("root", &s.admin_key, "GET", "/clusters", 0, Some(300))
    )))
    .await?
    .expect_error(401, "Invalid JWT token: Unknown user")?;

    // The user may list and create volumes, nothing else.
    let user =
        |m: &str, p: &str| format!("bearer {}", token("user", &s.user_key, m, p, 0, Some(300)));
    let r = s
        .raw("GET", "/volumes", None, Some(user("GET", "/volumes")))
        .await?;
    ensure!(r.status == 200, "user GET /volumes: {r:?}");
    s.raw("GET", "/clusters", None, Some(user("GET", "/clusters")))
        .await?
        .expect_error(401, "Administrator access required")?;
    let unknown = "/volumes/0123456789abcdef0123456789abcdef";
    s.raw("GET", unknown, None, Some(user("GET", unknown)))
        .await?
        .expect_error(401, "Administrator access required")?;
    // Reaching POST /volumes as user: refused by validation, not by auth.
    s.raw(
        "POST",
        "/volumes",
        Some("{}"),
        Some(user("POST", "/volumes")),
    )
    .await?
    .expect_error(400, "validation failed: size: cannot be blank.")?;
    Ok(())
}

async fn disabled_auth_needs_no_token(tb: Arc<Testbed>) -> Result<()> {
    let s = Server::start(&tb, "noauth", &["--disable-auth"]).await?;
    let r = s.raw("GET", "/clusters", None, None).await?;
    ensure!(r.status == 200, "{r:?}");
    let list: ClusterListResponse = r.json()?;
    ensure!(list.clusters.is_empty());
    s.raw("POST", "/volumes", Some(r#"{"size":1}"#), None)
        .await?
        .expect_error(400, "No clusters configured")?;
    Ok(())
}

async fn cluster_routes(tb: Arc<Testbed>) -> Result<()> {
    let s = Server::start(&tb, "clusters", &[]).await?;
    let r = s.req("POST", "/clusters", Some("{}")).await?;
    ensure!(r.status == 201, "{r:?}");
    ensure!(r.header("content-type") == Some("application/json; charset=UTF-8"));
    let c: ClusterInfoResponse = r.json()?;
    ensure!(c.id.len() == 32 && !c.file && !c.block, "{c:?}");
    let list: ClusterListResponse = s.get_json("/clusters").await?;
    ensure!(list.clusters == vec![c.id.clone()], "{list:?}");

    let r = s
        .req(
            "POST",
            &format!("/clusters/{}/flags", c.id),
            Some(r#"{"file":true,"block":false}"#),
        )
        .await?;
    ensure!(r.status == 200, "{r:?}");
    let info: ClusterInfoResponse = s.get_json(&format!("/clusters/{}", c.id)).await?;
    ensure!(info.file && !info.block && info.nodes.is_empty() && info.volumes.is_empty());

    // A cluster with a node cannot be deleted.
    let node = s.add_node(&c.id, 0).await?;
    s.req("DELETE", &format!("/clusters/{}", c.id), None)
        .await?
        .expect_error(
            409,
            &format!(
                "Unable to delete cluster [{}] because it contains volumes and/or nodes",
                c.id
            ),
        )?;
    s.call_204("DELETE", &format!("/nodes/{node}"), None)
        .await?;
    let r = s
        .req("DELETE", &format!("/clusters/{}", c.id), None)
        .await?;
    ensure!(r.status == 200 && r.body.is_empty(), "{r:?}");
    s.req("GET", &format!("/clusters/{}", c.id), None)
        .await?
        .expect_error(404, "Id not found")?;
    s.req("POST", "/clusters", Some("not json"))
        .await?
        .expect_error(422, "request unable to be parsed")?;
    Ok(())
}

async fn node_and_device_routes(tb: Arc<Testbed>) -> Result<()> {
    let s = Server::start(&tb, "topo", &[]).await?;
    let t = s.load_topology().await?;
    let addr0 = tb.hosts()[0].address.to_string();

    let raw: Value = s.get_json(&format!("/nodes/{}", t.nodes[0])).await?;
    ensure_node_shape(&raw)?;
    let node: NodeInfoResponse = serde_json::from_value(raw)?;
    ensure!(node.hostnames.storage == vec![addr0.clone()] && node.cluster_id == t.cluster);
    ensure!(node.devices.len() == 1 && node.devices[0].id == t.devices[0]);
    let raw: Value = s.get_json(&format!("/devices/{}", t.devices[0])).await?;
    ensure_device_shape(&raw)?;
    let dev: DeviceInfoResponse = serde_json::from_value(raw)?;
    ensure!(
        dev.storage.total == DEVICE_KIB && dev.storage.free == DEVICE_KIB && dev.storage.used == 0,
        "{:?}",
        dev.storage
    );
    let cluster: ClusterInfoResponse = s.get_json(&format!("/clusters/{}", t.cluster)).await?;
    ensure!(cluster.nodes.len() == TOPOLOGY_HOSTS);

    // Same hostname again: 409 with Heketi's text (its message ends with a newline of its own).
    let dup = json!({"zone": 1, "cluster": t.cluster, "hostnames": {"manage": [addr0], "storage": [addr0]}});
    s.req("POST", "/nodes", Some(&dup.to_string()))
        .await?
        .expect_error(
            409,
            &format!(
                "Hostname {addr0} already used by node with id {}\n",
                t.nodes[0]
            ),
        )?;
    let bad_cluster = json!({"zone": 1, "cluster": "0123456789abcdef0123456789abcdef",
        "hostnames": {"manage": ["10.9.9.9"], "storage": ["10.9.9.9"]}});
    s.req("POST", "/nodes", Some(&bad_cluster.to_string()))
        .await?
        .expect_error(404, "Cluster id does not exist")?;
    s.req("POST", "/nodes", Some("{}")).await?.expect_error(
        400,
        "validation failed: cluster: cannot be blank; hostnames: (manage: cannot be blank; storage: cannot be blank.); zone: cannot be blank.",
    )?;
    let bad_dev = json!({"name": "relative/path", "node": t.nodes[0]});
    s.req("POST", "/devices", Some(&bad_dev.to_string()))
        .await?
        .expect_error(400, "validation failed: name: must be in a valid format.")?;
    let dev_unknown_node = json!({"name": "/x", "node": "0123456789abcdef0123456789abcdef"});
    s.req("POST", "/devices", Some(&dev_unknown_node.to_string()))
        .await?
        .expect_error(404, "Node id does not exist")?;
    let same_dev = json!({"name": s.device_dir(0).display().to_string(), "node": t.nodes[0]});
    s.req("POST", "/devices", Some(&same_dev.to_string()))
        .await?
        .expect_error(
            409,
            &format!("Device already in use (ID: {})", t.devices[0]),
        )?;
    // A device directory that does not exist: accepted, then the queue reports the failure.
    let missing = json!({"name": "/nonexistent/hs-device", "node": t.nodes[0]});
    let (done, _) = s
        .call("POST", "/devices", Some(&missing.to_string()))
        .await?;
    ensure!(
        done.status == 500 && done.body.contains("/nonexistent/hs-device"),
        "{done:?}"
    );

    // A node with a device cannot be deleted; a device with bricks cannot either.
    s.req("DELETE", &format!("/nodes/{}", t.nodes[0]), None)
        .await?
        .expect_error(
            409,
            &format!(
                "Unable to delete node [{}] because it contains devices",
                t.nodes[0]
            ),
        )?;
    let vol = s.create_volume(replica3(1)).await?;
    let dev: DeviceInfoResponse = s.get_json(&format!("/devices/{}", t.devices[0])).await?;
    ensure!(
        dev.storage.used == 1024 * 1024 && dev.bricks.len() == 1 && dev.bricks[0].volume == vol.id,
        "{dev:?}"
    );
    s.req("DELETE", &format!("/devices/{}", t.devices[0]), None)
        .await?
        .expect_error(
            409,
            &format!(
                "Unable to delete device [{}] because it contains bricks",
                t.devices[0]
            ),
        )?;

    // States: an offline device takes no bricks (3 nodes needed, one is offline → no space).
    s.call_204(
        "POST",
        &format!("/devices/{}/state", t.devices[2]),
        Some(r#"{"state":"offline"}"#),
    )
    .await?;
    let dev: DeviceInfoResponse = s.get_json(&format!("/devices/{}", t.devices[2])).await?;
    ensure!(serde_json::to_value(dev.state)? == json!("offline"));
    s.req("POST", "/volumes", Some(&replica3(1).to_string()))
        .await?
        .expect_error(500, "Failed to allocate new volume: No space")?;
    s.call_204(
        "POST",
        &format!("/devices/{}/state", t.devices[2]),
        Some(r#"{"state":"online"}"#),
    )
    .await?;
    s.call_204(
        "POST",
        &format!("/nodes/{}/state", t.nodes[1]),
        Some(r#"{"state":"offline"}"#),
    )
    .await?;
    s.req("POST", "/volumes", Some(&replica3(1).to_string()))
        .await?
        .expect_error(500, "Failed to allocate new volume: No space")?;
    s.call_204(
        "POST",
        &format!("/nodes/{}/state", t.nodes[1]),
        Some(r#"{"state":"online"}"#),
    )
    .await?;
    s.req(
        "POST",
        &format!("/nodes/{}/state", t.nodes[1]),
        Some(r#"{"state":"asleep"}"#),
    )
    .await?
    .expect_error(400, "validation failed: state: asleep is not valid state.")?;

    // Empty what can be emptied: the volume and every device. Nodes stay: deleting one
    // detaches its host from the pool, which Gluster refuses while other trials' volumes have
    // bricks there; the probe/detach trial covers node deletion with host 4.
    s.delete_volume(&vol.id).await?;
    for dev in &t.devices {
        s.call_204("DELETE", &format!("/devices/{dev}"), None)
            .await?;
        s.req("GET", &format!("/devices/{dev}"), None)
            .await?
            .expect_error(404, "Id not found")?;
    }
    let node: NodeInfoResponse = s.get_json(&format!("/nodes/{}", t.nodes[0])).await?;
    ensure!(node.devices.is_empty(), "{node:?}");
    let pool = tb.gluster(0, &["pool", "list"]).await?;
    ensure!(
        pool.matches("Connected").count() >= TOPOLOGY_HOSTS,
        "{pool}"
    );
    Ok(())
}

async fn node_add_probes_and_delete_detaches(tb: Arc<Testbed>) -> Result<()> {
    let h4 = tb.hosts()[3].address.to_string();
    tb.gluster(0, &["peer", "detach", &h4]).await?;
    let pool = tb.gluster(0, &["pool", "list"]).await?;
    ensure!(!pool.contains(&h4), "{pool}");

    let s = Server::start(&tb, "probe", &[]).await?;
    let r = s.req("POST", "/clusters", Some(r#"{"file":true}"#)).await?;
    let c: ClusterInfoResponse = r.json()?;
    // A member of the pool first: the new node is probed from a node already in the cluster.
    let first = s.add_node(&c.id, 0).await?;
    let node = s.add_node(&c.id, 3).await?;
    let pool = tb.gluster(0, &["pool", "list"]).await?;
    ensure!(
        pool.lines()
            .any(|l| l.contains(&h4) && l.contains("Connected")),
        "after POST /nodes the host is a connected peer:\n{pool}"
    );
    s.call_204("DELETE", &format!("/nodes/{node}"), None)
        .await?;
    let pool = tb.gluster(0, &["pool", "list"]).await?;
    ensure!(
        !pool.contains(&h4),
        "after DELETE the host left the pool:\n{pool}"
    );
    // The last node of the topology has no other member to be detached from: it stays in
    // its pool.
    s.call_204("DELETE", &format!("/nodes/{first}"), None)
        .await?;
    let pool = tb.gluster(1, &["pool", "list"]).await?;
    ensure!(
        pool.contains(&tb.hosts()[0].address.to_string()),
        "the last node was detached:\n{pool}"
    );
    Ok(())
}

async fn replica3_bricks_on_three_hosts_mount_write_read_df_gid(tb: Arc<Testbed>) -> Result<()> {
    let s = Server::start(&tb, "r3", &[]).await?;
    let t = s.load_topology().await?;
    let body = json!({"size": 1, "name": "hs_r3", "gid": 2001,
        "durability": {"type": "replicate", "replicate": {"replica": 3}},
        "glustervolumeoptions": ["performance.quick-read off", "network.ping-timeout 20"]});
    let r = s.req("POST", "/volumes", Some(&body.to_string())).await?;
    ensure!(r.status == 202 && r.body.is_empty(), "{r:?}");
    let (done, seen_pending) = s.wait_queue(&r.location()?).await?;
    ensure!(
        seen_pending,
        "a create is pending at least once while Gluster works"
    );
    ensure!(done.status == 303, "{done:?}");
    let raw: Value = s.get_json(&done.location()?).await?;
    ensure_volume_shape(&raw, &["gid", "glustervolumeoptions"])?;
    let vol: VolumeInfoResponse = serde_json::from_value(raw)?;
    ensure!(vol.name == "hs_r3" && vol.size == 1 && vol.gid == 2001 && vol.cluster == t.cluster);

    // Three bricks on three different hosts, as Gluster itself reports them.
    let (status, gbricks) = gluster_info(&tb, "hs_r3").await?;
    ensure!(status == "Started", "{status}");
    let hosts: BTreeSet<&str> = gbricks.iter().filter_map(|b| b.split(':').next()).collect();
    ensure!(gbricks.len() == 3 && hosts.len() == 3, "{gbricks:?}");
    let ours: BTreeSet<String> = vol.bricks.iter().map(|b| b.path.clone()).collect();
    let theirs: BTreeSet<String> = gbricks
        .iter()
        .filter_map(|b| b.split_once(':').map(|(_, p)| p.to_owned()))
        .collect();
    ensure!(ours == theirs, "info bricks {ours:?} vs gluster {theirs:?}");
    ensure!(vol.bricks.iter().all(|b| b.size == 1024 * 1024));

    // Mount description: the first host serves the volfile, the others are backups.
    let m = &vol.mount.glusterfs;
    ensure!(
        m.hosts.len() == 3 && m.device == format!("{}:hs_r3", m.hosts[0]),
        "{m:?}"
    );
    ensure!(
        m.options.get("backup-volfile-servers") == Some(&m.hosts[1..].join(",")),
        "{m:?}"
    );

    // Options were applied.
    let opt = tb
        .gluster(0, &["volume", "get", "hs_r3", "network.ping-timeout"])
        .await?;
    ensure!(
        opt.lines()
            .any(|l| l.contains("network.ping-timeout") && l.contains("20")),
        "{opt}"
    );

    // Mount, df, group ownership, write, read through a second mount.
    let a = mount(&tb, "hs_r3", "r3a").await?;
    let b = mount(&tb, "hs_r3", "r3b").await?;
    let result = async {
        ensure!(
            df_bytes(&a)? == GIB,
            "df shows the quota size: {}",
            df_bytes(&a)?
        );
        let meta = std::fs::metadata(&a)?;
        ensure!(meta.gid() == 2001, "root group {}", meta.gid());
        ensure!(
            meta.mode() & 0o7777 == 0o2775,
            "root mode {:o}",
            meta.mode() & 0o7777
        );
        std::fs::write(a.join("hello.txt"), b"written through mount a")?;
        let back = std::fs::read(b.join("hello.txt"))?;
        ensure!(back == b"written through mount a");
        let f = std::fs::metadata(a.join("hello.txt"))?;
        ensure!(f.gid() == 2001, "setgid root: new files get group 2001");
        Ok(())
    }
    .await;
    tb.unmount(&a).await?;
    tb.unmount(&b).await?;
    result?;
    // Every brick holds the file (replica 3).
    for p in &theirs {
        ensure!(
            tb.path_on_disk(Path::new(p)).join("hello.txt").exists(),
            "brick {p} lacks the file"
        );
    }
    s.delete_volume(&vol.id).await?;
    Ok(())
}

/// Our extension of `/queue` (RFC 7240 `Prefer: wait=N`, which Heketi ignores): a poll that
/// asks to wait is held while the operation runs and answered when it ends, saying so with
/// `Preference-Applied`; a poll without it is answered at once, as by Heketi.
async fn a_queue_poll_asking_to_wait_is_answered_when_the_operation_ends(
    tb: Arc<Testbed>,
) -> Result<()> {
    let s = Server::start(&tb, "longpoll", &[]).await?;
    s.load_topology().await?;
    let r = s
        .req("POST", "/volumes", Some(&replica3(1).to_string()))
        .await?;
    ensure!(r.status == 202, "create: {r:?}");
    let queue = r.location()?;
    let quick = s.req("GET", &queue, None).await?;
    ensure!(
        quick.status == 200
            && quick.header("x-pending") == Some("true")
            && quick.header("preference-applied").is_none(),
        "a plain poll right after the 202: {quick:?}"
    );
    let mut held_polls = 0;
    let done = loop {
        held_polls += 1;
        let r = s.req_with("GET", &queue, &[("prefer", "wait=10")]).await?;
        ensure!(
            r.header("preference-applied") == Some("wait=10"),
            "held poll {held_polls}: {r:?}"
        );
        if r.status != 200 {
            break r;
        }
        ensure!(
            r.header("x-pending") == Some("true"),
            "held poll {held_polls}: {r:?}"
        );
        ensure!(
            held_polls < 6,
            "still pending after {held_polls} polls held 10 s each"
        );
    };
    ensure!(done.status == 303, "the create's end: {done:?}");
    // A create takes seconds: the first held poll sees its end (a second one only if the
    // create ran longer than the 10 s a poll is held).
    ensure!(held_polls <= 2, "{held_polls} held polls for one create");
    let vol: VolumeInfoResponse = s.get_json(&done.location()?).await?;
    s.delete_volume(&vol.id).await
}

async fn expand_shows_in_df_and_accounting(tb: Arc<Testbed>) -> Result<()> {
    let s = Server::start(&tb, "expand", &[]).await?;
    let t = s.load_topology().await?;
    // No gid, no options: Heketi's reply has neither key (nor `block`).
    let loc = s
        .call_303("POST", "/volumes", Some(&replica3(1).to_string()))
        .await?;
    let raw: Value = s.get_json(&loc).await?;
    ensure_volume_shape(&raw, &[])?;
    let vol: VolumeInfoResponse = serde_json::from_value(raw)?;
    let loc = s
        .call_303(
            "POST",
            &format!("/volumes/{}/expand", vol.id),
            Some(r#"{"expand_size":2}"#),
        )
        .await?;
    ensure!(loc == format!("/volumes/{}", vol.id), "{loc}");
    let raw: Value = s.get_json(&loc).await?;
    ensure_volume_shape(&raw, &[])?;
    let after: VolumeInfoResponse = serde_json::from_value(raw)?;
    ensure!(after.size == 3 && after.bricks.iter().all(|b| b.size == 3 * 1024 * 1024));
    for d in &t.devices {
        let dev: DeviceInfoResponse = s.get_json(&format!("/devices/{d}")).await?;
        ensure!(dev.storage.used == 3 * 1024 * 1024, "{:?}", dev.storage);
        ensure!(dev.storage.free == DEVICE_KIB - 3 * 1024 * 1024);
    }
    let m = mount(&tb, &vol.name, "expand").await?;
    let size = df_bytes(&m);
    tb.unmount(&m).await?;
    ensure!(size? == 3 * GIB, "df shows the expanded size");
    s.req(
        "POST",
        &format!("/volumes/{}/expand", vol.id),
        Some(r#"{"expand_size":100000}"#),
    )
    .await?
    .expect_error(500, "Failed to allocate volume expansion: No space")?;
    s.delete_volume(&vol.id).await?;
    Ok(())
}

async fn clone_holds_the_source_data(tb: Arc<Testbed>) -> Result<()> {
    let s = Server::start(&tb, "clone", &[]).await?;
    s.load_topology().await?;
    let body = json!({"size": 1, "gid": 3003, "name": "hs_clone_src",
        "durability": {"type": "replicate", "replicate": {"replica": 3}}});
    let src = s.create_volume(body).await?;
    let m = mount(&tb, "hs_clone_src", "clone-src").await?;
    let wrote = async {
        std::fs::create_dir(m.join("dir"))?;
        std::fs::write(m.join("dir/data.bin"), vec![7u8; 3 * 1024 * 1024])?;
        std::os::unix::fs::chown(m.join("dir/data.bin"), Some(1234), Some(3003))?;
        std::os::unix::fs::symlink("dir/data.bin", m.join("link"))?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    tb.unmount(&m).await?;
    wrote?;

    let loc = s
        .call_303(
            "POST",
            &format!("/volumes/{}/clone", src.id),
            Some(r#"{"name":"hs_clone_dst"}"#),
        )
        .await?;
    let clone: VolumeInfoResponse = s.get_json(&loc).await?;
    ensure!(clone.id != src.id && clone.name == "hs_clone_dst");
    ensure!(clone.size == src.size && clone.gid == 3003 && clone.durability == src.durability);
    let src_bricks: BTreeSet<&str> = src.bricks.iter().map(|b| b.path.as_str()).collect();
    ensure!(
        clone
            .bricks
            .iter()
            .all(|b| !src_bricks.contains(b.path.as_str()))
    );

    let c = mount(&tb, "hs_clone_dst", "clone-dst").await?;
    let checked = async {
        let data = std::fs::read(c.join("dir/data.bin"))?;
        ensure!(data == vec![7u8; 3 * 1024 * 1024], "clone data differs");
        let meta = std::fs::metadata(c.join("dir/data.bin"))?;
        ensure!(meta.uid() == 1234 && meta.gid() == 3003, "ownership kept");
        ensure!(std::fs::read_link(c.join("link"))? == Path::new("dir/data.bin"));
        let root = std::fs::metadata(&c)?;
        ensure!(root.gid() == 3003 && root.mode() & 0o7777 == 0o2775);
        ensure!(df_bytes(&c)? == GIB);
        Ok(())
    }
    .await;
    tb.unmount(&c).await?;
    checked?;
    // The clone is independent: deleting the source leaves it working.
    s.delete_volume(&src.id).await?;
    let still: VolumeInfoResponse = s.get_json(&loc).await?;
    ensure!(still.id == clone.id);
    s.delete_volume(&clone.id).await?;
    // No temporary mount is left behind.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    ensure!(
        !mounts.contains(&s.dir.display().to_string()),
        "a clone mount is left"
    );
    Ok(())
}

/// One entry of a tree as [`tree_of`] describes it: kind and permissions, owner, size, and
/// a digest of the content (or the target of a link).
type TreeEntry = (u32, u32, u32, u64, String);

/// Every entry under `root` (not following links) with what a copy must keep.
fn tree_of(root: &Path) -> Result<std::collections::BTreeMap<PathBuf, TreeEntry>> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir)? {
            let path = e?.path();
            let meta = std::fs::symlink_metadata(&path)?;
            let digest = if meta.is_dir() {
                todo.push(path.clone());
                String::new()
            } else if meta.file_type().is_symlink() {
                std::fs::read_link(&path)?.display().to_string()
            } else {
                hex::encode(Sha256::digest(std::fs::read(&path)?))
            };
            let rel = path.strip_prefix(root)?.to_path_buf();
            let size = if meta.is_dir() { 0 } else { meta.len() };
            out.insert(rel, (meta.mode(), meta.uid(), meta.gid(), size, digest));
        }
    }
    Ok(out)
}

/// `gluster volume get NAME features.read-only`: whether it is on.
async fn gluster_read_only(tb: &Testbed, name: &str) -> Result<bool> {
    let out = tb
        .gluster(0, &["volume", "get", name, "features.read-only"])
        .await?;
    let line = out
        .lines()
        .find(|l| l.starts_with("features.read-only"))
        .with_context(|| format!("no features.read-only in:\n{out}"))?;
    Ok(line.split_whitespace().nth(1) == Some("on"))
}

/// The top-level keys of a JSON object reply.
fn keys_of(r: &Resp) -> Result<BTreeSet<String>> {
    let v: Value = r.json()?;
    Ok(v.as_object()
        .context("not a JSON object")?
        .keys()
        .cloned()
        .collect())
}

/// Whether `err` is the error of a write refused by a read-only file system.
fn is_erofs(err: &std::io::Error) -> bool {
    err.raw_os_error() == Some(nix::errno::Errno::EROFS as i32)
}

async fn read_only_clone_refuses_writes_and_its_clone_is_writable(tb: Arc<Testbed>) -> Result<()> {
    let s = Server::start(&tb, "roclone", &[]).await?;
    s.load_topology().await?;
    let src = s
        .create_volume(json!({"size": 1, "gid": 3004, "name": "hs_ro_src",
            "durability": {"type": "replicate", "replicate": {"replica": 3}}}))
        .await?;
    let m = mount(&tb, "hs_ro_src", "ro-src").await?;
    let wrote = async {
        std::fs::create_dir(m.join("dir"))?;
        std::fs::write(m.join("dir/data.bin"), vec![9u8; 2 * 1024 * 1024])?;
        std::os::unix::fs::symlink("dir/data.bin", m.join("link"))?;
        tree_of(&m)
    }
    .await;
    tb.unmount(&m).await?;
    let src_tree = wrote?;

    // The snapshot: a clone asked for read-only.
    let snap_loc = s
        .call_303(
            "POST",
            &format!("/volumes/{}/clone", src.id),
            Some(r#"{"name":"hs_ro_snap","read_only":true}"#),
        )
        .await?;
    let snap: VolumeInfoResponse = s.get_json(&snap_loc).await?;
    ensure!(snap.name == "hs_ro_snap" && snap.gid == 3004);
    // The extension never shows in a reply: the key set is Heketi's, as the source's.
    let src_keys = keys_of(&s.req("GET", &format!("/volumes/{}", src.id), None).await?)?;
    let snap_keys = keys_of(&s.req("GET", &snap_loc, None).await?)?;
    ensure!(
        snap_keys == src_keys && !snap_keys.contains("read_only"),
        "clone reply keys {snap_keys:?} vs source {src_keys:?}"
    );
    ensure!(
        gluster_read_only(&tb, "hs_ro_snap").await?,
        "features.read-only is not on"
    );
    ensure!(
        !snap
            .glustervolumeoptions
            .iter()
            .any(|o| o.contains("read-only")),
        "read-only is not one of the options: {:?}",
        snap.glustervolumeoptions
    );

    // Through a FUSE mount: the data is there, every write is refused with EROFS.
    let c = mount(&tb, "hs_ro_snap", "ro-snap").await?;
    let checked = async {
        ensure!(
            tree_of(&c)? == src_tree,
            "the read-only clone's data differs"
        );
        let create = std::fs::write(c.join("new.txt"), b"x");
        ensure!(
            create.as_ref().is_err_and(is_erofs),
            "creating a file: {create:?}"
        );
        // The open itself may be let through (Gluster's open-behind); the write is not.
        let append = (|| {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(c.join("dir/data.bin"))?;
            f.write_all(b"more")?;
            f.sync_all()
        })();
        ensure!(
            append.as_ref().is_err_and(is_erofs),
            "appending to a file: {append:?}"
        );
        let mkdir = std::fs::create_dir(c.join("newdir"));
        ensure!(mkdir.as_ref().is_err_and(is_erofs), "mkdir: {mkdir:?}");
        ensure!(tree_of(&c)? == src_tree, "the read-only clone changed");
        Ok(())
    }
    .await;
    tb.unmount(&c).await?;
    checked?;

    // The restore: a clone of the snapshot, not asked for read-only, is writable and holds
    // the same data.
    let restore_loc = s
        .call_303(
            "POST",
            &format!("/volumes/{}/clone", snap.id),
            Some(r#"{"name":"hs_ro_restore"}"#),
        )
        .await?;
    let restore: VolumeInfoResponse = s.get_json(&restore_loc).await?;
    ensure!(
        !gluster_read_only(&tb, "hs_ro_restore").await?,
        "the clone of a read-only clone is read-only too"
    );
    let r = mount(&tb, "hs_ro_restore", "ro-restore").await?;
    let checked = async {
        ensure!(tree_of(&r)? == src_tree, "the restored data differs");
        std::fs::write(r.join("new.txt"), b"writable again")?;
        std::fs::write(r.join("dir/data.bin"), b"overwritten")?;
        ensure!(std::fs::read(r.join("new.txt"))? == b"writable again");
        Ok(())
    }
    .await;
    tb.unmount(&r).await?;
    checked?;
    for id in [&restore.id, &snap.id, &src.id] {
        s.delete_volume(id).await?;
    }
    ensure!(s.brick_dirs()?.is_empty(), "{:?}", s.brick_dirs()?);
    Ok(())
}

/// Appends a line to `file` every 100 ms (opening and closing it each time, so every line
/// reaches the bricks) until `stop` is set; returns the lines written.
fn start_writer(
    file: PathBuf,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<std::io::Result<usize>> {
    std::thread::spawn(move || {
        use std::io::Write;
        let mut n = 0;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&file)?;
            writeln!(f, "line {n}")?;
            drop(f);
            n += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(n)
    })
}

/// `line` without terminal colour sequences (`ESC [ … m`).
fn without_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Lines of this server's log containing `text`, without colours.
fn log_lines(s: &Server, text: &str) -> Result<Vec<String>> {
    Ok(std::fs::read_to_string(s.log())?
        .lines()
        .map(without_colours)
        .filter(|l| l.contains(text))
        .collect())
}

/// Mounts under this server's state directory (its temporary clone mounts).
fn server_mounts(s: &Server) -> Vec<PathBuf> {
    gluster_csi_testbed::mounts::under(&s.dir.join("state"))
        .into_iter()
        .map(|m| m.path)
        .collect()
}

async fn clone_of_a_source_being_written_is_rejected_then_made_once_writes_stop(
    tb: Arc<Testbed>,
) -> Result<()> {
    let s = Server::start(&tb, "busy", &[]).await?;
    s.load_topology().await?;
    let src = s
        .create_volume(json!({"size": 1, "name": "hs_busy_src",
            "durability": {"type": "replicate", "replicate": {"replica": 3}}}))
        .await?;
    let src_bricks: BTreeSet<PathBuf> = src
        .bricks
        .iter()
        .filter_map(|b| Path::new(&b.path).parent().map(Path::to_path_buf))
        .collect();
    let m = mount(&tb, "hs_busy_src", "busy-src").await?;
    let result = async {
        for i in 0..8 {
            std::fs::write(m.join(format!("data-{i}.bin")), vec![i as u8; 1024 * 1024])?;
        }
        // A writer appends to a file of the source for the whole of the clone request.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = start_writer(m.join("log.txt"), Arc::clone(&stop));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t0 = Instant::now();
        let busy = s
            .call(
                "POST",
                &format!("/volumes/{}/clone", src.id),
                Some(r#"{"name":"hs_busy_clone"}"#),
            )
            .await;
        let busy_secs = t0.elapsed().as_secs_f64();
        let still_writing = !writer.is_finished();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let lines = writer
            .join()
            .map_err(|_| anyhow!("the writer panicked"))??;
        let (done, _) = busy?;
        ensure!(still_writing, "the writer stopped before the clone ended");
        eprintln!("busy clone rejected after {busy_secs:.1} s; the writer wrote {lines} lines");

        // Rejected after three attempts, with the error that says why and what to do.
        ensure!(done.status == 500, "{done:?}");
        ensure!(
            done.body.contains(
                "the source volume hs_busy_src kept changing during every copy (3 attempts)"
            ) && done
                .body
                .contains("retry the clone when writes to the source pause"),
            "{}",
            done.body
        );
        let rejected = log_lines(&s, "copy rejected")?;
        ensure!(
            rejected.len() == 3,
            "rejected attempts logged: {rejected:#?}"
        );
        ensure!(
            (1..=3).all(|a| rejected
                .iter()
                .any(|l| l.contains(&format!("attempt={a} ")))),
            "{rejected:#?}"
        );
        // Nothing is left: not in the list, not in Gluster, no brick directory on any host,
        // no mount.
        let list: VolumeListResponse = s.get_json("/volumes").await?;
        ensure!(list.volumes == vec![src.id.clone()], "{list:?}");
        ensure!(
            s.gluster_volumes("hs_busy_clone").await?.is_empty(),
            "Gluster kept the rejected clone"
        );
        let dirs = s.brick_dirs()?;
        ensure!(dirs == src_bricks, "brick directories {dirs:?}");
        ensure!(server_mounts(&s).is_empty(), "{:?}", server_mounts(&s));

        // With the writer stopped (and the clock past the margin for skew), the same request
        // succeeds at its first copy, and the clone holds what the source holds.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let accepted_before = log_lines(&s, "copy accepted")?.len();
        let loc = s
            .call_303(
                "POST",
                &format!("/volumes/{}/clone", src.id),
                Some(r#"{"name":"hs_busy_clone"}"#),
            )
            .await?;
        let clone: VolumeInfoResponse = s.get_json(&loc).await?;
        let accepted = log_lines(&s, "copy accepted")?;
        ensure!(
            accepted.len() == accepted_before + 1
                && accepted.last().is_some_and(|l| l.contains("attempt=1 ")),
            "{accepted:#?}"
        );
        ensure!(log_lines(&s, "copy rejected")?.len() == 3);
        let c = mount(&tb, "hs_busy_clone", "busy-clone").await?;
        let compared = async {
            let (a, b) = (tree_of(&m)?, tree_of(&c)?);
            ensure!(a == b, "the clone differs from the source");
            let log = std::fs::read_to_string(c.join("log.txt"))?;
            ensure!(
                log.lines().count() == lines,
                "{} lines, {lines} written",
                log.lines().count()
            );
            Ok(())
        }
        .await;
        tb.unmount(&c).await?;
        compared?;
        s.delete_volume(&clone.id).await?;
        Ok(())
    }
    .await;
    tb.unmount(&m).await?;
    result?;
    s.delete_volume(&src.id).await?;
    Ok(())
}

/// Polls Gluster until `done` holds for the output of `gluster volume info NAME` (or the
/// volume's create ended: `queue` answered); returns whether `done` was seen.
async fn wait_info(s: &Server, name: &str, done: impl Fn(&str) -> bool) -> Result<bool> {
    let deadline = Instant::now() + OP_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(out) = s.tb.gluster(0, &["volume", "info", name]).await
            && done(&out)
        {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(false)
}

async fn kill9_during_clones_ends_rolled_back_or_read_only_without_mounts(
    tb: Arc<Testbed>,
) -> Result<()> {
    let s = Server::start(&tb, "rokill", &[]).await?;
    s.load_topology().await?;
    let src = s
        .create_volume(json!({"size": 1, "name": "hs_rokill_src",
            "durability": {"type": "replicate", "replicate": {"replica": 3}}}))
        .await?;
    let m = mount(&tb, "hs_rokill_src", "rokill-src").await?;
    let wrote = async {
        for i in 0..32 {
            std::fs::write(m.join(format!("f{i}.bin")), vec![i as u8; 1024 * 1024])?;
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    tb.unmount(&m).await?;
    wrote?;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // 1. Killed during the copy: the clone is rolled back, and the mounts the copy left are
    //    gone after the restart.
    let r = s
        .req(
            "POST",
            &format!("/volumes/{}/clone", src.id),
            Some(r#"{"name":"hs_rokill_a","read_only":true}"#),
        )
        .await?;
    ensure!(r.status == 202, "{r:?}");
    let deadline = Instant::now() + OP_TIMEOUT;
    while server_mounts(&s).len() < 2 {
        ensure!(
            Instant::now() < deadline,
            "the copy's mounts never appeared"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.kill9()?;
    ensure!(!server_mounts(&s).is_empty(), "the crash left no mount");
    s.spawn()?;
    s.wait_ready().await?;
    ensure!(
        server_mounts(&s).is_empty(),
        "mounts left after the restart: {:?}",
        server_mounts(&s)
    );
    let vols = lists_agree(&s, "hs_rokill_").await?;
    ensure!(
        vols.iter().map(|v| v.id.as_str()).collect::<Vec<_>>() == vec![src.id.as_str()],
        "{vols:?}"
    );

    // 2. Killed once the quota is set, just before (or just after) the read-only step: the
    //    clone either is rolled back or is listed read-only — never listed writable.
    let r = s
        .req(
            "POST",
            &format!("/volumes/{}/clone", src.id),
            Some(r#"{"name":"hs_rokill_b","read_only":true}"#),
        )
        .await?;
    ensure!(r.status == 202, "{r:?}");
    let hit = wait_info(&s, "hs_rokill_b", |out| {
        out.contains("features.quota-deem-statfs: on")
    })
    .await?;
    ensure!(hit, "the clone's quota was never set");
    s.kill9()?;
    let ro_at_kill = gluster_read_only(&tb, "hs_rokill_b").await.unwrap_or(false);
    s.spawn()?;
    s.wait_ready().await?;
    let vols = lists_agree(&s, "hs_rokill_").await?;
    match vols.iter().find(|v| v.name == "hs_rokill_b") {
        Some(_) => {
            ensure!(
                gluster_read_only(&tb, "hs_rokill_b").await?,
                "a read-only clone is listed writable"
            );
            eprintln!("killed after the clone was complete: kept, read-only");
        }
        None => eprintln!(
            "killed before the clone was complete (read-only {}): rolled back",
            if ro_at_kill {
                "already set"
            } else {
                "not yet set"
            }
        ),
    }
    ensure!(server_mounts(&s).is_empty(), "{:?}", server_mounts(&s));
    for v in &vols {
        s.delete_volume(&v.id).await?;
    }
    ensure!(s.brick_dirs()?.is_empty(), "{:?}", s.brick_dirs()?);
    Ok(())
}

async fn delete_leaves_no_brick_directory(tb: Arc<Testbed>) -> Result<()> {
    let s = Server::start(&tb, "delete", &[]).await?;
    let t = s.load_topology().await?;
    let vol = s.create_volume(replica3(1)).await?;
    let dirs = s.brick_dirs()?;
    ensure!(dirs.len() == 3, "{dirs:?}");
    let list: VolumeListResponse = s.get_json("/volumes").await?;
    ensure!(list.volumes == vec![vol.id.clone()]);
    let cluster: ClusterInfoResponse = s.get_json(&format!("/clusters/{}", t.cluster)).await?;
    ensure!(cluster.volumes == vec![vol.id.clone()]);

    let r = s
        .req("DELETE", &format!("/volumes/{}", vol.id), None)
        .await?;
    ensure!(r.status == 202, "{r:?}");
    let (done, _) = s.wait_queue(&r.location()?).await?;
    ensure!(done.status == 204 && done.body.is_empty(), "{done:?}");
    ensure!(
        s.brick_dirs()?.is_empty(),
        "brick directories left: {:?}",
        s.brick_dirs()?
    );
    ensure!(
        s.gluster_volumes(&vol.name).await?.is_empty(),
        "Gluster still has {}",
        vol.name
    );
    s.req("GET", &format!("/volumes/{}", vol.id), None)
        .await?
        .expect_error(404, "Id not found")?;
    let list: VolumeListResponse = s.get_json("/volumes").await?;
    ensure!(list.volumes.is_empty());
    for d in &t.devices {
        let dev: DeviceInfoResponse = s.get_json(&format!("/devices/{d}")).await?;
        ensure!(dev.storage.used == 0 && dev.storage.free == DEVICE_KIB && dev.bricks.is_empty());
    }
    s.req("DELETE", &format!("/volumes/{}", vol.id), None)
        .await?
        .expect_error(404, "Id not found")?;
    Ok(())
}

async fn disperse_and_distribute_volumes(tb: Arc<Testbed>) -> Result<()> {
    let s = Server::start(&tb, "ec", &[]).await?;
    s.load_topology().await?;
    let ec = s
        .create_volume(json!({"size": 2, "durability": {"type": "disperse", "disperse": {"data": 2, "redundancy": 1}}}))
        .await?;
    let (_, bricks) = gluster_info(&tb, &ec.name).await?;
    ensure!(
        bricks.len() == 3 && ec.bricks.iter().all(|b| b.size == 1024 * 1024),
        "{ec:?}"
    );
    let out = tb.gluster(0, &["volume", "info", &ec.name]).await?;
    ensure!(out.contains("Type: Disperse"), "{out}");
    let none = s.create_volume(json!({"size": 1})).await?;
    ensure!(
        none.bricks.len() == 1 && none.mount.glusterfs.options.is_empty(),
        "{none:?}"
    );
    let m = mount(&tb, &none.name, "none").await?;
    let size = df_bytes(&m);
    tb.unmount(&m).await?;
    ensure!(size? == GIB);
    s.delete_volume(&ec.id).await?;
    s.delete_volume(&none.id).await?;
    Ok(())
}

async fn twenty_concurrent_creates_end_created_or_429(tb: Arc<Testbed>) -> Result<()> {
    let s = Arc::new(Server::start(&tb, "burst", &[]).await?);
    s.load_topology().await?;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..20 {
        let s = Arc::clone(&s);
        set.spawn(async move {
            let name = format!("hs_burst_{i}");
            let body = json!({"size": 1, "name": name,
                "durability": {"type": "replicate", "replicate": {"replica": 3}}});
            let r = s.req("POST", "/volumes", Some(&body.to_string())).await?;
            match r.status {
                202 => {
                    let (done, _) = s.wait_queue(&r.location()?).await?;
                    ensure!(done.status == 303, "{name}: {done:?}");
                    let v: VolumeInfoResponse = s.get_json(&done.location()?).await?;
                    ensure!(v.name == name);
                    Ok(Some(name))
                }
                429 => {
                    r.expect_error(429, "Server busy. Retry operation later.")?;
                    ensure!(r.header("retry-after").is_some(), "429 without Retry-After");
                    Ok(None)
                }
                other => bail!("{name}: unexpected {other}: {}", r.body),
            }
        });
    }
    let mut created = BTreeSet::new();
    let mut busy = 0;
    while let Some(res) = set.join_next().await {
        match res?? {
            Some(name) => {
                created.insert(name);
            }
            None => busy += 1,
        }
    }
    ensure!(created.len() + busy == 20);
    ensure!(
        !created.is_empty() && busy > 0,
        "created {} busy {busy}",
        created.len()
    );
    // No half-made volume: Gluster has exactly the created ones, all started, and so does the
    // server's list.
    let in_gluster = s.gluster_volumes("hs_burst_").await?;
    ensure!(
        in_gluster == created,
        "gluster {in_gluster:?} vs created {created:?}"
    );
    for name in &created {
        let (status, bricks) = gluster_info(&tb, name).await?;
        ensure!(
            status == "Started" && bricks.len() == 3,
            "{name}: {status} {bricks:?}"
        );
    }
    let list: VolumeListResponse = s.get_json("/volumes").await?;
    ensure!(list.volumes.len() == created.len());
    ensure!(s.brick_dirs()?.len() == 3 * created.len());
    for id in list.volumes {
        s.delete_volume(&id).await?;
    }
    ensure!(s.gluster_volumes("hs_burst_").await?.is_empty());
    Ok(())
}

/// After a restart: the server's list and Gluster's (volumes named `prefix…`) are the same,
/// every listed volume is started, and the brick directories on disk are exactly the listed
/// volumes' bricks. Returns the listed volumes.
async fn lists_agree(s: &Server, prefix: &str) -> Result<Vec<VolumeInfoResponse>> {
    let list: VolumeListResponse = s.get_json("/volumes").await?;
    let mut vols = Vec::new();
    let mut listed = BTreeSet::new();
    let mut listed_bricks = BTreeSet::new();
    for id in &list.volumes {
        let v: VolumeInfoResponse = s.get_json(&format!("/volumes/{id}")).await?;
        for b in &v.bricks {
            if let Some(parent) = Path::new(&b.path).parent() {
                listed_bricks.insert(parent.to_path_buf());
            }
        }
        listed.insert(v.name.clone());
        vols.push(v);
    }
    let in_gluster = s.gluster_volumes(prefix).await?;
    ensure!(
        listed == in_gluster,
        "server lists {listed:?}, Gluster has {in_gluster:?}; server log:\n{}",
        s.log_tail()
    );
    for name in &in_gluster {
        let (status, _) = gluster_info(&s.tb, name).await?;
        ensure!(status == "Started", "{name} is {status}");
    }
    let on_disk = s.brick_dirs()?;
    ensure!(
        on_disk == listed_bricks,
        "brick dirs {on_disk:?} vs listed {listed_bricks:?}"
    );
    // Device accounting matches what is listed.
    let listed_kib: u64 = vols
        .iter()
        .flat_map(|v| v.bricks.iter().map(|b| b.size))
        .sum();
    let clusters: ClusterListResponse = s.get_json("/clusters").await?;
    let mut used_kib = 0;
    for c in &clusters.clusters {
        let cluster: ClusterInfoResponse = s.get_json(&format!("/clusters/{c}")).await?;
        for n in &cluster.nodes {
            let node: NodeInfoResponse = s.get_json(&format!("/nodes/{n}")).await?;
            used_kib += node.devices.iter().map(|d| d.storage.used).sum::<u64>();
        }
    }
    ensure!(
        used_kib == listed_kib,
        "devices account {used_kib} KiB, listed bricks {listed_kib} KiB"
    );
    Ok(vols)
}

/// Waits until Gluster's count of `prefix…` volumes satisfies `done`.
async fn wait_gluster_count(s: &Server, prefix: &str, done: impl Fn(usize) -> bool) -> Result<()> {
    let deadline = Instant::now() + OP_TIMEOUT;
    while !done(s.gluster_volumes(prefix).await?.len()) {
        ensure!(
            Instant::now() < deadline,
            "Gluster never reached the wanted state"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn kill9_during_creates_then_restart_lists_agree_with_gluster(
    tb: Arc<Testbed>,
) -> Result<()> {
    let s = Arc::new(Server::start(&tb, "crash", &[]).await?);
    s.load_topology().await?;
    // One volume that is complete before the crash.
    let kept = s
        .create_volume(json!({"size": 1, "name": "hs_crash_kept"}))
        .await?;

    let mut accepted = Vec::new();
    for i in 0..8 {
        let body = json!({"size": 1, "name": format!("hs_crash_{i}"),
            "durability": {"type": "replicate", "replicate": {"replica": 3}}});
        let r = s.req("POST", "/volumes", Some(&body.to_string())).await?;
        ensure!(r.status == 202, "{r:?}");
        accepted.push(r.location()?);
    }
    // Crash while Gluster is in the middle of it: once the first new volume exists in Gluster.
    wait_gluster_count(&s, "hs_crash_", |n| n >= 2).await?;
    s.kill9()?;
    s.spawn()?;
    s.wait_ready().await?;

    // The queue ids are gone with the process, as with Heketi.
    s.req("GET", &accepted[0], None)
        .await?
        .expect_error(404, "Id not found")?;
    let vols = lists_agree(&s, "hs_crash_").await?;
    ensure!(
        vols.iter().any(|v| v.id == kept.id),
        "the complete volume survived"
    );

    // Crash again while all of them are being deleted: once the first is gone from Gluster.
    let before = vols.len();
    for v in &vols {
        let r = s.req("DELETE", &format!("/volumes/{}", v.id), None).await?;
        ensure!(r.status == 202, "{r:?}");
    }
    wait_gluster_count(&s, "hs_crash_", |n| n < before).await?;
    s.kill9()?;
    s.spawn()?;
    s.wait_ready().await?;
    // Accepted deletes are finished by the restarted server.
    let left = lists_agree(&s, "hs_crash_").await?;
    ensure!(
        left.is_empty(),
        "volumes left: {:?}",
        left.iter().map(|v| &v.name).collect::<Vec<_>>()
    );
    ensure!(s.gluster_volumes("hs_crash_").await?.is_empty());
    ensure!(s.brick_dirs()?.is_empty());
    Ok(())
}

async fn error_paths_give_heketi_codes_and_text(tb: Arc<Testbed>) -> Result<()> {
    let s = Server::start(&tb, "errors", &[]).await?;
    let t = s.load_topology().await?;
    let vol = s
        .create_volume(json!({"size": 1, "name": "hs_err_taken"}))
        .await?;
    let unknown = "0123456789abcdef0123456789abcdef";
    let cases: Vec<(&str, String, Option<String>, u16, String)> = vec![
        ("POST", "/volumes".into(), Some("nope".into()), 422, "request unable to be parsed".into()),
        ("POST", "/volumes".into(), Some(r#"{"size":"1"}"#.into()), 422, "request unable to be parsed".into()),
        ("POST", "/volumes".into(), Some("{}".into()), 400, "validation failed: size: cannot be blank.".into()),
        ("POST", "/volumes".into(), Some(r#"{"size":1,"name":"a b"}"#.into()), 400, "validation failed: name: must be in a valid format.".into()),
        ("POST", "/volumes".into(), Some(r#"{"size":1,"gid":-5}"#.into()), 400, "Bad group id less than zero".into()),
        ("POST", "/volumes".into(), Some(r#"{"size":1,"durability":{"type":"raid"}}"#.into()), 400, "Unknown durability type".into()),
        ("POST", "/volumes".into(), Some(r#"{"size":1,"durability":{"type":"replicate","replicate":{"replica":4}}}"#.into()), 400, "Invalid replica value".into()),
        ("POST", "/volumes".into(), Some(r#"{"size":1,"durability":{"type":"disperse","disperse":{"data":3,"redundancy":2}}}"#.into()), 400, "Invalid dispersion combination: 3+2".into()),
        ("POST", "/volumes".into(), Some(r#"{"size":1,"snapshot":{"enable":true,"factor":200}}"#.into()), 400, "Invalid snapshot factor".into()),
        ("POST", "/volumes".into(), Some(r#"{"size":1,"glustervolumeoptions":["a.b c d"]}"#.into()), 400, r#"Invalid volume option "a.b c d": expected "<key> <value>""#.into()),
        ("POST", "/volumes".into(), Some(r#"{"size":1,"glustervolumeoptions":["--xml on"]}"#.into()), 400, r#"Invalid volume option "--xml on": key and value must not start with "-""#.into()),
        ("POST", "/volumes".into(), Some(format!(r#"{{"size":1,"clusters":["{unknown}"]}}"#)), 400, format!("Cluster id {unknown} not found")),
        ("POST", "/volumes".into(), Some(r#"{"size":100000}"#.into()), 500, "Failed to allocate new volume: No space".into()),
        ("POST", "/volumes".into(), Some(r#"{"size":1,"name":"hs_err_taken"}"#.into()), 500, "Failed to allocate new volume: Volume name 'hs_err_taken' already in use".into()),
        ("GET", format!("/volumes/{unknown}"), None, 404, "Id not found".into()),
        ("DELETE", format!("/volumes/{unknown}"), None, 404, "Id not found".into()),
        ("POST", format!("/volumes/{unknown}/expand"), Some(r#"{"expand_size":1}"#.into()), 404, "Id not found".into()),
        ("POST", format!("/volumes/{}/expand", vol.id), Some("{}".into()), 400, "validation failed: expand_size: cannot be blank.".into()),
        ("POST", format!("/volumes/{}/expand", vol.id), Some("[".into()), 422, "request unable to be parsed".into()),
        ("POST", format!("/volumes/{unknown}/clone"), Some("{}".into()), 404, "Id not found".into()),
        ("POST", format!("/volumes/{}/clone", vol.id), Some(r#"{"name":"x y"}"#.into()), 400, "validation failed: name: must be in a valid format.".into()),
        ("POST", format!("/volumes/{}/clone", vol.id), Some(r#"{"read_only":"yes"}"#.into()), 422, "request unable to be parsed".into()),
        ("POST", format!("/volumes/{}/clone", vol.id), Some(r#"{"name":"hs_err_taken"}"#.into()), 500, format!("Failed clone volume {}: Volume name 'hs_err_taken' already in use", vol.id)),
        ("GET", format!("/queue/{unknown}"), None, 404, "Id not found".into()),
        ("GET", format!("/clusters/{unknown}"), None, 404, "Id not found".into()),
        ("DELETE", format!("/clusters/{}", t.cluster), None, 409, format!("Unable to delete cluster [{}] because it contains volumes and/or nodes", t.cluster)),
        ("DELETE", format!("/nodes/{}", t.nodes[0]), None, 409, format!("Unable to delete node [{}] because it contains devices", t.nodes[0])),
        ("DELETE", format!("/nodes/{unknown}"), None, 404, "Id not found".into()),
        ("DELETE", format!("/devices/{unknown}"), None, 404, "Id not found".into()),
        ("POST", format!("/devices/{unknown}/state"), Some(r#"{"state":"offline"}"#.into()), 404, "Id not found".into()),
        ("POST", format!("/nodes/{unknown}/state"), Some(r#"{"state":"offline"}"#.into()), 404, "Id not found".into()),
    ];
    let mut failures = Vec::new();
    for (method, path, body, status, message) in &cases {
        let r = s.req(method, path, body.as_deref()).await?;
        if let Err(e) = r.expect_error(*status, message) {
            failures.push(format!("{method} {path} {body:?}: {e}"));
        }
    }
    // A device holding a brick cannot be deleted.
    let dev = &vol.bricks[0].device;
    let r = s.req("DELETE", &format!("/devices/{dev}"), None).await?;
    if let Err(e) = r.expect_error(
        409,
        &format!("Unable to delete device [{dev}] because it contains bricks"),
    ) {
        failures.push(format!("DELETE device with bricks: {e}"));
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    // None of those left anything behind.
    let list: VolumeListResponse = s.get_json("/volumes").await?;
    ensure!(list.volumes == vec![vol.id.clone()], "{list:?}");
    ensure!(s.brick_dirs()?.len() == 1);
    s.delete_volume(&vol.id).await?;
    Ok(())
}

async fn failed_create_is_500_in_queue_and_spares_foreign_volume(tb: Arc<Testbed>) -> Result<()> {
    let s = Server::start(&tb, "foreign", &[]).await?;
    s.load_topology().await?;
    // A volume made behind the server's back, with the name the request will ask for.
    let brick = tb.brick_root(0).join("hs-foreign-volume");
    std::fs::create_dir_all(tb.on_disk(0, &brick))?;
    let spec = format!("{}:{}", tb.hosts()[0].address, brick.join("b").display());
    tb.gluster(0, &["volume", "create", "hs_foreign", &spec, "force"])
        .await?;
    let (done, _) = s
        .call(
            "POST",
            "/volumes",
            Some(r#"{"size":1,"name":"hs_foreign"}"#),
        )
        .await?;
    ensure!(done.status == 500, "{done:?}");
    ensure!(
        done.header("content-type") == Some("text/plain; charset=utf-8")
            && done.body.contains("volume create")
            && done.body.ends_with('\n'),
        "{done:?}"
    );
    // Rolled back: nothing listed, no brick directory, and the foreign volume untouched.
    let list: VolumeListResponse = s.get_json("/volumes").await?;
    ensure!(list.volumes.is_empty());
    ensure!(s.brick_dirs()?.is_empty(), "{:?}", s.brick_dirs()?);
    let (status, bricks) = gluster_info(&tb, "hs_foreign").await?;
    ensure!(
        status == "Created" && bricks == vec![spec],
        "{status} {bricks:?}"
    );
    tb.gluster(0, &["volume", "delete", "hs_foreign"]).await?;
    // The failed create reserved nothing: the same request now succeeds.
    let v = s
        .create_volume(json!({"size": 1, "name": "hs_foreign"}))
        .await?;
    s.delete_volume(&v.id).await?;
    Ok(())
}

async fn sigterm_stops_the_server(tb: Arc<Testbed>) -> Result<()> {
    let s = Server::start(&tb, "sigterm", &[]).await?;
    let pid = s
        .child
        .lock()
        .map_err(|_| anyhow!("poisoned"))?
        .as_ref()
        .map(Child::id)
        .context("no child")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = s
            .child
            .lock()
            .map_err(|_| anyhow!("poisoned"))?
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        if let Some(st) = status {
            ensure!(st.success(), "exit status {st}");
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "still running 30 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(s.log())?;
    ensure!(log.contains("heketi-server stopped"), "{log}");
    Ok(())
}
