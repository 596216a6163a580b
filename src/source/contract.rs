//! The behaviour every [`Source`] backend must show, run by each backend's tests
//! (local in unit tests, HDFS in the integration tests against the real server).
//! Public but hidden from the docs so the integration tests can reach it.

use super::{is_hidden, Source, WalkItem};
use std::io::{Read, Seek, SeekFrom};

/// Checks `src`: the walk's order and skipping rules, and that each of `expected`
/// (path relative to the root, bytes) is listed with its size and reads back
/// exactly, whole and from seeks. `hidden` are paths that exist but must never be
/// listed.
pub fn run(src: &dyn Source, expected: &[(&str, &[u8])], hidden: &[&str]) {
    let mut folders = Vec::new();
    let mut listed = Vec::new();
    let mut whole = Vec::new();
    src.walk(&mut |item| {
        match item {
            WalkItem::Folder { dir, files } => {
                assert!(!files.is_empty(), "folder {dir:?} listed without files");
                let names: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
                let mut sorted = names.clone();
                sorted.sort();
                assert_eq!(names, sorted, "files of {dir:?} not sorted");
                for f in &files {
                    let parent = f.path.rsplit_once('/').map_or("", |(p, _)| p);
                    assert_eq!(parent, dir, "{} listed under {dir:?}", f.path);
                    assert!(
                        f.path.split('/').all(|s| !is_hidden(s)),
                        "{} is hidden",
                        f.path
                    );
                    listed.push((f.path.clone(), f.size));
                }
                whole.push(WalkItem::Folder {
                    dir: dir.clone(),
                    files: files.clone(),
                });
                folders.push(dir);
            }
            WalkItem::Unreadable { path, error } => panic!("{path} unreadable: {error}"),
        }
        true
    })
    .unwrap();
    // Folders come in pre-order: a folder before its sub-folders, siblings sorted.
    for w in folders.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        let b_is_inside_a = a.is_empty() || b.starts_with(&format!("{a}/"));
        assert!(b_is_inside_a || a < b, "folder {b:?} listed after {a:?}");
    }
    for h in hidden {
        assert!(!listed.iter().any(|(p, _)| p == h), "hidden {h} was listed");
    }
    // One folder alone lists what the walk gave for it, and nothing of its
    // sub-folders.
    for item in whole {
        let WalkItem::Folder { dir, .. } = &item else {
            continue;
        };
        if dir.is_empty() {
            continue;
        }
        assert_eq!(src.list_folder(dir).unwrap(), vec![item.clone()], "{dir}");
    }
    for (path, bytes) in expected {
        let size = listed
            .iter()
            .find(|(p, _)| p == path)
            .unwrap_or_else(|| panic!("{path} not listed"))
            .1;
        assert_eq!(size, bytes.len() as u64, "{path}: listed size");
        let mut r = src.open(path).unwrap();
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        assert!(all == *bytes, "{path}: bytes differ");
        for at in [bytes.len() / 2, bytes.len() / 3, 1, 0, bytes.len()] {
            let at = at.min(bytes.len());
            r.seek(SeekFrom::Start(at as u64)).unwrap();
            let mut buf = vec![0; 1000.min(bytes.len() - at)];
            r.read_exact(&mut buf).unwrap();
            assert!(buf == bytes[at..at + buf.len()], "{path}: read at {at}");
        }
    }
    assert!(src.open("no/such/file").is_err(), "a missing file opened");
}
