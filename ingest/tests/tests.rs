//! `ingest serve` over real loopback HTTP, against the real binary. Every test ends
//! by re-reading every log it produced with the library's `RawLogReader`: no damaged
//! byte, and exactly the records that were answered 200.

mod common;
mod work;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

fn spool() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn both_path_forms_land_whole_in_ready_files() {
    let dir = spool();
    let mut s = Server::start(dir.path(), &[]);
    let before = now_ms();
    let a = payload(1, 8 * 1024);
    let b = br#"{"ver":1,"plain":true}"#.to_vec();
    let r = s.post(
        FULL_PATH,
        &a,
        &[
            ("Content-Encoding", "gzip"),
            ("X-Forwarded-For", "203.0.113.9, 10.0.0.1"),
        ],
    );
    assert_eq!((r.status, r.text().as_str()), (200, "OK"));
    let r = s.post(ID_PATH, &b, &[]);
    assert_eq!(r.status, 200);
    let after = now_ms();
    assert!(s.stop().success(), "{}", s.log());

    assert!(
        names(&dir.path().join("open")).is_empty(),
        "open/ is empty after a stop"
    );
    let ready = names(&dir.path().join("ready"));
    assert_eq!(ready.len(), 1, "{ready:?}");
    let name = &ready[0];
    assert!(
        name.starts_with(&format!("telemetry.log.v2.{WRITER}."))
            && name.len() == "telemetry.log.v2.test-1.20261206120000.000000".len(),
        "{name}"
    );
    let recs = read_dir_records(&dir.path().join("ready"));
    assert_eq!(recs.len(), 2);
    assert_eq!(
        recs[0].path,
        FULL_PATH
            .strip_prefix("/submit/telemetry/")
            .unwrap()
            .as_bytes()
    );
    assert_eq!(recs[0].body, a);
    assert_eq!(recs[0].ip.as_deref(), Some(&b"203.0.113.9"[..]));
    assert_eq!(
        recs[1].path,
        ID_PATH
            .strip_prefix("/submit/telemetry/")
            .unwrap()
            .as_bytes()
    );
    assert_eq!(recs[1].body, b);
    assert_eq!(
        recs[1].ip.as_deref(),
        Some(&b"127.0.0.1"[..]),
        "no X-Forwarded-For: the socket's address"
    );
    for r in &recs {
        assert!(
            (before..=after).contains(&r.timestamp_ms),
            "{} not in {before}..={after}",
            r.timestamp_ms
        );
    }
}

#[test]
fn no_ip_stores_an_empty_ip() {
    let dir = spool();
    let mut s = Server::start(dir.path(), &["--no-ip"]);
    assert_eq!(
        s.post(ID_PATH, b"{}", &[("X-Forwarded-For", "203.0.113.9")])
            .status,
        200
    );
    assert!(s.stop().success());
    let recs = read_dir_records(&dir.path().join("ready"));
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].ip.as_deref(), Some(&b""[..]));
}

