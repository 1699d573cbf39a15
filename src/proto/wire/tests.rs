use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::proto::{HlcTimestamp, Key, Payload, SeqRange, Store, StoreConfig, VClock, WriterId};

fn writer() -> impl Strategy<Value = WriterId> {
    (0u64..4).prop_map(WriterId)
}

fn dot() -> impl Strategy<Value = Dot> {
    (writer(), 1u64..1_000).prop_map(|(w, s)| Dot::new(w, s))
}

fn clock() -> impl Strategy<Value = VClock> {
    prop::collection::vec(dot(), 0..4).prop_map(|dots| {
        let mut c = VClock::new();
        for d in dots {
            crdts::CmRDT::apply(&mut c, d);
        }
        c
    })
}

fn key() -> impl Strategy<Value = Key> {
    "[a-z0-9]{1,8}(/[a-z0-9._-]{1,8}){0,3}".prop_filter_map("valid key", |s| Key::new(&s).ok())
}

fn version() -> impl Strategy<Value = Version> {
    let payload = prop_oneof![
        Just(Payload::Tombstone),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(|v| Payload::Value(Bytes::from(v))),
    ];
    (key(), dot(), clock(), any::<u64>(), payload).prop_map(
        |(key, dot, supersedes, ts, payload)| Version {
            key,
            dot,
            supersedes,
            timestamp: HlcTimestamp(ts),
            payload,
            seal: None,
            masked: Default::default(),
        },
    )
}

/// A digest built the way replicas build theirs: from writes and deliveries.
fn digest() -> impl Strategy<Value = Digest> {
    prop::collection::vec((writer(), 1u64..50), 0..20).prop_map(|dots| {
        let mut d = Digest::default();
        for (w, s) in dots {
            d.insert(Dot::new(w, s));
        }
        d
    })
}

fn delta() -> impl Strategy<Value = Delta> {
    let cleared = prop::collection::vec((writer(), 1u64..100, 0u64..5), 0..4).prop_map(|v| {
        v.into_iter()
            .map(|(w, s, n)| {
                (
                    w,
                    SeqRange {
                        start: s,
                        end: s + n,
                    },
                )
            })
            .collect()
    });
    (
        prop::collection::vec(version(), 0..4),
        cleared,
        any::<bool>(),
    )
        .prop_map(|(versions, cleared, truncated)| Delta {
            versions,
            cleared,
            truncated,
        })
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    (
        prop::option::of(key()),
        prop::option::of(key()),
        prop::collection::vec(version(), 0..4),
        digest(),
        clock(),
        (0u32..5, 1u32..6),
    )
        .prop_map(
            |(after, through, versions, context, collected, (part, parts))| Snapshot {
                after,
                through,
                versions,
                context,
                collected,
                part,
                parts,
            },
        )
}

fn message() -> impl Strategy<Value = Message> {
    let bytes = prop::collection::vec(any::<u8>(), 0..200).prop_map(Bytes::from);
    prop_oneof![
        bytes.clone().prop_map(Message::Membership),
        (bytes, any::<bool>())
            .prop_map(|(members, reply)| Message::MembershipState { members, reply }),
        prop::collection::vec(version(), 0..4).prop_map(|versions| Message::Push { versions }),
        prop::collection::vec(dot(), 0..8).prop_map(|dots| Message::IHave { dots }),
        prop::collection::vec(dot(), 0..8).prop_map(|dots| Message::Graft { dots }),
        Just(Message::Prune),
        any::<(u64, u64)>().prop_map(|(hash, members)| Message::SyncProbe { hash, members }),
        digest().prop_map(|digest| Message::SyncRequest { digest }),
        delta().prop_map(Message::SyncDelta),
        snapshot().prop_map(Message::SyncSnapshot),
    ]
}

proptest! {
    #[test]
    fn every_message_round_trips(message in message()) {
        let bytes = encode(&message, MAX_MESSAGE_BYTES).unwrap();
        prop_assert_eq!(bytes[0], FORMAT_VERSION);
        prop_assert_eq!(decode(&bytes, MAX_MESSAGE_BYTES), Ok(message));
    }

    #[test]
    fn truncated_and_corrupted_messages_are_errors_not_panics(message in message(), cut in any::<prop::sample::Index>(), flip in any::<(prop::sample::Index, u8)>()) {
        let bytes = encode(&message, MAX_MESSAGE_BYTES).unwrap();
        let cut = cut.index(bytes.len());
        if cut < bytes.len() {
            prop_assert!(decode(&bytes[..cut], MAX_MESSAGE_BYTES).is_err());
        }
        let mut corrupted = bytes.to_vec();
        let at = flip.0.index(corrupted.len());
        corrupted[at] ^= flip.1;
        let _ = decode(&corrupted, MAX_MESSAGE_BYTES); // any result but a panic
    }

    #[test]
    fn random_bytes_are_errors_not_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut versioned = bytes.clone();
        versioned.insert(0, FORMAT_VERSION);
        let _ = decode(&bytes, MAX_MESSAGE_BYTES);
        let _ = decode(&versioned, MAX_MESSAGE_BYTES);
    }
}

