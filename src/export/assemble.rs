//! Assembly of a group: once every unit of a source folder is staged, each
//! partition's pieces are read in unit order then piece order and compressed into
//! objects of about the target size, one xz stream each; the error pieces likewise
//! into the error output; and the group manifest is written last: it is the commit
//! point. Staging is removed after the commit.
//!
//! An object is closed as soon as it holds at least the target size, so a partition
//! gets at most ceil(bytes / target) objects from a group, and pieces are cut at a
//! fraction of the target so objects overshoot it by little.

use super::manifest::{
    errors_prefix, intent_key, manifest_key, staging_prefix, GroupManifest, Intent, ObjectEntry,
    PieceCodec, PieceKind, Stats, UnitManifest, UnitRef, FORMAT,
};
use super::plan::Selection;
use crate::store::{ObjectWriter, Pending, Store};
use rayon::prelude::*;
use sha2::Digest;
use std::collections::BTreeMap;
use std::io::{self, Write};

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

struct PieceRef<'u> {
    unit: &'u UnitManifest,
    offset: u64,
    len: u64,
    records: u64,
    raw_bytes: u64,
    codec: PieceCodec,
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
fn parts<'p, 'u>(pieces: &'p [PieceRef<'u>], target: u64) -> Vec<&'p [PieceRef<'u>]> {
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
    partition: &str,
    pieces: &[PieceRef<'_>],
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
                ctx.staging
                    .read_range_into(&p.unit.pieces_key, p.offset, p.len, &mut bytes)?;
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
                    io::Error::other(format!(
                        "staged piece of {} at {}: {e}",
                        p.unit.pieces_key, p.offset
                    ))
                })?;
                if n != plain.len() {
                    return Err(io::Error::other(format!(
                        "staged piece of {} at {} holds {n} bytes, expected {}",
                        p.unit.pieces_key,
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

/// Assembles a group from its unit manifests (in unit order) and commits it.
pub fn assemble(
    ctx: &AssembleCtx<'_>,
    group: &str,
    dir: &str,
    units: &[UnitManifest],
) -> io::Result<GroupManifest> {
    let mut by_partition: BTreeMap<&str, Vec<PieceRef<'_>>> = BTreeMap::new();
    let mut errors = Vec::new();
    let mut stats = Stats::default();
    let mut staged_bytes = 0;
    for u in units {
        stats.add(&u.stats);
        for p in &u.pieces {
            staged_bytes += p.len;
            let r = PieceRef {
                unit: u,
                offset: p.offset,
                len: p.len,
                records: p.records,
                raw_bytes: p.raw_bytes,
                codec: p.codec,
            };
            match p.kind {
                PieceKind::Records => by_partition.entry(&p.partition).or_default().push(r),
                PieceKind::Errors => errors.push(r),
            }
        }
    }
    let parts_of: Vec<(&str, Vec<PieceRef<'_>>)> = by_partition.into_iter().collect();
    let errors_base = format!("{}{group}", errors_prefix(ctx.job));
    // Every key about to be published, recorded before the first one is (see
    // `Intent`).
    let mut keys = Vec::new();
    for (partition, pieces) in &parts_of {
        for n in 0..parts(pieces, ctx.target_size).len() {
            keys.push(object_key(partition, ctx.job, group, n));
        }
    }
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
    let parts = parts_of;
    // Largest partitions first, one task each: a day's few big partitions would
    // otherwise be left to one thread at the end (the last folder's assembly is all
    // that runs then). Objects do not depend on the order; the manifest keeps
    // partition order.
    let mut order: Vec<(u64, usize)> = parts
        .iter()
        .enumerate()
        .map(|(i, (_, pieces))| (pieces.iter().map(|p| p.raw_bytes).sum(), i))
        .collect();
    order.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut written: Vec<(usize, Written)> = order
        .par_iter()
        .with_max_len(1)
        .map(|&(_, i)| {
            let (partition, pieces) = &parts[i];
            let objects = write_objects(ctx, partition, pieces, &|n| {
                object_key(partition, ctx.job, group, n)
            })?;
            Ok((i, objects))
        })
        .collect::<io::Result<_>>()?;
    written.sort_unstable_by_key(|(i, _)| *i);
    let objects = written.into_iter().map(|(_, objects)| objects);
    let errors = write_objects(ctx, "", &errors, &|n| format!("{errors_base}-{n}.jsonl.xz"))?;
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
    let objects: Vec<ObjectEntry> = objects.flat_map(&mut split).collect();
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
