//! `--deep`: every source record read again and compared with the store.
//!
//! A group's units go through the export's own unit code ([`unit::process`]) into
//! a private staging in a temporary local directory, so the lines are the very
//! bytes the export would write, in its order: a partition's lines are its pieces in
//! unit order. Each partition is then compared, line by line, with the objects the
//! store's listing shows for it (the manifests' lists are not used), decompressed
//! as they stream. Memory is the export's per worker (one unit buffer) plus one
//! decoder per partition being compared; disk, one group's staging. Only a partition
//! that differs is read a second time, into a map of its doc ids ([`super::diff`]).
//!
//! With `--all-writers` the store's objects come from anyone in any order, and a
//! day's partition can take records from several folders: each partition is then
//! summed into an order-free fingerprint on both sides (count and two 64-bit sums of
//! line hashes, about 40 bytes per partition of the selected days), and only the
//! partitions whose fingerprints differ are read again for their doc ids.

use super::bookkeeping::{GroupInfo, JobView, SourceListing};
use super::diff::{DiffBuilder, LineDiff};
use super::{
    key_day, partition_day, partition_of, sampled, FaultKind, Findings, PartitionReport, Sampled,
    Verification, VerifyOptions,
};
use crate::core::mappings::Mappings;
use crate::core::newstore::{open_object, StoreLine, StoreLineReader};
use crate::export::errors::ErrorRecord;
use crate::export::manifest::{PieceCodec, PieceKind, Stats, UnitManifest, BOOKKEEPING};
use crate::export::plan::{self, Selection};
use crate::export::unit::{self, UnitCtx};
use crate::source::{FileEntry, Source};
use crate::store::local::LocalStore;
use crate::store::Store;
use anyhow::Context as _;
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::hash::BuildHasher;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;

