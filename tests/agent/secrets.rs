//! Secrets end to end (docs/PROTOCOL.md §9): two agents of one CA, `reader` and `other`, each
//! with its own node certificate. An admin makes `secret/` a secret prefix readable by
//! `node:reader`; values written through either agent are sealed at the writing node. The
//! reader's agent returns the plaintext, the other's a 403; the plaintext (a canary) is in
//! none of the other node's files, in none of its log lines at debug level, and not in its
//! metrics, while it still holds and serves the sealed versions' metadata.

use std::{path::Path, process::Command, time::Duration};

use bytes::Bytes;
use confmesh::api::Client;
use hyper::{Method, StatusCode};

use crate::{Agent, BIN, Options, Raw, call, common::eventually, expect, json};

const CANARY_THROUGH_OTHER: &str = "canary-7f3a-written-by-a-non-reader";
const CANARY_THROUGH_READER: &str = "canary-91bc-written-by-the-reader";

/// A node certificate named `name`, from the CA in `ca_dir`, installed as the `--dev` agent's
/// own in `data/tls` (with the CA).
fn install_node_certificate(ca_dir: &Path, data: &Path, name: &str) {
    let tls = data.join("tls");
    std::fs::create_dir_all(&tls).expect("tls dir");
    let made = Command::new(BIN)
        .args([
            "cert",
            "node",
            "--name",
            name,
            "--ip",
            "127.0.0.1",
            "--ca-dir",
        ])
        .arg(ca_dir)
        .arg("--out")
        .arg(&tls)
        .output()
        .expect("run cli");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    std::fs::rename(tls.join(format!("{name}.pem")), tls.join("node.pem")).expect("cert");
    std::fs::rename(tls.join(format!("{name}.key")), tls.join("node.key")).expect("key");
    for file in ["ca.pem", "ca.key"] {
        std::fs::copy(ca_dir.join(file), tls.join(file)).expect("ca");
    }
}

/// A watch of `secret/` from now on.
async fn watch(client: &Client) -> hyper::Response<hyper::body::Incoming> {
    let sse = client
        .open(Method::GET, "/v1/watch?prefix=secret/", Bytes::new(), &[])
        .await
        .expect("watch");
    assert_eq!(sse.status(), StatusCode::OK);
    sse
}

/// The watch's text up to the first complete event naming `key` (at most 20 s).
async fn next_event(sse: hyper::Response<hyper::body::Incoming>, key: &str) -> String {
    use http_body_util::BodyExt;
    let read = async move {
        let mut body = sse.into_body();
        let mut text = String::new();
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                text.push_str(&String::from_utf8_lossy(data));
                if text.contains(key) && text.ends_with("\n\n") {
                    return text;
                }
            }
        }
        text
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("an event within 20 s")
}

