//! `backfill clean`: remove what crashed or abandoned runs of a job left staged.

use super::{open_existing, EXIT_FAILURE, EXIT_OK};
use crate::store::local::LocalStore;
use crate::store::s3::S3Options;
use crate::store::Store;
use anyhow::Context as _;
use clap::Args;
use std::path::PathBuf;

/// `clean` arguments.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["job", "all"])))]
pub struct CleanArgs {
    /// Destination of an export (a path, `file://…` or `s3://bucket/prefix`).
    pub dest: String,
    /// Clean this job (its id, as `backfill status` shows it).
    #[arg(long, value_name = "ID")]
    pub job: Option<String>,
    /// Clean every job in DEST.
    #[arg(long)]
    pub all: bool,
    /// Say what would be removed, and remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Where the job staged, when it ran with --staging-dir DIR [default: for DEST
    /// on S3, this machine's cache folder for it, as the export used].
    #[arg(long, value_name = "DIR")]
    pub staging_dir: Option<PathBuf>,
    /// S3 settings, when DEST is `s3://…`.
    #[command(flatten)]
    pub s3: S3Options,
}

/// Runs `clean`; returns the exit code: 1 when a job was left alone because a run
/// of it is alive.
pub fn run(a: &CleanArgs) -> anyhow::Result<i32> {
    let dest = open_existing(&a.dest, &a.s3)?;
    let dir = a
        .staging_dir
        .clone()
        .or_else(|| super::options::default_staging(&a.dest).filter(|d| d.is_dir()));
    let staging = match &dir {
        Some(d) => {
            Some(LocalStore::new(d).with_context(|| format!("staging dir {}", d.display()))?)
        }
        None => None,
    };
    let cleaned = crate::export::status::clean(
        dest.as_ref(),
        staging.as_ref().map(|s| s as &dyn Store),
        a.job.as_deref(),
        a.dry_run,
    )?;
    let verb = if a.dry_run { "would remove" } else { "removed" };
    let mut code = EXIT_OK;
    for c in &cleaned {
        match &c.refused {
            Some(why) => {
                eprintln!("job {}: left alone: {why}", c.job);
                code = EXIT_FAILURE;
            }
            None => println!(
                "job {}: {verb} {} staged objects ({} bytes), {} incomplete writes{}",
                c.job,
                c.staged_objects,
                c.staged_bytes,
                c.incomplete,
                if a.dry_run {
                    String::new()
                } else {
                    format!(", {} expired leases", c.expired_leases)
                }
            ),
        }
    }
    if cleaned.is_empty() {
        println!("no export job in {}", dest.describe());
    }
    Ok(code)
}
