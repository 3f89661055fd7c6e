//! The standby role: hold every update in the per-channel pending ring, apply an op only once
//! its ack has arrived and every lower op is applied [0049], report the commit watermark, and
//! take a full state transfer when (re)joining.

use super::role::RoleState;
use super::{ControlUnit, ViewOrigin};
use crate::proto::bulk::{BulkRx, is_stale_stream};
use crate::proto::state::{ChannelState, PRIVATE_SECTION};
use crate::proto::{Epoch, Event, InjectedBug, OpId, PREFETCH_STAGES, Role};
use crate::wire::{
    BULK_FLAG_PRIVATE, HB_FLAG_JOINED, HB_FLAG_PRIMARY_LOST, Msg, UPDATE_FLAG_PREAPPLIED,
    UpdateView,
};

impl ControlUnit {
    pub(super) fn on_primary_msg(&mut self, now_us: u64, m: Msg<'_>) {
        match m {
            Msg::Update(u) => self.on_update(now_us, &u),
            Msg::FwdAck(a) => {
                let Some(c) = self.chans.get_mut(a.channel.get() as usize) else {
                    self.counters.rejected_unexpected += 1;
                    return;
                };
                if c.ready && OpId::new(a.op.get()) > c.acked {
                    c.acked = OpId::new(a.op.get());
                    self.try_apply(a.channel.get());
                }
            }
            Msg::XferBegin(b) => {
                let Some(c) = self.chans.get_mut(b.channel.get() as usize) else {
                    self.counters.rejected_unexpected += 1;
                    return;
                };
                let stream = b.stream.get();
                if c.xfer_done == Some(stream) || c.xfer_rx.is_some_and(|r| r.stream == stream) {
                    return;
                }
                if is_stale_stream(stream, c.newest_xfer_stream) {
                    self.counters.rejected_stale_epoch += 1;
                    return;
                }
                let Some(rx) = BulkRx::begin(&b, 0) else {
                    self.counters.rejected_unexpected += 1;
                    return;
                };
                if rx.sections.is_empty() {
                    // A catch-up: the primary takes the state we hold at our position (kept
                    // through a change of epoch, or resumed since and unchanged).
                    if rx.base_op != c.applied {
                        self.counters.rejected_unexpected += 1;
                        return;
                    }
                    c.history.clear();
                    c.ready = false;
                } else {
                    c.reset_for_transfer();
                }
                c.xfer_rx = Some(rx);
                c.newest_xfer_stream = Some(stream);
                if self.role() == Role::Standby {
                    // The primary re-transfers: our state is being replaced, we are no longer in sync.
                    self.enter(RoleState::Joining);
                }
            }
            Msg::XferHistory(h) => {
                if let Some(c) = self.chans.get_mut(h.channel.get() as usize)
                    && let Some(r) = &mut c.xfer_rx
                    && r.accepts(h.stream.get(), h.index.get())
                {
                    // The primary's history cannot hold an epoch above its own (the epoch this
                    // frame came in); a segment that could not follow the ones held is refused.
                    // `push` also refuses a start op past `OpId::MAX`.
                    let (epoch, start) = (h.epoch.get(), h.start_op.get().max(1));
                    if epoch > self.epoch.get()
                        || !c.history.push(Epoch::from(epoch), OpId::new(start))
                    {
                        self.counters.rejected_unexpected += 1;
                    }
                }
            }
            Msg::XferEntry(e, v) => {
                if let Some(c) = self.chans.get_mut(e.channel.get() as usize)
                    && let Some(r) = &mut c.xfer_rx
                    && r.accepts(e.stream.get(), e.index.get())
                {
                    let section = if e.flags & BULK_FLAG_PRIVATE != 0 {
                        PRIVATE_SECTION
                    } else {
                        e.section as usize
                    };
                    c.state.put(section, e.key.get(), v);
                }
            }
            Msg::XferEnd(e) => {
                let Some(c) = self.chans.get_mut(e.channel.get() as usize) else {
                    self.counters.rejected_unexpected += 1;
                    return;
                };
                if c.xfer_done == Some(e.stream.get()) {
                    if let Some(r) = &mut c.xfer_rx {
                        r.ack_dirty = true;
                    }
                    return;
                }
                let Some(r) = &mut c.xfer_rx else { return };
                if !r.ends(&e) {
                    return;
                }
                let (acked, top) = (r.acked_op, r.base_op);
                // Ops `acked + 1..=top` are in the snapshot but not acknowledged by the
                // client: the primary retains each of them in its ring and sends their
                // cookies, which this ring must hold, so there are never more than a ring's
                // capacity. A wider gap is a lie, and a failover would later apply its ops one
                // by one (`apply_through` up to `preapplied_top`): 2^62 iterations at worst.
                // (Both are at most `OpId::MAX`, checked at `BulkRx::begin`: the ops after
                // them exist.)
                let gap = top.checked_sub(acked);
                let (Some(after_acked), Some(after_top), Some(gap)) =
                    (acked.next(), top.next(), gap)
                else {
                    self.counters.rejected_unexpected += 1;
                    return;
                };
                if gap > c.ring.capacity() as u64 {
                    self.counters.rejected_unexpected += 1;
                    return;
                }
                c.xfer_done = Some(r.stream);
                c.applied = acked;
                c.acked = acked;
                c.ring.reset(after_acked);
                c.preapplied_top = top;
                c.next_op = after_top;
                c.ready = true;
                c.commit_dirty = true;
                self.events.push(Event::ChannelTransferred {
                    channel: e.channel.get(),
                    applied: acked,
                });
                if self.chans.iter().all(|c| c.ready) && self.role() == Role::Joining {
                    self.kept_epoch = None;
                    self.kept_mask = 0;
                    self.chans.iter_mut().for_each(|c| c.kept_history = None);
                    self.primary_lost = false;
                    self.events
                        .push(Event::TransferComplete { epoch: self.epoch });
                    self.enter(RoleState::Standby);
                    for p in &mut self.peers {
                        p.hb_due = true;
                    }
                }
            }
            _ => self.counters.rejected_unexpected += 1,
        }
    }

