//! A destination in S3 (`s3://bucket/prefix`), or any store that speaks its API.
//!
//! The [`Store`] trait is synchronous and called from plain (rayon) threads; this
//! module owns a small tokio runtime and blocks on it from those threads, never
//! from its own. Writes stay atomic as the trait demands: a small object is one
//! PutObject at commit, a large one a multipart upload whose parts go up in
//! parallel while the caller keeps writing, and is completed only at commit, so an
//! object exists under its key complete or not at all; an abandoned or failed
//! upload is aborted. Every request goes through one retry loop (the decision is the
//! pure [`should_retry`]) and two limits (requests in flight, bytes per second).
//! Every PUT and part carries a CRC32C checksum the server checks, so corruption on
//! the way is refused (and retried), never stored.
//!
//! Not here: which keys are written (the export), and credentials (the standard
//! AWS chain: environment, profile, instance role). Error messages name the
//! endpoint, bucket and key, never credentials.

mod limit;
mod retry;
mod writer;

pub use retry::{backoff, should_retry, Outcome};
// For the SQS queue, which follows the same retry policy.
pub(crate) use retry::{jitter, AttemptError};

use super::{check_key, ObjectMeta, ObjectWriter, Store};
use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, ServerSideEncryption, StorageClass};
use aws_sdk_s3::Client;
use bytes::Bytes;
use limit::WriteRate;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Smallest part S3 accepts (except for the last part of an upload).
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// Largest part, and largest single PutObject, S3 accepts.
pub const MAX_PART_SIZE: u64 = 5 << 30;
/// Most parts one multipart upload may have.
pub const MAX_PARTS: i32 = 10_000;
/// Default `--part-size` and `--multipart-threshold`.
pub const DEFAULT_PART_SIZE: u64 = 16 << 20;

/// First wait between attempts of a request (then doubling, with jitter).
const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Longest wait between attempts.
const BACKOFF_CAP: Duration = Duration::from_secs(20);
/// Worker threads of the store's runtime: the work is waiting on sockets.
const RUNTIME_THREADS: usize = 2;

/// Server-side encryption of the objects written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Sse {
    /// Keys managed by S3 (SSE-S3).
    #[value(name = "AES256")]
    Aes256,
    /// Keys managed by KMS (SSE-KMS); see --sse-kms-key-id.
    #[value(name = "aws:kms")]
    AwsKms,
}

/// How to reach S3 and how to write to it. Flatten it into a command's arguments;
/// [`Default`] gives the same values as an empty command line.
#[derive(clap::Args, Clone, Debug, PartialEq)]
#[command(next_help_heading = "S3 destinations (s3://bucket/prefix)")]
pub struct S3Options {
    /// S3 endpoint, for S3-compatible stores (default: AWS). The standard
    /// AWS_ENDPOINT_URL is read too.
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// Address buckets by path (ENDPOINT/BUCKET/KEY) instead of by host name
    /// (BUCKET.ENDPOINT/KEY); most S3-compatible stores need it.
    #[arg(long, env = "BACKFILL_S3_PATH_STYLE", value_parser = clap::builder::BoolishValueParser::new())]
    pub path_style: bool,
    /// AWS region (default: from the standard AWS configuration, else us-east-1).
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// Storage class of every object written, e.g. STANDARD_IA or
    /// INTELLIGENT_TIERING (default: the bucket's, normally STANDARD).
    #[arg(long, value_name = "CLASS")]
    pub storage_class: Option<String>,
    /// Server-side encryption of every object written.
    #[arg(long, value_enum, value_name = "MODE")]
    pub sse: Option<Sse>,
    /// KMS key for --sse aws:kms (default: the account's default S3 key).
    #[arg(long, value_name = "ID", requires = "sse")]
    pub sse_kms_key_id: Option<String>,
    /// Upload at most MBPS megabytes (10^6 bytes) per second, over all uploads
    /// of the run (default: no limit).
    #[arg(long, value_name = "MBPS")]
    pub max_write_rate: Option<f64>,
    /// At most N S3 requests in flight at once, over the whole run.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_requests: usize,
    /// Seconds an attempt of one S3 request may take (connecting, sending,
    /// waiting for the answer) before it is abandoned and retried.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub s3_timeout: u64,
    /// Attempts after the first for a failed S3 request (server errors,
    /// throttling, timeouts, broken connections), with jittered exponential
    /// backoff from 0.2 s up to 20 s.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub s3_retries: u32,
    /// Objects larger than SIZE are uploaded in parts (multipart upload); smaller
    /// ones in one request. Up to SIZE is buffered in memory per object.
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = crate::size::parse_size)]
    pub multipart_threshold: u64,
    /// Part size of multipart uploads (5MiB to 5GiB; at most 10000 parts per object).
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = parse_part_size)]
    pub part_size: u64,
    /// Parts of one object uploaded at once. Memory per object being written is
    /// about (N + 1) x --part-size.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub parts_in_flight: usize,
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            endpoint_url: None,
            path_style: false,
            region: None,
            storage_class: None,
            sse: None,
            sse_kms_key_id: None,
            max_write_rate: None,
            max_requests: 64,
            s3_timeout: 60,
            s3_retries: 10,
            multipart_threshold: DEFAULT_PART_SIZE,
            part_size: DEFAULT_PART_SIZE,
            parts_in_flight: 4,
        }
    }
}

