//! Per-stage latency from submit: client apply, client ack (seen by the primary) and standby
//! commit.
//!
//! Submit times are kept per channel as runs: the first op submitted at a time, and the time.
//! Flat out, the generator stamps a whole batch at once, so a channel holds a run or two per
//! turn and each stage records a run with one `record_n`. They used to sit in a ring of one
//! time per op, indexed by op ID and as long as the retention window (128 KiB per channel):
//! each submit wrote a line not touched since 16 Ki ops before, and that store's miss took
//! 14 % of `submit_batch`'s samples in `churn` (session 17). The runs of a channel lie in a
//! deque that only holds what some stage has not recorded yet: a few lines, warm.
//!
//! Each second's histograms leave the worker through an [`IntervalLink`]: the worker swaps its
//! filled set for an empty one that a collector thread allocated and touched beforehand. A
//! worker that cloned its set each second (three 139 KiB histograms) took 5 to 7 ms in that
//! clone once or twice a run, on its core all along (the allocator, not the scheduler); at a
//! quarter of the max rate that alone put thousands of commits past 1 ms.

use hdrhistogram::Histogram;
use std::collections::VecDeque;

pub const STAGES: [&str; 3] = ["client_apply", "client_ack", "standby_commit"];

/// One interval's histograms, one per stage.
pub type StageSet = [Histogram<u64>; 3];

/// Spare sets a collector keeps ready for each worker: a few seconds of headroom when the
/// collector is late (a worker with none left allocates its own, as before).
const SPARE_SETS: usize = 3;

#[derive(Debug)]
pub struct LatencyRecorder {
    /// Most runs kept per channel: the retention window, which bounds the ops in flight (one
    /// run per op at worst). Past it the oldest run is dropped, its ops left unrecorded.
    window: usize,
    /// Per channel, in op order: `(first op, submit time)` of each run of ops submitted at one
    /// time, from the oldest that some stage has not fully recorded.
    runs: Vec<VecDeque<(u64, u64)>>,
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

/// Records `count` ops submitted at `at_ns` (0: no intended time, as in the prefill) that
/// reached a stage at `now_ns`.
fn record_run(h: &mut Histogram<u64>, at_ns: u64, count: u64, now_ns: u64) {
    if at_ns != 0 && count > 0 && now_ns >= at_ns {
        let us = ((now_ns - at_ns) / 1000).max(1);
        h.saturating_record_n(us, count);
    }
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
        LatencyRecorder {
            window: window.max(1),
            runs: vec![VecDeque::new(); channels],
            done: vec![[0; 3]; channels],
            interval: touched_set(),
            link,
            overflow: Vec::new(),
        }
    }

    /// Op `op` of `channel` was submitted with intended time `at_ns`. Ops of a channel come
    /// in op order; one with the time of the op before it extends that op's run.
    pub fn submitted(&mut self, channel: u32, op: u64, at_ns: u64) {
        let runs = &mut self.runs[channel as usize];
        if runs
            .back()
            .is_some_and(|&(first, t)| t == at_ns && first < op)
        {
            return;
        }
        if runs.len() >= self.window {
            runs.pop_front();
        }
        runs.push_back((op, at_ns));
    }

    /// Records stage `stage` for every op of `channel` up to `through`.
    pub fn reached(&mut self, stage: usize, channel: u32, through: u64, now_ns: u64) {
        let c = channel as usize;
        let from = self.done[c][stage] + 1;
        if through < from {
            return;
        }
        let (runs, interval) = (&self.runs[c], &mut self.interval[stage]);
        // The run holding `from` (or the first after it: ops whose run was dropped, or that
        // came before a replay reset the numbering, are not recorded).
        let mut i = runs
            .partition_point(|&(first, _)| first <= from)
            .saturating_sub(1);
        while let Some(&(first, at_ns)) = runs.get(i) {
            if first > through {
                break;
            }
            let end = runs
                .get(i + 1)
                .map_or(through, |&(next, _)| next.saturating_sub(1).min(through));
            let start = first.max(from);
            if end >= start {
                record_run(interval, at_ns, end - start + 1, now_ns);
            }
            i += 1;
        }
        self.done[c][stage] = through;
        // Runs every stage has recorded in full are done with.
        let recorded = self.done[c].iter().copied().min().unwrap_or(0);
        let runs = &mut self.runs[c];
        while runs.get(1).is_some_and(|&(next, _)| next <= recorded + 1) {
            runs.pop_front();
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
    fn each_stage_records_every_op_once_by_its_runs_and_finished_runs_are_dropped() {
        let (link, _collector) = interval_link(8);
        let mut l = LatencyRecorder::new(1, 1024, link);
        // Ops 1..=5 at 1 µs, 6..=7 at 2 µs, 8 at 3 µs: three runs.
        for (op, at_us) in [
            (1, 1),
            (2, 1),
            (3, 1),
            (4, 1),
            (5, 1),
            (6, 2),
            (7, 2),
            (8, 3),
        ] {
            l.submitted(0, op, at_us * 1_000);
        }
        assert_eq!(l.runs[0].len(), 3);
        // Stage 0 reaches op 6 at 10 µs: five ops 9 µs old, one 8 µs old.
        l.reached(0, 0, 6, 10_000);
        let h = &l.interval[0];
        assert_eq!((h.len(), h.count_at(9), h.count_at(8)), (6, 5, 1));
        // Again, further: only ops 7 and 8 are new.
        l.reached(0, 0, 8, 20_000);
        let h = &l.interval[0];
        assert_eq!((h.len(), h.count_at(18), h.count_at(17)), (8, 1, 1));
        // Nothing is dropped while another stage still has to record it.
        assert_eq!(l.runs[0].len(), 3);
        l.reached(1, 0, 8, 30_000);
        l.reached(2, 0, 5, 30_000);
        assert_eq!(
            l.runs[0].len(),
            2,
            "the first run is recorded by every stage"
        );
        l.reached(2, 0, 8, 40_000);
        assert_eq!(
            l.runs[0].len(),
            1,
            "the last run stays, for ops to come at its time"
        );
        let h = &l.interval[2];
        assert_eq!(
            (h.len(), h.count_at(29), h.count_at(38), h.count_at(37)),
            (8, 5, 2, 1)
        );
    }

    #[test]
    fn runs_past_the_window_are_dropped_oldest_first() {
        let (link, _collector) = interval_link(8);
        let mut l = LatencyRecorder::new(1, 4, link);
        // Six ops, each at its own time: only the last four runs are kept.
        for op in 1..=6 {
            l.submitted(0, op, op * 1_000);
        }
        assert_eq!(l.runs[0].len(), 4);
        l.reached(2, 0, 6, 10_000);
        let h = &l.interval[2];
        assert_eq!(
            (h.len(), h.min(), h.max()),
            (4, 4, 7),
            "ops 3..=6 recorded, 1 and 2 not"
        );
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
