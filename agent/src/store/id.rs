//! Names and fingerprints of snapshots: ids that sort by time, the target
//! slug inside them, the validation of kinds and ids, and the 64-bit FNV-1a
//! checksum kept in the metadata.
//!
//! Everything here is pure, so the rules about what may become a file name
//! live in one place and are tested without touching a disk.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// Longest kind accepted, so ids stay far below the 255-byte file name limit.
pub(crate) const MAX_KIND_LEN: usize = 32;

/// Longest target slug put into an id.
const MAX_SLUG_LEN: usize = 48;

/// Longest id accepted from metadata on disk (the data file adds `.pb.gz`,
/// the temporary file another `.tmp`).
const MAX_ID_LEN: usize = 200;

/// Latest time an id can spell with a four-digit year (10000-01-01T00:00:00Z).
const MAX_UNIX_SECONDS: u64 = 253_402_300_800;

/// 64-bit FNV-1a offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// 64-bit FNV-1a prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a hash of `data`.
pub(crate) fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(FNV_OFFSET, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    })
}

/// The checksum as stored in [`super::SnapshotMeta::checksum`]: 16 lower-case
/// hex digits.
pub(crate) fn checksum(data: &[u8]) -> String {
    format!("{:016x}", fnv1a64(data))
}

/// Whether `s` has the shape [`checksum`] produces.
pub(crate) fn is_checksum(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks a profile kind: 1 to [`MAX_KIND_LEN`] characters of `[a-z0-9_]`.
pub(crate) fn validate_kind(kind: &str) -> Result<()> {
    let ok = !kind.is_empty()
        && kind.len() <= MAX_KIND_LEN
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidSnapshot {
            field: "kind",
            value: kind.to_owned(),
            message: format!(
                "use 1 to {MAX_KIND_LEN} characters of lower-case letters, digits and `_`, \
                 such as `heap` or `cpu`"
            ),
        })
    }
}

/// Whether `id` may name files in the store: `[A-Za-z0-9._-]`, not empty,
/// not starting with a dot (no hidden files, no `.` or `..`), bounded length.
pub(crate) fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Time since the epoch of a snapshot time, refused before 1970 or after
/// year 9999 (ids spell the year with four digits so they sort as text).
pub(crate) fn since_epoch(time: SystemTime) -> Result<Duration> {
    let invalid = |message: &str| Error::InvalidSnapshot {
        field: "time",
        value: format!("{time:?}"),
        message: message.to_owned(),
    };
    let since = time
        .duration_since(UNIX_EPOCH)
        .map_err(|_| invalid("the time is before 1970; pass None to use the current time"))?;
    if since.as_secs() >= MAX_UNIX_SECONDS {
        return Err(invalid(
            "the time is after year 9999; pass None to use the current time",
        ));
    }
    Ok(since)
}

/// Whether `secs` is a time metadata on disk may hold.
pub(crate) fn is_valid_time(secs: f64) -> bool {
    secs.is_finite() && secs >= 0.0 && secs < MAX_UNIX_SECONDS as f64
}

