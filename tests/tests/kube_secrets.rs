//! In-tree style Heketi secrets (`secretName`/`secretNamespace`) read through the Kubernetes
//! API by the controller's `SecretReader`.
//!
//! Fake Kubernetes API server: no API server can run on this machine, so these tests talk to
//! `kube_fake::FakeApi`, a small HTTP server serving the API's JSON for the paths used.

mod kube_fake;

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use gluster_csi_controller::error::Error;
use gluster_csi_controller::kube::LazyClient;
use gluster_csi_controller::kube::secrets::{SecretError, SecretReader, class_credentials};
use gluster_csi_controller::params::ClassParams;
use kube_fake::FakeApi;
use secrecy::ExposeSecret as _;
use serde_json::json;

const SECRETS: &str = "/api/v1/namespaces/storage/secrets";

fn secret(name: &str, type_: &str, data: &[(&str, &str)]) -> serde_json::Value {
    let data: serde_json::Map<String, serde_json::Value> = data
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(STANDARD.encode(v))))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "storage"},
        "type": type_,
        "data": data,
    })
}

async fn fake_with_secrets() -> FakeApi {
    let api = FakeApi::start().await;
    api.put(
        SECRETS,
        secret(
            "heketi",
            "kubernetes.io/glusterfs",
            &[("key", "s3cret-admin-key\n"), ("user", "admin")],
        ),
    );
    api.put(
        SECRETS,
        secret("opaque", "Opaque", &[("key", "s3cret-opaque-key")]),
    );
    api.put(
        SECRETS,
        secret(
            "no-key-entry",
            "kubernetes.io/glusterfs",
            &[("adminkey", "first"), ("userkey", "s3cret-last")],
        ),
    );
    api.put(SECRETS, secret("empty", "kubernetes.io/glusterfs", &[]));
    api
}

/// A reader built the way the controller builds it: from a configuration, on first use.
fn reader(api: &FakeApi) -> SecretReader {
    SecretReader::new(LazyClient::from_config(kube::Config::new(
        api.url().parse().expect("url"),
    )))
}

#[tokio::test]
async fn the_key_entry_of_a_glusterfs_secret_is_read() {
    let api = fake_with_secrets().await;
    let key = reader(&api)
        .heketi_key("storage", "heketi")
        .await
        .expect("key read");
    assert_eq!(
        key.expose_secret(),
        "s3cret-admin-key",
        "trailing newline dropped"
    );
    assert!(
        api.requests()
            .iter()
            .any(|r| r == "GET /api/v1/namespaces/storage/secrets/heketi"),
        "{:?}",
        api.requests()
    );
}

#[tokio::test]
async fn a_missing_secret_is_invalid_argument_naming_it() {
    let api = fake_with_secrets().await;
    let e = reader(&api)
        .heketi_key("storage", "nope")
        .await
        .expect_err("missing");
    assert!(matches!(e, SecretError::NotFound { .. }), "{e:?}");
    assert!(e.is_invalid_argument());
    let msg = e.to_string();
    assert!(msg.contains("storage/nope"), "{msg}");
    let status = tonic::Status::from(Error::from(e));
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("storage/nope"), "{status:?}");
}

