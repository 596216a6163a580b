//! Legacy files on HDFS: `hdfs://namenode:port/path`, `hdfs://nameservice/path` or
//! `viewfs://cluster/path`, read with the pure-Rust `hdfs-native` client (no JVM, no
//! libhdfs). This module owns the URL, the listing order, a chunked read-ahead
//! reader, retries of transient failures and the read-rate limit; it knows nothing
//! of file formats.
//!
//! The [`Source`] trait is synchronous and is called from the export's worker
//! threads, so the source keeps its own tokio runtime and blocks on it from the
//! caller's thread; it must not be called from inside a tokio runtime (that is
//! reported as an error rather than a panic).
//!
//! Configuration comes from `HADOOP_CONF_DIR` (else `HADOOP_HOME/etc/hadoop`):
//! `core-site.xml` and `hdfs-site.xml` resolve name services (HA NameNodes), viewfs
//! mount tables and `fs.defaultFS` (for `hdfs:///path`). The user is
//! `HADOOP_USER_NAME` (else the login name). Kerberos is used when `core-site.xml`
//! sets `hadoop.security.authentication` to `kerberos`: `hdfs-native` loads
//! `libgssapi_krb5.so.2` at run time (Debian: `libgssapi-krb5-2`, RHEL: `krb5-libs`)
//! and takes the ticket cache of `kinit` (`KRB5CCNAME`), or the principal and keytab
//! given with `--hdfs-principal`/`--hdfs-keytab`; `krb5.conf` must name the realm.

use super::{is_hidden, FileEntry, ReadSeek, Source, WalkItem};
use bytes::Bytes;
use hdfs_native::file::FileReader;
use hdfs_native::{Client, ClientBuilder, HdfsError};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

/// Smallest `--hdfs-read-size`: below it, per-request overhead dominates.
const MIN_READ_SIZE: u64 = 64 << 10;
/// Largest `--hdfs-read-size`: each reader holds two chunks in memory.
const MAX_READ_SIZE: u64 = 256 << 20;
/// First chunk after an open or a seek: small, because a SequenceFile split reads its
/// header at offset 0 and then seeks away; chunks then double up to the read size.
const FIRST_CHUNK: usize = 256 << 10;
/// Chunks requested ahead of the one being consumed.
const READ_AHEAD: usize = 1;
/// First retry delay; doubles per attempt up to [`BACKOFF_MAX`].
const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// How HDFS is read. Flattened into the CLI, so the doc comments are `--help`.
#[derive(clap::Args, Clone, Debug, PartialEq)]
pub struct HdfsOptions {
    /// Limit on the bytes read from HDFS, in MB per second (1 MB = 10^6 bytes), for
    /// all workers together, so a run does not crowd out a production cluster.
    /// Default: no limit.
    #[arg(long, value_name = "MBPS", value_parser = parse_rate)]
    pub max_read_rate: Option<f64>,
    /// Retries of an HDFS request that failed in a way that can pass (a DataNode or
    /// NameNode unreachable or restarting, a timeout, a short read), with jittered
    /// exponential backoff (0.2 s doubling, at most 10 s). Each retry of a read asks
    /// the NameNode afresh where the blocks are. The default waits at least 46 s in
    /// all (at most 92 s), longer than a DataNode takes to restart (~40 s measured).
    /// A request still failing then fails its unit: the run goes on with the others
    /// and exits 1, and a rerun reads that unit again.
    #[arg(long, default_value_t = 14, value_name = "N")]
    pub hdfs_retries: u32,
    /// Seconds one HDFS request (a listing page, an open, one chunk read) may take
    /// before it is abandoned and retried; also the DataNode socket timeout.
    #[arg(long, default_value_t = 60, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub hdfs_timeout: u64,
    /// Bytes per read request to the DataNodes (e.g. 8MiB). Each open file has one
    /// more chunk of this size in flight ahead of the reader, so memory per worker is
    /// about twice this.
    #[arg(long, default_value = "8MiB", value_name = "SIZE", value_parser = parse_read_size)]
    pub hdfs_read_size: u64,
    /// Kerberos principal to log in as (with --hdfs-keytab). Without it, a Kerberos
    /// cluster is reached with the ticket cache of `kinit`.
    #[arg(long, value_name = "PRINCIPAL")]
    pub hdfs_principal: Option<String>,
    /// Keytab of --hdfs-principal.
    #[arg(long, value_name = "FILE", requires = "hdfs_principal")]
    pub hdfs_keytab: Option<PathBuf>,
}

