//! Running external programs: always an argument vector (never a shell), always a timeout; the
//! running is [`gluster_csi_runtime::command`]'s, the errors are heketi-server's.

use std::time::Duration;

use gluster_csi_runtime::command::{self, Run, RunError};

/// An external command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// It could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// Program name.
        program: String,
        /// Cause.
        source: std::io::Error,
    },
    /// It did not finish in time (it was killed).
    #[error("{command} timed out after {secs} s")]
    Timeout {
        /// What was run (without the prefix).
        command: String,
        /// The timeout.
        secs: u64,
    },
    /// The node could not be reached (the SSH connection, its authentication or the host key
    /// check failed); nothing ran there.
    #[error("cannot reach node {host} over ssh: {message}")]
    Unreachable {
        /// The node.
        host: String,
        /// What ssh said.
        message: String,
    },
    /// It exited unsuccessfully.
    #[error("{command} failed: {message}")]
    Failed {
        /// What was run (without the prefix).
        command: String,
        /// Exit code, if it exited.
        code: Option<i32>,
        /// Its error output (or standard output when that is empty), trimmed.
        message: String,
    },
}

/// What a successful command printed.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `argv` with stdin closed and a timeout (in a process group of its own, killed whole
/// at the limit: [`gluster_csi_runtime::command`]); `label` names the command in errors (so a
/// long prefix such as `ip netns exec …` does not clutter messages).
pub async fn run(argv: &[String], label: &str, timeout: Duration) -> Result<Output, CommandError> {
    let out = command::run(Run::argv(argv, timeout))
        .await
        .map_err(|e| match e {
            RunError::Timeout { .. } => CommandError::Timeout {
                command: label.to_owned(),
                secs: timeout.as_secs(),
            },
            RunError::Spawn { program, source } | RunError::Wait { program, source } => {
                CommandError::Spawn { program, source }
            }
            other => CommandError::Spawn {
                program: label.to_owned(),
                source: std::io::Error::other(other.to_string()),
            },
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        let message = if stderr.trim().is_empty() {
            stdout.trim().to_owned()
        } else {
            stderr.trim().to_owned()
        };
        return Err(CommandError::Failed {
            command: label.to_owned(),
            code: out.status.code(),
            message,
        });
    }
    Ok(Output { stdout, stderr })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[tokio::test]
    async fn success_failure_timeout() {
        let ok = run(&argv(&["echo", "hi there"]), "echo", Duration::from_secs(5)).await;
        assert_eq!(ok.map(|o| o.stdout).ok().as_deref(), Some("hi there\n"));

        let failed = run(
            &argv(&["ls", "/nonexistent-hs"]),
            "ls",
            Duration::from_secs(5),
        )
        .await;
        assert!(
            matches!(failed, Err(CommandError::Failed { code: Some(c), ref message, .. }) if c != 0 && message.contains("nonexistent-hs"))
        );

        let slow = run(&argv(&["sleep", "5"]), "sleep", Duration::from_millis(100)).await;
        assert!(matches!(slow, Err(CommandError::Timeout { .. })));

        let missing = run(
            &argv(&["/nonexistent-hs-binary"]),
            "x",
            Duration::from_secs(1),
        )
        .await;
        assert!(matches!(missing, Err(CommandError::Spawn { .. })));
    }

    #[tokio::test]
    async fn arguments_are_not_interpreted_by_a_shell() {
        let out = run(
            &argv(&["echo", "$(id); `id`"]),
            "echo",
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(out.map(|o| o.stdout).ok().as_deref(), Some("$(id); `id`\n"));
    }
}
