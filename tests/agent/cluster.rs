//! Three agents on 127.0.0.1: blocking query and SSE across agents, kill -9 and restart.

use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, StatusCode};

use crate::{Agent, Options, Raw, call, common::eventually, expect, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_share_writes_watches_see_them_and_kill_9_keeps_data() {
    let dirs: Vec<_> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    // --dev gives each agent its own CA; a cluster needs one. Make it, then share it.
    let first = Agent::start(dirs[0].path(), &["--name", "a"]);
    let tls = dirs[0].path().join("tls");
    for dir in &dirs[1..] {
        let dest = dir.path().join("tls");
        std::fs::create_dir_all(&dest).expect("tls dir");
        for f in ["ca.pem", "ca.key", "node.pem", "node.key"] {
            std::fs::copy(tls.join(f), dest.join(f)).expect("copy");
        }
    }
    let join = first.gossip.clone();
    let mut second = Agent::start(dirs[1].path(), &["--name", "b", "--join", &join]);
    let third = Agent::start(dirs[2].path(), &["--name", "c", "--join", &join]);
    let (a, b, c) = (first.client(), second.client(), third.client());
    let joined = eventually(Duration::from_secs(30), || {
        let b = b.clone();
        async move {
            let m = json(&call(&b, Method::GET, "/v1/members", "").await);
            let alive = |list: &Vec<serde_json::Value>| {
                list.iter().filter(|m| m["state"] == "alive").count()
            };
            m["members"].as_array().map_or(0, alive) == 3
        }
    })
    .await;
    assert!(joined, "three agents did not form a cluster");

    // An SSE watch on c and a blocking query on b, then a put through a.
    let sse = c
        .open(Method::GET, "/v1/watch?prefix=app/", Bytes::new(), &[])
        .await
        .expect("watch");
    assert_eq!(sse.status(), StatusCode::OK);
    let blocking = tokio::spawn({
        let b = b.clone();
        async move { call(&b, Method::GET, "/v1/kv/app/flag?index=none&wait=20s", "").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    expect(
        &call(&a, Method::PUT, "/v1/kv/app/flag", "on").await,
        StatusCode::OK,
    );
    let answered = tokio::time::timeout(Duration::from_secs(20), blocking)
        .await
        .expect("the blocking query returned")
        .expect("task");
    assert_eq!(expect(&answered, StatusCode::OK)["value"], "on");
    let event = tokio::time::timeout(Duration::from_secs(20), async move {
        use http_body_util::BodyExt;
        let mut body = sse.into_body();
        let mut text = String::new();
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                text.push_str(&String::from_utf8_lossy(data));
                if text.contains("\n\n") && text.contains("app/flag") {
                    return text;
                }
            }
        }
        text
    })
    .await
    .expect("an SSE event within 20 s");
    assert!(
        event.contains("event: change") && event.contains("\"value\":\"on\""),
        "{event}"
    );
    assert!(
        event.contains("id: "),
        "SSE events carry the cursor as their id: {event}"
    );

    // kill -9 of b, a write it misses, restart from its data dir.
    expect(
        &call(&b, Method::PUT, "/v1/kv/app/from-b", "acked").await,
        StatusCode::OK,
    );
    drop(second);
    expect(
        &call(&a, Method::PUT, "/v1/kv/app/missed", "yes").await,
        StatusCode::OK,
    );
    second = Agent::start(dirs[1].path(), &["--name", "b", "--join", &join]);
    let b = second.client();
    assert_eq!(
        json(&call(&b, Method::GET, "/v1/kv/app/from-b", "").await)["value"],
        "acked",
        "an acknowledged write was lost by kill -9"
    );
    let caught_up = eventually(Duration::from_secs(30), || {
        let b = b.clone();
        async move { call(&b, Method::GET, "/v1/kv/app/missed", "").await.status == 200 }
    })
    .await;
    assert!(caught_up, "the restarted agent did not catch up");
    // It caught up by an anti-entropy exchange it started, and timed it.
    let metrics = call(&b, Method::GET, "/metrics", "").await;
    let text = String::from_utf8_lossy(&metrics.body);
    let count = text
        .lines()
        .find_map(|l| l.strip_prefix("confmesh_sync_duration_ms_count "))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(count.is_some_and(|n| n >= 1), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_from_another_ca_is_refused_and_both_sides_say_so() {
    let (a_dir, b_dir) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    // --dev gives each agent a CA of its own: neither trusts the other.
    let a = Agent::start_with(
        a_dir.path(),
        Options {
            log: true,
            ..Options::default()
        },
    );
    let b = Agent::start_with(
        b_dir.path(),
        Options {
            args: &["--join", &a.gossip],
            log: true,
            ..Options::default()
        },
    );
    let b_addr = b.gossip.clone();
    let logged = eventually(Duration::from_secs(20), || {
        let (a_log, b_log) = (a.log(), b.log());
        let a_addr = a.gossip.clone();
        let b_addr = b_addr.clone();
        async move {
            // Whichever side checks first refuses; the other hears of it.
            let says = |log: &str, peer: &str| {
                log.lines().any(|l| {
                    l.contains(peer)
                        && (l.contains("refused a peer's TLS handshake")
                            || l.contains("the peer refused this node's TLS certificate"))
                })
            };
            says(&a_log, &b_addr) && says(&b_log, &a_addr)
        }
    })
    .await;
    assert!(
        logged,
        "a refused handshake was not logged on both sides with the peer's address:\n{}\n---\n{}",
        a.log(),
        b.log()
    );
    let members = json(&call(&a.client(), Method::GET, "/v1/members", "").await);
    assert_eq!(members["members"].as_array().map(Vec::len), Some(1));
}
