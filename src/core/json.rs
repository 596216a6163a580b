//! Strict JSON scanning and the project's canonical serialisation (SPEC §5): no
//! whitespace, keys in input order, numbers exactly as written, strings escaped as
//! JSON requires with every character outside printable ASCII as `\uXXXX` (lowercase
//! hex, surrogate pairs above U+FFFF) and `/` unescaped. This is byte-for-byte what the
//! old Python converter's `json.dumps(separators=(',', ':'))` wrote, minus its float
//! reformatting.
//!
//! The functions work on a `&[u8]` that the caller has already checked is UTF-8, and
//! copy values to an output buffer in one pass while validating them, so the
//! converter never builds a tree for the parts of a payload it does not change.
//! Histogram-specific parsing lives in `convert`.

use std::borrow::Cow;
use std::fmt;

/// A JSON syntax error at a byte offset of the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JsonError {
    /// Byte offset in the payload where parsing failed.
    pub offset: usize,
    /// What was wrong there.
    pub what: &'static str,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.what, self.offset)
    }
}

impl std::error::Error for JsonError {}

/// Result of a scanning step: the position after what was scanned.
pub type JResult<T = usize> = Result<T, JsonError>;

/// Nesting deeper than this is rejected rather than risking the stack.
pub const MAX_DEPTH: usize = 512;

pub(crate) fn err<T>(offset: usize, what: &'static str) -> JResult<T> {
    Err(JsonError { offset, what })
}

/// Bytes that cannot be copied verbatim inside a string: `"`, `\`, controls,
/// DEL and every non-ASCII byte.
static SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = i < 0x20 || i >= 0x7f || i == b'"' as usize || i == b'\\' as usize;
        i += 1;
    }
    t
};

const HEX: &[u8; 16] = b"0123456789abcdef";

const ONES: u64 = 0x0101_0101_0101_0101;

/// The 8 bytes at `i` as a little-endian word (first byte lowest), if there are 8.
#[inline]
pub(crate) fn word_at(b: &[u8], i: usize) -> Option<u64> {
    b.get(i..)?
        .first_chunk::<8>()
        .map(|w| u64::from_le_bytes(*w))
}

/// How many of the bytes of `word` are ASCII digits before the first that is not
/// (8 when all are).
#[inline]
pub(crate) fn leading_digits(word: u64) -> usize {
    // Digits become 0..=9; a byte of 10 or more gets its top bit set by adding 0x76,
    // or had it already. A carry out of a byte only reaches bytes after one that is
    // flagged, so the first flag is exact.
    let t = word ^ (u64::from(b'0') * ONES);
    let not_digit = (t.wrapping_add(0x76 * ONES) | t) & (0x80 * ONES);
    not_digit.trailing_zeros() as usize / 8
}

/// The position of the first byte at or after `i` that is not an ASCII digit, or
/// `b.len()`: a word at a time, since numbers are short but of every length, and a
/// loop per digit mispredicts its exit at each change of length.
#[inline]
pub(crate) fn digits_end(b: &[u8], mut i: usize) -> usize {
    while let Some(w) = word_at(b, i) {
        let n = leading_digits(w);
        i += n;
        if n < 8 {
            return i;
        }
    }
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

/// The position of the first [`SPECIAL`] byte at or after `i`, or `b.len()`.
///
/// Eight bytes at a time: strings (histogram names, SQL, add-on ids) are mostly
/// long runs of plain bytes, and a table look-up and branch per byte was the
/// scanners' cost.
#[inline]
fn plain_end(b: &[u8], mut i: usize) -> usize {
    const TOP: u64 = 0x80 * ONES;
    // Flags the bytes of `v` that are 0. Borrows only reach bytes after a flagged
    // one, so the first flag is exact; the same holds for each test below, so the
    // first flag of their union is the first special byte.
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & TOP;
    while let Some(x) = word_at(b, i) {
        let quote = zero(x ^ (u64::from(b'"') * ONES));
        let backslash = zero(x ^ (u64::from(b'\\') * ONES));
        let control = x.wrapping_sub(0x20 * ONES) & !x & TOP;
        // 0x7f and up: adding 1 sets the top bit, or it was set.
        let high = (x.wrapping_add(ONES) | x) & TOP;
        let special = quote | backslash | control | high;
        if special != 0 {
            return i + special.trailing_zeros() as usize / 8;
        }
        i += 8;
    }
    while i < b.len() && !SPECIAL[b[i] as usize] {
        i += 1;
    }
    i
}

/// Skips JSON whitespace from `i`.
#[inline]
pub fn ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\n' | b'\r' | b'\t') {
        i += 1;
    }
    i
}