impl Default for HdfsOptions {
    /// The same values as the command line's defaults.
    fn default() -> Self {
        HdfsOptions {
            max_read_rate: None,
            hdfs_retries: 14,
            hdfs_timeout: 60,
            hdfs_read_size: 8 << 20,
            hdfs_principal: None,
            hdfs_keytab: None,
        }
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a positive rate in MB/s (e.g. 50 or 2.5)"
        )),
    }
}

fn parse_read_size(s: &str) -> Result<u64, String> {
    check_read_size(crate::size::parse_size(s)?).map_err(|e| format!("{s:?}: {e}"))
}

fn check_read_size(v: u64) -> Result<u64, String> {
    if (MIN_READ_SIZE..=MAX_READ_SIZE).contains(&v) {
        Ok(v)
    } else {
        Err(format!(
            "the HDFS read size must be between {} KiB and {} MiB",
            MIN_READ_SIZE >> 10,
            MAX_READ_SIZE >> 20
        ))
    }
}

// ---------------------------------------------------------------------------------
// Pure pieces: URL, retry decision, backoff, token bucket.

/// A source URL taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
struct HdfsUrl {
    /// `hdfs` or `viewfs`.
    scheme: String,
    /// `host:port` or a name service; empty for `hdfs:///path` (fs.defaultFS).
    authority: String,
    /// Absolute path, no trailing `/` (except the root itself).
    path: String,
}

impl HdfsUrl {
    fn parse(url: &str) -> Result<HdfsUrl, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("{url:?} is not an hdfs:// or viewfs:// URL"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "hdfs" && scheme != "viewfs" {
            return Err(format!(
                "{url:?}: unsupported scheme {scheme:?} (use hdfs:// or viewfs://)"
            ));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            // Hadoop ignores user info in URLs; refusing it keeps credentials out of
            // job records and logs.
            return Err(format!(
                "{scheme}:// URL with a user name: not supported (set HADOOP_USER_NAME instead)"
            ));
        }
        if path.contains(['?', '#']) {
            return Err(format!("{url:?}: a query or fragment is not a path"));
        }
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        if segments.iter().any(|s| *s == "." || *s == "..") {
            return Err(format!("{url:?}: `.` and `..` are not allowed in the path"));
        }
        Ok(HdfsUrl {
            scheme,
            authority: authority.to_string(),
            path: format!("/{}", segments.join("/")),
        })
    }

    /// What the client connects to.
    fn base(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }

    /// `path` (absolute) as a full URL, for messages.
    fn show(&self, path: &str) -> String {
        format!("{}{}", self.base(), path)
    }
}

/// Whether a failure can pass by itself, so the request is worth repeating.
fn transient(e: &HdfsError) -> bool {
    match e {
        HdfsError::IOError(_)
        | HdfsError::DataTransferError(_)
        | HdfsError::ChecksumError
        | HdfsError::BlocksNotFound(_)
        | HdfsError::InvalidRPCResponse(_) => true,
        HdfsError::RPCError(class, _) => [
            "RetriableException",
            "StandbyException",
            "SafeModeException",
            "ObserverRetryOnActiveException",
            "ConnectException",
            "SocketTimeoutException",
            "EOFException",
        ]
        .iter()
        .any(|c| class.ends_with(c)),
        _ => false,
    }
}

/// Delay before retry `attempt` (1 for the first retry); `jitter` in `[0, 1)` spreads
/// the delay over its upper half so workers that failed together retry apart.
fn backoff(attempt: u32, jitter: f64) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let d = exp.min(BACKOFF_MAX);
    d.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// A number in `[0, 1)`; not cryptographic, only different per call and per process.
fn jitter() -> f64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    // splitmix64 over a counter mixed with the clock.
    let mut z = STATE
        .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
        .wrapping_add(seed);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Token bucket state: `tokens` may go negative (a debt), so a request larger than the
/// burst still passes, only later.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Takes `n` tokens at `now`, refilled at `rate` per second up to `burst`; returns
    /// how long to wait before using them.
    fn take(&mut self, now: Instant, n: u64, rate: f64, burst: f64) -> Duration {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = now.max(self.at);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / rate)
        }
    }
}

/// `--max-read-rate`, shared by every reader of a source.
struct RateLimit {
    /// Bytes per second.
    rate: f64,
    /// One second's worth: short bursts are fine, sustained rate is what is capped.
    burst: f64,
    bucket: Mutex<Bucket>,
}

