//! `backfill verify`: the proof that a destination holds the legacy data, at three
//! depths (SPEC §6, exit code 4).
//!
//! - **Default** ([`bookkeeping`]): the job's record and group manifests agree with
//!   each other, with the objects actually in the store (size and sha256 of each,
//!   streamed) and with a listing of the source (every selected file and byte range
//!   in exactly one committed unit). No record is read, no object decompressed.
//! - **Deep** ([`deep`]): every source record is read again through the export's own
//!   unit code into a private temporary staging, and each partition's lines are
//!   compared with the lines of the objects found in the store by listing (never by
//!   the manifests' word), and every rejected record with the error output.
//!   `--all-writers` compares with every object of the selected days, whoever wrote
//!   it; `--sample` goes deep on a deterministic share of the groups only.
//!
//! This module owns the findings ([`Fault`]) and the report; it reuses the export's
//! planning, bookkeeping formats, readers and unit code rather than copying them, and
//! never writes to the destination or the source.

pub mod bookkeeping;
pub mod deep;
pub mod diff;
pub mod render;

use crate::core::mappings::Mappings;
use crate::export::manifest::Stats;
use crate::export::ExportOptions;
use crate::source::Source;
use crate::store::Store;
use diff::LineDiff;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

/// What to verify and how deep.
#[derive(Clone)]
pub struct VerifyOptions {
    /// The job's identity and selection, as the export was given them.
    pub export: ExportOptions,
    /// Re-read every source record and compare with the objects.
    pub deep: bool,
    /// Go deep on this share of the groups (or days, with `all_writers`) only.
    pub sample: Option<f64>,
    /// Compare with every object of the selected days, whoever wrote it.
    pub all_writers: bool,
    /// Doc ids kept per kind of difference and partition in the report.
    pub max_ids: usize,
    /// Faults listed one by one in the report (all are counted).
    pub max_faults: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            export: ExportOptions::default(),
            deep: false,
            sample: None,
            all_writers: false,
            max_ids: 20,
            max_faults: 1000,
        }
    }
}

/// Kinds of findings that break parity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The destination holds no record of this job, or one that disagrees with it.
    JobRecord,
    /// A group manifest contradicts itself or its key.
    Manifest,
    /// A group's counts do not add up (`records_in != records_out + records_error`,
    /// or the objects' record counts).
    CountsDoNotReconcile,
    /// An object a manifest lists is not in the store.
    MissingObject,
    /// An object's size is not the one its manifest records.
    SizeMismatch,
    /// An object's sha256 is not the one its manifest records.
    Sha256Mismatch,
    /// Two manifests (or one twice) list the same object.
    ListedTwice,
    /// An object carrying this job's id that no manifest lists.
    Orphan,
    /// A selected source file or byte range no committed unit covers.
    UncoveredUnit,
    /// A committed unit the source no longer has (file removed, grown or shrunk).
    UnitNotInSource,
    /// A committed folder the source no longer has.
    FolderNotInSource,
    /// A source folder committed more than once for the same days.
    CoveredTwice,
    /// Selected days of a folder that no committed group exported.
    UncoveredDays,
    /// A part of the source that could not be listed.
    SourceUnreadable,
    /// An object that does not decompress or parse.
    ObjectUnreadable,
    /// A partition whose lines differ from the re-converted source.
    RecordsDiffer,
    /// Rejected records missing from the error output, or with another reason.
    ErrorOutputDiffers,
    /// A group's counts differ between the manifest and the source read again.
    CountsDiffer,
}

