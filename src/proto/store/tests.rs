use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;
use rand::{RngExt, SeedableRng, rngs::Xoshiro256PlusPlus};

use super::*;
use crate::proto::{SeqRange, SeqSet};

fn store(writer: u64) -> Store {
    Store::new(WriterId(writer), StoreConfig::default())
}

fn key(s: &str) -> Key {
    Key::new(s).unwrap()
}

fn val(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// The replicated part of a store: what every replica must agree on.
fn replicated(s: &Store) -> (BTreeMap<Key, Vec<Version>>, Digest) {
    (s.keys.clone(), s.context.clone())
}

/// Live siblings per key as (dot, value): what a reader can observe.
fn observable(s: &Store) -> BTreeMap<Key, Vec<(WriterId, u64, Bytes)>> {
    s.keys
        .iter()
        .map(|(k, sibs)| {
            let live = sibs
                .iter()
                .filter_map(|v| {
                    v.payload
                        .value()
                        .map(|b| (v.dot.actor, v.dot.counter, b.clone()))
                })
                .collect::<Vec<_>>();
            (k.clone(), live)
        })
        .filter(|(_, live)| !live.is_empty())
        .collect()
}

#[track_caller]
fn check_invariants(s: &Store) {
    let mut indexed = 0;
    for (k, sibs) in &s.keys {
        assert!(!sibs.is_empty(), "empty sibling list for {k}");
        for (i, v) in sibs.iter().enumerate() {
            assert_eq!(&v.key, k);
            assert!(
                s.context.contains(&v.dot),
                "stored dot {:?} not in context",
                v.dot
            );
            assert_eq!(
                s.by_dot
                    .get(&v.dot.actor)
                    .and_then(|m| m.get(&v.dot.counter)),
                Some(k)
            );
            for w in &sibs[i + 1..] {
                assert!(v.rank() > w.rank(), "siblings out of rank order");
                assert!(
                    !v.supersedes(&w.dot) && !w.supersedes(&v.dot),
                    "a sibling supersedes another"
                );
            }
            indexed += 1;
        }
    }
    assert_eq!(
        indexed,
        s.version_count(),
        "index holds versions that are not stored"
    );
}

/// Anti-entropy between every ordered pair until nothing moves, with a small byte budget so
/// truncated deltas and chunked snapshots are exercised. Returns the number of rounds.
fn repair(replicas: &mut [Store]) -> usize {
    for round in 1..=50 {
        let mut moved = false;
        for i in 0..replicas.len() {
            for j in 0..replicas.len() {
                if i == j {
                    continue;
                }
                let digest = replicas[j].digest().clone();
                match replicas[i].delta_for(&digest, 300) {
                    SyncReply::Delta(delta) if delta.is_empty() => {}
                    SyncReply::Delta(delta) => {
                        moved = true;
                        replicas[j].apply_delta(delta).unwrap();
                    }
                    SyncReply::SnapshotNeeded => {
                        moved = true;
                        let chunks = replicas[i].snapshot_chunks(300);
                        let (context, collected) =
                            (chunks[0].context.clone(), chunks[0].collected.clone());
                        // Chunks travel on separate streams: merge them in reverse order.
                        for chunk in chunks.into_iter().rev() {
                            replicas[j].merge_snapshot(chunk).unwrap();
                        }
                        replicas[j].adopt_snapshot_context(&context, collected);
                    }
                }
            }
        }
        if !moved {
            return round;
        }
    }
    panic!("anti-entropy did not settle in 50 rounds");
}

fn run_gc(replicas: &mut [Store], members: &[usize]) {
    let vectors: Vec<VClock> = members
        .iter()
        .map(|&m| replicas[m].digest().version_vector())
        .collect();
    for &m in members {
        replicas[m].collect_garbage(&vectors);
    }
}

#[test]
fn put_get_list_delete() {
    let mut s = store(1);
    s.put(10, key("app/a"), val("1")).unwrap();
    s.put(11, key("app/b"), val("2")).unwrap();
    s.put(12, key("other"), val("3")).unwrap();
    assert_eq!(
        s.get(&key("app/a")).unwrap().payload,
        Payload::Value(val("1"))
    );
    let listed: Vec<&str> = s.list("app/").map(|v| v.key.as_str()).collect();
    assert_eq!(listed, ["app/a", "app/b"]);
    assert!(s.delete(13, key("app/a")).is_some());
    assert!(s.get(&key("app/a")).is_none());
    assert_eq!(s.list("app/").count(), 1);
    assert!(
        s.delete(14, key("app/a")).is_none(),
        "deleting a deleted key writes nothing"
    );
    assert!(s.delete(14, key("never")).is_none());
    assert_eq!(s.digest().seen(WriterId(1)), &SeqSet::up_to(4));
    check_invariants(&s);
}

#[test]
fn oversized_values_are_refused_not_truncated() {
    let mut s = Store::new(WriterId(1), StoreConfig { max_value_bytes: 4 });
    assert_eq!(
        s.put(1, key("k"), val("12345")),
        Err(WriteError::ValueTooLarge { len: 5, max: 4 })
    );
    assert_eq!(s.version_count(), 0);
    let mut big = store(2);
    let v = big.put(1, key("k"), val("12345")).unwrap();
    assert_eq!(
        s.apply(v),
        Err(ApplyError::ValueTooLarge { len: 5, max: 4 })
    );
    assert!(
        s.digest().writers().next().is_none(),
        "a refused version is not recorded as seen"
    );
}

#[test]
fn malformed_versions_are_refused() {
    let mut s = store(1);
    let mut v = store(2).put(1, key("k"), val("x")).unwrap();
    v.dot.counter = 0;
    assert!(matches!(
        s.apply(v.clone()),
        Err(ApplyError::Malformed { .. })
    ));
    v.dot.counter = 3;
    v.supersedes.apply(Dot::new(WriterId(2), 3));
    assert!(matches!(s.apply(v), Err(ApplyError::Malformed { .. })));
}

#[test]
fn concurrent_puts_become_siblings_and_a_later_put_resolves_them() {
    let (mut a, mut b) = (store(1), store(2));
    let va = a.put(100, key("k"), val("from-a")).unwrap();
    let vb = b.put(100, key("k"), val("from-b")).unwrap();
    assert_eq!(
        a.apply(vb.clone()),
        Ok(Applied::Stored {
            winner_changed: true
        })
    );
    assert_eq!(
        b.apply(va.clone()),
        Ok(Applied::Stored {
            winner_changed: false
        })
    );
    for s in [&a, &b] {
        // Same timestamps: the greater writer id wins, everywhere.
        assert_eq!(
            s.get(&key("k")).unwrap().payload,
            Payload::Value(val("from-b"))
        );
        assert_eq!(s.versions(&key("k")).len(), 2);
        check_invariants(s);
    }
    let resolved = a.put(101, key("k"), val("merged")).unwrap();
    assert_eq!(
        b.apply(resolved),
        Ok(Applied::Stored {
            winner_changed: true
        })
    );
    for s in [&a, &b] {
        assert_eq!(s.versions(&key("k")).len(), 1);
        assert_eq!(
            s.get(&key("k")).unwrap().payload,
            Payload::Value(val("merged"))
        );
    }
    // The superseded versions arriving late change nothing.
    assert_eq!(b.apply(va), Ok(Applied::Duplicate));
    let mut c = store(3);
    for v in b.snapshot().versions.into_iter().rev() {
        c.apply(v).unwrap();
    }
    assert_eq!(
        c.apply(vb),
        Ok(Applied::Obsolete {
            winner_changed: false
        })
    );
    assert_eq!(observable(&c), observable(&b));
}

#[test]
fn higher_timestamp_wins_among_concurrent_puts() {
    let (mut a, mut b) = (store(9), store(1));
    let va = a.put(100, key("k"), val("older")).unwrap();
    let vb = b.put(200, key("k"), val("newer")).unwrap();
    a.apply(vb).unwrap();
    b.apply(va).unwrap();
    for s in [&a, &b] {
        assert_eq!(
            s.get(&key("k")).unwrap().payload,
            Payload::Value(val("newer"))
        );
    }
}

#[test]
fn put_wins_over_a_concurrent_delete_and_the_tombstone_stays_visible() {
    let (mut a, mut b) = (store(1), store(2));
    let v0 = a.put(1, key("k"), val("v0")).unwrap();
    b.apply(v0).unwrap();
    // a deletes, b overwrites, concurrently; the delete has the later timestamp.
    let del = a.delete(300, key("k")).unwrap();
    let put = b.put(200, key("k"), val("v1")).unwrap();
    a.apply(put).unwrap();
    b.apply(del).unwrap();
    for s in [&a, &b] {
        assert_eq!(s.get(&key("k")).unwrap().payload, Payload::Value(val("v1")));
        let sibs = s.versions(&key("k"));
        assert_eq!(sibs.len(), 2);
        assert!(
            sibs[1].is_tombstone(),
            "the tombstone is ranked after the live value"
        );
    }
    // A delete that has seen the put removes the key everywhere.
    let del2 = b.delete(400, key("k")).unwrap();
    a.apply(del2).unwrap();
    assert!(a.get(&key("k")).is_none() && b.get(&key("k")).is_none());
}

#[test]
fn delta_for_sends_exactly_what_the_digest_lacks() {
    let mut a = store(1);
    let mut b = store(2);
    for i in 0..6 {
        let v = a.put(i, key(&format!("k{}", i % 3)), val("x")).unwrap();
        if i < 2 {
            b.apply(v).unwrap();
        }
    }
    // a holds k0..k2 at seqs 4,5,6; seqs 1..3 were superseded. b has seen 1 and 2.
    let SyncReply::Delta(delta) = a.delta_for(b.digest(), usize::MAX) else {
        panic!("expected a delta")
    };
    let sent: Vec<u64> = delta.versions.iter().map(|v| v.dot.counter).collect();
    assert_eq!(sent, [4, 5, 6]);
    assert_eq!(
        delta.cleared,
        vec![(WriterId(1), SeqRange { start: 3, end: 3 })]
    );
    assert!(!delta.truncated);
    b.apply_delta(delta).unwrap();
    assert_eq!(observable(&a), observable(&b));
    assert_eq!(a.digest().seen(WriterId(1)), b.digest().seen(WriterId(1)));
    let SyncReply::Delta(nothing) = a.delta_for(b.digest(), usize::MAX) else {
        panic!()
    };
    assert!(nothing.is_empty());
}

#[test]
fn delta_budget_truncates_but_always_makes_progress() {
    let mut a = store(1);
    for i in 0..10 {
        a.put(i, key(&format!("k{i}")), val("0123456789")).unwrap();
    }
    let mut b = store(2);
    let mut rounds = 0;
    loop {
        let SyncReply::Delta(delta) = a.delta_for(b.digest(), 1) else {
            panic!()
        };
        if delta.is_empty() {
            break;
        }
        assert_eq!(
            delta.versions.len(),
            1,
            "budget 1 sends one version per delta"
        );
        b.apply_delta(delta).unwrap();
        rounds += 1;
    }
    assert_eq!(rounds, 10);
    assert_eq!(replicated(&a).0, replicated(&b).0);
}

#[test]
fn restore_resumes_numbering_after_the_snapshot() {
    let mut a = store(1);
    a.put(1, key("k"), val("1")).unwrap();
    a.put(2, key("j"), val("2")).unwrap();
    let restored = Store::restore(WriterId(1), StoreConfig::default(), a.snapshot()).unwrap();
    assert_eq!(replicated(&restored), replicated(&a));
    let mut restored = restored;
    let v = restored.put(3, key("k"), val("3")).unwrap();
    assert_eq!(v.dot, Dot::new(WriterId(1), 3));
    assert!(v.timestamp > a.get(&key("j")).unwrap().timestamp);
}

#[test]
fn snapshot_resolves_what_a_collected_tombstone_deleted() {
    // a, b are members; c was away and holds the old value.
    let (mut a, mut b, mut c) = (store(1), store(2), store(3));
    let v = a.put(1, key("k"), val("old")).unwrap();
    b.apply(v.clone()).unwrap();
    c.apply(v).unwrap();
    let del = a.delete(2, key("k")).unwrap();
    b.apply(del).unwrap();
    let mut members = [a, b];
    run_gc(&mut members, &[0, 1]);
    let [a, _b] = members;
    assert_eq!(a.key_count(), 0, "the tombstone was collected");
    assert_eq!(
        a.delta_for(c.digest(), usize::MAX),
        SyncReply::SnapshotNeeded
    );
    c.merge_snapshot(a.snapshot()).unwrap();
    assert!(
        c.get(&key("k")).is_none(),
        "the snapshot removed the deleted value"
    );
    assert_eq!(replicated(&c).0, replicated(&a).0);
    check_invariants(&c);
}

#[test]
fn chunked_snapshot_equals_whole_snapshot() {
    let mut a = store(1);
    let mut c = store(3);
    for i in 0..50 {
        let v = a
            .put(i, key(&format!("k{:02}", i % 20)), val("value"))
            .unwrap();
        if i % 7 == 0 {
            c.apply(v).unwrap();
        }
    }
    c.put(99, key("k05"), val("concurrent")).unwrap();
    let mut whole = c.clone();
    whole.merge_snapshot(a.snapshot()).unwrap();
    let mut chunks = a.snapshot_chunks(64);
    assert!(chunks.len() > 5);
    assert!(
        chunks
            .iter()
            .enumerate()
            .all(|(i, c)| c.part as usize == i && c.parts as usize == chunks.len())
    );
    // Out of order, as separate streams may deliver them.
    chunks.swap(0, 3);
    chunks.reverse();
    let (context, collected) = (chunks[0].context.clone(), chunks[0].collected.clone());
    let missing_one = chunks.pop().unwrap();
    for chunk in chunks {
        c.merge_snapshot(chunk).unwrap();
        check_invariants(&c);
    }
    assert!(
        !c.digest().covers(a.digest()),
        "the context is not adopted before every chunk is in"
    );
    c.merge_snapshot(missing_one).unwrap();
    c.adopt_snapshot_context(&context, collected);
    assert_eq!(replicated(&c), replicated(&whole));
    check_invariants(&c);
}

#[derive(Clone, Debug)]
enum Op {
    Put { writer: usize, key: u8, value: u8 },
    Delete { writer: usize, key: u8 },
    Gc,
}

fn op(writers: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..writers, 0u8..4, any::<u8>()).prop_map(|(writer, key, value)| Op::Put { writer, key, value }),
        2 => (0..writers, 0u8..4).prop_map(|(writer, key)| Op::Delete { writer, key }),
        1 => Just(Op::Gc),
    ]
}

