//! The replicated state model: per channel, 64 client-visible sections plus one primary-only
//! section, each a map from `u64` keys to byte values.
//!
//! Each section keeps an order-independent digest (a wrapping sum of per-entry hashes), updated
//! in O(1) per write, so two copies are compared without walking them.

use crate::wire::{Entry, SECTIONS};
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Values up to this size live inside the map entry: no allocation, no pointer to chase.
const INLINE_VALUE_BYTES: usize = 32;

/// A stored value with its entry hash, so an overwrite or delete need not rehash the old value.
#[derive(Debug, Clone)]
struct Stored {
    hash: u64,
    value: SmallVec<[u8; INLINE_VALUE_BYTES]>,
}

/// Index of the primary-only section (never sent to clients).
pub const PRIVATE_SECTION: usize = SECTIONS;
const ALL_SECTIONS: usize = SECTIONS + 1;

/// Bit mask with every client-visible section set.
pub const ALL_SECTIONS_MASK: u64 = u64::MAX;

#[derive(Debug, Clone)]
pub struct ChannelState {
    sections: Vec<FxHashMap<u64, Stored>>,
    digests: [u64; ALL_SECTIONS],
    value_bytes: [u64; ALL_SECTIONS],
}

impl Default for ChannelState {
    fn default() -> Self {
        ChannelState {
            sections: (0..ALL_SECTIONS).map(|_| FxHashMap::default()).collect(),
            digests: [0; ALL_SECTIONS],
            value_bytes: [0; ALL_SECTIONS],
        }
    }
}

fn entry_hash(section: usize, key: u64, value: &[u8]) -> u64 {
    let seed = key.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (section as u64).rotate_left(56);
    xxh3_64_with_seed(value, seed) | 1
}

impl ChannelState {
    fn slot(e: &Entry<'_>) -> usize {
        if e.private {
            PRIVATE_SECTION
        } else {
            e.section as usize
        }
    }

    /// Applies one write; reuses the existing value buffer so steady-state updates of existing
    /// keys do not allocate.
    pub fn apply(&mut self, e: &Entry<'_>) {
        let s = Self::slot(e);
        match e.value {
            Some(v) => self.put(s, e.key, v),
            None => self.delete(s, e.key),
        }
    }

    pub fn put(&mut self, section: usize, key: u64, value: &[u8]) {
        let map = &mut self.sections[section];
        let new_h = entry_hash(section, key, value);
        match map.get_mut(&key) {
            Some(old) => {
                self.digests[section] = self.digests[section]
                    .wrapping_sub(old.hash)
                    .wrapping_add(new_h);
                self.value_bytes[section] =
                    self.value_bytes[section] - old.value.len() as u64 + value.len() as u64;
                old.hash = new_h;
                old.value.clear();
                old.value.extend_from_slice(value);
            }
            None => {
                self.digests[section] = self.digests[section].wrapping_add(new_h);
                self.value_bytes[section] += value.len() as u64;
                map.insert(
                    key,
                    Stored {
                        hash: new_h,
                        value: SmallVec::from_slice(value),
                    },
                );
            }
        }
    }

    pub fn delete(&mut self, section: usize, key: u64) {
        if let Some(old) = self.sections[section].remove(&key) {
            self.digests[section] = self.digests[section].wrapping_sub(old.hash);
            self.value_bytes[section] -= old.value.len() as u64;
        }
    }

    pub fn get(&self, section: usize, key: u64) -> Option<&[u8]> {
        self.sections[section].get(&key).map(|v| v.value.as_slice())
    }

    /// Empties every client-visible section whose bit is set in `mask`.
    pub fn clear_sections(&mut self, mask: u64) {
        for s in 0..SECTIONS {
            if mask & (1 << s) != 0 {
                self.sections[s].clear();
                self.digests[s] = 0;
                self.value_bytes[s] = 0;
            }
        }
    }

