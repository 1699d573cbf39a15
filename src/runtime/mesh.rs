//! The embedding API: [`Mesh`], one node of a confmesh cluster running in this process.

use std::net::SocketAddr;

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{
    driver::{Command, Driver, PutIfError},
    tls::TlsConfig,
    transport::{FaultHook, Transport, TransportError},
    wall_clock_ms,
};
use crate::proto::{
    Dot, Key, KeyError, Version, WriteError, WriterId,
    node::{Config, DEFAULT_MAX_STREAM_MESSAGE_BYTES, Event, Node, NodeId},
};

/// How many events a slow subscriber may fall behind before it misses some
/// ([`broadcast::error::RecvError::Lagged`]).
const EVENT_BUFFER: usize = 4_096;

/// Why a mesh operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// The builder is missing something it needs.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The network side could not start.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The key is not a valid key.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The write was refused; nothing changed.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// A conditional write found another winner than the one expected; nothing changed.
    #[error("conflict: the current version is {current:?}, not the one expected")]
    Conflict {
        /// The dot of the current winner, `None` if the key has no live value.
        current: Option<Dot>,
    },
    /// The node has shut down.
    #[error("the node has shut down")]
    Stopped,
}

/// Builds a [`Mesh`]. Start from [`Mesh::builder`].
#[derive(Clone)]
pub struct MeshBuilder {
    bind: SocketAddr,
    seeds: Vec<String>,
    tls: Option<TlsConfig>,
    expected_members: usize,
    writer: Option<WriterId>,
    fault: Option<FaultHook>,
}

impl std::fmt::Debug for MeshBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshBuilder")
            .field("bind", &self.bind)
            .field("seeds", &self.seeds)
            .field("expected_members", &self.expected_members)
            .finish_non_exhaustive()
    }
}

impl MeshBuilder {
    /// The address to listen on (UDP). Default `127.0.0.1:0`, any free port. Peers reach the
    /// node at this address, so bind a specific, reachable one outside tests.
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// Members to join through: `ip:port` or `host:port`, resolved at start and again every
    /// few seconds until the node is a member. None: this node starts a new cluster.
    pub fn seeds<S: Into<String>>(mut self, seeds: impl IntoIterator<Item = S>) -> Self {
        self.seeds = seeds.into_iter().map(Into::into).collect();
        self
    }

    /// The cluster CA and this node's certificate and key. Required.
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// About how many nodes the cluster has; tunes the failure detector. Default 16.
    pub fn expected_members(mut self, n: usize) -> Self {
        self.expected_members = n.max(1);
        self
    }

    /// The writer id this node's writes carry. Default: random, new at every start.
    pub fn writer(mut self, writer: WriterId) -> Self {
        self.writer = Some(writer);
        self
    }

    /// Drops traffic the hook selects, in both directions: fault injection for tests.
    pub fn fault_hook(mut self, hook: FaultHook) -> Self {
        self.fault = Some(hook);
        self
    }

    /// Binds, starts the node task and joins the seeds. Returns once the node is listening;
    /// joining continues in the background ([`Mesh::members`] shows progress).
    ///
    /// # Errors
    ///
    /// [`MeshError::Config`] without TLS material, [`MeshError::Transport`] if the address
    /// cannot be bound or the TLS material is unusable.
    pub async fn start(self) -> Result<Mesh, MeshError> {
        let tls = self
            .tls
            .ok_or_else(|| MeshError::Config("TLS material is required (tls)".into()))?;
        let (transport, inbound) = Transport::bind(
            self.bind,
            &tls,
            DEFAULT_MAX_STREAM_MESSAGE_BYTES,
            self.fault,
        )?;
        let wall = wall_clock_ms();
        let id = NodeId {
            addr: transport.local_addr(),
            writer: self.writer.unwrap_or_else(random_writer),
            generation: wall,
        };
        let config = Config::lan(id, self.expected_members, random_seed());
        #[allow(
            clippy::disallowed_methods,
            reason = "the runtime is where time enters"
        )]
        let node = Node::new(config, std::time::Instant::now(), wall);
        let (commands, command_rx) = mpsc::channel(1_024);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let driver = Driver {
            node,
            transport,
            inbound,
            commands: command_rx,
            events: events.clone(),
            seeds: self.seeds,
        };
        tokio::spawn(driver.run());
        Ok(Mesh {
            id,
            commands,
            events,
        })
    }
}

#[allow(clippy::disallowed_methods, reason = "a node's seed comes from the OS")]
fn random_seed() -> u64 {
    use rand::RngExt;
    rand::rng().random()
}

fn random_writer() -> WriterId {
    WriterId(random_seed().max(1))
}

/// One node of a confmesh cluster, running in this process. Cheap to clone: clones share the
/// node. Dropping every clone without [`Mesh::shutdown`] stops the node as a crash would
/// (members detect it as failed).
#[derive(Clone, Debug)]
pub struct Mesh {
    id: NodeId,
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<Event>,
}

