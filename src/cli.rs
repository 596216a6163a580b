//! The command line: the top-level arguments and the list of commands. Each
//! command's own arguments, run function and printing live in its module under
//! [`crate::commands`]; this file only parses, sets up logging and dispatches.
//! Nothing in the library imports it.

use crate::commands::{self, clean, errors, export, queue, reprocess, status, verify};
use clap::{Parser, Subcommand, ValueEnum};
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

pub use crate::commands::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE};

const ABOUT: &str =
    "Move historic Firefox Telemetry from the legacy Hadoop store into the partitioned \
S3 layout, converted, with proof that nothing was lost.";

const AFTER_HELP: &str = "Exit codes: 0 done; 1 operational failure (I/O, configuration, a server \
unreachable); 2 usage error; 3 done, but some input could not be read (listed in the report); \
4 parity violated (verify); 130 stopped by a signal after writing its checkpoint.";

/// Command-line arguments.
#[derive(Parser, Debug)]
#[command(name = "backfill", about = ABOUT, after_help = AFTER_HELP, disable_version_flag = true)]
pub struct Cli {
    /// Print the tool's version and the mappings' version, then exit.
    #[arg(long, short = 'V', global = true)]
    pub version: bool,
    /// More log output (-v: debug, -vv: trace).
    #[arg(long, short, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only warnings and errors; no progress bar.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Log line format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Use the mappings folder DIR (schema, histogram definitions, revision table)
    /// instead of the one built into the binary. It replaces the built-in one
    /// entirely; it is not merged with it.
    #[arg(long, value_name = "DIR", global = true)]
    pub mappings: Option<PathBuf>,
    /// The command.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Log formats.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Export legacy records from SOURCE into the partitioned layout under DEST.
    ///
    /// Every file under SOURCE is read (folder by folder, sorted; names starting
    /// with `_` or `.` are skipped). SequenceFiles and text dumps (plain, gzip, xz or
    /// bzip2) are detected from their content. Each record is validated and
    /// converted; good ones are written to
    /// `DEST/<reason>/<appName>/<channel>/<version>/<buildID>.<yyyyMMdd>.v2.log.<job>-<folder>-<n>.xz`,
    /// rejected ones (with their original bytes and the reason) to
    /// `DEST/_backfill/errors/`. Rerunning the same command resumes: finished
    /// folders are skipped, and the output is byte-identical to an uninterrupted run.
    #[command(after_help = AFTER_HELP)]
    Export(Box<export::ExportArgs>),
    /// Re-run the records of a store of the new layout (FROM) after a schema or
    /// mapping change, into TO, without the legacy cluster.
    ///
    /// Every object of FROM's layout (`.v2.log.` objects, the export's `.xz` and the
    /// old server's `.lzma`) is read day by day; records already converted (ver 2)
    /// are re-validated and re-routed under the current mappings without converting
    /// their histograms again, and written in the canonical serialisation (a line the
    /// export wrote comes out byte-identical); ver 1 records are converted in full.
    /// With --errors, FROM's error output is replayed too. TO gets the same layout,
    /// error output, manifests and guarantees as an export (resume, leases, status,
    /// errors, clean, verify); the report adds what moved between partitions, what the
    /// error output gave back and what is rejected now.
    #[command(after_help = AFTER_HELP)]
    Reprocess(Box<reprocess::ReprocessArgs>),
    /// Show the error output of DEST: counts by reason, or the records of one reason.
    #[command(after_help = AFTER_HELP)]
    Errors(errors::ErrorsArgs),
    /// Show how far each export job in DEST is: folders and units done and pending,
    /// records and bytes so far, last update, and the time left at the observed rate.
    #[command(after_help = AFTER_HELP)]
    Status(status::StatusArgs),
    /// Remove the staged pieces, checkpoints and incomplete writes an abandoned job
    /// left in DEST. Published objects, manifests and the error output of finished
    /// folders are never removed.
    #[command(after_help = AFTER_HELP)]
    Clean(clean::CleanArgs),
    /// Prove that DEST holds what the export job read from SOURCE: bookkeeping,
    /// objects (size, sha256) and source coverage; with --deep every record.
    #[command(after_help = AFTER_HELP)]
    Verify(Box<verify::VerifyArgs>),
    /// Share an export out through a queue: record the job and send one message
    /// per folder still to do to the SQS queue --queue, for `backfill work` to claim.
    /// Planning twice sends nothing twice; planning a finished job sends nothing.
    #[command(after_help = AFTER_HELP)]
    Plan(Box<queue::PlanArgs>),
    /// Claim folders from the queue `backfill plan` filled and export them, as many
    /// workers as wanted on any machines. A dead worker's folder reappears after
    /// --visibility-timeout and is finished by another; exits 0 once the queue is
    /// empty (or after --idle-exit seconds with nothing to claim).
    #[command(after_help = AFTER_HELP)]
    Work(queue::WorkArgs),
}

/// A writer for log lines that never tears the progress bar.
#[derive(Clone)]
struct BarWriter(indicatif::ProgressBar);

impl Write for BarWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.suspend(|| io::stderr().write_all(buf))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

fn init_logging(cli: &Cli, bar: &indicatif::ProgressBar) {
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        (_, 0) => "info",
        (_, 1) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("BACKFILL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("backfill={level},warn")));
    let bar = bar.clone();
    let make = move || BarWriter(bar.clone());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(make)
        .with_target(false);
    let _ = match cli.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.with_ansi(io::stderr().is_terminal()).try_init(),
    };
}

/// Runs the command line; returns the exit code.
pub fn main_with(cli: Cli) -> i32 {
    let bar = if cli.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr())
    };
    init_logging(&cli, &bar);
    let result = run(&cli, &bar);
    bar.finish_and_clear();
    match result {
        Ok(code) => code,
        Err(e) => {
            // A closed pipe (e.g. `| head`) is not a failure.
            if e.downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
            {
                return EXIT_OK;
            }
            eprintln!("backfill: error: {e:#}");
            EXIT_FAILURE
        }
    }
}

fn run(cli: &Cli, bar: &indicatif::ProgressBar) -> anyhow::Result<i32> {
    let mappings = cli.mappings.as_deref();
    if cli.version {
        return commands::version(mappings);
    }
    match &cli.command {
        None => {
            eprintln!("backfill: no command given; see `backfill --help`");
            Ok(EXIT_USAGE)
        }
        Some(Command::Export(a)) => {
            export::run(commands::load_mappings(mappings)?, a, cli.quiet, bar)
        }
        Some(Command::Reprocess(a)) => {
            reprocess::run(commands::load_mappings(mappings)?, a, cli.quiet, bar)
        }
        Some(Command::Errors(a)) => errors::run(a),
        Some(Command::Status(a)) => status::run(a),
        Some(Command::Clean(a)) => clean::run(a),
        Some(Command::Plan(a)) => {
            let q = crate::queue::SqsQueue::from_url(&a.queue)?;
            queue::run_plan(commands::load_mappings(mappings)?, mappings, a, &q)
        }
        Some(Command::Work(a)) => {
            let q: Arc<dyn crate::queue::Queue> =
                Arc::new(crate::queue::SqsQueue::from_url(&a.queue)?);
            queue::run_work(a, q, cli.quiet, bar)
        }
        Some(Command::Verify(a)) => {
            verify::run(commands::load_mappings(mappings)?, a, cli.quiet, bar)
        }
    }
}
