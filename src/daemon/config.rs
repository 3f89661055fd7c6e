//! The deployment config: one TOML file shared by every node (schema in `docs/DAEMON.md`).
//!
//! Parsing is two steps: `serde` reads the file into raw structs that reject unknown keys, then
//! [`validate`] checks every value and builds a [`DeploymentConfig`]. Every error names the
//! field it is about (`clients[1].channels: channel 7 is owned twice`).

pub use super::admin::config::AdminConfig;
use crate::proto::{CutPolicy, NodeId, ProtoConfig, Topology};
use crate::transport::{FaultConfig, IoChoice, TransportConfig};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why a config could not be used. The message names the file and the field.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax or schema error (unknown key, wrong type); toml's message names the key.
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A value that parsed but is not valid; `message` starts with the field name.
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl ConfigError {
    /// The message without the file name.
    pub fn message(&self) -> String {
        match self {
            ConfigError::Read { source, .. } => format!("cannot read: {source}"),
            ConfigError::Parse { message, .. } | ConfigError::Invalid { message, .. } => {
                message.clone()
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Raw schema, exactly as in the file.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    control_units: Vec<RawNode>,
    #[serde(default)]
    clients: Vec<RawClient>,
    #[serde(default)]
    submitters: RawSubmitters,
    /// `[state]`: where control units persist what must survive a restart.
    #[serde(default)]
    state: RawState,
    #[serde(default)]
    timing: RawTiming,
    /// `[admin]`: how each node serves the admin protocol.
    #[serde(default)]
    admin: super::admin::config::RawAdmin,
    #[serde(default)]
    protocol: RawProtocol,
    #[serde(default)]
    runtime: RawRuntime,
    #[serde(default)]
    faults: RawFaults,
    #[serde(default)]
    security: RawSecurity,
    /// `[metrics]`: where nodes serve Prometheus metrics (see `daemon::metrics`).
    #[serde(default)]
    metrics: super::metrics::RawMetrics,
    /// `[hooks]`: commands run on role changes (see `daemon::hooks`).
    #[serde(default)]
    hooks: super::hooks::RawHooks,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecurity {
    /// Directory of the key files `statesync keygen` writes (relative: to the config file).
    key_dir: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    id: NodeId,
    addr: String,
    /// The optional UDP admin listener (the Unix socket is always there).
    admin: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    id: NodeId,
    addr: String,
    admin: Option<String>,
    channels: Vec<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubmitters {
    #[serde(default)]
    ids: Vec<NodeId>,
}

/// `[state]`: kept in its own struct (and validated in [`validate_state`]) so that other
/// sections can be added next to it without touching it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    /// Directory of the per-node state files (`<dir>/<id>.epoch`).
    dir: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTiming {
    heartbeat_ms: Option<u64>,
    failover_timeout_ms: Option<u64>,
    drop_timeout_ms: Option<u64>,
    query_timeout_ms: Option<u64>,
    rto_ms: Option<u64>,
    startup_grace_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProtocol {
    cut_policy: Option<String>,
    window_ops: Option<usize>,
    max_datagram_bytes: Option<usize>,
    max_keys_per_channel: Option<u64>,
    max_value_bytes_per_channel: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuntime {
    io: Option<String>,
    #[serde(default)]
    cores: Vec<usize>,
    /// Socket receive buffer request in bytes (0 or absent: the transport default).
    rcvbuf_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFaults {
    drop: Option<f64>,
    duplicate: Option<f64>,
    reorder: Option<f64>,
    delay: Option<f64>,
    delay_us: Option<u64>,
    seed: Option<u64>,
}

// ---------------------------------------------------------------------------------------------
// Validated config.

/// One node's sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    pub id: NodeId,
    /// Data-plane UDP socket.
    pub addr: SocketAddr,
    /// The optional UDP admin listener (JSON requests, see [`AdminConfig`]); every node also
    /// serves the admin protocol on its Unix socket, [`AdminConfig::socket_path`].
    pub admin: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSpec {
    pub node: NodeSpec,
    pub channels: Vec<u32>,
}

/// What kind of node an ID names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// A control unit and its priority index (0 = initial primary).
    ControlUnit {
        index: usize,
    },
    Client,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub heartbeat_ms: u64,
    pub failover_timeout_ms: u64,
    pub drop_timeout_ms: u64,
    pub query_timeout_ms: u64,
    pub rto_ms: u64,
    /// How long a control unit that has never heard a primary waits, from the moment its
    /// socket is open, before it takes over (see `ProtoConfig::startup_grace_us`).
    pub startup_grace_ms: u64,
}

/// The start-up grace when the config names none: ten heartbeats, and at least a second, so
/// that a primary started a little after its standby (or slowed by a busy host) is heard.
pub fn default_startup_grace_ms(heartbeat_ms: u64) -> u64 {
    heartbeat_ms.saturating_mul(10).max(1000)
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat_ms: 10,
            failover_timeout_ms: 50,
            drop_timeout_ms: 100,
            query_timeout_ms: 40,
            rto_ms: 20,
            startup_grace_ms: default_startup_grace_ms(10),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentConfig {
    /// The file it came from (for messages).
    pub path: PathBuf,
    /// Priority order: the first is the initial primary.
    pub control_units: Vec<NodeSpec>,
    pub clients: Vec<ClientSpec>,
    pub submitters: Vec<NodeId>,
    /// `[state] dir`, resolved against the config file's directory: where each control unit
    /// persists the highest epoch it has seen (`<dir>/<id>.epoch`). `None`: nowhere, so a
    /// restarted unit forgets it (the daemon warns at start).
    pub state_dir: Option<PathBuf>,
    pub timing: Timing,
    pub admin: AdminConfig,
    pub cut_policy: CutPolicy,
    pub window_ops: usize,
    pub max_datagram_bytes: usize,
    /// `[protocol] max_keys_per_channel` and `max_value_bytes_per_channel` (absent: no limit).
    pub quota: crate::proto::ChannelQuota,
    pub io: IoChoice,
    pub cores: Vec<usize>,
    pub rcvbuf_bytes: Option<usize>,
    pub faults: FaultConfig,
    /// `[security] key_dir`, resolved against the config file's directory (`None`: no keys;
    /// a node then starts only with `--insecure`).
    pub key_dir: Option<PathBuf>,
    /// `[metrics]`: each node's `/metrics` address (none: no metrics served).
    pub metrics: super::metrics::MetricsConfig,
    /// `[hooks]`: commands run on role changes.
    pub hooks: super::hooks::HooksConfig,
}

/// Reads and validates a config file.
pub fn load(path: impl AsRef<Path>) -> Result<DeploymentConfig, ConfigError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

/// Parses and validates config text; `path` is only used in messages.
pub fn parse(text: &str, path: impl AsRef<Path>) -> Result<DeploymentConfig, ConfigError> {
    parse_with(text, path.as_ref(), Names::Resolve)
}

/// As [`parse`], but every address must be a numeric `IP:PORT`: a host name is an error
/// instead of a lookup. For the config fuzzer (`fuzz_harness::config`), where a name lookup
/// per input would be slow and depend on the machine's resolver.
pub fn parse_offline(text: &str, path: impl AsRef<Path>) -> Result<DeploymentConfig, ConfigError> {
    parse_with(text, path.as_ref(), Names::Refuse)
}

/// Whether a host name in an address is looked up.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Names {
    Resolve,
    Refuse,
}

fn parse_with(text: &str, path: &Path, names: Names) -> Result<DeploymentConfig, ConfigError> {
    let path = path.to_owned();
    let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.clone(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    validate(raw, path.clone(), names).map_err(|message| ConfigError::Invalid { path, message })
}

fn parse_addr(field: &str, s: &str, names: Names) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if names == Names::Refuse {
        return Err(format!(
            "{field}: invalid socket address {s:?} (expected IP:PORT; host names are not looked up here)"
        ));
    }
    // Host names ("localhost:7001") resolve once, at load.
    match s.to_socket_addrs() {
        Ok(mut it) => it
            .next()
            .ok_or_else(|| format!("{field}: {s:?} resolves to no address")),
        Err(e) => Err(format!(
            "{field}: invalid socket address {s:?} (expected IP:PORT): {e}"
        )),
    }
}

/// A limit that is absent (no limit) or at least 1.
fn positive(v: Option<u64>, name: &str) -> Result<u64, String> {
    match v {
        None => Ok(u64::MAX),
        Some(0) => Err(format!(
            "{name}: must be at least 1 (leave it out for no limit)"
        )),
        Some(n) => Ok(n),
    }
}

/// Parses `complete`, `fast` or `weighted:N`.
pub fn parse_cut_policy(s: &str) -> Result<CutPolicy, String> {
    let bad = || format!("protocol.cut_policy: expected complete|fast|weighted:N, got {s:?}");
    match s {
        "complete" => Ok(CutPolicy::Complete),
        "fast" => Ok(CutPolicy::Fast),
        _ => {
            let n = s.strip_prefix("weighted:").ok_or_else(bad)?;
            let max_ops = n.trim().parse::<u64>().map_err(|_| bad())?;
            Ok(CutPolicy::Weighted { max_ops })
        }
    }
}

fn validate(raw: RawConfig, path: PathBuf, names: Names) -> Result<DeploymentConfig, String> {
    if raw.control_units.is_empty() {
        return Err("control_units: empty (at least one [[control_units]] is needed)".into());
    }
    if raw.control_units.len() > 32 {
        return Err(format!(
            "control_units: {} listed, at most 32 are supported",
            raw.control_units.len()
        ));
    }
    // IDs: unique across every node and submitter; 0 means "none" on the wire.
    let mut ids: HashMap<NodeId, String> = HashMap::new();
    let mut claim_id = |id: NodeId, field: String| -> Result<(), String> {
        if id == 0 {
            return Err(format!("{field}: 0 is reserved, use a non-zero id"));
        }
        if let Some(prev) = ids.get(&id) {
            return Err(format!("{field}: id {id} is already used by {prev}"));
        }
        ids.insert(id, field);
        Ok(())
    };
    for (i, n) in raw.control_units.iter().enumerate() {
        claim_id(n.id, format!("control_units[{i}].id"))?;
    }
    for (i, c) in raw.clients.iter().enumerate() {
        claim_id(c.id, format!("clients[{i}].id"))?;
    }
    for (i, &s) in raw.submitters.ids.iter().enumerate() {
        claim_id(s, format!("submitters.ids[{i}]"))?;
    }

    // Sockets: every bound address is distinct.
    let mut addrs: HashMap<SocketAddr, String> = HashMap::new();
    let mut claim_addr = |field: String, s: &str| -> Result<SocketAddr, String> {
        let a = parse_addr(&field, s, names)?;
        if a.port() == 0 {
            return Err(format!(
                "{field}: port 0 is not allowed (peers must know it)"
            ));
        }
        if a.ip().is_unspecified() {
            return Err(format!(
                "{field}: {a} is unspecified; give the address peers reach this node at"
            ));
        }
        if let Some(prev) = addrs.get(&a) {
            return Err(format!("{field}: {a} is already used by {prev}"));
        }
        addrs.insert(a, field);
        Ok(a)
    };
    let mut control_units = Vec::new();
    for (i, n) in raw.control_units.iter().enumerate() {
        control_units.push(NodeSpec {
            id: n.id,
            addr: claim_addr(format!("control_units[{i}].addr"), &n.addr)?,
            admin: n
                .admin
                .as_ref()
                .map(|a| claim_addr(format!("control_units[{i}].admin"), a))
                .transpose()?,
        });
    }
    let mut clients = Vec::new();
    // channel -> index of the owning client
    let mut owner: BTreeMap<u32, usize> = BTreeMap::new();
    for (i, c) in raw.clients.iter().enumerate() {
        let node = NodeSpec {
            id: c.id,
            addr: claim_addr(format!("clients[{i}].addr"), &c.addr)?,
            admin: c
                .admin
                .as_ref()
                .map(|a| claim_addr(format!("clients[{i}].admin"), a))
                .transpose()?,
        };
        if c.channels.is_empty() {
            return Err(format!("clients[{i}].channels: empty"));
        }
        for &ch in &c.channels {
            if let Some(&prev) = owner.get(&ch) {
                return Err(if prev == i {
                    format!("clients[{i}].channels: channel {ch} is listed twice")
                } else {
                    format!(
                        "clients[{i}].channels: channel {ch} is owned twice (also by clients[{prev}])"
                    )
                });
            }
            owner.insert(ch, i);
        }
        clients.push(ClientSpec {
            node,
            channels: c.channels.clone(),
        });
    }
    // Dense numbering 0..N.
    for (expect, (&ch, &i)) in owner.iter().enumerate() {
        if ch as usize != expect {
            return Err(format!(
                "clients[{i}].channels: channel {ch} leaves a gap; channels must be numbered densely from 0 (channel {expect} is missing)"
            ));
        }
    }

    let admin = super::admin::config::validate(&raw.admin, &path, &control_units, &clients)?;

    let d = Timing::default();
    let t = &raw.timing;
    let timing = Timing {
        heartbeat_ms: t.heartbeat_ms.unwrap_or(d.heartbeat_ms),
        failover_timeout_ms: t.failover_timeout_ms.unwrap_or(d.failover_timeout_ms),
        drop_timeout_ms: t.drop_timeout_ms.unwrap_or(d.drop_timeout_ms),
        query_timeout_ms: t.query_timeout_ms.unwrap_or(d.query_timeout_ms),
        rto_ms: t.rto_ms.unwrap_or(d.rto_ms),
        startup_grace_ms: t.startup_grace_ms.unwrap_or(default_startup_grace_ms(
            t.heartbeat_ms.unwrap_or(d.heartbeat_ms),
        )),
    };
    if timing.startup_grace_ms > 3_600_000 {
        return Err(format!(
            "timing.startup_grace_ms: {} ms is more than an hour",
            timing.startup_grace_ms
        ));
    }
    for (field, v) in [
        ("heartbeat_ms", timing.heartbeat_ms),
        ("failover_timeout_ms", timing.failover_timeout_ms),
        ("drop_timeout_ms", timing.drop_timeout_ms),
        ("query_timeout_ms", timing.query_timeout_ms),
        ("rto_ms", timing.rto_ms),
    ] {
        if v == 0 {
            return Err(format!("timing.{field}: must be at least 1"));
        }
        if v > 3_600_000 {
            return Err(format!("timing.{field}: {v} ms is more than an hour"));
        }
    }
    if timing.failover_timeout_ms <= timing.heartbeat_ms {
        return Err(format!(
            "timing.failover_timeout_ms: must exceed heartbeat_ms ({} <= {})",
            timing.failover_timeout_ms, timing.heartbeat_ms
        ));
    }
    if timing.drop_timeout_ms < timing.failover_timeout_ms {
        return Err(format!(
            "timing.drop_timeout_ms: must be at least failover_timeout_ms ({} < {})",
            timing.drop_timeout_ms, timing.failover_timeout_ms
        ));
    }

    let p = &raw.protocol;
    let cut_policy = match &p.cut_policy {
        Some(s) => parse_cut_policy(s)?,
        None => CutPolicy::Complete,
    };
    let window_ops = p.window_ops.unwrap_or(4096);
    if window_ops < 2 {
        return Err(format!(
            "protocol.window_ops: must be at least 2, got {window_ops}"
        ));
    }
    if window_ops > 1 << 24 {
        return Err(format!(
            "protocol.window_ops: must be at most {}, got {window_ops}",
            1 << 24
        ));
    }
    let quota = crate::proto::ChannelQuota {
        max_keys: positive(p.max_keys_per_channel, "protocol.max_keys_per_channel")?,
        max_value_bytes: positive(
            p.max_value_bytes_per_channel,
            "protocol.max_value_bytes_per_channel",
        )?,
    };
    let max_datagram_bytes = p.max_datagram_bytes.unwrap_or(1472);
    if !(512..=crate::wire::MAX_FRAME_BYTES).contains(&max_datagram_bytes) {
        return Err(format!(
            "protocol.max_datagram_bytes: must be within 512..={}, got {max_datagram_bytes}",
            crate::wire::MAX_FRAME_BYTES
        ));
    }

    let state_dir = validate_state(&raw.state, &path)?;

    let io = match &raw.runtime.io {
        Some(s) => s
            .parse::<IoChoice>()
            .map_err(|_| format!("runtime.io: expected auto|uring|mmsg, got {s:?}"))?,
        None => IoChoice::Auto,
    };
    let cores = raw.runtime.cores.clone();

    let f = &raw.faults;
    let mut faults = FaultConfig {
        seed: f.seed.unwrap_or(1),
        delay_us: f.delay_us.unwrap_or(0),
        ..FaultConfig::default()
    };
    for (field, v, slot) in [
        ("drop", f.drop, &mut faults.drop),
        ("duplicate", f.duplicate, &mut faults.duplicate),
        ("reorder", f.reorder, &mut faults.reorder),
        ("delay", f.delay, &mut faults.delay),
    ] {
        let v = v.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&v) {
            return Err(format!(
                "faults.{field}: a probability within 0..=1, got {v}"
            ));
        }
        *slot = v;
    }
    if faults.delay > 0.0 && faults.delay_us == 0 {
        return Err("faults.delay_us: must be set when faults.delay > 0".into());
    }

    let key_dir = match raw.security.key_dir.as_deref() {
        None => None,
        Some("") => return Err("security.key_dir: empty (omit it to run without keys)".into()),
        Some(d) => Some(path.parent().unwrap_or_else(|| Path::new(".")).join(d)),
    };
    let node_addrs: Vec<(NodeId, SocketAddr)> = control_units
        .iter()
        .chain(clients.iter().map(|c| &c.node))
        .map(|n| (n.id, n.addr))
        .collect();
    let metrics = super::metrics::validate_config(&raw.metrics, &node_addrs)?;
    let hooks = super::hooks::validate_config(&raw.hooks)?;
    let cfg = DeploymentConfig {
        path,
        control_units,
        clients,
        submitters: raw.submitters.ids.clone(),
        state_dir,
        timing,
        admin,
        cut_policy,
        window_ops,
        max_datagram_bytes,
        quota,
        io,
        cores,
        rcvbuf_bytes: raw.runtime.rcvbuf_bytes.filter(|b| *b > 0),
        faults,
        key_dir,
        metrics,
        hooks,
    };
    cfg.proto_config()
        .validate()
        .map_err(|e| format!("protocol: {e}"))?;
    Ok(cfg)
}

/// `[state] dir`: a non-empty path; a relative one is taken relative to the directory of the
/// config file (every node reads the same file, so they agree wherever they are started from).
/// The directory itself is created, or found unusable, when a control unit starts.
fn validate_state(raw: &RawState, config_path: &Path) -> Result<Option<PathBuf>, String> {
    let Some(dir) = &raw.dir else {
        return Ok(None);
    };
    if dir.trim().is_empty() {
        return Err("state.dir: empty; name a directory, or leave [state] out".into());
    }
    let dir = Path::new(dir);
    if dir.is_absolute() {
        return Ok(Some(dir.to_owned()));
    }
    let base = config_path.parent().unwrap_or(Path::new(""));
    Ok(Some(base.join(dir)))
}

impl DeploymentConfig {
    /// The file where control unit `id` persists its highest epoch, when `[state] dir` is set.
    pub fn epoch_file(&self, id: NodeId) -> Option<PathBuf> {
        self.state_dir
            .as_ref()
            .map(|d| d.join(format!("{id}.epoch")))
    }

    pub fn topology(&self) -> Topology {
        let channels = self.clients.iter().map(|c| c.channels.len()).sum::<usize>();
        let mut channel_owner = vec![0; channels];
        for c in &self.clients {
            for &ch in &c.channels {
                channel_owner[ch as usize] = c.node.id;
            }
        }
        Topology {
            control_units: self.control_units.iter().map(|n| n.id).collect(),
            clients: self.clients.iter().map(|c| c.node.id).collect(),
            channel_owner,
            submitters: self.submitters.clone(),
        }
    }

    /// The protocol settings every node of this deployment runs with.
    pub fn proto_config(&self) -> ProtoConfig {
        let mut p = ProtoConfig::new(self.topology());
        let t = &self.timing;
        p.heartbeat_interval_us = t.heartbeat_ms * 1000;
        p.failover_timeout_us = t.failover_timeout_ms * 1000;
        p.drop_timeout_us = t.drop_timeout_ms * 1000;
        p.query_timeout_us = t.query_timeout_ms * 1000;
        p.rto_us = t.rto_ms * 1000;
        p.nack_interval_us = p.rto_us / 2;
        p.startup_grace_us = t.startup_grace_ms * 1000;
        // Periodic work at least five times per heartbeat, and never coarser than 2 ms.
        p.tick_us = (p.heartbeat_interval_us / 5).clamp(100, 2_000);
        p.window_ops = self.window_ops;
        p.cut_policy = self.cut_policy;
        p.max_frame_bytes = self.max_datagram_bytes;
        p.quota = self.quota;
        p
    }

    /// The node with this ID, if any.
    pub fn node(&self, id: NodeId) -> Option<(NodeKind, &NodeSpec)> {
        if let Some(index) = self.control_units.iter().position(|n| n.id == id) {
            return Some((NodeKind::ControlUnit { index }, &self.control_units[index]));
        }
        self.clients
            .iter()
            .find(|c| c.node.id == id)
            .map(|c| (NodeKind::Client, &c.node))
    }

    /// Every pair of nodes that talk: control unit with control unit, control unit with
    /// client, submitter with control unit. Each gets its own key.
    pub fn links(&self) -> Vec<(NodeId, NodeId)> {
        let cus: Vec<NodeId> = self.control_units.iter().map(|n| n.id).collect();
        let mut links = Vec::new();
        for (i, &a) in cus.iter().enumerate() {
            links.extend(cus[i + 1..].iter().map(|&b| (a, b)));
            links.extend(self.clients.iter().map(|c| (a, c.node.id)));
            links.extend(self.submitters.iter().map(|&s| (s, a)));
        }
        links
    }

    /// The nodes `id` talks to (and so needs a key for).
    pub fn peers_of(&self, id: NodeId) -> Vec<NodeId> {
        self.links()
            .into_iter()
            .filter_map(|(a, b)| {
                if a == id {
                    Some(b)
                } else {
                    (b == id).then_some(a)
                }
            })
            .collect()
    }

    /// Node `id`'s link keys from `[security] key_dir`, checked to cover every peer it talks
    /// to (`Ok(None)`: the config names no key directory).
    pub fn load_keys(&self, id: NodeId) -> Result<Option<crate::auth::LinkKeys>, String> {
        let Some(dir) = &self.key_dir else {
            return Ok(None);
        };
        let path = crate::auth::LinkKeys::path_in(dir, id);
        let keys = crate::auth::LinkKeys::load(&path, id).map_err(|e| e.to_string())?;
        keys.require(&path, self.peers_of(id))
            .map_err(|e| e.to_string())?;
        Ok(Some(keys))
    }

    /// Every node, control units first.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeSpec> {
        self.control_units
            .iter()
            .chain(self.clients.iter().map(|c| &c.node))
    }

    /// How node `id` opens its data-plane socket; `None` if no such node.
    pub fn transport_config(&self, id: NodeId) -> Option<TransportConfig> {
        let (_, n) = self.node(id)?;
        Some(TransportConfig {
            bind: n.addr,
            io: self.io,
            max_datagram_bytes: self.max_datagram_bytes,
            faults: self.faults,
            rcvbuf_bytes: self
                .rcvbuf_bytes
                .unwrap_or(TransportConfig::default().rcvbuf_bytes),
            ..TransportConfig::default()
        })
    }
}

/// A minimal deployment for unit tests elsewhere: two control units and one client owning
/// channels 0 and 1 (addresses are never bound).
#[cfg(test)]
pub(crate) const TEST_CONFIG: &str = r#"
[[control_units]]
id = 1
addr = "127.0.0.1:1"
admin = "127.0.0.1:2"
[[control_units]]
id = 2
addr = "127.0.0.1:3"
admin = "127.0.0.1:4"
[[clients]]
id = 100
addr = "127.0.0.1:5"
admin = "127.0.0.1:6"
channels = [0, 1]
"#;

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[control_units]]
id = 1
addr = "127.0.0.1:17101"
admin = "127.0.0.1:17001"
[[control_units]]
id = 2
addr = "127.0.0.1:17102"
admin = "127.0.0.1:17002"

[[clients]]
id = 100
addr = "127.0.0.1:17200"
admin = "127.0.0.1:17300"
channels = [0, 1, 2]

[[clients]]
id = 101
addr = "127.0.0.1:17201"
admin = "127.0.0.1:17301"
channels = [3, 4]

[submitters]
ids = [900]
"#;

    fn err(text: &str) -> String {
        match parse(text, "test.toml") {
            Ok(_) => panic!("config was accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    fn assert_err(text: &str, needle: &str) {
        let e = err(text);
        assert!(
            e.contains(needle),
            "error {e:?} does not mention {needle:?}"
        );
        assert!(
            e.starts_with("test.toml"),
            "error {e:?} does not name the file"
        );
    }

    #[test]
    fn good_config_parses() {
        let c = parse(GOOD, "test.toml").unwrap();
        assert_eq!(c.control_units.len(), 2);
        assert_eq!(c.clients.len(), 2);
        let t = c.topology();
        assert_eq!(t.channel_owner, vec![100, 100, 100, 101, 101]);
        assert_eq!(t.submitters, vec![900]);
        let p = c.proto_config();
        assert_eq!(p.heartbeat_interval_us, 10_000);
        assert_eq!(p.cut_policy, CutPolicy::Complete);
        let tc = c.transport_config(101).unwrap();
        assert_eq!(tc.bind, "127.0.0.1:17201".parse().unwrap());
        assert!(c.transport_config(900).is_none());
        assert_eq!(c.node(2).unwrap().0, NodeKind::ControlUnit { index: 1 });
    }

    #[test]
    fn shipped_example_config_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/router-small.toml");
        let c = load(path).unwrap();
        assert_eq!(c.control_units.len(), 2);
        assert_eq!(c.clients.len(), 3);
        assert_eq!(c.topology().channels(), 8);
        assert_eq!(c.submitters, vec![900]);
    }

    #[test]
    fn state_dir_is_resolved_against_the_config_file() {
        let c = parse(GOOD, "/etc/ss/lab.toml").unwrap();
        assert_eq!(c.state_dir, None);
        assert_eq!(c.epoch_file(1), None);
        let rel = format!("{GOOD}\n[state]\ndir = \"state\"\n");
        let c = parse(&rel, "/etc/ss/lab.toml").unwrap();
        assert_eq!(c.state_dir, Some(PathBuf::from("/etc/ss/state")));
        assert_eq!(
            c.epoch_file(2),
            Some(PathBuf::from("/etc/ss/state/2.epoch"))
        );
        let abs = format!("{GOOD}\n[state]\ndir = \"/var/lib/ss\"\n");
        let c = parse(&abs, "lab.toml").unwrap();
        assert_eq!(c.epoch_file(1), Some(PathBuf::from("/var/lib/ss/1.epoch")));
        assert_err(&format!("{GOOD}\n[state]\ndir = \" \"\n"), "state.dir");
        assert_err(&format!("{GOOD}\n[state]\npath = \"x\"\n"), "path");
    }

    #[test]
    fn optional_sections_parse() {
        let text = format!(
            "{GOOD}\n[timing]\nheartbeat_ms = 5\nfailover_timeout_ms = 30\n[protocol]\ncut_policy = \"weighted:16\"\nwindow_ops = 64\nmax_datagram_bytes = 9000\n[runtime]\nio = \"mmsg\"\ncores = [1]\n[faults]\ndrop = 0.1\nseed = 7\n"
        );
        let c = parse(&text, "t").unwrap();
        assert_eq!(c.cut_policy, CutPolicy::Weighted { max_ops: 16 });
        assert_eq!(c.io, IoChoice::Mmsg);
        assert_eq!(c.cores, vec![1]);
        assert_eq!(c.faults.drop, 0.1);
        assert_eq!(c.faults.seed, 7);
        assert_eq!(c.proto_config().tick_us, 1_000);
        assert_eq!(c.proto_config().startup_grace_us, 1_000_000);
        assert_eq!(c.transport_config(1).unwrap().max_datagram_bytes, 9000);
        let c = parse(&format!("{GOOD}\n[timing]\nstartup_grace_ms = 250\n"), "t").unwrap();
        assert_eq!(c.proto_config().startup_grace_us, 250_000);
        // Test aids stay off the config file: no key can plant a bug.
        assert!(
            parse(
                &format!("{GOOD}\n[protocol]\ninject_bug = \"discard-committed\"\n"),
                "t"
            )
            .is_err()
        );
        assert_eq!(
            parse(GOOD, "t").unwrap().proto_config().inject,
            crate::proto::InjectedBug::None
        );
    }

    #[test]
    fn channel_owned_twice() {
        let text = GOOD.replace("channels = [3, 4]", "channels = [3, 2]");
        assert_err(&text, "clients[1].channels: channel 2 is owned twice");
    }

    #[test]
    fn channels_not_dense() {
        let text = GOOD.replace("channels = [3, 4]", "channels = [3, 5]");
        assert_err(&text, "clients[1].channels: channel 5 leaves a gap");
    }

    #[test]
    fn empty_control_units() {
        let text = GOOD.replace("[[control_units]]", "[[ignored]]");
        // Unknown table first: rejected by name.
        assert_err(&text, "ignored");
        let only_clients = &GOOD[GOOD.find("[[clients]]").unwrap()..];
        assert_err(only_clients, "control_units: empty");
    }

    #[test]
    fn failover_timeout_not_above_heartbeat() {
        let text = format!("{GOOD}\n[timing]\nheartbeat_ms = 20\nfailover_timeout_ms = 20\n");
        assert_err(
            &text,
            "timing.failover_timeout_ms: must exceed heartbeat_ms",
        );
    }

    #[test]
    fn bad_cut_policy() {
        let text = format!("{GOOD}\n[protocol]\ncut_policy = \"weighted:x\"\n");
        assert_err(
            &text,
            "protocol.cut_policy: expected complete|fast|weighted:N",
        );
        let text = format!("{GOOD}\n[protocol]\ncut_policy = \"slow\"\n");
        assert_err(&text, "protocol.cut_policy");
    }

    #[test]
    fn unknown_key_named() {
        let text = format!("{GOOD}\n[timing]\nheartbeat = 5\n");
        assert_err(&text, "heartbeat");
        let text = GOOD.replace("id = 100", "id = 100\nport = 3");
        assert_err(&text, "port");
    }

    #[test]
    fn bad_address_named() {
        let text = GOOD.replace("127.0.0.1:17300", "nonsense");
        assert_err(&text, "clients[0].admin: invalid socket address");
        let text = GOOD.replace("127.0.0.1:17300", "127.0.0.1:17101");
        assert_err(&text, "clients[0].admin: 127.0.0.1:17101 is already used");
    }

    #[test]
    fn duplicate_and_reserved_ids() {
        let text = GOOD.replace("id = 101", "id = 2");
        assert_err(
            &text,
            "clients[1].id: id 2 is already used by control_units[1].id",
        );
        let text = GOOD.replace("ids = [900]", "ids = [100]");
        assert_err(&text, "submitters.ids[0]: id 100");
        let text = GOOD.replace("id = 1\n", "id = 0\n");
        assert_err(&text, "control_units[0].id: 0 is reserved");
    }

    #[test]
    fn bad_numbers_named() {
        let text = format!("{GOOD}\n[protocol]\nwindow_ops = 1\n");
        assert_err(&text, "protocol.window_ops");
        let text = format!("{GOOD}\n[protocol]\nmax_keys_per_channel = 0\n");
        assert_err(&text, "protocol.max_keys_per_channel");
        let text = format!("{GOOD}\n[protocol]\nmax_datagram_bytes = 100\n");
        assert_err(&text, "protocol.max_datagram_bytes");
        let text = format!("{GOOD}\n[faults]\ndrop = 1.5\n");
        assert_err(&text, "faults.drop");
        let text = format!("{GOOD}\n[runtime]\nio = \"epoll\"\n");
        assert_err(&text, "runtime.io");
        let text = format!("{GOOD}\n[timing]\ndrop_timeout_ms = 20\n");
        assert_err(&text, "timing.drop_timeout_ms");
        let text = GOOD.replace("channels = [3, 4]", "channels = []");
        assert_err(&text, "clients[1].channels: empty");
    }

    #[test]
    fn wrong_type_named() {
        let text = GOOD.replace("id = 101", "id = \"x\"");
        assert_err(&text, "id");
    }
}
