//! Property tests of heketi-server's JWT verification ([`heketi_server::jwt::authenticate`]):
//! whatever arrives in the `Authorization` header, the check never panics, and every refusal is
//! one of Heketi's [`AuthError`]s with Heketi's status code (400 for a malformed header, 401
//! otherwise). Tokens are built with `jsonwebtoken`, as another client would.

use heketi_client::auth::qsh;
use heketi_server::config::AuthKeys;
use heketi_server::jwt::{AuthError, IAT_LEEWAY_SECS, Issuer, authenticate};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use proptest::prelude::*;
use secrecy::SecretString;

const ADMIN_KEY: &str = "admin-secret";
const USER_KEY: &str = "user-secret";
const NOW: i64 = 1_700_000_000;

fn keys() -> AuthKeys {
    AuthKeys {
        admin: SecretString::from(ADMIN_KEY),
        user: Some(SecretString::from(USER_KEY)),
    }
}

fn sign(key: &str, alg: Algorithm, claims: &serde_json::Value) -> String {
    match encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(key.as_bytes()),
    ) {
        Ok(t) => t,
        Err(e) => panic!("cannot sign a test token: {e}"),
    }
}

/// The refusal is Heketi's: a known variant with the status Heketi uses for it.
fn is_documented(e: &AuthError) -> bool {
    let status = e.status().as_u16();
    match e {
        AuthError::BadHeader => status == 400,
        AuthError::Missing | AuthError::Qsh | AuthError::AdminRequired => status == 401,
        AuthError::Invalid(msg) => status == 401 && !msg.is_empty(),
    }
}

fn check(header: &[u8], method: &str, path: &str, now: i64) -> Result<Issuer, AuthError> {
    authenticate(&keys(), Some(header), method, path, now)
}

fn method() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["GET", "POST", "DELETE", "PUT", "get", ""]).prop_map(str::to_owned)
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/volumes".to_owned()),
        Just("/clusters".to_owned()),
        "/[a-z]{1,8}(/[0-9a-f]{1,32})?",
        any::<String>(),
    ]
}

/// A time claim: absent, near now, anywhere, or at the ends of `i64`.
fn time_claim() -> impl Strategy<Value = Option<i64>> {
    prop_oneof![
        Just(None),
        (NOW - 1000..NOW + 1000).prop_map(Some),
        any::<i64>().prop_map(Some),
        (i64::MIN..i64::MIN + 300).prop_map(Some),
        (i64::MAX - 300..=i64::MAX).prop_map(Some),
    ]
}

