//! `backfill plan` and `backfill work`: one export shared by any number of workers
//! on any machines through a queue (SQS), like the old system's workers.
//!
//! `plan` records the job, lists the source once and sends one message per folder
//! still to do (a *group*: the unit of commit, so a redelivered message redoes at
//! most one folder, and a folder's units stay on one machine, whose staging they
//! share; a message per unit would make every worker assemble folders it holds
//! only a part of). A message carries the export's own arguments and the folder,
//! so a worker needs nothing but the queue. `work` claims a message, keeps it
//! invisible while it works (extending its visibility), exports that folder exactly
//! as a single `export` would (same names, same bytes; the folder's lease keeps two
//! workers off one folder), and deletes the message once the folder is committed.
//! A worker that dies leaves its message to reappear after the visibility timeout;
//! whoever takes it next finds the dead worker's checkpoints and leftovers and
//! finishes the folder. Planning twice sends nothing twice: each folder's message is
//! recorded in the destination (`_backfill/queue/<job>/`) once sent.

use super::export::ExportArgs;
use super::options::export_options;
use super::{open_source, open_store, EXIT_FAILURE, EXIT_OK, EXIT_SIGNAL};
use crate::core::mappings::Mappings;
use crate::export::{self, manifest, plan, History};
use crate::queue::{Message, Queue, VisibilityKeeper};
use crate::source::WalkItem;
use crate::store::Store;
use anyhow::{bail, Context as _};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Format tag of the queue's messages.
const FORMAT: &str = "backfill-queue/1";

/// `plan` arguments: the export's, plus the queue.
#[derive(Args, Debug)]
pub struct PlanArgs {
    /// The SQS queue URL the workers read (`https://sqs.REGION.amazonaws.com/ACCOUNT/NAME`;
    /// AWS_ENDPOINT_URL_SQS or AWS_ENDPOINT_URL for another endpoint).
    #[arg(long, value_name = "URL")]
    pub queue: String,
    /// Send the messages of every folder not yet committed again, even those sent
    /// before (after the queue was purged, or its messages expired).
    #[arg(long)]
    pub resend: bool,
    /// The export this plan shares out.
    #[command(flatten)]
    pub export: ExportArgs,
}

/// `work` arguments.
#[derive(Args, Debug)]
pub struct WorkArgs {
    /// The SQS queue URL `plan` filled.
    #[arg(long, value_name = "URL")]
    pub queue: String,
    /// Worker threads for each folder (default: all cores).
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    /// Seconds a claimed message stays invisible to other workers; it is extended
    /// every third of this while the worker is alive, so a dead worker's message
    /// reappears this long after it died.
    #[arg(long, default_value_t = 60, value_name = "SECS",
          value_parser = clap::value_parser!(u32).range(5..=43_200))]
    pub visibility_timeout: u32,
    /// Exit 0 after this many seconds with nothing to claim, even if messages are
    /// still held by other (perhaps dead) workers. Without it the worker waits
    /// until the queue is empty.
    #[arg(long, value_name = "SECS")]
    pub idle_exit: Option<u64>,
    /// Stop after this many folders (for tests and short-lived batch slots).
    #[arg(long, value_name = "N")]
    pub max_folders: Option<u64>,
}

/// What a message says: the export to run and the folder to do.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Work {
    /// Format tag.
    pub format: String,
    /// The job id the planner computed (a worker with other mappings or another
    /// converter computes another, and refuses the message).
    pub job: String,
    /// The folder, relative to the source.
    pub folder: String,
    /// The export's arguments, as `backfill export` takes them.
    pub args: Vec<String>,
    /// The `--filter` file's content, when the export has one.
    pub filter: Option<String>,
}

fn queue_marker(job: &str, folder: &str) -> String {
    format!(
        "{}/queue/{job}/{}.json",
        manifest::BOOKKEEPING,
        plan::group_id(folder)
    )
}

