//! A control unit: the primary or a standby [0040]. One type holds both roles because a node
//! moves between them (a standby takes over; an old primary rejoins as standby).
//!
//! Where to read what (each file opens with why it is apart):
//!
//! | module | holds |
//! |---|---|
//! | `role` | the role state type (`RoleState`) and every transition, through `ControlUnit::enter` |
//! | `primary` | op assignment, retention, ack forwarding, commit, replays and transfers |
//! | `standby` | the pending ring, in-order apply, commit reports, joining, votes and take-over timing |
//! | `failover` | a takeover: new epoch, queries, the cut per channel, selective replay |
//! | `cut` | the cut decision as a pure function, with its table of cases |
//! | `lives` | a client's lives, told apart by boot ID |
//! | `pacing` | per-peer limits on the work requests can cause |
//! | `transmit` | output: one frame per call, derived from cursors and dirty flags |
//! | this file | the `ControlUnit` type, input dispatch, epochs, heartbeats and sync-set views (`View`, `effective_mask`) |

mod cut;
mod failover;
mod lives;
mod pacing;
mod primary;
mod role;
mod standby;
mod transmit;

use super::bulk::{BulkRx, BulkTx};
pub use super::history::History;
use super::history::{OpStatus, StatusCounts};
use super::ring::OpRing;
use super::state::ChannelState;
use super::{
    Counters, Epoch, Event, Events, InjectedBug, NodeId, OpId, ProtoConfig, Role, SectionMask,
};
use crate::wire::{
    FrameReader, HB_FLAG_JOINED, HB_FLAG_PRIMARY_LOST, HeartbeatBody, LA_FLAG_UNKNOWN, Msg,
};
use thiserror::Error;

pub use primary::SubmitError;

/// Per channel, on the primary, about one standby.
#[derive(Debug, Default, Clone)]
struct PeerChan {
    /// The standby has this channel's state (transfer done or initial sync).
    ready: bool,
    applied: OpId,
    held: OpId,
    /// Next op to send.
    cursor: OpId,
    progress_us: u64,
    fwd_sent: u64,
    fwd_dirty: bool,
    /// Transfer snapshot point: ops up to here are inside the snapshot.
    xfer_top: OpId,
    /// Cookies of ops `(acked, xfer_top]` at the snapshot, sent as PREAPPLIED updates.
    preapplied: Vec<SectionMask>,
    preapplied_from: OpId,
    /// Packet sequence of the standby's frame that acknowledged the end of this channel's
    /// transfer: a COMMIT report from an earlier frame (delayed) describes the state the
    /// transfer replaced. Seed 27020226: such a report raised `held` past what the standby
    /// held, its NACKs were then ignored as below `held`, and the channel never committed.
    xfer_done_seq: u64,
    /// A re-joining standby that kept its state offers it: `(epoch, op)` = its state holds
    /// every op up to `op` as the primary of `epoch` sent them.
    offer: Option<(Epoch, OpId)>,
    /// The standby's NACKs on this channel, served no faster than it sends them.
    nack_pacer: pacing::Pacer,
}

/// Primary: line cards keep claiming an epoch above ours. A client adopts an epoch from a
/// candidate's query; if that candidate died before it took over (or before any standby
/// joined it), no primary of that epoch exists and the client refuses our lower epoch for
/// good (seed 27005953). A client never makes us adopt an epoch; once the claim has lasted a
/// failover timeout and that epoch's owner has since joined our sync set (so its candidacy is
/// over: it restarted, or was fenced, and re-joined through us), we ask that owner to take
/// over: its persisted epoch counter puts its new epoch above the dead one, and its takeover
/// queries and resolves every line card. Requiring a join after the claim began keeps a lying
/// line card from forcing switchovers at will: at most one per real re-join.
#[derive(Debug, Clone, Copy)]
struct ClientEpochClaim {
    epoch: Epoch,
    first_us: u64,
    last_us: u64,
}

/// What this node knows about another control unit.
#[derive(Debug)]
struct Peer {
    id: NodeId,
    last_rx_us: Option<u64>,
    flags: u8,
    epoch: Epoch,
    seen_mask: u32,
    seen_version: u16,
    /// The epoch whose primary announced `seen_mask` (see `HeartbeatBody::view_epoch`).
    view_epoch: Epoch,
    vote: NodeId,
    boot_id: u32,
    /// `(boot ID, packet sequence)` of the newest standby heartbeat taken from this unit: an
    /// older one of the same life (delayed or reordered) is stale and ignored.
    hb_order: Option<(u32, u64)>,
    /// `(epoch, packet sequence)` of the newest primary heartbeat taken from this unit: an
    /// epoch has one primary life, so an older one of the same epoch is stale (acting on it
    /// would, say, roll back the sync set this standby knows it is in).
    primary_hb_order: Option<(Epoch, u64)>,
    /// When a frame claiming to be this unit's, from its address, last failed authentication
    /// (reported by the host, see [`ControlUnit::note_unauthenticated`]).
    unauthenticated_rx_us: Option<u64>,
    /// Primary: transfer in progress towards this standby, one channel at a time.
    xfer: Option<BulkTx>,
    transferring: bool,
    /// Primary: when this unit last joined our sync set (0: never). Only a
    /// unit that joined after line cards started claiming its epoch can be asked to take
    /// over for them (see [`ClientEpochClaim`]).
    joined_us: u64,
    /// Primary: state transfers to this unit (see `pacing`).
    transfer_pacer: pacing::Pacer,
    chans: Vec<PeerChan>,
    hb_due: bool,
}

/// Per channel, whatever the role.
#[derive(Debug)]
struct Chan {
    id: u32,
    owner: NodeId,
    state: ChannelState,
    history: History,
    /// Primary: retention window. Standby: pending queue (ops above `applied`).
    ring: OpRing,
    // Primary.
    next_op: OpId,
    commit: OpId,
    client_acked: OpId,
    client_cursor: OpId,
    client_progress_us: u64,
    /// Generation the client's acks must carry (stream of the last finished replay).
    client_generation: u32,
    /// Packet sequence of the client frame that finished the last replay, full or selective
    /// (this life of the client): a "no history" answer from an earlier frame is stale.
    client_known_seq: u64,
    replay: Option<BulkTx>,
    /// Replays to the client and its NACKs (see `pacing`).
    replay_pacer: pacing::Pacer,
    client_nack_pacer: pacing::Pacer,
    /// A new life of the client is owed a full replay that its pacer held back.
    full_replay_owed: bool,
    // Standby.
    applied: OpId,
    acked: OpId,
    preapplied_top: OpId,
    commit_dirty: bool,
    nack: Option<(OpId, OpId)>,
    last_nack_us: u64,
    xfer_rx: Option<BulkRx>,
    xfer_done: Option<u32>,
    /// Newest transfer stream begun in this epoch (see [`super::bulk::is_stale_stream`]).
    /// Seed 28172166: a restarted standby took a late XFER_BEGIN its previous life was sent,
    /// after the newer transfer of that channel had ended, and waited for good.
    newest_xfer_stream: Option<u32>,
    ready: bool,
    /// Joining with kept state: offer it to the primary (with the next heartbeat).
    offer_due: bool,
    /// Joining with kept state: the history that goes with it (a catch-up replaces the
    /// history first; if the new epoch dies before that ends, this one is put back).
    kept_history: Option<History>,
    /// New primary: ops above this one (what it had applied as a standby when it took over)
    /// stay retained for a while, so that the other standbys, which kept their state at
    /// about the same position, catch up from it instead of taking a full transfer.
    catch_up_floor: OpId,
    /// What the last failover decided for this channel, for operators and drills.
    last_failover: Option<ChannelFailover>,
}

impl Chan {
    /// `seed`: the node's `ProtoConfig::table_seed`.
    fn new(id: u32, owner: NodeId, window: usize, seed: u64) -> Self {
        Chan {
            id,
            owner,
            state: ChannelState::with_seed(seed),
            history: History::new(Epoch::INITIAL, OpId::FIRST),
            ring: OpRing::new(window),
            next_op: OpId::FIRST,
            commit: OpId::ZERO,
            client_acked: OpId::ZERO,
            client_cursor: OpId::FIRST,
            client_progress_us: 0,
            client_generation: 0,
            client_known_seq: 0,
            replay: None,
            replay_pacer: pacing::Pacer::default(),
            client_nack_pacer: pacing::Pacer::default(),
            full_replay_owed: false,
            applied: OpId::ZERO,
            acked: OpId::ZERO,
            preapplied_top: OpId::ZERO,
            commit_dirty: false,
            nack: None,
            last_nack_us: 0,
            xfer_rx: None,
            xfer_done: None,
            newest_xfer_stream: None,
            ready: true,
            offer_due: false,
            kept_history: None,
            catch_up_floor: OpId::ZERO,
            last_failover: None,
        }
    }

    /// Primary: a full replay of this channel to its client is under way (it serves any life
    /// of the client and any "no history" answer).
    fn full_replay_under_way(&self) -> bool {
        self.replay
            .as_ref()
            .is_some_and(|r| r.sections == super::SectionMask::ALL)
    }

