//! Taking over [0068-0077]: raise the epoch, ask every client what it last applied, cut each
//! channel's pending ring per the policy, and replay only what is out of sync.

use super::cut::{Answer, HeldView, decide};
use super::role::{RoleState, Takeover, TakeoverChan};
use super::standby::apply_through;
use super::{ControlUnit, FailoverPreview};
use crate::proto::{Epoch, Event, InjectedBug, OpId, Resolution, Role, SectionMask};
use crate::wire::{LA_FLAG_UNKNOWN, LaReplyBody};

impl ControlUnit {
    /// Standby: an operator asks this node to take over now.
    pub fn operator_takeover(&mut self, now_us: u64) -> Result<(), super::ControlError> {
        if !self.is_eligible() {
            return Err(super::ControlError::NotEligible);
        }
        self.start_failover(now_us, true);
        Ok(())
    }

    /// What a takeover by this unit would decide now, per channel, without acting (`statesync
    /// failover --dry-run`). It runs the same cut decision (`cut::decide`) on what this unit
    /// holds, with the same check of the client's answer as a takeover. `answer(channel,
    /// held)` gives the client's own answer to a query above `held` where the caller could
    /// ask it (see `Client::query_answer`); without one, the client is taken to be at its last
    /// acknowledged op (the acks the primary forwarded), and `sure` is false where that guess
    /// cannot tell (it acknowledged ops this unit never held: the sections they touched are the
    /// client's to say).
    pub fn failover_preview(
        &self,
        answer: impl Fn(u32, u64) -> Option<LaReplyBody>,
    ) -> Vec<FailoverPreview> {
        self.chans
            .iter()
            .map(|c| {
                let view = c.held_view();
                let reply = answer(c.id, view.held.get());
                let checked = match &reply {
                    Some(r) => checked_answer(c, Some(r)),
                    None => Answer::Applied {
                        op: c.acked,
                        cookie_above: SectionMask::EMPTY,
                    },
                };
                let d = decide(view, checked, self.cfg.cut_policy, |op| c.slot(op));
                let sections = d.replay.unwrap_or(SectionMask::EMPTY);
                FailoverPreview {
                    channel: c.id,
                    client: c.owner,
                    resolution: d.resolution,
                    cut: d.cut.get(),
                    held: view.held.get(),
                    replay_sections: sections,
                    // The takeover applies what it holds through the cut before it replays.
                    replay_bytes: c.state.wire_bytes_after(
                        sections,
                        c.applied
                            .range_after(d.cut)
                            .filter_map(|op| c.ring.get(op))
                            .filter(|s| !s.preapplied)
                            .flat_map(|s| s.entries()),
                    ),
                    full_replay_bytes: c.state.wire_bytes(SectionMask::ALL),
                    answered: reply.is_some(),
                    sure: reply.is_some() || !matches!(d.resolution, Resolution::Ahead { .. }),
                }
            })
            .collect()
    }

    pub(super) fn start_failover(&mut self, now_us: u64, operator: bool) {
        assert_eq!(self.role(), Role::Standby, "only a standby takes over");
        // `max_counter` is at most `Epoch::MAX_COUNTER` (2^48: every epoch it was taken from
        // passed `Epoch::from_wire`) plus this unit's own candidacies, far below the 2^56 an
        // epoch holds, so the next counter fits; the index is below the 32 control units a
        // topology may hold.
        let epoch = Epoch::new(self.max_counter, self.index)
            .and_then(|e| e.next_counter(self.index))
            .expect("epoch counters heard are range-checked, control units are at most 32");
        self.max_counter = epoch.counter();
        self.epoch = epoch;
        self.timing = super::FailoverTiming {
            started_us: now_us,
            finished_us: None,
            last_primary_rx_us: self.last_primary_rx_us(),
        };
        for c in &mut self.chans {
            c.catch_up_floor = c.applied;
            c.nack = None;
            // What a takeover owes the clients, it works out afresh.
            c.full_replay_owed = false;
        }
        for p in &mut self.peers {
            p.hb_due = true;
        }
        // Client lives (boot IDs) count from this epoch on: one learnt in an earlier epoch
        // would make a client that restarted since, and was replayed by another primary,
        // look freshly restarted.
        self.client_lives
            .iter_mut()
            .for_each(|l| l.forget_current(now_us));
        self.events.push(Event::FailoverStarted {
            epoch: self.epoch,
            operator,
        });
        let takeover = Takeover::new(now_us, self.cfg.query_timeout_us, self.chans.len());
        self.enter(RoleState::Candidate(takeover));
    }

