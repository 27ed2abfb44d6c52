//! heketi-client against the real heketi-server on the testbed (every endpoint, asynchronous
//! operations, auth and error paths), plus a few trials against small HTTP stubs for what our
//! server cannot produce on demand (each stub says so).
//!
//! Run with `cargo test -p gluster-csi-tests --test heketi_client` as root with glusterfs
//! installed.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use gluster_csi_testbed::host::ExecutorKind;
use gluster_csi_testbed::{Testbed, TestbedOptions, harness};
use heketi_client::types::{
    ClusterCreateRequest, ClusterFlags, DeviceAddRequest, EntryState, HostAddresses,
    NodeAddRequest, NodeInfoResponse, VolumeCloneRequest, VolumeCreateRequest,
    VolumeDurabilityInfo, VolumeExpandRequest,
};
use heketi_client::{Client, Error, RetryEvent, RetryReason};
use libtest_mimic::{Failed, Trial};
use secrecy::SecretString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::RwLock;

/// Trials that move a node between clusters take this for writing; trials that create volumes
/// take it for reading, so no brick lands on a node while it is being moved.
static TOPOLOGY: RwLock<()> = RwLock::const_new(());

/// An id that is valid but names nothing.
const UNKNOWN_ID: &str = "0123456789abcdef0123456789abcdef";

fn main() {
    // Four hosts: the node trial moves the last one to a cluster of its own while three stay
    // for replica-3 volumes.
    let opts = TestbedOptions {
        state_dir: PathBuf::new(),
        hosts: 4,
        heketi: true,
        controller: false,
        node: false,
        executor: ExecutorKind::default(),
    };
    harness::run(opts, |tb| {
        let mut trials = stub_trials();
        trials.extend(testbed_trials(&tb));
        trials
    })
}

// ---------------------------------------------------------------------------------------------
// Against heketi-server on the testbed.
// ---------------------------------------------------------------------------------------------

fn testbed_trials(tb: &Arc<Testbed>) -> Vec<Trial> {
    vec![
        harness::trial("hello_answers", tb, hello_answers),
        harness::trial(
            "volume_create_info_list_delete_round_trip",
            tb,
            volume_round_trip,
        ),
        harness::trial(
            "volume_expand_adds_the_requested_gib",
            tb,
            volume_expand_adds,
        ),
        harness::trial(
            "volume_clone_makes_an_independent_volume",
            tb,
            volume_clone_independent,
        ),
        harness::trial(
            "volume_create_with_a_taken_name_is_name_in_use",
            tb,
            taken_name_is_name_in_use,
        ),
        harness::trial(
            "volume_create_larger_than_the_cluster_is_no_space",
            tb,
            too_large_is_no_space,
        ),
        harness::trial("unknown_ids_are_not_found", tb, unknown_ids_are_not_found),
        harness::trial(
            "operation_deadline_gives_timeout_and_the_client_stays_usable",
            tb,
            deadline_gives_timeout,
        ),
        harness::trial("wrong_key_is_rejected_with_401", tb, wrong_key_is_rejected),
        harness::trial("no_token_is_rejected_with_401", tb, no_token_is_rejected),
        harness::trial(
            "user_key_lists_volumes_but_admin_routes_need_admin",
            tb,
            user_key_is_limited,
        ),
        harness::trial(
            "clusters_list_info_and_topology_show_the_testbed",
            tb,
            clusters_and_topology,
        ),
        harness::trial(
            "cluster_node_device_life_cycle",
            tb,
            cluster_node_device_life_cycle,
        ),
    ]
}

fn admin(tb: &Testbed) -> Result<Client> {
    let env = tb.env();
    Ok(Client::builder(&env.heketi_url)
        .user(&env.heketi_user)
        .key(SecretString::from(env.heketi_key.clone()))
        .build()?)
}

fn replica3(name: &str, size: u64) -> VolumeCreateRequest {
    VolumeCreateRequest {
        size,
        name: name.into(),
        durability: VolumeDurabilityInfo::replicate(3),
        ..Default::default()
    }
}

async fn hello_answers(tb: Arc<Testbed>) -> Result<()> {
    let greeting = admin(&tb)?.hello().await?;
    ensure!(!greeting.is_empty(), "empty greeting");
    // /hello needs no auth.
    let anonymous = Client::builder(&tb.env().heketi_url)
        .disable_auth()
        .build()?;
    ensure!(anonymous.hello().await? == greeting);
    Ok(())
}

