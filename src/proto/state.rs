//! The replicated state model: per channel, 64 client-visible sections plus one primary-only
//! section, each a map from `u64` keys to byte values.
//!
//! Each section keeps an order-independent digest (a wrapping sum of per-entry hashes), updated
//! in O(1) per write, so two copies are compared without walking them.
//!
//! Sections are [`SectionTable`]s: a write to an existing key touches one cache line (the slot
//! holds key, entry hash and, up to 44 bytes, the value), and [`ChannelState::prefetch`] lets a
//! caller start loading that line for upcoming writes so a batch overlaps its cache misses.

use super::SectionMask;
use super::table::{SectionTable, prefetch_line};
use crate::wire::{Entry, SECTIONS};
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Index of the primary-only section (never sent to clients).
pub const PRIVATE_SECTION: usize = SECTIONS;
const ALL_SECTIONS: usize = SECTIONS + 1;

/// One stage of a prefetch of the write to `key` in table `table` ([`ChannelState::table_of`]):
/// the table's header ([`ChannelState::prefetch_section`]) or the key's slot
/// ([`ChannelState::prefetch`]), for loops that run both at different distances.
pub type PrefetchHint = fn(&ChannelState, usize, u64);

#[derive(Debug, Clone)]
pub struct ChannelState {
    sections: Vec<SectionTable>,
}

/// Keyed with the per-process random seed (see [`ChannelState::with_seed`]).
impl Default for ChannelState {
    fn default() -> Self {
        Self::with_seed(super::table::process_seed())
    }
}

fn entry_hash(section: usize, key: u64, value: &[u8]) -> u64 {
    let seed = key.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (section as u64).rotate_left(56);
    xxh3_64_with_seed(value, seed) | 1
}

