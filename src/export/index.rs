//! A unit's piece index, and the merge of a group's indexes that assembly reads.
//!
//! A unit's pieces file ends with the index of its pieces, sorted by kind (records,
//! then errors) and partition name, a partition's pieces kept in write order. The
//! unit's checkpoint says where the index starts (which is also the bytes of its
//! pieces) and how long it is; the pieces file's CRC covers it. Entries are small:
//! a flags byte, the partition name front-coded against the previous entry's (the
//! names are sorted, so they share most of their bytes), and four varints.
//!
//! Assembly never holds a group's pieces lists: [`Merge`] reads every unit's index
//! at once, each through a buffer of a few KiB (range reads, so the staging may be
//! local or a bucket), and yields one partition at a time, in name order, with its
//! pieces in unit order then write order: exactly the order in which they were
//! concatenated when the lists were kept in memory. Memory: units × the chunk
//! ([`chunk_for`]) plus the partition at hand.

use super::manifest::{IndexRef, Piece, PieceCodec, PieceKind};
use crate::store::Store;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;

const ERRORS: u8 = 1;
const LZ4: u8 = 2;

/// Bytes of index all readers of one merge buffer together (16 MiB), each at
/// least [`CHUNK_MIN`] and at most [`CHUNK_MAX`].
pub const MERGE_BUFFERS: usize = 16 << 20;
/// Smallest read of a unit's index (4 KiB).
pub const CHUNK_MIN: usize = 4 << 10;
/// Largest read of a unit's index (64 KiB).
pub const CHUNK_MAX: usize = 64 << 10;

/// How much of each index a merge of `units` indexes reads at a time.
pub fn chunk_for(units: usize) -> usize {
    (MERGE_BUFFERS / units.max(1)).clamp(CHUNK_MIN, CHUNK_MAX)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A varint at `bytes[*at..]`, advancing `at`; `None` when the bytes end first.
fn get_varint(bytes: &[u8], at: &mut usize) -> io::Result<Option<u64>> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let Some(&b) = bytes.get(*at) else {
            return Ok(None);
        };
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(Some(v));
        }
    }
    Err(io::Error::other("piece index: varint too long"))
}

/// Sorts a unit's pieces into index order: records before errors, by partition,
/// a partition's pieces in write order (the sort is stable).
pub fn sort(pieces: &mut [Piece]) {
    pieces.sort_by(|a, b| (a.kind, &a.partition).cmp(&(b.kind, &b.partition)));
}

/// Encodes pieces already in index order ([`sort`]).
pub fn encode(pieces: &[Piece]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut prev: &str = "";
    for p in pieces {
        let mut flags = 0;
        if p.kind == PieceKind::Errors {
            flags |= ERRORS;
        }
        if p.codec == PieceCodec::Lz4 {
            flags |= LZ4;
        }
        out.push(flags);
        let shared = prev
            .bytes()
            .zip(p.partition.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        // A char boundary in both (the shared bytes are equal, so one check does).
        let shared = (0..=shared)
            .rev()
            .find(|&n| p.partition.is_char_boundary(n))
            .unwrap_or(0);
        let suffix = &p.partition.as_bytes()[shared..];
        put_varint(&mut out, shared as u64);
        put_varint(&mut out, suffix.len() as u64);
        out.extend_from_slice(suffix);
        for v in [p.offset, p.len, p.records, p.raw_bytes] {
            put_varint(&mut out, v);
        }
        prev = &p.partition;
    }
    out
}

/// One entry of an index, its partition name aside (see [`IndexReader::name`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Records or errors.
    pub kind: PieceKind,
    /// Offset in the pieces file.
    pub offset: u64,
    /// Stored length.
    pub len: u64,
    /// Lines in it.
    pub records: u64,
    /// Uncompressed bytes.
    pub raw_bytes: u64,
    /// How it is stored.
    pub codec: PieceCodec,
}

/// Reads one unit's index in order, a chunk at a time.
pub struct IndexReader<'s> {
    store: &'s dyn Store,
    key: String,
    /// Next byte of the pieces file to read, and where the index ends.
    next: u64,
    end: u64,
    /// Entries not yet returned.
    left: u64,
    buf: Vec<u8>,
    pos: usize,
    chunk: usize,
    name: String,
    cur: Option<Entry>,
}

impl<'s> IndexReader<'s> {
    /// A reader of the index `index` of the pieces file `key`, reading `chunk`
    /// bytes at a time; it stands before the first entry.
    pub fn new(store: &'s dyn Store, key: &str, index: &IndexRef, chunk: usize) -> Self {
        IndexReader {
            store,
            key: key.to_string(),
            next: index.offset,
            end: index.offset + index.len,
            left: index.pieces,
            buf: Vec::new(),
            pos: 0,
            chunk: chunk.max(1),
            name: String::new(),
            cur: None,
        }
    }

