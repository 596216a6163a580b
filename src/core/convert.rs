//! Validation and conversion of one record (SPEC §3–§6): a classic (ver 1) payload in,
//! either a converted line `<docId>\t<json>` with its partition, or a [`Rejection`]
//! with the first failing reason in SPEC §6's order.
//!
//! One pass copies the payload to its canonical form while validating it, reading the
//! few `info` fields the schema and revision need and parsing `histograms` into a
//! compact intermediate form; the histograms are converted once the revision is known
//! and written in their place. Histograms of the plain shape every client wrote (no
//! whitespace, no escapes, the usual members) are read by fast paths (`fast_hist`,
//! `fast_values`); anything else falls back to the general path, which alone decides
//! rejections, and the tests check that both give the same bytes and rejections.
//! The converter owns reusable buffers, so a worker
//! keeps one [`Converter`] and allocates nothing per record in the steady state.
//! It does not read files, decide what to do with rejects, or count anything: the
//! caller owns reports.

use crate::core::body;

/// Version of what the converter writes. Raise it with any change that makes the
/// same input and mappings convert to other bytes (a serialisation detail, a new
/// rejection rule): a job records it, and a binary with another version refuses to
/// continue that job, since its objects would not match the ones written before.
pub const OUTPUT_VERSION: u32 = 1;
use crate::core::histdefs::{Definitions, HistDef};
use crate::core::json::{self, JResult, JsonError};
use crate::core::mappings::Mappings;
use crate::core::reason::{Reason, Rejection};
use crate::core::rowkey;

/// Where a payload's string lives: in the payload itself (already canonical) or in the
/// converter's arena (canonicalised because it had escapes or non-ASCII).
#[derive(Clone, Copy, Debug)]
enum Span {
    Input(usize, usize),
    Arena(usize, usize),
}

impl Span {
    fn bytes<'a>(self, input: &'a [u8], arena: &'a [u8]) -> &'a [u8] {
        match self {
            Span::Input(s, e) => &input[s..e],
            Span::Arena(s, e) => &arena[s..e],
        }
    }
}

/// The five statistics after the bucket counts, in output order.
const SUM_FIELDS: [&[u8]; 5] = [
    b"sum",
    b"log_sum",
    b"log_sum_squares",
    b"sum_squares_lo",
    b"sum_squares_hi",
];

#[derive(Clone, Copy, Debug)]
enum BucketCount {
    Absent,
    Number(usize, usize),
    NotNumber,
}

#[derive(Clone, Copy, Debug)]
enum Values {
    Missing,
    NotObject,
    /// Range into the converter's `values` list.
    Entries(usize, usize),
    /// Range into the converter's `fast` list: every entry had the plain shape.
    Fast(usize, usize),
}

#[derive(Clone, Copy, Debug)]
enum HistBody {
    NotObject,
    Object {
        bucket_count: BucketCount,
        values: Values,
        /// Number tokens (input ranges) of the five statistics; `None` → -1.
        sums: [Option<(usize, usize)>; 5],
    },
}

#[derive(Clone, Copy, Debug)]
struct HistIr {
    name: Span,
    body: HistBody,
}

#[derive(Clone, Copy, Debug)]
struct ValueIr {
    key: Span,
    /// The count's number token, `None` when the value is not a number.
    count: Option<(usize, usize)>,
}

/// A `values` entry of the plain shape `"<canonical integer>":<digits>`, as the fast
/// path reads it: the key as a number (at most 18 digits, so it fits an `i64`) and
/// the count's token, which is a valid count by construction.
#[derive(Clone, Copy, Debug)]
struct FastValue {
    key: u64,
    count: (usize, usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ver {
    Missing,
    One,
    /// Already converted (the new store's records), accepted by re-processing.
    Two,
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Missing,
    NotObject,
    Object,
}

/// Where each schema dimension takes its raw value from.
#[derive(Clone, Copy, Debug)]
enum DimSource {
    Day,
    Info(usize),
}

#[derive(Clone, Debug, Default)]
struct Field {
    present: bool,
    text: String,
}

/// A successfully converted record; borrows the converter's buffers until the next
/// call.
#[derive(Debug)]
pub struct Converted<'c> {
    /// The document id.
    pub doc_id: &'c str,
    /// The submission day, `yyyyMMdd`.
    pub day: &'c str,
    /// Final dimension values, in schema order (as they appear in the key).
    pub dims: &'c [String],
    /// The object key prefix, e.g. `saved_session/Firefox/nightly/22.0a1/20130226031002.20131011.v2.log`.
    pub partition: &'c str,
    /// The output line, `<docId>\t<json>\n`.
    pub line: &'c [u8],
    dropped: &'c [(usize, usize)],
    dropped_names: &'c str,
}

impl<'c> Converted<'c> {
    /// Names of histograms dropped because the definitions do not know them, in
    /// payload order: decoded, as a JSON parser returns them, so that a name is the
    /// same whichever escapes the payload spelled it with.
    pub fn dropped(&self) -> impl Iterator<Item = &'c str> + '_ {
        self.dropped.iter().map(|&(s, e)| &self.dropped_names[s..e])
    }
}

/// Converts records with one set of mappings, reusing its buffers between records.
pub struct Converter<'m> {
    mappings: &'m Mappings,
    wanted: Vec<&'m str>,
    dim_src: Vec<DimSource>,
    rev_field: usize,
    table_fields: [usize; 4],
    fields: Vec<Field>,
    out: Vec<u8>,
    scratch: Vec<u8>,
    arena: Vec<u8>,
    hists: Vec<HistIr>,
    values: Vec<ValueIr>,
    fast: Vec<FastValue>,
    /// Whether `values` objects may take the fast path; the tests turn it off to
    /// compare against the general path alone.
    fast_path: bool,
    counts: Vec<Option<(usize, usize)>>,
    dropped: Vec<(usize, usize)>,
    dropped_names: String,
    dims: Vec<String>,
    partition: String,
    line: Vec<u8>,
    doc_id: String,
    day: String,
    hist_at: Option<usize>,
    /// Copy `histograms` canonically instead of reading them into the intermediate
    /// form (records already converted, see [`Converter::convert_stored`]).
    copy_histograms: bool,
}

fn field_index<'m>(wanted: &mut Vec<&'m str>, name: &'m str) -> usize {
    match wanted.iter().position(|w| *w == name) {
        Some(i) => i,
        None => {
            wanted.push(name);
            wanted.len() - 1
        }
    }
}

fn reject<T>(reason: Reason, detail: impl Into<String>) -> Result<T, Rejection> {
    Err(Rejection::new(reason, detail))
}

/// The revision's short id (first 12 hex digits, lowercase) from a URL
/// `http(s)://host/<repo path>/rev/<hex>`; `None` when it is not such a URL.
pub fn parse_revision_url(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let (host, path) = rest.split_once('/')?;
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    let (repo, hex) = path.rsplit_once("/rev/")?;
    if repo.is_empty() || repo.split('/').any(str::is_empty) {
        return None;
    }
    if !(12..=40).contains(&hex.len()) || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some(hex[..12].to_ascii_lowercase())
}

/// `"0,"` repeated, to copy runs of empty buckets from.
const ZEROS: &[u8; 512] = &{
    let mut z = [b','; 512];
    let mut i = 0;
    while i < 512 {
        z[i] = b'0';
        i += 2;
    }
    z
};

/// Appends the first `n` bytes of `src`. Copying all `K` and cutting back compiles
/// to a few wide moves, where a copy of variable length calls `memcpy`: that call
/// was most of the cost of writing the histograms' short counts and zero runs.
#[inline(always)]
fn push_head<const K: usize>(out: &mut Vec<u8>, src: &[u8; K], n: usize) {
    debug_assert!(n <= K);
    let len = out.len();
    out.extend_from_slice(src);
    out.truncate(len + n);
}

/// Appends the number token `b[s..e]`.
#[inline]
fn push_token(out: &mut Vec<u8>, b: &[u8], (s, e): (usize, usize)) {
    const K: usize = 16;
    match b.get(s..).and_then(<[u8]>::first_chunk::<K>) {
        Some(head) if e - s <= K => push_head(out, head, e - s),
        _ => out.extend_from_slice(&b[s..e]),
    }
}

/// Appends `n` times `0,`.
#[inline]
fn push_zeros(out: &mut Vec<u8>, mut n: usize) {
    const SHORT: usize = 16;
    if n <= SHORT {
        push_head(
            out,
            ZEROS.first_chunk::<{ 2 * SHORT }>().expect("512 bytes"),
            2 * n,
        );
        return;
    }
    while n > 0 {
        let k = n.min(ZEROS.len() / 2);
        out.extend_from_slice(&ZEROS[..2 * k]);
        n -= k;
    }
}

/// Whether a number token is a JSON integer ≥ 0 (digits only: no sign, fraction or
/// exponent).
fn is_count(tok: &[u8]) -> bool {
    !tok.is_empty() && tok.iter().all(u8::is_ascii_digit)
}

/// Payload text for a rejection detail: a number token, or a name or key in
/// canonical form, which is decoded so that details show what a JSON parser reads.
fn text(b: &[u8]) -> String {
    json::decode_canonical(b).into_owned()
}

fn not_a_bound(name: &[u8], key: &[u8]) -> Rejection {
    Rejection::new(
        Reason::InvalidBucket,
        format!(
            "histogram {} has key {:?}, not a bucket lower bound",
            text(name),
            text(key)
        ),
    )
}

/// Reads the `values` object at `i` (`b[i] == '{'`) if every entry has the plain
/// shape `"<canonical integer>":<digits>` with nothing in between, appending the
/// entries to `fast`; returns the position after the object. Anything else (spaces,
/// escapes, signs, leading zeros, fractions, other values, syntax errors) returns
/// `None` with `fast` as it was, for the general path to read, so that every
/// rejection and its detail come from one place.
///
/// Histograms are almost all values entries, so this is the converter's hot loop:
/// it replaces a string scan, a span, a number scan and an intermediate entry per
/// bucket.
fn fast_values(fast: &mut Vec<FastValue>, b: &[u8], i: usize) -> Option<usize> {
    let start = fast.len();
    let end = fast_values_in(fast, b, i);
    if end.is_none() {
        fast.truncate(start);
    }
    end
}

