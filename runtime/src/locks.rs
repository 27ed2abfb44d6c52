//! Per-volume operation guards.
//!
//! CSI lets the container orchestrator retry a call while the first is still running. Each
//! mutating call takes a guard for its key (a volume id, a name, a target path); if another call
//! holds it, the new call fails fast with `Aborted` instead of queueing behind it
//! ([`OperationLocks::try_lock`] says whether the key is free; with feature `csi`,
//! `lock_or_aborted` builds the status).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// A set of keys currently in use. Cheap to clone; clones share the set.
#[derive(Clone, Debug, Default)]
pub struct OperationLocks {
    held: Arc<Mutex<HashSet<String>>>,
}

/// Holds a key of an [`OperationLocks`] until dropped.
#[derive(Debug)]
#[must_use = "the lock is released when the guard is dropped"]
pub struct OperationGuard {
    held: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl OperationLocks {
    /// Takes `key`, or returns `None` when another operation holds it.
    pub fn try_lock(&self, key: &str) -> Option<OperationGuard> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if !held.insert(key.to_owned()) {
            return None;
        }
        Some(OperationGuard {
            held: Arc::clone(&self.held),
            key: key.to_owned(),
        })
    }

    /// Takes `key` or builds the CSI `Aborted` status for the caller to return (feature `csi`).
    #[cfg(feature = "csi")]
    pub fn lock_or_aborted(&self, key: &str) -> Result<OperationGuard, tonic::Status> {
        self.try_lock(key).ok_or_else(|| {
            tonic::Status::aborted(format!(
                "an operation on {key} is already in progress; retry later"
            ))
        })
    }
}

impl Drop for OperationGuard {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_key_is_refused_until_released() {
        let locks = OperationLocks::default();
        let a = locks.try_lock("vol-a").expect("free key");
        assert!(locks.try_lock("vol-a").is_none());
        let _b = locks.try_lock("vol-b").expect("other keys are independent");
        drop(a);
        assert!(locks.clone().try_lock("vol-a").is_some());
    }

    #[cfg(feature = "csi")]
    #[test]
    fn a_held_key_is_aborted() {
        let locks = OperationLocks::default();
        let _a = locks.lock_or_aborted("vol-a").expect("free key");
        let status = locks.lock_or_aborted("vol-a").expect_err("held");
        assert_eq!(status.code(), tonic::Code::Aborted);
    }
}
