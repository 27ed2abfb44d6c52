//! The one way our binaries and the testbed run another program: an argument vector (never a
//! shell), stdin closed, stdout and stderr captured up to a limit each, in a process group of
//! its own, under a time limit. At the limit the whole group gets SIGKILL, so a `mount` helper,
//! an `ip netns exec` or an `ssh` and everything they forked stop together.
//!
//! What a failure means is the caller's business: [`run`] only fails when the program could not
//! be started, waited for, or finished in time, and hands back the exit status otherwise. The
//! node plugin, heketi-server and the testbed each turn that into their own error type.

use std::ffi::OsStr;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::process::Command;

/// How long to wait for the output pipes to close once the program exited: a daemon it forked
/// (the GlusterFS client a `mount -t glusterfs` starts) may hold them open for its whole life.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// Why a program did not run to its end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// It could not be started (missing, not executable, empty command line).
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program, as given.
        program: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Waiting for it failed.
    #[error("waiting for {program} failed: {source}")]
    Wait {
        /// The program, as given.
        program: String,
        /// The cause.
        source: std::io::Error,
    },
    /// It did not finish within the time limit; its process group was killed.
    #[error("{program} did not finish within {after:?} (killed)")]
    Timeout {
        /// The program, as given.
        program: String,
        /// The time limit.
        after: Duration,
    },
}

/// A program to run with [`run`]: the command, the time limit and how much output to keep.
#[derive(Debug)]
pub struct Run {
    cmd: Command,
    timeout: Duration,
    output_limit: u64,
}

impl Run {
    /// `argv[0]` with the rest as arguments, at most `timeout`, all of its output kept.
    pub fn argv<S: AsRef<OsStr>>(argv: &[S], timeout: Duration) -> Self {
        let (program, args) = argv
            .split_first()
            .map_or((OsStr::new(""), &[][..]), |(p, a)| (p.as_ref(), a));
        let mut cmd = Command::new(program);
        cmd.args(args);
        Self::command(cmd, timeout)
    }

    /// A command the caller prepared (arguments, environment, a `pre_exec` step). Its stdin,
    /// stdout, stderr and process group are set by [`run`].
    pub fn command(cmd: Command, timeout: Duration) -> Self {
        Self {
            cmd,
            timeout,
            output_limit: u64::MAX,
        }
    }

    /// Keeps at most `bytes` of standard output and of standard error each; the rest is read
    /// and dropped, so the program never blocks on a full pipe.
    #[must_use]
    pub fn output_limit(mut self, bytes: u64) -> Self {
        self.output_limit = bytes;
        self
    }

    /// The program, for messages.
    pub fn program(&self) -> String {
        self.cmd
            .as_std()
            .get_program()
            .to_string_lossy()
            .into_owned()
    }
}

/// Runs the program and returns its exit status and captured output, whatever the status.
pub async fn run(what: Run) -> Result<Output, RunError> {
    let program = what.program();
    if program.is_empty() {
        return Err(RunError::Spawn {
            program,
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command line"),
        });
    }
    let Run {
        mut cmd,
        timeout,
        output_limit,
    } = what;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let mut child = cmd.spawn().map_err(|source| RunError::Spawn {
        program: program.clone(),
        source,
    })?;
    let stdout = capture(child.stdout.take(), output_limit);
    let stderr = capture(child.stderr.take(), output_limit);
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(source)) => return Err(RunError::Wait { program, source }),
        Err(_) => {
            if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.kill().await;
            stdout.0.abort();
            stderr.0.abort();
            return Err(RunError::Timeout {
                program,
                after: timeout,
            });
        }
    };
    Ok(Output {
        status,
        stdout: collect(stdout).await,
        stderr: collect(stderr).await,
    })
}

/// Reads `pipe` to its end into `kept`, keeping the first `limit` bytes; the rest is read and
/// dropped, so the writer never blocks on a full pipe.
async fn read_capped(pipe: Option<impl AsyncRead + Unpin>, limit: u64, kept: Captured) {
    let Some(mut pipe) = pipe else {
        return;
    };
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut chunk = vec![0u8; 8192];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut kept = kept.lock().unwrap_or_else(PoisonError::into_inner);
                let room = limit.saturating_sub(kept.len()).min(n);
                kept.extend_from_slice(&chunk[..room]);
            }
        }
    }
}