/// The export's arguments as given to `plan`, for the workers: the command line
/// after `plan`, without the queue's own options, the local-only ones (report,
/// logging) and `--jobs` (each worker has its own).
fn export_args_from_command_line() -> Vec<String> {
    let mut out = Vec::new();
    let mut args = std::env::args().skip(1).peekable();
    let mut seen_plan = false;
    while let Some(a) = args.next() {
        if !seen_plan {
            if a == "plan" {
                seen_plan = true;
            }
            continue;
        }
        let (name, inline) = match a.split_once('=') {
            Some((n, _)) if n.starts_with("--") => (n.to_string(), true),
            _ => (a.clone(), false),
        };
        if name.starts_with("-j") && name.len() > 2 && !name.starts_with("--") {
            continue; // -jN: each worker picks its own threads
        }
        match name.as_str() {
            "--queue" | "--report" | "--filter" | "--log-format" | "--mappings" | "--jobs"
            | "-j" => {
                if !inline {
                    args.next();
                }
            }
            "--resend" | "--dry-run" | "-q" | "--quiet" | "-v" | "--verbose" | "-vv" => {}
            _ => out.push(a),
        }
    }
    out
}

/// Sends a batch of messages, then records each as sent.
fn send_and_record(
    queue: &dyn Queue,
    dest: &dyn Store,
    batch: &[(String, String)],
) -> anyhow::Result<()> {
    let bodies: Vec<String> = batch.iter().map(|(b, _)| b.clone()).collect();
    queue.send_batch(&bodies)?;
    for (body, marker) in batch {
        dest.put(marker, body.as_bytes())
            .context("recording a sent message")?;
    }
    Ok(())
}

/// Runs `plan`; returns the exit code.
pub fn run_plan(
    mappings: Arc<Mappings>,
    mappings_dir: Option<&std::path::Path>,
    a: &PlanArgs,
    queue: &dyn Queue,
) -> anyhow::Result<i32> {
    let e = &a.export;
    let opts = export_options(&e.job.select, &e.job.output, &mappings)?;
    let source = open_source(&e.source, &e.hdfs)?;
    let spec = export::job_spec(&opts, &mappings);
    let dest = open_store(&e.dest, &e.s3, BTreeMap::new())?;
    let job = if e.job.dry_run {
        spec.id()
    } else {
        export::claim_job(dest.as_ref(), &spec, &source.describe())?
    };
    let filter = match &e.job.select.filter {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("reading filter {}", p.display()))?,
        ),
        None => None,
    };
    let mut args = export_args_from_command_line();
    if let Some(d) = mappings_dir {
        // The workers need the same mappings folder at the same path.
        args.push("--mappings".into());
        args.push(d.display().to_string());
    }
    let history = History::load(dest.as_ref(), &job)?;
    let (mut sent, mut already, mut committed, mut batch) = (0u64, 0u64, 0u64, Vec::new());
    let mut failure = None;
    let started_at = manifest::now_secs();
    let mut record = manifest::RunRecord {
        job: job.clone(),
        started_at,
        host: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default(),
        pid: std::process::id(),
        jobs: 0,
        folders: 0,
        files: 0,
        bytes: 0,
        units: 0,
        shard: Some("queue".into()),
    };
    source.walk(&mut |item| {
        let WalkItem::Folder { dir, files } = item else {
            return true;
        };
        if !plan::folder_selected(&dir, &opts.window, opts.folder_margin) {
            return true;
        }
        // What `status` measures the workers' progress against.
        record.folders += 1;
        record.files += files.len() as u64;
        record.bytes += files.iter().map(|f| f.size).sum::<u64>();
        record.units += plan::units(&files, opts.split_size).len() as u64;
        if plan::covers(&history.covered(&dir), &opts.window) {
            committed += 1;
            return true;
        }
        let work = Work {
            format: FORMAT.into(),
            job: job.clone(),
            folder: dir.clone(),
            args: args.clone(),
            filter: filter.clone(),
        };
        let body = serde_json::to_string(&work).expect("work serialises");
        if e.job.dry_run {
            sent += 1;
            return true;
        }
        // Recorded once sent: a plan killed in between sends that folder again
        // next time, which is harmless (a redelivered message redoes nothing that
        // is committed); a message never sent is never recorded as sent.
        let marker = queue_marker(&job, &dir);
        match dest.modified(&marker) {
            Ok(Some(_)) if !a.resend => {
                already += 1;
                return true;
            }
            Ok(_) => {}
            Err(err) => {
                failure =
                    Some(anyhow::Error::from(err).context("reading the record of sent messages"));
                return false;
            }
        }
        batch.push((body, marker));
        sent += 1;
        if batch.len() == 10 {
            if let Err(err) = send_and_record(queue, dest.as_ref(), &std::mem::take(&mut batch)) {
                failure = Some(err);
                return false;
            }
        }
        true
    })?;
    if let Some(f) = failure {
        return Err(f);
    }
    if !batch.is_empty() {
        send_and_record(queue, dest.as_ref(), &batch)?;
    }
    if !e.job.dry_run {
        record.write(dest.as_ref())?;
    }
    let verb = if e.job.dry_run { "would send" } else { "sent" };
    eprintln!(
        "job {job}: {verb} {sent} folders to {}; {already} were sent before, {committed} are committed",
        queue.describe()
    );
    Ok(EXIT_OK)
}