/// Parses a `--part-size`: a size (as [`crate::size::parse_size`]) within what S3
/// accepts for a part.
pub fn parse_part_size(s: &str) -> Result<u64, String> {
    let v = crate::size::parse_size(s)?;
    check_part_size(v)?;
    Ok(v)
}

fn check_part_size(v: u64) -> Result<(), String> {
    if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&v) {
        return Err(format!(
            "part size {v} is outside what S3 accepts (5MiB to 5GiB)"
        ));
    }
    Ok(())
}

impl S3Options {
    /// Checks the values a command line could not (the struct can be built in code).
    pub fn validate(&self) -> io::Result<()> {
        let bad = |m: String| Err(io::Error::new(io::ErrorKind::InvalidInput, m));
        if let Err(e) = check_part_size(self.part_size) {
            return bad(e);
        }
        if self.multipart_threshold == 0 || self.multipart_threshold > MAX_PART_SIZE {
            return bad(format!(
                "multipart threshold {} must be between 1 byte and 5GiB (the largest single upload)",
                self.multipart_threshold
            ));
        }
        if self.max_requests == 0 || self.parts_in_flight == 0 || self.s3_timeout == 0 {
            return bad(
                "--max-requests, --parts-in-flight and --s3-timeout must be at least 1".into(),
            );
        }
        if let Some(r) = self.max_write_rate {
            if !(r.is_finite() && r > 0.0) {
                return bad(format!(
                    "--max-write-rate {r} must be a positive number of MB/s"
                ));
            }
        }
        if let Some(c) = &self.storage_class {
            if StorageClass::try_parse(c).is_err() {
                return bad(format!(
                    "unknown storage class {c:?} (one of {})",
                    StorageClass::values().join(", ")
                ));
            }
        }
        if self.sse_kms_key_id.is_some() && self.sse != Some(Sse::AwsKms) {
            return bad("--sse-kms-key-id needs --sse aws:kms".into());
        }
        Ok(())
    }
}

/// The Content-Type an object gets from its key's extension.
pub fn content_type(key: &str) -> &'static str {
    let name = key.rsplit('/').next().unwrap_or(key);
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("xz") => "application/x-xz",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// Splits `s3://bucket/prefix` into the bucket and the key prefix (empty, or ending
/// in `/`).
pub fn parse_url(url: &str) -> io::Result<(String, String)> {
    let bad = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{url:?} is not an S3 destination: {why} (expected s3://BUCKET or s3://BUCKET/PREFIX)"),
        )
    };
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| bad("it does not start with s3://"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(bad("the bucket name is missing"));
    }
    let valid = bucket.len() <= 255
        && bucket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    if !valid {
        return Err(bad("the bucket name has characters S3 does not allow"));
    }
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return Ok((bucket.to_owned(), String::new()));
    }
    check_key(prefix).map_err(|_| bad("the prefix has an empty, `.` or `..` segment"))?;
    Ok((bucket.to_owned(), format!("{prefix}/")))
}

/// `url` without a `user:password@` part, for messages.
pub(crate) fn without_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// Checks user metadata: S3 sends it as HTTP headers, so names are lowercase
/// tokens and values printable ASCII.
fn check_metadata(metadata: &BTreeMap<String, String>) -> io::Result<()> {
    for (k, v) in metadata {
        let name_ok = !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        let value_ok = v.bytes().all(|b| (0x20..0x7f).contains(&b));
        if !name_ok || !value_ok {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "object metadata {k:?}={v:?}: names must be lowercase letters, digits, \
                     `-` or `_`, values printable ASCII"
                ),
            ));
        }
    }
    Ok(())
}

/// The store's tokio runtime (the SQS queue uses one too). Shut down without
/// waiting, so that dropping it anywhere (even, through a last clone, on one of its
/// own threads) cannot panic.
pub(crate) struct Rt {
    rt: Option<tokio::runtime::Runtime>,
    /// Who owns it, for the error below, e.g. "the S3 store".
    owner: &'static str,
}

