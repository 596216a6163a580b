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
//! Every name and byte depends only on the input, the mappings and the options, never
//! on `--jobs` or timing. Memory is bounded by `--jobs` × (unit buffer + one xz
//! encoder + the largest record) plus assembly's one piece per partition in flight.

pub mod assemble;
pub mod errors;
pub mod manifest;
pub mod plan;
pub mod status;
pub mod unit;
pub mod xz;

use crate::core::mappings::Mappings;
use crate::core::schema::Filter;
use crate::source::{Source, WalkItem};
use crate::store::Store;
use anyhow::{bail, Context as _};
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
}

impl Report {
    /// The documented exit code: 3 when some input could not be read, else 0.
    pub fn exit_code(&self) -> i32 {
        if self.stats.unreadable.is_empty() {
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
    selection: Selection,
    units: Vec<UnitSpec>,
    done: Mutex<Vec<Option<UnitManifest>>>,
    remaining: AtomicUsize,
}

/// What a committed group contributes to the job report: small, because a long job
/// has many groups.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The source folder.
    pub dir: String,
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
            selection: m.selection.clone(),
            stats: m.stats.clone(),
            objects: m.objects.len() as u64,
            bytes_out: m.objects.iter().map(|o| o.bytes).sum(),
            error_objects: m.errors.len() as u64,
            error_bytes: m.errors.iter().map(|o| o.bytes).sum(),
            partitions: m.objects.iter().map(|o| hash64(&o.partition)).collect(),
            staged_bytes: m.staged_bytes,
            committed_at: m.committed_at,
        }
    }
}

/// The committed groups of a job, by folder, and the keys they reference.
#[derive(Default)]
pub struct History {
    /// Summaries by folder, oldest selection first.
    pub by_dir: HashMap<String, Vec<Summary>>,
    referenced: HashSet<u64>,
}

impl History {
    /// Reads every group manifest of `job` in `dest`.
    pub fn load(dest: &dyn Store, job: &str) -> anyhow::Result<History> {
        let mut h = History::default();
        for meta in dest.list(&manifest::manifests_prefix(job))? {
            let Some(bytes) = dest.get(&meta.key)? else {
                continue;
            };
            let m: GroupManifest = serde_json::from_slice(&bytes)
                .with_context(|| format!("reading group manifest {}", meta.key))?;
            h.add(&m);
        }
        Ok(h)
    }

    fn add(&mut self, m: &GroupManifest) {
        let s = Summary::of(m, Some(&mut self.referenced));
        self.push(s);
    }

    fn push(&mut self, s: Summary) {
        let v = self.by_dir.entry(s.dir.clone()).or_default();
        v.push(s);
        v.sort_by_key(|s| s.selection.covered.len());
    }

    /// Takes in the groups another history holds (those a run committed).
    fn merge(&mut self, other: History) {
        self.referenced.extend(other.referenced);
        for s in other.by_dir.into_values().flatten() {
            self.push(s);
        }
    }

    /// Windows already exported from `dir`.
    fn covered(&self, dir: &str) -> Vec<DayWindow> {
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
/// manifests, staging, error output): where a killed writer can leave a temporary.
pub fn bookkeeping_of(key: &str, job: &str) -> bool {
    let b = manifest::BOOKKEEPING;
    key == manifest::job_key(job)
        || [
            format!("{b}/staging/{job}/"),
            manifest::manifests_prefix(job),
            manifest::runs_prefix(job),
            manifest::errors_prefix(job),
        ]
        .iter()
        .any(|p| key.starts_with(p.as_str()))
}

/// Shared state of a run.
struct Run<'a> {
    mappings: &'a Mappings,
    source: &'a dyn Source,
    dest: &'a dyn Store,
    staging: &'a dyn Store,
    opts: &'a ExportOptions,
    job: String,
    progress: &'a indicatif::ProgressBar,
    stop: &'a AtomicBool,
    failed: AtomicBool,
    error: Mutex<Option<anyhow::Error>>,
    /// What this run committed, summarised: a whole manifest lists every object,
    /// and a long run commits many.
    committed: Mutex<History>,
    units_resumed: AtomicUsize,
    units_run: AtomicUsize,
    records: AtomicU64,
}

impl Run<'_> {
    fn fail(&self, e: anyhow::Error) {
        self.failed.store(true, Ordering::SeqCst);
        let mut slot = self.error.lock().unwrap();
        if slot.is_none() {
            *slot = Some(e);
        }
    }

