//! The live ingest workers: raw logs of the submission server, claimed from a spool
//! (or from an S3 "incoming" prefix through a queue), converted and published by the
//! same pipeline as `export` (units, staging, assembly, leases, error output).
//!
//! A raw log is one folder of the pipeline, and its only unit: its group id is the
//! server's writer id and a hash of the file's name, so object names
//! (`<partition>.<job>-<writer>-<hash>-<n>.xz`) depend only on the raw file, and a
//! redo by any worker writes the same keys with the same bytes. The group manifest
//! is the commit: a file whose group is committed is never processed again, only
//! removed from the spool.
//!
//! The spool (written by `ingest serve`): finished files appear atomically in
//! `SPOOL/ready/`; a worker claims one by renaming it into `SPOOL/claimed/` (one
//! rename wins), keeps the claim fresh by touching it every quarter of
//! `--claim-ttl`, and removes it once committed. A claim older than the TTL (its
//! worker died) is renamed back into `ready/` by whichever worker sees it first.

use crate::core::schema::Schema;
use crate::source::{FileEntry, ReadSeek, Source, WalkItem};
use crate::store::Store;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub mod work;

/// A submission's request path, without `/submit/telemetry/`:
/// `<docId>[/<reason>/<appName>/<appVersion>/<appUpdateChannel>/<appBuildID>]`.
#[derive(Debug, PartialEq, Eq)]
pub struct SubmissionPath<'p> {
    /// The document id.
    pub doc_id: &'p str,
    /// reason, appName, appVersion, appUpdateChannel, appBuildID, as far as given.
    pub segments: Vec<&'p str>,
}

/// The path's dimension segments, in path order (version before channel).
const PATH_FIELDS: [&str; 5] = [
    "reason",
    "appName",
    "appVersion",
    "appUpdateChannel",
    "appBuildID",
];

impl<'p> SubmissionPath<'p> {
    /// Reads a stored path; the error says what is wrong with it.
    pub fn parse(path: &'p [u8]) -> Result<SubmissionPath<'p>, String> {
        let text = std::str::from_utf8(path)
            .map_err(|e| format!("submission path is not utf-8 (byte {})", e.valid_up_to()))?;
        let text = text.strip_prefix('/').unwrap_or(text);
        let mut parts = text.split('/');
        let doc_id = parts.next().unwrap_or_default();
        if !crate::core::rowkey::is_uuid(doc_id.as_bytes()) {
            return Err(format!(
                "submission path {text:?}: the doc id is not a UUID"
            ));
        }
        let segments: Vec<&str> = parts.collect();
        if segments.len() > PATH_FIELDS.len() {
            return Err(format!(
                "submission path {text:?} has {} segments after the doc id, at most {}",
                segments.len(),
                PATH_FIELDS.len()
            ));
        }
        Ok(SubmissionPath { doc_id, segments })
    }

    /// The path's values by schema dimension (the converter's fallback for values
    /// missing from `info`).
    pub fn dims(&self, schema: &Schema) -> Vec<Option<&'p str>> {
        schema
            .dimension_names()
            .map(|name| {
                PATH_FIELDS
                    .iter()
                    .position(|f| *f == name)
                    .and_then(|i| self.segments.get(i).copied())
                    .filter(|v| !v.is_empty())
            })
            .collect()
    }
}

/// Writes the UTC day (`yyyyMMdd`) of a time in epoch milliseconds into `out`.
pub fn utc_day(ms: u64, out: &mut String) {
    let days = (ms / 86_400_000) as i64;
    let d = crate::export::plan::shift_day(19700101, days);
    out.clear();
    out.push_str(&d.to_string());
}

/// The server's writer id in a raw log's name
/// (`telemetry.log.v2.<writer>.<yyyyMMddHHmmss>.<seq>`), if it has that shape.
pub fn writer_of(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("telemetry.log.v")?;
    let (_version, rest) = rest.split_once('.')?;
    let mut it = rest.rsplitn(3, '.');
    let seq = it.next()?;
    let stamp = it.next()?;
    let writer = it.next()?;
    let ok = seq.bytes().all(|c| c.is_ascii_digit())
        && stamp.len() == 14
        && stamp.bytes().all(|c| c.is_ascii_digit())
        && !writer.is_empty()
        && writer
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
    ok.then_some(writer)
}

