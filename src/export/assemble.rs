//! Assembly of a group: once every unit of a source folder is staged, each
//! partition's pieces are concatenated, in unit order then piece order, into objects
//! of about the target size (a concatenation of xz streams is a valid xz file), the
//! error pieces likewise into the error output, and the group manifest is written
//! last: it is the commit point. Staging is removed after the commit.
//!
//! An object is closed as soon as it holds at least the target size, so a partition
//! gets at most ceil(bytes / target) objects from a group, and pieces are cut at a
//! fraction of the target so objects overshoot it by little.

use super::manifest::{
    errors_prefix, manifest_key, staging_prefix, GroupManifest, ObjectEntry, PieceKind, Stats,
    UnitManifest, UnitRef, FORMAT,
};
use super::plan::Selection;
use crate::store::{ObjectWriter, Store};
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
    /// The days exported.
    pub selection: &'a Selection,
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
}

struct Open {
    key: String,
    writer: Box<dyn ObjectWriter>,
    hasher: sha2::Sha256,
    records: u64,
    raw: u64,
}

impl Open {
    fn close(self, partition: &str) -> io::Result<ObjectEntry> {
        let bytes = self.writer.commit()?;
        Ok(ObjectEntry {
            key: self.key,
            partition: partition.to_string(),
            records: self.records,
            bytes,
            raw_bytes: self.raw,
            sha256: hex::encode(self.hasher.finalize()),
        })
    }
}

/// Writes the objects of one partition (or of the error output) from its pieces.
fn write_objects(
    ctx: &AssembleCtx<'_>,
    partition: &str,
    pieces: &[PieceRef<'_>],
    key_for: &dyn Fn(usize) -> String,
) -> io::Result<Vec<ObjectEntry>> {
    let mut out = Vec::new();
    let mut open: Option<Open> = None;
    for p in pieces {
        let o = match &mut open {
            Some(o) => o,
            None => {
                let key = key_for(out.len());
                let writer = ctx.dest.create(&key)?;
                open.insert(Open {
                    key,
                    writer,
                    hasher: sha2::Sha256::new(),
                    records: 0,
                    raw: 0,
                })
            }
        };
        let bytes = ctx
            .staging
            .read_range(&p.unit.pieces_key, p.offset, p.len)?;
        o.writer.write_all(&bytes)?;
        o.hasher.update(&bytes);
        o.records += p.records;
        o.raw += p.raw_bytes;
        if o.raw >= ctx.target_size {
            out.push(open.take().expect("open").close(partition)?);
        }
    }
    if let Some(o) = open {
        out.push(o.close(partition)?);
    }
    Ok(out)
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
            };
            match p.kind {
                PieceKind::Records => by_partition.entry(&p.partition).or_default().push(r),
                PieceKind::Errors => errors.push(r),
            }
        }
    }
    let parts: Vec<(&str, Vec<PieceRef<'_>>)> = by_partition.into_iter().collect();
    let objects: Vec<Vec<ObjectEntry>> = parts
        .par_iter()
        .map(|(partition, pieces)| {
            write_objects(ctx, partition, pieces, &|n| {
                object_key(partition, ctx.job, group, n)
            })
        })
        .collect::<io::Result<_>>()?;
    let errors_base = format!("{}{group}", errors_prefix(ctx.job));
    let errors = write_objects(ctx, "", &errors, &|n| format!("{errors_base}-{n}.jsonl.xz"))?;
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
            })
            .collect(),
        objects: objects.into_iter().flatten().collect(),
        errors,
        stats,
        staged_bytes,
        committed_at: super::manifest::now_secs(),
    };
    ctx.dest.put(
        &manifest_key(ctx.job, group),
        &serde_json::to_vec_pretty(&manifest).map_err(io::Error::other)?,
    )?;
    // Committed: the staged pieces and unit checkpoints are no longer needed.
    for m in ctx.staging.list(&staging_prefix(ctx.job, group))? {
        ctx.staging.delete(&m.key)?;
    }
    Ok(manifest)
}
