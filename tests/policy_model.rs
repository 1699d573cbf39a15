//! Trust II's grant rule (docs/PROTOCOL.md §8) checked against a model over arbitrary delivery
//! orders, partitions and offline nodes, before the runtime carries it.
//!
//! Each replica receives acts (versions, as the grant rule sees them) in its own order, with
//! duplicates; it defers an act until every entry position its context names is held
//! ([`Book::held_through`]), judges it in its context ([`Book::judge`]), records policy
//! entries ([`Book::admit`]) and re-reads the masks of what it granted ([`Book::masked`]).
//! Entries are numbered by their writer (their position); writes have none, so a context never
//! waits for a write (a write may be superseded everywhere and never sent again). The random model has writers make acts while
//! partitioned, in the context their own replica holds, and a certified attacker craft acts
//! with any context it likes; everything is then delivered everywhere. Checked:
//!
//! - every replica ends with the same verdict on every act, and a replica that received
//!   everything in the order it was made agrees, though some writes never reach anyone (they
//!   were superseded everywhere, so never sent again);
//! - no act of an honest writer waits for ever;
//! - verdicts move only forward: refused stays refused, masked stays masked;
//! - deny wins: no act of a principal is granted if a revocation it did not see, which had not
//!   seen the act, covers it; nothing that relied on there being no root survives a root that
//!   did not see it.
//!
//! The named tests below are the cases of the issue, each run in many delivery orders.

use std::collections::{BTreeMap, BTreeSet};

use confmesh::proto::{
    Dot, VClock, WriterId,
    trust::policy::{Act, Book, Deed, Denial, Principal, Right, Rule, covers},
};
use crdts::CmRDT;
use proptest::prelude::*;
use rand::{RngExt, SeedableRng, rngs::Xoshiro256PlusPlus, seq::SliceRandom};

/// What a replica made of an act.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Verdict {
    Granted,
    Masked,
    Refused,
}

type DotKey = (WriterId, u64);

fn key_of(dot: Dot) -> DotKey {
    (dot.actor, dot.counter)
}

/// One replica: the dots it has seen, the acts waiting for their context, the verdicts.
#[derive(Default)]
struct Replica {
    book: Book,
    seen: BTreeSet<DotKey>,
    contiguous: BTreeMap<WriterId, u64>,
    pending: BTreeMap<DotKey, Act>,
    verdicts: BTreeMap<DotKey, (Verdict, Act)>,
}

impl Replica {
    fn complete(&self, context: &VClock) -> bool {
        context
            .dots
            .iter()
            .all(|(w, &n)| self.book.held_through(*w) >= n)
    }

    /// The entries this replica holds without a gap, per writer: a context to act in.
    fn context(&self) -> VClock {
        self.book.context()
    }

    /// The version vector of what this replica has seen without a gap: a cutoff.
    fn clock(&self) -> VClock {
        let mut clock = VClock::new();
        for (&w, &n) in &self.contiguous {
            if n > 0 {
                clock.apply(Dot::new(w, n));
            }
        }
        clock
    }

    fn mark_seen(&mut self, dot: Dot) {
        self.seen.insert(key_of(dot));
        let mut next = self.contiguous.get(&dot.actor).copied().unwrap_or(0);
        while self.seen.contains(&(dot.actor, next + 1)) {
            next += 1;
        }
        self.contiguous.insert(dot.actor, next);
    }

    fn receive(&mut self, act: &Act) {
        let k = key_of(act.dot);
        if self.seen.contains(&k) || self.pending.contains_key(&k) {
            return;
        }
        self.pending.insert(k, act.clone());
        // Judge whatever has its context complete, until nothing more is.
        loop {
            let ready: Vec<DotKey> = self
                .pending
                .iter()
                .filter(|(_, a)| self.complete(&a.context))
                .map(|(k, _)| *k)
                .collect();
            if ready.is_empty() {
                break;
            }
            for k in ready {
                let Some(act) = self.pending.remove(&k) else {
                    continue;
                };
                self.judge(act);
            }
        }
    }

