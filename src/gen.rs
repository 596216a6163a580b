//! Test data: realistic legacy Telemetry records, each knowing the outcome the tool
//! must give it, and whole legacy data sets (SequenceFiles and text dumps in the old
//! HDFS layout) built from them.
//!
//! Everything here is pure and deterministic: the same seed and options give the same
//! bytes, on any machine, with no clock and no file system (the `backfill-gen` binary
//! writes what [`Dataset`] produces). Records follow a model of the 2013 population —
//! mostly `saved-session`/`idle-daily`, Firefox/Fennec/Thunderbird on four channels,
//! build IDs drawn Zipf-like from the release train so that a few builds are hot and
//! thousands are rare — and carry histograms valid for the shipped definitions
//! (revision [`SHIPPED_REVISION`]). A configurable share of records is broken on
//! purpose, one fault per record, so that each reject reason of SPEC §6 is exercised
//! and its count known in advance. This is test tooling, not part of the export: the
//! core never depends on it.

pub mod calendar;
pub mod payload;
pub mod rng;

use std::collections::{BTreeMap, VecDeque};
use std::io::Write as _;

use crate::core::mappings::Mappings;
use crate::core::reason::Reason;
use crate::core::rowkey;
use crate::core::seqfile::{Compression, SeqWriter, SeqWriterOptions, SYNC_SIZE};

pub use calendar::{App, Channel};
pub use payload::{Catalog, PayloadFault, PayloadSpec};
pub use rng::{Rng, Zipf};

use crate::core::histdefs::Definitions;

/// The revision whose definitions ship with the tool (`mappings/`).
pub const SHIPPED_REVISION: &str = "a55c55edf302";

/// Its revision URL as Aurora 23 builds reported it.
pub const SHIPPED_REVISION_URL: &str =
    "http://hg.mozilla.org/releases/mozilla-aurora/rev/a55c55edf302";

/// A realistic classic (ver 1) payload for `spec`, with histograms valid for `defs`
/// (see [`Catalog::payload`]; build a [`Catalog`] once to draw many).
pub fn payload(rng: &mut Rng, defs: &Definitions, spec: &PayloadSpec) -> String {
    Catalog::new(defs).payload(rng, spec)
}

/// The outcome a generated record must get from the converter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Expected {
    /// Converted and written.
    Ok,
    /// Sent to the error output with this reason.
    Reject(Reason),
}

/// The rate of deliberately broken records, per reject reason (a share of all
/// records, 0–1).
#[derive(Clone, Debug, PartialEq)]
pub struct RejectRates {
    rates: [f64; Reason::ALL.len()],
}

impl Default for RejectRates {
    /// About 2 % in total, weighted toward the faults seen most in the old store
    /// (truncated uploads, builds without a known revision, bad bodies).
    fn default() -> Self {
        let mut r = RejectRates::none();
        for (reason, rate) in [
            (Reason::InvalidKey, 0.001),
            (Reason::CorruptedData, 0.002),
            (Reason::InvalidJson, 0.003),
            (Reason::UnsupportedVersion, 0.002),
            (Reason::MissingInfo, 0.001),
            (Reason::MissingRevision, 0.004),
            (Reason::InvalidRevision, 0.001),
            (Reason::UnknownRevision, 0.002),
            (Reason::HistogramMismatch, 0.002),
            (Reason::InvalidBucket, 0.001),
            (Reason::InvalidCount, 0.001),
        ] {
            r.set(reason, rate);
        }
        r
    }
}

impl RejectRates {
    /// No rejects at all.
    pub fn none() -> Self {
        RejectRates {
            rates: [0.0; Reason::ALL.len()],
        }
    }

    /// The same rate for every reason, `total` in all.
    pub fn uniform(total: f64) -> Self {
        RejectRates {
            rates: [total / Reason::ALL.len() as f64; Reason::ALL.len()],
        }
    }

    fn slot(reason: Reason) -> usize {
        Reason::ALL
            .iter()
            .position(|&r| r == reason)
            .expect("every reason is in ALL")
    }

    /// The rate of `reason`.
    pub fn get(&self, reason: Reason) -> f64 {
        self.rates[Self::slot(reason)]
    }

