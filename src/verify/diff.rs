//! The per-record difference of one partition: which doc ids the source has and the
//! destination lacks, which it holds and the source does not, which it holds more
//! often than the source does, and which it holds with other content. Pure: lines in,
//! a [`LineDiff`] out; where the lines come from is the caller's business.
//!
//! Only run on a partition already known to differ (the first pass compares the two
//! streams line by line and keeps nothing), so its memory, a map of the partition's
//! doc ids with a 128-bit hash per line, is spent only where a difference is.

use serde::Serialize;
use std::collections::HashMap;
use std::hash::BuildHasher;

/// Doc ids of one kind of difference: how many records, and the first ids (sorted,
/// at most the cap the report asked for).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IdList {
    /// Records of this kind (an id can count several times).
    pub count: u64,
    /// Distinct doc ids, sorted, capped.
    pub ids: Vec<String>,
    /// Whether ids were left out by the cap.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub capped: bool,
}

impl IdList {
    fn push(&mut self, id: &[u8], records: u64) {
        self.count += records;
        self.ids.push(String::from_utf8_lossy(id).into_owned());
    }

    fn finish(&mut self, cap: usize) {
        self.ids.sort();
        self.ids.dedup();
        if self.ids.len() > cap {
            self.ids.truncate(cap);
            self.capped = true;
        }
    }
}

/// How one partition's destination lines differ from the re-converted source lines.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LineDiff {
    /// Lines the source gives.
    pub source_records: u64,
    /// Lines the destination holds.
    pub dest_records: u64,
    /// Source records with no line in the destination.
    pub missing: IdList,
    /// Destination lines whose doc id the source does not have (or has, with other
    /// content, fewer times).
    pub extra: IdList,
    /// Destination lines that repeat a source line more often than the source does.
    pub duplicated: IdList,
    /// Destination lines whose doc id the source has, with other content.
    pub content: IdList,
}

impl LineDiff {
    /// Records that differ, all kinds together.
    pub fn differences(&self) -> u64 {
        self.missing.count + self.extra.count + self.duplicated.count + self.content.count
    }
}

/// A 128-bit hash of a line's content: two independently seeded 64-bit hashes, so
/// that two different lines compare equal with probability about 2^-128.
fn line_hash(json: &[u8]) -> u128 {
    const A: foldhash::quality::FixedState = foldhash::quality::FixedState::with_seed(0x5eed_0001);
    const B: foldhash::quality::FixedState = foldhash::quality::FixedState::with_seed(0x5eed_0002);
    ((A.hash_one(json) as u128) << 64) | B.hash_one(json) as u128
}

/// Collects both sides' lines of one partition.
#[derive(Default)]
pub struct DiffBuilder {
    by_id: HashMap<Vec<u8>, (Vec<u128>, Vec<u128>)>,
    source: u64,
    dest: u64,
}

impl DiffBuilder {
    /// A source line (re-converted).
    pub fn source(&mut self, doc_id: &[u8], json: &[u8]) {
        self.source += 1;
        self.entry(doc_id).0.push(line_hash(json));
    }

    /// A destination line.
    pub fn dest(&mut self, doc_id: &[u8], json: &[u8]) {
        self.dest += 1;
        self.entry(doc_id).1.push(line_hash(json));
    }

    fn entry(&mut self, doc_id: &[u8]) -> &mut (Vec<u128>, Vec<u128>) {
        if !self.by_id.contains_key(doc_id) {
            self.by_id.insert(doc_id.to_vec(), Default::default());
        }
        self.by_id.get_mut(doc_id).expect("inserted")
    }

