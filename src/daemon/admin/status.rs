//! The `status` request and reply as types, shared by the daemon that builds the reply, by
//! `statesync status` (one node, or `--cluster`) and by the drill that reads it.
//!
//! A reply is never cut: it holds the channels from the request's `channels_from` on, as many
//! as fit the reply's size limit (one datagram over UDP, no practical limit on the Unix
//! socket), and names in `next_channel` the first channel it left out; [`fetch`] asks again
//! from there until it has them all.

use super::{AdminStats, AdminToken, RequestError, Target, request};
use crate::daemon::Clock;
use crate::daemon::metrics::LagTrack;
use crate::proto::Node;
use crate::proto::{ControlUnit, Counters, NodeId, OpId, Role, SectionMask};
use crate::runtime::node::NodeRunner;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

/// The version of [`StatusReply`] this build writes. 1: the untyped replies before it (no
/// `schema_version` field); 2: typed, paged (`next_channel`), with lags, peers and `sync_set`.
pub const SCHEMA_VERSION: u32 = 2;

/// How often the lag trackers of [`Lags`] sample the node: the lags in time are at most this
/// much too young. With more than 1,000 channels, every [`LAG_SAMPLE_US_PER_CHANNEL`] times
/// the channel count instead, so that sampling (on the event loop) stays a bounded share of it.
pub const LAG_SAMPLE_US: u64 = 10_000;
pub const LAG_SAMPLE_US_PER_CHANNEL: u64 = 10;

/// Most pages [`fetch`] asks for before giving up (a node whose channel count keeps changing,
/// or a server that never finishes).
const MAX_PAGES: usize = 100_000;

fn is_false(b: &bool) -> bool {
    !*b
}

fn schema_v1() -> u32 {
    1
}

/// `{"cmd":"status", ...}`. Every field is optional: `{"cmd":"status"}` asks for everything
/// from channel 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRequest {
    /// The schema the asker reads (informative: the reply says which it is written in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<u32>,
    /// First channel wanted (the previous reply's `next_channel`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels_from: Option<u32>,
    /// Largest reply wanted, in bytes: smaller pages than the listener's limit (at least one
    /// channel comes back per page whatever it says).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_bytes: Option<usize>,
}

impl StatusRequest {
    /// The request as JSON, `"cmd":"status"` included.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or_else(|_| serde_json::json!({}));
        if let Some(o) = v.as_object_mut() {
            o.insert("cmd".into(), "status".into());
        }
        v
    }
}

/// What kind of node answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    ControlUnit,
    Client,
}

impl NodeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::ControlUnit => "control_unit",
            NodeKind::Client => "client",
        }
    }
}

/// A control unit's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleName {
    Primary,
    Standby,
    Candidate,
    Joining,
}

impl RoleName {
    pub fn as_str(self) -> &'static str {
        match self {
            RoleName::Primary => "primary",
            RoleName::Standby => "standby",
            RoleName::Candidate => "candidate",
            RoleName::Joining => "joining",
        }
    }
}

impl From<Role> for RoleName {
    fn from(r: Role) -> RoleName {
        match r {
            Role::Primary => RoleName::Primary,
            Role::Standby => RoleName::Standby,
            Role::Candidate => RoleName::Candidate,
            Role::Joining => RoleName::Joining,
        }
    }
}

impl std::fmt::Display for RoleName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A control unit's last failover, as Unix microseconds (`null`: none, or not yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverTimes {
    pub started_unix_us: Option<u64>,
    pub finished_unix_us: Option<u64>,
    pub last_primary_rx_unix_us: Option<u64>,
}

/// What the last failover this node led decided for one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelFailover {
    pub epoch: u64,
    /// `in_sync`, `behind`, `ahead` or `unknown`.
    pub resolution: String,
    pub client_op: Option<u64>,
    pub cut: u64,
    pub replay_sections: SectionMask,
    pub replay_bytes: u64,
    pub full_replay_bytes: u64,
    pub resent_ops: u64,
    pub resent_bytes: u64,
}

