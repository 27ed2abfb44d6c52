//! Starts the real `gluster-csi-node` binary on a socket in a temp dir, calls Identity over the
//! socket, then stops it with SIGTERM.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use csi_proto::v1::identity_client::IdentityClient;
use csi_proto::v1::{GetPluginCapabilitiesRequest, GetPluginInfoRequest, ProbeRequest};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn start(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_gluster-csi-node"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start gluster-csi-node")
}

async fn wait_for_socket(path: &std::path::Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(start.elapsed() < Duration::from_secs(20), "socket {path:?} never appeared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stop(mut child: Child) -> std::process::ExitStatus {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("SIGTERM");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "did not stop after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn identity_answers_over_the_socket_and_sigterm_removes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("plugins/gluster/csi.sock");
    let endpoint = format!("unix://{}", sock.display());
    let state = dir.path().join("state");
    let child = start(&[
        "--endpoint",
        &endpoint,
        "--node-id",
        "node-a",
        "--driver-name",
        "test.gluster.csi",
        "--state-dir",
        state.to_str().expect("utf8"),
    ]);
    wait_for_socket(&sock).await;

    let mut client = IdentityClient::connect(endpoint.clone()).await.expect("connect");
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

    let probe = client.probe(ProbeRequest {}).await.expect("Probe").into_inner();
    let tools_present = std::path::Path::new("/dev/fuse").exists()
        && ["/sbin/mount.glusterfs", "/usr/sbin/mount.glusterfs"]
            .iter()
            .any(|p| std::path::Path::new(p).exists());
    assert_eq!(probe.ready, Some(tools_present));

    let status = stop(child).await;
    drop(client);
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
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_gluster-csi-node"))
            .args(&args)
            .output()
            .expect("run");
        assert!(!out.status.success(), "{args:?} must fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
        assert!(!sock.exists(), "{args:?}: nothing may be bound");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_gluster-csi-node"))
        .arg("--version")
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}
