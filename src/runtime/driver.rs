//! The node task: one tokio task owns a [`Node`] and its [`Storage`] and pumps them. Its
//! inputs are a closed set: a message from a peer, a timer, a command from the
//! [`Mesh`](super::Mesh) handle, a commit the storage writer reports done, the checkpoint
//! tick, and the end of the handle (a crash, as far as the mesh can tell). After each input it
//! settles: what changed and the node's local writes go to storage, events to subscribers and
//! messages to the transport.
//!
//! A local write is made pending in the node, committed durably by the storage writer (with
//! every other write that arrived meanwhile: group commit), and takes effect when the writer
//! reports it done ([`Node::handle_persisted`]); only then is the caller answered. The task
//! never waits on the disk: while a commit is outstanding, new local writes gather for the
//! next one (see [`MAX_IN_FLIGHT`](super::storage::MAX_IN_FLIGHT)), and past a bound the task
//! stops reading new input until the disk catches up.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{
    bans::{BAN, Bans},
    members::{Member, MemberInfo, MemberState, info_writer},
    secrets::{self, SecretError},
    storage::{Change, Done, Storage, StorageError, Submission},
    transport::{Inbound, Inboxes, Transport},
};
use crate::proto::{
    AuthorProof, Dot, Key, TouchedKeys, VClock, Version, WriteError,
    node::{Audit, Channel, Event, Node, Transmit},
    trust::{policy::Rule, sealed},
};

/// Past this many change-log entries waiting for the disk, the node task stops reading
/// peers' messages until storage catches up (the transport's queue then fills, and QUIC's
/// flow control slows the senders).
const MAX_UNWRITTEN_CHANGES: usize = 262_144;
/// Past this many local writes waiting for the disk, or this many bytes of their values, new
/// writes are refused ([`StorageError::Busy`]) until the disk catches up.
const MAX_PENDING_WRITES: usize = 65_536;
/// See [`MAX_PENDING_WRITES`].
const MAX_PENDING_WRITE_BYTES: usize = 256 << 20;

/// How soon remote changes committed without an fsync are made durable, and a changed member
/// list saved.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// How often a node that is not yet a member resolves its seeds again and re-joins.
const RESOLVE_SEEDS_EVERY: Duration = Duration::from_secs(5);
/// The longest a graceful shutdown waits for the leave to complete.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest a leaving node waits for its last messages to reach quinn.
const LEAVE_DRAIN: Duration = Duration::from_millis(500);

/// A request from the handle.
pub(crate) enum Command {
    Put {
        key: Key,
        value: Bytes,
        audit: Audit,
        reply: oneshot::Sender<Result<Version, LocalWriteError>>,
    },
    /// Put only if the local winner of `key` is the version with dot `expected` (`None`:
    /// only if the key has no live value).
    PutIf {
        key: Key,
        value: Bytes,
        expected: Option<Dot>,
        audit: Audit,
        reply: oneshot::Sender<Result<Version, LocalWriteError>>,
    },
    Delete {
        key: Key,
        audit: Audit,
        reply: oneshot::Sender<Result<Option<Version>, LocalWriteError>>,
    },
    /// Write a policy entry ([`Node::write_rule`]).
    WriteRule {
        key: Key,
        rule: Rule,
        audit: Audit,
        context: VClock,
        proof: AuthorProof,
        reply: oneshot::Sender<Result<Version, LocalWriteError>>,
    },
    /// Replace every unsigned version ([`Node::resign`]).
    Resign {
        reply:
            oneshot::Sender<Result<crate::proto::node::Resigned, crate::proto::node::ResignError>>,
    },
    /// Bytes sent to a peer as they are, bypassing the node: for adversarial tests.
    SendRaw { to: SocketAddr, bytes: Bytes },
    /// Any read: runs against the node and answers through its own channel.
    Read(Box<dyn FnOnce(&Node) + Send>),
    /// Answers once storage has written everything the node applied so far.
    AwaitStorage { reply: oneshot::Sender<()> },
    /// Leave gracefully, then stop.
    Shutdown { reply: oneshot::Sender<()> },
}