async fn volume_round_trip(tb: Arc<Testbed>) -> Result<()> {
    let _topology = TOPOLOGY.read().await;
    let c = admin(&tb)?;
    let mut req = replica3("hc_round_trip", 1);
    req.gid = 2001;
    let v = c.volume_create(&req).await.context("create")?;
    ensure!(v.name == "hc_round_trip" && v.size == 1, "{v:?}");
    ensure!(v.id.len() == 32, "id {:?}", v.id);
    ensure!(v.durability.replicate.replica == 3, "{:?}", v.durability);
    ensure!(v.gid == 2001, "gid {}", v.gid);
    ensure!(v.bricks.len() == 3, "{} bricks", v.bricks.len());
    let m = &v.mount.glusterfs;
    ensure!(m.hosts.len() == 3, "mount hosts {:?}", m.hosts);
    ensure!(
        m.device == format!("{}:hc_round_trip", m.hosts[0]),
        "device {:?}",
        m.device
    );

    let info = c.volume_info(&v.id).await.context("info")?;
    ensure!(info.id == v.id && info.name == v.name && info.cluster == v.cluster);
    ensure!(c.volume_list().await?.volumes.contains(&v.id), "not listed");
    let cluster = c.cluster_info(&v.cluster).await?;
    ensure!(cluster.volumes.contains(&v.id), "cluster lacks the volume");

    // Gluster really has it.
    let gluster = tb.gluster(0, &["volume", "info", "hc_round_trip"]).await?;
    ensure!(gluster.contains("Started"), "{gluster}");

    c.volume_delete(&v.id).await.context("delete")?;
    let gone = c.volume_info(&v.id).await;
    ensure!(
        gone.as_ref().is_err_and(Error::is_not_found),
        "after delete: {gone:?}"
    );
    ensure!(
        !c.volume_list().await?.volumes.contains(&v.id),
        "still listed"
    );
    let again = c.volume_delete(&v.id).await;
    ensure!(
        again.as_ref().is_err_and(Error::is_not_found),
        "second delete: {again:?}"
    );
    Ok(())
}

async fn volume_expand_adds(tb: Arc<Testbed>) -> Result<()> {
    let _topology = TOPOLOGY.read().await;
    let c = admin(&tb)?;
    let v = c.volume_create(&replica3("hc_expand", 1)).await?;
    let grown = c
        .volume_expand(&v.id, &VolumeExpandRequest { expand_size: 2 })
        .await
        .context("expand")?;
    ensure!(grown.id == v.id, "expand returned {}", grown.id);
    ensure!(grown.size == 3, "size after expand {}", grown.size);
    ensure!(c.volume_info(&v.id).await?.size == 3);
    c.volume_delete(&v.id).await?;
    Ok(())
}

async fn volume_clone_independent(tb: Arc<Testbed>) -> Result<()> {
    let _topology = TOPOLOGY.read().await;
    let c = admin(&tb)?;
    let v = c.volume_create(&replica3("hc_clone_src", 1)).await?;
    let clone = c
        .volume_clone(
            &v.id,
            &VolumeCloneRequest {
                name: "hc_clone_dst".into(),
                ..Default::default()
            },
        )
        .await
        .context("clone")?;
    ensure!(clone.id != v.id, "clone has the source's id");
    ensure!(clone.name == "hc_clone_dst", "clone name {}", clone.name);
    ensure!(clone.size == v.size, "clone size {}", clone.size);
    // Deleting the source leaves the clone.
    c.volume_delete(&v.id).await?;
    ensure!(c.volume_info(&clone.id).await?.name == "hc_clone_dst");
    c.volume_delete(&clone.id).await?;
    let unknown = c
        .volume_clone(UNKNOWN_ID, &VolumeCloneRequest::default())
        .await;
    ensure!(
        unknown.as_ref().is_err_and(Error::is_not_found),
        "{unknown:?}"
    );
    Ok(())
}

async fn taken_name_is_name_in_use(tb: Arc<Testbed>) -> Result<()> {
    let _topology = TOPOLOGY.read().await;
    let c = admin(&tb)?;
    let v = c.volume_create(&replica3("hc_taken", 1)).await?;
    let second = c.volume_create(&replica3("hc_taken", 1)).await;
    let check = match &second {
        Err(e) if e.is_name_in_use() && !e.is_no_space() && !e.is_retryable() => Ok(()),
        other => Err(anyhow::anyhow!("second create: {other:?}")),
    };
    if let Ok(extra) = second {
        c.volume_delete(&extra.id).await?;
    }
    c.volume_delete(&v.id).await?;
    check
}

