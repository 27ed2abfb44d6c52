//! Gid allocation: the lowest gid of a StorageClass's range that no volume of the backend uses
//! and no create in flight in this process has reserved.
//!
//! The used set is read from Heketi (every volume's `gid`), so no Kubernetes access is needed
//! and a restarted controller continues where it stopped. Two controllers creating at the same
//! instant could pick the same gid; only one controller runs at a time (leader election).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::params::GidRange;

/// The lowest gid of `range` in neither `used` nor `reserved`.
pub fn lowest_free(range: GidRange, used: &HashSet<u32>, reserved: &HashSet<u32>) -> Option<u32> {
    (range.min..=range.max).find(|g| !used.contains(g) && !reserved.contains(g))
}

/// Gids handed to creates that have not finished yet.
#[derive(Clone, Debug, Default)]
pub struct Reservations {
    held: Arc<Mutex<HashSet<u32>>>,
}

/// A reserved gid, released when dropped (by then the volume either exists in Heketi, where
/// the next allocation sees it, or was not made).
#[derive(Debug)]
pub struct Reservation {
    held: Arc<Mutex<HashSet<u32>>>,
    /// The gid.
    pub gid: u32,
}

impl Reservations {
    /// Reserves the lowest free gid of `range` given the backend's `used` gids.
    pub fn reserve(&self, range: GidRange, used: &HashSet<u32>) -> Option<Reservation> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let gid = lowest_free(range, used, &held)?;
        held.insert(gid);
        Some(Reservation {
            held: Arc::clone(&self.held),
            gid,
        })
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.remove(&self.gid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[u32]) -> HashSet<u32> {
        v.iter().copied().collect()
    }

    #[test]
    fn lowest_free_table() {
        let r = GidRange {
            min: 2000,
            max: 2003,
        };
        for (used, reserved, want) in [
            (vec![], vec![], Some(2000)),
            (vec![2000], vec![], Some(2001)),
            (vec![2000, 2002], vec![2001], Some(2003)),
            (vec![2000, 2001, 2002, 2003], vec![], None),
            (vec![1999, 5000], vec![], Some(2000)),
            (vec![2001], vec![], Some(2000)),
        ] {
            assert_eq!(
                lowest_free(r, &set(&used), &set(&reserved)),
                want,
                "{used:?} {reserved:?}"
            );
        }
    }

    #[test]
    fn reservations_are_exclusive_until_dropped() {
        let rs = Reservations::default();
        let r = GidRange {
            min: 2000,
            max: 2001,
        };
        let a = rs.reserve(r, &set(&[])).expect("first");
        let b = rs.reserve(r, &set(&[])).expect("second");
        assert_eq!((a.gid, b.gid), (2000, 2001));
        assert!(rs.reserve(r, &set(&[])).is_none(), "range exhausted");
        drop(a);
        assert_eq!(rs.reserve(r, &set(&[])).map(|x| x.gid), Some(2000));
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
                .map(|_| {
                    let rs = rs.clone();
                    s.spawn(move || {
                        (0..8)
                            .filter_map(|_| rs.reserve(r, &HashSet::new()))
                            .map(|x| {
                                let g = x.gid;
                                std::mem::forget(x);
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
