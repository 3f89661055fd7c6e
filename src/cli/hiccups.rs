//! `statesync hiccups`: how long this machine takes its cores away from a thread that never
//! yields them. One pinned thread per core reads the clock in a loop and counts every gap
//! between two reads; a gap is time the thread did not run. Part of it the guest kernel sees
//! (another task ran: the thread waited on the run queue), the rest it cannot (interrupts, and
//! on a virtual machine the hypervisor running something else on the physical core).
//!
//! Why: a latency tail can never be lower than what the core does without the fabric. An
//! open-loop load at utilisation ρ that stops for T drains the backlog at (1 − ρ) of its speed,
//! so every arrival during the first (T − L) / (1 − ρ) waits longer than L. Summed over the
//! gaps, that is the share of arrivals the stalls alone put over L: a lower bound (the fabric's
//! own work comes on top). A p99 ≤ L needs it below 1 %.

use super::platform::{OtherTask, TaskSnapshot};
use crate::cli::say;
use crate::runtime::worker::SchedStat;
use std::process::ExitCode;
use std::time::Instant;

/// The counted lengths, in ns: a gap counts in every bucket it reaches. The shortest is the
/// least counted at all: anything shorter is the loop itself (a clock read, a cache miss); from
/// it on, a timer interrupt and up.
pub const BUCKETS_NS: [u64; 7] = [
    20_000, 100_000, 500_000, 1_000_000, 2_000_000, 5_000_000, 10_000_000,
];
/// From this length a gap is a stall: counted, and attributed (guest task or not) where the
/// caller can.
pub const STALL_NS: u64 = 500_000;
/// The latency targets a floor is worked out for: churn's checks ask p99 ≤ 1 ms at half the
/// max rate and ≤ 0.4 ms at a quarter.
pub const TARGETS_NS: [u64; 2] = [1_000_000, 400_000];

/// What one thread saw. Sans-clock: [`GapMeter::record`] takes each gap as measured, so the
/// arithmetic is tested on made-up gaps.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GapMeter {
    /// Time observed (the gaps recorded, and whatever short ones the caller skipped).
    pub sampled_ns: u64,
    /// Gaps of at least each of [`BUCKETS_NS`].
    pub at_least: [u64; BUCKETS_NS.len()],
    /// Time in gaps of at least [`BUCKETS_NS`]`[0]`.
    pub lost_ns: u64,
    pub max_gap_ns: u64,
    /// Stalls (gaps of at least [`STALL_NS`]): how many, their time, and how much of it the
    /// guest kernel accounts as this thread waiting on the run queue.
    pub stalls: u64,
    pub stall_ns: u64,
    pub stall_guest_ns: u64,
    /// For each of [`TARGETS_NS`]: Σ max(0, gap − target).
    pub over_target_ns: [u64; TARGETS_NS.len()],
}

impl GapMeter {
    /// Counts one gap of `gap_ns`, of which the thread waited `run_queue_ns` on the guest's run
    /// queue (0 where not asked).
    pub fn record(&mut self, gap_ns: u64, run_queue_ns: u64) {
        self.sampled_ns += gap_ns;
        if gap_ns < BUCKETS_NS[0] {
            return;
        }
        for (n, &b) in self.at_least.iter_mut().zip(&BUCKETS_NS) {
            if gap_ns >= b {
                *n += 1;
            }
        }
        self.lost_ns += gap_ns;
        self.max_gap_ns = self.max_gap_ns.max(gap_ns);
        if gap_ns >= STALL_NS {
            self.stalls += 1;
            self.stall_ns += gap_ns;
            self.stall_guest_ns += run_queue_ns.min(gap_ns);
        }
        for (over, &target_ns) in self.over_target_ns.iter_mut().zip(&TARGETS_NS) {
            *over += gap_ns.saturating_sub(target_ns);
        }
    }

    /// The share of an open-loop load's arrivals, at utilisation `load`, that these gaps alone
    /// put over `TARGETS_NS[target]` (see the module comment), if this meter saw the whole
    /// time or a fair sample of it.
    pub fn floor_share(&self, target: usize, load: f64) -> f64 {
        let idle = (1.0 - load).max(0.0) * self.sampled_ns as f64;
        if idle <= 0.0 {
            return 1.0;
        }
        (self.over_target_ns[target] as f64 / idle).min(1.0)
    }
}

