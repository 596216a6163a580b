//! Assembly of a group: once every unit of a source folder is staged, each
//! partition's pieces are read in unit order then piece order and compressed into
//! objects of about the target size, one xz stream each; the error pieces likewise
//! into the error output; and the group manifest is written last: it is the commit
//! point. Staging is removed after the commit.
//!
//! An object is closed as soon as it holds at least the target size, so a partition
//! gets at most ceil(bytes / target) objects from a group, and pieces are cut at a
//! fraction of the target so objects overshoot it by little.

use super::index::{Merge, PieceAt};
use super::manifest::{
    errors_prefix, intent_key, manifest_key, staging_prefix, GroupManifest, Intent, ObjectEntry,
    PieceCodec, PieceKind, Stats, UnitManifest, UnitRef, FORMAT,
};
use super::plan::Selection;
use crate::store::{ObjectWriter, Pending, Store};
use sha2::Digest;
use std::collections::BinaryHeap;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Pieces of ready partitions assembly holds at most before it stops merging and
/// writes them (about 40 bytes each, so 5 MiB), largest partition first. A folder
/// under it (the benchmark's, every folder of a few hundred units) is merged whole
/// before the first object, as when every piece list was in memory; a larger one
/// is written in windows of partitions in name order, largest first in each.
pub const WINDOW_PIECES: usize = 1 << 17;

/// What assembly needs.
pub struct AssembleCtx<'a> {
    /// Destination.
    pub dest: &'a dyn Store,
    /// Where pieces were staged.
    pub staging: &'a dyn Store,
    /// Job id.
    pub job: &'a str,
    /// Target object size (uncompressed bytes).
    pub target_size: u64,
    /// xz preset of the objects.
    pub xz_preset: u32,
    /// The days exported.
    pub selection: &'a Selection,
    /// Whether this run lost the folder's lease to another run (its heartbeats
    /// stalled past the TTL): then it stops before committing.
    pub lease_lost: &'a (dyn Fn() -> bool + Sync),
    /// The committed group this one replaces (`--retry-unreadable`), if any.
    pub replaces: Option<&'a str>,
}

/// Object key for part `n` of `partition` written by this job and group.
pub fn object_key(partition: &str, job: &str, group: &str, n: usize) -> String {
    format!("{partition}.{job}-{group}-{n}.xz")
}

/// Objects written for one partition, each with what publishes it.
type Written = Vec<(ObjectEntry, Option<Pending>)>;

/// Counts and hashes what goes through to the destination.
struct Hashing {
    inner: Box<dyn ObjectWriter>,
    hasher: sha2::Sha256,
}

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the objects of one partition (or of the error output) from its pieces:
/// consecutive pieces are grouped into objects closed once they hold the target
/// size, and each object is compressed as one xz stream.
/// A partition's pieces cut into objects: each closed once it reaches `target`
/// uncompressed bytes.
fn parts(pieces: &[PieceAt], target: u64) -> Vec<&[PieceAt]> {
    let mut groups = Vec::new();
    let mut start = 0;
    let mut raw = 0;
    for (i, p) in pieces.iter().enumerate() {
        raw += p.raw_bytes;
        if raw >= target || i + 1 == pieces.len() {
            groups.push(&pieces[start..=i]);
            start = i + 1;
            raw = 0;
        }
    }
    groups
}

fn write_objects(
    ctx: &AssembleCtx<'_>,
    units: &[UnitManifest],
    partition: &str,
    pieces: &[PieceAt],
    key_for: &dyn Fn(usize) -> String,
) -> io::Result<Written> {
    let groups = parts(pieces, ctx.target_size);
    let mut out = Vec::with_capacity(groups.len());
    // This thread's read buffers from its previous partition, written over: a day
    // has thousands of partitions, and buffers of ever different sizes allocated
    // for each fragment the allocator's arenas.
    let (mut bytes, mut plain) = READ_BUFS.with(|b| b.take());
    for (n, group) in groups.into_iter().enumerate() {
        let key = key_for(n);
        let raw: u64 = group.iter().map(|p| p.raw_bytes).sum();
        let mut writer = Hashing {
            inner: ctx.dest.create(&key)?,
            hasher: sha2::Sha256::new(),
        };
        super::xz::with_encoder(|enc| -> io::Result<()> {
            enc.start(raw, ctx.xz_preset)?;
            for p in group {
                let pieces_key = &units[p.unit as usize].pieces_key;
                ctx.staging
                    .read_range_into(pieces_key, p.offset, p.len, &mut bytes)?;
                if p.codec == PieceCodec::Raw {
                    enc.write(&bytes, &mut writer)?;
                    continue;
                }
                plain.clear();
                plain.resize(p.raw_bytes as usize, 0);
                let n = lz4_flex::block::decompress_into(
                    bytes.get(4..).unwrap_or_default(),
                    &mut plain,
                )
                .map_err(|e| {
                    io::Error::other(format!("staged piece of {pieces_key} at {}: {e}", p.offset))
                })?;
                if n != plain.len() {
                    return Err(io::Error::other(format!(
                        "staged piece of {pieces_key} at {} holds {n} bytes, expected {}",
                        p.offset,
                        plain.len()
                    )));
                }
                enc.write(&plain, &mut writer)?;
            }
            enc.finish(&mut writer)
        })?;
        let sha256 = hex::encode(writer.hasher.finalize());
        let (bytes, pending) = writer.inner.finish()?;
        let entry = ObjectEntry {
            key,
            partition: partition.to_string(),
            records: group.iter().map(|p| p.records).sum(),
            bytes,
            raw_bytes: raw,
            sha256,
        };
        out.push((entry, pending));
    }
    READ_BUFS.with(|b| b.set((bytes, plain)));
    Ok(out)
}

