//! The embedding API: [`Mesh`], one node of a confmesh cluster running in this process.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use crate::proto::wire::{
    GROUNDED_FORMAT_VERSION, OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION, SEALED_FORMAT_VERSION,
    SECRETS_PROTOCOL_VERSION,
};

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{
    bans::Bans,
    certifier::CaCertifier,
    driver::{Command, Driver, LocalWriteError, Pending},
    members::{MAX_MEMBER_INFO_BYTES, Member, MemberInfo, MemberState, info_writer, is_reserved},
    secrets::{NodeIdentity, PlaintextCache, PrefixKey, SecretError},
    storage::{Change, Cursor, Storage, StorageError, StorageFaultHook, StorageReader},
    subscription::Subscription,
    tls::TlsConfig,
    transport::{FaultHook, Transport, TransportError, WireHandle, WireStats},
    wall_clock_ms,
    watch::{Watch, WatchError},
};
use crate::proto::{
    AuthorProof, Dot, DotText, Key, KeyError, Payload, StoreConfig, VClock, Version, WriteError,
    WriterId,
    node::{
        Audit, Config, DEFAULT_MAX_STREAM_MESSAGE_BYTES, Departure, Event, Node, NodeId, NodeStats,
        ResignError, Resigned, Signer, TrustConfig, TrustStats,
    },
    trust::{
        MEMBERS_PREFIX, Mode, WriterKey,
        policy::{Denial, KeyringEntry, Principal, Right, Rule, TokenEntry},
        sealed,
    },
};

/// How many events a slow subscriber may fall behind before it misses some
/// ([`Lagged`](super::Lagged)).
const EVENT_BUFFER: usize = 4_096;

/// The default of [`MeshBuilder::cache_bytes`]: 64 MiB. (redb's own default, 1 GiB, let an
/// agent's memory grow with every write until it held that much.)
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

/// The default of [`MeshBuilder::history_len`].
pub const DEFAULT_HISTORY_LEN: usize = 16;

/// The default of [`MeshBuilder::watch_log_len`].
pub const DEFAULT_WATCH_LOG_LEN: u64 = 100_000;

/// A node's health, from [`Mesh::health`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// Whether the membership layer considers the node part of a cluster.
    pub joined: bool,
    /// How many other members it sees alive.
    pub peers: usize,
    /// How many application keys its replica holds (deleted ones not yet collected included;
    /// confmesh's own keys under [`RESERVED_PREFIX`](super::RESERVED_PREFIX) not counted).
    pub keys: usize,
    /// How long since an anti-entropy exchange showed a peer holding exactly what this node
    /// holds; `None` if that has not happened yet (a single node never syncs).
    pub since_in_sync: Option<std::time::Duration>,
    /// The protocol version the whole cluster speaks: the oldest any alive member (this node
    /// included) advertises. A change every replica must understand turns on only once this
    /// reaches its version ([`Health::supports`]).
    pub protocol: u8,
    /// The names of alive members that advertise an older protocol than this node speaks:
    /// what holds the cluster's version back during a rolling upgrade.
    pub held_back_by: Vec<String>,
    /// Whether this node holds a policy root (docs/PROTOCOL.md §8): then nothing is allowed
    /// that no grant allows. Without one, every certified node may write every key.
    pub policy_root: bool,
}

impl Health {
    /// Whether every alive member speaks protocol `version`, so that a feature of that
    /// version may be used.
    pub fn supports(&self, version: u8) -> bool {
        self.protocol >= version
    }
}

