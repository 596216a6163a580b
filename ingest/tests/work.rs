//! `ingest work`: submissions over loopback HTTP, through `serve`'s spool (or an S3
//! incoming prefix and an SQS queue), published by the export's pipeline. What a
//! destination must hold is computed here from the requests the server accepted.

use crate::common::*;
use backfill::core::newstore::{open_object, StoreLineReader};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const REV: &str = "http://hg.mozilla.org/releases/mozilla-aurora/rev/a55c55edf302";

/// A doc id from a number.
fn doc_id(n: u64) -> String {
    let h = format!(
        "{:032x}",
        (n as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c)
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

/// Channel of submission `n`; reason, app, version and build are fixed.
fn channel(n: u64) -> &'static str {
    ["release", "beta", "aurora", "nightly"][(n % 4) as usize]
}

/// A valid ver 1 payload of submission `n`.
fn good_payload(n: u64) -> Vec<u8> {
    format!(
        r#"{{"ver":1,"info":{{"reason":"saved-session","appName":"Firefox","appUpdateChannel":"{}","appVersion":"22.0a1","appBuildID":"20130226031002","revision":"{REV}"}},"simpleMeasurements":{{"uptime":{n}}},"histograms":{{"A11Y_INSTANTIATED_FLAG":{{"range":[1,2],"bucket_count":3,"histogram_type":3,"values":{{"0":1,"1":0}},"sum":0,"sum_squares_lo":0,"sum_squares_hi":0}}}}}}"#,
        channel(n)
    )
    .into_bytes()
}

fn gzip(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// Where submission `n` must land on `day`: computed here from its dimensions.
fn partition(n: u64, day: &str) -> String {
    format!(
        "saved_session/Firefox/{}/22.0a1/20130226031002.{day}.v2.log",
        channel(n)
    )
}

fn today() -> String {
    let mut d = String::new();
    backfill::ingest::utc_day(now_ms(), &mut d);
    d
}

/// Sends `good` valid submissions (every other one gzipped, alternately with the
/// full path and the doc-id-only path) and `bad` invalid ones (a body that says
/// gzip and is not, JSON that is not JSON); returns the good ones' numbers.
fn submit(s: &Server, first: u64, good: u64, bad: u64) -> Vec<u64> {
    let mut sent = Vec::new();
    for n in first..first + good {
        let body = good_payload(n);
        let path = if n % 2 == 0 {
            format!(
                "/submit/telemetry/{}/saved-session/Firefox/22.0a1/{}/20130226031002",
                doc_id(n),
                channel(n)
            )
        } else {
            format!("/submit/telemetry/{}", doc_id(n))
        };
        let r = if n % 3 == 0 {
            s.post(&path, &gzip(&body), &[("Content-Encoding", "gzip")])
        } else {
            s.post(&path, &body, &[])
        };
        assert_eq!(r.status, 200, "{path}");
        sent.push(n);
    }
    for n in 0..bad {
        let path = format!("/submit/telemetry/{}", doc_id(1_000_000 + n));
        let r = if n % 2 == 0 {
            s.post(&path, b"\x1f\x8bnot gzip", &[("Content-Encoding", "gzip")])
        } else {
            s.post(&path, b"not json", &[])
        };
        assert_eq!(r.status, 200);
    }
    sent
}

fn work(args: &[&str], env: &[(&str, String)]) -> Output {
    let mut c = Command::new(BIN);
    c.arg("work").args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run ingest work")
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "ingest work: {:?}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Every line of the objects under `root` (`_backfill/` skipped), by partition.
fn published(root: &Path) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<(String, String)>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel == "_backfill" {
                continue;
            }
            if p.is_dir() {
                walk(root, &p, out);
                continue;
            }
            let stem = rel.strip_suffix(".xz").unwrap();
            let part = stem.rsplit_once('.').unwrap().0.to_string();
            let bytes = std::fs::read(&p).unwrap();
            for l in StoreLineReader::new(open_object(&bytes[..]).unwrap()) {
                let l = l.unwrap();
                out.entry(part.clone()).or_default().push((
                    String::from_utf8(l.doc_id).unwrap(),
                    String::from_utf8(l.json).unwrap(),
                ));
            }
        }
    }
    if root.exists() {
        walk(root, root, &mut out);
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

/// The doc ids each partition must hold.
fn expected(sent: &[u64], day: &str) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for &n in sent {
        m.entry(partition(n, day)).or_default().push(doc_id(n));
    }
    for v in m.values_mut() {
        v.sort();
    }
    m
}

fn ids(p: &BTreeMap<String, Vec<(String, String)>>) -> BTreeMap<String, Vec<String>> {
    p.iter()
        .map(|(k, v)| (k.clone(), v.iter().map(|l| l.0.clone()).collect()))
        .collect()
}

fn report(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// Every file under `root` with its bytes (`_backfill/` included only for the
/// error output), for byte-identity.
fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                walk(root, &p, out);
            } else if !rel.starts_with("_backfill/") || rel.starts_with("_backfill/errors/") {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    walk(root, root, &mut out);
    out
}

#[test]
fn submissions_are_published_as_export_would_write_them() {
    let t = tempfile::tempdir().unwrap();
    let spool = t.path().join("spool");
    let mut s = Server::start(&spool, &["--rotate-size", "20KB"]);
    let sent = submit(&s, 1, 60, 6);
    assert!(s.stop().success());
    let files = names(&spool.join("ready"));
    assert!(files.len() > 1, "several raw logs: {files:?}");
    let day = today();

    let dest = t.path().join("dest");
    let rep = t.path().join("work.json");
    let o = work(
        &[
            "--spool",
            spool.to_str().unwrap(),
            dest.to_str().unwrap(),
            "--once",
            "--report",
            rep.to_str().unwrap(),
        ],
        &[],
    );
    ok(&o);
    assert!(names(&spool.join("ready")).is_empty() && names(&spool.join("claimed")).is_empty());
    let r = report(&rep);
    // Counts reconcile: every request answered 200 is a record in or an error.
    assert_eq!(r["records_in"], 66);
    assert_eq!(r["records_out"], 60);
    assert_eq!(r["records_error"], 6);
    assert_eq!(r["files"].as_array().unwrap().len(), files.len());
    let got = published(&dest);
    assert_eq!(ids(&got), expected(&sent, &day));

    // The same records through the export, as legacy records of the same day, give
    // the same lines.
    let src = t.path().join("legacy");
    std::fs::create_dir_all(&src).unwrap();
    let mut w = backfill::core::seqfile::SeqWriter::new(
        std::fs::File::create(src.join("part-m-00000")).unwrap(),
        backfill::core::seqfile::SeqWriterOptions::new(
            backfill::core::seqfile::Compression::None,
            [3; 16],
        ),
    )
    .unwrap();
    for &n in &sent {
        let key = backfill::core::rowkey::build(&day, &doc_id(n));
        w.append(&key, &good_payload(n)).unwrap();
    }
    w.finish().unwrap();
    let exported = t.path().join("exported");
    let mappings = backfill::core::mappings::Mappings::embedded().unwrap();
    let src_store = backfill::source::local::LocalSource::new(&src).unwrap();
    let out_store = backfill::store::local::LocalStore::new(&exported).unwrap();
    let opts = backfill::export::ExportOptions {
        jobs: 1,
        ..Default::default()
    };
    let out = backfill::export::export(
        mappings,
        &src_store,
        &out_store,
        &out_store,
        &opts,
        &indicatif::ProgressBar::hidden(),
        &std::sync::atomic::AtomicBool::new(false),
    );
    assert!(out.report.complete, "{:?}", out.report.error);
    assert_eq!(
        published(&exported),
        got,
        "the same lines, partition by partition"
    );

    // A second worker finds nothing to do; the spool is empty.
    let o = work(
        &[
            "--spool",
            spool.to_str().unwrap(),
            dest.to_str().unwrap(),
            "--once",
        ],
        &[],
    );
    ok(&o);
    assert_eq!(published(&dest), got);

    // The error output replays as submissions (path, body, day of receipt), not as
    // legacy records: `reprocess --errors` judges them again for the same reasons.
    let spec = backfill::export::manifest::ReprocessSpec {
        source_layout: 2,
        layout: 3,
        errors: true,
    };
    let opts = backfill::export::ExportOptions {
        jobs: 1,
        job_name: "reprocess-v3".into(),
        folder_margin: 0,
        split_size: u64::MAX,
        reprocess: Some(spec.clone()),
        ..Default::default()
    };
    let source = backfill::reprocess::StoreSource::new(
        Box::new(backfill::store::local::LocalStore::new(&dest).unwrap()),
        spec,
        opts.window,
    );
    let again = t.path().join("again");
    let again_store = backfill::store::local::LocalStore::new(&again).unwrap();
    let out = backfill::export::export(
        mappings,
        &source,
        &again_store,
        &again_store,
        &opts,
        &indicatif::ProgressBar::hidden(),
        &std::sync::atomic::AtomicBool::new(false),
    );
    assert!(out.report.complete, "{:?}", out.report.error);
    let st = &out.report.stats;
    assert_eq!(
        (st.records_in, st.records_out, st.records_error),
        (66, 60, 6)
    );
    let reasons: Vec<(&str, u64)> = st
        .errors_by_reason
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(reasons, [("corrupted_data", 3), ("invalid_json", 3)]);
    assert_eq!(published(&again).len(), got.len());
}

#[test]
fn a_worker_killed_mid_file_is_redone_exactly_once() {
    let t = tempfile::tempdir().unwrap();
    let spool = t.path().join("spool");
    let mut s = Server::start(&spool, &["--rotate-size", "16KB"]);
    let sent = submit(&s, 1, 50, 4);
    assert!(s.stop().success());
    let raw = names(&spool.join("ready"));
    // A reference: the same raw logs, published by an undisturbed worker.
    let copy = t.path().join("copy");
    for d in ["ready"] {
        std::fs::create_dir_all(copy.join(d)).unwrap();
        for n in &raw {
            std::fs::copy(spool.join(d).join(n), copy.join(d).join(n)).unwrap();
        }
    }
    let reference = t.path().join("reference");
    ok(&work(
        &[
            "--spool",
            copy.to_str().unwrap(),
            reference.to_str().unwrap(),
            "--once",
        ],
        &[],
    ));
    let want = tree(&reference);
    let day = today();

    let dest = t.path().join("dest");
    for point in [
        "unit-staged@1=kill",
        "objects-published@1=kill",
        "manifest-written@1=kill",
    ] {
        let o = work(
            &[
                "--spool",
                spool.to_str().unwrap(),
                dest.to_str().unwrap(),
                "--once",
                "--claim-ttl",
                "1",
            ],
            &[("BACKFILL_FAILPOINTS", point.to_string())],
        );
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&o.status),
            Some(9),
            "{point}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            !names(&spool.join("claimed")).is_empty(),
            "{point}: the dead worker's claim stays"
        );
        // Until the claim is stale, another worker leaves it alone: wait for it.
        wait_until(
            Duration::from_secs(20),
            "the dead worker's claim to age 1 s",
            || {
                claim_ages(&spool.join("claimed"))
                    .iter()
                    .all(|a| *a > Duration::from_secs(1))
            },
        );
    }
    let o = work(
        &[
            "--spool",
            spool.to_str().unwrap(),
            dest.to_str().unwrap(),
            "--once",
            "--claim-ttl",
            "1",
        ],
        &[],
    );
    ok(&o);
    assert!(names(&spool.join("claimed")).is_empty() && names(&spool.join("ready")).is_empty());
    let got = published(&dest);
    assert_eq!(
        ids(&got),
        expected(&sent, &day),
        "every record exactly once"
    );
    assert_eq!(tree(&dest), want, "byte-identical to an undisturbed worker");
}

