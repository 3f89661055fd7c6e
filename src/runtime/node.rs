//! One protocol node bound to one UDP transport: the glue between the sans-IO core and the
//! socket. The event loop calls `receive`, `tick` and `transmit`; nothing here blocks.

use crate::auth::{Auth, AuthStats, Reject, Verdict};
use crate::proto::{Node, NodeId};
use crate::transport::{Transport, TransportError};
use crate::wire::FrameHeader;
use rustc_hash::FxHashMap;
use std::net::SocketAddr;
use std::time::Duration;
use zerocopy::FromBytes;

#[derive(Debug)]
pub struct NodeRunner {
    pub machine: Node,
    pub transport: Transport,
    peers: FxHashMap<NodeId, SocketAddr>,
    /// Datagrams from addresses we do not know, dropped before parsing.
    pub rejected_unknown_addr: u64,
    /// Datagrams longer than the configured `max_datagram_bytes` (a GRO-merged buffer is
    /// split first), dropped before parsing.
    pub rejected_oversize: u64,
    known: FxHashMap<SocketAddr, NodeId>,
    /// Load clients send SUBMIT frames from addresses nobody configured; only a control unit
    /// takes them, from the submitter IDs of its topology.
    submitters: Vec<NodeId>,
    /// Frame authentication (`None`: off, `--insecure`): every datagram is checked before the
    /// core parses it, and every frame sealed before it is queued.
    auth: Option<Auth>,
    /// When each peer last sent a datagram that passed the address (and, with keys, the
    /// authentication) check: the operator's "last heard", for metrics.
    last_rx_us: FxHashMap<NodeId, u64>,
}

impl NodeRunner {
    pub fn new(
        machine: Node,
        transport: Transport,
        peers: impl IntoIterator<Item = (NodeId, SocketAddr)>,
    ) -> Self {
        let peers: FxHashMap<NodeId, SocketAddr> = peers.into_iter().collect();
        let known = peers.iter().map(|(id, a)| (*a, *id)).collect();
        let submitters = machine
            .as_cu()
            .map_or_else(Vec::new, |c| c.config().topology.submitters.clone());
        NodeRunner {
            machine,
            transport,
            peers,
            rejected_unknown_addr: 0,
            rejected_oversize: 0,
            known,
            submitters,
            auth: None,
            last_rx_us: FxHashMap::default(),
        }
    }

    /// Turns frame authentication on with `auth` (the keys of this node's links).
    pub fn with_auth(mut self, auth: Option<Auth>) -> Self {
        self.auth = auth;
        self
    }

    /// Each peer heard from, with when it last sent a datagram that passed the address and
    /// authentication checks (protocol clock, µs).
    pub fn peers_last_rx_us(&self) -> impl Iterator<Item = (NodeId, u64)> + '_ {
        self.last_rx_us.iter().map(|(&id, &t)| (id, t))
    }

    /// What authentication did (`None` when it is off).
    pub fn auth_stats(&self) -> Option<AuthStats> {
        self.auth.as_ref().map(|a| a.stats)
    }

    /// Feeds every datagram that is ready into the machine, waiting up to `wait` for the first
    /// (`None`: do not wait); `now_us` is read per datagram. Returns how many.
    pub fn receive(
        &mut self,
        wait: Option<Duration>,
        now_us: &dyn Fn() -> u64,
    ) -> Result<usize, TransportError> {
        let NodeRunner {
            machine,
            transport,
            known,
            submitters,
            rejected_unknown_addr,
            rejected_oversize,
            auth,
            last_rx_us,
            ..
        } = self;
        let max_bytes = transport.max_datagram_bytes();
        transport.poll_recv(wait, &mut |src, bytes| {
            if bytes.len() > max_bytes {
                *rejected_oversize += 1;
                return;
            }
            // Only configured peers (and submitters) may speak to us; the frame's sender ID is
            // checked again by the protocol core.
            let expected = known.get(&src).copied();
            if expected.is_none() && !from_submitter(bytes, submitters) {
                *rejected_unknown_addr += 1;
                return;
            }
            let now = now_us();
            if let Some(a) = auth {
                match a.open(now, src, expected, bytes) {
                    Verdict::Deliver => {}
                    // From a peer's own address and ID, yet the tag fails: the keys differ
                    // (or someone forges). The core hears of it, never of the frame.
                    Verdict::Reject(Reject::BadTag) => {
                        if let Some(peer) = expected {
                            machine.note_unauthenticated(now, peer);
                        }
                        return;
                    }
                    Verdict::Consumed | Verdict::Reject(_) => return,
                }
            }
            if let Some(peer) = expected {
                last_rx_us.insert(peer, now);
            }
            machine.handle_datagram(now, bytes);
        })
    }

    pub fn tick(&mut self, now_us: u64) {
        if self.machine.poll_timeout() <= now_us {
            self.machine.handle_timeout(now_us);
        }
    }

    /// Encodes everything due straight into transmit slots and flushes. Returns datagrams sent.
    pub fn transmit(&mut self, now_us: u64) -> Result<usize, TransportError> {
        let mut sent = 0;
        if let Some(a) = &mut self.auth {
            loop {
                let Some(slot) = self.transport.tx_slot() else {
                    sent += self.transport.flush()?;
                    continue;
                };
                let Some((len, _, addr)) = a.poll_hello(now_us, slot) else {
                    break;
                };
                self.transport.tx_commit(len, addr);
            }
        }
        loop {
            let Some(slot) = self.transport.tx_slot() else {
                sent += self.transport.flush()?;
                continue;
            };
            let Some(t) = self.machine.poll_transmit(now_us, slot) else {
                break;
            };
            let Some(&addr) = self.peers.get(&t.dst) else {
                continue;
            };
            if let Some(a) = &mut self.auth {
                // The slot just filled: lent again until committed.
                let sealed = self
                    .transport
                    .tx_slot()
                    .is_some_and(|slot| a.seal(t.dst, &mut slot[..t.len]));
                if !sealed {
                    continue;
                }
            }
            self.transport.tx_commit(t.len, addr);
        }
        if self.transport.tx_pending() > 0 {
            sent += self.transport.flush()?;
        }
        Ok(sent)
    }
}

/// Whether a datagram carries the header of one of `submitters` (the core validates the whole
/// frame and checks the sender again).
fn from_submitter(bytes: &[u8], submitters: &[NodeId]) -> bool {
    !submitters.is_empty()
        && FrameHeader::read_from_prefix(bytes)
            .is_ok_and(|(h, _)| submitters.contains(&h.sender.get()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submitter_header_check() {
        let mut buf = [0u8; 256];
        let fb = crate::wire::FrameBuilder::new(&mut buf, 900, 0, 1);
        let n = fb.finish();
        assert!(from_submitter(&buf[..n], &[900]));
        assert!(!from_submitter(&buf[..n], &[901]));
        assert!(!from_submitter(&buf[..n], &[]));
        assert!(!from_submitter(&buf[..3], &[900]));
    }
}
