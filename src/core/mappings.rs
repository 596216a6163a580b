//! The mappings: the data that drives conversion, loaded once and versioned.
//!
//! This module owns the shape of a mappings folder (SPEC §4, §6): the storage schema
//! `telemetry_schema.json`, the definitions index `histograms/index.json` (revision →
//! definitions file), the definitions files themselves, and `revisions.json`, the
//! table resolving payloads without `info.revision`. It reads them through the
//! [`MappingFiles`] seam (so it stays pure: the folder compiled into the binary, or
//! `mappings_dir::DirMappings` outside the core), checks them, computes every
//! definitions file's buckets once, and names the whole content with a hash
//! ([`Mappings::version`]) so every output can say which mappings produced it.

use thiserror::Error;

/// An error loading mappings, a schema, a filter or a definitions file. Every
/// message begins with the file it is about.
#[derive(Debug, Error)]
pub enum MappingsError {
    /// The file is not valid JSON.
    #[error("{file}: not valid json: {message}")]
    Json {
        /// The file.
        file: String,
        /// What the JSON parser said.
        message: String,
    },
    /// The file is JSON but not of the expected shape, or holds a bad value.
    #[error("{file}: {reason}")]
    Invalid {
        /// The file.
        file: String,
        /// What is wrong, naming the bad value.
        reason: String,
    },
    /// A file the mappings need is absent.
    #[error("{file}: not found")]
    NotFound {
        /// The file.
        file: String,
    },
    /// A file could not be read (outside the core: `mappings_dir`).
    #[error("{path}: cannot read")]
    Io {
        /// The file or folder.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}