    fn on_update(&mut self, now_us: u64, u: &UpdateView<'_>) {
        let channel = u.channel();
        let Some(c) = self.chans.get_mut(channel as usize) else {
            self.counters.rejected_unexpected += 1;
            return;
        };
        if !c.ready {
            return;
        }
        let op = OpId::new(u.op());
        let held = c.ring.top();
        if op <= held {
            c.commit_dirty = true;
        } else if Some(op) == held.next() {
            if c.ring.is_full() {
                return;
            }
            let pre = u.flags & UPDATE_FLAG_PREAPPLIED != 0;
            if pre && op > c.preapplied_top {
                self.counters.rejected_unexpected += 1;
                return;
            }
            // An op inside the transferred snapshot comes PREAPPLIED: one with its body is a
            // late copy sent to an earlier life of this unit, before the transfer. Applying
            // it would write its values over later ones the snapshot holds (seed 40161967:
            // a key rolled back by one op, a takeover's replay missing its section).
            if !pre && op <= c.preapplied_top {
                self.counters.rejected_stale_update += 1;
                return;
            }
            // The ring notes the op's first write for the prefetch ahead of its apply.
            let mut first_write = None;
            for e in u.entries() {
                let write = (ChannelState::table_of(&e), e.key);
                first_write.get_or_insert(write);
                if !pre {
                    // Its ack usually arrives within the same turn: start loading the state
                    // slots now so the apply finds them cached (a batch of a few ops per
                    // channel is too short for the look-ahead in `apply_through`).
                    c.state.prefetch(write.0, write.1);
                }
            }
            c.ring.push_update(u, pre, first_write);
            c.commit_dirty = true;
            self.try_apply(channel);
        } else if now_us >= c.last_nack_us + self.cfg.nack_interval_us {
            // `op` is past the op after `held`: both ends of the gap exist.
            if let (Some(from), Some(to)) = (held.next(), op.prev()) {
                c.nack = Some((from, to));
            }
            c.last_nack_us = now_us;
            self.counters.nacks_sent += 1;
        }
    }

