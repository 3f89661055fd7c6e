//! Invariant checks that look across nodes: one primary, committed ops kept, bounded memory,
//! convergence, and the final comparison against the oracle.

use super::world::{Slot, World};
use crate::proto::state::ChannelState;
use crate::proto::{Epoch, NodeId, OpId, OpStatus, Role};
use crate::wire::Entry;

impl World {
    /// inv6: no node acts as primary once it has heard a higher epoch from that epoch's owner.
    /// Epoch numbers carry their owner, so two primaries can never share an epoch: split brain
    /// is a stale primary that keeps acting after its successor reached it (until then it is
    /// fenced by the receivers, which inv6's client checks in `on_event` cover).
    pub(super) fn check_single_primary(&mut self) {
        for i in 0..self.nodes.len() {
            let Some(c) = self.cu(i) else { continue };
            let heard = self.max_epoch_rx[i];
            if c.role() != Role::Primary || heard <= c.epoch() {
                continue;
            }
            let (id, epoch) = (c.id, c.epoch());
            if self.reported_once.insert(("inv6", id, epoch)) {
                self.violation(format!(
                    "inv6: cu {id} still acts as primary of epoch {epoch:#x} after hearing epoch {heard:#x} from its owner"
                ));
            }
        }
    }

    /// inv6 (and inv4): no op a primary reported committed is discarded by a later primary.
    /// Called when a primary takes over and whenever a commit is reported in an epoch that the
    /// newest primary has superseded, so the loss shows when it happens rather than at the end.
    /// A committed op the successor never held was committed without it: two primaries
    /// (inv6). One it held and cut anyway is a faulty cut (inv4).
    pub(super) fn check_commit_kept(&mut self, p: usize, ch: u32, epoch: u64, through: u64) {
        let c = self.cu(p).expect("the primary is live");
        if epoch >= c.epoch() || c.op_status(ch, epoch, through) != OpStatus::Discarded {
            return;
        }
        let now_epoch = c.epoch();
        let successor = c
            .history(ch)
            .segments()
            .map(|s| s.0.get())
            .find(|&e| e > epoch);
        let cut =
            successor.and_then(|e| self.cuts.get(&(ch, e)).map(|&(cut, held)| (e, cut, held)));
        let msg = match cut {
            Some((e, _, held)) if through > held => format!(
                "inv6: op {through} of epoch {epoch:#x} on ch {ch} was committed without the primary of epoch {e:#x}, which held only up to op {held} and discarded it (split brain)"
            ),
            Some((e, cut, held)) => format!(
                "inv4: committed op {through} of epoch {epoch:#x} on ch {ch} was cut at op {cut} by the takeover of epoch {e:#x}, which held up to op {held}"
            ),
            None => format!(
                "inv4: committed op {through} of epoch {epoch:#x} on ch {ch} is discarded by the primary of epoch {now_epoch:#x}"
            ),
        };
        // Reported once: the final check would only repeat it.
        self.marks.remove(&(ch, epoch));
        self.violation(msg);
    }

    /// Every commit mark checked against primary `p` (it just took over).
    pub(super) fn check_commits_kept(&mut self, p: usize) {
        let marks: Vec<((u32, u64), u64)> = self.marks.iter().map(|(&k, &v)| (k, v)).collect();
        for ((ch, epoch), through) in marks {
            self.check_commit_kept(p, ch, epoch, through);
        }
    }

    /// Records, after each step of client `i`, which of its channels are without history
    /// (for inv9).
    pub(super) fn note_client_unknown(&mut self, i: usize) {
        let Slot::Up(n) = &self.nodes[i].slot else {
            return;
        };
        let Some(cl) = n.as_client() else { return };
        let id = cl.id;
        for ch in cl.channels().filter(|&ch| cl.is_unknown(ch)) {
            self.client_unknown_us.insert((id, ch), self.now_us);
        }
    }

