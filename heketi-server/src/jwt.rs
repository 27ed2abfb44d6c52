//! JWT authentication as Heketi does it.
//!
//! A request carries `Authorization: bearer <token>` (scheme case-insensitive). The token is
//! signed with HMAC (HS256 in practice) using the secret of its issuer: `iss` is `admin` or
//! `user`. `exp` is mandatory, `iat` may lie up to 120 s in the future (clock skew), and `qsh`
//! must be `hex(sha256(METHOD + "&" + path))` of this very request, computed by
//! [`heketi_client::auth::qsh`] (one implementation for client and server). A `user` token may
//! only be used on the path `/volumes` itself. The messages and status codes are Heketi's.

use axum::http::StatusCode;
use heketi_client::auth::qsh;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use secrecy::ExposeSecret;
use serde::Deserialize;

use crate::config::AuthKeys;

/// Seconds a token's `iat` may be ahead of our clock.
pub const IAT_LEEWAY_SECS: i64 = 120;

/// Who signed a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Issuer {
    /// Full access.
    Admin,
    /// Only `/volumes` (list and create).
    User,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The `Authorization` header is not `bearer <token>`.
    #[error("Authorization header format must be Bearer {{token}}")]
    BadHeader,
    /// No token at all.
    #[error("Required authorization token not found")]
    Missing,
    /// The token does not parse, is not ours, or its time claims are off.
    #[error("Invalid JWT token: {0}")]
    Invalid(String),
    /// The token was made for another request.
    #[error("Invalid qsh claim in token")]
    Qsh,
    /// A `user` token on an administrator path.
    #[error("Administrator access required")]
    AdminRequired,
}

impl AuthError {
    /// Heketi's status code for this refusal.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::BadHeader => StatusCode::BAD_REQUEST,
            _ => StatusCode::UNAUTHORIZED,
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default)]
    nbf: Option<i64>,
    #[serde(default)]
    qsh: Option<String>,
}

/// Checks the `Authorization` header of a request for `method` on `path` at time `now`
/// (Unix seconds) and returns who made it.
pub fn authenticate(
    keys: &AuthKeys,
    authorization: Option<&[u8]>,
    method: &str,
    path: &str,
    now: i64,
) -> Result<Issuer, AuthError> {
    let token = match authorization {
        None => return Err(AuthError::Missing),
        Some(raw) => {
            let text = std::str::from_utf8(raw).map_err(|_| AuthError::BadHeader)?;
            let parts: Vec<&str> = text.split_whitespace().collect();
            match parts.as_slice() {
                [] => return Err(AuthError::Missing),
                [scheme, token] if scheme.eq_ignore_ascii_case("bearer") => *token,
                _ => return Err(AuthError::BadHeader),
            }
        }
    };

    if token.split('.').count() != 3 {
        return Err(AuthError::Invalid(
            "token contains an invalid number of segments".into(),
        ));
    }
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| AuthError::Invalid(format!("malformed token header: {e}")))?;
    if header.alg.family() != AlgorithmFamily::Hmac {
        return Err(AuthError::Invalid(format!(
            "Unexpected signing method: {:?}",
            header.alg
        )));
    }
    let claims: Claims = jsonwebtoken::dangerous::insecure_decode_claims(token)
        .map_err(|e| AuthError::Invalid(format!("malformed token claims: {e}")))?;

    let (issuer, secret) = match claims.iss.as_deref() {
        None | Some("") => return Err(AuthError::Invalid("Token missing iss claim".into())),
        Some("admin") => (Issuer::Admin, keys.admin.expose_secret()),
        Some("user") => match &keys.user {
            Some(k) => (Issuer::User, k.expose_secret()),
            None => return Err(AuthError::Invalid("Unknown user".into())),
        },
        Some(_) => return Err(AuthError::Invalid("Unknown user".into())),
    };

    // Time claims first, the signature last: like Heketi, a bad signature is the error
    // reported when both are wrong.
    let mut claim_error = None;
    let exp = claims.exp.unwrap_or(0);
    if now > exp {
        claim_error = Some(format!(
            "Token is expired by {}",
            go_duration(now.saturating_sub(exp))
        ));
    }
    if let Some(iat) = claims.iat
        && now < iat.saturating_sub(IAT_LEEWAY_SECS)
    {
        claim_error = Some("Token used before issued (client and server clocks may differ)".into());
    }
    if let Some(nbf) = claims.nbf
        && now < nbf
    {
        claim_error = Some("token is not valid yet".into());
    }

    let mut validation = Validation::new(Algorithm::HS256);
    validation.algorithms = AlgorithmFamily::Hmac.algorithms().to_vec();
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    if jsonwebtoken::decode::<serde_json::Value>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .is_err()
    {
        return Err(AuthError::Invalid(
            "signature is invalid (client and server secrets may not match)".into(),
        ));
    }
    if let Some(msg) = claim_error {
        return Err(AuthError::Invalid(msg));
    }

    if claims.qsh.as_deref() != Some(qsh(method, path).as_str()) {
        return Err(AuthError::Qsh);
    }
    if issuer == Issuer::User && path != "/volumes" {
        return Err(AuthError::AdminRequired);
    }
    Ok(issuer)
}

