//! The `gluster-csi-migrate` binary's command line, run as a user runs it: a dry run from a
//! file and from standard input, and the exit status and message of each kind of mistake. The
//! migration of a real in-tree volume, staged by the node plugin afterwards, is the testbed's
//! `migrate` suite (`tests/tests/migrate.rs`).

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

const ID: &str = "0123456789abcdef0123456789abcdef";

fn migrate(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gluster-csi-migrate"))
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("HEKETI_URL")
        .env_remove("DRIVER_NAME")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gluster-csi-migrate");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// An in-tree PV as `kubectl get pv -o yaml` shows it, with its Endpoints.
fn intree() -> String {
    format!(
        r#"apiVersion: v1
kind: PersistentVolume
metadata:
  name: pvc-intree
  annotations:
    gluster.kubernetes.io/heketi-volume-id: {ID}
    pv.beta.kubernetes.io/gid: "2001"
spec:
  accessModes: [ReadWriteMany]
  capacity: {{storage: 1Gi}}
  persistentVolumeReclaimPolicy: Delete
  glusterfs:
    endpoints: glusterfs-dynamic-pvc-intree
    endpointsNamespace: apps
    path: vol_{ID}
---
apiVersion: v1
kind: Endpoints
metadata:
  name: glusterfs-dynamic-pvc-intree
  namespace: apps
subsets:
- addresses: [{{ip: 198.18.0.2}}, {{ip: 198.18.0.3}}]
  ports: [{{port: 1}}]
"#
    )
}

#[test]
fn dry_run_from_standard_input_prints_the_csi_pv() {
    let out = migrate(
        &[
            "--from-file",
            "-",
            "--heketi-url",
            "http://heketi.example:8080",
        ],
        &intree(),
    );
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "status {:?}, stderr: {}",
        out.status,
        text(&out.stderr)
    );
    assert!(stdout.contains("driver: gluster.heketi.csi"), "{stdout}");
    assert!(
        stdout.contains(&format!("glusterVolume: vol_{ID}")),
        "{stdout}"
    );
    assert!(stdout.contains("198.18.0.2,198.18.0.3"), "{stdout}");
    assert!(
        stdout.contains("persistentVolumeReclaimPolicy: Retain"),
        "{stdout}"
    );
}

#[test]
fn a_missing_input_file_is_named_and_exits_1() {
    let out = migrate(&["--from-file", "/nonexistent/cluster.yaml"], "");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("/nonexistent/cluster.yaml"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn scale_consumers_without_apply_is_a_usage_error() {
    let out = migrate(&["--scale-consumers", "--from-file", "-"], "");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--apply"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn an_invalid_driver_name_is_refused_before_any_work() {
    let out = migrate(
        &["--driver-name", "bad name!", "--from-file", "-"],
        &intree(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("driver"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());
}