/// Expects byte `c` at `i` (after whitespace); returns the position after it.
#[inline]
pub fn expect(b: &[u8], i: usize, c: u8, what: &'static str) -> JResult {
    let i = ws(b, i);
    if b.get(i) == Some(&c) {
        Ok(i + 1)
    } else {
        err(i, what)
    }
}

/// Writes `\uXXXX` for one UTF-16 code unit.
#[inline]
fn push_u16(out: &mut Vec<u8>, u: u32) {
    out.extend_from_slice(&[
        b'\\',
        b'u',
        HEX[(u >> 12) as usize & 15],
        HEX[(u >> 8) as usize & 15],
        HEX[(u >> 4) as usize & 15],
        HEX[u as usize & 15],
    ]);
}

/// Writes the canonical form of one character given as a code unit or code point.
#[inline]
fn push_char(out: &mut Vec<u8>, cp: u32) {
    match cp {
        0x22 => out.extend_from_slice(b"\\\""),
        0x5c => out.extend_from_slice(b"\\\\"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0c => out.extend_from_slice(b"\\f"),
        0x0a => out.extend_from_slice(b"\\n"),
        0x0d => out.extend_from_slice(b"\\r"),
        0x09 => out.extend_from_slice(b"\\t"),
        0x20..=0x7e => out.push(cp as u8),
        0x10000.. => {
            let v = cp - 0x10000;
            push_u16(out, 0xd800 | (v >> 10));
            push_u16(out, 0xdc00 | (v & 0x3ff));
        }
        _ => push_u16(out, cp),
    }
}

fn hex4(b: &[u8], i: usize) -> JResult<u32> {
    if i + 4 > b.len() {
        return err(i, "truncated \\u escape");
    }
    let mut v = 0u32;
    for &c in &b[i..i + 4] {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return err(i, "invalid \\u escape"),
        };
        v = (v << 4) | d as u32;
    }
    Ok(v)
}

/// Decodes the UTF-8 sequence starting at `i` (input known to be UTF-8).
#[inline]
fn utf8_at(b: &[u8], i: usize) -> (u32, usize) {
    let c = b[i] as u32;
    let cont = |k: usize| (b.get(i + k).copied().unwrap_or(0x80) & 0x3f) as u32;
    if c < 0xe0 {
        (((c & 0x1f) << 6) | cont(1), 2)
    } else if c < 0xf0 {
        (((c & 0x0f) << 12) | (cont(1) << 6) | cont(2), 3)
    } else {
        (
            ((c & 0x07) << 18) | (cont(1) << 12) | (cont(2) << 6) | cont(3),
            4,
        )
    }
}

/// Handles the escape at `b[i] == '\\'`, writing its canonical form; returns the
/// position after it.
#[inline]
fn escape(b: &[u8], i: usize, out: &mut Vec<u8>) -> JResult {
    match b.get(i + 1) {
        Some(b'"') => out.extend_from_slice(b"\\\""),
        Some(b'\\') => out.extend_from_slice(b"\\\\"),
        Some(b'/') => out.push(b'/'),
        Some(b'b') => out.extend_from_slice(b"\\b"),
        Some(b'f') => out.extend_from_slice(b"\\f"),
        Some(b'n') => out.extend_from_slice(b"\\n"),
        Some(b'r') => out.extend_from_slice(b"\\r"),
        Some(b't') => out.extend_from_slice(b"\\t"),
        Some(b'u') => {
            // Each code unit maps to itself, so surrogate pairs (and lone surrogates,
            // which Python kept too) come out as they went in, in lowercase.
            push_char(out, hex4(b, i + 2)?);
            return Ok(i + 6);
        }
        Some(_) => return err(i, "invalid escape"),
        None => return err(i, "unterminated string"),
    }
    Ok(i + 2)
}