    /// Sets the rate of `reason` (clamped to 0–1).
    pub fn set(&mut self, reason: Reason, rate: f64) {
        self.rates[Self::slot(reason)] = rate.clamp(0.0, 1.0);
    }

    /// The sum over all reasons.
    pub fn total(&self) -> f64 {
        self.rates.iter().sum()
    }

    /// The same proportions between reasons, scaled to `total` (0–1); from all-zero
    /// rates, the default proportions.
    pub fn with_total(&self, total: f64) -> Self {
        let base = if self.total() > 0.0 {
            self.clone()
        } else {
            RejectRates::default()
        };
        let k = total.clamp(0.0, 1.0) / base.total();
        RejectRates {
            rates: base.rates.map(|r| r * k),
        }
    }

    /// The reason for a uniform draw `u` in `[0, 1)`, or `None` (a good record).
    fn draw(&self, mut u: f64) -> Option<Reason> {
        for (r, &rate) in Reason::ALL.iter().zip(&self.rates) {
            if u < rate {
                return Some(*r);
            }
            u -= rate;
        }
        None
    }
}

/// How records are distributed; [`Default`] is the realistic mix.
#[derive(Clone, Debug, PartialEq)]
pub struct GenOptions {
    /// Deliberately broken records, per reason.
    pub reject_rates: RejectRates,
    /// Mean number of histograms per payload (each varies by ±20 %).
    pub histograms: usize,
    /// Share of records whose key day is the folder's day ± 1.
    pub neighbour_day_rate: f64,
    /// Share of SequenceFile values stored gzipped (text dumps never are).
    pub gzip_rate: f64,
    /// Share of records reusing an earlier record's doc id (real duplicates).
    pub duplicate_rate: f64,
    /// Share of good records that carry no `info.revision` and are resolved by the
    /// revision table (Firefox aurora 23.0a2 built on 2013-05-14), on days after it.
    pub table_revision_rate: f64,
    /// Share of good records carrying 1–3 histograms the definitions do not know.
    pub unknown_histogram_rate: f64,
    /// When not 0, records cycle through this many distinct partitions (reasons,
    /// apps, channels and builds enumerated, at most [`SPREAD_MAX`]) instead of the
    /// population's skew: with as many records per file, each part file touches
    /// that many partitions, as production day folders do (thousands per file).
    pub spread: usize,
}

/// The largest [`GenOptions::spread`]: 2 reasons × 9 apps and channels × 200 builds.
pub const SPREAD_MAX: usize = 2 * 9 * 200;

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            reject_rates: RejectRates::default(),
            histograms: 210,
            neighbour_day_rate: 0.005,
            gzip_rate: 0.1,
            duplicate_rate: 0.002,
            table_revision_rate: 0.01,
            unknown_histogram_rate: 0.25,
            spread: 0,
        }
    }
}

/// How a record will be stored, which limits the faults it may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// A SequenceFile record: any bytes.
    SequenceFile,
    /// A text-dump line: no gzip (its bytes could hold a newline).
    TextDump,
}

/// One generated record and what the tool must make of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// The legacy row key (45 bytes unless the fault is in the key).
    pub key: Vec<u8>,
    /// The stored value: the JSON payload, maybe gzipped.
    pub value: Vec<u8>,
    /// The intended outcome.
    pub expected: Expected,
    /// For a good record, the partition it lands in.
    pub partition: Option<String>,
    /// For a good record, how many of its histograms the converter drops as unknown.
    pub dropped: usize,
    /// The value is gzipped.
    pub gzipped: bool,
    /// The key's day is not the folder's day.
    pub neighbour_day: bool,
    /// The doc id was used by an earlier record.
    pub duplicate: bool,
}

/// Dimension values drawn with the 2013 population's skew.
#[derive(Clone, Debug)]
pub struct Population {
    /// Zipf over build ranks, per channel (indexed like [`CHANNELS`]).
    builds: Vec<Zipf>,
}

const CHANNELS: [Channel; 6] = [
    Channel::Release,
    Channel::Beta,
    Channel::Aurora,
    Channel::Nightly,
    Channel::Esr,
    Channel::Default,
];

impl Default for Population {
    fn default() -> Self {
        Population::new()
    }
}

