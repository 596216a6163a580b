//! `backfill export` end to end on local directories.

use crate::common::*;
use backfill::core::seqfile::{Codec, Compression};
use std::collections::{BTreeMap, BTreeSet};

/// Two days, three files each, good and bad records mixed, and one record filed in
/// the folder of the day before its own.
fn dataset(root: &std::path::Path) -> Vec<Rec> {
    let mut all = Vec::new();
    let mut n = 0;
    for day in ["20131010", "20131011"] {
        for f in 0..3 {
            let mut recs = Vec::new();
            for i in 0..40 {
                n += 1;
                recs.push(if i % 7 == 3 {
                    bad(n, day)
                } else {
                    good(n, day)
                });
            }
            if day == "20131010" && f == 0 {
                n += 1;
                recs.push(good(n, "20131011"));
            }
            write_seq(
                &day_dir(root, day).join(format!("part-m-{f:05}")),
                &recs,
                BLOCK,
            );
            all.extend(recs);
        }
        std::fs::write(day_dir(root, day).join("_SUCCESS"), b"").unwrap();
    }
    all
}

#[test]
fn export_reads_back_and_reconciles() {
    let t = tmp();
    let src = t.path().join("src");
    let dest = t.path().join("dest");
    let recs = dataset(&src);
    let (out, rep) = export(&src, &dest, &["--jobs", "2"]);
    assert_eq!(out.code, 0, "{}", out.stderr);

    let ok: Vec<&Rec> = recs.iter().filter(|r| r.expect.is_ok()).collect();
    let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
    for r in &recs {
        if let Err(reason) = r.expect {
            *by_reason.entry(reason.to_string()).or_default() += 1;
        }
    }
    let n = |k: &str| rep[k].as_u64().unwrap();
    assert_eq!(n("records_in"), recs.len() as u64);
    assert_eq!(n("records_out"), ok.len() as u64);
    assert_eq!(n("records_error"), recs.len() as u64 - ok.len() as u64);
    assert_eq!(n("records_in"), n("records_out") + n("records_error"));
    assert_eq!(n("records_filtered"), 0);
    let got_reasons: BTreeMap<String, u64> =
        serde_json::from_value(rep["errors_by_reason"].clone()).unwrap();
    assert_eq!(got_reasons, by_reason);
    assert_eq!(
        rep["histograms_dropped"]["NOT_IN_DEFINITIONS"].as_u64(),
        Some(ok.len() as u64)
    );
    assert!(rep["unreadable"].as_array().unwrap().is_empty());

    // Partitions: exactly the ones computed here from the inputs.
    let want: BTreeSet<String> = ok.iter().map(|r| r.expect.clone().unwrap()).collect();
    let objs = objects(&dest);
    let got: BTreeSet<String> = objs.keys().map(|k| partition_of(k)).collect();
    assert_eq!(got, want);
    assert_eq!(n("partitions"), want.len() as u64);
    assert_eq!(n("objects"), objs.len() as u64);
    assert_eq!(
        n("bytes_out"),
        objs.values().map(|v| v.len() as u64).sum::<u64>()
    );

    // Every object decodes; every good record is there once, converted, in its partition.
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (key, bytes) in &objs {
        for (id, json) in lines(bytes) {
            let v: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(v["ver"], 2);
            assert_eq!(
                v["histograms"]["A11Y_INSTANTIATED_FLAG"],
                serde_json::json!([1, 0, 0, 0, -1, -1, 0, 0])
            );
            assert!(v["histograms"].get("NOT_IN_DEFINITIONS").is_none());
            assert!(json.is_ascii() && !json.contains(' '));
            assert!(
                seen.insert(id, partition_of(key)).is_none(),
                "a record was written twice"
            );
        }
    }
    for r in &ok {
        let id = String::from_utf8(r.key[9..].to_vec()).unwrap();
        assert_eq!(seen.get(&id), r.expect.as_ref().ok(), "record {id}");
    }
    assert_eq!(seen.len(), ok.len());

    // The error output holds every rejected record with its original bytes.
    let errs = backfill(&["errors", dest.to_str().unwrap()]);
    assert_eq!(errs.code, 0, "{}", errs.stderr);
    assert!(
        errs.stdout
            .starts_with(&format!("{} rejected records", n("records_error"))),
        "{}",
        errs.stdout
    );
    let list = backfill(&[
        "errors",
        dest.to_str().unwrap(),
        "--reason",
        "corrupted_data",
        "--limit",
        "1000",
    ]);
    let shown: Vec<serde_json::Value> = list
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(shown.len() as u64, by_reason["corrupted_data"]);
    let original: BTreeSet<Vec<u8>> = recs
        .iter()
        .filter(|r| r.expect == Err("corrupted_data"))
        .map(|r| r.value.clone())
        .collect();
    use base64::Engine as _;
    for s in &shown {
        let value = base64::engine::general_purpose::STANDARD
            .decode(s["value_b64"].as_str().unwrap())
            .unwrap();
        assert!(original.contains(&value));
        assert!(s["file"]
            .as_str()
            .unwrap()
            .starts_with("data/telemetry/2013/10/"));
        assert!(s["mappings_version"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"));
    }

    // Staging is gone once committed.
    assert!(!dest
        .join("_backfill/staging")
        .read_dir()
        .map(|mut d| d.next().is_some())
        .unwrap_or(false));
}

#[test]
fn output_is_byte_identical_whatever_jobs_and_reruns() {
    let t = tmp();
    let src = t.path().join("src");
    dataset(&src);
    // Small splits and buffers force split units and many pieces per partition.
    let opts = [
        "--split-size",
        "1KiB",
        "--buffer-size",
        "16KiB",
        "--target-size",
        "20KB",
    ];
    let mut runs = Vec::new();
    for jobs in ["1", "2", "3"] {
        let dest = t.path().join(format!("dest{jobs}"));
        let mut args = opts.to_vec();
        args.extend(["--jobs", jobs]);
        let (out, rep) = export(&src, &dest, &args);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(rep["units_run"].as_u64().unwrap() > 6, "splits happened");
        runs.push((digests(&dest), rep));
    }
    assert!(!runs[0].0.is_empty());
    assert_eq!(runs[0].0, runs[1].0);
    assert_eq!(runs[0].0, runs[2].0);
    assert_eq!(runs[0].1["records_out"], runs[2].1["records_out"]);

    // A rerun of a finished job is a no-op that reports the whole job.
    let dest = t.path().join("dest1");
    let mut args = opts.to_vec();
    args.extend(["--jobs", "2"]);
    let (out, rep) = export(&src, &dest, &args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(rep["units_run"], 0);
    assert_eq!(rep["groups_resumed"], 2);
    assert_eq!(rep["records_out"], runs[0].1["records_out"]);
    assert_eq!(digests(&dest), runs[0].0);
}

#[test]
fn objects_per_partition_stay_bounded_with_many_small_files() {
    let t = tmp();
    let src = t.path().join("src");
    // 60 files of 5 records each, all in the same 2 partitions of one day.
    let mut n = 0;
    for f in 0..60 {
        let recs: Vec<Rec> = (0..5)
            .map(|i| {
                n += 1;
                let build = "20130901030201";
                let reason = if i % 2 == 0 {
                    "saved-session"
                } else {
                    "idle-daily"
                };
                Rec {
                    key: backfill::core::rowkey::build("20131010", &doc_id(n)),
                    value: payload(reason, "nightly", "24.0a1", build).into_bytes(),
                    expect: Ok(expected_partition(
                        reason, "nightly", "24.0a1", build, "20131010",
                    )),
                }
            })
            .collect();
        write_seq(
            &day_dir(&src, "20131010").join(format!("part-m-{f:05}")),
            &recs,
            BLOCK,
        );
    }
    // Default target: one object per partition, whatever the number of files or jobs.
    let dest = t.path().join("dest");
    let (out, rep) = export(&src, &dest, &["--jobs", "2"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(rep["partitions"], 2);
    assert_eq!(rep["objects"], 2);

    // A small target: at most ceil(partition bytes / target) objects per partition.
    let dest = t.path().join("dest-small");
    let target = 30_000u64;
    let (out, _) = export(
        &src,
        &dest,
        &["--jobs", "2", "--target-size", &target.to_string()],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut per: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (k, v) in objects(&dest) {
        let raw: u64 = lines(&v)
            .iter()
            .map(|(id, j)| (id.len() + j.len() + 2) as u64)
            .sum();
        let e = per.entry(partition_of(&k)).or_default();
        e.0 += 1;
        e.1 += raw;
    }
    for (p, (count, raw)) in per {
        let bound = raw.div_ceil(target);
        assert!(
            count <= bound,
            "{p}: {count} objects for {raw} bytes, bound {bound}"
        );
        assert!(count >= 2, "{p}: the small target did split the partition");
    }
}

#[test]
fn bad_input_is_counted_and_the_run_goes_on() {
    let t = tmp();
    let src = t.path().join("src");
    let day = day_dir(&src, "20131010");
    let good_recs: Vec<Rec> = (0..20).map(|n| good(n, "20131010")).collect();
    write_seq(&day.join("part-m-00000"), &good_recs, BLOCK);
    // An empty file: no records, no problem.
    std::fs::write(day.join("part-m-00001"), b"").unwrap();
    // A truncated SequenceFile: the records before the cut are kept.
    let trunc = t.path().join("whole.seq");
    let many: Vec<Rec> = (100..400).map(|n| good(n, "20131010")).collect();
    write_seq(&trunc, &many, Compression::None);
    let bytes = std::fs::read(&trunc).unwrap();
    std::fs::write(day.join("part-m-00002"), &bytes[..bytes.len() * 2 / 3]).unwrap();
    // Random bytes: read as a text dump, every line an invalid_key record.
    let mut x: u64 = 42;
    let random: Vec<u8> = (0..5000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    std::fs::write(day.join("part-m-00003"), &random).unwrap();
    // Non-UTF-8 values and a 10 MB record.
    let mut odd = vec![bad(1, "20131010")];
    let big = payload("saved-session", "nightly", "24.0a1", "20130901030201").replace(
        r#""uptime":12"#,
        &format!(r#""uptime":12,"pad":"{}""#, "é".repeat(5 << 20)),
    );
    assert!(big.len() > 10 << 20);
    odd.push(Rec {
        key: backfill::core::rowkey::build("20131010", &doc_id(999)),
        value: big.into_bytes(),
        expect: Ok(String::new()),
    });
    write_seq(
        &day.join("part-m-00005"),
        &odd,
        Compression::Record(Codec::Gzip),
    );

    let dest = t.path().join("dest");
    let (out, rep) = export(&src, &dest, &[]);
    assert_eq!(
        out.code, 3,
        "some input was unreadable: exit 3\n{}",
        out.stderr
    );
    let unreadable = rep["unreadable"].as_array().unwrap();
    let files: BTreeSet<&str> = unreadable
        .iter()
        .map(|u| u["file"].as_str().unwrap())
        .collect();
    assert!(
        files.contains("data/telemetry/2013/10/10/part-m-00002"),
        "{unreadable:?}"
    );
    let trunc_region = unreadable
        .iter()
        .find(|u| u["file"].as_str().unwrap().ends_with("00002"))
        .unwrap();
    assert!(trunc_region["offset"].as_u64().unwrap() > 0);

    let n = |k: &str| rep[k].as_u64().unwrap();
    assert_eq!(n("records_in"), n("records_out") + n("records_error"));
    let kept_from_truncated = n("records_out") - 20 - 1;
    assert!(
        kept_from_truncated > 100 && kept_from_truncated < 300,
        "{kept_from_truncated}"
    );
    assert!(
        rep["errors_by_reason"]["invalid_key"].as_u64().unwrap() >= 1,
        "random bytes → invalid_key lines"
    );
    assert_eq!(rep["errors_by_reason"]["corrupted_data"], 1);
    // The big record went through whole.
    let big_written = objects(&dest).values().any(|v| {
        lines(v)
            .iter()
            .any(|(id, j)| *id == doc_id(999) && j.len() > 10 << 20)
    });
    assert!(big_written);
    assert!(
        out.stderr.contains("part-m-00002 at offset"),
        "the summary names unreadable files and offsets: {}",
        out.stderr
    );
}

#[test]
fn a_folder_that_cannot_be_listed_fails_the_run_and_the_rest_commits() {
    let t = tmp();
    let src = t.path().join("src");
    let day = day_dir(&src, "20131010");
    let recs: Vec<Rec> = (0..20).map(|n| good(n, "20131010")).collect();
    write_seq(&day.join("part-m-00000"), &recs, BLOCK);
    let other = day_dir(&src, "20131011");
    write_seq(
        &other.join("part-m-00000"),
        &(20..40).map(|n| good(n, "20131011")).collect::<Vec<_>>(),
        BLOCK,
    );
    // A dangling link cannot be listed (stat fails): an I/O error, not bad bytes.
    std::os::unix::fs::symlink(t.path().join("nowhere"), day.join("part-m-00004")).unwrap();
    let dest = t.path().join("dest");
    let (out, rep) = export(&src, &dest, &[]);
    assert_eq!(out.code, 1, "a listing failure is exit 1\n{}", out.stderr);
    assert_eq!(rep["complete"], false);
    let failed = rep["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0]["error"]
            .as_str()
            .unwrap()
            .contains("part-m-00004"),
        "{failed:?}"
    );
    assert!(rep["unreadable"].as_array().unwrap().is_empty());
    // The other folder is committed, not the one missing a file (that would be a
    // gap no rerun fills); the rerun after the fix finishes the job.
    assert_eq!(rep["records_out"], 20);
    assert_eq!(rep["groups"], 1);
    std::fs::remove_file(day.join("part-m-00004")).unwrap();
    let (out, rep) = export(&src, &dest, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(rep["records_out"], 40);
    assert_eq!(rep["complete"], true);
}

#[test]
fn filters_select_days_and_dimensions() {
    let t = tmp();
    let src = t.path().join("src");
    let recs = dataset(&src);
    let filter = t.path().join("filter.json");
    std::fs::write(
        &filter,
        r#"{"version":1,"dimensions":[{"field_name":"reason","allowed_values":["saved-session"]},{"field_name":"appUpdateChannel","allowed_values":["nightly","aurora"]}]}"#,
    )
    .unwrap();
    let dest = t.path().join("dest");
    let (out, rep) = export(
        &src,
        &dest,
        &[
            "--from",
            "2013-10-11",
            "--to",
            "20131011",
            "--filter",
            filter.to_str().unwrap(),
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let want: BTreeSet<String> = recs
        .iter()
        .filter_map(|r| r.expect.clone().ok())
        .filter(|p| {
            p.starts_with("saved_session/")
                && (p.contains("/nightly/") || p.contains("/aurora/"))
                && p.contains(".20131011.")
        })
        .collect();
    let got: BTreeSet<String> = objects(&dest).keys().map(|k| partition_of(k)).collect();
    assert_eq!(got, want);
    let n = |k: &str| rep[k].as_u64().unwrap();
    assert_eq!(n("records_in"), n("records_out") + n("records_error"));
    assert!(n("records_filtered") > 0);
    // Both folders were read (margin of one day), so the 20131011 record filed under
    // 20131010 was found; every record read is either in or filtered.
    assert_eq!(n("records_in") + n("records_filtered"), recs.len() as u64);
}

#[test]
fn dry_run_writes_nothing() {
    let t = tmp();
    let src = t.path().join("src");
    dataset(&src);
    let dest = t.path().join("dest");
    let out = backfill(&[
        "export",
        src.to_str().unwrap(),
        dest.to_str().unwrap(),
        "--dry-run",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(plan["files"], 6);
    assert_eq!(plan["days"], serde_json::json!(["20131010", "20131011"]));
    assert!(!dest.exists());
}

#[test]
fn different_settings_into_the_same_destination_are_refused() {
    let t = tmp();
    let src = t.path().join("src");
    dataset(&src);
    let dest = t.path().join("dest");
    assert_eq!(export(&src, &dest, &[]).0.code, 0);
    let (out, _) = export(&src, &dest, &["--xz-preset", "6"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("xz_preset: 6 here, 1 in the destination"),
        "{}",
        out.stderr
    );
    // A separately named job may share the destination.
    let (out, _) = export(&src, &dest, &["--xz-preset", "6", "--job-name", "smaller"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn usage_errors_exit_2_and_help_explains() {
    assert_eq!(
        backfill(&["export", "a", "b", "--from", "2013-02-30"]).code,
        2
    );
    assert_eq!(backfill(&["export", "a"]).code, 2);
    assert_eq!(
        backfill(&["export", "a", "b", "--target-size", "12 parsecs"]).code,
        2
    );
    let help = backfill(&["export", "--help"]);
    assert_eq!(help.code, 0);
    for opt in [
        "--jobs",
        "--xz-preset",
        "--target-size",
        "--from",
        "--filter",
        "--report",
        "--dry-run",
        "Exit codes",
    ] {
        assert!(help.stdout.contains(opt), "help lacks {opt}");
    }
    let v = backfill(&["--version"]);
    assert_eq!(v.code, 0);
    assert!(v.stdout.contains("mappings sha256:"), "{}", v.stdout);
    let missing = backfill(&["export", "/nonexistent/src", "/tmp/x"]);
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("/nonexistent/src"),
        "{}",
        missing.stderr
    );
}

#[test]
fn sample_dataset_gives_the_counts_its_generator_intended() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/legacy");
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("_expected.json")).unwrap()).unwrap();
    let t = tmp();
    let dest = t.path().join("dest");
    let (out, rep) = export(&root, &dest, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(rep["records_in"], expected["records"]);
    assert_eq!(rep["records_out"], expected["ok"]);
    assert_eq!(rep["records_error"], expected["rejected"]);
    assert_eq!(rep["bytes_in"], expected["bytes"]);
    let want_reasons: BTreeMap<String, u64> =
        serde_json::from_value::<BTreeMap<String, u64>>(expected["by_reason"].clone())
            .unwrap()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .collect();
    let got_reasons: BTreeMap<String, u64> =
        serde_json::from_value(rep["errors_by_reason"].clone()).unwrap();
    assert_eq!(got_reasons, want_reasons);
    let dropped: u64 = rep["histograms_dropped"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(dropped, expected["histograms_dropped"].as_u64().unwrap());
    // Records per partition, read back from the objects.
    let mut per: BTreeMap<String, u64> = BTreeMap::new();
    for (k, v) in objects(&dest) {
        *per.entry(partition_of(&k)).or_default() += lines(&v).len() as u64;
    }
    let want: BTreeMap<String, u64> =
        serde_json::from_value(expected["partitions"].clone()).unwrap();
    assert_eq!(per, want);
}
