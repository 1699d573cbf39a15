//! Trust II's grant rule as replicas apply it (docs/PROTOCOL.md §8): policy entries proven by
//! admin certificates of the cluster CA, versions judged in the policy context their writers
//! signed, refusals that leave no value, and masks that make every delivery order end alike.
//!
//! Every version here is made by hand, as a certified node that bypasses its own API would
//! make it: signed with its writer key, with whatever context and author it likes. Replicas
//! are the core's `Judge` and `Store` with the runtime's certifier (real certificates), fed
//! the way a node feeds them.

#![cfg(feature = "runtime")]

mod common;

use bytes::Bytes;
use confmesh::{
    proto::{
        AuthorProof, Dot, Grounds, Key, Payload, Store, StoreConfig, VClock, Version,
        trust::{
            Judge, Refusal, Verdict, WriterKey, endorsement_key,
            policy::{Denial, Principal, Right, Rule, entry_key},
        },
    },
    runtime::{
        certifier::{self, AdminKey, CaCertifier},
        tls::DevCa,
    },
};

/// A certified node's writer, making versions by hand.
struct Writer {
    key: WriterKey,
    store: Store,
    wall: u64,
    /// How many policy entries it made: the last position taken.
    entries: u64,
}

impl Writer {
    /// A writer of the node `name`, endorsed by the node's certificate.
    fn new(ca: &DevCa, name: &str, seed: u8) -> Writer {
        let key = WriterKey::from_seed([seed; 32]);
        let mut writer = Writer {
            store: Store::new(key.id(), StoreConfig::default()),
            key,
            wall: now_ms(),
            entries: 0,
        };
        let tls = ca.node_config(name).expect("cert");
        let endorsement = certifier::endorse(&tls, &writer.key).expect("endorse");
        let key = endorsement_key(writer.key.id()).expect("key");
        writer.sign(
            key,
            Payload::Value(endorsement.encode()),
            None,
            VClock::new(),
            None,
        );
        writer
    }

    /// Its next version, signed with `author` and `context`, applied to its own store.
    fn sign(
        &mut self,
        key: Key,
        payload: Payload,
        author: Option<&str>,
        context: VClock,
        proof: Option<AuthorProof>,
    ) -> Version {
        self.wall += 1;
        let seq = self.store.last_local_seq() + 1;
        let version = self
            .store
            .local_version(self.wall, key, payload, seq, None)
            .expect("small");
        let grounds = Grounds { context, proof };
        let signed = self
            .key
            .sign_grounded(version, author.map(str::to_owned), None, grounds);
        self.store.apply(signed.clone()).expect("applies");
        signed
    }

    /// A write of `key` = `value` in `context`.
    fn write(&mut self, key: &str, value: &str, context: VClock) -> Version {
        let payload = Payload::Value(Bytes::from(value.to_owned()));
        self.sign(Key::new(key).expect("key"), payload, None, context, None)
    }

    /// The key of its next policy entry.
    fn next_entry_key(&self) -> Key {
        entry_key(Dot::new(self.key.id(), self.entries + 1))
    }

    /// A policy entry `rule` at its next position, proven by `admin`, in `context`.
    fn rule(&mut self, rule: &Rule, admin: &AdminKey, context: VClock) -> Version {
        let key = self.next_entry_key();
        self.entries += 1;
        let payload = Payload::Value(rule.encode());
        let proof = admin.prove_rule(&key, &payload, &context).expect("proof");
        let author = admin.principal();
        self.sign(key, payload, Some(&author), context, Some(proof))
    }

    /// Two different versions of `key` signed with one dot, as an equivocating writer makes
    /// them; the first is its own.
    fn equivocate(&mut self, key: &str) -> (Version, Version) {
        self.wall += 1;
        let seq = self.store.last_local_seq() + 1;
        let [first, second] = ["one", "two"].map(|value| {
            let payload = Payload::Value(Bytes::from(value));
            let version = self
                .store
                .local_version(self.wall, Key::new(key).expect("key"), payload, seq, None)
                .expect("small");
            self.key
                .sign_grounded(version, None, None, Grounds::default())
        });
        self.store.apply(first.clone()).expect("applies");
        (first, second)
    }

    fn endorsement(&self) -> Version {
        self.store
            .version_by_dot(&Dot::new(self.key.id(), 1))
            .cloned()
            .expect("endorsed")
    }

    /// Every version it made, in order (it keeps them all: no key is written twice here).
    fn versions(&self) -> Vec<Version> {
        let mut all: Vec<Version> = self.store.versions_all().cloned().collect();
        all.sort_by_key(|v| v.dot.counter);
        all
    }
}

/// A replica: a store and its judge, fed as a node feeds them.
struct Replica {
    store: Store,
    judge: Judge,
    certifier: CaCertifier,
}

impl Replica {
    fn new(ca: &DevCa, seed: u8) -> Replica {
        let tls = ca.node_config(&format!("replica-{seed}")).expect("cert");
        Replica {
            store: Store::new(
                WriterKey::from_seed([seed; 32]).id(),
                StoreConfig::default(),
            ),
            judge: Judge::new(),
            certifier: CaCertifier::new(&tls).expect("certifier"),
        }
    }

    /// Receives one batch: judged, applied, then masked as the policy now says. Returns the
    /// verdicts.
    fn receive(&mut self, versions: Vec<Version>) -> Vec<(Dot, Verdict)> {
        let screened = self
            .judge
            .screen(&mut self.store, versions, &self.certifier);
        for version in screened.apply {
            let _ = self.store.apply(version);
        }
        for dot in self.judge.newly_masked(&self.store, &self.certifier) {
            self.store.mask(dot);
        }
        screened.verdicts
    }

    fn verdict(&mut self, version: &Version) -> Verdict {
        let dot = version.dot;
        let verdicts = self.receive(vec![version.clone()]);
        verdicts
            .into_iter()
            .find(|(d, _)| *d == dot)
            .map(|(_, v)| v)
            .expect("a verdict")
    }

    fn value(&self, key: &str) -> Option<String> {
        self.store
            .get(&Key::new(key).expect("key"))
            .and_then(|v| v.value())
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    /// What a reader sees: every live key and its value.
    fn observable(&self) -> Vec<(String, String)> {
        self.store
            .list("")
            .filter_map(|v| {
                let value = v.value()?;
                Some((
                    v.key.as_str().to_owned(),
                    String::from_utf8_lossy(value).into_owned(),
                ))
            })
            .collect()
    }
}

#[allow(
    clippy::disallowed_methods,
    reason = "versions are made as a node makes them, now (certificates are valid from now)"
)]
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn principal(text: &str) -> Principal {
    Principal::parse(text).expect("principal")
}