impl Population {
    /// The model.
    pub fn new() -> Population {
        let builds = CHANNELS
            .iter()
            .map(|&c| {
                let s = match c {
                    Channel::Release => 1.3,
                    Channel::Beta => 1.0,
                    Channel::Aurora | Channel::Nightly => 0.9,
                    Channel::Esr => 1.0,
                    Channel::Default => 0.6,
                };
                Zipf::new(c.depth(), s)
            })
            .collect();
        Population { builds }
    }

    /// A valid payload spec for a submission on `day`, with the shipped revision and
    /// about `histograms` histograms.
    pub fn spec(&self, rng: &mut Rng, day: i64, histograms: usize) -> PayloadSpec {
        let app = *rng.weighted(&[
            (App::Firefox, 85.0),
            (App::Fennec, 10.0),
            (App::Thunderbird, 5.0),
        ]);
        let channel = *match app {
            App::Firefox => rng.weighted(&[
                (Channel::Release, 62.0),
                (Channel::Beta, 12.0),
                (Channel::Aurora, 7.0),
                (Channel::Nightly, 15.0),
                (Channel::Esr, 2.0),
                (Channel::Default, 2.0),
            ]),
            App::Fennec => rng.weighted(&[
                (Channel::Release, 55.0),
                (Channel::Beta, 15.0),
                (Channel::Aurora, 10.0),
                (Channel::Nightly, 20.0),
            ]),
            App::Thunderbird => rng.weighted(&[
                (Channel::Release, 80.0),
                (Channel::Beta, 12.0),
                (Channel::Aurora, 4.0),
                (Channel::Nightly, 4.0),
            ]),
        };
        let slot = CHANNELS.iter().position(|&c| c == channel).unwrap_or(0);
        let rank = self.builds[slot].sample(rng);
        let build = calendar::build_before(app, channel, day, rank);
        let reason = match rng.f64() {
            u if u < 0.555 => "saved-session",
            u if u < 0.99 => "idle-daily",
            _ if app == App::Fennec => "android-anr-report",
            // A reason the schema does not list: lands in OTHER.
            _ => "shutdown",
        };
        let revision = match rng.f64() {
            u if u < 0.85 => SHIPPED_REVISION_URL.to_string(),
            // The repository part does not matter, only the hash.
            u if u < 0.97 => format!(
                "http://hg.mozilla.org/{}/rev/{SHIPPED_REVISION}",
                channel.repo()
            ),
            _ => format!(
                "https://hg.mozilla.org/{}/rev/{SHIPPED_REVISION}",
                channel.repo()
            ),
        };
        let lo = histograms - histograms / 5;
        let hi = histograms + histograms / 5;
        PayloadSpec {
            reason: reason.to_string(),
            app,
            channel,
            version: build.version,
            build_id: build.build_id,
            revision: Some(revision),
            histograms: rng.range(lo as u64, hi as u64) as usize,
            unknown_histograms: 0,
            fault: None,
        }
    }
}

/// Makes records one at a time from one seeded stream.
pub struct RecordGen<'m> {
    mappings: &'m Mappings,
    catalog: Catalog<'m>,
    population: Population,
    opts: GenOptions,
    rng: Rng,
    recent_ids: VecDeque<String>,
    /// Records made so far (for [`GenOptions::spread`]).
    made: usize,
}