/// Lower-case ASCII letters and digits of `target`, every other run of
/// characters turned into one `-`, trimmed and bounded; `target` if nothing
/// is left.
pub(crate) fn slug(target: &str) -> String {
    let mut out = String::with_capacity(target.len().min(MAX_SLUG_LEN));
    for c in target.chars() {
        if out.len() >= MAX_SLUG_LEN {
            break;
        }
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() {
        out.push_str("target");
    }
    out
}

/// The id of a snapshot:
/// `<UTC time to the millisecond>-<target slug>-<kind>-<seq>`, such as
/// `20261123T130501.123Z-api-heap-000042`.
///
/// Ids sort as text in time order (to the millisecond); within one
/// millisecond, snapshots of one target and kind sort by `seq` as long as it
/// has at most six digits.
pub(crate) fn make_id(since_epoch: Duration, target: &str, kind: &str, seq: u64) -> String {
    format!(
        "{}-{}-{kind}-{seq:06}",
        utc_stamp(since_epoch),
        slug(target)
    )
}

/// The sequence number at the end of an id made by [`make_id`].
pub(crate) fn seq_of(id: &str) -> Option<u64> {
    id.rsplit_once('-')?.1.parse().ok()
}

/// `YYYYMMDDTHHMMSS.mmmZ` in UTC.
fn utc_stamp(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs();
    let millis = since_epoch.subsec_millis();
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Gregorian (year, month, day) of a count of days since 1970-01-01.
///
/// Works in 400-year eras that start on March 1st, so the leap day is the
/// last day of its year and month lengths follow a fixed pattern.
pub fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the origin from 1970-01-01 to 0000-03-01 (719 468 days earlier).
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months counted from March: 0 = March ... 11 = February.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_values() {
        // Reference values of 64-bit FNV-1a.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(checksum(b"a"), "af63dc4c8601ec8c");
        assert!(is_checksum(&checksum(b"anything")));
        assert!(!is_checksum("AF63DC4C8601EC8C"));
        assert!(!is_checksum("af63"));
    }

    #[test]
    fn stamps() {
        assert_eq!(utc_stamp(Duration::ZERO), "19700101T000000.000Z");
        // 2000-02-29 (a leap day) 12:34:56.789.
        assert_eq!(
            utc_stamp(Duration::from_millis(951_827_696_789)),
            "20000229T123456.789Z"
        );
        assert_eq!(
            utc_stamp(Duration::from_secs(1_795_417_201)),
            "20261123T070001.000Z"
        );
        assert_eq!(
            utc_stamp(Duration::from_secs(MAX_UNIX_SECONDS - 1)),
            "99991231T235959.000Z"
        );
    }

    #[test]
    fn slugs() {
        assert_eq!(slug("api"), "api");
        assert_eq!(slug("My Service (prod)"), "my-service-prod");
        assert_eq!(slug("--a..b--"), "a-b");
        assert_eq!(slug(""), "target");
        assert_eq!(slug("ünïcødé"), "n-c-d");
        assert_eq!(slug("/// ???"), "target");
        assert_eq!(slug(&"x".repeat(500)).len(), MAX_SLUG_LEN);
    }

    #[test]
    fn kinds() {
        for ok in ["heap", "cpu", "allocs", "goroutine", "heap_v2", "x1"] {
            validate_kind(ok).unwrap();
        }
        for bad in ["", "Heap", "heap-2", "../x", "a b", &"k".repeat(33)] {
            assert!(
                matches!(
                    validate_kind(bad),
                    Err(Error::InvalidSnapshot { field: "kind", .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn ids() {
        let id = make_id(
            Duration::from_millis(1_795_417_201_123),
            "API prod",
            "heap",
            42,
        );
        assert_eq!(id, "20261123T070001.123Z-api-prod-heap-000042");
        assert!(is_valid_id(&id));
        assert_eq!(seq_of(&id), Some(42));
        assert_eq!(seq_of("nodash"), None);
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a b",
            "a\0b",
            &"i".repeat(201),
        ] {
            assert!(!is_valid_id(bad), "{bad:?}");
        }
        // Text order is time order, across seconds, days and years.
        let times = [
            0,
            999,
            1_000,
            59_999,
            86_400_000,
            951_827_696_789,
            1_795_417_201_123,
        ];
        let ids: Vec<String> = times
            .iter()
            .map(|&ms| make_id(Duration::from_millis(ms), "t", "cpu", 0))
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn times() {
        assert!(since_epoch(UNIX_EPOCH - Duration::from_secs(1)).is_err());
        assert!(since_epoch(UNIX_EPOCH + Duration::from_secs(MAX_UNIX_SECONDS)).is_err());
        assert!(since_epoch(UNIX_EPOCH).is_ok());
        assert!(is_valid_time(0.0) && is_valid_time(1.7e9));
        assert!(!is_valid_time(-1.0) && !is_valid_time(f64::NAN) && !is_valid_time(f64::INFINITY));
    }
}
