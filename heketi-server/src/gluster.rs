//! The gluster CLI of the trusted pool. With the local executor it runs on this machine through
//! a configurable argument-vector prefix (for example `ip netns exec ns1 gluster
//! --glusterd-sock=…`); with the SSH executor the same prefix (normally just `gluster`) runs on a
//! node of the pool, as Heketi does: the node that answered last, else the next one, so a node
//! that is down (unreachable, or its glusterd not answering) does not stop the server.
//! `--mode=script` is always appended. Every call has a timeout; arguments are passed as
//! arguments, never through a shell built from them.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use heketi_client::types::{DurabilityType, VolumeDurabilityInfo};

use crate::exec::{CommandError, Output};
use crate::executor::Executor;

/// What the gluster CLI prints when it cannot reach its glusterd (nothing was done).
const DAEMON_DOWN: &str = "Connection failed. Please check if gluster daemon is operational";

/// The nodes the CLI may run on (SSH executor), and which answered last.
#[derive(Debug, Default)]
struct Nodes {
    hosts: Vec<String>,
    last_good: Option<String>,
}

/// Handle on the gluster CLI of the trusted pool.
#[derive(Clone, Debug)]
pub struct Gluster {
    exec: Arc<Executor>,
    prefix: Vec<String>,
    timeout: Duration,
    nodes: Arc<Mutex<Nodes>>,
    avoid: Option<String>,
}

/// Run state of a Gluster volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VolumeRunState {
    /// Created, never started.
    Created,
    /// Started.
    Started,
    /// Stopped.
    Stopped,
    /// Anything else Gluster prints.
    Other,
}

/// What `gluster volume info NAME` says about a volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeFacts {
    /// Name.
    pub name: String,
    /// Run state.
    pub state: VolumeRunState,
    /// Bricks as `host:path`, in order.
    pub bricks: Vec<String>,
}

/// A member of the trusted pool as `gluster pool list` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolPeer {
    /// Peer UUID.
    pub uuid: String,
    /// Address (`localhost` for the glusterd we talk to).
    pub hostname: String,
    /// `Connected` or `Disconnected`.
    pub connected: bool,
}

/// Whether `e` says that the command never ran because the node or its glusterd is down.
fn node_down(e: &CommandError) -> bool {
    match e {
        CommandError::Unreachable { .. } => true,
        CommandError::Failed { message, .. } => message.contains(DAEMON_DOWN),
        _ => false,
    }
}

impl Gluster {
    /// A handle running `prefix --mode=script …` through `exec` with `timeout` per call.
    pub fn new(exec: Arc<Executor>, prefix: Vec<String>, timeout: Duration) -> Self {
        Self {
            exec,
            prefix,
            timeout,
            nodes: Arc::default(),
            avoid: None,
        }
    }

    /// Sets the nodes (management host names) the CLI may run on with the SSH executor, in
    /// order of preference.
    pub fn set_nodes(&self, hosts: Vec<String>) {
        let mut n = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        n.hosts = hosts;
    }

    /// The same pool, but never running on `host` (for commands about that node itself, such
    /// as detaching it, which its own glusterd cannot do).
    pub fn excluding(&self, host: &str) -> Self {
        Self {
            avoid: Some(host.to_owned()),
            ..self.clone()
        }
    }

    /// The nodes to try, the one that answered last first.
    fn candidates(&self) -> Vec<String> {
        let n = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        let mut hosts: Vec<String> = n
            .hosts
            .iter()
            .filter(|h| self.avoid.as_deref() != Some(h.as_str()))
            .cloned()
            .collect();
        if let Some(pos) = n
            .last_good
            .as_ref()
            .and_then(|g| hosts.iter().position(|h| h == g))
        {
            hosts[..=pos].rotate_right(1);
        }
        hosts
    }

