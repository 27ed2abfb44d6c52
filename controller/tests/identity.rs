//! Starts the real `gluster-csi-controller` binary on a socket in a temp dir, calls Identity
//! over the socket, then stops it with SIGTERM. The controller has either no default backend
//! or one that is down; `Probe` is ready either way (liveness does not follow Heketi). Heketi
//! outages against a live heketi-server are checked by the faults testbed suite.

use std::process::Command;
use std::time::Duration;

use csi_proto::v1::identity_client::IdentityClient;
use csi_proto::v1::plugin_capability::{self, service, volume_expansion};
use csi_proto::v1::{GetPluginCapabilitiesRequest, GetPluginInfoRequest, ProbeRequest};
use gluster_csi_runtime::testing::{PluginProcess, check_any_authority};

const BIN: &str = env!("CARGO_BIN_EXE_gluster-csi-controller");
const WAIT: Duration = Duration::from_secs(20);

/// A loopback port with nothing listening: bound, then released.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[tokio::test]
async fn identity_answers_and_probe_is_ready_whether_heketi_answers_or_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("key");
    std::fs::write(&key, "secret\n").expect("key");
    let down_url = format!("http://127.0.0.1:{}", closed_port());
    for (extra, ready) in [
        (vec![], true),
        (
            vec![
                "--heketi-url",
                down_url.as_str(),
                "--heketi-key-file",
                key.to_str().expect("utf8"),
            ],
            true,
        ),
    ] {
        let sock = dir.path().join("csi/controller.sock");
        let endpoint = format!("unix://{}", sock.display());
        let mut args = vec!["--endpoint", endpoint.as_str()];
        args.extend(extra.iter().copied());
        let mut plugin = PluginProcess::start(BIN, &args).expect("start");
        assert!(plugin.wait_for_socket(&sock, WAIT).await, "no socket");

        let mut client = IdentityClient::connect(endpoint.clone())
            .await
            .expect("connect");
        let info = client
            .get_plugin_info(GetPluginInfoRequest {})
            .await
            .expect("GetPluginInfo")
            .into_inner();
        assert_eq!(info.name, "gluster.heketi.csi");
        assert_eq!(info.vendor_version, env!("CARGO_PKG_VERSION"));

        let caps = client
            .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
            .await
            .expect("GetPluginCapabilities")
            .into_inner();
        let kinds: Vec<_> = caps
            .capabilities
            .into_iter()
            .filter_map(|c| c.r#type)
            .collect();
        assert_eq!(
            kinds,
            vec![
                plugin_capability::Type::Service(plugin_capability::Service {
                    r#type: service::Type::ControllerService as i32
                }),
                plugin_capability::Type::VolumeExpansion(plugin_capability::VolumeExpansion {
                    r#type: volume_expansion::Type::Online as i32
                }),
            ]
        );

        let probe = client
            .probe(ProbeRequest {})
            .await
            .expect("Probe")
            .into_inner();
        assert_eq!(probe.ready, Some(ready), "args {extra:?}");

        let status = plugin.terminate(WAIT).await.expect("stops after SIGTERM");
        assert!(status.success(), "exit status after SIGTERM: {status:?}");
        assert!(!sock.exists(), "the socket is removed on shutdown");
    }
}

#[test]
fn invalid_configuration_fails_before_binding_and_names_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("csi.sock");
    let endpoint = format!("unix://{}", sock.display());
    let missing = dir.path().join("no-such-key");
    for (args, flag) in [
        (vec!["--endpoint", "127.0.0.1:10000"], "--endpoint"),
        (
            vec!["--endpoint", &endpoint, "--driver-name", "bad name"],
            "--driver-name",
        ),
        (
            vec!["--endpoint", &endpoint, "--heketi-url", "ftp://x"],
            "--heketi-url",
        ),
        (
            vec![
                "--endpoint",
                &endpoint,
                "--heketi-url",
                "http://heketi:8080",
                "--heketi-key-file",
                missing.to_str().expect("utf8"),
            ],
            "--heketi-key-file",
        ),
        (
            vec!["--endpoint", &endpoint, "--heketi-request-timeout", "0"],
            "--heketi-request-timeout",
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
    let sock = dir.path().join("csi/controller.sock");
    let endpoint = format!("unix://{}", sock.display());
    let mut plugin = PluginProcess::start(BIN, &["--endpoint", endpoint.as_str()]).expect("start");
    assert!(plugin.wait_for_socket(&sock, WAIT).await, "no socket");
    if let Err(failures) = check_any_authority(&sock, "gluster.heketi.csi").await {
        panic!("not answered:\n{failures}");
    }
}

/// VOLUME_ACCESSIBILITY_CONSTRAINTS is advertised only when the backends file places a
/// backend: external-provisioner refuses delayed-binding claims on nodes without topology
/// once a driver advertises it.
#[tokio::test]
async fn accessibility_constraints_only_with_a_placed_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (placed, want) in [(false, false), (true, true)] {
        let file = dir.path().join(format!("backends-{placed}.yaml"));
        let topology = if placed {
            "    topology: {zone: east}\n"
        } else {
            ""
        };
        std::fs::write(
            &file,
            format!("backends:\n  - name: east\n    url: http://127.0.0.1:1\n{topology}"),
        )
        .expect("write");
        let sock = dir.path().join(format!("c-{placed}.sock"));
        let endpoint = format!("unix://{}", sock.display());
        let args = [
            "--endpoint",
            endpoint.as_str(),
            "--backends-file",
            file.to_str().expect("utf8"),
        ];
        let mut plugin = PluginProcess::start(BIN, &args).expect("start");
        assert!(plugin.wait_for_socket(&sock, WAIT).await, "no socket");
        let mut client = IdentityClient::connect(endpoint).await.expect("connect");
        let caps = client
            .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
            .await
            .expect("GetPluginCapabilities")
            .into_inner();
        let has = caps.capabilities.iter().any(|c| {
            c.r#type
                == Some(plugin_capability::Type::Service(
                    plugin_capability::Service {
                        r#type: service::Type::VolumeAccessibilityConstraints as i32,
                    },
                ))
        });
        assert_eq!(has, want, "placed backend: {placed}");
    }
}