/// Formats whole seconds the way Go prints a `time.Duration` (`0s`, `42s`, `5m3s`, `2h0m1s`).
pub fn go_duration(secs: i64) -> String {
    let neg = secs < 0;
    let s = secs.unsigned_abs();
    let (h, m, sec) = (s / 3600, (s / 60) % 60, s % 60);
    let body = if h > 0 {
        format!("{h}h{m}m{sec}s")
    } else if m > 0 {
        format!("{m}m{sec}s")
    } else {
        format!("{sec}s")
    };
    if neg { format!("-{body}") } else { body }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use secrecy::SecretString;

    const NOW: i64 = 1_700_000_000;

    fn keys() -> AuthKeys {
        AuthKeys {
            admin: SecretString::from("secret"),
            user: Some(SecretString::from("usersecret")),
        }
    }

    fn token(alg: Algorithm, key: &str, claims: serde_json::Value) -> String {
        encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(key.as_bytes()),
        )
        .unwrap_or_default()
    }

    fn good(iss: &str, method: &str, path: &str) -> serde_json::Value {
        serde_json::json!({"iss": iss, "iat": NOW, "exp": NOW + 300, "qsh": qsh(method, path)})
    }

    fn check(header: &str, method: &str, path: &str) -> Result<Issuer, AuthError> {
        authenticate(&keys(), Some(header.as_bytes()), method, path, NOW)
    }

    #[test]
    fn accepts_a_token_made_by_another_implementation() {
        // Made with Python's hmac/hashlib, secret "secret", iat NOW, exp NOW+300, GET /volumes.
        let t = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJhZG1pbiIsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjoxNzAwMDAwMzAwLCJxc2giOiJjMTYyYWNjOTAyNDI3MjEyMGJhY2ZmZjc3MDljOTMyY2MyNTIzMzdkMGEzMGZhMTViMDI1MDEwMDY2NjYyYmVhIn0.hsCDlTXRBf_3wJ4N2sgHGKVeezvEiegA9vcm60PCXRM";
        assert_eq!(
            check(&format!("bearer {t}"), "GET", "/volumes"),
            Ok(Issuer::Admin)
        );
        assert_eq!(
            check(&format!("Bearer {t}"), "POST", "/volumes"),
            Err(AuthError::Qsh)
        );
    }

    type Case = (
        &'static str,
        String,
        &'static str,
        &'static str,
        Result<Issuer, AuthError>,
    );

    #[test]
    fn table() {
        let admin = |c| token(Algorithm::HS256, "secret", c);
        let user = |c| token(Algorithm::HS256, "usersecret", c);
        let inv = |m: &str| Err(AuthError::Invalid(m.to_owned()));
        let cases: Vec<Case> = vec![
            (
                "admin ok, scheme case-insensitive",
                format!("BeArEr {}", admin(good("admin", "GET", "/clusters"))),
                "GET",
                "/clusters",
                Ok(Issuer::Admin),
            ),
            (
                "user on /volumes",
                format!("bearer {}", user(good("user", "POST", "/volumes"))),
                "POST",
                "/volumes",
                Ok(Issuer::User),
            ),
            (
                "user elsewhere",
                format!(
                    "bearer {}",
                    user(good(
                        "user",
                        "GET",
                        "/volumes/0123456789abcdef0123456789abcdef"
                    ))
                ),
                "GET",
                "/volumes/0123456789abcdef0123456789abcdef",
                Err(AuthError::AdminRequired),
            ),
            (
                "user key used for admin",
                format!("bearer {}", user(good("admin", "GET", "/volumes"))),
                "GET",
                "/volumes",
                inv("signature is invalid (client and server secrets may not match)"),
            ),
            (
                "unknown issuer",
                format!("bearer {}", admin(good("root", "GET", "/volumes"))),
                "GET",
                "/volumes",
                inv("Unknown user"),
            ),
            (
                "no iss",
                format!(
                    "bearer {}",
                    admin(serde_json::json!({"exp": NOW + 9, "qsh": qsh("GET", "/volumes")}))
                ),
                "GET",
                "/volumes",
                inv("Token missing iss claim"),
            ),
            (
                "no exp",
                format!(
                    "bearer {}",
                    admin(
                        serde_json::json!({"iss": "admin", "iat": NOW, "qsh": qsh("GET", "/volumes")})
                    )
                ),
                "GET",
                "/volumes",
                inv(&format!("Token is expired by {}", go_duration(NOW))),
            ),
            (
                "expired",
                format!(
                    "bearer {}",
                    admin(
                        serde_json::json!({"iss": "admin", "exp": NOW - 61, "qsh": qsh("GET", "/volumes")})
                    )
                ),
                "GET",
                "/volumes",
                inv("Token is expired by 1m1s"),
            ),
            (
                "iat within leeway",
                format!(
                    "bearer {}",
                    admin(
                        serde_json::json!({"iss": "admin", "iat": NOW + 120, "exp": NOW + 300, "qsh": qsh("GET", "/volumes")})
                    )
                ),
                "GET",
                "/volumes",
                Ok(Issuer::Admin),
            ),
            (
                "iat beyond leeway",
                format!(
                    "bearer {}",
                    admin(
                        serde_json::json!({"iss": "admin", "iat": NOW + 121, "exp": NOW + 300, "qsh": qsh("GET", "/volumes")})
                    )
                ),
                "GET",
                "/volumes",
                inv("Token used before issued (client and server clocks may differ)"),
            ),
            (
                "query string is not part of qsh",
                format!("bearer {}", admin(good("admin", "GET", "/volumes?x=1"))),
                "GET",
                "/volumes",
                Err(AuthError::Qsh),
            ),
            (
                "HS512 accepted like Heketi",
                format!(
                    "bearer {}",
                    token(Algorithm::HS512, "secret", good("admin", "GET", "/volumes"))
                ),
                "GET",
                "/volumes",
                Ok(Issuer::Admin),
            ),
            (
                "garbage",
                "bearer abc".into(),
                "GET",
                "/volumes",
                inv("token contains an invalid number of segments"),
            ),
            (
                "wrong scheme",
                "Basic abc".into(),
                "GET",
                "/volumes",
                Err(AuthError::BadHeader),
            ),
            (
                "three words",
                "bearer a b".into(),
                "GET",
                "/volumes",
                Err(AuthError::BadHeader),
            ),
        ];
        for (name, header, method, path, want) in cases {
            assert_eq!(check(&header, method, path), want, "{name}");
        }
    }

    #[test]
    fn missing_header_and_statuses() {
        assert_eq!(
            authenticate(&keys(), None, "GET", "/volumes", NOW),
            Err(AuthError::Missing)
        );
        assert_eq!(AuthError::Missing.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(AuthError::BadHeader.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            AuthError::Missing.to_string(),
            "Required authorization token not found"
        );
    }

    #[test]
    fn user_token_without_user_key_is_unknown() {
        let keys = AuthKeys {
            admin: SecretString::from("secret"),
            user: None,
        };
        let t = token(Algorithm::HS256, "x", good("user", "GET", "/volumes"));
        assert_eq!(
            authenticate(
                &keys,
                Some(format!("bearer {t}").as_bytes()),
                "GET",
                "/volumes",
                NOW
            ),
            Err(AuthError::Invalid("Unknown user".into()))
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(59), "59s");
        assert_eq!(go_duration(60), "1m0s");
        assert_eq!(go_duration(3601), "1h0m1s");
    }
}