impl Rt {
    fn new() -> io::Result<Self> {
        Self::named("backfill-s3", "the S3 store", RUNTIME_THREADS)
    }

    /// A runtime of `threads` workers named `thread_name`, owned by `owner`.
    pub(crate) fn named(
        thread_name: &'static str,
        owner: &'static str,
        threads: usize,
    ) -> io::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(thread_name)
            .enable_all()
            .build()?;
        Ok(Rt {
            rt: Some(rt),
            owner,
        })
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.rt.as_ref().expect("runtime lives until drop").handle()
    }

    /// Runs `f` to completion from a plain thread. Blocking a runtime's own thread
    /// would stall (or panic) the runtime, so that is refused.
    pub(crate) fn block_on<F: Future>(&self, f: F) -> io::Result<F::Output> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(io::Error::other(format!(
                "{} was called from inside an async runtime; call it from a plain \
                 thread (it does its I/O on its own runtime)",
                self.owner
            )));
        }
        Ok(self.handle().block_on(f))
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A request that failed for good: the last attempt's error and how many were made.
#[derive(Debug)]
struct Failure {
    last: AttemptError,
    attempts: u32,
}

/// What every request of a store shares: the client, where it writes, how, and the
/// limits. Tasks on the runtime hold it (never the runtime itself).
struct Shared {
    client: Client,
    bucket: String,
    prefix: String,
    endpoint: String,
    storage_class: Option<StorageClass>,
    sse: Option<ServerSideEncryption>,
    sse_kms_key_id: Option<String>,
    metadata: HashMap<String, String>,
    part_size: usize,
    multipart_threshold: usize,
    parts_in_flight: usize,
    retries: u32,
    requests: Arc<Semaphore>,
    write_rate: Option<Arc<WriteRate>>,
}

impl Shared {
    fn full_key(&self, key: &str) -> io::Result<String> {
        check_key(key)?;
        Ok(format!("{}{key}", self.prefix))
    }

