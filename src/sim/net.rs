//! The simulated network: per-seed loss, duplication, delay with jitter (which reorders), and
//! partitions. Deterministic for a seed.
//!
//! Beyond those, and only where the seed's [`super::FaultKinds`] switch them on: one-way cuts
//! (a→b dropped while b→a flows), delay spikes of one to five heartbeat intervals (single
//! datagrams, or every datagram of a link for a while), corrupted datagrams (truncated, garbage,
//! or a bit flipped in a header field the frame decoder checks), and a lying line card whose
//! outgoing frames are rewritten, well formed, to say false things about its own channels.
//! A switched-off kind draws nothing from the seed's generator, so the other draws stay where
//! they were.

use crate::proto::NodeId;
use crate::rng::SplitMix64;
use crate::wire::{
    BulkEntry, FrameBuilder, FrameHeader, FrameReader, HB_FLAG_NEEDS_TRANSFER, HEADER_BYTES, Kind,
    LA_FLAG_UNKNOWN, MAGIC, MIN_FRAME_BYTES, MSG_HEADER_BYTES, Msg, MsgHeader, VERSION,
    entry_head_offsets,
};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::mem::offset_of;

#[derive(Debug, Clone, Copy)]
pub struct NetProfile {
    pub loss: f64,
    pub duplicate: f64,
    pub base_delay_us: u64,
    pub jitter_us: u64,
    /// Chance that one datagram is held back by 1–5 heartbeat intervals (0 = never).
    pub spike: f64,
    /// Chance that one datagram is mangled (truncated or a checked header bit flipped).
    pub corrupt: f64,
    /// Chance that a send is followed by a garbage datagram on the same link.
    pub garbage: f64,
}

impl NetProfile {
    pub fn clean() -> Self {
        NetProfile {
            loss: 0.0,
            duplicate: 0.0,
            base_delay_us: 50,
            jitter_us: 50,
            spike: 0.0,
            corrupt: 0.0,
            garbage: 0.0,
        }
    }

    pub fn draw(rng: &mut SplitMix64) -> Self {
        NetProfile {
            loss: rng.unit() * 0.30,
            duplicate: rng.unit() * 0.10,
            base_delay_us: rng.range(20, 500),
            jitter_us: rng.range(0, 3000),
            spike: 0.0,
            corrupt: 0.0,
            garbage: 0.0,
        }
    }
}

/// A datagram in flight: its delivery time and send sequence (which orders datagrams due at
/// the same time; unique, so it decides every tie), and its slot in `Net::slots`. The heap
/// moves only these 24 bytes; the datagram stays put in its slot.
type InFlight = Reverse<(u64, u64, u32)>;

/// A datagram's route and bytes while it is in flight.
#[derive(Debug, Default)]
struct Slot {
    src: NodeId,
    dst: NodeId,
    bytes: Vec<u8>,
}

/// A cut link: `a`→`b` (and `b`→`a` unless `one_way`) is dropped until `until`.
#[derive(Debug, Clone, Copy)]
struct Cut {
    a: NodeId,
    b: NodeId,
    until: u64,
    one_way: bool,
}

impl Cut {
    fn blocks(&self, src: NodeId, dst: NodeId, now_us: u64) -> bool {
        now_us < self.until
            && ((self.a == src && self.b == dst)
                || (!self.one_way && self.a == dst && self.b == src))
    }
}

/// A slow link: every datagram `src`→`dst` sent before `until` is held back by an extra
/// `lo..=hi` µs (drawn per datagram, so they also reorder among themselves).
#[derive(Debug, Clone, Copy)]
struct Slow {
    src: NodeId,
    dst: NodeId,
    until: u64,
    lo: u64,
    hi: u64,
}

/// A line card that lies, in well-formed frames, about its own channels: each message it sends
/// is rewritten with chance `p` (acks of ops it never applied, wrong LAST-APPLIED positions and
/// cookies, false replay progress, false transfer requests). The client state machine itself
/// stays honest; only what leaves it is false.
#[derive(Debug, Clone, Copy)]
pub struct Liar {
    pub id: NodeId,
    pub p: f64,
    /// Lies until the end of the fault phase.
    pub lying: bool,
}

/// Counters of what the extra fault kinds did, copied into the run's report.
#[derive(Debug, Clone, Copy, Default)]
pub struct FaultCounts {
    pub spiked: u64,
    pub truncated: u64,
    pub bit_flips: u64,
    pub garbage: u64,
    pub lies: u64,
}