/// Raw logs in a store (the spool's `claimed/`, or an S3 incoming prefix) as the
/// pipeline's source: the folder `<name>` holds the one file `<prefix><name>`.
pub struct RawLogSource {
    store: Box<dyn Store>,
    prefix: String,
}

impl RawLogSource {
    /// Raw logs under `prefix` (ending in `/`, or empty) of `store`.
    pub fn new(store: Box<dyn Store>, prefix: &str) -> Self {
        RawLogSource {
            store,
            prefix: prefix.to_string(),
        }
    }
}

impl RawLogSource {
    /// Deletes a raw log (once its group is committed).
    pub fn remove(&self, name: &str) -> io::Result<()> {
        self.store.delete(&format!("{}{name}", self.prefix))
    }
}

impl Source for RawLogSource {
    fn describe(&self) -> String {
        format!("{}/{}", self.store.describe(), self.prefix)
    }

    fn walk(&self, visit: &mut dyn FnMut(WalkItem) -> bool) -> io::Result<()> {
        for o in self.store.list(&self.prefix)? {
            let name = o.key[self.prefix.len()..].to_string();
            if name.contains('/') {
                continue;
            }
            let item = WalkItem::Folder {
                dir: name,
                files: vec![FileEntry {
                    path: o.key,
                    size: o.size,
                }],
            };
            if !visit(item) {
                break;
            }
        }
        Ok(())
    }

    fn open(&self, path: &str) -> io::Result<Box<dyn ReadSeek>> {
        crate::reprocess::open_forward(self.store.as_ref(), path)
    }

    fn list_folder(&self, dir: &str) -> io::Result<Vec<WalkItem>> {
        let key = format!("{}{dir}", self.prefix);
        Ok(self
            .store
            .list(&key)?
            .into_iter()
            .filter(|o| o.key == key)
            .map(|o| WalkItem::Folder {
                dir: dir.to_string(),
                files: vec![FileEntry {
                    path: o.key,
                    size: o.size,
                }],
            })
            .collect())
    }
}

/// How long ago a claimed file was claimed or renewed: its inode's change time,
/// which both the claiming rename and a renewal's touch set (its modification time
/// is still the writer's between the two, and would make a fresh claim look stale).
fn claim_age(m: &std::fs::Metadata) -> Duration {
    use std::os::unix::fs::MetadataExt;
    let changed = std::time::UNIX_EPOCH
        + Duration::from_secs(m.ctime().max(0) as u64)
        + Duration::from_nanos(m.ctime_nsec().max(0) as u64);
    changed.elapsed().unwrap_or_default()
}

/// Finished raw logs waiting in a spool.
pub const READY: &str = "ready";
/// Raw logs a worker is working on.
pub const CLAIMED: &str = "claimed";

/// A spool directory, as a worker sees it.
pub struct Spool {
    root: PathBuf,
    /// A claim not touched for this long belongs to a dead worker.
    pub claim_ttl: Duration,
}

impl Spool {
    /// The spool at `root` (its `ready/` and `claimed/` are created if missing).
    pub fn open(root: &Path, claim_ttl: Duration) -> io::Result<Spool> {
        for d in [READY, CLAIMED] {
            std::fs::create_dir_all(root.join(d))?;
        }
        Ok(Spool {
            root: root.to_path_buf(),
            claim_ttl,
        })
    }

