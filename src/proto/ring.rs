//! A fixed-capacity ring of ops indexed by op ID.
//!
//! The primary keeps its retention window here (for retransmission) and a standby keeps its
//! pending queue here [0047]. Ops are dense per channel, so slot `op % capacity` finds an op in
//! O(1): matching a cumulative ack is a pointer move, not a search. Slot buffers are reused, so a
//! warmed ring does not allocate.

use crate::wire::{Entry, EntryIter, UpdateView, encode_entry};

#[derive(Debug, Default, Clone)]
pub struct Slot {
    pub op: u64,
    pub cookie: u64,
    /// The op is already contained in a transferred snapshot: nothing to apply.
    pub preapplied: bool,
    pub public_count: u16,
    pub private_count: u16,
    pub public_len: usize,
    /// Encoded public entries, then encoded private entries.
    pub bytes: Vec<u8>,
}

impl Slot {
    pub fn public(&self) -> (&[u8], u16) {
        (&self.bytes[..self.public_len], self.public_count)
    }
    pub fn private(&self) -> (&[u8], u16) {
        (&self.bytes[self.public_len..], self.private_count)
    }
    pub fn entries(&self) -> impl Iterator<Item = Entry<'_>> {
        let public = self.public_count as usize;
        EntryIterOwned {
            inner: decode_entries(&self.bytes),
            index: 0,
            public,
        }
    }
}

struct EntryIterOwned<'a> {
    inner: EntryIter<'a>,
    index: usize,
    public: usize,
}

impl<'a> Iterator for EntryIterOwned<'a> {
    type Item = Entry<'a>;
    fn next(&mut self) -> Option<Entry<'a>> {
        let e = self.inner.next()?;
        let private = self.index >= self.public;
        self.index += 1;
        Some(Entry { private, ..e })
    }
}

/// Entries stored in a slot were validated when they arrived (or encoded by us), so a plain
/// iterator over them cannot fail.
fn decode_entries(bytes: &[u8]) -> EntryIter<'_> {
    crate::wire::codec_entry_iter(bytes)
}

#[derive(Debug)]
pub struct OpRing {
    slots: Vec<Slot>,
    /// Lowest op held; the ring holds `base..=top` (empty when `top < base`).
    base: u64,
    top: u64,
}