async fn too_large_is_no_space(tb: Arc<Testbed>) -> Result<()> {
    let c = admin(&tb)?;
    // 1 PiB: more than any test machine's brick roots.
    let r = c.volume_create(&replica3("hc_too_large", 1 << 20)).await;
    match r {
        Err(e) if e.is_no_space() => {}
        Err(e) => bail!("expected no space, got {e:?}"),
        Ok(v) => {
            c.volume_delete(&v.id).await?;
            bail!("a 1 PiB volume was created");
        }
    }
    ensure!(
        volume_named(&c, "hc_too_large").await?.is_none(),
        "a failed create left a volume"
    );
    Ok(())
}

async fn unknown_ids_are_not_found(tb: Arc<Testbed>) -> Result<()> {
    let c = admin(&tb)?;
    let checks: Vec<(&str, heketi_client::Result<()>)> = vec![
        ("volume info", c.volume_info(UNKNOWN_ID).await.map(drop)),
        ("volume delete", c.volume_delete(UNKNOWN_ID).await),
        (
            "volume expand",
            c.volume_expand(UNKNOWN_ID, &VolumeExpandRequest { expand_size: 1 })
                .await
                .map(drop),
        ),
        ("cluster info", c.cluster_info(UNKNOWN_ID).await.map(drop)),
        ("node info", c.node_info(UNKNOWN_ID).await.map(drop)),
        ("device info", c.device_info(UNKNOWN_ID).await.map(drop)),
        (
            "volume info of a path",
            c.volume_info("../clusters").await.map(drop),
        ),
    ];
    for (what, r) in checks {
        match r {
            Err(e) if e.is_not_found() => {}
            other => bail!("{what}: expected not found, got {other:?}"),
        }
    }
    Ok(())
}

async fn deadline_gives_timeout(tb: Arc<Testbed>) -> Result<()> {
    let _topology = TOPOLOGY.read().await;
    let c = admin(&tb)?;
    // Too short for a real create: the call gives up, the operation goes on server-side.
    let hasty = c.with_operation_deadline(Duration::from_millis(1));
    let r = hasty.volume_create(&replica3("hc_hasty", 1)).await;
    ensure!(
        matches!(r, Err(Error::Timeout { .. })),
        "hasty create: {r:?}"
    );
    // Dropping a create half-way (typically while it polls) is safe too.
    let _ = tokio::time::timeout(
        Duration::from_millis(300),
        c.volume_create(&replica3("hc_dropped", 1)),
    )
    .await;
    // The same client still works for a whole operation.
    let v = c.volume_create(&replica3("hc_after_drop", 1)).await?;
    c.volume_delete(&v.id).await?;
    // Whatever the two abandoned creates did server-side is cleaned up.
    for name in ["hc_hasty", "hc_dropped"] {
        if let Some(id) = wait_for_volume_named(&c, name, Duration::from_secs(60)).await? {
            c.volume_delete(&id).await?;
        }
    }
    Ok(())
}

