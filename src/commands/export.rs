//! `backfill export`: arguments, the run, the summary and `--dry-run`.

use super::options::{export_options, OutputArgs, SelectArgs};
use super::{
    local_path, open_source, open_store, write_json, EXIT_OK, EXIT_SIGNAL, EXIT_UNREADABLE,
};
use crate::core::mappings::Mappings;
use crate::export::{self, ExportOptions, Report};
use crate::source::hdfs::HdfsOptions;
use crate::source::Source;
use crate::store::s3::S3Options;
use crate::store::{local::LocalStore, Store};
use anyhow::{bail, Context as _};
use clap::Args;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// `export` arguments.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Legacy data: a local directory or file (a path or `file://…`), or HDFS
    /// (`hdfs://namenode:port/data/telemetry`, `hdfs://nameservice/…` or `viewfs://…`
    /// resolved from HADOOP_CONF_DIR).
    pub source: String,
    /// Destination: a local directory (a path or `file://…`) or `s3://bucket/prefix`.
    pub dest: String,
    /// Write the run report (JSON) to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Show what would be read (files, bytes, days, estimated output) and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Read again the committed folders whose report lists unreadable regions (after
    /// an HDFS block recovery, or a damaged file replaced): each such folder is
    /// exported again under new names (never over committed objects), and the
    /// objects and manifest it replaces are deleted once it is committed. Folders
    /// without unreadable regions are skipped as usual.
    #[arg(long)]
    pub retry_unreadable: bool,
    /// Which records.
    #[command(flatten)]
    pub select: SelectArgs,
    /// Scale-out.
    #[command(flatten)]
    pub shards: ShardArgs,
    /// How they are written.
    #[command(flatten)]
    pub output: OutputArgs,
    /// HDFS source settings.
    #[command(flatten)]
    pub hdfs: HdfsOptions,
    /// S3 destination settings.
    #[command(flatten)]
    pub s3: S3Options,
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

/// Fails when the destination is inside a local source (the export would read its
/// own output).
fn check_not_nested(source: &str, dest: &str) -> anyhow::Result<()> {
    if source.contains("://") && !source.starts_with("file://") {
        return Ok(());
    }
    if let (Ok(s), Ok(d)) = (
        local_path(source, "source")?.canonicalize(),
        local_path(dest, "destination").and_then(|p| Ok(p.canonicalize()?)),
    ) {
        if d.starts_with(&s) {
            bail!(
                "destination {} is inside the source {}: the export would read its own output",
                d.display(),
                s.display()
            );
        }
    }
    Ok(())
}

/// The destination of an export, writing metadata naming the tool, the mappings and
/// the job on its objects, and the local staging folder when `--staging-dir` gives
/// one. Without it the staging is the destination itself, the same store object:
/// --max-requests and --max-write-rate are one budget for both.
pub(crate) fn open_destination(
    dest: &str,
    s3: &S3Options,
    staging_dir: Option<&Path>,
    mappings: &Mappings,
    job: &str,
) -> anyhow::Result<(Box<dyn Store>, Option<LocalStore>)> {
    let metadata = BTreeMap::from([
        (
            "backfill-version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        (
            "mappings-version".to_string(),
            mappings.version().to_string(),
        ),
        ("job".to_string(), job.to_string()),
    ]);
    let dest = open_store(dest, s3, metadata)?;
    let local_staging = match staging_dir {
        Some(d) => {
            Some(LocalStore::new(d).with_context(|| format!("staging dir {}", d.display()))?)
        }
        None => None,
    };
    Ok((dest, local_staging))
}

/// Runs `export`; returns the exit code.
pub fn run(
    mappings: Arc<Mappings>,
    a: &ExportArgs,
    quiet: bool,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<i32> {
    let source = open_source(&a.source, &a.hdfs)?;
    check_not_nested(&a.source, &a.dest)?;
    let mut opts = export_options(&a.select, &a.output, &mappings)?;
    opts.retry_unreadable = a.retry_unreadable;
    opts.shard = a.shards.shard()?;
    let target = Target {
        dest: &a.dest,
        s3: &a.s3,
        staging_dir: a.output.staging_dir.as_deref(),
        report: a.report.as_deref(),
        dry_run: a.dry_run,
        // Converted JSON is about 0.65 of the input and xz -1 shrinks it about
        // 5.75x on real payloads (BENCHMARKS.md); other presets are in the same range.
        out_per_in: 0.65 / 5.75,
    };
    drive(&mappings, source.as_ref(), &opts, &target, quiet, bar)
}

/// Where a run of the pipeline writes, and how it reports.
pub(crate) struct Target<'a> {
    /// DEST as given.
    pub dest: &'a str,
    /// S3 settings of DEST.
    pub s3: &'a S3Options,
    /// `--staging-dir`.
    pub staging_dir: Option<&'a Path>,
    /// `--report`.
    pub report: Option<&'a Path>,
    /// `--dry-run`.
    pub dry_run: bool,
    /// Bytes of objects per source byte, for the dry run's estimate.
    pub out_per_in: f64,
}

