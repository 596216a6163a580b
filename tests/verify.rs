//! `backfill verify` on local stores: a clean export passes at every depth, and each
//! fault planted in a copy of it fails with exit 4 and is named.
//!
//! One export is made once and copied for each test (a copy is a few hundred KB).

use crate::common::*;
use backfill::core::rowkey;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const DAYS: [&str; 2] = ["20131010", "20131011"];
const CHANNELS: [&str; 3] = ["release", "beta", "nightly"];

/// Records of a day that go to three partitions, several lines each.
pub(crate) fn day_records(day: &str, first: u64, n: u64) -> Vec<Rec> {
    (first..first + n)
        .map(|i| {
            if i % 9 == 4 {
                return bad(i, day);
            }
            let channel = CHANNELS[(i % 3) as usize];
            Rec {
                key: rowkey::build(day, &doc_id(i)),
                value: payload("saved-session", channel, "22.0", "20130901030201").into_bytes(),
                expect: Ok(expected_partition(
                    "saved-session",
                    channel,
                    "22.0",
                    "20130901030201",
                    day,
                )),
            }
        })
        .collect()
}

/// Two days, two files each; one record filed in the folder of the day before its
/// own, and one doc id twice (a real duplicate of the source, which stays).
pub(crate) fn dataset(root: &Path) {
    let mut n = 0;
    for day in DAYS {
        for f in 0..2 {
            let mut recs = day_records(day, n, 30);
            n += 30;
            if day == DAYS[0] && f == 0 {
                recs.extend(day_records(DAYS[1], 1000, 1));
                recs.push(recs[0].clone());
            }
            write_seq(
                &day_dir(root, day).join(format!("part-m-{f:05}")),
                &recs,
                BLOCK,
            );
        }
    }
}

struct Fixture {
    src: PathBuf,
    dest: PathBuf,
    _tmp: tempfile::TempDir,
}

/// The source and its export, made once.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let t = tmp();
        let src = t.path().join("src");
        let dest = t.path().join("dest");
        dataset(&src);
        let (out, _) = export(&src, &dest, &["--jobs", "2"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        Fixture { src, dest, _tmp: t }
    })
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// A copy of the exported store (and of the source, which some tests change).
struct Copy {
    src: PathBuf,
    dest: PathBuf,
    _tmp: tempfile::TempDir,
}

fn copy() -> Copy {
    let f = fixture();
    let t = tmp();
    let (src, dest) = (t.path().join("src"), t.path().join("dest"));
    copy_dir(&f.src, &src);
    copy_dir(&f.dest, &dest);
    Copy { src, dest, _tmp: t }
}

