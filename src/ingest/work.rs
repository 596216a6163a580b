//! `ingest work`: claims raw logs (from a spool, or from an S3 incoming prefix
//! through an SQS queue) and publishes each through the export's pipeline.

use super::{RawLogSource, Spool};
use crate::commands::export::open_destination;
use crate::commands::options::{export_options, OutputArgs, SelectArgs};
use crate::commands::{
    load_mappings, open_existing, write_json, EXIT_FAILURE, EXIT_OK, EXIT_SIGNAL,
};
use crate::core::mappings::Mappings;
use crate::export::{self, ExportOptions, Report};
use crate::queue::{Queue, SqsQueue, VisibilityKeeper};
use crate::store::local::LocalStore;
use crate::store::s3::S3Options;
use crate::store::Store;
use anyhow::{bail, Context as _};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// `ingest work` arguments.
#[derive(Args, Debug)]
pub struct WorkArgs {
    /// Where objects are published: a local directory or `s3://bucket/prefix` (the
    /// layout the export writes; bookkeeping and the error output under `_backfill/`).
    pub dest: String,
    /// Claim finished raw logs from this spool (the one `ingest serve --spool` fills):
    /// `ready/` files are claimed by an atomic rename into `claimed/`.
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "queue",
        conflicts_with = "queue"
    )]
    pub spool: Option<PathBuf>,
    /// Claim raw logs from this SQS queue instead (one message per file, sent by
    /// `ingest serve --queue`); the files are read from --incoming.
    #[arg(long, value_name = "URL", requires = "incoming")]
    pub queue: Option<String>,
    /// Where `ingest serve --queue` uploads finished raw logs (`s3://bucket/prefix`).
    #[arg(long, value_name = "URL")]
    pub incoming: Option<String>,
    /// Process what is there, then exit (for tests and cron); by default a worker
    /// keeps polling.
    #[arg(long)]
    pub once: bool,
    /// Seconds between looks at an empty spool or queue.
    #[arg(long, default_value_t = 2, value_name = "SECS")]
    pub poll: u64,
    /// A spool claim not renewed for this long belongs to a dead worker and is
    /// given back (a live worker renews its claim every quarter of it).
    #[arg(long, default_value_t = 300, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub claim_ttl: u64,
    /// Seconds a claimed queue message stays invisible; extended every third of it
    /// while the file is worked on. A dead worker's message reappears after it.
    #[arg(long, default_value_t = 60, value_name = "SECS",
          value_parser = clap::value_parser!(u32).range(1..=43_200))]
    pub visibility_timeout: u32,
    /// Write a report (JSON: every file published, with its counts, and totals)
    /// to FILE when the worker exits.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Use the mappings folder DIR instead of the one built in (see `backfill --help`).
    #[arg(long, value_name = "DIR")]
    pub mappings: Option<PathBuf>,
    /// How objects are written (the job: its name defaults to `ingest`).
    #[command(flatten)]
    pub output: OutputArgs,
    /// S3 settings (DEST and --incoming).
    #[command(flatten)]
    pub s3: S3Options,
}

/// A queue message: one raw log uploaded to the incoming prefix.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IncomingFile {
    /// Format tag.
    pub format: String,
    /// The raw log's key under the incoming prefix.
    pub key: String,
}

/// The format tag of [`IncomingFile`].
pub const MESSAGE_FORMAT: &str = "ingest-raw/1";

/// What one published raw log gave.
#[derive(Debug, Serialize)]
struct FileDone {
    file: String,
    records_in: u64,
    records_out: u64,
    records_error: u64,
    objects: u64,
    bytes_in: u64,
    bytes_out: u64,
    /// Committed by an earlier try (a worker that died before removing it).
    already_committed: bool,
}

/// The worker's report.
#[derive(Debug, Default, Serialize)]
struct WorkReport {
    job: String,
    destination: String,
    files: Vec<FileDone>,
    failed: Vec<String>,
    records_in: u64,
    records_out: u64,
    records_error: u64,
}

