//! One unit of work: a source file, or a byte range of a large SequenceFile split at
//! sync markers. A unit reads its records, converts each, and stages the results as
//! a single pieces file (one or more pieces per partition, plus the error output;
//! raw on local disk, lz4 blocks elsewhere), followed by its checkpoint manifest.
//!
//! Memory is bounded by the buffer size whatever the number of partitions: when the
//! buffered lines pass it, the largest partitions are cut into pieces first.
//! Every decision depends only on the unit's records, never on timing or `--jobs`, so
//! a unit's pieces are the same bytes on every run.

use super::errors::ErrorRecord;
use super::manifest::{
    short_hash, staging_prefix, Piece, PieceCodec, PieceKind, Stats, UnitManifest, Unreadable,
    FORMAT,
};
use super::plan::{DayClass, Selection};
use crate::core::body::{self, Container};
use crate::core::convert::Converter;
use crate::core::mappings::Mappings;
use crate::core::schema::Filter;
use crate::core::seqfile::SeqReader;
use crate::core::textdump::TextDumpReader;
use crate::source::Source;
use crate::store::{ObjectWriter, Store};
use std::collections::HashMap;
use std::io::{self, Read, Seek, SeekFrom, Write};

/// A unit: `[start, end)` of one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitSpec {
    /// File, relative to the source root.
    pub file: String,
    /// Start of the range.
    pub start: u64,
    /// End of the range.
    pub end: u64,
    /// Size of the whole file.
    pub file_size: u64,
}

impl UnitSpec {
    /// The unit's id: stable for the same file and start, whatever else is listed.
    pub fn id(&self) -> String {
        short_hash(&format!("{}\0{}", self.file, self.start), 12)
    }
}

/// What a unit needs besides its range.
pub struct UnitCtx<'a> {
    /// Mappings.
    pub mappings: &'a Mappings,
    /// Where the file is read.
    pub source: &'a dyn Source,
    /// Where pieces are staged.
    pub staging: &'a dyn Store,
    /// Job id.
    pub job: &'a str,
    /// Group id.
    pub group: &'a str,
    /// Which submission days this run exports from the unit.
    pub selection: &'a Selection,
    /// `--filter`.
    pub filter: Option<&'a Filter>,
    /// Buffered bytes before pieces are cut.
    pub buffer_size: u64,
    /// Largest piece (uncompressed bytes).
    pub piece_max: u64,
    /// Called with source bytes and records as they are read (progress).
    pub on_progress: &'a (dyn Fn(u64, u64) + Sync),
}

/// Key of a unit's pieces file and of its manifest.
pub fn unit_keys(job: &str, group: &str, unit: &UnitSpec) -> (String, String) {
    let p = staging_prefix(job, group);
    let id = unit.id();
    (format!("{p}{id}.pieces"), format!("{p}{id}.json"))
}

struct Buf {
    lines: Vec<u8>,
    records: u64,
}

/// Buffers lines per partition and cuts pieces into the unit's pieces file.
struct Stager<'a> {
    writer: Box<dyn ObjectWriter>,
    hasher: crc32fast::Hasher,
    written: u64,
    pieces: Vec<Piece>,
    parts: HashMap<String, Buf>,
    errors: Buf,
    total: u64,
    budget: u64,
    piece_max: u64,
    compressed: Vec<u8>,
    codec: PieceCodec,
    _ctx: std::marker::PhantomData<&'a ()>,
}

