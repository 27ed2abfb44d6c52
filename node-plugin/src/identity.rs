//! What "ready" means for the node plugin: it can mount Gluster volumes.

use std::path::Path;

use gluster_csi_runtime::identity::{CheckFuture, Readiness};

/// Ready when the GlusterFS mount helper and the FUSE device are present.
#[derive(Debug)]
pub struct MountToolsReadiness {
    helpers: Vec<&'static str>,
    fuse_device: &'static str,
}

impl Default for MountToolsReadiness {
    fn default() -> Self {
        Self {
            helpers: vec!["/sbin/mount.glusterfs", "/usr/sbin/mount.glusterfs"],
            fuse_device: "/dev/fuse",
        }
    }
}

impl MountToolsReadiness {
    fn problems(&self) -> Result<(), String> {
        if !self.helpers.iter().any(|h| Path::new(h).exists()) {
            return Err(format!(
                "mount.glusterfs not found (looked in {}); install the glusterfs-client package",
                self.helpers.join(", ")
            ));
        }
        if !Path::new(self.fuse_device).exists() {
            return Err(format!(
                "{} is missing; the node plugin needs the FUSE device (privileged container or /dev/fuse mounted in)",
                self.fuse_device
            ));
        }
        Ok(())
    }
}

impl Readiness for MountToolsReadiness {
    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move { self.problems() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tools_are_named_in_the_reason() {
        let r = MountToolsReadiness {
            helpers: vec!["/nonexistent/mount.glusterfs"],
            fuse_device: "/dev/fuse",
        };
        let reason = r.problems().expect_err("helper missing");
        assert!(reason.contains("mount.glusterfs"), "{reason}");
        let r = MountToolsReadiness {
            helpers: vec!["/"],
            fuse_device: "/nonexistent/fuse",
        };
        let reason = r.problems().expect_err("fuse missing");
        assert!(reason.contains("/nonexistent/fuse"), "{reason}");
    }
}
