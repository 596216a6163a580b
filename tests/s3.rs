//! The S3 store against a real SeaweedFS (started by `scripts/test-servers.sh --s3`),
//! directly and through a fault-injecting proxy. No mock of S3 anywhere: every
//! request is signed, sent and stored for real.

pub(crate) mod proxy;

use aws_sdk_s3::Client;
use backfill::store::s3::{S3Options, S3Store, Sse};
use backfill::store::{contract, Store};
use proxy::{Fault, Proxy, Req};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

const MIB: usize = 1 << 20;

/// The test server's coordinates, from the environment `scripts/s3.sh env` prints.
pub(crate) struct Env {
    pub(crate) endpoint: String,
    access_key: String,
    secret_key: String,
    region: String,
}

pub(crate) fn env() -> Env {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: the S3 tests need the SeaweedFS test server. Run them \
                 through `scripts/test-servers.sh --s3 -- cargo test --test tests s3`"
            )
        })
    };
    Env {
        endpoint: var("BACKFILL_TEST_S3_ENDPOINT"),
        access_key: var("AWS_ACCESS_KEY_ID"),
        secret_key: var("AWS_SECRET_ACCESS_KEY"),
        region: var("AWS_REGION"),
    }
}

/// Runs `f` on a private runtime: for the tests' own look-ups (create a bucket,
/// HeadObject), never for the store, which must be called from plain threads.
pub(crate) fn admin<T>(f: impl AsyncFnOnce(&Client) -> T) -> T {
    let e = env();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(e.region.clone()))
            .endpoint_url(&e.endpoint)
            .load()
            .await;
        let client = Client::from_conf(
            aws_sdk_s3::config::Builder::from(&config)
                .force_path_style(true)
                .build(),
        );
        f(&client).await
    })
}

/// A new, empty bucket.
pub(crate) fn fresh_bucket(hint: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "bf-{hint}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    admin(async |c| c.create_bucket().bucket(&name).send().await.map(|_| ())).unwrap_or_else(|e| {
        panic!(
            "creating bucket {name}: {}",
            aws_sdk_s3::error::DisplayErrorContext(e)
        )
    });
    name
}

/// Options for the test server (or a proxy in front of it at `endpoint`).
fn opts(endpoint: &str) -> S3Options {
    S3Options {
        endpoint_url: Some(endpoint.to_string()),
        path_style: true,
        region: Some(env().region),
        ..S3Options::default()
    }
}