/// A context naming every version of these writers made so far.
/// The version vector of `writers`' versions: a root's or a revocation's cutoff.
fn cutoff_of(writers: &[&Writer]) -> VClock {
    let mut cutoff = VClock::new();
    for writer in writers {
        cutoff
            .dots
            .insert(writer.key.id(), writer.store.last_local_seq());
    }
    cutoff
}

/// The context of an act that saw every policy entry of `writers`.
fn context_of(writers: &[&Writer]) -> VClock {
    let mut context = VClock::new();
    for writer in writers.iter().filter(|w| w.entries > 0) {
        context.dots.insert(writer.key.id(), writer.entries);
    }
    context
}

fn admin(ca: &DevCa, name: &str) -> AdminKey {
    let issued = ca.issue_admin(name).expect("admin cert");
    AdminKey::from_pem(issued.chain_pem.as_bytes(), issued.key_pem.as_bytes()).expect("admin")
}

/// The cluster of the tests: a control node whose writer publishes the policy for the admin
/// `ops`, the nodes `billing-1` and `payments-1`, and the root and a grant of `billing/` to
/// `billing-1`.
struct Cluster {
    ca: DevCa,
    ops: AdminKey,
    control: Writer,
    billing: Writer,
    payments: Writer,
    root: Version,
    grant: Version,
}

fn cluster() -> Cluster {
    let ca = DevCa::generate("policy test CA").expect("ca");
    let ops = admin(&ca, "ops");
    let mut control = Writer::new(&ca, "control", 1);
    let billing = Writer::new(&ca, "billing-1", 2);
    let payments = Writer::new(&ca, "payments-1", 3);
    let cutoff = cutoff_of(&[&control, &billing, &payments]);
    let root = control.rule(
        &Rule::Root {
            admins: vec![principal("admin:ops")],
            cutoff,
        },
        &ops,
        VClock::new(),
    );
    let context = context_of(&[&control]);
    let grant = control.rule(
        &Rule::Grant {
            grantee: principal("node:billing-1"),
            right: Right::Write,
            prefix: "billing/".into(),
        },
        &ops,
        context,
    );
    Cluster {
        ca,
        ops,
        control,
        billing,
        payments,
        root,
        grant,
    }
}

impl Cluster {
    /// A replica holding the endorsements and the policy so far.
    fn replica(&self, seed: u8) -> Replica {
        let mut replica = Replica::new(&self.ca, seed);
        let mut batch = vec![self.billing.endorsement(), self.payments.endorsement()];
        batch.extend(self.control.versions());
        for (dot, verdict) in replica.receive(batch) {
            assert_eq!(verdict, Verdict::Apply, "{dot:?}");
        }
        replica
    }
}

/// A node granted only `billing/` that crafts a signed write to `payments/x` is refused with
/// its full context, and masked (its value never shows) with none: it cannot escape the root
/// by claiming it never saw it.
#[test]
fn a_node_granted_only_billing_cannot_write_payments_with_any_context() {
    let mut c = cluster();
    let mut replica = c.replica(10);
    let full = context_of(&[&c.control]);
    let ok = c.billing.write("billing/rate", "7", full.clone());
    assert_eq!(replica.verdict(&ok), Verdict::Apply);
    assert_eq!(replica.value("billing/rate").as_deref(), Some("7"));

    let crafted = c.billing.write("payments/x", "steal", full);
    match replica.verdict(&crafted) {
        Verdict::Refused(Refusal::Denied(Denial::NotGranted {
            principal,
            right: Right::Write,
            key,
        })) => {
            assert_eq!(principal.to_string(), "node:billing-1");
            assert_eq!(key, "payments/x");
        }
        other => panic!("not refused for the missing grant: {other:?}"),
    }
    assert_eq!(replica.value("payments/x"), None);

    // The same with no context: granted in it (it saw no policy), masked by the root, whose
    // cutoff did not see it. Its value never shows.
    let escape = c.billing.write("payments/y", "steal", VClock::new());
    assert_eq!(replica.verdict(&escape), Verdict::Apply);
    assert_eq!(replica.value("payments/y"), None, "masked");
    // And a node that holds no grant at all.
    let none = c
        .payments
        .write("payments/z", "1", context_of(&[&c.control]));
    assert!(matches!(
        replica.verdict(&none),
        Verdict::Refused(Refusal::Denied(Denial::NotGranted { .. }))
    ));
}

/// Policy entries need an admin's proof: a node that writes one as `admin:ops` without the
/// admin's key, with a proof for another entry, context or key (another node's entry, another
/// position: a replay), or with a certificate the CA did not issue, is refused; so is a second
/// root made by someone who had seen the first.
#[test]
fn policy_entries_without_an_admins_proof_are_refused() {
    let mut c = cluster();
    let mut replica = c.replica(11);
    let context = context_of(&[&c.control]);
    let grant_all = Rule::Grant {
        grantee: principal("node:payments-1"),
        right: Right::Admin,
        prefix: String::new(),
    };
    let payload = Payload::Value(grant_all.encode());
    let key = c.payments.next_entry_key();
    let prove = |admin: &AdminKey, key: &Key, payload: &Payload, context: &VClock| {
        Some(admin.prove_rule(key, payload, context).expect("proof"))
    };
    let proofs = [
        // No proof at all.
        None,
        // A proof of another rule.
        prove(
            &c.ops,
            &key,
            &Payload::Value(Bytes::from_static(b"x")),
            &context,
        ),
        // A proof of this rule in another context.
        prove(&c.ops, &key, &payload, &VClock::new()),
        // A proof of this rule for another node's entry (a replay of the control node's).
        prove(&c.ops, &c.control.next_entry_key(), &payload, &context),
        // A proof of this rule at another position of this node (a replay of another entry).
        prove(
            &c.ops,
            &entry_key(Dot::new(c.payments.key.id(), 2)),
            &payload,
            &context,
        ),
        // A proof by an admin certificate of another CA.
        {
            let other = DevCa::generate("another CA").expect("ca");
            prove(&admin(&other, "ops"), &key, &payload, &context)
        },
    ];
    for (seed, proof) in (60..).zip(proofs) {
        // The same writer each time, from a fresh store, to a fresh replica: each attempt
        // is the first version at its dot.
        let mut forger = Writer::new(&c.ca, "payments-1", 3);
        let mut replica = c.replica(seed);
        let forged = forger.sign(
            key.clone(),
            payload.clone(),
            Some("admin:ops"),
            context.clone(),
            proof,
        );
        assert_eq!(
            replica.verdict(&forged),
            Verdict::Refused(Refusal::Unproven)
        );
    }
    // Proven, but a second root by an admin who had seen the first.
    let second = c.control.rule(
        &Rule::Root {
            admins: vec![principal("admin:ops")],
            cutoff: VClock::new(),
        },
        &c.ops,
        context_of(&[&c.control]),
    );
    assert_eq!(
        replica.verdict(&second),
        Verdict::Refused(Refusal::Denied(Denial::RootExists))
    );
    // An entry under a key that names another writer's position.
    let misplaced = c.control.sign(
        entry_key(Dot::new(c.payments.key.id(), 1)),
        payload,
        Some("admin:ops"),
        VClock::new(),
        None,
    );
    assert_eq!(
        replica.verdict(&misplaced),
        Verdict::Refused(Refusal::NotAPolicyEntry)
    );
    // An unsigned version of a made-up legacy writer (as a node of protocol 2 wrote them):
    // even a replica that still takes those (permissive, during an upgrade) refuses it once
    // a policy root is held.
    let mut permissive = Replica::new(&c.ca, 14);
    permissive.judge = Judge::with_mode(confmesh::proto::trust::Mode::Permissive);
    let mut batch = vec![c.payments.endorsement()];
    batch.extend(c.control.versions());
    permissive.receive(batch);
    let mut legacy = Store::new(confmesh::proto::WriterId(0x1e6a), StoreConfig::default());
    let unsigned = legacy
        .put(
            now_ms(),
            Key::new("payments/x").expect("key"),
            Bytes::from_static(b"1"),
        )
        .expect("small");
    assert!(matches!(
        permissive.verdict(&unsigned),
        Verdict::Forged(confmesh::proto::trust::Forgery::Unsigned)
    ));
    // Nothing of it gave payments-1 a right (in the context of the entries granted: a
    // refused entry takes no position, so a context naming it would wait).
    let write = c.payments.write("payments/x", "1", context);
    assert!(matches!(replica.verdict(&write), Verdict::Refused(_)));
}

