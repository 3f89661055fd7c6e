//! Per-stage latency from submit: client apply, client ack (seen by the primary) and standby
//! commit. Submit times sit in a per-channel ring indexed by op ID; the retention window bounds
//! the ops in flight, so a slot is never reused before its op commits.

use hdrhistogram::Histogram;

pub const STAGES: [&str; 3] = ["client_apply", "client_ack", "standby_commit"];

#[derive(Debug)]
pub struct LatencyRecorder {
    /// Ops remembered per channel: the retention window rounded up to a power of two, so a
    /// slot is found with a mask instead of a division.
    window: usize,
    submit_ns: Vec<Vec<u64>>,
    /// Highest op already recorded per channel and stage.
    done: Vec<[u64; 3]>,
    /// Every interval closed so far. Samples go into `interval` only (one record per op and
    /// stage on the hot path, not two) and are added here when the interval closes.
    pub total: [Histogram<u64>; 3],
    pub interval: [Histogram<u64>; 3],
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds are valid")
}

impl LatencyRecorder {
    pub fn new(channels: usize, window: usize) -> Self {
        let window = window.max(1).next_power_of_two();
        LatencyRecorder {
            window,
            submit_ns: vec![vec![0; window]; channels],
            done: vec![[0; 3]; channels],
            total: [hist(), hist(), hist()],
            interval: [hist(), hist(), hist()],
        }
    }

    pub fn submitted(&mut self, channel: u32, op: u64, at_ns: u64) {
        let slot = self.slot(op);
        self.submit_ns[channel as usize][slot] = at_ns;
    }

    fn slot(&self, op: u64) -> usize {
        op as usize & (self.window - 1)
    }

    /// Records stage `stage` for every op of `channel` up to `through`.
    pub fn reached(&mut self, stage: usize, channel: u32, through: u64, now_ns: u64) {
        let c = channel as usize;
        let from = self.done[c][stage] + 1;
        if through < from {
            return;
        }
        // Ops older than the window were overwritten: record only the window's worth.
        let start = from.max(through.saturating_sub(self.window as u64 - 1));
        // Ops submitted in one batch share their intended time (flat out, the generator stamps
        // a batch at once), so a run of equal times is one `record_n`, not one record per op.
        let mut run = (0u64, 0u64);
        for op in start..=through {
            let t = self.submit_ns[c][self.slot(op)];
            if t == run.0 {
                run.1 += 1;
                continue;
            }
            self.record_run(stage, run, now_ns);
            run = (t, 1);
        }
        self.record_run(stage, run, now_ns);
        self.done[c][stage] = through;
    }

    /// Records `count` ops submitted at `at_ns` (0: no intended time, as in the prefill).
    fn record_run(&mut self, stage: usize, (at_ns, count): (u64, u64), now_ns: u64) {
        if at_ns != 0 && count > 0 && now_ns >= at_ns {
            let us = ((now_ns - at_ns) / 1000).max(1);
            self.interval[stage].saturating_record_n(us, count);
        }
    }

    /// Ends the current interval: adds it to `total`, returns it and starts a new one.
    pub fn close_interval(&mut self) -> [Histogram<u64>; 3] {
        for (t, i) in self.total.iter_mut().zip(&self.interval) {
            // Same bounds on both sides, so adding cannot fail.
            let _ = t.add(i);
        }
        let closed = self.interval.clone();
        self.interval.iter_mut().for_each(|h| h.reset());
        closed
    }

    /// Forgets positions (after a replay reset the channel's op numbering at a client).
    pub fn reset_channel(&mut self, channel: u32, stage: usize, at: u64) {
        self.done[channel as usize][stage] = at;
    }
}

#[cfg(test)]
mod tests {
    use super::LatencyRecorder;

    #[test]
    fn closed_intervals_add_up_to_the_total() {
        let mut l = LatencyRecorder::new(2, 8);
        for op in 1..=4 {
            l.submitted(1, op, 1_000);
        }
        l.reached(2, 1, 2, 11_000);
        let first = l.close_interval();
        assert_eq!(first[2].len(), 2);
        assert_eq!(first[2].max(), 10);
        assert_eq!(l.interval[2].len(), 0);
        l.reached(2, 1, 4, 21_000);
        // Already-recorded ops are not counted again.
        l.reached(2, 1, 4, 31_000);
        l.close_interval();
        assert_eq!(l.total[2].len(), 4);
        assert_eq!(l.total[0].len(), 0);
    }
}
