//! `backfill status` and `backfill clean`: read a destination's bookkeeping to say how
//! far each job is, and remove what an abandoned job left staged. Neither touches a
//! published object.

use super::lease::{self, Holder, Leases, RunId, Taken};
use super::manifest::{
    job_key, now_secs, runs_prefix, JobRecord, RunRecord, UnitManifest, BOOKKEEPING,
};
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
    /// `running` (a run of the job is alive), `incomplete` (no run is alive and
    /// work is left: units staged, a run that died, bytes not yet read) or `done`.
    pub state: String,
    /// The live runs of the job: host, pid, start, last heartbeat, days.
    pub live_runs: Vec<Holder>,
    /// Runs that stopped renewing their lease without finishing (crashed, killed).
    pub dead_runs: Vec<Holder>,
    /// Folders being exported right now, with the run that holds each.
    pub folders_in_flight: Vec<Holder>,
}

/// Status of every job in `dest` (or only `only`); staged units are counted in
/// `dest` and in `staging` (a local staging folder) when given.
pub fn status(
    dest: &dyn Store,
    staging: Option<&dyn Store>,
    only: Option<&str>,
) -> anyhow::Result<Vec<JobStatus>> {
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
        for store in std::iter::once(dest).chain(staging) {
            for m in store.list(&format!("{BOOKKEEPING}/staging/{}/", rec.job))? {
                staged_bytes += m.size;
                if m.key.ends_with(".json") {
                    if let Some(b) = store.get(&m.key)? {
                        if serde_json::from_slice::<UnitManifest>(&b).is_ok() {
                            units_staged += 1;
                        }
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
        let now = now_secs();
        let (live_runs, dead_runs): (Vec<Holder>, Vec<Holder>) = lease::runs(dest, &rec.job)?
            .into_iter()
            .partition(|h| h.live_at(now));
        let folders_in_flight = lease::live_folder_leases(dest, &rec.job)?;
        let planned = latest.map_or(0, |r| r.bytes);
        let state = if !live_runs.is_empty() {
            "running"
        } else if units_staged > 0 || !dead_runs.is_empty() || report.stats.bytes_in < planned {
            "incomplete"
        } else {
            "done"
        };
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
            state: state.to_string(),
            live_runs,
            dead_runs,
            folders_in_flight,
        });
    }
    Ok(out)
}

/// What `clean` removed from one job (or would remove, with `--dry-run`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Cleaned {
    /// The job.
    pub job: String,
    /// Staged pieces and unit checkpoints.
    pub staged_objects: u64,
    /// Their bytes.
    pub staged_bytes: u64,
    /// Incomplete writes of dead writers.
    pub incomplete: u64,
    /// Leases of runs that are gone.
    pub expired_leases: u64,
    /// Why nothing was removed, when a run of the job is alive (or sweeping).
    pub refused: Option<String>,
}

/// Removes the staging, incomplete writes and expired leases of `job` (every job
/// when `None`). The published objects, manifests and error output stay. A job with
/// a live run is left alone (`refused` says which run): its staging may be in use.
/// `staging` is where the job staged, when not in `dest` (`--staging-dir`).
pub fn clean(
    dest: &dyn Store,
    staging: Option<&dyn Store>,
    job: Option<&str>,
    dry_run: bool,
) -> anyhow::Result<Vec<Cleaned>> {
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
    let staging = staging.unwrap_or(dest);
    let mut out = Vec::new();
    for j in jobs {
        let leases = Leases::new(
            dest,
            &j,
            RunId::this_process(),
            lease::DEFAULT_TTL,
            "clean".into(),
        );
        let mut c = Cleaned {
            job: j.clone(),
            ..Default::default()
        };
        // Under the job's sweep lease, like an export's own sweep, and only when no
        // run of the job is alive.
        if !dry_run {
            if let Taken::Busy(h) = leases.try_take(lease::SWEEP, "clean")? {
                c.refused = Some(format!("{} is sweeping it", h.describe(now_secs())));
                out.push(c);
                continue;
            }
        }
        let result = (|| -> anyhow::Result<()> {
            let live = leases.other_live_runs()?;
            if !live.is_empty() {
                let now = now_secs();
                let who: Vec<String> = live.iter().map(|h| h.describe(now)).collect();
                c.refused = Some(format!(
                    "a run of it is alive: {} (stop it, or wait until its lease expires)",
                    who.join("; ")
                ));
                return Ok(());
            }
            for m in staging.list(&format!("{BOOKKEEPING}/staging/{j}/"))? {
                if !dry_run {
                    staging.delete(&m.key)?;
                }
                c.staged_objects += 1;
                c.staged_bytes += m.size;
            }
            let ours = |key: &str| owned_by(key, &j) || bookkeeping_of(key, &j);
            c.incomplete = dest.remove_incomplete(&ours, dry_run)?;
            if !std::ptr::addr_eq(dest, staging) {
                c.incomplete += staging.remove_incomplete(&ours, dry_run)?;
            }
            if !dry_run {
                c.expired_leases = leases.remove_expired()?;
            }
            Ok(())
        })();
        leases.release_all();
        result?;
        out.push(c);
    }
    Ok(out)
}