    pub(super) fn candidate_tick(&mut self, now_us: u64) {
        let rto_us = self.cfg.rto_us;
        let Some(t) = self.takeover_mut() else { return };
        if now_us >= t.deadline_us {
            for ch in 0..self.chans.len() {
                if self.takeover().is_some_and(|t| t.chans[ch].pending) {
                    self.resolve(ch as u32, None);
                }
            }
        } else if now_us >= t.last_query_us + rto_us {
            t.last_query_us = now_us;
            for c in &mut t.chans {
                c.query_due = c.pending;
            }
        }
        self.maybe_finish_failover(now_us);
    }

    pub(super) fn on_la_reply(&mut self, now_us: u64, channel: u32, r: &LaReplyBody) {
        if self
            .takeover()
            .is_some_and(|t| t.chans[channel as usize].pending)
        {
            self.resolve(channel, Some(r));
            self.maybe_finish_failover(now_us);
        }
    }

    fn resolve(&mut self, channel: u32, reply: Option<&LaReplyBody>) {
        let ci = channel as usize;
        let c = &self.chans[ci];
        let applied = c.applied.get();
        let answer = checked_answer(c, reply);
        // Ops already in our state can never be cut; we can keep what the ring or a
        // transferred snapshot holds.
        let view = c.held_view();
        let held = view.held.get();
        let d = decide(view, answer, self.cfg.cut_policy, |op| c.slot(op));
        let (resolution, mut replay) = (d.resolution, d.replay);
        if self.cfg.inject == InjectedBug::SkipReplaySection
            && matches!(resolution, Resolution::Ahead { .. })
            && let Some(sections) = replay.filter(|s| !s.is_empty())
        {
            // The plant: the highest marked section is left out.
            replay = Some(sections.without_highest());
        }
        self.chans[ci].acked = d.acked;
        if let Some(t) = self.takeover_mut() {
            t.chans[ci] = TakeoverChan {
                pending: false,
                query_due: false,
                replay,
            };
        }
        let mut cut = d.cut.get();
        if self.cfg.inject == InjectedBug::DiscardCommittedTrailing && applied > 0 {
            // The bug: the last op this standby applied (so committed) is cut off.
            cut = applied - 1;
        }
        let c = &mut self.chans[ci];
        assert!(cut >= applied || self.cfg.inject == InjectedBug::DiscardCommittedTrailing);
        let cut_op = OpId::new(cut);
        apply_through(c, cut_op, true, Some(&mut self.events), channel);
        c.ring.truncate_after(cut_op);
        if let Some(after_cut) = cut_op.next()
            && after_cut < c.ring.base()
        {
            // Only the injected bug cuts below what is applied: keep the ring consistent so
            // the simulator's invariants, not an assertion, report it.
            c.ring.reset(after_cut);
        }
        if c.ring.top() < cut_op {
            // Ops inside a transfer snapshot whose cookies never arrived: nothing to resend.
            c.ring.prune_through(cut_op);
        }
        // The cut is at most the highest op held, at most `OpId::MAX`: never saturates.
        c.next_op = cut_op.saturating_add(1);
        c.client_acked = match resolution {
            Resolution::Behind { client_op } => OpId::new(client_op).min(cut_op),
            _ => c.acked.min(cut_op),
        };
        let c = &mut self.chans[ci];
        let resent: (u64, u64) = match resolution {
            Resolution::Behind { client_op } if replay.is_none() => OpId::new(client_op)
                .range_after(OpId::new(cut))
                .filter_map(|op| c.ring.get(op))
                .fold((0, 0), |(n, b), s| {
                    (
                        n + 1,
                        b + (4 + size_of::<crate::wire::UpdateFixed>() + s.public_len) as u64,
                    )
                }),
            _ => (0, 0),
        };
        c.last_failover = Some(super::ChannelFailover {
            epoch: self.epoch.get(),
            resolution,
            cut,
            replay_sections: SectionMask::EMPTY,
            replay_bytes: 0,
            full_replay_bytes: 0,
            resent_ops: resent.0,
            resent_bytes: resent.1,
        });
        self.events.push(Event::ChannelResolved {
            channel,
            resolution,
            cut: OpId::new(cut),
            held: OpId::new(held),
        });
    }

