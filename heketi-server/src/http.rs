//! HTTP: Heketi's routes, the JWT middleware, and replies shaped like Heketi's (JSON with a
//! trailing newline, plain-text errors, 202/303/204 for asynchronous operations).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;

use crate::app::{Accepted, App, check_id_segment};
use crate::error::{ApiError, plain_text};
use crate::jwt;
use crate::queue::Poll;
use crate::validate::parse_body;

type AppState = Arc<App>;
type Reply = Result<Response, ApiError>;

/// The whole HTTP application.
pub fn router(app: AppState) -> Router {
    let api = Router::new()
        .route("/clusters", post(cluster_create).get(cluster_list))
        .route("/clusters/{id}", get(cluster_info).delete(cluster_delete))
        .route("/clusters/{id}/flags", post(cluster_flags))
        .route("/nodes", post(node_add))
        .route("/nodes/{id}", get(node_info).delete(node_delete))
        .route("/nodes/{id}/state", post(node_state))
        .route("/devices", post(device_add))
        .route("/devices/{id}", get(device_info).delete(device_delete))
        .route("/devices/{id}/state", post(device_state))
        .route("/volumes", post(volume_create).get(volume_list))
        .route("/volumes/{id}", get(volume_info).delete(volume_delete))
        .route("/volumes/{id}/expand", post(volume_expand))
        .route("/volumes/{id}/clone", post(volume_clone))
        .route("/queue/{id}", get(queue_status))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&app),
            authenticate,
        ));
    Router::new()
        .route("/hello", get(hello))
        .route("/metrics", get(metrics))
        .merge(api)
        .layer(middleware::from_fn(log_request))
        .with_state(app)
}

async fn log_request(req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    let ms = started.elapsed().as_millis() as u64;
    if path.starts_with("/queue/") || path == "/hello" {
        tracing::debug!(%method, %path, status, ms, "request");
    } else {
        tracing::info!(%method, %path, status, ms, "request");
    }
    resp
}

