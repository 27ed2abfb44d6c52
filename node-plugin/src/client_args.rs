//! The command line of the GlusterFS FUSE client (`glusterfs`) for a staging mount.
//!
//! `mount -t glusterfs` runs the `mount.glusterfs` shell script, which turns the mount options
//! into `glusterfs` flags and starts the client; with `--fuse-launcher direct` the plugin
//! starts the client itself with the same flags, saving the script's few dozen processes
//! (`sed`, `awk`, `cut`, `stat`, … ~45 ms of CPU per mount). The translation follows the
//! script of GlusterFS 10 option by option, with three differences, all on purpose:
//! - an option the script does not know, or `log-level` with an unknown level, is refused with
//!   INVALID_ARGUMENT before anything runs (the script fails the mount, or falls back to INFO);
//! - `--fuse-mountopts` appears once (the script repeats it);
//! - `xlator-option` may be given several times; each is passed on (the script keeps the last).
//!
//! The mount agent and `--fuse-launcher systemd` still run `mount -t glusterfs`: the agent only
//! accepts that command, and systemd scopes are named after it.

use std::ffi::OsString;
use std::path::Path;

use crate::error::Error;

/// Flags taking the option's value under the same name.
const SAME_NAME: &[&str] = &[
    "direct-io-mode",
    "volume-name",
    "attribute-timeout",
    "entry-timeout",
    "negative-timeout",
    "gid-timeout",
    "lru-limit",
    "invalidate-limit",
    "background-qlen",
    "congestion-threshold",
    "oom-score-adj",
    "use-readdirp",
    "event-history",
    "reader-thread-count",
    "auto-invalidation",
    "kernel-writeback-cache",
    "attr-times-granularity",
    "dump-fuse",
    "fuse-flush-handle-interrupt",
    "fuse-dev-eperm-ratelimit-ns",
    "io-engine",
    "log-file",
];

/// Options without a value that become the flag of the same name.
const SAME_NAME_SWITCHES: &[&str] = &[
    "acl",
    "selinux",
    "worm",
    "enable-ino32",
    "mem-accounting",
    "aux-gfid-mount",
    "thin-client",
    "resolve-gids",
    "global-threading",
    "localtime-logging",
];

/// Options the kernel takes (passed in `--fuse-mountopts`).
const KERNEL: &[&str] = &[
    "atime",
    "noatime",
    "diratime",
    "nodiratime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "lazyatime",
    "nolazyatime",
    "dev",
    "nodev",
    "exec",
    "noexec",
    "suid",
    "nosuid",
    "auto_unmount",
];

/// Options that mean nothing to a FUSE client (or only to `mount` and boot scripts).
const IGNORED: &[&str] = &[
    "rw",
    "auto",
    "noauto",
    "_netdev",
    "async",
    "sync",
    "dirsync",
    "mand",
    "nomand",
    "silent",
    "loud",
    "iversion",
    "noiversion",
    "nofail",
];

const LOG_LEVELS: &[&str] = &[
    "ERROR", "INFO", "DEBUG", "CRITICAL", "WARNING", "TRACE", "NONE",
];

