//! Invariant checks that look across nodes: one primary per epoch, convergence, and the final
//! comparison against the oracle.

use super::world::World;
use crate::proto::state::ChannelState;
use crate::proto::{OpStatus, Role};
use crate::wire::Entry;

impl World {
    /// inv6: at most one node acts as primary in the highest epoch.
    pub(super) fn check_single_primary(&mut self) {
        let mut best = (0u64, 0usize);
        for i in 0..self.nodes.len() {
            if let Some(c) = self.cu(i)
                && c.role() == Role::Primary
            {
                if c.epoch() > best.0 {
                    best = (c.epoch(), 1);
                } else if c.epoch() == best.0 {
                    best.1 += 1;
                }
            }
        }
        if best.1 > 1 {
            self.violation(format!("inv6: {} primaries in epoch {:#x}", best.1, best.0));
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
            if cl.applied(ch) != Some(last) || cl.is_unknown(ch) {
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
                    let Some(epoch) = hist.epoch_at(op) else {
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
            for &(ch, epoch, through) in &self.marks {
                let st = primary.op_status(ch, epoch, through);
                if st != OpStatus::Committed {
                    problems.push(format!(
                        "inv4: committed op {through} of epoch {epoch:#x} on ch {ch} is now {st:?}"
                    ));
                }
            }
            for ch in 0..channels {
                if primary.ring_len(ch) > self.cfg.window_ops {
                    problems.push(format!("inv8: ch {ch} retains more than the window"));
                }
            }
        }
        self.report.committed_checked += checked;
        for p in problems {
            self.violation(p);
        }
    }
}