impl Mesh {
    /// A builder with the defaults.
    pub fn builder() -> MeshBuilder {
        MeshBuilder {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            seeds: Vec::new(),
            tls: None,
            expected_members: 16,
            writer: None,
            fault: None,
        }
    }

    /// This node's identity; `id().addr` is where peers reach it.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Writes `value` under `key`; returns the new version once it is applied locally and on
    /// its way to the other members.
    ///
    /// # Errors
    ///
    /// [`MeshError::Key`] for an invalid key, [`MeshError::Write`] for a value over the limit,
    /// [`MeshError::Stopped`] after shutdown.
    pub async fn put(&self, key: &str, value: impl Into<Bytes>) -> Result<Version, MeshError> {
        let key = Key::new(key)?;
        let (reply, answer) = oneshot::channel();
        self.send(Command::Put {
            key,
            value: value.into(),
            reply,
        })
        .await?;
        Ok(answer.await.map_err(|_| MeshError::Stopped)??)
    }

    /// Writes `value` under `key` only if this node's current winner for `key` is the version
    /// with dot `expected` (from an earlier [`Mesh::get`]); `None` expects no live value.
    ///
    /// This is a causal check against what this node has seen, not a distributed lock: two
    /// nodes can each pass it concurrently, and both writes are then kept as siblings with one
    /// winner everywhere.
    ///
    /// # Errors
    ///
    /// [`MeshError::Conflict`] if the winner is another version (nothing changed), otherwise
    /// as [`Mesh::put`].
    pub async fn put_if(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        expected: Option<Dot>,
    ) -> Result<Version, MeshError> {
        let key = Key::new(key)?;
        let (reply, answer) = oneshot::channel();
        self.send(Command::PutIf {
            key,
            value: value.into(),
            expected,
            reply,
        })
        .await?;
        match answer.await.map_err(|_| MeshError::Stopped)? {
            Ok(version) => Ok(version),
            Err(PutIfError::Conflict { current }) => Err(MeshError::Conflict { current }),
            Err(PutIfError::Write(e)) => Err(MeshError::Write(e)),
        }
    }

    /// Deletes `key`; `None` if it was not there.
    ///
    /// # Errors
    ///
    /// [`MeshError::Key`] for an invalid key, [`MeshError::Stopped`] after shutdown.
    pub async fn delete(&self, key: &str) -> Result<Option<Version>, MeshError> {
        let key = Key::new(key)?;
        let (reply, answer) = oneshot::channel();
        self.send(Command::Delete { key, reply }).await?;
        answer.await.map_err(|_| MeshError::Stopped)
    }

    /// The winning version of `key`, if it has a live value.
    ///
    /// # Errors
    ///
    /// [`MeshError::Key`] for an invalid key, [`MeshError::Stopped`] after shutdown.
    pub async fn get(&self, key: &str) -> Result<Option<Version>, MeshError> {
        let key = Key::new(key)?;
        self.read(move |node| node.store().get(&key).cloned()).await
    }

    /// Every version stored for `key`: the winner first, then concurrent siblings.
    ///
    /// # Errors
    ///
    /// [`MeshError::Key`] for an invalid key, [`MeshError::Stopped`] after shutdown.
    pub async fn get_versions(&self, key: &str) -> Result<Vec<Version>, MeshError> {
        let key = Key::new(key)?;
        self.read(move |node| node.store().versions(&key).to_vec())
            .await
    }

    /// The winners of every live key starting with `prefix`, in key order.
    ///
    /// # Errors
    ///
    /// [`MeshError::Stopped`] after shutdown.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Version>, MeshError> {
        let prefix = prefix.to_string();
        self.read(move |node| node.store().list(&prefix).cloned().collect())
            .await
    }

    /// The other members this node currently sees as alive.
    ///
    /// # Errors
    ///
    /// [`MeshError::Stopped`] after shutdown.
    pub async fn members(&self) -> Result<Vec<NodeId>, MeshError> {
        self.read(|node| node.members().collect()).await
    }

    /// Every event from now on: key changes (local and remote) and membership changes. A
    /// subscriber more than 4,096 events behind misses the oldest and is told so.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Leaves the cluster gracefully (members report [`Event::MemberLeft`]) and stops the
    /// node. Other clones of this handle fail with [`MeshError::Stopped`] afterwards.
    pub async fn shutdown(self) {
        let (reply, done) = oneshot::channel();
        if self.send(Command::Shutdown { reply }).await.is_ok() {
            let _ = done.await;
        }
    }

    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Node) -> T + Send + 'static,
    ) -> Result<T, MeshError> {
        let (reply, answer) = oneshot::channel();
        let read = Box::new(move |node: &Node| {
            let _ = reply.send(read(node));
        });
        self.send(Command::Read(read)).await?;
        answer.await.map_err(|_| MeshError::Stopped)
    }

    async fn send(&self, command: Command) -> Result<(), MeshError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| MeshError::Stopped)
    }
}
