//! A pinned worker thread running a set of nodes: it takes submissions from an SPSC ring,
//! drives every node's sans-IO core against its socket, and reports commits, latency and
//! gauges. Natural batching: each turn takes what is ready (up to a bound), then flushes.

use super::api::{Change, ClientHandler, CommitNote};
use super::latency::{IntervalLink, LatencyRecorder, StageSet};
use super::node::NodeRunner;
use super::turns::TurnProfile;
use crate::proto::Node;
use crate::proto::{Event, Role, SubmitError};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
            pin(spec.core);
            let profile = spec.profile_turns.clone();
            let mut shard = Shard::new(spec, gauges, clock);
            let mut driver = Driver::new(profile);
            while !stop.load(Ordering::Relaxed) {
                let done = shard.turn();
                driver.after(&done);
                if let Some(e) = &shard.error {
                    eprintln!("statesync: {}: {e}; this worker stops", shard.spec.name);
                    break;
                }
            }
            shard.finish(driver.preempted(), driver.turns)
        })
        .expect("spawning a worker thread")
}

/// Pins the calling thread to `core`. Best effort: containers may forbid it; the run then
/// continues unpinned.
pub(crate) fn pin(core: Option<core_affinity::CoreId>) {
    if let Some(core) = core {
        let _ = core_affinity::set_for_current(core);
    }
}

/// One shard's fabric (its nodes, submission ring and sinks) and everything its turns keep
/// between them. A turn may run on any thread, one at a time.
struct Shard {
    spec: WorkerSpec,
    gauges: Arc<Gauges>,
    clock: Instant,
    primary: Option<usize>,
    order: Vec<usize>,
    latency: Option<LatencyRecorder>,
    next_interval_ns: u64,
    next_publish_ns: u64,
    committed_through: Vec<u64>,
    counts: Counts,
    error: Option<String>,
}

/// What one turn did, for the thread that ran it.
struct TurnDone {
    start_ns: u64,
    end_ns: u64,
    work: usize,
    submissions: usize,
}

impl Shard {
    fn new(mut spec: WorkerSpec, gauges: Arc<Gauges>, clock: Instant) -> Shard {
        let primary = spec
            .nodes
            .iter()
            .position(|n| n.machine.as_cu().is_some_and(|c| c.role() == Role::Primary));
        let first_cu = spec.nodes.first().and_then(|n| n.machine.as_cu());
        let channels = first_cu.map_or(0, |c| c.config().topology.channels());
        let window = first_cu.map_or(1, |c| c.config().window_ops);
        let latency = spec
            .latency
            .take()
            .map(|link| LatencyRecorder::new(channels, window, link));
        gauges
            .retention_capacity
            .store((channels * window) as u64, Ordering::Relaxed);
        let is_client: Vec<bool> = spec
            .nodes
            .iter()
            .map(|n| n.machine.as_client().is_some())
            .collect();
        Shard {
            order: pipeline_order(&is_client, primary),
            spec,
            gauges,
            clock,
            primary,
            latency,
            next_interval_ns: 1_000_000_000,
            next_publish_ns: 0,
            committed_through: vec![0; channels],
            counts: Counts::default(),
            error: None,
        }
    }