/// One channel. Control units fill the positions, digests and lags; clients `applied`,
/// `unknown` and `public_digest`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelStatus {
    pub channel: u32,
    /// Primary: next op ID to assign. Other roles: one above the highest applied op.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_op: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_acked: Option<u64>,
    /// Highest op applied (a primary: the highest assigned).
    pub applied: u64,
    /// Highest op held (a standby: received, maybe not yet applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<u64>,
    /// Client: the channel's state is unknown (a full replay is due).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown: Option<bool>,
    pub public_digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_digest: Option<String>,
    /// Which epoch assigned which ops: `[epoch, first_op]` per segment, oldest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<[u64; 2]>>,
    /// What a full replay of the channel would put on the wire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failover: Option<ChannelFailover>,
    /// Primary: ops assigned and not yet committed (some unit of the sync set has not applied
    /// them). Other control units: ops held and not yet applied (waiting for a gap to fill).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_ops: Option<u64>,
    /// How long the oldest op counted in `lag_ops` has waited, in ms (sampled every
    /// [`LAG_SAMPLE_US`]; absent where the node keeps no lag tracker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_ms: Option<u64>,
    /// Primary: ops assigned that the channel's client has not acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_lag_ops: Option<u64>,
    /// Primary: how long the oldest op counted in `client_lag_ops` has waited, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_lag_ms: Option<u64>,
}

impl ChannelStatus {
    /// The highest op assigned as this node sees it (a primary's `next_op - 1`).
    pub fn top(&self) -> u64 {
        self.next_op.map_or(self.applied, |n| n.saturating_sub(1))
    }
}

/// Another node this one talks to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub id: NodeId,
    /// `None` where the answering node does not know (a client knows only who it heard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<NodeKind>,
    /// How long ago it last sent a datagram that passed the address (and authentication)
    /// checks, in ms; `None`: never, in this life of the node.
    pub last_heard_ms: Option<u64>,
    /// A primary's view of a control unit: in its sync set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_sync_set: Option<bool>,
}

/// The protocol core's counters (`proto::Counters`, every field under its own name), and
/// their sum of rejections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CounterStatus {
    #[serde(flatten)]
    pub core: Counters,
    pub rejected: u64,
}

