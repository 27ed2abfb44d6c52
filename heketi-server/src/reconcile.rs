//! Start-up reconciliation: finishing or rolling back what was in flight when the server
//! stopped (including `kill -9` at any moment).
//!
//! Every operation is recorded in the state file before its first Gluster step, so the
//! state always knows of every volume this server may have made. On start:
//! - a volume still `Creating` (or a clone) is rolled back: its Gluster volume, if Gluster has
//!   one with this record's bricks, is stopped and deleted and its brick directories removed
//!   (so a clone asked for `read_only` is never left without `features.read-only`);
//! - a volume `Deleting` is deleted for good;
//! - a volume `Expanding` gets its new quota limit and size;
//! - a node or device still being added is forgotten, one being removed is kept;
//! - the FUSE mounts of a clone's copy left behind are unmounted.
//!
//! Afterwards the volumes the API lists are exactly the recorded volumes Gluster has.

use std::time::Duration;

use crate::app::App;
use crate::error::Error;
use crate::model::{Lifecycle, State, Volume, VolumeStatus};
use crate::store::StoreError;

/// A create whose volume Gluster does not show may still be completing in glusterd (its CLI
/// died with us): the volume list must have been unchanged this long before acting on it...
const SETTLED_FOR: Duration = Duration::from_secs(5);
/// ...but no longer than this is waited for.
const SETTLE_MAX: Duration = Duration::from_secs(60);
const SETTLE_POLL: Duration = Duration::from_secs(1);

/// What to do with an unfinished volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Delete from Gluster (if there) and forget.
    RollBack,
    /// Finish deleting.
    FinishDelete,
    /// Apply the new size.
    FinishExpand,
}

/// The unfinished volumes of `state` and what to do with each.
pub fn plan(state: &State) -> Vec<(Volume, Action)> {
    state
        .volumes
        .values()
        .filter_map(|v| {
            let action = match v.status {
                VolumeStatus::Online => return None,
                VolumeStatus::Creating { .. } => Action::RollBack,
                VolumeStatus::Deleting { .. } => Action::FinishDelete,
                VolumeStatus::Expanding { .. } => Action::FinishExpand,
            };
            Some((v.clone(), action))
        })
        .collect()
}

/// Whether the server may have died while `gluster volume create` of `vol` was running.
pub fn create_in_doubt(vol: &Volume) -> bool {
    matches!(&vol.status, VolumeStatus::Creating { step, .. } if step == crate::volumes::STEP_BRICKS_MADE)
}

/// Drops nodes and devices that were still being added; keeps those being removed.
pub fn settle_topology(state: &mut State) {
    state.nodes.retain(|_, n| n.lifecycle != Lifecycle::Adding);
    state
        .devices
        .retain(|_, d| d.lifecycle != Lifecycle::Adding);
    for n in state.nodes.values_mut() {
        n.lifecycle = Lifecycle::Ready;
    }
    for d in state.devices.values_mut() {
        d.lifecycle = Lifecycle::Ready;
    }
}

/// At start: settles half-added topology, then finishes or rolls back every volume left in
/// flight. Fails (leaving the rest for a later attempt) when Gluster cannot be reached.
pub async fn reconcile(app: &App) -> Result<usize, Error> {
    app.store
        .update(|s| {
            settle_topology(s);
            Ok::<_, StoreError>(())
        })
        .await?;
    for m in crate::fuse::unmount_leftovers(&app.state_dir.join("mnt")).await {
        tracing::info!(mount = %m.display(), "unmounted a clone mount left by the previous run");
    }
    reconcile_volumes(app).await
}

