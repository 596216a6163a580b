//! Legacy sources: where the historic files are read from (a local directory or
//! file, or HDFS). A source lists files folder by folder, in a fixed order, and
//! opens one file for seekable reads; it knows nothing of formats or records.

#[doc(hidden)]
pub mod contract;
pub mod hdfs;
pub mod local;

use std::io::{self, Read, Seek, SeekFrom};

/// An I/O failure of the source itself, not of the bytes it holds: a file that could
/// not be opened, read or sought, a server not reached after its retries. Whatever
/// reads on top of a source (decompression, the SequenceFile reader) passes such an
/// error up unchanged inside its own, so a unit can tell "try again later" (the unit
/// fails, nothing is checkpointed, a rerun reads it) from "these bytes cannot be
/// decoded" (recorded as `unreadable`, SPEC §6).
#[derive(Debug)]
pub struct SourceFault(pub io::Error);

impl std::fmt::Display for SourceFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SourceFault {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Content a source could deliver but that is damaged at the source (an HDFS block
/// whose every replica fails its checksum): unreadable, not a passing fault.
#[derive(Debug)]
pub struct CorruptSource(pub String);

impl std::fmt::Display for CorruptSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CorruptSource {}

/// Marks `e` as a fault of the source (see [`SourceFault`]), unless it says the
/// content is corrupt or is marked already.
pub fn fault(e: io::Error) -> io::Error {
    let marked = e
        .get_ref()
        .is_some_and(|i| i.is::<SourceFault>() || i.is::<CorruptSource>());
    if marked {
        e
    } else {
        io::Error::new(e.kind(), SourceFault(e))
    }
}

/// Whether `e`, or any error it wraps, is a [`SourceFault`].
pub fn is_fault(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(x) = cur {
        if x.is::<SourceFault>() {
            return true;
        }
        if let Some(io) = x.downcast_ref::<io::Error>() {
            if io.get_ref().is_some_and(|i| i.is::<SourceFault>()) {
                return true;
            }
        }
        cur = x.source();
    }
    false
}

/// Whether `e` says the content is damaged at the source ([`CorruptSource`]).
pub fn is_corrupt(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<CorruptSource>())
}

/// A reader whose every error is marked as a [`fault`] of the source.
pub struct Faulting<R>(pub R);

impl<R: Read> Read for Faulting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(fault)
    }
}

impl<R: Seek> Seek for Faulting<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.0.seek(pos).map_err(fault)
    }
}

/// A seekable byte stream (files are split at byte offsets).
pub trait ReadSeek: Read + Seek + Send {}
impl<T: Read + Seek + Send> ReadSeek for T {}

/// One file of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// Path relative to the source root, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
}

/// What a walk reports, folder by folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalkItem {
    /// The files directly inside one folder, sorted by name (never empty).
    Folder {
        /// The folder, relative to the root (`""` for the root itself).
        dir: String,
        /// Its files.
        files: Vec<FileEntry>,
    },
    /// A folder or file that could not be listed.
    Unreadable {
        /// Relative path.
        path: String,
        /// Why.
        error: String,
    },
}

/// A place legacy files are read from.
pub trait Source: Send + Sync {
    /// A URL-like description for messages (never with credentials).
    fn describe(&self) -> String;
    /// Walks every file under the root: each folder's files (sorted by name) before
    /// its sub-folders (sorted by name). Names starting with `_` or `.` are skipped
    /// at every level (Hadoop's `_SUCCESS`, `_logs/`, `.crc`). `visit` returns
    /// `false` to stop early. Memory holds one folder's entries per level, never
    /// the whole tree.
    fn walk(&self, visit: &mut dyn FnMut(WalkItem) -> bool) -> io::Result<()>;
    /// Opens a file of the listing.
    fn open(&self, path: &str) -> io::Result<Box<dyn ReadSeek>>;
    /// What [`Source::walk`] gives for folder `dir` (relative) itself: its files, and
    /// entries of it that could not be listed; nothing of its sub-folders. For a
    /// worker given one folder to do, without walking the whole source.
    fn list_folder(&self, dir: &str) -> io::Result<Vec<WalkItem>>;
}

/// Keeps, of what a walk from folder `dir` gave, the items of `dir` itself.
pub fn items_of_folder(dir: &str, items: Vec<WalkItem>) -> Vec<WalkItem> {
    items
        .into_iter()
        .filter(|i| match i {
            WalkItem::Folder { dir: d, .. } => d == dir,
            WalkItem::Unreadable { path, .. } => {
                path == dir || path.rsplit_once('/').map_or("", |(p, _)| p) == dir
            }
        })
        .collect()
}

/// Whether a listing skips this name (SPEC §6).
pub fn is_hidden(name: &str) -> bool {
    name.starts_with('_') || name.starts_with('.')
}
