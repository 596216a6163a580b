//! Leases: how several live runs of one job share a destination without undoing
//! each other's work (SPEC §6, "Concurrency").
//!
//! Everything lives under `DEST/_backfill/leases/<job>/`:
//! - `runs/<run>.json`: one per live run (host, pid, start, last heartbeat);
//! - `folders/<folder>/<generation>.json`: who is exporting a source folder now;
//! - `sweep/<generation>.json`: who is sweeping the job's leftovers now.
//!
//! A lease is taken by creating the next generation's key with
//! [`Store::put_if_absent`] (a conditional PUT on S3, link(2) on local disk), so of
//! several runs racing for it exactly one wins. The holder renews it every
//! `ttl / 4` (a heartbeat thread); a lease whose holder stopped renewing for `ttl`
//! is expired and the next run takes it over by creating the following generation,
//! which the old holder notices at its next heartbeat (it then abandons that
//! folder). Expiry compares the holder's clock with the reader's: machines are
//! assumed to agree within a few seconds (NTP), far below the default TTL.
//!
//! What the leases guarantee: one folder is exported by one run at a time (so no
//! run's staging or objects are removed by another's clean-up), and the job's
//! sweep (orphan objects, leftover staging, aborted uploads) runs only while no
//! other run of the job is alive. A starting run announces itself (its run lease)
//! before it looks for a sweep in progress, and a sweeper takes the sweep lease
//! before it looks for live runs: of two that start at once, at least one sees the
//! other (the stores are strongly consistent), and it waits or skips.

use super::manifest::{now_secs, BOOKKEEPING};
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io;
use std::sync::Mutex;

/// Default seconds a lease lives without a heartbeat.
pub const DEFAULT_TTL: u64 = 60;

/// Key prefix of a job's leases.
pub fn leases_prefix(job: &str) -> String {
    format!("{BOOKKEEPING}/leases/{job}/")
}

/// Key prefix of the run leases of a job.
pub fn runs_prefix(job: &str) -> String {
    format!("{}runs/", leases_prefix(job))
}

/// Who holds a lease, and since when. Also the content of a run lease.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Holder {
    /// The run: `<host>-<pid>-<start>`, unique per process.
    pub run: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// When the run started (seconds since the epoch).
    pub started_at: u64,
    /// Last heartbeat (seconds since the epoch).
    pub renewed_at: u64,
    /// Seconds without a heartbeat after which the lease is expired.
    pub ttl: u64,
    /// What the lease is for (a folder, the sweep, the run itself), for people.
    pub what: String,
    /// The days the run exports (`--from`/`--to`), for people.
    #[serde(default)]
    pub window: String,
    /// The holder machine's boot id (`/proc/sys/kernel/random/boot_id`): a run on
    /// the same machine and boot whose process is gone is dead at once, without
    /// waiting for its TTL (a crashed run rerun on the same machine).
    #[serde(default)]
    pub boot: String,
    /// The holder's PID namespace (`/proc/self/ns/pid`): two containers of one
    /// machine share its host name and boot id but not their pids.
    #[serde(default)]
    pub pidns: String,
}

impl Holder {
    /// Whether the holder renewed within its TTL as of `now`, and, when it ran on
    /// this machine in this boot, its process still runs.
    pub fn live_at(&self, now: u64) -> bool {
        if self.renewed_at + self.ttl < now {
            return false;
        }
        let me = this_machine();
        if !self.boot.is_empty()
            && self.boot == me.1
            && self.host == me.0
            && !self.pidns.is_empty()
            && self.pidns == me.2
        {
            return process_exists(self.pid);
        }
        true
    }

    /// One line for messages: who, where, how fresh.
    pub fn describe(&self, now: u64) -> String {
        format!(
            "run {} (host {}, pid {}, started {}s ago, last heartbeat {}s ago{})",
            self.run,
            self.host,
            self.pid,
            now.saturating_sub(self.started_at),
            now.saturating_sub(self.renewed_at),
            if self.window.is_empty() {
                String::new()
            } else {
                format!(", days {}", self.window)
            }
        )
    }
}

/// This machine's host name, boot id and this process's PID namespace, read once.
fn this_machine() -> &'static (String, String, String) {
    static M: std::sync::OnceLock<(String, String, String)> = std::sync::OnceLock::new();
    M.get_or_init(|| {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let host = read("/proc/sys/kernel/hostname");
        (
            if host.is_empty() {
                "unknown".into()
            } else {
                host
            },
            read("/proc/sys/kernel/random/boot_id"),
            std::fs::read_link("/proc/self/ns/pid")
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
        )
    })
}

