//! The full testbed: heketi-server with the topology loaded, the controller and the node plugin on
//! their sockets, `testbed.env`, and the kill/restart handles fault tests rely on.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use gluster_csi_testbed::{Testbed, TestbedOptions, harness, procs};

fn main() {
    let opts = TestbedOptions::new(harness::state_dir_for("testbed-svc"));
    harness::run(opts, |tb| {
        vec![
            harness::exclusive_trial(
                "heketi_has_one_cluster_with_a_node_and_a_device_per_host",
                &tb,
                |tb| async move { check_topology(&tb).await },
            ),
            harness::exclusive_trial(
                "env_file_names_every_endpoint_and_the_admin_key",
                &tb,
                env_file_names_every_endpoint_and_the_admin_key,
            ),
            harness::exclusive_trial(
                "node_plugin_runs_in_its_own_pid_namespace_and_restarts",
                &tb,
                node_plugin_runs_in_its_own_pid_namespace_and_restarts,
            ),
            harness::exclusive_trial(
                "heketi_server_comes_back_after_kill_9_with_its_topology",
                &tb,
                heketi_server_comes_back_after_kill_9_with_its_topology,
            ),
            harness::exclusive_trial(
                "controller_comes_back_after_kill_9",
                &tb,
                controller_comes_back_after_kill_9,
            ),
        ]
    })
}

async fn accepts(socket: &Path) -> bool {
    tokio::net::UnixStream::connect(socket).await.is_ok()
}

/// Cluster id and node count as heketi-server reports them, with each node checked against the
/// testbed's hosts.
async fn check_topology(tb: &Testbed) -> Result<()> {
    let client = tb.heketi_client()?;
    let clusters = client.cluster_list().await?.clusters;
    ensure!(clusters.len() == 1, "clusters: {clusters:?}");
    let cluster = client.cluster_info(&clusters[0]).await?;
    ensure!(
        cluster.nodes.len() == tb.hosts().len(),
        "nodes: {:?}",
        cluster.nodes
    );
    let mut seen = Vec::new();
    for id in &cluster.nodes {
        let node = client.node_info(id).await?;
        let host = tb
            .hosts()
            .iter()
            .find(|h| node.hostnames.storage == vec![h.address.to_string()])
            .with_context(|| format!("node {id} is no testbed host: {:?}", node.hostnames))?;
        ensure!(node.hostnames.manage == node.hostnames.storage);
        ensure!(node.devices.len() == 1, "{:?}", node.devices);
        ensure!(
            node.devices[0].name == host.brick_root.display().to_string(),
            "device of {} is {}",
            host.name,
            node.devices[0].name
        );
        ensure!(node.devices[0].storage.total > 0, "device without capacity");
        seen.push(host.index);
    }
    seen.sort_unstable();
    seen.dedup();
    ensure!(seen.len() == tb.hosts().len(), "hosts seen: {seen:?}");
    Ok(())
}

async fn env_file_names_every_endpoint_and_the_admin_key(tb: Arc<Testbed>) -> Result<()> {
    let path = tb.state_dir().join("testbed.env");
    let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
    ensure!(mode == 0o600, "testbed.env has mode {mode:o}");
    let vars: BTreeMap<String, String> = std::fs::read_to_string(&path)?
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect();
    let env = tb.env();
    let url = tb.heketi_url().context("no heketi url")?;
    ensure!(vars.get("HEKETI_URL") == Some(&url), "{vars:?}");
    ensure!(vars.get("HEKETI_USER").map(String::as_str) == Some("admin"));
    let key_file = vars.get("HEKETI_KEY_FILE").context("HEKETI_KEY_FILE")?;
    let key = std::fs::read_to_string(key_file)?;
    ensure!(
        vars.get("HEKETI_KEY") == Some(&key) && !key.is_empty(),
        "HEKETI_KEY differs from the admin key file"
    );
    ensure!(
        std::fs::metadata(key_file)?.permissions().mode() & 0o777 == 0o600,
        "key file is not private"
    );
    let controller = format!("unix://{}", tb.controller_socket().display());
    let node = format!("unix://{}", tb.node_socket().display());
    ensure!(vars.get("CONTROLLER_ENDPOINT") == Some(&controller));
    ensure!(vars.get("NODE_ENDPOINT") == Some(&node));
    ensure!(env.controller_endpoint == controller && env.node_endpoint == node);
    let hosts: Vec<String> = tb.hosts().iter().map(|h| h.address.to_string()).collect();
    ensure!(vars.get("GLUSTER_HOSTS") == Some(&hosts.join(",")));
    ensure!(accepts(&tb.controller_socket()).await, "controller socket");
    ensure!(accepts(&tb.node_socket()).await, "node socket");
    Ok(())
}

