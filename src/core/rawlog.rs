//! The live submission server's raw log files (versions v0, v1 and v2).
//!
//! This module owns the record framing: a `0x1E` separator (v1, v2), little-endian
//! lengths and request time, the client IP (v2), then path and body bytes. It reads
//! records, steps over damage by resynchronising on the next separator (every byte
//! of the file ends up in exactly one record or one skipped region), tells the
//! version from a file name or from the first record, and writes records for tests
//! and the ingest server. It does not inflate bodies or parse paths.
//!
//! v0 files have no separator, so after a bad v0 header nothing can be trusted: the
//! rest of the file is reported as one skipped region.

use std::io::{self, Read, Write};

use super::seqfile::PeekReader;

/// Byte that starts every v1 and v2 record.
pub const SEPARATOR: u8 = 0x1e;
/// The old server's path limit (longer paths were answered 202 and discarded).
pub const DEFAULT_MAX_PATH: usize = 10 * 1024;
/// The old server's body limit (larger bodies were answered 202 and discarded).
pub const DEFAULT_MAX_BODY: usize = 200 * 1024;

/// A raw log format version. The files carry no version byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RawVersion {
    /// Before 2013-09-17: u32 path length, u32 body length, u64 time; no separator.
    V0,
    /// Separator, u16 path length, u32 body length, u64 time.
    V1,
    /// Separator, u8 IP length, u16 path length, u32 body length, u64 time, IP.
    V2,
}

impl RawVersion {
    /// The version a file name states (`telemetry.log.v1.…`, `….v2.…`), if any: a
    /// dot-separated part of the name's last path segment equal to `v0`, `v1` or `v2`.
    pub fn from_file_name(name: &str) -> Option<RawVersion> {
        let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
        base.split('.').find_map(|part| match part {
            "v0" => Some(RawVersion::V0),
            "v1" => Some(RawVersion::V1),
            "v2" => Some(RawVersion::V2),
            _ => None,
        })
    }

    /// Bytes before the IP, path and body.
    pub fn header_len(self) -> usize {
        match self {
            RawVersion::V0 => 16,
            RawVersion::V1 => 15,
            RawVersion::V2 => 16,
        }
    }
}

/// One submission as the server logged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    /// File offset of the record's first byte.
    pub offset: u64,
    /// Request path without the `/submit/telemetry/` prefix.
    pub path: Vec<u8>,
    /// Request body as received (often gzipped).
    pub body: Vec<u8>,
    /// Request time, epoch milliseconds.
    pub timestamp_ms: u64,
    /// Client IP text (v2 only).
    pub ip: Option<Vec<u8>>,
}

/// What the reader found next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawItem {
    /// A well-formed record.
    Record(RawRecord),
    /// Bytes that are not a record: `len` bytes from `offset` were stepped over to
    /// reach the next separator (or the end of the file).
    Skipped {
        /// File offset of the first skipped byte.
        offset: u64,
        /// Number of bytes skipped.
        len: u64,
    },
}

/// Errors reading a raw log: only I/O fails; damaged data comes out as
/// [`RawItem::Skipped`].
#[derive(Debug, thiserror::Error)]
pub enum RawLogError {
    /// The underlying reader failed.
    #[error("i/o error at offset {offset}: {source}")]
    Io {
        /// Offset being read.
        offset: u64,
        /// The reader's error.
        #[source]
        source: io::Error,
    },
}

/// Lengths and time from a record header.
struct Header {
    ip: usize,
    path: usize,
    body: usize,
    timestamp_ms: u64,
}