/// Copies the string whose opening quote is at `i` in canonical form, quotes
/// included; returns the position after the closing quote.
pub fn canon_string(b: &[u8], i: usize, out: &mut Vec<u8>) -> JResult {
    debug_assert_eq!(b[i], b'"');
    out.push(b'"');
    let mut i = i + 1;
    loop {
        let start = i;
        i = plain_end(b, i);
        out.extend_from_slice(&b[start..i]);
        match b.get(i) {
            None => return err(i, "unterminated string"),
            Some(b'"') => {
                out.push(b'"');
                return Ok(i + 1);
            }
            Some(b'\\') => i = escape(b, i, out)?,
            Some(&c) if c < 0x20 => return err(i, "control character in string"),
            Some(0x7f) => {
                push_u16(out, 0x7f);
                i += 1;
            }
            Some(_) => {
                let (cp, n) = utf8_at(b, i);
                push_char(out, cp);
                i += n;
            }
        }
    }
}

/// Scans the string at `i` (opening quote) without writing. Returns the position
/// after the closing quote and whether the contents `b[i+1..end-1]` are already
/// canonical (printable ASCII, no escapes), in which case they can be used as is.
#[inline]
pub fn scan_string(b: &[u8], i: usize) -> JResult<(usize, bool)> {
    let j = plain_end(b, i + 1);
    if b.get(j) == Some(&b'"') {
        return Ok((j + 1, true));
    }
    let mut sink = Vec::new();
    let end = canon_string(b, i, &mut sink)?;
    Ok((end, false))
}

/// Decodes the string at `i` (opening quote) into text, for the few values the
/// converter reads (dimensions, revision). Lone surrogates become U+FFFD.
pub fn decode_string(b: &[u8], i: usize, out: &mut String) -> JResult {
    out.clear();
    let mut i = i + 1;
    let mut pending_high: Option<u32> = None;
    let flush = |out: &mut String, p: &mut Option<u32>| {
        if p.take().is_some() {
            out.push('\u{fffd}');
        }
    };
    loop {
        let start = i;
        i = plain_end(b, i);
        if i > start {
            flush(out, &mut pending_high);
            // Printable ASCII only.
            out.push_str(std::str::from_utf8(&b[start..i]).expect("ascii"));
        }
        match b.get(i) {
            None => return err(i, "unterminated string"),
            Some(b'"') => {
                flush(out, &mut pending_high);
                return Ok(i + 1);
            }
            Some(b'\\') => {
                let c = match b.get(i + 1) {
                    Some(b'u') => {
                        let u = hex4(b, i + 2)?;
                        i += 6;
                        if (0xd800..0xdc00).contains(&u) {
                            flush(out, &mut pending_high);
                            pending_high = Some(u);
                            continue;
                        }
                        if (0xdc00..0xe000).contains(&u) {
                            match pending_high.take() {
                                Some(h) => {
                                    let cp = 0x10000 + ((h - 0xd800) << 10) + (u - 0xdc00);
                                    out.push(char::from_u32(cp).unwrap_or('\u{fffd}'));
                                }
                                None => out.push('\u{fffd}'),
                            }
                            continue;
                        }
                        flush(out, &mut pending_high);
                        out.push(char::from_u32(u).unwrap_or('\u{fffd}'));
                        continue;
                    }
                    Some(b'"') => '"',
                    Some(b'\\') => '\\',
                    Some(b'/') => '/',
                    Some(b'b') => '\u{8}',
                    Some(b'f') => '\u{c}',
                    Some(b'n') => '\n',
                    Some(b'r') => '\r',
                    Some(b't') => '\t',
                    _ => return err(i, "invalid escape"),
                };
                i += 2;
                flush(out, &mut pending_high);
                out.push(c);
            }
            Some(&c) if c < 0x20 => return err(i, "control character in string"),
            Some(_) => {
                flush(out, &mut pending_high);
                let (cp, n) = utf8_at(b, i);
                out.push(char::from_u32(cp).unwrap_or('\u{fffd}'));
                i += n;
            }
        }
    }
}

/// The text of a string's contents in canonical form (what [`canon_string`] writes
/// between the quotes), as a JSON parser returns it: for names that reach reports
/// and rejection details. Borrowed when there is no backslash, since canonical
/// contents without one are printable ASCII and mean themselves; lone surrogates
/// become U+FFFD, as in [`decode_string`]. Contents that are not canonical (not
/// expected) come out as they are, lossily.
pub fn decode_canonical(content: &[u8]) -> Cow<'_, str> {
    if !content.contains(&b'\\') {
        return String::from_utf8_lossy(content);
    }
    let mut quoted = Vec::with_capacity(content.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(content);
    quoted.push(b'"');
    let mut out = String::new();
    match decode_string(&quoted, 0, &mut out) {
        Ok(end) if end == quoted.len() => Cow::Owned(out),
        _ => String::from_utf8_lossy(content),
    }
}

