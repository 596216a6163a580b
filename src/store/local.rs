//! A destination in a local directory. Writes go to a hidden temporary file in the
//! target folder, are flushed with `sync_all`, renamed over the key and the folder is
//! fsynced, so a crash leaves either the old object, the new one, or a hidden temp
//! file that listings ignore, never a torn object.

use super::{check_key, ObjectMeta, ObjectWriter, Store};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Prefix of temporary files; listings skip names starting with it.
const TMP_PREFIX: &str = ".tmp.";

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A store rooted at a local directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// Where a listing of `prefix` starts: the deepest folder the prefix names (the
    /// walk then filters by prefix).
    fn list_start(&self, prefix: &str) -> PathBuf {
        match prefix.rfind('/') {
            Some(i) if i > 0 => self.root.join(&prefix[..i]),
            _ => self.root.clone(),
        }
    }

    /// A store at `root`, created if missing.
    pub fn new(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root)?;
        let root = fs::canonicalize(&root)?;
        Ok(LocalStore { root })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> io::Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }
}

/// Renames `from` over `to` and fsyncs the folder, so the rename itself is durable.
pub fn rename_durably(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)?;
    if let Some(dir) = to.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

struct LocalWriter {
    file: Option<BufWriter<File>>,
    tmp: PathBuf,
    dest: PathBuf,
    written: u64,
}

impl Write for LocalWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.as_mut().expect("open until commit").write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("open until commit").flush()
    }
}

impl ObjectWriter for LocalWriter {
    fn commit(mut self: Box<Self>) -> io::Result<u64> {
        let file = self.file.take().expect("commit once");
        let file = file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        rename_durably(&self.tmp, &self.dest)?;
        Ok(self.written)
    }

    fn finish(mut self: Box<Self>) -> io::Result<(u64, Option<PendingRename>)> {
        let file = self.file.take().expect("finish once");
        file.into_inner().map_err(|e| e.into_error())?;
        let pending = PendingRename {
            tmp: std::mem::take(&mut self.tmp),
            dest: std::mem::take(&mut self.dest),
            done: false,
        };
        Ok((self.written, Some(pending)))
    }
}

/// A local object written to its temporary file and closed, waiting to be renamed
/// over its key by [`Store::publish`]. Dropping it removes the temporary file.
#[derive(Debug)]
pub struct PendingRename {
    tmp: PathBuf,
    dest: PathBuf,
    done: bool,
}

impl PendingRename {
    /// Renames it into place (no durability barrier: `publish` provides that).
    pub fn rename(mut self) -> io::Result<()> {
        fs::rename(&self.tmp, &self.dest)?;
        self.done = true;
        Ok(())
    }
}

impl Drop for PendingRename {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Flushes every dirty page of the file system holding `dir` (one barrier for a
/// batch of files instead of an fsync each).
fn sync_filesystem(dir: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = File::open(dir)?;
    // SAFETY: syncfs takes a valid open descriptor, which `f` holds for the call.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

impl Store for LocalStore {
    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn create(&self, key: &str) -> io::Result<Box<dyn ObjectWriter>> {
        let dest = self.path(key)?;
        let dir = dest.parent().expect("key has a file name");
        fs::create_dir_all(dir)?;
        let name = dest
            .file_name()
            .expect("key has a file name")
            .to_string_lossy();
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!("{TMP_PREFIX}{}.{n}.{name}", std::process::id()));
        let file = File::create(&tmp)?;
        Ok(Box::new(LocalWriter {
            file: Some(BufWriter::with_capacity(1 << 20, file)),
            tmp,
            dest,
            written: 0,
        }))
    }

    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> io::Result<bool> {
        let dest = self.path(key)?;
        let dir = dest.parent().expect("key has a file name");
        fs::create_dir_all(dir)?;
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!("{TMP_PREFIX}{}.{n}.excl", std::process::id()));
        let mut f = File::create(&tmp)?;
        let written = f.write_all(bytes).and_then(|_| f.sync_all());
        drop(f);
        // link(2) fails with EEXIST when the name is taken, and publishes the whole
        // file at once when it is not: create-if-absent with the content in place.
        let linked = written.and_then(|_| fs::hard_link(&tmp, &dest));
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                File::open(dir)?.sync_all()?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn modified(&self, key: &str) -> io::Result<Option<u64>> {
        match fs::metadata(self.path(key)?) {
            Ok(m) => Ok(Some(
                m.modified()?
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn open(&self, key: &str) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(File::open(self.path(key)?)?))
    }

    fn read_range(&self, key: &str, start: u64, len: u64) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        self.read_range_into(key, start, len, &mut v)?;
        Ok(v)
    }

    fn read_range_into(
        &self,
        key: &str,
        start: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> io::Result<()> {
        let mut f = File::open(self.path(key)?)?;
        f.seek(SeekFrom::Start(start))?;
        buf.clear();
        // Reads into the spare capacity: a reused buffer is neither zeroed nor
        // reallocated, and with room for the whole range one read does.
        buf.reserve(len as usize);
        let got = f.take(len).read_to_end(buf)?;
        if got as u64 != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{key}: reading {len} bytes at {start}: the file has {got} there"),
            ));
        }
        Ok(())
    }

    fn list_each(
        &self,
        prefix: &str,
        f: &mut dyn FnMut(ObjectMeta) -> io::Result<()>,
    ) -> io::Result<()> {
        walk(&self.root, &self.list_start(prefix), prefix, f)
    }

    fn is_local(&self) -> bool {
        true
    }

    fn publish(&self, pending: Vec<PendingRename>) -> io::Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        // Data first, then names: no key ever names bytes not yet on disk.
        sync_filesystem(&self.root)?;
        for p in pending {
            p.rename()?;
        }
        sync_filesystem(&self.root)
    }