/// The value of the first `n` (1..=8) bytes of `word`, which are ASCII digits.
#[inline]
fn digits_value(word: u64, n: usize) -> u64 {
    debug_assert!((1..=8).contains(&n));
    // Move the digits to the top so that the bytes below are leading zeros, then
    // combine neighbours: pairs, then quads, then the two halves (the first byte is
    // the most significant digit).
    let t = (word & 0x0f0f_0f0f_0f0f_0f0f) << (8 * (8 - n));
    let t = (t * 10 + (t >> 8)) & 0x00ff_00ff_00ff_00ff;
    let t = (t * 100 + (t >> 16)) & 0x0000_ffff_0000_ffff;
    (t * 10_000 + (t >> 32)) & 0xffff_ffff
}

fn fast_values_in(fast: &mut Vec<FastValue>, b: &[u8], i: usize) -> Option<usize> {
    // Longer keys could overflow; no bucket bound has that many digits anyway, but
    // the general path reports them.
    const MAX_KEY_DIGITS: usize = 18;
    // Canonical integer text: digits, no leading zero unless it is "0".
    let canonical = |s: usize, e: usize| e > s && (e - s == 1 || b[s] != b'0');
    let mut i = i + 1;
    if b.get(i) == Some(&b'}') {
        return Some(i + 1);
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let ks = i + 1;
        let ke = json::digits_end(b, ks);
        if !canonical(ks, ke) || ke - ks > MAX_KEY_DIGITS || b.get(ke..ke + 2) != Some(b"\":") {
            return None;
        }
        let key = match json::word_at(b, ks) {
            Some(w) if ke - ks <= 8 => digits_value(w, ke - ks),
            _ => b[ks..ke]
                .iter()
                .fold(0u64, |k, &d| k * 10 + u64::from(d - b'0')),
        };
        let cs = ke + 2;
        let ce = json::digits_end(b, cs);
        if !canonical(cs, ce) {
            return None;
        }
        fast.push(FastValue {
            key,
            count: (cs, ce),
        });
        match b.get(ce) {
            Some(b',') => i = ce + 1,
            Some(b'}') => return Some(ce + 1),
            _ => return None,
        }
    }
}

/// Reads the histogram object at `i` (`b[i] == '{'`) if it has the plain shape
/// payloads carry: no whitespace or escapes, every key one the converter reads or
/// `range`/`histogram_type`, numbers for `bucket_count`, `histogram_type` and the
/// statistics, an array of numbers for `range`, and a `values` object that
/// [`fast_values`] reads. Returns the body and the position after the object, or
/// `None` (with `fast` as it was) for the general path, like `fast_values`.
///
/// The members around `values` are as many tokens as the values themselves; here
/// each costs a byte compare instead of a string scan, a span and a table search.
fn fast_hist(fast: &mut Vec<FastValue>, b: &[u8], i: usize) -> Option<(HistBody, usize)> {
    let start = fast.len();
    let r = fast_hist_in(fast, b, i);
    if r.is_none() {
        fast.truncate(start);
    }
    r
}

/// The members `fast_hist` reads; `Sum` indexes [`SUM_FIELDS`].
#[derive(Clone, Copy)]
enum Member {
    Range,
    BucketCount,
    HistogramType,
    Values,
    Sum(usize),
}

fn fast_hist_in(fast: &mut Vec<FastValue>, b: &[u8], i: usize) -> Option<(HistBody, usize)> {
    let number = |i: usize| match b.get(i) {
        Some(b'-' | b'0'..=b'9') => json::scan_number(b, i).ok(),
        _ => None,
    };
    let mut bucket_count = BucketCount::Absent;
    let mut values = Values::Missing;
    let mut sums = [None; 5];
    let mut i = i + 1;
    loop {
        // The position after the key at `i` if it is `lit` (quotes and colon
        // included): compared whole, with a constant length, not scanned a byte at
        // a time.
        let key =
            |lit: &'static [u8]| (b.get(i..i + lit.len()) == Some(lit)).then_some(i + lit.len());
        // Told apart by their first letter.
        let (member, vi) = match b.get(i + 1)? {
            b'r' => (Member::Range, key(b"\"range\":")?),
            b'b' => (Member::BucketCount, key(b"\"bucket_count\":")?),
            b'h' => (Member::HistogramType, key(b"\"histogram_type\":")?),
            b'v' => (Member::Values, key(b"\"values\":")?),
            b's' => match key(b"\"sum\":") {
                Some(vi) => (Member::Sum(0), vi),
                None => match key(b"\"sum_squares_lo\":") {
                    Some(vi) => (Member::Sum(3), vi),
                    None => (Member::Sum(4), key(b"\"sum_squares_hi\":")?),
                },
            },
            b'l' => match key(b"\"log_sum\":") {
                Some(vi) => (Member::Sum(1), vi),
                None => (Member::Sum(2), key(b"\"log_sum_squares\":")?),
            },
            _ => return None,
        };
        let end = match member {
            Member::Values => {
                if b.get(vi) != Some(&b'{') {
                    return None;
                }
                let first = fast.len();
                let end = fast_values(fast, b, vi)?;
                values = Values::Fast(first, fast.len());
                end
            }
            Member::Range => fast_numbers(b, vi)?,
            Member::HistogramType => number(vi)?,
            Member::BucketCount => {
                let end = number(vi)?;
                bucket_count = BucketCount::Number(vi, end);
                end
            }
            Member::Sum(k) => {
                let end = number(vi)?;
                sums[k] = Some((vi, end));
                end
            }
        };
        match b.get(end) {
            Some(b',') => i = end + 1,
            Some(b'}') => {
                let body = HistBody::Object {
                    bucket_count,
                    values,
                    sums,
                };
                return Some((body, end + 1));
            }
            _ => return None,
        }
    }
}

/// Checks the array of numbers at `i` (`[1,2]`, no whitespace); returns the position
/// after it, or `None` for anything else.
fn fast_numbers(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'[') {
        return None;
    }
    let mut i = i + 1;
    if b.get(i) == Some(&b']') {
        return Some(i + 1);
    }
    loop {
        if !matches!(b.get(i), Some(b'-' | b'0'..=b'9')) {
            return None;
        }
        let end = json::scan_number(b, i).ok()?;
        match b.get(end) {
            Some(b',') => i = end + 1,
            Some(b']') => return Some(end + 1),
            _ => return None,
        }
    }
}

impl<'m> Converter<'m> {
    /// A converter for these mappings.
    pub fn new(mappings: &'m Mappings) -> Self {
        let schema = mappings.schema();
        let mut wanted = Vec::new();
        let dim_src = schema
            .dimension_names()
            .map(|name| {
                if name == "submission_date" {
                    DimSource::Day
                } else {
                    DimSource::Info(field_index(&mut wanted, name))
                }
            })
            .collect();
        let rev_field = field_index(&mut wanted, "revision");
        let table_fields = ["appName", "appUpdateChannel", "appVersion", "appBuildID"]
            .map(|n| field_index(&mut wanted, n));
        let fields = vec![Field::default(); wanted.len()];
        Converter {
            mappings,
            wanted,
            dim_src,
            rev_field,
            table_fields,
            fields,
            out: Vec::new(),
            scratch: Vec::new(),
            arena: Vec::new(),
            hists: Vec::new(),
            values: Vec::new(),
            fast: Vec::new(),
            fast_path: true,
            counts: Vec::new(),
            dropped: Vec::new(),
            dropped_names: String::new(),
            dims: vec![String::new(); schema.len()],
            partition: String::new(),
            line: Vec::new(),
            doc_id: String::new(),
            day: String::new(),
            hist_at: None,
            copy_histograms: false,
        }
    }

