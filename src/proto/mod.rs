//! Sans-IO protocol core: control units (primary and standby roles) and clients.
//!
//! Nothing here touches a socket, a thread or a clock. Callers feed datagrams and the current
//! time in (`handle_datagram`, `handle_timeout`), and take datagrams (`poll_transmit`, encoded
//! into a caller-owned buffer, many messages per frame), the next wake-up time (`poll_timeout`)
//! and events (`poll_event`) out. The simulator and the production runtime drive the same code.

pub mod bulk;
pub mod client;
pub mod control;
pub mod history;
pub mod ids;
pub mod node;
mod prefetch;
pub mod ring;
pub mod state;
mod table;

pub use client::Client;
pub use control::{ChannelFailover, ControlUnit, FailoverPreview, RestoreError, SubmitError};
pub use history::{OpStatus, StatusCounts};
pub use ids::{Epoch, OpId, SectionMask};
pub use node::Node;
pub use state::ChannelState;

/// Node identifier: a control unit or a client. It is the frame header's `sender`.
pub type NodeId = u32;

/// What the cut policy does with ops a client never acknowledged, at a failover [0076].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutPolicy {
    /// Keep every op the standby holds and send the missing ones to the client.
    Complete,
    /// Discard every op the client has not applied: fastest recovery.
    Fast,
    /// Keep at most `max_ops` ops beyond what the client applied, per channel.
    Weighted { max_ops: u64 },
}

/// Deliberate bugs, planted to prove that a check can fail: the simulator, `churn`, `drill`
/// and the daemons each take `--inject-bug NAME` on the command line (never from a config
/// file). Each variant names the check that must catch it. Never set in production.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum InjectedBug {
    #[default]
    None,
    /// The standby applies an update as soon as it arrives, without waiting for the ack.
    StandbyApplyBeforeAck,
    /// At a failover the new primary discards the last op the standby applied (committed)
    /// on every channel.
    DiscardCommittedTrailing,
    /// A selective replay leaves out the highest marked section.
    SkipReplaySection,
    /// Clients accept frames from a lower epoch.
    AcceptStaleEpoch,
    /// The standby skips the content of every 500th op it applies (its op position still
    /// advances): a replica silently missing a committed change.
    StandbySkipApply,
    /// `churn` only: the load generator drops the timed changes of 1 in 1,009 keys after
    /// counting them as generated.
    DropChange,
    /// Split brain: a primary that hears a higher epoch keeps acting as primary.
    TwoPrimaries,
    /// A bound overrun: a configured limit is not enforced.
    OverrunBound,
    /// The old per-client rule: a client heartbeat flagged NEEDS_TRANSFER (some channel has
    /// no history) makes the primary replay every channel of that client in full, in-sync
    /// ones too.
    ReplayToInSyncClient,
    /// The primary counts an op committed once the standby holds it, before it applied it.
    CommitBeforeStandbyApplied,
}

/// Every injectable bug with its command-line name.
pub const INJECTED_BUGS: &[(&str, InjectedBug)] = &[
    ("none", InjectedBug::None),
    ("apply-before-ack", InjectedBug::StandbyApplyBeforeAck),
    ("discard-committed", InjectedBug::DiscardCommittedTrailing),
    ("skip-replay-section", InjectedBug::SkipReplaySection),
    ("accept-stale-epoch", InjectedBug::AcceptStaleEpoch),
    ("skip-apply", InjectedBug::StandbySkipApply),
    ("drop-change", InjectedBug::DropChange),
    ("two-primaries", InjectedBug::TwoPrimaries),
    ("overrun-bound", InjectedBug::OverrunBound),
    ("replay-in-sync", InjectedBug::ReplayToInSyncClient),
    (
        "commit-before-apply",
        InjectedBug::CommitBeforeStandbyApplied,
    ),
];

impl InjectedBug {
    pub fn name(self) -> &'static str {
        INJECTED_BUGS
            .iter()
            .find(|(_, b)| *b == self)
            .map_or("none", |(n, _)| n)
    }
}