/// How long ago each claimed file was claimed or renewed (its inode's change time,
/// as the worker judges it).
fn claim_ages(dir: &Path) -> Vec<Duration> {
    use std::os::unix::fs::MetadataExt;
    names(dir)
        .iter()
        .map(|n| {
            let m = std::fs::metadata(dir.join(n)).unwrap();
            let changed = std::time::UNIX_EPOCH
                + Duration::from_secs(m.ctime() as u64)
                + Duration::from_nanos(m.ctime_nsec() as u64);
            changed.elapsed().unwrap_or_default()
        })
        .collect()
}

fn s3_env() -> Vec<(&'static str, String)> {
    let var = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| {
            panic!("{k} is not set: run through scripts/test-servers.sh (SeaweedFS and moto)")
        })
    };
    vec![
        ("AWS_ENDPOINT_URL_SQS", var("BACKFILL_TEST_SQS_ENDPOINT")),
        ("AWS_ENDPOINT_URL_S3", var("BACKFILL_TEST_S3_ENDPOINT")),
        ("AWS_ACCESS_KEY_ID", var("AWS_ACCESS_KEY_ID")),
        ("AWS_SECRET_ACCESS_KEY", var("AWS_SECRET_ACCESS_KEY")),
        ("AWS_REGION", var("AWS_REGION")),
        ("BACKFILL_S3_PATH_STYLE", "1".into()),
    ]
}