/// Whether a process with this pid exists on this machine.
fn process_exists(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// A run's identity, made once per process.
#[derive(Clone, Debug)]
pub struct RunId {
    /// `<host>-<pid>-<start>`.
    pub run: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Start, seconds since the epoch.
    pub started_at: u64,
}

impl RunId {
    /// This process.
    pub fn this_process() -> RunId {
        let host = this_machine().0.clone();
        let pid = std::process::id();
        let started_at = now_secs();
        RunId {
            run: format!("{host}-{pid}-{started_at}"),
            host,
            pid,
            started_at,
        }
    }
}

/// The outcome of trying to take a lease.
#[derive(Debug)]
pub enum Taken {
    /// This run holds it now.
    Held,
    /// Another live run holds it.
    Busy(Holder),
}

/// The leases one run holds in one job, and the means to take more.
pub struct Leases<'a> {
    store: &'a dyn Store,
    job: String,
    me: RunId,
    ttl: u64,
    window: String,
    /// Lease name (`folders/<id>`, `sweep`) → the generation key this run holds.
    held: Mutex<HashMap<String, Held>>,
    /// The run lease was withdrawn: heartbeats must not bring it back (held across
    /// a renewal and across the withdrawal, so neither slips between the other's
    /// check and write).
    withdrawn: Mutex<bool>,
}

#[derive(Clone, Debug)]
struct Held {
    key: String,
    what: String,
    lost: bool,
}

fn generation_of(key: &str) -> Option<u64> {
    key.rsplit('/').next()?.strip_suffix(".json")?.parse().ok()
}

fn generation_key(prefix: &str, generation: u64) -> String {
    format!("{prefix}{generation:012}.json")
}

impl<'a> Leases<'a> {
    /// Leases of `job` in `store` for this run; `window` names its days for people.
    pub fn new(store: &'a dyn Store, job: &str, me: RunId, ttl: u64, window: String) -> Self {
        Leases {
            store,
            job: job.to_string(),
            me,
            ttl: ttl.max(1),
            window,
            held: Mutex::new(HashMap::new()),
            withdrawn: Mutex::new(false),
        }
    }

    /// This run's identity.
    pub fn me(&self) -> &RunId {
        &self.me
    }

    /// Seconds between heartbeats.
    pub fn heartbeat_every(&self) -> std::time::Duration {
        std::time::Duration::from_millis((self.ttl * 1000 / 4).max(200))
    }

    fn holder(&self, what: &str) -> Holder {
        Holder {
            run: self.me.run.clone(),
            host: self.me.host.clone(),
            pid: self.me.pid,
            started_at: self.me.started_at,
            renewed_at: now_secs(),
            ttl: self.ttl,
            what: what.to_string(),
            window: self.window.clone(),
            boot: this_machine().1.clone(),
            pidns: this_machine().2.clone(),
        }
    }

    fn run_key(&self) -> String {
        format!("{}{}.json", runs_prefix(&self.job), self.me.run)
    }

    fn prefix(&self, name: &str) -> String {
        format!("{}{name}/", leases_prefix(&self.job))
    }

    /// Announces this run (its run lease); renewed by [`Leases::heartbeat`].
    pub fn announce(&self) -> io::Result<()> {
        let body = serde_json::to_vec_pretty(&self.holder("run")).map_err(io::Error::other)?;
        self.store.put(&self.run_key(), &body)
    }

    /// Withdraws this run's run lease (at its end); later heartbeats renew only
    /// the leases still held.
    pub fn withdraw(&self) -> io::Result<()> {
        let mut w = self.withdrawn.lock().unwrap();
        *w = true;
        self.store.delete(&self.run_key())
    }

    /// The current holder of lease `name`, live or not, with its key.
    fn current(&self, name: &str) -> io::Result<Option<(String, Holder)>> {
        let prefix = self.prefix(name);
        let mut keys: Vec<(u64, String)> = self
            .store
            .list(&prefix)?
            .into_iter()
            .filter_map(|m| generation_of(&m.key).map(|g| (g, m.key)))
            .collect();
        keys.sort();
        while let Some((_, key)) = keys.pop() {
            let Some(bytes) = self.store.get(&key)? else {
                continue;
            };
            // A lease that cannot be parsed is treated as an expired one.
            let h = serde_json::from_slice(&bytes).unwrap_or(Holder {
                run: String::new(),
                host: String::new(),
                pid: 0,
                started_at: 0,
                renewed_at: 0,
                ttl: 0,
                what: String::new(),
                window: String::new(),
                boot: String::new(),
                pidns: String::new(),
            });
            return Ok(Some((key, h)));
        }
        Ok(None)
    }

