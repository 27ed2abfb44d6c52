//! Gid allocation: the lowest gid of a StorageClass's range that no volume of the backend uses
//! and no create of this process holds.
//!
//! The used set is read from Heketi (every volume's `gid`), so no Kubernetes access is needed
//! and a restarted controller continues where it stopped. Two controllers creating at the same
//! instant could pick the same gid; only one controller runs at a time (leader election).
//!
//! # How long a create holds its gid
//!
//! A create holds its gid from before its request leaves until its outcome is known:
//!
//! - The volume exists and is in the index, or the create certainly made nothing (Heketi
//!   refused the request or said the operation failed, or nothing was sent): the hold ends at
//!   once ([`Reservation::release`]). The gid is then either in the used set or free.
//! - The outcome is unknown (no answer, our operation deadline passed, Heketi lost track of
//!   the operation, a 429/502/503/504 at some step): Heketi may still be making the volume
//!   with this gid, and Heketi lists a volume only once it is complete. The gid stays held,
//!   *unsettled* ([`Reservation::keep_unsettled`]), until a volume with the create's Heketi
//!   name is seen in the index (then the gid is that volume's, and the used set has it), or
//!   until [`UNSETTLED_TTL`] passes. A later create of the same name (the sidecar's retry, one
//!   PVC) takes the unsettled gid over rather than holding a second one.
//!
//! A [`Reservation`] dropped without either call counts as unknown: a code path that forgets
//! to say keeps a gid a while longer, it never hands one out twice.
//!
//! Holds live in memory. After a restart, a create still running in Heketi is not visible
//! until it completes; the window is the remaining time of that Heketi operation.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::params::GidRange;

/// How long a gid whose create's outcome is unknown stays held when no volume of that
/// create's name shows up. It counts from the moment the outcome became unknown, which is at
/// the earliest the end of `--heketi-operation-timeout`; Heketi finishes or abandons an
/// operation well within ten more minutes.
pub const UNSETTLED_TTL: Duration = Duration::from_secs(600);

/// The lowest gid of `range` in neither `used` nor `reserved`.
pub fn lowest_free(range: GidRange, used: &HashSet<u32>, reserved: &HashSet<u32>) -> Option<u32> {
    (range.min..=range.max).find(|g| !used.contains(g) && !reserved.contains(g))
}

/// Why a gid is held.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Hold {
    /// A create of the Heketi volume `name` is running with it.
    Running { name: String },
    /// A create of `name` ended with its outcome unknown; held until a volume of that name is
    /// seen or `until`.
    Unsettled { name: String, until: Instant },
}

type Holds = Arc<Mutex<HashMap<u32, Hold>>>;

/// Gids held by creates of one backend.
#[derive(Clone, Debug, Default)]
pub struct Reservations {
    held: Holds,
}

/// A gid held by a running create. End it with [`Reservation::release`] or
/// [`Reservation::keep_unsettled`]; dropped without either, it is kept unsettled.
#[derive(Debug)]
pub struct Reservation {
    held: Holds,
    name: String,
    ended: bool,
    /// The gid.
    pub gid: u32,
}

impl Reservations {
    /// Reserves a gid of `range` for a create of the Heketi volume `name`, given the gids
    /// `used` by the backend's volumes and `seen`, which says whether a volume of a given name
    /// is among them. An unsettled hold whose volume is seen, or whose time is up, ends first.
    /// The create gets the gid an earlier create of the same name left unsettled when it is in
    /// `range`, otherwise the lowest free one.
    pub fn reserve(
        &self,
        range: GidRange,
        name: &str,
        used: &HashSet<u32>,
        seen: impl Fn(&str) -> bool,
    ) -> Option<Reservation> {
        self.reserve_at(Instant::now(), range, name, used, seen)
    }

    fn reserve_at(
        &self,
        now: Instant,
        range: GidRange,
        name: &str,
        used: &HashSet<u32>,
        seen: impl Fn(&str) -> bool,
    ) -> Option<Reservation> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        settle(&mut held, now, &seen);
        let in_range = |g: &u32| (range.min..=range.max).contains(g) && !used.contains(g);
        let again = held.iter().find_map(|(g, h)| match h {
            Hold::Unsettled { name: n, .. } if n == name && in_range(g) => Some(*g),
            _ => None,
        });
        let gid = match again {
            Some(g) => {
                tracing::info!(
                    gid = g,
                    heketi_name = name,
                    "taking over the gid of an earlier create of this name"
                );
                g
            }
            None => {
                let reserved: HashSet<u32> = held.keys().copied().collect();
                lowest_free(range, used, &reserved)?
            }
        };
        held.insert(
            gid,
            Hold::Running {
                name: name.to_owned(),
            },
        );
        Some(Reservation {
            held: Arc::clone(&self.held),
            name: name.to_owned(),
            ended: false,
            gid,
        })
    }

    /// The gids held now, running or unsettled.
    pub fn held(&self) -> HashSet<u32> {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.keys().copied().collect()
    }
}

