//! One classic (ver 1) Telemetry payload as compact JSON text, shaped like the real
//! `hadoop_era_payload_v1.json`: `info` with application, OS and hardware fields,
//! `simpleMeasurements`, about two hundred sparse histograms valid for a set of
//! definitions (some `STARTUP_` copies, a few names the definitions do not know),
//! `slowSQL`, `chromeHangs`, `lateWrites` and `addonHistograms`.
//!
//! What goes into `info` and whether the payload carries a fault is the caller's
//! choice ([`PayloadSpec`]); everything else is drawn from the generator. This module
//! knows nothing of row keys, bytes that are not UTF-8 or compression: those are
//! faults of a stored record, made by the record generator around it.

use std::fmt::Write as _;

use crate::core::histdefs::{Definitions, HistDef, Kind};

use super::calendar::{App, Channel};
use super::rng::Rng;

/// Histograms of Firefox 16 that Aurora 23 no longer defines, and histograms added
/// after Aurora 23: real names that the shipped definitions do not know, so the
/// converter drops them.
pub const UNKNOWN_HISTOGRAMS: [&str; 16] = [
    "A11Y_XFORMS_USAGE_FLAG",
    "CACHE_DEVICE_SEARCH",
    "CACHE_SERVICE_LOCK_WAIT",
    "DISK_CACHE_CORRUPT",
    "IMAGE_DECODE_LATENCY",
    "MEMORY_EXPLICIT",
    "MULTIPART_XHR_RESPONSE",
    "PRIVATE_BROWSING_TRANSITION_ENTER_TOTAL_MS",
    "URLCLASSIFIER_PS_LOOKUP_TIME",
    "WORD_CACHE_HITS",
    "FX_THUMBNAILS_BG_CAPTURE_DONE_REASON_2",
    "GC_MINOR_REASON",
    "DEVTOOLS_TOOLBOX_OPENED_BOOLEAN",
    "NEWTAB_PAGE_SHOWN",
    "PLUGINS_NOTIFICATION_SHOWN",
    "WEBRTC_ICE_SUCCESS_RATE",
];

/// A fault written into the payload text itself; each makes the converter reject the
/// record with one reason (see [`PayloadFault::reason`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadFault {
    /// The text is cut short (a truncated upload), or empty.
    InvalidJson,
    /// `ver` is missing, 2, 3 or the string `"1"`.
    UnsupportedVersion,
    /// `info` is absent or `null`.
    MissingInfo,
    /// One histogram's `bucket_count` differs from its definition.
    HistogramMismatch,
    /// One histogram has a `values` key that is not a bucket lower bound.
    InvalidBucket,
    /// One histogram has a count that is not a JSON integer ≥ 0.
    InvalidCount,
}

impl PayloadFault {
    /// The reason the converter gives for this fault.
    pub fn reason(self) -> crate::core::reason::Reason {
        use crate::core::reason::Reason;
        match self {
            PayloadFault::InvalidJson => Reason::InvalidJson,
            PayloadFault::UnsupportedVersion => Reason::UnsupportedVersion,
            PayloadFault::MissingInfo => Reason::MissingInfo,
            PayloadFault::HistogramMismatch => Reason::HistogramMismatch,
            PayloadFault::InvalidBucket => Reason::InvalidBucket,
            PayloadFault::InvalidCount => Reason::InvalidCount,
        }
    }
}

/// What a payload must contain: the routing fields of `info`, the revision, how many
/// histograms, and an optional fault.
#[derive(Clone, Debug, PartialEq)]
pub struct PayloadSpec {
    /// `info.reason`, e.g. `saved-session`.
    pub reason: String,
    /// The application (`info.appName`, `appID`, and the OS fields that fit it).
    pub app: App,
    /// `info.appUpdateChannel`.
    pub channel: Channel,
    /// `info.appVersion`.
    pub version: String,
    /// `info.appBuildID`, `yyyyMMddhhmmss`.
    pub build_id: String,
    /// `info.revision`; `None` leaves the field out.
    pub revision: Option<String>,
    /// Histograms with a definition (including `STARTUP_` copies).
    pub histograms: usize,
    /// Histograms the definitions do not know (at most [`UNKNOWN_HISTOGRAMS`]'s
    /// length); the converter drops them.
    pub unknown_histograms: usize,
    /// A fault to write into the text, if any.
    pub fault: Option<PayloadFault>,
}

