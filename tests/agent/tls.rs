//! The HTTP API over TLS (`http_tls`): a client that trusts the cluster CA is served (the typed
//! client, the command line, curl), one that does not is refused, and plaintext or silence on
//! the TLS port gets no answer and does not hold the connection.

use std::{
    io::{ErrorKind, Read, Write},
    net::TcpStream,
    process::Command,
    time::Duration,
};

use bytes::Bytes;
use confmesh::{
    api::{Client, ClientError},
    runtime::tls::DevCa,
};

use crate::{Agent, BIN};

/// The agent's address without its scheme.
fn host_port(agent: &Agent) -> &str {
    agent
        .http
        .strip_prefix("https://")
        .expect("an agent with --http-tls prints an https:// address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_over_tls_serves_clients_that_trust_the_cluster_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Agent::start(dir.path(), &["--http-tls"]);
    let ca_path = dir.path().join("tls").join("ca.pem");
    let ca = std::fs::read(&ca_path).expect("the dev CA");

    // The typed client, trusting the cluster CA.
    let client = Client::with_ca(&agent.http, None, Some(&ca)).expect("client");
    client
        .put("app/tls", Bytes::from_static(b"over tls"), None)
        .await
        .expect("put over TLS");
    let got = client.get_raw("app/tls").await.expect("get over TLS");
    assert_eq!(&got[..], b"over tls");

    // Without the CA, an https:// address is refused before connecting.
    assert!(matches!(
        Client::new(&agent.http, None),
        Err(ClientError::Tls(_))
    ));
    // Trusting another CA, the agent's certificate is refused.
    let other = DevCa::generate("another CA").expect("CA");
    let stranger =
        Client::with_ca(&agent.http, None, Some(other.cert_pem().as_bytes())).expect("client");
    match stranger.get_raw("app/tls").await {
        Err(ClientError::Unreachable { cause, .. }) => {
            assert!(cause.contains("certificate"), "{cause}");
        }
        other => panic!("a certificate of another CA was accepted: {other:?}"),
    }

    // The command line, with --ca-cert (and without it: a usage error naming the fix).
    let out = Command::new(BIN)
        .args([
            "get",
            "app/tls",
            "--raw",
            "--addr",
            &agent.http,
            "--ca-cert",
        ])
        .arg(&ca_path)
        .output()
        .expect("run cli");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, b"over tls");
    let out = Command::new(BIN)
        .args(["get", "app/tls", "--addr", &agent.http])
        .env_remove("CONFMESH_CA_CERT")
        .output()
        .expect("run cli");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ca-cert"));

    // curl, as an operator would use it. CI installs curl and requires this part.
    match Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&ca_path)
        .arg(format!("{}/v1/kv/app/tls?raw", agent.http))
        .output()
    {
        Ok(out) => {
            assert!(out.status.success(), "curl: {out:?}");
            assert_eq!(out.stdout, b"over tls");
        }
        Err(e) if std::env::var_os("CI_REQUIRE_CURL").is_some() => {
            panic!("curl is required here: {e}")
        }
        Err(e) => eprintln!("curl not run ({e}); .ci/run installs it"),
    }
}

#[test]
fn plaintext_and_silence_on_the_tls_port_get_no_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Agent::start(dir.path(), &["--http-tls", "--http-header-timeout", "1s"]);
    let addr = host_port(&agent).to_string();

    // Plaintext HTTP: no HTTP answer, and the connection ends.
    let mut plain = TcpStream::connect(&addr).expect("connect");
    plain
        .write_all(b"GET /v1/health HTTP/1.1\r\nhost: x\r\n\r\n")
        .expect("write");
    let answer = until_closed(&mut plain);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plaintext was answered: {:?}",
        String::from_utf8_lossy(&answer)
    );

    // A client that connects and says nothing is dropped after the header timeout (1 s):
    // the read ends well before its own 15 s timeout.
    let mut silent = TcpStream::connect(&addr).expect("connect");
    let got = until_closed(&mut silent);
    assert!(got.is_empty(), "the silent connection got bytes: {got:?}");
}

/// Reads until the agent closes the connection (or resets it), and returns what it sent;
/// panics if it is still open after 15 s.
fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("the agent held the connection open for 15 s")
            }
            Err(_) => return out,
        }
    }
}
