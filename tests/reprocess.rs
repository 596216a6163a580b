//! `backfill reprocess`: a store of the new layout run again after a schema or
//! mapping change. Each test states what TO must hold from the records it wrote
//! (partitions computed here, not by the tool), and proves parity with `verify`.

use crate::common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const DAYS: [&str; 2] = ["20131010", "20131011"];

/// Two days × two files of 40 records; every 9th is bad (cycling through the
/// reasons), and with `no_revision` every 7th good one has no `info.revision`
/// (so the shipped revision table leaves it `missing_revision`).
fn dataset(root: &Path, no_revision: bool) -> Vec<Rec> {
    write_days(root, &DAYS, 2, 40, |n, i, day| {
        if i % 9 == 4 {
            bad(n, day)
        } else if no_revision && i % 7 == 3 {
            let mut r = good(n, day);
            let v = String::from_utf8(r.value).unwrap();
            r.value = v
                .replace(&format!(r#","revision":"{REV}""#), "")
                .into_bytes();
            r.expect = Err("missing_revision");
            r
        } else {
            good(n, day)
        }
    })
}

/// Runs `backfill [--mappings M] reprocess FROM TO -q --report R ARGS`; returns the
/// output and the report.
fn reprocess(
    mappings: Option<&Path>,
    from: &str,
    to: &str,
    report: &Path,
    extra: &[&str],
) -> (Out, serde_json::Value) {
    let mut args: Vec<&str> = Vec::new();
    if let Some(m) = mappings {
        args.extend(["--mappings", m.to_str().unwrap()]);
    }
    args.extend([
        "reprocess",
        from,
        to,
        "-q",
        "--jobs",
        "2",
        "--report",
        report.to_str().unwrap(),
    ]);
    args.extend_from_slice(extra);
    let out = backfill(&args);
    let rep = std::fs::read(report)
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap_or(serde_json::Value::Null);
    (out, rep)
}

/// `verify --reprocess --deep` of a reprocess job: exit 0 (parity).
fn verify_parity(mappings: Option<&Path>, from: &str, to: &str, extra: &[&str]) {
    let mut args: Vec<&str> = Vec::new();
    if let Some(m) = mappings {
        args.extend(["--mappings", m.to_str().unwrap()]);
    }
    args.extend(["verify", from, to, "--reprocess", "--deep", "-q"]);
    args.extend_from_slice(extra);
    let out = backfill(&args);
    assert_eq!(out.code, 0, "verify: {}", out.stderr);
}

/// Every line under `root` (objects only), by partition, sorted.
fn lines_by_partition(root: &Path) -> BTreeMap<String, Vec<(String, String)>> {
    let mut m: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (key, bytes) in objects(root) {
        m.entry(partition_of(&key))
            .or_default()
            .extend(lines(&bytes));
    }
    for v in m.values_mut() {
        v.sort();
    }
    m
}

/// The doc ids each partition must hold: the good records, routed by `route`.
fn expected(recs: &[Rec], route: impl Fn(&str) -> String) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in recs {
        if let Ok(p) = &r.expect {
            let id = String::from_utf8(r.key[9..].to_vec()).unwrap();
            m.entry(route(p)).or_default().push(id);
        }
    }
    for v in m.values_mut() {
        v.sort();
    }
    m
}

fn ids(by: &BTreeMap<String, Vec<(String, String)>>) -> BTreeMap<String, Vec<String>> {
    by.iter()
        .map(|(p, v)| (p.clone(), v.iter().map(|l| l.0.clone()).collect()))
        .collect()
}

/// A copy of the shipped mappings with `edit` applied to one file.
fn mappings_with(dir: &Path, file: &str, edit: impl Fn(serde_json::Value) -> serde_json::Value) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
    copy_dir(&src, dir);
    let p = dir.join(file);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    std::fs::write(&p, serde_json::to_vec_pretty(&edit(v)).unwrap()).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dst = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dst);
        } else {
            std::fs::copy(&p, &dst).unwrap();
        }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Exports the dataset into `t/from`; returns its records and FROM.