impl RateLimit {
    fn new(mb_per_s: f64) -> RateLimit {
        let rate = mb_per_s * 1e6;
        RateLimit {
            rate,
            burst: rate,
            bucket: Mutex::new(Bucket {
                tokens: rate,
                at: Instant::now(),
            }),
        }
    }

    async fn acquire(&self, n: u64) {
        let wait = {
            let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
            b.take(Instant::now(), n, self.rate, self.burst)
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

// ---------------------------------------------------------------------------------
// Requests with timeout and retries.

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{}", hdfs_message(.0))]
    Hdfs(#[from] HdfsError),
    #[error("no answer within {0} s")]
    Timeout(u64),
    #[error("short read: got {got} of {want} bytes")]
    Short { got: usize, want: usize },
    #[error("the file changed while being read: its length is now {now} bytes, was {was}")]
    Changed { was: u64, now: u64 },
}

impl Failure {
    fn transient(&self) -> bool {
        match self {
            Failure::Hdfs(e) => transient(e),
            Failure::Timeout(_) | Failure::Short { .. } => true,
            Failure::Changed { .. } => false,
        }
    }

    fn into_io(self, context: String, attempts: u32) -> io::Error {
        let kind = match &self {
            Failure::Hdfs(HdfsError::FileNotFound(_)) => io::ErrorKind::NotFound,
            Failure::Hdfs(HdfsError::RPCError(class, _))
                if class.ends_with("FileNotFoundException") =>
            {
                io::ErrorKind::NotFound
            }
            Failure::Hdfs(HdfsError::RPCError(class, _))
                if class.ends_with("AccessControlException") =>
            {
                io::ErrorKind::PermissionDenied
            }
            Failure::Hdfs(HdfsError::IsADirectoryError(_)) => io::ErrorKind::InvalidInput,
            Failure::Timeout(_) => io::ErrorKind::TimedOut,
            Failure::Short { .. } => io::ErrorKind::UnexpectedEof,
            _ => io::ErrorKind::Other,
        };
        let tries = if attempts > 1 {
            format!(" (after {attempts} attempts)")
        } else {
            String::new()
        };
        let message = format!("{context}: {self}{tries}");
        if matches!(self, Failure::Hdfs(HdfsError::ChecksumError)) {
            // Every replica failed its checksum, every time: the bytes are damaged
            // where they are stored, which no rerun mends.
            return io::Error::new(io::ErrorKind::InvalidData, super::CorruptSource(message));
        }
        io::Error::new(kind, message)
    }
}

/// An HDFS error for a person: a NameNode exception as its class's short name and the
/// first line of its message (the Java stack trace that follows helps nobody here).
fn hdfs_message(e: &HdfsError) -> String {
    match e {
        HdfsError::RPCError(class, msg) | HdfsError::FatalRPCError(class, msg) => {
            let short = class.rsplit('.').next().unwrap_or(class);
            let first = msg.lines().next().unwrap_or_default().trim();
            // The message often repeats the class: `java.io.X: text`.
            let first = first.strip_prefix(class.as_str()).unwrap_or(first);
            let first = first.trim_start_matches(':').trim();
            if first.is_empty() {
                short.to_string()
            } else {
                format!("{short}: {first}")
            }
        }
        // hdfs-native prints every replica's full protobuf; their addresses suffice.
        HdfsError::DataTransferError(msg) if msg.starts_with("All DataNodes failed") => {
            let addrs: Vec<String> = msg
                .split("ip_addr: \"")
                .skip(1)
                .map(|part| {
                    let ip = part.split('"').next().unwrap_or_default();
                    let port = part
                        .split("xfer_port: ")
                        .nth(1)
                        .and_then(|p| p.split(|c: char| !c.is_ascii_digit()).next())
                        .unwrap_or_default();
                    format!("{ip}:{port}")
                })
                .collect();
            format!(
                "no DataNode could serve the block (tried: {})",
                addrs.join(", ")
            )
        }
        other => other.to_string(),
    }
}

/// What every request needs: the client and the limits.
struct Shared {
    client: Client,
    url: HdfsUrl,
    retries: u32,
    timeout: Duration,
    read_size: usize,
    limit: Option<RateLimit>,
}

impl Shared {
    /// Runs `op` with the timeout, retrying transient failures; `context` names the
    /// request for messages ("hdfs://nn/path: listing"). `read_bytes` is what each
    /// attempt reads, taken from `--max-read-rate` before the attempt's timeout
    /// starts: waiting for the rate limit is not the server being slow.
    async fn retry<T, F, Fut>(
        &self,
        context: impl Fn() -> String,
        read_bytes: u64,
        mut op: F,
    ) -> io::Result<T>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut attempt = 0;
        loop {
            if let (Some(limit), true) = (&self.limit, read_bytes > 0) {
                limit.acquire(read_bytes).await;
            }
            let result = match tokio::time::timeout(self.timeout, op(attempt)).await {
                Ok(r) => r,
                Err(_) => Err(Failure::Timeout(self.timeout.as_secs())),
            };
            match result {
                Ok(v) => return Ok(v),
                Err(e) if e.transient() && attempt < self.retries => {
                    attempt += 1;
                    let wait = backoff(attempt, jitter());
                    tracing::warn!(request = %context(), error = %e, attempt, retries = self.retries,
                        wait_ms = wait.as_millis() as u64, "hdfs request failed, retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e.into_io(context(), attempt + 1)),
            }
        }
    }

    async fn open(&self, path: &str) -> Result<FileReader, Failure> {
        Ok(self.client.read(path).await?)
    }

    /// One folder's entries: (files, sub-folder names), hidden names left out, both
    /// sorted. A failure part-way restarts the folder, so a listing is all or nothing.
    async fn list(&self, dir: &str, rel: &str) -> io::Result<(Vec<FileEntry>, Vec<String>)> {
        self.retry(
            || format!("{}: listing", self.url.show(dir)),
            0,
            |_| async move {
                let mut files = Vec::new();
                let mut dirs = Vec::new();
                // Paged by the NameNode (dfs.ls.limit entries per call), so a large
                // folder streams in; only its visible entries are kept.
                let it = self.client.list_status_iter(dir, false);
                while let Some(st) = it.next().await {
                    let st = st?;
                    let name = st.path.rsplit('/').next().unwrap_or_default().to_string();
                    if name.is_empty() || is_hidden(&name) {
                        continue;
                    }
                    if st.isdir {
                        dirs.push(name);
                    } else {
                        files.push(FileEntry {
                            path: join(rel, &name),
                            size: st.length as u64,
                        });
                    }
                }
                files.sort_by(|a, b| a.path.cmp(&b.path));
                dirs.sort();
                Ok((files, dirs))
            },
        )
        .await
    }
}

fn join(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_string()
    } else {
        format!("{rel}/{name}")
    }
}

/// The runtime the source blocks on; kept apart from [`Shared`] so that no task ever
/// holds the last reference to its own runtime (dropping it there would panic).
struct Io {
    rt: Runtime,
}

impl Io {
    fn block_on<F: Future>(&self, f: F) -> io::Result<F::Output> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(io::Error::other(
                "the HDFS source was called from inside a tokio runtime; call it from a plain thread",
            ));
        }
        Ok(self.rt.block_on(f))
    }
}

// ---------------------------------------------------------------------------------
// The source.

/// Legacy files under an HDFS (or viewfs) URL.
pub struct HdfsSource {
    io: Arc<Io>,
    shared: Arc<Shared>,
    /// The root is a file, not a folder.
    single_file: bool,
}

impl fmt::Debug for HdfsSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HdfsSource")
            .field("url", &self.describe())
            .field("single_file", &self.single_file)
            .finish()
    }
}