/// Any JSON scalar, for claims of the wrong type.
fn json_scalar() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        ".{0,40}".prop_map(serde_json::Value::from),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary header bytes: never a panic, always a documented refusal (nothing forged
    /// passes).
    #[test]
    fn arbitrary_headers_are_refused_with_heketis_errors(
        header in prop::collection::vec(any::<u8>(), 0..300),
        method in method(),
        path in path(),
    ) {
        match check(&header, &method, &path, NOW) {
            Ok(who) => prop_assert!(false, "accepted {header:?} as {who:?}"),
            Err(e) => prop_assert!(is_documented(&e), "{e:?}"),
        }
    }

    /// Text shaped like a bearer token with three dot-separated base64url-ish segments.
    #[test]
    fn token_shaped_garbage_is_invalid(
        scheme in prop::sample::select(vec!["bearer", "Bearer", "BEARER", "basic", ""]),
        a in "[A-Za-z0-9_=+/-]{0,60}",
        b in "[A-Za-z0-9_=+/-]{0,120}",
        c in "[A-Za-z0-9_=+/-]{0,60}",
    ) {
        let header = format!("{scheme} {a}.{b}.{c}");
        match check(header.as_bytes(), "GET", "/volumes", NOW) {
            Ok(who) => prop_assert!(false, "accepted {header:?} as {who:?}"),
            Err(e) => prop_assert!(is_documented(&e), "{e:?}"),
        }
    }

    /// Correctly signed tokens with arbitrary claim values (any integers for the time claims,
    /// any issuer, claims of the wrong JSON type): never a panic; accepted exactly when Heketi
    /// accepts.
    #[test]
    fn signed_tokens_with_arbitrary_claims(
        iss in prop_oneof![Just(Some("admin".to_owned())), Just(Some("user".to_owned())),
                           Just(None), ".{0,12}".prop_map(Some)],
        exp in time_claim(),
        iat in time_claim(),
        nbf in time_claim(),
        qsh_ok in any::<bool>(),
        odd_claim in prop::option::of(json_scalar()),
        method in method(),
        path in path(),
        alg in prop::sample::select(vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]),
    ) {
        let mut claims = serde_json::Map::new();
        if let Some(i) = &iss { claims.insert("iss".into(), i.clone().into()); }
        if let Some(v) = exp { claims.insert("exp".into(), v.into()); }
        if let Some(v) = iat { claims.insert("iat".into(), v.into()); }
        if let Some(v) = nbf { claims.insert("nbf".into(), v.into()); }
        let q = if qsh_ok { qsh(&method, &path) } else { qsh(&method, "/elsewhere") };
        let q_match = q == qsh(&method, &path);
        claims.insert("qsh".into(), q.into());
        if let Some(v) = odd_claim { claims.insert("aud".into(), v); }
        let key = if iss.as_deref() == Some("user") { USER_KEY } else { ADMIN_KEY };
        let token = sign(key, alg, &serde_json::Value::Object(claims));
        let got = check(format!("bearer {token}").as_bytes(), &method, &path, NOW);

        let times_ok = exp.is_some_and(|e| NOW <= e)
            && iat.is_none_or(|i| i128::from(NOW) >= i128::from(i) - i128::from(IAT_LEEWAY_SECS))
            && nbf.is_none_or(|n| NOW >= n);
        let issuer = match iss.as_deref() {
            Some("admin") => Some(Issuer::Admin),
            Some("user") => Some(Issuer::User),
            _ => None,
        };
        match (&got, issuer) {
            (Ok(who), Some(want)) => {
                prop_assert_eq!(*who, want);
                prop_assert!(times_ok && q_match);
                prop_assert!(want == Issuer::Admin || path == "/volumes");
            }
            (Ok(who), None) => prop_assert!(false, "accepted issuer {iss:?} as {who:?}"),
            (Err(e), _) => {
                prop_assert!(is_documented(e), "{e:?}");
                let should_pass = issuer.is_some() && times_ok && q_match
                    && (issuer == Some(Issuer::Admin) || path == "/volumes");
                prop_assert!(!should_pass, "refused a good token: {e:?}");
            }
        }
    }

    /// A good admin token with one byte changed anywhere is refused (or, when the change keeps
    /// the token equivalent, e.g. in a base64 padding bit, still names the same request).
    #[test]
    fn tampered_tokens_are_refused(pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let claims = serde_json::json!({
            "iss": "admin", "iat": NOW, "exp": NOW + 300, "qsh": qsh("GET", "/clusters"),
        });
        let token = sign(ADMIN_KEY, Algorithm::HS256, &claims);
        let mut bytes = token.into_bytes();
        let i = pos.index(bytes.len());
        bytes[i] = byte;
        let mut header = b"bearer ".to_vec();
        header.extend_from_slice(&bytes);
        match check(&header, "GET", "/clusters", NOW) {
            Ok(_) => {
                // Only a change the decoder cannot see (trailing bits of a base64 group) may
                // pass; the token must still be for this very request.
                let text = String::from_utf8_lossy(&bytes).into_owned();
                prop_assert_eq!(text.split('.').count(), 3);
            }
            Err(e) => prop_assert!(is_documented(&e), "{e:?}"),
        }
    }

    /// A token signed with any other key is refused with Heketi's "secrets may not match".
    #[test]
    fn other_keys_are_refused(other in "[ -~]{1,64}") {
        prop_assume!(other != ADMIN_KEY);
        let claims = serde_json::json!({
            "iss": "admin", "iat": NOW, "exp": NOW + 300, "qsh": qsh("GET", "/volumes"),
        });
        let token = sign(&other, Algorithm::HS256, &claims);
        let got = check(format!("bearer {token}").as_bytes(), "GET", "/volumes", NOW);
        prop_assert_eq!(
            got,
            Err(AuthError::Invalid(
                "signature is invalid (client and server secrets may not match)".into()
            ))
        );
    }
}

/// Extreme time claims (the ends of `i64`) are refused without arithmetic overflow.
#[test]
fn extreme_time_claims_do_not_overflow() {
    for (exp, iat) in [
        (i64::MIN, None),
        (i64::MIN + 1, Some(i64::MIN)),
        (i64::MAX, Some(i64::MIN)),
        (i64::MAX, Some(i64::MAX)),
    ] {
        let mut claims = serde_json::json!({
            "iss": "admin", "exp": exp, "qsh": qsh("GET", "/volumes"),
        });
        if let (Some(i), Some(obj)) = (iat, claims.as_object_mut()) {
            obj.insert("iat".into(), i.into());
        }
        let token = sign(ADMIN_KEY, Algorithm::HS256, &claims);
        for now in [NOW, i64::MIN, i64::MAX] {
            let got = check(format!("bearer {token}").as_bytes(), "GET", "/volumes", now);
            if let Err(e) = &got {
                assert!(is_documented(e), "{e:?}");
            }
        }
    }
}
