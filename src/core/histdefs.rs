//! Histogram definitions of one revision and their bucket lower bounds.
//!
//! This module owns reading one `Histograms.json` (flat, or the old histogram
//! server's `{"histograms": {...}}` form), computing each definition's buckets once
//! with the old Python formulas (SPEC §4), and the two hot-path look-ups the
//! converter needs: a definition by histogram name ([`Definitions::lookup`], with the
//! `STARTUP_` rule) and a bucket index by the payload's key text
//! ([`HistDef::bucket_index`]). A definition whose buckets cannot be computed is
//! skipped with a warning, never fatal. Which file belongs to which revision is
//! `mappings`'s business; converting payloads is `convert`'s.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use serde_json::{Map, Value};

use crate::core::expr;
use crate::core::mappings::MappingsError;

/// More buckets than this is taken as a broken definition (real ones have ≤ 1000).
pub const MAX_BUCKETS: i64 = 100_000;

/// Bounds above this cannot be computed exactly with the old `f64` formulas.
const MAX_BOUND: i64 = 1 << 53;

/// The kind of a histogram, as named in its definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Exponentially spaced buckets between `low` and `high`.
    Exponential,
    /// Linearly spaced buckets between `low` and `high`.
    Linear,
    /// One bucket per value `0..=n_values`.
    Enumerated,
    /// Buckets `[0, 1, 2]`.
    Boolean,
    /// Buckets `[0, 1, 2]`; set once.
    Flag,
    /// Buckets `[0, 1, 2]` (a later kind, read like `flag`).
    Count,
}

impl Kind {
    /// The kind named `name` in a definition's `kind` field.
    pub fn from_name(name: &str) -> Option<Kind> {
        Some(match name {
            "exponential" => Kind::Exponential,
            "linear" => Kind::Linear,
            "enumerated" => Kind::Enumerated,
            "boolean" => Kind::Boolean,
            "flag" => Kind::Flag,
            "count" => Kind::Count,
            _ => return None,
        })
    }

    /// The name used in definition files.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Exponential => "exponential",
            Kind::Linear => "linear",
            Kind::Enumerated => "enumerated",
            Kind::Boolean => "boolean",
            Kind::Flag => "flag",
            Kind::Count => "count",
        }
    }
}

/// One histogram definition with its computed buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistDef {
    /// The definition's kind.
    pub kind: Kind,
    /// Bucket lower bounds, strictly ascending, starting at 0; `len()` is the bucket
    /// count.
    pub buckets: Vec<i64>,
}

impl HistDef {
    /// Compute the definition `def` (one entry of a `Histograms.json`).
    ///
    /// The error is the reason the definition is skipped, for a warning.
    pub fn from_definition(def: &Value) -> Result<HistDef, String> {
        let Some(def) = def.as_object() else {
            return Err("the definition is not an object".to_string());
        };
        let kind_name = match def.get("kind") {
            None => return Err("no `kind`".to_string()),
            Some(Value::String(s)) => s.as_str(),
            Some(other) => return Err(format!("`kind` is not a string: {other}")),
        };
        let kind =
            Kind::from_name(kind_name).ok_or_else(|| format!("unknown kind `{kind_name}`"))?;
        let (low, high, n) = match kind {
            Kind::Boolean | Kind::Flag | Kind::Count => (1, 2, 3),
            Kind::Enumerated => {
                let n_values = field(def, "n_values", None)?;
                let n = n_values
                    .checked_add(1)
                    .ok_or_else(|| format!("`n_values` {n_values} is too large"))?;
                (1, n_values, n)
            }
            Kind::Linear | Kind::Exponential => (
                field(def, "low", Some(1))?,
                field(def, "high", None)?,
                field(def, "n_buckets", None)?,
            ),
        };
        let buckets = match kind {
            Kind::Exponential => exponential_buckets(low, high, n)?,
            _ => linear_buckets(low, high, n)?,
        };
        Ok(HistDef { kind, buckets })
    }

    /// The index of the bucket whose lower bound's decimal text is exactly `key`.
    ///
    /// `"01"`, `"+1"`, `" 1"`, `"1.0"`, `"-0"` match nothing. Allocation-free: the
    /// digits are parsed in place and the buckets binary-searched.
    #[inline]
    pub fn bucket_index(&self, key: &str) -> Option<usize> {
        self.bucket_index_near(key.as_bytes(), 0)
    }