impl OpRing {
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0);
        OpRing {
            slots: (0..capacity).map(|_| Slot::default()).collect(),
            base: 1,
            top: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }
    pub fn len(&self) -> usize {
        (self.top + 1 - self.base) as usize
    }
    pub fn is_empty(&self) -> bool {
        self.top < self.base
    }
    pub fn is_full(&self) -> bool {
        self.len() == self.slots.len()
    }
    /// Highest op held, or `base - 1` when empty.
    pub fn top(&self) -> u64 {
        self.top
    }
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Doubles the capacity, keeping every op held. Only the `OverrunBound` plant calls it: a
    /// correct primary reports backpressure at its window instead of growing memory.
    pub(crate) fn grow_for_injected_bug(&mut self) {
        let (old, new) = (self.slots.len() as u64, 2 * self.slots.len() as u64);
        let mut slots: Vec<Slot> = (0..new).map(|_| Slot::default()).collect();
        for op in self.base..=self.top {
            slots[(op % new) as usize] = std::mem::take(&mut self.slots[(op % old) as usize]);
        }
        self.slots = slots;
    }

    /// Empties the ring and makes `next` the next op it will accept.
    pub fn reset(&mut self, next: u64) {
        self.base = next;
        self.top = next - 1;
    }

    pub fn get(&self, op: u64) -> Option<&Slot> {
        if op < self.base || op > self.top {
            return None;
        }
        let s = &self.slots[(op % self.slots.len() as u64) as usize];
        assert_eq!(s.op, op, "ring slot holds the wrong op");
        Some(s)
    }

    /// Reserves the slot for `op`, which must be `top + 1`, and returns it cleared for filling.
    fn push_slot(&mut self, op: u64) -> &mut Slot {
        assert_eq!(op, self.top + 1, "ops enter the ring densely");
        assert!(!self.is_full(), "ring overflow: caller must check is_full");
        self.top = op;
        let cap = self.slots.len() as u64;
        let s = &mut self.slots[(op % cap) as usize];
        s.op = op;
        s.bytes.clear();
        s
    }

    /// Stores a change built from caller entries (the primary's submit path).
    pub fn push_entries(&mut self, op: u64, entries: &[Entry<'_>]) -> &Slot {
        let s = self.push_slot(op);
        let mut cookie = 0u64;
        let (mut pubc, mut privc) = (0u16, 0u16);
        for e in entries.iter().filter(|e| !e.private) {
            encode_entry(&mut s.bytes, e);
            cookie |= 1 << e.section;
            pubc += 1;
        }
        s.public_len = s.bytes.len();
        for e in entries.iter().filter(|e| e.private) {
            encode_entry(&mut s.bytes, e);
            privc += 1;
        }
        s.cookie = cookie;
        s.public_count = pubc;
        s.private_count = privc;
        s.preapplied = false;
        s
    }

    /// Stores a received UPDATE (the standby's pending queue).
    pub fn push_update(&mut self, u: &UpdateView<'_>, preapplied: bool) {
        let s = self.push_slot(u.op());
        s.bytes.extend_from_slice(u.entry_bytes);
        s.public_len = u.public_len;
        s.public_count = u.fixed.public_count.get();
        s.private_count = u.fixed.private_count.get();
        s.cookie = u.cookie();
        s.preapplied = preapplied;
    }

    /// Drops every op `<= op` from the front.
    pub fn prune_through(&mut self, op: u64) {
        if op >= self.base {
            self.base = (op + 1).min(self.top + 1);
            if op > self.top {
                self.base = op + 1;
                self.top = op;
            }
        }
    }

    /// Drops every op `> op` from the back.
    pub fn truncate_after(&mut self, op: u64) {
        if op < self.top {
            self.top = op.max(self.base - 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn ent(k: u64) -> [Entry<'static>; 1] {
        [Entry {
            section: (k % 64) as u8,
            key: k,
            value: Some(b"v"),
            private: false,
        }]
    }

    #[test]
    fn dense_push_get_prune() {
        let mut r = OpRing::new(4);
        for op in 1..=4 {
            r.push_entries(op, &ent(op));
        }
        assert!(r.is_full());
        assert_eq!(r.get(3).unwrap().cookie, 1 << 3);
        r.prune_through(2);
        assert_eq!(r.len(), 2);
        assert!(r.get(2).is_none());
        r.push_entries(5, &ent(5));
        r.truncate_after(3);
        assert_eq!(r.top(), 3);
        assert!(r.get(5).is_none());
        r.prune_through(10);
        assert!(r.is_empty());
        assert_eq!(r.top(), 10);
        r.push_entries(11, &ent(11));
        assert_eq!(r.get(11).unwrap().op, 11);
    }

    #[derive(Debug, Clone)]
    enum Step {
        Push,
        Prune(u8),
        Truncate(u8),
    }

    proptest! {
        /// The ring behaves like a BTreeMap of ops restricted to a dense window.
        #[test]
        fn ring_matches_btreemap(steps in proptest::collection::vec(
            prop_oneof![Just(Step::Push), (0u8..8).prop_map(Step::Prune), (0u8..8).prop_map(Step::Truncate)], 1..200)) {
            let mut r = OpRing::new(8);
            let mut model: BTreeMap<u64, u64> = BTreeMap::new();
            let mut next = 1u64;
            for s in steps {
                match s {
                    Step::Push => {
                        if !r.is_full() {
                            r.push_entries(next, &ent(next));
                            model.insert(next, 1 << (next % 64));
                            next += 1;
                        }
                    }
                    Step::Prune(d) => {
                        let op = r.base() + d as u64 / 2;
                        let op = op.min(r.top());
                        r.prune_through(op);
                        model.retain(|k, _| *k > op);
                    }
                    Step::Truncate(d) => {
                        let op = r.top().saturating_sub(d as u64 / 2).max(r.base().saturating_sub(1));
                        r.truncate_after(op);
                        model.retain(|k, _| *k <= op);
                        next = r.top() + 1;
                    }
                }
                prop_assert_eq!(r.len(), model.len());
                for (op, cookie) in &model {
                    prop_assert_eq!(r.get(*op).map(|s| s.cookie), Some(*cookie));
                }
                prop_assert!(r.get(r.top() + 1).is_none());
            }
        }
    }
}