/// The pipeline's options for the ingest job.
pub fn ingest_options(output: &OutputArgs, mappings: &Mappings) -> anyhow::Result<ExportOptions> {
    let mut output = output.clone();
    if output.job_name.is_none() {
        output.job_name = Some("ingest".into());
    }
    let mut opts = export_options(&SelectArgs::default(), &output, mappings)?;
    opts.folder_margin = 0;
    opts.split_size = u64::MAX;
    opts.ingest = true;
    Ok(opts)
}

/// Runs `ingest work`; returns the exit code.
pub fn run(a: &WorkArgs, quiet: bool, bar: &indicatif::ProgressBar) -> anyhow::Result<i32> {
    let mappings = load_mappings(a.mappings.as_deref())?;
    let opts = ingest_options(&a.output, &mappings)?;
    let job = export::job_spec(&opts, &mappings).id();
    let staging_dir = a.output.staging_dir(&a.dest);
    let out = open_destination(&a.dest, &a.s3, staging_dir.as_deref(), &mappings, &job)?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, EXIT_SIGNAL, Arc::clone(&stop))?;
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let mut w = Worker {
        mappings: &mappings,
        opts: &opts,
        dest: out.dest.as_ref(),
        staging: out.staging(),
        bar,
        stop: &stop,
        quiet,
        report: WorkReport {
            job: job.clone(),
            destination: out.dest.describe(),
            ..Default::default()
        },
    };
    let ended = match (&a.spool, &a.queue) {
        (Some(dir), _) => w.work_spool(a, dir),
        (None, Some(url)) => {
            let incoming = a.incoming.as_deref().expect("clap requires --incoming");
            let q: Arc<dyn Queue> = Arc::new(SqsQueue::from_url(url)?);
            w.work_queue(a, q, open_existing(incoming, &a.s3)?)
        }
        (None, None) => bail!("give --spool DIR or --queue URL"),
    };
    let report = w.report;
    if let Some(p) = &a.report {
        write_json(p, &report)?;
    }
    if !quiet {
        eprintln!(
            "ingest job {job}: {} files published ({} records in, {} written, {} rejected), {} failed",
            report.files.len(),
            report.records_in,
            report.records_out,
            report.records_error,
            report.failed.len()
        );
    }
    ended?;
    Ok(if stop.load(Ordering::SeqCst) {
        EXIT_SIGNAL
    } else if report.failed.is_empty() {
        EXIT_OK
    } else {
        EXIT_FAILURE
    })
}

struct Worker<'a> {
    mappings: &'a Mappings,
    opts: &'a ExportOptions,
    dest: &'a dyn Store,
    staging: &'a dyn Store,
    bar: &'a indicatif::ProgressBar,
    stop: &'a AtomicBool,
    quiet: bool,
    report: WorkReport,
}