async fn node_plugin_runs_in_its_own_pid_namespace_and_restarts(tb: Arc<Testbed>) -> Result<()> {
    let pid = tb.node_plugin_pid().context("node plugin pid")?;
    let recorded: u32 = std::fs::read_to_string(tb.state_dir().join("node-plugin.pid"))?
        .trim()
        .parse()?;
    ensure!(recorded == pid, "node-plugin.pid {recorded} != {pid}");
    let ns = procs::pid_namespace(pid).context("pid namespace")?;
    ensure!(
        procs::pid_namespace(std::process::id()).as_deref() != Some(ns.as_str()),
        "the node plugin shares our pid namespace"
    );
    ensure!(procs::pid_namespace_members(pid).contains(&pid));

    // Its FUSE clients are started by the mount agent, which runs in our (the root) pid
    // namespace on a private socket.
    let agent = tb.mount_agent_pid().context("mount agent pid")?;
    ensure!(procs::pid_namespace(agent) == procs::pid_namespace(std::process::id()));
    let socket = tb.mount_agent_socket();
    let mode = std::fs::metadata(&socket)?.permissions().mode() & 0o777;
    ensure!(mode == 0o600, "mount agent socket has mode {mode:o}");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    let launcher = format!("agent:unix://{}", socket.display());
    ensure!(
        cmdline.split(|b| *b == 0).any(|a| a == launcher.as_bytes()),
        "the plugin does not use the mount agent: {}",
        String::from_utf8_lossy(&cmdline)
    );

    tb.kill_node_plugin().await?;
    ensure!(!procs::alive(pid), "node plugin {pid} survived");
    ensure!(
        procs::all_pids()
            .iter()
            .all(|p| procs::pid_namespace(*p).as_deref() != Some(ns.as_str())),
        "processes remain in the plugin's pid namespace"
    );
    ensure!(!accepts(&tb.node_socket()).await, "socket still answers");
    ensure!(procs::alive(agent), "the mount agent died with the plugin");
    ensure!(accepts(&socket).await, "the mount agent stopped listening");

    tb.restart_node_plugin().await?;
    let new = tb.node_plugin_pid().context("new pid")?;
    ensure!(new != pid && procs::alive(new));
    let recorded: u32 = std::fs::read_to_string(tb.state_dir().join("node-plugin.pid"))?
        .trim()
        .parse()?;
    ensure!(recorded == new, "node-plugin.pid not updated");
    ensure!(
        accepts(&tb.node_socket()).await,
        "restarted plugin does not listen"
    );
    Ok(())
}

async fn heketi_server_comes_back_after_kill_9_with_its_topology(tb: Arc<Testbed>) -> Result<()> {
    let url = tb.heketi_url().context("no heketi")?;
    let addr = url.trim_start_matches("http://").to_string();
    tb.kill_heketi().await?;
    ensure!(
        tokio::net::TcpStream::connect(&addr).await.is_err(),
        "heketi-server still listens after kill -9"
    );
    tb.start_heketi().await?;
    ensure!(
        tb.heketi_url().as_deref() == Some(url.as_str()),
        "URL changed"
    );
    check_topology(&tb).await
}

async fn controller_comes_back_after_kill_9(tb: Arc<Testbed>) -> Result<()> {
    tb.kill_controller().await?;
    ensure!(
        !accepts(&tb.controller_socket()).await,
        "controller still answers"
    );
    tb.restart_controller().await?;
    ensure!(
        accepts(&tb.controller_socket()).await,
        "controller does not listen"
    );
    Ok(())
}