impl<'m> RecordGen<'m> {
    /// A generator for these mappings (which must define [`SHIPPED_REVISION`]).
    ///
    /// Panics if they do not: the generated histograms follow those definitions.
    pub fn new(mappings: &'m Mappings, seed: u64, opts: GenOptions) -> RecordGen<'m> {
        let defs = mappings
            .definitions(SHIPPED_REVISION)
            .expect("the mappings define the shipped revision");
        RecordGen {
            mappings,
            catalog: Catalog::new(defs),
            population: Population::new(),
            opts,
            rng: Rng::new(seed),
            recent_ids: VecDeque::new(),
            made: 0,
        }
    }

    /// The options in force.
    pub fn options(&self) -> &GenOptions {
        &self.opts
    }

    /// The next record for the folder of `folder_day` (days since 1970-01-01).
    pub fn record(&mut self, folder_day: i64, framing: Framing) -> Record {
        let rng = &mut self.rng;
        let fault = self.opts.reject_rates.draw(rng.f64());
        let neighbour_day = rng.chance(self.opts.neighbour_day_rate);
        let day = if neighbour_day {
            folder_day + if rng.chance(0.5) { 1 } else { -1 }
        } else {
            folder_day
        };
        let duplicate = !self.recent_ids.is_empty() && rng.chance(self.opts.duplicate_rate);
        let doc_id = if duplicate {
            self.recent_ids[rng.index(self.recent_ids.len())].clone()
        } else {
            doc_id(rng)
        };
        if !duplicate {
            if self.recent_ids.len() >= 1000 {
                self.recent_ids.pop_front();
            }
            self.recent_ids.push_back(doc_id.clone());
        }

        let mut spec = self.population.spec(rng, day, self.opts.histograms);
        if self.opts.spread > 0 {
            spread(&mut spec, self.made % self.opts.spread.min(SPREAD_MAX), day);
        }
        self.made += 1;
        let mut dropped = 0;
        match fault {
            None => {
                let table_day = calendar::days_from_civil(2013, 5, 14);
                if day > table_day && rng.chance(self.opts.table_revision_rate) {
                    // A Hadoop-era payload without a revision that the table resolves.
                    spec.app = App::Firefox;
                    spec.channel = Channel::Aurora;
                    spec.version = "23.0a2".into();
                    spec.build_id = format!(
                        "20130514{:02}{:02}{:02}",
                        rng.below(24),
                        rng.below(60),
                        rng.below(60)
                    );
                    spec.revision = None;
                }
                if rng.chance(self.opts.unknown_histogram_rate) {
                    dropped = rng.range(1, 3).min(self.catalog.unknown_available() as u64) as usize;
                    spec.unknown_histograms = dropped;
                }
            }
            Some(Reason::MissingRevision) => {
                spec.revision = None;
                let m = self.mappings;
                let covered = |s: &PayloadSpec| {
                    m.resolve_revision(s.app.name(), s.channel.name(), &s.version, &s.build_id)
                        .is_some()
                };
                if covered(&spec) {
                    // Not a build the table knows: one from the day before its range.
                    spec.build_id = format!("20130513{}", &spec.build_id[8..]);
                }
                debug_assert!(!covered(&spec));
            }
            Some(Reason::InvalidRevision) => {
                let bad = match rng.index(5) {
                    0 => SHIPPED_REVISION.to_string(),
                    1 => format!("http://hg.mozilla.org/rev/{SHIPPED_REVISION}"),
                    2 => format!("hg.mozilla.org/releases/mozilla-aurora/rev/{SHIPPED_REVISION}"),
                    3 => format!(
                        "http://hg.mozilla.org/releases/mozilla-aurora/rev/{}",
                        &SHIPPED_REVISION[..8]
                    ),
                    _ => String::new(),
                };
                spec.revision = Some(bad);
            }
            Some(Reason::UnknownRevision) => {
                let m = self.mappings;
                let known = |h: &str| m.definitions(&h[..12]).is_some();
                let len = if rng.chance(0.5) { 12 } else { 40 };
                let mut hash = rng.hex(len);
                while known(&hash) {
                    hash = rng.hex(hash.len());
                }
                spec.revision = Some(format!(
                    "http://hg.mozilla.org/{}/rev/{hash}",
                    spec.channel.repo()
                ));
            }
            Some(Reason::InvalidJson) => spec.fault = Some(PayloadFault::InvalidJson),
            Some(Reason::UnsupportedVersion) => spec.fault = Some(PayloadFault::UnsupportedVersion),
            Some(Reason::MissingInfo) => spec.fault = Some(PayloadFault::MissingInfo),
            Some(Reason::HistogramMismatch) => spec.fault = Some(PayloadFault::HistogramMismatch),
            Some(Reason::InvalidBucket) => spec.fault = Some(PayloadFault::InvalidBucket),
            Some(Reason::InvalidCount) => spec.fault = Some(PayloadFault::InvalidCount),
            Some(Reason::InvalidKey | Reason::CorruptedData) => {}
        }

        let text = self.catalog.payload(rng, &spec);
        let day_text = calendar::fmt_day(day);
        let mut key = rowkey::build(&day_text, &doc_id);
        if fault == Some(Reason::InvalidKey) {
            key = bad_key(rng, &day_text, &doc_id, framing);
        }
        let mut gzipped = false;
        let value = match fault {
            Some(Reason::CorruptedData) => corrupt(rng, text.into_bytes(), framing),
            _ if framing == Framing::SequenceFile && rng.chance(self.opts.gzip_rate) => {
                gzipped = true;
                gzip(text.as_bytes())
            }
            _ => text.into_bytes(),
        };
        let (expected, partition) = match fault {
            Some(r) => {
                dropped = 0;
                (Expected::Reject(r), None)
            }
            None => (Expected::Ok, Some(self.partition(&spec, &day_text))),
        };
        Record {
            key,
            value,
            expected,
            partition,
            dropped,
            gzipped,
            neighbour_day,
            duplicate,
        }
    }

    /// The partition of a good record, by the mappings' storage schema.
    fn partition(&self, spec: &PayloadSpec, day: &str) -> String {
        let schema = self.mappings.schema();
        let finals: Vec<String> = schema
            .dimension_names()
            .enumerate()
            .map(|(d, name)| {
                let raw = match name {
                    "reason" => Some(spec.reason.as_str()),
                    "appName" => Some(spec.app.name()),
                    "appUpdateChannel" => Some(spec.channel.name()),
                    "appVersion" => Some(spec.version.as_str()),
                    "appBuildID" => Some(spec.build_id.as_str()),
                    "submission_date" => Some(day),
                    "revision" => spec.revision.as_deref(),
                    _ => None,
                };
                schema.final_value(d, raw)
            })
            .collect();
        schema.partition(&finals)
    }
}

/// Sets the dimensions of partition number `k` of [`GenOptions::spread`]: every `k`
/// below [`SPREAD_MAX`] is a distinct partition of the same day.
fn spread(spec: &mut PayloadSpec, k: usize, day: i64) {
    const PAIRS: [(App, Channel); 9] = [
        (App::Firefox, Channel::Nightly),
        (App::Firefox, Channel::Aurora),
        (App::Firefox, Channel::Beta),
        (App::Fennec, Channel::Nightly),
        (App::Fennec, Channel::Aurora),
        (App::Fennec, Channel::Beta),
        (App::Thunderbird, Channel::Nightly),
        (App::Thunderbird, Channel::Aurora),
        (App::Thunderbird, Channel::Beta),
    ];
    spec.reason = ["saved-session", "idle-daily"][k % 2].to_string();
    let (app, channel) = PAIRS[k / 2 % PAIRS.len()];
    let build = calendar::build_before(app, channel, day, k / 2 / PAIRS.len());
    spec.app = app;
    spec.channel = channel;
    spec.version = build.version;
    spec.build_id = build.build_id;
}

/// A random doc id: a version-4 UUID, some starting `89`/`8a` (salt byte tab or
/// newline), a few in upper case (ids are any case).
fn doc_id(rng: &mut Rng) -> String {
    let mut hex = rng.hex(32);
    if rng.chance(0.02) {
        hex.replace_range(..2, if rng.chance(0.5) { "89" } else { "8a" });
    }
    hex.replace_range(12..13, "4");
    let variant = ["8", "9", "a", "b"][rng.index(4)];
    hex.replace_range(16..17, variant);
    let id = format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    );
    if rng.chance(0.005) {
        id.to_ascii_uppercase()
    } else {
        id
    }
}