/// A write made for a token carries the token's proof (docs/PROTOCOL.md §8.7): a node that
/// names a token as its author without the token's secret, with another token's proof, or in
/// a context that does not hold the token's entry, is refused everywhere; the token's own
/// proof passes.
#[test]
fn a_write_for_a_token_needs_the_tokens_proof() {
    use confmesh::proto::trust::{author_signed_bytes, token::TokenSecret};
    let mut c = cluster();
    let mut replica = c.replica(70);
    let before_token = context_of(&[&c.control]);
    let token = TokenSecret::from_bytes([7; 32]);
    let other = TokenSecret::from_bytes([8; 32]);
    let entry = c.control.rule(
        &Rule::Token {
            id: token.id(),
            name: "deploy".into(),
            hash: token.hash(),
            public: token.public(),
            expires_ms: None,
        },
        &c.ops,
        context_of(&[&c.control]),
    );
    let grant = c.control.rule(
        &Rule::Grant {
            grantee: token.principal(),
            right: Right::Write,
            prefix: "billing/".into(),
        },
        &c.ops,
        context_of(&[&c.control]),
    );
    for v in [&entry, &grant] {
        assert_eq!(replica.verdict(v), Verdict::Apply);
    }
    let author = token.principal().to_string();
    let proof = |by: &TokenSecret, key: &Key, payload: &Payload, context: &VClock| {
        let message = author_signed_bytes(key.as_str(), payload, &author, context);
        AuthorProof {
            signature: by.signing_key().sign(&message).into(),
            certificate: None,
        }
    };
    let full = context_of(&[&c.control]);
    let key = Key::new("billing/t").expect("key");
    let payload = Payload::Value(Bytes::from_static(b"1"));
    let attempts = [
        (None, full.clone(), "no proof"),
        (
            Some(proof(&other, &key, &payload, &full)),
            full.clone(),
            "another token's proof",
        ),
        (
            Some(proof(&token, &key, &payload, &before_token)),
            before_token.clone(),
            "a context without the token",
        ),
    ];
    for (proof, context, why) in attempts {
        let forged = c
            .billing
            .sign(key.clone(), payload.clone(), Some(&author), context, proof);
        assert_eq!(
            replica.verdict(&forged),
            Verdict::Refused(Refusal::Unproven),
            "{why}"
        );
    }
    let proven = c.billing.sign(
        key.clone(),
        payload.clone(),
        Some(&author),
        full.clone(),
        Some(proof(&token, &key, &payload, &full)),
    );
    assert_eq!(replica.verdict(&proven), Verdict::Apply);
    assert_eq!(replica.value("billing/t").as_deref(), Some("1"));
}

/// A revoked principal's write made during a partition, accepted by a replica before the
/// revocation arrived, is masked there once it does; a replica that gets the revocation first
/// applies the write masked. Both end with the same values, and what the masked write
/// superseded stays superseded. The writes the revoker had seen stand.
#[test]
fn a_write_made_during_a_partition_by_a_revoked_node_is_masked_in_every_order() {
    let mut c = cluster();
    let mut early = c.replica(12);
    let mut late = c.replica(13);
    let context = context_of(&[&c.control]);
    let seen = c.billing.write("billing/a", "before", context.clone());
    for replica in [&mut early, &mut late] {
        assert_eq!(replica.verdict(&seen), Verdict::Apply);
    }
    // The admin revokes billing-1's write over billing/, having seen `seen` only.
    let cutoff = cutoff_of(&[&c.control, &c.billing]);
    let revoke = c.control.rule(
        &Rule::Revoke {
            grantee: principal("node:billing-1"),
            right: Right::Write,
            prefix: "billing/".into(),
            cutoff,
        },
        &c.ops,
        context_of(&[&c.control]),
    );
    // Meanwhile, on the other side of a partition, billing-1 overwrites billing/a.
    let mut over = c.billing.write("billing/b", "during", context.clone());
    let overwrite = {
        let key = Key::new("billing/a").expect("key");
        c.billing.wall += 1;
        let seq = c.billing.store.last_local_seq() + 1;
        let v = c
            .billing
            .store
            .local_version(
                c.billing.wall,
                key,
                Payload::Value(Bytes::from_static(b"during")),
                seq,
                None,
            )
            .expect("small");
        let grounds = Grounds {
            context: context.clone(),
            proof: None,
        };
        let signed = c.billing.key.sign_grounded(v, None, None, grounds);
        c.billing.store.apply(signed.clone()).expect("applies");
        signed
    };
    assert!(overwrite.supersedes(&seen.dot));

    // `early` takes the writes, then the revocation; `late` the other way round.
    for v in [&over, &overwrite] {
        assert_eq!(early.verdict(v), Verdict::Apply);
    }
    assert_eq!(early.value("billing/a").as_deref(), Some("during"));
    assert_eq!(early.verdict(&revoke), Verdict::Apply);
    assert_eq!(late.verdict(&revoke), Verdict::Apply);
    for v in [&overwrite, &over] {
        assert_eq!(late.verdict(v), Verdict::Apply, "granted in its context");
    }
    for replica in [&early, &late] {
        assert_eq!(replica.value("billing/b"), None, "masked");
        assert_eq!(
            replica.value("billing/a"),
            None,
            "masked, and what it superseded stays superseded"
        );
    }
    assert_eq!(early.observable(), late.observable());

    // A grant made after seeing the revocation restores the right; a write in its context
    // stands everywhere.
    let regrant = c.control.rule(
        &Rule::Grant {
            grantee: principal("node:billing-1"),
            right: Right::Write,
            prefix: "billing/".into(),
        },
        &c.ops,
        context_of(&[&c.control]),
    );
    over = c
        .billing
        .write("billing/c", "after", context_of(&[&c.control]));
    for replica in [&mut early, &mut late] {
        assert_eq!(replica.verdict(&regrant), Verdict::Apply);
        assert_eq!(replica.verdict(&over), Verdict::Apply);
        assert_eq!(replica.value("billing/c").as_deref(), Some("after"));
    }
    assert_eq!(early.observable(), late.observable());
}

