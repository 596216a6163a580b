//! Mappings read from a folder on disk (`--mappings DIR`).
//!
//! This module owns only the file-system side of [`MappingFiles`]: listing a folder
//! recursively and reading its files. What the files mean, and the checks, are in
//! [`crate::core::mappings`]. A folder replaces the embedded mappings, it does not
//! merge with them.

use std::fs;
use std::path::{Path, PathBuf};

use crate::core::mappings::{MappingFiles, MappingsError};

/// A mappings folder on disk.
#[derive(Debug, Clone)]
pub struct DirMappings {
    root: PathBuf,
}

impl DirMappings {
    /// The mappings folder at `path` (read when [`crate::core::mappings::Mappings::load`]
    /// lists it).
    pub fn new(path: impl Into<PathBuf>) -> DirMappings {
        DirMappings { root: path.into() }
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn io_error(path: &Path, source: std::io::Error) -> MappingsError {
        MappingsError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    fn walk(&self, dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<(), MappingsError> {
        let entries = fs::read_dir(dir).map_err(|e| Self::io_error(dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Self::io_error(dir, e))?;
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                return Err(MappingsError::Invalid {
                    file: path.display().to_string(),
                    reason: "file name is not valid utf-8".to_string(),
                });
            };
            // Follows symbolic links, so a linked file or folder counts as its target.
            let meta = fs::metadata(&path).map_err(|e| Self::io_error(&path, e))?;
            let rel = format!("{prefix}{name}");
            if meta.is_dir() {
                self.walk(&path, &format!("{rel}/"), out)?;
            } else if meta.is_file() {
                out.push(rel);
            }
        }
        Ok(())
    }
}

impl MappingFiles for DirMappings {
    fn list(&self) -> Result<Vec<String>, MappingsError> {
        let mut out = Vec::new();
        self.walk(&self.root, "", &mut out)?;
        out.sort();
        Ok(out)
    }

    fn read(&self, rel: &str) -> Result<Vec<u8>, MappingsError> {
        let path = self.root.join(rel);
        fs::read(&path).map_err(|e| Self::io_error(&path, e))
    }

    fn origin(&self, rel: &str) -> String {
        self.root.join(rel).display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::mappings::Mappings;

    fn copy_tree(from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        for entry in fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_tree(&entry.path(), &target);
            } else {
                fs::copy(entry.path(), target).unwrap();
            }
        }
    }

    fn repo_copy() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        copy_tree(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings"),
            dir.path(),
        );
        dir
    }

    #[test]
    fn a_copy_of_the_folder_has_the_embedded_version() {
        let dir = repo_copy();
        let m = Mappings::load(&DirMappings::new(dir.path())).unwrap();
        assert_eq!(m.version(), Mappings::embedded().unwrap().version());
        assert_eq!(m.definitions("a55c55edf302").unwrap().len(), 524);
        assert_eq!(m.schema().len(), 6);
    }

    #[test]
    fn one_byte_changes_the_version() {
        let dir = repo_copy();
        let path = dir.path().join("revisions.json");
        let mut bytes = fs::read(&path).unwrap();
        let at = bytes.windows(6).position(|w| w == b"Aurora").unwrap();
        bytes[at] = b'a';
        fs::write(&path, bytes).unwrap();
        let m = Mappings::load(&DirMappings::new(dir.path())).unwrap();
        assert_ne!(m.version(), Mappings::embedded().unwrap().version());
    }

    #[test]
    fn broken_files_are_named() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "telemetry_schema.json",
                "schema_invalid.json",
                "telemetry_schema.json: not a schema",
            ),
            (
                "histograms/Histograms.FIREFOX_AURORA_23_BASE.json",
                "invalid_json.txt",
                "histograms/Histograms.FIREFOX_AURORA_23_BASE.json: not valid json",
            ),
        ];
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        for (target, fixture, want) in cases {
            let dir = repo_copy();
            fs::copy(data.join(fixture), dir.path().join(target)).unwrap();
            let err = Mappings::load(&DirMappings::new(dir.path()))
                .unwrap_err()
                .to_string();
            let want = format!("{}/{want}", dir.path().display());
            assert!(err.starts_with(&want), "got {err:?}, want {want:?}");
        }
    }

    #[test]
    fn a_missing_definitions_file_is_named() {
        let dir = repo_copy();
        fs::remove_file(
            dir.path()
                .join("histograms/Histograms.FIREFOX_AURORA_23_BASE.json"),
        )
        .unwrap();
        let err = Mappings::load(&DirMappings::new(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("histograms/index.json: revision a55c55edf302"),
            "{err}"
        );
        assert!(
            err.contains("histograms/Histograms.FIREFOX_AURORA_23_BASE.json not found"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_folder_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("nope");
        let err = Mappings::load(&DirMappings::new(&gone)).unwrap_err();
        assert!(matches!(err, MappingsError::Io { .. }));
        assert_eq!(err.to_string(), format!("{}: cannot read", gone.display()));
        // An empty folder: the schema is the first thing missing.
        let err = Mappings::load(&DirMappings::new(dir.path()))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "{}: not found",
                dir.path().join("telemetry_schema.json").display()
            )
        );
    }

    #[test]
    fn the_folder_replaces_rather_than_merges() {
        // A folder with only a schema: nothing falls back to the embedded data.
        let dir = repo_copy();
        fs::remove_file(dir.path().join("revisions.json")).unwrap();
        let err = Mappings::load(&DirMappings::new(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("revisions.json: not found"), "{err}");
    }
}
