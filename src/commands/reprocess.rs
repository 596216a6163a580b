//! `backfill reprocess`: arguments, and the run through the export's pipeline with a
//! store of the new layout as its source (see [`crate::reprocess`]).

use super::export::drive;
use super::options::{export_options, JobArgs, OutputArgs, SelectArgs};
use super::{local_path, open_existing};
use crate::core::mappings::Mappings;
use crate::export::manifest::ReprocessSpec;
use crate::export::ExportOptions;
use crate::reprocess::StoreSource;
use crate::store::s3::S3Options;
use anyhow::bail;
use clap::Args;
use std::sync::Arc;

/// `reprocess` arguments.
#[derive(Args, Debug)]
pub struct ReprocessArgs {
    /// The store read: a local directory (a path or `file://…`) or
    /// `s3://bucket/prefix`, in the v2 layout (what `export` and the old server wrote).
    #[arg(value_name = "FROM")]
    pub source: String,
    /// Where the re-processed layout goes: a new store or prefix, or FROM itself with
    /// another --layout-version.
    #[arg(value_name = "TO")]
    pub dest: String,
    /// What is read and written.
    #[command(flatten)]
    pub layout: LayoutArgs,
    /// Report, dry run, selection, shards and output settings.
    #[command(flatten)]
    pub job: JobArgs,
    /// S3 settings (FROM and TO).
    #[command(flatten)]
    pub s3: S3Options,
}

/// What a reprocess job reads and writes (part of the job, so `verify` takes them too).
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Layouts")]
pub struct LayoutArgs {
    /// Also replay the records of FROM's error output (`_backfill/errors/`: the
    /// committed error output of every job that wrote the layout read), through the
    /// full core like fresh legacy records: records a new revision table or schema
    /// accepts now are written, the others go to TO's error output again.
    #[arg(long)]
    pub errors: bool,
    /// Layout version of the objects written: named `….v<N>.log.<job>-…`. Must differ
    /// from --source-layout-version when TO is FROM (or inside it), so the old and
    /// the new layout sit side by side and nothing is written over an old object.
    #[arg(long, default_value_t = 2, value_name = "N",
          value_parser = clap::value_parser!(u32).range(2..))]
    pub layout_version: u32,
    /// Layout version of the objects read (`.v<M>.log.` in their names).
    #[arg(long, default_value_t = 2, value_name = "M",
          value_parser = clap::value_parser!(u32).range(2..))]
    pub source_layout_version: u32,
}

impl LayoutArgs {
    /// What the job reads and writes.
    pub fn spec(&self) -> ReprocessSpec {
        ReprocessSpec {
            source_layout: self.source_layout_version,
            layout: self.layout_version,
            errors: self.errors,
        }
    }
}

/// The pipeline's options for a reprocess job: an export's, with the reprocess
/// part, no neighbouring-day margin (an object's day is exact) and objects never
/// split; the job is named `reprocess-v<N>` unless `--job-name` says otherwise.
pub fn reprocess_options(
    select: &SelectArgs,
    output: &OutputArgs,
    layout: &LayoutArgs,
    mappings: &Mappings,
) -> anyhow::Result<ExportOptions> {
    let mut output = output.clone();
    if output.job_name.is_none() {
        output.job_name = Some(format!("reprocess-v{}", layout.layout_version));
    }
    let mut opts = export_options(select, &output, mappings)?;
    opts.folder_margin = 0;
    opts.split_size = u64::MAX;
    opts.reprocess = Some(layout.spec());
    Ok(opts)
}

/// A store of the new layout as the pipeline's source, for these options.
pub fn open_store_source(
    url: &str,
    s3: &S3Options,
    opts: &ExportOptions,
) -> anyhow::Result<StoreSource> {
    let spec = opts.reprocess.clone().expect("reprocess options");
    Ok(StoreSource::new(open_existing(url, s3)?, spec, opts.window))
}

/// Where a store URL points, comparable with another: a canonical local path, or
/// the S3 bucket and prefix with one trailing `/`.
fn location(url: &str) -> anyhow::Result<String> {
    if let Some(rest) = url.strip_prefix("s3://") {
        let rest = rest.trim_end_matches('/');
        return Ok(format!("s3://{rest}/"));
    }
    let p = local_path(url, "store")?;
    let p = p.canonicalize().unwrap_or(p);
    Ok(format!("{}/", p.display()))
}

/// Refuses a TO that would have reprocess write into the layout it reads: TO is
/// FROM, or one holds the other, and the layout versions are the same.
fn check_layouts(a: &ReprocessArgs) -> anyhow::Result<()> {
    let (from, to) = (location(&a.source)?, location(&a.dest)?);
    let (n, m) = (a.layout.layout_version, a.layout.source_layout_version);
    let overlap = from.starts_with(&to) || to.starts_with(&from);
    if overlap && n == m {
        bail!(
            "TO {} is FROM {} or overlaps it, and both are layout version {}: give --layout-version {} (objects named .v{}.log) so the new layout is written beside the old one, never over it",
            a.dest,
            a.source,
            n,
            m + 1,
            m + 1
        );
    }
    Ok(())
}

/// Runs `reprocess`; returns the exit code.
pub fn run(
    mappings: Arc<Mappings>,
    a: &ReprocessArgs,
    quiet: bool,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<i32> {
    check_layouts(a)?;
    let mut opts = reprocess_options(&a.job.select, &a.job.output, &a.layout, &mappings)?;
    opts.shard = a.job.shards.shard()?;
    let source = open_store_source(&a.source, &a.s3, &opts)?;
    // The objects read are compressed as the ones written will be.
    let target = a.job.target(&a.dest, &a.s3, 1.0);
    let code = drive(&mappings, &source, &opts, &target, quiet, bar)?;
    if let Ok(n) = source.uncommitted() {
        if n > 0 && !quiet {
            eprintln!(
                "not read: {n} objects of FROM that carry a job's id but that no committed manifest of that job lists (a dead run's leftovers; `backfill clean` or that job's rerun removes them)"
            );
        }
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        a: ReprocessArgs,
    }

    fn args(v: &[&str]) -> ReprocessArgs {
        let mut all = vec!["reprocess"];
        all.extend_from_slice(v);
        Cli::parse_from(all).a
    }

    #[test]
    fn same_store_needs_another_layout() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().to_str().unwrap();
        let sub = format!("{p}/new");
        assert!(check_layouts(&args(&[p, p])).is_err());
        assert!(check_layouts(&args(&[p, &sub])).is_err());
        assert!(check_layouts(&args(&[p, p, "--layout-version", "3"])).is_ok());
        assert!(check_layouts(&args(&["s3://b/x", "s3://b/x/"])).is_err());
        assert!(check_layouts(&args(&["s3://b/x", "s3://b/y"])).is_ok());
        assert!(check_layouts(&args(&["s3://b/x", "s3://b/xy"])).is_ok());
    }

    #[test]
    fn job_name_defaults_to_the_layout() {
        let m = Mappings::embedded().unwrap();
        let opts = |a: ReprocessArgs| reprocess_options(&a.job.select, &a.job.output, &a.layout, m);
        let o = opts(args(&["a", "b", "--layout-version", "3"])).unwrap();
        assert_eq!(o.job_name, "reprocess-v3");
        assert_eq!(o.folder_margin, 0);
        assert_eq!(o.reprocess.unwrap().layout, 3);
        let o = opts(args(&["a", "b", "--job-name", "x"])).unwrap();
        assert_eq!(o.job_name, "x");
    }
}
