//! The mappings: the data that drives conversion, loaded once and versioned.
//!
//! This module owns the shape of a mappings folder (SPEC §4, §6): the storage schema
//! `telemetry_schema.json`, the definitions index `histograms/index.json` (revision →
//! definitions file), the definitions files themselves, and `revisions.json`, the
//! table resolving payloads without `info.revision`. It reads them through the
//! [`MappingFiles`] seam (so it stays pure: the folder compiled into the binary, or
//! `mappings_dir::DirMappings` outside the core), checks them, computes every
//! definitions file's buckets once, and names the whole content with a hash
//! ([`Mappings::version`]) so every output can say which mappings produced it.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use include_dir::{include_dir, Dir};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::core::histdefs::Definitions;
use crate::core::schema::Schema;

/// The storage schema's path in a mappings folder.
pub const SCHEMA_PATH: &str = "telemetry_schema.json";
/// The definitions index's path in a mappings folder.
pub const INDEX_PATH: &str = "histograms/index.json";
/// The folder holding definitions files, which the index names relative to it.
pub const HISTOGRAMS_DIR: &str = "histograms/";
/// The revision table's path in a mappings folder.
pub const REVISIONS_PATH: &str = "revisions.json";

/// An error loading mappings, a schema, a filter or a definitions file. Every
/// message begins with the file it is about.
#[derive(Debug, Error)]
pub enum MappingsError {
    /// The file is not valid JSON.
    #[error("{file}: not valid json: {message}")]
    Json {
        /// The file.
        file: String,
        /// What the JSON parser said.
        message: String,
    },
    /// The file is JSON but not of the expected shape, or holds a bad value.
    #[error("{file}: {reason}")]
    Invalid {
        /// The file.
        file: String,
        /// What is wrong, naming the bad value.
        reason: String,
    },
    /// A file the mappings need is absent.
    #[error("{file}: not found")]
    NotFound {
        /// The file.
        file: String,
    },
    /// A file could not be read (outside the core: `mappings_dir`).
    #[error("{path}: cannot read")]
    Io {
        /// The file or folder.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Read access to a mappings folder, whatever stores it.
pub trait MappingFiles {
    /// Every file's path relative to the folder root, with `/` separators.
    fn list(&self) -> Result<Vec<String>, MappingsError>;
    /// The bytes of the file at `rel` (as listed).
    fn read(&self, rel: &str) -> Result<Vec<u8>, MappingsError>;
    /// How to name the file at `rel` in messages (by default `rel` itself).
    fn origin(&self, rel: &str) -> String {
        rel.to_string()
    }
}

/// One row of `revisions.json`: builds known to match a revision.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevisionRange {
    /// `info.appName`, exactly.
    #[serde(rename = "appName")]
    pub app_name: String,
    /// `info.appUpdateChannel`, exactly.
    #[serde(rename = "appUpdateChannel")]
    pub channel: String,
    /// `info.appVersion`, exactly.
    #[serde(rename = "appVersion")]
    pub version: String,
    /// The first build ID of the range (inclusive, compared as a string).
    pub buildid_min: String,
    /// The last build ID of the range (inclusive, compared as a string).
    pub buildid_max: String,
    /// The revision: 12 lowercase hex digits, present in the index.
    pub revision: String,
    /// Why this range maps to this revision.
    pub note: String,
}

impl RevisionRange {
    fn covers(&self, app_name: &str, channel: &str, version: &str, build_id: &str) -> bool {
        self.app_name == app_name
            && self.channel == channel
            && self.version == version
            && self.buildid_min.as_str() <= build_id
            && build_id <= self.buildid_max.as_str()
    }
}

/// Loaded, checked mappings: the schema, the definitions of every known revision,
/// the revision table and the content version.
#[derive(Debug, Clone)]
pub struct Mappings {
    schema: Schema,
    definitions: Vec<Definitions>,
    by_revision: HashMap<String, usize>,
    revisions: Vec<RevisionRange>,
    version: String,
    warnings: Vec<String>,
}

impl Mappings {
    /// Load and check a mappings folder.
    ///
    /// Every listed file (names starting with `.` at any level are ignored) is read
    /// once and hashed into [`Mappings::version`]. The schema, the index, each
    /// definitions file it names and the revision table must all be valid; a single
    /// definition that cannot be computed is left out and reported in
    /// [`Mappings::warnings`].
    pub fn load(files: &dyn MappingFiles) -> Result<Mappings, MappingsError> {
        let mut content: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for rel in files.list()? {
            if rel.split('/').any(|part| part.starts_with('.')) {
                continue;
            }
            let bytes = files.read(&rel)?;
            content.insert(rel, bytes);
        }
        let version = content_version(&content);
        let get = |rel: &str| {
            content
                .get(rel)
                .map(Vec::as_slice)
                .ok_or_else(|| MappingsError::NotFound {
                    file: files.origin(rel),
                })
        };

        let schema = Schema::from_json(get(SCHEMA_PATH)?, &files.origin(SCHEMA_PATH))?;

        let index_origin = files.origin(INDEX_PATH);
        let index = parse_index(get(INDEX_PATH)?, &index_origin)?;
        let mut warnings = Vec::new();
        let mut definitions = Vec::new();
        let mut by_file: HashMap<&str, usize> = HashMap::new();
        let mut by_revision = HashMap::with_capacity(index.len());
        for (rev, file) in &index {
            let slot = match by_file.get(file.as_str()) {
                Some(&slot) => slot,
                None => {
                    let rel = format!("{HISTOGRAMS_DIR}{file}");
                    let Some(bytes) = content.get(&rel) else {
                        return Err(MappingsError::Invalid {
                            file: index_origin,
                            reason: format!(
                                "revision {rev}: definitions file {} not found",
                                files.origin(&rel)
                            ),
                        });
                    };
                    let (defs, w) = Definitions::from_json(bytes, &files.origin(&rel))?;
                    warnings.extend(w);
                    definitions.push(defs);
                    by_file.insert(file.as_str(), definitions.len() - 1);
                    definitions.len() - 1
                }
            };
            by_revision.insert(rev.clone(), slot);
        }
        for rel in content.keys() {
            if let Some(name) = rel.strip_prefix(HISTOGRAMS_DIR) {
                if rel != INDEX_PATH && name.ends_with(".json") && !by_file.contains_key(name) {
                    warnings.push(format!(
                        "{}: not named in {index_origin}, unused",
                        files.origin(rel)
                    ));
                }
            }
        }

        let revisions = parse_revisions(
            get(REVISIONS_PATH)?,
            &files.origin(REVISIONS_PATH),
            &by_revision,
        )?;

        Ok(Mappings {
            schema,
            definitions,
            by_revision,
            revisions,
            version,
            warnings,
        })
    }

