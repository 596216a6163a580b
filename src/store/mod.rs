//! Destination stores: where converted objects and the tool's bookkeeping go.
//!
//! One trait, one module per backend (the local directory is the embedded default;
//! S3 comes beside it). Every write is atomic: an object appears under its final key
//! complete or not at all, so a crash never leaves a half-written object behind a
//! name a consumer would read. Stores know nothing of records or partitions.

#[doc(hidden)]
pub mod contract;
pub mod local;
pub mod s3;

use std::io::{self, Read, Write};

/// What a listing returns for one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The key, relative to the store's root, `/`-separated.
    pub key: String,
    /// Size in bytes as stored.
    pub size: u64,
}

/// A streaming upload that publishes only on [`ObjectWriter::commit`]; dropping it
/// without committing abandons the upload and leaves nothing under the key.
pub trait ObjectWriter: Write + Send {
    /// Makes the object visible under its key, durably; returns its size in bytes.
    fn commit(self: Box<Self>) -> io::Result<u64>;
    /// Finishes the bytes without necessarily publishing them: what is returned
    /// still has to go through [`Store::publish`], which makes a whole batch visible
    /// at once (one durability barrier for many objects instead of one each).
    /// Stores whose commit is atomic and cheap publish here and return `None`.
    fn finish(self: Box<Self>) -> io::Result<(u64, Option<Pending>)> {
        self.commit().map(|n| (n, None))
    }
}

/// A finished object not yet visible under its key; dropping it abandons it.
pub type Pending = local::PendingRename;

/// A place objects are written to and read back from.
pub trait Store: Send + Sync {
    /// A URL-like description for messages (never with credentials).
    fn describe(&self) -> String;
    /// Writes a whole object atomically.
    fn put(&self, key: &str, bytes: &[u8]) -> io::Result<()> {
        let mut w = self.create(key)?;
        w.write_all(bytes)?;
        w.commit().map(|_| ())
    }
    /// Writes a whole object only when no object has the key: `Ok(true)` when this
    /// call created it, `Ok(false)` when one was there. Atomic against every other
    /// writer, on any machine (S3: a conditional PUT with `If-None-Match: *`; local
    /// disk: link(2) of a finished temporary file): what leases are built on.
    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> io::Result<bool>;
    /// When the object was last written, in seconds since the epoch; `None` when it
    /// does not exist.
    fn modified(&self, key: &str) -> io::Result<Option<u64>>;
    /// Starts a streaming atomic write.
    fn create(&self, key: &str) -> io::Result<Box<dyn ObjectWriter>>;
    /// Reads a whole object, `None` when it does not exist.
    fn get(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        match self.open(key) {
            Ok(mut r) => {
                let mut v = Vec::new();
                r.read_to_end(&mut v)?;
                Ok(Some(v))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
    /// Opens an object for streaming reads.
    fn open(&self, key: &str) -> io::Result<Box<dyn Read + Send>>;
    /// Reads `len` bytes at `start`; a short object is an error.
    fn read_range(&self, key: &str, start: u64, len: u64) -> io::Result<Vec<u8>>;
    /// [`Store::read_range`] into `buf` (replacing its contents), so a caller
    /// reading many ranges can reuse one buffer.
    fn read_range_into(
        &self,
        key: &str,
        start: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> io::Result<()> {
        *buf = self.read_range(key, start, len)?;
        Ok(())
    }
    /// Every object whose key starts with `prefix`, sorted by key (in UTF-8 byte
    /// order, which S3 lists in already and S3-compatible stores might not).
    fn list(&self, prefix: &str) -> io::Result<Vec<ObjectMeta>> {
        let mut out = Vec::new();
        self.list_each(prefix, &mut |m| {
            out.push(m);
            Ok(())
        })?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
    /// Calls `f` with every object whose key starts with `prefix`, in no particular
    /// order, as the listing arrives: for whole-store scans, whose result would not
    /// fit in memory in a bucket of years of data. `f` must not change the store.
    fn list_each(
        &self,
        prefix: &str,
        f: &mut dyn FnMut(ObjectMeta) -> io::Result<()>,
    ) -> io::Result<()>;
    /// Deletes an object; deleting a missing object is not an error.
    fn delete(&self, key: &str) -> io::Result<()>;
    /// Whether the store is on this machine's disk (reads and writes cost no
    /// network).
    fn is_local(&self) -> bool {
        false
    }
    /// Makes finished objects visible, durably: every byte of every object is on
    /// stable storage before any of them appears under its key.
    fn publish(&self, pending: Vec<Pending>) -> io::Result<()> {
        for p in pending {
            p.rename()?;
        }
        Ok(())
    }
    /// Removes writes that were started and never completed (left by a crash) for
    /// keys `owned` accepts; returns how many. Writes still in progress elsewhere are
    /// left alone. With `dry_run` it only counts them.
    fn remove_incomplete(&self, owned: &dyn Fn(&str) -> bool, dry_run: bool) -> io::Result<u64> {
        let _ = (owned, dry_run);
        Ok(0)
    }
}

/// Checks that a key cannot escape the store's root: relative, `/`-separated, no
/// empty, `.` or `..` segment, no NUL or backslash.
pub fn check_key(key: &str) -> io::Result<()> {
    let bad = key.is_empty()
        || key.contains(['\0', '\\'])
        || key
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..");
    if bad {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing object key {key:?}: it could escape the destination"),
        ))
    } else {
        Ok(())
    }
}
