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
//!   connection's I/O replaces those answers with the API's JSON error ([`ConnIo`]), in the
//!   HTTP version hyper answered in (1.0 to a client that sent a keep-alive HTTP/1.0 request).
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
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use axum::{Router, body::Body};
use http_body_util::BodyExt;
use hyper::{Request, StatusCode, Version, body::Incoming, server::conn::http1};
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

/// How long a connection over the cap waits for another to close before it is refused.
const MAKE_ROOM_WAIT: Duration = Duration::from_secs(1);

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
/// to `drain` and drops what is left. With `tls`, each connection first completes a TLS
/// handshake, within the header timeout (a client that connects and stays silent, or speaks
/// plaintext, is dropped).
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) {
    let table = Arc::new(Table::default());
    let mut tasks = JoinSet::new();
    static ACCEPT_ERRORS: LogThrottle = LogThrottle::new(Duration::from_secs(10));
    static REFUSED: LogThrottle = LogThrottle::new(Duration::from_secs(10));
    'accept: loop {
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
                    table.make_room(limits.write_timeout);
                }
                if let Some(suppressed) = ACCEPT_ERRORS.allow() {
                    tracing::warn!(cause = %e, suppressed, "cannot accept an HTTP connection");
                }
                tokio::time::sleep(Duration::from_millis(if exhausted { 10 } else { 1 })).await;
                continue;
            }
        };
        // At the cap, one connection is told to close, and the newcomer waits (briefly) until
        // its socket is gone: the descriptors in use stay within the cap plus one.
        let deadline = tokio::time::Instant::now() + MAKE_ROOM_WAIT;
        let mut asked = false;
        while table.len() >= limits.max_connections {
            // One connection is asked to close per newcomer.
            let waited = (asked || table.make_room(limits.write_timeout))
                && tokio::select! {
                    biased;
                    _ = stop.wait_for(|stopped| *stopped) => break 'accept,
                    Some(_) = tasks.join_next() => true,
                    () = table.closed.notified() => true,
                    () = tokio::time::sleep_until(deadline) => false,
                };
            asked = true;
            if !waited {
                if let Some(suppressed) = REFUSED.allow() {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        suppressed,
                        "HTTP connection refused: every connection is answering a request"
                    );
                }
                refuse(&stream);
                continue 'accept;
            }
        }
        let _ = stream.set_nodelay(true);
        let registered = Registered::open(&table);
        let app = app.clone();
        let stop = stop.clone();
        let tls = tls.clone();
        tasks.spawn(async move {
            let connection = Arc::clone(&registered.connection);
            match tls {
                None => serve_connection(stream, app, limits, connection, stop).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(limits.header_timeout, acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, app, limits, connection, stop).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(cause = %e, "HTTP TLS handshake failed");
                        }
                        Err(_) => tracing::debug!("HTTP TLS handshake timed out"),
                    }
                }
            }
            // Forgotten when dropped, also if the task panicked or was aborted.
            drop(registered);
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

/// One connection served outside [`serve`]'s accept loop, for the HTTP fuzz target
/// (`agent::fuzz`): the same per-connection code ([`serve_connection`]) over any byte stream,
/// registered in a table of its own, so that what the accept loop knows of a connection can be
/// read and the accept loop's decisions (making room at the cap) taken on it.
pub(crate) struct Standalone {
    table: Arc<Table>,
    registered: Registered,
}

impl Standalone {
    /// A connection, open in its table.
    pub(crate) fn open() -> Standalone {
        let table = Arc::new(Table::default());
        let registered = Registered::open(&table);
        Standalone { table, registered }
    }

    /// Serves `stream` as [`serve`] serves an accepted socket, until the connection closes.
    pub(crate) fn serve<S>(
        &self,
        stream: S,
        app: Router,
        limits: Limits,
        stop: watch::Receiver<bool>,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let connection = Arc::clone(&self.registered.connection);
        serve_connection(stream, app, limits, connection, stop)
    }

    /// No request in flight, and every byte of the last answer flushed.
    pub(crate) fn is_idle(&self) -> bool {
        self.registered.connection.is_idle()
    }

    /// Whether a long answer (an event stream, a blocking query) is under way.
    pub(crate) fn is_streaming(&self) -> bool {
        self.registered.connection.streaming.load(Ordering::Acquire) > 0
    }