    fn judge(&mut self, act: Act) {
        let verdict = match self.book.admit(&act) {
            Err(_) => Verdict::Refused,
            Ok(()) if self.book.masked(&act).is_some() => Verdict::Masked,
            Ok(()) => Verdict::Granted,
        };
        let is_rule = matches!(act.deed, Deed::Rule(_));
        self.mark_seen(act.dot);
        self.verdicts
            .insert(key_of(act.dot), (verdict.clone(), act));
        if is_rule && verdict != Verdict::Refused {
            self.remask();
        }
    }

    /// Re-reads every mask after a policy entry arrived: granted acts may become masked,
    /// never the other way.
    fn remask(&mut self) {
        for (verdict, act) in self.verdicts.values_mut() {
            let masked = self.book.masked(act).is_some();
            match verdict {
                Verdict::Granted if masked => *verdict = Verdict::Masked,
                Verdict::Masked => assert!(masked, "an act was unmasked: {act:?}"),
                _ => {}
            }
        }
    }

    /// Every verdict, and `Deferred` for what still waits.
    fn outcome(&self) -> BTreeMap<DotKey, String> {
        let mut out: BTreeMap<DotKey, String> = self
            .verdicts
            .iter()
            .map(|(k, (v, _))| (*k, format!("{v:?}")))
            .collect();
        for k in self.pending.keys() {
            out.insert(*k, "Deferred".into());
        }
        out
    }

    fn verdict(&self, dot: Dot) -> Option<Verdict> {
        self.verdicts.get(&key_of(dot)).map(|(v, _)| v.clone())
    }
}

fn principal(text: &str) -> Principal {
    Principal::parse(text).expect("a valid principal")
}

fn clock(pairs: &[(u64, u64)]) -> VClock {
    let mut clock = VClock::new();
    for &(w, n) in pairs {
        clock.apply(Dot::new(WriterId(w), n));
    }
    clock
}

fn dot(w: u64, n: u64) -> Dot {
    Dot::new(WriterId(w), n)
}

fn node(w: u64) -> Principal {
    principal(&format!("node:n{w}"))
}

/// An act of the named cases, where a writer's entries are its first versions, so an entry's
/// position is its dot.
fn act(dot: Dot, author: Option<&str>, context: VClock, deed: Deed) -> Act {
    Act {
        dot,
        position: matches!(deed, Deed::Rule(_)).then_some(dot),
        node: node(dot.actor.0),
        author: author.map(principal),
        context,
        deed,
    }
}

fn write(key: &str) -> Deed {
    Deed::Write { key: key.into() }
}

fn root(cutoff: VClock) -> Deed {
    Deed::Rule(Rule::Root {
        admins: vec![principal("admin:root")],
        cutoff,
    })
}

fn grant(grantee: &str, right: Right, prefix: &str) -> Deed {
    Deed::Rule(Rule::Grant {
        grantee: principal(grantee),
        right,
        prefix: prefix.into(),
    })
}

/// A token entry: a principal made by an admin of every key.
fn token(n: u8) -> Deed {
    let hash = [n; 32];
    Deed::Rule(Rule::Token {
        id: confmesh::proto::trust::token::id_of(&hash),
        name: format!("t{n}"),
        hash,
        public: [0; 32],
        expires_ms: None,
    })
}

fn revoke(grantee: &str, right: Right, prefix: &str, cutoff: VClock) -> Deed {
    Deed::Rule(Rule::Revoke {
        grantee: principal(grantee),
        right,
        prefix: prefix.into(),
        cutoff,
    })
}