    /// The mappings compiled into the binary from the repository's `mappings/`
    /// folder, loaded on first use.
    ///
    /// An error here means the shipped data is broken (the test suite loads it).
    pub fn embedded() -> Result<&'static Mappings, &'static MappingsError> {
        static LOADED: OnceLock<Result<Mappings, MappingsError>> = OnceLock::new();
        LOADED
            .get_or_init(|| Mappings::load(&EmbeddedFiles(&EMBEDDED)))
            .as_ref()
    }

    /// The same mappings with another storage schema (the version is unchanged: it
    /// names the files that were loaded).
    pub fn with_schema(mut self, schema: Schema) -> Mappings {
        self.schema = schema;
        self
    }

    /// The storage schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The definitions of revision `rev12` (12 lowercase hex digits), if known.
    #[inline]
    pub fn definitions(&self, rev12: &str) -> Option<&Definitions> {
        self.by_revision
            .get(rev12)
            .and_then(|&slot| self.definitions.get(slot))
    }

    /// The known revisions, in no particular order.
    pub fn revisions(&self) -> impl Iterator<Item = &str> + '_ {
        self.by_revision.keys().map(String::as_str)
    }

    /// The revision of a payload without `info.revision`, from the revision table:
    /// the entry whose app name, channel and version are equal and whose build range
    /// holds `build_id` (compared as strings). No entry, no revision.
    pub fn resolve_revision(
        &self,
        app_name: &str,
        channel: &str,
        version: &str,
        build_id: &str,
    ) -> Option<&str> {
        self.revisions
            .iter()
            .find(|r| r.covers(app_name, channel, version, build_id))
            .map(|r| r.revision.as_str())
    }

