//! The primary role: assign op IDs, apply, retain for retransmission, forward client acks to the
//! standbys, advance the commit watermark, replay to clients and transfer state to joiners.

use super::lives::Life;
use super::pacing;
use super::{ControlError, ControlUnit, PeerChan};
use crate::proto::bulk::{BulkKind, BulkTx};
use crate::proto::state::{ChannelState, PrefetchHint};
use crate::proto::{Epoch, Event, InjectedBug, NodeId, OpId, Role, SectionMask};
use crate::wire::{
    BulkAck, CommitBody, Entry, HB_FLAG_NEEDS_TRANSFER, HeartbeatBody, MIN_FRAME_BYTES, NackBody,
    ROLE_STANDBY, UpdateFixed, entry_wire_len,
};
use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The retention window of this channel is full: retry after commits advance.
    #[error("backpressure: the channel's retention window is full")]
    Backpressure,
    #[error("this node is not the primary")]
    NotPrimary,
    #[error("no such channel")]
    UnknownChannel,
    #[error("change does not fit in one frame")]
    TooLarge,
    #[error("a change needs at most 65535 public and 65535 private entries, each in section 0..64")]
    BadEntry,
    /// The channel would hold more keys or value bytes than its quota allows.
    #[error("over the channel's quota of keys or value bytes")]
    OverQuota,
}

