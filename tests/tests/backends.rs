//! Backends by name (`--backends-file`) and HTTPS to Heketi, against the testbed: real
//! heketi-server processes over a real Gluster host, controllers as processes of their own
//! (restarted where the trial says so).
//!
//! The controller reads the Secrets named by the backends file and by in-tree classes through
//! the Kubernetes API; no API server can run here, so it is pointed (KUBECONFIG) at
//! `kube_fake::FakeApi`, the small HTTP server that serves the API's JSON for those reads.
//! Heketi is never faked in this file.

mod kube_fake;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use base64::Engine as _;
use csi_proto::v1::controller_client::ControllerClient;
use csi_proto::v1::volume_capability::access_mode::Mode;
use csi_proto::v1::volume_capability::{AccessMode, AccessType, MountVolume};
use csi_proto::v1::{
    CapacityRange, ControllerExpandVolumeRequest, ControllerGetVolumeRequest, CreateVolumeRequest,
    DeleteVolumeRequest, ValidateVolumeCapabilitiesRequest, Volume, VolumeCapability,
};
use gluster_csi_controller::volume_id::{BackendRef, VolumeId};
use gluster_csi_testbed::host::ExecutorKind;
use gluster_csi_testbed::{Testbed, TestbedOptions, bin_path, harness};
use heketi_client::types::{ClusterFlags, DeviceAddRequest, HostAddresses, NodeAddRequest};
use kube_fake::FakeApi;
use serde_json::json;
use tonic::transport::Channel;
use tonic::{Code, Status};

const GIB: i64 = 1 << 30;
/// Limit on one step, so a hang fails the trial instead of the run. Not a speed assertion.
const STEP: Duration = Duration::from_secs(300);
const SECRET_NS: &str = "storage";
const SECRET_NAME: &str = "heketi-admin";

fn main() {
    let opts = TestbedOptions {
        state_dir: harness::state_dir_for("backends"),
        // The second host carries the second pool of the topology trial.
        hosts: 2,
        heketi: true,
        controller: false,
        node: false,
        executor: ExecutorKind::default(),
    };
    harness::run(opts, |tb| {
        vec![
            harness::trial(
                "in_tree_class_on_a_second_heketi_deletes_and_expands_after_a_restart",
                &tb,
                in_tree_class_after_restart,
            ),
            harness::trial(
                "old_ids_of_a_backend_whose_url_changed_still_delete_through_an_alias",
                &tb,
                url_changed_alias,
            ),
            harness::trial(
                "ids_of_unknown_backends_are_refused_before_any_request",
                &tb,
                unknown_backends_refused,
            ),
            harness::trial(
                "two_pools_in_two_zones_volumes_land_where_the_topology_asks",
                &tb,
                two_pools_in_two_zones,
            ),
            harness::trial(
                "https_heketi_with_its_ca_and_a_wrong_ca_names_tls",
                &tb,
                https_heketi,
            ),
        ]
    })
}

// ---------------------------------------------------------------------------------------------
// Helpers

type Client = ControllerClient<Channel>;

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn csi_name(what: &str) -> String {
    format!(
        "pvc-{what}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

fn create_req(name: &str, params: &[(&str, &str)]) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.to_owned(),
        capacity_range: Some(CapacityRange {
            required_bytes: GIB,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![VolumeCapability {
            access_mode: Some(AccessMode {
                mode: Mode::MultiNodeMultiWriter as i32,
            }),
            access_type: Some(AccessType::Mount(MountVolume::default())),
        }],
        parameters: map(params),
        ..Default::default()
    }
}

async fn step<T>(
    what: &str,
    f: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Status> {
    match tokio::time::timeout(STEP, f).await {
        Ok(r) => r.map(tonic::Response::into_inner),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "{what}: the step limit passed"
        ))),
    }
}

async fn create(c: &mut Client, req: CreateVolumeRequest) -> Result<Volume> {
    let v = step("CreateVolume", c.create_volume(req))
        .await
        .map_err(|s| anyhow::anyhow!("CreateVolume: {s:?}"))?;
    v.volume.context("CreateVolume returned no volume")
}

async fn delete(c: &mut Client, volume_id: &str, secrets: HashMap<String, String>) -> Result<()> {
    step(
        "DeleteVolume",
        c.delete_volume(DeleteVolumeRequest {
            volume_id: volume_id.to_owned(),
            secrets,
        }),
    )
    .await
    .map_err(|s| anyhow::anyhow!("DeleteVolume {volume_id}: {s:?}"))?;
    Ok(())
}

