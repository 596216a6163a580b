//! A fault-injecting HTTP proxy between the S3 client and the real SeaweedFS, for
//! the retry tests. It listens on 127.0.0.1:0 and handles one request per client
//! connection (it adds `Connection: close` upstream and closes after the answer), so
//! request boundaries are connection boundaries and no HTTP parsing beyond the
//! request head is needed. Rules say which kind of request gets which fault, how
//! many times; everything else is forwarded untouched (signatures stay valid).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

/// What an S3 request is, told from its method and query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Req {
    PutObject,
    CreateUpload,
    UploadPart,
    Complete,
    Abort,
    Get,
    Head,
    List,
    Other,
}

fn classify(method: &str, target: &str) -> Req {
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let has = |p: &str| {
        query
            .split('&')
            .any(|kv| kv == p || kv.starts_with(&format!("{p}=")))
    };
    match method {
        "PUT" if has("partNumber") => Req::UploadPart,
        "PUT" => Req::PutObject,
        "POST" if has("uploads") => Req::CreateUpload,
        "POST" if has("uploadId") => Req::Complete,
        "DELETE" if has("uploadId") => Req::Abort,
        "GET" if has("list-type") || has("uploads") => Req::List,
        "GET" => Req::Get,
        "HEAD" => Req::Head,
        _ => Req::Other,
    }
}

/// What to do to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and S3 error code, without forwarding.
    Status(u16, &'static str),
    /// Forward the head and this many body bytes, then cut both connections.
    CutRequest(usize),
    /// Forward the whole request (the server acts on it), then cut the client's
    /// connection instead of relaying the answer.
    DropResponse,
    /// Forward the whole request, relay this many bytes of the answer (head
    /// included), then cut the client's connection.
    CutResponse(usize),
    /// Flip one bit of the body byte at this offset on the way (transit corruption).
    Corrupt(usize),
}

#[derive(Default)]
struct State {
    /// (kind, fault, times left), first match wins.
    rules: Vec<(Req, Fault, usize)>,
    /// Every request seen: kind and the fault applied.
    log: Vec<(Req, Option<Fault>)>,
    parts_in_flight: usize,
    max_parts_in_flight: usize,
    /// Answers to parts are held until this many parts were in flight at once.
    gate: usize,
}

pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<(Mutex<State>, Condvar)>,
    stop: Arc<AtomicBool>,
    accept: Option<thread::JoinHandle<()>>,
}

impl Proxy {
    /// A proxy in front of `upstream` (`http://127.0.0.1:PORT`).
    pub fn start(upstream: &str) -> Proxy {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("the S3 endpoint is http://IP:PORT");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (state, stop) = (Arc::clone(&state), Arc::clone(&stop));
            thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let state = Arc::clone(&state);
                    thread::spawn(move || {
                        let _ = handle(conn, upstream, &state);
                    });
                }
            })
        };
        Proxy {
            addr,
            state,
            stop,
            accept: Some(accept),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next `times` requests of kind `req` (after earlier rules for it) get `fault`.
    pub fn fault(&self, req: Req, fault: Fault, times: usize) {
        self.state.0.lock().unwrap().rules.push((req, fault, times));
    }

    /// Holds every part's answer until `n` parts were in flight at once (or 20 s
    /// passed): a writer that sends parts one at a time cannot pass this.
    pub fn gate_parts(&self, n: usize) {
        self.state.0.lock().unwrap().gate = n;
    }

    /// How many requests of each kind came, faulted or not.
    pub fn counts(&self) -> BTreeMap<Req, usize> {
        let mut m = BTreeMap::new();
        for (r, _) in &self.state.0.lock().unwrap().log {
            *m.entry(*r).or_default() += 1;
        }
        m
    }

    /// How many faults were applied.
    pub fn faults_applied(&self) -> usize {
        let s = self.state.0.lock().unwrap();
        s.log.iter().filter(|(_, f)| f.is_some()).count()
    }

    pub fn max_parts_in_flight(&self) -> usize {
        self.state.0.lock().unwrap().max_parts_in_flight
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wake the accept loop
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Reads up to the end of the request head; returns the head and any body bytes
/// read with it.
fn read_head(conn: &mut TcpStream) -> io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(i + 4);
            return Ok((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn handle(
    mut client: TcpStream,
    upstream: SocketAddr,
    state: &(Mutex<State>, Condvar),
) -> io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let (head, mut early_body) = read_head(&mut client)?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let req = classify(method, target);
    let mut content_length = None;
    let mut new_head = format!("{request_line}\r\n");
    for line in lines.filter(|l| !l.is_empty()) {
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            content_length = v.trim().parse::<usize>().ok();
        }
        if !lower.starts_with("connection:") {
            new_head.push_str(line);
            new_head.push_str("\r\n");
        }
    }
    new_head.push_str("Connection: close\r\n\r\n");

    let fault = {
        let mut s = state.0.lock().unwrap();
        let fault = s
            .rules
            .iter_mut()
            .find(|(r, _, left)| *r == req && *left > 0)
            .map(|(_, f, left)| {
                *left -= 1;
                *f
            });
        s.log.push((req, fault));
        if req == Req::UploadPart {
            s.parts_in_flight += 1;
            s.max_parts_in_flight = s.max_parts_in_flight.max(s.parts_in_flight);
            state.1.notify_all();
        }
        fault
    };
    let mut part = PartInFlight(if req == Req::UploadPart {
        Some(state)
    } else {
        None
    });
    let result = serve(
        &mut client,
        upstream,
        &new_head,
        &mut early_body,
        content_length,
        fault,
        &mut part,
    );
    drop(part);
    let _ = client.shutdown(Shutdown::Both);
    result
}

/// Counts a part as in flight until it is answered (or failed): dropped just
/// before the answer goes out, so the client's next part, which may start the
/// moment it has the answer, never overlaps with this one in the count.
struct PartInFlight<'a>(Option<&'a (Mutex<State>, Condvar)>);

impl PartInFlight<'_> {
    /// Holds the answer until the gate is open, then stops counting the part.
    fn answered(&mut self) {
        if let Some((lock, cvar)) = self.0 {
            let s = lock.lock().unwrap();
            let _ = cvar
                .wait_timeout_while(s, Duration::from_secs(20), |s| {
                    s.max_parts_in_flight < s.gate
                })
                .unwrap();
        }
        self.end();
    }

    fn end(&mut self) {
        if let Some((lock, _)) = self.0.take() {
            lock.lock().unwrap().parts_in_flight -= 1;
        }
    }
}