/// Why a local write did not happen; nothing changed.
#[derive(Debug)]
pub(crate) enum LocalWriteError {
    /// A conditional put found another winner.
    Conflict {
        current: Option<Dot>,
    },
    Write(WriteError),
    Storage(StorageError),
    /// A value under a secret prefix could not be sealed (PROTOCOL.md §9.6).
    Secret(SecretError),
}

impl From<WriteError> for LocalWriteError {
    fn from(e: WriteError) -> LocalWriteError {
        match e {
            WriteError::Conflict { current } => LocalWriteError::Conflict { current },
            e => LocalWriteError::Write(e),
        }
    }
}

/// Who waits for a pending local write.
enum Waiter {
    Put(oneshot::Sender<Result<Version, LocalWriteError>>),
    Delete(oneshot::Sender<Result<Option<Version>, LocalWriteError>>),
    /// A write of the node's own (its name and tags): nobody waits.
    Internal,
}

/// A pending local write and who waits for it.
struct Awaited {
    version: Version,
    waiter: Waiter,
}

/// Seeds as given: addresses or `host:port` names, resolved when joining.
pub(crate) type Seeds = Vec<String>;

pub(crate) struct Driver {
    pub(crate) node: Node,
    pub(crate) storage: Storage,
    pub(crate) transport: Arc<Transport>,
    pub(crate) inbound: Inboxes,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) members: broadcast::Sender<Member>,
    pub(crate) seeds: Seeds,
    /// Commits reported done by the storage writer.
    pub(crate) done: mpsc::UnboundedReceiver<Done>,
    /// Not yet sent to storage.
    pub(crate) pending: Pending,
    /// Peers that sent forged versions, and until when their messages are dropped (by the
    /// transport, which shares this).
    pub(crate) bans: Arc<Bans>,
    /// How many policy entries the node held when the transport last heard which nodes the
    /// policy cut off.
    pub(crate) policy_entries: usize,
}

/// What the next commit must write, and the local writes awaited.
#[derive(Default)]
pub(crate) struct Pending {
    keys: TouchedKeys,
    changes: Vec<Change>,
    /// Local writes handed out by the node, not yet submitted.
    locals: Vec<Version>,
    /// Local writes applied up to this number, not yet reported to storage.
    applied_through: Option<u64>,
    /// Waiting for the next commit to be written.
    notify: Vec<oneshot::Sender<()>>,
    /// The store revision last sent to storage.
    sent_revision: u64,
    /// Commits sent without an fsync since the last durable one.
    unsynced: bool,
    /// The next commit must be durable (a checkpoint is due).
    durable: bool,
    members_changed: bool,
    /// Pending local writes in sequence order, with who waits for each.
    awaited: std::collections::VecDeque<Awaited>,
    /// Bumped when a commit of local writes fails: the node drops every pending write, and
    /// reports of commits submitted before (refused too) are stale.
    epoch: u64,
    /// Numbers of refused local writes to remove from the write-ahead log.
    discard: Option<(u64, u64)>,
    /// The last commit failed: checkpoints keep probing the disk with one.
    failing: bool,
    /// Changes submitted since commits started failing: the writer keeps them until the disk
    /// recovers, so they count against [`MAX_UNWRITTEN_CHANGES`].
    kept_changes: usize,
}

impl Pending {
    /// Whether a checkpoint has work: commits not yet durable, a member list to save, a
    /// failing disk to probe, or a durable commit the writer could not take yet.
    fn wants_checkpoint(&self) -> bool {
        self.unsynced || self.members_changed || self.failing || self.durable
    }
}

#[allow(
    clippy::disallowed_methods,
    reason = "the runtime is where time enters the node"
)]
pub(crate) fn now() -> std::time::Instant {
    std::time::Instant::now()
}

