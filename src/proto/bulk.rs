//! Reliable bulk streams over lossy datagrams: selective replays to clients and full state
//! transfers to rejoining standbys.
//!
//! The sender snapshots what it must send when the stream starts (so later changes to the live
//! state cannot tear it), numbers every item, keeps a bounded window in flight, and rewinds to the
//! receiver's acknowledged index when progress stalls. The receiver accepts only the next index,
//! so duplicates and reordering are harmless.

use super::state::{ChannelState, PRIVATE_SECTION};
use super::{Epoch, OpId, SectionMask};
use crate::wire::{
    BULK_FLAG_PRIVATE, BulkAck, BulkBegin, BulkEnd, BulkEntry, FrameBuilder, HistoryBody, Kind,
    SECTIONS,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkKind {
    Replay,
    Xfer,
}

impl BulkKind {
    fn kinds(self) -> (Kind, Kind, Kind) {
        match self {
            BulkKind::Replay => (Kind::ReplayBegin, Kind::ReplayEntry, Kind::ReplayEnd),
            BulkKind::Xfer => (Kind::XferBegin, Kind::XferEntry, Kind::XferEnd),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Item {
    History {
        epoch: Epoch,
        start_op: OpId,
    },
    Entry {
        section: u8,
        private: bool,
        key: u64,
        off: u32,
        len: u32,
    },
}

/// Sending side of one stream.
#[derive(Debug)]
pub struct BulkTx {
    pub kind: BulkKind,
    pub stream: u32,
    pub channel: u32,
    pub sections: SectionMask,
    pub base_op: OpId,
    pub acked_op: OpId,
    items: Vec<Item>,
    data: Vec<u8>,
    next_send: u32,
    acked: u32,
    need_begin: bool,
    pub done: bool,
    last_progress_us: u64,
    /// Wire bytes of entries (headers and values) in the snapshot, sent once.
    pub payload_bytes: u64,
    /// Entries retransmitted after a rewind.
    pub resent_items: u64,
}

impl BulkTx {
    /// Snapshots the sections of `mask` (and the private section when `private`) of `state`.
    #[allow(clippy::too_many_arguments)]
    pub fn snapshot(
        kind: BulkKind,
        stream: u32,
        channel: u32,
        state: &ChannelState,
        mask: SectionMask,
        private: bool,
        base_op: OpId,
        acked_op: OpId,
        history: impl Iterator<Item = (Epoch, OpId)>,
        now_us: u64,
    ) -> BulkTx {
        let mut items: Vec<Item> = history
            .map(|(epoch, start_op)| Item::History { epoch, start_op })
            .collect();
        let mut data = Vec::with_capacity(state.value_bytes(mask) as usize);
        let sections = (0..SECTIONS)
            .filter(|&s| mask.contains(s as u32))
            .map(|s| (s, false));
        let privs = private.then_some((PRIVATE_SECTION, true));
        for (s, is_private) in sections.chain(privs) {
            for (key, value) in state.entries(s) {
                let off = data.len() as u32;
                data.extend_from_slice(value);
                let section = if is_private { 0 } else { s as u8 };
                items.push(Item::Entry {
                    section,
                    private: is_private,
                    key,
                    off,
                    len: value.len() as u32,
                });
            }
        }
        let payload_bytes = items
            .iter()
            .map(|i| match i {
                Item::Entry { len, .. } => (size_of::<BulkEntry>() + 4) as u64 + *len as u64,
                Item::History { .. } => (size_of::<HistoryBody>() + 4) as u64,
            })
            .sum();
        BulkTx {
            kind,
            stream,
            channel,
            sections: mask,
            base_op,
            acked_op,
            items,
            data,
            next_send: 0,
            acked: 0,
            need_begin: true,
            done: false,
            last_progress_us: now_us,
            payload_bytes,
            resent_items: 0,
        }
    }

    pub fn acked_items(&self) -> u32 {
        self.acked
    }

    /// Items sent beyond the receiver's acknowledged index: the window bounds it, and the
    /// simulator checks that bound (nothing here asserts it).
    pub fn in_flight_len(&self) -> u32 {
        self.next_send.min(self.total()).saturating_sub(self.acked)
    }

    pub fn total(&self) -> u32 {
        self.items.len() as u32
    }

    pub fn entry_count(&self) -> u64 {
        self.items
            .iter()
            .filter(|i| matches!(i, Item::Entry { .. }))
            .count() as u64
    }

    /// Pushes what the window allows; returns false when the frame filled up.
    pub fn fill(&mut self, fb: &mut FrameBuilder<'_>, window: u32) -> bool {
        if self.done {
            return true;
        }
        let (kb, ke, kend) = self.kind.kinds();
        if self.need_begin {
            let b = BulkBegin {
                channel: self.channel.into(),
                stream: self.stream.into(),
                sections: self.sections.get().into(),
                base_op: self.base_op.get().into(),
                acked_op: self.acked_op.get().into(),
            };
            if !fb.push(kb, &b) {
                return false;
            }
            self.need_begin = false;
        }
        let limit = self.total().min(self.acked.saturating_add(window));
        while self.next_send < limit {
            let pushed = match self.items[self.next_send as usize] {
                Item::History { epoch, start_op } => fb.push(
                    Kind::XferHistory,
                    &HistoryBody {
                        channel: self.channel.into(),
                        stream: self.stream.into(),
                        index: self.next_send.into(),
                        reserved: 0.into(),
                        epoch: epoch.get().into(),
                        start_op: start_op.get().into(),
                    },
                ),
                Item::Entry {
                    section,
                    private,
                    key,
                    off,
                    len,
                } => {
                    let value = &self.data[off as usize..(off + len) as usize];
                    let e = BulkEntry {
                        channel: self.channel.into(),
                        stream: self.stream.into(),
                        index: self.next_send.into(),
                        section,
                        flags: if private { BULK_FLAG_PRIVATE } else { 0 },
                        value_len: (len as u16).into(),
                        key: key.into(),
                    };
                    fb.push_tail(ke, &e, value)
                }
            };
            if !pushed {
                return false;
            }
            self.next_send += 1;
        }
        if self.next_send == self.total() {
            let end = BulkEnd {
                channel: self.channel.into(),
                stream: self.stream.into(),
                total: self.total().into(),
                reserved: 0.into(),
                base_op: self.base_op.get().into(),
            };
            if !fb.push(kend, &end) {
                return false;
            }
            // END goes out again only after a rewind.
            self.next_send = self.total() + 1;
        }
        true
    }

    /// Whether `fill` would push anything now.
    pub fn has_output(&self, window: u32) -> bool {
        let limit = self.total().min(self.acked.saturating_add(window));
        !self.done && (self.need_begin || self.next_send < limit || self.next_send == self.total())
    }

    pub fn on_ack(&mut self, ack: &BulkAck, now_us: u64) {
        if ack.stream.get() != self.stream {
            return;
        }
        let next = ack.next_index.get().min(self.total());
        if next > self.acked {
            self.acked = next;
            self.last_progress_us = now_us;
        } else if next < self.acked && ack.done.get() == 0 {
            // The receiver lost its progress (it restarted the stream): go back for it. A stale
            // reordered ack costs a few retransmissions, nothing more.
            self.acked = next;
            self.next_send = self.next_send.min(next);
            self.need_begin |= next == 0;
        }
        if ack.done.get() == 1 && next == self.total() {
            self.done = true;
        }
    }

    /// Rewinds to the acknowledged index when nothing progressed for `rto_us`.
    pub fn on_tick(&mut self, now_us: u64, rto_us: u64) {
        if self.done || now_us < self.last_progress_us + rto_us {
            return;
        }
        // A receiver may ack past what we sent (a lie, or a stream it restarted): no underflow.
        self.resent_items += self.next_send.min(self.total()).saturating_sub(self.acked) as u64;
        self.next_send = self.acked;
        self.need_begin = true;
        self.last_progress_us = now_us;
    }
}

/// Whether a BEGIN of `stream` is older than `newest`, the newest stream begun in this epoch: a
/// primary numbers its streams in increasing order (they wrap: older is a negative difference
/// as a signed 32-bit number), so an older one is a stream it replaced, still in flight.
/// Taking it after the newer one finished would roll the channel back.
pub fn is_stale_stream(stream: u32, newest: Option<u32>) -> bool {
    newest.is_some_and(|n| super::ids::serial_precedes(stream, n))
}

/// Receiving side of one stream.
#[derive(Debug, Clone, Copy)]
pub struct BulkRx {
    pub stream: u32,
    pub sender: u32,
    pub sections: SectionMask,
    pub base_op: OpId,
    pub acked_op: OpId,
    pub next_index: u32,
    pub ack_dirty: bool,
}

impl BulkRx {
    /// The receiving side of the stream `b` opens; `None` when its op IDs are out of range
    /// (the receiver does `op + 1` on them), for the caller to count.
    pub fn begin(b: &BulkBegin, sender: u32) -> Option<BulkRx> {
        let base_op = OpId::from_wire(b.base_op.get())?;
        let acked_op = OpId::from_wire(b.acked_op.get())?;
        Some(BulkRx {
            stream: b.stream.get(),
            sender,
            sections: SectionMask::new(b.sections.get()),
            base_op,
            acked_op,
            next_index: 0,
            ack_dirty: true,
        })
    }

    /// True when item `index` of `stream` is the next one to take.
    pub fn accepts(&mut self, stream: u32, index: u32) -> bool {
        if stream != self.stream {
            return false;
        }
        self.ack_dirty = true;
        if index == self.next_index {
            self.next_index += 1;
            true
        } else {
            false
        }
    }

    /// True when END completes the stream.
    pub fn ends(&mut self, end: &BulkEnd) -> bool {
        if end.stream.get() != self.stream {
            return false;
        }
        self.ack_dirty = true;
        end.total.get() == self.next_index
    }

    pub fn ack(&self, channel: u32, done: bool) -> BulkAck {
        BulkAck {
            channel: channel.into(),
            stream: self.stream.into(),
            next_index: self.next_index.into(),
            done: (done as u32).into(),
        }
    }
}