    /// The live holder of lease `name` other than this run, if any.
    pub fn holder_of(&self, name: &str) -> io::Result<Option<Holder>> {
        let now = now_secs();
        Ok(self
            .current(name)?
            .map(|(_, h)| h)
            .filter(|h| h.run != self.me.run && h.live_at(now)))
    }

    /// Tries to take lease `name` (`what` says what it is for): held when free,
    /// expired, or already this run's; busy when another live run holds it.
    pub fn try_take(&self, name: &str, what: &str) -> io::Result<Taken> {
        let prefix = self.prefix(name);
        for _ in 0..20 {
            let (next, stale) = match self.current(name)? {
                None => (0, None),
                Some((key, h)) => {
                    if h.run == self.me.run {
                        self.hold(name, key, what);
                        return Ok(Taken::Held);
                    }
                    if h.live_at(now_secs()) {
                        return Ok(Taken::Busy(h));
                    }
                    (generation_of(&key).map_or(0, |g| g + 1), Some((key, h)))
                }
            };
            let key = generation_key(&prefix, next);
            let body = serde_json::to_vec_pretty(&self.holder(what)).map_err(io::Error::other)?;
            if self.store.put_if_absent(&key, &body)? {
                if let Some((old, h)) = stale {
                    tracing::warn!(lease = %name, holder = %h.describe(now_secs()), "taking over an expired lease");
                    // Older generations are history now.
                    for m in self.store.list(&prefix)? {
                        if generation_of(&m.key).is_some_and(|g| g < next) || m.key == old {
                            self.store.delete(&m.key)?;
                        }
                    }
                }
                self.hold(name, key, what);
                crate::failpoint::hit("lease-taken");
                return Ok(Taken::Held);
            }
            // Another run created that generation first: look again.
        }
        Err(io::Error::other(format!(
            "could not take lease {name} of job {} after 20 attempts (other runs keep taking it)",
            self.job
        )))
    }

    fn hold(&self, name: &str, key: String, what: &str) {
        self.held.lock().unwrap().insert(
            name.to_string(),
            Held {
                key,
                what: what.to_string(),
                lost: false,
            },
        );
    }

    /// Releases lease `name` if this run holds it.
    pub fn release(&self, name: &str) -> io::Result<()> {
        let held = self.held.lock().unwrap().remove(name);
        if let Some(h) = held {
            // Only a key that still holds this run: after a takeover the same key
            // may be another run's new generation.
            if !h.lost && self.still_mine(name, &h.key)? {
                self.store.delete(&h.key)?;
            }
        }
        Ok(())
    }

    /// Releases every lease this run still holds (at its end, whatever happened).
    pub fn release_all(&self) {
        let names: Vec<String> = self.held.lock().unwrap().keys().cloned().collect();
        for n in names {
            if let Err(e) = self.release(&n) {
                tracing::warn!(lease = %n, error = %e, "could not release a lease; it expires by itself");
            }
        }
    }

