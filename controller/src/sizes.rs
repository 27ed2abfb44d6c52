//! Sizes: Heketi allocates whole GiB.

use crate::error::{Error, Result};

/// One GiB in bytes.
pub const GIB: u64 = 1 << 30;
/// The size of a volume created without a requested size.
pub const DEFAULT_GIB: u64 = 1;

/// The whole number of GiB that satisfies `required_bytes` (rounded up) within `limit_bytes`
/// (0: no limit). `required_bytes` 0 asks for `default_gib`, or is an error naming the field
/// when there is no default.
pub fn round_up_gib(
    required_bytes: i64,
    limit_bytes: i64,
    default_gib: Option<u64>,
) -> Result<u64> {
    let required = u64::try_from(required_bytes).map_err(|_| {
        Error::invalid(format!(
            "capacity_range.required_bytes is negative ({required_bytes})"
        ))
    })?;
    let limit = u64::try_from(limit_bytes).map_err(|_| {
        Error::invalid(format!(
            "capacity_range.limit_bytes is negative ({limit_bytes})"
        ))
    })?;
    if limit > 0 && limit < required {
        return Err(Error::invalid(format!(
            "capacity_range.limit_bytes ({limit}) is smaller than required_bytes ({required})"
        )));
    }
    let gib = if required == 0 {
        default_gib.ok_or_else(|| Error::invalid("capacity_range.required_bytes must be set"))?
    } else {
        required.div_ceil(GIB)
    };
    let bytes = gib.checked_mul(GIB).filter(|b| i64::try_from(*b).is_ok());
    match bytes {
        Some(b) if limit == 0 || b <= limit => Ok(gib),
        _ => Err(Error::OutOfRange(format!(
            "Heketi allocates whole GiB: {} GiB is the smallest size for required_bytes \
             {required}, which is above limit_bytes {limit}; raise the limit or ask for a \
             whole number of GiB",
            gib
        ))),
    }
}

/// Raises `gib` to the smallest size the volume type allows (`min_gib`), within `limit_bytes`
/// (0: no limit).
pub fn at_least(gib: u64, min_gib: u64, limit_bytes: i64) -> Result<u64> {
    if gib >= min_gib {
        return Ok(gib);
    }
    let limit = u64::try_from(limit_bytes).unwrap_or(0);
    if limit > 0 && min_gib.saturating_mul(GIB) > limit {
        return Err(Error::OutOfRange(format!(
            "the smallest volume of this volumetype is {min_gib} GiB (Heketi makes no brick \
             below 1 GiB), which is above limit_bytes {limit}; raise the limit"
        )));
    }
    Ok(min_gib)
}

/// `gib` in bytes, as CSI reports capacities.
pub fn gib_to_bytes(gib: u64) -> i64 {
    i64::try_from(gib.saturating_mul(GIB)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_table() {
        let g = GIB as i64;
        // (required, limit, default, Ok(gib) or Err(code))
        type Case = (i64, i64, Option<u64>, Result<u64, tonic::Code>);
        let cases: Vec<Case> = vec![
            (0, 0, Some(1), Ok(1)),
            (0, 0, None, Err(tonic::Code::InvalidArgument)),
            (1, 0, Some(1), Ok(1)),
            (g, 0, Some(1), Ok(1)),
            (g + 1, 0, Some(1), Ok(2)),
            (10 * g, 10 * g, Some(1), Ok(10)),
            (10 * g - 5, 10 * g, Some(1), Ok(10)),
            (g + 1, 2 * g - 1, Some(1), Err(tonic::Code::OutOfRange)),
            (0, g / 2, Some(1), Err(tonic::Code::OutOfRange)),
            (0, g, Some(1), Ok(1)),
            (-1, 0, Some(1), Err(tonic::Code::InvalidArgument)),
            (0, -1, Some(1), Err(tonic::Code::InvalidArgument)),
            (2 * g, g, Some(1), Err(tonic::Code::InvalidArgument)),
            (i64::MAX, 0, Some(1), Err(tonic::Code::OutOfRange)),
            (
                i64::MAX - g,
                0,
                Some(1),
                Ok((i64::MAX as u64 - GIB).div_ceil(GIB)),
            ),
        ];
        for (req, lim, def, want) in cases {
            let got = round_up_gib(req, lim, def).map_err(|e| e.code());
            assert_eq!(got, want, "required {req} limit {lim}");
        }
        assert_eq!(gib_to_bytes(3), 3 * g);
    }

    #[test]
    fn minimum_by_type() {
        let g = GIB as i64;
        assert_eq!(at_least(1, 2, 0).ok(), Some(2));
        assert_eq!(at_least(3, 2, 0).ok(), Some(3));
        assert_eq!(at_least(1, 4, 4 * g).ok(), Some(4));
        assert_eq!(
            at_least(1, 4, 3 * g).map_err(|e| e.code()),
            Err(tonic::Code::OutOfRange)
        );
    }

    #[test]
    fn out_of_range_explains_rounding() {
        let e = round_up_gib(GIB as i64 + 1, 2 * GIB as i64 - 1, Some(1)).expect_err("no fit");
        assert!(e.to_string().contains("whole GiB"), "{e}");
        assert!(e.to_string().contains("limit_bytes"), "{e}");
    }
}
