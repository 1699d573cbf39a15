//! Writer ids, endorsements and signatures: each check refuses what it must.

use bytes::Bytes;
use ed25519_zebra::{Signature, SigningKey, VerificationKey};

use super::{
    Certifier, Endorsement, EndorsementError, WriterKey, audit_fields_fit, differ, endorsement_key,
    verifies, version_signed_bytes, writer_id,
};
use crate::proto::{Key, Payload, Store, StoreConfig, WriterId};

/// Certifies one node key (its public half is the "certificate").
struct OneNode(VerificationKey);

impl Certifier for OneNode {
    fn certifies(&self, certificate: &[u8], message: &[u8], signature: &[u8], _at_ms: u64) -> bool {
        certificate == self.0.as_ref()
            && <[u8; 64]>::try_from(signature)
                .is_ok_and(|s| self.0.verify(&Signature::from_bytes(&s), message).is_ok())
    }
}

fn endorsed(key: &WriterKey, node: &SigningKey) -> Endorsement {
    let public: [u8; 32] = key.public().into();
    let signature = node.sign(&Endorsement::signed_bytes(&public, key.id()));
    let certificate: [u8; 32] = VerificationKey::from(node).into();
    key.endorsement(certificate.to_vec(), signature.to_bytes().to_vec())
}

#[test]
fn a_writer_id_is_its_keys_and_differs_between_keys() {
    let a = WriterKey::from_seed([1; 32]);
    let b = WriterKey::from_seed([2; 32]);
    assert_eq!(a.id(), writer_id(&a.public()));
    assert_ne!(a.id(), b.id());
    assert_eq!(
        endorsement_key(a.id()).map(|k| k.as_str().len()),
        Ok("_confmesh/writers/".len() + 16)
    );
}

#[test]
fn an_endorsement_is_checked_for_key_writer_and_certificate() {
    let key = WriterKey::from_seed([3; 32]);
    let node = SigningKey::from([4; 32]);
    let ca = OneNode(VerificationKey::from(&node));
    let good = endorsed(&key, &node);
    assert_eq!(
        Endorsement::check(&good.encode(), key.id(), &ca, 0).map(<[u8; 32]>::from),
        Ok(<[u8; 32]>::from(key.public()))
    );
    assert_eq!(
        Endorsement::check(&good.encode(), WriterId(key.id().0 ^ 1), &ca, 0),
        Err(EndorsementError::WrongWriter)
    );
    let stranger = SigningKey::from([5; 32]);
    assert_eq!(
        Endorsement::check(&endorsed(&key, &stranger).encode(), key.id(), &ca, 0),
        Err(EndorsementError::NotCertified)
    );
    let mut trailing = good.encode().to_vec();
    trailing.push(0);
    assert_eq!(
        Endorsement::check(&trailing, key.id(), &ca, 0),
        Err(EndorsementError::Malformed)
    );
    assert_eq!(
        Endorsement::check(b"\xff\xff", key.id(), &ca, 0),
        Err(EndorsementError::Malformed)
    );
    // A small-order point is no key.
    let mut weak = good.clone();
    weak.public_key = [0; 32];
    weak.public_key[0] = 1;
    assert_eq!(
        Endorsement::check(&weak.encode(), key.id(), &ca, 0),
        Err(EndorsementError::BadKey)
    );
}

#[test]
fn a_signature_covers_every_field_and_the_audit_fields() {
    let key = WriterKey::from_seed([6; 32]);
    let mut store = Store::new(key.id(), StoreConfig::default());
    let version = store
        .put(
            1_700_000_000_000,
            Key::new("app/a").expect("valid"),
            Bytes::from_static(b"v"),
        )
        .expect("small");
    let signed = key.sign(version, Some("alice".into()), Some("why".into()));
    assert!(verifies(&signed, &key.public()));
    assert!(!verifies(&signed, &WriterKey::from_seed([7; 32]).public()));
    let mut changes = Vec::new();
    let mut c = signed.clone();
    c.key = Key::new("app/b").expect("valid");
    changes.push(c);
    let mut c = signed.clone();
    c.dot.counter += 1;
    changes.push(c);
    let mut c = signed.clone();
    c.payload = Payload::Tombstone;
    changes.push(c);
    let mut c = signed.clone();
    c.timestamp = crate::proto::HlcTimestamp::default();
    changes.push(c);
    let mut c = signed.clone();
    c.supersedes.dots.insert(WriterId(9), 1);
    changes.push(c);
    let mut c = signed.clone();
    if let Some(seal) = c.seal.as_mut() {
        seal.author = None;
    }
    changes.push(c);
    let mut c = signed.clone();
    if let Some(seal) = c.seal.as_mut() {
        seal.message = Some("another reason".into());
    }
    changes.push(c);
    for changed in changes {
        assert!(!verifies(&changed, &key.public()), "{changed:?}");
    }
}

