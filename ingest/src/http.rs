//! The HTTP side: which requests are submissions, the old server's limits and status
//! codes, and the handler that turns a submission into a framed record for the
//! writer.
//!
//! Routing and header checks are pure functions of the request head ([`route`],
//! [`client_ip`]); only [`handle`] reads bodies and talks to the writer.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backfill::core::rawlog::{RawLogWriter, RawVersion};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{
    HeaderMap, HeaderValue, ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER,
};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::oneshot;

use crate::metrics::Metrics;
use crate::writer::{Append, WriterHandle};

/// The submission path's prefix; the stored path is what follows it.
pub const PREFIX: &str = "/submit/telemetry/";

/// Limits and switches of the handler.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Longest stored path (after the prefix); longer: 202, discarded.
    pub max_path: usize,
    /// Largest body; larger: 202, discarded.
    pub max_body: usize,
    /// Store no client IP.
    pub no_ip: bool,
    /// Time allowed to receive a body once the headers are in.
    pub body_timeout: Duration,
    /// Answer 507 below this many free bytes on the spool.
    pub min_free_disk: u64,
    /// Answer 503 at this many backlog files.
    pub max_backlog_files: u64,
    /// Answer 503 at this many backlog bytes.
    pub max_backlog_bytes: u64,
    /// Seconds a 503 asks clients to wait.
    pub retry_after_secs: u64,
}

/// Shared by every connection.
pub struct Ctx {
    /// Limits.
    pub config: HttpConfig,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The log writer.
    pub writer: WriterHandle,
    /// Set once SIGTERM/SIGINT arrived (`/status` turns unhealthy).
    pub stopping: std::sync::atomic::AtomicBool,
}

/// What a request head asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /status`.
    Status,
    /// `GET /metrics`.
    Metrics,
    /// A submission; the stored path (prefix removed).
    Submit(String),
    /// Answer with this status and no further work.
    Reject(StatusCode, &'static str),
}

