//! The pure core: legacy and live readers, mappings, validation and conversion.
//!
//! Nothing in here touches the file system, the network or a clock: every function
//! works on bytes, readers or parsed mappings, so each rule is testable with plain
//! values and every command (export, verify, reprocess, ingest) shares one behaviour.

pub mod body;
pub mod convert;
pub mod expr;
pub mod histdefs;
pub mod json;
pub mod mappings;
pub mod newstore;
pub mod rawlog;
pub mod reason;
pub mod rowkey;
pub mod schema;
pub mod seqfile;
pub mod textdump;