/// A grant concurrent with a revocation loses: a write that relied on the grant and did not
/// see the revocation is masked, whatever order the three arrive in.
#[test]
fn a_grant_concurrent_with_a_revocation_loses_in_every_order() {
    let c = cluster();
    let base = context_of(&[&c.control]);
    // Two admins' writers, each unaware of the other: one revokes, one grants.
    let mut revoker = c.control;
    let mut granter = Writer::new(&c.ca, "control-2", 4);
    let revoke = revoker.rule(
        &Rule::Revoke {
            grantee: principal("node:billing-1"),
            right: Right::Write,
            prefix: "billing/".into(),
            cutoff: base.clone(),
        },
        &c.ops,
        base.clone(),
    );
    let grant = granter.rule(
        &Rule::Grant {
            grantee: principal("node:billing-1"),
            right: Right::Write,
            prefix: "billing/".into(),
        },
        &c.ops,
        base.clone(),
    );
    let mut billing = c.billing;
    let mut context = base.clone();
    context.dots.insert(granter.key.id(), granter.entries);
    let write = billing.write("billing/x", "1", context);

    let orders: [[&Version; 3]; 3] = [
        [&revoke, &grant, &write],
        [&grant, &write, &revoke],
        [&write, &grant, &revoke],
    ];
    for (seed, order) in (20..).zip(orders) {
        let mut replica = Replica::new(&c.ca, seed);
        let mut first = vec![
            billing.endorsement(),
            granter.endorsement(),
            c.payments.endorsement(),
        ];
        first.extend([c.root.clone(), c.grant.clone()]);
        first.insert(0, revoker.endorsement());
        replica.receive(first);
        for v in order {
            replica.receive(vec![v.clone()]);
        }
        assert_eq!(replica.value("billing/x"), None, "deny wins: {order:?}");
        assert_eq!(replica.judge.unripe(), 0);
    }
}

/// A version whose context names a policy entry not seen yet waits for it (neither applied
/// nor refused), and is judged when it arrives, in a later batch or the same one.
#[test]
fn a_write_waits_for_the_policy_its_context_names() {
    let mut c = cluster();
    let mut replica = Replica::new(&c.ca, 30);
    replica.receive(vec![
        c.control.endorsement(),
        c.billing.endorsement(),
        c.root.clone(),
    ]);
    let write = c.billing.write("billing/w", "v", context_of(&[&c.control]));
    assert_eq!(replica.verdict(&write), Verdict::AwaitsContext);
    assert_eq!(replica.judge.unripe(), 1);
    assert_eq!(replica.value("billing/w"), None);
    replica.receive(vec![c.grant.clone()]);
    assert_eq!(replica.judge.unripe(), 0);
    assert_eq!(replica.value("billing/w").as_deref(), Some("v"));

    // The same in one batch, the write first.
    let mut other = Replica::new(&c.ca, 31);
    other.receive(vec![c.control.endorsement(), c.billing.endorsement()]);
    let verdicts = other.receive(vec![write.clone(), c.root.clone(), c.grant.clone()]);
    assert!(
        verdicts
            .iter()
            .any(|(d, v)| *d == write.dot && *v == Verdict::Apply),
        "{verdicts:?}"
    );
    assert_eq!(other.value("billing/w").as_deref(), Some("v"));
}

/// A replica restarted from its store judges and masks as before: the book and the masks are
/// made again from the policy entries it holds.
#[test]
fn a_restored_replica_keeps_its_policy_and_its_masks() {
    let mut c = cluster();
    let mut replica = c.replica(40);
    let escape = c.billing.write("payments/y", "steal", VClock::new());
    replica.receive(vec![escape]);
    assert_eq!(replica.value("payments/y"), None);

    // What a store read back from disk holds: the same versions, no masks.
    let mut restored = Replica::new(&c.ca, 41);
    for mut version in replica.store.versions_all().cloned().collect::<Vec<_>>() {
        version.masked = Default::default();
        let _ = restored.store.apply(version);
    }
    assert!(restored.value("payments/y").is_some(), "unmasked on disk");
    restored.judge.restore(&restored.store, &restored.certifier);
    assert_eq!(restored.judge.book().len(), 2, "the root and the grant");
    for dot in restored
        .judge
        .newly_masked(&restored.store, &restored.certifier)
    {
        restored.store.mask(dot);
    }
    assert_eq!(restored.value("payments/y"), None);
    let crafted = c
        .billing
        .write("payments/x", "steal", context_of(&[&c.control]));
    assert!(matches!(
        restored.verdict(&crafted),
        Verdict::Refused(Refusal::Denied(_))
    ));
}