#[derive(Debug)]
pub struct Net {
    pub profile: NetProfile,
    queue: BinaryHeap<InFlight>,
    /// The datagrams in flight, by the slot the queue names; `free_slots` lists the empty ones.
    slots: Vec<Slot>,
    free_slots: Vec<u32>,
    seq: u64,
    /// Links that cannot carry datagrams, until the given time. Cuts that have run out (they
    /// block nothing once `until` has passed, and the clock only moves on) are dropped once
    /// the clock reaches `next_cut_end`, the earliest `until` among them.
    cuts: Vec<Cut>,
    next_cut_end: u64,
    slow: Vec<Slow>,
    /// The unit of a delay spike: the protocol's heartbeat interval.
    pub heartbeat_us: u64,
    pub liar: Option<Liar>,
    pub counts: FaultCounts,
    /// Per-datagram fault notes for the verbose trace (time, line); filled only when `notes_on`.
    pub notes: Vec<(u64, String)>,
    pub notes_on: bool,
    pub sent: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pool: Vec<Vec<u8>>,
    scratch: Vec<u8>,
}

impl Net {
    pub fn new(profile: NetProfile) -> Self {
        Net {
            profile,
            queue: BinaryHeap::new(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            seq: 0,
            cuts: Vec::new(),
            next_cut_end: u64::MAX,
            slow: Vec::new(),
            heartbeat_us: 10_000,
            liar: None,
            counts: FaultCounts::default(),
            notes: Vec::new(),
            notes_on: false,
            sent: 0,
            dropped: 0,
            duplicated: 0,
            pool: Vec::new(),
            scratch: Vec::new(),
        }
    }

    pub fn cut(&mut self, a: NodeId, b: NodeId, until_us: u64) {
        self.next_cut_end = self.next_cut_end.min(until_us);
        self.cuts.push(Cut {
            a,
            b,
            until: until_us,
            one_way: false,
        });
    }

    /// Drops `src`→`dst` until `until_us` while `dst`→`src` still flows.
    pub fn cut_one_way(&mut self, src: NodeId, dst: NodeId, until_us: u64) {
        self.next_cut_end = self.next_cut_end.min(until_us);
        self.cuts.push(Cut {
            a: src,
            b: dst,
            until: until_us,
            one_way: true,
        });
    }

    /// Holds back every datagram `src`→`dst` sent before `until_us` by `lo..=hi` µs more.
    pub fn slow_link(&mut self, src: NodeId, dst: NodeId, until_us: u64, lo: u64, hi: u64) {
        self.slow.push(Slow {
            src,
            dst,
            until: until_us,
            lo,
            hi,
        });
    }

    pub fn heal_all(&mut self) {
        self.cuts.clear();
        self.next_cut_end = u64::MAX;
        self.slow.clear();
        if let Some(l) = &mut self.liar {
            l.lying = false;
        }
    }

    /// Whether datagrams `a`→`b` are dropped now.
    pub fn is_cut(&mut self, a: NodeId, b: NodeId, now_us: u64) -> bool {
        self.drop_ended_cuts(now_us);
        self.cuts.iter().any(|c| c.blocks(a, b, now_us))
    }

    /// Forgets the cuts that block nothing from `now_us` on (the clock never goes back).
    fn drop_ended_cuts(&mut self, now_us: u64) {
        if now_us >= self.next_cut_end {
            self.cuts.retain(|c| now_us < c.until);
            self.next_cut_end = self.cuts.iter().map(|c| c.until).min().unwrap_or(u64::MAX);
        }
    }

    fn note(&mut self, now_us: u64, line: impl FnOnce() -> String) {
        if self.notes_on {
            self.notes.push((now_us, line()));
        }
    }

    pub fn send(
        &mut self,
        rng: &mut SplitMix64,
        now_us: u64,
        src: NodeId,
        dst: NodeId,
        bytes: &[u8],
    ) {
        self.sent += 1;
        if self.is_cut(src, dst, now_us) || rng.chance(self.profile.loss) {
            self.dropped += 1;
            return;
        }
        let copies = if rng.chance(self.profile.duplicate) {
            2
        } else {
            1
        };
        self.duplicated += copies - 1;
        let mut bytes = bytes;
        let mut lie = std::mem::take(&mut self.scratch);
        if let Some(l) = self.liar
            && l.lying
            && l.id == src
        {
            lie.clear();
            if self.lie(rng, now_us, bytes, &mut lie, l.p) {
                bytes = &lie;
            }
        }
        for _ in 0..copies {
            let mut delay = self.profile.base_delay_us + rng.below(self.profile.jitter_us + 1);
            if rng.chance(self.profile.spike) {
                let extra = rng.range(self.heartbeat_us, 5 * self.heartbeat_us);
                delay += extra;
                self.counts.spiked += 1;
                self.note(now_us, || {
                    format!("SPIKE {src} -> {dst}: one datagram +{extra}us")
                });
            }
            if !self.slow.is_empty()
                && let Some(s) = self
                    .slow
                    .iter()
                    .find(|s| s.src == src && s.dst == dst && now_us < s.until)
                    .copied()
            {
                delay += rng.range(s.lo, s.hi);
                self.counts.spiked += 1;
            }
            let mut buf = self.pool.pop().unwrap_or_default();
            buf.clear();
            buf.extend_from_slice(bytes);
            if rng.chance(self.profile.corrupt) {
                self.corrupt(rng, now_us, src, dst, &mut buf);
            }
            self.push(now_us + delay, src, dst, buf);
        }
        self.scratch = lie;
        if rng.chance(self.profile.garbage) {
            self.send_garbage(rng, now_us, src, dst);
        }
    }

    fn push(&mut self, at_us: u64, src: NodeId, dst: NodeId, bytes: Vec<u8>) {
        self.seq += 1;
        let slot = Slot { src, dst, bytes };
        let i = match self.free_slots.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        self.queue.push(Reverse((at_us, self.seq, i)));
    }

    /// Sends one datagram of random bytes `src`→`dst` (half of them behind a valid magic and
    /// version, so the decoder gets past its first checks). It can never decode: a draw that
    /// happened to be a valid frame is not sent.
    pub fn send_garbage(&mut self, rng: &mut SplitMix64, now_us: u64, src: NodeId, dst: NodeId) {
        let len = rng.range(0, 300) as usize;
        let mut buf = self.pool.pop().unwrap_or_default();
        buf.clear();
        buf.extend((0..len).map(|_| rng.next_u64() as u8));
        if len >= HEADER_BYTES && rng.chance(0.5) {
            buf[..4].copy_from_slice(&MAGIC.to_le_bytes());
            buf[offset_of!(FrameHeader, version)] = VERSION;
        }
        if FrameReader::new(&buf).is_ok() {
            self.recycle(buf);
            return;
        }
        self.counts.garbage += 1;
        self.note(now_us, || {
            format!("GARBAGE {src} -> {dst}: {len} random bytes")
        });
        let delay = self.profile.base_delay_us + rng.below(self.profile.jitter_us + 1);
        self.push(now_us + delay, src, dst, buf);
    }

    /// Mangles one datagram so that the frame decoder must reject it: truncation at a random
    /// length, or one bit flipped in a field `FrameReader::new` validates (magic, version,
    /// message count, payload length, a message's kind or body length, an UPDATE's flags, an
    /// entry's section or flags, a bulk entry's section or flags).
    ///
    /// Bits inside update values, keys, sections below 64, epochs, op IDs, cookies, channel
    /// numbers or any other field the decoder takes as it comes are never flipped: frames carry
    /// no integrity check yet (authenticated frames come in a later issue), so such a flip is
    /// indistinguishable from a real change and no receiver could be expected to notice it. A
    /// flip that still decodes (a kind or body length that lands on another valid layout) is
    /// undone and the magic is flipped instead.
    fn corrupt(
        &mut self,
        rng: &mut SplitMix64,
        now_us: u64,
        src: NodeId,
        dst: NodeId,
        buf: &mut Vec<u8>,
    ) {
        if buf.len() < MIN_FRAME_BYTES || rng.chance(0.4) {
            let len = rng.below(buf.len() as u64) as usize;
            let was = buf.len();
            buf.truncate(len);
            self.counts.truncated += 1;
            self.note(now_us, || {
                format!("TRUNCATE {src} -> {dst}: {was} -> {len} bytes")
            });
            return;
        }
        let targets = flip_targets(buf);
        let (at, bits) = targets[rng.below(targets.len() as u64) as usize];
        let bit = bits[rng.below(bits.len() as u64) as usize];
        buf[at] ^= 1 << bit;
        let mut what = "field";
        if FrameReader::new(buf).is_ok() {
            buf[at] ^= 1 << bit;
            buf[0] ^= 1 << (bit % 8);
            what = "magic (fallback)";
        }
        self.counts.bit_flips += 1;
        self.note(now_us, || {
            format!("BITFLIP {src} -> {dst}: byte {at} bit {bit} ({what})")
        });
    }

    /// Rewrites the liar's frame into `out`, each message false with chance `p`. Returns
    /// false (send the original) when the frame does not decode or no message was changed.
    fn lie(
        &mut self,
        rng: &mut SplitMix64,
        now_us: u64,
        bytes: &[u8],
        out: &mut Vec<u8>,
        p: f64,
    ) -> bool {
        let Ok(f) = FrameReader::new(bytes) else {
            return false;
        };
        out.resize(bytes.len().max(MIN_FRAME_BYTES + 64), 0);
        let mut lines: Vec<String> = Vec::new();
        let notes = self.notes_on;
        let mut fb = FrameBuilder::new(out, f.sender(), f.epoch(), f.packet_seq());
        let mut lied = 0;
        for m in f.msgs() {
            let tell = rng.chance(p);
            let ok = match m {
                Msg::Ack(mut a) => {
                    if tell {
                        let was = a.op.get();
                        a.op = (was + rng.range(1, 8)).into();
                        lied += 1;
                        if notes {
                            lines.push(format!(
                                "ack ch {} op {was} -> {}",
                                a.channel.get(),
                                a.op.get()
                            ));
                        }
                    }
                    fb.push(Kind::Ack, &a)
                }
                Msg::LaReply(mut r) => {
                    if tell {
                        let was = (r.last_applied.get(), r.flags.get(), r.cookie_above.get());
                        match rng.below(4) {
                            0 => r.last_applied = (was.0 + rng.range(1, 8)).into(),
                            1 => r.last_applied = was.0.saturating_sub(rng.range(1, 8)).into(),
                            2 => r.flags = (was.1 ^ LA_FLAG_UNKNOWN).into(),
                            _ => r.cookie_above = rng.next_u64().into(),
                        }
                        lied += 1;
                        if notes {
                            lines.push(format!(
                                "last-applied ch {} (op {}, flags {}, cookie {:#x}) -> (op {}, flags {}, cookie {:#x})",
                                r.channel.get(),
                                was.0,
                                was.1,
                                was.2,
                                r.last_applied.get(),
                                r.flags.get(),
                                r.cookie_above.get()
                            ));
                        }
                    }
                    fb.push(Kind::LaReply, &r)
                }
                Msg::ReplayAck(mut a) => {
                    if tell {
                        let was = (a.next_index.get(), a.done.get());
                        if rng.chance(0.5) {
                            a.next_index = u32::MAX.into();
                            a.done = 1.into();
                        } else {
                            a.next_index = was.0.saturating_add(rng.range(1, 16) as u32).into();
                        }
                        lied += 1;
                        if notes {
                            lines.push(format!(
                                "replay-ack ch {} stream {} (next {}, done {}) -> (next {}, done {})",
                                a.channel.get(),
                                a.stream.get(),
                                was.0,
                                was.1,
                                a.next_index.get(),
                                a.done.get()
                            ));
                        }
                    }
                    fb.push(Kind::ReplayAck, &a)
                }
                Msg::Nack(mut n) => {
                    if tell {
                        let from = n.from.get().saturating_sub(rng.range(0, 8)).max(1);
                        n.from = from.into();
                        n.to = (n.to.get().max(from) + rng.range(0, 8)).into();
                        lied += 1;
                        if notes {
                            lines.push(format!(
                                "nack ch {} -> {}..={}",
                                n.channel.get(),
                                n.from.get(),
                                n.to.get()
                            ));
                        }
                    }
                    fb.push(Kind::Nack, &n)
                }
                Msg::Heartbeat(mut h) => {
                    if tell {
                        h.flags ^= HB_FLAG_NEEDS_TRANSFER;
                        lied += 1;
                        if notes {
                            lines.push(format!(
                                "heartbeat needs-transfer -> {}",
                                h.flags & HB_FLAG_NEEDS_TRANSFER != 0
                            ));
                        }
                    }
                    fb.push(Kind::Heartbeat, &h)
                }
                // A client sends nothing else; anything else goes out unchanged.
                _ => return false,
            };
            if !ok {
                return false;
            }
        }
        if lied == 0 {
            return false;
        }
        let len = fb.finish();
        out.truncate(len);
        self.counts.lies += lied;
        let src = f.sender();
        for l in lines {
            self.note(now_us, || format!("LIE client {src}: {l}"));
        }
        true
    }

    /// What the network holds and has done, for the run's fingerprint: the counters, the
    /// cuts and slow links, and every datagram in flight in delivery order.
    pub fn fingerprint(&self, now_us: u64) -> String {
        let mut q: Vec<(u64, u64, u32)> = self.queue.iter().map(|r| r.0).collect();
        q.sort();
        let q: Vec<(u64, u64, NodeId, NodeId, u64)> = q
            .into_iter()
            .map(|(at_us, seq, i)| {
                let f = &self.slots[i as usize];
                (
                    at_us,
                    seq,
                    f.src,
                    f.dst,
                    xxhash_rust::xxh3::xxh3_64(&f.bytes),
                )
            })
            .collect();
        format!(
            "{:?} {} {} {} {} {:?} {:?} {:?} {:?} {:?}",
            self.profile,
            self.seq,
            self.sent,
            self.dropped,
            self.duplicated,
            self.counts,
            self.liar,
            self.cuts
                .iter()
                .filter(|c| now_us < c.until)
                .collect::<Vec<_>>(),
            self.slow,
            q
        )
    }

    /// The longest a datagram can spend in flight.
    pub fn max_delay_us(&self) -> u64 {
        self.profile.base_delay_us + self.profile.jitter_us
    }

    pub fn next_at(&self) -> Option<u64> {
        self.queue.peek().map(|r| r.0.0)
    }

    /// Pops the next datagram due at or before `now_us`; it is lost if a partition started
    /// while it was in flight.
    pub fn pop_due(&mut self, now_us: u64) -> Option<(NodeId, NodeId, Vec<u8>)> {
        loop {
            if self.queue.peek()?.0.0 > now_us {
                return None;
            }
            let Reverse((_, _, i)) = self.queue.pop()?;
            self.free_slots.push(i);
            let f = &mut self.slots[i as usize];
            let (src, dst, bytes) = (f.src, f.dst, std::mem::take(&mut f.bytes));
            if self.is_cut(src, dst, now_us) {
                self.dropped += 1;
                self.pool.push(bytes);
                continue;
            }
            return Some((src, dst, bytes));
        }
    }

    pub fn recycle(&mut self, buf: Vec<u8>) {
        if self.pool.len() < 4096 {
            self.pool.push(buf);
        }
    }

    /// True while some partition involving `node` is in force (either direction).
    pub fn is_partitioned(&self, node: NodeId, now_us: u64) -> bool {
        self.cuts
            .iter()
            .any(|c| now_us < c.until && (c.a == node || c.b == node))
    }
}

/// Bytes of a frame whose listed bits the decoder checks: flipping any of them makes
/// `FrameReader::new` fail (kind and body length are checked again by the caller).
fn flip_targets(buf: &[u8]) -> Vec<(usize, &'static [u8])> {
    const ALL: &[u8] = &[0, 1, 2, 3, 4, 5, 6, 7];
    const NOT_BIT0: &[u8] = &[1, 2, 3, 4, 5, 6, 7];
    // Sections are below 64: only bits 6 and 7 make one out of range.
    const SECTION_HIGH: &[u8] = &[6, 7];
    // An entry's head byte: bits 6 and 7 (delete, wide key) change its length, which nearly
    // always breaks the walk of the entries (when not, the flip falls back to the magic).
    const HEAD_FORM: &[u8] = &[6, 7];
    let mut t: Vec<(usize, &'static [u8])> = Vec::new();
    for at in 0..4 {
        t.push((offset_of!(FrameHeader, magic) + at, ALL));
        t.push((offset_of!(FrameHeader, payload_len) + at, ALL));
    }
    t.push((offset_of!(FrameHeader, version), ALL));
    for at in 0..2 {
        t.push((offset_of!(FrameHeader, msg_count) + at, ALL));
    }
    let end = buf.len().saturating_sub(crate::wire::TRAILER_BYTES);
    let mut at = HEADER_BYTES;
    while at + MSG_HEADER_BYTES <= end {
        let kind = buf[at + offset_of!(MsgHeader, kind)];
        let body_at = at + MSG_HEADER_BYTES;
        let blen_at = at + offset_of!(MsgHeader, body_len);
        let body_len = u16::from_le_bytes([buf[blen_at], buf[blen_at + 1]]) as usize;
        let body_end = (body_at + body_len).min(end);
        t.push((at + offset_of!(MsgHeader, kind), ALL));
        t.push((blen_at, ALL));
        t.push((blen_at + 1, ALL));
        match Kind::from_u8(kind) {
            Some(k @ (Kind::Update | Kind::Submit | Kind::UpdateRun)) => {
                let flags = if k == Kind::UpdateRun { ALL } else { NOT_BIT0 };
                t.push((at + offset_of!(MsgHeader, flags), flags));
                for head in entry_head_offsets(k, &buf[body_at..body_end]) {
                    t.push((body_at + head, HEAD_FORM));
                }
            }
            Some(Kind::ReplayEntry | Kind::XferEntry)
                if body_at + size_of::<BulkEntry>() <= body_end =>
            {
                t.push((body_at + offset_of!(BulkEntry, section), SECTION_HIGH));
                t.push((body_at + offset_of!(BulkEntry, flags), NOT_BIT0));
            }
            _ => {}
        }
        at = body_at + body_len;
    }
    t
}
