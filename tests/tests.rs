//! Integration tests: one binary so the suite links once. They run the real
//! `backfill` binary on files written to temporary directories, and the HDFS and S3
//! backends against the real servers `scripts/test-servers.sh` starts.

mod common;
mod concurrency;
mod e2e;
mod export;
mod hdfs;
mod resume;
mod s3;
mod verify;