    /// The mappings this converter uses.
    pub fn mappings(&self) -> &'m Mappings {
        self.mappings
    }

    /// Converts a legacy record: HBase row key and the stored value.
    pub fn convert_legacy(&mut self, key: &[u8], value: &[u8]) -> Result<Converted<'_>, Rejection> {
        let k =
            rowkey::parse(key).map_err(|e| Rejection::new(Reason::InvalidKey, e.to_string()))?;
        self.doc_id.clear();
        self.doc_id.push_str(k.doc_id);
        self.day.clear();
        self.day.push_str(k.day);
        self.convert_body(value, &[])
    }

    /// Converts a payload whose doc id and day are already known (live submissions),
    /// with the submission path's dimension values (by schema dimension, may be
    /// shorter) as the fallback for values missing from `info`.
    pub fn convert_payload(
        &mut self,
        doc_id: &str,
        day: &str,
        path_dims: &[Option<&str>],
        body: &[u8],
    ) -> Result<Converted<'_>, Rejection> {
        self.doc_id.clear();
        self.doc_id.push_str(doc_id);
        self.day.clear();
        self.day.push_str(day);
        self.convert_body(body, path_dims)
    }

    /// Re-processes a record of the new store: its doc id, its submission day (from
    /// the partition name it was stored under) and its JSON. A ver 2 record is
    /// re-validated and re-routed under the current mappings without converting its
    /// histograms again, and re-serialised canonically (SPEC §5: a line the export
    /// wrote comes out byte-identical); a ver 1 record is converted in full.
    pub fn convert_stored(
        &mut self,
        doc_id: &[u8],
        day: &str,
        json: &[u8],
    ) -> Result<Converted<'_>, Rejection> {
        if !rowkey::is_uuid(doc_id) {
            return reject(
                Reason::InvalidKey,
                format!(
                    "doc id {:?} is not a UUID",
                    String::from_utf8_lossy(&doc_id[..doc_id.len().min(64)])
                ),
            );
        }
        self.doc_id.clear();
        // A UUID is ASCII.
        self.doc_id
            .push_str(std::str::from_utf8(doc_id).expect("a UUID is ASCII"));
        self.day.clear();
        self.day.push_str(day);
        if !json.is_ascii() {
            if let Err(e) = std::str::from_utf8(json) {
                return reject(
                    Reason::CorruptedData,
                    format!("value is not utf-8 (byte {})", e.valid_up_to()),
                );
            }
        }
        self.copy_histograms = true;
        let parsed = self.parse_top(json);
        self.copy_histograms = false;
        let (ver, info, hist) =
            parsed.map_err(|e| Rejection::new(Reason::InvalidJson, e.to_string()))?;
        match ver {
            Ver::Two => {}
            // Not converted yet (or not at all): the whole way, like a legacy record.
            Ver::One => {
                self.run(json, &[])?;
                return Ok(self.converted());
            }
            Ver::Missing => return reject(Reason::UnsupportedVersion, "no ver"),
            Ver::Other => return reject(Reason::UnsupportedVersion, "ver is not 1 or 2"),
        }
        match info {
            Part::Object => {}
            Part::Missing => return reject(Reason::MissingInfo, "no info"),
            Part::NotObject => return reject(Reason::MissingInfo, "info is not an object"),
        }
        if hist == Part::NotObject {
            return reject(Reason::InvalidBucket, "histograms is not an object");
        }
        // Nothing is dropped: the histograms were judged when they were converted.
        self.dropped.clear();
        self.dropped_names.clear();
        self.line.clear();
        self.line.extend_from_slice(self.doc_id.as_bytes());
        self.line.push(b'\t');
        self.line.extend_from_slice(&self.out);
        self.line.push(b'\n');
        self.route(&[]);
        Ok(self.converted())
    }

    fn converted(&self) -> Converted<'_> {
        Converted {
            doc_id: &self.doc_id,
            day: &self.day,
            dims: &self.dims,
            partition: &self.partition,
            line: &self.line,
            dropped: &self.dropped,
            dropped_names: &self.dropped_names,
        }
    }

    fn convert_body(
        &mut self,
        value: &[u8],
        path_dims: &[Option<&str>],
    ) -> Result<Converted<'_>, Rejection> {
        // A decoded (gunzipped) body has to outlive the parse: keep it in our buffer.
        let decoded = body::decode_body(value)
            .map_err(|e| Rejection::new(Reason::CorruptedData, e.to_string()))?;
        let owned;
        let payload: &[u8] = match decoded {
            std::borrow::Cow::Borrowed(b) => b,
            std::borrow::Cow::Owned(v) => {
                owned = v;
                &owned
            }
        };
        // Most payloads are ASCII, which is much cheaper to check than UTF-8.
        if !payload.is_ascii() {
            if let Err(e) = std::str::from_utf8(payload) {
                return reject(
                    Reason::CorruptedData,
                    format!("value is not utf-8 (byte {})", e.valid_up_to()),
                );
            }
        }
        self.run(payload, path_dims)?;
        Ok(self.converted())
    }

    /// Parses, checks and converts; fills `dims`, `partition`, `line`, `dropped`.
    fn run(&mut self, b: &[u8], path_dims: &[Option<&str>]) -> Result<(), Rejection> {
        let (ver, info, hist) = self
            .parse_top(b)
            .map_err(|e| Rejection::new(Reason::InvalidJson, e.to_string()))?;
        match ver {
            Ver::One => {}
            Ver::Missing => return reject(Reason::UnsupportedVersion, "no ver"),
            Ver::Two | Ver::Other => return reject(Reason::UnsupportedVersion, "ver is not 1"),
        }
        match info {
            Part::Object => {}
            Part::Missing => return reject(Reason::MissingInfo, "no info"),
            Part::NotObject => return reject(Reason::MissingInfo, "info is not an object"),
        }
        self.dropped.clear();
        self.dropped_names.clear();
        // The converted histograms, most of the line, are written straight into it
        // between the two parts of the payload's copy, rather than copied there.
        self.line.clear();
        self.line.extend_from_slice(self.doc_id.as_bytes());
        self.line.push(b'\t');
        let at = self.hist_at.unwrap_or(self.out.len());
        self.line.extend_from_slice(&self.out[..at]);
        match hist {
            Part::Missing => {}
            Part::NotObject => return reject(Reason::InvalidBucket, "histograms is not an object"),
            Part::Object if self.hists.is_empty() => self.line.extend_from_slice(b"{}"),
            Part::Object => {
                let defs = self.definitions()?;
                self.convert_histograms(b, defs)?;
            }
        }
        self.line.extend_from_slice(&self.out[at..]);
        self.line.push(b'\n');
        self.route(path_dims);
        Ok(())
    }

    /// The definitions for this record's revision: from `info.revision`, else the
    /// revision table.
    fn definitions(&self) -> Result<&'m Definitions, Rejection> {
        let m = self.mappings;
        let rev = &self.fields[self.rev_field];
        let rev12 = if rev.present {
            match parse_revision_url(&rev.text) {
                Some(r) => r,
                None => {
                    return reject(
                        Reason::InvalidRevision,
                        format!("revision {:?} is not a revision url", rev.text),
                    )
                }
            }
        } else {
            let [a, c, v, b] = self.table_fields.map(|i| &self.fields[i]);
            if !(a.present && c.present && v.present && b.present) {
                return reject(
                    Reason::MissingRevision,
                    "no info.revision and no appName/channel/version/buildID to resolve one",
                );
            }
            match m.resolve_revision(&a.text, &c.text, &v.text, &b.text) {
                Some(r) => r.to_string(),
                None => {
                    return reject(
                        Reason::MissingRevision,
                        format!(
                            "no info.revision and no revision table entry for {}/{}/{}/{}",
                            a.text, c.text, v.text, b.text
                        ),
                    )
                }
            }
        };
        m.definitions(&rev12).ok_or_else(|| {
            Rejection::new(
                Reason::UnknownRevision,
                format!("no histogram definitions for revision {rev12}"),
            )
        })
    }

    fn convert_histograms(&mut self, b: &[u8], defs: &Definitions) -> Result<(), Rejection> {
        // The arena is read while `self` is written: lend it out for the duration.
        let arena = std::mem::take(&mut self.arena);
        let r = self.convert_histograms_in(b, &arena, defs);
        self.arena = arena;
        r
    }

    fn convert_histograms_in(
        &mut self,
        b: &[u8],
        arena: &[u8],
        defs: &Definitions,
    ) -> Result<(), Rejection> {
        let mut first = true;
        self.line.push(b'{');
        for h in 0..self.hists.len() {
            let HistIr { name, body } = self.hists[h];
            let name_bytes = name.bytes(b, arena);
            // Definition names are decoded text. Canonical text without a backslash
            // is its own decoding (a name still in the input had no escape, so no
            // backslash): only the rare name with an escape is decoded to be looked
            // up, and then reported as decoded if unknown, so that a name is one
            // name however it was spelled.
            let decoded = match name {
                Span::Arena(..) if name_bytes.contains(&b'\\') => {
                    Some(json::decode_canonical(name_bytes))
                }
                _ => None,
            };
            let def = match &decoded {
                Some(text) => defs.lookup(text),
                None => defs.lookup_bytes(name_bytes),
            };
            let Some(def) = def else {
                let start = self.dropped_names.len();
                match &decoded {
                    Some(text) => self.dropped_names.push_str(text),
                    // No escape: the text itself, borrowed.
                    None => self
                        .dropped_names
                        .push_str(&json::decode_canonical(name_bytes)),
                }
                self.dropped.push((start, self.dropped_names.len()));
                continue;
            };
            let HistBody::Object {
                bucket_count,
                values,
                sums,
            } = body
            else {
                return reject(
                    Reason::InvalidBucket,
                    format!("histogram {} is not an object", text(name_bytes)),
                );
            };
            self.check_bucket_count(b, name_bytes, def, bucket_count)?;
            // A rejection discards what was written, so writing may go with checking.
            if !first {
                self.line.push(b',');
            }
            first = false;
            self.line.push(b'"');
            self.line.extend_from_slice(name_bytes);
            self.line.extend_from_slice(b"\":[");
            match values {
                Values::Missing => {
                    return reject(
                        Reason::InvalidBucket,
                        format!("histogram {} has no values", text(name_bytes)),
                    )
                }
                Values::NotObject => {
                    return reject(
                        Reason::InvalidBucket,
                        format!("histogram {} values is not an object", text(name_bytes)),
                    )
                }
                Values::Entries(s, e) => {
                    self.fill_counts(b, arena, name_bytes, def, s, e)?;
                    self.write_counts(b);
                }
                Values::Fast(s, e) => self.write_fast(b, name_bytes, def, s, e)?,
            }
            for (k, s) in sums.iter().enumerate() {
                if k > 0 {
                    self.line.push(b',');
                }
                match s {
                    Some(tok) => push_token(&mut self.line, b, *tok),
                    None => self.line.extend_from_slice(b"-1"),
                }
            }
            self.line.push(b']');
        }
        self.line.push(b'}');
        Ok(())
    }

    fn check_bucket_count(
        &self,
        b: &[u8],
        name: &[u8],
        def: &HistDef,
        bc: BucketCount,
    ) -> Result<(), Rejection> {
        let n = def.buckets.len();
        let ok = match bc {
            BucketCount::Absent => true,
            BucketCount::NotNumber => false,
            // Plain integers (all real ones) are exact without a float parse.
            BucketCount::Number(s, e) if e - s <= 15 && is_count(&b[s..e]) => {
                b[s..e]
                    .iter()
                    .fold(0u64, |v, &d| v * 10 + u64::from(d - b'0'))
                    == n as u64
            }
            BucketCount::Number(s, e) => std::str::from_utf8(&b[s..e])
                .ok()
                .and_then(|t| t.parse::<f64>().ok())
                .is_some_and(|v| v == n as f64),
        };
        if ok {
            Ok(())
        } else {
            let got = match bc {
                BucketCount::Number(s, e) => text(&b[s..e]),
                _ => "a non-number".into(),
            };
            reject(
                Reason::HistogramMismatch,
                format!(
                    "histogram {} has bucket_count {got}, definition has {n}",
                    text(name)
                ),
            )
        }
    }

    /// Writes `counts` as the bucket array's counts, each followed by a comma.
    fn write_counts(&mut self, b: &[u8]) {
        // Counts are sparse: write runs of empty buckets from a ready-made "0,0,…".
        let mut zeros = 0;
        for c in &self.counts {
            match c {
                Some((s, e)) => {
                    push_zeros(&mut self.line, zeros);
                    zeros = 0;
                    push_token(&mut self.line, b, (*s, *e));
                    self.line.push(b',');
                }
                None => zeros += 1,
            }
        }
        push_zeros(&mut self.line, zeros);
    }

    /// Like `fill_counts` then `write_counts`, for the entries `fast[s..e]`: while
    /// their buckets ascend (the usual order) they are written as they come, without
    /// `counts`; on the first that goes back (a duplicate or a payload out of order)
    /// the histogram is written again through `counts`. Fast counts are all valid, so
    /// the one possible rejection is the first key that is not a bound, as there.
    fn write_fast(
        &mut self,
        b: &[u8],
        name: &[u8],
        def: &HistDef,
        s: usize,
        e: usize,
    ) -> Result<(), Rejection> {
        let at = self.line.len();
        let mut next = 0;
        for v in &self.fast[s..e] {
            // At most 18 digits: the key fits.
            let key = v.key as i64;
            let Some(idx) = def.bucket_index_from(key, next) else {
                if def.buckets[..next].binary_search(&key).is_ok() {
                    return self.write_fast_unordered(b, name, def, s, e, at);
                }
                return Err(not_a_bound(name, v.key.to_string().as_bytes()));
            };
            push_zeros(&mut self.line, idx - next);
            push_token(&mut self.line, b, v.count);
            self.line.push(b',');
            next = idx + 1;
        }
        push_zeros(&mut self.line, def.buckets.len() - next);
        Ok(())
    }

    /// `write_fast` for entries whose buckets do not ascend: rewrites from `at`.
    fn write_fast_unordered(
        &mut self,
        b: &[u8],
        name: &[u8],
        def: &HistDef,
        s: usize,
        e: usize,
        at: usize,
    ) -> Result<(), Rejection> {
        self.line.truncate(at);
        self.counts.clear();
        self.counts.resize(def.buckets.len(), None);
        for v in &self.fast[s..e] {
            match def.buckets.binary_search(&(v.key as i64)) {
                // A later entry for the same bucket wins, as in `fill_counts`.
                Ok(idx) => self.counts[idx] = Some(v.count),
                Err(_) => return Err(not_a_bound(name, v.key.to_string().as_bytes())),
            }
        }
        self.write_counts(b);
        Ok(())
    }

    /// Checks every key of `values[s..e]`, then every count, and fills `counts` by
    /// bucket.
    fn fill_counts(
        &mut self,
        b: &[u8],
        arena: &[u8],
        name: &[u8],
        def: &HistDef,
        s: usize,
        e: usize,
    ) -> Result<(), Rejection> {
        self.counts.clear();
        self.counts.resize(def.buckets.len(), None);
        let mut bad_count: Option<usize> = None;
        let mut hint = 0;
        for v in s..e {
            let ValueIr { key, count } = self.values[v];
            let key_bytes = key.bytes(b, arena);
            let idx = def.bucket_index_near(key_bytes, hint);
            hint = idx.map_or(0, |i| i + 1);
            let Some(idx) = idx else {
                return Err(not_a_bound(name, key_bytes));
            };
            match count {
                Some((cs, ce)) if is_count(&b[cs..ce]) => self.counts[idx] = Some((cs, ce)),
                _ => {
                    bad_count.get_or_insert(v);
                }
            }
        }
        if let Some(v) = bad_count {
            let ValueIr { key, count } = self.values[v];
            let shown = match count {
                Some((cs, ce)) => text(&b[cs..ce]),
                None => "a non-number".into(),
            };
            return reject(
                Reason::InvalidCount,
                format!(
                    "histogram {} bucket {} has count {shown}, not an integer >= 0",
                    text(name),
                    text(key.bytes(b, arena))
                ),
            );
        }
        Ok(())
    }

    /// Final dimension values and the partition.
    fn route(&mut self, path_dims: &[Option<&str>]) {
        let schema = self.mappings.schema();
        for (d, src) in self.dim_src.iter().enumerate() {
            let raw = match *src {
                DimSource::Day => Some(self.day.as_str()),
                DimSource::Info(k) if self.fields[k].present => Some(self.fields[k].text.as_str()),
                DimSource::Info(_) => path_dims.get(d).copied().flatten(),
            };
            self.dims[d] = schema.final_value(d, raw);
        }
        self.partition = schema.partition(&self.dims);
    }

    // ---- parsing ----

    /// Reads the top-level object: copies it canonically into `out` (with `ver`
    /// rewritten and a gap for `histograms`), extracts `info` fields and the
    /// histograms' intermediate form.
    fn parse_top(&mut self, b: &[u8]) -> Result<(Ver, Part, Part), JsonError> {
        self.out.clear();
        self.arena.clear();
        self.hists.clear();
        self.values.clear();
        self.fast.clear();
        self.hist_at = None;
        for f in &mut self.fields {
            f.present = false;
        }
        let (mut ver, mut info, mut hist) = (Ver::Missing, Part::Missing, Part::Missing);
        let mut i = json::ws(b, 0);
        if b.get(i) != Some(&b'{') {
            // Still a syntax error first if it is not JSON at all.
            json::skip_value(b, i, &mut self.scratch, 0)?;
            return json::err(i, "top level is not an object");
        }
        self.out.push(b'{');
        i = json::ws(b, i + 1);
        if b.get(i) == Some(&b'}') {
            self.out.push(b'}');
            i += 1;
        } else {
            loop {
                i = json::ws(b, i);
                if b.get(i) != Some(&b'"') {
                    return json::err(i, "expected object key");
                }
                let key_start = self.out.len();
                i = json::canon_string(b, i, &mut self.out)?;
                let key_at = i;
                i = json::expect(b, i, b':', "expected ':'")?;
                let key = &self.out[key_start..];
                let which = match key {
                    b"\"ver\"" => 1,
                    b"\"info\"" => 2,
                    b"\"histograms\"" => 3,
                    _ => 0,
                };
                self.out.push(b':');
                let vi = json::ws(b, i);
                match which {
                    1 => {
                        if ver != Ver::Missing {
                            return json::err(key_at, "duplicate key \"ver\"");
                        }
                        let start = self.out.len();
                        i = json::canon_value(b, vi, &mut self.out, 1)?;
                        if &b[vi..i] == b"1" {
                            ver = Ver::One;
                            self.out.truncate(start);
                            self.out.push(b'2');
                        } else if &b[vi..i] == b"2" {
                            ver = Ver::Two;
                        } else {
                            ver = Ver::Other;
                        }
                    }
                    2 => {
                        if info != Part::Missing {
                            return json::err(key_at, "duplicate key \"info\"");
                        }
                        if b.get(vi) == Some(&b'{') {
                            info = Part::Object;
                            i = self.parse_info(b, vi)?;
                        } else {
                            info = Part::NotObject;
                            i = json::canon_value(b, vi, &mut self.out, 1)?;
                        }
                    }
                    3 => {
                        if hist != Part::Missing {
                            return json::err(key_at, "duplicate key \"histograms\"");
                        }
                        if b.get(vi) == Some(&b'{') && self.copy_histograms {
                            hist = Part::Object;
                            i = json::canon_value(b, vi, &mut self.out, 1)?;
                        } else if b.get(vi) == Some(&b'{') {
                            hist = Part::Object;
                            self.hist_at = Some(self.out.len());
                            i = self.parse_histograms(b, vi)?;
                        } else {
                            hist = Part::NotObject;
                            i = json::canon_value(b, vi, &mut self.out, 1)?;
                        }
                    }
                    _ => i = json::canon_value(b, vi, &mut self.out, 1)?,
                }
                match json::separator(b, i, b'}', &mut self.out)? {
                    json::Next::More(next) => i = next,
                    json::Next::Done(end) => {
                        i = end;
                        break;
                    }
                }
            }
        }
        let end = json::ws(b, i);
        if end != b.len() {
            return json::err(end, "trailing data after json value");
        }
        Ok((ver, info, hist))
    }

    /// Copies `info` canonically, keeping the wanted fields' values.
    fn parse_info(&mut self, b: &[u8], i: usize) -> JResult {
        self.out.push(b'{');
        let mut i = json::ws(b, i + 1);
        if b.get(i) == Some(&b'}') {
            self.out.push(b'}');
            return Ok(i + 1);
        }
        loop {
            i = json::ws(b, i);
            if b.get(i) != Some(&b'"') {
                return json::err(i, "expected object key");
            }
            let key_start = self.out.len();
            i = json::canon_string(b, i, &mut self.out)?;
            let key = &self.out[key_start + 1..self.out.len() - 1];
            let field = self.wanted.iter().position(|w| w.as_bytes() == key);
            i = json::expect(b, i, b':', "expected ':'")?;
            self.out.push(b':');
            let vi = json::ws(b, i);
            i = json::canon_value(b, vi, &mut self.out, 2)?;
            if let Some(k) = field {
                let f = &mut self.fields[k];
                match b[vi] {
                    b'"' => {
                        json::decode_string(b, vi, &mut f.text)?;
                        f.present = true;
                    }
                    b'-' | b'0'..=b'9' => {
                        f.text.clear();
                        // Numbers are ASCII.
                        f.text
                            .push_str(std::str::from_utf8(&b[vi..i]).unwrap_or_default());
                        f.present = true;
                    }
                    _ => f.present = false,
                }
            }
            match json::separator(b, i, b'}', &mut self.out)? {
                json::Next::More(next) => i = next,
                json::Next::Done(end) => return Ok(end),
            }
        }
    }

    /// A string at `i` as a span: the input itself when already canonical, else its
    /// canonical form in the arena.
    fn string_span(&mut self, b: &[u8], i: usize) -> JResult<(Span, usize)> {
        let (end, clean) = json::scan_string(b, i)?;
        if clean {
            return Ok((Span::Input(i + 1, end - 1), end));
        }
        let start = self.arena.len();
        json::canon_string(b, i, &mut self.arena)?;
        // Without the quotes.
        Ok((Span::Arena(start + 1, self.arena.len() - 1), end))
    }

    /// Calls `member(self, key, value_start)` for each member of the object at `i`;
    /// `member` returns the position after the value.
    fn members(
        &mut self,
        b: &[u8],
        i: usize,
        mut member: impl FnMut(&mut Self, Span, usize) -> JResult,
    ) -> JResult {
        let mut i = json::ws(b, i + 1);
        if b.get(i) == Some(&b'}') {
            return Ok(i + 1);
        }
        loop {
            i = json::ws(b, i);
            if b.get(i) != Some(&b'"') {
                return json::err(i, "expected object key");
            }
            let (key, after) = self.string_span(b, i)?;
            i = json::expect(b, after, b':', "expected ':'")?;
            i = member(self, key, json::ws(b, i))?;
            i = json::ws(b, i);
            match b.get(i) {
                Some(b',') => i += 1,
                Some(b'}') => return Ok(i + 1),
                _ => return json::err(i, "expected ',' or '}'"),
            }
        }
    }

    fn number_or_skip(
        &mut self,
        b: &[u8],
        vi: usize,
        depth: usize,
    ) -> JResult<(Option<(usize, usize)>, usize)> {
        if matches!(b.get(vi), Some(b'-' | b'0'..=b'9')) {
            let end = json::scan_number(b, vi)?;
            Ok((Some((vi, end)), end))
        } else {
            Ok((None, json::skip_value(b, vi, &mut self.scratch, depth)?))
        }
    }

    fn parse_histograms(&mut self, b: &[u8], i: usize) -> JResult {
        self.members(b, i, |this, name, vi| {
            if b.get(vi) != Some(&b'{') {
                let end = json::skip_value(b, vi, &mut this.scratch, 2)?;
                this.hists.push(HistIr {
                    name,
                    body: HistBody::NotObject,
                });
                return Ok(end);
            }
            if this.fast_path {
                if let Some((body, end)) = fast_hist(&mut this.fast, b, vi) {
                    this.hists.push(HistIr { name, body });
                    return Ok(end);
                }
            }
            let mut bucket_count = BucketCount::Absent;
            let mut values = Values::Missing;
            let mut sums = [None; 5];
            let end = this.members(b, vi, |this, key, vi| {
                let key = key.bytes(b, &this.arena);
                if key == b"values" {
                    if b.get(vi) == Some(&b'{') {
                        if this.fast_path {
                            let start = this.fast.len();
                            if let Some(end) = fast_values(&mut this.fast, b, vi) {
                                values = Values::Fast(start, this.fast.len());
                                return Ok(end);
                            }
                        }
                        let start = this.values.len();
                        let end = this.members(b, vi, |this, key, vi| {
                            let (count, end) = this.number_or_skip(b, vi, 4)?;
                            this.values.push(ValueIr { key, count });
                            Ok(end)
                        })?;
                        values = Values::Entries(start, this.values.len());
                        Ok(end)
                    } else {
                        values = Values::NotObject;
                        json::skip_value(b, vi, &mut this.scratch, 3)
                    }
                } else if key == b"bucket_count" {
                    let (tok, end) = this.number_or_skip(b, vi, 3)?;
                    bucket_count = match tok {
                        Some((s, e)) => BucketCount::Number(s, e),
                        None => BucketCount::NotNumber,
                    };
                    Ok(end)
                } else if let Some(k) = SUM_FIELDS.iter().position(|f| *f == key) {
                    let (tok, end) = this.number_or_skip(b, vi, 3)?;
                    sums[k] = tok;
                    Ok(end)
                } else {
                    json::skip_value(b, vi, &mut this.scratch, 3)
                }
            })?;
            this.hists.push(HistIr {
                name,
                body: HistBody::Object {
                    bucket_count,
                    values,
                    sums,
                },
            });
            Ok(end)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::reason::Reason::*;

    const ID: &str = "17caa68c-25f5-450a-9cce-7d31318846d8";
    const REV: &str = "http://hg.mozilla.org/releases/mozilla-aurora/rev/a55c55edf302";
    const FLAG: &str = r#"{"range":[1,2],"bucket_count":3,"histogram_type":3,"values":{"0":1,"1":0},"sum":0,"sum_squares_lo":0,"sum_squares_hi":0}"#;

    fn key() -> Vec<u8> {
        rowkey::build("20131011", ID)
    }

    fn info(extra: &str) -> String {
        format!(
            r#"{{"reason":"saved-session","appName":"Firefox","appUpdateChannel":"nightly","appVersion":"22.0a1","appBuildID":"20130226031002"{extra}}}"#
        )
    }

    fn payload(hists: &str) -> String {
        format!(
            r#"{{"ver":1,"info":{},"simpleMeasurements":{{"uptime":1}},"histograms":{hists}}}"#,
            info(&format!(r#","revision":"{REV}""#))
        )
    }

    fn convert(value: &str) -> Result<(String, String, Vec<String>), Rejection> {
        let m = Mappings::embedded().unwrap();
        let mut c = Converter::new(m);
        let out = c.convert_legacy(&key(), value.as_bytes())?;
        Ok((
            out.partition.to_string(),
            String::from_utf8(out.line.to_vec()).unwrap(),
            out.dropped().map(str::to_string).collect(),
        ))
    }

    fn reason(value: &str) -> Reason {
        match convert(value) {
            Ok(_) => panic!("expected a rejection for {value}"),
            Err(r) => r.reason,
        }
    }

    #[test]
    fn stored_records_come_back_the_same_or_canonical() {
        let m = Mappings::embedded().unwrap();
        let value = payload(&format!(
            r#"{{"A11Y_INSTANTIATED_FLAG":{FLAG},"NOT_A_HISTOGRAM_WE_KNOW":{FLAG}}}"#
        ));
        let mut c = Converter::new(m);
        let (part, line) = {
            let out = c.convert_legacy(&key(), value.as_bytes()).unwrap();
            (out.partition.to_string(), out.line.to_vec())
        };
        let tab = line.iter().position(|&b| b == b'\t').unwrap();
        let json = &line[tab + 1..line.len() - 1];
        // What the export wrote comes back byte for byte, in the same partition, and
        // nothing is dropped a second time.
        let again = c.convert_stored(ID.as_bytes(), "20131011", json).unwrap();
        assert_eq!(again.partition, part);
        assert_eq!(again.line, &line[..]);
        assert_eq!(again.dropped().count(), 0);
        // A non-compact spelling of the same record (the old server's files) is
        // written in the canonical form.
        let loose = String::from_utf8(json.to_vec())
            .unwrap()
            .replace(",", " ,\n ")
            .replace("\"ver\":2", "\"ver\" : 2")
            .replace("Firefox", "Fire\\u0066ox");
        let again = c
            .convert_stored(ID.to_uppercase().as_bytes(), "20131011", loose.as_bytes())
            .unwrap();
        assert_eq!(again.partition, part);
        assert_eq!(
            &again.line[36..],
            &line[36..],
            "a loose spelling is re-serialised canonically"
        );
        // A ver 1 record in the store is converted in full, as the export would.
        let full = c
            .convert_stored(ID.as_bytes(), "20131011", value.as_bytes())
            .unwrap();
        assert_eq!(full.line, &line[..]);
        assert_eq!(
            full.dropped().collect::<Vec<_>>(),
            ["NOT_A_HISTOGRAM_WE_KNOW"]
        );
        // The day is the one given (the partition name's), not one in the record.
        let other_day = c.convert_stored(ID.as_bytes(), "20140101", json).unwrap();
        assert!(
            other_day.partition.ends_with(".20140101.v2.log"),
            "{}",
            other_day.partition
        );
    }

    #[test]
    fn stored_records_are_judged_in_spec_order() {
        let m = Mappings::embedded().unwrap();
        let mut c = Converter::new(m);
        let inf = info("");
        let cases: Vec<(&[u8], String, Reason)> = vec![
            (
                b"not-a-uuid",
                format!(r#"{{"ver":2,"info":{inf}}}"#),
                InvalidKey,
            ),
            (
                ID.as_bytes(),
                r#"{"ver":2,"info":{"a":}}"#.into(),
                InvalidJson,
            ),
            (ID.as_bytes(), "[1]".into(), InvalidJson),
            (
                ID.as_bytes(),
                format!(r#"{{"ver":3,"info":{inf}}}"#),
                UnsupportedVersion,
            ),
            (
                ID.as_bytes(),
                format!(r#"{{"info":{inf}}}"#),
                UnsupportedVersion,
            ),
            (ID.as_bytes(), r#"{"ver":2,"info":[]}"#.into(), MissingInfo),
            (ID.as_bytes(), r#"{"ver":2}"#.into(), MissingInfo),
            (
                ID.as_bytes(),
                format!(r#"{{"ver":2,"info":{inf},"histograms":[]}}"#),
                InvalidBucket,
            ),
        ];
        for (id, json, want) in cases {
            match c.convert_stored(id, "20131011", json.as_bytes()) {
                Ok(o) => panic!("{json} was accepted: {}", o.partition),
                Err(r) => assert_eq!(r.reason, want, "{json}: {}", r.detail),
            }
        }
        let bad_utf8 = b"{\"ver\":2,\"info\":{\"reason\":\"\xff\"}}";
        let r = c
            .convert_stored(ID.as_bytes(), "20131011", bad_utf8)
            .unwrap_err();
        assert_eq!(r.reason, CorruptedData);
    }

    #[test]
    fn spec_example_flag_histogram() {
        let (part, line, dropped) =
            convert(&payload(&format!(r#"{{"A11Y_INSTANTIATED_FLAG":{FLAG}}}"#))).unwrap();
        assert_eq!(
            part,
            "saved_session/Firefox/nightly/22.0a1/20130226031002.20131011.v2.log"
        );
        let want = format!(
            "{ID}\t{{\"ver\":2,\"info\":{},\"simpleMeasurements\":{{\"uptime\":1}},\"histograms\":{{\"A11Y_INSTANTIATED_FLAG\":[1,0,0,0,-1,-1,0,0]}}}}\n",
            info(&format!(r#","revision":"{REV}""#))
        );
        assert_eq!(line, want);
        assert!(dropped.is_empty());
    }

    #[test]
    fn serialisation_is_canonical() {
        let v = format!(
            "{{ \"z\" : [1.50, -0, 123456789012345678901234567890, 1E+2], \"ver\" : 1 , \"s\":\"é😀\\/\\u00E9\", \"info\": {} , \"histograms\" : {{ }} }}",
            info("")
        );
        let (_, line, _) = convert(&v).unwrap();
        let want = format!(
            "{ID}\t{{\"z\":[1.50,-0,123456789012345678901234567890,1E+2],\"ver\":2,\"s\":\"\\u00e9\\ud83d\\ude00/\\u00e9\",\"info\":{},\"histograms\":{{}}}}\n",
            info("")
        );
        assert_eq!(line, want);
    }

    #[test]
    fn converts_in_payload_order_and_drops_unknown() {
        let hists = format!(
            r#"{{"NOT_A_HISTOGRAM":{{"values":{{"7":1}}}},"A11Y_INSTANTIATED_FLAG":{FLAG},"STARTUP_A11Y_INSTANTIATED_FLAG":{FLAG},"ALSO_UNKNOWN":5}}"#
        );
        let (_, line, dropped) = convert(&payload(&hists)).unwrap();
        assert!(line.contains(r#""histograms":{"A11Y_INSTANTIATED_FLAG":[1,0,0,0,-1,-1,0,0],"STARTUP_A11Y_INSTANTIATED_FLAG":[1,0,0,0,-1,-1,0,0]}"#), "{line}");
        assert_eq!(dropped, ["NOT_A_HISTOGRAM", "ALSO_UNKNOWN"]);
    }

    #[test]
    fn enumerated_histogram_and_missing_statistics() {
        // A11Y_CONSUMERS: enumerated, n_values 11 → 12 buckets [0..=11].
        let h = r#"{"A11Y_CONSUMERS":{"bucket_count":12,"values":{"0":3,"11":18446744073709551616},"sum":123456789012345678901,"log_sum":1.5e3}}"#;
        let (_, line, _) = convert(&payload(h)).unwrap();
        assert!(
            line.contains(r#""A11Y_CONSUMERS":[3,0,0,0,0,0,0,0,0,0,0,18446744073709551616,123456789012345678901,1.5e3,-1,-1,-1]"#),
            "{line}"
        );
    }

    #[test]
    fn empty_or_absent_histograms_need_no_revision() {
        let v = format!(r#"{{"ver":1,"info":{},"histograms":{{}}}}"#, info(""));
        assert!(convert(&v).is_ok());
        let v = format!(r#"{{"ver":1,"info":{}}}"#, info(""));
        assert!(convert(&v).is_ok());
    }

    #[test]
    fn revision_from_the_table() {
        let v = format!(
            r#"{{"ver":1,"info":{{"reason":"saved-session","appName":"Firefox","appUpdateChannel":"aurora","appVersion":"23.0a2","appBuildID":"20130514004016"}},"histograms":{{"A11Y_INSTANTIATED_FLAG":{FLAG}}}}}"#
        );
        assert!(convert(&v).is_ok());
        let v = v.replace("20130514004016", "20130515004016");
        assert_eq!(reason(&v), MissingRevision);
    }

    #[test]
    fn reject_reasons() {
        let flag = |values: &str| {
            payload(&format!(
                r#"{{"A11Y_INSTANTIATED_FLAG":{{"bucket_count":3,"values":{values}}}}}"#
            ))
        };
        let with_rev = |rev: &str| {
            format!(
                r#"{{"ver":1,"info":{},"histograms":{{"A11Y_INSTANTIATED_FLAG":{FLAG}}}}}"#,
                info(&format!(r#","revision":{rev}"#))
            )
        };
        let ok_hist = format!(r#"{{"A11Y_INSTANTIATED_FLAG":{FLAG}}}"#);
        let cases: Vec<(String, Reason)> = vec![
            ("invalid json data".into(), InvalidJson),
            ("[1,2]".into(), InvalidJson),
            ("".into(), InvalidJson),
            (format!("{} x", payload("{}")), InvalidJson),
            (
                format!(r#"{{"ver":1,"ver":1,"info":{}}}"#, info("")),
                InvalidJson,
            ),
            (r#"{"ver":2,"info":{}}"#.into(), UnsupportedVersion),
            (r#"{"info":{}}"#.into(), UnsupportedVersion),
            (r#"{"ver":"1","info":{}}"#.into(), UnsupportedVersion),
            (r#"{"ver":1.0,"info":{}}"#.into(), UnsupportedVersion),
            (r#"{"ver":1}"#.into(), MissingInfo),
            (r#"{"ver":1,"info":[]}"#.into(), MissingInfo),
            (
                r#"{"ver":1,"info":null,"histograms":5}"#.into(),
                MissingInfo,
            ),
            (
                format!(r#"{{"ver":1,"info":{},"histograms":{ok_hist}}}"#, info("")),
                MissingRevision,
            ),
            (
                format!(
                    r#"{{"ver":1,"info":{},"histograms":{ok_hist}}}"#,
                    info(r#","revision":null"#)
                ),
                MissingRevision,
            ),
            (with_rev(r#""a55c55edf302""#), InvalidRevision),
            (
                with_rev(r#""ftp://hg.mozilla.org/x/rev/a55c55edf302""#),
                InvalidRevision,
            ),
            (
                with_rev(r#""http://hg.mozilla.org/x/rev/a55c55""#),
                InvalidRevision,
            ),
            (with_rev(r#""http:///x/rev/a55c55edf302""#), InvalidRevision),
            (with_rev("42"), InvalidRevision),
            (
                with_rev(r#""http://hg.mozilla.org/x/rev/000000000000""#),
                UnknownRevision,
            ),
            (
                payload(r#"{"A11Y_INSTANTIATED_FLAG":{"bucket_count":4,"values":{"0":1}}}"#),
                HistogramMismatch,
            ),
            (
                payload(r#"{"A11Y_INSTANTIATED_FLAG":{"bucket_count":"3","values":{"0":1}}}"#),
                HistogramMismatch,
            ),
            (flag(r#"{"01":1}"#), InvalidBucket),
            (flag(r#"{"3":1}"#), InvalidBucket),
            (flag(r#"{"-0":1}"#), InvalidBucket),
            (flag("[1,2]"), InvalidBucket),
            (
                payload(r#"{"A11Y_INSTANTIATED_FLAG":{"bucket_count":3}}"#),
                InvalidBucket,
            ),
            (
                payload(r#"{"A11Y_INSTANTIATED_FLAG":[1,2,3]}"#),
                InvalidBucket,
            ),
            (
                format!(r#"{{"ver":1,"info":{},"histograms":[]}}"#, info("")),
                InvalidBucket,
            ),
            (flag(r#"{"0":-1}"#), InvalidCount),
            (flag(r#"{"0":1.0}"#), InvalidCount),
            (flag(r#"{"0":1e2}"#), InvalidCount),
            (flag(r#"{"0":"1"}"#), InvalidCount),
            (flag(r#"{"0":null}"#), InvalidCount),
            // Order: keys before counts within a histogram, histograms in payload order.
            (flag(r#"{"0":-1,"5":1}"#), InvalidBucket),
            (
                payload(
                    r#"{"A11Y_INSTANTIATED_FLAG":{"values":{"9":1}},"A11Y_IATABLE_USAGE_FLAG":{"bucket_count":9,"values":{}}}"#,
                ),
                InvalidBucket,
            ),
            (
                payload(
                    r#"{"A11Y_INSTANTIATED_FLAG":{"bucket_count":9,"values":{"9":1}},"A11Y_IATABLE_USAGE_FLAG":{"values":{"9":1}}}"#,
                ),
                HistogramMismatch,
            ),
        ];
        for (value, want) in cases {
            assert_eq!(reason(&value), want, "{value}");
        }
    }

    #[test]
    fn escaped_keys_compare_decoded() {
        // "\u0030" is "0"; an escaped histogram name is still that name.
        let h = format!(
            r#"{{"A11Y_INSTANTIATED_\u0046LAG":{}}}"#,
            FLAG.replace(r#""0":1"#, r#""\u0030":1"#)
        );
        let (_, line, _) = convert(&payload(&h)).unwrap();
        assert!(
            line.contains(r#""A11Y_INSTANTIATED_FLAG":[1,0,0,0,-1,-1,0,0]"#),
            "{line}"
        );
    }

    #[test]
    fn dropped_names_are_decoded() {
        let hists = format!(
            r#"{{"NOT_\u0041_HISTOGRAM":{{}},"q\"b\\s\/":{{}},"caf\u00e9":{{}},"café":{{}},"smile\ud83d\ude00":{{}},"lone\ud800":{{}},"A11Y_INSTANTIATED_FLAG":{FLAG}}}"#
        );
        let (_, line, dropped) = convert(&payload(&hists)).unwrap();
        assert!(
            line.contains(r#""histograms":{"A11Y_INSTANTIATED_FLAG":["#),
            "{line}"
        );
        assert_eq!(
            dropped,
            [
                "NOT_A_HISTOGRAM",
                "q\"b\\s/",
                "café",
                "café",
                "smile😀",
                // Not a character: what a lossy parser gives, as for dimensions.
                "lone\u{fffd}",
            ]
        );
    }

    #[test]
    fn one_name_however_spelled() {
        let m = Mappings::embedded().unwrap();
        let mut c = Converter::new(m);
        for (spellings, want) in [
            (
                &[
                    r#"NOT_A_HISTOGRAM"#,
                    r#"NOT_\u0041_HISTOGRAM"#,
                    r#"NOT\u005fA_HISTOGRAM"#,
                ][..],
                "NOT_A_HISTOGRAM",
            ),
            (
                &["CAFÉ_MS", r#"CAF\u00c9_MS"#, r#"CAF\u00C9_MS"#],
                "CAFÉ_MS",
            ),
            (
                &["MS_😀", r#"MS_\ud83d\ude00"#, r#"MS_\uD83D\uDE00"#],
                "MS_😀",
            ),
        ] {
            for spelling in spellings {
                let v = payload(&format!(r#"{{"{spelling}":{{"values":{{"7":1}}}}}}"#));
                let out = c.convert_legacy(&key(), v.as_bytes()).unwrap();
                let names: Vec<&str> = out.dropped().collect();
                assert_eq!(names, [want], "{spelling}");
            }
        }
    }

    #[test]
    fn definitions_with_non_ascii_names_match_however_spelled() {
        // A mappings folder may define names a payload can only write with escapes
        // (or as raw UTF-8, which canonicalises to escapes): they match decoded.
        const DEFS: &str = "histograms/Histograms.FIREFOX_AURORA_23_BASE.json";
        let mut files = crate::core::mappings::tests::embedded_copy();
        let mut defs: serde_json::Value = serde_json::from_slice(&files.0[DEFS]).unwrap();
        for name in ["CAFÉ_FLAG", "Q\"B\\FLAG"] {
            defs[name] = serde_json::json!({"kind": "flag", "description": "test"});
        }
        files
            .0
            .insert(DEFS.into(), serde_json::to_vec(&defs).unwrap());
        let m = Mappings::load(&files).unwrap();
        let mut c = Converter::new(&m);
        for (spelling, out_key) in [
            ("CAFÉ_FLAG", r#""CAF\u00c9_FLAG""#),
            (r#"CAF\u00c9_FLAG"#, r#""CAF\u00c9_FLAG""#),
            (r#"STARTUP_CAF\u00c9_FLAG"#, r#""STARTUP_CAF\u00c9_FLAG""#),
            (r#"Q\"B\\FLAG"#, r#""Q\"B\\FLAG""#),
            (r#"Q\u0022B\u005cFLAG"#, r#""Q\"B\\FLAG""#),
        ] {
            let v = payload(&format!(r#"{{"{spelling}":{FLAG}}}"#));
            let out = c.convert_legacy(&key(), v.as_bytes()).unwrap();
            let line = std::str::from_utf8(out.line).unwrap();
            let want = format!(r#""histograms":{{{out_key}:[1,0,0,0,-1,-1,0,0]}}"#);
            assert!(line.contains(&want), "{spelling}: {line}");
            assert_eq!(out.dropped().count(), 0, "{spelling}");
        }
    }

    #[test]
    fn invalid_names_reject_the_record() {
        // A name that is not a JSON string rejects the whole record, as anywhere else
        // in the payload: nothing half-decoded reaches the report.
        for (name, want) in [
            (r#""BAD\q""#, InvalidJson),
            (r#""BAD\u12""#, InvalidJson),
            (r#""BAD\uZZZZ""#, InvalidJson),
            ("\"BAD\u{1}\"", InvalidJson),
            (r#""BAD"#, InvalidJson),
        ] {
            let v = payload(&format!(r#"{{{name}:{{}}}}"#));
            assert_eq!(reason(&v), want, "{v}");
        }
        let mut v = payload(r#"{"BAD?":{}}"#).into_bytes();
        let at = memchr::memmem::find(&v, b"BAD?").unwrap() + 3;
        v[at] = 0xff;
        let m = Mappings::embedded().unwrap();
        let r = Converter::new(m).convert_legacy(&key(), &v).unwrap_err();
        assert_eq!(r.reason, CorruptedData);
    }

    #[test]
    fn details_show_decoded_keys() {
        let flag = |values: &str| {
            payload(&format!(
                r#"{{"A11Y_INSTANTIATED_\u0046LAG":{{"bucket_count":3,"values":{values}}}}}"#
            ))
        };
        for (values, want) in [
            (
                r#"{"\u00e9":1}"#,
                r#"histogram A11Y_INSTANTIATED_FLAG has key "é", not a bucket lower bound"#,
            ),
            (
                r#"{"a\"b\\":1}"#,
                r#"histogram A11Y_INSTANTIATED_FLAG has key "a\"b\\", not a bucket lower bound"#,
            ),
            (
                r#"{"\u0031":-1}"#,
                "histogram A11Y_INSTANTIATED_FLAG bucket 1 has count -1, not an integer >= 0",
            ),
        ] {
            let r = convert(&flag(values)).unwrap_err();
            assert_eq!(r.detail, want, "{values}");
        }
    }

    #[test]
    fn key_and_body_errors() {
        let m = Mappings::embedded().unwrap();
        let mut c = Converter::new(m);
        let good = payload("{}");
        let mut bad_key = key();
        bad_key[0] ^= 1;
        assert_eq!(
            c.convert_legacy(&bad_key, b"not json").unwrap_err().reason,
            InvalidKey
        );
        assert_eq!(
            c.convert_legacy(&key(), b"{\"ver\":1,\"x\":\"\xff\"}")
                .unwrap_err()
                .reason,
            CorruptedData
        );
        assert_eq!(
            c.convert_legacy(&key(), b"\x1f\x8bnot gzip")
                .unwrap_err()
                .reason,
            CorruptedData
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, good.as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        let line = c.convert_legacy(&key(), &gz).unwrap().line.to_vec();
        assert_eq!(line, convert(&good).unwrap().1.into_bytes());
    }

    #[test]
    fn dimensions_from_info_with_fallbacks() {
        let m = Mappings::embedded().unwrap();
        let mut c = Converter::new(m);
        let cases = [
            // (info, path dims, partition)
            (
                r#"{"reason":"saved-session","appName":"Firefox","appUpdateChannel":"nightly","appVersion":"22.0a1","appBuildID":"20130226031002"}"#,
                vec![],
                "saved_session/Firefox/nightly/22.0a1/20130226031002.20131011.v2.log",
            ),
            // missing → UNKNOWN, then the list check makes it OTHER; '*' keeps UNKNOWN.
            (
                r#"{}"#,
                vec![],
                "OTHER/OTHER/OTHER/UNKNOWN/UNKNOWN.20131011.v2.log",
            ),
            // not allowed → OTHER; numbers take their JSON text; '.' in file-name dims → '_'.
            (
                r#"{"reason":"bogus","appName":"Firefox","appUpdateChannel":"release","appVersion":23,"appBuildID":2013.5}"#,
                vec![],
                "OTHER/Firefox/release/23/2013_5.20131011.v2.log",
            ),
            // null/bool/object fall back to the path's value, else UNKNOWN.
            (
                r#"{"reason":null,"appName":true,"appUpdateChannel":{},"appVersion":"..","appBuildID":"a/b"}"#,
                vec![Some("idle-daily"), Some("Fennec"), None],
                "idle_daily/Fennec/OTHER/__/a_b.20131011.v2.log",
            ),
            // Values and keys are decoded before sanitising: an escaped letter is
            // that letter, a non-ASCII character (a surrogate pair too) one `_`.
            (
                r#"{"reason":"saved-session","app\u004eame":"Fire\u0066ox","appUpdateChannel":"nightl\u0079","appVersion":"\u00e9\ud83d\ude00","appBuildID":"2013\/1"}"#,
                vec![],
                "saved_session/Firefox/nightly/__/2013_1.20131011.v2.log",
            ),
            // info wins over the path.
            (
                r#"{"reason":"idle-daily","appName":"Firefox","appUpdateChannel":"beta","appVersion":"é","appBuildID":"1"}"#,
                vec![Some("saved-session"), Some("Fennec")],
                "idle_daily/Firefox/beta/_/1.20131011.v2.log",
            ),
        ];
        for (info, path, want) in cases {
            let v = format!(r#"{{"ver":1,"info":{info}}}"#);
            let out = c
                .convert_payload(ID, "20131011", &path, v.as_bytes())
                .unwrap();
            assert_eq!(out.partition, want, "{info}");
            assert_eq!(out.dims.len(), 6);
        }
    }

    #[test]
    fn hadoop_era_payload_is_rejected_against_shipped_definitions() {
        let raw = include_str!("../../tests/data/hadoop_era_payload_v1.json").trim_end();
        // Firefox 16 carries no revision and no table entry covers it.
        assert_eq!(reason(raw), MissingRevision);
        // Given a revision, its first bad histogram (in payload order) decides.
        let with_rev = raw.replacen(
            r#""info":{"#,
            &format!(r#""info":{{"revision":"{REV}","#),
            1,
        );
        let r = convert(&with_rev).unwrap_err();
        assert_eq!(r.reason, HistogramMismatch, "{r}");
    }

    #[test]
    fn revision_urls() {
        for (url, want) in [
            (
                "http://hg.mozilla.org/releases/mozilla-release/rev/a55c55edf302",
                Some("a55c55edf302"),
            ),
            (
                "https://hg.mozilla.org/mozilla-central/rev/A55C55EDF302FFFF",
                Some("a55c55edf302"),
            ),
            ("http://hg.mozilla.org/rev/a55c55edf302", None),
            ("a55c55edf302", None),
            ("http://hg.mozilla.org/x/rev/a55c55edf30g", None),
            ("http://hg.mozilla.org/x/rev/a55c55edf302/", None),
            ("http://hg.mozilla.org//rev/a55c55edf302", None),
        ] {
            assert_eq!(parse_revision_url(url).as_deref(), want, "{url}");
        }
    }

    /// Everything a conversion yields, owned, to compare two converters.
    type Outcome = Result<(Vec<u8>, String, Vec<String>, Vec<String>), Rejection>;

    fn outcome(c: &mut Converter<'_>, key: &[u8], value: &[u8]) -> Outcome {
        c.convert_legacy(key, value).map(|out| {
            (
                out.line.to_vec(),
                out.partition.to_string(),
                out.dims.to_vec(),
                out.dropped().map(str::to_string).collect(),
            )
        })
    }

    /// Generated records, a third of them rejected for one reason or another (most
    /// for their histograms), none gzipped so that mutations reach the JSON.
    fn generated() -> &'static [(Vec<u8>, Vec<u8>)] {
        use crate::gen::{calendar, Framing, GenOptions, RecordGen, RejectRates};
        static RECORDS: std::sync::OnceLock<Vec<(Vec<u8>, Vec<u8>)>> = std::sync::OnceLock::new();
        RECORDS.get_or_init(|| {
            let mut rates = RejectRates::uniform(0.15);
            for r in [HistogramMismatch, InvalidBucket, InvalidCount] {
                rates.set(r, 0.06);
            }
            let opts = GenOptions {
                reject_rates: rates,
                gzip_rate: 0.0,
                histograms: 60,
                ..GenOptions::default()
            };
            let mut gen = RecordGen::new(Mappings::embedded().unwrap(), 7, opts);
            let day = calendar::parse_day("2013-10-11").unwrap();
            (0..64)
                .map(|_| {
                    let r = gen.record(day, Framing::SequenceFile);
                    (r.key, r.value)
                })
                .collect()
        })
    }

    /// One edit of a payload at `pos` (modulo its length); `kind` picks the edit
    /// and `byte` parametrises it. They aim at what the fast path must hand over to
    /// the general one: whitespace, escapes, signs, leading zeros, fractions, long
    /// keys, duplicate and out-of-order entries, broken syntax.
    /// With `in_histogram`, the edit lands in or just before the `values` object after
    /// `pos`, where the fast paths work.
    fn mutate(v: &mut Vec<u8>, pos: usize, in_histogram: bool, kind: u8, byte: u8) {
        if v.is_empty() {
            return;
        }
        let mut p = pos % v.len();
        if in_histogram {
            const VALUES: &[u8] = b"\"values\":{";
            let found = memchr::memmem::find(&v[p..], VALUES)
                .map(|k| p + k)
                .or_else(|| memchr::memmem::find(v, VALUES));
            if let Some(at) = found {
                p = if pos % 3 == 0 {
                    at.saturating_sub(pos % 80)
                } else {
                    (at + VALUES.len() + pos % 48).min(v.len() - 1)
                };
            }
        }
        // The position after the next comma from `from`, if any.
        let after_comma =
            |v: &[u8], from: usize| memchr::memchr(b',', v.get(from..)?).map(|k| from + k + 1);
        match kind % 10 {
            0 => v[p] = byte,
            1 => v[p] = b" \"\\0019-.e,}:{\n+"[byte as usize % 16],
            2 => v.insert(p, b" \t\n\r"[byte as usize % 4]),
            3 if v[p].is_ascii_digit() => {
                let esc = format!("\\u003{}", v[p] as char);
                v.splice(p..=p, esc.bytes());
            }
            3 | 4 => {
                v.remove(p);
            }
            5 => {
                let run = vec![b"09"[byte as usize % 2]; 1 + byte as usize % 24];
                v.splice(p..p, run);
            }
            // Repeat the member after the next comma, maybe with another value: a
            // duplicate key.
            6 => {
                if let Some(s) = after_comma(v, p) {
                    if let Some(e) = after_comma(v, s) {
                        let mut member = v[s..e].to_vec();
                        let colon = memchr::memchr(b':', &member).unwrap_or(0);
                        if let Some(d) = member[colon..].iter_mut().find(|c| c.is_ascii_digit()) {
                            *d = b'1' + (*d - b'0' + byte % 9) % 9;
                        }
                        v.splice(s..s, member);
                    }
                }
            }
            // Swap the next two members: buckets out of order.
            7 => {
                if let Some(a) = after_comma(v, p) {
                    if let Some(b) = after_comma(v, a) {
                        if let Some(c) = after_comma(v, b) {
                            let mut swapped = v[b..c - 1].to_vec();
                            swapped.push(b',');
                            swapped.extend_from_slice(&v[a..b - 1]);
                            v.splice(a..c - 1, swapped);
                        }
                    }
                }
            }
            // Something before the next closing bracket: `[1,]`, `{"a":1"}`...
            8 => {
                if let Some(k) = v[p..].iter().position(|&c| c == b']' || c == b'}') {
                    v.insert(p + k, b",]}\"1"[byte as usize % 5]);
                }
            }
            // A leading zero or a sign before the next digit run.
            _ => {
                if let Some(k) = v[p..].iter().position(u8::is_ascii_digit) {
                    v.insert(p + k, if byte % 2 == 0 { b'0' } else { b'-' });
                }
            }
        }
    }

    #[test]
    fn generated_payloads_take_the_fast_path() {
        let m = Mappings::embedded().unwrap();
        let mut c = Converter::new(m);
        let mut fast = 0;
        for (key, value) in generated() {
            if c.convert_legacy(key, value).is_ok() {
                assert!(
                    c.values.is_empty(),
                    "a generated values object took the general path"
                );
                fast += c.fast.len();
            }
        }
        assert!(fast > 1000, "{fast} entries on the fast path");
    }

    #[test]
    fn fast_path_edge_cases_match_general_path() {
        // A11Y_CONSUMERS has the 12 buckets 0..=11.
        let cases = [
            "{}",
            "{ }",
            r#"{"0":1}"#,
            r#"{"0":1,"1":2,"11":3}"#,
            r#"{"1":2,"0":1}"#,
            r#"{"0":1,"0":2}"#,
            r#"{"2":1,"3":2,"1":3,"99":4}"#,
            r#"{"2":1,"99":4,"1":3}"#,
            r#"{"0":1."1":2}"#,
            r#"{"0":1 ,"1":2}"#,
            r#"{ "0":1}"#,
            r#"{"0" :1}"#,
            r#"{"0": 1}"#,
            r#"{"0":1 }"#,
            r#"{"00":1}"#,
            r#"{"01":1}"#,
            r#"{"-0":1}"#,
            r#"{"-1":1}"#,
            r#"{"+1":1}"#,
            r#"{"12":1}"#,
            r#"{"":1}"#,
            r#"{"5":01}"#,
            r#"{"5":-1}"#,
            r#"{"5":-0}"#,
            r#"{"5":1.0}"#,
            r#"{"5":1e2}"#,
            r#"{"5":1E2}"#,
            r#"{"5":"1"}"#,
            r#"{"5":null}"#,
            r#"{"5":[1]}"#,
            r#"{"5":{}}"#,
            r#"{"5":18446744073709551616}"#,
            r#"{"\u0035":1}"#,
            r#"{"1\u0030":1}"#,
            r#"{"123456789012345678":1}"#,
            r#"{"1234567890123456789":1}"#,
            r#"{"99999999999999999999999":1}"#,
            r#"{"3":1,"x":2}"#,
            r#"{"3":-1,"x":1}"#,
            r#"{"5":1,}"#,
            r#"{"5":1"#,
            r#"{"5":}"#,
            r#"{"5"}"#,
            r#"{"5":1}}"#,
            r#"{5:1}"#,
        ];
        let bodies = [
            r#"{}"#,
            r#"{"values":{"1":2}}"#,
            r#"{"range":[1,11],"bucket_count":12,"histogram_type":1,"values":{"1":2},"sum":3,"log_sum":1.5,"log_sum_squares":-2.25e1,"sum_squares_lo":0,"sum_squares_hi":0}"#,
            r#"{"bucket_count":12,"values":{"1":2},"sum":1,"bucket_count":13}"#,
            r#"{"bucket_count":13,"values":{"1":2},"bucket_count":12}"#,
            r#"{"values":{"1":2},"values":{"3":4}}"#,
            r#"{"values":{"1":2},"values":{"3":-4}}"#,
            r#"{"values":{"1":2},"values":[]}"#,
            r#"{"values":{"1":2},"sum":1,"sum":2}"#,
            r#"{"bucket_count":12.0,"values":{"1":2}}"#,
            r#"{"bucket_count":1.2e1,"values":{"1":2}}"#,
            r#"{"bucket_count":-12,"values":{"1":2}}"#,
            r#"{"bucket_count":"12","values":{"1":2}}"#,
            r#"{"bucket_count":012,"values":{"1":2}}"#,
            r#"{"bucket_count":12 ,"values":{"1":2}}"#,
            r#"{ "bucket_count":12,"values":{"1":2}}"#,
            r#"{"bucket_count" :12,"values":{"1":2}}"#,
            r#"{"bucket_count":12,"values":{"1":2} }"#,
            r#"{"bucket_\u0063ount":13,"values":{"1":2}}"#,
            r#"{"Bucket_count":13,"values":{"1":2}}"#,
            r#"{"foo":1,"values":{"1":2}}"#,
            r#"{"foo":{"values":{"1":2}},"values":{"1":3}}"#,
            r#"{"range":[],"values":{"1":2}}"#,
            r#"{"range":[1, 11],"values":{"1":2}}"#,
            r#"{"range":[1,"11"],"values":{"1":2}}"#,
            r#"{"range":[1,11,],"values":{"1":2}}"#,
            r#"{"range":[1,01],"values":{"1":2}}"#,
            r#"{"range":{},"values":{"1":2}}"#,
            r#"{"range":[1,11}"values":{"1":2}}"#,
            r#"{"histogram_type":"1","values":{"1":2}}"#,
            r#"{"histogram_type":null,"values":{"1":2}}"#,
            r#"{"values":{"1":2},"sum":null,"log_sum":"1"}"#,
            r#"{"values":{"1":2},"sum":1.}"#,
            r#"{"values":{"1":2},"sum":-}"#,
            r#"{"values":{"1":2},"sum":1,}"#,
            r#"{"values":{"1":2},"sum":1"#,
            r#"{"values":{"1":2},"sum""#,
            r#"{"values":{"1":2},"sum":1]"#,
            "[1]",
            "null",
        ];
        let hists = cases
            .iter()
            .map(|values| format!(r#"{{"bucket_count":12,"values":{values},"sum":1}}"#))
            .chain(bodies.iter().map(|b| b.to_string()));
        let m = Mappings::embedded().unwrap();
        let mut fast = Converter::new(m);
        let mut general = Converter::new(m);
        general.fast_path = false;
        for hist in hists {
            for second in ["", r#","A11Y_INSTANTIATED_FLAG":{"values":{"5":1}}"#] {
                let v = payload(&format!(r#"{{"A11Y_CONSUMERS":{hist}{second}}}"#));
                assert_eq!(
                    outcome(&mut fast, &key(), v.as_bytes()),
                    outcome(&mut general, &key(), v.as_bytes()),
                    "{v}"
                );
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        /// The fast path yields exactly what the general path alone does: the same
        /// line, partition, dimensions and dropped names, or the same rejection with
        /// the same detail.
        #[test]
        fn fast_path_matches_general_path(
            record in 0usize..64,
            edits in proptest::collection::vec(
                proptest::prelude::any::<(usize, bool, u8, u8)>(),
                0..4,
            ),
        ) {
            let (key, value) = &generated()[record];
            let mut value = value.clone();
            for (pos, in_histogram, kind, byte) in edits {
                mutate(&mut value, pos, in_histogram, kind, byte);
            }
            let m = Mappings::embedded().unwrap();
            let mut fast = Converter::new(m);
            let mut general = Converter::new(m);
            general.fast_path = false;
            proptest::prop_assert_eq!(
                outcome(&mut fast, key, &value),
                outcome(&mut general, key, &value)
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn digits_value_of_a_word(bytes in proptest::collection::vec(b'0'..=b'9', 8)) {
            let w = json::word_at(&bytes, 0).unwrap();
            for k in 1..=8 {
                let want: u64 = std::str::from_utf8(&bytes[..k]).unwrap().parse().unwrap();
                proptest::prop_assert_eq!(digits_value(w, k), want);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(key in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..50),
                                       value in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let m = Mappings::embedded().unwrap();
            let mut c = Converter::new(m);
            let _ = c.convert_legacy(&key, &value);
            let _ = c.convert_legacy(&rowkey::build("20130101", ID), &value);
        }

        #[test]
        fn mutated_payloads_never_panic(pos in 0usize..400, byte in proptest::prelude::any::<u8>()) {
            let mut v = payload(&format!(r#"{{"A11Y_INSTANTIATED_FLAG":{FLAG},"A11Y_CONSUMERS":{{"values":{{"1":2}}}}}}"#)).into_bytes();
            let p = pos % v.len();
            v[p] = byte;
            let m = Mappings::embedded().unwrap();
            let mut c = Converter::new(m);
            let _ = c.convert_legacy(&key(), &v);
        }
    }
}