    /// Like [`HistDef::bucket_index`] on raw bytes, trying bucket `hint` first:
    /// payloads list their buckets in ascending order, so the bucket after the last
    /// one found is the usual answer and the binary search is skipped.
    #[inline]
    pub fn bucket_index_near(&self, key: &[u8], hint: usize) -> Option<usize> {
        let value = parse_canonical_int(key)?;
        if self.buckets.get(hint) == Some(&value) {
            return Some(hint);
        }
        self.buckets.binary_search(&value).ok()
    }

    /// The index of the bucket whose lower bound is `value`, looking only at buckets
    /// `from..`. A payload's keys ascend, mostly by one bucket or a few, so the next
    /// few bounds are tried before a binary search of the rest.
    #[inline]
    pub fn bucket_index_from(&self, value: i64, from: usize) -> Option<usize> {
        const NEAR: usize = 4;
        let rest = self.buckets.get(from..)?;
        for (k, &bound) in rest.iter().take(NEAR).enumerate() {
            if bound >= value {
                return (bound == value).then_some(from + k);
            }
        }
        let far = rest.get(NEAR..)?;
        far.binary_search(&value).ok().map(|k| from + NEAR + k)
    }
}

/// Parse `bytes` as an `i64` only if `bytes` is exactly how that integer prints.
#[inline]
fn parse_canonical_int(bytes: &[u8]) -> Option<i64> {
    let (negative, digits) = match bytes {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, bytes),
    };
    match digits {
        [] => return None,
        [b'0'] => return (!negative).then_some(0),
        [b'0', ..] => return None,
        _ => {}
    }
    // Accumulate toward the negative side so i64::MIN parses too.
    let mut acc: i64 = 0;
    for &b in digits {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        acc = acc.checked_mul(10)?.checked_sub(i64::from(d))?;
    }
    if negative {
        Some(acc)
    } else {
        acc.checked_neg()
    }
}

/// Read an integer field: a JSON integer, or a string of integer arithmetic.
fn field(def: &Map<String, Value>, name: &str, default: Option<i64>) -> Result<i64, String> {
    match def.get(name) {
        None => default.ok_or_else(|| format!("no `{name}`")),
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| format!("`{name}` is not an integer: {n}")),
        Some(Value::String(s)) => expr::eval(s).map_err(|e| format!("`{name}` {s:?}: {e}")),
        Some(other) => Err(format!("`{name}` is not a number: {other}")),
    }
}

/// Check the parameters shared by both formulas.
fn check_params(low: i64, high: i64, n: i64) -> Result<usize, String> {
    if n < 3 {
        return Err(format!("{n} buckets (at least 3 needed)"));
    }
    if n > MAX_BUCKETS {
        return Err(format!("{n} buckets (more than {MAX_BUCKETS})"));
    }
    if high <= low {
        return Err(format!("high {high} is not above low {low}"));
    }
    if high > MAX_BOUND || low < -MAX_BOUND {
        return Err(format!("range {low}..{high} is beyond exact f64 integers"));
    }
    // n is in 3..=MAX_BUCKETS, so the conversion is exact.
    Ok(n as usize)
}

/// Linear buckets, as the old Python `linear_buckets` computed them.
fn linear_buckets(low: i64, high: i64, n: i64) -> Result<Vec<i64>, String> {
    let n = check_params(low, high, n)?;
    let (lo, hi, nf) = (low as f64, high as f64, n as f64);
    let mut buckets = vec![0i64; n];
    for (i, b) in buckets.iter_mut().enumerate().skip(1) {
        let i = i as f64;
        let x = (lo * (nf - 1.0 - i) + hi * (i - 1.0)) / (nf - 2.0);
        // |x| <= 2^53, so the cast is exact.
        *b = (x + 0.5).floor() as i64;
    }
    ascending(buckets)
}