impl HdfsSource {
    /// Connects to `url` (`hdfs://host:port/path`, `hdfs://nameservice/path`,
    /// `hdfs:///path` for `fs.defaultFS`, `viewfs://cluster/path`) and checks that the
    /// path exists (a folder, or a single file). Fails with `NotFound` when it does not
    /// and `InvalidInput` for a URL it cannot use.
    pub fn from_url(url: &str, opts: &HdfsOptions) -> io::Result<HdfsSource> {
        let url =
            HdfsUrl::parse(url).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let read_size = check_read_size(opts.hdfs_read_size)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?
            as usize;
        let timeout = Duration::from_secs(opts.hdfs_timeout.max(1));
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("hdfs-io")
            .enable_all()
            .build()?;
        let mut builder = ClientBuilder::new()
            .with_url(url.base())
            .with_io_runtime(rt.handle().clone())
            .with_config([("dfs.client.socket-timeout", timeout.as_millis().to_string())]);
        if let Some(p) = &opts.hdfs_principal {
            builder = builder.with_kerberos_principal(p.clone());
        }
        if let Some(k) = &opts.hdfs_keytab {
            builder = builder.with_kerberos_keytab(k.to_string_lossy().into_owned());
        }
        let client = {
            let _entered = rt.enter();
            builder.build().map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{}: {e}", url.show(&url.path)),
                )
            })?
        };
        let shared = Arc::new(Shared {
            client,
            url,
            retries: opts.hdfs_retries,
            timeout,
            read_size,
            limit: opts.max_read_rate.map(RateLimit::new),
        });
        let io = Arc::new(Io { rt });
        let s = Arc::clone(&shared);
        let root = io.block_on(async move {
            let path = &s.url.path;
            s.retry(
                || s.url.show(path),
                0,
                |_| async { Ok(s.client.get_file_info(path).await?) },
            )
            .await
        })??;
        Ok(HdfsSource {
            io,
            shared,
            single_file: !root.isdir,
        })
    }

    fn walk_dir(&self, dir: &str, rel: &str, visit: &mut dyn FnMut(WalkItem) -> bool) -> bool {
        let listed = self.io.block_on(self.shared.list(dir, rel)).and_then(|r| r);
        let (files, dirs) = match listed {
            Ok(l) => l,
            Err(e) => {
                return visit(WalkItem::Unreadable {
                    path: rel.to_string(),
                    error: e.to_string(),
                })
            }
        };
        if !files.is_empty()
            && !visit(WalkItem::Folder {
                dir: rel.to_string(),
                files,
            })
        {
            return false;
        }
        for d in dirs {
            let child = if dir == "/" {
                format!("/{d}")
            } else {
                format!("{dir}/{d}")
            };
            if !self.walk_dir(&child, &join(rel, &d), visit) {
                return false;
            }
        }
        true
    }

    fn abs_path(&self, path: &str) -> io::Result<String> {
        let root = &self.shared.url.path;
        if self.single_file {
            return Ok(root.clone());
        }
        if path.is_empty()
            || path
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad path {path:?}"),
            ));
        }
        Ok(if root == "/" {
            format!("/{path}")
        } else {
            format!("{root}/{path}")
        })
    }
}

