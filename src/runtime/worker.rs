//! A pinned worker thread running a set of nodes: it takes submissions from an SPSC ring,
//! drives every node's sans-IO core against its socket, and reports commits, latency and
//! gauges. Natural batching: each turn takes what is ready (up to a bound), then flushes.

use super::api::{Change, ClientHandler, CommitNote};
use super::latency::{IntervalLink, LatencyRecorder, StageSet};
use super::node::NodeRunner;
use super::turns::TurnProfile;
use crate::proto::Node;
use crate::proto::{Event, Role, SubmitError};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

/// Submissions taken from the ring per turn: bounds the work between two receives.
pub const SUBMIT_BATCH: usize = 4096;

/// Live counters a worker publishes for progress lines (relaxed atomics, written per turn).
#[derive(Debug, Default)]
pub struct Gauges {
    /// Changes an in-turn [`Source`] generated.
    pub generated: AtomicU64,
    pub submitted: AtomicU64,
    pub backpressure: AtomicU64,
    pub rejected: AtomicU64,
    pub committed: AtomicU64,
    pub retained_ops: AtomicU64,
    pub retention_capacity: AtomicU64,
    pub datagrams_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub commits_dropped: AtomicU64,
    /// Turns completed. Stored last, with release ordering, after the other counters of the
    /// turn: a reader that sees turn `n` (acquire) sees every count of turns up to `n`.
    pub turns: AtomicU64,
}

/// A submitter that runs inside the worker's turn instead of on a thread of its own (a load
/// generator on a machine with no core to spare). It writes into the worker's submission ring,
/// so its changes take the same path as any submitter's.
pub trait Source: Send {
    /// Pushes the changes due by `now_ns`, at most `max` and never more than the ring has
    /// room for; returns how many.
    fn fill(&mut self, now_ns: u64, max: usize, ring: &mut rtrb::Producer<Change>) -> usize;
}

/// The worker's own tallies of what its gauges show. Counted in plain integers and stored to
/// the gauges once per turn: an atomic add per change is a locked instruction, a full barrier
/// that would wait for every outstanding cache miss of the state writes around it.
#[derive(Debug, Default)]
struct Counts {
    turns: u64,
    submitted: u64,
    backpressure: u64,
    rejected: u64,
    committed: u64,
    commits_dropped: u64,
}

impl Counts {
    fn store(&self, g: &Gauges) {
        g.submitted.store(self.submitted, Ordering::Relaxed);
        g.backpressure.store(self.backpressure, Ordering::Relaxed);
        g.rejected.store(self.rejected, Ordering::Relaxed);
        g.committed.store(self.committed, Ordering::Relaxed);
        g.commits_dropped
            .store(self.commits_dropped, Ordering::Relaxed);
        g.turns.store(self.turns, Ordering::Release);
    }
}

pub struct WorkerSpec {
    pub name: String,
    pub nodes: Vec<NodeRunner>,
    pub submissions: Option<rtrb::Consumer<Change>>,
    /// An in-turn submitter and the producer end of `submissions`.
    pub source: Option<(Box<dyn Source>, rtrb::Producer<Change>)>,
    pub commits: Option<rtrb::Producer<CommitNote>>,
    pub core: Option<core_affinity::CoreId>,
    /// Record per-stage latency (needs the primary and the clients in this worker), handing
    /// each second's histograms to the collector at the other end of the link.
    pub latency: Option<IntervalLink>,
    pub handler: Option<Box<dyn ClientHandler>>,
    /// Profile turns while this flag is set (churn sets it for the timed run only).
    pub profile_turns: Option<Arc<AtomicBool>>,
}

#[derive(Debug)]
pub struct WorkerOutput {
    pub nodes: Vec<NodeRunner>,
    /// Per-second latency histograms (client_apply, client_ack, standby_commit) that did not
    /// go through the link, the last one included: they follow the collector's, in order.
    pub intervals: Vec<StageSet>,
    /// Highest commit watermark announced per channel (for the lost-commit check).
    pub committed_through: Vec<u64>,
    /// Time this worker spent runnable but not running (preempted by other tasks), and how
    /// often it was preempted, over its life: the share of the latency tail the platform adds.
    /// `None` where the kernel does not report it.
    pub preempted: Option<Preemption>,
    pub turns: TurnProfile,
    pub error: Option<String>,
}

