//! Where node work runs: on this machine (`local`) or on the node over SSH (`ssh`), the two
//! executors of Heketi that fit a directory-brick server (Heketi's `sshexec` settings: key file,
//! user, port, sudo).
//!
//! Work is given as *steps*, each an argument vector. The local executor runs them one after the
//! other as processes. The SSH executor has to hand the remote side one command line (that is
//! what the SSH protocol carries, and the remote shell splits it), so every element of every
//! step is shell-quoted and the steps are joined with `&&`: no text from a request ever reaches
//! the remote shell unquoted. With `sudo` the whole line runs under `sudo -n sh -c`.

use std::path::PathBuf;
use std::time::Duration;

use crate::exec::{self, CommandError, Output};

/// How host keys of the nodes are checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostKeys {
    /// Only keys listed in this `known_hosts` file are accepted; an unknown or changed key is
    /// refused.
    KnownHosts(PathBuf),
    /// Any key is accepted (documented opt-out for networks where keys cannot be collected).
    Ignore,
}

/// Settings of the SSH executor, named as in Heketi's `sshexec` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshSettings {
    /// Private key file (`keyfile`).
    pub keyfile: PathBuf,
    /// Remote user (`user`).
    pub user: String,
    /// Remote port (`port`).
    pub port: u16,
    /// Run commands through `sudo -n` (`sudo`), for a non-root user.
    pub sudo: bool,
    /// Host key checking.
    pub host_keys: HostKeys,
    /// How long connecting may take.
    pub connect_timeout: Duration,
}

/// The executor chosen by configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Executor {
    /// Run on this machine.
    Local,
    /// Run on the node over SSH (the system `ssh` client).
    Ssh(SshSettings),
}

/// The exit status `ssh` uses for its own failures (connection, authentication, host key).
const SSH_FAILED: i32 = 255;

impl Executor {
    /// Whether work runs on this machine.
    pub fn is_local(&self) -> bool {
        matches!(self, Self::Local)
    }

    /// Runs `steps` on node `host`, one after the other, stopping at the first that fails;
    /// returns what they printed, concatenated. `label` names the work in errors.
    pub async fn run(
        &self,
        host: &str,
        steps: &[Vec<String>],
        label: &str,
        timeout: Duration,
    ) -> Result<Output, CommandError> {
        match self {
            Self::Local => {
                let mut all = Output::default();
                for step in steps {
                    let out = exec::run(step, label, timeout).await?;
                    all.stdout.push_str(&out.stdout);
                    all.stderr.push_str(&out.stderr);
                }
                Ok(all)
            }
            Self::Ssh(s) => {
                let argv = ssh_argv(s, host, steps)?;
                match exec::run(&argv, label, timeout).await {
                    Err(CommandError::Failed {
                        code: Some(SSH_FAILED),
                        message,
                        ..
                    }) => Err(CommandError::Unreachable {
                        host: host.to_owned(),
                        message,
                    }),
                    other => other,
                }
            }
        }
    }
}