/// Delivers `acts` to `replicas` fresh replicas, each in its own order with duplicates, and
/// returns them after checking they agree with each other and with a replica that received
/// everything in the order given (the order the acts were made in).
fn deliver_everywhere(acts: &[Act], replicas: usize, rng: &mut Xoshiro256PlusPlus) -> Vec<Replica> {
    let mut oracle = Replica::default();
    for act in acts {
        oracle.receive(act);
    }
    let expected = oracle.outcome();
    let mut out = Vec::new();
    for _ in 0..replicas {
        let mut order: Vec<&Act> = acts.iter().collect();
        let extra: Vec<&Act> = (0..acts.len() / 2 + 1)
            .filter_map(|_| acts.get(rng.random_range(0..acts.len())))
            .collect();
        order.extend(extra);
        order.shuffle(rng);
        let mut replica = Replica::default();
        for act in order {
            replica.receive(act);
        }
        assert_eq!(
            replica.outcome(),
            expected,
            "a delivery order changed a verdict"
        );
        out.push(replica);
    }
    out
}

/// Runs a named case in 200 delivery orders; `check` reads the verdicts of one replica.
fn in_every_order(acts: &[Act], check: impl Fn(&Replica)) {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
    for replica in deliver_everywhere(acts, 200, &mut rng) {
        check(&replica);
    }
}

// Writers in the named cases: 1 hosts the root admin, 2 and 3 are honest nodes, 9 is the
// attacker (a certified node that crafts its acts by hand).

#[test]
fn a_node_granted_only_billing_cannot_write_payments() {
    let r = act(dot(1, 1), Some("admin:root"), clock(&[]), root(clock(&[])));
    let g = act(
        dot(1, 2),
        Some("admin:root"),
        clock(&[(1, 1)]),
        grant("node:n9", Right::Write, "billing/"),
    );
    let pay = act(dot(9, 1), None, clock(&[(1, 2)]), write("payments/x"));
    // A context names entries only: never a write (9.1).
    let bill = act(dot(9, 2), None, clock(&[(1, 2)]), write("billing/x"));
    // Without a context naming the root, it relies on there being none: masked by the root.
    let stale = act(dot(9, 3), None, clock(&[]), write("payments/y"));
    in_every_order(
        &[r, g, pay.clone(), bill.clone(), stale.clone()],
        |replica| {
            assert_eq!(replica.verdict(pay.dot), Some(Verdict::Refused));
            assert_eq!(replica.verdict(bill.dot), Some(Verdict::Granted));
            assert_eq!(replica.verdict(stale.dot), Some(Verdict::Masked));
        },
    );
    let book_denial = {
        let mut replica = Replica::default();
        for a in [
            act(dot(1, 1), Some("admin:root"), clock(&[]), root(clock(&[]))),
            act(
                dot(1, 2),
                Some("admin:root"),
                clock(&[(1, 1)]),
                grant("node:n9", Right::Write, "billing/"),
            ),
        ] {
            replica.receive(&a);
        }
        replica.book.judge(&pay)
    };
    assert_eq!(
        book_denial,
        Err(Denial::NotGranted {
            principal: node(9),
            right: Right::Write,
            key: "payments/x".into()
        }),
        "the refusal names the missing grant"
    );
}

#[test]
fn a_revoked_principals_write_in_a_partition_is_masked_after_the_heal() {
    // The root grants token:t1 write everywhere; then a partition: node 2 writes as t1, and
    // on the other side the admin revokes t1 without having seen that write.
    let r = act(dot(1, 1), Some("admin:root"), clock(&[]), root(clock(&[])));
    let g = act(
        dot(1, 2),
        Some("admin:root"),
        clock(&[(1, 1)]),
        grant("token:t1", Right::Write, ""),
    );
    let nodes = act(
        dot(1, 3),
        Some("admin:root"),
        clock(&[(1, 2)]),
        grant("node:*", Right::Write, ""),
    );
    let before = act(
        dot(2, 1),
        Some("token:t1"),
        clock(&[(1, 3)]),
        write("app/a"),
    );
    let during = act(
        dot(2, 2),
        Some("token:t1"),
        clock(&[(1, 3)]),
        write("app/b"),
    );
    // Its cutoff, a version vector, names the write it saw; its context, entries only.
    let rev = act(
        dot(1, 4),
        Some("admin:root"),
        clock(&[(1, 3)]),
        revoke("token:t1", Right::Read, "", clock(&[(1, 3), (2, 1)])),
    );
    // Node 2's side accepted the write before the revocation reached it.
    let mut side = Replica::default();
    for a in [&r, &g, &nodes, &before, &during] {
        side.receive(a);
    }
    assert_eq!(side.verdict(during.dot), Some(Verdict::Granted));
    side.receive(&rev);
    assert_eq!(
        side.verdict(during.dot),
        Some(Verdict::Masked),
        "masked at the heal"
    );
    in_every_order(
        &[r, g, nodes, before.clone(), during.clone(), rev],
        |replica| {
            assert_eq!(
                replica.verdict(before.dot),
                Some(Verdict::Granted),
                "the revoker saw it"
            );
            assert_eq!(replica.verdict(during.dot), Some(Verdict::Masked));
        },
    );
}

