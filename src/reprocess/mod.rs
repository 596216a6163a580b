//! `reprocess`: a store of the new layout read again through the same pipeline as
//! `export` (units, staging, assembly, checkpoints, leases), after a schema or
//! mapping change, without the legacy cluster.
//!
//! What differs from an export is only where records come from. [`StoreSource`]
//! presents a store as a [`Source`]: one folder per submission day
//! (`yyyy/MM/dd`, the day in the objects' names) holding that day's objects of the
//! layout read, then one folder per job whose error output is read (`--errors`).
//! The unit reader ([`crate::export::unit`]) reads an object's lines (or an error
//! output's records) instead of legacy records, and the converter's
//! [`convert_stored`](crate::core::convert::Converter::convert_stored) judges them.
//! A day's folder is assembled like a legacy day's: so each new partition gets
//! `ceil(bytes / --target-size)` objects, whatever the number of objects read.
//!
//! What is read: objects named `….<yyyyMMdd>.v<M>.log.<suffix>` (`.xz`, or the old
//! server's `.lzma`) outside `_backfill/`, M being the source layout (2). An object
//! carrying the id of a job recorded in the store is read only if a committed
//! manifest of that job lists it (a dead run's uncommitted objects are not data);
//! others (the old server's, the live ingest's) are read as they are. With
//! `--errors`, the error output of the committed groups of every job that wrote
//! layout M.

use crate::export::manifest::{
    errors_prefix, layout_of, manifests_prefix, GroupManifest, JobRecord, ReprocessSpec,
    BOOKKEEPING,
};
use crate::export::plan::DayWindow;
use crate::source::{FileEntry, ReadSeek, Source, WalkItem};
use crate::store::Store;
use std::collections::{BTreeMap, HashSet};
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::OnceLock;

/// An object of the layout: what its name says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredObject<'k> {
    /// The partition it belongs to, through `.v<M>.log`.
    pub partition: &'k str,
    /// The submission day, `yyyyMMdd`.
    pub day: &'k str,
}

/// Reads an object key of layout `layout`: `<dims…>/<buildid>.<yyyyMMdd>.v<layout>.log.<suffix>`
/// with a non-empty suffix ending in `.xz` or `.lzma`. Bookkeeping is never an object.
pub fn parse_object_key(key: &str, layout: u32) -> Option<StoredObject<'_>> {
    if key.starts_with(&format!("{BOOKKEEPING}/")) {
        return None;
    }
    let marker = format!(".v{layout}.log.");
    let at = key.rfind(&marker)?;
    let suffix = &key[at + marker.len()..];
    if suffix.contains('/') || !(suffix.ends_with(".xz") || suffix.ends_with(".lzma")) {
        return None;
    }
    let head = &key[..at];
    let day = head.get(head.len().checked_sub(8)?..)?;
    let dot = head
        .len()
        .checked_sub(9)
        .and_then(|i| head.as_bytes().get(i))?;
    if *dot != b'.' || !crate::core::rowkey::is_real_date(day.as_bytes()) {
        return None;
    }
    Some(StoredObject {
        partition: &key[..at + marker.len() - 1],
        day,
    })
}

/// The folder of a submission day `yyyyMMdd`: `yyyy/MM/dd`, as the legacy layout
/// names days, so the export's day selection applies unchanged.
pub fn day_folder(day: &str) -> String {
    format!("{}/{}/{}", &day[..4], &day[4..6], &day[6..8])
}

/// Whether a file of the listing is error output (its records are replayed).
pub fn is_error_output(path: &str) -> bool {
    path.starts_with(&format!("{BOOKKEEPING}/errors/"))
}

/// What a listing of the source found, by folder, in walk order.
#[derive(Debug, Default)]
struct Listing {
    folders: BTreeMap<String, Vec<FileEntry>>,
    /// Objects carrying a recorded job's id that no committed manifest lists.
    uncommitted: u64,
}

/// A store of the new layout, as a source of folders and files (see the module).
pub struct StoreSource {
    store: Box<dyn Store>,
    spec: ReprocessSpec,
    window: DayWindow,
    listing: OnceLock<Result<Listing, String>>,
}