/// The output read so far, shared with its reader task.
type Captured = Arc<Mutex<Vec<u8>>>;

/// Starts reading `pipe` in the background.
fn capture(
    pipe: Option<impl AsyncRead + Unpin + Send + 'static>,
    limit: u64,
) -> (tokio::task::JoinHandle<()>, Captured) {
    let kept = Captured::default();
    (tokio::spawn(read_capped(pipe, limit, kept.clone())), kept)
}

/// What a reader got, waiting at most [`OUTPUT_GRACE`] for the end of a pipe that a forked
/// daemon may keep open; what was read by then is kept.
async fn collect((reader, kept): (tokio::task::JoinHandle<()>, Captured)) -> Vec<u8> {
    let abort = reader.abort_handle();
    if tokio::time::timeout(OUTPUT_GRACE, reader).await.is_err() {
        abort.abort();
    }
    std::mem::take(&mut *kept.lock().unwrap_or_else(PoisonError::into_inner))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(b: &[u8]) -> &str {
        std::str::from_utf8(b).expect("utf-8")
    }

    #[tokio::test]
    async fn arguments_reach_the_program_without_a_shell() {
        let out = run(Run::argv(
            &["echo", "$(id); `id`", "two words"],
            Duration::from_secs(10),
        ))
        .await
        .expect("echo runs");
        assert!(out.status.success());
        assert_eq!(text(&out.stdout), "$(id); `id` two words\n");
        assert!(out.stderr.is_empty());
    }

    #[tokio::test]
    async fn a_failing_program_is_its_status_and_error_output_not_an_error() {
        let out = run(Run::argv(
            &["ls", "/nonexistent-gluster-csi"],
            Duration::from_secs(10),
        ))
        .await
        .expect("ls runs");
        assert!(!out.status.success());
        assert!(text(&out.stderr).contains("nonexistent-gluster-csi"));
    }

    #[tokio::test]
    async fn a_program_that_hangs_is_killed_with_its_children_at_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid_file = dir.path().join("child.pid");
        // The shell's background child is in the shell's process group and dies with it.
        let script = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
        let r = run(Run::argv(
            &["sh", "-c", &script],
            Duration::from_millis(500),
        ))
        .await;
        assert!(matches!(r, Err(RunError::Timeout { .. })), "{r:?}");
        let pid = std::fs::read_to_string(&pid_file).expect("pid file");
        let stat = format!("/proc/{}/stat", pid.trim());
        let mut alive = true;
        for _ in 0..50 {
            // Gone, or a zombie waiting for its reaper: either way not running.
            alive = std::fs::read_to_string(&stat).is_ok_and(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| !r.trim_start().starts_with('Z'))
            });
            if !alive {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!alive, "the background child {} survived", pid.trim());
    }

    #[tokio::test]
    async fn output_over_the_limit_is_cut_and_the_program_still_finishes() {
        let out = run(Run::argv(
            &["head", "-c", "1000000", "/dev/zero"],
            Duration::from_secs(10),
        )
        .output_limit(100))
        .await
        .expect("head runs");
        assert!(out.status.success());
        assert_eq!(out.stdout.len(), 100);
    }

    #[tokio::test]
    async fn a_daemon_holding_the_pipes_does_not_hold_up_the_caller() {
        // The background sleep keeps stdout open after the shell exits.
        let started = std::time::Instant::now();
        let out = run(Run::argv(
            &["sh", "-c", "echo started; sleep 20 &"],
            Duration::from_secs(10),
        ))
        .await
        .expect("sh runs");
        assert!(out.status.success());
        assert_eq!(
            text(&out.stdout),
            "started\n",
            "what was read before the grace ended is kept"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_missing_program_or_an_empty_line_cannot_start() {
        let r = run(Run::argv(&["/nonexistent/mount"], Duration::from_secs(5))).await;
        assert!(matches!(r, Err(RunError::Spawn { .. })), "{r:?}");
        let r = run(Run::argv(&Vec::<String>::new(), Duration::from_secs(5))).await;
        assert!(matches!(r, Err(RunError::Spawn { .. })), "{r:?}");
    }
}
