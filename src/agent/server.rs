//! The HTTP listener: accepts connections and serves the router on each, within limits a
//! hostile client cannot get around, and drains them on shutdown.
//!
//! - **Connections are capped** ([`Limits::max_connections`], lowered to fit the process's
//!   file-descriptor limit). At the cap, the oldest connection with no request in flight (an
//!   idle keep-alive, or one still sending its headers) is closed to make room; if every
//!   connection is answering a request, the newcomer gets a 503 and is closed. So idle
//!   sockets can never lock out `/v1/health`.
//! - **Timeouts:** a request's headers must arrive within [`Limits::header_timeout`] of the
//!   connection being ready for them (this also closes keep-alive connections left idle that
//!   long); a body within [`Limits::body_timeout`] (enforced where bodies are read, in
//!   `http`); a response the client stops reading fails after [`Limits::write_timeout`].
//! - **Every error is JSON:** hyper answers malformed requests itself, with an empty body; the
//!   connection's I/O replaces those answers with the API's JSON error ([`ConnIo`]).
//! - **Shutdown:** when the stop signal is set, the listener closes, each connection finishes
//!   the request it is answering and closes (the handlers end event streams and blocking
//!   queries on the same signal), and whatever is still open after the drain time is dropped.

use std::{
    collections::BTreeMap,
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use axum::{Router, body::Body};
use http_body_util::BodyExt;
use hyper::{Request, StatusCode, body::Incoming, server::conn::http1};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Notify, watch},
    task::JoinSet,
    time::Sleep,
};
use tower::ServiceExt;

use crate::runtime::throttle::LogThrottle;

/// File descriptors kept free for everything but HTTP connections (the QUIC socket, the
/// database, the runtime's own), when the connection cap is fitted to the process's limit.
const RESERVED_FDS: u64 = 32;

/// Limits on what clients of the HTTP API can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The most connections open at once. Default 1,024.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers, counted from when the
    /// connection is ready for a request: a keep-alive connection idle this long is closed
    /// too. Default 10 s.
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body, in full. Default 30 s.
    pub body_timeout: Duration,
    /// How long a response may wait for a client that stopped reading it. Default 30 s.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
        }
    }
}

impl Limits {
    /// These limits with the connection cap lowered, if need be, to what the process's
    /// file-descriptor limit leaves once the soft limit is raised to the hard one.
    pub(crate) fn fitted_to_fd_limit(self) -> Limits {
        #[cfg(unix)]
        {
            let available = rlimit::increase_nofile_limit(u64::MAX)
                .ok()
                .map(|limit| limit.saturating_sub(RESERVED_FDS).max(1));
            if let Some(available) = available.filter(|&a| a < self.max_connections as u64) {
                tracing::warn!(
                    max_connections = self.max_connections,
                    fitted = available,
                    "the file-descriptor limit is low: the HTTP connection cap is lowered to fit it"
                );
                return Limits {
                    max_connections: usize::try_from(available).unwrap_or(1),
                    ..self
                };
            }
        }
        self
    }
}

/// Serves `app` on `listener` until `stop` is set, then drains the open connections for up
/// to `drain` and drops what is left.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) {
    let table = Arc::new(Table::default());
    let mut tasks = JoinSet::new();
    static ACCEPT_ERRORS: LogThrottle = LogThrottle::new(Duration::from_secs(10));
    static REFUSED: LogThrottle = LogThrottle::new(Duration::from_secs(10));
    loop {
        // At the cap, close an idle connection and wait until it is gone before accepting, so
        // the file descriptors in use never exceed the cap. With none idle, accept and refuse.
        if table.len() >= limits.max_connections && table.evict_idle() {
            tokio::select! {
                biased;
                _ = stop.wait_for(|stopped| *stopped) => break,
                Some(_) = tasks.join_next() => {}
                () = table.closed.notified() => {}
            }
            continue;
        }
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|stopped| *stopped) => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors: make room, and do not spin.
                let exhausted = matches!(e.raw_os_error(), Some(code) if is_fd_exhaustion(code));
                if exhausted {
                    table.evict_idle();
                }
                if let Some(suppressed) = ACCEPT_ERRORS.allow() {
                    tracing::warn!(cause = %e, suppressed, "cannot accept an HTTP connection");
                }
                tokio::time::sleep(Duration::from_millis(if exhausted { 10 } else { 1 })).await;
                continue;
            }
        };
        if table.len() >= limits.max_connections {
            if let Some(suppressed) = REFUSED.allow() {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    suppressed,
                    "HTTP connection refused: every connection is answering a request"
                );
            }
            refuse(&stream);
            continue;
        }
        let (id, connection) = table.open();
        let table = Arc::clone(&table);
        let app = app.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            serve_connection(stream, app, limits, Arc::clone(&connection), stop).await;
            table.close(id);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(drain, async { while tasks.join_next().await.is_some() {} }).await;
    if !tasks.is_empty() {
        tracing::warn!(
            open = tasks.len(),
            "HTTP connections still open after the grace period are closed"
        );
    }
    tasks.abort_all();
}

