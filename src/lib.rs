//! statesync: a state-synchronization fabric with selective replay.
//!
//! Layers, each depending only on those above it in this list:
//! - [`wire`]: the zero-copy frame format;
//! - [`proto`]: sans-IO state machines for primary, standby and client;
//! - [`sim`]: the deterministic simulator that runs `proto` under seeded faults;
//! - [`daemon`]: one node per process, configured from a shared TOML file, with an admin socket.
//!
//! [`fuzz_harness`] holds the fuzz targets' harness functions, shared by `fuzz/` (cargo-fuzz)
//! and the stable corpus replay test.

pub mod auth;
pub mod cli;
pub mod daemon;
pub mod fuzz_harness;
pub mod proto;
pub mod rng;
pub mod runtime;
pub mod sim;
pub mod transport;
pub mod wire;