    fn turn(&mut self) -> TurnDone {
        let clock = self.clock;
        let now_ns = clock.elapsed().as_nanos() as u64;
        let now_us = now_ns / 1000;
        let mut work = 0usize;
        let mut submissions = 0usize;
        if let Some((source, ring)) = self.spec.source.as_mut() {
            source.fill(now_ns, SUBMIT_BATCH, ring);
        }
        if let (Some(p), Some(rx)) = (self.primary, self.spec.submissions.as_mut()) {
            submissions = submit_ready(
                &mut self.spec.nodes[p],
                rx,
                now_us,
                &mut self.counts,
                self.latency.as_mut(),
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
        } = &mut self.spec;
        for &i in &self.order {
            let node = &mut nodes[i];
            match node.receive(None, &|| now_us) {
                Ok(n) => work += n,
                Err(e) => self.error = Some(format!("receive on node {}: {e}", node.machine.id())),
            }
            node.tick(now_us);
            match node.transmit(now_us) {
                Ok(n) => work += n,
                Err(e) => self.error = Some(format!("send from node {}: {e}", node.machine.id())),
            }
            // Stages are stamped when their events are taken, after this node's sends: a
            // turn's later hops must not inherit the turn's start time.
            let event_ns = clock.elapsed().as_nanos() as u64;
            while let Some(ev) = node.machine.poll_event() {
                let sinks = Sinks {
                    counts: &mut self.counts,
                    latency: &mut self.latency,
                    committed_through: &mut self.committed_through,
                    commits,
                    handler,
                };
                on_event(&node.machine, ev, event_ns, sinks);
            }
            // The client-apply stage reads each channel's applied watermark once per visit
            // rather than taking an event per op (a replay's reset came as an event above).
            if let (Some(l), Some(cl)) = (self.latency.as_mut(), node.machine.as_client()) {
                for channel in cl.channels() {
                    if let Some(applied) = cl.applied(channel) {
                        l.reached(0, channel, applied.get(), event_ns);
                    }
                }
            }
        }
        self.counts.turns += 1;
        self.counts.store(&self.gauges);
        if now_ns >= self.next_publish_ns {
            self.next_publish_ns = now_ns + 100_000_000;
            publish(&self.spec.nodes, self.primary, &self.gauges);
        }
        if now_ns >= self.next_interval_ns {
            self.next_interval_ns += 1_000_000_000;
            if let Some(l) = self.latency.as_mut() {
                l.close_interval();
            }
        }
        TurnDone {
            start_ns: now_ns,
            end_ns: clock.elapsed().as_nanos() as u64,
            work,
            submissions,
        }
    }

    fn finish(self, preempted: Option<Preemption>, turns: TurnProfile) -> WorkerOutput {
        publish(&self.spec.nodes, self.primary, &self.gauges);
        let intervals = self.latency.map_or_else(Vec::new, |mut l| {
            l.close_interval();
            l.overflow
        });
        WorkerOutput {
            nodes: self.spec.nodes,
            intervals,
            committed_through: self.committed_through,
            preempted,
            turns,
            error: self.error,
        }
    }
}

/// What a thread keeps across the turns it runs, whichever shard they were of: its turn
/// profile (the run-queue figures it splits long turns by are the thread's), its preemption
/// counters and its idle spin.
struct Driver {
    profile: Option<Arc<AtomicBool>>,
    turns: TurnProfile,
    preempted_at_start: Option<Preemption>,
    idle_turns: u32,
    next_rebase_ns: u64,
}

impl Driver {
    fn new(profile: Option<Arc<AtomicBool>>) -> Driver {
        Driver {
            profile,
            turns: TurnProfile::default(),
            preempted_at_start: Preemption::now(),
            idle_turns: 0,
            next_rebase_ns: 0,
        }
    }

    fn after(&mut self, done: &TurnDone) {
        if let Some(on) = &self.profile {
            if on.load(Ordering::Relaxed) {
                self.turns.record(
                    done.start_ns,
                    done.end_ns,
                    done.work > 0,
                    done.submissions,
                    done.submissions >= SUBMIT_BATCH,
                    run_delay_ns,
                );
            }
            if done.start_ns >= self.next_rebase_ns {
                self.next_rebase_ns = done.start_ns + 100_000_000;
                self.turns.rebase(run_delay_ns());
            }
        }
        if done.work == 0 {
            self.idle_turns += 1;
            if self.idle_turns > 64 {
                std::thread::yield_now();
            }
        } else {
            self.idle_turns = 0;
        }
    }