async fn expand(c: &mut Client, volume_id: &str, gib: i64) -> Result<i64, Status> {
    step(
        "ControllerExpandVolume",
        c.controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: volume_id.to_owned(),
            capacity_range: Some(CapacityRange {
                required_bytes: gib * GIB,
                limit_bytes: 0,
            }),
            secrets: HashMap::new(),
            volume_capability: None,
        }),
    )
    .await
    .map(|r| r.capacity_bytes)
}

fn assert_code<T>(r: Result<T, Status>, want: Code, what: &str) -> Result<Status> {
    match r {
        Ok(_) => bail!("{what}: succeeded, {want:?} was expected"),
        Err(s) if s.code() == want => Ok(s),
        Err(s) => bail!("{what}: {s:?}, {want:?} was expected"),
    }
}

fn heketi_id(v: &Volume) -> Result<String> {
    Ok(VolumeId::parse(&v.volume_id)
        .context("the id does not parse")?
        .heketi_id)
}

/// Whether the testbed's heketi-server still has volume `id`.
async fn testbed_has(tb: &Testbed, id: &str) -> Result<bool> {
    let h = tb.heketi_client()?;
    match h.volume_info(id).await {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// A fake Kubernetes API holding the testbed's admin key in Secret storage/heketi-admin (type
/// kubernetes.io/glusterfs, so in-tree classes may name it too), and a kubeconfig for it.
async fn kube_api(dir: &Path, key: &str) -> Result<(FakeApi, PathBuf)> {
    let api = FakeApi::start().await;
    let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
    api.put(
        &format!("/api/v1/namespaces/{SECRET_NS}/secrets"),
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": SECRET_NAME, "namespace": SECRET_NS},
            "type": "kubernetes.io/glusterfs",
            "data": {"key": b64(key), "user": b64("admin")},
        }),
    );
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig())?;
    Ok((api, kubeconfig))
}

/// A backends file in `dir` with `text`.
fn backends_file(dir: &Path, text: &str) -> Result<PathBuf> {
    let p = dir.join("backends.yaml");
    std::fs::write(&p, text)?;
    Ok(p)
}

/// A controller process of the trial's own (own socket, log, flags and environment).
struct OwnController {
    child: tokio::process::Child,
    endpoint: String,
    log: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    socket: PathBuf,
}

