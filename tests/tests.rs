//! Integration tests: one binary so the suite links once. They run the real
//! `backfill` binary on files written to temporary directories, and the sources
//! against real servers (`hdfs`: run through `scripts/test-servers.sh --hdfs`).

mod common;
mod export;
mod hdfs;