    /// Applies, in order, every held op whose ack has arrived.
    pub(super) fn try_apply(&mut self, channel: u32) {
        let inject = self.cfg.inject;
        let emit = self.cfg.standby_apply_events;
        let c = &mut self.chans[channel as usize];
        // Called for every update stored, whose ack nearly always comes later: with nothing
        // acked past what is applied there is nothing to apply, and the ring was pruned when
        // `applied` last moved.
        if c.acked <= c.applied && inject != InjectedBug::StandbyApplyBeforeAck {
            return;
        }
        let limit = if inject == InjectedBug::StandbyApplyBeforeAck {
            c.ring.top()
        } else {
            // An op of the transferred snapshot (up to `preapplied_top`) is already in the
            // state; its slot only carries the cookie a new primary would resend to a client
            // that lacks it. Once the client acked the op it lacks nothing, so the op applies
            // without its slot: the primary counts it as held from the transfer's end and never
            // resends a lost one (seed 27229439: a restarted standby stuck below its snapshot).
            c.acked.min(c.ring.top().max(c.preapplied_top))
        };
        // Planted bug (test aid): every 500th op's content is skipped; its position advances
        // and it is announced as applied, so only a content check can see it.
        while inject == InjectedBug::StandbySkipApply && c.applied.get() / 500 < limit.get() / 500 {
            let skipped = (c.applied.get() / 500 + 1) * 500;
            apply_through(
                c,
                OpId::new(skipped - 1),
                false,
                emit.then_some(&mut self.events),
                channel,
            );
            (c.applied, c.commit_dirty) = (OpId::new(skipped), true);
            if emit {
                self.events.push(Event::StandbyApplied {
                    channel,
                    op: OpId::new(skipped),
                    failover: false,
                });
            }
        }
        apply_through(c, limit, false, emit.then_some(&mut self.events), channel);
        c.ring.prune_through(c.applied);
    }