/// Waits until a volume named `name` is listed; `None` when none shows up within `limit`.
async fn wait_for_volume_named(c: &Client, name: &str, limit: Duration) -> Result<Option<String>> {
    let until = tokio::time::Instant::now() + limit;
    loop {
        if let Some(id) = volume_named(c, name).await? {
            return Ok(Some(id));
        }
        if tokio::time::Instant::now() >= until {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The id of the listed volume named `name`; volumes deleted meanwhile by other trials are
/// skipped.
async fn volume_named(c: &Client, name: &str) -> Result<Option<String>> {
    for id in c.volume_list().await?.volumes {
        match c.volume_info(&id).await {
            Ok(v) if v.name == name => return Ok(Some(id)),
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}

async fn wrong_key_is_rejected(tb: Arc<Testbed>) -> Result<()> {
    let env = tb.env();
    let c = Client::builder(&env.heketi_url)
        .key(SecretString::from("not-the-admin-key"))
        .build()?;
    for r in [
        c.volume_list().await.map(drop),
        c.cluster_list().await.map(drop),
        c.volume_create(&replica3("hc_wrong_key", 1))
            .await
            .map(drop),
    ] {
        match r {
            Err(Error::Api {
                status: 401,
                message,
            }) if !message.is_empty() => {}
            other => bail!("expected 401, got {other:?}"),
        }
    }
    // The rejected create did nothing.
    ensure!(
        volume_named(&admin(&tb)?, "hc_wrong_key").await?.is_none(),
        "a rejected create left a volume"
    );
    Ok(())
}

async fn no_token_is_rejected(tb: Arc<Testbed>) -> Result<()> {
    let c = Client::builder(&tb.env().heketi_url)
        .disable_auth()
        .build()?;
    let r = c.cluster_list().await;
    ensure!(
        matches!(&r, Err(Error::Api { status: 401, .. })),
        "without a token: {r:?}"
    );
    Ok(())
}

async fn user_key_is_limited(tb: Arc<Testbed>) -> Result<()> {
    let env = tb.env();
    let key_file = env.heketi_key_file.with_file_name("heketi-user.key");
    let key = std::fs::read_to_string(&key_file)
        .with_context(|| format!("reading {}", key_file.display()))?;
    let user = Client::builder(&env.heketi_url)
        .user("user")
        .key(SecretString::from(key.trim()))
        .build()?;
    // `/volumes` is the one path open to `user`.
    user.volume_list().await.context("user lists volumes")?;
    for (what, r) in [
        ("cluster list", user.cluster_list().await.map(drop)),
        ("volume info", user.volume_info(UNKNOWN_ID).await.map(drop)),
        ("node info", user.node_info(UNKNOWN_ID).await.map(drop)),
    ] {
        match r {
            Err(Error::Api {
                status: 401,
                message,
            }) if message.contains("Administrator access required") => {}
            other => {
                bail!("{what} as user: expected 401 Administrator access required, got {other:?}")
            }
        }
    }
    // The admin key signed as `user` is not the user key.
    let mixed = Client::builder(&env.heketi_url)
        .user("user")
        .key(SecretString::from(env.heketi_key.clone()))
        .build()?;
    let r = mixed.volume_list().await;
    ensure!(
        matches!(&r, Err(Error::Api { status: 401, .. })),
        "admin key as user: {r:?}"
    );
    Ok(())
}

async fn clusters_and_topology(tb: Arc<Testbed>) -> Result<()> {
    let _topology = TOPOLOGY.read().await;
    let c = admin(&tb)?;
    let clusters = c.cluster_list().await?.clusters;
    ensure!(clusters.len() == 1, "clusters {clusters:?}");
    let info = c.cluster_info(&clusters[0]).await?;
    ensure!(info.id == clusters[0]);
    ensure!(
        info.nodes.len() == tb.hosts().len(),
        "nodes {:?}",
        info.nodes
    );
    ensure!(info.file, "cluster does not take file volumes");

    let v = c.volume_create(&replica3("hc_topology", 1)).await?;
    let topo = c.topology().await?;
    ensure!(topo.clusters.len() == 1);
    let t = &topo.clusters[0];
    ensure!(t.id == info.id && t.file == info.file && t.block == info.block);
    ensure!(t.nodes.len() == tb.hosts().len(), "{} nodes", t.nodes.len());
    for (i, h) in tb.hosts().iter().enumerate() {
        let addr = h.address.to_string();
        let node = t
            .nodes
            .iter()
            .find(|n| n.hostnames.storage.contains(&addr))
            .with_context(|| format!("host {i} ({addr}) missing from the topology"))?;
        ensure!(node.cluster_id == info.id);
        ensure!(
            node.devices.len() == 1,
            "{} devices on {addr}",
            node.devices.len()
        );
        let d = &node.devices[0];
        ensure!(
            d.name == tb.brick_root(i).display().to_string(),
            "device {}",
            d.name
        );
        ensure!(
            d.storage.total > 0 && d.storage.free <= d.storage.total,
            "{:?}",
            d.storage
        );
        // node_info and device_info agree with the topology.
        ensure!(c.node_info(&node.id).await?.id == node.id);
        ensure!(c.device_info(&d.id).await?.name == d.name);
    }
    let tv = t
        .volumes
        .iter()
        .find(|x| x.id == v.id)
        .context("new volume missing from the topology")?;
    ensure!(tv.bricks.len() == 3);
    // Bricks are accounted on the devices that hold them.
    let brick_devices: Vec<&str> = tv.bricks.iter().map(|b| b.device.as_str()).collect();
    for n in &t.nodes {
        for d in &n.devices {
            if brick_devices.contains(&d.id.as_str()) {
                ensure!(
                    d.storage.used > 0,
                    "device {} holds a brick but uses 0",
                    d.id
                );
            }
        }
    }
    c.volume_delete(&v.id).await?;
    Ok(())
}

/// Moves the last host's node from the testbed cluster to a new cluster and back, through
/// every node and device call.
async fn cluster_node_device_life_cycle(tb: Arc<Testbed>) -> Result<()> {
    let _topology = TOPOLOGY.write().await;
    let c = admin(&tb)?;
    let home = c
        .cluster_list()
        .await?
        .clusters
        .first()
        .cloned()
        .context("no cluster")?;
    let last = tb.hosts().len() - 1;
    let addr = tb.hosts()[last].address.to_string();
    let brick_root = tb.brick_root(last).display().to_string();
    let node = find_node(&c, &home, &addr).await?;

    // A cluster with nodes cannot be deleted.
    match c.cluster_delete(&home).await {
        Err(Error::Api { status: 409, .. }) => {}
        other => bail!("deleting a cluster with nodes: {other:?}"),
    }

    remove_node(&c, &node).await.context("removing the node")?;
    ensure!(
        !c.cluster_info(&home).await?.nodes.contains(&node.id),
        "node still in its cluster"
    );

    let flags = ClusterCreateRequest {
        block: false,
        file: true,
    };
    let other = c.cluster_create(&flags).await.context("cluster create")?;
    ensure!(other.id.len() == 32 && other.nodes.is_empty() && other.file && !other.block);
    c.cluster_set_flags(
        &other.id,
        &ClusterFlags {
            block: false,
            file: true,
        },
    )
    .await
    .context("cluster flags")?;
    ensure!(c.cluster_list().await?.clusters.contains(&other.id));

    let moved = add_node(&c, &other.id, last, &addr, &brick_root)
        .await
        .context("adding the node to the new cluster")?;
    ensure!(moved.cluster_id == other.id);
    ensure!(c.cluster_info(&other.id).await?.nodes == vec![moved.id.clone()]);

    // Node state round trip.
    c.node_set_state(&moved.id, EntryState::Offline).await?;
    ensure!(c.node_info(&moved.id).await?.state == EntryState::Offline);
    c.node_set_state(&moved.id, EntryState::Online).await?;
    ensure!(c.node_info(&moved.id).await?.state == EntryState::Online);

    // Back home, and the extra cluster goes.
    let moved = c.node_info(&moved.id).await?;
    remove_node(&c, &moved)
        .await
        .context("removing the node again")?;
    c.cluster_delete(&other.id)
        .await
        .context("cluster delete")?;
    let gone = c.cluster_info(&other.id).await;
    ensure!(gone.as_ref().is_err_and(Error::is_not_found), "{gone:?}");
    let back = add_node(&c, &home, last, &addr, &brick_root)
        .await
        .context("adding the node back")?;
    ensure!(back.cluster_id == home);
    ensure!(c.cluster_info(&home).await?.nodes.len() == tb.hosts().len());
    Ok(())
}

async fn find_node(c: &Client, cluster: &str, addr: &str) -> Result<NodeInfoResponse> {
    for id in c.cluster_info(cluster).await?.nodes {
        let n = c.node_info(&id).await?;
        if n.hostnames.storage.iter().any(|s| s == addr) {
            return Ok(n);
        }
    }
    bail!("no node with storage address {addr} in cluster {cluster}")
}

/// Takes every device of `node` out (offline → failed → delete), then deletes the node.
async fn remove_node(c: &Client, node: &NodeInfoResponse) -> Result<()> {
    for d in &node.devices {
        c.device_set_state(&d.id, EntryState::Offline)
            .await
            .context("device offline")?;
        ensure!(c.device_info(&d.id).await?.state == EntryState::Offline);
        c.device_set_state(&d.id, EntryState::Failed)
            .await
            .context("device failed")?;
        c.device_delete(&d.id).await.context("device delete")?;
        let gone = c.device_info(&d.id).await;
        ensure!(gone.as_ref().is_err_and(Error::is_not_found), "{gone:?}");
    }
    c.node_set_state(&node.id, EntryState::Offline)
        .await
        .context("node offline")?;
    c.node_delete(&node.id).await.context("node delete")?;
    let gone = c.node_info(&node.id).await;
    ensure!(gone.as_ref().is_err_and(Error::is_not_found), "{gone:?}");
    Ok(())
}

/// Adds host `index` as a node of `cluster` with its brick root as device.
async fn add_node(
    c: &Client,
    cluster: &str,
    index: usize,
    addr: &str,
    brick_root: &str,
) -> Result<NodeInfoResponse> {
    let node = c
        .node_add(&NodeAddRequest {
            zone: i64::try_from(index + 1)?,
            hostnames: HostAddresses {
                manage: vec![addr.to_owned()],
                storage: vec![addr.to_owned()],
            },
            cluster_id: cluster.to_owned(),
            ..Default::default()
        })
        .await
        .context("node add")?;
    ensure!(node.hostnames.storage == vec![addr.to_owned()]);
    c.device_add(&DeviceAddRequest {
        name: brick_root.to_owned(),
        node_id: node.id.clone(),
        ..Default::default()
    })
    .await
    .context("device add")?;
    let node = c.node_info(&node.id).await?;
    ensure!(
        node.devices.len() == 1 && node.devices[0].name == brick_root,
        "devices {:?}",
        node.devices
    );
    ensure!(node.devices[0].state == EntryState::Online);
    Ok(node)
}

// ---------------------------------------------------------------------------------------------
// Against stubs: only what heketi-server cannot produce on demand.
// ---------------------------------------------------------------------------------------------

const STUB_KEY: &str = "stub-key";

fn stub_trials() -> Vec<Trial> {
    vec![
        stub_trial("stub_429_with_retry_after_is_retried", stub_429_retried),
        stub_trial(
            "stub_429_retry_after_beyond_the_deadline_is_returned",
            stub_429_beyond_deadline,
        ),
        stub_trial(
            "stub_429_retry_after_beyond_the_retry_budget_is_returned_at_once",
            stub_429_beyond_budget,
        ),
        stub_trial("stub_503_is_retried", stub_503_retried),
        stub_trial(
            "stub_malformed_json_is_a_decode_error_with_the_body",
            stub_malformed_json,
        ),
        stub_trial(
            "stub_a_server_that_never_answers_gives_timeout",
            stub_never_answers,
        ),
        stub_trial(
            "stub_a_reset_post_is_not_replayed",
            stub_reset_post_not_replayed,
        ),
        stub_trial("stub_a_reset_get_is_retried", stub_reset_get_retried),
    ]
}

fn stub_trial<F, Fut>(name: &str, f: F) -> Trial
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<()>>,
{
    Trial::test(name, move || {
        harness::block_on(f()).map_err(|e| Failed::from(format!("{e:#}")))
    })
}

fn stub_client(addr: std::net::SocketAddr) -> heketi_client::ClientBuilder {
    Client::builder(format!("http://{addr}")).key(SecretString::from(STUB_KEY))
}

/// What an axum stub saw: requests, and tokens that did not verify.
#[derive(Default)]
struct Seen {
    requests: AtomicUsize,
    bad_tokens: AtomicUsize,
}

/// Checks the request's token like Heketi does (HS256 with `STUB_KEY`, `iss`, `exp`, `qsh`).
fn token_ok(method: &axum::http::Method, path: &str, headers: &axum::http::HeaderMap) -> bool {
    #[derive(serde::Deserialize)]
    struct Claims {
        iss: String,
        qsh: String,
    }
    let Some(token) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bearer "))
    else {
        return false;
    };
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.set_required_spec_claims(&["exp", "iat"]);
    let Ok(data) = jsonwebtoken::decode::<Claims>(
        token.as_bytes(),
        &jsonwebtoken::DecodingKey::from_secret(STUB_KEY.as_bytes()),
        &v,
    ) else {
        return false;
    };
    data.claims.iss == "admin" && data.claims.qsh == heketi_client::auth::qsh(method.as_str(), path)
}

/// Serves `router` on a fresh local port until the trial's runtime ends.
async fn serve(router: axum::Router) -> Result<std::net::SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(addr)
}

/// Router answering every request with `answer(n)` for the n-th request (0-based), counting
/// requests and bad tokens in `seen`.
fn counting_router<A>(seen: Arc<Seen>, answer: A) -> axum::Router
where
    A: Fn(usize) -> axum::response::Response + Clone + Send + Sync + 'static,
{
    axum::Router::new().fallback(move |req: axum::extract::Request| {
        let seen = Arc::clone(&seen);
        let answer = answer.clone();
        async move {
            if !token_ok(req.method(), req.uri().path(), req.headers()) {
                seen.bad_tokens.fetch_add(1, Ordering::SeqCst);
            }
            let n = seen.requests.fetch_add(1, Ordering::SeqCst);
            answer(n)
        }
    })
}

/// Retries the client reported, as (method, route, reason, attempt).
type Retries = Arc<std::sync::Mutex<Vec<(String, &'static str, RetryReason, u32)>>>;

/// `b` with an observer that records every retry in the returned list.
fn observed(b: heketi_client::ClientBuilder) -> (heketi_client::ClientBuilder, Retries) {
    let seen = Retries::default();
    let sink = Arc::clone(&seen);
    let b = b.on_retry(move |e: &RetryEvent| {
        sink.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((e.method.to_string(), e.route, e.reason, e.attempt));
    });
    (b, seen)
}

fn retries(r: &Retries) -> Vec<(String, &'static str, RetryReason, u32)> {
    r.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

fn reply(status: u16, headers: &[(&str, &str)], body: &str) -> axum::response::Response {
    let mut b = axum::response::Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(axum::body::Body::from(body.to_owned()))
        .unwrap_or_else(|_| axum::response::Response::new(axum::body::Body::empty()))
}

// stub: our server cannot produce this on demand (a 429 needs more than 8 operations in flight
// at one instant).
async fn stub_429_retried() -> Result<()> {
    let seen = Arc::new(Seen::default());
    let addr = serve(counting_router(Arc::clone(&seen), |n| match n {
        0 => reply(
            429,
            &[("retry-after", "1")],
            "Server busy. Retry operation later.\n",
        ),
        _ => reply(
            200,
            &[("content-type", "application/json")],
            r#"{"volumes":["aa"]}"#,
        ),
    }))
    .await?;
    let (b, reported) = observed(stub_client(addr));
    let c = b.build()?;
    let list = c.volume_list().await?;
    ensure!(list.volumes == vec!["aa".to_string()], "{list:?}");
    ensure!(seen.requests.load(Ordering::SeqCst) == 2);
    let reported = retries(&reported);
    ensure!(
        reported
            == [(
                "GET".to_owned(),
                "/volumes",
                RetryReason::TooManyRequests,
                1
            )],
        "{reported:?}"
    );
    ensure!(
        seen.bad_tokens.load(Ordering::SeqCst) == 0,
        "a retry carried a bad token"
    );
    Ok(())
}

// stub: our server cannot produce this on demand. A Retry-After the deadline cannot wait for
// is reported at once, as a retryable error, without another attempt.
async fn stub_429_beyond_deadline() -> Result<()> {
    let seen = Arc::new(Seen::default());
    let addr = serve(counting_router(Arc::clone(&seen), |_| {
        reply(
            429,
            &[("retry-after", "30")],
            "Server busy. Retry operation later.\n",
        )
    }))
    .await?;
    let c = stub_client(addr)
        .operation_deadline(Duration::from_secs(5))
        .build()?;
    match c.volume_create(&replica3("x", 1)).await {
        Err(e @ Error::Api { status: 429, .. }) => {
            ensure!(e.is_retryable() && e.is_unavailable(), "{e:?}");
            ensure!(e.to_string().contains("Server busy"), "{e}");
        }
        other => bail!("expected the 429, got {other:?}"),
    }
    ensure!(seen.requests.load(Ordering::SeqCst) == 1);
    Ok(())
}

// stub: our server cannot produce this on demand. heketi-server asks for 5 s; a client whose
// retry budget is shorter (the controller's) reports the 429 at once, without waiting.
async fn stub_429_beyond_budget() -> Result<()> {
    let seen = Arc::new(Seen::default());
    let addr = serve(counting_router(Arc::clone(&seen), |_| {
        reply(
            429,
            &[("retry-after", "5")],
            "Server busy. Retry operation later.\n",
        )
    }))
    .await?;
    let (b, reported) = observed(stub_client(addr).retry_budget(Duration::from_secs(3)));
    let c = b.build()?;
    match c.volume_list().await {
        Err(e @ Error::Api { status: 429, .. }) => ensure!(e.is_unavailable(), "{e:?}"),
        other => bail!("expected the 429, got {other:?}"),
    }
    ensure!(seen.requests.load(Ordering::SeqCst) == 1);
    ensure!(retries(&reported).is_empty(), "{:?}", retries(&reported));
    Ok(())
}

// stub: our server cannot produce this on demand (503 needs Heketi's read-only admin state).
async fn stub_503_retried() -> Result<()> {
    let seen = Arc::new(Seen::default());
    let cluster = r#"{"id":"0123456789abcdef0123456789abcdef","nodes":[],"volumes":[],"block":false,"file":true}"#;
    let addr = serve(counting_router(Arc::clone(&seen), move |n| match n {
        0 | 1 => reply(503, &[], "Service disabled for maintenance\n"),
        _ => reply(201, &[("content-type", "application/json")], cluster),
    }))
    .await?;
    let (b, reported) = observed(stub_client(addr));
    let c = b.build()?;
    let created = c
        .cluster_create(&ClusterCreateRequest {
            block: false,
            file: true,
        })
        .await?;
    ensure!(created.id == UNKNOWN_ID && created.file, "{created:?}");
    ensure!(seen.requests.load(Ordering::SeqCst) == 3);
    ensure!(seen.bad_tokens.load(Ordering::SeqCst) == 0);
    let reported = retries(&reported);
    let want: Vec<_> = (1..=2)
        .map(|a| {
            (
                "POST".to_owned(),
                "/clusters",
                RetryReason::ServiceUnavailable,
                a,
            )
        })
        .collect();
    ensure!(reported == want, "{reported:?}");

    // Once the attempts are used up the 503 is returned.
    let seen = Arc::new(Seen::default());
    let addr = serve(counting_router(Arc::clone(&seen), |_| {
        reply(503, &[("retry-after", "0")], "")
    }))
    .await?;
    let c = stub_client(addr).max_attempts(3).build()?;
    match c.cluster_list().await {
        Err(Error::Api {
            status: 503,
            message,
        }) => ensure!(message == "server did not provide a message (status 503)"),
        other => bail!("expected 503, got {other:?}"),
    }
    ensure!(seen.requests.load(Ordering::SeqCst) == 3);
    Ok(())
}

// stub: our server cannot produce this on demand (it always sends valid JSON).
async fn stub_malformed_json() -> Result<()> {
    let seen = Arc::new(Seen::default());
    let addr = serve(counting_router(Arc::clone(&seen), |_| {
        reply(
            200,
            &[("content-type", "application/json")],
            r#"{"id": "0123", "nodes": [truncated"#,
        )
    }))
    .await?;
    let c = stub_client(addr).build()?;
    match c.cluster_info(UNKNOWN_ID).await {
        Err(Error::Decode { body, .. }) => ensure!(body.contains("[truncated"), "body {body:?}"),
        other => bail!("expected a decode error, got {other:?}"),
    }
    ensure!(
        seen.requests.load(Ordering::SeqCst) == 1,
        "decode errors are not retried"
    );
    Ok(())
}

/// A TCP server that accepts and reads but never answers; counts connections.
async fn silent_server() -> Result<(std::net::SocketAddr, Arc<AtomicUsize>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    Ok((addr, accepted))
}

// stub: our server cannot produce this on demand (a server that accepts and never answers).
async fn stub_never_answers() -> Result<()> {
    let (addr, accepted) = silent_server().await?;
    let c = stub_client(addr)
        .request_timeout(Duration::from_millis(300))
        .operation_deadline(Duration::from_secs(2))
        .build()?;
    let r = c.volume_list().await;
    ensure!(matches!(r, Err(Error::Timeout { .. })), "GET: {r:?}");
    let gets = accepted.load(Ordering::SeqCst);
    ensure!(gets >= 1);

    // A POST that times out is not sent again.
    let r = c.volume_create(&replica3("x", 1)).await;
    ensure!(matches!(r, Err(Error::Timeout { .. })), "POST: {r:?}");
    ensure!(
        accepted.load(Ordering::SeqCst) == gets + 1,
        "the POST was replayed"
    );
    Ok(())
}

/// A TCP server that reads each request completely, then resets the connection for the first
/// `resets` connections and answers later ones with `answer`. Counts connections.
async fn resetting_server(
    resets: usize,
    answer: &'static str,
) -> Result<(std::net::SocketAddr, Arc<AtomicUsize>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let n = count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if read_request(&mut s).await.is_err() {
                    return;
                }
                if n < resets {
                    // RST instead of FIN: the request reached the server, the answer is lost.
                    let _ = s.set_zero_linger();
                    drop(s);
                } else {
                    let _ = s.write_all(answer.as_bytes()).await;
                    let _ = s.shutdown().await;
                }
            });
        }
    });
    Ok((addr, accepted))
}

/// Reads one HTTP/1 request (headers and a `Content-Length` body).
async fn read_request(s: &mut TcpStream) -> Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("closed mid-request");
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if buf.len() >= end + 4 + len {
            return Ok(());
        }
    }
}