#[test]
fn bad_requests_get_the_old_status_codes_and_store_nothing_else() {
    let dir = spool();
    let mut s = Server::start(dir.path(), &[]);
    let addr = s.addr;
    // Wrong paths.
    for path in [
        "/",
        "/submit/other/x",
        "/submit/telemetry",
        "/submit/telemetry/",
        "/submit/telemetry/a/b",
        "/submit/telemetry/a/b/c/d/e/f/g",
        "/submit/telemetry/a//c/d/e/f",
    ] {
        assert_eq!(s.post(path, b"{}", &[]).status, 404, "{path}");
    }
    // Wrong methods.
    for method in ["GET", "PUT", "DELETE", "PATCH"] {
        let req = format!("{method} {FULL_PATH} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
        let r = exchange(addr, req.as_bytes());
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header("allow"), Some("POST"));
    }
    let r = exchange(
        addr,
        b"POST /status HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 405);
    assert_eq!(s.get("/status").status, 200);
    // Oversize body: the default limit is 200 KiB; answered 202 and discarded.
    let big = vec![b'x'; 200 * 1024 + 1];
    assert_eq!(s.post(ID_PATH, &big, &[]).status, 202);
    let just = vec![b'y'; 200 * 1024];
    assert_eq!(
        s.post(ID_PATH, &just, &[]).status,
        200,
        "exactly the limit is stored"
    );
    // Oversize path: over 10 KiB after the prefix.
    let long = format!("/submit/telemetry/{}", "p".repeat(10 * 1024 + 1));
    assert_eq!(s.post(&long, b"{}", &[]).status, 202);
    // No Content-Length (a chunked body): 411.
    let chunked = format!(
        "POST {ID_PATH} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n"
    );
    assert_eq!(exchange(addr, chunked.as_bytes()).status, 411);
    // The server still serves.
    assert_eq!(s.post(FULL_PATH, b"{\"ok\":1}", &[]).status, 200);
    assert!(s.stop().success());
    let recs = read_dir_records(&dir.path().join("ready"));
    let bodies: Vec<&[u8]> = recs.iter().map(|r| r.body.as_slice()).collect();
    assert_eq!(bodies, vec![&just[..], b"{\"ok\":1}"]);
}

#[test]
fn limits_are_configurable() {
    let dir = spool();
    let mut s = Server::start(dir.path(), &["--max-body", "1000", "--max-path", "40"]);
    assert_eq!(s.post(ID_PATH, &[b'a'; 1001], &[]).status, 202);
    assert_eq!(s.post(ID_PATH, &[b'b'; 1000], &[]).status, 200);
    // 36 bytes of doc id fit in 40; the long form does not.
    assert_eq!(s.post(FULL_PATH, b"{}", &[]).status, 202);
    assert!(s.stop().success());
    let recs = read_dir_records(&dir.path().join("ready"));
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].body, vec![b'b'; 1000]);
}

/// Decision: the server does not inflate bodies. A body that says gzip and is not
/// is stored byte for byte; the worker's core rejects it (`corrupted_data`) into
/// the replayable error output, so nothing is lost and the server stays cheap.
#[test]
fn body_claiming_gzip_but_not_gzip_is_stored_as_is() {
    let dir = spool();
    let mut s = Server::start(dir.path(), &[]);
    let mut broken = payload(7, 2000);
    broken.truncate(100); // gzip magic, then cut short
    let not_gzip = b"this is not gzip".to_vec();
    for body in [&broken, &not_gzip] {
        let r = s.post(FULL_PATH, body, &[("Content-Encoding", "gzip")]);
        assert_eq!(r.status, 200);
    }
    assert!(s.stop().success());
    let recs = read_dir_records(&dir.path().join("ready"));
    assert_eq!(recs[0].body, broken);
    assert_eq!(recs[1].body, not_gzip);
    // What the worker will see: the gzip-looking body does not inflate.
    assert!(backfill::core::body::decode_body(&recs[0].body).is_err());
}

#[test]
fn slowloris_headers_time_out_and_others_are_served() {
    let dir = spool();
    let mut s = Server::start(dir.path(), &["--header-timeout", "1s"]);
    let mut slow = TcpStream::connect(s.addr).unwrap();
    let started = Instant::now();
    slow.write_all(format!("POST {ID_PATH} HTTP/1.1\r\n").as_bytes())
        .unwrap();
    let mut writer = slow.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        // One header byte every 100 ms, for up to 10 s: never a whole head.
        for _ in 0..100 {
            if writer.write_all(b"X").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    // Others are served meanwhile.
    for i in 0..5 {
        assert_eq!(
            s.post(ID_PATH, format!("{{\"n\":{i}}}").as_bytes(), &[])
                .status,
            200
        );
    }
    // The server closes the slow connection after about the header timeout.
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 512];
    let closed = loop {
        match slow.read(&mut buf) {
            Ok(0) | Err(_) => break started.elapsed(),
            Ok(_) => continue, // a 408 before closing is fine
        }
    };
    assert!(
        closed >= Duration::from_millis(900) && closed < Duration::from_secs(5),
        "slow client cut after {closed:?}"
    );
    trickle.join().unwrap();
    assert_eq!(s.post(ID_PATH, b"{\"after\":1}", &[]).status, 200);
    assert!(s.stop().success());
    assert_eq!(read_dir_records(&dir.path().join("ready")).len(), 6);
}