#[test]
fn a_grant_concurrent_with_a_revocation_loses() {
    // Two admins: root, and token:ops with admin over team/. Concurrently, root grants t1
    // write over team/ and ops revokes t1's write there.
    let r = act(dot(1, 1), Some("admin:root"), clock(&[]), root(clock(&[])));
    let ops = act(
        dot(1, 2),
        Some("admin:root"),
        clock(&[(1, 1)]),
        grant("token:ops", Right::Admin, "team/"),
    );
    let nodes = act(
        dot(4, 1),
        Some("admin:root"),
        clock(&[(1, 1)]),
        grant("node:*", Right::Write, ""),
    );
    let g = act(
        dot(1, 3),
        Some("admin:root"),
        clock(&[(1, 2)]),
        grant("token:t1", Right::Write, "team/"),
    );
    let rev = act(
        dot(2, 1),
        Some("token:ops"),
        clock(&[(1, 2)]),
        revoke("token:t1", Right::Write, "team/", clock(&[(1, 2)])),
    );
    // t1 writes through node 3, having seen the grant only.
    let w = act(
        dot(3, 1),
        Some("token:t1"),
        clock(&[(1, 3), (4, 1)]),
        write("team/x"),
    );
    // A grant made after seeing the revocation restores the right.
    let again = act(
        dot(1, 4),
        Some("admin:root"),
        clock(&[(1, 3), (2, 1)]),
        grant("token:t1", Right::Write, "team/"),
    );
    let later = act(
        dot(3, 2),
        Some("token:t1"),
        clock(&[(1, 4), (2, 1), (4, 1)]),
        write("team/y"),
    );
    in_every_order(
        &[r, ops, nodes, g, rev, w.clone(), again, later.clone()],
        |replica| {
            assert_eq!(replica.verdict(w.dot), Some(Verdict::Masked), "revoke wins");
            assert_eq!(
                replica.verdict(later.dot),
                Some(Verdict::Granted),
                "re-granted"
            );
        },
    );
}

#[test]
fn a_stale_context_does_not_escape_a_revocation() {
    let r = act(dot(1, 1), Some("admin:root"), clock(&[]), root(clock(&[])));
    let g = act(
        dot(1, 2),
        Some("admin:root"),
        clock(&[(1, 1)]),
        grant("node:n9", Right::Write, "billing/"),
    );
    let ok = act(dot(9, 1), None, clock(&[(1, 2)]), write("billing/a"));
    let rev = act(
        dot(1, 3),
        Some("admin:root"),
        clock(&[(1, 2)]),
        revoke("node:n9", Right::Read, "", clock(&[(1, 2), (9, 1)])),
    );
    // The revoked node claims it never saw the revocation, or even the root.
    let stale = act(dot(9, 2), None, clock(&[(1, 2)]), write("billing/b"));
    let no_root = act(dot(9, 3), None, clock(&[]), write("billing/c"));
    // And a context naming entries that do not exist: it waits, everywhere, for ever.
    let future = act(dot(9, 4), None, clock(&[(1, 99)]), write("billing/d"));
    in_every_order(
        &[
            r,
            g,
            ok.clone(),
            rev,
            stale.clone(),
            no_root.clone(),
            future.clone(),
        ],
        |replica| {
            assert_eq!(replica.verdict(ok.dot), Some(Verdict::Granted));
            assert_eq!(replica.verdict(stale.dot), Some(Verdict::Masked));
            assert_eq!(replica.verdict(no_root.dot), Some(Verdict::Masked));
            assert!(replica.pending.contains_key(&key_of(future.dot)));
        },
    );
}

