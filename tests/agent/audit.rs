//! `GET /v1/audit` and `confmesh audit`: recent changes under a prefix, newest first, with the
//! author and message each writer signed, without values; reserved keys only when asked for.

use std::process::Command;

use bytes::Bytes;
use confmesh::api::types::{DeleteParams, PutParams};

use crate::{Agent, BIN};

fn put_params(author: &str, message: &str) -> PutParams {
    PutParams {
        author: Some(author.into()),
        message: Some(message.into()),
        ..PutParams::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_lists_changes_newest_first_with_their_authors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Agent::start(dir.path(), &[]);
    let client = agent.client();
    let v = || Bytes::from_static(b"secret-ish value");
    client
        .put_with("a/x", v(), &put_params("alice", "first"))
        .await
        .expect("put");
    client
        .put_with("b/y", v(), &put_params("dave", "other prefix"))
        .await
        .expect("put");
    client
        .put_with("a/x", v(), &put_params("bob", "second"))
        .await
        .expect("put");
    let gone = DeleteParams {
        author: Some("carol".into()),
        message: Some("gone".into()),
    };
    client.delete_with("a/x", &gone).await.expect("delete");

    let under_a = client.audit("a/", None).await.expect("audit");
    let who: Vec<(&str, Option<&str>, bool)> = under_a
        .changes
        .iter()
        .map(|c| (c.key.as_str(), c.author.as_deref(), c.deleted))
        .collect();
    assert_eq!(
        who,
        [
            ("a/x", Some("carol"), true),
            ("a/x", Some("bob"), false),
            ("a/x", Some("alice"), false)
        ],
        "newest first, only under the prefix"
    );
    assert!(under_a.changes.iter().all(|c| c.signed));
    assert_eq!(under_a.changes[0].message.as_deref(), Some("gone"));
    assert!(
        under_a
            .changes
            .windows(2)
            .all(|w| w[0].time_ms >= w[1].time_ms),
        "ordered by time"
    );

    // A limit keeps the newest; reserved keys stay out unless asked for.
    let newest = client.audit("", Some(2)).await.expect("audit");
    let authors: Vec<_> = newest.changes.iter().map(|c| c.author.as_deref()).collect();
    assert_eq!(authors, [Some("carol"), Some("bob")]);
    let all = client.audit("", Some(1000)).await.expect("audit");
    assert_eq!(all.changes.len(), 4);
    assert!(all.changes.iter().all(|c| !c.key.starts_with("_confmesh/")));
    let reserved = client.audit("_confmesh/", None).await.expect("audit");
    assert!(
        reserved
            .changes
            .iter()
            .any(|c| c.key.starts_with("_confmesh/members/")),
        "the member record is audited when asked for: {reserved:?}"
    );

    // No value travels in the trail.
    let raw = agent_get(&agent, "/v1/audit?prefix=a/");
    assert!(!raw.contains("secret-ish"), "{raw}");

    // The command line: one line per change, tab-separated.
    let out = Command::new(BIN)
        .args(["audit", "a/", "--addr", &agent.http])
        .output()
        .expect("run cli");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].contains("\ta/x\t"), "{text}");
    assert!(lines[0].ends_with("\tdeleted\tcarol\tgone"), "{text}");
    assert!(lines[2].ends_with("\twritten\talice\tfirst"), "{text}");
}

/// The body of a GET, as text (with curl's absence not an option here: a raw socket).
fn agent_get(agent: &Agent, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(&agent.http).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    let _ = stream.read_to_string(&mut out);
    out
}
