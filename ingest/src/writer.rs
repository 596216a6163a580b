//! The log writer: one thread that appends framed records to the open raw log,
//! answers each request once its record is in the log (and, with `--fsync`, on disk),
//! and rotates the file.
//!
//! Requests queue on a channel; the thread takes everything queued at once and
//! appends it with one `writev`, so one `fdatasync` covers every request that arrived
//! while the previous one ran (group commit). A batch that cannot be written whole is
//! cut off again (`ftruncate` to where it started): a record is in a log whole or
//! not at all, and every request of that batch is answered as failed. Finished files
//! go to a second thread that fsyncs and renames them into `ready/`, so a rotation
//! never stalls the requests behind it. This module does not parse HTTP.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

use crate::metrics::Metrics;
use crate::spool::{self, Spool, WriterLock};

/// Most records appended by one `writev` (the kernel's IOV_MAX is 1024).
const MAX_BATCH: usize = 1024;

/// How the writer rotates and syncs.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// The spool's writer id.
    pub writer_id: String,
    /// Hand a file over once it holds this many bytes.
    pub rotate_size: u64,
    /// Hand a non-empty file over when nothing was appended for this long.
    pub rotate_idle: Duration,
    /// Hand a non-empty file over when it has been open this long.
    pub rotate_age: Duration,
    /// fdatasync before answering.
    pub fsync: bool,
}

/// One framed record and where to send the verdict.
pub struct Append {
    /// The record's bytes, already framed.
    pub record: Vec<u8>,
    /// Ok once appended (and synced with `--fsync`); the error otherwise.
    pub reply: oneshot::Sender<Result<(), String>>,
}

enum Msg {
    Append(Append),
    Shutdown,
}

/// The handle requests use.
#[derive(Clone)]
pub struct WriterHandle {
    tx: Sender<Msg>,
}

impl WriterHandle {
    /// Queues a record; `Err` when the writer has stopped.
    pub fn append(&self, a: Append) -> Result<(), Append> {
        self.tx.send(Msg::Append(a)).map_err(|e| match e.0 {
            Msg::Append(a) => a,
            Msg::Shutdown => unreachable!(),
        })
    }
}

/// The running writer: stop it with [`Writer::shutdown`].
pub struct Writer {
    tx: Sender<Msg>,
    thread: JoinHandle<()>,
}

impl Writer {
    /// Starts the writer and its hand-over thread.
    pub fn start(
        spool: Spool,
        lock: WriterLock,
        config: WriterConfig,
        metrics: Arc<Metrics>,
    ) -> io::Result<(Writer, WriterHandle)> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || {
                let mut w = State::new(spool, lock, config, metrics);
                w.run(rx);
            })?;
        Ok((
            Writer {
                tx: tx.clone(),
                thread,
            },
            WriterHandle { tx },
        ))
    }

    /// Appends everything queued so far, hands the open file over, and waits for
    /// every hand-over to finish.
    pub fn shutdown(self) {
        let _ = self.tx.send(Msg::Shutdown);
        let _ = self.thread.join();
    }
}

/// A finished file on its way to `ready/`: the file, its name, its length.
type Finished = (File, String, u64);

struct OpenLog {
    file: File,
    name: String,
    len: u64,
    opened: Instant,
    last_append: Instant,
    /// Write-back started up to here (without --fsync, see [`WRITE_BEHIND`]).
    behind: u64,
    /// Where the window before that one started.
    behind_prev: u64,
}

/// Without --fsync, the writer asks the kernel to start writing back every this
/// many bytes appended, and waits for the window before (long done by then): the
/// spool's dirty pages stay around two windows, instead of piling up until the
/// kernel throttles every writer at once (measured: p99 210 ms without, at 40k req/s
/// of 8 KB).
const WRITE_BEHIND: u64 = 32 << 20;

