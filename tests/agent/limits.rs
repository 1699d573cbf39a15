//! Hostile and broken HTTP clients: slowloris headers, trickled and stalled bodies, an
//! oversized `Content-Length`, malformed requests, thousands of idle sockets, a low
//! file-descriptor limit. Every answer is JSON, and `/v1/health` keeps answering.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::Value;

use crate::{Agent, Options, Raw, api::read_sse, call, expect};

/// Sends `request` on a new connection and reads until the agent closes it (or 20 s pass).
fn raw(addr: &str, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    stream.write_all(request).expect("write");
    read_until_closed(&mut stream).0
}

/// What the agent sent until it closed the connection, and whether it did close it (rather
/// than the read timing out).
fn read_until_closed(stream: &mut TcpStream) -> (String, bool) {
    let mut out = Vec::new();
    let closed = stream.read_to_end(&mut out).is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// The status and JSON body of a raw answer.
#[track_caller]
fn answer(response: &str) -> (u16, Value) {
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete answer: {response:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status: {head:?}"));
    let body =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {response:?}"));
    (status, body)
}

/// Sends a chunked PUT body a byte every 500 ms (for at most 20 s); the answer.
fn trickle(addr: &str) -> String {
    let mut trickle = TcpStream::connect(addr).expect("connect");
    trickle
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    trickle
        .write_all(
            b"PUT /v1/kv/app/trickle HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n",
        )
        .expect("write");
    let mut answer = Vec::new();
    for _ in 0..40 {
        if trickle.write_all(b"1\r\na\r\n").is_err() {
            break;
        }
        let mut buf = [0; 4096];
        match trickle.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
            break;
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_oversized_and_malformed_requests_get_json_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Agent::start_with(
        dir.path(),
        Options {
            env: &[
                ("CONFMESH_HTTP_HEADER_TIMEOUT", "2s"),
                ("CONFMESH_HTTP_BODY_TIMEOUT", "2s"),
            ],
            ..Options::default()
        },
    );
    // A chunked body trickling a byte every 500 ms, and /v1/health answering meanwhile.
    let trickled = std::thread::spawn({
        let addr = agent.http.clone();
        move || trickle(&addr)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let health = tokio::time::timeout(
        Duration::from_secs(5),
        call(&agent.client(), Method::GET, "/v1/health", ""),
    )
    .await
    .expect("/v1/health answers while a body trickles in");
    expect(&health, StatusCode::OK);
    let addr = agent.http.clone();
    let cases = tokio::task::spawn_blocking(move || {
        // A declared body larger than any value: refused before a byte of it is read.
        let huge = raw(
            &addr,
            b"PUT /v1/kv/app/huge HTTP/1.1\r\nhost: x\r\ncontent-length: 100000000000\r\n\r\nabc",
        );
        // A body that stops after 3 of 10 bytes, and the trickle: both cut off at the body
        // timeout.
        let stalled = raw(
            &addr,
            b"PUT /v1/kv/app/stalled HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc",
        );
        let trickled = trickled.join().expect("trickle");
        // Headers that never end: the connection is closed at the header timeout.
        let mut slowloris = TcpStream::connect(&addr).expect("connect");
        slowloris
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        slowloris
            .write_all(b"GET /v1/health HTTP/1.1\r\nhost")
            .expect("write");
        let slowloris = read_until_closed(&mut slowloris);
        // hyper's own answers, JSON like every other.
        let garbage = raw(&addr, b"GARBAGE\r\n\r\n");
        let big_header = {
            let mut request = b"GET /v1/health HTTP/1.1\r\nhost: x\r\nx-big: ".to_vec();
            request.extend(std::iter::repeat_n(b'a', 512 * 1024));
            request.extend_from_slice(b"\r\n\r\n");
            raw(&addr, &request)
        };
        // After a keep-alive HTTP/1.0 request hyper answers in HTTP/1.0: its answer to a
        // malformed request that follows is JSON too (the last answer on the connection).
        let http_1_0 = raw(
            &addr,
            b"GET /v1/health HTTP/1.0\r\nconnection: keep-alive\r\n\r\nGARBAGE\r\n\r\n",
        );
        let http_1_0 = http_1_0[http_1_0.rfind("HTTP/1.0 ").unwrap_or(0)..].to_string();
        let bad_event_id = raw(
            &addr,
            b"GET /v1/watch HTTP/1.1\r\nhost: x\r\nconnection: close\r\nlast-event-id: \xff\xfe\r\n\r\n",
        );
        let answers = [
            ("huge", huge),
            ("stalled", stalled),
            ("trickled", trickled),
            ("garbage", garbage),
            ("big header", big_header),
            ("HTTP/1.0 then garbage", http_1_0),
            ("bad event id", bad_event_id),
        ];
        (answers, slowloris)
    })
    .await
    .expect("clients");
    let (cases, (slowloris, closed)) = cases;
    let expected = [
        ("huge", 413),
        ("stalled", 408),
        ("trickled", 408),
        ("garbage", 400),
        ("big header", 431),
        ("HTTP/1.0 then garbage", 400),
        ("bad event id", 400),
    ];
    for ((name, response), (expected_name, status)) in cases.iter().zip(expected) {
        assert_eq!(*name, expected_name);
        let (got, body) = answer(response);
        assert_eq!(got, status, "{name}: {response}");
        assert!(body["error"].is_string(), "{name}: {response}");
    }
    assert!(
        closed && slowloris.is_empty(),
        "a connection with unfinished headers was not closed: {slowloris:?}"
    );
    let c = agent.client();
    expect(
        &call(&c, Method::GET, "/v1/kv/app/huge", "").await,
        StatusCode::NOT_FOUND,
    );
    expect(
        &call(&c, Method::GET, "/v1/health", "").await,
        StatusCode::OK,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_slowloris_connections_do_not_starve_health() {
    // This test process holds the 2,000 sockets too; the agent may hold 1,024 descriptors.
    let _ = rlimit::increase_nofile_limit(8192);
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Agent::start_with(
        dir.path(),
        Options {
            env: &[("CONFMESH_HTTP_HEADER_TIMEOUT", "120s")],
            fd_limit: Some(1024),
            ..Options::default()
        },
    );
    let mut held = Vec::new();
    for _ in 0..2_000 {
        let Ok(mut s) = TcpStream::connect(&agent.http) else {
            break;
        };
        let _ = s.write_all(b"GET /v1/health HTTP/1.1\r\nhost: x\r\nx-slow");
        held.push(s);
    }
    assert_eq!(held.len(), 2_000, "could not open the slow connections");
    let c = agent.client();
    let health = tokio::time::timeout(
        Duration::from_secs(20),
        call(&c, Method::GET, "/v1/health", ""),
    )
    .await
    .expect("/v1/health answers beside 2,000 slow connections");
    expect(&health, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_fd_limit_and_many_idle_sockets_keep_health_answering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Agent::start_with(
        dir.path(),
        Options {
            env: &[("CONFMESH_HTTP_HEADER_TIMEOUT", "120s")],
            fd_limit: Some(128),
            log: true,
            ..Options::default()
        },
    );
    // More idle sockets than the agent has file descriptors.
    let idle: Vec<TcpStream> = (0..150)
        .filter_map(|_| TcpStream::connect(&agent.http).ok())
        .collect();
    assert_eq!(idle.len(), 150);
    let c = agent.client();
    for _ in 0..3 {
        let health = tokio::time::timeout(
            Duration::from_secs(20),
            call(&c, Method::GET, "/v1/health", ""),
        )
        .await
        .expect("/v1/health answers with the file descriptors taken");
        expect(&health, StatusCode::OK);
    }
    let log = agent.log();
    assert!(
        !log.contains("Too many open files"),
        "the agent ran out of file descriptors: {log}"
    );
    assert!(
        log.contains("connection cap is lowered") && !log.contains('\u{1b}'),
        "a log written to a file has no colour codes: {log:?}"
    );
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_yield_to_new_clients_at_the_connection_cap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Agent::start_with(
        dir.path(),
        Options {
            env: &[("CONFMESH_HTTP_MAX_CONNECTIONS", "4")],
            ..Options::default()
        },
    );
    // Every connection the agent allows holds an event stream.
    let mut watches = Vec::new();
    for _ in 0..4 {
        let client = agent.client();
        let watch = client
            .open(Method::GET, "/v1/watch?prefix=app/", Bytes::new(), &[])
            .await
            .expect("watch");
        assert_eq!(watch.status(), StatusCode::OK);
        watches.push(watch);
    }
    let health = tokio::time::timeout(
        Duration::from_secs(20),
        call(&agent.client(), Method::GET, "/v1/health", ""),
    )
    .await
    .expect("/v1/health answers");
    expect(&health, StatusCode::OK);
    // The oldest stream was ended with a last event saying why and where to resume.
    let oldest = read_sse(watches.remove(0), "event: closed").await;
    assert!(
        oldest.contains("event: closed") && oldest.contains("\"cursor\""),
        "{oldest}"
    );
}
