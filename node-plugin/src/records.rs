//! Which Gluster volume a CSI volume id was staged from, kept in the state directory.
//!
//! The CSI volume id is opaque to the node (it is the controller's), and NodeGetVolumeStats
//! carries only the id and a path. To answer NOT_FOUND for "a mount, but of another volume",
//! NodeStage writes `<state dir>/volumes/<sha256 of the id>` holding the Gluster volume name,
//! and NodeUnstage removes it. The record is a hint for that check only: no mount decision
//! depends on it, and a missing record (state directory lost) makes the check lenient.

use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, blocking};
use crate::mounter::SYSCALL_TIMEOUT;

/// The records of one state directory.
#[derive(Clone, Debug)]
pub struct Records {
    dir: PathBuf,
}

impl Records {
    /// Records under `state_dir/volumes`.
    pub fn new(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.join("volumes"),
        }
    }

    fn path(&self, volume_id: &str) -> PathBuf {
        self.dir
            .join(hex::encode(Sha256::digest(volume_id.as_bytes())))
    }

    /// Records that `volume_id` is Gluster volume `gluster_volume` (atomically replaced).
    pub async fn put(&self, volume_id: &str, gluster_volume: &str) -> Result<(), Error> {
        let path = self.path(volume_id);
        let dir = self.dir.clone();
        let text = format!("{gluster_volume}\n");
        blocking("writing a volume record", SYSCALL_TIMEOUT, move || {
            std::fs::create_dir_all(&dir).map_err(|e| Error::io("cannot create", &dir, e))?;
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).map_err(|e| Error::io("cannot write", &tmp, e))?;
            std::fs::rename(&tmp, &path).map_err(|e| Error::io("cannot rename to", &path, e))
        })
        .await
    }

    /// The Gluster volume recorded for `volume_id`, if any.
    pub async fn get(&self, volume_id: &str) -> Result<Option<String>, Error> {
        let path = self.path(volume_id);
        blocking(
            "reading a volume record",
            SYSCALL_TIMEOUT,
            move || match std::fs::read_to_string(&path) {
                Ok(s) => Ok(Some(s.trim().to_owned()).filter(|v| !v.is_empty())),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::io("cannot read", &path, e)),
            },
        )
        .await
    }

    /// Forgets `volume_id` (a missing record is fine).
    pub async fn remove(&self, volume_id: &str) -> Result<(), Error> {
        let path = self.path(volume_id);
        blocking(
            "removing a volume record",
            SYSCALL_TIMEOUT,
            move || match std::fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::io("cannot remove", &path, e)),
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_remove() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = Records::new(dir.path());
        let id = "v1/heketi/0123456789abcdef/with/slashes and spaces";
        assert_eq!(r.get(id).await.expect("get"), None);
        r.put(id, "vol_0123").await.expect("put");
        assert_eq!(r.get(id).await.expect("get").as_deref(), Some("vol_0123"));
        r.put(id, "vol_other").await.expect("replace");
        assert_eq!(r.get(id).await.expect("get").as_deref(), Some("vol_other"));
        assert_eq!(r.get("another").await.expect("get"), None);
        r.remove(id).await.expect("remove");
        r.remove(id).await.expect("remove twice");
        assert_eq!(r.get(id).await.expect("get"), None);
    }
}
