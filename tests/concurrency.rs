//! Several runs of one job at once, crashes at chosen points, sources that fail for
//! a while: nothing a manifest lists is ever lost, and every rerun ends with the
//! store an uninterrupted run gives. Interleavings are forced with failpoints
//! (`BACKFILL_FAILPOINTS`, see `src/failpoint.rs`) that hold a run at an exact
//! point until the test lets it go, never with timing alone.

use crate::common::*;
use backfill::queue::Queue;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const DAYS: [&str; 6] = [
    "20131010", "20131011", "20131012", "20131013", "20131014", "20131015",
];

/// Each day's folder holds `files` SequenceFiles of 40 records of that day (a few
/// bad ones).
fn dataset(root: &Path, days: &[&str], files: u64) {
    write_days(root, days, files, 40, |n, i, day| {
        if i % 11 == 3 {
            bad(n, day)
        } else {
            good(n, day)
        }
    });
}

fn args(src: &Path, dest: &Path, report: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "export",
        src.to_str().unwrap(),
        dest.to_str().unwrap(),
        "--split-size",
        "8KiB",
        "--target-size",
        "100KB",
        "--report",
        report.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    if !extra.contains(&"--jobs") {
        v.extend(["--jobs".to_string(), "2".to_string()]);
    }
    v
}

/// A running export whose stderr lines arrive on a channel.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(args: &[String], failpoints: &str) -> Running {
        Running::start_env(args, failpoints, &[])
    }

    fn start_env(args: &[String], failpoints: &str, env: &[(&str, String)]) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_backfill"))
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("BACKFILL_FAILPOINTS", failpoints)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (up to a minute) for a stderr line containing `text`.
    fn wait_for(&mut self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        if self.seen.iter().any(|l| l.contains(text)) {
            return;
        }
        while let Ok(l) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            let hit = l.contains(text);
            self.seen.push(l);
            if hit {
                return;
            }
        }
        panic!(
            "no line with {text:?} within a minute; stderr so far:\n{}",
            self.seen.join("\n")
        );
    }

    /// Waits for the exit (up to two minutes); returns the code (None: a signal)
    /// and all of stderr.
    fn finish(mut self) -> (Option<i32>, Option<i32>, String) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(1)) {
                    self.seen.push(l);
                }
                panic!("run did not end; stderr:\n{}", self.seen.join("\n"));
            }
            while let Ok(l) = self.lines.try_recv() {
                self.seen.push(l);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(l);
        }
        (
            status.code(),
            std::os::unix::process::ExitStatusExt::signal(&status),
            self.seen.join("\n"),
        )
    }
}

