//! `HdfsSource` against a real Hadoop 2.7.3 NameNode + DataNode, started by
//! `scripts/test-servers.sh --hdfs -- cargo test --test tests hdfs` (which exports
//! `BACKFILL_TEST_HDFS` and `HADOOP_CONF_DIR`). The files are put there with Hadoop's
//! own tools (FsShell, SequenceFile.Writer), never with the code under test.
//!
//! Tests share one upload (JVM runs and file closes are slow on Hadoop 2.7); the
//! fault test stops the DataNode, so it holds the server exclusively.

use backfill::core::seqfile::SeqReader;
use backfill::source::hdfs::{HdfsOptions, HdfsSource};
use backfill::source::{FileEntry, Source, WalkItem};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/hadoop");
/// 1 MiB blocks on the test HDFS: the big file spans four of them.
const BIG_LEN: usize = 3 * (1 << 20) + 500_123;
/// `records.tsv` repeated this often makes the Hadoop-written file span three blocks.
const REPEAT: usize = 6;

/// Files put into HDFS: relative path → local fixture.
const PUT: [(&str, &str); 4] = [
    ("2013/10/10/part-m-00000", "seq-none-default.seq"),
    ("2013/10/10/part-m-00001", "seq-record-gzip.seq"),
    ("2013/10/11/part-m-00002", "seq-block-bzip2.seq"),
    ("2013/10/11/part-m-00000", "seq-block-default.seq"),
];
const BIG: &str = "2013/10/12/part-m-00000";
const HADOOP_WRITTEN: &str = "2013/10/14/part-r-00000";

struct Fixture {
    /// `hdfs://127.0.0.1:PORT/it-PID/data/telemetry`
    url: String,
    /// `hdfs://127.0.0.1:PORT/it-PID`
    top: String,
    /// `/it-PID`
    top_path: String,
    /// Local copies of what was put, by relative path.
    local: Vec<(String, PathBuf)>,
    _tmp: tempfile::TempDir,
}

/// Serialises the fault test (it stops the DataNode) against every other test.
static SERVER: RwLock<()> = RwLock::new(());

pub(crate) fn shared() -> RwLockReadGuard<'static, ()> {
    SERVER.read().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn exclusive() -> RwLockWriteGuard<'static, ()> {
    SERVER.write().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn server() -> String {
    match std::env::var("BACKFILL_TEST_HDFS") {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "BACKFILL_TEST_HDFS is not set: these tests need the real test HDFS; run them \
             through `scripts/test-servers.sh --hdfs -- cargo test --test tests hdfs`"
        ),
    }
}

