//! Unit tests of the pure conversion; the walk over realistic manifests is in
//! `tests/tests/migrate.rs`.

use super::*;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointSubset, GlusterfsPersistentVolumeSource,
};

const ID: &str = "a5b6c7d8e9f00112233445566778899a";

fn intree_pv(annotations: &[(&str, &str)], path: &str) -> PersistentVolume {
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some("pv1".into()),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            glusterfs: Some(GlusterfsPersistentVolumeSource {
                endpoints: "glusterfs-dynamic-x".into(),
                endpoints_namespace: Some("ns".into()),
                path: path.into(),
                read_only: None,
            }),
            persistent_volume_reclaim_policy: Some("Delete".into()),
            ..PersistentVolumeSpec::default()
        }),
        status: None,
    }
}

fn endpoints(ips: &[&str]) -> Endpoints {
    Endpoints {
        metadata: ObjectMeta::default(),
        subsets: Some(vec![EndpointSubset {
            addresses: Some(
                ips.iter()
                    .map(|ip| EndpointAddress {
                        ip: (*ip).to_owned(),
                        ..EndpointAddress::default()
                    })
                    .collect(),
            ),
            ..EndpointSubset::default()
        }]),
    }
}

fn class(params: &[(&str, &str)]) -> StorageClass {
    StorageClass {
        parameters: Some(
            params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        provisioner: INTREE_PLUGIN.into(),
        ..StorageClass::default()
    }
}

#[test]
fn heketi_id_from_annotation_then_path() {
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, Option<&'a str>);
    let cases: &[Case] = &[
        (&[(HEKETI_ID_ANNOTATION, ID)], "whatever", Some(ID)),
        (
            &[(HEKETI_ID_ANNOTATION, "A5B6C7D8E9F00112233445566778899A")],
            "x",
            Some(ID),
        ),
        (&[], "vol_a5b6c7d8e9f00112233445566778899a", Some(ID)),
        (&[], "/vol_a5b6c7d8e9f00112233445566778899a", Some(ID)),
        (&[(HEKETI_ID_ANNOTATION, "not-an-id")], "archive", None),
        (&[], "vol_short", None),
        (&[], "archive", None),
    ];
    for (ann, path, want) in cases {
        assert_eq!(
            heketi_id(&intree_pv(ann, path)).as_deref(),
            *want,
            "{ann:?} {path}"
        );
    }
}

#[test]
fn backend_precedence() {
    let sc = class(&[("RestUrl", "http://heketi.storage.svc:8080/")]);
    let mut o = Options::new("gluster.heketi.csi");
    assert_eq!(
        backend_for(Some(&sc), &o),
        BackendRef::Url("http://heketi.storage.svc:8080".into())
    );
    assert_eq!(backend_for(None, &o), BackendRef::Default);
    o.default_heketi_url = Some("http://heketi.storage.svc:8080".into());
    assert_eq!(backend_for(Some(&sc), &o), BackendRef::Default);
    o.heketi_url = Some("http://10.0.0.9:8080".into());
    assert_eq!(
        backend_for(Some(&sc), &o),
        BackendRef::Url("http://10.0.0.9:8080".into())
    );
}

#[test]
fn handle_uses_the_controller_id_format() {
    let h = volume_handle("pv1", Some(ID), &BackendRef::Default).expect("fits");
    assert_eq!(h, format!("1:{ID}"));
    let parsed = VolumeId::parse(&h).expect("parses");
    assert_eq!(parsed.heketi_id, ID);
    let url = BackendRef::Url("http://heketi.storage.svc:8080".into());
    let h = volume_handle("pv1", Some(ID), &url).expect("fits");
    assert_eq!(VolumeId::parse(&h).map(|v| v.backend), Some(url));
    assert_eq!(
        volume_handle("pv1", None, &BackendRef::Default).expect("static"),
        "static-pv1"
    );
    assert_eq!(
        VolumeId::parse("static-pv1"),
        None,
        "static ids name no volume of ours"
    );
    let long = BackendRef::Url(format!("http://{}", "h".repeat(200)));
    let e = volume_handle("pv1", Some(ID), &long).expect_err("too long");
    assert!(e.to_string().contains("--heketi-url"), "{e}");
}

#[test]
fn servers_come_from_endpoints_else_the_flag() {
    let pv = intree_pv(&[(HEKETI_ID_ANNOTATION, ID)], "vol_x");
    let mut o = Options::new("d");
    let m = migrate_pv(
        &pv,
        None,
        Some(&endpoints(&["10.0.0.1", "10.0.0.2", "10.0.0.1"])),
        None,
        &o,
    )
    .expect("ok");
    let attrs = m
        .new_pv
        .spec
        .and_then(|s| s.csi)
        .and_then(|c| c.volume_attributes)
        .unwrap_or_default();
    assert_eq!(
        attrs.get(CTX_SERVERS).map(String::as_str),
        Some("10.0.0.1,10.0.0.2")
    );

    let e = migrate_pv(&pv, None, None, None, &o).expect_err("no servers");
    assert!(e.to_string().contains("ns/glusterfs-dynamic-x"), "{e}");
    let e = migrate_pv(&pv, None, Some(&endpoints(&[])), None, &o).expect_err("empty");
    assert!(e.to_string().contains("list no addresses"), "{e}");

    o.servers = vec!["g1.example.com".into(), "g2.example.com".into()];
    let m = migrate_pv(&pv, None, None, None, &o).expect("flag");
    assert!(m.notes.iter().any(|n| n.contains("--servers")));

    let e = migrate_pv(&pv, None, Some(&endpoints(&["fd00::1"])), None, &o).expect_err("v6");
    assert!(e.to_string().contains("IPv6"), "{e}");
}

#[test]
fn subdirectory_paths_are_refused() {
    let pv = intree_pv(&[], "data/sub");
    let e = migrate_pv(
        &pv,
        None,
        Some(&endpoints(&["10.0.0.1"])),
        None,
        &Options::new("d"),
    )
    .expect_err("subdir");
    assert!(e.to_string().contains("subdirectory"), "{e}");
}

#[test]
fn the_new_pv_keeps_gid_and_drops_intree_bookkeeping() {
    let pv = intree_pv(
        &[
            (HEKETI_ID_ANNOTATION, ID),
            (GID_ANNOTATION, "40000"),
            ("kubernetes.io/createdby", "heketi-dynamic-provisioner"),
            (PROVISIONED_BY, INTREE_PLUGIN),
            ("example.com/owner", "team-a"),
        ],
        "vol_a5b6c7d8e9f00112233445566778899a",
    );
    let m = migrate_pv(
        &pv,
        None,
        Some(&endpoints(&["10.0.0.1"])),
        None,
        &Options::new("d.csi"),
    )
    .expect("ok");
    let ann = m.new_pv.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(ann.get(GID_ANNOTATION).map(String::as_str), Some("40000"));
    assert_eq!(ann.get(PROVISIONED_BY).map(String::as_str), Some("d.csi"));
    assert_eq!(
        ann.get("example.com/owner").map(String::as_str),
        Some("team-a")
    );
    assert!(!ann.contains_key("kubernetes.io/createdby"));
    let spec = m.new_pv.spec.clone().unwrap_or_default();
    assert_eq!(
        spec.persistent_volume_reclaim_policy.as_deref(),
        Some("Retain")
    );
    assert!(spec.glusterfs.is_none());
    assert_eq!(m.old_reclaim_policy, "Delete");
    assert!(
        m.new_pvc.is_none() && spec.claim_ref.is_none(),
        "no claim, no claimRef"
    );
}

#[test]
fn class_secret_becomes_the_expand_secret_unless_auth_is_off() {
    let on = class(&[("secretName", "s"), ("secretNamespace", "n")]);
    assert_eq!(
        class_secret(Some(&on)),
        Some(SecretReference {
            name: Some("s".into()),
            namespace: Some("n".into())
        })
    );
    let off = class(&[
        ("secretName", "s"),
        ("secretNamespace", "n"),
        ("restauthenabled", "false"),
    ]);
    assert_eq!(class_secret(Some(&off)), None);
    assert_eq!(class_secret(Some(&class(&[("secretName", "s")]))), None);
}

#[test]
fn yaml_lists_and_unknown_kinds() {
    let mut inv = Inventory::default();
    inv.add_yaml(
        "apiVersion: v1\nkind: PersistentVolumeList\nitems:\n- metadata: {name: a}\n  spec: {}\n\
         ---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\n",
        "x.yaml",
    )
    .expect("parses");
    assert_eq!(inv.pvs.len(), 1);
    let e = inv
        .add_yaml("kind: PersistentVolume\nspec: 3\n", "bad.yaml")
        .expect_err("bad");
    assert!(e.to_string().starts_with("bad.yaml: document 1"), "{e}");
}