    /// The spool's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn names(&self, sub: &str) -> io::Result<Vec<String>> {
        let mut v: Vec<String> = std::fs::read_dir(self.root.join(sub))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .collect();
        v.sort();
        Ok(v)
    }

    /// Claims the oldest ready file (names sort by writer, time and sequence):
    /// renames it into `claimed/`; `None` when none is left. Of several workers
    /// renaming one file, exactly one succeeds.
    pub fn claim(&self) -> io::Result<Option<String>> {
        for name in self.names(READY)? {
            let from = self.root.join(READY).join(&name);
            let to = self.root.join(CLAIMED).join(&name);
            match std::fs::rename(&from, &to) {
                // The rename sets the inode's change time: the claim's age counts
                // from now (see `claim_age`).
                Ok(()) => return Ok(Some(name)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Keeps a claim fresh.
    pub fn touch(&self, name: &str) -> io::Result<()> {
        let f = std::fs::File::options()
            .append(true)
            .open(self.root.join(CLAIMED).join(name))?;
        f.set_modified(SystemTime::now())
    }

    /// Gives back the claims of dead workers (not touched for the TTL): renamed into
    /// `ready/`, to be claimed again. Returns how many.
    pub fn release_stale(&self) -> io::Result<usize> {
        let mut n = 0;
        for name in self.names(CLAIMED)? {
            let path = self.root.join(CLAIMED).join(&name);
            let age = match std::fs::metadata(&path) {
                Ok(m) => claim_age(&m),
                Err(_) => continue,
            };
            if age < self.claim_ttl {
                continue;
            }
            match std::fs::rename(&path, self.root.join(READY).join(&name)) {
                Ok(()) => {
                    tracing::warn!(file = %name, age_s = age.as_secs(), "a claim was not renewed (its worker died); it is ready again");
                    n += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// Removes a committed file from the spool.
    pub fn done(&self, name: &str) -> io::Result<()> {
        match std::fs::remove_file(self.root.join(CLAIMED).join(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Files ready and claimed, and their bytes.
    pub fn backlog(&self) -> io::Result<(u64, u64)> {
        let (mut files, mut bytes) = (0, 0);
        for sub in [READY, CLAIMED] {
            for name in self.names(sub)? {
                if let Ok(m) = std::fs::metadata(self.root.join(sub).join(name)) {
                    files += 1;
                    bytes += m.len();
                }
            }
        }
        Ok((files, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "17caa68c-25f5-450a-9cce-7d31318846d8";

    #[test]
    fn paths_give_their_dimensions_by_name() {
        let m = crate::core::mappings::Mappings::embedded().unwrap();
        let p = format!("{ID}/saved-session/Firefox/22.0a1/nightly/20130226031002");
        let s = SubmissionPath::parse(p.as_bytes()).unwrap();
        assert_eq!(s.doc_id, ID);
        let names: Vec<&str> = m.schema().dimension_names().collect();
        let dims = s.dims(m.schema());
        let get = |n: &str| dims[names.iter().position(|x| *x == n).unwrap()];
        assert_eq!(get("appUpdateChannel"), Some("nightly"));
        assert_eq!(get("appVersion"), Some("22.0a1"));
        assert_eq!(get("submission_date"), None);
        let only = SubmissionPath::parse(ID.as_bytes()).unwrap();
        assert!(only.dims(m.schema()).iter().all(Option::is_none));
        assert!(SubmissionPath::parse(b"not-an-id/x").is_err());
        assert!(SubmissionPath::parse(format!("{ID}/a/b/c/d/e/f").as_bytes()).is_err());
        assert!(SubmissionPath::parse(b"\xff").is_err());
    }

    #[test]
    fn days_and_writers() {
        let mut d = String::new();
        utc_day(0, &mut d);
        assert_eq!(d, "19700101");
        utc_day(1_381_449_599_999, &mut d); // 2013-10-10T23:59:59.999Z
        assert_eq!(d, "20131010");
        utc_day(1_381_449_600_000, &mut d);
        assert_eq!(d, "20131011");
        assert_eq!(
            writer_of("telemetry.log.v2.web-1.20131011120000.000042"),
            Some("web-1")
        );
        for bad in [
            "telemetry.log.v2.Web.20131011120000.000042",
            "telemetry.log.v2.web.2013101112000.000042",
            "part-m-00000",
            "data/telemetry/2013/10/11",
        ] {
            assert_eq!(writer_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn one_claim_wins_and_stale_claims_come_back() {
        let d = tempfile::tempdir().unwrap();
        let spool = Spool::open(d.path(), Duration::from_secs(3600)).unwrap();
        for n in ["b", "a"] {
            std::fs::write(d.path().join(READY).join(n), n).unwrap();
        }
        let other = Spool::open(d.path(), Duration::from_secs(3600)).unwrap();
        assert_eq!(spool.claim().unwrap().as_deref(), Some("a"));
        assert_eq!(other.claim().unwrap().as_deref(), Some("b"));
        assert_eq!(spool.claim().unwrap(), None);
        assert_eq!(spool.release_stale().unwrap(), 0, "fresh claims stay");
        let eager = Spool::open(d.path(), Duration::ZERO).unwrap();
        assert_eq!(eager.release_stale().unwrap(), 2);
        assert_eq!(spool.backlog().unwrap(), (2, 2));
        assert_eq!(spool.claim().unwrap().as_deref(), Some("a"));
        spool.done("a").unwrap();
        spool.done("a").unwrap();
        assert_eq!(spool.backlog().unwrap(), (1, 1));
    }
}