    /// Primary: the highest op assigned (`next_op` is never zero, op 0 never exists).
    fn last_op(&self) -> OpId {
        self.next_op.prev().unwrap_or(OpId::ZERO)
    }

    /// The highest op whose effect this standby holds or already has in its state.
    fn held_top(&self) -> OpId {
        self.ring.top().max(self.applied).max(self.preapplied_top)
    }

    /// Keeps the state (and history) through a change of epoch, dropping everything above
    /// it: ops held but not applied may have been cut by the new primary, which resends what
    /// it kept. Not ready until the new primary confirms the position (a transfer of no
    /// entries, see `Msg::XferBegin`).
    fn keep_for_catch_up(&mut self) {
        let top = self.applied.max(self.preapplied_top);
        self.wait_for_primary_at(top);
        self.kept_history = Some(self.history.clone());
    }

    /// Wipes the channel for a state transfer.
    fn reset_for_transfer(&mut self) {
        self.state.clear_all();
        self.history.clear();
        self.kept_history = None;
        self.commit = OpId::ZERO;
        self.wait_for_primary_at(OpId::ZERO);
    }

    /// The state holds every op up to `top` and nothing else is held or under way: the channel
    /// waits for a primary to confirm that position or replace the state.
    fn wait_for_primary_at(&mut self, top: OpId) {
        // Every op ID held is at most `OpId::MAX` (checked where it came in): never saturates.
        let next = top.saturating_add(1);
        self.applied = top;
        self.acked = top;
        self.preapplied_top = OpId::ZERO;
        self.ring.reset(next);
        self.next_op = next;
        self.replay = None;
        self.full_replay_owed = false;
        self.xfer_rx = None;
        self.xfer_done = None;
        self.ready = false;
        self.nack = None;
        self.commit_dirty = false;
    }
}

/// Primary: a request that a standby take over. It stays until a higher epoch fences us: a
/// target that died takes over once it is back, and its epoch then also brings back clients
/// that heard its first candidacy (seed 17032816: abandoning the request left such a client
/// in the dead candidate's epoch for good).
///
/// The target stays in the sync set for as long, even if it falls silent, so nothing commits
/// without it: it takes over on our word alone, with what it holds, and we cannot tell a dead
/// target from one that heard us, took over and cannot reach us (one-way). Seed 17001227
/// (`--extended-faults`): a target dropped at once was cut off that way while we committed
/// with the others. Seed 28199482: it was kept for a bounded time only, and a target deaf
/// for longer heard the request afterwards, took over mute, and cut what we had committed
/// since dropping it. New submits are refused from the request on anyway.
#[derive(Debug, Clone, Copy)]
struct Switchover {
    target: NodeId,
}

/// Where a standby's view of the sync set came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ViewOrigin {
    /// None heard yet in this epoch (just adopted): a peer's view of it is taken as it is.
    Unheard,
    /// Announced in this epoch by its primary (or learnt from a peer that heard it), or the
    /// configured initial set.
    Announced,
    /// Kept from an earlier epoch (its `view_epoch` is below ours).
    Kept,
}

/// A sync set as a standby knows it: the epoch whose primary announced it (ours, or an
/// earlier one for a set kept from then), the version that primary gave it, and its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct View {
    epoch: Epoch,
    version: u16,
    mask: u32,
}

impl View {
    /// Whether this view is fresher than `other`. A set of a later epoch is the fresher (so a
    /// set announced in our epoch is fresher than any kept one): versions count per primary
    /// life, and a restarted or different primary counts from its own start, so they order
    /// two sets only within one epoch. There versions wrap: fresher is a positive difference
    /// as a signed 16-bit number. An empty set (we joined this epoch and heard no set with
    /// anyone in it) yields to one of at least its version. Seed 27365071 (four units): two
    /// standbys resumed sets kept from different versions; announced both as version 0, each
    /// kept its own and voted for itself. `kept_view_tests`: sets kept from two different
    /// epochs were ordered by their versions, and the older epoch's won.
    fn supersedes(self, other: View) -> bool {
        if self.epoch != other.epoch {
            return self.epoch > other.epoch;
        }
        let d = self.version.wrapping_sub(other.version) as i16;
        d > 0 || (other.mask == 0 && d >= 0)
    }
}

/// What a failover decided for one channel: the client's answer, the cut, and the replay it
/// needed (sections, bytes sent, bytes a full replay of the channel would have sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelFailover {
    pub epoch: u64,
    pub resolution: crate::proto::Resolution,
    pub cut: u64,
    pub replay_sections: SectionMask,
    pub replay_bytes: u64,
    pub full_replay_bytes: u64,
    /// Ops the client lacked that are resent as ordinary updates (the `Behind` case), and
    /// their bytes on the wire.
    pub resent_ops: u64,
    pub resent_bytes: u64,
}

/// What a takeover now would decide for one channel (see
/// [`ControlUnit::failover_preview`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailoverPreview {
    pub channel: u32,
    pub client: NodeId,
    pub resolution: crate::proto::Resolution,
    pub cut: u64,
    /// The highest op this unit holds of the channel.
    pub held: u64,
    /// Sections that would be replayed to the client (0: none).
    pub replay_sections: SectionMask,
    /// Bytes of those sections' entries on the wire, and of the whole channel.
    pub replay_bytes: u64,
    pub full_replay_bytes: u64,
    /// The client's own answer was used (else its last acknowledged op was).
    pub answered: bool,
    /// False where only the client's own answer can tell (it acknowledged ops this unit never
    /// held: the sections they touched are unknown here) and it was not asked.
    pub sure: bool,
}

/// Why a control-plane request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ControlError {
    #[error("this node is not the primary")]
    NotPrimary,
    #[error("this node is not a standby with a complete state")]
    NotEligible,
    #[error("unknown control unit")]
    UnknownNode,
}

/// Why [`ControlUnit::restore_highest_epoch`] refused a persisted epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RestoreError {
    #[error("epoch {epoch} is beyond any reachable epoch (counter above 2^48): corrupt")]
    OutOfRange { epoch: u64 },
    #[error(
        "an earlier life saw epoch {epoch}, above the initial epoch {initial} this unit would start in: restart it as a re-joining unit"
    )]
    InitialAfterLaterEpoch { epoch: u64, initial: u64 },
}

/// A vote is a promise, as in Raft: a unit that voted for a candidate must not help the old
/// primary commit past that candidate while it may be taking over. Its cut would discard what
/// the old primary then committed without it (seed 6112768: a standby voted, heard the old
/// primary again, and let it drop the candidate and commit alone with it). Until `until_us`
/// (the longest a candidate can take to count the vote and finish its takeover), the standby
/// does not acknowledge a sync set of `epoch` that leaves `candidate` out, so the old primary
/// commits nothing without it.
#[derive(Debug, Clone, Copy)]
struct Pledge {
    epoch: Epoch,
    candidate: usize,
    until_us: u64,
}

/// Timing of the last failover, for drills and reports.
#[derive(Debug, Clone, Copy, Default)]
pub struct FailoverTiming {
    pub started_us: u64,
    pub finished_us: Option<u64>,
    pub last_primary_rx_us: u64,
}

