//! An SQS standard queue (or any server that speaks its API, such as moto in the
//! tests), through aws-sdk-sqs on a small runtime of its own, blocked on from the
//! caller's plain threads, as the S3 store does. Every request goes through one
//! retry loop with the S3 store's policy ([`crate::store::s3::should_retry`]:
//! throttling, 5xx, timeouts and broken connections are retried with jittered
//! exponential backoff); errors name the action and the queue URL, never
//! credentials.
//!
//! Where requests go: an endpoint configured the standard way (`AWS_ENDPOINT_URL_SQS`,
//! `AWS_ENDPOINT_URL`, the profile) wins; otherwise a queue URL outside AWS
//! (`http://127.0.0.1:9324/123456789012/name`) is served by its own origin, and an
//! AWS one (`https://sqs.REGION.amazonaws.com/ACCOUNT/NAME`) by SQS in its region.

use super::{check_limits, Message, Queue};
use crate::store::s3::{
    backoff, jitter, should_retry, without_userinfo, AttemptError, Outcome, Rt,
};
use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sqs::types::{
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;
use std::future::Future;
use std::io;
use std::time::Duration;

/// Attempts after the first for a failed request.
const RETRIES: u32 = 8;
/// First wait between attempts (then doubling, with jitter), and the longest.
const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(20);
/// How long one attempt may take: more than the longest long poll (20 s).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of message bodies in one SendMessageBatch (SQS's limit for a batch is
/// 256 KiB; kept below it for the request's other fields).
const BATCH_BYTES: usize = 200 << 10;

/// A queue in SQS, by URL. Cheap enough to make per process, not per message.
pub struct SqsQueue {
    client: Client,
    url: String,
    /// Where requests go, for messages.
    endpoint: String,
    rt: Rt,
}

impl std::fmt::Debug for SqsQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsQueue")
            .field("url", &self.url)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// The parts of a queue URL that decide where requests go.
#[derive(Debug, PartialEq, Eq)]
struct QueueUrl {
    /// `scheme://host[:port]`.
    origin: String,
    /// The region named by an AWS host (`sqs.REGION.amazonaws.com`,
    /// `REGION.queue.amazonaws.com`); `None` for other hosts.
    aws_region: Option<String>,
}

fn parse_queue_url(url: &str) -> io::Result<QueueUrl> {
    let bad = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{:?} is not an SQS queue URL: {why} (expected \
                 https://sqs.REGION.amazonaws.com/ACCOUNT/NAME, or http(s)://HOST:PORT/... \
                 of another SQS endpoint)",
                without_userinfo(url)
            ),
        )
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("it has no scheme"))?;
    if scheme != "http" && scheme != "https" {
        return Err(bad("the scheme is not http or https"));
    }
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    if host_port.is_empty() {
        return Err(bad("the host is missing"));
    }
    if path.trim_matches('/').is_empty() {
        return Err(bad("the queue's path (/ACCOUNT/NAME) is missing"));
    }
    let host = host_port.split(':').next().unwrap_or(host_port);
    let labels: Vec<&str> = host.split('.').collect();
    let aws_region = match labels.as_slice() {
        ["sqs", region, "amazonaws", "com"]
        | ["sqs", region, "amazonaws", "com", "cn"]
        | [region, "queue", "amazonaws", "com"] => Some((*region).to_owned()),
        _ => None,
    };
    Ok(QueueUrl {
        origin: format!("{scheme}://{host_port}"),
        aws_region,
    })
}

/// The endpoint configured the standard way in the environment, if any (what the
/// SDK itself reads; the profile's is seen through `config`).
fn configured_endpoint(config: &SdkConfig) -> Option<String> {
    if std::env::var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS").is_ok_and(|v| v == "true") {
        return None;
    }
    std::env::var("AWS_ENDPOINT_URL_SQS")
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| config.endpoint_url().map(str::to_owned))
}

/// Loads the standard AWS configuration (credentials, region, endpoint), with
/// `region` first when given, else the standard chain, else us-east-1.
fn load_config(rt: &Rt, region: Option<String>) -> io::Result<SdkConfig> {
    let region = RegionProviderChain::first_try(region.map(Region::new))
        .or_default_provider()
        .or_else(Region::from_static("us-east-1"));
    rt.block_on(
        aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .load(),
    )
}

fn new_rt() -> io::Result<Rt> {
    Rt::named("backfill-sqs", "the SQS queue", 1)
}