/// Exponential buckets, as the old Python `exponential_buckets` computed them.
fn exponential_buckets(low: i64, high: i64, n: i64) -> Result<Vec<i64>, String> {
    if low < 1 {
        return Err(format!("low {low} is below 1 for an exponential histogram"));
    }
    let n = check_params(low, high, n)?;
    let log_max = (high as f64).ln();
    let mut buckets = vec![0i64; n];
    let mut current = low;
    buckets[1] = current;
    for (i, b) in buckets.iter_mut().enumerate().skip(2) {
        let log_current = (current as f64).ln();
        let log_ratio = (log_max - log_current) / (n - i) as f64;
        let next = ((log_current + log_ratio).exp() + 0.5).floor() as i64;
        current = if next > current { next } else { current + 1 };
        *b = current;
    }
    ascending(buckets)
}

/// Buckets must be strictly ascending, or a key could name two of them.
fn ascending(buckets: Vec<i64>) -> Result<Vec<i64>, String> {
    match buckets.windows(2).position(|w| w[0] >= w[1]) {
        None => Ok(buckets),
        Some(i) => Err(format!(
            "buckets are not ascending: bucket {} is {} after {}",
            i + 1,
            buckets[i + 1],
            buckets[i]
        )),
    }
}

/// The histogram definitions of one revision, buckets computed.
#[derive(Debug, Clone, Default)]
pub struct Definitions {
    // foldhash: the look-up runs for every histogram of every record, and the
    // names are not attacker-chosen keys of a long-lived server map.
    defs: HashMap<Name, HistDef, foldhash::fast::FixedState>,
}

/// A definition's name, looked up by the payload's bytes: the converter holds names
/// as canonical bytes, and going through `&str` cost a UTF-8 check per histogram.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Name(String);

impl Hash for Name {
    // As its bytes, so that a `[u8]` look-up hashes alike (`str` hashes differently).
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.as_bytes().hash(state);
    }
}

impl Borrow<[u8]> for Name {
    fn borrow(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl Definitions {
    /// Read a definitions file: the flat map `name → definition`, or the old
    /// histogram server's `{"histograms": {...}}`.
    ///
    /// A file that is not JSON or not such a map is an error naming `origin`; a
    /// single definition that cannot be computed is left out and reported in the
    /// returned warnings (each naming `origin` and the histogram).
    pub fn from_json(
        bytes: &[u8],
        origin: &str,
    ) -> Result<(Definitions, Vec<String>), MappingsError> {
        let root: Value = crate::core::mappings::parse_json(bytes, origin)?;
        let Value::Object(mut map) = root else {
            return Err(MappingsError::Invalid {
                file: origin.to_string(),
                reason: "not a map of histogram definitions".to_string(),
            });
        };
        if is_wrapped(&map) {
            if let Some(Value::Object(inner)) = map.remove("histograms") {
                map = inner;
            }
        }
        let mut defs =
            HashMap::with_capacity_and_hasher(map.len(), foldhash::fast::FixedState::default());
        let mut warnings = Vec::new();
        for (name, def) in &map {
            match HistDef::from_definition(def) {
                Ok(d) => {
                    defs.insert(Name(name.clone()), d);
                }
                Err(why) => warnings.push(format!("{origin}: histogram {name} skipped: {why}")),
            }
        }
        Ok((Definitions { defs }, warnings))
    }

    /// The definition used for histogram `name`: the exact name if defined, else for
    /// `STARTUP_<x>` the definition of `<x>`.
    #[inline]
    pub fn lookup(&self, name: &str) -> Option<&HistDef> {
        self.lookup_bytes(name.as_bytes())
    }

    /// [`Definitions::lookup`] by the name's bytes.
    #[inline]
    pub fn lookup_bytes(&self, name: &[u8]) -> Option<&HistDef> {
        self.defs.get(name).or_else(|| {
            name.strip_prefix(b"STARTUP_")
                .and_then(|base| self.defs.get(base))
        })
    }

    /// How many definitions computed.
    pub fn len(&self) -> usize {
        self.defs.len()
    }

    /// Whether no definition computed.
    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }

    /// Every computed definition by name, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &HistDef)> + '_ {
        self.defs.iter().map(|(k, v)| (k.0.as_str(), v))
    }
}