impl Drop for Running {
    /// A test that fails while a run is held at a failpoint must not leave it
    /// behind, waiting forever.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs an export to the end; asserts the exit code.
fn run(args: &[String], failpoints: &str, want: i32) -> String {
    let (code, sig, err) = Running::start(args, failpoints).finish();
    assert_eq!(code, Some(want), "signal {sig:?}\n{err}");
    err
}

/// Runs an export that must die by SIGKILL at failpoint `point`.
fn killed_at(args: &[String], point: &str, spec: &str) {
    let (code, sig, err) = Running::start(args, spec).finish();
    assert_eq!(
        (code, sig),
        (None, Some(9)),
        "expected a SIGKILL at {point}:\n{err}"
    );
    assert!(
        err.contains(&format!("failpoint {point} hit")),
        "killed, but not at {point}:\n{err}"
    );
}

/// The store as a consumer and the error output see it: every object and error
/// object (relative key → sha256), bookkeeping apart.
fn store(dest: &Path) -> BTreeMap<String, String> {
    let mut out = digests(dest);
    let errors = dest.join("_backfill/errors");
    if errors.exists() {
        for (k, v) in digests(&errors) {
            out.insert(format!("_backfill/errors/{k}"), v);
        }
    }
    out
}

/// Every object every manifest lists is there with its size and sha256; returns
/// how many were checked. Nothing half-written or staged is left, and no lease.
fn manifests_hold(dest: &Path) -> usize {
    let mut n = 0;
    for job in std::fs::read_dir(dest.join("_backfill/manifests")).unwrap() {
        for m in std::fs::read_dir(job.unwrap().path()).unwrap() {
            let m: serde_json::Value =
                serde_json::from_slice(&std::fs::read(m.unwrap().path()).unwrap()).unwrap();
            for o in m["objects"]
                .as_array()
                .unwrap()
                .iter()
                .chain(m["errors"].as_array().unwrap())
            {
                let key = o["key"].as_str().unwrap();
                let bytes = std::fs::read(dest.join(key))
                    .unwrap_or_else(|e| panic!("{key}, listed by a manifest: {e}"));
                assert_eq!(bytes.len() as u64, o["bytes"].as_u64().unwrap(), "{key}");
                assert_eq!(sha256_hex(&bytes), o["sha256"].as_str().unwrap(), "{key}");
                n += 1;
            }
        }
    }
    let left: Vec<String> = walk(dest)
        .into_iter()
        .filter(|p| {
            p.contains("/.tmp.")
                || p.contains("_backfill/staging/")
                || p.contains("_backfill/leases/")
        })
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    n
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(backfill::export::manifest::sha256(bytes))
}

fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.to_string_lossy().into_owned());
            }
        }
    }
    out
}

/// Converted lines per submission day over every object, and error-output records
/// (objects' line counts come from the objects themselves, not the bookkeeping).
fn records_per_day(dest: &Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (key, bytes) in objects(dest) {
        let name = key.rsplit('/').next().unwrap();
        let day = name.split('.').nth(1).unwrap().to_string();
        *out.entry(day).or_default() += lines(&bytes).len();
    }
    out
}