thread_local! {
    /// Staged bytes as read, and lz4 pieces decompressed (see [`write_objects`]).
    static READ_BUFS: std::cell::Cell<(Vec<u8>, Vec<u8>)> =
        const { std::cell::Cell::new((Vec::new(), Vec::new())) };
}

/// A partition merged and waiting for a thread, largest first (ties: name order).
struct Ready {
    raw: u64,
    n: usize,
    partition: String,
    pieces: Vec<PieceAt>,
}

impl PartialEq for Ready {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl Eq for Ready {}
impl PartialOrd for Ready {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ready {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.raw.cmp(&other.raw).then(other.n.cmp(&self.n))
    }
}

/// The merge over the units' piece indexes (see [`super::index`]).
fn merge<'s>(ctx: &AssembleCtx<'s>, units: &'s [UnitManifest]) -> io::Result<Merge<'s>> {
    let mut refs = Vec::with_capacity(units.len());
    for u in units {
        let index = u.index.as_ref().ok_or_else(|| {
            io::Error::other(format!("unit checkpoint of {} has no piece index", u.file))
        })?;
        refs.push((u.pieces_key.as_str(), index));
    }
    Merge::new(ctx.staging, refs)
}

/// Writes the objects of every partition, reading the partitions from `merge` in
/// name order and writing them on the current rayon pool, at most
/// [`WINDOW_PIECES`] pieces of merged partitions waiting at a time (the biggest
/// first); stops at the error pieces. Returns each partition's objects in
/// partition order.
fn write_partitions(
    ctx: &AssembleCtx<'_>,
    group: &str,
    units: &[UnitManifest],
    merge: &mut Merge<'_>,
) -> io::Result<Vec<Written>> {
    // The ready partitions and the pieces they hold.
    let window: Mutex<(BinaryHeap<Ready>, usize)> = Mutex::new((BinaryHeap::new(), 0));
    let written: Mutex<Vec<(usize, Written)>> = Mutex::new(Vec::new());
    let failure: Mutex<Option<io::Error>> = Mutex::new(None);
    let failed = AtomicBool::new(false);
    let take = || {
        let mut w = window.lock().unwrap();
        let r = w.0.pop();
        if let Some(r) = &r {
            w.1 -= r.pieces.len();
        }
        r
    };
    let work = |r: Ready| {
        if failed.load(Ordering::SeqCst) {
            return;
        }
        let key_for = |n| object_key(&r.partition, ctx.job, group, n);
        match write_objects(ctx, units, &r.partition, &r.pieces, &key_for) {
            Ok(w) => written.lock().unwrap().push((r.n, w)),
            Err(e) => {
                failed.store(true, Ordering::SeqCst);
                failure.lock().unwrap().get_or_insert(e);
            }
        }
    };
    let (take, work) = (&take, &work);
    rayon::in_place_scope(|scope| -> io::Result<()> {
        // Partitions merged and not yet handed to a task: tasks start when the
        // window is full or the merge is done, so a folder that fits goes largest
        // first throughout.
        let mut unspawned = 0;
        let mut n = 0;
        let mut pieces = Vec::new();
        while !failed.load(Ordering::SeqCst) {
            let next = merge.next(&mut pieces).inspect_err(|_| {
                // The tasks already spawned drop what they take.
                failed.store(true, Ordering::SeqCst);
            })?;
            let Some((kind, partition)) = next else {
                break;
            };
            if kind == PieceKind::Errors {
                break;
            }
            let ready = Ready {
                raw: pieces.iter().map(|p| p.raw_bytes).sum(),
                n,
                partition,
                pieces: std::mem::take(&mut pieces),
            };
            n += 1;
            {
                let mut w = window.lock().unwrap();
                w.1 += ready.pieces.len();
                w.0.push(ready);
            }
            unspawned += 1;
            if window.lock().unwrap().1 >= WINDOW_PIECES {
                for _ in 0..std::mem::take(&mut unspawned) {
                    scope.spawn(move |_| {
                        if let Some(r) = take() {
                            work(r);
                        }
                    });
                }
                // This thread writes too until the window has room again.
                while window.lock().unwrap().1 >= WINDOW_PIECES {
                    match take() {
                        Some(r) => work(r),
                        None => break,
                    }
                }
            }
        }
        for _ in 0..unspawned {
            scope.spawn(move |_| {
                if let Some(r) = take() {
                    work(r);
                }
            });
        }
        Ok(())
    })?;
    if let Some(e) = failure.into_inner().unwrap() {
        return Err(e);
    }
    let mut written = written.into_inner().unwrap();
    written.sort_unstable_by_key(|(n, _)| *n);
    Ok(written.into_iter().map(|(_, w)| w).collect())
}

/// Assembles a group from its unit checkpoints (in unit order) and commits it.
///
/// Memory: the units' checkpoints without their pieces, the merge's buffers
/// ([`super::index::MERGE_BUFFERS`]), at most [`WINDOW_PIECES`] pieces of merged
/// partitions, the error pieces, and the group's object list; never every unit's
/// pieces at once.
pub fn assemble(
    ctx: &AssembleCtx<'_>,
    group: &str,
    dir: &str,
    units: &[UnitManifest],
) -> io::Result<GroupManifest> {
    let mut stats = Stats::default();
    let mut staged_bytes = 0;
    for u in units {
        stats.add(&u.stats);
        // The pieces tile the pieces file up to the index.
        staged_bytes += u.index.as_ref().map_or(0, |i| i.offset);
    }
    let errors_base = format!("{}{group}", errors_prefix(ctx.job));
    // Every key about to be published, recorded before the first one is (see
    // `Intent`): a first pass over the merge, counting each partition's objects.
    let mut keys = Vec::new();
    let mut errors = Vec::new();
    let mut pieces = Vec::new();
    let mut first = merge(ctx, units)?;
    while let Some((kind, partition)) = first.next(&mut pieces)? {
        match kind {
            PieceKind::Records => {
                for n in 0..parts(&pieces, ctx.target_size).len() {
                    keys.push(object_key(&partition, ctx.job, group, n));
                }
                pieces.clear();
            }
            PieceKind::Errors => errors = std::mem::take(&mut pieces),
        }
    }
    drop(first);
    for n in 0..parts(&errors, ctx.target_size).len() {
        keys.push(format!("{errors_base}-{n}.jsonl.xz"));
    }
    let intent = Intent {
        format: FORMAT.to_string(),
        job: ctx.job.to_string(),
        group: group.to_string(),
        dir: dir.to_string(),
        keys,
    };
    let intent_key = intent_key(ctx.job, &super::plan::group_id(dir), group);
    ctx.dest.put(
        &intent_key,
        &serde_json::to_vec(&intent).map_err(io::Error::other)?,
    )?;
    drop(intent);
    let objects = write_partitions(ctx, group, units, &mut merge(ctx, units)?)?;
    let errors = write_objects(ctx, units, "", &errors, &|n| {
        format!("{errors_base}-{n}.jsonl.xz")
    })?;
    // Every object of the group becomes visible at once, durably, before the
    // manifest that commits them.
    let mut pending = Vec::new();
    let mut split = |v: Written| -> Vec<ObjectEntry> {
        v.into_iter()
            .map(|(e, p)| {
                pending.extend(p);
                e
            })
            .collect()
    };
    let objects: Vec<ObjectEntry> = objects.into_iter().flat_map(&mut split).collect();
    let errors = split(errors);
    if (ctx.lease_lost)() {
        return Err(io::Error::other(format!(
            "folder {dir}: another run took over its lease before its objects were published (this run's heartbeats were late)"
        )));
    }
    ctx.dest.publish(pending)?;
    crate::failpoint::hit("objects-published");
    if (ctx.lease_lost)() {
        // Another run took the folder over and writes the same keys with the same
        // bytes; its manifest will commit them.
        return Err(io::Error::other(format!(
            "folder {dir}: another run took over its lease before the commit (this run's heartbeats were late)"
        )));
    }
    let manifest = GroupManifest {
        format: FORMAT.to_string(),
        job: ctx.job.to_string(),
        group: group.to_string(),
        dir: dir.to_string(),
        selection: ctx.selection.clone(),
        units: units
            .iter()
            .map(|u| UnitRef {
                file: u.file.clone(),
                start: u.start,
                end: u.end,
                file_size: u.file_size,
            })
            .collect(),
        objects,
        errors,
        stats,
        staged_bytes,
        committed_at: super::manifest::now_secs(),
        replaces: ctx.replaces.map(str::to_string),
    };
    ctx.dest.put(
        &manifest_key(ctx.job, group),
        &serde_json::to_vec_pretty(&manifest).map_err(io::Error::other)?,
    )?;
    crate::failpoint::hit("manifest-written");
    ctx.dest.delete(&intent_key)?;
    // Committed: the staged pieces and unit checkpoints are no longer needed.
    for m in ctx.staging.list(&staging_prefix(ctx.job, group))? {
        crate::failpoint::hit("staging-remove");
        ctx.staging.delete(&m.key)?;
    }
    Ok(manifest)
}
