//! The behaviour every [`Store`] backend must show; each backend's tests call
//! [`run`] on a fresh, empty store. Public (but hidden from the docs) so that the
//! integration tests can run it against servers the unit tests do not have.

use super::Store;
use std::io::Write;

/// Runs every contract check against an empty store.
pub fn run(store: &dyn Store) {
    // put / get / overwrite
    store.put("a/b/c.txt", b"hello").unwrap();
    assert_eq!(
        store.get("a/b/c.txt").unwrap().as_deref(),
        Some(&b"hello"[..])
    );
    store.put("a/b/c.txt", b"hello again").unwrap();
    assert_eq!(
        store.get("a/b/c.txt").unwrap().as_deref(),
        Some(&b"hello again"[..])
    );
    assert_eq!(store.get("missing").unwrap(), None);
    assert!(store.open("missing").is_err());

    // create-if-absent: exactly one of several racing writers wins, with its bytes
    assert!(store.put_if_absent("l/lease.json", b"first").unwrap());
    assert!(!store.put_if_absent("l/lease.json", b"second").unwrap());
    assert_eq!(
        store.get("l/lease.json").unwrap().as_deref(),
        Some(&b"first"[..])
    );
    let wins = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for i in 0..4 {
            let wins = &wins;
            s.spawn(move || {
                let body = format!("racer {i}");
                if store.put_if_absent("l/race.json", body.as_bytes()).unwrap() {
                    wins.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    assert_eq!(wins.into_inner(), 1, "exactly one racer creates the key");
    store.delete("l/lease.json").unwrap();
    assert!(store.put_if_absent("l/lease.json", b"again").unwrap());
    // modification times: now-ish for a fresh object, none for a missing one
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let m = store.modified("l/lease.json").unwrap().expect("exists");
    assert!(m + 120 >= now && m <= now + 120, "modified {m}, now {now}");
    assert_eq!(store.modified("l/missing").unwrap(), None);
    store.delete("l/lease.json").unwrap();
    store.delete("l/race.json").unwrap();

    // streaming writes are invisible until commit; dropped writes leave nothing
    let mut w = store.create("s/obj").unwrap();
    w.write_all(b"part1-").unwrap();
    assert_eq!(store.get("s/obj").unwrap(), None);
    w.write_all(b"part2").unwrap();
    assert_eq!(w.commit().unwrap(), 11);
    assert_eq!(
        store.get("s/obj").unwrap().as_deref(),
        Some(&b"part1-part2"[..])
    );
    let mut w = store.create("s/abandoned").unwrap();
    w.write_all(b"x").unwrap();
    drop(w);
    assert_eq!(store.get("s/abandoned").unwrap(), None);

    // batched publication: invisible until published
    let mut pending = Vec::new();
    for k in ["b/1", "b/2"] {
        let mut w = store.create(k).unwrap();
        w.write_all(k.as_bytes()).unwrap();
        let (n, p) = w.finish().unwrap();
        assert_eq!(n, 3);
        pending.extend(p);
    }
    store.publish(pending).unwrap();
    assert_eq!(store.get("b/1").unwrap().as_deref(), Some(&b"b/1"[..]));
    assert_eq!(store.get("b/2").unwrap().as_deref(), Some(&b"b/2"[..]));
    store.delete("b/1").unwrap();
    store.delete("b/2").unwrap();

    // ranges
    assert_eq!(store.read_range("s/obj", 2, 3).unwrap(), b"rt1");
    assert!(store.read_range("s/obj", 8, 10).is_err());

    // listing: sorted, by prefix, sizes, no temporary leftovers
    let keys: Vec<_> = store
        .list("")
        .unwrap()
        .into_iter()
        .map(|m| (m.key, m.size))
        .collect();
    assert_eq!(
        keys,
        vec![("a/b/c.txt".to_string(), 11), ("s/obj".to_string(), 11)]
    );
    assert_eq!(store.list("s/").unwrap().len(), 1);
    assert_eq!(store.list("nope/").unwrap().len(), 0);
    // the streaming listing sees the same objects
    for prefix in ["", "a/", "a/b", "s/", "nope/"] {
        let mut each = Vec::new();
        store
            .list_each(prefix, &mut |m| {
                each.push((m.key, m.size));
                Ok(())
            })
            .unwrap();
        each.sort();
        let listed: Vec<_> = store
            .list(prefix)
            .unwrap()
            .into_iter()
            .map(|m| (m.key, m.size))
            .collect();
        assert_eq!(each, listed, "prefix {prefix:?}");
    }

    // delete, idempotent
    store.delete("s/obj").unwrap();
    store.delete("s/obj").unwrap();
    assert_eq!(store.get("s/obj").unwrap(), None);

    // keys that could escape are refused
    for bad in ["../x", "a/../../x", "/abs", "a//b", "a/./b", ""] {
        assert!(store.put(bad, b"x").is_err(), "{bad:?} accepted");
    }
}
