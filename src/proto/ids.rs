//! What each protocol number is: an [`Epoch`], an [`OpId`] or a [`SectionMask`].
//!
//! All three travel as plain `u64`s on the wire, and most of them reach the core from the
//! network, so any of them may be a lie. Wrapping them keeps an epoch from being added to an
//! op ID by accident, and puts the arithmetic the protocol does on them in one place, checked:
//! an operation that would overflow or lose bits returns `None` instead of wrapping or
//! panicking, and the caller counts the value it came from as a rejection.
//!
//! Each type is `#[repr(transparent)]`, serializes as the plain number (`#[serde(transparent)]`)
//! and prints with `{:?}` exactly as the `u64` did, so logs, traces and JSON are unchanged.

use std::fmt;

/// Whether `a` comes before `b` as 32-bit serial numbers (RFC 1982: a negative difference as a
/// signed number), for numbers that only grow but wrap: a primary's stream IDs, a daemon's boot
/// IDs (its start time's low 32 bits in µs).
pub fn serial_precedes(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// Which control unit's term an update, heartbeat or decision belongs to.
///
/// An epoch is a failover counter with the index of the control unit that owns it (its place
/// in the topology's priority list) in the low byte, so no two control units can ever claim the
/// same epoch, and comparing two epochs compares their counters first.
#[repr(transparent)]
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Epoch(u64);

impl Epoch {
    /// "No epoch yet": a node without state (a fresh client, a joining control unit).
    pub const ZERO: Epoch = Epoch(0);

    /// The epoch every node starts in: counter 1, owned by control unit 0 (the first primary).
    pub const INITIAL: Epoch = Epoch(1 << Self::OWNER_BITS);

    /// Bits of the owner's index.
    const OWNER_BITS: u32 = 8;

    /// Control units an epoch can name as its owner.
    pub const MAX_OWNERS: usize = 1 << Self::OWNER_BITS;

    /// Largest counter accepted from the network: far beyond any real number of failovers,
    /// and far enough below the largest counter an epoch can hold that counting up from it
    /// can never fail.
    pub const MAX_COUNTER: u64 = 1 << 48;

    /// The epoch of failover `counter`, owned by the control unit at `owner_index`. `None`
    /// when the counter does not fit beside the owner's byte or the index does not fit in it:
    /// no bit of either is ever lost.
    pub fn new(counter: u64, owner_index: usize) -> Option<Epoch> {
        if counter > u64::MAX >> Self::OWNER_BITS || owner_index >= Self::MAX_OWNERS {
            return None;
        }
        Some(Epoch((counter << Self::OWNER_BITS) | owner_index as u64))
    }

    /// An epoch as it came in a frame header or a message: `None` when its counter is past
    /// [`Epoch::MAX_COUNTER`], a lie no failover count reaches (and on which counting up could
    /// overflow).
    pub fn from_wire(raw: u64) -> Option<Epoch> {
        let e = Epoch(raw);
        (e.counter() <= Self::MAX_COUNTER).then_some(e)
    }

    /// The raw number as it goes on the wire. Also what trusted local sources use
    /// ([`Epoch::from`]): a persisted epoch, the simulator's own bookkeeping.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// How many failovers led to this epoch.
    pub const fn counter(self) -> u64 {
        self.0 >> Self::OWNER_BITS
    }

    /// The priority index of the control unit that owns this epoch.
    pub const fn owner_index(self) -> usize {
        (self.0 & (Self::MAX_OWNERS as u64 - 1)) as usize
    }

    /// The epoch `owner_index` claims when it takes over after this one: the next counter.
    /// `None` when the counter cannot count up any further.
    pub fn next_counter(self, owner_index: usize) -> Option<Epoch> {
        Epoch::new(self.counter().checked_add(1)?, owner_index)
    }
}

impl From<u64> for Epoch {
    /// Unchecked: for numbers that did not come from the network (use [`Epoch::from_wire`]
    /// for those).
    fn from(raw: u64) -> Epoch {
        Epoch(raw)
    }
}

impl From<Epoch> for u64 {
    fn from(e: Epoch) -> u64 {
        e.0
    }
}

/// As the bare `u64` printed, so that `{:?}` of events and decisions reads as before.
impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// Hex, owner in the last two digits: `0x301` is counter 3 owned by control unit 1.
impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::LowerHex for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

/// The position of an op in one channel's dense sequence (1, 2, 3, ...; 0 is "none yet").
///
/// Op IDs come back from the network in acks, nacks, answers and state transfers, so stepping
/// from one to the next is checked ([`OpId::next`]) rather than a bare `+ 1`.
#[repr(transparent)]
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct OpId(u64);

impl OpId {
    /// "No op yet": the position of a channel before its first op.
    pub const ZERO: OpId = OpId(0);

    /// The first op of a channel.
    pub const FIRST: OpId = OpId(1);

    /// Largest op ID accepted from the network in a bulk stream or history item: far beyond
    /// any real count, and stepping on from it can never overflow.
    pub const MAX: OpId = OpId(1 << 62);

    pub const fn new(raw: u64) -> OpId {
        OpId(raw)
    }

    /// An op ID as it came in a message: `None` above [`OpId::MAX`].
    pub fn from_wire(raw: u64) -> Option<OpId> {
        (raw <= Self::MAX.0).then_some(OpId(raw))
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    /// The op after this one, `None` at `u64::MAX`.
    pub fn next(self) -> Option<OpId> {
        self.0.checked_add(1).map(OpId)
    }

    /// The op before this one, `None` at zero.
    pub fn prev(self) -> Option<OpId> {
        self.0.checked_sub(1).map(OpId)
    }

    /// How many ops lie after `earlier` up to and including `self`; `None` when `earlier` is
    /// above `self`.
    pub fn checked_sub(self, earlier: OpId) -> Option<u64> {
        self.0.checked_sub(earlier.0)
    }

    /// The op `ops` after this one, or the largest ID there is: for bounds ("at most this
    /// far ahead") that are then clamped to an op that exists.
    #[must_use]
    pub fn saturating_add(self, ops: u64) -> OpId {
        OpId(self.0.saturating_add(ops))
    }

    /// The ops after this one up to and including `through`, in order (none when `through` is
    /// not above it). Never overflows, whatever the two IDs are.
    pub fn range_after(self, through: OpId) -> impl DoubleEndedIterator<Item = OpId> {
        (self.0..through.0.max(self.0)).map(|op| OpId(op + 1))
    }

    /// Whether it is a valid ID for an op that exists: 1 to [`OpId::MAX`].
    pub fn is_valid(self) -> bool {
        (1..=Self::MAX.0).contains(&self.0)
    }
}

impl From<u64> for OpId {
    fn from(raw: u64) -> OpId {
        OpId(raw)
    }
}

impl From<OpId> for u64 {
    fn from(op: OpId) -> u64 {
        op.0
    }
}

/// As the bare `u64` printed, so that `{:?}` of events and decisions reads as before.
impl fmt::Debug for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A set of a channel's state sections, one bit per section: which sections an op touched
/// (its cookie), or which a replay resets.
///
/// Masks from the network (cookies, replay headers) may have any bit set; the set operations
/// here are total, so a stray bit never panics, and [`SectionMask::contains`] of a section past
/// the 64 bits is simply false.
#[repr(transparent)]
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct SectionMask(u64);

impl SectionMask {
    pub const EMPTY: SectionMask = SectionMask(0);

    /// Every section, the private one too (a full replay or transfer).
    pub const ALL: SectionMask = SectionMask(u64::MAX);

    pub const fn new(bits: u64) -> SectionMask {
        SectionMask(bits)
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    /// Whether `section` is in the set (false for a section past the mask's 64 bits).
    pub fn contains(self, section: u32) -> bool {
        section < u64::BITS && self.0 & (1 << section) != 0
    }

    /// The set with `section` added (unchanged for a section past the mask's 64 bits).
    #[must_use]
    pub fn with(self, section: u32) -> SectionMask {
        if section < u64::BITS {
            SectionMask(self.0 | (1 << section))
        } else {
            self
        }
    }

    #[must_use]
    pub const fn union(self, other: SectionMask) -> SectionMask {
        SectionMask(self.0 | other.0)
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The sections of this set that are not in `other`.
    #[must_use]
    pub const fn difference(self, other: SectionMask) -> SectionMask {
        SectionMask(self.0 & !other.0)
    }

    /// The set without its highest section (empty stays empty).
    #[must_use]
    pub const fn without_highest(self) -> SectionMask {
        match self.0 {
            0 => self,
            b => SectionMask(b & !(1 << (63 - b.leading_zeros()))),
        }
    }

    /// How many sections are in the set.
    pub const fn count(self) -> u32 {
        self.0.count_ones()
    }
}

impl From<u64> for SectionMask {
    fn from(bits: u64) -> SectionMask {
        SectionMask(bits)
    }
}

impl From<SectionMask> for u64 {
    fn from(m: SectionMask) -> u64 {
        m.0
    }
}

impl std::ops::BitOr for SectionMask {
    type Output = SectionMask;
    fn bitor(self, other: SectionMask) -> SectionMask {
        self.union(other)
    }
}

impl std::ops::BitOrAssign for SectionMask {
    fn bitor_assign(&mut self, other: SectionMask) {
        *self = self.union(other);
    }
}

/// As the bare `u64` printed, so that `{:?}` of events and decisions reads as before.
impl fmt::Debug for SectionMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// Hex, one bit per section, as logs have always shown masks.
impl fmt::Display for SectionMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::LowerHex for SectionMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

/// The wire decoder bounds the op IDs it computes for UPDATE_RUN by the same limit as every
/// other op ID from the network (it cannot name `OpId`, which lives above it).
const _: () = assert!(OpId::MAX.0 == crate::wire::MAX_RUN_OP);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_parts() {
        let e = Epoch::new(3, 1).unwrap();
        assert_eq!((e.get(), e.counter(), e.owner_index()), (0x301, 3, 1));
        assert_eq!(Epoch::INITIAL, Epoch::new(1, 0).unwrap());
        assert_eq!(format!("{e}"), "0x301");
        assert_eq!(format!("{e:#x} {e:?}"), "0x301 769");
        assert!(Epoch::new(3, 0) < Epoch::new(3, 1));
        assert!(Epoch::new(3, 5) < Epoch::new(4, 0));
    }

    #[test]
    fn epoch_never_loses_bits() {
        assert_eq!(Epoch::new(0, 256), None);
        assert_eq!(Epoch::new(1 << 56, 0), None);
        let top = Epoch::new(u64::MAX >> 8, 255).unwrap();
        assert_eq!(top.get(), u64::MAX);
        assert_eq!(top.next_counter(0), None);
        assert_eq!(Epoch::new(9, 0).unwrap().next_counter(1), Epoch::new(10, 1));
    }

    #[test]
    fn epoch_from_wire_range() {
        let max = Epoch::new(Epoch::MAX_COUNTER, 7).unwrap();
        assert_eq!(Epoch::from_wire(max.get()), Some(max));
        let over = Epoch::new(Epoch::MAX_COUNTER + 1, 0).unwrap();
        assert_eq!(Epoch::from_wire(over.get()), None);
        assert_eq!(Epoch::from_wire(u64::MAX), None);
        assert!(max.next_counter(255).is_some());
    }

    #[test]
    fn op_id_checked() {
        assert_eq!(OpId::new(u64::MAX).next(), None);
        assert_eq!(OpId::new(4).next(), Some(OpId::new(5)));
        assert_eq!(OpId::ZERO.prev(), None);
        assert_eq!(OpId::new(7).checked_sub(OpId::new(3)), Some(4));
        assert_eq!(OpId::new(3).checked_sub(OpId::new(7)), None);
        assert_eq!(OpId::from_wire(1 << 62), Some(OpId::MAX));
        assert_eq!(OpId::from_wire((1 << 62) + 1), None);
        assert!(OpId::MAX.next().is_some());
        assert!(!OpId::ZERO.is_valid() && OpId::FIRST.is_valid() && OpId::MAX.is_valid());
        assert!(!OpId::new((1 << 62) + 1).is_valid());
        let ops = |a: u64, b: u64| OpId::new(a).range_after(OpId::new(b)).map(OpId::get);
        assert_eq!(ops(3, 6).collect::<Vec<_>>(), vec![4, 5, 6]);
        assert_eq!(ops(6, 6).count() + ops(7, 6).count(), 0);
        assert_eq!(
            ops(u64::MAX - 1, u64::MAX).collect::<Vec<_>>(),
            vec![u64::MAX]
        );
        assert_eq!(
            OpId::new(u64::MAX - 1).saturating_add(5),
            OpId::new(u64::MAX)
        );
        assert_eq!(format!("{} {:?}", OpId::new(12), OpId::new(12)), "12 12");
    }

    #[test]
    fn section_mask_ops() {
        let m = SectionMask::EMPTY.with(0).with(5);
        assert!(m.contains(5) && m.contains(0) && !m.contains(1));
        assert!(!m.contains(64) && !SectionMask::new(u64::MAX).contains(200));
        assert_eq!(m.with(64), m);
        assert_eq!(m.count(), 2);
        assert!(SectionMask::EMPTY.is_empty() && !m.is_empty());
        assert_eq!(m | SectionMask::new(2), SectionMask::new(0x23));
        assert_eq!(format!("{m} {m:#x} {m:?}"), "0x21 0x21 33");
        assert_eq!(m.difference(SectionMask::new(1)), SectionMask::new(0x20));
        assert_eq!(m.difference(SectionMask::ALL), SectionMask::EMPTY);
        assert_eq!(m.without_highest(), SectionMask::new(1));
        assert_eq!(
            SectionMask::ALL.without_highest(),
            SectionMask::new(u64::MAX >> 1)
        );
        assert_eq!(SectionMask::EMPTY.without_highest(), SectionMask::EMPTY);
    }

    #[test]
    fn serialize_as_plain_numbers() {
        let j = serde_json::to_string(&(Epoch::INITIAL, OpId::new(5), SectionMask::new(3)));
        assert_eq!(j.unwrap(), "[256,5,3]");
    }
}