fn report(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

struct Setup {
    _t: tempfile::TempDir,
    src: PathBuf,
    root: PathBuf,
}

impl Setup {
    /// An uninterrupted export of the source, alone, to compare with.
    fn reference(&self) -> PathBuf {
        let reference = self.root.join("reference");
        run(
            &args(&self.src, &reference, &self.root.join("ref.json"), &[]),
            "",
            0,
        );
        reference
    }
}

fn setup(days: &[&str], files: u64) -> Setup {
    let t = tmp();
    let src = t.path().join("src");
    dataset(&src, days, files);
    let root = t.path().to_path_buf();
    Setup { _t: t, src, root }
}

#[test]
fn the_same_command_twice_at_once_gives_the_one_run_store() {
    let s = setup(&DAYS[..3], 3);
    let reference = s.reference();

    // A retried scheduler task: the first attempt is held after its first unit
    // checkpoint, holding that folder's lease, while the second runs.
    let dest = s.root.join("dest");
    let go = s.root.join("go");
    let a_args = args(&s.src, &dest, &s.root.join("a.json"), &[]);
    let mut a = Running::start(&a_args, &format!("unit-staged=wait({})", go.display()));
    a.wait_for("failpoint unit-staged hit");
    let mut b = Running::start(&args(&s.src, &dest, &s.root.join("b.json"), &[]), "");
    b.wait_for("another run of this job is exporting this folder");
    std::fs::write(&go, b"").unwrap();
    let (code_a, _, err_a) = a.finish();
    let (code_b, _, err_b) = b.finish();
    assert_eq!(code_a, Some(0), "{err_a}");
    assert_eq!(code_b, Some(0), "{err_b}");
    let rb = report(&s.root.join("b.json"));
    assert!(rb["folders_waited"].as_u64().unwrap() >= 1, "{rb}");
    assert!(manifests_hold(&dest) > 0);
    assert_eq!(store(&dest), store(&reference));
    // Both reports describe the whole job.
    let ra = report(&s.root.join("a.json"));
    let rr = report(&s.root.join("ref.json"));
    for k in ["records_in", "records_out", "records_error", "objects"] {
        assert_eq!(ra[k], rr[k], "{k}");
        assert_eq!(rb[k], rr[k], "{k}");
    }
}

#[test]
fn another_runs_sweep_never_removes_objects_waiting_for_their_manifest() {
    // The lost-objects report: run A has published a folder's objects and not yet
    // its manifest when run B (another window of the same job) finishes and sweeps.
    let s = setup(&DAYS, 2);
    let dest = s.root.join("dest");
    let go = s.root.join("go");
    // Windows that share no folder (the overlapping case is the next test): B has
    // no reason to wait for A, and finishes while A is held.
    let a_extra = [
        "--from",
        "20131010",
        "--to",
        "20131012",
        "--orphan-grace",
        "0",
        "--folder-margin",
        "0",
    ];
    let b_extra = [
        "--from",
        "20131013",
        "--to",
        "20131015",
        "--orphan-grace",
        "0",
        "--folder-margin",
        "0",
    ];
    let a_args = args(&s.src, &dest, &s.root.join("a.json"), &a_extra);
    let b_args = args(&s.src, &dest, &s.root.join("b.json"), &b_extra);
    let mut a = Running::start(
        &a_args,
        &format!("objects-published=wait({})", go.display()),
    );
    a.wait_for("failpoint objects-published hit");
    let err_b = run(&b_args, "", 0);
    let rb = report(&s.root.join("b.json"));
    assert!(
        rb["sweep"]
            .as_str()
            .unwrap()
            .contains("left to the last live run"),
        "B must not sweep while A is alive: {rb}\n{err_b}"
    );
    assert_eq!(rb["orphans_removed"], 0);
    std::fs::write(&go, b"").unwrap();
    let (code, _, err_a) = a.finish();
    assert_eq!(code, Some(0), "{err_a}");
    assert!(manifests_hold(&dest) > 0);

    // The same two runs one after the other give the same store.
    let seq = s.root.join("sequential");
    run(
        &args(&s.src, &seq, &s.root.join("s1.json"), &b_extra),
        "",
        0,
    );
    run(
        &args(&s.src, &seq, &s.root.join("s2.json"), &a_extra),
        "",
        0,
    );
    assert_eq!(store(&dest), store(&seq));
    // And every record of the six days is there once.
    let whole = s.root.join("whole");
    run(&args(&s.src, &whole, &s.root.join("w.json"), &[]), "", 0);
    assert_eq!(records_per_day(&dest), records_per_day(&whole));
}

#[test]
fn three_runs_with_overlapping_windows_killed_and_restarted_lose_nothing() {
    let s = setup(&DAYS, 2);
    let whole = s.root.join("whole");
    run(&args(&s.src, &whole, &s.root.join("w.json"), &[]), "", 0);
    let want = records_per_day(&whole);
    assert_eq!(want.len(), 6);

    let dest = s.root.join("dest");
    let windows: [&[&str]; 3] = [
        &["--from", "20131010", "--to", "20131013"],
        &["--from", "20131012", "--to", "20131015"],
        &[],
    ];
    let a = |i: usize| {
        args(
            &s.src,
            &dest,
            &s.root.join(format!("r{i}.json")),
            windows[i],
        )
    };
    // Two of the three die at chosen points while the others run...
    let go = s.root.join("go");
    let mut held = Running::start(&a(0), &format!("unit-staged@2=wait({})", go.display()));
    held.wait_for("failpoint unit-staged hit");
    let killed = Running::start(&a(1), "objects-published@2=kill");
    let free = Running::start(&a(2), "unit-staged@3=kill");
    let (_, sig1, e1) = killed.finish();
    let (_, sig2, e2) = free.finish();
    assert_eq!(sig1, Some(9), "{e1}");
    assert!(e1.contains("failpoint objects-published hit"), "{e1}");
    assert_eq!(sig2, Some(9), "{e2}");
    assert!(e2.contains("failpoint unit-staged hit"), "{e2}");
    std::fs::write(&go, b"").unwrap();
    // ...and are restarted while the held one finishes.
    let r1 = Running::start(&a(1), "");
    let r2 = Running::start(&a(2), "");
    for (i, r) in [held, r1, r2].into_iter().enumerate() {
        let (code, _, err) = r.finish();
        assert_eq!(code, Some(0), "run {i}: {err}");
    }
    assert!(manifests_hold(&dest) > 0);
    assert_eq!(records_per_day(&dest), want, "every record exactly once");
    let r = report(&s.root.join("r2.json"));
    let w = report(&s.root.join("w.json"));
    for k in ["records_in", "records_out", "records_error"] {
        assert_eq!(
            r[k], w[k],
            "{k}: the unwindowed run's report covers the job"
        );
    }
}

/// A store, then a run killed at `point` (with `spec`), then a rerun: the same
/// store as the uninterrupted reference.
fn crash_then_rerun(point: &str, spec: &str, plant_orphan: bool) {
    let s = setup(&DAYS[..3], 2);
    let reference = s.reference();
    let dest = s.root.join("dest");
    let a = args(&s.src, &dest, &s.root.join("r.json"), &[]);
    if plant_orphan {
        run(&a, "", 0);
        // An object of the job no manifest lists, an hour old (left by a crash with
        // other input): the sweep removes it.
        let (key, bytes) = objects(&dest).into_iter().next().unwrap();
        let job = report(&s.root.join("r.json"))["job"]
            .as_str()
            .unwrap()
            .to_string();
        let stem = key.rsplit_once('.').unwrap().0.rsplit_once('.').unwrap().0;
        let orphan = dest.join(format!("{stem}.{job}-0badf00d-3.xz"));
        std::fs::write(&orphan, bytes).unwrap();
        let f = std::fs::File::options().write(true).open(&orphan).unwrap();
        f.set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
    }
    killed_at(&a, point, spec);
    let err = run(&a, "", 0);
    assert!(manifests_hold(&dest) > 0, "{err}");
    assert_eq!(store(&dest), store(&reference), "after a kill at {point}");
    let r = report(&s.root.join("r.json"));
    let rr = report(&s.root.join("ref.json"));
    for k in ["records_in", "records_out", "records_error", "objects"] {
        assert_eq!(r[k], rr[k], "{k}");
    }
}

#[test]
fn killed_after_the_objects_before_the_manifest() {
    crash_then_rerun("objects-published", "objects-published@2=kill", false);
}

#[test]
fn killed_during_staging_removal() {
    crash_then_rerun("staging-remove", "staging-remove@2=kill", false);
}

#[test]
fn killed_during_the_sweep() {
    crash_then_rerun("sweep-delete", "sweep-delete=kill", true);
}

#[test]
fn killed_holding_a_lease_then_rerun_takes_it_over_at_once() {
    // Same machine, process gone: no waiting for the lease to expire.
    let started = Instant::now();
    crash_then_rerun("lease-taken", "lease-taken@2=kill", false);
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "the rerun waited for the dead run's lease (TTL 60 s)"
    );
}

