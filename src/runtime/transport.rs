//! QUIC between nodes: one quinn endpoint per node, client and server on one UDP socket;
//! SWIM packets as datagrams, everything else one message per unidirectional stream; one
//! pooled connection per peer, dialled on first use and again after it is lost.

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use bytes::Bytes;
use quinn::{Connection, Endpoint};
use tokio::sync::mpsc;

use super::{
    bans::Bans,
    certifier::CaCertifier,
    throttle::LogThrottle,
    tls::{CLUSTER_SERVER_NAME, TlsConfig, TlsError},
};
use crate::proto::{
    node::{Channel, Transmit},
    wire::{self, DecodeError, Message, PROTOCOL_VERSION},
};

/// How long a dial may take before the message is dropped (anti-entropy repairs it).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection with no packet for this long is closed; the next message dials again. No
/// keep-alive holds connections open beyond it: a node keeps a connection to every member
/// it talks to, and a keep-alive costs a packet and its acknowledgement per connection per
/// interval whether the connection is needed or not (at 25 s, a tenth of an idle agent's
/// CPU at N=50; at N=1000, 999 connections, about 80 packets a second). A member that is
/// probed or synced with keeps its connection by that traffic (every few tens of seconds at
/// N=50); one that is not pays a handshake when it is next needed (BENCHMARKS.md, "Fewer
/// wake-ups, and chitchat as processes").
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Messages received and not yet taken by the node task; beyond this, new ones are dropped
/// (they are either unreliable SWIM packets or repaired by anti-entropy).
const INBOUND_QUEUE: usize = 4_096;

/// Where received messages go: datagrams (SWIM) and stream messages on queues of their own,
/// so a node task that stops taking stream messages (its disk is behind) still answers
/// probes.
#[derive(Clone)]
pub(crate) struct Inbox {
    datagrams: mpsc::Sender<Inbound>,
    streams: mpsc::Sender<Inbound>,
}

/// The node task's ends of the [`Inbox`] queues.
pub(crate) struct Inboxes {
    /// SWIM datagrams; a full queue drops them, as a congested network would.
    pub(crate) datagrams: mpsc::Receiver<Inbound>,
    /// Stream messages; a full queue holds back the stream reads.
    pub(crate) streams: mpsc::Receiver<Inbound>,
}
/// How many incoming streams are read at once, across every connection: past that, an
/// accepted stream waits unread (and QUIC's flow control holds its sender back), so a burst
/// of streams costs a bounded number of buffers; QUIC's limit on open streams per connection
/// bounds the waiting tasks.
const MAX_STREAM_READS: usize = 64;
/// The longest one incoming stream may take to arrive in full: a peer that opens a stream
/// and stalls gives its read slot back.
const STREAM_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A stream message this large or larger is decoded, and its signatures checked, on a
/// blocking thread, at most one per core at once; smaller ones are decoded by their reader.
const DECODE_ASIDE_FROM: usize = 16 * 1024;
/// A stream message this small or smaller is sent ahead of larger ones queued to the same
/// peer (QUIC stream priority): pushes and probes do not wait behind a snapshot.
const SMALL_MESSAGE: usize = 16 * 1024;

/// Decides, for a message from one address to another, whether to drop it: fault injection
/// for tests (partitions). `true` drops.
// For tests only, hidden from the docs: not part of the stable API.
#[doc(hidden)]
pub type FaultHook = Arc<dyn Fn(SocketAddr, SocketAddr) -> bool + Send + Sync>;

/// A message received from a peer.
#[derive(Debug)]
pub(crate) enum Inbound {
    Datagram {
        from: SocketAddr,
        bytes: Bytes,
    },
    /// A stream message, decoded by its reader (and its signatures checked ahead, if large).
    Stream {
        from: SocketAddr,
        /// Its size on the wire.
        len: usize,
        message: Result<Message, DecodeError>,
    },
}