#[derive(Debug)]
pub struct ControlUnit {
    cfg: ProtoConfig,
    pub id: NodeId,
    index: usize,
    boot_id: u32,
    /// The role, with what only that role holds (see `role.rs`).
    state: role::RoleState,
    epoch: Epoch,
    /// The highest epoch counter heard, made or restored. Each came through
    /// [`Epoch::from_wire`], so it is at most [`Epoch::MAX_COUNTER`]: counting up from it in
    /// a candidacy cannot fail.
    max_counter: u64,
    /// The highest epoch an earlier life persisted (0: none restored); see
    /// [`ControlUnit::restore_highest_epoch`].
    restored_epoch: Epoch,
    chans: Vec<Chan>,
    peers: Vec<Peer>,
    /// Primary: bit i set when control unit i is in the sync set.
    sync_mask: u32,
    /// Primary: version of the sync set, bumped on every change it announces.
    sync_version: u16,
    announced_mask: u32,
    /// Primary: the units dropped from the announced sync set since a commit last advanced.
    /// Each was a member while every op committed so far was committed, so each still holds
    /// them all (unless it restarted, which leaves it no view to stand on). When this unit
    /// leaves the epoch, they count as members of the set it remembers (`known_view`): seed
    /// 36561359 (three units), the primary dropped a standby, committed nothing more, and
    /// handed over to a unit that crashed and restarted; by the bare set it remembered, only
    /// that restarted unit held every op, and nobody ever took over.
    dropped_holding_all: u32,
    /// Standby: the sync set the primary last announced, and its version.
    seen_mask: u32,
    seen_version: u16,
    /// Standby: the last set with anyone in it that the primary announced before the one it
    /// announces now, `(version, mask)`. When the newest set is empty it names the units that
    /// hold every committed op (see [`ControlUnit::effective_mask`]): with two units, the
    /// standby the primary dropped just before dying (seeds 17008919, 17119268).
    prev_view: Option<(u16, u32)>,
    /// The freshest sync set this life knew in the epochs it has left: the last one it
    /// announced as their primary, or heard or kept as a standby. A peer's set older than it
    /// is stale (a newer set was announced, and ops may have been committed with it without
    /// that set's members), so this unit votes by its own knowledge instead (see
    /// [`ControlUnit::effective_mask`]).
    known_view: Option<View>,
    /// This life of the node has known a sync set: the configured initial one (a unit present
    /// from the start), one a primary announced, or its own as primary. Only such a unit
    /// votes: a restarted one knows nothing of what was committed with whom, and its vote
    /// could elect a standby cut off long ago.
    has_view: bool,
    /// Standby: when the primary's silence is counted from (its last frame; before any, the
    /// start-up grace, see [`ControlUnit::note_driven`]).
    primary_last_rx_us: u64,
    /// A frame of a primary has arrived (the failover clock then counts from the last one).
    heard_primary: bool,
    /// Joining after a change of epoch with the state it held as a standby of this epoch: it
    /// offers that state to the new primary, which sends only what it lacks (or, when the
    /// state is not of its lineage, a full transfer that replaces it).
    kept_epoch: Option<Epoch>,
    /// The sync set this unit was in when it kept its state (0: it was not eligible then). If
    /// the new epoch falls silent while no sync set of it has been announced with anyone in
    /// it (its candidate died mid-takeover, or its new primary before any standby joined),
    /// nothing was committed in it: the unit returns to being an eligible standby with that
    /// state. Units that heard the candidate would otherwise all wait for a transfer that
    /// never comes.
    kept_mask: u32,
    /// The version of the set in `kept_mask`, as its primary announced it, and the epoch of
    /// that primary.
    kept_version: u16,
    kept_view_epoch: Epoch,
    /// The epoch whose primary announced `seen_mask` (ours, or the epoch a kept set came from).
    view_epoch: Epoch,
    /// Where `seen_mask` and `seen_version` came from.
    view_origin: ViewOrigin,
    /// New primary: until when `Chan::catch_up_floor` pins retention (`None`: not pinned).
    catch_up_until_us: Option<u64>,
    /// `handle_timeout` or `handle_datagram` has run once.
    driven: bool,
    /// Standby: the primary has been silent for the failover timeout.
    primary_lost: bool,
    /// Standby that lost the primary's authenticated frames while frames failing
    /// authentication still come from it: a takeover is withheld (see `standby_tick`).
    key_mismatch: bool,
    /// Standby that lost the primary: the control unit it would follow (0 = none).
    vote: NodeId,
    /// Standby that lost the primary: it may take over by the freshest set it knows (see
    /// `standby_tick`), which its own view may not show: announced as `HB_FLAG_JOINED`.
    standing: bool,
    /// The last vote this standby gave another unit, kept after the primary is heard again:
    /// that unit may have counted it and be taking over (see [`Pledge`]).
    pledge: Option<Pledge>,
    /// Primary: a standby was asked to take over (see [`Switchover`]).
    switchover: Option<Switchover>,
    /// Primary: line cards claim an epoch above ours (see [`ClientEpochClaim`]).
    client_epoch_claim: Option<ClientEpochClaim>,
    pub timing: FailoverTiming,
    next_hb_us: u64,
    next_tick_us: u64,
    /// Clients due a heartbeat (by client index).
    client_hb_due: Vec<bool>,
    client_last_rx_us: Vec<Option<u64>>,
    /// The lives (boot IDs) each client announced.
    client_lives: Vec<lives::ClientLives>,
    /// Channels of each client (by client index).
    client_chans: Vec<Vec<u32>>,
    stream_counter: u32,
    packet_seq: u64,
    /// Round-robin position over destinations in `poll_transmit`.
    tx_next: usize,
    events: Events,
    pub counters: Counters,
}

impl ControlUnit {
    /// `initial` = true for a node present from the start (all state empty and in sync);
    /// false for a node (re)starting without state, which joins through a transfer.
    /// `boot_id` must differ between restarts of the same node.
    pub fn new(cfg: ProtoConfig, id: NodeId, initial: bool, boot_id: u32, now_us: u64) -> Self {
        let topo = &cfg.topology;
        let index = topo
            .cu_index(id)
            .expect("control unit id is in the topology");
        let n = topo.control_units.len();
        let window = cfg.window_ops;
        let chans: Vec<Chan> = topo
            .channel_owner
            .iter()
            .enumerate()
            .map(|(c, &o)| Chan::new(c as u32, o, window, cfg.table_seed))
            .collect();
        let all_mask: u32 = if n >= 32 { u32::MAX } else { (1u32 << n) - 1 };
        let peers = topo
            .control_units
            .iter()
            .map(|&p| Peer {
                id: p,
                last_rx_us: initial.then_some(now_us),
                flags: if initial { HB_FLAG_JOINED } else { 0 },
                epoch: if initial { Epoch::INITIAL } else { Epoch::ZERO },
                seen_mask: all_mask,
                seen_version: 0,
                view_epoch: if initial { Epoch::INITIAL } else { Epoch::ZERO },
                vote: 0,
                boot_id: 0,
                hb_order: None,
                primary_hb_order: None,
                unauthenticated_rx_us: None,
                xfer: None,
                transferring: false,
                joined_us: 0,
                transfer_pacer: pacing::Pacer::default(),
                chans: (0..chans.len())
                    .map(|_| PeerChan {
                        ready: initial,
                        cursor: OpId::FIRST,
                        ..Default::default()
                    })
                    .collect(),
                hb_due: true,
            })
            .collect();
        let state = match (initial, index) {
            (true, 0) => role::RoleState::Primary,
            (true, _) => role::RoleState::Standby,
            (false, _) => role::RoleState::Joining,
        };
        let mut cu = ControlUnit {
            id,
            index,
            boot_id,
            state,
            epoch: if initial { Epoch::INITIAL } else { Epoch::ZERO },
            max_counter: Epoch::INITIAL.counter(),
            restored_epoch: Epoch::ZERO,
            chans,
            peers,
            sync_mask: all_mask & !(1 << index),
            sync_version: 0,
            announced_mask: all_mask & !(1 << index),
            dropped_holding_all: 0,
            seen_mask: all_mask & !1,
            seen_version: 0,
            prev_view: None,
            known_view: None,
            has_view: initial,
            primary_last_rx_us: now_us,
            heard_primary: false,
            kept_epoch: None,
            kept_mask: 0,
            kept_version: 0,
            kept_view_epoch: Epoch::ZERO,
            view_epoch: if initial { Epoch::INITIAL } else { Epoch::ZERO },
            view_origin: ViewOrigin::Announced,
            catch_up_until_us: None,
            driven: false,
            primary_lost: false,
            key_mismatch: false,
            vote: 0,
            standing: false,
            pledge: None,
            switchover: None,
            client_epoch_claim: None,
            timing: FailoverTiming::default(),
            next_hb_us: now_us,
            next_tick_us: now_us,
            client_hb_due: vec![true; topo.clients.len()],
            client_last_rx_us: vec![None; topo.clients.len()],
            client_lives: vec![lives::ClientLives::default(); topo.clients.len()],
            client_chans: topo
                .clients
                .iter()
                .map(|&c| topo.channels_of(c).collect())
                .collect(),
            stream_counter: ((index as u32) << 24) | (boot_id & 0xff) << 16,
            packet_seq: 0,
            tx_next: 0,
            events: Events::default(),
            counters: Counters::default(),
            cfg,
        };
        if !initial {
            for c in &mut cu.chans {
                c.reset_for_transfer();
            }
        }
        cu
    }

    pub fn role(&self) -> Role {
        self.state.role()
    }
    pub fn epoch(&self) -> u64 {
        self.epoch.get()
    }

    /// The highest epoch this unit has taken as its own or followed, in this life or (through
    /// [`ControlUnit::restore_highest_epoch`]) an earlier one. Issue 10 item 6: a host persists
    /// it before it transmits anything after a step that raised it (it rises only inside
    /// `handle_datagram`, `handle_timeout` or a control-plane request, never inside
    /// `poll_transmit`), so no frame of an epoch leaves before the epoch is on disk. Cheap: a
    /// host compares it after every step.
    ///
    /// Within one life `epoch` never decreases (an adopted epoch is higher, a new one is made
    /// from a counter past every epoch heard), so the maximum with the restored value is exact.
    pub fn highest_epoch(&self) -> u64 {
        self.epoch.max(self.restored_epoch).get()
    }

