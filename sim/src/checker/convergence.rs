//! Convergence: every live node holds the same map.

use std::{collections::BTreeMap, fmt};

use confmesh::proto::{Key, Store, WriterId};

/// Checks that every live node's store has the same digest and the same winner for every key.
///
/// `stores` pairs each live node with its store. The map most nodes hold is the reference;
/// a failure names every node holding another and the first key where it differs.
pub fn check(stores: &[(usize, &Store)]) -> Result<(), Divergence> {
    let fingerprints: Vec<(usize, &Store, Fingerprint)> = stores
        .iter()
        .map(|&(i, store)| (i, store, fingerprint(store)))
        .collect();
    let mut counts: BTreeMap<&Fingerprint, usize> = BTreeMap::new();
    for (_, _, fp) in &fingerprints {
        *counts.entry(fp).or_default() += 1;
    }
    if counts.len() <= 1 {
        return Ok(());
    }
    // The most common map; of equally common ones, the greatest (as before the split).
    let Some(common) = counts.iter().max_by_key(|(_, c)| **c).map(|(fp, _)| *fp) else {
        return Ok(());
    };
    let majority = fingerprints
        .iter()
        .find(|(_, _, fp)| fp == common)
        .map(|&(i, store, _)| Holding::of(i, store));
    let odd = fingerprints
        .iter()
        .filter(|(_, _, fp)| fp != common)
        .map(|(i, store, fp)| Odd {
            holding: Holding::of(*i, store),
            first_difference: first_difference(&fp.1, &common.1),
        })
        .collect();
    Err(Divergence { majority, odd })
}

/// Live nodes holding a map other than the one most nodes hold.
#[derive(Clone, Debug)]
pub struct Divergence {
    /// A node holding the most common map.
    pub majority: Option<Holding>,
    /// Every node holding another map; never empty.
    pub odd: Vec<Odd>,
}

/// What one node's store holds, in counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holding {
    /// The node.
    pub node: usize,
    /// Versions in its digest (dots seen).
    pub dots: u64,
    /// Keys stored, tombstones included.
    pub keys: usize,
    /// Keys whose winner is a value, not a tombstone.
    pub live: usize,
}

/// A node outside the majority.
#[derive(Clone, Debug)]
pub struct Odd {
    /// What it holds.
    pub holding: Holding,
    /// The first key (in key order) whose winner differs from the majority's, or that one of
    /// them lacks; `None` if only the digests differ.
    pub first_difference: Option<Key>,
}

/// A store's digest fingerprint and the winner of every live key, in key order.
type Fingerprint = (u64, Vec<(Key, WriterId, u64)>);

fn fingerprint(store: &Store) -> Fingerprint {
    let winners = store
        .list("")
        .map(|v| (v.key.clone(), v.dot.actor, v.dot.counter))
        .collect();
    (store.digest().fingerprint(), winners)
}

/// The first key where two winner lists, both in key order, differ.
fn first_difference(a: &[(Key, WriterId, u64)], b: &[(Key, WriterId, u64)]) -> Option<Key> {
    let differ = a.iter().zip(b).find(|(x, y)| x != y);
    match differ {
        Some((x, y)) => Some(x.0.clone().min(y.0.clone())),
        None => a
            .get(b.len())
            .or_else(|| b.get(a.len()))
            .map(|w| w.0.clone()),
    }
}

impl Holding {
    fn of(node: usize, store: &Store) -> Holding {
        Holding {
            node,
            dots: store.digest().dot_count(),
            keys: store.key_count(),
            live: store.list("").count(),
        }
    }
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} live nodes hold a different map from the majority (",
            self.odd.len()
        )?;
        if let Some(majority) = &self.majority {
            write!(f, "{majority}")?;
        }
        f.write_str("): ")?;
        for (k, odd) in self.odd.iter().enumerate() {
            if k > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}", odd.holding)?;
            if let Some(key) = &odd.first_difference {
                write!(f, ", first differing key {key}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Holding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "node {}: {} dots, {} keys, {} live",
            self.node, self.dots, self.keys, self.live
        )
    }
}