impl FaultKind {
    /// The kind's name as in the report.
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

/// One finding, with the object, file or offset it is about in its message.
#[derive(Clone, Debug, Serialize)]
pub struct Fault {
    /// What kind.
    pub kind: FaultKind,
    /// The submission day it concerns, when it concerns one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<String>,
    /// What exactly, naming the key, file, offset or doc ids.
    pub message: String,
}

/// One row of the per-day table. `None` where the mode cannot know (the default
/// mode reads no source record).
#[derive(Clone, Debug, Default, Serialize)]
pub struct DayRow {
    /// `yyyyMMdd`, or `undated` for rejected records whose key names no day.
    pub day: String,
    /// Records of the day read from the source (written + rejected).
    pub source_records: Option<u64>,
    /// Of those, converted (or, in the default mode, what the manifests say was
    /// written).
    pub written: Option<u64>,
    /// Of those, rejected.
    pub rejected: Option<u64>,
    /// Lines in the destination (in the default mode: records of the objects found
    /// intact, as their manifests count them).
    pub dest_records: Option<u64>,
    /// Records that differ (deep), or faulty objects (default).
    pub differences: u64,
    /// Findings of the day.
    pub faults: u64,
    /// Objects of other writers in the day's partitions (never a failure).
    pub other_writers: u64,
}

impl DayRow {
    fn add(&mut self, o: &DayRow) {
        let sum = |a: &mut Option<u64>, b: Option<u64>| {
            if let Some(b) = b {
                *a = Some(a.unwrap_or(0) + b);
            }
        };
        sum(&mut self.source_records, o.source_records);
        sum(&mut self.written, o.written);
        sum(&mut self.rejected, o.rejected);
        sum(&mut self.dest_records, o.dest_records);
        self.differences += o.differences;
        self.faults += o.faults;
        self.other_writers += o.other_writers;
    }

    /// Whether the day shows a problem.
    pub fn failing(&self) -> bool {
        self.differences > 0 || self.faults > 0
    }
}

/// One partition compared record by record (`--deep`).
#[derive(Clone, Debug, Serialize)]
pub struct PartitionReport {
    /// The partition (object key without `.<suffix>.xz`).
    pub partition: String,
    /// The group (source folder slice) it was compared for; none with `--all-writers`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Objects it was compared with.
    pub objects: u64,
    /// Counts and differing doc ids.
    #[serde(flatten)]
    pub diff: LineDiff,
}

/// Objects of other writers met in the layout: counted, listed apart, never a failure.
#[derive(Clone, Debug, Default, Serialize)]
pub struct OtherWriters {
    /// How many.
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The first keys (capped).
    pub keys: Vec<String>,
}

/// What `--sample` chose.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Sampled {
    /// The fraction asked for.
    pub fraction: f64,
    /// `groups` (source folders of the job) or `days` (with `--all-writers`).
    pub by: String,
    /// How many there were to choose from.
    pub of: u64,
    /// The ones compared record by record.
    pub selected: Vec<String>,
}

/// The verification report (`--report FILE`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Verification {
    /// Job id.
    pub job: String,
    /// Job name.
    pub job_name: String,
    /// Source description.
    pub source: String,
    /// Destination description.
    pub destination: String,
    /// `default`, `deep` or `sample`.
    pub mode: String,
    /// `--all-writers`.
    pub all_writers: bool,
    /// Whether the destination holds the source: no fault, and the job complete.
    pub parity: bool,
    /// Why the job is not complete, when it is not (then nothing else is judged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<String>,
    /// What `--sample` chose.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample: Option<Sampled>,
    /// Every finding counted by kind.
    pub faults_by_kind: BTreeMap<String, u64>,
    /// All findings.
    pub faults_total: u64,
    /// The findings (capped; see `faults_total`).
    pub faults: Vec<Fault>,
    /// Per-day table.
    pub days: Vec<DayRow>,
    /// Totals of the table.
    pub totals: DayRow,
    /// Groups (source folder slices) of the job within the selection.
    pub groups: u64,
    /// Of those, compared record by record.
    pub groups_deep: u64,
    /// Objects whose size and sha256 were checked.
    pub objects_checked: u64,
    /// Their bytes.
    pub bytes_checked: u64,
    /// Partitions compared record by record.
    pub partitions_compared: u64,
    /// Per-partition counts and differing doc ids (`--deep`).
    pub partitions: Vec<PartitionReport>,
    /// Objects of other writers.
    pub other_writers: OtherWriters,
    /// Counts re-derived from the source (`--deep`), for the groups compared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_stats: Option<Stats>,
    /// Tool version.
    pub tool_version: String,
    /// Mappings version.
    pub mappings_version: String,
    /// Wall time.
    pub seconds: f64,
    /// Rejected records as the manifests count them (per group, not per day).
    #[serde(skip)]
    rejected_by_manifests: Option<u64>,
}

