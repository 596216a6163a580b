//! Test harness: starts the real `ingest` binary on 127.0.0.1:0, speaks HTTP/1.1 to
//! it over plain sockets (so tests can send exactly the bytes they mean, slow or
//! broken), and reads the spool back with the library's raw log reader.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backfill::core::rawlog::{RawItem, RawLogReader, RawRecord, RawVersion};

pub const BIN: &str = env!("CARGO_BIN_EXE_ingest");
pub const WRITER: &str = "test-1";

/// Polls `cond` every 20 ms until it holds; panics with `what` after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// The server process (not a wrapper's) id.
    pub pid: i32,
    pub spool: PathBuf,
    pub stderr: Arc<Mutex<String>>,
}

/// The arguments every test server gets: a port of its own, a fixed writer id,
/// no free-space floor (the test machine's disk is not the subject) and a fast
/// monitor.
pub fn base_args(spool: &Path) -> Vec<String> {
    [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--spool",
        spool.to_str().unwrap(),
        "--writer-id",
        WRITER,
        "--min-free-disk",
        "0",
        "--check-interval",
        "50ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

impl Server {
    pub fn start(spool: &Path, extra: &[&str]) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.args(base_args(spool)).args(extra);
        Server::spawn(cmd, spool)
    }

    /// Runs `cmd` (the binary, or a wrapper that starts it) and waits for the
    /// server's `listening on ADDR (pid N, ...)` line.
    pub fn spawn(mut cmd: Command, spool: &Path) -> Server {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start ingest");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                eprintln!("[server] {line}");
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let start = Instant::now();
        let (addr, pid) = loop {
            let text = stderr.lock().unwrap().clone();
            if let Some(rest) = text.split("listening on ").nth(1) {
                let addr = rest.split_whitespace().next().unwrap().parse().unwrap();
                let pid = rest
                    .split("(pid ")
                    .nth(1)
                    .unwrap()
                    .split(',')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                break (addr, pid);
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("ingest exited before listening ({status}):\n{text}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "ingest did not start listening within 20 s:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        Server {
            child,
            addr,
            pid,
            spool: spool.to_path_buf(),
            stderr,
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the id of a process this test started.
        assert_eq!(unsafe { libc::kill(self.pid, sig) }, 0, "kill {}", self.pid);
    }

    /// Waits for the process (or its wrapper) to exit.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "ingest still running {limit:?} after being stopped:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait(Duration::from_secs(20))
    }

    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn post(&self, path: &str, body: &[u8], headers: &[(&str, &str)]) -> Response {
        post(self.addr, path, body, headers)
    }

    pub fn get(&self, path: &str) -> Response {
        let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        exchange(self.addr, req.as_bytes())
    }

    /// One value from `/metrics` (0 when the line is absent).
    pub fn metric(&self, name: &str) -> u64 {
        let m = self.get("/metrics");
        assert_eq!(m.status, 200);
        let text = String::from_utf8(m.body).unwrap();
        text.lines()
            .find_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                (k == name).then(|| v.parse().unwrap())
            })
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on processes this test started.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn post(addr: SocketAddr, path: &str, body: &[u8], headers: &[(&str, &str)]) -> Response {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    exchange(addr, &bytes)
}

/// Sends `raw` on a new connection and reads one response.
pub fn exchange(addr: SocketAddr, raw: &[u8]) -> Response {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(raw).expect("send request");
    read_response(&mut s).expect("read response")
}

/// Reads one response (headers, then a Content-Length body).
pub fn read_response(s: &mut TcpStream) -> std::io::Result<Response> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("connection closed after {} header bytes", buf.len()),
            ));
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; len];
    s.read_exact(&mut body)?;
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// File names in a spool folder, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// Every record of one raw log; panics on any damage (every log must re-read
/// cleanly) or on a name that does not say v2.
pub fn read_log(path: &Path) -> Vec<RawRecord> {
    let name = path.file_name().unwrap().to_str().unwrap();
    assert_eq!(
        RawVersion::from_file_name(name),
        Some(RawVersion::V2),
        "{name}"
    );
    let bytes = std::fs::read(path).unwrap();
    let mut reader = RawLogReader::new(&bytes[..], Some(RawVersion::V2));
    let mut out = Vec::new();
    while let Some(item) = reader.next_item().unwrap() {
        match item {
            RawItem::Record(r) => out.push(r),
            RawItem::Skipped { offset, len } => {
                panic!("{name}: {len} damaged bytes at offset {offset}")
            }
        }
    }
    assert!(!out.is_empty(), "{name}: a handed-over log is never empty");
    out
}

/// Every record in `dir`'s logs, in name order.
pub fn read_dir_records(dir: &Path) -> Vec<RawRecord> {
    names(dir)
        .iter()
        .flat_map(|n| read_log(&dir.join(n)))
        .collect()
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A gzipped JSON payload of about `size` bytes, distinct for each `seed`.
pub fn payload(seed: u64, size: usize) -> Vec<u8> {
    use flate2::write::GzEncoder;
    let mut json = format!("{{\"ver\":1,\"seed\":{seed},\"histograms\":{{");
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut gz = Vec::new();
    let mut i = 0;
    while gz.len() < size {
        for _ in 0..64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            json.push_str(&format!("\"H{i}\":{{\"values\":{{\"0\":{}}}}},", x >> 40));
            i += 1;
        }
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(json.as_bytes()).unwrap();
        e.write_all(b"\"end\":1}}").unwrap();
        gz = e.finish().unwrap();
    }
    gz
}

pub const FULL_PATH: &str =
    "/submit/telemetry/8b2a9dd6-1ee4-4b4b-9a0b-3ac7a9c0c0f1/saved-session/Firefox/22.0a1/nightly/20130226031002";
pub const ID_PATH: &str = "/submit/telemetry/0c7f2d54-5e3b-4f6c-8a1d-6b9e4f2a7c10";