    /// Sends a request made by `attempt` until it succeeds, fails in a way that
    /// retrying cannot fix, or the retries are used up. `upload_bytes` is what each
    /// attempt uploads (for the write rate). Returns the value and the number of
    /// attempts made.
    async fn send<T, E, F, Fut>(
        &self,
        upload_bytes: u64,
        mut attempt: F,
    ) -> Result<(T, u32), Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        AttemptError: From<E>,
    {
        let mut n = 0;
        loop {
            n += 1;
            if let (Some(rate), true) = (&self.write_rate, upload_bytes > 0) {
                rate.acquire(upload_bytes).await;
            }
            let result = {
                let _permit = self.requests.acquire().await.expect("never closed");
                attempt().await
            };
            let err = match result {
                Ok(v) => return Ok((v, n)),
                Err(e) => AttemptError::from(e),
            };
            if n > self.retries || !should_retry(&err.outcome) {
                return Err(Failure {
                    last: err,
                    attempts: n,
                });
            }
            let wait = backoff(n, BACKOFF_BASE, BACKOFF_CAP, retry::jitter());
            tracing::debug!(bucket = %self.bucket, attempt = n, error = %err.message, wait_ms = wait.as_millis() as u64, "s3 request failed, retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// An error for people: what was done to which object, why it failed, after how
    /// many attempts, at which endpoint.
    fn error(&self, what: &str, key: &str, upload_id: Option<&str>, f: Failure) -> io::Error {
        let kind = match &f.last.outcome {
            Outcome::Status { status: 404, .. } => io::ErrorKind::NotFound,
            Outcome::Status { status: 403, .. } => io::ErrorKind::PermissionDenied,
            Outcome::Timeout => io::ErrorKind::TimedOut,
            Outcome::Connection => io::ErrorKind::ConnectionAborted,
            _ => io::ErrorKind::Other,
        };
        let upload = upload_id.map_or(String::new(), |id| format!(" (multipart upload id {id})"));
        let attempts = match f.attempts {
            1 => "1 attempt".to_string(),
            n => format!("{n} attempts"),
        };
        io::Error::new(
            kind,
            format!(
                "s3 {what} s3://{}/{key}{upload} failed after {attempts} at {}: {}",
                self.bucket, self.endpoint, f.last.message
            ),
        )
    }

    async fn put_object(&self, key: &str, body: Bytes) -> io::Result<()> {
        let len = body.len() as u64;
        self.send(len, || {
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .body(ByteStream::from(body.clone()))
                .content_type(content_type(key))
                .set_metadata(Some(self.metadata.clone()))
                .set_storage_class(self.storage_class.clone())
                .set_server_side_encryption(self.sse.clone())
                .set_ssekms_key_id(self.sse_kms_key_id.clone())
                .checksum_algorithm(ChecksumAlgorithm::Crc32C)
                .send()
        })
        .await
        .map(|_| ())
        .map_err(|f| self.error("put", key, None, f))
    }

    /// GETs `key` (or `range` of it); `Ok(None)` when it does not exist.
    async fn get_bytes(&self, key: &str, range: Option<String>) -> io::Result<Option<Bytes>> {
        let r = self
            .send(0, || async {
                let out = self
                    .client
                    .get_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .set_range(range.clone())
                    .send()
                    .await?;
                let data = out.body.collect().await.map_err(AttemptError::body)?;
                Ok::<_, AttemptError>(data.into_bytes())
            })
            .await;
        match r {
            Ok((b, _)) => Ok(Some(b)),
            Err(f) if f.last.is_not_found() => Ok(None),
            Err(f) => Err(self.error("get", key, None, f)),
        }
    }
}

/// A store in an S3 bucket, under a key prefix. Cheap to clone (clones share the
/// client, the runtime and the limits).
#[derive(Clone)]
pub struct S3Store {
    shared: Arc<Shared>,
    rt: Arc<Rt>,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("url", &self.describe())
            .field("endpoint", &self.shared.endpoint)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// The store at `url` (`s3://bucket` or `s3://bucket/prefix`), configured by
    /// `opts` and the standard AWS configuration (credentials, region, endpoint
    /// from the environment and profile). Every object written carries `metadata`
    /// (e.g. tool, mappings and job versions) as user metadata. Checks that the
    /// bucket exists and can be reached before returning.
    pub fn from_url(
        url: &str,
        opts: &S3Options,
        metadata: BTreeMap<String, String>,
    ) -> io::Result<S3Store> {
        parse_url(url)?;
        opts.validate()?;
        let rt = Rt::new()?;
        let region = RegionProviderChain::first_try(opts.region.clone().map(Region::new))
            .or_default_provider()
            .or_else(Region::from_static("us-east-1"));
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).region(region);
        if let Some(u) = &opts.endpoint_url {
            loader = loader.endpoint_url(u);
        }
        let config = rt.block_on(loader.load())?;
        let store = Self::build(url, opts, metadata, &config, rt)?;
        store.check()?;
        Ok(store)
    }

    /// Like [`S3Store::from_url`], with an AWS configuration made by the caller
    /// (credentials, region, endpoint); `opts` still applies on top of it. Makes no
    /// request (call [`S3Store::check`] for that).
    pub fn with_sdk_config(
        url: &str,
        opts: &S3Options,
        metadata: BTreeMap<String, String>,
        config: &SdkConfig,
    ) -> io::Result<S3Store> {
        opts.validate()?;
        Self::build(url, opts, metadata, config, Rt::new()?)
    }

    fn build(
        url: &str,
        opts: &S3Options,
        metadata: BTreeMap<String, String>,
        config: &SdkConfig,
        rt: Rt,
    ) -> io::Result<S3Store> {
        let (bucket, prefix) = parse_url(url)?;
        check_metadata(&metadata)?;
        let timeout = Duration::from_secs(opts.s3_timeout);
        let mut b = aws_sdk_s3::config::Builder::from(config)
            // Retries are this module's own loop: it knows which requests are
            // parts of which upload, and names them when it gives up.
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(timeout)
                    .read_timeout(timeout)
                    .operation_attempt_timeout(timeout)
                    .build(),
            )
            .force_path_style(opts.path_style);
        if let Some(u) = &opts.endpoint_url {
            b = b.endpoint_url(u);
        }
        if let Some(r) = &opts.region {
            b = b.region(Region::new(r.clone()));
        }
        let s3_config = b.build();
        let endpoint = match (opts.endpoint_url.as_deref(), config.endpoint_url()) {
            (Some(u), _) | (None, Some(u)) => without_userinfo(u),
            (None, None) => format!(
                "AWS S3 ({})",
                s3_config.region().map_or("no region", |r| r.as_ref())
            ),
        };
        let shared = Shared {
            client: Client::from_conf(s3_config),
            bucket,
            prefix,
            endpoint,
            storage_class: opts.storage_class.as_deref().map(StorageClass::from),
            sse: opts.sse.map(|s| match s {
                Sse::Aes256 => ServerSideEncryption::Aes256,
                Sse::AwsKms => ServerSideEncryption::AwsKms,
            }),
            sse_kms_key_id: opts.sse_kms_key_id.clone(),
            metadata: metadata.into_iter().collect(),
            part_size: opts.part_size as usize,
            multipart_threshold: opts.multipart_threshold as usize,
            parts_in_flight: opts.parts_in_flight,
            retries: opts.s3_retries,
            requests: Arc::new(Semaphore::new(opts.max_requests)),
            write_rate: opts.max_write_rate.map(|r| Arc::new(WriteRate::new(r))),
        };
        Ok(S3Store {
            shared: Arc::new(shared),
            rt: Arc::new(rt),
        })
    }

    /// Checks that the bucket exists and these credentials may use it.
    pub fn check(&self) -> io::Result<()> {
        let s = &self.shared;
        let r = self
            .rt
            .block_on(s.send(0, || s.client.head_bucket().bucket(&s.bucket).send()))?;
        r.map(|_| ()).map_err(|f| {
            let why = match f.last.outcome {
                Outcome::Status { status: 404, .. } => "the bucket does not exist; ",
                Outcome::Status { status: 403, .. } => {
                    "access denied (check the credentials and the bucket policy); "
                }
                _ => "",
            };
            let e = s.error("bucket check of", "", None, f);
            io::Error::new(e.kind(), format!("{why}{e}"))
        })
    }

    /// The same store, writing `metadata` on its objects instead; it shares the
    /// client, the runtime and the limits with `self`.
    pub fn with_metadata(&self, metadata: BTreeMap<String, String>) -> io::Result<S3Store> {
        check_metadata(&metadata)?;
        let s = &self.shared;
        let shared = Shared {
            client: s.client.clone(),
            bucket: s.bucket.clone(),
            prefix: s.prefix.clone(),
            endpoint: s.endpoint.clone(),
            storage_class: s.storage_class.clone(),
            sse: s.sse.clone(),
            sse_kms_key_id: s.sse_kms_key_id.clone(),
            metadata: metadata.into_iter().collect(),
            part_size: s.part_size,
            multipart_threshold: s.multipart_threshold,
            parts_in_flight: s.parts_in_flight,
            retries: s.retries,
            requests: Arc::clone(&s.requests),
            write_rate: s.write_rate.clone(),
        };
        Ok(S3Store {
            shared: Arc::new(shared),
            rt: Arc::clone(&self.rt),
        })
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.shared.bucket
    }

    /// The key prefix (empty, or ending in `/`) every key of the store is under.
    pub fn prefix(&self) -> &str {
        &self.shared.prefix
    }
}

impl Store for S3Store {
    fn describe(&self) -> String {
        format!(
            "s3://{}/{}",
            self.shared.bucket,
            self.shared.prefix.trim_end_matches('/')
        )
        .trim_end_matches('/')
        .to_string()
    }

