//! Persistence of [`State`] in `<state-dir>/state.json`.
//!
//! Every change is applied to a copy, written to a temporary file, flushed with `fsync`, renamed
//! over the state file and the directory is flushed too; only then does the change become
//! visible in memory. A crash at any moment leaves either the old or the new file.

use std::io::Write;
use std::path::{Path, PathBuf};

use tokio::sync::Mutex;

use crate::model::{STATE_VERSION, State};

/// File name of the state inside the state directory.
pub const STATE_FILE: &str = "state.json";

/// The state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading failed.
    #[error("cannot read state file {path}: {source}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not a state we understand.
    #[error("state file {path} is not valid: {reason}")]
    Invalid {
        /// File.
        path: String,
        /// Cause.
        reason: String,
    },
    /// Writing failed.
    #[error("cannot write state file {path}: {source}")]
    Write {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// The state, guarded, and where it is saved.
pub struct Store {
    path: PathBuf,
    state: Mutex<State>,
}

impl Store {
    /// Loads `<dir>/state.json`, or starts empty when there is none.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(STATE_FILE);
        let state = match std::fs::read(&path) {
            Ok(bytes) => {
                let state: State =
                    serde_json::from_slice(&bytes).map_err(|e| StoreError::Invalid {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })?;
                if state.version > STATE_VERSION {
                    return Err(StoreError::Invalid {
                        path: path.display().to_string(),
                        reason: format!(
                            "format version {} is newer than {STATE_VERSION}",
                            state.version
                        ),
                    });
                }
                state
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::new(),
            Err(source) => {
                return Err(StoreError::Read {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        Ok(Self {
            path,
            state: Mutex::new(state),
        })
    }

    /// Path of the state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the current state.
    pub async fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        let guard = self.state.lock().await;
        f(&guard)
    }

    /// Applies `f` to a copy of the state; when it succeeds the copy is saved and becomes the
    /// state. When `f` fails nothing changes.
    pub async fn update<R, E>(&self, f: impl FnOnce(&mut State) -> Result<R, E>) -> Result<R, E>
    where
        E: From<StoreError>,
    {
        let mut guard = self.state.lock().await;
        let mut next = guard.clone();
        let out = f(&mut next)?;
        if next != *guard {
            let bytes = serde_json::to_vec_pretty(&next).map_err(|e| StoreError::Invalid {
                path: self.path.display().to_string(),
                reason: e.to_string(),
            })?;
            let path = self.path.clone();
            tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
                .await
                .map_err(|e| StoreError::Write {
                    path: self.path.display().to_string(),
                    source: std::io::Error::other(e.to_string()),
                })??;
            *guard = next;
        }
        Ok(out)
    }
}

/// Writes `bytes` to `path` through a flushed temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let err = |source| StoreError::Write {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(err)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Cluster;

    #[tokio::test]
    async fn updates_survive_reopen_and_failed_updates_change_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let r: Result<(), StoreError> = store
            .update(|s| {
                s.clusters.insert(
                    "c1".into(),
                    Cluster {
                        id: "c1".into(),
                        block: true,
                        file: true,
                    },
                );
                Ok(())
            })
            .await;
        assert!(r.is_ok());
        let failed: Result<(), StoreError> = store
            .update(|s| {
                s.clusters.clear();
                Err(StoreError::Invalid {
                    path: String::new(),
                    reason: "no".into(),
                })
            })
            .await;
        assert!(failed.is_err());
        assert_eq!(store.read(|s| s.clusters.len()).await, 1);
        let again = Store::open(dir.path()).expect("reopen");
        assert!(again.read(|s| s.clusters.contains_key("c1")).await);
        assert!(!dir.path().join("state.json.tmp").exists());
    }

    #[test]
    fn a_corrupt_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(std::fs::write(dir.path().join(STATE_FILE), b"{not json").is_ok());
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::Invalid { .. })
        ));
    }
}