/// Tuning presets for the failure detector and anti-entropy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Preset {
    /// Members on one network: failures detected in a few seconds, anti-entropy every
    /// 500 ms ([`Config::lan`]). The default.
    #[default]
    Lan,
    /// Members across regions: slower, loss-tolerant failure detection and anti-entropy every
    /// 2 s ([`Config::wan`]).
    Wan,
}

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
    #[error(
        "conflict: the current version is {}, not the one expected",
        current.map_or_else(|| "none (the key has no live value)".to_string(), |d| DotText(d).to_string())
    )]
    Conflict {
        /// The dot of the current winner, `None` if the key has no live value.
        current: Option<Dot>,
    },
    /// The key is under [`RESERVED_PREFIX`](super::RESERVED_PREFIX), which confmesh writes.
    #[error("keys under `_confmesh/` are reserved")]
    Reserved,
    /// [`Mesh::rollback`] was given a version this node's history does not hold.
    #[error("the history of this key holds no version {}", DotText(*.0))]
    UnknownVersion(Dot),
    /// The data directory failed; for a write, nothing changed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A watch could not start or continue.
    #[error(transparent)]
    Watch(#[from] WatchError),
    /// [`Mesh::resign`] could not run.
    #[error(transparent)]
    Resign(#[from] ResignError),
    /// The node's age identity could not be loaded or made, or a secret could not be sealed
    /// or opened (docs/PROTOCOL.md §9).
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// A sealed value this node may not read: it is not among the readers of the generation
    /// the value is sealed to, or does not hold that generation (docs/PROTOCOL.md §9.6).
    #[error("{key} is a secret this node cannot read (keyring generation {generation})")]
    SecretUnreadable {
        /// The key.
        key: String,
        /// The generation its value is sealed to.
        generation: String,
    },
    /// The node has shut down.
    #[error("the node has shut down")]
    Stopped,
    /// The mesh's own thread or its runtime could not start ([`MeshBuilder::shared_runtime`]
    /// avoids both).
    #[error("cannot start the mesh's thread: {0}")]
    Thread(#[source] std::io::Error),
}

impl From<LocalWriteError> for MeshError {
    fn from(e: LocalWriteError) -> MeshError {
        match e {
            LocalWriteError::Conflict { current } => MeshError::Conflict { current },
            LocalWriteError::Write(e) => MeshError::Write(e),
            LocalWriteError::Storage(e) => MeshError::Storage(e),
            LocalWriteError::Secret(e) => MeshError::Secret(e),
        }
    }
}

/// What [`Mesh::trust`] reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustReport {
    /// Per peer (by address), what it sent that was not applied.
    pub by_peer: Vec<(SocketAddr, TrustStats)>,
    /// Writers proven to equivocate, with the sequence number they did it at.
    pub equivocated: Vec<(WriterId, u64)>,
    /// How many writers are endorsed in the replica.
    pub endorsed_writers: usize,
    /// Stored versions without a signature (legacy writers', from protocol 2): a node that
    /// enforces signatures would refuse them. [`Mesh::resign`] replaces them; switch a
    /// cluster to enforcing once this is 0 on every node (docs/PROTOCOL.md §7.5).
    pub unsigned_versions: usize,
    /// What this node does with unsigned versions from peers.
    pub mode: Mode,
}

/// What [`Mesh::policy`] reports (docs/PROTOCOL.md §8).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyReport {
    /// Whether a policy root is held: then nothing is allowed that no grant allows. Without
    /// one, every certified node may write every key (Trust I's rule).
    pub rooted: bool,
    /// The policy entries granted here, by writer and position: dot, author, rule.
    pub entries: Vec<(Dot, Principal, Rule)>,
    /// The policy context this node writes in now: what an admin's proof of a new entry
    /// signs (with the entry's key, payload and the admin's principal).
    pub context: VClock,
    /// The key this node's next policy entry takes: what an admin's proof signs.
    pub next_key: String,
    /// This node's version vector: a root's or a revocation's cutoff, made here.
    pub version_vector: VClock,
    /// The protocol the cluster speaks; policy entries need protocol 4 everywhere.
    pub protocol: u8,
    /// Versions masked here since the node started.
    pub masked: u64,
    /// Versions waiting for the policy their context names.
    pub waiting: usize,
    /// The API tokens the policy holds.
    pub tokens: Vec<TokenEntry>,
    /// The generations of secret prefixes' keys held (docs/PROTOCOL.md §9.4).
    pub keyrings: Vec<KeyringEntry>,
    /// The age recipient of every node whose member record this node holds, by the node
    /// principal its certificate names (`node:<name>`): whom a prefix key can be sealed to
    /// (§9.2). Of several records naming one node (a wiped data directory), the newest.
    pub recipients: std::collections::BTreeMap<String, String>,
    /// This node's own principal, if its certificate names a node: a keyring entry written
    /// through this node must name it among its readers.
    pub node: Option<String>,
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
    data_dir: Option<PathBuf>,
    storage_fault: Option<StorageFaultHook>,
    info: MemberInfo,
    preset: Preset,
    history_len: usize,
    cache_bytes: usize,
    watch_log_len: u64,
    trust_mode: Mode,
    shared_runtime: bool,
}