    /// What the accept loop does for a newcomer at the connection cap, with this connection
    /// the only one open ([`Table::make_room`]).
    pub(crate) fn make_room(&self, slow: Duration) -> bool {
        self.table.make_room(slow)
    }
}

fn is_fd_exhaustion(code: i32) -> bool {
    // EMFILE and ENFILE on Linux and the BSDs.
    code == 24 || code == 23
}

/// Answers a connection over the cap with a 503, best effort, and closes it.
fn refuse(stream: &TcpStream) {
    let _ = stream.try_write(&json_response(
        Version::HTTP_11,
        StatusCode::SERVICE_UNAVAILABLE,
        "too many open connections; try again",
    ));
}

/// One connection, from accept to close, over any byte stream (a TCP socket from [`serve`];
/// an in-memory pipe in the HTTP fuzz target, [`Standalone`]).
async fn serve_connection<S>(
    stream: S,
    app: Router,
    limits: Limits,
    connection: Arc<Connection>,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(ConnIo::new(
        stream,
        limits.write_timeout,
        Arc::clone(&connection),
    ));
    let service = {
        let connection = Arc::clone(&connection);
        hyper::service::service_fn(move |mut request: Request<Incoming>| {
            let in_flight = InFlight::begin(&connection);
            request
                .extensions_mut()
                .insert(Streaming(Arc::clone(&connection)));
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
    let mut closing = false;
    loop {
        tokio::select! {
            result = served.as_mut() => return log_end(result),
            _ = connection.evicted.notified(), if !closing => {
                // The handlers run inside `served`, on this task: nothing starts between the
                // check and the drop.
                let slow = connection.evicted_as_slow.load(Ordering::Acquire);
                if slow || connection.is_idle() {
                    return;
                }
                // A request in flight finishes first (a stream was told to end, or a request
                // began since the connection was found idle).
                closing = true;
                served.as_mut().graceful_shutdown();
            }
            _ = stop.wait_for(|stopped| *stopped), if !closing => {
                closing = true;
                served.as_mut().graceful_shutdown();
            }
        }
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
    /// Whether an answer was started whose bytes have not all been flushed to the socket
    /// (hyper drops a response body before it has written all of it).
    unflushed: AtomicBool,
    /// Requests answered by a stream or a long poll ([`Streaming`]).
    streaming: AtomicUsize,
    /// Set when the connection is to close to make room.
    evicted: Notify,
    /// Whether it was told to close to make room.
    evicting: AtomicBool,
    /// Whether it was told so for a request older than the slow limit: it is cut off.
    evicted_as_slow: AtomicBool,
    /// Tells a streaming answer to end now.
    yield_stream: Notify,
    /// When its latest request began ([`millis_since_start`]).
    busy_since_ms: AtomicU64,
}

impl Connection {
    /// No request in flight and nothing left to write: closing loses nothing.
    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && !self.unflushed.load(Ordering::Acquire)
    }
}

/// Held by a handler whose answer lasts (an event stream, a blocking query): at the
/// connection cap, with no idle connection, the oldest such answer is told to end early (the
/// client resumes elsewhere or later) so that new requests, `/v1/health` among them, get in.
#[derive(Clone, Debug)]
pub(crate) struct Streaming(Arc<Connection>);

impl Streaming {
    /// Marks the request as a long answer until the returned guard is dropped.
    pub(crate) fn begin(&self) -> StreamingGuard {
        self.0.streaming.fetch_add(1, Ordering::AcqRel);
        StreamingGuard(Arc::clone(&self.0))
    }

    /// Resolves when the answer should end to make room.
    pub(crate) async fn yielded(&self) {
        self.0.yield_stream.notified().await;
    }
}

/// See [`Streaming::begin`].
#[derive(Debug)]
pub(crate) struct StreamingGuard(Arc<Connection>);

impl Drop for StreamingGuard {
    fn drop(&mut self) {
        self.0.streaming.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts a request as in flight while it lives.
struct InFlight(Arc<Connection>);

impl InFlight {
    fn begin(connection: &Arc<Connection>) -> InFlight {
        connection.in_flight.fetch_add(1, Ordering::AcqRel);
        connection.unflushed.store(true, Ordering::Release);
        connection
            .busy_since_ms
            .store(millis_since_start(), Ordering::Release);
        InFlight(Arc::clone(connection))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's place in the table, given up when dropped.
struct Registered {
    table: Arc<Table>,
    id: u64,
    connection: Arc<Connection>,
}

impl Registered {
    fn open(table: &Arc<Table>) -> Registered {
        let (id, connection) = table.open();
        Registered {
            table: Arc::clone(table),
            id,
            connection,
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.table.close(self.id);
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

    /// Tells one connection to close, to make room for another: the oldest idle one, else the
    /// oldest answering with a stream (which ends its answer first), else the oldest whose
    /// request has taken longer than `slow` (a body trickling in, an answer read slowly),
    /// which is cut off. Connections already told are passed over. The one told stays
    /// counted until its socket is closed. `false` if every connection is answering a
    /// request younger than `slow`.
    fn make_room(&self, slow: Duration) -> bool {
        let inner = self.lock();
        let now = millis_since_start();
        let slow = u64::try_from(slow.as_millis()).unwrap_or(u64::MAX);
        let candidates = || {
            inner
                .open
                .values()
                .filter(|c| !c.evicting.load(Ordering::Acquire))
        };
        let victim = candidates()
            .find(|c| c.is_idle())
            .or_else(|| candidates().find(|c| c.streaming.load(Ordering::Acquire) > 0))
            .map(|c| (c, false))
            .or_else(|| {
                candidates()
                    .find(|c| now.saturating_sub(c.busy_since_ms.load(Ordering::Acquire)) > slow)
                    .map(|c| (c, true))
            });
        let Some((connection, slow)) = victim else {
            return false;
        };
        connection.evicted_as_slow.store(slow, Ordering::Release);
        connection.evicting.store(true, Ordering::Release);
        // Stored permits: the tasks see them even if they are not waiting yet.
        connection.yield_stream.notify_one();
        connection.evicted.notify_one();
        true
    }
}

/// Milliseconds on a monotonic clock, from the first call on.
fn millis_since_start() -> u64 {
    static START: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(tokio::time::Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A connection's socket as hyper sees it: writes that a client stopped reading fail after
/// the write timeout, and hyper's own error answers (a malformed request, headers too large)
/// are replaced with the API's JSON error.
struct ConnIo<S> {
    stream: S,
    write_timeout: Duration,
    connection: Arc<Connection>,
    /// Armed while a write is pending.
    stalled: Option<Pin<Box<Sleep>>>,
    /// A JSON answer written in place of hyper's, and how much of it is written.
    replacement: Option<(Vec<u8>, usize)>,
}

impl<S: AsyncWrite + Unpin> ConnIo<S> {
    fn new(stream: S, write_timeout: Duration, connection: Arc<Connection>) -> ConnIo<S> {
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

    /// Whether `buf` is hyper's own error answer, to be replaced. hyper writes one only for a
    /// request it could not parse, so never while an answer of ours is in flight or not yet
    /// flushed (which rules out a value that looks like one), and it has no body and no
    /// content type.
    fn replace_if_automatic(&mut self, buf: &[u8]) -> bool {
        if !self.connection.is_idle() {
            return false;
        }
        let Some((version, status)) = automatic_error(buf) else {
            return false;
        };
        let message = match status {
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "request headers too large",
            StatusCode::URI_TOO_LONG => "request URI too long",
            _ => "malformed HTTP request",
        };
        self.replacement = Some((json_response(version, status, message), 0));
        true
    }
}

/// The version and status of an answer hyper wrote itself: a complete head with no body
/// (`content-length: 0`, no content type) and an error status. Every answer of the API's
/// handlers has a JSON body. The version is HTTP/1.0 once the client sent a request of that
/// version on the connection (hyper then answers in it).
fn automatic_error(buf: &[u8]) -> Option<(Version, StatusCode)> {
    let head = buf.strip_suffix(b"\r\n\r\n")?;
    if head.windows(4).any(|w| w == b"\r\n\r\n") {
        return None;
    }
    let (version, rest) = if let Some(rest) = head.strip_prefix(b"HTTP/1.1 ") {
        (Version::HTTP_11, rest)
    } else {
        (Version::HTTP_10, head.strip_prefix(b"HTTP/1.0 ")?)
    };
    let status = rest.get(..3)?;
    let status = StatusCode::from_bytes(status).ok()?;
    if !(status.is_client_error() || status.is_server_error()) {
        return None;
    }
    let head = head.to_ascii_lowercase();
    let has = |needle: &[u8]| head.windows(needle.len()).any(|w| w == needle);
    (has(b"\r\ncontent-length: 0\r\n") || head.ends_with(b"\r\ncontent-length: 0"))
        .then_some(())
        .filter(|()| !has(b"\r\ncontent-type:"))
        .map(|()| (version, status))
}

/// A complete answer of `version` (HTTP/1.0 or HTTP/1.1) with a JSON error body, closing the
/// connection.
fn json_response(version: Version, status: StatusCode, message: &str) -> Vec<u8> {
    let version = if version == Version::HTTP_10 {
        "HTTP/1.0"
    } else {
        "HTTP/1.1"
    };
    let body = serde_json::json!({ "error": message }).to_string();
    format!(
        "{version} {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
    )
    .into_bytes()
}

impl<S: AsyncRead + Unpin> AsyncRead for ConnIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ConnIo<S> {
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
        ready!(Pin::new(&mut self.stream).poll_flush(cx))?;
        // hyper flushes once it has written everything it holds: with no answer in flight,
        // every byte of the last one is out.
        if self.connection.in_flight.load(Ordering::Acquire) == 0 {
            self.connection.unflushed.store(false, Ordering::Release);
        }
        Poll::Ready(Ok(()))
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
            automatic_error(automatic),
            Some((Version::HTTP_11, StatusCode::BAD_REQUEST))
        );
        let too_large =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(
            automatic_error(too_large),
            Some((
                Version::HTTP_11,
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            ))
        );
        // The answer to a request after one of HTTP/1.0 on a keep-alive connection: hyper
        // speaks HTTP/1.0 to that client from then on.
        let after_http_1_0 = b"HTTP/1.0 400 Bad Request\r\ncontent-length: 0\r\ndate: Wed, 02 Dec 2026 01:29:41 GMT\r\n\r\n";
        assert_eq!(
            automatic_error(after_http_1_0),
            Some((Version::HTTP_10, StatusCode::BAD_REQUEST))
        );
        for ours in [
            &b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 22\r\n\r\n{\"error\":\"no such key\"}",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nHTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
            b"some value bytes",
        ] {
            assert_eq!(
                automatic_error(ours),
                None,
                "{}",
                String::from_utf8_lossy(ours)
            );
        }
    }

    #[test]
    fn room_is_made_from_the_oldest_idle_connection_then_the_oldest_stream() {
        let table = Table::default();
        let (_, answering) = table.open();
        let (idle_id, idle) = table.open();
        let (_, streaming) = table.open();
        let _request = InFlight::begin(&answering);
        let _stream_request = InFlight::begin(&streaming);
        let _stream = Streaming(Arc::clone(&streaming)).begin();
        let slow = Duration::from_secs(30);
        assert!(table.make_room(slow), "one connection is idle");
        assert!(
            idle.evicting.load(Ordering::Acquire),
            "the oldest idle connection was kept"
        );
        assert!(!answering.evicting.load(Ordering::Acquire));
        assert!(!streaming.evicting.load(Ordering::Acquire));
        assert_eq!(table.len(), 3, "counted until its socket is closed");
        table.close(idle_id);
        assert_eq!(table.len(), 2);
        assert!(table.make_room(slow), "a stream yields");
        assert!(streaming.evicting.load(Ordering::Acquire));
        assert!(
            !answering.evicting.load(Ordering::Acquire),
            "a short request is never cut off"
        );
        assert!(
            !table.make_room(slow),
            "the stream already told is passed over, and a young request is never cut off"
        );
        assert!(!answering.evicting.load(Ordering::Acquire));
        // A request older than `slow` (a body trickling in, an answer read slowly) is.
        std::thread::sleep(Duration::from_millis(5));
        assert!(table.make_room(Duration::from_millis(1)));
        assert!(answering.evicting.load(Ordering::Acquire));
    }

    #[test]
    fn a_connection_is_idle_only_once_its_answer_is_flushed() {
        let connection = Arc::new(Connection::default());
        assert!(connection.is_idle());
        let request = InFlight::begin(&connection);
        assert!(!connection.is_idle());
        drop(request);
        assert!(
            !connection.is_idle(),
            "the answer may still be in hyper's buffer"
        );
        connection.unflushed.store(false, Ordering::Release);
        assert!(connection.is_idle());
    }
}
