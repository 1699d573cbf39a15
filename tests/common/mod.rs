//! Helpers shared by the runtime tests: bounded waits and small clusters on 127.0.0.1.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test file uses some of the helpers"
)]

use std::time::Duration;

use confmesh::runtime::{Mesh, tls::DevCa};

/// Polls `check` every 50 ms until it holds or `limit` passes; returns whether it held.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

pub async fn start_cluster(ca: &DevCa, n: usize) -> Vec<Mesh> {
    let mut nodes: Vec<Mesh> = Vec::new();
    for i in 0..n {
        let mut builder = Mesh::builder()
            .tls(ca.node_config(&format!("node-{i}")).expect("cert"))
            .expected_members(n);
        if let Some(first) = nodes.first() {
            builder = builder.seeds([first.id().addr.to_string()]);
        }
        nodes.push(builder.start().await.expect("start"));
    }
    let all_joined = everyone_sees_everyone(&nodes).await;
    assert!(all_joined, "{n} nodes did not all see each other in 20 s");
    nodes
}

/// Waits (up to 20 s) until every node lists every other as an alive member.
pub async fn everyone_sees_everyone(nodes: &[Mesh]) -> bool {
    let n = nodes.len();
    eventually(Duration::from_secs(20), || async move {
        for node in nodes {
            let alive = node.members().await.map_or(0, |members| {
                members
                    .iter()
                    .filter(|m| m.state == confmesh::runtime::MemberState::Alive)
                    .count()
            });
            if alive != n {
                return false;
            }
        }
        true
    })
    .await
}

pub async fn value_everywhere(nodes: &[Mesh], key: &str, value: &[u8]) -> bool {
    for node in nodes {
        let got = node.get(key).await.expect("get");
        if got.as_ref().and_then(|v| v.payload.value()).map(|b| &b[..]) != Some(value) {
            return false;
        }
    }
    true
}
