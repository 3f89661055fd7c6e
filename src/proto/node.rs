//! One protocol node of either kind, behind one sans-IO surface.
//!
//! The simulator, the runtime (`churn`, embedding), the daemon and the fuzz harness all drive
//! nodes the same way: time and datagrams in, datagrams, a wake-up time and events out. They
//! hold a [`Node`] and call these methods, so the dispatch between a control unit and a client
//! is written once, here, and a host cannot drive one kind differently from the other.

use super::{Client, ControlUnit, Counters, Event, NodeId, Transmit};

/// A control unit or a client (a line card). Boxed: the two differ a lot in size, and hosts
/// keep nodes in vectors and move them on restart.
#[derive(Debug)]
pub enum Node {
    Cu(Box<ControlUnit>),
    Client(Box<Client>),
}

impl Node {
    pub fn id(&self) -> NodeId {
        match self {
            Node::Cu(c) => c.id,
            Node::Client(c) => c.id,
        }
    }

    /// The epoch the node acts in (0: none yet).
    pub fn epoch(&self) -> u64 {
        match self {
            Node::Cu(c) => c.epoch(),
            Node::Client(c) => c.epoch(),
        }
    }

    pub fn handle_datagram(&mut self, now_us: u64, bytes: &[u8]) {
        match self {
            Node::Cu(c) => c.handle_datagram(now_us, bytes),
            Node::Client(c) => c.handle_datagram(now_us, bytes),
        }
    }

    /// A datagram from `sender`'s configured address, naming `sender`, failed authentication
    /// (see [`ControlUnit::note_unauthenticated`]; a client elects nothing and ignores it).
    pub fn note_unauthenticated(&mut self, now_us: u64, sender: NodeId) {
        if let Node::Cu(c) = self {
            c.note_unauthenticated(now_us, sender);
        }
    }

    pub fn handle_timeout(&mut self, now_us: u64) {
        match self {
            Node::Cu(c) => c.handle_timeout(now_us),
            Node::Client(c) => c.handle_timeout(now_us),
        }
    }

    /// When the node next wants `handle_timeout` (protocol clock, µs).
    pub fn poll_timeout(&self) -> u64 {
        match self {
            Node::Cu(c) => c.poll_timeout(),
            Node::Client(c) => c.poll_timeout(),
        }
    }

    /// Encodes the next due frame into `buf`; `None` when nothing is due.
    pub fn poll_transmit(&mut self, now_us: u64, buf: &mut [u8]) -> Option<Transmit> {
        match self {
            Node::Cu(c) => c.poll_transmit(now_us, buf),
            Node::Client(c) => c.poll_transmit(now_us, buf),
        }
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        match self {
            Node::Cu(c) => c.poll_event(),
            Node::Client(c) => c.poll_event(),
        }
    }

    pub fn counters(&self) -> &Counters {
        match self {
            Node::Cu(c) => &c.counters,
            Node::Client(c) => &c.counters,
        }
    }

    pub fn as_cu(&self) -> Option<&ControlUnit> {
        match self {
            Node::Cu(c) => Some(c),
            Node::Client(_) => None,
        }
    }

    pub fn as_cu_mut(&mut self) -> Option<&mut ControlUnit> {
        match self {
            Node::Cu(c) => Some(c),
            Node::Client(_) => None,
        }
    }

    pub fn as_client(&self) -> Option<&Client> {
        match self {
            Node::Client(c) => Some(c),
            Node::Cu(_) => None,
        }
    }

    pub fn as_client_mut(&mut self) -> Option<&mut Client> {
        match self {
            Node::Client(c) => Some(c),
            Node::Cu(_) => None,
        }
    }
}
