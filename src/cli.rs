//! The command line: argument definitions and the thin shells that connect them to
//! sources, stores and the export. Exit codes are the same for every command
//! (SPEC §6): 0 done; 1 operational failure; 2 usage error; 3 done but some input
//! could not be read; 4 parity violated; 130 stopped by a signal after its
//! checkpoint.

use crate::core::mappings::Mappings;
use crate::core::schema::Filter;
use crate::export::errors::ErrorRecord;
use crate::export::manifest::BOOKKEEPING;
use crate::export::plan::DayWindow;
use crate::export::{self, ExportOptions, Report};
use crate::mappings_dir::DirMappings;
use crate::source::hdfs::{HdfsOptions, HdfsSource};
use crate::source::{local::LocalSource, Source};
use crate::store::s3::{S3Options, S3Store};
use crate::store::{local::LocalStore, Store};
use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::collections::BTreeMap;
use std::io::{self, BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Exit code: done.
pub const EXIT_OK: i32 = 0;
/// Exit code: operational failure.
pub const EXIT_FAILURE: i32 = 1;
/// Exit code: usage error.
pub const EXIT_USAGE: i32 = 2;
/// Exit code: stopped by a signal after writing the checkpoint.
pub const EXIT_SIGNAL: i32 = 130;

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
    Export(Box<ExportArgs>),
    /// Show the error output of DEST: counts by reason, or the records of one reason.
    #[command(after_help = AFTER_HELP)]
    Errors(ErrorsArgs),
    /// Show how far each export job in DEST is: folders and units done and pending,
    /// records and bytes so far, last update, and the time left at the observed rate.
    #[command(after_help = AFTER_HELP)]
    Status(StatusArgs),
    /// Remove the staged pieces, checkpoints and incomplete writes an abandoned job
    /// left in DEST. Published objects, manifests and the error output of finished
    /// folders are never removed.
    #[command(after_help = AFTER_HELP)]
    Clean(CleanArgs),
}

/// `export` arguments.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Legacy data: a local directory or file (a path or `file://…`), or HDFS
    /// (`hdfs://namenode:port/data/telemetry`, `hdfs://nameservice/…` or `viewfs://…`
    /// resolved from HADOOP_CONF_DIR).
    pub source: String,
    /// Destination: a local directory (a path or `file://…`) or `s3://bucket/prefix`.
    pub dest: String,
    /// Worker threads (default: all cores).
    #[arg(long, short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    /// xz preset of the objects, 0 (fastest) to 9 (smallest). The old live system used 1.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=9))]
    pub xz_preset: u32,
    /// Size at which a partition's object is closed and the next part begun,
    /// uncompressed (e.g. 500MB, 1GiB, 1048576).
    #[arg(long, default_value = "500MB", value_parser = parse_size, value_name = "SIZE")]
    pub target_size: u64,
    /// Converted bytes a worker buffers per unit before compressing the largest
    /// partitions into pieces; bounds memory per worker whatever the number of
    /// partitions. Changing it changes the output bytes (it is part of the job).
    #[arg(long, default_value = "64MiB", value_parser = parse_size, value_name = "SIZE")]
    pub buffer_size: u64,
    /// SequenceFiles larger than this are read as several units, split at sync
    /// markers, so one big file keeps several workers busy.
    #[arg(long, default_value = "256MiB", value_parser = parse_size, value_name = "SIZE")]
    pub split_size: u64,
    /// First submission day to export (yyyyMMdd or yyyy-MM-dd), inclusive.
    #[arg(long, value_parser = parse_day_arg, value_name = "DAY")]
    pub from: Option<u32>,
    /// Last submission day to export (yyyyMMdd or yyyy-MM-dd), inclusive.
    #[arg(long, value_parser = parse_day_arg, value_name = "DAY")]
    pub to: Option<u32>,
    /// With --from/--to, folders named yyyy/MM/dd are read when their day is within
    /// this many days of the range (a folder can hold a few records of a
    /// neighbouring day); records are then selected by the day in their key.
    #[arg(long, default_value_t = 1, value_name = "DAYS")]
    pub folder_margin: u32,
    /// Only export records whose final dimension values match FILE (schema-filter
    /// format, e.g. `{"version":1,"dimensions":[{"field_name":"reason","allowed_values":["saved-session"]}]}`).
    #[arg(long, value_name = "FILE")]
    pub filter: Option<PathBuf>,
    /// Write the run report (JSON) to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Show what would be read (files, bytes, days, estimated output) and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Name of the job; a destination can hold several jobs with different names.
    #[arg(long, default_value = "export", value_name = "NAME")]
    pub job_name: String,
    /// Stage pieces in this local directory instead of DEST/_backfill/staging
    /// (resuming then needs the same machine).
    #[arg(long, value_name = "DIR")]
    pub staging_dir: Option<PathBuf>,
    /// HDFS source settings.
    #[command(flatten)]
    pub hdfs: HdfsOptions,
    /// S3 destination settings.
    #[command(flatten)]
    pub s3: S3Options,
}

