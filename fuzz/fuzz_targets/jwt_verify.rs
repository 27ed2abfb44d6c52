//! heketi-server's JWT check. Two inputs from one: the raw bytes as an `Authorization` header,
//! and the bytes as a claims document signed with the server's own admin key (so the claim
//! checks behind the signature are reached too). Nothing panics; every refusal is one of
//! Heketi's errors with Heketi's status.
#![no_main]

use heketi_server::config::AuthKeys;
use heketi_server::jwt::{AuthError, authenticate};
use jsonwebtoken::{EncodingKey, Header, encode};
use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;

const NOW: i64 = 1_700_000_000;

fn check(keys: &AuthKeys, header: &[u8]) {
    for (method, path) in [
        ("GET", "/volumes"),
        ("POST", "/clusters"),
        ("DELETE", "/volumes/x"),
    ] {
        match authenticate(keys, Some(header), method, path, NOW) {
            Ok(_) => {}
            Err(e @ AuthError::BadHeader) => assert_eq!(e.status().as_u16(), 400),
            Err(e) => assert_eq!(e.status().as_u16(), 401),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let keys = AuthKeys {
        admin: SecretString::from("fuzz-admin-key"),
        user: Some(SecretString::from("fuzz-user-key")),
    };
    check(&keys, data);
    if let Ok(claims) = serde_json::from_slice::<serde_json::Value>(data)
        && let Ok(token) = encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(b"fuzz-admin-key"),
        )
    {
        check(&keys, format!("bearer {token}").as_bytes());
    }
});
