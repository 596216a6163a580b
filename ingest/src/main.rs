//! `ingest`: the live Telemetry ingest server. This file is the command line only:
//! argument definitions and their translation into the server's configuration.

mod forward;
mod http;
mod metrics;
mod server;
mod spool;
mod writer;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use backfill::core::rawlog::{DEFAULT_MAX_BODY, DEFAULT_MAX_PATH};
use backfill::size::parse_size;

const DEPLOYMENT: &str = "\
Deployment: run N `ingest serve` processes (one per machine or disk) behind a load
balancer that health-checks GET /status and sets X-Forwarded-For. Each server
appends the submissions it accepts to raw logs (v2 format) in its own spool folder
and hands each finished log over atomically to SPOOL/ready/. M workers claim
finished logs by renaming them into SPOOL/claimed/ and publish them (`ingest work`)
through the export's pipeline, exactly once per raw log; across machines, `serve
--queue URL --incoming s3://…` forwards each finished log and `work --queue URL
--incoming s3://…` claims it from SQS. A server promises: a 200 means the record is in
a raw log whole (appended to the OS; with --fsync, on disk); a 202 means it was
discarded on purpose (too large: do not retry); a 503 or 507 means nothing was
stored (retry later, on another server). See ingest/README.md.";

/// The live Telemetry ingest server: the 2013 submission endpoint, writing raw logs
/// into a spool that workers claim.
#[derive(Parser, Debug)]
#[command(name = "ingest", version, after_long_help = DEPLOYMENT, after_help = DEPLOYMENT)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve POST /submit/telemetry/... and append raw logs into a spool.
    Serve(Box<ServeArgs>),
    /// Claim finished raw logs (from a spool, or from an S3 incoming prefix through
    /// an SQS queue) and publish them into DEST through the export's pipeline: the
    /// same core, layout and bytes, the error output under DEST/_backfill/, and
    /// exactly-once publication per raw file (a killed worker's file is claimed
    /// again and rewritten under the same keys with the same bytes).
    Work(Box<backfill::ingest::work::WorkArgs>),
}

/// Serve the submission API and write raw logs into a spool.
#[derive(Args, Debug)]
#[command(after_long_help = DEPLOYMENT, args_override_self = true)]
struct ServeArgs {
    /// Address to listen on, e.g. 0.0.0.0:8080 (port 0 picks a free port; the
    /// address is printed on stderr as `ingest: listening on ADDR`).
    #[arg(long)]
    listen: SocketAddr,
    /// The spool folder: open/ (the file being written), ready/ (finished files for
    /// workers), claimed/ (files workers hold), writers/ (one lock per writer id).
    /// Created when missing.
    #[arg(long)]
    spool: PathBuf,
    /// This server's id in raw log names, [a-z0-9-] only; unique among the servers
    /// sharing a spool or a destination [default: derived from the host name].
    #[arg(long)]
    writer_id: Option<String>,
    /// Flush every record to disk (fdatasync) before answering 200. Requests that
    /// arrive during one flush share the next one (group commit).
    #[arg(long)]
    fsync: bool,
    /// Store no client IP (records still use the v2 format, with an empty IP).
    #[arg(long)]
    no_ip: bool,
    /// Hand the open raw log over once it holds this much (e.g. 500MB, 64MiB).
    #[arg(long, default_value = "500MB", value_parser = parse_size)]
    rotate_size: u64,
    /// Hand a non-empty raw log over when nothing was appended for this long
    /// (e.g. 500ms, 30s, 5m, 1h).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    rotate_idle: Duration,
    /// Hand a non-empty raw log over when it has been open this long, even under
    /// steady traffic (bounds how late a worker sees a record).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    rotate_age: Duration,
    /// Largest body stored; a larger one is answered 202 and discarded (the old
    /// server's limit and answer, so that clients do not retry).
    #[arg(long, default_value_t = DEFAULT_MAX_BODY as u64, value_parser = parse_size)]
    max_body: u64,
    /// Longest path stored (after /submit/telemetry/, at most 65535 bytes); a longer
    /// one is answered 202 and discarded.
    #[arg(long, default_value_t = DEFAULT_MAX_PATH as u64, value_parser = parse_size)]
    max_path: u64,
    /// Answer 507 (and report unhealthy on GET /status) when the spool's file system
    /// has less free space than this; 0 turns the check off.
    #[arg(long, default_value = "1GiB", value_parser = parse_size_or_zero)]
    min_free_disk: u64,
    /// Answer 503 with Retry-After once ready/ and claimed/ hold this many bytes
    /// (workers are behind: backpressure instead of an unbounded spool).
    #[arg(long, default_value = "50GiB", value_parser = parse_size)]
    max_backlog: u64,
    /// The same, counted in files.
    #[arg(long, default_value_t = 10_000)]
    max_backlog_files: u64,
    /// Seconds a 503 asks the client to wait (Retry-After).
    #[arg(long, default_value_t = 60)]
    retry_after: u64,
    /// Time a client has to send a request's headers; also how long a kept-alive
    /// connection may sit idle (slowloris protection).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    header_timeout: Duration,
    /// Time a client has to send a body once its headers are in; answered 408 and
    /// closed after that.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    body_timeout: Duration,
    /// Connections served at once; further ones wait in the kernel's listen queue
    /// until one closes.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// On SIGTERM/SIGINT, how long to wait for in-flight requests before handing
    /// the open file over and exiting.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// How often free space and the spool backlog are measured.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    check_interval: Duration,
    /// Send each finished raw log to this SQS queue (one message per file), after
    /// uploading it to --incoming; for workers on other machines (`ingest work
    /// --queue URL --incoming …`). The local copy is removed once sent.
    #[arg(long, value_name = "URL", requires = "incoming")]
    queue: Option<String>,
    /// Where finished raw logs are uploaded for --queue (`s3://bucket/prefix`).
    #[arg(long, value_name = "URL", requires = "queue")]
    incoming: Option<String>,
    /// S3 settings of --incoming.
    #[command(flatten)]
    s3: backfill::store::s3::S3Options,
}

