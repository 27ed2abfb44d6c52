//! Whether a Gluster mount is healthy, degraded or dead — and so whether the plugin may remount
//! it. NodeStageVolume, NodePublishVolume and NodeGetVolumeStats all ask [`Inspector::assess`],
//! which probes the mount and, if it does not answer well, looks for the client serving it;
//! [`decide`] turns the two findings into a [`Condition`]. Stage and publish then ask
//! [`repair`], the one place that says what to do with it: keep it, remount it, or leave it
//! alone and answer UNAVAILABLE.
//!
//! | `statvfs` of the mount | its client runs | no client runs | cannot tell |
//! |---|---|---|---|
//! | answers | healthy | healthy | healthy |
//! | ENOTCONN, EIO, ETIMEDOUT, … | degraded | **dead** | **dead** |
//! | no answer within the limit | degraded | degraded | degraded |
//! | another error | degraded | **dead** | degraded |
//!
//! - **Degraded is not dead.** A client whose bricks are all unreachable for a while (a rolling
//!   restart of the pool, a network partition) answers ENOTCONN or does not answer at all, yet
//!   reconnects by itself when they return. Remounting would unmount what running pods use and
//!   leave their bind mounts on a connection nobody serves. A degraded mount is left as it is:
//!   stage and publish answer UNAVAILABLE (kubelet retries), stats report it abnormal.
//! - **Dead** means nothing serves the mount any more (the client was killed or crashed; the
//!   kernel then answers ENOTCONN to everything). Only then is it remounted.
//! - A mount that **does not answer** is held by some process: a connection without a server
//!   fails at once. It is never treated as dead, even when no client is found.
//! - **Cannot tell**: the plugin does not see every process (a PID namespace of its own) or the
//!   scan of `/proc` did not finish. A connection error is then taken as dead, as the plugin
//!   always did — a plugin that cannot see the clients also cannot kill them: remounting
//!   replaces the staging mount, and a client still serving published targets keeps doing so.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::clients::{self, ProcessView};
use crate::error::Error;
use crate::mounter::{Health, Prober, Usage};
use crate::mountinfo::{MountInfo, MountTable};

/// Whether a client process serves the mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Client {
    /// These `glusterfs` processes hold the mount's FUSE connection.
    Running(Vec<u32>),
    /// Every process of the node was seen, and none serves the mount.
    Absent,
    /// The plugin cannot see every process, or could not look.
    Unknown,
}

/// The state of a mount, with a sentence for VOLUME_CONDITION, errors and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// It answers.
    Healthy(Usage),
    /// It does not answer well, but something still serves it: leave it alone.
    Degraded(String),
    /// Nothing serves it: remount it.
    Dead(String),
}

impl Condition {
    /// Why the mount is not healthy; `None` when it is.
    pub fn cause(&self) -> Option<&str> {
        match self {
            Self::Healthy(_) => None,
            Self::Degraded(c) | Self::Dead(c) => Some(c),
        }
    }
}

fn pids(p: &[u32]) -> String {
    let list: Vec<String> = p.iter().map(u32::to_string).collect();
    match list.len() {
        1 => format!("pid {}", list[0]),
        _ => format!("pids {}", list.join(", ")),
    }
}

/// The decision: what a probe of the mount at `path` and the state of its client mean.
pub fn decide(health: &Health, client: &Client, path: &Path) -> Condition {
    let p = path.display();
    match (health, client) {
        (Health::Alive(usage), _) => Condition::Healthy(*usage),
        (Health::Dead(e), Client::Running(c)) => Condition::Degraded(format!(
            "{p} answers \"{}\" while its Gluster client ({}) is running: the client cannot \
             reach the volume's bricks; it reconnects by itself when they are back, so the \
             mount is left as it is",
            e.desc(),
            pids(c)
        )),
        (Health::Dead(e), Client::Absent) => Condition::Dead(format!(
            "{p} is not served any more ({}): no Gluster client process serves it; the next \
             NodeStage/NodePublish remounts it",
            e.desc()
        )),
        (Health::Dead(e), Client::Unknown) => Condition::Dead(format!(
            "{p} is not served any more ({}): its Gluster client is gone or cannot reach the \
             servers (the plugin cannot see the client processes); the next \
             NodeStage/NodePublish remounts it",
            e.desc()
        )),
        (Health::Hung(after), Client::Running(c)) => Condition::Degraded(format!(
            "{p} is not answering (it did not answer statvfs within {after:?}) while its \
             Gluster client ({}) is running: the servers are unreachable or the client is \
             stuck; the mount is left as it is",
            pids(c)
        )),
        (Health::Hung(after), Client::Absent) => Condition::Degraded(format!(
            "{p} is not answering (it did not answer statvfs within {after:?}) and no Gluster \
             client process serving it was found; a mount that hangs is still held by \
             something, so it is left as it is"
        )),
        (Health::Hung(after), Client::Unknown) => Condition::Degraded(format!(
            "{p} is not answering (it did not answer statvfs within {after:?}): the Gluster \
             servers may be unreachable; the mount is left as it is"
        )),
        (Health::Failed(e), Client::Running(c)) => Condition::Degraded(format!(
            "statvfs of {p} failed ({}) while its Gluster client ({}) is running; the mount is \
             left as it is",
            e.desc(),
            pids(c)
        )),
        (Health::Failed(e), Client::Absent) => Condition::Dead(format!(
            "statvfs of {p} failed ({}) and no Gluster client process serves it; the next \
             NodeStage/NodePublish remounts it",
            e.desc()
        )),
        (Health::Failed(e), Client::Unknown) => Condition::Degraded(format!(
            "statvfs of {p} failed ({}); the mount is left as it is",
            e.desc()
        )),
    }
}