impl std::fmt::Debug for MeshBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshBuilder")
            .field("bind", &self.bind)
            .field("seeds", &self.seeds)
            .field("expected_members", &self.expected_members)
            .field("data_dir", &self.data_dir)
            .field("name", &self.info.name)
            .field("tags", &self.info.tags)
            .field("preset", &self.preset)
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

    /// Run the node task and the transport on the runtime that calls [`MeshBuilder::start`]
    /// instead of a thread of their own (the default). For many nodes in one process (tests,
    /// benchmarks that model a cluster on a few cores), where a thread each turns every
    /// message between them into an OS context switch.
    pub fn shared_runtime(mut self, shared: bool) -> Self {
        self.shared_runtime = shared;
        self
    }

    /// What the node does with unsigned versions from peers (docs/PROTOCOL.md §7.5). Default
    /// [`Mode::Enforcing`]: every version must be signed by its writer. Set
    /// [`Mode::Permissive`] while a cluster is upgraded from protocol 2, whose nodes write
    /// unsigned versions.
    pub fn trust_mode(mut self, mode: Mode) -> Self {
        self.trust_mode = mode;
        self
    }

    /// Makes this node a legacy writer with this id: its writes are unsigned, as protocol 2's
    /// were. Default: the writer id is the data directory's writer key's (made with the
    /// directory), and every write is signed. For fixtures and tests of older data
    /// directories; two nodes must never share an id.
    #[doc(hidden)]
    pub fn writer(mut self, writer: WriterId) -> Self {
        self.writer = Some(writer);
        self
    }

    /// Where the replica is kept (created if missing). A node restarted from it has every
    /// write it acknowledged and asks peers only for what it missed. Default: none, the
    /// replica lives in memory and is lost when the process ends.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Makes writes to the data directory fail while the hook returns `true`, as a full disk
    /// would: fault injection for tests. Needs [`MeshBuilder::data_dir`].
    // For tests only, hidden from the docs: not part of the stable API, and may change or go
    // in any release.
    #[doc(hidden)]
    pub fn storage_fault_hook(mut self, hook: StorageFaultHook) -> Self {
        self.storage_fault = Some(hook);
        self
    }

    /// The name other members see ([`Member::name`]). Default: the node's address.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.info.name = name.into();
        self
    }

    /// Adds a tag other members see ([`Member::tags`]), such as `role=api`.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.info.tags.insert(key.into(), value.into());
        self
    }

    /// Timers for a LAN (default) or a WAN.
    pub fn preset(mut self, preset: Preset) -> Self {
        self.preset = preset;
        self
    }

    /// How many versions of each key [`Mesh::history`] keeps. Default
    /// [`DEFAULT_HISTORY_LEN`].
    pub fn history_len(mut self, n: usize) -> Self {
        self.history_len = n.max(1);
        self
    }

    /// How many changes the change log keeps for [`Mesh::watch`] cursors. Default
    /// [`DEFAULT_WATCH_LOG_LEN`]; a watch resuming from further back gets a gap error.
    pub fn watch_log_len(mut self, n: u64) -> Self {
        self.watch_log_len = n.max(1);
        self
    }

    /// The most memory the data directory's page cache may take (default
    /// [`DEFAULT_CACHE_BYTES`], 64 MiB). Reads of pages not cached go to the file (and the
    /// operating system's cache); a larger cache helps only replicas much larger than it.
    pub fn cache_bytes(mut self, bytes: usize) -> Self {
        self.cache_bytes = bytes;
        self
    }

    /// Makes the node speak and advertise protocol `version` at most (its ALPN list and its
    /// member record, in that version's layout), as a node of an older build would: for
    /// mixed-version tests. Not part of the stable API.
    #[doc(hidden)]
    pub fn advertise_protocol(mut self, version: u8) -> Self {
        self.info.protocol = version.clamp(OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION);
        self
    }

    /// Drops traffic the hook selects, in both directions: fault injection for tests.
    // For tests only, hidden from the docs: not part of the stable API, and may change or go
    // in any release.
    #[doc(hidden)]
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
        if self.info.encoded_len() > MAX_MEMBER_INFO_BYTES {
            return Err(MeshError::Config(format!(
                "name and tags take {} bytes, the limit is {MAX_MEMBER_INFO_BYTES}",
                self.info.encoded_len()
            )));
        }
        let (changes, _) = broadcast::channel(EVENT_BUFFER);
        let (storage, loaded, done) = Storage::open(
            self.data_dir.as_deref(),
            self.storage_fault,
            self.cache_bytes,
            self.writer,
            random_writer(),
            random_key()?,
            StoreConfig::default(),
            self.history_len,
            self.watch_log_len,
            changes.clone(),
        )?;
        let identity = Arc::new(match self.data_dir.as_deref() {
            Some(dir) => NodeIdentity::load_or_create(dir)?,
            None => NodeIdentity::ephemeral(),
        });
        let mut info = self.info;
        info.recipient = Some(identity.recipient());
        let tls_error = |e: super::tls::TlsError| MeshError::Config(e.to_string());
        let certifier = Arc::new(CaCertifier::new(&tls).map_err(tls_error)?);
        let bans = Arc::new(Bans::default());
        let runtime = if self.shared_runtime {
            MeshRuntime(None)
        } else {
            MeshRuntime::new()?
        };
        // The transport's tasks (quinn's endpoint, the accept loop) start on the mesh's own
        // runtime; the guard is dropped before anything is awaited.
        let entered = runtime.enter();
        let (transport, inbound) = Transport::bind(
            self.bind,
            &tls,
            info.protocol,
            DEFAULT_MAX_STREAM_MESSAGE_BYTES,
            self.fault,
            certifier.clone(),
            bans.clone(),
        )?;
        let wall = wall_clock_ms();
        let id = NodeId {
            addr: transport.local_addr(),
            writer: loaded.writer,
            generation: wall,
        };
        let mut config = match self.preset {
            Preset::Lan => Config::lan(id, self.expected_members, random_seed()),
            Preset::Wan => Config::wan(id, self.expected_members, random_seed()),
        };
        config.trust = trust_config(
            &tls,
            certifier,
            loaded.writer_key,
            info.protocol,
            self.trust_mode,
        )?;
        #[allow(
            clippy::disallowed_methods,
            reason = "the runtime is where time enters"
        )]
        let now = std::time::Instant::now();
        let mut node = Node::with_store(config, now, wall, loaded.store);
        node.track_touched_keys();
        // The members seen last time: the node can rejoin through them without seeds.
        node.restore_members(
            now,
            loaded
                .members
                .into_iter()
                .filter(|m| m.writer != id.writer && m.addr != id.addr),
        );
        let (commands, command_rx) = mpsc::channel(1_024);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (members, _) = broadcast::channel(EVENT_BUFFER);
        let reader = storage.reader();
        let wire = transport.wire();
        let mut driver = Driver {
            node,
            storage,
            transport,
            inbound,
            commands: command_rx,
            events: events.clone(),
            members: members.clone(),
            seeds: self.seeds,
            done,
            pending: Pending::default(),
            bans,
            policy_entries: 0,
        };
        driver.publish_info(&info).map_err(MeshError::from)?;
        drop(entered);
        runtime.run(driver)?;
        Ok(Mesh {
            id,
            identity,
            prefix_keys: Arc::default(),
            plaintexts: Arc::default(),
            protocol: info.protocol,
            commands,
            events: events.downgrade(),
            changes: changes.downgrade(),
            members: members.downgrade(),
            reader,
            wire,
        })
    }
}

/// The runtime a mesh's node task and transport run on: one thread of its own
/// (`confmesh-mesh`), so that a packet's path (socket, QUIC connection, node, reply) stays on
/// one thread and an idle node wakes one thread, not the embedding application's workers
/// (BENCHMARKS.md, "Idle cost beside chitchat"). The application's tasks call the mesh
/// through channels, from whatever runtime they run on.
/// `None`: the caller's runtime ([`MeshBuilder::shared_runtime`]).
struct MeshRuntime(Option<tokio::runtime::Runtime>);

impl MeshRuntime {
    fn new() -> Result<MeshRuntime, MeshError> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|runtime| MeshRuntime(Some(runtime)))
            .map_err(MeshError::Thread)
    }

    fn enter(&self) -> Option<tokio::runtime::EnterGuard<'_>> {
        self.0.as_ref().map(tokio::runtime::Runtime::enter)
    }

    /// Runs the node task on the mesh's thread until it ends (shutdown, or the handle
    /// dropped); the runtime, with the transport's tasks, goes with it.
    fn run(self, driver: Driver) -> Result<(), MeshError> {
        if self.0.is_none() {
            tokio::spawn(driver.run());
            return Ok(());
        }
        std::thread::Builder::new()
            .name("confmesh-mesh".into())
            .spawn(move || {
                if let Some(runtime) = &self.0 {
                    runtime.block_on(driver.run());
                }
            })
            .map(drop)
            .map_err(MeshError::Thread)
    }
}

impl Drop for MeshRuntime {
    /// A start that failed drops the runtime unused, maybe inside the caller's runtime,
    /// where a blocking shutdown is not allowed.
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
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

/// 32 bytes from the OS's random source: a new writer key's secret.
fn random_key() -> Result<[u8; 32], MeshError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| MeshError::Config(format!("no random source for the writer key: {e}")))?;
    Ok(seed)
}