impl Stager<'_> {
    fn push(&mut self, partition: &str, line: &[u8]) -> io::Result<()> {
        let buf = match self.parts.get_mut(partition) {
            Some(b) => b,
            None => self.parts.entry(partition.to_string()).or_insert(Buf {
                lines: Vec::new(),
                records: 0,
            }),
        };
        buf.lines.extend_from_slice(line);
        buf.records += 1;
        self.total += line.len() as u64;
        if buf.lines.len() as u64 >= self.piece_max {
            let p = partition.to_string();
            self.flush_partition(&p)?;
        }
        self.enforce_budget()
    }

    fn push_error(&mut self, line: &[u8]) -> io::Result<()> {
        self.errors.lines.extend_from_slice(line);
        self.errors.records += 1;
        self.total += line.len() as u64;
        if self.errors.lines.len() as u64 >= self.piece_max {
            self.flush_errors()?;
        }
        self.enforce_budget()
    }

    /// Over budget: cut the largest buffers into pieces (ties by partition name) until
    /// half the budget is free.
    fn enforce_budget(&mut self) -> io::Result<()> {
        if self.total <= self.budget {
            return Ok(());
        }
        while self.total > self.budget / 2 {
            let largest = self
                .parts
                .iter()
                .max_by(|a, b| {
                    a.1.lines
                        .len()
                        .cmp(&b.1.lines.len())
                        .then_with(|| b.0.cmp(a.0))
                })
                .map(|(k, v)| (k.clone(), v.lines.len()));
            match largest {
                Some((p, n)) if n >= self.errors.lines.len() => self.flush_partition(&p)?,
                _ if !self.errors.lines.is_empty() => self.flush_errors()?,
                _ => break,
            }
        }
        Ok(())
    }

    fn flush_partition(&mut self, partition: &str) -> io::Result<()> {
        if let Some(buf) = self.parts.remove(partition) {
            self.total -= buf.lines.len() as u64;
            self.write_piece(PieceKind::Records, partition, &buf)?;
        }
        Ok(())
    }

    fn flush_errors(&mut self) -> io::Result<()> {
        let buf = std::mem::replace(
            &mut self.errors,
            Buf {
                lines: Vec::new(),
                records: 0,
            },
        );
        self.total -= buf.lines.len() as u64;
        if buf.records > 0 {
            self.write_piece(PieceKind::Errors, "", &buf)?;
        }
        Ok(())
    }

    fn write_piece(&mut self, kind: PieceKind, partition: &str, buf: &Buf) -> io::Result<()> {
        // Staging is read back once, by assembly, which compresses each object as
        // one xz stream: lines go as they are to local disk, as lz4 elsewhere.
        let stored: &[u8] = match self.codec {
            PieceCodec::Raw => &buf.lines,
            PieceCodec::Lz4 => {
                self.compressed = lz4_flex::block::compress_prepend_size(&buf.lines);
                &self.compressed
            }
        };
        self.writer.write_all(stored)?;
        self.hasher.update(stored);
        let len = stored.len() as u64;
        self.pieces.push(Piece {
            kind,
            partition: partition.to_string(),
            offset: self.written,
            len,
            records: buf.records,
            raw_bytes: buf.lines.len() as u64,
            codec: self.codec,
        });
        self.written += len;
        Ok(())
    }

    /// Flushes everything left, partitions in name order, errors last.
    fn finish(mut self) -> io::Result<(Vec<Piece>, u32)> {
        let mut names: Vec<String> = self.parts.keys().cloned().collect();
        names.sort();
        for p in names {
            self.flush_partition(&p)?;
        }
        self.flush_errors()?;
        self.writer.commit()?;
        Ok((self.pieces, self.hasher.finalize()))
    }
}

/// Reads, converts and stages one unit; writes its pieces and then its manifest.
/// Bad input is counted, never fatal; an `Err` is an operational failure (staging
/// could not be written).
pub fn process(ctx: &UnitCtx<'_>, unit: &UnitSpec) -> io::Result<UnitManifest> {
    let (pieces_key, manifest_key) = unit_keys(ctx.job, ctx.group, unit);
    let mut stager = Stager {
        writer: ctx.staging.create(&pieces_key)?,
        hasher: crc32fast::Hasher::new(),
        written: 0,
        pieces: Vec::new(),
        parts: HashMap::new(),
        errors: Buf {
            lines: Vec::new(),
            records: 0,
        },
        total: 0,
        budget: ctx.buffer_size,
        piece_max: ctx.piece_max.max(1),
        compressed: Vec::new(),
        codec: if ctx.staging.is_local() {
            PieceCodec::Raw
        } else {
            PieceCodec::Lz4
        },
        _ctx: std::marker::PhantomData,
    };
    let mut stats = Stats::default();
    read_unit(ctx, unit, &mut stager, &mut stats)?;
    let (pieces, pieces_crc32) = stager.finish()?;
    let manifest = UnitManifest {
        format: FORMAT.to_string(),
        file: unit.file.clone(),
        start: unit.start,
        end: unit.end,
        pieces_key,
        pieces_crc32,
        pieces,
        stats,
        selection: ctx.selection.clone(),
    };
    ctx.staging.put(
        &manifest_key,
        &serde_json::to_vec(&manifest).map_err(io::Error::other)?,
    )?;
    Ok(manifest)
}