    fn put(&self, key: &str, bytes: &[u8]) -> io::Result<()> {
        let s = &self.shared;
        let full = s.full_key(key)?;
        if bytes.len() > s.multipart_threshold {
            let mut w = self.create(key)?;
            io::Write::write_all(&mut w, bytes)?;
            return w.commit().map(|_| ());
        }
        self.rt
            .block_on(s.put_object(&full, Bytes::copy_from_slice(bytes)))?
    }

    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> io::Result<bool> {
        let s = &self.shared;
        let full = s.full_key(key)?;
        let body = Bytes::copy_from_slice(bytes);
        let r = self.rt.block_on(s.send(bytes.len() as u64, || {
            s.client
                .put_object()
                .bucket(&s.bucket)
                .key(&full)
                .if_none_match("*")
                .body(ByteStream::from(body.clone()))
                .content_type(content_type(&full))
                .set_metadata(Some(s.metadata.clone()))
                .set_server_side_encryption(s.sse.clone())
                .set_ssekms_key_id(s.sse_kms_key_id.clone())
                .checksum_algorithm(ChecksumAlgorithm::Crc32C)
                .send()
        }))?;
        match r {
            Ok(_) => Ok(true),
            Err(f) if matches!(f.last.outcome, Outcome::Status { status: 412, .. }) => {
                // A retried request may find the object its own earlier attempt
                // created (the answer was lost on the way): then it is ours.
                if f.attempts > 1 && self.get(key)?.is_some_and(|b| b == bytes) {
                    return Ok(true);
                }
                Ok(false)
            }
            Err(f) => Err(s.error("conditional put", &full, None, f)),
        }
    }

    fn modified(&self, key: &str) -> io::Result<Option<u64>> {
        let s = &self.shared;
        let full = s.full_key(key)?;
        let r = self.rt.block_on(s.send(0, || {
            s.client.head_object().bucket(&s.bucket).key(&full).send()
        }))?;
        match r {
            Ok((out, _)) => Ok(Some(
                out.last_modified().map_or(0, |t| t.secs().max(0) as u64),
            )),
            Err(f) if f.last.is_not_found() => Ok(None),
            Err(f) => Err(s.error("head", &full, None, f)),
        }
    }

