//! SIGTERM with clients attached: event streams and blocking queries end with a last answer,
//! the agent leaves and exits; a second signal stops it at once.

use std::{io::Write, net::TcpStream, time::Duration};

use bytes::Bytes;
use hyper::{Method, StatusCode};

use crate::{Agent, Options, Raw, api::read_sse, call, expect};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_watches_and_blocking_queries_and_exits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = Agent::start(dir.path(), &[]);
    let c = agent.client();
    let put = expect(
        &call(&c, Method::PUT, "/v1/kv/app/mode", "blue").await,
        StatusCode::OK,
    );
    let version = put["version"].as_str().expect("version").to_string();
    let watch = c
        .open(Method::GET, "/v1/watch?prefix=app/", Bytes::new(), &[])
        .await
        .expect("watch");
    assert_eq!(watch.status(), StatusCode::OK);
    let before = requests_total(&c).await;
    let blocking = tokio::spawn({
        let c = c.clone();
        async move {
            call(
                &c,
                Method::GET,
                &format!("/v1/kv/app/mode?index={version}&wait=120s"),
                "",
            )
            .await
        }
    });
    assert!(
        await_requests(&c, before, 1).await,
        "the blocking query never reached the agent"
    );
    assert!(!blocking.is_finished(), "the blocking query did not block");

    agent.terminate();
    let answered = tokio::time::timeout(Duration::from_secs(20), blocking)
        .await
        .expect("the blocking query was answered at shutdown")
        .expect("task");
    assert_eq!(expect(&answered, StatusCode::OK)["value"], "blue");
    let events = read_sse(watch, "event: shutdown").await;
    assert!(
        events.contains("event: shutdown"),
        "the watch got no last event: {events}"
    );
    let code = tokio::task::spawn_blocking(move || {
        let code = agent.wait_exit(Duration::from_secs(20));
        (agent, code)
    })
    .await
    .expect("wait")
    .1;
    assert_eq!(code, Some(Some(0)), "the agent did not exit cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_stops_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut agent = Agent::start_with(
        dir.path(),
        Options {
            env: &[
                ("CONFMESH_SHUTDOWN_GRACE", "120s"),
                ("CONFMESH_HTTP_BODY_TIMEOUT", "120s"),
            ],
            ..Options::default()
        },
    );
    // A request in flight: its body never arrives in full, so draining waits for it.
    let c = agent.client();
    let before = requests_total(&c).await;
    let mut slow = TcpStream::connect(&agent.http).expect("connect");
    slow.write_all(b"PUT /v1/kv/app/slow HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc")
        .expect("write");
    assert!(
        await_requests(&c, before, 1).await,
        "the slow request never reached the agent"
    );

    agent.terminate();
    assert_eq!(
        agent.wait_exit(Duration::from_secs(1)),
        None,
        "the agent did not wait for the request in flight"
    );
    agent.terminate();
    assert_eq!(
        agent.wait_exit(Duration::from_secs(20)),
        Some(Some(130)),
        "a second signal did not stop the agent"
    );
    drop(slow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_standard_output_does_not_stop_the_agent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let http = format!("127.0.0.1:{port}");
    let mut child = std::process::Command::new(crate::BIN)
        .args([
            "agent",
            "--dev",
            "--gossip-addr",
            "127.0.0.1:0",
            "--http-addr",
            &http,
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    // Whoever started it stopped reading before the agent printed its banner.
    drop(child.stdout.take());
    let client = confmesh::api::Client::new(&http, None).expect("client");
    let up = crate::common::eventually(Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            client
                .send(Method::GET, "/v1/health", Bytes::new())
                .await
                .is_ok_and(|r| r.status == 200)
        }
    })
    .await;
    let exited = child.try_wait().expect("try_wait");
    let _ = child.kill();
    let _ = child.wait();
    assert!(up && exited.is_none(), "the agent stopped: {exited:?}");
}

/// The agent's `confmesh_http_requests_total` (this request included).
async fn requests_total(c: &confmesh::api::Client) -> u64 {
    let metrics = call(c, Method::GET, "/metrics", "").await;
    String::from_utf8_lossy(&metrics.body)
        .lines()
        .find_map(|l| l.strip_prefix("confmesh_http_requests_total "))
        .and_then(|n| n.trim().parse().ok())
        .expect("the request counter")
}

/// Waits (up to 20 s) until the agent has received `more` requests besides these probes
/// since `before` was read.
async fn await_requests(c: &confmesh::api::Client, before: u64, more: u64) -> bool {
    for probes in 1..=400 {
        if requests_total(c).await >= before + probes + more {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