impl std::fmt::Display for InjectedBug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for InjectedBug {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        INJECTED_BUGS
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, b)| *b)
            .ok_or_else(|| {
                let names: Vec<&str> = INJECTED_BUGS.iter().map(|(n, _)| *n).collect();
                format!("unknown bug '{s}' ({})", names.join("|"))
            })
    }
}

/// Who is who. Control units are listed in priority order: index 0 is the initial primary and
/// the preferred successor is the next live one.
#[derive(Debug, Clone)]
pub struct Topology {
    pub control_units: Vec<NodeId>,
    pub clients: Vec<NodeId>,
    /// `channel_owner[c]` is the client that consumes channel `c`.
    pub channel_owner: Vec<NodeId>,
    /// Load clients allowed to send SUBMIT frames to the primary.
    pub submitters: Vec<NodeId>,
}

impl Topology {
    pub fn channels(&self) -> usize {
        self.channel_owner.len()
    }
    pub fn cu_index(&self, id: NodeId) -> Option<usize> {
        self.control_units.iter().position(|&c| c == id)
    }
    pub fn is_client(&self, id: NodeId) -> bool {
        self.clients.contains(&id)
    }
    pub fn channels_of(&self, client: NodeId) -> impl Iterator<Item = u32> + '_ {
        self.channel_owner
            .iter()
            .enumerate()
            .filter(move |(_, o)| **o == client)
            .map(|(c, _)| c as u32)
    }
    /// The control unit that owns `epoch` (its low byte is the owner's priority index).
    pub fn epoch_owner(&self, epoch: impl Into<Epoch>) -> Option<NodeId> {
        self.control_units.get(epoch.into().owner_index()).copied()
    }
}

/// Largest epoch counter accepted from the network: see [`Epoch::MAX_COUNTER`].
pub const MAX_EPOCH_COUNTER: u64 = Epoch::MAX_COUNTER;

/// Largest op ID accepted from the network in a bulk stream or history item: see
/// [`OpId::MAX`].
pub const MAX_OP_ID: u64 = OpId::MAX.get();

/// The epoch every node starts in, as a number: see [`Epoch::INITIAL`].
pub const INITIAL_EPOCH: u64 = Epoch::INITIAL.get();

/// How many updates ahead an apply loop prefetches state slots: enough to overlap the cache
/// misses of several writes, few enough that the lines are still cached when written.
pub const PREFETCH_AHEAD: usize = 8;

/// How many updates ahead an apply loop prefetches the headers of the sections it will write
/// (the first stage; the slot prefetch at [`PREFETCH_AHEAD`] reads the header).
pub const PREFETCH_HEADER_AHEAD: usize = 2 * PREFETCH_AHEAD;

/// Both prefetch stages with their distances, for loops that look ahead by index.
pub const PREFETCH_STAGES: [(usize, state::PrefetchHint); 2] = [
    (PREFETCH_HEADER_AHEAD, |state, table, _key| {
        state.prefetch_section(table)
    }),
    (PREFETCH_AHEAD, state::ChannelState::prefetch),
];

/// Limits on what one channel may hold, counted over every section (the private one too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelQuota {
    pub max_keys: u64,
    pub max_value_bytes: u64,
}

impl ChannelQuota {
    pub const UNLIMITED: ChannelQuota = ChannelQuota {
        max_keys: u64::MAX,
        max_value_bytes: u64::MAX,
    };