/// Real nodes over QUIC: an admin makes the root and a grant through one node; every node
/// takes them; the granted node writes `billing/` and is told it may not write `payments/`;
/// and when it bypasses its API and pushes signed versions by hand, every other node refuses
/// the one made in its full context and masks the one made in none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_enforces_the_policy_an_admin_made_through_one_of_them() {
    use confmesh::{
        proto::{Message, WriteError, node::Audit, wire},
        runtime::MeshError,
    };
    use std::time::Duration;

    let ca = DevCa::generate("policy cluster").expect("ca");
    let nodes = common::start_cluster(&ca, 3).await;
    let (control, billing, other) = (&nodes[0], &nodes[1], &nodes[2]);
    let ops = admin(&ca, "ops");
    let make = |rule: Rule, policy: &confmesh::runtime::PolicyReport| {
        let key = Key::new(&policy.next_key).expect("key");
        let payload = Payload::Value(rule.encode());
        let proof = ops
            .prove_rule(&key, &payload, &policy.context)
            .expect("proof");
        let audit = Audit {
            author: Some(ops.principal()),
            message: Some("test policy".into()),
            token: None,
        };
        (key, rule, audit, policy.context.clone(), proof)
    };
    let policy = control.policy().await.expect("policy");
    assert!(!policy.rooted && policy.entries.is_empty());
    let (key, rule, audit, context, proof) = make(
        Rule::Root {
            admins: vec![principal("admin:ops")],
            cutoff: policy.version_vector.clone(),
        },
        &policy,
    );
    control
        .write_rule(key, rule, audit, context, proof)
        .await
        .expect("root");
    let policy = control.policy().await.expect("policy");
    assert!(policy.rooted);
    let (key, rule, audit, context, proof) = make(
        Rule::Grant {
            grantee: principal("node:node-1"),
            right: Right::Write,
            prefix: "billing/".into(),
        },
        &policy,
    );
    control
        .write_rule(key, rule, audit, context, proof)
        .await
        .expect("grant");
    // A proof over a key another entry took since is refused before anything is written,
    // naming the next key; so is a proof for another context.
    let sneaky = Rule::Grant {
        grantee: principal("node:node-2"),
        right: Right::Admin,
        prefix: String::new(),
    };
    let (key, rule, audit, context, proof) = make(sneaky.clone(), &policy);
    let now = control.policy().await.expect("p");
    let taken = control
        .write_rule(key, rule, audit.clone(), context, proof)
        .await;
    match taken {
        Err(MeshError::Write(WriteError::EntryKeyTaken { next })) => {
            assert_eq!(next, now.next_key);
        }
        other => panic!("not refused: {other:?}"),
    }
    let stale = control
        .write_rule(
            Key::new(&now.next_key).expect("key"),
            sneaky.clone(),
            audit,
            now.context.clone(),
            ops.prove_rule(
                &Key::new(&now.next_key).expect("key"),
                &Payload::Value(sneaky.encode()),
                &policy.context,
            )
            .expect("proof"),
        )
        .await;
    assert!(
        matches!(
            stale,
            Err(MeshError::Write(WriteError::Refused(Refusal::Unproven)))
        ),
        "{stale:?}"
    );
    let everywhere = common::eventually(Duration::from_secs(20), || async {
        for node in &nodes {
            if node.policy().await.expect("policy").entries.len() != 2 {
                return false;
            }
        }
        true
    })
    .await;
    assert!(everywhere, "the policy did not reach every node");

    billing
        .put("billing/rate", &b"7"[..])
        .await
        .expect("granted");
    let denied = billing.put("payments/x", &b"1"[..]).await;
    match denied {
        Err(MeshError::Write(WriteError::Denied(denial))) => {
            assert_eq!(
                denial.to_string(),
                "node:node-1 holds no write grant over \"payments/x\""
            );
        }
        other => panic!("not denied: {other:?}"),
    }
    assert!(matches!(
        other.put("billing/rate", &b"8"[..]).await,
        Err(MeshError::Write(WriteError::Denied(_)))
    ));

    // node-1 bypasses its API: a writer of its own, endorsed by its certificate, pushes a
    // write of payments/x in its full context and one of payments/y in none.
    let mut forger = Writer::new(&ca, "node-1", 77);
    let full = billing.policy().await.expect("policy").context;
    let crafted = forger.write("payments/x", "steal", full);
    let escape = forger.write("payments/y", "steal", VClock::new());
    let push = Message::Push {
        versions: vec![forger.endorsement(), crafted, escape],
    };
    let bytes =
        wire::encode_as(&push, wire::Format::Sealed, wire::MAX_MESSAGE_BYTES).expect("encode");
    for to in [control, other] {
        billing
            .send_raw(to.id().addr, bytes.clone())
            .await
            .expect("send");
    }
    let judged = common::eventually(Duration::from_secs(20), || async {
        for node in [control, other] {
            let trust = node.trust().await.expect("trust");
            let refused: u64 = trust.by_peer.iter().map(|(_, s)| s.refused).sum();
            if refused < 1 || node.policy().await.expect("policy").masked < 1 {
                return false;
            }
        }
        true
    })
    .await;
    assert!(judged, "the crafted versions were not refused and masked");
    for node in &nodes {
        for key in ["payments/x", "payments/y"] {
            assert_eq!(node.get(key).await.expect("get"), None, "{key}");
        }
    }
    assert!(
        common::value_everywhere(&nodes, "billing/rate", b"7").await,
        "the granted write"
    );

    // A token granted billing/t/: node-1 writes for it, with its proof, and every node takes
    // the write; what the token may not write is refused at node-1, naming the token.
    let token = confmesh::proto::trust::token::TokenSecret::from_bytes([9; 32]);
    for rule in [
        Rule::Token {
            id: token.id(),
            name: "deploy".into(),
            hash: token.hash(),
            public: token.public(),
            expires_ms: None,
        },
        Rule::Grant {
            grantee: token.principal(),
            right: Right::Write,
            prefix: "billing/t/".into(),
        },
    ] {
        let policy = control.policy().await.expect("policy");
        let (key, rule, audit, context, proof) = make(rule, &policy);
        control
            .write_rule(key, rule, audit, context, proof)
            .await
            .expect("token entry");
    }
    let held = common::eventually(Duration::from_secs(20), || async {
        billing.token(&token.id()).await.expect("token").is_some()
            && billing.policy().await.expect("policy").entries.len() == 4
    })
    .await;
    assert!(held, "node-1 never held the token");
    let with_token = || Audit {
        author: None,
        message: None,
        token: Some(token.clone()),
    };
    let written = billing
        .put_audited("billing/t/x", &b"t"[..], with_token())
        .await
        .expect("the token may write billing/t/");
    let author = written.seal.as_deref().and_then(|s| s.author.clone());
    assert_eq!(author, Some(token.principal().to_string()));
    match billing
        .put_audited("billing/rate", &b"9"[..], with_token())
        .await
    {
        Err(MeshError::Write(WriteError::Denied(denial))) => assert_eq!(
            denial.to_string(),
            format!(
                "{} holds no write grant over \"billing/rate\"",
                token.principal()
            )
        ),
        other => panic!("not denied: {other:?}"),
    }
    let verified = common::eventually(Duration::from_secs(20), || {
        common::value_everywhere(&nodes, "billing/t/x", b"t")
    })
    .await;
    assert!(verified, "every node verified the token's proof");
    for node in nodes {
        node.shutdown().await;
    }
}

