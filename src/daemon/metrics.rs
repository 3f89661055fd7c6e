//! Prometheus metrics: the `[metrics]` config section, the metric families (from the
//! `prometheus-client` crate), the feed that copies the node's counters into them, and a small
//! HTTP/1.1 server that serves `/metrics` from its own thread.
//!
//! The event loop never waits on a scrape: every [`FEED_PERIOD_US`] it stores the counters that
//! `statesync status` reports (the same `Counters`, transport and authentication stats) into
//! the families' atomics; the server thread only reads them. A scrape therefore sees values at
//! most one period old.

use super::admin::role_name;
use crate::proto::Node;
use crate::proto::{NodeId, Role};
use crate::runtime::node::NodeRunner;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the event loop copies its counters into the metrics (and samples commit lag).
pub const FEED_PERIOD_US: u64 = 100_000;

/// Longest request head the server reads: a scrape is one short GET.
const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// A client that sends nothing, or reads nothing, for this long is dropped: one slow client
/// must not hold the (single) server thread.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the idle server looks at its stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(50);
/// Commit-lag samples kept per channel: bounds memory when commits stall for long.
const LAG_SAMPLES: usize = 64;

// ---------------------------------------------------------------------------------------------
// `[metrics]` config.

/// `[metrics]` exactly as in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// `IP:PORT` every node serves `/metrics` on (nodes on separate hosts).
    listen: Option<String>,
    /// `[metrics.node]`: per-node addresses (`1 = "127.0.0.1:9311"`), for nodes that share a
    /// host and so cannot all use `listen`.
    #[serde(default)]
    node: BTreeMap<String, String>,
}

/// Where nodes serve `/metrics`. Absent section: nowhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsConfig {
    pub listen: Option<SocketAddr>,
    pub by_node: BTreeMap<NodeId, SocketAddr>,
}

impl MetricsConfig {
    /// Node `id`'s metrics address, if it serves one.
    pub fn listen_of(&self, id: NodeId) -> Option<SocketAddr> {
        self.by_node.get(&id).copied().or(self.listen)
    }
}

/// Checks `[metrics]`: numeric addresses; per-node keys naming nodes of the config; no two
/// nodes that share a data IP (so one host) listening on the same address.
pub fn validate_config(
    raw: &RawMetrics,
    nodes: &[(NodeId, SocketAddr)],
) -> Result<MetricsConfig, String> {
    let parse = |field: &str, s: &str| -> Result<SocketAddr, String> {
        let a: SocketAddr = s
            .parse()
            .map_err(|_| format!("{field}: invalid address {s:?} (expected IP:PORT)"))?;
        if a.port() == 0 {
            return Err(format!("{field}: port 0 is not allowed"));
        }
        Ok(a)
    };
    let listen = raw
        .listen
        .as_deref()
        .map(|s| parse("metrics.listen", s))
        .transpose()?;
    let mut by_node = BTreeMap::new();
    for (k, v) in &raw.node {
        let field = format!("metrics.node.{k}");
        let id: NodeId = k
            .parse()
            .map_err(|_| format!("{field}: {k:?} is not a node id"))?;
        if !nodes.iter().any(|(n, _)| *n == id) {
            return Err(format!(
                "{field}: no control unit or client with id {id} (submitters serve no metrics)"
            ));
        }
        by_node.insert(id, parse(&field, v)?);
    }
    let cfg = MetricsConfig { listen, by_node };
    let mut seen: BTreeMap<(std::net::IpAddr, SocketAddr), NodeId> = BTreeMap::new();
    for &(id, data) in nodes {
        if let Some(m) = cfg.listen_of(id) {
            if let Some(prev) = seen.insert((data.ip(), m), id) {
                return Err(format!(
                    "metrics: nodes {prev} and {id} share host {} and would both listen on {m}; give them their own addresses in [metrics.node]",
                    data.ip()
                ));
            }
            if nodes.iter().any(|&(_, d)| d == m) {
                return Err(format!("metrics: {m} (node {id}) is a data address"));
            }
        }
    }
    Ok(cfg)
}

