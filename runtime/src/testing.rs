//! Helpers for tests that run a plugin binary as a child process (feature `test-support`).

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A plugin binary running as a child process; killed when dropped.
#[derive(Debug)]
pub struct PluginProcess {
    child: Option<Child>,
}

impl PluginProcess {
    /// Starts `binary` with `args`, stderr inherited so failures show in the test log.
    pub fn start(binary: &str, args: &[&str]) -> std::io::Result<Self> {
        let child = Command::new(binary)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        Ok(Self { child: Some(child) })
    }

    /// Waits up to `timeout` for the socket file to appear; false when it never did or the
    /// process exited first.
    pub async fn wait_for_socket(&mut self, socket: &Path, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if socket.exists() {
                return true;
            }
            let exited = match self.child.as_mut() {
                Some(child) => matches!(child.try_wait(), Ok(Some(_))),
                None => true,
            };
            if exited {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status (None on timeout).
    pub async fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).ok()?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).ok()?;
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

impl Drop for PluginProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