/// Whether any file under `dir` holds `needle`.
fn found_in_files(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read dir") {
                stack.push(entry.expect("entry").path());
            }
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            found.push(path.display().to_string());
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_is_sealed_at_the_writing_node_and_opened_only_by_its_readers() {
    let root = tempfile::tempdir().expect("tempdir");
    let (reader_data, other_data) = (root.path().join("reader"), root.path().join("other"));
    let reader = Agent::start(&reader_data, &["--name", "reader"]);
    let ca_dir = reader_data.join("tls");
    install_node_certificate(&ca_dir, &other_data, "other");
    let other = Agent::start_with(
        &other_data,
        Options {
            args: &["--name", "other", "--join", &reader.gossip],
            env: &[("RUST_LOG", "debug")],
            log: true,
            ..Options::default()
        },
    );
    let (r, o) = (reader.client(), other.client());

    let cli = |agent: &Agent, args: &[&str]| {
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
    let (cert, key) = crate::issue_admin(&reader_data, root.path());
    let admin = [
        "--admin-cert",
        cert.to_str().expect("utf-8"),
        "--admin-key",
        key.to_str().expect("utf-8"),
    ];
    let as_admin = |agent: &Agent, args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(admin);
        cli(agent, &all)
    };

    // Both nodes' recipients reach the reader's agent through their member records.
    let known = eventually(Duration::from_secs(30), || {
        let r = r.clone();
        async move {
            let acl = json(&call(&r, Method::GET, "/v1/acl", "").await);
            ["node:reader", "node:other"].iter().all(|n| {
                acl["recipients"][n]
                    .as_str()
                    .is_some_and(|s| s.starts_with("age1"))
            })
        }
    })
    .await;
    assert!(known, "the recipients never reached the reader's agent");

    let (code, out, err) = as_admin(&reader, &["acl", "init"]);
    assert_eq!(code, Some(0), "{out}{err}");
    for node in ["node:reader", "node:other"] {
        let (code, out, err) = as_admin(&reader, &["acl", "grant", node, "write", ""]);
        assert_eq!(code, Some(0), "{out}{err}");
    }
    // Only a reader writes a key: not through the other node's agent.
    let (code, _, err) = as_admin(
        &other,
        &["secret", "init", "secret/", "--reader", "node:reader"],
    );
    assert_ne!(code, Some(0));
    assert!(err.contains("not among the readers"), "{err}");
    let (code, out, err) = as_admin(
        &reader,
        &["secret", "init", "secret/", "--reader", "node:reader"],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("secret prefix \"secret/\""), "{out}");
    let (code, _, err) = as_admin(
        &reader,
        &["secret", "init", "secret/", "--reader", "node:reader"],
    );
    assert_ne!(code, Some(0), "a second init");
    assert!(err.contains("already a secret prefix"), "{err}");

    // The other node seals with the key it cannot open, once the keyring reaches it.
    let sealing = eventually(Duration::from_secs(30), || {
        let o = o.clone();
        async move {
            let acl = json(&call(&o, Method::GET, "/v1/acl", "").await);
            acl["keyrings"].as_array().is_some_and(|k| k.len() == 1)
        }
    })
    .await;
    assert!(sealing, "the keyring never reached the other node");
    expect(
        &call(
            &o,
            Method::PUT,
            "/v1/kv/secret/db-password",
            CANARY_THROUGH_OTHER,
        )
        .await,
        StatusCode::OK,
    );
    expect(
        &call(
            &r,
            Method::PUT,
            "/v1/kv/secret/api-key",
            CANARY_THROUGH_READER,
        )
        .await,
        StatusCode::OK,
    );
    expect(
        &call(&r, Method::PUT, "/v1/kv/app/plain", "visible").await,
        StatusCode::OK,
    );

    // The reader reads both; the other node answers 403 and never the ciphertext.
    let opened = eventually(Duration::from_secs(30), || {
        let r = r.clone();
        async move {
            let reply = call(&r, Method::GET, "/v1/kv/secret/db-password?raw", "").await;
            reply.status == 200 && reply.body == CANARY_THROUGH_OTHER.as_bytes()
        }
    })
    .await;
    assert!(
        opened,
        "the reader never read the value written through the other node"
    );
    let (code, out, _) = cli(&reader, &["get", "secret/api-key", "--raw"]);
    assert_eq!((code, out.as_str()), (Some(0), CANARY_THROUGH_READER));
    let at_other = eventually(Duration::from_secs(30), || {
        let o = o.clone();
        async move {
            call(&o, Method::GET, "/v1/kv/secret/api-key", "")
                .await
                .status
                == StatusCode::FORBIDDEN.as_u16()
        }
    })
    .await;
    assert!(
        at_other,
        "the other node did not refuse the reader's secret"
    );
    let refused = expect(
        &call(&o, Method::GET, "/v1/kv/secret/db-password", "").await,
        StatusCode::FORBIDDEN,
    );
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot read")),
        "{refused}"
    );
    let (code, _, err) = cli(&other, &["get", "secret/db-password", "--raw"]);
    assert_ne!(code, Some(0));
    assert!(!err.contains("canary"), "{err}");
    // Lists and histories show that a secret exists and is sealed, never a value.
    let listed = expect(
        &call(&o, Method::GET, "/v1/kv?prefix=secret/", "").await,
        StatusCode::OK,
    );
    let text = listed.to_string();
    assert!(text.contains("secret/db-password"), "{text}");
    assert!(
        !text.contains("age-encryption") && !text.contains("canary"),
        "{text}"
    );
    let history = expect(
        &call(&o, Method::GET, "/v1/history/secret/db-password", "").await,
        StatusCode::OK,
    )
    .to_string();
    assert!(history.contains("\"sealed\""), "{history}");
    assert!(
        !history.contains("canary") && !history.contains("age-encryption"),
        "{history}"
    );
    // Plain keys are unchanged.
    let (code, out, _) = cli(&other, &["get", "app/plain", "--raw"]);
    assert_eq!((code, out.as_str()), (Some(0), "visible"));

    // Readers see the plaintext in history and in watch events too; the other node sees
    // `sealed` and no value.
    let reader_history = expect(
        &call(&r, Method::GET, "/v1/history/secret/db-password", "").await,
        StatusCode::OK,
    )
    .to_string();
    assert!(
        reader_history.contains(CANARY_THROUGH_OTHER),
        "{reader_history}"
    );
    let (at_reader, at_other) = (watch(&r).await, watch(&o).await);
    let watched = "canary-2b77-seen-by-watchers";
    expect(
        &call(&o, Method::PUT, "/v1/kv/secret/watched", watched).await,
        StatusCode::OK,
    );
    let (seen_by_reader, seen_by_other) = (
        next_event(at_reader, "secret/watched").await,
        next_event(at_other, "secret/watched").await,
    );
    assert!(seen_by_reader.contains(watched), "{seen_by_reader}");
    assert!(seen_by_other.contains("\"sealed\""), "{seen_by_other}");
    assert!(!seen_by_other.contains(watched), "{seen_by_other}");

    // A token reads a secret through a reader's agent only if it holds `read` over the key.
    let token = |name: &str, grant: &str| {
        let (code, out, err) = as_admin(
            &reader,
            &["token", "create", "--name", name, "--grant", grant],
        );
        assert_eq!(code, Some(0), "{out}{err}");
        let secret = out.lines().next().expect("the token").trim().to_string();
        Client::new(&reader.http, Some(secret)).expect("client")
    };
    let (narrow, wide) = (token("apps", "read:app/"), token("vault", "read:secret/"));
    let denied = call(&narrow, Method::GET, "/v1/kv/secret/api-key?raw", "").await;
    assert_eq!(denied.status, 403);
    assert!(!String::from_utf8_lossy(&denied.body).contains("canary"));
    let granted = call(&wide, Method::GET, "/v1/kv/secret/api-key?raw", "").await;
    assert_eq!(granted.status, 200);
    assert_eq!(granted.body, CANARY_THROUGH_READER.as_bytes());

    let (code, out, err) = cli(&other, &["secret", "recipients", "secret/"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("current\tnode:reader"), "{out}");

    // Nowhere at the other node: not in its data directory (replica, write-ahead log,
    // history, change log), not in its debug log, not in its metrics.
    let metrics = call(&o, Method::GET, "/metrics", "").await;
    for canary in [CANARY_THROUGH_OTHER, CANARY_THROUGH_READER] {
        let files = found_in_files(&other_data, canary.as_bytes());
        assert!(files.is_empty(), "{canary} is in {files:?}");
        assert!(
            !other.log().contains(canary),
            "{canary} is in the other node's log"
        );
        assert!(!String::from_utf8_lossy(&metrics.body).contains(canary));
    }
    assert!(other.log().contains("DEBUG"), "the log was at debug level");
    // The reader holds them sealed too: nothing in plaintext on its disk either.
    let files = found_in_files(&reader_data, CANARY_THROUGH_READER.as_bytes());
    assert!(files.is_empty(), "{files:?}");

    // The readers change: `other` replaces `reader`. A reader writes the new generation (so
    // through `other`), which cannot read the current values: it reports them, and `reseal`
    // through the old reader writes them again under the new generation.
    let (code, out, err) = as_admin(
        &other,
        &["secret", "rotate", "secret/", "--reader", "node:other"],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("resealed 0 values"), "{out}");
    assert!(
        out.contains("unreadable through this agent") && out.contains("secret/db-password"),
        "{out}"
    );
    // The test waits until the old reader seals to the new generation: it has seen the
    // rotation.
    let rotated = eventually(Duration::from_secs(30), || {
        let r = r.clone();
        async move {
            let acl = json(&call(&r, Method::GET, "/v1/acl", "").await);
            acl["keyrings"].as_array().is_some_and(|all| {
                all.iter()
                    .any(|k| k["current"] == true && k["readers"][0] == "node:other")
            })
        }
    })
    .await;
    assert!(rotated, "the rotation never reached the old reader");
    let (code, out, err) = cli(&reader, &["secret", "reseal", "secret/"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("resealed 3 values"), "{out}");
    let after = "canary-5d0e-written-after-the-rotation";
    expect(
        &call(&r, Method::PUT, "/v1/kv/secret/new", after).await,
        StatusCode::OK,
    );
    // The new reader reads every current value; the old one reads none of them, not even
    // what it wrote itself after it saw the rotation.
    for (key, value) in [
        ("secret/db-password", CANARY_THROUGH_OTHER),
        ("secret/api-key", CANARY_THROUGH_READER),
        ("secret/new", after),
    ] {
        let path = format!("/v1/kv/{key}?raw");
        let read = eventually(Duration::from_secs(30), || {
            let (o, path) = (o.clone(), path.clone());
            async move {
                let reply = call(&o, Method::GET, &path, "").await;
                reply.status == 200 && reply.body == value.as_bytes()
            }
        })
        .await;
        assert!(read, "the new reader cannot read {key}");
        let refused = call(&r, Method::GET, &path, "").await;
        assert_eq!(refused.status, 403, "the old reader read {key}");
    }
    let (code, out, _) = cli(&other, &["secret", "recipients", "secret/"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("old\tnode:reader") && out.contains("current\tnode:other"),
        "{out}"
    );
    // The reseal kept each value's author and said why in its signed message.
    let history = json(&call(&o, Method::GET, "/v1/history/secret/db-password", "").await);
    assert!(history.to_string().contains("resealed under"), "{history}");

    // A rollback to a version sealed under the retired generation, made through the old
    // reader (which can open it), is sealed again to the current one: the old reader cannot
    // read what it restored, the new reader can.
    let versions = json(&call(&r, Method::GET, "/v1/history/secret/api-key", "").await);
    let first = versions["versions"]
        .as_array()
        .and_then(|all| all.iter().find(|v| v["message"].is_null()))
        .and_then(|v| v["version"].as_str())
        .expect("the first version")
        .to_string();
    let (code, out, err) = cli(&reader, &["rollback", "secret/api-key", &first]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        call(&r, Method::GET, "/v1/kv/secret/api-key?raw", "")
            .await
            .status,
        403
    );
    let restored = eventually(Duration::from_secs(30), || {
        let o = o.clone();
        async move {
            let reply = call(&o, Method::GET, "/v1/kv/secret/api-key?raw", "").await;
            reply.status == 200 && reply.body == CANARY_THROUGH_READER.as_bytes()
        }
    })
    .await;
    assert!(restored, "the new reader cannot read the restored value");

    // A node that may read nothing still converges: a late joiner catches up with the
    // sealed versions (it answers 403, not 404), a deletion reaches it like any, and it holds
    // no plaintext.
    let late_data = root.path().join("late");
    install_node_certificate(&ca_dir, &late_data, "late");
    let late = Agent::start(&late_data, &["--name", "late", "--join", &reader.gossip]);
    let l = late.client();
    let caught_up = eventually(Duration::from_secs(30), || {
        let l = l.clone();
        async move {
            let mut held = true;
            for key in ["secret/db-password", "secret/api-key", "secret/new"] {
                let reply = call(&l, Method::GET, &format!("/v1/kv/{key}"), "").await;
                held &= reply.status == 403;
            }
            held
        }
    })
    .await;
    assert!(caught_up, "the late joiner never held the sealed versions");
    expect(
        &call(&r, Method::DELETE, "/v1/kv/secret/new", "").await,
        StatusCode::OK,
    );
    let deleted = eventually(Duration::from_secs(30), || {
        let l = l.clone();
        async move { call(&l, Method::GET, "/v1/kv/secret/new", "").await.status == 404 }
    })
    .await;
    assert!(deleted, "the deletion never reached the late joiner");
    for canary in [CANARY_THROUGH_OTHER, CANARY_THROUGH_READER, after] {
        let files = found_in_files(&late_data, canary.as_bytes());
        assert!(files.is_empty(), "{canary} is in {files:?}");
    }
}
