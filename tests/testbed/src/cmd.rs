//! Running external programs: argv only (never a shell), always under a timeout, with the same
//! runner as the binaries ([`gluster_csi_runtime::command`]); errors as `anyhow` messages.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use gluster_csi_runtime::command::{self, Run};

/// Timeout for quick administrative commands (`ip`, `umount`).
pub const SHORT: Duration = Duration::from_secs(15);
/// Timeout for Gluster CLI calls, which may wait on peers.
pub const GLUSTER: Duration = Duration::from_secs(120);

/// Runs `argv` and returns its output whatever the exit status. At the timeout the child's
/// process group is killed ([`gluster_csi_runtime::command`], the runner of the binaries).
pub async fn output<S: AsRef<OsStr>>(argv: &[S], timeout: Duration) -> Result<Output> {
    if argv.is_empty() {
        bail!("empty command line");
    }
    command::run(Run::argv(argv, timeout))
        .await
        .with_context(|| format!("running {}", show(argv)))
}

/// Runs `argv`, fails unless it exits 0, and returns its standard output.
pub async fn run<S: AsRef<OsStr>>(argv: &[S], timeout: Duration) -> Result<String> {
    let out = output(argv, timeout).await?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}{}",
            show(argv),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The command line as one readable string, for messages.
pub fn show<S: AsRef<OsStr>>(argv: &[S]) -> String {
    argv.iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Finds `name` in `$PATH` and the usual system directories (`/usr/sbin` and `/sbin` are not
/// always on a non-root user's `$PATH`).
pub fn which(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        dirs.push(PathBuf::from(d));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Like [`which`], but an error naming the missing program and how to get it.
pub fn require(name: &str, hint: &str) -> Result<PathBuf> {
    which(name).with_context(|| format!("`{name}` not found; {hint}"))
}