fn is_fd_exhaustion(code: i32) -> bool {
    // EMFILE and ENFILE on Linux and the BSDs.
    code == 24 || code == 23
}

/// Answers a connection over the cap with a 503, best effort, and closes it.
fn refuse(stream: &TcpStream) {
    let _ = stream.try_write(&json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many open connections; try again",
    ));
}

/// One connection, from accept to close.
async fn serve_connection(
    stream: TcpStream,
    app: Router,
    limits: Limits,
    connection: Arc<Connection>,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(ConnIo::new(
        stream,
        limits.write_timeout,
        Arc::clone(&connection),
    ));
    let service = {
        let connection = Arc::clone(&connection);
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let in_flight = InFlight::begin(&connection);
            let app = app.clone();
            async move {
                let response = app.oneshot(request.map(Body::new)).await;
                // The request counts as in flight until its response body is dropped.
                response.map(|r| {
                    r.map(|body| {
                        Body::new(body.map_frame(move |frame| {
                            let _ = &in_flight;
                            frame
                        }))
                    })
                })
            }
        })
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let served = builder.serve_connection(io, service);
    tokio::pin!(served);
    tokio::select! {
        result = served.as_mut() => return log_end(result),
        _ = connection.evicted.notified() => return,
        _ = stop.wait_for(|stopped| *stopped) => served.as_mut().graceful_shutdown(),
    }
    tokio::select! {
        result = served => log_end(result),
        _ = connection.evicted.notified() => {}
    }
}

fn log_end(result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        tracing::debug!(cause = %e, "HTTP connection ended");
    }
}

/// What the accept loop knows of one open connection.
#[derive(Debug, Default)]
struct Connection {
    /// Requests being answered, from the handler's call until the response body is dropped.
    in_flight: AtomicUsize,
    /// Set when the connection is closed to make room.
    evicted: Notify,
    /// Whether it was told to close to make room.
    evicting: AtomicBool,
}

/// Counts a request as in flight while it lives.
struct InFlight(Arc<Connection>);

impl InFlight {
    fn begin(connection: &Arc<Connection>) -> InFlight {
        connection.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(connection))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The open connections, oldest first.
#[derive(Debug, Default)]
struct Table {
    inner: Mutex<TableInner>,
    /// Told whenever a connection has closed.
    closed: Notify,
}

#[derive(Debug, Default)]
struct TableInner {
    next_id: u64,
    open: BTreeMap<u64, Arc<Connection>>,
}

impl Table {
    fn lock(&self) -> std::sync::MutexGuard<'_, TableInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn len(&self) -> usize {
        self.lock().open.len()
    }

    fn open(&self) -> (u64, Arc<Connection>) {
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        let connection = Arc::new(Connection::default());
        inner.open.insert(id, Arc::clone(&connection));
        (id, connection)
    }

    /// Forgets a connection whose socket is closed.
    fn close(&self, id: u64) {
        self.lock().open.remove(&id);
        self.closed.notify_one();
    }

    /// Tells the oldest connection with no request in flight to close (it stays counted until
    /// its socket is closed); `false` if none is idle or closing already.
    fn evict_idle(&self) -> bool {
        let inner = self.lock();
        let mut idle = inner
            .open
            .values()
            .filter(|c| c.in_flight.load(Ordering::Acquire) == 0);
        let Some(connection) = idle.next() else {
            return false;
        };
        if !connection.evicting.swap(true, Ordering::AcqRel) {
            // A stored permit: the connection's task sees it even if it is not waiting yet.
            connection.evicted.notify_one();
        }
        true
    }
}

/// A connection's socket as hyper sees it: writes that a client stopped reading fail after
/// the write timeout, and hyper's own error answers (a malformed request, headers too large)
/// are replaced with the API's JSON error.
struct ConnIo {
    stream: TcpStream,
    write_timeout: Duration,
    connection: Arc<Connection>,
    /// Armed while a write is pending.
    stalled: Option<Pin<Box<Sleep>>>,
    /// A JSON answer written in place of hyper's, and how much of it is written.
    replacement: Option<(Vec<u8>, usize)>,
}

impl ConnIo {
    fn new(stream: TcpStream, write_timeout: Duration, connection: Arc<Connection>) -> ConnIo {
        ConnIo {
            stream,
            write_timeout,
            connection,
            stalled: None,
            replacement: None,
        }
    }

