//! Per-peer limits on the work a peer's requests make the primary do. A NACK makes it resend
//! part of its window, a "no history" answer or a new life of a line card a full replay of a
//! channel, a NEEDS_TRANSFER heartbeat a state transfer. An authenticated peer that misbehaves
//! (or a bug in one) could ask for these back to back; a [`Pacer`] per peer and channel serves
//! them no faster than an honest peer asks, and lets a replay or transfer stream keep the
//! primary busy at most half the time. A request refused for pace is counted; the peer asks
//! again (NACKs, "no history" answers and NEEDS_TRANSFER heartbeats repeat until served), and
//! a full replay owed to a new life of a line card is started once its pacer allows.

use crate::proto::ProtoConfig;

/// Between two NACKs served for one peer and channel: honest peers NACK at most once per
/// `nack_interval_us`.
pub(super) fn nack_gap_us(cfg: &ProtoConfig) -> u64 {
    cfg.nack_interval_us / 2
}

/// The least pause between two replays to one channel's client, or two transfers to one
/// standby: a heartbeat interval, the pace at which they repeat their requests.
pub(super) fn stream_gap_us(cfg: &ProtoConfig) -> u64 {
    cfg.heartbeat_interval_us
}

/// When the next costly request of one peer (on one channel) may be served.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Pacer {
    next_us: u64,
    started_us: u64,
}

impl Pacer {
    pub(super) fn ready(&self, now_us: u64) -> bool {
        now_us >= self.next_us
    }

    /// Serves a request now: the next may come `gap_us` after this one started.
    pub(super) fn start(&mut self, now_us: u64, gap_us: u64) {
        self.started_us = now_us;
        self.next_us = now_us.saturating_add(gap_us);
    }

    /// Serves a request if one may be served now.
    pub(super) fn try_start(&mut self, now_us: u64, gap_us: u64) -> bool {
        let ok = self.ready(now_us);
        if ok {
            self.start(now_us, gap_us);
        }
        ok
    }

    /// The stream served last has ended: the next waits as long again as it ran (at least
    /// `gap_us`), so that one peer keeps the sender streaming at most half the time.
    pub(super) fn finish(&mut self, now_us: u64, gap_us: u64) {
        let ran_us = now_us.saturating_sub(self.started_us);
        self.next_us = self.next_us.max(now_us.saturating_add(ran_us.max(gap_us)));
    }
}

#[cfg(test)]
mod tests {
    use super::Pacer;

    #[test]
    fn requests_are_served_no_faster_than_the_gap() {
        let mut p = Pacer::default();
        assert!(p.try_start(1_000, 100));
        assert!(!p.try_start(1_050, 100));
        assert!(!p.try_start(1_099, 100));
        assert!(p.try_start(1_100, 100));
    }

    #[test]
    fn a_stream_that_ran_long_waits_as_long_again() {
        let mut p = Pacer::default();
        p.start(0, 10);
        p.finish(500, 10);
        assert!(!p.ready(999));
        assert!(p.ready(1_000));
        // A short one waits the gap.
        p.start(1_000, 10);
        p.finish(1_002, 10);
        assert!(!p.ready(1_011));
        assert!(p.ready(1_012));
    }
}
