//! Option groups shared by several commands, defined once: what a job reads and
//! selects (source, destination, days, filter), and how a writer writes (threads,
//! sizes, staging). `export`, `verify` and `reprocess` flatten the ones they take.

use crate::core::mappings::Mappings;
use crate::core::schema::Filter;
use crate::export::plan::DayWindow;
use crate::export::ExportOptions;
use crate::size::parse_size;
use crate::store::s3::S3Options;
use anyhow::{bail, Context as _};
use clap::Args;
use std::path::PathBuf;

/// Which records of the source a job takes.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Selection")]
pub struct SelectArgs {
    /// First submission day (yyyyMMdd or yyyy-MM-dd), inclusive.
    #[arg(long, value_parser = crate::export::plan::parse_day, value_name = "DAY")]
    pub from: Option<u32>,
    /// Last submission day (yyyyMMdd or yyyy-MM-dd), inclusive.
    #[arg(long, value_parser = crate::export::plan::parse_day, value_name = "DAY")]
    pub to: Option<u32>,
    /// With --from/--to, folders named yyyy/MM/dd are read when their day is within
    /// this many days of the range (a folder can hold a few records of a
    /// neighbouring day); records are then selected by the day in their key.
    #[arg(long, default_value_t = 1, value_name = "DAYS")]
    pub folder_margin: u32,
    /// Only records whose final dimension values match FILE (schema-filter format,
    /// e.g. `{"version":1,"dimensions":[{"field_name":"reason","allowed_values":["saved-session"]}]}`).
    #[arg(long, value_name = "FILE")]
    pub filter: Option<PathBuf>,
}

impl SelectArgs {
    /// The day window, checked.
    pub fn window(&self) -> anyhow::Result<DayWindow> {
        if let (Some(f), Some(t)) = (self.from, self.to) {
            if f > t {
                bail!("--from {f} is after --to {t}");
            }
        }
        Ok(DayWindow {
            from: self.from,
            to: self.to,
        })
    }

    /// The filter bound to the schema, with the sha256 of its file (part of the job).
    pub fn filter(&self, mappings: &Mappings) -> anyhow::Result<Option<(Filter, String)>> {
        let Some(p) = &self.filter else {
            return Ok(None);
        };
        let bytes = std::fs::read(p).with_context(|| format!("reading filter {}", p.display()))?;
        let f = Filter::from_json(&bytes, &p.display().to_string(), mappings.schema())?;
        Ok(Some((
            f,
            hex::encode(crate::export::manifest::sha256(&bytes)),
        )))
    }
}

/// How a writing job writes: its name, threads, and the sizes that shape its output.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Output")]
pub struct OutputArgs {
    /// Worker threads (default: all cores).
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    /// Name of the job; a destination can hold several jobs with different names
    /// [default: export; for reprocess, `reprocess-v<N>` with N its --layout-version].
    #[arg(long, value_name = "NAME")]
    pub job_name: Option<String>,
    /// xz preset of the objects, 0 (fastest) to 9 (smallest). The old live system used 1.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=9))]
    pub xz_preset: u32,
    /// Size at which a partition's object is closed and the next part begun,
    /// uncompressed (e.g. 500MB, 1GiB, 1048576).
    #[arg(long, default_value = "500MB", value_parser = parse_size, value_name = "SIZE")]
    pub target_size: u64,
    /// Converted bytes a worker buffers per unit before compressing the largest
    /// partitions into pieces; bounds memory per worker whatever the number of
    /// partitions. Changing it changes the output bytes (it is part of the job).
    #[arg(long, default_value = "64MiB", value_parser = parse_size, value_name = "SIZE")]
    pub buffer_size: u64,
    /// SequenceFiles larger than this are read as several units, split at sync
    /// markers, so one big file keeps several workers busy.
    #[arg(long, default_value = "256MiB", value_parser = parse_size, value_name = "SIZE")]
    pub split_size: u64,
    /// Stage pieces in this local directory. Default: DEST/_backfill/staging for a
    /// local DEST; for DEST on S3, a folder of this machine's cache for that DEST
    /// (`~/.cache/backfill/staging/<hash of DEST>`, or `$XDG_CACHE_HOME/…`): pieces
    /// cross the network once, not three times (1.4x the client CPU measured
    /// otherwise). A run resumes from checkpoints on the machine that made them;
    /// a folder another machine takes over is redone.
    #[arg(long, value_name = "DIR", conflicts_with = "staging_in_dest")]
    pub staging_dir: Option<PathBuf>,
    /// With DEST on S3, stage in DEST/_backfill/staging/ instead of local disk, so
    /// a run on any machine (another queue worker, a rescheduled task) resumes from
    /// a dead run's checkpoints; costs the client ~1.4x the CPU and three requests
    /// more per unit.
    #[arg(long)]
    pub staging_in_dest: bool,
    /// Seconds a run's leases live without a heartbeat (renewed every quarter of
    /// it). Several runs of one job share its folders through leases in
    /// DEST/_backfill/leases/: a folder another live run is exporting is waited
    /// for, and taken over once that run has not renewed its lease for this long
    /// (at once when it ran on this machine and its process is gone). Machines'
    /// clocks must agree to well within it.
    #[arg(long, default_value_t = crate::export::lease::DEFAULT_TTL, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub lease_ttl: u64,
    /// The end-of-run sweep removes objects of this job that no manifest
    /// references (left by crashed runs) only when they are older than this.
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    pub orphan_grace: u64,
}

