//! The spool: the folder a server hands finished raw logs to and workers claim from.
//!
//! This module owns the spool's layout and names (`open/`, `ready/`, `claimed/`,
//! `writers/`), the writer id, the per-writer lock and file sequence, the atomic
//! hand-over (fsync, rename, fsync the folders), the recovery of files a crashed
//! server left in `open/`, and the backlog scan. It does not write records (see
//! `writer`) and knows nothing of HTTP.
//!
//! The contract the worker relies on is spelled out in `ingest/README.md`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use backfill::core::rawlog::{RawItem, RawLogReader, RawVersion};

/// Every raw log name starts with this, then `<writer-id>.<yyyyMMddHHmmss>.<seq>`.
pub const NAME_PREFIX: &str = "telemetry.log.v2.";
/// Sequence numbers wrap after this many (six digits in the name).
const SEQ_MODULUS: u64 = 1_000_000;

/// The spool's folders.
#[derive(Debug, Clone)]
pub struct Spool {
    /// The spool's root.
    pub root: PathBuf,
    /// Files a server is still writing.
    pub open: PathBuf,
    /// Finished files, waiting for a worker.
    pub ready: PathBuf,
    /// Files a worker has claimed.
    pub claimed: PathBuf,
    /// One lock file per writer id, holding the last sequence number used.
    pub writers: PathBuf,
}

impl Spool {
    /// The spool at `root`, its folders created when missing.
    pub fn create(root: &Path) -> Result<Spool> {
        let spool = Spool {
            root: root.to_path_buf(),
            open: root.join("open"),
            ready: root.join("ready"),
            claimed: root.join("claimed"),
            writers: root.join("writers"),
        };
        for dir in [&spool.open, &spool.ready, &spool.claimed, &spool.writers] {
            fs::create_dir_all(dir)
                .with_context(|| format!("cannot create spool folder {}", dir.display()))?;
        }
        Ok(spool)
    }
}

/// Whether `id` is a valid writer id: 1 to 64 characters of `[a-z0-9-]`.
pub fn valid_writer_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A writer id from a host name: lowercased, every other character a `-`, runs of
/// `-` collapsed and trimmed; `ingest` when nothing is left.
pub fn writer_id_from_hostname(host: &str) -> String {
    let mut out = String::new();
    for c in host.chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if !(c == '-' && (out.is_empty() || out.ends_with('-'))) {
            out.push(c);
        }
    }
    let mut out = out.trim_end_matches('-').to_string();
    out.truncate(64);
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() {
        "ingest".into()
    } else {
        out
    }
}

