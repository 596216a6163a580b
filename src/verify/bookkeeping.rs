//! The default verification: bookkeeping against the store and the source listing.
//! No source record is read and no object decompressed; each object a manifest lists
//! is read once (streamed) for its sha256.
//!
//! Order: is the job there and finished (record, live leases, staging left, the
//! latest run's plan against what is committed)? Only then are the manifests judged
//! one by one against themselves, the store's listing (missing objects, orphans) and
//! the source's listing (every selected unit in exactly one committed group).

use super::{partition_day, FaultKind, Findings, Verification, VerifyOptions};
use crate::core::mappings::Mappings;
use crate::export::assemble::object_key;
use crate::export::manifest::{
    errors_prefix, job_key, manifests_prefix, runs_prefix, GroupManifest, JobRecord, ObjectEntry,
    RunRecord, Stats, UnitRef, BOOKKEEPING,
};
use crate::export::plan::{self, Selection};
use crate::export::{owned_by, slice_id, ExportOptions};
use crate::source::{FileEntry, Source, WalkItem};
use crate::store::Store;
use anyhow::Context as _;
use rayon::prelude::*;
use sha2::Digest;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Read;

/// The selected folders of the source and their files (a listing, nothing read).
#[derive(Default)]
pub struct SourceListing {
    /// Folder → files, for folders the selection reads.
    pub folders: BTreeMap<String, Vec<FileEntry>>,
}

/// Lists the source; folders that cannot be listed are findings (coverage cannot be
/// proven there).
pub fn list_source(
    source: &dyn Source,
    opts: &ExportOptions,
    findings: &Findings,
) -> anyhow::Result<SourceListing> {
    let mut l = SourceListing::default();
    source
        .walk(&mut |item| {
            match item {
                WalkItem::Folder { dir, files } => {
                    if plan::folder_selected(&dir, &opts.window, opts.folder_margin) {
                        l.folders.insert(dir, files);
                    }
                }
                WalkItem::Unreadable { path, error } => findings.fault(
                    FaultKind::SourceUnreadable,
                    None,
                    format!("source {path} could not be listed: {error}"),
                ),
            }
            true
        })
        .with_context(|| format!("listing {}", source.describe()))?;
    Ok(l)
}

/// A committed group within the selection, as its manifest describes it.
#[derive(Clone, Debug)]
pub struct GroupInfo {
    /// Group id.
    pub group: String,
    /// Source folder.
    pub dir: String,
    /// Days it exported.
    pub selection: Selection,
    /// Its counts.
    pub stats: Stats,
    /// Its manifest's key.
    pub manifest_key: String,
    /// The units it committed.
    pub units: Vec<UnitRef>,
}

/// Objects of the job found by listing the store, by group: what `--deep` compares
/// with (never the manifests' lists).
#[derive(Default, Debug)]
pub struct GroupObjects {
    /// Partition → (part number, key), sorted by part.
    pub partitions: BTreeMap<String, Vec<(u64, String)>>,
    /// Error-output objects: (part number, key), sorted.
    pub errors: Vec<(u64, String)>,
}

/// What the default checks learnt, for `--deep`.
#[derive(Default)]
pub struct JobView {
    /// Job id.
    pub job: String,
    /// Committed groups within the selection.
    pub groups: Vec<GroupInfo>,
    /// The source listing.
    pub source: SourceListing,
    /// Objects of the job in the store, by group id.
    pub objects: HashMap<String, GroupObjects>,
}

/// An object of the job seen in the listing.
struct Owned {
    size: u64,
    referenced: bool,
}