/// `errors` arguments.
#[derive(Args, Debug)]
pub struct ErrorsArgs {
    /// Destination of an export (a path or `file://…`).
    pub dest: String,
    /// Print the records of this reason (one JSON line each, original bytes in base64).
    #[arg(long)]
    pub reason: Option<String>,
    /// Only this job id.
    #[arg(long)]
    pub job: Option<String>,
    /// Print at most N records.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// S3 settings, when DEST is `s3://…`.
    #[command(flatten)]
    pub s3: S3Options,
}

/// `status` arguments.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Destination of an export (a path or `file://…`).
    pub dest: String,
    /// Only this job id.
    #[arg(long)]
    pub job: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// S3 settings, when DEST is `s3://…`.
    #[command(flatten)]
    pub s3: S3Options,
}

/// `clean` arguments.
#[derive(Args, Debug)]
pub struct CleanArgs {
    /// Destination of an export (a path or `file://…`).
    pub dest: String,
    /// Only this job id (default: every job in DEST).
    #[arg(long)]
    pub job: Option<String>,
    /// S3 settings, when DEST is `s3://…`.
    #[command(flatten)]
    pub s3: S3Options,
}

/// Parses sizes like `500MB`, `64MiB`, `1G`, `1048576`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 500MB, 64MiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit (use B, KB, KiB, MB, MiB, GB, GiB)"
            ))
        }
    };
    match n.checked_mul(mult) {
        Some(0) => Err("size must be at least 1 byte".into()),
        Some(v) => Ok(v),
        None => Err(format!("{s:?} is too large")),
    }
}

fn parse_day_arg(s: &str) -> Result<u32, String> {
    export::plan::parse_day(s)
}

/// A local path from a path or `file://` URL; other schemes are named in the error.
fn local_path(arg: &str, what: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = arg.strip_prefix("file://") {
        return Ok(PathBuf::from(p));
    }
    if let Some((scheme, _)) = arg.split_once("://") {
        bail!("{what} {arg:?}: {scheme}:// is not supported by this build (local directories and file:// only)");
    }
    Ok(PathBuf::from(arg))
}

/// Opens a destination: `s3://…` or a local directory. `metadata` goes on every
/// object written (S3).
pub fn open_store(
    url: &str,
    s3: &S3Options,
    metadata: BTreeMap<String, String>,
) -> anyhow::Result<Box<dyn Store>> {
    if url.starts_with("s3://") {
        let store =
            S3Store::from_url(url, s3, metadata).with_context(|| format!("destination {url}"))?;
        return Ok(Box::new(store));
    }
    let path = local_path(url, "destination")?;
    Ok(Box::new(LocalStore::new(&path).with_context(|| {
        format!("destination {}", path.display())
    })?))
}

/// Opens an existing destination for reading its bookkeeping.
fn open_existing(url: &str, s3: &S3Options) -> anyhow::Result<Box<dyn Store>> {
    if !url.starts_with("s3://") {
        let path = local_path(url, "destination")?;
        anyhow::ensure!(
            path.is_dir(),
            "destination {} does not exist",
            path.display()
        );
    }
    open_store(url, s3, BTreeMap::new())
}

/// Opens a legacy source: `hdfs://…`, `viewfs://…` or a local path.
pub fn open_source(url: &str, hdfs: &HdfsOptions) -> anyhow::Result<Box<dyn Source>> {
    if url.starts_with("hdfs://") || url.starts_with("viewfs://") {
        return Ok(Box::new(
            HdfsSource::from_url(url, hdfs).with_context(|| format!("source {url}"))?,
        ));
    }
    let path = local_path(url, "source")?;
    Ok(Box::new(
        LocalSource::new(&path).with_context(|| format!("source {}", path.display()))?,
    ))
}

