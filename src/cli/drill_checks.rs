//! What a drill round checks beyond convergence and committed ops: that the role-change hooks
//! ran (one file per transition, written by the `[hooks]` the drill configures), and, in an
//! out-of-sync round, that `failover --dry-run`'s prediction is what the failover then did.

use crate::daemon::admin::dry_run::DryRunReply;
use crate::daemon::admin::status::StatusReply;
use serde::Serialize;
use std::path::Path;

/// The `[hooks]` section that makes every transition of every control unit write one file
/// into `dir`: `node role epoch reason` on one line. Written under a dot name and renamed, so
/// that a reader never sees one half-written. The directory is quoted for the shell (a
/// `--hook-dir` may hold spaces).
pub fn hooks_config(dir: &Path) -> String {
    let d = dir.display();
    let cmd = format!(
        "f=$(mktemp '{d}'/.hook.XXXXXX) && echo \"$STATESYNC_NODE_ID $STATESYNC_ROLE $STATESYNC_EPOCH $STATESYNC_REASON\" > \"$f\" && mv \"$f\" '{d}'/$STATESYNC_NODE_ID-$STATESYNC_EPOCH-$STATESYNC_ROLE.${{f##*.}}"
    );
    format!("\n[hooks]\non_primary = {cmd:?}\non_standby = {cmd:?}\non_fault = {cmd:?}\n")
}

/// One transition, as a hook wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HookRecord {
    pub node: u32,
    pub role: String,
    pub epoch: u64,
    pub reason: String,
}

/// Every transition written into `dir` so far (files that do not parse are skipped: only the
/// drill's own hook writes there).
pub fn hook_records(dir: &Path) -> Vec<HookRecord> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<HookRecord> = entries
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|text| {
            let mut w = text.trim_end().splitn(4, ' ');
            Some(HookRecord {
                node: w.next()?.parse().ok()?,
                role: w.next()?.to_owned(),
                epoch: w.next()?.parse().ok()?,
                reason: w.next().unwrap_or("").to_owned(),
            })
        })
        .collect();
    out.sort_by(|a, b| (a.epoch, a.node, &a.role).cmp(&(b.epoch, b.node, &b.role)));
    out
}

/// The dry run taken just before an out-of-sync failover, against what the failover did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DryRunCheck {
    /// The unit asked had already started taking over: there was nothing to compare.
    pub missed: bool,
    pub channels: u32,
    /// Channels whose client answered the dry run (the rest used its last acked op).
    pub answered: u32,
    /// Channels whose resolution, cut, replayed sections and replay bytes all matched.
    pub matching: u32,
    pub predicted_replay_bytes: u64,
    pub replayed_bytes: u64,
    /// One line per channel that differed, saying how.
    pub differences: Vec<String>,
}

/// Compares the prediction with the new primary's record of its failover, channel by channel.
pub fn compare_dry_run(predicted: &DryRunReply, after: &StatusReply) -> DryRunCheck {
    let mut check = DryRunCheck {
        missed: predicted.role != "standby",
        ..Default::default()
    };
    if check.missed {
        return check;
    }
    for p in &predicted.channels {
        check.channels += 1;
        check.answered += u32::from(p.answered);
        check.predicted_replay_bytes += p.replay_bytes;
        let Some(f) = after
            .channel(p.channel)
            .and_then(|c| c.last_failover.as_ref())
        else {
            check
                .differences
                .push(format!("channel {}: no failover recorded", p.channel));
            continue;
        };
        check.replayed_bytes += f.replay_bytes;
        let same = p.resolution == f.resolution
            && p.cut == f.cut
            && p.replay_sections == f.replay_sections
            && p.replay_bytes == f.replay_bytes;
        if same {
            check.matching += 1;
        } else {
            check.differences.push(format!(
                "channel {}: predicted {} cut {} sections {:#x} {} B{}, did {} cut {} sections {:#x} {} B",
                p.channel,
                p.resolution,
                p.cut,
                p.replay_sections,
                p.replay_bytes,
                if p.answered { "" } else { " (client not asked)" },
                f.resolution,
                f.cut,
                f.replay_sections,
                f.replay_bytes
            ));
        }
    }
    check
}
