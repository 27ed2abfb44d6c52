//! Long-running processes of the testbed: started with their output in a log file, in their own
//! process group (a Ctrl-C meant for the caller does not reach them), and journaled by pid.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::signal::Signal;

use crate::cmd;
use crate::journal::{Entry, Journal};
use crate::procs;

/// Environment variables passed on to the testbed's processes; everything else is dropped.
const KEPT_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "RUST_LOG",
    "RUST_BACKTRACE",
];

/// Starts `argv` with stdout and stderr appended to `log`, and journals it under `role`.
pub fn spawn<S: AsRef<OsStr>>(
    role: &str,
    argv: &[S],
    log: &Path,
    journal: &Journal,
    pid_namespace: bool,
) -> Result<Child> {
    let (program, args) = argv.split_first().context("empty command line")?;
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let err = out.try_clone()?;
    let mut command = Command::new(program);
    // A clean environment: settings of the caller's shell (e.g. a sourced testbed.env of another
    // testbed, whose names double as the binaries' env fallbacks) must not leak in.
    command.env_clear();
    for key in KEPT_ENV {
        if let Some(v) = std::env::var_os(key) {
            command.env(key, v);
        }
    }
    let child = command
        .env("NO_COLOR", "1")
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {role}: {}", cmd::show(argv)))?;
    let pid = child.id();
    journal.record(&Entry::Process {
        role: role.into(),
        pid,
        start: procs::start_time(pid).unwrap_or(0),
        pid_namespace,
    })?;
    Ok(child)
}

/// The last `n` lines of `path`, for error messages ("" when unreadable).
pub fn tail(path: &Path, n: usize) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return String::new();
    };
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Children of this process, by role, so they can be stopped and reaped.
#[derive(Debug, Default)]
pub struct Children {
    map: Mutex<HashMap<String, Child>>,
}

impl Children {
    /// Keeps `child` under `role`, replacing (and reaping, if it exited) an earlier one.
    pub fn insert(&self, role: &str, child: Child) {
        if let Ok(mut map) = self.map.lock()
            && let Some(mut old) = map.insert(role.to_string(), child)
        {
            let _ = old.try_wait();
        }
    }

    /// Pid of the child under `role`, if there is one.
    pub fn pid(&self, role: &str) -> Option<u32> {
        self.map.lock().ok()?.get(role).map(Child::id)
    }

    /// Whether the child under `role` exited; `Some(status text)` if so.
    pub fn exited(&self, role: &str) -> Option<String> {
        let mut map = self.map.lock().ok()?;
        let child = map.get_mut(role)?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(e.to_string()),
        }
    }

    /// Removes the child under `role`, sending it `sig` first when given, and reaps it (waits up
    /// to `timeout`).
    pub async fn stop(&self, role: &str, sig: Option<Signal>, timeout: Duration) {
        let child = self.map.lock().ok().and_then(|mut m| m.remove(role));
        if let Some(child) = child {
            reap(child, sig, timeout).await;
        }
    }

    /// Removes every child, sending each SIGKILL, and reaps them.
    pub async fn kill_all(&self) {
        let all: Vec<Child> = match self.map.lock() {
            Ok(mut m) => m.drain().map(|(_, c)| c).collect(),
            Err(_) => Vec::new(),
        };
        for child in all {
            reap(child, Some(Signal::SIGKILL), Duration::from_secs(5)).await;
        }
    }
}

async fn reap(mut child: Child, sig: Option<Signal>, timeout: Duration) {
    if let Some(sig) = sig {
        procs::signal(child.id(), sig);
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return,
            Ok(None) if tokio::time::Instant::now() >= deadline => {
                procs::signal(child.id(), Signal::SIGKILL);
                let _ = tokio::task::spawn_blocking(move || child.wait()).await;
                return;
            }
            Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}