/// Runs the pipeline (an export, or a reprocess: `opts` says which) from `source`
/// into the target, with the progress bar, signals, report and summary every such
/// command has; returns the exit code.
pub(crate) fn drive(
    mappings: &Mappings,
    source: &dyn Source,
    opts: &ExportOptions,
    t: &Target<'_>,
    quiet: bool,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<i32> {
    if t.dry_run {
        return dry_run(source, opts, mappings, t);
    }
    let job = export::job_spec(opts, mappings).id();
    let (dest, local_staging) = open_destination(t.dest, t.s3, t.staging_dir, mappings, &job)?;
    let staging: &dyn Store = match &local_staging {
        Some(s) => s,
        None => dest.as_ref(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
        )
        .expect("valid template"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    // First signal: stop taking units, checkpoint, exit 130. Second: abort now.
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, EXIT_SIGNAL, Arc::clone(&stop))?;
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let what = if opts.reprocess.is_some() {
        "reprocess"
    } else {
        "export"
    };
    tracing::info!(source = %source.describe(), dest = %dest.describe(), jobs = opts.jobs, "{what} starting");
    let export::Outcome {
        report,
        interrupted,
    } = export::export(mappings, source, dest.as_ref(), staging, opts, bar, &stop);
    bar.finish_and_clear();
    // The report is written on every way out, saying how far the job got.
    if let Some(p) = t.report {
        write_json(p, &report)?;
    }
    let code = if report.error.is_none() && (interrupted || stop.load(Ordering::SeqCst)) {
        EXIT_SIGNAL
    } else {
        report.exit_code()
    };
    if !quiet || code != EXIT_OK {
        summary(&report, code == EXIT_SIGNAL);
    }
    Ok(code)
}

/// The one-paragraph summary on stderr.
pub fn summary(r: &Report, interrupted: bool) {
    let mut s = format!(
        "job {}: {} records in, {} written, {} rejected, {} filtered; {} objects in {} partitions, {} bytes; {:.1}s",
        r.job,
        r.stats.records_in,
        r.stats.records_out,
        r.stats.records_error,
        r.stats.records_filtered,
        r.objects,
        r.partitions,
        r.bytes_out,
        r.seconds
    );
    if r.groups_resumed > 0 || r.units_resumed > 0 {
        s += &format!(
            "; resumed {} folders and {} units done earlier",
            r.groups_resumed, r.units_resumed
        );
    }
    eprintln!("{s}");
    if !r.stats.errors_by_reason.is_empty() {
        let reasons: Vec<String> = r
            .stats
            .errors_by_reason
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        eprintln!("rejected by reason: {}", reasons.join(", "));
    }
    if let Some(m) = &r.moved {
        let c = &r.stats.changes;
        let by = |x: &BTreeMap<String, u64>| {
            x.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        eprintln!(
            "changes: {} records unchanged, {} re-serialised, {} moved between {} pairs of partitions",
            c.unchanged, c.rewritten, m.records, m.pairs
        );
        for p in m.largest.iter().take(5) {
            eprintln!("  moved {} records: {} -> {}", p.records, p.from, p.to);
        }
        if !c.accepted_from_errors.is_empty() {
            eprintln!(
                "accepted from the error output, by old reason: {}",
                by(&c.accepted_from_errors)
            );
        }
        if !c.newly_rejected.is_empty() {
            eprintln!("rejected now, by reason: {}", by(&c.newly_rejected));
        }
    }
    for u in &r.stats.unreadable {
        eprintln!(
            "unreadable: {} at offset {} ({} bytes): {}",
            u.file, u.offset, u.length, u.error
        );
    }
    for c in &r.source_changed {
        eprintln!(
            "changed after its export: folder {}: {} files added, {} resized, {} removed (not exported again; the report lists them)",
            c.folder,
            c.added.len(),
            c.resized.len(),
            c.removed.len()
        );
    }
    const SHOWN: usize = 20;
    for f in r.failed.iter().take(SHOWN) {
        eprintln!("failed: {}", f.error);
    }
    if r.failed.len() > SHOWN {
        eprintln!(
            "failed: … and {} more (see the report)",
            r.failed.len() - SHOWN
        );
    }
    if !r.failed.is_empty() {
        eprintln!(
            "{} units or folders failed and were not committed; rerun the same command to do exactly those",
            r.failed.len()
        );
    }
    if let Some(e) = &r.error {
        eprintln!("backfill: error: {e}");
    }
    if interrupted {
        eprintln!(
            "stopped by a signal: the checkpoint is written; rerun the same command to finish"
        );
    }
}

fn dry_run(
    source: &dyn Source,
    opts: &ExportOptions,
    mappings: &Mappings,
    t: &Target<'_>,
) -> anyhow::Result<i32> {
    let (dest, report) = (t.dest, t.report);
    let s = export::survey(source, opts)?;
    let spec = export::job_spec(opts, mappings);
    let est = (s.bytes as f64 * t.out_per_in) as u64;
    let days: Vec<String> = s.days.iter().map(|d| d.to_string()).collect();
    let plan = serde_json::json!({
        "dry_run": true,
        "source": source.describe(),
        "destination": dest,
        "job": spec.id(),
        "folders": s.folders,
        "folders_skipped": s.folders_skipped,
        "files": s.files,
        "bytes": s.bytes,
        "units": s.units,
        "days": days,
        "estimated_bytes_out": est,
        "unreadable": s.unreadable,
    });
    println!("{}", serde_json::to_string_pretty(&plan)?);
    if let Some(p) = report {
        write_json(p, &plan)?;
    }
    eprintln!(
        "would read {} files ({} bytes) in {} folders covering {} days; about {} bytes of objects; nothing written",
        s.files,
        s.bytes,
        s.folders,
        s.days.len(),
        est
    );
    Ok(if s.unreadable.is_empty() {
        EXIT_OK
    } else {
        EXIT_UNREADABLE
    })
}