    fn advance(&self, bytes: u64, records: u64) {
        let total = self.records.fetch_add(records, Ordering::Relaxed) + records;
        self.progress.inc(bytes);
        if records > 0 {
            self.progress.set_message(format!("{total} records"));
        }
    }

    fn halted(&self) -> bool {
        self.failed.load(Ordering::SeqCst) || self.stop.load(Ordering::SeqCst)
    }

    /// A unit's checkpoint from an earlier run, if it is complete and was made
    /// with the same selection of days.
    fn staged(&self, g: &Group, u: &UnitSpec) -> anyhow::Result<Option<UnitManifest>> {
        let (pieces_key, manifest_key) = unit::unit_keys(&self.job, &g.id, u);
        let Some(bytes) = self.staging.get(&manifest_key)? else {
            return Ok(None);
        };
        let m: UnitManifest = match serde_json::from_slice(&bytes) {
            Ok(m) => m,
            Err(_) => return Ok(None),
        };
        if m.format != FORMAT || m.pieces_key != pieces_key || m.selection != g.selection {
            return Ok(None);
        }
        // The pieces must be exactly what the checkpoint describes.
        let mut pieces = match self.staging.open(&pieces_key) {
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
            mappings: self.mappings,
            source: self.source,
            staging: self.staging,
            job: &self.job,
            group: &g.id,
            selection: &g.selection,
            filter: self.opts.filter.as_ref().map(|f| &f.0),
            buffer_size: self.opts.buffer_size,
            piece_max: (self.opts.target_size / 8).max(1),
            on_progress: &on_progress,
        };
        unit::process(&ctx, u)
            .with_context(|| format!("staging unit {} [{}, {})", u.file, u.start, u.end))
    }

    fn assemble(&self, g: &Group) -> anyhow::Result<()> {
        let units: Vec<UnitManifest> = std::mem::take(&mut *g.done.lock().unwrap())
            .into_iter()
            .map(|m| m.expect("every unit staged"))
            .collect();
        let ctx = assemble::AssembleCtx {
            dest: self.dest,
            staging: self.staging,
            job: &self.job,
            target_size: self.opts.target_size,
            xz_preset: self.opts.xz_preset,
            selection: &g.selection,
        };
        let m = assemble::assemble(&ctx, &g.id, &g.dir, &units)
            .with_context(|| format!("assembling folder {:?}", g.dir))?;
        tracing::debug!(folder = %g.dir, objects = m.objects.len(), records = m.stats.records_out, "group committed");
        self.committed.lock().unwrap().add(&m);
        Ok(())
    }
}

/// The group id of a folder for a selection: the folder's first run is named by the
/// folder alone; later runs with other windows by the folder and their selection.
pub(crate) fn slice_id(dir: &str, selection: &Selection) -> String {
    if selection.covered.is_empty() {
        plan::group_id(dir)
    } else {
        let sel = serde_json::to_string(selection).expect("selection serialises");
        manifest::short_hash(&format!("group\0{dir}\0{sel}"), 8)
    }
}

