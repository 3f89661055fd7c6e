//! The client: an interface component consuming one or more channels.
//!
//! It applies updates strictly in op order, acks cumulatively, answers a new primary's
//! LAST-APPLIED query (with the union cookie of what it applied above the standby's position),
//! and takes selective replays. It follows the highest epoch it has seen and ignores lower ones.

use super::bulk::BulkRx;
use super::prefetch::FrameTargets;
use super::state::ChannelState;
use super::{
    Counters, Epoch, Event, Events, InjectedBug, NodeId, OpId, PREFETCH_AHEAD,
    PREFETCH_HEADER_AHEAD, ProtoConfig, SectionMask, Transmit,
};
use crate::wire::{
    BulkBegin, BulkEnd, ChannelOp, Entry, FrameBuilder, HB_FLAG_NEEDS_TRANSFER, HeartbeatBody,
    Kind, LA_FLAG_UNKNOWN, LaReplyBody, Msg, NackBody, ROLE_CLIENT, SECTIONS, UpdateView,
};

#[derive(Debug)]
struct Chan {
    id: u32,
    state: ChannelState,
    applied: OpId,
    /// No trustworthy history (fresh start, or a replay was cut short): needs a full replay.
    unknown: bool,
    /// Epoch of the frame that gave us `applied` (reported in LAST-APPLIED answers).
    data_epoch: Epoch,
    /// The primary of our epoch knows where this channel stands: it asked (LAST-APPLIED) or
    /// replayed it. After a change of epoch an UPDATE on a channel it never asked about would
    /// land on state it does not know (say, a stale primary's replay to our previous life):
    /// the channel then asks for a full replay instead of applying it.
    vouched: bool,
    /// The sections our applied ops wrote, for a takeover's query.
    writes: SectionWrites,
    replay: Option<BulkRx>,
    last_replay_done: Option<u32>,
    /// Newest replay stream begun in this epoch (see [`crate::proto::bulk::is_stale_stream`]).
    newest_stream: Option<u32>,
    ack_dirty: bool,
    /// The gap to ask the primary for: ops `from..=to`.
    nack: Option<(OpId, OpId)>,
    last_nack_us: u64,
    la_reply: Option<LaReplyBody>,
    /// Keep confirming the finished replay until an update proves the primary saw it.
    replay_done_ack: bool,
    /// Stream of the last replay finished in this epoch: stamps acks so that the primary can
    /// tell them from acks sent before the replay reset our position.
    generation: u32,
}

impl Chan {
    /// What a takeover's query above op `above_op` is answered: our position and the sections
    /// our ops above it touched, or "unknown" while we have no history to offer.
    fn answer(&self, above_op: OpId) -> LaReplyBody {
        if self.unknown || self.replay.is_some() {
            return unknown_reply(self.id, self.applied);
        }
        LaReplyBody {
            channel: self.id.into(),
            flags: 0.into(),
            last_applied: self.applied.get().into(),
            cookie_above: self.writes.above(above_op, self.applied).get().into(),
            data_epoch: self.data_epoch.get().into(),
        }
    }
}

/// What a client remembers of the sections its applied ops wrote: for each section, the last
/// op (from `from` on) whose cookie names it. The union of the cookies of the ops applied
/// above an op is then the sections whose last write lies above it. 512 bytes per channel
/// that stay cached, where a cookie per op of the window took a 128 KiB ring per channel, a
/// line of which was written cold every eight ops.
#[derive(Debug, Clone)]
struct SectionWrites {
    /// `OpId::ZERO`: no op from `from` on wrote the section.
    last_write: [OpId; SECTIONS],
    /// First op noted (the op after a finished replay's base).
    from: OpId,
    /// Ops a query may reach back (the retention window): one further back is answered with
    /// every section, as its primary could not replay from there either.
    history_ops: u64,
}

impl SectionWrites {
    fn new(history_ops: u64) -> Self {
        SectionWrites {
            last_write: [OpId::ZERO; SECTIONS],
            from: OpId::FIRST,
            history_ops,
        }
    }

    /// Forgets every op: the next one noted is `from` (after a replay up to the op before).
    fn restart(&mut self, from: OpId) {
        self.last_write = [OpId::ZERO; SECTIONS];
        self.from = from;
    }

