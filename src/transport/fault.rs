//! Send-side fault injection: drop, duplicate, reorder and delay datagrams on a real socket.
//!
//! The simulator covers faults on virtual time; this layer lets the same faults hit real
//! processes over real sockets (lab runs, drills) with either backend, reproducibly from a seed.
//! It rewrites the send *plan* before a backend sees it, so the backends stay fault-agnostic.
//! When every probability is zero the [`Transport`](super::Transport) holds no `FaultLayer` at
//! all, so disabled faults cost nothing on the send path.

use crate::rng::SplitMix64;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::tx::{Out, Src, TxSlots};

/// Probabilities of each fault, per datagram. All zero (the default) disables the layer.
///
/// Each datagram suffers at most one fault. One uniform draw picks it, testing the
/// probabilities cumulatively in the order drop, duplicate, reorder, delay; so with small
/// probabilities each fault's rate is what was asked, and if they sum above 1 the later ones
/// are clipped.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FaultConfig {
    /// Never sent.
    pub drop: f64,
    /// Sent twice, back to back.
    pub duplicate: f64,
    /// Held back and sent right after the next datagram that goes out (or at the end of the
    /// next flush, if none does, so a quiet sender never strands it).
    pub reorder: f64,
    /// Held for `delay_us`, then sent by whichever `flush` or `poll_recv` call comes first after
    /// that, going by the monotonic clock.
    pub delay: f64,
    pub delay_us: u64,
    /// Seed of the generator deciding the faults; the same seed and traffic give the same faults.
    pub seed: u64,
}

impl FaultConfig {
    /// Whether any fault can happen.
    pub fn is_enabled(&self) -> bool {
        [self.drop, self.duplicate, self.reorder, self.delay]
            .iter()
            .any(|p| *p > 0.0)
    }
}

/// What the fault layer did, in datagrams.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    pub dropped: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub delayed: u64,
    /// Chosen for reorder or delay but the holding queue was full, so dropped instead.
    pub hold_overflow: u64,
}

/// A datagram copied into the holding pool.
#[derive(Clone, Copy, Debug)]
struct Held {
    idx: u32,
    len: u32,
    dst: SocketAddr,
}

impl Held {
    fn out(self) -> Out {
        Out {
            src: Src::Held(self.idx),
            len: self.len,
            dst: self.dst,
        }
    }
}

pub(crate) struct FaultLayer {
    /// Cumulative thresholds for one uniform draw.
    t_drop: f64,
    t_dup: f64,
    t_reorder: f64,
    t_delay: f64,
    delay: Duration,
    rng: SplitMix64,
    /// `capacity` buffers of `stride` bytes; a datagram is copied here only when held.
    pool: Box<[u8]>,
    stride: usize,
    free: Vec<u32>,
    /// Held for reorder, tagged with the flush generation that held them.
    reorder_q: Vec<(Held, u64)>,
    /// Held for delay, in release order (the delay is constant and the clock monotonic).
    delay_q: VecDeque<(Held, Instant)>,
    generation: u64,
    pub(crate) stats: FaultStats,
}