/// Why the transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The TLS material is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The UDP socket could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Why a message could not be handed to quinn. The message is dropped (SWIM tolerates loss,
/// anti-entropy repairs the rest) and the pooled connection to the peer forgotten, so the
/// next message dials again.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// quinn refused to start a connection (for example, a bad address).
    #[error("cannot connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The handshake did not finish within the connect timeout.
    #[error("connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    /// The handshake failed: the peer is unreachable, or one side refused the other's
    /// certificate.
    #[error("handshake failed: {0}")]
    Handshake(#[source] quinn::ConnectionError),
    /// The connection was lost before a stream could be opened on it.
    #[error("cannot open a stream: {0}")]
    Open(#[source] quinn::ConnectionError),
    /// A datagram could not be sent (connection lost, datagrams unsupported or too large).
    #[error("cannot send a datagram: {0}")]
    Datagram(#[from] quinn::SendDatagramError),
    /// Writing a stream message failed (connection lost, stream stopped by the peer).
    #[error("cannot write a stream: {0}")]
    Write(#[from] quinn::WriteError),
    /// The stream was closed before it could be finished.
    #[error("cannot finish a stream: {0}")]
    Finish(#[from] quinn::ClosedStream),
    /// A message could not be rewritten for a peer of an older protocol.
    #[error("cannot rewrite a message for an older peer: {0}")]
    Downgrade(#[source] wire::DecodeError),
    /// The peer presented the certificate of a node the policy revoked.
    #[error("the peer is a node the policy revoked")]
    Revoked,
}

type Slot = Arc<tokio::sync::Mutex<Option<Connection>>>;

/// What a node's QUIC endpoint put on and took off the wire: UDP payload bytes, QUIC headers,
/// acknowledgements, keep-alives and TLS included.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WireStats {
    /// UDP payload bytes sent.
    pub udp_bytes_sent: u64,
    /// UDP payload bytes received.
    pub udp_bytes_received: u64,
    /// Connections open now.
    pub connections: usize,
}

/// Wire counters over every connection the endpoint had: the closed ones' final figures, and
/// the live ones read on demand.
#[derive(Default)]
struct WireCounter {
    closed: Mutex<WireStats>,
    live: Mutex<HashMap<usize, Connection>>,
}

impl WireCounter {
    fn opened(&self, conn: &Connection) {
        lock(&self.live).insert(conn.stable_id(), conn.clone());
    }

    fn closed(&self, conn: &Connection) {
        if lock(&self.live).remove(&conn.stable_id()).is_some() {
            let stats = conn.stats();
            let mut closed = lock(&self.closed);
            closed.udp_bytes_sent += stats.udp_tx.bytes;
            closed.udp_bytes_received += stats.udp_rx.bytes;
        }
    }

    fn read(&self) -> WireStats {
        let mut total = *lock(&self.closed);
        let live = lock(&self.live);
        for conn in live.values() {
            let stats = conn.stats();
            total.udp_bytes_sent += stats.udp_tx.bytes;
            total.udp_bytes_received += stats.udp_rx.bytes;
        }
        total.connections = live.len();
        total
    }
}

/// Reads a transport's [`WireStats`]; held by the [`Mesh`](super::Mesh) handle.
#[derive(Clone)]
pub(crate) struct WireHandle(Arc<WireCounter>);

impl WireHandle {
    pub(crate) fn read(&self) -> WireStats {
        self.0.read()
    }

    /// The protocol version negotiated (ALPN) on the open connections, per peer address;
    /// the oldest where a peer has several.
    pub(crate) fn negotiated(&self) -> HashMap<SocketAddr, u8> {
        let mut versions = HashMap::new();
        for conn in lock(&self.0.live).values() {
            if let Some(version) = negotiated_protocol(conn) {
                versions
                    .entry(conn.remote_address())
                    .and_modify(|v: &mut u8| *v = (*v).min(version))
                    .or_insert(version);
            }
        }
        versions
    }
}

/// The protocol version `conn`'s handshake settled on: its ALPN `confmesh/<v>`.
fn negotiated_protocol(conn: &Connection) -> Option<u8> {
    let data = conn.handshake_data()?;
    let data = data.downcast_ref::<quinn::crypto::rustls::HandshakeData>()?;
    let alpn = data.protocol.as_deref()?;
    std::str::from_utf8(alpn)
        .ok()?
        .strip_prefix("confmesh/")?
        .parse()
        .ok()
}

impl std::fmt::Debug for WireHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.read().fmt(f)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One node's QUIC endpoint and its connection pool.
pub(crate) struct Transport {
    endpoint: Endpoint,
    local: SocketAddr,
    pool: Mutex<HashMap<SocketAddr, Slot>>,
    wire: Arc<WireCounter>,
    /// Sends handed to a task and not yet given to quinn (or failed).
    sending: tokio::sync::watch::Sender<usize>,
    /// What the connection readers share.
    reader: Reader,
}

/// Why a connection was closed by this node (its application close code).
const CLOSE_REVOKED: u32 = 3;

/// What every connection's reader shares: where messages go, what it drops, and its limits.
#[derive(Clone)]
struct Reader {
    inbound: Inbox,
    filter: ReceiveFilter,
    max_stream_bytes: usize,
    /// Read slots for incoming streams ([`MAX_STREAM_READS`]).
    reads: Arc<tokio::sync::Semaphore>,
    /// Slots for decoding large messages off the async threads, one per core.
    decodes: Arc<tokio::sync::Semaphore>,
    /// Checks the signatures of large messages before the node task judges them.
    certifier: Arc<CaCertifier>,
    /// Every connection being served, by its id: what a revocation closes.
    live: Arc<Mutex<HashMap<usize, Connection>>>,
    /// The nodes the policy cut off (docs/PROTOCOL.md §8.8): a connection whose peer presents
    /// one of their certificates is closed as soon as its handshake completes.
    revoked: Arc<std::sync::RwLock<BTreeSet<String>>>,
}

impl Reader {
    /// Whether `conn`'s peer presented the certificate of a node the policy cut off; if so,
    /// closes it, and says so.
    fn refuse_revoked(&self, conn: &Connection) -> bool {
        let Some(name) = peer_node(conn) else {
            return false;
        };
        let revoked = self
            .revoked
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&name);
        if revoked {
            tracing::warn!(peer = %conn.remote_address(), node = %name, "connection refused: the policy revoked this node");
            conn.close(CLOSE_REVOKED.into(), b"revoked");
        }
        revoked
    }
}

impl Transport {
    /// Binds `addr` and starts accepting connections. Returns the transport and the queue of
    /// received messages.
    pub(crate) fn bind(
        addr: SocketAddr,
        tls: &TlsConfig,
        protocol: u8,
        max_stream_bytes: usize,
        fault: Option<FaultHook>,
        certifier: Arc<CaCertifier>,
        bans: Arc<Bans>,
    ) -> Result<(Arc<Transport>, Inboxes), TransportError> {
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(None);
        transport.max_idle_timeout(IDLE_TIMEOUT.try_into().ok());
        // No path-MTU probing: messages are small (SWIM datagrams fit QUIC's 1,200-byte
        // minimum) and the probes, four packets of up to 1,452 bytes, were most of a new
        // connection's cost.
        transport.mtu_discovery_config(None);
        // Streams to one peer are sent in the order they were written, not interleaved: a
        // snapshot's chunks arrive one after the other, so the receiver merges the first
        // while the next arrive, instead of all of them at the end.
        transport.send_fairness(false);
        let transport = Arc::new(transport);
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(tls.server_config(protocol)?));
        server.transport_config(transport.clone());
        let mut client = quinn::ClientConfig::new(Arc::new(tls.client_config(protocol)?));
        client.transport_config(transport);
        let mut endpoint = Endpoint::server(server, addr)
            .map_err(|source| TransportError::Bind { addr, source })?;
        endpoint.set_default_client_config(client);
        let local = endpoint
            .local_addr()
            .map_err(|source| TransportError::Bind { addr, source })?;
        let (datagrams, datagram_rx) = mpsc::channel(INBOUND_QUEUE);
        let (streams, stream_rx) = mpsc::channel(INBOUND_QUEUE);
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let transport = Arc::new(Transport {
            endpoint,
            local,
            pool: Mutex::new(HashMap::new()),
            wire: Arc::default(),
            sending: tokio::sync::watch::Sender::new(0),
            reader: Reader {
                inbound: Inbox { datagrams, streams },
                filter: ReceiveFilter { local, fault, bans },
                max_stream_bytes,
                reads: Arc::new(tokio::sync::Semaphore::new(MAX_STREAM_READS)),
                decodes: Arc::new(tokio::sync::Semaphore::new(cores)),
                certifier,
                live: Arc::default(),
                revoked: Arc::default(),
            },
        });
        tokio::spawn(accept_loop(transport.clone()));
        Ok((
            transport,
            Inboxes {
                datagrams: datagram_rx,
                streams: stream_rx,
            },
        ))
    }

    /// A handle that reads the endpoint's traffic so far.
    pub(crate) fn wire(&self) -> WireHandle {
        WireHandle(self.wire.clone())
    }

    /// The address peers reach this node at.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Sends `transmit` in the background; a failure is logged and the message dropped (SWIM
    /// tolerates loss, anti-entropy repairs the rest).
    pub(crate) fn send(self: &Arc<Self>, transmit: Transmit) {
        self.send_in_order(vec![transmit]);
    }

    /// Sends `transmits` in the background: the large stream messages to one peer one after
    /// the other, in the order given (a snapshot's chunks: the receiver can merge the first,
    /// which holds the writers' endorsements, while the rest arrive), everything else at once.
    pub(crate) fn send_all(self: &Arc<Self>, transmits: impl IntoIterator<Item = Transmit>) {
        let mut large: HashMap<SocketAddr, Vec<Transmit>> = HashMap::new();
        for transmit in transmits {
            if transmit.channel == Channel::Stream && transmit.bytes.len() > SMALL_MESSAGE {
                large.entry(transmit.to).or_default().push(transmit);
            } else {
                self.send(transmit);
            }
        }
        for (_, transmits) in large {
            self.send_in_order(transmits);
        }
    }

    /// Sends `transmits`, all to one peer, one after the other in one task.
    fn send_in_order(self: &Arc<Self>, mut transmits: Vec<Transmit>) {
        transmits.retain(|t| !self.dropped(self.local, t.to));
        if transmits.is_empty() {
            return;
        }
        let this = self.clone();
        self.sending.send_modify(|n| *n += 1);
        tokio::spawn(async move {
            for transmit in transmits {
                let to = transmit.to;
                if let Err(e) = this.deliver(transmit).await {
                    tracing::debug!(%to, cause = %e, "send failed");
                    this.forget(to);
                    break;
                }
            }
            this.sending.send_modify(|n| *n -= 1);
        });
    }

    /// Waits (up to `limit`) until every message sent so far has been handed to quinn: the
    /// last ones of a node that leaves, before its endpoint closes.
    pub(crate) async fn drain(&self, limit: Duration) {
        let mut sending = self.sending.subscribe();
        let _ = tokio::time::timeout(limit, sending.wait_for(|n| *n == 0)).await;
    }

    async fn deliver(&self, transmit: Transmit) -> Result<(), SendError> {
        let conn = self.connection(transmit.to).await?;
        // A peer of protocol 2 reads no signatures: versions go to it without them; one of
        // protocol 3 reads no grounds, and is sent no message that carries them.
        let bytes = match negotiated_protocol(&conn) {
            Some(v) if v < PROTOCOL_VERSION => {
                wire::downgrade(transmit.bytes, v).map_err(SendError::Downgrade)?
            }
            _ => transmit.bytes,
        };
        match transmit.channel {
            Channel::Datagram => Ok(conn.send_datagram(bytes)?),
            Channel::Stream => {
                let mut stream = conn.open_uni().await.map_err(SendError::Open)?;
                if bytes.len() <= SMALL_MESSAGE {
                    // Only fails on a stream already closed, which the write reports.
                    let _ = stream.set_priority(1);
                }
                stream.write_all(&bytes).await?;
                Ok(stream.finish()?)
            }
        }
    }

    /// The pooled connection to `to`, dialled if there is none or it was lost.
    async fn connection(&self, to: SocketAddr) -> Result<Connection, SendError> {
        let slot = self.slot(to);
        let mut slot = slot.lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| c.close_reason().is_none()) {
            return Ok(conn.clone());
        }
        let connecting = self.endpoint.connect(to, CLUSTER_SERVER_NAME)?;
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| SendError::ConnectTimeout(CONNECT_TIMEOUT))?
            .map_err(|e| {
                log_tls_refusal(to, &e);
                SendError::Handshake(e)
            })?;
        if self.refuse_revoked(&conn) {
            return Err(SendError::Revoked);
        }
        *slot = Some(conn.clone());
        tokio::spawn(serve(self.reader.clone(), conn.clone(), self.wire.clone()));
        Ok(conn)
    }

    fn slot(&self, to: SocketAddr) -> Slot {
        lock(&self.pool).entry(to).or_default().clone()
    }

    /// Whether `conn`'s peer is a node the policy cut off (then `conn` is closed).
    fn refuse_revoked(&self, conn: &Connection) -> bool {
        self.reader.refuse_revoked(conn)
    }

    /// Replaces the nodes the policy cut off, and closes every open connection to them
    /// (pooled or not: a peer may hold several).
    pub(crate) fn set_revoked(&self, names: BTreeSet<String>) {
        *self
            .reader
            .revoked
            .write()
            .unwrap_or_else(PoisonError::into_inner) = names;
        let live: Vec<Connection> = lock(&self.reader.live).values().cloned().collect();
        for conn in live {
            if self.refuse_revoked(&conn) {
                self.forget(conn.remote_address());
            }
        }
    }

    /// Drops the pooled connection to `to`, so the next message dials again.
    pub(crate) fn forget(&self, to: SocketAddr) {
        lock(&self.pool).remove(&to);
    }

    fn dropped(&self, from: SocketAddr, to: SocketAddr) -> bool {
        let fault = &self.reader.filter.fault;
        fault.as_ref().is_some_and(|f| f(from, to))
    }

    /// Closes every connection and waits (briefly) for the peers to be told.
    pub(crate) async fn close(&self) {
        self.endpoint.close(0u32.into(), b"shutdown");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

#[derive(Clone)]
struct ReceiveFilter {
    local: SocketAddr,
    fault: Option<FaultHook>,
    bans: Arc<Bans>,
}

impl ReceiveFilter {
    /// Whether what `from` sends is dropped: a fault injected, or `from` is banned.
    fn dropped(&self, from: SocketAddr) -> bool {
        self.fault.as_ref().is_some_and(|f| f(from, self.local))
            || self.bans.banned(from, super::driver::now())
    }
}

async fn accept_loop(transport: Arc<Transport>) {
    while let Some(incoming) = transport.endpoint.accept().await {
        let transport = transport.clone();
        tokio::spawn(async move {
            let from = incoming.remote_address();
            match incoming.await {
                Ok(conn) if transport.refuse_revoked(&conn) => {}
                Ok(conn) => {
                    // Keep it for sending too, unless we already dialled that peer.
                    let slot = transport.slot(from);
                    if let Ok(mut slot) = slot.try_lock()
                        && slot.as_ref().is_none_or(|c| c.close_reason().is_some())
                    {
                        *slot = Some(conn.clone());
                    }
                    serve(transport.reader.clone(), conn, transport.wire.clone()).await;
                }
                // A peer without a certificate from the cluster CA ends here.
                Err(e) => {
                    log_tls_refusal(from, &e);
                    tracing::debug!(%from, cause = %e, "incoming connection refused");
                }
            }
        });
    }
}

/// The node the peer of `conn` presented a certificate of.
fn peer_node(conn: &Connection) -> Option<String> {
    let identity = conn.peer_identity()?;
    let chain = identity.downcast_ref::<Vec<rustls::pki_types::CertificateDer<'static>>>()?;
    super::certifier::node_name(chain.first()?)
}

/// Reads datagrams and streams from one connection until it closes, counting its traffic.
async fn serve(reader: Reader, conn: Connection, wire: Arc<WireCounter>) {
    wire.opened(&conn);
    lock(&reader.live).insert(conn.stable_id(), conn.clone());
    // Checked again once registered: a revocation between the handshake's check and here
    // found nothing to close.
    if !reader.refuse_revoked(&conn) {
        reader.receive(&conn).await;
    }
    lock(&reader.live).remove(&conn.stable_id());
    wire.closed(&conn);
}

impl Reader {
    async fn receive(&self, conn: &Connection) {
        let from = conn.remote_address();
        loop {
            tokio::select! {
                datagram = conn.read_datagram() => match datagram {
                    Ok(bytes) if !self.filter.dropped(from) => {
                        // A full queue drops the packet, as a congested network would.
                        let _ = self.inbound.datagrams.try_send(Inbound::Datagram { from, bytes });
                    }
                    Ok(_) => {}
                    Err(e) => {
                        log_tls_refusal(from, &e);
                        tracing::debug!(%from, cause = %e, "connection closed");
                        return;
                    }
                },
                stream = conn.accept_uni() => match stream {
                    Ok(recv) => {
                        tokio::spawn(self.clone().read_stream(from, recv));
                    }
                    Err(e) => {
                        log_tls_refusal(from, &e);
                        tracing::debug!(%from, cause = %e, "connection closed");
                        return;
                    }
                },
            }
        }
    }

    /// Reads one stream message, decodes it, and queues it for the node task.
    async fn read_stream(self, from: SocketAddr, mut recv: quinn::RecvStream) {
        // Nothing of the stream is read before a slot is free: the waiting tasks hold no
        // data, and QUIC's limit on open streams per connection bounds how many wait.
        let Ok(_slot) = self.reads.clone().acquire_owned().await else {
            return;
        };
        let read = recv.read_to_end(self.max_stream_bytes);
        let bytes = match tokio::time::timeout(STREAM_READ_TIMEOUT, read).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => return tracing::debug!(%from, cause = %e, "stream dropped"),
            Err(_) => {
                tracing::debug!(%from, "stream not received in time; dropped");
                let _ = recv.stop(0u32.into());
                return;
            }
        };
        if self.filter.dropped(from) {
            return;
        }
        let len = bytes.len();
        let message = if len < DECODE_ASIDE_FROM {
            wire::decode(&bytes, self.max_stream_bytes)
        } else {
            let Ok(_decode) = self.decodes.clone().acquire_owned().await else {
                return;
            };
            let (max, certifier) = (self.max_stream_bytes, self.certifier.clone());
            let decoded = tokio::task::spawn_blocking(move || {
                let message = wire::decode(&bytes, max);
                if let Ok(message) = &message {
                    certifier.precheck(message);
                }
                message
            })
            .await;
            match decoded {
                Ok(message) => message,
                Err(e) => return tracing::warn!(%from, cause = %e, "decoding a message failed"),
            }
        };
        // The read slot is given back once the message is queued.
        let _ = self
            .inbound
            .streams
            .send(Inbound::Stream { from, len, message })
            .await;
    }
}

/// Logs (rate-limited, as a warning) a TLS handshake one side refused: a peer whose
/// certificate our cluster CA did not sign, or a peer that refused ours. Either is a
/// misconfiguration or an intruder, and would otherwise look like a silent partition.
fn log_tls_refusal(peer: SocketAddr, e: &quinn::ConnectionError) {
    static REFUSALS: LogThrottle = LogThrottle::new(Duration::from_secs(10));
    // QUIC carries TLS alerts as the crypto error codes 0x100-0x1ff.
    let (code, by_peer) = match e {
        quinn::ConnectionError::TransportError(t) => (t.code, false),
        quinn::ConnectionError::ConnectionClosed(c) => (c.error_code, true),
        _ => return,
    };
    if !(0x100..0x200).contains(&u64::from(code)) {
        return;
    }
    // TLS alert 120, no_application_protocol: no protocol version in common.
    const NO_APPLICATION_PROTOCOL: u64 = 0x100 + 120;
    if let Some(suppressed) = REFUSALS.allow() {
        if u64::from(code) == NO_APPLICATION_PROTOCOL {
            tracing::warn!(%peer, cause = %e, suppressed, "no protocol version in common with the peer: it is more than one release older or newer than this node (upgrade through each release)");
        } else if by_peer {
            tracing::warn!(%peer, cause = %e, suppressed, "the peer refused this node's TLS certificate (is it signed by the cluster CA?)");
        } else {
            tracing::warn!(%peer, cause = %e, suppressed, "refused a peer's TLS handshake (is its certificate signed by the cluster CA?)");
        }
    }
}
