//! Hadoop SequenceFiles: the container the legacy store's daily export was written in.
//!
//! This module owns the on-disk format (header versions 4–6, uncompressed, record- and
//! block-compressed bodies, the four codecs Hadoop used: zlib, gzip, bzip2 and its
//! framed snappy), reading a whole file or one byte-range split of it, skipping a
//! corrupt region to the next sync marker, and writing files for tests and the data
//! generator. Keys and values are `Text` or `BytesWritable`; the reader hands out their
//! payload bytes with the length prefix stripped and leaves their meaning (row keys,
//! JSON) to the callers. It reads from any `Read` (`Read + Seek` to split) and never
//! touches a path.
//!
//! Splitting follows Hadoop's rule, made exact: a sync marker's position is the offset
//! of its `-1` escape; the header counts as a marker at the header's end. A split
//! `[start, end)` yields the records that follow the markers whose position lies in it,
//! so any set of cut points partitions the records with no overlap and no gap.

use std::io::{self, Read, Seek, SeekFrom, Write};

use memchr::memmem;

/// The three bytes every SequenceFile starts with (a version byte follows).
pub const MAGIC: &[u8] = b"SEQ";
/// Size of the random sync marker written in the header and between records.
pub const SYNC_SIZE: usize = 16;
/// Hadoop's distance between sync markers in record files: `100 * (4 + 16)` bytes.
pub const DEFAULT_SYNC_INTERVAL: u64 = 2000;
/// Hadoop's default `io.seqfile.compress.blocksize`: raw key + value bytes per block.
pub const DEFAULT_BLOCK_SIZE: usize = 1_000_000;
/// Largest record, block buffer or decompressed buffer accepted before the data is
/// called corrupt; it bounds the memory a corrupt length field can make us allocate.
pub const DEFAULT_MAX_LEN: usize = 256 << 20;

const SYNC_ESCAPE: i32 = -1;
/// Escape plus sync bytes: the bytes a marker occupies in the body.
const MARKER_LEN: usize = 4 + SYNC_SIZE;
/// Bytes of raw snappy input per Hadoop block-compressor frame.
const SNAPPY_CHUNK: usize = 64 * 1024;

const TEXT_CLASS: &str = "org.apache.hadoop.io.Text";
const BYTES_CLASS: &str = "org.apache.hadoop.io.BytesWritable";

/// Errors while reading a SequenceFile. Every variant carries the byte offset of the
/// unit that failed (the header, a record, or a block's sync marker), which is where
/// an unreadable region starts.
#[derive(Debug, thiserror::Error)]
pub enum SeqError {
    /// The underlying reader failed.
    #[error("i/o error at offset {offset}: {source}")]
    Io {
        /// Offset of the unit being read.
        offset: u64,
        /// The reader's error.
        #[source]
        source: io::Error,
    },
    /// The file does not start with `SEQ`.
    #[error("not a sequencefile at offset {offset}: magic {found:02x?}")]
    NotSequenceFile {
        /// Always 0.
        offset: u64,
        /// The bytes found instead.
        found: Vec<u8>,
    },
    /// A header version this reader does not know (it reads 4, 5 and 6).
    #[error("unsupported sequencefile version {version} at offset {offset}")]
    UnsupportedVersion {
        /// Offset of the version byte.
        offset: u64,
        /// The version found.
        version: u8,
    },
    /// A key or value class other than `Text` or `BytesWritable`.
    #[error("unsupported writable class {class:?} at offset {offset}")]
    UnsupportedClass {
        /// Offset of the class name.
        offset: u64,
        /// The class named in the header.
        class: String,
    },
    /// A compression codec this reader does not know.
    #[error("unknown compression codec {codec:?} at offset {offset}")]
    UnknownCodec {
        /// Offset of the codec name.
        offset: u64,
        /// The codec class named in the header.
        codec: String,
    },
    /// The file ends inside a header, record or block.
    #[error("truncated {what} at offset {offset}")]
    Truncated {
        /// Offset of the unit that is cut short.
        offset: u64,
        /// What was being read.
        what: &'static str,
    },
    /// A sync escape followed by bytes that are not this file's sync marker.
    #[error("sync marker mismatch at offset {offset}")]
    BadSync {
        /// Offset of the escape.
        offset: u64,
    },
    /// A length, count or flag that cannot be right.
    #[error("corrupt {what} at offset {offset}: {value}")]
    Corrupt {
        /// Offset of the unit holding the field.
        offset: u64,
        /// Which field.
        what: &'static str,
        /// The value found.
        value: i64,
    },
    /// A compressed buffer that does not decompress (or inflates past the limit).
    #[error("{codec} decompression failed at offset {offset}: {message}")]
    Decompress {
        /// Offset of the record or block.
        offset: u64,
        /// The codec's short name.
        codec: &'static str,
        /// What the decompressor said.
        message: String,
    },
}

impl SeqError {
    /// Where the failing unit starts: the first byte of the unreadable region.
    pub fn offset(&self) -> u64 {
        match self {
            SeqError::Io { offset, .. }
            | SeqError::NotSequenceFile { offset, .. }
            | SeqError::UnsupportedVersion { offset, .. }
            | SeqError::UnsupportedClass { offset, .. }
            | SeqError::UnknownCodec { offset, .. }
            | SeqError::Truncated { offset, .. }
            | SeqError::BadSync { offset }
            | SeqError::Corrupt { offset, .. }
            | SeqError::Decompress { offset, .. } => *offset,
        }
    }
}

/// A compression codec, named in the header by its Java class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// `DefaultCodec`: a zlib stream.
    Default,
    /// `GzipCodec`: a gzip member.
    Gzip,
    /// `BZip2Codec`: a bzip2 stream.
    Bzip2,
    /// `SnappyCodec`: raw snappy in Hadoop's block-compressor framing.
    Snappy,
}

impl Codec {
    /// Every codec, for tests and generators.
    pub const ALL: [Codec; 4] = [Codec::Default, Codec::Gzip, Codec::Bzip2, Codec::Snappy];

    /// The Java class name written in the header.
    pub fn class_name(self) -> &'static str {
        match self {
            Codec::Default => "org.apache.hadoop.io.compress.DefaultCodec",
            Codec::Gzip => "org.apache.hadoop.io.compress.GzipCodec",
            Codec::Bzip2 => "org.apache.hadoop.io.compress.BZip2Codec",
            Codec::Snappy => "org.apache.hadoop.io.compress.SnappyCodec",
        }
    }

    /// The codec a header's class name means, if known. `DeflateCodec` is Hadoop's
    /// alias of `DefaultCodec` (same zlib bytes).
    pub fn from_class_name(name: &str) -> Option<Codec> {
        match name {
            "org.apache.hadoop.io.compress.DefaultCodec"
            | "org.apache.hadoop.io.compress.DeflateCodec" => Some(Codec::Default),
            "org.apache.hadoop.io.compress.GzipCodec" => Some(Codec::Gzip),
            "org.apache.hadoop.io.compress.BZip2Codec" => Some(Codec::Bzip2),
            "org.apache.hadoop.io.compress.SnappyCodec" => Some(Codec::Snappy),
            _ => None,
        }
    }

    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Default => "zlib",
            Codec::Gzip => "gzip",
            Codec::Bzip2 => "bzip2",
            Codec::Snappy => "snappy",
        }
    }
}

/// How a file's body is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Plain records.
    None,
    /// Each value compressed on its own; keys plain.
    Record(Codec),
    /// Runs of records compressed together as four buffers (key lengths, keys, value
    /// lengths, values).
    Block(Codec),
}

impl Compression {
    /// The codec, if any.
    pub fn codec(self) -> Option<Codec> {
        match self {
            Compression::None => None,
            Compression::Record(c) | Compression::Block(c) => Some(c),
        }
    }
}

/// How a key or value is serialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Writable {
    /// `org.apache.hadoop.io.Text`: Hadoop vint length, then the bytes.
    Text,
    /// `org.apache.hadoop.io.BytesWritable`: big-endian i32 length, then the bytes.
    Bytes,
}

