//! The `confmesh` binary as a process: the agent's HTTP API end to end, every bad-input case,
//! the token, three agents on 127.0.0.1 (blocking query and SSE across agents, kill -9 and
//! restart), and the command line against a live agent. Every wait is bounded.

#![cfg(feature = "agent")]

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use bytes::Bytes;
use confmesh::agent::client::{Client, Reply};
use hyper::{Method, StatusCode};
use serde_json::Value;

mod common;
use common::eventually;

const BIN: &str = env!("CARGO_BIN_EXE_confmesh");

/// A running agent; killed (SIGKILL) when dropped.
struct Agent {
    child: Child,
    http: String,
    gossip: String,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    /// Starts `confmesh agent --dev` on free ports in `dir`, with `extra` arguments, and waits
    /// (up to 30 s) until it prints its addresses.
    fn start(dir: &Path, extra: &[&str]) -> Agent {
        let mut child = Command::new(BIN)
            .args(["agent", "--dev", "--gossip-addr", "127.0.0.1:0"])
            .args(["--http-addr", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn agent");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (mut http, mut gossip) = (None, None);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let line = line.trim().to_string();
                if let Some(addr) = line.strip_prefix("http:") {
                    http = Some(addr.trim().trim_start_matches("http://").to_string());
                }
                if let Some(addr) = line.strip_prefix("gossip:") {
                    gossip = addr.split_whitespace().next().map(String::from);
                }
                if let (Some(h), Some(g)) = (&http, &gossip) {
                    let _ = tx.send((h.clone(), g.clone()));
                    http = None;
                }
            }
        });
        let (http, gossip) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the agent printed its addresses within 30 s");
        Agent {
            child,
            http,
            gossip,
        }
    }

    fn client(&self) -> Client {
        Client::new(&self.http, None).expect("client")
    }
}

async fn call(client: &Client, method: Method, path: &str, body: &str) -> Reply {
    client
        .send(method, path, Bytes::from(body.to_string()))
        .await
        .expect("the agent answers")
}

fn json(reply: &Reply) -> Value {
    serde_json::from_slice(&reply.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&reply.body)))
}

