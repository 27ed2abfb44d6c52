//! The `heketi-server` binary's command line: help, version, and configuration errors that
//! name the flag at fault before anything is bound.

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_heketi-server"))
        .args(args)
        .env_remove("HEKETI_SERVER_STATE_DIR")
        .env_remove("HEKETI_SERVER_ADMIN_KEY_FILE")
        .env_remove("HEKETI_SERVER_DISABLE_AUTH")
        .output()
        .expect("heketi-server runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_lists_every_flag_with_its_environment_variable() {
    let o = run(&["--help"]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    for flag in [
        "--listen",
        "--state-dir",
        "--admin-key-file",
        "--user-key-file",
        "--disable-auth",
        "--gluster-cmd",
        "--max-inflight",
        "--gluster-timeout",
        "--log-format",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
    }
    assert!(text.contains("HEKETI_SERVER_GLUSTER_CMD"), "{text}");
}

#[test]
fn version_is_the_crate_version() {
    let o = run(&["--version"]);
    assert!(o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("heketi-server {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn invalid_values_fail_naming_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = format!("--state-dir={}", dir.path().join("s").display());
    for (args, flag) in [
        (vec![state.as_str(), "--listen=not-an-address"], "--listen"),
        (vec![state.as_str(), "--max-inflight=0"], "--max-inflight"),
        (vec![state.as_str(), "--log-format=yaml"], "--log-format"),
        (vec![state.as_str()], "--admin-key-file"),
        (
            vec![state.as_str(), "--admin-key-file=/nonexistent/hs.key"],
            "--admin-key-file",
        ),
        (
            vec!["--disable-auth", "--state-dir=/proc/hs-no"],
            "--state-dir",
        ),
    ] {
        let o = run(&args);
        assert!(!o.status.success(), "{args:?} was accepted");
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = stderr(&o);
        assert!(
            err.contains(flag),
            "{args:?}: error does not name {flag}: {err}"
        );
    }
}

#[test]
fn a_port_in_use_fails_naming_listen() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let dir = tempfile::tempdir().expect("tempdir");
    let o = run(&[
        "--disable-auth",
        &format!("--state-dir={}", dir.path().display()),
        &format!("--listen={addr}"),
        "--gluster-cmd=/nonexistent/gluster",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--listen"), "{}", stderr(&o));
}