/// A task's scheduler counters (`/proc/.../schedstat`): CPU time, run-queue wait, timeslices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedStat {
    pub cpu_ns: u64,
    pub wait_ns: u64,
    pub slices: u64,
}

impl SchedStat {
    pub fn parse(s: &str) -> Option<SchedStat> {
        let mut f = s.split_whitespace().map(str::parse);
        Some(SchedStat {
            cpu_ns: f.next()?.ok()?,
            wait_ns: f.next()?.ok()?,
            slices: f.next()?.ok()?,
        })
    }

    /// Reads and parses a `schedstat` file; `None` where the kernel has none.
    pub fn read(path: impl AsRef<std::path::Path>) -> Option<SchedStat> {
        Self::parse(&std::fs::read_to_string(path).ok()?)
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Preemption {
    pub run_delay_ns: u64,
    pub involuntary_switches: u64,
}

/// This thread's run-queue wait so far (`None` where the kernel does not report it).
fn run_delay_ns() -> Option<u64> {
    SchedStat::read("/proc/thread-self/schedstat").map(|s| s.wait_ns)
}

impl Preemption {
    /// This thread's counters so far (Linux `/proc/thread-self`).
    fn now() -> Option<Preemption> {
        let run_delay_ns = run_delay_ns()?;
        let status = std::fs::read_to_string("/proc/thread-self/status").ok()?;
        let involuntary_switches = status
            .lines()
            .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))?
            .trim()
            .parse()
            .ok()?;
        Some(Preemption {
            run_delay_ns,
            involuntary_switches,
        })
    }

    fn since(self, start: Preemption) -> Preemption {
        Preemption {
            run_delay_ns: self.run_delay_ns.saturating_sub(start.run_delay_ns),
            involuntary_switches: self
                .involuntary_switches
                .saturating_sub(start.involuntary_switches),
        }
    }
}

pub fn spawn(
    spec: WorkerSpec,
    stop: Arc<AtomicBool>,
    gauges: Arc<Gauges>,
    clock: Instant,
) -> JoinHandle<WorkerOutput> {
    std::thread::Builder::new()
        .name(spec.name.clone())
        .spawn(move || {
            if let Some(core) = spec.core {
                // Pinning is best effort: containers may forbid it; the run continues unpinned.
                let _ = core_affinity::set_for_current(core);
            }
            run(spec, &stop, &gauges, clock)
        })
        .expect("spawning a worker thread")
}

