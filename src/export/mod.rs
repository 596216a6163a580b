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
pub mod unit;

use crate::core::mappings::Mappings;
use crate::core::schema::Filter;
use crate::source::{Source, WalkItem};
use crate::store::Store;
use anyhow::{bail, Context as _};
use manifest::{
    job_key, manifest_key, GroupManifest, JobRecord, JobSpec, Stats, UnitManifest, Unreadable,
    FORMAT,
};
use serde::Serialize;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;
use unit::{DayWindow, UnitSpec};

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
    units: Vec<UnitSpec>,
    done: Mutex<Vec<Option<UnitManifest>>>,
    remaining: AtomicUsize,
}

/// Shared state of a run.
struct Run<'a> {
    mappings: &'a Mappings,
    source: &'a dyn Source,
    dest: &'a dyn Store,
    staging: &'a dyn Store,
    opts: &'a ExportOptions,
    job: String,
    window_text: (Option<String>, Option<String>),
    progress: &'a indicatif::ProgressBar,
    stop: &'a AtomicBool,
    failed: AtomicBool,
    error: Mutex<Option<anyhow::Error>>,
    manifests: Mutex<Vec<GroupManifest>>,
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

    fn unit_ctx<'b>(
        &'b self,
        group: &'b str,
        on_progress: &'b (dyn Fn(u64, u64) + Sync),
    ) -> unit::UnitCtx<'b> {
        unit::UnitCtx {
            mappings: self.mappings,
            source: self.source,
            staging: self.staging,
            job: &self.job,
            group,
            window: self.opts.window,
            filter: self.opts.filter.as_ref().map(|f| &f.0),
            xz_preset: self.opts.xz_preset,
            buffer_size: self.opts.buffer_size,
            piece_max: (self.opts.target_size / 8).max(1),
            on_progress,
        }
    }

    /// A unit's checkpoint from an earlier run, if it is complete.
    fn staged(&self, group: &str, u: &UnitSpec) -> anyhow::Result<Option<UnitManifest>> {
        let (pieces_key, manifest_key) = unit::unit_keys(&self.job, group, u);
        let Some(bytes) = self.staging.get(&manifest_key)? else {
            return Ok(None);
        };
        let m: UnitManifest = match serde_json::from_slice(&bytes) {
            Ok(m) => m,
            Err(_) => return Ok(None),
        };
        let present = self
            .staging
            .list(&pieces_key)?
            .iter()
            .any(|o| o.key == pieces_key);
        Ok((m.format == FORMAT && m.pieces_key == pieces_key && present).then_some(m))
    }

    fn run_unit(&self, g: &Group, i: usize) -> anyhow::Result<UnitManifest> {
        let u = &g.units[i];
        if let Some(m) = self.staged(&g.id, u)? {
            self.units_resumed.fetch_add(1, Ordering::Relaxed);
            self.advance(
                u.end - u.start,
                m.stats.records_in + m.stats.records_filtered,
            );
            return Ok(m);
        }
        self.units_run.fetch_add(1, Ordering::Relaxed);
        let on_progress = |bytes: u64, records: u64| self.advance(bytes, records);
        let ctx = self.unit_ctx(&g.id, &on_progress);
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
            window: self.window_text.clone(),
        };
        let m = assemble::assemble(&ctx, &g.id, &g.dir, &units)
            .with_context(|| format!("assembling folder {:?}", g.dir))?;
        tracing::debug!(folder = %g.dir, objects = m.objects.len(), records = m.stats.records_out, "group committed");
        self.manifests.lock().unwrap().push(m);
        Ok(())
    }
}

/// Runs (or resumes) an export. `stop` is raised by a signal handler: no new unit
/// starts, running ones finish and are checkpointed.
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
    let survey = survey(source, opts)?;
    progress.set_length(survey.bytes);
    let day_text = |d: Option<u32>| d.map(|d| d.to_string());
    let run = Run {
        mappings,
        source,
        dest,
        staging,
        opts,
        job: job.clone(),
        window_text: (day_text(opts.window.from), day_text(opts.window.to)),
        progress,
        stop,
        failed: AtomicBool::new(false),
        error: Mutex::new(None),
        manifests: Mutex::new(Vec::new()),
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
    let mut resumed = Vec::new();
    let run_ref = &run;
    let slots_ref = &slots;
    let walked = pool.in_place_scope(|scope| {
        source.walk(&mut |item| {
            if run_ref.halted() {
                return false;
            }
            let (dir, files) = match item {
                WalkItem::Folder { dir, files } => (dir, files),
                WalkItem::Unreadable { path, error } => {
                    listing_unreadable.push(Unreadable { file: path, offset: 0, length: 0, error });
                    return true;
                }
            };
            if !plan::folder_selected(&dir, &opts.window, opts.folder_margin) {
                return true;
            }
            let id = plan::group_id(&dir);
            match dest.get(&manifest_key(&job, &id)) {
                Ok(Some(bytes)) => match serde_json::from_slice::<GroupManifest>(&bytes) {
                    Ok(m) => {
                        progress.inc(files.iter().map(|f| f.size).sum());
                        resumed.push(m);
                        return true;
                    }
                    Err(e) => tracing::warn!(folder = %dir, error = %e, "unreadable group manifest, redoing the folder"),
                },
                Ok(None) => {}
                Err(e) => {
                    run_ref.fail(anyhow::Error::new(e).context(format!("reading manifest of folder {dir:?}")));
                    return false;
                }
            }
            let units = plan::units(&files, opts.split_size);
            let n = units.len();
            let g = Arc::new(Group {
                dir,
                id,
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
                    let r = if run_ref.halted() { None } else { Some(run_ref.run_unit(&g, i)) };
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
    let mut manifests = std::mem::take(&mut *run.manifests.lock().unwrap());
    let groups_resumed = resumed.len() as u64;
    manifests.extend(resumed);
    let mut report = Report {
        job,
        source: source.describe(),
        destination: dest.describe(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        mappings_version: mappings.version().to_string(),
        groups: manifests.len() as u64,
        groups_resumed,
        units_resumed: run.units_resumed.load(Ordering::Relaxed) as u64,
        units_run: run.units_run.load(Ordering::Relaxed) as u64,
        ..Default::default()
    };
    let mut partitions = BTreeSet::new();
    manifests.sort_by(|a, b| a.dir.cmp(&b.dir));
    for m in &manifests {
        report.stats.add(&m.stats);
        for o in &m.objects {
            partitions.insert(o.partition.as_str());
            report.objects += 1;
            report.bytes_out += o.bytes;
        }
        for o in &m.errors {
            report.error_objects += 1;
            report.error_bytes += o.bytes;
        }
        report.staged_bytes_max = report.staged_bytes_max.max(m.staged_bytes);
    }
    report.partitions = partitions.len() as u64;
    report.stats.unreadable.extend(listing_unreadable);
    report.stats.unreadable.sort();
    report.seconds = started.elapsed().as_secs_f64();
    Ok((report, interrupted))
}
