//! `testbed.env`: how to reach a running testbed, as shell-sourceable `KEY=value` lines.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// File name of the environment file inside the state directory.
pub const FILE_NAME: &str = "testbed.env";

/// How to reach a running testbed. Empty strings for the parts that were not started.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TestbedEnv {
    /// `HEKETI_URL`: base URL of heketi-server.
    pub heketi_url: String,
    /// `HEKETI_USER`: always `admin`.
    pub heketi_user: String,
    /// `HEKETI_KEY`: the admin secret (never printed by `Debug` or [`TestbedEnv::redacted`]).
    pub heketi_key: String,
    /// `HEKETI_KEY_FILE`: file holding `heketi_key`, for `--heketi-key-file`.
    pub heketi_key_file: PathBuf,
    /// `CONTROLLER_ENDPOINT`: `unix://…` socket of the controller.
    pub controller_endpoint: String,
    /// `NODE_ENDPOINT`: `unix://…` socket of the node plugin.
    pub node_endpoint: String,
    /// `GLUSTER_HOSTS`: the Gluster host addresses.
    pub gluster_hosts: Vec<String>,
}

impl fmt::Debug for TestbedEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestbedEnv")
            .field("heketi_url", &self.heketi_url)
            .field("heketi_user", &self.heketi_user)
            .field("heketi_key", &"<redacted>")
            .field("heketi_key_file", &self.heketi_key_file)
            .field("controller_endpoint", &self.controller_endpoint)
            .field("node_endpoint", &self.node_endpoint)
            .field("gluster_hosts", &self.gluster_hosts)
            .finish()
    }
}

impl TestbedEnv {
    fn pairs(&self, key: &str) -> Vec<(&'static str, String)> {
        vec![
            ("HEKETI_URL", self.heketi_url.clone()),
            ("HEKETI_USER", self.heketi_user.clone()),
            ("HEKETI_KEY", key.to_string()),
            (
                "HEKETI_KEY_FILE",
                self.heketi_key_file.display().to_string(),
            ),
            ("CONTROLLER_ENDPOINT", self.controller_endpoint.clone()),
            ("NODE_ENDPOINT", self.node_endpoint.clone()),
            ("GLUSTER_HOSTS", self.gluster_hosts.join(",")),
        ]
    }

    /// The file's text: one `KEY=value` line per variable, values quoted for the shell.
    pub fn to_env_file(&self) -> String {
        render(&self.pairs(&self.heketi_key))
    }

    /// The same lines with the secret left out, for printing.
    pub fn redacted(&self) -> String {
        let mut pairs = self.pairs("");
        pairs.retain(|(k, _)| *k != "HEKETI_KEY");
        let mut text = render(&pairs);
        if !self.heketi_key.is_empty() {
            text.push_str("# HEKETI_KEY is set in the file (not printed)\n");
        }
        text
    }

    /// Writes the file into `state_dir` (mode 0600: it holds the admin key).
    pub fn write(&self, state_dir: &Path) -> Result<PathBuf> {
        let path = state_dir.join(FILE_NAME);
        write_private(&path, self.to_env_file().as_bytes())?;
        Ok(path)
    }
}

fn render(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}\n", shell_quote(v)))
        .collect()
}

/// Quotes `v` for a POSIX shell when it holds anything but plain characters.
fn shell_quote(v: &str) -> String {
    let plain = v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/:._,-@+=%".contains(c));
    if plain {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\'', r"'\''"))
    }
}

/// Writes `bytes` to a new file at `path` with mode 0600 (replacing an old one).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TestbedEnv {
        TestbedEnv {
            heketi_url: "http://198.18.3.1:41234".into(),
            heketi_user: "admin".into(),
            heketi_key: "s3cr3t".into(),
            heketi_key_file: "/tmp/gcsi-x/heketi-admin.key".into(),
            controller_endpoint: "unix:///tmp/gcsi-x/controller.sock".into(),
            node_endpoint: "unix:///tmp/gcsi x/node.sock".into(),
            gluster_hosts: vec!["198.18.3.11".into(), "198.18.3.12".into()],
        }
    }

    #[test]
    fn env_file_has_every_key_once() {
        let text = sample().to_env_file();
        for key in [
            "HEKETI_URL=http://198.18.3.1:41234",
            "HEKETI_USER=admin",
            "HEKETI_KEY=s3cr3t",
            "CONTROLLER_ENDPOINT=unix:///tmp/gcsi-x/controller.sock",
            "NODE_ENDPOINT='unix:///tmp/gcsi x/node.sock'",
            "GLUSTER_HOSTS=198.18.3.11,198.18.3.12",
        ] {
            assert_eq!(text.lines().filter(|l| *l == key).count(), 1, "{key}");
        }
    }

    #[test]
    fn the_key_never_shows_in_debug_or_redacted_text() {
        let env = sample();
        assert!(!format!("{env:?}").contains("s3cr3t"));
        assert!(!env.redacted().contains("s3cr3t"));
        assert!(env.redacted().contains("HEKETI_URL="));
    }

    #[test]
    fn quotes_survive_the_shell() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
        assert_eq!(shell_quote(""), "");
    }

    #[test]
    fn env_file_is_private() -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        let path = sample().write(dir.path())?;
        assert_eq!(std::fs::metadata(path)?.permissions().mode() & 0o777, 0o600);
        Ok(())
    }
}
