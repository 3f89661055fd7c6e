//! What else ran on this machine during a timed run: per-task CPU time from the kernel's
//! scheduler statistics, our own process left out. On a machine whose cores the workers fill,
//! every millisecond another task runs is a millisecond a worker waits, and the latency tail
//! follows it; the report names those tasks so a long tail can be traced to its cause.

use crate::runtime::worker::SchedStat;
use std::collections::HashMap;
use std::fs;

/// One task's scheduler counters (`/proc/<pid>/task/<tid>/schedstat`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct TaskStat {
    comm: String,
    cpu_ns: u64,
    slices: u64,
}

/// Every task's counters at one moment, keyed by thread ID.
#[derive(Debug, Default)]
pub struct TaskSnapshot {
    tasks: HashMap<u32, TaskStat>,
}

/// A task other than ours that ran during the interval between two snapshots.
#[derive(Debug, Clone, PartialEq)]
pub struct OtherTask {
    pub comm: String,
    pub cpu_ms: f64,
    /// Times it was given a CPU.
    pub slices: u64,
}

/// CPU time of every thread of this process so far, in ns (0 where the kernel reports none).
/// Over a timed run, CPU per committed change compares builds on a shared machine, where the
/// rate itself moves with whatever else runs.
pub fn own_cpu_ns() -> u64 {
    let Ok(threads) = fs::read_dir("/proc/self/task") else {
        return 0;
    };
    threads
        .flatten()
        .filter_map(|t| SchedStat::read(t.path().join("schedstat")))
        .map(|s| s.cpu_ns)
        .sum()
}