/// This machine's host name (`gethostname`).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// `yyyyMMddHHmmss` in UTC for seconds since the epoch.
pub fn utc_stamp(epoch_secs: u64) -> String {
    let days = (epoch_secs / 86_400) as i64;
    let rem = epoch_secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The name of a raw log: `telemetry.log.v2.<writer-id>.<yyyyMMddHHmmss>.<seq>`.
pub fn log_name(writer_id: &str, epoch_secs: u64, seq: u64) -> String {
    format!(
        "{NAME_PREFIX}{writer_id}.{}.{:06}",
        utc_stamp(epoch_secs),
        seq % SEQ_MODULUS
    )
}

/// The sequence number of one of `writer_id`'s log names, if it is one.
pub fn parse_seq(writer_id: &str, name: &str) -> Option<u64> {
    let rest = name.strip_prefix(NAME_PREFIX)?.strip_prefix(writer_id)?;
    let rest = rest.strip_prefix('.')?;
    let (stamp, seq) = rest.split_once('.')?;
    if stamp.len() != 14 || !stamp.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if seq.len() != 6 || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    seq.parse().ok()
}

/// fsyncs a folder, so that a rename or a creation in it survives a power loss.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Hands a finished file over: fsync it, rename `open/NAME` to `ready/NAME` (atomic:
/// a worker sees the whole file or nothing), fsync both folders.
pub fn hand_over(spool: &Spool, file: &File, name: &str) -> io::Result<()> {
    file.sync_all()?;
    fs::rename(spool.open.join(name), spool.ready.join(name))?;
    sync_dir(&spool.ready)?;
    sync_dir(&spool.open)
}

/// The exclusive hold of one writer id on a spool, and its file sequence.
///
/// `writers/<id>` is `flock`ed for the process's life, so two servers with the same
/// writer id on one spool are refused; it holds the last sequence number used, so
/// names stay unique across restarts even within the same second.
pub struct WriterLock {
    file: File,
    next_seq: u64,
}

impl WriterLock {
    /// Takes the lock of `writer_id`, or says who holds it.
    pub fn acquire(spool: &Spool, writer_id: &str) -> Result<WriterLock> {
        let path = spool.writers.join(writer_id);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path)
            .with_context(|| format!("cannot open writer lock {}", path.display()))?;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                bail!(
                    "writer id {writer_id:?} is in use on spool {}: another `ingest serve` holds {} \
                     (give each server on one spool its own --writer-id)",
                    spool.root.display(),
                    path.display()
                );
            }
            return Err(err).with_context(|| format!("cannot lock {}", path.display()));
        }
        let mut text = String::new();
        file.read_to_string(&mut text)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let last: Option<u64> = text.trim().parse().ok();
        // Names left in the spool by this writer count too (the state file may be
        // older than them after a power loss).
        let mut next = last.map_or(0, |s| s + 1);
        for dir in [&spool.open, &spool.ready, &spool.claimed] {
            for entry in
                fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?
            {
                let entry = entry?;
                if let Some(seq) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| parse_seq(writer_id, n))
                {
                    next = next.max(seq + 1);
                }
            }
        }
        Ok(WriterLock {
            file,
            next_seq: next % SEQ_MODULUS,
        })
    }

    /// The next sequence number, recorded (and fdatasync'ed) before it is used.
    pub fn take_seq(&mut self) -> io::Result<u64> {
        let seq = self.next_seq;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.set_len(0)?;
        writeln!(self.file, "{seq}")?;
        self.file.sync_data()?;
        self.next_seq = (seq + 1) % SEQ_MODULUS;
        Ok(seq)
    }
}

/// What recovering one file found.
#[derive(Debug)]
pub struct Recovered {
    /// The file's name.
    pub name: String,
    /// Whole records kept.
    pub records: u64,
    /// Bytes cut from the end (a record torn by the crash).
    pub truncated: u64,
    /// Damaged regions before the last whole record (left for the reader to skip).
    pub skipped: u64,
    /// Whether it was handed over (an empty file is removed instead).
    pub handed_over: bool,
}

/// Finalises the files `writer_id` left in `open/` (a crash): each is cut after its
/// last whole record, fsync'ed and handed over to `ready/`; an empty one is removed.
pub fn recover(
    spool: &Spool,
    writer_id: &str,
    max_path: usize,
    max_body: usize,
) -> Result<Vec<Recovered>> {
    let mut names: Vec<String> = Vec::new();
    for entry in fs::read_dir(&spool.open)
        .with_context(|| format!("cannot list {}", spool.open.display()))?
    {
        let name = entry?.file_name();
        if let Some(name) = name.to_str() {
            if parse_seq(writer_id, name).is_some() {
                names.push(name.to_string());
            }
        }
    }
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let path = spool.open.join(&name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let len = file.metadata()?.len();
        let mut reader = RawLogReader::new(BufReader::new(&file), Some(RawVersion::V2));
        reader.max_path = max_path;
        reader.max_body = max_body;
        let (mut end, mut records, mut skipped) = (0u64, 0u64, 0u64);
        while let Some(item) = reader
            .next_item()
            .with_context(|| format!("cannot read {}", path.display()))?
        {
            match item {
                RawItem::Record(r) => {
                    records += 1;
                    end = r.offset
                        + RawVersion::V2.header_len() as u64
                        + r.ip.as_ref().map_or(0, |ip| ip.len() as u64)
                        + r.path.len() as u64
                        + r.body.len() as u64;
                }
                RawItem::Skipped { offset, .. } => {
                    if offset < len {
                        skipped += 1;
                    }
                }
            }
        }
        // The skipped region after the last record is the torn tail, not damage.
        let tail_skipped = end < len;
        let skipped = skipped.saturating_sub(u64::from(tail_skipped));
        if records == 0 {
            fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
            sync_dir(&spool.open)?;
            out.push(Recovered {
                name,
                records,
                truncated: len,
                skipped,
                handed_over: false,
            });
            continue;
        }
        file.set_len(end)
            .with_context(|| format!("cannot truncate {}", path.display()))?;
        hand_over(spool, &file, &name)
            .with_context(|| format!("cannot hand over {}", path.display()))?;
        out.push(Recovered {
            name,
            records,
            truncated: len - end,
            skipped,
            handed_over: true,
        });
    }
    Ok(out)
}