impl ChannelState {
    /// Empty sections whose slot placement is keyed by `seed` (each section with its own
    /// value derived from it), so keys chosen to collide cannot make inserts quadratic. The
    /// seed is local: digests, cookies and which section a key belongs to never depend on it,
    /// so replicas with different seeds compare equal. It only orders [`ChannelState::entries`].
    pub fn with_seed(seed: u64) -> Self {
        ChannelState {
            sections: (0..ALL_SECTIONS as u64)
                .map(|s| SectionTable::with_seed(seed ^ s.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
                .collect(),
        }
    }

    /// Index of the table `e` writes: its section, or the primary-only one for a private
    /// entry.
    pub(crate) fn table_of(e: &Entry<'_>) -> usize {
        if e.private {
            PRIVATE_SECTION
        } else {
            e.section as usize
        }
    }

    /// Applies one write; reuses the existing value buffer so steady-state updates of existing
    /// keys do not allocate.
    pub fn apply(&mut self, e: &Entry<'_>) {
        let s = Self::table_of(e);
        match e.value {
            Some(v) => self.put(s, e.key, v),
            None => self.delete(s, e.key),
        }
    }

    /// Hints the CPU to start loading the slot `key` would occupy in `section`, so a later
    /// `put`/`delete`/`get` of it finds the line in cache. Prefetch a batch of upcoming keys,
    /// then apply the batch: the misses overlap instead of running one after another.
    #[inline]
    pub fn prefetch(&self, section: usize, key: u64) {
        self.sections[section].prefetch(key);
    }

    /// First stage of a two-stage prefetch: loads the header of the section `e` will write.
    /// The slot prefetch reads that header to find the slot, so without this it stalls on
    /// the header's miss; issue this a few writes before [`ChannelState::prefetch`].
    #[inline]
    pub fn prefetch_section_of(&self, e: &Entry<'_>) {
        self.prefetch_section(Self::table_of(e));
    }

    /// [`ChannelState::prefetch_section_of`] by table index ([`ChannelState::table_of`]).
    #[inline]
    pub(crate) fn prefetch_section(&self, section: usize) {
        if let Some(t) = self.sections.get(section) {
            prefetch_line(t);
        }
    }

    pub fn put(&mut self, section: usize, key: u64, value: &[u8]) {
        // entry_hash is never 0 (low bit forced), as SectionTable requires.
        let h = entry_hash(section, key, value);
        self.sections[section].put(key, h, value);
    }

    pub fn delete(&mut self, section: usize, key: u64) {
        self.sections[section].remove(key);
    }

    pub fn get(&self, section: usize, key: u64) -> Option<&[u8]> {
        self.sections[section].get(key).map(|(v, _)| v)
    }

    /// Empties every client-visible section whose bit is set in `mask`.
    pub fn clear_sections(&mut self, mask: SectionMask) {
        for s in 0..SECTIONS {
            if mask.contains(s as u32) {
                self.sections[s].clear();
            }
        }
    }

    /// Empties everything, the primary-only section included.
    pub fn clear_all(&mut self) {
        self.clear_sections(SectionMask::ALL);
        self.sections[PRIVATE_SECTION].clear();
    }

    pub fn section_digest(&self, section: usize) -> u64 {
        self.sections[section].digest()
    }

    /// Digest of the client-visible view; equal on a client and on its primary when in sync.
    pub fn public_digest(&self) -> u64 {
        self.sections[..SECTIONS]
            .iter()
            .fold(0u64, |a, t| a.wrapping_add(t.digest().rotate_left(1)))
    }

    /// Digest of everything, the primary-only section included (primary versus standby).
    pub fn full_digest(&self) -> u64 {
        self.public_digest() ^ self.section_digest(PRIVATE_SECTION).rotate_left(17)
    }

    /// Mask of client-visible sections whose digests differ from `other`'s.
    pub fn differing_sections(&self, other: &ChannelState) -> SectionMask {
        (0..SECTIONS)
            .filter(|&s| self.section_digest(s) != other.section_digest(s))
            .fold(SectionMask::EMPTY, |m, s| m.with(s as u32))
    }

    pub fn entries(&self, section: usize) -> impl Iterator<Item = (u64, &[u8])> {
        self.sections[section].iter()
    }

    pub fn len(&self, section: usize) -> usize {
        self.sections[section].len()
    }

    pub fn is_empty(&self) -> bool {
        self.sections.iter().all(|m| m.is_empty())
    }

    /// Value bytes held in the sections of `mask` (client-visible only).
    pub fn value_bytes(&self, mask: SectionMask) -> u64 {
        (0..SECTIONS)
            .filter(|&s| mask.contains(s as u32))
            .map(|s| self.sections[s].value_bytes())
            .sum()
    }

    /// What replaying the sections of `mask` puts on the wire: each entry's value and its
    /// bulk-entry header.
    pub fn wire_bytes(&self, mask: SectionMask) -> u64 {
        self.value_bytes(mask)
            + self.entry_count(mask) * (size_of::<crate::wire::BulkEntry>() as u64 + 4)
    }

    /// [`ChannelState::wire_bytes`] as it will be once `writes` are applied in order, without
    /// applying them: what a takeover that first applies its pending ops through the cut then
    /// replays (`failover --dry-run`). Private writes and sections outside `mask` count for
    /// nothing; a key written twice counts once, at its last value.
    pub fn wire_bytes_after<'e>(
        &self,
        mask: SectionMask,
        writes: impl Iterator<Item = Entry<'e>>,
    ) -> u64 {
        let mut last_len: std::collections::HashMap<(u8, u64), Option<usize>> =
            std::collections::HashMap::new();
        let (mut entries, mut bytes) =
            (self.entry_count(mask) as i64, self.value_bytes(mask) as i64);
        for e in writes.filter(|e| !e.private && mask.contains(u32::from(e.section))) {
            let held = *last_len
                .entry((e.section, e.key))
                .or_insert_with(|| self.value_of(&e).map(<[u8]>::len));
            let new = e.value.map(<[u8]>::len);
            entries += i64::from(new.is_some()) - i64::from(held.is_some());
            bytes += new.unwrap_or(0) as i64 - held.unwrap_or(0) as i64;
            last_len.insert((e.section, e.key), new);
        }
        (bytes.max(0) as u64)
            + (entries.max(0) as u64) * (size_of::<crate::wire::BulkEntry>() as u64 + 4)
    }

    /// Entries held in the sections of `mask` (client-visible only).
    pub fn entry_count(&self, mask: SectionMask) -> u64 {
        (0..SECTIONS)
            .filter(|&s| mask.contains(s as u32))
            .map(|s| self.sections[s].len() as u64)
            .sum()
    }

    /// The value now held under the key `e` writes (in its section, public or private).
    pub fn value_of(&self, e: &Entry<'_>) -> Option<&[u8]> {
        self.get(Self::table_of(e), e.key)
    }

    /// Entries and value bytes held in every section, the private one included: what a
    /// channel's quota counts.
    pub fn totals(&self) -> (u64, u64) {
        self.sections.iter().fold((0, 0), |(n, b), t| {
            (n + t.len() as u64, b + t.value_bytes())
        })
    }

    /// Sections (client-visible) that hold at least one entry.
    pub fn nonempty_mask(&self) -> SectionMask {
        (0..SECTIONS)
            .filter(|&s| !self.sections[s].is_empty())
            .fold(SectionMask::EMPTY, |m, s| m.with(s as u32))
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
        assert_eq!(a.differing_sections(&b), SectionMask::new(1 << 1));
        a.apply(&e(1, 1, Some(b"x")));
        assert_eq!(a.full_digest(), b.full_digest());
        a.apply(&e(3, 9, None));
        assert_eq!(a.full_digest(), b.full_digest());
        a.apply(&e(2, 2, None));
        b.apply(&e(2, 2, None));
        assert_eq!(a.full_digest(), b.full_digest());
        assert_eq!(a.value_bytes(SectionMask::ALL), 1);
    }

    /// The bytes a replay would send after some writes, counted without applying them, equal
    /// what applying them and counting gives: overwrites, deletes, new keys, a key written
    /// twice, a delete of an absent key, private writes and sections outside the mask.
    #[test]
    fn wire_bytes_after_writes_equals_applying_them() {
        let mut a = ChannelState::default();
        for k in 0..20u64 {
            a.apply(&e((k % 4) as u8, k, Some(&[7u8; 9][..(k % 9) as usize])));
        }
        let private = Entry {
            section: 1,
            key: 3,
            value: Some(b"secret"),
            private: true,
        };
        let writes = [
            e(0, 0, Some(b"longer value")),
            e(1, 1, None),
            e(2, 100, Some(b"new")),
            e(2, 100, Some(b"newer!")),
            e(3, 555, None),
            e(1, 5, Some(b"")),
            e(3, 7, None),
            e(3, 7, Some(b"back")),
            private,
        ];
        for mask in [SectionMask::ALL.get(), 0b0101, 0b1010, 0].map(SectionMask::new) {
            let predicted = a.wire_bytes_after(mask, writes.iter().copied());
            let mut b = a.clone();
            writes.iter().for_each(|w| b.apply(w));
            assert_eq!(predicted, b.wire_bytes(mask), "mask {mask:#x}");
        }
    }

    #[test]
    fn large_values_and_prefetch() {
        let mut a = ChannelState::default();
        let big = vec![5u8; 1000];
        a.prefetch_section(4);
        a.apply(&e(4, 7, Some(&big)));
        a.prefetch(4, 7);
        assert_eq!(a.get(4, 7), Some(&big[..]));
        assert_eq!(a.value_bytes(SectionMask::new(1 << 4)), 1000);
        a.apply(&e(4, 7, Some(b"tiny")));
        assert_eq!(a.value_bytes(SectionMask::new(1 << 4)), 4);
        assert_eq!(a.entry_count(SectionMask::ALL), 1);
        assert_eq!(a.nonempty_mask(), SectionMask::new(1 << 4));
        let mut b = ChannelState::default();
        b.put(4, 7, b"tiny");
        assert_eq!(a.full_digest(), b.full_digest());
        assert_eq!(a.entries(4).collect::<Vec<_>>(), vec![(7, &b"tiny"[..])]);
        a.clear_sections(SectionMask::new(1 << 4));
        assert!(a.is_empty());
        assert_eq!(a.section_digest(4), 0);
    }

    /// The table seed is local: replicas with different seeds agree on every digest.
    #[test]
    fn digests_do_not_depend_on_the_table_seed() {
        let mut a = ChannelState::with_seed(1);
        let mut b = ChannelState::with_seed(0xdead_beef);
        for k in 0..500u64 {
            let v = k.to_le_bytes();
            let e = |private| Entry {
                section: (k % 7) as u8,
                key: k,
                value: Some(&v),
                private,
            };
            a.apply(&e(k % 5 == 0));
            b.apply(&e(k % 5 == 0));
        }
        assert_eq!(a.full_digest(), b.full_digest());
        assert_eq!(a.public_digest(), b.public_digest());
        assert_eq!(a.differing_sections(&b), SectionMask::EMPTY);
        let keys = |s: &ChannelState| s.entries(3).map(|(k, _)| k).collect::<Vec<_>>();
        assert_ne!(keys(&a), keys(&b), "different seeds, different slot order");
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
