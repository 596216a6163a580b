//! When to try an S3 request again, and how long to wait first. The decision is one
//! pure function over what happened ([`Outcome`]), so the whole policy reads (and is
//! tested) as one table; the loop that sleeps and resends lives in the store.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use std::time::Duration;

/// What one attempt of a request came to, reduced to what the retry policy needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The server answered with an error status; `code` is S3's error code when the
    /// answer had a body (HEAD answers have none).
    Status {
        /// HTTP status.
        status: u16,
        /// S3 error code, e.g. `SlowDown`, `NoSuchKey`.
        code: Option<String>,
    },
    /// No (complete) answer in time.
    Timeout,
    /// The connection could not be made, or was reset or closed before a complete
    /// answer arrived.
    Connection,
    /// The request could not be built or sent for a reason on this side (bad
    /// configuration, no credentials): sending it again cannot help.
    Local,
}

/// S3 error codes that mean "try again", whatever the status that carried them.
const RETRY_CODES: &[&str] = &[
    "SlowDown",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "RequestTimeTooSkewed",
    // Two conditional writes to one key raced; AWS asks to send it again.
    "ConditionalRequestConflict",
    // The body did not match its checksum: corrupted on the way, so resend it.
    "BadDigest",
    "XAmzContentChecksumMismatch",
    "XAmzContentSHA256Mismatch",
];

/// The retry policy: server errors (5xx but 501), throttling, timeouts, broken
/// connections and transit corruption are worth another attempt; client errors
/// (4xx), missing objects and local failures are not.
pub fn should_retry(outcome: &Outcome) -> bool {
    match outcome {
        Outcome::Timeout | Outcome::Connection => true,
        Outcome::Local => false,
        Outcome::Status { status, code } => {
            if code.as_deref().is_some_and(|c| RETRY_CODES.contains(&c)) {
                return true;
            }
            match status {
                408 | 429 => true,
                501 => false,
                500..=599 => true,
                _ => false,
            }
        }
    }
}

/// How long to wait before attempt `attempt + 1` after `attempt` failed (1-based):
/// exponential from `base`, capped at `cap`, with full jitter (`jitter` in `[0, 1)`)
/// so that many writers throttled at once do not come back at once.
pub fn backoff(attempt: u32, base: Duration, cap: Duration, jitter: f64) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    exp.min(cap).mul_f64(jitter.clamp(0.0, 1.0))
}

/// A number in `[0, 1)`, different on every call; good enough for jitter (not for
/// anything secret), without a random-number crate.
pub fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// A failed attempt: what happened and a message for people (bucket, key and
/// credentials are not in it; the caller adds the first two).
#[derive(Clone, Debug)]
pub struct AttemptError {
    /// For the retry decision.
    pub outcome: Outcome,
    /// What went wrong, e.g. `SlowDown: Please reduce your request rate (HTTP 503)`.
    pub message: String,
}

impl AttemptError {
    /// Whether this is the server saying the object (or upload) is not there.
    pub fn is_not_found(&self) -> bool {
        matches!(&self.outcome, Outcome::Status { status: 404, .. })
    }

    /// The S3 error code, if the server sent one.
    pub fn code(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Status { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// A connection broken while reading a response body.
    pub fn body(err: impl std::error::Error) -> Self {
        AttemptError {
            outcome: Outcome::Connection,
            message: format!("reading the response body: {}", chain(&err)),
        }
    }
}

/// An error and its sources on one line, `a: b: c`, each message once (the SDK's
/// own `DisplayErrorContext` appends a `Debug` dump, too noisy for people).
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = e.source();
    }
    parts.join(": ")
}