impl Source for HdfsSource {
    fn list_folder(&self, dir: &str) -> io::Result<Vec<WalkItem>> {
        let abs = if dir.is_empty() {
            self.shared.url.path.clone()
        } else {
            self.abs_path(dir)?
        };
        if self.single_file {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad folder {dir:?} for {}", self.describe()),
            ));
        }
        self.io.block_on(async {})?;
        let mut items = Vec::new();
        self.walk_dir(&abs, dir, &mut |i| {
            let done = matches!(&i, WalkItem::Folder { dir: d, .. } if d == dir);
            items.push(i);
            !done
        });
        Ok(super::items_of_folder(dir, items))
    }

    fn describe(&self) -> String {
        self.shared.url.show(&self.shared.url.path)
    }

    fn walk(&self, visit: &mut dyn FnMut(WalkItem) -> bool) -> io::Result<()> {
        let root = self.shared.url.path.clone();
        if self.single_file {
            let name = root.rsplit('/').next().unwrap_or_default().to_string();
            let s = &self.shared;
            let info = self.io.block_on(s.retry(
                || s.url.show(&root),
                0,
                |_| async { Ok(s.client.get_file_info(&root).await?) },
            ))?;
            visit(match info {
                Ok(st) => WalkItem::Folder {
                    dir: String::new(),
                    files: vec![FileEntry {
                        path: name,
                        size: st.length as u64,
                    }],
                },
                Err(e) => WalkItem::Unreadable {
                    path: name,
                    error: e.to_string(),
                },
            });
            return Ok(());
        }
        // Fail loudly on misuse (called inside a runtime) rather than report every
        // folder as unreadable.
        self.io.block_on(async {})?;
        self.walk_dir(&root, "", visit);
        Ok(())
    }

    fn open(&self, path: &str) -> io::Result<Box<dyn ReadSeek>> {
        let abs = self.abs_path(path)?;
        let s = Arc::clone(&self.shared);
        let name = s.url.show(&abs);
        let reader = self.io.block_on({
            let abs = abs.clone();
            async move {
                s.retry(
                    || format!("{}: open", s.url.show(&abs)),
                    0,
                    |_| s.open(&abs),
                )
                .await
            }
        })??;
        let len = reader.file_length() as u64;
        let file = Arc::new(OpenFile {
            shared: Arc::clone(&self.shared),
            path: abs,
            name,
            len,
            reader: Mutex::new(Arc::new(reader)),
        });
        Ok(Box::new(HdfsReader {
            io: Arc::clone(&self.io),
            file,
            pos: 0,
            chunks: VecDeque::new(),
            next_fetch: 0,
            next_size: FIRST_CHUNK.min(self.shared.read_size),
        }))
    }
}