/// Runs a script of `scripts/`, failing the test with its output when it fails.
pub(crate) fn script(name: &str, args: &[&str]) -> Command {
    let mut c = Command::new(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("scripts")
            .join(name),
    );
    c.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

pub(crate) fn check(mut c: Command) {
    let out = c.output().expect("run a script");
    assert!(
        out.status.success(),
        "{c:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Deterministic bytes (xorshift), so a mismatch reproduces.
fn noise(n: usize, mut x: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let base = server();
        let tmp = tempfile::tempdir().unwrap();
        let top = format!("it-{}", std::process::id());
        let root = tmp.path().join(&top).join("data/telemetry");
        let mut local = Vec::new();
        let place = |rel: &str, bytes: &[u8]| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, bytes).unwrap();
            p
        };
        for (rel, name) in PUT {
            let p = place(rel, &std::fs::read(Path::new(FIXTURES).join(name)).unwrap());
            local.push((rel.to_string(), p));
        }
        let p = place(BIG, &noise(BIG_LEN, 0x5eed));
        local.push((BIG.to_string(), p));
        // What a MapReduce job leaves beside its output, and must never be read.
        place("2013/10/10/_SUCCESS", b"");
        place("2013/10/11/_logs/history/job_1_conf.xml", b"<conf/>");
        place("_temporary/0/part-m-00000", b"partial");
        std::fs::create_dir_all(root.join("2013/10/13")).unwrap();
        // For the unreadable-folder test, beside the telemetry tree.
        let walkfault = tmp.path().join(&top).join("walkfault");
        for d in ["a", "c"] {
            std::fs::create_dir_all(walkfault.join(d)).unwrap();
            std::fs::write(walkfault.join(d).join("f"), d).unwrap();
        }
        std::fs::create_dir_all(walkfault.join("b/inner")).unwrap();
        let mut tsv = Vec::new();
        let records = std::fs::read(Path::new(FIXTURES).join("records.tsv")).unwrap();
        for _ in 0..REPEAT {
            tsv.extend_from_slice(&records);
        }
        let tsv_path = tmp.path().join("records.tsv");
        std::fs::write(&tsv_path, tsv).unwrap();

        // Two JVMs at once: FsShell -put of the tree, Hadoop's SequenceFile.Writer
        // straight into HDFS.
        let mut put = script(
            "hadoop-tool.sh",
            &["fs", "-put", tmp.path().join(&top).to_str().unwrap(), "/"],
        );
        let put = put.spawn().unwrap();
        let hdfs_out = format!("{base}/{top}/data/telemetry/{HADOOP_WRITTEN}");
        check(script(
            "write-seqfile.sh",
            &[tsv_path.to_str().unwrap(), &hdfs_out, "NONE"],
        ));
        let out = put.wait_with_output().unwrap();
        assert!(out.status.success(), "FsShell -put failed: {out:?}");

        // FsShell never copies `.crc` files, so this one is written with the client.
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let client = hdfs_native::ClientBuilder::new()
                .with_url(&base)
                .build()
                .unwrap();
            let path = format!("/{top}/data/telemetry/2013/10/10/.part-m-00000.crc");
            let mut w = client
                .create(&path, hdfs_native::WriteOptions::default())
                .await
                .unwrap();
            w.write_bytes(bytes::Bytes::from_static(b"crc\0\0\0\0"))
                .await
                .unwrap();
            w.close().await.unwrap();
        });
        Fixture {
            url: format!("{base}/{top}/data/telemetry"),
            top: format!("{base}/{top}"),
            top_path: format!("/{top}"),
            local,
            _tmp: tmp,
        }
    })
}

fn opts(read_size: u64) -> HdfsOptions {
    HdfsOptions {
        hdfs_read_size: read_size,
        hdfs_timeout: 20,
        ..HdfsOptions::default()
    }
}

fn source(o: &HdfsOptions) -> HdfsSource {
    HdfsSource::from_url(&fixture().url, o).unwrap()
}

fn walk(src: &dyn Source) -> Vec<WalkItem> {
    let mut items = Vec::new();
    src.walk(&mut |i| {
        items.push(i);
        true
    })
    .unwrap();
    items
}

fn read_all(src: &dyn Source, path: &str) -> Vec<u8> {
    let mut out = Vec::new();
    src.open(path).unwrap().read_to_end(&mut out).unwrap();
    out
}

