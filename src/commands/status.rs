//! `backfill status`: how far each job in a destination is.

use super::{open_existing, EXIT_OK};
use crate::store::s3::S3Options;
use clap::Args;

/// `status` arguments.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Destination of an export (a path, `file://…` or `s3://bucket/prefix`).
    pub dest: String,
    /// Only this job id.
    #[arg(long)]
    pub job: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Where the job stages, when it ran with --staging-dir DIR [default: for DEST on
    /// S3, this machine's cache folder for it, as the export used]: staged units are
    /// counted there (on this machine only) besides DEST/_backfill/staging.
    #[arg(long, value_name = "DIR")]
    pub staging_dir: Option<std::path::PathBuf>,
    /// S3 settings, when DEST is `s3://…`.
    #[command(flatten)]
    pub s3: S3Options,
}

/// Runs `status`; returns the exit code.
pub fn run(a: &StatusArgs) -> anyhow::Result<i32> {
    let dest = open_existing(&a.dest, &a.s3)?;
    let dir = a
        .staging_dir
        .clone()
        .or_else(|| super::options::default_staging(&a.dest))
        .filter(|d| d.is_dir());
    let staging = match &dir {
        Some(d) => Some(crate::store::local::LocalStore::new(d)?),
        None => None,
    };
    let jobs = crate::export::status::status(
        dest.as_ref(),
        staging.as_ref().map(|s| s as &dyn crate::store::Store),
        a.job.as_deref(),
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&jobs)?);
        return Ok(EXIT_OK);
    }
    if jobs.is_empty() {
        println!("no export job in {}", dest.describe());
    }
    let now = crate::export::manifest::now_secs();
    for j in jobs {
        println!(
            "job {} ({:?}) from {}: {}",
            j.job, j.job_name, j.source, j.state
        );
        for h in &j.live_runs {
            println!("  live: {}", h.describe(now));
        }
        for h in &j.dead_runs {
            println!(
                "  stopped without finishing: {} (rerun the export to finish)",
                h.describe(now)
            );
        }
        const SHOWN: usize = 10;
        for h in j.folders_in_flight.iter().take(SHOWN) {
            println!("  in flight: {} by {} on {}", h.what, h.run, h.host);
        }
        if j.folders_in_flight.len() > SHOWN {
            println!(
                "  in flight: … and {} more folders",
                j.folders_in_flight.len() - SHOWN
            );
        }
        let in_flight = j.folders_in_flight.len() as u64;
        println!(
            "  folders: {} done, {} in flight, {} pending of {} planned; units staged (not yet assembled): {} of {} planned",
            j.groups_done,
            in_flight,
            j.groups_planned
                .saturating_sub(j.groups_done)
                .saturating_sub(in_flight),
            j.groups_planned,
            j.units_staged,
            j.units_planned
        );
        println!(
            "  records: {} in, {} written, {} rejected; {} of {} source bytes; {} objects; {} bytes staged",
            j.records_in, j.records_out, j.records_error, j.bytes_in, j.bytes_planned, j.objects, j.staged_bytes
        );
        if j.last_update > 0 {
            println!("  last update: {}s ago", now.saturating_sub(j.last_update));
        }
        match j.eta_seconds {
            Some(s) if j.bytes_in < j.bytes_planned => {
                println!("  estimated time left: {s}s at the rate observed")
            }
            _ => {}
        }
    }
    Ok(EXIT_OK)
}
