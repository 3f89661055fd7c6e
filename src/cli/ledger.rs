//! `churn`'s independent ledger: the final table the load generator says every replica must
//! hold, rebuilt after the run from the generator's seed and change count alone, so the end
//! check does not take the fabric's word for what was committed (a watermark the standby
//! reports cannot show that the standby lost a change's content).
//!
//! Each change's value is a pure function of (shard seed, sequence number, key), so replaying
//! a fresh generator reproduces every change; the last write per key is the expected value.
//! Op IDs are dense per channel and a shard submits its changes in generation order, so the
//! ledger also knows which op each key's last change became, and thus whether it committed.

use crate::proto::ChannelState;
use crate::proto::SectionMask;
use crate::proto::state::PRIVATE_SECTION;
use crate::runtime::api::{Change, FLAG_PRIVATE, INLINE_VALUE_BYTES};

/// Examples of mismatches kept for the report (the count is exact; the list is a sample).
const EXAMPLES: usize = 5;

/// The value word of a change: a pure function of the generator's seed, its sequence number
/// (0 for the prefill) and the key, so a replay reproduces it without the run's clock.
pub fn value_word(seed: u64, n: u64, key: u64) -> u64 {
    let mut z =
        seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ key.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The value bytes a change with value word `word` carries: the word's first `len` bytes
/// (little endian), zero beyond 8.
pub fn encode_value(word: u64, len: usize) -> [u8; INLINE_VALUE_BYTES] {
    let mut value = [0u8; INLINE_VALUE_BYTES];
    let n = len.min(8);
    value[..n].copy_from_slice(&word.to_le_bytes()[..n]);
    value
}

/// What the last change of one key left behind.
#[derive(Debug, Clone, Copy, Default)]
struct Expected {
    /// Op ID the change became on its channel; 0: the key was never written.
    op: u64,
    word: u64,
    worker: u32,
    channel: u32,
    /// Section index in a [`ChannelState`] ([`PRIVATE_SECTION`] for primary-only keys).
    slot: u8,
}

/// The expected final table, per key.
#[derive(Debug)]
pub struct Ledger {
    keys: Vec<Expected>,
    /// Per worker, per local channel: ops assigned so far (the next change becomes op + 1).
    ops: Vec<Vec<u64>>,
    /// Changes whose key or channel lies outside the run's bounds (a generator bug).
    out_of_range: u64,
}

/// What the end check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerCheck {
    /// Keys the ledger expects (written at least once).
    pub keys_checked: u64,
    /// Of those, keys whose last change is not committed (op above the commit watermark).
    pub uncommitted_keys: u64,
    /// Keys missing or wrong in at least one replica, committed or not.
    pub mismatched_keys: u64,
    /// Committed keys missing or wrong in at least one replica: committed changes lost.
    pub lost_committed: u64,
    /// Sum over replicas and channels of |entries held - entries expected| (extra keys show
    /// here; missing ones here and in `mismatched_keys`).
    pub entry_count_diff: u64,
    /// A few mismatches: channel, key and replica.
    pub examples: Vec<String>,
}

impl LedgerCheck {
    pub fn matches(&self) -> bool {
        self.mismatched_keys == 0 && self.entry_count_diff == 0
    }
}

/// One channel's copies at the end of the run.
pub struct Replicas<'a> {
    pub primary: &'a ChannelState,
    pub standby: &'a ChannelState,
    /// The owning client's view (public sections only); `None` when it has none.
    pub client: Option<&'a ChannelState>,
    /// Highest commit watermark the primary announced.
    pub committed_through: u64,
}