    /// Restores the highest epoch an earlier life of this unit persisted (see
    /// [`ControlUnit::highest_epoch`]). Call it right after [`ControlUnit::new`], before the
    /// unit is driven. Its next candidacy then takes a counter above the restored epoch's, so
    /// it never creates an epoch an earlier life may already have announced (clients or
    /// standbys that heard that one would take two lives' frames as one primary's).
    ///
    /// The unit still follows whatever epoch the other units are in, even one below the
    /// restored epoch: a candidacy persisted just before a crash may never have been heard, and
    /// refusing the epoch the others still run in would leave this unit out for good. Its own
    /// epochs stay above everything it persisted. Restoring a lower value changes nothing.
    ///
    /// Refused, leaving the unit unchanged: an epoch whose counter exceeds
    /// [`crate::proto::MAX_EPOCH_COUNTER`] (no failover count reaches it: the stored value is
    /// corrupt, and counting up from it could overflow), and an epoch above the one a unit
    /// built as `initial` starts in (that unit would act in the deployment's first epoch after
    /// an earlier life saw a later one: restart it as a re-joining unit instead).
    pub fn restore_highest_epoch(&mut self, epoch: u64) -> Result<(), RestoreError> {
        let Some(restored) = Epoch::from_wire(epoch) else {
            return Err(RestoreError::OutOfRange { epoch });
        };
        if self.epoch != Epoch::ZERO && restored > self.epoch {
            return Err(RestoreError::InitialAfterLaterEpoch {
                epoch,
                initial: self.epoch.get(),
            });
        }
        if restored > self.restored_epoch {
            self.restored_epoch = restored;
            self.max_counter = self.max_counter.max(restored.counter());
        }
        Ok(())
    }
    pub fn config(&self) -> &ProtoConfig {
        &self.cfg
    }
    pub fn state(&self, channel: u32) -> Option<&ChannelState> {
        self.chans.get(channel as usize).map(|c| &c.state)
    }
    /// Primary: next op ID to assign. Standby: one above the highest applied op.
    pub fn next_op(&self, channel: u32) -> u64 {
        let c = &self.chans[channel as usize];
        if self.role() == Role::Primary {
            c.next_op.get()
        } else {
            c.applied.saturating_add(1).get()
        }
    }
    pub fn commit_watermark(&self, channel: u32) -> u64 {
        self.chans[channel as usize].commit.get()
    }
    pub fn client_acked(&self, channel: u32) -> u64 {
        self.chans[channel as usize].client_acked.get()
    }
    /// Standby: highest op applied, highest op held.
    pub fn standby_position(&self, channel: u32) -> (u64, u64) {
        let c = &self.chans[channel as usize];
        (c.applied.get(), c.ring.top().get())
    }
    /// Standby: highest op contained in a transferred snapshot (0 once caught up past it).
    /// What the last failover this node led decided for `channel`.
    pub fn last_failover(&self, channel: u32) -> Option<ChannelFailover> {
        self.chans
            .get(channel as usize)
            .and_then(|c| c.last_failover)
    }

    pub fn preapplied_top(&self, channel: u32) -> u64 {
        self.chans[channel as usize].preapplied_top.get()
    }
    /// Ops retained (primary) or pending (standby) on `channel`.
    pub fn ring_len(&self, channel: u32) -> usize {
        self.chans[channel as usize].ring.len()
    }
    /// Slots allocated for `channel`'s ring: the memory `window_ops` bounds.
    pub fn ring_capacity(&self, channel: u32) -> usize {
        self.chans[channel as usize].ring.capacity()
    }
    /// The most items any bulk stream of this node (a replay to a client or a transfer to a
    /// standby) has in flight beyond its receiver's ack; `bulk_window` bounds it.
    pub fn bulk_in_flight_len(&self) -> u32 {
        let replays = self.chans.iter().filter_map(|c| c.replay.as_ref());
        let xfers = self.peers.iter().filter_map(|p| p.xfer.as_ref());
        replays
            .chain(xfers)
            .map(|t| t.in_flight_len())
            .max()
            .unwrap_or(0)
    }
    pub fn sync_mask(&self) -> u32 {
        self.sync_mask
    }
    /// Debug view of a replay in progress: (stream, acked items, total items).
    pub fn replay_progress(&self, channel: u32) -> Option<(u32, u32, u32)> {
        self.chans[channel as usize]
            .replay
            .as_ref()
            .map(|r| (r.stream, r.acked_items(), r.total()))
    }
    pub fn is_replaying(&self, channel: u32) -> bool {
        self.chans[channel as usize].replay.is_some()
    }
    pub fn history(&self, channel: u32) -> &History {
        &self.chans[channel as usize].history
    }

    /// The highest op assigned and the commit watermark that op statuses are judged by.
    fn status_bounds(&self, c: &Chan) -> (u64, u64) {
        if self.role() == Role::Primary {
            (c.last_op().get(), c.commit.get())
        } else {
            (c.ring.top().get(), c.applied.get())
        }
    }

    /// [`ControlUnit::op_status`] of every op in `from..=to` assigned in `epoch`, counted per
    /// status (in time independent of the range's length).
    pub fn op_status_counts(&self, channel: u32, epoch: u64, from: u64, to: u64) -> StatusCounts {
        let Some(c) = self.chans.get(channel as usize) else {
            return StatusCounts {
                unknown: if from <= to {
                    (to - from).saturating_add(1)
                } else {
                    0
                },
                ..StatusCounts::default()
            };
        };
        let (last, commit) = self.status_bounds(c);
        let [from, to, last, commit] = [from, to, last, commit].map(OpId::new);
        c.history
            .status_counts(Epoch::from(epoch), from, to, last, commit)
    }

    /// What became of op `op`, assigned in `epoch` on `channel`. Exact on the primary.
    pub fn op_status(&self, channel: u32, epoch: u64, op: u64) -> OpStatus {
        let Some(c) = self.chans.get(channel as usize) else {
            return OpStatus::Unknown;
        };
        let (last, commit) = self.status_bounds(c);
        let [op, last, commit] = [op, last, commit].map(OpId::new);
        c.history.status(Epoch::from(epoch), op, last, commit)
    }

    /// The freshest sync set this standby knows of: its own view, or a newer one another
    /// standby of the same epoch heard from the primary (a standby dropped while cut off learns
    /// it this way).
    ///
    /// A unit without a view of its own in this life (restarted), or with an empty one, takes
    /// the freshest view announced by a live standby of its epoch, and only while it hears at
    /// least two other units (of any epoch): one alone may be a standby cut off long ago,
    /// whose old view still names itself, while the one that knows better is the one it does
    /// not hear (with three units). Two stale standbys and a restarted unit can still agree on a stale view:
    /// without persistent state a restarted unit cannot know better. `None`: no view to vote
    /// by.
    fn effective_mask(&self, now_us: u64) -> Option<View> {
        let timeout = self.cfg.failover_timeout_us;
        let live_peers = || {
            self.peers.iter().enumerate().filter(move |(i, p)| {
                *i != self.index && p.last_rx_us.is_some_and(|t| now_us < t + timeout)
            })
        };
        let mut best = self.own_view();
        for (_, p) in live_peers().filter(|(_, p)| p.epoch == self.epoch) {
            // A joining unit announces no set (mask 0): it only counts as a witness below.
            let theirs = View {
                epoch: p.view_epoch,
                version: p.seen_version,
                mask: p.seen_mask,
            };
            if p.seen_mask != 0 && best.is_none_or(|b| theirs.supersedes(b)) {
                best = Some(theirs);
            }
        }
        // A set we knew in an epoch we left, fresher than every one we hear: the sets we hear
        // are stale. Seed 35884076 (four units): a standby dropped while cut off resumed the set
        // it kept, which still named it; the joining units, having no set of their own in the
        // new epoch, voted it in, and it cut committed ops. One of them had been the primary
        // that dropped it, and knew the newer set.
        if let (Some(k), Some(b)) = (self.known_view, best)
            && k.supersedes(b)
        {
            best = Some(k);
        }
        let mut best = best?;
        let mut own_view = self.has_view && self.seen_mask != 0;
        // The freshest set is empty: nothing was committed since it became so (a primary
        // commits nothing without a sync set), so the members of the set just before it (one
        // version older: one primary per epoch announces consecutive versions) hold every
        // committed op. Seed 11005826: the primary dropped the last standby while it was cut
        // off, then died; the unit that knew only the empty set never voted, so nobody took
        // over. Our own record of the set before it counts as a view of our own: with two
        // units no other witness exists (seed 17008919).
        // (Kept sets are never empty, and one is never the set before an announced one.)
        if best.mask == 0 {
            let prev = best.version.wrapping_sub(1);
            let announced = self.has_view && self.view_origin == ViewOrigin::Announced;
            let own = (announced && self.seen_version == prev && self.seen_mask != 0)
                .then_some(self.seen_mask)
                .or_else(|| {
                    self.prev_view
                        .filter(|&(v, _)| {
                            announced && self.seen_version == best.version && v == prev
                        })
                        .map(|(_, m)| m)
                });
            let peer = live_peers()
                .find(|(_, p)| {
                    p.epoch == self.epoch
                        && p.seen_version == prev
                        && p.seen_mask != 0
                        && p.view_epoch == self.epoch
                })
                .map(|(_, p)| p.seen_mask);
            own_view |= own.is_some();
            if let Some(m) = own.or(peer) {
                best = View {
                    epoch: self.epoch,
                    version: prev,
                    mask: m,
                };
            }
        }
        if !own_view && live_peers().count() < 2 {
            return None;
        }
        Some(best)
    }

    /// The sync set as this unit last heard it in this epoch, or kept it (`None`: no view of
    /// its own in this life, or none yet of this epoch).
    fn own_view(&self) -> Option<View> {
        (self.has_view && self.view_origin != ViewOrigin::Unheard).then_some(View {
            epoch: self.view_epoch,
            version: self.seen_version,
            mask: self.seen_mask,
        })
    }

    /// True when this standby would be allowed to take over (it has a complete state and the
    /// primary counts it in the sync set).
    pub fn is_eligible(&self) -> bool {
        self.role() == Role::Standby && self.seen_mask & (1 << self.index) != 0
    }

