//! Store hot paths, sans-IO: local put, remote apply, digest, delta for a digest, and the full
//! catch-up of a 100,000-key replica (snapshot encode, decode, merge into an empty store).
//!
//! Run: `cargo bench --bench store` (system allocator) and `cargo bench --bench store
//! --features mimalloc`. Names follow `area/operation/size`.
#![allow(missing_docs, reason = "criterion macros generate undocumented items")]

use std::hint::black_box;

use bytes::Bytes;
use confmesh::proto::{
    Key, Snapshot, Store, StoreConfig, SyncReply, Version, WriterId,
    wire::{self, MAX_MESSAGE_BYTES, Message},
};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

/// `--features mimalloc` benches with the allocator the `confmesh` binary uses with it.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ALLOCATOR_NAME: &str = if cfg!(feature = "mimalloc") {
    "mimalloc"
} else {
    "system"
};

const VALUE: [u8; 100] = [b'v'; 100];

fn key(i: usize) -> Key {
    Key::new(&format!("service-{:03}/config/key-{i:06}", i % 500)).expect("valid key")
}

/// A replica of `keys` keys of 100-byte values, written by `writers` writers round-robin.
fn replica(keys: usize, writers: u64) -> Store {
    let mut writers: Vec<Store> = (1..=writers)
        .map(|w| Store::new(WriterId(w), StoreConfig::default()))
        .collect();
    let mut all = Store::new(WriterId(1_000), StoreConfig::default());
    let count = writers.len();
    for i in 0..keys {
        let v = writers[i % count]
            .put(
                1_700_000_000_000 + i as u64,
                key(i),
                Bytes::from_static(&VALUE),
            )
            .expect("put");
        all.apply(v).expect("apply");
    }
    all
}

fn versions(keys: usize, writer: u64) -> Vec<Version> {
    let mut w = Store::new(WriterId(writer), StoreConfig::default());
    (0..keys)
        .map(|i| {
            w.put(1_700_000_000_000, key(i), Bytes::from_static(&VALUE))
                .expect("put")
        })
        .collect()
}

fn local(c: &mut Criterion) {
    let base = replica(10_000, 4);
    c.bench_function("store/put/10k", |b| {
        b.iter_batched_ref(
            || base.clone(),
            |s| {
                s.put(1_800_000_000_000, key(5_000), Bytes::from_static(&VALUE))
                    .expect("put")
            },
            BatchSize::LargeInput,
        )
    });
    let remote = versions(1_000, 77);
    c.bench_function("store/apply/1k", |b| {
        b.iter_batched(
            || {
                (
                    Store::new(WriterId(9), StoreConfig::default()),
                    remote.clone(),
                )
            },
            |(mut s, vs)| {
                for v in vs {
                    s.apply(v).expect("apply");
                }
                s
            },
            BatchSize::SmallInput,
        )
    });
}

fn sync(c: &mut Criterion) {
    let full = replica(100_000, 100);
    c.bench_function("store/digest/100k-100w", |b| {
        b.iter(|| black_box(full.digest().clone()))
    });
    // A peer that lacks the last 1% of every writer's versions.
    let mut behind = replica(99_000, 100);
    let behind_digest = behind.digest().clone();
    c.bench_function("store/delta_for/100k-lacks-1k", |b| {
        b.iter(|| match full.delta_for(&behind_digest, usize::MAX) {
            SyncReply::Delta(d) => black_box(d),
            SyncReply::SnapshotNeeded => unreachable!("no garbage was collected"),
        })
    });
    let SyncReply::Delta(delta) = full.delta_for(&behind_digest, usize::MAX) else {
        unreachable!()
    };
    assert_eq!(delta.versions.len(), 1_000);
    c.bench_function("store/apply_delta/1k", |b| {
        b.iter_batched_ref(
            || (behind.clone(), delta.clone()),
            |(s, d)| s.apply_delta(std::mem::take(d)),
            BatchSize::LargeInput,
        )
    });
    behind.apply_delta(delta).expect("apply");
    assert_eq!(behind.digest(), full.digest());
}

fn catchup(c: &mut Criterion) {
    let full = replica(100_000, 10);
    let message = Message::SyncSnapshot(full.snapshot());
    let bytes = wire::encode(&message, MAX_MESSAGE_BYTES).expect("encode");
    println!(
        "catchup/100k: snapshot is {} bytes on the wire; allocator: {ALLOCATOR_NAME}",
        bytes.len()
    );
    let mut group = c.benchmark_group("catchup");
    group.sample_size(20);
    // Dropping what a step produced is not part of a catch-up (decoded versions move into the
    // store), so every step is timed without destroying its output.
    group.bench_function("snapshot_encode/100k", |b| {
        b.iter_with_large_drop(|| encode_whole(&full))
    });
    group.bench_function("decode/100k", |b| {
        b.iter_with_large_drop(|| wire::decode(&bytes, MAX_MESSAGE_BYTES).expect("decode"))
    });
    group.bench_function("merge_into_empty/100k", |b| {
        b.iter_batched(
            || match wire::decode(&bytes, MAX_MESSAGE_BYTES) {
                Ok(Message::SyncSnapshot(s)) => s,
                other => panic!("unexpected {other:?}"),
            },
            |s| Store::restore(WriterId(42), StoreConfig::default(), s).expect("restore"),
            BatchSize::LargeInput,
        )
    });
    // What a joiner does: the snapshot in 1 MiB chunks (15 for 100k keys), merged in order
    // into a store that grows with each.
    let chunks: Vec<Snapshot> = full
        .snapshot_refs(1 << 20)
        .iter()
        .map(|chunk| chunk.to_owned())
        .collect();
    group.bench_function("merge_chunks/100k", |b| {
        b.iter_batched(
            || chunks.clone(),
            |chunks| {
                let mut store = Store::new(WriterId(42), StoreConfig::default());
                let (context, collected) = (chunks[0].context.clone(), chunks[0].collected.clone());
                for chunk in chunks {
                    store.merge_snapshot(chunk).expect("merge");
                }
                store.adopt_snapshot_context(&context, collected);
                store
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("total/100k", |b| {
        b.iter_with_large_drop(|| {
            let bytes = encode_whole(&full);
            let Ok(Message::SyncSnapshot(s)) = wire::decode(&bytes, MAX_MESSAGE_BYTES) else {
                unreachable!()
            };
            Store::restore(WriterId(42), StoreConfig::default(), s).expect("restore")
        })
    });
    group.finish();
}

/// The whole replica as one snapshot message, encoded from borrowed versions.
fn encode_whole(store: &Store) -> bytes::Bytes {
    let chunk = store
        .snapshot_refs(usize::MAX)
        .pop()
        .expect("always one chunk");
    wire::encode_snapshot(&chunk, wire::Format::Plain, MAX_MESSAGE_BYTES).expect("encode")
}

criterion_group!(benches, local, sync, catchup);
criterion_main!(benches);
