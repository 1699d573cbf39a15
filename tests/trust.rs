//! Signed versions against real nodes (docs/PROTOCOL.md §7): a certified node that bypasses
//! its own API and crafts wire messages by hand, on every path versions arrive by (push,
//! anti-entropy delta, snapshot chunk). Every other replica refuses what its writer did not
//! sign, keeps its values, and counts the forgeries against the peer that sent them; a
//! validly signed version that the grant rule refuses leaves no value.

mod common;

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use confmesh::{
    proto::{
        Delta, Digest, Dot, HlcTimestamp, Key, Message, Payload, SeqSet, Snapshot, Store,
        StoreConfig, VClock, Version, WriterId,
        node::TrustStats,
        trust::{WriterKey, endorsement_key},
        wire::{self, Format, MAX_MESSAGE_BYTES},
    },
    runtime::{Mesh, certifier, tls::DevCa},
};

use common::{eventually, start_cluster};

/// The attacker's own writer: a key it endorsed with its own (valid) certificate, whose
/// versions it builds and signs by hand.
struct Forger {
    key: WriterKey,
    store: Store,
    wall: u64,
}

impl Forger {
    fn new(ca: &DevCa) -> Forger {
        let key = WriterKey::from_seed([42; 32]);
        let store = Store::new(key.id(), StoreConfig::default());
        let mut forger = Forger {
            key,
            store,
            wall: now_ms(),
        };
        let tls = ca.node_config("mallory").expect("cert");
        let endorsement = certifier::endorse(&tls, &forger.key).expect("endorse");
        let key = endorsement_key(forger.key.id()).expect("key");
        forger.version(key, Payload::Value(endorsement.encode()));
        forger
    }

    fn id(&self) -> WriterId {
        self.key.id()
    }

    /// Its next version of `key`, signed with its key and applied to its own store.
    fn version(&mut self, key: Key, payload: Payload) -> Version {
        self.wall += 1;
        let seq = self.store.last_local_seq() + 1;
        let version = self
            .store
            .local_version(self.wall, key, payload, seq, None)
            .expect("small");
        let signed = self.key.sign(version, Some("mallory".into()), None);
        self.store.apply(signed.clone()).expect("applies");
        signed
    }

    fn endorsement(&self) -> Version {
        self.store
            .version_by_dot(&Dot::new(self.id(), 1))
            .cloned()
            .expect("endorsed")
    }
}

#[allow(
    clippy::disallowed_methods,
    reason = "the test crafts versions as a node would, now"
)]
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn key(k: &str) -> Key {
    Key::new(k).expect("valid key")
}

fn value(v: &str) -> Payload {
    Payload::Value(Bytes::from(v.to_owned()))
}

/// A version claiming `writer`'s id at `seq`, superseding what `over` superseded and `over`.
fn claim(writer: WriterId, seq: u64, over: &Version, v: &str) -> Version {
    let mut supersedes = over.supersedes.clone();
    supersedes.dots.insert(over.dot.actor, over.dot.counter);
    Version {
        key: over.key.clone(),
        dot: Dot::new(writer, seq),
        supersedes,
        timestamp: HlcTimestamp::from_wall_ms(now_ms() + 60_000),
        payload: value(v),
        seal: None,
        masked: Default::default(),
    }
}

async fn send(from: &Mesh, to: SocketAddr, message: &Message) {
    let bytes = wire::encode_as(message, Format::Sealed, MAX_MESSAGE_BYTES).expect("encode");
    from.send_raw(to, bytes).await.expect("send");
}

async fn text(node: &Mesh, k: &str) -> Option<String> {
    node.get(k).await.expect("get").and_then(|v| {
        v.payload
            .value()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    })
}