impl OpenLog {
    /// Starts write-back of what was appended since the last call, once a window
    /// is full, and waits for the window before it.
    fn write_behind(&mut self) {
        use std::os::fd::AsRawFd;
        if self.len - self.behind < WRITE_BEHIND {
            return;
        }
        let fd = self.file.as_raw_fd();
        let (start, len) = (self.behind, self.len - self.behind);
        // SAFETY: sync_file_range on an open descriptor with plain integer
        // arguments; failures are only a lost hint.
        unsafe {
            libc::sync_file_range(
                fd,
                start as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
            if start > self.behind_prev {
                libc::sync_file_range(
                    fd,
                    self.behind_prev as libc::off64_t,
                    (start - self.behind_prev) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WAIT_BEFORE
                        | libc::SYNC_FILE_RANGE_WRITE
                        | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                );
            }
        }
        self.behind_prev = start;
        self.behind = self.len;
    }
}

struct State {
    spool: Spool,
    lock: WriterLock,
    config: WriterConfig,
    metrics: Arc<Metrics>,
    current: Option<OpenLog>,
    finisher: Option<(Sender<Finished>, JoinHandle<()>)>,
}

impl State {
    fn new(spool: Spool, lock: WriterLock, config: WriterConfig, metrics: Arc<Metrics>) -> State {
        let (tx, rx) = mpsc::channel::<Finished>();
        let (s, m) = (spool.clone(), metrics.clone());
        let handle = std::thread::Builder::new()
            .name("log-hand-over".into())
            .spawn(move || {
                for (file, name, len) in rx {
                    let handed = spool::hand_over(&s, &file, &name);
                    m.in_transit_files.fetch_sub(1, Ordering::Relaxed);
                    m.in_transit_bytes.fetch_sub(len, Ordering::Relaxed);
                    match handed {
                        Ok(()) => {
                            m.files_rotated.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            // The file stays in open/; the next start recovers it.
                            m.backlog_files.fetch_sub(1, Ordering::Relaxed);
                            m.backlog_bytes.fetch_sub(len, Ordering::Relaxed);
                            eprintln!(
                                "ingest: cannot hand over {name} (left in open/ for the next start to recover): {e}"
                            );
                        }
                    }
                }
            })
            .expect("spawn hand-over thread");
        State {
            spool,
            lock,
            config,
            metrics,
            current: None,
            finisher: Some((tx, handle)),
        }
    }