// ---------------------------------------------------------------------------------------------
// Metric families.

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabel {
    channel: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabel {
    peer: NodeId,
}

type GaugeF = Gauge<f64, AtomicU64>;

/// Every `statesync_role` label value: the control-unit roles, and `client`.
const ROLES: [&str; 5] = ["primary", "standby", "candidate", "joining", "client"];

/// The metric families of one node, registered once. Cloning a metric shares its atomics, so
/// the feed (event loop) writes what the registry (server thread) encodes.
struct Families {
    role: Family<RoleLabel, Gauge>,
    epoch: Gauge,
    commit_lag_ops: Family<ChannelLabel, Gauge>,
    commit_lag_seconds: Family<ChannelLabel, GaugeF>,
    retention_used_ratio: GaugeF,
    datagrams: Family<DirectionLabel, Counter>,
    bytes: Family<DirectionLabel, Counter>,
    retransmits: Counter,
    nacks: Counter,
    rejected: Family<ReasonLabel, Counter>,
    failovers: Counter,
    failover_seconds: Histogram,
    replay_bytes: Counter,
    transfer_bytes: Counter,
    peer_last_seen_seconds: Family<PeerLabel, GaugeF>,
    key_mismatch: Gauge,
}

/// Failover durations, in seconds: 1 ms to about 16 s.
fn failover_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 15)
}

impl Families {
    fn new() -> (Families, Registry) {
        let f = Families {
            role: Family::default(),
            epoch: Gauge::default(),
            commit_lag_ops: Family::default(),
            commit_lag_seconds: Family::default(),
            retention_used_ratio: GaugeF::default(),
            datagrams: Family::default(),
            bytes: Family::default(),
            retransmits: Counter::default(),
            nacks: Counter::default(),
            rejected: Family::default(),
            failovers: Counter::default(),
            failover_seconds: Histogram::new(failover_buckets()),
            replay_bytes: Counter::default(),
            transfer_bytes: Counter::default(),
            peer_last_seen_seconds: Family::default(),
            key_mismatch: Gauge::default(),
        };
        let mut r = Registry::default();
        // Counters get their `_total` suffix from the encoder.
        r.register(
            "statesync_role",
            "1 for the node's current role, 0 for the others",
            f.role.clone(),
        );
        r.register(
            "statesync_epoch",
            "Epoch the node is in (control unit) or follows (client)",
            f.epoch.clone(),
        );
        r.register(
            "statesync_commit_lag_ops",
            "Ops this control unit holds on the channel beyond its commit watermark",
            f.commit_lag_ops.clone(),
        );
        r.register(
            "statesync_commit_lag_seconds",
            "Age of the oldest op held but not yet committed on the channel (0: none)",
            f.commit_lag_seconds.clone(),
        );
        r.register(
            "statesync_retention_used_ratio",
            "Fullest channel's retention ring (primary) or pending queue (standby), used/capacity",
            f.retention_used_ratio.clone(),
        );
        r.register(
            "statesync_datagrams",
            "Data-plane datagrams sent (tx) and received (rx)",
            f.datagrams.clone(),
        );
        r.register(
            "statesync_bytes",
            "Data-plane bytes sent (tx) and received (rx)",
            f.bytes.clone(),
        );
        r.register(
            "statesync_retransmits",
            "Frames retransmitted",
            f.retransmits.clone(),
        );
        r.register("statesync_nacks", "NACKs sent", f.nacks.clone());
        r.register(
            "statesync_rejected",
            "Datagrams refused, by reason",
            f.rejected.clone(),
        );
        r.register(
            "statesync_failovers",
            "Failovers (and switchovers) this control unit led to the end",
            f.failovers.clone(),
        );
        r.register(
            "statesync_failover_seconds",
            "Duration of the failovers this control unit led, start to taking over",
            f.failover_seconds.clone(),
        );
        r.register(
            "statesync_replay_bytes",
            "Bytes of state replayed to clients",
            f.replay_bytes.clone(),
        );
        r.register(
            "statesync_transfer_bytes",
            "Bytes of state transferred to joining standbys",
            f.transfer_bytes.clone(),
        );
        r.register(
            "statesync_peer_last_seen_seconds",
            "Seconds since the last accepted datagram from the peer (absent: never heard)",
            f.peer_last_seen_seconds.clone(),
        );
        r.register(
            "statesync_key_mismatch",
            "Alarm: 1 while this standby withholds a takeover because its primary is heard only through frames that fail authentication",
            f.key_mismatch.clone(),
        );
        (f, r)
    }
}

