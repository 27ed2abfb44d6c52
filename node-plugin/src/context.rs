//! The `volume_context` contract between the controller (or an administrator writing a static
//! PV) and the node plugin.
//!
//! | key | required | meaning |
//! |---|---|---|
//! | [`SERVERS_KEY`] `glusterServers` | yes | comma-separated Gluster server host names or IPv4 addresses; the first is the primary volfile server, the others become `backup-volfile-servers` |
//! | [`VOLUME_KEY`] `glusterVolume` | yes | the Gluster volume name |
//!
//! Other keys are ignored (the controller may add informational ones). Mount options are not
//! part of the context: they come from the volume capability's `mount_flags` (the StorageClass or
//! PV `mountOptions`).
//!
//! A static PV for an existing Gluster volume `data` served by three hosts:
//!
//! ```yaml
//! csi:
//!   driver: gluster.heketi.csi
//!   volumeHandle: static-data        # any id unique in the cluster
//!   volumeAttributes:
//!     glusterServers: "10.0.0.11,10.0.0.12,10.0.0.13"
//!     glusterVolume: data
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use crate::error::Error;

/// Key of the comma-separated server list.
pub const SERVERS_KEY: &str = "glusterServers";
/// Key of the Gluster volume name.
pub const VOLUME_KEY: &str = "glusterVolume";

/// Most servers accepted in [`SERVERS_KEY`].
const MAX_SERVERS: usize = 64;
/// Longest Gluster volume name accepted.
const MAX_VOLUME_NAME: usize = 128;

/// A parsed, validated `volume_context`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeContext {
    /// Servers in order; never empty, no duplicates; the first is the primary.
    pub servers: Vec<String>,
    /// Gluster volume name.
    pub volume: String,
}

impl VolumeContext {
    /// Parses and validates the context of a NodeStage/NodePublish request.
    pub fn from_map(map: &HashMap<String, String>) -> Result<Self, Error> {
        let servers_raw = required(map, SERVERS_KEY)?;
        let mut servers: Vec<String> = Vec::new();
        for item in servers_raw.split(',') {
            let host = item.trim();
            if host.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "volume_context {SERVERS_KEY} {servers_raw:?} has an empty entry"
                )));
            }
            check_host(host)?;
            if !servers.iter().any(|s| s.eq_ignore_ascii_case(host)) {
                servers.push(host.to_owned());
            }
        }
        if servers.len() > MAX_SERVERS {
            return Err(Error::InvalidArgument(format!(
                "volume_context {SERVERS_KEY} lists more than {MAX_SERVERS} servers"
            )));
        }
        let volume = required(map, VOLUME_KEY)?.trim().to_owned();
        check_volume(&volume)?;
        Ok(Self { servers, volume })
    }

    /// The primary volfile server.
    pub fn primary(&self) -> &str {
        // `from_map` never builds an empty list; the fallback keeps this total.
        self.servers.first().map(String::as_str).unwrap_or_default()
    }

    /// The other servers, for `backup-volfile-servers` (never the primary).
    pub fn backups(&self) -> &[String] {
        self.servers.get(1..).unwrap_or_default()
    }

    /// The mount source, `primary:/volume`.
    pub fn source(&self) -> String {
        format!("{}:/{}", self.primary(), self.volume)
    }
}

fn required<'a>(map: &'a HashMap<String, String>, key: &str) -> Result<&'a str, Error> {
    match map.get(key).map(String::as_str) {
        Some(v) if !v.trim().is_empty() => Ok(v),
        Some(_) => Err(Error::InvalidArgument(format!(
            "volume_context {key} is empty"
        ))),
        None => Err(Error::InvalidArgument(format!(
            "volume_context {key} is missing (needed: {SERVERS_KEY}, {VOLUME_KEY})"
        ))),
    }
}