fn prob(p: f64) -> f64 {
    if p.is_finite() {
        p.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

impl FaultLayer {
    /// `capacity` bounds the datagrams held at once (for reorder and delay together).
    pub(crate) fn new(cfg: &FaultConfig, stride: usize, capacity: usize) -> FaultLayer {
        let t_drop = prob(cfg.drop);
        let t_dup = t_drop + prob(cfg.duplicate);
        let t_reorder = t_dup + prob(cfg.reorder);
        let t_delay = t_reorder + prob(cfg.delay);
        FaultLayer {
            t_drop,
            t_dup,
            t_reorder,
            t_delay,
            delay: Duration::from_micros(cfg.delay_us),
            rng: SplitMix64::new(cfg.seed),
            pool: vec![0; capacity * stride].into_boxed_slice(),
            stride,
            free: (0..capacity as u32).rev().collect(),
            reorder_q: Vec::with_capacity(capacity),
            delay_q: VecDeque::with_capacity(capacity),
            generation: 0,
            stats: FaultStats::default(),
        }
    }

    /// Most plan entries one flush can produce from `batch` slots: every slot duplicated, plus
    /// every held datagram released.
    pub(crate) fn max_plan(batch: usize, capacity: usize) -> usize {
        2 * batch + capacity
    }

    /// Whether the caller needs to read the clock for this layer (delays configured or pending).
    pub(crate) fn uses_clock(&self) -> bool {
        self.t_delay > self.t_reorder || !self.delay_q.is_empty()
    }

    /// When the next delayed datagram is due, if any.
    pub(crate) fn next_release(&self) -> Option<Instant> {
        self.delay_q.front().map(|(_, at)| *at)
    }

    pub(crate) fn pool(&self) -> &[u8] {
        &self.pool
    }

    /// Builds the plan for one flush: due delayed datagrams first, then the committed slots with
    /// faults applied.
    pub(crate) fn plan_flush(&mut self, tx: &TxSlots, now: Instant, plan: &mut Vec<Out>) {
        self.generation += 1;
        self.release_due(now, plan);
        for i in 0..tx.len() {
            let (len, dst) = tx.meta(i);
            let out = Out {
                src: Src::Tx(i as u32),
                len,
                dst,
            };
            let u = self.rng.unit();
            if u < self.t_drop {
                self.stats.dropped += 1;
            } else if u < self.t_dup {
                self.stats.duplicated += 1;
                plan.push(out);
                plan.push(out);
                self.release_reordered(plan);
            } else if u < self.t_reorder {
                if let Some(h) = self.hold(tx.data(i), dst) {
                    self.reorder_q.push((h, self.generation));
                    self.stats.reordered += 1;
                }
            } else if u < self.t_delay {
                if let Some(h) = self.hold(tx.data(i), dst) {
                    self.delay_q.push_back((h, now + self.delay));
                    self.stats.delayed += 1;
                }
            } else {
                plan.push(out);
                self.release_reordered(plan);
            }
        }
        // Reordered datagrams held by an earlier flush that saw no successor since: send now.
        let stale = self
            .reorder_q
            .iter()
            .take_while(|(_, g)| *g < self.generation)
            .count();
        for (h, _) in self.reorder_q.drain(..stale) {
            plan.push(h.out());
        }
    }

    /// Appends delayed datagrams due at `now`.
    pub(crate) fn release_due(&mut self, now: Instant, plan: &mut Vec<Out>) {
        while let Some((h, at)) = self.delay_q.front().copied() {
            if at > now {
                break;
            }
            self.delay_q.pop_front();
            plan.push(h.out());
        }
    }

    /// Returns the holding buffers of a plan that has been sent.
    pub(crate) fn recycle(&mut self, plan: &[Out]) {
        for o in plan {
            if let Src::Held(i) = o.src {
                self.free.push(i);
            }
        }
    }

    fn release_reordered(&mut self, plan: &mut Vec<Out>) {
        for (h, _) in self.reorder_q.drain(..) {
            plan.push(h.out());
        }
    }

    fn hold(&mut self, data: &[u8], dst: SocketAddr) -> Option<Held> {
        let Some(idx) = self.free.pop() else {
            self.stats.hold_overflow += 1;
            return None;
        };
        let start = idx as usize * self.stride;
        self.pool[start..start + data.len()].copy_from_slice(data);
        Some(Held {
            idx,
            len: data.len() as u32,
            dst,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::tx::Payloads;

    const STRIDE: usize = 16;

    fn dst() -> SocketAddr {
        "127.0.0.1:9".parse().unwrap()
    }

    /// Runs `n` datagrams numbered 0.. through the layer in flushes of `batch`, and returns the
    /// numbers in the order they would hit the wire.
    fn run(
        cfg: FaultConfig,
        n: u32,
        batch: usize,
        cap: usize,
        now: Instant,
    ) -> (Vec<u32>, FaultStats) {
        let mut layer = FaultLayer::new(&cfg, STRIDE, cap);
        let mut tx = TxSlots::new(batch, STRIDE);
        let mut plan = Vec::with_capacity(FaultLayer::max_plan(batch, cap));
        let mut wire = Vec::new();
        let mut next = 0u32;
        while next < n {
            while next < n {
                let Some(slot) = tx.slot_mut() else { break };
                slot[..4].copy_from_slice(&next.to_le_bytes());
                tx.commit(4, dst());
                next += 1;
            }
            plan.clear();
            layer.plan_flush(&tx, now, &mut plan);
            tx.clear();
            collect(&layer, &tx, &plan, &mut wire);
            layer.recycle(&plan);
        }
        // Two empty flushes, far in the future, release everything still held.
        for _ in 0..2 {
            plan.clear();
            layer.plan_flush(&tx, now + Duration::from_secs(3600), &mut plan);
            collect(&layer, &tx, &plan, &mut wire);
            layer.recycle(&plan);
        }
        (wire, layer.stats)
    }

    fn collect(layer: &FaultLayer, tx: &TxSlots, plan: &[Out], wire: &mut Vec<u32>) {
        let data = Payloads {
            tx: tx.pool(),
            held: layer.pool(),
            stride: STRIDE,
        };
        for o in plan {
            wire.push(u32::from_le_bytes(data.get(o)[..4].try_into().unwrap()));
        }
    }

    #[test]
    fn disabled_config_is_detected() {
        assert!(!FaultConfig::default().is_enabled());
        assert!(
            !FaultConfig {
                seed: 7,
                delay_us: 5,
                ..Default::default()
            }
            .is_enabled()
        );
        assert!(
            FaultConfig {
                delay: 0.1,
                ..Default::default()
            }
            .is_enabled()
        );
    }

    #[test]
    fn counts_match_probabilities_and_are_deterministic() {
        let cfg = FaultConfig {
            drop: 0.1,
            duplicate: 0.05,
            reorder: 0.05,
            delay: 0.02,
            delay_us: 100,
            seed: 42,
        };
        let n = 20_000;
        let now = Instant::now();
        let (wire_a, a) = run(cfg, n, 64, 1024, now);
        let (wire_b, b) = run(cfg, n, 64, 1024, now);
        assert_eq!(a, b, "same seed, same faults");
        assert_eq!(wire_a, wire_b);
        let near = |got: u64, p: f64| {
            let want = p * n as f64;
            (got as f64 - want).abs() < 0.15 * want
        };
        assert!(near(a.dropped, 0.1), "{a:?}");
        assert!(near(a.duplicated, 0.05), "{a:?}");
        assert!(near(a.reordered, 0.05), "{a:?}");
        assert!(near(a.delayed, 0.02), "{a:?}");
        assert_eq!(a.hold_overflow, 0);
        // Conservation: every datagram is dropped, or sent once, or sent twice.
        assert_eq!(wire_a.len() as u64, u64::from(n) - a.dropped + a.duplicated);
        let other = run(FaultConfig { seed: 43, ..cfg }, n, 64, 1024, now).1;
        assert_ne!(a, other, "another seed, other faults");
    }

    #[test]
    fn reordered_datagram_follows_its_successor() {
        let cfg = FaultConfig {
            reorder: 0.3,
            seed: 1,
            ..Default::default()
        };
        let (wire, st) = run(cfg, 1000, 64, 1024, Instant::now());
        assert!(st.reordered > 200);
        let mut sorted = wire.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            (0..1000).collect::<Vec<_>>(),
            "nothing lost or duplicated"
        );
        // Every datagram appears at most a few places away from its own position.
        let late = wire.windows(2).filter(|w| w[0] > w[1]).count() as u64;
        assert!(
            late > 0 && late <= st.reordered,
            "{late} inversions, {st:?}"
        );
    }

    #[test]
    fn delay_holds_until_deadline() {
        let cfg = FaultConfig {
            delay: 1.0,
            delay_us: 500,
            seed: 3,
            ..Default::default()
        };
        let mut layer = FaultLayer::new(&cfg, STRIDE, 8);
        let mut tx = TxSlots::new(4, STRIDE);
        let t0 = Instant::now();
        for _ in 0..3 {
            tx.slot_mut().unwrap()[..2].copy_from_slice(b"hi");
            tx.commit(2, dst());
        }
        let mut plan = Vec::new();
        layer.plan_flush(&tx, t0, &mut plan);
        tx.clear();
        assert!(plan.is_empty());
        assert_eq!(layer.next_release(), Some(t0 + Duration::from_micros(500)));
        layer.release_due(t0 + Duration::from_micros(499), &mut plan);
        assert!(plan.is_empty());
        layer.release_due(t0 + Duration::from_micros(500), &mut plan);
        assert_eq!(plan.len(), 3);
        assert!(
            plan.iter()
                .all(|o| matches!(o.src, Src::Held(_)) && o.len == 2)
        );
        layer.recycle(&plan);
        assert_eq!(layer.next_release(), None);
        assert_eq!(layer.free.len(), 8);
    }

    #[test]
    fn holding_queue_is_bounded() {
        let cfg = FaultConfig {
            delay: 1.0,
            delay_us: 1_000_000,
            seed: 9,
            ..Default::default()
        };
        let mut layer = FaultLayer::new(&cfg, STRIDE, 4);
        let mut tx = TxSlots::new(10, STRIDE);
        for _ in 0..10 {
            tx.slot_mut().unwrap();
            tx.commit(1, dst());
        }
        let mut plan = Vec::new();
        layer.plan_flush(&tx, Instant::now(), &mut plan);
        assert_eq!(layer.stats.delayed, 4);
        assert_eq!(layer.stats.hold_overflow, 6);
        assert!(plan.is_empty());
    }

    #[test]
    fn splitmix_is_uniform_enough() {
        let mut r = SplitMix64::new(0);
        let mut buckets = [0u32; 10];
        for _ in 0..100_000 {
            let x = r.unit();
            assert!((0.0..1.0).contains(&x));
            buckets[(x * 10.0) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|b| (9_000..11_000).contains(b)),
            "{buckets:?}"
        );
    }
}
