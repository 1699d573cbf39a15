//! The node task: one tokio task owns a [`Node`] and its [`Storage`] and pumps them. Its
//! inputs are a closed set: a message from a peer, a timer, a command from the
//! [`Mesh`](super::Mesh) handle, the storage checkpoint, and the end of the handle (a crash,
//! as far as the mesh can tell). After each input it settles: the store's changes are queued
//! for the storage writer thread (which logs them for watches once committed), then events
//! go to subscribers and messages to the transport.
//!
//! A local write is prepared, committed durably (after everything queued before it), and
//! only then applied to the node, so an acknowledged write survives a crash and a refused one
//! changed nothing.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{
    members::{Member, MemberInfo, MemberState, info_writer},
    storage::{Storage, StorageError},
    transport::{Inbound, Transport},
    watch::Change,
};
use crate::proto::{
    Dot, Key, TouchedKeys, Version, WriteError,
    node::{Event, Node},
};

/// How often remote changes committed without an fsync are made durable, and the member
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
        reply: oneshot::Sender<Result<Version, LocalWriteError>>,
    },
    /// Put only if the local winner of `key` is the version with dot `expected` (`None`:
    /// only if the key has no live value).
    PutIf {
        key: Key,
        value: Bytes,
        expected: Option<Dot>,
        reply: oneshot::Sender<Result<Version, LocalWriteError>>,
    },
    Delete {
        key: Key,
        reply: oneshot::Sender<Result<Option<Version>, LocalWriteError>>,
    },
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
}

/// Seeds as given: addresses or `host:port` names, resolved when joining.
pub(crate) type Seeds = Vec<String>;

pub(crate) struct Driver {
    pub(crate) node: Node,
    pub(crate) storage: Storage,
    pub(crate) transport: Arc<Transport>,
    pub(crate) inbound: mpsc::Receiver<Inbound>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) members: broadcast::Sender<Member>,
    pub(crate) seeds: Seeds,
    /// Not yet sent to storage: keys whose rows to rewrite, and logged changes (with cursors).
    pub(crate) pending: Pending,
}

/// What the next batch for storage must write.
#[derive(Default)]
pub(crate) struct Pending {
    keys: TouchedKeys,
    changes: Vec<Change>,
    /// The store revision last sent to storage.
    sent_revision: u64,
    /// Batches sent without an fsync since the last durable one.
    unsynced: bool,
    members_changed: bool,
    /// A local write's change, committed with it, to be announced when the node reports it.
    prelogged: Option<Change>,
}

#[allow(
    clippy::disallowed_methods,
    reason = "the runtime is where time enters the node"
)]
fn now() -> std::time::Instant {
    std::time::Instant::now()
}

impl Driver {
    /// Runs until shutdown or until the handle is dropped.
    pub(crate) async fn run(mut self) {
        self.join().await;
        let mut resolve = tokio::time::interval(RESOLVE_SEEDS_EVERY);
        resolve.tick().await;
        let mut checkpoint = tokio::time::interval(CHECKPOINT_EVERY);
        checkpoint.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopped = None;
        loop {
            self.settle();
            let deadline = self
                .node
                .poll_timeout()
                .map_or_else(far_future, tokio::time::Instant::from_std);
            tokio::select! {
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
                Some(message) = self.inbound.recv() => self.receive(message),
                () = tokio::time::sleep_until(deadline) => self.node.handle_timeout(now()),
                _ = resolve.tick(), if !self.node.is_active() && !self.seeds.is_empty() => {
                    self.join().await;
                }
                _ = checkpoint.tick() => self.checkpoint(),
            }
        }
        // The data directory is free for another node once shutdown returns.
        self.storage.close();
        if let Some(reply) = stopped {
            let _ = reply.send(());
        }
        self.transport.close().await;
    }

    /// Publishes this node's name and tags if the replica holds other ones.
    pub(crate) fn publish_info(&mut self, info: &MemberInfo) -> Result<(), LocalWriteError> {
        let writer = self.node.store().writer();
        if MemberInfo::read(self.node.store(), writer).as_ref() == Some(info) {
            return Ok(());
        }
        let Some(key) = MemberInfo::key(writer) else {
            return Ok(());
        };
        let version = self
            .node
            .prepare_put(now(), key, Bytes::from(info.encode()))
            .map_err(LocalWriteError::Write)?;
        self.write_local(version).map(|_| ())
    }