#[test]
fn a_refused_dot_is_seen_once_and_holds_nothing() {
    let mut store = Store::new(WriterId(1), StoreConfig::default());
    let dot = crate::proto::Dot::new(WriterId(2), 1);
    let revision = store.revision();
    assert!(store.record_refused(dot));
    assert!(!store.record_refused(dot));
    assert!(!store.record_refused(crate::proto::Dot::new(WriterId(2), 0)));
    assert!(store.digest().contains(&dot));
    assert!(store.version_by_dot(&dot).is_none());
    assert_eq!(store.revision(), revision + 1);
    assert_eq!(store.digest().version_vector().get(&WriterId(2)), 1);
}

/// A writer's signed versions, its endorsement first, built as a node builds them.
fn writer_versions(key: &WriterKey, node: &SigningKey, n: u64) -> Vec<crate::proto::Version> {
    let mut store = Store::new(key.id(), StoreConfig::default());
    let mut out = Vec::new();
    for seq in 1..=n {
        let (k, payload) = if seq == 1 {
            (
                endorsement_key(key.id()).expect("key"),
                Payload::Value(endorsed(key, node).encode()),
            )
        } else {
            (
                Key::new(&format!("app/k{seq}")).expect("key"),
                Payload::Value(Bytes::from_static(b"v")),
            )
        };
        let version = store
            .local_version(1_700_000_000_000 + seq, k, payload, seq, None)
            .expect("small");
        let signed = key.sign(version, None, None);
        store.apply(signed.clone()).expect("applies");
        out.push(signed);
    }
    out
}

#[test]
fn an_unsigned_copy_gains_its_seal_when_the_signed_one_arrives_and_stays_applied() {
    use super::{Judge, Mode, Verdict};
    let key = WriterKey::from_seed([11; 32]);
    let node = SigningKey::from([12; 32]);
    let ca = OneNode(VerificationKey::from(&node));
    let versions = writer_versions(&key, &node, 2);
    let mut store = Store::new(WriterId(1), StoreConfig::default());
    let mut judge = Judge::with_mode(Mode::Permissive);
    // A node of protocol 2 relays the endorsement and the version without their seals: the
    // endorsement is forged (an endorsement is always signed), and the version, of a writer
    // not endorsed here yet, applies as a legacy writer's.
    let mut unsigned: Vec<_> = versions.clone();
    for v in &mut unsigned {
        v.seal = None;
    }
    let outcome = judge.admit(&mut store, unsigned[0].clone(), &ca);
    assert!(matches!(outcome[0].1, Verdict::Forged(_)), "{outcome:?}");
    assert_eq!(
        judge.admit(&mut store, unsigned[1].clone(), &ca)[0].1,
        Verdict::Apply
    );
    // The signed copies arrive: the endorsement applies, and the version's stored copy gains
    // its seal (the same content, signed by its writer).
    assert_eq!(
        judge.admit(&mut store, versions[0].clone(), &ca)[0].1,
        Verdict::Apply
    );
    assert_eq!(
        judge.admit(&mut store, versions[1].clone(), &ca)[0].1,
        Verdict::Reseal
    );
    let held = store.version_by_dot(&versions[1].dot).expect("held");
    assert_eq!(held, &versions[1], "the stored copy is the signed one");
    // A copy with other content under that dot is not a reseal, nor (unsigned) anything.
    let mut other = unsigned[1].clone();
    other.payload = Payload::Tombstone;
    assert_eq!(judge.admit(&mut store, other, &ca)[0].1, Verdict::Duplicate);
}