/// The test server's S3 store at `url`.
fn s3_store(env: &[(&str, String)], url: &str) -> backfill::store::s3::S3Store {
    let endpoint = env.iter().find(|e| e.0 == "AWS_ENDPOINT_URL_S3").unwrap();
    let opts = backfill::store::s3::S3Options {
        endpoint_url: Some(endpoint.1.clone()),
        path_style: true,
        ..Default::default()
    };
    backfill::store::s3::S3Store::from_url(url, &opts, Default::default()).unwrap()
}

/// A fresh queue and bucket on the test servers.
fn queue_and_bucket() -> (String, String) {
    let env = s3_env();
    let get = |k: &str| env.iter().find(|e| e.0 == k).unwrap().1.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let name = format!("ingest-{}-{}", std::process::id(), now_ms());
    rt.block_on(async {
        let creds = aws_sdk_s3::config::Credentials::new(
            get("AWS_ACCESS_KEY_ID"),
            get("AWS_SECRET_ACCESS_KEY"),
            None,
            None,
            "tests",
        );
        let base = || {
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(aws_config::Region::new(get("AWS_REGION")))
                .credentials_provider(creds.clone())
        };
        let s3conf = base().endpoint_url(get("AWS_ENDPOINT_URL_S3")).load().await;
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&s3conf)
                .force_path_style(true)
                .build(),
        );
        s3.create_bucket().bucket(&name).send().await.unwrap();
        let sqsconf = base()
            .endpoint_url(get("AWS_ENDPOINT_URL_SQS"))
            .load()
            .await;
        let sqs = aws_sdk_sqs::Client::new(&sqsconf);
        let url = sqs
            .create_queue()
            .queue_name(&name)
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        (url, name)
    })
}