#[tokio::test]
async fn a_secret_of_another_type_is_refused_naming_the_expected_type() {
    let api = fake_with_secrets().await;
    let e = reader(&api)
        .heketi_key("storage", "opaque")
        .await
        .expect_err("wrong type");
    let msg = e.to_string();
    assert!(
        msg.contains("kubernetes.io/glusterfs") && msg.contains("Opaque"),
        "{msg}"
    );
    assert!(
        !format!("{e:?}").contains("s3cret"),
        "no secret value in Debug"
    );
    assert!(!msg.contains("s3cret"), "no secret value in the message");
    assert_eq!(Error::from(e).code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn without_a_key_entry_the_last_entry_is_used_as_in_tree() {
    let api = fake_with_secrets().await;
    let key = reader(&api)
        .heketi_key("storage", "no-key-entry")
        .await
        .expect("fallback");
    assert_eq!(key.expose_secret(), "s3cret-last");
}

#[tokio::test]
async fn a_secret_without_data_is_invalid_argument() {
    let api = fake_with_secrets().await;
    let e = reader(&api)
        .heketi_key("storage", "empty")
        .await
        .expect_err("empty");
    assert!(matches!(e, SecretError::Empty { .. }), "{e:?}");
    assert_eq!(Error::from(e).code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn forbidden_and_unavailable_api_are_not_the_users_fault() {
    let api = fake_with_secrets().await;
    api.fail(
        "/api/v1/namespaces/storage/secrets/heketi",
        403,
        "Forbidden",
    );
    let e = reader(&api)
        .heketi_key("storage", "heketi")
        .await
        .expect_err("forbidden");
    assert!(e.to_string().contains("get` on secrets"), "{e}");
    assert_eq!(Error::from(e).code(), tonic::Code::FailedPrecondition);

    api.fail(
        "/api/v1/namespaces/storage/secrets/heketi",
        503,
        "ServiceUnavailable",
    );
    let e = reader(&api)
        .heketi_key("storage", "heketi")
        .await
        .expect_err("unavailable");
    assert!(e.is_retryable(), "{e:?}");
    assert_eq!(Error::from(e).code(), tonic::Code::Unavailable);
}

#[tokio::test]
async fn the_client_is_built_only_when_a_secret_is_needed() {
    let api = fake_with_secrets().await;
    let reader = reader(&api);
    let params = ClassParams::parse(&HashMap::from([(
        "restuserkey".to_owned(),
        "plain".to_owned(),
    )]))
    .expect("class");
    let creds = class_credentials(&params, &HashMap::new(), &reader)
        .await
        .expect("no API needed")
        .expect("restuserkey");
    assert_eq!(creds.key.as_ref().map(|k| k.expose_secret()), Some("plain"));
    assert!(api.requests().is_empty(), "{:?}", api.requests());
    assert!(format!("{reader:?}").contains("built: false"), "{reader:?}");
}

#[tokio::test]
async fn class_credentials_follow_the_in_tree_precedence() {
    let api = fake_with_secrets().await;
    let reader = reader(&api);
    let class = |extra: &[(&str, &str)]| {
        let mut m: HashMap<String, String> = HashMap::from([
            ("secretName".to_owned(), "heketi".to_owned()),
            ("secretNamespace".to_owned(), "storage".to_owned()),
            ("restuser".to_owned(), "admin".to_owned()),
        ]);
        for (k, v) in extra {
            m.insert((*k).to_owned(), (*v).to_owned());
        }
        ClassParams::parse(&m).expect("class")
    };

    // The Secret wins over restuserkey, as in-tree.
    let c = class_credentials(
        &class(&[("restuserkey", "plain")]),
        &HashMap::new(),
        &reader,
    )
    .await
    .expect("ok")
    .expect("some");
    assert_eq!(c.user, "admin");
    assert_eq!(
        c.key.as_ref().map(|k| k.expose_secret()),
        Some("s3cret-admin-key")
    );

    // A CSI secret handed over by the sidecar wins over both.
    let csi = HashMap::from([("key".to_owned(), "from-csi".to_owned())]);
    let c = class_credentials(&class(&[]), &csi, &reader)
        .await
        .expect("ok")
        .expect("some");
    assert_eq!(c.key.as_ref().map(|k| k.expose_secret()), Some("from-csi"));

    // restauthenabled=false: no key at all and no API call for the Secret.
    let before = api.requests().len();
    let c = class_credentials(
        &class(&[("restauthenabled", "false")]),
        &HashMap::new(),
        &reader,
    )
    .await
    .expect("ok")
    .expect("some");
    assert!(c.key.is_none());
    assert_eq!(api.requests().len(), before);

    // A class naming a missing Secret fails CreateVolume with InvalidArgument.
    let mut m = HashMap::from([
        ("secretName".to_owned(), "gone".to_owned()),
        ("secretNamespace".to_owned(), "storage".to_owned()),
    ]);
    m.insert("volumetype".into(), "replicate:3".into());
    let e = class_credentials(
        &ClassParams::parse(&m).expect("class"),
        &HashMap::new(),
        &reader,
    )
    .await
    .expect_err("missing");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.to_string().contains("storage/gone"), "{e}");
}

/// The Secret of a backend of the backends file: any type, `key` and optional `user`; every
/// failure is FAILED_PRECONDITION naming the backend and the Secret, without a secret value.
#[tokio::test]
async fn backend_secrets_give_key_and_user_and_name_the_backend_when_unusable() {
    let api = fake_with_secrets().await;
    api.put(
        SECRETS,
        secret(
            "east",
            "Opaque",
            &[("key", "s3cret-east\n"), ("user", "user")],
        ),
    );
    api.put(SECRETS, secret("no-key", "Opaque", &[("user", "admin")]));
    let r = reader(&api);
    let c = r
        .backend_credentials("east", "storage", "east")
        .await
        .expect("read");
    assert_eq!(c.user, "user");
    assert_eq!(
        c.key.as_ref().map(|k| k.expose_secret().to_owned()),
        Some("s3cret-east".to_owned())
    );
    let c = r
        .backend_credentials("west", "storage", "heketi")
        .await
        .expect("a glusterfs-typed Secret works too");
    assert_eq!(c.user, "admin");
    for (name, phrase) in [("missing", "does not exist"), ("no-key", "no `key` entry")] {
        let e = r
            .backend_credentials("east", "storage", name)
            .await
            .expect_err(name);
        let s = tonic::Status::from(e);
        assert_eq!(s.code(), tonic::Code::FailedPrecondition, "{s:?}");
        assert!(
            s.message().contains(phrase)
                && s.message().contains("backend east")
                && s.message().contains(&format!("storage/{name}")),
            "{s:?}"
        );
        assert!(!s.message().contains("s3cret"), "{s:?}");
    }
}
