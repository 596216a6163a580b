//! `backfill export`: streams legacy records from a [`Source`] through the core into
//! the partitioned layout of a destination [`Store`].
//!
//! Work flows in three steps (see the README's "Design" section for why):
//! 1. **plan**: the source is walked folder by folder (a folder is a *group*, a day in
//!    the old HDFS layout); each file, or each byte range of a large SequenceFile, is
//!    a *unit*;
//! 2. **units** run on a pool of `--jobs` threads: read, convert, and stage the
//!    results as xz pieces plus a checkpoint manifest ([`unit`]);
//! 3. when a group's last unit is staged, the group is **assembled** into objects in
//!    a fixed order and committed by its manifest ([`assemble`]).
//!
//! Several runs of one job may run at once (other windows, a retried task, shards,
//! queue workers): each folder is exported under its lease, and clean-up happens only
//! when no other run is alive ([`lease`]). A source failing past its retries fails
//! its unit, not the run; undecodable bytes are `unreadable`.
//!
//! Every name and byte depends only on the input, the mappings and the options, never
//! on `--jobs` or timing. Memory is bounded by `--jobs` × (unit buffer + one xz
//! encoder + the largest record) plus, per folder, its units' small checkpoints and
//! assembly's merge of their piece indexes ([`index`]): never units × partitions.

pub mod assemble;
pub mod errors;
pub mod index;
pub mod lease;
pub mod manifest;
pub mod plan;
pub mod status;
pub mod unit;
pub mod xz;

use crate::core::mappings::Mappings;
use crate::core::schema::Filter;
use crate::source::{FileEntry, Source, WalkItem};
use crate::store::Store;
use anyhow::{bail, Context as _};
use lease::{Leases, RunId, Taken};
use manifest::{
    job_key, GroupManifest, JobRecord, JobSpec, Stats, UnitManifest, Unreadable, FORMAT,
};
use plan::{DayWindow, Selection};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;
use unit::UnitSpec;

/// Options of an export run.
#[derive(Clone)]
pub struct ExportOptions {
    /// Name of the job (several jobs can share a destination).
    pub job_name: String,
    /// Worker threads.
    pub jobs: usize,
    /// xz preset of the objects.
    pub xz_preset: u32,
    /// Object target size, uncompressed bytes.
    pub target_size: u64,
    /// Per-unit buffer before pieces are cut.
    pub buffer_size: u64,
    /// SequenceFiles larger than this are split into units.
    pub split_size: u64,
    /// `--from`/`--to`.
    pub window: DayWindow,
    /// Days of margin around the window when selecting dated folders.
    pub folder_margin: u32,
    /// `--filter`, bound to the schema, with the sha256 of its file.
    pub filter: Option<(Filter, String)>,
    /// Seconds a lease lives without a heartbeat (see [`lease`]).
    pub lease_ttl: u64,
    /// Objects of this job no manifest references are removed only when older than
    /// this many seconds (besides every other condition of the sweep).
    pub orphan_grace: u64,
    /// Read again committed folders that recorded unreadable regions.
    pub retry_unreadable: bool,
    /// `--shard I/N`: this run exports only the folders of share I of N (see
    /// [`plan::in_shard`]); N runs side by side give the one-run store.
    pub shard: Option<(u32, u32)>,
    /// Export only this source folder (a queue worker's message), without walking
    /// the source, surveying it, or sweeping the job.
    pub only_folder: Option<String>,
    /// A `reprocess` job: the source is a store of the new layout (see
    /// [`crate::reprocess`]), read by its own unit reader.
    pub reprocess: Option<manifest::ReprocessSpec>,
    /// An `ingest` job: the source holds the live server's raw logs, one folder per
    /// raw file (see [`crate::ingest`]).
    pub ingest: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            job_name: "export".into(),
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            xz_preset: 1,
            target_size: 500_000_000,
            buffer_size: 64 << 20,
            split_size: 256 << 20,
            window: DayWindow::default(),
            folder_margin: 1,
            filter: None,
            lease_ttl: lease::DEFAULT_TTL,
            orphan_grace: 600,
            retry_unreadable: false,
            shard: None,
            only_folder: None,
            reprocess: None,
            ingest: false,
        }
    }
}

/// The run report (`--report FILE`), describing the whole job (SPEC §6).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Job id.
    pub job: String,
    /// Source description.
    pub source: String,
    /// Destination description.
    pub destination: String,
    /// Tool version.
    pub tool_version: String,
    /// Mappings version.
    pub mappings_version: String,
    /// Counts over the whole job.
    #[serde(flatten)]
    pub stats: Stats,
    /// Distinct partitions written.
    pub partitions: u64,
    /// Objects written (error output not included).
    pub objects: u64,
    /// Bytes of those objects as stored.
    pub bytes_out: u64,
    /// Error-output objects and their bytes.
    pub error_objects: u64,
    /// Bytes of the error output as stored.
    pub error_bytes: u64,
    /// Groups (source folders) committed.
    pub groups: u64,
    /// Of those, committed by an earlier run (skipped now).
    pub groups_resumed: u64,
    /// Units whose checkpoint an earlier run left (not redone).
    pub units_resumed: u64,
    /// Units processed by this run.
    pub units_run: u64,
    /// Largest staging a group needed, bytes.
    pub staged_bytes_max: u64,
    /// Objects of this job no manifest referenced, removed at the end.
    pub orphans_removed: u64,
    /// Incomplete writes (temporary files, multipart uploads) of this job removed.
    pub incomplete_removed: u64,
    /// Wall time of this invocation.
    pub seconds: f64,
    /// Whether every selected folder is committed (by this run or another).
    pub complete: bool,
    /// Units and folders this run could not finish (a source or the destination
    /// failing past its retries); a rerun does exactly these again.
    pub failed: Vec<FailedWork>,
    /// The error that stopped the run early, if one did.
    pub error: Option<String>,
    /// Committed folders whose files changed since (added, grown, shrunk): reported,
    /// not exported again (the job would no longer be one consistent copy).
    pub source_changed: Vec<SourceChange>,
    /// Folders another live run of the job was exporting, which this run waited for
    /// (or took over after that run stopped renewing its lease).
    pub folders_waited: u64,
    /// What the end-of-run sweep did (orphans, staging, incomplete uploads).
    pub sweep: String,
    /// `reprocess`: records written to another partition than the one they were
    /// read from (the rest of what changed is under `changes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moved: Option<Moved>,
}

/// Records that changed partition in a `reprocess`, the largest moves first.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Moved {
    /// Records moved, in all.
    pub records: u64,
    /// Distinct (old partition, new partition) pairs.
    pub pairs: u64,
    /// The largest pairs, at most [`MOVES_SHOWN`], by records then names.
    pub largest: Vec<MovedPair>,
}

/// Records moved from one partition to another.
#[derive(Clone, Debug, Serialize)]
pub struct MovedPair {
    /// The partition read (without its layout suffix).
    pub from: String,
    /// The partition written (without its layout suffix).
    pub to: String,
    /// Records.
    pub records: u64,
}

/// Moves a report lists by name; the counts cover all of them.
pub const MOVES_SHOWN: usize = 1000;

impl Report {
    /// Turns the moves counted in `stats.changes` into [`Report::moved`]: full
    /// counts, and the largest [`MOVES_SHOWN`] pairs by name.
    fn summarise_moves(&mut self) {
        let all = std::mem::take(&mut self.stats.changes.moved);
        let mut pairs: Vec<(String, u64)> = all.into_iter().collect();
        let records = pairs.iter().map(|p| p.1).sum();
        let n = pairs.len() as u64;
        pairs.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let largest = pairs
            .into_iter()
            .take(MOVES_SHOWN)
            .map(|(k, records)| {
                let (from, to) = k.split_once('\t').unwrap_or((&k, ""));
                MovedPair {
                    from: from.to_string(),
                    to: to.to_string(),
                    records,
                }
            })
            .collect();
        self.moved = Some(Moved {
            records,
            pairs: n,
            largest,
        });
    }
}

