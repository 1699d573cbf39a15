//! Trust II's grant rule (`proto::trust::policy`, docs/PROTOCOL.md §8), measured before the
//! runtime carries it: the time to judge one write in its context and to read whether it is
//! masked, against policies of 10 to 10,000 entries.
//!
//! The policy: a root, then per team `i` a delegated admin (`token:admin-i`, admin over
//! `team-i/`) that grants its node write there, and a revocation for every tenth team. The
//! write judged is a granted one in the middle of the list. Before `Book` indexed its
//! entries by principal, the rule scanned the whole policy for each grant in the chain; now
//! it reads the entries naming the principals involved (BENCHMARKS.md has both).
//!
//! Run: `cargo bench --bench policy`. Names are `policy/judge|masked/<entries>`.
#![allow(missing_docs, reason = "criterion macros generate undocumented items")]

use std::hint::black_box;

use confmesh::proto::{
    Dot, VClock, WriterId,
    trust::policy::{Act, Book, Deed, Principal, Right, Rule},
};
use crdts::CmRDT;
use criterion::{Criterion, criterion_group, criterion_main};

fn principal(text: &str) -> Principal {
    Principal::parse(text).expect("principal")
}

/// The admin's writer is 1; every entry is its next dot and position, in a context of all
/// before it.
struct Policy {
    book: Book,
    next: u64,
}

impl Policy {
    fn context(&self) -> VClock {
        let mut clock = VClock::new();
        if self.next > 1 {
            clock.apply(Dot::new(WriterId(1), self.next - 1));
        }
        clock
    }

    fn add(&mut self, author: &str, rule: Rule) {
        let act = Act {
            dot: Dot::new(WriterId(1), self.next),
            position: Some(Dot::new(WriterId(1), self.next)),
            node: principal("node:admin"),
            author: Some(principal(author)),
            context: self.context(),
            deed: Deed::Rule(rule),
        };
        self.book.admit(&act).expect("granted");
        self.next += 1;
    }
}

/// A policy of about `entries` entries (three per team) and a write it grants.
fn policy(entries: usize) -> (Book, Act) {
    let mut p = Policy {
        book: Book::new(),
        next: 1,
    };
    let cutoff = VClock::new();
    p.add(
        "admin:root",
        Rule::Root {
            admins: vec![principal("admin:root")],
            cutoff: cutoff.clone(),
        },
    );
    let teams = (entries / 3).max(1);
    for i in 0..teams {
        p.add(
            "admin:root",
            Rule::Grant {
                grantee: principal(&format!("token:admin-{i}")),
                right: Right::Admin,
                prefix: format!("team-{i}/"),
            },
        );
        p.add(
            &format!("token:admin-{i}"),
            Rule::Grant {
                grantee: principal(&format!("node:n{i}")),
                right: Right::Write,
                prefix: format!("team-{i}/"),
            },
        );
        if i % 10 == 9 {
            p.add(
                "admin:root",
                Rule::Revoke {
                    grantee: principal(&format!("node:n{i}")),
                    right: Right::Write,
                    prefix: format!("team-{i}/"),
                    cutoff: p.context(),
                },
            );
        }
    }
    let team = teams / 2;
    let write = Act {
        dot: Dot::new(WriterId(2), 1),
        position: None,
        node: principal(&format!("node:n{team}")),
        author: None,
        context: p.context(),
        deed: Deed::Write {
            key: format!("team-{team}/config/x"),
        },
    };
    assert!(p.book.judge(&write).is_ok() && p.book.masked(&write).is_none());
    (p.book, write)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("policy");
    for entries in [10, 100, 1_000, 10_000] {
        let (book, write) = policy(entries);
        group.bench_function(format!("judge/{}", book.len()), |b| {
            b.iter(|| black_box(book.judge(black_box(&write))))
        });
        group.bench_function(format!("masked/{}", book.len()), |b| {
            b.iter(|| black_box(book.masked(black_box(&write))))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