/// A temporary directory removed on drop: the private staging of the re-read.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> io::Result<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let p =
            std::env::temp_dir().join(format!("backfill-verify-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where one piece of a partition (or of the error output) lies in the staging:
/// 24 bytes, the unit's file name shared (a production-size folder has millions of
/// pieces: 2,000 units × 3,000 partitions).
#[derive(Clone, Debug)]
struct PieceLoc {
    file: std::sync::Arc<PathBuf>,
    offset: u64,
    len: u64,
}

/// One folder's records as the export makes them, staged in a temporary store.
struct Staged {
    stats: Stats,
    partitions: BTreeMap<String, Vec<PieceLoc>>,
    errors: Vec<PieceLoc>,
    dir: PathBuf,
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reads and converts a folder's units (in parallel on the current pool) into the
/// temporary staging, exactly as the export would.
#[allow(clippy::too_many_arguments)]
fn stage(
    mappings: &Mappings,
    source: &dyn Source,
    tmp: &LocalStore,
    opts: &VerifyOptions,
    job: &str,
    group: &str,
    selection: &Selection,
    files: &[FileEntry],
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<Staged> {
    let eo = &opts.export;
    let units = plan::units(files, eo.split_size);
    let on_progress = |bytes: u64, _records: u64| progress.inc(bytes);
    let ctx = UnitCtx {
        mappings,
        source,
        staging: tmp,
        job,
        group,
        selection,
        filter: eo.filter.as_ref().map(|f| &f.0),
        buffer_size: eo.buffer_size,
        piece_max: (eo.target_size / 8).max(1),
        on_progress: &on_progress,
        reprocess: eo.reprocess.as_ref(),
        ingest: eo.ingest,
    };
    let manifests: Vec<UnitManifest> = units
        .par_iter()
        .with_max_len(1)
        .map(|u| {
            unit::process(&ctx, u)
                .with_context(|| format!("re-reading {} [{}, {})", u.file, u.start, u.end))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut s = Staged {
        stats: Stats::default(),
        partitions: BTreeMap::new(),
        errors: Vec::new(),
        dir: tmp
            .root()
            .join(crate::export::manifest::staging_prefix(job, group)),
    };
    for m in &manifests {
        s.stats.add(&m.stats);
        let file = std::sync::Arc::new(tmp.root().join(&m.pieces_key));
        let index = m
            .index
            .as_ref()
            .context("a unit staged here has a piece index")?;
        for p in &crate::export::index::read_all(tmp, &m.pieces_key, index)? {
            anyhow::ensure!(
                p.codec == PieceCodec::Raw,
                "a local staging holds raw pieces"
            );
            let loc = PieceLoc {
                file: file.clone(),
                offset: p.offset,
                len: p.len,
            };
            match p.kind {
                PieceKind::Records => s
                    .partitions
                    .entry(p.partition.clone())
                    .or_default()
                    .push(loc),
                PieceKind::Errors => s.errors.push(loc),
            }
        }
    }
    Ok(s)
}

/// The bytes of several pieces, one after the other.
struct Pieces {
    pieces: Vec<PieceLoc>,
    next: usize,
    cur: Option<io::Take<File>>,
}

impl Pieces {
    fn reader(pieces: &[PieceLoc]) -> BufReader<Pieces> {
        BufReader::with_capacity(
            1 << 16,
            Pieces {
                pieces: pieces.to_vec(),
                next: 0,
                cur: None,
            },
        )
    }
}

impl Read for Pieces {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(c) = &mut self.cur {
                let n = c.read(buf)?;
                if n > 0 {
                    return Ok(n);
                }
                self.cur = None;
            }
            let Some(p) = self.pieces.get(self.next) else {
                return Ok(0);
            };
            self.next += 1;
            let mut f = File::open(p.file.as_path())?;
            f.seek(SeekFrom::Start(p.offset))?;
            self.cur = Some(f.take(p.len));
        }
    }
}

/// Objects that could not be read, with why: (key, error).
type Failures = Vec<(String, String)>;

/// Lines of the source side of a partition.
fn source_lines(pieces: &[PieceLoc]) -> StoreLineReader<BufReader<Pieces>> {
    StoreLineReader::new(Pieces::reader(pieces))
}

/// Lines of a list of objects, in order, decompressed as they stream; an object
/// that cannot be read or decompressed ends early and is noted in `failures`.
struct DestLines<'a> {
    dest: &'a dyn Store,
    keys: Vec<&'a str>,
    next: usize,
    cur: Option<(&'a str, StoreLineReader<Box<dyn BufRead + 'static>>)>,
    failures: Vec<(String, String)>,
}

impl<'a> DestLines<'a> {
    fn new(dest: &'a dyn Store, keys: Vec<&'a str>) -> Self {
        DestLines {
            dest,
            keys,
            next: 0,
            cur: None,
            failures: Vec::new(),
        }
    }
}

impl Iterator for DestLines<'_> {
    type Item = StoreLine;

    fn next(&mut self) -> Option<StoreLine> {
        loop {
            if let Some((key, r)) = &mut self.cur {
                match r.next_line() {
                    Ok(Some(l)) => return Some(l),
                    Ok(None) => self.cur = None,
                    Err(e) => {
                        self.failures.push((key.to_string(), e.to_string()));
                        self.cur = None;
                    }
                }
            }
            let key = *self.keys.get(self.next)?;
            self.next += 1;
            match self.dest.open(key) {
                Ok(r) => match open_object(r) {
                    Ok(b) => self.cur = Some((key, StoreLineReader::new(b))),
                    Err(e) => self.failures.push((key.to_string(), e.to_string())),
                },
                Err(e) => self
                    .failures
                    .push((key.to_string(), format!("cannot open: {e}"))),
            }
        }
    }
}

/// Compares one partition: line by line first (nothing kept); a difference, or an
/// object that cannot be read, and both sides are read again into a doc-id map.
fn compare_partition(
    dest: &dyn Store,
    pieces: &[PieceLoc],
    keys: &[&str],
    cap: usize,
) -> anyhow::Result<(LineDiff, Vec<(String, String)>)> {
    let mut src = source_lines(pieces);
    let mut dst = DestLines::new(dest, keys.to_vec());
    let (mut ns, mut nd) = (0u64, 0u64);
    let mut same = true;
    loop {
        match (src.next_line()?, dst.next()) {
            (None, None) => break,
            (Some(a), Some(b)) => {
                ns += 1;
                nd += 1;
                if a.doc_id != b.doc_id || a.json != b.json {
                    same = false;
                    break;
                }
            }
            _ => {
                same = false;
                break;
            }
        }
    }
    if same && dst.failures.is_empty() {
        let d = LineDiff {
            source_records: ns,
            dest_records: nd,
            ..Default::default()
        };
        return Ok((d, Vec::new()));
    }
    let mut b = DiffBuilder::default();
    let mut src = source_lines(pieces);
    while let Some(l) = src.next_line()? {
        b.source(&l.doc_id, &l.json);
    }
    let mut dst = DestLines::new(dest, keys.to_vec());
    for l in &mut dst {
        b.dest(&l.doc_id, &l.json);
    }
    Ok((b.finish(cap), dst.failures))
}

/// Up to five ids of a list, for a one-line message.
fn some_ids(l: &super::diff::IdList) -> String {
    let mut s: Vec<&str> = l.ids.iter().take(5).map(String::as_str).collect();
    if l.ids.len() > 5 || l.capped {
        s.push("…");
    }
    s.join(", ")
}

fn describe(d: &LineDiff) -> String {
    let mut parts = Vec::new();
    for (what, l) in [
        ("missing", &d.missing),
        ("extra (doc id not in the source)", &d.extra),
        ("duplicated (more often than in the source)", &d.duplicated),
        ("with other content", &d.content),
    ] {
        if l.count > 0 {
            parts.push(format!("{} {what} ({})", l.count, some_ids(l)));
        }
    }
    format!(
        "the source gives {} records, the store holds {}: {}",
        d.source_records,
        d.dest_records,
        parts.join("; ")
    )
}

/// What identifies a rejected record: where it was read and a 128-bit hash of its
/// original bytes (the bytes themselves, base64 of whole payloads, would make a
/// group's error records cost their size twice in memory).
type ErrorId = (String, u64, u128);

/// The identity of an error record (the tool version may differ; the reason is
/// compared apart).
fn error_identity(r: &ErrorRecord) -> ErrorId {
    const A: foldhash::quality::FixedState = foldhash::quality::FixedState::with_seed(0xe77_0001);
    const B: foldhash::quality::FixedState = foldhash::quality::FixedState::with_seed(0xe77_0002);
    let bytes = (r.key_b64.as_str(), r.value_b64.as_str());
    let h = ((A.hash_one(bytes) as u128) << 64) | B.hash_one(bytes) as u128;
    (r.file.clone(), r.offset, h)
}

/// Calls `f` with each record of error-output objects (JSON lines), streamed.
fn each_error(
    dest: &dyn Store,
    keys: &[&str],
    failures: &mut Vec<(String, String)>,
    f: &mut dyn FnMut(ErrorRecord),
) {
    for key in keys {
        let r = match dest.open(key) {
            Ok(r) => r,
            Err(e) => {
                failures.push((key.to_string(), format!("cannot open: {e}")));
                continue;
            }
        };
        let r = match open_object(r) {
            Ok(r) => r,
            Err(e) => {
                failures.push((key.to_string(), e.to_string()));
                continue;
            }
        };
        for (i, line) in r.split(b'\n').enumerate() {
            match line {
                Ok(l) => match serde_json::from_slice::<ErrorRecord>(&l) {
                    Ok(rec) => f(rec),
                    Err(e) => {
                        failures.push((key.to_string(), format!("line {}: {e}", i + 1)));
                        break;
                    }
                },
                Err(e) => {
                    failures.push((key.to_string(), e.to_string()));
                    break;
                }
            }
        }
    }
}

/// Compares the rejected records of the re-read with the group's error output.
/// Error records are few (they are rejected records), so both sides are held as
/// identities and reasons, never their payloads twice.
fn compare_errors(
    dest: &dyn Store,
    staged: &[PieceLoc],
    keys: &[&str],
    what: &str,
    findings: &Findings,
) -> anyhow::Result<()> {
    let mut src: BTreeMap<ErrorId, Vec<String>> = BTreeMap::new();
    let mut r = Pieces::reader(staged);
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let rec: ErrorRecord =
            serde_json::from_slice(&line).context("reading back a staged error record")?;
        let day = rec
            .key()
            .ok()
            .and_then(|k| key_day(&k))
            .unwrap_or_else(|| "undated".into());
        findings.day(&day, |row| {
            *row.rejected.get_or_insert(0) += 1;
            *row.source_records.get_or_insert(0) += 1;
        });
        src.entry(error_identity(&rec))
            .or_default()
            .push(rec.reason);
    }
    let mut failures = Vec::new();
    let mut dst: BTreeMap<ErrorId, Vec<String>> = BTreeMap::new();
    each_error(dest, keys, &mut failures, &mut |rec| {
        dst.entry(error_identity(&rec))
            .or_default()
            .push(rec.reason)
    });
    for (key, e) in failures {
        findings.fault(
            FaultKind::ObjectUnreadable,
            None,
            format!("error-output object {key} cannot be read: {e}"),
        );
    }
    let (mut missing, mut reason, mut extra) = (Vec::new(), Vec::new(), 0u64);
    for (id, reasons) in &src {
        match dst.get(id) {
            None => missing.push(format!("{} offset {}", id.0, id.1)),
            Some(got) => {
                let (mut a, mut b) = (reasons.clone(), got.clone());
                a.sort();
                b.sort();
                if a != b {
                    reason.push(format!(
                        "{} offset {}: {} in the store, {} now",
                        id.0,
                        id.1,
                        b.join("/"),
                        a.join("/")
                    ));
                }
            }
        }
    }
    for (id, v) in &dst {
        if !src.contains_key(id) {
            extra += v.len() as u64;
        }
    }
    if !missing.is_empty() || !reason.is_empty() || extra > 0 {
        let show = |v: &[String]| {
            let mut s: Vec<&str> = v.iter().take(5).map(String::as_str).collect();
            if v.len() > 5 {
                s.push("…");
            }
            s.join("; ")
        };
        findings.fault(
            FaultKind::ErrorOutputDiffers,
            None,
            format!(
                "{what}: {} rejected records are not in the error output ({}), {} have another reason ({}), {extra} error records match no rejected record",
                missing.len(),
                show(&missing),
                reason.len(),
                show(&reason)
            ),
        );
    }
    Ok(())
}

/// Fields of two counts that differ, as `name: a vs b`.
fn stats_differences(now: &Stats, recorded: &Stats) -> Vec<String> {
    let mut out = Vec::new();
    let mut cmp = |name: &str, a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| {
        let (a, b) = (format!("{a:?}"), format!("{b:?}"));
        if a != b {
            out.push(format!("{name} {a} now, {b} in the manifest"));
        }
    };
    cmp("records_in", &now.records_in, &recorded.records_in);
    cmp("records_out", &now.records_out, &recorded.records_out);
    cmp("records_error", &now.records_error, &recorded.records_error);
    cmp(
        "records_filtered",
        &now.records_filtered,
        &recorded.records_filtered,
    );
    cmp(
        "errors_by_reason",
        &now.errors_by_reason,
        &recorded.errors_by_reason,
    );
    cmp(
        "histograms_dropped",
        &now.histograms_dropped,
        &recorded.histograms_dropped,
    );
    let (mut a, mut b) = (now.unreadable.clone(), recorded.unreadable.clone());
    a.sort();
    b.sort();
    cmp("unreadable", &a, &b);
    out
}

/// Records a compared partition: the day's counts, the report, a fault if it differs.
#[allow(clippy::too_many_arguments)]
fn record_partition(
    findings: &Findings,
    partition: &str,
    group: Option<&str>,
    objects: u64,
    diff: LineDiff,
    failures: Vec<(String, String)>,
    what: &str,
) {
    let day = partition_day(partition).unwrap_or("unknown");
    findings.day(day, |r| {
        *r.source_records.get_or_insert(0) += diff.source_records;
        *r.written.get_or_insert(0) += diff.source_records;
        *r.dest_records.get_or_insert(0) += diff.dest_records;
        r.differences += diff.differences();
    });
    for (key, e) in failures {
        findings.fault(
            FaultKind::ObjectUnreadable,
            Some(day),
            format!("object {key} cannot be read: {e}"),
        );
    }
    if diff.differences() > 0 {
        findings.fault(
            FaultKind::RecordsDiffer,
            Some(day),
            format!("partition {partition} ({what}): {}", describe(&diff)),
        );
    }
    findings.partition(PartitionReport {
        partition: partition.to_string(),
        group: group.map(str::to_string),
        objects,
        diff,
    });
}

/// `--deep` over the job's committed groups (a sample of them with `--sample`).
#[allow(clippy::too_many_arguments)]
pub fn own_job(
    mappings: &Mappings,
    source: &dyn Source,
    dest: &dyn Store,
    opts: &VerifyOptions,
    view: &JobView,
    findings: &Findings,
    v: &mut Verification,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    let groups: Vec<&GroupInfo> = view
        .groups
        .iter()
        .filter(|g| opts.sample.is_none_or(|f| sampled(&g.group, f)))
        .collect();
    if let Some(f) = opts.sample {
        v.sample = Some(Sampled {
            fraction: f,
            by: "groups".into(),
            of: view.groups.len() as u64,
            selected: groups.iter().map(|g| g.dir.clone()).collect(),
        });
    }
    let tmp_dir = TempDir::new().context("creating a temporary staging")?;
    let tmp = LocalStore::new(&tmp_dir.0)?;
    let empty = super::bookkeeping::GroupObjects::default();
    let mut total_stats = Stats::default();
    for g in &groups {
        let Some(files) = view.source.folders.get(&g.dir) else {
            continue; // already a finding: the folder is gone from the source
        };
        progress.inc_length(files.iter().map(|f| f.size).sum());
        let staged = stage(
            mappings,
            source,
            &tmp,
            opts,
            &view.job,
            &g.group,
            &g.selection,
            files,
            progress,
        )?;
        let what = format!("folder {:?}, group {}", g.dir, g.group);
        v.groups_deep += 1;
        total_stats.add(&staged.stats);
        let diffs = stats_differences(&staged.stats, &g.stats);
        if !diffs.is_empty() {
            findings.fault(
                FaultKind::CountsDiffer,
                plan::folder_day(&g.dir).map(|d| d.to_string()).as_deref(),
                format!("{what}: {}", diffs.join("; ")),
            );
        }
        let objs = view.objects.get(&g.group).unwrap_or(&empty);
        let names: BTreeSet<&str> = staged
            .partitions
            .keys()
            .map(String::as_str)
            .chain(objs.partitions.keys().map(String::as_str))
            .collect();
        let names: Vec<&str> = names.into_iter().collect();
        let results: Vec<(&str, u64, LineDiff, Failures)> = names
            .par_iter()
            .with_max_len(1)
            .map(|p| {
                let pieces = staged.partitions.get(*p).map_or(&[][..], Vec::as_slice);
                let keys: Vec<&str> = objs
                    .partitions
                    .get(*p)
                    .map(|v| v.iter().map(|(_, k)| k.as_str()).collect())
                    .unwrap_or_default();
                let (d, f) = compare_partition(dest, pieces, &keys, opts.max_ids)?;
                Ok((*p, keys.len() as u64, d, f))
            })
            .collect::<anyhow::Result<_>>()?;
        for (p, n, d, f) in results {
            record_partition(findings, p, Some(&g.group), n, d, f, &what);
        }
        let error_keys: Vec<&str> = objs.errors.iter().map(|(_, k)| k.as_str()).collect();
        compare_errors(dest, &staged.errors, &error_keys, &what, findings)?;
    }
    v.source_stats = Some(total_stats);
    Ok(())
}

/// An order-free fingerprint of a multiset of lines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Fingerprint {
    count: u64,
    a: u64,
    b: u64,
}

