//! `backfill errors`: the error output of a destination, counted by reason, or the
//! records of one reason.

use super::{open_existing, EXIT_OK};
use crate::export::errors::ErrorRecord;
use crate::export::manifest::BOOKKEEPING;
use crate::store::s3::S3Options;
use anyhow::Context as _;
use clap::Args;
use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};

/// `errors` arguments.
#[derive(Args, Debug)]
pub struct ErrorsArgs {
    /// Destination of an export (a path, `file://…` or `s3://bucket/prefix`).
    pub dest: String,
    /// Print the records of this reason (one JSON line each, original bytes in base64).
    #[arg(long)]
    pub reason: Option<String>,
    /// Only this job id.
    #[arg(long)]
    pub job: Option<String>,
    /// Print at most N records.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// S3 settings, when DEST is `s3://…`.
    #[command(flatten)]
    pub s3: S3Options,
}

/// Runs `errors`; returns the exit code.
pub fn run(a: &ErrorsArgs) -> anyhow::Result<i32> {
    let dest = open_existing(&a.dest, &a.s3)?;
    let prefix = match &a.job {
        Some(j) => format!("{BOOKKEEPING}/errors/{j}/"),
        None => format!("{BOOKKEEPING}/errors/"),
    };
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut shown = 0;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    for meta in dest.list(&prefix)? {
        let r = dest.open(&meta.key)?;
        let r = crate::core::newstore::open_object(r)
            .with_context(|| format!("opening {}", meta.key))?;
        for (n, line) in r.lines().enumerate() {
            let line = line.with_context(|| format!("reading {}", meta.key))?;
            let rec: ErrorRecord = serde_json::from_str(&line)
                .with_context(|| format!("{} line {}: not an error record", meta.key, n + 1))?;
            *counts.entry(rec.reason.clone()).or_default() += 1;
            if a.reason.as_deref() == Some(rec.reason.as_str()) && shown < a.limit {
                writeln!(out, "{line}")?;
                shown += 1;
            }
        }
    }
    if a.reason.is_none() {
        let total: u64 = counts.values().sum();
        writeln!(out, "{total} rejected records")?;
        for (k, v) in &counts {
            writeln!(out, "{v:>12}  {k}")?;
        }
    } else if shown == a.limit
        && counts
            .get(a.reason.as_deref().unwrap_or(""))
            .copied()
            .unwrap_or(0)
            > shown as u64
    {
        eprintln!("(first {shown} shown; --limit N for more)");
    }
    Ok(EXIT_OK)
}