/// A source that fails (open, read or seek) from some point of a run on: the run
/// exits 1 naming the failed units, commits no folder with a gap, and the rerun
/// after the fault ends with the full store.
fn source_fault(point: &str, spec: &str) {
    let s = setup(&DAYS[..3], 3);
    let reference = s.root.join("reference");
    run(
        &args(
            &s.src,
            &reference,
            &s.root.join("ref.json"),
            &["--jobs", "1"],
        ),
        "",
        0,
    );
    let dest = s.root.join("dest");
    let a = args(&s.src, &dest, &s.root.join("r.json"), &["--jobs", "1"]);
    let err = run(&a, spec, 1);
    assert!(err.contains(&format!("failpoint {point} hit")), "{err}");
    let r = report(&s.root.join("r.json"));
    assert_eq!(r["complete"], false);
    assert!(r["unreadable"].as_array().unwrap().is_empty(), "{r}");
    let failed = r["failed"].as_array().unwrap();
    assert!(!failed.is_empty(), "{r}");
    for f in failed {
        let e = f["error"].as_str().unwrap();
        assert!(e.contains("injected I/O error"), "{e}");
        assert!(
            e.contains(f["file"].as_str().unwrap()),
            "names the file: {e}"
        );
        assert!(e.contains("offset"), "names the offset: {e}");
    }
    // No folder with a failed unit is committed.
    let failed_dirs: Vec<&str> = failed
        .iter()
        .map(|f| f["folder"].as_str().unwrap())
        .collect();
    if let Ok(rd) = std::fs::read_dir(dest.join("_backfill/manifests")) {
        for job in rd {
            for m in std::fs::read_dir(job.unwrap().path()).unwrap() {
                let m: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(m.unwrap().path()).unwrap()).unwrap();
                assert!(
                    !failed_dirs.contains(&m["dir"].as_str().unwrap()),
                    "a folder with a failed unit was committed: {}",
                    m["dir"]
                );
            }
        }
    }
    // The fault passes: the rerun reads exactly what is missing.
    run(&a, "", 0);
    assert_eq!(store(&dest), store(&reference));
    let r = report(&s.root.join("r.json"));
    assert_eq!(r["complete"], true);
    assert!(r["failed"].as_array().unwrap().is_empty());
}

