//! Output: one frame per call, for one destination, batching every message that is due for it.
//! Nothing is queued per message: what to send is derived from cursors and dirty flags, so the
//! output is bounded by construction and costs no allocation.

use super::ControlUnit;
use super::role::RoleState;
use crate::proto::{Epoch, Role, SectionMask, Transmit};
use crate::wire::{
    ChannelOp, CommitBody, FrameBuilder, Kind, LaReplyBody, NackBody, UPDATE_FLAG_PREAPPLIED,
};

impl ControlUnit {
    /// Encodes the next datagram into `buf`, or returns `None` when nothing is due.
    pub fn poll_transmit(&mut self, now_us: u64, buf: &mut [u8]) -> Option<Transmit> {
        let cap = buf.len().min(self.cfg.max_frame_bytes);
        let buf = &mut buf[..cap];
        let n_cu = self.peers.len();
        let n = n_cu + self.client_chans.len();
        // `(tx_next + step) % n` with one division per call instead of one per step.
        let start = self.tx_next % n;
        for step in 0..n {
            let d = if start + step >= n {
                start + step - n
            } else {
                start + step
            };
            if d == self.index {
                continue;
            }
            self.packet_seq += 1;
            let mut fb = FrameBuilder::new(buf, self.id, self.epoch.get(), self.packet_seq);
            let dst = if d < n_cu {
                self.fill_for_cu(now_us, d, &mut fb);
                self.peers[d].id
            } else {
                self.fill_for_client(now_us, d - n_cu, &mut fb);
                self.cfg.topology.clients[d - n_cu]
            };
            if fb.is_empty() {
                self.packet_seq -= 1;
                continue;
            }
            // Stay on this destination while it has more; otherwise move on.
            self.tx_next = d;
            let len = fb.finish();
            self.counters.frames_tx += 1;
            self.counters.bytes_tx += len as u64;
            return Some(Transmit { dst, len });
        }
        self.tx_next = (self.tx_next + 1) % n;
        None
    }

    fn fill_for_cu(&mut self, _now_us: u64, pi: usize, fb: &mut FrameBuilder<'_>) {
        if self.peers[pi].hb_due {
            if self.role() == Role::Primary {
                self.announce_sync_set();
            }
            let hb = self.heartbeat_body();
            if !fb.push(Kind::Heartbeat, &hb) {
                return;
            }
            self.peers[pi].hb_due = false;
        }
        match self.role() {
            Role::Primary => self.fill_primary_to_standby(pi, fb),
            Role::Standby | Role::Joining
                if self.cfg.topology.epoch_owner(self.epoch) == Some(self.peers[pi].id) =>
            {
                self.fill_standby_to_primary(fb)
            }
            _ => {}
        }
    }

    fn fill_primary_to_standby(&mut self, pi: usize, fb: &mut FrameBuilder<'_>) {
        let window = self.cfg.bulk_window;
        let p = &mut self.peers[pi];
        if let Some(x) = &mut p.xfer
            && !x.fill(fb, window)
        {
            return;
        }
        for (ci, c) in self.chans.iter().enumerate() {
            let pc = &mut p.chans[ci];
            if !pc.ready {
                continue;
            }
            if pc.fwd_dirty || pc.fwd_sent < c.client_acked.get() {
                let a = ChannelOp {
                    channel: c.id.into(),
                    generation: 0.into(),
                    op: c.client_acked.get().into(),
                };
                if !fb.push(Kind::FwdAck, &a) {
                    return;
                }
                pc.fwd_sent = c.client_acked.get();
                pc.fwd_dirty = false;
            }
            while pc.cursor < c.next_op {
                let op = pc.cursor;
                if op > pc.xfer_top {
                    // As many ops as fit, in one copy from the log.
                    let room = fb.run_room(c.id, op.get());
                    let (ops, count) = c.ring.run_stretch(op, c.next_op, false, room);
                    if count > 0 && fb.push_run_ops(c.id, op.get(), count, ops) {
                        pc.cursor = op.saturating_add(count);
                        continue;
                    }
                }
                let pushed = if op <= pc.xfer_top {
                    let idx = op.checked_sub(pc.preapplied_from).map(|i| i as usize);
                    let cookie = idx
                        .and_then(|i| pc.preapplied.get(i).copied())
                        .unwrap_or(SectionMask::ALL)
                        .get();
                    let op = op.get();
                    fb.push_update(UPDATE_FLAG_PREAPPLIED, c.id, op, cookie, (&[], 0), (&[], 0))
                } else if let Some(s) = c.ring.get(op) {
                    fb.push_run_update(c.id, op.get(), s.cookie.get(), s.public(), s.private())
                } else {
                    // The op left retention: this standby can only catch up by a transfer.
                    pc.ready = false;
                    p.transferring = false;
                    self.sync_mask &= !(1 << pi);
                    p.hb_due = true;
                    self.counters.rejected_unexpected += 1;
                    break;
                };
                if !pushed {
                    return;
                }
                // Below `next_op`: there is an op after it.
                pc.cursor = op.saturating_add(1);
            }
        }
    }