fn run(mut spec: WorkerSpec, stop: &AtomicBool, gauges: &Gauges, clock: Instant) -> WorkerOutput {
    let primary = spec
        .nodes
        .iter()
        .position(|n| n.machine.as_cu().is_some_and(|c| c.role() == Role::Primary));
    let channels = spec
        .nodes
        .first()
        .and_then(|n| n.machine.as_cu())
        .map_or(0, |c| c.config().topology.channels());
    let window = spec
        .nodes
        .first()
        .and_then(|n| n.machine.as_cu())
        .map_or(1, |c| c.config().window_ops);
    let mut latency = spec
        .latency
        .take()
        .map(|link| LatencyRecorder::new(channels, window, link));
    let mut next_interval_ns = 1_000_000_000u64;
    let mut next_publish_ns = 0u64;
    let mut committed_through = vec![0u64; channels];
    let mut error = None;
    gauges
        .retention_capacity
        .store((channels * window) as u64, Ordering::Relaxed);
    let is_client: Vec<bool> = spec
        .nodes
        .iter()
        .map(|n| n.machine.as_client().is_some())
        .collect();
    let order = pipeline_order(&is_client, primary);
    let mut idle_turns = 0u32;
    let preempted_at_start = Preemption::now();
    let mut counts = Counts::default();
    let mut turns = TurnProfile::default();
    while !stop.load(Ordering::Relaxed) {
        let now_ns = clock.elapsed().as_nanos() as u64;
        let now_us = now_ns / 1000;
        let mut work = 0usize;
        let mut submissions = 0usize;
        if let Some((source, ring)) = spec.source.as_mut() {
            source.fill(now_ns, SUBMIT_BATCH, ring);
        }
        if let (Some(p), Some(rx)) = (primary, spec.submissions.as_mut()) {
            submissions = submit_ready(
                &mut spec.nodes[p],
                rx,
                now_us,
                &mut counts,
                latency.as_mut(),
            );
            work += submissions;
        }
        // Pipeline order: each node receives, then transmits at once, so what one node sends
        // is taken by the next in the same turn (update -> client ack -> forwarded ack ->
        // standby apply -> commit) instead of one hop per turn.
        let WorkerSpec {
            nodes,
            commits,
            handler,
            ..
        } = &mut spec;
        for &i in &order {
            let node = &mut nodes[i];
            match node.receive(None, &|| now_us) {
                Ok(n) => work += n,
                Err(e) => error = Some(format!("receive on node {}: {e}", node.machine.id())),
            }
            node.tick(now_us);
            match node.transmit(now_us) {
                Ok(n) => work += n,
                Err(e) => error = Some(format!("send from node {}: {e}", node.machine.id())),
            }
            // Stages are stamped when their events are taken, after this node's sends: a
            // turn's later hops must not inherit the turn's start time.
            let event_ns = clock.elapsed().as_nanos() as u64;
            while let Some(ev) = node.machine.poll_event() {
                let sinks = Sinks {
                    counts: &mut counts,
                    latency: &mut latency,
                    committed_through: &mut committed_through,
                    commits,
                    handler,
                };
                on_event(&node.machine, ev, event_ns, sinks);
            }
            // The client-apply stage reads each channel's applied watermark once per visit
            // rather than taking an event per op (a replay's reset came as an event above).
            if let (Some(l), Some(cl)) = (latency.as_mut(), node.machine.as_client()) {
                for channel in cl.channels() {
                    if let Some(applied) = cl.applied(channel) {
                        l.reached(0, channel, applied.get(), event_ns);
                    }
                }
            }
        }
        counts.turns += 1;
        counts.store(gauges);
        if spec
            .profile_turns
            .as_ref()
            .is_some_and(|on| on.load(Ordering::Relaxed))
        {
            let end_ns = clock.elapsed().as_nanos() as u64;
            turns.record(
                now_ns,
                end_ns,
                work > 0,
                submissions,
                submissions >= SUBMIT_BATCH,
                run_delay_ns,
            );
        }
        if error.is_some() {
            break;
        }
        if now_ns >= next_publish_ns {
            next_publish_ns = now_ns + 100_000_000;
            publish(&spec.nodes, primary, gauges);
            if spec.profile_turns.is_some() {
                turns.rebase(run_delay_ns());
            }
        }
        if now_ns >= next_interval_ns {
            next_interval_ns += 1_000_000_000;
            if let Some(l) = latency.as_mut() {
                l.close_interval();
            }
        }
        if work == 0 {
            idle_turns += 1;
            if idle_turns > 64 {
                std::thread::yield_now();
            }
        } else {
            idle_turns = 0;
        }
    }
    publish(&spec.nodes, primary, gauges);
    let intervals = latency.map_or_else(Vec::new, |mut l| {
        l.close_interval();
        l.overflow
    });
    WorkerOutput {
        nodes: spec.nodes,
        intervals,
        committed_through,
        preempted: Preemption::now()
            .zip(preempted_at_start)
            .map(|(end, start)| end.since(start)),
        turns,
        error,
    }
}

/// The order a turn visits nodes in: the primary, its clients, the primary again (to forward
/// their acks), the standbys, and the primary once more (to take their commits). A worker
/// without a primary, or with nothing but it, visits each node once. `is_client[i]` says
/// whether node `i` is a client.
fn pipeline_order(is_client: &[bool], primary: Option<usize>) -> Vec<usize> {
    let n = is_client.len();
    let Some(p) = primary.filter(|_| n > 1) else {
        return (0..n).collect();
    };
    let of = |client: bool| (0..n).filter(move |&i| i != p && is_client[i] == client);
    let mut order = vec![p];
    order.extend(of(true));
    order.push(p);
    order.extend(of(false));
    order.push(p);
    order
}