#[test]
fn slow_body_is_answered_408_and_not_stored() {
    let dir = spool();
    let mut s = Server::start(dir.path(), &["--body-timeout", "1s"]);
    let mut slow = TcpStream::connect(s.addr).unwrap();
    let started = Instant::now();
    slow.write_all(
        format!("POST {ID_PATH} HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789")
            .as_bytes(),
    )
    .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let r = read_response(&mut slow).unwrap();
    assert_eq!(r.status, 408);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(s.post(ID_PATH, b"{}", &[]).status, 200);
    assert!(s.stop().success());
    let recs = read_dir_records(&dir.path().join("ready"));
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].body, b"{}");
}

#[test]
fn abrupt_disconnect_mid_body_leaves_no_torn_record() {
    let dir = spool();
    let mut s = Server::start(dir.path(), &[]);
    for _ in 0..3 {
        let mut c = TcpStream::connect(s.addr).unwrap();
        c.write_all(
            format!("POST {ID_PATH} HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        c.write_all(&[b'z'; 2000]).unwrap();
        drop(c); // gone, 3000 bytes short
    }
    assert_eq!(s.post(ID_PATH, b"{\"whole\":1}", &[]).status, 200);
    // The cut requests are not answered 200 (nobody is there to read it) and are
    // not counted as written.
    wait_until(Duration::from_secs(5), "cut requests to be seen", || {
        s.metric("ingest_requests_total{status=\"400\"}") == 3
    });
    assert_eq!(s.metric("ingest_records_written_total"), 1);
    assert!(s.stop().success());
    let recs = read_dir_records(&dir.path().join("ready"));
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].body, b"{\"whole\":1}");
}