/// A request that failed for good.
struct Failure {
    last: AttemptError,
    attempts: u32,
}

impl SqsQueue {
    /// The queue at `url`, with the standard AWS configuration (see the module
    /// documentation for where requests go). Makes no request.
    pub fn from_url(url: &str) -> io::Result<SqsQueue> {
        let parsed = parse_queue_url(url)?;
        let rt = new_rt()?;
        let config = load_config(&rt, parsed.aws_region.clone())?;
        Self::build(url, &parsed, &config, rt)
    }

    /// Like [`SqsQueue::from_url`], with an AWS configuration made by the caller
    /// (credentials, region, endpoint). Makes no request.
    pub fn with_sdk_config(url: &str, config: &SdkConfig) -> io::Result<SqsQueue> {
        let parsed = parse_queue_url(url)?;
        Self::build(url, &parsed, config, new_rt()?)
    }

    /// Creates the queue `name` (or finds it, when it exists with the default
    /// attributes) with the standard AWS configuration; returns its URL.
    pub fn create(name: &str) -> io::Result<String> {
        let rt = new_rt()?;
        let config = load_config(&rt, None)?;
        Self::create_in(name, &config, rt)
    }

    /// Like [`SqsQueue::create`], with an AWS configuration made by the caller.
    pub fn create_with_sdk_config(name: &str, config: &SdkConfig) -> io::Result<String> {
        Self::create_in(name, config, new_rt()?)
    }

    fn create_in(name: &str, config: &SdkConfig, rt: Rt) -> io::Result<String> {
        let endpoint = configured_endpoint(config);
        let label = endpoint.as_deref().map_or_else(
            || {
                format!(
                    "AWS SQS ({})",
                    config.region().map_or("no region", |r| r.as_ref())
                )
            },
            without_userinfo,
        );
        let q = SqsQueue {
            client: client(config, endpoint.as_deref()),
            url: format!("(new queue {name})"),
            endpoint: label,
            rt,
        };
        let out = q.call("CreateQueue", || {
            q.client.create_queue().queue_name(name).send()
        })?;
        out.queue_url.ok_or_else(|| {
            io::Error::other(format!(
                "sqs CreateQueue {name} at {}: the answer has no queue URL",
                q.endpoint
            ))
        })
    }

    fn build(url: &str, parsed: &QueueUrl, config: &SdkConfig, rt: Rt) -> io::Result<SqsQueue> {
        let endpoint = match configured_endpoint(config) {
            Some(e) => Some(e),
            None if parsed.aws_region.is_none() => Some(parsed.origin.clone()),
            None => None,
        };
        let label = endpoint.as_deref().map_or_else(
            || {
                format!(
                    "AWS SQS ({})",
                    config.region().map_or("no region", |r| r.as_ref())
                )
            },
            without_userinfo,
        );
        Ok(SqsQueue {
            client: client(config, endpoint.as_deref()),
            url: url.to_owned(),
            endpoint: label,
            rt,
        })
    }

    /// The queue's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Deletes the queue (for tests that make their own).
    pub fn delete_queue(&self) -> io::Result<()> {
        self.call("DeleteQueue", || {
            self.client.delete_queue().queue_url(&self.url).send()
        })
        .map(|_| ())
    }

    /// Sends requests made by `attempt` until one succeeds, one fails in a way that
    /// retrying cannot fix, or the retries are used up; the error names `action`,
    /// the queue and the endpoint.
    fn call<T, E, F, Fut>(&self, action: &str, mut attempt: F) -> io::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        AttemptError: From<E>,
    {
        let r = self.rt.block_on(async {
            let mut n = 0;
            loop {
                n += 1;
                let err = match attempt().await {
                    Ok(v) => return Ok(v),
                    Err(e) => AttemptError::from(e),
                };
                if n > RETRIES || !retryable(&err.outcome) {
                    return Err(Failure {
                        last: err,
                        attempts: n,
                    });
                }
                let wait = backoff(n, BACKOFF_BASE, BACKOFF_CAP, jitter());
                tracing::debug!(queue = %self.url, action, attempt = n, error = %err.message,
                    wait_ms = wait.as_millis() as u64, "sqs request failed, retrying");
                tokio::time::sleep(wait).await;
            }
        })?;
        r.map_err(|f| self.error(action, f))
    }