// stub: our server cannot produce this on demand (a connection reset after the request).
async fn stub_reset_post_not_replayed() -> Result<()> {
    let (addr, accepted) = resetting_server(usize::MAX, "").await?;
    let c = stub_client(addr).build()?;
    let r = c.volume_create(&replica3("x", 1)).await;
    match &r {
        Err(e @ Error::Transport(_)) => ensure!(e.is_retryable(), "{e:?}"),
        other => bail!("expected a transport error, got {other:?}"),
    }
    // Give a (wrong) replay every chance to show up before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    ensure!(
        accepted.load(Ordering::SeqCst) == 1,
        "the POST was sent {} times",
        accepted.load(Ordering::SeqCst)
    );
    Ok(())
}

// stub: our server cannot produce this on demand (a connection reset after the request).
async fn stub_reset_get_retried() -> Result<()> {
    const ANSWER: &str = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
        content-length: 18\r\nconnection: close\r\n\r\n{\"volumes\":[\"bb\"]}";
    let (addr, accepted) = resetting_server(2, ANSWER).await?;
    let c = stub_client(addr).build()?;
    let list = c.volume_list().await?;
    ensure!(list.volumes == vec!["bb".to_string()], "{list:?}");
    ensure!(accepted.load(Ordering::SeqCst) == 3);
    Ok(())
}