/// The backlog: files waiting in `ready/` or held in `claimed/`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Files in `ready/` and `claimed/`.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Age in seconds of the oldest file in `ready/` (by modification time, which is
    /// its last append), 0 when there is none.
    pub oldest_ready_secs: u64,
}

/// Counts the backlog (a file that vanishes during the scan is skipped: a worker
/// moved or removed it).
pub fn scan_backlog(spool: &Spool, now: SystemTime) -> io::Result<Backlog> {
    let mut b = Backlog::default();
    for (dir, is_ready) in [(&spool.ready, true), (&spool.claimed, false)] {
        for entry in fs::read_dir(dir)? {
            let Ok(entry) = entry else { continue };
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            b.files += 1;
            b.bytes += meta.len();
            if is_ready {
                if let Ok(m) = meta.modified() {
                    let age = now.duration_since(m).map_or(0, |d| d.as_secs());
                    b.oldest_ready_secs = b.oldest_ready_secs.max(age);
                }
            }
        }
    }
    Ok(b)
}

/// Bytes available to an unprivileged writer on the file system holding `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL byte"))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a zeroed statvfs for the kernel to fill.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)]
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc_civil_time() {
        assert_eq!(utc_stamp(0), "19700101000000");
        assert_eq!(utc_stamp(951_782_400), "20000229000000");
        assert_eq!(utc_stamp(1_381_500_000), "20131011140000");
        assert_eq!(utc_stamp(4_102_444_799), "20991231235959");
    }

    #[test]
    fn names_round_trip_and_sort() {
        let a = log_name("web-1", 1_381_500_000, 7);
        assert_eq!(a, "telemetry.log.v2.web-1.20131011140000.000007");
        assert_eq!(parse_seq("web-1", &a), Some(7));
        assert_eq!(
            parse_seq("web", &a),
            None,
            "a prefix of the id is not the id"
        );
        assert_eq!(
            parse_seq("web-1", "telemetry.log.v2.web-1.2013.000007"),
            None
        );
        assert!(log_name("w", 100, 2) < log_name("w", 100, 10));
        assert!(log_name("w", 100, 999) < log_name("w", 101, 0));
    }

    #[test]
    fn writer_ids_from_host_names() {
        for (host, id) in [
            ("Web-01.example.COM", "web-01-example-com"),
            ("a__b", "a-b"),
            ("--x--", "x"),
            ("", "ingest"),
            ("Ωmega", "mega"),
        ] {
            let got = writer_id_from_hostname(host);
            assert_eq!(got, id, "{host:?}");
            assert!(valid_writer_id(&got));
        }
        assert!(!valid_writer_id("a.b"));
        assert!(!valid_writer_id("A"));
        assert!(!valid_writer_id(""));
    }
}
