//! `heketi-server`: a server with Heketi's REST API over a real glusterd trusted pool.
//!
//! It speaks the same routes, JSON, status codes, headers and plain-text errors as Heketi for
//! what a provisioner and an administrator use (`/hello`, clusters, nodes, devices, volumes,
//! `/queue`), with Heketi's JWT authentication and its asynchronous operations. Volumes are
//! real Gluster volumes made with the gluster CLI; their size is a Gluster quota.
//!
//! Choices that differ from Heketi because bricks here are directories, not LVM volumes:
//! - a device is a brick root directory on a node; its capacity is the `size_kib` field of the
//!   `POST /devices` body (an extension) or else the size of the file system holding it;
//! - brick directories are made and removed on the node that owns the device, through the
//!   configured [`executor`]: `ssh` (Heketi's `sshexec`) for separate hosts, `local` when this
//!   machine is the only host;
//! - expand raises the quota of the existing bricks instead of adding bricks;
//! - clone creates a new volume and copies the data through FUSE mounts on this machine,
//!   because Gluster snapshots need thin LVM bricks;
//! - volume names are unique across all clusters (they share one Gluster pool);
//! - a device without bricks can be deleted in any state; setting a node or device with bricks
//!   to `failed` is refused (no brick replacement).
//!
//! State is one JSON file written atomically before and after every Gluster step; a restart
//! finishes or rolls back what was in flight ([`reconcile`]).

pub mod allocate;
pub mod app;
pub mod config;
pub mod error;
pub mod exec;
pub mod executor;
pub mod fuse;
pub mod gluster;
pub mod host;
pub mod http;
pub mod ids;
pub mod jwt;
pub mod metrics;
pub mod model;
pub mod queue;
pub mod reconcile;
pub mod store;
pub mod tls;
pub mod validate;
pub mod volumes;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::app::App;
use crate::config::Config;

/// How long a stopping server waits for running operations.
const DRAIN: Duration = Duration::from_secs(120);

/// Pause between reconciliation attempts, and period of the check of rolled-back creates.
const RECONCILE_RETRY: Duration = Duration::from_secs(5);

/// Reconciliation attempts before the server starts answering anyway.
const RECONCILE_ATTEMPTS: u32 = 12;

/// Serves until `shutdown` resolves, then waits (bounded) for running operations.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listen = config.listen;
    let tls_files = config.tls.clone();
    let app = Arc::new(App::new(config).context("cannot load the state")?);
    app.sync_gluster_nodes().await;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("--listen: cannot bind {listen}"))?;
    tracing::info!(
        %listen,
        state = %app.store.path().display(),
        auth = app.auth.is_some(),
        "heketi-server starting"
    );

    // Finish or roll back what a previous run left in flight before answering requests, so
    // the first list is already right; if Gluster stays unreachable, serve and keep trying.
    for attempt in 1..=RECONCILE_ATTEMPTS {
        match reconcile::reconcile(&app).await {
            Ok(n) => {
                tracing::info!(reconciled = n, "state reconciled with Gluster");
                break;
            }
            Err(e) => {
                tracing::warn!(attempt, error = %e, "cannot reconcile with Gluster yet");
                if attempt < RECONCILE_ATTEMPTS {
                    tokio::time::sleep(RECONCILE_RETRY).await;
                }
            }
        }
    }
    app.sync_gluster_nodes().await;
    // From now on, in the background: volumes left behind (still unreconciled, or a failed
    // rollback) are finished or rolled back, and rolled-back creates are watched. Topology was
    // settled by the first attempt above; nodes and devices being added now are live.
    let background = Arc::clone(&app);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(RECONCILE_RETRY).await;
            match reconcile::reconcile_volumes(&background).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(reconciled = n, "state reconciled with Gluster"),
                Err(e) => tracing::warn!(error = %e, "reconciliation failed; retrying"),
            }
            if let Err(e) = reconcile::sweep(&background).await {
                tracing::warn!(error = %e, "cannot check rolled-back creates");
            }
        }
    });

    match &tls_files {
        None => axum::serve(listener, http::router(Arc::clone(&app)))
            .with_graceful_shutdown(shutdown)
            .await
            .context("HTTP server failed")?,
        Some(files) => {
            let acceptor = files.acceptor()?;
            tracing::info!(cert = %files.cert.display(), "serving HTTPS");
            let listener = tls::TlsListener::new(listener, acceptor)?;
            axum::serve(listener, http::router(Arc::clone(&app)))
                .with_graceful_shutdown(shutdown)
                .await
                .context("HTTPS server failed")?;
        }
    }

    let deadline = tokio::time::Instant::now() + DRAIN;
    while app.queue.running() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let left = app.queue.running();
    if left > 0 {
        tracing::warn!(
            left,
            "stopping with operations still running; the next start finishes them"
        );
    }
    tracing::info!("heketi-server stopped");
    Ok(())
}
