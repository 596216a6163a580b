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