#[test]
fn a_file_that_cannot_be_opened_for_a_while() {
    source_fault("source-open", "source-open@4=error");
}

#[test]
fn a_file_that_cannot_be_read_for_a_while() {
    source_fault("source-read", "source-read@9=error");
}

#[test]
fn a_file_that_cannot_be_sought_for_a_while() {
    source_fault("source-seek", "source-seek@5=error");
}

#[test]
fn a_replaced_file_fails_its_unit_and_the_rerun_reads_it() {
    // The reported case: a file replaced by a folder of the same name while the run
    // is under way (open works on a folder; reading fails), put back after.
    let s = setup(&DAYS[..2], 2);
    let reference = s.reference();
    let dest = s.root.join("dest");
    let go = s.root.join("go");
    let a = args(&s.src, &dest, &s.root.join("r.json"), &["--jobs", "1"]);
    // In the first folder, listed before its first unit ran.
    let victim = day_dir(&s.src, DAYS[0]).join("part-m-00001");
    let saved = s.root.join("saved");
    let mut r = Running::start(&a, &format!("unit-staged=wait({})", go.display()));
    r.wait_for("failpoint unit-staged hit");
    std::fs::rename(&victim, &saved).unwrap();
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(&go, b"").unwrap();
    let (code, _, err) = r.finish();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("part-m-00001"), "{err}");
    std::fs::remove_dir(&victim).unwrap();
    std::fs::rename(&saved, &victim).unwrap();
    run(&a, "", 0);
    assert_eq!(store(&dest), store(&reference));
}