/// The node's trust: the cluster CA's certifier, and a signer for its writer key endorsed
/// with its TLS key (none for a legacy writer, or a node speaking protocol 2 for tests).
fn trust_config(
    tls: &TlsConfig,
    certifier: Arc<CaCertifier>,
    key: Option<WriterKey>,
    protocol: u8,
    mode: Mode,
) -> Result<TrustConfig, MeshError> {
    let tls_error = |e: super::tls::TlsError| MeshError::Config(e.to_string());
    let signer = match key {
        Some(key) if protocol >= SEALED_FORMAT_VERSION => {
            let endorsement = super::certifier::endorse(tls, &key).map_err(tls_error)?;
            Some(Arc::new(Signer::new(key, endorsement.encode())))
        }
        _ => None,
    };
    // A node speaking protocol 2 for tests judges nothing, as that protocol's builds did.
    let mode = if protocol < SEALED_FORMAT_VERSION {
        Mode::Unchecked
    } else {
        mode
    };
    Ok(TrustConfig {
        signer,
        certifier,
        mode,
    })
}

/// One node of a confmesh cluster, running in this process. Cheap to clone: clones share the
/// node. Dropping every clone without [`Mesh::shutdown`] stops the node as a crash would
/// (members detect it as failed).
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use confmesh::runtime::{Mesh, tls::DevCa};
///
/// let ca = DevCa::generate("docs")?;
/// let node = Mesh::builder()
///     .tls(ca.node_config("node-0")?)
///     .name("node-0")
///     .start()
///     .await?;
/// let mut watch = node.watch("app/", None)?;
/// let blue = node.put("app/mode", "blue").await?;
/// node.put("app/mode", "green").await?;
///
/// let change = watch.next().await.ok_or("ended")??;
/// assert_eq!(change.new_value(), Some(&b"blue"[..]));
///
/// // A new write that restores "blue" and wins over "green".
/// node.rollback("app/mode", blue.dot).await?;
/// let now = node.get("app/mode").await?.ok_or("absent")?;
/// assert_eq!(now.payload.value().map(|b| &b[..]), Some(&b"blue"[..]));
/// assert_eq!(node.history("app/mode").await?.len(), 3);
/// node.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Mesh {
    id: NodeId,
    /// The newest protocol this node speaks (lower only in mixed-version tests).
    protocol: u8,
    commands: mpsc::Sender<Command>,
    /// Weak, so that subscriptions and watches end when the node task and its storage
    /// (which hold the senders) stop, whatever handles are still alive.
    events: broadcast::WeakSender<Event>,
    changes: broadcast::WeakSender<Change>,
    members: broadcast::WeakSender<Member>,
    reader: StorageReader,
    wire: WireHandle,
    /// The node's age identity (docs/PROTOCOL.md §9.2).
    identity: Arc<NodeIdentity>,
    /// The generations of secret prefixes' keys this node has opened, by name, with their
    /// prefix: in memory only (PROTOCOL.md §9.6).
    prefix_keys: Arc<std::sync::Mutex<PrefixKeys>>,
    /// Values opened here, in memory only (PROTOCOL.md §9.6).
    plaintexts: Arc<std::sync::Mutex<PlaintextCache>>,
}

/// Opened generations, by name: their prefix and key. Bounded by [`MAX_OPEN_GENERATIONS`].
type PrefixKeys = std::collections::HashMap<String, (String, Arc<PrefixKey>)>;