impl Drop for PartInFlight<'_> {
    fn drop(&mut self) {
        self.end();
    }
}

fn serve(
    client: &mut TcpStream,
    upstream: SocketAddr,
    head: &str,
    early_body: &mut Vec<u8>,
    content_length: Option<usize>,
    fault: Option<Fault>,
    part: &mut PartInFlight,
) -> io::Result<()> {
    if let Some(Fault::Status(status, code)) = fault {
        // Take the whole body first, as a server would, so the client sees a clean
        // error answer rather than a broken pipe.
        let mut left = content_length.unwrap_or(0).saturating_sub(early_body.len());
        let mut sink = [0u8; 65536];
        while left > 0 {
            let n = client.read(&mut sink[..left.min(65536)])?;
            if n == 0 {
                break;
            }
            left -= n;
        }
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>injected by the test proxy</Message></Error>"
        );
        let reason = if status == 503 {
            "Service Unavailable"
        } else {
            "Error"
        };
        write!(
            client,
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        return client.flush();
    }

    let mut up = TcpStream::connect(upstream)?;
    up.set_read_timeout(Some(Duration::from_secs(30)))?;
    up.write_all(head.as_bytes())?;

    // Body: from the client to the server, corrupted or cut if asked.
    let limit = match fault {
        Some(Fault::CutRequest(n)) => Some(n),
        _ => None,
    };
    let corrupt_at = match fault {
        Some(Fault::Corrupt(at)) => Some(at),
        _ => None,
    };
    let total = content_length.unwrap_or(0);
    let mut sent = 0usize;
    let mut chunk = std::mem::take(early_body);
    let mut buf = vec![0u8; 65536];
    loop {
        if let Some(at) = corrupt_at {
            if (sent..sent + chunk.len()).contains(&at) {
                chunk[at - sent] ^= 0x01;
            }
        }
        if let Some(lim) = limit {
            if sent + chunk.len() >= lim {
                up.write_all(&chunk[..lim - sent])?;
                up.flush()?;
                // Cut: the server gets a short body, the client no answer.
                let _ = up.shutdown(Shutdown::Both);
                return Ok(());
            }
        }
        up.write_all(&chunk)?;
        sent += chunk.len();
        if sent >= total {
            break;
        }
        let n = client.read(&mut buf)?;
        if n == 0 {
            break;
        }
        chunk = buf[..n].to_vec();
    }
    up.flush()?;

    // Answer: from the server to the client (it closes after it: Connection: close).
    let mut answer = Vec::new();
    up.read_to_end(&mut answer)?;
    match fault {
        Some(Fault::DropResponse) => return Ok(()),
        Some(Fault::CutResponse(n)) => {
            part.end();
            client.write_all(&answer[..n.min(answer.len())])?;
            return client.flush();
        }
        _ => {}
    }
    part.answered();
    client.write_all(&answer)?;
    client.flush()
}
