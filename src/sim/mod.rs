//! Deterministic simulator. It runs the real `proto` state machines on a virtual clock over a
//! seeded faulty network, with crashes, partitions, stale primaries and operator switchovers,
//! then a fault-free phase in which the system must converge. Every seed draws its own fault
//! profile and replays exactly from its number.
//!
//! It checks the invariants of DESIGN.md §4 on every step and at the end, and keeps an oracle of
//! every submitted change so that the final state can be rebuilt from the kept op sequence.

mod check;
mod net;
mod world;

pub use world::run_seed;

use crate::proto::{CutPolicy, InjectedBug};

#[derive(Debug, Clone)]
pub struct SimOptions {
    pub inject: InjectedBug,
    pub verbose: bool,
    /// Virtual time with faults before the fault-free phase.
    pub fault_phase_us: u64,
    /// Trace lines kept for the report of a failing run.
    pub trace_lines: usize,
    /// Also trace every submit and apply on this channel.
    pub trace_channel: Option<u32>,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            inject: InjectedBug::None,
            verbose: false,
            fault_phase_us: 2_000_000,
            trace_lines: 400,
            trace_channel: None,
        }
    }
}

/// The invariant a planted bug must trip, in words, for the command-line help.
pub fn caught_by(bug: InjectedBug) -> &'static str {
    match bug {
        InjectedBug::None => "no bug",
        InjectedBug::StandbyApplyBeforeAck => "standby applies before the ack: inv2",
        InjectedBug::DiscardCommittedTrailing => "a takeover cuts a committed op: inv4",
        InjectedBug::SkipReplaySection => "a replay leaves out a marked section: inv7",
        InjectedBug::AcceptStaleEpoch => "clients apply a stale primary's frames: inv6",
        InjectedBug::StandbySkipApply => "the standby skips every 500th op's content: inv5 or inv7",
        InjectedBug::TwoPrimaries => "a primary keeps acting after hearing a higher epoch: inv6",
        InjectedBug::OverrunBound => "the primary retains past window_ops: inv8",
        InjectedBug::ReplayToInSyncClient => {
            "a client with any channel unknown is replayed on every channel: inv9"
        }
        InjectedBug::CommitBeforeStandbyApplied => {
            "commit counts ops the standby only holds: inv4 or inv6"
        }
        _ => "not a simulator plant",
    }
}

/// The outcome of one seed.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    pub seed: u64,
    pub violations: Vec<String>,
    /// The last trace lines (all of them with `verbose`).
    pub trace: Vec<String>,
    pub control_units: usize,
    pub clients: usize,
    pub channels: usize,
    pub policy: Option<CutPolicy>,
    pub loss: f64,
    pub submitted: u64,
    pub failovers: u64,
    pub operator_switchovers: u64,
    pub crashes: u64,
    pub partitions: u64,
    pub selective_replays: u64,
    pub full_replays: u64,
    pub sections_replayed: u64,
    pub replay_bytes: u64,
    /// What full replays of the same clients would have sent.
    pub replay_full_equiv_bytes: u64,
    /// What relearning everything at every failover would have sent.
    pub full_resync_bytes: u64,
    pub committed_checked: u64,
    pub end_us: u64,
    /// The run panicked (`violations` holds the message): a bug in the code, never a caught
    /// violation.
    pub panicked: bool,
    /// Primary crashes (three or more control units) while another live unit was outside the
    /// primary's sync set, e.g. still re-joining.
    pub primary_crashes_out_of_sync: u64,
    /// Takeovers elected while every other control unit was down or joining: a joining unit's
    /// vote made the majority.
    pub joining_vote_takeovers: u64,
}

impl RunReport {
    pub fn summary_line(&self) -> String {
        format!(
            "seed {:>6}: {} cu {} cl {} ch {:?} loss {:>4.1}% | submitted {:>5} failovers {} (op {}) crashes {} partitions {} | replays sel {} full {} sections {} bytes {} | committed checked {} | {}",
            self.seed,
            self.control_units,
            self.clients,
            self.channels,
            self.policy.unwrap_or(CutPolicy::Complete),
            self.loss * 100.0,
            self.submitted,
            self.failovers,
            self.operator_switchovers,
            self.crashes,
            self.partitions,
            self.selective_replays,
            self.full_replays,
            self.sections_replayed,
            self.replay_bytes,
            self.committed_checked,
            if self.violations.is_empty() {
                "ok".to_string()
            } else {
                format!("{} VIOLATIONS", self.violations.len())
            }
        )
    }
}

/// Totals over many seeds.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub seeds: u64,
    pub failing_seeds: Vec<u64>,
    pub violations: u64,
    pub failovers: u64,
    pub operator_switchovers: u64,
    pub selective_replays: u64,
    pub full_replays: u64,
    pub sections_replayed: u64,
    pub replay_bytes: u64,
    pub replay_full_equiv_bytes: u64,
    pub full_resync_bytes: u64,
    pub committed_checked: u64,
    pub submitted: u64,
}

impl Totals {
    pub fn add(&mut self, r: &RunReport) {
        self.seeds += 1;
        if !r.violations.is_empty() {
            self.failing_seeds.push(r.seed);
        }
        self.violations += r.violations.len() as u64;
        self.failovers += r.failovers;
        self.operator_switchovers += r.operator_switchovers;
        self.selective_replays += r.selective_replays;
        self.full_replays += r.full_replays;
        self.sections_replayed += r.sections_replayed;
        self.replay_bytes += r.replay_bytes;
        self.replay_full_equiv_bytes += r.replay_full_equiv_bytes;
        self.full_resync_bytes += r.full_resync_bytes;
        self.committed_checked += r.committed_checked;
        self.submitted += r.submitted;
    }
}

impl std::fmt::Display for Totals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        writeln!(f, "seeds run:                {}", self.seeds)?;
        writeln!(
            f,
            "violations:               {} (failing seeds: {:?})",
            self.violations, self.failing_seeds
        )?;
        writeln!(
            f,
            "failovers exercised:      {} ({} operator switchovers)",
            self.failovers, self.operator_switchovers
        )?;
        writeln!(
            f,
            "replays:                  {} selective, {} full",
            self.selective_replays, self.full_replays
        )?;
        writeln!(f, "sections replayed:        {}", self.sections_replayed)?;
        writeln!(f, "bytes replayed:           {}", self.replay_bytes)?;
        writeln!(
            f,
            "  vs full replay of the same clients: {} bytes (ratio {:.3})",
            self.replay_full_equiv_bytes,
            ratio(self.replay_bytes, self.replay_full_equiv_bytes)
        )?;
        writeln!(
            f,
            "  vs full resync of every client at every failover: {} bytes (ratio {:.3})",
            self.full_resync_bytes,
            ratio(self.replay_bytes, self.full_resync_bytes)
        )?;
        writeln!(f, "changes submitted:        {}", self.submitted)?;
        write!(f, "committed changes checked: {}", self.committed_checked)
    }
}