impl Header {
    fn parse(version: RawVersion, b: &[u8]) -> Header {
        let u16le = |at: usize| usize::from(u16::from_le_bytes([b[at], b[at + 1]]));
        let u32le =
            |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize;
        let u64le = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
        match version {
            RawVersion::V0 => Header {
                ip: 0,
                path: u32le(0),
                body: u32le(4),
                timestamp_ms: u64le(8),
            },
            RawVersion::V1 => Header {
                ip: 0,
                path: u16le(1),
                body: u32le(3),
                timestamp_ms: u64le(7),
            },
            RawVersion::V2 => Header {
                ip: usize::from(b[1]),
                path: u16le(2),
                body: u32le(4),
                timestamp_ms: u64le(8),
            },
        }
    }
}

/// Reads [`RawItem`]s from a raw log.
pub struct RawLogReader<R> {
    input: PeekReader<R>,
    version: Option<RawVersion>,
    /// Longest path accepted; a longer one marks a bad header.
    pub max_path: usize,
    /// Largest body accepted; a larger one marks a bad header.
    pub max_body: usize,
}

impl<R: Read> RawLogReader<R> {
    /// A reader at the file's first byte. With `version` `None` (the file name said
    /// nothing) the first record decides: v2 if it reads as v2, else v1 (v0 when the
    /// file does not start with a separator and reads as v0).
    pub fn new(r: R, version: Option<RawVersion>) -> Self {
        RawLogReader {
            input: PeekReader::new(r),
            version,
            max_path: DEFAULT_MAX_PATH,
            max_body: DEFAULT_MAX_BODY,
        }
    }

    /// The version in use (`None` until detection has seen the first bytes).
    pub fn version(&self) -> Option<RawVersion> {
        self.version
    }

    fn io(&self) -> impl Fn(io::Error) -> RawLogError {
        let offset = self.input.offset();
        move |source| RawLogError::Io { offset, source }
    }

    /// The next record or skipped region, `None` at the end of the file.
    pub fn next_item(&mut self) -> Result<Option<RawItem>, RawLogError> {
        let offset = self.input.offset();
        if self.input.fill(1).map_err(self.io())? == 0 {
            return Ok(None);
        }
        let version = match self.version {
            Some(v) => v,
            None => {
                let v = self.detect()?;
                self.version = Some(v);
                v
            }
        };
        if version != RawVersion::V0 && self.input.peek()[0] != SEPARATOR {
            let (len, _) = self.input.skip_to_byte(SEPARATOR).map_err(self.io())?;
            return Ok(Some(RawItem::Skipped { offset, len }));
        }
        match self.check(version)? {
            Some(h) => {
                let data = &self.input.peek()[version.header_len()..];
                let (ip, data) = data.split_at(h.ip);
                let (path, data) = data.split_at(h.path);
                let record = RawRecord {
                    offset,
                    path: path.to_vec(),
                    body: data[..h.body].to_vec(),
                    timestamp_ms: h.timestamp_ms,
                    ip: (version == RawVersion::V2).then(|| ip.to_vec()),
                };
                self.input
                    .consume(version.header_len() + h.ip + h.path + h.body);
                Ok(Some(RawItem::Record(record)))
            }
            None if version == RawVersion::V0 => {
                let mut len = 0;
                while self.input.fill(1).map_err(self.io())? > 0 {
                    let n = self.input.peek().len();
                    self.input.consume(n);
                    len += n as u64;
                }
                Ok(Some(RawItem::Skipped { offset, len }))
            }
            None => {
                // Bad header: resynchronise on the next separator after this one.
                self.input.consume(1);
                let (len, _) = self.input.skip_to_byte(SEPARATOR).map_err(self.io())?;
                Ok(Some(RawItem::Skipped {
                    offset,
                    len: len + 1,
                }))
            }
        }
    }

    /// Buffers the record at the read position and returns its header when it is
    /// well formed (separator, lengths within the limits, nothing cut short).
    fn check(&mut self, version: RawVersion) -> Result<Option<Header>, RawLogError> {
        let hlen = version.header_len();
        if self.input.fill(hlen).map_err(self.io())? < hlen {
            return Ok(None);
        }
        let b = self.input.peek();
        if version != RawVersion::V0 && b[0] != SEPARATOR {
            return Ok(None);
        }
        let h = Header::parse(version, b);
        if h.path > self.max_path || h.body > self.max_body {
            return Ok(None);
        }
        let total = hlen + h.ip + h.path + h.body;
        if self.input.fill(total).map_err(self.io())? < total {
            return Ok(None);
        }
        Ok(Some(h))
    }