    /// Whether applying `entries` to `state` could leave it over the quota. A put adds a key
    /// unless the key is held now, and adds its value's bytes less those of the value it
    /// replaces; deletes count for nothing (a conservative bound). Keys are looked up only when
    /// the change could reach a limit at all, so a channel well inside its quota pays one sum
    /// over its sections.
    #[inline]
    pub fn would_exceed(
        &self,
        state: &state::ChannelState,
        entries: &[crate::wire::Entry<'_>],
    ) -> bool {
        // Inline, so that a primary without quotas pays one comparison per submit.
        *self != Self::UNLIMITED && self.limited_would_exceed(state, entries)
    }

    fn limited_would_exceed(
        &self,
        state: &state::ChannelState,
        entries: &[crate::wire::Entry<'_>],
    ) -> bool {
        let (keys, bytes) = state.totals();
        let puts = || entries.iter().filter(|e| e.value.is_some());
        let len = |e: &crate::wire::Entry<'_>| e.value.map_or(0, |v| v.len() as u64);
        let added_bytes: u64 = puts().map(len).sum();
        if keys.saturating_add(puts().count() as u64) <= self.max_keys
            && bytes.saturating_add(added_bytes) <= self.max_value_bytes
        {
            return false;
        }
        let (mut new_keys, mut freed_bytes) = (0u64, 0u64);
        for e in puts() {
            match state.value_of(e) {
                Some(old) => freed_bytes += old.len() as u64,
                None => new_keys += 1,
            }
        }
        keys.saturating_add(new_keys) > self.max_keys
            || bytes
                .saturating_add(added_bytes)
                .saturating_sub(freed_bytes)
                > self.max_value_bytes
    }
}

#[derive(Debug, Clone)]
pub struct ProtoConfig {
    pub topology: Topology,
    /// Ops per channel the primary retains before `submit` reports backpressure.
    pub window_ops: usize,
    pub heartbeat_interval_us: u64,
    /// Silence from the primary after which a standby starts a failover.
    pub failover_timeout_us: u64,
    /// A control unit that has never heard a primary waits at least this long, counted from
    /// the first time it is driven (its socket is open by then), before it takes over: a
    /// standby started a moment before the primary must not declare it lost before the
    /// primary's first heartbeat could arrive. Below `failover_timeout_us` it changes nothing.
    pub startup_grace_us: u64,
    /// Silence after which the primary drops a standby from the sync set.
    pub drop_timeout_us: u64,
    /// How long a new primary waits for LAST-APPLIED replies.
    pub query_timeout_us: u64,
    /// Retransmission timeout: no progress for this long rewinds a sender (tail probe).
    pub rto_us: u64,
    /// Least time between two NACKs of one channel sent by a client or standby; a primary
    /// serves NACKs of one peer and channel at most every half of it. Above the round trip,
    /// so a retransmission can arrive before its gap is NACKed again. Apart from `rto_us`,
    /// which a host may set far above the round trip (above the queueing delay of a full
    /// window) without making every gap wait that long.
    pub nack_interval_us: u64,
    /// Resolution of periodic work.
    pub tick_us: u64,
    /// Bulk-stream items in flight.
    pub bulk_window: u32,
    pub cut_policy: CutPolicy,
    /// Largest frame this node builds; a change must fit in one.
    pub max_frame_bytes: usize,
    /// Emit a `ClientApplied` event per op (the simulator and apply handlers want it).
    pub client_apply_events: bool,
    /// Emit `ClientAcked` events on the primary (latency profiling wants them).
    pub ack_events: bool,
    /// Emit a `StandbyApplied` event per op applied in normal operation (the simulator checks
    /// apply order with them; a load run has no use for millions of them per second). Ops
    /// applied by the failover algorithm are always announced.
    pub standby_apply_events: bool,
    /// Per-channel limits the primary enforces at `submit` (issue 10 item 5): one channel's
    /// writer cannot grow every replica's state without bound.
    pub quota: ChannelQuota,
    /// Keys the slot hash of this node's state tables (issue 10 item 5: chosen keys must not
    /// make inserts quadratic). Local, never sent, and nothing replicas compare depends on it.
    /// [`ProtoConfig::new`] draws a random one per process; the simulator sets one from its
    /// seed, since the table order shapes bulk streams and so the run.
    pub table_seed: u64,
    pub inject: InjectedBug,
}

impl ProtoConfig {
    pub fn new(topology: Topology) -> Self {
        ProtoConfig {
            topology,
            window_ops: 4096,
            heartbeat_interval_us: 10_000,
            failover_timeout_us: 50_000,
            startup_grace_us: 0,
            drop_timeout_us: 100_000,
            query_timeout_us: 40_000,
            rto_us: 20_000,
            nack_interval_us: 10_000,
            tick_us: 2_000,
            bulk_window: 512,
            cut_policy: CutPolicy::Complete,
            max_frame_bytes: 1472,
            client_apply_events: true,
            ack_events: false,
            standby_apply_events: true,
            quota: ChannelQuota::UNLIMITED,
            table_seed: table::process_seed(),
            inject: InjectedBug::None,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        let t = &self.topology;
        if t.control_units.is_empty() {
            return Err("topology.control_units: at least one control unit is needed".into());
        }
        if t.control_units.len() > 32 {
            return Err("topology.control_units: at most 32 control units".into());
        }
        if t.channel_owner.iter().any(|o| !t.clients.contains(o)) {
            return Err("topology.channel_owner: names a node that is not a client".into());
        }
        if t.clients.iter().any(|c| t.control_units.contains(c)) {
            return Err("topology: a node cannot be both client and control unit".into());
        }
        if self.window_ops < 2 {
            return Err("window_ops: must be at least 2".into());
        }
        if self.failover_timeout_us <= self.heartbeat_interval_us {
            return Err("failover_timeout_us: must exceed heartbeat_interval_us".into());
        }
        if self.drop_timeout_us < self.failover_timeout_us {
            return Err("drop_timeout_us: must be at least failover_timeout_us".into());
        }
        if self.max_frame_bytes < 512 || self.max_frame_bytes > crate::wire::MAX_FRAME_BYTES {
            return Err("max_frame_bytes: must be within 512..=65507".into());
        }
        if self.tick_us == 0 || self.rto_us == 0 || self.bulk_window == 0 {
            return Err("tick_us, rto_us and bulk_window must be non-zero".into());
        }
        if self.nack_interval_us < 2 {
            return Err("nack_interval_us: must be at least 2".into());
        }
        Ok(())
    }
}

/// A datagram ready in the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    pub dst: NodeId,
    pub len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Standby,
    /// Taking over: LAST-APPLIED queries are out.
    Candidate,
    /// Without state: waiting for a full transfer.
    Joining,
}

/// How a failover resolved one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// The client answered with N at or below the standby's highest op.
    Behind { client_op: u64 },
    /// The client applied ops the standby never saw: roll it back by replaying their sections.
    Ahead { client_op: u64 },
    /// No answer in time, or the client has no history: full replay.
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Primary: ops of `epoch` on `channel` up to `through` are committed.
    Committed {
        channel: u32,
        epoch: Epoch,
        through: OpId,
    },
    /// Primary: the client of `channel` acknowledged ops through `through`.
    ClientAcked {
        channel: u32,
        through: OpId,
    },
    /// Client: op applied.
    ClientApplied {
        channel: u32,
        op: OpId,
        epoch: Epoch,
        cookie: SectionMask,
    },
    /// Client: a replay reset `sections` and left the channel at `base_op`.
    ClientReplayed {
        channel: u32,
        base_op: OpId,
        sections: SectionMask,
        epoch: Epoch,
    },
    /// Standby: op applied to its state; `failover` when applied by the failover cut.
    StandbyApplied {
        channel: u32,
        op: OpId,
        failover: bool,
    },
    RoleChanged {
        role: Role,
        epoch: Epoch,
    },
    /// A failover started (`operator` for a planned switchover).
    FailoverStarted {
        epoch: Epoch,
        operator: bool,
    },
    /// A failover decided a channel: ops up to `cut` are kept.
    ChannelResolved {
        channel: u32,
        resolution: Resolution,
        cut: OpId,
        held: OpId,
    },
    /// Primary: a replay to a client started. `full_bytes` is what a full replay would send.
    ReplayStarted {
        channel: u32,
        client: NodeId,
        sections: SectionMask,
        full: bool,
        bytes: u64,
        full_bytes: u64,
        base_op: OpId,
    },
    ReplayFinished {
        channel: u32,
        client: NodeId,
    },
    /// The failover finished; this node is primary and accepts submissions.
    TookOver {
        epoch: Epoch,
    },
    StandbyJoined {
        standby: NodeId,
    },
    StandbyDropped {
        standby: NodeId,
    },
    /// A joining standby holds `channel` again, applied through `applied`.
    ChannelTransferred {
        channel: u32,
        applied: OpId,
    },
    /// A standby finished receiving its state transfer.
    TransferComplete {
        epoch: Epoch,
    },
    /// A standby that lost its primary's authenticated frames still receives frames that fail
    /// authentication from it: the keys differ. It does not take over (VRRP's lesson: a key
    /// mismatch fails closed and never elects) until those frames stop too.
    KeyMismatch {
        primary: NodeId,
        epoch: Epoch,
    },
}

impl Event {
    /// Events raised per op or per ack (too frequent to log one by one).
    pub fn is_per_op(&self) -> bool {
        matches!(
            self,
            Event::Committed { .. }
                | Event::ClientAcked { .. }
                | Event::ClientApplied { .. }
                | Event::StandbyApplied { .. }
        )
    }
}

/// One human-readable line per event, shared by the daemon log and the simulator trace.
impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Event::Committed {
                channel,
                epoch,
                through,
            } => {
                write!(
                    f,
                    "channel {channel} committed through op {through} (epoch {epoch:#x})"
                )
            }
            Event::ClientAcked { channel, through } => {
                write!(f, "channel {channel} acked through op {through}")
            }
            Event::ClientApplied {
                channel,
                op,
                epoch,
                cookie,
            } => {
                write!(
                    f,
                    "channel {channel} applied op {op} (epoch {epoch:#x}, cookie {cookie:#x})"
                )
            }
            Event::ClientReplayed {
                channel,
                base_op,
                sections,
                epoch,
            } => write!(
                f,
                "channel {channel} replayed (sections {sections:#x}), now at op {base_op}, epoch {epoch:#x}"
            ),
            Event::StandbyApplied {
                channel,
                op,
                failover,
            } => {
                write!(
                    f,
                    "channel {channel} applied op {op}{}",
                    if failover { " (failover cut)" } else { "" }
                )
            }
            Event::RoleChanged { role, epoch } => write!(f, "now {role:?} (epoch {epoch:#x})"),
            Event::FailoverStarted { epoch, operator } => write!(
                f,
                "failover started ({}), epoch {epoch:#x}",
                if operator { "operator" } else { "primary lost" }
            ),
            Event::ChannelResolved {
                channel,
                resolution,
                cut,
                held,
            } => {
                write!(
                    f,
                    "channel {channel} resolved: {resolution:?}, cut at {cut} (held {held})"
                )
            }
            Event::ReplayStarted {
                channel,
                client,
                sections,
                full,
                bytes,
                full_bytes,
                base_op,
            } => write!(
                f,
                "replay to client {client} on channel {channel} started: {} sections {sections:#x}, {bytes} of {full_bytes} bytes, base op {base_op}",
                if full { "full" } else { "selective" }
            ),
            Event::ReplayFinished { channel, client } => {
                write!(f, "replay to client {client} on channel {channel} finished")
            }
            Event::TookOver { epoch } => write!(f, "took over: primary of epoch {epoch:#x}"),
            Event::StandbyJoined { standby } => write!(f, "standby {standby} joined the sync set"),
            Event::StandbyDropped { standby } => {
                write!(f, "standby {standby} dropped from the sync set")
            }
            Event::KeyMismatch { primary, epoch } => write!(
                f,
                "key mismatch: primary {primary} (epoch {epoch}) is heard only through frames that fail authentication; takeover withheld until they stop"
            ),
            Event::ChannelTransferred { channel, applied } => {
                write!(
                    f,
                    "channel {channel} transferred, applied through op {applied}"
                )
            }
            Event::TransferComplete { epoch } => {
                write!(f, "state transfer complete (epoch {epoch:#x})")
            }
        }
    }
}

