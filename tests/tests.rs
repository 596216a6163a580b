//! Integration tests: one binary so the suite links once. They run the real
//! `backfill` binary on files written to temporary directories, and the HDFS and S3
//! backends and the SQS queue against the servers `scripts/test-servers.sh` starts
//! (real HDFS and S3; moto for SQS, which has no real local counterpart).

mod common;
mod concurrency;
mod e2e;
mod export;
mod hdfs;
mod reprocess;
mod resume;
mod s3;
mod sqs;
mod verify;