    /// The revision table, in file order.
    pub fn revision_table(&self) -> &[RevisionRange] {
        &self.revisions
    }

    /// The content version: `sha256:` and the first 12 hex digits of the hash of
    /// every file (path, length, bytes; sorted by path). Any change to the data
    /// changes it.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// What was skipped while loading (definitions that cannot be computed, unused
    /// definitions files), each naming its file.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// The repository's `mappings/` folder, compiled in.
static EMBEDDED: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/mappings");

/// [`MappingFiles`] over the compiled-in folder.
struct EmbeddedFiles(&'static Dir<'static>);

impl MappingFiles for EmbeddedFiles {
    fn list(&self) -> Result<Vec<String>, MappingsError> {
        fn walk(dir: &Dir<'static>, out: &mut Vec<String>) {
            for f in dir.files() {
                out.push(f.path().to_string_lossy().replace('\\', "/"));
            }
            for d in dir.dirs() {
                walk(d, out);
            }
        }
        let mut out = Vec::new();
        walk(self.0, &mut out);
        Ok(out)
    }

    fn read(&self, rel: &str) -> Result<Vec<u8>, MappingsError> {
        self.0
            .get_file(rel)
            .map(|f| f.contents().to_vec())
            .ok_or_else(|| MappingsError::NotFound {
                file: self.origin(rel),
            })
    }