/// A unit or folder a run could not finish.
#[derive(Clone, Debug, Serialize)]
pub struct FailedWork {
    /// The source folder.
    pub folder: String,
    /// The file, or empty when the folder as a whole failed (listing, assembly).
    pub file: String,
    /// Byte range `[start, end)` of the unit.
    pub start: u64,
    /// End of the range.
    pub end: u64,
    /// Why, naming the file and offset.
    pub error: String,
}

/// A committed folder whose files are no longer what was exported.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SourceChange {
    /// The folder.
    pub folder: String,
    /// Files in the folder now that no committed run read.
    pub added: Vec<String>,
    /// Files read whose size differs now.
    pub resized: Vec<String>,
    /// Files read that are gone.
    pub removed: Vec<String>,
}

impl Report {
    /// The documented exit code: 1 when the run failed or left work undone, 3 when
    /// some input could not be read, else 0 (130 for a signal is the caller's).
    pub fn exit_code(&self) -> i32 {
        if self.error.is_some() || !self.failed.is_empty() {
            1
        } else if self.stats.unreadable.is_empty() {
            0
        } else {
            3
        }
    }
}

/// What a listing pass finds (for progress totals and `--dry-run`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Survey {
    /// Folders selected.
    pub folders: u64,
    /// Folders left out by `--from`/`--to`.
    pub folders_skipped: u64,
    /// Files selected.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Units they make.
    pub units: u64,
    /// Days named by the selected folders.
    pub days: BTreeSet<u32>,
    /// Folders that could not be listed.
    pub unreadable: Vec<Unreadable>,
    /// Of the bytes, those of this run's share (`--shard`; all of them without).
    pub share_bytes: u64,
}

/// Walks the source once without reading files.
pub fn survey(source: &dyn Source, opts: &ExportOptions) -> anyhow::Result<Survey> {
    let mut s = Survey::default();
    source
        .walk(&mut |item| {
            match item {
                WalkItem::Folder { dir, files } => {
                    if plan::folder_selected(&dir, &opts.window, opts.folder_margin) {
                        s.folders += 1;
                        s.files += files.len() as u64;
                        s.bytes += files.iter().map(|f| f.size).sum::<u64>();
                        s.units += plan::units(&files, opts.split_size).len() as u64;
                        s.days.extend(plan::folder_day(&dir));
                        if plan::in_shard(&dir, opts.shard) {
                            s.share_bytes += files.iter().map(|f| f.size).sum::<u64>();
                        }
                    } else {
                        s.folders_skipped += 1;
                    }
                }
                WalkItem::Unreadable { path, error } => s.unreadable.push(Unreadable {
                    file: path,
                    offset: 0,
                    length: 0,
                    error,
                }),
            }
            true
        })
        .with_context(|| format!("listing {}", source.describe()))?;
    Ok(s)
}

/// The job spec these options and mappings give.
pub fn job_spec(opts: &ExportOptions, mappings: &Mappings) -> JobSpec {
    JobSpec {
        format: FORMAT.to_string(),
        job_name: opts.job_name.clone(),
        mappings_version: mappings.version().to_string(),
        filter_sha256: opts.filter.as_ref().map(|f| f.1.clone()),
        xz_preset: opts.xz_preset,
        target_size: opts.target_size,
        buffer_size: opts.buffer_size,
        split_size: opts.split_size,
        converter: crate::core::convert::OUTPUT_VERSION,
        reprocess: opts.reprocess.clone(),
        ingest: opts.ingest,
    }
}

/// Checks the destination's job records: the same job must read the same source;
/// another job of the same name with other settings is refused, naming what differs.
/// Records this job when it is new.
pub fn claim_job(dest: &dyn Store, spec: &JobSpec, source: &str) -> anyhow::Result<String> {
    let job = spec.id();
    for meta in dest.list(&format!("{}/jobs/", manifest::BOOKKEEPING))? {
        let Some(bytes) = dest.get(&meta.key)? else {
            continue;
        };
        let rec: JobRecord =
            serde_json::from_slice(&bytes).with_context(|| format!("reading {}", meta.key))?;
        if rec.job == job {
            if rec.source != source {
                bail!(
                    "{} already holds job {job} exporting {}, not {source}; give this export its own --job-name or another destination",
                    dest.describe(),
                    rec.source
                );
            }
            return Ok(job);
        }
        if rec.spec.job_name == spec.job_name && rec.spec.converter != spec.converter {
            bail!(
                "{} holds job {} named {:?}, whose objects were converted by converter output version {} (backfill {}); this binary's converter writes version {}, so its objects would not match the ones already there. Finish that job with backfill {}, or start a new job with --job-name (or use another destination)",
                dest.describe(),
                rec.job,
                spec.job_name,
                rec.spec.converter,
                rec.tool_version,
                spec.converter,
                rec.tool_version
            );
        }
        if rec.spec.job_name == spec.job_name {
            bail!(
                "{} holds job {} named {:?} written with other settings ({}); rerun with the same settings, or start a separate job with --job-name, or use a new destination",
                dest.describe(),
                rec.job,
                spec.job_name,
                spec.differences(&rec.spec).join("; ")
            );
        }
    }
    let rec = JobRecord {
        job: job.clone(),
        spec: spec.clone(),
        source: source.to_string(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    dest.put(&job_key(&job), &serde_json::to_vec_pretty(&rec)?)?;
    Ok(job)
}

/// A counting semaphore bounding units in flight.
struct Slots {
    free: Mutex<usize>,
    cv: Condvar,
}

impl Slots {
    fn acquire(&self) {
        let mut f = self.free.lock().unwrap();
        while *f == 0 {
            f = self.cv.wait(f).unwrap();
        }
        *f -= 1;
    }
    fn release(&self) {
        *self.free.lock().unwrap() += 1;
        self.cv.notify_one();
    }
}

struct Group {
    dir: String,
    id: String,
    /// The folder's lease, held while the group runs.
    lease: String,
    /// Groups of the folder still running under that lease (a retry can redo
    /// several at once): the last one gives it back.
    lease_refs: Arc<AtomicUsize>,
    /// The committed group this one reads again (`--retry-unreadable`), under new
    /// names: the old group's objects and manifest go once this one is committed.
    replaces: Option<String>,
    selection: Selection,
    units: Vec<UnitSpec>,
    done: Mutex<Vec<Option<UnitManifest>>>,
    remaining: AtomicUsize,
    /// A unit failed: the group is not assembled.
    failed: AtomicBool,
}

/// What a committed group contributes to the job report: small, because a long job
/// has many groups.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The source folder.
    pub dir: String,
    /// The group id (its manifest's name).
    pub group: String,
    /// The days it exported.
    pub selection: Selection,
    /// Its counts.
    pub stats: Stats,
    /// Objects and their bytes.
    pub objects: u64,
    /// Bytes of the objects.
    pub bytes_out: u64,
    /// Error-output objects.
    pub error_objects: u64,
    /// Their bytes.
    pub error_bytes: u64,
    /// Hashes of the partitions written (for the distinct count).
    pub partitions: Vec<u64>,
    /// Staging the group needed.
    pub staged_bytes: u64,
    /// When it was committed (seconds since the epoch).
    pub committed_at: u64,
    /// Digest of the files it read (names and sizes), to notice a folder that
    /// changed after its commit without keeping every name in memory.
    pub files_digest: u64,
}

/// Digest of a folder's files, names and sizes, in name order.
fn files_digest<'a>(files: impl Iterator<Item = (&'a str, u64)>) -> u64 {
    let mut all: Vec<(&str, u64)> = files.collect();
    all.sort_unstable();
    all.dedup();
    let mut text = String::new();
    for (f, size) in all {
        text.push_str(f);
        text.push('\0');
        text.push_str(&size.to_string());
        text.push('\0');
    }
    hash64(&text)
}

