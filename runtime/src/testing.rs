//! Helpers for tests that run a plugin binary as a child process and call it (feature
//! `test-support`).

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A plugin binary running as a child process; killed when dropped.
#[derive(Debug)]
pub struct PluginProcess {
    child: Option<Child>,
}

impl PluginProcess {
    /// Starts `binary` with `args`, stderr inherited so failures show in the test log.
    pub fn start(binary: &str, args: &[&str]) -> std::io::Result<Self> {
        Self::start_with_env(binary, args, &[])
    }

    /// [`Self::start`] with each `(NAME, Some(value))` of `env` set and each `(NAME, None)`
    /// removed in the child's environment.
    pub fn start_with_env(
        binary: &str,
        args: &[&str],
        env: &[(&str, Option<&str>)],
    ) -> std::io::Result<Self> {
        let mut command = Command::new(binary);
        for (name, value) in env {
            match value {
                Some(v) => command.env(name, v),
                None => command.env_remove(name),
            };
        }
        let child = command
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        Ok(Self { child: Some(child) })
    }

    /// Waits up to `timeout` for the socket file to appear; false when it never did or the
    /// process exited first.
    pub async fn wait_for_socket(&mut self, socket: &Path, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if socket.exists() {
                return true;
            }
            let exited = match self.child.as_mut() {
                Some(child) => matches!(child.try_wait(), Ok(Some(_))),
                None => true,
            };
            if exited {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status (None on timeout).
    pub async fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).ok()?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).ok()?;
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

impl Drop for PluginProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a server answered to [`raw_unary`].
#[derive(Debug, Default)]
pub struct RawReply {
    /// Every header field of the stream's header blocks (response headers, then trailers).
    pub headers: Vec<(String, String)>,
    /// The DATA the server sent on the stream (gRPC length-prefixed messages).
    pub data: Vec<u8>,
    /// The error code of an `RST_STREAM` the server sent instead of an answer.
    pub reset: Option<u32>,
}

impl RawReply {
    /// The value of the first header field named `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One unary gRPC call written frame by frame, so a test can send what library clients will
/// not: `authority` is sent as the `:authority` value as it is (`None`: no `:authority` at
/// all), the way grpc-core clients send a socket path. `message` is the encoded request.
pub async fn raw_unary(
    socket: &Path,
    authority: Option<&str>,
    path: &str,
    message: &[u8],
) -> std::io::Result<RawReply> {
    tokio::time::timeout(
        Duration::from_secs(10),
        raw_exchange(socket, authority, path, message),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer within 10 s"))?
}

async fn raw_exchange(
    socket: &Path,
    authority: Option<&str>,
    path: &str,
    message: &[u8],
) -> std::io::Result<RawReply> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    const SETTINGS: u8 = 0x4;
    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8], out: &mut Vec<u8>) {
        let len = u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes();
        out.extend_from_slice(&len[1..]);
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
    }
    let mut fields: Vec<(&[u8], &[u8])> = vec![
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", path.as_bytes()),
    ];
    if let Some(a) = authority {
        fields.push((b":authority", a.as_bytes()));
    }
    fields.push((b"content-type", b"application/grpc"));
    fields.push((b"te", b"trailers"));
    let block = loona_hpack::Encoder::new().encode(fields);
    let mut body = vec![0u8];
    body.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    body.extend_from_slice(message);

    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    frame(SETTINGS, 0, 0, &[], &mut out);
    frame(0x1, 0x4, 1, &block, &mut out); // HEADERS, END_HEADERS
    frame(0x0, 0x1, 1, &body, &mut out); // DATA, END_STREAM
    let mut conn = tokio::net::UnixStream::connect(socket).await?;
    conn.write_all(&out).await?;

    let mut reply = RawReply::default();
    let mut decoder = loona_hpack::Decoder::new();
    let mut block: Vec<u8> = Vec::new();
    loop {
        let mut head = [0u8; 9];
        conn.read_exact(&mut head).await?;
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        conn.read_exact(&mut payload).await?;
        match kind {
            SETTINGS if flags & 0x1 == 0 => {
                let mut ack = Vec::new();
                frame(SETTINGS, 0x1, 0, &[], &mut ack);
                conn.write_all(&ack).await?;
            }
            0x0 if stream == 1 => {
                reply.data.extend_from_slice(&payload);
                if flags & 0x1 != 0 {
                    return Ok(reply);
                }
            }
            0x1 | 0x9 if stream == 1 => {
                let mut p = &payload[..];
                if kind == 0x1 {
                    let pad = if flags & 0x8 != 0 {
                        usize::from(p[0])
                    } else {
                        0
                    };
                    if flags & 0x8 != 0 {
                        p = &p[1..];
                    }
                    if flags & 0x20 != 0 {
                        p = &p[5..];
                    }
                    p = &p[..p.len() - pad];
                }
                block.extend_from_slice(p);
                if flags & 0x4 != 0 {
                    let decoded = decoder
                        .decode(&block)
                        .map_err(|e| std::io::Error::other(format!("HPACK: {e:?}")))?;
                    block.clear();
                    reply.headers.extend(decoded.into_iter().map(|(n, v)| {
                        (
                            String::from_utf8_lossy(&n).into_owned(),
                            String::from_utf8_lossy(&v).into_owned(),
                        )
                    }));
                    // END_STREAM on the block: the trailers, the call is over.
                    if flags & 0x1 != 0 {
                        return Ok(reply);
                    }
                }
            }
            0x3 if stream == 1 => {
                let code = payload
                    .get(..4)
                    .map_or(0, |c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
                reply.reset = Some(code);
                return Ok(reply);
            }
            0x7 => {
                return Err(std::io::Error::other(format!(
                    "the server sent GOAWAY: {payload:?}"
                )));
            }
            _ => {}
        }
    }
}

/// Calls Identity `GetPluginInfo` on `socket` with each `:authority` gRPC clients are known to
/// send on a unix socket — grpc-core's percent-encoded path, the raw path, `localhost`
/// (grpc-go) and none — and checks each answer is gRPC status 0 with `driver` in it. The error
/// names every authority that failed and how.
pub async fn check_any_authority(socket: &Path, driver: &str) -> Result<(), String> {
    let raw = socket.display().to_string();
    let encoded = raw.trim_start_matches('/').replace('/', "%2F");
    let mut failures = Vec::new();
    for authority in [
        Some(encoded.as_str()),
        Some(raw.as_str()),
        Some("localhost"),
        None,
    ] {
        match raw_unary(socket, authority, "/csi.v1.Identity/GetPluginInfo", &[]).await {
            Ok(r)
                if r.reset.is_none()
                    && r.header("grpc-status") == Some("0")
                    && String::from_utf8_lossy(&r.data).contains(driver) => {}
            Ok(r) => failures.push(format!("{authority:?}: {r:?}")),
            Err(e) => failures.push(format!("{authority:?}: {e}")),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}