impl ControlUnit {
    /// Applies a change and queues it for the channel's client and every standby. Returns the
    /// op ID (valid together with the current `epoch()`).
    pub fn submit(
        &mut self,
        now_us: u64,
        channel: u32,
        entries: &[Entry<'_>],
    ) -> Result<u64, SubmitError> {
        if self.role() != Role::Primary || self.switchover.is_some() {
            return Err(SubmitError::NotPrimary);
        }
        let max_bytes = self.cfg.max_frame_bytes - MIN_FRAME_BYTES - 4 - size_of::<UpdateFixed>();
        let c = self
            .chans
            .get_mut(channel as usize)
            .ok_or(SubmitError::UnknownChannel)?;
        if c.ring.is_full() {
            if self.cfg.inject != InjectedBug::OverrunBound {
                return Err(SubmitError::Backpressure);
            }
            // The plant: retention grows past `window_ops` instead of pushing back.
            c.ring.grow_for_injected_bug();
        }
        let size: usize = entries.iter().map(|e| entry_wire_len(e)).sum();
        if size > max_bytes {
            return Err(SubmitError::TooLarge);
        }
        if entries
            .iter()
            .any(|e| e.section >= 64 || e.value.is_some_and(|v| v.len() > u16::MAX as usize))
            || entries.len() > u16::MAX as usize
        {
            return Err(SubmitError::BadEntry);
        }
        if self.cfg.quota.would_exceed(&c.state, entries) {
            self.counters.submits_over_quota += 1;
            return Err(SubmitError::OverQuota);
        }
        let op = c.next_op;
        // Op IDs count up from 1 by one per submit: they never reach `u64::MAX`.
        c.next_op = op.saturating_add(1);
        c.ring.push_entries(op, entries);
        for e in entries {
            c.state.apply(e);
        }
        if c.client_progress_us == 0 || c.client_acked.next() == Some(op) {
            c.client_progress_us = now_us;
        }
        Ok(op.get())
    }

    /// Submits `count` one-entry changes in order, the `i`th being `change(i)` (channel and
    /// entry), each prefetch stage ([`crate::proto::PREFETCH_STAGES`]) first run on the change
    /// its distance ahead: the state lines of a batch load while earlier changes apply, where
    /// one `submit` after another waits on each line in turn. `taken(i, result)` sees each
    /// result; `false` stops the batch, leaving the `i`th change and those after it untaken.
    /// Returns how many were taken.
    pub fn submit_batch<'e>(
        &mut self,
        now_us: u64,
        count: usize,
        change: impl Fn(usize) -> (u32, Entry<'e>),
        mut taken: impl FnMut(usize, Result<u64, SubmitError>) -> bool,
    ) -> usize {
        for i in 0..count {
            for (distance, hint) in crate::proto::PREFETCH_STAGES {
                if i + distance < count {
                    let (channel, entry) = change(i + distance);
                    self.prefetch(channel, &entry, hint);
                }
            }
            let (channel, entry) = change(i);
            let result = self.submit(now_us, channel, &[entry]);
            if !taken(i, result) {
                return i;
            }
        }
        count
    }

    /// Runs prefetch stage `hint` for the state a later `submit` of `entry` on `channel` will
    /// write (see [`crate::proto::PREFETCH_STAGES`]); a hint only, never an error. Hosts get it
    /// through [`ControlUnit::submit_batch`].
    fn prefetch(&self, channel: u32, entry: &Entry<'_>, hint: PrefetchHint) {
        if let Some(c) = self.chans.get(channel as usize) {
            hint(&c.state, ChannelState::table_of(entry), entry.key);
        }
    }

    /// Primary: ask standby `target` to take over now (planned switchover). Submissions are
    /// refused from here on; the standby takes over within a heartbeat interval.
    pub fn request_switchover(&mut self, target: NodeId) -> Result<(), ControlError> {
        if self.role() != Role::Primary {
            return Err(ControlError::NotPrimary);
        }
        let pi = self
            .cfg
            .topology
            .cu_index(target)
            .ok_or(ControlError::UnknownNode)?;
        if pi == self.index || self.sync_mask & (1 << pi) == 0 {
            return Err(ControlError::NotEligible);
        }
        self.switchover = Some(super::Switchover { target });
        self.peers[pi].hb_due = true;
        Ok(())
    }

    /// A client frame claims `epoch`, above ours (see [`super::ClientEpochClaim`]).
    pub(super) fn note_client_epoch_claim(&mut self, now_us: u64, epoch: Epoch) {
        match &mut self.client_epoch_claim {
            Some(c) if c.epoch >= epoch => c.last_us = now_us,
            claim => {
                *claim = Some(super::ClientEpochClaim {
                    epoch,
                    first_us: now_us,
                    last_us: now_us,
                })
            }
        }
    }

    /// Asks the owner of the epoch line cards are stuck in to take over, once the claim has
    /// lasted a failover timeout and that owner has joined our sync set since it began (see
    /// [`super::ClientEpochClaim`]). A claim not repeated for a failover timeout rests, and
    /// its start is kept for when it is repeated: a stuck line card claims only in answer to
    /// our frames, and one that hears none for a while (deaf, or cut off one way) then claims
    /// again. Seed 33702525: the claim lapsed while the line card was deaf and began anew
    /// after the owner had re-joined, so no join ever came after its start, and the line card
    /// stayed in the dead candidate's epoch for good.
    fn switch_over_for_stuck_clients(&mut self, now_us: u64) {
        let timeout = self.cfg.failover_timeout_us;
        let Some(claim) = self.client_epoch_claim else {
            return;
        };
        if claim.epoch <= self.epoch {
            self.client_epoch_claim = None;
            return;
        }
        if now_us >= claim.last_us + timeout {
            return;
        }
        if now_us < claim.first_us + timeout || self.switchover.is_some() {
            return;
        }
        let Some(owner) = self.cfg.topology.epoch_owner(claim.epoch) else {
            return;
        };
        let joined_since = self
            .cfg
            .topology
            .cu_index(owner)
            .is_some_and(|i| self.peers[i].joined_us > claim.first_us);
        if joined_since && self.request_switchover(owner).is_ok() {
            self.client_epoch_claim = None;
            self.counters.switchovers_for_stuck_clients += 1;
        }
    }

    pub(super) fn on_client_ack(&mut self, now_us: u64, channel: u32, op: u64) {
        let op = OpId::new(op);
        let c = &mut self.chans[channel as usize];
        if c.replay.is_some() {
            return;
        }
        if op >= c.next_op {
            // Acks beyond what we assigned are forged or from a previous life of the channel.
            self.counters.rejected_unexpected += 1;
            return;
        }
        if op > c.client_acked {
            c.client_acked = op;
            c.client_progress_us = now_us;
            if self.cfg.ack_events {
                self.events.push(Event::ClientAcked {
                    channel,
                    through: op,
                });
            }
            if c.client_cursor <= op {
                // Below `next_op`: there is an op after it.
                c.client_cursor = op.saturating_add(1);
            }
            for p in &mut self.peers {
                p.chans[channel as usize].fwd_dirty = true;
            }
            self.prune(channel);
        }
    }

    pub(super) fn on_client_nack(&mut self, now_us: u64, channel: u32, n: &NackBody) {
        let gap_us = pacing::nack_gap_us(&self.cfg);
        let c = &mut self.chans[channel as usize];
        let from = OpId::new(n.from.get());
        if c.replay.is_none() && from > c.client_acked && from < c.client_cursor {
            if !c.client_nack_pacer.try_start(now_us, gap_us) {
                self.counters.rejected_nack_rate += 1;
                return;
            }
            c.client_cursor = from;
            self.counters.retransmits += 1;
        }
    }

    pub(super) fn on_replay_ack(&mut self, now_us: u64, channel: u32, a: &BulkAck, seq: u64) {
        let client = self.chans[channel as usize].owner;
        let c = &mut self.chans[channel as usize];
        let Some(r) = &mut c.replay else { return };
        r.on_ack(a, now_us);
        if !r.done {
            return;
        }
        let base = r.base_op;
        c.replay_pacer
            .finish(now_us, pacing::stream_gap_us(&self.cfg));
        self.counters.replay_bytes += r.payload_bytes;
        // The client acknowledged the end of a replay, full or selective, with this frame:
        // it has a history again. A "no history" answer it sent before (mid-replay, delayed)
        // is stale (seed 18206893: a selective replay's client, in sync, replayed in full
        // again on such an answer, inv9).
        c.client_known_seq = c.client_known_seq.max(seq);
        c.client_generation = r.stream;
        c.replay = None;
        if base > c.client_acked {
            c.client_acked = base;
        }
        c.client_cursor = c.client_acked.saturating_add(1);
        c.client_progress_us = now_us;
        for p in &mut self.peers {
            p.chans[channel as usize].fwd_dirty = true;
        }
        self.events.push(Event::ReplayFinished { channel, client });
        self.prune(channel);
    }

    pub(super) fn on_standby_commit(&mut self, now_us: u64, pi: usize, b: &CommitBody, seq: u64) {
        let channel = b.channel.get();
        let Some(c) = self.chans.get(channel as usize) else {
            self.counters.rejected_unexpected += 1;
            return;
        };
        let last = c.last_op();
        let pc = &mut self.peers[pi].chans[channel as usize];
        if !pc.ready {
            return;
        }
        if seq < pc.xfer_done_seq {
            self.counters.rejected_stale_commit += 1;
            return;
        }
        let (applied, held) = (OpId::new(b.applied.get()), OpId::new(b.held.get()));
        if held > last || applied > held.max(pc.xfer_top) {
            self.counters.rejected_unexpected += 1;
            return;
        }
        if held > pc.held {
            pc.held = held;
            pc.progress_us = now_us;
        }
        pc.applied = pc.applied.max(applied);
        if pc.cursor <= pc.held {
            // At most `last`: there is an op after it.
            pc.cursor = pc.held.saturating_add(1);
        }
        self.try_complete_join(now_us, pi);
        self.advance_commit(channel);
    }

    pub(super) fn on_standby_nack(&mut self, now_us: u64, pi: usize, n: &NackBody) {
        let channel = n.channel.get();
        let gap_us = pacing::nack_gap_us(&self.cfg);
        let Some(pc) = self.peers[pi].chans.get_mut(channel as usize) else {
            self.counters.rejected_unexpected += 1;
            return;
        };
        let from = OpId::new(n.from.get());
        if pc.ready && from > pc.held && from < pc.cursor {
            if !pc.nack_pacer.try_start(now_us, gap_us) {
                self.counters.rejected_nack_rate += 1;
                return;
            }
            pc.cursor = from;
            self.counters.retransmits += 1;
        }
    }

    /// Primary: the sync set as it is now becomes the announced one, under a new version,
    /// if it changed. Members it lost are recorded in `dropped_holding_all`.
    pub(super) fn announce_sync_set(&mut self) {
        if self.sync_mask != self.announced_mask {
            self.dropped_holding_all |= self.announced_mask & !self.sync_mask;
            self.announced_mask = self.sync_mask;
            self.sync_version = self.sync_version.wrapping_add(1);
        }
    }

    /// Commit = applied by every standby of the sync set, once each has confirmed the current
    /// sync set. An empty sync set commits nothing: a change is only promised to survive a
    /// failover once a standby holds it.
    pub(super) fn advance_commit(&mut self, channel: u32) {
        if self.sync_mask == 0 {
            return;
        }
        // The current set must have been announced, under its own version: a set that shrank
        // back to an earlier one ({3} -> {1,3} -> {3}) would otherwise be confirmed by a
        // member's acknowledgement of the earlier one, sent before it left for a newer epoch
        // (seed 13085970: op 71 committed on the old primary with a standby that had already
        // voted for the new one, which cut at 70).
        if self.announced_mask != self.sync_mask {
            return;
        }
        let mut low = u64::MAX;
        for (i, p) in self.peers.iter().enumerate() {
            if self.sync_mask & (1 << i) == 0 {
                continue;
            }
            // Each member must have acknowledged this sync set, by version, in our epoch: a
            // unit that left for a newer epoch may announce an equal mask of that epoch's set
            // (seed 4022943).
            if p.seen_mask != self.sync_mask
                || p.seen_version != self.sync_version
                || p.epoch != self.epoch
            {
                return;
            }
            let pc = &p.chans[channel as usize];
            low = low.min(
                if self.cfg.inject == InjectedBug::CommitBeforeStandbyApplied {
                    pc.held.get()
                } else {
                    pc.applied.get()
                },
            );
        }
        let c = &mut self.chans[channel as usize];
        let through = OpId::new(low).min(c.last_op()).min(c.client_acked);
        if through > c.commit {
            c.commit = through;
            self.dropped_holding_all = 0;
            self.events.push(Event::Committed {
                channel,
                epoch: self.epoch,
                through,
            });
            self.prune(channel);
        }
    }

    /// Drops retained ops nobody can ask for again.
    pub(super) fn prune(&mut self, channel: u32) {
        let c = &mut self.chans[channel as usize];
        let mut limit = c.commit.min(c.client_acked);
        if self.catch_up_until_us.is_some() {
            limit = limit.min(c.catch_up_floor);
        }
        for p in &self.peers {
            let pc = &p.chans[channel as usize];
            if p.transferring && (pc.ready || pc.xfer_top > OpId::ZERO) {
                limit = limit.min(pc.held.max(pc.xfer_top));
            }
        }
        if limit >= c.ring.base() {
            c.ring.prune_through(limit.min(c.ring.top()));
        }
    }

    pub(super) fn primary_on_peer_heartbeat(
        &mut self,
        now_us: u64,
        pi: usize,
        hb: &HeartbeatBody,
        epoch: Epoch,
    ) {
        let bit = 1u32 << pi;
        let p = &mut self.peers[pi];
        if hb.flags & HB_FLAG_NEEDS_TRANSFER != 0 {
            let boot = hb.boot_id();
            if self.sync_mask & bit != 0 {
                self.sync_mask &= !bit;
                self.events.push(Event::StandbyDropped { standby: p.id });
            }
            if !p.transferring || p.boot_id != boot {
                if p.transfer_pacer.ready(now_us) {
                    p.boot_id = boot;
                    self.start_transfer(now_us, pi);
                } else {
                    // It asks again with every heartbeat.
                    self.counters.rejected_transfer_rate += 1;
                }
            }
        } else if hb.role == ROLE_STANDBY
            && epoch == self.epoch
            && self.sync_mask & bit == 0
            && !p.transferring
        {
            // A standby that believes it is in sync but that we dropped (it fell silent): its
            // state may miss ops that left retention, so it re-joins through a transfer.
            if p.transfer_pacer.ready(now_us) {
                self.start_transfer(now_us, pi);
            } else {
                self.counters.rejected_transfer_rate += 1;
            }
        }
        for c in 0..self.chans.len() {
            self.advance_commit(c as u32);
        }
    }

    pub(super) fn primary_tick(&mut self, now_us: u64) {
        self.start_owed_replays(now_us);
        self.switch_over_for_stuck_clients(now_us);
        let rto = self.cfg.rto_us;
        let drop_us = self.cfg.drop_timeout_us;
        // The retention pinned for re-joining standbys' catch-up ends after a drop timeout, or
        // as soon as every other unit is in sync or past the start of its transfer.
        if let Some(until) = self.catch_up_until_us {
            let me = self.index;
            let all_started = self.peers.iter().enumerate().all(|(i, p)| {
                i == me || self.sync_mask & (1 << i) != 0 || (p.transferring && p.xfer.is_none())
            });
            if now_us >= until || all_started {
                self.catch_up_until_us = None;
                for ch in 0..self.chans.len() as u32 {
                    self.prune(ch);
                }
            }
        }
        let pinned = self.switchover.map(|s| s.target);
        // Drop silent standbys from the sync set (not a switchover target: see `Switchover`).
        for i in 0..self.peers.len() {
            let bit = 1u32 << i;
            let silent = self.peers[i]
                .last_rx_us
                .is_none_or(|t| now_us >= t + drop_us)
                && pinned != Some(self.peers[i].id);
            if silent && (self.sync_mask & bit != 0 || self.peers[i].transferring) {
                self.sync_mask &= !bit;
                let p = &mut self.peers[i];
                p.transferring = false;
                p.xfer = None;
                p.chans.iter_mut().for_each(|pc| pc.ready = false);
                self.events.push(Event::StandbyDropped { standby: p.id });
            }
        }
        for ci in 0..self.chans.len() {
            let c = &mut self.chans[ci];
            let last = c.last_op();
            if let Some(r) = &mut c.replay {
                r.on_tick(now_us, rto);
            } else if c.client_acked < last && now_us >= c.client_progress_us + rto {
                // Tail probe: nothing acked for an RTO, resend from the first unacked op.
                c.client_cursor = c.client_acked.saturating_add(1);
                c.client_progress_us = now_us;
                self.counters.retransmits += 1;
            }
            // Our own entry in `peers` never hears a commit: probing it would only count.
            let me = self.index;
            for (pi, p) in self.peers.iter_mut().enumerate() {
                if pi == me {
                    continue;
                }
                let pc = &mut p.chans[ci];
                if pc.ready && pc.held < last && now_us >= pc.progress_us + rto {
                    // Below `last`: there is an op after it.
                    pc.cursor = pc.held.saturating_add(1);
                    pc.progress_us = now_us;
                    self.counters.retransmits += 1;
                }
            }
        }
        for p in &mut self.peers {
            if let Some(x) = &mut p.xfer {
                x.on_tick(now_us, rto);
            }
        }
    }

    /// Starts a full state transfer to a (re)joining standby, one channel at a time.
    fn start_transfer(&mut self, now_us: u64, pi: usize) {
        let gap_us = pacing::stream_gap_us(&self.cfg);
        let p = &mut self.peers[pi];
        p.transfer_pacer.start(now_us, gap_us);
        p.transferring = true;
        p.xfer = None;
        for pc in &mut p.chans {
            *pc = PeerChan {
                cursor: OpId::FIRST,
                offer: pc.offer,
                ..Default::default()
            };
        }
        self.next_transfer_channel(now_us, pi, 0);
    }

    /// A re-joining standby's offers of the state it kept (LA_REPLY: its position and the
    /// epoch whose primary sent it), one per channel. They come with its heartbeat: a
    /// heartbeat frame replaces whatever the unit offered before (a unit that has since lost
    /// its state offers nothing).
    pub(super) fn take_standby_offers(&mut self, pi: usize, frame: &crate::wire::FrameReader<'_>) {
        if frame.contains(crate::wire::Kind::Heartbeat) {
            self.peers[pi]
                .chans
                .iter_mut()
                .for_each(|pc| pc.offer = None);
        }
        // Every standby frame passes here: parse bodies only when an offer is there.
        if crate::proto::frame_epoch(frame) != self.epoch
            || !frame.contains(crate::wire::Kind::LaReply)
        {
            return;
        }
        for m in frame.msgs() {
            if let crate::wire::Msg::LaReply(r) = m {
                match self.peers[pi].chans.get_mut(r.channel.get() as usize) {
                    Some(pc) => {
                        pc.offer =
                            Some((r.data_epoch.get().into(), OpId::new(r.last_applied.get())))
                    }
                    None => self.counters.rejected_unexpected += 1,
                }
            }
        }
    }

    fn next_transfer_channel(&mut self, now_us: u64, pi: usize, channel: usize) {
        if channel == self.chans.len() {
            self.peers[pi].xfer = None;
            self.try_complete_join(now_us, pi);
            return;
        }
        let stream = self.next_stream();
        let c = &self.chans[channel];
        // A standby that kept its state at op `pos` of our lineage, with every op above it
        // still retained here with its body (not only the cookie of an op inside a snapshot we
        // took ourselves), gets no entries: only our history, then ops `pos + 1..` as
        // ordinary updates.
        let catch_up = self.peers[pi].chans[channel]
            .offer
            .take()
            .filter(|&(epoch, pos)| {
                c.history.agrees_with(epoch, pos)
                    && pos < c.next_op
                    && pos
                        .range_after(c.last_op())
                        .all(|op| c.ring.get(op).is_some_and(|s| !s.preapplied))
            })
            .map(|(_, pos)| pos);
        let c = &self.chans[channel];
        let (mask, top) = match catch_up {
            Some(pos) => (SectionMask::EMPTY, pos),
            None => (SectionMask::ALL, c.last_op()),
        };
        // Ops kept by a failover cut are committed before their client acks them: the
        // snapshot counts them as applied, so the joiner never trails the commit watermark.
        let acked = match catch_up {
            Some(pos) => pos,
            None => c.client_acked.max(c.commit).min(top),
        };
        let tx = BulkTx::snapshot(
            BulkKind::Xfer,
            stream,
            c.id,
            &c.state,
            mask,
            catch_up.is_none(),
            top,
            acked,
            c.history.segments(),
            now_us,
        );
        let cookies: Vec<SectionMask> = acked
            .range_after(top)
            .map(|op| c.ring.get(op).map_or(SectionMask::ALL, |s| s.cookie))
            .collect();
        self.counters.xfer_bytes += tx.payload_bytes;
        self.counters.xfer_catch_ups += u64::from(catch_up.is_some());
        let pc = &mut self.peers[pi].chans[channel];
        pc.xfer_top = top;
        pc.preapplied = cookies;
        // `acked` is at most `top`, an op assigned: there is an op after it.
        pc.preapplied_from = acked.saturating_add(1);
        self.peers[pi].xfer = Some(tx);
    }

    /// A transferred standby enters the sync set once it has applied everything committed
    /// (until then it could not take over without losing a committed op).
    pub(super) fn try_complete_join(&mut self, now_us: u64, pi: usize) {
        let gap_us = pacing::stream_gap_us(&self.cfg);
        let p = &mut self.peers[pi];
        if !p.transferring || p.xfer.is_some() {
            return;
        }
        let caught_up = p
            .chans
            .iter()
            .zip(&self.chans)
            .all(|(pc, c)| pc.ready && pc.applied >= c.commit);
        if caught_up {
            p.transferring = false;
            p.transfer_pacer.finish(now_us, gap_us);
            p.hb_due = true;
            self.sync_mask |= 1 << pi;
            p.joined_us = now_us;
            self.events.push(Event::StandbyJoined { standby: p.id });
        }
    }

    pub(super) fn on_xfer_ack(&mut self, now_us: u64, pi: usize, a: &BulkAck, seq: u64) {
        let p = &mut self.peers[pi];
        let Some(x) = &mut p.xfer else { return };
        if x.channel != a.channel.get() || x.stream != a.stream.get() {
            return;
        }
        // An ack of this transfer comes from the life that asked for it (frames carry no boot
        // ID, streams do): it orders that life's heartbeats, so a NEEDS_TRANSFER sent before
        // the ack that completes the join is stale.
        if let Some((boot, s)) = &mut p.hb_order
            && *boot == p.boot_id
        {
            *s = (*s).max(seq);
        }
        x.on_ack(a, now_us);
        if !x.done {
            return;
        }
        let channel = x.channel as usize;
        let acked = x.acked_op;
        let pc = &mut p.chans[channel];
        pc.ready = true;
        pc.applied = acked;
        pc.held = acked;
        pc.xfer_done_seq = seq;
        // Our own snapshot's position, an op assigned: there is an op after it.
        pc.cursor = acked.saturating_add(1);
        pc.progress_us = now_us;
        pc.fwd_dirty = true;
        self.next_transfer_channel(now_us, pi, channel + 1);
    }

    /// A client heartbeat carries the client's boot ID. A new one (after one we knew) is a new
    /// life of the client: whatever we knew of its channels is void, and what it holds came
    /// from somewhere else (say, a stale primary that replayed to it). The primary replays
    /// all its channels in full (keeping a full replay already under way); a candidate
    /// replays in full those it already resolved. Returns false for a boot ID of a life already
    /// replaced (a late frame of it): the caller drops the frame.
    pub(super) fn on_client_boot(&mut self, now_us: u64, ci: usize, boot: u32, flags: u8) -> bool {
        if self.cfg.inject == InjectedBug::ReplayToInSyncClient
            && self.role() == Role::Primary
            && flags & HB_FLAG_NEEDS_TRANSFER != 0
        {
            // The plant (the old per-client rule): a client with any channel unknown gets a
            // full replay of every channel not already being replayed in full.
            for k in 0..self.client_chans[ci].len() {
                let ch = self.client_chans[ci][k];
                if !self.chans[ch as usize].full_replay_under_way() {
                    self.start_replay(now_us, ch, SectionMask::ALL, true);
                }
            }
        }
        match self.client_lives[ci].note(boot, now_us, self.cfg.drop_timeout_us) {
            Life::Past => return false,
            Life::Current => return true,
            Life::New => {}
        }
        for k in 0..self.client_chans[ci].len() {
            let ch = self.client_chans[ci][k];
            let c = &mut self.chans[ch as usize];
            c.client_known_seq = 0;
            // A full replay under way serves any life: the new one may even be finishing it.
            let full_under_way = c.full_replay_under_way();
            let paced_out = !c.replay_pacer.ready(now_us);
            match self.role() {
                Role::Primary if !full_under_way && paced_out => {
                    // Started by `start_owed_replays` once the pacer allows.
                    self.chans[ch as usize].full_replay_owed = true;
                    self.counters.rejected_replay_rate += 1;
                }
                Role::Primary if !full_under_way => {
                    self.start_replay(now_us, ch, SectionMask::ALL, true)
                }
                Role::Candidate => {
                    if let Some(tc) = self
                        .takeover_mut()
                        .map(|t| &mut t.chans[ch as usize])
                        .filter(|tc| !tc.pending)
                    {
                        tc.replay = Some(SectionMask::ALL);
                    }
                }
                _ => {}
            }
        }
        true
    }

    /// The client says `channel` has no trustworthy history (a "no history" LAST-APPLIED
    /// answer, sent unasked once per heartbeat interval): replay that channel in full, unless
    /// a full replay is already under way or the answer predates the last replay we finished.
    pub(super) fn on_client_unknown(&mut self, now_us: u64, channel: u32, seq: u64) {
        let c = &self.chans[channel as usize];
        if seq <= c.client_known_seq {
            self.counters.rejected_stale_unknown += 1;
            return;
        }
        if c.full_replay_under_way() {
            return;
        }
        if !c.replay_pacer.ready(now_us) {
            // The client repeats the answer every heartbeat interval.
            self.counters.rejected_replay_rate += 1;
            return;
        }
        self.start_replay(now_us, channel, SectionMask::ALL, true);
    }

    /// Starts the full replays owed to new lives of line cards whose pacers now allow them
    /// (a full replay already under way serves any life, and pays the debt).
    pub(super) fn start_owed_replays(&mut self, now_us: u64) {
        for ch in 0..self.chans.len() {
            let c = &mut self.chans[ch];
            if !c.full_replay_owed {
                continue;
            }
            if c.full_replay_under_way() {
                c.full_replay_owed = false;
            } else if c.replay_pacer.ready(now_us) {
                c.full_replay_owed = false;
                self.start_replay(now_us, ch as u32, SectionMask::ALL, true);
            }
        }
    }

    /// Replays the current state of `sections` of `channel` to its client.
    pub(super) fn start_replay(
        &mut self,
        now_us: u64,
        channel: u32,
        sections: SectionMask,
        full: bool,
    ) {
        let stream = self.next_stream();
        let gap_us = pacing::stream_gap_us(&self.cfg);
        let c = &mut self.chans[channel as usize];
        c.replay_pacer.start(now_us, gap_us);
        // A full replay serves any life of the client: it pays what a new life was owed (else
        // that debt would start a second one, to a client this one has put in sync).
        if sections == SectionMask::ALL {
            c.full_replay_owed = false;
        }
        let base = c.last_op();
        let tx = BulkTx::snapshot(
            BulkKind::Replay,
            stream,
            channel,
            &c.state,
            sections,
            false,
            base,
            OpId::ZERO,
            std::iter::empty(),
            now_us,
        );
        let full_bytes = c.state.wire_bytes(SectionMask::ALL);
        self.counters.replays_started += 1;
        if let Some(f) = &mut c.last_failover
            && f.epoch == self.epoch.get()
        {
            f.replay_sections |= sections;
            f.replay_bytes += tx.payload_bytes;
            f.full_replay_bytes += full_bytes;
        }
        self.events.push(Event::ReplayStarted {
            channel,
            client: c.owner,
            sections,
            full,
            bytes: tx.payload_bytes,
            full_bytes,
            base_op: base,
        });
        c.replay = Some(tx);
    }
}