/// Routes a request head: the old server's order (its own endpoints, then the
/// method, then the prefix), then the limits and the path's shape.
pub fn route(method: &Method, path: &str, headers: &HeaderMap, config: &HttpConfig) -> Route {
    match path {
        "/status" | "/metrics" => {
            return if method == Method::GET || method == Method::HEAD {
                if path == "/status" {
                    Route::Status
                } else {
                    Route::Metrics
                }
            } else {
                Route::Reject(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            }
        }
        _ => {}
    }
    if method != Method::POST {
        return Route::Reject(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    let Some(stored) = path.strip_prefix(PREFIX) else {
        return Route::Reject(StatusCode::NOT_FOUND, "not found");
    };
    if stored.len() > config.max_path {
        // The old server's answer: 202 so that the client does not retry.
        return Route::Reject(StatusCode::ACCEPTED, "path too long: discarded");
    }
    let segments: Vec<&str> = stored.split('/').collect();
    if !matches!(segments.len(), 1 | 6) || segments.iter().any(|s| s.is_empty()) {
        return Route::Reject(
            StatusCode::NOT_FOUND,
            "not found: expected /submit/telemetry/<docId> or /submit/telemetry/<docId>/<reason>/<appName>/<appVersion>/<channel>/<buildID>",
        );
    }
    let Some(len) = headers.get(CONTENT_LENGTH) else {
        return Route::Reject(StatusCode::LENGTH_REQUIRED, "content-length required");
    };
    let Some(len) = len.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) else {
        return Route::Reject(StatusCode::BAD_REQUEST, "bad content-length");
    };
    if len > config.max_body as u64 {
        return Route::Reject(StatusCode::ACCEPTED, "body too large: discarded");
    }
    Route::Submit(stored.to_string())
}

/// The client IP to store: the first address of `X-Forwarded-For` (set by the load
/// balancer) when it is an IP address, else the socket's peer.
pub fn client_ip(headers: &HeaderMap, peer: IpAddr) -> String {
    let forwarded = headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .and_then(|s| s.parse::<IpAddr>().ok());
    forwarded.unwrap_or(peer).to_canonical().to_string()
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn unavailable(ctx: &Ctx, status: StatusCode, why: String) -> Response<Full<Bytes>> {
    let mut r = text(status, why);
    r.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(ctx.config.retry_after_secs));
    r
}

/// Why the server is unhealthy (empty: healthy).
pub fn unhealthy_reasons(ctx: &Ctx) -> Vec<String> {
    let m = &ctx.metrics;
    let mut why = Vec::new();
    if ctx.stopping.load(Ordering::Relaxed) {
        why.push("shutting down".to_string());
    }
    let free = m.free_bytes.load(Ordering::Relaxed);
    if free < ctx.config.min_free_disk {
        why.push(format!(
            "spool disk low: {free} bytes free, --min-free-disk is {}",
            ctx.config.min_free_disk
        ));
    }
    if m.write_failing.load(Ordering::Relaxed) {
        why.push(m.last_write_error.lock().expect("lock").clone());
    }
    why
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn status_response(ctx: &Ctx) -> Response<Full<Bytes>> {
    let why = unhealthy_reasons(ctx);
    let m = &ctx.metrics;
    let files = m.backlog_files.load(Ordering::Relaxed);
    let bytes = m.backlog_bytes.load(Ordering::Relaxed);
    let body = format!(
        "{{\"healthy\":{},\"reasons\":[{}],\"free_bytes\":{},\"backlog_files\":{files},\"backlog_bytes\":{bytes},\"backlog_full\":{}}}\n",
        why.is_empty(),
        why.iter().map(|w| json_str(w)).collect::<Vec<_>>().join(","),
        m.free_bytes.load(Ordering::Relaxed),
        backlog_full(ctx).is_some(),
    );
    let status = if why.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut r = text(status, body);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn backlog_full(ctx: &Ctx) -> Option<String> {
    let m = &ctx.metrics;
    let files = m.backlog_files.load(Ordering::Relaxed);
    let bytes = m.backlog_bytes.load(Ordering::Relaxed);
    (files >= ctx.config.max_backlog_files || bytes >= ctx.config.max_backlog_bytes).then(|| {
        format!(
            "spool backlog full: {files} files, {bytes} bytes waiting for workers (limits {} files, {} bytes)",
            ctx.config.max_backlog_files, ctx.config.max_backlog_bytes
        )
    })
}

/// Answers one request (and counts its status).
pub async fn handle(
    req: Request<Incoming>,
    ctx: Arc<Ctx>,
    peer: SocketAddr,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let resp = respond(req, &ctx, peer).await;
    ctx.metrics.count_status(resp.status().as_u16());
    Ok(resp)
}

async fn respond(req: Request<Incoming>, ctx: &Ctx, peer: SocketAddr) -> Response<Full<Bytes>> {
    let received_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let stored = match route(req.method(), req.uri().path(), req.headers(), &ctx.config) {
        Route::Status => return status_response(ctx),
        Route::Metrics => {
            let mut r = text(StatusCode::OK, ctx.metrics.render());
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            return r;
        }
        Route::Reject(status, why) => {
            let mut r = text(status, why);
            if status == StatusCode::METHOD_NOT_ALLOWED {
                let allow = if matches!(req.uri().path(), "/status" | "/metrics") {
                    "GET, HEAD"
                } else {
                    "POST"
                };
                r.headers_mut()
                    .insert(ALLOW, HeaderValue::from_static(allow));
            }
            if status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED {
                // The body was not read: do not leave it to be parsed as a request.
                r.headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            return r;
        }
        Route::Submit(stored) => stored,
    };
    let free = ctx.metrics.free_bytes.load(Ordering::Relaxed);
    if free < ctx.config.min_free_disk {
        let mut r = text(
            StatusCode::INSUFFICIENT_STORAGE,
            format!(
                "spool disk low: {free} bytes free, below --min-free-disk {}",
                ctx.config.min_free_disk
            ),
        );
        r.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    if let Some(why) = backlog_full(ctx) {
        let mut r = unavailable(ctx, StatusCode::SERVICE_UNAVAILABLE, why);
        r.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    let ip = (!ctx.config.no_ip).then(|| client_ip(req.headers(), peer.ip()));
    let body = match tokio::time::timeout(ctx.config.body_timeout, req.into_body().collect()).await
    {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) => {
            // The client went away or broke the framing: nothing was stored.
            let mut r = text(StatusCode::BAD_REQUEST, format!("cannot read body: {e}"));
            r.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            return r;
        }
        Err(_) => {
            let mut r = text(StatusCode::REQUEST_TIMEOUT, "body not received in time");
            r.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            return r;
        }
    };
    ctx.metrics
        .bytes_in
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    let mut record = Vec::with_capacity(32 + stored.len() + body.len());
    let framed = RawLogWriter::new(&mut record, RawVersion::V2).write_record(
        stored.as_bytes(),
        &body,
        received_ms,
        ip.as_deref().map(str::as_bytes),
    );
    if let Err(e) = framed {
        return text(
            StatusCode::ACCEPTED,
            format!("cannot frame record: {e}: discarded"),
        );
    }
    let (tx, rx) = oneshot::channel();
    if ctx.writer.append(Append { record, reply: tx }).is_err() {
        return unavailable(ctx, StatusCode::SERVICE_UNAVAILABLE, "shutting down".into());
    }
    match rx.await {
        Ok(Ok(())) => text(StatusCode::OK, "OK"),
        Ok(Err(why)) => unavailable(ctx, StatusCode::SERVICE_UNAVAILABLE, why),
        Err(_) => unavailable(ctx, StatusCode::SERVICE_UNAVAILABLE, "shutting down".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> HttpConfig {
        HttpConfig {
            max_path: 100,
            max_body: 1000,
            no_ip: false,
            body_timeout: Duration::from_secs(1),
            min_free_disk: 0,
            max_backlog_files: 10,
            max_backlog_bytes: 10,
            retry_after_secs: 1,
        }
    }

    fn with_len(n: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_LENGTH, HeaderValue::from_str(n).unwrap());
        h
    }

    #[test]
    fn routes_like_the_old_server() {
        let c = config();
        let ok = with_len("10");
        let full = "/submit/telemetry/id/saved-session/Firefox/22.0a1/nightly/20130226031002";
        let long = format!("/submit/telemetry/{}", "x".repeat(101));
        let cases: Vec<(Method, &str, HeaderMap, Route)> = vec![
            (Method::GET, "/status", HeaderMap::new(), Route::Status),
            (Method::HEAD, "/status", HeaderMap::new(), Route::Status),
            (Method::GET, "/metrics", HeaderMap::new(), Route::Metrics),
            (
                Method::POST,
                full,
                ok.clone(),
                Route::Submit(full[18..].to_string()),
            ),
            (
                Method::POST,
                "/submit/telemetry/abc",
                ok.clone(),
                Route::Submit("abc".into()),
            ),
            (
                Method::POST,
                "/status",
                ok.clone(),
                Route::Reject(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
            ),
            (
                Method::GET,
                full,
                ok.clone(),
                Route::Reject(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
            ),
            (
                Method::PUT,
                "/elsewhere",
                ok.clone(),
                Route::Reject(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
            ),
            (
                Method::POST,
                "/elsewhere",
                ok.clone(),
                Route::Reject(StatusCode::NOT_FOUND, "not found"),
            ),
            (
                Method::POST,
                "/submit/telemetryx",
                ok.clone(),
                Route::Reject(StatusCode::NOT_FOUND, "not found"),
            ),
            (
                Method::POST,
                &long,
                ok.clone(),
                Route::Reject(StatusCode::ACCEPTED, "path too long: discarded"),
            ),
            (
                Method::POST,
                "/submit/telemetry/abc",
                HeaderMap::new(),
                Route::Reject(StatusCode::LENGTH_REQUIRED, "content-length required"),
            ),
            (
                Method::POST,
                "/submit/telemetry/abc",
                with_len("1001"),
                Route::Reject(StatusCode::ACCEPTED, "body too large: discarded"),
            ),
            (
                Method::POST,
                "/submit/telemetry/abc",
                with_len("1000"),
                Route::Submit("abc".into()),
            ),
            (
                Method::POST,
                "/submit/telemetry/abc",
                with_len("x"),
                Route::Reject(StatusCode::BAD_REQUEST, "bad content-length"),
            ),
        ];
        for (m, p, h, want) in cases {
            assert_eq!(route(&m, p, &h, &c), want, "{m} {p}");
        }
        for bad in [
            "/submit/telemetry/",
            "/submit/telemetry/a/b",
            "/submit/telemetry/a//c/d/e/f",
            "/submit/telemetry/a/b/c/d/e/f/g",
            "/submit/telemetry/a/b/c/d/e/f/",
        ] {
            assert!(
                matches!(
                    route(&Method::POST, bad, &ok, &c),
                    Route::Reject(StatusCode::NOT_FOUND, _)
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn client_ip_prefers_the_first_forwarded_address() {
        let peer: IpAddr = "10.0.0.9".parse().unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(client_ip(&h, peer), "10.0.0.9");
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static(" 203.0.113.7 , 10.1.1.1"),
        );
        assert_eq!(client_ip(&h, peer), "203.0.113.7");
        h.insert("x-forwarded-for", HeaderValue::from_static("2001:db8::1"));
        assert_eq!(client_ip(&h, peer), "2001:db8::1");
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("not-an-ip, 1.2.3.4"),
        );
        assert_eq!(
            client_ip(&h, peer),
            "10.0.0.9",
            "garbage falls back to the socket"
        );
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(client_ip(&HeaderMap::new(), mapped), "127.0.0.1");
    }
}
