//! The trust rules (docs/PROTOCOL.md §7) checked against a model over arbitrary delivery
//! orders: three honest nodes, a certified attacker that crafts versions by hand, and an
//! uncertified one. Each honest replica receives every version, in its own order, with
//! duplicates; replicas that find an equivocation publish its proof as a version, which
//! spreads with the rest; each replica writes again the keys a convicted writer tainted;
//! everything is delivered once more. Then:
//!
//! - no replica applied a version its writer's key did not sign, nor anything of the
//!   uncertified writer;
//! - every crafted forgery was dropped, every refused version left no hole;
//! - every replica convicted the equivocating writer;
//! - every replica holds the same context and the same versions of every key.
//!
//! The certificate check is modelled: a "certificate" is a node key's public half, certified
//! when the model's CA lists it, and the endorsement's signature is that key's (the runtime's
//! `Certifier` does the same with X.509 and webpki).

use std::collections::BTreeSet;

use bytes::Bytes;
use confmesh::proto::{
    Dot, Key, Payload, Store, StoreConfig, Version, WriterId,
    trust::{
        Certifier, Endorsement, Equivocation, Judge, Proof, Refusal, Verdict, WriterKey,
        endorsement_key, proof_key, verifies,
    },
};
use ed25519_zebra::{Signature, SigningKey, VerificationKey};
use proptest::prelude::*;
use rand::{RngExt, SeedableRng, rngs::Xoshiro256PlusPlus, seq::SliceRandom};

const WALL: u64 = 1_700_000_000_000;

/// The model's CA: the node keys it certified.
struct Ca {
    certified: Vec<[u8; 32]>,
}

impl Certifier for Ca {
    fn certifies(&self, certificate: &[u8], message: &[u8], signature: &[u8], _at_ms: u64) -> bool {
        let Ok(cert) = <[u8; 32]>::try_from(certificate) else {
            return false;
        };
        let Ok(sig) = <[u8; 64]>::try_from(signature) else {
            return false;
        };
        self.certified.contains(&cert)
            && VerificationKey::try_from(cert)
                .is_ok_and(|k| k.verify(&Signature::from_bytes(&sig), message).is_ok())
    }
}

/// A node key's "certificate": its public half.
fn cert_public(key: &SigningKey) -> [u8; 32] {
    VerificationKey::from(key).into()
}

/// A writer: its node's certificate key, its writer key, and its own replica.
struct Writer {
    cert: SigningKey,
    key: WriterKey,
    store: Store,
    wall: u64,
}

impl Writer {
    fn new(seed: u8) -> Writer {
        let key = WriterKey::from_seed([seed; 32]);
        Writer {
            cert: SigningKey::from([seed.wrapping_add(100); 32]),
            store: Store::new(key.id(), StoreConfig::default()),
            key,
            wall: WALL,
        }
    }

    fn id(&self) -> WriterId {
        self.key.id()
    }

    /// Its endorsement: its first version.
    fn endorse(&mut self) -> Version {
        let public: [u8; 32] = self.key.public().into();
        let signed = Endorsement::signed_bytes(&public, self.id());
        let endorsement = self.key.endorsement(
            cert_public(&self.cert).to_vec(),
            self.cert.sign(&signed).to_bytes().to_vec(),
        );
        let key = endorsement_key(self.id()).expect("a valid key");
        self.put_key(key, endorsement.encode())
    }

    fn put(&mut self, key: &str, value: &str) -> Version {
        self.put_key(
            Key::new(key).expect("valid key"),
            Bytes::from(value.to_owned()),
        )
    }

    fn put_key(&mut self, key: Key, value: Bytes) -> Version {
        self.wall += 10;
        let seq = self.store.last_local_seq() + 1;
        let version = self
            .store
            .local_version(self.wall, key, Payload::Value(value), seq, None)
            .expect("small value");
        let signed = self
            .key
            .sign(version, Some("alice".into()), Some("model change".into()));
        self.store.apply(signed.clone()).expect("applies");
        signed
    }
}

