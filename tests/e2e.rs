//! End to end on the real stores: legacy data in a real HDFS, exported into a real
//! S3, compared byte for byte with a local-to-local export of the same data; S3
//! faults and crashes during an export into S3.

use crate::common::*;
use crate::s3::proxy::{Fault, Proxy, Req};
use backfill::store::s3::{S3Options, S3Store};
use backfill::store::Store;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Generated legacy data (SequenceFiles and a text dump) under `dir/data/telemetry`.
fn generate(dir: &Path, seed: &str, records_per_file: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_backfill-gen"))
        .args([
            dir.to_str().unwrap(),
            "--seed",
            seed,
            "--days",
            "2013-10-10..2013-10-11",
        ])
        .args([
            "--files-per-day",
            "3",
            "--records-per-file",
            records_per_file,
            "--text-dump-fraction",
            "0.2",
        ])
        .args(["--reject-rate", "0.05"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s3_args(endpoint: &str) -> Vec<String> {
    vec![
        "--endpoint-url".into(),
        endpoint.into(),
        "--path-style".into(),
    ]
}

/// sha256 of every object of an S3 prefix, by key relative to it; `_backfill/`
/// only when `bookkeeping`.
pub(crate) fn s3_digests(url: &str, endpoint: &str, errors_too: bool) -> BTreeMap<String, String> {
    use sha2::Digest;
    let opts = S3Options {
        endpoint_url: Some(endpoint.into()),
        path_style: true,
        ..S3Options::default()
    };
    let store = S3Store::from_url(url, &opts, BTreeMap::new()).unwrap();
    store
        .list("")
        .unwrap()
        .into_iter()
        .filter(|m| {
            !m.key.starts_with("_backfill/")
                || (errors_too && m.key.starts_with("_backfill/errors/"))
        })
        .map(|m| {
            let bytes = store.get(&m.key).unwrap().unwrap();
            (m.key, hex::encode(sha2::Sha256::digest(&bytes)))
        })
        .collect()
}

fn local_digests(root: &Path, errors_too: bool) -> BTreeMap<String, String> {
    let mut d = digests(root);
    if errors_too {
        use sha2::Digest;
        let errors = root.join("_backfill/errors");
        for job in std::fs::read_dir(&errors).unwrap() {
            let job = job.unwrap().path();
            for f in std::fs::read_dir(&job).unwrap() {
                let p = f.unwrap().path();
                let key = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                d.insert(
                    key,
                    hex::encode(sha2::Sha256::digest(std::fs::read(&p).unwrap())),
                );
            }
        }
    }
    d
}

fn counts(rep: &serde_json::Value) -> Vec<serde_json::Value> {
    [
        "records_in",
        "records_out",
        "records_error",
        "errors_by_reason",
        "histograms_dropped",
        "bytes_in",
        "objects",
        "partitions",
        "bytes_out",
    ]
    .iter()
    .map(|k| rep[*k].clone())
    .collect()
}

#[test]
fn e2e_hdfs_to_s3_is_byte_identical_to_local_to_local() {
    let _hdfs = crate::hdfs::shared();
    let endpoint = crate::s3::env().endpoint;
    let t = tmp();
    let gen = t.path().join("gen");
    generate(&gen, "11", "40");

    let local = t.path().join("local");
    let (out, local_rep) = export(&gen.join("data"), &local, &["--jobs", "2"]);
    assert_eq!(out.code, 0, "{}", out.stderr);

    let source = crate::hdfs::put_data(&gen, "e2e");
    let bucket = crate::s3::fresh_bucket("e2e");
    let dest = format!("s3://{bucket}/telemetry");
    let report = t.path().join("s3.json");
    let mut args = vec![
        "export".to_string(),
        source,
        dest.clone(),
        "-q".into(),
        "--jobs".into(),
        "2".into(),
    ];
    args.extend(["--report".into(), report.to_str().unwrap().into()]);
    args.extend(s3_args(&endpoint));
    let out = backfill(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.code, 0, "{}", out.stderr);
    let s3_rep: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(counts(&s3_rep), counts(&local_rep));
    assert!(s3_rep["source"].as_str().unwrap().starts_with("hdfs://"));

    let want = local_digests(&local, true);
    assert!(want.len() > 20, "{}", want.len());
    assert_eq!(
        s3_digests(&dest, &endpoint, true),
        want,
        "objects and error output are the same bytes"
    );

    // status and errors read the S3 destination too.
    let mut st = vec!["status".to_string(), dest.clone()];
    st.extend(s3_args(&endpoint));
    let out = backfill(&st.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.lines().next().unwrap().ends_with(": done"),
        "{}",
        out.stdout
    );
    let mut er = vec!["errors".to_string(), dest];
    er.extend(s3_args(&endpoint));
    let out = backfill(&er.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .starts_with(&format!("{} rejected records", local_rep["records_error"])),
        "{}",
        out.stdout
    );
}

#[test]
fn e2e_export_into_s3_survives_server_errors_and_cut_connections() {
    let endpoint = crate::s3::env().endpoint;
    let t = tmp();
    let gen = t.path().join("gen");
    generate(&gen, "12", "20");
    let local = t.path().join("local");
    let (out, _) = export(&gen.join("data"), &local, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);

    let proxy = Proxy::start(&endpoint);
    proxy.fault(Req::PutObject, Fault::Status(503, "SlowDown"), 3);
    proxy.fault(Req::PutObject, Fault::Status(500, "InternalError"), 2);
    proxy.fault(Req::PutObject, Fault::CutRequest(200), 2);
    proxy.fault(Req::PutObject, Fault::DropResponse, 1);
    let bucket = crate::s3::fresh_bucket("e2efault");
    let dest = format!("s3://{bucket}/t");
    let mut args = vec![
        "export".to_string(),
        gen.join("data").to_str().unwrap().into(),
        dest.clone(),
        "-q".into(),
    ];
    args.extend(s3_args(&proxy.url()));
    let out = backfill(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(proxy.faults_applied(), 8);
    assert_eq!(
        s3_digests(&dest, &endpoint, false),
        local_digests(&local, false),
        "no loss, no duplicate"
    );
    assert_eq!(crate::s3::incomplete_uploads(&bucket), vec![]);
}

#[test]
fn e2e_killed_exports_into_s3_finish_with_the_same_store() {
    let endpoint = crate::s3::env().endpoint;
    let trials: usize = std::env::var("BACKFILL_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let t = tmp();
    let gen = t.path().join("gen");
    generate(&gen, "13", "40");
    let src = gen.join("data");
    let local = t.path().join("local");
    let started = Instant::now();
    let (out, _) = export(&src, &local, &["--jobs", "2", "--split-size", "64KiB"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let run = started.elapsed().as_millis() as u64;
    let want = local_digests(&local, true);

    for trial in 0..trials {
        let bucket = crate::s3::fresh_bucket("e2ecrash");
        let dest = format!("s3://{bucket}/t");
        let mut args = vec![
            "export".to_string(),
            src.to_str().unwrap().into(),
            dest.clone(),
            "-q".into(),
        ];
        args.extend([
            "--jobs".into(),
            "2".into(),
            "--split-size".into(),
            "64KiB".into(),
        ]);
        args.extend(s3_args(&endpoint));
        // Kill at a different point of the run each trial, then finish.
        let delay = run * (trial as u64 + 1) / (trials as u64 + 1);
        let mut child = Command::new(env!("CARGO_BIN_EXE_backfill"))
            .args(&args)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_millis(delay.max(5));
        while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::yield_now();
        }
        let _ = child.kill();
        child.wait().unwrap();
        let out = backfill(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(out.code, 0, "trial {trial}: {}", out.stderr);
        assert_eq!(s3_digests(&dest, &endpoint, true), want, "trial {trial}");
        let keys = crate::s3::bucket_keys(&bucket);
        assert!(
            !keys.iter().any(|k| k.contains("/_backfill/staging/")),
            "staging left: {keys:?}"
        );
        assert_eq!(crate::s3::incomplete_uploads(&bucket), vec![]);
    }
}

#[test]
fn e2e_a_datanode_down_past_the_retries_fails_units_and_the_rerun_completes() {
    let t = tmp();
    let gen = t.path().join("gen");
    generate(&gen, "12", "30");
    let local = t.path().join("local");
    let (out, _) = export(&gen.join("data"), &local, &["--jobs", "2"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let source = {
        let _hdfs = crate::hdfs::shared();
        crate::hdfs::put_data(&gen, "datanode-down")
    };
    let dest = t.path().join("dest");
    let report = t.path().join("r.json");
    let args = |retries: &str| {
        vec![
            "export".to_string(),
            source.clone(),
            dest.to_str().unwrap().to_string(),
            "-q".into(),
            "--jobs".into(),
            "2".into(),
            "--hdfs-retries".into(),
            retries.into(),
            "--hdfs-timeout".into(),
            "5".into(),
            "--report".into(),
            report.to_str().unwrap().into(),
        ]
    };
    {
        // Past the retry budget: every unit fails, nothing is committed with a
        // gap, and the run says what to do.
        let _x = crate::hdfs::exclusive();
        let _down = crate::hdfs::DataNodeDown::stop();
        let out = backfill(&args("0").iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(out.code, 1, "{}", out.stderr);
        assert!(out.stderr.contains("rerun"), "{}", out.stderr);
        let rep: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        assert_eq!(rep["complete"], false);
        assert!(rep["unreadable"].as_array().unwrap().is_empty(), "{rep}");
        let failed = rep["failed"].as_array().unwrap();
        assert!(!failed.is_empty(), "{rep}");
        for f in failed {
            let e = f["error"].as_str().unwrap();
            assert!(e.contains("hdfs://") && e.contains("offset"), "{e}");
        }
        assert!(
            !dest.join("_backfill/manifests").exists()
                || std::fs::read_dir(dest.join("_backfill/manifests"))
                    .unwrap()
                    .flat_map(|j| std::fs::read_dir(j.unwrap().path()).unwrap())
                    .next()
                    .is_none(),
            "no folder committed while its blocks could not be read"
        );
        assert!(objects(&dest).is_empty(), "no object published");
        // The DataNode comes back here (dropped guard).
    }
    let _hdfs = crate::hdfs::shared();
    let out = backfill(&args("14").iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(local_digests(&dest, true), local_digests(&local, true));
}

#[test]
fn e2e_killed_between_multipart_parts_then_rerun_gives_the_same_bucket() {
    let endpoint = crate::s3::env().endpoint;
    let t = tmp();
    let gen = t.path().join("gen");
    generate(&gen, "13", "30");
    let local = t.path().join("local");
    let (out, _) = export(&gen.join("data"), &local, &["--jobs", "2"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let bucket = crate::s3::fresh_bucket("mpu-kill");
    let dest = format!("s3://{bucket}/t");
    let mut args = vec![
        "export".to_string(),
        gen.join("data").to_str().unwrap().into(),
        dest.clone(),
        "-q".into(),
        "--jobs".into(),
        "2".into(),
        // Every object above 4 KiB goes up in parts.
        "--multipart-threshold".into(),
        "4KiB".into(),
    ];
    args.extend(s3_args(&endpoint));
    let out = Command::new(env!("CARGO_BIN_EXE_backfill"))
        .args(&args)
        .env("BACKFILL_FAILPOINTS", "multipart-part-uploaded@3=kill")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(9),
        "{stderr}"
    );
    assert!(
        stderr.contains("failpoint multipart-part-uploaded hit"),
        "{stderr}"
    );
    let opts = S3Options {
        endpoint_url: Some(endpoint.clone()),
        path_style: true,
        ..S3Options::default()
    };
    let store = S3Store::from_url(&dest, &opts, BTreeMap::new()).unwrap();
    assert!(
        store.remove_incomplete(&|_| true, true).unwrap() > 0,
        "the kill left an upload open"
    );
    let out = backfill(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        s3_digests(&dest, &endpoint, true),
        local_digests(&local, true)
    );
    assert_eq!(
        store.remove_incomplete(&|_| true, true).unwrap(),
        0,
        "the rerun aborted the killed run's upload"
    );
}

/// Files under `dir`, recursively (none when it does not exist).
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p.to_string_lossy().into_owned());
            }
        }
    }
    out
}

#[test]
fn e2e_an_s3_dest_stages_on_this_machine_unless_told_and_both_resume() {
    let endpoint = crate::s3::env().endpoint;
    let t = tmp();
    let gen = t.path().join("gen");
    generate(&gen, "17", "40");
    let src = gen.join("data");
    let local = t.path().join("local");
    let (out, _) = export(&src, &local, &["--jobs", "2", "--split-size", "64KiB"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let want = local_digests(&local, true);

    for in_dest in [false, true] {
        let bucket = crate::s3::fresh_bucket("staging");
        let dest = format!("s3://{bucket}/t");
        // This machine's cache, private to the test.
        let cache = t.path().join(format!("cache-{in_dest}"));
        let mut args = vec![
            "export".to_string(),
            src.to_str().unwrap().into(),
            dest.clone(),
            "-q".into(),
            "--jobs".into(),
            "2".into(),
            "--split-size".into(),
            "64KiB".into(),
        ];
        args.extend(s3_args(&endpoint));
        if in_dest {
            args.push("--staging-in-dest".into());
        }
        let run = |extra_env: Option<&str>, cmd: &[String]| {
            let mut c = Command::new(env!("CARGO_BIN_EXE_backfill"));
            c.args(cmd).env("XDG_CACHE_HOME", &cache);
            if let Some(f) = extra_env {
                c.env("BACKFILL_FAILPOINTS", f);
            }
            c.output().unwrap()
        };
        let o = run(Some("unit-staged@3=kill"), &args);
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&o.status),
            Some(9),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let in_bucket = crate::s3::bucket_keys(&bucket)
            .iter()
            .filter(|k| k.contains("/_backfill/staging/") && k.ends_with(".json"))
            .count();
        let on_disk = files_under(&cache.join("backfill/staging"))
            .iter()
            .filter(|k| k.ends_with(".json"))
            .count();
        if in_dest {
            assert!(in_bucket > 0 && on_disk == 0, "{in_bucket} / {on_disk}");
        } else {
            assert!(in_bucket == 0 && on_disk > 0, "{in_bucket} / {on_disk}");
        }
        // status counts the staged units wherever they are (this machine's too).
        let mut st = vec!["status".to_string(), dest.clone()];
        st.extend(s3_args(&endpoint));
        let o = run(None, &st);
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let staged: usize = text
            .split("units staged (not yet assembled): ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{text}"));
        assert_eq!(staged, in_bucket.max(on_disk), "{text}");
        // The rerun resumes from those checkpoints and leaves no staging anywhere.
        let report = t.path().join(format!("rerun-{in_dest}.json"));
        let mut rerun = args.clone();
        rerun.extend(["--report".into(), report.to_str().unwrap().into()]);
        let o = run(None, &rerun);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let rep: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        assert!(
            rep["units_resumed"].as_u64().unwrap() > 0,
            "the checkpoints were reused: {rep}"
        );
        assert_eq!(
            s3_digests(&dest, &endpoint, true),
            want,
            "in_dest {in_dest}"
        );
        assert!(!crate::s3::bucket_keys(&bucket)
            .iter()
            .any(|k| k.contains("/_backfill/staging/")));
        assert!(
            files_under(&cache.join("backfill/staging"))
                .iter()
                .all(|k| !k.contains("/_backfill/staging/")),
            "staging left on disk"
        );
    }
}
