//! Rotating the cluster CA (docs/PROTOCOL.md §8.8) with real nodes on 127.0.0.1:
//!
//! 1. two nodes of the old CA write;
//! 2. every node trusts a bundle of the old and the new CA, and a node with a certificate of
//!    the new CA joins and writes;
//! 3. every node moves to a certificate of the new CA, trusts only it, and keeps the old one as
//!    retired: a node of the old CA can no longer join, and a fresh node of the new CA catches
//!    up on everything, the versions of writers the old CA's certificates endorsed included
//!    (without the retired CA, those never verify there).
//!
//! Every wait is bounded.

#![cfg(feature = "runtime")]

use std::{path::Path, time::Duration};

use confmesh::runtime::{
    MemberState, Mesh,
    tls::{DevCa, TlsConfig},
};

mod common;
use common::{eventually, value_everywhere};

/// A node's TLS: a certificate `ca` issues for `name`, trusting `trusted` (PEM, maybe a
/// bundle), with `retired` CAs if any.
fn tls(ca: &DevCa, name: &str, trusted: &str, retired: Option<&str>) -> TlsConfig {
    let issued = ca.issue(name).expect("issue");
    let tls = TlsConfig::from_pem(
        trusted.as_bytes(),
        issued.chain_pem.as_bytes(),
        issued.key_pem.as_bytes(),
    )
    .expect("tls");
    match retired {
        Some(pem) => tls.with_retired_ca(pem.as_bytes()).expect("retired"),
        None => tls,
    }
}

async fn start(tls: TlsConfig, dir: Option<&Path>, seed: Option<&Mesh>) -> Mesh {
    let mut builder = Mesh::builder().tls(tls).expected_members(4);
    if let Some(dir) = dir {
        builder = builder.data_dir(dir);
    }
    if let Some(seed) = seed {
        builder = builder.seeds([seed.id().addr.to_string()]);
    }
    builder.start().await.expect("start")
}

async fn alive(node: &Mesh) -> usize {
    node.members().await.map_or(0, |members| {
        members
            .iter()
            .filter(|m| m.state == MemberState::Alive)
            .count()
    })
}

async fn all_see(nodes: &[&Mesh], n: usize) -> bool {
    eventually(Duration::from_secs(20), || async move {
        for node in nodes {
            if alive(node).await != n {
                return false;
            }
        }
        true
    })
    .await
}

async fn has(node: &Mesh, key: &str, value: &[u8]) -> bool {
    node.get(key)
        .await
        .ok()
        .flatten()
        .and_then(|v| v.payload.value().map(|b| b.to_vec()))
        .is_some_and(|b| b == value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_rotation_keeps_every_version_verifiable_and_shuts_out_the_old_ca() {
    let old = DevCa::generate("old CA").expect("CA");
    let new = DevCa::generate("new CA").expect("CA");
    let (old_pem, new_pem) = (old.cert_pem(), new.cert_pem());
    let bundle = format!("{old_pem}{new_pem}");
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let dir = |i: usize| Some(dirs[i].path());

    // 1. The old CA only.
    let a = start(tls(&old, "a", &old_pem, None), dir(0), None).await;
    let b = start(tls(&old, "b", &old_pem, None), dir(1), Some(&a)).await;
    a.put("app/before", "old ca").await.expect("put");
    assert!(all_see(&[&a, &b], 2).await, "the old cluster formed");
    let written = eventually(Duration::from_secs(20), || {
        let (a, b) = (&a, &b);
        async move { value_everywhere(&[a.clone(), b.clone()], "app/before", b"old ca").await }
    })
    .await;
    assert!(written, "the first write spread");

    // 2. Both CAs trusted everywhere; a node of the new CA joins and writes.
    a.shutdown().await;
    b.shutdown().await;
    let a = start(tls(&old, "a", &bundle, None), dir(0), None).await;
    let b = start(tls(&old, "b", &bundle, None), dir(1), Some(&a)).await;
    let c = start(tls(&new, "c", &bundle, None), dir(2), Some(&a)).await;
    assert!(
        all_see(&[&a, &b, &c], 3).await,
        "old and new certificates mix"
    );
    c.put("app/during", "new ca").await.expect("put");
    let both = eventually(Duration::from_secs(20), || {
        let nodes = [a.clone(), b.clone(), c.clone()];
        async move {
            value_everywhere(&nodes, "app/before", b"old ca").await
                && value_everywhere(&nodes, "app/during", b"new ca").await
        }
    })
    .await;
    assert!(both, "every write reached every node during the rotation");

    // 3. New certificates everywhere, the new CA trusted, the old one retired.
    for node in [a, b, c] {
        node.shutdown().await;
    }
    let a = start(tls(&new, "a", &new_pem, Some(&old_pem)), dir(0), None).await;
    let b = start(tls(&new, "b", &new_pem, Some(&old_pem)), dir(1), Some(&a)).await;
    let c = start(tls(&new, "c", &new_pem, Some(&old_pem)), dir(2), Some(&a)).await;
    assert!(all_see(&[&a, &b, &c], 3).await, "the new cluster formed");
    assert!(has(&a, "app/before", b"old ca").await && has(&c, "app/before", b"old ca").await);

    // A node still on a certificate of the old CA is shut out.
    let stale = start(tls(&old, "stale", &bundle, None), None, Some(&a)).await;
    let joined = eventually(Duration::from_secs(5), || async { alive(&a).await > 3 }).await;
    assert!(!joined, "a certificate of the retired CA was let in");
    stale.shutdown().await;

    // A fresh node of the new CA catches up on everything, the old writers' versions too.
    let fresh = start(tls(&new, "d", &new_pem, Some(&old_pem)), None, Some(&a)).await;
    let caught_up = eventually(Duration::from_secs(20), || {
        let fresh = &fresh;
        async move {
            has(fresh, "app/before", b"old ca").await && has(fresh, "app/during", b"new ca").await
        }
    })
    .await;
    assert!(
        caught_up,
        "a fresh node did not verify the versions of before the rotation"
    );

    // Without the retired CA, the old writers' endorsements do not verify there: their
    // versions never arrive, while the new CA's writer's do.
    let forgetful = start(tls(&new, "e", &new_pem, None), None, Some(&b)).await;
    let new_arrived = eventually(Duration::from_secs(20), || {
        let forgetful = &forgetful;
        async move { has(forgetful, "app/during", b"new ca").await }
    })
    .await;
    assert!(
        new_arrived,
        "the new CA's writer verifies without the retired CA"
    );
    assert!(
        !has(&forgetful, "app/before", b"old ca").await,
        "an endorsement of the retired CA verified without it"
    );
    for node in [a, b, c, fresh, forgetful] {
        node.shutdown().await;
    }
}