/// The load each of [`TARGETS_NS`]'s floors is worked out at: churn's half and quarter rate.
pub const FLOOR_LOADS: [f64; TARGETS_NS.len()] = [0.5, 0.25];

/// Each floor the report gives: (target in ns, load, share of arrivals over the target).
fn floors(m: &GapMeter) -> impl Iterator<Item = (u64, f64, f64)> + '_ {
    TARGETS_NS
        .iter()
        .zip(FLOOR_LOADS)
        .enumerate()
        .map(|(i, (&target, load))| (target, load, m.floor_share(i, load)))
}

#[derive(clap::Args, Debug, Clone)]
pub struct HiccupsArgs {
    /// How long to measure: 10, 10s, 500ms or 2m (a bare number is seconds).
    #[arg(long, default_value = "10", value_parser = crate::cli::units::parse_seconds)]
    pub duration: f64,
    /// Cores to measure (default: every core this process may use).
    #[arg(long)]
    pub cores: Option<usize>,
    /// Also write the report as JSON: to FILE, or with a bare `--json` to standard output
    /// (the text then goes to standard error).
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = crate::cli::JSON_STDOUT)]
    pub json: Option<std::path::PathBuf>,
}

/// One core's result.
#[derive(Debug, Clone)]
pub struct CoreReport {
    pub core: usize,
    pub elapsed_ns: u64,
    pub meter: GapMeter,
    /// The kernel's steal counter for this CPU over the run (`/proc/stat`), in ms: time the
    /// hypervisor says it ran something else while this vCPU wanted to run.
    pub steal_ms: Option<f64>,
}

/// Spins on the calling thread for `duration_ns`, counting gaps.
fn spin(duration_ns: u64) -> (GapMeter, u64) {
    let mut meter = GapMeter::default();
    let run_queue = || SchedStat::read("/proc/thread-self/schedstat").map_or(0, |s| s.wait_ns);
    let mut waited_ns = run_queue();
    let start = Instant::now();
    let mut prev_ns = 0u64;
    loop {
        let now_ns = start.elapsed().as_nanos() as u64;
        if now_ns >= duration_ns {
            // Every gap too short to record counts as observed time too.
            meter.sampled_ns = now_ns;
            return (meter, now_ns);
        }
        let gap_ns = now_ns - prev_ns;
        prev_ns = now_ns;
        if gap_ns < BUCKETS_NS[0] {
            continue;
        }
        let mut guest_ns = 0;
        if gap_ns >= STALL_NS {
            let w = run_queue();
            guest_ns = w.saturating_sub(waited_ns);
            waited_ns = w;
            // The read itself is not a gap of the machine's.
            prev_ns = start.elapsed().as_nanos() as u64;
        }
        meter.record(gap_ns, guest_ns);
    }
}

/// Per-CPU steal counters (`/proc/stat`, in clock ticks), indexed by CPU number.
fn steal_ticks() -> Vec<Option<u64>> {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let Some(cpu) = f
            .next()
            .and_then(|l| l.strip_prefix("cpu"))
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        // user nice system idle iowait irq softirq steal
        let steal = f.nth(7).and_then(|s| s.parse().ok());
        if out.len() <= cpu {
            out.resize(cpu + 1, None);
        }
        out[cpu] = steal;
    }
    out
}