    fn fill_standby_to_primary(&mut self, fb: &mut FrameBuilder<'_>) {
        for c in &mut self.chans {
            if c.offer_due {
                // The epoch whose primary sent the op at our position, from our own history:
                // not the epoch we were in when we kept the state, which a unit that resumed
                // an older state in a newer epoch would claim for ops that epoch cut (seed
                // 17104922: a catch-up on the wrong lineage, a standby differing for good).
                let data_epoch = c.history.epoch_at(c.applied).map_or(0, Epoch::get);
                let offer = LaReplyBody {
                    channel: c.id.into(),
                    flags: 0.into(),
                    last_applied: c.applied.get().into(),
                    cookie_above: 0.into(),
                    data_epoch: data_epoch.into(),
                };
                if !fb.push(Kind::LaReply, &offer) {
                    return;
                }
                c.offer_due = false;
            }
            if let Some(r) = &mut c.xfer_rx
                && r.ack_dirty
            {
                let done = c.xfer_done == Some(r.stream);
                if !fb.push(Kind::XferAck, &r.ack(c.id, done)) {
                    return;
                }
                r.ack_dirty = false;
            }
            if !c.ready {
                continue;
            }
            if c.commit_dirty {
                let b = CommitBody {
                    channel: c.id.into(),
                    reserved: 0.into(),
                    applied: c.applied.get().into(),
                    held: c.ring.top().max(c.applied).get().into(),
                };
                if !fb.push(Kind::Commit, &b) {
                    return;
                }
                c.commit_dirty = false;
            }
            if let Some((from, to)) = c.nack {
                let nb = NackBody {
                    channel: c.id.into(),
                    generation: 0.into(),
                    from: from.get().into(),
                    to: to.get().into(),
                };
                if !fb.push(Kind::Nack, &nb) {
                    return;
                }
                c.nack = None;
            }
        }
    }

    fn fill_for_client(&mut self, now_us: u64, ci: usize, fb: &mut FrameBuilder<'_>) {
        match self.role() {
            Role::Primary => {}
            Role::Candidate => return self.fill_queries(ci, fb),
            _ => return,
        }
        if self.client_hb_due[ci] {
            let hb = self.heartbeat_body();
            if !fb.push(Kind::Heartbeat, &hb) {
                return;
            }
            self.client_hb_due[ci] = false;
        }
        let window = self.cfg.bulk_window;
        for k in 0..self.client_chans[ci].len() {
            let ch = self.client_chans[ci][k] as usize;
            let c = &mut self.chans[ch];
            if let Some(r) = &mut c.replay {
                if !r.fill(fb, window) {
                    return;
                }
                continue;
            }
            while c.client_cursor < c.next_op {
                let op = c.client_cursor;
                // As many ops as fit, in one copy from the log (none with private entries).
                let room = fb.run_room(c.id, op.get());
                let (ops, count) = c.ring.run_stretch(op, c.next_op, true, room);
                if count > 0 && fb.push_run_ops(c.id, op.get(), count, ops) {
                    c.client_cursor = op.saturating_add(count);
                    continue;
                }
                let Some(s) = c.ring.get(op) else {
                    // Cannot happen unless a forged ack released retention: resync fully.
                    self.counters.rejected_unexpected += 1;
                    self.start_replay(now_us, ch as u32, SectionMask::ALL, true);
                    break;
                };
                if !fb.push_run_update(c.id, op.get(), s.cookie.get(), s.public(), (&[], 0)) {
                    return;
                }
                // Below `next_op`: there is an op after it.
                c.client_cursor = op.saturating_add(1);
            }
        }
    }

    fn fill_queries(&mut self, ci: usize, fb: &mut FrameBuilder<'_>) {
        let ControlUnit {
            state,
            chans,
            client_chans,
            ..
        } = self;
        let RoleState::Candidate(t) = state else {
            return;
        };
        for &ch in &client_chans[ci] {
            let (c, tc) = (&chans[ch as usize], &mut t.chans[ch as usize]);
            if tc.query_due {
                let q = ChannelOp {
                    channel: c.id.into(),
                    generation: 0.into(),
                    op: c.held_top().get().into(),
                };
                if !fb.push(Kind::LaQuery, &q) {
                    return;
                }
                tc.query_due = false;
            }
        }
    }
}
