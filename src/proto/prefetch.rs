//! Two-stage prefetch of the state a received frame's updates will write, without parsing the
//! frame for it.
//!
//! A receiver hides its state misses by loading two things ahead of each write: the section
//! header, then the slot, whose address the header gives. Both stages need each write's
//! section and key. Receivers used to find them by walking the frame once per stage, on top of
//! the walk that validates and the one that applies: four parses of every op, each a run-op
//! split and an entry walk, the largest share of a receiver's instructions.
//!
//! Now validation ([`crate::wire::FrameReader::new_visiting`]) shows each update to
//! [`FrameTargets::visit`], which notes its channel, sections and keys; the apply walk then
//! runs both stages from the notes, [`FrameTargets::headers`] [`PREFETCH_HEADER_AHEAD`] updates
//! ahead of itself and [`FrameTargets::slots`] [`PREFETCH_AHEAD`] ahead. Two parses instead of
//! four.
//!
//! The headers are not prefetched during validation itself, although it sees every update
//! first: loading a whole frame's headers at once (hundreds of lines) before any slot was
//! measured 7–11 % slower in process than no header prefetch at all, and 16 updates ahead from
//! the notes 3–35 % faster than none (ABBA rounds, `docs/measurements/data-path-changes.md`).
//!
//! Only the first [`WRITES_PER_OP`] writes of an op are noted: an op with more gets those
//! prefetched and the rest miss as they would without a hint. Nothing here changes what is
//! applied; a wrong or missing note costs time, never state.
//!
//! [`PREFETCH_HEADER_AHEAD`]: super::PREFETCH_HEADER_AHEAD
//! [`PREFETCH_AHEAD`]: super::PREFETCH_AHEAD

use super::state::ChannelState;
use crate::wire::UpdateView;

/// Writes of one op noted (nearly every op of a router's churn writes one key).
const WRITES_PER_OP: usize = 2;

/// What validation noted of one update: the receiver's index of its channel, and the table and
/// key of its first writes there.
#[derive(Debug, Clone, Copy)]
struct Target {
    keys: [u64; WRITES_PER_OP],
    chan: u32,
    sections: [u8; WRITES_PER_OP],
    writes: u8,
}

/// The notes of one frame, one per update in frame order. Kept by the receiver and cleared
/// per frame, so it allocates only while growing to the most updates a frame has held (a
/// frame of at most 64 KiB holds fewer than 2^15).
#[derive(Debug, Default)]
pub(crate) struct FrameTargets {
    targets: Vec<Target>,
}

impl FrameTargets {
    /// Forgets the previous frame's notes.
    pub(crate) fn clear(&mut self) {
        self.targets.clear();
    }

    /// Notes the next update of the frame: `chan` is the receiver's index of the update's
    /// channel, or `None` if it writes nothing there (the note is kept, empty, so positions
    /// stay in frame order). `table` gives the table index an entry writes, or `None` for one
    /// the receiver does not hold.
    pub(crate) fn visit(
        &mut self,
        u: &UpdateView<'_>,
        chan: Option<usize>,
        table: impl Fn(&crate::wire::Entry<'_>) -> Option<usize>,
    ) {
        let mut t = Target {
            keys: [0; WRITES_PER_OP],
            chan: 0,
            sections: [0; WRITES_PER_OP],
            writes: 0,
        };
        if let Some(chan) = chan {
            // A channel index comes from a `u32` channel ID, and a table index is below 65.
            t.chan = chan as u32;
            for e in u.entries() {
                let Some(section) = table(&e) else { continue };
                let w = usize::from(t.writes);
                (t.sections[w], t.keys[w]) = (section as u8, e.key);
                t.writes += 1;
                if usize::from(t.writes) == WRITES_PER_OP {
                    break;
                }
            }
        }
        self.targets.push(t);
    }

    /// First stage for the frame's update number `index` (counting updates only, from 0):
    /// prefetches the section headers noted for it, in the state `state_of` gives for its
    /// channel index. Past the noted updates it does nothing.
    pub(crate) fn headers<'s>(&self, index: usize, state_of: impl Fn(usize) -> &'s ChannelState) {
        if let Some(t) = self.targets.get(index).filter(|t| t.writes > 0) {
            let state = state_of(t.chan as usize);
            for &section in &t.sections[..usize::from(t.writes)] {
                state.prefetch_section(usize::from(section));
            }
        }
    }

    /// Second stage for update number `index`: prefetches the slots noted for it (their
    /// headers loaded by [`FrameTargets::headers`] a few updates earlier).
    pub(crate) fn slots<'s>(&self, index: usize, state_of: impl Fn(usize) -> &'s ChannelState) {
        if let Some(t) = self.targets.get(index).filter(|t| t.writes > 0) {
            let state = state_of(t.chan as usize);
            for w in 0..usize::from(t.writes) {
                state.prefetch(usize::from(t.sections[w]), t.keys[w]);
            }
        }
    }
}