/// A real full disk: the server runs in a private mount namespace (`unshare`, no
/// host mount is touched, the mount vanishes with the process) on a 256 KiB tmpfs,
/// and is fed 8 KiB bodies until the kernel says ENOSPC. The write that hits the
/// limit is a short write, so this also proves the cut-back of a partial record.
#[test]
fn full_disk_answers_503_and_leaves_no_torn_record() {
    let mnt = spool();
    let out = spool();
    // Copy the spool out after the server stops (the tmpfs dies with the namespace).
    let script = r#"mount -t tmpfs -o size=256k ingest-test "$SPOOL" || exit 97
"$0" "$@"
rc=$?
cp -a "$SPOOL"/. "$OUT"/ || exit 98
exit $rc"#;
    let mut cmd = std::process::Command::new("unshare");
    cmd.args([
        "--user",
        "--map-root-user",
        "--mount",
        "sh",
        "-c",
        script,
        BIN,
    ])
    .args(base_args(mnt.path()))
    .env("SPOOL", mnt.path())
    .env("OUT", out.path());
    let mut s = Server::spawn(cmd, mnt.path());
    let mut stored = Vec::new();
    let mut refused = 0;
    for i in 0..200 {
        let body = payload(i, 8 * 1024);
        let r = s.post(ID_PATH, &body, &[]);
        match r.status {
            200 => stored.push(body),
            503 => {
                assert!(r.text().contains("No space left on device"), "{}", r.text());
                assert!(r.header("retry-after").is_some());
                refused += 1;
                if refused == 3 {
                    break;
                }
            }
            other => panic!("unexpected {other}: {}", r.text()),
        }
    }
    assert!(refused == 3, "the 256 KiB spool never filled");
    assert!(
        stored.len() >= 10,
        "only {} stored before the disk was full",
        stored.len()
    );
    // Still serving, and saying why it is unhealthy.
    let st = s.get("/status");
    assert_eq!(st.status, 503);
    assert!(
        st.text().contains("No space left on device"),
        "{}",
        st.text()
    );
    // The write that hit the limit was short (part of a record reached the file)
    // and was cut back.
    let partial = s.log().lines().any(|l| {
        l.contains("cut back")
            && l.split("(after ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .is_some_and(|n| n != "0")
    });
    assert!(partial, "no short write was cut back:\n{}", s.log());
    assert!(s.stop().success(), "{}", s.log());
    let recs = read_dir_records(&out.path().join("ready"));
    let bodies: Vec<Vec<u8>> = recs.into_iter().map(|r| r.body).collect();
    assert_eq!(bodies.len(), stored.len());
    assert!(
        bodies == stored,
        "the log holds exactly the records answered 200"
    );
}

#[test]
fn low_free_disk_answers_507_and_status_turns_unhealthy() {
    let dir = spool();
    let mut s = Server::start(dir.path(), &["--min-free-disk", "1000000GB"]);
    let r = s.post(ID_PATH, b"{}", &[]);
    assert_eq!(r.status, 507, "{}", r.text());
    let st = s.get("/status");
    assert_eq!(st.status, 503);
    let text = st.text();
    assert!(
        text.contains("\"healthy\":false") && text.contains("spool disk low"),
        "{text}"
    );
    assert!(s.stop().success());
    assert!(
        names(&dir.path().join("ready")).is_empty(),
        "nothing stored"
    );
}

#[test]
fn backlog_answers_503_with_retry_after_until_workers_catch_up() {
    for limit in [["--max-backlog-files", "2"], ["--max-backlog", "1000"]] {
        let dir = spool();
        let mut s = Server::start(
            dir.path(),
            &[
                "--rotate-size",
                "1",
                limit[0],
                limit[1],
                "--retry-after",
                "7",
            ],
        );
        let body = vec![b'q'; 600];
        assert_eq!(s.post(ID_PATH, &body, &[]).status, 200, "{limit:?}");
        assert_eq!(s.post(ID_PATH, &body, &[]).status, 200, "{limit:?}");
        let r = s.post(ID_PATH, &body, &[]);
        assert_eq!(r.status, 503, "{limit:?}: {}", r.text());
        assert_eq!(r.header("retry-after"), Some("7"));
        assert!(r.text().contains("backlog"), "{}", r.text());
        // A worker claims one file: still backlog.
        let ready = dir.path().join("ready");
        let claimed = dir.path().join("claimed");
        wait_until(Duration::from_secs(5), "two files in ready/", || {
            names(&ready).len() == 2
        });
        let first = names(&ready)[0].clone();
        std::fs::rename(ready.join(&first), claimed.join(&first)).unwrap();
        assert_eq!(s.post(ID_PATH, &body, &[]).status, 503);
        // It finishes and removes the file: accepted again once the monitor sees it.
        let done = read_log(&claimed.join(&first));
        std::fs::remove_file(claimed.join(&first)).unwrap();
        let mut accepted = false;
        wait_until(Duration::from_secs(5), "the backlog to drop", || {
            accepted = s.post(ID_PATH, &body, &[]).status == 200;
            accepted
        });
        assert!(s.stop().success());
        let rest = read_dir_records(&ready);
        assert_eq!(
            done.len() + rest.len(),
            3,
            "{limit:?}: two before, one after"
        );
    }
}

#[test]
fn metrics_report_requests_bytes_rotations_and_backlog() {
    let dir = spool();
    let mut s = Server::start(dir.path(), &["--rotate-size", "1"]);
    let sizes = [100usize, 2000, 30];
    for n in sizes {
        assert_eq!(s.post(ID_PATH, &vec![b'm'; n], &[]).status, 200);
    }
    assert_eq!(s.post("/nowhere", b"", &[]).status, 404);
    // The first look counts only the requests above (a /metrics answer is counted
    // after it is rendered).
    let first = s.get("/metrics").text();
    assert!(
        first.contains("ingest_requests_total{status=\"200\"} 3\n"),
        "{first}"
    );
    assert!(
        first.contains("ingest_requests_total{status=\"404\"} 1\n"),
        "{first}"
    );
    let ready = dir.path().join("ready");
    // Make the oldest file look 100 s old.
    wait_until(Duration::from_secs(5), "three files handed over", || {
        names(&ready).len() == 3
    });
    let oldest = ready.join(&names(&ready)[0]);
    std::fs::File::options()
        .write(true)
        .open(&oldest)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(100))
        .unwrap();
    let file_bytes: u64 = names(&ready)
        .iter()
        .map(|n| std::fs::metadata(ready.join(n)).unwrap().len())
        .sum();
    wait_until(
        Duration::from_secs(5),
        "the monitor to see the old file",
        || s.metric("ingest_spool_oldest_unclaimed_age_seconds") >= 100,
    );
    assert_eq!(s.metric("ingest_received_bytes_total"), 2130);
    assert_eq!(s.metric("ingest_records_written_total"), 3);
    assert_eq!(s.metric("ingest_files_rotated_total"), 3);
    assert_eq!(s.metric("ingest_spool_backlog_files"), 3);
    assert_eq!(s.metric("ingest_spool_backlog_bytes"), file_bytes);
    assert!(s.metric("ingest_spool_free_bytes") > 0);
    let text = s.get("/metrics").text();
    assert!(
        text.contains("# TYPE ingest_requests_total counter"),
        "{text}"
    );
    assert!(s.stop().success());
    assert_eq!(read_dir_records(&ready).len(), 3);
}