/// How many reasons [`rejections`] counts.
pub const REJECTION_REASONS: usize = 23;

/// Every count of refused datagrams, by reason (the `reason` label of `statesync_rejected`):
/// the protocol core's, the runner's (`unknown_addr`, `oversize`) and authentication's
/// (`auth_*`). The one list of reasons: the metrics and the rate-limited rejection log lines
/// both read it.
pub fn rejections(runner: &NodeRunner) -> [(&'static str, u64); REJECTION_REASONS] {
    let c = runner.machine.counters();
    let a = runner.auth_stats().unwrap_or_default();
    [
        ("malformed", c.rejected_malformed),
        ("stale_epoch", c.rejected_stale_epoch),
        ("unknown_sender", c.rejected_unknown_sender),
        ("unexpected", c.rejected_unexpected),
        ("extra_heartbeats", c.rejected_extra_heartbeats),
        ("stale_heartbeats", c.rejected_stale_heartbeats),
        ("foreign_epoch", c.rejected_foreign_epoch),
        ("stale_unknown", c.rejected_stale_unknown),
        ("stale_commit", c.rejected_stale_commit),
        ("stale_update", c.rejected_stale_update),
        ("stale_query", c.rejected_stale_query),
        ("nack_rate", c.rejected_nack_rate),
        ("replay_rate", c.rejected_replay_rate),
        ("transfer_rate", c.rejected_transfer_rate),
        ("unknown_addr", runner.rejected_unknown_addr),
        ("oversize", runner.rejected_oversize),
        ("auth_malformed", a.rejected_malformed),
        ("auth_unauthenticated", a.rejected_unauthenticated),
        ("auth_no_key", a.rejected_no_key),
        ("auth_sender_mismatch", a.rejected_sender_mismatch),
        ("auth_stale_session", a.rejected_stale_session),
        ("auth_replay", a.rejected_replay),
        ("auth_bad_tag", a.rejected_bad_tag),
    ]
}

fn set_counter(c: &Counter, v: u64) {
    c.inner().store(v, Ordering::Relaxed);
}

// ---------------------------------------------------------------------------------------------
// The feed, run by the event loop.

/// When ops were first seen on one channel, for the commit lag in time.
#[derive(Debug, Default)]
pub(crate) struct LagTrack {
    /// `(top, t_us)`: ops up to `top` had all been seen by `t_us` (one sample per feed period
    /// in which the top rose). The front is the oldest op not yet committed.
    samples: VecDeque<(u64, u64)>,
    /// The top at the previous sample and when that sample was taken.
    last_top: u64,
    last_us: u64,
}

impl LagTrack {
    /// Records `top` at `now_us`, drops what `commit` covers; returns the age in µs of the
    /// oldest op above `commit` (at most one feed period too old: the op arrived some time
    /// after the previous sample).
    pub(crate) fn update(&mut self, top: u64, commit: u64, now_us: u64) -> u64 {
        if top < self.last_top {
            // A new epoch cut the channel back: start over.
            self.samples.clear();
        }
        if top > self.last_top || self.samples.is_empty() && top > commit {
            // The new ops arrived after the previous sample: date them by it, an upper bound.
            let since = if self.last_us == 0 {
                now_us
            } else {
                self.last_us
            };
            self.samples.push_back((top, since));
            if self.samples.len() > LAG_SAMPLES {
                // Keep the oldest (it is what the lag is measured by); merge the next one.
                self.samples.remove(1);
            }
        }
        self.last_top = top;
        self.last_us = now_us;
        while self.samples.front().is_some_and(|&(t, _)| t <= commit) {
            self.samples.pop_front();
        }
        match self.samples.front() {
            Some(&(_, since)) if top > commit => now_us.saturating_sub(since),
            _ => 0,
        }
    }
}

/// What the event loop keeps to feed the metrics.
pub struct MetricsFeed {
    f: Families,
    registry: Arc<Registry>,
    next_us: u64,
    lag: Vec<LagTrack>,
    /// The last failover (start, end) counted, so that each is counted once.
    counted_failover: Option<(u64, u64)>,
    /// Cached per-channel gauges (a family lookup takes a lock).
    lag_ops: Vec<Gauge>,
    lag_seconds: Vec<GaugeF>,
}

impl MetricsFeed {
    pub fn new() -> MetricsFeed {
        let (f, registry) = Families::new();
        MetricsFeed {
            f,
            registry: Arc::new(registry),
            next_us: 0,
            lag: Vec::new(),
            counted_failover: None,
            lag_ops: Vec::new(),
            lag_seconds: Vec::new(),
        }
    }

    /// The registry the server encodes.
    pub fn registry(&self) -> Arc<Registry> {
        Arc::clone(&self.registry)
    }

    /// Copies the node's counters into the metrics once per [`FEED_PERIOD_US`].
    pub fn maybe_update(&mut self, runner: &NodeRunner, now_us: u64) {
        if now_us < self.next_us {
            return;
        }
        self.next_us = now_us + FEED_PERIOD_US;
        self.update(runner, now_us);
    }

    /// Copies the node's counters into the metrics now.
    pub fn update(&mut self, runner: &NodeRunner, now_us: u64) {
        let f = &self.f;
        let role = match &runner.machine {
            Node::Cu(c) => role_name(c.role()),
            Node::Client(_) => "client",
        };
        for r in ROLES {
            f.role
                .get_or_create(&RoleLabel { role: r })
                .set(i64::from(r == role));
        }
        let c = runner.machine.counters();
        let epoch = runner.machine.epoch();
        f.epoch.set(i64::try_from(epoch).unwrap_or(i64::MAX));
        let t = runner.transport.stats();
        for (dir, dgrams, bytes) in [
            ("tx", t.datagrams_sent, t.bytes_sent),
            ("rx", t.datagrams_received, t.bytes_received),
        ] {
            let l = DirectionLabel { direction: dir };
            set_counter(&f.datagrams.get_or_create(&l), dgrams);
            set_counter(&f.bytes.get_or_create(&l), bytes);
        }
        set_counter(&f.retransmits, c.retransmits);
        set_counter(&f.nacks, c.nacks_sent);
        set_counter(&f.replay_bytes, c.replay_bytes);
        set_counter(&f.transfer_bytes, c.xfer_bytes);
        for (reason, v) in rejections(runner) {
            set_counter(&f.rejected.get_or_create(&ReasonLabel { reason }), v);
        }
        for (peer, last_us) in runner.peers_last_rx_us() {
            f.peer_last_seen_seconds
                .get_or_create(&PeerLabel { peer })
                .set(now_us.saturating_sub(last_us) as f64 / 1e6);
        }
        if let Node::Cu(cu) = &runner.machine {
            let channels = cu.config().topology.channels() as u32;
            while self.lag.len() < channels as usize {
                let ch = self.lag.len() as u32;
                self.lag.push(LagTrack::default());
                let l = ChannelLabel { channel: ch };
                self.lag_ops
                    .push(f.commit_lag_ops.get_or_create(&l).clone());
                self.lag_seconds
                    .push(f.commit_lag_seconds.get_or_create(&l).clone());
            }
            let primary = cu.role() == Role::Primary;
            let mut used = 0f64;
            for ch in 0..channels {
                let top = if primary {
                    cu.next_op(ch).saturating_sub(1)
                } else {
                    let (applied, held) = cu.standby_position(ch);
                    applied.max(held)
                };
                let commit = cu.commit_watermark(ch);
                let i = ch as usize;
                let age_us = self.lag[i].update(top, commit, now_us);
                self.lag_ops[i].set(i64::try_from(top.saturating_sub(commit)).unwrap_or(i64::MAX));
                self.lag_seconds[i].set(age_us as f64 / 1e6);
                let cap = cu.ring_capacity(ch);
                if cap > 0 {
                    used = used.max(cu.ring_len(ch) as f64 / cap as f64);
                }
            }
            f.retention_used_ratio.set(used);
            f.key_mismatch.set(i64::from(cu.key_mismatch().is_some()));
            let t = cu.timing;
            if let Some(end) = t.finished_us
                && t.started_us != 0
                && self.counted_failover != Some((t.started_us, end))
            {
                self.counted_failover = Some((t.started_us, end));
                f.failovers.inc();
                f.failover_seconds
                    .observe(end.saturating_sub(t.started_us) as f64 / 1e6);
            }
        }
    }
}

impl Default for MetricsFeed {
    fn default() -> Self {
        MetricsFeed::new()
    }
}

// ---------------------------------------------------------------------------------------------
// The HTTP server.

/// The `/metrics` server thread; stops (and is joined) when dropped.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` and serves `registry` from a new thread, one request at a time.
    pub fn start(
        addr: SocketAddr,
        registry: Arc<Registry>,
        id: NodeId,
    ) -> Result<MetricsServer, String> {
        let listener = TcpListener::bind(addr).map_err(|e| format!("metrics {addr}: {e}"))?;
        let addr = listener.local_addr().unwrap_or(addr);
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("metrics {addr}: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("metrics-{id}"))
            .spawn(move || serve(&listener, &registry, &stop2))
            .map_err(|e| format!("metrics thread: {e}"))?;
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(listener: &TcpListener, registry: &Registry, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                // A client's failure (timeout, reset) concerns that client only.
                let _ = answer(stream, registry);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(ACCEPT_POLL);
            }
            // EMFILE and the like: back off rather than spin.
            Err(_) => std::thread::sleep(ACCEPT_POLL),
        }
    }
}