    /// Runs one gluster subcommand.
    pub async fn run(&self, args: &[&str]) -> Result<Output, CommandError> {
        let mut argv = self.prefix.clone();
        argv.push("--mode=script".to_owned());
        argv.extend(args.iter().map(|s| (*s).to_owned()));
        let label = format!("gluster {}", args.join(" "));
        if self.exec.is_local() {
            tracing::debug!(command = %label, "running gluster");
            return self
                .exec
                .run("localhost", &[argv], &label, self.timeout)
                .await;
        }
        let hosts = self.candidates();
        let mut tried: Vec<String> = Vec::new();
        let mut last: Option<CommandError> = None;
        for host in hosts {
            tracing::debug!(command = %label, node = %host, "running gluster");
            match self
                .exec
                .run(&host, std::slice::from_ref(&argv), &label, self.timeout)
                .await
            {
                // Nothing ran: the node or its glusterd is down; try the next node.
                Err(e) if node_down(&e) => {
                    tracing::warn!(node = %host, error = %e, "node cannot run the gluster CLI; trying another");
                    tried.push(host);
                    last = Some(e);
                }
                other => {
                    if other.is_ok() {
                        let mut n = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
                        n.last_good = Some(host);
                    }
                    return other;
                }
            }
        }
        Err(match last {
            Some(e) if tried.len() == 1 => e,
            Some(e) => CommandError::Unreachable {
                host: tried.join(", "),
                message: format!("no node of the pool can run the gluster CLI; last: {e}"),
            },
            None => CommandError::Unreachable {
                host: "(none)".into(),
                message: "no node is known to run the gluster CLI on: add a node first".into(),
            },
        })
    }

    /// Names of every volume of the pool.
    pub async fn volume_list(&self) -> Result<Vec<String>, CommandError> {
        let out = self.run(&["volume", "list"]).await?;
        Ok(parse_volume_list(&out.stdout))
    }

    /// Facts about volume `name`, `None` when the pool has no such volume.
    pub async fn volume_facts(&self, name: &str) -> Result<Option<VolumeFacts>, CommandError> {
        if !self.volume_list().await?.iter().any(|v| v == name) {
            return Ok(None);
        }
        let out = self.run(&["volume", "info", name]).await?;
        Ok(parse_volume_info(&out.stdout)
            .into_iter()
            .find(|v| v.name == name))
    }

    /// `gluster volume create NAME <layout> BRICK… force`.
    pub async fn volume_create(
        &self,
        name: &str,
        durability: &VolumeDurabilityInfo,
        bricks: &[String],
    ) -> Result<(), CommandError> {
        let layout = layout_args(durability);
        let mut args: Vec<&str> = vec!["volume", "create", name];
        args.extend(layout.iter().map(String::as_str));
        args.extend(bricks.iter().map(String::as_str));
        args.push("force");
        self.run(&args).await.map(drop)
    }

    /// `gluster volume start NAME`.
    pub async fn volume_start(&self, name: &str) -> Result<(), CommandError> {
        self.run(&["volume", "start", name]).await.map(drop)
    }

    /// `gluster volume stop NAME force`.
    pub async fn volume_stop(&self, name: &str) -> Result<(), CommandError> {
        self.run(&["volume", "stop", name, "force"]).await.map(drop)
    }

    /// `gluster volume delete NAME`.
    pub async fn volume_delete(&self, name: &str) -> Result<(), CommandError> {
        self.run(&["volume", "delete", name]).await.map(drop)
    }

    /// `gluster volume set NAME KEY VALUE`.
    pub async fn volume_set(&self, name: &str, key: &str, value: &str) -> Result<(), CommandError> {
        self.run(&["volume", "set", name, key, value])
            .await
            .map(drop)
    }

    /// `gluster volume quota NAME enable`.
    pub async fn quota_enable(&self, name: &str) -> Result<(), CommandError> {
        self.run(&["volume", "quota", name, "enable"])
            .await
            .map(drop)
    }

    /// `gluster volume quota NAME limit-usage / <GiB>GB` (Gluster's GB are GiB).
    pub async fn quota_limit(&self, name: &str, size_gib: u64) -> Result<(), CommandError> {
        let limit = format!("{size_gib}GB");
        self.run(&["volume", "quota", name, "limit-usage", "/", &limit])
            .await
            .map(drop)
    }

    /// `gluster peer probe HOST` (succeeds too when HOST is already a member or is the local
    /// glusterd).
    pub async fn peer_probe(&self, host: &str) -> Result<(), CommandError> {
        self.run(&["peer", "probe", host]).await.map(drop)
    }

    /// `gluster peer detach HOST`.
    pub async fn peer_detach(&self, host: &str) -> Result<(), CommandError> {
        self.run(&["peer", "detach", host]).await.map(drop)
    }

    /// `gluster pool list`.
    pub async fn pool_list(&self) -> Result<Vec<PoolPeer>, CommandError> {
        let out = self.run(&["pool", "list"]).await?;
        Ok(parse_pool_list(&out.stdout))
    }
}

