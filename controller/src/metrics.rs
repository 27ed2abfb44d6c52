//! Prometheus metrics, served on `--metrics-address` at `/metrics`:
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `gluster_csi_controller_rpc_calls_total` | `method`, `code` | CSI calls by outcome |
//! | `gluster_csi_controller_rpc_duration_seconds` | `method`, `code` | CSI call latency |
//! | `gluster_csi_controller_heketi_requests_total` | `operation`, `outcome` | Heketi calls by outcome |
//! | `gluster_csi_controller_heketi_request_duration_seconds` | `operation`, `outcome` | Heketi call latency, asynchronous operations polled to their end |
//!
//! `code` is the gRPC code name (`OK`, `NOT_FOUND`, …); `outcome` is `ok`, `not_found`,
//! `no_space`, `unavailable`, `timeout` or `error`. No label carries a volume name or a secret.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Content type of the text the encoder writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HeketiLabels {
    operation: String,
    outcome: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// 5 ms to about 10 min.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.5, 14))
}

/// The controller's metrics.
pub struct Metrics {
    registry: Registry,
    rpc_calls: Family<RpcLabels, Counter>,
    rpc_duration: Histograms<RpcLabels>,
    heketi_calls: Family<HeketiLabels, Counter>,
    heketi_duration: Histograms<HeketiLabels>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Empty metrics, registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gluster_csi_controller");
        let rpc_calls = Family::<RpcLabels, Counter>::default();
        let rpc_duration: Histograms<RpcLabels> = Family::new_with_constructor(latency_histogram);
        let heketi_calls = Family::<HeketiLabels, Counter>::default();
        let heketi_duration: Histograms<HeketiLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "rpc_calls",
            "CSI calls by method and gRPC code",
            rpc_calls.clone(),
        );
        registry.register(
            "rpc_duration_seconds",
            "CSI call latency by method and gRPC code",
            rpc_duration.clone(),
        );
        registry.register(
            "heketi_requests",
            "Heketi calls by operation and outcome",
            heketi_calls.clone(),
        );
        registry.register(
            "heketi_request_duration_seconds",
            "Heketi call latency by operation and outcome (asynchronous operations until done)",
            heketi_duration.clone(),
        );
        Self {
            registry,
            rpc_calls,
            rpc_duration,
            heketi_calls,
            heketi_duration,
        }
    }

    /// Records one CSI call.
    pub fn record_rpc(&self, method: &str, code: tonic::Code, took: Duration) {
        let labels = RpcLabels {
            method: method.to_owned(),
            code: code_name(code).to_owned(),
        };
        self.rpc_calls.get_or_create(&labels).inc();
        self.rpc_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Runs a CSI call and records it.
    pub async fn rpc<T>(
        &self,
        method: &str,
        call: impl Future<Output = crate::error::Result<T>>,
    ) -> crate::error::Result<T> {
        let start = Instant::now();
        let result = call.await;
        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(e) => e.code(),
        };
        self.record_rpc(method, code, start.elapsed());
        result
    }

    /// Runs a Heketi call and records it.
    pub async fn heketi<T>(
        &self,
        operation: &str,
        call: impl Future<Output = heketi_client::Result<T>>,
    ) -> heketi_client::Result<T> {
        let start = Instant::now();
        let result = call.await;
        let labels = HeketiLabels {
            operation: operation.to_owned(),
            outcome: outcome(&result).to_owned(),
        };
        self.heketi_calls.get_or_create(&labels).inc();
        self.heketi_duration
            .get_or_create(&labels)
            .observe(start.elapsed().as_secs_f64());
        result
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        out
    }
}

fn outcome<T>(r: &heketi_client::Result<T>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) if e.is_not_found() => "not_found",
        Err(e) if e.is_no_space() => "no_space",
        Err(e) if e.is_unavailable() => "unavailable",
        Err(heketi_client::Error::Timeout { .. }) => "timeout",
        Err(_) => "error",
    }
}

/// The gRPC name of a code.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Binds `addr` now (so a bad address fails start-up) and serves `/metrics` in a task.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let metrics = Arc::clone(&metrics);
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
                    metrics.encode(),
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics server stopped");
        }
    });
    tracing::info!(address = %local, "serving metrics");
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calls_are_counted_by_code_and_outcome() {
        let m = Metrics::new();
        let ok: crate::error::Result<()> = m.rpc("CreateVolume", async { Ok(()) }).await;
        assert!(ok.is_ok());
        let _ = m
            .rpc::<()>("CreateVolume", async {
                Err(crate::error::Error::Aborted("busy".into()))
            })
            .await;
        let _ = m
            .heketi::<()>("volume_create", async {
                Err(heketi_client::Error::Api {
                    status: 500,
                    message: "Failed to allocate new volume: No space".into(),
                })
            })
            .await;
        let text = m.encode();
        for want in [
            r#"gluster_csi_controller_rpc_calls_total{method="CreateVolume",code="OK"} 1"#,
            r#"gluster_csi_controller_rpc_calls_total{method="CreateVolume",code="ABORTED"} 1"#,
            r#"gluster_csi_controller_rpc_duration_seconds_count{method="CreateVolume",code="OK"} 1"#,
            r#"gluster_csi_controller_heketi_requests_total{operation="volume_create",outcome="no_space"} 1"#,
            r#"gluster_csi_controller_heketi_request_duration_seconds_count{operation="volume_create",outcome="no_space"} 1"#,
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
    }

    #[tokio::test]
    async fn served_over_http() {
        let m = Arc::new(Metrics::new());
        m.record_rpc("Probe", tonic::Code::Ok, Duration::from_millis(3));
        let addr = serve("127.0.0.1:0".parse().expect("addr"), Arc::clone(&m))
            .await
            .expect("bind");
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut body = String::new();
        stream.read_to_string(&mut body).await.expect("read");
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(body.contains("openmetrics-text"), "{body}");
        assert!(
            body.contains(r#"rpc_calls_total{method="Probe",code="OK"} 1"#),
            "{body}"
        );
    }
}