/// Counters every node keeps; rejections are counted by reason. Serializable as they are, so
/// that status replies carry every one of them without a second list to keep in step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Counters {
    pub frames_rx: u64,
    pub frames_tx: u64,
    pub bytes_tx: u64,
    pub rejected_malformed: u64,
    /// A frame of an epoch below ours, or a BEGIN of a replay or transfer stream that its
    /// primary has since replaced (see [`bulk::is_stale_stream`]).
    pub rejected_stale_epoch: u64,
    pub rejected_unknown_sender: u64,
    pub rejected_unexpected: u64,
    /// Messages beyond the first heartbeat of a frame (one frame is one heartbeat's worth of
    /// facts; more would only multiply the work a single datagram can cause).
    pub rejected_extra_heartbeats: u64,
    /// Heartbeats older than one already taken from the same life of the sender, and frames
    /// of a client's earlier life (its boot ID already replaced by a newer one).
    pub rejected_stale_heartbeats: u64,
    /// Frames claiming a higher epoch from a sender that may not make us adopt it (a client):
    /// never adopted, they only prompt heartbeats to the other control units.
    pub rejected_foreign_epoch: u64,
    /// A client's "no history" answer for a channel, older than the replay (full or
    /// selective) that has since given the channel its history.
    pub rejected_stale_unknown: u64,
    /// A standby's COMMIT report older than the transfer that has since replaced the state it
    /// described.
    pub rejected_stale_commit: u64,
    /// Standby: an UPDATE with its body for an op inside the snapshot a transfer has since
    /// given the channel (such ops come PREAPPLIED): a late copy sent to an earlier life of
    /// this unit, whose body would write older values over the snapshot.
    pub rejected_stale_update: u64,
    /// Client: a takeover's query of the current epoch arriving after that epoch's primary
    /// began a replay of the channel (a late or duplicated copy).
    pub rejected_stale_query: u64,
    /// Requests refused for pace (see `control::pacing`): NACKs faster than a peer sends
    /// them, full replays and state transfers asked for before the last one's pause ended.
    pub rejected_nack_rate: u64,
    pub rejected_replay_rate: u64,
    pub rejected_transfer_rate: u64,
    pub updates_applied: u64,
    pub retransmits: u64,
    pub nacks_sent: u64,
    pub replays_started: u64,
    pub replay_bytes: u64,
    pub xfer_bytes: u64,
    /// Channel transfers that sent no entries: the standby kept its state through a change of
    /// epoch and caught up from its own position.
    pub xfer_catch_ups: u64,
    pub submits_accepted: u64,
    pub submits_rejected: u64,
    /// Submits refused because the channel would go over its quota (also in
    /// `submits_rejected` when they came as SUBMIT frames).
    pub submits_over_quota: u64,
    /// Primary heartbeats whose sync set was not acknowledged because it left out the
    /// candidate this standby had just voted for (see `Pledge`).
    pub sync_set_held_for_candidate: u64,
    /// Sync-set views of our epoch taken from a peer after the primary was lost (announced
    /// by the primary; we missed the announcement).
    pub views_learnt_from_peers: u64,
    /// Times a standby withheld a takeover: its primary seemed silent, but frames from the
    /// primary's address and ID failed authentication within the failover timeout (a key
    /// mismatch, see [`ControlUnit::note_unauthenticated`]). Counted once per episode.
    pub takeovers_withheld_key_mismatch: u64,
    /// Primary: switchovers it asked of a dead candidate's owner, back as an in-sync standby,
    /// because line cards stayed in that candidate's epoch (see `ClientEpochClaim`).
    pub switchovers_for_stuck_clients: u64,
}

