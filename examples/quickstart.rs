//! Three replicas of the configuration map in one process, exchanging real wire messages.
//!
//! Shows concurrent writes becoming siblings with one winner everywhere, a write that resolves
//! them, a delete, anti-entropy by digest, garbage collection, and a late replica catching up
//! by snapshot. Run: `cargo run --example quickstart`.

use bytes::Bytes;
use confmesh::proto::{
    Key, Message, Store, StoreConfig, SyncReply, WriterId,
    wire::{self, MAX_MESSAGE_BYTES},
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut alice = Store::new(WriterId(1), StoreConfig::default());
    let mut bob = Store::new(WriterId(2), StoreConfig::default());
    let url = Key::new("app/db/url")?;

    // Concurrent writes to one key: each replica writes before hearing of the other.
    let a = alice.put(1_000, url.clone(), Bytes::from_static(b"postgres://a"))?;
    let b = bob.put(1_001, url.clone(), Bytes::from_static(b"postgres://b"))?;
    deliver(&mut bob, &Message::Push { versions: vec![a] })?;
    deliver(&mut alice, &Message::Push { versions: vec![b] })?;
    show(
        "after concurrent writes",
        &[("alice", &alice), ("bob", &bob)],
        &url,
    );

    // A write that has seen both siblings resolves them.
    let resolved = alice.put(
        2_000,
        url.clone(),
        Bytes::from_static(b"postgres://primary"),
    )?;
    deliver(
        &mut bob,
        &Message::Push {
            versions: vec![resolved],
        },
    )?;
    show(
        "after a resolving write",
        &[("alice", &alice), ("bob", &bob)],
        &url,
    );

    // Bob writes a few keys and deletes one; the pushes are lost, anti-entropy repairs them.
    for (i, k) in [
        "app/feature/beta",
        "app/feature/dark-mode",
        "app/limits/rps",
    ]
    .iter()
    .enumerate()
    {
        bob.put(3_000 + i as u64, Key::new(k)?, Bytes::from(format!("{i}")))?;
    }
    bob.delete(3_100, Key::new("app/feature/beta")?);
    sync(&bob, &mut alice)?;
    println!("\nalice after one anti-entropy exchange with bob: app/* =");
    for v in alice.list("app/") {
        println!(
            "  {} = {:?}",
            v.key,
            v.payload.value().map(|b| String::from_utf8_lossy(b))
        );
    }

    // Both have seen everything: the tombstone is stable and can be collected.
    let vectors = [
        alice.digest().version_vector(),
        bob.digest().version_vector(),
    ];
    println!(
        "\ntombstones collected: alice {}, bob {}",
        alice.collect_garbage(&vectors),
        bob.collect_garbage(&vectors)
    );

    // Carol joins late: she is behind the collection floor, so she gets a snapshot.
    let mut carol = Store::new(WriterId(3), StoreConfig::default());
    sync(&alice, &mut carol)?;
    println!(
        "carol after catching up holds {} keys; same digest as alice: {}",
        carol.key_count(),
        carol.digest() == alice.digest()
    );
    Ok(())
}

/// One anti-entropy exchange: `to` sends its digest, `from` answers with what `to` lacks.
fn sync(from: &Store, to: &mut Store) -> Result<(), Box<dyn std::error::Error>> {
    match from.delta_for(to.digest(), 1 << 20) {
        SyncReply::Delta(delta) => deliver(to, &Message::SyncDelta(delta)),
        SyncReply::SnapshotNeeded => {
            println!("  (digest is behind the collection floor: sending a snapshot)");
            let chunks = from.snapshot_chunks(1 << 20);
            for chunk in &chunks {
                deliver(to, &Message::SyncSnapshot(chunk.clone()))?;
            }
            // Every chunk is in: the snapshot's context can be adopted.
            to.adopt_snapshot_context(from.digest(), from.collected_floor().clone());
            Ok(())
        }
    }
}

/// Encodes `message` as a peer would send it, decodes it as the receiver, and applies it.
fn deliver(to: &mut Store, message: &Message) -> Result<(), Box<dyn std::error::Error>> {
    let bytes = wire::encode(message, MAX_MESSAGE_BYTES)?;
    match wire::decode(&bytes, MAX_MESSAGE_BYTES)? {
        Message::Push { versions } => versions
            .into_iter()
            .try_for_each(|v| to.apply(v).map(drop))?,
        Message::SyncDelta(delta) => drop(to.apply_delta(delta)?),
        Message::SyncSnapshot(chunk) => drop(to.merge_snapshot(chunk)?),
        other => return Err(format!("unexpected message {other:?}").into()),
    }
    Ok(())
}

fn show(title: &str, replicas: &[(&str, &Store)], key: &Key) {
    println!("\n{title}:");
    for (name, store) in replicas {
        let winner = store
            .get(key)
            .and_then(|v| v.payload.value())
            .map(|b| String::from_utf8_lossy(b).into_owned());
        let siblings: Vec<String> = store
            .versions(key)
            .iter()
            .map(|v| format!("{}@{}", v.dot.actor, v.dot.counter))
            .collect();
        println!(
            "  {name}: {key} = {winner:?}  siblings [{}]",
            siblings.join(", ")
        );
    }
}
