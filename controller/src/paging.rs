//! ListVolumes paging tokens.
//!
//! Volumes are listed in the order of their Heketi id; a token holds the last id of the page it
//! ends. The next page starts after that id, so creates and deletes between pages neither
//! repeat nor skip a volume that exists throughout (a new volume shows up on a later page
//! when its id sorts after the token).

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::error::{Error, Result};

const PREFIX: &str = "after-";

/// The token for a page that ended with `last_heketi_id`.
pub fn encode(last_heketi_id: &str) -> String {
    format!("{PREFIX}{last_heketi_id}")
}

/// The id to continue after; `None` for the first page. A token we did not make is `Aborted`
/// (CSI: the caller should restart the listing).
pub fn decode(token: &str) -> Result<Option<String>> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || {
        Error::Aborted(format!(
            "starting_token {token:?} was not made by this driver; list again from the start"
        ))
    };
    let id = token.strip_prefix(PREFIX).ok_or_else(bad)?;
    if id.len() != crate::volume_id::HEKETI_ID_LEN
        || !id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(bad());
    }
    Ok(Some(id.to_owned()))
}

/// One page of `entries` (keyed and ordered by Heketi id): those after `after` that `pick`
/// keeps, at most `max` of them (0: no limit), and the token of the next page (empty when
/// nothing is left).
pub fn page<V, T>(
    entries: &BTreeMap<String, V>,
    after: Option<&str>,
    max: usize,
    mut pick: impl FnMut(&V) -> Option<T>,
) -> (Vec<T>, String) {
    let start = after.map_or(Bound::Unbounded, Bound::Excluded);
    let mut kept = entries
        .range::<str, _>((start, Bound::Unbounded))
        .filter_map(|(id, v)| pick(v).map(|t| (id, t)));
    let limit = if max == 0 { usize::MAX } else { max };
    let mut page = Vec::new();
    let mut last = None;
    for (id, t) in kept.by_ref().take(limit) {
        page.push(t);
        last = Some(id);
    }
    let next_token = match (kept.next(), last) {
        (Some(_), Some(last)) => encode(last),
        _ => String::new(),
    };
    (page, next_token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_the_ids_and_skip_what_pick_drops() {
        let ids = ["0a", "1b", "2c", "3d", "4e"];
        let entries: BTreeMap<String, usize> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| ((*id).to_owned(), i))
            .collect();
        let odd_out = |v: &usize| v.is_multiple_of(2).then_some(*v);
        assert_eq!(
            page(&entries, None, 0, odd_out),
            (vec![0, 2, 4], String::new())
        );
        let (first, token) = page(&entries, None, 2, odd_out);
        assert_eq!((first, token.as_str()), (vec![0, 2], "after-2c"));
        let after = token.strip_prefix(PREFIX);
        assert_eq!(page(&entries, after, 2, odd_out), (vec![4], String::new()));
        // A full last page has no token when nothing that pick keeps follows it.
        assert_eq!(
            page(&entries, Some("1b"), 2, odd_out),
            (vec![2, 4], String::new())
        );
    }

    #[test]
    fn round_trip_and_garbage() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(decode(&encode(id)).ok().flatten().as_deref(), Some(id));
        assert!(matches!(decode(""), Ok(None)));
        for bad in [
            "invalid-token",
            "after-",
            "after-xyz",
            "after-0123456789ABCDEF0123456789abcdef",
            id,
        ] {
            let e = decode(bad).expect_err(bad);
            assert_eq!(e.code(), tonic::Code::Aborted, "{bad}");
        }
    }
}