#[test]
fn an_idle_file_is_handed_over_without_a_stop() {
    let dir = spool();
    let mut s = Server::start(dir.path(), &["--rotate-idle", "300ms"]);
    assert_eq!(s.post(ID_PATH, b"{\"idle\":1}", &[]).status, 200);
    let ready = dir.path().join("ready");
    wait_until(Duration::from_secs(5), "the idle file in ready/", || {
        names(&ready).len() == 1
    });
    assert!(names(&dir.path().join("open")).is_empty());
    assert_eq!(read_dir_records(&ready).len(), 1);
    // The next record starts a new, later file.
    assert_eq!(s.post(ID_PATH, b"{\"idle\":2}", &[]).status, 200);
    assert!(s.stop().success());
    let n = names(&ready);
    assert_eq!(n.len(), 2);
    assert!(n[0] < n[1]);
    assert_eq!(read_log(&ready.join(&n[1]))[0].body, b"{\"idle\":2}");
}

#[test]
fn sigterm_drains_in_flight_requests_and_hands_over_the_open_file() {
    let dir = spool();
    let mut s = Server::start(dir.path(), &[]);
    assert_eq!(s.post(ID_PATH, b"{\"before\":1}", &[]).status, 200);
    // A request in flight: headers and half the body sent.
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.write_all(
        format!("POST {FULL_PATH} HTTP/1.1\r\nHost: t\r\nContent-Length: 20\r\n\r\n0123456789")
            .as_bytes(),
    )
    .unwrap();
    // Make sure the server is reading it before the signal.
    wait_until(Duration::from_secs(5), "the in-flight connection", || {
        s.metric("ingest_connections_open") >= 2
    });
    s.signal(libc::SIGTERM);
    // It stops accepting...
    wait_until(Duration::from_secs(5), "the listener to close", || {
        TcpStream::connect(s.addr).is_err()
    });
    // ...but finishes the request in flight.
    c.write_all(b"abcdefghij").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let r = read_response(&mut c).unwrap();
    assert_eq!(r.status, 200);
    let status = s.wait(Duration::from_secs(10));
    assert!(status.success(), "{status}: {}", s.log());
    assert!(names(&dir.path().join("open")).is_empty());
    let recs = read_dir_records(&dir.path().join("ready"));
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[1].body, b"0123456789abcdefghij");
}

