//! The HTTP API end to end, every bad-input case, and the token.

use std::process::Command;

use bytes::Bytes;
use confmesh::api::Client;
use hyper::{Method, StatusCode};
use serde_json::Value;

use crate::{Agent, BIN, Raw, call, expect, json};

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
    // Error messages show versions as the API writes them, never Rust's debug text.
    let message = conflict["error"].as_str().expect("error");
    assert!(
        message.contains(&v2) && !message.contains("Some(") && !message.contains("WriterId"),
        "{message}"
    );
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
        &call(&c, Method::GET, "/v1/history/app/db/url", "").await,
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
            &format!("/v1/rollback/app/db/url?version={v1}"),
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
    // app/db/url, app/b, app/c and the tombstone of app/a; not the node's own member record.
    assert_eq!(health["keys"], 4, "{health}");
    let metrics = call(&c, Method::GET, "/metrics", "").await;
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(text.contains("\nconfmesh_keys 4\n"), "{text}");
    // A single node has never been in sync with a peer: the gauge is absent, not 0.
    assert!(!text.contains("confmesh_last_sync_age_ms"), "{text}");
    assert!(text.contains("confmesh_writes_total 7"), "{text}");
    assert!(text.contains("# TYPE confmesh_replication_lag_ms histogram"));
    // OpenMetrics text (README: "Changes for clients"): float bucket bounds, a last `# EOF`.
    assert!(
        text.contains("confmesh_replication_lag_ms_bucket{le=\"5.0\"}"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("# TYPE confmesh_sync_duration_ms histogram"));
    assert!(text.contains("confmesh_udp_bytes_sent_total "), "{text}");

    // Bad input: a clear 4xx with a JSON error, and nothing changes.
    let before = call(&c, Method::GET, "/v1/kv?prefix=", "").await.body;
    let cases: [(Method, &str, String, StatusCode); 14] = [
        (
            Method::GET,
            "/v1/kv/",
            String::new(),
            StatusCode::BAD_REQUEST,
        ),
        (Method::PUT, "/v1/kv/", "x".into(), StatusCode::BAD_REQUEST),
        (
            Method::GET,
            "/v1/history/",
            String::new(),
            StatusCode::BAD_REQUEST,
        ),
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
        // A value over the limit is refused with 413 before its body is read and the
        // connection closed; a client still sending then may see the reset before the
        // answer, so limits.rs checks it over a raw socket that reads the answer.
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
            "/v1/rollback/app/b?version=00ff-9",
            String::new(),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            "/v1/rollback/app/b",
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
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(
            reply.status,
            status.as_u16(),
            "{method} {path}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        let message = json(&reply)["error"].as_str().map(String::from);
        let message = message.unwrap_or_else(|| panic!("{method} {path}: no error text"));
        assert!(
            !message.contains("Some(") && !message.contains("WriterId") && !message.contains("{ "),
            "{method} {path}: Rust debug text in {message:?}"
        );
    }
    // A version in an error is written as the API writes versions.
    let unknown = call(&c, Method::POST, "/v1/rollback/app/b?version=00ff-9", "").await;
    assert!(
        json(&unknown)["error"]
            .as_str()
            .is_some_and(|m| m.contains("00000000000000ff-9")),
        "{}",
        String::from_utf8_lossy(&unknown.body)
    );
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

    // A cursor ahead of the log (from a state this node no longer holds, such as a data
    // directory restored from an older backup) is a gap, never a silent skip.
    let watch = c
        .open(Method::GET, "/v1/watch?prefix=ahead/", Bytes::new(), &[])
        .await
        .expect("watch");
    expect(
        &call(&c, Method::PUT, "/v1/kv/ahead/x", "0").await,
        StatusCode::OK,
    );
    let event = read_sse(watch, "ahead/x").await;
    let id = event
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .expect("event id");
    let (log, seq) = id.split_once('.').expect("cursor");
    let ahead = format!("{log}.{}", seq.parse::<u64>().expect("seq") + 5);
    let resumed = c
        .open(
            Method::GET,
            "/v1/watch?prefix=ahead/",
            Bytes::new(),
            &[("last-event-id", &ahead)],
        )
        .await
        .expect("watch");
    for value in 1..=10 {
        expect(
            &call(&c, Method::PUT, "/v1/kv/ahead/x", &value.to_string()).await,
            StatusCode::OK,
        );
    }
    let events = read_sse(resumed, "event: gap").await;
    assert!(
        events.starts_with("event: gap"),
        "no change may come before the gap: {events}"
    );
    assert!(
        !events.contains("Some(") && !events.contains("Cursor {"),
        "{events}"
    );
}

/// The event stream of `response` until it contains `needle` (or ends, or 20 s pass).
pub(crate) async fn read_sse(
    response: hyper::Response<hyper::body::Incoming>,
    needle: &str,
) -> String {
    use http_body_util::BodyExt;
    let mut body = response.into_body();
    let mut text = String::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                text.push_str(&String::from_utf8_lossy(data));
                if text.contains(needle) && text.ends_with("\n\n") {
                    return;
                }
            }
        }
    })
    .await;
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_the_api_and_bad_configuration_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "api_token = \"s3cret\"\n").expect("config");
    std::fs::write(
        dir.path().join("missing-tls.toml"),
        "data_dir = \"tls-less\"\n[tls]\nca = \"nope/ca.pem\"\ncert = \"nope/n.pem\"\nkey = \"nope/n.key\"\n",
    )
    .expect("config");
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
    // The command line takes the token from a file (or the environment), not only a flag.
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret\n").expect("token file");
    let cli = |file: &std::path::Path| {
        std::process::Command::new(crate::BIN)
            .args([
                "get",
                "app/x",
                "--raw",
                "--addr",
                &agent.http,
                "--token-file",
            ])
            .arg(file)
            .env_remove("CONFMESH_TOKEN")
            .output()
            .expect("run cli")
    };
    let out = cli(&token_file);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, b"1");
    let empty = dir.path().join("empty-token");
    std::fs::write(&empty, "\n").expect("token file");
    assert_eq!(
        cli(&empty).status.code(),
        Some(2),
        "an empty token file is bad usage"
    );

    let dev = |data_dir, gossip, http| {
        vec![
            "agent",
            "--dev",
            "--data-dir",
            data_dir,
            "--gossip-addr",
            gossip,
            "--http-addr",
            http,
        ]
    };
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
        // Every option is a flag too, checked like the file's.
        (vec!["agent", "--dev", "--history-len", "0"], "history_len"),
        // Start-up failures name the option too: a port in use, a data directory in use or
        // unusable, TLS files that cannot be read.
        (dev("fresh-1", "127.0.0.1:0", &agent.http), "http_addr"),
        (dev("fresh-2", &agent.gossip, "127.0.0.1:0"), "gossip_addr"),
        (dev("data", "127.0.0.1:0", "127.0.0.1:0"), "data_dir"),
        (dev("agent.toml", "127.0.0.1:0", "127.0.0.1:0"), "data_dir"),
        (
            vec![
                "agent",
                "--config",
                "missing-tls.toml",
                "--gossip-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
            ],
            "tls.ca",
        ),
    ] {
        let out = Command::new(BIN)
            .args(&args)
            .current_dir(dir.path())
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(option), "{args:?}: {stderr}");
    }

    // An unknown or malformed CONFMESH_ variable is refused by name, never ignored.
    for (var, value) in [
        ("CONFMESH_HISTORY_LENGTH", "3"),
        ("CONFMESH_HISTORY_LEN", "many"),
    ] {
        let mut child = Command::new(BIN)
            .args(dev("env-check", "127.0.0.1:0", "127.0.0.1:0"))
            .env(var, value)
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run");
        // An agent that ignored the variable would run: stop it, and fail below.
        for _ in 0..200 {
            if child.try_wait().expect("try_wait").is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = child.kill();
        let out = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}: {stderr}");
        assert!(stderr.contains(var), "{var}: {stderr}");
    }
}