/// What a stage or publish does with a mount it finds at its path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Repair {
    /// The mount is healthy: use it as it is.
    Keep,
    /// The mount is dead: unmount it and mount the volume again. Holds the cause, for the log.
    Remount(String),
}

/// The repair policy: a healthy mount is kept, a dead one is remounted, and a degraded one is
/// left alone — the call fails with UNAVAILABLE, naming `volume_id`, `mount`'s Gluster volume
/// and the cause, and kubelet retries it. No other code decides to remount.
pub fn repair(condition: Condition, volume_id: &str, mount: &MountInfo) -> Result<Repair, Error> {
    match condition {
        Condition::Healthy(_) => Ok(Repair::Keep),
        Condition::Dead(cause) => Ok(Repair::Remount(cause)),
        Condition::Degraded(cause) => Err(Error::Unavailable(format!(
            "volume {volume_id} (Gluster volume {}) is degraded; its mount is left alone and the \
             call can be retried: {cause}",
            mount.gluster_volume().unwrap_or(&mount.source)
        ))),
    }
}

/// Probes mounts and finds their clients.
#[derive(Clone, Debug)]
pub struct Inspector {
    prober: Prober,
    view: ProcessView,
}

impl Inspector {
    /// An inspector probing with `prober` and looking for clients as `view` allows.
    pub fn new(prober: Prober, view: ProcessView) -> Self {
        Self { prober, view }
    }

    /// The condition of `mount` (an entry of `table`). A mount that answers costs one
    /// `statvfs`; only one that does not is checked for a client.
    pub async fn assess(&self, table: &MountTable, mount: &MountInfo) -> Condition {
        let health = self.prober.probe(&mount.mount_point).await;
        let client = match health {
            Health::Alive(_) => Client::Unknown,
            _ => self.client_of(table, mount).await,
        };
        let condition = decide(&health, &client, &mount.mount_point);
        if let Some(cause) = condition.cause() {
            tracing::debug!(?health, ?client, cause, "mount is not healthy");
        }
        condition
    }

    /// The client serving `mount`'s FUSE connection: a `glusterfs` FUSE server whose mount
    /// point is one of the paths where the same connection is mounted (the staging path, or
    /// for a published target the staging path it was bound from).
    async fn client_of(&self, table: &MountTable, mount: &MountInfo) -> Client {
        if !self.view.sees_all {
            return Client::Unknown;
        }
        let points: HashSet<&Path> = table
            .with_device(mount.device)
            .map(|m| m.mount_point.as_path())
            .collect();
        let Some(found) = clients::scan().await else {
            return Client::Unknown;
        };
        let serving: Vec<u32> = found
            .iter()
            .filter(|p| p.fuse_server && points.contains(p.mount_point.as_path()))
            .map(|p| p.pid)
            .collect();
        if serving.is_empty() {
            Client::Absent
        } else {
            Client::Running(serving)
        }
    }
}