    /// Events dropped because the caller let the queue fill (see `Events`).
    pub fn events_dropped(&self) -> u64 {
        self.events.dropped()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop()
    }

    pub fn poll_timeout(&self) -> u64 {
        self.next_hb_us.min(self.next_tick_us)
    }

    /// The first call that drives this node (its transport is open by then; it may have been
    /// built long before, while sockets were being set up) starts its failover clock: until a
    /// primary is heard, the primary counts as lost only `max(startup_grace_us,
    /// failover_timeout_us)` after this moment. Time is only ever taken from the caller.
    fn note_driven(&mut self, now_us: u64) {
        if self.driven {
            return;
        }
        self.driven = true;
        if !self.heard_primary {
            let extra_us = self
                .cfg
                .startup_grace_us
                .saturating_sub(self.cfg.failover_timeout_us);
            self.primary_last_rx_us = now_us.saturating_add(extra_us);
        }
    }

    /// The host reports a datagram from control unit `sender`'s configured address, naming
    /// `sender`, whose authentication tag did not verify. The frame itself is never seen
    /// here; only its arrival counts: a standby that hears its primary only through such
    /// frames does not take over (a key mismatch fails closed, as VRRP learnt). Other senders
    /// are ignored.
    pub fn note_unauthenticated(&mut self, now_us: u64, sender: NodeId) {
        let index = self.index;
        if let Some(p) = self
            .peers
            .iter_mut()
            .enumerate()
            .find_map(|(i, p)| (i != index && p.id == sender).then_some(p))
        {
            p.unauthenticated_rx_us = Some(now_us);
        }
    }

    /// The primary whose frames fail authentication while a takeover is withheld for it.
    pub fn key_mismatch(&self) -> Option<NodeId> {
        self.key_mismatch
            .then(|| self.cfg.topology.epoch_owner(self.epoch))
            .flatten()
    }

    /// When a primary was last heard, if ever (for the failover report).
    pub(super) fn last_primary_rx_us(&self) -> u64 {
        if self.heard_primary {
            self.primary_last_rx_us
        } else {
            0
        }
    }

    pub fn handle_timeout(&mut self, now_us: u64) {
        self.note_driven(now_us);
        if now_us >= self.next_hb_us {
            self.next_hb_us = now_us + self.cfg.heartbeat_interval_us;
            for p in &mut self.peers {
                p.hb_due = true;
            }
            if self.role() == Role::Primary {
                self.client_hb_due.iter_mut().for_each(|d| *d = true);
            }
            let kept = self.kept_epoch.is_some();
            for c in &mut self.chans {
                c.commit_dirty = true;
                if let Some(r) = &mut c.xfer_rx {
                    r.ack_dirty = true;
                }
                c.offer_due = kept && !c.ready && c.xfer_rx.is_none();
            }
            for p in &mut self.peers {
                for pc in &mut p.chans {
                    pc.fwd_dirty = true;
                }
            }
        }
        if now_us >= self.next_tick_us {
            self.next_tick_us = now_us + self.cfg.tick_us;
            match self.role() {
                Role::Primary => self.primary_tick(now_us),
                // A joining node still votes on the primary's liveness and its successor (it
                // can never be the successor itself): with three control units, a primary that
                // dies while one is re-joining must not leave the in-sync standby without a
                // majority.
                Role::Standby | Role::Joining => self.standby_tick(now_us),
                Role::Candidate => self.candidate_tick(now_us),
            }
        }
    }