/// The most generations a node keeps opened; past it the cache starts again (each reopens in
/// about 0.2 ms).
const MAX_OPEN_GENERATIONS: usize = 4_096;

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
            data_dir: None,
            storage_fault: None,
            info: MemberInfo::default(),
            preset: Preset::Lan,
            history_len: DEFAULT_HISTORY_LEN,
            cache_bytes: DEFAULT_CACHE_BYTES,
            watch_log_len: DEFAULT_WATCH_LOG_LEN,
            trust_mode: Mode::Enforcing,
            shared_runtime: false,
        }
    }

    /// This node's identity; `id().addr` is where peers reach it.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// This node's age recipient (`age1…`), which it publishes in its member record and which
    /// keys of secret prefixes it may read are sealed to (docs/PROTOCOL.md §9.2). Kept with
    /// the data directory ([`IDENTITY_FILE`](super::secrets::IDENTITY_FILE)); new at each start
    /// without one.
    pub fn recipient(&self) -> String {
        self.identity.recipient()
    }

    /// Writes `value` under `key`; returns the new version once it is durable on this node
    /// (with a data directory) and on its way to the other members.
    ///
    /// # Errors
    ///
    /// [`MeshError::Key`] for an invalid key, [`MeshError::Reserved`] for a key under
    /// `_confmesh/`, [`MeshError::Write`] for a value over the limit, [`MeshError::Storage`]
    /// if the data directory failed, [`MeshError::Stopped`] after shutdown. On error nothing
    /// changed.
    pub async fn put(&self, key: &str, value: impl Into<Bytes>) -> Result<Version, MeshError> {
        self.put_audited(key, value, Audit::default()).await
    }

    /// Like [`Mesh::put`], with audit fields (who asked, why) signed with the version and shown
    /// in every replica's history. Until per-principal tokens exist, `author` is this node's
    /// claim (docs/PROTOCOL.md §7.8).
    ///
    /// # Errors
    ///
    /// As [`Mesh::put`]; [`MeshError::Write`] for an audit field over its limit.
    pub async fn put_audited(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        audit: Audit,
    ) -> Result<Version, MeshError> {
        let key = writable_key(key)?;
        audit.check()?;
        let (reply, answer) = oneshot::channel();
        self.send(Command::Put {
            key,
            value: value.into(),
            audit,
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
        self.put_if_audited(key, value, expected, Audit::default())
            .await
    }

    /// Like [`Mesh::put_if`], with audit fields ([`Mesh::put_audited`]).
    ///
    /// # Errors
    ///
    /// As [`Mesh::put_if`] and [`Mesh::put_audited`].
    pub async fn put_if_audited(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        expected: Option<Dot>,
        audit: Audit,
    ) -> Result<Version, MeshError> {
        let key = writable_key(key)?;
        audit.check()?;
        let (reply, answer) = oneshot::channel();
        self.send(Command::PutIf {
            key,
            value: value.into(),
            expected,
            audit,
            reply,
        })
        .await?;
        Ok(answer.await.map_err(|_| MeshError::Stopped)??)
    }

    /// Deletes `key`; returns the tombstone, or `None` if there was nothing to delete.
    ///
    /// # Errors
    ///
    /// As [`Mesh::put`].
    pub async fn delete(&self, key: &str) -> Result<Option<Version>, MeshError> {
        self.delete_audited(key, Audit::default()).await
    }

    /// Like [`Mesh::delete`], with audit fields ([`Mesh::put_audited`]).
    ///
    /// # Errors
    ///
    /// As [`Mesh::put_audited`].
    pub async fn delete_audited(
        &self,
        key: &str,
        audit: Audit,
    ) -> Result<Option<Version>, MeshError> {
        let key = writable_key(key)?;
        audit.check()?;
        let (reply, answer) = oneshot::channel();
        self.send(Command::Delete { key, audit, reply }).await?;
        Ok(answer.await.map_err(|_| MeshError::Stopped)??)
    }

    /// Sends `bytes` to the peer at `to` as one stream message, as they are: a node that
    /// bypasses its own API, for adversarial tests. Not part of the stable API.
    ///
    /// # Errors
    ///
    /// [`MeshError::Stopped`] after shutdown.
    #[doc(hidden)]
    pub async fn send_raw(&self, to: SocketAddr, bytes: Bytes) -> Result<(), MeshError> {
        self.send(Command::SendRaw { to, bytes }).await
    }

    /// The plaintext of `value`, a value of `key` (docs/PROTOCOL.md §9.6): a value sealed to a
    /// generation of a secret prefix is opened with this node's identity (the generation's key
    /// is opened once, then kept in memory, and so is each value opened); a value that is not
    /// sealed is returned as it is.
    ///
    /// # Errors
    ///
    /// [`MeshError::SecretUnreadable`] if this node is not among the generation's readers,
    /// does not hold the generation, or the value was sealed for another key or under a
    /// generation of a prefix that does not cover `key`; [`MeshError::Secret`] if it does not
    /// open (tampered with, or the generation's key does not match its public key).
    pub async fn reveal(&self, key: &str, value: Bytes) -> Result<Bytes, MeshError> {
        let Some(header) = sealed::header_of(&value) else {
            return Ok(value);
        };
        let generation = header.generation.to_owned();
        let unreadable = || MeshError::SecretUnreadable {
            key: key.to_owned(),
            generation: generation.clone(),
        };
        if header.key_digest != sealed::key_digest(key) {
            return Err(unreadable());
        }
        let cached = self
            .prefix_keys
            .lock()
            .ok()
            .and_then(|keys| keys.get(&generation).cloned());
        let (prefix, prefix_key) = match cached {
            Some(opened) => opened,
            None => {
                let wanted = generation.clone();
                let (entry, reader) = self
                    .read(move |node| {
                        let entry = node.policy().keyring(&wanted);
                        let me = node.judge().node_of(node.store().writer()).cloned();
                        let reader = match (&entry, me) {
                            (Some(entry), Some(me)) => entry.readers.contains(&me),
                            _ => false,
                        };
                        (entry, reader)
                    })
                    .await?;
                let entry = entry.ok_or_else(unreadable)?;
                // Not a reader: refused before any decryption is tried.
                if !reader || !key.starts_with(&entry.prefix) {
                    return Err(unreadable());
                }
                let identity = Arc::clone(&self.identity);
                let name = generation.clone();
                let sealed_key = entry.sealed.clone();
                let opened = tokio::task::spawn_blocking(move || {
                    PrefixKey::open(&identity, &name, &sealed_key)
                })
                .await
                .map_err(|_| MeshError::Stopped)?
                .map_err(|e| match e {
                    SecretError::NotARecipient => unreadable(),
                    e => MeshError::Secret(e),
                })?;
                if opened.recipient() != entry.recipient {
                    return Err(MeshError::Secret(SecretError::Malformed(format!(
                        "the key sealed in generation {generation} is not its public key"
                    ))));
                }
                let opened = (entry.prefix, Arc::new(opened));
                if let Ok(mut keys) = self.prefix_keys.lock() {
                    if keys.len() >= MAX_OPEN_GENERATIONS {
                        keys.clear();
                    }
                    keys.insert(generation.clone(), opened.clone());
                }
                opened
            }
        };
        if !key.starts_with(&prefix) {
            return Err(unreadable());
        }
        let digest = PlaintextCache::digest(&value);
        if let Some(plain) = self.plaintexts.lock().ok().and_then(|c| c.get(&digest)) {
            return Ok(plain);
        }
        let max = u64::try_from(value.len()).unwrap_or(u64::MAX);
        let plain = Bytes::from(prefix_key.open_value(&value, key, max)?);
        if let Ok(mut cache) = self.plaintexts.lock() {
            cache.insert(digest, plain.clone());
        }
        Ok(plain)
    }

    /// The generations of secret prefixes' keys this node holds (docs/PROTOCOL.md §9.4), in
    /// position order, each marked whether it is its prefix's current one here.
    ///
    /// # Errors
    ///
    /// [`MeshError::Stopped`] after shutdown.
    pub async fn keyrings(&self) -> Result<Vec<KeyringEntry>, MeshError> {
        self.read(|node| node.policy().keyrings()).await
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

    /// Every version stored for `key`: the winner first, then concurrent siblings (each with
    /// its writer and sequence number in [`Version::dot`] and its time in
    /// [`Version::timestamp`]).
    ///
    /// # Errors
    ///
    /// [`MeshError::Key`] for an invalid key, [`MeshError::Stopped`] after shutdown.
    pub async fn get_versions(&self, key: &str) -> Result<Vec<Version>, MeshError> {
        let key = Key::new(key)?;
        self.read(move |node| node.store().versions(&key).to_vec())
            .await
    }

    /// The winners of every live key starting with `prefix`, in key order. Keys under
    /// `_confmesh/` are listed only when `prefix` starts with it.
    ///
    /// # Errors
    ///
    /// [`MeshError::Stopped`] after shutdown.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Version>, MeshError> {
        let prefix = prefix.to_string();
        let reserved = is_reserved(&prefix);
        self.read(move |node| {
            node.store()
                .list(&prefix)
                .filter(|v| reserved || !is_reserved(v.key.as_str()))
                .cloned()
                .collect()
        })
        .await
    }

    /// Changes to keys starting with `prefix`, from after `from` (a [`Change::cursor`] or
    /// [`Watch::cursor`] of this node), or from now with `None`. Every change is delivered
    /// once, in this node's order (so each key's changes in order); a watch that falls
    /// behind reads the node's change log and so misses nothing. Keys under `_confmesh/` are
    /// watched only when `prefix` starts with it.
    ///
    /// # Errors
    ///
    /// Starting never fails for a valid cursor; the returned [`Watch`] yields first
    /// [`WatchError::Gap`](super::WatchError::Gap) when `from` is older than the changes the
    /// log keeps ([`MeshBuilder::watch_log_len`]),
    /// [`WatchError::UnknownCursor`](super::WatchError::UnknownCursor) for another node's
    /// cursor, and [`WatchError::CursorLost`](super::WatchError::CursorLost) for a cursor the
    /// log never held (handed out by a state of this node that is gone, such as a data
    /// directory since restored from an older backup: changes the client saw may not exist
    /// here). [`MeshError::Storage`] if the log cannot be read.
    pub fn watch(&self, prefix: &str, from: Option<Cursor>) -> Result<Watch, MeshError> {
        // Subscribe before reading the log's head: nothing falls between the two.
        let live = self
            .changes
            .upgrade()
            .ok_or(MeshError::Stopped)?
            .subscribe();
        let (cursor, caught_up) = match from {
            Some(cursor) => (cursor, false),
            None => {
                let (log, seq) = self.reader.log_head()?;
                (Cursor { log, seq }, true)
            }
        };
        let watch = Watch::new(
            prefix.to_string(),
            self.reader.clone(),
            live,
            cursor,
            caught_up,
        );
        Ok(if from.is_some() {
            watch.check_cursor()
        } else {
            watch
        })
    }

    /// The versions of `key` this node has stored, oldest first: the last
    /// [`MeshBuilder::history_len`] of them, tombstones included, local and remote. Every
    /// version the node had applied when called is included (the history is read once the
    /// storage has written them).
    ///
    /// # Errors
    ///
    /// [`MeshError::Key`] for an invalid key, [`MeshError::Storage`] if the data directory
    /// cannot be read.
    pub async fn history(&self, key: &str) -> Result<Vec<Version>, MeshError> {
        let key = Key::new(key)?;
        let (reply, written) = oneshot::channel();
        self.send(Command::AwaitStorage { reply }).await?;
        written.await.map_err(|_| MeshError::Stopped)?;
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || reader.history(&key))
            .await
            .map_err(|_| MeshError::Stopped)?
            .map_err(MeshError::from)
    }

    /// This node's audit trail: the newest `limit` versions it stores of keys starting with
    /// `prefix` (each key's history, [`Mesh::history`]), newest first by their writers'
    /// clocks, each with the author and change message its writer signed. Each node answers
    /// from its own bounded history (the last [`MeshBuilder::history_len`] versions per key),
    /// so an old change may be gone here and a change not yet received is absent. Keys under
    /// `_confmesh/` are included only when `prefix` starts with it.
    ///
    /// # Errors
    ///
    /// [`MeshError::Storage`] if the data directory cannot be read.
    pub async fn audit(&self, prefix: &str, limit: usize) -> Result<Vec<Version>, MeshError> {
        let (reply, written) = oneshot::channel();
        self.send(Command::AwaitStorage { reply }).await?;
        written.await.map_err(|_| MeshError::Stopped)?;
        let reader = self.reader.clone();
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || reader.audit(&prefix, limit))
            .await
            .map_err(|_| MeshError::Stopped)?
            .map_err(MeshError::from)
    }

    /// Restores the value `key` had at version `dot` (from [`Mesh::history`]) with a new write,
    /// which wins over every version this node has seen. Restoring a delete deletes the key.
    /// Returns the new version, `None` if it restores a delete of a key already absent.
    ///
    /// # Errors
    ///
    /// [`MeshError::UnknownVersion`] if the history does not hold `dot`, otherwise as
    /// [`Mesh::put`].
    pub async fn rollback(&self, key: &str, dot: Dot) -> Result<Option<Version>, MeshError> {
        self.rollback_audited(key, dot, Audit::default()).await
    }

    /// Like [`Mesh::rollback`], with audit fields ([`Mesh::put_audited`]).
    ///
    /// # Errors
    ///
    /// As [`Mesh::rollback`] and [`Mesh::put_audited`].
    pub async fn rollback_audited(
        &self,
        key: &str,
        dot: Dot,
        audit: Audit,
    ) -> Result<Option<Version>, MeshError> {
        writable_key(key)?;
        let version = self
            .history(key)
            .await?
            .into_iter()
            .find(|v| v.dot == dot)
            .ok_or(MeshError::UnknownVersion(dot))?;
        match version.payload {
            // A secret's old value may be sealed to a generation since replaced: it is opened
            // here (on a reader) and sealed again to the current one.
            Payload::Value(value) => {
                let value = self.reveal(key, value).await?;
                self.put_audited(key, value, audit).await.map(Some)
            }
            Payload::Tombstone => self.delete_audited(key, audit).await,
        }
    }

    /// This node, then every other member it sees as alive, then the members that left or
    /// went down in the last 5 minutes ([`DEPARTED_LISTED_FOR`](crate::proto::node::DEPARTED_LISTED_FOR))
    /// and did not come back, as [`MemberState::Left`] or [`MemberState::Down`], with their
    /// names and tags.
    ///
    /// # Errors
    ///
    /// [`MeshError::Stopped`] after shutdown.
    pub async fn members(&self) -> Result<Vec<Member>, MeshError> {
        let negotiated = self.wire.negotiated();
        let own = self.protocol;
        let now = super::driver::now();
        self.read(move |node| {
            let mut me = member(node, node.id(), &negotiated);
            me.protocol = own;
            let gone = node.departed(now).map(|(id, how)| {
                let mut member = member(node, id, &negotiated);
                member.state = match how {
                    Departure::Down => MemberState::Down,
                    Departure::Left => MemberState::Left,
                };
                member
            });
            std::iter::once(me)
                .chain(node.members().map(|id| member(node, id, &negotiated)))
                .chain(gone)
                .collect()
        })
        .await
    }

    /// Member changes from now on: a member up, down or gone ([`Member::state`]), or its name
    /// or tags changed. A subscriber more than 4,096 changes behind misses the oldest and is
    /// told so ([`Lagged`](super::Lagged)); [`Mesh::members`] then gives the current list.
    /// The subscription ends once the node has stopped.
    pub fn watch_members(&self) -> Subscription<Member> {
        Subscription::new(&self.members)
    }

    /// Every event from now on: key changes (local and remote) and membership changes. A
    /// subscriber more than 4,096 events behind misses the oldest and is told so
    /// ([`Lagged`](super::Lagged)). The subscription ends once the node has stopped. Prefer
    /// [`Mesh::watch`], which never misses a change.
    pub fn subscribe(&self) -> Subscription<Event> {
        Subscription::new(&self.events)
    }

    /// The node's counters.
    ///
    /// # Errors
    ///
    /// [`MeshError::Stopped`] after shutdown.
    pub async fn stats(&self) -> Result<NodeStats, MeshError> {
        self.read(Node::stats).await
    }

    /// The trust state: what each peer sent that was not applied (forged, refused,
    /// deferred, equivocations: docs/PROTOCOL.md §7.4), and the writers proven to equivocate,
    /// with the sequence number they equivocated at.
    ///
    /// # Errors
    ///
    /// [`MeshError::Stopped`] after shutdown.
    pub async fn trust(&self) -> Result<TrustReport, MeshError> {
        self.read(|node| TrustReport {
            by_peer: node.trust_by_peer().collect(),
            equivocated: node.judge().convictions().collect(),
            endorsed_writers: node.judge().writer_count(),
            unsigned_versions: node
                .store()
                .versions_all()
                .filter(|v| v.seal.is_none())
                .count(),
            mode: node.judge().mode(),
        })
        .await
    }

    /// The policy this node holds (docs/PROTOCOL.md §8).
    ///
    /// # Errors
    ///
    /// [`MeshError::Stopped`].
    pub async fn policy(&self) -> Result<PolicyReport, MeshError> {
        let protocol = self.health().await?.protocol;
        self.read(move |node| PolicyReport {
            rooted: node.policy().rooted(),
            entries: node
                .policy()
                .entries()
                .map(|(dot, author, rule)| (dot, author.clone(), rule.clone()))
                .collect(),
            context: node.policy_context(),
            next_key: node.next_entry_key().as_str().to_owned(),
            version_vector: node.store().digest().version_vector(),
            protocol,
            masked: node.stats().versions_masked,
            waiting: node.judge().unripe(),
            tokens: node.policy().tokens(),
            keyrings: node.policy().keyrings(),
            recipients: node_recipients(node),
            node: node
                .judge()
                .node_of(node.store().writer())
                .map(Principal::to_string),
        })
        .await
    }

    /// The token `id` as the policy this node holds has it (docs/PROTOCOL.md §8.7): what an
    /// agent checks a presented token against.
    ///
    /// # Errors
    ///
    /// [`MeshError::Stopped`].
    pub async fn token(&self, id: &str) -> Result<Option<TokenEntry>, MeshError> {
        let id = id.to_owned();
        self.read(move |node| node.policy().token(&id)).await
    }

    /// Whether `principal` holds `right` over each of `keys` now ([`Book::holds_now`]): `None`
    /// where it does, else the denial naming the missing grant.
    ///
    /// [`Book::holds_now`]: crate::proto::trust::policy::Book::holds_now
    ///
    /// # Errors
    ///
    /// [`MeshError::Stopped`].
    pub async fn rights(
        &self,
        principal: Principal,
        right: Right,
        keys: Vec<String>,
    ) -> Result<Vec<Option<Denial>>, MeshError> {
        self.read(move |node| {
            node.policy()
                .holds_now(&principal, right, keys.iter().map(String::as_str))
        })
        .await
    }

    /// Writes the policy entry `rule` (docs/PROTOCOL.md §8.2) under `key`, for the admin named
    /// in `audit`, who proved it with `proof` in `context` (both from [`Mesh::policy`]): see
    /// [`AdminKey::prove_rule`](super::certifier::AdminKey::prove_rule). Returns once it is
    /// durable here, like [`Mesh::put`].
    ///
    /// # Errors
    ///
    /// [`MeshError::Config`] while a member speaks a protocol older than 4 (it could not read
    /// the entry, nor any version written after it), older than 5 for a keyring entry, or, for a root, while this node holds
    /// unsigned versions or does not enforce signatures; [`MeshError::Write`] if every replica
    /// would refuse the entry ([`WriteError::Refused`], naming why), the context names entries
    /// this node does not hold, or another entry took `key` ([`WriteError::EntryKeyTaken`]:
    /// ask for the policy again); [`MeshError::Storage`], [`MeshError::Stopped`].
    pub async fn write_rule(
        &self,
        key: Key,
        rule: Rule,
        audit: Audit,
        context: VClock,
        proof: AuthorProof,
    ) -> Result<Version, MeshError> {
        audit.check()?;
        let health = self.health().await?;
        if !health.supports(GROUNDED_FORMAT_VERSION) {
            return Err(MeshError::Config(format!(
                "policy entries need every member on protocol {GROUNDED_FORMAT_VERSION}; the cluster speaks {} (held back by {})",
                health.protocol,
                health.held_back_by.join(", ")
            )));
        }
        if matches!(rule, Rule::Keyring { .. }) && !health.supports(SECRETS_PROTOCOL_VERSION) {
            return Err(MeshError::Config(format!(
                "secret prefixes need every member on protocol {SECRETS_PROTOCOL_VERSION}; the cluster speaks {} (held back by {})",
                health.protocol,
                health.held_back_by.join(", ")
            )));
        }
        if matches!(rule, Rule::Root { .. }) {
            // Unsigned versions prove no node: once a root is held they are taken from no one,
            // so a relay still holding them would be judged a forger (PROTOCOL.md §8).
            let trust = self.trust().await?;
            if trust.unsigned_versions > 0 || trust.mode != Mode::Enforcing {
                return Err(MeshError::Config(format!(
                    "a policy root needs every node enforcing signatures and no unsigned version left ({} here, mode {:?}): run `confmesh trust resign`, then set trust_mode = \"enforcing\" (docs/PROTOCOL.md §7.5)",
                    trust.unsigned_versions, trust.mode
                )));
            }
        }
        let (reply, answer) = oneshot::channel();
        self.send(Command::WriteRule {
            key,
            rule,
            audit,
            context,
            proof,
            reply,
        })
        .await?;
        Ok(answer.await.map_err(|_| MeshError::Stopped)??)
    }

    /// Writes again, signed, every application key holding an unsigned version (a legacy
    /// writer's, from protocol 2), and deletes legacy writers' member records, so that nodes
    /// joining later can enforce signatures ([`Node::resign`](crate::proto::node::Node::resign),
    /// docs/PROTOCOL.md §7.5). The writes are made durable and spread like any; watch
    /// [`TrustReport::unsigned_versions`] reach 0 on every node before switching them to
    /// [`Mode::Enforcing`]. Run it on one node, once no node of protocol 2 is left.
    ///
    /// # Errors
    ///
    /// [`MeshError::Resign`] if this node does not sign; [`MeshError::Stopped`].
    pub async fn resign(&self) -> Result<Resigned, MeshError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Resign { reply }).await?;
        Ok(answer.await.map_err(|_| MeshError::Stopped)??)
    }

    /// What this node's QUIC endpoint sent and received on the wire, every overhead
    /// included (QUIC headers, acknowledgements, keep-alives, TLS); [`Mesh::stats`] counts
    /// only the protocol's own bytes.
    pub fn wire_stats(&self) -> WireStats {
        self.wire.read()
    }

    /// How the node is doing: membership and how recently it was known to be in sync.
    ///
    /// # Errors
    ///
    /// [`MeshError::Stopped`] after shutdown.
    pub async fn health(&self) -> Result<Health, MeshError> {
        let own = self.protocol;
        let negotiated = self.wire.negotiated();
        self.read(move |node| {
            #[allow(clippy::disallowed_methods, reason = "the runtime reads the clock")]
            let now = std::time::Instant::now();
            let mut protocol = own;
            let mut held_back_by = Vec::new();
            for id in node.members() {
                let member = member(node, id, &negotiated);
                protocol = protocol.min(member.protocol);
                if member.protocol < own {
                    held_back_by.push(member.name);
                }
            }
            Health {
                joined: node.is_active(),
                peers: node.member_count(),
                keys: node.store().key_count()
                    - node.store().key_count_under(super::RESERVED_PREFIX),
                since_in_sync: node
                    .last_in_sync()
                    .map(|at| now.saturating_duration_since(at)),
                protocol,
                held_back_by,
                policy_root: node.policy().rooted(),
            }
        })
        .await
    }

    /// Leaves the cluster gracefully (members report [`Event::MemberLeft`]), makes the replica
    /// durable and stops the node. Other clones of this handle fail with
    /// [`MeshError::Stopped`] afterwards.
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

