//! Per-stage latency from submit: client apply, client ack (seen by the primary) and standby
//! commit. Submit times sit in a per-channel ring indexed by op ID; the retention window bounds
//! the ops in flight, so a slot is never reused before its op commits.

use hdrhistogram::Histogram;

pub const STAGES: [&str; 3] = ["client_apply", "client_ack", "standby_commit"];

#[derive(Debug)]
pub struct LatencyRecorder {
    window: usize,
    submit_ns: Vec<Vec<u64>>,
    /// Highest op already recorded per channel and stage.
    done: Vec<[u64; 3]>,
    pub total: [Histogram<u64>; 3],
    pub interval: [Histogram<u64>; 3],
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds are valid")
}

impl LatencyRecorder {
    pub fn new(channels: usize, window: usize) -> Self {
        LatencyRecorder {
            window,
            submit_ns: vec![vec![0; window]; channels],
            done: vec![[0; 3]; channels],
            total: [hist(), hist(), hist()],
            interval: [hist(), hist(), hist()],
        }
    }

    pub fn submitted(&mut self, channel: u32, op: u64, at_ns: u64) {
        self.submit_ns[channel as usize][(op % self.window as u64) as usize] = at_ns;
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
        for op in start..=through {
            let t = self.submit_ns[c][(op % self.window as u64) as usize];
            if t != 0 && now_ns >= t {
                let us = ((now_ns - t) / 1000).max(1);
                self.total[stage].saturating_record(us);
                self.interval[stage].saturating_record(us);
            }
        }
        self.done[c][stage] = through;
    }

    /// Forgets positions (after a replay reset the channel's op numbering at a client).
    pub fn reset_channel(&mut self, channel: u32, stage: usize, at: u64) {
        self.done[channel as usize][stage] = at;
    }
}