    pub fn handle_datagram(&mut self, now_us: u64, bytes: &[u8]) {
        self.note_driven(now_us);
        // A standby stores each update and prefetches its state slots as it does (see
        // `on_update`); validation starts loading the section headers those prefetches read.
        let standby = matches!(self.role(), Role::Standby | Role::Joining);
        let chans = &self.chans;
        let visit = |u: &crate::wire::UpdateView<'_>| {
            if standby && let Some(c) = chans.get(u.channel() as usize) {
                for e in u.entries() {
                    c.state.prefetch_section_of(&e);
                }
            }
        };
        let Some(frame) = crate::proto::decode_frame(bytes, &mut self.counters, visit) else {
            return;
        };
        let sender = frame.sender();
        if let Some(pi) = self.cfg.topology.cu_index(sender) {
            if pi == self.index {
                self.counters.rejected_unknown_sender += 1;
                return;
            }
            self.on_cu_frame(now_us, pi, &frame);
        } else if let Some(ci) = self.cfg.topology.clients.iter().position(|&c| c == sender) {
            self.on_client_frame(now_us, ci, &frame);
        } else if self.cfg.topology.submitters.contains(&sender) {
            self.on_submitter_frame(now_us, &frame);
        } else {
            self.counters.rejected_unknown_sender += 1;
        }
    }

    fn on_cu_frame(&mut self, now_us: u64, pi: usize, frame: &FrameReader<'_>) {
        let epoch = crate::proto::frame_epoch(frame);
        if self.role() == Role::Primary {
            // Before the heartbeat that may start a transfer: it uses these.
            self.take_standby_offers(pi, frame);
        }
        // Liveness and heartbeat facts are taken from any epoch: a restarted node has none.
        if let Some(hb) = crate::proto::first_heartbeat(frame, &mut self.counters) {
            if hb.view_epoch.get() > epoch.get() {
                // A set announced in an epoch after the frame's own: a lie or a corruption.
                self.counters.rejected_malformed += 1;
            } else if self.heartbeat_is_stale(pi, &hb, epoch, frame.packet_seq()) {
                self.counters.rejected_stale_heartbeats += 1;
            } else {
                self.on_cu_heartbeat(now_us, pi, &hb, epoch);
            }
        }
        if epoch > self.epoch && self.cfg.topology.epoch_owner(epoch) != Some(self.id) {
            self.adopt_higher_epoch(now_us, epoch);
        }
        if epoch != self.epoch || epoch == Epoch::ZERO {
            if frame.msgs().any(|m| !matches!(m, Msg::Heartbeat(_))) {
                self.counters.rejected_stale_epoch += 1;
            }
            return;
        }
        self.counters.frames_rx += 1;
        let from_primary = self.cfg.topology.epoch_owner(epoch) == Some(frame.sender());
        let standby = from_primary && matches!(self.role(), Role::Standby | Role::Joining);
        if standby {
            self.primary_last_rx_us = now_us;
            self.heard_primary = true;
        }
        // Any frame of a primary's epoch (one life) orders its heartbeats: one sent before
        // this frame is stale.
        let seq = frame.packet_seq();
        if from_primary
            && let Some((e, s)) = &mut self.peers[pi].primary_hb_order
            && *e == epoch
        {
            *s = (*s).max(seq);
        }
        for m in frame.msgs() {
            match (self.role(), m) {
                (_, Msg::Heartbeat(_)) => {}
                (Role::Primary, Msg::Commit(b)) => self.on_standby_commit(now_us, pi, &b, seq),
                (Role::Primary, Msg::Nack(n)) => self.on_standby_nack(now_us, pi, &n),
                (Role::Primary, Msg::XferAck(a)) => self.on_xfer_ack(now_us, pi, &a, seq),
                (Role::Primary, Msg::LaReply(_)) => {}
                (Role::Standby | Role::Joining, m) if from_primary => {
                    self.on_primary_msg(now_us, m)
                }
                _ => self.counters.rejected_unexpected += 1,
            }
        }
    }

    fn on_cu_heartbeat(&mut self, now_us: u64, pi: usize, hb: &HeartbeatBody, epoch: Epoch) {
        let p = &mut self.peers[pi];
        p.last_rx_us = Some(now_us);
        p.flags = hb.flags;
        p.epoch = epoch;
        p.seen_mask = hb.sync_mask.get();
        p.seen_version = hb.sync_version.get();
        p.view_epoch = Epoch::from(hb.view_epoch.get());
        p.vote = hb.vote.get();
        if hb.role == crate::wire::ROLE_PRIMARY
            && epoch == self.epoch
            && self.role() != Role::Primary
        {
            if self.pledge.is_some_and(|v| {
                v.epoch == epoch
                    && now_us < v.until_us
                    && self.seen_mask & (1 << v.candidate) != 0
                    && hb.sync_mask.get() & (1 << v.candidate) == 0
            }) {
                self.counters.sync_set_held_for_candidate += 1;
                return;
            }
            let version = hb.sync_version.get();
            if self.has_view && self.seen_version != version && self.seen_mask != 0 {
                self.prev_view = Some((self.seen_version, self.seen_mask));
            }
            self.seen_mask = hb.sync_mask.get();
            self.seen_version = version;
            self.view_epoch = epoch;
            self.view_origin = ViewOrigin::Announced;
            self.has_view = true;
            if hb.flags & crate::wire::HB_FLAG_SWITCHOVER != 0
                && hb.switchover_target() == self.id
                && self.is_eligible()
            {
                self.start_failover(now_us, true);
            }
        }
        if self.role() == Role::Primary {
            self.primary_on_peer_heartbeat(now_us, pi, hb, epoch);
        }
    }

    /// A non-primary's heartbeat older than one already taken from the same life of that unit
    /// (its boot ID, carried in `target`) is stale: acting on it would, say, drop a standby
    /// that finished its transfer since it asked for one. Packet sequence numbers increase per
    /// sender, so order within a life is exact; a new life starts afresh. A primary's
    /// heartbeat is ordered within its epoch (one life per epoch).
    fn heartbeat_is_stale(
        &mut self,
        pi: usize,
        hb: &HeartbeatBody,
        epoch: Epoch,
        seq: u64,
    ) -> bool {
        let p = &mut self.peers[pi];
        if hb.role == crate::wire::ROLE_PRIMARY {
            if p.primary_hb_order
                .is_some_and(|(e, s)| e == epoch && seq <= s)
            {
                return true;
            }
            p.primary_hb_order = Some((epoch, seq));
            return false;
        }
        let boot = hb.boot_id();
        if p.hb_order.is_some_and(|(b, s)| b == boot && seq <= s) {
            return true;
        }
        p.hb_order = Some((boot, seq));
        false
    }

    /// Keeps `view` as the set this life knows from an epoch it leaves, unless the one it
    /// already knows is fresher.
    fn remember_view(&mut self, view: Option<View>) {
        self.known_view = match (self.known_view, view) {
            (Some(k), Some(v)) if k.supersedes(v) => Some(k),
            (k, v) => v.or(k),
        };
    }

    /// A higher epoch exists: whatever we were, we now follow it and need a fresh transfer.
    fn adopt_higher_epoch(&mut self, now_us: u64, epoch: Epoch) {
        if self.cfg.inject == InjectedBug::TwoPrimaries && self.role() == Role::Primary {
            // The plant: a primary that hears a higher epoch keeps acting as primary.
            return;
        }
        let was = self.role();
        let left = if was == Role::Primary {
            // No one in the set now and no one dropped since a commit: this epoch committed
            // nothing (a commit needs a member, who stays in the set or is recorded when
            // dropped), so its empty set says nothing of who holds the committed ops; the set
            // this unit was elected by still does. Remembering the empty set instead, a
            // primary that no standby ever joined (cut off right after taking over) abstained
            // from every vote after stepping down. Seed 42726013 (four units): with one unit
            // restarted and the other voting for the one standby that kept its state, no
            // majority ever formed.
            let holders = self.announced_mask | self.dropped_holding_all;
            (holders != 0).then_some(View {
                epoch: self.epoch,
                version: self.sync_version,
                mask: holders,
            })
        } else {
            self.own_view()
        };
        self.remember_view(left);
        // A standby with every channel keeps its state: the new primary will send only what
        // it lacks, if its state is of the new primary's lineage.
        let keep = was == Role::Standby && self.chans.iter().all(|c| c.ready);
        self.kept_epoch = keep.then_some(self.epoch);
        self.kept_mask = if keep && self.is_eligible() {
            self.seen_mask
        } else {
            0
        };
        self.kept_version = self.seen_version;
        self.kept_view_epoch = self.view_epoch;

        self.epoch = epoch;
        self.max_counter = self.max_counter.max(epoch.counter());
        self.primary_last_rx_us = now_us;
        self.heard_primary = true;
        self.switchover = None;
        self.client_epoch_claim = None;
        for c in &mut self.chans {
            // Stream IDs are only ordered per primary.
            c.newest_xfer_stream = None;
            if keep {
                c.keep_for_catch_up();
                c.offer_due = true;
            } else {
                c.reset_for_transfer();
            }
        }
        for p in &mut self.peers {
            p.xfer = None;
            p.transferring = false;
        }
        self.sync_mask = 0;
        self.seen_mask = 0;
        self.seen_version = 0;
        self.view_epoch = Epoch::ZERO;
        self.view_origin = ViewOrigin::Unheard;
        self.prev_view = None;
        self.enter(role::RoleState::Joining);
    }

    fn on_client_frame(&mut self, now_us: u64, ci: usize, frame: &FrameReader<'_>) {
        let epoch = crate::proto::frame_epoch(frame);
        self.client_last_rx_us[ci] = Some(now_us);
        let client = self.cfg.topology.clients[ci];
        if epoch > self.epoch {
            // The client claims a newer epoch than we know. A client never makes a control
            // unit adopt an epoch (one forged datagram would demote the primary): the claim is
            // counted and only prompts heartbeats to every control unit, so that if a newer
            // primary really exists, its own frames fence us.
            self.counters.rejected_foreign_epoch += 1;
            for p in &mut self.peers {
                p.hb_due = true;
            }
            if self.role() == Role::Primary {
                self.note_client_epoch_claim(now_us, epoch);
            }
            return;
        }
        if let Some(hb) = crate::proto::first_heartbeat(frame, &mut self.counters) {
            if epoch < self.epoch {
                self.client_hb_due[ci] = true;
            }
            if !self.on_client_boot(now_us, ci, hb.boot_id(), hb.flags) {
                // A frame of an earlier life of the client, arriving late.
                self.counters.rejected_stale_heartbeats += 1;
                return;
            }
        }
        if epoch < self.epoch {
            if frame.msgs().any(|m| !matches!(m, Msg::Heartbeat(_))) {
                self.counters.rejected_stale_epoch += 1;
            }
            return;
        }
        self.counters.frames_rx += 1;
        for m in frame.msgs() {
            let channel = match m {
                Msg::Ack(a) => a.channel.get(),
                Msg::Nack(n) => n.channel.get(),
                Msg::ReplayAck(a) => a.channel.get(),
                Msg::LaReply(r) => r.channel.get(),
                Msg::Heartbeat(_) => continue,
                _ => {
                    self.counters.rejected_unexpected += 1;
                    continue;
                }
            };
            // A client may only speak for its own channels.
            if self
                .chans
                .get(channel as usize)
                .is_none_or(|c| c.owner != client)
            {
                self.counters.rejected_unexpected += 1;
                continue;
            }
            match (self.role(), m) {
                (Role::Primary, Msg::Ack(a))
                    if a.generation.get() == self.chans[channel as usize].client_generation =>
                {
                    self.on_client_ack(now_us, channel, a.op.get())
                }
                (Role::Primary, Msg::Nack(n))
                    if n.generation.get() == self.chans[channel as usize].client_generation =>
                {
                    self.on_client_nack(now_us, channel, &n)
                }
                (Role::Primary, Msg::Ack(_) | Msg::Nack(_)) => {
                    self.counters.rejected_stale_epoch += 1
                }
                (Role::Primary, Msg::ReplayAck(a)) => {
                    self.on_replay_ack(now_us, channel, &a, frame.packet_seq())
                }
                (Role::Primary, Msg::LaReply(r)) if r.flags.get() & LA_FLAG_UNKNOWN != 0 => {
                    self.on_client_unknown(now_us, channel, frame.packet_seq())
                }
                (Role::Candidate, Msg::LaReply(r)) => self.on_la_reply(now_us, channel, &r),
                _ => {}
            }
        }
    }

    /// A load client's changes: applied when we are the primary, counted as rejected
    /// otherwise (load clients send to every control unit and let the primary take them).
    fn on_submitter_frame(&mut self, now_us: u64, frame: &FrameReader<'_>) {
        for m in frame.msgs() {
            let Msg::Submit(u) = m else {
                self.counters.rejected_unexpected += 1;
                continue;
            };
            let entries: smallvec::SmallVec<[crate::wire::Entry<'_>; 8]> = u.entries().collect();
            match self.submit(now_us, u.channel(), &entries) {
                Ok(_) => self.counters.submits_accepted += 1,
                Err(_) => self.counters.submits_rejected += 1,
            }
        }
    }

    fn next_stream(&mut self) -> u32 {
        self.stream_counter = self.stream_counter.wrapping_add(1);
        self.stream_counter
    }

    fn heartbeat_body(&self) -> HeartbeatBody {
        let (role, flags, mask) = match self.role() {
            Role::Primary => {
                let f = if self.switchover.is_some() {
                    crate::wire::HB_FLAG_SWITCHOVER
                } else {
                    0
                };
                (crate::wire::ROLE_PRIMARY, f, self.sync_mask)
            }
            Role::Standby | Role::Candidate => {
                let lost = self.role() == Role::Candidate || self.primary_lost;
                // JOINED means "in the sync set, may take over": peers defer to it.
                let joined = self.role() == Role::Candidate || self.is_eligible() || self.standing;
                let f = if joined { HB_FLAG_JOINED } else { 0 }
                    | if lost { HB_FLAG_PRIMARY_LOST } else { 0 };
                (crate::wire::ROLE_STANDBY, f, self.seen_mask)
            }
            Role::Joining => {
                let lost = if self.primary_lost {
                    HB_FLAG_PRIMARY_LOST
                } else {
                    0
                };
                (
                    crate::wire::ROLE_STANDBY,
                    crate::wire::HB_FLAG_NEEDS_TRANSFER | lost,
                    0,
                )
            }
        };
        let (version, view_epoch) = match self.role() {
            Role::Primary => (self.sync_version, self.epoch),
            Role::Joining => (self.seen_version, Epoch::ZERO),
            Role::Standby | Role::Candidate => (self.seen_version, self.view_epoch),
        };
        HeartbeatBody {
            role,
            flags,
            sync_version: version.into(),
            sync_mask: mask.into(),
            boot_or_target: if self.role() == Role::Primary {
                self.switchover.map_or(0, |s| s.target).into()
            } else {
                self.boot_id.into()
            },
            vote: self.vote.into(),
            view_epoch: view_epoch.get().into(),
        }
    }
}