    fn error(&self, action: &str, f: Failure) -> io::Error {
        let kind = match (&f.last.outcome, f.last.code()) {
            (_, Some(c)) if c.contains("NonExistentQueue") || c.contains("QueueDoesNotExist") => {
                io::ErrorKind::NotFound
            }
            (Outcome::Status { status: 403, .. }, _) => io::ErrorKind::PermissionDenied,
            (Outcome::Timeout, _) => io::ErrorKind::TimedOut,
            (Outcome::Connection, _) => io::ErrorKind::ConnectionAborted,
            _ => io::ErrorKind::Other,
        };
        let attempts = match f.attempts {
            1 => "1 attempt".to_string(),
            n => format!("{n} attempts"),
        };
        io::Error::new(
            kind,
            format!(
                "sqs {action} {} failed after {attempts} at {}: {}",
                without_userinfo(&self.url),
                self.endpoint,
                f.last.message
            ),
        )
    }

    /// Sends one SendMessageBatch of `bodies` (at most 10), sending again the
    /// entries SQS failed for a reason on its side.
    fn send_chunk(&self, bodies: &[String]) -> io::Result<()> {
        let mut pending: Vec<usize> = (0..bodies.len()).collect();
        let mut round = 0;
        loop {
            round += 1;
            let entries = pending
                .iter()
                .map(|&i| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(&bodies[i])
                        .build()
                        .map_err(|e| io::Error::other(format!("sqs SendMessageBatch entry: {e}")))
                })
                .collect::<io::Result<Vec<_>>>()?;
            let out = self.call("SendMessageBatch", || {
                self.client
                    .send_message_batch()
                    .queue_url(&self.url)
                    .set_entries(Some(entries.clone()))
                    .send()
            })?;
            if out.failed().is_empty() {
                return Ok(());
            }
            let first = &out.failed()[0];
            let why = format!(
                "{} of {} messages refused, the first with {}: {}",
                out.failed().len(),
                pending.len(),
                first.code(),
                first.message().unwrap_or("no message")
            );
            if out.failed().iter().any(|f| f.sender_fault()) || round > RETRIES {
                return Err(io::Error::other(format!(
                    "sqs SendMessageBatch {} at {}: {why}",
                    without_userinfo(&self.url),
                    self.endpoint
                )));
            }
            tracing::debug!(queue = %self.url, error = %why, "sqs batch partly failed, sending the rest again");
            pending = out
                .failed()
                .iter()
                .filter_map(|f| f.id().parse().ok())
                .collect();
            std::thread::sleep(backoff(round, BACKOFF_BASE, BACKOFF_CAP, jitter()));
        }
    }
}

/// The S3 store's retry policy, plus SQS's own throttling codes (`KmsThrottled`,
/// and the prefixed forms of its query-compatible codes).
fn retryable(outcome: &Outcome) -> bool {
    should_retry(outcome)
        || matches!(outcome, Outcome::Status { code: Some(c), .. }
            if c.ends_with("Throttled") || c.ends_with("ThrottlingException"))
}

/// An SQS client for `config`, retrying nothing itself (the loop in
/// [`SqsQueue::call`] does), sending to `endpoint` when given.
fn client(config: &SdkConfig, endpoint: Option<&str>) -> Client {
    let mut b = aws_sdk_sqs::config::Builder::from(config)
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .read_timeout(ATTEMPT_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .build(),
        );
    if let Some(e) = endpoint {
        b = b.endpoint_url(e);
    }
    Client::from_conf(b.build())
}

fn secs(v: u32) -> i32 {
    // Callers checked v against SQS's limits, all far below i32::MAX.
    i32::try_from(v).unwrap_or(i32::MAX)
}

impl Queue for SqsQueue {
    fn describe(&self) -> String {
        without_userinfo(&self.url)
    }

    fn send(&self, body: &str) -> io::Result<()> {
        self.call("SendMessage", || {
            self.client
                .send_message()
                .queue_url(&self.url)
                .message_body(body)
                .send()
        })
        .map(|_| ())
    }

