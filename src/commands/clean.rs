//! `backfill clean`: remove what an abandoned job left staged.

use super::{open_existing, EXIT_OK};
use crate::store::s3::S3Options;
use clap::Args;

/// `clean` arguments.
#[derive(Args, Debug)]
pub struct CleanArgs {
    /// Destination of an export (a path, `file://…` or `s3://bucket/prefix`).
    pub dest: String,
    /// Only this job id (default: every job in DEST).
    #[arg(long)]
    pub job: Option<String>,
    /// S3 settings, when DEST is `s3://…`.
    #[command(flatten)]
    pub s3: S3Options,
}

/// Runs `clean`; returns the exit code.
pub fn run(a: &CleanArgs) -> anyhow::Result<i32> {
    let dest = open_existing(&a.dest, &a.s3)?;
    let c = crate::export::status::clean(dest.as_ref(), a.job.as_deref())?;
    println!(
        "removed {} staged objects ({} bytes) and {} incomplete writes",
        c.staged_objects, c.staged_bytes, c.incomplete
    );
    Ok(EXIT_OK)
}