fn hash64(s: &str) -> u64 {
    let h = manifest::sha256(s.as_bytes());
    u64::from_le_bytes(h[..8].try_into().expect("8 bytes"))
}

impl Summary {
    fn of(m: &GroupManifest, referenced: Option<&mut HashSet<u64>>) -> Summary {
        if let Some(r) = referenced {
            r.extend(m.objects.iter().chain(&m.errors).map(|o| hash64(&o.key)));
        }
        Summary {
            dir: m.dir.clone(),
            group: m.group.clone(),
            selection: m.selection.clone(),
            stats: m.stats.clone(),
            objects: m.objects.len() as u64,
            bytes_out: m.objects.iter().map(|o| o.bytes).sum(),
            error_objects: m.errors.len() as u64,
            error_bytes: m.errors.iter().map(|o| o.bytes).sum(),
            partitions: m.objects.iter().map(|o| hash64(&o.partition)).collect(),
            staged_bytes: m.staged_bytes,
            committed_at: m.committed_at,
            // Manifests of format 1 did not record sizes: unknown.
            files_digest: if m.format == "backfill-export/1" {
                0
            } else {
                files_digest(m.units.iter().map(|u| (u.file.as_str(), u.file_size)))
            },
        }
    }
}

/// The committed groups of a job, by folder, and the keys they reference.
#[derive(Default)]
pub struct History {
    /// Summaries by folder, oldest selection first.
    pub by_dir: HashMap<String, Vec<Summary>>,
    referenced: HashSet<u64>,
    /// Manifests read (hashes of their keys), so a refresh reads only new ones.
    seen: HashSet<u64>,
    /// Groups a later manifest replaces (`--retry-unreadable`), by hash of id.
    superseded: HashSet<u64>,
    /// Of those, the ones whose manifests were read, still there: leftovers of a
    /// replacement a crash interrupted, for [`remove_group`].
    pub stale: Vec<String>,
}

impl History {
    /// Reads every group manifest of `job` in `dest`.
    pub fn load(dest: &dyn Store, job: &str) -> anyhow::Result<History> {
        let mut h = History::default();
        h.refresh(dest, job, None)?;
        Ok(h)
    }

    /// Reads the manifests committed since the last look (by other runs of the
    /// job): all, or those of folder `only` (group ids start with the folder's id).
    pub fn refresh(
        &mut self,
        dest: &dyn Store,
        job: &str,
        only: Option<&str>,
    ) -> anyhow::Result<()> {
        let prefix = format!(
            "{}{}",
            manifest::manifests_prefix(job),
            only.map(plan::group_id).unwrap_or_default()
        );
        for meta in dest.list(&prefix)? {
            if self.seen.contains(&hash64(&meta.key)) || !meta.key.ends_with(".json") {
                continue;
            }
            let Some(bytes) = dest.get(&meta.key)? else {
                continue;
            };
            let m: GroupManifest = serde_json::from_slice(&bytes)
                .with_context(|| format!("reading group manifest {}", meta.key))?;
            self.add(&m);
        }
        Ok(())
    }

    fn add(&mut self, m: &GroupManifest) {
        if !self
            .seen
            .insert(hash64(&manifest::manifest_key(&m.job, &m.group)))
        {
            return;
        }
        if let Some(x) = &m.replaces {
            self.superseded.insert(hash64(x));
            if let Some(v) = self.by_dir.get_mut(&m.dir) {
                let before = v.len();
                v.retain(|s| &s.group != x);
                if v.len() != before {
                    self.stale.push(x.clone());
                }
            }
        }
        if self.superseded.contains(&hash64(&m.group)) {
            self.stale.push(m.group.clone());
            return;
        }
        let s = Summary::of(m, Some(&mut self.referenced));
        self.push(s);
    }

    fn push(&mut self, s: Summary) {
        let v = self.by_dir.entry(s.dir.clone()).or_default();
        v.push(s);
        v.sort_by_key(|s| s.selection.covered.len());
    }

    /// Windows already exported from `dir`.
    pub fn covered(&self, dir: &str) -> Vec<DayWindow> {
        self.by_dir
            .get(dir)
            .map(|v| v.iter().map(|s| s.selection.window).collect())
            .unwrap_or_default()
    }

    /// Fills the job-wide counts of `report`. Every run over a folder reads all of
    /// it, so bytes, unreadable regions and records outside every window come from
    /// the folder's latest run; the other counts add up (their days are disjoint).
    pub fn totals(&self, report: &mut Report) {
        let mut partitions = HashSet::new();
        let mut dirs: Vec<&String> = self.by_dir.keys().collect();
        dirs.sort();
        for dir in dirs {
            let slices = &self.by_dir[dir];
            for s in slices {
                let mut st = s.stats.clone();
                st.records_filtered -= st.records_outside_window;
                st.records_outside_window = 0;
                st.bytes_in = 0;
                st.unreadable.clear();
                report.stats.add(&st);
                report.objects += s.objects;
                report.bytes_out += s.bytes_out;
                report.error_objects += s.error_objects;
                report.error_bytes += s.error_bytes;
                report.staged_bytes_max = report.staged_bytes_max.max(s.staged_bytes);
                partitions.extend(s.partitions.iter().copied());
            }
            let last = slices.last().expect("non-empty");
            report.stats.records_filtered += last.stats.records_outside_window;
            report.stats.records_outside_window += last.stats.records_outside_window;
            report.stats.bytes_in += last.stats.bytes_in;
            report
                .stats
                .unreadable
                .extend(last.stats.unreadable.iter().cloned());
            report.groups += 1;
        }
        report.partitions = partitions.len() as u64;
    }
}

/// Whether `key` is an object of `job` (its suffix starts with the job id).
pub fn owned_by(key: &str, job: &str) -> bool {
    if let Some(rest) = key.strip_prefix(&manifest::errors_prefix(job)) {
        return !rest.contains('/');
    }
    if key.starts_with(&format!("{}/", manifest::BOOKKEEPING)) {
        return false;
    }
    let name = key.rsplit('/').next().unwrap_or(key);
    let Some(stem) = name.strip_suffix(".xz") else {
        return false;
    };
    stem.rsplit('.')
        .next()
        .is_some_and(|suffix| suffix.starts_with(&format!("{job}-")))
}

/// Whether `key` is bookkeeping of `job` under `_backfill/` (its record, runs,
/// manifests, staging, error output, leases): where a killed writer can leave a
/// temporary.
pub fn bookkeeping_of(key: &str, job: &str) -> bool {
    let b = manifest::BOOKKEEPING;
    key == manifest::job_key(job)
        || [
            format!("{b}/staging/{job}/"),
            manifest::manifests_prefix(job),
            manifest::runs_prefix(job),
            manifest::errors_prefix(job),
            manifest::intents_prefix(job),
            lease::leases_prefix(job),
        ]
        .iter()
        .any(|p| key.starts_with(p.as_str()))
}