    fn remove_incomplete(&self, owned: &dyn Fn(&str) -> bool, dry_run: bool) -> io::Result<u64> {
        let mut removed = 0;
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir)? {
                let entry = entry?;
                let path = entry.path();
                if entry.file_type()?.is_dir() {
                    stack.push(path);
                    continue;
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(rest) = name.strip_prefix(TMP_PREFIX) else {
                    continue;
                };
                // `.tmp.<pid>.<n>.<name>`: a writer on this machine that is gone.
                let mut parts = rest.splitn(3, '.');
                let (Some(pid), Some(_), Some(target)) = (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                let alive = Path::new("/proc").join(pid).exists();
                let rel = path
                    .with_file_name(target)
                    .strip_prefix(&self.root)
                    .map(|p| p.to_string_lossy().replace(std::path::MAIN_SEPARATOR, "/"))
                    .unwrap_or_default();
                if !alive && owned(&rel) {
                    // Through `delete`, which also prunes folders left empty.
                    let key = path
                        .strip_prefix(&self.root)
                        .map(|p| p.to_string_lossy().replace(std::path::MAIN_SEPARATOR, "/"))
                        .unwrap_or_default();
                    if !dry_run {
                        self.delete(&key)?;
                    }
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    fn delete(&self, key: &str) -> io::Result<()> {
        let path = self.path(key)?;
        match fs::remove_file(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            r => r?,
        }
        // Folders exist only for their objects: prune the ones left empty, as an
        // object store would show them, up to (not including) the root.
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }
}

fn walk(
    root: &Path,
    dir: &Path,
    prefix: &str,
    f: &mut dyn FnMut(ObjectMeta) -> io::Result<()>,
) -> io::Result<()> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in rd {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(TMP_PREFIX) {
            continue;
        }
        let path = entry.path();
        let ft = entry.file_type()?;
        let key = path
            .strip_prefix(root)
            .expect("under root")
            .to_string_lossy()
            .replace(std::path::MAIN_SEPARATOR, "/");
        if ft.is_dir() {
            // Only descend where the prefix can still match.
            let as_dir = format!("{key}/");
            if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                walk(root, &path, prefix, f)?;
            }
        } else if key.starts_with(prefix) {
            f(ObjectMeta {
                key,
                size: entry.metadata()?.len(),
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("dest")).unwrap();
        crate::store::contract::run(&store);
    }

    #[test]
    fn incomplete_writes_of_dead_writers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        fs::create_dir_all(dir.path().join("a")).unwrap();
        // A crashed writer (pid that cannot exist) and a live one (us).
        fs::write(dir.path().join("a/.tmp.4294967295.0.obj.xz"), b"x").unwrap();
        fs::write(dir.path().join("a/.tmp.4294967295.1.other.xz"), b"x").unwrap();
        let w = store.create("a/live.xz").unwrap();
        assert_eq!(
            store
                .remove_incomplete(&|k| k.starts_with("a/") && !k.ends_with("other.xz"), false)
                .unwrap(),
            1
        );
        let mut left: Vec<String> = fs::read_dir(dir.path().join("a"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(left.iter().any(|n| n.ends_with("other.xz")));
        drop(w);
    }

    #[test]
    fn abandoned_and_committed_writes_leave_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let mut w = store.create("x/y").unwrap();
        w.write_all(b"1").unwrap();
        w.commit().unwrap();
        drop(store.create("x/z").unwrap());
        let names: Vec<_> = fs::read_dir(dir.path().join("x"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("y")]);
    }
}