    /// Notes that op `op`, the one after the last noted, wrote the sections of `cookie`.
    fn note(&mut self, op: OpId, cookie: SectionMask) {
        let mut sections = cookie.get();
        while sections != 0 {
            self.last_write[sections.trailing_zeros() as usize] = op;
            sections &= sections - 1;
        }
    }

    /// The union of the cookies of the ops above `op` (the querier's position, from the
    /// network) up to `applied`, the last noted: every section when those ops are not all
    /// remembered.
    fn above(&self, op: OpId, applied: OpId) -> SectionMask {
        // Nothing applied above `op`, or `op` is the last ID there is: nothing to report.
        let (Some(first), Some(ops)) = (op.next(), applied.checked_sub(op).filter(|&n| n > 0))
        else {
            return SectionMask::EMPTY;
        };
        if first < self.from || ops > self.history_ops {
            return SectionMask::ALL;
        }
        // Every op in `first..=applied` is noted: a section was written there exactly when its
        // last write is above `op`.
        let above = (self.last_write.iter().enumerate())
            .fold(0u64, |m, (s, &w)| m | u64::from(w > op) << s);
        SectionMask::new(above)
    }
}

#[derive(Debug)]
pub struct Client {
    cfg: ProtoConfig,
    pub id: NodeId,
    epoch: Epoch,
    chans: Vec<Chan>,
    /// Channel ID to index in `chans`.
    index: Vec<Option<usize>>,
    next_hb_us: u64,
    hb_due: bool,
    /// A control unit that sent us a stale-epoch frame: tell it the current epoch.
    stale_notify: Option<NodeId>,
    /// Index of the next control unit to greet while we know no primary.
    hello_next: usize,
    boot_id: u32,
    packet_seq: u64,
    events: Events,
    pub counters: Counters,
    /// The current frame's prefetch notes, one per update (kept to reuse its memory).
    targets: FrameTargets,
}

impl Client {
    /// `fresh` = true for a client that lost its state (restart): it asks for a full replay.
    /// `boot_id` must differ between restarts, so the primary can tell a new life from an old.
    pub fn new(cfg: ProtoConfig, id: NodeId, fresh: bool, boot_id: u32, now_us: u64) -> Self {
        let window = cfg.window_ops.max(2);
        let seed = cfg.table_seed;
        let mut index = vec![None; cfg.topology.channels()];
        let chans: Vec<Chan> = cfg
            .topology
            .channels_of(id)
            .enumerate()
            .map(|(i, c)| {
                index[c as usize] = Some(i);
                Chan {
                    id: c,
                    state: ChannelState::with_seed(seed),
                    applied: OpId::ZERO,
                    unknown: fresh,
                    data_epoch: if fresh { Epoch::ZERO } else { Epoch::INITIAL },
                    vouched: true,
                    writes: SectionWrites::new(window as u64),
                    replay: None,
                    last_replay_done: None,
                    newest_stream: None,
                    ack_dirty: false,
                    nack: None,
                    last_nack_us: 0,
                    la_reply: None,
                    replay_done_ack: false,
                    generation: 0,
                }
            })
            .collect();
        Client {
            epoch: if fresh { Epoch::ZERO } else { Epoch::INITIAL },
            cfg,
            id,
            chans,
            index,
            next_hb_us: now_us,
            hb_due: true,
            stale_notify: None,
            hello_next: usize::MAX,
            boot_id,
            packet_seq: 0,
            events: Events::default(),
            counters: Counters::default(),
            targets: FrameTargets::default(),
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.get()
    }
    pub fn primary(&self) -> Option<NodeId> {
        if self.epoch == Epoch::ZERO {
            None
        } else {
            self.cfg.topology.epoch_owner(self.epoch)
        }
    }
    pub fn channels(&self) -> impl Iterator<Item = u32> + '_ {
        self.chans.iter().map(|c| c.id)
    }
    pub fn state(&self, channel: u32) -> Option<&ChannelState> {
        self.chan(channel).map(|c| &c.state)
    }
    pub fn applied(&self, channel: u32) -> Option<OpId> {
        self.chan(channel).map(|c| c.applied)
    }
    /// True when the channel waits for a full replay.
    pub fn is_unknown(&self, channel: u32) -> bool {
        self.chan(channel)
            .is_some_and(|c| c.unknown || c.replay.is_some())
    }
    /// Events dropped because the caller let the queue fill (see `Events`).
    pub fn events_dropped(&self) -> u64 {
        self.events.dropped()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop()
    }