/// The mount points, other than `staged`'s own, where the FUSE connection mounted there is
/// also mounted (published targets, subPath mounts), limited to `under` when given.
pub fn other_mounts(table: &MountTable, staged: &MountInfo, under: Option<&Path>) -> Vec<PathBuf> {
    table
        .with_device(staged.device)
        .filter(|m| m.mount_point != staged.mount_point)
        .filter(|m| under.is_none_or(|root| m.mount_point.starts_with(root)))
        .map(|m| m.mount_point.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use nix::errno::Errno;

    fn usage() -> Usage {
        Usage {
            bytes_total: 10,
            bytes_used: 1,
            bytes_available: 9,
            inodes_total: 5,
            inodes_used: 1,
            inodes_available: 4,
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Want {
        Healthy,
        Degraded,
        Dead,
    }

    #[test]
    fn probe_and_client_decide_healthy_degraded_or_dead() {
        use Want::*;
        let alive = Health::Alive(usage());
        let notconn = Health::Dead(Errno::ENOTCONN);
        let eio = Health::Dead(Errno::EIO);
        let hung = Health::Hung(Duration::from_secs(5));
        let failed = Health::Failed(Errno::EACCES);
        let running = Client::Running(vec![4242]);
        let cases: Vec<(&Health, &Client, Want)> = vec![
            (&alive, &running, Healthy),
            (&alive, &Client::Absent, Healthy),
            (&alive, &Client::Unknown, Healthy),
            (&notconn, &running, Degraded),
            (&eio, &running, Degraded),
            (&notconn, &Client::Absent, Dead),
            (&notconn, &Client::Unknown, Dead),
            (&hung, &running, Degraded),
            (&hung, &Client::Absent, Degraded),
            (&hung, &Client::Unknown, Degraded),
            (&failed, &running, Degraded),
            (&failed, &Client::Absent, Dead),
            (&failed, &Client::Unknown, Degraded),
        ];
        let path = Path::new("/k/globalmount");
        for (health, client, want) in cases {
            let got = decide(health, client, path);
            let kind = match &got {
                Condition::Healthy(_) => Healthy,
                Condition::Degraded(_) => Degraded,
                Condition::Dead(_) => Dead,
            };
            assert_eq!(kind, want, "{health:?} × {client:?}: {got:?}");
            match got.cause() {
                None => assert_eq!(want, Healthy),
                Some(c) => {
                    assert!(c.contains("/k/globalmount"), "{c}");
                    if *client == running {
                        assert!(c.contains("pid 4242") && c.contains("running"), "{c}");
                    }
                    if matches!(health, Health::Hung(_)) {
                        assert!(c.contains("did not answer") && c.contains("5s"), "{c}");
                    }
                }
            }
        }
        let bricks = decide(&notconn, &running, path);
        assert!(
            bricks
                .cause()
                .is_some_and(|c| c.contains("cannot reach the volume's bricks")),
            "{bricks:?}"
        );
        assert_eq!(
            decide(&notconn, &Client::Running(vec![1, 2]), path)
                .cause()
                .map(|c| c.contains("pids 1, 2")),
            Some(true)
        );
    }

    #[test]
    fn only_a_dead_mount_is_remounted_and_a_degraded_one_is_unavailable() {
        let table =
            MountTable::parse("10 1 0:50 / /k/globalmount rw - fuse.glusterfs h:/vol1 rw\n");
        let m = table.entries()[0].clone();
        assert_eq!(
            repair(Condition::Healthy(usage()), "v1", &m).expect("kept"),
            Repair::Keep
        );
        assert_eq!(
            repair(Condition::Dead("gone".into()), "v1", &m).expect("remounted"),
            Repair::Remount("gone".into())
        );
        match repair(Condition::Degraded("no bricks".into()), "v1", &m) {
            Err(Error::Unavailable(msg)) => {
                assert!(
                    msg.contains("volume v1")
                        && msg.contains("Gluster volume vol1")
                        && msg.contains("no bricks"),
                    "{msg}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_directory_that_answers_is_healthy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inspector = Inspector::new(Prober::new(Duration::from_secs(5)), ProcessView::detect());
        let table = MountTable::parse(&format!(
            "1 0 0:99 / {} rw - tmpfs tmpfs rw\n",
            dir.path().display()
        ));
        let mount = table.entries()[0].clone();
        assert!(matches!(
            inspector.assess(&table, &mount).await,
            Condition::Healthy(_)
        ));
    }

    #[test]
    fn other_mounts_are_the_bind_mounts_of_the_same_connection() {
        let table = MountTable::parse(
            "10 1 0:50 / /k/plugins/v/globalmount rw - fuse.glusterfs h:/v rw\n\
             11 1 0:50 / /k/pods/a/mount rw - fuse.glusterfs h:/v rw\n\
             12 1 0:50 /sub /k/pods/a/subpath/0 rw - fuse.glusterfs h:/v rw\n\
             13 1 0:51 / /k/pods/b/mount rw - fuse.glusterfs h:/v rw\n\
             14 1 0:50 / /elsewhere rw - fuse.glusterfs h:/v rw\n",
        );
        let staged = table
            .at(Path::new("/k/plugins/v/globalmount"))
            .expect("staged")
            .clone();
        assert_eq!(
            other_mounts(&table, &staged, Some(Path::new("/k"))),
            vec![
                PathBuf::from("/k/pods/a/mount"),
                PathBuf::from("/k/pods/a/subpath/0")
            ]
        );
        assert_eq!(other_mounts(&table, &staged, None).len(), 3);
    }
}