// ---------------------------------------------------------------------------------
// The reader.

/// One open file, shared by its reader and the chunk reads in flight.
struct OpenFile {
    shared: Arc<Shared>,
    path: String,
    /// Full URL, for messages.
    name: String,
    /// Length the NameNode gave at open; every chunk is checked against it.
    len: u64,
    /// Replaced after a failed read, so the retry asks the NameNode where the blocks
    /// are now (a restarted DataNode has new ports) and forgets DataNodes marked dead.
    reader: Mutex<Arc<FileReader>>,
}

impl OpenFile {
    fn current(&self) -> Arc<FileReader> {
        Arc::clone(&self.reader.lock().unwrap_or_else(|p| p.into_inner()))
    }

    async fn reopen(&self) -> Result<(), Failure> {
        let r = self.shared.open(&self.path).await?;
        let now = r.file_length() as u64;
        if now != self.len {
            return Err(Failure::Changed { was: self.len, now });
        }
        *self.reader.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(r);
        Ok(())
    }

    /// Reads exactly `[offset, offset + len)`, or fails naming the file and offset.
    async fn fetch(self: Arc<Self>, offset: u64, len: usize) -> io::Result<Bytes> {
        let this = &self;
        this.shared
            .retry(
                || format!("{}: read of {len} bytes at offset {offset}", this.name),
                len as u64,
                |attempt| async move {
                    if attempt > 0 {
                        this.reopen().await?;
                    }
                    let r = this.current();
                    let got = r.read_range(offset as usize, len).await?;
                    if got.len() != len {
                        return Err(Failure::Short {
                            got: got.len(),
                            want: len,
                        });
                    }
                    Ok(got)
                },
            )
            .await
    }
}

/// A range of the file being read or read already.
struct Chunk {
    start: u64,
    len: usize,
    state: ChunkState,
}

enum ChunkState {
    Pending(JoinHandle<io::Result<Bytes>>),
    Ready(Bytes),
}

impl Chunk {
    fn end(&self) -> u64 {
        self.start + self.len as u64
    }
}

/// `Read + Seek` over an HDFS file: large chunk reads, one ahead of the consumer.
struct HdfsReader {
    io: Arc<Io>,
    file: Arc<OpenFile>,
    pos: u64,
    /// Consecutive chunks, the first containing `pos` (or none yet).
    chunks: VecDeque<Chunk>,
    /// Where the next chunk starts.
    next_fetch: u64,
    /// Size of the next chunk (grows to the read size).
    next_size: usize,
}

impl HdfsReader {
    /// Drops every chunk and starts again at `pos` with a small chunk.
    fn restart(&mut self) {
        for c in self.chunks.drain(..) {
            if let ChunkState::Pending(h) = c.state {
                h.abort();
            }
        }
        self.next_fetch = self.pos;
        self.next_size = FIRST_CHUNK.min(self.file.shared.read_size);
    }

    /// Keeps the current chunk plus [`READ_AHEAD`] in flight.
    fn schedule(&mut self) {
        while self.chunks.len() <= READ_AHEAD && self.next_fetch < self.file.len {
            let start = self.next_fetch;
            let len = (self.file.len - start).min(self.next_size as u64) as usize;
            let task = self.io.rt.spawn(Arc::clone(&self.file).fetch(start, len));
            self.chunks.push_back(Chunk {
                start,
                len,
                state: ChunkState::Pending(task),
            });
            self.next_fetch += len as u64;
            self.next_size = (self.next_size * 2).min(self.file.shared.read_size);
        }
    }
}

impl Read for HdfsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.pos >= self.file.len {
            return Ok(0);
        }
        if self
            .chunks
            .front()
            .is_none_or(|c| c.start > self.pos || c.end() <= self.pos)
        {
            self.restart();
        }
        self.schedule();
        let front = self.chunks.front_mut().expect("a chunk was scheduled");
        if let ChunkState::Pending(task) = &mut front.state {
            let joined = self.io.block_on(task)?;
            match joined {
                Ok(Ok(bytes)) => front.state = ChunkState::Ready(bytes),
                Ok(Err(e)) => {
                    // Next call starts afresh at the same offset; nothing was consumed.
                    self.restart();
                    return Err(e);
                }
                Err(e) => {
                    self.restart();
                    return Err(io::Error::other(format!(
                        "{}: read at offset {}: {e}",
                        self.file.name, self.pos
                    )));
                }
            }
        }
        let ChunkState::Ready(bytes) = &front.state else {
            unreachable!("the chunk was just made ready")
        };
        let at = (self.pos - front.start) as usize;
        let n = buf.len().min(bytes.len() - at);
        buf[..n].copy_from_slice(&bytes[at..at + n]);
        self.pos += n as u64;
        if self.pos >= front.end() {
            self.chunks.pop_front();
            self.schedule();
        }
        Ok(n)
    }
}

