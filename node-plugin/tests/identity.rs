//! Starts the real `gluster-csi-node` binary on a socket in a temp dir, calls Identity over the
//! socket, then stops it with SIGTERM.

use std::process::Command;
use std::time::Duration;

use csi_proto::v1::identity_client::IdentityClient;
use csi_proto::v1::{GetPluginCapabilitiesRequest, GetPluginInfoRequest, ProbeRequest};
use gluster_csi_runtime::testing::{PluginProcess, check_any_authority};

const BIN: &str = env!("CARGO_BIN_EXE_gluster-csi-node");
const WAIT: Duration = Duration::from_secs(20);

/// Starts the node plugin (node id `node-a`, driver `test.gluster.csi`) on `dir/plugins/NAME`
/// with `extra` flags and waits for its socket.
async fn start(
    dir: &std::path::Path,
    name: &str,
    extra: &[&str],
) -> (PluginProcess, std::path::PathBuf, String) {
    let sock = dir.join("plugins/gluster").join(name);
    let endpoint = format!("unix://{}", sock.display());
    let state = dir.join("state");
    let mut args = vec![
        "--endpoint",
        endpoint.as_str(),
        "--node-id",
        "node-a",
        "--driver-name",
        "test.gluster.csi",
        "--state-dir",
        state.to_str().expect("utf8"),
    ];
    args.extend_from_slice(extra);
    let mut plugin = PluginProcess::start(BIN, &args).expect("start");
    assert!(plugin.wait_for_socket(&sock, WAIT).await, "no socket");
    (plugin, sock, endpoint)
}

#[tokio::test]
async fn identity_answers_over_the_socket_and_sigterm_removes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut plugin, sock, endpoint) = start(dir.path(), "csi.sock", &[]).await;

    let mut client = IdentityClient::connect(endpoint.clone())
        .await
        .expect("connect");
    let info = client
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .expect("GetPluginInfo")
        .into_inner();
    assert_eq!(info.name, "test.gluster.csi");
    assert_eq!(info.vendor_version, env!("CARGO_PKG_VERSION"));

    let caps = client
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .expect("GetPluginCapabilities")
        .into_inner();
    assert!(
        caps.capabilities.is_empty(),
        "the node advertises no plugin capability: {caps:?}"
    );

    // CI installs glusterfs-client and has /dev/fuse, so the node must be ready there.
    let probe = client
        .probe(ProbeRequest {})
        .await
        .expect("Probe")
        .into_inner();
    assert_eq!(
        probe.ready,
        Some(true),
        "mount.glusterfs and /dev/fuse are installed"
    );

    let status = plugin.terminate(WAIT).await.expect("stops after SIGTERM");
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    assert!(!sock.exists(), "the socket is removed on shutdown");
}

#[test]
fn invalid_configuration_fails_before_binding_and_names_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("csi.sock");
    let endpoint = format!("unix://{}", sock.display());
    for (args, flag) in [
        (vec!["--endpoint", "tcp://127.0.0.1:1"], "--endpoint"),
        (
            vec!["--endpoint", &endpoint, "--driver-name", "9bad"],
            "--driver-name",
        ),
        (
            vec!["--endpoint", &endpoint, "--state-dir", "relative/dir"],
            "--state-dir",
        ),
        (
            vec!["--endpoint", &endpoint, "--log-format", "xml"],
            "--log-format",
        ),
        (
            vec![
                "--endpoint",
                &endpoint,
                "--topology",
                "topology.kubernetes.io/zone=east",
            ],
            "--topology",
        ),
        (
            vec!["--endpoint", &endpoint, "--topology", "zone"],
            "--topology",
        ),
        (
            vec![
                "--endpoint",
                &endpoint,
                "--topology-from-node-label",
                "zone",
            ],
            "--topology-from-node-label",
        ),
        (
            vec![
                "--endpoint",
                &endpoint,
                "--topology",
                "zone=east",
                "--topology-from-node-label",
                "zone=topology.kubernetes.io/zone",
            ],
            "--topology-from-node-label: keep one",
        ),
    ] {
        let out = Command::new(BIN).args(&args).output().expect("run");
        assert!(!out.status.success(), "{args:?} must fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
        assert!(!sock.exists(), "{args:?}: nothing may be bound");
    }
    let out = Command::new(BIN).arg("--version").output().expect("run");
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

/// grpcio and the other grpc-core clients send the socket path as `:authority`; the plugin
/// must answer them as it answers grpc-go (`localhost`).
#[tokio::test]
async fn clients_sending_any_authority_are_answered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_plugin, sock, _endpoint) = start(dir.path(), "csi.sock", &[]).await;
    if let Err(failures) = check_any_authority(&sock, "test.gluster.csi").await {
        panic!("not answered:\n{failures}");
    }
}