impl OwnController {
    async fn start(dir: &Path, args: &[String], env: &[(&str, &Path)]) -> Result<Self> {
        let socket = dir.join("csi.sock");
        let endpoint = format!("unix://{}", socket.display());
        let mut all = vec!["--endpoint".to_owned(), endpoint.clone()];
        all.extend(args.iter().cloned());
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.display().to_string()))
            .collect();
        let log = dir.join("controller.log");
        let child = Self::spawn(&all, &env, &log, &socket).await?;
        Ok(Self {
            child,
            endpoint,
            log,
            args: all,
            env,
            socket,
        })
    }

    async fn spawn(
        args: &[String],
        env: &[(String, String)],
        log: &Path,
        socket: &Path,
    ) -> Result<tokio::process::Child> {
        let _ = std::fs::remove_file(socket);
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let mut child = tokio::process::Command::new(bin_path("gluster-csi-controller")?)
            .args(args)
            // Only what the trial gives: no API configuration unless it sets one.
            .env("KUBECONFIG", "/nonexistent/kubeconfig")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .context("starting gluster-csi-controller")?;
        let endpoint = format!("unix://{}", socket.display());
        let until = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if socket.exists() && ControllerClient::connect(endpoint.clone()).await.is_ok() {
                return Ok(child);
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "the controller exited with {status}: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            ensure!(
                tokio::time::Instant::now() < until,
                "the controller did not listen on {} in time",
                socket.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL, then a new process with the same flags: it knows only what they say.
    async fn restart(&mut self) -> Result<()> {
        self.child.kill().await?;
        self.child = Self::spawn(&self.args, &self.env, &self.log, &self.socket).await?;
        Ok(())
    }

    async fn client(&self) -> Result<Client> {
        Ok(ControllerClient::connect(self.endpoint.clone()).await?)
    }
}

/// A heketi-server of the trial's own with the testbed's admin key, on the bridge address;
/// killed when dropped. With `tls`, it serves HTTPS with that certificate and key, and `ca`
/// is what its clients trust.
struct OwnHeketi {
    _child: tokio::process::Child,
    url: String,
    ca: Option<PathBuf>,
}

impl OwnHeketi {
    async fn start(tb: &Testbed, dir: &Path, tls: Option<&Certs>) -> Result<Self> {
        let port = {
            let l = std::net::TcpListener::bind((tb.bridge_address(), 0))?;
            l.local_addr()?.port()
        };
        let listen = format!("{}:{port}", tb.bridge_address());
        let log = dir.join("heketi-server.log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let mut cmd = tokio::process::Command::new(bin_path("heketi-server")?);
        cmd.arg("--listen")
            .arg(&listen)
            .arg("--state-dir")
            .arg(dir.join("heketi-state"))
            .arg("--admin-key-file")
            .arg(&tb.env().heketi_key_file);
        cmd.args(tb.heketi_executor_args()?);
        if let Some(c) = tls {
            cmd.arg("--tls-cert-file")
                .arg(&c.server_cert)
                .arg("--tls-key-file")
                .arg(&c.server_key);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .context("starting heketi-server")?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{listen}");
        let ca = tls.map(|c| c.ca.clone());
        let mut probe = heketi_client::Client::builder(&url).disable_auth();
        if let Some(ca) = &ca {
            probe = probe.ca_file(ca);
        }
        let probe = probe.build()?;
        let t = std::time::Instant::now();
        loop {
            if probe.hello().await.is_ok() {
                return Ok(Self {
                    _child: child,
                    url,
                    ca,
                });
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "heketi-server exited with {status}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            ensure!(
                t.elapsed() < Duration::from_secs(60),
                "heketi-server did not answer {url}/hello"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn admin(&self, tb: &Testbed) -> Result<heketi_client::Client> {
        let mut b = heketi_client::Client::builder(&self.url)
            .user("admin")
            .key(secrecy::SecretString::from(tb.env().heketi_key.clone()))
            .operation_deadline(Duration::from_secs(120));
        if let Some(ca) = &self.ca {
            b = b.ca_file(ca);
        }
        Ok(b.build()?)
    }

    /// One cluster with the testbed's first host and a brick root of this server's own.
    async fn load_topology(&self, tb: &Testbed, name: &str) -> Result<()> {
        self.load_topology_on(tb, name, 0).await
    }

    /// One cluster with testbed host `i` and a brick root of this server's own.
    async fn load_topology_on(&self, tb: &Testbed, name: &str, i: usize) -> Result<()> {
        let h = self.admin(tb)?;
        let cluster = h
            .cluster_create(&ClusterFlags {
                block: false,
                file: true,
            })
            .await?;
        let host = &tb.hosts()[i];
        let addr = host.address.to_string();
        let node = h
            .node_add(&NodeAddRequest {
                zone: 1,
                hostnames: HostAddresses {
                    manage: vec![addr.clone()],
                    storage: vec![addr],
                },
                cluster_id: cluster.id,
                ..Default::default()
            })
            .await?;
        let device = tb.brick_root(i).join(name);
        let on_disk = tb.on_disk(i, &device);
        std::fs::create_dir_all(&on_disk)
            .with_context(|| format!("creating {}", on_disk.display()))?;
        h.device_add(&DeviceAddRequest {
            name: device.display().to_string(),
            node_id: node.id,
            ..Default::default()
        })
        .await?;
        Ok(())
    }
}

fn zone(z: &str) -> csi_proto::v1::Topology {
    csi_proto::v1::Topology {
        segments: map(&[("topology.gluster.heketi.csi/zone", z)]),
    }
}

fn in_zones(name: &str, requisite: &[&str], preferred: &[&str]) -> CreateVolumeRequest {
    let mut r = create_req(name, &[("volumetype", "none")]);
    r.accessibility_requirements = Some(csi_proto::v1::TopologyRequirement {
        requisite: requisite.iter().map(|z| zone(z)).collect(),
        preferred: preferred.iter().map(|z| zone(z)).collect(),
    });
    r
}

async fn capacity(c: &mut Client, z: &str) -> Result<i64> {
    let r = step(
        "GetCapacity",
        c.get_capacity(csi_proto::v1::GetCapacityRequest {
            accessible_topology: Some(zone(z)),
            parameters: map(&[("volumetype", "none")]),
            ..Default::default()
        }),
    )
    .await
    .map_err(|s| anyhow::anyhow!("GetCapacity {z}: {s:?}"))?;
    Ok(r.available_capacity)
}

/// A backends file with `east` (placed in zone east, the default) and `west` (placed in
/// `west_zone`), both authenticating with the fake API's Secret.
fn zones_file(east: &str, west: &str, west_zone: &str) -> String {
    let entry = |name: &str, url: &str, zone: &str| {
        format!(
            "  - name: {name}\n    url: {url}\n    secret: {{namespace: {SECRET_NS}, name: \
             {SECRET_NAME}}}\n    topology: {{zone: {zone}}}\n"
        )
    };
    format!(
        "default: east\nbackends:\n{}{}",
        entry("east", east, "east"),
        entry("west", west, west_zone)
    )
}

/// Two heketi-servers on disjoint hosts, placed in zones `east` (host 1) and `west` (host 2)
/// by the backends file: CreateVolume follows the accessibility requirements (preferred first,
/// then requisite), returns the zone as the volume's accessible topology and makes the volume
/// on that zone's Heketi only; a requisite zone no backend serves is RESOURCE_EXHAUSTED naming
/// it; GetCapacity answers per zone (0 where nothing is placed) and goes down in the zone a
/// volume was made in only; without requirements the default backend is used; a change of the
/// backends file reaches the running controller.
async fn two_pools_in_two_zones(tb: Arc<Testbed>) -> Result<()> {
    let dir = tb.scratch_dir("zones")?;
    let env = tb.env();
    let east = OwnHeketi::start(&tb, &dir.join("east").tap_mkdir()?, None).await?;
    east.load_topology_on(&tb, "zone-east", 0).await?;
    let west = OwnHeketi::start(&tb, &dir.join("west").tap_mkdir()?, None).await?;
    west.load_topology_on(&tb, "zone-west", 1).await?;
    let (_api, kubeconfig) = kube_api(&dir, &env.heketi_key).await?;
    let file = backends_file(&dir, &zones_file(&east.url, &west.url, "west"))?;
    let args = vec!["--backends-file".to_owned(), file.display().to_string()];
    let own = OwnController::start(&dir, &args, &[("KUBECONFIG", &kubeconfig)]).await?;
    let mut c = own.client().await?;

    let west_before = capacity(&mut c, "west").await?;
    let east_before = capacity(&mut c, "east").await?;
    ensure!(
        west_before > 0 && east_before > 0,
        "capacity {east_before} / {west_before}"
    );
    ensure!(
        capacity(&mut c, "north").await? == 0,
        "capacity where nothing is placed"
    );

    let mut made = Vec::new();
    for (what, requisite, preferred, want) in [
        (
            "preferred-west",
            &["east", "west"][..],
            &["west", "east"][..],
            "west",
        ),
        (
            "preferred-east",
            &["east", "west"][..],
            &["east"][..],
            "east",
        ),
        ("requisite-only", &["north", "west"][..], &[][..], "west"),
    ] {
        let v = create(&mut c, in_zones(&csi_name(what), requisite, preferred)).await?;
        let parsed = VolumeId::parse(&v.volume_id).context("id")?;
        ensure!(
            parsed.backend == BackendRef::Named(want.into()),
            "{what}: made on {:?}, wanted {want}",
            parsed.backend
        );
        ensure!(
            v.accessible_topology == vec![zone(want)],
            "{what}: accessible_topology {:?}",
            v.accessible_topology
        );
        let (here, there) = if want == "west" {
            (&west, &east)
        } else {
            (&east, &west)
        };
        let id = heketi_id(&v)?;
        ensure!(
            here.admin(&tb)?.volume_info(&id).await.is_ok(),
            "{what}: {id} not on {want}"
        );
        ensure!(
            there.admin(&tb)?.volume_info(&id).await.is_err(),
            "{what}: {id} also on the other pool"
        );
        made.push(v);
    }
    let west_after = capacity(&mut c, "west").await?;
    let east_after = capacity(&mut c, "east").await?;
    ensure!(
        west_before - west_after >= 2 * GIB && east_before - east_after >= GIB,
        "capacity east {east_before} -> {east_after}, west {west_before} -> {west_after} after \
         1 GiB in east and 2 GiB in west"
    );

    let refused = step(
        "CreateVolume",
        c.create_volume(in_zones(&csi_name("north"), &["north"], &["north"])),
    )
    .await;
    match refused {
        Err(s) if s.code() == Code::ResourceExhausted && s.message().contains("north") => {}
        other => bail!("a requisite zone nobody serves: {other:?}"),
    }

    // The backends file changes (west's pool now serves zone north too): the running
    // controller takes it up without a restart.
    backends_file(&dir, &zones_file(&east.url, &west.url, "north"))?;
    let t = std::time::Instant::now();
    let north = loop {
        match step(
            "CreateVolume",
            c.create_volume(in_zones(&csi_name("north-later"), &["north"], &[])),
        )
        .await
        {
            Ok(r) => break r.volume.context("no volume")?,
            Err(s) if s.code() == Code::ResourceExhausted && t.elapsed() < STEP => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(s) => bail!("north after the file changed: {s:?}"),
        }
    };
    ensure!(
        VolumeId::parse(&north.volume_id).context("id")?.backend
            == BackendRef::Named("west".into())
            && north.accessible_topology == vec![zone("north")],
        "north after the change: {north:?}"
    );
    let reload_took = t.elapsed();
    made.push(north);

    let plain = create(
        &mut c,
        create_req(&csi_name("no-topology"), &[("volumetype", "none")]),
    )
    .await?;
    ensure!(
        VolumeId::parse(&plain.volume_id).context("id")?.backend
            == BackendRef::Named("east".into())
            && plain.accessible_topology == vec![zone("east")],
        "without requirements: {plain:?}"
    );
    made.push(plain);
    for v in &made {
        delete(&mut c, &v.volume_id, HashMap::new()).await?;
    }
    println!(
        "zones: 4 volumes placed as asked (west, east, west, default east), north refused, \
         then served by west {:.1}s after the backends file changed (no restart); capacity east \
         {east_before} -> {east_after}, west {west_before} -> {west_after}",
        reload_took.as_secs_f64()
    );
    Ok(())
}

/// A CA, a server certificate it signed for `ip`, and another CA that signed nothing.
struct Certs {
    ca: PathBuf,
    other_ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

async fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = tokio::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running openssl")?;
    ensure!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

async fn make_certs(dir: &Path, ip: std::net::Ipv4Addr) -> Result<Certs> {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    for ca in ["ca", "other-ca"] {
        let (key, pem, subj) = (
            format!("{ca}.key"),
            format!("{ca}.pem"),
            format!("/CN=test {ca}"),
        );
        let mut a = vec!["req", "-x509"];
        a.extend(ec);
        a.extend([
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "2",
            "-subj",
            &subj,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(dir, &a).await?;
    }
    let mut a = vec!["req"];
    a.extend(ec);
    a.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=heketi",
    ]);
    openssl(dir, &a).await?;
    std::fs::write(
        dir.join("server.ext"),
        format!(
            "subjectAltName=IP:{ip}\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
        ),
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    )
    .await?;
    Ok(Certs {
        ca: dir.join("ca.pem"),
        other_ca: dir.join("other-ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
    })
}

/// A TCP listener that counts the connections made to it and answers 404: where an id or a
/// class points when the trial checks that nothing is sent.
async fn counting_listener(tb: &Testbed) -> Result<(String, Arc<AtomicUsize>)> {
    use tokio::io::AsyncWriteExt as _;
    let listener = tokio::net::TcpListener::bind((tb.bridge_address(), 0)).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            let body = "404 page not found";
            let reply = format!(
                "HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(reply.as_bytes()).await;
        }
    });
    Ok((url, count))
}

/// A TCP forwarder to `to` on a port of its own: a second address of the same Heketi, gone
/// (new connections refused) once the returned task is aborted.
async fn forwarder(tb: &Testbed, to: &str) -> Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind((tb.bridge_address(), 0)).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let to = to.trim_start_matches("http://").to_owned();
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let to = to.clone();
            tokio::spawn(async move {
                if let Ok(mut up) = tokio::net::TcpStream::connect(&to).await {
                    let _ = tokio::io::copy_bidirectional(&mut conn, &mut up).await;
                }
            });
        }
    });
    Ok((url, task))
}

// ---------------------------------------------------------------------------------------------
// Trials

/// An in-tree style class (secretName/secretNamespace, no CSI secrets) on a Heketi that is not
/// the controller's --heketi-url but a backend of its backends file. The sidecars bring no
/// secret to DeleteVolume and ControllerExpandVolume; after a restart (nothing in memory) both
/// still work, with the backend's own Secret.
async fn in_tree_class_after_restart(tb: Arc<Testbed>) -> Result<()> {
    let dir = tb.scratch_dir("in-tree-restart")?;
    let env = tb.env();
    // The default backend: a heketi-server of its own (empty); the class is not for it.
    let default = OwnHeketi::start(&tb, &dir.join("default").tap_mkdir()?, None).await?;
    let (_api, kubeconfig) = kube_api(&dir, &env.heketi_key).await?;
    let file = backends_file(
        &dir,
        &format!(
            "backends:\n  - name: second\n    url: {}\n    secret: {{namespace: {SECRET_NS}, \
             name: {SECRET_NAME}}}\n",
            env.heketi_url
        ),
    )?;
    let args = vec![
        "--heketi-url".to_owned(),
        default.url.clone(),
        "--heketi-key-file".to_owned(),
        env.heketi_key_file.display().to_string(),
        "--backends-file".to_owned(),
        file.display().to_string(),
    ];
    let mut own = OwnController::start(&dir, &args, &[("KUBECONFIG", &kubeconfig)]).await?;
    let mut c = own.client().await?;
    let name = csi_name("intree");
    let v = create(
        &mut c,
        create_req(
            &name,
            &[
                ("resturl", env.heketi_url.as_str()),
                ("restuser", "admin"),
                ("secretName", SECRET_NAME),
                ("secretNamespace", SECRET_NS),
                ("volumetype", "none"),
            ],
        ),
    )
    .await?;
    let parsed = VolumeId::parse(&v.volume_id).context("id")?;
    ensure!(
        parsed.backend == BackendRef::Named("second".into()),
        "the id must name the backend, not its URL: {}",
        v.volume_id
    );
    own.restart().await?;
    let mut c = own.client().await?;
    let grown = expand(&mut c, &v.volume_id, 2)
        .await
        .map_err(|s| anyhow::anyhow!("expand after restart: {s:?}"))?;
    ensure!(grown == 2 * GIB, "expanded to {grown}");
    delete(&mut c, &v.volume_id, HashMap::new()).await?;
    let id = heketi_id(&v)?;
    ensure!(!testbed_has(&tb, &id).await?, "volume {id} left behind");
    println!(
        "in-tree class on backend `second` ({}): created {}, restarted, expanded to 2 GiB and \
         deleted without secrets",
        env.heketi_url, v.volume_id
    );
    Ok(())
}

/// A volume made when Heketi was reached at another address (its id carries that URL, as every
/// id of a class with its own resturl did before backends had names). The address is gone;
/// the backends file gives the backend its new URL and the old one as an alias: the volume
/// still expands and deletes, without secrets, and nothing goes to the old address.
async fn url_changed_alias(tb: Arc<Testbed>) -> Result<()> {
    let dir = tb.scratch_dir("url-changed")?;
    let env = tb.env();
    let (old_url, forwarding) = forwarder(&tb, &env.heketi_url).await?;
    let secrets = HashMap::from([("key".to_owned(), env.heketi_key.clone())]);
    // Before: no backends file; the class named the old address and brought CSI secrets.
    let before = OwnController::start(&dir.join("before").tap_mkdir()?, &[], &[]).await?;
    let mut c = before.client().await?;
    let mut req = create_req(
        &csi_name("alias"),
        &[("resturl", old_url.as_str()), ("volumetype", "none")],
    );
    req.secrets = secrets;
    let v = create(&mut c, req).await?;
    let parsed = VolumeId::parse(&v.volume_id).context("id")?;
    ensure!(
        parsed.backend == BackendRef::Url(old_url.clone()),
        "a class with a resturl of no backend and CSI secrets records the URL: {}",
        v.volume_id
    );
    drop(c);
    drop(before);
    // Heketi moves: the old address answers no more.
    forwarding.abort();
    let _ = forwarding.await;
    let (_api, kubeconfig) = kube_api(&dir, &env.heketi_key).await?;
    let file = backends_file(
        &dir,
        &format!(
            "backends:\n  - name: main\n    url: {}\n    aliases: [{old_url}]\n    secret: \
             {{namespace: {SECRET_NS}, name: {SECRET_NAME}}}\n",
            env.heketi_url
        ),
    )?;
    let after_dir = dir.join("after").tap_mkdir()?;
    let args = vec!["--backends-file".to_owned(), file.display().to_string()];
    let after = OwnController::start(&after_dir, &args, &[("KUBECONFIG", &kubeconfig)]).await?;
    let mut c = after.client().await?;
    let grown = expand(&mut c, &v.volume_id, 2)
        .await
        .map_err(|s| anyhow::anyhow!("expand through the alias: {s:?}"))?;
    ensure!(grown == 2 * GIB, "expanded to {grown}");
    delete(&mut c, &v.volume_id, HashMap::new()).await?;
    let id = heketi_id(&v)?;
    ensure!(!testbed_has(&tb, &id).await?, "volume {id} left behind");
    // Two calls over plain http:// with a key: one warning for the backend, not one per call.
    let log = std::fs::read_to_string(&after.log)?;
    let warnings = log.matches("plain http:// with authentication on").count();
    ensure!(warnings == 1, "{warnings} plain-HTTP warnings:\n{log}");
    println!(
        "old id {} (URL {old_url}, now gone) expanded and deleted through alias of backend `main`",
        v.volume_id
    );
    Ok(())
}

/// Ids naming a backend that is not configured, and ids carrying a URL of no backend when the
/// call brings no secret, are INVALID_ARGUMENT, and no connection is made: the address such an
/// id carries (a listener that counts connections) sees none, and the controller records no
/// Heketi request in its metrics. A class whose resturl is no backend and that brings no CSI
/// secret is refused the same way, naming the fix.
async fn unknown_backends_refused(tb: Arc<Testbed>) -> Result<()> {
    let dir = tb.scratch_dir("unknown-backends")?;
    let env = tb.env();
    let (trap, connections) = counting_listener(&tb).await?;
    let (_api, kubeconfig) = kube_api(&dir, &env.heketi_key).await?;
    let file = backends_file(
        &dir,
        &format!(
            "backends:\n  - name: main\n    url: {}\n    secret: {{namespace: {SECRET_NS}, \
             name: {SECRET_NAME}}}\n",
            env.heketi_url
        ),
    )?;
    let metrics = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?
    };
    let args = vec![
        "--backends-file".to_owned(),
        file.display().to_string(),
        "--metrics-address".to_owned(),
        metrics.to_string(),
    ];
    let own = OwnController::start(&dir, &args, &[("KUBECONFIG", &kubeconfig)]).await?;
    let mut c = own.client().await?;
    let heketi_id = hex::encode(rand::random::<[u8; 16]>());
    let ids = [
        VolumeId::new(BackendRef::Named("nosuch".into()), &heketi_id).encode()?,
        VolumeId::new(BackendRef::Url(trap.clone()), &heketi_id).encode()?,
    ];
    for id in &ids {
        let r = step(
            "DeleteVolume",
            c.delete_volume(DeleteVolumeRequest {
                volume_id: id.clone(),
                secrets: HashMap::new(),
            }),
        )
        .await;
        let s = assert_code(r, Code::InvalidArgument, &format!("DeleteVolume {id}"))?;
        ensure!(s.message().contains("backends file"), "{s:?}");
        assert_code(expand(&mut c, id, 2).await, Code::InvalidArgument, "expand")?;
        let r = step(
            "ControllerGetVolume",
            c.controller_get_volume(ControllerGetVolumeRequest {
                volume_id: id.clone(),
            }),
        )
        .await;
        assert_code(r, Code::InvalidArgument, "ControllerGetVolume")?;
        let r = step(
            "ValidateVolumeCapabilities",
            c.validate_volume_capabilities(ValidateVolumeCapabilitiesRequest {
                volume_id: id.clone(),
                volume_capabilities: create_req("x", &[]).volume_capabilities,
                ..Default::default()
            }),
        )
        .await;
        assert_code(r, Code::InvalidArgument, "ValidateVolumeCapabilities")?;
    }
    // A class naming the trap with an in-tree secret and no CSI secret.
    let r = step(
        "CreateVolume",
        c.create_volume(create_req(
            &csi_name("unknown"),
            &[
                ("resturl", trap.as_str()),
                ("secretName", SECRET_NAME),
                ("secretNamespace", SECRET_NS),
                ("volumetype", "none"),
            ],
        )),
    )
    .await;
    let s = assert_code(
        r,
        Code::InvalidArgument,
        "CreateVolume on an unknown resturl",
    )?;
    ensure!(
        s.message().contains("--backends-file") && s.message().contains("controller-expand-secret"),
        "{s:?}"
    );
    ensure!(
        connections.load(Ordering::SeqCst) == 0,
        "{} connection(s) reached the address in the id",
        connections.load(Ordering::SeqCst)
    );
    let page = reqwest::get(format!("http://{metrics}/metrics"))
        .await?
        .text()
        .await?;
    let sent: Vec<&str> = page
        .lines()
        .filter(|l| l.starts_with("gluster_csi_controller_heketi_request_duration_seconds_count"))
        .collect();
    ensure!(sent.is_empty(), "Heketi requests were made: {sent:?}");
    println!(
        "ids {ids:?}: DeleteVolume, ControllerExpandVolume, ControllerGetVolume and \
         ValidateVolumeCapabilities INVALID_ARGUMENT; CreateVolume on resturl {trap} without CSI \
         secrets INVALID_ARGUMENT; 0 connections to {trap}, 0 Heketi requests in the metrics"
    );
    Ok(())
}

/// heketi-server serving HTTPS with a certificate of a CA made here. With the CA
/// (--heketi-ca-file for the default backend, caFile in the backends file for another) the
/// controller creates and deletes a volume through it; with another CA, CreateVolume is
/// UNAVAILABLE and the message names TLS.
async fn https_heketi(tb: Arc<Testbed>) -> Result<()> {
    let dir = tb.scratch_dir("https")?;
    let env = tb.env();
    let certs = make_certs(&dir, tb.bridge_address()).await?;
    let heketi = OwnHeketi::start(&tb, &dir, Some(&certs)).await?;
    heketi.load_topology(&tb, "https-trial").await?;
    let h = heketi.admin(&tb)?;
    let key_file = env.heketi_key_file.display().to_string();
    let default_backend = |ca: &Path| {
        vec![
            "--heketi-url".to_owned(),
            heketi.url.clone(),
            "--heketi-key-file".to_owned(),
            key_file.clone(),
            "--heketi-ca-file".to_owned(),
            ca.display().to_string(),
        ]
    };
    let gone = |id: String| {
        let h = h.clone();
        async move {
            match h.volume_info(&id).await {
                Ok(_) => Ok(false),
                Err(e) if e.is_not_found() => Ok(true),
                Err(e) => Err(anyhow::Error::from(e)),
            }
        }
    };

    // The default backend with --heketi-ca-file.
    let own = OwnController::start(
        &dir.join("flags").tap_mkdir()?,
        &default_backend(&certs.ca),
        &[],
    )
    .await?;
    let mut c = own.client().await?;
    let v = create(
        &mut c,
        create_req(&csi_name("tls"), &[("volumetype", "none")]),
    )
    .await?;
    delete(&mut c, &v.volume_id, HashMap::new()).await?;
    ensure!(gone(heketi_id(&v)?).await?, "{} left behind", v.volume_id);
    drop(c);
    drop(own);

    // A backend of the backends file with caFile, its key in a Secret.
    let (_api, kubeconfig) = kube_api(&dir, &env.heketi_key).await?;
    let file = backends_file(
        &dir,
        &format!(
            "backends:\n  - name: secure\n    url: {}\n    caFile: {}\n    secret: \
             {{namespace: {SECRET_NS}, name: {SECRET_NAME}}}\n",
            heketi.url,
            certs.ca.display()
        ),
    )?;
    let args = vec!["--backends-file".to_owned(), file.display().to_string()];
    let own = OwnController::start(
        &dir.join("file").tap_mkdir()?,
        &args,
        &[("KUBECONFIG", &kubeconfig)],
    )
    .await?;
    let mut c = own.client().await?;
    let v2 = create(
        &mut c,
        create_req(
            &csi_name("tls-file"),
            &[("resturl", heketi.url.as_str()), ("volumetype", "none")],
        ),
    )
    .await?;
    ensure!(
        VolumeId::parse(&v2.volume_id).map(|i| i.backend)
            == Some(BackendRef::Named("secure".into())),
        "{}",
        v2.volume_id
    );
    delete(&mut c, &v2.volume_id, HashMap::new()).await?;
    ensure!(gone(heketi_id(&v2)?).await?, "{} left behind", v2.volume_id);
    drop(c);
    drop(own);

    // The wrong CA.
    let own = OwnController::start(
        &dir.join("wrong-ca").tap_mkdir()?,
        &default_backend(&certs.other_ca),
        &[],
    )
    .await?;
    let mut c = own.client().await?;
    let r = step(
        "CreateVolume",
        c.create_volume(create_req(
            &csi_name("tls-wrong"),
            &[("volumetype", "none")],
        )),
    )
    .await;
    let s = assert_code(r, Code::Unavailable, "CreateVolume with the wrong CA")?;
    ensure!(
        s.message().contains("TLS"),
        "the message must name TLS: {s:?}"
    );
    ensure!(
        s.message().contains(&heketi.url),
        "the message must name the URL: {s:?}"
    );
    println!(
        "https heketi-server {}: create+delete with --heketi-ca-file and with caFile; wrong CA: \
         UNAVAILABLE: {}",
        heketi.url,
        s.message()
    );
    Ok(())
}

/// `create_dir_all` that returns the path.
trait TapMkdir: Sized {
    fn tap_mkdir(self) -> Result<Self>;
}

impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> Result<Self> {
        std::fs::create_dir_all(&self).with_context(|| format!("creating {}", self.display()))?;
        Ok(self)
    }
}