#[test]
fn a_published_proof_convicts_a_replica_that_saw_neither_version_and_survives_a_restart() {
    use super::{Equivocation, Judge, Proof, Refusal, Verdict, proof_key};
    let node = SigningKey::from([21; 32]);
    let ca = OneNode(VerificationKey::from(&node));
    // m equivocates at 3; p (an honest writer) found it and publishes the proof.
    let m = WriterKey::from_seed([22; 32]);
    let p = WriterKey::from_seed([23; 32]);
    let ms = writer_versions(&m, &node, 4);
    let mut other = ms[2].clone();
    other.payload = Payload::Value(Bytes::from_static(b"the other one"));
    let other = m.sign(other, None, None);
    let equivocation = Equivocation {
        first: ms[2].clone(),
        second: other,
    };
    let ps = writer_versions(&p, &node, 1);
    let publish = |proof: &Proof, publisher: WriterId, seq: u64| {
        let version = Store::new(p.id(), StoreConfig::default())
            .local_version(
                1_700_000_100_000,
                proof_key(m.id(), publisher).expect("key"),
                Payload::Value(proof.encode().expect("small")),
                seq,
                None,
            )
            .expect("small");
        p.sign(version, None, None)
    };
    let proof = Proof {
        equivocation: equivocation.clone(),
        endorsement: Some(ms[0].clone()),
    };
    assert!(proof.holds(&ca));
    // Not proofs: without the endorsement its key is unknown; the same version twice; under
    // another publisher's key.
    let bare = Proof {
        endorsement: None,
        ..proof.clone()
    };
    let same = Proof {
        equivocation: Equivocation {
            first: ms[2].clone(),
            second: ms[2].clone(),
        },
        ..proof.clone()
    };
    assert!(!bare.holds(&ca) && !same.holds(&ca));

    let mut store = Store::new(WriterId(1), StoreConfig::default());
    let mut judge = Judge::new();
    for v in ms.iter().take(2).chain(&ps) {
        assert_eq!(judge.admit(&mut store, v.clone(), &ca)[0].1, Verdict::Apply);
    }
    for (bad, seq) in [(&bare, 2), (&same, 3)] {
        assert_eq!(
            judge.admit(&mut store, publish(bad, p.id(), seq), &ca)[0].1,
            Verdict::Refused(Refusal::NotAProof)
        );
    }
    assert_eq!(
        judge.admit(&mut store, publish(&proof, m.id(), 4), &ca)[0].1,
        Verdict::Refused(Refusal::NotAProof),
        "p cannot publish under m's proof key"
    );
    assert_eq!(judge.convicted(m.id()), None);
    let revision = judge.convictions_revision();
    assert_eq!(
        judge.admit(&mut store, publish(&proof, p.id(), 5), &ca)[0].1,
        Verdict::Apply
    );
    assert_eq!(
        judge.convicted(m.id()),
        Some(3),
        "convicted by the proof alone"
    );
    assert_ne!(judge.convictions_revision(), revision);
    // m's versions from 3 on are refused; those before it are not.
    assert_eq!(
        judge.admit(&mut store, ms[3].clone(), &ca)[0].1,
        Verdict::Refused(Refusal::Quarantined)
    );
    assert_eq!(
        judge.admit(&mut store, ms[2].clone(), &ca)[0].1,
        Verdict::Refused(Refusal::Quarantined)
    );
    // A replica restored from this store convicts again.
    let mut restored = Judge::new();
    restored.restore(&store, &ca);
    assert_eq!(restored.convicted(m.id()), Some(3));
}

