//! Brick placement: which devices get the bricks of a new volume, and whether the devices of
//! an existing volume have room to grow.
//!
//! Every brick of a volume goes to a different node (so a replica set or a disperse set never
//! has two members on one host). Among the nodes that can take a brick, the ones whose best
//! device has the most free space win; on each node its device with the most free space is
//! used. Only online nodes and devices in service are considered.

use heketi_client::types::EntryState;

use crate::model::{Lifecycle, State, Volume};

/// Why bricks could not be placed (Heketi's words).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// Not enough nodes with enough free space.
    #[error("No space")]
    NoSpace,
    /// The cluster has no nodes.
    #[error("No nodes in cluster")]
    EmptyCluster,
    /// The cluster has no online device.
    #[error("No online storage devices in cluster")]
    NoStorage,
}

/// One chosen spot: node id and device id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spot {
    /// Node id.
    pub node: String,
    /// Device id.
    pub device: String,
}

/// Picks `count` devices on distinct nodes of `cluster`, each with `brick_kib` KiB free.
pub fn place(
    state: &State,
    cluster: &str,
    count: usize,
    brick_kib: u64,
) -> Result<Vec<Spot>, AllocError> {
    let nodes: Vec<_> = state
        .nodes
        .values()
        .filter(|n| n.cluster == cluster && n.lifecycle != Lifecycle::Adding)
        .collect();
    if nodes.is_empty() {
        return Err(AllocError::EmptyCluster);
    }
    let usable_node =
        |n: &&&crate::model::Node| n.state == EntryState::Online && n.lifecycle == Lifecycle::Ready;
    let mut any_device = false;
    let mut candidates: Vec<(u64, Spot)> = Vec::new();
    for node in nodes.iter().filter(usable_node) {
        let best = state
            .devices
            .values()
            .filter(|d| {
                d.node == node.id
                    && d.state == EntryState::Online
                    && d.lifecycle == Lifecycle::Ready
            })
            .inspect(|_| any_device = true)
            .map(|d| (state.device_free_kib(&d.id), d))
            .filter(|(free, _)| *free >= brick_kib)
            .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.id.cmp(&a.1.id)));
        if let Some((free, d)) = best {
            candidates.push((
                free,
                Spot {
                    node: node.id.clone(),
                    device: d.id.clone(),
                },
            ));
        }
    }
    if !any_device {
        return Err(AllocError::NoStorage);
    }
    if candidates.len() < count {
        return Err(AllocError::NoSpace);
    }
    candidates.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.node.cmp(&b.1.node)));
    Ok(candidates.into_iter().take(count).map(|(_, s)| s).collect())
}

/// Checks that each brick's device of `vol` has `extra_kib` more KiB free.
pub fn can_grow(state: &State, vol: &Volume, extra_kib: u64) -> Result<(), AllocError> {
    for b in &vol.bricks {
        if state.device_free_kib(&b.device) < extra_kib {
            return Err(AllocError::NoSpace);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Brick, Device, GIB_IN_KIB, Node, VolumeStatus};
    use heketi_client::types::VolumeDurabilityInfo;

    fn state(nodes: &[(&str, &[(&str, u64)])]) -> State {
        let mut s = State::new();
        for (n, devs) in nodes {
            s.nodes.insert(
                (*n).into(),
                Node {
                    id: (*n).into(),
                    cluster: "c".into(),
                    zone: 1,
                    manage: vec![format!("{n}.example")],
                    storage: vec![format!("10.0.0.{}", n.len())],
                    tags: Default::default(),
                    state: EntryState::Online,
                    lifecycle: Lifecycle::Ready,
                },
            );
            for (d, gib) in *devs {
                s.devices.insert(
                    (*d).into(),
                    Device {
                        id: (*d).into(),
                        node: (*n).into(),
                        name: format!("/b/{d}"),
                        tags: Default::default(),
                        state: EntryState::Online,
                        total_kib: gib * GIB_IN_KIB,
                        lifecycle: Lifecycle::Ready,
                    },
                );
            }
        }
        s
    }

    fn use_device(s: &mut State, dev: &str, gib: u64) {
        let node = s.devices[dev].node.clone();
        let id = format!("v{}", s.volumes.len());
        s.volumes.insert(
            id.clone(),
            Volume {
                id: id.clone(),
                name: id.clone(),
                cluster: "c".into(),
                size_gib: gib,
                durability: VolumeDurabilityInfo::none(),
                gid: 0,
                options: vec![],
                snapshot: Default::default(),
                read_only: false,
                bricks: vec![Brick {
                    id: "b".into(),
                    device: dev.into(),
                    node,
                    host: "h".into(),
                    path: "/p".into(),
                    size_kib: gib * GIB_IN_KIB,
                }],
                status: VolumeStatus::Online,
            },
        );
    }

    #[test]
    fn bricks_go_to_distinct_nodes_with_most_space() {
        let s = state(&[
            ("n1", &[("d1a", 10), ("d1b", 20)]),
            ("n2", &[("d2", 5)]),
            ("n3", &[("d3", 30)]),
            ("n4", &[("d4", 1)]),
        ]);
        let spots = place(&s, "c", 3, 2 * GIB_IN_KIB).expect("placed");
        let devs: Vec<&str> = spots.iter().map(|x| x.device.as_str()).collect();
        assert_eq!(devs, ["d3", "d1b", "d2"]);
        let mut nodes: Vec<&str> = spots.iter().map(|x| x.node.as_str()).collect();
        nodes.sort();
        nodes.dedup();
        assert_eq!(nodes.len(), 3);
    }

    #[test]
    fn not_enough_nodes_is_no_space() {
        let s = state(&[("n1", &[("d1", 10), ("d1b", 10)]), ("n2", &[("d2", 10)])]);
        assert_eq!(place(&s, "c", 3, GIB_IN_KIB), Err(AllocError::NoSpace));
    }

    #[test]
    fn used_space_counts() {
        let mut s = state(&[("n1", &[("d1", 3)]), ("n2", &[("d2", 3)])]);
        assert!(place(&s, "c", 2, 3 * GIB_IN_KIB).is_ok());
        use_device(&mut s, "d1", 1);
        assert_eq!(place(&s, "c", 2, 3 * GIB_IN_KIB), Err(AllocError::NoSpace));
        assert!(place(&s, "c", 2, 2 * GIB_IN_KIB).is_ok());
        let v = s.volumes["v0"].clone();
        assert!(can_grow(&s, &v, 2 * GIB_IN_KIB).is_ok());
        assert_eq!(can_grow(&s, &v, 3 * GIB_IN_KIB), Err(AllocError::NoSpace));
    }

    #[test]
    fn offline_things_are_skipped_and_empty_clusters_named() {
        let mut s = state(&[("n1", &[("d1", 10)]), ("n2", &[("d2", 10)])]);
        if let Some(d) = s.devices.get_mut("d2") {
            d.state = EntryState::Offline;
        }
        assert_eq!(place(&s, "c", 2, GIB_IN_KIB), Err(AllocError::NoSpace));
        assert_eq!(place(&s, "other", 1, 1), Err(AllocError::EmptyCluster));
        let bare = state(&[("n1", &[])]);
        assert_eq!(place(&bare, "c", 1, 1), Err(AllocError::NoStorage));
    }
}