    fn send_batch(&self, bodies: &[String]) -> io::Result<()> {
        let mut start = 0;
        while start < bodies.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < bodies.len()
                && end - start < 10
                && (end == start || bytes + bodies[end].len() <= BATCH_BYTES)
            {
                bytes += bodies[end].len();
                end += 1;
            }
            self.send_chunk(&bodies[start..end])?;
            start = end;
        }
        Ok(())
    }

    fn receive(
        &self,
        max: usize,
        wait_secs: u32,
        visibility_secs: u32,
    ) -> io::Result<Vec<Message>> {
        let Some(max) = super::receivable(max, wait_secs, visibility_secs)? else {
            return Ok(Vec::new());
        };
        let out = self.call("ReceiveMessage", || {
            self.client
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(max as i32)
                .wait_time_seconds(secs(wait_secs))
                .visibility_timeout(secs(visibility_secs))
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .send()
        })?;
        out.messages()
            .iter()
            .map(|m| {
                let missing = |what: &str| {
                    io::Error::other(format!(
                        "sqs ReceiveMessage {} at {}: a message came without its {what}",
                        self.describe(),
                        self.endpoint
                    ))
                };
                let receive_count = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| missing("ApproximateReceiveCount"))?;
                Ok(Message {
                    id: m.message_id().ok_or_else(|| missing("id"))?.to_owned(),
                    receipt: m
                        .receipt_handle()
                        .ok_or_else(|| missing("receipt handle"))?
                        .to_owned(),
                    body: m.body().unwrap_or_default().to_owned(),
                    receive_count,
                })
            })
            .collect()
    }

    fn extend(&self, m: &Message, visibility_secs: u32) -> io::Result<()> {
        check_limits(0, visibility_secs)?;
        self.call("ChangeMessageVisibility", || {
            self.client
                .change_message_visibility()
                .queue_url(&self.url)
                .receipt_handle(&m.receipt)
                .visibility_timeout(secs(visibility_secs))
                .send()
        })
        .map(|_| ())
    }

    fn delete(&self, m: &Message) -> io::Result<()> {
        self.call("DeleteMessage", || {
            self.client
                .delete_message()
                .queue_url(&self.url)
                .receipt_handle(&m.receipt)
                .send()
        })
        .map(|_| ())
    }

    fn approximate_counts(&self) -> io::Result<(u64, u64)> {
        let out = self.call("GetQueueAttributes", || {
            self.client
                .get_queue_attributes()
                .queue_url(&self.url)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                .send()
        })?;
        let get = |name: QueueAttributeName| -> io::Result<u64> {
            out.attributes()
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| {
                    io::Error::other(format!(
                        "sqs GetQueueAttributes {} at {}: no number for {}",
                        self.describe(),
                        self.endpoint,
                        name.as_str()
                    ))
                })
        };
        Ok((
            get(QueueAttributeName::ApproximateNumberOfMessages)?,
            get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_urls() {
        let p =
            parse_queue_url("https://sqs.eu-west-1.amazonaws.com/123456789012/backfill").unwrap();
        assert_eq!(p.aws_region.as_deref(), Some("eu-west-1"));
        assert_eq!(p.origin, "https://sqs.eu-west-1.amazonaws.com");
        let p = parse_queue_url("https://us-east-2.queue.amazonaws.com/1/q").unwrap();
        assert_eq!(p.aws_region.as_deref(), Some("us-east-2"));
        let p = parse_queue_url("http://127.0.0.1:9324/123456789012/q").unwrap();
        assert_eq!(
            p,
            QueueUrl {
                origin: "http://127.0.0.1:9324".into(),
                aws_region: None
            }
        );
        let p = parse_queue_url("http://user:secret@localhost:1/q").unwrap();
        assert_eq!(p.origin, "http://localhost:1");
        for bad in [
            "sqs://q",
            "127.0.0.1/q",
            "http:///q",
            "http://host",
            "http://host/",
            "ftp://h/q",
        ] {
            let e = parse_queue_url(bad).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad}");
        }
        let e = parse_queue_url("http://user:secret@host").unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn retries_throttling_and_server_errors_not_client_errors() {
        let status = |status: u16, code: &str| Outcome::Status {
            status,
            code: Some(code.to_owned()),
        };
        let table = [
            (status(400, "ThrottlingException"), true),
            (status(403, "RequestThrottled"), true),
            (status(400, "KmsThrottled"), true),
            (status(400, "AWS.SimpleQueueService.RequestThrottled"), true),
            (status(500, "InternalFailure"), true),
            (status(503, "ServiceUnavailable"), true),
            (
                status(400, "AWS.SimpleQueueService.NonExistentQueue"),
                false,
            ),
            (status(400, "ReceiptHandleIsInvalid"), false),
            (status(403, "AccessDenied"), false),
            (Outcome::Connection, true),
            (Outcome::Timeout, true),
            (Outcome::Local, false),
        ];
        for (o, want) in table {
            assert_eq!(retryable(&o), want, "{o:?}");
        }
    }
}
