//! The HTTP fuzz target's server (`fuzz/fuzz_targets/http_request.rs`, through
//! [`crate::fuzzing`]): a real single-node [`Mesh`] with a data directory, behind the API's
//! router (`http::router`, with and without a token), serving one connection at a time by the
//! listener's own per-connection code ([`Standalone`]: hyper, `ConnIo`, the limits) over an
//! in-memory pipe instead of a socket.
//!
//! The client writes its bytes and reads everything the server sends until the server closes
//! the connection. Like a client that has nothing more to say, it closes its sending side once
//! the server has read every byte and has no request in flight (or, if told to, right after its
//! bytes). A long answer (an event stream, a blocking query) is ended as soon as it starts,
//! the way the server ends one: by making room for another connection, or by the stop signal
//! of a shutdown. Every exchange has [`HTTP_DEADLINE`] of real time to end.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    Router,
    extract::Request,
    http::Method,
    middleware::{self, Next},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    sync::watch,
};

use super::{
    http::{self, Api, ApiState},
    metrics::Metrics,
    server::{Limits, Standalone},
};
use crate::runtime::{Mesh, tls::DevCa};

/// The bearer token of the server when [`HttpClient::token_required`] is set.
pub const HTTP_TOKEN: &str = "fuzz-token";

/// How long (real time) an exchange may take, from the first byte written until the server has
/// closed the connection.
pub const HTTP_DEADLINE: Duration = Duration::from_millis(500);

/// The server's limits: short, so that a body that never arrives costs little time.
const LIMITS: Limits = Limits {
    max_connections: 1,
    header_timeout: Duration::from_millis(200),
    body_timeout: Duration::from_millis(50),
    write_timeout: Duration::from_millis(200),
};

/// The most bytes of an answer kept ([`HttpExchange::truncated`] past it).
const MAX_OUTPUT: usize = 8 << 20;

/// The pipe's buffer, each way.
const PIPE_BYTES: usize = 64 << 10;

/// How the connection goes, beyond the bytes the client sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpClient {
    /// The server requires the bearer token [`HTTP_TOKEN`] (on every route but
    /// `/v1/health`).
    pub token_required: bool,
    /// Long answers end by the stop signal, as at shutdown (otherwise by making room for
    /// another connection, as at the connection cap).
    pub stop_ends_long_answers: bool,
    /// The client closes its sending side right after its bytes, without waiting for answers.
    pub half_close: bool,
}

impl HttpClient {
    /// The options a fuzz input's first byte picks: bit 0 [`HttpClient::token_required`], bit 1
    /// [`HttpClient::stop_ends_long_answers`], bit 2 [`HttpClient::half_close`].
    pub fn from_byte(byte: u8) -> HttpClient {
        HttpClient {
            token_required: byte & 1 != 0,
            stop_ends_long_answers: byte & 2 != 0,
            half_close: byte & 4 != 0,
        }
    }

    /// The byte [`HttpClient::from_byte`] reads as these options.
    pub fn to_byte(self) -> u8 {
        u8::from(self.token_required)
            | u8::from(self.stop_ends_long_answers) << 1
            | u8::from(self.half_close) << 2
    }
}

/// What happened on one connection.
#[derive(Clone, Debug, Default)]
pub struct HttpExchange {
    /// Every byte the server sent (the first 8 MiB of them).
    pub output: Vec<u8>,
    /// Whether the server sent more than was kept.
    pub truncated: bool,
    /// One entry per request that reached the router, in order: whether it was a `HEAD`
    /// (whose answer has no body).
    pub head_requests: Vec<bool>,
    /// Whether the server closed the connection within [`HTTP_DEADLINE`].
    pub closed: bool,
    /// How long the exchange took.
    pub elapsed: Duration,
}

/// A node and its API, serving one connection at a time on a current-thread runtime of its own.
pub struct HttpServer {
    runtime: tokio::runtime::Runtime,
    /// The router without a token, and with [`HTTP_TOKEN`]; both on the same node.
    open: Router,
    guarded: Router,
    /// The API's stop signal (set only while a connection is told to shut down).
    stop: watch::Sender<bool>,
    /// Whether each request of the current connection is a `HEAD`.
    head_requests: Arc<Mutex<Vec<bool>>>,
    /// Kept running for the process's lifetime.
    _mesh: Mesh,
}

