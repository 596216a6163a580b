//! Checkpoints, resume and exactly-once output: kill the export anywhere, rerun, get
//! the same store.

use crate::common::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Three days × `files` files of 60 records, a few bad ones.
fn dataset(root: &Path, files: u64) {
    let days = ["20131010", "20131011", "20131012"];
    write_days(root, &days, files, 60, |n, i, day| {
        if i % 13 == 5 {
            bad(n, day)
        } else {
            good(n, day)
        }
    });
}

fn export_args<'a>(src: &'a Path, dest: &'a Path, report: &'a Path) -> Vec<&'a str> {
    vec![
        "export",
        src.to_str().unwrap(),
        dest.to_str().unwrap(),
        "-q",
        "--jobs",
        "2",
        "--split-size",
        "16KiB",
        "--target-size",
        "200KB",
        "--report",
        report.to_str().unwrap(),
    ]
}

fn counts(rep: &serde_json::Value) -> Vec<u64> {
    [
        "records_in",
        "records_out",
        "records_error",
        "records_filtered",
        "bytes_in",
        "objects",
        "partitions",
    ]
    .iter()
    .map(|k| rep[*k].as_u64().unwrap_or_else(|| panic!("{k} in {rep}")))
    .collect()
}

/// A deterministic sequence of kill delays (ms), spread over a run's length.
fn delays(trials: usize, max_ms: u64) -> Vec<u64> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..trials)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % max_ms
        })
        .collect()
}

#[test]
fn killed_anywhere_then_rerun_gives_the_same_store() {
    let trials: usize = std::env::var("BACKFILL_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let t = tmp();
    let src = t.path().join("src");
    dataset(&src, 4);
    let reference = t.path().join("reference");
    let ref_report = t.path().join("reference.json");
    let started = Instant::now();
    let out = backfill(&export_args(&src, &reference, &ref_report));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let run_ms = started.elapsed().as_millis() as u64;
    let want = digests(&reference);
    let want_counts =
        counts(&serde_json::from_slice(&std::fs::read(&ref_report).unwrap()).unwrap());
    assert!(want.len() > 20);

    let mut kills = 0;
    for (trial, delay) in delays(trials, run_ms.max(10)).into_iter().enumerate() {
        let dest = t.path().join(format!("dest{trial}"));
        let report = t.path().join(format!("report{trial}.json"));
        // First a SIGKILL at a chosen point: right after the (2 × trial + 1)-th unit
        // checkpoint, proven by the failpoint's own line on stderr.
        let point = format!("unit-staged@{}=kill", 2 * trial + 1);
        let out = Command::new(env!("CARGO_BIN_EXE_backfill"))
            .args(export_args(&src, &dest, &report))
            .env("BACKFILL_FAILPOINTS", &point)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&out.status),
            Some(9),
            "trial {trial}: {point} did not kill the run: {stderr}"
        );
        assert!(
            stderr.contains("failpoint unit-staged hit"),
            "trial {trial}: {stderr}"
        );
        kills += 1;
        // Then, on the rerun, a kill at a moment spread over a run's length (it may
        // finish first): a machine dying anywhere.
        let mut child = Command::new(env!("CARGO_BIN_EXE_backfill"))
            .args(export_args(&src, &dest, &report))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_millis(delay / 2);
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if Instant::now() >= deadline {
                child.kill().unwrap();
                kills += 1;
                break;
            }
            std::thread::yield_now();
        }
        child.wait().unwrap();
        let checkpoints = pending_checkpoints(&dest);
        let out = backfill(&export_args(&src, &dest, &report));
        assert_eq!(out.code, 0, "trial {trial}: {}", out.stderr);
        let rep: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        // Work lost to a kill is only what was in flight: every checkpoint the
        // killed runs completed is reused, none redone.
        assert_eq!(
            rep["units_resumed"].as_u64().unwrap(),
            checkpoints,
            "trial {trial}: checkpoints left by the killed runs were redone"
        );
        assert_eq!(
            digests(&dest),
            want,
            "trial {trial} (killed at {delay} ms): objects differ"
        );
        assert_eq!(
            counts(&rep),
            want_counts,
            "trial {trial}: the report describes the whole job"
        );
        let n = |k: &str| rep[k].as_u64().unwrap();
        assert_eq!(n("records_in"), n("records_out") + n("records_error"));
        // Nothing half-written anywhere, and staging is gone.
        let leftovers: Vec<String> = walk_names(&dest)
            .into_iter()
            .filter(|p| p.contains("/.tmp."))
            .collect();
        assert!(leftovers.is_empty(), "trial {trial}: {leftovers:?}");
        assert!(walk_names(&dest.join("_backfill/staging")).is_empty());
        // The final run reused every checkpoint it found and reports what it redid.
        assert!(n("units_run") + n("units_resumed") > 0 || n("groups_resumed") > 0);
    }
    assert!(kills >= trials, "every trial killed at least once");
}