/// Shared state of a run.
struct Run<'a> {
    /// What the run reads and writes.
    io: Io<'a>,
    job: String,
    leases: &'a Leases<'a>,
    /// Raised by an error that ends the run (the destination's bookkeeping
    /// unreadable, a lease that cannot be taken, too many failures in a row).
    failed: AtomicBool,
    error: Mutex<Option<anyhow::Error>>,
    /// Units and folders that failed; the run goes on with the others.
    failures: Mutex<Vec<FailedWork>>,
    failing_in_a_row: AtomicUsize,
    /// The job's committed groups, summarised (a whole manifest lists every
    /// object, and a long job commits many): those committed before this run, by
    /// this run, and by other live runs as they are noticed.
    history: Mutex<History>,
    changed: Mutex<Vec<SourceChange>>,
    units_resumed: AtomicUsize,
    units_run: AtomicUsize,
    records: AtomicU64,
}

/// Units failing one after the other, with no success between, that end a run: the
/// source or the destination is down, and going on would only fail every unit.
const FAILURES_IN_A_ROW: usize = 8;

/// Releases a unit slot when dropped, whatever happened to the unit.
struct SlotGuard<'a>(&'a Slots);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// Runs `f`, turning a panic into an error (a bug in one unit must not hang or
/// tear down the run; it fails that unit and is reported).
fn unpanicked<T>(what: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(anyhow::anyhow!("{what}: panicked: {msg}"))
        }
    }
}

/// What became of a folder the walk offered.
enum Start {
    /// Its units are running, or it needs nothing (committed, not selected).
    Done,
    /// Another live run holds it: come back later.
    Busy(String, Vec<FileEntry>, Box<lease::Holder>),
    /// The run is stopping.
    Stop,
}

impl Run<'_> {
    fn fail(&self, e: anyhow::Error) {
        self.failed.store(true, Ordering::SeqCst);
        let mut slot = self.error.lock().unwrap();
        if slot.is_none() {
            *slot = Some(e);
        }
    }

    /// Records a unit (or a folder, with `unit` `None`) that could not be done.
    fn failed_work(&self, dir: &str, unit: Option<&UnitSpec>, e: &anyhow::Error) {
        let error = format!("{e:#}");
        tracing::error!(folder = %dir, file = unit.map_or("", |u| u.file.as_str()), error = %error, "failed; the run goes on with the rest, and a rerun does this again");
        self.failures.lock().unwrap().push(FailedWork {
            folder: dir.to_string(),
            file: unit.map_or(String::new(), |u| u.file.clone()),
            start: unit.map_or(0, |u| u.start),
            end: unit.map_or(0, |u| u.end),
            error: error.clone(),
        });
        let n = self.failing_in_a_row.fetch_add(1, Ordering::SeqCst) + 1;
        if n >= FAILURES_IN_A_ROW {
            self.fail(anyhow::anyhow!(
                "{n} units failed one after another, the last with: {error}; stopping (rerun once the source and the destination are reachable)"
            ));
        }
    }

    fn advance(&self, bytes: u64, records: u64) {
        let total = self.records.fetch_add(records, Ordering::Relaxed) + records;
        self.io.progress.inc(bytes);
        if records > 0 {
            self.io.progress.set_message(format!("{total} records"));
        }
    }

    fn halted(&self) -> bool {
        self.failed.load(Ordering::SeqCst) || self.io.stop.load(Ordering::SeqCst)
    }

    /// A unit's checkpoint from an earlier run, if it is complete, was made with the
    /// same selection of days, and the file has the size it had then.
    fn staged(&self, g: &Group, u: &UnitSpec) -> anyhow::Result<Option<UnitManifest>> {
        let (pieces_key, manifest_key) = unit::unit_keys(&self.job, &g.id, u);
        let Some(bytes) = self.io.staging.get(&manifest_key)? else {
            return Ok(None);
        };
        let m: UnitManifest = match serde_json::from_slice(&bytes) {
            Ok(m) => m,
            Err(_) => return Ok(None),
        };
        // A checkpoint without a piece index was written by an older version.
        if m.format != FORMAT
            || m.pieces_key != pieces_key
            || m.selection != g.selection
            || m.index.is_none()
        {
            return Ok(None);
        }
        if m.file_size != u.file_size {
            tracing::warn!(file = %u.file, was = m.file_size, now = u.file_size, "the file changed size since its unit was checkpointed; redoing the unit");
            return Ok(None);
        }
        // The pieces must be exactly what the checkpoint describes.
        let mut pieces = match self.io.staging.open(&pieces_key) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut hasher = Crc32Writer(crc32fast::Hasher::new());
        std::io::copy(&mut pieces, &mut hasher)?;
        let intact = hasher.0.finalize() == m.pieces_crc32;
        if !intact {
            tracing::warn!(file = %u.file, start = u.start, "staged pieces do not match their checkpoint; redoing the unit");
        }
        Ok(intact.then_some(m))
    }

    fn run_unit(&self, g: &Group, i: usize) -> anyhow::Result<UnitManifest> {
        let u = &g.units[i];
        if let Some(m) = self.staged(g, u)? {
            self.units_resumed.fetch_add(1, Ordering::Relaxed);
            self.advance(
                u.end - u.start,
                m.stats.records_in + m.stats.records_filtered,
            );
            return Ok(m);
        }
        self.units_run.fetch_add(1, Ordering::Relaxed);
        let on_progress = |bytes: u64, records: u64| self.advance(bytes, records);
        let ctx = unit::UnitCtx {
            mappings: self.io.mappings,
            source: self.io.source,
            staging: self.io.staging,
            job: &self.job,
            group: &g.id,
            selection: &g.selection,
            filter: self.io.opts.filter.as_ref().map(|f| &f.0),
            buffer_size: self.io.opts.buffer_size,
            piece_max: (self.io.opts.target_size / 8).max(1),
            on_progress: &on_progress,
            reprocess: self.io.opts.reprocess.as_ref(),
            ingest: self.io.opts.ingest,
        };
        let m = unit::process(&ctx, u)
            .with_context(|| format!("staging unit {} [{}, {})", u.file, u.start, u.end))?;
        crate::failpoint::hit("unit-staged");
        Ok(m)
    }

    fn assemble(&self, g: &Group) -> anyhow::Result<()> {
        let units: Vec<UnitManifest> = std::mem::take(&mut *g.done.lock().unwrap())
            .into_iter()
            .map(|m| m.expect("every unit staged"))
            .collect();
        // Asked of the store itself at the commit points: a run whose heartbeats
        // failed past the TTL may have lost the folder without knowing it.
        let lease_lost = || !self.leases.confirm(&g.lease).unwrap_or(false);
        // The manifest a retry replaces, read before it is.
        let old: Option<GroupManifest> = if let Some(x) = &g.replaces {
            let key = manifest::manifest_key(&self.job, x);
            match self.io.dest.get(&key)? {
                Some(b) => {
                    Some(serde_json::from_slice(&b).with_context(|| format!("reading {key}"))?)
                }
                None => None,
            }
        } else {
            None
        };
        let ctx = assemble::AssembleCtx {
            dest: self.io.dest,
            staging: self.io.staging,
            job: &self.job,
            target_size: self.io.opts.target_size,
            xz_preset: self.io.opts.xz_preset,
            selection: &g.selection,
            lease_lost: &lease_lost,
            replaces: g.replaces.as_deref(),
        };
        let m = assemble::assemble(&ctx, &g.id, &g.dir, &units)
            .with_context(|| format!("assembling folder {:?}", g.dir))?;
        tracing::debug!(folder = %g.dir, objects = m.objects.len(), records = m.stats.records_out, "group committed");
        if let Some(old) = old {
            // Committed under new names: the old group goes, objects first (a crash
            // in between is finished by the next run holding the folder, or the
            // sweep, from `replaces`).
            remove_group(self.io.dest, &old)?;
            let recovered = m.stats.records_in.saturating_sub(old.stats.records_in);
            tracing::info!(folder = %g.dir, recovered, unreadable_before = old.stats.unreadable.len(), unreadable_now = m.stats.unreadable.len(), "folder read again");
        }
        self.history.lock().unwrap().add(&m);
        Ok(())
    }

    /// Ends a group's work: assembles it when every unit is staged, and gives its
    /// folder's lease back either way.
    fn finish_group(&self, g: &Group) {
        let complete = !g.failed.load(Ordering::SeqCst)
            && !self.halted()
            && g.done.lock().unwrap().iter().all(Option::is_some);
        if complete {
            match unpanicked("assembly", || self.assemble(g)) {
                Ok(()) => {
                    self.failing_in_a_row.store(0, Ordering::SeqCst);
                }
                Err(e) => self.failed_work(&g.dir, None, &e),
            }
        }
        if g.lease_refs.fetch_sub(1, Ordering::SeqCst) == 1 {
            if let Err(e) = self.leases.release(&g.lease) {
                tracing::warn!(folder = %g.dir, error = %e, "could not release the folder's lease; it expires by itself");
            }
        }
    }

    /// Compares a committed folder's files now with what its last run read, and
    /// reports the differences (without exporting them).
    fn check_unchanged(&self, dir: &str, files: &[FileEntry]) -> anyhow::Result<()> {
        let (digest, group) = {
            let h = self.history.lock().unwrap();
            let Some(last) = h.by_dir.get(dir).and_then(|v| v.last()) else {
                return Ok(());
            };
            (last.files_digest, last.group.clone())
        };
        let now = files_digest(files.iter().map(|f| (f.path.as_str(), f.size)));
        if digest == 0 || digest == now {
            return Ok(());
        }
        let key = manifest::manifest_key(&self.job, &group);
        let Some(bytes) = self.io.dest.get(&key)? else {
            return Ok(());
        };
        let m: GroupManifest =
            serde_json::from_slice(&bytes).with_context(|| format!("reading {key}"))?;
        let read: HashMap<&str, u64> = m
            .units
            .iter()
            .map(|u| (u.file.as_str(), u.file_size))
            .collect();
        let here: HashMap<&str, u64> = files.iter().map(|f| (f.path.as_str(), f.size)).collect();
        let mut change = SourceChange {
            folder: dir.to_string(),
            added: Vec::new(),
            resized: Vec::new(),
            removed: Vec::new(),
        };
        for f in files {
            match read.get(f.path.as_str()) {
                None => change.added.push(f.path.clone()),
                Some(&size) if size != f.size => change.resized.push(f.path.clone()),
                Some(_) => {}
            }
        }
        let mut removed: Vec<String> = read
            .keys()
            .filter(|f| !here.contains_key(*f))
            .map(|f| f.to_string())
            .collect();
        removed.sort();
        change.removed = removed;
        tracing::warn!(folder = %dir, added = change.added.len(), resized = change.resized.len(), removed = change.removed.len(),
            "a committed folder's files changed since it was exported; not exported again (see the report's source_changed)");
        self.changed.lock().unwrap().push(change);
        Ok(())
    }
}