/// A revocation of a node's `read` over every key cuts it off (docs/PROTOCOL.md §8.8); a grant
/// of `read` over every key made after seeing the revocation lets it back; a pattern cuts off
/// no one.
#[test]
fn revoking_read_over_every_key_cuts_a_node_off_until_a_later_grant() {
    let mut c = cluster();
    let mut replica = c.replica(50);
    assert!(replica.judge.book().cut_off().is_empty());
    let revoke = |c: &mut Cluster, who: &str| {
        let cutoff = cutoff_of(&[&c.control, &c.billing, &c.payments]);
        c.control.rule(
            &Rule::Revoke {
                grantee: principal(who),
                right: Right::Read,
                prefix: String::new(),
                cutoff,
            },
            &c.ops,
            context_of(&[&c.control]),
        )
    };
    let cut = revoke(&mut c, "node:payments-1");
    let everyone = revoke(&mut c, "node:*");
    replica.receive(vec![cut, everyone]);
    let names: Vec<String> = replica.judge.book().cut_off().into_iter().collect();
    assert_eq!(names, ["payments-1"]);
    // A write revoking `write` only cuts no one off.
    let back = c.control.rule(
        &Rule::Grant {
            grantee: principal("node:payments-1"),
            right: Right::Write,
            prefix: String::new(),
        },
        &c.ops,
        context_of(&[&c.control]),
    );
    replica.receive(vec![back]);
    assert!(
        replica.judge.book().cut_off().is_empty(),
        "write includes read"
    );
}

/// A grant that would let a cut-off node back counts only where its grantor held `admin` over
/// every key: an admin whose authority was revoked concurrently cannot lift the cut-off.
#[test]
fn a_revoked_admins_grant_does_not_lift_a_cut_off() {
    let mut c = cluster();
    let mut replica = c.replica(51);
    let eve = admin(&c.ca, "eve");
    let eve_admin = c.control.rule(
        &Rule::Grant {
            grantee: principal("admin:eve"),
            right: Right::Admin,
            prefix: String::new(),
        },
        &c.ops,
        context_of(&[&c.control]),
    );
    let cut = c.control.rule(
        &Rule::Revoke {
            grantee: principal("node:payments-1"),
            right: Right::Read,
            prefix: String::new(),
            cutoff: cutoff_of(&[&c.control, &c.billing, &c.payments]),
        },
        &c.ops,
        context_of(&[&c.control]),
    );
    // Eve lets the node back, having seen the cut-off, through another node's writer...
    let seen = context_of(&[&c.control]);
    let mut other = Writer::new(&c.ca, "control-2", 5);
    let back = other.rule(
        &Rule::Grant {
            grantee: principal("node:payments-1"),
            right: Right::Read,
            prefix: String::new(),
        },
        &eve,
        seen,
    );
    // ...while ops revokes eve's authority without having seen that grant.
    let unseat = c.control.rule(
        &Rule::Revoke {
            grantee: principal("admin:eve"),
            right: Right::Admin,
            prefix: String::new(),
            cutoff: cutoff_of(&[&c.control]),
        },
        &c.ops,
        context_of(&[&c.control]),
    );
    replica.receive(vec![other.endorsement()]);
    for v in [&eve_admin, &cut, &back] {
        assert_eq!(replica.verdict(v), Verdict::Apply);
    }
    assert!(
        replica.judge.book().cut_off().is_empty(),
        "eve's grant stands"
    );
    assert_eq!(replica.verdict(&unseat), Verdict::Apply);
    let names: Vec<String> = replica.judge.book().cut_off().into_iter().collect();
    assert_eq!(names, ["payments-1"], "eve's grant no longer counts");
}

/// Real nodes: once an admin revokes a node's `read` over every key, every other node closes
/// its connections to it and refuses new ones as soon as their handshake completes, so it
/// drops out of their member lists, and a node started again with its certificate cannot
/// rejoin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_node_is_cut_off_and_cannot_reconnect() {
    use confmesh::{
        proto::node::Audit,
        runtime::{MemberState, Mesh},
    };
    use std::time::Duration;

    let ca = DevCa::generate("revocation cluster").expect("ca");
    let nodes = common::start_cluster(&ca, 3).await;
    let ops = admin(&ca, "ops");
    let write = |rule: Rule, policy: confmesh::runtime::PolicyReport| {
        let key = Key::new(&policy.next_key).expect("key");
        let payload = Payload::Value(rule.encode());
        let proof = ops
            .prove_rule(&key, &payload, &policy.context)
            .expect("proof");
        let audit = Audit {
            author: Some(ops.principal()),
            message: None,
            token: None,
        };
        (key, rule, audit, policy.context, proof)
    };
    let control = &nodes[0];
    let policy = control.policy().await.expect("policy");
    let cutoff = policy.version_vector.clone();
    let (key, rule, audit, context, proof) = write(
        Rule::Root {
            admins: vec![principal("admin:ops")],
            cutoff,
        },
        policy,
    );
    control
        .write_rule(key, rule, audit, context, proof)
        .await
        .expect("root");
    let policy = control.policy().await.expect("policy");
    let cutoff = policy.version_vector.clone();
    let (key, rule, audit, context, proof) = write(
        Rule::Revoke {
            grantee: principal("node:node-2"),
            right: Right::Read,
            prefix: String::new(),
            cutoff,
        },
        policy,
    );
    control
        .write_rule(key, rule, audit, context, proof)
        .await
        .expect("revoke");
    // Whether `node` lists the member at `addr` alive.
    let alive = |node: &Mesh, addr: std::net::SocketAddr| {
        let node = node.clone();
        async move {
            node.members()
                .await
                .expect("members")
                .iter()
                .any(|m| m.id.addr == addr && m.state == MemberState::Alive)
        }
    };
    let (addr0, addr2) = (nodes[0].id().addr, nodes[2].id().addr);
    assert!(
        alive(&nodes[1], addr2).await,
        "listed before the revocation"
    );
    // node-1 hears of the revocation (from node-0, or from node-2 before it is cut off).
    let gone = common::eventually(Duration::from_secs(30), || async {
        !alive(&nodes[0], addr2).await && !alive(&nodes[1], addr2).await
    })
    .await;
    assert!(gone, "the revoked node is still listed alive");

    // Started again with its certificate (and a fresh data directory), it cannot rejoin.
    let revoked = nodes[2].clone();
    revoked.shutdown().await;
    let again = Mesh::builder()
        .tls(ca.node_config("node-2").expect("cert"))
        .seeds([addr0.to_string()])
        .start()
        .await
        .expect("start");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !alive(control, again.id().addr).await,
        "the revoked node rejoined"
    );
    assert!(
        !alive(&again, addr0).await,
        "the revoked node sees the cluster"
    );
    again.shutdown().await;
    for node in nodes.into_iter().take(2) {
        node.shutdown().await;
    }
}