/// Grounds (protocol 4) are under the signature: a relay can neither change a version's
/// policy context or author proof, nor strip them, nor add them, without the signature failing.
/// A version without grounds is signed over protocol 3's bytes.
#[test]
fn a_signature_covers_the_grounds_and_a_version_without_them_is_signed_as_in_protocol_3() {
    use crate::proto::{AuthorProof, Grounds};
    let key = WriterKey::from_seed([8; 32]);
    let mut store = Store::new(key.id(), StoreConfig::default());
    let version = store
        .put(
            1_700_000_000_000,
            Key::new("app/a").expect("valid"),
            Bytes::from_static(b"v"),
        )
        .expect("small");
    let plain = key.sign(version.clone(), Some("admin:ops".into()), None);
    assert!(plain.seal.as_ref().is_some_and(|s| s.grounds.is_none()));
    assert!(version_signed_bytes(&plain).starts_with(b"confmesh version v1"));
    // Empty grounds are no grounds: the same bytes, the same signature.
    let empty = key.sign_grounded(
        version.clone(),
        Some("admin:ops".into()),
        None,
        Grounds::default(),
    );
    assert_eq!(empty, plain);

    let mut context = crate::proto::VClock::new();
    context.dots.insert(WriterId(42), 3);
    let grounds = Grounds {
        context,
        proof: Some(AuthorProof {
            signature: [5; 64],
            certificate: Some(Bytes::from_static(b"der")),
        }),
    };
    let grounded = key.sign_grounded(version, Some("admin:ops".into()), None, grounds.clone());
    assert!(version_signed_bytes(&grounded).starts_with(b"confmesh version v2"));
    assert!(verifies(&grounded, &key.public()));
    assert!(differ(&grounded, &plain), "grounds tell two versions apart");

    let with = |change: &dyn Fn(&mut Option<Box<Grounds>>)| {
        let mut v = grounded.clone();
        if let Some(seal) = v.seal.as_mut() {
            change(&mut seal.grounds);
        }
        v
    };
    let changed = [
        with(&|g| {
            if let Some(g) = g {
                g.context.dots.insert(WriterId(42), 4);
            }
        }),
        with(&|g| {
            if let Some(g) = g {
                g.proof = None;
            }
        }),
        with(&|g| {
            if let Some(Some(proof)) = g.as_mut().map(|g| g.proof.as_mut()) {
                proof.certificate = None;
            }
        }),
        with(&|g| *g = None),
    ];
    for version in changed {
        assert!(!verifies(&version, &key.public()), "{version:?}");
    }
    // Grounds added to a version signed without them.
    let mut added = plain.clone();
    if let Some(seal) = added.seal.as_mut() {
        seal.grounds = Some(Box::new(grounds));
    }
    assert!(!verifies(&added, &key.public()));
    // An empty one carried as if it were grounds is malformed (one version, one encoding).
    let mut hollow = plain;
    if let Some(seal) = hollow.seal.as_mut() {
        seal.grounds = Some(Box::default());
    }
    assert!(!audit_fields_fit(&hollow));
    assert!(audit_fields_fit(&grounded));
}

/// A policy entry's key names its position (writer and number) and nothing else; a rule's
/// payload decodes only whole, with well-formed principals; an author's proof covers what is
/// asked, where, by whom, in which context.
#[test]
fn policy_entry_keys_rule_payloads_and_author_proof_bytes_are_exact() {
    use super::{
        author_signed_bytes,
        policy::{Principal, Right, Rule, entry_key, entry_position},
    };
    let position = crate::proto::Dot::new(WriterId(0xab), 7);
    let key = entry_key(position);
    assert_eq!(key.as_str(), "_confmesh/policy/00000000000000ab-7");
    assert_eq!(entry_position(key.as_str()), Some(position));
    for spelled_otherwise in [
        "_confmesh/policy/00000000000000ab-07",
        "_confmesh/policy/00000000000000ab-+7",
        "_confmesh/policy/00000000000000ab-7-",
        "_confmesh/policy/00000000000000AB-7",
        "_confmesh/policy/ab-7",
        "_confmesh/policy/00000000000000ab-0",
        "_confmesh/policy/00000000000000ab",
        "app/00000000000000ab-7",
    ] {
        assert_eq!(
            entry_position(spelled_otherwise),
            None,
            "{spelled_otherwise}"
        );
    }

    let rule = Rule::Grant {
        grantee: Principal::parse("node:billing-1").expect("principal"),
        right: Right::Write,
        prefix: "billing/".into(),
    };
    let bytes = rule.encode();
    assert_eq!(Rule::decode(&bytes), Some(rule.clone()));
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert_eq!(Rule::decode(&longer), None, "trailing bytes");
    assert_eq!(Rule::decode(&bytes[..bytes.len() - 1]), None, "cut short");
    let bad = bytes
        .windows(b"node:billing-1".len())
        .position(|w| w == b"node:billing-1")
        .expect("the grantee");
    let mut renamed = bytes.to_vec();
    renamed[bad..bad + 4].copy_from_slice(b"user");
    assert_eq!(Rule::decode(&renamed), None, "not a principal");
    assert_eq!(
        rule.to_string(),
        "grant node:billing-1 write over \"billing/\""
    );

    let payload = Payload::Value(bytes);
    let context = crate::proto::VClock::new();
    let signed = author_signed_bytes(key.as_str(), &payload, "admin:ops", &context);
    assert!(signed.starts_with(b"confmesh author v1"));
    let mut later = context.clone();
    later.dots.insert(WriterId(1), 1);
    let next = entry_key(crate::proto::Dot::new(WriterId(0xab), 8));
    let elsewhere = entry_key(crate::proto::Dot::new(WriterId(0xac), 7));
    for other in [
        author_signed_bytes(key.as_str(), &payload, "admin:eve", &context),
        author_signed_bytes(key.as_str(), &payload, "admin:ops", &later),
        author_signed_bytes(next.as_str(), &payload, "admin:ops", &context),
        author_signed_bytes(elsewhere.as_str(), &payload, "admin:ops", &context),
        author_signed_bytes("app/x", &payload, "admin:ops", &context),
        author_signed_bytes(key.as_str(), &Payload::Tombstone, "admin:ops", &context),
    ] {
        assert_ne!(other, signed);
    }
}