fn load_mappings(dir: &Option<PathBuf>) -> anyhow::Result<Arc<Mappings>> {
    let m = match dir {
        Some(d) => Mappings::load(&DirMappings::new(d))
            .with_context(|| format!("loading mappings from {}", d.display()))?,
        None => Mappings::embedded()
            .map_err(|e| anyhow::anyhow!("built-in mappings: {e}"))?
            .clone(),
    };
    for w in m.warnings() {
        tracing::warn!(warning = %w, "mappings");
    }
    Ok(Arc::new(m))
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
    if cli.version {
        let m = load_mappings(&cli.mappings)?;
        println!(
            "backfill {} (mappings {})",
            env!("CARGO_PKG_VERSION"),
            m.version()
        );
        return Ok(EXIT_OK);
    }
    match &cli.command {
        None => {
            eprintln!("backfill: no command given; see `backfill --help`");
            Ok(EXIT_USAGE)
        }
        Some(Command::Export(a)) => run_export(cli, a, bar),
        Some(Command::Errors(a)) => run_errors(a),
        Some(Command::Status(a)) => run_status(a),
        Some(Command::Clean(a)) => {
            let dest = open_existing(&a.dest, &a.s3)?;
            let c = crate::export::status::clean(dest.as_ref(), a.job.as_deref())?;
            println!(
                "removed {} staged objects ({} bytes) and {} incomplete writes",
                c.staged_objects, c.staged_bytes, c.incomplete
            );
            Ok(EXIT_OK)
        }
    }
}

fn run_export(cli: &Cli, a: &ExportArgs, bar: &indicatif::ProgressBar) -> anyhow::Result<i32> {
    let mappings = load_mappings(&cli.mappings)?;
    let source = open_source(&a.source, &a.hdfs)?;
    if !a.source.contains("://") || a.source.starts_with("file://") {
        if let (Ok(s), Ok(d)) = (
            local_path(&a.source, "source")?.canonicalize(),
            local_path(&a.dest, "destination").and_then(|p| Ok(p.canonicalize()?)),
        ) {
            if d.starts_with(&s) {
                bail!(
                    "destination {} is inside the source {}: the export would read its own output",
                    d.display(),
                    s.display()
                );
            }
        }
    }
    if let (Some(f), Some(t)) = (a.from, a.to) {
        if f > t {
            bail!("--from {f} is after --to {t}");
        }
    }
    let filter = match &a.filter {
        None => None,
        Some(p) => {
            let bytes =
                std::fs::read(p).with_context(|| format!("reading filter {}", p.display()))?;
            let f = Filter::from_json(&bytes, &p.display().to_string(), mappings.schema())?;
            Some((f, hex::encode(crate::export::manifest::sha256(&bytes))))
        }
    };
    let opts = ExportOptions {
        job_name: a.job_name.clone(),
        jobs: a
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1),
        xz_preset: a.xz_preset,
        target_size: a.target_size,
        buffer_size: a.buffer_size,
        split_size: a.split_size,
        window: DayWindow {
            from: a.from,
            to: a.to,
        },
        folder_margin: a.folder_margin,
        filter,
    };
    if a.dry_run {
        return dry_run(source.as_ref(), &opts, &mappings, a);
    }
    let metadata = BTreeMap::from([
        (
            "backfill-version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        (
            "mappings-version".to_string(),
            mappings.version().to_string(),
        ),
        ("job".to_string(), export::job_spec(&opts, &mappings).id()),
    ]);
    let dest = open_store(&a.dest, &a.s3, metadata.clone())?;
    let staging: Box<dyn Store> = match &a.staging_dir {
        Some(d) => {
            Box::new(LocalStore::new(d).with_context(|| format!("staging dir {}", d.display()))?)
        }
        None => open_store(&a.dest, &a.s3, metadata)?,
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
    tracing::info!(source = %source.describe(), dest = %dest.describe(), jobs = opts.jobs, "export starting");
    let (report, interrupted) = export::export(
        &mappings,
        source.as_ref(),
        dest.as_ref(),
        staging.as_ref(),
        &opts,
        bar,
        &stop,
    )?;
    bar.finish_and_clear();
    if let Some(p) = &a.report {
        write_report(p, &report)?;
    }
    if !cli.quiet || interrupted || report.exit_code() != EXIT_OK {
        summary(&report, interrupted);
    }
    Ok(if interrupted || stop.load(Ordering::SeqCst) {
        EXIT_SIGNAL
    } else {
        report.exit_code()
    })
}