    fn create(&self, key: &str) -> io::Result<Box<dyn ObjectWriter>> {
        let full = self.shared.full_key(key)?;
        Ok(Box::new(writer::S3Writer::new(
            Arc::clone(&self.shared),
            Arc::clone(&self.rt),
            full,
        )))
    }

    fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        let s = &self.shared;
        let full = s.full_key(key)?;
        Ok(self.rt.block_on(s.get_bytes(&full, None))??.map(Vec::from))
    }

    fn open(&self, key: &str) -> io::Result<Box<dyn Read + Send>> {
        let s = &self.shared;
        let full = s.full_key(key)?;
        let reader = self.rt.block_on(S3Reader::open(
            Arc::clone(&self.shared),
            Arc::clone(&self.rt),
            full,
        ))??;
        Ok(Box::new(reader))
    }

    fn read_range(&self, key: &str, start: u64, len: u64) -> io::Result<Vec<u8>> {
        let s = &self.shared;
        let full = s.full_key(key)?;
        let short = |got: u64| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "s3 read of s3://{}/{full}: asked for {len} bytes at {start}, the object has {got} there",
                    s.bucket
                ),
            )
        };
        if len == 0 {
            return Ok(Vec::new());
        }
        let range = format!("bytes={start}-{}", start + len - 1);
        let r = self.rt.block_on(s.send(0, || async {
            let out = s
                .client
                .get_object()
                .bucket(&s.bucket)
                .key(&full)
                .range(&range)
                .send()
                .await?;
            let data = out.body.collect().await.map_err(AttemptError::body)?;
            Ok::<_, AttemptError>(data.into_bytes())
        }))?;
        match r {
            Ok((b, _)) if b.len() as u64 == len => Ok(b.into()),
            Ok((b, _)) => Err(short(b.len() as u64)),
            // Asked for a start past the end.
            Err(f) if f.last.code() == Some("InvalidRange") => Err(short(0)),
            Err(f) => Err(s.error("ranged get", &full, None, f)),
        }
    }

    fn list_each(
        &self,
        prefix: &str,
        f: &mut dyn FnMut(ObjectMeta) -> io::Result<()>,
    ) -> io::Result<()> {
        let s = &self.shared;
        let full_prefix = format!("{}{prefix}", s.prefix);
        let mut token: Option<String> = None;
        loop {
            let page = self.rt.block_on(s.send(0, || {
                s.client
                    .list_objects_v2()
                    .bucket(&s.bucket)
                    .prefix(&full_prefix)
                    .set_continuation_token(token.clone())
                    .send()
            }))?;
            let (page, _) = page.map_err(|f| s.error("list", &full_prefix, None, f))?;
            for o in page.contents() {
                let Some(key) = o.key().and_then(|k| k.strip_prefix(&s.prefix)) else {
                    continue;
                };
                f(ObjectMeta {
                    key: key.to_owned(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                })?;
            }
            token = page.next_continuation_token().map(str::to_owned);
            if !page.is_truncated().unwrap_or(false) || token.is_none() {
                return Ok(());
            }
        }
    }

    /// Aborts the incomplete multipart uploads under the prefix whose keys `owned`
    /// accepts: uploads a killed writer left, invisible but billed. The export calls
    /// this only from its sweep, under the job's sweep lease and when no other run
    /// of the job is alive, so none of the job's uploads is in progress.
    fn remove_incomplete(&self, owned: &dyn Fn(&str) -> bool, dry_run: bool) -> io::Result<u64> {
        let s = &self.shared;
        let mut stale = Vec::new();
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = self.rt.block_on(s.send(0, || {
                s.client
                    .list_multipart_uploads()
                    .bucket(&s.bucket)
                    .prefix(&s.prefix)
                    .set_key_marker(key_marker.clone())
                    .set_upload_id_marker(id_marker.clone())
                    .send()
            }))?;
            let (page, _) = page.map_err(|f| s.error("list uploads", &s.prefix, None, f))?;
            for u in page.uploads() {
                let (Some(full), Some(id)) = (u.key(), u.upload_id()) else {
                    continue;
                };
                if full.strip_prefix(&s.prefix).is_some_and(owned) {
                    stale.push((full.to_owned(), id.to_owned()));
                }
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            id_marker = page.next_upload_id_marker().map(str::to_owned);
            if !page.is_truncated().unwrap_or(false) || key_marker.is_none() {
                break;
            }
        }
        if dry_run {
            return Ok(stale.len() as u64);
        }
        for (full, id) in &stale {
            let r = self.rt.block_on(s.send(0, || {
                s.client
                    .abort_multipart_upload()
                    .bucket(&s.bucket)
                    .key(full)
                    .upload_id(id)
                    .send()
            }))?;
            match r {
                Ok(_) => {}
                Err(f) if f.last.is_not_found() => {}
                Err(f) => return Err(s.error("abort upload", full, Some(id), f)),
            }
        }
        Ok(stale.len() as u64)
    }

    fn delete(&self, key: &str) -> io::Result<()> {
        let s = &self.shared;
        let full = s.full_key(key)?;
        let r = self.rt.block_on(s.send(0, || {
            s.client.delete_object().bucket(&s.bucket).key(&full).send()
        }))?;
        match r {
            Ok(_) => Ok(()),
            Err(f) if f.last.is_not_found() => Ok(()),
            Err(f) => Err(s.error("delete", &full, None, f)),
        }
    }
}

