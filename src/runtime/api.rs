//! The embedding API: what a router links against.
//!
//! A node (primary/standby control unit, or client) runs on its own pinned worker thread with
//! its own socket. The primary takes changes through an SPSC ring (`submit` never blocks and
//! never grows memory: a full ring or a full retention window is `Backpressure`), and reports
//! commits through another. A client calls a [`ClientHandler`] for every applied update and
//! every section reset.

use super::node::NodeRunner;
use super::worker::{self, Gauges, WorkerOutput, WorkerSpec};
use crate::proto::Node;
use crate::proto::{ChannelState, Client, ControlUnit, NodeId, ProtoConfig, SectionMask};
use crate::transport::{Transport, TransportConfig, TransportError};
use crate::wire::Entry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;
use thiserror::Error;

/// Largest value a [`Change`] carries inline (changes cross the ring by value, no allocation).
pub const INLINE_VALUE_BYTES: usize = 64;
pub const FLAG_PRIVATE: u8 = 1;
pub const FLAG_DELETE: u8 = 2;

/// One key/value write, by value. `intended_ns` is when the submitter meant to submit it
/// (for latency measured without coordinated omission); 0 when not measured.
#[derive(Debug, Clone, Copy)]
pub struct Change {
    pub channel: u32,
    pub section: u8,
    pub flags: u8,
    pub value_len: u8,
    pub key: u64,
    pub intended_ns: u64,
    pub value: [u8; INLINE_VALUE_BYTES],
}

impl Change {
    /// A put of `value` (at most [`INLINE_VALUE_BYTES`]).
    pub fn put(channel: u32, section: u8, key: u64, value: &[u8]) -> Option<Change> {
        if value.len() > INLINE_VALUE_BYTES || section >= 64 {
            return None;
        }
        let mut v = [0u8; INLINE_VALUE_BYTES];
        v[..value.len()].copy_from_slice(value);
        Some(Change {
            channel,
            section,
            flags: 0,
            value_len: value.len() as u8,
            key,
            intended_ns: 0,
            value: v,
        })
    }
}

impl Change {
    /// The change as the protocol core's entry (borrowing the inline value).
    pub fn entry(&self) -> Entry<'_> {
        Entry {
            section: self.section,
            key: self.key,
            value: (self.flags & FLAG_DELETE == 0).then(|| &self.value[..self.value_len as usize]),
            private: self.flags & FLAG_PRIVATE != 0,
        }
    }
}

/// Ops of `channel` up to `through`, assigned in `epoch`, are committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitNote {
    pub channel: u32,
    pub epoch: u64,
    pub through: u64,
}

/// Called on the client's worker thread.
pub trait ClientHandler: Send + 'static {
    /// Op `op` was applied; `cookie` marks the sections it touched, `state` is the channel's
    /// state after it.
    fn on_update(&mut self, channel: u32, op: u64, cookie: u64, state: &ChannelState);
    /// A replay reset the sections of `sections` (all of them for a full replay); the channel
    /// now stands at `base_op`.
    fn on_replay(
        &mut self,
        channel: u32,
        sections: SectionMask,
        base_op: u64,
        state: &ChannelState,
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("backpressure: the submission ring is full")]
pub struct Backpressure;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NodeError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
}

/// Everything needed to run one node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: NodeId,
    pub proto: ProtoConfig,
    /// Every other node's address.
    pub peers: Vec<(NodeId, SocketAddr)>,
    pub transport: TransportConfig,
    /// Core to pin the worker to.
    pub core: Option<usize>,
    /// Submission and commit ring capacity.
    pub ring_capacity: usize,
}

/// A running node.
pub struct NodeHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<WorkerOutput>>,
    submit: Option<rtrb::Producer<Change>>,
    commits: Option<rtrb::Consumer<CommitNote>>,
    pub gauges: Arc<Gauges>,
    pub local_addr: SocketAddr,
}

impl NodeHandle {
    /// Queues a change for the primary. `Err(Backpressure)` when the ring is full.
    pub fn submit(&mut self, change: Change) -> Result<(), Backpressure> {
        self.submit
            .as_mut()
            .ok_or(Backpressure)?
            .push(change)
            .map_err(|_| Backpressure)
    }

    /// Next commit notification, if any.
    pub fn next_commit(&mut self) -> Option<CommitNote> {
        self.commits.as_mut()?.pop().ok()
    }

    /// Stops the worker and returns its final state.
    pub fn shutdown(mut self) -> Option<WorkerOutput> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take()?.join().ok()
    }
}

impl Drop for NodeHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start(
    cfg: NodeConfig,
    machine: Node,
    handler: Option<Box<dyn ClientHandler>>,
) -> Result<NodeHandle, NodeError> {
    cfg.proto.validate().map_err(NodeError::Config)?;
    let transport = Transport::open(cfg.transport.clone())?;
    let local_addr = transport.local_addr();
    let runner = NodeRunner::new(machine, transport, cfg.peers.iter().copied());
    let (sub_tx, sub_rx) = rtrb::RingBuffer::new(cfg.ring_capacity.max(1));
    let (com_tx, com_rx) = rtrb::RingBuffer::new(cfg.ring_capacity.max(1));
    let stop = Arc::new(AtomicBool::new(false));
    let gauges = Arc::new(Gauges::default());
    let core = cfg.core.map(|id| core_affinity::CoreId { id });
    let spec = WorkerSpec {
        name: format!("statesync-{}", cfg.id),
        nodes: vec![runner],
        submissions: Some(sub_rx),
        source: None,
        commits: Some(com_tx),
        core,
        latency: None,
        handler,
        profile_turns: None,
    };
    let thread = worker::spawn(spec, stop.clone(), gauges.clone(), Instant::now());
    Ok(NodeHandle {
        stop,
        thread: Some(thread),
        submit: Some(sub_tx),
        commits: Some(com_rx),
        gauges,
        local_addr,
    })
}

/// Starts a control unit. `initial` = present from the start (index 0 of the topology is then
/// the primary); false = (re)joining through a state transfer.
pub fn spawn_control_unit(
    cfg: NodeConfig,
    initial: bool,
    boot_id: u32,
) -> Result<NodeHandle, NodeError> {
    if cfg.proto.topology.cu_index(cfg.id).is_none() {
        return Err(NodeError::Config(format!(
            "id {} is not a control unit of the topology",
            cfg.id
        )));
    }
    let cu = ControlUnit::new(cfg.proto.clone(), cfg.id, initial, boot_id, 0);
    start(cfg, Node::Cu(Box::new(cu)), None)
}

/// Starts a client with its apply handler.
pub fn spawn_client(
    cfg: NodeConfig,
    fresh: bool,
    boot_id: u32,
    handler: Box<dyn ClientHandler>,
) -> Result<NodeHandle, NodeError> {
    if !cfg.proto.topology.is_client(cfg.id) {
        return Err(NodeError::Config(format!(
            "id {} is not a client of the topology",
            cfg.id
        )));
    }
    let cl = Client::new(cfg.proto.clone(), cfg.id, fresh, boot_id, 0);
    start(cfg, Node::Client(Box::new(cl)), Some(handler))
}