    async fn join(&mut self) {
        let seeds = resolve(&self.seeds, self.transport.local_addr()).await;
        if !seeds.is_empty() {
            self.node.join(now(), &seeds);
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Put { key, value, reply } => {
                let result = match self.node.prepare_put(now(), key, value) {
                    Ok(version) => self.write_local(version),
                    Err(e) => Err(LocalWriteError::Write(e)),
                };
                let _ = reply.send(result);
            }
            Command::PutIf {
                key,
                value,
                expected,
                reply,
            } => {
                let current = self.node.store().get(&key).map(|v| v.dot);
                let result = if current == expected {
                    match self.node.prepare_put(now(), key, value) {
                        Ok(version) => self.write_local(version),
                        Err(e) => Err(LocalWriteError::Write(e)),
                    }
                } else {
                    Err(LocalWriteError::Conflict { current })
                };
                let _ = reply.send(result);
            }
            Command::Delete { key, reply } => {
                let result = match self.node.prepare_delete(now(), key) {
                    Some(version) => self.write_local(version).map(Some),
                    None => Ok(None),
                };
                let _ = reply.send(result);
            }
            Command::Read(read) => read(&self.node),
            Command::AwaitStorage { reply } => {
                self.flush(false);
                self.storage.notify_when_written(reply);
            }
            Command::Shutdown { .. } => {}
        }
    }

    fn receive(&mut self, message: Inbound) {
        match message {
            Inbound::Datagram { from, bytes } => self.node.handle_datagram(now(), from, &bytes),
            Inbound::Stream { from, bytes } => self.node.handle_stream_message(now(), from, &bytes),
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
                Some(message) = self.inbound.recv() => self.receive(message),
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

    /// Commits a prepared local write durably, then applies it. On error nothing changed.
    fn write_local(&mut self, version: Version) -> Result<Version, LocalWriteError> {
        // What changed before the write is queued first, so the log stays in order.
        self.flush(false);
        let old = self.node.store().get(&version.key).cloned();
        let new = (!version.is_tombstone()).then(|| version.clone());
        let logged = (old.as_ref().map(|v| v.dot) != new.as_ref().map(|v| v.dot)).then(|| Change {
            cursor: self.storage.next_cursor(),
            key: version.key.clone(),
            old,
            new,
            origin: version.dot.actor,
        });
        let first_new_cursor = logged.as_ref().map(|c| c.cursor.seq);
        if let Err(e) = self
            .storage
            .commit_local(self.node.store(), &version, logged.clone())
        {
            if let Some(seq) = first_new_cursor {
                self.storage.return_cursors(seq);
            }
            return Err(LocalWriteError::Storage(e));
        }
        // A durable commit makes everything before it durable too.
        self.pending.unsynced = false;
        self.pending.prelogged = logged;
        if let Err(e) = self.node.commit_local(version.clone()) {
            // Cannot happen: nothing ran between prepare and commit. The version is on disk
            // and is applied at the next start.
            tracing::error!(cause = %e, "prepared write not applicable");
        }
        // Storage holds what the write changed (the key's one version, the context with its
        // dot): nothing to send again.
        let written = std::slice::from_ref(&version);
        for (key, touched) in self.node.take_touched_keys() {
            if key != version.key || self.node.store().versions(&key) != written {
                self.pending.keys.entry(key).or_insert(touched);
            }
        }
        self.pending.sent_revision = self.node.store().revision();
        Ok(version)
    }

    /// Sends what is pending to storage; `durable` also makes everything sent before durable
    /// and saves the member list if it changed.
    fn flush(&mut self, durable: bool) {
        let touched = self.node.take_touched_keys();
        if self.pending.keys.is_empty() {
            self.pending.keys = touched;
        } else {
            for (key, touched) in touched {
                // How the key stood before its first change since the last batch counts.
                self.pending.keys.entry(key).or_insert(touched);
            }
        }
        let members: Option<Vec<_>> =
            (durable && self.pending.members_changed).then(|| self.node.members().collect());
        let revision = self.node.store().revision();
        if self.pending.keys.is_empty()
            && self.pending.changes.is_empty()
            && self.pending.sent_revision == revision
            && members.is_none()
            && !(durable && self.pending.unsynced)
        {
            return;
        }
        if members.is_some() {
            self.pending.members_changed = false;
        }
        self.storage.commit_remote(
            self.node.store(),
            std::mem::take(&mut self.pending.keys),
            std::mem::take(&mut self.pending.changes),
            members,
            durable,
        );
        self.pending.sent_revision = revision;
        self.pending.unsynced = !durable;
    }

    /// Makes everything committed so far durable, and saves the member list if it changed.
    fn checkpoint(&mut self) {
        self.flush(true);
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
                let prelogged = self.pending.prelogged.take_if(|c| {
                    c.key == *key && c.new.as_ref().map(|v| v.dot) == new.as_ref().map(|v| v.dot)
                });
                if prelogged.is_none() {
                    self.pending.changes.push(Change {
                        cursor: self.storage.next_cursor(),
                        key: key.clone(),
                        old: old.clone(),
                        new: new.clone(),
                        origin: *origin,
                    });
                }
            }
            events.push(event);
        }
        self.flush(false);
        for event in events {
            self.announce(event);
        }
        while let Some(transmit) = self.node.poll_transmit() {
            self.transport.send(transmit);
        }
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
            let info = MemberInfo::read(self.node.store(), id.writer);
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