impl Counters {
    /// Datagrams refused for any reason.
    pub fn rejected(&self) -> u64 {
        self.rejected_malformed
            + self.rejected_stale_epoch
            + self.rejected_unknown_sender
            + self.rejected_unexpected
            + self.rejected_extra_heartbeats
            + self.rejected_stale_heartbeats
            + self.rejected_foreign_epoch
            + self.rejected_stale_unknown
            + self.rejected_stale_commit
            + self.rejected_stale_update
            + self.rejected_stale_query
            + self.rejected_nack_rate
            + self.rejected_replay_rate
            + self.rejected_transfer_rate
    }
}

/// Decodes a datagram, counting a malformed one, and shows `visit` each update as it is
/// validated ([`crate::wire::FrameReader::new_visiting`]). Shared by both node kinds.
pub(crate) fn decode_frame<'a>(
    bytes: &'a [u8],
    counters: &mut Counters,
    visit: impl FnMut(&crate::wire::UpdateView<'a>),
) -> Option<crate::wire::FrameReader<'a>> {
    match crate::wire::FrameReader::new_visiting(bytes, visit) {
        // An epoch past the range any failover count reaches is a lie, and arithmetic on it
        // (the next epoch) could overflow: refuse it before anything reads it.
        Ok(f) if Epoch::from_wire(f.epoch()).is_some() => Some(f),
        Ok(_) | Err(_) => {
            counters.rejected_malformed += 1;
            None
        }
    }
}