impl Fingerprint {
    fn add(&mut self, doc_id: &[u8], json: &[u8]) {
        const A: foldhash::quality::FixedState =
            foldhash::quality::FixedState::with_seed(0xa11_0001);
        const B: foldhash::quality::FixedState =
            foldhash::quality::FixedState::with_seed(0xa11_0002);
        self.count += 1;
        self.a = self.a.wrapping_add(A.hash_one((doc_id, json)));
        self.b = self.b.wrapping_add(B.hash_one((doc_id, json)));
    }
}

/// The final dimension values a partition names (for `--filter`).
fn partition_finals(partition: &str) -> Vec<&str> {
    let mut segs: Vec<&str> = partition.split('/').collect();
    let name = segs.pop().unwrap_or_default();
    let stem = crate::reprocess::strip_layout(name).unwrap_or(name);
    segs.extend(stem.splitn(2, '.'));
    segs
}

/// Partitions whose records differ and are read again for doc ids, at most.
const DETAILED_PARTITIONS: usize = 50;

/// `--deep --all-writers`: every object of the selected days, whoever wrote it,
/// against every source record of those days. Needs no `_backfill/`.
#[allow(clippy::too_many_arguments)]
pub fn all_writers(
    mappings: &Mappings,
    source: &dyn Source,
    dest: &dyn Store,
    opts: &VerifyOptions,
    listing: &SourceListing,
    findings: &Findings,
    v: &mut Verification,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    let eo = &opts.export;
    let job = &v.job.clone();
    // With --sample, whole days are sampled: the folders read are those that can
    // hold records of a sampled day, and only those days' partitions are compared.
    let days_of_folders: BTreeSet<u32> = listing
        .folders
        .keys()
        .filter_map(|d| plan::folder_day(d))
        .collect();
    let day_wanted: Box<dyn Fn(&str) -> bool + Sync> = match opts.sample {
        None => Box::new(|d: &str| eo.window.contains(d.parse().unwrap_or(0))),
        Some(f) => {
            let chosen: BTreeSet<String> = days_of_folders
                .iter()
                .map(|d| d.to_string())
                .filter(|d| sampled(d, f))
                .collect();
            v.sample = Some(Sampled {
                fraction: f,
                by: "days".into(),
                of: days_of_folders.len() as u64,
                selected: chosen.iter().cloned().collect(),
            });
            let window = eo.window;
            Box::new(move |d: &str| chosen.contains(d) && window.contains(d.parse().unwrap_or(0)))
        }
    };
    let folder_wanted = |dir: &str| -> bool {
        let Some(day) = plan::folder_day(dir) else {
            return true;
        };
        (0..=2 * eo.folder_margin as i64).any(|k| {
            let d = plan::shift_day(day, k - eo.folder_margin as i64);
            day_wanted(&d.to_string())
        })
    };
    let folders: Vec<(&String, &Vec<FileEntry>)> = listing
        .folders
        .iter()
        .filter(|(d, _)| folder_wanted(d))
        .collect();
    progress.set_length(
        folders
            .iter()
            .flat_map(|(_, f)| f.iter())
            .map(|f| f.size)
            .sum(),
    );
    let selection = Selection {
        window: eo.window,
        covered: Vec::new(),
    };
    let tmp_dir = TempDir::new().context("creating a temporary staging")?;
    let tmp = LocalStore::new(&tmp_dir.0)?;

    // Source side: fingerprints per partition, and which folders fed each.
    let mut src: HashMap<String, (Fingerprint, Vec<usize>)> = HashMap::new();
    let mut total = Stats::default();
    for (i, (dir, files)) in folders.iter().enumerate() {
        let group = plan::group_id(dir);
        let staged = stage(
            mappings, source, &tmp, opts, job, &group, &selection, files, progress,
        )?;
        total.add(&staged.stats);
        v.groups_deep += 1;
        let sums: Vec<(&String, Fingerprint)> = staged
            .partitions
            .par_iter()
            .filter(|(p, _)| partition_day(p).is_some_and(&day_wanted))
            .map(|(p, pieces)| {
                let mut fp = Fingerprint::default();
                let mut r = source_lines(pieces);
                while let Some(l) = r.next_line()? {
                    fp.add(&l.doc_id, &l.json);
                }
                Ok((p, fp))
            })
            .collect::<anyhow::Result<_>>()?;
        for (p, fp) in sums {
            let e = src.entry(p.clone()).or_default();
            e.0.count += fp.count;
            e.0.a = e.0.a.wrapping_add(fp.a);
            e.0.b = e.0.b.wrapping_add(fp.b);
            e.1.push(i);
        }
        // Rejected records: counted by day (there is no job whose error output
        // they could be checked against).
        let mut r = Pieces::reader(&staged.errors);
        let mut line = Vec::new();
        loop {
            line.clear();
            if r.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            let rec: ErrorRecord = serde_json::from_slice(&line)?;
            let day = rec.key().ok().and_then(|k| key_day(&k));
            let day = day.unwrap_or_else(|| "undated".into());
            if day == "undated" || day_wanted(&day) {
                findings.day(&day, |row| {
                    *row.rejected.get_or_insert(0) += 1;
                    *row.source_records.get_or_insert(0) += 1;
                });
            }
        }
    }
    v.source_stats = Some(total);

    // Store side: every object of the wanted days' partitions.
    let mut objects: HashMap<String, Vec<String>> = HashMap::new();
    let book = format!("{BOOKKEEPING}/");
    let filter = eo.filter.as_ref().map(|f| &f.0);
    dest.list_each("", &mut |m| {
        if m.key.starts_with(&book) {
            return Ok(());
        }
        let Some(p) = partition_of(&m.key) else {
            return Ok(());
        };
        if !partition_day(p).is_some_and(&day_wanted) {
            return Ok(());
        }
        if filter.is_some_and(|f| !f.matches(&partition_finals(p))) {
            return Ok(());
        }
        objects.entry(p.to_string()).or_default().push(m.key);
        Ok(())
    })?;
    for keys in objects.values_mut() {
        keys.sort();
    }
    let names: BTreeSet<&str> = src
        .keys()
        .map(String::as_str)
        .chain(objects.keys().map(String::as_str))
        .collect();
    let names: Vec<&str> = names.into_iter().collect();
    let dest_sums: Vec<(&str, Fingerprint, Failures)> = names
        .par_iter()
        .with_max_len(1)
        .map(|p| {
            let keys: Vec<&str> = objects
                .get(*p)
                .map(|v| v.iter().map(String::as_str).collect())
                .unwrap_or_default();
            let mut fp = Fingerprint::default();
            let mut lines = DestLines::new(dest, keys);
            for l in &mut lines {
                fp.add(&l.doc_id, &l.json);
            }
            (*p, fp, lines.failures)
        })
        .collect();

    // Differing partitions are read again, at most DETAILED_PARTITIONS of them.
    let mut differing: Vec<&str> = Vec::new();
    let mut plain: Vec<(&str, LineDiff, Failures)> = Vec::new();
    for (p, fp, failures) in dest_sums {
        let s = src.get(p).map(|e| e.0.clone()).unwrap_or_default();
        if s == fp && failures.is_empty() {
            let d = LineDiff {
                source_records: s.count,
                dest_records: fp.count,
                ..Default::default()
            };
            plain.push((p, d, failures));
        } else if differing.len() < DETAILED_PARTITIONS {
            differing.push(p);
        } else {
            // Counts only: the doc ids are not looked for beyond the cap.
            let mut d = LineDiff {
                source_records: s.count,
                dest_records: fp.count,
                ..Default::default()
            };
            d.content.count = s.count.abs_diff(fp.count).max(1);
            plain.push((p, d, failures));
        }
    }
    let mut builders: HashMap<&str, DiffBuilder> = differing
        .iter()
        .map(|p| (*p, DiffBuilder::default()))
        .collect();
    let mut refeed: BTreeSet<usize> = BTreeSet::new();
    for p in &differing {
        if let Some((_, fs)) = src.get(*p) {
            refeed.extend(fs.iter().copied());
        }
    }
    for i in refeed {
        let (dir, files) = folders[i];
        let group = plan::group_id(dir);
        let staged = stage(
            mappings,
            source,
            &tmp,
            opts,
            job,
            &group,
            &selection,
            files,
            &indicatif::ProgressBar::hidden(),
        )?;
        for (p, b) in builders.iter_mut() {
            if let Some(pieces) = staged.partitions.get(*p) {
                let mut r = source_lines(pieces);
                while let Some(l) = r.next_line()? {
                    b.source(&l.doc_id, &l.json);
                }
            }
        }
    }
    for (p, d, f) in plain {
        let n = objects.get(p).map_or(0, |v| v.len() as u64);
        record_partition(findings, p, None, n, d, f, "all writers");
    }
    for (p, mut b) in builders {
        let keys: Vec<&str> = objects
            .get(p)
            .map(|v| v.iter().map(String::as_str).collect())
            .unwrap_or_default();
        let n = keys.len() as u64;
        let mut lines = DestLines::new(dest, keys);
        for l in &mut lines {
            b.dest(&l.doc_id, &l.json);
        }
        let failures = lines.failures;
        record_partition(
            findings,
            p,
            None,
            n,
            b.finish(opts.max_ids),
            failures,
            "all writers",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_ignore_order_and_see_every_change() {
        let fp = |lines: &[(&str, &str)]| {
            let mut f = Fingerprint::default();
            for (a, b) in lines {
                f.add(a.as_bytes(), b.as_bytes());
            }
            f
        };
        let base = fp(&[("a", "1"), ("b", "2"), ("b", "2")]);
        assert_eq!(base, fp(&[("b", "2"), ("a", "1"), ("b", "2")]));
        assert_ne!(base, fp(&[("a", "1"), ("b", "2")]));
        assert_ne!(base, fp(&[("a", "1"), ("b", "2"), ("b", "3")]));
        // The boundary between id and content is part of the line.
        assert_ne!(fp(&[("ab", "c")]), fp(&[("a", "bc")]));
    }

    #[test]
    fn finals_of_a_partition() {
        assert_eq!(
            partition_finals("saved_session/Firefox/nightly/22.0a1/20130226031002.20131011.v2.log"),
            vec![
                "saved_session",
                "Firefox",
                "nightly",
                "22.0a1",
                "20130226031002",
                "20131011"
            ]
        );
    }

    #[test]
    fn pieces_read_as_one_stream() {
        let dir = TempDir::new().unwrap();
        let f = dir.0.join("p");
        std::fs::write(&f, b"xxa\tb\nyyc\td\n").unwrap();
        let pieces = [
            PieceLoc {
                file: std::sync::Arc::new(f.clone()),
                offset: 2,
                len: 4,
            },
            PieceLoc {
                file: std::sync::Arc::new(f),
                offset: 8,
                len: 4,
            },
        ];
        let lines: Vec<(Vec<u8>, Vec<u8>)> = source_lines(&pieces)
            .map(|l| l.map(|l| (l.doc_id, l.json)).unwrap())
            .collect();
        assert_eq!(
            lines,
            vec![
                (b"a".to_vec(), b"b".to_vec()),
                (b"c".to_vec(), b"d".to_vec())
            ]
        );
        assert!(dir.0.exists());
    }
}