#[test]
fn the_root_masks_what_relied_on_no_root_and_was_not_seen() {
    let seen = act(dot(2, 1), None, clock(&[]), write("app/a"));
    let r = act(
        dot(1, 1),
        Some("admin:root"),
        clock(&[]),
        root(clock(&[(2, 1)])),
    );
    let unseen = act(dot(3, 1), None, clock(&[]), write("app/b"));
    // After the root, nothing is allowed that no grant allows.
    let after = act(dot(2, 2), None, clock(&[(1, 1)]), write("app/c"));
    // A second root, made by someone who saw the first, is refused; one by a node, too.
    let second = act(
        dot(1, 2),
        Some("admin:root"),
        clock(&[(1, 1)]),
        root(clock(&[])),
    );
    let by_token = act(
        dot(3, 2),
        Some("token:t1"),
        clock(&[]),
        Deed::Rule(Rule::Root {
            admins: vec![principal("token:t1")],
            cutoff: clock(&[]),
        }),
    );
    // No rule counts before a root: nobody is an admin yet.
    let early_grant = act(
        dot(4, 1),
        Some("admin:root"),
        clock(&[]),
        grant("node:n4", Right::Write, ""),
    );
    in_every_order(
        &[
            seen.clone(),
            r,
            unseen.clone(),
            after.clone(),
            second.clone(),
            by_token.clone(),
            early_grant.clone(),
        ],
        |replica| {
            assert_eq!(replica.verdict(seen.dot), Some(Verdict::Granted));
            assert_eq!(replica.verdict(unseen.dot), Some(Verdict::Masked));
            assert_eq!(replica.verdict(after.dot), Some(Verdict::Refused));
            assert_eq!(replica.verdict(second.dot), Some(Verdict::Refused));
            assert_eq!(replica.verdict(by_token.dot), Some(Verdict::Refused));
            assert_eq!(replica.verdict(early_grant.dot), Some(Verdict::Refused));
            assert!(replica.book.rooted());
        },
    );
}

#[test]
fn revoking_an_admin_undoes_its_later_grants_and_only_where_revoked() {
    let r = act(dot(1, 1), Some("admin:root"), clock(&[]), root(clock(&[])));
    let ops = act(
        dot(1, 2),
        Some("admin:root"),
        clock(&[(1, 1)]),
        grant("token:ops", Right::Admin, "billing/"),
    );
    // ops grants node 3 write over billing/ before and after its admin is narrowed.
    let early = act(
        dot(2, 1),
        Some("token:ops"),
        clock(&[(1, 2)]),
        grant("node:n3", Right::Write, "billing/"),
    );
    let rev = act(
        dot(1, 3),
        Some("admin:root"),
        clock(&[(1, 2), (2, 1)]),
        revoke(
            "token:ops",
            Right::Admin,
            "billing/eu/",
            clock(&[(1, 2), (2, 1)]),
        ),
    );
    let late = act(
        dot(2, 2),
        Some("token:ops"),
        clock(&[(1, 2), (2, 1)]),
        grant("node:n4", Right::Write, "billing/"),
    );
    let n3_eu = act(
        dot(3, 1),
        None,
        clock(&[(1, 3), (2, 1)]),
        write("billing/eu/x"),
    );
    let n4_us = act(
        dot(4, 1),
        None,
        clock(&[(1, 3), (2, 2)]),
        write("billing/us/x"),
    );
    let n4_eu = act(
        dot(4, 2),
        None,
        clock(&[(1, 3), (2, 2)]),
        write("billing/eu/x"),
    );
    in_every_order(
        &[
            r,
            ops,
            early,
            rev,
            late,
            n3_eu.clone(),
            n4_us.clone(),
            n4_eu.clone(),
        ],
        |replica| {
            assert_eq!(
                replica.verdict(n3_eu.dot),
                Some(Verdict::Granted),
                "granted before"
            );
            assert_eq!(
                replica.verdict(n4_us.dot),
                Some(Verdict::Granted),
                "outside"
            );
            assert_eq!(replica.verdict(n4_eu.dot), Some(Verdict::Refused), "inside");
        },
    );
}

