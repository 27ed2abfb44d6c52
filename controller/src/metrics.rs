//! Prometheus metrics, served on `--metrics-address` at `/metrics`:
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `gluster_csi_controller_rpc_calls_total` | `method`, `code` | CSI calls by outcome |
//! | `gluster_csi_controller_rpc_duration_seconds` | `method`, `code` | CSI call latency |
//! | `gluster_csi_controller_heketi_requests_total` | `operation`, `outcome` | Heketi calls by outcome |
//! | `gluster_csi_controller_heketi_request_duration_seconds` | `operation`, `outcome` | Heketi call latency, asynchronous operations polled to their end |
//! | `gluster_csi_controller_heketi_retries_total` | `method`, `route`, `reason` | HTTP requests to Heketi sent again by the client |
//! | `gluster_csi_controller_heketi_up` | `backend` | 1 when that Heketi answered its last `/hello` check, 0 when not ([`crate::health`]) |
//!
//! `code` is the gRPC code name (`OK`, `NOT_FOUND`, …); `outcome` is `ok`, `not_found`,
//! `no_space`, `unavailable`, `timeout` or `error`. `route` is the shape of the Heketi route
//! (`/volumes/{id}`), `reason` is `429`, `503` or `transport` (no answer; reads only). A Heketi
//! call counts once in `heketi_requests_total` however many retries it took. No label carries a
//! volume name or a secret. `backend` is a Heketi base URL the controller has used (the default
//! backend, or a class's `resturl`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetryLabels {
    method: String,
    route: &'static str,
    reason: &'static str,
}

impl From<&heketi_client::RetryEvent> for RetryLabels {
    fn from(e: &heketi_client::RetryEvent) -> Self {
        Self {
            method: e.method.as_str().to_owned(),
            route: e.route,
            reason: e.reason.as_str(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: String,
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
    heketi_retries: Family<RetryLabels, Counter>,
    heketi_up: Family<BackendLabels, Gauge>,
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
        let heketi_retries = Family::<RetryLabels, Counter>::default();
        let heketi_up = Family::<BackendLabels, Gauge>::default();
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
        registry.register(
            "heketi_retries",
            "HTTP requests to Heketi sent again, by method, route and reason (429, 503, transport)",
            heketi_retries.clone(),
        );
        registry.register(
            "heketi_up",
            "1 when the Heketi at this URL answered its last /hello check, 0 when it did not",
            heketi_up.clone(),
        );
        Self {
            registry,
            rpc_calls,
            rpc_duration,
            heketi_calls,
            heketi_duration,
            heketi_retries,
            heketi_up,
        }
    }

    /// Records whether the Heketi at `backend` answered its last check.
    pub fn set_heketi_up(&self, backend: &str, up: bool) {
        let labels = BackendLabels {
            backend: backend.to_owned(),
        };
        self.heketi_up.get_or_create(&labels).set(i64::from(up));
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

    /// An observer for [`heketi_client::ClientBuilder::on_retry`] that counts each retry here.
    pub fn heketi_retry_observer(
        &self,
    ) -> impl Fn(&heketi_client::RetryEvent) + Send + Sync + 'static {
        let retries = self.heketi_retries.clone();
        move |event| {
            retries.get_or_create(&RetryLabels::from(event)).inc();
        }
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
    async fn heketi_retries_are_counted_by_method_route_and_reason() {
        // A port nothing listens on: the client retries the refused GET once within 1 s
        // (500 ms plus jitter fits, the next 1 s does not) and the observer counts it.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let m = Metrics::new();
        let client = heketi_client::ClientBuilder::new(format!("http://{addr}"))
            .disable_auth()
            .retry_budget(Duration::from_secs(1))
            .on_retry(m.heketi_retry_observer())
            .build()
            .expect("client");
        let r = m.heketi("volume_list", client.volume_list()).await;
        assert!(r.as_ref().is_err_and(|e| e.is_unavailable()), "{r:?}");
        let text = m.encode();
        for want in [
            r#"gluster_csi_controller_heketi_retries_total{method="GET",route="/volumes",reason="transport"} 1"#,
            r#"gluster_csi_controller_heketi_requests_total{operation="volume_list",outcome="unavailable"} 1"#,
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
    }

    #[test]
    fn heketi_up_is_a_gauge_per_backend() {
        let m = Metrics::new();
        m.set_heketi_up("http://a:8080", true);
        m.set_heketi_up("http://b:8080", true);
        m.set_heketi_up("http://b:8080", false);
        let text = m.encode();
        for want in [
            "# TYPE gluster_csi_controller_heketi_up gauge",
            r#"gluster_csi_controller_heketi_up{backend="http://a:8080"} 1"#,
            r#"gluster_csi_controller_heketi_up{backend="http://b:8080"} 0"#,
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