fn exported(t: &Path, mappings: Option<&Path>, no_revision: bool) -> (Vec<Rec>, PathBuf) {
    let src = t.join("src");
    let recs = dataset(&src, no_revision);
    let from = t.join("from");
    let mut args: Vec<&str> = Vec::new();
    if let Some(m) = mappings {
        args.extend(["--mappings", m.to_str().unwrap()]);
    }
    args.extend(["export", s(&src), s(&from), "-q", "--jobs", "2"]);
    let out = backfill(&args);
    assert_eq!(out.code, 0, "export: {}", out.stderr);
    (recs, from)
}

#[test]
fn same_mappings_give_the_same_records_line_for_line() {
    let t = tmp();
    let (recs, from) = exported(t.path(), None, false);
    let to = t.path().join("to");
    let (out, rep) = reprocess(None, s(&from), s(&to), &t.path().join("r.json"), &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);

    let want = expected(&recs, str::to_string);
    let got = lines_by_partition(&to);
    assert_eq!(
        ids(&got),
        want,
        "TO holds exactly the good records, by partition"
    );
    assert_eq!(got, lines_by_partition(&from), "every line byte-identical");
    let good = want.values().map(Vec::len).sum::<usize>() as u64;
    assert_eq!(rep["records_in"], good);
    assert_eq!(rep["records_out"], good);
    assert_eq!(rep["records_error"], 0);
    assert_eq!(rep["changes"]["unchanged"], good);
    assert_eq!(rep["moved"]["records"], 0);
    assert!(rep["complete"].as_bool().unwrap());
    // One object per partition and day however many objects were read.
    assert_eq!(rep["objects"].as_u64().unwrap(), want.len() as u64);
    verify_parity(None, s(&from), s(&to), &[]);

    // A rerun finds the job done and writes nothing.
    let before = digests(&to);
    let (out, rep) = reprocess(None, s(&from), s(&to), &t.path().join("r2.json"), &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(rep["units_run"], 0);
    assert_eq!(digests(&to), before);

    // Into FROM itself: only with another layout version, beside the old objects.
    let r = t.path().join("r3.json");
    let (out, _) = reprocess(None, s(&from), s(&from), &r, &[]);
    assert_eq!(out.code, 1, "TO = FROM with one layout is refused");
    assert!(out.stderr.contains("--layout-version 3"), "{}", out.stderr);
    let old = digests(&from);
    let (out, rep) = reprocess(
        None,
        s(&from),
        s(&from),
        &r,
        &["--layout-version", "3", "--errors"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(rep["records_in"].as_u64().unwrap(), recs.len() as u64);
    let now = digests(&from);
    for (k, v) in &old {
        assert_eq!(now.get(k), Some(v), "old object {k} untouched");
    }
    let v3: BTreeMap<String, Vec<(String, String)>> = lines_by_partition(&from)
        .into_iter()
        .filter_map(|(p, l)| {
            p.strip_suffix(".v3.log")
                .map(|h| (format!("{h}.v2.log"), l))
        })
        .collect();
    assert_eq!(
        v3,
        lines_by_partition(&to),
        "the v3 layout holds the same lines"
    );
    verify_parity(
        None,
        s(&from),
        s(&from),
        &["--errors", "--layout-version", "3"],
    );
}

#[test]
fn a_narrower_schema_moves_records_to_other_and_a_wider_one_brings_them_back() {
    let t = tmp();
    let narrow = t.path().join("narrow");
    mappings_with(&narrow, "telemetry_schema.json", |mut v| {
        for d in v["dimensions"].as_array_mut().unwrap() {
            if d["field_name"] == "appUpdateChannel" {
                d["allowed_values"] = serde_json::json!(["release"]);
            }
        }
        v
    });
    // The channel is the third segment of a partition.
    let narrowed = |p: &str| {
        let mut segs: Vec<&str> = p.split('/').collect();
        if segs[2] != "release" {
            segs[2] = "OTHER";
        }
        segs.join("/")
    };
    let (recs, from) = exported(t.path(), None, false);

    // Narrowing: FROM (shipped schema) → TO (release only).
    let to = t.path().join("to");
    let (out, rep) = reprocess(
        Some(&narrow),
        s(&from),
        s(&to),
        &t.path().join("r.json"),
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let want_narrow = expected(&recs, narrowed);
    assert!(want_narrow.keys().any(|p| p.contains("/OTHER/")));
    assert_eq!(ids(&lines_by_partition(&to)), want_narrow);
    let good: u64 = want_narrow.values().map(|v| v.len() as u64).sum();
    let moving = recs
        .iter()
        .filter(|r| matches!(&r.expect, Ok(p) if narrowed(p) != *p))
        .count() as u64;
    assert!(moving > 0);
    assert_eq!(rep["moved"]["records"], moving);
    assert_eq!(rep["changes"]["unchanged"], good - moving);
    let listed: u64 = rep["moved"]["largest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert!(p["to"].as_str().unwrap().contains("/OTHER/"), "{p}");
            p["records"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(listed, moving, "every pair listed (fewer than the cap)");
    verify_parity(Some(&narrow), s(&from), s(&to), &[]);

    // Widening: the narrowed store (TO) → the shipped schema again: records leave
    // OTHER for their own channel, since `info` kept it.
    let back = t.path().join("back");
    let (out, rep) = reprocess(None, s(&to), s(&back), &t.path().join("b.json"), &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        ids(&lines_by_partition(&back)),
        expected(&recs, str::to_string)
    );
    assert_eq!(lines_by_partition(&back), lines_by_partition(&from));
    assert_eq!(rep["moved"]["records"], moving);
    verify_parity(None, s(&to), s(&back), &[]);
}

#[test]
fn a_new_revision_table_rescues_missing_revision_records_from_the_error_output() {
    let t = tmp();
    let (recs, from) = exported(t.path(), None, true);
    let missing = recs
        .iter()
        .filter(|r| r.expect == Err("missing_revision"))
        .count() as u64;
    assert!(missing > 0);
    // The build ranges of the dataset's records, for every channel and version.
    let table = t.path().join("table");
    mappings_with(&table, "revisions.json", |v| {
        let mut list = v.as_array().unwrap().clone();
        for channel in ["release", "beta", "aurora", "nightly"] {
            for version in ["22.0", "23.0a2", "24.0a1"] {
                list.push(serde_json::json!({
                    "appName": "Firefox", "appUpdateChannel": channel, "appVersion": version,
                    "buildid_min": "20130901000000", "buildid_max": "20130930235959",
                    "revision": "a55c55edf302", "note": "test builds",
                }));
            }
        }
        serde_json::Value::Array(list)
    });
    let to = t.path().join("to");
    let (out, rep) = reprocess(
        Some(&table),
        s(&from),
        s(&to),
        &t.path().join("r.json"),
        &["--errors"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        rep["changes"]["accepted_from_errors"]["missing_revision"],
        missing
    );
    assert!(
        rep["errors_by_reason"].get("missing_revision").is_none(),
        "{rep}"
    );
    let bad = recs.iter().filter(|r| r.expect.is_err()).count() as u64 - missing;
    assert_eq!(
        rep["records_error"], bad,
        "the other rejections stay rejected"
    );
    assert_eq!(rep["records_in"], recs.len() as u64);
    // Where the rescued records go: where they would have gone with a revision.
    let mut all = recs.clone();
    for r in &mut all {
        if r.expect == Err("missing_revision") {
            let v: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
            let i = &v["info"];
            let day = std::str::from_utf8(&r.key[1..9]).unwrap();
            r.expect = Ok(expected_partition(
                i["reason"].as_str().unwrap(),
                i["appUpdateChannel"].as_str().unwrap(),
                i["appVersion"].as_str().unwrap(),
                i["appBuildID"].as_str().unwrap(),
                day,
            ));
        }
    }
    assert_eq!(
        ids(&lines_by_partition(&to)),
        expected(&all, str::to_string)
    );
    verify_parity(Some(&table), s(&from), s(&to), &["--errors"]);

    // Without --errors the error output is not read: only the written records.
    let plain = t.path().join("plain");
    let (out, rep) = reprocess(
        Some(&table),
        s(&from),
        s(&plain),
        &t.path().join("p.json"),
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(rep["records_in"], recs.len() as u64 - missing - bad);
}

#[test]
fn the_old_servers_published_file_comes_back_json_equal() {
    let t = tmp();
    let from = t.path().join("from");
    // The real file (copied from the fixtures, see tests/data/FIXTURES.md), under the
    // key such files had (tests/data/published_v2_s3_keys.txt).
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/published_v2_ss-ff-n-22.lzma");
    let key = "saved_session/Firefox/nightly/22.0a1/20130226031002.20131011.v2.log.e28a4032eb744f089a1828ac7399e5d8.lzma";
    let dst = from.join(key);
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::copy(&fixture, &dst).unwrap();
    let old = lines(&std::fs::read(&dst).unwrap());
    assert!(!old.is_empty());

    let to = t.path().join("to");
    let (out, rep) = reprocess(None, s(&from), s(&to), &t.path().join("r.json"), &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(rep["records_out"], old.len() as u64, "{rep}");
    let got = lines_by_partition(&to);
    let mut n = 0;
    for (doc, json) in &old {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        let i = &v["info"];
        // The partition the record's own info names, on the day of its file.
        let want = expected_partition(
            v["info"]["reason"].as_str().unwrap_or("saved-session"),
            i["appUpdateChannel"].as_str().unwrap(),
            i["appVersion"].as_str().unwrap(),
            i["appBuildID"].as_str().unwrap(),
            "20131011",
        );
        let line = got[&want]
            .iter()
            .find(|l| &l.0 == doc)
            .unwrap_or_else(|| panic!("{doc} not in {want}"));
        let back: serde_json::Value = serde_json::from_str(&line.1).unwrap();
        assert_eq!(back, v, "{doc}: JSON-equal");
        assert!(!line.1.contains(": "), "written compact");
        n += 1;
    }
    assert_eq!(n, got.values().map(Vec::len).sum::<usize>());
    assert_eq!(
        rep["changes"]["rewritten"],
        old.len() as u64,
        "re-serialised"
    );
    verify_parity(None, s(&from), s(&to), &[]);
}

#[test]
fn killed_during_reprocess_then_rerun_gives_the_same_store() {
    let t = tmp();
    let (_, from) = exported(t.path(), None, false);
    let reference = t.path().join("reference");
    let (out, want_rep) = reprocess(
        None,
        s(&from),
        s(&reference),
        &t.path().join("ref.json"),
        &["--errors"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let want = digests(&reference);
    for (trial, point) in [
        "unit-staged@3=kill",
        "objects-published@1=kill",
        "manifest-written@1=kill",
    ]
    .into_iter()
    .enumerate()
    {
        let to = t.path().join(format!("to{trial}"));
        let report = t.path().join(format!("k{trial}.json"));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_backfill"))
            .args([
                "reprocess",
                s(&from),
                s(&to),
                "-q",
                "--jobs",
                "2",
                "--errors",
                "--report",
                s(&report),
            ])
            .env("BACKFILL_FAILPOINTS", point)
            .output()
            .unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&out.status),
            Some(9),
            "{point}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (out, rep) = reprocess(
            None,
            s(&from),
            s(&to),
            &report,
            &["--errors", "--orphan-grace", "0"],
        );
        assert_eq!(out.code, 0, "{point}: {}", out.stderr);
        assert_eq!(
            digests(&to),
            want,
            "{point}: byte-identical to an uninterrupted run"
        );
        for k in [
            "records_in",
            "records_out",
            "records_error",
            "objects",
            "changes",
        ] {
            assert_eq!(rep[k], want_rep[k], "{point}: {k}");
        }
    }
}

#[test]
fn from_s3_to_local_and_from_local_to_s3() {
    let endpoint = crate::s3::env().endpoint;
    let s3 = ["--endpoint-url", endpoint.as_str(), "--path-style"];
    let t = tmp();
    let src = t.path().join("src");
    let recs = dataset(&src, false);
    let bucket = crate::s3::fresh_bucket("reprocess");
    let from_s3 = format!("s3://{bucket}/from");
    let mut args = vec!["export", s(&src), from_s3.as_str(), "-q", "--jobs", "2"];
    args.extend(s3);
    let out = backfill(&args);
    assert_eq!(out.code, 0, "export: {}", out.stderr);

    // S3 → local.
    let local = t.path().join("local");
    let (out, rep) = reprocess(None, &from_s3, s(&local), &t.path().join("a.json"), &s3);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        ids(&lines_by_partition(&local)),
        expected(&recs, str::to_string)
    );
    verify_parity(None, &from_s3, s(&local), &s3);

    // Local → S3: the same objects, byte for byte, under TO's prefix.
    let to_s3 = format!("s3://{bucket}/to");
    let (out, rep2) = reprocess(None, s(&local), &to_s3, &t.path().join("b.json"), &s3);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for k in ["records_in", "records_out", "objects", "partitions"] {
        assert_eq!(rep2[k], rep[k], "{k}");
    }
    let ours = crate::e2e::s3_digests(&to_s3, &endpoint, false);
    let theirs = digests(&local);
    let content = |m: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        // Names carry each job's id; the partitions and bytes must agree.
        m.iter()
            .map(|(k, v)| (partition_of(k), v.clone()))
            .collect()
    };
    assert_eq!(content(&ours), content(&theirs));
    verify_parity(None, s(&local), &to_s3, &s3);
}

#[test]
fn stored_lines_rejected_now_replay_as_stored_lines() {
    let t = tmp();
    // An old server's file with one good line, one that is not JSON and one whose
    // doc id is not a UUID.
    let from = t.path().join("from");
    let key = "saved_session/Firefox/nightly/22.0a1/20130901030201.20131011.v2.log.0a1b2c3d.xz";
    let good = good(7, "20131011");
    let json = String::from_utf8(good.value.clone()).unwrap();
    let id = doc_id(7);
    let raw = format!(
        "{id}\t{json}\n{}\tnot json\nnot-a-uuid\t{json}\n",
        doc_id(8)
    );
    let p = from.join(key);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let mut enc = xz2::write::XzEncoder::new(Vec::new(), 1);
    std::io::Write::write_all(&mut enc, raw.as_bytes()).unwrap();
    std::fs::write(&p, enc.finish().unwrap()).unwrap();

    let to = t.path().join("to");
    let (out, rep) = reprocess(None, s(&from), s(&to), &t.path().join("a.json"), &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(rep["records_out"], 1);
    assert_eq!(rep["changes"]["newly_rejected"]["invalid_json"], 1);
    assert_eq!(rep["changes"]["newly_rejected"]["invalid_key"], 1);
    assert_eq!(
        ids(&lines_by_partition(&to)),
        expected(&[good], str::to_string)
    );

    // TO's error output replays the two lines as lines of that day (their keys are
    // doc ids, not row keys): judged again for the same reasons.
    let again = t.path().join("again");
    let (out, rep) = reprocess(
        None,
        s(&to),
        s(&again),
        &t.path().join("b.json"),
        &["--errors"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(rep["records_in"], 3);
    assert_eq!(rep["errors_by_reason"]["invalid_json"], 1);
    assert_eq!(rep["errors_by_reason"]["invalid_key"], 1);
    assert_eq!(
        rep["changes"]["accepted_from_errors"],
        serde_json::Value::Null
    );
    verify_parity(None, s(&to), s(&again), &["--errors"]);
}
