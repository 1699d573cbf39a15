//! The `confmesh` binary as a process: the agent's HTTP API end to end, every bad-input case,
//! the token, three agents on 127.0.0.1 (blocking query and SSE across agents, kill -9 and
//! restart), the command line against a live agent, shutdown, and hostile HTTP clients.
//! Every wait is bounded.

#![cfg(feature = "agent")]

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use bytes::Bytes;
use confmesh::api::{Client, ClientError, Reply};
use hyper::{Method, StatusCode};
use serde_json::Value;

#[path = "../common/mod.rs"]
mod common;

mod acl;
mod api;
mod audit;
mod cli;
mod cluster;
mod limits;
mod secrets;
mod shutdown;
mod tls;
mod tokens;

const BIN: &str = env!("CARGO_BIN_EXE_confmesh");

/// Issues `admin:ops`'s certificate with the CA an agent started with `--dev` made in `data`,
/// into `out`; returns the certificate's and the key's paths.
fn issue_admin(data: &Path, out: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let ca_dir = data.join("tls");
    let made = Command::new(BIN)
        .args(["cert", "admin", "--name", "ops", "--ca-dir"])
        .arg(&ca_dir)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run cli");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    (out.join("admin-ops.pem"), out.join("admin-ops.key"))
}

/// A running agent; killed (SIGKILL) when dropped.
struct Agent {
    child: Child,
    http: String,
    gossip: String,
    /// Its log (standard error), when started with [`Options::log`].
    log: Option<std::path::PathBuf>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How to start an agent beyond `--dev` on free ports.
#[derive(Default)]
struct Options<'a> {
    /// More arguments.
    args: &'a [&'a str],
    /// Environment variables.
    env: &'a [(&'a str, &'a str)],
    /// `ulimit -n` for the agent (soft and hard).
    fd_limit: Option<u32>,
    /// Keep standard error in `<dir>/agent.log`.
    log: bool,
}

impl Agent {
    /// Starts `confmesh agent --dev` on free ports in `dir`, with `extra` arguments, and waits
    /// (up to 30 s) until it prints its addresses.
    fn start(dir: &Path, extra: &[&str]) -> Agent {
        Agent::start_with(
            dir,
            Options {
                args: extra,
                ..Options::default()
            },
        )
    }

    fn start_with(dir: &Path, options: Options<'_>) -> Agent {
        let mut command = match options.fd_limit {
            Some(limit) => {
                let mut sh = Command::new("sh");
                sh.args([
                    "-c",
                    &format!("ulimit -n {limit} && exec \"$0\" \"$@\""),
                    BIN,
                ]);
                sh
            }
            None => Command::new(BIN),
        };
        let log = options.log.then(|| dir.with_extension("log"));
        command
            .args(["agent", "--dev", "--gossip-addr", "127.0.0.1:0"])
            .args(["--http-addr", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(options.args)
            .env("RUST_LOG", "warn")
            .envs(options.env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(match &log {
                Some(path) => Stdio::from(std::fs::File::create(path).expect("log file")),
                None => Stdio::null(),
            });
        let mut child = command.spawn().expect("spawn agent");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (mut http, mut gossip) = (None, None);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let line = line.trim().to_string();
                if let Some(addr) = line.strip_prefix("http:") {
                    // An agent with `--http-tls` prints `https://`: kept, for `Client::with_ca`.
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
            log,
        }
    }

    fn client(&self) -> Client {
        Client::new(&self.http, None).expect("client")
    }

    /// Sends SIGTERM.
    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits up to `limit` for the process to exit; its exit code, `None` if it is still
    /// running.
    fn wait_exit(&mut self, limit: Duration) -> Option<Option<i32>> {
        let step = Duration::from_millis(20);
        for _ in 0..=limit.as_millis() / step.as_millis() {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status.code());
            }
            std::thread::sleep(step);
        }
        None
    }

    /// What the agent logged so far (with [`Options::log`]).
    fn log(&self) -> String {
        self.log
            .as_ref()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .unwrap_or_default()
    }
}

async fn call(client: &Client, method: Method, path: &str, body: &str) -> Reply {
    client
        .send(method, path, Bytes::from(body.to_string()))
        .await
        .expect("the agent answers")
}

/// Raw requests, for tests that check the wire format (status lines, SSE frames) themselves.
trait Raw {
    /// Sends a request and reads the whole answer.
    async fn send(&self, method: Method, path: &str, body: Bytes) -> Result<Reply, ClientError>;
    /// Sends a request and returns the response with its body unread.
    async fn open(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        headers: &[(&str, &str)],
    ) -> Result<hyper::Response<hyper::body::Incoming>, String>;
}

impl Raw for Client {
    async fn send(&self, method: Method, path: &str, body: Bytes) -> Result<Reply, ClientError> {
        self.call(method.as_str(), path, body).await
    }

    async fn open(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        headers: &[(&str, &str)],
    ) -> Result<hyper::Response<hyper::body::Incoming>, String> {
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Full<Bytes>>();
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base_url()));
        if let Some(token) = self.token() {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(http_body_util::Full::new(body))
            .map_err(|e| e.to_string())?;
        http.request(request).await.map_err(|e| e.to_string())
    }
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
        status.as_u16(),
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