/// Findings and per-day counts gathered from several threads.
pub struct Findings {
    faults: Mutex<Vec<Fault>>,
    days: Mutex<BTreeMap<String, DayRow>>,
    partitions: Mutex<Vec<PartitionReport>>,
}

impl Findings {
    fn new() -> Self {
        Findings {
            faults: Mutex::new(Vec::new()),
            days: Mutex::new(BTreeMap::new()),
            partitions: Mutex::new(Vec::new()),
        }
    }

    /// Records a finding.
    pub fn fault(&self, kind: FaultKind, day: Option<&str>, message: String) {
        if let Some(d) = day {
            self.day(d, |r| r.faults += 1);
        }
        tracing::debug!(kind = %kind.name(), %message, "fault");
        self.faults.lock().unwrap().push(Fault {
            kind,
            day: day.map(str::to_string),
            message,
        });
    }

    /// Updates the row of `day`.
    pub fn day(&self, day: &str, f: impl FnOnce(&mut DayRow)) {
        let mut days = self.days.lock().unwrap();
        let row = days.entry(day.to_string()).or_insert_with(|| DayRow {
            day: day.to_string(),
            ..Default::default()
        });
        f(row);
    }

    /// Adds a compared partition.
    pub fn partition(&self, p: PartitionReport) {
        self.partitions.lock().unwrap().push(p);
    }
}

/// The day of a partition: its last dimension (`<buildID>.<yyyyMMdd>.v2.log`, or
/// another layout version's `.v<N>.log`).
pub fn partition_day(partition: &str) -> Option<&str> {
    let name = partition.rsplit('/').next()?;
    let stem = crate::reprocess::strip_layout(name)?;
    let day = stem.rsplit('.').next()?;
    (day.len() == 8 && day.bytes().all(|c| c.is_ascii_digit())).then_some(day)
}

/// The partition of an object key: the key without `.<suffix>.xz` (or `.lzma`).
pub fn partition_of(key: &str) -> Option<&str> {
    let stem = key
        .strip_suffix(".xz")
        .or_else(|| key.strip_suffix(".lzma"))?;
    Some(stem.rsplit_once('.')?.0)
}

/// The day of a legacy row key, when its bytes 1..9 are digits.
pub fn key_day(key: &[u8]) -> Option<String> {
    let d = key.get(1..9)?;
    d.iter()
        .all(u8::is_ascii_digit)
        .then(|| String::from_utf8_lossy(d).into_owned())
}

