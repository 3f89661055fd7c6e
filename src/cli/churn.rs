//! `statesync churn`: the whole fabric in one process over loopback UDP, driven open-loop at a
//! set rate (or flat out), with progress every second, a final report, per-stage latency from
//! submit, and at the end a check of every primary, standby and client table against an
//! independent ledger of what the generator produced (`ledger.rs`), plus a digest check.

use super::ledger::{self, Ledger, LedgerCheck, Replicas};
use super::platform::{OtherTask, TaskSnapshot};
use crate::cli::say;
use crate::proto::Node;
use crate::proto::{
    Client, ControlUnit, CutPolicy, InjectedBug, NodeId, ProtoConfig, Role, Topology,
};
use crate::rng::SplitMix64;
use crate::runtime::api::{Change, FLAG_PRIVATE, INLINE_VALUE_BYTES};
use crate::runtime::latency::{STAGES, StageSet, interval_link};
use crate::runtime::node::NodeRunner;
use crate::runtime::turns::{LongTurns, TurnProfile};
use crate::runtime::worker::{self, Gauges, WorkerOutput, WorkerSpec};
use crate::transport::{FaultConfig, IoChoice, Transport, TransportConfig};
use hdrhistogram::Histogram;
use serde_json::json;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Closed latency intervals (one a second) a worker can hand over before the progress loop
/// takes them: the prefill and the drain run without it.
const INTERVALS_IN_FLIGHT: usize = 16;

#[derive(clap::Args, Debug, Clone)]
pub struct ChurnArgs {
    /// Length of the timed run: 10, 10s, 500ms or 2m (a bare number is seconds).
    #[arg(long, default_value = "10", value_parser = crate::cli::units::parse_seconds)]
    pub duration: f64,
    /// Changes per second, open loop (20000, 400k, 1.5M), or `max`: flat out.
    #[arg(long, default_value = "max", value_parser = validate_rate)]
    pub rate: String,
    /// Channels (each owned by one client, each with its own op IDs and retention window).
    #[arg(long, default_value_t = 64)]
    pub channels: u32,
    /// Keys in total across all channels.
    #[arg(long, default_value_t = 1 << 20)]
    pub keys: u64,
    /// Bytes of each change's value.
    #[arg(long, default_value_t = 32)]
    pub value_bytes: usize,
    /// I/O backend: io_uring, sendmmsg/recvmmsg, or whichever works here.
    #[arg(long, default_value = "auto")]
    pub io: IoChoice,
    /// Worker threads (each runs a shard, or `--shards-per-worker` of them: a shard is a
    /// primary, a standby and clients for its share of the channels).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Shards per worker thread (default 1). Above 1, each thread turns its own shards in
    /// round robin and takes a turn of any other thread's shard that has waited 0.5 ms: a
    /// thread held off its core then stalls one shard, not all of its own. Needs
    /// sendmmsg/recvmmsg (an io_uring ring serves one thread).
    #[arg(long, default_value_t = 1)]
    pub shards_per_worker: usize,
    /// Client nodes per shard.
    #[arg(long, default_value_t = 2)]
    pub clients: usize,
    /// Datagram payload size. The default is the most loopback takes: a quarter of the
    /// datagrams to receive and verify of 16 KiB ones sent in GSO trains (1.04x committed/s
    /// over 6 pairs, session 16).
    #[arg(long, default_value_t = 65507)]
    pub datagram_bytes: usize,
    /// Retention window per channel, in ops.
    #[arg(long, default_value_t = 16384)]
    pub window_ops: usize,
    /// Transport fault layer: drop, duplicate and reorder probabilities.
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Transport fault layer: probability that a datagram is delivered twice.
    #[arg(long, default_value_t = 0.0)]
    pub dup: f64,
    /// Transport fault layer: probability that a datagram is held back behind later ones.
    #[arg(long, default_value_t = 0.0)]
    pub reorder: f64,
    /// Write the JSON report to FILE; a bare `--json` prints it on standard output (the text
    /// report then goes to standard error).
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = crate::cli::JSON_STDOUT)]
    pub json: Option<std::path::PathBuf>,
    /// Write hdrhistogram interval logs (one per stage, one interval per second) into this
    /// directory. Intervals count from the start of the process; those of the prefill are empty.
    #[arg(long)]
    pub hdr_log: Option<std::path::PathBuf>,
    /// At the end of the run, draw its latency into this SVG (as `statesync plot` draws an
    /// `--hdr-log` directory): percentile curves per stage, commit rate and p99 per second.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<std::path::PathBuf>,
    /// Where the load is generated: `inline` (inside each worker's turn, into its submission
    /// ring: no third thread competing for the cores) or `thread` (one generator thread
    /// feeding every worker's ring, as a router's own submitter thread would).
    #[arg(long, default_value = "inline")]
    pub submitter: Submitter,
    /// Skip the prefill. By default every key is written once (through the fabric, at full
    /// speed) before the measured run, so the run measures churn of a populated table rather
    /// than its first inserts and growth; prefill changes are left out of the rate and the
    /// latency figures.
    #[arg(long)]
    pub no_prefill: bool,
    /// Seed of the key/value generator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Drive running daemons instead: their control units' data addresses, comma-separated
    /// (SUBMIT frames go to all of them; the primary applies them).
    #[arg(long, value_delimiter = ',')]
    pub connect: Vec<std::net::SocketAddr>,
    /// Submitter ID to send as (must be listed in the daemons' `[submitters]`).
    #[arg(long, default_value_t = 900)]
    pub submitter_id: u32,
    /// With --connect: spread changes over sections 0..N only (cookies then mark N sections).
    #[arg(long, default_value_t = 64)]
    pub sections: u8,
    /// Test aid, never for measurements: plant a deliberate bug to prove that the end check
    /// catches it (churn must then exit 1). `drop-change`: the generator counts the timed
    /// changes of 1 in 1,009 keys as generated but never submits them; `skip-apply`: the
    /// standby skips the content of every 500th op while its position still advances.
    #[arg(long, default_value = "none")]
    pub inject_bug: InjectedBug,
    /// Send frames without authentication tags (for comparison; by default every link gets an
    /// ephemeral random key for the run; with --connect, the keys of --config).
    #[arg(long)]
    pub insecure: bool,
    /// With --connect: the deployment's config, for the control units' IDs and this
    /// submitter's key file (in its `[security] key_dir`).
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// During the timed run, fire this many hostile datagrams per second at the nodes with
    /// spoofed sources of other nodes (random, truncated, untagged, wrong-key, stale-session;
    /// a raw socket: needs root). Every one must be refused, and the run must still pass.
    #[arg(long, default_value_t = 0.0)]
    pub hostile_rate: f64,
}

/// What a churn run found; `ok` is the verdict (exit 0 only when it is true).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChurnOutcome {
    pub ok: bool,
    /// Changes the generator produced, prefill included (dropped ones of `drop-change` too).
    pub generated: u64,
    /// Ops the primary announced committed.
    pub committed: u64,
    /// Changes the primary refused at submit (never an op).
    pub rejected: u64,
    /// The drain ended with the fabric settled or idle, not at its time limit.
    pub drained: bool,
    pub digests_equal: bool,
    /// The end check of every replica against the ledger.
    pub ledger: LedgerCheck,
}

impl ChurnOutcome {
    /// Generated changes that never became committed ops.
    pub fn uncommitted(&self) -> u64 {
        self.generated.saturating_sub(self.committed)
    }

    pub fn lost_committed(&self) -> u64 {
        self.ledger.lost_committed
    }
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitter {
    Inline,
    Thread,
}

struct Shard {
    channels: Vec<u32>,
}

/// Checks `--rate` when the command line is read, so a bad value is refused at once.
fn validate_rate(s: &str) -> Result<String, String> {
    crate::cli::units::parse_rate_or_max(s).map(|_| s.to_string())
}

impl ChurnArgs {
    /// Whether the keys are written once before the timed run (unless `--no-prefill`).
    fn prefill(&self) -> bool {
        !self.no_prefill
    }