    fn run(&mut self, rx: Receiver<Msg>) {
        let mut batch: Vec<Append> = Vec::with_capacity(MAX_BATCH);
        let mut shutdown = false;
        while !shutdown {
            let first = match rx.recv_timeout(self.wait()) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => {
                    self.rotate_if_due();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut next = Some(first);
            while let Some(m) = next.take() {
                match m {
                    Msg::Append(a) => batch.push(a),
                    Msg::Shutdown => {
                        shutdown = true;
                        break;
                    }
                }
                if batch.len() < MAX_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.write_batch(&mut batch);
            }
            self.rotate_if_due();
        }
        // Requests that raced the shutdown message are still answered.
        while let Ok(Msg::Append(a)) = rx.try_recv() {
            batch.push(a);
            if batch.len() == MAX_BATCH {
                self.write_batch(&mut batch);
            }
        }
        if !batch.is_empty() {
            self.write_batch(&mut batch);
        }
        self.rotate();
        if let Some((tx, handle)) = self.finisher.take() {
            drop(tx);
            let _ = handle.join();
        }
    }

    /// How long to wait for a request before checking the rotation timers.
    fn wait(&self) -> Duration {
        match &self.current {
            None => Duration::from_secs(3600),
            Some(c) => {
                let idle = self
                    .config
                    .rotate_idle
                    .saturating_sub(c.last_append.elapsed());
                let age = self.config.rotate_age.saturating_sub(c.opened.elapsed());
                idle.min(age).max(Duration::from_millis(1))
            }
        }
    }

    fn rotate_if_due(&mut self) {
        let due = self.current.as_ref().is_some_and(|c| {
            c.len >= self.config.rotate_size
                || c.last_append.elapsed() >= self.config.rotate_idle
                || c.opened.elapsed() >= self.config.rotate_age
        });
        if due {
            self.rotate();
        }
    }

    /// Sends the open file (if any) to the hand-over thread.
    fn rotate(&mut self) {
        let Some(c) = self.current.take() else { return };
        self.metrics
            .in_transit_files
            .fetch_add(1, Ordering::Relaxed);
        self.metrics
            .in_transit_bytes
            .fetch_add(c.len, Ordering::Relaxed);
        self.metrics.backlog_files.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .backlog_bytes
            .fetch_add(c.len, Ordering::Relaxed);
        if let Some((tx, _)) = &self.finisher {
            let _ = tx.send((c.file, c.name, c.len));
        }
    }

    fn open(&mut self) -> io::Result<&mut OpenLog> {
        if self.current.is_none() {
            let seq = self.lock.take_seq()?;
            let secs = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let name = spool::log_name(&self.config.writer_id, secs, seq);
            let file = OpenOptions::new()
                // O_APPEND: after a failed batch is cut off, the next one starts at
                // the new end, never past a hole.
                .append(true)
                .create_new(true)
                .mode(0o644)
                .open(self.spool.open.join(&name))?;
            // The new name must survive a power loss for --fsync's promise to hold.
            spool::sync_dir(&self.spool.open)?;
            let now = Instant::now();
            self.current = Some(OpenLog {
                file,
                name,
                len: 0,
                opened: now,
                last_append: now,
                behind: 0,
                behind_prev: 0,
            });
        }
        Ok(self.current.as_mut().expect("just opened"))
    }

    fn write_batch(&mut self, batch: &mut Vec<Append>) {
        let fsync = self.config.fsync;
        let total: u64 = batch.iter().map(|a| a.record.len() as u64).sum();
        let mut abandon = false;
        let result = self.open().and_then(|log| {
            let start = log.len;
            let mut slices: Vec<IoSlice<'_>> =
                batch.iter().map(|a| IoSlice::new(&a.record)).collect();
            let mut done = 0u64;
            let written = write_all_vectored(&mut log.file, &mut slices, &mut done)
                .and_then(|()| if fsync { log.file.sync_data() } else { Ok(()) });
            match written {
                Ok(()) => {
                    log.len = start + total;
                    log.last_append = Instant::now();
                    if !fsync {
                        log.write_behind();
                    }
                    Ok(())
                }
                Err(e) => {
                    // Cut the batch off again: no torn record stays in the log.
                    let what = format!("{e} (after {done} of {total} bytes)");
                    match log.file.set_len(start) {
                        Ok(()) => Err(io::Error::new(e.kind(), format!("{what}; cut back"))),
                        Err(t) => {
                            abandon = true;
                            Err(io::Error::new(
                                t.kind(),
                                format!("{what}; and cannot cut {} back: {t}", log.name),
                            ))
                        }
                    }
                }
            }
        });
        if abandon {
            // A file that could not be cut back cannot be trusted to grow: start a
            // new one. This one stays in open/ and is cut to its last whole record
            // at the next start.
            if let Some(c) = self.current.take() {
                eprintln!("ingest: leaving {} in open/ for recovery", c.name);
            }
        }
        // Rotate before answering, so that a client sees the backlog its own
        // request made.
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.len >= self.config.rotate_size)
        {
            self.rotate();
        }
        match result {
            Ok(()) => {
                self.metrics.write_failing.store(false, Ordering::Relaxed);
                self.metrics
                    .records_written
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                for a in batch.drain(..) {
                    let _ = a.reply.send(Ok(()));
                }
            }
            Err(e) => {
                let msg = format!("cannot append to the spool: {e}");
                self.metrics.write_failing.store(true, Ordering::Relaxed);
                self.metrics.write_errors.fetch_add(1, Ordering::Relaxed);
                *self.metrics.last_write_error.lock().expect("lock") = msg.clone();
                eprintln!("ingest: {msg}");
                for a in batch.drain(..) {
                    let _ = a.reply.send(Err(msg.clone()));
                }
            }
        }
    }
}

/// `write_all` over several buffers with `writev`, retrying short writes.
/// `done` counts the bytes written, for the error message.
fn write_all_vectored(
    file: &mut File,
    mut slices: &mut [IoSlice<'_>],
    done: &mut u64,
) -> io::Result<()> {
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "write returned 0")),
            Ok(n) => {
                *done += n as u64;
                IoSlice::advance_slices(&mut slices, n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
