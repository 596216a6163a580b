//! Integration tests: one binary so the suite links once. They run the real
//! `backfill` binary on files written to temporary directories; the S3 ones talk to
//! a real SeaweedFS started by `scripts/test-servers.sh --s3`.

mod common;
mod export;
mod s3;
