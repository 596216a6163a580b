//! The legacy HBase row key: 1 salt byte, 8 ASCII digits `yyyyMMdd` (the submission
//! day) and the 36-character document id. This module checks a key and splits it; it
//! owns nothing else (the text-dump framing lives in `textdump`).

/// Length of a legacy row key in bytes.
pub const KEY_LEN: usize = 45;

/// A checked legacy row key, borrowing the key bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowKey<'a> {
    /// The submission day, `yyyyMMdd`, as written in the key.
    pub day: &'a str,
    /// The document id, as written (any case).
    pub doc_id: &'a str,
}

/// Why a key is an `invalid_key`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key is not 45 bytes long.
    #[error("row key is {0} bytes, expected 45")]
    Length(usize),
    /// The document id is not an 8-4-4-4-12 hex string.
    #[error("doc id {0:?} is not a uuid")]
    DocId(String),
    /// The date part is not a real calendar date.
    #[error("date {0:?} in row key is not a real date")]
    Date(String),
    /// The salt byte does not match the doc id.
    #[error("salt byte 0x{found:02x} does not match doc id (expected 0x{expected:02x})")]
    Salt {
        /// The salt byte in the key.
        found: u8,
        /// The salt the id implies.
        expected: u8,
    },
}

/// Checks a legacy row key: length, doc id, date, then salt.
pub fn parse(key: &[u8]) -> Result<RowKey<'_>, KeyError> {
    if key.len() != KEY_LEN {
        return Err(KeyError::Length(key.len()));
    }
    let id = &key[9..];
    if !is_uuid(id) {
        return Err(KeyError::DocId(String::from_utf8_lossy(id).into_owned()));
    }
    let date = &key[1..9];
    if !is_real_date(date) {
        return Err(KeyError::Date(String::from_utf8_lossy(date).into_owned()));
    }
    let expected = salt_for(id);
    if key[0] != expected {
        return Err(KeyError::Salt {
            found: key[0],
            expected,
        });
    }
    // Both parts are ASCII, checked above.
    let day = std::str::from_utf8(date).expect("digits are ascii");
    let doc_id = std::str::from_utf8(id).expect("uuid is ascii");
    Ok(RowKey { day, doc_id })
}

/// Builds the 45-byte row key the old HBase table used for `doc_id` on `day`.
/// `doc_id` must be a uuid and `day` 8 digits (the data generator's use).
pub fn build(day: &str, doc_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(KEY_LEN);
    key.push(salt_for(doc_id.as_bytes()));
    key.extend_from_slice(day.as_bytes());
    key.extend_from_slice(doc_id.as_bytes());
    key
}

/// The salt byte: the id's first two hex digits as a number, minus 128, as a byte.
fn salt_for(id: &[u8]) -> u8 {
    let v = (hex_val(id[0]) << 4) | hex_val(id[1]);
    v ^ 0x80
}

fn hex_val(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
    }
}

/// An 8-4-4-4-12 hex string, any case; version and variant bits are not checked
/// (SPEC §6: real ids are not all RFC 4122).
pub fn is_uuid(id: &[u8]) -> bool {
    id.len() == 36
        && id.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// `yyyyMMdd` naming a real day of the proleptic Gregorian calendar (year 0001-9999).
pub fn is_real_date(d: &[u8]) -> bool {
    if d.len() != 8 || !d.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let n = |r: std::ops::Range<usize>| d[r].iter().fold(0u32, |a, &c| a * 10 + (c - b'0') as u32);
    let (y, m, day) = (n(0..4), n(4..6), n(6..8));
    if y == 0 || !(1..=12).contains(&m) || day == 0 {
        return false;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    day <= days
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "17caa68c-25f5-450a-9cce-7d31318846d8";

    #[test]
    fn build_then_parse() {
        let k = build("20131011", ID);
        assert_eq!(k.len(), KEY_LEN);
        assert_eq!(k[0], 0x17 ^ 0x80);
        let p = parse(&k).unwrap();
        assert_eq!(p.day, "20131011");
        assert_eq!(p.doc_id, ID);
    }

    #[test]
    fn salt_can_be_tab_or_newline() {
        // 0x89 - 128 = 9 (tab), 0x8a - 128 = 10 (newline).
        let k = build("20130101", "89aaaaaa-0000-0000-0000-000000000000");
        assert_eq!(k[0], b'\t');
        assert!(parse(&k).is_ok());
        let k = build("20130101", "8A000000-0000-0000-0000-000000000000");
        assert_eq!(k[0], b'\n');
        assert!(parse(&k).is_ok());
    }

    #[test]
    fn rejections() {
        let good = build("20131011", ID);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (good[..44].to_vec(), "length"),
            ([good.clone(), b"x".to_vec()].concat(), "length"),
            (build("20130230", ID), "date"),
            (build("20131301", ID), "date"),
            (build("00001011", ID), "date"),
            (build("2013101a", ID), "date"),
            (
                build("20131011", "17caa68c-25f5-450a-9cce-7d31318846dz"),
                "docid",
            ),
            (
                build("20131011", "17caa68c_25f5-450a-9cce-7d31318846d8"),
                "docid",
            ),
            (
                {
                    let mut k = good.clone();
                    k[0] ^= 1;
                    k
                },
                "salt",
            ),
        ];
        for (key, want) in cases {
            let got = parse(&key).unwrap_err();
            let kind = match got {
                KeyError::Length(_) => "length",
                KeyError::Date(_) => "date",
                KeyError::DocId(_) => "docid",
                KeyError::Salt { .. } => "salt",
            };
            assert_eq!(kind, want, "{:?}", String::from_utf8_lossy(&key));
        }
    }

    #[test]
    fn dates() {
        for (d, ok) in [
            ("20120229", true),
            ("20130229", false),
            ("20000229", true),
            ("19000229", false),
            ("20131231", true),
            ("20131232", false),
            ("20130431", false),
            ("20130100", false),
        ] {
            assert_eq!(is_real_date(d.as_bytes()), ok, "{d}");
        }
    }

    #[test]
    fn uuid_any_case_no_version_check() {
        assert!(is_uuid(b"ABCDEF01-2345-6789-abcd-ef0123456789"));
        assert!(is_uuid(b"00000000-0000-0000-0000-000000000000"));
        assert!(!is_uuid(b"00000000-0000-0000-0000-00000000000"));
        assert!(!is_uuid(b"000000000-000-0000-0000-000000000000"));
    }
}
