//! Running one program: argv only (never a shell), stdin closed, stdout and stderr captured (at
//! most 16 KiB of each), in a process group of its own, under a time limit. At the limit
//! the whole group is killed with SIGKILL, so a `mount` helper and anything it forked stop
//! together.
//!
//! A leaf: it knows nothing of mounts, launchers or the mount agent, which run their commands
//! through [`run`].

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::error::Error;

/// Most bytes of a command's stdout or stderr kept.
const OUTPUT_LIMIT: u64 = 16 * 1024;
/// How long to wait for a command's output pipes to close after it exited.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// What a finished command left behind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandOutput {
    /// Whether it exited with status 0.
    pub success: bool,
    /// Its exit status, for messages.
    pub status: String,
    /// Its standard output and error, lossily decoded, trimmed.
    pub output: String,
}

/// Runs `cmd` (stdin closed, output captured, own process group) and waits at most `limit`.
/// On timeout the command's process group is killed. `what` names the command in errors.
pub async fn run(
    mut cmd: tokio::process::Command,
    what: &str,
    limit: Duration,
) -> Result<CommandOutput, Error> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let program = PathBuf::from(cmd.as_std().get_program());
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io("cannot start", program, e))?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let readers = async move {
        let mut out = Vec::new();
        if let Some(s) = stdout {
            let _ = s.take(OUTPUT_LIMIT).read_to_end(&mut out).await;
        }
        let mut err = Vec::new();
        if let Some(s) = stderr {
            let _ = s.take(OUTPUT_LIMIT).read_to_end(&mut err).await;
        }
        out.extend_from_slice(&err);
        out
    };
    let reader = tokio::spawn(readers);
    let status = match tokio::time::timeout(limit, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return Err(Error::io("waiting for", what.to_owned(), e)),
        Err(_) => {
            if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.kill().await;
            reader.abort();
            return Err(Error::Timeout {
                what: what.to_owned(),
                after: limit,
            });
        }
    };
    // A daemon forked by the command could hold the pipes open; do not wait for it.
    let output = match tokio::time::timeout(OUTPUT_GRACE, reader).await {
        Ok(Ok(bytes)) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        _ => String::new(),
    };
    Ok(CommandOutput {
        success: status.success(),
        status: status.to_string(),
        output,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commands_run_without_a_shell_and_report_output() {
        let mut cmd = tokio::process::Command::new("echo");
        cmd.arg("$(id);").arg("two words");
        let out = run(cmd, "echo", Duration::from_secs(10))
            .await
            .expect("echo runs");
        assert!(out.success);
        assert_eq!(out.output, "$(id); two words");

        let cmd = tokio::process::Command::new("false");
        let out = run(cmd, "false", Duration::from_secs(10))
            .await
            .expect("false runs");
        assert!(!out.success);
    }

    #[tokio::test]
    async fn a_command_that_hangs_is_killed_at_the_timeout() {
        let mut cmd = tokio::process::Command::new("sleep");
        cmd.arg("30");
        // Had `run` waited for the exit, it would return the status instead of a timeout.
        let r = run(cmd, "sleep 30", Duration::from_millis(200)).await;
        assert!(matches!(r, Err(Error::Timeout { .. })), "{r:?}");
    }

    #[tokio::test]
    async fn a_missing_program_is_an_io_error() {
        let cmd = tokio::process::Command::new("/nonexistent/mount");
        let r = run(cmd, "mount", Duration::from_secs(5)).await;
        assert!(matches!(r, Err(Error::Io { .. })), "{r:?}");
    }
}