impl HttpServer {
    /// Starts the node (on 127.0.0.1, a port of the OS's choosing, no peers) with a data
    /// directory in the temporary directory. The directory is removed once the database is
    /// open: its file lives until the process exits, and nothing is left behind.
    ///
    /// # Errors
    ///
    /// If the runtime, the certificates or the node cannot start.
    pub fn start() -> Result<HttpServer, Box<dyn std::error::Error + Send + Sync>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // One directory per server (tests start several in one process).
        static SERVERS: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "confmesh-fuzz-http-{}-{}",
            std::process::id(),
            SERVERS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let tls = DevCa::generate("confmesh fuzz")?.node_config("fuzz")?;
        let started =
            runtime.block_on(Mesh::builder().tls(tls).name("fuzz").data_dir(&dir).start());
        let _ = std::fs::remove_dir_all(&dir);
        let mesh = started?;
        let (stop, stopping) = watch::channel(false);
        let api = |token: Option<&str>| {
            Api::new(ApiState {
                mesh: mesh.clone(),
                token: token.map(Arc::from),
                metrics: Arc::new(Metrics::default()),
                limits: LIMITS,
                stop: stopping.clone(),
            })
        };
        let head_requests = Arc::new(Mutex::new(Vec::new()));
        // Records each request as it reaches the router; decides nothing.
        let recorded = |router: Router| {
            let head_requests = Arc::clone(&head_requests);
            router.layer(middleware::from_fn(move |request: Request, next: Next| {
                lock(&head_requests).push(request.method() == Method::HEAD);
                next.run(request)
            }))
        };
        Ok(HttpServer {
            runtime,
            open: recorded(http::router(api(None))),
            guarded: recorded(http::router(api(Some(HTTP_TOKEN)))),
            stop,
            head_requests,
            _mesh: mesh,
        })
    }

    /// Serves one connection on which the client sends `request` (any bytes), and returns
    /// what the server sent.
    pub fn exchange(&self, client: HttpClient, request: &[u8]) -> HttpExchange {
        lock(&self.head_requests).clear();
        self.stop.send_replace(false);
        let mut exchange = self.runtime.block_on(self.serve(client, request));
        exchange.head_requests = std::mem::take(&mut *lock(&self.head_requests));
        self.stop.send_replace(false);
        exchange
    }

    async fn serve(&self, client: HttpClient, request: &[u8]) -> HttpExchange {
        let start = tokio::time::Instant::now();
        let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
        let read_by_server = Arc::new(AtomicUsize::new(0));
        let connection = Standalone::open();
        let app = if client.token_required {
            &self.guarded
        } else {
            &self.open
        };
        let served = tokio::spawn(connection.serve(
            Counted {
                inner: theirs,
                read: Arc::clone(&read_by_server),
            },
            app.clone(),
            LIMITS,
            self.stop.subscribe(),
        ));
        let (mut reader, mut writer) = tokio::io::split(ours);
        let mut exchange = HttpExchange::default();
        let receive = async {
            let mut buf = vec![0; 16 << 10];
            while let Ok(n @ 1..) = reader.read(&mut buf).await {
                let keep = n.min(MAX_OUTPUT - exchange.output.len());
                exchange.output.extend_from_slice(&buf[..keep]);
                exchange.truncated |= keep < n;
            }
        };
        let send = async {
            let _ = writer.write_all(request).await;
            let mut closed = client.half_close;
            if closed {
                let _ = writer.shutdown().await;
            }
            let mut ended_long_answer = false;
            let mut quiet = 0;
            while !served.is_finished() {
                if connection.is_streaming() && !ended_long_answer {
                    ended_long_answer = true;
                    if client.stop_ends_long_answers {
                        self.stop.send_replace(true);
                    } else {
                        connection.make_room(LIMITS.write_timeout);
                    }
                }
                // Read in full and answered: the client has nothing more to say. (Twice in a
                // row, so that a request read but not yet dispatched is not missed.)
                let done =
                    read_by_server.load(Ordering::Acquire) == request.len() && connection.is_idle();
                quiet = if done { quiet + 1 } else { 0 };
                if quiet >= 2 && !closed {
                    closed = true;
                    let _ = writer.shutdown().await;
                }
                tokio::task::yield_now().await;
            }
        };
        let ended = tokio::time::timeout(HTTP_DEADLINE, async { tokio::join!(receive, send) })
            .await
            .is_ok();
        exchange.closed = ended;
        exchange.elapsed = start.elapsed();
        if !exchange.closed {
            served.abort();
        }
        let _ = served.await;
        exchange
    }
}