/// Complete unit checkpoints in staging for groups not yet committed: what a rerun
/// must reuse. (Staging of a group killed between its commit and the removal of its
/// staging is not reused: the group is done.)
fn pending_checkpoints(dest: &Path) -> u64 {
    let manifests = dest.join("_backfill/manifests");
    walk_names(&dest.join("_backfill/staging"))
        .iter()
        .map(Path::new)
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.ends_with(".json") && !name.starts_with(".tmp.")
        })
        .filter(|p| {
            // .../staging/<job>/<group>/<unit>.json
            let group = p.parent().unwrap();
            let job = group.parent().unwrap().file_name().unwrap();
            let committed = manifests.join(job).join(format!(
                "{}.json",
                group.file_name().unwrap().to_string_lossy()
            ));
            !committed.exists()
        })
        .count() as u64
}

fn walk_names(root: &Path) -> Vec<String> {
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

#[test]
fn sigint_checkpoints_exits_130_and_the_rerun_finishes_the_same() {
    let t = tmp();
    let src = t.path().join("src");
    dataset(&src, 6);
    let reference = t.path().join("reference");
    let out = backfill(&export_args(&src, &reference, &t.path().join("r.json")));
    assert_eq!(out.code, 0);

    let dest = t.path().join("dest");
    let report = t.path().join("report.json");
    let out = interrupt_after_first_checkpoint(&src, &dest, &report);
    let staging = dest.join("_backfill/staging");
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("rerun the same command"));
    // Units were checkpointed, not the whole job.
    assert!(walk_names(&staging).iter().any(|p| p.ends_with(".json")));
    let status = backfill(&["status", dest.to_str().unwrap(), "--json"]);
    let jobs: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(jobs[0]["state"], "incomplete", "{}", status.stdout);
    assert!(
        jobs[0]["units_staged"].as_u64().unwrap() > 0,
        "{}",
        status.stdout
    );
    assert!(jobs[0]["live_runs"].as_array().unwrap().is_empty());
    let status = backfill(&["status", dest.to_str().unwrap()]);
    assert!(
        status
            .stdout
            .lines()
            .next()
            .unwrap()
            .ends_with(": incomplete"),
        "{}",
        status.stdout
    );

    let out = backfill(&export_args(&src, &dest, &report));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rep: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert!(
        rep["units_resumed"].as_u64().unwrap() + rep["groups_resumed"].as_u64().unwrap() > 0,
        "{rep}"
    );
    assert_eq!(digests(&dest), digests(&reference));
    let status = backfill(&["status", dest.to_str().unwrap()]);
    let first = status.stdout.lines().next().unwrap_or_default().to_string();
    assert!(first.ends_with(": done"), "{}", status.stdout);
}

