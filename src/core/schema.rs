//! The storage schema: dimensions, final values and partition names.
//!
//! This module owns the `telemetry_schema.json` format (`version` and an ordered list
//! of `dimensions`, each `{field_name, allowed_values}`), the rule that turns a raw
//! dimension value into the final value used in object keys (SPEC §5 and §6:
//! `UNKNOWN`, `OTHER`, per-character sanitising), the partition name built from
//! final values, and consumer filters in the same format, which apply to final
//! values. Where raw values come from in a payload is `convert`'s business.

use serde_json::Value;

use crate::core::mappings::MappingsError;

/// The final value of a missing dimension (before the allowed-values check).
pub const UNKNOWN: &str = "UNKNOWN";
/// The final value of a value the schema does not allow.
pub const OTHER: &str = "OTHER";

/// The values a dimension allows.
#[derive(Debug, Clone, PartialEq)]
pub enum Allowed {
    /// `"*"`: every value.
    Any,
    /// A list: exactly these strings.
    List(Vec<String>),
    /// `{"min": .., "max": ..}`, inclusive, either bound optional.
    Range {
        /// The lower bound, if any.
        min: Option<Bound>,
        /// The upper bound, if any.
        max: Option<Bound>,
    },
}

/// One bound of a range; its JSON type decides the comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Bound {
    /// A string bound: values compare as strings.
    Text(String),
    /// A number bound: values that are JSON numbers compare numerically; any other
    /// value is not allowed.
    Number(serde_json::Number),
}

/// A number read from a value's text, kept exact when it is an integer.
#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn from_bound(n: &serde_json::Number) -> Num {
        match n.as_i64() {
            Some(i) => Num::Int(i),
            None => Num::Float(n.as_f64().unwrap_or(f64::NAN)),
        }
    }

    /// Parse `text` only if it is a JSON number, exactly (no spaces, no `+`, no
    /// leading zeros).
    fn parse_json(text: &str) -> Option<Num> {
        let b = text.as_bytes();
        let mut i = 0;
        if b.first() == Some(&b'-') {
            i += 1;
        }
        let int_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let int_len = i - int_start;
        if int_len == 0 || (int_len > 1 && b[int_start] == b'0') {
            return None;
        }
        let mut integer = true;
        if i < b.len() && b[i] == b'.' {
            integer = false;
            i += 1;
            let s = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i == s {
                return None;
            }
        }
        if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
            integer = false;
            i += 1;
            if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
                i += 1;
            }
            let s = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i == s {
                return None;
            }
        }
        if i != b.len() {
            return None;
        }
        if integer {
            if let Ok(v) = text.parse::<i64>() {
                return Some(Num::Int(v));
            }
        }
        text.parse::<f64>().ok().map(Num::Float)
    }

    fn cmp(self, other: Num) -> Option<std::cmp::Ordering> {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
            (a, b) => a.as_f64().partial_cmp(&b.as_f64()),
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

impl Bound {
    /// Whether `value` is on the allowed side of this bound (`ge`: value ≥ bound).
    fn admits(&self, value: &str, ge: bool) -> bool {
        use std::cmp::Ordering::*;
        let ord = match self {
            Bound::Text(b) => Some(value.cmp(b.as_str())),
            Bound::Number(n) => match Num::parse_json(value) {
                Some(v) => v.cmp(Num::from_bound(n)),
                None => None,
            },
        };
        match ord {
            Some(Equal) => true,
            Some(Greater) => ge,
            Some(Less) => !ge,
            None => false,
        }
    }
}

impl Allowed {
    /// Whether `value` (compared on its text as given) is allowed.
    pub fn allows(&self, value: &str) -> bool {
        match self {
            Allowed::Any => true,
            Allowed::List(list) => list.iter().any(|v| v == value),
            Allowed::Range { min, max } => {
                min.as_ref().is_none_or(|b| b.admits(value, true))
                    && max.as_ref().is_none_or(|b| b.admits(value, false))
            }
        }
    }

    fn parse(v: &Value, file: &str, dim: &str) -> Result<Allowed, MappingsError> {
        let bad = |reason: String| MappingsError::Invalid {
            file: file.to_string(),
            reason: format!("dimension {dim}: {reason}"),
        };
        match v {
            Value::String(s) if s == "*" => Ok(Allowed::Any),
            Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(bad(format!("allowed value {other} is not a string"))),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Allowed::List),
            Value::Object(range) => {
                if let Some(k) = range.keys().find(|k| *k != "min" && *k != "max") {
                    return Err(bad(format!("unknown range key `{k}`")));
                }
                let bound = |key: &str| match range.get(key) {
                    None => Ok(None),
                    Some(Value::String(s)) => Ok(Some(Bound::Text(s.clone()))),
                    Some(Value::Number(n)) => Ok(Some(Bound::Number(n.clone()))),
                    Some(other) => Err(bad(format!(
                        "`{key}` {other} is neither a string nor a number"
                    ))),
                };
                Ok(Allowed::Range {
                    min: bound("min")?,
                    max: bound("max")?,
                })
            }
            other => Err(bad(format!(
                "allowed_values {other} is not \"*\", a list or a range"
            ))),
        }
    }

    /// The same check expressed on final values of a dimension (`file_name`: one of
    /// the last two): list entries and string bounds sanitised, numbers kept.
    fn sanitised(&self, file_name: bool) -> Allowed {
        let s = |v: &str| {
            let mut out = String::with_capacity(v.len());
            push_sanitised(&mut out, v, file_name);
            out
        };
        let b = |b: &Option<Bound>| match b {
            Some(Bound::Text(t)) => Some(Bound::Text(s(t))),
            other => other.clone(),
        };
        match self {
            Allowed::Any => Allowed::Any,
            Allowed::List(list) => Allowed::List(list.iter().map(|v| s(v)).collect()),
            Allowed::Range { min, max } => Allowed::Range {
                min: b(min),
                max: b(max),
            },
        }
    }
}