/// Runs `backfill verify SRC DEST EXTRA…` with a report; returns it with the output.
pub(crate) fn verify(src: &str, dest: &str, extra: &[&str]) -> (Out, serde_json::Value) {
    let dir = tmp();
    let report = dir.path().join("verify.json");
    let mut args = vec!["verify", src, dest, "--report", report.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = backfill(&args);
    let rep = std::fs::read(&report)
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap_or(serde_json::Value::Null);
    (out, rep)
}

fn run(c: &Copy, extra: &[&str]) -> (Out, serde_json::Value) {
    verify(c.src.to_str().unwrap(), c.dest.to_str().unwrap(), extra)
}

/// Asserts exit 4 with `kind` in the report and `needle` in a message of that kind.
#[track_caller]
pub(crate) fn assert_fault(out: &Out, rep: &serde_json::Value, kind: &str, needle: &str) {
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert_eq!(rep["parity"], false);
    let faults = rep["faults"].as_array().unwrap();
    assert!(
        faults
            .iter()
            .any(|f| f["kind"] == kind && f["message"].as_str().unwrap().contains(needle)),
        "no {kind} fault naming {needle:?} in {faults:#?}"
    );
    assert!(
        out.stderr.contains(kind) && out.stderr.contains(needle),
        "{}",
        out.stderr
    );
}

#[track_caller]
pub(crate) fn assert_parity(out: &Out, rep: &serde_json::Value) {
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(rep["parity"], true, "{rep:#}");
    assert_eq!(rep["faults_total"], 0);
}

/// The object with the most lines (relative key), and its lines.
pub(crate) fn fullest(dest: &Path) -> (String, Vec<(String, String)>) {
    objects(dest)
        .into_iter()
        .map(|(k, v)| (k, lines(&v)))
        .max_by_key(|(k, l)| (l.len(), k.clone()))
        .unwrap()
}

pub(crate) fn encode(lines: &[(String, String)]) -> Vec<u8> {
    let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
    for (id, json) in lines {
        writeln!(e, "{id}\t{json}").unwrap();
    }
    e.finish().unwrap()
}

/// Rewrites an object's lines.
fn rewrite(dest: &Path, key: &str, f: impl FnOnce(&mut Vec<(String, String)>)) {
    let p = dest.join(key);
    let mut l = lines(&std::fs::read(&p).unwrap());
    f(&mut l);
    std::fs::write(&p, encode(&l)).unwrap();
}

#[test]
fn verify_clean_store_passes_at_every_depth() {
    let c = copy();
    let (out, rep) = run(&c, &[]);
    assert_parity(&out, &rep);
    assert_eq!(rep["mode"], "default");
    assert!(rep["objects_checked"].as_u64().unwrap() > 6);
    // The table names both days and the totals.
    for day in DAYS {
        assert!(out.stderr.contains(day), "{}", out.stderr);
    }
    assert!(out.stderr.contains("parity:"), "{}", out.stderr);

    let (out, rep) = run(&c, &["--deep", "--jobs", "2"]);
    assert_parity(&out, &rep);
    let t = &rep["totals"];
    // 120 records + the one filed a day early + the source's duplicate; every ninth bad.
    assert_eq!(t["source_records"], 122);
    assert_eq!(t["rejected"], 13);
    assert_eq!(t["written"], 109);
    assert_eq!(t["dest_records"], 109);
    assert_eq!(rep["source_stats"]["records_in"], 122);
    let parts = rep["partitions"].as_array().unwrap();
    assert!(parts.len() >= 6, "{parts:?}");
    assert!(parts
        .iter()
        .all(|p| p["source_records"] == p["dest_records"] && p["objects"].as_u64() > Some(0)));
}

#[test]
fn verify_counts_another_writers_object_apart() {
    let c = copy();
    let (key, l) = fullest(&c.dest);
    let other = format!("{}.ingest-0f0f0f0f-0.xz", partition_of(&key));
    std::fs::write(c.dest.join(&other), encode(&l[..1])).unwrap();
    for extra in [&[][..], &["--deep"][..]] {
        let (out, rep) = run(&c, extra);
        assert_parity(&out, &rep);
        assert_eq!(rep["other_writers"]["objects"], 1, "{extra:?}");
        assert_eq!(rep["other_writers"]["keys"][0], other.as_str());
        assert!(
            out.stderr.contains("1 objects of other writers"),
            "{}",
            out.stderr
        );
    }
}

#[test]
fn verify_finds_a_deleted_object() {
    let c = copy();
    let (key, l) = fullest(&c.dest);
    std::fs::remove_file(c.dest.join(&key)).unwrap();
    let (out, rep) = run(&c, &[]);
    assert_fault(&out, &rep, "missing_object", &key);
    let (out, rep) = run(&c, &["--deep"]);
    assert_fault(
        &out,
        &rep,
        "records_differ",
        &format!("{} missing", l.len()),
    );
}

#[test]
fn verify_finds_a_removed_line() {
    let c = copy();
    let (key, l) = fullest(&c.dest);
    let gone = l[1].0.clone();
    rewrite(&c.dest, &key, |l| {
        l.remove(1);
    });
    let (out, rep) = run(&c, &[]);
    assert_fault(&out, &rep, "size_mismatch", &key);
    let (out, rep) = run(&c, &["--deep"]);
    assert_fault(&out, &rep, "records_differ", &format!("1 missing ({gone})"));
    let p = rep["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["missing"]["count"] == 1)
        .unwrap();
    assert_eq!(p["missing"]["ids"][0], gone.as_str());
    assert_eq!(p["partition"], partition_of(&key).as_str());
}

#[test]
fn verify_finds_an_added_line_with_a_new_doc_id() {
    let c = copy();
    let (key, _) = fullest(&c.dest);
    let new = doc_id(99_999);
    rewrite(&c.dest, &key, |l| {
        let json = l[0].1.clone();
        l.push((new.clone(), json));
    });
    let (out, rep) = run(&c, &["--deep"]);
    assert_fault(
        &out,
        &rep,
        "records_differ",
        &format!("1 extra (doc id not in the source) ({new})"),
    );
}

#[test]
fn verify_finds_a_changed_record() {
    let c = copy();
    let (key, l) = fullest(&c.dest);
    let id = l[2].0.clone();
    rewrite(&c.dest, &key, |l| {
        l[2].1 = l[2].1.replacen("\"uptime\":12", "\"uptime\":13", 1);
    });
    let (out, rep) = run(&c, &["--deep"]);
    assert_fault(
        &out,
        &rep,
        "records_differ",
        &format!("1 with other content ({id})"),
    );
}

#[test]
fn verify_finds_a_duplicated_line() {
    let c = copy();
    let (key, l) = fullest(&c.dest);
    let id = l[0].0.clone();
    rewrite(&c.dest, &key, |l| {
        let first = l[0].clone();
        l.push(first);
    });
    let (out, rep) = run(&c, &["--deep"]);
    assert_fault(
        &out,
        &rep,
        "records_differ",
        &format!("1 duplicated (more often than in the source) ({id})"),
    );
}

#[test]
fn verify_names_a_truncated_object() {
    let c = copy();
    let (key, _) = fullest(&c.dest);
    let p = c.dest.join(&key);
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let (out, rep) = run(&c, &[]);
    assert_fault(&out, &rep, "size_mismatch", &key);
    let (out, rep) = run(&c, &["--deep"]);
    assert_fault(&out, &rep, "object_unreadable", &key);
}

#[test]
fn verify_finds_an_orphan_of_this_job() {
    let c = copy();
    let (key, _) = fullest(&c.dest);
    // The same object under a part number no manifest lists.
    let stem = key.strip_suffix(".xz").unwrap();
    let (head, _) = stem.rsplit_once('-').unwrap();
    let orphan = format!("{head}-7.xz");
    std::fs::copy(c.dest.join(&key), c.dest.join(&orphan)).unwrap();
    let (out, rep) = run(&c, &[]);
    assert_fault(&out, &rep, "orphan", &orphan);
}

#[test]
fn verify_deep_does_not_trust_a_manifest_rewritten_to_match() {
    let c = copy();
    let (key, l) = fullest(&c.dest);
    let id = l[0].0.clone();
    rewrite(&c.dest, &key, |l| {
        l[0].1 = l[0].1.replacen("\"uptime\":12", "\"uptime\":99", 1);
    });
    // The bookkeeping made to agree with the changed object.
    let bytes = std::fs::read(c.dest.join(&key)).unwrap();
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    let manifests = c.dest.join("_backfill/manifests");
    let mut fixed = 0;
    for job in std::fs::read_dir(&manifests).unwrap() {
        for m in std::fs::read_dir(job.unwrap().path()).unwrap() {
            let p = m.unwrap().path();
            let mut v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            for o in v["objects"].as_array_mut().unwrap() {
                if o["key"] == key.as_str() {
                    o["sha256"] = sha.clone().into();
                    o["bytes"] = (bytes.len() as u64).into();
                    fixed += 1;
                }
            }
            std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
        }
    }
    assert_eq!(fixed, 1);
    // The default mode trusts the manifests' hashes: it cannot see this.
    let (out, rep) = run(&c, &[]);
    assert_parity(&out, &rep);
    let (out, rep) = run(&c, &["--deep"]);
    assert_fault(
        &out,
        &rep,
        "records_differ",
        &format!("1 with other content ({id})"),
    );
}

#[test]
fn verify_finds_a_source_file_added_after_the_export() {
    let c = copy();
    let added = "data/telemetry/2013/10/11/part-m-00002";
    write_seq(&c.src.join(added), &day_records(DAYS[1], 5000, 5), BLOCK);
    let (out, rep) = run(&c, &[]);
    assert_fault(&out, &rep, "uncovered_unit", added);
    let (out, rep) = run(&c, &["--deep"]);
    assert_fault(&out, &rep, "records_differ", "missing");
}

#[test]
fn verify_calls_a_job_with_staging_left_incomplete() {
    let c = copy();
    let (_, rep) = run(&c, &[]);
    let job = rep["job"].as_str().unwrap().to_string();
    let staged = c.dest.join(format!("_backfill/staging/{job}/g/u.json"));
    std::fs::create_dir_all(staged.parent().unwrap()).unwrap();
    std::fs::write(&staged, b"{}").unwrap();
    let (out, rep) = run(&c, &["--deep"]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert_eq!(rep["parity"], false);
    assert!(
        rep["incomplete"].as_str().unwrap().contains("staged"),
        "{rep:#}"
    );
    assert!(
        out.stderr.contains("finish the export first"),
        "{}",
        out.stderr
    );
}

#[test]
fn verify_finds_a_rejected_record_missing_from_the_error_output() {
    let c = copy();
    let errors = c.dest.join("_backfill/errors");
    let job = std::fs::read_dir(&errors)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let obj = std::fs::read_dir(&job)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut text = String::new();
    use std::io::Read;
    xz2::read::XzDecoder::new(&std::fs::read(&obj).unwrap()[..])
        .read_to_string(&mut text)
        .unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let rest: String = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
    let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
    e.write_all(rest.as_bytes()).unwrap();
    std::fs::write(&obj, e.finish().unwrap()).unwrap();
    let (out, rep) = run(&c, &["--deep"]);
    let at = format!(
        "{} offset {}",
        first["file"].as_str().unwrap(),
        first["offset"]
    );
    assert_fault(&out, &rep, "error_output_differs", &at);
}

#[test]
fn verify_with_other_job_settings_names_the_missing_job() {
    let c = copy();
    let (out, rep) = run(&c, &["--xz-preset", "6"]);
    assert_fault(&out, &rep, "job_record", "holds no job");
}

/// `--endpoint-url … --path-style` for the test S3.
fn s3_args(endpoint: &str) -> Vec<&str> {
    vec!["--endpoint-url", endpoint, "--path-style"]
}

#[test]
fn verify_s3_destination_clean_then_a_deleted_and_a_changed_object() {
    use backfill::store::s3::{S3Options, S3Store};
    use backfill::store::Store;
    let endpoint = crate::s3::env().endpoint;
    let f = fixture();
    let bucket = crate::s3::fresh_bucket("verify");
    let dest = format!("s3://{bucket}/t");
    let mut args = vec!["export", f.src.to_str().unwrap(), &dest, "-q"];
    args.extend(s3_args(&endpoint));
    let out = backfill(&args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let src = f.src.to_str().unwrap();
    let (out, rep) = verify(src, &dest, &s3_args(&endpoint));
    assert_parity(&out, &rep);
    assert!(rep["objects_checked"].as_u64().unwrap() > 6);
    let mut deep = s3_args(&endpoint);
    deep.push("--deep");
    let (out, rep) = verify(src, &dest, &deep);
    assert_parity(&out, &rep);
    assert_eq!(rep["totals"]["dest_records"], 109);

    let store = S3Store::from_url(
        &dest,
        &S3Options {
            endpoint_url: Some(endpoint.clone()),
            path_style: true,
            ..S3Options::default()
        },
        Default::default(),
    )
    .unwrap();
    // The same objects as in the local export: change two of them.
    let (key, l) = fullest(&f.dest);
    let id = l[0].0.clone();
    let mut changed = l.clone();
    changed[0].1 = changed[0].1.replacen("\"uptime\":12", "\"uptime\":77", 1);
    store.put(&key, &encode(&changed)).unwrap();
    let (out, rep) = verify(src, &dest, &deep);
    assert_fault(&out, &rep, "size_mismatch", &key);
    assert_fault(
        &out,
        &rep,
        "records_differ",
        &format!("1 with other content ({id})"),
    );

    let other = objects(&f.dest).into_keys().find(|k| *k != key).unwrap();
    store.delete(&other).unwrap();
    let (out, rep) = verify(src, &dest, &s3_args(&endpoint));
    assert_fault(&out, &rep, "missing_object", &other);
}

#[test]
fn verify_hdfs_source_clean_then_an_added_file_and_a_changed_record() {
    let _hdfs = crate::hdfs::shared();
    let f = fixture();
    let src = crate::hdfs::put_data(&f.src, "verify");
    let t = tmp();
    let dest = t.path().join("dest");
    let out = backfill(&["export", &src, dest.to_str().unwrap(), "-q"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let d = dest.to_str().unwrap();
    let (out, rep) = verify(&src, d, &[]);
    assert_parity(&out, &rep);
    let (out, rep) = verify(&src, d, &["--deep"]);
    assert_parity(&out, &rep);
    assert_eq!(rep["totals"]["source_records"], 122);

    // A changed record in a copy of the destination.
    let changed = t.path().join("changed");
    copy_dir(&dest, &changed);
    let (key, l) = fullest(&changed);
    let id = l[3].0.clone();
    rewrite(&changed, &key, |l| {
        l[3].1 = l[3].1.replacen("\"uptime\":12", "\"uptime\":21", 1);
    });
    let (out, rep) = verify(&src, changed.to_str().unwrap(), &["--deep"]);
    assert_fault(
        &out,
        &rep,
        "records_differ",
        &format!("1 with other content ({id})"),
    );

    // A file added to HDFS after the export.
    let extra = t.path().join("part-m-00009");
    write_seq(&extra, &day_records(DAYS[0], 7000, 4), BLOCK);
    crate::hdfs::check(crate::hdfs::script(
        "hadoop-tool.sh",
        &[
            "fs",
            "-put",
            extra.to_str().unwrap(),
            &format!("{src}/telemetry/2013/10/10/part-m-00009"),
        ],
    ));
    let (out, rep) = verify(&src, d, &[]);
    assert_fault(
        &out,
        &rep,
        "uncovered_unit",
        "telemetry/2013/10/10/part-m-00009",
    );
}

/// Changes one record of `key` and rewrites its manifest entry to match, so only a
/// record-level comparison can see it. Returns the changed doc id.
fn change_behind_the_manifest(dest: &Path, key: &str) -> String {
    let mut id = String::new();
    rewrite(dest, key, |l| {
        id = l[0].0.clone();
        l[0].1 = l[0].1.replacen("\"uptime\":12", "\"uptime\":98", 1);
    });
    let bytes = std::fs::read(dest.join(key)).unwrap();
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    let dir = std::fs::read_dir(dest.join("_backfill/manifests"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for m in std::fs::read_dir(dir).unwrap() {
        let p = m.unwrap().path();
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        for o in v["objects"].as_array_mut().unwrap() {
            if o["key"] == key {
                o["sha256"] = sha.clone().into();
                o["bytes"] = (bytes.len() as u64).into();
            }
        }
        std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    }
    id
}

#[test]
fn verify_sample_goes_deep_on_a_deterministic_share_of_the_groups() {
    use backfill::verify::sample_point;
    let c = copy();
    // The two groups (one per folder) and where each falls in the sample.
    let (_, rep) = run(&c, &["--deep"]);
    let mut groups: Vec<(f64, String)> = rep["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["group"].as_str().unwrap().to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|g| (sample_point(&g), g))
        .collect();
    groups.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(groups.len(), 2);
    // A fraction between the two points samples exactly the lower group.
    let fraction = format!("{}", (groups[0].0 + groups[1].0) / 2.0);
    let (out, rep) = run(&c, &["--sample", &fraction]);
    assert_parity(&out, &rep);
    assert_eq!(rep["mode"], "sample");
    assert_eq!(rep["sample"]["by"], "groups");
    assert_eq!(rep["sample"]["of"], 2);
    assert_eq!(rep["groups_deep"], 1);
    assert_eq!(rep["sample"]["selected"].as_array().unwrap().len(), 1);
    assert!(
        out.stderr.contains("sampled 1 of 2 groups"),
        "{}",
        out.stderr
    );

    // A change behind the manifest's back: seen when its group is in the sample,
    // not otherwise (that is what a sample is).
    let key_of = |group: &str| {
        objects(&c.dest)
            .into_keys()
            .filter(|k| k.contains(&format!("-{group}-")))
            .max()
            .unwrap()
    };
    let unsampled = key_of(&groups[1].1);
    change_behind_the_manifest(&c.dest, &unsampled);
    let (out, rep) = run(&c, &["--sample", &fraction]);
    assert_parity(&out, &rep);
    let sampled = key_of(&groups[0].1);
    let id = change_behind_the_manifest(&c.dest, &sampled);
    let (out, rep) = run(&c, &["--sample", &fraction]);
    assert_fault(&out, &rep, "records_differ", &id);
    assert_eq!(rep["faults_by_kind"]["records_differ"], 1);
}

#[test]
fn verify_all_writers_needs_no_bookkeeping_and_finds_a_fault() {
    let c = copy();
    std::fs::remove_dir_all(c.dest.join("_backfill")).unwrap();
    // Without --deep it is a usage error.
    let (out, _) = run(&c, &["--all-writers"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    // Without bookkeeping the job's own checks have nothing to go on.
    let (out, rep) = run(&c, &[]);
    assert_fault(&out, &rep, "job_record", "holds no job");

    let (out, rep) = run(&c, &["--deep", "--all-writers", "--jobs", "2"]);
    assert_parity(&out, &rep);
    assert_eq!(rep["totals"]["dest_records"], 109);
    assert_eq!(rep["totals"]["rejected"], 13);

    // Objects renamed as another writer's and split differently: still parity.
    let (key, l) = fullest(&c.dest);
    std::fs::remove_file(c.dest.join(&key)).unwrap();
    let p = partition_of(&key);
    std::fs::write(c.dest.join(format!("{p}.live-a.xz")), encode(&l[..2])).unwrap();
    std::fs::write(c.dest.join(format!("{p}.live-b.xz")), encode(&l[2..])).unwrap();
    let (out, rep) = run(&c, &["--deep", "--all-writers"]);
    assert_parity(&out, &rep);

    // A record held twice (once by each writer) is found.
    std::fs::write(c.dest.join(format!("{p}.live-c.xz")), encode(&l[..1])).unwrap();
    let (out, rep) = run(&c, &["--deep", "--all-writers"]);
    assert_fault(
        &out,
        &rep,
        "records_differ",
        &format!("1 duplicated (more often than in the source) ({})", l[0].0),
    );
}

/// The headless browser, installed on first use by `scripts/browser.sh`; a browser
/// that cannot be had fails the test with the script's reason.
fn browser() -> String {
    let out = std::process::Command::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/browser.sh"),
    )
    .output()
    .expect("run scripts/browser.sh");
    assert!(
        out.status.success(),
        "the --html test needs chromium-headless-shell: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The DOM Chromium builds from a local page, with every host name unresolvable and
/// a dead proxy: the page gets no network, and needs none.
fn rendered(page: &Path) -> String {
    let out = std::process::Command::new("timeout")
        .arg("120")
        .arg(browser())
        .args([
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--proxy-server=127.0.0.1:9",
            "--dump-dom",
        ])
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run the browser");
    assert!(
        out.status.success(),
        "browser failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn verify_html_page_renders_in_a_real_browser_and_marks_a_failing_day() {
    let c = copy();
    let page = c.dest.parent().unwrap().join("clean.html");
    let (out, _) = run(&c, &["--deep", "--html", page.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let html = std::fs::read_to_string(&page).unwrap();
    for asset in [" src=", " href=", "url(", "@import", "<script"] {
        assert!(
            !html.contains(asset),
            "the page must be self-contained: {asset}"
        );
    }
    let dom = rendered(&page);
    assert!(dom.contains("<table id=\"days\">"), "{dom}");
    for day in DAYS {
        assert!(
            dom.contains(&format!("<tr class=\"day\" data-day=\"{day}\">")),
            "{dom}"
        );
        assert!(
            dom.contains(&format!("<g class=\"day\" data-day=\"{day}\">")),
            "{dom}"
        );
    }
    assert!(dom.contains("<svg id=\"chart\""), "{dom}");
    assert_eq!(dom.matches("class=\"source\"").count(), 2, "{dom}");
    assert_eq!(dom.matches("class=\"dest\"").count(), 2, "{dom}");
    assert!(!dom.contains("day failing"), "{dom}");
    assert!(dom.contains("PARITY: the destination holds every source record"));

    // A record changed on the second day: that day, and only it, stands out.
    let key = objects(&c.dest)
        .into_keys()
        .filter(|k| k.contains(&format!(".{}.v2.log.", DAYS[1])))
        .max()
        .unwrap();
    rewrite(&c.dest, &key, |l| {
        l[0].1 = l[0].1.replacen("\"uptime\":12", "\"uptime\":55", 1);
    });
    let page = c.dest.parent().unwrap().join("fault.html");
    let (out, _) = run(&c, &["--deep", "--html", page.to_str().unwrap()]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    let dom = rendered(&page);
    let failing = |day: &str| {
        (
            dom.contains(&format!("<tr class=\"day failing\" data-day=\"{day}\">")),
            dom.contains(&format!("<g class=\"day failing\" data-day=\"{day}\">")),
        )
    };
    assert_eq!(failing(DAYS[0]), (false, false), "{dom}");
    assert_eq!(failing(DAYS[1]), (true, true), "{dom}");
    assert!(dom.contains("PARITY VIOLATED"), "{dom}");
    assert!(dom.contains("records_differ"), "{dom}");
}