    /// Tries v2 then v1 (then v0) on the first record: a version fits when the record
    /// is well formed and is followed by a separator or the end of the file.
    fn detect(&mut self) -> Result<RawVersion, RawLogError> {
        for version in [RawVersion::V2, RawVersion::V1, RawVersion::V0] {
            if version == RawVersion::V0 && self.input.peek().first() == Some(&SEPARATOR) {
                continue;
            }
            if let Some(h) = self.check(version)? {
                let total = version.header_len() + h.ip + h.path + h.body;
                let have = self.input.fill(total + 1).map_err(self.io())?;
                let next = self.input.peek().get(total).copied();
                let follows = have == total
                    || next == Some(SEPARATOR)
                    || (version == RawVersion::V0 && self.check_v0_at(total));
                if follows {
                    return Ok(version);
                }
            }
        }
        Ok(RawVersion::V1)
    }

    /// Whether a plausible v0 header sits `at` bytes ahead (v0 has no separator to
    /// confirm the first record's end).
    fn check_v0_at(&mut self, at: usize) -> bool {
        let hlen = RawVersion::V0.header_len();
        match self.input.fill(at + hlen) {
            Ok(have) if have >= at + hlen => {
                let h = Header::parse(RawVersion::V0, &self.input.peek()[at..]);
                h.path <= self.max_path && h.body <= self.max_body
            }
            _ => false,
        }
    }
}

impl<R: Read> Iterator for RawLogReader<R> {
    type Item = Result<RawItem, RawLogError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_item().transpose()
    }
}

/// Writes raw log records in one version.
pub struct RawLogWriter<W: Write> {
    out: W,
    version: RawVersion,
}

impl<W: Write> RawLogWriter<W> {
    /// A writer of `version` records.
    pub fn new(out: W, version: RawVersion) -> Self {
        RawLogWriter { out, version }
    }

