//! The node plugin's view of running one program: [`gluster_csi_runtime::command`] does the
//! running (argv only, stdin closed, own process group killed at the time limit), this keeps at
//! most 16 KiB of each output stream and turns the result into the plugin's [`Error`] and
//! [`CommandOutput`].
//!
//! A leaf: it knows nothing of mounts, launchers or the mount agent, which run their commands
//! through [`run`].

use std::time::Duration;

use gluster_csi_runtime::command::{self as runner, Run, RunError};

use crate::error::Error;

/// Most bytes of a command's stdout or stderr kept.
const OUTPUT_LIMIT: u64 = 16 * 1024;

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
    cmd: tokio::process::Command,
    what: &str,
    limit: Duration,
) -> Result<CommandOutput, Error> {
    let out = runner::run(Run::command(cmd, limit).output_limit(OUTPUT_LIMIT))
        .await
        .map_err(|e| match e {
            RunError::Spawn { program, source } => Error::io("cannot start", program, source),
            RunError::Wait { source, .. } => Error::io("waiting for", what.to_owned(), source),
            RunError::Timeout { after, .. } => Error::Timeout {
                what: what.to_owned(),
                after,
            },
            other => Error::io(
                "running",
                what.to_owned(),
                std::io::Error::other(other.to_string()),
            ),
        })?;
    let mut bytes = out.stdout;
    bytes.extend_from_slice(&out.stderr);
    Ok(CommandOutput {
        success: out.status.success(),
        status: out.status.to_string(),
        output: String::from_utf8_lossy(&bytes).trim().to_owned(),
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