impl Ledger {
    /// An empty ledger for `keys` keys and `channels[w]` local channels on worker `w`.
    /// Fails, rather than aborting, when `keys` entries do not fit in memory.
    pub fn new(keys: u64, channels: &[usize]) -> Result<Self, String> {
        let n = usize::try_from(keys).map_err(|_| format!("ledger: {keys} keys"))?;
        let mut table = Vec::new();
        table
            .try_reserve_exact(n)
            .map_err(|e| format!("ledger of {keys} keys: {e}"))?;
        table.resize(n, Expected::default());
        Ok(Ledger {
            keys: table,
            ops: channels.iter().map(|&n| vec![0; n]).collect(),
            out_of_range: 0,
        })
    }

    /// Records the next change submitted on worker `worker` (in submission order).
    pub fn record(&mut self, worker: usize, c: &Change) {
        let op = match self
            .ops
            .get_mut(worker)
            .and_then(|w| w.get_mut(c.channel as usize))
        {
            Some(op) => {
                *op += 1;
                *op
            }
            None => {
                self.out_of_range += 1;
                return;
            }
        };
        let Some(e) = self.keys.get_mut(c.key as usize) else {
            self.out_of_range += 1;
            return;
        };
        let mut word = [0u8; 8];
        word.copy_from_slice(&c.value[..8]);
        *e = Expected {
            op,
            word: u64::from_le_bytes(word),
            worker: worker as u32,
            channel: c.channel,
            slot: if c.flags & FLAG_PRIVATE != 0 {
                PRIVATE_SECTION as u8
            } else {
                c.section
            },
        };
    }