#[test]
fn a_write_needs_both_its_node_and_its_author() {
    let r = act(dot(1, 1), Some("admin:root"), clock(&[]), root(clock(&[])));
    let g_node = act(
        dot(1, 2),
        Some("admin:root"),
        clock(&[(1, 1)]),
        grant("node:*", Right::Write, "app/"),
    );
    let g_token = act(
        dot(1, 3),
        Some("admin:root"),
        clock(&[(1, 2)]),
        grant("token:t1", Right::Write, "app/a/"),
    );
    let ok = act(
        dot(2, 1),
        Some("token:t1"),
        clock(&[(1, 3)]),
        write("app/a/x"),
    );
    let token_lacks = act(
        dot(2, 2),
        Some("token:t1"),
        clock(&[(1, 3)]),
        write("app/b/x"),
    );
    let node_lacks = act(
        dot(2, 3),
        Some("token:t1"),
        clock(&[(1, 3)]),
        write("other/x"),
    );
    in_every_order(
        &[
            r,
            g_node,
            g_token,
            ok.clone(),
            token_lacks.clone(),
            node_lacks.clone(),
        ],
        |replica| {
            assert_eq!(replica.verdict(ok.dot), Some(Verdict::Granted));
            assert_eq!(replica.verdict(token_lacks.dot), Some(Verdict::Refused));
            assert_eq!(replica.verdict(node_lacks.dot), Some(Verdict::Refused));
        },
    );
}

// The random model.

const KEYS: [&str; 6] = [
    "billing/x",
    "billing/eu/x",
    "payments/x",
    "team/a/k",
    "team/b/k",
    "misc",
];
const PREFIXES: [&str; 6] = [
    "",
    "billing/",
    "billing/eu/",
    "payments/",
    "team/",
    "team/a/",
];
const GRANTEES: [&str; 7] = [
    "node:n2",
    "node:n3",
    "node:n9",
    "node:*",
    "token:t1",
    "token:ops",
    "token:*",
];
const RIGHTS: [Right; 3] = [Right::Read, Right::Write, Right::Admin];

/// Writer 1 hosts admin:root and token:ops, writers 2 and 3 are honest nodes (3 writes for
/// token:t1), writer 9 the attacker.
const WRITERS: [u64; 4] = [1, 2, 3, 9];