    fn preempted(&self) -> Option<Preemption> {
        Preemption::now()
            .zip(self.preempted_at_start)
            .map(|(end, start)| end.since(start))
    }
}

/// A shard waits at least this long for its home thread before another thread takes a turn
/// of it: a home thread's round of its shards takes ~0.1-0.3 ms at half load.
pub const STEAL_AFTER_NS: u64 = 500_000;

/// One shard of a pool, and when a turn of it last ended.
struct Slot {
    shard: Mutex<Option<Shard>>,
    last_turn_ns: AtomicU64,
}

/// Threads running more shards than there are threads (see [`spawn_pool`]).
pub struct Pool {
    slots: Arc<Vec<Slot>>,
    threads: Vec<JoinHandle<(Option<Preemption>, TurnProfile)>>,
}

/// Runs `shards` on `threads` threads (at least one, at most one per shard). Thread `t` turns
/// its home shards (index `% threads == t`) in round robin and pins itself where shard `t`'s
/// spec says. A shard whose last turn ended over [`STEAL_AFTER_NS`] ago (and twice its home
/// round, so a busy but running home thread keeps its own) gets a turn from whichever thread
/// sees it first: a thread held off its core, by another task or by the hypervisor, then
/// stalls only the one shard it holds, not all of its own. The transports must not be bound
/// to a thread (io_uring's single issuer); sendmmsg/recvmmsg are not.
pub fn spawn_pool(
    shards: Vec<(WorkerSpec, Arc<Gauges>)>,
    threads: usize,
    stop: Arc<AtomicBool>,
    clock: Instant,
) -> Pool {
    let threads = threads.clamp(1, shards.len().max(1));
    let mut homes: Vec<(
        String,
        Option<core_affinity::CoreId>,
        Option<Arc<AtomicBool>>,
    )> = Vec::new();
    let slots: Vec<Slot> = shards
        .into_iter()
        .enumerate()
        .map(|(i, (spec, gauges))| {
            if i < threads {
                homes.push((spec.name.clone(), spec.core, spec.profile_turns.clone()));
            }
            Slot {
                shard: Mutex::new(Some(Shard::new(spec, gauges, clock))),
                last_turn_ns: AtomicU64::new(0),
            }
        })
        .collect();
    let slots = Arc::new(slots);
    // Each thread's last home round, in ns, for the others' steal threshold.
    let rounds: Arc<Vec<AtomicU64>> = Arc::new((0..threads).map(|_| AtomicU64::new(0)).collect());
    let handles = homes
        .into_iter()
        .enumerate()
        .map(|(t, (name, core, profile))| {
            let (slots, rounds, stop) = (slots.clone(), rounds.clone(), stop.clone());
            std::thread::Builder::new()
                .name(name)
                .spawn(move || {
                    pin(core);
                    pool_thread(t, threads, &slots, &rounds, &stop, clock, profile)
                })
                .expect("spawning a worker thread")
        })
        .collect();
    Pool {
        slots,
        threads: handles,
    }
}

/// Takes a turn of `slot` unless another thread holds it.
fn turn_of(slot: &Slot, driver: &mut Driver, stop: &AtomicBool) {
    let Ok(mut guard) = slot.shard.try_lock() else {
        return;
    };
    let Some(shard) = guard.as_mut() else {
        return;
    };
    let done = shard.turn();
    slot.last_turn_ns.store(done.end_ns, Ordering::Release);
    if let Some(e) = &shard.error {
        // The run cannot go on without this shard; say why now, not only in the report.
        if !stop.swap(true, Ordering::Relaxed) {
            eprintln!("statesync: {}: {e}; stopping the workers", shard.spec.name);
        }
    }
    drop(guard);
    driver.after(&done);
}

fn pool_thread(
    t: usize,
    threads: usize,
    slots: &[Slot],
    rounds: &[AtomicU64],
    stop: &AtomicBool,
    clock: Instant,
    profile: Option<Arc<AtomicBool>>,
) -> (Option<Preemption>, TurnProfile) {
    let mut driver = Driver::new(profile);
    while !stop.load(Ordering::Relaxed) {
        let round_start_ns = clock.elapsed().as_nanos() as u64;
        for slot in slots.iter().skip(t).step_by(threads) {
            turn_of(slot, &mut driver, stop);
        }
        let now_ns = clock.elapsed().as_nanos() as u64;
        rounds[t].store(now_ns - round_start_ns, Ordering::Relaxed);
        for (i, slot) in slots.iter().enumerate() {
            let owner = i % threads;
            if owner == t {
                continue;
            }
            let wait_ns = STEAL_AFTER_NS.max(2 * rounds[owner].load(Ordering::Relaxed));
            let last = slot.last_turn_ns.load(Ordering::Acquire);
            if clock.elapsed().as_nanos() as u64 > last + wait_ns {
                turn_of(slot, &mut driver, stop);
            }
        }
    }
    (driver.preempted(), driver.turns)
}

impl Pool {
    /// Waits for the threads (after `stop`) and returns each shard's output, in the order the
    /// shards were given. Thread `t`'s preemption counters and turn profile go with shard `t`.
    pub fn join(self) -> Result<Vec<WorkerOutput>, String> {
        let mut per_thread = Vec::new();
        for h in self.threads {
            per_thread.push(
                h.join()
                    .map_err(|_| "a worker thread panicked".to_string())?,
            );
        }
        let mut out = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            let shard = slot
                .shard
                .lock()
                .map_err(|_| "a worker thread panicked holding a shard".to_string())?
                .take()
                .ok_or("a shard was taken twice")?;
            let (preempted, turns) = match per_thread.get_mut(i) {
                Some((p, turns)) => (*p, std::mem::take(turns)),
                None => (None, TurnProfile::default()),
            };
            out.push(shard.finish(preempted, turns));
        }
        Ok(out)
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
    use super::*;
    use std::time::Duration;