    fn chan(&self, channel: u32) -> Option<&Chan> {
        self.index
            .get(channel as usize)
            .copied()
            .flatten()
            .map(|i| &self.chans[i])
    }
    fn chan_idx(&self, channel: u32) -> Option<usize> {
        self.index.get(channel as usize).copied().flatten()
    }

    pub fn poll_timeout(&self) -> u64 {
        self.next_hb_us
    }

    pub fn handle_timeout(&mut self, now_us: u64) {
        if now_us >= self.next_hb_us {
            self.hb_due = true;
            self.next_hb_us = now_us + self.cfg.heartbeat_interval_us;
            // Cumulative acks are re-sent every heartbeat: a lost ack costs one interval.
            for c in &mut self.chans {
                c.ack_dirty = true;
                if let Some(r) = &mut c.replay {
                    r.ack_dirty = true;
                }
                // A channel without history says so on its own, once per interval: the
                // primary then replays that channel in full, and no other.
                if c.unknown && c.replay.is_none() && c.la_reply.is_none() {
                    c.la_reply = Some(unknown_reply(c.id, c.applied));
                }
            }
        }
    }

    pub fn handle_datagram(&mut self, now_us: u64, bytes: &[u8]) {
        // Validation notes the section and key each update will write here.
        self.targets.clear();
        let (index, targets) = (&self.index, &mut self.targets);
        let visit = |u: &UpdateView<'_>| {
            let chan = index.get(u.channel() as usize).copied().flatten();
            // A client holds no private entries.
            let table = |e: &Entry<'_>| (!e.private).then_some(usize::from(e.section));
            targets.visit(u, chan, table);
        };
        let Some(frame) = super::decode_frame(bytes, &mut self.counters, visit) else {
            return;
        };
        let sender = frame.sender();
        if self.cfg.topology.cu_index(sender).is_none() {
            self.counters.rejected_unknown_sender += 1;
            return;
        }
        let epoch = super::frame_epoch(&frame);
        if epoch < self.epoch && self.cfg.inject != InjectedBug::AcceptStaleEpoch {
            self.counters.rejected_stale_epoch += 1;
            self.stale_notify = Some(sender);
            return;
        }
        // A frame must come from the owner of its epoch.
        if self.cfg.topology.epoch_owner(epoch) != Some(sender) {
            self.counters.rejected_unexpected += 1;
            return;
        }
        self.counters.frames_rx += 1;
        if epoch > self.epoch {
            self.adopt_epoch(epoch);
        }
        // Start loading the state of the updates a few updates ahead while this one applies,
        // so the cache misses of a frame overlap: section headers, then slots.
        for i in 0..PREFETCH_HEADER_AHEAD {
            self.targets.headers(i, |c| &self.chans[c].state);
        }
        for i in 0..PREFETCH_AHEAD {
            self.targets.slots(i, |c| &self.chans[c].state);
        }
        let mut updates = 0;
        for m in frame.msgs() {
            match m {
                Msg::Update(u) => {
                    let state_of = |c: usize| &self.chans[c].state;
                    self.targets
                        .headers(updates + PREFETCH_HEADER_AHEAD, state_of);
                    self.targets.slots(updates + PREFETCH_AHEAD, state_of);
                    updates += 1;
                    self.on_update(now_us, &u, epoch);
                }
                Msg::LaQuery(q) => self.on_query(&q),
                Msg::ReplayBegin(b) => self.on_replay_begin(&b, sender),
                Msg::ReplayEntry(e, v) => {
                    if let Some(i) = self.chan_idx(e.channel.get()) {
                        let c = &mut self.chans[i];
                        if let Some(r) = &mut c.replay
                            && r.accepts(e.stream.get(), e.index.get())
                            && r.sections.contains(u32::from(e.section))
                        {
                            c.state.put(e.section as usize, e.key.get(), v);
                        }
                    }
                }
                Msg::ReplayEnd(e) => self.on_replay_end(&e, epoch),
                Msg::Heartbeat(_) => {}
                _ => self.counters.rejected_unexpected += 1,
            }
        }
    }

    fn adopt_epoch(&mut self, epoch: Epoch) {
        self.epoch = epoch;
        // Introduce this life (boot ID) to the new primary at once: what it learns of our
        // channels must be tied to the life that told it.
        self.hb_due = true;
        for c in &mut self.chans {
            // A replay from the old epoch was cut short: the channel's state is torn.
            if c.replay.take().is_some() {
                c.unknown = true;
            }
            c.nack = None;
            c.ack_dirty = true;
            // Stream IDs are only unique per primary: forget the old primary's streams.
            c.last_replay_done = None;
            c.newest_stream = None;
            c.vouched = false;
            c.replay_done_ack = false;
            c.generation = 0;
        }
    }

    fn on_update(&mut self, now_us: u64, u: &UpdateView<'_>, epoch: Epoch) {
        let Some(i) = self.chan_idx(u.channel()) else {
            self.counters.rejected_unexpected += 1;
            return;
        };
        let emit = self.cfg.client_apply_events;
        let c = &mut self.chans[i];
        if c.unknown || c.replay.is_some() {
            return;
        }
        if !c.vouched {
            c.unknown = true;
            self.counters.rejected_unexpected += 1;
            return;
        }
        let op = OpId::new(u.op());
        if Some(op) == c.applied.next() {
            for e in u.entries() {
                if !e.private {
                    c.state.apply(&e);
                }
            }
            c.applied = op;
            c.data_epoch = epoch;
            c.writes.note(op, SectionMask::new(u.cookie()));
            c.ack_dirty = true;
            c.nack = None;
            c.replay_done_ack = false;
            self.counters.updates_applied += 1;
            if emit {
                self.events.push(Event::ClientApplied {
                    channel: c.id,
                    op,
                    epoch,
                    cookie: SectionMask::new(u.cookie()),
                });
            }
        } else if op <= c.applied {
            c.ack_dirty = true;
        } else if now_us >= c.last_nack_us + self.cfg.nack_interval_us {
            // `op` is past the op after `applied`: both ends of the gap exist.
            if let (Some(from), Some(to)) = (c.applied.next(), op.prev()) {
                c.nack = Some((from, to));
            }
            c.last_nack_us = now_us;
        }
    }

    fn on_query(&mut self, q: &ChannelOp) {
        let Some(i) = self.chan_idx(q.channel.get()) else {
            self.counters.rejected_unexpected += 1;
            return;
        };
        let c = &mut self.chans[i];
        // A candidate queries only before it resolves the channel, and replays only after: a
        // query of this epoch after a replay stream of it began is a late or duplicated copy.
        // Answered mid-replay it would say "no history", and the primary would replay the
        // channel in full again (seed 28249432, inv9).
        if c.newest_stream.is_some() {
            self.counters.rejected_stale_query += 1;
            return;
        }
        c.vouched = true;
        c.la_reply = Some(c.answer(OpId::new(q.op.get())));
    }

    /// The answer this client would give a takeover's query for `channel` above op
    /// `above_op`, without sending it or changing anything (`statesync failover --dry-run`
    /// asks it through the admin socket, so that its prediction uses the client's own word).
    /// `None` for a channel this client does not own.
    pub fn query_answer(&self, channel: u32, above_op: OpId) -> Option<LaReplyBody> {
        let i = self.chan_idx(channel)?;
        Some(self.chans[i].answer(above_op))
    }

    fn on_replay_begin(&mut self, b: &BulkBegin, sender: NodeId) {
        let Some(i) = self.chan_idx(b.channel.get()) else {
            self.counters.rejected_unexpected += 1;
            return;
        };
        let c = &mut self.chans[i];
        let stream = b.stream.get();
        if c.replay.is_some_and(|r| r.stream == stream) || c.last_replay_done == Some(stream) {
            return;
        }
        if crate::proto::bulk::is_stale_stream(stream, c.newest_stream) {
            self.counters.rejected_stale_epoch += 1;
            return;
        }
        let Some(rx) = BulkRx::begin(b, sender) else {
            self.counters.rejected_unexpected += 1;
            return;
        };
        // Sections not reset by a partial replay are only trustworthy if our history is, and
        // only if the primary of this epoch knows it (it asked us): a partial replay cut for
        // another life of ours would leave a mix. Ask for a full replay instead.
        if rx.sections != SectionMask::ALL && (c.unknown || !c.vouched) {
            c.unknown = true;
            return;
        }
        c.state.clear_sections(rx.sections);
        c.replay = Some(rx);
        c.newest_stream = Some(stream);
    }

    fn on_replay_end(&mut self, e: &BulkEnd, epoch: Epoch) {
        let Some(i) = self.chan_idx(e.channel.get()) else {
            self.counters.rejected_unexpected += 1;
            return;
        };
        let c = &mut self.chans[i];
        if c.last_replay_done == Some(e.stream.get()) {
            c.replay_done_ack = true;
            c.ack_dirty = true;
            return;
        }
        let Some(r) = &mut c.replay else { return };
        if !r.ends(e) {
            return;
        }
        let r = *r;
        // `BulkRx::begin` took only op IDs up to `OpId::MAX`, so there is a next op.
        let Some(cookies_from) = r.base_op.next() else {
            self.counters.rejected_unexpected += 1;
            return;
        };
        c.replay = None;
        c.last_replay_done = Some(r.stream);
        c.replay_done_ack = true;
        c.generation = r.stream;
        c.applied = r.base_op;
        c.data_epoch = epoch;
        c.vouched = true;
        c.unknown = false;
        c.writes.restart(cookies_from);
        c.ack_dirty = true;
        c.nack = None;
        self.events.push(Event::ClientReplayed {
            channel: c.id,
            base_op: r.base_op,
            sections: r.sections,
            epoch,
        });
    }

    /// Encodes the next datagram into `buf`, or returns `None` when there is nothing to send.
    pub fn poll_transmit(&mut self, _now_us: u64, buf: &mut [u8]) -> Option<Transmit> {
        let cap = buf.len().min(self.cfg.max_frame_bytes);
        let buf = &mut buf[..cap];
        if let Some(dst) = self.stale_notify.take() {
            return Some(self.heartbeat_to(dst, buf));
        }
        let Some(primary) = self.primary() else {
            // Without a primary, greet every control unit once per heartbeat interval.
            if self.hb_due {
                self.hb_due = false;
                self.hello_next = 0;
            }
            let d = *self.cfg.topology.control_units.get(self.hello_next)?;
            self.hello_next += 1;
            return Some(self.heartbeat_to(d, buf));
        };
        let seq = self.next_seq();
        let mut fb = FrameBuilder::new(buf, self.id, self.epoch.get(), seq);
        // A frame that tells the primary about our channels' history (a LAST-APPLIED answer, a
        // replay ack) carries the heartbeat, hence our boot ID: the primary can then tell
        // which life of ours the answer belongs to.
        let speaks_history = self.chans.iter().any(|c| {
            c.la_reply.is_some()
                || c.replay.as_ref().is_some_and(|r| r.ack_dirty)
                || (c.ack_dirty && c.replay_done_ack)
        });
        if self.hb_due || speaks_history {
            let needs = self.chans.iter().any(|c| c.unknown);
            let hb = heartbeat(if needs { HB_FLAG_NEEDS_TRANSFER } else { 0 }, self.boot_id);
            if fb.push(Kind::Heartbeat, &hb) {
                self.hb_due = false;
            }
        }
        for c in &mut self.chans {
            if let Some(r) = c.la_reply
                && fb.push(Kind::LaReply, &r)
            {
                c.la_reply = None;
            }
            if let Some(r) = &mut c.replay
                && r.ack_dirty
                && fb.push(Kind::ReplayAck, &r.ack(c.id, false))
            {
                r.ack_dirty = false;
            }
            if c.ack_dirty {
                let mut ok = true;
                if c.replay_done_ack
                    && let Some(done) = c.last_replay_done
                {
                    let ack = crate::wire::BulkAck {
                        channel: c.id.into(),
                        stream: done.into(),
                        next_index: u32::MAX.into(),
                        done: 1.into(),
                    };
                    ok &= fb.push(Kind::ReplayAck, &ack);
                }
                if !c.unknown && c.replay.is_none() {
                    let ack = ChannelOp {
                        channel: c.id.into(),
                        generation: c.generation.into(),
                        op: c.applied.get().into(),
                    };
                    ok &= fb.push(Kind::Ack, &ack);
                }
                if ok {
                    c.ack_dirty = false;
                }
            }
            if let Some((from, to)) = c.nack
                && fb.push(
                    Kind::Nack,
                    &NackBody {
                        channel: c.id.into(),
                        generation: c.generation.into(),
                        from: from.get().into(),
                        to: to.get().into(),
                    },
                )
            {
                c.nack = None;
                self.counters.nacks_sent += 1;
            }
        }
        if fb.is_empty() {
            self.packet_seq -= 1;
            return None;
        }
        let len = fb.finish();
        self.counters.frames_tx += 1;
        self.counters.bytes_tx += len as u64;
        Some(Transmit { dst: primary, len })
    }

    fn next_seq(&mut self) -> u64 {
        self.packet_seq += 1;
        self.packet_seq
    }

    fn heartbeat_to(&mut self, dst: NodeId, buf: &mut [u8]) -> Transmit {
        let seq = self.next_seq();
        let mut fb = FrameBuilder::new(buf, self.id, self.epoch.get(), seq);
        let needs = self.chans.iter().any(|c| c.unknown);
        let pushed = fb.push(
            Kind::Heartbeat,
            &heartbeat(if needs { HB_FLAG_NEEDS_TRANSFER } else { 0 }, self.boot_id),
        );
        assert!(pushed, "an empty frame has room for a heartbeat");
        let len = fb.finish();
        self.counters.frames_tx += 1;
        self.counters.bytes_tx += len as u64;
        Transmit { dst, len }
    }
}

