//! The testbed network: a bridge in the root namespace, one network namespace per host joined to
//! it by a veth pair, addresses from a /24 of 198.18.0.0/15.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context, Result, bail};
use nix::fcntl::{Flock, FlockArg};

use crate::cmd::{self, SHORT};
use crate::journal::{Entry, Journal};
use crate::layout::{self, GlusterHost, Names};

/// Lock held while a testbed picks its subnet and puts the bridge address on it, so that two
/// testbeds starting at once cannot pick the same free subnet.
const SUBNET_LOCK: &str = "/run/gluster-csi-testbed.subnet.lock";

async fn ip(args: &[&str]) -> Result<String> {
    let mut argv = vec!["ip"];
    argv.extend_from_slice(args);
    cmd::run(&argv, SHORT).await
}

/// The /24 prefixes (first three octets) of every IPv4 address on any link of the root namespace.
async fn used_prefixes() -> Result<HashSet<[u8; 3]>> {
    let out = ip(&["-o", "-4", "addr", "show"]).await?;
    Ok(parse_addr_prefixes(&out))
}

fn parse_addr_prefixes(out: &str) -> HashSet<[u8; 3]> {
    out.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "inet")?;
            let addr: Ipv4Addr = words.next()?.split('/').next()?.parse().ok()?;
            let o = addr.octets();
            Some([o[0], o[1], o[2]])
        })
        .collect()
}

/// Names of the links in the root namespace.
pub async fn links() -> Result<Vec<String>> {
    let out = ip(&["-o", "link", "show"]).await?;
    Ok(parse_link_names(&out))
}

fn parse_link_names(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| {
            let name = l.split(':').nth(1)?.trim();
            // A veth shows as `name@peer`.
            Some(name.split('@').next()?.to_string())
        })
        .filter(|n| !n.is_empty())
        .collect()
}

/// Names of the network namespaces.
pub async fn namespaces() -> Result<Vec<String>> {
    let out = ip(&["netns", "list"]).await?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect())
}

/// Creates the bridge on a free subnet (the one the state directory hashes to, or the next free
/// one) and returns the subnet's prefix.
pub async fn create_bridge(names: &Names, journal: &Journal) -> Result<[u8; 3]> {
    let lock_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(SUBNET_LOCK)
        .with_context(|| format!("cannot open {SUBNET_LOCK}"))?;
    let _lock = tokio::task::spawn_blocking(move || {
        Flock::lock(lock_file, FlockArg::LockExclusive).map_err(|(_, e)| e)
    })
    .await?
    .with_context(|| format!("cannot lock {SUBNET_LOCK}"))?;

    let used = used_prefixes().await?;
    let first = layout::preferred_subnet(&names.id);
    let prefix = (0..layout::SUBNETS)
        .map(|k| layout::subnet_prefix(first + k))
        .find(|p| !used.contains(p))
        .context("every /24 of 198.18.0.0/15 is already in use")?;

    let bridge = names.bridge();
    journal.record(&Entry::Link {
        name: bridge.clone(),
    })?;
    ip(&["link", "add", &bridge, "type", "bridge"]).await?;
    let addr = format!("{}.{}.{}.1/24", prefix[0], prefix[1], prefix[2]);
    ip(&["addr", "add", &addr, "dev", &bridge]).await?;
    ip(&["link", "set", &bridge, "up"]).await?;
    Ok(prefix)
}

/// The bridge's own address for a subnet prefix.
pub fn bridge_address(prefix: [u8; 3]) -> Ipv4Addr {
    Ipv4Addr::new(prefix[0], prefix[1], prefix[2], 1)
}

/// Creates `host`'s namespace and joins it to the bridge.
pub async fn create_host(names: &Names, host: &GlusterHost, journal: &Journal) -> Result<()> {
    let ns = host.netns.as_str();
    journal.record(&Entry::Netns { name: ns.into() })?;
    ip(&["netns", "add", ns]).await?;
    journal.record(&Entry::EtcNetns { name: ns.into() })?;
    write_etc_netns(ns)?;
    journal.record(&Entry::Link {
        name: host.veth.clone(),
    })?;
    ip(&[
        "link", "add", &host.veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
    ])
    .await?;
    ip(&["link", "set", &host.veth, "master", &names.bridge(), "up"]).await?;
    let addr = format!("{}/24", host.address);
    ip(&["-n", ns, "addr", "add", &addr, "dev", "eth0"]).await?;
    ip(&["-n", ns, "link", "set", "eth0", "up"]).await?;
    ip(&["-n", ns, "link", "set", "lo", "up"]).await?;
    let o = host.address.octets();
    let gw = bridge_address([o[0], o[1], o[2]]).to_string();
    ip(&["-n", ns, "route", "add", "default", "via", &gw]).await?;
    Ok(())
}

