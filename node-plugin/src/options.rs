//! Mount options: validating the volume capability's `mount_flags`, building the option list
//! of the staging (FUSE) mount, and the argv of `mount -t glusterfs` that carries them
//! ([`mount_args`], the same whoever runs it: the plugin, systemd-run or the mount agent).
//!
//! The staging mount always gets:
//! - `backup-volfile-servers=` the servers after the primary, joined with `:`; the primary is
//!   never repeated there (that makes some Gluster versions fail with "failed to set volfile
//!   server: File exists");
//! - `log-file=<state dir>/logs/<volume>.log`, read back when a mount fails;
//! - `log-level=ERROR`, unless the flags set `log-level`;
//! - `auto_unmount` while the client accepts it;
//! - then every flag of the capability, in order.
//!
//! Flags are passed to `mount.glusterfs`, a shell script that splits on commas and white space,
//! so each option is checked on its own: an entry `"a,b"` is two options, each validated, and no
//! option may contain white space, quotes or other shell-special characters. `log-file` and the
//! volfile server options are ours to set and are refused.

use std::ffi::OsString;
use std::path::Path;

use nix::mount::MsFlags;

use crate::context::VolumeContext;
use crate::error::Error;

/// Longest single option accepted.
const MAX_OPTION: usize = 256;

/// Options the plugin sets itself; a flag may not override them.
const RESERVED: &[&str] = &[
    "log-file",
    "backup-volfile-servers",
    "backupvolfile-server",
    "volume-id",
    "volfile-server",
];

/// The validated `mount_flags` of a volume capability, one option per entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountFlags {
    options: Vec<String>,
}

impl MountFlags {
    /// Splits each flag on `,` and validates every option.
    pub fn parse(flags: &[String]) -> Result<Self, Error> {
        let mut options: Vec<String> = Vec::new();
        for flag in flags {
            for option in flag.split(',') {
                check_option(flag, option)?;
                if !options.iter().any(|o| o == option) {
                    options.push(option.to_owned());
                }
            }
        }
        Ok(Self { options })
    }

    /// The options, in order, without duplicates.
    pub fn options(&self) -> &[String] {
        &self.options
    }

    /// Whether an option `key` or `key=…` is present.
    pub fn has_key(&self, key: &str) -> bool {
        self.options
            .iter()
            .any(|o| o.split_once('=').map_or(o.as_str(), |(k, _)| k) == key)
    }

    /// Per-mount flags among the options, applied to bind mounts in the remount pass (the FUSE
    /// options only matter to the staging mount).
    pub fn bind_flags(&self) -> MsFlags {
        let mut flags = MsFlags::empty();
        for o in &self.options {
            flags |= match o.as_str() {
                "ro" => MsFlags::MS_RDONLY,
                "nosuid" => MsFlags::MS_NOSUID,
                "nodev" => MsFlags::MS_NODEV,
                "noexec" => MsFlags::MS_NOEXEC,
                "noatime" => MsFlags::MS_NOATIME,
                "nodiratime" => MsFlags::MS_NODIRATIME,
                "relatime" => MsFlags::MS_RELATIME,
                "strictatime" => MsFlags::MS_STRICTATIME,
                _ => MsFlags::empty(),
            };
        }
        flags
    }
}

fn check_option(flag: &str, option: &str) -> Result<(), Error> {
    let bad = |why: String| {
        Err(Error::InvalidArgument(format!(
            "mount flag {flag:?}: {why}"
        )))
    };
    if option.is_empty() {
        return bad("empty option (stray ',')".into());
    }
    if option.len() > MAX_OPTION {
        return bad(format!("option longer than {MAX_OPTION} bytes"));
    }
    if option.starts_with('-') || option.starts_with('=') {
        return bad(format!(
            "option {option:?} must start with a letter or digit"
        ));
    }
    if let Some(b) = option
        .bytes()
        .find(|b| !(crate::paths::is_shell_inert(*b) || *b == b'*'))
    {
        return bad(format!(
            "option {option:?} contains {:?}; only letters, digits and / . _ - ~ + @ : = % * \
             are allowed",
            char::from(b)
        ));
    }
    let key = option.split_once('=').map_or(option, |(k, _)| k);
    if RESERVED.contains(&key) {
        return bad(format!(
            "{key} is set by the plugin (servers come from the volume context, the log file is \
             the plugin's)"
        ));
    }
    Ok(())
}

/// The option list of the staging mount of `ctx`, logging to `log_file`.
pub fn stage_options(
    ctx: &VolumeContext,
    flags: &MountFlags,
    log_file: &Path,
    auto_unmount: bool,
) -> Vec<String> {
    let mut options = Vec::new();
    if !ctx.backups().is_empty() {
        options.push(format!(
            "backup-volfile-servers={}",
            ctx.backups().join(":")
        ));
    }
    options.push(format!("log-file={}", log_file.display()));
    if !flags.has_key("log-level") {
        options.push("log-level=ERROR".to_owned());
    }
    if auto_unmount && !flags.has_key("auto_unmount") {
        options.push("auto_unmount".to_owned());
    }
    options.extend(flags.options().iter().cloned());
    options
}