impl Writable {
    /// The Java class name written in the header.
    pub fn class_name(self) -> &'static str {
        match self {
            Writable::Text => TEXT_CLASS,
            Writable::Bytes => BYTES_CLASS,
        }
    }

    /// The serialisation a header's class name means, if supported.
    pub fn from_class_name(name: &str) -> Option<Writable> {
        match name {
            TEXT_CLASS => Some(Writable::Text),
            BYTES_CLASS => Some(Writable::Bytes),
            _ => None,
        }
    }

    fn serialize(self, payload: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        let n = i32::try_from(payload.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "payload over 2 GiB"))?;
        match self {
            Writable::Text => write_vint(out, i64::from(n)),
            Writable::Bytes => out.extend_from_slice(&n.to_be_bytes()),
        }
        out.extend_from_slice(payload);
        Ok(())
    }

    /// Splits a serialised value into its payload; when the length prefix does not
    /// match the serialised size the error is the declared length (-1: unreadable).
    fn payload(self, raw: &[u8]) -> Result<&[u8], i64> {
        let (n, size) = match self {
            Writable::Text => read_vint(raw).ok_or(-1)?,
            Writable::Bytes => match raw.get(..4) {
                Some(b) => (i64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]])), 4),
                None => return Err(-1),
            },
        };
        if n < 0 || (size as u64).checked_add(n as u64) != Some(raw.len() as u64) {
            return Err(n);
        }
        Ok(&raw[size..])
    }
}

/// A parsed file header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqHeader {
    /// Format version (4, 5 or 6).
    pub version: u8,
    /// Key serialisation.
    pub key_class: Writable,
    /// Value serialisation.
    pub value_class: Writable,
    /// Body compression.
    pub compression: Compression,
    /// Metadata pairs (version 6), in file order.
    pub metadata: Vec<(Vec<u8>, Vec<u8>)>,
    /// The file's sync marker.
    pub sync: [u8; SYNC_SIZE],
    /// Offset of the first byte after the header.
    pub len: u64,
}

/// One record: payload bytes of key and value, and where it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqRecord {
    /// Key payload (length prefix stripped).
    pub key: Vec<u8>,
    /// Value payload (length prefix stripped, decompressed).
    pub value: Vec<u8>,
    /// File offset of the record's length field, or of its block's sync marker.
    pub offset: u64,
}

// ---------------------------------------------------------------------------------
// Hadoop variable-length integers (WritableUtils.writeVLong / readVLong).

/// Appends `v` as a Hadoop vint: one byte for -112..=127, else a length byte (which
/// also carries the sign) and 1–8 big-endian magnitude bytes.
pub(crate) fn write_vint(out: &mut Vec<u8>, v: i64) {
    if (-112..=127).contains(&v) {
        out.push(v as u8);
        return;
    }
    let (mag, base) = if v < 0 { (!v, -120i64) } else { (v, -112i64) };
    let nbytes = 8 - (mag.leading_zeros() as i64) / 8;
    out.push((base - nbytes) as u8);
    for i in (0..nbytes).rev() {
        out.push((mag >> (i * 8)) as u8);
    }
}

/// Reads a Hadoop vint at the start of `b`: `(value, encoded size)`, or `None` when
/// `b` is too short.
pub(crate) fn read_vint(b: &[u8]) -> Option<(i64, usize)> {
    let first = *b.first()? as i8;
    let size = vint_size(first);
    if size == 1 {
        return Some((i64::from(first), 1));
    }
    let mut v: i64 = 0;
    for &byte in b.get(1..size)? {
        v = (v << 8) | i64::from(byte);
    }
    let negative = first < -120 || (-112..0).contains(&first);
    Some((if negative { !v } else { v }, size))
}

fn vint_size(first: i8) -> usize {
    if first >= -112 {
        1
    } else if first < -120 {
        (-119 - i32::from(first)) as usize
    } else {
        (-111 - i32::from(first)) as usize
    }
}

// ---------------------------------------------------------------------------------
// A read buffer that lets the parsers look ahead a whole unit before consuming it, so
// a unit that fails leaves every byte after its start available for re-scanning.

pub(crate) struct PeekReader<R> {
    inner: R,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    offset: u64,
    eof: bool,
}

/// The buffer's usual size. Large enough that reads are few (a 64 KiB buffer made
/// one read and one move of the unconsumed tail per 45 KB record: 26,000 reads and
/// 130 MB of memmove on the benchmark's 196 MB) and small beside the unit's budget.
const MIN_BUF: usize = 1 << 20;

impl<R: Read> PeekReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        PeekReader {
            inner,
            buf: Vec::new(),
            pos: 0,
            end: 0,
            offset: 0,
            eof: false,
        }
    }

    /// Stream offset of the next unconsumed byte.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// The buffered, unconsumed bytes.
    pub(crate) fn peek(&self) -> &[u8] {
        &self.buf[self.pos..self.end]
    }

    /// Buffers at least `n` bytes unless the stream ends first; returns how many are
    /// buffered. The buffer grows with the data actually read, never ahead of it, so
    /// a huge corrupt length costs no more memory than the file holds.
    pub(crate) fn fill(&mut self, n: usize) -> io::Result<usize> {
        while self.end - self.pos < n && !self.eof {
            // Move the unconsumed bytes to the front when the buffer is full or the
            // wanted bytes would not fit after them, so reads stay large.
            if self.end == self.buf.len() || self.buf.len() - self.pos < n {
                if self.pos > 0 {
                    self.buf.copy_within(self.pos..self.end, 0);
                    self.end -= self.pos;
                    self.pos = 0;
                }
                if self.end == self.buf.len() {
                    let need = n.max(MIN_BUF);
                    let grown = (self.buf.len() * 2).max(MIN_BUF).min(need);
                    self.buf.resize(grown, 0);
                }
            }
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(k) => self.end += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.end - self.pos)
    }

    /// Drops `n` buffered bytes (at most what is buffered).
    pub(crate) fn consume(&mut self, n: usize) {
        let n = n.min(self.end - self.pos);
        self.pos += n;
        self.offset += n as u64;
    }

    /// Consumes bytes up to the next occurrence of `pat` (left unconsumed) and returns
    /// its offset, or consumes everything and returns `None`.
    pub(crate) fn skip_to(&mut self, finder: &memmem::Finder<'_>) -> io::Result<Option<u64>> {
        let keep = finder.needle().len().saturating_sub(1);
        loop {
            let avail = self.end - self.pos;
            if let Some(i) = finder.find(self.peek()) {
                self.consume(i);
                return Ok(Some(self.offset));
            }
            if self.eof {
                self.consume(avail);
                return Ok(None);
            }
            self.consume(avail.saturating_sub(keep));
            let have = self.end - self.pos;
            self.fill(have + 1)?;
        }
    }

    /// Consumes bytes up to the next `byte` (left unconsumed); returns how many were
    /// skipped and whether the byte was found.
    pub(crate) fn skip_to_byte(&mut self, byte: u8) -> io::Result<(u64, bool)> {
        let mut skipped = 0u64;
        loop {
            if let Some(i) = memchr::memchr(byte, self.peek()) {
                self.consume(i);
                return Ok((skipped + i as u64, true));
            }
            let avail = self.end - self.pos;
            self.consume(avail);
            skipped += avail as u64;
            if self.fill(1)? == 0 {
                return Ok((skipped, false));
            }
        }
    }
}