    fn workers_or_cores(&self) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.workers.unwrap_or(cores).max(1)
    }

    /// Shards the channels are split into: `shards_per_worker` per worker thread.
    fn shard_count(&self) -> usize {
        self.workers_or_cores() * self.shards_per_worker.max(1)
    }
}

pub fn run(args: ChurnArgs) -> ExitCode {
    crate::cli::claim_stdout_for_json(args.json.as_deref());
    if !args.connect.is_empty() {
        return connect(&args);
    }
    match churn(&args) {
        Ok(outcome) => {
            if outcome.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("statesync churn: {e}");
            ExitCode::from(2)
        }
    }
}

/// With `--connect`: the control unit ID at each address and the submitter's keys, from
/// `--config` (both empty with `--insecure`).
fn connect_keys(args: &ChurnArgs) -> Result<(Vec<NodeId>, Option<crate::auth::LinkKeys>), String> {
    if args.insecure {
        return Ok((Vec::new(), None));
    }
    let Some(path) = &args.config else {
        return Err(
            "--config: needed to authenticate (the deployment's config, whose [security] key_dir holds this submitter's key file); or --insecure".into(),
        );
    };
    let cfg = crate::daemon::config::load(path).map_err(|e| e.to_string())?;
    let ids = args
        .connect
        .iter()
        .map(|a| {
            cfg.control_units
                .iter()
                .find(|n| n.addr == *a)
                .map(|n| n.id)
                .ok_or_else(|| {
                    format!(
                        "--connect {a}: no control unit of {} has this address",
                        path.display()
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let keys = cfg
        .load_keys(args.submitter_id)?
        .ok_or_else(|| format!("{}: no [security] key_dir", path.display()))?;
    Ok((ids, Some(keys)))
}

/// `--connect`: load running daemons over the network.
fn connect(args: &ChurnArgs) -> ExitCode {
    let rate = match parse_rate(&args.rate) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("statesync churn: {e}");
            return ExitCode::from(2);
        }
    };
    let (target_ids, link_keys) = match connect_keys(args) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("statesync churn --connect: {e}");
            return ExitCode::from(2);
        }
    };
    let spec = crate::cli::load::LoadSpec {
        targets: args.connect.clone(),
        target_ids,
        link_keys,
        submitter_id: args.submitter_id,
        channels: args.channels,
        keys: args.keys,
        value_bytes: args.value_bytes,
        rate,
        duration: Duration::from_secs_f64(args.duration),
        datagram_bytes: args.datagram_bytes.min(1472),
        seed: args.seed,
        sections: args.sections.clamp(1, 64),
    };
    match crate::cli::load::run_load(&spec, true, || false) {
        Ok(r) => {
            say!(
                "load done: {} changes in {} datagrams ({} send errors); check commits with `statesync status`",
                r.changes_sent,
                r.datagrams_sent,
                r.send_errors
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("statesync churn --connect: {e}");
            ExitCode::from(2)
        }
    }
}

fn parse_rate(s: &str) -> Result<Option<f64>, String> {
    crate::cli::units::parse_rate_or_max(s).map_err(|e| format!("--rate: {e}"))
}

/// Runs churn; the outcome's `ok` is true when every generated change committed, none was
/// rejected, the drain finished, and every replica matches the ledger and the primary.
pub fn churn(args: &ChurnArgs) -> Result<ChurnOutcome, String> {
    let rate = parse_rate(&args.rate)?;
    if !matches!(
        args.inject_bug,
        InjectedBug::None | InjectedBug::DropChange | InjectedBug::StandbySkipApply
    ) {
        return Err(format!(
            "--inject-bug {}: churn plants only drop-change and skip-apply",
            args.inject_bug
        ));
    }
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let n_cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = args.workers_or_cores();
    // Below, a "worker" is a shard: with one shard per thread, the same thing.
    let workers = args.shard_count();
    if args.channels == 0 || (args.channels as usize) < workers {
        return Err("--channels: need at least one channel per shard".into());
    }
    // More shards than threads: a pool, whose shards move between threads.
    let pooled = workers > threads;
    if pooled && args.io == IoChoice::Uring {
        return Err("--shards-per-worker above 1 needs --io mmsg (or auto): an io_uring ring serves the one thread that first used it".into());
    }
    let io_choice = if pooled { IoChoice::Mmsg } else { args.io };
    if args.value_bytes > INLINE_VALUE_BYTES {
        return Err(format!("--value-bytes: at most {INLINE_VALUE_BYTES}"));
    }
    if args.keys == 0 || args.clients == 0 {
        return Err("--keys and --clients must be positive".into());
    }
    let faults = FaultConfig {
        drop: args.loss,
        duplicate: args.dup,
        reorder: args.reorder,
        seed: args.seed,
        ..Default::default()
    };
    let shards: Vec<Shard> = (0..workers)
        .map(|w| Shard {
            channels: (0..args.channels)
                .filter(|c| *c as usize % workers == w)
                .collect(),
        })
        .collect();
    let clock = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let gen_stop = Arc::new(AtomicBool::new(false));
    let run_phase = Arc::new(AtomicBool::new(!args.prefill()));
    let mut handles = Vec::new();
    let mut specs = Vec::new();
    let mut producers = Vec::new();
    let mut hostile_targets = Vec::new();
    let mut gauges = Vec::new();
    // Each worker's per-second latency histograms, taken off it once a second.
    let mut collectors = Vec::new();
    let mut io_kind = None;
    for (w, shard) in shards.iter().enumerate() {
        let clients: Vec<NodeId> = (0..args.clients.min(shard.channels.len()))
            .map(|i| 100 + i as NodeId)
            .collect();
        let topology = Topology {
            control_units: vec![1, 2],
            channel_owner: (0..shard.channels.len())
                .map(|l| clients[l % clients.len()])
                .collect(),
            clients: clients.clone(),
            submitters: vec![],
        };
        let mut proto = ProtoConfig::new(topology);
        proto.window_ops = args.window_ops;
        proto.max_frame_bytes = args.datagram_bytes;
        proto.cut_policy = CutPolicy::Complete;
        proto.bulk_window = 4096;
        proto.ack_events = true;
        proto.standby_apply_events = false;
        // The worker reads the client-apply stage from each channel's watermark.
        proto.client_apply_events = false;
        // Loopback under full load: a late heartbeat must not look like a dead primary.
        proto.heartbeat_interval_us = 20_000;
        proto.failover_timeout_us = 2_000_000;
        proto.drop_timeout_us = 4_000_000;
        // Above the queueing delay of a flat-out run (the prefill): a tail probe then means a
        // lost tail, not a queue. Gaps are NACKed as soon as a later op shows them.
        proto.rto_us = 250_000;
        // A gap, though, is NACKed again after about a turn at full load, not after half that
        // RTO: under 1 % loss a channel sees a gap every few tens of milliseconds, and at half
        // an RTO apart most of them waited on the NACK before it (commit p99 338 ms; 10 ms:
        // 13 ms, see docs/measurements/data-path-changes.md).
        proto.nack_interval_us = 10_000;
        if args.inject_bug == InjectedBug::StandbySkipApply {
            proto.inject = args.inject_bug;
        }
        proto.validate()?;
        let tcfg = TransportConfig {
            bind: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0),
            io: io_choice,
            max_datagram_bytes: args.datagram_bytes,
            batch: 64,
            sndbuf_bytes: 8 << 20,
            rcvbuf_bytes: 8 << 20,
            gso: true,
            gro: false,
            faults,
            ..Default::default()
        };
        let ids: Vec<NodeId> = [1, 2].into_iter().chain(clients.iter().copied()).collect();
        let mut transports = Vec::new();
        for _ in &ids {
            let t = Transport::open(tcfg.clone())
                .map_err(|e| format!("opening a loopback socket: {e}"))?;
            transports.push(t);
        }
        io_kind = Some(transports[0].kind());
        let addrs: Vec<(NodeId, SocketAddr)> = ids
            .iter()
            .copied()
            .zip(transports.iter().map(|t| t.local_addr()))
            .collect();
        // The hostile sender aims at every link, from the address of its other end.
        for &(a, aa) in &addrs {
            for &(b, ba) in &addrs {
                if a != b && (a <= 2 || b <= 2) {
                    hostile_targets.push(crate::cli::hostile::Target {
                        dst: ba,
                        dst_id: b,
                        src: aa,
                        claimed: a,
                    });
                }
            }
        }
        // Ephemeral link keys for this shard's nodes: every control unit with every node.
        let links: Vec<(NodeId, NodeId)> = ids
            .iter()
            .flat_map(|&a| [1, 2].into_iter().map(move |b| (a, b)))
            .collect();
        let mut keys = if args.insecure {
            Vec::new()
        } else {
            crate::auth::LinkKeys::generate(&links)
                .map_err(|e| format!("generating ephemeral keys: {e}"))?
        };
        let mut nodes = Vec::new();
        for (id, t) in ids.iter().zip(transports) {
            let machine = if *id <= 2 {
                Node::Cu(Box::new(ControlUnit::new(proto.clone(), *id, true, 0, 0)))
            } else {
                Node::Client(Box::new(Client::new(proto.clone(), *id, false, 0, 0)))
            };
            let peers = addrs.iter().copied().filter(|(p, _)| p != id);
            let auth = keys
                .iter()
                .position(|k| k.node() == *id)
                .map(|i| crate::auth::Auth::new(&keys.swap_remove(i)));
            nodes.push(NodeRunner::new(machine, t, peers).with_auth(auth));
        }
        // An inline source fills the ring each turn and the same turn drains it: one turn's
        // worth keeps its slots in cache, where a larger ring would miss on every change.
        let ring_slots = match args.submitter {
            Submitter::Thread => 1 << 16,
            Submitter::Inline => 2 * worker::SUBMIT_BATCH,
        };
        let (tx, rx) = rtrb::RingBuffer::new(ring_slots);
        let g = Arc::new(Gauges::default());
        gauges.push(g.clone());
        let source = match args.submitter {
            Submitter::Thread => {
                producers.push(tx);
                None
            }
            Submitter::Inline => {
                let schedule = Schedule::new(args, rate, run_phase.clone(), Some((w, workers)));
                let source = InlineSource {
                    schedule,
                    stop: gen_stop.clone(),
                    generated: g.clone(),
                };
                Some((Box::new(source) as Box<dyn worker::Source>, tx))
            }
        };
        let spec = WorkerSpec {
            name: format!("statesync-w{w}"),
            nodes,
            submissions: Some(rx),
            source,
            commits: None,
            core: cores.get(w % cores.len().max(1)).copied(),
            latency: Some({
                let (link, collector) = interval_link(INTERVALS_IN_FLIGHT);
                collectors.push(collector);
                link
            }),
            handler: None,
            profile_turns: Some(run_phase.clone()),
        };
        specs.push((spec, g));
    }
    let pool = if pooled {
        Some(worker::spawn_pool(specs, threads, stop.clone(), clock))
    } else {
        for (spec, g) in specs {
            handles.push(worker::spawn(spec, stop.clone(), g, clock));
        }
        None
    };
    let io = io_kind.map_or("?".to_string(), |k| k.to_string());
    say!(
        "churn: {} channels, {} keys, {} B values, {} workers, {} shards, {} clients/shard, io={io}, rate={}, {} B datagrams, {:.0} s",
        args.channels,
        args.keys,
        args.value_bytes,
        threads,
        workers,
        args.clients,
        args.rate,
        args.datagram_bytes,
        args.duration
    );
    let generator = if producers.is_empty() {
        None
    } else {
        let gen_stop = gen_stop.clone();
        let schedule = Schedule::new(args, rate, run_phase.clone(), None);
        let thread = std::thread::Builder::new()
            .name("statesync-gen".into())
            .spawn(move || generate(producers, gen_stop, clock, schedule))
            .map_err(|e| e.to_string())?;
        Some(thread)
    };
    // Progress, once a second.
    let total = |f: &dyn Fn(&Gauges) -> u64| gauges.iter().map(|g| f(g)).sum::<u64>();
    let base = if args.prefill() {
        prefill(args, &gauges)?
    } else {
        Baseline::default()
    };
    let tasks_at_start = TaskSnapshot::take();
    let drops_at_start = crate::cli::hostile::udp_rcvbuf_errors();
    let hostile = if args.hostile_rate > 0.0 {
        let stop = gen_stop.clone();
        let rate = args.hostile_rate;
        let targets = std::mem::take(&mut hostile_targets);
        Some(
            std::thread::Builder::new()
                .name("statesync-hostile".into())
                .spawn(move || crate::cli::hostile::flood(&targets, rate, &stop))
                .map_err(|e| e.to_string())?,
        )
    } else {
        None
    };
    run_phase.store(true, Ordering::Relaxed);
    let start = Instant::now();
    let cpu_at_start_ns = crate::cli::platform::own_cpu_ns();
    let reported_at_start_kib = crate::cli::platform::reported_free_kib();
    let mut last = (base.committed, base.submitted, Instant::now());
    while start.elapsed().as_secs_f64() < args.duration {
        std::thread::sleep(Duration::from_millis(1000).min(Duration::from_secs_f64(
            (args.duration - start.elapsed().as_secs_f64()).max(0.0),
        )));
        let committed = total(&|g| g.committed.load(Ordering::Relaxed));
        let submitted = total(&|g| g.submitted.load(Ordering::Relaxed));
        let retained = total(&|g| g.retained_ops.load(Ordering::Relaxed));
        let cap = total(&|g| g.retention_capacity.load(Ordering::Relaxed)).max(1);
        // The standby_commit p99 and max of each worker's last whole second, worst of them.
        let (mut p99_us, mut max_us) = (0, 0);
        for c in &mut collectors {
            c.collect();
            if let Some(commit) = c.intervals.last().map(|set| &set[2]) {
                p99_us = p99_us.max(commit.value_at_quantile(0.99));
                max_us = max_us.max(commit.max());
            }
        }
        let dt = last.2.elapsed().as_secs_f64().max(1e-9);
        say!(
            "[{:>5.1}s] committed {:>10.0}/s  submitted {:>10.0}/s  commit lag {:>8} ops  retention {:>5.1}%  backpressure {}  commit p99 {} us max {} us",
            start.elapsed().as_secs_f64(),
            (committed - last.0) as f64 / dt,
            (submitted - last.1) as f64 / dt,
            submitted.saturating_sub(committed),
            100.0 * retained as f64 / cap as f64,
            total(&|g| g.backpressure.load(Ordering::Relaxed)),
            p99_us,
            max_us,
        );
        last = (committed, submitted, Instant::now());
    }
    let measured_s = start.elapsed().as_secs_f64();
    let committed_at_end = total(&|g| g.committed.load(Ordering::Relaxed));
    let run_cpu_ns = crate::cli::platform::own_cpu_ns().saturating_sub(cpu_at_start_ns);
    let reported_in_run_kib = crate::cli::platform::reported_free_kib()
        .zip(reported_at_start_kib)
        .map(|(e, s)| e.saturating_sub(s));
    gen_stop.store(true, Ordering::Relaxed);
    let hostile = match hostile {
        Some(t) => Some(
            t.join()
                .map_err(|_| "hostile sender panicked".to_string())?
                .map_err(|e| format!("hostile sender: {e}"))?,
        ),
        None => None,
    };
    let drops_in_run = crate::cli::hostile::udp_rcvbuf_errors().saturating_sub(drops_at_start);
    let from_thread = match generator {
        Some(thread) => Some(
            thread
                .join()
                .map_err(|_| "generator thread panicked".to_string())?,
        ),
        None => None,
    };
    // An in-turn source may be generating when the flag goes up: once every worker has
    // finished a turn begun after it, nothing more is generated and every count is stored.
    let quiesce_from: Vec<u64> = gauges
        .iter()
        .map(|g| g.turns.load(Ordering::Acquire))
        .collect();
    let quiesce_start = Instant::now();
    while gauges
        .iter()
        .zip(&quiesce_from)
        .any(|(g, &t)| g.turns.load(Ordering::Acquire) < t + 2)
        && quiesce_start.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    let generated = from_thread.unwrap_or_else(|| total(&|g| g.generated.load(Ordering::Relaxed)));
    let drained = drain(&gauges, generated, Duration::from_secs(20));
    // Read only now: walking /proc takes milliseconds of a core, which would otherwise delay
    // the last changes of the run.
    let other_tasks = tasks_at_start.ran_until(&TaskSnapshot::take());
    stop.store(true, Ordering::Relaxed);
    let joined: Vec<WorkerOutput> = match pool {
        Some(pool) => pool.join()?,
        None => handles
            .into_iter()
            .map(|h| h.join().expect("worker thread panicked"))
            .collect(),
    };
    let outputs: Vec<WorkerOutput> = joined
        .into_iter()
        .zip(collectors)
        .map(|(mut out, mut collector)| {
            // What went through the link first, then what the worker kept: in order.
            collector.collect();
            collector.intervals.append(&mut out.intervals);
            out.intervals = collector.intervals;
            out
        })
        .collect();
    // The ledger, from the seeds and counts alone: each source's schedule replayed afresh.
    let rebuild_start = Instant::now();
    let channels: Vec<usize> = shards.iter().map(|s| s.channels.len()).collect();
    let mut ledger = Ledger::new(args.keys, &channels)?;
    let sources: Vec<(Option<(usize, usize)>, u64)> = match from_thread {
        Some(n) => vec![(None, n)],
        None => (0..workers)
            .map(|w| {
                let n = gauges[w].generated.load(Ordering::Relaxed);
                (Some((w, workers)), n)
            })
            .collect(),
    };
    for (shard, count) in sources {
        let mut schedule = Schedule::new(args, None, Arc::new(AtomicBool::new(true)), shard);
        for _ in 0..count {
            let (w, change) = schedule.replay();
            ledger.record(w, &change);
        }
    }
    let check = check_ledger(&ledger, args.value_bytes, &outputs);
    say!(
        "ledger: {generated} changes replayed and {} keys checked in every replica in {:.2} s",
        check.keys_checked,
        rebuild_start.elapsed().as_secs_f64()
    );
    let end = End {
        measured_s,
        run_cpu_ns,
        committed_at_end,
        generated,
        drained,
        ledger: check,
        hostile,
        udp_drops: drops_in_run,
        reported_in_run_kib,
    };
    let ok = report(
        args,
        &outputs,
        &gauges,
        &end,
        &base,
        &io,
        workers,
        n_cores,
        &other_tasks,
    );
    // Millions of map entries would take seconds to free; the process is about to exit.
    std::mem::forget(outputs);
    ok
}

/// Waits until every generated change is committed or refused (some may still wait in a
/// submission ring behind backpressure), or until the fabric is idle: every submitted op
/// committed and no submission taken for 200 ms and two turns of every worker, so whatever is
/// still missing will never come (a test would otherwise wait out the limit). Returns false
/// when `limit` passes first.
fn drain(gauges: &[Arc<Gauges>], generated: u64, limit: Duration) -> bool {
    let total = |f: &dyn Fn(&Gauges) -> u64| gauges.iter().map(|g| f(g)).sum::<u64>();
    let start = Instant::now();
    let mut idle: Option<(u64, Vec<u64>, Instant)> = None;
    loop {
        // Turns first (acquire): the counts read next are at least those of these turns.
        let turns: Vec<u64> = gauges
            .iter()
            .map(|g| g.turns.load(Ordering::Acquire))
            .collect();
        let committed = total(&|g| g.committed.load(Ordering::Relaxed));
        let submitted = total(&|g| g.submitted.load(Ordering::Relaxed));
        let refused = total(&|g| g.rejected.load(Ordering::Relaxed));
        if committed + refused >= generated {
            return true;
        }
        let taken = submitted + refused;
        match &idle {
            _ if committed != submitted => idle = None,
            Some((t, from, since)) if *t == taken => {
                if since.elapsed() >= Duration::from_millis(200)
                    && turns.iter().zip(from).all(|(n, f)| *n >= f + 2)
                {
                    say!(
                        "drain: fabric idle after {:.1} s with {} generated changes never submitted",
                        start.elapsed().as_secs_f64(),
                        generated.saturating_sub(taken)
                    );
                    return true;
                }
            }
            _ => idle = Some((taken, turns, Instant::now())),
        }
        if start.elapsed() >= limit {
            say!(
                "drain: {} generated changes still uncommitted after {:.0} s",
                generated.saturating_sub(committed),
                limit.as_secs_f64()
            );
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Checks every shard's primary, standby and owning client, channel by channel, against the
/// ledger.
fn check_ledger(ledger: &Ledger, value_bytes: usize, outputs: &[WorkerOutput]) -> LedgerCheck {
    let cus: Vec<Option<(&ControlUnit, &ControlUnit)>> = outputs
        .iter()
        .map(|o| {
            let cu = |role| {
                o.nodes
                    .iter()
                    .filter_map(|n| n.machine.as_cu())
                    .find(|c| c.role() == role)
            };
            Some((cu(Role::Primary)?, cu(Role::Standby)?))
        })
        .collect();
    ledger.check(value_bytes, |w, ch| {
        let out = outputs.get(w)?;
        let (p, s) = (*cus.get(w)?)?;
        let owner = *p.config().topology.channel_owner.get(ch as usize)?;
        let client = out
            .nodes
            .iter()
            .filter_map(|n| n.machine.as_client())
            .find(|c| c.id == owner)
            .and_then(|c| c.state(ch));
        Some(Replicas {
            primary: p.state(ch)?,
            standby: s.state(ch)?,
            client,
            committed_through: out.committed_through.get(ch as usize).copied().unwrap_or(0),
        })
    })
}

/// How the run ended: the figures the verdict needs besides the workers' outputs.
struct End {
    measured_s: f64,
    /// CPU this process used during the timed run, all threads.
    run_cpu_ns: u64,
    committed_at_end: u64,
    generated: u64,
    drained: bool,
    ledger: LedgerCheck,
    /// What the hostile sender fired (`--hostile-rate`), and the kernel's UDP receive-buffer
    /// drops during the timed run (system-wide).
    hostile: Option<crate::cli::hostile::HostileReport>,
    udp_drops: u64,
    /// Free memory the guest handed back to the host during the timed run (free page
    /// reporting), where the kernel counts it.
    reported_in_run_kib: Option<u64>,
}

/// The open-loop load: which key changes next and when it is due. Each change carries its
/// intended time, so latency counts from the schedule, not from when a busy worker took it.
struct Schedule {
    rng: SplitMix64,
    /// Seed of this schedule (the shard's): with `n` and the key it gives each value.
    seed: u64,
    /// Timed changes generated so far (dropped ones included); 0 during the prefill.
    n: u64,
    /// Start of the timed schedule, taken at the first change after the run phase opens.
    t0_ns: Option<u64>,
    interval_ns: Option<f64>,
    /// Next key the prefill considers (`keys` when there is none left to write).
    prefill_next: u64,
    run_phase: Arc<AtomicBool>,
    channels: u32,
    keys: u64,
    value_bytes: usize,
    workers: usize,
    /// `(w, workers)`: generate only the keys of worker `w`'s shard, at its share of the rate.
    shard: Option<(usize, usize)>,
    /// Keys of each channel of the shard (its `i`th channel is `w + i * workers`), computed
    /// once: picking a key then takes no division.
    shard_channel_keys: Vec<u64>,
    /// `--inject-bug drop-change`: timed changes of keys `% 1009 == 0` are generated but not
    /// handed out.
    drop_keys: bool,
    /// Changes generated and dropped so far (they count as generated).
    dropped: u64,
}

impl Schedule {
    fn new(
        args: &ChurnArgs,
        rate: Option<f64>,
        run_phase: Arc<AtomicBool>,
        shard: Option<(usize, usize)>,
    ) -> Self {
        let workers = args.shard_count();
        let share = shard.map_or(1.0, |(_, n)| n as f64);
        let seed = args.seed ^ shard.map_or(0, |(w, _)| (w as u64 + 1).rotate_left(32));
        let channels = args.channels as u64;
        // Channel `global` holds the keys `global + channels * j` below `keys`.
        let shard_channel_keys = shard.map_or(Vec::new(), |(w, workers)| {
            (w as u64..channels)
                .step_by(workers)
                .map(|global| args.keys.saturating_sub(global).div_ceil(channels).max(1))
                .collect()
        });
        Schedule {
            rng: SplitMix64::new(seed),
            seed,
            n: 0,
            t0_ns: None,
            interval_ns: rate.map(|r| 1e9 * share / r),
            prefill_next: if args.prefill() { 0 } else { args.keys },
            run_phase,
            channels: args.channels,
            keys: args.keys,
            value_bytes: args.value_bytes,
            workers,
            shard,
            shard_channel_keys,
            drop_keys: args.inject_bug == InjectedBug::DropChange,
            dropped: 0,
        }
    }

    /// When the next timed change is due (`None`: flat out, or the run has not started).
    fn due_ns(&self) -> Option<u64> {
        let t0 = self.t0_ns?;
        self.interval_ns.map(|iv| t0 + (self.n as f64 * iv) as u64)
    }

    fn owns(&self, key: u64) -> bool {
        self.shard
            .is_none_or(|(w, workers)| (key % self.channels as u64) as usize % workers == w)
    }

    /// The next key still to prefill, if any.
    fn next_prefill(&mut self) -> Option<u64> {
        while self.prefill_next < self.keys && !self.owns(self.prefill_next) {
            self.prefill_next += 1;
        }
        (self.prefill_next < self.keys).then(|| {
            self.prefill_next += 1;
            self.prefill_next - 1
        })
    }

    fn pick_key(&mut self) -> u64 {
        let Some((w, workers)) = self.shard else {
            return self.rng.below(self.keys);
        };
        // A channel of this shard (global % workers == w), then one of that channel's keys
        // (key % channels == channel).
        let i = self.rng.below(self.shard_channel_keys.len() as u64) as usize;
        let global = w as u64 + i as u64 * workers as u64;
        global + self.channels as u64 * self.rng.below(self.shard_channel_keys[i])
    }

    /// The next change, with the worker it belongs to, if due by `now_ns`. Prefill changes
    /// carry no intended time (0), so they stay out of the latency figures.
    fn next(&mut self, now_ns: u64) -> Option<(usize, Change)> {
        if let Some(key) = self.next_prefill() {
            return Some(self.change(key, 0));
        }
        if !self.run_phase.load(Ordering::Relaxed) {
            return None;
        }
        self.t0_ns.get_or_insert(now_ns);
        loop {
            let intended_ns = match self.due_ns() {
                Some(at) if at > now_ns => return None,
                Some(at) => at,
                None => now_ns,
            };
            let key = self.pick_key();
            self.n += 1;
            if self.drop_keys && key.is_multiple_of(1009) {
                self.dropped += 1;
                continue;
            }
            return Some(self.change(key, intended_ns));
        }
    }

    /// The next change regardless of time (prefill first, then timed changes, none dropped):
    /// a fresh schedule replays the run's changes in order, for the ledger.
    fn replay(&mut self) -> (usize, Change) {
        if let Some(key) = self.next_prefill() {
            return self.change(key, 0);
        }
        let key = self.pick_key();
        self.n += 1;
        self.change(key, 0)
    }

    fn change(&self, key: u64, intended_ns: u64) -> (usize, Change) {
        let channels = self.channels as u64;
        let global = (key % channels) as u32;
        let w = global as usize % self.workers;
        let value =
            ledger::encode_value(ledger::value_word(self.seed, self.n, key), self.value_bytes);
        let change = Change {
            channel: global / self.workers as u32,
            section: ((key / channels) % 64) as u8,
            flags: if key.is_multiple_of(16) {
                FLAG_PRIVATE
            } else {
                0
            },
            value_len: self.value_bytes as u8,
            key,
            intended_ns,
            value,
        };
        (w, change)
    }
}

/// The generator run inside a worker's turn.
struct InlineSource {
    schedule: Schedule,
    stop: Arc<AtomicBool>,
    generated: Arc<Gauges>,
}

impl worker::Source for InlineSource {
    fn fill(&mut self, now_ns: u64, max: usize, ring: &mut rtrb::Producer<Change>) -> usize {
        if self.stop.load(Ordering::Relaxed) {
            return 0;
        }
        let mut n = 0;
        let dropped = self.schedule.dropped;
        while n < max.min(ring.slots()) {
            let Some((_, change)) = self.schedule.next(now_ns) else {
                break;
            };
            let pushed = ring.push(change);
            debug_assert!(pushed.is_ok(), "room was checked");
            n += 1;
        }
        let dropped = self.schedule.dropped - dropped;
        self.generated
            .generated
            .fetch_add(n as u64 + dropped, Ordering::Relaxed);
        n
    }
}

/// The generator thread: one schedule for all workers, each change pushed to its shard's ring.
/// Returns how many changes it generated (dropped ones of `drop-change` included).
fn generate(
    mut producers: Vec<rtrb::Producer<Change>>,
    stop: Arc<AtomicBool>,
    clock: Instant,
    mut schedule: Schedule,
) -> u64 {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let now = clock.elapsed().as_nanos() as u64;
        let Some((w, change)) = schedule.next(now) else {
            // Sleep while ahead of schedule (the workers need the cores); what falls due
            // meanwhile goes out in one burst, each change stamped with its own time.
            match schedule.due_ns() {
                Some(at) if at > now + 200_000 => {
                    std::thread::sleep(Duration::from_nanos(at - now - 100_000))
                }
                Some(_) => std::thread::yield_now(),
                None => std::thread::sleep(Duration::from_micros(100)),
            }
            continue;
        };
        // A full ring is backpressure: an open-loop submitter keeps its schedule (the wait
        // shows in latency, measured from the intended time); `max` just retries.
        while producers[w].push(change).is_err() {
            if stop.load(Ordering::Relaxed) {
                return n + schedule.dropped;
            }
            std::thread::yield_now();
        }
        n += 1;
    }
    n + schedule.dropped
}

/// Counters at the start of the timed run (all zero without a prefill).
#[derive(Debug, Default)]
struct Baseline {
    committed: u64,
    submitted: u64,
    datagrams: u64,
    prefilled: u64,
    seconds: f64,
}

/// Waits for the prefill (every key written once) to commit, with progress; returns the
/// counters the timed run starts from.
fn prefill(args: &ChurnArgs, gauges: &[Arc<Gauges>]) -> Result<Baseline, String> {
    let total = |f: &dyn Fn(&Gauges) -> u64| gauges.iter().map(|g| f(g)).sum::<u64>();
    let start = Instant::now();
    let mut next_line = Duration::from_secs(1);
    loop {
        let committed = total(&|g| g.committed.load(Ordering::Relaxed));
        if committed >= args.keys {
            break;
        }
        // Per worker, so that a stall says which shard stopped.
        let per_worker = || {
            let counts: Vec<String> = gauges
                .iter()
                .enumerate()
                .map(|(w, g)| format!("worker {w}: {}", g.committed.load(Ordering::Relaxed)))
                .collect();
            counts.join(", ")
        };
        if start.elapsed() > Duration::from_secs(120) {
            return Err(format!(
                "prefill: only {committed} of {} keys committed after 120 s ({})",
                args.keys,
                per_worker()
            ));
        }
        if start.elapsed() >= next_line {
            say!(
                "[prefill {:>4.1}s] {committed} of {} keys committed ({})",
                start.elapsed().as_secs_f64(),
                args.keys,
                per_worker()
            );
            next_line += Duration::from_secs(1);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Gauges of datagrams are published every 100 ms: let them catch up.
    std::thread::sleep(Duration::from_millis(150));
    let b = Baseline {
        committed: total(&|g| g.committed.load(Ordering::Relaxed)),
        submitted: total(&|g| g.submitted.load(Ordering::Relaxed)),
        datagrams: total(&|g| g.datagrams_sent.load(Ordering::Relaxed)),
        prefilled: args.keys,
        seconds: start.elapsed().as_secs_f64(),
    };
    say!(
        "prefill: {} keys committed in {:.1} s ({:.0}/s)",
        b.prefilled,
        b.seconds,
        b.prefilled as f64 / b.seconds
    );
    Ok(b)
}

fn quantiles(h: &Histogram<u64>) -> serde_json::Value {
    json!({
        "p50": h.value_at_quantile(0.5),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
        "count": h.len(),
    })
}

#[allow(clippy::too_many_arguments)]
fn report(
    args: &ChurnArgs,
    outputs: &[WorkerOutput],
    gauges: &[Arc<Gauges>],
    end: &End,
    base: &Baseline,
    io: &str,
    workers: usize,
    cores: usize,
    other_tasks: &[OtherTask],
) -> Result<ChurnOutcome, String> {
    let &End {
        measured_s,
        run_cpu_ns,
        reported_in_run_kib,
        committed_at_end,
        generated,
        drained,
        ..
    } = end;
    let total = |f: &dyn Fn(&Gauges) -> u64| gauges.iter().map(|g| f(g)).sum::<u64>();
    let submitted = total(&|g| g.submitted.load(Ordering::Relaxed));
    let committed = total(&|g| g.committed.load(Ordering::Relaxed));
    let datagrams = total(&|g| g.datagrams_sent.load(Ordering::Relaxed));
    let bytes = total(&|g| g.bytes_sent.load(Ordering::Relaxed));
    let mut errors = Vec::new();
    let mut digests_equal = true;
    let refused = total(&|g| g.rejected.load(Ordering::Relaxed));
    let mut stages: StageSet =
        std::array::from_fn(|_| Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds"));
    for out in outputs {
        if let Some(e) = &out.error {
            errors.push(e.clone());
        }
        for set in &out.intervals {
            for (s, h) in stages.iter_mut().zip(set) {
                s.add(h).map_err(|e| e.to_string())?;
            }
        }
        let primary = out
            .nodes
            .iter()
            .filter_map(|n| n.machine.as_cu())
            .find(|c| c.role() == Role::Primary);
        let standby = out
            .nodes
            .iter()
            .filter_map(|n| n.machine.as_cu())
            .find(|c| c.role() == Role::Standby);
        let (Some(p), Some(s)) = (primary, standby) else {
            digests_equal = false;
            errors.push("a shard lost its primary or standby".into());
            continue;
        };
        for ch in 0..p.config().topology.channels() as u32 {
            let ps = p.state(ch).expect("channel");
            if s.state(ch).expect("channel").full_digest() != ps.full_digest() {
                digests_equal = false;
            }
            let owner = p.config().topology.channel_owner[ch as usize];
            let client = out
                .nodes
                .iter()
                .filter_map(|n| n.machine.as_client())
                .find(|c| c.id == owner);
            if client
                .and_then(|c| c.state(ch))
                .is_none_or(|cs| cs.public_digest() != ps.public_digest())
            {
                digests_equal = false;
            }
        }
    }
    let committed_per_s = committed_at_end.saturating_sub(base.committed) as f64 / measured_s;
    let run_committed = committed_at_end.saturating_sub(base.committed).max(1);
    let cpu_ns_per_change = run_cpu_ns as f64 / run_committed as f64;
    let run_datagrams = datagrams.saturating_sub(base.datagrams);
    say!("\n== churn report ==");
    let threads = args.workers_or_cores();
    let shards = if workers > threads {
        format!(
            " ({workers} shards, a shard waiting {} ms taken over by another worker)",
            worker::STEAL_AFTER_NS as f64 / 1e6
        )
    } else {
        String::new()
    };
    say!(
        "io {io}, {threads} workers{shards} on {cores} cores, {} channels, {} keys, {} B values",
        args.channels,
        args.keys,
        args.value_bytes
    );
    say!(
        "generated {generated}, submitted {submitted}, committed {committed} ({committed_per_s:.0}/s over {measured_s:.1} s)"
    );
    if base.prefilled > 0 {
        say!(
            "  of which prefill: {} keys committed in {:.1} s before the timed run (not in the rate or the latency)",
            base.prefilled,
            base.seconds
        );
    }
    say!(
        "cpu: {:.2} s over the timed run ({:.2} cores busy), {cpu_ns_per_change:.0} ns per committed change (compares builds on a busy machine)",
        run_cpu_ns as f64 / 1e9,
        run_cpu_ns as f64 / 1e9 / measured_s,
    );
    say!(
        "datagrams {datagrams} ({:.0}/s in the timed run), wire bytes per change {:.1}",
        run_datagrams as f64 / measured_s,
        bytes as f64 / committed.max(1) as f64
    );
    for (name, h) in STAGES.iter().zip(&stages) {
        say!(
            "latency {name:<15} p50 {:>7} us  p99 {:>7} us  p999 {:>7} us  max {:>8} us  ({} samples)",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
            h.len()
        );
    }
    let mut tx = crate::transport::TransportStats::default();
    for n in outputs.iter().flat_map(|o| &o.nodes) {
        let t = n.transport.stats();
        tx.send_syscalls += t.send_syscalls;
        tx.recv_syscalls += t.recv_syscalls;
        tx.gso_sends += t.gso_sends;
        tx.gro_receives += t.gro_receives;
        tx.recv_buffers_exhausted += t.recv_buffers_exhausted;
        tx.send_eagain += t.send_eagain + t.send_enobufs;
    }
    say!(
        "transport: {} send and {} receive syscalls, {} GSO sends, {} GRO receives, {} receive-buffer exhaustions, {} datagrams dropped on a full socket",
        tx.send_syscalls,
        tx.recv_syscalls,
        tx.gso_sends,
        tx.gro_receives,
        tx.recv_buffers_exhausted,
        tx.send_eagain
    );
    let (mut retransmits, mut nacks, mut rejected_datagrams) = (0u64, 0u64, 0u64);
    for n in outputs.iter().flat_map(|o| &o.nodes) {
        let c = n.machine.counters();
        retransmits += c.retransmits;
        nacks += c.nacks_sent;
        rejected_datagrams += c.rejected();
    }
    say!(
        "recovery: {retransmits} retransmissions (NACK or tail probe), {nacks} NACKs sent, {rejected_datagrams} datagrams rejected"
    );
    let mut auth = crate::auth::AuthStats::default();
    let mut secured = false;
    for a in outputs
        .iter()
        .flat_map(|o| &o.nodes)
        .filter_map(|n| n.auth_stats())
    {
        secured = true;
        auth.sealed += a.sealed;
        auth.delivered += a.delivered;
        auth.openers += a.openers;
        auth.hellos_tx += a.hellos_tx;
        auth.rejected_bad_tag += a.rejected_bad_tag;
        auth.rejected_replay += a.rejected_replay;
        auth.rejected_stale_session += a.rejected_stale_session;
        auth.rejected_malformed += a.rejected_malformed;
        auth.rejected_unauthenticated += a.rejected_unauthenticated;
        auth.rejected_no_key += a.rejected_no_key;
        auth.rejected_sender_mismatch += a.rejected_sender_mismatch;
    }
    if secured {
        say!(
            "authentication: AES-128-GCM, ephemeral keys per link; {} frames sealed, {} verified, {} session openers, {} rejected ({} bad tag, {} replayed, {} stale session)",
            auth.sealed,
            auth.delivered,
            auth.openers,
            auth.rejected(),
            auth.rejected_bad_tag,
            auth.rejected_replay,
            auth.rejected_stale_session
        );
    } else {
        say!("authentication: OFF (--insecure): frames carry no tag");
    }
    let preempted: Vec<_> = outputs.iter().filter_map(|o| o.preempted).collect();
    let (delay_ns, switches) = preempted.iter().fold((0, 0), |(d, s), p| {
        (d + p.run_delay_ns, s + p.involuntary_switches)
    });
    if !preempted.is_empty() {
        say!(
            "platform: workers waited {:.1} ms in all on the run queue, preempted {switches} times (other tasks on their cores)",
            delay_ns as f64 / 1e6
        );
    }
    let (other_ms, most) = super::platform::summarize(other_tasks, 3);
    say!("platform: other tasks ran {other_ms:.1} ms in the timed run; most: {most}");
    // DAMON's monitor samples page access in one non-preemptible pass every sample interval:
    // each pass stalls whichever worker shares its core (see tuning/README.md).
    if let Some(kd) = other_tasks.iter().find(|t| t.comm.starts_with("kdamond")) {
        say!(
            "platform: {} (the host's DAMON monitor) ran {:.1} ms in {} slices, each a stall of a worker; `tuning/apply.sh damon` pauses it, `tuning/revert.sh` resumes it",
            kd.comm,
            kd.cpu_ms,
            kd.slices
        );
    }
    // Each report of free memory to the host stalls both vCPUs while the host takes it back
    // (see tuning/README.md): 10-140 ms per 128 MiB on the VM this was measured on.
    if let Some(kib) = reported_in_run_kib.filter(|&k| k > 0) {
        say!(
            "platform: the guest reported {} MiB of free memory to the host during the run (free page reporting: each report stalls both cores); `tuning/apply.sh page-reporting` holds freed memory 60 s first",
            kib / 1024
        );
    }
    let mut turns = TurnProfile::default();
    for o in outputs {
        turns.add(&o.turns);
    }
    let (t, per) = (&turns.busy_turn_us, &turns.submissions_per_turn);
    say!(
        "turns that did work: {:.0}% of the time, length p50 {} us p99 {} us max {} us, submissions per turn p50 {} p99 {} max {}",
        100.0 * turns.busy_share(),
        t.value_at_quantile(0.5),
        t.value_at_quantile(0.99),
        t.max(),
        per.value_at_quantile(0.5),
        per.value_at_quantile(0.99),
        per.max()
    );
    let ms = |l: LongTurns| l.sum_ns as f64 / 1e6;
    let (pre, own, unsplit) = (turns.long_preempted, turns.long_on_cpu, turns.long_unsplit);
    let full = turns.long_on_cpu_full;
    say!(
        "turns over 1 ms: {} held off their core half the turn or more ({:.1} ms), {} on their core all along ({:.1} ms: {} with a full batch, {:.1} ms, catching up on a backlog; {} with less, {:.1} ms, held up on the core: a slow stretch of the machine, or our own work){}",
        pre.count,
        ms(pre),
        own.count,
        ms(own),
        full.count,
        ms(full),
        own.count - full.count,
        ms(own) - ms(full),
        if unsplit.count > 0 {
            format!(", {} not split ({:.1} ms)", unsplit.count, ms(unsplit))
        } else {
            String::new()
        }
    );
    let l = &end.ledger;
    say!(
        "digests: {}",
        if digests_equal {
            "every client and standby equals the primary"
        } else {
            "MISMATCH"
        }
    );
    say!(
        "ledger: {} keys checked in every primary, standby and client: {} missing or wrong ({} of them committed: lost), {} entries held beyond or short of the ledger, {} keys uncommitted",
        l.keys_checked,
        l.mismatched_keys,
        l.lost_committed,
        l.entry_count_diff,
        l.uncommitted_keys
    );
    for x in &l.examples {
        say!("  e.g. {x}");
    }
    // The verdict: each failed condition on a line of its own, with its size.
    let mut failed = Vec::new();
    if let Some(h) = &end.hostile {
        let unknown_addr: u64 = outputs
            .iter()
            .flat_map(|o| &o.nodes)
            .map(|n| n.rejected_unknown_addr)
            .sum();
        let refused = auth.rejected() + unknown_addr;
        let by_class: Vec<String> = crate::cli::hostile::CLASSES
            .iter()
            .zip(h.by_class)
            .map(|(c, n)| format!("{n} {c}"))
            .collect();
        say!(
            "hostile: {} datagrams sent with spoofed sources ({}; {} send errors); refused {} ({} by authentication, {} from unknown addresses), {} dropped by the kernel on full buffers",
            h.sent,
            by_class.join(", "),
            h.send_errors,
            refused,
            auth.rejected(),
            unknown_addr,
            end.udp_drops
        );
        // Each hostile datagram was refused, dropped by the kernel, or never sent.
        if refused + end.udp_drops + h.send_errors < h.sent {
            failed.push(format!(
                "{} hostile datagrams unaccounted for (neither refused nor dropped)",
                h.sent - refused - end.udp_drops - h.send_errors
            ));
        }
    }
    if committed < generated {
        failed.push(format!(
            "{} generated changes never committed ({generated} generated, {committed} committed)",
            generated - committed
        ));
    } else if committed > generated {
        failed.push(format!(
            "{} more ops committed than changes generated",
            committed - generated
        ));
    }
    if refused > 0 {
        failed.push(format!("{refused} changes rejected at submit"));
    }
    if !drained {
        failed.push("the drain did not finish in time".into());
    }
    if l.lost_committed > 0 {
        failed.push(format!(
            "{} committed changes lost: missing or wrong in a replica",
            l.lost_committed
        ));
    }
    if !l.matches() {
        failed.push(format!(
            "the ledger does not match: {} keys missing or wrong, entry counts off by {}",
            l.mismatched_keys, l.entry_count_diff
        ));
    }
    if !digests_equal {
        failed.push("digests differ from the primary's".into());
    }
    for e in &errors {
        failed.push(format!("error: {e}"));
    }
    if failed.is_empty() {
        say!(
            "verdict: OK: {generated} generated = {committed} committed, none rejected, drained, ledger matches everywhere"
        );
    }
    for f in &failed {
        say!("FAILED: {f}");
    }
    // One interval per second, every worker's added up: the plot and the JSON report's series.
    let intervals = merged_intervals(outputs).map_err(|e| e.to_string())?;
    let series = crate::cli::plot::LatencyRun::from_intervals("churn", &intervals)?;
    if let Some(path) = &args.json {
        let mut j = json!({
            "committed_per_s": committed_per_s,
            "submitted": submitted,
            "committed": committed,
            "generated": generated,
            "rejected": refused,
            "drained": drained,
            "lost_committed": l.lost_committed,
            "ledger_keys_checked": l.keys_checked,
            "ledger_mismatched_keys": l.mismatched_keys,
            "ledger_entry_count_diff": l.entry_count_diff,
            "digests_equal": digests_equal,
            "ok": failed.is_empty(),
            "io": io,
            "cores": cores,
            "workers": args.workers_or_cores(),
            "channels": args.channels,
            "keys": args.keys,
            "value_bytes": args.value_bytes,
            "rate": args.rate,
            "duration_s": measured_s,
            "cpu_ns_per_change": cpu_ns_per_change,
            "datagrams_per_s": run_datagrams as f64 / measured_s,
            "prefill_keys": base.prefilled,
            "worker_busy_share": turns.busy_share(),
            "busy_turn_us": quantiles(&turns.busy_turn_us),
            "submissions_per_turn": quantiles(&turns.submissions_per_turn),
            "long_turns": {
                "preempted": turns.long_preempted.count,
                "preempted_ms": turns.long_preempted.sum_ns as f64 / 1e6,
                "on_cpu": turns.long_on_cpu.count,
                "on_cpu_ms": turns.long_on_cpu.sum_ns as f64 / 1e6,
                "on_cpu_full_batch": turns.long_on_cpu_full.count,
                "on_cpu_full_batch_ms": turns.long_on_cpu_full.sum_ns as f64 / 1e6,
                "unsplit": turns.long_unsplit.count,
            },
            "prefill_s": base.seconds,
            "wire_bytes_per_change": bytes as f64 / committed.max(1) as f64,
            "backpressure": total(&|g| g.backpressure.load(Ordering::Relaxed)),
            "retransmits": retransmits,
            "nacks_sent": nacks,
            "rejected_datagrams": rejected_datagrams,
            "worker_run_delay_ms": delay_ns as f64 / 1e6,
            "worker_preemptions": switches,
            "other_tasks_cpu_ms": other_ms,
            "other_tasks": other_tasks.iter().take(5).map(|t| json!({
                "comm": t.comm, "cpu_ms": t.cpu_ms, "slices": t.slices,
            })).collect::<Vec<_>>(),
            "latency_us": {
                "client_apply": quantiles(&stages[0]),
                "client_ack": quantiles(&stages[1]),
                "standby_commit": quantiles(&stages[2]),
            },
            // What `statesync plot` draws: each stage's percentile curve and its seconds.
            "latency_series": series.to_json(),
        });
        // Beside the rest (json! has a recursion limit).
        j["shards"] = json!(workers);
        j["page_reported_in_run_kib"] = json!(reported_in_run_kib);
        crate::cli::write_json(path, &j)?;
    }
    if let Some(dir) = &args.hdr_log {
        write_hdr_logs(dir, &intervals).map_err(|e| format!("--hdr-log {}: {e}", dir.display()))?;
    }
    if let Some(path) = &args.plot {
        crate::cli::plot::draw_latency(std::slice::from_ref(&series), path)
            .map_err(|e| format!("--plot {}: {e}", path.display()))?;
        say!("plot: wrote {}", path.display());
    }
    Ok(ChurnOutcome {
        ok: failed.is_empty(),
        generated,
        committed,
        rejected: refused,
        drained,
        digests_equal,
        ledger: end.ledger.clone(),
    })
}

/// Every worker's per-second latency histograms added up, interval by interval:
/// `(start from the start of the process, duration, [stage histograms])`.
type Interval = (Duration, Duration, StageSet);

fn merged_intervals(
    outputs: &[WorkerOutput],
) -> Result<Vec<Interval>, hdrhistogram::AdditionError> {
    let n = outputs.iter().map(|o| o.intervals.len()).max().unwrap_or(0);
    (0..n)
        .map(|i| {
            let mut hs: StageSet = std::array::from_fn(|_| {
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds")
            });
            for o in outputs {
                if let Some(iv) = o.intervals.get(i) {
                    for (h, x) in hs.iter_mut().zip(iv) {
                        h.add(x)?;
                    }
                }
            }
            Ok((Duration::from_secs(i as u64), Duration::from_secs(1), hs))
        })
        .collect()
}

fn write_hdr_logs(dir: &std::path::Path, intervals: &[Interval]) -> std::io::Result<()> {
    use hdrhistogram::serialization::V2Serializer;
    use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
    std::fs::create_dir_all(dir)?;
    for (s, name) in STAGES.iter().enumerate() {
        let mut file = std::fs::File::create(dir.join(format!("{name}.hlog")))?;
        let mut ser = V2Serializer::new();
        let mut w = IntervalLogWriterBuilder::new()
            .with_max_value_divisor(1.0)
            .begin_log_with(&mut file, &mut ser)
            .map_err(std::io::Error::other)?;
        for (start, duration, hs) in intervals {
            w.write_histogram(&hs[s], *start, *duration, None)
                .map_err(std::io::Error::other)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        args: ChurnArgs,
    }

    fn args(extra: &[&str]) -> ChurnArgs {
        let base = [
            "churn",
            "--channels",
            "8",
            "--keys",
            "1000",
            "--workers",
            "3",
        ];
        Cmd::parse_from(base.iter().chain(extra)).args
    }

    /// The prefill writes every key exactly once across the shards, each key to the shard and
    /// local channel that own it; the timed run then starts and stays inside the shard.
    #[test]
    fn shards_prefill_every_key_once_then_stay_in_their_channels() {
        let a = args(&["--rate", "1000000"]);
        let run = Arc::new(AtomicBool::new(false));
        let mut seen = vec![0u32; 1000];
        for w in 0..3 {
            let mut s = Schedule::new(&a, Some(1e6), run.clone(), Some((w, 3)));
            while let Some((owner, c)) = s.next(0) {
                assert_eq!(owner, w);
                assert_eq!(c.intended_ns, 0, "prefill stays out of the latency figures");
                let global = (c.key % 8) as u32;
                assert_eq!((global as usize % 3, global / 3), (w, c.channel));
                seen[c.key as usize] += 1;
            }
        }
        assert!(seen.iter().all(|&n| n == 1), "every key exactly once");
        run.store(true, Ordering::Relaxed);
        let mut s = Schedule::new(&a, Some(1e6), run, Some((1, 3)));
        while s.next_prefill().is_some() {}
        // 1 M/s over 3 workers: this shard's changes fall due every 3 µs from the first call.
        let (_, first) = s.next(1_000).expect("due at once");
        assert_eq!(first.intended_ns, 1_000);
        assert!(s.next(2_000).is_none(), "the next one is not due yet");
        for _ in 0..1000 {
            let (owner, c) = s.next(u64::MAX / 2).expect("due");
            assert_eq!(owner, 1);
            assert!(c.key < 1000 && (c.key % 8) % 3 == 1);
        }
    }

    /// A fresh schedule replays the run's changes, values included, from its seed and count
    /// alone, whatever the clock did; under `drop-change` the dropped changes count as
    /// generated and the replay still holds them (the ledger expects them).
    #[test]
    fn a_fresh_schedule_replays_the_run() {
        // Shard 0 owns key 0, the one key below 1,000 that drops.
        let a = args(&["--rate", "max", "--inject-bug", "drop-change"]);
        let run = Arc::new(AtomicBool::new(true));
        let mut live = Schedule::new(&a, None, run.clone(), Some((0, 3)));
        let mut handed = Vec::new();
        for t in 0..20_000u64 {
            let (_, c) = live.next(t * 7).expect("flat out: always due");
            handed.push(c);
        }
        assert!(live.dropped > 0);
        let prefill = (0..1000u64).filter(|k| (k % 8) % 3 == 0).count();
        let mut fresh = Schedule::new(&a, None, run, Some((0, 3)));
        let replayed: Vec<Change> = (0..handed.len() as u64 + live.dropped)
            .map(|_| fresh.replay().1)
            .enumerate()
            .filter(|(i, c)| *i < prefill || !c.key.is_multiple_of(1009))
            .map(|(_, c)| c)
            .collect();
        let fields = |c: &Change| (c.channel, c.section, c.flags, c.key, c.value_len, c.value);
        assert_eq!(replayed.len(), handed.len());
        for (r, h) in replayed.iter().zip(&handed) {
            assert_eq!(fields(r), fields(h));
        }
    }
}