    /// The current entry's partition (empty for errors).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current entry.
    pub fn current(&self) -> Option<&Entry> {
        self.cur.as_ref()
    }

    fn corrupt(&self, what: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("piece index of {}: {what}", self.key),
        )
    }

    /// Moves to the next entry; false at the end. `scratch` is a buffer the reads
    /// go through (one for all the readers of a merge).
    pub fn advance(&mut self, scratch: &mut Vec<u8>) -> io::Result<bool> {
        if self.left == 0 {
            if self.next != self.end || self.pos != self.buf.len() {
                return Err(self.corrupt("bytes after its last entry"));
            }
            self.cur = None;
            return Ok(false);
        }
        loop {
            if let Some((entry, used)) = self.decode()? {
                self.pos += used;
                self.left -= 1;
                self.cur = Some(entry);
                return Ok(true);
            }
            if self.next >= self.end {
                return Err(self.corrupt("it ends inside an entry"));
            }
            // Keep the partial entry, read the next chunk after it.
            self.buf.drain(..self.pos);
            self.pos = 0;
            let n = (self.end - self.next).min(self.chunk as u64);
            self.store
                .read_range_into(&self.key, self.next, n, scratch)?;
            self.next += n;
            self.buf.extend_from_slice(scratch);
        }
    }

    /// Decodes the entry at `pos`, updating the name: `None` when the buffer holds
    /// only part of it.
    fn decode(&mut self) -> io::Result<Option<(Entry, usize)>> {
        let b = &self.buf[self.pos..];
        let Some(&flags) = b.first() else {
            return Ok(None);
        };
        let mut at = 1;
        let mut v = [0u64; 6];
        let mut suffix = 0..0;
        for (i, slot) in v.iter_mut().enumerate() {
            let Some(x) = get_varint(b, &mut at)? else {
                return Ok(None);
            };
            *slot = x;
            if i == 1 {
                // The suffix follows its length.
                let len = usize::try_from(x).map_err(|_| self.corrupt("name too long"))?;
                if b.len() < at + len {
                    return Ok(None);
                }
                suffix = at..at + len;
                at += len;
            }
        }
        let [shared, _, offset, len, records, raw_bytes] = v;
        let suffix = &b[suffix];
        let kind = if flags & ERRORS != 0 {
            PieceKind::Errors
        } else {
            PieceKind::Records
        };
        let codec = if flags & LZ4 != 0 {
            PieceCodec::Lz4
        } else {
            PieceCodec::Raw
        };
        let shared = shared as usize;
        if shared > self.name.len() || !self.name.is_char_boundary(shared) {
            return Err(self.corrupt("a name shares more than the previous one holds"));
        }
        let suffix =
            std::str::from_utf8(suffix).map_err(|_| self.corrupt("a name is not UTF-8"))?;
        // In order: the new name is the old one's first `shared` bytes then the
        // suffix, so comparing the suffix with the old name's rest compares names.
        let ordered = match self.cur.map(|c| c.kind) {
            Some(k) if k == kind => suffix.as_bytes() >= &self.name.as_bytes()[shared..],
            Some(k) => k < kind,
            None => true,
        };
        if !ordered {
            return Err(self.corrupt("entries out of order"));
        }
        self.name.truncate(shared);
        self.name.push_str(suffix);
        let entry = Entry {
            kind,
            offset,
            len,
            records,
            raw_bytes,
            codec,
        };
        Ok(Some((entry, at)))
    }
}

/// Every piece of one index, in index order (for `verify --deep`, which keeps a
/// folder's pieces anyway).
pub fn read_all(store: &dyn Store, key: &str, index: &IndexRef) -> io::Result<Vec<Piece>> {
    let mut r = IndexReader::new(store, key, index, CHUNK_MAX);
    let mut scratch = Vec::new();
    let mut out = Vec::new();
    while r.advance(&mut scratch)? {
        let e = *r.current().expect("advanced");
        out.push(Piece {
            kind: e.kind,
            partition: r.name().to_string(),
            offset: e.offset,
            len: e.len,
            records: e.records,
            raw_bytes: e.raw_bytes,
            codec: e.codec,
        });
    }
    Ok(out)
}

/// A piece located in a group: its unit (index in the group's units) and where it
/// lies in that unit's pieces file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PieceAt {
    /// The unit, by its place in the group.
    pub unit: u32,
    /// Offset in the unit's pieces file.
    pub offset: u64,
    /// Stored length.
    pub len: u64,
    /// Lines in it.
    pub records: u64,
    /// Uncompressed bytes.
    pub raw_bytes: u64,
    /// How it is stored.
    pub codec: PieceCodec,
}