    pub(super) fn standby_tick(&mut self, now_us: u64) {
        let timeout = self.cfg.failover_timeout_us;
        self.primary_lost = now_us >= self.primary_last_rx_us + timeout;
        self.vote = 0;
        self.standing = false;
        if !self.primary_lost {
            self.key_mismatch = false;
            return;
        }
        // Frames from the primary still arrive but fail authentication: it is alive and the
        // keys differ. Taking over would elect on a key mismatch; fail closed instead, with an
        // alarm, and neither stand nor vote until they stop too.
        let owner = (self.epoch != Epoch::ZERO)
            .then(|| self.cfg.topology.epoch_owner(self.epoch))
            .flatten();
        let mismatch = self.peers.iter().enumerate().any(|(i, p)| {
            i != self.index
                && Some(p.id) == owner
                && p.unauthenticated_rx_us
                    .is_some_and(|t| now_us < t + timeout)
        });
        if mismatch {
            if !self.key_mismatch {
                self.key_mismatch = true;
                self.counters.takeovers_withheld_key_mismatch += 1;
                self.events.push(Event::KeyMismatch {
                    primary: owner.unwrap_or(0),
                    epoch: self.epoch,
                });
            }
            return;
        }
        self.key_mismatch = false;
        if self.role() == Role::Joining
            && self.kept_mask != 0
            && self.seen_mask == 0
            && self
                .chans
                .iter()
                .all(|c| c.ready || c.kept_history.is_some())
            && !self.peer_heard_a_set_of_our_epoch(now_us)
        {
            self.resume_kept_state();
        }
        let alive = |t: Option<u64>| t.is_some_and(|t| now_us < t + timeout);
        let Some(view) = self.effective_mask(now_us) else {
            return;
        };
        let mask = view.mask;
        // A newer set of our epoch that a peer heard from the primary and we did not (the
        // primary announced it and died): it is the primary's own word, so we take it as our
        // view. Seed 9004041: the only in-sync standby never heard that it had joined, so it
        // was not eligible and announced no JOINED, while the other standby, which had heard
        // it, would only vote for a joined one; nobody ever took over.
        if self.role() == Role::Standby
            && self.has_view
            && self
                .own_view()
                .is_none_or(|own| view != own && view.supersedes(own))
        {
            self.seen_version = view.version;
            self.seen_mask = view.mask;
            self.view_epoch = view.epoch;
            self.view_origin = if view.epoch < self.epoch {
                ViewOrigin::Kept
            } else {
                ViewOrigin::Announced
            };
            self.counters.views_learnt_from_peers += 1;
        }
        // Eligible: in the freshest set we know, and either in our own view too or told that
        // the set is now empty (the set before it, which names us, then holds every committed
        // op: nothing commits without a set). A unit that heard no set in this life is not
        // told anything: its empty view is no view. Seed 27248749 (four units): a restarted
        // standby that never heard its set stood for itself on its peers' view, which names
        // it, while they, not seeing it JOINED, voted for another member; no majority formed.
        let me = 1 << self.index;
        let eligible = self.role() == Role::Standby
            && mask & me != 0
            && (self.seen_mask & me != 0 || (self.has_view && self.seen_mask == 0));
        // Announced as JOINED, so that peers of the same view vote for us: a standby eligible
        // only by the set before an empty one (its own view is the empty set) was otherwise
        // the only unit to stand for it, and with three units it never won a vote.
        self.standing = eligible;
        // Our choice of successor: the highest-priority live member of the freshest sync set
        // we know (ourselves included when we are in it).
        let successor = (0..self.peers.len()).find(|&i| {
            mask & (1 << i) != 0
                && if i == self.index {
                    eligible
                } else {
                    alive(self.peers[i].last_rx_us) && self.peers[i].flags & HB_FLAG_JOINED != 0
                }
        });
        let Some(successor) = successor else { return };
        self.vote = self.peers[successor].id;
        if successor != self.index {
            // The candidate may count this vote for up to a failover timeout (it takes the
            // last heartbeat it heard), then take up to the query timeout to take over.
            self.pledge = Some(super::Pledge {
                epoch: self.epoch,
                candidate: successor,
                until_us: now_us
                    + timeout
                    + self.cfg.query_timeout_us
                    + 2 * self.cfg.tick_us
                    + self.cfg.heartbeat_interval_us,
            });
            return;
        }
        // Two control units: the standby decides alone (the primary commits nothing without
        // it, so nothing committed can be missing). Three or more: a majority must have lost
        // the primary and chosen us, so a standby with a stale view of the sync set, or one cut
        // off from everyone, never takes over while the primary still commits with others.
        let n = self.peers.len();
        let votes = self
            .peers
            .iter()
            .enumerate()
            .filter(|(i, p)| {
                // A vote counts only from a peer of our epoch whose view of the sync set is
                // at least as new as ours (versions wrap: compared as signed differences).
                *i != self.index
                    && alive(p.last_rx_us)
                    && p.epoch == self.epoch
                    && p.flags & HB_FLAG_PRIMARY_LOST != 0
                    && p.vote == self.id
            })
            .count();
        if n <= 2 || (1 + votes) * 2 > n {
            self.start_failover(now_us, false);
        }
    }
}