impl<E> From<SdkError<E, HttpResponse>> for AttemptError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    fn from(err: SdkError<E, HttpResponse>) -> Self {
        let outcome = match &err {
            SdkError::ConstructionFailure(_) => Outcome::Local,
            SdkError::TimeoutError(_) => Outcome::Timeout,
            SdkError::DispatchFailure(d) if d.is_timeout() => Outcome::Timeout,
            SdkError::DispatchFailure(d) if d.is_user() => Outcome::Local,
            SdkError::DispatchFailure(_) => Outcome::Connection,
            SdkError::ResponseError(r) if r.raw().status().as_u16() >= 300 => Outcome::Status {
                status: r.raw().status().as_u16(),
                code: None,
            },
            SdkError::ResponseError(_) => Outcome::Connection,
            SdkError::ServiceError(s) => Outcome::Status {
                status: s.raw().status().as_u16(),
                code: err.code().map(str::to_owned),
            },
            _ => Outcome::Local,
        };
        let message = match &outcome {
            Outcome::Status { status, code } => match (code, err.message()) {
                (Some(c), Some(m)) => format!("{c}: {m} (HTTP {status})"),
                (Some(c), None) => format!("{c} (HTTP {status})"),
                _ => format!("HTTP {status}"),
            },
            _ => chain(&err),
        };
        AttemptError { outcome, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, code: Option<&str>) -> Outcome {
        Outcome::Status {
            status,
            code: code.map(str::to_owned),
        }
    }

    #[test]
    fn retry_decisions() {
        let table: &[(Outcome, bool)] = &[
            (status(500, Some("InternalError")), true),
            (status(500, None), true),
            (status(502, None), true),
            (status(503, Some("SlowDown")), true),
            (status(503, None), true),
            (status(504, None), true),
            (status(501, Some("NotImplemented")), false),
            (status(429, None), true),
            (status(408, None), true),
            (status(400, Some("RequestTimeout")), true),
            (status(400, Some("BadDigest")), true),
            (status(400, Some("XAmzContentChecksumMismatch")), true),
            (status(403, Some("RequestTimeTooSkewed")), true),
            (status(400, Some("InvalidArgument")), false),
            (status(400, Some("EntityTooSmall")), false),
            (status(400, Some("InvalidDigest")), false),
            (status(403, Some("AccessDenied")), false),
            (status(403, Some("SignatureDoesNotMatch")), false),
            (status(403, None), false),
            (status(404, Some("NoSuchKey")), false),
            (status(404, Some("NoSuchUpload")), false),
            (status(404, Some("NoSuchBucket")), false),
            (status(412, Some("PreconditionFailed")), false),
            (status(416, Some("InvalidRange")), false),
            (Outcome::Timeout, true),
            (Outcome::Connection, true),
            (Outcome::Local, false),
        ];
        for (outcome, want) in table {
            assert_eq!(should_retry(outcome), *want, "{outcome:?}");
        }
    }

    #[test]
    fn backoff_grows_exponentially_up_to_the_cap_and_jitter_scales_it() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(5);
        let table = [
            (1, 1.0, 100),
            (2, 1.0, 200),
            (3, 1.0, 400),
            (6, 1.0, 3200),
            (7, 1.0, 5000),
            (60, 1.0, 5000),
            (3, 0.5, 200),
            (3, 0.0, 0),
            (0, 1.0, 100),
        ];
        for (attempt, j, ms) in table {
            assert_eq!(
                backoff(attempt, base, cap, j),
                Duration::from_millis(ms),
                "attempt {attempt}, jitter {j}"
            );
        }
    }

    #[test]
    fn error_chains_read_as_one_line() {
        #[derive(Debug)]
        struct E(&'static str, Option<Box<E>>);
        impl std::fmt::Display for E {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for E {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let e = E(
            "dispatch failure",
            Some(Box::new(E(
                "io error",
                Some(Box::new(E(
                    "io error",
                    Some(Box::new(E("Broken pipe", None))),
                ))),
            ))),
        );
        assert_eq!(chain(&e), "dispatch failure: io error: Broken pipe");
    }

    #[test]
    fn jitter_is_in_range_and_varies() {
        let v: Vec<f64> = (0..100).map(|_| jitter()).collect();
        assert!(v.iter().all(|j| (0.0..1.0).contains(j)));
        assert!(v.windows(2).any(|w| w[0] != w[1]));
    }
}