/// The k-way merge of a group's unit indexes.
pub struct Merge<'s> {
    readers: Vec<IndexReader<'s>>,
    /// Each unit that has entries left, by its current (kind, partition).
    heap: BinaryHeap<Reverse<(PieceKind, String, u32)>>,
    scratch: Vec<u8>,
}

impl<'s> Merge<'s> {
    /// A merge of the indexes of `units` (pieces file and index, in unit order).
    pub fn new<'k>(
        store: &'s dyn Store,
        units: impl IntoIterator<Item = (&'k str, &'k IndexRef)>,
    ) -> io::Result<Self> {
        let units: Vec<_> = units.into_iter().collect();
        let chunk = chunk_for(units.len());
        let mut m = Merge {
            readers: Vec::with_capacity(units.len()),
            heap: BinaryHeap::with_capacity(units.len()),
            scratch: Vec::new(),
        };
        for (i, (key, index)) in units.into_iter().enumerate() {
            let mut r = IndexReader::new(store, key, index, chunk);
            if r.advance(&mut m.scratch)? {
                let kind = r.current().expect("advanced").kind;
                m.heap.push(Reverse((kind, r.name().to_string(), i as u32)));
            }
            m.readers.push(r);
        }
        Ok(m)
    }

    /// The next partition (or the errors, after every partition) with its pieces
    /// appended to `out`, in unit order then write order; `None` at the end.
    pub fn next(&mut self, out: &mut Vec<PieceAt>) -> io::Result<Option<(PieceKind, String)>> {
        let Some(Reverse((kind, name, _))) = self.heap.peek().cloned() else {
            return Ok(None);
        };
        while let Some(Reverse((k, n, u))) = self.heap.peek() {
            if *k != kind || *n != name {
                break;
            }
            let u = *u;
            let Reverse((_, mut key, _)) = self.heap.pop().expect("peeked");
            let r = &mut self.readers[u as usize];
            loop {
                let e = *r.current().expect("a unit in the heap has an entry");
                out.push(PieceAt {
                    unit: u,
                    offset: e.offset,
                    len: e.len,
                    records: e.records,
                    raw_bytes: e.raw_bytes,
                    codec: e.codec,
                });
                if !r.advance(&mut self.scratch)? {
                    break;
                }
                let c = r.current().expect("advanced");
                if c.kind != kind || r.name() != name {
                    // The key's allocation is reused for the unit's next name.
                    key.clear();
                    key.push_str(r.name());
                    self.heap.push(Reverse((c.kind, key, u)));
                    break;
                }
            }
        }
        Ok(Some((kind, name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::local::LocalStore;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn piece(kind: PieceKind, partition: &str, offset: u64, n: u64) -> Piece {
        Piece {
            kind,
            partition: partition.to_string(),
            offset,
            len: n * 3,
            records: n,
            raw_bytes: n * 7 + 1,
            codec: if n % 2 == 0 {
                PieceCodec::Raw
            } else {
                PieceCodec::Lz4
            },
        }
    }

    /// Writes units' pieces (in write order) as pieces files with their indexes,
    /// behind `pad` bytes standing for the pieces.
    fn stage(store: &LocalStore, units: &[Vec<Piece>], pad: u64) -> Vec<(String, IndexRef)> {
        units
            .iter()
            .enumerate()
            .map(|(i, pieces)| {
                let mut sorted = pieces.clone();
                sort(&mut sorted);
                let index = encode(&sorted);
                let mut file = vec![0u8; pad as usize];
                file.extend_from_slice(&index);
                let key = format!("u{i}.pieces");
                store.put(&key, &file).unwrap();
                let r = IndexRef {
                    offset: pad,
                    len: index.len() as u64,
                    pieces: sorted.len() as u64,
                };
                (key, r)
            })
            .collect()
    }

    /// What assembly did when it kept every unit's pieces: a map from partition to
    /// its pieces in unit order then write order, the errors apart.
    fn in_memory(units: &[Vec<Piece>]) -> (BTreeMap<String, Vec<PieceAt>>, Vec<PieceAt>) {
        let mut parts: BTreeMap<String, Vec<PieceAt>> = BTreeMap::new();
        let mut errors = Vec::new();
        for (u, pieces) in units.iter().enumerate() {
            for p in pieces {
                let at = PieceAt {
                    unit: u as u32,
                    offset: p.offset,
                    len: p.len,
                    records: p.records,
                    raw_bytes: p.raw_bytes,
                    codec: p.codec,
                };
                match p.kind {
                    PieceKind::Records => parts.entry(p.partition.clone()).or_default().push(at),
                    PieceKind::Errors => errors.push(at),
                }
            }
        }
        (parts, errors)
    }

    fn merged(
        store: &LocalStore,
        staged: &[(String, IndexRef)],
    ) -> (Vec<(String, Vec<PieceAt>)>, Vec<PieceAt>) {
        let mut m = Merge::new(store, staged.iter().map(|(k, r)| (k.as_str(), r))).unwrap();
        let (mut parts, mut errors) = (Vec::new(), Vec::new());
        let mut out = Vec::new();
        let mut saw_errors = false;
        while let Some((kind, name)) = m.next(&mut out).unwrap() {
            match kind {
                PieceKind::Records => {
                    assert!(!saw_errors, "errors come last");
                    parts.push((name, std::mem::take(&mut out)));
                }
                PieceKind::Errors => {
                    assert!(!saw_errors, "the errors come once");
                    saw_errors = true;
                    assert_eq!(name, "");
                    errors = std::mem::take(&mut out);
                }
            }
        }
        (parts, errors)
    }

    fn check(units: &[Vec<Piece>], pad: u64) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let staged = stage(&store, units, pad);
        for ((key, r), pieces) in staged.iter().zip(units) {
            let mut sorted = pieces.clone();
            sort(&mut sorted);
            assert_eq!(read_all(&store, key, r).unwrap(), sorted);
        }
        let (want_parts, want_errors) = in_memory(units);
        let (got_parts, got_errors) = merged(&store, &staged);
        let want_parts: Vec<(String, Vec<PieceAt>)> = want_parts.into_iter().collect();
        assert_eq!(got_parts, want_parts);
        assert_eq!(got_errors, want_errors);
    }

    #[test]
    fn index_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let mut pieces = vec![
            piece(PieceKind::Records, "b/é/x", 0, 3),
            piece(PieceKind::Errors, "", 10, 1),
            piece(PieceKind::Records, "b/è/y", 20, 200),
            piece(PieceKind::Records, "a", 30, 1 << 40),
            piece(PieceKind::Records, "b/é/x", 40, 4),
        ];
        sort(&mut pieces);
        let index = encode(&pieces);
        store.put("k", &index).unwrap();
        let r = IndexRef {
            offset: 0,
            len: index.len() as u64,
            pieces: pieces.len() as u64,
        };
        assert_eq!(read_all(&store, "k", &r).unwrap(), pieces);
        // Read one byte at a time, every entry straddles reads.
        let mut reader = IndexReader::new(&store, "k", &r, 1);
        let mut scratch = Vec::new();
        let mut names = Vec::new();
        while reader.advance(&mut scratch).unwrap() {
            names.push(reader.name().to_string());
        }
        assert_eq!(names, ["a", "b/è/y", "b/é/x", "b/é/x", ""]);
        // A truncated index is an error, not a short list.
        let short = IndexRef {
            len: r.len - 1,
            ..r.clone()
        };
        assert!(read_all(&store, "k", &short).is_err());
        let fewer = IndexRef {
            pieces: r.pieces - 1,
            ..r
        };
        assert!(read_all(&store, "k", &fewer).is_err());
    }

    #[test]
    fn merge_of_many_units_matches_the_in_memory_order() {
        // 300 units over 400 partitions, each unit touching a varying share of them,
        // some partitions in several pieces per unit, pieces in a scrambled write
        // order, errors in some units.
        let mut units = Vec::new();
        for u in 0..300u64 {
            let mut pieces = Vec::new();
            let mut offset = 0;
            for i in 0..400u64 {
                let p = (i * 7919 + u * 104_729) % 400;
                if (p + u) % (1 + u % 5) != 0 {
                    continue;
                }
                for _ in 0..1 + (p * u) % 3 {
                    pieces.push(piece(
                        PieceKind::Records,
                        &format!("idle-daily/Firefox/nightly/{}/2013{p:06}", p % 9),
                        offset,
                        1 + (p + u + offset) % 5,
                    ));
                    offset += 1;
                }
                if (i + u) % 97 == 0 {
                    pieces.push(piece(PieceKind::Errors, "", offset, 2));
                    offset += 1;
                }
            }
            units.push(pieces);
        }
        check(&units, 5);
    }

    proptest! {
        #[test]
        fn merge_matches_the_in_memory_order(
            units in prop::collection::vec(
                prop::collection::vec((prop::option::weighted(0.9, 0u8..12), 1u64..9), 0..40),
                0..25,
            ),
            pad in 0u64..3,
        ) {
            let units: Vec<Vec<Piece>> = units
                .into_iter()
                .map(|ps| {
                    ps.into_iter()
                        .enumerate()
                        .map(|(i, (p, n))| match p {
                            // Names sharing prefixes, some not ASCII.
                            Some(p) => piece(PieceKind::Records, &format!("r/ü{}/{}", p % 3, p), i as u64, n),
                            None => piece(PieceKind::Errors, "", i as u64, n),
                        })
                        .collect()
                })
                .collect();
            check(&units, pad);
        }
    }
}