#[test]
fn a_binary_with_another_converter_refuses_the_job() {
    let s = setup(&DAYS[..1], 1);
    let dest = s.root.join("dest");
    let a = args(&s.src, &dest, &s.root.join("r.json"), &[]);
    run(&a, "", 0);
    // As if an older binary (converter output version 0) had begun the job.
    let jobs = dest.join("_backfill/jobs");
    let path = std::fs::read_dir(&jobs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    rec["spec"]["converter"] = 0.into();
    rec["job"] = "0ldc0de0".into();
    rec["tool_version"] = "0.0.9".into();
    std::fs::remove_file(&path).unwrap();
    std::fs::write(jobs.join("0ldc0de0.json"), rec.to_string()).unwrap();
    let err = run(&a, "", 1);
    assert!(
        err.contains("converter output version 0 (backfill 0.0.9)")
            && err.contains("writes version 1"),
        "{err}"
    );
}

#[test]
fn files_added_to_a_committed_folder_are_reported() {
    let s = setup(&DAYS[..2], 1);
    let dest = s.root.join("dest");
    let a = args(&s.src, &dest, &s.root.join("r.json"), &[]);
    run(&a, "", 0);
    let before = store(&dest);
    let late: Vec<Rec> = (900..910).map(|n| good(n, DAYS[0])).collect();
    write_seq(&day_dir(&s.src, DAYS[0]).join("part-m-00099"), &late, BLOCK);
    let err = run(&a, "", 0);
    let r = report(&s.root.join("r.json"));
    let changed = r["source_changed"].as_array().unwrap();
    assert_eq!(changed.len(), 1, "{r}");
    assert_eq!(
        changed[0]["added"],
        serde_json::json!(["data/telemetry/2013/10/10/part-m-00099"])
    );
    assert!(err.contains("changed after its export"), "{err}");
    assert_eq!(store(&dest), before, "reported, not exported again");
}

#[test]
fn retry_unreadable_reads_a_repaired_file_again() {
    let s = setup(&DAYS[..2], 2);
    // One file cut short: its tail is unreadable.
    let victim = day_dir(&s.src, DAYS[1]).join("part-m-00001");
    let whole = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &whole[..whole.len() * 2 / 3]).unwrap();
    let dest = s.root.join("dest");
    let a = args(&s.src, &dest, &s.root.join("r.json"), &[]);
    run(&a, "", 3);
    let before = report(&s.root.join("r.json"));
    assert_eq!(
        before["unreadable"].as_array().unwrap().len(),
        1,
        "{before}"
    );
    // The block is recovered: a plain rerun reports the change and reads nothing.
    std::fs::write(&victim, &whole).unwrap();
    run(&a, "", 3);
    let r = report(&s.root.join("r.json"));
    assert_eq!(r["records_in"], before["records_in"]);
    assert_eq!(
        r["source_changed"][0]["resized"],
        serde_json::json!(["data/telemetry/2013/10/11/part-m-00001"])
    );
    // --retry-unreadable reads the folder again and adds what is there now.
    let mut retry = a.clone();
    retry.push("--retry-unreadable".into());
    run(&retry, "", 0);
    let r = report(&s.root.join("r.json"));
    assert!(r["unreadable"].as_array().unwrap().is_empty(), "{r}");
    let fresh = s.root.join("fresh");
    run(&args(&s.src, &fresh, &s.root.join("f.json"), &[]), "", 0);
    let f = report(&s.root.join("f.json"));
    for k in ["records_in", "records_out", "records_error", "objects"] {
        assert_eq!(r[k], f[k], "{k}");
    }
    assert!(r["records_in"].as_u64() > before["records_in"].as_u64());
    // The folder was read again under new names (the old objects are never
    // rewritten in place, and are gone once the new manifest committed): the same
    // lines per partition as a fresh export, and nothing else.
    assert_eq!(lines_by_partition(&dest), lines_by_partition(&fresh));
    assert!(manifests_hold(&dest) > 0);
    let names: Vec<String> = objects(&dest).into_keys().collect();
    assert!(
        names
            .iter()
            .any(|k| k.rsplit('.').nth(1).is_some_and(|s| s.contains("-r"))),
        "the folder read again is under new names: {names:?}"
    );
    let count = |d: &Path| walk(&d.join("_backfill/manifests")).len();
    assert_eq!(count(&dest), count(&fresh), "the replaced manifest is gone");

    // Killed between the new manifest and the old group's removal: both are
    // committed for a moment; the next run's sweep finishes the replacement.
    let again = s.root.join("again");
    let b = args(&s.src, &again, &s.root.join("b.json"), &[]);
    std::fs::write(&victim, &whole[..whole.len() * 2 / 3]).unwrap();
    run(&b, "", 3);
    std::fs::write(&victim, &whole).unwrap();
    let mut retry = b.clone();
    retry.push("--retry-unreadable".into());
    killed_at(&retry, "manifest-written", "manifest-written=kill");
    assert_eq!(
        count(&again),
        count(&fresh) + 1,
        "old and new manifests both there"
    );
    run(&b, "", 0);
    assert_eq!(lines_by_partition(&again), lines_by_partition(&fresh));
    assert_eq!(count(&again), count(&fresh));
    assert!(manifests_hold(&again) > 0);
}

