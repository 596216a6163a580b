//! `backfill export`: arguments, the run, the summary and `--dry-run`.

use super::options::{export_options, JobArgs};
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
    /// Read again the committed folders whose report lists unreadable regions (after
    /// an HDFS block recovery, or a damaged file replaced): each such folder is
    /// exported again under new names (never over committed objects), and the
    /// objects and manifest it replaces are deleted once it is committed. Folders
    /// without unreadable regions are skipped as usual.
    #[arg(long)]
    pub retry_unreadable: bool,
    /// Report, dry run, selection, shards and output settings.
    #[command(flatten)]
    pub job: JobArgs,
    /// HDFS source settings.
    #[command(flatten)]
    pub hdfs: HdfsOptions,
    /// S3 destination settings.
    #[command(flatten)]
    pub s3: S3Options,
}

impl ExportArgs {
    /// The destination of job `job` (see [`open_destination`]).
    pub(crate) fn destination(
        &self,
        mappings: &Mappings,
        job: &str,
    ) -> anyhow::Result<Destination> {
        let staging_dir = self.job.output.staging_dir(&self.dest);
        open_destination(&self.dest, &self.s3, staging_dir.as_deref(), mappings, job)
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

/// The destination of a job, writing metadata naming the tool, the mappings and the
/// job on its objects, and the local staging folder when `staging_dir` gives one
/// (`--staging-dir`, or the default for a remote DEST: see
/// [`OutputArgs::staging_dir`](super::options::OutputArgs::staging_dir)). Without
/// one the staging is the destination itself, the same store object:
/// --max-requests and --max-write-rate are then one budget for both.
pub(crate) fn open_destination(
    dest: &str,
    s3: &S3Options,
    staging_dir: Option<&Path>,
    mappings: &Mappings,
    job: &str,
) -> anyhow::Result<Destination> {
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
    Ok(Destination {
        dest,
        local_staging,
    })
}

/// A job's destination and where it stages.
pub(crate) struct Destination {
    /// The destination.
    pub dest: Box<dyn Store>,
    local_staging: Option<LocalStore>,
}

impl Destination {
    /// Where pieces are staged: `--staging-dir`, else the destination itself.
    pub fn staging(&self) -> &dyn Store {
        match &self.local_staging {
            Some(s) => s,
            None => self.dest.as_ref(),
        }
    }
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
    let mut opts = export_options(&a.job.select, &a.job.output, &mappings)?;
    opts.retry_unreadable = a.retry_unreadable;
    opts.shard = a.job.shards.shard()?;
    // Converted JSON is about 0.65 of the input and xz -1 shrinks it about 5.75x on
    // real payloads (BENCHMARKS.md); other presets are in the same range.
    let target = a.job.target(&a.dest, &a.s3, 0.65 / 5.75);
    drive(&mappings, source.as_ref(), &opts, &target, quiet, bar)
}

/// Where a run of the pipeline writes, and how it reports.
pub struct Target<'a> {
    /// DEST as given.
    pub dest: &'a str,
    /// S3 settings of DEST.
    pub s3: &'a S3Options,
    /// Where pieces are staged (`--staging-dir` or the default; `None`: DEST).
    pub staging_dir: Option<PathBuf>,
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
    let out = open_destination(t.dest, t.s3, t.staging_dir.as_deref(), mappings, &job)?;
    let (dest, staging) = (&out.dest, out.staging());
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