/// The layout words of `volume create` for a durability.
pub fn layout_args(d: &VolumeDurabilityInfo) -> Vec<String> {
    match d.kind {
        DurabilityType::Replicate if d.replicate.replica > 1 => {
            vec!["replica".into(), d.replicate.replica.to_string()]
        }
        DurabilityType::Disperse => vec![
            "disperse".into(),
            (d.disperse.data + d.disperse.redundancy).to_string(),
            "redundancy".into(),
            d.disperse.redundancy.to_string(),
        ],
        _ => Vec::new(),
    }
}

/// Parses `gluster volume list` (one name a line; a sentence when there are none).
pub fn parse_volume_list(out: &str) -> Vec<String> {
    out.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains(' '))
        .map(str::to_owned)
        .collect()
}

/// Parses plain `gluster volume info` output (one or more volumes).
pub fn parse_volume_info(out: &str) -> Vec<VolumeFacts> {
    let mut vols: Vec<VolumeFacts> = Vec::new();
    for line in out.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if key == "Volume Name" {
            vols.push(VolumeFacts {
                name: value.to_owned(),
                state: VolumeRunState::Other,
                bricks: Vec::new(),
            });
            continue;
        }
        let Some(cur) = vols.last_mut() else { continue };
        if key == "Status" {
            cur.state = match value {
                "Created" => VolumeRunState::Created,
                "Started" => VolumeRunState::Started,
                "Stopped" => VolumeRunState::Stopped,
                _ => VolumeRunState::Other,
            };
        } else if key
            .strip_prefix("Brick")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            // "Brick1: host:/path" — keep everything after the first colon.
            cur.bricks.push(value.to_owned());
        }
    }
    vols
}

/// Parses `gluster pool list` (a header line, then `UUID  Hostname  State`).
pub fn parse_pool_list(out: &str) -> Vec<PoolPeer> {
    out.lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (uuid, hostname, state) = (f.next()?, f.next()?, f.next()?);
            Some(PoolPeer {
                uuid: uuid.to_owned(),
                hostname: hostname.to_owned(),
                connected: state == "Connected",
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = " \nVolume Name: vol_a\nType: Replicate\nVolume ID: 5a06\nStatus: Started\n\
        Snapshot Count: 0\nNumber of Bricks: 1 x 3 = 3\nTransport-type: tcp\nBricks:\n\
        Brick1: 10.0.0.1:/d/1/brick_x/brick\nBrick2: 10.0.0.2:/d/2/brick_y/brick\n\
        Brick3: 10.0.0.3:/d/3/brick_z/brick\nOptions Reconfigured:\nfeatures.quota: on\n \n\
        Volume Name: vol_b\nType: Disperse\nStatus: Created\nBricks:\nBrick1: 10.0.0.1:/e/brick\n";

    #[test]
    fn volume_info_is_parsed() {
        let v = parse_volume_info(INFO);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].name, "vol_a");
        assert_eq!(v[0].state, VolumeRunState::Started);
        assert_eq!(
            v[0].bricks,
            [
                "10.0.0.1:/d/1/brick_x/brick",
                "10.0.0.2:/d/2/brick_y/brick",
                "10.0.0.3:/d/3/brick_z/brick"
            ]
        );
        assert_eq!(v[1].state, VolumeRunState::Created);
        assert_eq!(v[1].bricks, ["10.0.0.1:/e/brick"]);
    }

    #[test]
    fn volume_list_is_parsed() {
        assert!(parse_volume_list("No volumes present in cluster\n").is_empty());
        assert_eq!(parse_volume_list("a\nvol_b\n"), ["a", "vol_b"]);
    }

    #[test]
    fn pool_list_is_parsed() {
        let out = "UUID\t\t\t\t\tHostname    \tState\n\
            6a08\t198.19.77.12\tConnected \n3142\t198.19.77.13\tDisconnected \nd641\tlocalhost   \tConnected \n";
        let p = parse_pool_list(out);
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].hostname, "198.19.77.12");
        assert!(p[0].connected);
        assert!(!p[1].connected);
        assert_eq!(p[2].hostname, "localhost");
    }

    #[test]
    fn layouts() {
        assert_eq!(
            layout_args(&VolumeDurabilityInfo::replicate(3)),
            ["replica", "3"]
        );
        assert!(layout_args(&VolumeDurabilityInfo::replicate(1)).is_empty());
        assert_eq!(
            layout_args(&VolumeDurabilityInfo::disperse(4, 2)),
            ["disperse", "6", "redundancy", "2"]
        );
        assert!(layout_args(&VolumeDurabilityInfo::none()).is_empty());
    }
}