impl OutputArgs {
    /// Where a job into `dest` stages: `--staging-dir`, else `None` (DEST itself)
    /// for a local DEST or with `--staging-in-dest`, else this machine's cache
    /// folder for DEST (see [`default_staging`]).
    pub fn staging_dir(&self, dest: &str) -> Option<PathBuf> {
        match &self.staging_dir {
            Some(d) => Some(d.clone()),
            None if self.staging_in_dest => None,
            None => default_staging(dest),
        }
    }
}

/// This machine's staging folder for a remote DEST: `<cache>/backfill/staging/<h>`,
/// `h` a hash of DEST (so jobs of the same id into two buckets never share
/// checkpoints), `<cache>` `$XDG_CACHE_HOME`, else `~/.cache`, else the temporary
/// folder. `None` for a local DEST (it stages in itself).
pub fn default_staging(dest: &str) -> Option<PathBuf> {
    if !dest.starts_with("s3://") {
        return None;
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })
        .unwrap_or_else(std::env::temp_dir);
    let h = crate::export::manifest::short_hash(dest.trim_end_matches('/'), 8);
    Some(cache.join("backfill").join("staging").join(h))
}

/// The export options these arguments give.
pub fn export_options(
    select: &SelectArgs,
    out: &OutputArgs,
    mappings: &Mappings,
) -> anyhow::Result<ExportOptions> {
    Ok(ExportOptions {
        job_name: out.job_name.clone().unwrap_or_else(|| "export".into()),
        jobs: out
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1),
        xz_preset: out.xz_preset,
        target_size: out.target_size,
        buffer_size: out.buffer_size,
        split_size: out.split_size,
        window: select.window()?,
        folder_margin: select.folder_margin,
        filter: select.filter(mappings)?,
        lease_ttl: out.lease_ttl,
        orphan_grace: out.orphan_grace,
        retry_unreadable: false,
        shard: None,
        only_folder: None,
        reprocess: None,
        ingest: false,
    })
}

/// What every command that runs the pipeline into a destination (`export`,
/// `reprocess`) takes besides its source and destination: defined once.
#[derive(Args, Debug, Clone)]
pub struct JobArgs {
    /// Write the run report (JSON) to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Show what would be read (files, bytes, days, estimated output) and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Which records.
    #[command(flatten)]
    pub select: SelectArgs,
    /// Scale-out.
    #[command(flatten)]
    pub shards: ShardArgs,
    /// How they are written.
    #[command(flatten)]
    pub output: OutputArgs,
}

impl JobArgs {
    /// Where and how the run writes: into `dest`, with `out_per_in` object bytes per
    /// source byte for the dry run's estimate.
    pub fn target<'a>(
        &'a self,
        dest: &'a str,
        s3: &'a S3Options,
        out_per_in: f64,
    ) -> super::export::Target<'a> {
        super::export::Target {
            dest,
            s3,
            staging_dir: self.output.staging_dir(dest),
            report: self.report.as_deref(),
            dry_run: self.dry_run,
            out_per_in,
        }
    }
}

/// Array jobs of a batch scheduler: each task takes a share of the folders.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Scale-out")]
pub struct ShardArgs {
    /// Export only share I of N of the folders (by a hash of each folder's name):
    /// N runs side by side into one DEST, on one machine or many, give the store
    /// one run gives. Each run's report describes the whole job as far as it is
    /// committed; the last to finish sweeps.
    #[arg(long, value_name = "I/N", value_parser = crate::export::plan::parse_shard, conflicts_with = "shards")]
    pub shard: Option<(u32, u32)>,
    /// Export share I of N, I taken from the array job's index: JOB_COMPLETION_INDEX
    /// (Kubernetes Indexed Jobs), AWS_BATCH_JOB_ARRAY_INDEX (AWS Batch) or
    /// SLURM_ARRAY_TASK_ID minus SLURM_ARRAY_TASK_MIN (Slurm).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub shards: Option<u32>,
}

impl ShardArgs {
    /// The share, from the flags and the scheduler's environment.
    pub fn shard(&self) -> anyhow::Result<Option<(u32, u32)>> {
        if let Some(s) = self.shard {
            return Ok(Some(s));
        }
        let Some(n) = self.shards else {
            return Ok(None);
        };
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let index = if let Some(v) = var("JOB_COMPLETION_INDEX") {
            ("JOB_COMPLETION_INDEX", v.parse::<u32>().ok())
        } else if let Some(v) = var("AWS_BATCH_JOB_ARRAY_INDEX") {
            ("AWS_BATCH_JOB_ARRAY_INDEX", v.parse().ok())
        } else if let Some(v) = var("SLURM_ARRAY_TASK_ID") {
            let min = var("SLURM_ARRAY_TASK_MIN")
                .and_then(|m| m.parse::<u32>().ok())
                .unwrap_or(0);
            (
                "SLURM_ARRAY_TASK_ID",
                v.parse::<u32>().ok().and_then(|i| i.checked_sub(min)),
            )
        } else {
            bail!("--shards {n} needs the task's index: set JOB_COMPLETION_INDEX, AWS_BATCH_JOB_ARRAY_INDEX or SLURM_ARRAY_TASK_ID, or give --shard I/{n}");
        };
        match index {
            (_, Some(i)) if i < n => Ok(Some((i, n))),
            (k, _) => bail!(
                "{k}={} is not an index below --shards {n}",
                var(k).unwrap_or_default()
            ),
        }
    }
}