/// `{"histograms": {...}}` and nothing else, where the inner map is not itself a
/// definition (which a flat file with one histogram named `histograms` would be).
fn is_wrapped(map: &Map<String, Value>) -> bool {
    map.len() == 1
        && matches!(map.get("histograms"), Some(Value::Object(inner)) if !inner.contains_key("kind"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const AURORA23: &[u8] =
        include_bytes!("../../mappings/histograms/Histograms.FIREFOX_AURORA_23_BASE.json");
    const AURORA23_ORIGIN: &str = "histograms/Histograms.FIREFOX_AURORA_23_BASE.json";

    fn aurora23() -> Definitions {
        let (defs, warnings) = Definitions::from_json(AURORA23, AURORA23_ORIGIN).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        defs
    }

    #[test]
    fn all_aurora23_definitions_compute() {
        // 524 definitions: 403 exponential, 45 boolean, 31 linear, 28 enumerated,
        // 17 flag. Every one computes; none is skipped.
        let defs = aurora23();
        assert_eq!(defs.len(), 524);
        let count = |k: Kind| defs.iter().filter(|(_, d)| d.kind == k).count();
        assert_eq!(count(Kind::Exponential), 403);
        assert_eq!(count(Kind::Boolean), 45);
        assert_eq!(count(Kind::Linear), 31);
        assert_eq!(count(Kind::Enumerated), 28);
        assert_eq!(count(Kind::Flag), 17);
    }

    /// Expected arrays computed with python3 running the old `math.log`/`math.exp`
    /// formulas on the same definitions.
    #[test]
    fn aurora23_buckets_by_hand() {
        let defs = aurora23();
        let table: &[(&str, Kind, &[i64])] = &[
            // exponential, high "3000", n_buckets 10
            (
                "TELEMETRY_PING",
                Kind::Exponential,
                &[0, 1, 3, 8, 21, 57, 154, 414, 1114, 3000],
            ),
            // exponential, low 50, high 2000 (a JSON number), n_buckets 10
            (
                "PLACES_AUTOCOMPLETE_URLINLINE_DOMAIN_QUERY_TIME_MS",
                Kind::Exponential,
                &[0, 50, 79, 125, 198, 314, 499, 793, 1259, 2000],
            ),
            // exponential, high "10000", n_buckets 50: at i = 2 and 3 rounding does not
            // advance, so `cur + 1` applies
            (
                "CYCLE_COLLECTOR",
                Kind::Exponential,
                &[
                    0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 17, 20, 24, 29, 34, 40, 48, 57, 68, 81,
                    96, 114, 135, 160, 190, 226, 268, 318, 378, 449, 533, 633, 752, 894, 1062,
                    1262, 1500, 1782, 2117, 2516, 2990, 3553, 4222, 5017, 5961, 7083, 8416, 10000,
                ],
            ),
            // exponential, high "50", n_buckets 10
            (
                "PLACES_DATABASE_JOURNALSIZE_MB",
                Kind::Exponential,
                &[0, 1, 2, 3, 5, 8, 13, 20, 32, 50],
            ),
            // exponential, low "32 * 1024", high "16 * 1024 * 1024", n_buckets 100
            (
                "MEMORY_VSIZE",
                Kind::Exponential,
                &[
                    0, 32768, 34922, 37217, 39663, 42270, 45048, 48009, 51164, 54527, 58111, 61930,
                    66000, 70338, 74961, 79888, 85139, 90735, 96699, 103055, 109828, 117047,
                    124740, 132939, 141677, 150989, 160913, 171489, 182760, 194772, 207574, 221217,
                    235757, 251252, 267766, 285365, 304121, 324110, 345412, 368115, 392310, 418095,
                    445575, 474861, 506072, 539334, 574782, 612560, 652821, 695728, 741455, 790188,
                    842124, 897474, 956461, 1019325, 1086321, 1157721, 1233814, 1314908, 1401332,
                    1493436, 1591594, 1696203, 1807688, 1926500, 2053121, 2188065, 2331878,
                    2485143, 2648482, 2822556, 3008072, 3205781, 3416485, 3641037, 3880348,
                    4135388, 4407191, 4696859, 5005565, 5334561, 5685181, 6058846, 6457071,
                    6881469, 7333761, 7815781, 8329482, 8876947, 9460395, 10082190, 10744854,
                    11451072, 12203707, 13005810, 13860632, 14771638, 15742521, 16777216,
                ],
            ),
            // linear, low 25, high "80 * 25", n_buckets "80 + 1"
            (
                "POPUP_NOTIFICATION_MAINACTION_TRIGGERED_MS",
                Kind::Linear,
                &[
                    0, 25, 50, 75, 100, 125, 150, 175, 200, 225, 250, 275, 300, 325, 350, 375, 400,
                    425, 450, 475, 500, 525, 550, 575, 600, 625, 650, 675, 700, 725, 750, 775, 800,
                    825, 850, 875, 900, 925, 950, 975, 1000, 1025, 1050, 1075, 1100, 1125, 1150,
                    1175, 1200, 1225, 1250, 1275, 1300, 1325, 1350, 1375, 1400, 1425, 1450, 1475,
                    1500, 1525, 1550, 1575, 1600, 1625, 1650, 1675, 1700, 1725, 1750, 1775, 1800,
                    1825, 1850, 1875, 1900, 1925, 1950, 1975, 2000,
                ],
            ),
            // linear, high "100", n_buckets 12 (note 51 then 60: the +0.5 rounding)
            (
                "GLUESTARTUP_READ_OPS",
                Kind::Linear,
                &[0, 1, 11, 21, 31, 41, 51, 60, 70, 80, 90, 100],
            ),
            // linear, high "32768", n_buckets 3
            ("MOZ_SQLITE_OTHER_READ_B", Kind::Linear, &[0, 1, 32768]),
            // enumerated, n_values "mozilla::StartupTimeline::MAX_EVENT_ID" = 12
            (
                "STARTUP_MEASUREMENT_ERRORS",
                Kind::Enumerated,
                &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
            ),
            ("A11Y_IATABLE_USAGE_FLAG", Kind::Flag, &[0, 1, 2]),
            ("STARTUP_CRASH_DETECTED", Kind::Flag, &[0, 1, 2]),
            ("GC_IS_COMPARTMENTAL", Kind::Boolean, &[0, 1, 2]),
        ];
        for &(name, kind, want) in table {
            let got = defs
                .lookup(name)
                .unwrap_or_else(|| panic!("{name} missing"));
            assert_eq!(got.kind, kind, "{name}");
            assert_eq!(got.buckets, want, "{name}");
        }
        // enumerated, n_values "JS::gcreason::NUM_TELEMETRY_REASONS" = 101
        let gc_reason = defs.lookup("GC_REASON_2").unwrap();
        assert_eq!(gc_reason.kind, Kind::Enumerated);
        assert_eq!(gc_reason.buckets, (0..=101).collect::<Vec<i64>>());
    }

    /// Every Aurora 23 definition against python3's output (tests/data/aurora23_buckets.json,
    /// written by tests/data/aurora23_buckets.py from the SPEC formulas).
    #[test]
    fn aurora23_buckets_match_python() {
        let expected: Value =
            serde_json::from_slice(include_bytes!("../../tests/data/aurora23_buckets.json"))
                .unwrap();
        let expected = expected["buckets"].as_object().unwrap();
        let defs = aurora23();
        assert_eq!(expected.len(), defs.len());
        for (name, want) in expected {
            let want: Vec<i64> = want
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
                .collect();
            assert_eq!(defs.lookup(name).unwrap().buckets, want, "{name}");
        }
    }

    #[test]
    fn startup_prefix_and_exact_name() {
        let defs = aurora23();
        // Defined under its own name: the exact definition wins (enumerated, 0..=12),
        // not a prefix-stripped `MEASUREMENT_ERRORS` (which is not defined anyway).
        assert_eq!(
            defs.lookup("STARTUP_MEASUREMENT_ERRORS").unwrap().kind,
            Kind::Enumerated
        );
        // STARTUP_CACHE_AGE_HOURS is defined; CACHE_AGE_HOURS is not.
        assert!(defs.lookup("STARTUP_CACHE_AGE_HOURS").is_some());
        assert!(defs.lookup("CACHE_AGE_HOURS").is_none());
        // STARTUP_CYCLE_COLLECTOR is not defined: it uses CYCLE_COLLECTOR's.
        assert_eq!(
            defs.lookup("STARTUP_CYCLE_COLLECTOR"),
            defs.lookup("CYCLE_COLLECTOR")
        );
        assert!(defs.lookup("STARTUP_CYCLE_COLLECTOR").is_some());
        // One level only, and an unknown base stays unknown.
        assert!(defs.lookup("STARTUP_STARTUP_CYCLE_COLLECTOR").is_none());
        assert!(defs.lookup("STARTUP_NOT_A_HISTOGRAM").is_none());
        assert!(defs.lookup("STARTUP_").is_none());
        assert!(defs.lookup("cycle_collector").is_none());
    }

    #[test]
    fn exact_name_wins_over_prefix() {
        let file = json!({
            "X": {"kind": "boolean"},
            "STARTUP_X": {"kind": "enumerated", "n_values": 5},
        });
        let (defs, w) = Definitions::from_json(file.to_string().as_bytes(), "t.json").unwrap();
        assert!(w.is_empty());
        assert_eq!(
            defs.lookup("STARTUP_X").unwrap().buckets,
            [0, 1, 2, 3, 4, 5]
        );
        assert_eq!(defs.lookup("X").unwrap().buckets, [0, 1, 2]);
    }

    #[test]
    fn broken_fixtures_skip_one_entry() {
        for (file, bytes, why) in [
            (
                "hist_spec_invalid_kind.json",
                &include_bytes!("../../tests/data/hist_spec_invalid_kind.json")[..],
                "unknown kind `bogus`",
            ),
            (
                "hist_spec_missing_kind.json",
                &include_bytes!("../../tests/data/hist_spec_missing_kind.json")[..],
                "no `kind`",
            ),
        ] {
            let (defs, warnings) = Definitions::from_json(bytes, file).unwrap();
            assert!(defs.is_empty(), "{file}");
            assert!(defs.lookup("MY_HISTOGRAM").is_none());
            assert_eq!(
                warnings,
                [format!("{file}: histogram MY_HISTOGRAM skipped: {why}")]
            );
        }
    }

    #[test]
    fn wrapped_form_keeps_good_entries() {
        let file = json!({"histograms": {
            "GOOD": {"kind": "linear", "high": "10", "n_buckets": 3},
            "BAD": {"kind": "bogus"},
        }});
        let (defs, w) = Definitions::from_json(file.to_string().as_bytes(), "w.json").unwrap();
        assert_eq!(defs.len(), 1);
        assert_eq!(defs.lookup("GOOD").unwrap().buckets, [0, 1, 10]);
        assert_eq!(w.len(), 1);
        // A flat file whose one histogram is named `histograms` is not the wrapped form.
        let flat = json!({"histograms": {"kind": "flag"}});
        let (defs, _) = Definitions::from_json(flat.to_string().as_bytes(), "f.json").unwrap();
        assert_eq!(defs.lookup("histograms").unwrap().kind, Kind::Flag);
    }

    #[test]
    fn files_that_are_not_definitions_are_errors() {
        let err = Definitions::from_json(
            include_bytes!("../../tests/data/invalid_json.txt"),
            "invalid_json.txt",
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("invalid_json.txt: "), "{err}");
        for bad in ["[]", "1", "\"x\"", "null", ""] {
            let err = Definitions::from_json(bad.as_bytes(), "bad.json").unwrap_err();
            assert!(err.to_string().starts_with("bad.json: "), "{bad}: {err}");
        }
    }

    #[test]
    fn skipped_definitions() {
        let table: &[(Value, &str)] = &[
            (json!("x"), "the definition is not an object"),
            (json!({"kind": 3}), "`kind` is not a string: 3"),
            (json!({"kind": "linear", "n_buckets": 10}), "no `high`"),
            (json!({"kind": "linear", "high": 10}), "no `n_buckets`"),
            (
                json!({"kind": "linear", "high": 10, "n_buckets": 2}),
                "2 buckets (at least 3 needed)",
            ),
            (
                json!({"kind": "exponential", "high": 10, "n_buckets": 200000}),
                "200000 buckets (more than 100000)",
            ),
            (
                json!({"kind": "linear", "high": 1, "n_buckets": 3}),
                "high 1 is not above low 1",
            ),
            (
                json!({"kind": "exponential", "low": 0, "high": 10, "n_buckets": 5}),
                "low 0 is below 1 for an exponential histogram",
            ),
            (
                json!({"kind": "linear", "high": "10 *", "n_buckets": 5}),
                "`high` \"10 *\": unexpected end of expression",
            ),
            (
                json!({"kind": "linear", "high": "NOPE", "n_buckets": 5}),
                "`high` \"NOPE\": unknown name `NOPE`",
            ),
            (
                json!({"kind": "linear", "high": 10.5, "n_buckets": 5}),
                "`high` is not an integer: 10.5",
            ),
            (
                json!({"kind": "linear", "high": true, "n_buckets": 5}),
                "`high` is not a number: true",
            ),
            (
                json!({"kind": "linear", "high": 5, "n_buckets": 100}),
                "buckets are not ascending: bucket 2 is 1 after 1",
            ),
            (
                json!({"kind": "linear", "low": 0, "high": 5, "n_buckets": 4}),
                "buckets are not ascending: bucket 1 is 0 after 0",
            ),
            (
                json!({"kind": "linear", "high": 9007199254740993_i64, "n_buckets": 5}),
                "range 1..9007199254740993 is beyond exact f64 integers",
            ),
            (json!({"kind": "enumerated"}), "no `n_values`"),
            (
                json!({"kind": "enumerated", "n_values": 1}),
                "2 buckets (at least 3 needed)",
            ),
            (
                json!({"kind": "enumerated", "n_values": i64::MAX}),
                "`n_values` 9223372036854775807 is too large",
            ),
        ];
        for (def, want) in table {
            assert_eq!(HistDef::from_definition(def).unwrap_err(), *want, "{def}");
        }
    }

    #[test]
    fn small_kinds() {
        for kind in ["boolean", "flag", "count"] {
            let d = HistDef::from_definition(&json!({"kind": kind})).unwrap();
            assert_eq!(d.buckets, [0, 1, 2], "{kind}");
            assert_eq!(d.kind.name(), kind);
        }
        let d = HistDef::from_definition(&json!({"kind": "enumerated", "n_values": "2"})).unwrap();
        assert_eq!(d.buckets, [0, 1, 2]);
        // The exponential fallback `cur + 1` when rounding does not advance.
        let d =
            HistDef::from_definition(&json!({"kind": "exponential", "high": 10, "n_buckets": 10}))
                .unwrap();
        assert_eq!(d.buckets, [0, 1, 2, 3, 4, 5, 6, 7, 8, 10]);
    }

    #[test]
    fn bucket_index_is_exact() {
        let d = HistDef {
            kind: Kind::Linear,
            buckets: vec![0, 1, 10, 100, 1000, i64::MAX],
        };
        let table: &[(&str, Option<usize>)] = &[
            ("0", Some(0)),
            ("1", Some(1)),
            ("10", Some(2)),
            ("100", Some(3)),
            ("1000", Some(4)),
            ("9223372036854775807", Some(5)),
            ("9223372036854775808", None),
            ("99999999999999999999999", None),
            ("2", None),
            ("01", None),
            ("00", None),
            ("-0", None),
            ("-1", None),
            ("+1", None),
            (" 1", None),
            ("1 ", None),
            ("1.0", None),
            ("1e1", None),
            ("", None),
            ("-", None),
            ("١", None),
        ];
        for &(key, want) in table {
            assert_eq!(d.bucket_index(key), want, "{key:?}");
        }
        let neg = HistDef {
            kind: Kind::Linear,
            buckets: vec![i64::MIN, -5, 0],
        };
        assert_eq!(neg.bucket_index("-5"), Some(1));
        assert_eq!(neg.bucket_index("-9223372036854775808"), Some(0));
        assert_eq!(neg.bucket_index("-05"), None);
    }

    #[test]
    fn bucket_index_from_looks_only_ahead() {
        let buckets: Vec<i64> = (0..40).map(|i| i * i).collect();
        let d = HistDef {
            kind: Kind::Exponential,
            buckets: buckets.clone(),
        };
        for from in 0..=buckets.len() + 1 {
            for value in -1..1700 {
                let want = buckets
                    .iter()
                    .position(|&b| b == value)
                    .filter(|&i| i >= from);
                assert_eq!(
                    d.bucket_index_from(value, from),
                    want,
                    "{value} from {from}"
                );
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn bucket_index_agrees_with_formatting(v in proptest::prelude::any::<i64>(), key in "\\PC{0,8}") {
            let d = HistDef { kind: Kind::Linear, buckets: vec![v] };
            proptest::prop_assert_eq!(d.bucket_index(&v.to_string()), Some(0));
            proptest::prop_assert_eq!(d.bucket_index(&key).is_some(), key == v.to_string());
        }
    }
}
