//! confmesh: a gossip-based, leaderless, peer-to-peer configuration mesh.
//!
//! Every node holds a full replica of the configuration map, a CRDT map whose entries are
//! vector-clocked versions. Writes are accepted locally and spread to every other node; reads
//! are local and never wait on the network. There is no central server.
//!
//! # Promises
//!
//! - **No lost writes.** Concurrent writes to one key are kept as siblings; one is chosen as
//!   the winner deterministically on every replica, and the others stay visible until a write
//!   that has seen them resolves them.
//! - **Any order, any duplicates.** Replicas converge whatever order versions arrive in, and
//!   however often; anti-entropy repairs what the fast path loses.
//! - **Untrusted bytes stay harmless.** Every decode is size-limited; no input panics a node.
//! - **Sans-IO core.** Everything confmesh decides lives in [`proto`], which reads no clock,
//!   does no I/O and takes its randomness from a seed, so a simulator replays it exactly.
//!
//! # Layout
//!
//! - [`proto`]: the core: keys, versions, the replicated [`proto::Store`], the wire format.
//! - `runtime` (feature `runtime`, on by default): drives the core with real time and I/O.
//! - `agent` (feature `agent`, on by default): the HTTP agent and its configuration.
//! - `api` (feature `agent`): the HTTP API's types and routes, and a typed client.
//! - Feature `fast-signing` (part of `runtime`): writer keys sign with AWS-LC rather than
//!   ed25519-zebra; the same signatures, for about half the CPU.
#![warn(missing_docs, unreachable_pub)]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod proto;
#[cfg(feature = "runtime")]
pub mod runtime;

#[cfg(feature = "agent")]
pub mod agent;
#[cfg(feature = "agent")]
pub mod api;

// Entry points for the fuzz targets in `fuzz/`: not part of the API (hidden from the docs,
// outside semver; they may change or go in any release).
#[cfg(feature = "runtime")]
#[doc(hidden)]
pub mod fuzzing;

/// The README's code examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