impl From<&Counters> for CounterStatus {
    fn from(c: &Counters) -> CounterStatus {
        CounterStatus {
            core: *c,
            rejected: c.rejected(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Submits {
    pub accepted: u64,
    pub rejected: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TransportStatus {
    pub io: String,
    pub rejected_unknown_addr: u64,
    pub rejected_oversize: u64,
    pub datagrams_sent: u64,
    pub datagrams_received: u64,
}

/// Frame authentication: `enabled` false (and every count 0) without keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthStatus {
    pub enabled: bool,
    pub sealed: u64,
    pub delivered: u64,
    pub openers: u64,
    pub hellos_tx: u64,
    pub hellos_rx: u64,
    pub sessions_opened: u64,
    pub rejected: u64,
    pub rejected_malformed: u64,
    pub rejected_unauthenticated: u64,
    pub rejected_no_key: u64,
    pub rejected_sender_mismatch: u64,
    pub rejected_stale_session: u64,
    pub rejected_replay: u64,
    pub rejected_bad_tag: u64,
}

/// The admin listeners' counters ([`AdminStats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AdminCounters {
    pub requests: u64,
    pub malformed: u64,
    pub failed: u64,
    pub refused_peer: u64,
    pub refused_token: u64,
    pub refused_mac: u64,
    pub refused_stale: u64,
    pub refused_replay: u64,
    pub refused_size: u64,
    pub connections_dropped: u64,
}

impl From<&AdminStats> for AdminCounters {
    fn from(s: &AdminStats) -> AdminCounters {
        AdminCounters {
            requests: s.requests,
            malformed: s.malformed,
            failed: s.failed,
            refused_peer: s.refused_peer,
            refused_token: s.refused_token,
            refused_mac: s.refused_mac,
            refused_stale: s.refused_stale,
            refused_replay: s.refused_replay,
            refused_size: s.refused_size,
            connections_dropped: s.connections_dropped,
        }
    }
}

/// The reply to `status`: one page of it, or (after [`fetch`]) all of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReply {
    pub ok: bool,
    /// [`SCHEMA_VERSION`] of the node that wrote it (1: a node older than this field).
    #[serde(default = "schema_v1")]
    pub schema_version: u32,
    pub id: NodeId,
    pub kind: NodeKind,
    /// Control units only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<RoleName>,
    pub epoch: u64,
    /// Control units: the highest epoch taken or followed, persisted across restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub highest_epoch: Option<u64>,
    /// Control units: a standby that may take over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eligible: Option<bool>,
    /// Control units: an alarm. The primary with this ID is heard only through frames that
    /// fail authentication (the keys differ), so this standby withholds its takeover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_mismatch: Option<NodeId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<FailoverTimes>,
    /// A primary: bit i set when control unit i (config order) is in the sync set. Other
    /// roles: what this unit last held as its own sync set (not meaningful).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_mask: Option<u32>,
    /// A primary: the IDs of the control units in its sync set, in config order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_set: Option<Vec<NodeId>>,
    /// Clients: the primary followed (absent: none known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<NodeId>,
    /// Channels the node has in all (its own, for a client).
    #[serde(default)]
    pub channels_total: u32,
    /// The first channel ID asked for: `channels` holds those from it on.
    #[serde(default)]
    pub channels_from: u32,
    /// The first channel left out of this page: ask again with `channels_from` set to it.
    /// Absent: this page ends the list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_channel: Option<u32>,
    /// Schema 1 only: channels cut to fit a size limit (a schema-2 node pages instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels_truncated: Option<u64>,
    pub channels: Vec<ChannelStatus>,
    #[serde(default)]
    pub peers: Vec<PeerStatus>,
    #[serde(default)]
    pub counters: CounterStatus,
    /// Control units only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submits: Option<Submits>,
    #[serde(default)]
    pub now_unix_us: u64,
    #[serde(default)]
    pub uptime_us: u64,
    #[serde(default)]
    pub transport: TransportStatus,
    #[serde(default)]
    pub auth: AuthStatus,
    #[serde(default)]
    pub admin: AdminCounters,
    /// Set by [`fetch`], never by a node: the status was assembled from several replies.
    #[serde(default, skip_serializing_if = "is_false")]
    pub assembled: bool,
}

impl StatusReply {
    /// `primary`, `standby`, `candidate`, `joining`, or `client`.
    pub fn role_str(&self) -> &'static str {
        match (self.kind, self.role) {
            (NodeKind::Client, _) => "client",
            (_, Some(r)) => r.as_str(),
            (_, None) => "?",
        }
    }

    pub fn is_primary(&self) -> bool {
        self.role == Some(RoleName::Primary)
    }

    /// The channel with this ID, if the reply holds it.
    pub fn channel(&self, ch: u32) -> Option<&ChannelStatus> {
        // Channels come in ID order: a control unit's are 0..n, so try the index first.
        match self.channels.get(ch as usize) {
            Some(c) if c.channel == ch => Some(c),
            _ => self.channels.iter().find(|c| c.channel == ch),
        }
    }

    /// Whether control unit `id` is in this primary's sync set.
    pub fn in_sync_set(&self, id: NodeId) -> bool {
        self.sync_set.as_ref().is_some_and(|s| s.contains(&id))
    }
}

// ---------------------------------------------------------------------------------------------
// Server side.

/// Per channel, when ops were first seen, for the lags in time: sampled by the admin poll every
/// [`LAG_SAMPLE_US`] (control units only).
#[derive(Debug, Default)]
pub struct Lags {
    next_us: u64,
    /// Per channel: the commit (or apply) lag and the client lag trackers.
    chans: Vec<(LagTrack, LagTrack)>,
    /// Per channel, the ages in µs at the last sample: (commit or apply lag, client lag).
    ages: Vec<(u64, u64)>,
}

impl Lags {
    /// Samples the node's positions, at most once per [`LAG_SAMPLE_US`] (longer with many
    /// channels).
    pub fn update(&mut self, runner: &NodeRunner, now_us: u64) {
        if now_us < self.next_us {
            return;
        }
        let Some(cu) = runner.machine.as_cu() else {
            self.next_us = u64::MAX;
            return;
        };
        let n = cu.config().topology.channels();
        self.next_us = now_us + LAG_SAMPLE_US.max(n as u64 * LAG_SAMPLE_US_PER_CHANNEL);
        self.chans.resize_with(n, Default::default);
        self.ages.resize(n, (0, 0));
        for ch in 0..n {
            let (top, done, client) = lag_positions(cu, ch as u32);
            let (a, b) = &mut self.chans[ch];
            let age = a.update(top, done, now_us);
            let client_age = client.map_or(0, |acked| b.update(top, acked, now_us));
            self.ages[ch] = (age, client_age);
        }
    }