/// Scans the number at `i` (strict JSON grammar); returns the position after it.
#[inline]
pub fn scan_number(b: &[u8], i: usize) -> JResult {
    let mut j = i;
    if b.get(j) == Some(&b'-') {
        j += 1;
    }
    match b.get(j) {
        Some(b'0') => j += 1,
        Some(b'1'..=b'9') => j = digits_end(b, j + 1),
        _ => return err(j, "invalid number"),
    }
    if b.get(j) == Some(&b'.') {
        j += 1;
        let s = j;
        j = digits_end(b, j);
        if j == s {
            return err(j, "invalid number");
        }
    }
    if matches!(b.get(j), Some(b'e' | b'E')) {
        j += 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        let s = j;
        j = digits_end(b, j);
        if j == s {
            return err(j, "invalid number");
        }
    }
    Ok(j)
}

/// What follows a member or an element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// A `,` was copied; the next member starts at this position.
    More(usize),
    /// The closing byte was copied; the container ends before this position.
    Done(usize),
}

/// After a member (`close` = `}`) or an element (`close` = `]`): skips whitespace
/// and copies the `,` or the closing byte to `out`.
#[inline]
pub fn separator(b: &[u8], i: usize, close: u8, out: &mut Vec<u8>) -> JResult<Next> {
    let i = ws(b, i);
    match b.get(i) {
        Some(b',') => {
            out.push(b',');
            Ok(Next::More(i + 1))
        }
        Some(&c) if c == close => {
            out.push(close);
            Ok(Next::Done(i + 1))
        }
        _ if close == b'}' => err(i, "expected ',' or '}'"),
        _ => err(i, "expected ',' or ']'"),
    }
}

fn literal(b: &[u8], i: usize, lit: &'static [u8], out: &mut Vec<u8>) -> JResult {
    if b[i..].starts_with(lit) {
        out.extend_from_slice(lit);
        Ok(i + lit.len())
    } else {
        err(i, "invalid literal")
    }
}

/// Copies the value starting at or after `i` (whitespace skipped) in canonical form;
/// returns the position after it.
pub fn canon_value(b: &[u8], i: usize, out: &mut Vec<u8>, depth: usize) -> JResult {
    let i = ws(b, i);
    match b.get(i) {
        Some(b'"') => canon_string(b, i, out),
        Some(b'{') => canon_object(b, i, out, depth + 1),
        Some(b'[') => canon_array(b, i, out, depth + 1),
        Some(b't') => literal(b, i, b"true", out),
        Some(b'f') => literal(b, i, b"false", out),
        Some(b'n') => literal(b, i, b"null", out),
        Some(b'-' | b'0'..=b'9') => {
            let end = scan_number(b, i)?;
            out.extend_from_slice(&b[i..end]);
            Ok(end)
        }
        Some(_) => err(i, "unexpected character"),
        None => err(i, "unexpected end of input"),
    }
}

fn canon_object(b: &[u8], i: usize, out: &mut Vec<u8>, depth: usize) -> JResult {
    if depth > MAX_DEPTH {
        return err(i, "nesting too deep");
    }
    out.push(b'{');
    let mut i = ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        out.push(b'}');
        return Ok(i + 1);
    }
    loop {
        i = ws(b, i);
        if b.get(i) != Some(&b'"') {
            return err(i, "expected object key");
        }
        i = canon_string(b, i, out)?;
        i = expect(b, i, b':', "expected ':'")?;
        out.push(b':');
        i = canon_value(b, i, out, depth)?;
        match separator(b, i, b'}', out)? {
            Next::More(next) => i = next,
            Next::Done(end) => return Ok(end),
        }
    }
}