impl Seek for HdfsReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.file.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        }
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: seek before the start ({to:?})", self.file.name),
            )
        })?;
        if target == self.pos {
            return Ok(target);
        }
        self.pos = target;
        // Keep the chunks from the one holding the target on; a seek outside them
        // starts over there.
        match self
            .chunks
            .iter()
            .position(|c| c.start <= target && target < c.end())
        {
            Some(i) => {
                for c in self.chunks.drain(..i) {
                    if let ChunkState::Pending(h) = c.state {
                        h.abort();
                    }
                }
            }
            None => self.restart(),
        }
        Ok(target)
    }
}

impl Drop for HdfsReader {
    fn drop(&mut self) {
        for c in self.chunks.drain(..) {
            if let ChunkState::Pending(h) = c.state {
                h.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn urls() {
        let ok = [
            (
                "hdfs://nn:8020/data/telemetry/",
                "hdfs",
                "nn:8020",
                "/data/telemetry",
            ),
            ("hdfs://nn:8020", "hdfs", "nn:8020", "/"),
            ("hdfs://nn:8020/", "hdfs", "nn:8020", "/"),
            ("HDFS://prod-ns//data//x", "hdfs", "prod-ns", "/data/x"),
            ("hdfs:///data", "hdfs", "", "/data"),
            ("viewfs://cluster/data", "viewfs", "cluster", "/data"),
        ];
        for (url, scheme, authority, path) in ok {
            let u = HdfsUrl::parse(url).unwrap();
            assert_eq!(
                (u.scheme.as_str(), u.authority.as_str(), u.path.as_str()),
                (scheme, authority, path),
                "{url}"
            );
        }
        for bad in [
            "s3://bucket/x",
            "/data/telemetry",
            "hdfs://alice:secret@nn:8020/data",
            "hdfs://nn/data/../etc",
            "hdfs://nn/data?x=1",
        ] {
            let e = HdfsUrl::parse(bad).unwrap_err();
            assert!(!e.contains("secret"), "{e}");
        }
        let u = HdfsUrl::parse("hdfs://nn:8020/data/").unwrap();
        assert_eq!(u.show("/data/a"), "hdfs://nn:8020/data/a");
    }

    #[test]
    fn which_failures_are_retried() {
        let io = |k| HdfsError::IOError(io::Error::from(k));
        let rpc = |c: &str| HdfsError::RPCError(c.into(), "msg".into());
        let rpc_msg = |c: &str, m: &str| HdfsError::RPCError(c.into(), m.into());
        let cases = [
            (io(io::ErrorKind::ConnectionRefused), true),
            (io(io::ErrorKind::UnexpectedEof), true),
            (
                HdfsError::DataTransferError("All DataNodes failed".into()),
                true,
            ),
            (HdfsError::ChecksumError, true),
            (HdfsError::BlocksNotFound("/x".into()), true),
            (rpc("org.apache.hadoop.ipc.StandbyException"), true),
            (rpc("org.apache.hadoop.ipc.RetriableException"), true),
            (
                rpc("org.apache.hadoop.hdfs.server.namenode.SafeModeException"),
                true,
            ),
            (
                rpc("org.apache.hadoop.security.AccessControlException"),
                false,
            ),
            (rpc("java.io.FileNotFoundException"), false),
            (HdfsError::FileNotFound("/x".into()), false),
            (HdfsError::IsADirectoryError("/x".into()), false),
            (HdfsError::InvalidArgument("x".into()), false),
            (HdfsError::FatalRPCError("a".into(), "b".into()), false),
            (HdfsError::SASLError("x".into()), false),
        ];
        for (e, want) in cases {
            assert_eq!(transient(&e), want, "{e}");
        }
        let trace = "File does not exist: /x\n\tat org.apache.hadoop.Foo(Foo.java:1)\n";
        let e = Failure::Hdfs(rpc_msg("java.io.FileNotFoundException", trace));
        assert_eq!(
            e.to_string(),
            "FileNotFoundException: File does not exist: /x"
        );
        assert_eq!(e.into_io("f".into(), 1).kind(), io::ErrorKind::NotFound);
        let e = Failure::Hdfs(rpc_msg("a.B", "a.B: denied"));
        assert_eq!(e.to_string(), "B: denied");
        let dn = r#"All DataNodes failed: [DatanodeInfoProto { id: DatanodeIdProto { ip_addr: "10.0.0.7", host_name: "dn7", xfer_port: 50010, info_port: 1 } }, DatanodeInfoProto { id: DatanodeIdProto { ip_addr: "10.0.0.8", xfer_port: 1004 } }]"#;
        assert_eq!(
            Failure::Hdfs(HdfsError::DataTransferError(dn.into())).to_string(),
            "no DataNode could serve the block (tried: 10.0.0.7:50010, 10.0.0.8:1004)"
        );
        assert!(Failure::Timeout(3).transient());
        assert!(Failure::Short { got: 1, want: 2 }.transient());
        assert!(!Failure::Changed { was: 1, now: 2 }.transient());
    }

    #[test]
    fn backoff_doubles_to_a_cap_within_jitter() {
        let ms = |a, j| backoff(a, j).as_millis();
        let cases = [
            (1, 0.0, 100),
            (1, 0.999_999, 199),
            (2, 0.0, 200),
            (3, 0.0, 400),
            (6, 0.0, 3200),
            (7, 0.0, 5000),
            (7, 1.0, 10_000),
            (40, 0.5, 7500),
        ];
        for (attempt, j, want) in cases {
            assert_eq!(ms(attempt, j), want, "attempt {attempt}, jitter {j}");
        }
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }

    #[test]
    fn token_bucket_allows_a_burst_then_paces() {
        let t0 = Instant::now();
        let rate = 1000.0;
        let mut b = Bucket {
            tokens: rate,
            at: t0,
        };
        // A second's worth passes at once.
        assert_eq!(b.take(t0, 1000, rate, rate), Duration::ZERO);
        // The next 500 bytes wait half a second.
        assert_eq!(b.take(t0, 500, rate, rate), Duration::from_millis(500));
        // Debt carries: 2 s later 1500 tokens came back, minus the 500 owed.
        assert_eq!(
            b.take(t0 + Duration::from_secs(2), 1000, rate, rate),
            Duration::ZERO
        );
        // Idle time refills only up to the burst.
        let mut b = Bucket {
            tokens: 0.0,
            at: t0,
        };
        let later = t0 + Duration::from_secs(100);
        assert_eq!(b.take(later, 1000, rate, rate), Duration::ZERO);
        assert_eq!(b.take(later, 1000, rate, rate), Duration::from_secs(1));
        // A request larger than the burst passes after a proportional wait.
        let mut b = Bucket {
            tokens: rate,
            at: t0,
        };
        assert_eq!(b.take(t0, 5000, rate, rate), Duration::from_secs(4));
    }

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        hdfs: HdfsOptions,
    }

    #[test]
    fn options_parse_with_the_documented_defaults() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(cli.hdfs, HdfsOptions::default());
        let cli = Cli::try_parse_from([
            "x",
            "--max-read-rate",
            "2.5",
            "--hdfs-retries",
            "0",
            "--hdfs-timeout",
            "3",
            "--hdfs-read-size",
            "1MiB",
        ])
        .unwrap();
        assert_eq!(cli.hdfs.max_read_rate, Some(2.5));
        assert_eq!(cli.hdfs.hdfs_retries, 0);
        assert_eq!(cli.hdfs.hdfs_timeout, 3);
        assert_eq!(cli.hdfs.hdfs_read_size, 1 << 20);
        for bad in [
            &["x", "--max-read-rate", "0"][..],
            &["x", "--max-read-rate", "fast"],
            &["x", "--hdfs-timeout", "0"],
            &["x", "--hdfs-read-size", "1KiB"],
            &["x", "--hdfs-read-size", "1GiB"],
            &["x", "--hdfs-keytab", "/k"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_urls_fail_before_any_connection() {
        let e = HdfsSource::from_url("s3://b/x", &HdfsOptions::default()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let tiny = HdfsOptions {
            hdfs_read_size: 100,
            ..HdfsOptions::default()
        };
        let e = HdfsSource::from_url("hdfs://127.0.0.1:1/x", &tiny).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    }
}
