//! The sans-IO core: everything confmesh decides, with no I/O, no clock and no threads.
//!
//! Time comes in as arguments; randomness from a seeded RNG. This module builds without the
//! `runtime` feature, which is how the simulator drives exactly the code production runs.

mod hlc;
mod ids;
mod key;
pub mod node;
mod seqset;
pub mod store;
pub mod trust;
pub mod wire;

pub use self::wire::Message;

pub use self::{
    hlc::{Hlc, HlcTimestamp},
    ids::{Dot, DotText, VClock, WriterId},
    key::{Key, KeyError, MAX_KEY_LEN},
    seqset::{SeqRange, SeqSet, SeqSetError},
    store::{
        Applied, ApplyError, AuthorProof, Delta, Digest, Grounds, Masked, Payload, Seal, Snapshot,
        SnapshotRef, Store, StoreConfig, SyncReply, Touched, TouchedKeys, Version, WriteError,
    },
};
