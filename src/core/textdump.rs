//! Legacy plain-text dumps: one record per line, `<45-byte row key>\t<json>\n`.
//!
//! This module owns the line framing only. The key's salt byte may itself be a tab
//! or a newline, so a line is not split at the first tab or newline: the 45 key
//! bytes come first, then the 46th byte must be a tab, then the value runs to the
//! next newline. A line that breaks that rule (or is empty) comes out as one
//! malformed record running to the first newline from its start; judging keys and
//! values is for the callers.

use std::io::{self, BufRead, Read};

/// Length of a row key: salt byte, `yyyyMMdd`, 36-character document id.
pub const KEY_LEN: usize = 45;
/// Default longest line accepted.
pub const DEFAULT_MAX_LINE: usize = 256 << 20;

/// Errors reading a dump (returned inside an `io::Error` of kind `InvalidData`).
#[derive(Debug, thiserror::Error)]
pub enum TextDumpError {
    /// A line runs past the limit without a newline.
    #[error("text dump line at offset {offset} is longer than {limit} bytes")]
    LineTooLong {
        /// Offset of the line's first byte.
        offset: u64,
        /// The limit in force.
        limit: usize,
    },
}

/// One line of a dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpRecord {
    /// Offset of the line's first byte.
    pub offset: u64,
    /// The 45 key bytes (empty when malformed).
    pub key: Vec<u8>,
    /// The value without its newline; for a malformed line, the whole line.
    pub value: Vec<u8>,
    /// The line does not have a tab after 45 key bytes.
    pub malformed: bool,
}

/// Reads [`DumpRecord`]s from a dump.
pub struct TextDumpReader<R> {
    r: R,
    offset: u64,
    /// Bytes read ahead of the current line (at most a key and a tab).
    ahead: Vec<u8>,
    max_line: usize,
}

impl<R: BufRead> TextDumpReader<R> {
    /// A reader at the dump's first byte.
    pub fn new(r: R) -> Self {
        TextDumpReader {
            r,
            offset: 0,
            ahead: Vec::with_capacity(KEY_LEN + 1),
            max_line: DEFAULT_MAX_LINE,
        }
    }

    /// Sets the longest line accepted (default [`DEFAULT_MAX_LINE`]).
    pub fn with_max_line(mut self, max_line: usize) -> Self {
        self.max_line = max_line;
        self
    }

    /// The next line, or `None` at the end of the dump.
    pub fn next_record(&mut self) -> io::Result<Option<DumpRecord>> {
        let offset = self.offset;
        while self.ahead.len() <= KEY_LEN {
            let buf = self.r.fill_buf()?;
            if buf.is_empty() {
                break;
            }
            let n = buf.len().min(KEY_LEN + 1 - self.ahead.len());
            self.ahead.extend_from_slice(&buf[..n]);
            self.r.consume(n);
        }
        if self.ahead.is_empty() {
            return Ok(None);
        }
        if self.ahead.len() == KEY_LEN + 1 && self.ahead[KEY_LEN] == b'\t' {
            let mut key = std::mem::take(&mut self.ahead);
            key.truncate(KEY_LEN);
            let mut value = Vec::new();
            let line_len = KEY_LEN + 1 + self.rest_of_line(offset, KEY_LEN + 1, &mut value)?;
            self.offset += line_len as u64;
            return Ok(Some(DumpRecord {
                offset,
                key,
                value,
                malformed: false,
            }));
        }
        let mut value = Vec::new();
        let line_len = match memchr::memchr(b'\n', &self.ahead) {
            Some(i) => {
                value.extend_from_slice(&self.ahead[..i]);
                self.ahead.drain(..=i);
                i + 1
            }
            None => {
                let had = self.ahead.len();
                value.append(&mut self.ahead);
                had + self.rest_of_line(offset, had, &mut value)?
            }
        };
        self.offset += line_len as u64;
        Ok(Some(DumpRecord {
            offset,
            key: Vec::new(),
            value,
            malformed: true,
        }))
    }

    /// Appends the rest of the line to `out` (without the newline) and returns the
    /// bytes consumed (with the newline). `used` bytes of the line are already read.
    fn rest_of_line(&mut self, offset: u64, used: usize, out: &mut Vec<u8>) -> io::Result<usize> {
        let room = self.max_line.saturating_sub(used) as u64 + 1;
        let start = out.len();
        let n = (&mut self.r).take(room).read_until(b'\n', out)?;
        if out.last() == Some(&b'\n') && out.len() > start {
            out.pop();
        } else if n as u64 == room {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                TextDumpError::LineTooLong {
                    offset,
                    limit: self.max_line,
                },
            ));
        }
        Ok(n)
    }
}

impl<R: BufRead> Iterator for TextDumpReader<R> {
    type Item = io::Result<DumpRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(salt: u8, id: &str) -> Vec<u8> {
        let mut k = vec![salt];
        k.extend_from_slice(b"20130101");
        k.extend_from_slice(format!("{id:0>36}").as_bytes());
        assert_eq!(k.len(), KEY_LEN);
        k
    }

    fn read(bytes: &[u8]) -> Vec<DumpRecord> {
        TextDumpReader::new(bytes)
            .collect::<io::Result<Vec<_>>>()
            .unwrap()
    }

    fn good(offset: u64, key: Vec<u8>, value: &[u8]) -> DumpRecord {
        DumpRecord {
            offset,
            key,
            value: value.to_vec(),
            malformed: false,
        }
    }

    fn bad(offset: u64, line: &[u8]) -> DumpRecord {
        DumpRecord {
            offset,
            key: Vec::new(),
            value: line.to_vec(),
            malformed: true,
        }
    }

