//! heketi-server in the testbed: keys, start, readiness, and the topology (one cluster, a node
//! and a device per Gluster host) loaded through its REST API the way an administrator would.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use heketi_client::types::{
    ClusterFlags, ClusterInfoResponse, DeviceAddRequest, HostAddresses, NodeAddRequest,
};
use reqwest::{Method, StatusCode, header};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::daemon;
use crate::env::write_private;
use crate::journal::Journal;
use crate::layout::GlusterHost;

/// Journal role of heketi-server.
pub const ROLE: &str = "heketi-server";
/// How long heketi-server may take to answer `/hello`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one asynchronous topology operation may take.
const OP_TIMEOUT: Duration = Duration::from_secs(120);
/// Timeout of one HTTP request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Where heketi-server keeps its files and how it is reached.
#[derive(Clone, Debug)]
pub struct HeketiLayout {
    /// Listening address (the bridge address of the root namespace).
    pub listen: SocketAddr,
    /// heketi-server's state directory.
    pub state_dir: PathBuf,
    /// File holding the admin key.
    pub admin_key_file: PathBuf,
    /// File holding the user key.
    pub user_key_file: PathBuf,
    /// Log of its stdout and stderr.
    pub log: PathBuf,
}

impl HeketiLayout {
    /// The layout under `testbed_dir`, listening on `addr:port`.
    pub fn new(testbed_dir: &Path, log_dir: &Path, addr: Ipv4Addr, port: u16) -> Self {
        Self {
            listen: SocketAddr::from((addr, port)),
            state_dir: testbed_dir.join("heketi"),
            admin_key_file: testbed_dir.join("heketi-admin.key"),
            user_key_file: testbed_dir.join("heketi-user.key"),
            log: log_dir.join("heketi-server.log"),
        }
    }

    /// Base URL, `http://ADDR:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.listen)
    }
}

/// A port on `addr` that nothing listens on right now.
pub fn free_port(addr: Ipv4Addr) -> Result<u16> {
    let l = std::net::TcpListener::bind((addr, 0))
        .with_context(|| format!("cannot find a free port on {addr}"))?;
    Ok(l.local_addr()?.port())
}

/// Generates the admin and user keys into their files (mode 0600); returns the admin key.
pub fn write_keys(layout: &HeketiLayout) -> Result<String> {
    let admin = hex::encode(rand::random::<[u8; 32]>());
    let user = hex::encode(rand::random::<[u8; 32]>());
    write_private(&layout.admin_key_file, admin.as_bytes())?;
    write_private(&layout.user_key_file, user.as_bytes())?;
    Ok(admin)
}

/// Starts heketi-server (`bin`) with auth on and host 1's gluster CLI as its `--gluster-cmd`.
pub fn start(
    bin: &Path,
    layout: &HeketiLayout,
    gluster_cmd: &[String],
    journal: &Journal,
) -> Result<Child> {
    std::fs::create_dir_all(&layout.state_dir)
        .with_context(|| format!("cannot create {}", layout.state_dir.display()))?;
    let mut argv: Vec<String> = vec![
        bin.display().to_string(),
        "--listen".into(),
        layout.listen.to_string(),
        "--state-dir".into(),
        layout.state_dir.display().to_string(),
        "--admin-key-file".into(),
        layout.admin_key_file.display().to_string(),
        "--user-key-file".into(),
        layout.user_key_file.display().to_string(),
    ];
    // One flag per element, so that no element is ever split on whitespace.
    argv.extend(gluster_cmd.iter().map(|a| format!("--gluster-cmd={a}")));
    daemon::spawn(ROLE, &argv, &layout.log, journal, false)
}

/// Waits until `GET /hello` answers 200; fails early when `exited` reports the process gone.
pub async fn wait_ready(layout: &HeketiLayout, exited: impl Fn() -> Option<String>) -> Result<()> {
    let http = http_client()?;
    let url = format!("{}/hello", layout.url());
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = exited() {
            bail!(
                "heketi-server exited ({status}); its log ends with:\n{}",
                daemon::tail(&layout.log, 20)
            );
        }
        if let Ok(r) = http.get(&url).send().await
            && r.status() == StatusCode::OK
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "heketi-server did not answer {url} within {START_TIMEOUT:?}; its log ends with:\n{}",
                daemon::tail(&layout.log, 20)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn http_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(HTTP_TIMEOUT)
        .build()
        .context("cannot build the HTTP client")
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: u64,
    exp: u64,
    qsh: String,
}

/// A Heketi JWT for one request: HS256, `qsh = hex(sha256("METHOD&path"))`.
fn token(user: &str, key: &str, method: &Method, path: &str) -> Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = Claims {
        iss: user,
        iat: now,
        exp: now + 300,
        qsh: hex::encode(Sha256::digest(format!("{method}&{path}"))),
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
    )
    .context("cannot sign a JWT")
}

/// A minimal admin client for loading the topology.
struct Admin {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Admin {
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<reqwest::Response> {
        let jwt = token("admin", &self.key, &method, path)?;
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .header(header::AUTHORIZATION, format!("bearer {jwt}"));
        if let Some(b) = body {
            req = req.json(b);
        }
        req.send()
            .await
            .with_context(|| format!("{method} {path} to heketi-server"))
    }