/// A streaming GET. When the connection breaks mid-body it resumes with a ranged GET
/// from where it stopped, pinned to the same version of the object by its ETag.
struct S3Reader {
    shared: Arc<Shared>,
    rt: Arc<Rt>,
    key: String,
    body: ByteStream,
    chunk: Bytes,
    pos: u64,
    size: Option<u64>,
    etag: Option<String>,
    resumes: u32,
}

impl S3Reader {
    async fn open(shared: Arc<Shared>, rt: Arc<Rt>, key: String) -> io::Result<S3Reader> {
        let (out, _) = shared
            .send(0, || {
                shared
                    .client
                    .get_object()
                    .bucket(&shared.bucket)
                    .key(&key)
                    .send()
            })
            .await
            .map_err(|f| shared.error("get", &key, None, f))?;
        Ok(S3Reader {
            size: out.content_length().map(|l| l.max(0) as u64),
            etag: out.e_tag().map(str::to_owned),
            body: out.body,
            chunk: Bytes::new(),
            pos: 0,
            resumes: 0,
            shared,
            rt,
            key,
        })
    }

    async fn resume(&mut self, why: String) -> io::Result<()> {
        let s = &self.shared;
        self.resumes += 1;
        if self.resumes > s.retries {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!(
                    "s3 get s3://{}/{} at {}: the download broke at byte {} {} times, last: {why}",
                    s.bucket, self.key, s.endpoint, self.pos, self.resumes
                ),
            ));
        }
        tracing::debug!(bucket = %s.bucket, key = %self.key, at = self.pos, error = %why, "s3 download broke, resuming");
        let range = format!("bytes={}-", self.pos);
        let (out, _) = s
            .send(0, || {
                s.client
                    .get_object()
                    .bucket(&s.bucket)
                    .key(&self.key)
                    .range(&range)
                    .set_if_match(self.etag.clone())
                    .send()
            })
            .await
            .map_err(|f| s.error("resumed get", &self.key, None, f))?;
        self.body = out.body;
        Ok(())
    }
}