/// A policy root needs a node that enforces signatures (and holds no unsigned version): once
/// rooted, unsigned versions are taken from no one, so a permissive node's would be judged
/// forged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_is_refused_on_a_node_that_takes_unsigned_versions() {
    use confmesh::{
        proto::{node::Audit, trust::Mode},
        runtime::{Mesh, MeshError},
    };
    let ca = DevCa::generate("permissive cluster").expect("ca");
    let node = Mesh::builder()
        .tls(ca.node_config("node-0").expect("cert"))
        .trust_mode(Mode::Permissive)
        .start()
        .await
        .expect("start");
    let ops = admin(&ca, "ops");
    let policy = node.policy().await.expect("policy");
    let rule = Rule::Root {
        admins: vec![principal("admin:ops")],
        cutoff: policy.version_vector.clone(),
    };
    let key = Key::new(&policy.next_key).expect("key");
    let proof = ops
        .prove_rule(&key, &Payload::Value(rule.encode()), &policy.context)
        .expect("proof");
    let audit = Audit {
        author: Some(ops.principal()),
        message: None,
        token: None,
    };
    let refused = node
        .write_rule(key, rule, audit, policy.context, proof)
        .await;
    match refused {
        Err(MeshError::Config(why)) => assert!(why.contains("enforcing"), "{why}"),
        other => panic!("a root on a permissive node: {other:?}"),
    }
    assert!(!node.policy().await.expect("policy").rooted);
    node.shutdown().await;
}

/// Reserved keys follow Trust I only: the endorsement and member record of a node that joins
/// after the root (which had not seen them) are not masked, so they are never collected like
/// tombstones; policy entries are never masked in the store either (found by the swarm).
#[test]
fn endorsements_and_member_records_made_after_the_root_are_never_masked() {
    let c = cluster();
    let mut replica = c.replica(60);
    let mut late = Writer::new(&c.ca, "late-1", 9);
    let record_key = Key::new(&format!("_confmesh/members/{}", late.key.id())).expect("key");
    let record = late.sign(
        record_key.clone(),
        Payload::Value(Bytes::from_static(b"record")),
        None,
        VClock::new(),
        None,
    );
    let endorsement = late.endorsement();
    replica.receive(vec![endorsement.clone(), record]);
    for key in [endorsement.key.as_str(), record_key.as_str()] {
        let held = replica.store.get(&Key::new(key).expect("key"));
        assert!(held.is_some_and(|v| !v.masked.0), "{key} masked");
    }
    assert!(
        replica
            .store
            .versions_all()
            .filter(|v| v.key.as_str().starts_with("_confmesh/policy/"))
            .all(|v| !v.masked.0)
    );
}

/// A writer convicted of equivocation (docs/PROTOCOL.md §7.6) goes on publishing policy
/// entries proven by an admin: a replica that convicted it takes them like one that never
/// heard of the conviction, so both hold the same book and a write whose context names them
/// is judged at both (it would wait forever where they were quarantined).
#[test]
fn a_convicted_writers_policy_entries_are_held_where_it_was_convicted_too() {
    let mut c = cluster();
    let (mut convicting, mut unaware) = (c.replica(80), c.replica(81));
    let (first, second) = c.control.equivocate("app/split");
    // (Refused: the control node holds no grant over app/; a refused version is kept.)
    convicting.verdict(&first);
    assert!(
        matches!(convicting.verdict(&second), Verdict::Equivocation(_)),
        "the second version with one dot convicts"
    );
    let convicted = convicting.judge.convicted(c.control.key.id());
    assert_eq!(convicted, Some(first.dot.counter));
    unaware.verdict(&first);
    assert_eq!(unaware.judge.convicted(c.control.key.id()), None);

    let grant = c.control.rule(
        &Rule::Grant {
            grantee: principal("node:payments-1"),
            right: Right::Write,
            prefix: "payments/".into(),
        },
        &c.ops,
        context_of(&[&c.control]),
    );
    assert!(
        grant.dot.counter > first.dot.counter,
        "made after the conviction's number"
    );
    for replica in [&mut convicting, &mut unaware] {
        assert_eq!(replica.verdict(&grant), Verdict::Apply);
    }
    assert_eq!(convicting.judge.book().len(), unaware.judge.book().len());
    let write = c
        .payments
        .write("payments/x", "1", context_of(&[&c.control]));
    for replica in [&mut convicting, &mut unaware] {
        assert_eq!(replica.verdict(&write), Verdict::Apply);
        assert_eq!(replica.value("payments/x").as_deref(), Some("1"));
    }
}

/// An admin may make two entries for one token (one secret), with different keys: every
/// replica keeps both and checks a write's proof against each its context holds, so the
/// verdict does not depend on which entry came first; and every replica names the same one
/// as the token's.
#[test]
fn two_entries_for_one_token_are_judged_alike_in_either_order() {
    use confmesh::proto::trust::{author_signed_bytes, token::TokenSecret};
    let mut c = cluster();
    let (mut ab, mut ba) = (c.replica(90), c.replica(91));
    let token = TokenSecret::from_bytes([9; 32]);
    let stranger = TokenSecret::from_bytes([10; 32]);
    let before = context_of(&[&c.control]);
    let entry = |public: [u8; 32]| Rule::Token {
        id: token.id(),
        name: "deploy".into(),
        hash: token.hash(),
        public,
        expires_ms: None,
    };
    let real = c
        .control
        .rule(&entry(token.public()), &c.ops, before.clone());
    // Made concurrently elsewhere, with a key the token's secret does not give.
    let odd = c.payments.rule(&entry(stranger.public()), &c.ops, before);
    let grant = c.control.rule(
        &Rule::Grant {
            grantee: token.principal(),
            right: Right::Write,
            prefix: "billing/".into(),
        },
        &c.ops,
        context_of(&[&c.control]),
    );
    let context = context_of(&[&c.control, &c.payments]);
    let key = Key::new("billing/t").expect("key");
    let payload = Payload::Value(Bytes::from_static(b"1"));
    let author = token.principal().to_string();
    let message = author_signed_bytes(key.as_str(), &payload, &author, &context);
    let proof = AuthorProof {
        signature: token.signing_key().sign(&message).into(),
        certificate: None,
    };
    let write = c
        .billing
        .sign(key, payload, Some(&author), context, Some(proof));
    for (replica, order) in [(&mut ab, [&real, &odd]), (&mut ba, [&odd, &real])] {
        for entry in order {
            assert_eq!(replica.verdict(entry), Verdict::Apply);
        }
        assert_eq!(replica.verdict(&grant), Verdict::Apply);
        assert_eq!(replica.verdict(&write), Verdict::Apply);
        assert_eq!(replica.value("billing/t").as_deref(), Some("1"));
    }
    let named = |r: &Replica| r.judge.book().token(&token.id()).map(|e| e.position);
    assert_eq!(named(&ab), named(&ba));
    assert_eq!(ab.judge.book().token_entries(&token.id()).len(), 2);
}