#[test]
fn sigkill_leaves_an_open_file_that_the_next_start_finalises() {
    let dir = spool();
    let open = dir.path().join("open");
    let ready = dir.path().join("ready");
    let mut s = Server::start(dir.path(), &[]);
    let bodies: Vec<Vec<u8>> = (0..5).map(|i| payload(i, 3000)).collect();
    for b in &bodies {
        assert_eq!(s.post(FULL_PATH, b, &[]).status, 200);
    }
    s.signal(libc::SIGKILL);
    s.wait(Duration::from_secs(5));
    let left = names(&open);
    assert_eq!(left.len(), 1, "the open file stays in open/");
    assert!(names(&ready).is_empty());
    // Make the crash tear a record: half of one more record at the end.
    let mut torn = Vec::new();
    backfill::core::rawlog::RawLogWriter::new(&mut torn, backfill::core::rawlog::RawVersion::V2)
        .write_record(b"x/y", &payload(99, 3000), now_ms(), Some(b"127.0.0.1"))
        .unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(open.join(&left[0]))
        .unwrap();
    f.write_all(&torn[..torn.len() / 2]).unwrap();
    drop(f);

    let mut s = Server::start(dir.path(), &[]);
    assert!(names(&open).is_empty(), "recovered before serving");
    assert_eq!(names(&ready), left, "handed over under its own name");
    assert!(s.log().contains("5 records kept"), "{}", s.log());
    let recs = read_log(&ready.join(&left[0]));
    assert_eq!(
        recs.iter().map(|r| r.body.clone()).collect::<Vec<_>>(),
        bodies
    );
    // The restarted server writes a new file with a later name.
    assert_eq!(s.post(ID_PATH, b"{\"after\":1}", &[]).status, 200);
    assert!(s.stop().success());
    let n = names(&ready);
    assert_eq!(n.len(), 2);
    assert_eq!(n[0], left[0]);
    assert!(n[1] > n[0], "{n:?}");
    read_dir_records(&ready);
}

#[test]
fn connections_past_the_cap_wait_for_a_free_slot() {
    let dir = spool();
    let mut s = Server::start(dir.path(), &["--max-connections", "1"]);
    // A holds the only slot with a kept-alive connection.
    let mut a = TcpStream::connect(s.addr).unwrap();
    a.write_all(
        format!("POST {ID_PATH} HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{{}}").as_bytes(),
    )
    .unwrap();
    assert_eq!(read_response(&mut a).unwrap().status, 200);
    // B connects (the kernel queues it) but is not served while A is open.
    let mut b = TcpStream::connect(s.addr).unwrap();
    b.write_all(format!("POST {ID_PATH} HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nConnection: close\r\n\r\n[]").as_bytes())
        .unwrap();
    b.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut byte = [0u8; 1];
    let early = b.read(&mut byte);
    assert!(
        early.is_err(),
        "B was answered while A held the only slot: {early:?}"
    );
    drop(a);
    b.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(read_response(&mut b).unwrap().status, 200);
    assert!(s.stop().success());
    assert_eq!(read_dir_records(&dir.path().join("ready")).len(), 2);
}

#[test]
fn a_second_server_with_the_same_writer_id_is_refused() {
    let dir = spool();
    let mut s = Server::start(dir.path(), &[]);
    let out = std::process::Command::new(BIN)
        .args(base_args(dir.path()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("writer id \"test-1\" is in use"), "{err}");
    assert!(s.stop().success());
}

#[test]
fn bad_arguments_exit_2_with_a_message() {
    let out = std::process::Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--spool",
            "/tmp/x",
            "--writer-id",
            "Bad.Id",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--writer-id"));
}

#[test]
fn help_explains_the_options_and_the_deployment() {
    for args in [&["--help"][..], &["serve", "--help"][..]] {
        let out = std::process::Command::new(BIN).args(args).output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            text.contains("load balancer") && text.contains("workers"),
            "{text}"
        );
        if args[0] == "serve" {
            for opt in [
                "--fsync",
                "--rotate-size",
                "--rotate-idle",
                "--min-free-disk",
                "--max-backlog",
                "--max-connections",
                "--header-timeout",
                "--body-timeout",
                "--no-ip",
                "--writer-id",
            ] {
                assert!(text.contains(opt), "{opt} missing from serve --help");
            }
        }
    }
}
