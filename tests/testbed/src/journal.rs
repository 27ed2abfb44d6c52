//! The record of everything a testbed creates, kept in the state directory.
//!
//! Each resource is appended (one JSON object per line, flushed to disk) *before* it is created,
//! or right after for a process, whose pid is only known then. `down` reads it back after a crash
//! and removes what is listed; entries for things that were never made are harmless.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// File name of the journal inside the state directory; its presence marks a testbed state dir.
pub const FILE_NAME: &str = "testbed.journal";

/// Set when the process is tearing its testbeds down (on a signal): from then on no journal takes
/// new entries, so no testbed still coming up makes anything more.
static FROZEN: AtomicBool = AtomicBool::new(false);

/// Refuses every further entry in every journal of this process.
pub fn freeze_all() {
    FROZEN.store(true, Ordering::SeqCst);
}

/// One created resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    /// A network namespace.
    Netns {
        /// Namespace name (`ip netns`).
        name: String,
    },
    /// A link in the root namespace (bridge or veth end).
    Link {
        /// Interface name.
        name: String,
    },
    /// A process we started.
    Process {
        /// What it is (`glusterd-h1`, `heketi-server`, `node-plugin`, …).
        role: String,
        /// Host pid.
        pid: u32,
        /// Start time in clock ticks since boot, to tell it from a later process with that pid.
        start: u64,
        /// The process is the first process of its own pid namespace: stopping it means
        /// stopping every process in that namespace.
        #[serde(default)]
        pid_namespace: bool,
    },
    /// `/etc/netns/NAME`, the files `ip netns exec` puts over `/etc` in namespace NAME.
    EtcNetns {
        /// Namespace name.
        name: String,
    },
    /// A mount point.
    Mount {
        /// Where it is mounted.
        path: PathBuf,
    },
}

/// Appends entries to the journal file.
#[derive(Debug)]
pub struct Journal {
    file: Option<Mutex<File>>,
}

impl Journal {
    /// Opens (creating if needed) the journal of `state_dir` for appending.
    pub fn open(state_dir: &Path) -> Result<Self> {
        let path = state_dir.join(FILE_NAME);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Self {
            file: Some(Mutex::new(file)),
        })
    }

    /// A journal that refuses every entry, for a testbed value that never starts anything.
    pub fn disabled() -> Self {
        Self { file: None }
    }

    /// Appends `entry` and flushes it to disk.
    pub fn record(&self, entry: &Entry) -> Result<()> {
        if FROZEN.load(Ordering::SeqCst) {
            anyhow::bail!("the testbeds of this process are being torn down");
        }
        let mut line = serde_json::to_string(entry)?;
        line.push('\n');
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("this testbed was never brought up"))?;
        let mut f = file
            .lock()
            .map_err(|_| anyhow::anyhow!("journal lock poisoned"))?;
        f.write_all(line.as_bytes())?;
        f.sync_data()?;
        Ok(())
    }
}

/// Reads the journal of `state_dir`; a missing file is an empty journal, and a line that does not
/// parse (cut short by a crash) is skipped.
pub fn read(state_dir: &Path) -> Vec<Entry> {
    let Ok(text) = std::fs::read_to_string(state_dir.join(FILE_NAME)) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_torn_lines_are_skipped() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let j = Journal::open(dir.path())?;
        let entries = vec![
            Entry::Netns { name: "n".into() },
            Entry::Link { name: "l".into() },
            Entry::Process {
                role: "r".into(),
                pid: 7,
                start: 9,
                pid_namespace: true,
            },
            Entry::Mount { path: "/m".into() },
        ];
        for e in &entries {
            j.record(e)?;
        }
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE_NAME))?;
        f.write_all(br#"{"kind":"netns","na"#)?;
        assert_eq!(read(dir.path()), entries);
        Ok(())
    }

    #[test]
    fn missing_journal_is_empty() {
        assert!(read(Path::new("/nonexistent/gcsi")).is_empty());
    }
}