    fn origin(&self, rel: &str) -> String {
        format!("(embedded) mappings/{rel}")
    }
}

fn content_version(content: &BTreeMap<String, Vec<u8>>) -> String {
    let mut h = Sha256::new();
    for (path, bytes) in content {
        h.update((path.len() as u64).to_le_bytes());
        h.update(path.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    let digest = h.finalize();
    let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Parses a mappings file as JSON; the error names the file.
pub(crate) fn parse_json(bytes: &[u8], origin: &str) -> Result<serde_json::Value, MappingsError> {
    serde_json::from_slice(bytes).map_err(|e| MappingsError::Json {
        file: origin.to_string(),
        message: e.to_string(),
    })
}

fn is_rev12(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `histograms/index.json`: `{ "<rev12>": "<file name under histograms/>" }`.
fn parse_index(bytes: &[u8], origin: &str) -> Result<BTreeMap<String, String>, MappingsError> {
    let invalid = |reason: String| MappingsError::Invalid {
        file: origin.to_string(),
        reason,
    };
    let root: serde_json::Value = parse_json(bytes, origin)?;
    let serde_json::Value::Object(map) = root else {
        return Err(invalid(
            "not a map of revision to definitions file".to_string(),
        ));
    };
    let mut index = BTreeMap::new();
    for (rev, file) in map {
        if !is_rev12(&rev) {
            return Err(invalid(format!(
                "revision {rev:?} is not 12 lowercase hex digits"
            )));
        }
        let serde_json::Value::String(file) = file else {
            return Err(invalid(format!(
                "revision {rev}: {file} is not a file name"
            )));
        };
        if file.is_empty()
            || file.starts_with('/')
            || file.contains('\\')
            || file
                .split('/')
                .any(|p| p.is_empty() || p == "." || p == ".." || p.starts_with('.'))
        {
            return Err(invalid(format!(
                "revision {rev}: {file:?} is not a file name under {HISTOGRAMS_DIR}"
            )));
        }
        index.insert(rev, file);
    }
    Ok(index)
}

/// `revisions.json`: a list of [`RevisionRange`]s, each naming an indexed revision,
/// no two overlapping.
fn parse_revisions(
    bytes: &[u8],
    origin: &str,
    known: &HashMap<String, usize>,
) -> Result<Vec<RevisionRange>, MappingsError> {
    let invalid = |reason: String| MappingsError::Invalid {
        file: origin.to_string(),
        reason,
    };
    let root: serde_json::Value = parse_json(bytes, origin)?;
    let table: Vec<RevisionRange> =
        serde_json::from_value(root).map_err(|e| invalid(format!("not a revision table: {e}")))?;
    for (i, r) in table.iter().enumerate() {
        if !is_rev12(&r.revision) {
            return Err(invalid(format!(
                "entry {i}: revision {:?} is not 12 lowercase hex digits",
                r.revision
            )));
        }
        if !known.contains_key(&r.revision) {
            return Err(invalid(format!(
                "entry {i}: revision {} has no definitions in {INDEX_PATH}",
                r.revision
            )));
        }
        if r.buildid_min > r.buildid_max {
            return Err(invalid(format!(
                "entry {i}: buildid_min {} is above buildid_max {}",
                r.buildid_min, r.buildid_max
            )));
        }
        if let Some(j) = table[..i].iter().position(|o| {
            o.app_name == r.app_name
                && o.channel == r.channel
                && o.version == r.version
                && o.buildid_min <= r.buildid_max
                && r.buildid_min <= o.buildid_max
        }) {
            return Err(invalid(format!(
                "entries {j} and {i} overlap ({} {} {}, builds {}..={} and {}..={})",
                r.app_name,
                r.channel,
                r.version,
                table[j].buildid_min,
                table[j].buildid_max,
                r.buildid_min,
                r.buildid_max
            )));
        }
    }
    Ok(table)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Mappings files held in memory, for tests.
    #[derive(Clone, Default)]
    pub(crate) struct MemFiles(pub BTreeMap<String, Vec<u8>>);

    impl MappingFiles for MemFiles {
        fn list(&self) -> Result<Vec<String>, MappingsError> {
            Ok(self.0.keys().cloned().collect())
        }
        fn read(&self, rel: &str) -> Result<Vec<u8>, MappingsError> {
            self.0
                .get(rel)
                .cloned()
                .ok_or_else(|| MappingsError::NotFound {
                    file: rel.to_string(),
                })
        }
    }

    /// The shipped mappings' files, to edit in a test.
    pub(crate) fn embedded_copy() -> MemFiles {
        let files = EmbeddedFiles(&EMBEDDED);
        MemFiles(
            files
                .list()
                .unwrap()
                .into_iter()
                .map(|p| {
                    let b = files.read(&p).unwrap();
                    (p, b)
                })
                .collect(),
        )
    }

    #[test]
    fn embedded_mappings_load() {
        let m = Mappings::embedded().unwrap();
        assert!(m.warnings().is_empty(), "{:?}", m.warnings());
        assert_eq!(
            m.schema().dimension_names().collect::<Vec<_>>(),
            [
                "reason",
                "appName",
                "appUpdateChannel",
                "appVersion",
                "appBuildID",
                "submission_date"
            ]
        );
        assert_eq!(m.schema().final_value(0, Some("main")), "main");
        let defs = m.definitions("a55c55edf302").unwrap();
        assert_eq!(defs.len(), 524);
        assert!(m.definitions("a55c55edf303").is_none());
        assert!(m.definitions("A55C55EDF302").is_none());
        assert_eq!(m.revisions().collect::<Vec<_>>(), ["a55c55edf302"]);
        assert!(m.version().starts_with("sha256:"));
        assert_eq!(m.version().len(), "sha256:".len() + 12);
        // Same data loaded again through another seam: same version.
        assert_eq!(
            Mappings::load(&embedded_copy()).unwrap().version(),
            m.version()
        );
    }

    #[test]
    fn embedded_revision_table() {
        let m = Mappings::embedded().unwrap();
        let r = |app, ch, v, b| m.resolve_revision(app, ch, v, b);
        assert_eq!(
            r("Firefox", "aurora", "23.0a2", "20130514000000"),
            Some("a55c55edf302")
        );
        assert_eq!(
            r("Firefox", "aurora", "23.0a2", "20130514004016"),
            Some("a55c55edf302")
        );
        assert_eq!(
            r("Firefox", "aurora", "23.0a2", "20130514235959"),
            Some("a55c55edf302")
        );
        assert_eq!(r("Firefox", "aurora", "23.0a2", "20130515000000"), None);
        assert_eq!(r("Firefox", "aurora", "23.0a2", "20130513235959"), None);
        assert_eq!(r("Firefox", "nightly", "23.0a2", "20130514004016"), None);
        assert_eq!(r("Firefox", "aurora", "23.0a1", "20130514004016"), None);
        assert_eq!(r("Fennec", "aurora", "23.0a2", "20130514004016"), None);
        // No catch-all: the Hadoop-era Firefox 16 payload stays unresolved.
        assert_eq!(r("Firefox", "release", "16.0.1", "20121010144125"), None);
        assert_eq!(r("", "", "", ""), None);
        assert!(m.revision_table()[0]
            .note
            .contains("FIREFOX_AURORA_23_BASE"));
    }

    fn set(files: &mut MemFiles, path: &str, bytes: &[u8]) {
        files.0.insert(path.to_string(), bytes.to_vec());
    }

    #[test]
    fn any_change_changes_the_version() {
        let base = embedded_copy();
        let v0 = Mappings::load(&base).unwrap().version().to_string();
        // One byte of a definition's description: still valid, another version.
        let mut changed = base.clone();
        let defs = changed
            .0
            .get_mut("histograms/Histograms.FIREFOX_AURORA_23_BASE.json")
            .unwrap();
        let at = defs.windows(4).position(|w| w == b"Time").unwrap();
        defs[at] = b't';
        let m = Mappings::load(&changed).unwrap();
        assert_eq!(m.definitions("a55c55edf302").unwrap().len(), 524);
        assert_ne!(m.version(), v0);
        // Every file counts, the README too.
        let mut readme = base.clone();
        let text = readme.0.get_mut("README.md").unwrap();
        text[0] ^= 1;
        assert_ne!(Mappings::load(&readme).unwrap().version(), v0);
        // Moving a byte between path and content changes it too.
        let mut extra = base.clone();
        set(&mut extra, "x", b"y");
        let mut extra2 = base.clone();
        set(&mut extra2, "xy", b"");
        let (a, b) = (
            Mappings::load(&extra).unwrap().version().to_string(),
            Mappings::load(&extra2).unwrap().version().to_string(),
        );
        assert_ne!(a, b);
        assert_ne!(a, v0);
        // Hidden files are ignored.
        let mut hidden = base.clone();
        set(&mut hidden, ".DS_Store", b"junk");
        set(&mut hidden, "histograms/.Histograms.json.swp", b"junk");
        assert_eq!(Mappings::load(&hidden).unwrap().version(), v0);
    }

    #[test]
    fn broken_files_stop_the_load() {
        let base = embedded_copy();
        let cases: &[(&str, &[u8], &str)] = &[
            (SCHEMA_PATH, b"[\"a\"]", "telemetry_schema.json: not a schema"),
            (SCHEMA_PATH, b"{", "telemetry_schema.json: not valid json"),
            (
                "histograms/Histograms.FIREFOX_AURORA_23_BASE.json",
                b"invalid json data",
                "histograms/Histograms.FIREFOX_AURORA_23_BASE.json: not valid json",
            ),
            (
                "histograms/Histograms.FIREFOX_AURORA_23_BASE.json",
                b"[]",
                "histograms/Histograms.FIREFOX_AURORA_23_BASE.json: not a map",
            ),
            (INDEX_PATH, b"[]", "histograms/index.json: not a map"),
            (INDEX_PATH, br#"{"A55C55EDF302": "x.json"}"#, "histograms/index.json: revision \"A55C55EDF302\" is not 12 lowercase hex"),
            (INDEX_PATH, br#"{"a55c55edf302": "../telemetry_schema.json"}"#, "histograms/index.json: revision a55c55edf302: \"../telemetry_schema.json\" is not a file name"),
            (INDEX_PATH, br#"{"a55c55edf302": 1}"#, "histograms/index.json: revision a55c55edf302: 1 is not a file name"),
            (
                INDEX_PATH,
                br#"{"a55c55edf302": "Histograms.FIREFOX_AURORA_23_BASE.json", "0123456789ab": "Histograms.missing.json"}"#,
                "histograms/index.json: revision 0123456789ab: definitions file histograms/Histograms.missing.json not found",
            ),
            (REVISIONS_PATH, b"{}", "revisions.json: not a revision table"),
            (REVISIONS_PATH, br#"[{"appName": "Firefox"}]"#, "revisions.json: not a revision table: missing field"),
            (
                REVISIONS_PATH,
                br#"[{"appName": "F", "appUpdateChannel": "a", "appVersion": "1", "buildid_min": "1", "buildid_max": "2", "revision": "a55c55edf302", "note": "", "extra": 1}]"#,
                "revisions.json: not a revision table: unknown field `extra`",
            ),
            (
                REVISIONS_PATH,
                br#"[{"appName": "F", "appUpdateChannel": "a", "appVersion": "1", "buildid_min": "1", "buildid_max": "2", "revision": "0123456789ab", "note": ""}]"#,
                "revisions.json: entry 0: revision 0123456789ab has no definitions in histograms/index.json",
            ),
            (
                REVISIONS_PATH,
                br#"[{"appName": "F", "appUpdateChannel": "a", "appVersion": "1", "buildid_min": "1", "buildid_max": "2", "revision": "a55c55edf30", "note": ""}]"#,
                "revisions.json: entry 0: revision \"a55c55edf30\" is not 12 lowercase hex digits",
            ),
            (
                REVISIONS_PATH,
                br#"[{"appName": "F", "appUpdateChannel": "a", "appVersion": "1", "buildid_min": "3", "buildid_max": "2", "revision": "a55c55edf302", "note": ""}]"#,
                "revisions.json: entry 0: buildid_min 3 is above buildid_max 2",
            ),
            (
                REVISIONS_PATH,
                br#"[{"appName": "F", "appUpdateChannel": "a", "appVersion": "1", "buildid_min": "1", "buildid_max": "5", "revision": "a55c55edf302", "note": ""},
                    {"appName": "F", "appUpdateChannel": "a", "appVersion": "1", "buildid_min": "5", "buildid_max": "9", "revision": "a55c55edf302", "note": ""}]"#,
                "revisions.json: entries 0 and 1 overlap (F a 1, builds 1..=5 and 5..=9)",
            ),
        ];
        for (path, bytes, want) in cases {
            let mut files = base.clone();
            set(&mut files, path, bytes);
            let err = Mappings::load(&files).unwrap_err().to_string();
            assert!(err.starts_with(want), "{path}: got {err:?}, want {want:?}");
        }
        for missing in [
            SCHEMA_PATH,
            INDEX_PATH,
            REVISIONS_PATH,
            "histograms/Histograms.FIREFOX_AURORA_23_BASE.json",
        ] {
            let mut files = base.clone();
            files.0.remove(missing);
            let err = Mappings::load(&files).unwrap_err().to_string();
            assert!(err.contains(missing), "{missing}: {err}");
        }
    }

    #[test]
    fn one_file_shared_by_two_revisions_is_read_once() {
        let mut files = embedded_copy();
        set(
            &mut files,
            INDEX_PATH,
            br#"{"a55c55edf302": "Histograms.FIREFOX_AURORA_23_BASE.json", "0123456789ab": "Histograms.FIREFOX_AURORA_23_BASE.json"}"#,
        );
        let m = Mappings::load(&files).unwrap();
        assert_eq!(m.definitions.len(), 1);
        assert!(std::ptr::eq(
            m.definitions("a55c55edf302").unwrap(),
            m.definitions("0123456789ab").unwrap()
        ));
    }

    #[test]
    fn broken_definitions_warn_and_unused_files_warn() {
        let mut files = embedded_copy();
        set(
            &mut files,
            "histograms/Histograms.FIREFOX_AURORA_23_BASE.json",
            include_bytes!("../../tests/data/hist_spec_invalid_kind.json"),
        );
        set(&mut files, "histograms/Histograms.stray.json", b"{}");
        let m = Mappings::load(&files).unwrap();
        assert!(m.definitions("a55c55edf302").unwrap().is_empty());
        assert_eq!(
            m.warnings(),
            [
                "histograms/Histograms.FIREFOX_AURORA_23_BASE.json: histogram MY_HISTOGRAM skipped: unknown kind `bogus`",
                "histograms/Histograms.stray.json: not named in histograms/index.json, unused",
            ]
        );
    }

    #[test]
    fn with_schema_replaces_the_schema() {
        let cpp = Schema::from_json(
            include_bytes!("../../tests/data/cpp_test_telemetry_schema.json"),
            "cpp.json",
        )
        .unwrap();
        let m = Mappings::embedded().unwrap().clone().with_schema(cpp);
        assert_eq!(m.schema().len(), 7);
        assert_eq!(m.version(), Mappings::embedded().unwrap().version());
    }
}
