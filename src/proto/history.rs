//! Which op IDs of which epoch a channel kept, so that "what became of op X?" has an exact answer
//! after any number of failovers.
//!
//! Op IDs are dense per channel and a failover may discard a trailing run of them; the new
//! primary then reuses those numbers. A segment `(epoch, start_op)` says: from `start_op` on, the
//! kept ops were assigned in `epoch`, up to the next segment's start.

use std::collections::VecDeque;

use super::{Epoch, OpId};

/// Segments kept per channel; older epochs answer `Unknown`.
pub const MAX_SEGMENTS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpStatus {
    /// Applied by the standby set: it survives a failover.
    Committed,
    /// Kept so far but not yet committed.
    Pending,
    /// Cut by a failover; it will never be applied.
    Discarded,
    /// Not assigned yet, or older than the history kept.
    Unknown,
}

/// How many ops of a range have each [`OpStatus`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts {
    pub committed: u64,
    pub pending: u64,
    pub discarded: u64,
    pub unknown: u64,
}

impl StatusCounts {
    fn add(&mut self, status: OpStatus, n: u64) {
        match status {
            OpStatus::Committed => self.committed += n,
            OpStatus::Pending => self.pending += n,
            OpStatus::Discarded => self.discarded += n,
            OpStatus::Unknown => self.unknown += n,
        }
    }

    pub fn total(&self) -> u64 {
        self.committed + self.pending + self.discarded + self.unknown
    }
}

/// Ops of `from..=to` inside `lo..=hi` (0 when they do not meet).
fn overlap(from: u64, to: u64, lo: u64, hi: u64) -> u64 {
    let (a, b) = (from.max(lo), to.min(hi));
    if a > b { 0 } else { (b - a).saturating_add(1) }
}

/// The last op before a segment starting at `start`. Starts are at least 1 ([`History::push`]
/// refuses op 0), so this is exact.
fn last_before(start: OpId) -> OpId {
    start.prev().unwrap_or(OpId::ZERO)
}

#[derive(Debug, Clone, Default)]
pub struct History {
    segments: VecDeque<(Epoch, OpId)>,
}

impl History {
    pub fn new(epoch: Epoch, start_op: OpId) -> Self {
        let mut h = History::default();
        let pushed = h.push(epoch, start_op);
        assert!(pushed, "a first segment starts at a valid op");
        h
    }

    /// Starts a new epoch's segment at `start_op` (the op after the failover cut). Returns
    /// false, changing nothing, unless `epoch` is above every epoch held and `start_op` is a
    /// valid op ID: history can come from the network (a state transfer), so a bad segment is
    /// the caller's to count, never a panic.
    #[must_use]
    pub fn push(&mut self, epoch: Epoch, start_op: OpId) -> bool {
        if !start_op.is_valid() || self.segments.back().is_some_and(|&(e, _)| epoch <= e) {
            return false;
        }
        // A segment that never kept an op is fully superseded.
        while let Some(&(_, s)) = self.segments.back() {
            if s >= start_op && self.segments.len() > 1 {
                self.segments.pop_back();
            } else {
                break;
            }
        }
        if self.segments.len() == MAX_SEGMENTS {
            self.segments.pop_front();
        }
        self.segments.push_back((epoch, start_op));
        true
    }

    pub fn segments(&self) -> impl Iterator<Item = (Epoch, OpId)> + '_ {
        self.segments.iter().copied()
    }

    pub fn clear(&mut self) {
        self.segments.clear();
    }

    /// Whether op `op` as the primary of `epoch` sent it is the op this history keeps at that
    /// position: `epoch` is one of our segments and the next one (if any) starts above `op`
    /// (a later takeover kept everything of `epoch`'s lineage below its start). False when
    /// the history does not reach `epoch`: then nobody can say.
    pub fn agrees_with(&self, epoch: Epoch, op: OpId) -> bool {
        let Some(k) = self.segments.iter().position(|&(e, _)| e == epoch) else {
            return false;
        };
        self.segments.get(k + 1).is_none_or(|&(_, next)| op < next)
    }

    /// The epoch in which the op kept at position `op` was assigned, if history reaches it.
    pub fn epoch_at(&self, op: OpId) -> Option<Epoch> {
        self.segments
            .iter()
            .rev()
            .find(|&&(_, s)| s <= op)
            .map(|&(e, _)| e)
    }

    /// Status of `op` assigned in `epoch`, given the highest op assigned (`last_op`) and the
    /// commit watermark.
    pub fn status(&self, epoch: Epoch, op: OpId, last_op: OpId, commit: OpId) -> OpStatus {
        let Some(i) = self.segments.iter().position(|&(e, _)| e == epoch) else {
            let oldest = self
                .segments
                .front()
                .map(|s| s.0)
                .unwrap_or(Epoch::from(u64::MAX));
            let newest = self.segments.back().map(|s| s.0).unwrap_or(Epoch::ZERO);
            // An epoch between known ones never had an op kept.
            return if epoch > oldest && epoch < newest {
                OpStatus::Discarded
            } else {
                OpStatus::Unknown
            };
        };
        let start = self.segments[i].1;
        let end = self
            .segments
            .get(i + 1)
            .map_or(last_op, |s| last_before(s.1));
        if op < start {
            return OpStatus::Unknown;
        }
        if op > end {
            return if i + 1 < self.segments.len() {
                OpStatus::Discarded
            } else {
                OpStatus::Unknown
            };
        }
        if op <= commit {
            OpStatus::Committed
        } else {
            OpStatus::Pending
        }
    }
}