    /// Deletes the job's leases whose holders are gone (expired, or dead on this
    /// machine), except those this run holds; returns how many. For the sweep,
    /// which runs only when no other run of the job is alive.
    pub fn remove_expired(&self) -> io::Result<u64> {
        let now = now_secs();
        let mine: Vec<String> = self
            .held
            .lock()
            .unwrap()
            .values()
            .map(|h| h.key.clone())
            .collect();
        let mut n = 0;
        for m in self.store.list(&leases_prefix(&self.job))? {
            if mine.contains(&m.key) || m.key == self.run_key() {
                continue;
            }
            let live = self
                .store
                .get(&m.key)?
                .and_then(|b| serde_json::from_slice::<Holder>(&b).ok())
                .is_some_and(|h| h.live_at(now));
            if !live {
                self.store.delete(&m.key)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Whether this run lost lease `name` to another run (its heartbeats stalled
    /// past the TTL and the lease was taken over), or never held it.
    pub fn lost(&self, name: &str) -> bool {
        self.held.lock().unwrap().get(name).is_none_or(|h| h.lost)
    }

    /// Renews the run lease and every lease held; marks as lost those another run
    /// took over meanwhile.
    pub fn heartbeat(&self) -> io::Result<()> {
        let announced = {
            let w = self.withdrawn.lock().unwrap();
            if *w {
                Ok(())
            } else {
                self.announce()
            }
        };
        let held: Vec<(String, Held)> = self
            .held
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, h)| !h.lost)
            .map(|(n, h)| (n.clone(), h.clone()))
            .collect();
        for (name, h) in held {
            if !self.still_mine(&name, &h.key)? {
                tracing::error!(lease = %name, "another run took this lease over (this run's heartbeats were late); abandoning it");
                if let Some(x) = self.held.lock().unwrap().get_mut(&name) {
                    x.lost = true;
                }
                continue;
            }
            let body =
                serde_json::to_vec_pretty(&self.holder(&h.what)).map_err(io::Error::other)?;
            self.store.put(&h.key, &body)?;
        }
        announced
    }

    /// Whether `key` is still the newest generation of lease `name` and holds this
    /// run: a lease taken over is deleted or superseded, and must never be written
    /// back (another run may hold a new generation under the same key by then).
    fn still_mine(&self, name: &str, key: &str) -> io::Result<bool> {
        let mine = generation_of(key);
        let newer = self
            .store
            .list(&self.prefix(name))?
            .iter()
            .any(|m| generation_of(&m.key) > mine);
        if newer {
            return Ok(false);
        }
        Ok(self
            .store
            .get(key)?
            .and_then(|b| serde_json::from_slice::<Holder>(&b).ok())
            .is_some_and(|h| h.run == self.me.run))
    }

    /// Asks the store, not the heartbeat's last word, whether this run still holds
    /// lease `name`: for the moments that must not happen without it (publishing a
    /// folder's objects, committing its manifest). Marks it lost when it is not.
    pub fn confirm(&self, name: &str) -> io::Result<bool> {
        let Some(h) = self.held.lock().unwrap().get(name).cloned() else {
            return Ok(false);
        };
        if h.lost {
            return Ok(false);
        }
        let ok = self.still_mine(name, &h.key)?;
        if !ok {
            if let Some(x) = self.held.lock().unwrap().get_mut(name) {
                x.lost = true;
            }
        }
        Ok(ok)
    }

    /// Other live runs of the job.
    pub fn other_live_runs(&self) -> io::Result<Vec<Holder>> {
        let now = now_secs();
        Ok(runs(self.store, &self.job)?
            .into_iter()
            .filter(|h| h.run != self.me.run && h.live_at(now))
            .collect())
    }
}

/// Every run lease of `job`, live or expired.
pub fn runs(store: &dyn Store, job: &str) -> io::Result<Vec<Holder>> {
    let mut out = Vec::new();
    for m in store.list(&runs_prefix(job))? {
        if let Some(bytes) = store.get(&m.key)? {
            if let Ok(h) = serde_json::from_slice::<Holder>(&bytes) {
                out.push(h);
            }
        }
    }
    Ok(out)
}

/// Every live lease of `job` held by a folder, by folder lease name.
pub fn live_folder_leases(store: &dyn Store, job: &str) -> io::Result<Vec<Holder>> {
    let now = now_secs();
    let mut out = Vec::new();
    for m in store.list(&format!("{}folders/", leases_prefix(job)))? {
        if let Some(bytes) = store.get(&m.key)? {
            if let Ok(h) = serde_json::from_slice::<Holder>(&bytes) {
                if h.live_at(now) {
                    out.push(h);
                }
            }
        }
    }
    Ok(out)
}

/// The lease name of a source folder.
pub fn folder_lease(folder_id: &str) -> String {
    format!("folders/{folder_id}")
}

/// The lease name of the job's sweep.
pub const SWEEP: &str = "sweep";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::local::LocalStore;

    fn run(n: u32) -> RunId {
        RunId {
            run: format!("host-{n}-1"),
            host: "host".into(),
            pid: n,
            started_at: 1,
        }
    }

    #[test]
    fn one_holder_at_a_time_and_takeover_after_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let a = Leases::new(&store, "job", run(1), 60, String::new());
        let b = Leases::new(&store, "job", run(2), 60, String::new());
        assert!(matches!(
            a.try_take("folders/f", "folder f").unwrap(),
            Taken::Held
        ));
        assert!(matches!(
            a.try_take("folders/f", "folder f").unwrap(),
            Taken::Held
        ));
        match b.try_take("folders/f", "folder f").unwrap() {
            Taken::Busy(h) => assert_eq!(h.run, "host-1-1"),
            other => panic!("expected busy, got {other:?}"),
        }
        // a's heartbeats stop: make its lease look 2 minutes old.
        let key = format!("{}folders/f/000000000000.json", leases_prefix("job"));
        let mut h: Holder = serde_json::from_slice(&store.get(&key).unwrap().unwrap()).unwrap();
        h.renewed_at -= 120;
        store.put(&key, &serde_json::to_vec(&h).unwrap()).unwrap();
        assert!(matches!(
            b.try_take("folders/f", "folder f").unwrap(),
            Taken::Held
        ));
        let keys: Vec<String> = store
            .list(&leases_prefix("job"))
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(
            keys,
            [format!(
                "{}folders/f/000000000001.json",
                leases_prefix("job")
            )]
        );
        // a notices at its next heartbeat, and releasing does not touch b's lease.
        assert!(!a.lost("folders/f"));
        a.heartbeat().unwrap();
        assert!(a.lost("folders/f"));
        a.release("folders/f").unwrap();
        assert!(matches!(
            a.try_take("folders/f", "folder f").unwrap(),
            Taken::Busy(_)
        ));
        b.release("folders/f").unwrap();
        assert!(matches!(
            a.try_take("folders/f", "folder f").unwrap(),
            Taken::Held
        ));
    }