impl<R: Read + Seek> PeekReader<R> {
    fn seek_to(&mut self, offset: u64) -> io::Result<()> {
        self.inner.seek(SeekFrom::Start(offset))?;
        self.pos = 0;
        self.end = 0;
        self.offset = offset;
        self.eof = false;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// Codecs.

/// Decompressor state kept across records (the hot path reuses it).
struct Inflaters {
    zlib: flate2::Decompress,
    snappy: snap::raw::Decoder,
}

impl Inflaters {
    fn new() -> Self {
        Inflaters {
            zlib: flate2::Decompress::new(true),
            snappy: snap::raw::Decoder::new(),
        }
    }

    /// Replaces `out` with the decompression of `input`, refusing to produce more than
    /// `limit` bytes.
    fn decompress(
        &mut self,
        codec: Codec,
        input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), String> {
        out.clear();
        match codec {
            Codec::Default => inflate_zlib(&mut self.zlib, input, out, limit),
            Codec::Gzip => read_capped(flate2::bufread::MultiGzDecoder::new(input), out, limit),
            Codec::Bzip2 => read_capped(bzip2::bufread::MultiBzDecoder::new(input), out, limit),
            Codec::Snappy => unframe_snappy(&mut self.snappy, input, out, limit),
        }
    }
}

fn inflate_zlib(
    d: &mut flate2::Decompress,
    mut input: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<(), String> {
    d.reset(true);
    loop {
        if out.capacity() - out.len() < 8 * 1024 {
            if out.len() > limit {
                return Err(format!("inflates past {limit} bytes"));
            }
            // Grow geometrically, but never more than one byte past the limit.
            out.reserve(out.len().max(32 * 1024).min(limit + 1 - out.len()));
        }
        let (in0, out0) = (d.total_in(), d.total_out());
        let status = d
            .decompress_vec(input, out, flate2::FlushDecompress::None)
            .map_err(|e| e.to_string())?;
        let used = (d.total_in() - in0) as usize;
        let made = d.total_out() - out0;
        input = &input[used..];
        match status {
            flate2::Status::StreamEnd => {
                return if out.len() > limit {
                    Err(format!("inflates past {limit} bytes"))
                } else {
                    Ok(())
                };
            }
            _ if used == 0 && made == 0 && out.capacity() > out.len() => {
                return Err("unexpected end of compressed data".into());
            }
            _ => {}
        }
    }
}

fn read_capped(r: impl Read, out: &mut Vec<u8>, limit: usize) -> Result<(), String> {
    r.take(limit as u64 + 1)
        .read_to_end(out)
        .map_err(|e| e.to_string())?;
    if out.len() > limit {
        return Err(format!("inflates past {limit} bytes"));
    }
    Ok(())
}

/// Hadoop's BlockDecompressorStream framing: frames of a BE u32 raw length followed
/// by compressed chunks (BE u32 length + raw snappy) until that many bytes are out.
fn unframe_snappy(
    d: &mut snap::raw::Decoder,
    input: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<(), String> {
    let be32 = |at: usize| -> Result<usize, String> {
        input
            .get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| format!("frame header cut short at {at}"))
    };
    let mut at = 0;
    while at < input.len() {
        let raw_len = be32(at)?;
        at += 4;
        if raw_len > limit.saturating_sub(out.len()) {
            return Err(format!("frame of {raw_len} bytes exceeds the limit"));
        }
        let target = out.len() + raw_len;
        while out.len() < target {
            let clen = be32(at)?;
            at += 4;
            let chunk = input
                .get(at..at.saturating_add(clen))
                .ok_or_else(|| format!("chunk of {clen} bytes cut short"))?;
            at += clen;
            let n = snap::raw::decompress_len(chunk).map_err(|e| e.to_string())?;
            if n > target - out.len() {
                return Err(format!("chunk inflates to {n} bytes, past its frame"));
            }
            let start = out.len();
            out.resize(start + n, 0);
            let got = d
                .decompress(chunk, &mut out[start..])
                .map_err(|e| e.to_string())?;
            out.truncate(start + got);
            if got == 0 {
                return Err("empty chunk inside a frame".into());
            }
        }
    }
    Ok(())
}

/// Compresses `input` as one complete stream of `codec`, appended to `out`.
fn compress(codec: Codec, input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    match codec {
        Codec::Default => {
            let mut e = flate2::write::ZlibEncoder::new(out, flate2::Compression::default());
            e.write_all(input)?;
            e.finish()?;
        }
        Codec::Gzip => {
            let mut e = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            e.write_all(input)?;
            e.finish()?;
        }
        Codec::Bzip2 => {
            let mut e = bzip2::write::BzEncoder::new(out, bzip2::Compression::fast());
            e.write_all(input)?;
            e.finish()?;
        }
        Codec::Snappy => {
            let mut enc = snap::raw::Encoder::new();
            if input.is_empty() {
                out.extend_from_slice(&0u32.to_be_bytes());
            }
            for chunk in input.chunks(SNAPPY_CHUNK) {
                out.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
                let at = out.len();
                out.resize(at + 4 + snap::raw::max_compress_len(chunk.len()), 0);
                let n = enc
                    .compress(chunk, &mut out[at + 4..])
                    .map_err(io::Error::other)?;
                out[at..at + 4].copy_from_slice(&(n as u32).to_be_bytes());
                out.truncate(at + 4 + n);
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Reader.

/// Records of the block being handed out: payload ranges into the four buffers.
#[derive(Default)]
struct Block {
    keys: Vec<u8>,
    values: Vec<u8>,
    lens: Vec<u8>,
    ranges: Vec<(usize, usize, usize, usize)>,
    next: usize,
    offset: u64,
}

/// Reads `(key, value)` records from a SequenceFile, whole or one split of it.
pub struct SeqReader<R> {
    input: PeekReader<R>,
    header: SeqHeader,
    marker: [u8; MARKER_LEN],
    end: u64,
    done: bool,
    failed_at: Option<u64>,
    max_len: usize,
    inflaters: Inflaters,
    scratch: Vec<u8>,
    block: Block,
}

impl<R: Read> SeqReader<R> {
    /// Reads the header from `r`, which must be at the file's first byte (offsets
    /// count from there).
    pub fn new(r: R) -> Result<Self, SeqError> {
        let mut input = PeekReader::new(r);
        let header = read_header(&mut input, DEFAULT_MAX_LEN)?;
        let mut marker = [0xff; MARKER_LEN];
        marker[4..].copy_from_slice(&header.sync);
        Ok(SeqReader {
            input,
            header,
            marker,
            end: u64::MAX,
            done: false,
            failed_at: None,
            max_len: DEFAULT_MAX_LEN,
            inflaters: Inflaters::new(),
            scratch: Vec::new(),
            block: Block::default(),
        })
    }

    /// Sets the largest record, block buffer or decompressed size accepted (default
    /// [`DEFAULT_MAX_LEN`]); anything larger is reported as corrupt.
    pub fn with_max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len;
        self
    }

    /// The file's header.
    pub fn header(&self) -> &SeqHeader {
        &self.header
    }

    /// Offset of the next unread byte.
    pub fn position(&self) -> u64 {
        self.input.offset()
    }

    /// The next record, or `None` at the end of the file or split. After an error,
    /// call [`SeqReader::recover`] to go on.
    pub fn next_record(&mut self) -> Result<Option<SeqRecord>, SeqError> {
        let (mut key, mut value) = (Vec::new(), Vec::new());
        Ok(self
            .next_into(&mut key, &mut value)?
            .map(|offset| SeqRecord { key, value, offset }))
    }

    /// Like [`SeqReader::next_record`] but fills caller-owned buffers (their old
    /// contents are replaced) and returns the record's offset.
    pub fn next_into(
        &mut self,
        key: &mut Vec<u8>,
        value: &mut Vec<u8>,
    ) -> Result<Option<u64>, SeqError> {
        if self.done {
            return Ok(None);
        }
        let result = match self.header.compression {
            Compression::Block(codec) => self.next_in_block(codec, key, value),
            Compression::None | Compression::Record(_) => self.next_plain(key, value),
        };
        if let Err(e) = &result {
            self.failed_at = Some(e.offset());
        }
        result
    }

    /// Skips from the last failure to the next sync marker. Returns that marker's
    /// offset (records resume after it, so `[error offset, marker)` is the unreadable
    /// region), or `None` when the file ends first. Without a prior failure it skips
    /// from the current position.
    pub fn recover(&mut self) -> Result<Option<u64>, SeqError> {
        self.block.ranges.clear();
        self.block.next = 0;
        if let Some(at) = self.failed_at.take() {
            // The failed unit's bytes are still buffered: search past its first byte.
            if self
                .input
                .fill(1)
                .map_err(|source| SeqError::Io { offset: at, source })?
                > 0
            {
                self.input.consume(1);
            }
        }
        let offset = self.input.offset();
        let finder = memmem::Finder::new(&self.marker);
        match self.input.skip_to(&finder) {
            Ok(Some(m)) => Ok(Some(m)),
            Ok(None) => {
                self.done = true;
                Ok(None)
            }
            Err(source) => Err(SeqError::Io { offset, source }),
        }
    }

    fn fill(&mut self, n: usize, offset: u64, what: &'static str) -> Result<(), SeqError> {
        let have = self
            .input
            .fill(n)
            .map_err(|source| SeqError::Io { offset, source })?;
        if have < n {
            return Err(SeqError::Truncated { offset, what });
        }
        Ok(())
    }

    /// Checks the sync marker buffered at the read position; returns false (and ends
    /// the split) when the marker lies at or past the split's end.
    fn take_marker(&mut self, start: u64) -> Result<bool, SeqError> {
        self.fill(MARKER_LEN, start, "sync marker")?;
        if self.input.peek()[4..MARKER_LEN] != self.header.sync {
            return Err(SeqError::BadSync { offset: start });
        }
        if start >= self.end {
            self.done = true;
            return Ok(false);
        }
        self.input.consume(MARKER_LEN);
        Ok(true)
    }

    /// Peeks the big-endian i32 that starts the next unit, with its offset; `None`
    /// (and done) at a clean end of file, an error when fewer than 4 bytes remain.
    fn peek_i32(&mut self, what: &'static str) -> Result<Option<(u64, i32)>, SeqError> {
        let start = self.input.offset();
        let have = self.input.fill(4).map_err(|source| SeqError::Io {
            offset: start,
            source,
        })?;
        if have == 0 {
            self.done = true;
            return Ok(None);
        }
        if have < 4 {
            return Err(SeqError::Truncated {
                offset: start,
                what,
            });
        }
        Ok(Some((start, be_i32(self.input.peek()))))
    }

    fn next_plain(
        &mut self,
        key: &mut Vec<u8>,
        value: &mut Vec<u8>,
    ) -> Result<Option<u64>, SeqError> {
        loop {
            let Some((start, len)) = self.peek_i32("record length")? else {
                return Ok(None);
            };
            if len == SYNC_ESCAPE {
                if !self.take_marker(start)? {
                    return Ok(None);
                }
                continue;
            }
            let corrupt = |what, value: i64| SeqError::Corrupt {
                offset: start,
                what,
                value,
            };
            if len < 0 || len as usize > self.max_len {
                return Err(corrupt("record length", i64::from(len)));
            }
            self.fill(8, start, "key length")?;
            let key_len = be_i32(&self.input.peek()[4..]);
            if key_len < 0 || key_len > len {
                return Err(corrupt("key length", i64::from(key_len)));
            }
            let total = 8 + len as usize;
            self.fill(total, start, "record")?;
            let record = &self.input.peek()[8..total];
            let (raw_key, raw_value) = record.split_at(key_len as usize);
            let k = self
                .header
                .key_class
                .payload(raw_key)
                .map_err(|n| corrupt("key payload length", n))?;
            key.clear();
            key.extend_from_slice(k);
            let raw_value = match self.header.compression {
                Compression::Record(codec) => {
                    self.inflaters
                        .decompress(codec, raw_value, &mut self.scratch, self.max_len)
                        .map_err(|message| SeqError::Decompress {
                            offset: start,
                            codec: codec.name(),
                            message,
                        })?;
                    &self.scratch[..]
                }
                _ => raw_value,
            };
            let v = self
                .header
                .value_class
                .payload(raw_value)
                .map_err(|n| corrupt("value payload length", n))?;
            value.clear();
            value.extend_from_slice(v);
            self.input.consume(total);
            return Ok(Some(start));
        }
    }

    fn next_in_block(
        &mut self,
        codec: Codec,
        key: &mut Vec<u8>,
        value: &mut Vec<u8>,
    ) -> Result<Option<u64>, SeqError> {
        loop {
            let b = &mut self.block;
            if let Some(&(k0, k1, v0, v1)) = b.ranges.get(b.next) {
                b.next += 1;
                key.clear();
                key.extend_from_slice(&b.keys[k0..k1]);
                value.clear();
                value.extend_from_slice(&b.values[v0..v1]);
                return Ok(Some(b.offset));
            }
            let Some((start, escape)) = self.peek_i32("block sync marker")? else {
                return Ok(None);
            };
            if escape != SYNC_ESCAPE {
                return Err(SeqError::Corrupt {
                    offset: start,
                    what: "block sync escape",
                    value: i64::from(escape),
                });
            }
            self.fill(MARKER_LEN, start, "sync marker")?;
            if self.input.peek()[4..MARKER_LEN] != self.header.sync {
                return Err(SeqError::BadSync { offset: start });
            }
            if start >= self.end {
                self.done = true;
                return Ok(None);
            }
            let used = self.read_block(codec, start)?;
            self.input.consume(used);
        }
    }

    /// Decodes the block whose marker is buffered at the read position (nothing is
    /// consumed) and returns its size in bytes.
    fn read_block(&mut self, codec: Codec, start: u64) -> Result<usize, SeqError> {
        let mut at = MARKER_LEN;
        let count = self.vint_at(&mut at, start, "block record count")?;
        if count < 0 {
            return Err(SeqError::Corrupt {
                offset: start,
                what: "block record count",
                value: count,
            });
        }
        // Buffers in file order: key lengths, keys, value lengths, values.
        let mut bufs: [Vec<u8>; 4] = [
            std::mem::take(&mut self.block.lens),
            std::mem::take(&mut self.block.keys),
            std::mem::take(&mut self.scratch),
            std::mem::take(&mut self.block.values),
        ];
        let result = (|| {
            for buf in bufs.iter_mut() {
                let len = self.vint_at(&mut at, start, "block buffer length")?;
                if len < 0 || len as u64 > self.max_len as u64 {
                    return Err(SeqError::Corrupt {
                        offset: start,
                        what: "block buffer length",
                        value: len,
                    });
                }
                self.fill(at + len as usize, start, "block")?;
                let raw = &self.input.peek()[at..at + len as usize];
                self.inflaters
                    .decompress(codec, raw, buf, self.max_len)
                    .map_err(|message| SeqError::Decompress {
                        offset: start,
                        codec: codec.name(),
                        message,
                    })?;
                at += len as usize;
            }
            index_block(
                &bufs,
                count as u64,
                self.header.key_class,
                self.header.value_class,
                &mut self.block.ranges,
            )
            .map_err(|(what, value)| SeqError::Corrupt {
                offset: start,
                what,
                value,
            })
        })();
        let [lens, keys, value_lens, values] = bufs;
        self.block.lens = lens;
        self.block.keys = keys;
        self.scratch = value_lens;
        self.block.values = values;
        self.block.next = 0;
        self.block.offset = start;
        if result.is_err() {
            self.block.ranges.clear();
        }
        result.map(|()| at)
    }

    fn vint_at(&mut self, at: &mut usize, start: u64, what: &'static str) -> Result<i64, SeqError> {
        self.fill(*at + 1, start, what)?;
        let size = vint_size(self.input.peek()[*at] as i8);
        self.fill(*at + size, start, what)?;
        let (v, size) = read_vint(&self.input.peek()[*at..]).ok_or(SeqError::Truncated {
            offset: start,
            what,
        })?;
        *at += size;
        Ok(v)
    }
}

/// Walks a decoded block's four buffers and records each record's payload ranges;
/// the whole block is checked before any record is handed out.
fn index_block(
    bufs: &[Vec<u8>; 4],
    count: u64,
    key_class: Writable,
    value_class: Writable,
    ranges: &mut Vec<(usize, usize, usize, usize)>,
) -> Result<(), (&'static str, i64)> {
    let [key_lens, keys, value_lens, values] = bufs;
    ranges.clear();
    let (mut kl, mut k, mut vl, mut v) = (0usize, 0usize, 0usize, 0usize);
    for _ in 0..count {
        let (klen, n) = read_vint(&key_lens[kl..]).ok_or(("block key lengths", kl as i64))?;
        kl += n;
        let (vlen, n) = read_vint(&value_lens[vl..]).ok_or(("block value lengths", vl as i64))?;
        vl += n;
        let raw_key = usize::try_from(klen)
            .ok()
            .and_then(|l| keys.get(k..k.checked_add(l)?))
            .ok_or(("block key length", klen))?;
        let raw_value = usize::try_from(vlen)
            .ok()
            .and_then(|l| values.get(v..v.checked_add(l)?))
            .ok_or(("block value length", vlen))?;
        let kp = key_class
            .payload(raw_key)
            .map_err(|n| ("key payload length", n))?;
        let vp = value_class
            .payload(raw_value)
            .map_err(|n| ("value payload length", n))?;
        let (ks, vs) = (k + raw_key.len() - kp.len(), v + raw_value.len() - vp.len());
        ranges.push((ks, ks + kp.len(), vs, vs + vp.len()));
        k += raw_key.len();
        v += raw_value.len();
    }
    if kl != key_lens.len() || k != keys.len() || vl != value_lens.len() || v != values.len() {
        return Err((
            "block buffer tail",
            (keys.len() - k + values.len() - v) as i64,
        ));
    }
    Ok(())
}

impl<R: Read + Seek> SeqReader<R> {
    /// Opens the split `[start, end)` of a file: reads the header at offset 0, then
    /// yields the records that follow sync markers at offsets in `[start, end)` (the
    /// header counts as a marker at its end offset). Splits at any cut points
    /// together yield every record exactly once.
    pub fn open_split(mut r: R, start: u64, end: u64) -> Result<Self, SeqError> {
        r.seek(SeekFrom::Start(0))
            .map_err(|source| SeqError::Io { offset: 0, source })?;
        let mut reader = SeqReader::new(r)?;
        reader.end = end;
        let header_end = reader.header.len;
        if start <= header_end {
            reader.done = header_end >= end;
            return Ok(reader);
        }
        let io = |source| SeqError::Io {
            offset: start,
            source,
        };
        reader.input.seek_to(start).map_err(io)?;
        let finder = memmem::Finder::new(&reader.marker);
        match reader.input.skip_to(&finder).map_err(io)? {
            Some(m) => reader.done = m >= end,
            None => reader.done = true,
        }
        Ok(reader)
    }
}

fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Parses the header at the reader's position without trusting any length in it.
fn read_header<R: Read>(input: &mut PeekReader<R>, max_len: usize) -> Result<SeqHeader, SeqError> {
    struct Cursor<'a, R> {
        input: &'a mut PeekReader<R>,
        at: usize,
        max_len: usize,
    }
    impl<R: Read> Cursor<'_, R> {
        fn take(&mut self, n: usize, what: &'static str) -> Result<&[u8], SeqError> {
            let have = self
                .input
                .fill(self.at + n)
                .map_err(|source| SeqError::Io {
                    offset: self.at as u64,
                    source,
                })?;
            if have < self.at + n {
                return Err(SeqError::Truncated {
                    offset: self.at as u64,
                    what,
                });
            }
            self.at += n;
            Ok(&self.input.peek()[self.at - n..self.at])
        }
        fn vint(&mut self, what: &'static str) -> Result<i64, SeqError> {
            let first = self.take(1, what)?[0] as i8;
            let size = vint_size(first);
            self.at -= 1;
            let raw = self.take(size, what)?;
            Ok(read_vint(raw).map_or(0, |(v, _)| v))
        }
        fn string(&mut self, what: &'static str) -> Result<Vec<u8>, SeqError> {
            let offset = self.at as u64;
            let n = self.vint(what)?;
            if n < 0 || n as u64 > self.max_len as u64 {
                return Err(SeqError::Corrupt {
                    offset,
                    what,
                    value: n,
                });
            }
            Ok(self.take(n as usize, what)?.to_vec())
        }
        fn flag(&mut self, what: &'static str) -> Result<bool, SeqError> {
            let offset = self.at as u64;
            match self.take(1, what)?[0] {
                0 => Ok(false),
                1 => Ok(true),
                b => Err(SeqError::Corrupt {
                    offset,
                    what,
                    value: i64::from(b),
                }),
            }
        }
    }
    let mut c = Cursor {
        input,
        at: 0,
        max_len,
    };
    let have = c
        .input
        .fill(MAGIC.len())
        .map_err(|source| SeqError::Io { offset: 0, source })?;
    let found = &c.input.peek()[..have.min(MAGIC.len())];
    if found != MAGIC {
        return Err(SeqError::NotSequenceFile {
            offset: 0,
            found: found.to_vec(),
        });
    }
    c.at = MAGIC.len();
    let version = c.take(1, "header version")?[0];
    if !(4..=6).contains(&version) {
        return Err(SeqError::UnsupportedVersion { offset: 3, version });
    }
    let class = |c: &mut Cursor<'_, R>, what| -> Result<Writable, SeqError> {
        let offset = c.at as u64;
        let name = c.string(what)?;
        let name = String::from_utf8_lossy(&name);
        Writable::from_class_name(&name).ok_or(SeqError::UnsupportedClass {
            offset,
            class: name.into_owned(),
        })
    };
    let key_class = class(&mut c, "key class name")?;
    let value_class = class(&mut c, "value class name")?;
    let compressed = c.flag("compression flag")?;
    let block = c.flag("block compression flag")?;
    let codec = if !compressed {
        None
    } else if version >= 5 {
        let offset = c.at as u64;
        let name = c.string("codec class name")?;
        let name = String::from_utf8_lossy(&name);
        Some(Codec::from_class_name(&name).ok_or(SeqError::UnknownCodec {
            offset,
            codec: name.into_owned(),
        })?)
    } else {
        Some(Codec::Default)
    };
    let compression = match (codec, block) {
        (None, false) => Compression::None,
        (None, true) => {
            return Err(SeqError::Corrupt {
                offset: c.at as u64 - 1,
                what: "block compression without compression",
                value: 1,
            })
        }
        (Some(codec), false) => Compression::Record(codec),
        (Some(codec), true) => Compression::Block(codec),
    };
    let mut metadata = Vec::new();
    if version >= 6 {
        let offset = c.at as u64;
        let count = be_i32(c.take(4, "metadata count")?);
        if count < 0 {
            return Err(SeqError::Corrupt {
                offset,
                what: "metadata count",
                value: i64::from(count),
            });
        }
        // Each entry takes at least two bytes, so a corrupt count hits the end of the
        // file (truncated) long before it costs memory.
        for _ in 0..count {
            let k = c.string("metadata key")?;
            let v = c.string("metadata value")?;
            metadata.push((k, v));
        }
    }
    let mut sync = [0u8; SYNC_SIZE];
    sync.copy_from_slice(c.take(SYNC_SIZE, "header sync marker")?);
    let len = c.at;
    input.consume(len);
    Ok(SeqHeader {
        version,
        key_class,
        value_class,
        compression,
        metadata,
        sync,
        len: len as u64,
    })
}

// ---------------------------------------------------------------------------------
// Writer.

/// How a [`SeqWriter`] lays out its file.
#[derive(Debug, Clone)]
pub struct SeqWriterOptions {
    /// Body compression.
    pub compression: Compression,
    /// Key serialisation.
    pub key_class: Writable,
    /// Value serialisation.
    pub value_class: Writable,
    /// Metadata pairs written in the (version 6) header.
    pub metadata: Vec<(Vec<u8>, Vec<u8>)>,
    /// The sync marker; a caller-chosen value keeps generated files reproducible.
    pub sync: [u8; SYNC_SIZE],
    /// Raw key + value bytes buffered before a block is written.
    pub block_size: usize,
    /// Bytes between sync markers in record files.
    pub sync_interval: u64,
}

impl SeqWriterOptions {
    /// (Text, Text) with Hadoop's defaults for block size and sync interval.
    pub fn new(compression: Compression, sync: [u8; SYNC_SIZE]) -> Self {
        SeqWriterOptions {
            compression,
            key_class: Writable::Text,
            value_class: Writable::Text,
            metadata: Vec::new(),
            sync,
            block_size: DEFAULT_BLOCK_SIZE,
            sync_interval: DEFAULT_SYNC_INTERVAL,
        }
    }
}

/// Writes a version-6 SequenceFile the way Hadoop's `SequenceFile.Writer` does.
pub struct SeqWriter<W: Write> {
    out: W,
    opts: SeqWriterOptions,
    pos: u64,
    last_sync: u64,
    key_buf: Vec<u8>,
    value_buf: Vec<u8>,
    // Pending block: key lengths, keys, value lengths, values.
    pending: [Vec<u8>; 4],
    pending_count: u64,
    compressed: Vec<u8>,
}

impl<W: Write> SeqWriter<W> {
    /// Writes the header.
    pub fn new(out: W, opts: SeqWriterOptions) -> io::Result<Self> {
        let mut w = SeqWriter {
            out,
            opts,
            pos: 0,
            last_sync: 0,
            key_buf: Vec::new(),
            value_buf: Vec::new(),
            pending: Default::default(),
            pending_count: 0,
            compressed: Vec::new(),
        };
        let mut h = Vec::new();
        h.extend_from_slice(MAGIC);
        h.push(6);
        let string = |h: &mut Vec<u8>, s: &[u8]| Writable::Text.serialize(s, h);
        string(&mut h, w.opts.key_class.class_name().as_bytes())?;
        string(&mut h, w.opts.value_class.class_name().as_bytes())?;
        let (compressed, block) = match w.opts.compression {
            Compression::None => (false, false),
            Compression::Record(_) => (true, false),
            Compression::Block(_) => (true, true),
        };
        h.push(u8::from(compressed));
        h.push(u8::from(block));
        if let Some(codec) = w.opts.compression.codec() {
            string(&mut h, codec.class_name().as_bytes())?;
        }
        let count = i32::try_from(w.opts.metadata.len()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "too many metadata entries")
        })?;
        h.extend_from_slice(&count.to_be_bytes());
        for (k, v) in &w.opts.metadata {
            string(&mut h, k)?;
            string(&mut h, v)?;
        }
        h.extend_from_slice(&w.opts.sync);
        w.write(&h)?;
        Ok(w)
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    fn write(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.pos += b.len() as u64;
        Ok(())
    }

    fn write_marker(&mut self) -> io::Result<()> {
        let mut m = [0xffu8; MARKER_LEN];
        m[4..].copy_from_slice(&self.opts.sync);
        self.write(&m)?;
        self.last_sync = self.pos;
        Ok(())
    }

    /// Appends one record (payload bytes; the writer adds the length prefixes).
    pub fn append(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        let too_big = || io::Error::new(io::ErrorKind::InvalidInput, "record over 2 GiB");
        match self.opts.compression {
            Compression::Block(_) => {
                let [key_lens, keys, value_lens, values] = &mut self.pending;
                let k0 = keys.len();
                self.opts.key_class.serialize(key, keys)?;
                write_vint(key_lens, (keys.len() - k0) as i64);
                let v0 = values.len();
                self.opts.value_class.serialize(value, values)?;
                write_vint(value_lens, (values.len() - v0) as i64);
                self.pending_count += 1;
                if keys.len() + values.len() >= self.opts.block_size {
                    self.flush_block()?;
                }
            }
            Compression::None | Compression::Record(_) => {
                if self.pos >= self.last_sync + self.opts.sync_interval {
                    self.write_marker()?;
                }
                let mut key_buf = std::mem::take(&mut self.key_buf);
                let mut value_buf = std::mem::take(&mut self.value_buf);
                key_buf.clear();
                value_buf.clear();
                self.opts.key_class.serialize(key, &mut key_buf)?;
                self.opts.value_class.serialize(value, &mut value_buf)?;
                if let Compression::Record(codec) = self.opts.compression {
                    self.compressed.clear();
                    compress(codec, &value_buf, &mut self.compressed)?;
                    std::mem::swap(&mut value_buf, &mut self.compressed);
                }
                let len = i32::try_from(key_buf.len() + value_buf.len()).map_err(|_| too_big())?;
                let mut head = [0u8; 8];
                head[..4].copy_from_slice(&len.to_be_bytes());
                head[4..].copy_from_slice(&(key_buf.len() as i32).to_be_bytes());
                let written = self
                    .write(&head)
                    .and_then(|()| self.write(&key_buf))
                    .and_then(|()| self.write(&value_buf));
                self.key_buf = key_buf;
                self.value_buf = value_buf;
                written?;
            }
        }
        Ok(())
    }

    fn flush_block(&mut self) -> io::Result<()> {
        let Compression::Block(codec) = self.opts.compression else {
            return Ok(());
        };
        if self.pending_count == 0 {
            return Ok(());
        }
        self.write_marker()?;
        let mut head = Vec::new();
        write_vint(&mut head, self.pending_count as i64);
        self.write(&head)?;
        for i in 0..4 {
            let mut c = std::mem::take(&mut self.compressed);
            c.clear();
            compress(codec, &self.pending[i], &mut c)?;
            head.clear();
            write_vint(&mut head, c.len() as i64);
            let written = self.write(&head).and_then(|()| self.write(&c));
            self.compressed = c;
            written?;
            self.pending[i].clear();
        }
        self.pending_count = 0;
        Ok(())
    }

    /// Writes any pending block, flushes, and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush_block()?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Cursor;

    const SYNC: [u8; SYNC_SIZE] = *b"0123456789abcdef";

    fn all_compressions() -> Vec<Compression> {
        let mut all = vec![Compression::None];
        for c in Codec::ALL {
            all.push(Compression::Record(c));
            all.push(Compression::Block(c));
        }
        all
    }

    type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

    fn write_file(records: &[(Vec<u8>, Vec<u8>)], opts: SeqWriterOptions) -> Vec<u8> {
        let mut w = SeqWriter::new(Vec::new(), opts).unwrap();
        for (k, v) in records {
            w.append(k, v).unwrap();
        }
        w.finish().unwrap()
    }

    fn opts(compression: Compression) -> SeqWriterOptions {
        let mut o = SeqWriterOptions::new(compression, SYNC);
        o.block_size = 3000;
        o
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<SeqRecord>, SeqError> {
        let mut r = SeqReader::new(bytes)?;
        let mut out = Vec::new();
        while let Some(rec) = r.next_record()? {
            out.push(rec);
        }
        Ok(out)
    }

    fn read_split(bytes: &[u8], start: u64, end: u64) -> Vec<SeqRecord> {
        let mut r = SeqReader::open_split(Cursor::new(bytes), start, end).unwrap();
        let mut out = Vec::new();
        while let Some(rec) = r.next_record().unwrap() {
            out.push(rec);
        }
        out
    }

    fn pairs(records: &[SeqRecord]) -> Pairs {
        records
            .iter()
            .map(|r| (r.key.clone(), r.value.clone()))
            .collect()
    }

    /// Records shaped like the export's: 45-byte keys, JSON-ish values.
    fn sample(n: usize, value_len: usize) -> Pairs {
        (0..n)
            .map(|i| {
                let key = format!("{:01}20130101{:036}", i % 10, i).into_bytes();
                let value = format!(
                    "{{\"i\":{i},\"pad\":\"{}\"}}",
                    "x".repeat(value_len + i % 7)
                );
                (key, value.into_bytes())
            })
            .collect()
    }

    #[test]
    fn vint_matches_hadoop_encoding() {
        let table: &[(i64, &[u8])] = &[
            (0, &[0x00]),
            (45, &[0x2d]),
            (127, &[0x7f]),
            (-1, &[0xff]),
            (-112, &[0x90]),
            (128, &[0x8f, 0x80]),
            (255, &[0x8f, 0xff]),
            (256, &[0x8e, 0x01, 0x00]),
            (-113, &[0x87, 0x70]),
            (45_000, &[0x8e, 0xaf, 0xc8]),
            (i64::from(i32::MAX), &[0x8c, 0x7f, 0xff, 0xff, 0xff]),
            (
                i64::MAX,
                &[0x88, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            ),
            (
                i64::MIN,
                &[0x80, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            ),
        ];
        for &(v, enc) in table {
            let mut out = Vec::new();
            write_vint(&mut out, v);
            assert_eq!(out, enc, "encoding {v}");
            assert_eq!(read_vint(enc), Some((v, enc.len())), "decoding {v}");
            assert_eq!(read_vint(&enc[..enc.len() - 1]), None, "short {v}");
        }
    }

    #[test]
    fn header_round_trips_with_metadata() {
        for compression in all_compressions() {
            let mut o = opts(compression);
            o.metadata = vec![
                (b"k1".to_vec(), b"v1".to_vec()),
                (Vec::new(), vec![0xff; 300]),
            ];
            let bytes = write_file(&[], o.clone());
            let r = SeqReader::new(&bytes[..]).unwrap();
            let h = r.header();
            assert_eq!(h.version, 6);
            assert_eq!(h.compression, compression);
            assert_eq!(h.metadata, o.metadata);
            assert_eq!(h.sync, SYNC);
            assert_eq!(h.len, bytes.len() as u64);
        }
    }

    /// Builds a header by hand, for versions the writer does not produce.
    fn handmade_header(version: u8, codec: Option<&str>, block: bool) -> Vec<u8> {
        let mut h = b"SEQ".to_vec();
        h.push(version);
        for class in [TEXT_CLASS, TEXT_CLASS] {
            Writable::Text.serialize(class.as_bytes(), &mut h).unwrap();
        }
        h.push(u8::from(codec.is_some()));
        h.push(u8::from(block));
        if let (Some(c), true) = (codec, version >= 5) {
            Writable::Text.serialize(c.as_bytes(), &mut h).unwrap();
        }
        if version >= 6 {
            h.extend_from_slice(&0i32.to_be_bytes());
        }
        h.extend_from_slice(&SYNC);
        h
    }

    #[test]
    fn header_versions_and_codecs() {
        let gzip = Codec::Gzip.class_name();
        let table: &[(u8, Option<&str>, bool, Compression)] = &[
            (4, None, false, Compression::None),
            (
                4,
                Some("ignored"),
                false,
                Compression::Record(Codec::Default),
            ),
            (4, Some("ignored"), true, Compression::Block(Codec::Default)),
            (5, Some(gzip), false, Compression::Record(Codec::Gzip)),
            (
                5,
                Some("org.apache.hadoop.io.compress.DeflateCodec"),
                true,
                Compression::Block(Codec::Default),
            ),
            (6, None, false, Compression::None),
            (
                6,
                Some(Codec::Snappy.class_name()),
                true,
                Compression::Block(Codec::Snappy),
            ),
        ];
        for &(version, codec, block, want) in table {
            let bytes = handmade_header(version, codec, block);
            let r = SeqReader::new(&bytes[..]).unwrap();
            assert_eq!(r.header().compression, want, "v{version} {codec:?}");
            assert_eq!(r.header().len, bytes.len() as u64);
        }
    }

    #[test]
    fn header_errors_name_the_problem() {
        let unknown = handmade_header(6, Some("com.example.LzoCodec"), false);
        let mut bad_class = b"SEQ\x06".to_vec();
        Writable::Text
            .serialize(b"org.apache.hadoop.io.LongWritable", &mut bad_class)
            .unwrap();
        let table: Vec<(Vec<u8>, &str)> = vec![
            (
                b"PAR1".to_vec(),
                "not a sequencefile at offset 0: magic [50, 41, 52]",
            ),
            (
                b"SE".to_vec(),
                "not a sequencefile at offset 0: magic [53, 45]",
            ),
            (
                b"SEQ\x03".to_vec(),
                "unsupported sequencefile version 3 at offset 3",
            ),
            (b"SEQ\x06".to_vec(), "truncated key class name at offset 4"),
            (
                bad_class,
                "unsupported writable class \"org.apache.hadoop.io.LongWritable\" at offset 4",
            ),
            (
                unknown,
                "unknown compression codec \"com.example.LzoCodec\" at offset 58",
            ),
            (
                handmade_header(6, None, false)[..60].to_vec(),
                "truncated metadata count at offset 58",
            ),
            (
                handmade_header(6, None, false)[..70].to_vec(),
                "truncated header sync marker at offset 62",
            ),
            (
                handmade_header(6, None, true),
                "corrupt block compression without compression at offset 57: 1",
            ),
        ];
        for (bytes, want) in table {
            let err = SeqReader::new(&bytes[..]).err().expect(want);
            assert_eq!(err.to_string(), want);
        }
    }

    #[test]
    fn reads_every_compression_and_codec() {
        let records = sample(200, 700);
        for compression in all_compressions() {
            let bytes = write_file(&records, opts(compression));
            let got = read_all(&bytes).unwrap();
            assert_eq!(pairs(&got), records, "{compression:?}");
            // Offsets increase (records of one block share its offset).
            assert!(got.windows(2).all(|w| w[0].offset <= w[1].offset));
            if compression == Compression::None {
                // The writer put markers about every 2000 bytes.
                let markers = memmem::find_iter(&bytes, &[&[0xff; 4][..], &SYNC].concat()).count();
                assert!(markers > bytes.len() / 2000 / 2, "{markers} markers");
            }
        }
    }

    /// A reader that hands out at most a few bytes per call, like a slow socket.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.1 = self.1 % 7 + 1;
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn short_reads_change_nothing() {
        let records = sample(40, 5000);
        for compression in all_compressions() {
            let bytes = write_file(&records, opts(compression));
            let mut r = SeqReader::new(Trickle(&bytes, 0)).unwrap();
            let mut got = Vec::new();
            while let Some(rec) = r.next_record().unwrap() {
                got.push(rec);
            }
            assert_eq!(got, read_all(&bytes).unwrap(), "{compression:?}");
        }
    }

    #[test]
    fn bytes_writable_keys_and_values() {
        let records = sample(30, 100);
        for compression in [Compression::None, Compression::Block(Codec::Default)] {
            let mut o = opts(compression);
            o.key_class = Writable::Bytes;
            o.value_class = Writable::Bytes;
            let bytes = write_file(&records, o);
            assert_eq!(pairs(&read_all(&bytes).unwrap()), records);
        }
    }

    #[test]
    fn next_into_reuses_buffers() {
        let records = sample(5, 50);
        let bytes = write_file(&records, opts(Compression::None));
        let mut r = SeqReader::new(&bytes[..]).unwrap();
        let (mut k, mut v) = (b"old".to_vec(), b"old".to_vec());
        let mut n = 0;
        while r.next_into(&mut k, &mut v).unwrap().is_some() {
            assert_eq!((&k, &v), (&records[n].0, &records[n].1));
            n += 1;
        }
        assert_eq!(n, 5);
        assert_eq!(r.next_into(&mut k, &mut v).unwrap(), None);
    }

    #[test]
    fn truncated_file_keeps_records_before_the_cut() {
        let records = sample(100, 300);
        for compression in all_compressions() {
            let bytes = write_file(&records, opts(compression));
            let whole = read_all(&bytes).unwrap();
            let cut = bytes.len() * 2 / 3;
            let mut r = SeqReader::new(&bytes[..cut]).unwrap();
            let mut got = Vec::new();
            let err = loop {
                match r.next_record() {
                    Ok(Some(rec)) => got.push(rec),
                    Ok(None) => panic!("{compression:?}: no error at the cut"),
                    Err(e) => break e,
                }
            };
            assert!(
                matches!(err, SeqError::Truncated { .. }),
                "{compression:?}: {err}"
            );
            assert!(err
                .to_string()
                .contains(&format!("offset {}", err.offset())));
            // Every record that lies wholly before the cut came out, and the error
            // names the first one that does not.
            assert_eq!(got[..], whole[..got.len()]);
            assert_eq!(err.offset(), whole[got.len()].offset, "{compression:?}");
            assert!(err.offset() < cut as u64);
            assert_eq!(r.recover().unwrap(), None);
            assert_eq!(r.next_record().unwrap(), None);
        }
    }

    /// Offsets of the markers (escape + sync) in a file body.
    fn markers(bytes: &[u8]) -> Vec<usize> {
        memmem::find_iter(bytes, &[&[0xff; 4][..], &SYNC].concat()).collect()
    }

    #[test]
    fn corrupt_block_is_skipped_to_the_next_marker() {
        let records = sample(100, 300);
        for codec in Codec::ALL {
            let mut bytes = write_file(&records, opts(Compression::Block(codec)));
            let whole = read_all(&bytes).unwrap();
            let blocks = markers(&bytes);
            assert!(blocks.len() >= 4, "{codec:?}: {} blocks", blocks.len());
            // Garble the middle of the second block's compressed data.
            let (b1, b2) = (blocks[1], blocks[2]);
            for byte in &mut bytes[b1 + 40..b2 - 10] {
                *byte ^= 0x5a;
            }
            let mut r = SeqReader::new(&bytes[..]).unwrap();
            let mut got = Vec::new();
            let mut regions = Vec::new();
            loop {
                match r.next_record() {
                    Ok(Some(rec)) => got.push(rec),
                    Ok(None) => break,
                    Err(e) => {
                        let resume = r.recover().unwrap();
                        regions.push((e.offset(), resume));
                    }
                }
            }
            assert_eq!(regions, vec![(b1 as u64, Some(b2 as u64))], "{codec:?}");
            let want: Vec<_> = whole
                .iter()
                .filter(|r| r.offset != b1 as u64)
                .cloned()
                .collect();
            assert_eq!(got, want, "{codec:?}");
        }
    }

    #[test]
    fn corrupt_record_is_skipped_to_the_next_marker() {
        let records = sample(100, 300);
        for compression in [Compression::None, Compression::Record(Codec::Default)] {
            let mut bytes = write_file(&records, opts(compression));
            let whole = read_all(&bytes).unwrap();
            let m = markers(&bytes);
            // A record length field right after the first marker gets a bogus value.
            let victim = m[0] + MARKER_LEN;
            bytes[victim..victim + 4].copy_from_slice(&0x0fff_ffffi32.to_be_bytes());
            let mut r = SeqReader::new(&bytes[..]).unwrap();
            let mut got = Vec::new();
            let mut regions = Vec::new();
            loop {
                match r.next_record() {
                    Ok(Some(rec)) => got.push(rec),
                    Ok(None) => break,
                    Err(e) => regions.push((e.offset(), r.recover().unwrap())),
                }
            }
            assert_eq!(
                regions,
                vec![(victim as u64, Some(m[1] as u64))],
                "{compression:?}"
            );
            let lost = |o: u64| o >= victim as u64 && o < m[1] as u64;
            let want: Vec<_> = whole.iter().filter(|r| !lost(r.offset)).cloned().collect();
            assert_eq!(got, want, "{compression:?}");
        }
    }

    #[test]
    fn decompression_failure_names_codec_and_offset() {
        let records = sample(3, 100);
        let mut bytes = write_file(&records, opts(Compression::Record(Codec::Default)));
        let whole = read_all(&bytes).unwrap();
        let second = whole[1].offset as usize;
        // The zlib stream of the second value starts after 8 + key (1 + 45) bytes.
        let z = second + 8 + 46;
        bytes[z + 2..z + 12].fill(0xee);
        let mut r = SeqReader::new(&bytes[..]).unwrap();
        assert!(r.next_record().unwrap().is_some());
        let err = r.next_record().unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("zlib decompression failed at offset {second}")),
            "{err}"
        );
    }

    #[test]
    fn inflate_limit_refuses_bombs() {
        let mut inf = Inflaters::new();
        let zeros = vec![0u8; 100_000];
        for codec in Codec::ALL {
            let mut packed = Vec::new();
            compress(codec, &zeros, &mut packed).unwrap();
            let mut out = Vec::new();
            inf.decompress(codec, &packed, &mut out, zeros.len())
                .unwrap();
            assert_eq!(out, zeros);
            let err = inf
                .decompress(codec, &packed, &mut out, 50_000)
                .unwrap_err();
            assert!(
                err.contains("50000") || err.contains("limit"),
                "{codec:?}: {err}"
            );
        }
    }

    #[test]
    fn split_at_header_and_marker_boundaries() {
        let records = sample(60, 400);
        for compression in all_compressions() {
            let bytes = write_file(&records, opts(compression));
            let whole = read_all(&bytes).unwrap();
            let h = SeqReader::new(&bytes[..]).unwrap().header().len;
            let len = bytes.len() as u64;
            let mut cuts = vec![1, h - 1, h, h + 1];
            for m in markers(&bytes[h as usize..]) {
                let m = m as u64 + h;
                cuts.extend([m - 1, m, m + 1, m + 4]);
            }
            cuts.sort();
            cuts.dedup();
            let mut bounds = vec![0];
            bounds.extend(cuts.iter().copied().filter(|&c| c > 0 && c < len));
            bounds.push(len);
            let mut got = Vec::new();
            for w in bounds.windows(2) {
                got.extend(read_split(&bytes, w[0], w[1]));
            }
            assert_eq!(got, whole, "{compression:?}");
            assert_eq!(read_split(&bytes, 0, h), vec![], "{compression:?}");
            assert_eq!(read_split(&bytes, 0, len + 100), whole);
        }
    }

    fn arb_records() -> impl Strategy<Value = Pairs> {
        prop::collection::vec(
            (
                prop::collection::vec(any::<u8>(), 0..60),
                prop::collection::vec(any::<u8>(), 0..1500),
            ),
            0..40,
        )
    }

    fn arb_compression() -> impl Strategy<Value = Compression> {
        prop::sample::select(all_compressions())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn writer_reader_round_trip(
            records in arb_records(),
            compression in arb_compression(),
            bytes_key in any::<bool>(),
            block_size in 1usize..6000,
            sync in any::<[u8; 16]>(),
        ) {
            let mut o = SeqWriterOptions::new(compression, sync);
            o.block_size = block_size;
            if bytes_key {
                o.key_class = Writable::Bytes;
            }
            let bytes = write_file(&records, o);
            prop_assert_eq!(pairs(&read_all(&bytes).unwrap()), records);
        }

        #[test]
        fn splits_partition_the_records(
            records in arb_records(),
            compression in arb_compression(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let mut o = opts(compression);
            o.block_size = 800;
            o.sync_interval = 500;
            let bytes = write_file(&records, o);
            let whole = read_all(&bytes).unwrap();
            let len = bytes.len() as u64;
            let mut bounds: Vec<u64> = cuts.iter().map(|i| i.index(bytes.len() + 1) as u64).collect();
            bounds.extend([0, len]);
            bounds.sort();
            bounds.dedup();
            let mut got = Vec::new();
            for w in bounds.windows(2) {
                got.extend(read_split(&bytes, w[0], w[1]));
            }
            prop_assert_eq!(got, whole);
        }

        #[test]
        fn arbitrary_bytes_never_panic(tail in prop::collection::vec(any::<u8>(), 0..3000), compression in arb_compression()) {
            // A valid header followed by garbage exercises the body parsers; garbage
            // alone exercises the header parser.
            let mut bytes = write_file(&[], opts(compression));
            bytes.extend_from_slice(&tail);
            drain(&bytes);
            drain(&tail);
        }

        #[test]
        fn mutated_files_never_panic(
            records in arb_records(),
            compression in arb_compression(),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..12),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = write_file(&records, opts(compression));
            for (i, b) in flips {
                let i = i.index(bytes.len());
                bytes[i] ^= b | 1;
            }
            bytes.truncate(cut.index(bytes.len() + 1));
            drain(&bytes);
        }
    }

    /// Reads everything, recovering after each error; the loop must end.
    fn drain(bytes: &[u8]) {
        let Ok(mut r) = SeqReader::new(bytes).map(|r| r.with_max_len(1 << 20)) else {
            return;
        };
        for _ in 0..100_000 {
            match r.next_record() {
                Ok(Some(_)) => {}
                Ok(None) => return,
                Err(_) => {
                    if r.recover().unwrap().is_none() {
                        return;
                    }
                }
            }
        }
        panic!("reader did not finish");
    }
}

/// Files written by Hadoop 2.7.3's own `SequenceFile.Writer` (see
/// `tests/data/hadoop/README.md`): an independent check of the reader.
#[cfg(test)]
mod hadoop_written {
    use super::*;
    use std::io::Cursor;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn expected() -> Vec<(Vec<u8>, Vec<u8>)> {
        let tsv = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/hadoop/records.tsv"
        ))
        .unwrap();
        tsv.lines()
            .map(|l| {
                let (k, v) = l.split_once('\t').unwrap();
                (unhex(k), unhex(v))
            })
            .collect()
    }

    fn read(bytes: &[u8], start: u64, end: u64) -> Vec<(u64, Vec<u8>, Vec<u8>)> {
        let mut r = SeqReader::open_split(Cursor::new(bytes), start, end).unwrap();
        let mut out = Vec::new();
        while let Some(rec) = r.next_record().unwrap() {
            out.push((rec.offset, rec.key, rec.value));
        }
        out
    }

    #[test]
    fn every_file_reads_as_records_tsv_whole_and_split() {
        let want = expected();
        assert_eq!(want.len(), 300);
        for kind in ["none", "record", "block"] {
            for codec in ["default", "gzip", "bzip2"] {
                let name = format!("seq-{kind}-{codec}.seq");
                let path = format!("{}/tests/data/hadoop/{name}", env!("CARGO_MANIFEST_DIR"));
                let bytes = std::fs::read(&path).unwrap();
                let header = SeqReader::new(&bytes[..]).unwrap().header().clone();
                let compression = match (kind, codec) {
                    ("none", _) => Compression::None,
                    (_, c) => {
                        let c = match c {
                            "default" => Codec::Default,
                            "gzip" => Codec::Gzip,
                            _ => Codec::Bzip2,
                        };
                        if kind == "record" {
                            Compression::Record(c)
                        } else {
                            Compression::Block(c)
                        }
                    }
                };
                assert_eq!(header.compression, compression, "{name}");
                assert_eq!(
                    (header.version, header.key_class, header.value_class),
                    (6, Writable::Text, Writable::Text)
                );

                let len = bytes.len() as u64;
                let whole = read(&bytes, 0, len);
                let got: Vec<_> = whole
                    .iter()
                    .map(|(_, k, v)| (k.clone(), v.clone()))
                    .collect();
                assert!(got == want, "{name}: records differ from records.tsv");

                // Cuts at arbitrary offsets, and right at / around a marker.
                let marker = [&[0xff; 4][..], &header.sync].concat();
                let m = memmem::find_iter(&bytes, &marker).nth(5).unwrap() as u64;
                let mut cuts = vec![
                    0,
                    17,
                    header.len,
                    m - 1,
                    m,
                    m + 1,
                    len / 3,
                    len / 2 + 7,
                    len - 100,
                    len,
                ];
                cuts.sort();
                cuts.dedup();
                let mut joined = Vec::new();
                for w in cuts.windows(2) {
                    joined.extend(read(&bytes, w[0], w[1]));
                }
                assert!(joined == whole, "{name}: splits differ from the whole file");
            }
        }
    }

    #[test]
    fn writer_matches_hadoop_byte_for_byte_when_uncompressed() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/hadoop/seq-none-default.seq"
        );
        let hadoop = std::fs::read(path).unwrap();
        let sync = SeqReader::new(&hadoop[..]).unwrap().header().sync;
        let mut w =
            SeqWriter::new(Vec::new(), SeqWriterOptions::new(Compression::None, sync)).unwrap();
        for (k, v) in expected() {
            w.append(&k, &v).unwrap();
        }
        let ours = w.finish().unwrap();
        assert_eq!(ours.len(), hadoop.len());
        assert!(
            ours == hadoop,
            "first difference at {:?}",
            ours.iter().zip(&hadoop).position(|(a, b)| a != b)
        );
    }

    #[test]
    fn writer_cuts_blocks_where_hadoop_does() {
        let per_block = |bytes: &[u8]| {
            let mut counts: Vec<(u64, usize)> = Vec::new();
            for (offset, _, _) in read(bytes, 0, u64::MAX) {
                match counts.last_mut() {
                    Some((o, n)) if *o == offset => *n += 1,
                    _ => counts.push((offset, 1)),
                }
            }
            counts.into_iter().map(|(_, n)| n).collect::<Vec<_>>()
        };
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/hadoop/seq-block-default.seq"
        );
        let hadoop = std::fs::read(path).unwrap();
        let mut opts = SeqWriterOptions::new(Compression::Block(Codec::Default), [7; SYNC_SIZE]);
        opts.block_size = 4096;
        let mut w = SeqWriter::new(Vec::new(), opts).unwrap();
        for (k, v) in expected() {
            w.append(&k, &v).unwrap();
        }
        let ours = w.finish().unwrap();
        let theirs = per_block(&hadoop);
        assert_eq!(theirs.len(), 64);
        assert_eq!(per_block(&ours), theirs);
    }
}