/// A row key that `rowkey::parse` refuses: wrong salt, impossible date, an id that is
/// not a uuid, or a wrong length.
///
/// In a text dump, a key of the wrong length makes a malformed line, which runs to
/// the first newline from its start: such a key must not hold a newline (a salt of
/// `\n`), or the one record would read as two. The salt is spoiled instead.
fn bad_key(rng: &mut Rng, day: &str, doc_id: &str, framing: Framing) -> Vec<u8> {
    let mut key = rowkey::build(day, doc_id);
    let mut variant = rng.index(5);
    if framing == Framing::TextDump && variant >= 3 && key.contains(&b'\n') {
        variant = 0;
    }
    match variant {
        0 => key[0] ^= 1 + rng.below(255) as u8,
        1 => {
            let impossible = ["30", "31", "32", "00"][rng.index(4)];
            let d = format!(
                "{}{}{}",
                &day[..4],
                if impossible == "00" { &day[4..6] } else { "02" },
                impossible
            );
            key[1..9].copy_from_slice(d.as_bytes());
            // Keep the salt right so only the date is wrong.
        }
        2 => {
            let at = 9 + [0, 9, 14, 19, 24, 35][rng.index(6)];
            key[at] = b'g';
        }
        3 => {
            key.pop();
        }
        _ => key.push(b'0' + rng.below(10) as u8),
    }
    key
}