    /// Fails a write that has been pending for longer than the write timeout.
    fn watch_stall<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(result) => {
                self.stalled = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let timeout = self.write_timeout;
                let stalled = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if stalled.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client stopped reading the response",
                    )));
                }
                Poll::Pending
            }
        }
    }

    /// Writes what is left of a replacement answer.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.replacement {
            if *written == bytes.len() {
                self.replacement = None;
                break;
            }
            let poll = Pin::new(&mut self.stream).poll_write(cx, &bytes[*written..]);
            let n = ready!(self.watch_stall(cx, poll))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            if let Some((_, written)) = &mut self.replacement {
                *written += n;
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Whether `buf` is hyper's own error answer, to be replaced; it is written only when no
    /// request is in flight, has no body and no content type.
    fn replace_if_automatic(&mut self, buf: &[u8]) -> bool {
        if self.connection.in_flight.load(Ordering::Acquire) != 0 {
            return false;
        }
        let Some(status) = automatic_error_status(buf) else {
            return false;
        };
        let message = match status {
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "request headers too large",
            StatusCode::URI_TOO_LONG => "request URI too long",
            _ => "malformed HTTP request",
        };
        self.replacement = Some((json_response(status, message), 0));
        true
    }
}

/// The status of an answer hyper wrote itself: a complete head with no body (`content-length:
/// 0`, no content type) and an error status. Every answer of the API's handlers has a JSON
/// body.
fn automatic_error_status(buf: &[u8]) -> Option<StatusCode> {
    let head = buf.strip_suffix(b"\r\n\r\n")?;
    if head.windows(4).any(|w| w == b"\r\n\r\n") {
        return None;
    }
    let status = head.strip_prefix(b"HTTP/1.1 ")?.get(..3)?;
    let status = StatusCode::from_bytes(status).ok()?;
    if !(status.is_client_error() || status.is_server_error()) {
        return None;
    }
    let head = head.to_ascii_lowercase();
    let has = |needle: &[u8]| head.windows(needle.len()).any(|w| w == needle);
    (has(b"\r\ncontent-length: 0\r\n") || head.ends_with(b"\r\ncontent-length: 0"))
        .then_some(())
        .filter(|()| !has(b"\r\ncontent-type:"))
        .map(|()| status)
}

/// A complete HTTP/1.1 answer with a JSON error body, closing the connection.
fn json_response(status: StatusCode, message: &str) -> Vec<u8> {
    let body = serde_json::json!({ "error": message }).to_string();
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
    )
    .into_bytes()
}

impl AsyncRead for ConnIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_replacement(cx))?;
        if this.replace_if_automatic(buf) {
            return Poll::Ready(Ok(buf.len()));
        }
        let poll = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.watch_stall(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_replacement(cx))?;
        let mut nonempty = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (nonempty.next(), nonempty.next())
            && this.replace_if_automatic(only)
        {
            return Poll::Ready(Ok(only.len()));
        }
        let poll = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.watch_stall(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bodiless_error_answers_are_replaced() {
        let automatic = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 17:00:00 GMT\r\n\r\n";
        assert_eq!(
            automatic_error_status(automatic),
            Some(StatusCode::BAD_REQUEST)
        );
        let too_large =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(
            automatic_error_status(too_large),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        for ours in [
            &b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 22\r\n\r\n{\"error\":\"no such key\"}",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nHTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
            b"some value bytes",
        ] {
            assert_eq!(
                automatic_error_status(ours),
                None,
                "{}",
                String::from_utf8_lossy(ours)
            );
        }
    }

    #[test]
    fn the_oldest_idle_connection_is_evicted_never_a_busy_one() {
        let table = Table::default();
        let (_, answering) = table.open();
        let (_, idle) = table.open();
        let (_, young) = table.open();
        let _request = InFlight::begin(&answering);
        let idle_id = table
            .lock()
            .open
            .iter()
            .find(|(_, c)| Arc::ptr_eq(c, &idle))
            .map(|(id, _)| *id)
            .expect("open");
        assert!(table.evict_idle(), "one connection is idle");
        assert!(
            idle.evicting.load(Ordering::Acquire),
            "the oldest idle connection was kept"
        );
        assert!(!answering.evicting.load(Ordering::Acquire));
        assert!(!young.evicting.load(Ordering::Acquire));
        assert_eq!(table.len(), 3, "counted until its socket is closed");
        assert!(table.evict_idle(), "waits for the one closing");
        assert!(!young.evicting.load(Ordering::Acquire), "one at a time");
        table.close(idle_id);
        assert_eq!(table.len(), 2);
        let _other = InFlight::begin(&young);
        assert!(
            !table.evict_idle(),
            "every connection is answering a request"
        );
    }
}