    fn maybe_finish_failover(&mut self, now_us: u64) {
        if !self.takeover().is_some_and(Takeover::all_resolved) {
            return;
        }
        let epoch = self.epoch;
        for ci in 0..self.chans.len() {
            let c = &mut self.chans[ci];
            let cut = c.last_op();
            let pushed = c.history.push(epoch, c.next_op);
            // Our new epoch is above every epoch we accepted (transferred history is bounded
            // by the epoch it came in, and our counter passed every epoch heard).
            assert!(pushed, "a new epoch starts a new history segment");
            c.commit = cut.max(c.applied);
            c.client_cursor = c.client_acked.saturating_add(1);
            c.client_progress_us = now_us;
            c.client_generation = 0;
            c.xfer_done = None;
            c.preapplied_top = OpId::ZERO;
            let keep_from = c.client_acked.min(cut).min(c.catch_up_floor);
            c.ring.prune_through(keep_from);
            if let Some(sections) = self.takeover().and_then(|t| t.chans[ci].replay) {
                let full = sections == SectionMask::ALL;
                self.start_replay(now_us, ci as u32, sections, full);
            }
        }
        // Every other control unit re-joins: through a catch-up from the position it kept when
        // that is still retained here (pinned for one drop timeout), else a full transfer.
        self.catch_up_until_us = Some(now_us + self.cfg.drop_timeout_us);
        self.sync_mask = 0;
        // The empty set of the new epoch, announced now: the set this unit announced as the
        // primary of an earlier epoch names no one dropped from this one.
        self.announce_sync_set();
        self.dropped_holding_all = 0;
        for p in &mut self.peers {
            p.transferring = false;
            p.xfer = None;
            p.chans.iter_mut().for_each(|pc| pc.ready = false);
            p.hb_due = true;
        }
        self.client_hb_due.iter_mut().for_each(|d| *d = true);
        // The set this unit was elected by names the units that hold every op committed
        // before this epoch: if this epoch commits nothing, it is still the freshest set that
        // says who holds them (see `adopt_higher_epoch`).
        self.remember_view(self.own_view());
        self.has_view = true;
        self.view_epoch = epoch;
        self.view_origin = super::ViewOrigin::Announced;
        self.timing.finished_us = Some(now_us);
        self.events.push(Event::TookOver { epoch });
        self.enter(RoleState::Primary);
    }
}

impl super::Chan {
    /// What this unit holds of the channel, as the cut decision sees it. Ops already in the
    /// state can never be cut; we can keep what the ring or a transferred snapshot holds.
    fn held_view(&self) -> HeldView {
        HeldView {
            floor: self.applied.max(self.preapplied_top),
            held: self.held_top(),
            acked: self.acked,
        }
    }

    /// Retained op `op` for the cut decision: the sections it touched, and whether only that
    /// cookie is held (the op is inside a transferred snapshot).
    fn slot(&self, op: OpId) -> Option<(SectionMask, bool)> {
        self.ring.get(op).map(|s| (s.cookie, s.preapplied))
    }
}

/// A client's answer to the takeover's query, as the cut decision may use it. A client whose
/// last op came from an epoch outside our lineage, or from a stretch of it a later takeover
/// cut, holds ops we do not: its history is unknown to us, as is a client that said so or did
/// not answer.
fn checked_answer(c: &super::Chan, reply: Option<&LaReplyBody>) -> Answer {
    match reply {
        Some(r)
            if r.flags.get() & LA_FLAG_UNKNOWN == 0
                && OpId::new(r.last_applied.get()) >= c.applied
                && c.history.agrees_with(
                    Epoch::from(r.data_epoch.get()),
                    OpId::new(r.last_applied.get()),
                ) =>
        {
            Answer::Applied {
                op: OpId::new(r.last_applied.get()),
                cookie_above: SectionMask::new(r.cookie_above.get()),
            }
        }
        _ => Answer::Unknown,
    }
}
