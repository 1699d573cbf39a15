//! The embedding API beyond put and get: watches with cursors, history and rollback, members
//! with names and tags, reserved keys, and a peer without a certificate. Real nodes on
//! 127.0.0.1; every wait is bounded.

#![cfg(feature = "runtime")]

use std::{collections::BTreeMap, time::Duration};

use confmesh::runtime::{
    Change, Cursor, Member, MemberState, Mesh, MeshError, Watch, WatchError, tls::DevCa,
};

mod common;
use common::{eventually, everyone_sees_everyone, start_cluster, value_everywhere};

/// The next `n` changes of `watch`, failing the test after 10 s.
async fn take(watch: &mut Watch, n: usize) -> Vec<Change> {
    let mut out = Vec::new();
    let collect = async {
        while out.len() < n {
            match watch.next().await {
                Some(Ok(change)) => out.push(change),
                Some(Err(e)) => panic!("watch failed: {e}"),
                None => panic!("watch ended"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), collect)
        .await
        .expect("changes did not arrive in 10 s");
    out
}

fn text(change: &Change) -> String {
    String::from_utf8_lossy(change.new_value().unwrap_or(b"<deleted>")).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_delivers_every_change_once_in_order_and_resumes_from_a_cursor() {
    let ca = DevCa::generate("test cluster").expect("ca");
    let nodes = start_cluster(&ca, 2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut local = a.watch("app/", None).expect("watch a");
    let mut remote = b.watch("app/", None).expect("watch b");

    for i in 1..=10 {
        a.put("app/x", format!("x{i}")).await.expect("put");
        a.put("other/y", format!("y{i}")).await.expect("put");
        a.put("app/z", format!("z{i}")).await.expect("put");
    }
    a.delete("app/z").await.expect("delete");

    // Locally every change is seen, exactly once, in write order; `other/` is not watched.
    let changes = take(&mut local, 21).await;
    let expected: Vec<String> = (1..=10)
        .flat_map(|i| [format!("x{i}"), format!("z{i}")])
        .chain(["<deleted>".to_string()])
        .collect();
    assert_eq!(changes.iter().map(text).collect::<Vec<_>>(), expected);
    assert!(changes.windows(2).all(|w| w[0].cursor < w[1].cursor));
    assert_eq!(changes[0].old, None);
    assert_eq!(changes[2].old_value(), Some(&b"x1"[..]));
    assert!(changes.iter().all(|c| c.origin == a.id().writer));

    // Remotely a version superseded in flight may never be the winner, but what is seen is
    // in order per key, once, and ends at the last write.
    let mut last: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let settled = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let change = remote.next().await.expect("open").expect("no error");
            last.entry(change.key.to_string())
                .or_default()
                .push(text(&change));
            let x_done = last.get("app/x").and_then(|v| v.last()).map(String::as_str);
            let z_done = last.get("app/z").and_then(|v| v.last()).map(String::as_str);
            if x_done == Some("x10") && z_done == Some("<deleted>") {
                break;
            }
        }
    })
    .await;
    assert!(settled.is_ok(), "remote watch saw {last:?}");
    let order = |v: &String| v.get(1..).and_then(|n| n.parse::<u32>().ok()).unwrap_or(99);
    for seen in last.values() {
        assert!(
            seen.windows(2).all(|w| order(&w[0]) < order(&w[1])),
            "out of order or repeated: {seen:?}"
        );
    }

    // Resume: from the cursor of the 10th change, the 11th onwards, then new ones.
    let cursor = changes[9].cursor;
    let text_form = cursor.to_string();
    assert_eq!(text_form.parse::<Cursor>().expect("parse"), cursor);
    drop(local);
    a.put("app/x", "x11").await.expect("put");
    let mut resumed = a.watch("app/", Some(cursor)).expect("resume");
    let again = take(&mut resumed, 12).await;
    assert_eq!(again[..11], changes[10..]);
    assert_eq!(text(&again[11]), "x11");

    // A cursor from another node's log is refused, not misread.
    let mut foreign = b.watch("app/", Some(cursor)).expect("watch");
    assert!(matches!(
        foreign.next().await,
        Some(Err(WatchError::UnknownCursor(_)))
    ));
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_older_than_the_log_gets_the_gap_error() {
    let ca = DevCa::generate("test cluster").expect("ca");
    let node = Mesh::builder()
        .tls(ca.node_config("n").expect("cert"))
        .watch_log_len(8)
        .start()
        .await
        .expect("start");
    let mut watch = node.watch("", None).expect("watch");
    node.put("k", "0").await.expect("put");
    let first = take(&mut watch, 1).await[0].cursor;
    for i in 1..20 {
        node.put("k", format!("{i}")).await.expect("put");
    }
    let mut late = node.watch("", Some(first)).expect("watch");
    match late.next().await {
        Some(Err(WatchError::Gap { cursor, oldest })) => {
            assert_eq!(cursor, first);
            assert!(oldest.is_some_and(|o| o > first));
        }
        other => panic!("expected the gap error, got {other:?}"),
    }
    assert!(late.next().await.is_none(), "a watch ends after its error");
    // A cursor still in the log resumes.
    let recent = take(&mut watch, 19).await;
    let mut fine = node.watch("", Some(recent[15].cursor)).expect("watch");
    assert_eq!(take(&mut fine, 3).await, recent[16..]);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_the_log_never_held_is_an_error_not_a_silent_skip() {
    let ca = DevCa::generate("test cluster").expect("ca");
    let node = Mesh::builder()
        .tls(ca.node_config("n").expect("cert"))
        .start()
        .await
        .expect("start");
    let mut watch = node.watch("", None).expect("watch");
    node.put("k", "0").await.expect("put");
    let head = take(&mut watch, 1).await[0].cursor;
    // What a client kept from a state of this node that a restored backup no longer holds.
    let text = head.to_string();
    let (log, seq) = text.split_once('.').expect("cursor");
    let ahead: Cursor = format!("{log}.{}", seq.parse::<u64>().expect("seq") + 5)
        .parse()
        .expect("cursor");
    let mut resumed = node.watch("", Some(ahead)).expect("watch");
    for i in 1..=10 {
        node.put("k", format!("{i}")).await.expect("put");
    }
    match resumed.next().await {
        Some(Err(WatchError::CursorLost { cursor })) => assert_eq!(cursor, ahead),
        other => panic!("expected the lost-cursor error, got {other:?}"),
    }
    assert!(
        resumed.next().await.is_none(),
        "a watch ends after its error"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_rollback_work_across_nodes() {
    let ca = DevCa::generate("test cluster").expect("ca");
    let nodes = start_cluster(&ca, 3).await;
    let mut dots = Vec::new();
    for value in ["red", "green", "blue"] {
        dots.push(nodes[0].put("ui/color", value).await.expect("put").dot);
        let arrived = eventually(Duration::from_secs(10), || {
            value_everywhere(&nodes, "ui/color", value.as_bytes())
        })
        .await;
        assert!(arrived, "{value} did not spread");
    }
    let history = nodes[2].history("ui/color").await.expect("history");
    assert_eq!(history.iter().map(|v| v.dot).collect::<Vec<_>>(), dots);

    // Another node restores "red": a new version that wins everywhere.
    let restored = nodes[2]
        .rollback("ui/color", dots[0])
        .await
        .expect("rollback")
        .expect("a new version");
    assert_eq!(restored.dot.actor, nodes[2].id().writer);
    assert!(
        eventually(Duration::from_secs(10), || value_everywhere(
            &nodes, "ui/color", b"red"
        ))
        .await
    );
    for node in &nodes {
        let winner = node.get("ui/color").await.expect("get").expect("value");
        assert_eq!(winner.dot, restored.dot);
    }
    let unknown = nodes[1]
        .rollback(
            "ui/color",
            confmesh::proto::Dot::new(restored.dot.actor, 999),
        )
        .await;
    assert!(matches!(unknown, Err(MeshError::UnknownVersion(_))));

    // Rolling back to a delete deletes.
    nodes[0].delete("ui/color").await.expect("delete");
    nodes[0].put("ui/color", "pink").await.expect("put");
    let tombstone = nodes[0]
        .history("ui/color")
        .await
        .expect("history")
        .into_iter()
        .find(|v| v.is_tombstone())
        .expect("the delete is in the history");
    nodes[0]
        .rollback("ui/color", tombstone.dot)
        .await
        .expect("rollback");
    assert!(nodes[0].get("ui/color").await.expect("get").is_none());

    // A bounded history: the default keeps 16 versions.
    for i in 0..40 {
        nodes[0].put("ui/size", format!("{i}")).await.expect("put");
    }
    let kept = nodes[0].history("ui/size").await.expect("history");
    assert_eq!(kept.len(), confmesh::runtime::DEFAULT_HISTORY_LEN);
    assert_eq!(
        kept.last().and_then(|v| v.payload.value()).map(|b| &b[..]),
        Some(&b"39"[..])
    );
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_carry_names_and_tags_and_their_changes_are_watched() {
    let ca = DevCa::generate("test cluster").expect("ca");
    let alpha = Mesh::builder()
        .tls(ca.node_config("alpha").expect("cert"))
        .name("alpha")
        .tag("role", "api")
        .start()
        .await
        .expect("start");
    let mut changes = alpha.watch_members();
    let gamma = Mesh::builder()
        .tls(ca.node_config("gamma").expect("cert"))
        .name("gamma")
        .tag("zone", "eu-1")
        .seeds([alpha.id().addr.to_string()])
        .start()
        .await
        .expect("start");
    assert!(everyone_sees_everyone(&[alpha.clone(), gamma.clone()]).await);

    let named = eventually(Duration::from_secs(10), || {
        let gamma = gamma.clone();
        async move {
            let members = gamma.members().await.expect("members");
            members
                .iter()
                .any(|m| m.name == "alpha" && m.tags.get("role").map(String::as_str) == Some("api"))
                && members[0].name == "gamma"
        }
    })
    .await;
    assert!(named, "alpha's name and tags did not reach gamma");

    // alpha's watch saw gamma come up, and (perhaps later) learn its name.
    let seen_up = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let m: Member = changes
                .next()
                .await
                .expect("the node is running")
                .expect("member change");
            if m.id == gamma.id()
                && m.state == MemberState::Alive
                && m.name == "gamma"
                && m.tags.get("zone").map(String::as_str) == Some("eu-1")
            {
                break;
            }
        }
    })
    .await;
    assert!(seen_up.is_ok(), "no Alive change for gamma with its name");

    let gamma_id = gamma.id();
    gamma.shutdown().await;
    let seen_left = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let m = changes
                .next()
                .await
                .expect("the node is running")
                .expect("member change");
            if m.id == gamma_id && m.state == MemberState::Left {
                assert_eq!(m.name, "gamma");
                break;
            }
        }
    })
    .await;
    assert!(seen_left.is_ok(), "gamma's leave was not reported");
    // And it is listed as gone, not dropped from the list.
    let listed = alpha.members().await.expect("members");
    assert!(
        listed
            .iter()
            .any(|m| m.id == gamma_id && m.state == MemberState::Left && m.name == "gamma"),
        "{listed:?}"
    );

    // confmesh's own keys are readable on request but not writable, and hidden by default.
    assert!(matches!(
        alpha.put("_confmesh/members/x", "forged").await,
        Err(MeshError::Reserved)
    ));
    assert!(alpha.list("").await.expect("list").is_empty());
    assert!(!alpha.list("_confmesh/").await.expect("list").is_empty());
    alpha.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_deliver_events_and_end_when_the_node_stops() {
    use confmesh::proto::node::Event;

    let ca = DevCa::generate("test cluster").expect("ca");
    let node = Mesh::builder()
        .tls(ca.node_config("n").expect("cert"))
        .start()
        .await
        .expect("start");
    let mut events = node.subscribe();
    let mut members = node.watch_members();
    node.put("app/a", "1").await.expect("put");
    let changed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.next().await {
                Some(Ok(Event::KeyChanged { key, .. })) if key.as_str() == "app/a" => break,
                Some(Ok(_)) => {}
                other => panic!("before the key change: {other:?}"),
            }
        }
    })
    .await;
    assert!(changed.is_ok(), "no event for the put");

    let mut watch = node.watch("app/", None).expect("watch");

    // Another handle outlives the node: the subscriptions and the watch still end.
    let handle = node.clone();
    node.shutdown().await;
    let watch_ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = watch.next().await {}
    })
    .await;
    assert!(watch_ended.is_ok(), "a watch did not end after shutdown");
    assert!(
        handle.watch("", None).is_err(),
        "a stopped node gave a watch"
    );
    for ended in [
        tokio::time::timeout(Duration::from_secs(10), async {
            while events.next().await.is_some() {}
        })
        .await,
        tokio::time::timeout(Duration::from_secs(10), async {
            while members.next().await.is_some() {}
        })
        .await,
    ] {
        assert!(ended.is_ok(), "a subscription did not end after shutdown");
    }
    assert!(
        events.next().await.is_none(),
        "an ended subscription stays ended"
    );
    // Subscribing to a stopped node gives a subscription that has ended.
    assert!(handle.subscribe().next().await.is_none());
    assert!(handle.watch_members().next().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_a_certificate_is_refused() {
    use rustls::pki_types::{CertificateDer, pem::PemObject};

    let ca = DevCa::generate("test cluster").expect("ca");
    let node = Mesh::builder()
        .tls(ca.node_config("n").expect("cert"))
        .start()
        .await
        .expect("start");
    node.put("secret/token", "s3cr3t").await.expect("put");

    // A client that trusts the cluster CA but presents no certificate.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).expect("ca pem"))
        .expect("root");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"confmesh/1".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls");
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("ep");
    client.set_default_client_config(quinn::ClientConfig::new(std::sync::Arc::new(crypto)));

    let attempt = async {
        let connection = client
            .connect(node.id().addr, "confmesh")
            .expect("connect")
            .await?;
        // If the client's side of the handshake completed, the server closes the connection
        // once it sees no certificate; nothing can be read from it.
        let mut stream = connection.open_uni().await?;
        stream.write_all(b"\x01anything").await?;
        stream.finish()?;
        let reason = connection.closed().await;
        Err::<(), _>(Box::<dyn std::error::Error>::from(reason.to_string()))
    };
    let result = tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .expect("the server neither refused nor closed the connection in 5 s");
    assert!(result.is_err());
    assert_eq!(node.members().await.expect("members").len(), 1);
    client.close(0u32.into(), b"done");
    node.shutdown().await;
}