    /// Empties everything, the primary-only section included.
    pub fn clear_all(&mut self) {
        self.clear_sections(ALL_SECTIONS_MASK);
        self.sections[PRIVATE_SECTION].clear();
        self.digests[PRIVATE_SECTION] = 0;
        self.value_bytes[PRIVATE_SECTION] = 0;
    }

    pub fn section_digest(&self, section: usize) -> u64 {
        self.digests[section]
    }

    /// Digest of the client-visible view; equal on a client and on its primary when in sync.
    pub fn public_digest(&self) -> u64 {
        self.digests[..SECTIONS]
            .iter()
            .fold(0u64, |a, d| a.wrapping_add(d.rotate_left(1)))
    }

    /// Digest of everything, the primary-only section included (primary versus standby).
    pub fn full_digest(&self) -> u64 {
        self.public_digest() ^ self.digests[PRIVATE_SECTION].rotate_left(17)
    }

    /// Mask of client-visible sections whose digests differ from `other`'s.
    pub fn differing_sections(&self, other: &ChannelState) -> u64 {
        (0..SECTIONS)
            .filter(|&s| self.digests[s] != other.digests[s])
            .fold(0, |m, s| m | (1 << s))
    }

    pub fn entries(&self, section: usize) -> impl Iterator<Item = (u64, &[u8])> {
        self.sections[section]
            .iter()
            .map(|(k, v)| (*k, v.value.as_slice()))
    }

    pub fn len(&self, section: usize) -> usize {
        self.sections[section].len()
    }

    pub fn is_empty(&self) -> bool {
        self.sections.iter().all(|m| m.is_empty())
    }

    /// Value bytes held in the sections of `mask` (client-visible only).
    pub fn value_bytes(&self, mask: u64) -> u64 {
        (0..SECTIONS)
            .filter(|&s| mask & (1 << s) != 0)
            .map(|s| self.value_bytes[s])
            .sum()
    }

    /// Entries held in the sections of `mask` (client-visible only).
    pub fn entry_count(&self, mask: u64) -> u64 {
        (0..SECTIONS)
            .filter(|&s| mask & (1 << s) != 0)
            .map(|s| self.sections[s].len() as u64)
            .sum()
    }

    /// Sections (client-visible) that hold at least one entry.
    pub fn nonempty_mask(&self) -> u64 {
        (0..SECTIONS)
            .filter(|&s| !self.sections[s].is_empty())
            .fold(0, |m, s| m | (1 << s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(section: u8, key: u64, value: Option<&[u8]>) -> Entry<'_> {
        Entry {
            section,
            key,
            value,
            private: false,
        }
    }

    #[test]
    fn digest_is_order_independent() {
        let mut a = ChannelState::default();
        let mut b = ChannelState::default();
        a.apply(&e(1, 1, Some(b"x")));
        a.apply(&e(2, 2, Some(b"y")));
        b.apply(&e(2, 2, Some(b"y")));
        b.apply(&e(1, 1, Some(b"x")));
        assert_eq!(a.full_digest(), b.full_digest());
        a.apply(&e(1, 1, Some(b"z")));
        assert_ne!(a.full_digest(), b.full_digest());
        assert_eq!(a.differing_sections(&b), 1 << 1);
        a.apply(&e(1, 1, Some(b"x")));
        assert_eq!(a.full_digest(), b.full_digest());
        a.apply(&e(3, 9, None));
        assert_eq!(a.full_digest(), b.full_digest());
        a.apply(&e(2, 2, None));
        b.apply(&e(2, 2, None));
        assert_eq!(a.full_digest(), b.full_digest());
        assert_eq!(a.value_bytes(ALL_SECTIONS_MASK), 1);
    }

    #[test]
    fn private_section_only_changes_full_digest() {
        let mut a = ChannelState::default();
        let b = ChannelState::default();
        a.apply(&Entry {
            section: 0,
            key: 1,
            value: Some(b"p"),
            private: true,
        });
        assert_eq!(a.public_digest(), b.public_digest());
        assert_ne!(a.full_digest(), b.full_digest());
    }
}