impl Read for S3Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.chunk.is_empty() {
                let n = buf.len().min(self.chunk.len());
                buf[..n].copy_from_slice(&self.chunk.split_to(n));
                self.pos += n as u64;
                return Ok(n);
            }
            if buf.is_empty() || self.size.is_some_and(|s| self.pos >= s) {
                return Ok(0);
            }
            let rt = Arc::clone(&self.rt);
            match rt.block_on(self.body.next())? {
                Some(Ok(b)) => self.chunk = b,
                None if self.size.is_none() => return Ok(0),
                None => {
                    rt.block_on(self.resume("the body ended early".into()))??;
                }
                Some(Err(e)) => {
                    let why = AttemptError::body(e).message;
                    rt.block_on(self.resume(why))??;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        s3: S3Options,
    }

    #[test]
    fn defaults_match_an_empty_command_line() {
        // BACKFILL_S3_PATH_STYLE would change the parse; the test runner does not set it.
        let parsed = Cli::parse_from(["x"]).s3;
        assert_eq!(parsed, S3Options::default());
        parsed.validate().unwrap();
    }

    #[test]
    fn command_line_options() {
        let o = Cli::try_parse_from([
            "x",
            "--endpoint-url",
            "http://127.0.0.1:1",
            "--path-style",
            "--region",
            "eu-west-1",
            "--storage-class",
            "STANDARD_IA",
            "--sse",
            "aws:kms",
            "--sse-kms-key-id",
            "k1",
            "--max-write-rate",
            "2.5",
            "--max-requests",
            "8",
            "--s3-timeout",
            "5",
            "--s3-retries",
            "3",
            "--multipart-threshold",
            "8MiB",
            "--part-size",
            "5MiB",
            "--parts-in-flight",
            "2",
        ])
        .unwrap()
        .s3;
        o.validate().unwrap();
        assert_eq!(o.sse, Some(Sse::AwsKms));
        assert_eq!(o.part_size, 5 << 20);
        assert_eq!(o.multipart_threshold, 8 << 20);
        assert_eq!(o.max_write_rate, Some(2.5));
        assert!(o.path_style);

        for bad in [
            &["x", "--part-size", "4MiB"][..],
            &["x", "--part-size", "6GiB"],
            &["x", "--sse", "des"],
            &["x", "--sse-kms-key-id", "k"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?} accepted");
        }
        let invalid = [
            S3Options {
                storage_class: Some("FAST".into()),
                ..Default::default()
            },
            S3Options {
                sse: Some(Sse::Aes256),
                sse_kms_key_id: Some("k".into()),
                ..Default::default()
            },
            S3Options {
                max_write_rate: Some(0.0),
                ..Default::default()
            },
            S3Options {
                max_requests: 0,
                ..Default::default()
            },
            S3Options {
                part_size: 1 << 20,
                ..Default::default()
            },
            S3Options {
                multipart_threshold: 6 << 30,
                ..Default::default()
            },
        ];
        for o in invalid {
            assert!(o.validate().is_err(), "{o:?} accepted");
        }
    }

    #[test]
    fn urls() {
        let ok = [
            ("s3://b", ("b", "")),
            ("s3://b/", ("b", "")),
            ("s3://my-bucket.x/a/b", ("my-bucket.x", "a/b/")),
            ("s3://b/a/b/", ("b", "a/b/")),
        ];
        for (url, (bucket, prefix)) in ok {
            assert_eq!(
                parse_url(url).unwrap(),
                (bucket.to_string(), prefix.to_string()),
                "{url}"
            );
        }
        for (url, why) in [
            ("s3://", "bucket name is missing"),
            ("s3:///prefix", "bucket name is missing"),
            ("b/prefix", "does not start with s3://"),
            ("s3://b/a//c", "segment"),
            ("s3://b/../c", "segment"),
            ("s3://b c/x", "characters"),
        ] {
            let e = parse_url(url).unwrap_err().to_string();
            assert!(e.contains(why), "{url}: {e}");
        }
    }

    #[test]
    fn endpoints_in_messages_lose_their_userinfo() {
        for (url, shown) in [
            ("http://127.0.0.1:8333", "http://127.0.0.1:8333"),
            ("https://u:p@s3.example.com/x", "https://s3.example.com/x"),
            ("https://s3.example.com/a@b", "https://s3.example.com/a@b"),
            ("nonsense", "nonsense"),
        ] {
            assert_eq!(without_userinfo(url), shown);
        }
    }

    #[test]
    fn content_types() {
        for (key, ct) in [
            ("a/b.v2.log.job-1-0.xz", "application/x-xz"),
            ("_backfill/jobs/x.json", "application/json"),
            ("a.json/b", "application/octet-stream"),
            ("noext", "application/octet-stream"),
            ("x.xz.tmp", "application/octet-stream"),
        ] {
            assert_eq!(content_type(key), ct, "{key}");
        }
    }

    #[test]
    fn metadata_must_be_header_safe() {
        let ok: BTreeMap<_, _> = [("backfill-version", "0.1.0"), ("mappings_version", "ab12")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        check_metadata(&ok).unwrap();
        for (k, v) in [
            ("Upper", "x"),
            ("", "x"),
            ("a b", "x"),
            ("k", "é"),
            ("k", "a\nb"),
        ] {
            let m = BTreeMap::from([(k.to_string(), v.to_string())]);
            assert!(check_metadata(&m).is_err(), "{k:?}={v:?} accepted");
        }
    }

    #[test]
    fn describe_and_key_checks_need_no_server() {
        let config = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::from_static("us-east-1"))
            .build();
        let store = S3Store::with_sdk_config(
            "s3://b/p/q/",
            &S3Options::default(),
            BTreeMap::new(),
            &config,
        )
        .unwrap();
        assert_eq!(store.describe(), "s3://b/p/q");
        assert_eq!(store.prefix(), "p/q/");
        for bad in ["../x", "/abs", "a//b", ""] {
            let e = store.put(bad, b"x").unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
        let bare =
            S3Store::with_sdk_config("s3://b", &S3Options::default(), BTreeMap::new(), &config)
                .unwrap();
        assert_eq!(bare.describe(), "s3://b");
    }
}