/// Runs `work`; returns the exit code.
pub fn run_work(
    a: &WorkArgs,
    queue: Arc<dyn Queue>,
    quiet: bool,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<i32> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, EXIT_SIGNAL, Arc::clone(&stop))?;
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let mut idle_since = Instant::now();
    let (mut done, mut failed) = (0u64, 0u64);
    // Jobs seen, for the sweep once the queue is empty: their export arguments.
    let mut seen: BTreeMap<String, Work> = BTreeMap::new();
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(EXIT_SIGNAL);
        }
        if a.max_folders.is_some_and(|m| done + failed >= m) {
            break;
        }
        // A short long-poll: an idle worker notices an empty queue within seconds (SQS
        // bills a request per poll, about 43,000 a day for an idle worker).
        let mut got = queue.receive(1, 2, a.visibility_timeout)?;
        let Some(m) = got.pop() else {
            let (visible, in_flight) = queue.approximate_counts()?;
            if visible == 0 && in_flight == 0 {
                tracing::info!(queue = %queue.describe(), done, failed, "the queue is empty");
                break;
            }
            if a.idle_exit
                .is_some_and(|s| idle_since.elapsed() >= Duration::from_secs(s))
            {
                tracing::info!(queue = %queue.describe(), visible, in_flight, "nothing to claim for --idle-exit seconds; leaving");
                return Ok(if failed > 0 { EXIT_FAILURE } else { EXIT_OK });
            }
            continue;
        };
        let keeper = VisibilityKeeper::start(Arc::clone(&queue), m.clone(), a.visibility_timeout)?;
        let result = do_message(&m, a, quiet, bar, &stop);
        drop(keeper);
        match result {
            Ok((work, true)) => {
                queue.delete(&m)?;
                done += 1;
                idle_since = Instant::now();
                seen.insert(work.job.clone(), work);
                // The last folder just went: no need to poll once more to see it.
                if queue.approximate_counts()? == (0, 0) {
                    tracing::info!(queue = %queue.describe(), done, failed, "the queue is empty");
                    break;
                }
            }
            Ok((work, false)) => {
                failed += 1;
                idle_since = Instant::now();
                tracing::error!(folder = %work.folder, receive_count = m.receive_count, "folder not committed; its message reappears for another try");
                seen.insert(work.job.clone(), work);
            }
            Err(e) => {
                failed += 1;
                // Not reset for a message that cannot work at all: --idle-exit
                // still ends a worker that only sees such messages.
                tracing::error!(error = %format!("{e:#}"), message = %m.id, "cannot do this message; it reappears (give the queue a dead-letter queue for messages that never work)");
            }
        }
    }
    // The queue is empty: whatever dead workers left (staging, uploads, intents)
    // goes, under each job's sweep lease and only when no other run is alive.
    for w in seen.values() {
        match sweep_job(w) {
            Ok(s) => tracing::info!(job = %w.job, sweep = %s, "job swept"),
            Err(e) => {
                tracing::warn!(job = %w.job, error = %format!("{e:#}"), "sweep failed; the next worker or export retries it")
            }
        }
    }
    if !quiet {
        eprintln!("worker: {done} folders committed, {failed} failed");
    }
    Ok(if failed > 0 { EXIT_FAILURE } else { EXIT_OK })
}

