//! `backfill verify`: arguments, the run, the per-day table and the report files.

use super::options::{export_options, OutputArgs, SelectArgs};
use super::reprocess::{open_store_source, reprocess_options, LayoutArgs};
use super::{open_existing, open_source, write_json, EXIT_OK, EXIT_PARITY, EXIT_USAGE};
use crate::core::mappings::Mappings;
use crate::source::hdfs::HdfsOptions;
use crate::source::Source;
use crate::store::local::LocalStore;
use crate::store::s3::S3Options;
use crate::store::Store;
use crate::verify::{self, render, VerifyOptions};
use anyhow::Context as _;
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(f),
        _ => Err(format!("{s:?} is not a fraction in (0, 1]")),
    }
}

/// `verify` arguments.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The legacy data the job exported (as given to `export`).
    pub source: String,
    /// The job's destination (as given to `export`).
    pub dest: String,
    /// Read every source record again, convert it, and compare it with the objects
    /// in DEST, partition by partition (and every rejected record with the error
    /// output). Without it, only the bookkeeping, the objects' sizes and sha256 and
    /// the source listing are checked.
    #[arg(long)]
    pub deep: bool,
    /// --deep on a deterministic sample of this fraction of the folders (of the
    /// days, with --all-writers); the rest gets the default checks.
    #[arg(long, value_name = "FRACTION", value_parser = parse_fraction, conflicts_with = "deep")]
    pub sample: Option<f64>,
    /// With --deep or --sample: compare with every object in the partitions of the
    /// selected days, whoever wrote it (no `_backfill/` needed). Without it, objects
    /// of other writers are counted apart and never a failure.
    #[arg(long)]
    pub all_writers: bool,
    /// Write the verification report (JSON) to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Write a self-contained HTML page (per-day table and chart) to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Differing doc ids kept per kind and partition in the report.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub max_ids: usize,
    /// SOURCE is a store of the new layout and the job a `reprocess` (give its
    /// --errors and layout versions too): the job's records are read again from
    /// SOURCE's objects (and error output).
    #[arg(long)]
    pub reprocess: bool,
    /// The reprocess job's layouts (with --reprocess).
    #[command(flatten)]
    pub layout: LayoutArgs,
    /// Which records the job took.
    #[command(flatten)]
    pub select: SelectArgs,
    /// The job's name and output settings (they make its id).
    #[command(flatten)]
    pub output: OutputArgs,
    /// HDFS source settings.
    #[command(flatten)]
    pub hdfs: HdfsOptions,
    /// S3 destination settings.
    #[command(flatten)]
    pub s3: S3Options,
}

/// Runs `verify`; returns the exit code: 0 parity, 4 any fault or an incomplete job.
pub fn run(
    mappings: Arc<Mappings>,
    a: &VerifyArgs,
    quiet: bool,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<i32> {
    if a.all_writers && !a.deep && a.sample.is_none() {
        eprintln!("backfill: --all-writers compares records: give --deep or --sample too");
        return Ok(EXIT_USAGE);
    }
    let export = if a.reprocess {
        reprocess_options(&a.select, &a.output, &a.layout, &mappings)?
    } else {
        export_options(&a.select, &a.output, &mappings)?
    };
    let source: Box<dyn Source> = if a.reprocess {
        Box::new(open_store_source(&a.source, &a.s3, &export)?)
    } else {
        open_source(&a.source, &a.hdfs)?
    };
    let dest = open_existing(&a.dest, &a.s3)?;
    let staging: Option<Box<dyn Store>> = match &a.output.staging_dir(&a.dest) {
        Some(d) if d.is_dir() => Some(Box::new(
            LocalStore::new(d).with_context(|| format!("staging dir {}", d.display()))?,
        )),
        _ => None,
    };
    let opts = VerifyOptions {
        export,
        deep: a.deep,
        sample: a.sample,
        all_writers: a.all_writers,
        max_ids: a.max_ids,
        ..Default::default()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
        )
        .expect("valid template"),
    );
    tracing::info!(source = %source.describe(), dest = %dest.describe(), mode = if a.deep { "deep" } else { "default" }, "verify starting");
    let v = verify::verify(
        &mappings,
        source.as_ref(),
        dest.as_ref(),
        staging.as_deref(),
        &opts,
        bar,
    )?;
    bar.finish_and_clear();
    if let Some(p) = &a.report {
        write_json(p, &v)?;
    }
    if let Some(p) = &a.html {
        std::fs::write(p, render::html(&v)).with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(why) = &v.incomplete {
        eprintln!("backfill: {why}");
        eprintln!("backfill: the job is not complete: finish the export first (rerun the same export command), then verify");
        return Ok(EXIT_PARITY);
    }
    if !quiet || !v.parity {
        eprint!("{}", render::table(&v));
    }
    for f in &v.faults {
        eprintln!("{}: {}", f.kind.name(), f.message);
    }
    if v.faults_total > v.faults.len() as u64 {
        eprintln!(
            "… and {} more findings (see --report)",
            v.faults_total - v.faults.len() as u64
        );
    }
    if v.other_writers.objects > 0 {
        eprintln!(
            "{} objects of other writers ({} bytes) in the selected days: counted apart, not compared{}",
            v.other_writers.objects,
            v.other_writers.bytes,
            if a.all_writers { "" } else { " (--all-writers compares them)" }
        );
    }
    if let Some(s) = &v.sample {
        eprintln!(
            "sampled {} of {} {} (fraction {})",
            s.selected.len(),
            s.of,
            s.by,
            s.fraction
        );
    }
    if v.parity {
        if !quiet {
            eprintln!(
                "parity: job {} in {} holds every selected source record ({} mode, {:.1}s)",
                v.job, v.destination, v.mode, v.seconds
            );
        }
        Ok(EXIT_OK)
    } else {
        eprintln!(
            "parity violated: {} findings ({})",
            v.faults_total,
            v.faults_by_kind
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(EXIT_PARITY)
    }
}