fn metadata() -> BTreeMap<String, String> {
    [
        ("backfill-version", "0.1.0"),
        ("mappings-version", "m-1234abcd"),
        ("job", "export-test"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn store(url: &str, opts: &S3Options) -> S3Store {
    S3Store::from_url(url, opts, metadata()).unwrap_or_else(|e| panic!("{url}: {e:#}"))
}

/// Bytes that differ at every offset within a part, so a misplaced part shows.
fn data(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes `bytes` through a streaming writer in uneven pieces.
fn write_streaming(store: &S3Store, key: &str, bytes: &[u8]) -> std::io::Result<u64> {
    let mut w = store.create(key)?;
    for piece in bytes.chunks(MIB + 7) {
        w.write_all(piece)?;
    }
    w.commit()
}

/// Multipart uploads not yet completed or aborted, as (key, upload id).
pub(crate) fn incomplete_uploads(bucket: &str) -> Vec<(String, String)> {
    admin(async |c| {
        let out = c
            .list_multipart_uploads()
            .bucket(bucket)
            .send()
            .await
            .unwrap();
        out.uploads()
            .iter()
            .map(|u| {
                (
                    u.key().unwrap_or_default().to_string(),
                    u.upload_id().unwrap_or_default().to_string(),
                )
            })
            .collect()
    })
}

/// Every key in the bucket (not only under a store's prefix).
pub(crate) fn bucket_keys(bucket: &str) -> Vec<String> {
    admin(async |c| {
        let out = c.list_objects_v2().bucket(bucket).send().await.unwrap();
        out.contents()
            .iter()
            .map(|o| o.key().unwrap_or_default().to_string())
            .collect()
    })
}

#[test]
fn s3_store_contract() {
    let e = env();
    let bucket = fresh_bucket("contract");
    let s = store(&format!("s3://{bucket}/some/prefix"), &opts(&e.endpoint));
    assert_eq!(s.describe(), format!("s3://{bucket}/some/prefix"));
    contract::run(&s);
    // Everything the contract left is under the prefix.
    assert!(bucket_keys(&bucket)
        .iter()
        .all(|k| k.starts_with("some/prefix/")));
}

#[test]
fn s3_listing_pages_past_1000_keys() {
    let e = env();
    let bucket = fresh_bucket("list");
    let s = store(&format!("s3://{bucket}/p"), &opts(&e.endpoint));
    let n = 1_050;
    std::thread::scope(|scope| {
        for t in 0..8 {
            let s = &s;
            scope.spawn(move || {
                for i in (t..n).step_by(8) {
                    s.put(&format!("k/{i:05}"), i.to_string().as_bytes())
                        .unwrap();
                }
            });
        }
    });
    s.put("other/x", b"x").unwrap();
    let listed = s.list("k/").unwrap();
    let want: Vec<String> = (0..n).map(|i| format!("k/{i:05}")).collect();
    assert_eq!(
        listed.iter().map(|m| m.key.clone()).collect::<Vec<_>>(),
        want
    );
    assert_eq!(listed[1000].size, 4);
    assert_eq!(s.list("").unwrap().len(), n + 1);
}

#[test]
fn s3_multipart_round_trips_with_parts_in_parallel() {
    let e = env();
    let bucket = fresh_bucket("multipart");
    let proxy = Proxy::start(&e.endpoint);
    // Answers to parts are held until two are in flight at once.
    proxy.gate_parts(2);
    let o = S3Options {
        part_size: 5 * MIB as u64,
        multipart_threshold: 5 * MIB as u64,
        parts_in_flight: 4,
        ..opts(&proxy.url())
    };
    let s = store(&format!("s3://{bucket}/mp"), &o);
    let bytes = data(40 * MIB);
    let t = Instant::now();
    assert_eq!(
        write_streaming(&s, "big.xz", &bytes).unwrap(),
        bytes.len() as u64
    );
    eprintln!("40 MiB multipart upload: {:?}", t.elapsed());

    let counts = proxy.counts();
    assert_eq!(counts.get(&Req::CreateUpload), Some(&1));
    assert_eq!(counts.get(&Req::UploadPart), Some(&8));
    assert_eq!(counts.get(&Req::Complete), Some(&1));
    assert_eq!(counts.get(&Req::PutObject), None);
    let max = proxy.max_parts_in_flight();
    assert!((2..=4).contains(&max), "{max} parts were in flight at most");

    assert!(s.get("big.xz").unwrap().unwrap() == bytes, "get differs");
    let mut streamed = Vec::new();
    s.open("big.xz")
        .unwrap()
        .read_to_end(&mut streamed)
        .unwrap();
    assert!(streamed == bytes, "streamed read differs");
    // Across the boundary of parts 1 and 2.
    let at = 5 * MIB as u64 - 10;
    assert_eq!(
        s.read_range("big.xz", at, 20).unwrap(),
        &bytes[at as usize..][..20]
    );
    assert_eq!(
        s.list("").unwrap(),
        vec![backfill::store::ObjectMeta {
            key: "big.xz".into(),
            size: bytes.len() as u64
        }]
    );
    let etag = admin(async |c| {
        c.head_object()
            .bucket(&bucket)
            .key("mp/big.xz")
            .send()
            .await
            .unwrap()
            .e_tag()
            .unwrap_or_default()
            .to_string()
    });
    assert!(etag.trim_matches('"').ends_with("-8"), "etag {etag}");
    assert_eq!(incomplete_uploads(&bucket), vec![]);
}

#[test]
fn s3_abandoned_writers_leave_nothing() {
    let e = env();
    let bucket = fresh_bucket("abandon");
    let o = S3Options {
        part_size: 5 * MIB as u64,
        multipart_threshold: 5 * MIB as u64,
        ..opts(&e.endpoint)
    };
    let s = store(&format!("s3://{bucket}"), &o);
    let bytes = data(17 * MIB);
    // Three parts sent (or in flight), the rest buffered: then dropped.
    let mut w = s.create("gone.xz").unwrap();
    w.write_all(&bytes).unwrap();
    assert_eq!(
        incomplete_uploads(&bucket).len(),
        1,
        "the upload had started"
    );
    drop(w);
    assert_eq!(incomplete_uploads(&bucket), vec![]);
    assert_eq!(s.get("gone.xz").unwrap(), None);
    // Small, never started.
    let mut w = s.create("small.json").unwrap();
    w.write_all(b"{}").unwrap();
    drop(w);
    assert_eq!(bucket_keys(&bucket), Vec::<String>::new());
}

#[test]
fn s3_objects_carry_metadata_content_type_storage_class_and_encryption() {
    let e = env();
    let bucket = fresh_bucket("meta");
    let o = S3Options {
        storage_class: Some("STANDARD_IA".into()),
        sse: Some(Sse::Aes256),
        part_size: 5 * MIB as u64,
        multipart_threshold: 5 * MIB as u64,
        ..opts(&e.endpoint)
    };
    // Made with other metadata first, as a caller that learns the job later would.
    let s = S3Store::from_url(&format!("s3://{bucket}/m"), &o, BTreeMap::new())
        .unwrap()
        .with_metadata(metadata())
        .unwrap();
    s.put("_backfill/jobs/j.json", b"{\"a\":1}").unwrap();
    write_streaming(&s, "a/b.v2.log.j-0-0.xz", &data(11 * MIB)).unwrap();
    s.put("plain", b"x").unwrap();
    for (key, content_type) in [
        ("m/_backfill/jobs/j.json", "application/json"),
        ("m/a/b.v2.log.j-0-0.xz", "application/x-xz"),
        ("m/plain", "application/octet-stream"),
    ] {
        let (ct, md, sc, sse) = admin(async |c| {
            let h = c
                .head_object()
                .bucket(&bucket)
                .key(key)
                .send()
                .await
                .unwrap();
            (
                h.content_type().map(str::to_owned),
                h.metadata().cloned().unwrap_or_default(),
                h.storage_class().map(|c| c.as_str().to_owned()),
                h.server_side_encryption().map(|c| c.as_str().to_owned()),
            )
        });
        assert_eq!(ct.as_deref(), Some(content_type), "{key}");
        let want: HashMap<String, String> = metadata().into_iter().collect();
        assert_eq!(md, want, "{key}");
        assert_eq!(sc.as_deref(), Some("STANDARD_IA"), "{key}");
        assert_eq!(sse.as_deref(), Some("AES256"), "{key}");
    }
}

#[test]
fn s3_puts_and_uploads_survive_server_errors_and_broken_connections() {
    let e = env();
    let bucket = fresh_bucket("faults");
    let proxy = Proxy::start(&e.endpoint);
    let o = S3Options {
        part_size: 5 * MIB as u64,
        multipart_threshold: 5 * MIB as u64,
        s3_retries: 4,
        ..opts(&proxy.url())
    };
    let s = store(&format!("s3://{bucket}/f"), &o);
    // Single puts: throttled twice, then cut halfway through the body.
    proxy.fault(Req::PutObject, Fault::Status(503, "SlowDown"), 2);
    proxy.fault(Req::PutObject, Fault::CutRequest(1000), 1);
    let small = data(4000);
    s.put("small.json", &small).unwrap();
    assert_eq!(proxy.counts()[&Req::PutObject], 4);

    // Multipart: the start's answer is lost (the server made an upload nobody
    // knows of), parts get errors and a cut, the completion's answer is lost.
    proxy.fault(Req::CreateUpload, Fault::DropResponse, 1);
    proxy.fault(Req::UploadPart, Fault::Status(500, "InternalError"), 2);
    proxy.fault(Req::UploadPart, Fault::Status(503, "SlowDown"), 1);
    proxy.fault(Req::UploadPart, Fault::CutRequest(MIB), 1);
    proxy.fault(Req::Complete, Fault::DropResponse, 1);
    let big = data(23 * MIB);
    assert_eq!(
        write_streaming(&s, "big.xz", &big).unwrap(),
        big.len() as u64
    );
    assert_eq!(proxy.faults_applied(), 3 + 6);
    let counts = proxy.counts();
    assert_eq!(counts[&Req::CreateUpload], 2);
    assert_eq!(counts[&Req::UploadPart], 5 + 4);
    assert_eq!(counts[&Req::Complete], 2);

    // No loss, no duplicate, no stray upload.
    assert!(s.get("small.json").unwrap().unwrap() == small);
    assert!(s.get("big.xz").unwrap().unwrap() == big);
    assert_eq!(bucket_keys(&bucket), vec!["f/big.xz", "f/small.json"]);
    assert_eq!(incomplete_uploads(&bucket), vec![]);
}

#[test]
fn s3_reads_survive_server_errors() {
    let e = env();
    let bucket = fresh_bucket("readfaults");
    let proxy = Proxy::start(&e.endpoint);
    let s = store(&format!("s3://{bucket}"), &opts(&proxy.url()));
    let bytes = data(100_000);
    s.put("x", &bytes).unwrap();
    proxy.fault(Req::Get, Fault::Status(503, "SlowDown"), 2);
    assert!(s.get("x").unwrap().unwrap() == bytes);
    proxy.fault(Req::Get, Fault::Status(500, "InternalError"), 1);
    assert_eq!(s.read_range("x", 10, 5).unwrap(), &bytes[10..15]);
    proxy.fault(Req::List, Fault::Status(503, "SlowDown"), 1);
    assert_eq!(s.list("").unwrap().len(), 1);

    // Connections cut in the middle of the answer: a whole get starts over, a
    // streaming read resumes where it stopped.
    let big = data(3 * MIB);
    s.put("big", &big).unwrap();
    proxy.fault(Req::Get, Fault::CutResponse(MIB), 1);
    assert!(s.get("big").unwrap().unwrap() == big);
    let before = proxy.counts()[&Req::Get];
    proxy.fault(Req::Get, Fault::CutResponse(MIB), 1);
    proxy.fault(Req::Get, Fault::CutResponse(MIB), 1);
    let mut streamed = Vec::new();
    s.open("big").unwrap().read_to_end(&mut streamed).unwrap();
    assert!(streamed == big, "resumed read differs");
    assert_eq!(proxy.counts()[&Req::Get] - before, 3);

    // A resumed read never splices two versions of an object: when it changed in
    // between, the read fails.
    proxy.fault(Req::Get, Fault::CutResponse(MIB), 1);
    let mut r = s.open("big").unwrap();
    let mut head = [0u8; 10];
    r.read_exact(&mut head).unwrap();
    s.put("big", &data(3 * MIB + 1)).unwrap();
    let err = r.read_to_end(&mut Vec::new()).unwrap_err();
    let msg = format!("{err:#}");
    eprintln!("changed object: {msg}");
    assert!(msg.contains("resumed get") && msg.contains("412"), "{msg}");
}

#[test]
fn s3_faults_outlasting_the_retries_fail_clearly_and_leave_nothing() {
    let e = env();
    let bucket = fresh_bucket("giveup");
    let proxy = Proxy::start(&e.endpoint);
    let o = S3Options {
        part_size: 5 * MIB as u64,
        multipart_threshold: 5 * MIB as u64,
        s3_retries: 2,
        ..opts(&proxy.url())
    };
    let s = store(&format!("s3://{bucket}/g"), &o);

    proxy.fault(Req::PutObject, Fault::Status(503, "SlowDown"), 3);
    let err = s.put("small.json", b"{}").unwrap_err();
    let msg = format!("{err:#}");
    eprintln!("put: {msg}");
    assert!(
        msg.contains(&format!("s3://{bucket}/g/small.json")),
        "{msg}"
    );
    assert!(msg.contains("after 3 attempts"), "{msg}");
    assert!(msg.contains("SlowDown") && msg.contains("503"), "{msg}");
    assert!(msg.contains(&proxy.url()), "{msg}");

    // Every part fails: the first attempt is cut, then it is 500s all the way.
    proxy.fault(Req::UploadPart, Fault::CutRequest(100), 1);
    proxy.fault(Req::UploadPart, Fault::Status(500, "InternalError"), 1000);
    let err = write_streaming(&s, "big.xz", &data(12 * MIB)).unwrap_err();
    let msg = format!("{err:#}");
    eprintln!("multipart: {msg}");
    let uploads_seen = proxy.counts()[&Req::CreateUpload];
    assert_eq!(uploads_seen, 1);
    assert!(msg.contains(&format!("s3://{bucket}/g/big.xz")), "{msg}");
    assert!(msg.contains("multipart upload id "), "{msg}");
    assert!(msg.contains("after 3 attempts"), "{msg}");
    assert!(msg.contains("InternalError"), "{msg}");
    assert!(
        !msg.contains(&e.secret_key) && !msg.contains(&e.access_key),
        "{msg}"
    );

    assert_eq!(s.get("small.json").unwrap(), None);
    assert_eq!(s.get("big.xz").unwrap(), None);
    assert_eq!(bucket_keys(&bucket), Vec::<String>::new());
    assert_eq!(incomplete_uploads(&bucket), vec![]);
}

#[test]
fn s3_corruption_in_transit_is_refused_and_resent() {
    let e = env();
    let bucket = fresh_bucket("corrupt");
    let proxy = Proxy::start(&e.endpoint);
    let o = S3Options {
        part_size: 5 * MIB as u64,
        multipart_threshold: 5 * MIB as u64,
        ..opts(&proxy.url())
    };
    let s = store(&format!("s3://{bucket}"), &o);
    proxy.fault(Req::PutObject, Fault::Corrupt(1234), 1);
    proxy.fault(Req::UploadPart, Fault::Corrupt(3 * MIB), 1);
    let small = data(5000);
    let big = data(11 * MIB);
    s.put("small", &small).unwrap();
    write_streaming(&s, "big.xz", &big).unwrap();
    assert_eq!(proxy.faults_applied(), 2);
    assert!(s.get("small").unwrap().unwrap() == small);
    assert!(s.get("big.xz").unwrap().unwrap() == big);
}

#[test]
fn s3_server_checks_the_crc32c_of_what_it_receives() {
    // The store relies on this: a body whose CRC32C (sent with every put and part)
    // does not match is refused, whatever else the request carries.
    let bucket = fresh_bucket("crc");
    let err = admin(async |c| {
        c.put_object()
            .bucket(&bucket)
            .key("k")
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b"hello"))
            .checksum_crc32_c("AAAAAA==")
            .send()
            .await
            .unwrap_err()
    });
    let text = aws_sdk_s3::error::DisplayErrorContext(&err).to_string();
    assert!(
        text.contains("BadDigest") || text.contains("Mismatch"),
        "{text}"
    );
    assert_eq!(bucket_keys(&bucket), Vec::<String>::new());
}

#[test]
fn s3_credentials_never_appear_in_errors() {
    let e = env();
    let bucket = fresh_bucket("secret");
    let wrong_secret = "wrong-secret-that-must-not-leak-0123456789";
    let config = admin(async |_| {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(e.region.clone()))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                &e.access_key,
                wrong_secret,
                None,
                None,
                "test",
            ))
            .load()
            .await
    });
    let s = S3Store::with_sdk_config(
        &format!("s3://{bucket}/p"),
        &opts(&e.endpoint),
        metadata(),
        &config,
    )
    .unwrap();
    let errors = [
        s.check().unwrap_err(),
        s.put("k", b"x").unwrap_err(),
        s.get("k").unwrap_err(),
        s.list("").unwrap_err(),
        write_streaming(&s, "big", &data(20 * MIB)).unwrap_err(),
    ];
    for err in &errors {
        eprintln!("wrong secret: {err:#}");
        for text in [format!("{err:#}"), format!("{err:?}")] {
            for secret in [wrong_secret, e.secret_key.as_str(), e.access_key.as_str()] {
                assert!(!text.contains(secret), "{text}");
            }
            assert!(
                text.contains(&bucket) && text.contains(&e.endpoint),
                "{text}"
            );
        }
    }
    assert!(
        format!("{:#}", errors[1]).contains("SignatureDoesNotMatch"),
        "{:#}",
        errors[1]
    );
    // And the store itself prints no credentials either.
    assert!(!format!("{s:?}").contains(wrong_secret));
}

