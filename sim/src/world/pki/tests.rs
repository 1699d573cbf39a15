//! The simulated PKI: what it issues is endorsed, what another CA issued is not, and a cached
//! verdict is always the check's.

use bytes::Bytes;
use confmesh::proto::{
    HlcTimestamp, Key, Payload, Store, StoreConfig, Version, WriterId,
    trust::{Certifier, Endorsement, EndorsementError, verifies},
};
use ed25519_zebra::VerificationKey;

use super::{Issued, Pki, SimCertifier};

fn signed(issued: &Issued, key: &str, value: &'static [u8]) -> Version {
    let mut store = Store::new(issued.writer(), StoreConfig::default());
    let version = store
        .local_version(
            1_700_000_000_000,
            Key::new(key).expect("valid key"),
            Payload::Value(Bytes::from_static(value)),
            2,
            None,
        )
        .expect("small value");
    issued.signer.key().sign(version, None, None)
}

#[test]
fn the_same_seed_issues_the_same_keys() {
    let (mut a, mut b, mut c) = (Pki::new(7), Pki::new(7), Pki::new(8));
    for _ in 0..3 {
        let (x, y, z) = (a.issue(), b.issue(), c.issue());
        assert_eq!(x.writer(), y.writer());
        assert_eq!(x.endorsement, y.endorsement);
        assert_ne!(x.writer(), z.writer());
    }
    assert_ne!(a.issue().writer(), a.issue().writer());
}

#[test]
fn an_issued_endorsement_is_certified_by_its_ca_only() {
    let mut pki = Pki::new(1);
    let issued = pki.issue();
    let certifier = pki.certifier();
    for _ in 0..2 {
        // The second answer comes from the cache.
        let public = Endorsement::check(&issued.endorsement, issued.writer(), &*certifier, 0)
            .expect("endorsed");
        assert_eq!(public, issued.signer.key().public());
    }
    let mut other = Pki::new(2);
    let stranger = other.issue();
    assert_eq!(
        Endorsement::check(&stranger.endorsement, stranger.writer(), &*certifier, 0),
        Err(EndorsementError::NotCertified)
    );
    assert!(
        Endorsement::check(
            &stranger.endorsement,
            stranger.writer(),
            &*other.certifier(),
            0
        )
        .is_ok()
    );
    // Another writer's endorsement, or this one's certificate with another signature.
    let second = pki.issue();
    assert_eq!(
        Endorsement::check(&issued.endorsement, second.writer(), &*certifier, 0),
        Err(EndorsementError::WrongWriter)
    );
    let decode = |payload: &Bytes| -> Endorsement {
        bincode_decode(payload).expect("an endorsement decodes")
    };
    let mut swapped = decode(&issued.endorsement);
    swapped.signature = decode(&second.endorsement).signature;
    assert_eq!(
        Endorsement::check(&swapped.encode(), issued.writer(), &*certifier, 0),
        Err(EndorsementError::NotCertified)
    );
    let mut short = decode(&issued.endorsement);
    short.certificate.pop();
    assert_eq!(
        Endorsement::check(&short.encode(), issued.writer(), &*certifier, 0),
        Err(EndorsementError::NotCertified)
    );
    let stats = certifier.stats();
    assert_eq!((stats.checked, stats.cached), (4, 1), "{stats:?}");
}

/// An endorsement's payload, decoded.
fn bincode_decode(payload: &Bytes) -> Option<Endorsement> {
    bincode::serde::decode_from_slice(payload, bincode::config::standard())
        .ok()
        .map(|(endorsement, _)| endorsement)
}

#[test]
fn a_cached_verdict_is_the_checks_and_a_changed_version_is_a_new_question() {
    let mut pki = Pki::new(3);
    let writer = pki.issue();
    let other = pki.issue();
    let certifier = pki.certifier();
    let public = writer.signer.key().public();
    let version = signed(&writer, "app/a", b"1");
    let mut tampered = version.clone();
    tampered.payload = Payload::Value(Bytes::from_static(b"2"));
    let mut retimed = version.clone();
    retimed.timestamp = HlcTimestamp::default();
    let mut unsealed = version.clone();
    unsealed.seal = None;
    let cases: [(&Version, VerificationKey); 5] = [
        (&version, public),
        (&tampered, public),
        (&retimed, public),
        (&unsealed, public),
        (&version, other.signer.key().public()),
    ];
    for round in 0..2 {
        for (version, key) in &cases {
            assert_eq!(
                certifier.verify_version(key, version),
                verifies(version, key),
                "round {round}: {version:?}"
            );
        }
    }
    assert!(certifier.verify_version(&public, &version));
    // Unsealed versions are not asked; the four others were checked once each.
    let stats = certifier.stats();
    assert_eq!((stats.checked, stats.cached), (4, 5), "{stats:?}");
}

#[test]
fn a_full_cache_starts_again_and_answers_the_same() {
    let mut pki = Pki::new(4);
    let writer = pki.issue();
    let certifier = SimCertifier::with_limit(pki.certifier().ca, 2);
    let public = writer.signer.key().public();
    let versions: Vec<Version> = (0..5)
        .map(|k| signed(&writer, &format!("app/{k}"), b"v"))
        .collect();
    for _ in 0..2 {
        for version in &versions {
            assert!(certifier.verify_version(&public, version));
        }
    }
    let stats = certifier.stats();
    assert_eq!(stats.checked + stats.cached, 10);
    assert!(stats.cleared >= 4, "{stats:?}");
}

#[test]
fn a_cached_endorsement_is_the_checks() {
    let mut pki = Pki::new(5);
    let (a, b) = (pki.issue(), pki.issue());
    let certifier = pki.certifier();
    let mut swapped = bincode_decode(&a.endorsement).expect("decodes");
    swapped.signature = bincode_decode(&b.endorsement).expect("decodes").signature;
    let swapped = swapped.encode();
    let mut trailing = a.endorsement.to_vec();
    trailing.push(0);
    let cases: [(&[u8], WriterId); 5] = [
        (&a.endorsement, a.writer()),
        (&b.endorsement, b.writer()),
        (&a.endorsement, b.writer()),
        (&swapped, a.writer()),
        (&trailing, a.writer()),
    ];
    for round in 0..2 {
        for &(payload, writer) in &cases {
            // The reference: a certifier that has seen nothing.
            let fresh = SimCertifier::new(certifier.ca);
            assert_eq!(
                certifier.check_endorsement(payload, writer, 0),
                Endorsement::check(payload, writer, &fresh, 0),
                "round {round}: {writer}"
            );
        }
    }
    assert!(certifier.stats().cached >= 5);
}