fn pick<T: Copy>(rng: &mut Xoshiro256PlusPlus, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

/// What writer `w` makes next as its version `n`, in the context its replica holds (the
/// attacker: any context, at any position); `entries` is how many entries it made before.
/// An honest writer makes only entries granted in its own context, as a node checks before it
/// writes one (so its positions have no gap).
fn make(w: u64, n: u64, entries: u64, replica: &Replica, rng: &mut Xoshiro256PlusPlus) -> Act {
    let mut context = replica.context();
    let mut position = entries + 1;
    if w == 9 {
        match rng.random_range(0..4) {
            0 => context = clock(&[]),
            1 => {
                // Some writers forgotten.
                let dots: Vec<(WriterId, u64)> =
                    context.dots.iter().map(|(a, b)| (*a, *b)).collect();
                context = VClock::new();
                for (a, b) in dots {
                    if rng.random_bool(0.5) {
                        context.apply(Dot::new(a, rng.random_range(1..=b)));
                    }
                }
            }
            2 => context.apply(Dot::new(
                WriterId(pick(rng, &WRITERS)),
                1 + rng.random_range(0..40),
            )),
            _ => {}
        }
        match rng.random_range(0..6) {
            // A position taken, or one past a gap.
            0 => position = rng.random_range(1..=position),
            1 => position += rng.random_range(1..3),
            _ => {}
        }
        // An entry's own writer: never at or beyond its own position (it would wait for
        // itself).
        let mut own = VClock::new();
        for (a, b) in context.dots.iter() {
            let b = if *a == WriterId(w) {
                (*b).min(position - 1)
            } else {
                *b
            };
            if b > 0 {
                own.apply(Dot::new(*a, b));
            }
        }
        context = own;
    }
    let cutoff = replica.clock();
    let author = match w {
        1 => Some(pick(rng, &["admin:root", "token:ops"])),
        3 => rng.random_bool(0.5).then_some("token:t1"),
        9 => rng.random_bool(0.3).then_some("token:t1"),
        _ => None,
    };
    let deed = match rng.random_range(0..10) {
        0 if w == 1 => root(cutoff),
        1..=3 if w == 1 || w == 9 => grant(
            pick(rng, &GRANTEES),
            pick(rng, &RIGHTS),
            pick(rng, &PREFIXES),
        ),
        4 | 5 if w == 1 || w == 9 => revoke(
            pick(rng, &GRANTEES),
            pick(rng, &RIGHTS),
            pick(rng, &PREFIXES),
            cutoff,
        ),
        6 if w == 1 || w == 9 => token(rng.random_range(0..4)),
        _ => write(pick(rng, &KEYS)),
    };
    let is_rule = matches!(deed, Deed::Rule(_));
    let act = Act {
        dot: dot(w, n),
        position: is_rule.then_some(dot(w, position)),
        node: node(w),
        author: author.map(principal),
        context,
        deed,
    };
    if is_rule && w != 9 && replica.book.judge(&act).is_err() {
        return Act {
            position: None,
            deed: write(pick(rng, &KEYS)),
            ..act
        };
    }
    act
}

/// Runs one random history: rounds of acts and gossip inside groups (partitions, a node
/// offline), then everything delivered everywhere. Returns every act made.
fn history(seed: u64) -> Vec<Act> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut replicas: BTreeMap<u64, Replica> =
        WRITERS.iter().map(|&w| (w, Replica::default())).collect();
    let mut next: BTreeMap<u64, u64> = WRITERS.iter().map(|&w| (w, 1)).collect();
    let mut entries: BTreeMap<u64, u64> = BTreeMap::new();
    let mut made: Vec<Act> = Vec::new();
    // The root comes first in most histories; sometimes later, sometimes twice.
    for round in 0..rng.random_range(4..10) {
        // Split the writers into groups that hear only each other this round.
        let mut groups: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        let splits = rng.random_range(1..=3u64);
        for &w in &WRITERS {
            groups
                .entry(rng.random_range(0..splits))
                .or_default()
                .push(w);
        }
        for _ in 0..rng.random_range(1..6) {
            let w = pick(&mut rng, &WRITERS);
            let n = next[&w];
            let made_entries = entries.get(&w).copied().unwrap_or(0);
            let act = if round == 0 && w == 1 && n == 1 && rng.random_bool(0.7) {
                Act {
                    dot: dot(1, 1),
                    position: Some(dot(1, 1)),
                    node: node(1),
                    author: Some(principal("admin:root")),
                    deed: root(replicas[&1].clock()),
                    context: replicas[&1].context(),
                }
            } else {
                make(w, n, made_entries, &replicas[&w], &mut rng)
            };
            next.insert(w, n + 1);
            if let Some(position) = act.position {
                entries.insert(w, made_entries.max(position.counter));
            }
            if let Some(replica) = replicas.get_mut(&w) {
                replica.receive(&act);
            }
            made.push(act);
            // Gossip inside each group.
            for members in groups.values() {
                for &to in members {
                    for _ in 0..rng.random_range(0..4) {
                        let Some(a) = made.get(rng.random_range(0..made.len())) else {
                            continue;
                        };
                        if members.contains(&a.dot.actor.0)
                            && let Some(replica) = replicas.get_mut(&to)
                        {
                            replica.receive(a);
                        }
                    }
                }
            }
        }
    }
    made
}

