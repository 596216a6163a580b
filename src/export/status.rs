//! `backfill status` and `backfill clean`: read a destination's bookkeeping to say how
//! far each job is, and remove what an abandoned job left staged. Neither touches a
//! published object.

use super::manifest::{job_key, runs_prefix, JobRecord, RunRecord, UnitManifest, BOOKKEEPING};
use super::{bookkeeping_of, owned_by, History, Report};
use crate::store::Store;
use anyhow::Context as _;
use serde::Serialize;

/// How far one job is.
#[derive(Clone, Debug, Serialize)]
pub struct JobStatus {
    /// Job id.
    pub job: String,
    /// Its name.
    pub job_name: String,
    /// Its source.
    pub source: String,
    /// Folders committed.
    pub groups_done: u64,
    /// Folders the latest run selected.
    pub groups_planned: u64,
    /// Units staged and not yet assembled (checkpoints of a run in progress or
    /// interrupted).
    pub units_staged: u64,
    /// Units the latest run selected.
    pub units_planned: u64,
    /// Records and bytes so far.
    pub records_in: u64,
    /// Records written.
    pub records_out: u64,
    /// Records rejected.
    pub records_error: u64,
    /// Source bytes committed.
    pub bytes_in: u64,
    /// Source bytes the latest run selected.
    pub bytes_planned: u64,
    /// Bytes staged now.
    pub staged_bytes: u64,
    /// Objects written.
    pub objects: u64,
    /// Last commit (seconds since the epoch), 0 when none.
    pub last_update: u64,
    /// Seconds left at the rate observed since the latest run started, when known.
    pub eta_seconds: Option<u64>,
}

/// Status of every job in `dest` (or only `only`).
pub fn status(dest: &dyn Store, only: Option<&str>) -> anyhow::Result<Vec<JobStatus>> {
    let mut out = Vec::new();
    for meta in dest.list(&format!("{BOOKKEEPING}/jobs/"))? {
        let Some(bytes) = dest.get(&meta.key)? else {
            continue;
        };
        let rec: JobRecord =
            serde_json::from_slice(&bytes).with_context(|| format!("reading {}", meta.key))?;
        if only.is_some_and(|j| j != rec.job) {
            continue;
        }
        let history = History::load(dest, &rec.job)?;
        let mut report = Report::default();
        history.totals(&mut report);
        let commits: Vec<(u64, u64)> = history
            .by_dir
            .values()
            .flatten()
            .map(|s| (s.committed_at, s.stats.bytes_in))
            .collect();
        let last_update = commits.iter().map(|c| c.0).max().unwrap_or(0);
        let runs: Vec<RunRecord> = dest
            .list(&runs_prefix(&rec.job))?
            .iter()
            .filter_map(|m| dest.get(&m.key).ok().flatten())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect();
        let latest = runs.iter().max_by_key(|r| r.started_at);
        let (mut units_staged, mut staged_bytes) = (0, 0);
        for m in dest.list(&format!("{BOOKKEEPING}/staging/{}/", rec.job))? {
            staged_bytes += m.size;
            if m.key.ends_with(".json") {
                if let Some(b) = dest.get(&m.key)? {
                    if serde_json::from_slice::<UnitManifest>(&b).is_ok() {
                        units_staged += 1;
                    }
                }
            }
        }
        let eta_seconds = latest.and_then(|r| {
            let done: u64 = commits
                .iter()
                .filter(|(t, _)| *t >= r.started_at)
                .map(|(_, b)| b)
                .sum();
            let elapsed = last_update.saturating_sub(r.started_at);
            let left = r.bytes.saturating_sub(report.stats.bytes_in);
            (done > 0 && elapsed > 0).then(|| left * elapsed / done)
        });
        out.push(JobStatus {
            job: rec.job.clone(),
            job_name: rec.spec.job_name.clone(),
            source: rec.source.clone(),
            groups_done: report.groups,
            groups_planned: latest.map_or(0, |r| r.folders),
            units_staged,
            units_planned: latest.map_or(0, |r| r.units),
            records_in: report.stats.records_in,
            records_out: report.stats.records_out,
            records_error: report.stats.records_error,
            bytes_in: report.stats.bytes_in,
            bytes_planned: latest.map_or(0, |r| r.bytes),
            staged_bytes,
            objects: report.objects,
            last_update,
            eta_seconds,
        });
    }
    Ok(out)
}

/// What `clean` removed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Cleaned {
    /// Staged pieces and unit checkpoints.
    pub staged_objects: u64,
    /// Their bytes.
    pub staged_bytes: u64,
    /// Incomplete writes of dead writers.
    pub incomplete: u64,
}

/// Removes the staging and incomplete writes of `job` (every job when `None`); the
/// published objects, manifests and error output of committed folders stay.
pub fn clean(dest: &dyn Store, job: Option<&str>) -> anyhow::Result<Cleaned> {
    let mut c = Cleaned::default();
    let prefix = match job {
        Some(j) => format!("{BOOKKEEPING}/staging/{j}/"),
        None => format!("{BOOKKEEPING}/staging/"),
    };
    for m in dest.list(&prefix)? {
        dest.delete(&m.key)?;
        c.staged_objects += 1;
        c.staged_bytes += m.size;
    }
    let jobs: Vec<String> = match job {
        Some(j) => {
            anyhow::ensure!(
                dest.get(&job_key(j))?.is_some(),
                "{} holds no job {j}",
                dest.describe()
            );
            vec![j.to_string()]
        }
        None => dest
            .list(&format!("{BOOKKEEPING}/jobs/"))?
            .iter()
            .filter_map(|m| {
                m.key
                    .rsplit('/')
                    .next()?
                    .strip_suffix(".json")
                    .map(str::to_string)
            })
            .collect(),
    };
    c.incomplete = dest.remove_incomplete(&|key| {
        jobs.iter()
            .any(|j| owned_by(key, j) || bookkeeping_of(key, j))
    })?;
    Ok(c)
}