/// Every partition's lines, in object order, whatever the objects are named.
fn lines_by_partition(dest: &Path) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (key, bytes) in objects(dest) {
        out.entry(partition_of(&key))
            .or_default()
            .extend(lines(&bytes));
    }
    out
}

#[test]
fn shards_side_by_side_give_the_one_run_store() {
    let s = setup(&DAYS, 2);
    let one = s.root.join("one");
    run(&args(&s.src, &one, &s.root.join("one.json"), &[]), "", 0);
    let dest = s.root.join("dest");
    // A Kubernetes Indexed Job of three tasks, and an explicit --shard beside it.
    let task = |i: usize| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_backfill"));
        c.args(args(
            &s.src,
            &dest,
            &s.root.join(format!("s{i}.json")),
            &["--shards", "3"],
        ))
        .env("JOB_COMPLETION_INDEX", i.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        c.spawn().unwrap()
    };
    let children: Vec<Child> = (0..3).map(task).collect();
    for (i, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "task {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(manifests_hold(&dest) > 0);
    assert_eq!(store(&dest), store(&one));
    let mut groups = 0;
    for i in 0..3 {
        let r = report(&s.root.join(format!("s{i}.json")));
        groups += r["units_run"].as_u64().unwrap();
    }
    let o = report(&s.root.join("one.json"));
    assert_eq!(
        groups,
        o["units_run"].as_u64().unwrap(),
        "every unit run by exactly one task"
    );
    // An index past the count is refused, as is a missing one.
    let bad = Command::new(env!("CARGO_BIN_EXE_backfill"))
        .args(args(
            &s.src,
            &dest,
            &s.root.join("x.json"),
            &["--shards", "3"],
        ))
        .env("JOB_COMPLETION_INDEX", "3")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("JOB_COMPLETION_INDEX=3"));
    let out = backfill(&[
        "export",
        s.src.to_str().unwrap(),
        dest.to_str().unwrap(),
        "--shard",
        "2/2",
    ]);
    assert_eq!(out.code, 2, "{}", out.stderr);
}

/// The environment a worker needs for the test SQS (moto takes any credentials).
fn sqs_env() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL_SQS", crate::sqs::endpoint()),
        ("AWS_ACCESS_KEY_ID", "backfilltest".into()),
        ("AWS_SECRET_ACCESS_KEY", "backfill-test-secret".into()),
        ("AWS_REGION", "us-east-1".into()),
    ]
}

fn plan_args(s: &Setup, dest: &Path, url: &str) -> Vec<String> {
    let mut a = args(&s.src, dest, &s.root.join("plan.json"), &[]);
    a[0] = "plan".into();
    a.extend(["--queue".to_string(), url.to_string()]);
    a
}