/// An honest replica: a writer that also judges what it receives.
struct Replica {
    writer: Writer,
    judge: Judge,
    /// Every verdict it gave, by dot.
    verdicts: Vec<(Dot, Verdict)>,
    proofs: Vec<Equivocation>,
}

impl Replica {
    fn new(seed: u8, ca: &Ca) -> (Replica, Version) {
        let mut writer = Writer::new(seed);
        let endorsement = writer.endorse();
        let mut judge = Judge::new();
        judge.own(&endorsement, ca);
        let replica = Replica {
            writer,
            judge,
            verdicts: Vec::new(),
            proofs: Vec::new(),
        };
        (replica, endorsement)
    }

    fn write(&mut self, key: &str, value: &str, ca: &Ca) -> Version {
        let signed = self.writer.put(key, value);
        self.judge.own(&signed, ca);
        signed
    }

    fn receive(&mut self, signed: &Version, ca: &Ca) {
        if signed.dot.actor == self.writer.id() && self.writer.store.digest().contains(&signed.dot)
        {
            return; // its own, relayed back
        }
        for (dot, verdict) in self.judge.admit(&mut self.writer.store, signed.clone(), ca) {
            if let Verdict::Equivocation(proof) = &verdict {
                self.proofs.push((**proof).clone());
            }
            self.verdicts.push((dot, verdict));
        }
    }

    /// Publishes each proof it found, as a version under its own proof key (the node's
    /// `act_on_convictions` does the same).
    fn publish(&mut self, ca: &Ca) -> Vec<Version> {
        let mut out = Vec::new();
        for equivocation in std::mem::take(&mut self.proofs) {
            let convicted = equivocation.dot().actor;
            let key = proof_key(convicted, self.writer.id()).expect("a valid key");
            if self.writer.store.get(&key).is_some() {
                continue;
            }
            let endorsement = self
                .writer
                .store
                .version_by_dot(&Dot::new(convicted, 1))
                .cloned();
            let proof = Proof {
                equivocation,
                endorsement,
            };
            let signed = self
                .writer
                .put_key(key, proof.encode().expect("a small proof"));
            self.judge.own(&signed, ca);
            out.push(signed);
        }
        out
    }

    /// Writes again every key a convicted writer tainted here: its best untainted sibling's
    /// value, else a delete. The new version supersedes every sibling, tainted ones included.
    fn neutralize(&mut self, ca: &Ca) -> Vec<Version> {
        let mut out = Vec::new();
        for key in self.judge.tainted_keys(&self.writer.store) {
            let clean = self
                .writer
                .store
                .versions(&key)
                .iter()
                .find(|v| !self.judge.tainted(v.dot) && !v.is_tombstone())
                .and_then(|v| v.payload.value().cloned());
            self.writer.wall += 10;
            let payload = clean.map_or(Payload::Tombstone, Payload::Value);
            let seq = self.writer.store.last_local_seq() + 1;
            let Ok(version) =
                self.writer
                    .store
                    .local_version(self.writer.wall, key, payload, seq, None)
            else {
                continue;
            };
            let signed = self
                .writer
                .key
                .sign(version, None, Some("equivocation".into()));
            self.writer.store.apply(signed.clone()).expect("applies");
            self.judge.own(&signed, ca);
            out.push(signed);
        }
        out
    }
}

