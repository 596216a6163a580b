//! Legacy sources: where the historic files are read from (a local directory or
//! file, or HDFS). A source lists files folder by folder, in a fixed order, and
//! opens one file for seekable reads; it knows nothing of formats or records.

#[doc(hidden)]
pub mod contract;
pub mod hdfs;
pub mod local;

use std::io::{self, Read, Seek};

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
}

/// Whether a listing skips this name (SPEC §6).
pub fn is_hidden(name: &str) -> bool {
    name.starts_with('_') || name.starts_with('.')
}