    /// inv9: a replay goes only to a client out of sync. Outside a takeover (whose cut decides
    /// its replays, inv7), the primary replays a channel only when the client said it has no
    /// history (it was unknown within one network delay) or holds state from another epoch
    /// than the primary's (a restarted client replayed by an older primary). A replay to a
    /// client in sync on that channel resends what it has: wasted, and a sign the primary
    /// misreads its clients.
    pub(super) fn check_replay_target(&mut self, p: usize, channel: u32, client: NodeId) {
        let primary = self.cu(p).expect("replay from a live unit");
        let (unit, epoch) = (primary.id, primary.epoch());
        if self.failover_resolved.remove(&(unit, channel)) {
            return;
        }
        let recent_us = self.net.max_delay_us() + self.cfg.tick_us;
        let unknown_recently = self
            .client_unknown_us
            .get(&(client, channel))
            .is_some_and(|&t| t + recent_us >= self.now_us);
        let other_epoch = self
            .client_track
            .get(&(client, channel))
            .is_none_or(|t| t.last_op.is_none() || t.last_epoch != epoch);
        if !unknown_recently && !other_epoch {
            self.violation(format!(
                "inv9: cu {unit} replays ch {channel} to client {client} in sync on it (epoch {epoch:#x})"
            ));
        }
    }