impl Worker<'_> {
    /// Publishes raw log `name` of `source` through the pipeline: `Ok` once its
    /// group is committed (now or before).
    fn publish(&mut self, source: &RawLogSource, name: &str) -> anyhow::Result<()> {
        let mut opts = self.opts.clone();
        opts.only_folder = Some(name.to_string());
        let out = export::export(
            self.mappings,
            source,
            self.dest,
            self.staging,
            &opts,
            self.bar,
            self.stop,
        );
        let r: Report = out.report;
        if !r.complete || r.error.is_some() {
            if !self.quiet {
                crate::commands::export::summary(&r, out.interrupted);
            }
            self.report.failed.push(name.to_string());
            bail!(
                "{name}: not committed{}",
                r.error.map(|e| format!(": {e}")).unwrap_or_default()
            );
        }
        let done = FileDone {
            file: name.to_string(),
            records_in: r.stats.records_in,
            records_out: r.stats.records_out,
            records_error: r.stats.records_error,
            objects: r.objects,
            bytes_in: r.stats.bytes_in,
            bytes_out: r.bytes_out,
            already_committed: r.groups_resumed > 0,
        };
        tracing::info!(file = %name, records_in = done.records_in, records_out = done.records_out, records_error = done.records_error, already_committed = done.already_committed, "raw log published");
        self.report.records_in += done.records_in;
        self.report.records_out += done.records_out;
        self.report.records_error += done.records_error;
        self.report.files.push(done);
        Ok(())
    }

    fn work_spool(&mut self, a: &WorkArgs, dir: &std::path::Path) -> anyhow::Result<()> {
        let spool = Spool::open(dir, Duration::from_secs(a.claim_ttl))
            .with_context(|| format!("spool {}", dir.display()))?;
        let store = LocalStore::new(dir).with_context(|| format!("spool {}", dir.display()))?;
        let source = RawLogSource::new(Box::new(store), &format!("{}/", super::CLAIMED));
        let renew = Duration::from_secs(a.claim_ttl).div_f64(4.0);
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            spool.release_stale()?;
            let Some(name) = spool.claim()? else {
                if a.once {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_secs(a.poll));
                continue;
            };
            // The claim is renewed while the file is worked on; dropping the sender
            // stops the renewals at once.
            let (done, finished) = std::sync::mpsc::channel::<()>();
            let result = std::thread::scope(|s| {
                let name = &name;
                let spool = &spool;
                s.spawn(move || {
                    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                        finished.recv_timeout(renew)
                    {
                        if let Err(e) = spool.touch(name) {
                            tracing::warn!(file = %name, error = %e, "could not renew the claim");
                        }
                    }
                });
                let r = self.publish(&source, name);
                drop(done);
                r
            });
            match result {
                Ok(()) => spool.done(&name)?,
                Err(e) => {
                    // Left claimed: the claim expires and the file is tried again.
                    tracing::error!(file = %name, error = %format!("{e:#}"), "raw log not published; it is tried again once its claim expires");
                    if a.once {
                        return Ok(());
                    }
                    // DEST or the spool may be down: do not run through every file.
                    std::thread::sleep(Duration::from_secs(a.poll));
                }
            }
        }
    }

    fn work_queue(
        &mut self,
        a: &WorkArgs,
        queue: Arc<dyn Queue>,
        incoming: Box<dyn Store>,
    ) -> anyhow::Result<()> {
        let source = RawLogSource::new(incoming, "");
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            let wait = a.poll.min(20) as u32;
            let Some(m) = queue.receive(1, wait, a.visibility_timeout)?.pop() else {
                // Once: until nothing is visible or in flight (a dead worker's
                // message reappears after its visibility timeout and is done here).
                if a.once && queue.approximate_counts()? == (0, 0) {
                    return Ok(());
                }
                continue;
            };
            let file = match serde_json::from_str::<IncomingFile>(&m.body) {
                Ok(f) if f.format == MESSAGE_FORMAT => f,
                _ => {
                    tracing::error!(message = %m.id, body = %m.body, "not an ingest message ({MESSAGE_FORMAT}); left for the queue's dead-letter policy");
                    continue;
                }
            };
            let keeper =
                VisibilityKeeper::start(Arc::clone(&queue), m.clone(), a.visibility_timeout)?;
            let result = self.publish(&source, &file.key);
            drop(keeper);
            match result {
                Ok(()) => {
                    // Committed: the incoming file, then the message (a crash in
                    // between redelivers a message whose group is committed: it is
                    // only deleted again).
                    source.remove(&file.key)?;
                    queue.delete(&m)?;
                }
                Err(e) => {
                    tracing::error!(file = %file.key, error = %format!("{e:#}"), "raw log not published; its message reappears for another try");
                    std::thread::sleep(Duration::from_secs(a.poll));
                }
            }
        }
    }
}