/// Free memory this guest has reported to its host so far, in KiB (free page reporting through
/// virtio-balloon), where the kernel's `page_reporting` module counts it (`None` elsewhere:
/// mainline kernels keep no such counter). Each report stalls the guest's vCPUs while the host
/// takes the pages back, so a run during which it grew had stalls no guest task explains.
pub fn reported_free_kib() -> Option<u64> {
    fs::read_to_string("/sys/module/page_reporting/parameters/reported_kib")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The other tasks' CPU time in all, in ms, and the `n` that ran most as
/// "comm 1.2 ms in 3 slices, ..." ("none seen" when none ran).
pub fn summarize(tasks: &[OtherTask], n: usize) -> (f64, String) {
    let total_ms = tasks.iter().map(|t| t.cpu_ms).sum();
    let most: Vec<String> = tasks
        .iter()
        .take(n)
        .map(|t| format!("{} {:.1} ms in {} slices", t.comm, t.cpu_ms, t.slices))
        .collect();
    if most.is_empty() {
        (total_ms, "none seen".to_string())
    } else {
        (total_ms, most.join(", "))
    }
}

impl TaskSnapshot {
    /// Reads every task of every process but ours. Tasks that vanish while being read are
    /// skipped; on a system without `/proc` the snapshot is empty.
    pub fn take() -> TaskSnapshot {
        let own = std::process::id().to_string();
        let mut tasks = HashMap::new();
        let Ok(procs) = fs::read_dir("/proc") else {
            return TaskSnapshot { tasks };
        };
        for p in procs.flatten() {
            let name = p.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            if pid == own {
                continue;
            }
            let Ok(threads) = fs::read_dir(p.path().join("task")) else {
                continue;
            };
            for t in threads.flatten() {
                let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                let Some(SchedStat { cpu_ns, slices, .. }) =
                    SchedStat::read(t.path().join("schedstat"))
                else {
                    continue;
                };
                let comm = fs::read_to_string(t.path().join("comm")).unwrap_or_default();
                tasks.insert(
                    tid,
                    TaskStat {
                        comm: comm.trim().to_string(),
                        cpu_ns,
                        slices,
                    },
                );
            }
        }
        TaskSnapshot { tasks }
    }

    /// Tasks that ran between `self` and the later snapshot `end`, most CPU first. Tasks are
    /// matched by thread ID alone (a kernel worker renames itself after each work item it
    /// runs); a task born in between, or a reused ID (its counters went down), counts from
    /// zero.
    pub fn ran_until(&self, end: &TaskSnapshot) -> Vec<OtherTask> {
        let mut ran: Vec<OtherTask> = end
            .tasks
            .iter()
            .filter_map(|(tid, e)| {
                let (cpu0, slices0) = self
                    .tasks
                    .get(tid)
                    .filter(|s| s.cpu_ns <= e.cpu_ns)
                    .map_or((0, 0), |s| (s.cpu_ns, s.slices));
                let cpu_ns = e.cpu_ns.saturating_sub(cpu0);
                (cpu_ns > 0).then(|| OtherTask {
                    comm: e.comm.clone(),
                    cpu_ms: cpu_ns as f64 / 1e6,
                    slices: e.slices.saturating_sub(slices0),
                })
            })
            .collect();
        ran.sort_by(|a, b| b.cpu_ms.total_cmp(&a.cpu_ms));
        ran
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(rows: &[(u32, &str, u64, u64)]) -> TaskSnapshot {
        TaskSnapshot {
            tasks: rows
                .iter()
                .map(|&(tid, comm, cpu_ns, slices)| {
                    let comm = comm.to_string();
                    (
                        tid,
                        TaskStat {
                            comm,
                            cpu_ns,
                            slices,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn differences_sorted_by_cpu() {
        let a = snap(&[
            (1, "kdamond.0", 1_000_000, 10),
            (2, "idle", 5, 1),
            (4, "kworker/1:0-events", 900_000_000, 5000),
            (5, "reused", 900_000_000, 5000),
        ]);
        let b = snap(&[
            (1, "kdamond.0", 61_000_000, 34),
            (2, "idle", 5, 1),
            (3, "kworker/0:1", 2_000_000, 7),
            // Renamed by the work item it ran last: still the same task.
            (4, "kworker/1:0-mm_percpu_wq", 900_500_000, 5002),
            // Counters below the first snapshot's: a new task under a reused ID.
            (5, "reused", 1_000_000, 3),
        ]);
        let ran = a.ran_until(&b);
        assert_eq!(ran.len(), 4);
        assert_eq!(ran[0].comm, "kdamond.0");
        assert!((ran[0].cpu_ms - 60.0).abs() < 1e-9);
        assert_eq!(ran[0].slices, 24);
        assert_eq!(ran[1].comm, "kworker/0:1");
        assert_eq!(ran[1].slices, 7);
        assert_eq!(ran[2].comm, "reused");
        assert_eq!(ran[2].slices, 3);
        assert_eq!(ran[3].comm, "kworker/1:0-mm_percpu_wq");
        assert!((ran[3].cpu_ms - 0.5).abs() < 1e-9);
        assert_eq!(ran[3].slices, 2);
        let (ms, most) = summarize(&ran, 2);
        assert!((ms - 63.5).abs() < 1e-9, "{ms}");
        assert_eq!(
            most,
            "kdamond.0 60.0 ms in 24 slices, kworker/0:1 2.0 ms in 7 slices"
        );
        assert_eq!(summarize(&[], 3), (0.0, "none seen".to_string()));
    }

    #[test]
    fn reads_the_reported_free_memory_where_the_kernel_counts_it() {
        let counted =
            std::path::Path::new("/sys/module/page_reporting/parameters/reported_kib").exists();
        assert_eq!(reported_free_kib().is_some(), counted);
    }

    #[test]
    fn parses_schedstat_and_reads_this_machine() {
        let s = SchedStat::parse("123 456 7\n").map(|s| (s.cpu_ns, s.slices));
        assert_eq!(s, Some((123, 7)));
        assert_eq!(SchedStat::parse("123 x 7"), None);
        assert_eq!(SchedStat::parse(""), None);
        // Our own tasks are left out; on Linux some other task (PID 1 at least) is there.
        let s = TaskSnapshot::take();
        let own: u32 = std::process::id();
        assert!(!s.tasks.contains_key(&own));
        if std::path::Path::new("/proc/1/task").exists() {
            assert!(!s.tasks.is_empty());
        }
    }
}