#[test]
fn s3_missing_bucket_is_a_clear_error() {
    let e = env();
    let err = S3Store::from_url("s3://no-such-bucket-here/x", &opts(&e.endpoint), metadata())
        .unwrap_err();
    let msg = format!("{err:#}");
    eprintln!("missing bucket: {msg}");
    assert!(msg.contains("bucket does not exist"), "{msg}");
    assert!(msg.contains("s3://no-such-bucket-here"), "{msg}");
    for url in ["s3://", "s3:///x"] {
        let msg = S3Store::from_url(url, &opts(&e.endpoint), metadata())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("bucket name is missing"), "{url}: {msg}");
    }
}

#[test]
fn s3_limits_cap_requests_in_flight_and_the_write_rate() {
    let e = env();
    let bucket = fresh_bucket("limits");
    let proxy = Proxy::start(&e.endpoint);
    let o = S3Options {
        part_size: 5 * MIB as u64,
        multipart_threshold: 5 * MIB as u64,
        parts_in_flight: 4,
        max_requests: 1,
        ..opts(&proxy.url())
    };
    let s = store(&format!("s3://{bucket}"), &o);
    write_streaming(&s, "one-at-a-time", &data(21 * MIB)).unwrap();
    assert_eq!(proxy.max_parts_in_flight(), 1);

    // 10 MB/s with 1 s of burst: 26.2 MB need at least 1.6 s.
    let o = S3Options {
        part_size: 5 * MIB as u64,
        multipart_threshold: 5 * MIB as u64,
        max_write_rate: Some(10.0),
        ..opts(&e.endpoint)
    };
    let s = store(&format!("s3://{bucket}"), &o);
    let t = Instant::now();
    write_streaming(&s, "paced", &data(25 * MIB)).unwrap();
    let took = t.elapsed();
    assert!(
        took.as_secs_f64() >= 1.55,
        "26.2 MB at 10 MB/s took {took:?}"
    );
}

#[test]
fn s3_remove_incomplete_aborts_only_owned_uploads() {
    let e = env();
    let bucket = fresh_bucket("incomplete");
    let s = store(&format!("s3://{bucket}/p"), &opts(&e.endpoint));
    for key in [
        "p/a/mine.job1-x-0.xz",
        "p/a/theirs.other-x-0.xz",
        "elsewhere/mine.job1-x-0.xz",
    ] {
        admin(async |c| {
            c.create_multipart_upload()
                .bucket(&bucket)
                .key(key)
                .send()
                .await
                .map(|_| ())
        })
        .unwrap();
    }
    let removed = s
        .remove_incomplete(&|k| k.contains(".job1-"), false)
        .unwrap();
    assert_eq!(removed, 1);
    let left: Vec<String> = incomplete_uploads(&bucket)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        left,
        vec![
            "elsewhere/mine.job1-x-0.xz".to_string(),
            "p/a/theirs.other-x-0.xz".to_string()
        ]
    );
}
