//! Heketi's JWT authentication.
//!
//! Every HTTP request carries `Authorization: bearer <token>` where the token is HS256-signed
//! with the user's secret and holds four claims: `iss` (the user, `admin` or `user`), `iat`,
//! `exp` (we use `iat` + [`TOKEN_LIFETIME_SECS`], one minute) and `qsh`, the hex SHA-256 of `METHOD&/path` (path only:
//! no host, no query). Because `qsh` binds the token to one method and path, a new token is
//! made for each request, including each `/queue` poll and the request after a redirect.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// How long a token stays valid after it is issued, in seconds.
///
/// A token is made for each request and sent at once, so it needs to live only as long as
/// the request takes to arrive; a short life limits what a captured token is worth (Heketi's
/// `qsh` covers method and path, not the body). The clocks of the client and Heketi must
/// agree to well within this.
///
/// # Example
/// ```no_run
/// let c = heketi_client::auth::Claims::new("admin", "GET", "/volumes", 100);
/// assert_eq!(c.exp - c.iat, heketi_client::auth::TOKEN_LIFETIME_SECS);
/// ```
pub const TOKEN_LIFETIME_SECS: u64 = 60;

/// The claims Heketi checks.
///
/// # Example
/// ```no_run
/// let c = heketi_client::auth::Claims::new("admin", "GET", "/volumes", 1_700_000_000);
/// assert_eq!(c.exp, 1_700_000_060);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer: the Heketi user (`admin` or `user`).
    pub iss: String,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Query string hash, see [`qsh`].
    pub qsh: String,
}

impl Claims {
    /// Claims for one request by `user`, issued at `now` (Unix seconds).
    ///
    /// # Example
    /// ```no_run
    /// let c = heketi_client::auth::Claims::new("user", "POST", "/volumes", 1_700_000_000);
    /// assert_eq!(c.qsh, heketi_client::auth::qsh("POST", "/volumes"));
    /// ```
    pub fn new(user: &str, method: &str, path: &str, now: u64) -> Self {
        Self {
            iss: user.to_owned(),
            iat: now,
            exp: now.saturating_add(TOKEN_LIFETIME_SECS),
            qsh: qsh(method, path),
        }
    }
}

/// The `qsh` claim: lowercase hex SHA-256 of `METHOD&path`. heketi-server checks tokens
/// against this same function.
///
/// # Example
/// ```no_run
/// assert_eq!(
///     heketi_client::auth::qsh("GET", "/volumes"),
///     "c162acc9024272120bacfff7709c932cc252337d0a30fa15b025010066662bea",
/// );
/// ```
pub fn qsh(method: &str, path: &str) -> String {
    let mut h = Sha256::new();
    h.update(method.as_bytes());
    h.update(b"&");
    h.update(path.as_bytes());
    hex::encode(h.finalize())
}

/// A signed HS256 token for one request, issued at `now` (Unix seconds).
///
/// # Example
/// ```no_run
/// use secrecy::SecretString;
/// let key = SecretString::from("My Secret");
/// let t = heketi_client::auth::token("admin", &key, "GET", "/volumes", 1_700_000_000)?;
/// println!("Authorization: bearer {}…", &t[..10]);
/// # Ok::<(), heketi_client::Error>(())
/// ```
pub fn token(user: &str, key: &SecretString, method: &str, path: &str, now: u64) -> Result<String> {
    let claims = Claims::new(user, method, path, now);
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    let key = jsonwebtoken::EncodingKey::from_secret(key.expose_secret().as_bytes());
    jsonwebtoken::encode(&header, &claims, &key).map_err(Error::Auth)
}

/// Current Unix time in seconds (0 if the clock is before 1970).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors computed independently (Python hashlib/hmac), not with this code.
    #[test]
    fn qsh_matches_known_vectors() {
        let cases = [
            (
                "GET",
                "/volumes",
                "c162acc9024272120bacfff7709c932cc252337d0a30fa15b025010066662bea",
            ),
            (
                "POST",
                "/volumes/0123456789abcdef0123456789abcdef/expand",
                "6f1c70e03e027b02bcd64f580451973b44d68727d96c12cc0701b1e46af62cc1",
            ),
            (
                "POST",
                "/volumes",
                "3a9831a9908924e3f78fe948585f41849e92724522f5153cb91aff7f8ea48eac",
            ),
            (
                "GET",
                "/queue/abc",
                "1dc5d28cbbef0c3fb93ba3b9376979682bd576714e5aeb245a5adf51b20f994c",
            ),
        ];
        for (m, p, want) in cases {
            assert_eq!(qsh(m, p), want, "{m} {p}");
        }
    }

    #[test]
    fn token_matches_known_vector() {
        let key = SecretString::from("My Secret");
        let got = token("admin", &key, "GET", "/volumes", 1_700_000_000);
        let want = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.\
            eyJpc3MiOiJhZG1pbiIsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjoxNzAwMDAwMDYwLCJxc2giOiJjMTYy\
            YWNjOTAyNDI3MjEyMGJhY2ZmZjc3MDljOTMyY2MyNTIzMzdkMGEzMGZhMTViMDI1MDEwMDY2NjYyYmVhIn0.\
            F_HjlDvWFHtX3_gwtHILCLCLPHwvRZ5fGEUx3Vb0YEA";
        assert_eq!(got.ok().as_deref(), Some(want));
    }

    /// HS256 verification without expiry or required claims (the tokens are from the past).
    fn validation() -> jsonwebtoken::Validation {
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        v.validate_exp = false;
        v.required_spec_claims.clear();
        v
    }

    /// The claims of `t`, verified with the key `k`.
    fn decode_with_k(t: &str) -> jsonwebtoken::TokenData<Claims> {
        let decoded = jsonwebtoken::decode::<Claims>(
            t.as_bytes(),
            &jsonwebtoken::DecodingKey::from_secret(b"k"),
            &validation(),
        );
        let Ok(d) = decoded else {
            panic!("decode: {decoded:?}");
        };
        d
    }

    #[test]
    fn tokens_live_at_most_a_minute() {
        const { assert!(TOKEN_LIFETIME_SECS <= 60) };
        let key = SecretString::from("k");
        let now = 1_800_000_000;
        let Ok(t) = token("admin", &key, "POST", "/volumes", now) else {
            panic!("token");
        };
        let d = decode_with_k(&t);
        assert_eq!(d.claims.iat, now);
        assert!(d.claims.exp > now, "{:?}", d.claims);
        assert!(d.claims.exp - now <= 60, "{:?}", d.claims);
    }

    #[test]
    fn token_verifies_and_binds_method_and_path() {
        let key = SecretString::from("k");
        let now = 1_800_000_000;
        let Ok(t) = token("user", &key, "DELETE", "/volumes/ab", now) else {
            panic!("token");
        };
        let d = decode_with_k(&t);
        assert_eq!(d.claims, Claims::new("user", "DELETE", "/volumes/ab", now));
        assert_ne!(d.claims.qsh, qsh("GET", "/volumes/ab"));
        // A different key must not verify.
        assert!(
            jsonwebtoken::decode::<Claims>(
                t.as_bytes(),
                &jsonwebtoken::DecodingKey::from_secret(b"other"),
                &validation()
            )
            .is_err()
        );
    }
}