/// One dimension of the schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Dimension {
    /// The field name (`reason`, `appName`, ...).
    pub field_name: String,
    /// The values it allows.
    pub allowed: Allowed,
}

/// A storage schema (or a filter, which has the same format).
#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    origin: String,
    version: Option<i64>,
    dims: Vec<Dimension>,
}

impl Schema {
    /// Read a `telemetry_schema.json`. It must have at least two dimensions (the
    /// partition's file name is made of the last two).
    pub fn from_json(bytes: &[u8], origin: &str) -> Result<Schema, MappingsError> {
        Schema::parse(bytes, origin, 2)
    }

    fn parse(bytes: &[u8], origin: &str, min_dims: usize) -> Result<Schema, MappingsError> {
        let invalid = |reason: String| MappingsError::Invalid {
            file: origin.to_string(),
            reason,
        };
        let root: Value = crate::core::mappings::parse_json(bytes, origin)?;
        let Value::Object(root) = root else {
            return Err(invalid(format!(
                "not a schema: the top level is {}",
                kind_of(&root)
            )));
        };
        let version = match root.get("version") {
            None => None,
            Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64(),
            Some(other) => return Err(invalid(format!("version {other} is not an integer"))),
        };
        let Some(Value::Array(list)) = root.get("dimensions") else {
            return Err(invalid("not a schema: no `dimensions` list".to_string()));
        };
        let mut dims: Vec<Dimension> = Vec::with_capacity(list.len());
        for (i, d) in list.iter().enumerate() {
            let Value::Object(d) = d else {
                return Err(invalid(format!("dimension {i} is not an object")));
            };
            let name = match d.get("field_name") {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                _ => return Err(invalid(format!("dimension {i} has no `field_name`"))),
            };
            if dims.iter().any(|x| x.field_name == name) {
                return Err(invalid(format!("dimension {name} appears twice")));
            }
            let allowed = match d.get("allowed_values") {
                Some(v) => Allowed::parse(v, origin, &name)?,
                None => return Err(invalid(format!("dimension {name} has no `allowed_values`"))),
            };
            dims.push(Dimension {
                field_name: name,
                allowed,
            });
        }
        if dims.len() < min_dims {
            return Err(invalid(format!(
                "{} dimensions (at least {min_dims} needed)",
                dims.len()
            )));
        }
        Ok(Schema {
            origin: origin.to_string(),
            version,
            dims,
        })
    }

