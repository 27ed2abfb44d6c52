//! What the client tells a caller about its retries: [`RetryEvent`], handed to the observer
//! set with [`ClientBuilder::on_retry`](crate::ClientBuilder::on_retry).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;

/// Why a request is sent again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetryReason {
    /// Heketi answered `429 Too Many Requests` (too many operations in flight).
    TooManyRequests,
    /// Heketi answered `503 Service Unavailable`.
    ServiceUnavailable,
    /// No answer: the connection was refused or reset, or the exchange timed out (GETs only).
    Transport,
}

impl RetryReason {
    /// A short stable name, fit for a metric label: `429`, `503` or `transport`.
    ///
    /// # Example
    /// ```
    /// assert_eq!(heketi_client::RetryReason::Transport.as_str(), "transport");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::TooManyRequests => "429",
            RetryReason::ServiceUnavailable => "503",
            RetryReason::Transport => "transport",
        }
    }
}

impl fmt::Display for RetryReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One retry the client is about to make, reported before it waits.
///
/// Holds no URL, id or token: `route` is the route's shape (`/volumes/{id}`), so it can serve
/// as a metric label without growing with the number of volumes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryEvent {
    /// The HTTP method of the request.
    pub method: Method,
    /// The route's shape, see [`route_class`].
    pub route: &'static str,
    /// Why the request is sent again.
    pub reason: RetryReason,
    /// The attempt that failed, 1 for the first one.
    pub attempt: u32,
    /// How long the client waits before the next attempt.
    pub wait: Duration,
}

/// Called on every retry; see [`ClientBuilder::on_retry`](crate::ClientBuilder::on_retry).
pub type RetryObserver = Arc<dyn Fn(&RetryEvent) + Send + Sync>;

/// The shape of a Heketi route, given the path below the base URL: ids become `{id}`; a path
/// that is no Heketi route the client uses is `other`.
///
/// # Example
/// ```
/// use heketi_client::route_class;
/// assert_eq!(route_class("/volumes/0123abcd/expand"), "/volumes/{id}/expand");
/// assert_eq!(route_class("/queue/0123abcd"), "/queue/{id}");
/// assert_eq!(route_class("/volumes"), "/volumes");
/// assert_eq!(route_class("/../etc/passwd"), "other");
/// ```
pub fn route_class(path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["hello"] => "/hello",
        ["clusters"] => "/clusters",
        ["clusters", _] => "/clusters/{id}",
        ["clusters", _, "flags"] => "/clusters/{id}/flags",
        ["nodes"] => "/nodes",
        ["nodes", _] => "/nodes/{id}",
        ["nodes", _, "state"] => "/nodes/{id}/state",
        ["devices"] => "/devices",
        ["devices", _] => "/devices/{id}",
        ["devices", _, "state"] => "/devices/{id}/state",
        ["volumes"] => "/volumes",
        ["volumes", _] => "/volumes/{id}",
        ["volumes", _, "expand"] => "/volumes/{id}/expand",
        ["volumes", _, "clone"] => "/volumes/{id}/clone",
        ["queue", _] => "/queue/{id}",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_classified_without_ids() {
        let id = "0123456789abcdef0123456789abcdef";
        let cases = [
            ("/hello".to_owned(), "/hello"),
            ("/clusters".to_owned(), "/clusters"),
            ("/clusters/".to_owned(), "/clusters"),
            (format!("/clusters/{id}"), "/clusters/{id}"),
            (format!("/clusters/{id}/flags"), "/clusters/{id}/flags"),
            ("/nodes".to_owned(), "/nodes"),
            (format!("/nodes/{id}"), "/nodes/{id}"),
            (format!("/nodes/{id}/state"), "/nodes/{id}/state"),
            ("/devices".to_owned(), "/devices"),
            (format!("/devices/{id}"), "/devices/{id}"),
            (format!("/devices/{id}/state"), "/devices/{id}/state"),
            ("/volumes".to_owned(), "/volumes"),
            (format!("/volumes/{id}"), "/volumes/{id}"),
            (format!("/volumes/{id}/expand"), "/volumes/{id}/expand"),
            (format!("/volumes/{id}/clone"), "/volumes/{id}/clone"),
            (format!("/queue/{id}"), "/queue/{id}"),
            ("/queue".to_owned(), "other"),
            (format!("/volumes/{id}/snapshot"), "other"),
            ("/".to_owned(), "other"),
            (String::new(), "other"),
            ("/metrics".to_owned(), "other"),
        ];
        for (path, want) in cases {
            assert_eq!(route_class(&path), want, "{path:?}");
        }
    }

    #[test]
    fn reasons_have_stable_names() {
        let names: Vec<String> = [
            RetryReason::TooManyRequests,
            RetryReason::ServiceUnavailable,
            RetryReason::Transport,
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(names, ["429", "503", "transport"]);
    }
}
