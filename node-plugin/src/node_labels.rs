//! The node's place read from its own Kubernetes labels (`--topology-from-node-label`).
//!
//! Nodes usually carry their zone already (`topology.kubernetes.io/zone`, set by the cloud or the
//! operator), and the Downward API cannot hand a pod its node's labels. With
//! `--topology-from-node-label zone=topology.kubernetes.io/zone` the plugin reads its Node once,
//! at the first NodeGetInfo, and reports the label's value under
//! `topology.gluster.heketi.csi/zone`: one DaemonSet for every zone. It needs `get` on nodes
//! (deploy/kubernetes/components/topology).

use gluster_csi_runtime::topology::{self, Segment};
use k8s_openapi::api::core::v1::Node;
use tokio::sync::OnceCell;

/// The flag, named in errors.
const FLAG: &str = "--topology-from-node-label";

/// Our topology keys and the node labels their values come from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelMap(Vec<(String, String)>);

impl LabelMap {
    /// Parses `KEY=NODE_LABEL` items (`zone=topology.kubernetes.io/zone`).
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, String> {
        let mut map = Vec::new();
        for item in items {
            let item = item.as_ref().trim();
            let Some((key, label)) = item.split_once('=') else {
                return Err(format!(
                    "{FLAG} {item:?} is not KEY=NODE_LABEL (for example \
                     zone=topology.kubernetes.io/zone)"
                ));
            };
            let key = topology::full_key(key.trim(), FLAG)?;
            let label = label.trim();
            if label.is_empty() || label.len() > 317 || label.contains(char::is_whitespace) {
                return Err(format!(
                    "{FLAG} {item:?}: {label:?} is not a node label name (for example \
                     topology.kubernetes.io/zone)"
                ));
            }
            if map.iter().any(|(k, _)| *k == key) {
                return Err(format!("{FLAG} names {key} twice"));
            }
            map.push((key, label.to_owned()));
        }
        Ok(Self(map))
    }

    /// No key is read from labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Our keys.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }

    /// The segment these labels give: each key whose label the node has with a valid value. A
    /// key whose label is missing or unusable is left out and returned in the second list, with
    /// why, for the caller to log.
    pub fn segment_of(
        &self,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> (Segment, Vec<String>) {
        let mut segment = Segment::new();
        let mut missing = Vec::new();
        for (key, label) in &self.0 {
            match labels.get(label) {
                None => missing.push(format!("{key}: the node has no label {label}")),
                Some(value) => match topology::parse_segment(&[format!("{key}={value}")], label) {
                    Ok(one) => segment.extend(one),
                    Err(e) => missing.push(format!("{key}: {e}")),
                },
            }
        }
        (segment, missing)
    }
}

/// Reads the node's labels once and keeps the segment they give.
#[derive(Debug)]
pub struct NodeLabels {
    node: String,
    map: LabelMap,
    segment: OnceCell<Segment>,
}

impl NodeLabels {
    /// For the Node named `node` (the plugin's node id, spec.nodeName).
    pub fn new(node: &str, map: LabelMap) -> Self {
        Self {
            node: node.to_owned(),
            map,
            segment: OnceCell::new(),
        }
    }

    /// The segment from the node's labels, read from the API server on the first call that
    /// succeeds. Err: why the Node could not be read, for an UNAVAILABLE answer (kubelet retries
    /// the registration).
    pub async fn segment(&self) -> Result<Segment, String> {
        if self.map.is_empty() {
            return Ok(Segment::new());
        }
        self.segment
            .get_or_try_init(|| async {
                let labels = self.read().await.map_err(|e| {
                    format!(
                        "{FLAG}: reading the labels of node {:?} failed: {e}; the plugin's \
                         ServiceAccount needs get on nodes \
                         (deploy/kubernetes/components/topology)",
                        self.node
                    )
                })?;
                let (segment, missing) = self.map.segment_of(&labels);
                for why in &missing {
                    tracing::warn!(
                        node = %self.node,
                        "{FLAG}: {why}; that key is not reported, so only volumes of backends \
                         not placed by it can be used on this node"
                    );
                }
                tracing::info!(node = %self.node, ?segment, "topology read from the node's labels");
                Ok(segment)
            })
            .await
            .cloned()
    }

    async fn read(&self) -> Result<std::collections::BTreeMap<String, String>, String> {
        let mut config = kube::Config::infer().await.map_err(|e| e.to_string())?;
        config.default_retry = false;
        let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
        let nodes: kube::Api<Node> = kube::Api::all(client);
        let node = nodes.get(&self.node).await.map_err(|e| e.to_string())?;
        Ok(node.metadata.labels.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_get_our_prefix_and_labels_are_taken_as_named() {
        let map = LabelMap::parse(&[
            "zone=topology.kubernetes.io/zone",
            " site = example.com/dc ",
        ])
        .expect("valid");
        assert_eq!(
            map.keys().collect::<Vec<_>>(),
            [
                "topology.gluster.heketi.csi/zone",
                "topology.gluster.heketi.csi/site"
            ]
        );
        let labels = [
            ("topology.kubernetes.io/zone", "east"),
            ("example.com/dc", "dc1"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
        let (segment, missing) = map.segment_of(&labels);
        assert!(missing.is_empty(), "{missing:?}");
        assert_eq!(segment["topology.gluster.heketi.csi/zone"], "east");
        assert_eq!(segment["topology.gluster.heketi.csi/site"], "dc1");
    }

    #[test]
    fn a_missing_or_unusable_label_leaves_its_key_out_and_says_why() {
        let map = LabelMap::parse(&["zone=topology.kubernetes.io/zone", "rack=example.com/rack"])
            .expect("valid");
        let labels = [("example.com/rack", "-bad-")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into();
        let (segment, missing) = map.segment_of(&labels);
        assert!(segment.is_empty(), "{segment:?}");
        assert_eq!(missing.len(), 2, "{missing:?}");
        assert!(
            missing[0].contains("no label topology.kubernetes.io/zone"),
            "{missing:?}"
        );
        assert!(missing[1].contains("-bad-"), "{missing:?}");
    }

    #[test]
    fn bad_items_are_refused_naming_the_flag() {
        for (item, says) in [
            ("zone", "not KEY=NODE_LABEL"),
            ("zone=", "not a node label name"),
            ("other.io/zone=topology.kubernetes.io/zone", "other drivers"),
        ] {
            let e = LabelMap::parse(&[item]).expect_err(item);
            assert!(e.contains(FLAG) && e.contains(says), "{item}: {e}");
        }
        let e = LabelMap::parse(&["zone=a/b", "zone=c/d"]).expect_err("twice");
        assert!(e.contains("twice"), "{e}");
    }
}