#[test]
fn borrowed_snapshot_encodes_byte_for_byte_like_the_owned_one() {
    let mut store = Store::new(WriterId(1), StoreConfig::default());
    for i in 0..50 {
        store
            .put(
                i,
                Key::new(&format!("k/{i:02}")).unwrap(),
                Bytes::from(vec![i as u8; 30]),
            )
            .unwrap();
    }
    store.delete(99, Key::new("k/07").unwrap());
    let refs = store.snapshot_refs(400);
    assert!(refs.len() > 3);
    for (chunk, owned) in refs.iter().zip(store.snapshot_chunks(400)) {
        let borrowed = encode_snapshot(chunk, Format::Plain, MAX_MESSAGE_BYTES).unwrap();
        let message = Message::SyncSnapshot(owned);
        assert_eq!(borrowed, encode(&message, MAX_MESSAGE_BYTES).unwrap());
        assert_eq!(decode(&borrowed, MAX_MESSAGE_BYTES).unwrap(), message);
    }
}

#[test]
fn refuses_other_versions_oversize_and_trailing_bytes() {
    assert_eq!(decode(&[], 100), Err(DecodeError::Empty));
    assert_eq!(
        decode(&[FORMAT_VERSION + 1, 5], 100),
        Err(DecodeError::UnknownVersion(FORMAT_VERSION + 1))
    );
    let bytes = encode(&Message::Prune, 100).unwrap();
    let mut long = bytes.to_vec();
    long.push(0);
    assert_eq!(decode(&long, 100), Err(DecodeError::TrailingBytes(1)));
    let big = Message::Membership(Bytes::from(vec![0u8; 2000]));
    assert!(matches!(
        encode(&big, MAX_DATAGRAM_BYTES),
        Err(EncodeError::TooLarge {
            max: MAX_DATAGRAM_BYTES,
            ..
        })
    ));
    let bytes = encode(&big, MAX_MESSAGE_BYTES).unwrap();
    assert!(matches!(
        decode(&bytes, MAX_DATAGRAM_BYTES),
        Err(DecodeError::TooLarge { .. })
    ));
}