impl StoreSource {
    /// A source reading `store` as `spec` says, the days of `window` only.
    pub fn new(store: Box<dyn Store>, spec: ReprocessSpec, window: DayWindow) -> Self {
        StoreSource {
            store,
            spec,
            window,
            listing: OnceLock::new(),
        }
    }

    /// The store read.
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// Objects carrying a recorded job's id that no committed manifest lists (a
    /// dead run's leftovers), which were not read.
    pub fn uncommitted(&self) -> io::Result<u64> {
        self.listing().map(|l| l.uncommitted)
    }

    /// The listing, made once (walk and survey share it).
    fn listing(&self) -> io::Result<&Listing> {
        self.listing
            .get_or_init(|| self.list().map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| io::Error::other(e.clone()))
    }

    fn list(&self) -> anyhow::Result<Listing> {
        let store = self.store.as_ref();
        let layout = self.spec.source_layout;
        // The jobs recorded in the store, and what each committed.
        let mut jobs: Vec<String> = Vec::new();
        let mut committed: HashSet<String> = HashSet::new();
        let mut listing = Listing::default();
        for meta in store.list(&format!("{BOOKKEEPING}/jobs/"))? {
            let Some(bytes) = store.get(&meta.key)? else {
                continue;
            };
            let rec: JobRecord = serde_json::from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", meta.key))?;
            let mut error_objects: HashSet<String> = HashSet::new();
            for m in store.list(&manifests_prefix(&rec.job))? {
                let Some(bytes) = store.get(&m.key)? else {
                    continue;
                };
                let g: GroupManifest = serde_json::from_slice(&bytes)
                    .map_err(|e| anyhow::anyhow!("reading {}: {e}", m.key))?;
                committed.extend(g.objects.into_iter().map(|o| o.key));
                error_objects.extend(g.errors.into_iter().map(|o| o.key));
            }
            if self.spec.errors && layout_of(&rec.spec) == layout {
                let dir = format!("{BOOKKEEPING}/errors/{}", rec.job);
                let mut files: Vec<FileEntry> = store
                    .list(&errors_prefix(&rec.job))?
                    .into_iter()
                    .filter(|o| error_objects.contains(&o.key))
                    .map(|o| FileEntry {
                        path: o.key,
                        size: o.size,
                    })
                    .collect();
                files.sort_by(|a, b| a.path.cmp(&b.path));
                if !files.is_empty() {
                    listing.folders.insert(dir, files);
                }
            }
            jobs.push(rec.job);
        }
        let owner = |key: &str| jobs.iter().any(|j| crate::export::owned_by(key, j));
        store.list_each("", &mut |o| {
            let Some(obj) = parse_object_key(&o.key, layout) else {
                return Ok(());
            };
            let day: u32 = obj.day.parse().expect("eight digits");
            if !self.window.contains(day) {
                return Ok(());
            }
            if owner(&o.key) && !committed.contains(&o.key) {
                listing.uncommitted += 1;
                return Ok(());
            }
            let folder = day_folder(obj.day);
            listing.folders.entry(folder).or_default().push(FileEntry {
                path: o.key,
                size: o.size,
            });
            Ok(())
        })?;
        for files in listing.folders.values_mut() {
            files.sort_by(|a, b| a.path.cmp(&b.path));
        }
        if listing.uncommitted > 0 {
            tracing::warn!(
                objects = listing.uncommitted,
                "objects of recorded jobs that no committed manifest lists (a dead run's leftovers) are not read"
            );
        }
        Ok(listing)
    }
}

impl Source for StoreSource {
    fn describe(&self) -> String {
        self.store.describe()
    }

    fn walk(&self, visit: &mut dyn FnMut(WalkItem) -> bool) -> io::Result<()> {
        for (dir, files) in &self.listing()?.folders {
            let item = WalkItem::Folder {
                dir: dir.clone(),
                files: files.clone(),
            };
            if !visit(item) {
                break;
            }
        }
        Ok(())
    }

    fn open(&self, path: &str) -> io::Result<Box<dyn ReadSeek>> {
        open_forward(self.store.as_ref(), path)
    }