    /// Classifies every doc id; at most `cap` ids are kept per kind.
    pub fn finish(self, cap: usize) -> LineDiff {
        let mut d = LineDiff {
            source_records: self.source,
            dest_records: self.dest,
            ..Default::default()
        };
        for (id, (mut src, mut dst)) in self.by_id {
            src.sort_unstable();
            dst.sort_unstable();
            if src == dst {
                continue;
            }
            // Multiset differences of the two sorted lists.
            let (mut only_src, mut only_dst) = (Vec::new(), Vec::new());
            let (mut i, mut j) = (0, 0);
            while i < src.len() || j < dst.len() {
                match (src.get(i), dst.get(j)) {
                    (Some(a), Some(b)) if a == b => {
                        i += 1;
                        j += 1;
                    }
                    (Some(a), Some(b)) if a < b => {
                        only_src.push(*a);
                        i += 1;
                    }
                    (Some(a), None) => {
                        only_src.push(*a);
                        i += 1;
                    }
                    (_, Some(b)) => {
                        only_dst.push(*b);
                        j += 1;
                    }
                    (None, None) => unreachable!(),
                }
            }
            // A changed line shows as one line on each side: pair them first.
            let changed = if src.len() == only_src.len() && dst.len() == only_dst.len() {
                // No line in common: with one side empty this is missing or extra.
                only_src.len().min(only_dst.len())
            } else {
                only_src.len().min(
                    only_dst
                        .iter()
                        .filter(|h| src.binary_search(h).is_err())
                        .count(),
                )
            };
            if changed > 0 {
                d.content.push(&id, changed as u64);
            }
            let missing = only_src.len() - changed;
            if missing > 0 {
                d.missing.push(&id, missing as u64);
            }
            // Of the destination's other lines, copies of a source line are
            // duplicates; the rest are extra.
            let mut unpaired = changed;
            let (mut dup, mut extra) = (0u64, 0u64);
            for h in &only_dst {
                if src.binary_search(h).is_ok() {
                    dup += 1;
                } else if unpaired > 0 {
                    unpaired -= 1;
                } else {
                    extra += 1;
                }
            }
            if dup > 0 {
                d.duplicated.push(&id, dup);
            }
            if extra > 0 {
                d.extra.push(&id, extra);
            }
        }
        for l in [
            &mut d.missing,
            &mut d.extra,
            &mut d.duplicated,
            &mut d.content,
        ] {
            l.finish(cap);
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diff(src: &[(&str, &str)], dst: &[(&str, &str)]) -> LineDiff {
        let mut b = DiffBuilder::default();
        for (id, json) in src {
            b.source(id.as_bytes(), json.as_bytes());
        }
        for (id, json) in dst {
            b.dest(id.as_bytes(), json.as_bytes());
        }
        b.finish(10)
    }

    fn ids(l: &IdList) -> (u64, Vec<&str>) {
        (l.count, l.ids.iter().map(String::as_str).collect())
    }

    fn kinds(d: &LineDiff) -> [(u64, Vec<&str>); 4] {
        [
            ids(&d.missing),
            ids(&d.extra),
            ids(&d.duplicated),
            ids(&d.content),
        ]
    }

    #[test]
    fn classifies_each_kind_of_difference() {
        let src = [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4"), ("d", "4")];
        let none: (u64, Vec<&str>) = (0, vec![]);
        // Equal multisets, in any order: no difference.
        let same = diff(
            &src,
            &[("d", "4"), ("c", "3"), ("b", "2"), ("a", "1"), ("d", "4")],
        );
        assert_eq!(same.differences(), 0);
        assert_eq!((same.source_records, same.dest_records), (5, 5));
        for (case, dst, want) in [
            (
                "removed line",
                vec![("a", "1"), ("c", "3"), ("d", "4"), ("d", "4")],
                [(1, vec!["b"]), none.clone(), none.clone(), none.clone()],
            ),
            (
                "a source duplicate written once",
                vec![("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")],
                [(1, vec!["d"]), none.clone(), none.clone(), none.clone()],
            ),
            (
                "new doc id",
                vec![
                    ("a", "1"),
                    ("b", "2"),
                    ("c", "3"),
                    ("d", "4"),
                    ("d", "4"),
                    ("e", "5"),
                ],
                [none.clone(), (1, vec!["e"]), none.clone(), none.clone()],
            ),
            (
                "duplicated line",
                vec![
                    ("a", "1"),
                    ("a", "1"),
                    ("b", "2"),
                    ("c", "3"),
                    ("d", "4"),
                    ("d", "4"),
                ],
                [none.clone(), none.clone(), (1, vec!["a"]), none.clone()],
            ),
            (
                "changed content",
                vec![("a", "1"), ("b", "2x"), ("c", "3"), ("d", "4"), ("d", "4")],
                [none.clone(), none.clone(), none.clone(), (1, vec!["b"])],
            ),
            (
                "one of two copies changed",
                vec![("a", "1"), ("b", "2"), ("c", "3"), ("d", "4"), ("d", "5")],
                [none.clone(), none.clone(), none.clone(), (1, vec!["d"])],
            ),
            (
                "a second, different line with a known id",
                vec![
                    ("a", "1"),
                    ("a", "9"),
                    ("b", "2"),
                    ("c", "3"),
                    ("d", "4"),
                    ("d", "4"),
                ],
                [none.clone(), (1, vec!["a"]), none.clone(), none.clone()],
            ),
        ] {
            assert_eq!(kinds(&diff(&src, &dst)), want, "{case}");
        }
    }

    #[test]
    fn ids_are_capped_with_full_counts() {
        let src: Vec<(String, String)> =
            (0..30).map(|i| (format!("id{i:02}"), "x".into())).collect();
        let src: Vec<(&str, &str)> = src.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let d = diff(&src, &[]);
        assert_eq!(d.missing.count, 30);
        assert_eq!(d.missing.ids.len(), 10);
        assert_eq!(d.missing.ids[0], "id00");
        assert!(d.missing.capped);
        assert_eq!(d.differences(), 30);
    }
}