/// Where a group (or day) falls in [0, 1): it is in every sample of a larger
/// fraction, so a smaller sample is part of a larger one.
pub fn sample_point(name: &str) -> f64 {
    let h = crate::export::manifest::sha256(format!("sample\0{name}").as_bytes());
    let x = u64::from_le_bytes(h[..8].try_into().expect("8 bytes"));
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether a group (or day) is in the deterministic sample of `fraction`.
pub fn sampled(name: &str, fraction: f64) -> bool {
    fraction >= 1.0 || sample_point(name) < fraction
}

/// Runs a verification. `staging` is the export's `--staging-dir` when it had one
/// (a job with staging left is not complete). Returns the report; `parity` says
/// whether it holds. An `Err` is an operational failure (a store or the source
/// unreachable, a manifest unreadable).
pub fn verify(
    mappings: &Mappings,
    source: &dyn Source,
    dest: &dyn Store,
    staging: Option<&dyn Store>,
    opts: &VerifyOptions,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<Verification> {
    let started = Instant::now();
    let spec = crate::export::job_spec(&opts.export, mappings);
    let mut v = Verification {
        job: spec.id(),
        job_name: spec.job_name.clone(),
        source: source.describe(),
        destination: dest.describe(),
        mode: match (opts.deep, opts.sample) {
            (_, Some(_)) => "sample",
            (true, None) => "deep",
            (false, None) => "default",
        }
        .to_string(),
        all_writers: opts.all_writers,
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        mappings_version: mappings.version().to_string(),
        ..Default::default()
    };
    let findings = Findings::new();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.export.jobs.max(1))
        .thread_name(|i| format!("backfill-verify-{i}"))
        .build()?;
    let deep = opts.deep || opts.sample.is_some();
    pool.install(|| -> anyhow::Result<()> {
        if opts.all_writers {
            anyhow::ensure!(
                deep,
                "--all-writers compares records: it needs --deep or --sample"
            );
            let listing = bookkeeping::list_source(source, &opts.export, &findings)?;
            deep::all_writers(
                mappings, source, dest, opts, &listing, &findings, &mut v, progress,
            )?;
            return Ok(());
        }
        let job = bookkeeping::check(
            mappings, source, dest, staging, opts, &findings, &mut v, progress,
        )?;
        if v.incomplete.is_some() {
            return Ok(());
        }
        if deep {
            // The table shows what the re-read counts, not what the manifests say.
            for row in findings.days.lock().unwrap().values_mut() {
                row.written = None;
                row.dest_records = None;
                row.differences = 0;
            }
            v.rejected_by_manifests = None;
            deep::own_job(
                mappings, source, dest, opts, &job, &findings, &mut v, progress,
            )?;
        }
        Ok(())
    })?;
    let mut faults = std::mem::take(&mut *findings.faults.lock().unwrap());
    faults.sort_by(|a, b| (a.kind, &a.day, &a.message).cmp(&(b.kind, &b.day, &b.message)));
    for f in &faults {
        *v.faults_by_kind.entry(f.kind.name()).or_default() += 1;
    }
    v.faults_total = faults.len() as u64;
    faults.truncate(opts.max_faults);
    v.faults = faults;
    v.days = std::mem::take(&mut *findings.days.lock().unwrap())
        .into_values()
        .collect();
    let mut totals = DayRow {
        day: "total".into(),
        ..Default::default()
    };
    for d in &v.days {
        totals.add(d);
    }
    // Findings of no particular day count in the total only.
    totals.faults = v.faults_total;
    if totals.rejected.is_none() {
        totals.rejected = v.rejected_by_manifests;
    }
    v.totals = totals;
    let mut parts = std::mem::take(&mut *findings.partitions.lock().unwrap());
    parts.sort_by(|a, b| (&a.partition, &a.group).cmp(&(&b.partition, &b.group)));
    v.partitions_compared = parts.len() as u64;
    v.partitions = parts;
    v.parity = v.incomplete.is_none() && v.faults_total == 0;
    v.seconds = started.elapsed().as_secs_f64();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_partitions_of_keys() {
        let key = "saved_session/Firefox/nightly/22.0a1/20130226031002.20131011.v2.log.d7b22151-98db8291-0.xz";
        let p = partition_of(key).unwrap();
        assert_eq!(
            p,
            "saved_session/Firefox/nightly/22.0a1/20130226031002.20131011.v2.log"
        );
        assert_eq!(partition_day(p), Some("20131011"));
        assert_eq!(
            partition_of("a/b/c/d/UNKNOWN.20131011.v2.log.e28a4032eb744f089a1828ac7399e5d8.lzma"),
            Some("a/b/c/d/UNKNOWN.20131011.v2.log")
        );
        assert_eq!(partition_day("a/b/c/d/x.2013101.v2.log"), None);
        assert_eq!(partition_of("a/b.json"), None);
        assert_eq!(key_day(b"\x1020131011abc"), Some("20131011".into()));
        assert_eq!(key_day(b"short"), None);
    }

    #[test]
    fn sample_is_deterministic_and_near_its_fraction() {
        let names: Vec<String> = (0..2000).map(|i| format!("group{i}")).collect();
        let pick = |f| names.iter().filter(|n| sampled(n, f)).count();
        assert_eq!(pick(1.0), 2000);
        assert_eq!(pick(0.0), 0);
        let tenth = pick(0.1);
        assert!((150..250).contains(&tenth), "{tenth}");
        assert_eq!(pick(0.1), tenth);
        // A smaller sample is part of a larger one.
        assert!(names
            .iter()
            .filter(|n| sampled(n, 0.05))
            .all(|n| sampled(n, 0.1)));
    }
}
