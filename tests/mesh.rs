//! Real nodes on 127.0.0.1 through the public API: QUIC, mutual TLS, the node task.
//! Every wait is bounded; timing is never asserted beyond "within a generous deadline".

#![cfg(feature = "runtime")]

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use confmesh::runtime::{Mesh, tls::DevCa};

mod common;
use common::{eventually, everyone_sees_everyone, start_cluster, value_everywhere};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_node_reaches_all_five() {
    let ca = DevCa::generate("test cluster").expect("ca");
    let nodes = start_cluster(&ca, 5).await;
    nodes[3]
        .put("app/feature-x", &b"on"[..])
        .await
        .expect("put");
    assert!(
        eventually(Duration::from_secs(10), || value_everywhere(
            &nodes,
            "app/feature-x",
            b"on"
        ))
        .await,
        "the write did not reach every node"
    );
    // The wire counters see the QUIC traffic, and it is more than the protocol's own bytes
    // (headers, acknowledgements, TLS): a 5-byte value does not travel alone.
    let wire = nodes[3].wire_stats();
    let stats = nodes[3].stats().await.expect("stats");
    assert!(wire.connections >= 1, "{wire:?}");
    assert!(
        wire.udp_bytes_sent > stats.datagram_bytes_sent + stats.stream_bytes_sent,
        "{wire:?} {stats:?}"
    );
    assert!(wire.udp_bytes_received > 0, "{wire:?}");
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_converge_with_siblings_visible_everywhere() {
    let ca = DevCa::generate("test cluster").expect("ca");
    let nodes = start_cluster(&ca, 5).await;
    // Concurrent: issued together, before either can see the other.
    let (a, b) = tokio::join!(
        nodes[0].put("app/limit", &b"10"[..]),
        nodes[4].put("app/limit", &b"20"[..])
    );
    a.expect("put a");
    b.expect("put b");
    let converged = eventually(Duration::from_secs(10), || {
        let nodes = nodes.clone();
        async move {
            let mut seen = HashSet::new();
            for node in &nodes {
                let versions = node.get_versions("app/limit").await.expect("versions");
                if versions.len() != 2 {
                    return false;
                }
                seen.insert(versions.iter().map(|v| v.dot).collect::<Vec<_>>());
            }
            seen.len() == 1
        }
    })
    .await;
    assert!(
        converged,
        "nodes disagree on the winner or lack the sibling"
    );
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_certificate_from_another_ca_cannot_join_or_read() {
    let ca = DevCa::generate("test cluster").expect("ca");
    let nodes = start_cluster(&ca, 3).await;
    nodes[0]
        .put("secret/db-password", &b"hunter2"[..])
        .await
        .expect("put");
    let rogue_ca = DevCa::generate("rogue").expect("rogue ca");
    let rogue = Mesh::builder()
        .tls(rogue_ca.node_config("rogue").expect("cert"))
        .seeds([nodes[0].id().addr.to_string()])
        .start()
        .await
        .expect("start rogue");
    // Long enough for several announce attempts and anti-entropy rounds.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        rogue.members().await.expect("members").len(),
        1,
        "only itself"
    );
    assert!(
        rogue
            .get("secret/db-password")
            .await
            .expect("get")
            .is_none()
    );
    for node in &nodes {
        let members = node.members().await.expect("members");
        assert!(
            !members.iter().any(|m| m.id == rogue.id()),
            "{} admitted the rogue",
            node.id()
        );
    }
    rogue.shutdown().await;
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_injected_in_the_transport_heals_to_identical_state() {
    let ca = DevCa::generate("test cluster").expect("ca");
    let Splittable { nodes, cut, .. } = splittable(&ca, 4).await;

    *cut.lock().expect("lock") = true;
    nodes[0].put("app/a-side", &b"1"[..]).await.expect("put");
    nodes[3].put("app/b-side", &b"2"[..]).await.expect("put");
    nodes[1].put("app/both", &b"from-a"[..]).await.expect("put");
    nodes[2].put("app/both", &b"from-b"[..]).await.expect("put");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        nodes[3].get("app/a-side").await.expect("get").is_none(),
        "the cut leaked"
    );

    *cut.lock().expect("lock") = false;
    let healed = eventually(Duration::from_secs(30), || {
        let nodes = nodes.clone();
        async move {
            let mut states = HashSet::new();
            for node in &nodes {
                let all: Vec<_> = node
                    .list("app/")
                    .await
                    .expect("list")
                    .into_iter()
                    .map(|v| v.dot)
                    .collect();
                let both = node.get_versions("app/both").await.expect("versions").len();
                if all.len() != 3 || both != 2 {
                    return false;
                }
                states.insert(all);
            }
            states.len() == 1
        }
    })
    .await;
    assert!(healed, "the sides did not converge after the heal");
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_is_seen_as_a_leave_and_a_drop_as_a_failure() {
    use confmesh::proto::node::Event;
    let ca = DevCa::generate("test cluster").expect("ca");
    let mut nodes = start_cluster(&ca, 4).await;
    let mut events = nodes[0].subscribe();
    let crashed = nodes.pop().expect("node 3");
    let leaver = nodes.pop().expect("node 2");
    let (crashed_id, leaver_id) = (crashed.id(), leaver.id());
    leaver.shutdown().await;
    drop(crashed);
    let mut left = false;
    let mut down = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !(left && down) {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(Ok(Event::MemberLeft(id)))) if id == leaver_id => left = true,
            Ok(Some(Ok(Event::MemberDown(id)))) if id == crashed_id => down = true,
            Ok(Some(Ok(Event::MemberDown(id)))) if id == leaver_id => {
                panic!("the leave was seen as a failure")
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => panic!("events: {e}"),
            Ok(None) => panic!("node 0 stopped"),
            Err(_) => panic!("after 20 s: left={left} down={down}"),
        }
    }
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_if_refuses_a_stale_expectation_and_changes_nothing() {
    use confmesh::runtime::MeshError;
    let ca = DevCa::generate("test cluster").expect("ca");
    let nodes = start_cluster(&ca, 2).await;
    // Expecting absence works once.
    let first = nodes[0]
        .put_if("app/owner", &b"a"[..], None)
        .await
        .expect("absent, so it applies");
    match nodes[0].put_if("app/owner", &b"b"[..], None).await {
        Err(MeshError::Conflict { current }) => assert_eq!(current, Some(first.dot)),
        other => panic!("expected a conflict, got {other:?}"),
    }
    // The other node, once it has seen the first write, can build on it.
    assert!(
        eventually(Duration::from_secs(10), || value_everywhere(
            &nodes,
            "app/owner",
            b"a"
        ))
        .await
    );
    let second = nodes[1]
        .put_if("app/owner", &b"c"[..], Some(first.dot))
        .await
        .expect("expected the winner it saw");
    assert!(
        eventually(Duration::from_secs(10), || value_everywhere(
            &nodes,
            "app/owner",
            b"c"
        ))
        .await
    );
    match nodes[0]
        .put_if("app/owner", &b"d"[..], Some(first.dot))
        .await
    {
        Err(MeshError::Conflict { current }) => assert_eq!(current, Some(second.dot)),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        nodes[0]
            .get_versions("app/owner")
            .await
            .expect("versions")
            .len(),
        1
    );
    for node in nodes {
        node.shutdown().await;
    }
}

/// After a partition heals, each side hears that the other declared its members down; the
/// members that stayed in contact with each other must not see each other go down meanwhile
/// (docs/PROTOCOL.md §4, held downs). Six real nodes, split three and three in the transport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_in_contact_through_a_partition_are_not_reported_down_at_the_heal() {
    use confmesh::runtime::MemberState;

    let ca = DevCa::generate("test cluster").expect("ca");
    let Splittable {
        nodes,
        group_a,
        cut,
    } = splittable(&ca, 6).await;

    *cut.lock().expect("lock") = true;
    let split = eventually(Duration::from_secs(40), || {
        let nodes = nodes.clone();
        async move {
            for node in &nodes {
                let alive = node.members().await.map_or(0, |members| {
                    members
                        .iter()
                        .filter(|m| m.state == MemberState::Alive)
                        .count()
                });
                if alive != 3 {
                    return false;
                }
            }
            true
        }
    })
    .await;
    assert!(split, "the sides did not declare each other down");

    let mut watches: Vec<_> = nodes.iter().map(Mesh::watch_members).collect();
    *cut.lock().expect("lock") = false;
    assert!(
        everyone_sees_everyone(&nodes).await,
        "the sides did not rejoin"
    );
    // Late news of the split has time to arrive.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let side = |addr: SocketAddr| group_a.lock().expect("lock").contains(&addr);
    let mut flaps = Vec::new();
    for (node, watch) in nodes.iter().zip(&mut watches) {
        while let Ok(Some(change)) =
            tokio::time::timeout(Duration::from_millis(20), watch.next()).await
        {
            let member = change.expect("member change");
            if member.state == MemberState::Down && side(member.id.addr) == side(node.id().addr) {
                flaps.push((node.id(), member.id));
            }
        }
    }
    assert_eq!(
        flaps,
        Vec::new(),
        "(observer, member of its own side reported down)"
    );
    for node in nodes {
        node.shutdown().await;
    }
}

/// `n` joined nodes whose transport drops every message between the first half (`group_a`,
/// by address) and the rest while `cut` is set.
struct Splittable {
    nodes: Vec<Mesh>,
    group_a: Arc<Mutex<HashSet<SocketAddr>>>,
    cut: Arc<Mutex<bool>>,
}

async fn splittable(ca: &DevCa, n: usize) -> Splittable {
    // Groups by address, filled in once the nodes are bound.
    let group_a: Arc<Mutex<HashSet<SocketAddr>>> = Arc::default();
    let cut = Arc::new(Mutex::new(false));
    let hook = {
        let (group_a, cut) = (group_a.clone(), cut.clone());
        Arc::new(move |from: SocketAddr, to: SocketAddr| {
            let a = group_a.lock().expect("lock");
            *cut.lock().expect("lock") && (a.contains(&from) != a.contains(&to))
        })
    };
    let mut nodes: Vec<Mesh> = Vec::new();
    for i in 0..n {
        let mut builder = Mesh::builder()
            .tls(ca.node_config(&format!("node-{i}")).expect("cert"))
            .expected_members(n)
            .fault_hook(hook.clone());
        if let Some(first) = nodes.first() {
            builder = builder.seeds([first.id().addr.to_string()]);
        }
        nodes.push(builder.start().await.expect("start"));
    }
    group_a
        .lock()
        .expect("lock")
        .extend(nodes[..n / 2].iter().map(|node| node.id().addr));
    assert!(
        everyone_sees_everyone(&nodes).await,
        "the {n} nodes did not join"
    );
    Splittable {
        nodes,
        group_a,
        cut,
    }
}