fn check_history(seed: u64) {
    let mut acts = history(seed);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x5eed);
    // Some writes are superseded everywhere before they reach the other replicas, and so are
    // never sent again: nothing may wait for them. Entries are never superseded.
    acts.retain(|a| matches!(a.deed, Deed::Rule(_)) || !rng.random_bool(0.2));
    let replicas = deliver_everywhere(&acts, 4, &mut rng);
    let Some(replica) = replicas.first() else {
        return;
    };
    // Nothing an honest writer made waits for ever: its context names only entries it held.
    for waiting in replica.pending.values() {
        assert_eq!(
            waiting.dot.actor,
            WriterId(9),
            "seed {seed}: an honest act waits for ever: {waiting:?}"
        );
    }
    // Deny wins, stated without the book: a revocation (granted) of write or less that had not
    // seen an act leaves the act granted only if the grant it relied on saw the revocation,
    // so the act saw it too.
    let revocations: Vec<&Act> = replica
        .verdicts
        .values()
        .filter(|(v, a)| {
            *v != Verdict::Refused && matches!(a.deed, Deed::Rule(Rule::Revoke { .. }))
        })
        .map(|(_, a)| a)
        .collect();
    let roots: Vec<&Act> = replica
        .verdicts
        .values()
        .filter(|(v, a)| *v != Verdict::Refused && matches!(a.deed, Deed::Rule(Rule::Root { .. })))
        .map(|(_, a)| a)
        .collect();
    for (verdict, act) in replica.verdicts.values() {
        if *verdict != Verdict::Granted {
            continue;
        }
        let Deed::Write { key } = &act.deed else {
            continue;
        };
        for rev in &revocations {
            let Deed::Rule(Rule::Revoke {
                grantee,
                right,
                prefix,
                cutoff,
            }) = &rev.deed
            else {
                continue;
            };
            // Revoking `admin` leaves `write`; revoking `write` or `read` takes it.
            let takes_write = *right <= Right::Write;
            let hits = grantee.matches(&act.node)
                || act.author.as_ref().is_some_and(|a| grantee.matches(a));
            if hits && takes_write && key.starts_with(prefix.as_str()) && !covers(cutoff, act.dot) {
                assert!(
                    rev.position.is_some_and(|p| act.saw(p)),
                    "seed {seed}: {act:?} granted though revoked by {rev:?}, unseen"
                );
            }
        }
        for root in &roots {
            let Deed::Rule(Rule::Root { cutoff, .. }) = &root.deed else {
                continue;
            };
            let rootless = !roots.iter().any(|r| r.position.is_some_and(|p| act.saw(p)));
            assert!(
                !rootless || covers(cutoff, act.dot),
                "seed {seed}: {act:?} relied on no root and survived {root:?}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Every replica reaches the same verdicts in any delivery order, after partitions, and
    /// deny wins.
    #[test]
    fn verdicts_agree_in_every_order_and_deny_wins(seed in any::<u64>()) {
        check_history(seed);
    }
}

#[test]
fn the_random_model_makes_every_kind_of_verdict() {
    // The model is worth running only if its histories reach each outcome.
    let mut seen = BTreeSet::new();
    for seed in 0..64 {
        let acts = history(seed);
        let mut replica = Replica::default();
        for act in &acts {
            replica.receive(act);
        }
        for (verdict, act) in replica.verdicts.values() {
            let kind = match &act.deed {
                Deed::Write { .. } => "write",
                Deed::Rule(Rule::Root { .. }) => "root",
                Deed::Rule(Rule::Grant { .. }) => "grant",
                Deed::Rule(Rule::Revoke { .. }) => "revoke",
                Deed::Rule(Rule::Keyring { .. }) => "keyring",
                Deed::Rule(Rule::Token { .. }) => "token",
            };
            seen.insert(format!("{kind} {verdict:?}"));
        }
    }
    for expected in [
        "write Granted",
        "write Masked",
        "write Refused",
        "grant Granted",
        "grant Refused",
        "revoke Granted",
        "root Granted",
        "token Granted",
        "token Refused",
    ] {
        assert!(
            seen.contains(expected),
            "no {expected} in 64 histories: {seen:?}"
        );
    }
}