    /// Sends a request that Heketi answers with 202 + `Location: /queue/…`, and polls the queue
    /// until the operation ends; returns the result's `Location` (None for 204).
    async fn call_async(
        &self,
        method: Method,
        path: &str,
        body: &impl Serialize,
    ) -> Result<Option<String>> {
        let r = self.send(method.clone(), path, Some(body)).await?;
        let status = r.status();
        if status != StatusCode::ACCEPTED {
            let text = r.text().await.unwrap_or_default();
            bail!("{method} {path}: {status}: {}", text.trim());
        }
        let queue = location(&r)?;
        let deadline = Instant::now() + OP_TIMEOUT;
        loop {
            let r = self.send(Method::GET, &queue, None::<&()>).await?;
            match r.status() {
                StatusCode::OK if r.headers().contains_key("x-pending") => {}
                StatusCode::SEE_OTHER => return Ok(Some(location(&r)?)),
                StatusCode::NO_CONTENT => return Ok(None),
                StatusCode::OK => return Ok(None),
                s => {
                    let text = r.text().await.unwrap_or_default();
                    bail!("{method} {path}: operation failed: {s}: {}", text.trim());
                }
            }
            if Instant::now() >= deadline {
                bail!("{method} {path}: still pending after {OP_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn location(r: &reqwest::Response) -> Result<String> {
    let loc = r
        .headers()
        .get(header::LOCATION)
        .ok_or_else(|| anyhow!("reply {} has no Location header", r.status()))?
        .to_str()
        .context("Location header is not text")?;
    Ok(path_of(loc))
}

/// The path of a `Location`: Heketi sends a relative path; an absolute URL is accepted too.
fn path_of(loc: &str) -> String {
    match loc.find("://") {
        Some(i) => loc[i + 3..]
            .find('/')
            .map(|j| loc[i + 3 + j..].to_string())
            .unwrap_or_else(|| "/".into()),
        None => loc.to_string(),
    }
}

/// Loads the topology: one cluster, one node per host (manage and storage = its address, zone =
/// its number) and one device per node (its brick root). Returns the cluster id.
pub async fn load_topology(
    layout: &HeketiLayout,
    key: &str,
    hosts: &[GlusterHost],
) -> Result<String> {
    let admin = Admin {
        http: http_client()?,
        base: layout.url(),
        key: key.to_string(),
    };
    let flags = ClusterFlags {
        block: false,
        file: true,
    };
    let r = admin.send(Method::POST, "/clusters", Some(&flags)).await?;
    let status = r.status();
    if !status.is_success() {
        let text = r.text().await.unwrap_or_default();
        bail!("POST /clusters: {status}: {}", text.trim());
    }
    let cluster: ClusterInfoResponse = r.json().await.context("POST /clusters reply")?;

    for h in hosts {
        let addr = h.address.to_string();
        let node = NodeAddRequest {
            zone: i64::try_from(h.index + 1)?,
            hostnames: HostAddresses {
                manage: vec![addr.clone()],
                storage: vec![addr],
            },
            cluster_id: cluster.id.clone(),
            ..Default::default()
        };
        let loc = admin
            .call_async(Method::POST, "/nodes", &node)
            .await?
            .with_context(|| format!("adding node {} gave no node location", h.name))?;
        let node_id = loc
            .rsplit('/')
            .next()
            .filter(|id| !id.is_empty())
            .with_context(|| format!("node location {loc} has no id"))?
            .to_string();
        let device = DeviceAddRequest {
            name: h.brick_root.display().to_string(),
            node_id,
            ..Default::default()
        };
        admin
            .call_async(Method::POST, "/devices", &device)
            .await
            .with_context(|| format!("adding the device of {}", h.name))?;
    }
    Ok(cluster.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qsh_hashes_method_and_path() -> Result<()> {
        // sha256("GET&/clusters")
        let jwt = token("admin", "k", &Method::GET, "/clusters")?;
        let payload = jwt.split('.').nth(1).context("no payload")?;
        let claims: serde_json::Value = serde_json::from_slice(&base64url_decode(payload)?)?;
        assert_eq!(
            claims["qsh"],
            hex::encode(Sha256::digest(b"GET&/clusters")).as_str()
        );
        assert_eq!(claims["iss"], "admin");
        assert!(claims["exp"].as_u64() > claims["iat"].as_u64());
        Ok(())
    }

    fn base64url_decode(s: &str) -> Result<Vec<u8>> {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut bits = 0u32;
        let mut n = 0;
        let mut out = Vec::new();
        for c in s.bytes() {
            let v = ALPHABET
                .iter()
                .position(|a| *a == c)
                .context("not base64url")?;
            bits = (bits << 6) | u32::try_from(v)?;
            n += 6;
            if n >= 8 {
                n -= 8;
                out.push(u8::try_from((bits >> n) & 0xff)?);
            }
        }
        Ok(out)
    }

    #[test]
    fn locations_become_paths() {
        assert_eq!(path_of("/queue/ab12"), "/queue/ab12");
        assert_eq!(path_of("http://198.18.0.1:8080/nodes/abc"), "/nodes/abc");
        assert_eq!(path_of("http://198.18.0.1:8080"), "/");
    }
}
