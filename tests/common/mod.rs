//! Helpers shared by the integration tests: datasets, running the binary, reading a
//! destination back with the project's own store reader.

#![allow(dead_code)]

use backfill::core::newstore::{open_object, StoreLineReader};
use backfill::core::rowkey;
use backfill::core::seqfile::{Codec, Compression, SeqWriter, SeqWriterOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const REV: &str = "http://hg.mozilla.org/releases/mozilla-aurora/rev/a55c55edf302";

/// A doc id made from a number.
pub fn doc_id(n: u64) -> String {
    let h = format!(
        "{:032x}",
        (n as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5cbe_dd11)
    );
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A valid classic payload with the given dimensions.
pub fn payload(reason: &str, channel: &str, version: &str, build: &str) -> String {
    format!(
        r#"{{"ver":1,"info":{{"reason":"{reason}","appName":"Firefox","appUpdateChannel":"{channel}","appVersion":"{version}","appBuildID":"{build}","revision":"{REV}","OS":"Linux"}},"simpleMeasurements":{{"uptime":12,"main":345}},"histograms":{{"A11Y_INSTANTIATED_FLAG":{{"range":[1,2],"bucket_count":3,"histogram_type":3,"values":{{"0":1,"1":0}},"sum":0,"sum_squares_lo":0,"sum_squares_hi":0}},"NOT_IN_DEFINITIONS":{{"values":{{"1":1}}}}}}}}"#
    )
}

/// The partition the tool must route `payload(reason, channel, version, build)` of
/// `day` to, computed here independently of the tool's code.
pub fn expected_partition(
    reason: &str,
    channel: &str,
    version: &str,
    build: &str,
    day: &str,
) -> String {
    let clean = |s: &str, file: bool| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || (c == '.' && !file) {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!(
        "{}/Firefox/{}/{}/{}.{}.v2.log",
        clean(reason, false),
        clean(channel, false),
        clean(version, false),
        clean(build, true),
        day
    )
}

/// One generated record and where it must end up.
#[derive(Clone, Debug)]
pub struct Rec {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// `Ok(partition)` or `Err(reason)`.
    pub expect: Result<String, &'static str>,
}

/// A good record.
pub fn good(n: u64, day: &str) -> Rec {
    let reasons = ["saved-session", "idle-daily"];
    let channels = ["release", "beta", "aurora", "nightly"];
    let versions = ["22.0", "23.0a2", "24.0a1"];
    let reason = reasons[(n % 2) as usize];
    let channel = channels[(n / 2 % 4) as usize];
    let version = versions[(n / 8 % 3) as usize];
    let build = format!("201309{:02}030201", 1 + n % 5);
    Rec {
        key: rowkey::build(day, &doc_id(n)),
        value: payload(reason, channel, version, &build).into_bytes(),
        expect: Ok(expected_partition(reason, channel, version, &build, day)),
    }
}

/// A bad record of each kind, cycling.
pub fn bad(n: u64, day: &str) -> Rec {
    let key = rowkey::build(day, &doc_id(n));
    let (key, value, reason): (Vec<u8>, Vec<u8>, &str) = match n % 6 {
        0 => (b"short key".to_vec(), b"{}".to_vec(), "invalid_key"),
        1 => (
            key,
            b"{\"ver\":1,\"info\":{\"x\":\"\xff\"}}".to_vec(),
            "corrupted_data",
        ),
        2 => (key, b"invalid json data".to_vec(), "invalid_json"),
        3 => (
            key,
            br#"{"ver":4,"info":{}}"#.to_vec(),
            "unsupported_version",
        ),
        4 => (key, br#"{"ver":1}"#.to_vec(), "missing_info"),
        _ => (
            key,
            payload("saved-session", "nightly", "22.0", "20130901030201")
                .replace(r#""0":1"#, r#""0":-1"#)
                .into_bytes(),
            "invalid_count",
        ),
    };
    Rec {
        key,
        value,
        expect: Err(reason),
    }
}

/// Writes records as a SequenceFile.
pub fn write_seq(path: &Path, recs: &[Rec], compression: Compression) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let f = std::fs::File::create(path).unwrap();
    let mut opts = SeqWriterOptions::new(compression, [7; 16]);
    opts.block_size = 2 << 10;
    let mut w = SeqWriter::new(std::io::BufWriter::new(f), opts).unwrap();
    for r in recs {
        w.append(&r.key, &r.value).unwrap();
    }
    w.finish().unwrap();
}

/// Block-compressed zlib, the usual Pig output.
pub const BLOCK: Compression = Compression::Block(Codec::Default);

/// Writes `files` block-compressed SequenceFiles of `per_file` records into each
/// day's folder (`day_dir`); `make(n, i, day)` gives record `i` of its file, `n`
/// counting across the whole dataset from 1. Returns every record written.
pub fn write_days(
    root: &Path,
    days: &[&str],
    files: u64,
    per_file: u64,
    mut make: impl FnMut(u64, u64, &str) -> Rec,
) -> Vec<Rec> {
    let mut all = Vec::new();
    let mut n = 0;
    for day in days {
        for f in 0..files {
            let recs: Vec<Rec> = (0..per_file)
                .map(|i| {
                    n += 1;
                    make(n, i, day)
                })
                .collect();
            write_seq(
                &day_dir(root, day).join(format!("part-m-{f:05}")),
                &recs,
                BLOCK,
            );
            all.extend(recs);
        }
    }
    all
}

/// Result of running the binary.
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `backfill ARGS`.
pub fn backfill(args: &[&str]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_backfill"))
        .args(args)
        .output()
        .expect("run backfill");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs an export with extra args and a report; returns the output and the report.
pub fn export(src: &Path, dest: &Path, extra: &[&str]) -> (Out, serde_json::Value) {
    let report = dest.with_extension("report.json");
    let mut args = vec![
        "export",
        src.to_str().unwrap(),
        dest.to_str().unwrap(),
        "-q",
        "--report",
        report.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = backfill(&args);
    let rep = std::fs::read(&report)
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap_or(serde_json::Value::Null);
    (out, rep)
}

/// Every file under `root` (relative path → bytes), skipping `_backfill/`.
pub fn objects(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel == "_backfill" {
                continue;
            }
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    if root.exists() {
        walk(root, root, &mut out);
    }
    out
}

/// sha256 of every object under `root` (`_backfill/` skipped), by key.
pub fn digests(root: &Path) -> BTreeMap<String, String> {
    use sha2::Digest;
    objects(root)
        .into_iter()
        .map(|(k, v)| (k, hex::encode(sha2::Sha256::digest(&v))))
        .collect()
}

/// Decodes one object into (doc id, json) lines.
pub fn lines(bytes: &[u8]) -> Vec<(String, String)> {
    let r = open_object(bytes).unwrap();
    StoreLineReader::new(r)
        .map(|l| {
            let l = l.unwrap();
            (
                String::from_utf8(l.doc_id).unwrap(),
                String::from_utf8(l.json).unwrap(),
            )
        })
        .collect()
}

/// The partition of an object key (the key without `.<suffix>.xz`).
pub fn partition_of(key: &str) -> String {
    let stem = key.strip_suffix(".xz").expect("objects end in .xz");
    stem.rsplit_once('.').unwrap().0.to_string()
}

/// A fresh temporary directory.
pub fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// `dir/data/telemetry/yyyy/MM/dd` for a day `yyyyMMdd`.
pub fn day_dir(root: &Path, day: &str) -> PathBuf {
    root.join("data/telemetry")
        .join(&day[..4])
        .join(&day[4..6])
        .join(&day[6..8])
}
