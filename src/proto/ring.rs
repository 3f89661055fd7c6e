//! A fixed-capacity ring of ops indexed by op ID, with the ops' encoded entries in one byte log.
//!
//! The primary keeps its retention window here (for retransmission) and a standby keeps its
//! pending queue here [0047]. Ops are dense per channel, so an op's record is found in O(1) by
//! its distance from the ring's origin: matching a cumulative ack is a pointer move, not a
//! search.
//!
//! Why one log rather than a buffer per op: each change is encoded once, straight into the log,
//! and frames copy from there. The log holds each op as an UPDATE_RUN carries it (its entry
//! counts, then its entries), so a stretch of consecutive ops goes into a frame in one copy
//! ([`OpRing::run_stretch`]). In steady state the window is nearly empty at the end of every
//! turn (ops commit within it), and an empty ring restarts both its records and its log at their
//! front. So the lines a push writes and a send reads are the few at the front, warm in cache,
//! instead of a record and a separate buffer 16 Ki ops further on, both cold. The log grows (by
//! doubling, keeping what it holds) only when an op does not fit; a warmed ring does not
//! allocate.

use super::ids::{OpId, SectionMask};
use crate::wire::{Entry, EntryIter, UpdateView, copy_short, entry_wire_len, write_entry};

/// Bytes in front of each op's entries in the log: its public and private entry counts, a
/// byte each, as an UPDATE_RUN carries an op.
const OP_PREFIX_BYTES: usize = 2;

/// Where one op sits in the log, and what is known of it.
#[derive(Debug, Default, Clone, Copy)]
struct Record {
    op: OpId,
    cookie: SectionMask,
    /// Byte offset of the op in the log: its [`OP_PREFIX_BYTES`], then its entries.
    offset: u32,
    /// Byte length of the op in the log (prefix and entries).
    len: u32,
    /// Byte length of its public entries, at the front of its entries.
    public_len: u32,
    public_count: u16,
    private_count: u16,
    /// The op is already contained in a transferred snapshot: nothing to apply.
    preapplied: bool,
    /// Table ([`ChannelState::table_of`]) and key of the op's first write, for
    /// [`OpRing::first_write`]; [`NO_FIRST_WRITE`] when there is none to give (and for the
    /// primary's own ops).
    first_table: u8,
    first_key: u32,
}

/// `Record::first_table` of an op whose first write is not noted: no entries, a key past
/// `u32::MAX` (noting it in full would make every record a fifth larger), or an op the
/// primary stored itself.
const NO_FIRST_WRITE: u8 = u8::MAX;

const _: () = assert!(size_of::<Record>() == 40, "a record stays five words");
const _: () = assert!(crate::proto::state::PRIVATE_SECTION < NO_FIRST_WRITE as usize);

/// One retained op, borrowed from the ring.
#[derive(Debug, Clone, Copy)]
pub struct Slot<'a> {
    pub op: OpId,
    pub cookie: SectionMask,
    /// The op is already contained in a transferred snapshot: nothing to apply.
    pub preapplied: bool,
    pub public_count: u16,
    pub private_count: u16,
    /// Byte length of the public entries.
    pub public_len: usize,
    /// Encoded public entries, then encoded private entries.
    bytes: &'a [u8],
}

impl<'a> Slot<'a> {
    pub fn public(&self) -> (&'a [u8], u16) {
        (&self.bytes[..self.public_len], self.public_count)
    }
    pub fn private(&self) -> (&'a [u8], u16) {
        (&self.bytes[self.public_len..], self.private_count)
    }
    /// Its entries, public ones first (those after `public_count` come out private).
    pub fn entries(&self) -> EntryIter<'a> {
        // Entries stored in the log were validated when they arrived (or encoded by us), so
        // the iterator cannot fail.
        crate::wire::codec_entry_iter(self.bytes, self.public_count)
    }
}

/// First log size: a few turns' worth of small changes for one channel.
const INITIAL_LOG_BYTES: usize = 64 * 1024;