/// A value that is not valid UTF-8 (Latin-1 text, a stray byte, a cut sequence), or
/// in a SequenceFile also a gzip body that does not inflate.
fn corrupt(rng: &mut Rng, mut text: Vec<u8>, framing: Framing) -> Vec<u8> {
    let gzip_ok = framing == Framing::SequenceFile;
    match rng.index(if gzip_ok { 5 } else { 3 }) {
        0 | 1 if !text.is_empty() => {
            // Latin-1 or a lone continuation byte inside the text; never a newline.
            let bad: &[u8] = [&b"\xe9"[..], b"\xff", b"\x80", b"\xe6\x97"][rng.index(4)];
            let at = rng.index(text.len());
            text.splice(at..at, bad.iter().copied());
            text
        }
        0..=2 => {
            let mut v = b"{\"ver\":1,\"info\":{\"locale\":\"".to_vec();
            v.push(0xe9);
            v.extend_from_slice(b"\"}}");
            v
        }
        3 => {
            // A gzip body cut short.
            let z = gzip(&text);
            let keep = 10 + rng.index(z.len() / 2);
            z[..keep.min(z.len() - 1)].to_vec()
        }
        _ => {
            // The gzip magic, then garbage.
            let mut v = vec![0x1f, 0x8b];
            v.extend((0..64).map(|_| rng.below(256) as u8));
            v
        }
    }
}

/// Gzips with a fixed header (no file name, mtime 0), so output is reproducible.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut z = flate2::GzBuilder::new().mtime(0).write(
        Vec::with_capacity(bytes.len() / 4),
        flate2::Compression::fast(),
    );
    z.write_all(bytes).expect("writing to memory");
    z.finish().expect("writing to memory")
}

/// Intended counts over a set of generated records, for `_expected.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// All records.
    pub records: u64,
    /// Records meant to be converted.
    pub ok: u64,
    /// Records meant to be rejected, by reason (every reason listed, zeros too).
    pub by_reason: BTreeMap<&'static str, u64>,
    /// Unknown histograms the converter drops from good records.
    pub histograms_dropped: u64,
    /// Records whose key day differs from their folder's.
    pub neighbour_day: u64,
    /// Records reusing an earlier doc id.
    pub duplicates: u64,
    /// Gzipped values.
    pub gzipped: u64,
    /// Good records per partition.
    pub partitions: BTreeMap<String, u64>,
}

impl Tally {
    /// An empty tally.
    pub fn new() -> Tally {
        Tally {
            by_reason: Reason::ALL.iter().map(|r| (r.as_str(), 0)).collect(),
            ..Tally::default()
        }
    }

    /// Counts one record.
    pub fn add(&mut self, r: &Record) {
        self.records += 1;
        match r.expected {
            Expected::Ok => self.ok += 1,
            Expected::Reject(reason) => *self.by_reason.entry(reason.as_str()).or_default() += 1,
        }
        self.histograms_dropped += r.dropped as u64;
        self.neighbour_day += u64::from(r.neighbour_day);
        self.duplicates += u64::from(r.duplicate);
        self.gzipped += u64::from(r.gzipped);
        if let Some(p) = &r.partition {
            *self.partitions.entry(p.clone()).or_default() += 1;
        }
    }

    /// Records meant to be rejected.
    pub fn rejected(&self) -> u64 {
        self.records - self.ok
    }
}