    #[test]
    fn a_late_holder_never_writes_back_a_lease_taken_from_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let a = Leases::new(&store, "job", run(1), 60, String::new());
        let b = Leases::new(&store, "job", run(2), 60, String::new());
        let c = Leases::new(&store, "job", run(3), 60, String::new());
        assert!(matches!(a.try_take("folders/f", "f").unwrap(), Taken::Held));
        // a stalls past its TTL; b takes over, finishes and releases (no key left).
        let key = format!("{}folders/f/000000000000.json", leases_prefix("job"));
        let mut h: Holder = serde_json::from_slice(&store.get(&key).unwrap().unwrap()).unwrap();
        h.renewed_at -= 120;
        store.put(&key, &serde_json::to_vec(&h).unwrap()).unwrap();
        assert!(matches!(b.try_take("folders/f", "f").unwrap(), Taken::Held));
        b.release("folders/f").unwrap();
        assert!(store.list(&leases_prefix("job")).unwrap().is_empty());
        // a wakes up: its heartbeat must not bring generation 0 back...
        a.heartbeat().unwrap();
        assert!(a.lost("folders/f"));
        assert!(!a.confirm("folders/f").unwrap());
        let folders = format!("{}folders/", leases_prefix("job"));
        assert!(store.list(&folders).unwrap().is_empty());
        // ...and once c holds generation 0 anew, a's release leaves it alone.
        assert!(matches!(c.try_take("folders/f", "f").unwrap(), Taken::Held));
        a.release("folders/f").unwrap();
        assert!(c.confirm("folders/f").unwrap());
        assert!(matches!(
            b.try_take("folders/f", "f").unwrap(),
            Taken::Busy(_)
        ));
    }

    #[test]
    fn racing_runs_get_one_lease() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let held = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for n in 0..6 {
                let (store, held) = (&store, &held);
                s.spawn(move || {
                    let l = Leases::new(store, "job", run(n), 60, String::new());
                    if matches!(l.try_take(SWEEP, "sweep").unwrap(), Taken::Held) {
                        held.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(held.into_inner(), 1);
    }

    #[test]
    fn a_heartbeat_after_the_withdrawal_does_not_bring_the_run_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let a = Leases::new(&store, "job", run(1), 60, String::new());
        let b = Leases::new(&store, "job", run(2), 60, String::new());
        a.announce().unwrap();
        assert_eq!(b.other_live_runs().unwrap().len(), 1);
        a.withdraw().unwrap();
        a.heartbeat().unwrap();
        assert!(b.other_live_runs().unwrap().is_empty());
    }

    #[test]
    fn run_leases_are_listed_live_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path()).unwrap();
        let a = Leases::new(&store, "job", run(1), 60, "20130601..20130602".into());
        let b = Leases::new(&store, "job", run(2), 60, String::new());
        a.announce().unwrap();
        b.announce().unwrap();
        let others = a.other_live_runs().unwrap();
        assert_eq!(others.len(), 1);
        assert_eq!(others[0].run, "host-2-1");
        b.withdraw().unwrap();
        assert!(a.other_live_runs().unwrap().is_empty());
        assert_eq!(runs(&store, "job").unwrap().len(), 1);
        assert!(runs(&store, "job").unwrap()[0]
            .describe(now_secs())
            .contains("days 20130601..20130602"));
    }
}
