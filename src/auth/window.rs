//! Anti-replay window (RFC 6479): a bitmap of the last `WINDOW_BITS` packet sequence numbers
//! seen from one sender session. A sequence number is accepted once; one older than the window
//! is refused. The window moves only after a frame's tag has verified, so forged frames can
//! neither fill it nor slide it.

/// Bits in the bitmap; the window covers the last `WINDOW_BITS - 64` sequence numbers exactly
/// (the top word is the one being filled, as in RFC 6479).
const WORDS: usize = 32;
const WINDOW_BITS: u64 = (WORDS * 64) as u64;
/// Sequence numbers this far behind the newest are always refused.
pub const WINDOW_PACKETS: u64 = WINDOW_BITS - 64;

#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// Highest sequence number accepted so far (0: none yet).
    top: u64,
    bits: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow {
            top: 0,
            bits: [0; WORDS],
        }
    }
}

impl ReplayWindow {
    /// Whether `seq` would be accepted (new, and not too old). Call before verifying the tag
    /// (cheap rejection), then [`ReplayWindow::accept`] after.
    pub fn check(&self, seq: u64) -> bool {
        if seq > self.top {
            return true;
        }
        if self.top - seq >= WINDOW_PACKETS {
            return false;
        }
        let (word, bit) = Self::slot(seq);
        self.bits[word] & bit == 0
    }

    /// Marks `seq` seen; returns false (changing nothing) if it was a replay or too old.
    pub fn accept(&mut self, seq: u64) -> bool {
        if !self.check(seq) {
            return false;
        }
        if seq > self.top {
            // Clear the words the window slides onto (at most all of them): they last held
            // numbers a whole window older.
            let (cur, new) = (self.top / 64, seq / 64);
            for i in 0..(new - cur).min(WORDS as u64) {
                self.bits[((new - i) % WORDS as u64) as usize] = 0;
            }
            self.top = seq;
        }
        let (word, bit) = Self::slot(seq);
        self.bits[word] |= bit;
        true
    }

    fn slot(seq: u64) -> (usize, u64) {
        (((seq / 64) % WORDS as u64) as usize, 1u64 << (seq % 64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn each_sequence_number_is_taken_once() {
        let mut w = ReplayWindow::default();
        assert!(w.accept(1));
        assert!(!w.accept(1));
        assert!(w.accept(3));
        assert!(w.accept(2));
        assert!(!w.accept(2));
        assert!(w.accept(5000));
        assert!(!w.accept(5000 - WINDOW_PACKETS), "too old");
        assert!(w.accept(5000 - WINDOW_PACKETS + 1), "inside the window");
        assert!(!w.accept(3), "far behind");
    }

    proptest! {
        /// Against a set of everything seen: a number is accepted iff it is new and within
        /// the window of the highest accepted so far.
        #[test]
        fn matches_a_model(seqs in proptest::collection::vec(1u64..6000, 1..400)) {
            let mut w = ReplayWindow::default();
            let mut seen = std::collections::BTreeSet::new();
            let mut top = 0u64;
            for s in seqs {
                let expect = !seen.contains(&s) && (s > top || top - s < WINDOW_PACKETS);
                prop_assert_eq!(w.accept(s), expect, "seq {} top {}", s, top);
                if expect {
                    seen.insert(s);
                    top = top.max(s);
                }
            }
        }
    }
}