fn submit_ready(
    node: &mut NodeRunner,
    rx: &mut rtrb::Consumer<Change>,
    now_us: u64,
    counts: &mut Counts,
    mut latency: Option<&mut LatencyRecorder>,
) -> usize {
    let Node::Cu(cu) = &mut node.machine else {
        return 0;
    };
    let Ok(chunk) = rx.read_chunk(rx.slots().min(SUBMIT_BATCH)) else {
        return 0;
    };
    let (a, b) = chunk.as_slices();
    let ready = a.len() + b.len();
    let at = |i: usize| if i < a.len() { &a[i] } else { &b[i - a.len()] };
    let change = |i: usize| (at(i).channel, at(i).entry());
    let n = cu.submit_batch(now_us, ready, change, |i, result| {
        match result {
            Ok(op) => {
                let c = at(i);
                if let Some(l) = latency.as_deref_mut() {
                    l.submitted(c.channel, op, c.intended_ns);
                }
                counts.submitted += 1;
            }
            Err(SubmitError::Backpressure) => {
                counts.backpressure += 1;
                return false;
            }
            Err(_) => counts.rejected += 1,
        }
        true
    });
    chunk.commit(n);
    n
}

/// Where a worker's events go.
struct Sinks<'a> {
    counts: &'a mut Counts,
    latency: &'a mut Option<LatencyRecorder>,
    committed_through: &'a mut [u64],
    commits: &'a mut Option<rtrb::Producer<CommitNote>>,
    handler: &'a mut Option<Box<dyn ClientHandler>>,
}

fn on_event(machine: &Node, ev: Event, now_ns: u64, sinks: Sinks<'_>) {
    let Sinks {
        counts,
        latency,
        committed_through,
        commits,
        handler,
    } = sinks;
    match ev {
        Event::Committed {
            channel,
            epoch,
            through,
        } => {
            let through = through.get();
            let c = channel as usize;
            if through > committed_through[c] {
                counts.committed += through - committed_through[c];
                committed_through[c] = through;
            }
            if let Some(l) = latency {
                l.reached(2, channel, through, now_ns);
            }
            if let Some(tx) = commits.as_mut()
                && tx
                    .push(CommitNote {
                        channel,
                        epoch: epoch.get(),
                        through,
                    })
                    .is_err()
            {
                counts.commits_dropped += 1;
            }
        }
        Event::ClientAcked { channel, through } => {
            let through = through.get();
            if let Some(l) = latency {
                l.reached(1, channel, through, now_ns);
            }
        }
        Event::ClientApplied {
            channel,
            op,
            cookie,
            ..
        } => {
            let (op, cookie) = (op.get(), cookie.get());
            if let (Some(h), Some(cl)) = (handler.as_mut(), machine.as_client())
                && let Some(state) = cl.state(channel)
            {
                h.on_update(channel, op, cookie, state);
            }
        }
        Event::ClientReplayed {
            channel,
            base_op,
            sections,
            ..
        } => {
            let base_op = base_op.get();
            if let Some(l) = latency {
                l.reset_channel(channel, 0, base_op);
            }
            if let (Some(h), Some(cl)) = (handler.as_mut(), machine.as_client())
                && let Some(state) = cl.state(channel)
            {
                h.on_replay(channel, sections, base_op, state);
            }
        }
        _ => {}
    }
}

fn publish(nodes: &[NodeRunner], primary: Option<usize>, gauges: &Gauges) {
    let (mut dgrams, mut bytes) = (0, 0);
    for n in nodes {
        let s = n.transport.stats();
        dgrams += s.datagrams_sent;
        bytes += s.bytes_sent;
    }
    gauges.datagrams_sent.store(dgrams, Ordering::Relaxed);
    gauges.bytes_sent.store(bytes, Ordering::Relaxed);
    if let Some(cu) = primary.and_then(|p| nodes[p].machine.as_cu()) {
        let retained: usize = (0..cu.config().topology.channels() as u32)
            .map(|c| cu.ring_len(c))
            .sum();
        gauges
            .retained_ops
            .store(retained as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::pipeline_order;

    #[test]
    fn turn_visits_nodes_along_the_commit_path() {
        // Nodes: standby 0, primary 1, clients 2 and 3.
        let kinds = [false, false, true, true];
        assert_eq!(pipeline_order(&kinds, Some(1)), vec![1, 2, 3, 1, 0, 1]);
        assert_eq!(pipeline_order(&kinds, None), vec![0, 1, 2, 3]);
        assert_eq!(pipeline_order(&[false], Some(0)), vec![0]);
    }
}