/// The epoch of a frame [`decode_frame`] accepted: its range was checked there (a frame
/// with a counter past [`Epoch::MAX_COUNTER`] never gets this far).
pub(crate) fn frame_epoch(frame: &crate::wire::FrameReader<'_>) -> Epoch {
    Epoch::from(frame.epoch())
}

/// The first heartbeat of a frame, if it holds one. A frame carries one heartbeat's worth of
/// facts: further heartbeats are counted and ignored, so one datagram packed with them (each
/// asking for a transfer, say) costs no more work than one heartbeat.
pub(crate) fn first_heartbeat(
    frame: &crate::wire::FrameReader<'_>,
    counters: &mut Counters,
) -> Option<crate::wire::HeartbeatBody> {
    if !frame.contains(crate::wire::Kind::Heartbeat) {
        return None;
    }
    let mut first = None;
    for m in frame.msgs() {
        if let crate::wire::Msg::Heartbeat(hb) = m {
            if first.is_none() {
                first = Some(hb);
            } else {
                counters.rejected_extra_heartbeats += 1;
            }
        }
    }
    first
}

/// Bounded event queue shared by both node kinds. The caller drains it after every input.
/// One input can emit many events (a takeover announces every op it applies), so a full queue
/// drops the newest and counts it rather than asserting: events are observations, and the
/// protocol state never depends on them. The simulator checks that nothing was dropped.
#[derive(Debug, Default)]
pub(crate) struct Events {
    q: std::collections::VecDeque<Event>,
    dropped: u64,
}