/// The `ssh` argument vector that runs `steps` on `host`.
pub fn ssh_argv(
    s: &SshSettings,
    host: &str,
    steps: &[Vec<String>],
) -> Result<Vec<String>, CommandError> {
    let bad = |why: &str| CommandError::Spawn {
        program: "ssh".into(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, why.to_owned()),
    };
    if host.is_empty() || host.starts_with('-') || host.chars().any(char::is_whitespace) {
        return Err(bad(&format!("{host:?} is not a host name")));
    }
    let mut lines = Vec::with_capacity(steps.len());
    for step in steps {
        let line = shlex::try_join(step.iter().map(String::as_str))
            .map_err(|_| bad("a command argument holds a NUL byte"))?;
        lines.push(line);
    }
    let mut remote = lines.join(" && ");
    if s.sudo {
        let quoted = shlex::try_quote(&remote).map_err(|_| bad("NUL byte"))?;
        remote = format!("sudo -n -- sh -c {quoted}");
    }
    // ssh exits 255 for its own failures; the gluster CLI exits 255 for many of its errors.
    // A remote 255 is turned into 254 so that 255 always means "ssh failed, nothing ran".
    remote.push_str(" ; s=$?; [ $s -ne 255 ] || s=254; exit $s");
    let opt = |k: &str, v: &str| ["-o".to_owned(), format!("{k}={v}")];
    let mut argv: Vec<String> = vec!["ssh".into(), "-F".into(), "none".into()];
    argv.extend(opt("BatchMode", "yes"));
    argv.extend(opt(
        "ConnectTimeout",
        &s.connect_timeout.as_secs().max(1).to_string(),
    ));
    argv.extend(opt("ServerAliveInterval", "10"));
    argv.extend(opt("ServerAliveCountMax", "3"));
    argv.extend(opt("IdentitiesOnly", "yes"));
    argv.extend(opt("IdentityFile", &s.keyfile.display().to_string()));
    argv.extend(opt("LogLevel", "ERROR"));
    argv.extend(opt("GlobalKnownHostsFile", "/dev/null"));
    match &s.host_keys {
        HostKeys::KnownHosts(file) => {
            argv.extend(opt("StrictHostKeyChecking", "yes"));
            argv.extend(opt("UserKnownHostsFile", &file.display().to_string()));
        }
        HostKeys::Ignore => {
            argv.extend(opt("StrictHostKeyChecking", "no"));
            argv.extend(opt("UserKnownHostsFile", "/dev/null"));
        }
    }
    argv.extend([
        "-p".into(),
        s.port.to_string(),
        "-l".into(),
        s.user.clone(),
        "--".into(),
        host.to_owned(),
        remote,
    ]);
    Ok(argv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(sudo: bool) -> SshSettings {
        SshSettings {
            keyfile: "/keys/id".into(),
            user: "gluster".into(),
            port: 2222,
            sudo,
            host_keys: HostKeys::KnownHosts("/keys/known_hosts".into()),
            connect_timeout: Duration::from_secs(10),
        }
    }

    fn steps(v: &[&[&str]]) -> Vec<Vec<String>> {
        v.iter()
            .map(|s| s.iter().map(|a| (*a).to_owned()).collect())
            .collect()
    }

    #[test]
    fn remote_line_quotes_every_argument() {
        let argv = ssh_argv(
            &settings(false),
            "node1",
            &steps(&[&["mkdir", "-p", "--", "/d/x; rm -rf /"], &["echo", "$(id)"]]),
        )
        .expect("argv");
        let remote = argv.last().expect("remote");
        assert_eq!(
            remote,
            "mkdir -p -- '/d/x; rm -rf /' && echo '$(id)' ; s=$?; [ $s -ne 255 ] || s=254; exit $s"
        );
        // The line splits back into exactly the words given.
        let words = shlex::split(remote).expect("split");
        assert_eq!(words[3], "/d/x; rm -rf /");
        assert_eq!(words[6], "$(id)");
        let host = argv.iter().position(|a| a == "--").expect("--");
        assert_eq!(argv[host + 1], "node1");
        assert!(argv.contains(&"StrictHostKeyChecking=yes".to_owned()));
        assert!(argv.contains(&"UserKnownHostsFile=/keys/known_hosts".to_owned()));
    }

    #[test]
    fn sudo_wraps_the_whole_line() {
        let argv = ssh_argv(&settings(true), "n", &steps(&[&["a", "b c"], &["d"]])).expect("argv");
        let remote = argv.last().expect("remote");
        let words = shlex::split(remote).expect("split");
        assert_eq!(&words[..5], ["sudo", "-n", "--", "sh", "-c"]);
        assert_eq!(words[5], "a 'b c' && d");
    }

    #[test]
    fn hosts_that_look_like_options_are_refused() {
        for host in ["-oProxyCommand=x", "", "a b"] {
            assert!(ssh_argv(&settings(false), host, &steps(&[&["true"]])).is_err());
        }
    }

    #[tokio::test]
    async fn local_steps_stop_at_the_first_failure() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("m");
        let out = Executor::Local
            .run(
                "ignored",
                &steps(&[&["false"], &["touch", marker.to_str().expect("utf-8")]]),
                "t",
                Duration::from_secs(5),
            )
            .await;
        assert!(out.is_err());
        assert!(!marker.exists());
        let out = Executor::Local
            .run(
                "ignored",
                &steps(&[&["echo", "a"], &["echo", "b"]]),
                "t",
                Duration::from_secs(5),
            )
            .await
            .expect("echo");
        assert_eq!(out.stdout, "a\nb\n");
    }
}