async fn from_peer(node: &Mesh, peer: SocketAddr) -> TrustStats {
    node.trust()
        .await
        .expect("trust")
        .by_peer
        .into_iter()
        .find(|(p, _)| *p == peer)
        .map(|(_, s)| s)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certified_node_crafting_messages_by_hand_cannot_write_as_anyone_else() {
    let ca = DevCa::generate("test cluster").expect("ca");
    // a and b are honest; m is a certified member that sends whatever bytes it likes.
    let nodes = start_cluster(&ca, 3).await;
    let (a, b, m) = (&nodes[0], &nodes[1], &nodes[2]);
    let honest = a.put("app/x", "honest").await.expect("put");
    assert!(honest.seal.is_some(), "a signs its writes");
    assert!(
        eventually(Duration::from_secs(10), || async {
            text(b, "app/x").await.as_deref() == Some("honest")
        })
        .await
    );
    let a_id = a.id().writer;

    let mut mallory = Forger::new(&ca);
    // The control: mallory's own endorsed writer, writing a key it may write, arrives
    // everywhere. Without it the refusals below could be a broken channel.
    let own = mallory.version(key("app/m"), value("from mallory"));
    // 1. Another writer's id (a's), signed with mallory's key.
    let as_a = mallory
        .key
        .sign(claim(a_id, 1_000, &honest, "as a"), None, None);
    // 2. Its own id, a signature that is noise.
    let mut noise = mallory.version(key("app/x"), value("noise"));
    if let Some(seal) = noise.seal.as_mut() {
        seal.signature = [7; 64];
    }
    // 3. a's genuine signed version, replayed under mallory's id.
    let mut replay = honest.clone();
    replay.dot = Dot::new(mallory.id(), 50);
    // 4. a's genuine version with its value changed in transit.
    let mut tampered = honest.clone();
    tampered.dot = Dot::new(a_id, 1_001);
    tampered.payload = value("tampered");
    // 5. Unsigned, under a made-up writer.
    let unsigned = claim(WriterId(0xbad), 1, &honest, "unsigned");
    // 6. Validly signed, and not allowed: a's member record.
    let record_key = format!("_confmesh/members/{a_id}");
    let record = mallory.version(key(&record_key), value("not yours"));
    send(
        m,
        a.id().addr,
        &Message::Push {
            versions: vec![
                mallory.endorsement(),
                own,
                as_a,
                noise,
                replay,
                tampered,
                unsigned,
                record.clone(),
            ],
        },
    )
    .await;

    // The anti-entropy paths: a delta, and a one-chunk snapshot whose context claims the
    // forged dot as seen.
    let as_a_again = mallory
        .key
        .sign(claim(a_id, 1_002, &honest, "delta"), None, None);
    send(
        m,
        a.id().addr,
        &Message::SyncDelta(Delta {
            versions: vec![as_a_again],
            cleared: Vec::new(),
            truncated: false,
        }),
    )
    .await;
    let in_snapshot = mallory
        .key
        .sign(claim(a_id, 1_003, &honest, "snapshot"), None, None);
    // Claims a's dots up to 1,004 as seen, one beyond the version it carries.
    let context = Digest::from_writers([(a_id, SeqSet::up_to(1_004))]);
    send(
        m,
        b.id().addr,
        &Message::SyncSnapshot(Snapshot {
            after: None,
            through: None,
            versions: vec![in_snapshot],
            context,
            collected: VClock::new(),
            part: 0,
            parts: 1,
        }),
    )
    .await;

    // The control arrives everywhere: the channel works, and a relays what it applied.
    assert!(
        eventually(Duration::from_secs(10), || async {
            text(a, "app/m").await.as_deref() == Some("from mallory")
                && text(b, "app/m").await.as_deref() == Some("from mallory")
        })
        .await,
        "mallory's own valid write did not spread"
    );
    // The forgeries are counted against mallory, at the replicas it sent them to.
    assert!(
        eventually(Duration::from_secs(10), || async {
            from_peer(a, m.id().addr).await.forged >= 6
                && from_peer(b, m.id().addr).await.forged >= 1
        })
        .await,
        "a: {:?}, b: {:?}",
        from_peer(a, m.id().addr).await,
        from_peer(b, m.id().addr).await
    );
    assert_eq!(
        from_peer(a, m.id().addr).await.refused,
        1,
        "the member record"
    );
    // Anti-entropy rounds pass; nothing forged took effect anywhere, and honest peers never
    // relayed a forgery.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for node in [a, b] {
        assert_eq!(text(node, "app/x").await.as_deref(), Some("honest"));
        let versions = node.get_versions("app/x").await.expect("versions");
        assert_eq!(versions.len(), 1, "{versions:?}");
        assert_eq!(versions[0].dot, honest.dot);
        let record = node
            .get(&record_key)
            .await
            .expect("get")
            .expect("a's record");
        assert_eq!(record.dot.actor, a_id, "a's member record is a's");
    }
    // (An honest peer's version may wait for its writer's endorsement on a loaded machine:
    // `deferred` is timing, not blame.)
    for (node, peer) in [(b, a), (a, b)] {
        let counted = from_peer(node, peer.id().addr).await;
        assert_eq!(
            TrustStats {
                deferred: 0,
                ..counted
            },
            TrustStats::default(),
            "an honest peer was counted: {counted:?}"
        );
    }
    // b refused the snapshot's context: it did not record a's dot 1,004 as seen, so it still
    // takes a's real writes (a's writer numbers them far below, but every dot matters).
    let later = a.put("app/y", "later").await.expect("put");
    assert!(
        eventually(Duration::from_secs(10), || async {
            text(b, "app/y").await.as_deref() == Some("later")
        })
        .await,
        "{later:?}"
    );

    // A peer that keeps forging is banned: a drops everything from it for a while, so even
    // its valid versions no longer reach a directly.
    let more: Vec<Version> = (0..8)
        .map(|i| {
            mallory
                .key
                .sign(claim(a_id, 2_000 + i, &honest, "again"), None, None)
        })
        .collect();
    send(m, a.id().addr, &Message::Push { versions: more }).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            from_peer(a, m.id().addr).await.forged >= 14
        })
        .await
    );
    let after_ban = mallory.version(key("app/after-ban"), value("dropped"));
    send(
        m,
        a.id().addr,
        &Message::Push {
            versions: vec![after_ban],
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        text(a, "app/after-ban").await,
        None,
        "a banned peer's message was taken"
    );
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_shows_the_signed_author_and_message_everywhere() {
    let ca = DevCa::generate("test cluster").expect("ca");
    let nodes = start_cluster(&ca, 2).await;
    let audit = confmesh::proto::node::Audit {
        author: Some("alice".into()),
        message: Some("raise the pool size".into()),
        token: None,
    };
    let written = nodes[0]
        .put_audited("app/pool", "32", audit.clone())
        .await
        .expect("put");
    let seal = written.seal.as_deref().expect("signed");
    assert_eq!(seal.author.as_deref(), Some("alice"));
    assert!(
        eventually(Duration::from_secs(10), || async {
            nodes[1]
                .history("app/pool")
                .await
                .expect("history")
                .iter()
                .any(|v| {
                    v.seal.as_deref().is_some_and(|s| {
                        s.author.as_deref() == Some("alice")
                            && s.message.as_deref() == Some("raise the pool size")
                    })
                })
        })
        .await,
        "the other replica's history lacks the audit fields"
    );
    // Over the limit: refused before anything is written.
    let long = confmesh::proto::node::Audit {
        author: Some("a".repeat(257)),
        message: None,
        token: None,
    };
    assert!(nodes[0].put_audited("app/pool", "64", long).await.is_err());
    assert_eq!(text(&nodes[0], "app/pool").await.as_deref(), Some("32"));
    for node in nodes {
        node.shutdown().await;
    }
}

/// Two versions signed for one dot: the replica that holds both publishes the proof, every
/// replica convicts the writer by it (even one that never saw the pair), and the key the
/// convicted writer won is written again with the value it had before, everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_equivocating_writer_is_convicted_everywhere_and_its_write_undone() {
    let ca = DevCa::generate("test cluster").expect("ca");
    let nodes = start_cluster(&ca, 4).await;
    let (a, b, c, m) = (&nodes[0], &nodes[1], &nodes[2], &nodes[3]);
    let clean = a.put("app/e", "clean").await.expect("put");
    for node in [b, c] {
        assert!(
            eventually(Duration::from_secs(10), || async {
                text(node, "app/e").await.as_deref() == Some("clean")
            })
            .await
        );
    }
    let mut mallory = Forger::new(&ca);
    // Concurrent with a's version (it supersedes nothing), and later: it wins the key.
    let first = mallory.version(key("app/e"), value("evil"));
    // The same dot signed again, on a reserved key: b refuses it (so never relays it) and
    // keeps its signed form; a and c take the first, and b finds the pair when the first
    // reaches it by relay.
    let mut other = first.clone();
    other.key = key("_confmesh/config/other");
    other.payload = value("the other one");
    other.seal = None;
    let second = mallory.key.sign(other, None, None);
    send(
        m,
        b.id().addr,
        &Message::Push {
            versions: vec![mallory.endorsement(), second],
        },
    )
    .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            from_peer(b, m.id().addr).await.refused == 1
        })
        .await,
        "b refused the reserved key"
    );
    send(
        m,
        a.id().addr,
        &Message::Push {
            versions: vec![mallory.endorsement(), first.clone()],
        },
    )
    .await;
    let equivocated = (mallory.id(), first.dot.counter);
    let proof = format!("_confmesh/equivocations/{}/{}", mallory.id(), b.id().writer);
    for node in [a, b, c] {
        assert!(
            eventually(Duration::from_secs(15), || async {
                node.trust().await.expect("trust").equivocated == vec![equivocated]
                    && node.get(&proof).await.expect("get").is_some()
            })
            .await,
            "{:?} did not convict by b's proof: {:?}",
            node.id(),
            node.trust().await.expect("trust")
        );
    }
    // The key mallory won is written again, with a's value, and nothing of mallory's stays.
    for node in [a, b, c] {
        assert!(
            eventually(Duration::from_secs(15), || async {
                let versions = node.get_versions("app/e").await.expect("versions");
                text(node, "app/e").await.as_deref() == Some("clean")
                    && versions.iter().all(|v| v.dot.actor != mallory.id())
            })
            .await,
            "{:?}: {:?}",
            node.id(),
            node.get_versions("app/e").await
        );
    }
    let winner = a.get("app/e").await.expect("get").expect("a value");
    assert_ne!(winner.dot, clean.dot, "written again, not resurrected");
    assert!(
        winner
            .seal
            .as_deref()
            .and_then(|s| s.message.as_deref())
            .is_some_and(|m| m.contains("convicted of equivocation")),
        "{winner:?}"
    );
    // Mallory's later writes are refused everywhere.
    let later = mallory.version(key("app/later"), value("after"));
    send(
        m,
        c.id().addr,
        &Message::Push {
            versions: vec![later],
        },
    )
    .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            from_peer(c, m.id().addr).await.refused >= 1
        })
        .await
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    for node in [a, b, c] {
        assert_eq!(text(node, "app/later").await, None);
    }
    for node in nodes {
        node.shutdown().await;
    }
}