    /// A shard with no nodes whose source holds its turn for `hold` the first time it is
    /// called after `armed` is set (and says so in `holding`): a thread stalled in the middle
    /// of a turn.
    struct Holder {
        armed: Arc<AtomicBool>,
        holding: Arc<AtomicBool>,
        hold: Duration,
        held: bool,
    }

    impl Source for Holder {
        fn fill(&mut self, _: u64, _: usize, _: &mut rtrb::Producer<Change>) -> usize {
            if !self.held && self.armed.load(Ordering::Relaxed) {
                self.held = true;
                self.holding.store(true, Ordering::Release);
                std::thread::sleep(self.hold);
            }
            0
        }
    }

    fn bare_shard(i: usize, source: Option<Box<dyn Source>>) -> (WorkerSpec, Arc<Gauges>) {
        let (tx, _rx) = rtrb::RingBuffer::new(1);
        let spec = WorkerSpec {
            name: format!("test-pool-{i}"),
            nodes: Vec::new(),
            submissions: None,
            source: source.map(|s| (s, tx)),
            commits: None,
            core: None,
            latency: None,
            handler: None,
            profile_turns: None,
        };
        (spec, Arc::new(Gauges::default()))
    }

    /// Thread 0's home shards are 0 and 2. While it is stuck in a turn of shard 0, shard 2
    /// must go on getting turns, from thread 1. Waits on the events themselves, not on fixed
    /// sleeps, so a loaded machine (CI beside a simulator run) only makes it slower.
    #[test]
    fn a_stalled_thread_holds_up_only_the_shard_it_is_in() {
        let armed = Arc::new(AtomicBool::new(false));
        let holding = Arc::new(AtomicBool::new(false));
        let hold = Duration::from_secs(3);
        let shards: Vec<_> = (0..4)
            .map(|i| {
                let source = (i == 0).then(|| {
                    Box::new(Holder {
                        armed: armed.clone(),
                        holding: holding.clone(),
                        hold,
                        held: false,
                    }) as Box<dyn Source>
                });
                bare_shard(i, source)
            })
            .collect();
        let gauges: Vec<Arc<Gauges>> = shards.iter().map(|(_, g)| g.clone()).collect();
        let turns = |i: usize| gauges[i].turns.load(Ordering::Acquire);
        let stop = Arc::new(AtomicBool::new(false));
        let pool = spawn_pool(shards, 2, stop.clone(), Instant::now());
        armed.store(true, Ordering::Relaxed);
        let start = Instant::now();
        while !holding.load(Ordering::Acquire) {
            assert!(start.elapsed() < hold, "shard 0 never began its held turn");
            std::thread::sleep(Duration::from_millis(1));
        }
        // Shard 0's turn count moves only when a turn ends: not before its hold is over.
        let (zero, two) = (turns(0), turns(2));
        let held_at = Instant::now();
        while turns(2) < two + 50 && held_at.elapsed() < hold / 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(turns(0), zero, "shard 0 is held the whole time");
        assert!(
            turns(2) >= two + 50,
            "shard 2 got {} turns in {:?} while its home thread was stuck",
            turns(2) - two,
            held_at.elapsed()
        );
        stop.store(true, Ordering::Relaxed);
        let out = pool.join().expect("pool joins");
        assert_eq!(out.len(), 4);
        assert!(out.iter().all(|o| o.error.is_none()));
    }

    #[test]
    fn turn_visits_nodes_along_the_commit_path() {
        // Nodes: standby 0, primary 1, clients 2 and 3.
        let kinds = [false, false, true, true];
        assert_eq!(pipeline_order(&kinds, Some(1)), vec![1, 2, 3, 1, 0, 1]);
        assert_eq!(pipeline_order(&kinds, None), vec![0, 1, 2, 3]);
        assert_eq!(pipeline_order(&[false], Some(0)), vec![0]);
    }
}
