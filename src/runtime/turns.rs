//! Where a worker's time goes, turn by turn: how long its busy turns last and how many
//! submissions each takes. Commit latency is about one and a half turns, so the turn-length
//! tail is the first thing to read when the latency tail is long.

use hdrhistogram::Histogram;

#[derive(Debug, Clone)]
pub struct TurnProfile {
    /// Length of each turn that did any work, in µs.
    pub busy_turn_us: Histogram<u64>,
    /// Submissions taken in each busy turn.
    pub submissions_per_turn: Histogram<u64>,
    /// Sum of the busy turns' lengths.
    pub busy_ns: u64,
    /// Time the profile covered (busy or not).
    pub covered_ns: u64,
}

impl Default for TurnProfile {
    fn default() -> Self {
        let hist = || Histogram::new_with_bounds(1, 60_000_000, 3).expect("static bounds");
        TurnProfile {
            busy_turn_us: hist(),
            submissions_per_turn: hist(),
            busy_ns: 0,
            covered_ns: 0,
        }
    }
}

impl TurnProfile {
    /// Adds one turn that started at `start_ns` and ended at `end_ns`.
    pub fn record(&mut self, start_ns: u64, end_ns: u64, busy: bool, submissions: usize) {
        let ns = end_ns.saturating_sub(start_ns);
        self.covered_ns += ns;
        if busy {
            self.busy_ns += ns;
            self.busy_turn_us.saturating_record((ns / 1000).max(1));
            self.submissions_per_turn
                .saturating_record(submissions as u64);
        }
    }

    /// Merges another worker's profile into this one.
    pub fn add(&mut self, other: &TurnProfile) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.busy_turn_us.add(&other.busy_turn_us);
        let _ = self.submissions_per_turn.add(&other.submissions_per_turn);
        self.busy_ns += other.busy_ns;
        self.covered_ns += other.covered_ns;
    }

    /// Share of the covered time spent in busy turns.
    pub fn busy_share(&self) -> f64 {
        self.busy_ns as f64 / self.covered_ns.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::TurnProfile;

    #[test]
    fn idle_turns_count_only_toward_coverage() {
        let mut p = TurnProfile::default();
        p.record(0, 3_000, true, 7);
        p.record(3_000, 4_000, false, 0);
        assert_eq!(p.busy_turn_us.len(), 1);
        assert_eq!(p.busy_turn_us.max(), 3);
        assert_eq!(p.submissions_per_turn.max(), 7);
        assert!((p.busy_share() - 0.75).abs() < 1e-9);
        let mut q = TurnProfile::default();
        q.add(&p);
        q.add(&p);
        assert_eq!(q.busy_turn_us.len(), 2);
        assert_eq!(q.covered_ns, 8_000);
    }
}