/// Asserts `reply` has `status` and, for errors, a JSON `{"error": ...}` body.
#[track_caller]
fn expect(reply: &Reply, status: StatusCode) -> Value {
    assert_eq!(
        reply.status,
        status,
        "body: {}",
        String::from_utf8_lossy(&reply.body)
    );
    let body = json(reply);
    if !status.is_success() {
        assert!(
            body["error"].is_string(),
            "error body without `error`: {body}"
        );
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_end_to_end_and_every_bad_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Agent::start(dir.path(), &["--name", "solo", "--tag", "role=test"]);
    let c = agent.client();

    let put = expect(
        &call(&c, Method::PUT, "/v1/kv/app/db/url", "postgres://a").await,
        StatusCode::OK,
    );
    let v1 = put["version"].as_str().expect("version").to_string();
    let got = expect(
        &call(&c, Method::GET, "/v1/kv/app/db/url", "").await,
        StatusCode::OK,
    );
    assert_eq!(got["value"], "postgres://a");
    assert_eq!(got["version"], v1.as_str());
    assert!(got["writer"].is_string() && got["time_ms"].is_u64());
    assert_eq!(got["siblings"], Value::Array(vec![]));
    let raw = call(&c, Method::GET, "/v1/kv/app/db/url?raw", "").await;
    assert_eq!(&raw.body[..], b"postgres://a");

    // Conditional writes: against the current version, then against a stale one.
    let v2 = expect(
        &call(
            &c,
            Method::PUT,
            &format!("/v1/kv/app/db/url?if_version={v1}"),
            "postgres://b",
        )
        .await,
        StatusCode::OK,
    )["version"]
        .as_str()
        .expect("version")
        .to_string();
    let conflict = expect(
        &call(
            &c,
            Method::PUT,
            &format!("/v1/kv/app/db/url?if_version={v1}"),
            "postgres://c",
        )
        .await,
        StatusCode::CONFLICT,
    );
    assert_eq!(conflict["current"], v2.as_str());
    expect(
        &call(&c, Method::PUT, "/v1/kv/app/db/url?if_version=none", "x").await,
        StatusCode::CONFLICT,
    );

    // Listing, paged.
    for k in ["app/a", "app/b", "app/c"] {
        expect(
            &call(&c, Method::PUT, &format!("/v1/kv/{k}"), "1").await,
            StatusCode::OK,
        );
    }
    let page = expect(
        &call(&c, Method::GET, "/v1/kv?prefix=app/&limit=2", "").await,
        StatusCode::OK,
    );
    assert_eq!(page["keys"].as_array().map(Vec::len), Some(2));
    assert_eq!(page["next"], "app/b");
    let rest = expect(
        &call(
            &c,
            Method::GET,
            "/v1/kv?prefix=app/&limit=2&after=app/b",
            "",
        )
        .await,
        StatusCode::OK,
    );
    let keys: Vec<_> = rest["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["key"].clone())
        .collect();
    assert_eq!(keys, ["app/c", "app/db/url"]);
    assert!(rest["next"].is_null());

    // History and rollback.
    let history = expect(
        &call(&c, Method::GET, "/v1/kv/app/db/url/history", "").await,
        StatusCode::OK,
    );
    let versions: Vec<_> = history["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| v["value"].clone())
        .collect();
    assert_eq!(versions, ["postgres://a", "postgres://b"]);
    let rolled = expect(
        &call(
            &c,
            Method::POST,
            &format!("/v1/kv/app/db/url/rollback?version={v1}"),
            "",
        )
        .await,
        StatusCode::OK,
    );
    assert_ne!(rolled["version"], v1.as_str());
    assert_eq!(
        json(&call(&c, Method::GET, "/v1/kv/app/db/url", "").await)["value"],
        "postgres://a"
    );
    assert_eq!(
        json(&call(&c, Method::GET, "/v1/history/app/db/url", "").await)["versions"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );

    // Delete.
    let deleted = expect(
        &call(&c, Method::DELETE, "/v1/kv/app/a", "").await,
        StatusCode::OK,
    );
    assert_eq!(deleted["deleted"], true);
    expect(
        &call(&c, Method::GET, "/v1/kv/app/a", "").await,
        StatusCode::NOT_FOUND,
    );
    assert_eq!(
        json(&call(&c, Method::DELETE, "/v1/kv/app/a", "").await)["deleted"],
        false
    );

    // Members, health, metrics.
    let members = expect(
        &call(&c, Method::GET, "/v1/members", "").await,
        StatusCode::OK,
    );
    assert_eq!(members["members"][0]["name"], "solo");
    assert_eq!(members["members"][0]["tags"]["role"], "test");
    assert_eq!(members["members"][0]["state"], "alive");
    let health = expect(
        &call(&c, Method::GET, "/v1/health", "").await,
        StatusCode::OK,
    );
    assert_eq!(health["status"], "ok");
    let metrics = call(&c, Method::GET, "/metrics", "").await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(text.contains("confmesh_writes_total 7"), "{text}");
    assert!(text.contains("# TYPE confmesh_replication_lag_ms histogram"));
    assert!(text.contains("# TYPE confmesh_sync_duration_ms histogram"));
    assert!(text.contains("confmesh_udp_bytes_sent_total "), "{text}");

    // Bad input: a clear 4xx with a JSON error, and nothing changes.
    let before = call(&c, Method::GET, "/v1/kv?prefix=", "").await.body;
    let cases: [(Method, &str, String, StatusCode); 12] = [
        (
            Method::PUT,
            "/v1/kv/bad//key",
            "x".into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PUT,
            "/v1/kv/bad%20key",
            "x".into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/v1/kv/app/%FF",
            String::new(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::PUT,
            "/v1/kv/app/big",
            "x".repeat((1 << 20) + 1),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            Method::PUT,
            "/v1/kv/_confmesh/members/x",
            "x".into(),
            StatusCode::FORBIDDEN,
        ),
        (
            Method::PUT,
            "/v1/kv/app/b?if_version=garbage",
            "x".into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/v1/kv/app/b/rollback?version=00ff-9",
            String::new(),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            "/v1/kv/app/b/rollback",
            String::new(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/v1/kv/app/b",
            String::new(),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Method::PATCH,
            "/v1/kv/app/b",
            "x".into(),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Method::GET,
            "/v2/nothing",
            String::new(),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            "/v1/kv/app/b?index=x&wait=forever",
            String::new(),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (method, path, body, status) in cases {
        let reply = c
            .send(method.clone(), path, Bytes::from(body))
            .await
            .expect("answer");
        assert_eq!(
            reply.status,
            status,
            "{method} {path}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        assert!(json(&reply)["error"].is_string(), "{method} {path}");
    }
    let bad_cursor = c
        .open(
            Method::GET,
            "/v1/watch",
            Bytes::new(),
            &[("last-event-id", "nonsense")],
        )
        .await
        .expect("answer");
    assert_eq!(bad_cursor.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        call(&c, Method::GET, "/v1/kv?prefix=", "").await.body,
        before,
        "bad input changed state"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_the_api_and_bad_configuration_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "api_token = \"s3cret\"\n").expect("config");
    let agent = Agent::start(
        &dir.path().join("data"),
        &["--config", config.to_str().expect("utf-8")],
    );
    let anonymous = agent.client();
    expect(
        &call(&anonymous, Method::GET, "/v1/kv?prefix=", "").await,
        StatusCode::UNAUTHORIZED,
    );
    expect(
        &call(&anonymous, Method::PUT, "/v1/kv/app/x", "1").await,
        StatusCode::UNAUTHORIZED,
    );
    let wrong = Client::new(&agent.http, Some("guess".into())).expect("client");
    expect(
        &call(&wrong, Method::GET, "/metrics", "").await,
        StatusCode::UNAUTHORIZED,
    );
    expect(
        &call(&anonymous, Method::GET, "/v1/health", "").await,
        StatusCode::OK,
    );
    let right = Client::new(&agent.http, Some("s3cret".into())).expect("client");
    expect(
        &call(&right, Method::PUT, "/v1/kv/app/x", "1").await,
        StatusCode::OK,
    );
    expect(
        &call(&right, Method::GET, "/v1/kv/app/x", "").await,
        StatusCode::OK,
    );

    for (args, option) in [
        (
            vec!["agent", "--config", "/nonexistent/confmesh.toml"],
            "--config",
        ),
        (vec!["agent"], "data_dir"),
        (
            vec!["agent", "--dev", "--http-addr", "0.0.0.0:0"],
            "http_addr",
        ),
        (vec!["agent", "--dev", "--join", "no-port"], "join"),
        (vec!["agent", "--dev", "--tag", "novalue"], "--tag"),
    ] {
        let out = Command::new(BIN)
            .args(&args)
            .current_dir(dir.path())
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(option), "{args:?}: {stderr}");
    }
}

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
            m["members"].as_array().map_or(0, Vec::len) == 3
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
        async move { call(&b, Method::GET, "/v1/kv/app/missed", "").await.status == StatusCode::OK }
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
async fn the_command_line_against_a_live_agent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Agent::start(dir.path(), &["--name", "cli-test"]);
    let cli = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .args(["--addr", &agent.http])
            .output()
            .expect("run cli");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, _) = cli(&["put", "app/mode", "blue"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("app/mode = version "), "{out}");
    cli(&["put", "app/mode", "green"]);
    let (code, out, _) = cli(&["get", "app/mode"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("green\n"), "{out}");
    let (_, raw, _) = cli(&["get", "app/mode", "--raw"]);
    assert_eq!(raw, "green");
    let (_, listing, _) = cli(&["ls", "app/"]);
    assert!(listing.starts_with("app/mode\t"), "{listing}");
    let (_, history, _) = cli(&["history", "app/mode"]);
    let first = history
        .lines()
        .next()
        .and_then(|l| l.split('\t').next())
        .expect("a version");
    assert!(
        history.contains("blue") && history.contains("green"),
        "{history}"
    );
    let (code, out, _) = cli(&["rollback", "app/mode", first]);
    assert_eq!(code, Some(0), "{out}");
    let (_, raw, _) = cli(&["get", "app/mode", "--raw"]);
    assert_eq!(raw, "blue");
    let (code, json_out, _) = cli(&["get", "app/mode", "--json"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        serde_json::from_str::<Value>(&json_out).expect("json")["value"],
        "blue"
    );
    let (_, members, _) = cli(&["members"]);
    assert!(members.starts_with("cli-test\t"), "{members}");
    let (code, _, _) = cli(&["del", "app/mode"]);
    assert_eq!(code, Some(0));
    let (code, _, err) = cli(&["get", "app/mode"]);
    assert_eq!(code, Some(1), "a missing key fails");
    assert!(err.contains("no value"), "{err}");
    let (code, _, err) = cli(&["put", "bad//key", "x"]);
    assert_eq!(code, Some(2), "bad input is a usage error");
    assert!(err.contains("segment"), "{err}");

    // cert: a CA, then a node certificate an agent accepts.
    let certs = tempfile::tempdir().expect("tempdir");
    let out = certs.path().to_str().expect("utf-8");
    let ca = Command::new(BIN)
        .args(["cert", "ca", "--out", out])
        .output()
        .expect("cert ca");
    assert!(ca.status.success());
    let node = Command::new(BIN)
        .args([
            "cert",
            "node",
            "--name",
            "n1",
            "--ip",
            "127.0.0.1",
            "--dns",
            "n1.local",
        ])
        .args(["--ca-dir", out, "--out", out])
        .output()
        .expect("cert node");
    assert!(
        node.status.success(),
        "{}",
        String::from_utf8_lossy(&node.stderr)
    );
    let tls = confmesh::runtime::tls::TlsConfig::from_files(
        &certs.path().join("ca.pem"),
        &certs.path().join("n1.pem"),
        &certs.path().join("n1.key"),
    );
    assert!(tls.is_ok(), "the issued files load: {tls:?}");
}