    fn ages_ms(&self, ch: u32) -> Option<(u64, u64)> {
        self.ages
            .get(ch as usize)
            .map(|&(a, b)| (a.div_ceil(1000), b.div_ceil(1000)))
    }
}

/// (top, done, client acked): a primary's highest op assigned, its commit watermark and its
/// client's ack; another role's highest op held, its highest applied, and no client.
fn lag_positions(cu: &ControlUnit, ch: u32) -> (u64, u64, Option<u64>) {
    if cu.role() == Role::Primary {
        let top = cu.next_op(ch).saturating_sub(1);
        (top, cu.commit_watermark(ch), Some(cu.client_acked(ch)))
    } else {
        let (applied, held) = cu.standby_position(ch);
        (held.max(applied), applied, None)
    }
}

pub fn hex_digest(d: u64) -> String {
    format!("{d:016x}")
}

/// A resolution as status and the dry run name it, with the client's op where it has one.
pub fn resolution_name(r: crate::proto::Resolution, cut: u64) -> (&'static str, Option<u64>) {
    use crate::proto::Resolution;
    match r {
        Resolution::Behind { client_op } if client_op == cut => ("in_sync", Some(client_op)),
        Resolution::Behind { client_op } => ("behind", Some(client_op)),
        Resolution::Ahead { client_op } => ("ahead", Some(client_op)),
        Resolution::Unknown => ("unknown", None),
    }
}

fn channel_failover(f: crate::proto::ChannelFailover) -> ChannelFailover {
    let (resolution, client_op) = resolution_name(f.resolution, f.cut);
    ChannelFailover {
        epoch: f.epoch,
        resolution: resolution.to_owned(),
        client_op,
        cut: f.cut,
        replay_sections: f.replay_sections,
        replay_bytes: f.replay_bytes,
        full_replay_bytes: f.full_replay_bytes,
        resent_ops: f.resent_ops,
        resent_bytes: f.resent_bytes,
    }
}

fn cu_channel(cu: &ControlUnit, ch: u32, lags: Option<&Lags>) -> ChannelStatus {
    let primary = cu.role() == Role::Primary;
    let (applied, held) = if primary {
        let top = cu.next_op(ch) - 1;
        (top, top)
    } else {
        cu.standby_position(ch)
    };
    let state = cu.state(ch);
    let (top, done, client) = lag_positions(cu, ch);
    let ages = lags.and_then(|l| l.ages_ms(ch));
    ChannelStatus {
        channel: ch,
        next_op: Some(cu.next_op(ch)),
        commit: Some(cu.commit_watermark(ch)),
        client_acked: Some(cu.client_acked(ch)),
        applied,
        held: Some(held),
        unknown: None,
        public_digest: hex_digest(state.map_or(0, |s| s.public_digest())),
        full_digest: Some(hex_digest(state.map_or(0, |s| s.full_digest()))),
        history: Some(
            cu.history(ch)
                .segments()
                .map(|(e, s)| [e.get(), s.get()])
                .collect(),
        ),
        state_bytes: Some(state.map_or(0, |s| s.wire_bytes(crate::proto::SectionMask::ALL))),
        last_failover: cu.last_failover(ch).map(channel_failover),
        lag_ops: Some(top.saturating_sub(done)),
        lag_ms: ages.map(|a| if top > done { a.0 } else { 0 }),
        client_lag_ops: client.map(|acked| top.saturating_sub(acked)),
        client_lag_ms: client
            .zip(ages)
            .map(|(acked, a)| if top > acked { a.1 } else { 0 }),
    }
}

fn client_channel(c: &crate::proto::Client, ch: u32) -> ChannelStatus {
    ChannelStatus {
        channel: ch,
        applied: c.applied(ch).map_or(0, OpId::get),
        unknown: Some(c.is_unknown(ch)),
        public_digest: hex_digest(c.state(ch).map_or(0, |s| s.public_digest())),
        ..Default::default()
    }
}

fn since_ms(now_us: u64, t: u64) -> u64 {
    now_us.saturating_sub(t) / 1000
}

/// Everything but the channels; `channels` is empty and `channels_total` set.
fn header(
    runner: &NodeRunner,
    clock: &Clock,
    now_us: u64,
    stats: &AdminStats,
) -> (StatusReply, Vec<u32>) {
    let heard: std::collections::HashMap<NodeId, u64> = runner.peers_last_rx_us().collect();
    let heard_ms = |id: NodeId| heard.get(&id).map(|&t| since_ms(now_us, t));
    let a = runner.auth_stats();
    let auth = match a {
        None => AuthStatus::default(),
        Some(a) => AuthStatus {
            enabled: true,
            sealed: a.sealed,
            delivered: a.delivered,
            openers: a.openers,
            hellos_tx: a.hellos_tx,
            hellos_rx: a.hellos_rx,
            sessions_opened: a.sessions_opened,
            rejected: a.rejected(),
            rejected_malformed: a.rejected_malformed,
            rejected_unauthenticated: a.rejected_unauthenticated,
            rejected_no_key: a.rejected_no_key,
            rejected_sender_mismatch: a.rejected_sender_mismatch,
            rejected_stale_session: a.rejected_stale_session,
            rejected_replay: a.rejected_replay,
            rejected_bad_tag: a.rejected_bad_tag,
        },
    };
    let ts = runner.transport.stats();
    let mut reply = StatusReply {
        ok: true,
        schema_version: SCHEMA_VERSION,
        id: runner.machine.id(),
        kind: NodeKind::Client,
        role: None,
        epoch: 0,
        highest_epoch: None,
        eligible: None,
        key_mismatch: None,
        failover: None,
        sync_mask: None,
        sync_set: None,
        primary: None,
        channels_total: 0,
        channels_from: 0,
        next_channel: None,
        channels_truncated: None,
        channels: Vec::new(),
        peers: Vec::new(),
        counters: CounterStatus::from(runner.machine.counters()),
        submits: None,
        now_unix_us: clock.to_unix_us(now_us),
        uptime_us: now_us.saturating_sub(Clock::ORIGIN_US),
        transport: TransportStatus {
            io: runner.transport.kind().to_string(),
            rejected_unknown_addr: runner.rejected_unknown_addr,
            rejected_oversize: runner.rejected_oversize,
            datagrams_sent: ts.datagrams_sent,
            datagrams_received: ts.datagrams_received,
        },
        auth,
        admin: AdminCounters::from(stats),
        assembled: false,
    };
    let channel_ids: Vec<u32> = match &runner.machine {
        Node::Cu(cu) => {
            let unix = |t: u64| clock.to_unix_us(t);
            let t = cu.timing;
            let topo = &cu.config().topology;
            let primary = cu.role() == Role::Primary;
            let mask = cu.sync_mask();
            let in_set = |i: usize| i < 32 && mask & (1 << i) != 0;
            reply.kind = NodeKind::ControlUnit;
            reply.role = Some(cu.role().into());
            reply.epoch = cu.epoch();
            reply.highest_epoch = Some(cu.highest_epoch());
            reply.eligible = Some(cu.is_eligible());
            reply.key_mismatch = cu.key_mismatch();
            // A failover never starts at time 0: the clock starts at `Clock::ORIGIN_US`.
            reply.failover = Some(if t.started_us == 0 {
                FailoverTimes::default()
            } else {
                FailoverTimes {
                    started_unix_us: Some(unix(t.started_us)),
                    finished_unix_us: t.finished_us.map(unix),
                    last_primary_rx_unix_us: (t.last_primary_rx_us != 0)
                        .then(|| unix(t.last_primary_rx_us)),
                }
            });
            reply.sync_mask = Some(mask);
            reply.sync_set = primary.then(|| {
                (topo.control_units.iter().enumerate())
                    .filter(|&(i, _)| in_set(i))
                    .map(|(_, &id)| id)
                    .collect()
            });
            reply.submits = Some(Submits {
                accepted: cu.counters.submits_accepted,
                rejected: cu.counters.submits_rejected,
            });
            let cus = topo.control_units.iter().enumerate();
            reply.peers = cus
                .filter(|&(_, &id)| id != cu.id)
                .map(|(i, &id)| PeerStatus {
                    id,
                    kind: Some(NodeKind::ControlUnit),
                    last_heard_ms: heard_ms(id),
                    in_sync_set: primary.then(|| in_set(i)),
                })
                .chain(topo.clients.iter().map(|&id| PeerStatus {
                    id,
                    kind: Some(NodeKind::Client),
                    last_heard_ms: heard_ms(id),
                    in_sync_set: None,
                }))
                .collect();
            (0..topo.channels() as u32).collect()
        }
        Node::Client(c) => {
            reply.epoch = c.epoch();
            reply.primary = c.primary();
            let mut ids: Vec<NodeId> = heard.keys().copied().collect();
            ids.sort_unstable();
            reply.peers = ids
                .into_iter()
                .map(|id| PeerStatus {
                    id,
                    kind: None,
                    last_heard_ms: heard_ms(id),
                    in_sync_set: None,
                })
                .collect();
            c.channels().collect()
        }
    };
    reply.channels_total = channel_ids.len() as u32;
    (reply, channel_ids)
}

fn json_len<T: Serialize>(v: &T) -> usize {
    serde_json::to_vec(v).map_or(usize::MAX, |b| b.len())
}

/// One page of the node's status: the channels from `req.channels_from` on, as many as keep
/// the reply within `limit` bytes (and `req.page_bytes`), at least one; `next_channel` names
/// the first left out. `lags`: the node's lag trackers (`None`: no lags in time).
pub fn build(
    runner: &NodeRunner,
    clock: &Clock,
    now_us: u64,
    stats: &AdminStats,
    lags: Option<&Lags>,
    req: &StatusRequest,
    limit: usize,
) -> StatusReply {
    let limit = req.page_bytes.map_or(limit, |p| p.min(limit));
    let from = req.channels_from.unwrap_or(0);
    let (mut reply, ids) = header(runner, clock, now_us, stats);
    reply.channels_from = from;
    let start = ids.partition_point(|&c| c < from);
    let wanted = &ids[start..];
    // The header's size with the longest `next_channel`, then each channel and its comma.
    reply.next_channel = Some(u32::MAX);
    let mut used = json_len(&reply);
    reply.next_channel = None;
    let make = |ch: u32| match &runner.machine {
        Node::Cu(cu) => cu_channel(cu, ch, lags),
        Node::Client(c) => client_channel(c, ch),
    };
    for (i, &ch) in wanted.iter().enumerate() {
        let c = make(ch);
        let len = json_len(&c) + 1;
        if i > 0 && used.saturating_add(len) > limit {
            reply.next_channel = Some(ch);
            break;
        }
        used = used.saturating_add(len);
        reply.channels.push(c);
    }
    reply
}

// ---------------------------------------------------------------------------------------------
// Client side.

/// Why [`fetch`] has no status.
#[derive(Debug, Clone, PartialEq)]
pub enum FetchError {
    /// No reply: nobody listens, permission to connect denied, a timeout.
    Unreachable(String),
    /// The node answered `{"ok":false,...}` (the reply as it came).
    Refused { target: String, reply: Value },
    /// A reply that is not a status, or pages that do not fit together.
    Bad(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Unreachable(e) | FetchError::Bad(e) => f.write_str(e),
            FetchError::Refused { target, reply } => write!(
                f,
                "{target}: {}",
                reply
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("refused")
            ),
        }
    }
}