/// Runs the export with one worker, waits for its first unit checkpoint, then sends
/// SIGINT and waits for it to exit.
fn interrupt_after_first_checkpoint(
    src: &Path,
    dest: &Path,
    report: &Path,
) -> std::process::Output {
    let mut args = export_args(src, dest, report);
    args[4..6].copy_from_slice(&["--jobs", "1"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_backfill"))
        .args(&args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let staging = dest.join("_backfill/staging");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !walk_names(&staging).iter().any(|p| p.ends_with(".json")) {
        assert!(Instant::now() < deadline, "no checkpoint appeared");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the export finished before it could be interrupted: make the dataset bigger"
        );
        std::thread::yield_now();
    }
    assert_eq!(unsafe_kill(child.id() as i32, 2), 0);
    child.wait_with_output().unwrap()
}

/// Sends a signal with the `kill` command (no libc binding needed).
fn unsafe_kill(pid: i32, sig: i32) -> i32 {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .map_or(-1, |s| s.code().unwrap_or(-1))
}

#[test]
fn widening_the_window_adds_only_the_new_days() {
    let t = tmp();
    let src = t.path().join("src");
    dataset(&src, 2);
    let full = t.path().join("full");
    let (out, full_rep) = export(&src, &full, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);

    let dest = t.path().join("dest");
    let (out, first) = export(&src, &dest, &["--from", "20131010", "--to", "20131010"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(first["records_filtered"].as_u64().unwrap() > 0);
    let (out, second) = export(&src, &dest, &["--from", "20131010", "--to", "20131012"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for k in [
        "records_in",
        "records_out",
        "records_error",
        "records_filtered",
        "bytes_in",
    ] {
        assert_eq!(
            second[k], full_rep[k],
            "{k}: the report describes the whole job"
        );
    }
    // The same records in the same partitions as one full export, each once.
    let content = |root: &Path| -> BTreeSet<(String, String)> {
        let mut set = BTreeSet::new();
        for (k, v) in objects(root) {
            for (id, _) in lines(&v) {
                assert!(set.insert((partition_of(&k), id)), "duplicate");
            }
        }
        set
    };
    assert_eq!(content(&dest), content(&full));
    // Running the wide window again is a no-op.
    let before = digests(&dest);
    let (out, third) = export(&src, &dest, &["--from", "20131010", "--to", "20131012"]);
    assert_eq!(out.code, 0);
    assert_eq!(third["units_run"], 0);
    assert_eq!(digests(&dest), before);
}

#[test]
fn orphans_of_this_job_go_and_other_writers_objects_stay() {
    let t = tmp();
    let src = t.path().join("src");
    dataset(&src, 1);
    let dest = t.path().join("dest");
    let (out, rep) = export(&src, &dest, &[]);
    assert_eq!(out.code, 0);
    let job = rep["job"].as_str().unwrap().to_string();
    let (key, bytes) = objects(&dest).into_iter().next().unwrap();
    let stem = key
        .rsplit_once('.')
        .unwrap()
        .0
        .rsplit_once('.')
        .unwrap()
        .0
        .to_string();
    let orphan = format!("{stem}.{job}-00000000-7.xz");
    let foreign = format!("{stem}.ingest-{job}-0.xz");
    let legacy = format!("{stem}.e28a4032eb744f089a1828ac7399e5d8.lzma");
    for k in [&orphan, &foreign, &legacy] {
        std::fs::write(dest.join(k), &bytes).unwrap();
    }
    // A fresh unreferenced object may be another run's work in progress: kept
    // until it is older than --orphan-grace (10 minutes by default).
    let (out, rep) = export(&src, &dest, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(rep["orphans_removed"], 0);
    assert!(
        rep["sweep"]
            .as_str()
            .unwrap()
            .contains("kept 1 unreferenced"),
        "{}",
        rep["sweep"]
    );
    assert!(dest.join(&orphan).exists());
    let (out, rep) = export(&src, &dest, &["--orphan-grace", "0"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(rep["orphans_removed"], 1);
    assert!(!dest.join(&orphan).exists());
    assert!(dest.join(&foreign).exists());
    assert!(dest.join(&legacy).exists());
    assert!(dest.join(&key).exists());
}

#[test]
fn clean_removes_staging_never_published_objects() {
    let t = tmp();
    let src = t.path().join("src");
    dataset(&src, 2);
    let dest = t.path().join("dest");
    let (out, _) = export(&src, &dest, &[]);
    assert_eq!(out.code, 0);
    let published = digests(&dest);
    // Leave a fake abandoned checkpoint behind.
    let job = std::fs::read_dir(dest.join("_backfill/jobs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    let job = job.to_string_lossy().trim_end_matches(".json").to_string();
    let stale = dest.join(format!("_backfill/staging/{job}/abcd0123/unit.pieces"));
    std::fs::create_dir_all(stale.parent().unwrap()).unwrap();
    std::fs::write(&stale, b"xx").unwrap();
    // It needs --job or --all; --dry-run removes nothing.
    let out = backfill(&["clean", dest.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let out = backfill(&["clean", dest.to_str().unwrap(), "--all", "--dry-run"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains(&format!(
            "job {job}: would remove 1 staged objects (2 bytes)"
        )),
        "{}",
        out.stdout
    );
    assert!(stale.exists());
    let out = backfill(&["clean", dest.to_str().unwrap(), "--job", &job]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains(&format!("job {job}: removed 1 staged objects (2 bytes)")),
        "{}",
        out.stdout
    );
    assert!(!stale.exists());
    assert_eq!(digests(&dest), published);
    assert!(dest.join("_backfill/manifests").exists());
}

#[test]
fn a_damaged_checkpoint_is_redone_not_trusted() {
    let t = tmp();
    let src = t.path().join("src");
    dataset(&src, 3);
    let reference = t.path().join("reference");
    assert_eq!(
        backfill(&export_args(&src, &reference, &t.path().join("r.json"))).code,
        0
    );

    // Stop after the first checkpoint, then damage every staged pieces file.
    let dest = t.path().join("dest");
    let report = t.path().join("report.json");
    let out = interrupt_after_first_checkpoint(&src, &dest, &report);
    assert_eq!(out.status.code(), Some(130));
    let staging = dest.join("_backfill/staging");
    let mut damaged = 0;
    for p in walk_names(&staging)
        .into_iter()
        .filter(|p| p.ends_with(".pieces"))
    {
        let mut bytes = std::fs::read(&p).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x20;
        std::fs::write(&p, bytes).unwrap();
        damaged += 1;
    }
    assert!(damaged > 0);
    let out = backfill(&export_args(&src, &dest, &report));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rep: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(rep["units_resumed"], 0, "no damaged checkpoint was reused");
    assert_eq!(digests(&dest), digests(&reference));
}
