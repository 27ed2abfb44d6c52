//! File-system work on the nodes: checking device directories, making and removing brick
//! directories. It runs where the device is, through the configured [`Executor`]: on this
//! machine (`local`: single host, quickstart) or on the node over SSH (`ssh`). Nothing here
//! assumes that this server sees the nodes' file systems.

use std::sync::Arc;
use std::time::Duration;

use crate::exec::CommandError;
use crate::executor::Executor;
use crate::model::Brick;

/// Brick-directory work on the node that owns a device.
#[derive(Clone, Debug)]
pub struct NodeWork {
    exec: Arc<Executor>,
    timeout: Duration,
}

/// A device that cannot hold bricks, or a brick that cannot be made or removed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The command did not run or failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The device path is not a directory.
    #[error("{path} is not a directory (it is a {kind})")]
    NotADirectory {
        /// The device path.
        path: String,
        /// What `stat` says it is.
        kind: String,
    },
    /// The node printed something this server does not understand.
    #[error("unexpected answer from {what}: {output:?}")]
    Unexpected {
        /// The command.
        what: &'static str,
        /// What it printed.
        output: String,
    },
    /// The server refuses to remove a directory it did not name.
    #[error("refusing to remove {0}: not a brick directory")]
    NotOurs(String),
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

impl NodeWork {
    /// Node work through `exec`, each call limited to `timeout`.
    pub fn new(exec: Arc<Executor>, timeout: Duration) -> Self {
        Self { exec, timeout }
    }

    /// The executor.
    pub fn executor(&self) -> &Executor {
        &self.exec
    }

    /// Checks that `path` on node `host` is a directory a brick can be made in and returns the
    /// size of the file system holding it, in KiB.
    pub async fn probe_device(&self, host: &str, path: &str) -> Result<u64, NodeError> {
        let out = self
            .exec
            .run(
                host,
                &[
                    argv(&["stat", "-L", "-c", "%F", "--", path]),
                    argv(&["stat", "-f", "-L", "-c", "%S %b", "--", path]),
                ],
                &format!("stat {path}"),
                self.timeout,
            )
            .await?;
        parse_probe(path, &out.stdout)
    }

    /// Makes the brick root `brick.path` (and its parents) on node `host`. With a `gid`, the
    /// root is group-owned by it with mode 2775 (setgid, group-writable); otherwise mode 0755.
    pub async fn create_brick(
        &self,
        host: &str,
        brick: &Brick,
        gid: Option<u32>,
    ) -> Result<(), NodeError> {
        let root = brick.path.as_str();
        let mut steps = vec![argv(&["mkdir", "-p", "--", root])];
        match gid {
            Some(g) => {
                let g = g.to_string();
                steps.push(argv(&["chgrp", "--", &g, root]));
                steps.push(argv(&["chmod", "--", "2775", root]));
            }
            None => steps.push(argv(&["chmod", "--", "0755", root])),
        }
        self.exec
            .run(host, &steps, &format!("making brick {root}"), self.timeout)
            .await?;
        Ok(())
    }

    /// Removes the brick's directory and everything in it on node `host`; a brick that is
    /// already gone is not an error. Only directories this server named (`brick_<id>`) are
    /// ever removed.
    pub async fn remove_brick(&self, host: &str, brick: &Brick) -> Result<(), NodeError> {
        let dir = brick.dir();
        let ours = std::path::Path::new(&dir)
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("brick_"));
        if !ours || !dir.starts_with('/') {
            return Err(NodeError::NotOurs(dir));
        }
        self.exec
            .run(
                host,
                &[argv(&["rm", "-rf", "--", &dir])],
                &format!("removing brick {dir}"),
                self.timeout,
            )
            .await?;
        Ok(())
    }
}

/// Reads `stat -c %F` then `stat -f -c '%S %b'`: the file type, then the fundamental block size
/// and block count of the file system.
fn parse_probe(path: &str, stdout: &str) -> Result<u64, NodeError> {
    let mut lines = stdout.lines();
    let kind = lines.next().unwrap_or_default().trim();
    if kind != "directory" {
        return Err(NodeError::NotADirectory {
            path: path.to_owned(),
            kind: kind.to_owned(),
        });
    }
    let unexpected = || NodeError::Unexpected {
        what: "stat -f",
        output: stdout.to_owned(),
    };
    let mut numbers = lines.next().ok_or_else(unexpected)?.split_whitespace();
    let mut next = || -> Result<u64, NodeError> {
        numbers
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or_else(unexpected)
    };
    let (block, blocks) = (next()?, next()?);
    Ok(block.saturating_mul(blocks) / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    fn brick(dev: &Path, id: &str) -> Brick {
        Brick {
            id: id.into(),
            device: "d".into(),
            node: "n".into(),
            host: "h".into(),
            path: dev
                .join(format!("brick_{id}"))
                .join("brick")
                .display()
                .to_string(),
            size_kib: 1,
        }
    }

    fn local() -> NodeWork {
        NodeWork::new(Arc::new(Executor::Local), Duration::from_secs(10))
    }

    #[tokio::test]
    async fn bricks_are_made_with_group_and_removed() {
        let dev = tempfile::tempdir().expect("tempdir");
        let b = brick(dev.path(), "abc");
        local()
            .create_brick("h", &b, Some(2001))
            .await
            .expect("create");
        let meta = std::fs::metadata(&b.path).expect("stat");
        assert_eq!(meta.gid(), 2001);
        assert_eq!(meta.mode() & 0o7777, 0o2775);
        local()
            .create_brick("h", &b, Some(2001))
            .await
            .expect("again");
        std::fs::write(Path::new(&b.path).join("f"), b"x").expect("write");
        local().remove_brick("h", &b).await.expect("remove");
        assert!(!Path::new(&b.dir()).exists());
        local()
            .remove_brick("h", &b)
            .await
            .expect("second remove is fine");
    }

    #[tokio::test]
    async fn devices_are_probed() {
        let dev = tempfile::tempdir().expect("tempdir");
        let path = dev.path().display().to_string();
        let kib = local().probe_device("h", &path).await.expect("probe");
        let st = nix::sys::statvfs::statvfs(dev.path()).expect("statvfs");
        assert_eq!(kib, st.blocks() * st.fragment_size() / 1024);
        let file = dev.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        let err = local()
            .probe_device("h", &file.display().to_string())
            .await
            .expect_err("a file is no device");
        assert!(err.to_string().contains("regular"), "{err}");
        assert!(local().probe_device("h", "/nonexistent-hs").await.is_err());
    }

    #[tokio::test]
    async fn only_brick_directories_are_removed() {
        let dev = tempfile::tempdir().expect("tempdir");
        let mut b = brick(dev.path(), "abc");
        b.path = dev.path().join("precious/brick").display().to_string();
        std::fs::create_dir_all(&b.path).expect("mkdir");
        assert!(local().remove_brick("h", &b).await.is_err());
        assert!(Path::new(&b.path).exists());
    }

    #[test]
    fn probe_output_is_read() {
        assert_eq!(parse_probe("/d", "directory\n4096 256\n").ok(), Some(1024));
        assert!(parse_probe("/d", "regular file\n4096 256\n").is_err());
        assert!(parse_probe("/d", "directory\n").is_err());
    }
}