    /// Compares every replica of every channel with the ledger: each expected key present with
    /// its expected value, and no other entries. `replicas(worker, channel)` gives a channel's
    /// copies (`None`: the shard has lost its primary or standby, so every key of it is lost).
    pub fn check<'a>(
        &self,
        value_bytes: usize,
        replicas: impl Fn(usize, u32) -> Option<Replicas<'a>>,
    ) -> LedgerCheck {
        let mut r = LedgerCheck::default();
        if self.out_of_range > 0 {
            r.examples.push(format!(
                "{} generated changes fell outside the run's keys or channels",
                self.out_of_range
            ));
            r.mismatched_keys += self.out_of_range;
        }
        // Expected entries per channel: (all, public).
        let mut counts: Vec<Vec<(u64, u64)>> =
            self.ops.iter().map(|w| vec![(0, 0); w.len()]).collect();
        for (key, e) in self.keys.iter().enumerate() {
            if e.op == 0 {
                continue;
            }
            r.keys_checked += 1;
            let private = e.slot as usize == PRIVATE_SECTION;
            let count = &mut counts[e.worker as usize][e.channel as usize];
            count.0 += 1;
            count.1 += u64::from(!private);
            let reps = replicas(e.worker as usize, e.channel);
            let committed = reps.as_ref().is_some_and(|p| e.op <= p.committed_through);
            r.uncommitted_keys += u64::from(!committed);
            let expected = encode_value(e.word, value_bytes);
            let expected = &expected[..value_bytes];
            let slot = e.slot as usize;
            let wrong = |s: Option<&ChannelState>| {
                s.and_then(|s| s.get(slot, key as u64)) != Some(expected)
            };
            let bad: &[(&str, bool)] = &match &reps {
                None => [("shard", true), ("", false), ("", false)],
                Some(p) => [
                    ("primary", wrong(Some(p.primary))),
                    ("standby", wrong(Some(p.standby))),
                    ("client", !private && wrong(p.client)),
                ],
            };
            if bad.iter().any(|(_, b)| *b) {
                r.mismatched_keys += 1;
                r.lost_committed += u64::from(committed);
                for (replica, _) in bad.iter().filter(|(_, b)| *b) {
                    if r.examples.len() < EXAMPLES {
                        r.examples.push(format!(
                            "worker {} channel {} key {key}: {replica} lacks the value of op {} by the ledger's count ({})",
                            e.worker,
                            e.channel,
                            e.op,
                            if committed {
                                "at or below the commit watermark"
                            } else {
                                "uncommitted"
                            }
                        ));
                    }
                }
            }
        }
        for (w, chans) in counts.iter().enumerate() {
            for (ch, &(all, public)) in chans.iter().enumerate() {
                let Some(p) = replicas(w, ch as u32) else {
                    continue;
                };
                let held = |s: &ChannelState| {
                    s.entry_count(SectionMask::ALL) + s.len(PRIVATE_SECTION) as u64
                };
                let client = p.client.map_or(0, |s| s.entry_count(SectionMask::ALL));
                for (replica, n, want) in [
                    ("primary", held(p.primary), all),
                    ("standby", held(p.standby), all),
                    ("client", client, public),
                ] {
                    if n != want {
                        r.entry_count_diff += n.abs_diff(want);
                        if r.examples.len() < EXAMPLES {
                            r.examples.push(format!(
                                "worker {w} channel {ch}: {replica} holds {n} entries, the ledger expects {want}"
                            ));
                        }
                    }
                }
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::api::Change;

    fn put(channel: u32, key: u64, word: u64, private: bool) -> Change {
        let mut c = Change::put(channel, (key % 64) as u8, key, &word.to_le_bytes()).expect("fits");
        if private {
            c.flags |= FLAG_PRIVATE;
        }
        c
    }

    fn replicas<'a>(
        p: &'a ChannelState,
        s: &'a ChannelState,
        c: &'a ChannelState,
        through: u64,
    ) -> Replicas<'a> {
        Replicas {
            primary: p,
            standby: s,
            client: Some(c),
            committed_through: through,
        }
    }

    /// The last write per key wins; a replica missing a committed change, holding a stale
    /// value or an extra key is caught, and a private key is not expected on the client.
    #[test]
    fn last_write_wins_and_every_replica_is_checked() {
        let mut l = Ledger::new(8, &[1]).expect("small");
        for c in [
            put(0, 1, 10, false),
            put(0, 2, 20, true),
            put(0, 1, 11, false),
        ] {
            l.record(0, &c);
        }
        let mut full = ChannelState::default();
        full.put(1, 1, &11u64.to_le_bytes());
        full.put(PRIVATE_SECTION, 2, &20u64.to_le_bytes());
        let mut public = ChannelState::default();
        public.put(1, 1, &11u64.to_le_bytes());
        let ok = l.check(8, |_, _| Some(replicas(&full, &full, &public, 3)));
        assert!(ok.matches(), "{ok:?}");
        assert_eq!((ok.keys_checked, ok.uncommitted_keys), (2, 0));

        let mut stale = full.clone();
        stale.put(1, 1, &10u64.to_le_bytes());
        let lost = l.check(8, |_, _| Some(replicas(&full, &stale, &public, 3)));
        assert_eq!((lost.mismatched_keys, lost.lost_committed), (1, 1));
        assert!(lost.examples[0].contains("standby"), "{:?}", lost.examples);

        // Not yet committed (watermark 2 < op 3): wrong, but not a lost commit.
        let pending = l.check(8, |_, _| Some(replicas(&full, &stale, &public, 2)));
        assert_eq!((pending.mismatched_keys, pending.lost_committed), (1, 0));

        let mut extra = public.clone();
        extra.put(5, 7, b"x");
        let more = l.check(8, |_, _| Some(replicas(&full, &full, &extra, 3)));
        assert_eq!((more.mismatched_keys, more.entry_count_diff), (0, 1));
        assert!(!more.matches());
    }

    #[test]
    fn values_depend_on_seed_sequence_and_key_only() {
        assert_eq!(value_word(1, 2, 3), value_word(1, 2, 3));
        assert_ne!(value_word(1, 2, 3), value_word(1, 3, 3));
        assert_ne!(value_word(1, 2, 3), value_word(1, 2, 4));
        assert_ne!(value_word(1, 2, 3), value_word(2, 2, 3));
        assert_eq!(&encode_value(0x0102, 3)[..4], &[2, 1, 0, 0]);
    }
}
