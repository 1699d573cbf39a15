//! The node task: one tokio task owns a [`Node`] and pumps it. Its inputs are a closed set:
//! a message from a peer, a timer, a command from the [`Mesh`](super::Mesh) handle, and the
//! end of the handle (a crash, as far as the mesh can tell). After each input it drains every
//! output of the node: messages to the transport, events to subscribers.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::transport::{Inbound, Transport};
use crate::proto::{
    Dot, Key, Version, WriteError,
    node::{Event, Node},
};

/// How often a node that is not yet a member resolves its seeds again and re-joins.
const RESOLVE_SEEDS_EVERY: Duration = Duration::from_secs(5);
/// The longest a graceful shutdown waits for the leave to complete.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);

/// A request from the handle.
pub(crate) enum Command {
    Put {
        key: Key,
        value: Bytes,
        reply: oneshot::Sender<Result<Version, WriteError>>,
    },
    /// Put only if the local winner of `key` is the version with dot `expected` (`None`:
    /// only if the key has no live value).
    PutIf {
        key: Key,
        value: Bytes,
        expected: Option<Dot>,
        reply: oneshot::Sender<Result<Version, PutIfError>>,
    },
    Delete {
        key: Key,
        reply: oneshot::Sender<Option<Version>>,
    },
    /// Any read: runs against the node and answers through its own channel.
    Read(Box<dyn FnOnce(&Node) + Send>),
    /// Leave gracefully, then stop.
    Shutdown { reply: oneshot::Sender<()> },
}

/// Why a conditional put did not happen.
#[derive(Debug)]
pub(crate) enum PutIfError {
    Conflict { current: Option<Dot> },
    Write(WriteError),
}

/// Seeds as given: addresses or `host:port` names, resolved when joining.
pub(crate) type Seeds = Vec<String>;

pub(crate) struct Driver {
    pub(crate) node: Node,
    pub(crate) transport: Arc<Transport>,
    pub(crate) inbound: mpsc::Receiver<Inbound>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) seeds: Seeds,
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
        loop {
            self.flush();
            let deadline = self
                .node
                .poll_timeout()
                .map_or_else(far_future, tokio::time::Instant::from_std);
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown { reply }) => {
                        self.leave().await;
                        let _ = reply.send(());
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
            }
        }
        self.flush();
        self.transport.close().await;
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
                let _ = reply.send(self.node.put(now(), key, value));
            }
            Command::PutIf {
                key,
                value,
                expected,
                reply,
            } => {
                let current = self.node.store().get(&key).map(|v| v.dot);
                let result = if current == expected {
                    self.node.put(now(), key, value).map_err(PutIfError::Write)
                } else {
                    Err(PutIfError::Conflict { current })
                };
                let _ = reply.send(result);
            }
            Command::Delete { key, reply } => {
                let _ = reply.send(self.node.delete(now(), key));
            }
            Command::Read(read) => read(&self.node),
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
            self.flush();
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
        self.flush();
        // Give the last packets a moment to leave the socket.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    fn flush(&mut self) {
        while let Some(transmit) = self.node.poll_transmit() {
            self.transport.send(transmit);
        }
        while let Some(event) = self.node.poll_event() {
            if let Event::MemberDown(id) | Event::MemberLeft(id) = &event {
                self.transport.forget(id.addr);
            }
            // No subscriber is not an error.
            let _ = self.events.send(event);
        }
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
