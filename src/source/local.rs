//! Legacy files in a local directory (or a single local file).

use super::{is_hidden, FileEntry, ReadSeek, Source, WalkItem};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// A source rooted at a local directory or file.
#[derive(Debug, Clone)]
pub struct LocalSource {
    root: PathBuf,
    single_file: bool,
}

impl LocalSource {
    /// A source at `root`; it must exist.
    pub fn new(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        let meta = fs::metadata(&root)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", root.display())))?;
        // Absolute, so the job record names the same source from any directory.
        let root = fs::canonicalize(&root)?;
        Ok(LocalSource {
            single_file: meta.is_file(),
            root,
        })
    }

    fn walk_dir(&self, dir: &Path, rel: &str, visit: &mut dyn FnMut(WalkItem) -> bool) -> bool {
        let mut files = Vec::new();
        let mut dirs = Vec::new();
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) => {
                return visit(WalkItem::Unreadable {
                    path: rel.to_string(),
                    error: e.to_string(),
                })
            }
        };
        for entry in rd {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    if !visit(WalkItem::Unreadable {
                        path: rel.to_string(),
                        error: e.to_string(),
                    }) {
                        return false;
                    }
                    continue;
                }
            };
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_hidden(&name) {
                continue;
            }
            let child = join(rel, &name);
            // Follow symlinks, as a user pointing at a folder of links expects.
            match fs::metadata(entry.path()) {
                Ok(m) if m.is_dir() => dirs.push(name),
                Ok(m) => files.push(FileEntry {
                    path: child,
                    size: m.len(),
                }),
                Err(e) => {
                    if !visit(WalkItem::Unreadable {
                        path: child,
                        error: e.to_string(),
                    }) {
                        return false;
                    }
                }
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        dirs.sort();
        if !files.is_empty()
            && !visit(WalkItem::Folder {
                dir: rel.to_string(),
                files,
            })
        {
            return false;
        }
        for d in dirs {
            if !self.walk_dir(&dir.join(&d), &join(rel, &d), visit) {
                return false;
            }
        }
        true
    }
}

fn join(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_string()
    } else {
        format!("{rel}/{name}")
    }
}

impl Source for LocalSource {
    fn list_folder(&self, dir: &str) -> io::Result<Vec<WalkItem>> {
        if self.single_file || dir.split('/').any(|s| s == "..") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad folder {dir:?} for {}", self.describe()),
            ));
        }
        let mut items = Vec::new();
        self.walk_dir(&self.root.join(dir), dir, &mut |i| {
            let done = matches!(&i, WalkItem::Folder { dir: d, .. } if d == dir);
            items.push(i);
            !done
        });
        Ok(super::items_of_folder(dir, items))
    }

    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn walk(&self, visit: &mut dyn FnMut(WalkItem) -> bool) -> io::Result<()> {
        if self.single_file {
            let size = fs::metadata(&self.root)?.len();
            let name = self
                .root
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            visit(WalkItem::Folder {
                dir: String::new(),
                files: vec![FileEntry { path: name, size }],
            });
            return Ok(());
        }
        self.walk_dir(&self.root, "", visit);
        Ok(())
    }

    fn open(&self, path: &str) -> io::Result<Box<dyn ReadSeek>> {
        let full = if self.single_file {
            self.root.clone()
        } else {
            if path.split('/').any(|s| s == ".." || s.is_empty()) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("bad path {path:?}"),
                ));
            }
            self.root.join(path)
        };
        crate::failpoint::io("source-open")?;
        let f = fs::File::open(&full)?;
        Ok(Box::new(Injectable(f)))
    }
}

/// A local file whose reads and seeks pass the failpoints `source-read` and
/// `source-seek` (see [`crate::failpoint`]), so tests can make a source fail in the
/// middle of a unit.
struct Injectable(fs::File);

impl io::Read for Injectable {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        crate::failpoint::io("source-read")?;
        self.0.read(buf)
    }
}

impl io::Seek for Injectable {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        crate::failpoint::io("source-seek")?;
        self.0.seek(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(src: &LocalSource) -> Vec<WalkItem> {
        let mut items = Vec::new();
        src.walk(&mut |i| {
            items.push(i);
            true
        })
        .unwrap();
        items
    }

    #[test]
    fn walks_folder_by_folder_sorted_skipping_hidden() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        for f in [
            "2013/10/11/part-m-00001",
            "2013/10/11/part-m-00000",
            "2013/10/11/_SUCCESS",
            "2013/10/11/.part-m-00000.crc",
            "2013/10/10/part-r-00000",
            "_logs/x",
            "top",
        ] {
            let path = p.join(f);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, f).unwrap();
        }
        let src = LocalSource::new(p).unwrap();
        let items = collect(&src);
        let got: Vec<(String, Vec<String>)> = items
            .into_iter()
            .map(|i| match i {
                WalkItem::Folder { dir, files } => {
                    (dir, files.into_iter().map(|f| f.path).collect())
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("".to_string(), vec!["top".to_string()]),
                (
                    "2013/10/10".to_string(),
                    vec!["2013/10/10/part-r-00000".to_string()]
                ),
                (
                    "2013/10/11".to_string(),
                    vec![
                        "2013/10/11/part-m-00000".to_string(),
                        "2013/10/11/part-m-00001".to_string()
                    ]
                ),
            ]
        );
        let mut r = src.open("2013/10/10/part-r-00000").unwrap();
        let mut s = String::new();
        std::io::Read::read_to_string(&mut r, &mut s).unwrap();
        assert_eq!(s, "2013/10/10/part-r-00000");
        assert!(src.open("../etc/passwd").is_err());
    }

    #[test]
    fn contract() {
        let d = tempfile::tempdir().unwrap();
        let files: Vec<(&str, Vec<u8>)> = vec![
            ("top", b"top".to_vec()),
            (
                "a/2013/10/10/part-m-00000",
                (0..5000u32).flat_map(|i| i.to_le_bytes()).collect(),
            ),
            ("a/2013/10/10/part-m-00001", b"x".repeat(3000)),
            ("a/2013/10/11/part-m-00000", b"y".repeat(10)),
            ("b/part", b"z".to_vec()),
        ];
        let hidden = [
            "a/2013/10/10/_SUCCESS",
            "a/2013/10/10/.part-m-00000.crc",
            "_logs/x",
            "a/_tmp/p",
        ];
        for (p, bytes) in &files {
            let path = d.path().join(p);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, bytes).unwrap();
        }
        for p in hidden {
            let path = d.path().join(p);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, b"hidden").unwrap();
        }
        let expected: Vec<(&str, &[u8])> = files.iter().map(|(p, b)| (*p, b.as_slice())).collect();
        crate::source::contract::run(&LocalSource::new(d.path()).unwrap(), &expected, &hidden);
    }

    #[test]
    fn single_file_source() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("dump.txt");
        fs::write(&f, b"abc").unwrap();
        let src = LocalSource::new(&f).unwrap();
        assert_eq!(
            collect(&src),
            vec![WalkItem::Folder {
                dir: String::new(),
                files: vec![FileEntry {
                    path: "dump.txt".into(),
                    size: 3
                }]
            }]
        );
        assert!(src.open("dump.txt").is_ok());
    }
}