/// Durations as written on a command line: `250ms`, `30s`, `5m`, `1h`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 250ms, 30s, 5m, 1h)"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("{s:?}: give a unit: ms, s, m or h")),
    };
    if d.is_zero() {
        return Err("a duration must be more than 0".into());
    }
    Ok(d)
}

fn parse_size_or_zero(s: &str) -> Result<u64, String> {
    if s.trim() == "0" {
        Ok(0)
    } else {
        parse_size(s)
    }
}

/// The forwarder `--queue`/`--incoming` ask for.
fn forward_of(a: &ServeArgs) -> anyhow::Result<Option<forward::Forward>> {
    let (Some(q), Some(incoming)) = (&a.queue, &a.incoming) else {
        return Ok(None);
    };
    let queue: std::sync::Arc<dyn backfill::queue::Queue> =
        std::sync::Arc::new(backfill::queue::SqsQueue::from_url(q)?);
    let incoming = backfill::commands::open_store(incoming, &a.s3, Default::default())?;
    Ok(Some(forward::Forward { incoming, queue }))
}

fn serve_config(a: ServeArgs) -> Result<server::ServeConfig, String> {
    let writer_id = match a.writer_id {
        Some(id) if spool::valid_writer_id(&id) => id,
        Some(id) => {
            return Err(format!(
                "--writer-id {id:?}: use 1 to 64 characters of a-z, 0-9 and -"
            ))
        }
        None => spool::writer_id_from_hostname(&spool::hostname()),
    };
    if a.max_path > u64::from(u16::MAX) {
        return Err(format!(
            "--max-path {}: the raw log format stores at most 65535 bytes of path",
            a.max_path
        ));
    }
    if a.max_body > u64::from(u32::MAX) {
        return Err(format!(
            "--max-body {}: the raw log format stores at most 4 GiB of body",
            a.max_body
        ));
    }
    Ok(server::ServeConfig {
        listen: a.listen,
        spool: a.spool,
        writer: writer::WriterConfig {
            writer_id,
            rotate_size: a.rotate_size,
            rotate_idle: a.rotate_idle,
            rotate_age: a.rotate_age,
            fsync: a.fsync,
        },
        http: http::HttpConfig {
            max_path: a.max_path as usize,
            max_body: a.max_body as usize,
            no_ip: a.no_ip,
            body_timeout: a.body_timeout,
            min_free_disk: a.min_free_disk,
            max_backlog_files: a.max_backlog_files,
            max_backlog_bytes: a.max_backlog,
            retry_after_secs: a.retry_after,
        },
        header_timeout: a.header_timeout,
        max_connections: a.max_connections as usize,
        drain_timeout: a.drain_timeout,
        monitor_interval: a.check_interval,
    })
}

/// Raises the open-file limit to its hard limit: each connection is a descriptor.
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Work(args) => {
            // Logs on stderr (INGEST_LOG overrides the level, e.g. `backfill=debug`).
            let filter = tracing_subscriber::EnvFilter::try_from_env("INGEST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("backfill=info,warn"));
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
            let bar = indicatif::ProgressBar::hidden();
            match backfill::ingest::work::run(&args, false, &bar) {
                Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
                Err(e) => {
                    eprintln!("ingest work: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Serve(args) => {
            let forward = match forward_of(&args) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("ingest serve: {e:#}");
                    return ExitCode::from(2);
                }
            };
            let claim_ttl = Duration::from_secs(300);
            let spool_dir = args.spool.clone();
            let config = match serve_config(*args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("ingest serve: {e}");
                    return ExitCode::from(2);
                }
            };
            raise_nofile();
            let stop = std::sync::atomic::AtomicBool::new(false);
            let served = std::thread::scope(|s| {
                if let Some(f) = &forward {
                    let spool = match backfill::ingest::Spool::open(&spool_dir, claim_ttl) {
                        Ok(sp) => sp,
                        Err(e) => {
                            return Err(anyhow::anyhow!("spool {}: {e}", spool_dir.display()))
                        }
                    };
                    let stop = &stop;
                    s.spawn(move || f.run(&spool, Duration::from_millis(500), stop));
                }
                let r = server::serve(config);
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
                r
            });
            match served {
                Ok(()) => {
                    eprintln!("ingest: stopped; open file handed over");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ingest serve: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
