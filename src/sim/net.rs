//! The simulated network: per-seed loss, duplication, delay with jitter (which reorders), and
//! partitions. Deterministic for a seed.

use crate::proto::NodeId;
use crate::rng::SplitMix64;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

#[derive(Debug, Clone, Copy)]
pub struct NetProfile {
    pub loss: f64,
    pub duplicate: f64,
    pub base_delay_us: u64,
    pub jitter_us: u64,
}

impl NetProfile {
    pub fn clean() -> Self {
        NetProfile {
            loss: 0.0,
            duplicate: 0.0,
            base_delay_us: 50,
            jitter_us: 50,
        }
    }

    pub fn draw(rng: &mut SplitMix64) -> Self {
        NetProfile {
            loss: rng.unit() * 0.30,
            duplicate: rng.unit() * 0.10,
            base_delay_us: rng.range(20, 500),
            jitter_us: rng.range(0, 3000),
        }
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at_us: u64,
    seq: u64,
    src: NodeId,
    dst: NodeId,
    bytes: Vec<u8>,
}

#[derive(Debug)]
pub struct Net {
    pub profile: NetProfile,
    queue: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    /// Pairs that cannot talk (both directions), until the given time.
    cuts: Vec<(NodeId, NodeId, u64)>,
    pub sent: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pool: Vec<Vec<u8>>,
}

impl Net {
    pub fn new(profile: NetProfile) -> Self {
        Net {
            profile,
            queue: BinaryHeap::new(),
            seq: 0,
            cuts: Vec::new(),
            sent: 0,
            dropped: 0,
            duplicated: 0,
            pool: Vec::new(),
        }
    }

    pub fn cut(&mut self, a: NodeId, b: NodeId, until_us: u64) {
        self.cuts.push((a, b, until_us));
    }

    pub fn heal_all(&mut self) {
        self.cuts.clear();
    }

    pub fn is_cut(&self, a: NodeId, b: NodeId, now_us: u64) -> bool {
        self.cuts
            .iter()
            .any(|&(x, y, until)| now_us < until && ((x == a && y == b) || (x == b && y == a)))
    }

    pub fn send(
        &mut self,
        rng: &mut SplitMix64,
        now_us: u64,
        src: NodeId,
        dst: NodeId,
        bytes: &[u8],
    ) {
        self.sent += 1;
        if self.is_cut(src, dst, now_us) || rng.chance(self.profile.loss) {
            self.dropped += 1;
            return;
        }
        let copies = if rng.chance(self.profile.duplicate) {
            2
        } else {
            1
        };
        self.duplicated += copies - 1;
        for _ in 0..copies {
            let delay = self.profile.base_delay_us + rng.below(self.profile.jitter_us + 1);
            let mut buf = self.pool.pop().unwrap_or_default();
            buf.clear();
            buf.extend_from_slice(bytes);
            self.seq += 1;
            self.queue.push(Reverse(InFlight {
                at_us: now_us + delay,
                seq: self.seq,
                src,
                dst,
                bytes: buf,
            }));
        }
    }

    /// The longest a datagram can spend in flight.
    pub fn max_delay_us(&self) -> u64 {
        self.profile.base_delay_us + self.profile.jitter_us
    }

    pub fn next_at(&self) -> Option<u64> {
        self.queue.peek().map(|r| r.0.at_us)
    }

    /// Pops the next datagram due at or before `now_us`; it is lost if a partition started
    /// while it was in flight.
    pub fn pop_due(&mut self, now_us: u64) -> Option<(NodeId, NodeId, Vec<u8>)> {
        loop {
            if self.queue.peek()?.0.at_us > now_us {
                return None;
            }
            let Reverse(f) = self.queue.pop()?;
            if self.is_cut(f.src, f.dst, now_us) {
                self.dropped += 1;
                self.pool.push(f.bytes);
                continue;
            }
            return Some((f.src, f.dst, f.bytes));
        }
    }

    pub fn recycle(&mut self, buf: Vec<u8>) {
        if self.pool.len() < 4096 {
            self.pool.push(buf);
        }
    }

    /// True while some partition involving `node` is in force.
    pub fn is_partitioned(&self, node: NodeId, now_us: u64) -> bool {
        self.cuts
            .iter()
            .any(|&(x, y, until)| now_us < until && (x == node || y == node))
    }
}