/// Runs `ops` on `n` replicas, delivering each new version to the others through a network
/// that reorders, drops and duplicates, driven by `seed`. GC (when `gc` is on) uses every
/// replica but the last as members; the last is away and must catch up by snapshot.
/// Returns the replicas after repair, and every version ever written.
fn run(n: usize, ops: &[Op], seed: u64, gc: bool) -> (Vec<Store>, Vec<Version>) {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut replicas: Vec<Store> = (0..n).map(|i| store(i as u64 + 1)).collect();
    let mut in_flight: Vec<(usize, Version)> = Vec::new();
    let mut written = Vec::new();
    let members: Vec<usize> = (0..n.saturating_sub(1).max(1)).collect();
    for (t, op) in ops.iter().enumerate() {
        // Deliver a few in-flight versions in random order, dropping and duplicating some.
        for _ in 0..rng.random_range(0..4usize) {
            if in_flight.is_empty() {
                break;
            }
            let (to, version) = in_flight.swap_remove(rng.random_range(0..in_flight.len()));
            if rng.random_bool(0.2) {
                continue;
            }
            if rng.random_bool(0.1) {
                in_flight.push((to, version.clone()));
            }
            replicas[to].apply(version).unwrap();
        }
        let now = 1_000 + t as u64 * 10;
        let new = match *op {
            Op::Put {
                writer,
                key: k,
                value,
            } => Some(
                replicas[writer % n]
                    .put(now, key(&format!("k{k}")), Bytes::from(vec![value]))
                    .unwrap(),
            ),
            Op::Delete { writer, key: k } => {
                replicas[writer % n].delete(now, key(&format!("k{k}")))
            }
            Op::Gc if gc => {
                run_gc(&mut replicas, &members);
                None
            }
            Op::Gc => None,
        };
        if let Some(v) = new {
            for to in (0..n).filter(|&to| to != v.dot.actor.0 as usize - 1) {
                in_flight.push((to, v.clone()));
            }
            written.push(v);
        }
    }
    while let Some((to, version)) = in_flight.pop() {
        if !rng.random_bool(0.3) {
            replicas[to].apply(version).unwrap();
        }
    }
    repair(&mut replicas);
    (replicas, written)
}

