//! Reading objects of the new store back: for `verify`, re-processing and tests.
//!
//! This module owns the object container (`.xz`, possibly several concatenated xz
//! streams, and the old `.lzma` files, which hold either LZMA-alone or xz: the xz
//! magic decides) and the line framing `<docId>\t<json>\n`. It does not judge doc ids
//! or JSON, and does not know where objects live.

use std::io::{self, BufRead, BufReader, Read};

use super::body::{self, Container, XZ_MAGIC};

/// Default longest line accepted.
pub const DEFAULT_MAX_LINE: usize = 256 << 20;

/// Errors reading an object.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or decompressing failed; the offset is in the decompressed stream.
    #[error("read error at decompressed offset {offset}: {source}")]
    Io {
        /// Decompressed offset reached.
        offset: u64,
        /// The reader's or decompressor's error.
        #[source]
        source: io::Error,
    },
    /// A line without the tab between doc id and JSON.
    #[error("line at decompressed offset {offset} has no tab")]
    NoTab {
        /// Offset of the line's first byte.
        offset: u64,
    },
    /// A line runs past the limit without a newline.
    #[error("line at decompressed offset {offset} is longer than {limit} bytes")]
    LineTooLong {
        /// Offset of the line's first byte.
        offset: u64,
        /// The limit in force.
        limit: usize,
    },
}

/// Wraps an object's compressed bytes in a reader of its lines: xz (all streams)
/// when it starts with the xz magic, else LZMA-alone (which fails on the first read
/// if it is not LZMA either).
pub fn open_object<'a>(r: impl Read + 'a) -> Result<Box<dyn BufRead + 'a>, StoreError> {
    let (prefix, r) = body::read_prefix(r, XZ_MAGIC.len())
        .map_err(|source| StoreError::Io { offset: 0, source })?;
    let container = if prefix.starts_with(XZ_MAGIC) {
        Container::Xz
    } else {
        Container::LzmaAlone
    };
    let whole = BufReader::new(io::Cursor::new(prefix).chain(r));
    Ok(body::decompressing_reader(whole, container))
}

/// One line of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreLine {
    /// Offset of the line in the decompressed stream.
    pub offset: u64,
    /// Bytes before the first tab.
    pub doc_id: Vec<u8>,
    /// Bytes after the first tab, without the newline.
    pub json: Vec<u8>,
}

/// Reads [`StoreLine`]s from a decompressed object (see [`open_object`]).
pub struct StoreLineReader<R> {
    r: R,
    offset: u64,
    line: Vec<u8>,
    max_line: usize,
}

impl<R: BufRead> StoreLineReader<R> {
    /// A reader at the object's first decompressed byte.
    pub fn new(r: R) -> Self {
        StoreLineReader {
            r,
            offset: 0,
            line: Vec::new(),
            max_line: DEFAULT_MAX_LINE,
        }
    }

    /// Sets the longest line accepted (default [`DEFAULT_MAX_LINE`]).
    pub fn with_max_line(mut self, max_line: usize) -> Self {
        self.max_line = max_line;
        self
    }

    /// The next line, `None` at the end. A last line without a newline counts.
    pub fn next_line(&mut self) -> Result<Option<StoreLine>, StoreError> {
        let offset = self.offset;
        self.line.clear();
        let room = self.max_line as u64 + 1;
        let n = (&mut self.r)
            .take(room)
            .read_until(b'\n', &mut self.line)
            .map_err(|source| StoreError::Io { offset, source })?;
        if n == 0 {
            return Ok(None);
        }
        if self.line.last() == Some(&b'\n') {
            self.line.pop();
        } else if n as u64 == room {
            return Err(StoreError::LineTooLong {
                offset,
                limit: self.max_line,
            });
        }
        let tab = memchr::memchr(b'\t', &self.line).ok_or(StoreError::NoTab { offset })?;
        self.offset += n as u64;
        Ok(Some(StoreLine {
            offset,
            doc_id: self.line[..tab].to_vec(),
            json: self.line[tab + 1..].to_vec(),
        }))
    }
}

