//! Per-stage latency from submit: client apply, client ack (seen by the primary) and standby
//! commit. Submit times sit in a per-channel ring indexed by op ID; the retention window bounds
//! the ops in flight, so a slot is never reused before its op commits.
//!
//! Each second's histograms leave the worker through an [`IntervalLink`]: the worker swaps its
//! filled set for an empty one that a collector thread allocated and touched beforehand. A
//! worker that cloned its set each second (three 139 KiB histograms) took 5 to 7 ms in that
//! clone once or twice a run, on its core all along (the allocator, not the scheduler); at a
//! quarter of the max rate that alone put thousands of commits past 1 ms.

use hdrhistogram::Histogram;

pub const STAGES: [&str; 3] = ["client_apply", "client_ack", "standby_commit"];

/// One interval's histograms, one per stage.
pub type StageSet = [Histogram<u64>; 3];

/// Spare sets a collector keeps ready for each worker: a few seconds of headroom when the
/// collector is late (a worker with none left allocates its own, as before).
const SPARE_SETS: usize = 3;

#[derive(Debug)]
pub struct LatencyRecorder {
    /// Ops remembered per channel: the retention window rounded up to a power of two, so a
    /// slot is found with a mask instead of a division.
    window: usize,
    submit_ns: Vec<Vec<u64>>,
    /// Highest op already recorded per channel and stage.
    done: Vec<[u64; 3]>,
    /// The open interval. Samples go here only (one record per op and stage on the hot path);
    /// totals are summed by whoever reads the closed intervals.
    pub interval: StageSet,
    link: IntervalLink,
    /// Closed intervals the link had no room for, in order; once one is here, every later one
    /// follows it, so the collector's intervals and these stay in order.
    pub overflow: Vec<StageSet>,
}

/// A stage set of empty histograms whose memory has been written once, so that recording into
/// it never faults a page in.
fn touched_set() -> StageSet {
    std::array::from_fn(|_| {
        let mut h = Histogram::new_with_bounds(1, 60_000_000, 3)
            .expect("static histogram bounds are valid");
        // `new` may hand out untouched zero pages; writing every count faults them in here.
        h.reset();
        h
    })
}

/// The worker's end of the interval exchange.
#[derive(Debug)]
pub struct IntervalLink {
    closed: rtrb::Producer<StageSet>,
    spares: rtrb::Consumer<StageSet>,
}

/// The collector's end: takes closed intervals and keeps the worker's spares topped up.
#[derive(Debug)]
pub struct IntervalCollector {
    closed: rtrb::Consumer<StageSet>,
    spares: rtrb::Producer<StageSet>,
    /// Every interval collected so far, oldest first.
    pub intervals: Vec<StageSet>,
}

/// A linked pair, with the spares already filled. `capacity` bounds the closed intervals in
/// flight between two collections.
pub fn interval_link(capacity: usize) -> (IntervalLink, IntervalCollector) {
    let (closed_tx, closed_rx) = rtrb::RingBuffer::new(capacity.max(1));
    let (spares_tx, spares_rx) = rtrb::RingBuffer::new(SPARE_SETS);
    let mut collector = IntervalCollector {
        closed: closed_rx,
        spares: spares_tx,
        intervals: Vec::new(),
    };
    collector.collect();
    let link = IntervalLink {
        closed: closed_tx,
        spares: spares_rx,
    };
    (link, collector)
}

impl IntervalCollector {
    /// Takes every closed interval and refills the spares. Returns how many were taken.
    pub fn collect(&mut self) -> usize {
        let mut n = 0;
        while let Ok(set) = self.closed.pop() {
            self.intervals.push(set);
            n += 1;
        }
        while self.spares.slots() > 0 {
            // Cannot fail: a slot is free and this is the only producer.
            let _ = self.spares.push(touched_set());
        }
        n
    }
}

impl LatencyRecorder {
    pub fn new(channels: usize, window: usize, link: IntervalLink) -> Self {
        let window = window.max(1).next_power_of_two();
        LatencyRecorder {
            window,
            submit_ns: vec![vec![0; window]; channels],
            done: vec![[0; 3]; channels],
            interval: touched_set(),
            link,
            overflow: Vec::new(),
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

    /// Ends the current interval: hands it to the collector and starts a new one in a spare.
    pub fn close_interval(&mut self) {
        let fresh = self.link.spares.pop().unwrap_or_else(|_| touched_set());
        let closed = std::mem::replace(&mut self.interval, fresh);
        if !self.overflow.is_empty() {
            self.overflow.push(closed);
        } else if let Err(rtrb::PushError::Full(closed)) = self.link.closed.push(closed) {
            self.overflow.push(closed);
        }
    }

    /// Forgets positions (after a replay reset the channel's op numbering at a client).
    pub fn reset_channel(&mut self, channel: u32, stage: usize, at: u64) {
        self.done[channel as usize][stage] = at;
    }
}

#[cfg(test)]
mod tests {
    use super::{LatencyRecorder, interval_link};

    #[test]
    fn closed_intervals_reach_the_collector_in_order() {
        // Room for one closed interval between collections.
        let (link, mut collector) = interval_link(1);
        let mut l = LatencyRecorder::new(2, 8, link);
        for op in 1..=4 {
            l.submitted(1, op, 1_000);
        }
        l.reached(2, 1, 2, 11_000);
        l.close_interval();
        assert_eq!(l.interval[2].len(), 0);
        l.reached(2, 1, 4, 21_000);
        // Already-recorded ops are not counted again.
        l.reached(2, 1, 4, 31_000);
        // The link is full: this one waits in the worker's overflow...
        l.close_interval();
        assert_eq!(collector.collect(), 1);
        // ...and so does every later one, though the link has room again: order is kept.
        l.close_interval();
        assert_eq!(collector.collect(), 0);
        let first = &collector.intervals[0];
        assert_eq!((first[2].len(), first[2].max()), (2, 10));
        let later: Vec<u64> = l.overflow.iter().map(|s| s[2].len()).collect();
        assert_eq!(later, [2, 0]);
        assert_eq!(l.overflow[0][0].len(), 0);
    }

    #[test]
    fn a_worker_with_no_spare_left_allocates_its_own() {
        let (link, mut collector) = interval_link(8);
        let mut l = LatencyRecorder::new(1, 8, link);
        // Three spares were filled and nobody refills them: the fourth close and later ones
        // make their own, and no interval is lost.
        for op in 1..=6 {
            l.submitted(0, op, 1_000);
            l.reached(2, 0, op, 1_000 + op * 1_000);
            l.close_interval();
        }
        assert_eq!(collector.collect(), 6);
        assert!(l.overflow.is_empty());
        let maxima: Vec<u64> = collector.intervals.iter().map(|s| s[2].max()).collect();
        assert_eq!(maxima, [1, 2, 3, 4, 5, 6]);
    }
}