    /// Where the schema was read from, as given to [`Schema::from_json`].
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The file's `version` field, if it has one (not the `v2` of the layout).
    pub fn version(&self) -> Option<i64> {
        self.version
    }

    /// The number of dimensions.
    pub fn len(&self) -> usize {
        self.dims.len()
    }

    /// Whether the schema has no dimension (never true for a loaded storage schema).
    pub fn is_empty(&self) -> bool {
        self.dims.is_empty()
    }

    /// The dimensions, in order.
    pub fn dimensions(&self) -> &[Dimension] {
        &self.dims
    }

    /// The field names, in order.
    pub fn dimension_names(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.dims.iter().map(|d| d.field_name.as_str())
    }

    /// The position of the dimension named `name`.
    pub fn dimension_index(&self, name: &str) -> Option<usize> {
        self.dims.iter().position(|d| d.field_name == name)
    }

    /// Whether dimension `dim` is one of the last two, which make the file name.
    pub fn is_file_name_dimension(&self, dim: usize) -> bool {
        dim.saturating_add(2) >= self.dims.len()
    }

    /// The final value of dimension `dim` for the raw value `raw` (`None`: missing).
    ///
    /// Missing → `UNKNOWN`; then every value, `UNKNOWN` included, is checked against
    /// the allowed values on its raw text (not allowed → `OTHER`); then each character
    /// outside `[A-Za-z0-9_.]` becomes one `_`, `.` too in the last two dimensions, and
    /// a result that is empty or only dots has each character replaced by `_` (empty →
    /// `_`). A `dim` past the end is not checked and is sanitised as a file-name
    /// dimension.
    pub fn final_value(&self, dim: usize, raw: Option<&str>) -> String {
        let mut out = String::new();
        self.write_final_value(dim, raw, &mut out);
        out
    }

    /// [`Schema::final_value`] written into `out` (cleared first), to reuse its
    /// allocation.
    pub fn write_final_value(&self, dim: usize, raw: Option<&str>, out: &mut String) {
        out.clear();
        let value = raw.unwrap_or(UNKNOWN);
        let allowed = self.dims.get(dim).is_none_or(|d| d.allowed.allows(value));
        let value = if allowed { value } else { OTHER };
        push_sanitised(out, value, self.is_file_name_dimension(dim));
    }

    /// The partition of final values `finals` (one per dimension): all but the last
    /// two as folders, then `<second-to-last>.<last>.v2.log`.
    pub fn partition<S: AsRef<str>>(&self, finals: &[S]) -> String {
        let mut out = String::new();
        self.write_partition(finals, &mut out);
        out
    }