/// A server is a DNS host name or an IPv4 address. IPv6 literals are refused: the
/// `backup-volfile-servers` option separates servers with ':'.
fn check_host(host: &str) -> Result<(), Error> {
    let bad = |why: &str| {
        Err(Error::InvalidArgument(format!(
            "volume_context {SERVERS_KEY} entry {host:?} {why}"
        )))
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return match ip {
            IpAddr::V4(v4) if v4 == Ipv4Addr::UNSPECIFIED => bad("is not a usable address"),
            IpAddr::V4(_) => Ok(()),
            IpAddr::V6(_) => bad(
                "is an IPv6 address, which backup-volfile-servers cannot carry; use a host name",
            ),
        };
    }
    if host.len() > 253 {
        return bad("is longer than 253 characters");
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if !host.split('.').all(label_ok) {
        return bad("is not a host name or IPv4 address");
    }
    Ok(())
}

/// Gluster volume names are letters, digits, `-` and `_` (and we allow `.`), not starting with
/// `-`.
fn check_volume(volume: &str) -> Result<(), Error> {
    let ok = !volume.is_empty()
        && volume.len() <= MAX_VOLUME_NAME
        && !volume.starts_with(['-', '.'])
        && volume
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "volume_context {VOLUME_KEY} {volume:?} is not a Gluster volume name (1 to \
             {MAX_VOLUME_NAME} letters, digits, '-', '_' or '.', not starting with '-' or '.')"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(pairs: &[(&str, &str)]) -> Result<VolumeContext, Error> {
        let map = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        VolumeContext::from_map(&map)
    }

    #[test]
    fn valid_contexts() {
        let c = ctx(&[
            (SERVERS_KEY, "10.0.0.11, 10.0.0.12,gluster-3.example.com"),
            (VOLUME_KEY, "vol_0123abcd"),
            ("somethingElse", "ignored"),
        ])
        .expect("valid");
        assert_eq!(c.primary(), "10.0.0.11");
        assert_eq!(c.backups(), ["10.0.0.12", "gluster-3.example.com"]);
        assert_eq!(c.source(), "10.0.0.11:/vol_0123abcd");

        let single = ctx(&[(SERVERS_KEY, "g1"), (VOLUME_KEY, "data")]).expect("valid");
        assert!(single.backups().is_empty());

        // A repeated primary is dropped, so it can never become a backup server.
        let dup = ctx(&[(SERVERS_KEY, "g1,G1,g2,g1"), (VOLUME_KEY, "data")]).expect("valid");
        assert_eq!(dup.servers, ["g1", "g2"]);
    }

    #[test]
    fn invalid_contexts_name_the_key() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[(VOLUME_KEY, "v")], SERVERS_KEY),
            (&[(SERVERS_KEY, "g1")], VOLUME_KEY),
            (&[(SERVERS_KEY, " "), (VOLUME_KEY, "v")], SERVERS_KEY),
            (&[(SERVERS_KEY, "g1"), (VOLUME_KEY, "")], VOLUME_KEY),
            (&[(SERVERS_KEY, "g1,,g2"), (VOLUME_KEY, "v")], SERVERS_KEY),
            (
                &[(SERVERS_KEY, "g1;reboot"), (VOLUME_KEY, "v")],
                SERVERS_KEY,
            ),
            (&[(SERVERS_KEY, "g1 g2"), (VOLUME_KEY, "v")], SERVERS_KEY),
            (&[(SERVERS_KEY, "$(id)"), (VOLUME_KEY, "v")], SERVERS_KEY),
            (&[(SERVERS_KEY, "fe80::1"), (VOLUME_KEY, "v")], SERVERS_KEY),
            (&[(SERVERS_KEY, "0.0.0.0"), (VOLUME_KEY, "v")], SERVERS_KEY),
            (&[(SERVERS_KEY, "-g1"), (VOLUME_KEY, "v")], SERVERS_KEY),
            (&[(SERVERS_KEY, "g1:24007"), (VOLUME_KEY, "v")], SERVERS_KEY),
            (&[(SERVERS_KEY, "g1"), (VOLUME_KEY, "a/b")], VOLUME_KEY),
            (
                &[(SERVERS_KEY, "g1"), (VOLUME_KEY, "v,log-file=/etc/x")],
                VOLUME_KEY,
            ),
            (&[(SERVERS_KEY, "g1"), (VOLUME_KEY, "-v")], VOLUME_KEY),
            (&[(SERVERS_KEY, "g1"), (VOLUME_KEY, "..")], VOLUME_KEY),
        ];
        for (pairs, key) in cases {
            match ctx(pairs) {
                Err(Error::InvalidArgument(msg)) => assert!(msg.contains(key), "{pairs:?}: {msg}"),
                other => panic!("{pairs:?}: expected InvalidArgument, got {other:?}"),
            }
        }
    }
}
