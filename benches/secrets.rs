//! What secrets cost (docs/PROTOCOL.md §9), measured before they enter the write and read
//! paths: sealing and opening a 100-byte value under a prefix key, opening a keyring entry
//! sealed to 3 readers, and sealing a prefix key to 3 and to 50 readers; and the sizes of what
//! travels.
//!
//! Run: `cargo bench --bench secrets`. Names follow `area/operation`.
#![allow(missing_docs, reason = "criterion macros generate undocumented items")]

use std::hint::black_box;

use confmesh::runtime::secrets::{NodeIdentity, PrefixKey, seal_value};
use criterion::{Criterion, criterion_group, criterion_main};

const GENERATION: &str = "00000000000000ab-1";

fn secrets(c: &mut Criterion) {
    let value = [b'v'; 100];
    let key = PrefixKey::generate(GENERATION).expect("key");
    let recipient = key.recipient();
    let sealed = seal_value(&recipient, GENERATION, "app/db-password", &value).expect("sealed");
    c.bench_function("secrets/seal_value_100B", |b| {
        b.iter(|| {
            black_box(seal_value(
                &recipient,
                GENERATION,
                "app/db-password",
                black_box(&value),
            ))
            .is_ok()
        });
    });
    c.bench_function("secrets/open_value_100B", |b| {
        b.iter(|| {
            black_box(key.open_value(black_box(&sealed), "app/db-password", 1 << 20)).is_ok()
        });
    });

    let readers: Vec<NodeIdentity> = (0..50).map(|_| NodeIdentity::ephemeral()).collect();
    let recipients: Vec<String> = readers.iter().map(NodeIdentity::recipient).collect();
    let keyring_3 = key.seal_for(&recipients[..3]).expect("sealed");
    let keyring_50 = key.seal_for(&recipients).expect("sealed");
    c.bench_function("secrets/open_keyring_3_readers", |b| {
        b.iter(|| {
            black_box(PrefixKey::open(
                &readers[2],
                GENERATION,
                black_box(&keyring_3),
            ))
            .is_ok()
        });
    });
    c.bench_function("secrets/seal_key_3_readers", |b| {
        b.iter(|| black_box(key.seal_for(black_box(&recipients[..3]))).is_ok());
    });
    c.bench_function("secrets/seal_key_50_readers", |b| {
        b.iter(|| black_box(key.seal_for(black_box(&recipients))).is_ok());
    });
    println!(
        "sizes: value 100 B sealed {} B; keyring 3 readers {} B, 50 readers {} B",
        sealed.len(),
        keyring_3.len(),
        keyring_50.len()
    );
}

criterion_group!(benches, secrets);
criterion_main!(benches);
