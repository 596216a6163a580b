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
use super::index;
use super::manifest::{
    short_hash, staging_prefix, IndexRef, Piece, PieceCodec, PieceKind, ReprocessSpec, Stats,
    UnitManifest, Unreadable, FORMAT,
};
use super::plan::{DayClass, Selection};
use crate::core::body::{self, Container};
use crate::core::convert::Converter;
use crate::core::mappings::Mappings;
use crate::core::schema::Filter;
use crate::core::seqfile::SeqReader;
use crate::core::textdump::TextDumpReader;
use crate::source::{is_corrupt, is_fault, Source, SourceFault};
use crate::store::{ObjectWriter, Store};
use std::collections::HashMap;
use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};

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
    /// Set when the source is a store of the new layout (`reprocess`): its objects'
    /// lines and its error output are read instead of legacy records.
    pub reprocess: Option<&'a ReprocessSpec>,
    /// Set when the source holds the live server's raw logs (`ingest work`).
    pub ingest: bool,
}

/// Key of a unit's pieces file and of its manifest.
pub fn unit_keys(job: &str, group: &str, unit: &UnitSpec) -> (String, String) {
    let p = staging_prefix(job, group);
    let id = unit.id();
    (format!("{p}{id}.pieces"), format!("{p}{id}.json"))
}

/// Lines of one partition (or of the error output) waiting in the unit's arena.
#[derive(Default)]
struct Buf {
    /// Byte ranges of the arena, in arrival order; consecutive lines share one.
    spans: Vec<(usize, usize)>,
    bytes: u64,
    records: u64,
}

impl Buf {
    fn add(&mut self, start: usize, end: usize) {
        match self.spans.last_mut() {
            Some(last) if last.1 == start => last.1 = end,
            _ => self.spans.push((start, end)),
        }
        self.bytes += (end - start) as u64;
        self.records += 1;
    }
}