fn canon_array(b: &[u8], i: usize, out: &mut Vec<u8>, depth: usize) -> JResult {
    if depth > MAX_DEPTH {
        return err(i, "nesting too deep");
    }
    out.push(b'[');
    let mut i = ws(b, i + 1);
    if b.get(i) == Some(&b']') {
        out.push(b']');
        return Ok(i + 1);
    }
    loop {
        i = canon_value(b, i, out, depth)?;
        match separator(b, i, b']', out)? {
            Next::More(next) => i = next,
            Next::Done(end) => return Ok(end),
        }
    }
}

/// Canonical form of a whole document (any JSON value, trailing whitespace allowed).
pub fn canonicalize(s: &str, out: &mut Vec<u8>) -> JResult<()> {
    let b = s.as_bytes();
    let end = canon_value(b, 0, out, 0)?;
    let end = ws(b, end);
    if end != b.len() {
        return err(end, "trailing data after json value");
    }
    Ok(())
}

/// Validates the value at `i` without keeping its canonical form.
pub fn skip_value(b: &[u8], i: usize, scratch: &mut Vec<u8>, depth: usize) -> JResult {
    scratch.clear();
    canon_value(b, i, scratch, depth)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> Result<String, JsonError> {
        let mut out = Vec::new();
        canonicalize(s, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn canonical_forms() {
        let cases = [
            (r#" { "a" : 1 , "b" : [ 1 , 2 ] } "#, r#"{"a":1,"b":[1,2]}"#),
            (r#"{"z":1,"a":2}"#, r#"{"z":1,"a":2}"#),
            (
                r#"[1.50,-0,1E+2,12345678901234567890123]"#,
                r#"[1.50,-0,1E+2,12345678901234567890123]"#,
            ),
            (r#""a\/b""#, r#""a/b""#),
            (r#""\u00E9""#, r#""\u00e9""#),
            ("\"é\"", r#""\u00e9""#),
            ("\"😀\"", r#""\ud83d\ude00""#),
            (r#""\uD83D\uDE00""#, r#""\ud83d\ude00""#),
            (r#""\ud800""#, r#""\ud800""#),
            (r#""\u0041\u0022\u005c""#, r#""A\"\\""#),
            (r#""\u000a\u0001""#, r#""\n\u0001""#),
            ("\"\u{7f}\"", r#""\u007f""#),
            (r#""tab\there""#, r#""tab\there""#),
            (r#""\b\f\r""#, r#""\b\f\r""#),
            ("true", "true"),
            ("[null,false]", "[null,false]"),
            ("{}", "{}"),
            ("[ ]", "[]"),
        ];
        for (input, want) in cases {
            assert_eq!(canon(input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn rejects_invalid() {
        for bad in [
            "",
            "{",
            "{\"a\"}",
            "{\"a\":}",
            "[1,]",
            "{\"a\":1,}",
            "01",
            "1.",
            ".5",
            "1e",
            "-",
            "+1",
            "tru",
            "nul",
            "\"a",
            "\"\\x\"",
            "\"\\u12\"",
            "\"a\nb\"",
            "[1 2]",
            "{1:2}",
            "1 2",
            "NaN",
            "Infinity",
            "'a'",
        ] {
            assert!(canon(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let s = "[".repeat(100_000);
        assert_eq!(canon(&s).unwrap_err().what, "nesting too deep");
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH - 1), "]".repeat(MAX_DEPTH - 1));
        assert!(canon(&ok).is_ok());
    }

    #[test]
    fn decode() {
        let mut s = String::new();
        for (input, want) in [
            (r#""plain""#, "plain"),
            (r#""a\/b\n""#, "a/b\n"),
            (r#""\u00e9é""#, "éé"),
            (r#""\ud83d\ude00""#, "😀"),
            (r#""\ud800x""#, "\u{fffd}x"),
            (r#""\ude00""#, "\u{fffd}"),
        ] {
            decode_string(input.as_bytes(), 0, &mut s).unwrap();
            assert_eq!(s, want, "{input}");
        }
    }

    /// The contents `canon_string` writes for the JSON string `json`, without quotes.
    fn canon_contents(json: &str) -> Vec<u8> {
        let mut out = Vec::new();
        canon_string(json.as_bytes(), 0, &mut out).unwrap();
        out[1..out.len() - 1].to_vec()
    }

    #[test]
    fn decode_canonical_contents() {
        for (input, want) in [
            (r#""PLAIN_NAME""#, "PLAIN_NAME"),
            (r#""A\u0042C""#, "ABC"),
            (r#""q\"b\\s\/""#, "q\"b\\s/"),
            (r#""\u00e9""#, "é"),
            ("\"é\"", "é"),
            (r#""\ud83d\ude00""#, "😀"),
            (r#""\ud800x""#, "\u{fffd}x"),
            (r#""\n\u0001""#, "\n\u{1}"),
        ] {
            let c = canon_contents(input);
            assert_eq!(decode_canonical(&c), want, "{input}");
        }
        // Without a backslash nothing is copied.
        assert!(matches!(decode_canonical(b"X"), Cow::Borrowed("X")));
    }

    #[test]
    fn scan_string_reports_clean() {
        assert_eq!(scan_string(br#""abc" "#, 0).unwrap(), (5, true));
        assert_eq!(scan_string(br#""a\"c""#, 0).unwrap(), (6, false));
        assert!(scan_string(br#""abc"#, 0).is_err());
    }

    #[test]
    fn plain_end_finds_the_first_special_byte() {
        let special = |c: u8| SPECIAL[c as usize];
        // Each byte value at each offset of a 20-byte run, after plain bytes.
        for c in 0..=255u8 {
            for at in 0..20 {
                let mut b = vec![b'a'; 20];
                b[at] = c;
                let want = if special(c) { at } else { 20 };
                assert_eq!(plain_end(&b, 0), want, "byte {c:#x} at {at}");
                assert_eq!(plain_end(&b, at.min(3)), want.max(at.min(3)));
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn digits_a_word_at_a_time(b in proptest::collection::vec(
            proptest::prop_oneof![b'0'..=b'9', proptest::prelude::any::<u8>()],
            0..24,
        ), from in 0usize..24) {
            if let Some(w) = word_at(&b, 0) {
                let n = b.iter().position(|c| !c.is_ascii_digit()).unwrap_or(b.len());
                proptest::prop_assert_eq!(leading_digits(w), n.min(8));
            }
            let from = from.min(b.len());
            let want = (from..b.len()).find(|&i| !b[i].is_ascii_digit()).unwrap_or(b.len());
            proptest::prop_assert_eq!(digits_end(&b, from), want);
        }

        #[test]
        fn plain_end_agrees_with_the_table(b in proptest::collection::vec(
            proptest::prop_oneof![0x20u8..0x7f, proptest::prelude::any::<u8>()],
            0..40,
        ), from in 0usize..40) {
            let from = from.min(b.len());
            let want = (from..b.len()).find(|&i| SPECIAL[b[i] as usize]).unwrap_or(b.len());
            proptest::prop_assert_eq!(plain_end(&b, from), want);
        }
    }

    #[test]
    fn canonical_output_is_what_serde_reads_back() {
        let input = r#"{"s":"é\u0001😀\"\\/","n":[1,2.5,-3e2],"o":{"k":null}}"#;
        let c = canon(input).unwrap();
        assert!(c.is_ascii());
        let a: serde_json::Value = serde_json::from_str(input).unwrap();
        let b: serde_json::Value = serde_json::from_str(&c).unwrap();
        assert_eq!(a, b);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,64}") {
            let mut out = Vec::new();
            let _ = canonicalize(&s, &mut out);
        }

        /// Decoding canonical contents gives back the string a parser reads.
        #[test]
        fn decode_canonical_inverts_canon(s in "(\\PC|[\"\\\\\n\t\u{1}\u{7f}])*") {
            let json = serde_json::to_string(&s).unwrap();
            let c = canon_contents(&json);
            proptest::prop_assert_eq!(decode_canonical(&c), s.as_str());
        }

        #[test]
        fn idempotent_and_equivalent(v in arb_json()) {
            let text = serde_json::to_string_pretty(&v).unwrap();
            let c1 = canon(&text).unwrap();
            let c2 = canon(&c1).unwrap();
            proptest::prop_assert_eq!(&c1, &c2);
            proptest::prop_assert!(c1.is_ascii());
            let back: serde_json::Value = serde_json::from_str(&c1).unwrap();
            proptest::prop_assert_eq!(back, v);
        }
    }

    fn arb_json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(|n| serde_json::json!(n)),
            "\\PC{0,8}".prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                proptest::collection::vec(("[a-z\u{e9}]{0,3}", inner), 0..4)
                    .prop_map(|kv| serde_json::Value::Object(kv.into_iter().collect())),
            ]
        })
    }
}
