//! Versions as text: `<writer id in hex>-<sequence number>`, e.g. `6e3f09a2c4b81d77-42`.

use crate::proto::{Dot, DotText, WriterId};

/// The text form of a version's dot ([`DotText`]).
pub fn format(dot: Dot) -> String {
    DotText(dot).to_string()
}

/// Text that is not a version.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a version (`<writer hex>-<sequence>`, as returned by PUT)")]
pub struct VersionParseError(pub String);

/// Parses [`format()`]'s output.
///
/// # Errors
///
/// [`VersionParseError`] holding the text.
pub fn parse(s: &str) -> Result<Dot, VersionParseError> {
    let bad = || VersionParseError(s.to_string());
    let (writer, seq) = s.split_once('-').ok_or_else(bad)?;
    let writer = u64::from_str_radix(writer, 16).map_err(|_| bad())?;
    let seq: u64 = seq.parse().map_err(|_| bad())?;
    if seq == 0 {
        return Err(bad());
    }
    Ok(Dot::new(WriterId(writer), seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_round_trip_and_garbage_is_refused() {
        let dot = Dot::new(WriterId(0x6e3f_09a2_c4b8_1d77), 42);
        assert_eq!(format(dot), "6e3f09a2c4b81d77-42");
        assert_eq!(parse(&format(dot)), Ok(dot));
        for bad in ["", "42", "zz-1", "abc-", "abc-0", "abc--1", "abc-1-2"] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