impl<R: BufRead> Iterator for StoreLineReader<R> {
    type Item = Result<StoreLine, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_line().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    fn fixture(name: &str) -> Vec<u8> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/");
        std::fs::read(format!("{dir}{name}")).unwrap()
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn lzma_alone(data: &[u8]) -> Vec<u8> {
        let opts = xz2::stream::LzmaOptions::new_preset(1).unwrap();
        let stream = xz2::stream::Stream::new_lzma_encoder(&opts).unwrap();
        let mut e = xz2::write::XzEncoder::new_stream(Vec::new(), stream);
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn decompress(bytes: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        open_object(bytes).unwrap().read_to_end(&mut out)?;
        Ok(out)
    }

    fn lines(bytes: &[u8]) -> Result<Vec<StoreLine>, StoreError> {
        StoreLineReader::new(open_object(bytes)?).collect()
    }

    #[test]
    fn published_file_reads_whole() {
        let bytes = fixture("published_v2_ss-ff-n-22.lzma");
        let text = decompress(&bytes).unwrap();
        let got = lines(&bytes).unwrap();
        assert!(!got.is_empty());
        assert_eq!(
            got.len(),
            text.iter().filter(|&&b| b == b'\n').count() + usize::from(!text.ends_with(b"\n"))
        );
        let mut offset = 0;
        for line in &got {
            assert_eq!(line.offset, offset);
            offset += (line.doc_id.len() + 1 + line.json.len() + 1) as u64;
            assert_eq!(line.doc_id.len(), 36, "doc id at {}", line.offset);
            let v: serde_json::Value = serde_json::from_slice(&line.json)
                .unwrap_or_else(|e| panic!("json at offset {}: {e}", line.offset));
            assert!(v.is_object());
        }
        assert_eq!(offset, text.len() as u64);
    }

    #[test]
    fn compress_test_containers_agree() {
        let xz = decompress(&fixture("compress_test.txt.xz")).unwrap();
        let lzma = decompress(&fixture("compress_test.txt.lzma")).unwrap();
        let mut gz = Vec::new();
        let gz_bytes = fixture("compress_test.txt.gz");
        let (_, mut r) = body::open_decompressed(&gz_bytes[..]).unwrap();
        r.read_to_end(&mut gz).unwrap();
        assert!(!xz.is_empty());
        assert_eq!(xz, lzma);
        assert_eq!(xz, gz);
    }

    #[test]
    fn concatenated_xz_streams_and_lzma_holding_xz() {
        let text = b"id-1\t{\"a\":1}\nid-2\t{\"b\":2}\nid-3\t{}\n";
        let multi = [xz(&text[..13]), xz(&text[13..]), xz(b"")].concat();
        assert_eq!(decompress(&multi).unwrap(), text);
        assert_eq!(decompress(&lzma_alone(text)).unwrap(), text);
        let got = lines(&multi).unwrap();
        assert_eq!(
            got.iter().map(|l| l.offset).collect::<Vec<_>>(),
            [0, 13, 26]
        );
        assert_eq!(got[1].doc_id, b"id-2");
        assert_eq!(got[1].json, b"{\"b\":2}");
    }

    #[test]
    fn line_errors_carry_offsets() {
        let table: Vec<(&[u8], Result<usize, &str>)> = vec![
            (b"", Ok(0)),
            (b"a\tb", Ok(1)),
            (b"a\tb\n\tc\nd\t\n", Ok(3)),
            (
                b"a\tb\nnotab\n",
                Err("line at decompressed offset 4 has no tab"),
            ),
            (b"a\tb\n\n", Err("line at decompressed offset 4 has no tab")),
            (
                b"a\t0123456789\n",
                Err("line at decompressed offset 0 is longer than 8 bytes"),
            ),
        ];
        for (text, want) in table {
            let got: Result<Vec<_>, _> = StoreLineReader::new(text).with_max_line(8).collect();
            match (got, want) {
                (Ok(lines), Ok(n)) => assert_eq!(lines.len(), n, "{text:?}"),
                (Err(e), Err(msg)) => assert_eq!(e.to_string(), msg),
                (got, want) => panic!("{text:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn corrupt_objects_are_errors() {
        let mut bad = xz(b"id\t{}\n".repeat(100).as_slice());
        let mid = bad.len() / 2;
        bad[mid] ^= 0xff;
        assert!(matches!(lines(&bad), Err(StoreError::Io { .. })));
        assert!(matches!(lines(b"plain text\n"), Err(StoreError::Io { .. })));
        assert!(matches!(
            lines(&xz(b"id\t{}\n")[..20]),
            Err(StoreError::Io { .. })
        ));
        assert!(matches!(lines(b""), Err(StoreError::Io { .. })));
    }

    proptest! {
        #[test]
        fn arbitrary_objects_never_panic(data in prop::collection::vec(any::<u8>(), 0..2000), xz_magic in any::<bool>()) {
            let bytes = if xz_magic { [XZ_MAGIC, &data[..]].concat() } else { data };
            check(&bytes);
        }

        #[test]
        fn round_trip(rows in prop::collection::vec(("[0-9a-f-]{0,36}", "[ -~]{0,200}"), 0..30), streams in 1usize..4) {
            let text: Vec<u8> = rows.iter().flat_map(|(id, j)| format!("{id}\t{j}\n").into_bytes()).collect();
            let step = text.len() / streams + 1;
            let mut bytes: Vec<u8> = text.chunks(step).flat_map(xz).collect();
            if bytes.is_empty() {
                // Zero bytes are no xz stream (a corrupt object); empty text is one.
                bytes = xz(b"");
            }
            let got = lines(&bytes).unwrap();
            prop_assert_eq!(got.len(), rows.len());
            for (line, (id, j)) in got.iter().zip(&rows) {
                prop_assert_eq!(&line.doc_id, id.as_bytes());
                // The JSON part runs to the end of the line, tabs included.
                prop_assert_eq!(&line.json, j.as_bytes());
            }
        }
    }

    fn check(bytes: &[u8]) {
        if let Ok(r) = open_object(bytes) {
            for line in StoreLineReader::new(r).with_max_line(1 << 16).take(10_000) {
                if line.is_err() {
                    break;
                }
            }
        }
    }
}