/// A key the application may write.
fn writable_key(key: &str) -> Result<Key, MeshError> {
    let key = Key::new(key)?;
    if is_reserved(key.as_str()) {
        return Err(MeshError::Reserved);
    }
    Ok(key)
}

/// The age recipient of every node whose member record `node` holds, by the principal its
/// writer's endorsement names; of several records naming one node, the newest.
fn node_recipients(node: &Node) -> std::collections::BTreeMap<String, String> {
    let mut newest: std::collections::BTreeMap<String, (u64, String)> = Default::default();
    for record in node.store().list(MEMBERS_PREFIX) {
        let Some(writer) = info_writer(&record.key) else {
            continue;
        };
        let Some(principal) = node.judge().node_of(writer) else {
            continue;
        };
        let Some(recipient) = MemberInfo::read(node, writer).and_then(|i| i.recipient) else {
            continue;
        };
        let wall = record.timestamp.wall_ms();
        let slot = newest
            .entry(principal.to_string())
            .or_insert((wall, recipient.clone()));
        if wall >= slot.0 {
            *slot = (wall, recipient);
        }
    }
    newest.into_iter().map(|(p, (_, r))| (p, r)).collect()
}

/// Member `id` as this node sees it alive. Its protocol version is the oldest of what its
/// record advertises and what its open connections negotiated: a new member is known by its
/// connection before its record arrives (so a join does not lower the cluster's version), and
/// a node rolled back to an older build is known by its connection even while the record its
/// newer build wrote still replicates. A member known by neither counts as the oldest version.
fn member(
    node: &Node,
    id: NodeId,
    negotiated: &std::collections::HashMap<SocketAddr, u8>,
) -> Member {
    let info = MemberInfo::read(node, id.writer);
    let advertised = info.as_ref().map(|i| i.protocol);
    let mut member = Member::new(id, info, MemberState::Alive);
    member.protocol = match (advertised, negotiated.get(&id.addr)) {
        (Some(a), Some(&n)) => a.min(n),
        (Some(v), None) | (None, Some(&v)) => v,
        (None, None) => OLDEST_PROTOCOL_VERSION,
    };
    member
}
