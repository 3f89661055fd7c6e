//! The runtime: pinned worker threads that drive the sans-IO core over real sockets, SPSC rings
//! between submitters and workers, and the embedding API.

pub mod api;
pub mod latency;
pub mod node;
pub mod turns;
pub mod worker;

pub use api::{
    Backpressure, Change, ClientHandler, CommitNote, NodeConfig, NodeError, NodeHandle,
    spawn_client, spawn_control_unit,
};