/// A configuration for the unit tests: these control units and one line card (100) owning one
/// channel.
#[cfg(test)]
fn test_config(control_units: &[NodeId]) -> ProtoConfig {
    ProtoConfig::new(crate::proto::Topology {
        control_units: control_units.to_vec(),
        clients: vec![100],
        channel_owner: vec![100],
        submitters: vec![],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::INITIAL_EPOCH;
    use crate::wire::Entry;

    fn standby(grace_us: u64, built_us: u64) -> ControlUnit {
        let mut cfg = test_config(&[1, 2]);
        cfg.startup_grace_us = grace_us;
        ControlUnit::new(cfg, 2, true, 7, built_us)
    }

    /// Drives `cu` with timers only (no primary is ever heard) from `from_us` to `to_us`.
    fn run(cu: &mut ControlUnit, from_us: u64, to_us: u64) {
        let mut t = from_us;
        while t <= to_us {
            cu.handle_timeout(t);
            t += 1_000;
        }
    }

    #[test]
    fn submits_past_a_channel_quota_are_refused_and_counted() {
        let mut cfg = two_units();
        cfg.quota = crate::proto::ChannelQuota {
            max_keys: 3,
            max_value_bytes: 20,
        };
        let mut p = ControlUnit::new(cfg, 1, true, 1, 0);
        let put = |key: u64, value: &'static [u8]| Entry {
            section: 1,
            key,
            value: Some(value),
            private: false,
        };
        for k in 0..3 {
            assert!(p.submit(0, 0, &[put(k, b"12345")]).is_ok());
        }
        // A fourth key: refused. Replacing a held key, even near the limit: fine.
        assert_eq!(p.submit(0, 0, &[put(3, b"1")]), Err(SubmitError::OverQuota));
        assert!(p.submit(0, 0, &[put(2, b"12345")]).is_ok());
        // Bytes: 15 held; replacing 5 with 10 makes 20 (at the limit), with 11 makes 21.
        assert!(p.submit(0, 0, &[put(1, b"1234567890")]).is_ok());
        assert_eq!(
            p.submit(0, 0, &[put(0, b"123456")]),
            Err(SubmitError::OverQuota)
        );
        // A delete frees its key for a new one.
        let delete = Entry {
            section: 1,
            key: 0,
            value: None,
            private: false,
        };
        assert!(p.submit(0, 0, &[delete]).is_ok());
        assert!(p.submit(0, 0, &[put(3, b"1")]).is_ok());
        assert_eq!(p.counters.submits_over_quota, 2);
        assert_eq!(p.state(0).map(|s| s.totals()), Some((3, 16)));
    }

    fn two_units() -> ProtoConfig {
        test_config(&[1, 2])
    }

    /// Runs both units, delivering every frame between them at once, until `done(b)` holds.
    fn pump(
        a: &mut ControlUnit,
        b: &mut ControlUnit,
        mut t: u64,
        done: impl Fn(&ControlUnit) -> bool,
    ) -> u64 {
        fn step(src: &mut ControlUnit, dst: &mut ControlUnit, t: u64, buf: &mut [u8]) {
            src.handle_timeout(t);
            while let Some(tx) = src.poll_transmit(t, buf) {
                if tx.dst == dst.id {
                    dst.handle_datagram(t, &buf[..tx.len]);
                }
            }
        }
        let mut buf = vec![0u8; 1472];
        for _ in 0..10_000 {
            step(a, b, t, &mut buf);
            step(b, a, t, &mut buf);
            if done(b) {
                return t;
            }
            t += 1_000;
        }
        panic!("never done: b is {:?} in epoch {:#x}", b.role(), b.epoch());
    }

    #[test]
    fn restored_epoch_raises_the_next_candidacy() {
        let persisted = Epoch::new(9, 0).unwrap().get();
        let mut a = ControlUnit::new(two_units(), 1, true, 1, 0);
        let mut b = ControlUnit::new(two_units(), 2, false, 2, 0);
        assert_eq!(b.highest_epoch(), 0);
        b.restore_highest_epoch(persisted).unwrap();
        // A lower value changes nothing.
        b.restore_highest_epoch(INITIAL_EPOCH).unwrap();
        assert_eq!(b.highest_epoch(), persisted);
        // It follows the epoch the others still run in, below the restored one...
        let t = pump(&mut a, &mut b, 0, |b| b.is_eligible());
        assert_eq!(b.epoch(), INITIAL_EPOCH);
        assert_eq!(b.highest_epoch(), persisted);
        // ...but the epoch it makes is above everything it persisted.
        b.operator_takeover(t).unwrap();
        assert_eq!(b.epoch(), Epoch::new(10, 1).unwrap().get());
        assert_eq!(b.highest_epoch(), b.epoch());
        pump(&mut a, &mut b, t, |b| b.role() == Role::Primary);
        assert_eq!(a.highest_epoch(), b.epoch(), "the old primary followed");
    }

    #[test]
    fn restore_refuses_corrupt_and_initial_after_later() {
        let mut b = ControlUnit::new(two_units(), 2, false, 2, 0);
        let too_far = Epoch::new(Epoch::MAX_COUNTER + 1, 0).unwrap().get();
        assert!(matches!(
            b.restore_highest_epoch(too_far),
            Err(RestoreError::OutOfRange { .. })
        ));
        assert_eq!(b.highest_epoch(), 0);
        // A unit built in the first epoch cannot take a later one: it would act in the first.
        let mut a = ControlUnit::new(two_units(), 1, true, 1, 0);
        assert!(matches!(
            a.restore_highest_epoch(INITIAL_EPOCH + 1),
            Err(RestoreError::InitialAfterLaterEpoch { .. })
        ));
        a.restore_highest_epoch(INITIAL_EPOCH).unwrap();
        assert_eq!(a.highest_epoch(), INITIAL_EPOCH);
    }

    #[test]
    fn failover_clock_starts_when_driven_not_when_built() {
        // Built at 0, its socket open (first driven) only at 500 ms: the 50 ms failover
        // timeout counts from there.
        let mut cu = standby(0, 0);
        run(&mut cu, 500_000, 545_000);
        assert_eq!(cu.role(), Role::Standby);
        run(&mut cu, 546_000, 560_000);
        assert_eq!(cu.role(), Role::Candidate);
    }

    /// VRRP's lesson: a standby whose primary is heard only through frames that fail
    /// authentication (the keys differ) raises an alarm and never takes over while they come;
    /// once they stop too, the primary is lost and it takes over as usual.
    #[test]
    fn a_key_mismatch_with_the_primary_withholds_the_takeover() {
        let mut a = ControlUnit::new(two_units(), 1, true, 1, 0);
        let mut b = ControlUnit::new(two_units(), 2, true, 2, 0);
        let mut t = pump(&mut a, &mut b, 0, |b| b.is_eligible());
        while b.poll_event().is_some() {}
        // From now on only unverifiable frames come from the primary's address, one per ms,
        // for ten failover timeouts. Reports naming others (a client, itself) change nothing.
        let until = t + 10 * b.cfg.failover_timeout_us;
        while t < until {
            t += 1_000;
            b.note_unauthenticated(t, 1);
            b.note_unauthenticated(t, 100);
            b.note_unauthenticated(t, 2);
            b.handle_timeout(t);
        }
        assert_eq!(b.role(), Role::Standby);
        assert_eq!(b.key_mismatch(), Some(1));
        assert_eq!(b.counters.takeovers_withheld_key_mismatch, 1, "one alarm");
        let alarms = std::iter::from_fn(|| b.poll_event())
            .filter(|e| matches!(e, Event::KeyMismatch { primary: 1, .. }))
            .count();
        assert_eq!(alarms, 1);
        // They stop: a failover timeout later the primary is lost, and b stands.
        let timeout_us = b.cfg.failover_timeout_us;
        run(&mut b, t + 1_000, t + 2 * timeout_us);
        assert_ne!(b.role(), Role::Standby, "it took over");
        assert_eq!(b.key_mismatch(), None);
    }

    /// Reports of unverifiable frames from a unit other than the primary withhold nothing.
    #[test]
    fn unverifiable_frames_from_others_do_not_withhold_a_takeover() {
        let mut cu = standby(0, 0);
        let mut t = 0;
        while t < 100_000 {
            cu.note_unauthenticated(t, 2);
            cu.note_unauthenticated(t, 100);
            cu.handle_timeout(t);
            t += 1_000;
        }
        assert_ne!(cu.role(), Role::Standby, "it took over");
        assert_eq!(cu.counters.takeovers_withheld_key_mismatch, 0);
    }

    #[test]
    fn never_heard_primary_waits_the_startup_grace() {
        let mut cu = standby(1_000_000, 0);
        run(&mut cu, 10_000, 1_005_000);
        assert_eq!(cu.role(), Role::Standby);
        run(&mut cu, 1_006_000, 1_020_000);
        assert_eq!(cu.role(), Role::Candidate);
        assert_eq!(cu.timing.last_primary_rx_us, 0, "no primary was ever heard");
    }
}

#[cfg(test)]
mod standing_tests {
    use super::*;
    use crate::proto::INITIAL_EPOCH;
    use crate::wire::{FrameBuilder, FrameReader, Kind, ROLE_PRIMARY};

    /// Three units: the primary (1) announced {2} and then, having dropped it, the empty set;
    /// then it died. Nothing committed since the empty set, so 2 holds every committed op and
    /// may take over; it must say so (`HB_FLAG_JOINED`), or unit 3, which knows the same two
    /// sets, votes for nobody and no majority ever forms.
    #[test]
    fn a_standby_eligible_by_the_set_before_an_empty_one_announces_it() {
        let cfg = test_config(&[1, 2, 3]);
        let mut s = ControlUnit::new(cfg, 2, true, 7, 0);
        let announce = |s: &mut ControlUnit, t: u64, seq: u64, version: u16, mask: u32| {
            let mut buf = vec![0u8; 256];
            let mut fb = FrameBuilder::new(&mut buf, 1, INITIAL_EPOCH, seq);
            let hb = HeartbeatBody {
                role: ROLE_PRIMARY,
                flags: 0,
                sync_version: version.into(),
                sync_mask: mask.into(),
                boot_or_target: 0.into(),
                vote: 0.into(),
                view_epoch: INITIAL_EPOCH.into(),
            };
            assert!(fb.push(Kind::Heartbeat, &hb));
            let len = fb.finish();
            s.handle_datagram(t, &buf[..len]);
        };
        announce(&mut s, 1_000, 1, 1, 0b010);
        announce(&mut s, 2_000, 2, 2, 0b000);
        assert!(!s.is_eligible(), "its own view is the empty set");
        let mut out = vec![0u8; 2048];
        let mut joined_at = None;
        let mut t = 3_000;
        while t <= 1_000_000 && joined_at.is_none() {
            s.handle_timeout(t);
            while let Some(tx) = s.poll_transmit(t, &mut out) {
                let frame = FrameReader::new(&out[..tx.len]).expect("valid frame");
                for m in frame.msgs() {
                    if let Msg::Heartbeat(h) = m
                        && tx.dst == 3
                        && h.flags & HB_FLAG_PRIMARY_LOST != 0
                        && h.flags & HB_FLAG_JOINED != 0
                        && h.vote.get() == 2
                    {
                        joined_at = Some(t);
                    }
                }
            }
            t += 1_000;
        }
        assert!(
            joined_at.is_some(),
            "the standby never announced that it may take over"
        );
    }
}

#[cfg(test)]
mod view_tests {
    use super::{Epoch, View};

    /// A set of epoch 2 (the current one), or one kept from epoch 1.
    fn view(version: u16, mask: u32, kept: bool) -> View {
        View {
            epoch: Epoch::new(if kept { 1 } else { 2 }, 0).expect("small epoch"),
            version,
            mask,
        }
    }

    #[test]
    fn a_set_announced_in_the_epoch_supersedes_any_kept_one() {
        let announced = view(1, 0b10, false);
        let kept = view(9, 0b1101, true);
        assert!(announced.supersedes(kept));
        assert!(!kept.supersedes(announced));
        assert!(
            !kept.supersedes(view(1, 0, false)),
            "an announced empty set is not yielded to a kept one (it may follow a set that committed)"
        );
    }

    #[test]
    fn kept_sets_order_by_the_version_their_primary_gave_them() {
        // Seed 27365071: one standby kept {1,3,4} (version 4), another {3,4} (version 3).
        let newer = view(4, 0b1101, true);
        let older = view(3, 0b1100, true);
        assert!(newer.supersedes(older));
        assert!(!older.supersedes(newer));
        assert!(
            view(0, 0b1, true).supersedes(view(u16::MAX, 0b11, true)),
            "versions wrap"
        );
    }

    #[test]
    fn sets_of_different_epochs_order_by_epoch_not_by_version() {
        let of = |counter, version| View {
            epoch: Epoch::new(counter, 0).expect("small epoch"),
            version,
            mask: 0b11,
        };
        assert!(of(3, 1).supersedes(of(2, 9)));
        assert!(!of(2, 9).supersedes(of(3, 1)));
        assert!(of(3, 0).supersedes(of(2, u16::MAX)));
    }
}

#[cfg(test)]
mod kept_view_tests {
    use super::*;
    use crate::wire::{FrameBuilder, Kind, ROLE_STANDBY};

    /// Four units. Unit 2 was cut off while a standby of epoch 1, whose primary (unit 1, its
    /// version counter at 10) announced {1,2,3,4}; it never heard epochs 2 and 3. Unit 4 was
    /// in sync in epoch 3, whose primary (unit 3, its own counter at 3) announced {1,3,4} and
    /// committed with it. Both adopted epoch 4 keeping their state, its primary died before
    /// confirming either, and both resumed their kept sets. Versions of different primaries do
    /// not compare: unit 4 must keep its set from epoch 3, not take unit 2's from epoch 1 by
    /// its bigger number (that set names unit 2, which lacks what epoch 3 committed).
    #[test]
    fn a_kept_set_from_a_newer_epoch_supersedes_one_from_an_older_epoch() {
        let cfg = test_config(&[1, 2, 3, 4]);
        let e = |counter| Epoch::new(counter, 0).expect("small epoch");
        let mut s = ControlUnit::new(cfg, 4, true, 7, 0);
        s.epoch = e(4);
        s.enter(role::RoleState::Standby);
        s.has_view = true;
        s.view_origin = ViewOrigin::Kept;
        s.seen_mask = 0b1101;
        s.seen_version = 3;
        s.view_epoch = e(3);
        let mut buf = vec![0u8; 256];
        let mut fb = FrameBuilder::new(&mut buf, 2, e(4).get(), 1);
        let hb = HeartbeatBody {
            role: ROLE_STANDBY,
            flags: HB_FLAG_JOINED | HB_FLAG_PRIMARY_LOST,
            sync_version: 10.into(),
            sync_mask: 0b1111.into(),
            boot_or_target: 9.into(),
            vote: 2.into(),
            view_epoch: e(1).get().into(),
        };
        assert!(fb.push(Kind::Heartbeat, &hb));
        let len = fb.finish();
        // First a lie: a set "announced" in epoch 5, in a frame of epoch 4. Rejected and
        // counted, and its set not taken.
        let mut lie_buf = vec![0u8; 256];
        let mut lie = FrameBuilder::new(&mut lie_buf, 2, e(4).get(), 1);
        assert!(lie.push(
            Kind::Heartbeat,
            &HeartbeatBody {
                view_epoch: e(5).get().into(),
                ..hb
            }
        ));
        let lie_len = lie.finish();
        let (malformed, before) = (s.counters.rejected_malformed, s.peers[1].view_epoch);
        s.handle_datagram(500, &lie_buf[..lie_len]);
        assert_eq!(s.counters.rejected_malformed, malformed + 1);
        assert_eq!(s.peers[1].view_epoch, before, "the lie was taken");
        s.handle_datagram(1_000, &buf[..len]);
        let view = s.effective_mask(1_000).expect("a view to vote by");
        assert_eq!(view.mask, 0b1101, "took the set of an older epoch");
    }
}

#[cfg(test)]
mod remembered_set_tests {
    use super::*;

    /// A primary of three units whose sync set is {2, 3}; it then drops unit 3.
    fn primary_dropping_unit_3() -> ControlUnit {
        let cfg = test_config(&[1, 2, 3]);
        let mut p = ControlUnit::new(cfg, 1, true, 7, 0);
        assert_eq!(p.role(), Role::Primary);
        p.announce_sync_set();
        p.sync_mask = 0b110;
        p.announce_sync_set();
        p.dropped_holding_all = 0;
        p.sync_mask = 0b010;
        p.announce_sync_set();
        p
    }

    /// The set a former primary remembers names the unit it dropped while nothing committed
    /// since (seed 36561359), and no longer once a commit advanced without it.
    #[test]
    fn a_dropped_unit_counts_until_the_next_commit() {
        let e = |counter| Epoch::new(counter, 0).expect("small epoch");
        let mut p = primary_dropping_unit_3();
        assert_eq!(p.dropped_holding_all, 0b100);
        p.adopt_higher_epoch(1_000, e(p.epoch.counter() + 1));
        assert_eq!(p.known_view.map(|k| k.mask), Some(0b110));

        let mut p = primary_dropping_unit_3();
        let (epoch, version) = (p.epoch, p.sync_version);
        let peer = &mut p.peers[1];
        (peer.seen_mask, peer.seen_version, peer.epoch) = (0b010, version, epoch);
        peer.chans[0].applied = OpId::new(1);
        p.chans[0].next_op = OpId::new(2);
        p.chans[0].client_acked = OpId::new(1);
        p.advance_commit(0);
        assert_eq!(
            p.chans[0].commit,
            OpId::new(1),
            "op 1 committed with unit 2"
        );
        assert_eq!(p.dropped_holding_all, 0);
        p.adopt_higher_epoch(1_000, e(epoch.counter() + 1));
        assert_eq!(p.known_view.map(|k| k.mask), Some(0b010));
    }
}