impl PayloadSpec {
    /// A valid Firefox aurora payload with the shipped revision and `histograms`
    /// histograms: a starting point for tests and benchmarks.
    pub fn firefox(histograms: usize) -> PayloadSpec {
        PayloadSpec {
            reason: "saved-session".into(),
            app: App::Firefox,
            channel: Channel::Aurora,
            version: "23.0a2".into(),
            build_id: "20130514004016".into(),
            revision: Some(super::SHIPPED_REVISION_URL.into()),
            histograms,
            unknown_histograms: 0,
            fault: None,
        }
    }
}

/// Definitions in a fixed order, ready for drawing histograms: build once, draw many
/// payloads.
pub struct Catalog<'d> {
    /// (name, definition, whether a `STARTUP_` copy may be added: not when
    /// `STARTUP_<name>` has a definition of its own, which would win).
    names: Vec<(&'d str, &'d HistDef, bool)>,
    unknown: Vec<&'static str>,
}

impl<'d> Catalog<'d> {
    /// The catalog of `defs`, sorted by name (the definitions' own order is a hash
    /// map's, which would make the output differ between runs).
    pub fn new(defs: &'d Definitions) -> Catalog<'d> {
        let mut names: Vec<_> = defs
            .iter()
            .map(|(name, def)| {
                // The copy's look-up falls back to this very definition unless
                // `STARTUP_<name>` is defined itself.
                let copy = defs.lookup(&format!("STARTUP_{name}"));
                (name, def, copy.is_some_and(|c| std::ptr::eq(c, def)))
            })
            .collect();
        names.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let unknown = UNKNOWN_HISTOGRAMS
            .into_iter()
            .filter(|n| defs.lookup(n).is_none())
            .collect();
        Catalog { names, unknown }
    }

    /// How many unknown names a payload can carry with these definitions.
    pub fn unknown_available(&self) -> usize {
        self.unknown.len()
    }

    /// A payload following `spec`.
    ///
    /// Panics if the definitions are empty while histograms are asked for, or if
    /// more unknown histograms are asked for than [`Catalog::unknown_available`].
    pub fn payload(&self, rng: &mut Rng, spec: &PayloadSpec) -> String {
        let mut out = String::with_capacity(256 * spec.histograms + 4096);
        let fault = spec.fault;
        if fault == Some(PayloadFault::InvalidJson) && rng.chance(0.05) {
            // An empty upload.
            return out;
        }
        let info_last = rng.chance(0.9);
        out.push('{');
        match fault {
            Some(PayloadFault::UnsupportedVersion) => match rng.index(4) {
                0 => {}
                1 => out.push_str("\"ver\":2,"),
                2 => out.push_str("\"ver\":3,"),
                _ => out.push_str("\"ver\":\"1\","),
            },
            _ => out.push_str("\"ver\":1,"),
        }
        if !info_last {
            self.info(rng, spec, &mut out);
        }
        simple_measurements(rng, spec.app, &mut out);
        self.histograms(rng, spec, &mut out);
        slow_sql(rng, &mut out);
        hangs(rng, &mut out);
        self.addon_histograms(rng, &mut out);
        if info_last {
            self.info(rng, spec, &mut out);
        }
        // Drop the trailing comma of the last member.
        out.pop();
        out.push('}');
        if fault == Some(PayloadFault::InvalidJson) {
            // Cut at a character boundary: any strict prefix of an object is invalid.
            let mut at = 1 + rng.index(out.len() - 1);
            while !out.is_char_boundary(at) {
                at -= 1;
            }
            out.truncate(at);
        }
        out
    }

    /// `"info":{...},` (or the fault in its place).
    fn info(&self, rng: &mut Rng, spec: &PayloadSpec, out: &mut String) {
        if spec.fault == Some(PayloadFault::MissingInfo) {
            if rng.chance(0.5) {
                out.push_str("\"info\":null,");
            }
            return;
        }
        out.push_str("\"info\":{");
        field_str(out, "reason", &spec.reason);
        let (os, os_version) = os_of(rng, spec.app);
        field_str(out, "OS", os);
        field_str(out, "appID", spec.app.id());
        field_str(out, "appVersion", &spec.version);
        field_str(out, "appName", spec.app.name());
        field_str(out, "appBuildID", &spec.build_id);
        field_str(out, "appUpdateChannel", spec.channel.name());
        field_str(out, "platformBuildID", &spec.build_id);
        if let Some(rev) = &spec.revision {
            field_str(out, "revision", rev);
        }
        let locale = *rng.weighted(&LOCALES);
        field_str(out, "locale", locale);
        field_num(out, "cpucount", *rng.pick(&[1, 2, 2, 4, 4, 4, 8]));
        field_num(
            out,
            "memsize",
            *rng.pick(&[1023, 2047, 3071, 4095, 6142, 8191, 16383]),
        );
        match os {
            "Android" => {
                field_str(out, "arch", "armv7l");
                field_str(out, "version", os_version);
                let (device, manufacturer, hardware) = *rng.pick(&ANDROID_DEVICES);
                field_str(out, "device", device);
                field_str(out, "manufacturer", manufacturer);
                field_str(out, "hardware", hardware);
                for f in ["hasARMv6", "hasARMv7", "hasNEON"] {
                    field_raw(out, f, "true");
                }
            }
            _ => {
                let arch = if os == "WINNT" && rng.chance(0.9) {
                    "x86"
                } else {
                    "x86-64"
                };
                field_str(out, "arch", arch);
                field_str(out, "version", os_version);
                for f in ["hasMMX", "hasSSE", "hasSSE2", "hasSSE3"] {
                    field_raw(out, f, "true");
                }
                for f in ["hasSSSE3", "hasSSE4A", "hasSSE4_1", "hasSSE4_2"] {
                    field_raw(out, f, if rng.chance(0.6) { "true" } else { "false" });
                }
                for f in ["hasEDSP", "hasARMv6", "hasARMv7", "hasNEON"] {
                    field_raw(out, f, "false");
                }
            }
        }
        let (vendor, device, description) = *rng.pick(&ADAPTERS);
        let description = if os == "WINNT" && rng.chance(0.15) {
            // Windows names its fallback adapter in the user's language.
            basic_adapter(locale)
        } else {
            description
        };
        field_str(out, "adapterDescription", description);
        field_str(out, "adapterVendorID", vendor);
        field_str(out, "adapterDeviceID", device);
        if os == "WINNT" {
            const RAM: [&str; 4] = ["256", "512", "1024", "2048"];
            field_str(out, "adapterRAM", RAM[rng.index(RAM.len())]);
            field_str(
                out,
                "adapterDriver",
                "igdumd64 igd10umd64 igdumdx32 igd10umd32",
            );
            let dv = format!(
                "{}.{}.{}.{}",
                rng.range(8, 9),
                rng.range(15, 17),
                rng.range(10, 13),
                rng.range(1000, 9999)
            );
            field_str(out, "adapterDriverVersion", &dv);
            let dd = format!(
                "{}-{}-{}",
                rng.range(1, 12),
                rng.range(1, 28),
                rng.range(2010, 2013)
            );
            field_str(out, "adapterDriverDate", &dd);
            field_raw(
                out,
                "DWriteEnabled",
                if rng.chance(0.8) { "true" } else { "false" },
            );
            field_str(out, "DWriteVersion", "6.2.9200.16492");
        }
        if spec.app != App::Fennec {
            let n = rng.exp_int(3.0) as usize;
            let picked = sample_indices(rng, ADDONS.len(), n);
            let addons: Vec<&str> = picked.into_iter().map(|i| ADDONS[i]).collect();
            let addons = addons.join(",");
            field_str(out, "addons", &addons);
            let flash = format!(
                "11.{}.{}.{}",
                rng.range(4, 9),
                rng.range(400, 900),
                rng.range(1, 300)
            );
            field_str(out, "flashVersion", &flash);
        }
        out.pop();
        out.push_str("},");
    }

    /// `"histograms":{...},`
    fn histograms(&self, rng: &mut Rng, spec: &PayloadSpec, out: &mut String) {
        out.push_str("\"histograms\":{");
        // Payloads from 2013 carry the statistics after `sum`; a few older ones not.
        let stats = rng.chance(0.85);
        let wants_hist_fault = matches!(
            spec.fault,
            Some(
                PayloadFault::HistogramMismatch
                    | PayloadFault::InvalidBucket
                    | PayloadFault::InvalidCount
            )
        );
        let total = spec.histograms.max(usize::from(wants_hist_fault));
        assert!(
            total == 0 || !self.names.is_empty(),
            "histograms asked for, but no definitions"
        );
        assert!(
            spec.unknown_histograms <= self.unknown.len(),
            "at most {} unknown histograms",
            self.unknown.len()
        );
        // About one in nine is a STARTUP_ copy of the histogram before it.
        let startup = total / 9;
        let base = (total - startup).min(self.names.len());
        let startup = total - base;
        let mut picked = self.pick_present(rng, base);
        picked.sort_unstable();
        // (name, definition, is a STARTUP_ copy)
        let mut list: Vec<(&str, &HistDef, bool)> = Vec::with_capacity(total);
        let mut copies_left = startup;
        for (k, &i) in picked.iter().enumerate() {
            let (name, def, copy_ok) = self.names[i];
            list.push((name, def, false));
            let remaining = picked.len() - k;
            if copy_ok && copies_left > 0 && (rng.index(remaining) < copies_left) {
                list.push((name, def, true));
                copies_left -= 1;
            }
        }
        let fault_at = wants_hist_fault.then(|| rng.index(list.len()));
        let mut unknown: Vec<(usize, &str)> =
            sample_indices(rng, self.unknown.len(), spec.unknown_histograms)
                .into_iter()
                .map(|u| (rng.index(list.len() + 1), self.unknown[u]))
                .collect();
        unknown.sort_unstable();
        let mut unknown = unknown.into_iter().peekable();
        for (k, &(name, def, startup)) in list.iter().enumerate() {
            while let Some((_, u)) = unknown.next_if(|&(at, _)| at == k) {
                let shape = self.names[rng.index(self.names.len())].1;
                out.push('"');
                out.push_str(u);
                out.push_str("\":");
                histogram(rng, shape, false, HistFault::None, stats, out);
            }
            out.push('"');
            if startup {
                out.push_str("STARTUP_");
            }
            out.push_str(name);
            out.push_str("\":");
            let hf = match (fault_at == Some(k), spec.fault) {
                (true, Some(PayloadFault::HistogramMismatch)) => HistFault::BucketCount,
                (true, Some(PayloadFault::InvalidBucket)) => HistFault::Bucket,
                (true, Some(PayloadFault::InvalidCount)) => HistFault::Count,
                _ => HistFault::None,
            };
            histogram(rng, def, startup, hf, stats, out);
        }
        for (_, u) in unknown {
            let shape = self.names[rng.index(self.names.len())].1;
            out.push('"');
            out.push_str(u);
            out.push_str("\":");
            histogram(rng, shape, false, HistFault::None, stats, out);
        }
        if out.ends_with(',') {
            out.pop();
        }
        out.push_str("},");
    }

    /// `k` distinct definitions (indices into `names`), each chosen with its
    /// [`presence`] weight (Efraimidis–Spirakis: the `k` largest `u^(1/w)`).
    fn pick_present(&self, rng: &mut Rng, k: usize) -> Vec<usize> {
        let mut keyed: Vec<(f64, usize)> = self
            .names
            .iter()
            .enumerate()
            .map(|(i, (name, _, _))| (rng.f64().powf(1.0 / presence(name)), i))
            .collect();
        let k = k.min(keyed.len());
        if k < keyed.len() {
            keyed.select_nth_unstable_by(k, |a, b| b.0.total_cmp(&a.0));
        }
        keyed.truncate(k);
        keyed.into_iter().map(|(_, i)| i).collect()
    }

    /// `"addonHistograms":{...},` — usually empty, sometimes one add-on's histogram.
    fn addon_histograms(&self, rng: &mut Rng, out: &mut String) {
        out.push_str("\"addonHistograms\":{");
        let stats = true;
        if !self.names.is_empty() && rng.chance(0.05) {
            out.push_str("\"{d10d0bf8-f5b5-c8b4-a8b2-2b9879e08c5d}\":{\"ADBLOCK_FILTER_LOAD_MS\":");
            let shape = self.names[rng.index(self.names.len())].1;
            histogram(rng, shape, false, HistFault::None, stats, out);
            out.pop();
            out.push('}');
        }
        out.push_str("},");
    }
}

/// How likely histogram `name` is to have data in a session, as a weight in (0, 1]:
/// memory reporters are in every ping, developer-tools timings in few, the rest
/// spread by a stable hash of the name (so the same histograms are common in every
/// data set). This sets the mix of bucket counts, hence the converted size: the
/// 1000-bucket definitions are mostly `DEVTOOLS_*` and `MEMORY_*`.
fn presence(name: &str) -> f64 {
    if name.starts_with("MEMORY_") {
        return 1.0;
    }
    if name.starts_with("DEVTOOLS_") {
        return 0.02;
    }
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    0.1 + 0.9 * (super::rng::mix64(h) >> 11) as f64 / (1u64 << 53) as f64
}

/// `k` distinct indices of `0..n`, in random order (partial Fisher–Yates).
fn sample_indices(rng: &mut Rng, n: usize, k: usize) -> Vec<usize> {
    let mut all: Vec<usize> = (0..n).collect();
    let k = k.min(n);
    for i in 0..k {
        let j = i + rng.index(n - i);
        all.swap(i, j);
    }
    all.truncate(k);
    all
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HistFault {
    None,
    BucketCount,
    Bucket,
    Count,
}

/// `{"range":..,"bucket_count":..,"histogram_type":..,"values":{..},"sum":..,..},`
///
/// `stats`: add the statistics after `sum` (payloads from 2013 have them, older ones
/// only `sum`).
fn histogram(
    rng: &mut Rng,
    def: &HistDef,
    startup: bool,
    fault: HistFault,
    stats: bool,
    out: &mut String,
) {
    let b = &def.buckets;
    let n = b.len();
    let htype = match def.kind {
        Kind::Exponential => 0,
        Kind::Linear | Kind::Enumerated => 1,
        Kind::Boolean => 2,
        Kind::Flag => 3,
        Kind::Count => 4,
    };
    let bucket_count = match fault {
        HistFault::BucketCount if rng.chance(0.5) || n <= 3 => n + 1 + rng.index(3),
        HistFault::BucketCount => n - 1,
        _ => n,
    };
    let _ = write!(
        out,
        "{{\"range\":[{},{}],\"bucket_count\":{bucket_count},\"histogram_type\":{htype},\"values\":{{",
        b[1],
        b[n - 1]
    );
    // (bucket index, count) in ascending bucket order.
    let mut values: Vec<(usize, u64)> = Vec::with_capacity(16);
    let scale = if startup { 3.0 } else { 60.0 };
    match def.kind {
        Kind::Flag => {
            if rng.chance(0.7) {
                values.extend([(0, 1), (1, 0)]);
            } else {
                values.extend([(0, 0), (1, 1), (2, 0)]);
            }
        }
        Kind::Boolean | Kind::Count => {
            let no = rng.exp_int(scale);
            let yes = if rng.chance(0.4) {
                rng.exp_int(scale / 4.0)
            } else {
                0
            };
            values.push((0, no));
            values.push((1, yes));
            if yes > 0 {
                values.push((2, 0));
            }
        }
        _ => {
            // A run of buckets around a mode, low buckets more likely, some gaps.
            let width = (1 + rng.exp_int(if startup { 1.5 } else { 12.0 }) as usize).min(n);
            let span = n - width;
            let start = if span == 0 {
                0
            } else {
                (rng.f64() * rng.f64() * (span + 1) as f64) as usize
            }
            .min(span);
            let mode = start + rng.index(width);
            let peak = 1 + rng.exp_int(scale) * if rng.chance(0.03) { 300 } else { 1 };
            if start > 0 && rng.chance(0.3) {
                values.push((start - 1, 0));
            }
            for i in start..start + width {
                let d = i.abs_diff(mode) as f64;
                let c = (peak as f64 / (1.0 + d * d * rng.f64())).round() as u64;
                if c > 0 || i == start {
                    values.push((i, c));
                }
            }
            if start + width < n {
                values.push((start + width, 0));
            }
        }
    }
    // The fault's target entry: a key that is not a lower bound, or a bad count.
    let target = rng.index(values.len());
    let mut sum: u64 = 0;
    let mut log_sum = 0.0f64;
    let mut log_sum_sq = 0.0f64;
    let mut sum_sq = 0.0f64;
    for (k, &(i, c)) in values.iter().enumerate() {
        if k > 0 {
            out.push(',');
        }
        let lower = b[i];
        if fault == HistFault::Bucket && k == target {
            out.push('"');
            out.push_str(&bad_bucket_key(rng, def, i));
            let _ = write!(out, "\":{c}");
            continue;
        }
        let _ = write!(out, "\"{lower}\":");
        if fault == HistFault::Count && k == target {
            const BAD: [&str; 6] = ["-1", "1.5", "\"2\"", "1e2", "null", "2.0"];
            out.push_str(BAD[rng.index(BAD.len())]);
        } else {
            let _ = write!(out, "{c}");
        }
        let upper = b.get(i + 1).copied().unwrap_or(lower + 1);
        let v = if upper > lower + 1 {
            lower + rng.index((upper - lower) as usize) as i64
        } else {
            lower
        };
        let v = v.max(0) as u64;
        sum = sum.saturating_add(c.saturating_mul(v));
        let vf = v as f64;
        let lv = (vf + 1.0).ln();
        log_sum += c as f64 * lv;
        log_sum_sq += c as f64 * lv * lv;
        sum_sq += c as f64 * vf * vf;
    }
    let _ = write!(out, "}},\"sum\":{sum}");
    if stats {
        if def.kind == Kind::Exponential {
            // Most exponential histograms with samples carry the log statistics as
            // floats; the others (those Gecko did not keep them for) write zeros. The
            // real published record of `published_v2_ss-ff-n-22.lzma` has floats in
            // 144 of its 195 exponential histograms with samples (74%). Rust prints
            // the shortest round-trip form, as Python's repr did.
            if rng.chance(0.74) {
                let _ = write!(
                    out,
                    ",\"log_sum\":{log_sum},\"log_sum_squares\":{log_sum_sq}"
                );
            } else {
                out.push_str(",\"log_sum\":0,\"log_sum_squares\":0");
            }
        } else {
            let two32 = 4_294_967_296.0f64;
            let hi = (sum_sq / two32).floor();
            let lo = sum_sq - hi * two32;
            let _ = write!(
                out,
                ",\"sum_squares_lo\":{},\"sum_squares_hi\":{}",
                lo as u64, hi as u64
            );
        }
    }
    out.push_str("},");
}

/// Text that is not a lower bound of `def` (checked), near bucket `i`.
fn bad_bucket_key(rng: &mut Rng, def: &HistDef, i: usize) -> String {
    let b = &def.buckets;
    let last = b[b.len() - 1];
    let candidates = [
        // Between two bounds, where there is room.
        b.get(i + 1)
            .filter(|&&up| up > b[i] + 1)
            .map(|&up| (b[i] + 1 + rng.index((up - b[i] - 1) as usize) as i64).to_string()),
        // Past the last bound (a definition with more buckets once wrote these).
        Some((last + 1 + rng.index(100) as i64).to_string()),
        // Not canonical decimal text.
        Some(format!("0{}", b[i].max(1))),
        Some("-1".to_string()),
    ];
    let options: Vec<String> = candidates.into_iter().flatten().collect();
    let key = rng.pick(&options).clone();
    debug_assert!(def.bucket_index(&key).is_none(), "{key} is a bound");
    key
}

fn os_of(rng: &mut Rng, app: App) -> (&'static str, &'static str) {
    match app {
        App::Fennec => (
            "Android",
            *rng.pick(&["2.3.6", "4.0.4", "4.1.2", "4.2.2", "4.3"]),
        ),
        _ => *rng.weighted(&[
            (("WINNT", "5.1"), 20.0),
            (("WINNT", "6.0"), 4.0),
            (("WINNT", "6.1"), 50.0),
            (("WINNT", "6.2"), 12.0),
            (("Darwin", "12.5.0"), 6.0),
            (("Darwin", "11.4.2"), 2.0),
            (("Linux", "3.2.0-4-amd64"), 3.0),
            (("Linux", "3.8.0-31-generic"), 3.0),
        ]),
    }
}

const LOCALES: [(&str, f64); 10] = [
    ("en-US", 45.0),
    ("de", 12.0),
    ("fr", 8.0),
    ("ru", 6.0),
    ("es-ES", 5.0),
    ("pt-BR", 5.0),
    ("pl", 4.0),
    ("ja", 4.0),
    ("zh-CN", 4.0),
    ("it", 3.0),
];

/// Windows' "basic display adapter" in the user's language.
fn basic_adapter(locale: &str) -> &'static str {
    match locale {
        "de" => "Microsoft Standardgrafikkarte",
        "fr" => "Carte vidéo de base Microsoft",
        "ru" => "Базовый видеоадаптер (Майкрософт)",
        "ja" => "Microsoft 基本ディスプレイ アダプター",
        "zh-CN" => "Microsoft 基本显示适配器",
        "es-ES" => "Adaptador de pantalla básico de Microsoft",
        "pt-BR" => "Adaptador de Vídeo Básico da Microsoft",
        "pl" => "Podstawowa karta graficzna firmy Microsoft",
        "it" => "Scheda video di base Microsoft",
        _ => "Microsoft Basic Display Adapter",
    }
}

const ADAPTERS: [(&str, &str, &str); 6] = [
    ("0x8086", "0x0116", "Intel(R) HD Graphics 3000"),
    ("0x8086", "0x0166", "Intel(R) HD Graphics 4000"),
    ("0x10de", "0x0402", "NVIDIA GeForce 8600 GT "),
    ("0x10de", "0x0df4", "NVIDIA GeForce GT 540M"),
    ("0x1002", "0x6779", "AMD Radeon HD 6450"),
    ("0x1002", "0x9802", "AMD Radeon HD 6310 Graphics"),
];

const ANDROID_DEVICES: [(&str, &str, &str); 4] = [
    ("GT-I9300", "samsung", "smdk4x12"),
    ("Nexus 7", "asus", "grouper"),
    ("Nexus 4", "LGE", "mako"),
    ("HTC One", "HTC", "m7"),
];

const ADDONS: [&str; 8] = [
    "{d10d0bf8-f5b5-c8b4-a8b2-2b9879e08c5d}:2.4.1",
    "{DDC359D1-844A-42a7-9AA1-88A850A938A8}:2.0.5",
    "{b9db16a4-6edc-47ec-a1f4-b86292ed211d}:5.0.3",
    "firebug@software.joehewitt.com:1.12.3",
    "{73a6fe31-595d-460b-a920-fcc0f8843232}:2.6.6.9",
    "{CAFEEFAC-0017-0000-0040-ABCDEFFEDCBA}:7.0.40",
    "{972ce4c6-7e08-4474-a285-3208198ce6fd}:24.0",
    "foxyproxy@eric.h.jung:4.2",
];

/// `"simpleMeasurements":{...},`
fn simple_measurements(rng: &mut Rng, app: App, out: &mut String) {
    let start = 300 + rng.exp_int(3000.0);
    let main = start + rng.range(5, 40);
    let window = main + rng.exp_int(1500.0) + 100;
    let first_load = window + rng.exp_int(600.0) + 50;
    let paint = first_load + rng.exp_int(800.0) + 20;
    let restored = paint + rng.exp_int(300.0);
    let _ = write!(
        out,
        "\"simpleMeasurements\":{{\"uptime\":{},\"start\":{start},\"main\":{main},\
         \"startupCrashDetectionBegin\":{},\"startupCrashDetectionEnd\":{},\
         \"firstPaint\":{paint},\"sessionRestored\":{restored},\
         \"createTopLevelWindow\":{window},\"firstLoadURI\":{first_load},",
        rng.exp_int(200.0),
        main + rng.range(50, 400),
        restored + 30_000 + rng.range(0, 9000),
    );
    if app != App::Fennec {
        let delayed = restored + rng.range(5, 60);
        let _ = write!(
            out,
            "\"delayedStartupStarted\":{delayed},\"delayedStartupFinished\":{},\
             \"sessionRestoreInitialized\":{},\"sessionRestoreRestoring\":{},",
            delayed + rng.exp_int(1500.0),
            delayed + rng.range(1, 20),
            delayed + rng.range(20, 60),
        );
    }
    let _ = write!(
        out,
        "\"startupInterrupted\":0,\"debuggerAttached\":0,\"maximalNumberOfConcurrentThreads\":{},\
         \"shutdownDuration\":{},\"savedPings\":{},\"js\":{{\"setProto\":{},\"customIter\":{}}}}},",
        rng.range(20, 90),
        rng.exp_int(900.0),
        rng.exp_int(2.0),
        rng.exp_int(1.0),
        rng.exp_int(3.0),
    );
}

const SLOW_SQL: [&str; 6] = [
    "SELECT h.url FROM moz_places h WHERE h.id = :private /* places.sqlite */",
    "UPDATE moz_places SET frecency = CALCULATE_FRECENCY(:page_id) WHERE id = :page_id /* places.sqlite */",
    "SELECT * FROM moz_cookies /* cookies.sqlite */",
    "INSERT OR REPLACE INTO moz_formhistory (fieldname, value) VALUES (:private, :private) /* formhistory.sqlite */",
    "DELETE FROM moz_favicons WHERE id NOT IN (SELECT favicon_id FROM moz_places) /* places.sqlite */",
    "Untracked SQL for addons.sqlite",
];

/// `"slowSQL":{...},`
fn slow_sql(rng: &mut Rng, out: &mut String) {
    out.push_str("\"slowSQL\":{");
    for (k, thread) in ["mainThread", "otherThreads"].into_iter().enumerate() {
        if k > 0 {
            out.push(',');
        }
        out.push('"');
        out.push_str(thread);
        out.push_str("\":{");
        let n = rng.exp_int(1.0).min(SLOW_SQL.len() as u64) as usize;
        for (j, s) in sample_indices(rng, SLOW_SQL.len(), n)
            .into_iter()
            .enumerate()
        {
            if j > 0 {
                out.push(',');
            }
            push_json_str(out, SLOW_SQL[s]);
            let _ = write!(
                out,
                ":[{},{}]",
                1 + rng.exp_int(2.0),
                100 + rng.exp_int(400.0)
            );
        }
        out.push('}');
    }
    out.push_str("},");
}

/// `"chromeHangs":{...},"lateWrites":{...},`
fn hangs(rng: &mut Rng, out: &mut String) {
    out.push_str("\"chromeHangs\":{\"memoryMap\":[");
    let hangs = rng.exp_int(0.3) as usize;
    if hangs > 0 {
        out.push_str(
            "[\"xul.pdb\",\"9A4A3E1A4C9B4DE7A1F5E8C2D1B0A9F32\"],[\"ntdll.pdb\",\"1EB9FACB04EA273BB4BA52FB3BA8A3522\"]",
        );
    }
    out.push_str("],\"stacks\":[");
    for h in 0..hangs {
        if h > 0 {
            out.push(',');
        }
        out.push('[');
        for f in 0..rng.range(2, 12) {
            if f > 0 {
                out.push(',');
            }
            let _ = write!(out, "[{},{}]", rng.index(2), rng.below(0x0200_0000));
        }
        out.push(']');
    }
    out.push_str("],\"durations\":[");
    for h in 0..hangs {
        if h > 0 {
            out.push(',');
        }
        let _ = write!(out, "{}", 5 + rng.exp_int(10.0));
    }
    out.push_str("]},\"lateWrites\":{\"memoryMap\":[],\"stacks\":[]},");
}

fn field_str(out: &mut String, name: &str, value: &str) {
    out.push('"');
    out.push_str(name);
    out.push_str("\":");
    push_json_str(out, value);
    out.push(',');
}

fn field_num(out: &mut String, name: &str, value: u64) {
    let _ = write!(out, "\"{name}\":{value},");
}

fn field_raw(out: &mut String, name: &str, raw: &str) {
    let _ = write!(out, "\"{name}\":{raw},");
}

/// A JSON string as Firefox's `JSON.stringify` writes it: escapes for `"`, `\` and
/// control characters, everything else as UTF-8.
pub fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