    /// [`Schema::partition`] written into `out` (cleared first).
    pub fn write_partition<S: AsRef<str>>(&self, finals: &[S], out: &mut String) {
        out.clear();
        let split = finals.len().saturating_sub(2);
        for f in &finals[..split] {
            out.push_str(f.as_ref());
            out.push('/');
        }
        for f in &finals[split..] {
            out.push_str(f.as_ref());
            out.push('.');
        }
        out.push_str("v2.log");
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Append `value` to `out` with every character outside `[A-Za-z0-9_.]` (and `.` when
/// `file_name`) as one `_`; a result that is empty or only dots becomes underscores.
fn push_sanitised(out: &mut String, value: &str, file_name: bool) {
    let start = out.len();
    let keep = |c: char| c.is_ascii_alphanumeric() || c == '_' || (c == '.' && !file_name);
    if value.bytes().all(|b| keep(char::from(b))) {
        // Fast path: every byte is an ASCII character that stays as it is.
        out.push_str(value);
    } else {
        out.extend(value.chars().map(|c| if keep(c) { c } else { '_' }));
    }
    let written = &out[start..];
    if written.is_empty() {
        out.push('_');
    } else if written.bytes().all(|b| b == b'.') {
        let n = written.len();
        out.truncate(start);
        out.extend(std::iter::repeat_n('_', n));
    }
}

/// A consumer filter bound to a storage schema: checks final values.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// (storage dimension index, check on its final value); `"*"` dimensions dropped.
    checks: Vec<(usize, Allowed)>,
}

impl Filter {
    /// Read a filter file (the schema format; one dimension is enough) and bind it to
    /// `storage`.
    pub fn from_json(
        bytes: &[u8],
        origin: &str,
        storage: &Schema,
    ) -> Result<Filter, MappingsError> {
        let filter = Schema::parse(bytes, origin, 1)?;
        Filter::bind(&filter, storage)
    }

    /// Map each dimension of `filter` by name onto `storage`'s, and express its
    /// allowed values on final values: list entries and string bounds go through the
    /// same sanitising as the storage dimension (so `saved-session` matches the final
    /// `saved_session`); number bounds stay numeric.
    pub fn bind(filter: &Schema, storage: &Schema) -> Result<Filter, MappingsError> {
        let mut checks = Vec::new();
        for d in filter.dimensions() {
            let Some(idx) = storage.dimension_index(&d.field_name) else {
                return Err(MappingsError::Invalid {
                    file: filter.origin().to_string(),
                    reason: format!(
                        "dimension {} is not in the storage schema {} ({})",
                        d.field_name,
                        storage.origin(),
                        storage.dimension_names().collect::<Vec<_>>().join(", ")
                    ),
                });
            };
            if d.allowed != Allowed::Any {
                checks.push((
                    idx,
                    d.allowed.sanitised(storage.is_file_name_dimension(idx)),
                ));
            }
        }
        Ok(Filter { checks })
    }

    /// Whether the final values `finals` (one per storage dimension) pass the filter.
    pub fn matches<S: AsRef<str>>(&self, finals: &[S]) -> bool {
        self.checks
            .iter()
            .all(|(idx, allowed)| finals.get(*idx).is_some_and(|v| allowed.allows(v.as_ref())))
    }

    /// Whether the filter lets everything through.
    pub fn is_trivial(&self) -> bool {
        self.checks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HEAD: &[u8] = include_bytes!("../../tests/data/telemetry_schema.HEAD.json");
    const CUTOVER: &[u8] = include_bytes!("../../tests/data/telemetry_schema.2013-10-04.json");
    const CPP: &[u8] = include_bytes!("../../tests/data/cpp_test_telemetry_schema.json");
    const FILTER_SS: &[u8] =
        include_bytes!("../../tests/data/filter_saved_session_Fx_prerelease.json");
    const FILTER_BUILD: &[u8] = include_bytes!("../../tests/data/filter_min_max_buildid.json");

    fn head() -> Schema {
        Schema::from_json(HEAD, "telemetry_schema.HEAD.json").unwrap()
    }
    fn cpp() -> Schema {
        Schema::from_json(CPP, "cpp_test_telemetry_schema.json").unwrap()
    }

    #[test]
    fn fixture_schemas() {
        let names = [
            "reason",
            "appName",
            "appUpdateChannel",
            "appVersion",
            "appBuildID",
            "submission_date",
        ];
        let head = head();
        assert_eq!(head.dimension_names().collect::<Vec<_>>(), names);
        assert_eq!(head.len(), 6);
        assert_eq!(head.version(), Some(1));
        assert_eq!(
            head.dimensions()[1].allowed,
            Allowed::List(
                ["Firefox", "Fennec", "Thunderbird", "FirefoxOS", "B2G"]
                    .map(String::from)
                    .to_vec()
            )
        );
        let cut = Schema::from_json(CUTOVER, "telemetry_schema.2013-10-04.json").unwrap();
        assert_eq!(cut.dimension_names().collect::<Vec<_>>(), names);
        // HEAD allows "main"; the cut-over schema did not.
        assert_eq!(head.final_value(0, Some("main")), "main");
        assert_eq!(cut.final_value(0, Some("main")), "OTHER");
        assert_eq!(cut.final_value(1, Some("B2G")), "OTHER");

        let cpp = cpp();
        assert_eq!(cpp.len(), 7);
        assert_eq!(cpp.dimension_names().next(), Some("submission_date"));
        assert_eq!(
            cpp.dimensions()[6].allowed,
            Allowed::Range {
                min: Some(Bound::Number(448.into())),
                max: Some(Bound::Number(500.into())),
            }
        );
        assert_eq!(cpp.dimension_index("memsize"), Some(6));
        assert!(cpp.is_file_name_dimension(5) && cpp.is_file_name_dimension(6));
        assert!(!cpp.is_file_name_dimension(4));
    }

    #[test]
    fn broken_schemas_name_the_file() {
        let err = Schema::from_json(
            include_bytes!("../../tests/data/schema_invalid.json"),
            "schema_invalid.json",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "schema_invalid.json: not a schema: the top level is a list"
        );
        let table: &[(&str, &str)] = &[
            (
                "nope",
                "s.json: not valid json: expected ident at line 1 column 2",
            ),
            ("{}", "s.json: not a schema: no `dimensions` list"),
            (
                r#"{"dimensions": [{"field_name": "a", "allowed_values": "*"}]}"#,
                "s.json: 1 dimensions (at least 2 needed)",
            ),
            (
                r#"{"version": "1", "dimensions": []}"#,
                "s.json: version \"1\" is not an integer",
            ),
            (
                r#"{"dimensions": [1, 2]}"#,
                "s.json: dimension 0 is not an object",
            ),
            (
                r#"{"dimensions": [{"allowed_values": "*"}]}"#,
                "s.json: dimension 0 has no `field_name`",
            ),
            (
                r#"{"dimensions": [{"field_name": "a"}]}"#,
                "s.json: dimension a has no `allowed_values`",
            ),
            (
                r#"{"dimensions": [{"field_name": "a", "allowed_values": "*"}, {"field_name": "a", "allowed_values": "*"}]}"#,
                "s.json: dimension a appears twice",
            ),
            (
                r#"{"dimensions": [{"field_name": "a", "allowed_values": "x"}]}"#,
                "s.json: dimension a: allowed_values \"x\" is not \"*\", a list or a range",
            ),
            (
                r#"{"dimensions": [{"field_name": "a", "allowed_values": [1]}]}"#,
                "s.json: dimension a: allowed value 1 is not a string",
            ),
            (
                r#"{"dimensions": [{"field_name": "a", "allowed_values": {"min": true}}]}"#,
                "s.json: dimension a: `min` true is neither a string nor a number",
            ),
            (
                r#"{"dimensions": [{"field_name": "a", "allowed_values": {"low": 1}}]}"#,
                "s.json: dimension a: unknown range key `low`",
            ),
        ];
        for (json, want) in table {
            assert_eq!(
                Schema::from_json(json.as_bytes(), "s.json")
                    .unwrap_err()
                    .to_string(),
                *want,
                "{json}"
            );
        }
    }

    /// One row per rule of SPEC §6 "Dimension values" and §5 value rules.
    #[test]
    fn final_values() {
        let head = head();
        let cpp = cpp();
        let string_range = Schema::from_json(
            br#"{"dimensions": [
                {"field_name": "b", "allowed_values": {"min": "20130600", "max": "20130607"}},
                {"field_name": "lo", "allowed_values": {"min": "m"}},
                {"field_name": "hi", "allowed_values": {"max": 10}}]}"#,
            "r.json",
        )
        .unwrap();
        let unknown_listed = Schema::from_json(
            br#"{"dimensions": [{"field_name": "a", "allowed_values": ["UNKNOWN", "x"]},
                {"field_name": "b", "allowed_values": "*"}]}"#,
            "u.json",
        )
        .unwrap();
        // (schema, dim, raw, final, what the row shows)
        let table: &[(&Schema, usize, Option<&str>, &str, &str)] = &[
            (&head, 3, None, "UNKNOWN", "missing → UNKNOWN"),
            (
                &head,
                0,
                None,
                "OTHER",
                "UNKNOWN is checked: a list without it → OTHER",
            ),
            (
                &unknown_listed,
                0,
                None,
                "UNKNOWN",
                "UNKNOWN kept when the list names it",
            ),
            (
                &cpp,
                6,
                None,
                "OTHER",
                "UNKNOWN is not a number for a number range",
            ),
            (
                &string_range,
                1,
                None,
                "OTHER",
                "UNKNOWN compares as a string: \"U\" < \"m\"",
            ),
            (
                &head,
                0,
                Some("saved-session"),
                "saved_session",
                "allowed on raw text, then sanitised",
            ),
            (
                &head,
                0,
                Some("saved_session"),
                "OTHER",
                "the check is on the raw text",
            ),
            (
                &head,
                1,
                Some("firefox"),
                "OTHER",
                "lists are case-sensitive",
            ),
            (
                &head,
                2,
                Some("nightly-cck"),
                "OTHER",
                "not in the list → OTHER",
            ),
            (
                &head,
                3,
                Some("22.0a1"),
                "22.0a1",
                "dots stay in folder dimensions",
            ),
            (&head, 4, Some("20130226031002"), "20130226031002", "ok"),
            (
                &head,
                4,
                Some("2013.02"),
                "2013_02",
                "dots become _ in file-name dimensions",
            ),
            (&head, 5, Some("20131011"), "20131011", "ok"),
            (&head, 3, Some("a/b"), "a_b", "/ cannot add a path level"),
            (
                &head,
                3,
                Some("../.."),
                ".._..",
                "no traversal: no / survives",
            ),
            (&head, 3, Some(".."), "__", "only dots → each becomes _"),
            (&head, 3, Some("."), "_", "only dots → each becomes _"),
            (&head, 3, Some("..."), "___", "only dots → each becomes _"),
            (
                &head,
                4,
                Some(".."),
                "__",
                "file-name dimension: dots already _",
            ),
            (&head, 3, Some(""), "_", "empty → _"),
            (&head, 3, Some("22.0 beta"), "22.0_beta", "space → _"),
            (
                &head,
                3,
                Some("é"),
                "_",
                "one _ per character, not per byte",
            ),
            (&head, 3, Some("日本語"), "___", "one _ per character"),
            (&head, 3, Some("a😀b"), "a_b", "astral character → one _"),
            (&head, 3, Some("a\tb\nc\0"), "a_b_c_", "control characters"),
            (&head, 3, Some("A-z_0.9"), "A_z_0.9", "[A-Za-z0-9_.] kept"),
            (
                &string_range,
                0,
                Some("20130600"),
                "20130600",
                "string min inclusive",
            ),
            (
                &string_range,
                0,
                Some("20130607"),
                "20130607",
                "string max inclusive",
            ),
            (
                &string_range,
                0,
                Some("20130603123456"),
                "20130603123456",
                "string compare: longer inside",
            ),
            (
                &string_range,
                0,
                Some("20130608"),
                "OTHER",
                "above string max",
            ),
            (
                &string_range,
                0,
                Some("2013"),
                "OTHER",
                "string compare: prefix is below",
            ),
            (
                &string_range,
                0,
                Some("9"),
                "OTHER",
                "string compare, not numeric",
            ),
            (&string_range, 1, Some("z"), "z", "min only"),
            (&string_range, 1, Some("a"), "OTHER", "below min only"),
            (&cpp, 6, Some("448"), "448", "number min inclusive"),
            (&cpp, 6, Some("500"), "500", "number max inclusive"),
            (&cpp, 6, Some("447"), "OTHER", "below number min"),
            (&cpp, 6, Some("501"), "OTHER", "above number max"),
            (
                &cpp,
                6,
                Some("1000"),
                "OTHER",
                "numeric, not string, compare",
            ),
            (
                &cpp,
                6,
                Some("4.5e2"),
                "4_5e2",
                "any JSON number compares; . then → _",
            ),
            (
                &cpp,
                6,
                Some("448.5"),
                "448_5",
                "fractions compare numerically",
            ),
            (
                &cpp,
                6,
                Some("0448"),
                "OTHER",
                "not a JSON number → not allowed",
            ),
            (
                &cpp,
                6,
                Some(" 450"),
                "OTHER",
                "not a JSON number → not allowed",
            ),
            (
                &cpp,
                6,
                Some("+450"),
                "OTHER",
                "not a JSON number → not allowed",
            ),
            (&cpp, 6, Some("abc"), "OTHER", "non-numeric → not allowed"),
            (&cpp, 6, Some(""), "OTHER", "empty is not a number"),
            (
                &string_range,
                2,
                Some("-5"),
                "_5",
                "max only, negative; then - → _",
            ),
            (
                &string_range,
                2,
                Some("1e400"),
                "OTHER",
                "overflows to infinity, above max",
            ),
            (
                &head,
                99,
                Some("a.b/c"),
                "a_b_c",
                "dimension past the end: no check, strictest sanitising",
            ),
        ];
        for &(schema, dim, raw, want, why) in table {
            assert_eq!(schema.final_value(dim, raw), want, "{raw:?}: {why}");
            let mut reused = String::from("leftover");
            schema.write_final_value(dim, raw, &mut reused);
            assert_eq!(reused, want, "{raw:?}: write_final_value");
        }
    }

    #[test]
    fn partitions() {
        let head = head();
        let finals = [
            "saved_session",
            "Firefox",
            "nightly",
            "22.0a1",
            "20130226031002",
            "20131011",
        ];
        assert_eq!(
            head.partition(&finals),
            "saved_session/Firefox/nightly/22.0a1/20130226031002.20131011.v2.log"
        );
        let raw = [
            Some("saved-session"),
            Some("Firefox"),
            Some("nightly"),
            Some("22.0a1"),
            Some("20130226031002"),
            Some("20131011"),
        ];
        let finals: Vec<String> = raw
            .iter()
            .enumerate()
            .map(|(i, r)| head.final_value(i, *r))
            .collect();
        let mut out = String::from("x");
        head.write_partition(&finals, &mut out);
        assert_eq!(
            out,
            "saved_session/Firefox/nightly/22.0a1/20130226031002.20131011.v2.log"
        );
        // Any length works without panicking.
        assert_eq!(head.partition(&["a", "b"]), "a.b.v2.log");
        assert_eq!(head.partition(&["a"]), "a.v2.log");
        assert_eq!(head.partition::<&str>(&[]), "v2.log");
    }

    #[test]
    fn filter_fixtures() {
        let head = head();
        let ss =
            Filter::from_json(FILTER_SS, "filter_saved_session_Fx_prerelease.json", &head).unwrap();
        let key = |r: &str, a: &str, c: &str, b: &str, d: &str| {
            [r, a, c, "22.0a1", b, d].map(String::from)
        };
        let table: &[([String; 6], bool)] = &[
            (
                key(
                    "saved_session",
                    "Firefox",
                    "nightly",
                    "20131101000000",
                    "20131102",
                ),
                true,
            ),
            (
                key("saved_session", "Fennec", "aurora", "1", "20131101"),
                true,
            ),
            (
                key("saved_session", "Firefox", "nightly", "1", "20131103"),
                true,
            ),
            (
                key("saved_session", "Firefox", "nightly", "1", "20131104"),
                false,
            ),
            (
                key("saved_session", "Firefox", "nightly", "1", "20131031"),
                false,
            ),
            (
                key("saved_session", "Firefox", "release", "1", "20131102"),
                false,
            ),
            (
                key("idle_daily", "Firefox", "nightly", "1", "20131102"),
                false,
            ),
            (
                key("saved-session", "Firefox", "nightly", "1", "20131102"),
                false,
            ),
            (
                key("saved_session", "Thunderbird", "nightly", "1", "20131102"),
                false,
            ),
        ];
        for (finals, want) in table {
            assert_eq!(ss.matches(finals), *want, "{finals:?}");
        }
        let build = Filter::from_json(FILTER_BUILD, "filter_min_max_buildid.json", &head).unwrap();
        let table: &[([String; 6], bool)] = &[
            (
                key(
                    "saved_session",
                    "Firefox",
                    "nightly",
                    "20130600",
                    "20131102",
                ),
                true,
            ),
            (
                key(
                    "saved_session",
                    "Firefox",
                    "aurora",
                    "20130603031002",
                    "20131102",
                ),
                true,
            ),
            (
                key(
                    "saved_session",
                    "Firefox",
                    "nightly",
                    "20130607",
                    "20131102",
                ),
                true,
            ),
            // string compare: 20130607xxxxxx is above "20130607"
            (
                key(
                    "saved_session",
                    "Firefox",
                    "nightly",
                    "20130607031002",
                    "20131102",
                ),
                false,
            ),
            (
                key(
                    "saved_session",
                    "Firefox",
                    "nightly",
                    "20130531235959",
                    "20131102",
                ),
                false,
            ),
            (
                key(
                    "saved_session",
                    "Firefox",
                    "beta",
                    "20130603031002",
                    "20131102",
                ),
                false,
            ),
        ];
        for (finals, want) in table {
            assert_eq!(build.matches(finals), *want, "{finals:?}");
        }
        // A short row fails rather than panics.
        assert!(!build.matches(&["saved_session"]));
    }

    #[test]
    fn filters_bind_by_name_on_final_values() {
        let head = head();
        let f = Filter::from_json(
            br#"{"dimensions": [
                {"field_name": "appVersion", "allowed_values": ["22.0a1", "a/b"]},
                {"field_name": "appBuildID", "allowed_values": ["2013.1"]},
                {"field_name": "reason", "allowed_values": "*"}]}"#,
            "f.json",
            &head,
        )
        .unwrap();
        let finals = |v: &str, b: &str| ["r", "a", "c", v, b, "d"].map(String::from);
        assert!(f.matches(&finals("22.0a1", "2013_1")));
        assert!(f.matches(&finals("a_b", "2013_1")));
        assert!(!f.matches(&finals("22.0a1", "2013.1")));
        assert!(!f.is_trivial());
        let all = Filter::from_json(
            br#"{"dimensions": [{"field_name": "reason", "allowed_values": "*"}]}"#,
            "all.json",
            &head,
        )
        .unwrap();
        assert!(all.is_trivial() && all.matches(&finals("x", "y")));
        // Numeric bounds stay numeric.
        let cpp = cpp();
        let mem = Filter::from_json(
            br#"{"dimensions": [{"field_name": "memsize", "allowed_values": {"min": 450}}]}"#,
            "m.json",
            &cpp,
        )
        .unwrap();
        let row = |m: &str| ["d", "r", "a", "c", "v", "b", m].map(String::from);
        assert!(mem.matches(&row("450")));
        assert!(mem.matches(&row("1000")));
        assert!(!mem.matches(&row("449")));
        assert!(!mem.matches(&row("OTHER")));
        // Unknown dimension: an error naming it and the filter file.
        let err = Filter::from_json(
            br#"{"dimensions": [{"field_name": "memsize", "allowed_values": "*"}]}"#,
            "filter.json",
            &head,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("filter.json: dimension memsize is not in the storage schema"),
            "{err}"
        );
        assert!(Filter::from_json(b"{\"dimensions\": []}", "e.json", &head).is_err());
    }

    fn any_schema() -> Schema {
        Schema::from_json(
            br#"{"dimensions": [{"field_name": "a", "allowed_values": "*"},
                {"field_name": "b", "allowed_values": "*"},
                {"field_name": "c", "allowed_values": "*"}]}"#,
            "any.json",
        )
        .unwrap()
    }

    proptest! {
        #[test]
        fn final_values_are_safe_path_segments(raw in proptest::option::of("\\PC{0,12}|[./a-z]{0,5}|\\.*"), dim in 0usize..8) {
            for schema in [head(), cpp(), any_schema()] {
                let v = schema.final_value(dim, raw.as_deref());
                prop_assert!(!v.is_empty());
                prop_assert!(v != "." && v != "..");
                prop_assert!(!v.contains('/'));
                prop_assert!(v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.'), "{v:?}");
                prop_assert!(!v.bytes().all(|b| b == b'.'));
                if schema.is_file_name_dimension(dim) {
                    prop_assert!(!v.contains('.'));
                }
            }
        }

        #[test]
        fn sanitising_keeps_one_char_per_char(raw in "\\PC{1,12}") {
            let v = any_schema().final_value(0, Some(&raw));
            prop_assert_eq!(v.chars().count(), raw.chars().count());
        }
    }
}