/// The group id of a folder for a selection: a first run of the folder over every
/// day is named by the folder alone; any other (a window, or a later run adding
/// days) by the folder and its selection, so that two runs exporting different
/// days of a folder never write under the same names.
pub(crate) fn slice_id(dir: &str, selection: &Selection) -> String {
    if selection.covered.is_empty() && selection.window.is_open() {
        plan::group_id(dir)
    } else {
        // Prefixed by the folder's id, so a folder's manifests list together.
        let sel = serde_json::to_string(selection).expect("selection serialises");
        format!(
            "{}-{}",
            plan::group_id(dir),
            manifest::short_hash(&format!("group\0{dir}\0{sel}"), 8)
        )
    }
}

/// What every step of a run reads: the inputs of [`export`], passed on as one.
#[derive(Clone, Copy)]
struct Io<'a> {
    mappings: &'a Mappings,
    source: &'a dyn Source,
    dest: &'a dyn Store,
    staging: &'a dyn Store,
    opts: &'a ExportOptions,
    progress: &'a indicatif::ProgressBar,
    stop: &'a AtomicBool,
}

/// How an export ended: its report (always, whatever happened), and whether it
/// was stopped by a signal.
pub struct Outcome {
    /// The report of the whole job as far as it got; `error` and `failed` say what
    /// went wrong.
    pub report: Report,
    /// Stopped by a signal (checkpoints written).
    pub interrupted: bool,
}