/// Measures `cores` cores (all this process may use when `None`) for `duration_s` at once, one
/// pinned spinning thread each.
pub fn measure(
    duration_s: f64,
    cores: Option<usize>,
) -> Result<(Vec<CoreReport>, Vec<OtherTask>), String> {
    let ids = core_affinity::get_core_ids().unwrap_or_default();
    if ids.is_empty() {
        return Err("cannot list this process's cores (sched_getaffinity)".into());
    }
    let n = cores.unwrap_or(ids.len());
    if n == 0 || n > ids.len() {
        return Err(format!(
            "--cores {n}: this process may use 1 to {} cores",
            ids.len()
        ));
    }
    let duration_ns = (duration_s * 1e9) as u64;
    if duration_ns < 1_000_000 {
        return Err(format!(
            "--duration {duration_s}: measure for 1 ms at least (10 s gives a floor worth reading)"
        ));
    }
    // Clock ticks per second, for /proc/stat; 100 where sysconf fails.
    // SAFETY: sysconf takes a constant and touches no memory of ours.
    let hz = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        t if t > 0 => t as f64,
        _ => 100.0,
    };
    let tasks_at_start = TaskSnapshot::take();
    let steal_at_start = steal_ticks();
    let threads: Vec<_> = ids[..n]
        .iter()
        .map(|&id| {
            std::thread::Builder::new()
                .name(format!("hiccups-{}", id.id))
                .spawn(move || {
                    crate::runtime::worker::pin(Some(id));
                    spin(duration_ns)
                })
                .map_err(|e| format!("spawning a thread: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let mut reports = Vec::with_capacity(n);
    for (t, id) in threads.into_iter().zip(&ids[..n]) {
        let (meter, elapsed_ns) = t.join().map_err(|_| "a measuring thread panicked")?;
        reports.push(CoreReport {
            core: id.id,
            elapsed_ns,
            meter,
            steal_ms: None,
        });
    }
    let steal_at_end = steal_ticks();
    for r in &mut reports {
        let at = |v: &Vec<Option<u64>>| v.get(r.core).copied().flatten();
        if let (Some(a), Some(b)) = (at(&steal_at_start), at(&steal_at_end)) {
            r.steal_ms = Some(b.saturating_sub(a) as f64 * 1000.0 / hz);
        }
    }
    let others = tasks_at_start.ran_until(&TaskSnapshot::take());
    Ok((reports, others))
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

pub fn run(args: HiccupsArgs) -> ExitCode {
    crate::cli::claim_stdout_for_json(args.json.as_deref());
    say!(
        "hiccups: one spinning thread per core for {:.1} s; every gap of {} µs or more between two clock reads is time the core was taken away",
        args.duration,
        BUCKETS_NS[0] / 1000
    );
    let (reports, others) = match measure(args.duration, args.cores) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("statesync hiccups: {e}");
            return ExitCode::from(2);
        }
    };
    for r in &reports {
        let m = &r.meter;
        let secs = r.elapsed_ns as f64 / 1e9;
        let counts: Vec<String> = BUCKETS_NS
            .iter()
            .zip(&m.at_least)
            .map(|(b, n)| format!(">={} {n}", fmt_len(*b)))
            .collect();
        say!(
            "core {:>2}: gaps {}; {:.1} ms lost ({:.2} %), max {:.2} ms",
            r.core,
            counts.join(", "),
            ms(m.lost_ns),
            100.0 * m.lost_ns as f64 / r.elapsed_ns.max(1) as f64,
            ms(m.max_gap_ns),
        );
        let steal = r.steal_ms.map_or("steal not reported".to_string(), |s| {
            format!("steal counter {s:.0} ms")
        });
        say!(
            "         stalls (>= {:.1} ms): {} ({:.1}/s), {:.1} ms, of it {:.1} ms waiting for another guest task, {:.1} ms not visible to the guest ({steal})",
            ms(STALL_NS),
            m.stalls,
            m.stalls as f64 / secs,
            ms(m.stall_ns),
            ms(m.stall_guest_ns),
            ms(m.stall_ns - m.stall_guest_ns),
        );
        let floors: Vec<String> = floors(m)
            .map(|(target, load, share)| {
                format!(
                    "{:.2} % over {} at {:.0} % load",
                    100.0 * share,
                    fmt_len(target),
                    100.0 * load
                )
            })
            .collect();
        say!(
            "         floor for a latency tail on this core: {} (a p99 needs < 1 %)",
            floors.join(", ")
        );
    }
    let (other_ms, most) = super::platform::summarize(&others, 5);
    say!("other tasks ran {other_ms:.1} ms in all; most: {most}");
    if let Some(path) = &args.json {
        let cores: Vec<serde_json::Value> = reports.iter().map(core_json).collect();
        let report = serde_json::json!({
            "duration_s": args.duration,
            "min_gap_ns": BUCKETS_NS[0],
            "stall_ns": STALL_NS,
            "cores": cores,
            "other_tasks_ms": other_ms,
        });
        if let Err(e) = crate::cli::write_json(path, &report) {
            eprintln!("statesync hiccups: {e}");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}

fn core_json(r: &CoreReport) -> serde_json::Value {
    let m = &r.meter;
    let at_least: serde_json::Map<String, serde_json::Value> = BUCKETS_NS
        .iter()
        .zip(&m.at_least)
        .map(|(b, n)| (b.to_string(), (*n).into()))
        .collect();
    let floors: Vec<serde_json::Value> = floors(m)
        .map(|(target, load, share)| {
            serde_json::json!({ "load": load, "target_ns": target, "share_over": share })
        })
        .collect();
    serde_json::json!({
        "core": r.core,
        "elapsed_ns": r.elapsed_ns,
        "gaps_at_least_ns": at_least,
        "lost_ns": m.lost_ns,
        "max_gap_ns": m.max_gap_ns,
        "stalls": m.stalls,
        "stall_ns": m.stall_ns,
        "stall_guest_ns": m.stall_guest_ns,
        "steal_ms": r.steal_ms,
        "floors": floors,
    })
}

/// `100us`, `1ms`, `2.5ms`.
fn fmt_len(ns: u64) -> String {
    if ns < 1_000_000 {
        format!("{}us", ns / 1000)
    } else {
        format!("{}ms", ns as f64 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_count_by_length_and_give_the_floor() {
        let mut m = GapMeter::default();
        // One second: a 3 ms stall, 2 ms of it on the run queue; a 0.6 ms one; a 0.2 ms one;
        // short gaps.
        m.record(3_000_000, 2_000_000);
        m.record(600_000, 0);
        m.record(200_000, 0);
        m.record(30_000, 0);
        m.record(10_000, 0);
        assert_eq!(m.sampled_ns, 3_840_000);
        // The rest of the second went by in gaps too short to record one by one.
        m.sampled_ns = 1_000_000_000;
        assert_eq!(m.at_least, [4, 3, 2, 1, 1, 0, 0]);
        assert_eq!(m.lost_ns, 3_830_000);
        assert_eq!((m.stalls, m.stall_ns), (2, 3_600_000));
        assert_eq!(m.stall_guest_ns, 2_000_000);
        // Half load, 1 ms: the 3 ms stall puts (3 − 1) / (1 − 0.5) = 4 ms of arrivals over.
        assert!((m.floor_share(0, 0.5) - 0.004).abs() < 1e-12);
        // Quarter load, 0.4 ms: (2.6 + 0.2) / 0.75 = 3.733 ms.
        assert!((m.floor_share(1, 0.25) - 0.0028 / 0.75).abs() < 1e-12);
        // No idle time at all: nothing drains, every arrival is late.
        assert_eq!(m.floor_share(0, 1.0), 1.0);
        // A run-queue wait longer than its gap (counters read late) counts as the whole gap.
        m.record(1_000_000, 5_000_000);
        assert_eq!(m.stall_guest_ns, 3_000_000);
    }

    #[test]
    fn measures_every_core_asked_for() {
        let (reports, _) = measure(0.2, Some(1)).unwrap();
        assert_eq!(reports.len(), 1);
        let r = &reports[0];
        assert!(r.elapsed_ns >= 200_000_000);
        assert!(r.meter.lost_ns <= r.elapsed_ns);
        assert!(r.meter.stall_guest_ns <= r.meter.stall_ns);
        let all = core_affinity::get_core_ids().unwrap_or_default().len();
        let e = measure(0.1, Some(all + 1)).unwrap_err();
        assert!(e.contains("--cores"), "{e}");
        let e = measure(0.0, None).unwrap_err();
        assert!(e.contains("--duration"), "{e}");
    }

    #[test]
    fn reads_steal_per_cpu() {
        let steal = steal_ticks();
        if std::path::Path::new("/proc/stat").exists() {
            assert!(!steal.is_empty() && steal[0].is_some(), "{steal:?}");
        }
    }
}