/// Per-record work shared by every input format.
struct Sink<'c, 'm> {
    ctx: &'c UnitCtx<'c>,
    conv: Converter<'m>,
    file: &'c str,
    line: Vec<u8>,
}

impl Sink<'_, '_> {
    fn record(
        &mut self,
        stager: &mut Stager<'_>,
        stats: &mut Stats,
        offset: u64,
        key: &[u8],
        value: &[u8],
    ) -> io::Result<()> {
        match self.ctx.selection.classify(key) {
            DayClass::Selected => {}
            DayClass::Covered => return Ok(()),
            DayClass::Outside => {
                stats.records_filtered += 1;
                stats.records_outside_window += 1;
                return Ok(());
            }
        }
        match self.conv.convert_legacy(key, value) {
            Ok(c) => {
                if self.ctx.filter.is_some_and(|f| !f.matches(c.dims)) {
                    stats.records_filtered += 1;
                    return Ok(());
                }
                stats.records_in += 1;
                stats.records_out += 1;
                for name in c.dropped() {
                    match stats.histograms_dropped.get_mut(name) {
                        Some(n) => *n += 1,
                        None => {
                            stats.histograms_dropped.insert(name.to_string(), 1);
                        }
                    }
                }
                stager.push(c.partition, c.line)
            }
            Err(rej) => self.reject(
                stager,
                stats,
                offset,
                rej.reason.as_str(),
                &rej.detail,
                key,
                value,
            ),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn reject(
        &mut self,
        stager: &mut Stager<'_>,
        stats: &mut Stats,
        offset: u64,
        reason: &str,
        detail: &str,
        key: &[u8],
        value: &[u8],
    ) -> io::Result<()> {
        stats.records_in += 1;
        stats.records_error += 1;
        *stats
            .errors_by_reason
            .entry(reason.to_string())
            .or_default() += 1;
        let rec = ErrorRecord::new(
            self.file,
            offset,
            reason,
            detail,
            key,
            value,
            self.ctx.mappings.version(),
        );
        self.line.clear();
        rec.write_line(&mut self.line);
        stager.push_error(&self.line)
    }
}

fn unreadable(stats: &mut Stats, unit: &UnitSpec, offset: u64, end: u64, error: String) {
    stats.unreadable.push(Unreadable {
        file: unit.file.clone(),
        offset,
        length: end.saturating_sub(offset),
        error,
    });
}

fn read_unit(
    ctx: &UnitCtx<'_>,
    unit: &UnitSpec,
    stager: &mut Stager<'_>,
    stats: &mut Stats,
) -> io::Result<()> {
    let mut sink = Sink {
        ctx,
        conv: Converter::new(ctx.mappings),
        file: &unit.file,
        line: Vec::new(),
    };
    let mut file = match ctx.source.open(&unit.file) {
        Ok(f) => f,
        Err(e) => {
            unreadable(
                stats,
                unit,
                unit.start,
                unit.end,
                format!("cannot open: {e}"),
            );
            return Ok(());
        }
    };
    let mut prefix = [0u8; body::SNIFF_LEN];
    let n = match read_prefix(&mut file, &mut prefix) {
        Ok(n) => n,
        Err(e) => {
            unreadable(
                stats,
                unit,
                unit.start,
                unit.end,
                format!("cannot read: {e}"),
            );
            return Ok(());
        }
    };
    let container = body::sniff(&prefix[..n]);
    if container == Container::SequenceFile {
        stats.bytes_in += unit.end - unit.start;
        if let Err(e) = file.seek(SeekFrom::Start(0)) {
            unreadable(
                stats,
                unit,
                unit.start,
                unit.end,
                format!("cannot seek: {e}"),
            );
            return Ok(());
        }
        return read_seqfile(ctx, unit, file, &mut sink, stager, stats);
    }
    // Text dumps are not split: the unit at offset 0 reads the whole file.
    if unit.start != 0 {
        return Ok(());
    }
    stats.bytes_in += unit.file_size;
    let whole = io::Cursor::new(prefix[..n].to_vec()).chain(file);
    let reader =
        body::decompressing_reader(io::BufReader::with_capacity(1 << 20, whole), container);
    let mut dump = TextDumpReader::new(reader);
    // Where the next line starts, for naming the region after a failure.
    let mut next_at = 0;
    loop {
        match dump.next_record() {
            Ok(Some(rec)) => {
                let sep = if rec.malformed { 0 } else { 1 };
                next_at = rec.offset + (rec.key.len() + sep + rec.value.len() + 1) as u64;
                if rec.malformed {
                    // Undatable: only a folder's first run takes it.
                    if !ctx.selection.covered.is_empty() {
                        continue;
                    }
                    sink.reject(
                        stager,
                        stats,
                        rec.offset,
                        "invalid_key",
                        "line has no tab after a 45-byte key",
                        &rec.key,
                        &rec.value,
                    )?;
                } else {
                    sink.record(stager, stats, rec.offset, &rec.key, &rec.value)?;
                }
            }
            Ok(None) => break,
            Err(e) => {
                // Offsets of compressed dumps are in the decompressed stream; the
                // region runs to the end of the file.
                let at = next_at;
                let what = if container == Container::Plain {
                    ""
                } else {
                    " (decompressed offset)"
                };
                unreadable(
                    stats,
                    unit,
                    at,
                    unit.file_size.max(at),
                    format!("text dump unreadable{what}: {e}"),
                );
                break;
            }
        }
    }
    (ctx.on_progress)(unit.file_size, stats.records_in + stats.records_filtered);
    Ok(())
}

fn read_prefix(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn read_seqfile(
    ctx: &UnitCtx<'_>,
    unit: &UnitSpec,
    file: Box<dyn crate::source::ReadSeek>,
    sink: &mut Sink<'_, '_>,
    stager: &mut Stager<'_>,
    stats: &mut Stats,
) -> io::Result<()> {
    let mut reader = match SeqReader::open_split(file, unit.start, unit.end) {
        Ok(r) => r,
        Err(e) => {
            unreadable(
                stats,
                unit,
                unit.start.max(e.offset()),
                unit.end,
                e.to_string(),
            );
            (ctx.on_progress)(unit.end - unit.start, 0);
            return Ok(());
        }
    };
    let (mut key, mut value) = (Vec::new(), Vec::new());
    let mut reported = unit.start;
    let mut records_reported = 0;
    loop {
        match reader.next_into(&mut key, &mut value) {
            Ok(Some(offset)) => {
                sink.record(stager, stats, offset, &key, &value)?;
                let pos = reader.position().min(unit.end);
                if pos > reported + (1 << 20) {
                    let records = stats.records_in + stats.records_filtered;
                    (ctx.on_progress)(pos - reported, records - records_reported);
                    reported = pos;
                    records_reported = records;
                }
            }
            Ok(None) => break,
            Err(e) => {
                let at = e.offset();
                match reader.recover() {
                    Ok(Some(resume)) if resume > at => {
                        unreadable(stats, unit, at, resume, e.to_string());
                        if resume >= unit.end {
                            break;
                        }
                    }
                    Ok(_) => {
                        unreadable(stats, unit, at, unit.end.max(at), e.to_string());
                        break;
                    }
                    Err(e2) => {
                        unreadable(stats, unit, at, unit.end.max(at), format!("{e}; then {e2}"));
                        break;
                    }
                }
            }
        }
    }
    let records = stats.records_in + stats.records_filtered;
    (ctx.on_progress)(
        unit.end.saturating_sub(reported),
        records - records_reported,
    );
    Ok(())
}
