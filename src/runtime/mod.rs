//! The runtime: what drives the sans-IO core with real time and real I/O.
//!
//! This is the only place confmesh reads a clock.
//!
//! - [`Mesh`]: the embedding API, one node running in this process.
//! - `driver`: the tokio task that owns a [`Node`](crate::proto::node::Node) and pumps it.
//! - `storage`: the replica on disk (redb), the history and the change log ([`Change`],
//!   [`Cursor`]).
//! - [`Watch`]: changes from a cursor, gap-free.
//! - [`Subscription`]: events and member changes from now on, for as long as the node runs.
//! - [`Member`]: members with names and tags.
//! - `transport`: QUIC (quinn) between nodes, mutual TLS against a cluster CA.
//! - [`tls`]: loading certificates, and a development CA.
//! - [`secrets`]: node age identities, prefix keys and sealed values.

mod bans;
pub mod certifier;
mod driver;
mod members;
mod mesh;
pub mod secrets;
mod storage;
mod subscription;
pub(crate) mod throttle;
pub mod tls;
mod transport;
mod verifier;
mod watch;

pub use self::{
    members::{MAX_MEMBER_INFO_BYTES, Member, MemberState, RESERVED_PREFIX},
    mesh::{
        DEFAULT_CACHE_BYTES, DEFAULT_HISTORY_LEN, DEFAULT_WATCH_LOG_LEN, Health, Mesh, MeshBuilder,
        MeshError, PolicyReport, Preset, TrustReport,
    },
    storage::{Change, Cursor, CursorParseError, DATABASE_FILE, STORAGE_FORMAT, StorageError},
    subscription::{Lagged, Subscription},
    transport::{TransportError, WireStats},
    watch::{Watch, WatchError},
};
// For the fuzz targets (`crate::fuzzing`).
pub(crate) use self::members::MemberInfo;
// Fault injection for tests (tests/ uses them), hidden from the docs: not part of the stable
// API, and may change or go in any release.
#[doc(hidden)]
pub use self::{storage::StorageFaultHook, transport::FaultHook};

/// Milliseconds since the Unix epoch by the system clock: the wall time the core's writes
/// need for their hybrid-logical-clock timestamps.
///
/// A clock set before 1970 reads as 0; the hybrid logical clock still orders writes.
#[allow(
    clippy::disallowed_methods,
    reason = "the runtime is where wall time enters the system"
)]
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