/// What a data set holds: days, files and records, how they are stored.
#[derive(Clone, Debug)]
pub struct DatasetSpec {
    /// The seed of everything.
    pub seed: u64,
    /// First folder day (days since 1970-01-01).
    pub first_day: i64,
    /// Last folder day, inclusive.
    pub last_day: i64,
    /// Part files per day.
    pub files_per_day: usize,
    /// Records per part file.
    pub records_per_file: usize,
    /// SequenceFile compression.
    pub compression: Compression,
    /// Share of part files written as text dumps instead.
    pub text_dump_fraction: f64,
    /// The record mix.
    pub options: GenOptions,
}

/// One file of a data set: path relative to the output folder, and its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataFile {
    /// E.g. `data/telemetry/2013/10/01/part-m-00000`.
    pub path: String,
    /// The file's content.
    pub bytes: Vec<u8>,
    /// A part file written as a text dump.
    pub text_dump: bool,
}

/// The files of a data set in order (each day's parts, then its `_SUCCESS`), built
/// in memory one at a time; [`Dataset::tally`] has the counts of what was made.
pub struct Dataset<'m> {
    spec: DatasetSpec,
    gen: RecordGen<'m>,
    layout: Rng,
    day: i64,
    file: usize,
    tally: Tally,
    text_dumps: u64,
}

impl<'m> Dataset<'m> {
    /// A data set following `spec`, with histograms for `mappings`.
    pub fn new(mappings: &'m Mappings, spec: DatasetSpec) -> Dataset<'m> {
        let gen = RecordGen::new(mappings, rng::hash(&[spec.seed, 1]), spec.options.clone());
        Dataset {
            layout: Rng::new(rng::hash(&[spec.seed, 2])),
            day: spec.first_day,
            file: 0,
            tally: Tally::new(),
            text_dumps: 0,
            spec,
            gen,
        }
    }

    /// Counts of the records made so far.
    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// Part files written as text dumps so far.
    pub fn text_dumps(&self) -> u64 {
        self.text_dumps
    }

    fn part(&mut self) -> DataFile {
        let text_dump = self.layout.chance(self.spec.text_dump_fraction);
        let sync: [u8; SYNC_SIZE] = {
            let a = rng::hash(&[self.spec.seed, self.day as u64, self.file as u64, 3]);
            let b = rng::mix64(a);
            let mut s = [0u8; SYNC_SIZE];
            s[..8].copy_from_slice(&a.to_be_bytes());
            s[8..].copy_from_slice(&b.to_be_bytes());
            s
        };
        let framing = if text_dump {
            Framing::TextDump
        } else {
            Framing::SequenceFile
        };
        let path = format!(
            "data/telemetry/{}/part-m-{:05}",
            calendar::fmt_day_path(self.day),
            self.file
        );
        let mut bytes = Vec::new();
        let mut writer = (!text_dump).then(|| {
            SeqWriter::new(
                Vec::new(),
                SeqWriterOptions::new(self.spec.compression, sync),
            )
            .expect("writing to memory")
        });
        for _ in 0..self.spec.records_per_file {
            let r = self.gen.record(self.day, framing);
            self.tally.add(&r);
            match &mut writer {
                Some(w) => w.append(&r.key, &r.value).expect("writing to memory"),
                None => {
                    bytes.extend_from_slice(&r.key);
                    bytes.push(b'\t');
                    bytes.extend_from_slice(&r.value);
                    bytes.push(b'\n');
                }
            }
        }
        if let Some(w) = writer {
            bytes = w.finish().expect("writing to memory");
        } else {
            self.text_dumps += 1;
        }
        DataFile {
            path,
            bytes,
            text_dump,
        }
    }
}

impl Iterator for Dataset<'_> {
    type Item = DataFile;

    fn next(&mut self) -> Option<DataFile> {
        if self.day > self.spec.last_day {
            return None;
        }
        if self.file < self.spec.files_per_day {
            let f = self.part();
            self.file += 1;
            return Some(f);
        }
        let f = DataFile {
            path: format!(
                "data/telemetry/{}/_SUCCESS",
                calendar::fmt_day_path(self.day)
            ),
            bytes: Vec::new(),
            text_dump: false,
        };
        self.day += 1;
        self.file = 0;
        Some(f)
    }
}

#[cfg(test)]
mod tests;