async fn authenticate(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let Some(keys) = &app.auth else {
        return next.run(req).await;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    match jwt::authenticate(keys, header, req.method().as_str(), req.uri().path(), now) {
        Ok(_) => next.run(req).await,
        Err(e) => plain_text(e.status(), &e.to_string()),
    }
}

/// A JSON reply like Go's `json.NewEncoder(w).Encode(v)`.
fn json<T: Serialize>(status: StatusCode, v: &T) -> Reply {
    let mut body = serde_json::to_vec(v).map_err(|e| ApiError::internal(e.to_string()))?;
    body.push(b'\n');
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    Ok(resp)
}

fn accepted(a: Accepted) -> Reply {
    let loc = HeaderValue::from_str(&format!("/queue/{}", a.0))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut resp = StatusCode::ACCEPTED.into_response();
    resp.headers_mut().insert(header::LOCATION, loc);
    Ok(resp)
}

fn status_only(status: StatusCode) -> Reply {
    Ok(status.into_response())
}

fn id_of(id: &str) -> Result<&str, ApiError> {
    check_id_segment(id).map(|()| id)
}

async fn hello() -> Response {
    let mut resp = (StatusCode::OK, "Hello from Heketi").into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    resp
}

async fn metrics(State(app): State<AppState>) -> Response {
    let text = crate::metrics::render(&app).await;
    let mut resp = (StatusCode::OK, text).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

async fn not_found() -> ApiError {
    ApiError::invalid_path()
}

// ---------------------------------------------------------------------- clusters

async fn cluster_create(State(app): State<AppState>, body: Bytes) -> Reply {
    let info = app.cluster_create(parse_body(&body)?).await?;
    json(StatusCode::CREATED, &info)
}

async fn cluster_list(State(app): State<AppState>) -> Reply {
    json(StatusCode::OK, &app.cluster_list().await)
}

async fn cluster_info(State(app): State<AppState>, Path(id): Path<String>) -> Reply {
    json(StatusCode::OK, &app.cluster_info(id_of(&id)?).await?)
}

async fn cluster_delete(State(app): State<AppState>, Path(id): Path<String>) -> Reply {
    app.cluster_delete(id_of(&id)?).await?;
    status_only(StatusCode::OK)
}

async fn cluster_flags(State(app): State<AppState>, Path(id): Path<String>, body: Bytes) -> Reply {
    let id = id_of(&id)?;
    app.cluster_set_flags(id, parse_body(&body)?).await?;
    let mut resp = StatusCode::OK.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    Ok(resp)
}

// ---------------------------------------------------------------------- nodes

async fn node_add(State(app): State<AppState>, body: Bytes) -> Reply {
    accepted(app.node_add(parse_body(&body)?).await?)
}

async fn node_info(State(app): State<AppState>, Path(id): Path<String>) -> Reply {
    json(StatusCode::OK, &app.node_info(id_of(&id)?).await?)
}

async fn node_delete(State(app): State<AppState>, Path(id): Path<String>) -> Reply {
    accepted(app.node_delete(id_of(&id)?).await?)
}

async fn node_state(State(app): State<AppState>, Path(id): Path<String>, body: Bytes) -> Reply {
    let id = id_of(&id)?;
    accepted(app.node_set_state(id, parse_body(&body)?).await?)
}

// ---------------------------------------------------------------------- devices

async fn device_add(State(app): State<AppState>, body: Bytes) -> Reply {
    accepted(app.device_add(parse_body(&body)?).await?)
}

async fn device_info(State(app): State<AppState>, Path(id): Path<String>) -> Reply {
    json(StatusCode::OK, &app.device_info(id_of(&id)?).await?)
}

async fn device_delete(State(app): State<AppState>, Path(id): Path<String>) -> Reply {
    accepted(app.device_delete(id_of(&id)?).await?)
}

async fn device_state(State(app): State<AppState>, Path(id): Path<String>, body: Bytes) -> Reply {
    let id = id_of(&id)?;
    accepted(app.device_set_state(id, parse_body(&body)?).await?)
}

// ---------------------------------------------------------------------- volumes

async fn volume_create(State(app): State<AppState>, body: Bytes) -> Reply {
    accepted(app.volume_create(parse_body(&body)?).await?)
}

async fn volume_list(State(app): State<AppState>) -> Reply {
    json(StatusCode::OK, &app.volume_list().await)
}

async fn volume_info(State(app): State<AppState>, Path(id): Path<String>) -> Reply {
    json(StatusCode::OK, &app.volume_info(id_of(&id)?).await?)
}

async fn volume_delete(State(app): State<AppState>, Path(id): Path<String>) -> Reply {
    accepted(app.volume_delete(id_of(&id)?).await?)
}

async fn volume_expand(State(app): State<AppState>, Path(id): Path<String>, body: Bytes) -> Reply {
    let id = id_of(&id)?;
    accepted(app.volume_expand(id, parse_body(&body)?).await?)
}

async fn volume_clone(State(app): State<AppState>, Path(id): Path<String>, body: Bytes) -> Reply {
    let id = id_of(&id)?;
    accepted(app.volume_clone(id, parse_body(&body)?).await?)
}

// ---------------------------------------------------------------------- queue

async fn queue_status(
    State(app): State<AppState>,
    method: Method,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Reply {
    let id = id_of(&id)?;
    let wait = preferred_wait(&headers);
    let poll = match wait {
        Some(w) => app.queue.poll_wait(id, w).await,
        None => app.queue.poll(id),
    };
    let mut resp = match poll {
        Poll::Unknown => return Err(ApiError::id_not_found()),
        Poll::Pending => {
            let mut resp = StatusCode::OK.into_response();
            resp.headers_mut()
                .insert("X-Pending", HeaderValue::from_static("true"));
            resp
        }
        Poll::Done(Ok(None)) => status_only(StatusCode::NO_CONTENT)?,
        Poll::Done(Ok(Some(location))) => see_other(&method, &location)?,
        Poll::Done(Err(msg)) => return Err(ApiError::internal(msg)),
    };
    if let Some(w) = wait
        && let Ok(v) = HeaderValue::from_str(&format!("wait={}", w.as_secs()))
    {
        resp.headers_mut().insert("Preference-Applied", v);
    }
    Ok(resp)
}

/// Longest a `/queue` poll may be held with `Prefer: wait=N`.
pub const MAX_QUEUE_WAIT: Duration = Duration::from_secs(10);

/// The `wait` preference of a `/queue` poll (RFC 7240 `Prefer: wait=N`, seconds), capped at
/// [`MAX_QUEUE_WAIT`]; `None` when absent, zero or malformed. An extension of ours: Heketi
/// ignores the header and answers at once, and clients that do not send it see no change.
pub fn preferred_wait(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("wait")
                .then(|| v.trim().trim_matches('"').parse::<u64>().ok())?
        })
        .find(|secs| *secs > 0)
        .map(|secs| Duration::from_secs(secs).min(MAX_QUEUE_WAIT))
}

/// 303 like Go's `http.Redirect` for a GET: Location plus a tiny HTML body.
fn see_other(method: &Method, location: &str) -> Reply {
    let loc = HeaderValue::from_str(location).map_err(|e| ApiError::internal(e.to_string()))?;
    let body = if method == Method::GET {
        format!("<a href=\"{location}\">See Other</a>.\n\n")
    } else {
        String::new()
    };
    let mut resp = (StatusCode::SEE_OTHER, body).into_response();
    resp.headers_mut().insert(header::LOCATION, loc);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefer(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("prefer", HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn the_wait_preference_is_read_and_capped() {
        let secs = |v: &[&str]| preferred_wait(&prefer(v)).map(|d| d.as_secs());
        assert_eq!(secs(&[]), None);
        assert_eq!(secs(&["wait=5"]), Some(5));
        assert_eq!(secs(&["respond-async, wait=3"]), Some(3));
        assert_eq!(secs(&["handling=lenient; WAIT = \"4\""]), Some(4));
        assert_eq!(secs(&["return=minimal", "wait=2"]), Some(2));
        assert_eq!(secs(&["wait=600"]), Some(MAX_QUEUE_WAIT.as_secs()));
        assert_eq!(secs(&["wait=0"]), None);
        assert_eq!(secs(&["wait=-1"]), None);
        assert_eq!(secs(&["wait=soon"]), None);
        assert_eq!(secs(&["waiting=5"]), None);
    }
}