    #[test]
    fn line_rules() {
        let k = key(b'a', "1");
        let tab = key(b'\t', "2");
        let nl = key(b'\n', "3");
        let line = |k: &[u8], v: &[u8]| [k, b"\t", v, b"\n"].concat();
        let table: Vec<(&str, Vec<u8>, Vec<DumpRecord>)> = vec![
            ("empty dump", vec![], vec![]),
            (
                "one record",
                line(&k, b"{}"),
                vec![good(0, k.clone(), b"{}")],
            ),
            (
                "tab salt",
                line(&tab, b"{\"a\":1}"),
                vec![good(0, tab.clone(), b"{\"a\":1}")],
            ),
            (
                "newline salt",
                [line(&nl, b"{}"), line(&k, b"[]")].concat(),
                vec![good(0, nl.clone(), b"{}"), good(49, k.clone(), b"[]")],
            ),
            ("empty value", line(&k, b""), vec![good(0, k.clone(), b"")]),
            (
                "value with tabs",
                line(&k, b"a\tb"),
                vec![good(0, k.clone(), b"a\tb")],
            ),
            (
                "no final newline",
                [&k[..], b"\t{}"].concat(),
                vec![good(0, k.clone(), b"{}")],
            ),
            (
                "key then eof",
                [&k[..], b"\t"].concat(),
                vec![good(0, k.clone(), b"")],
            ),
            (
                "empty line",
                [b"\n".to_vec(), line(&k, b"{}")].concat(),
                vec![bad(0, b""), good(1, k.clone(), b"{}")],
            ),
            (
                "short line",
                b"short\tline\n".to_vec(),
                vec![bad(0, b"short\tline")],
            ),
            ("short at eof", b"abc".to_vec(), vec![bad(0, b"abc")]),
            (
                "no tab after key",
                [&k[..], b"x{}\n"].concat(),
                vec![bad(0, &[&k[..], b"x{}"].concat())],
            ),
            (
                // The malformed line ends at the salt newline; the rest is a new line.
                "newline salt without tab",
                [&nl[..], b"x{}\n"].concat(),
                vec![bad(0, b""), bad(1, &[&nl[1..], b"x{}"].concat())],
            ),
            (
                "long key",
                [&k[..], b"zz\t{}\n"].concat(),
                vec![bad(0, &[&k[..], b"zz\t{}"].concat())],
            ),
        ];
        for (name, bytes, want) in table {
            assert_eq!(read(&bytes), want, "{name}");
            // The same with a one-byte buffer: no rule may lean on fill_buf's size.
            let tiny = io::BufReader::with_capacity(1, &bytes[..]);
            let got: Vec<_> = TextDumpReader::new(tiny)
                .collect::<io::Result<_>>()
                .unwrap();
            assert_eq!(got, want, "{name}, one-byte buffer");
        }
    }

    #[test]
    fn long_lines_are_errors_with_offsets() {
        let k = key(b'a', "1");
        let bytes = [&k[..], b"\t{}\n", &k[..], b"\t0123456789\n"].concat();
        let mut r = TextDumpReader::new(&bytes[..]).with_max_line(KEY_LEN + 1 + 5);
        assert_eq!(r.next_record().unwrap().unwrap().value, b"{}");
        let err = r.next_record().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            err.to_string(),
            "text dump line at offset 49 is longer than 51 bytes"
        );
        // A line exactly at the limit is fine, newline not counted.
        let bytes = [&k[..], b"\t01234\n"].concat();
        let mut r = TextDumpReader::new(&bytes[..]).with_max_line(KEY_LEN + 1 + 5);
        assert_eq!(r.next_record().unwrap().unwrap().value, b"01234");
        // Malformed lines are bounded too.
        let xs = b"x".repeat(100);
        let mut r = TextDumpReader::new(&xs[..]).with_max_line(60);
        assert!(r.next_record().is_err());
    }

    proptest! {
        #[test]
        fn round_trip(records in prop::collection::vec((any::<[u8; KEY_LEN]>(), prop::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..300)), 0..30), last_newline in any::<bool>()) {
            let mut bytes = Vec::new();
            for (k, v) in &records {
                bytes.extend_from_slice(k);
                bytes.push(b'\t');
                bytes.extend_from_slice(v);
                bytes.push(b'\n');
            }
            if !last_newline && !records.is_empty() {
                bytes.pop();
            }
            let got = read(&bytes);
            prop_assert_eq!(got.len(), records.len());
            let mut offset = 0;
            for (r, (k, v)) in got.iter().zip(&records) {
                prop_assert_eq!(r, &good(offset, k.to_vec(), v));
                offset += (KEY_LEN + 2 + v.len()) as u64;
            }
        }

        /// Arbitrary bytes never panic, and the lines tile the input.
        #[test]
        fn arbitrary_bytes_are_tiled(
            bytes in prop_oneof![
                prop::collection::vec(prop::sample::select(vec![b'\t', b'\n', b'a', 0xff]), 0..400),
                prop::collection::vec(any::<u8>(), 0..400),
            ]
        ) {
            let mut at = 0u64;
            for r in read(&bytes) {
                prop_assert_eq!(r.offset, at);
                let len = if r.malformed { r.value.len() } else { KEY_LEN + 1 + r.value.len() };
                at += len as u64;
                if (at as usize) < bytes.len() {
                    prop_assert_eq!(bytes[at as usize], b'\n');
                    at += 1;
                }
            }
            prop_assert_eq!(at, bytes.len() as u64);
        }
    }
}