/// Parses `<partition>.<job>-<group>-<n>.xz` or `_backfill/errors/<job>/<group>-<n>.jsonl.xz`.
fn parse_owned(key: &str, job: &str) -> Option<(String, Option<String>, u64)> {
    if let Some(rest) = key.strip_prefix(&errors_prefix(job)) {
        let (group, n) = rest.strip_suffix(".jsonl.xz")?.rsplit_once('-')?;
        return Some((group.to_string(), None, n.parse().ok()?));
    }
    let partition = super::partition_of(key)?;
    let suffix = key[partition.len() + 1..].strip_suffix(".xz")?;
    let rest = suffix.strip_prefix(job)?.strip_prefix('-')?;
    let (group, n) = rest.rsplit_once('-')?;
    Some((
        group.to_string(),
        Some(partition.to_string()),
        n.parse().ok()?,
    ))
}

/// A live run of the job, if any (its run lease renewed within its TTL, and on this
/// machine its process still there).
fn live_run(dest: &dyn Store, job: &str) -> anyhow::Result<Option<String>> {
    let now = crate::export::manifest::now_secs();
    Ok(crate::export::lease::runs(dest, job)?
        .into_iter()
        .find(|h| h.live_at(now))
        .map(|h| format!("{} is alive", h.describe(now))))
}

/// The checks of a manifest against itself and its key.
fn check_manifest(m: &GroupManifest, key: &str, job: &str) -> Vec<(FaultKind, String)> {
    let mut out = Vec::new();
    let mut bad = |kind, msg: String| out.push((kind, format!("manifest {key}: {msg}")));
    let stem = key
        .strip_prefix(&manifests_prefix(job))
        .and_then(|s| s.strip_suffix(".json"))
        .unwrap_or_default();
    if m.job != job {
        bad(FaultKind::Manifest, format!("names job {:?}", m.job));
    }
    if m.group != stem {
        bad(FaultKind::Manifest, format!("names group {:?}", m.group));
    }
    let id = slice_id(&m.dir, &m.selection);
    // A folder read again (`--retry-unreadable`) is `<id>-r<hash>`.
    let retried = m.replaces.is_some() && m.group.starts_with(&format!("{id}-r"));
    if m.group != id && !retried {
        bad(
            FaultKind::Manifest,
            format!(
                "group {:?} is not the id of folder {:?} with its selection ({id})",
                m.group, m.dir
            ),
        );
    }
    let s = &m.stats;
    if s.records_in != s.records_out + s.records_error {
        bad(
            FaultKind::CountsDoNotReconcile,
            format!(
                "records_in {} != records_out {} + records_error {}",
                s.records_in, s.records_out, s.records_error
            ),
        );
    }
    let by_reason: u64 = s.errors_by_reason.values().sum();
    if by_reason != s.records_error {
        bad(
            FaultKind::CountsDoNotReconcile,
            format!(
                "errors_by_reason adds up to {by_reason}, records_error is {}",
                s.records_error
            ),
        );
    }
    let objects: u64 = m.objects.iter().map(|o| o.records).sum();
    if objects != s.records_out {
        bad(
            FaultKind::CountsDoNotReconcile,
            format!(
                "its objects hold {objects} records, records_out is {}",
                s.records_out
            ),
        );
    }
    let errors: u64 = m.errors.iter().map(|o| o.records).sum();
    if errors != s.records_error {
        bad(
            FaultKind::CountsDoNotReconcile,
            format!(
                "its error objects hold {errors} records, records_error is {}",
                s.records_error
            ),
        );
    }
    let mut part: Option<&str> = None;
    let mut n = 0;
    for o in &m.objects {
        if part == Some(o.partition.as_str()) {
            n += 1;
        } else {
            part = Some(&o.partition);
            n = 0;
        }
        let want = object_key(&o.partition, job, &m.group, n);
        if o.key != want {
            bad(
                FaultKind::Manifest,
                format!("object {} should be named {want}", o.key),
            );
        }
    }
    for (n, o) in m.errors.iter().enumerate() {
        let want = format!("{}{}-{n}.jsonl.xz", errors_prefix(job), m.group);
        if o.key != want {
            bad(
                FaultKind::Manifest,
                format!("error object {} should be named {want}", o.key),
            );
        }
    }
    out
}

/// What checking one listed object found.
type ObjectCheck = Result<(), (FaultKind, String)>;