/// Asks `target` for its whole status, page by page (`next_channel`), each page within
/// `timeout`; over UDP with `token` when given (without it a node answers no status larger
/// than the request).
pub fn fetch(
    target: &Target,
    token: Option<&AdminToken>,
    timeout: Duration,
) -> Result<StatusReply, FetchError> {
    fetch_with(target, token, timeout, None)
}

/// [`fetch`] asking for pages of at most `page_bytes` bytes.
pub fn fetch_with(
    target: &Target,
    token: Option<&AdminToken>,
    timeout: Duration,
    page_bytes: Option<usize>,
) -> Result<StatusReply, FetchError> {
    let mut req = StatusRequest {
        schema_version: Some(SCHEMA_VERSION),
        channels_from: None,
        page_bytes,
    };
    let mut all: Option<StatusReply> = None;
    for page in 0..MAX_PAGES {
        let json = req.to_json();
        let v = request(target, &json, token, timeout).map_err(|e| {
            FetchError::Unreachable(match (&e, target) {
                // The generic message's hint about UDP tokens does not apply here.
                (RequestError::Timeout { timeout, .. }, Target::Unix(_)) => {
                    format!("no reply from {target} within {timeout:?} (node stopped or busy?)")
                }
                _ => e.to_string(),
            })
        })?;
        if v.get("ok") == Some(&Value::Bool(false)) {
            return Err(FetchError::Refused {
                target: target.to_string(),
                reply: v,
            });
        }
        let r = StatusReply::deserialize(&v)
            .map_err(|e| FetchError::Bad(format!("{target}: not a status reply: {e}")))?;
        let next = r.next_channel;
        all = Some(match all {
            None => r,
            Some(mut a) => {
                if a.id != r.id || a.kind != r.kind {
                    return Err(FetchError::Bad(format!(
                        "{target}: the node changed while its status was read (node {} then {})",
                        a.id, r.id
                    )));
                }
                a.channels.extend(r.channels);
                a.assembled = true;
                a.next_channel = None;
                a
            }
        });
        match next {
            None => return all.ok_or_else(|| FetchError::Bad(format!("{target}: no reply"))),
            Some(n) if n <= req.channels_from.unwrap_or(0) => {
                return Err(FetchError::Bad(format!(
                    "{target}: status pages do not advance (page {page}: next_channel {n})"
                )));
            }
            Some(n) => req.channels_from = Some(n),
        }
    }
    Err(FetchError::Bad(format!(
        "{target}: status pages do not end"
    )))
}

/// A status reply from its JSON; an `{"ok":false}` reply is an error naming its `error`.
pub fn parse_reply(v: &Value) -> Result<StatusReply, String> {
    if v.get("ok") == Some(&Value::Bool(false)) {
        return Err(v
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("refused")
            .to_owned());
    }
    StatusReply::deserialize(v).map_err(|e| format!("not a status reply: {e}"))
}
