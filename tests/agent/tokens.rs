//! `confmesh token` against a live agent: API tokens made by an admin certificate, each
//! reading and writing only what the policy grants it (403 naming the missing grant), seeing
//! only the keys it may read in get, list and watch, and refused outright (401) when unknown,
//! expired or revoked.

use std::{process::Command, time::Duration};

use bytes::Bytes;
use confmesh::api::{Client, ClientError, WatchEvent};

use crate::{Agent, BIN};

/// The status and message of a refusal.
fn refusal<T: std::fmt::Debug>(result: Result<T, ClientError>) -> (u16, String) {
    match result {
        Err(ClientError::Refused { status, message }) => (status, message),
        other => panic!("not refused: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_read_and_write_only_what_the_policy_grants_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let agent = Agent::start(&data, &["--name", "billing-1"]);
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let out = Command::new(BIN)
            .args(args)
            .envs(env.iter().copied())
            .output()
            .expect("run cli");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (cert, key) = crate::issue_admin(&data, dir.path());
    let admin_env = [
        ("CONFMESH_ADMIN_CERT", cert.to_str().expect("utf-8")),
        ("CONFMESH_ADMIN_KEY", key.to_str().expect("utf-8")),
    ];
    let admin = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--addr", agent.http.as_str()]);
        run(&all, &admin_env)
    };
    for args in [
        &["acl", "init"][..],
        &["acl", "grant", "node:billing-1", "write", ""],
    ] {
        let (code, out, err) = admin(args);
        assert_eq!(code, Some(0), "{args:?}: {out}{err}");
    }
    let operator = agent.client();
    for k in ["a/1", "b/1"] {
        operator
            .put(k, Bytes::from_static(b"v"), None)
            .await
            .expect("the operator writes as its node");
    }

    // A reader of a/, its token written to a file; a writer of a/, printed once; one that
    // expires at once.
    let reader_file = dir.path().join("reader.token");
    let (code, out, err) = admin(&[
        "token",
        "create",
        "--name",
        "reader",
        "--grant",
        "read:a/",
        "--out",
        reader_file.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        !out.contains("cmt_"),
        "the secret went to the file only: {out}"
    );
    let reader_token = std::fs::read_to_string(&reader_file)
        .expect("token file")
        .trim()
        .to_string();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&reader_file).expect("meta").permissions();
        assert_eq!(mode.mode() & 0o777, 0o600, "only its owner may read it");
    }
    let (code, out, err) = admin(&["token", "create", "--name", "writer", "--grant", "write:a/"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let writer_token = out.lines().next().expect("the token").trim().to_string();
    assert!(writer_token.starts_with("cmt_"), "{out}");
    let (code, out, err) = admin(&[
        "token",
        "create",
        "--name",
        "brief",
        "--grant",
        "read:",
        "--expires-in",
        "1s",
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    let brief_token = out.lines().next().expect("the token").trim().to_string();
    let client = |token: &str| Client::new(&agent.http, Some(token.to_owned())).expect("client");
    let (reader, writer) = (client(&reader_token), client(&writer_token));

    // The reader reads a/ and nothing else, and writes nothing.
    assert_eq!(
        reader
            .get("a/1")
            .await
            .expect("readable")
            .winner
            .value
            .as_deref(),
        Some("v")
    );
    let (status, message) = refusal(reader.get("b/1").await);
    assert_eq!(status, 403);
    assert!(
        message.contains("holds no read grant over \"b/1\""),
        "{message}"
    );
    let (status, message) = refusal(reader.put("a/2", Bytes::from_static(b"x"), None).await);
    assert_eq!(status, 403);
    assert!(
        message.contains("holds no write grant over \"a/2\""),
        "{message}"
    );
    let listed: Vec<String> = reader
        .list_all("")
        .await
        .expect("list")
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(
        listed,
        ["a/1"],
        "b/ and the reserved keys are not even named"
    );
    let (status, _) = refusal(reader.history("b/1").await);
    assert_eq!(status, 403);

    // A watch of every key shows the reader only changes under a/.
    let mut watch = reader.watch("", None).await.expect("watch");
    operator
        .put("b/2", Bytes::from_static(b"hidden"), None)
        .await
        .expect("put");
    operator
        .put("a/3", Bytes::from_static(b"shown"), None)
        .await
        .expect("put");
    let first = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("an event within 10 s")
        .expect("an event")
        .expect("not an error");
    match first {
        WatchEvent::Change(change) => assert_eq!(change.key, "a/3", "b/2 is not shown"),
        other => panic!("not a change: {other:?}"),
    }

    // The writer writes a/ as itself, and nothing else.
    writer
        .put("a/w", Bytes::from_static(b"1"), None)
        .await
        .expect("granted");
    let history = operator.history("a/w").await.expect("history");
    let principal = history.versions[0].author.clone().expect("an author");
    assert!(principal.starts_with("token:"), "{principal}");
    let (status, message) = refusal(writer.put("b/w", Bytes::from_static(b"1"), None).await);
    assert_eq!(status, 403);
    assert!(
        message.contains(&format!("{principal} holds no write grant over \"b/w\"")),
        "{message}"
    );

    // The command line reads a token from the environment.
    let (code, out, err) = run(
        &["get", "a/1", "--raw", "--addr", &agent.http],
        &[("CONFMESH_TOKEN", &reader_token)],
    );
    assert_eq!((code, out.as_str()), (Some(0), "v"), "{err}");
    let (code, _, err) = run(
        &["get", "b/1", "--addr", &agent.http],
        &[("CONFMESH_TOKEN", &reader_token)],
    );
    assert_ne!(code, Some(0));
    assert!(err.contains("no read grant"), "{err}");

    // Unknown, expired and revoked tokens are refused outright.
    let unknown = client(&format!("cmt_{}", "0".repeat(64)));
    assert_eq!(refusal(unknown.get("a/1").await).0, 401);
    assert_eq!(refusal(client("cmt_short").get("a/1").await).0, 401);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (status, message) = refusal(client(&brief_token).get("a/1").await);
    assert_eq!(status, 401);
    assert!(message.contains("expired"), "{message}");
    // A blocking query made for a token that expires while it waits ends with a 401.
    let (code, out, err) = admin(&[
        "token",
        "create",
        "--name",
        "waiter",
        "--grant",
        "read:a/",
        "--expires-in",
        "3s",
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    let waiter = client(out.lines().next().expect("the token").trim());
    let current = waiter.get("a/1").await.expect("readable").winner.version;
    let blocked = tokio::time::timeout(
        Duration::from_secs(30),
        waiter.call(
            "GET",
            &format!("/v1/kv/a/1?index={current}&wait=60s"),
            Bytes::new(),
        ),
    )
    .await
    .expect("the query ends long before its 60 s wait")
    .expect("an answer");
    assert_eq!(blocked.status, 401, "{:?}", blocked.body);
    assert!(
        String::from_utf8_lossy(&blocked.body).contains("expired"),
        "{:?}",
        blocked.body
    );

    let (operator_write, operator_message) = refusal(
        operator
            .put_with(
                "a/forged",
                Bytes::from_static(b"x"),
                &confmesh::api::PutParams {
                    author: Some(reader_token_id(&operator, "writer").await),
                    ..Default::default()
                },
            )
            .await,
    );
    assert_eq!(operator_write, 403, "{operator_message}");
    assert!(
        operator_message.contains("is a token"),
        "an operator cannot write in a token's name: {operator_message}"
    );

    let reader_id = reader_token_id(&operator, "reader").await;
    let (code, out, err) = admin(&["token", "revoke", &reader_id]);
    assert_eq!(code, Some(0), "{out}{err}");
    let (status, message) = refusal(reader.get("a/1").await);
    assert_eq!(status, 401);
    assert!(message.contains("revoked"), "{message}");
    // The reader's watch, open since before, ends too, saying why.
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match watch.next().await {
                Some(Ok(WatchEvent::Change(_))) => {}
                other => return other,
            }
        }
    })
    .await
    .expect("the stream ends within 30 s of the revocation");
    match ended {
        Some(Ok(WatchEvent::Error(end))) => assert!(end.error.contains("revoked"), "{end:?}"),
        other => panic!("not an error event: {other:?}"),
    }

    // The list names every token, never a secret.
    let (code, out, err) = run(&["token", "list", "--addr", &agent.http], &[]);
    assert_eq!(code, Some(0), "{err}");
    for name in ["reader", "writer", "brief"] {
        assert!(out.contains(name), "{out}");
    }
    assert!(out.contains("revoked"), "{out}");
    assert!(!out.contains("cmt_"), "{out}");
}

/// The principal of the token named `name`, from the policy.
async fn reader_token_id(operator: &Client, name: &str) -> String {
    let acl = operator.acl().await.expect("acl");
    acl.tokens
        .iter()
        .find(|t| t.name == name)
        .map(|t| t.principal.clone())
        .expect("the token")
}
