//! The cut decision of a takeover [0068-0077] as a pure function: from what this standby holds
//! of a channel, the client's answer and the policy, to the resolution, the cut and the
//! sections to replay. Kept apart from the control unit so that every case can be read, and
//! tested, as a table.

use crate::proto::{CutPolicy, OpId, Resolution, SectionMask};

/// What the standby holds of a channel when it resolves it.
#[derive(Debug, Clone, Copy)]
pub(super) struct HeldView {
    /// Ops already in the state (applied, or inside a transferred snapshot): never cut.
    pub floor: OpId,
    /// The highest op held: in the pending ring or inside a transferred snapshot.
    pub held: OpId,
    /// Ops the client is known to have acknowledged (forwarded acks).
    pub acked: OpId,
}

/// The client's answer, once checked: a position on our own history, or none we can use (no
/// answer in time, no history, or a position on another lineage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    Unknown,
    /// It applied every op up to `op`; `cookie_above` marks the sections its ops above the
    /// queried op (our `held`) touched.
    Applied {
        op: OpId,
        cookie_above: SectionMask,
    },
}

/// What a takeover decides for one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Decision {
    pub resolution: Resolution,
    /// Ops above it are discarded; the new epoch starts at `cut + 1`.
    pub cut: OpId,
    /// Sections to replay to the client (`None`: resend ops as updates, or nothing).
    pub replay: Option<SectionMask>,
    /// The acknowledged position to carry on with.
    pub acked: OpId,
}

/// The cut for a client known to have applied `client_op`: how many of the ops it lacks (up
/// to `held`) the policy keeps.
fn policy_cut(policy: CutPolicy, client_op: OpId, held: OpId) -> OpId {
    match policy {
        CutPolicy::Complete => held,
        CutPolicy::Fast => client_op.min(held),
        CutPolicy::Weighted { max_ops } => held.min(client_op.saturating_add(max_ops)),
    }
}