/// Runs (or resumes) an export. `stop` is raised by a signal handler: no new unit
/// starts, running ones finish and are checkpointed. Several runs of one job may run
/// at once, on one machine or many: they share the folders through leases (see
/// [`lease`]), and a folder another live run is exporting is waited for, or taken
/// over once that run stops renewing its lease.
pub fn export(
    mappings: &Mappings,
    source: &dyn Source,
    dest: &dyn Store,
    staging: &dyn Store,
    opts: &ExportOptions,
    progress: &indicatif::ProgressBar,
    stop: &AtomicBool,
) -> Outcome {
    let started = Instant::now();
    let spec = job_spec(opts, mappings);
    let mut report = Report {
        job: spec.id(),
        source: source.describe(),
        destination: dest.describe(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        mappings_version: mappings.version().to_string(),
        ..Default::default()
    };
    let mut interrupted = false;
    let io = Io {
        mappings,
        source,
        dest,
        staging,
        opts,
        progress,
        stop,
    };
    if let Err(e) = export_job(&io, &mut report, &mut interrupted) {
        report.error = Some(format!("{e:#}"));
        report.complete = false;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Outcome {
        report,
        interrupted,
    }
}

fn export_job(io: &Io<'_>, report: &mut Report, interrupted: &mut bool) -> anyhow::Result<()> {
    let Io {
        mappings,
        source,
        dest,
        opts,
        stop,
        ..
    } = *io;
    let spec = job_spec(opts, mappings);
    let job = claim_job(dest, &spec, &source.describe())?;
    let window = match (opts.window.from, opts.window.to) {
        (None, None) => "all".to_string(),
        (f, t) => format!(
            "{}..{}",
            f.map_or("".into(), |d| d.to_string()),
            t.map_or("".into(), |d| d.to_string())
        ),
    };
    let leases = Leases::new(dest, &job, RunId::this_process(), opts.lease_ttl, window);
    // Announce this run before looking for a sweep in progress (see `lease`).
    leases
        .announce()
        .with_context(|| format!("writing this run's lease in {}", dest.describe()))?;
    with_heartbeat(&leases, || {
        // A sweep in progress finishes first (see `lease`); this run's lease is
        // renewed meanwhile, so a sweeper that starts later sees it.
        let mut said = false;
        while let Some(h) = leases.holder_of(lease::SWEEP)? {
            if !said {
                tracing::info!(holder = %h.describe(manifest::now_secs()), "another run of this job is sweeping its leftovers; waiting for it to finish");
                said = true;
            }
            if stop.load(Ordering::SeqCst) {
                leases.withdraw()?;
                *interrupted = true;
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        run_job(io, report, interrupted, &job, &leases)
    })
}

/// Runs `f` while a thread renews `leases` every quarter of their TTL.
fn with_heartbeat<T>(leases: &Leases<'_>, f: impl FnOnce() -> T) -> T {
    let done = (Mutex::new(false), Condvar::new());
    std::thread::scope(|ts| {
        let done = &done;
        std::thread::Builder::new()
            .name("backfill-heartbeat".into())
            .spawn_scoped(ts, move || loop {
                let (lock, cv) = done;
                let g = lock.lock().unwrap();
                let (g, _) = cv.wait_timeout(g, leases.heartbeat_every()).unwrap();
                if *g {
                    return;
                }
                drop(g);
                if let Err(e) = leases.heartbeat() {
                    tracing::warn!(error = %e, "lease heartbeat failed; retrying at the next beat");
                }
            })
            .expect("spawn the heartbeat thread");
        let r = f();
        *done.0.lock().unwrap() = true;
        done.1.notify_all();
        r
    })
}

fn run_job(
    io: &Io<'_>,
    report: &mut Report,
    interrupted: &mut bool,
    job: &str,
    leases: &Leases<'_>,
) -> anyhow::Result<()> {
    let Io {
        dest,
        staging,
        opts,
        ..
    } = *io;
    let outcome = walk_job(io, report, interrupted, job, leases);
    // Whatever happened, no lease of this run outlives it.
    leases.release_all();
    let complete = outcome.as_ref().is_ok_and(|c| *c);
    report.complete = complete;
    if complete && opts.only_folder.is_some() {
        report.sweep =
            "not run for one folder (the queue's workers sweep when the queue is empty)".into();
        if let Err(e) = leases.withdraw() {
            tracing::warn!(error = %e, "could not withdraw this run's lease; it expires by itself");
        }
    } else if complete {
        report.sweep = match sweep(dest, staging, opts, job, leases, report) {
            Ok(s) => s,
            Err(e) => {
                leases.release_all();
                return Err(e.context("sweeping the job's leftovers"));
            }
        };
    } else if let Err(e) = leases.withdraw() {
        tracing::warn!(error = %e, "could not withdraw this run's lease; it expires by itself");
    }
    outcome.map(|_| ())
}

/// Walks the source, runs every selected folder not yet committed (waiting for
/// those other runs hold), and fills the report. Returns whether every selected
/// folder is committed now.
fn walk_job(
    io: &Io<'_>,
    report: &mut Report,
    interrupted: &mut bool,
    job: &str,
    leases: &Leases<'_>,
) -> anyhow::Result<bool> {
    let Io {
        source,
        dest,
        opts,
        progress,
        ..
    } = *io;
    if let Some(dir) = &opts.only_folder {
        let mut history = History::default();
        history.refresh(dest, job, Some(dir))?;
        let mut items = source
            .list_folder(dir)
            .with_context(|| format!("listing folder {dir} of {}", source.describe()))?;
        return run_folders(
            io,
            report,
            interrupted,
            job,
            leases,
            history,
            &mut |visit| {
                for item in std::mem::take(&mut items) {
                    if !visit(item) {
                        break;
                    }
                }
                Ok(())
            },
        );
    }
    let history = History::load(dest, job)?;
    let survey = survey(source, opts)?;
    progress.set_length(survey.share_bytes);
    let record = manifest::RunRecord {
        job: job.to_string(),
        started_at: leases.me().started_at,
        host: leases.me().host.clone(),
        pid: leases.me().pid,
        jobs: opts.jobs,
        folders: survey.folders,
        files: survey.files,
        bytes: survey.bytes,
        units: survey.units,
        shard: opts.shard.map(|(i, n)| format!("{i}/{n}")),
    };
    record.write(dest)?;
    run_folders(
        io,
        report,
        interrupted,
        job,
        leases,
        history,
        &mut |visit| source.walk(visit),
    )
}

/// Offers a run its folders: the whole source's walk, or one folder's listing.
type Walker<'w> = dyn FnMut(&mut dyn FnMut(WalkItem) -> bool) -> std::io::Result<()> + 'w;

/// The folders `walk` offers, run as [`walk_job`] says.
fn run_folders(
    io: &Io<'_>,
    report: &mut Report,
    interrupted: &mut bool,
    job: &str,
    leases: &Leases<'_>,
    history: History,
    walk: &mut Walker<'_>,
) -> anyhow::Result<bool> {
    let Io {
        source,
        dest,
        opts,
        progress,
        stop,
        ..
    } = *io;
    let run = Run {
        io: *io,
        job: job.to_string(),
        leases,
        failed: AtomicBool::new(false),
        error: Mutex::new(None),
        failures: Mutex::new(Vec::new()),
        failing_in_a_row: AtomicUsize::new(0),
        history: Mutex::new(history),
        changed: Mutex::new(Vec::new()),
        units_resumed: AtomicUsize::new(0),
        units_run: AtomicUsize::new(0),
        records: AtomicU64::new(0),
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.jobs.max(1))
        .thread_name(|i| format!("backfill-worker-{i}"))
        .build()?;
    let slots = Slots {
        free: Mutex::new(2 * opts.jobs.max(1)),
        cv: Condvar::new(),
    };
    let mut groups_resumed = 0u64;
    let mut folders_waited = 0u64;
    let mut all_started = false;
    let run_ref = &run;
    let slots_ref = &slots;
    let walked = pool.in_place_scope(|scope| {
        // Runs the units of one group of a folder whose lease this run holds; the
        // last group of the folder to finish gives the lease back.
        let spawn_group = |g: Group| {
            let g = Arc::new(g);
            for i in 0..g.units.len() {
                slots_ref.acquire();
                let g = Arc::clone(&g);
                scope.spawn(move |scope| {
                    let r = {
                        let _slot = SlotGuard(slots_ref);
                        if run_ref.halted() || g.failed.load(Ordering::SeqCst) {
                            None
                        } else {
                            Some(unpanicked("unit", || run_ref.run_unit(&g, i)))
                        }
                    };
                    match r {
                        Some(Ok(m)) => {
                            run_ref.failing_in_a_row.store(0, Ordering::SeqCst);
                            g.done.lock().unwrap()[i] = Some(m);
                        }
                        Some(Err(e)) => {
                            g.failed.store(true, Ordering::SeqCst);
                            run_ref.failed_work(&g.dir, Some(&g.units[i]), &e);
                        }
                        None => {}
                    }
                    if g.remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
                        scope.spawn(move |_| run_ref.finish_group(&g));
                    }
                });
            }
        };
        // Offers one folder: skipped when committed (unless `--retry-unreadable` has
        // regions of it to read again), run when its lease is ours, handed back when
        // another live run holds it.
        let mut start = |dir: String, files: Vec<FileEntry>| -> Start {
            if run_ref.halted() {
                return Start::Stop;
            }
            let bytes: u64 = files.iter().map(|f| f.size).sum();
            let committed = |run: &Run<'_>| {
                plan::covers(
                    &run.history.lock().unwrap().covered(&dir),
                    &opts.window,
                )
            };
            // Committed groups of the folder that recorded unreadable regions.
            let to_retry = |run: &Run<'_>| -> Vec<(String, Selection)> {
                if !opts.retry_unreadable {
                    return Vec::new();
                }
                run.history
                    .lock()
                    .unwrap()
                    .by_dir
                    .get(&dir)
                    .map(|v| {
                        v.iter()
                            .filter(|s| !s.stats.unreadable.is_empty())
                            .map(|s| (s.group.clone(), s.selection.clone()))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            if committed(run_ref) && to_retry(run_ref).is_empty() {
                if let Err(e) = run_ref.check_unchanged(&dir, &files) {
                    tracing::warn!(folder = %dir, error = %format!("{e:#}"), "could not compare the folder with its manifest");
                }
                groups_resumed += 1;
                progress.inc(bytes);
                return Start::Done;
            }
            let lease_name = lease::folder_lease(&plan::group_id(&dir));
            match run_ref.leases.try_take(&lease_name, &format!("folder {dir}")) {
                Ok(Taken::Held) => {}
                Ok(Taken::Busy(h)) => return Start::Busy(dir, files, Box::new(h)),
                Err(e) => {
                    run_ref.fail(anyhow::Error::from(e).context(format!("taking the lease of folder {dir}")));
                    return Start::Stop;
                }
            }
            // Another run may have committed the folder since this run looked: its
            // manifests alone (they share the folder's id as prefix), not the job's.
            let refreshed = run_ref
                .history
                .lock()
                .unwrap()
                .refresh(dest, &run_ref.job, Some(&dir));
            if let Err(e) = refreshed {
                let _ = run_ref.leases.release(&lease_name);
                run_ref.fail(e);
                return Start::Stop;
            }
            let mut groups: Vec<(String, Selection, Option<String>)> = Vec::new();
            if committed(run_ref) {
                for (old, sel) in to_retry(run_ref) {
                    let key = manifest::manifest_key(&run_ref.job, &old);
                    let digest = match dest.get(&key) {
                        Ok(Some(b)) => hex::encode(&manifest::sha256(&b)[..3]),
                        Ok(None) => continue,
                        Err(e) => {
                            let _ = run_ref.leases.release(&lease_name);
                            run_ref.fail(anyhow::Error::from(e).context(format!("reading {key}")));
                            return Start::Stop;
                        }
                    };
                    let base = old.split("-r").next().unwrap_or(&old).to_string();
                    groups.push((format!("{base}-r{digest}"), sel, Some(old)));
                }
                if groups.is_empty() {
                    let _ = run_ref.leases.release(&lease_name);
                    groups_resumed += 1;
                    progress.inc(bytes);
                    return Start::Done;
                }
                tracing::info!(folder = %dir, groups = groups.len(), "reading again a committed folder with unreadable regions (--retry-unreadable)");
            } else {
                let selection = Selection {
                    window: opts.window,
                    covered: run_ref.history.lock().unwrap().covered(&dir),
                };
                groups.push((slice_id(&dir, &selection), selection, None));
            }
            // Objects a dead run published for another selection of this folder and
            // never committed go now, while this run holds the folder.
            let keep = (groups.len() == 1).then(|| groups[0].0.clone());
            if let Err(e) = clear_intents(dest, &run_ref.job, Some(&dir), keep.as_deref()) {
                let _ = run_ref.leases.release(&lease_name);
                run_ref.failed_work(&dir, None, &e.context("removing a dead run's uncommitted objects"));
                return Start::Done;
            }
            let lease_refs = Arc::new(AtomicUsize::new(groups.len()));
            for (id, selection, replaces) in groups {
                let units = plan::units(&files, opts.split_size);
                let n = units.len();
                spawn_group(Group {
                    id,
                    dir: dir.clone(),
                    lease: lease_name.clone(),
                    lease_refs: Arc::clone(&lease_refs),
                    replaces,
                    selection,
                    units,
                    done: Mutex::new(vec![None; n]),
                    remaining: AtomicUsize::new(n),
                    failed: AtomicBool::new(false),
                });
            }
            Start::Done
        };
        let mut busy: Vec<(String, Vec<FileEntry>)> = Vec::new();
        // Folders with an entry that could not be listed: not exported (a folder
        // committed without one of its files would be a gap no rerun fills).
        let mut unlisted: HashSet<String> = HashSet::new();
        let walked = walk(&mut |item| {
            let (dir, files) = match item {
                WalkItem::Folder { dir, files } => (dir, files),
                WalkItem::Unreadable { path, error } => {
                    // The entry's folder, or the folder itself when its listing
                    // failed part-way.
                    let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
                    unlisted.insert(parent.to_string());
                    unlisted.insert(path.clone());
                    run_ref.failed_work(
                        parent,
                        None,
                        &anyhow::anyhow!("cannot list {path}: {error}"),
                    );
                    return !run_ref.halted();
                }
            };
            if !plan::folder_selected(&dir, &opts.window, opts.folder_margin)
                || !plan::in_shard(&dir, opts.shard)
            {
                return true;
            }
            if unlisted.contains(&dir) {
                progress.inc(files.iter().map(|f| f.size).sum());
                return true;
            }
            match start(dir, files) {
                Start::Done => true,
                Start::Busy(dir, files, h) => {
                    tracing::info!(folder = %dir, holder = %h.describe(manifest::now_secs()), "another run of this job is exporting this folder; coming back to it later");
                    busy.push((dir, files));
                    true
                }
                Start::Stop => false,
            }
        });
        if walked.is_err() || run_ref.halted() {
            return walked;
        }
        // Folders other runs held: wait until they commit them, or take them over
        // when those runs stop renewing their leases.
        folders_waited = busy.len() as u64;
        while !busy.is_empty() {
            let mut still = Vec::new();
            for (dir, files) in busy {
                match start(dir, files) {
                    Start::Done => {}
                    Start::Busy(dir, files, _) => still.push((dir, files)),
                    Start::Stop => return walked,
                }
            }
            busy = still;
            let until = Instant::now() + std::time::Duration::from_secs(1);
            while !busy.is_empty() && Instant::now() < until && !run_ref.halted() {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            if run_ref.halted() {
                return walked;
            }
        }
        all_started = true;
        walked
    });
    if let Err(e) = walked {
        run.fail(anyhow::Error::from(e).context(format!("listing {}", source.describe())));
    }
    *interrupted = stop.load(Ordering::SeqCst);
    let failures = std::mem::take(&mut *run.failures.lock().unwrap());
    let error = run.error.lock().unwrap().take();
    let mut history = run.history.into_inner().unwrap();
    // What other runs committed meanwhile, once, for the job-wide totals.
    if opts.only_folder.is_none() && error.is_none() {
        if let Err(e) = history.refresh(dest, job, None) {
            tracing::warn!(error = %format!("{e:#}"), "could not read the manifests other runs committed; the report counts what this run saw");
        }
    }
    report.groups_resumed = groups_resumed;
    report.folders_waited = folders_waited;
    report.units_resumed = run.units_resumed.load(Ordering::Relaxed) as u64;
    report.units_run = run.units_run.load(Ordering::Relaxed) as u64;
    history.totals(report);
    if opts.reprocess.is_some() {
        report.summarise_moves();
    }
    report.stats.unreadable.sort();
    report.failed = failures;
    report.source_changed = run.changed.into_inner().unwrap();
    if let Some(e) = error {
        return Err(e);
    }
    Ok(all_started && !*interrupted && report.failed.is_empty())
}

/// The end of a complete run: removes what crashed runs of the job left (objects no
/// manifest references, staging, incomplete uploads, expired leases), but only
/// while no other run of the job is alive and under the job's sweep lease (see
/// [`lease`]). Returns what it did, for the report.
fn sweep(
    dest: &dyn Store,
    staging: &dyn Store,
    opts: &ExportOptions,
    job: &str,
    leases: &Leases<'_>,
    report: &mut Report,
) -> anyhow::Result<String> {
    // This run is done: withdrawing first lets the last of several finishing runs
    // see that it is the last.
    leases.withdraw()?;
    // Another finishing run may hold the sweep lease only to find this one still
    // announced and step aside: wait for it rather than leave, and look again.
    let deadline = Instant::now() + std::time::Duration::from_secs(2 * opts.lease_ttl);
    loop {
        match leases.try_take(lease::SWEEP, "sweep")? {
            Taken::Held => break,
            Taken::Busy(h) if Instant::now() >= deadline => {
                return Ok(format!(
                    "left to {}, which is sweeping",
                    h.describe(manifest::now_secs())
                ));
            }
            Taken::Busy(_) => std::thread::sleep(std::time::Duration::from_millis(200)),
        }
    }
    let result = (|| -> anyhow::Result<String> {
        let others = leases.other_live_runs()?;
        if !others.is_empty() {
            let now = manifest::now_secs();
            let names: Vec<String> = others.iter().map(|h| h.describe(now)).collect();
            return Ok(format!(
                "left to the last live run of the job ({})",
                names.join("; ")
            ));
        }
        // Every manifest, read again just before: what other runs committed counts.
        let uncommitted = clear_intents(dest, job, None, None)?;
        let history = History::load(dest, job)?;
        // Replacements (`--retry-unreadable`) a crash interrupted: the old group goes.
        for g in &history.stale {
            if let Some(b) = dest.get(&manifest::manifest_key(job, g))? {
                let old: GroupManifest = serde_json::from_slice(&b)?;
                remove_group(dest, &old)?;
            }
        }
        let referenced = history.referenced;
        let (orphans, young) = remove_orphans(dest, job, &referenced, opts.orphan_grace)?;
        let orphans = orphans + uncommitted;
        let mut staged = 0;
        for m in staging.list(&format!("{}/staging/{job}/", manifest::BOOKKEEPING))? {
            crate::failpoint::hit("staging-remove");
            staging.delete(&m.key)?;
            staged += 1;
        }
        let ours = |key: &str| owned_by(key, job) || bookkeeping_of(key, job);
        let mut incomplete = dest.remove_incomplete(&ours, false)?;
        if !std::ptr::addr_eq(dest, staging) {
            incomplete += staging.remove_incomplete(&ours, false)?;
        }
        let expired = leases.remove_expired()?;
        report.orphans_removed = orphans;
        report.incomplete_removed = incomplete;
        let mut s = format!(
            "removed {orphans} orphan objects, {staged} staged objects, {incomplete} incomplete writes, {expired} expired leases"
        );
        if young > 0 {
            s += &format!(
                "; kept {young} unreferenced objects younger than --orphan-grace ({} s)",
                opts.orphan_grace
            );
        }
        Ok(s)
    })();
    leases.release(lease::SWEEP)?;
    result
}

/// The sweep of a job on its own (a queue worker once the queue is empty): under
/// the job's sweep lease, only when no run of the job is alive.
pub fn sweep_job(
    dest: &dyn Store,
    staging: &dyn Store,
    opts: &ExportOptions,
    job: &str,
) -> anyhow::Result<String> {
    let leases = Leases::new(
        dest,
        job,
        RunId::this_process(),
        opts.lease_ttl,
        "sweep".into(),
    );
    let mut report = Report::default();
    let r = sweep(dest, staging, opts, job, &leases, &mut report);
    leases.release_all();
    r
}

/// Deletes a committed group that another replaced: its objects, then its manifest.
fn remove_group(dest: &dyn Store, m: &GroupManifest) -> std::io::Result<()> {
    for o in m.objects.iter().chain(&m.errors) {
        dest.delete(&o.key)?;
    }
    dest.delete(&manifest::manifest_key(&m.job, &m.group))
}

/// Removes what dead runs published and never committed, as their intents list it:
/// for one folder (whose lease the caller holds) or, with `folder` `None`, for the
/// whole job (from the sweep, when no other run is alive). The intent of group
/// `keep` (the caller's own, which it is about to write again) stays. Returns how
/// many objects went.
fn clear_intents(
    dest: &dyn Store,
    job: &str,
    folder: Option<&str>,
    keep: Option<&str>,
) -> anyhow::Result<u64> {
    let prefix = match folder {
        Some(dir) => format!("{}{}/", manifest::intents_prefix(job), plan::group_id(dir)),
        None => manifest::intents_prefix(job),
    };
    let mut removed = 0;
    for meta in dest.list(&prefix)? {
        let Some(bytes) = dest.get(&meta.key)? else {
            continue;
        };
        let intent: manifest::Intent = serde_json::from_slice(&bytes)
            .with_context(|| format!("reading commit intent {}", meta.key))?;
        if keep == Some(intent.group.as_str()) {
            continue;
        }
        // Committed after all (a crash between the manifest and the intent's
        // removal): the objects are the manifest's.
        if dest
            .get(&manifest::manifest_key(job, &intent.group))?
            .is_none()
        {
            for key in &intent.keys {
                if dest.modified(key)?.is_some() {
                    tracing::warn!(key = %key, folder = %intent.dir, "removing an object a dead run published and never committed");
                    dest.delete(key)?;
                    removed += 1;
                }
            }
        }
        dest.delete(&meta.key)?;
    }
    Ok(removed)
}

/// Deletes objects of `job` that no group manifest references and that are older
/// than `grace` seconds; returns how many went and how many were kept as too
/// young. Objects of other writers are never touched (SPEC §6).
pub fn remove_orphans(
    dest: &dyn Store,
    job: &str,
    referenced: &HashSet<u64>,
    grace: u64,
) -> anyhow::Result<(u64, u64)> {
    // The whole store is scanned as it is listed (it may hold years of objects of
    // other jobs); only this job's unreferenced keys, normally none, are kept, and
    // deleted after the listing.
    let mut orphans = Vec::new();
    dest.list_each("", &mut |meta| {
        if owned_by(&meta.key, job) && !referenced.contains(&hash64(&meta.key)) {
            orphans.push(meta.key);
        }
        Ok(())
    })?;
    let now = manifest::now_secs();
    let (mut removed, mut young) = (0, 0);
    for key in &orphans {
        // The age is read right before the delete: a rewrite since the listing
        // makes the object young again.
        match dest.modified(key)? {
            None => continue,
            Some(t) if now.saturating_sub(t) < grace => {
                young += 1;
                continue;
            }
            Some(_) => {}
        }
        tracing::warn!(key = %key, "removing orphan object of this job (no manifest references it)");
        crate::failpoint::hit("sweep-delete");
        dest.delete(key)?;
        removed += 1;
    }
    Ok((removed, young))
}

/// Feeds what is written to a CRC-32, to check staged pieces as they stream by.
struct Crc32Writer(crc32fast::Hasher);

impl std::io::Write for Crc32Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_is_by_job_id_in_the_suffix() {
        let job = "d7b22151";
        for (key, owned) in [
            ("saved_session/Firefox/nightly/22.0a1/20130226031002.20131011.v2.log.d7b22151-98db8291-0.xz", true),
            ("saved_session/Firefox/nightly/22.0a1/20130226031002.20131011.v2.log.d7b22152-98db8291-0.xz", false),
            ("saved_session/Firefox/nightly/22.0a1/20130226031002.20131011.v2.log.e28a4032eb744f089a1828ac7399e5d8.lzma", false),
            ("saved_session/Firefox/nightly/22.0a1/20130226031002.20131011.v2.log.ingest-d7b22151-0.xz", false),
            ("_backfill/errors/d7b22151/98db8291-0.jsonl.xz", true),
            ("_backfill/errors/other/98db8291-0.jsonl.xz", false),
            ("_backfill/manifests/d7b22151/98db8291.json", false),
            ("_backfill/staging/d7b22151/98db8291/x.d7b22151-1.xz", false),
        ] {
            assert_eq!(owned_by(key, job), owned, "{key}");
        }
    }
}
