//! `statesync sim`: run seeds, print one line per run and the totals; exit non-zero with the
//! failing seed's trace on any violation.

use crate::proto::{INJECTED_BUGS, InjectedBug};
use crate::sim::{FaultKinds, RunReport, SimOptions, Totals, run_seed};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Number of seeds to run.
    #[arg(long, default_value_t = 100)]
    pub seeds: u64,
    /// First seed (runs seed, seed+1, ...). A single failing seed replays exactly.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print every trace line of every run.
    #[arg(long)]
    pub verbose: bool,
    /// Inject a deliberate protocol bug, to prove the simulator catches it; each value names
    /// the invariant that must fire (DESIGN.md section 4).
    #[arg(long, default_value = "none", value_parser = injected_bug_parser())]
    pub inject_bug: InjectedBug,
    /// Stop at the first failing seed.
    #[arg(long)]
    pub stop_on_failure: bool,
    /// Worker threads (default: available cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Virtual milliseconds of faults per run before the fault-free phase.
    #[arg(long, default_value_t = 2000)]
    pub fault_ms: u64,
    /// Also trace every submit and apply on this channel.
    #[arg(long)]
    pub trace_channel: Option<u32>,
    /// Every fault kind: the default now (see `FaultKinds::default_on`); kept so that
    /// older replay commands still run.
    #[arg(long)]
    pub extended_faults: bool,
    /// Run exactly these issue-9 fault kinds instead (comma-separated: none, all, one-way,
    /// delay-spikes, corrupt, liar, second-cu, candidate-crash); `none` replays the original schedule.
    #[arg(long, value_parser = crate::sim::FaultKinds::parse)]
    pub faults: Option<crate::sim::FaultKinds>,
    /// Print one hash per seed of its whole run (every trace line, the final state of every
    /// node, the oracle, the network and the generator), to prove a change keeps every seed's
    /// behaviour byte for byte.
    #[arg(long, hide = true)]
    pub fingerprint: bool,
}

/// The bugs the simulator can plant, from the one table of names (`INJECTED_BUGS`), so the
/// help lists exactly what parses. `drop-change` lives in `churn`'s load generator, which the
/// simulator does not run: it is left out rather than accepted and silently inert.
fn injected_bug_parser() -> impl clap::builder::TypedValueParser<Value = InjectedBug> {
    use clap::builder::TypedValueParser;
    let values = INJECTED_BUGS
        .iter()
        .filter(|(_, b)| *b != InjectedBug::DropChange)
        .map(|&(name, bug)| {
            clap::builder::PossibleValue::new(name).help(crate::sim::caught_by(bug))
        });
    clap::builder::PossibleValuesParser::new(values).try_map(|s| s.parse::<InjectedBug>())
}

/// Runs the seeds; returns the totals and the first failing report.
pub fn run_seeds(
    args: &SimArgs,
    mut on_report: impl FnMut(&RunReport) + Send,
) -> (Totals, Option<RunReport>) {
    let opts = SimOptions {
        inject: args.inject_bug,
        verbose: args.verbose,
        fault_phase_us: args.fault_ms * 1000,
        trace_channel: args.trace_channel,
        fingerprint: args.fingerprint,
        faults: match args.faults {
            Some(k) => k,
            None if args.extended_faults => FaultKinds::extended(),
            None => FaultKinds::default_on(),
        },
        ..Default::default()
    };
    let threads = if args.verbose {
        1
    } else {
        args.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    };
    let next = AtomicU64::new(args.seed);
    let end = args.seed + args.seeds;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let shared = Mutex::new((Totals::default(), None::<RunReport>, &mut on_report));
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                loop {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end {
                        break;
                    }
                    let r =
                        std::panic::catch_unwind(|| run_seed(seed, &opts)).unwrap_or_else(|e| {
                            let msg = e
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_default();
                            RunReport {
                                seed,
                                violations: vec![format!("panic: {msg}")],
                                panicked: true,
                                ..Default::default()
                            }
                        });
                    let mut g = shared.lock().expect("no panics while holding the lock");
                    g.0.add(&r);
                    (g.2)(&r);
                    if !r.violations.is_empty() {
                        if args.stop_on_failure {
                            stop.store(true, Ordering::Relaxed);
                        }
                        if g.1.as_ref().is_none_or(|f| f.seed > r.seed) {
                            g.1 = Some(r);
                        }
                    }
                }
            });
        }
    });
    let (totals, failed, _) = shared.into_inner().expect("lock");
    (totals, failed)
}

/// The flags besides the seed that shape a run, as given: a failing seed replays only with
/// them.
fn replay_flags(args: &SimArgs) -> String {
    let mut f = String::new();
    if args.inject_bug != InjectedBug::None {
        let name = INJECTED_BUGS
            .iter()
            .find(|(_, b)| *b == args.inject_bug)
            .map_or("?", |(n, _)| n);
        f += &format!(" --inject-bug {name}");
    }
    if args.fault_ms != 2000 {
        f += &format!(" --fault-ms {}", args.fault_ms);
    }
    if args.extended_faults {
        f += " --extended-faults";
    }
    if let Some(k) = args.faults {
        f += &format!(" --faults {}", k.names());
    }
    f
}

pub fn run(args: SimArgs) -> ExitCode {
    let (totals, failed) = run_seeds(&args, |r| {
        println!("{}", r.summary_line());
        if let Some(fp) = r.fingerprint {
            println!("fingerprint seed {}: {fp:016x}", r.seed);
        }
        for v in &r.violations {
            println!("    violation: {v}");
        }
    });
    println!("\n{totals}");
    if let Some(f) = failed {
        println!(
            "\nFAILED seed {} — replay with: statesync sim --seeds 1 --seed {} --verbose{}",
            f.seed,
            f.seed,
            replay_flags(&args)
        );
        for v in &f.violations {
            println!("  violation: {v}");
        }
        println!("trace (last {} lines):", f.trace.len());
        for l in &f.trace {
            println!("  {l}");
        }
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