/// Path of the client log of Gluster volume `volume` under the plugin's state directory.
pub fn log_file(state_dir: &Path, volume: &str) -> std::path::PathBuf {
    state_dir.join("logs").join(format!("{volume}.log"))
}

/// Arguments of `mount` for a GlusterFS mount: `-t glusterfs [-o OPTIONS] SOURCE TARGET`.
pub fn mount_args(source: &str, target: &Path, options: &[String]) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["-t".into(), "glusterfs".into()];
    if !options.is_empty() {
        args.push("-o".into());
        args.push(options.join(",").into());
    }
    args.push(source.into());
    args.push(target.as_os_str().to_owned());
    args
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::context::{SERVERS_KEY, VOLUME_KEY};

    fn ctx(servers: &str) -> VolumeContext {
        let map: HashMap<String, String> = [
            (SERVERS_KEY.to_owned(), servers.to_owned()),
            (VOLUME_KEY.to_owned(), "vol1".to_owned()),
        ]
        .into();
        VolumeContext::from_map(&map).expect("valid context")
    }

    fn flags(f: &[&str]) -> Result<MountFlags, Error> {
        MountFlags::parse(&f.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn stage_options_table() {
        let log = Path::new("/var/lib/gluster-csi/logs/vol1.log");
        let cases: &[(&str, &[&str], bool, &[&str])] = &[
            (
                "g1,g2,g3",
                &[],
                true,
                &[
                    "backup-volfile-servers=g2:g3",
                    "log-file=/var/lib/gluster-csi/logs/vol1.log",
                    "log-level=ERROR",
                    "auto_unmount",
                ],
            ),
            (
                "g1",
                &["log-level=DEBUG", "acl"],
                false,
                &[
                    "log-file=/var/lib/gluster-csi/logs/vol1.log",
                    "log-level=DEBUG",
                    "acl",
                ],
            ),
            (
                "g1,g1,g2",
                &["ro,noatime", "auto_unmount"],
                true,
                &[
                    "backup-volfile-servers=g2",
                    "log-file=/var/lib/gluster-csi/logs/vol1.log",
                    "log-level=ERROR",
                    "ro",
                    "noatime",
                    "auto_unmount",
                ],
            ),
        ];
        for (servers, f, auto, want) in cases {
            let c = ctx(servers);
            let got = stage_options(&c, &flags(f).expect("valid flags"), log, *auto);
            assert_eq!(got, *want, "{servers} {f:?}");
            let backups = got
                .iter()
                .find_map(|o| o.strip_prefix("backup-volfile-servers="));
            if let Some(b) = backups {
                assert!(
                    !b.split(':').any(|s| s == c.primary()),
                    "primary {} among backups {b}",
                    c.primary()
                );
            }
        }
    }

    #[test]
    fn bad_flags_are_refused_with_the_flag_named() {
        for bad in [
            "ro,",
            ",ro",
            "ro,,acl",
            "log-file=/etc/shadow",
            "ro,log-file=/etc/shadow",
            "backup-volfile-servers=evil",
            "log-level=ERROR;reboot",
            "a b",
            "x=$(id)",
            "x=`id`",
            "x=\"q\"",
            "-o",
            "=x",
            "a|b",
            "a>b",
            "a\nb",
        ] {
            match flags(&["acl", bad]) {
                Err(Error::InvalidArgument(msg)) => {
                    assert!(msg.contains("mount flag"), "{bad}: {msg}")
                }
                other => panic!("{bad:?}: expected InvalidArgument, got {other:?}"),
            }
        }
    }

    #[test]
    fn good_flags_and_bind_flags() {
        let f = flags(&[
            "ro",
            "noexec,nosuid",
            "xlator-option=*replicate*.data-self-heal=off",
            "attribute-timeout=600",
            "ro",
        ])
        .expect("valid");
        assert_eq!(
            f.options(),
            [
                "ro",
                "noexec",
                "nosuid",
                "xlator-option=*replicate*.data-self-heal=off",
                "attribute-timeout=600"
            ]
        );
        assert!(f.has_key("xlator-option"));
        assert!(!f.has_key("log-level"));
        assert_eq!(
            f.bind_flags(),
            MsFlags::MS_RDONLY | MsFlags::MS_NOEXEC | MsFlags::MS_NOSUID
        );
        assert_eq!(MountFlags::default().bind_flags(), MsFlags::empty());
    }

    #[test]
    fn log_file_is_per_volume_under_the_state_dir() {
        assert_eq!(
            log_file(Path::new("/var/lib/gluster-csi"), "vol_1"),
            Path::new("/var/lib/gluster-csi/logs/vol_1.log")
        );
    }
}