impl ControlUnit {
    /// A live peer of our epoch reports a sync set with someone in it that this epoch's
    /// primary announced: we missed it, so ops may have been committed in it. Seed 17104922
    /// with `--extended-faults`: a unit that missed the new primary's announcement resumed its
    /// old state as an eligible standby of the new epoch while another unit had joined it and
    /// ops had been committed. A set a peer resumed (kept from an earlier epoch) is not one:
    /// seed 35884076 (four units): a unit cut off while the primary dropped it resumed its stale
    /// set, which still named it; that set kept the one unit holding every committed op from
    /// resuming its own newer one, and the joining units voted the stale unit in (split brain).
    fn peer_heard_a_set_of_our_epoch(&self, now_us: u64) -> bool {
        let timeout = self.cfg.failover_timeout_us;
        self.peers.iter().enumerate().any(|(i, p)| {
            i != self.index
                && p.epoch == self.epoch
                && p.view_epoch == self.epoch
                && p.seen_mask != 0
                && p.last_rx_us.is_some_and(|t| now_us < t + timeout)
        })
    }

    /// The epoch we adopted has fallen silent without announcing anyone in its sync set: its
    /// candidate died mid-takeover, or its primary before any standby joined. Nothing can have
    /// been committed in it (a primary commits nothing without a sync set, and a member must
    /// have acknowledged the set first), so the state we kept, complete for the epoch we left,
    /// makes us an eligible standby again, with the sync set we were in. That view is announced
    /// with the epoch and version its primary gave it (`view_epoch` below ours: kept): a unit
    /// that knows a set announced in this epoch prefers that one, and among kept sets the
    /// newest wins.
    fn resume_kept_state(&mut self) {
        for c in &mut self.chans {
            // A channel whose catch-up ended holds the dead epoch's history and ops (none of
            // them committed); one still waiting or mid-way holds exactly what it kept.
            if !c.ready {
                if let Some(h) = c.kept_history.take() {
                    c.history = h;
                }
                c.xfer_rx = None;
                c.xfer_done = None;
                c.ready = true;
            }
            c.kept_history = None;
            c.offer_due = false;
        }
        self.seen_mask = self.kept_mask;
        self.seen_version = self.kept_version;
        self.view_epoch = self.kept_view_epoch;
        self.view_origin = ViewOrigin::Kept;
        self.prev_view = None;
        self.kept_mask = 0;
        self.kept_epoch = None;
        self.enter(RoleState::Standby);
        for p in &mut self.peers {
            p.hb_due = true;
        }
    }
}

/// Applies every op up to `limit`, in order, announcing each when `events` is given.
pub(super) fn apply_through(
    c: &mut super::Chan,
    limit: OpId,
    failover: bool,
    mut events: Option<&mut crate::proto::Events>,
    channel: u32,
) {
    while c.applied < limit {
        // Below `limit`, so there is an op after it.
        let Some(op) = c.applied.next() else { break };
        for (distance, hint) in PREFETCH_STAGES {
            let ahead = op.saturating_add(distance as u64);
            if ahead <= limit
                && let Some((table, key)) = c.ring.first_write(ahead)
            {
                hint(&c.state, table, key);
            }
        }
        apply_op(c, op);
        if let Some(events) = events.as_deref_mut() {
            events.push(Event::StandbyApplied {
                channel,
                op,
                failover,
            });
        }
    }
}

/// Applies op `op` (the next one) from the pending ring. The op stays in the ring: a new
/// primary still has to send it to clients that lack it.
pub(super) fn apply_op(c: &mut super::Chan, op: OpId) {
    assert_eq!(Some(op), c.applied.next(), "standby applies in op order");
    match c.ring.get(op) {
        Some(slot) if !slot.preapplied => {
            for e in slot.entries() {
                c.state.apply(&e);
            }
        }
        Some(_) => {}
        // Inside the transferred snapshot but its cookie has not arrived: already in the state.
        None => assert!(op <= c.preapplied_top, "op to apply is held"),
    }
    c.applied = op;
    c.commit_dirty = true;
}