/// What an agent asks for a token's read ("does it hold read now?") comes after every
/// revocation, whatever the revocation's cutoff names: an admin who crafts a cutoff naming
/// the highest possible version of some writer does not spare the token.
#[test]
fn a_read_asked_now_is_after_every_cutoff_even_a_crafted_one() {
    use confmesh::proto::{WriterId, trust::token::TokenSecret};
    let mut c = cluster();
    let mut replica = c.replica(95);
    let token = TokenSecret::from_bytes([11; 32]).principal();
    let grant = c.control.rule(
        &Rule::Grant {
            grantee: token.clone(),
            right: Right::Read,
            prefix: "billing/".into(),
        },
        &c.ops,
        context_of(&[&c.control]),
    );
    assert_eq!(replica.verdict(&grant), Verdict::Apply);
    let asked = |r: &Replica| {
        r.judge
            .book()
            .holds_now(&token, Right::Read, ["billing/x"])
            .remove(0)
    };
    assert_eq!(asked(&replica), None, "granted");
    let mut cutoff = cutoff_of(&[&c.control, &c.billing, &c.payments]);
    cutoff.dots.insert(WriterId(u64::MAX), u64::MAX);
    let revoke = c.control.rule(
        &Rule::Revoke {
            grantee: token.clone(),
            right: Right::Read,
            prefix: "billing/".into(),
            cutoff,
        },
        &c.ops,
        context_of(&[&c.control]),
    );
    assert_eq!(replica.verdict(&revoke), Verdict::Apply);
    assert!(
        matches!(asked(&replica), Some(Denial::Revoked { .. })),
        "{:?}",
        asked(&replica)
    );
}

/// A secret prefix (docs/PROTOCOL.md §9.3): once its keyring entry is in a write's context,
/// every replica refuses a plaintext value under the prefix (a node that crafts one by hand,
/// bypassing the sealing its runtime does) and a value naming a generation the context does
/// not hold, and takes values sealed to the prefix's generation, which its reader opens. A
/// write that did not see the keyring is judged as before it; a keyring written by a node that
/// is not among its readers is refused.
#[test]
fn a_secret_prefix_takes_only_values_sealed_to_its_generations() {
    use confmesh::{
        proto::trust::sealed::generation_name,
        runtime::secrets::{NodeIdentity, PrefixKey, seal_value},
    };
    let mut c = cluster();
    let mut replica = c.replica(10);
    let reader = NodeIdentity::ephemeral();
    let key = PrefixKey::generate("new").expect("key");
    let keyring = Rule::Keyring {
        prefix: "billing/secret/".into(),
        recipient: key.recipient(),
        readers: vec![principal("node:billing-1")],
        sealed: key.seal_for(&[reader.recipient()]).expect("sealed"),
    };
    // Only a reader writes a key: payments-1 is not one.
    let by_outsider = c.payments.rule(&keyring, &c.ops, context_of(&[&c.control]));
    assert_eq!(
        replica.verdict(&by_outsider),
        Verdict::Refused(Refusal::Denied(Denial::NotAReader))
    );
    let entry = c.billing.rule(&keyring, &c.ops, context_of(&[&c.control]));
    assert_eq!(replica.verdict(&entry), Verdict::Apply);
    let generation = generation_name(c.billing.key.id(), 1);
    let current = replica
        .judge
        .book()
        .sealing_generation("billing/secret/db")
        .expect("a secret key");
    assert_eq!(current.generation, generation);
    assert!(
        replica
            .judge
            .book()
            .sealing_generation("billing/rate")
            .is_none()
    );

    let seen = context_of(&[&c.control, &c.billing]);
    let plain = c
        .billing
        .write("billing/secret/db", "hunter2", seen.clone());
    assert_eq!(
        replica.verdict(&plain),
        Verdict::Refused(Refusal::NotSealed)
    );
    assert_eq!(replica.value("billing/secret/db"), None);
    let mut sign = |value: Vec<u8>, context: VClock| {
        c.billing.sign(
            Key::new("billing/secret/db").expect("key"),
            Payload::Value(Bytes::from(value)),
            None,
            context,
            None,
        )
    };
    // Sealed to a generation its context does not hold (another writer's position).
    let elsewhere = sign(
        seal_value(
            &key.recipient(),
            "00000000000000ff-1",
            "billing/secret/db",
            b"hunter2",
        )
        .expect("sealed"),
        seen.clone(),
    );
    assert_eq!(
        replica.verdict(&elsewhere),
        Verdict::Refused(Refusal::NotSealed)
    );
    let sealed = seal_value(
        &key.recipient(),
        &generation,
        "billing/secret/db",
        b"hunter2",
    )
    .expect("sealed");
    let good = sign(sealed.clone(), seen.clone());
    assert_eq!(replica.verdict(&good), Verdict::Apply);
    let stored = replica
        .store
        .get(&Key::new("billing/secret/db").expect("key"))
        .and_then(|v| v.value().cloned())
        .expect("stored");
    assert!(!stored.windows(7).any(|w| w == b"hunter2"), "stored sealed");
    let opened = PrefixKey::open(&reader, &generation, &current.sealed)
        .expect("the reader opens the key")
        .open_value(&stored, "billing/secret/db", 1 << 20)
        .expect("and the value");
    assert_eq!(opened, b"hunter2");
    // What travels: the message that pushes the sealed version holds no plaintext; the one
    // that pushed the crafted plaintext did (and every replica refused it).
    let pushed = |version: &Version| {
        let message = confmesh::proto::wire::Message::Push {
            versions: vec![version.clone()],
        };
        confmesh::proto::wire::encode(&message, 1 << 20).expect("encodes")
    };
    assert!(!pushed(&good).windows(7).any(|w| w == b"hunter2"));
    assert!(pushed(&plain).windows(7).any(|w| w == b"hunter2"));
    // A write that never saw the keyring (concurrent with it) is judged as before it; keys
    // outside the prefix, and deletions, carry nothing to seal.
    let before = sign(b"written before".to_vec(), context_of(&[&c.control]));
    assert_eq!(replica.verdict(&before), Verdict::Apply);
    // The same sealed bytes copied under another key (to have a reader's agent open them for
    // someone who may read only that key) are refused: the header names the key.
    let copied = c.billing.sign(
        Key::new("billing/secret/mine").expect("key"),
        Payload::Value(Bytes::from(sealed)),
        None,
        seen.clone(),
        None,
    );
    assert_eq!(
        replica.verdict(&copied),
        Verdict::Refused(Refusal::NotSealed)
    );
    let outside = c.billing.write("billing/rate", "7", seen.clone());
    assert_eq!(replica.verdict(&outside), Verdict::Apply);
    let deleted = c.billing.sign(
        Key::new("billing/secret/db").expect("key"),
        Payload::Tombstone,
        None,
        seen,
        None,
    );
    assert_eq!(replica.verdict(&deleted), Verdict::Apply);
}