/// The LAST-APPLIED answer of a channel without trustworthy history.
fn unknown_reply(channel: u32, applied: OpId) -> LaReplyBody {
    LaReplyBody {
        channel: channel.into(),
        flags: LA_FLAG_UNKNOWN.into(),
        last_applied: applied.get().into(),
        cookie_above: SectionMask::ALL.get().into(),
        data_epoch: 0.into(),
    }
}

fn heartbeat(flags: u8, boot_id: u32) -> HeartbeatBody {
    HeartbeatBody {
        role: ROLE_CLIENT,
        flags,
        sync_version: 0.into(),
        sync_mask: 0.into(),
        boot_or_target: boot_id.into(),
        vote: 0.into(),
        view_epoch: 0.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::{OpId, SectionMask, SectionWrites};
    use proptest::prelude::*;

    /// The answer as the cookie of every op in the window gives it.
    fn model(cookies: &[(u64, u64)], from: u64, history: u64, op: u64, applied: u64) -> u64 {
        if op >= applied {
            return 0;
        }
        if op + 1 < from || applied - op > history {
            return u64::MAX;
        }
        (cookies.iter())
            .filter(|&&(o, _)| o > op && o <= applied)
            .fold(0, |m, &(_, c)| m | c)
    }

    proptest! {
        /// Every query, after any ops and a replay restart in their midst, is answered as the
        /// union of the cookies above the querier's op.
        #[test]
        fn answers_are_the_union_of_the_cookies_above(
            cookies in proptest::collection::vec(
                prop_oneof![0u64..64, any::<u64>()].prop_map(|c| if c < 64 { 1 << c } else { c }),
                1..80,
            ),
            history in 1u64..40,
            restart_at in proptest::option::of(0usize..80),
        ) {
            let mut w = SectionWrites::new(history);
            let (mut noted, mut from, mut applied) = (Vec::new(), 1, 0);
            for (i, &c) in cookies.iter().enumerate() {
                if restart_at == Some(i) {
                    // A replay up to a base 0..=3 ops before or after where we stood.
                    applied = (applied + i as u64 % 7).saturating_sub(3);
                    from = applied + 1;
                    w.restart(OpId::new(from));
                    noted.clear();
                }
                applied += 1;
                w.note(OpId::new(applied), SectionMask::new(c));
                noted.push((applied, c));
                for op in 0..=applied + 1 {
                    prop_assert_eq!(
                        w.above(OpId::new(op), OpId::new(applied)).get(),
                        model(&noted, from, history, op, applied),
                        "op {} applied {}", op, applied
                    );
                }
            }
        }
    }
}
