//! The per-volume client logs (`<state dir>/logs/<volume>.log`): rotation before a mount, and
//! bounded tails for error messages.
//!
//! Every `glusterfs` client of a volume on this node appends to the same log file, and nothing
//! else ever shortens it. So that it cannot fill the state directory over the months a node
//! lives, NodeStage renames a log larger than [`ROTATE_AT`] to `<volume>.log.1` (replacing an
//! older one) before it starts a new client: at most two files of about that size per volume.
//! A client that runs for a long time keeps writing to the file it opened; at `log-level=ERROR`
//! that is little, and the client opens its log in append mode, so an outside `logrotate` with
//! `copytruncate` is safe if wanted.
//!
//! Error messages quote the last [`TAIL_LINES`] lines a failed mount logged: the plugin's own
//! (NodeStage) and the mount agent's (in its answer) alike, both through [`tail_async`] from
//! the offset the log had before the mount ([`prepare`], or [`end`] where nothing is rotated).
//! Reading them never reads more than [`TAIL_BYTES`] from the end of the file, whatever its
//! size, and runs on the blocking pool under a time limit like every other file access of the
//! plugin.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, blocking};

/// Size above which a client log is rotated before the next mount of its volume.
pub const ROTATE_AT: u64 = 16 * 1024 * 1024;
/// Lines of a client log quoted for a failed mount.
pub const TAIL_LINES: usize = 5;
/// Most bytes read from the end of a log for a tail.
pub const TAIL_BYTES: u64 = 64 * 1024;
/// Longest line kept in a tail, in characters.
const LINE_CHARS: usize = 400;
/// Limit for one log operation.
const LOG_TIMEOUT: Duration = Duration::from_secs(5);

/// `<log>.1`, where a rotated log goes.
pub fn rotated(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// Renames `log` to `<log>.1` when it is larger than `limit`; returns the length of `log`
/// afterwards (0 when rotated or missing), the offset from which a new client's lines start.
pub fn rotate_if_larger(log: &Path, limit: u64) -> io::Result<u64> {
    let len = match std::fs::metadata(log) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    if len <= limit {
        return Ok(len);
    }
    std::fs::rename(log, rotated(log))?;
    tracing::info!(log = %log.display(), bytes = len, "rotated the client log");
    Ok(0)
}

/// Before a mount: creates the log directory, rotates a large log and returns where the new
/// client's lines will start.
pub async fn prepare(log: &Path) -> Result<u64, Error> {
    let log = log.to_path_buf();
    let what = format!("preparing the client log {}", log.display());
    blocking(what, LOG_TIMEOUT, move || {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create", dir, e))?;
        }
        rotate_if_larger(&log, ROTATE_AT).map_err(|e| Error::io("cannot rotate", &log, e))
    })
    .await
}

/// The length of `log` now (0 when it cannot be read), on the blocking pool under a time
/// limit: where the lines of a client about to start will begin.
pub async fn end(log: &Path) -> u64 {
    let log = log.to_path_buf();
    blocking("reading the client log size", LOG_TIMEOUT, move || {
        Ok(std::fs::metadata(&log).map_or(0, |m| m.len()))
    })
    .await
    .unwrap_or(0)
}

/// The last `lines` non-empty lines of `log` after byte `from`, joined with ` | `; empty when
/// the file cannot be read. Reads at most [`TAIL_BYTES`].
pub fn tail(log: &Path, from: u64, lines: usize) -> String {
    let Ok(file) = std::fs::File::open(log) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    tail_of(file, len, from, lines).unwrap_or_default()
}

/// [`tail`] on the blocking pool under a time limit (a missing answer is an empty tail).
pub async fn tail_async(log: &Path, from: u64, lines: usize) -> String {
    let log = log.to_path_buf();
    blocking("reading a client log", LOG_TIMEOUT, move || {
        Ok(tail(&log, from, lines))
    })
    .await
    .unwrap_or_default()
}