/// `glusterfs` arguments mounting `source` (`server:/volume`) at `target` with the staging
/// mount's `options` (validated mount flags plus the plugin's own: `backup-volfile-servers`,
/// `log-file`, `log-level`, `auto_unmount`).
pub fn glusterfs_args(
    source: &str,
    target: &Path,
    options: &[String],
) -> Result<Vec<OsString>, Error> {
    let Some((server, volume)) = source.split_once(':') else {
        return Err(Error::InvalidArgument(format!(
            "mount source {source:?} is not SERVER:/VOLUME"
        )));
    };
    let refuse = |option: &str, why: &str| {
        Err(Error::InvalidArgument(format!(
            "mount flag {option:?}: {why}"
        )))
    };
    let mut flags: Vec<String> = Vec::new();
    let mut kernel: Vec<String> = Vec::new();
    let mut backups: Vec<&str> = Vec::new();
    let mut transport: Option<&str> = None;
    let mut port: Option<&str> = None;
    let mut subdir: Option<&str> = None;
    let mut process_name = "fuse".to_owned();
    for option in options {
        let option = option.as_str();
        if option.starts_with("x-") {
            continue;
        }
        match option.split_once('=') {
            None if option == "ro" => flags.push("--read-only".into()),
            None if SAME_NAME_SWITCHES.contains(&option) => flags.push(format!("--{option}")),
            None if KERNEL.contains(&option) => kernel.push(option.to_owned()),
            None if option == "fopen-keep-cache" => flags.push("--fopen-keep-cache=true".into()),
            None if IGNORED.contains(&option) => {
                if !matches!(option, "rw" | "auto" | "noauto" | "_netdev") {
                    tracing::warn!(option, "mount option has no effect on a GlusterFS mount");
                }
            }
            None => {
                return refuse(
                    option,
                    "not an option of GlusterFS mounts (see mount.glusterfs(8))",
                );
            }
            Some((key, value)) => match key {
                _ if SAME_NAME.contains(&key) => flags.push(format!("--{key}={value}")),
                "log-level" => {
                    let level = value.to_ascii_uppercase();
                    if !LOG_LEVELS.contains(&level.as_str()) {
                        return refuse(
                            option,
                            "log-level must be one of ERROR, WARNING, INFO, DEBUG, TRACE, \
                             CRITICAL, NONE",
                        );
                    }
                    flags.push(format!("--log-level={level}"));
                }
                "backup-volfile-servers" => {
                    backups.extend(value.split(':').filter(|s| !s.is_empty()))
                }
                "transport" => transport = Some(value),
                "server-port" => port = Some(value),
                "subdir-mount" => subdir = Some(value),
                "volfile-check" => flags.push("--volfile-check".into()),
                "fetch-attempts" => flags.push(format!("--volfile-max-fetch-attempts={value}")),
                "xlator-option" => flags.push(format!("--xlator-option={value}")),
                "fuse-mountopts" => kernel.push(value.to_owned()),
                "no-root-squash" if matches!(value, "yes" | "on" | "enable" | "true") => {
                    flags.push("--no-root-squash".into())
                }
                "root-squash" if matches!(value, "no" | "off" | "disable" | "false") => {
                    flags.push("--no-root-squash".into())
                }
                "no-root-squash" | "root-squash" => {}
                "context" | "fscontext" | "defcontext" | "rootcontext" => {
                    kernel.push(format!("{key}=\"{value}\""))
                }
                "halo-max-latency" | "halo-max-replicas" | "halo-min-replicas" => {
                    flags.push("--xlator-option".into());
                    flags.push(format!("*replicate*.{key}={value}"));
                }
                "process-name" => process_name = format!("fuse.{value}"),
                "fopen-keep-cache" => flags.push(format!("--fopen-keep-cache={value}")),
                _ => {
                    return refuse(
                        option,
                        "not an option of GlusterFS mounts (see mount.glusterfs(8))",
                    );
                }
            },
        }
    }
    let mut volume_id = volume.to_owned();
    let mut args: Vec<OsString> = flags.into_iter().map(OsString::from).collect();
    args.push("--process-name".into());
    args.push(process_name.into());
    args.push(format!("--volfile-server={server}").into());
    for b in backups.iter().filter(|b| **b != server) {
        args.push(format!("--volfile-server={b}").into());
    }
    if let Some(p) = port {
        args.push(format!("--volfile-server-port={p}").into());
    }
    if let Some(t) = transport {
        volume_id = format!("{volume_id}.{t}");
        args.push(format!("--volfile-server-transport={t}").into());
    }
    args.push(format!("--volfile-id={volume_id}").into());
    if !kernel.is_empty() {
        args.push(format!("--fuse-mountopts={}", kernel.join(",")).into());
    }
    if let Some(s) = subdir {
        args.push(format!("--subdir-mount=/{s}").into());
    }
    args.push(target.as_os_str().to_owned());
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(source: &str, options: &[&str]) -> Result<Vec<String>, Error> {
        let options: Vec<String> = options.iter().map(|o| (*o).to_owned()).collect();
        glusterfs_args(source, Path::new("/m"), &options).map(|a| {
            a.into_iter()
                .map(|s| s.into_string().expect("utf8"))
                .collect()
        })
    }

    #[test]
    fn the_staging_mount_of_the_plugin() {
        let got = args(
            "g1:/vol_1",
            &[
                "backup-volfile-servers=g2:g3",
                "log-file=/var/lib/gluster-csi/logs/vol_1.log",
                "log-level=ERROR",
                "auto_unmount",
            ],
        )
        .expect("valid");
        assert_eq!(
            got,
            [
                "--log-file=/var/lib/gluster-csi/logs/vol_1.log",
                "--log-level=ERROR",
                "--process-name",
                "fuse",
                "--volfile-server=g1",
                "--volfile-server=g2",
                "--volfile-server=g3",
                "--volfile-id=/vol_1",
                "--fuse-mountopts=auto_unmount",
                "/m",
            ]
        );
    }

    #[test]
    fn every_kind_of_option_becomes_its_flag() {
        let got = args(
            "g1:/v",
            &[
                "ro",
                "acl",
                "noatime",
                "nosuid",
                "rw",
                "_netdev",
                "x-systemd.automount",
                "log-level=debug",
                "attribute-timeout=600",
                "xlator-option=*replicate*.data-self-heal=off",
                "xlator-option=*dht*.lookup-optimize=on",
                "halo-max-replicas=2",
                "fetch-attempts=3",
                "root-squash=off",
                "fopen-keep-cache",
                "context=system_u:object_r:container_file_t:s0",
                "transport=tcp",
                "server-port=24007",
                "process-name=csi",
                "subdir-mount=dir",
            ],
        )
        .expect("valid");
        assert_eq!(
            got,
            [
                "--read-only",
                "--acl",
                "--log-level=DEBUG",
                "--attribute-timeout=600",
                "--xlator-option=*replicate*.data-self-heal=off",
                "--xlator-option=*dht*.lookup-optimize=on",
                "--xlator-option",
                "*replicate*.halo-max-replicas=2",
                "--volfile-max-fetch-attempts=3",
                "--no-root-squash",
                "--fopen-keep-cache=true",
                "--process-name",
                "fuse.csi",
                "--volfile-server=g1",
                "--volfile-server-port=24007",
                "--volfile-server-transport=tcp",
                "--volfile-id=/v.tcp",
                "--fuse-mountopts=noatime,nosuid,context=\"system_u:object_r:container_file_t:s0\"",
                "--subdir-mount=/dir",
                "/m",
            ]
        );
    }

    #[test]
    fn unknown_options_and_levels_are_refused_naming_them() {
        for bad in ["frobnicate", "frob=1", "log-level=loud"] {
            match args("g1:/v", &[bad]) {
                Err(Error::InvalidArgument(msg)) => assert!(msg.contains(bad), "{bad}: {msg}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(matches!(
            args("no-colon", &[]),
            Err(Error::InvalidArgument(_))
        ));
    }
}