    /// Writes one record. The IP is written in v2 only (`None` writes an empty one);
    /// lengths that do not fit the version's fields are refused.
    pub fn write_record(
        &mut self,
        path: &[u8],
        body: &[u8],
        timestamp_ms: u64,
        ip: Option<&[u8]>,
    ) -> io::Result<()> {
        let too_long = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{what} too long for the format"),
            )
        };
        let body_len = u32::try_from(body.len()).map_err(|_| too_long("body"))?;
        let mut head = Vec::with_capacity(16);
        let ip = ip.unwrap_or_default();
        match self.version {
            RawVersion::V0 => {
                head.extend_from_slice(
                    &u32::try_from(path.len())
                        .map_err(|_| too_long("path"))?
                        .to_le_bytes(),
                );
            }
            RawVersion::V1 => {
                head.push(SEPARATOR);
                head.extend_from_slice(
                    &u16::try_from(path.len())
                        .map_err(|_| too_long("path"))?
                        .to_le_bytes(),
                );
            }
            RawVersion::V2 => {
                head.push(SEPARATOR);
                head.push(u8::try_from(ip.len()).map_err(|_| too_long("ip"))?);
                head.extend_from_slice(
                    &u16::try_from(path.len())
                        .map_err(|_| too_long("path"))?
                        .to_le_bytes(),
                );
            }
        }
        head.extend_from_slice(&body_len.to_le_bytes());
        head.extend_from_slice(&timestamp_ms.to_le_bytes());
        if self.version == RawVersion::V2 {
            head.extend_from_slice(ip);
        }
        self.out.write_all(&head)?;
        self.out.write_all(path)?;
        self.out.write_all(body)
    }

    /// Flushes and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fixture(name: &str) -> Vec<u8> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/");
        std::fs::read(format!("{dir}{name}")).unwrap()
    }

    fn items(bytes: &[u8], version: Option<RawVersion>) -> (Vec<RawItem>, Option<RawVersion>) {
        let mut r = RawLogReader::new(bytes, version);
        let mut out = Vec::new();
        while let Some(item) = r.next_item().unwrap() {
            out.push(item);
        }
        (out, r.version())
    }

    fn record(item: &RawItem) -> &RawRecord {
        match item {
            RawItem::Record(r) => r,
            other => panic!("not a record: {other:?}"),
        }
    }

    #[test]
    fn telemetry1_fixture_is_one_record_and_a_stray_byte() {
        let bytes = fixture("raw_v1_telemetry1.log");
        for version in [Some(RawVersion::V1), None] {
            let (items, detected) = items(&bytes, version);
            assert_eq!(detected, Some(RawVersion::V1));
            assert_eq!(items.len(), 2, "{items:?}");
            let r = record(&items[0]);
            assert_eq!(r.offset, 0);
            assert!(r
                .path
                .starts_with(b"17caa68c-25f5-450a-9cce-7d31318846d8/idle-daily/Firefox/23.0.1/"));
            assert!(r.body.starts_with(&[0x1f, 0x8b]));
            assert_eq!(r.ip, None);
            let json = super::super::body::decode_body(&r.body).unwrap();
            assert!(serde_json::from_slice::<serde_json::Value>(&json).is_ok());
            let end = (15 + r.path.len() + r.body.len()) as u64;
            assert_eq!(
                items[1],
                RawItem::Skipped {
                    offset: end,
                    len: 1
                }
            );
            assert_eq!(end + 1, bytes.len() as u64);
        }
    }

    #[test]
    fn unicode_fixture_has_two_records() {
        let bytes = fixture("raw_v1_unicode.packed");
        let (items, detected) = items(&bytes, None);
        assert_eq!(detected, Some(RawVersion::V1));
        assert_eq!(items.len(), 2, "{items:?}");
        let (a, b) = (record(&items[0]), record(&items[1]));
        assert!(a.body.starts_with(&[0x1f, 0x8b]));
        assert!(!b.body.starts_with(&[0x1f, 0x8b]));
        for r in [a, b] {
            let json = super::super::body::decode_body(&r.body).unwrap();
            let text = std::str::from_utf8(&json).unwrap();
            assert!(!text.is_ascii(), "expected non-ascii text");
            assert!(serde_json::from_str::<serde_json::Value>(text).is_ok());
        }
        assert_eq!(b.offset, (15 + a.path.len() + a.body.len()) as u64);
        assert_eq!(
            b.offset + (15 + b.path.len() + b.body.len()) as u64,
            bytes.len() as u64
        );
    }

    #[test]
    fn version_from_file_name() {
        let table = [
            (
                "telemetry.log.v1.1378410394.1378410394",
                Some(RawVersion::V1),
            ),
            (
                "incoming/telemetry.log.v2.1390000000.1390000100",
                Some(RawVersion::V2),
            ),
            ("telemetry.log.v0.1", Some(RawVersion::V0)),
            ("telemetry.log", None),
            ("telemetry.log.v12.1", None),
            ("v1/telemetry.log", None),
            ("raw_v1_unicode.packed", None),
        ];
        for (name, want) in table {
            assert_eq!(RawVersion::from_file_name(name), want, "{name}");
        }
    }

    /// Path, body, time and IP, as `write_record` takes them.
    type RecordArgs<'a> = (&'a [u8], &'a [u8], u64, Option<&'a [u8]>);
    /// Per item: is it a record, its offset, its length.
    type Tiles = Vec<(bool, u64, u64)>;

    fn write(version: RawVersion, records: &[RecordArgs]) -> Vec<u8> {
        let mut w = RawLogWriter::new(Vec::new(), version);
        for &(path, body, ts, ip) in records {
            w.write_record(path, body, ts, ip).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn bad_headers_resynchronise_on_the_next_separator() {
        let good = write(RawVersion::V1, &[(b"id/saved-session", b"{}", 7, None)]);
        let long_path = write(
            RawVersion::V1,
            &[(&[b'p'; DEFAULT_MAX_PATH + 1], b"{}", 7, None)],
        );
        let big_body = write(
            RawVersion::V1,
            &[(b"p", &vec![b'b'; DEFAULT_MAX_BODY + 1], 7, None)],
        );
        let at_limits = write(
            RawVersion::V1,
            &[(
                &[b'p'; DEFAULT_MAX_PATH],
                &vec![b'b'; DEFAULT_MAX_BODY],
                7,
                None,
            )],
        );
        let g = good.len() as u64;
        let table: Vec<(&str, Vec<u8>, Tiles)> = vec![
            (
                "garbage before",
                [b"xyz".to_vec(), good.clone()].concat(),
                vec![(false, 0, 3), (true, 3, g)],
            ),
            (
                "garbage after",
                [good.clone(), b"xyz".to_vec()].concat(),
                vec![(true, 0, g), (false, g, 3)],
            ),
            (
                "path too long",
                [long_path.clone(), good.clone()].concat(),
                vec![
                    (false, 0, long_path.len() as u64),
                    (true, long_path.len() as u64, g),
                ],
            ),
            (
                "body too long",
                [big_body.clone(), good.clone()].concat(),
                vec![
                    (false, 0, big_body.len() as u64),
                    (true, big_body.len() as u64, g),
                ],
            ),
            (
                "at the limits",
                at_limits.clone(),
                vec![(true, 0, at_limits.len() as u64)],
            ),
            (
                "truncated",
                [good.clone(), good[..10].to_vec()].concat(),
                vec![(true, 0, g), (false, g, 10)],
            ),
            // A record cut one byte short takes the next one's separator as its last
            // body byte (the format cannot tell); the rest of that one is skipped.
            (
                "cut record",
                [good.clone(), good[..g as usize - 1].to_vec(), good.clone()].concat(),
                vec![(true, 0, g), (true, g, g), (false, 2 * g, g - 1)],
            ),
            ("lone separator", vec![SEPARATOR], vec![(false, 0, 1)]),
        ];
        for (name, bytes, want) in table {
            let (got, _) = items(&bytes, Some(RawVersion::V1));
            let got: Tiles = got
                .iter()
                .map(|i| match i {
                    RawItem::Record(r) => {
                        (true, r.offset, (15 + r.path.len() + r.body.len()) as u64)
                    }
                    RawItem::Skipped { offset, len } => (false, *offset, *len),
                })
                .collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn limits_are_adjustable() {
        let bytes = write(RawVersion::V1, &[(b"abc", b"0123456789", 1, None)]);
        let mut r = RawLogReader::new(&bytes[..], Some(RawVersion::V1));
        r.max_body = 9;
        assert_eq!(
            r.next_item().unwrap(),
            Some(RawItem::Skipped {
                offset: 0,
                len: bytes.len() as u64
            })
        );
    }

    #[test]
    fn detection_prefers_v2_then_v1() {
        let v2 = write(
            RawVersion::V2,
            &[
                (b"id/x", b"{}", 1, Some(b"10.0.0.1")),
                (b"id/y", b"{}", 2, None),
            ],
        );
        let v1 = write(
            RawVersion::V1,
            &[(b"id/x", b"{}", 1, None), (b"id/y", b"{}", 2, None)],
        );
        let v0 = write(
            RawVersion::V0,
            &[(b"id/x", b"{}", 1, None), (b"id/y", b"{}", 2, None)],
        );
        for (bytes, want) in [
            (v2, RawVersion::V2),
            (v1, RawVersion::V1),
            (v0, RawVersion::V0),
        ] {
            let (items, detected) = items(&bytes, None);
            assert_eq!(detected, Some(want));
            assert_eq!(items.len(), 2);
            assert_eq!(record(&items[1]).path, b"id/y");
        }
        assert_eq!(items(b"", None), (vec![], None));
        assert_eq!(items(b"junk", None).1, Some(RawVersion::V1));
    }

    #[test]
    fn v0_damage_skips_the_rest() {
        let good = write(RawVersion::V0, &[(b"p", b"b", 1, None)]);
        let bytes = [good.clone(), vec![0xff; 20]].concat();
        let (got, _) = items(&bytes, Some(RawVersion::V0));
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[1],
            RawItem::Skipped {
                offset: good.len() as u64,
                len: 20
            }
        );
    }

    #[test]
    fn writer_refuses_oversized_fields() {
        let mut w = RawLogWriter::new(Vec::new(), RawVersion::V2);
        assert!(w.write_record(&[0; 70_000], b"", 0, None).is_err());
        assert!(w.write_record(b"", b"", 0, Some(&[0; 300])).is_err());
    }

    fn arb_version() -> impl Strategy<Value = RawVersion> {
        prop::sample::select(vec![RawVersion::V0, RawVersion::V1, RawVersion::V2])
    }

    type Rec = (Vec<u8>, Vec<u8>, u64, Vec<u8>);

    fn arb_records() -> impl Strategy<Value = Vec<Rec>> {
        prop::collection::vec(
            (
                prop::collection::vec(any::<u8>(), 0..200),
                prop::collection::vec(any::<u8>(), 0..3000),
                any::<u64>(),
                prop::collection::vec(any::<u8>(), 0..40),
            ),
            0..20,
        )
    }

    proptest! {
        #[test]
        fn round_trip(version in arb_version(), records in arb_records()) {
            let mut w = RawLogWriter::new(Vec::new(), version);
            for (path, body, ts, ip) in &records {
                w.write_record(path, body, *ts, Some(ip)).unwrap();
            }
            let bytes = w.finish().unwrap();
            let (got, _) = items(&bytes, Some(version));
            prop_assert_eq!(got.len(), records.len());
            for (item, (path, body, ts, ip)) in got.iter().zip(&records) {
                let r = record(item);
                prop_assert_eq!(&r.path, path);
                prop_assert_eq!(&r.body, body);
                prop_assert_eq!(r.timestamp_ms, *ts);
                prop_assert_eq!(r.ip.as_ref(), (version == RawVersion::V2).then_some(ip));
            }
        }

        /// Whatever the bytes, items tile the file: each starts where the last ended.
        #[test]
        fn arbitrary_bytes_are_tiled(
            version in prop::option::of(arb_version()),
            records in arb_records(),
            noise in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..10),
        ) {
            let mut w = RawLogWriter::new(Vec::new(), version.unwrap_or(RawVersion::V1));
            for (path, body, ts, ip) in &records {
                w.write_record(path, body, *ts, Some(ip)).unwrap();
            }
            let mut bytes = w.finish().unwrap();
            for (i, b) in noise {
                if !bytes.is_empty() {
                    let i = i.index(bytes.len());
                    bytes[i] = b;
                }
            }
            let (got, _) = items(&bytes, version);
            let mut at = 0u64;
            for item in &got {
                let (offset, len) = match item {
                    RawItem::Record(r) => {
                        let ip = r.ip.as_ref().map_or(0, |ip| ip.len());
                        let hlen = if r.ip.is_some() { 16 } else { 15 };
                        let hlen = if version == Some(RawVersion::V0) { 16 } else { hlen };
                        (r.offset, (hlen + ip + r.path.len() + r.body.len()) as u64)
                    }
                    RawItem::Skipped { offset, len } => (*offset, *len),
                };
                prop_assert_eq!(offset, at);
                prop_assert!(len > 0);
                at += len;
            }
            prop_assert_eq!(at, bytes.len() as u64);
        }
    }
}