impl History {
    /// [`History::status`] of every op in `from..=to`, counted per status without visiting
    /// each op: an admin request may ask about millions of ops and must not stall the node.
    pub fn status_counts(
        &self,
        epoch: Epoch,
        from: OpId,
        to: OpId,
        last_op: OpId,
        commit: OpId,
    ) -> StatusCounts {
        let mut n = StatusCounts::default();
        if from > to {
            return n;
        }
        let (from, to) = (from.get(), to.get());
        let all = (to - from).saturating_add(1);
        let Some(i) = self.segments.iter().position(|&(e, _)| e == epoch) else {
            // One answer for every op of an epoch the history does not hold.
            n.add(self.status(epoch, OpId::new(from), last_op, commit), all);
            return n;
        };
        let start = self.segments[i].1.get();
        let later = i + 1 < self.segments.len();
        let end = self
            .segments
            .get(i + 1)
            .map_or(last_op, |s| last_before(s.1))
            .get();
        let commit = commit.get();
        let below = match start.checked_sub(1) {
            Some(hi) => overlap(from, to, 0, hi),
            None => 0,
        };
        let kept = overlap(from, to, start, end);
        let committed = overlap(from, to, start, end.min(commit));
        n.add(OpStatus::Unknown, below);
        n.add(OpStatus::Committed, committed);
        n.add(OpStatus::Pending, kept - committed);
        let above = all.saturating_sub(below).saturating_sub(kept);
        n.add(
            if later {
                OpStatus::Discarded
            } else {
                OpStatus::Unknown
            },
            above,
        );
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The tables below read best in plain numbers.
    fn new(epoch: u64, start: u64) -> History {
        History::new(Epoch::from(epoch), OpId::new(start))
    }
    fn push(h: &mut History, epoch: u64, start: u64) -> bool {
        h.push(Epoch::from(epoch), OpId::new(start))
    }
    fn status(h: &History, epoch: u64, op: u64, last: u64, commit: u64) -> OpStatus {
        let [op, last, commit] = [op, last, commit].map(OpId::new);
        h.status(Epoch::from(epoch), op, last, commit)
    }

    #[test]
    fn statuses_across_failovers() {
        let mut h = new(10, 1);
        assert_eq!(status(&h, 10, 5, 8, 4), OpStatus::Pending);
        assert_eq!(status(&h, 10, 4, 8, 4), OpStatus::Committed);
        assert_eq!(status(&h, 10, 9, 8, 4), OpStatus::Unknown);
        // Failover keeps through op 6: epoch 20 starts at 7.
        assert!(push(&mut h, 20, 7));
        assert_eq!(status(&h, 10, 6, 9, 6), OpStatus::Committed);
        assert_eq!(status(&h, 10, 7, 9, 6), OpStatus::Discarded);
        assert_eq!(status(&h, 20, 7, 9, 6), OpStatus::Pending);
        assert_eq!(status(&h, 15, 7, 9, 6), OpStatus::Discarded);
        assert_eq!(status(&h, 30, 7, 9, 6), OpStatus::Unknown);
        // Another failover that kept nothing of epoch 20.
        assert!(push(&mut h, 30, 7));
        assert_eq!(status(&h, 20, 7, 9, 6), OpStatus::Discarded);
        assert_eq!(status(&h, 30, 7, 9, 7), OpStatus::Committed);
    }

    #[test]
    fn bad_segments_are_refused_not_asserted() {
        let mut h = new(10, 1);
        assert!(!push(&mut h, 10, 5), "same epoch");
        assert!(!push(&mut h, 5, 5), "older epoch");
        assert!(!push(&mut h, 20, 0), "op 0");
        assert!(
            !push(&mut h, 20, crate::proto::MAX_OP_ID + 1),
            "op past the range"
        );
        assert_eq!(
            h.segments().collect::<Vec<_>>(),
            vec![(Epoch::from(10), OpId::new(1))]
        );
        assert!(push(&mut h, u64::MAX, 2));
        assert!(!push(&mut h, 20, 3), "nothing can follow the largest epoch");
    }

    #[test]
    fn range_counts_match_per_op_status() {
        let mut h = new(10, 1);
        assert!(push(&mut h, 20, 7));
        assert!(push(&mut h, 30, 12));
        for epoch in [5, 10, 15, 20, 25, 30, 40] {
            for from in 0..18u64 {
                for to in from.saturating_sub(1)..18 {
                    for commit in [0, 6, 9, 14] {
                        let mut want = StatusCounts::default();
                        for op in from..=to {
                            want.add(status(&h, epoch, op, 15, commit), 1);
                        }
                        let [f, t, last, c] = [from, to, 15, commit].map(OpId::new);
                        let got = h.status_counts(Epoch::from(epoch), f, t, last, c);
                        assert_eq!(got, want, "epoch {epoch} {from}..={to} commit {commit}");
                    }
                }
            }
        }
    }
}