#[derive(Debug)]
pub struct OpRing {
    /// Power-of-two many records; op `op` sits at `(op - origin) & (len - 1)`.
    records: Vec<Record>,
    /// Ops the ring may hold (the window): `records.len()` rounded it up.
    capacity: usize,
    /// The op at record 0. Moved to the next op whenever the ring empties, so the records in
    /// use are the first few.
    origin: OpId,
    /// Lowest op held; the ring holds `base..=top` (empty when `top < base`). `base` is never
    /// zero (op 0 never exists), so `top` is at least `base - 1`.
    base: OpId,
    top: OpId,
    /// The ops' entries, in op order, circular: live bytes run from the base op's offset to
    /// `head`, wrapping at most once.
    log: Vec<u8>,
    /// Where the next op's entries go.
    head: usize,
    /// Size of the log when first needed.
    initial_log_bytes: usize,
}

impl OpRing {
    pub fn new(capacity: usize) -> Self {
        Self::with_initial_log(capacity, INITIAL_LOG_BYTES)
    }

    fn with_initial_log(capacity: usize, initial_log_bytes: usize) -> Self {
        assert!(capacity > 0);
        OpRing {
            initial_log_bytes,
            records: vec![Record::default(); capacity.next_power_of_two()],
            capacity,
            origin: OpId::FIRST,
            base: OpId::FIRST,
            top: OpId::ZERO,
            log: Vec::new(),
            head: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
    pub fn len(&self) -> usize {
        self.top
            .checked_sub(self.base)
            .map_or(0, |d| d as usize + 1)
    }
    pub fn is_empty(&self) -> bool {
        self.top < self.base
    }
    pub fn is_full(&self) -> bool {
        self.len() >= self.capacity
    }
    /// Highest op held, or `base - 1` when empty.
    pub fn top(&self) -> OpId {
        self.top
    }
    pub fn base(&self) -> OpId {
        self.base
    }

    /// The ops held, `base..=top`, in order.
    fn held(&self) -> impl Iterator<Item = OpId> + use<> {
        (self.base.get()..=self.top.get()).map(OpId::new)
    }

    /// Only for ops held (`op >= base >= origin`).
    fn index(&self, op: OpId) -> usize {
        (op.get() - self.origin.get()) as usize & (self.records.len() - 1)
    }

    /// Doubles the capacity, keeping every op held. Only the `OverrunBound` plant calls it: a
    /// correct primary reports backpressure at its window instead of growing memory.
    pub(crate) fn grow_for_injected_bug(&mut self) {
        let old = std::mem::take(&mut self.records);
        let old_mask = old.len() - 1;
        self.capacity *= 2;
        self.records = vec![Record::default(); 2 * old.len()];
        for op in self.held() {
            let r = old[(op.get() - self.origin.get()) as usize & old_mask];
            let i = self.index(op);
            self.records[i] = r;
        }
    }

    /// Empties the ring and makes `next` the next op it will accept. Op 0 never exists, so a
    /// `next` of zero is taken as [`OpId::FIRST`] (callers pass the op after one they hold).
    pub fn reset(&mut self, next: OpId) {
        let next = next.max(OpId::FIRST);
        self.base = next;
        self.top = next.prev().unwrap_or(OpId::ZERO);
        self.restart();
    }

    /// An empty ring starts its records and its log at their front again.
    fn restart(&mut self) {
        debug_assert!(self.is_empty());
        self.origin = self.base;
        self.head = 0;
    }

    #[inline]
    pub fn get(&self, op: OpId) -> Option<Slot<'_>> {
        if op < self.base || op > self.top {
            return None;
        }
        let r = &self.records[self.index(op)];
        assert_eq!(r.op, op, "ring record holds the wrong op");
        let (offset, len) = (r.offset as usize, r.len as usize);
        Some(Slot {
            op,
            cookie: r.cookie,
            preapplied: r.preapplied,
            public_count: r.public_count,
            private_count: r.private_count,
            public_len: r.public_len as usize,
            bytes: &self.log[offset + OP_PREFIX_BYTES..offset + len],
        })
    }

    /// Table and key of the first write of op `op`, noted when it was stored: what a prefetch
    /// ahead of the apply needs, without walking the op's entries in the log (the standby's
    /// two stages did, 155 of 2,196 instructions per change). `None` for an op not held,
    /// already in a transferred snapshot (nothing to apply), or whose first write is not
    /// noted ([`NO_FIRST_WRITE`]).
    #[inline]
    pub fn first_write(&self, op: OpId) -> Option<(usize, u64)> {
        if op < self.base || op > self.top {
            return None;
        }
        let r = &self.records[self.index(op)];
        assert_eq!(r.op, op, "ring record holds the wrong op");
        (!r.preapplied && r.first_table != NO_FIRST_WRITE)
            .then(|| (usize::from(r.first_table), u64::from(r.first_key)))
    }

    /// The longest stretch of ops from `from` (and below `end`) that an UPDATE_RUN can carry
    /// as the log holds them, in at most `max_bytes`: their bytes, in one piece, and how many
    /// ops. With `public_only` (for a client), an op with private entries ends the stretch,
    /// since a client must not get them; so does one with more than 255 entries of a kind (a
    /// run counts them in a byte), and the log's wrap. Empty when `from` is not held or does
    /// not qualify: the caller then sends it on its own.
    pub fn run_stretch(
        &self,
        from: OpId,
        end: OpId,
        public_only: bool,
        max_bytes: usize,
    ) -> (&[u8], u64) {
        if from < self.base {
            return (&[], 0);
        }
        let (mut start, mut at, mut count) = (0usize, 0usize, 0u64);
        let mut op = from;
        while op < end && op <= self.top {
            let r = &self.records[self.index(op)];
            let len = r.len as usize;
            let fits = r.public_count <= u16::from(u8::MAX)
                && r.private_count <= u16::from(u8::MAX)
                && !(public_only && r.private_count != 0);
            if count == 0 {
                (start, at) = (r.offset as usize, r.offset as usize);
            }
            if !fits || r.offset as usize != at || at + len - start > max_bytes {
                break;
            }
            at += len;
            count += 1;
            // Below `end`: there is an op after it.
            op = op.saturating_add(1);
        }
        (&self.log[start..at], count)
    }

    /// Reserves log for op `op`, which must be `top + 1`, with `len` bytes of entries, writes
    /// its prefix and its record (`op`, `offset` and `len` filled in here); returns the log
    /// offset of the entries.
    #[inline(always)]
    fn push_record(&mut self, len: usize, record: Record) -> usize {
        let op = record.op;
        assert_eq!(Some(op), self.top.next(), "ops enter the ring densely");
        assert!(!self.is_full(), "ring overflow: caller must check is_full");
        let offset = self.reserve(OP_PREFIX_BYTES + len);
        self.top = op;
        let i = self.index(op);
        self.records[i] = Record {
            offset: offset as u32,
            len: (OP_PREFIX_BYTES + len) as u32,
            ..record
        };
        // An op with more than 255 entries of a kind is never sent from the log as it lies
        // ([`OpRing::run_stretch`] skips it): its prefix is left unused.
        let prefix = [record.public_count as u8, record.private_count as u8];
        self.log[offset..offset + OP_PREFIX_BYTES].copy_from_slice(&prefix);
        offset + OP_PREFIX_BYTES
    }

    /// Finds `len` free bytes in the log for the op after `top`, growing the log if none.
    #[inline(always)]
    fn reserve(&mut self, len: usize) -> usize {
        if self.is_empty() {
            self.restart();
        }
        loop {
            let tail = (!self.is_empty()).then(|| self.records[self.index(self.base)].offset);
            let at = match tail.map(|t| t as usize) {
                // Live bytes wrapped (tail..end, then 0..head): fill up to short of the tail,
                // strictly, so that a full log never looks like an unwrapped one.
                Some(t) if self.head < t => (self.head + len < t).then_some(self.head),
                // Live bytes run tail..head (or none): append, or wrap to the front.
                _ if self.head + len <= self.log.len() => Some(self.head),
                Some(t) if len < t => Some(0),
                _ => None,
            };
            if let Some(at) = at {
                self.head = at + len;
                return at;
            }
            self.grow_log(len);
        }
    }

    /// At least doubles the log, moving the live ops to its front in op order.
    fn grow_log(&mut self, len: usize) {
        let live: usize = self
            .held()
            .map(|op| self.records[self.index(op)].len as usize)
            .sum();
        let size = (2 * self.log.len())
            .max(self.initial_log_bytes)
            .max((live + len).next_power_of_two());
        assert!(size <= u32::MAX as usize, "ring log beyond 4 GiB");
        let mut log = vec![0u8; size];
        let mut at = 0;
        for op in self.held() {
            let i = self.index(op);
            let r = &mut self.records[i];
            let (from, n) = (r.offset as usize, r.len as usize);
            log[at..at + n].copy_from_slice(&self.log[from..from + n]);
            r.offset = at as u32;
            at += n;
        }
        self.log = log;
        self.head = at;
    }

    /// Stores a change built from caller entries (the primary's submit path): each entry is
    /// encoded once, into the log, public entries first.
    pub fn push_entries(&mut self, op: OpId, entries: &[Entry<'_>]) {
        let (mut len, mut public_len, mut private_count) = (0, 0, 0);
        let mut cookie = SectionMask::EMPTY;
        for e in entries {
            let n = entry_wire_len(e);
            len += n;
            if e.private {
                private_count += 1;
            } else {
                public_len += n;
                cookie = cookie.with(u32::from(e.section));
            }
        }
        let record = Record {
            op,
            cookie,
            // A primary never applies from its own log: its changes' first writes go unnoted.
            first_table: NO_FIRST_WRITE,
            public_len: public_len as u32,
            // A change holds at most `u16::MAX` entries: checked at submit.
            public_count: (entries.len() - private_count) as u16,
            private_count: private_count as u16,
            ..Record::default()
        };
        let mut at = self.push_record(len, record);
        for e in entries.iter().filter(|e| !e.private) {
            at += write_entry(&mut self.log[at..], e);
        }
        if private_count > 0 {
            for e in entries.iter().filter(|e| e.private) {
                at += write_entry(&mut self.log[at..], e);
            }
        }
    }

    /// Stores a received UPDATE (the standby's pending queue). `first_write` is the table
    /// ([`ChannelState::table_of`]) and key of its first entry: the caller walks its entries
    /// anyway, and a wrong one would only misdirect a prefetch.
    pub fn push_update(
        &mut self,
        u: &UpdateView<'_>,
        preapplied: bool,
        first_write: Option<(usize, u64)>,
    ) {
        let (first_table, first_key) = match first_write.map(|(t, k)| (t, u32::try_from(k))) {
            // Table indexes are at most `PRIVATE_SECTION`, below `NO_FIRST_WRITE` (asserted).
            Some((table, Ok(key))) => (table as u8, key),
            _ => (NO_FIRST_WRITE, 0),
        };
        let record = Record {
            op: OpId::new(u.op()),
            cookie: SectionMask::new(u.cookie()),
            first_table,
            first_key,
            public_len: u.public_len as u32,
            public_count: u.fixed.public_count.get(),
            private_count: u.fixed.private_count.get(),
            preapplied,
            ..Record::default()
        };
        let offset = self.push_record(u.entry_bytes.len(), record);
        copy_short(
            &mut self.log[offset..offset + u.entry_bytes.len()],
            u.entry_bytes,
        );
    }

    /// Drops every op `<= op` from the front; past `top`, the ring is left empty with the op
    /// after `op` next. An `op` with no op after it (`u64::MAX`, beyond any op the core holds:
    /// those from the network are at most [`OpId::MAX`]) leaves the ring as it is.
    pub fn prune_through(&mut self, op: OpId) {
        if op >= self.base {
            let Some(after) = op.next() else { return };
            self.base = after;
            self.top = self.top.max(op);
            if self.is_empty() {
                self.restart();
            }
        }
    }

    /// Drops every op `> op` from the back.
    pub fn truncate_after(&mut self, op: OpId) {
        if op < self.top {
            // `base` is never zero.
            self.top = self.base.prev().map_or(op, |below| op.max(below));
            if self.is_empty() {
                self.restart();
            } else {
                let r = &self.records[self.index(self.top)];
                self.head = (r.offset + r.len) as usize;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::state::ChannelState;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn o(op: u64) -> OpId {
        OpId::new(op)
    }

    fn ent(k: u64) -> [Entry<'static>; 1] {
        const VALUES: [u8; 40] = [7; 40];
        [Entry {
            section: (k % 64) as u8,
            key: k,
            // Sizes vary by op, so the log wraps at different points.
            value: Some(&VALUES[..(k % 5 * 9) as usize]),
            private: false,
        }]
    }

    /// A received update of op `op` holding `e` alone.
    fn stored(r: &mut OpRing, op: u64, e: &Entry<'_>, preapplied: bool) {
        let mut bytes = Vec::new();
        crate::wire::encode_entry(&mut bytes, e);
        let view = UpdateView {
            fixed: crate::wire::UpdateFixed {
                channel: 0.into(),
                public_count: u16::from(!e.private).into(),
                private_count: u16::from(e.private).into(),
                op: op.into(),
                cookie: 0.into(),
            },
            flags: 0,
            entry_bytes: &bytes,
            public_len: if e.private { 0 } else { bytes.len() },
        };
        let first = (ChannelState::table_of(e), e.key);
        r.push_update(&view, preapplied, Some(first));
        assert_eq!(r.get(o(op)).unwrap().entries().next().as_ref(), Some(e));
    }

    #[test]
    fn a_stored_update_notes_its_first_write_for_the_prefetch() {
        let mut r = OpRing::new(8);
        let e = |section, key, private| Entry {
            section,
            key,
            value: Some(b"v"),
            private,
        };
        stored(&mut r, 1, &e(5, 77, false), false);
        stored(&mut r, 2, &e(5, 78, true), false);
        // Nothing to apply, so nothing to prefetch.
        stored(&mut r, 3, &e(6, 79, false), true);
        // Too wide to note in the record.
        stored(&mut r, 4, &e(7, 1 << 40, false), false);
        // The primary's own changes are never applied from its log.
        r.push_entries(o(5), &ent(5));
        assert_eq!(r.first_write(o(1)), Some((5, 77)));
        assert_eq!(
            r.first_write(o(2)),
            Some((crate::proto::state::PRIVATE_SECTION, 78))
        );
        for op in 3..=6 {
            assert_eq!(r.first_write(o(op)), None, "op {op}");
        }
        r.prune_through(o(1));
        assert_eq!(r.first_write(o(1)), None);
    }

    #[test]
    fn dense_push_get_prune() {
        let mut r = OpRing::new(4);
        for op in 1..=4 {
            r.push_entries(o(op), &ent(op));
        }
        assert!(r.is_full());
        assert_eq!(r.get(o(3)).unwrap().cookie, SectionMask::new(1 << 3));
        r.prune_through(o(2));
        assert_eq!(r.len(), 2);
        assert!(r.get(o(2)).is_none());
        r.push_entries(o(5), &ent(5));
        r.truncate_after(o(3));
        assert_eq!(r.top(), o(3));
        assert!(r.get(o(5)).is_none());
        r.prune_through(o(10));
        assert!(r.is_empty());
        assert_eq!(r.top(), o(10));
        r.push_entries(o(11), &ent(11));
        assert_eq!(r.get(o(11)).unwrap().op, o(11));
        // Past the last op there is, pruning leaves the ring as it is.
        r.prune_through(o(u64::MAX));
        assert_eq!((r.base(), r.top()), (o(11), o(11)));
        // Op 0 never exists: a reset to it is a reset to the first op.
        r.reset(OpId::ZERO);
        assert!(r.is_empty());
        assert_eq!((r.base(), r.top()), (OpId::FIRST, OpId::ZERO));
    }

    /// What an UPDATE_RUN carries for the slot's op: its counts, then its entries (public only
    /// for a client).
    fn run_op_bytes(s: &Slot<'_>, public_only: bool) -> Vec<u8> {
        let private = if public_only { 0 } else { s.private_count };
        let mut b = vec![s.public_count as u8, private as u8];
        b.extend_from_slice(s.public().0);
        if !public_only {
            b.extend_from_slice(s.private().0);
        }
        b
    }

    proptest! {
        /// A stretch is exactly the ops' run encodings back to back, within the byte limit,
        /// holds no private entries for a client, and is cut only where it must be.
        #[test]
        fn run_stretch_is_the_ops_as_a_run_carries_them(
            privates in proptest::collection::vec(any::<bool>(), 1..40),
            window in 1u64..12,
            from in 0usize..40,
            max_bytes in 0usize..400,
            public_only in any::<bool>(),
        ) {
            // A small log wraps, so stretches also end at the wrap.
            let mut r = OpRing::with_initial_log(64, 256);
            const VALUE: [u8; 9] = [3; 9];
            for (i, &private) in privates.iter().enumerate() {
                let op = i as u64 + 1;
                let mut e = vec![Entry { section: (op % 64) as u8, key: op, value: Some(&VALUE), private: false }];
                if private {
                    e.push(Entry { section: 0, key: op, value: None, private: true });
                }
                r.push_entries(o(op), &e);
                // Only the last `window` ops stay: the log wraps instead of growing.
                if op > window {
                    r.prune_through(o(op - window));
                }
            }
            let end = r.top().next().unwrap();
            let from = o(from as u64 + 1);
            let (bytes, count) = r.run_stretch(from, end, public_only, max_bytes);
            prop_assert!(bytes.len() <= max_bytes);
            let mut expect = Vec::new();
            for k in 0..count {
                let s = r.get(from.saturating_add(k)).expect("a stretch holds only held ops");
                prop_assert!(!(public_only && s.private_count > 0), "a client gets no private entries");
                expect.extend(run_op_bytes(&s, public_only));
            }
            prop_assert_eq!(bytes, &expect[..]);
            // The first op is left out only when it is not held, must not go to a client, or
            // does not fit.
            if count == 0 && let Some(s) = r.get(from) {
                let encoded = run_op_bytes(&s, public_only).len();
                prop_assert!((public_only && s.private_count > 0) || encoded > max_bytes);
            }
        }
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
            // A log of 64 bytes holds one or two ops: it wraps and grows as the test runs.
            let mut r = OpRing::with_initial_log(8, 64);
            let mut model: BTreeMap<u64, u64> = BTreeMap::new();
            let mut next = 1u64;
            for s in steps {
                match s {
                    Step::Push => {
                        if !r.is_full() {
                            r.push_entries(o(next), &ent(next));
                            model.insert(next, 1 << (next % 64));
                            next += 1;
                        }
                    }
                    Step::Prune(d) => {
                        let op = r.base().get() + d as u64 / 2;
                        let op = op.min(r.top().get());
                        r.prune_through(o(op));
                        model.retain(|k, _| *k > op);
                    }
                    Step::Truncate(d) => {
                        let op = r.top().get().saturating_sub(d as u64 / 2).max(r.base().get().saturating_sub(1));
                        r.truncate_after(o(op));
                        model.retain(|k, _| *k <= op);
                        next = r.top().get() + 1;
                    }
                }
                prop_assert_eq!(r.len(), model.len());
                for (op, cookie) in &model {
                    let slot = r.get(o(*op));
                    prop_assert_eq!(slot.map(|s| s.cookie.get()), Some(*cookie));
                    // The entries read back are the ones pushed, whatever wrapped or moved.
                    let back: Vec<(u64, usize)> = slot.unwrap().entries()
                        .map(|e| (e.key, e.value.map_or(0, <[u8]>::len))).collect();
                    prop_assert_eq!(back, vec![(*op, (*op % 5 * 9) as usize)]);
                }
                prop_assert!(r.get(r.top().next().unwrap()).is_none());
            }
        }
    }
}
