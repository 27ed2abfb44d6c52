//! HTTPS: `--tls-cert-file` and `--tls-key-file` make the server speak TLS on `--listen`.
//!
//! Heketi itself serves plain HTTP and is put behind a TLS proxy where one is wanted; serving
//! TLS here lets a test (and a small install) use an `https://` `resturl` end to end, with the
//! CA the controller is given per backend. The certificate and key are read once at start-up
//! (PEM: the certificate chain, leaf first, and a PKCS#8, PKCS#1 or SEC1 private key).
//!
//! Each TLS handshake runs in a task of its own, bounded by [`HANDSHAKE_TIMEOUT`], so a slow
//! or silent client holds up no one; connections whose handshake succeeded are handed to axum
//! through [`TlsListener`], an [`axum::serve::Listener`], which keeps axum's graceful
//! shutdown.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Longest time a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections that finished their handshake and wait for axum to take them.
const READY_BACKLOG: usize = 64;

/// The certificate and key files to serve HTTPS with.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Why the TLS configuration cannot be used; the message names the flag.
#[derive(Debug, thiserror::Error)]
#[error("{flag} {path}: {reason}")]
pub struct TlsError {
    /// `--tls-cert-file` or `--tls-key-file`.
    pub flag: &'static str,
    /// The file.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

impl TlsFiles {
    /// Both flags, or neither; one alone is an error naming the missing one.
    pub fn from_flags(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Result<Option<Self>, TlsError> {
        match (cert, key) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => {
                let files = Self { cert, key };
                // Read now, so that a bad file fails before anything is bound.
                files.acceptor()?;
                Ok(Some(files))
            }
            (Some(cert), None) => Err(TlsError {
                flag: "--tls-key-file",
                path: String::new(),
                reason: format!(
                    "required with --tls-cert-file {}; give the certificate's private key",
                    cert.display()
                ),
            }),
            (None, Some(key)) => Err(TlsError {
                flag: "--tls-cert-file",
                path: String::new(),
                reason: format!(
                    "required with --tls-key-file {}; give the certificate (PEM)",
                    key.display()
                ),
            }),
        }
    }

    /// A TLS acceptor serving the certificate (HTTP/1.1 only, like Heketi).
    pub fn acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        let cert_err = |reason: String| TlsError {
            flag: "--tls-cert-file",
            path: self.cert.display().to_string(),
            reason,
        };
        let key_err = |reason: String| TlsError {
            flag: "--tls-key-file",
            path: self.key.display().to_string(),
            reason,
        };
        let certs = read(&self.cert).map_err(&cert_err)?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&certs)
            .collect::<Result<_, _>>()
            .map_err(|e| cert_err(format!("not a PEM certificate chain: {e}")))?;
        if certs.is_empty() {
            return Err(cert_err("holds no PEM certificate".into()));
        }
        let key = read(&self.key).map_err(&key_err)?;
        let key = PrivateKeyDer::from_pem_slice(&key)
            .map_err(|e| key_err(format!("not a PEM private key: {e}")))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| cert_err(format!("TLS configuration: {e}")))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| key_err(format!("does not fit the certificate: {e}")))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))
}

/// A listener that yields TLS connections whose handshake succeeded.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Accepts TCP connections on `tcp` and runs their handshakes with `acceptor`.
    pub fn new(tcp: TcpListener, acceptor: TlsAcceptor) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_BACKLOG);
        let accepting = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors and the like: pause instead of spinning.
                        tracing::warn!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self {
            ready,
            local,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accepting task ended, which happens only when this listener is dropped:
            // nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_flag_alone_names_the_other() {
        let e = TlsFiles::from_flags(Some("/c.pem".into()), None).expect_err("key missing");
        assert_eq!(e.flag, "--tls-key-file");
        let e = TlsFiles::from_flags(None, Some("/k.pem".into())).expect_err("cert missing");
        assert_eq!(e.flag, "--tls-cert-file");
        assert!(
            TlsFiles::from_flags(None, None)
                .expect("plain HTTP")
                .is_none()
        );
    }

    #[test]
    fn unreadable_or_empty_files_name_the_flag() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "")?;
        let e = TlsFiles::from_flags(Some(empty.clone()), Some(empty.clone()))
            .expect_err("no certificate");
        assert_eq!(e.flag, "--tls-cert-file");
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
        let e = TlsFiles::from_flags(Some(dir.path().join("missing.pem")), Some(empty))
            .expect_err("missing");
        assert!(e.to_string().contains("cannot read"), "{e}");
        Ok(())
    }
}
