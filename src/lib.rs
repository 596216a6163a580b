//! backfill: move historic Firefox Telemetry from the legacy Hadoop store into the
//! partitioned S3 layout, converted, with proof that nothing was lost.
//!
//! The crate is layered: [`core`] is pure (bytes in, records and verdicts out) and is
//! shared by every command; the I/O shells (sources, sinks, the export pipeline, the
//! CLI) sit around it.
#![warn(missing_docs)]

pub mod cli;
pub mod commands;
pub mod core;
pub mod export;
pub mod failpoint;
pub mod gen;
pub mod ingest;
pub mod mappings_dir;
pub mod queue;
pub mod reprocess;
pub mod size;
pub mod source;
pub mod store;
pub mod verify;
