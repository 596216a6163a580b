//! Why a record was rejected: the closed set of reasons that reports, the error output
//! and the `errors` command show. The strings are part of the project's interface
//! (SPEC §4, §6), so they are spelled once, here.

use std::fmt;

/// A reason for rejecting a whole record, in the order the checks run (SPEC §6):
/// when several apply, the first in this order wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The legacy row key is malformed (length, salt, date or doc id).
    InvalidKey,
    /// The value is not valid UTF-8, or starts like gzip but does not inflate.
    CorruptedData,
    /// Not JSON, or the top level is not an object.
    InvalidJson,
    /// `ver` is missing or not a version this command converts.
    UnsupportedVersion,
    /// `info` is absent or not an object.
    MissingInfo,
    /// Histograms present, no `info.revision`, and the revision table has no match.
    MissingRevision,
    /// `info.revision` is not an `http(s)://host/<repo>/rev/<hex>` URL.
    InvalidRevision,
    /// The mappings hold no histogram definitions for the revision.
    UnknownRevision,
    /// A histogram's `bucket_count` differs from its definition.
    HistogramMismatch,
    /// A `values` key is not a bucket lower bound, or a histogram is not an object.
    InvalidBucket,
    /// A count is not a JSON integer ≥ 0.
    InvalidCount,
}

impl Reason {
    /// Every reason, in check order.
    pub const ALL: [Reason; 11] = [
        Reason::InvalidKey,
        Reason::CorruptedData,
        Reason::InvalidJson,
        Reason::UnsupportedVersion,
        Reason::MissingInfo,
        Reason::MissingRevision,
        Reason::InvalidRevision,
        Reason::UnknownRevision,
        Reason::HistogramMismatch,
        Reason::InvalidBucket,
        Reason::InvalidCount,
    ];

    /// The exact string used in reports and in the error output.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidKey => "invalid_key",
            Reason::CorruptedData => "corrupted_data",
            Reason::InvalidJson => "invalid_json",
            Reason::UnsupportedVersion => "unsupported_version",
            Reason::MissingInfo => "missing_info",
            Reason::MissingRevision => "missing_revision",
            Reason::InvalidRevision => "invalid_revision",
            Reason::UnknownRevision => "unknown_revision",
            Reason::HistogramMismatch => "histogram_mismatch",
            Reason::InvalidBucket => "invalid_bucket",
            Reason::InvalidCount => "invalid_count",
        }
    }

    /// Parses the string form back (for reading error outputs).
    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected record: the reason, and a short human detail (which histogram, which
/// key, which byte) for the error output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The machine-readable reason.
    pub reason: Reason,
    /// What exactly failed, for a person reading the error output.
    pub detail: String,
}

impl Rejection {
    /// A rejection with a detail message.
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Rejection {
            reason,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_and_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), Some(r));
            assert!(seen.insert(r.as_str()));
        }
        assert_eq!(Reason::parse("nope"), None);
    }

    #[test]
    fn check_order_is_declaration_order() {
        let mut sorted = Reason::ALL;
        sorted.sort();
        assert_eq!(sorted, Reason::ALL);
        assert!(Reason::InvalidKey < Reason::InvalidCount);
    }
}