/// Reads one request head (at most [`MAX_REQUEST_BYTES`]) and answers it, then closes.
fn answer(mut s: TcpStream, registry: &Registry) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut buf = vec![0u8; MAX_REQUEST_BYTES];
    let mut len = 0;
    let head_end = loop {
        if let Some(p) = buf[..len].windows(4).position(|w| w == b"\r\n\r\n") {
            break Some(p);
        }
        if len == buf.len() {
            break None;
        }
        let n = s.read(&mut buf[len..])?;
        if n == 0 {
            return Ok(());
        }
        len += n;
    };
    let (status, ctype, body) = match head_end {
        None => (
            "431 Request Header Fields Too Large",
            "text/plain",
            "request too large\n".to_owned(),
        ),
        Some(end) => route(&buf[..end], registry),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body.as_bytes())?;
    s.flush()
}

fn route(head: &[u8], registry: &Registry) -> (&'static str, &'static str, String) {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" {
        return (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_owned(),
        );
    }
    if path != "/metrics" {
        return ("404 Not Found", "text/plain", "try /metrics\n".to_owned());
    }
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, registry) {
        Ok(()) => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body,
        ),
        Err(_) => (
            "500 Internal Server Error",
            "text/plain",
            "encoding failed\n".to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_dated_by_the_sample_before_the_ops() {
        let mut t = LagTrack::default();
        assert_eq!(t.update(0, 0, 1_000), 0);
        // Ops 1..=5 arrive between 1 ms and 2 ms: dated 1 ms.
        assert_eq!(t.update(5, 0, 2_000), 1_000);
        assert_eq!(t.update(8, 3, 3_000), 2_000);
        // Ops up to 5 committed: the oldest left (6..=8) arrived after 2 ms.
        assert_eq!(t.update(8, 5, 4_000), 2_000);
        assert_eq!(t.update(8, 8, 5_000), 0);
        assert!(t.samples.is_empty());
        // Bounded while commits stall.
        for i in 0..1000 {
            t.update(9 + i, 8, 6_000 + i);
        }
        assert!(t.samples.len() <= LAG_SAMPLES);
        assert_eq!(t.samples.front().unwrap().1, 5_000);
    }

    #[test]
    fn config_checks_addresses_and_hosts() {
        let nodes: Vec<(NodeId, SocketAddr)> = vec![
            (1, "127.0.0.1:7001".parse().unwrap()),
            (2, "127.0.0.1:7002".parse().unwrap()),
        ];
        let raw = |listen: Option<&str>, node: &[(&str, &str)]| RawMetrics {
            listen: listen.map(str::to_owned),
            node: node
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        let e = validate_config(&raw(Some("127.0.0.1:9310"), &[]), &nodes).unwrap_err();
        assert!(e.contains("share host"), "{e}");
        let c = validate_config(
            &raw(Some("127.0.0.1:9310"), &[("2", "127.0.0.1:9311")]),
            &nodes,
        )
        .unwrap();
        assert_eq!(c.listen_of(1), Some("127.0.0.1:9310".parse().unwrap()));
        assert_eq!(c.listen_of(2), Some("127.0.0.1:9311".parse().unwrap()));
        assert!(validate_config(&raw(Some("x"), &[]), &nodes).is_err());
        let e = validate_config(&raw(None, &[("7", "127.0.0.1:9")]), &nodes).unwrap_err();
        assert!(e.contains("metrics.node.7"), "{e}");
        assert_eq!(
            validate_config(&raw(None, &[]), &nodes).unwrap(),
            MetricsConfig::default()
        );
    }

    #[test]
    fn router_small_examples_parse_when_uncommented() {
        let text = include_str!("../../configs/router-small.toml");
        let start = text.find("# [metrics.node]").unwrap();
        let (head, tail) = text.split_at(start);
        let uncommented: String = tail
            .lines()
            .map(|l| {
                l.strip_prefix("# ")
                    .filter(|l| !l.contains(' ') || l.contains(" = "))
            })
            .map(|l| l.unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        let c = crate::daemon::config::parse(&format!("{head}{uncommented}"), "r.toml").unwrap();
        assert_eq!(
            c.metrics.listen_of(101),
            Some("127.0.0.1:9321".parse().unwrap())
        );
        assert_eq!(c.hooks.timeout_ms, 5000);
        assert!(c.hooks.on_fault.is_some());
    }

    #[test]
    fn serves_metrics_and_refuses_the_rest() {
        let feed = MetricsFeed::new();
        feed.f.epoch.set(512);
        let srv = MetricsServer::start("127.0.0.1:0".parse().unwrap(), feed.registry(), 1).unwrap();
        let get = |req: &[u8]| {
            let mut s = TcpStream::connect(srv.addr()).unwrap();
            s.write_all(req).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        let ok = get(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("statesync_epoch 512"), "{ok}");
        assert!(get(b"GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        // Exactly the cap, with no end of head: refused (and all of it read, so no reset).
        let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_REQUEST_BYTES, b'a');
        assert!(get(&big).starts_with("HTTP/1.1 431"));
    }
}