/// What the attacker sends: versions that must be dropped, refused or convict it.
struct Attack {
    messages: Vec<Version>,
    /// Dots that must never be applied anywhere, with what they tried.
    forged: Vec<(Version, &'static str)>,
    /// Versions that must be refused, leaving their dot seen with no value.
    refused: Vec<Version>,
    /// The dot it equivocated at.
    equivocated: Dot,
    /// The second version with that dot, which the attacker sends to the first replica only
    /// (refused there, so never relayed): the others convict by its proof alone.
    second: Version,
}

fn attack(m: &mut Writer, victim: &Writer, victim_version: &Version) -> Attack {
    let mut messages = vec![m.endorse()];
    messages.push(m.put("app/a", "m1"));
    // Another writer's member record, and another writer's endorsement key: signed by m,
    // so refused (no hole).
    let record = m.put(&format!("_confmesh/members/{}", victim.id()), "not yours");
    let hijack = m.put(&format!("_confmesh/writers/{}", victim.id()), "not yours");
    let reserved = m.put("_confmesh/config/anything", "reserved");
    // A "proof" against the victim that proves nothing (one genuine version, one m signed
    // with its own key), and a delete of it: neither is a proof, both refused.
    let mut fake = victim_version.clone();
    fake.payload = Payload::Value(Bytes::from_static(b"the victim never wrote this"));
    let fake = m.key.sign(fake, None, None);
    let no_proof = Proof {
        equivocation: Equivocation {
            first: victim_version.clone(),
            second: fake,
        },
        endorsement: None,
    };
    let proof_key = proof_key(victim.id(), m.id()).expect("a valid key");
    let bogus = m.put_key(proof_key.clone(), no_proof.encode().expect("small"));
    m.wall += 10;
    let seq = m.store.last_local_seq() + 1;
    let delete = m
        .store
        .local_version(m.wall, proof_key, Payload::Tombstone, seq, None)
        .expect("small");
    let delete = m.key.sign(delete, None, None);
    m.store.apply(delete.clone()).expect("applies");
    let refused = vec![
        record.clone(),
        hijack.clone(),
        reserved.clone(),
        bogus.clone(),
        delete.clone(),
    ];
    messages.extend([record, hijack, reserved, bogus, delete]);

    // Equivocation: two versions with one dot, the second on a reserved key (refused, so a
    // replica that takes it first holds a hole, and must still catch the other).
    let first = m.put("app/b", "m-first");
    let mut other = first.clone();
    other.key = Key::new("_confmesh/config/other").expect("valid key");
    other.payload = Payload::Value(Bytes::from_static(b"m-second"));
    let second = m.key.sign(other, Some("alice".into()), None);
    let equivocated = first.dot;
    messages.extend([first, second.clone()]);
    // After the equivocation: must end up neutralized or refused everywhere.
    messages.push(m.put("app/a", "m-after"));

    let mut forged = Vec::new();
    // Claims the victim's id, signed with m's key.
    let mut claim = victim_version.clone();
    claim.dot = Dot::new(victim.id(), 50);
    claim.payload = Payload::Value(Bytes::from_static(b"as the victim"));
    forged.push((m.key.sign(claim, None, None), "claims another writer's id"));
    // A signature that is noise.
    let mut noise = m.put("app/d", "noise");
    if let Some(seal) = noise.seal.as_mut() {
        seal.signature = [7u8; 64];
    }
    forged.push((noise, "a forged signature"));
    // The victim's signed version, replayed under m's id.
    let mut replay = victim_version.clone();
    replay.dot = Dot::new(m.id(), 60);
    forged.push((replay, "replays another writer's version under its own id"));
    // The victim's signed version with its value changed in transit.
    let mut tampered = victim_version.clone();
    tampered.payload = Payload::Value(Bytes::from_static(b"tampered"));
    tampered.dot = Dot::new(victim.id(), 70);
    forged.push((tampered, "alters a signed version"));
    // Its audit fields changed in transit.
    let mut reauthored = victim_version.clone();
    if let Some(seal) = reauthored.seal.as_mut() {
        seal.author = Some("mallory".into());
    }
    reauthored.dot = Dot::new(victim.id(), 71);
    forged.push((reauthored, "alters a signed version's author"));
    // An endorsement for the victim's id carrying m's key.
    let mut fake = m.endorse();
    fake.dot = Dot::new(victim.id(), 1);
    forged.push((fake, "endorses m's key for the victim's id"));
    messages.extend(forged.iter().map(|(f, _)| f.clone()));
    Attack {
        messages,
        forged,
        refused,
        equivocated,
        second,
    }
}

/// The model's whole run, from one seed: returns the replicas once everything is delivered.
fn run(seed: u64, duplicates: bool) -> (Vec<Replica>, Attack, Writer) {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut m = Writer::new(40);
    let mut x = Writer::new(50);
    let ca = Ca {
        certified: vec![
            // The honest nodes' and the attacker's certificates; not x's.
            cert_public(&SigningKey::from([110; 32])),
            cert_public(&SigningKey::from([111; 32])),
            cert_public(&SigningKey::from([112; 32])),
            cert_public(&m.cert),
        ],
    };
    let mut pool: Vec<Version> = Vec::new();
    let mut replicas = Vec::new();
    for seed in 10..13u8 {
        let (replica, endorsement) = Replica::new(seed, &ca);
        pool.push(endorsement);
        replicas.push(replica);
    }
    for round in 0..4 {
        for (r, replica) in replicas.iter_mut().enumerate() {
            let key = ["app/a", "app/b", "app/c", "app/e"][rng.random_range(0..4usize)];
            pool.push(replica.write(key, &format!("r{r}-{round}"), &ca));
        }
        let own = format!("_confmesh/members/{}", replicas[0].writer.id());
        pool.push(replicas[0].write(&own, &format!("record {round}"), &ca));
    }
    let victim_version = pool.last().cloned().expect("a version");
    let attack = attack(&mut m, &replicas[0].writer, &victim_version);
    pool.extend(attack.messages.iter().cloned());
    // The uncertified writer: its endorsement is forged, its versions wait forever.
    pool.push(x.endorse());
    pool.push(x.put("app/a", "uncertified"));

    // The first round leaves a third of the versions out at each replica (they arrive after
    // the proofs, as anti-entropy brings them).
    let second = attack.second.clone();
    let deliver = |replicas: &mut Vec<Replica>,
                   pool: &[Version],
                   rng: &mut Xoshiro256PlusPlus,
                   hold_back: bool| {
        for (r, replica) in replicas.iter_mut().enumerate() {
            let mut order: Vec<usize> = (0..pool.len())
                .filter(|&i| r == 0 || pool[i] != second)
                .filter(|_| !hold_back || rng.random_range(0..3u8) > 0)
                .collect();
            if duplicates {
                let again: Vec<usize> = (0..pool.len() / 3)
                    .map(|_| rng.random_range(0..pool.len()))
                    .filter(|&i| r == 0 || pool[i] != second)
                    .collect();
                order.extend(again);
            }
            order.shuffle(rng);
            for i in order {
                replica.receive(&pool[i], &ca);
            }
        }
    };
    deliver(&mut replicas, &pool, &mut rng, true);
    // Replicas that found the equivocation publish its proof, a version that spreads with the
    // rest; each replica then writes again what a convicted writer tainted there.
    let mut proofs: Vec<Version> = replicas.iter_mut().flat_map(|r| r.publish(&ca)).collect();
    if proofs.is_empty() {
        // No replica got both versions yet: the one that gets the second finds it.
        deliver(&mut replicas, &pool, &mut rng, false);
        proofs = replicas.iter_mut().flat_map(|r| r.publish(&ca)).collect();
    }
    assert!(
        !proofs.is_empty(),
        "the equivocation is found where both versions meet"
    );
    pool.extend(proofs);
    deliver(&mut replicas, &pool, &mut rng, false);
    for replica in &mut replicas {
        let rewritten = replica.neutralize(&ca);
        pool.extend(rewritten);
    }
    // Anti-entropy: everything again, in new orders.
    deliver(&mut replicas, &pool, &mut rng, false);
    (replicas, attack, x)
}

fn check(seed: u64, duplicates: bool) {
    let (replicas, attack, x) = run(seed, duplicates);
    let first = &replicas[0].writer.store;
    for replica in &replicas {
        let store = &replica.writer.store;
        // Nothing forged was applied, and each forgery was judged forged (or a duplicate of
        // the genuine version with that dot).
        for (forged, what) in &attack.forged {
            let dot = forged.dot;
            let held = store.version_by_dot(&dot);
            assert!(
                held.is_none_or(|v| v != forged),
                "seed {seed}: applied a version that {what}"
            );
            let judged: Vec<&Verdict> = replica
                .verdicts
                .iter()
                .filter(|(d, _)| *d == dot)
                .map(|(_, v)| v)
                .collect();
            // A writer does not judge versions with its own dots: it wrote what it holds.
            assert!(
                dot.actor == replica.writer.id()
                    || judged
                        .iter()
                        .any(|v| matches!(v, Verdict::Forged(_) | Verdict::Duplicate)),
                "seed {seed}: a version that {what} was judged {judged:?}"
            );
        }
        // Forged versions left no trace: their dots are unseen, unless a genuine version
        // holds that dot.
        for (forged, what) in &attack.forged {
            let dot = forged.dot;
            let genuine = replicas.iter().any(|r| {
                r.judge
                    .signed_version(&r.writer.store, dot)
                    .is_some_and(|s| s != forged)
            });
            assert!(
                genuine || !store.digest().contains(&dot),
                "seed {seed}: a version that {what} left its dot seen"
            );
        }
        // Refused versions are seen and hold no value.
        for refused in &attack.refused {
            assert!(store.digest().contains(&refused.dot), "seed {seed}: a hole");
            assert!(store.version_by_dot(&refused.dot).is_none());
        }
        // The uncertified writer wrote nothing anywhere, and waits bounded.
        assert!(store.digest().seen(x.id()).is_empty(), "seed {seed}");
        assert!(replica.judge.deferred() <= 1);
        assert_eq!(
            replica.judge.convicted(attack.equivocated.actor),
            Some(attack.equivocated.counter),
            "seed {seed}: every replica convicted the equivocating writer"
        );
        // A convicted writer's versions from the equivocation on are gone: refused, or
        // written over.
        let m = attack.equivocated.actor;
        for seq in attack.equivocated.counter..=store.digest().seen(m).max() {
            assert!(
                store.version_by_dot(&Dot::new(m, seq)).is_none(),
                "seed {seed}: the convicted writer's version {seq} is still held"
            );
        }
        // Everything stored (siblings and tombstones too) was signed by its writer: its key
        // verifies it.
        for v in store.versions_all() {
            let public = replica
                .judge
                .writer(v.dot.actor)
                .expect("an endorsed writer");
            assert!(verifies(v, public), "seed {seed}: {v:?}");
        }
        // The same replica everywhere: context, and every version, tombstones included.
        assert_eq!(
            store.digest(),
            first.digest(),
            "seed {seed}: contexts differ"
        );
        let all: Vec<&Version> = store.versions_all().collect();
        let first_all: Vec<&Version> = first.versions_all().collect();
        assert_eq!(all, first_all, "seed {seed}: replicas differ");
    }
    // Refusals named their reason.
    let reasons: BTreeSet<String> = replicas[0]
        .verdicts
        .iter()
        .filter_map(|(_, v)| match v {
            Verdict::Refused(r) => Some(format!("{r:?}")),
            _ => None,
        })
        .collect();
    for reason in [
        Refusal::NotOwnRecord,
        Refusal::NotAnEndorsement,
        Refusal::Reserved,
        Refusal::NotAProof,
    ] {
        assert!(
            reasons.contains(&format!("{reason:?}")),
            "seed {seed}: {reasons:?}"
        );
    }
}

#[test]
fn the_rules_hold_in_a_fixed_order() {
    check(1, false);
    check(2, true);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn the_rules_hold_in_any_delivery_order(seed in any::<u64>(), duplicates in any::<bool>()) {
        check(seed, duplicates);
    }
}

#[test]
fn without_the_rules_a_forgery_would_be_applied() {
    // The control: a store that applies what it receives, as before signing, takes the
    // version that claims another writer's id.
    let (replicas, attack, _) = run(3, false);
    let mut naive = Store::new(WriterId(9), StoreConfig::default());
    let (claim, _) = &attack.forged[0];
    naive.apply(claim.clone()).expect("applies");
    assert!(naive.version_by_dot(&claim.dot).is_some());
    assert!(
        replicas[0]
            .writer
            .store
            .version_by_dot(&claim.dot)
            .is_none()
    );
}
