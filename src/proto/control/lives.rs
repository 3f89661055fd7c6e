//! The lives of a client, told apart by the boot ID its heartbeats carry.

use crate::proto::ids::serial_precedes;

/// Lives remembered as replaced, per client.
const PAST_LIVES: usize = 3;

/// The lives (boot IDs) of one client this control unit has heard. A new life voids what was
/// known of the client's channels, so it is answered with full replays. A frame of an earlier
/// life that arrives late (delayed, or reordered behind the restart) must not be taken for yet
/// another restart, or a client already in sync is replayed in full again (seed 16000126 with
/// `--extended-faults`: a line card replaced by a new one, and the old one's delayed heartbeat).
///
/// Boot IDs are ordered only as a hint (a daemon takes its from the clock, which may step back;
/// they compare as serial numbers, so they may wrap), so a life is known as past only for
/// `stale_window_us`, the longest a datagram is taken to be delayed: a replaced life for that
/// long after it was replaced, and a life never heard before that is older than the current
/// one for that long after the current one was first heard (its frames were all sent before
/// the current life began, so they arrive within the window: seeds 27275913, 27325890). Past
/// the window, a life never heard before is taken as new: it may be an older one whose frames
/// were all delayed (seed 17001089), and taking the real current life for a past one for good
/// would leave the client unserved. So a mistake costs at most one full replay, or one
/// window's delay, never the client.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ClientLives {
    current: Option<u32>,
    /// When the current life was first heard.
    current_since_us: u64,
    /// `(boot ID, when it was replaced)`, newest first.
    past: [Option<(u32, u64)>; PAST_LIVES],
}

/// What a heartbeat's boot ID says about the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Life {
    /// The life we know, or the first one heard (nothing known to void).
    Current,
    /// Another life than the one we knew: the client restarted.
    New,
    /// A life replaced within the stale window: the frame is a late one of it.
    Past,
}

impl ClientLives {
    /// Takes the boot ID of a client heartbeat.
    pub(super) fn note(&mut self, boot: u32, now_us: u64, stale_window_us: u64) -> Life {
        match self.current {
            // Whatever life comes first after `forget_current` is taken as the current one,
            // even one we knew before: it may well be the same life, still running.
            None => {
                self.unretire(boot);
                self.current = Some(boot);
                self.current_since_us = now_us;
                Life::Current
            }
            Some(b) if b == boot => Life::Current,
            Some(_)
                if self
                    .past
                    .iter()
                    .flatten()
                    .any(|&(p, at)| p == boot && now_us.saturating_sub(at) < stale_window_us) =>
            {
                Life::Past
            }
            Some(b)
                if serial_precedes(boot, b)
                    && now_us.saturating_sub(self.current_since_us) < stale_window_us =>
            {
                Life::Past
            }
            Some(b) => {
                self.unretire(boot);
                self.retire(b, now_us);
                self.current = Some(boot);
                self.current_since_us = now_us;
                Life::New
            }
        }
    }

    /// A new epoch starts: the life we knew may have ended since (and the client been replayed
    /// by another primary), so the next one heard is taken as it is, not as a restart. The
    /// life we knew stays known as past, so a late frame of it is still stale.
    pub(super) fn forget_current(&mut self, now_us: u64) {
        if let Some(b) = self.current.take() {
            self.retire(b, now_us);
        }
    }

    fn retire(&mut self, boot: u32, now_us: u64) {
        self.past.rotate_right(1);
        self.past[0] = Some((boot, now_us));
    }

    fn unretire(&mut self, boot: u32) {
        for p in &mut self.past {
            if p.is_some_and(|(b, _)| b == boot) {
                *p = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u64 = 100;

    #[test]
    fn a_late_frame_of_an_earlier_life_is_stale_not_a_restart() {
        let mut l = ClientLives::default();
        assert_eq!(l.note(7, 0, W), Life::Current);
        assert_eq!(l.note(7, 1, W), Life::Current);
        assert_eq!(l.note(8, 2, W), Life::New);
        assert_eq!(
            l.note(7, 3, W),
            Life::Past,
            "the old life's delayed heartbeat"
        );
        assert_eq!(l.note(8, 4, W), Life::Current);
        assert_eq!(l.note(9, 5, W), Life::New);
        assert_eq!(l.note(7, 6, W), Life::Past);
        assert_eq!(l.note(8, 7, W), Life::Past);
    }

    #[test]
    fn a_life_never_heard_is_new_even_if_it_was_older() {
        let mut l = ClientLives::default();
        l.note(0, 0, W);
        assert_eq!(l.note(2, 1, W), Life::New);
        // Life 1 ran in between, and its frames are delayed: within a window of life 2's
        // first frame they are taken as late ones of a past life.
        assert_eq!(l.note(1, 2, W), Life::Past);
        assert_eq!(l.note(2, 3, W), Life::Current);
        // Delayed beyond that, life 1 is taken as new (the boot IDs may have stepped back).
        assert_eq!(l.note(1, 2 + W, W), Life::New);
        // Life 2, the one really running, is past for one window, then new again.
        assert_eq!(l.note(2, 3 + W, W), Life::Past);
        assert_eq!(l.note(2, 2 + 2 * W, W), Life::New);
        assert_eq!(l.note(2, 3 + 2 * W, W), Life::Current);
    }

    #[test]
    fn after_a_change_of_epoch_the_next_life_heard_is_taken_as_it_is() {
        let mut l = ClientLives::default();
        l.note(1, 0, W);
        l.forget_current(1);
        assert_eq!(
            l.note(1, 2, W),
            Life::Current,
            "the same life, still running"
        );
        l.forget_current(3);
        assert_eq!(
            l.note(2, 4, W),
            Life::Current,
            "restarted under another primary"
        );
        assert_eq!(l.note(1, 5, W), Life::Past);
    }

    #[test]
    fn boot_ids_compare_as_serial_numbers_across_the_wrap() {
        let mut l = ClientLives::default();
        l.note(u32::MAX - 1, 0, W);
        assert_eq!(l.note(3, 1, W), Life::New, "the clock's low bits wrapped");
        assert_eq!(l.note(u32::MAX, 2, W), Life::Past, "a life between the two");
        assert!(serial_precedes(u32::MAX, 0) && !serial_precedes(0, u32::MAX));
    }

    #[test]
    fn only_the_newest_past_lives_are_kept() {
        let mut l = ClientLives::default();
        for b in 0..10 {
            l.note(b, u64::from(b), W);
        }
        assert_eq!(l.note(8, 10, W), Life::Past);
        assert_eq!(l.note(6, 11, W), Life::Past);
        assert_eq!(
            l.note(5, 12, W),
            Life::Past,
            "too old to remember, but older than the current life, heard within a window"
        );
        for b in 0..10 {
            l.note(b, 100 * W + u64::from(b), W);
        }
        assert_eq!(
            l.note(5, 100 * W + 9 + W, W),
            Life::New,
            "too old to remember, a window after the current life began: taken as a restart"
        );
    }
}
