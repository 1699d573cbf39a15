//! The HTTP API's contract, in one place: routes, request parameters, response bodies,
//! errors and watch events ([`types`]), the text form of versions ([`version`]), and a
//! typed [`Client`] (feature `agent`).
//!
//! The agent's server (`agent::http`) answers with these types and the client and the command
//! line read them, so a field renamed here is renamed for both, and the compiler finds every
//! use. README.md ("HTTP API") describes the same routes for clients in other languages.

mod client;
pub mod routes;
pub mod types;
pub mod version;

pub use self::{
    client::{Client, ClientError, Reply, WatchStream},
    types::*,
};