/// The tail of a reader `len` bytes long: seeks to `max(len - TAIL_BYTES, from)` and reads at
/// most [`TAIL_BYTES`]. The first line after a seek into the part before the window may be a
/// fragment and is dropped.
fn tail_of<R: Read + Seek>(mut r: R, len: u64, from: u64, lines: usize) -> io::Result<String> {
    let start = from.max(len.saturating_sub(TAIL_BYTES)).min(len);
    r.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    r.take(TAIL_BYTES).read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let mut all: Vec<&str> = text.lines().collect();
    if start > from && !all.is_empty() {
        // The window starts somewhere in a line written before it.
        all.remove(0);
    }
    let all: Vec<&str> = all.into_iter().filter(|l| !l.trim().is_empty()).collect();
    Ok(all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| l.chars().take(LINE_CHARS).collect::<String>())
        .collect::<Vec<_>>()
        .join(" | "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Counts the bytes read through it.
    struct Counting<R> {
        inner: R,
        read: u64,
    }

    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read += n as u64;
            Ok(n)
        }
    }

    impl<R: Seek> Seek for Counting<R> {
        fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
            self.inner.seek(pos)
        }
    }

    #[test]
    fn tail_reads_only_new_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("v.log");
        std::fs::write(&log, "old 1\nold 2\n").expect("write");
        let start = std::fs::metadata(&log).expect("meta").len();
        let mut text = std::fs::read_to_string(&log).expect("read");
        for i in 0..8 {
            text.push_str(&format!("new {i}\n\n"));
        }
        std::fs::write(&log, text).expect("write");
        assert_eq!(tail(&log, start, 3), "new 5 | new 6 | new 7");
        assert_eq!(tail(&log, 0, 2), "new 6 | new 7");
        assert_eq!(tail(&log, start + 10_000, 2), "", "past the end");
        assert_eq!(tail(&dir.path().join("missing"), 0, 3), "");
    }

    #[test]
    fn tail_of_a_ten_mib_log_reads_at_most_64_kib() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("big.log");
        let mut f = std::fs::File::create(&log).expect("create");
        let mut written = 0u64;
        let mut i = 0u64;
        while written < 10 * 1024 * 1024 {
            let line = format!(
                "[2024-01-01 00:00:00] E [client] line {i:08} {}\n",
                "x".repeat(60)
            );
            f.write_all(line.as_bytes()).expect("write");
            written += line.len() as u64;
            i += 1;
        }
        drop(f);
        let last = i - 1;
        let file = std::fs::File::open(&log).expect("open");
        let len = file.metadata().expect("meta").len();
        assert!(len >= 10 * 1024 * 1024);
        let mut counting = Counting {
            inner: file,
            read: 0,
        };
        let got = tail_of(&mut counting, len, 0, 3).expect("tail");
        assert!(counting.read <= TAIL_BYTES, "read {} bytes", counting.read);
        let want: Vec<String> = (last - 2..=last).map(|n| format!("line {n:08}")).collect();
        let parts: Vec<&str> = got.split(" | ").collect();
        assert_eq!(parts.len(), 3, "{got}");
        for (part, n) in parts.iter().zip(&want) {
            assert!(part.contains(n.as_str()), "{part} lacks {n}");
        }
        // Asking for more lines than fit in the window gives whole lines only.
        let file = std::fs::File::open(&log).expect("open");
        let many = tail_of(file, len, 0, usize::MAX).expect("tail");
        assert!(
            many.split(" | ").all(|l| l.starts_with("[2024")),
            "a cut line"
        );
    }

    #[test]
    fn large_logs_are_rotated_small_ones_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("v.log");
        assert_eq!(rotate_if_larger(&log, 10).expect("missing"), 0);
        std::fs::write(&log, "0123456789").expect("write");
        assert_eq!(rotate_if_larger(&log, 10).expect("small"), 10);
        assert!(!rotated(&log).exists());
        std::fs::write(&log, "0123456789A").expect("write");
        assert_eq!(rotate_if_larger(&log, 10).expect("large"), 0);
        assert!(!log.exists());
        assert_eq!(
            std::fs::read_to_string(rotated(&log)).expect("rotated"),
            "0123456789A"
        );
        assert_eq!(rotated(&log), dir.path().join("v.log.1"));
    }
}