    fn list_folder(&self, dir: &str) -> io::Result<Vec<WalkItem>> {
        Ok(self
            .listing()?
            .folders
            .get(dir)
            .map(|files| {
                vec![WalkItem::Folder {
                    dir: dir.to_string(),
                    files: files.clone(),
                }]
            })
            .unwrap_or_default())
    }
}

/// Opens an object of `store` as a source file read from its start (the new
/// layout's objects and raw logs are read whole, never split).
pub fn open_forward(store: &dyn Store, key: &str) -> io::Result<Box<dyn ReadSeek>> {
    Ok(Box::new(ForwardOnly {
        inner: store.open(key)?,
        pos: 0,
    }))
}

/// An object opened for reading from its start: stores stream objects, and the
/// new layout's objects are read whole, never split.
struct ForwardOnly {
    inner: Box<dyn Read + Send>,
    pos: u64,
}

impl Read for ForwardOnly {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for ForwardOnly {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        match to {
            SeekFrom::Start(p) if p == self.pos => Ok(p),
            SeekFrom::Current(0) => Ok(self.pos),
            _ => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "objects of a store are read from their start only",
            )),
        }
    }
}

/// A partition (or its last segment) without its layout suffix `.v<N>.log`;
/// `None` when it has none.
pub fn strip_layout(partition: &str) -> Option<&str> {
    let head = partition.strip_suffix(".log")?;
    let (stem, n) = head.rsplit_once(".v")?;
    (!n.is_empty() && n.bytes().all(|c| c.is_ascii_digit())).then_some(stem)
}

/// Renames a partition of layout 2 (what the converter routes to) into layout
/// `layout`: `….v2.log` → `….v<layout>.log`.
pub fn partition_in_layout(partition: &str, layout: u32, out: &mut String) {
    out.clear();
    match partition.strip_suffix(".v2.log") {
        Some(head) if layout != 2 => {
            out.push_str(head);
            out.push_str(&format!(".v{layout}.log"));
        }
        _ => out.push_str(partition),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_of_a_layout() {
        let k = "saved_session/Firefox/nightly/22.0a1/20130226031002.20131011.v2.log.abc123.lzma";
        let o = parse_object_key(k, 2).unwrap();
        assert_eq!(
            o.partition,
            "saved_session/Firefox/nightly/22.0a1/20130226031002.20131011.v2.log"
        );
        assert_eq!(o.day, "20131011");
        assert!(parse_object_key(k, 3).is_none());
        let e = "a/b/c/d/20130226031002.20131011.v2.log.d7b22151-0a1b2c3d-0.xz";
        assert_eq!(parse_object_key(e, 2).unwrap().day, "20131011");
        let v3 = "a/b/c/d/20130226031002.20131011.v3.log.d7b22151-0a1b2c3d-0.xz";
        assert!(parse_object_key(v3, 2).is_none());
        assert!(parse_object_key(v3, 3).is_some());
        for bad in [
            "_backfill/errors/x/20130226031002.20131011.v2.log.a.xz",
            "a/b/20130226031002.20131011.v2.log.",
            "a/b/20130226031002.20131011.v2.log.a.gz",
            "a/b/20130226031002.20130231.v2.log.a.xz",
            "a/b/2013022603100220131011.v2.log.a.xz",
            "20131011.v2.log.a.xz",
            "a/b/x.20131011.v2.log.a/b.xz",
        ] {
            assert!(parse_object_key(bad, 2).is_none(), "{bad}");
        }
    }

    #[test]
    fn layouts_rename_the_partition_only() {
        let mut s = String::new();
        partition_in_layout("a/b.20131011.v2.log", 3, &mut s);
        assert_eq!(s, "a/b.20131011.v3.log");
        partition_in_layout("a/b.20131011.v2.log", 2, &mut s);
        assert_eq!(s, "a/b.20131011.v2.log");
        assert_eq!(day_folder("20131011"), "2013/10/11");
        assert_eq!(strip_layout("a/b.20131011.v12.log"), Some("a/b.20131011"));
        assert_eq!(strip_layout("a/b.20131011.v.log"), None);
        assert_eq!(strip_layout("a/b.20131011.log"), None);
    }
}