/// Decides a channel. `slot(op)` is the retained op `op` as `(cookie, only its cookie is
/// held)`, `None` when it is not retained: ops the client lacks that exist only inside a
/// transferred snapshot have no body to resend, so their sections are replayed instead.
pub(super) fn decide(
    view: HeldView,
    answer: Answer,
    policy: CutPolicy,
    slot: impl Fn(OpId) -> Option<(SectionMask, bool)>,
) -> Decision {
    let HeldView { floor, held, acked } = view;
    let all_sections = SectionMask::ALL;
    match answer {
        Answer::Applied { op: n, .. } if n <= held => {
            let cut = policy_cut(policy, n, held).max(floor).max(n);
            let lacks_body = n
                .range_after(cut)
                .any(|op| slot(op).is_none_or(|(_, pre)| pre));
            let replay = (n < cut && lacks_body).then(|| {
                n.range_after(cut).fold(SectionMask::EMPTY, |m, op| {
                    m | slot(op).map_or(all_sections, |s| s.0)
                })
            });
            Decision {
                resolution: Resolution::Behind { client_op: n.get() },
                cut,
                replay,
                acked: acked.max(n.min(cut)),
            }
        }
        // The client applied ops above everything we hold: roll it back by replaying exactly
        // the sections those ops touched.
        Answer::Applied { op, cookie_above } => Decision {
            resolution: Resolution::Ahead {
                client_op: op.get(),
            },
            cut: held,
            replay: Some(cookie_above),
            acked: held,
        },
        Answer::Unknown => Decision {
            resolution: Resolution::Unknown,
            cut: policy_cut(policy, acked, held).max(floor),
            replay: Some(all_sections),
            acked,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: u64 = SectionMask::ALL.get();

    /// Ops 1..=20 retained with bodies, op `k`'s cookie `1 << (k % 8)`; ops 21..=25 held only
    /// as cookies (inside a transferred snapshot).
    fn slot(op: OpId) -> Option<(SectionMask, bool)> {
        let op = op.get();
        (1..=25)
            .contains(&op)
            .then_some((SectionMask::new(1 << (op % 8)), op > 20))
    }

    fn view(floor: u64, held: u64, acked: u64) -> HeldView {
        let [floor, held, acked] = [floor, held, acked].map(OpId::new);
        HeldView { floor, held, acked }
    }

    fn applied(op: u64, cookie_above: u64) -> Answer {
        Answer::Applied {
            op: OpId::new(op),
            cookie_above: SectionMask::new(cookie_above),
        }
    }

    const WEIGHTED: CutPolicy = CutPolicy::Weighted { max_ops: 3 };

    /// One row: (view, answer, policy) and the expected (resolution, cut, replay, acked).
    type Row = (
        HeldView,
        Answer,
        CutPolicy,
        (Resolution, u64, Option<u64>, u64),
    );

    #[test]
    fn every_case_under_every_policy() {
        use CutPolicy::{Complete, Fast};
        let behind = |n| Resolution::Behind { client_op: n };
        let ahead = |n| Resolution::Ahead { client_op: n };
        // (view, answer, policy) -> (resolution, cut, replay, acked)
        #[rustfmt::skip]
        let table: &[Row] = &[
            // Behind, every op it lacks has a body: resend as updates (no replay).
            (view(10, 18, 12), applied(14, 0), Complete, (behind(14), 18, None, 14)),
            (view(10, 18, 12), applied(14, 0), Fast,     (behind(14), 14, None, 14)),
            (view(10, 18, 12), applied(14, 0), WEIGHTED, (behind(14), 17, None, 14)),
            // Behind below what we applied: never cut under the floor.
            (view(16, 18, 12), applied(14, 0), Fast,     (behind(14), 16, None, 14)),
            // Behind, some ops it lacks exist only as cookies: replay their sections.
            (view(10, 23, 12), applied(19, 0), Complete,
                (behind(19), 23, Some((20..=23).fold(0, |m, k| m | 1 << (k % 8))), 19)),
            (view(10, 23, 12), applied(19, 0), Fast,     (behind(19), 19, None, 19)),
            (view(10, 23, 12), applied(19, 0), WEIGHTED,
                (behind(19), 22, Some((20..=22).fold(0, |m, k| m | 1 << (k % 8))), 19)),
            // In step with us: nothing to send.
            (view(10, 18, 12), applied(18, 0), Complete, (behind(18), 18, None, 18)),
            // Ahead: everything we hold is kept, the client's extra sections replayed.
            (view(10, 18, 12), applied(21, 0b110), Complete, (ahead(21), 18, Some(0b110), 18)),
            (view(10, 18, 12), applied(21, 0b110), Fast,     (ahead(21), 18, Some(0b110), 18)),
            (view(10, 18, 12), applied(21, 0b110), WEIGHTED, (ahead(21), 18, Some(0b110), 18)),
            // Unknown: cut from the acknowledged position, full replay.
            (view(10, 18, 12), Answer::Unknown, Complete, (Resolution::Unknown, 18, Some(ALL), 12)),
            (view(10, 18, 12), Answer::Unknown, Fast,     (Resolution::Unknown, 12, Some(ALL), 12)),
            (view(10, 18, 12), Answer::Unknown, WEIGHTED, (Resolution::Unknown, 15, Some(ALL), 12)),
            (view(14, 18, 12), Answer::Unknown, Fast,     (Resolution::Unknown, 14, Some(ALL), 12)),
        ];
        for (i, &(v, a, p, (resolution, cut, replay, acked))) in table.iter().enumerate() {
            let d = decide(v, a, p, slot);
            assert_eq!(
                d,
                Decision {
                    resolution,
                    cut: OpId::new(cut),
                    replay: replay.map(SectionMask::new),
                    acked: OpId::new(acked),
                },
                "row {i}: {v:?} {a:?} {p:?}"
            );
        }
    }

    #[test]
    fn the_cut_never_drops_below_the_floor_nor_above_what_is_held() {
        for policy in [CutPolicy::Complete, CutPolicy::Fast, WEIGHTED] {
            for floor in 0..=18 {
                for n in 0..=22 {
                    for a in [Answer::Unknown, applied(n, 1)] {
                        let d = decide(view(floor, 18, floor.min(12)), a, policy, slot);
                        assert!(
                            d.cut.get() >= floor && d.cut.get() <= 18,
                            "{policy:?} {floor} {a:?}: {d:?}"
                        );
                    }
                }
            }
        }
    }
}
