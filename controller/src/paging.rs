//! ListVolumes paging tokens.
//!
//! Volumes are listed in the order of their Heketi id; a token holds the last id of the page it
//! ends. The next page starts after that id, so creates and deletes between pages neither
//! repeat nor skip a volume that exists throughout (a new volume shows up on a later page
//! when its id sorts after the token).

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

#[cfg(test)]
mod tests {
    use super::*;

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
