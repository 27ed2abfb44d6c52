//! Serving a CSI gRPC router on a unix socket, shared by both plugin binaries (feature `csi`).
//!
//! [`serve`] runs the router on a listener from [`crate::socket::bind`] until the shutdown
//! future (usually [`crate::shutdown::shutdown_signal`]) fires, lets in-flight calls finish for
//! at most [`SHUTDOWN_GRACE`] and removes the socket.

use std::future::Future;
use std::io;

use tokio::net::UnixListener;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::Router;

use crate::ServeError;
use crate::authority::AuthorityFix;
use crate::socket::Endpoint;

/// How long in-flight calls may run after a shutdown signal.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

/// Serves `router` on `listener` (from [`crate::socket::bind`]) until `shutdown` resolves,
/// waits for in-flight calls, then removes the socket file.
pub async fn serve(
    router: Router,
    listener: UnixListener,
    endpoint: &Endpoint,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    tracing::info!(%endpoint, "serving");
    // In-flight calls get a bounded time to finish: one stuck on a dead mount must not keep
    // the process alive until the orchestrator kills it without cleaning up.
    let (fired_tx, fired_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        let _ = fired_tx.send(());
    };
    // Every connection goes through AuthorityFix, so clients that send the socket path as
    // `:authority` (grpcio and the other grpc-core clients) are served too.
    let incoming = UnixListenerStream::new(listener).map(|conn| conn.map(AuthorityFix::new));
    let server = router.serve_with_incoming_shutdown(incoming, signal);
    let grace = async move {
        match fired_rx.await {
            Ok(()) => tokio::time::sleep(SHUTDOWN_GRACE).await,
            Err(_) => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        result = server => result,
        () = grace => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "in-flight calls did not finish in time; stopping anyway");
            Ok(())
        }
    };
    match std::fs::remove_file(endpoint.path()) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(error = %e, "cannot remove the socket"),
    }
    tracing::info!("stopped");
    result.map_err(ServeError::from)
}
