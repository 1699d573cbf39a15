//! What signed versions would cost, measured before they are built (docs/PROTOCOL.md §7):
//! Ed25519 signing and verifying one version's bytes, verifying a batch of 64 (one writer, and
//! 64 writers), and deriving a writer id from a public key; with ed25519-dalek (RFC 8032,
//! `verify_strict`, whose batch check is cofactored and so accepts more than its single
//! check) and ed25519-zebra (ZIP 215, whose single and batch checks agree); and signing with
//! ring (`ring/sign`) and AWS-LC (`aws-lc/sign`, what writer keys sign with), the other
//! Ed25519s at hand.
//!
//! Run: `cargo bench --bench signatures`. Names follow `area/operation`.
#![allow(missing_docs, reason = "criterion macros generate undocumented items")]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand::{SeedableRng, rngs::StdRng};
use sha2::{Digest, Sha256};

/// The bytes a signature would cover for a typical config version: a 40-byte key, a
/// 100-byte value, its dot, clock, timestamp, author and message (about 220 bytes).
fn version_bytes(i: u64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(256);
    bytes.extend_from_slice(b"confmesh version v1");
    bytes.extend_from_slice(format!("service-{:03}/config/key-{i:06}", i % 500).as_bytes());
    bytes.extend_from_slice(&i.to_le_bytes());
    bytes.extend_from_slice(&[b'v'; 100]);
    bytes.extend_from_slice(&[7u8; 40]);
    bytes.extend_from_slice(b"alice@example.org rotate the pool size");
    bytes
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// Checks that `sign` makes `expected` (ed25519-zebra's signature of `message`), then times it.
fn bench_signer<S: AsRef<[u8]>>(
    c: &mut Criterion,
    name: &str,
    message: &[u8],
    expected: &[u8; 64],
    sign: impl Fn(&[u8]) -> S,
) {
    assert_eq!(sign(message).as_ref(), expected.as_slice(), "{name}");
    c.bench_function(name, |b| b.iter(|| black_box(sign(black_box(message)))));
}

fn signatures(c: &mut Criterion) {
    let signer = key(1);
    let message = version_bytes(1);
    let signature = signer.sign(&message);
    let public = signer.verifying_key();
    c.bench_function("ed25519/sign", |b| {
        b.iter(|| black_box(signer.sign(black_box(&message))));
    });
    c.bench_function("ed25519/verify", |b| {
        b.iter(|| black_box(public.verify_strict(black_box(&message), &signature)).is_ok());
    });

    for (name, writers) in [("one_writer", 1u8), ("64_writers", 64)] {
        let keys: Vec<SigningKey> = (0..64u8).map(|i| key(1 + i % writers)).collect();
        let messages: Vec<Vec<u8>> = (0..64).map(version_bytes).collect();
        let sigs: Vec<Signature> = keys.iter().zip(&messages).map(|(k, m)| k.sign(m)).collect();
        let publics: Vec<VerifyingKey> = keys.iter().map(SigningKey::verifying_key).collect();
        let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        c.bench_function(&format!("ed25519/verify_batch_64/{name}"), |b| {
            b.iter(|| {
                black_box(ed25519_dalek::verify_batch(
                    black_box(&refs),
                    &sigs,
                    &publics,
                ))
                .is_ok()
            });
        });
    }

    // ZIP 215 (ed25519-zebra): the same messages.
    let zsigner = ed25519_zebra::SigningKey::from([1u8; 32]);
    let zpublic = ed25519_zebra::VerificationKey::from(&zsigner);
    let zsig = zsigner.sign(&message);
    c.bench_function("zip215/sign", |b| {
        b.iter(|| black_box(zsigner.sign(black_box(&message))));
    });
    // ring's Ed25519, and AWS-LC's (what writer keys sign with: `fast-signing`,
    // src/proto/trust/keys.rs): the same signature, as Ed25519 signing is deterministic.
    let ring_signer = ring::signature::Ed25519KeyPair::from_seed_unchecked(&[1u8; 32])
        .unwrap_or_else(|e| panic!("ring key: {e}"));
    let aws_signer = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(&[1u8; 32])
        .unwrap_or_else(|e| panic!("aws-lc key: {e}"));
    let zsig_bytes = <[u8; 64]>::from(zsig);
    bench_signer(c, "ring/sign", &message, &zsig_bytes, |m| {
        ring_signer.sign(m)
    });
    bench_signer(c, "aws-lc/sign", &message, &zsig_bytes, |m| {
        aws_signer.sign(m)
    });
    c.bench_function("zip215/verify", |b| {
        b.iter(|| black_box(zpublic.verify(&zsig, black_box(&message))).is_ok());
    });
    for (name, writers) in [("one_writer", 1u8), ("64_writers", 64)] {
        let keys: Vec<ed25519_zebra::SigningKey> = (0..64u8)
            .map(|i| ed25519_zebra::SigningKey::from([1 + i % writers; 32]))
            .collect();
        let messages: Vec<Vec<u8>> = (0..64).map(version_bytes).collect();
        let items: Vec<(
            ed25519_zebra::VerificationKeyBytes,
            ed25519_zebra::Signature,
        )> = keys
            .iter()
            .zip(&messages)
            .map(|(k, m)| (ed25519_zebra::VerificationKey::from(k).into(), k.sign(m)))
            .collect();
        c.bench_function(&format!("zip215/verify_batch_64/{name}"), |b| {
            b.iter(|| {
                let mut batch = ed25519_zebra::batch::Verifier::new();
                for ((key, sig), m) in items.iter().zip(&messages) {
                    batch.queue((*key, *sig, m));
                }
                // The batch's random coefficients; a fixed seed is fine for timing.
                black_box(batch.verify(StdRng::seed_from_u64(7))).is_ok()
            });
        });
    }

    // Larger batches of one writer (a catch-up's chunks are mostly one or a few writers'):
    // the multiscalar multiplication amortises further.
    for size in [256usize, 1024] {
        let messages: Vec<Vec<u8>> = (0..size).map(|i| version_bytes(i as u64)).collect();
        let key: ed25519_zebra::VerificationKeyBytes = zpublic.into();
        let sigs: Vec<ed25519_zebra::Signature> =
            messages.iter().map(|m| zsigner.sign(m)).collect();
        c.bench_function(&format!("zip215/verify_batch_{size}/one_writer"), |b| {
            b.iter(|| {
                let mut batch = ed25519_zebra::batch::Verifier::new();
                for (sig, m) in sigs.iter().zip(&messages) {
                    batch.queue((key, *sig, m));
                }
                black_box(batch.verify(StdRng::seed_from_u64(7))).is_ok()
            });
        });
    }

    c.bench_function("writer_id/sha256_of_public_key", |b| {
        b.iter(|| {
            let digest = Sha256::new()
                .chain_update(b"confmesh writer id v1")
                .chain_update(black_box(public.as_bytes()))
                .finalize();
            black_box(u64::from_be_bytes(
                digest[..8].try_into().unwrap_or_default(),
            ))
        });
    });
}

criterion_group!(benches, signatures);
criterion_main!(benches);