/// `--topology` is what NodeGetInfo reports, under the driver's key prefix; without it the
/// node reports no topology (a volume of any backend may be mounted here).
#[tokio::test]
async fn node_get_info_reports_the_configured_topology() {
    use csi_proto::v1::NodeGetInfoRequest;
    use csi_proto::v1::node_client::NodeClient;

    let dir = tempfile::tempdir().expect("tempdir");
    for (extra, want) in [
        (
            vec!["--topology", "zone=east", "--topology", "site=dc1"],
            vec![
                ("topology.gluster.heketi.csi/site", "dc1"),
                ("topology.gluster.heketi.csi/zone", "east"),
            ],
        ),
        (vec![], vec![]),
    ] {
        let name = format!("n{}.sock", want.len());
        let (_plugin, _sock, endpoint) = start(dir.path(), &name, &extra).await;
        let mut node = NodeClient::connect(endpoint.clone())
            .await
            .expect("connect");
        let info = node
            .node_get_info(NodeGetInfoRequest {})
            .await
            .expect("NodeGetInfo")
            .into_inner();
        assert_eq!(info.node_id, "node-a");
        let got: Vec<(String, String)> = info
            .accessible_topology
            .map(|t| {
                t.segments
                    .into_iter()
                    .collect::<std::collections::BTreeMap<_, _>>()
            })
            .unwrap_or_default()
            .into_iter()
            .collect();
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(got, want);
    }
}

/// With `--topology-from-node-label` and no way to the API server, NodeGetInfo fails with
/// UNAVAILABLE (kubelet retries the registration) and says what the plugin needs; the plugin
/// keeps serving. The reading itself is checked on a real cluster (k8s_e2e, topology trial).
#[tokio::test]
async fn node_get_info_without_the_api_server_is_unavailable_and_says_why() {
    use csi_proto::v1::NodeGetInfoRequest;
    use csi_proto::v1::node_client::NodeClient;

    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("plugins/gluster/labels.sock");
    let endpoint = format!("unix://{}", sock.display());
    let state = dir.path().join("state");
    let missing = dir.path().join("no-kubeconfig");
    let mut plugin = PluginProcess::start_with_env(
        BIN,
        &[
            "--endpoint",
            &endpoint,
            "--node-id",
            "node-a",
            "--state-dir",
            state.to_str().expect("utf8"),
            "--topology-from-node-label",
            "zone=topology.kubernetes.io/zone",
        ],
        &[
            ("KUBECONFIG", missing.to_str()),
            ("KUBERNETES_SERVICE_HOST", None),
            ("KUBERNETES_SERVICE_PORT", None),
            ("HOME", dir.path().to_str()),
        ],
    )
    .expect("start");
    assert!(plugin.wait_for_socket(&sock, WAIT).await, "no socket");
    let mut node = NodeClient::connect(endpoint).await.expect("connect");
    for _ in 0..2 {
        let e = node
            .node_get_info(NodeGetInfoRequest {})
            .await
            .expect_err("no API server");
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
        assert!(
            e.message().contains("--topology-from-node-label")
                && e.message().contains("node-a")
                && e.message().contains("get on nodes"),
            "{}",
            e.message()
        );
    }
}