/// The state the writes define, computed without a network: every version applied in the
/// order written to one fresh replica.
fn oracle(written: &[Version]) -> Store {
    let mut s = store(999);
    for v in written {
        s.apply(v.clone()).unwrap();
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn replicas_converge_whatever_the_delivery(
        n in 1usize..=5,
        ops in prop::collection::vec(op(5), 1..60),
        seed in any::<u64>(),
    ) {
        let (replicas, written) = run(n, &ops, seed, false);
        let expected = oracle(&written);
        for r in &replicas {
            check_invariants(r);
            prop_assert_eq!(&replicated(r).0, &replicated(&expected).0, "replica differs from the oracle");
            prop_assert_eq!(r.digest(), expected.digest());
        }
    }

    #[test]
    fn garbage_collection_never_resurrects_a_deleted_key(
        n in 2usize..=5,
        ops in prop::collection::vec(op(5), 1..80),
        seed in any::<u64>(),
    ) {
        let (mut replicas, written) = run(n, &ops, seed, true);
        let expected = oracle(&written);
        for r in &replicas {
            check_invariants(r);
            prop_assert_eq!(observable(r), observable(&expected), "live state differs from the oracle");
            prop_assert_eq!(r.digest(), expected.digest());
        }
        // Once everyone is a member again and collects, replicas are identical.
        let all: Vec<usize> = (0..n).collect();
        run_gc(&mut replicas, &all);
        for r in &replicas[1..] {
            prop_assert_eq!(replicated(r), replicated(&replicas[0]));
        }
    }

    #[test]
    fn snapshot_merge_is_commutative_associative_idempotent(
        ops in prop::collection::vec(op(3), 1..40),
        seed in any::<u64>(),
    ) {
        // Three diverged replicas: each write reaches a random subset of the others.
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut r: Vec<Store> = (1..=3).map(store).collect();
        for (t, op) in ops.iter().enumerate() {
            let now = 1_000 + t as u64;
            let v = match *op {
                Op::Put { writer, key: k, value } => Some(r[writer].put(now, key(&format!("k{k}")), Bytes::from(vec![value])).unwrap()),
                Op::Delete { writer, key: k } => r[writer].delete(now, key(&format!("k{k}"))),
                Op::Gc => None,
            };
            if let Some(v) = v {
                for (to, replica) in r.iter_mut().enumerate() {
                    if to != v.dot.actor.0 as usize - 1 && rng.random_bool(0.4) {
                        replica.apply(v.clone()).unwrap();
                    }
                }
            }
        }
        let merge = |x: &Store, y: &Store| {
            let mut m = x.clone();
            m.merge_snapshot(y.snapshot()).unwrap();
            check_invariants(&m);
            m
        };
        let (a, b, c) = (&r[0], &r[1], &r[2]);
        prop_assert_eq!(replicated(&merge(a, b)), replicated(&merge(b, a)));
        prop_assert_eq!(replicated(&merge(&merge(a, b), c)), replicated(&merge(a, &merge(b, c))));
        prop_assert_eq!(replicated(&merge(a, a)), replicated(a));
        // Restoring into an empty store (the bulk path), whole or chunk by chunk, gives the
        // replica back exactly.
        let restored = Store::restore(WriterId(9), StoreConfig::default(), a.snapshot()).unwrap();
        check_invariants(&restored);
        prop_assert_eq!(replicated(&restored), replicated(a));
        let mut chunked = store(9);
        for chunk in a.snapshot_chunks(40).into_iter().rev() {
            chunked.merge_snapshot(chunk).unwrap();
            check_invariants(&chunked);
        }
        chunked.adopt_snapshot_context(a.digest(), a.collected_floor().clone());
        prop_assert_eq!(replicated(&chunked), replicated(a));
        // Merging is the same as exchanging deltas.
        let mut d = a.clone();
        let SyncReply::Delta(delta) = b.delta_for(d.digest(), usize::MAX) else { panic!() };
        d.apply_delta(delta).unwrap();
        prop_assert_eq!(replicated(&d), replicated(&merge(a, b)));
    }
}

#[test]
fn a_local_version_changes_nothing_until_applied_and_chains_after_a_pending_one() {
    let mut s = store(1);
    s.put(1_000, key("k"), val("a")).unwrap();
    let before = replicated(&s);
    let seq = s.last_local_seq() + 1;
    let first = s
        .local_version(2_000, key("k"), Payload::Value(val("b")), seq, None)
        .unwrap();
    assert_eq!(
        replicated(&s),
        before,
        "building a version must not store it"
    );
    assert_eq!(first.dot, Dot::new(WriterId(1), 2));
    assert!(first.supersedes(&Dot::new(WriterId(1), 1)));
    // The next one, built while the first is not stored, supersedes it too.
    let second = s
        .local_version(2_001, key("k"), Payload::Tombstone, seq + 1, Some(&first))
        .unwrap();
    assert!(second.supersedes(&first.dot) && second.supersedes(&Dot::new(WriterId(1), 1)));
    assert!(second.timestamp > first.timestamp);
    s.apply(first.clone()).unwrap();
    s.apply(second.clone()).unwrap();
    assert_eq!(s.versions(&key("k")), std::slice::from_ref(&second));
    assert_eq!(s.last_local_seq(), seq + 1);
    check_invariants(&s);
    assert!(!s.deletable(&key("k")) && !s.deletable(&key("absent")));
    assert!(
        s.local_version(
            4_000,
            key("k"),
            Payload::Value(Bytes::from(vec![0; DEFAULT_MAX_VALUE_BYTES + 1])),
            seq + 2,
            None
        )
        .is_err()
    );
}

#[test]
fn touched_keys_name_every_key_whose_versions_changed() {
    let mut a = store(1);
    let mut b = store(2);
    assert!(b.take_touched_keys().is_empty(), "off by default");
    b.track_touched_keys();
    let v1 = a.put(1_000, key("x"), val("1")).unwrap();
    let v2 = a.put(1_001, key("y"), val("2")).unwrap();
    b.apply(v1).unwrap();
    b.apply(v2.clone()).unwrap();
    assert_eq!(
        b.take_touched_keys().into_iter().collect::<Vec<_>>(),
        vec![(key("x"), Touched::New), (key("y"), Touched::New)]
    );
    assert!(b.take_touched_keys().is_empty(), "taking clears");
    b.apply(v2).unwrap();
    assert!(
        b.take_touched_keys().is_empty(),
        "a duplicate touches nothing"
    );
    // A delete, collected once stable, touches its key again.
    let tomb = a.delete(2_000, key("x")).unwrap();
    b.apply(tomb).unwrap();
    b.take_touched_keys();
    let vector = a.digest().version_vector();
    a.collect_garbage([&b.digest().version_vector()]);
    assert_eq!(b.collect_garbage([&vector]), 1);
    assert_eq!(
        b.take_touched_keys().into_iter().collect::<Vec<_>>(),
        vec![(key("x"), Touched::Existing)],
        "collected: it had a tombstone"
    );
    // A snapshot that drops a superseded local version touches its key.
    let mut c = store(3);
    c.track_touched_keys();
    c.put(1_000, key("z"), val("old")).unwrap();
    c.take_touched_keys();
    let mut d = store(4);
    d.merge_snapshot(c.snapshot()).unwrap();
    d.put(5_000, key("z"), val("new")).unwrap();
    c.merge_snapshot(d.snapshot()).unwrap();
    assert_eq!(
        c.take_touched_keys().get(&key("z")),
        Some(&Touched::Existing)
    );
    // A key changed twice between takes keeps how it stood before the first change.
    let mut e = store(5);
    e.track_touched_keys();
    e.apply(a.put(3_000, key("w"), val("1")).unwrap()).unwrap();
    e.apply(a.put(3_001, key("w"), val("2")).unwrap()).unwrap();
    assert_eq!(e.take_touched_keys().get(&key("w")), Some(&Touched::New));
    e.apply(a.put(3_002, key("w"), val("3")).unwrap()).unwrap();
    assert_eq!(
        e.take_touched_keys().get(&key("w")),
        Some(&Touched::Existing)
    );
    // A snapshot merged by the bulk path marks its keys new.
    let mut f = store(6);
    f.track_touched_keys();
    f.merge_snapshot(a.snapshot()).unwrap();
    assert!(f.take_touched_keys().values().all(|t| *t == Touched::New));
}

/// A masked version reads as a tombstone: the key's next live sibling wins, or the key reads
/// deleted; what the masked version superseded stays superseded; and a replica that masks a
/// version after applying it ends as one that applies it masked (PROTOCOL.md §8.5).
#[test]
fn a_masked_version_reads_as_a_tombstone_and_keeps_what_it_superseded_superseded() {
    let mut a = store(1);
    let mut b = store(2);
    let old = a.put(1_000, key("app/k"), val("old")).unwrap();
    b.apply(old.clone()).unwrap();
    // b overwrites old; a writes concurrently with that.
    let over = b.put(2_000, key("app/k"), val("over")).unwrap();
    let concurrent = a.put(1_500, key("app/k"), val("concurrent")).unwrap();

    // Replica x applies everything, then masks `over`.
    let mut x = store(3);
    for v in [old.clone(), concurrent.clone(), over.clone()] {
        x.apply(v).unwrap();
    }
    assert_eq!(x.get(&key("app/k")).map(|v| v.dot), Some(over.dot));
    assert_eq!(x.mask(over.dot), Some(true), "the winner changes");
    assert_eq!(x.mask(over.dot), None, "masked once");
    assert_eq!(x.get(&key("app/k")).map(|v| v.dot), Some(concurrent.dot));
    assert!(
        x.versions(&key("app/k"))
            .iter()
            .any(|v| v.dot == over.dot && v.is_tombstone())
    );
    // `old` stays superseded: applied again it is obsolete, and never the value.
    assert!(matches!(x.apply(old.clone()), Ok(Applied::Duplicate)));

    // Replica y gets `over` already masked, in another order: the same reads.
    let mut y = store(4);
    let mut masked = over.clone();
    masked.masked = Masked(true);
    for v in [masked, old.clone(), concurrent.clone()] {
        y.apply(v).unwrap();
    }
    assert_eq!(observable(&x), observable(&y));
    assert_eq!(y.get(&key("app/k")).map(|v| v.dot), Some(concurrent.dot));

    // With no live sibling left, the key reads deleted, and a later write gives it a value.
    assert_eq!(x.mask(concurrent.dot), Some(true));
    assert_eq!(x.get(&key("app/k")), None);
    assert_eq!(x.list("app/").count(), 0);
    assert!(
        x.versions(&key("app/k"))
            .iter()
            .all(|v| v.value().is_none())
    );
    let again = x.put(3_000, key("app/k"), val("again")).unwrap();
    assert_eq!(x.get(&key("app/k")), Some(&again));
    // A mask is the replica's own: a masked copy equals the version.
    assert_eq!(
        x.version_by_dot(&over.dot),
        None,
        "superseded by the new write"
    );
    assert_eq!(y.version_by_dot(&over.dot), Some(&over));
    assert_eq!(x.mask(Dot::new(WriterId(9), 1)), None, "nothing to mask");
    check_invariants(&x);
    check_invariants(&y);
}

/// A masked version is collected like a tombstone once every member has seen it, but a masked
/// policy entry never is: a policy context may name it, and every replica must be able to
/// fetch it (PROTOCOL.md §8.2).
#[test]
fn masked_versions_are_collected_like_tombstones_but_policy_entries_never() {
    let mut a = store(1);
    let app = a.put(1_000, key("app/k"), val("v")).unwrap();
    let entry = a
        .put(
            1_001,
            key("_confmesh/policy/0000000000000001-2"),
            val("rule"),
        )
        .unwrap();
    let mut replicas = vec![a, store(2)];
    for v in [app.clone(), entry.clone()] {
        replicas[1].apply(v).unwrap();
    }
    for r in &mut replicas {
        assert_eq!(r.mask(app.dot), Some(true));
        assert_eq!(r.mask(entry.dot), Some(true));
    }
    run_gc(&mut replicas, &[0, 1]);
    for r in &replicas {
        assert_eq!(r.version_by_dot(&app.dot), None, "collected");
        assert!(
            r.version_by_dot(&entry.dot).is_some(),
            "a policy entry stays"
        );
        check_invariants(r);
    }
}