impl Driver {
    /// Runs until shutdown or until the handle is dropped.
    pub(crate) async fn run(mut self) {
        self.join().await;
        let mut resolve = tokio::time::interval(RESOLVE_SEEDS_EVERY);
        resolve.tick().await;
        // Armed only while a checkpoint has something to make durable: an idle node does
        // not wake for it.
        let mut checkpoint_at: Option<tokio::time::Instant> = None;
        let mut stopped = None;
        loop {
            self.settle();
            if checkpoint_at.is_none() && self.pending.wants_checkpoint() {
                checkpoint_at = Some(tokio::time::Instant::now() + CHECKPOINT_EVERY);
            }
            let deadline = self
                .node
                .poll_timeout()
                .map_or_else(far_future, tokio::time::Instant::from_std);
            let take_messages =
                self.pending.changes.len() + self.pending.kept_changes < MAX_UNWRITTEN_CHANGES;
            tokio::select! {
                Some(done) = self.done.recv() => self.persisted(done),
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown { reply }) => {
                        self.leave().await;
                        stopped = Some(reply);
                        break;
                    }
                    Some(command) => self.command(command),
                    // The handle is gone without a shutdown: stop as a crash would.
                    None => break,
                },
                Some(message) = self.inbound.datagrams.recv() => self.receive(message),
                Some(message) = self.inbound.streams.recv(), if take_messages => self.receive(message),
                () = tokio::time::sleep_until(deadline) => self.node.handle_timeout(now()),
                _ = resolve.tick(), if !self.node.is_active() && !self.seeds.is_empty() => {
                    self.join().await;
                }
                () = tokio::time::sleep_until(checkpoint_at.unwrap_or_else(far_future)),
                    if checkpoint_at.is_some() =>
                {
                    checkpoint_at = None;
                    self.checkpoint();
                }
            }
        }
        if stopped.is_some() {
            self.finish_writes().await;
        }
        // The writer finishes what was submitted; the data directory is free for another
        // node once shutdown returns. Writes it made durable are answered as such; what is
        // still pending is refused.
        self.storage.close();
        while let Ok(done) = self.done.try_recv() {
            self.persisted(done);
        }
        self.fail_pending(&StorageError::Unavailable);
        if let Some(reply) = stopped {
            let _ = reply.send(());
        }
        self.transport.close().await;
    }

    /// Publishes this node's name and tags if the replica holds other ones: a pending write,
    /// made durable and sent by the task like any other.
    /// `value` sealed to the current generation of the secret prefix that covers `key`
    /// (PROTOCOL.md §9.6), so that its plaintext never leaves this node. A value already sealed
    /// for this key to the current generation (by its client) is kept as it is; one sealed to
    /// an older generation or for another key is refused (a rollback opens it first,
    /// [`Mesh::rollback`](super::Mesh::rollback)); a key under no secret prefix keeps its value.
    fn seal_secret(&self, key: &Key, value: Bytes) -> Result<Bytes, LocalWriteError> {
        let book = self.node.judge().book();
        let Some(generation) = book.sealing_generation(key.as_str()) else {
            return Ok(value);
        };
        if let Some(header) = sealed::header_of(&value) {
            if header.generation != generation.generation {
                return Err(LocalWriteError::Secret(SecretError::WrongGeneration {
                    expected: generation.generation,
                    found: header.generation.to_string(),
                }));
            }
            if header.key_digest != sealed::key_digest(key.as_str()) {
                return Err(LocalWriteError::Secret(SecretError::WrongKey));
            }
            return Ok(value);
        }
        secrets::seal_value(
            &generation.recipient,
            &generation.generation,
            key.as_str(),
            &value,
        )
        .map(Bytes::from)
        .map_err(LocalWriteError::Secret)
    }

    pub(crate) fn publish_info(&mut self, info: &MemberInfo) -> Result<(), LocalWriteError> {
        let writer = self.node.store().writer();
        if MemberInfo::read(&self.node, writer).as_ref() == Some(info) {
            return Ok(());
        }
        let Some(key) = MemberInfo::key(writer) else {
            return Ok(());
        };
        let version = self.node.put(now(), key, Bytes::from(info.encode()))?;
        self.await_write(version, Waiter::Internal);
        Ok(())
    }

    async fn join(&mut self) {
        let seeds = resolve(&self.seeds, self.transport.local_addr()).await;
        if !seeds.is_empty() {
            self.node.join(now(), &seeds);
        }
    }

    fn command(&mut self, command: Command) {
        let busy = self.node.pending_writes() >= MAX_PENDING_WRITES
            || self.node.pending_bytes() >= MAX_PENDING_WRITE_BYTES;
        let busy_error = || LocalWriteError::Storage(StorageError::Busy);
        match command {
            Command::Put { reply, .. }
            | Command::PutIf { reply, .. }
            | Command::WriteRule { reply, .. }
                if busy =>
            {
                let _ = reply.send(Err(busy_error()));
            }
            Command::Delete { reply, .. } if busy => {
                let _ = reply.send(Err(busy_error()));
            }
            Command::Put {
                key,
                value,
                audit,
                reply,
            } => match self
                .seal_secret(&key, value)
                .and_then(|value| Ok(self.node.put_audited(now(), key, value, audit)?))
            {
                Ok(version) => self.await_write(version, Waiter::Put(reply)),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::PutIf {
                key,
                value,
                expected,
                audit,
                reply,
            } => match self.seal_secret(&key, value).and_then(|value| {
                Ok(self
                    .node
                    .put_if_audited(now(), key, value, expected, audit)?)
            }) {
                Ok(version) => self.await_write(version, Waiter::Put(reply)),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Command::Delete { key, audit, reply } => {
                match self.node.try_delete_audited(now(), key, audit) {
                    Ok(Some(version)) => self.await_write(version, Waiter::Delete(reply)),
                    Ok(None) => {
                        let _ = reply.send(Ok(None));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Command::WriteRule {
                key,
                rule,
                audit,
                context,
                proof,
                reply,
            } => match self
                .node
                .write_rule(now(), &key, &rule, audit, context, proof)
            {
                Ok(version) => self.await_write(version, Waiter::Put(reply)),
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                }
            },
            Command::Resign { reply } => {
                let _ = reply.send(self.node.resign(now()));
            }
            Command::SendRaw { to, bytes } => self.transport.send(Transmit {
                to,
                channel: Channel::Stream,
                bytes,
            }),
            Command::Read(read) => read(&self.node),
            Command::AwaitStorage { reply } => self.pending.notify.push(reply),
            Command::Shutdown { .. } => {}
        }
    }

    fn await_write(&mut self, version: Version, waiter: Waiter) {
        self.pending.awaited.push_back(Awaited { version, waiter });
    }

    fn receive(&mut self, message: Inbound) {
        let now = now();
        match message {
            // Queued before its sender was banned: the readers drop what comes after.
            Inbound::Datagram { from, .. } | Inbound::Stream { from, .. }
                if self.bans.banned(from, now) => {}
            Inbound::Datagram { from, bytes } => self.node.handle_datagram(now, from, &bytes),
            Inbound::Stream { from, len, message } => {
                self.node
                    .handle_decoded_stream_message(now, from, len, message);
                let forged = self.node.trust_of(from).forged;
                if self.bans.judge(from, forged, now) {
                    tracing::warn!(peer = %from, forged, ban = ?BAN, "peer banned: it sent forged versions");
                    self.transport.forget(from);
                }
            }
        }
    }

    /// The storage writer finished a commit: local writes it made durable take effect and
    /// their callers are answered; refused ones are dropped and refused.
    fn persisted(&mut self, done: Done) {
        self.storage.completed();
        self.pending.failing = !done.ok;
        if done.ok {
            self.pending.kept_changes = 0;
        }
        match done.locals {
            // Refused or not, these writes were already refused when their epoch failed.
            Some(_) if done.epoch != self.pending.epoch => {}
            None => {}
            Some(Ok(seq)) => {
                let refused = self.node.handle_persisted(now(), seq);
                self.pending.applied_through = Some(seq);
                while let Some(next) = self.pending.awaited.front()
                    && next.version.dot.counter <= seq
                {
                    let Some(Awaited { version, waiter }) = self.pending.awaited.pop_front() else {
                        break;
                    };
                    let result = if refused.contains(&version.dot.counter) {
                        Err(LocalWriteError::Storage(StorageError::IdInUse(
                            version.dot.counter,
                        )))
                    } else {
                        Ok(version)
                    };
                    match waiter {
                        Waiter::Put(reply) => {
                            let _ = reply.send(result);
                        }
                        Waiter::Delete(reply) => {
                            let _ = reply.send(result.map(Some));
                        }
                        Waiter::Internal => {}
                    }
                }
            }
            Some(Err(e)) => {
                self.pending.epoch += 1;
                self.fail_pending(&StorageError::WriteFailed(e));
            }
        }
    }

    /// Makes the local writes already made durable, and those still pending, take effect
    /// before the node stops (bounded: a failing disk refuses them instead).
    async fn finish_writes(&mut self) {
        let give_up = tokio::time::Instant::now() + LEAVE_TIMEOUT;
        while self.storage.in_flight() > 0 || self.node.pending_writes() > 0 {
            self.settle();
            tokio::select! {
                Some(done) = self.done.recv() => self.persisted(done),
                () = tokio::time::sleep_until(give_up) => break,
            }
        }
        self.settle();
    }

    /// Drops every pending local write, refusing it to its caller with `error` (a
    /// [`StorageError::WriteFailed`], shared, or else [`StorageError::Unavailable`]).
    fn fail_pending(&mut self, error: &StorageError) {
        let dropped = self.node.handle_persist_failed();
        if let Some((first, last)) = dropped {
            self.pending.discard = Some(match self.pending.discard {
                Some((a, b)) => (a.min(first), b.max(last)),
                None => (first, last),
            });
        }
        self.pending.locals.clear();
        let shared = match error {
            StorageError::WriteFailed(e) => Some(std::sync::Arc::clone(e)),
            _ => None,
        };
        for Awaited { version, waiter } in self.pending.awaited.drain(..) {
            let e = || {
                LocalWriteError::Storage(match &shared {
                    Some(shared) => StorageError::WriteFailed(shared.clone()),
                    None => StorageError::Unavailable,
                })
            };
            match waiter {
                Waiter::Put(reply) => {
                    let _ = reply.send(Err(e()));
                }
                Waiter::Delete(reply) => {
                    let _ = reply.send(Err(e()));
                }
                Waiter::Internal => {
                    tracing::warn!(key = %version.key, "this node's own record not saved; written again at the next start");
                }
            }
        }
        if let Some((first, last)) = dropped {
            tracing::warn!(first, last, cause = %error, "local writes refused: not made durable");
        }
    }

    /// Leaves, pumping the node until the leave completes (bounded).
    async fn leave(&mut self) {
        self.node.leave(now());
        let give_up = tokio::time::Instant::now() + LEAVE_TIMEOUT;
        while !self.node.has_left() && tokio::time::Instant::now() < give_up {
            self.settle();
            let deadline = self
                .node
                .poll_timeout()
                .map_or(give_up, tokio::time::Instant::from_std)
                .min(give_up);
            tokio::select! {
                Some(done) = self.done.recv() => self.persisted(done),
                Some(message) = self.inbound.datagrams.recv() => self.receive(message),
                Some(message) = self.inbound.streams.recv() => self.receive(message),
                () = tokio::time::sleep_until(deadline) => self.node.handle_timeout(now()),
            }
        }
        self.settle();
        self.checkpoint();
        // The last packets (the down announcement, with the leave notice) must reach quinn,
        // and then leave the socket, before the endpoint closes: on a loaded machine the
        // tasks that hand them over may not have run yet.
        self.transport.drain(LEAVE_DRAIN).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    /// Submits what is pending to storage if a commit slot is free; otherwise it waits for
    /// the next [`Driver::persisted`], gathering more.
    fn flush(&mut self) {
        let touched = self.node.take_touched_keys();
        if self.pending.keys.is_empty() {
            self.pending.keys = touched;
        } else {
            for (key, touched) in touched {
                // How the key stood before its first change since the last batch counts.
                self.pending.keys.entry(key).or_insert(touched);
            }
        }
        while let Some(version) = self.node.poll_persist() {
            self.pending.locals.push(version);
        }
        if !self.storage.can_submit(!self.pending.locals.is_empty()) {
            return;
        }
        let revision = self.node.store().revision();
        let pending = &mut self.pending;
        let has_work = !pending.keys.is_empty()
            || !pending.changes.is_empty()
            || !pending.locals.is_empty()
            || !pending.notify.is_empty()
            || pending.applied_through.is_some()
            || pending.discard.is_some()
            || pending.sent_revision != revision;
        // While commits fail, each checkpoint probes the disk with one.
        let durable = pending.durable
            && (has_work || pending.unsynced || pending.members_changed || pending.failing);
        if !has_work && !durable {
            pending.durable = false;
            return;
        }
        let members: Option<Vec<_>> =
            (durable && pending.members_changed).then(|| self.node.members().collect());
        let pending = &mut self.pending;
        if members.is_some() {
            pending.members_changed = false;
        }
        let synced = durable || !pending.locals.is_empty();
        let work = Submission {
            keys: std::mem::take(&mut pending.keys),
            changes: std::mem::take(&mut pending.changes),
            members,
            durable,
            locals: std::mem::take(&mut pending.locals),
            applied_through: pending.applied_through.take(),
            notify: std::mem::take(&mut pending.notify),
            epoch: pending.epoch,
            discard: pending.discard.take(),
        };
        pending.sent_revision = revision;
        pending.unsynced = !synced;
        pending.durable = false;
        let with_locals = !work.locals.is_empty();
        if pending.failing {
            pending.kept_changes += work.changes.len();
        }
        if !self.storage.submit(self.node.store(), work) && with_locals {
            // No writer to report them: refuse them now rather than never.
            self.fail_pending(&StorageError::Unavailable);
        }
    }

    /// Makes everything committed so far durable, and saves the member list if it changed.
    fn checkpoint(&mut self) {
        self.pending.durable = true;
        self.flush();
    }

    /// After an input: commit what changed, then tell subscribers and send messages.
    fn settle(&mut self) {
        let mut events = Vec::new();
        while let Some(event) = self.node.poll_event() {
            if let Event::KeyChanged {
                key,
                old,
                new,
                origin,
            } = &event
            {
                self.pending.changes.push(Change {
                    cursor: self.storage.next_cursor(),
                    key: key.clone(),
                    old: old.clone(),
                    new: new.clone(),
                    origin: *origin,
                });
            }
            events.push(event);
        }
        self.flush();
        for event in events {
            self.announce(event);
        }
        // The nodes the policy cut off, whenever the policy grew (entries are never removed).
        let entries = self.node.policy().len();
        if entries != self.policy_entries {
            self.policy_entries = entries;
            self.transport.set_revoked(self.node.policy().cut_off());
        }
        self.transport
            .send_all(std::iter::from_fn(|| self.node.poll_transmit()));
    }

    fn announce(&mut self, event: Event) {
        let member = match &event {
            Event::MemberUp(id) => Some((*id, MemberState::Alive)),
            Event::MemberDown(id) => Some((*id, MemberState::Down)),
            Event::MemberLeft(id) => Some((*id, MemberState::Left)),
            Event::KeyChanged { key, .. } => info_writer(key).and_then(|writer| {
                self.node
                    .members()
                    .find(|id| id.writer == writer)
                    .map(|id| (id, MemberState::Alive))
            }),
            Event::Rejoined(_) => None,
        };
        if let Some((id, state)) = member {
            if matches!(state, MemberState::Down | MemberState::Left) {
                self.transport.forget(id.addr);
            }
            if !matches!(event, Event::KeyChanged { .. }) {
                self.pending.members_changed = true;
            }
            let info = MemberInfo::read(&self.node, id.writer);
            let _ = self.members.send(Member::new(id, info, state));
        }
        // No subscriber is not an error.
        let _ = self.events.send(event);
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(3_600)
}

/// Resolves seeds (addresses or DNS names) to addresses, this node's own excluded. A seed
/// that does not resolve is skipped and logged; it is tried again on the next resolution.
pub(crate) async fn resolve(seeds: &[String], me: SocketAddr) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for seed in seeds {
        match tokio::net::lookup_host(seed.as_str()).await {
            Ok(addrs) => out.extend(addrs.filter(|a| *a != me)),
            Err(e) => tracing::warn!(%seed, cause = %e, "cannot resolve seed"),
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}