pub(crate) const MAX_EVENTS: usize = 1 << 20;

impl Events {
    pub fn push(&mut self, e: Event) {
        if self.q.len() < MAX_EVENTS {
            self.q.push_back(e);
        } else {
            self.dropped += 1;
        }
    }
    /// Events dropped on a full queue since the node started.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
    pub fn pop(&mut self) -> Option<Event> {
        self.q.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The newtypes print as the bare numbers did: event lines in logs and traces, and their
    /// `{:?}`, read exactly as before.
    #[test]
    fn event_text_is_unchanged_by_the_newtypes() {
        let epoch = Epoch::new(2, 1).unwrap();
        let applied = Event::ClientApplied {
            channel: 1,
            op: OpId::new(5),
            epoch,
            cookie: SectionMask::new(4),
        };
        assert_eq!(
            applied.to_string(),
            "channel 1 applied op 5 (epoch 0x201, cookie 0x4)"
        );
        let replayed = Event::ClientReplayed {
            channel: 3,
            base_op: OpId::new(7),
            sections: SectionMask::new(0x21),
            epoch,
        };
        assert_eq!(
            replayed.to_string(),
            "channel 3 replayed (sections 0x21), now at op 7, epoch 0x201"
        );
        let resolved = Event::ChannelResolved {
            channel: 1,
            resolution: Resolution::Behind { client_op: 3 },
            cut: OpId::new(4),
            held: OpId::new(6),
        };
        assert_eq!(
            format!("{resolved} / {resolved:?}"),
            "channel 1 resolved: Behind { client_op: 3 }, cut at 4 (held 6) / \
             ChannelResolved { channel: 1, resolution: Behind { client_op: 3 }, cut: 4, held: 6 }"
        );
        assert_eq!(
            format!("{:?}", Event::TookOver { epoch }),
            "TookOver { epoch: 513 }"
        );
    }
}