/// A mutex's contents, also after a panic elsewhere.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The server's end of the pipe, counting the bytes the server has read.
struct Counted<S> {
    inner: S,
    read: Arc<AtomicUsize>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        self.read.fetch_add(read, Ordering::AcqRel);
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(haystack: &[u8], needle: &[u8]) -> usize {
        haystack
            .windows(needle.len())
            .filter(|w| *w == needle)
            .count()
    }

    #[test]
    fn each_exchange_is_answered_and_closed_whatever_the_request_waits_for() {
        let server = HttpServer::start().expect("start");
        let open = HttpClient::default();
        let health = server.exchange(open, b"GET /v1/health HTTP/1.1\r\nhost: x\r\n\r\n");
        assert!(health.closed, "{health:?}");
        assert!(
            health.output.starts_with(b"HTTP/1.1 200 OK\r\n"),
            "{health:?}"
        );
        assert_eq!(health.head_requests, [false]);

        // Two requests on one connection, the second reading what the first wrote.
        let two = server.exchange(
            open,
            b"PUT /v1/kv/app/x HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello\
              HEAD /v1/kv/app/x HTTP/1.1\r\nhost: x\r\n\r\n\
              GET /v1/kv/app/x?raw=1 HTTP/1.1\r\nhost: x\r\n\r\n",
        );
        assert!(two.closed, "{two:?}");
        assert_eq!(count(&two.output, b"HTTP/1.1 200 OK"), 3, "{two:?}");
        assert!(two.output.ends_with(b"\r\n\r\nhello"), "{two:?}");
        assert_eq!(two.head_requests, [false, true, false]);

        // The token, when the server requires one.
        let guarded = HttpClient {
            token_required: true,
            ..open
        };
        let refused = server.exchange(guarded, b"GET /v1/kv/app/x HTTP/1.1\r\nhost: x\r\n\r\n");
        assert!(refused.output.starts_with(b"HTTP/1.1 401 "), "{refused:?}");
        let request = format!(
            "GET /v1/kv/app/x HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {HTTP_TOKEN}\r\n\r\n"
        );
        let allowed = server.exchange(guarded, request.as_bytes());
        assert!(allowed.output.starts_with(b"HTTP/1.1 200 "), "{allowed:?}");

        // Long answers end, by making room or by the stop signal; a body that never comes
        // ends at the body timeout.
        for client in [
            open,
            HttpClient {
                stop_ends_long_answers: true,
                ..open
            },
        ] {
            for request in [
                &b"GET /v1/watch?prefix=app/ HTTP/1.1\r\nhost: x\r\n\r\n"[..],
                b"GET /v1/kv/app/x?index=none&wait=60s HTTP/1.1\r\nhost: x\r\n\r\n",
                b"GET /v1/kv/app/none?index=none HTTP/1.1\r\nhost: x\r\n\r\n",
                b"PUT /v1/kv/app/y HTTP/1.1\r\nhost: x\r\ncontent-length: 9\r\n\r\nabc",
            ] {
                let exchange = server.exchange(client, request);
                assert!(exchange.closed, "{client:?} {exchange:?}");
                assert!(exchange.output.starts_with(b"HTTP/1.1 "), "{exchange:?}");
            }
        }

        // hyper's own answer to what it cannot parse is the API's JSON error.
        let garbage = server.exchange(open, b"GARBAGE\r\n\r\n");
        assert!(garbage.closed);
        assert!(
            garbage
                .output
                .starts_with(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json"),
            "{garbage:?}"
        );
        assert!(garbage.head_requests.is_empty());
    }

    #[test]
    fn an_http_1_0_client_gets_json_errors_too() {
        // After a keep-alive HTTP/1.0 request hyper answers in HTTP/1.0, and its answer to a
        // malformed request went out as it was, without a body (seen with the http_request
        // target; its input is kept in fuzz/regressions/http_request/).
        let server = HttpServer::start().expect("start");
        let exchange = server.exchange(
            HttpClient::default(),
            b"GET /v1/health HTTP/1.0\r\nconnection: keep-alive\r\n\r\nGARBAGE\r\n\r\n",
        );
        assert!(exchange.closed, "{exchange:?}");
        let output = String::from_utf8_lossy(&exchange.output);
        let last = output.rfind("HTTP/1.").map_or("", |i| &output[i..]);
        assert!(
            last.starts_with("HTTP/1.0 400 Bad Request\r\ncontent-type: application/json\r\n")
                && last.ends_with("\r\n\r\n{\"error\":\"malformed HTTP request\"}"),
            "{output}"
        );
    }

    #[test]
    fn the_options_byte_round_trips() {
        for byte in 0..8 {
            assert_eq!(HttpClient::from_byte(byte).to_byte(), byte);
        }
    }
}