/// A keyring entry decodes only with a usable prefix (not empty, not under or over
/// `_confmesh/`), a recipient-shaped public key, 1 to `MAX_READERS` named nodes, and an age
/// file as its sealed key (docs/PROTOCOL.md §9.3, §9.4).
#[test]
fn keyring_entries_decode_only_when_well_formed() {
    use super::policy::{MAX_READERS, Principal, Rule};
    let node = |name: &str| Principal::parse(name).expect("principal");
    let good = Rule::Keyring {
        prefix: "secret/".into(),
        recipient: format!("age1{}", "q".repeat(58)),
        readers: vec![node("node:db-1")],
        sealed: b"age-encryption.org/v1\n-> X25519 x\n".to_vec(),
    };
    assert_eq!(Rule::decode(&good.encode()), Some(good.clone()));
    let with = |change: &dyn Fn(&mut Rule)| {
        let mut rule = good.clone();
        change(&mut rule);
        Rule::decode(&rule.encode())
    };
    for prefix in ["", "_", "_confmesh/", "_confmesh/members/", "_conf"] {
        let bad = with(&|r| {
            if let Rule::Keyring { prefix: p, .. } = r {
                *p = prefix.into();
            }
        });
        assert_eq!(bad, None, "prefix {prefix:?}");
    }
    let no_readers = with(&|r| {
        if let Rule::Keyring { readers, .. } = r {
            readers.clear();
        }
    });
    assert_eq!(no_readers, None);
    let too_many = with(&|r| {
        if let Rule::Keyring { readers, .. } = r {
            *readers = (0..=MAX_READERS)
                .map(|i| node(&format!("node:n{i}")))
                .collect();
        }
    });
    assert_eq!(too_many, None);
    for reader in ["node:*", "admin:ops", "token:0011223344556677"] {
        let bad = with(&|r| {
            if let Rule::Keyring { readers, .. } = r {
                *readers = vec![node(reader)];
            }
        });
        assert_eq!(bad, None, "{reader}");
    }
    let not_age = with(&|r| {
        if let Rule::Keyring { sealed, .. } = r {
            *sealed = b"AGE-SECRET-KEY-1PLAINTEXT".to_vec();
        }
    });
    assert_eq!(not_age, None, "a key that is not sealed");
    let bad_recipient = with(&|r| {
        if let Rule::Keyring { recipient, .. } = r {
            *recipient = "age1short".into();
        }
    });
    assert_eq!(bad_recipient, None);
}

/// With `fast-signing`, AWS-LC signs: its signature must be ed25519-zebra's, byte for byte,
/// for every key and message: RFC 8032 gives one signature per key and message, and a
/// signer that made another would not be the Ed25519 every peer verifies with.
#[cfg(feature = "fast-signing")]
mod fast_signing {
    use proptest::prelude::*;

    use super::WriterKey;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn aws_lc_signs_as_zebra_does(
            seed in any::<[u8; 32]>(),
            message in proptest::collection::vec(any::<u8>(), 0..2048),
        ) {
            let key = WriterKey::from_seed(seed);
            let (fast, zebra) = key.both_signatures(&message);
            prop_assert!(fast.is_some(), "AWS-LC refused a valid seed");
            prop_assert_eq!(fast, Some(zebra));
        }
    }
}