#[test]
fn length_fields_claiming_gigabytes_are_refused() {
    // Membership(Bytes) whose length prefix claims 2^40 bytes: varint tag 253 = u64 follows.
    let mut hostile = vec![FORMAT_VERSION, 0, 253];
    hostile.extend_from_slice(&(1u64 << 40).to_le_bytes());
    hostile.extend_from_slice(b"abc");
    assert!(matches!(
        decode(&hostile, MAX_MESSAGE_BYTES),
        Err(DecodeError::Malformed(_))
    ));
    // A Push whose key string claims 60 MB.
    let mut hostile = vec![FORMAT_VERSION, 2, 1, 252];
    hostile.extend_from_slice(&(60u32 << 20).to_le_bytes());
    hostile.extend_from_slice(b"app/key");
    assert!(matches!(
        decode(&hostile, MAX_MESSAGE_BYTES),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn decoded_keys_and_ranges_are_validated() {
    // Replace a valid key by an invalid one of the same length, in the encoding.
    let mut store = Store::new(WriterId(1), StoreConfig::default());
    let v = store
        .put(1, Key::new("abc").unwrap(), Bytes::from_static(b"x"))
        .unwrap();
    let bytes = encode(&Message::Push { versions: vec![v] }, MAX_MESSAGE_BYTES)
        .unwrap()
        .to_vec();
    let at = bytes.windows(3).position(|w| w == b"abc").unwrap();
    let mut bad = bytes.clone();
    bad[at..at + 3].copy_from_slice(b"a b");
    assert!(
        matches!(decode(&bad, MAX_MESSAGE_BYTES), Err(DecodeError::Malformed(m)) if m.contains("character"))
    );
    // A digest whose ranges overlap.
    let mut digest = Digest::default();
    digest.insert(Dot::new(WriterId(7), 1));
    digest.insert(Dot::new(WriterId(7), 3));
    let bytes = encode(&Message::SyncRequest { digest }, MAX_MESSAGE_BYTES)
        .unwrap()
        .to_vec();
    // Encoded ranges: [1..=1, 3..=3]; make the second start at 1.
    let at = bytes.iter().rposition(|&b| b == 3).unwrap() - 1;
    let mut bad = bytes.clone();
    bad[at] = 1;
    assert!(matches!(
        decode(&bad, MAX_MESSAGE_BYTES),
        Err(DecodeError::Malformed(_))
    ));
}

/// Versions signed by `key` (a write and a delete), the first with `grounds` if given.
fn signed_versions(grounds: Option<crate::proto::Grounds>) -> Vec<Version> {
    let key = crate::proto::trust::WriterKey::from_seed([3; 32]);
    let mut store = Store::new(key.id(), StoreConfig::default());
    let put = store
        .put(1, Key::new("app/a").unwrap(), Bytes::from_static(b"x"))
        .unwrap();
    let delete = store.delete(2, Key::new("app/a").unwrap()).unwrap();
    vec![
        key.sign_grounded(
            put,
            Some("admin:ops".into()),
            None,
            grounds.unwrap_or_default(),
        ),
        key.sign(delete, None, Some("why".into())),
    ]
}

fn some_grounds() -> crate::proto::Grounds {
    let mut context = VClock::new();
    context.dots.insert(WriterId(9), 4);
    crate::proto::Grounds {
        context,
        proof: Some(crate::proto::AuthorProof {
            signature: [7; 64],
            certificate: None,
        }),
    }
}

/// A message asked for with seals is written in format 3 unless a version carries grounds,
/// then in format 4, which carries them; both decode to the message given. A message of
/// format 4 goes to no peer of protocol 3 (it could not check the signatures without the
/// grounds), a message of format 3 goes to it unchanged, and one for protocol 2 loses seals.
#[test]
fn grounds_travel_in_format_4_only_and_never_to_an_older_peer() {
    let plain = Message::Push {
        versions: signed_versions(None),
    };
    let bytes = encode_as(&plain, Format::Sealed, MAX_MESSAGE_BYTES).unwrap();
    assert_eq!(bytes[0], SEALED_FORMAT_VERSION);
    assert_eq!(decode(&bytes, MAX_MESSAGE_BYTES).unwrap(), plain);
    assert_eq!(downgrade(bytes.clone(), 3).unwrap(), bytes);
    assert_eq!(downgrade(bytes.clone(), 2).unwrap()[0], FORMAT_VERSION);

    let grounded = Message::Push {
        versions: signed_versions(Some(some_grounds())),
    };
    let bytes = encode_as(&grounded, Format::Sealed, MAX_MESSAGE_BYTES).unwrap();
    assert_eq!(bytes[0], GROUNDED_FORMAT_VERSION);
    let decoded = decode(&bytes, MAX_MESSAGE_BYTES).unwrap();
    assert_eq!(decoded, grounded);
    let first = decoded.versions().next().unwrap();
    assert_eq!(
        first.seal.as_ref().and_then(|s| s.grounds.as_deref()),
        Some(&some_grounds())
    );
    assert_eq!(downgrade(bytes.clone(), 4).unwrap(), bytes);
    for older in [1, 2, 3] {
        assert_eq!(
            downgrade(bytes.clone(), older),
            Err(DecodeError::NeedsProtocol(4))
        );
    }
    // A snapshot chunk is written the same way.
    let mut store = Store::new(WriterId(1), StoreConfig::default());
    // The grounded write only (the delete supersedes it).
    let grounded_put = signed_versions(Some(some_grounds())).remove(0);
    assert!(store.apply(grounded_put).is_ok());
    for chunk in store.snapshot_refs(1 << 20) {
        let borrowed = encode_snapshot(&chunk, Format::Sealed, MAX_MESSAGE_BYTES).unwrap();
        assert_eq!(borrowed[0], GROUNDED_FORMAT_VERSION);
        let message = decode(&borrowed, MAX_MESSAGE_BYTES).unwrap();
        assert!(
            message
                .versions()
                .any(|v| v.seal.as_ref().is_some_and(|s| s.grounds.is_some()))
        );
    }
}

/// Format 4's trailer is checked: one grounds entry per version, none on an unsigned version,
/// none empty, and some in every format 4 message (without any it is format 3's message,
/// which has one encoding only).
#[test]
fn format_4_refuses_grounds_that_do_not_fit_its_versions() {
    let config = bincode::config::standard();
    let versions = signed_versions(None);
    let body = |versions: &[Version]| {
        let mut out = vec![GROUNDED_FORMAT_VERSION];
        let message = Message::Push {
            versions: versions.to_vec(),
        };
        bincode::serde::encode_into_std_write(&message, &mut out, config).unwrap();
        let seals: Vec<Option<&Seal>> = versions.iter().map(|v| v.seal.as_deref()).collect();
        bincode::serde::encode_into_std_write(&seals, &mut out, config).unwrap();
        out
    };
    let with = |versions: &[Version], grounds: Vec<Option<crate::proto::Grounds>>| {
        let mut out = body(versions);
        bincode::serde::encode_into_std_write(&grounds, &mut out, config).unwrap();
        decode(&out, MAX_MESSAGE_BYTES)
    };
    assert!(with(&versions, vec![Some(some_grounds()), None]).is_ok());
    let malformed = |r: Result<Message, DecodeError>| matches!(r, Err(DecodeError::Malformed(_)));
    assert!(malformed(with(&versions, vec![Some(some_grounds())])));
    assert!(malformed(with(&versions, vec![None, None])));
    assert!(malformed(with(
        &versions,
        vec![Some(crate::proto::Grounds::default()), None]
    )));
    let mut unsigned = versions.clone();
    unsigned[0].seal = None;
    assert!(malformed(with(&unsigned, vec![Some(some_grounds()), None])));
    // Truncated before the trailer.
    assert!(decode(&body(&versions), MAX_MESSAGE_BYTES).is_err());
}
