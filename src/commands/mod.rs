//! One module per command: each owns its run function and its printing. The command
//! line (`cli.rs`) defines the arguments and calls these; nothing below this layer
//! (core, sources, stores, the export pipeline) depends on it.
//!
//! Exit codes are the same for every command (SPEC §6): 0 done; 1 operational
//! failure; 2 usage error; 3 done but some input could not be read; 4 parity
//! violated; 130 stopped by a signal after its checkpoint.

pub mod clean;
pub mod errors;
pub mod export;
pub mod options;
pub mod queue;
pub mod reprocess;
pub mod status;
pub mod verify;

use crate::core::mappings::Mappings;
use crate::mappings_dir::DirMappings;
use crate::source::hdfs::{HdfsOptions, HdfsSource};
use crate::source::{local::LocalSource, Source};
use crate::store::s3::{S3Options, S3Store};
use crate::store::{local::LocalStore, Store};
use anyhow::{bail, Context as _};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Exit code: done.
pub const EXIT_OK: i32 = 0;
/// Exit code: operational failure.
pub const EXIT_FAILURE: i32 = 1;
/// Exit code: usage error.
pub const EXIT_USAGE: i32 = 2;
/// Exit code: done, but some input could not be read.
pub const EXIT_UNREADABLE: i32 = 3;
/// Exit code: parity violated (`verify`).
pub const EXIT_PARITY: i32 = 4;
/// Exit code: stopped by a signal after writing the checkpoint.
pub const EXIT_SIGNAL: i32 = 130;

/// A local path from a path or `file://` URL; other schemes are named in the error.
pub fn local_path(arg: &str, what: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = arg.strip_prefix("file://") {
        return Ok(PathBuf::from(p));
    }
    if let Some((scheme, _)) = arg.split_once("://") {
        bail!("{what} {arg:?}: {scheme}:// is not supported by this build (local directories and file:// only)");
    }
    Ok(PathBuf::from(arg))
}

/// Opens a destination: `s3://…` or a local directory. `metadata` goes on every
/// object written (S3).
pub fn open_store(
    url: &str,
    s3: &S3Options,
    metadata: BTreeMap<String, String>,
) -> anyhow::Result<Box<dyn Store>> {
    if url.starts_with("s3://") {
        let store =
            S3Store::from_url(url, s3, metadata).with_context(|| format!("destination {url}"))?;
        return Ok(Box::new(store));
    }
    let path = local_path(url, "destination")?;
    Ok(Box::new(LocalStore::new(&path).with_context(|| {
        format!("destination {}", path.display())
    })?))
}

/// Opens an existing destination for reading its bookkeeping: a local directory that
/// does not exist is an error rather than an empty store.
pub fn open_existing(url: &str, s3: &S3Options) -> anyhow::Result<Box<dyn Store>> {
    if !url.starts_with("s3://") {
        let path = local_path(url, "destination")?;
        anyhow::ensure!(
            path.is_dir(),
            "destination {} does not exist",
            path.display()
        );
    }
    open_store(url, s3, BTreeMap::new())
}

/// Opens a legacy source: `hdfs://…`, `viewfs://…` or a local path.
pub fn open_source(url: &str, hdfs: &HdfsOptions) -> anyhow::Result<Box<dyn Source>> {
    if url.starts_with("hdfs://") || url.starts_with("viewfs://") {
        return Ok(Box::new(
            HdfsSource::from_url(url, hdfs).with_context(|| format!("source {url}"))?,
        ));
    }
    let path = local_path(url, "source")?;
    Ok(Box::new(
        LocalSource::new(&path).with_context(|| format!("source {}", path.display()))?,
    ))
}

/// The mappings: the folder given with `--mappings`, else the built-in ones.
pub fn load_mappings(dir: Option<&Path>) -> anyhow::Result<Arc<Mappings>> {
    let m = match dir {
        Some(d) => Mappings::load(&DirMappings::new(d))
            .with_context(|| format!("loading mappings from {}", d.display()))?,
        None => Mappings::embedded()
            .map_err(|e| anyhow::anyhow!("built-in mappings: {e}"))?
            .clone(),
    };
    for w in m.warnings() {
        tracing::warn!(warning = %w, "mappings");
    }
    Ok(Arc::new(m))
}

/// Writes `value` as pretty JSON with a final newline to `path` (reports, plans).
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    std::fs::write(path, bytes).with_context(|| format!("writing report {}", path.display()))
}

/// `backfill --version`: the tool's and the mappings' versions.
pub fn version(mappings: Option<&Path>) -> anyhow::Result<i32> {
    let m = load_mappings(mappings)?;
    println!(
        "backfill {} (mappings {})",
        env!("CARGO_PKG_VERSION"),
        m.version()
    );
    Ok(EXIT_OK)
}