fn work_args(url: &str) -> Vec<String> {
    [
        "work",
        "--queue",
        url,
        "--visibility-timeout",
        "5",
        "--jobs",
        "1",
        "--idle-exit",
        "90",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn queue_workers_killed_and_restarted_give_the_one_run_store() {
    let s = setup(&DAYS, 2);
    let reference = s.reference();
    let q = crate::sqs::new_queue("work");
    let url = q.url().to_string();
    let env = sqs_env();
    let dest = s.root.join("dest");
    let (code, _, err) = Running::start_env(&plan_args(&s, &dest, &url), "", &env).finish();
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("sent 6 folders"), "{err}");
    // Planning again sends nothing twice.
    let (code, _, err) = Running::start_env(&plan_args(&s, &dest, &url), "", &env).finish();
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("sent 0 folders") && err.contains("6 were sent before"),
        "{err}"
    );

    // Three workers: one dies after a unit's checkpoint, one between a folder's
    // objects and its manifest; both are restarted.
    let w = work_args(&url);
    let dies_mid_unit = Running::start_env(&w, "unit-staged@2=kill", &env);
    let dies_in_assembly = Running::start_env(&w, "objects-published=kill", &env);
    let steady = Running::start_env(&w, "", &env);
    for (r, point) in [
        (dies_mid_unit, "unit-staged"),
        (dies_in_assembly, "objects-published"),
    ] {
        let (_, sig, err) = r.finish();
        assert_eq!(sig, Some(9), "{err}");
        assert!(err.contains(&format!("failpoint {point} hit")), "{err}");
    }
    let again: Vec<Running> = (0..2).map(|_| Running::start_env(&w, "", &env)).collect();
    for (i, r) in std::iter::once(steady).chain(again).enumerate() {
        let (code, _, err) = r.finish();
        assert_eq!(code, Some(0), "worker {i}: {err}");
    }
    assert!(manifests_hold(&dest) > 0);
    assert_eq!(store(&dest), store(&reference));
    let (visible, in_flight) = q.approximate_counts().unwrap();
    assert_eq!((visible, in_flight), (0, 0));
    // And verify agrees.
    let mut v = args(&s.src, &dest, &s.root.join("verify.json"), &[]);
    v[0] = "verify".into();
    let out = backfill(&v.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
}

#[test]
fn a_message_delivered_twice_does_no_harm() {
    let s = setup(&DAYS[..3], 2);
    let reference = s.reference();
    let q = crate::sqs::new_queue("twice");
    let url = q.url().to_string();
    let env = sqs_env();
    let dest = s.root.join("dest");
    let (code, _, err) = Running::start_env(&plan_args(&s, &dest, &url), "", &env).finish();
    assert_eq!(code, Some(0), "{err}");
    // Every message sent a second time, as SQS may deliver one twice.
    let mut bodies = Vec::new();
    while let Some(m) = q.receive(1, 1, 2).unwrap().pop() {
        bodies.push(m.body.clone());
    }
    assert_eq!(bodies.len(), 3);
    q.send_batch(&bodies).unwrap();
    // Until the received ones are back (their 2 s timeout), beside the copies.
    let deadline = Instant::now() + Duration::from_secs(60);
    while q.approximate_counts().unwrap() != (6, 0) {
        assert!(Instant::now() < deadline, "{:?}", q.approximate_counts());
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, _, err) = Running::start_env(&work_args(&url), "", &env).finish();
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("6 folders committed"), "{err}");
    assert!(manifests_hold(&dest) > 0);
    assert_eq!(store(&dest), store(&reference));
}

#[test]
fn a_panicking_unit_fails_the_run_without_hanging_and_the_rerun_finishes() {
    let s = setup(&DAYS[..2], 2);
    let reference = s.reference();
    let dest = s.root.join("dest");
    let a = args(&s.src, &dest, &s.root.join("r.json"), &[]);
    // A bug in one unit (here: a panic after its checkpoint): the run goes on with
    // the other units, ends with exit 1, and writes its report.
    let err = run(&a, "unit-staged@2=panic", 1);
    assert!(err.contains("failpoint unit-staged hit"), "{err}");
    let r = report(&s.root.join("r.json"));
    assert_eq!(r["complete"], false);
    let failed = r["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{r}");
    assert!(
        failed[0]["error"].as_str().unwrap().contains("panicked"),
        "{failed:?}"
    );
    run(&a, "", 0);
    assert_eq!(store(&dest), store(&reference));
}
