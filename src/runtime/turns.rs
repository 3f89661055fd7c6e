//! Where a worker's time goes, turn by turn: how long its busy turns last and how many
//! submissions each takes. Commit latency is about one and a half turns, so the turn-length
//! tail is the first thing to read when the latency tail is long.
//!
//! A long turn is then split by what held it up: the scheduler kept the worker off its core
//! (another task ran; the fabric can do nothing about it but leave idle time), or the worker
//! ran all along and the turn was long anyway (a backlog after a stall, a slow stretch of the
//! machine, or our own work). The scheduler's run-queue wait is read only at long turns and
//! every 100 ms, so the split costs nothing per turn. A long turn on the core that took a full
//! batch of submissions was catching up on a backlog; one that took less was itself held up.
//! The first kind is what a stall costs after it ends: at half load a worker drains a backlog
//! only as fast as its spare capacity allows, so every stall is followed by a few full turns.

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
    /// Turns of at least [`LONG_TURN_NS`] during which the worker waited on the run queue for
    /// at least half the turn.
    pub long_preempted: LongTurns,
    /// Turns of at least [`LONG_TURN_NS`] that waited less than that.
    pub long_on_cpu: LongTurns,
    /// Those of `long_on_cpu` that took a full batch of submissions: catching up on a backlog.
    pub long_on_cpu_full: LongTurns,
    /// Long turns with no run-queue figure to split them by (no schedstat, or no baseline yet).
    pub long_unsplit: LongTurns,
    /// The worker's run-queue wait at the last reading.
    run_delay_ns: Option<u64>,
}

/// A turn at least this long is split by what held it up.
pub const LONG_TURN_NS: u64 = 1_000_000;

/// A count of long turns and their summed length.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LongTurns {
    pub count: u64,
    pub sum_ns: u64,
}

impl LongTurns {
    fn add(&mut self, other: LongTurns) {
        self.count += other.count;
        self.sum_ns += other.sum_ns;
    }
}

impl Default for TurnProfile {
    fn default() -> Self {
        let hist = || Histogram::new_with_bounds(1, 60_000_000, 3).expect("static bounds");
        TurnProfile {
            busy_turn_us: hist(),
            submissions_per_turn: hist(),
            busy_ns: 0,
            covered_ns: 0,
            long_preempted: LongTurns::default(),
            long_on_cpu: LongTurns::default(),
            long_on_cpu_full: LongTurns::default(),
            long_unsplit: LongTurns::default(),
            run_delay_ns: None,
        }
    }
}

impl TurnProfile {
    /// Adds one turn that started at `start_ns` and ended at `end_ns`. `full_batch` says
    /// whether it took as many submissions as a turn may. `run_delay_ns` reads the worker's
    /// run-queue wait so far; it is called for long turns only.
    pub fn record(
        &mut self,
        start_ns: u64,
        end_ns: u64,
        busy: bool,
        submissions: usize,
        full_batch: bool,
        run_delay_ns: impl FnOnce() -> Option<u64>,
    ) {
        let ns = end_ns.saturating_sub(start_ns);
        if ns >= LONG_TURN_NS {
            let now = run_delay_ns();
            // The wait since the last reading: this turn's, plus any short preemption of the
            // (at most 100 ms of) turns since, which `rebase` keeps small.
            let waited = now.zip(self.run_delay_ns).map(|(n, p)| n.saturating_sub(p));
            self.run_delay_ns = now;
            let turn = LongTurns {
                count: 1,
                sum_ns: ns,
            };
            match waited {
                Some(w) if 2 * w >= ns => self.long_preempted.add(turn),
                Some(_) => {
                    self.long_on_cpu.add(turn);
                    if full_batch {
                        self.long_on_cpu_full.add(turn);
                    }
                }
                None => self.long_unsplit.add(turn),
            }
        }
        self.covered_ns += ns;
        if busy {
            self.busy_ns += ns;
            self.busy_turn_us.saturating_record((ns / 1000).max(1));
            self.submissions_per_turn
                .saturating_record(submissions as u64);
        }
    }

    /// Takes a fresh reading of the run-queue wait, so that the next long turn counts only
    /// what it waited since (call it every 100 ms or so).
    pub fn rebase(&mut self, run_delay_ns: Option<u64>) {
        self.run_delay_ns = run_delay_ns;
    }

    /// Merges another worker's profile into this one.
    pub fn add(&mut self, other: &TurnProfile) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.busy_turn_us.add(&other.busy_turn_us);
        let _ = self.submissions_per_turn.add(&other.submissions_per_turn);
        self.busy_ns += other.busy_ns;
        self.covered_ns += other.covered_ns;
        self.long_preempted.add(other.long_preempted);
        self.long_on_cpu.add(other.long_on_cpu);
        self.long_on_cpu_full.add(other.long_on_cpu_full);
        self.long_unsplit.add(other.long_unsplit);
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
        p.record(0, 3_000, true, 7, false, || {
            panic!("read only for long turns")
        });
        p.record(3_000, 4_000, false, 0, false, || {
            panic!("read only for long turns")
        });
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

    #[test]
    fn long_turns_are_split_by_the_run_queue_wait_since_the_last_reading() {
        let ms = 1_000_000;
        let mut p = TurnProfile::default();
        // No baseline yet: not split.
        p.record(0, 2 * ms, true, 1, false, || Some(0));
        p.rebase(Some(10 * ms));
        // Waited 1.5 of 2 ms: preempted, full batch or not.
        p.record(0, 2 * ms, true, 4096, true, || Some(11 * ms + ms / 2));
        // Waited 0.2 of 3 ms since that reading: on the CPU, held up with a short batch.
        p.record(0, 3 * ms, true, 1, false, || Some(11 * ms + 7 * ms / 10));
        // On the CPU with a full batch: catching up, 4 ms.
        p.record(0, 4 * ms, true, 4096, true, || Some(11 * ms + 8 * ms / 10));
        // A kernel without schedstat: not split.
        p.record(0, ms, true, 1, false, || None);
        let n = |l: super::LongTurns| (l.count, l.sum_ns / ms);
        assert_eq!(n(p.long_preempted), (1, 2));
        assert_eq!(n(p.long_on_cpu), (2, 7));
        assert_eq!(n(p.long_on_cpu_full), (1, 4));
        assert_eq!(n(p.long_unsplit), (2, 3));
        let mut q = TurnProfile::default();
        q.add(&p);
        assert_eq!(q.long_on_cpu, p.long_on_cpu);
        assert_eq!(q.long_on_cpu_full, p.long_on_cpu_full);
    }
}
