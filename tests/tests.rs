//! Integration tests: one binary so the suite links once. They run the real
//! `backfill` binary on files written to temporary directories.

mod common;
mod export;
mod resume;