#[test]
fn three_workers_on_sqs_and_s3_one_killed_publish_every_record_once() {
    let t = tempfile::tempdir().unwrap();
    let env = s3_env();
    let (queue, bucket) = queue_and_bucket();
    let incoming = format!("s3://{bucket}/incoming");
    let dest = format!("s3://{bucket}/published");
    let spool = t.path().join("spool");
    let mut cmd = Command::new(BIN);
    cmd.args(base_args(&spool)).args([
        "--rotate-size",
        "12KB",
        "--queue",
        &queue,
        "--incoming",
        &incoming,
    ]);
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let mut s = Server::spawn(cmd, &spool);
    let sent = submit(&s, 1, 60, 4);
    assert!(s.stop().success(), "{}", s.log());
    assert!(
        names(&spool.join("ready")).is_empty() && names(&spool.join("claimed")).is_empty(),
        "every raw log forwarded: {}",
        s.log()
    );
    let args = |extra: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "--queue",
            &queue,
            "--incoming",
            &incoming,
            &dest,
            "--once",
            "--visibility-timeout",
            "2",
            "--poll",
            "1",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    let spawn = |extra: &[&'static str], fail: Option<&str>| {
        let mut c = Command::new(BIN);
        c.arg("work").args(args(extra));
        for (k, v) in &env {
            c.env(k, v);
        }
        if let Some(f) = fail {
            c.env("BACKFILL_FAILPOINTS", f);
        }
        c.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let killed = spawn(&[], Some("objects-published@1=kill"));
    let a = spawn(&[], None);
    let b = spawn(&[], None);
    let k = killed.wait_with_output().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&k.status),
        Some(9),
        "{}",
        String::from_utf8_lossy(&k.stderr)
    );
    // The others wait for the dead worker's message to reappear, and finish it.
    for c in [a, b] {
        let o = c.wait_with_output().unwrap();
        ok(&o);
    }
    // Read the published store back through a local copy of its objects.
    let local = t.path().join("published");
    let store = s3_store(&env, &dest);
    use backfill::store::Store;
    for o in store.list("").unwrap() {
        let p = local.join(&o.key);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, store.get(&o.key).unwrap().unwrap()).unwrap();
    }
    assert_eq!(
        ids(&published(&local)),
        expected(&sent, &today()),
        "every record exactly once"
    );
    let incoming_store = s3_store(&env, &incoming);
    assert!(
        incoming_store.list("").unwrap().is_empty(),
        "incoming emptied"
    );
}
