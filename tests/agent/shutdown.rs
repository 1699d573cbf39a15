//! SIGTERM with clients attached: event streams and blocking queries end with a last answer,
//! the agent leaves and exits; a second signal stops it at once.

use std::{io::Write, net::TcpStream, time::Duration};

use bytes::Bytes;
use hyper::{Method, StatusCode};

use crate::{Agent, Options, api::read_sse, call, expect};

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
    // Both are open once the blocking query waits; the watch already is.
    tokio::time::sleep(Duration::from_millis(500)).await;
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
    let mut slow = TcpStream::connect(&agent.http).expect("connect");
    slow.write_all(b"PUT /v1/kv/app/slow HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc")
        .expect("write");
    std::thread::sleep(Duration::from_millis(300));

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
    let client = confmesh::agent::client::Client::new(&http, None).expect("client");
    let up = crate::common::eventually(Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            client
                .send(Method::GET, "/v1/health", Bytes::new())
                .await
                .is_ok_and(|r| r.status == StatusCode::OK)
        }
    })
    .await;
    let exited = child.try_wait().expect("try_wait");
    let _ = child.kill();
    let _ = child.wait();
    assert!(up && exited.is_none(), "the agent stopped: {exited:?}");
}