/// Directory whose files `ip netns exec` bind-mounts over `/etc` inside a namespace.
const ETC_NETNS: &str = "/etc/netns";

/// Gives namespace `ns` its own `resolv.conf` and `hosts`. The namespaces reach no DNS server,
/// and glusterd looks up the names of peer addresses: with the machine's resolver every lookup
/// waits out the resolver's timeout (10 s each, minutes for a pool); with a loopback resolver
/// that refuses at once it fails immediately and glusterd goes on with the addresses.
fn write_etc_netns(ns: &str) -> Result<()> {
    let dir = Path::new(ETC_NETNS).join(ns);
    let mut last = None;
    // Another testbed's `down` may remove an empty /etc/netns between our mkdir and write.
    for _ in 0..5 {
        let res = std::fs::create_dir_all(&dir)
            .and_then(|()| {
                std::fs::write(
                    dir.join("resolv.conf"),
                    "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
                )
            })
            .and_then(|()| {
                std::fs::write(dir.join("hosts"), "127.0.0.1 localhost\n::1 localhost\n")
            });
        match res {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or_else(|| anyhow::anyhow!("unknown error"), anyhow::Error::from))
        .with_context(|| format!("cannot write {}", dir.display()))
}

/// Removes `/etc/netns/NS` and, when that leaves it empty, `/etc/netns`.
pub fn remove_etc_netns(ns: &str) -> Result<()> {
    if ns.is_empty() || ns.contains('/') || ns.starts_with('.') {
        bail!("refusing to remove /etc/netns/{ns}");
    }
    let dir = Path::new(ETC_NETNS).join(ns);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", dir.display())),
    }
    // Fails harmlessly while other namespaces still have files there.
    let _ = std::fs::remove_dir(ETC_NETNS);
    Ok(())
}

/// Namespace names that have a directory in `/etc/netns`.
pub fn etc_netns_names() -> Vec<String> {
    std::fs::read_dir(ETC_NETNS)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Pids of the processes in network namespace `ns` (empty when it does not exist).
pub async fn namespace_pids(ns: &str) -> Vec<u32> {
    match cmd::output(&["ip", "netns", "pids", ns], SHORT).await {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect(),
        _ => Vec::new(),
    }
}

/// Deletes namespace `ns`; a missing namespace is fine.
pub async fn delete_namespace(ns: &str) -> Result<()> {
    if !namespaces().await?.iter().any(|n| n == ns) {
        return Ok(());
    }
    let out = cmd::output(&["ip", "netns", "del", ns], SHORT).await?;
    if !out.status.success() && namespaces().await?.iter().any(|n| n == ns) {
        bail!(
            "ip netns del {ns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Deletes link `name`; a missing link is fine.
pub async fn delete_link(name: &str) -> Result<()> {
    if !links().await?.iter().any(|l| l == name) {
        return Ok(());
    }
    let out = cmd::output(&["ip", "link", "del", name], SHORT).await?;
    if !out.status.success() && links().await?.iter().any(|l| l == name) {
        bail!(
            "ip link del {name}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_prefixes_are_read_from_ip_addr() {
        let out = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n\
                   2: eth0    inet 192.0.2.2/24 brd 192.0.2.255 scope global eth0\n\
                   9: gcb1    inet 198.18.4.1/24 scope global gcb1\n";
        let p = parse_addr_prefixes(out);
        assert!(p.contains(&[198, 18, 4]));
        assert!(p.contains(&[192, 0, 2]));
        assert_eq!(p.len(), 3);
    }

    #[test]
    fn link_names_drop_the_peer_suffix() {
        let out = "1: lo: <LOOPBACK,UP> mtu 65536\n\
                   7: gcv0011aabb-1@if2: <BROADCAST> mtu 1500\n";
        assert_eq!(parse_link_names(out), vec!["lo", "gcv0011aabb-1"]);
    }
}