thread_local! {
    /// The arena of the last unit this thread ran, kept for the next one: it is
    /// written over instead of being allocated (and page-faulted in) anew each unit.
    static ARENA: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Buffers lines per partition and cuts pieces into the unit's pieces file.
///
/// Every line goes once into one arena, in arrival order, and each partition keeps
/// the ranges of its lines. Lines cut into pieces leave dead bytes behind; when the
/// next line would take the arena past the budget, the largest partitions are cut
/// until at most half the budget is buffered and the live lines are moved down
/// over the dead ones. So the buffer never holds more than the budget (or one line
/// larger than half of it), exactly, whatever the number of partitions: there is no
/// growth slack per partition.
struct Stager {
    writer: Box<dyn ObjectWriter>,
    hasher: crc32fast::Hasher,
    written: u64,
    pieces: Vec<Piece>,
    arena: Vec<u8>,
    parts: HashMap<String, Buf>,
    errors: Buf,
    /// Live (not yet cut) bytes in the arena.
    total: u64,
    budget: u64,
    piece_max: u64,
    /// A piece gathered into one block for lz4.
    gathered: Vec<u8>,
    codec: PieceCodec,
}

impl Stager {
    fn new(writer: Box<dyn ObjectWriter>, budget: u64, piece_max: u64, codec: PieceCodec) -> Self {
        let mut arena = ARENA.with(|a| a.take());
        arena.clear();
        // Reserved once (address space; pages are touched as lines arrive), so the
        // arena is not reallocated and copied as it fills. A huge --buffer-size is
        // reserved in part and grows as needed.
        arena.reserve(budget.min(1 << 30) as usize);
        Stager {
            writer,
            hasher: crc32fast::Hasher::new(),
            written: 0,
            pieces: Vec::new(),
            arena,
            parts: HashMap::new(),
            errors: Buf::default(),
            total: 0,
            budget,
            piece_max: piece_max.max(1),
            gathered: Vec::new(),
            codec,
        }
    }

    /// Appends a line to the arena, first making room within the budget.
    fn append(&mut self, line: &[u8]) -> io::Result<(usize, usize)> {
        if !self.arena.is_empty() && (self.arena.len() + line.len()) as u64 > self.budget {
            self.make_room()?;
        }
        let start = self.arena.len();
        self.arena.extend_from_slice(line);
        self.total += line.len() as u64;
        Ok((start, self.arena.len()))
    }

    fn push(&mut self, partition: &str, line: &[u8]) -> io::Result<()> {
        let (start, end) = self.append(line)?;
        let buf = match self.parts.get_mut(partition) {
            Some(b) => b,
            None => self.parts.entry(partition.to_string()).or_default(),
        };
        buf.add(start, end);
        if buf.bytes >= self.piece_max {
            let p = partition.to_string();
            self.flush_partition(&p)?;
        }
        Ok(())
    }

    fn push_error(&mut self, line: &[u8]) -> io::Result<()> {
        let (start, end) = self.append(line)?;
        self.errors.add(start, end);
        if self.errors.bytes >= self.piece_max {
            self.flush_errors()?;
        }
        Ok(())
    }

    /// Cuts the largest buffers into pieces (ties by partition name) until at most
    /// half the budget is buffered, then moves the live lines down over the dead.
    fn make_room(&mut self) -> io::Result<()> {
        while self.total > self.budget / 2 {
            let largest = self
                .parts
                .iter()
                .max_by(|a, b| a.1.bytes.cmp(&b.1.bytes).then_with(|| b.0.cmp(a.0)))
                .map(|(k, v)| (k.clone(), v.bytes));
            match largest {
                Some((p, n)) if n >= self.errors.bytes => self.flush_partition(&p)?,
                _ if self.errors.records > 0 => self.flush_errors()?,
                _ => break,
            }
        }
        self.compact();
        Ok(())
    }

    /// Moves every live range to the front of the arena, keeping arrival order.
    fn compact(&mut self) {
        let Stager {
            arena,
            parts,
            errors,
            ..
        } = self;
        let mut live: Vec<&mut (usize, usize)> = parts
            .values_mut()
            .chain(std::iter::once(errors))
            .flat_map(|b| b.spans.iter_mut())
            .collect();
        live.sort_unstable_by_key(|s| s.0);
        let mut to = 0;
        for span in live {
            let len = span.1 - span.0;
            arena.copy_within(span.0..span.1, to);
            *span = (to, to + len);
            to += len;
        }
        arena.truncate(to);
    }

    fn flush_partition(&mut self, partition: &str) -> io::Result<()> {
        if let Some(buf) = self.parts.remove(partition) {
            self.total -= buf.bytes;
            self.write_piece(PieceKind::Records, partition, &buf)?;
        }
        Ok(())
    }

    fn flush_errors(&mut self) -> io::Result<()> {
        let buf = std::mem::take(&mut self.errors);
        self.total -= buf.bytes;
        if buf.records > 0 {
            self.write_piece(PieceKind::Errors, "", &buf)?;
        }
        Ok(())
    }

    fn write_piece(&mut self, kind: PieceKind, partition: &str, buf: &Buf) -> io::Result<()> {
        // Staging is read back once, by assembly, which compresses each object as
        // one xz stream: lines go as they are to local disk, as lz4 elsewhere.
        let len = match self.codec {
            PieceCodec::Raw => {
                for &(s, e) in &buf.spans {
                    self.writer.write_all(&self.arena[s..e])?;
                    self.hasher.update(&self.arena[s..e]);
                }
                buf.bytes
            }
            PieceCodec::Lz4 => {
                self.gathered.clear();
                for &(s, e) in &buf.spans {
                    self.gathered.extend_from_slice(&self.arena[s..e]);
                }
                let stored = lz4_flex::block::compress_prepend_size(&self.gathered);
                self.writer.write_all(&stored)?;
                self.hasher.update(&stored);
                stored.len() as u64
            }
        };
        self.pieces.push(Piece {
            kind,
            partition: partition.to_string(),
            offset: self.written,
            len,
            records: buf.records,
            raw_bytes: buf.bytes,
            codec: self.codec,
        });
        self.written += len;
        Ok(())
    }

    /// Flushes everything left, partitions in name order, errors last, then the
    /// index of the pieces (sorted by partition, see [`super::index`]).
    fn finish(mut self) -> io::Result<(Vec<Piece>, IndexRef, u32)> {
        let mut names: Vec<String> = self.parts.keys().cloned().collect();
        names.sort();
        for p in names {
            self.flush_partition(&p)?;
        }
        self.flush_errors()?;
        let arena = std::mem::take(&mut self.arena);
        ARENA.with(|a| a.set(arena));
        let mut pieces = self.pieces;
        index::sort(&mut pieces);
        let bytes = index::encode(&pieces);
        self.writer.write_all(&bytes)?;
        self.hasher.update(&bytes);
        self.writer.commit()?;
        let index = IndexRef {
            offset: self.written,
            len: bytes.len() as u64,
            pieces: pieces.len() as u64,
        };
        Ok((pieces, index, self.hasher.finalize()))
    }
}

/// Reads, converts and stages one unit; writes its pieces and then its manifest.
/// Bad input is counted, never fatal; an `Err` is an operational failure (staging
/// could not be written).
pub fn process(ctx: &UnitCtx<'_>, unit: &UnitSpec) -> io::Result<UnitManifest> {
    let (pieces_key, manifest_key) = unit_keys(ctx.job, ctx.group, unit);
    let codec = if ctx.staging.is_local() {
        PieceCodec::Raw
    } else {
        PieceCodec::Lz4
    };
    let mut stager = Stager::new(
        ctx.staging.create(&pieces_key)?,
        ctx.buffer_size,
        ctx.piece_max,
        codec,
    );
    let mut stats = Stats::default();
    read_unit(ctx, unit, &mut stager, &mut stats)?;
    let (_, index, pieces_crc32) = stager.finish()?;
    let manifest = UnitManifest {
        format: FORMAT.to_string(),
        file: unit.file.clone(),
        start: unit.start,
        end: unit.end,
        file_size: unit.file_size,
        pieces_key,
        pieces_crc32,
        index: Some(index),
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
    /// The partition in the job's layout, when it is not the converter's (2).
    part: String,
}

/// Where a record comes from, for what `reprocess` reports it changed.
#[derive(Clone, Copy)]
enum Origin<'a> {
    /// A legacy record (export).
    Legacy,
    /// A line of an object of the store: the partition it was in (without the
    /// layout suffix) and the line as it was (doc id, JSON).
    Stored {
        partition: &'a str,
        doc_id: &'a [u8],
        json: &'a [u8],
    },
    /// A record of the error output, rejected before for `reason`.
    Replayed { reason: &'a str },
}

/// What a record's key and value are.
#[derive(Clone, Copy)]
enum Kind<'a> {
    /// A legacy row key (holding the day) and payload.
    Legacy,
    /// A record of the new store: its doc id and JSON, of this submission day.
    Stored { day: &'a str },
    /// A live submission: its request path (without `/submit/telemetry/`) and
    /// body, received at this time (epoch ms), on its UTC day.
    Submission { day: &'a str, received_ms: u64 },
}

/// One record to judge: its key and value (see [`Kind`]), and where it was read.
struct Input<'a> {
    file: &'a str,
    offset: u64,
    key: &'a [u8],
    value: &'a [u8],
    kind: Kind<'a>,
    origin: Origin<'a>,
}

/// The partition without its `.v<N>.log` suffix: the same in every layout.
fn partition_head(p: &str) -> &str {
    crate::reprocess::strip_layout(p).unwrap_or(p)
}

impl Sink<'_, '_> {
    /// A legacy record.
    fn record(
        &mut self,
        stager: &mut Stager,
        stats: &mut Stats,
        offset: u64,
        key: &[u8],
        value: &[u8],
    ) -> io::Result<()> {
        if !self.selected(stats, self.ctx.selection.classify(key)) {
            return Ok(());
        }
        let file = self.file;
        self.take(
            stager,
            stats,
            &Input {
                file,
                offset,
                key,
                value,
                kind: Kind::Legacy,
                origin: Origin::Legacy,
            },
        )
    }

    /// Whether a record of this class is judged; counts the ones left out.
    fn selected(&self, stats: &mut Stats, class: DayClass) -> bool {
        match class {
            DayClass::Selected => true,
            DayClass::Covered => false,
            DayClass::Outside => {
                stats.records_filtered += 1;
                stats.records_outside_window += 1;
                false
            }
        }
    }

    /// Converts a record and stages it, or its rejection.
    fn take(&mut self, stager: &mut Stager, stats: &mut Stats, r: &Input<'_>) -> io::Result<()> {
        let Sink {
            ctx, conv, part, ..
        } = self;
        let converted = match r.kind {
            Kind::Stored { day } => conv.convert_stored(r.key, day, r.value),
            Kind::Legacy => conv.convert_legacy(r.key, r.value),
            Kind::Submission { day, .. } => match crate::ingest::SubmissionPath::parse(r.key) {
                Ok(path) => {
                    let dims = path.dims(conv.mappings().schema());
                    conv.convert_payload(path.doc_id, day, &dims, r.value)
                }
                Err(e) => Err(crate::core::reason::Rejection::new(
                    crate::core::reason::Reason::InvalidKey,
                    e,
                )),
            },
        };
        let rej = match converted {
            Ok(c) => {
                if ctx.filter.is_some_and(|f| !f.matches(c.dims)) {
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
                let changes = &mut stats.changes;
                match r.origin {
                    Origin::Legacy => {}
                    Origin::Stored {
                        partition,
                        doc_id,
                        json,
                    } => {
                        let new = partition_head(c.partition);
                        if new != partition {
                            *changes
                                .moved
                                .entry(format!("{partition}\t{new}"))
                                .or_default() += 1;
                        } else if c.line.len() == doc_id.len() + json.len() + 2
                            && c.line.starts_with(doc_id)
                            && c.line[doc_id.len() + 1..c.line.len() - 1] == *json
                        {
                            changes.unchanged += 1;
                        } else {
                            changes.rewritten += 1;
                        }
                    }
                    Origin::Replayed { reason } => {
                        *changes
                            .accepted_from_errors
                            .entry(reason.to_string())
                            .or_default() += 1;
                    }
                }
                return match ctx.reprocess {
                    Some(spec) if spec.layout != 2 => {
                        crate::reprocess::partition_in_layout(c.partition, spec.layout, part);
                        stager.push(part, c.line)
                    }
                    _ => stager.push(c.partition, c.line),
                };
            }
            Err(rej) => rej,
        };
        if let Origin::Stored { .. } = r.origin {
            *stats
                .changes
                .newly_rejected
                .entry(rej.reason.as_str().to_string())
                .or_default() += 1;
        }
        self.reject(stager, stats, r, rej.reason.as_str(), &rej.detail)
    }

    fn reject(
        &mut self,
        stager: &mut Stager,
        stats: &mut Stats,
        r: &Input<'_>,
        reason: &str,
        detail: &str,
    ) -> io::Result<()> {
        stats.records_in += 1;
        stats.records_error += 1;
        *stats
            .errors_by_reason
            .entry(reason.to_string())
            .or_default() += 1;
        let mut rec = ErrorRecord::new(
            r.file,
            r.offset,
            reason,
            detail,
            r.key,
            r.value,
            self.ctx.mappings.version(),
        );
        match r.kind {
            Kind::Legacy => {}
            Kind::Stored { day } => rec.day = Some(day.to_string()),
            Kind::Submission { day, received_ms } => {
                rec.day = Some(day.to_string());
                rec.received_ms = Some(received_ms);
            }
        }
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

/// The error that fails a unit whose source failed: names the file and offset, and
/// stays a [`SourceFault`] (a rerun reads the unit again).
fn source_failure(unit: &UnitSpec, what: &str, at: u64, e: &dyn std::fmt::Display) -> io::Error {
    io::Error::other(SourceFault(io::Error::other(format!(
        "{}: {what} at offset {at}: {e}",
        unit.file
    ))))
}

fn read_unit(
    ctx: &UnitCtx<'_>,
    unit: &UnitSpec,
    stager: &mut Stager,
    stats: &mut Stats,
) -> io::Result<()> {
    let mut sink = Sink {
        ctx,
        conv: Converter::new(ctx.mappings),
        file: &unit.file,
        line: Vec::new(),
        part: String::new(),
    };
    // Every failure of the source itself (open, read, seek, after its retries)
    // fails the unit: nothing is checkpointed and a rerun reads it again. Only
    // bytes that are there and cannot be decoded are `unreadable`.
    let fail = |what: &str, at: u64, e: &dyn std::fmt::Display| source_failure(unit, what, at, e);
    let mut file = match ctx.source.open(&unit.file) {
        Ok(f) => crate::source::Faulting(f),
        Err(e) if !is_corrupt(&e) => {
            return Err(fail("cannot open", unit.start, &e));
        }
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
    if let Some(spec) = ctx.reprocess {
        return read_stored(spec, unit, file, &mut sink, stager, stats);
    }
    if ctx.ingest {
        return read_raw_log(unit, file, &mut sink, stager, stats);
    }
    let mut prefix = [0u8; body::SNIFF_LEN];
    let n = match read_prefix(&mut file, &mut prefix) {
        Ok(n) => n,
        Err(e) if is_fault(&e) => return Err(fail("cannot read", 0, &e)),
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
            return Err(fail("cannot seek", 0, &e));
        }
        return read_seqfile(ctx, unit, Box::new(file), &mut sink, stager, stats);
    }
    // Text dumps are not split: the unit at offset 0 reads the whole file.
    if !reads_whole_file(unit, stats) {
        return Ok(());
    }
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
                    let input = Input {
                        file: &unit.file,
                        offset: rec.offset,
                        key: &rec.key,
                        value: &rec.value,
                        kind: Kind::Legacy,
                        origin: Origin::Legacy,
                    };
                    sink.reject(
                        stager,
                        stats,
                        &input,
                        "invalid_key",
                        "line has no tab after a 45-byte key",
                    )?;
                } else {
                    sink.record(stager, stats, rec.offset, &rec.key, &rec.value)?;
                }
            }
            Ok(None) => break,
            Err(e) if is_fault(&e) => return Err(fail("cannot read", next_at, &e)),
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

/// Reads a unit of a `reprocess` job: an object of the new layout (its lines, of
/// the day its name gives), or an object of the error output (its records,
/// replayed). Never split: the unit at offset 0 reads the whole object. Offsets
/// are in the decompressed stream.
fn read_stored(
    spec: &ReprocessSpec,
    unit: &UnitSpec,
    file: impl Read,
    sink: &mut Sink<'_, '_>,
    stager: &mut Stager,
    stats: &mut Stats,
) -> io::Result<()> {
    if !reads_whole_file(unit, stats) {
        return Ok(());
    }
    let fail = |what: &str, at: u64, e: &dyn std::fmt::Display| source_failure(unit, what, at, e);
    let replay = crate::reprocess::is_error_output(&unit.file);
    let object = if replay {
        None
    } else {
        let o = crate::reprocess::parse_object_key(&unit.file, spec.source_layout).ok_or_else(
            || {
                io::Error::other(format!(
                    "{}: not an object of layout {}",
                    unit.file, spec.source_layout
                ))
            },
        )?;
        Some((
            partition_head(o.partition),
            o.day,
            o.day.parse::<u32>().unwrap_or(0),
        ))
    };
    let mut lines = match crate::core::newstore::open_object(file) {
        Ok(r) => r,
        Err(crate::core::newstore::StoreError::Io { source, .. }) if is_fault(&source) => {
            return Err(fail("cannot read", 0, &source));
        }
        Err(e) => {
            unreadable(
                stats,
                unit,
                0,
                unit.file_size,
                format!("object unreadable: {e}"),
            );
            return Ok(());
        }
    };
    let mut line = Vec::new();
    let mut at = 0u64;
    let mut records = 0u64;
    loop {
        line.clear();
        let n = match (&mut lines)
            .take(MAX_STORED_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
        {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if is_fault(&e) => return Err(fail("cannot read", at, &e)),
            Err(e) => {
                unreadable(
                    stats,
                    unit,
                    at,
                    unit.file_size.max(at),
                    format!("object unreadable at decompressed offset {at}: {e}"),
                );
                break;
            }
        };
        let offset = at;
        at += n as u64;
        if line.last() == Some(&b'\n') {
            line.pop();
        } else if n > MAX_STORED_LINE {
            unreadable(
                stats,
                unit,
                offset,
                unit.file_size.max(offset),
                format!(
                    "line at decompressed offset {offset} is longer than {MAX_STORED_LINE} bytes"
                ),
            );
            break;
        }
        records += 1;
        match object {
            Some((partition, day, day_num)) => {
                if !sink.selected(stats, sink.ctx.selection.classify_day(day_num)) {
                    continue;
                }
                let (doc_id, json) = match memchr::memchr(b'\t', &line) {
                    Some(t) => (&line[..t], &line[t + 1..]),
                    None => (&line[..0], &line[..]),
                };
                let input = Input {
                    file: &unit.file,
                    offset,
                    key: doc_id,
                    value: json,
                    kind: Kind::Stored { day },
                    origin: Origin::Stored {
                        partition,
                        doc_id,
                        json,
                    },
                };
                if memchr::memchr(b'\t', &line).is_none() {
                    *stats
                        .changes
                        .newly_rejected
                        .entry("invalid_key".into())
                        .or_default() += 1;
                    sink.reject(
                        stager,
                        stats,
                        &input,
                        "invalid_key",
                        "line has no tab after the doc id",
                    )?;
                } else {
                    sink.take(stager, stats, &input)?;
                }
            }
            None => {
                let rec: ErrorRecord = match serde_json::from_slice(&line) {
                    Ok(r) => r,
                    Err(e) => {
                        unreadable(
                            stats,
                            unit,
                            offset,
                            n as u64,
                            format!("error output line at decompressed offset {offset} is not an error record: {e}"),
                        );
                        continue;
                    }
                };
                let (key, value) = match (rec.key(), rec.value()) {
                    (Ok(k), Ok(v)) => (k, v),
                    _ => {
                        unreadable(
                            stats,
                            unit,
                            offset,
                            n as u64,
                            format!("error record at decompressed offset {offset} has bytes that are not base64"),
                        );
                        continue;
                    }
                };
                let class = match rec.day.as_deref().map(str::parse::<u32>) {
                    Some(Ok(d)) => sink.ctx.selection.classify_day(d),
                    Some(Err(_)) => DayClass::Selected,
                    None => sink.ctx.selection.classify(&key),
                };
                if !sink.selected(stats, class) {
                    continue;
                }
                let kind = match (rec.day.as_deref(), rec.received_ms) {
                    (None, _) => Kind::Legacy,
                    (Some(day), None) => Kind::Stored { day },
                    (Some(day), Some(received_ms)) => Kind::Submission { day, received_ms },
                };
                let input = Input {
                    file: &rec.file,
                    offset: rec.offset,
                    key: &key,
                    value: &value,
                    kind,
                    origin: Origin::Replayed {
                        reason: &rec.reason,
                    },
                };
                sink.take(stager, stats, &input)?;
            }
        }
    }
    (sink.ctx.on_progress)(unit.file_size, records);
    Ok(())
}

/// Reads a unit of an `ingest` job: one raw log of the live server, whole. Each
/// submission is judged on the UTC day it was received; bytes that are not a
/// record (a torn tail, damage) are `unreadable`, with their offset and length.
fn read_raw_log(
    unit: &UnitSpec,
    file: impl Read,
    sink: &mut Sink<'_, '_>,
    stager: &mut Stager,
    stats: &mut Stats,
) -> io::Result<()> {
    use crate::core::rawlog::{RawItem, RawLogError, RawLogReader, RawVersion};
    if !reads_whole_file(unit, stats) {
        return Ok(());
    }
    let name = unit.file.rsplit('/').next().unwrap_or(&unit.file);
    let mut log = RawLogReader::new(
        io::BufReader::with_capacity(1 << 20, file),
        RawVersion::from_file_name(name),
    );
    let mut records = 0u64;
    let mut day = String::new();
    loop {
        match log.next_item() {
            Ok(Some(RawItem::Record(rec))) => {
                records += 1;
                crate::ingest::utc_day(rec.timestamp_ms, &mut day);
                let input = Input {
                    file: &unit.file,
                    offset: rec.offset,
                    key: &rec.path,
                    value: &rec.body,
                    kind: Kind::Submission {
                        day: &day,
                        received_ms: rec.timestamp_ms,
                    },
                    origin: Origin::Legacy,
                };
                sink.take(stager, stats, &input)?;
            }
            Ok(Some(RawItem::Skipped { offset, len })) => unreadable(
                stats,
                unit,
                offset,
                offset + len,
                format!("{len} bytes at offset {offset} are not a raw log record"),
            ),
            Ok(None) => break,
            Err(RawLogError::Io { offset, source }) if is_fault(&source) => {
                return Err(source_failure(unit, "cannot read", offset, &source));
            }
            Err(RawLogError::Io { offset, source }) => {
                unreadable(
                    stats,
                    unit,
                    offset,
                    unit.file_size.max(offset),
                    format!("raw log unreadable: {source}"),
                );
                break;
            }
        }
    }
    (sink.ctx.on_progress)(unit.file_size, records);
    Ok(())
}

/// Longest line of a stored object read (as the new store's readers).
const MAX_STORED_LINE: usize = crate::core::newstore::DEFAULT_MAX_LINE;

/// Whether this unit reads its file: files that cannot be split (text dumps, the
/// new layout's objects, raw logs) are read whole by their unit at offset 0, which
/// counts the file's bytes; the other units of such a file read nothing.
fn reads_whole_file(unit: &UnitSpec, stats: &mut Stats) -> bool {
    if unit.start != 0 {
        return false;
    }
    stats.bytes_in += unit.file_size;
    true
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
    stager: &mut Stager,
    stats: &mut Stats,
) -> io::Result<()> {
    let fail = |e: &dyn std::error::Error, at: u64| source_failure(unit, "cannot read", at, &e);
    let mut reader = match SeqReader::open_split(file, unit.start, unit.end) {
        Ok(r) => r,
        Err(e) if is_fault(&e) => return Err(fail(&e, unit.start)),
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
            Err(e) if is_fault(&e) => return Err(fail(&e, e.offset())),
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
                    Err(e2) if is_fault(&e2) => return Err(fail(&e2, at)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    struct MemWriter(Arc<Mutex<Vec<u8>>>);

    impl Write for MemWriter {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl ObjectWriter for MemWriter {
        fn commit(self: Box<Self>) -> io::Result<u64> {
            Ok(self.0.lock().unwrap().len() as u64)
        }
    }

    /// Pushes `lines` (partition index, or None for the error output) through a
    /// stager and checks what it staged against a plain model: each partition's
    /// pieces, in order, hold exactly its lines in order; pieces tile the file; the
    /// CRC is the file's; and the arena never passes the budget (or half of it plus
    /// the line that did not fit).
    fn check(lines: &[(Option<u8>, usize)], budget: u64, piece_max: u64, codec: PieceCodec) {
        let file = Arc::new(Mutex::new(Vec::new()));
        let mut st = Stager::new(Box::new(MemWriter(file.clone())), budget, piece_max, codec);
        let mut want: BTreeMap<String, (Vec<u8>, u64)> = BTreeMap::new();
        for (n, &(part, len)) in lines.iter().enumerate() {
            // Distinct bytes per line, so a misplaced range cannot go unnoticed.
            let line: Vec<u8> = (0..len).map(|i| (n * 31 + i) as u8).collect();
            let name = part.map(|p| format!("p{p}")).unwrap_or_default();
            match part {
                Some(_) => st.push(&name, &line).unwrap(),
                None => st.push_error(&line).unwrap(),
            }
            let w = want.entry(name).or_default();
            w.0.extend_from_slice(&line);
            w.1 += 1;
            let bound = budget.max(budget / 2 + len as u64);
            assert!(
                st.arena.len() as u64 <= bound,
                "arena {} > {bound}",
                st.arena.len()
            );
            assert_eq!(
                st.total,
                st.parts.values().map(|b| b.bytes).sum::<u64>() + st.errors.bytes
            );
        }
        let (sorted, index, crc) = st.finish().unwrap();
        let file = file.lock().unwrap();
        assert_eq!(crc, crc32fast::hash(&file));
        // The index closes the file, and lists the pieces sorted by partition.
        assert_eq!(index.offset + index.len, file.len() as u64);
        assert_eq!(index.pieces, sorted.len() as u64);
        assert_eq!(
            index::encode(&sorted),
            &file[index.offset as usize..],
            "the index is the sorted pieces"
        );
        // Back in write order (by offset) to check they tile the file.
        let mut pieces = sorted.clone();
        pieces.sort_by_key(|p| p.offset);
        let mut in_order = pieces.clone();
        index::sort(&mut in_order);
        assert_eq!(in_order, sorted, "the sort keeps a partition's write order");
        let file = &file[..index.offset as usize];
        let mut got: BTreeMap<String, (Vec<u8>, u64)> = BTreeMap::new();
        let mut at = 0;
        for p in &pieces {
            assert_eq!(p.offset, at, "pieces tile the file");
            at += p.len;
            let stored = &file[p.offset as usize..(p.offset + p.len) as usize];
            let raw = match p.codec {
                PieceCodec::Raw => stored.to_vec(),
                PieceCodec::Lz4 => lz4_flex::block::decompress_size_prepended(stored).unwrap(),
            };
            assert_eq!(raw.len() as u64, p.raw_bytes);
            assert_eq!(p.kind == PieceKind::Errors, p.partition.is_empty());
            let g = got.entry(p.partition.clone()).or_default();
            g.0.extend_from_slice(&raw);
            g.1 += p.records;
        }
        assert_eq!(at, file.len() as u64);
        assert_eq!(got, want);
    }

    #[test]
    fn cuts_and_compaction_keep_every_line_in_order() {
        // Many partitions over a small budget: cut and compacted again and again.
        let lines: Vec<(Option<u8>, usize)> = (0..2000)
            .map(|i: usize| {
                let part = if i % 13 == 0 {
                    None
                } else {
                    Some((i * 7 % 11) as u8)
                };
                (part, 1 + i * 37 % 300)
            })
            .collect();
        for codec in [PieceCodec::Raw, PieceCodec::Lz4] {
            check(&lines, 4096, 1500, codec);
            check(&lines, 1 << 20, 1 << 20, codec);
        }
        // A line larger than the whole budget.
        check(
            &[(Some(1), 10), (Some(2), 5000), (Some(1), 10)],
            1000,
            100_000,
            PieceCodec::Raw,
        );
    }

    /// A unit read from a local text dump, staged on local disk: the dropped names
    /// that reach the manifest are the decoded ones, one entry however the payloads
    /// spelled them, and they survive the manifest's JSON.
    #[test]
    fn manifest_counts_dropped_names_decoded() {
        use crate::core::rowkey;
        use crate::source::local::LocalSource;
        use crate::store::local::LocalStore;
        const REV: &str = "http://hg.mozilla.org/releases/mozilla-aurora/rev/a55c55edf302";
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let mut dump = Vec::new();
        for (n, hists) in [
            r#"{"CAF\u00c9_MS":{},"q\"b\\s":{}}"#,
            r#"{"CAFÉ_MS":{},"MS_\ud83d\ude00":{}}"#,
            r#"{"q\u0022b\u005cs":{},"MS_😀":{}}"#,
        ]
        .into_iter()
        .enumerate()
        {
            let id = format!("17caa68c-25f5-450a-9cce-7d31318846d{n}");
            dump.extend_from_slice(&rowkey::build("20131011", &id));
            dump.push(b'\t');
            dump.extend_from_slice(
                format!(r#"{{"ver":1,"info":{{"revision":"{REV}"}},"histograms":{hists}}}"#)
                    .as_bytes(),
            );
            dump.push(b'\n');
        }
        std::fs::write(src.join("dump.txt"), &dump).unwrap();
        let source = LocalSource::new(&src).unwrap();
        let staging = LocalStore::new(dir.path().join("staging")).unwrap();
        let selection = Selection::default();
        let ctx = UnitCtx {
            mappings: Mappings::embedded().unwrap(),
            source: &source,
            staging: &staging,
            job: "job",
            group: "group",
            selection: &selection,
            filter: None,
            buffer_size: 1 << 20,
            piece_max: 1 << 20,
            on_progress: &|_, _| {},
            reprocess: None,
            ingest: false,
        };
        let unit = UnitSpec {
            file: "dump.txt".into(),
            start: 0,
            end: dump.len() as u64,
            file_size: dump.len() as u64,
        };
        let m = process(&ctx, &unit).unwrap();
        assert_eq!(m.stats.records_out, 3, "{:?}", m.stats);
        let want: BTreeMap<String, u64> = [("CAFÉ_MS", 2), ("MS_😀", 2), ("q\"b\\s", 2)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(m.stats.histograms_dropped, want);
        // The manifest as staged: UTF-8 JSON strings that read back as the names.
        let (_, manifest_key) = unit_keys("job", "group", &unit);
        let stored = staging.get(&manifest_key).unwrap().unwrap();
        let text = std::str::from_utf8(&stored).unwrap();
        assert!(text.contains(r#""CAFÉ_MS":2"#), "{text}");
        assert!(text.contains(r#""q\"b\\s":2"#), "{text}");
        let back: UnitManifest = serde_json::from_slice(&stored).unwrap();
        assert_eq!(back.stats, m.stats);
    }

    proptest! {
        #[test]
        fn staged_pieces_match_the_lines(
            lines in prop::collection::vec((prop::option::weighted(0.9, 0u8..8), 0usize..400), 0..300),
            budget in 1u64..3000,
            piece_max in 1u64..4000,
            lz4 in any::<bool>(),
        ) {
            let codec = if lz4 { PieceCodec::Lz4 } else { PieceCodec::Raw };
            check(&lines, budget, piece_max, codec);
        }
    }
}