#[test]
fn walk_lists_folder_by_folder_sorted_and_skips_hidden() {
    let _s = shared();
    let f = fixture();
    let src = source(&opts(8 << 20));
    assert_eq!(src.describe(), f.url);
    let hadoop_len = read_all(&src, HADOOP_WRITTEN).len() as u64;
    let size = |name: &str| {
        std::fs::metadata(Path::new(FIXTURES).join(name))
            .unwrap()
            .len()
    };
    let entry = |path: &str, size: u64| FileEntry {
        path: path.into(),
        size,
    };
    let want = vec![
        WalkItem::Folder {
            dir: "2013/10/10".into(),
            files: vec![
                entry("2013/10/10/part-m-00000", size("seq-none-default.seq")),
                entry("2013/10/10/part-m-00001", size("seq-record-gzip.seq")),
            ],
        },
        WalkItem::Folder {
            dir: "2013/10/11".into(),
            files: vec![
                entry("2013/10/11/part-m-00000", size("seq-block-default.seq")),
                entry("2013/10/11/part-m-00002", size("seq-block-bzip2.seq")),
            ],
        },
        WalkItem::Folder {
            dir: "2013/10/12".into(),
            files: vec![entry(BIG, BIG_LEN as u64)],
        },
        // 2013/10/13 is empty: no item.
        WalkItem::Folder {
            dir: "2013/10/14".into(),
            files: vec![entry(HADOOP_WRITTEN, hadoop_len)],
        },
    ];
    assert_eq!(walk(&src), want);

    // `false` from the visitor stops the walk.
    let mut seen = 0;
    src.walk(&mut |_| {
        seen += 1;
        false
    })
    .unwrap();
    assert_eq!(seen, 1);

    // A sub-folder as the root; its paths are relative to it.
    let sub = HdfsSource::from_url(&format!("{}/2013/10/", f.url), &opts(8 << 20)).unwrap();
    let dirs: Vec<String> = walk(&sub)
        .into_iter()
        .map(|i| match i {
            WalkItem::Folder { dir, .. } => dir,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(dirs, ["10", "11", "12", "14"]);
    assert_eq!(read_all(&sub, "10/part-m-00000"), read_all(&src, PUT[0].0));
}

#[test]
fn walk_reports_a_folder_it_cannot_list_and_goes_on() {
    let _s = shared();
    let f = fixture();
    let src = HdfsSource::from_url(&format!("{}/walkfault", f.top), &opts(8 << 20)).unwrap();
    // Folder `b` is listed by its parent, then removed before the walk reaches it.
    let b = format!("{}/walkfault/b", f.top_path);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = hdfs_native::ClientBuilder::new()
        .with_url(server())
        .build()
        .unwrap();
    let mut items = Vec::new();
    src.walk(&mut |i| {
        if matches!(&i, WalkItem::Folder { dir, .. } if dir == "a") {
            assert!(rt.block_on(client.delete(&b, true)).unwrap(), "delete {b}");
        }
        items.push(i);
        true
    })
    .unwrap();
    let file = |d: &str| WalkItem::Folder {
        dir: d.into(),
        files: vec![FileEntry {
            path: format!("{d}/f"),
            size: 1,
        }],
    };
    assert_eq!(items.len(), 3, "{items:?}");
    assert_eq!(items[0], file("a"));
    match &items[1] {
        WalkItem::Unreadable { path, error } => {
            assert_eq!(path, "b");
            assert!(error.contains(&format!("{}/walkfault/b", f.top)), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(items[2], file("c"));
}

#[test]
fn single_file_root_missing_paths_and_bad_paths() {
    let _s = shared();
    let f = fixture();
    let file_url = format!("{}/{}", f.url, PUT[2].0);
    let src = HdfsSource::from_url(&file_url, &opts(8 << 20)).unwrap();
    let local = std::fs::read(Path::new(FIXTURES).join(PUT[2].1)).unwrap();
    assert_eq!(
        walk(&src),
        vec![WalkItem::Folder {
            dir: String::new(),
            files: vec![FileEntry {
                path: "part-m-00002".into(),
                size: local.len() as u64
            }]
        }]
    );
    assert_eq!(read_all(&src, "part-m-00002"), local);

    let e = HdfsSource::from_url(&format!("{}/2099", f.url), &opts(8 << 20)).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("/data/telemetry/2099"), "{e}");

    let src = source(&opts(8 << 20));
    let e = src.open("2013/10/10/part-m-09999").err().unwrap();
    assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    assert!(
        e.to_string()
            .contains(&format!("{}/2013/10/10/part-m-09999", f.url)),
        "{e}"
    );
    for bad in ["../x", "/2013", "2013//10", ""] {
        let e = src.open(bad).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad}: {e}");
    }
}

/// Reads up to `len` bytes (fewer only at the end of the file).
fn read_at(r: &mut dyn Read, len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    r.take(len as u64).read_to_end(&mut out).unwrap();
    out
}

#[test]
fn hdfs_source_passes_the_source_contract() {
    let _s = shared();
    let f = fixture();
    let bytes: Vec<(String, Vec<u8>)> = f
        .local
        .iter()
        .map(|(rel, p)| (rel.clone(), std::fs::read(p).unwrap()))
        .collect();
    let expected: Vec<(&str, &[u8])> = bytes
        .iter()
        .map(|(r, b)| (r.as_str(), b.as_slice()))
        .collect();
    let hidden = [
        "2013/10/10/_SUCCESS",
        "2013/10/10/.part-m-00000.crc",
        "2013/10/11/_logs/history/job_1_conf.xml",
        "_temporary/0/part-m-00000",
    ];
    backfill::source::contract::run(&source(&opts(64 << 10)), &expected, &hidden);
}

#[test]
fn reads_match_the_local_files_whole_and_after_seeks() {
    let _s = shared();
    let f = fixture();
    // The smallest read size makes even these files many chunks.
    for o in [opts(64 << 10), opts(8 << 20)] {
        let src = source(&o);
        for (rel, local) in &f.local {
            let want = std::fs::read(local).unwrap();
            assert!(read_all(&src, rel) == want, "{rel}: whole file differs");

            let mut r = src.open(rel).unwrap();
            let mut x = 0x9e37_79b9_u64 ^ want.len() as u64;
            for _ in 0..40 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let at = (x >> 33) as usize % (want.len() + 10);
                let len = (x >> 7) as usize % 300_000;
                let pos = r.seek(SeekFrom::Start(at as u64)).unwrap();
                assert_eq!(pos, at as u64);
                let got = read_at(&mut r, len);
                let end = (at + len).min(want.len()).max(at.min(want.len()));
                assert!(
                    got == want[at.min(want.len())..end],
                    "{rel}: {len} bytes at {at} differ"
                );
                assert_eq!(r.stream_position().unwrap(), (at + got.len()) as u64);
            }
            // Relative and end-relative seeks; before the start is an error.
            assert_eq!(r.seek(SeekFrom::End(-10)).unwrap(), want.len() as u64 - 10);
            assert_eq!(read_at(&mut r, 100), want[want.len() - 10..]);
            assert_eq!(
                r.seek(SeekFrom::Current(-20)).unwrap(),
                want.len() as u64 - 20
            );
            assert_eq!(read_at(&mut r, 5), want[want.len() - 20..want.len() - 15]);
            assert!(r.seek(SeekFrom::Current(-(want.len() as i64))).is_err());
            assert_eq!(r.stream_position().unwrap(), want.len() as u64 - 15);
        }
    }
}

#[test]
fn multi_block_file_reads_across_block_boundaries() {
    let _s = shared();
    let want = noise(BIG_LEN, 0x5eed);
    for o in [opts(64 << 10), opts(1 << 20), opts(8 << 20)] {
        let src = source(&o);
        assert!(
            read_all(&src, BIG) == want,
            "whole multi-block file differs"
        );
        let mut r = src.open(BIG).unwrap();
        // Straddle each block boundary, going backwards so each seek leaves the chunks
        // read ahead.
        for b in (1..=3u64).rev() {
            let at = b * (1 << 20) - 7;
            r.seek(SeekFrom::Start(at)).unwrap();
            assert_eq!(
                read_at(&mut r, 14),
                want[at as usize..at as usize + 14],
                "block {b}"
            );
        }
        // Past the end: zero bytes, not an error.
        r.seek(SeekFrom::Start(BIG_LEN as u64 + 5)).unwrap();
        assert_eq!(r.read(&mut [0u8; 8]).unwrap(), 0);
    }
}

/// `records.tsv` as (key, value) pairs.
fn expected_records() -> Vec<(Vec<u8>, Vec<u8>)> {
    let text = std::fs::read_to_string(Path::new(FIXTURES).join("records.tsv")).unwrap();
    text.lines()
        .map(|l| {
            let (k, v) = l.split_once('\t').unwrap();
            (hex::decode(k).unwrap(), hex::decode(v).unwrap())
        })
        .collect()
}

#[test]
fn sequencefile_written_by_hadoop_into_hdfs_reads_back_whole_and_in_splits() {
    let _s = shared();
    let one = expected_records();
    let want: Vec<_> = (0..REPEAT).flat_map(|_| one.iter().cloned()).collect();
    let src = source(&opts(1 << 20));
    let len = read_all(&src, HADOOP_WRITTEN).len() as u64;
    assert!(
        len > 2 << 20,
        "the file should span several 1 MiB blocks: {len}"
    );

    let read = |start: u64, end: u64| {
        let mut r = SeqReader::open_split(src.open(HADOOP_WRITTEN).unwrap(), start, end).unwrap();
        let mut got = Vec::new();
        while let Some(rec) = r.next_record().unwrap() {
            got.push((rec.key, rec.value));
        }
        got
    };
    let whole = read(0, len);
    assert_eq!(whole.len(), want.len());
    assert!(whole == want, "records differ from records.tsv x{REPEAT}");

    // Splits at arbitrary cut points (across block boundaries) yield every record
    // exactly once, in order.
    for cuts in [
        vec![0, 1 << 20, 2 << 20, len],
        vec![0, 777_777, 1_500_001, 2_345_678, len],
    ] {
        let mut all = Vec::new();
        for w in cuts.windows(2) {
            all.extend(read(w[0], w[1]));
        }
        assert!(all == want, "splits at {cuts:?} differ");
    }
}

#[test]
fn read_rate_is_capped() {
    let _s = shared();
    let want = noise(BIG_LEN, 0x5eed);
    let o = HdfsOptions {
        max_read_rate: Some(2.0),
        ..opts(1 << 20)
    };
    let src = source(&o);
    let t = std::time::Instant::now();
    assert!(read_all(&src, BIG) == want);
    // 3.6 MB at 2 MB/s with a one-second burst: at least 0.8 s.
    let took = t.elapsed().as_secs_f64();
    assert!(
        took >= 0.75,
        "read {BIG_LEN} bytes in {took:.2} s at 2 MB/s"
    );
}

/// Restarts the DataNode when dropped, so a failing assertion leaves the server
/// usable for the tests after it.
pub(crate) struct DataNodeDown;

impl DataNodeDown {
    pub(crate) fn stop() -> DataNodeDown {
        check(script("hdfs.sh", &["datanode-stop"]));
        DataNodeDown
    }
}

impl Drop for DataNodeDown {
    fn drop(&mut self) {
        let out = script("hdfs.sh", &["datanode-start"]).output();
        if !std::thread::panicking() {
            let out = out.unwrap();
            assert!(out.status.success(), "datanode-start: {out:?}");
        }
    }
}

#[test]
fn datanode_stopped_mid_read_fails_naming_file_and_offset_or_recovers() {
    let f = fixture();
    let _x = exclusive();
    let want = noise(BIG_LEN, 0x5eed);
    let name = format!("{}/{BIG}", f.url);

    // No retries: the read must fail, never end short.
    let quick = source(&HdfsOptions {
        hdfs_retries: 0,
        ..opts(64 << 10)
    });
    // Enough retries (about 40 s of backoff) to outlast a DataNode restart.
    let patient = source(&HdfsOptions {
        hdfs_retries: 12,
        ..opts(64 << 10)
    });
    let mut a = quick.open(BIG).unwrap();
    let mut b = patient.open(BIG).unwrap();
    let head = 100_000;
    assert_eq!(read_at(&mut a, head), want[..head]);
    assert_eq!(read_at(&mut b, head), want[..head]);

    let down = DataNodeDown::stop();
    let mut rest = Vec::new();
    let e = a.read_to_end(&mut rest).unwrap_err();
    let msg = e.to_string();
    eprintln!("read with the DataNode down: {msg}");
    assert!(msg.contains(&name), "{msg}");
    let offset: u64 = msg
        .split("at offset ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no offset in {msg:?}"));
    // What did arrive is the file's bytes, up to the failed chunk.
    let got = head + rest.len();
    assert_eq!(offset, got as u64, "{msg}");
    assert!(got < BIG_LEN, "{msg}");
    assert!(rest == want[head..got], "bytes before the failure differ");
    // Asking again fails again at the same place: nothing is skipped.
    let e2 = a.read(&mut [0u8; 16]).unwrap_err();
    assert!(e2.to_string().contains(&name), "{e2}");
    assert_eq!(a.stream_position().unwrap(), got as u64);

    // The patient reader waits while the DataNode comes back (on new ports), then
    // finishes with the right bytes.
    let restart = std::thread::spawn(move || drop(down));
    let mut rest = Vec::new();
    b.read_to_end(&mut rest).unwrap();
    restart.join().unwrap();
    assert!(rest == want[head..], "bytes after recovery differ");
}

/// Puts `gen/data` into HDFS under a fresh folder named after `name` and this
/// process; returns the source URL of its `data`.
pub(crate) fn put_data(gen: &Path, name: &str) -> String {
    let hdfs = server();
    let dir = format!("/{name}-{}", std::process::id());
    check(script("hadoop-tool.sh", &["fs", "-mkdir", "-p", &dir]));
    check(script(
        "hadoop-tool.sh",
        &[
            "fs",
            "-put",
            gen.join("data").to_str().unwrap(),
            &format!("{hdfs}{dir}/"),
        ],
    ));
    format!("{hdfs}{dir}/data")
}