/// Ends the unsettled holds whose volume is `seen` or whose time is up at `now`.
fn settle(held: &mut HashMap<u32, Hold>, now: Instant, seen: &impl Fn(&str) -> bool) {
    held.retain(|gid, hold| {
        let Hold::Unsettled { name, until } = hold else {
            return true;
        };
        if seen(name) {
            tracing::debug!(gid, heketi_name = %name, "the volume of an unsettled create is in Heketi; the gid is the volume's");
            false
        } else if now >= *until {
            tracing::info!(
                gid,
                heketi_name = %name,
                ttl_s = UNSETTLED_TTL.as_secs(),
                "no volume appeared for a create whose outcome was unknown; its gid is free again"
            );
            false
        } else {
            true
        }
    });
}

impl Reservation {
    /// The create's outcome is known: its volume is in the index, or it certainly made
    /// nothing. The hold ends now.
    pub fn release(mut self) {
        self.ended = true;
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.remove(&self.gid);
    }

    /// The create's outcome is unknown: the gid stays held until a volume of this create's
    /// name is seen, or [`UNSETTLED_TTL`] passes.
    pub fn keep_unsettled(mut self) {
        self.unsettle(Instant::now());
    }

    fn unsettle(&mut self, now: Instant) {
        self.ended = true;
        tracing::info!(
            gid = self.gid,
            heketi_name = %self.name,
            ttl_s = UNSETTLED_TTL.as_secs(),
            "the create's outcome is unknown; its gid stays reserved until the volume appears \
             in Heketi or the time passes"
        );
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.insert(
            self.gid,
            Hold::Unsettled {
                name: std::mem::take(&mut self.name),
                until: now + UNSETTLED_TTL,
            },
        );
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.ended {
            self.unsettle(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[u32]) -> HashSet<u32> {
        v.iter().copied().collect()
    }

    const R: GidRange = GidRange {
        min: 2000,
        max: 2003,
    };

    fn nothing_seen(_: &str) -> bool {
        false
    }

    #[test]
    fn lowest_free_table() {
        for (used, reserved, want) in [
            (vec![], vec![], Some(2000)),
            (vec![2000], vec![], Some(2001)),
            (vec![2000, 2002], vec![2001], Some(2003)),
            (vec![2000, 2001, 2002, 2003], vec![], None),
            (vec![1999, 5000], vec![], Some(2000)),
            (vec![2001], vec![], Some(2000)),
        ] {
            assert_eq!(
                lowest_free(R, &set(&used), &set(&reserved)),
                want,
                "{used:?} {reserved:?}"
            );
        }
    }

    #[test]
    fn reservations_are_exclusive_until_released() {
        let rs = Reservations::default();
        let r = GidRange {
            min: 2000,
            max: 2001,
        };
        let none = set(&[]);
        let a = rs.reserve(r, "a", &none, nothing_seen).expect("first");
        let b = rs.reserve(r, "b", &none, nothing_seen).expect("second");
        assert_eq!((a.gid, b.gid), (2000, 2001));
        assert!(
            rs.reserve(r, "c", &none, nothing_seen).is_none(),
            "range exhausted"
        );
        a.release();
        assert_eq!(
            rs.reserve(r, "c", &none, nothing_seen).map(|x| x.gid),
            Some(2000)
        );
    }

    /// Each row: what the create's outcome was, then what the next create of another name
    /// gets while the first one's volume is still not listed.
    #[test]
    fn outcome_table() {
        enum End {
            Release,
            Unsettled,
            Dropped,
        }
        for (end, next_gid) in [
            (End::Release, 2000),
            (End::Unsettled, 2001),
            (End::Dropped, 2001),
        ] {
            let rs = Reservations::default();
            let a = rs.reserve(R, "a", &set(&[]), nothing_seen).expect("a");
            assert_eq!(a.gid, 2000);
            match end {
                End::Release => a.release(),
                End::Unsettled => a.keep_unsettled(),
                End::Dropped => drop(a),
            }
            let b = rs.reserve(R, "b", &set(&[]), nothing_seen).expect("b");
            assert_eq!(b.gid, next_gid);
        }
    }

    #[test]
    fn an_unsettled_gid_ends_when_its_volume_is_seen() {
        let rs = Reservations::default();
        let t0 = Instant::now();
        let a = rs
            .reserve_at(t0, R, "vol_a", &set(&[]), nothing_seen)
            .expect("a");
        a.keep_unsettled();
        assert_eq!(rs.held(), set(&[2000]));
        // Heketi lists vol_a now, with the gid it was created with.
        let seen = |n: &str| n == "vol_a";
        let b = rs
            .reserve_at(t0, R, "vol_b", &set(&[2000]), seen)
            .expect("b");
        assert_eq!(b.gid, 2001);
        assert_eq!(rs.held(), set(&[2001]), "vol_a's hold ended");
        b.release();
        // vol_a is deleted later: its gid is free again.
        let c = rs.reserve_at(t0, R, "vol_c", &set(&[]), seen).expect("c");
        assert_eq!(c.gid, 2000);
    }

    #[test]
    fn an_unsettled_gid_ends_after_the_ttl() {
        let rs = Reservations::default();
        let t0 = Instant::now();
        let mut a = rs
            .reserve_at(t0, R, "vol_a", &set(&[]), nothing_seen)
            .expect("a");
        a.unsettle(t0);
        drop(a);
        let almost = t0 + UNSETTLED_TTL - Duration::from_secs(1);
        let b = rs
            .reserve_at(almost, R, "vol_b", &set(&[]), nothing_seen)
            .expect("b");
        assert_eq!(b.gid, 2001, "still held just before the TTL");
        b.release();
        let c = rs
            .reserve_at(t0 + UNSETTLED_TTL, R, "vol_c", &set(&[]), nothing_seen)
            .expect("c");
        assert_eq!(c.gid, 2000, "free once the TTL passed");
    }

    #[test]
    fn a_retry_of_the_same_name_takes_the_unsettled_gid_over() {
        let rs = Reservations::default();
        let a = rs.reserve(R, "vol_a", &set(&[]), nothing_seen).expect("a");
        let b = rs.reserve(R, "vol_b", &set(&[]), nothing_seen).expect("b");
        assert_eq!((a.gid, b.gid), (2000, 2001));
        b.keep_unsettled();
        a.release();
        // The retry of vol_b gets 2001 again, not a second gid; another name gets 2000.
        let b2 = rs.reserve(R, "vol_b", &set(&[]), nothing_seen).expect("b2");
        assert_eq!(b2.gid, 2001);
        let c = rs.reserve(R, "vol_c", &set(&[]), nothing_seen).expect("c");
        assert_eq!(c.gid, 2000);
        // Repeated unknown outcomes of one name hold one gid.
        b2.keep_unsettled();
        let b3 = rs.reserve(R, "vol_b", &set(&[]), nothing_seen).expect("b3");
        assert_eq!(b3.gid, 2001);
        b3.keep_unsettled();
        assert_eq!(rs.held(), set(&[2000, 2001]));
        // Not when the class range no longer holds that gid.
        let narrow = GidRange {
            min: 2002,
            max: 2003,
        };
        let b4 = rs
            .reserve(narrow, "vol_b", &set(&[]), nothing_seen)
            .expect("b4");
        assert_eq!(b4.gid, 2002);
    }

    #[test]
    fn a_running_create_is_never_taken_over() {
        let rs = Reservations::default();
        let a = rs.reserve(R, "vol_a", &set(&[]), nothing_seen).expect("a");
        let again = rs
            .reserve(R, "vol_a", &set(&[]), nothing_seen)
            .expect("again");
        assert_ne!(a.gid, again.gid);
    }

    #[test]
    fn concurrent_reservations_never_share_a_gid() {
        let rs = Reservations::default();
        let r = GidRange {
            min: 2000,
            max: 2000 + 63,
        };
        let got: Vec<u32> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|t| {
                    let rs = rs.clone();
                    s.spawn(move || {
                        (0..8)
                            .filter_map(|i| {
                                rs.reserve(r, &format!("v{t}_{i}"), &HashSet::new(), nothing_seen)
                            })
                            .map(|x| {
                                let g = x.gid;
                                x.keep_unsettled();
                                g
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        });
        let unique: HashSet<u32> = got.iter().copied().collect();
        assert_eq!(got.len(), 64);
        assert_eq!(unique.len(), 64);
    }
}