/// sha256 and size of an object, streamed.
fn hash_object(
    dest: &dyn Store,
    key: &str,
    progress: &indicatif::ProgressBar,
) -> std::io::Result<(String, u64)> {
    let mut r = dest.open(key)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut n = 0u64;
    loop {
        let k = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..k]);
        n += k as u64;
        progress.inc(k as u64);
    }
    Ok((hex::encode(h.finalize()), n))
}

/// The default checks. Fills `v` (incomplete, counts) and `findings`; returns what
/// `--deep` needs.
#[allow(clippy::too_many_arguments)]
pub fn check(
    _mappings: &Mappings,
    source: &dyn Source,
    dest: &dyn Store,
    staging: Option<&dyn Store>,
    opts: &VerifyOptions,
    findings: &Findings,
    v: &mut Verification,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<JobView> {
    let eo = &opts.export;
    let job = v.job.clone();
    let mut view = JobView {
        job: job.clone(),
        ..Default::default()
    };

    // The job record.
    let rec = match dest.get(&job_key(&job))? {
        Some(b) => serde_json::from_slice::<JobRecord>(&b)
            .with_context(|| format!("reading job record {}", job_key(&job)))?,
        None => {
            let others: Vec<String> = dest
                .list(&format!("{BOOKKEEPING}/jobs/"))?
                .iter()
                .filter_map(|m| {
                    let b = dest.get(&m.key).ok()??;
                    let r: JobRecord = serde_json::from_slice(&b).ok()?;
                    Some(format!("{} ({:?})", r.job, r.spec.job_name))
                })
                .collect();
            findings.fault(
                FaultKind::JobRecord,
                None,
                format!(
                    "{} holds no job {job} (the job these options and mappings make); jobs there: {}",
                    dest.describe(),
                    if others.is_empty() { "none".to_string() } else { others.join(", ") }
                ),
            );
            return Ok(view);
        }
    };
    let spec = crate::export::job_spec(eo, _mappings);
    if rec.job != job || rec.spec != spec {
        findings.fault(
            FaultKind::JobRecord,
            None,
            format!(
                "job record {} does not describe job {job}: {}",
                job_key(&job),
                spec.differences(&rec.spec).join("; ")
            ),
        );
    }
    if rec.source != source.describe() {
        tracing::warn!(recorded = %rec.source, given = %source.describe(), "the job was exported from another source location; verifying against the one given");
    }

    // Finished? A live run, staging left, or a latest run whose plan is not all
    // committed: the job is not complete, and nothing else is judged.
    if let Some(who) = live_run(dest, &job)? {
        v.incomplete = Some(format!("job {job} is still running: {who}"));
        return Ok(view);
    }
    let staged_prefix = format!("{BOOKKEEPING}/staging/{job}/");
    for (store, what) in [
        (Some(dest), "the destination"),
        (staging, "the staging dir"),
    ] {
        let Some(store) = store else { continue };
        let left = store.list(&staged_prefix)?;
        if !left.is_empty() {
            v.incomplete = Some(format!(
                "job {job} has {} staged objects in {what} ({}…): it is running or was interrupted",
                left.len(),
                left[0].key
            ));
            return Ok(view);
        }
    }

    // Every object of the layout: this job's (to find orphans and, for --deep, the
    // objects to compare), other writers' counted apart.
    let mut owned: HashMap<String, Owned> = HashMap::new();
    let mut others = Vec::new();
    let book = format!("{BOOKKEEPING}/");
    dest.list_each("", &mut |m| {
        if owned_by(&m.key, &job) {
            owned.insert(
                m.key,
                Owned {
                    size: m.size,
                    referenced: false,
                },
            );
        } else if !m.key.starts_with(&book) {
            others.push(m);
        }
        Ok(())
    })?;
    for m in others {
        let day = super::partition_of(&m.key).and_then(partition_day);
        let Some(day) = day else { continue };
        if !eo.window.contains(day.parse().unwrap_or(0)) {
            continue;
        }
        findings.day(day, |r| r.other_writers += 1);
        v.other_writers.objects += 1;
        v.other_writers.bytes += m.size;
        if v.other_writers.keys.len() < 20 {
            v.other_writers.keys.push(m.key);
        }
    }

    // Pass 1 over the manifests: judge each against itself, mark what it lists.
    let mut committed_units = HashSet::new();
    let mut to_hash: Vec<String> = Vec::new();
    let manifests = dest.list(&manifests_prefix(&job))?;
    for meta in &manifests {
        let Some(bytes) = dest.get(&meta.key)? else {
            continue;
        };
        let m: GroupManifest = serde_json::from_slice(&bytes)
            .with_context(|| format!("reading group manifest {}", meta.key))?;
        for u in &m.units {
            committed_units.insert((u.file.clone(), u.start, u.end));
        }
        let selected = plan::folder_selected(&m.dir, &eo.window, eo.folder_margin);
        for o in m.objects.iter().chain(&m.errors) {
            match owned.get_mut(&o.key) {
                Some(own) if own.referenced => findings.fault(
                    FaultKind::ListedTwice,
                    None,
                    format!("object {} is listed twice (again by {})", o.key, meta.key),
                ),
                Some(own) => own.referenced = true,
                None => {}
            }
        }
        if !selected {
            continue;
        }
        for (kind, msg) in check_manifest(&m, &meta.key, &job) {
            findings.fault(
                kind,
                plan::folder_day(&m.dir).map(|d| d.to_string()).as_deref(),
                msg,
            );
        }
        progress.inc_length(m.objects.iter().chain(&m.errors).map(|o| o.bytes).sum());
        to_hash.push(meta.key.clone());
        view.groups.push(GroupInfo {
            group: m.group.clone(),
            dir: m.dir.clone(),
            selection: m.selection.clone(),
            stats: m.stats.clone(),
            manifest_key: meta.key.clone(),
            units: m.units.clone(),
        });
    }
    v.groups = view.groups.len() as u64;

    // The latest run set out to read some units; fewer committed means it stopped.
    let runs: Vec<RunRecord> = dest
        .list(&runs_prefix(&job))?
        .iter()
        .filter_map(|m| dest.get(&m.key).ok().flatten())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect();
    if let Some(r) = runs.iter().max_by_key(|r| r.started_at) {
        if (committed_units.len() as u64) < r.units {
            v.incomplete = Some(format!(
                "job {job} is not finished: its latest run (pid {} on {:?}) planned {} units in {} folders, {} are committed; it was interrupted or is still running",
                r.pid, r.host, r.units, r.folders, committed_units.len()
            ));
            return Ok(view);
        }
    }

    // Coverage: every selected source unit in exactly one committed group.
    view.source = list_source(source, eo, findings)?;
    check_coverage(&view, eo, findings);

    // Orphans: objects of this job no manifest lists.
    let mut orphans: Vec<(&String, &Owned)> = owned.iter().filter(|(_, o)| !o.referenced).collect();
    orphans.sort_by_key(|(k, _)| k.as_str());
    for (key, o) in orphans {
        let day = super::partition_of(key).and_then(partition_day);
        findings.fault(
            FaultKind::Orphan,
            day,
            format!(
                "object {key} ({} bytes) carries job {job}'s id but no manifest lists it",
                o.size
            ),
        );
        if let Some(d) = day {
            findings.day(d, |r| r.differences += 1);
        }
    }

    // Pass 2: every listed object of the selected groups, its size and sha256.
    for key in &to_hash {
        let Some(bytes) = dest.get(key)? else {
            continue;
        };
        let m: GroupManifest = serde_json::from_slice(&bytes)
            .with_context(|| format!("reading group manifest {key}"))?;
        let results: Vec<(&ObjectEntry, ObjectCheck)> = m
            .objects
            .par_iter()
            .chain(m.errors.par_iter())
            .with_max_len(1)
            .map(|o| (o, check_object(dest, o, &owned, progress)))
            .collect();
        for (o, r) in results {
            v.objects_checked += 1;
            v.bytes_checked += o.bytes;
            let day = partition_day(&o.partition);
            if let Some(d) = day {
                findings.day(d, |row| {
                    *row.written.get_or_insert(0) += o.records;
                    let dest = row.dest_records.get_or_insert(0);
                    if r.is_ok() {
                        *dest += o.records;
                    }
                });
            }
            if let Err((kind, msg)) = r {
                if let Some(d) = day {
                    findings.day(d, |row| row.differences += 1);
                }
                findings.fault(kind, day, msg);
            }
        }
        // Manifests count rejected records per group, not per day: the total only.
        *v.rejected_by_manifests.get_or_insert(0) += m.stats.records_error;
    }
    view.objects = group_objects(owned.keys(), &job);
    Ok(view)
}

fn check_object(
    dest: &dyn Store,
    o: &ObjectEntry,
    owned: &HashMap<String, Owned>,
    progress: &indicatif::ProgressBar,
) -> ObjectCheck {
    let Some(found) = owned.get(&o.key) else {
        progress.inc(o.bytes);
        return Err((
            FaultKind::MissingObject,
            format!(
                "object {} ({} records) is listed by its manifest but not in the store",
                o.key, o.records
            ),
        ));
    };
    if found.size != o.bytes {
        progress.inc(o.bytes);
        return Err((
            FaultKind::SizeMismatch,
            format!(
                "object {} has {} bytes, its manifest says {}",
                o.key, found.size, o.bytes
            ),
        ));
    }
    match hash_object(dest, &o.key, progress) {
        Ok((sha, n)) if sha == o.sha256 && n == o.bytes => Ok(()),
        Ok((sha, n)) => Err((
            FaultKind::Sha256Mismatch,
            format!(
                "object {} ({n} bytes) has sha256 {sha}, its manifest says {}",
                o.key, o.sha256
            ),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err((
            FaultKind::MissingObject,
            format!("object {} disappeared while being read", o.key),
        )),
        Err(e) => Err((
            FaultKind::ObjectUnreadable,
            format!("object {} could not be read: {e}", o.key),
        )),
    }
}

/// The job's objects by group, from the listing.
fn group_objects<'a>(
    keys: impl Iterator<Item = &'a String>,
    job: &str,
) -> HashMap<String, GroupObjects> {
    let mut out: HashMap<String, GroupObjects> = HashMap::new();
    for key in keys {
        let Some((group, partition, n)) = parse_owned(key, job) else {
            continue;
        };
        let g = out.entry(group).or_default();
        match partition {
            Some(p) => g.partitions.entry(p).or_default().push((n, key.clone())),
            None => g.errors.push((n, key.clone())),
        }
    }
    for g in out.values_mut() {
        g.errors.sort();
        for v in g.partitions.values_mut() {
            v.sort();
        }
    }
    out
}

/// Every selected source unit in exactly one committed group; every committed unit
/// still in the source.
fn check_coverage(view: &JobView, eo: &ExportOptions, findings: &Findings) {
    let mut slices: BTreeMap<&str, Vec<&GroupInfo>> = BTreeMap::new();
    for g in &view.groups {
        slices.entry(&g.dir).or_default().push(g);
    }
    for (dir, files) in &view.source.folders {
        let day = plan::folder_day(dir).map(|d| d.to_string());
        let day = day.as_deref();
        let units: Vec<(String, u64, u64)> = plan::units(files, eo.split_size)
            .into_iter()
            .map(|u| (u.file, u.start, u.end))
            .collect();
        let Some(gs) = slices.get(dir.as_str()) else {
            for (file, start, end) in &units {
                findings.fault(
                    FaultKind::UncoveredUnit,
                    day,
                    format!(
                        "source file {file} bytes [{start}, {end}) is covered by no committed unit (folder {dir:?} has no committed group)"
                    ),
                );
            }
            continue;
        };
        let windows: Vec<_> = gs.iter().map(|g| g.selection.window).collect();
        if !plan::covers(&windows, &eo.window) {
            findings.fault(
                FaultKind::UncoveredDays,
                day,
                format!("folder {dir:?}: the committed groups do not cover every selected day (they exported {windows:?})"),
            );
        }
        let mut seen = BTreeSet::new();
        for g in gs {
            if !seen.insert(serde_json::to_string(&g.selection).unwrap_or_default()) {
                findings.fault(
                    FaultKind::CoveredTwice,
                    day,
                    format!(
                        "folder {dir:?} is committed twice for the same days (manifest {})",
                        g.manifest_key
                    ),
                );
            }
            check_units(g, files, eo.split_size, findings);
        }
    }
    // Committed folders the source does not have (any more).
    for g in &view.groups {
        if !view.source.folders.contains_key(&g.dir) {
            findings.fault(
                FaultKind::FolderNotInSource,
                plan::folder_day(&g.dir).map(|d| d.to_string()).as_deref(),
                format!(
                    "manifest {} commits folder {:?}, which the source does not have",
                    g.manifest_key, g.dir
                ),
            );
        }
    }
}

/// The units a group committed against the folder's units now.
fn check_units(g: &GroupInfo, files: &[FileEntry], split_size: u64, findings: &Findings) {
    let day = plan::folder_day(&g.dir).map(|d| d.to_string());
    let day = day.as_deref();
    let key = &g.manifest_key;
    let want: Vec<(String, u64, u64)> = plan::units(files, split_size)
        .into_iter()
        .map(|u| (u.file, u.start, u.end))
        .collect();
    let mut have: BTreeMap<(String, u64, u64), u32> = BTreeMap::new();
    for u in &g.units {
        *have.entry((u.file.clone(), u.start, u.end)).or_default() += 1;
    }
    let sizes: HashMap<&str, u64> = files.iter().map(|f| (f.path.as_str(), f.size)).collect();
    for u in &want {
        match have.get(u) {
            None => findings.fault(
                FaultKind::UncoveredUnit,
                day,
                format!(
                    "source file {} bytes [{}, {}) (file size {}) is covered by no committed unit of folder {:?} (manifest {key}): added or changed after the export?",
                    u.0, u.1, u.2, sizes.get(u.0.as_str()).copied().unwrap_or(0), g.dir
                ),
            ),
            Some(&n) if n > 1 => findings.fault(
                FaultKind::CoveredTwice,
                day,
                format!(
                    "source file {} bytes [{}, {}) is committed {n} times by manifest {key}",
                    u.0, u.1, u.2
                ),
            ),
            Some(_) => {}
        }
    }
    let want: BTreeSet<&(String, u64, u64)> = want.iter().collect();
    for u in have.keys() {
        if !want.contains(u) {
            findings.fault(
                FaultKind::UnitNotInSource,
                day,
                format!(
                    "manifest {key} commits {} bytes [{}, {}), which the source does not have now (file removed or resized)",
                    u.0, u.1, u.2
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_keys_parse_into_group_partition_and_part() {
        let job = "d7b22151";
        assert_eq!(
            parse_owned(
                "saved_session/Firefox/nightly/22.0a1/20130226031002.20131011.v2.log.d7b22151-98db8291-12.xz",
                job
            ),
            Some((
                "98db8291".into(),
                Some("saved_session/Firefox/nightly/22.0a1/20130226031002.20131011.v2.log".into()),
                12
            ))
        );
        assert_eq!(
            parse_owned("_backfill/errors/d7b22151/98db8291-3.jsonl.xz", job),
            Some(("98db8291".into(), None, 3))
        );
        assert_eq!(parse_owned("a/b.v2.log.d7b22151-x.xz", job), None);
        assert_eq!(parse_owned("a/b.v2.log.other-98db8291-1.xz", job), None);
    }
}