    /// inv8: every ring and bulk stream stays within its configured limit. The rings assert
    /// their capacity on push, so the check compares both their length and their allocation
    /// with `window_ops` (a ring that grew holds memory beyond the limit before any push could
    /// fail); nothing but this check bounds a bulk stream's items in flight by `bulk_window`.
    pub(super) fn check_bounds(&mut self) {
        let window = self.cfg.window_ops;
        let bulk = self.cfg.bulk_window;
        let channels = self.cfg.topology.channels() as u32;
        let mut problem = None;
        'nodes: for i in 0..self.nodes.len() {
            if self.reported_once.contains(&("inv8", self.nodes[i].id, 0)) {
                continue;
            }
            let dropped = self
                .cu(i)
                .map(|c| c.events_dropped())
                .or_else(|| self.client(i).map(|c| c.events_dropped()))
                .unwrap_or(0);
            if dropped > 0 {
                let id = self.nodes[i].id;
                problem = Some((
                    id,
                    format!("inv8: node {id} dropped {dropped} events on a full event queue"),
                ));
                break;
            }
            let Some(c) = self.cu(i) else { continue };
            for ch in 0..channels {
                let (len, cap) = (c.ring_len(ch), c.ring_capacity(ch));
                if len > window || cap > window {
                    problem = Some((
                        c.id,
                        format!(
                            "inv8: cu {} ({:?}) ch {ch} holds {len} ops in a ring of {cap} slots, above window_ops {window}",
                            c.id,
                            c.role()
                        ),
                    ));
                    break 'nodes;
                }
            }
            let n = c.bulk_in_flight_len();
            if n > bulk {
                problem = Some((
                    c.id,
                    format!(
                        "inv8: cu {} has {n} bulk items in flight, above bulk_window {bulk}",
                        c.id
                    ),
                ));
                break;
            }
        }
        // Reported once per node: the overrun persists until the node restarts.
        if let Some((id, p)) = problem {
            self.reported_once.insert(("inv8", id, 0));
            self.violation(p);
        }
    }

    /// `None` once the system has converged; otherwise what is still missing.
    pub(super) fn convergence_gap(&self) -> Option<String> {
        let Some(p) = self.primary() else {
            return Some("no primary".into());
        };
        let primary = self.cu(p).expect("live");
        for i in 0..self.nodes.len() {
            if i == p {
                continue;
            }
            let n = &self.nodes[i];
            if n.is_cu {
                let Some(c) = self.cu(i) else {
                    return Some(format!("cu {} down", n.id));
                };
                if c.role() != Role::Standby || c.epoch() != primary.epoch() {
                    return Some(format!(
                        "cu {} is {:?} in epoch {:#x}",
                        n.id,
                        c.role(),
                        c.epoch()
                    ));
                }
                let idx = self.cfg.topology.cu_index(n.id).expect("cu");
                if primary.sync_mask() & (1 << idx) == 0 {
                    return Some(format!("cu {} not in the sync set", n.id));
                }
            } else {
                let Some(c) = self.client(i) else {
                    return Some(format!("client {} down", n.id));
                };
                if c.epoch() != primary.epoch() {
                    return Some(format!("client {} in epoch {:#x}", n.id, c.epoch()));
                }
            }
        }
        for ch in 0..self.cfg.topology.channels() as u32 {
            let last = primary.next_op(ch) - 1;
            if primary.commit_watermark(ch) != last || primary.is_replaying(ch) {
                return Some(format!(
                    "ch {ch}: commit {} of {last}, replay {:?}, client acked {}",
                    primary.commit_watermark(ch),
                    primary.replay_progress(ch),
                    primary.client_acked(ch)
                ));
            }
            let owner = self.cfg.topology.channel_owner[ch as usize];
            let cl = self.client(self.node_index(owner)).expect("checked above");
            if cl.applied(ch) != Some(OpId::new(last)) || cl.is_unknown(ch) {
                return Some(format!(
                    "ch {ch}: client applied {:?} of {last}",
                    cl.applied(ch)
                ));
            }
            for i in 0..self.nodes.len() {
                if i != p
                    && let Some(s) = self.cu(i)
                    && s.standby_position(ch).0 != last
                {
                    return Some(format!(
                        "ch {ch}: standby {} applied {:?} of {last}",
                        s.id,
                        s.standby_position(ch)
                    ));
                }
            }
        }
        None
    }

    /// inv4 and inv5 after convergence: digests everywhere, committed marks, and the state
    /// rebuilt from the oracle's log of the kept op sequence.
    pub(super) fn final_checks(&mut self) {
        let Some(p) = self.primary() else { return };
        let channels = self.cfg.topology.channels() as u32;
        let mut problems = Vec::new();
        let mut checked = 0u64;
        {
            let primary = self.cu(p).expect("live");
            for ch in 0..channels {
                let ps = primary.state(ch).expect("channel");
                let owner = self.cfg.topology.channel_owner[ch as usize];
                let cl = self.client(self.node_index(owner)).expect("converged");
                let cs = cl.state(ch).expect("client channel");
                if cs.public_digest() != ps.public_digest() {
                    problems.push(format!(
                        "inv5: client {owner} ch {ch} differs from the primary in sections {:#x}",
                        cs.differing_sections(ps)
                    ));
                }
                for i in 0..self.nodes.len() {
                    if i != p
                        && let Some(s) = self.cu(i)
                        && s.state(ch).expect("ch").full_digest() != ps.full_digest()
                    {
                        problems.push(format!(
                            "inv5: standby {} ch {ch} differs from the primary",
                            s.id
                        ));
                    }
                }
                // Rebuild from the oracle.
                let hist = primary.history(ch);
                let mut rebuilt = ChannelState::default();
                let last = primary.next_op(ch) - 1;
                for op in 1..=last {
                    let Some(epoch) = hist.epoch_at(OpId::new(op)).map(Epoch::get) else {
                        problems.push(format!("ch {ch}: history does not reach op {op}"));
                        break;
                    };
                    let Some(entries) = self.log.get(&(ch, epoch, op)) else {
                        problems.push(format!(
                            "inv4: ch {ch} keeps op {op} of epoch {epoch:#x}, never submitted"
                        ));
                        break;
                    };
                    for (section, key, value, private) in entries {
                        rebuilt.apply(&Entry {
                            section: *section,
                            key: *key,
                            value: value.as_deref(),
                            private: *private,
                        });
                    }
                    checked += 1;
                }
                if rebuilt.full_digest() != ps.full_digest() {
                    problems.push(format!(
                        "inv4: ch {ch}: primary state differs from the kept op sequence"
                    ));
                }
            }
            for (&(ch, epoch), &through) in &self.marks {
                let st = primary.op_status(ch, epoch, through);
                if st != OpStatus::Committed {
                    problems.push(format!(
                        "inv4: committed op {through} of epoch {epoch:#x} on ch {ch} is now {st:?}"
                    ));
                }
            }
        }
        self.report.committed_checked += checked;
        for p in problems {
            self.violation(p);
        }
    }
}