fn write_report(path: &PathBuf, report: &Report) -> anyhow::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(report)?;
    bytes.push(b'\n');
    std::fs::write(path, bytes).with_context(|| format!("writing report {}", path.display()))
}

fn summary(r: &Report, interrupted: bool) {
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
    for u in &r.stats.unreadable {
        eprintln!(
            "unreadable: {} at offset {} ({} bytes): {}",
            u.file, u.offset, u.length, u.error
        );
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
    a: &ExportArgs,
) -> anyhow::Result<i32> {
    let s = export::survey(source, opts)?;
    let spec = export::job_spec(opts, mappings);
    // Converted JSON is about 0.65 of the input and xz -1 shrinks it about 5.75x on
    // real payloads (BENCHMARKS.md); other presets are in the same range.
    let est = (s.bytes as f64 * 0.65 / 5.75) as u64;
    let days: Vec<String> = s.days.iter().map(|d| d.to_string()).collect();
    let plan = serde_json::json!({
        "dry_run": true,
        "source": source.describe(),
        "destination": a.dest,
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
    if let Some(p) = &a.report {
        std::fs::write(p, serde_json::to_vec_pretty(&plan)?)
            .with_context(|| format!("writing report {}", p.display()))?;
    }
    eprintln!(
        "would read {} files ({} bytes) in {} folders covering {} days; about {} bytes of objects; nothing written",
        s.files,
        s.bytes,
        s.folders,
        s.days.len(),
        est
    );
    Ok(if s.unreadable.is_empty() { EXIT_OK } else { 3 })
}

fn run_status(a: &StatusArgs) -> anyhow::Result<i32> {
    let dest = open_existing(&a.dest, &a.s3)?;
    let jobs = crate::export::status::status(dest.as_ref(), a.job.as_deref())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&jobs)?);
        return Ok(EXIT_OK);
    }
    if jobs.is_empty() {
        println!("no export job in {}", dest.describe());
    }
    let now = crate::export::manifest::now_secs();
    for j in jobs {
        println!("job {} ({:?}) from {}", j.job, j.job_name, j.source);
        println!(
            "  folders: {} done of {} planned; units staged (not yet assembled): {} of {} planned",
            j.groups_done, j.groups_planned, j.units_staged, j.units_planned
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
            _ if j.bytes_planned > 0 && j.bytes_in >= j.bytes_planned => println!("  done"),
            _ => {}
        }
    }
    Ok(EXIT_OK)
}

fn run_errors(a: &ErrorsArgs) -> anyhow::Result<i32> {
    let dest = open_existing(&a.dest, &a.s3)?;
    let prefix = match &a.job {
        Some(j) => format!("{BOOKKEEPING}/errors/{j}/"),
        None => format!("{BOOKKEEPING}/errors/"),
    };
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut shown = 0;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    for meta in dest.list(&prefix)? {
        let r = dest.open(&meta.key)?;
        let r = crate::core::newstore::open_object(r)
            .with_context(|| format!("opening {}", meta.key))?;
        for (n, line) in r.lines().enumerate() {
            let line = line.with_context(|| format!("reading {}", meta.key))?;
            let rec: ErrorRecord = serde_json::from_str(&line)
                .with_context(|| format!("{} line {}: not an error record", meta.key, n + 1))?;
            *counts.entry(rec.reason.clone()).or_default() += 1;
            if a.reason.as_deref() == Some(rec.reason.as_str()) && shown < a.limit {
                writeln!(out, "{line}")?;
                shown += 1;
            }
        }
    }
    if a.reason.is_none() {
        let total: u64 = counts.values().sum();
        writeln!(out, "{total} rejected records")?;
        for (k, v) in &counts {
            writeln!(out, "{v:>12}  {k}")?;
        }
    } else if shown == a.limit
        && counts
            .get(a.reason.as_deref().unwrap_or(""))
            .copied()
            .unwrap_or(0)
            > shown as u64
    {
        eprintln!("(first {shown} shown; --limit N for more)");
    }
    Ok(EXIT_OK)
}