/// Finishes or rolls back the volumes that are not `Online` and have no operation running in
/// this process (left behind by a crash or by a rollback that failed).
pub async fn reconcile_volumes(app: &App) -> Result<usize, Error> {
    let todo: Vec<(Volume, Action)> = app
        .store
        .read(plan)
        .await
        .into_iter()
        .filter(|(v, _)| !app.is_active(&v.id))
        .collect();
    if todo.is_empty() {
        return Ok(0);
    }
    let creating: Vec<&str> = todo
        .iter()
        .filter(|(_, a)| *a == Action::RollBack)
        .map(|(v, _)| v.name.as_str())
        .collect();
    let names = settled_volume_list(app, &creating).await?;
    tracing::info!(
        count = todo.len(),
        gluster_volumes = names.len(),
        "reconciling unfinished operations"
    );
    let mut first_error = None;
    for (vol, action) in &todo {
        let result = match action {
            Action::RollBack | Action::FinishDelete => {
                let rollback = *action == Action::RollBack;
                match app.destroy(vol, rollback).await {
                    Ok(outcome) if rollback => app
                        .forget_rolled_back(vol, outcome, create_in_doubt(vol))
                        .await
                        .map_err(Error::from),
                    Ok(_) => app
                        .store
                        .update(|s| {
                            s.volumes.remove(&vol.id);
                            Ok::<_, StoreError>(())
                        })
                        .await
                        .map_err(Error::from),
                    Err(e) => Err(e),
                }
            }
            Action::FinishExpand => finish_expand(app, vol, names.contains(&vol.name)).await,
        };
        match result {
            Ok(()) => tracing::info!(volume = %vol.id, name = %vol.name, ?action, "reconciled"),
            Err(e) => {
                tracing::error!(volume = %vol.id, name = %vol.name, ?action, error = %e, "cannot reconcile");
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(todo.len()),
    }
}

/// The pool's volume names, once those of `creating` that Gluster shows have stopped changing
/// (see [`SETTLED_FOR`]). Returns at once when every one of them is already there.
async fn settled_volume_list(app: &App, creating: &[&str]) -> Result<Vec<String>, Error> {
    let present = |names: &[String]| -> Vec<String> {
        names
            .iter()
            .filter(|n| creating.contains(&n.as_str()))
            .cloned()
            .collect()
    };
    let mut names = app.gluster.volume_list().await?;
    if present(&names).len() == creating.len() {
        return Ok(names);
    }
    let started = tokio::time::Instant::now();
    let mut last = present(&names);
    let mut stable_since = started;
    while stable_since.elapsed() < SETTLED_FOR && started.elapsed() < SETTLE_MAX {
        tokio::time::sleep(SETTLE_POLL).await;
        names = app.gluster.volume_list().await?;
        let now = present(&names);
        if now != last {
            last = now;
            stable_since = tokio::time::Instant::now();
        }
    }
    Ok(names)
}

/// Checks the tombstones of rolled-back creates: a Gluster volume that appeared late (with
/// the recorded bricks) is stopped and deleted; a tombstone past its time is dropped.
pub async fn sweep(app: &App) -> Result<(), Error> {
    let stones = app.store.read(|s| s.tombstones.clone()).await;
    if stones.is_empty() {
        return Ok(());
    }
    let names = app.gluster.volume_list().await?;
    let now = crate::volumes::unix_now();
    for t in stones {
        let done = if names.contains(&t.volume.name) {
            match app.destroy(&t.volume, true).await {
                Ok(outcome) => {
                    tracing::warn!(volume = %t.volume.id, name = %t.volume.name, ?outcome,
                        "a rolled-back create appeared in Gluster late; removed it");
                    true
                }
                Err(e) => {
                    tracing::warn!(volume = %t.volume.id, error = %e, "cannot remove a late volume yet");
                    false
                }
            }
        } else {
            now > t.until
        };
        if done {
            app.store
                .update(|s| {
                    s.tombstones.retain(|x| x.volume.id != t.volume.id);
                    Ok::<_, StoreError>(())
                })
                .await?;
        }
    }
    Ok(())
}

async fn finish_expand(app: &App, vol: &Volume, in_gluster: bool) -> Result<(), Error> {
    if in_gluster {
        app.expand_steps(&vol.id).await?;
    } else {
        tracing::warn!(volume = %vol.id, name = %vol.name, "volume being expanded is not in Gluster");
    }
    app.store
        .update(|s| {
            if let Some(v) = s.volumes.get_mut(&vol.id)
                && let VolumeStatus::Expanding { to_gib, .. } = v.status
            {
                v.size_gib = to_gib;
                v.status = VolumeStatus::Online;
            }
            Ok::<_, StoreError>(())
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Device, Node};
    use heketi_client::types::{EntryState, VolumeDurabilityInfo};

    fn vol(id: &str, status: VolumeStatus) -> Volume {
        Volume {
            id: id.into(),
            name: format!("vol_{id}"),
            cluster: "c".into(),
            size_gib: 1,
            durability: VolumeDurabilityInfo::replicate(3),
            gid: 0,
            options: vec![],
            snapshot: Default::default(),
            read_only: false,
            bricks: vec![],
            status,
        }
    }

    #[test]
    fn unfinished_volumes_are_planned() {
        let mut s = State::new();
        for v in [
            vol("a", VolumeStatus::Online),
            vol(
                "b",
                VolumeStatus::Creating {
                    clone_of: None,
                    step: "gluster volume created".into(),
                },
            ),
            vol(
                "c",
                VolumeStatus::Creating {
                    clone_of: Some("a".into()),
                    step: "started".into(),
                },
            ),
            vol(
                "d",
                VolumeStatus::Deleting {
                    step: "stopped".into(),
                },
            ),
            vol(
                "e",
                VolumeStatus::Expanding {
                    from_gib: 1,
                    to_gib: 2,
                    step: "allocated".into(),
                },
            ),
        ] {
            s.volumes.insert(v.id.clone(), v);
        }
        let p: Vec<(String, Action)> = plan(&s).into_iter().map(|(v, a)| (v.id, a)).collect();
        assert_eq!(
            p,
            [
                ("b".to_owned(), Action::RollBack),
                ("c".to_owned(), Action::RollBack),
                ("d".to_owned(), Action::FinishDelete),
                ("e".to_owned(), Action::FinishExpand),
            ]
        );
        // Only complete volumes (and those growing) are visible to the API.
        let visible: Vec<&str> = s
            .volumes
            .values()
            .filter(|v| v.visible())
            .map(|v| v.id.as_str())
            .collect();
        assert_eq!(visible, ["a", "e"]);
    }

    #[test]
    fn a_read_only_clone_cut_at_any_step_is_rolled_back() {
        // Until it is recorded online a read-only clone may lack `features.read-only`; it is
        // never kept like that: at every step, a restart rolls it back.
        for step in [
            "allocated",
            crate::volumes::STEP_BRICKS_MADE,
            "started",
            "data copied",
            "quota set",
            "options set",
            crate::volumes::STEP_READ_ONLY,
        ] {
            let mut v = vol(
                "ro",
                VolumeStatus::Creating {
                    clone_of: Some("src".into()),
                    step: step.into(),
                },
            );
            v.read_only = true;
            assert!(!v.visible(), "{step}");
            let mut s = State::new();
            s.volumes.insert(v.id.clone(), v);
            let p: Vec<Action> = plan(&s).into_iter().map(|(_, a)| a).collect();
            assert_eq!(p, [Action::RollBack], "{step}");
        }
    }

    #[test]
    fn only_a_create_cut_during_volume_create_is_in_doubt() {
        let at = |step: &str| {
            vol(
                "x",
                VolumeStatus::Creating {
                    clone_of: None,
                    step: step.into(),
                },
            )
        };
        assert!(create_in_doubt(&at(crate::volumes::STEP_BRICKS_MADE)));
        assert!(!create_in_doubt(&at("allocated")));
        assert!(!create_in_doubt(&at("started")));
        assert!(!create_in_doubt(&vol("y", VolumeStatus::Online)));
    }

    #[test]
    fn half_added_topology_is_dropped() {
        let mut s = State::new();
        let node = |id: &str, l| Node {
            id: id.into(),
            cluster: "c".into(),
            zone: 1,
            manage: vec![],
            storage: vec![],
            tags: Default::default(),
            state: EntryState::Online,
            lifecycle: l,
        };
        s.nodes.insert("n1".into(), node("n1", Lifecycle::Adding));
        s.nodes.insert("n2".into(), node("n2", Lifecycle::Removing));
        s.devices.insert(
            "d1".into(),
            Device {
                id: "d1".into(),
                node: "n2".into(),
                name: "/x".into(),
                tags: Default::default(),
                state: EntryState::Online,
                total_kib: 0,
                lifecycle: Lifecycle::Adding,
            },
        );
        settle_topology(&mut s);
        assert_eq!(s.nodes.keys().collect::<Vec<_>>(), ["n2"]);
        assert_eq!(s.nodes["n2"].lifecycle, Lifecycle::Ready);
        assert!(s.devices.is_empty());
    }
}
