//! Crash points for tests: named places where a test can make the process die,
//! panic or wait, to prove what a crash or a race at exactly that point leaves.
//!
//! Armed only by the environment variable `BACKFILL_FAILPOINTS`, a comma-separated
//! list of `NAME[@N]=ACTION`: at the N-th time (default: the first) the process
//! passes point NAME, it prints `backfill: failpoint NAME hit` on stderr (so a test
//! can check the crash happened where it meant) and then
//! - `kill`: sends itself SIGKILL (no destructor, no flush: a machine dying);
//! - `panic`: panics (as a bug would);
//! - `wait(PATH)`: blocks until PATH exists (a test holds a run at a point while
//!   another runs, without guessing at timing);
//! - `sleep(MS)`: sleeps;
//! - `error`: at a point that can fail ([`io`]), an I/O error from that hit on,
//!   for the rest of the process (a source or a store that is down "for a while":
//!   until the run ends).
//!
//! Unset (always, outside tests), each point costs one load of a flag.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Kill,
    Panic,
    Wait(String),
    Sleep(u64),
    Error,
}

struct Point {
    at: u64,
    action: Action,
    hits: AtomicU64,
}

fn parse(spec: &str) -> Result<HashMap<String, Point>, String> {
    let mut out = HashMap::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (lhs, action) = item
            .split_once('=')
            .ok_or_else(|| format!("failpoint {item:?}: expected NAME[@N]=ACTION"))?;
        let (name, at) = match lhs.split_once('@') {
            Some((n, at)) => (
                n,
                at.parse::<u64>()
                    .ok()
                    .filter(|&a| a > 0)
                    .ok_or_else(|| format!("failpoint {item:?}: bad count {at:?}"))?,
            ),
            None => (lhs, 1),
        };
        let action = match action {
            "kill" => Action::Kill,
            "panic" => Action::Panic,
            "error" => Action::Error,
            a if a.starts_with("wait(") && a.ends_with(')') => {
                Action::Wait(a[5..a.len() - 1].to_string())
            }
            a if a.starts_with("sleep(") && a.ends_with(')') => Action::Sleep(
                a[6..a.len() - 1]
                    .parse()
                    .map_err(|_| format!("failpoint {item:?}: bad sleep"))?,
            ),
            a => return Err(format!("failpoint {item:?}: unknown action {a:?}")),
        };
        out.insert(
            name.to_string(),
            Point {
                at,
                action,
                hits: AtomicU64::new(0),
            },
        );
    }
    Ok(out)
}

fn points() -> &'static HashMap<String, Point> {
    static POINTS: OnceLock<HashMap<String, Point>> = OnceLock::new();
    POINTS.get_or_init(|| match std::env::var("BACKFILL_FAILPOINTS") {
        Ok(spec) => parse(&spec).unwrap_or_else(|e| {
            eprintln!("backfill: BACKFILL_FAILPOINTS: {e}");
            std::process::exit(2)
        }),
        Err(_) => HashMap::new(),
    })
}

/// Passes failpoint `name`: does what `BACKFILL_FAILPOINTS` says, if anything.
pub fn hit(name: &str) {
    let _ = io(name);
}

/// Passes failpoint `name` where an I/O error can happen: `Err` when its action is
/// `error` and it has been hit as often as asked; otherwise as [`hit`].
pub fn io(name: &str) -> std::io::Result<()> {
    let points = points();
    if points.is_empty() {
        return Ok(());
    }
    let Some(p) = points.get(name) else {
        return Ok(());
    };
    let n = p.hits.fetch_add(1, Ordering::SeqCst) + 1;
    if p.action == Action::Error && n >= p.at {
        if n == p.at {
            eprintln!("backfill: failpoint {name} hit");
        }
        return Err(std::io::Error::other(format!(
            "failpoint {name}: injected I/O error"
        )));
    }
    if n != p.at {
        return Ok(());
    }
    eprintln!("backfill: failpoint {name} hit");
    match &p.action {
        Action::Kill => {
            // SAFETY: kill(2) on our own pid with a valid signal number.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            // SIGKILL is not deliverable late; never reached.
            std::process::abort();
        }
        Action::Panic => panic!("failpoint {name}"),
        Action::Wait(path) => {
            while !std::path::Path::new(path).exists() {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        Action::Sleep(ms) => std::thread::sleep(std::time::Duration::from_millis(*ms)),
        Action::Error => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let p = parse("a=kill, b@3=panic,c=wait(/tmp/x y),d=sleep(15)").unwrap();
        assert_eq!(p["a"].at, 1);
        assert_eq!(p["a"].action, Action::Kill);
        assert_eq!(p["b"].at, 3);
        assert_eq!(p["b"].action, Action::Panic);
        assert_eq!(p["c"].action, Action::Wait("/tmp/x y".into()));
        assert_eq!(p["d"].action, Action::Sleep(15));
        assert!(parse("a").is_err());
        assert!(parse("a@0=kill").is_err());
        assert!(parse("a=explode").is_err());
        assert_eq!(parse("e@2=error").unwrap()["e"].action, Action::Error);
    }
}