/// How a worker reads a message's export arguments: as `backfill export` would.
#[derive(clap::Parser, Debug)]
#[command(name = "backfill")]
struct WorkerCommandLine {
    /// The mappings folder, when the planner was given one.
    #[arg(long, global = true)]
    mappings: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: WorkerCommand,
}

#[derive(clap::Subcommand, Debug)]
enum WorkerCommand {
    Export(Box<ExportArgs>),
}

/// The export a message describes, parsed as `backfill export` would.
fn parse_work(
    m: &Message,
    jobs: Option<usize>,
) -> anyhow::Result<(Work, Arc<Mappings>, ExportArgs, Option<tempfile_path::Temp>)> {
    let work: Work = serde_json::from_str(&m.body)
        .with_context(|| format!("message {}: not a backfill work message", m.id))?;
    if work.format != FORMAT {
        bail!(
            "message {}: format {:?}, this worker reads {FORMAT}",
            m.id,
            work.format
        );
    }
    let mut argv = vec!["backfill".to_string(), "export".to_string()];
    argv.extend(work.args.iter().cloned());
    let filter = match &work.filter {
        Some(content) => {
            let t = tempfile_path::Temp::write(content)?;
            argv.push("--filter".into());
            argv.push(t.path().display().to_string());
            Some(t)
        }
        None => None,
    };
    if let Some(j) = jobs {
        argv.push("--jobs".into());
        argv.push(j.to_string());
    }
    let line = <WorkerCommandLine as clap::Parser>::try_parse_from(&argv)
        .map_err(|e| anyhow::anyhow!("message {}: its export arguments: {e}", m.id))?;
    let WorkerCommand::Export(args) = line.command;
    let mappings = super::load_mappings(line.mappings.as_deref())?;
    Ok((work, mappings, *args, filter))
}

/// Does one message: exports its folder. Returns the work and whether the folder is
/// committed.
fn do_message(
    m: &Message,
    a: &WorkArgs,
    quiet: bool,
    bar: &indicatif::ProgressBar,
    stop: &AtomicBool,
) -> anyhow::Result<(Work, bool)> {
    let (work, mappings, e, _filter) = parse_work(m, a.jobs)?;
    let mut opts = export_options(&e.job.select, &e.job.output, &mappings)?;
    opts.only_folder = Some(work.folder.clone());
    let spec = export::job_spec(&opts, &mappings);
    if spec.id() != work.job {
        bail!(
            "message {} is for job {}, but this worker's settings make job {} (other mappings or another converter version: {})",
            m.id,
            work.job,
            spec.id(),
            env!("CARGO_PKG_VERSION")
        );
    }
    let source = open_source(&e.source, &e.hdfs)?;
    let out = e.destination(&mappings, &work.job)?;
    let (dest, staging) = (&out.dest, out.staging());
    tracing::info!(folder = %work.folder, job = %work.job, receive_count = m.receive_count, "working on a folder");
    let out = export::export(
        &mappings,
        source.as_ref(),
        dest.as_ref(),
        staging,
        &opts,
        bar,
        stop,
    );
    bar.set_position(0);
    if !quiet || !out.report.complete {
        super::export::summary(&out.report, out.interrupted);
    }
    Ok((work, out.report.complete && out.report.error.is_none()))
}

/// The end-of-job sweep of the job a message described.
fn sweep_job(w: &Work) -> anyhow::Result<String> {
    let m = Message {
        id: "sweep".into(),
        receipt: String::new(),
        body: serde_json::to_string(w)?,
        receive_count: 0,
    };
    let (work, mappings, e, _filter) = parse_work(&m, None)?;
    let opts = export_options(&e.job.select, &e.job.output, &mappings)?;
    let out = e.destination(&mappings, &work.job)?;
    let (dest, staging) = (&out.dest, out.staging());
    export::sweep_job(dest.as_ref(), staging, &opts, &work.job)
}

/// A temporary file for a message's filter, removed when dropped.
mod tempfile_path {
    use std::path::{Path, PathBuf};

    pub struct Temp(PathBuf);

    impl Temp {
        pub fn write(content: &str) -> std::io::Result<Temp> {
            static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p = std::env::temp_dir()
                .join(format!("backfill-filter-{}-{n}.json", std::process::id()));
            std::fs::write(&p, content)?;
            Ok(Temp(p))
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Temp {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}