/// Runs (or resumes) an export. `stop` is raised by a signal handler: no new unit
/// starts, running ones finish and are checkpointed. Returns the report and whether
/// the run was stopped before the end.
#[allow(clippy::too_many_arguments)]
pub fn export(
    mappings: &Mappings,
    source: &dyn Source,
    dest: &dyn Store,
    staging: &dyn Store,
    opts: &ExportOptions,
    progress: &indicatif::ProgressBar,
    stop: &AtomicBool,
) -> anyhow::Result<(Report, bool)> {
    let started = Instant::now();
    let spec = job_spec(opts, mappings);
    let job = claim_job(dest, &spec, &source.describe())?;
    let mut history = History::load(dest, &job)?;
    let survey = survey(source, opts)?;
    progress.set_length(survey.bytes);
    let record = manifest::RunRecord {
        job: job.clone(),
        started_at: manifest::now_secs(),
        host: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default(),
        pid: std::process::id(),
        jobs: opts.jobs,
        folders: survey.folders,
        files: survey.files,
        bytes: survey.bytes,
        units: survey.units,
    };
    dest.put(
        &format!(
            "{}{}-{}-{}.json",
            manifest::runs_prefix(&job),
            record.started_at,
            record.host,
            record.pid
        ),
        &serde_json::to_vec_pretty(&record)?,
    )?;
    let run = Run {
        mappings,
        source,
        dest,
        staging,
        opts,
        job: job.clone(),
        progress,
        stop,
        failed: AtomicBool::new(false),
        error: Mutex::new(None),
        committed: Mutex::new(History::default()),
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
    let mut listing_unreadable = Vec::new();
    let mut groups_resumed = 0u64;
    let run_ref = &run;
    let slots_ref = &slots;
    let history_ref = &history;
    let walked = pool.in_place_scope(|scope| {
        source.walk(&mut |item| {
            if run_ref.halted() {
                return false;
            }
            let (dir, files) = match item {
                WalkItem::Folder { dir, files } => (dir, files),
                WalkItem::Unreadable { path, error } => {
                    listing_unreadable.push(Unreadable {
                        file: path,
                        offset: 0,
                        length: 0,
                        error,
                    });
                    return true;
                }
            };
            if !plan::folder_selected(&dir, &opts.window, opts.folder_margin) {
                return true;
            }
            let covered = history_ref.covered(&dir);
            if plan::covers(&covered, &opts.window) {
                groups_resumed += 1;
                progress.inc(files.iter().map(|f| f.size).sum());
                return true;
            }
            let selection = Selection {
                window: opts.window,
                covered,
            };
            let units = plan::units(&files, opts.split_size);
            let n = units.len();
            let g = Arc::new(Group {
                id: slice_id(&dir, &selection),
                dir,
                selection,
                units,
                done: Mutex::new(vec![None; n]),
                remaining: AtomicUsize::new(n),
            });
            for i in 0..n {
                slots_ref.acquire();
                if run_ref.halted() {
                    slots_ref.release();
                    return false;
                }
                let g = Arc::clone(&g);
                scope.spawn(move |scope| {
                    let r = if run_ref.halted() {
                        None
                    } else {
                        Some(run_ref.run_unit(&g, i))
                    };
                    slots_ref.release();
                    match r {
                        Some(Ok(m)) => g.done.lock().unwrap()[i] = Some(m),
                        Some(Err(e)) => run_ref.fail(e),
                        None => {}
                    }
                    if g.remaining.fetch_sub(1, Ordering::SeqCst) == 1 && !run_ref.halted() {
                        scope.spawn(move |_| {
                            if let Err(e) = run_ref.assemble(&g) {
                                run_ref.fail(e);
                            }
                        });
                    }
                });
            }
            true
        })
    });
    walked.with_context(|| format!("listing {}", source.describe()))?;
    if let Some(e) = run.error.lock().unwrap().take() {
        return Err(e);
    }
    let interrupted = stop.load(Ordering::SeqCst);
    history.merge(std::mem::take(&mut *run.committed.lock().unwrap()));
    let mut report = Report {
        job: job.clone(),
        source: source.describe(),
        destination: dest.describe(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        mappings_version: mappings.version().to_string(),
        groups_resumed,
        units_resumed: run.units_resumed.load(Ordering::Relaxed) as u64,
        units_run: run.units_run.load(Ordering::Relaxed) as u64,
        ..Default::default()
    };
    history.totals(&mut report);
    report.stats.unreadable.extend(listing_unreadable);
    report.stats.unreadable.sort();
    if !interrupted {
        // Every selected folder is committed: anything of this job that no manifest
        // references is left from a crash with other input, and goes.
        report.orphans_removed = remove_orphans(dest, &job, &history.referenced)?;
        let staged = format!("{}/staging/{job}/", manifest::BOOKKEEPING);
        // Every selected folder is committed; checkpoints left by a crash between a
        // commit and its clean-up, or by runs with other windows, are not needed.
        for m in staging.list(&staged)? {
            staging.delete(&m.key)?;
        }
        let ours = |key: &str| owned_by(key, &job) || bookkeeping_of(key, &job);
        report.incomplete_removed = dest.remove_incomplete(&ours)?;
        if !std::ptr::addr_eq(dest, staging) {
            report.incomplete_removed += staging.remove_incomplete(&ours)?;
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok((report, interrupted))
}

/// Deletes objects of `job` that no group manifest references; returns how many.
/// Objects of other writers are never touched (SPEC §6).
pub fn remove_orphans(
    dest: &dyn Store,
    job: &str,
    referenced: &HashSet<u64>,
) -> anyhow::Result<u64> {
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
    for key in &orphans {
        tracing::warn!(key = %key, "removing orphan object of this job (no manifest references it)");
        dest.delete(key)?;
    }
    Ok(orphans.len() as u64)
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
