//! Tests of the wire format: round trips of every message kind through [`FrameBuilder`] and
//! [`FrameReader`], hostile input that must never panic, and each rejection the decoder promises.
//!
//! The round trip compares against an owned model ([`M`]) so that a failure shows which field of
//! which message differs; fixed bodies are compared byte for byte, which for these padding-free
//! `#[repr(C)]` structs is the same as comparing every field.

use super::*;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use std::mem::offset_of;
use zerocopy::{FromBytes, IntoBytes};

// ---------------------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------------------

/// One key/value write as the test generates it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct E {
    section: u8,
    key: u64,
    value: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Upd {
    flags: u8,
    channel: u32,
    op: u64,
    cookie: u64,
    public: Vec<E>,
    private: Vec<E>,
}

impl Upd {
    /// Reads every field and every entry back out of a decoded UPDATE, checking the invariants
    /// that validation promises (public entries first, byte lengths consistent).
    fn from_view(u: &UpdateView<'_>) -> Upd {
        let n_public = u.fixed.public_count.get() as usize;
        let n_private = u.fixed.private_count.get() as usize;
        let (mut public, mut private) = (Vec::new(), Vec::new());
        let mut bytes = 0;
        if n_public == 0 {
            assert_eq!(u.public_len, 0);
        }
        for (i, e) in u.entries().enumerate() {
            assert_eq!(
                e.private,
                i >= n_public,
                "entry {i}: public entries come first"
            );
            assert!((e.section as usize) < SECTIONS);
            bytes += entry_wire_len(&e);
            if i + 1 == n_public {
                assert_eq!(
                    bytes, u.public_len,
                    "public_len covers exactly the public entries"
                );
            }
            let owned = E {
                section: e.section,
                key: e.key,
                value: e.value.map(<[u8]>::to_vec),
            };
            if e.private {
                private.push(owned)
            } else {
                public.push(owned)
            }
        }
        assert_eq!(public.len(), n_public);
        assert_eq!(private.len(), n_private);
        assert_eq!(bytes, u.entry_bytes.len());
        Upd {
            flags: u.flags,
            channel: u.channel(),
            op: u.op(),
            cookie: u.cookie(),
            public,
            private,
        }
    }

    fn body_len(&self) -> usize {
        let entries: usize = self
            .public
            .iter()
            .chain(&self.private)
            .map(|e| {
                let key = if e.key > u64::from(u32::MAX) { 8 } else { 4 };
                1 + key + e.value.as_ref().map_or(0, |v| 2 + v.len())
            })
            .sum();
        size_of::<UpdateFixed>() + entries
    }
}

/// Encodes entries with the crate's own [`encode_entry`]; returns the bytes and the count.
fn encode_entries(entries: &[E]) -> (Vec<u8>, u16) {
    let mut out = Vec::new();
    for e in entries {
        encode_entry(
            &mut out,
            &Entry {
                section: e.section,
                key: e.key,
                value: e.value.as_deref(),
                private: false,
            },
        );
    }
    (out, entries.len() as u16)
}

/// An owned message of any kind.
#[derive(Debug, Clone)]
enum M {
    Update(Upd),
    Ack(ChannelOp),
    FwdAck(ChannelOp),
    Commit(CommitBody),
    Nack(NackBody),
    Heartbeat(HeartbeatBody),
    LaQuery(ChannelOp),
    LaReply(LaReplyBody),
    ReplayBegin(BulkBegin),
    ReplayEntry(BulkEntry, Vec<u8>),
    ReplayEnd(BulkEnd),
    ReplayAck(BulkAck),
    XferBegin(BulkBegin),
    XferEntry(BulkEntry, Vec<u8>),
    XferEnd(BulkEnd),
    XferAck(BulkAck),
    XferHistory(HistoryBody),
}

impl M {
    fn kind(&self) -> Kind {
        match self {
            M::Update(_) => Kind::Update,
            M::Ack(_) => Kind::Ack,
            M::FwdAck(_) => Kind::FwdAck,
            M::Commit(_) => Kind::Commit,
            M::Nack(_) => Kind::Nack,
            M::Heartbeat(_) => Kind::Heartbeat,
            M::LaQuery(_) => Kind::LaQuery,
            M::LaReply(_) => Kind::LaReply,
            M::ReplayBegin(_) => Kind::ReplayBegin,
            M::ReplayEntry(..) => Kind::ReplayEntry,
            M::ReplayEnd(_) => Kind::ReplayEnd,
            M::ReplayAck(_) => Kind::ReplayAck,
            M::XferBegin(_) => Kind::XferBegin,
            M::XferEntry(..) => Kind::XferEntry,
            M::XferEnd(_) => Kind::XferEnd,
            M::XferAck(_) => Kind::XferAck,
            M::XferHistory(_) => Kind::XferHistory,
        }
    }

    /// The body bytes of a non-UPDATE message (fixed struct, then value bytes if any).
    fn fixed_body(&self) -> Vec<u8> {
        match self {
            M::Update(_) => unreachable!("UPDATE is compared field by field"),
            M::Ack(b) | M::FwdAck(b) | M::LaQuery(b) => b.as_bytes().to_vec(),
            M::Commit(b) => b.as_bytes().to_vec(),
            M::Nack(b) => b.as_bytes().to_vec(),
            M::Heartbeat(b) => b.as_bytes().to_vec(),
            M::LaReply(b) => b.as_bytes().to_vec(),
            M::ReplayBegin(b) | M::XferBegin(b) => b.as_bytes().to_vec(),
            M::ReplayEntry(e, v) | M::XferEntry(e, v) => [e.as_bytes(), v].concat(),
            M::ReplayEnd(b) | M::XferEnd(b) => b.as_bytes().to_vec(),
            M::ReplayAck(b) | M::XferAck(b) => b.as_bytes().to_vec(),
            M::XferHistory(b) => b.as_bytes().to_vec(),
        }
    }

    /// Bytes this message takes in a frame, computed from the layout independently of the codec.
    fn wire_len(&self) -> usize {
        let body = match self {
            M::Update(u) => u.body_len(),
            m => m.fixed_body().len(),
        };
        MSG_HEADER_BYTES + body
    }

    fn push(&self, b: &mut FrameBuilder<'_>) -> bool {
        match self {
            M::Update(u) => {
                let (public, n_public) = encode_entries(&u.public);
                let (private, n_private) = encode_entries(&u.private);
                b.push_update(
                    u.flags,
                    u.channel,
                    u.op,
                    u.cookie,
                    (&public, n_public),
                    (&private, n_private),
                )
            }
            M::Ack(x) => b.push(Kind::Ack, x),
            M::FwdAck(x) => b.push(Kind::FwdAck, x),
            M::Commit(x) => b.push(Kind::Commit, x),
            M::Nack(x) => b.push(Kind::Nack, x),
            M::Heartbeat(x) => b.push(Kind::Heartbeat, x),
            M::LaQuery(x) => b.push(Kind::LaQuery, x),
            M::LaReply(x) => b.push(Kind::LaReply, x),
            M::ReplayBegin(x) => b.push(Kind::ReplayBegin, x),
            M::ReplayEntry(e, v) => b.push_tail(Kind::ReplayEntry, e, v),
            M::ReplayEnd(x) => b.push(Kind::ReplayEnd, x),
            M::ReplayAck(x) => b.push(Kind::ReplayAck, x),
            M::XferBegin(x) => b.push(Kind::XferBegin, x),
            M::XferEntry(e, v) => b.push_tail(Kind::XferEntry, e, v),
            M::XferEnd(x) => b.push(Kind::XferEnd, x),
            M::XferAck(x) => b.push(Kind::XferAck, x),
            M::XferHistory(x) => b.push(Kind::XferHistory, x),
        }
    }

    /// Copies a decoded message into the model, checking the per-kind invariants of validation.
    fn from_msg(m: Msg<'_>) -> M {
        match m {
            Msg::Update(u) => {
                assert_eq!(u.flags & !UPDATE_FLAG_PREAPPLIED, 0);
                M::Update(Upd::from_view(&u))
            }
            Msg::Ack(b) => M::Ack(b),
            Msg::FwdAck(b) => M::FwdAck(b),
            Msg::Commit(b) => M::Commit(b),
            Msg::Nack(b) => {
                assert!(b.from.get() <= b.to.get());
                M::Nack(b)
            }
            Msg::Heartbeat(b) => M::Heartbeat(b),
            Msg::LaQuery(b) => M::LaQuery(b),
            Msg::LaReply(b) => M::LaReply(b),
            Msg::ReplayBegin(b) => M::ReplayBegin(b),
            Msg::ReplayEntry(e, v) => {
                check_bulk_entry(&e, v);
                M::ReplayEntry(e, v.to_vec())
            }
            Msg::ReplayEnd(b) => M::ReplayEnd(b),
            Msg::ReplayAck(b) => M::ReplayAck(b),
            Msg::XferBegin(b) => M::XferBegin(b),
            Msg::XferEntry(e, v) => {
                check_bulk_entry(&e, v);
                M::XferEntry(e, v.to_vec())
            }
            Msg::XferEnd(b) => M::XferEnd(b),
            Msg::XferAck(b) => M::XferAck(b),
            Msg::XferHistory(b) => M::XferHistory(b),
            Msg::Submit(_) => {
                unreachable!("the generator produces no SUBMIT (see submit_round_trip)")
            }
        }
    }
}

fn check_bulk_entry(e: &BulkEntry, value: &[u8]) {
    assert_eq!(e.value_len.get() as usize, value.len());
    assert!((e.section as usize) < SECTIONS);
    assert_eq!(e.flags & !BULK_FLAG_PRIVATE, 0);
}

impl PartialEq for M {
    fn eq(&self, other: &M) -> bool {
        match (self, other) {
            (M::Update(a), M::Update(b)) => a == b,
            (M::Update(_), _) | (_, M::Update(_)) => false,
            (a, b) => a.kind() == b.kind() && a.fixed_body() == b.fixed_body(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Building frames
// ---------------------------------------------------------------------------------------------

/// Pushes `m`, checking that the builder accepts it exactly when it fits and that a refused push
/// leaves the builder as it was.
fn try_push(b: &mut FrameBuilder<'_>, m: &M) -> bool {
    let (room, count) = (b.room(), b.count());
    let pushed = m.push(b);
    if pushed {
        assert!(
            m.wire_len() <= room,
            "pushed a {}-byte message into {room} bytes",
            m.wire_len()
        );
        assert_eq!(b.room(), room - m.wire_len());
        assert_eq!(b.count(), count + 1);
    } else {
        assert!(
            m.wire_len() > room,
            "refused a {}-byte message with {room} bytes free",
            m.wire_len()
        );
        assert_eq!(b.room(), room);
        assert_eq!(b.count(), count);
    }
    pushed
}

#[derive(Debug)]
struct Built {
    bytes: Vec<u8>,
    msgs: Vec<M>,
    seq: u64,
}

/// Packs `msgs` into frames the way a sender does: one reused buffer, a new frame (and packet
/// sequence number) whenever a push is refused. A message too large even for an empty frame is
/// skipped.
fn build_frames(msgs: &[M], buf_len: usize, sender: u32, epoch: u64, seq0: u64) -> Vec<Built> {
    // A dirty buffer: stale bytes from an earlier frame must never leak into a new one.
    let mut buf = vec![0xA5u8; buf_len];
    let max_msg = buf_len.min(MAX_FRAME_BYTES) - MIN_FRAME_BYTES;
    let mut frames = Vec::new();
    let mut pending = Vec::new();
    let mut seq = seq0;
    let mut b = FrameBuilder::new(&mut buf, sender, epoch, seq);
    for m in msgs {
        if try_push(&mut b, m) {
            pending.push(m.clone());
            continue;
        }
        if b.is_empty() {
            assert!(m.wire_len() > max_msg);
            continue;
        }
        let n = b.finish();
        frames.push(Built {
            bytes: buf[..n].to_vec(),
            msgs: std::mem::take(&mut pending),
            seq,
        });
        seq = seq.wrapping_add(1);
        b = FrameBuilder::new(&mut buf, sender, epoch, seq);
        if try_push(&mut b, m) {
            pending.push(m.clone());
        } else {
            assert!(m.wire_len() > max_msg);
        }
    }
    if !b.is_empty() || frames.is_empty() {
        let n = b.finish();
        frames.push(Built {
            bytes: buf[..n].to_vec(),
            msgs: pending,
            seq,
        });
    }
    frames
}

/// Decodes `bytes` and walks everything in it. Panics if a frame that passed validation breaks
/// any promise (message count, entry layout, field ranges).
fn exercise(bytes: &[u8]) -> Result<Vec<M>, WireError> {
    let r = FrameReader::new(bytes)?;
    assert_eq!(r.header.magic.get(), MAGIC);
    assert_eq!(r.header.version, VERSION);
    assert_eq!(
        bytes.len(),
        MIN_FRAME_BYTES + r.header.payload_len.get() as usize
    );
    let msgs: Vec<M> = r.msgs().map(M::from_msg).collect();
    assert_eq!(msgs.len(), r.header.msg_count.get() as usize);
    // Iterating twice yields the same messages: the reader holds no hidden state.
    assert_eq!(r.msgs().count(), msgs.len());
    check_visits(&r, bytes);
    // The header-only scan agrees with the parsed messages.
    for k in [
        Kind::Update,
        Kind::Heartbeat,
        Kind::Ack,
        Kind::Commit,
        Kind::ReplayEntry,
    ] {
        assert_eq!(r.contains(k), msgs.iter().any(|m| m.kind() == k), "{k:?}");
    }
    Ok(msgs)
}

/// Validation shows its visitor exactly the updates the reader of the valid frame `bytes`
/// yields (each op of a run, no SUBMIT), in frame order.
fn check_visits(r: &FrameReader<'_>, bytes: &[u8]) {
    let key = |u: &UpdateView<'_>| (u.channel(), u.op(), u.cookie(), u.entry_bytes.to_vec());
    let mut visited = Vec::new();
    FrameReader::new_visiting(bytes, |u| visited.push(key(u))).expect("validated once already");
    let updates: Vec<_> = (r.msgs())
        .filter_map(|m| match m {
            Msg::Update(u) => Some(key(&u)),
            _ => None,
        })
        .collect();
    assert_eq!(visited, updates);
}

// ---------------------------------------------------------------------------------------------
// Raw frames for the rejection tests
// ---------------------------------------------------------------------------------------------

fn raw_msg(kind: u8, flags: u8, body: &[u8]) -> Vec<u8> {
    let mh = MsgHeader {
        kind,
        flags,
        body_len: (body.len() as u16).into(),
    };
    [mh.as_bytes(), body].concat()
}

/// A frame around `payload` whose header is consistent with it, claiming `count` messages.
fn raw_frame(count: u16, payload: &[u8]) -> Vec<u8> {
    let h = FrameHeader {
        magic: MAGIC.into(),
        version: VERSION,
        flags: 0,
        msg_count: count.into(),
        sender: 7.into(),
        payload_len: (payload.len() as u32).into(),
        epoch: 3.into(),
        packet_seq: 9.into(),
    };
    [h.as_bytes(), payload, &[0u8; TRAILER_BYTES]].concat()
}

/// A frame holding exactly the given raw messages.
fn frame_of(msgs: &[Vec<u8>]) -> Vec<u8> {
    raw_frame(msgs.len() as u16, &msgs.concat())
}

fn reject(bytes: &[u8]) -> WireError {
    FrameReader::new(bytes).expect_err("frame should be rejected")
}

fn set_payload_len(frame: &mut [u8], len: u32) {
    let at = offset_of!(FrameHeader, payload_len);
    frame[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

fn set_msg_count(frame: &mut [u8], count: u16) {
    let at = offset_of!(FrameHeader, msg_count);
    frame[at..at + 2].copy_from_slice(&count.to_le_bytes());
}

/// A raw entry, written here independently of the codec: the head byte as given, a length
/// when `value` is given, the key in eight bytes when the head says wide (else four), the value.
fn entry_bytes(head: u8, key: u64, value: Option<&[u8]>) -> Vec<u8> {
    let mut out = vec![head];
    if let Some(v) = value {
        out.extend((v.len() as u16).to_le_bytes());
    }
    if head & ENTRY_HEAD_WIDE_KEY != 0 {
        out.extend(key.to_le_bytes());
    } else {
        out.extend((key as u32).to_le_bytes());
    }
    if let Some(v) = value {
        out.extend_from_slice(v);
    }
    out
}

fn update_body(public: u16, private: u16, entries: &[u8]) -> Vec<u8> {
    let fx = UpdateFixed {
        channel: 1.into(),
        public_count: public.into(),
        private_count: private.into(),
        op: 10.into(),
        cookie: 0b101.into(),
    };
    [fx.as_bytes(), entries].concat()
}

fn bulk_entry_body(section: u8, flags: u8, value_len: u16, value: &[u8]) -> Vec<u8> {
    let e = BulkEntry {
        channel: 1.into(),
        stream: 2.into(),
        index: 3.into(),
        section,
        flags,
        value_len: value_len.into(),
        key: 4.into(),
    };
    [e.as_bytes(), value].concat()
}

/// Every kind with a fixed-size body, and that size.
const FIXED_KINDS: [(Kind, usize); 14] = [
    (Kind::Ack, 16),
    (Kind::FwdAck, 16),
    (Kind::Commit, 24),
    (Kind::Nack, 24),
    (Kind::Heartbeat, 24),
    (Kind::LaQuery, 16),
    (Kind::LaReply, 32),
    (Kind::ReplayBegin, 32),
    (Kind::ReplayEnd, 24),
    (Kind::ReplayAck, 16),
    (Kind::XferBegin, 32),
    (Kind::XferEnd, 24),
    (Kind::XferAck, 16),
    (Kind::XferHistory, 32),
];

// ---------------------------------------------------------------------------------------------
// Layout: the offsets documented in docs/PROTOCOL.md
// ---------------------------------------------------------------------------------------------

#[test]
fn layout_sizes_and_offsets_match_protocol_doc() {
    assert_eq!(HEADER_BYTES, 32);
    assert_eq!(MSG_HEADER_BYTES, 4);
    assert_eq!(MIN_FRAME_BYTES, 64);
    assert_eq!(TRAILER_BYTES, 32);
    assert_eq!(MAGIC.to_le_bytes(), *b"SSYN");
    assert_eq!(MAGIC, 0x4E59_5353);

    let fh = [
        offset_of!(FrameHeader, magic),
        offset_of!(FrameHeader, version),
        offset_of!(FrameHeader, flags),
        offset_of!(FrameHeader, msg_count),
        offset_of!(FrameHeader, sender),
        offset_of!(FrameHeader, payload_len),
        offset_of!(FrameHeader, epoch),
        offset_of!(FrameHeader, packet_seq),
    ];
    assert_eq!(fh, [0, 4, 5, 6, 8, 12, 16, 24]);
    let mh = [
        offset_of!(MsgHeader, kind),
        offset_of!(MsgHeader, flags),
        offset_of!(MsgHeader, body_len),
    ];
    assert_eq!(mh, [0, 1, 2]);

    assert_eq!(size_of::<UpdateFixed>(), 24);
    let uf = [
        offset_of!(UpdateFixed, channel),
        offset_of!(UpdateFixed, public_count),
        offset_of!(UpdateFixed, private_count),
        offset_of!(UpdateFixed, op),
        offset_of!(UpdateFixed, cookie),
    ];
    assert_eq!(uf, [0, 4, 6, 8, 16]);

    assert_eq!(size_of::<RunFixed>(), 12);
    assert_eq!(
        [
            offset_of!(RunFixed, channel),
            offset_of!(RunFixed, first_op)
        ],
        [0, 4]
    );

    assert_eq!(size_of::<ChannelOp>(), 16);
    assert_eq!(
        [
            offset_of!(ChannelOp, channel),
            offset_of!(ChannelOp, generation),
            offset_of!(ChannelOp, op)
        ],
        [0, 4, 8]
    );

    assert_eq!(size_of::<CommitBody>(), 24);
    let cb = [
        offset_of!(CommitBody, channel),
        offset_of!(CommitBody, reserved),
        offset_of!(CommitBody, applied),
        offset_of!(CommitBody, held),
    ];
    assert_eq!(cb, [0, 4, 8, 16]);

    assert_eq!(size_of::<NackBody>(), 24);
    let nb = [
        offset_of!(NackBody, channel),
        offset_of!(NackBody, generation),
        offset_of!(NackBody, from),
        offset_of!(NackBody, to),
    ];
    assert_eq!(nb, [0, 4, 8, 16]);

    assert_eq!(size_of::<HeartbeatBody>(), 24);
    let hb = [
        offset_of!(HeartbeatBody, role),
        offset_of!(HeartbeatBody, flags),
        offset_of!(HeartbeatBody, sync_version),
        offset_of!(HeartbeatBody, sync_mask),
        offset_of!(HeartbeatBody, boot_or_target),
        offset_of!(HeartbeatBody, vote),
        offset_of!(HeartbeatBody, view_epoch),
    ];
    assert_eq!(hb, [0, 1, 2, 4, 8, 12, 16]);

    assert_eq!(size_of::<LaReplyBody>(), 32);
    let la = [
        offset_of!(LaReplyBody, channel),
        offset_of!(LaReplyBody, flags),
        offset_of!(LaReplyBody, last_applied),
        offset_of!(LaReplyBody, cookie_above),
    ];
    assert_eq!(la, [0, 4, 8, 16]);

    assert_eq!(size_of::<BulkBegin>(), 32);
    let bb = [
        offset_of!(BulkBegin, channel),
        offset_of!(BulkBegin, stream),
        offset_of!(BulkBegin, sections),
        offset_of!(BulkBegin, base_op),
        offset_of!(BulkBegin, acked_op),
    ];
    assert_eq!(bb, [0, 4, 8, 16, 24]);

    assert_eq!(size_of::<BulkEntry>(), 24);
    let be = [
        offset_of!(BulkEntry, channel),
        offset_of!(BulkEntry, stream),
        offset_of!(BulkEntry, index),
        offset_of!(BulkEntry, section),
        offset_of!(BulkEntry, flags),
        offset_of!(BulkEntry, value_len),
        offset_of!(BulkEntry, key),
    ];
    assert_eq!(be, [0, 4, 8, 12, 13, 14, 16]);

    assert_eq!(size_of::<BulkEnd>(), 24);
    let bn = [
        offset_of!(BulkEnd, channel),
        offset_of!(BulkEnd, stream),
        offset_of!(BulkEnd, total),
        offset_of!(BulkEnd, reserved),
        offset_of!(BulkEnd, base_op),
    ];
    assert_eq!(bn, [0, 4, 8, 12, 16]);

    assert_eq!(size_of::<BulkAck>(), 16);
    let ba = [
        offset_of!(BulkAck, channel),
        offset_of!(BulkAck, stream),
        offset_of!(BulkAck, next_index),
        offset_of!(BulkAck, done),
    ];
    assert_eq!(ba, [0, 4, 8, 12]);

    assert_eq!(size_of::<HistoryBody>(), 32);
    let hi = [
        offset_of!(HistoryBody, channel),
        offset_of!(HistoryBody, stream),
        offset_of!(HistoryBody, index),
        offset_of!(HistoryBody, reserved),
        offset_of!(HistoryBody, epoch),
        offset_of!(HistoryBody, start_op),
    ];
    assert_eq!(hi, [0, 4, 8, 12, 16, 24]);
}

/// The example of docs/PROTOCOL.md §9, byte for byte.
#[test]
fn example_frame_bytes_match_protocol_doc() {
    let mut buf = [0xFFu8; 256];
    let mut b = FrameBuilder::new(&mut buf, 2, 0x100, 5);
    assert!(b.push(
        Kind::Ack,
        &ChannelOp {
            channel: 3.into(),
            generation: 0.into(),
            op: 42.into()
        }
    ));
    let n = b.finish();
    #[rustfmt::skip]
    let expected: [u8; 84] = [
        0x53, 0x53, 0x59, 0x4e, 0x02, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00,
        0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x02, 0x00, 0x10, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00,
    ];
    assert_eq!(buf[..n], expected);
}

#[test]
fn kind_codes_are_1_to_19() {
    for v in 0..=u8::MAX {
        match Kind::from_u8(v) {
            Some(k) => {
                assert!((1..=19).contains(&v));
                assert_eq!(k as u8, v);
            }
            None => assert!(v == 0 || v > 18, "kind {v} should decode"),
        }
    }
    for (k, size) in FIXED_KINDS {
        let body = vec![0u8; size];
        assert!(
            FrameReader::new(&frame_of(&[raw_msg(k as u8, 0, &body)])).is_ok(),
            "{k:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------

#[test]
fn round_trip_every_kind_field_by_field() {
    let mut buf = vec![0u8; 2048];
    let mut b = FrameBuilder::new(&mut buf, 0xDEAD_BEEF, u64::MAX - 1, 42);
    let (public, n_public) = encode_entries(&[
        E {
            section: 0,
            key: 1,
            value: Some(b"one".to_vec()),
        },
        E {
            section: 63,
            key: u64::MAX,
            value: None,
        },
    ]);
    let (private, n_private) = encode_entries(&[E {
        section: 5,
        key: 9,
        value: Some(vec![]),
    }]);
    assert!(b.push_update(
        UPDATE_FLAG_PREAPPLIED,
        11,
        100,
        1 << 63 | 1,
        (&public, n_public),
        (&private, n_private)
    ));
    let chop = ChannelOp {
        channel: 11.into(),
        generation: 0.into(),
        op: 99.into(),
    };
    assert!(b.push(Kind::Ack, &chop));
    assert!(b.push(Kind::FwdAck, &chop));
    let commit = CommitBody {
        channel: 11.into(),
        reserved: 0.into(),
        applied: 98.into(),
        held: 100.into(),
    };
    assert!(b.push(Kind::Commit, &commit));
    assert!(b.push(
        Kind::Nack,
        &NackBody {
            channel: 11.into(),
            generation: 0.into(),
            from: 5.into(),
            to: 5.into()
        }
    ));
    let hb = HeartbeatBody {
        role: ROLE_STANDBY,
        flags: HB_FLAG_JOINED | HB_FLAG_PRIMARY_LOST,
        sync_version: 0.into(),
        sync_mask: 0b110.into(),
        boot_or_target: 2.into(),
        vote: 0.into(),
        view_epoch: 0.into(),
    };
    assert!(b.push(Kind::Heartbeat, &hb));
    assert!(b.push(Kind::LaQuery, &chop));
    let la = LaReplyBody {
        channel: 11.into(),
        flags: LA_FLAG_UNKNOWN.into(),
        last_applied: 7.into(),
        cookie_above: 3.into(),
        data_epoch: 0x201.into(),
    };
    assert!(b.push(Kind::LaReply, &la));
    let begin = BulkBegin {
        channel: 11.into(),
        stream: 4.into(),
        sections: u64::MAX.into(),
        base_op: 77.into(),
        acked_op: 70.into(),
    };
    assert!(b.push(Kind::ReplayBegin, &begin));
    let entry = BulkEntry {
        channel: 11.into(),
        stream: 4.into(),
        index: 0.into(),
        section: 3,
        flags: BULK_FLAG_PRIVATE,
        value_len: 2.into(),
        key: 8.into(),
    };
    assert!(b.push_tail(Kind::ReplayEntry, &entry, b"hi"));
    let end = BulkEnd {
        channel: 11.into(),
        stream: 4.into(),
        total: 1.into(),
        reserved: 0.into(),
        base_op: 77.into(),
    };
    assert!(b.push(Kind::ReplayEnd, &end));
    let ack = BulkAck {
        channel: 11.into(),
        stream: 4.into(),
        next_index: 1.into(),
        done: 1.into(),
    };
    assert!(b.push(Kind::ReplayAck, &ack));
    assert!(b.push(Kind::XferBegin, &begin));
    assert!(b.push_tail(Kind::XferEntry, &entry, b"hi"));
    assert!(b.push(Kind::XferEnd, &end));
    assert!(b.push(Kind::XferAck, &ack));
    let hist = HistoryBody {
        channel: 11.into(),
        stream: 4.into(),
        index: 2.into(),
        reserved: 0.into(),
        epoch: 6.into(),
        start_op: 50.into(),
    };
    assert!(b.push(Kind::XferHistory, &hist));
    assert_eq!(b.count(), 17);
    let n = b.finish();

    let r = FrameReader::new(&buf[..n]).expect("valid frame");
    assert_eq!(
        (r.sender(), r.epoch(), r.packet_seq()),
        (0xDEAD_BEEF, u64::MAX - 1, 42)
    );
    assert_eq!(r.header.flags, 0);
    assert_eq!(r.header.msg_count.get(), 17);
    let msgs: Vec<Msg<'_>> = r.msgs().collect();
    assert_eq!(msgs.len(), 17);

    let Msg::Update(u) = msgs[0] else {
        panic!("{:?}", msgs[0])
    };
    assert_eq!(
        (u.flags, u.channel(), u.op(), u.cookie()),
        (UPDATE_FLAG_PREAPPLIED, 11, 100, 1 << 63 | 1)
    );
    assert_eq!(
        (u.fixed.public_count.get(), u.fixed.private_count.get()),
        (2, 1)
    );
    assert_eq!(u.public_len, public.len());
    let entries: Vec<Entry<'_>> = u.entries().collect();
    assert_eq!(
        entries,
        [
            Entry {
                section: 0,
                key: 1,
                value: Some(&b"one"[..]),
                private: false
            },
            Entry {
                section: 63,
                key: u64::MAX,
                value: None,
                private: false
            },
            Entry {
                section: 5,
                key: 9,
                value: Some(&[][..]),
                private: true
            },
        ]
    );
    let Msg::Ack(a) = msgs[1] else {
        panic!("{:?}", msgs[1])
    };
    assert_eq!(
        (a.channel.get(), a.generation.get(), a.op.get()),
        (11, 0, 99)
    );
    let Msg::FwdAck(a) = msgs[2] else {
        panic!("{:?}", msgs[2])
    };
    assert_eq!((a.channel.get(), a.op.get()), (11, 99));
    let Msg::Commit(c) = msgs[3] else {
        panic!("{:?}", msgs[3])
    };
    assert_eq!(
        (c.channel.get(), c.applied.get(), c.held.get()),
        (11, 98, 100)
    );
    let Msg::Nack(nk) = msgs[4] else {
        panic!("{:?}", msgs[4])
    };
    assert_eq!((nk.channel.get(), nk.from.get(), nk.to.get()), (11, 5, 5));
    let Msg::Heartbeat(h) = msgs[5] else {
        panic!("{:?}", msgs[5])
    };
    assert_eq!(
        (h.role, h.flags, h.sync_mask.get(), h.boot_or_target.get()),
        (ROLE_STANDBY, 5, 0b110, 2)
    );
    let Msg::LaQuery(q) = msgs[6] else {
        panic!("{:?}", msgs[6])
    };
    assert_eq!((q.channel.get(), q.op.get()), (11, 99));
    let Msg::LaReply(l) = msgs[7] else {
        panic!("{:?}", msgs[7])
    };
    assert_eq!(
        (
            l.channel.get(),
            l.flags.get(),
            l.last_applied.get(),
            l.cookie_above.get()
        ),
        (11, 1, 7, 3)
    );
    for (i, want) in [(8, Kind::ReplayBegin), (12, Kind::XferBegin)] {
        let (Msg::ReplayBegin(g) | Msg::XferBegin(g)) = msgs[i] else {
            panic!("{:?}", msgs[i])
        };
        assert_eq!(M::from_msg(msgs[i]).kind(), want);
        assert_eq!(
            (
                g.channel.get(),
                g.stream.get(),
                g.sections.get(),
                g.base_op.get(),
                g.acked_op.get()
            ),
            (11, 4, u64::MAX, 77, 70)
        );
    }
    for (i, want) in [(9, Kind::ReplayEntry), (13, Kind::XferEntry)] {
        let (Msg::ReplayEntry(e, v) | Msg::XferEntry(e, v)) = msgs[i] else {
            panic!("{:?}", msgs[i])
        };
        assert_eq!(M::from_msg(msgs[i]).kind(), want);
        assert_eq!(
            (
                e.channel.get(),
                e.stream.get(),
                e.index.get(),
                e.section,
                e.flags,
                e.value_len.get(),
                e.key.get()
            ),
            (11, 4, 0, 3, BULK_FLAG_PRIVATE, 2, 8)
        );
        assert_eq!(v, b"hi");
    }
    for (i, want) in [(10, Kind::ReplayEnd), (14, Kind::XferEnd)] {
        let (Msg::ReplayEnd(e) | Msg::XferEnd(e)) = msgs[i] else {
            panic!("{:?}", msgs[i])
        };
        assert_eq!(M::from_msg(msgs[i]).kind(), want);
        assert_eq!(
            (
                e.channel.get(),
                e.stream.get(),
                e.total.get(),
                e.base_op.get()
            ),
            (11, 4, 1, 77)
        );
    }
    for (i, want) in [(11, Kind::ReplayAck), (15, Kind::XferAck)] {
        let (Msg::ReplayAck(a) | Msg::XferAck(a)) = msgs[i] else {
            panic!("{:?}", msgs[i])
        };
        assert_eq!(M::from_msg(msgs[i]).kind(), want);
        assert_eq!(
            (
                a.channel.get(),
                a.stream.get(),
                a.next_index.get(),
                a.done.get()
            ),
            (11, 4, 1, 1)
        );
    }
    let Msg::XferHistory(hs) = msgs[16] else {
        panic!("{:?}", msgs[16])
    };
    assert_eq!(
        (
            hs.channel.get(),
            hs.stream.get(),
            hs.index.get(),
            hs.epoch.get(),
            hs.start_op.get()
        ),
        (11, 4, 2, 6, 50)
    );
}

#[test]
fn empty_frame_is_valid() {
    let mut buf = [0u8; 256];
    let n = FrameBuilder::new(&mut buf, 1, 2, 3).finish();
    assert_eq!(n, MIN_FRAME_BYTES);
    let r = FrameReader::new(&buf[..n]).expect("empty frame");
    assert_eq!(r.msgs().count(), 0);
    assert_eq!((r.sender(), r.epoch(), r.packet_seq()), (1, 2, 3));
}

#[test]
fn builder_refuses_what_does_not_fit_and_writes_nothing() {
    let mut buf = vec![0u8; 256];
    let mut b = FrameBuilder::new(&mut buf, 1, 1, 1);
    assert_eq!(b.room(), 256 - MIN_FRAME_BYTES);
    let ack = BulkAck {
        channel: 1.into(),
        stream: 1.into(),
        next_index: 0.into(),
        done: 0.into(),
    };
    let fits = (256 - MIN_FRAME_BYTES) / (MSG_HEADER_BYTES + size_of::<BulkAck>());
    for _ in 0..fits {
        assert!(b.push(Kind::ReplayAck, &ack));
    }
    let room = b.room();
    assert!(room < MSG_HEADER_BYTES + size_of::<BulkAck>());
    assert!(!b.push(Kind::ReplayAck, &ack));
    assert!(!b.push_update(0, 1, 1, 1, (&[], 0), (&[], 0)));
    assert_eq!((b.room(), b.count() as usize), (room, fits));
    let n = b.finish();
    let msgs = exercise(&buf[..n]).expect("valid");
    assert_eq!(msgs.len(), fits);
}

#[test]
fn builder_caps_frames_at_max_frame_bytes() {
    let mut buf = vec![0u8; MAX_FRAME_BYTES + 1000];
    let mut b = FrameBuilder::new(&mut buf, 1, 1, 1);
    assert_eq!(b.room(), MAX_FRAME_BYTES - MIN_FRAME_BYTES);
    let big = vec![7u8; 30_000];
    let entry = BulkEntry {
        channel: 1.into(),
        stream: 1.into(),
        index: 0.into(),
        section: 0,
        flags: 0,
        value_len: (big.len() as u16).into(),
        key: 0.into(),
    };
    assert!(b.push_tail(Kind::XferEntry, &entry, &big));
    assert!(b.push_tail(Kind::XferEntry, &entry, &big));
    assert!(!b.push_tail(Kind::XferEntry, &entry, &big));
    let n = b.finish();
    assert!(n <= MAX_FRAME_BYTES);
    assert_eq!(exercise(&buf[..n]).expect("valid").len(), 2);
}

#[test]
#[should_panic(expected = "section out of range")]
fn encode_entry_refuses_section_64() {
    encode_entry(
        &mut Vec::new(),
        &Entry {
            section: 64,
            key: 0,
            value: None,
            private: false,
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Specific rejections
// ---------------------------------------------------------------------------------------------

fn good_ack() -> Vec<u8> {
    raw_msg(Kind::Ack as u8, 0, &[0u8; 16])
}

#[test]
fn rejects_datagrams_outside_the_size_range() {
    assert_eq!(reject(&[]), WireError::TooShort);
    assert_eq!(reject(&[0u8; MIN_FRAME_BYTES - 1]), WireError::TooShort);
    let mut f = frame_of(&[]);
    f.pop();
    assert_eq!(reject(&f), WireError::TooShort);
    // A datagram above MAX_FRAME_BYTES is refused even when its header is consistent; the decoder
    // reports it as TooShort ("outside the accepted size range").
    let payload = vec![0u8; MAX_FRAME_BYTES + 1 - MIN_FRAME_BYTES];
    assert_eq!(reject(&raw_frame(0, &payload)), WireError::TooShort);
}

#[test]
fn rejects_bad_magic() {
    let good = frame_of(&[good_ack()]);
    for i in 0..4 {
        let mut f = good.clone();
        f[i] ^= 0x20;
        assert_eq!(reject(&f), WireError::BadMagic);
    }
}

#[test]
fn rejects_bad_version() {
    for v in [0, 1, 3, 255] {
        let mut f = frame_of(&[good_ack()]);
        f[offset_of!(FrameHeader, version)] = v;
        assert_eq!(reject(&f), WireError::BadVersion(v));
    }
}

#[test]
fn rejects_length_mismatch() {
    let good = frame_of(&[good_ack()]);
    let payload_len = (good.len() - MIN_FRAME_BYTES) as u32;
    for declared in [0, payload_len - 1, payload_len + 1, u32::MAX] {
        let mut f = good.clone();
        set_payload_len(&mut f, declared);
        assert_eq!(reject(&f), WireError::LengthMismatch, "declared {declared}");
    }
    let mut longer = good.clone();
    longer.push(0);
    assert_eq!(reject(&longer), WireError::LengthMismatch);
    let mut shorter = good;
    shorter.pop(); // the tag slot is one byte short
    assert_eq!(reject(&shorter), WireError::LengthMismatch);
}

#[test]
fn rejects_truncated_messages() {
    // Fewer than 4 bytes left for a message header.
    for extra in 1..MSG_HEADER_BYTES {
        let payload = [good_ack(), vec![Kind::Ack as u8; extra]].concat();
        assert_eq!(reject(&raw_frame(2, &payload)), WireError::Truncated);
    }
    // body_len runs past the payload (checked before the kind).
    let mut m = good_ack();
    m[2] = 17;
    assert_eq!(reject(&raw_frame(1, &m)), WireError::Truncated);
    let mut m = raw_msg(200, 0, &[0u8; 16]);
    m[2] = 255;
    assert_eq!(reject(&raw_frame(1, &m)), WireError::Truncated);
}

#[test]
fn rejects_unknown_kind() {
    for k in [0u8, 20, 100, 255] {
        assert_eq!(
            reject(&frame_of(&[raw_msg(k, 0, &[0u8; 16])])),
            WireError::UnknownKind(k)
        );
        // A bad message anywhere rejects the whole frame.
        assert_eq!(
            reject(&frame_of(&[good_ack(), raw_msg(k, 0, &[])])),
            WireError::UnknownKind(k)
        );
    }
}

#[test]
fn rejects_count_mismatch() {
    let good = frame_of(&[good_ack(), good_ack()]);
    for count in [0, 1, 3, u16::MAX] {
        let mut f = good.clone();
        set_msg_count(&mut f, count);
        assert_eq!(reject(&f), WireError::CountMismatch, "count {count}");
    }
    assert_eq!(reject(&raw_frame(1, &[])), WireError::CountMismatch);
}

#[test]
fn rejects_nack_with_from_above_to() {
    let nack = |from: u64, to: u64| {
        let body = NackBody {
            channel: 1.into(),
            generation: 0.into(),
            from: from.into(),
            to: to.into(),
        };
        frame_of(&[raw_msg(Kind::Nack as u8, 0, body.as_bytes())])
    };
    assert_eq!(reject(&nack(6, 5)), WireError::BadField);
    assert_eq!(reject(&nack(u64::MAX, 0)), WireError::BadField);
    assert!(FrameReader::new(&nack(5, 5)).is_ok());
    assert!(FrameReader::new(&nack(0, u64::MAX)).is_ok());
}

#[test]
fn rejects_bulk_entry_section_out_of_range() {
    for section in [64u8, 65, 255] {
        for kind in [Kind::ReplayEntry, Kind::XferEntry] {
            let f = frame_of(&[raw_msg(
                kind as u8,
                0,
                &bulk_entry_body(section, 0, 1, b"v"),
            )]);
            assert_eq!(
                reject(&f),
                WireError::BadField,
                "{kind:?} section {section}"
            );
        }
    }
    // An update entry's section has six bits: 63 is the last.
    let e = entry_bytes(63, 1, Some(b"v"));
    let f = frame_of(&[raw_msg(Kind::Update as u8, 0, &update_body(1, 0, &e))]);
    let msgs = exercise(&f).expect("section 63");
    let M::Update(u) = &msgs[0] else {
        panic!("{msgs:?}")
    };
    assert_eq!(u.public[0].section, 63);
}

/// A key has one encoding: four bytes up to `u32::MAX`, eight (the wide form) only above.
#[test]
fn rejects_a_wide_key_that_fits_four_bytes() {
    let update = |e: &[u8]| frame_of(&[raw_msg(Kind::Update as u8, 0, &update_body(1, 0, e))]);
    for key in [0, 1, u64::from(u32::MAX)] {
        let wide = entry_bytes(2 | ENTRY_HEAD_WIDE_KEY, key, Some(b"v"));
        assert_eq!(reject(&update(&wide)), WireError::BadEntry, "key {key}");
        let narrow = entry_bytes(2, key, Some(b"v"));
        assert_eq!(narrow.len(), 1 + 2 + 4 + 1);
        let msgs = exercise(&update(&narrow)).expect("narrow key");
        let M::Update(u) = &msgs[0] else {
            panic!("{msgs:?}")
        };
        assert_eq!(u.public[0].key, key);
    }
    for key in [u64::from(u32::MAX) + 1, u64::MAX] {
        let wide = entry_bytes(2 | ENTRY_HEAD_WIDE_KEY | ENTRY_HEAD_DELETE, key, None);
        assert_eq!(wide.len(), 1 + 8);
        let msgs = exercise(&update(&wide)).expect("wide key");
        let M::Update(u) = &msgs[0] else {
            panic!("{msgs:?}")
        };
        assert_eq!((u.public[0].key, u.public[0].value.as_ref()), (key, None));
        let mut encoded = Vec::new();
        encode_entry(
            &mut encoded,
            &Entry {
                section: 2,
                key,
                value: None,
                private: false,
            },
        );
        assert_eq!(encoded, wide, "the encoder picks the wide form");
    }
}

#[test]
fn rejects_delete_entry_with_value() {
    // A delete has nothing after its key: a length and value are bytes left over.
    let e = entry_bytes(1 | ENTRY_HEAD_DELETE, 1, Some(b"x"));
    let f = frame_of(&[raw_msg(Kind::Update as u8, 0, &update_body(1, 0, &e))]);
    assert_eq!(reject(&f), WireError::BadEntry);
    let e = entry_bytes(1 | ENTRY_HEAD_DELETE, 1, None);
    let f = frame_of(&[raw_msg(Kind::Update as u8, 0, &update_body(1, 0, &e))]);
    let msgs = exercise(&f).expect("delete without value");
    let M::Update(u) = &msgs[0] else {
        panic!("{msgs:?}")
    };
    assert_eq!(
        u.public,
        [E {
            section: 1,
            key: 1,
            value: None
        }]
    );
}

#[test]
fn rejects_unknown_flags() {
    for flags in [2u8, 4, 0x80, 0xFF] {
        let f = frame_of(&[raw_msg(Kind::Update as u8, flags, &update_body(0, 0, &[]))]);
        assert_eq!(reject(&f), WireError::BadField, "update flags {flags:#x}");
        for kind in [Kind::ReplayEntry, Kind::XferEntry] {
            let f = frame_of(&[raw_msg(kind as u8, 0, &bulk_entry_body(0, flags, 0, b""))]);
            assert_eq!(reject(&f), WireError::BadField, "{kind:?} flags {flags:#x}");
        }
    }
    let f = frame_of(&[raw_msg(
        Kind::Update as u8,
        UPDATE_FLAG_PREAPPLIED,
        &update_body(0, 0, &[]),
    )]);
    assert!(FrameReader::new(&f).is_ok());
}

#[test]
fn rejects_update_whose_entries_do_not_match_its_counts() {
    let one = entry_bytes(1, 1, Some(b"abc"));
    let two = [one.clone(), entry_bytes(2 | ENTRY_HEAD_DELETE, 2, None)].concat();
    let update = |public, private, entries: &[u8]| {
        frame_of(&[raw_msg(
            Kind::Update as u8,
            0,
            &update_body(public, private, entries),
        )])
    };
    assert!(FrameReader::new(&update(1, 1, &two)).is_ok());
    assert!(FrameReader::new(&update(0, 2, &two)).is_ok());
    // Counts claim more entries than the body holds.
    assert_eq!(reject(&update(2, 1, &two)), WireError::BadEntry);
    assert_eq!(reject(&update(1, 0, &[])), WireError::BadEntry);
    // Bytes left over after the counted entries.
    assert_eq!(reject(&update(1, 0, &two)), WireError::BadEntry);
    assert_eq!(reject(&update(0, 0, &[0])), WireError::BadEntry);
    // An entry whose value runs past the body.
    assert_eq!(
        reject(&update(1, 0, &one[..one.len() - 1])),
        WireError::BadEntry
    );
    // A partial entry header (head and key, no length).
    assert_eq!(reject(&update(1, 0, &one[..2])), WireError::BadEntry);
    assert_eq!(reject(&update(1, 0, &one[..1])), WireError::BadEntry);
}

#[test]
fn rejects_body_length_wrong_for_kind() {
    for (kind, size) in FIXED_KINDS {
        for len in [0, size - 1, size + 1, size + 16] {
            let f = frame_of(&[raw_msg(kind as u8, 0, &vec![0u8; len])]);
            assert_eq!(
                reject(&f),
                WireError::BadBodyLength,
                "{kind:?} with a {len}-byte body"
            );
        }
    }
    // UPDATE shorter than its fixed part.
    for len in [0, 1, size_of::<UpdateFixed>() - 1] {
        let f = frame_of(&[raw_msg(Kind::Update as u8, 0, &vec![0u8; len])]);
        assert_eq!(
            reject(&f),
            WireError::BadBodyLength,
            "UPDATE with a {len}-byte body"
        );
    }
    for kind in [Kind::ReplayEntry, Kind::XferEntry] {
        // Shorter than the fixed part.
        let f = frame_of(&[raw_msg(kind as u8, 0, &[0u8; 23])]);
        assert_eq!(reject(&f), WireError::BadBodyLength);
        // value_len disagrees with the bytes that follow.
        for (declared, actual) in [(2u16, 1usize), (2, 3), (0, 1), (1, 0)] {
            let f = frame_of(&[raw_msg(
                kind as u8,
                0,
                &bulk_entry_body(0, 0, declared, &vec![1u8; actual]),
            )]);
            assert_eq!(
                reject(&f),
                WireError::BadBodyLength,
                "{kind:?} value_len {declared}, {actual} bytes"
            );
        }
    }
}

#[test]
fn header_and_message_flags_outside_update_are_not_interpreted() {
    // The decoder checks flags only where it gives them meaning (UPDATE, entries); the frame
    // header's flags and the message-header flags of other kinds pass through.
    let mut f = frame_of(&[raw_msg(Kind::Ack as u8, 0xFF, &[0u8; 16])]);
    f[offset_of!(FrameHeader, flags)] = 0xFF;
    let r = FrameReader::new(&f).expect("accepted");
    assert_eq!(r.header.flags, 0xFF);
    assert_eq!(r.msgs().count(), 1);
}

// ---------------------------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------------------------

/// Any value of a padding-free wire struct, every byte random.
fn arb<T: FromBytes + std::fmt::Debug>() -> impl Strategy<Value = T> {
    vec(any::<u8>(), size_of::<T>())
        .prop_map(|b| T::read_from_bytes(&b).unwrap_or_else(|_| unreachable!("exact size")))
}

/// Mostly small values, now and then one large enough not to fit a small frame.
fn value_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![12 => vec(any::<u8>(), 0..32), 1 => vec(any::<u8>(), 0..400)]
}

fn entry() -> impl Strategy<Value = E> {
    (
        0..SECTIONS as u8,
        any::<u64>(),
        prop::option::weighted(0.75, value_bytes()),
    )
        .prop_map(|(section, key, value)| E {
            section,
            key,
            value,
        })
}

fn update() -> impl Strategy<Value = Upd> {
    (
        prop_oneof![Just(0u8), Just(UPDATE_FLAG_PREAPPLIED)],
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        vec(entry(), 0..6),
        vec(entry(), 0..6),
    )
        .prop_map(|(flags, channel, op, cookie, public, private)| Upd {
            flags,
            channel,
            op,
            cookie,
            public,
            private,
        })
}

fn bulk_entry() -> impl Strategy<Value = (BulkEntry, Vec<u8>)> {
    (arb::<BulkEntry>(), value_bytes()).prop_map(|(mut e, v)| {
        e.section %= SECTIONS as u8;
        e.flags &= BULK_FLAG_PRIVATE;
        e.value_len = (v.len() as u16).into();
        (e, v)
    })
}

fn nack() -> impl Strategy<Value = NackBody> {
    arb::<NackBody>().prop_map(|mut n| {
        if n.from.get() > n.to.get() {
            std::mem::swap(&mut n.from, &mut n.to);
        }
        n
    })
}

fn msg() -> impl Strategy<Value = M> {
    prop_oneof![
        6 => update().prop_map(M::Update),
        1 => arb().prop_map(M::Ack),
        1 => arb().prop_map(M::FwdAck),
        1 => arb().prop_map(M::Commit),
        1 => nack().prop_map(M::Nack),
        1 => arb().prop_map(M::Heartbeat),
        1 => arb().prop_map(M::LaQuery),
        1 => arb().prop_map(M::LaReply),
        1 => arb().prop_map(M::ReplayBegin),
        2 => bulk_entry().prop_map(|(e, v)| M::ReplayEntry(e, v)),
        1 => arb().prop_map(M::ReplayEnd),
        1 => arb().prop_map(M::ReplayAck),
        1 => arb().prop_map(M::XferBegin),
        2 => bulk_entry().prop_map(|(e, v)| M::XferEntry(e, v)),
        1 => arb().prop_map(M::XferEnd),
        1 => arb().prop_map(M::XferAck),
        1 => arb().prop_map(M::XferHistory),
    ]
}

fn buf_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 256usize..1500,
        2 => 1500usize..9000,
        1 => Just(MAX_FRAME_BYTES),
        1 => MAX_FRAME_BYTES..MAX_FRAME_BYTES + 5000,
    ]
}

/// A message with any kind byte and a body whose length is often the right one for some kind.
fn raw_garbage_msg() -> impl Strategy<Value = Vec<u8>> {
    let body = prop_oneof![Just(16usize), Just(24), Just(32), 0usize..80]
        .prop_flat_map(|n| vec(any::<u8>(), n));
    (
        0u8..20,
        0u8..4,
        body,
        prop::option::weighted(0.1, any::<u16>()),
    )
        .prop_map(|(kind, flags, body, declared)| {
            let mut m = raw_msg(kind, flags, &body);
            if let Some(d) = declared {
                m[2..4].copy_from_slice(&d.to_le_bytes());
            }
            m
        })
}

proptest! {
    #[test]
    fn prop_round_trip_message_sequences(
        msgs in vec(msg(), 0..80),
        buf_len in buf_len(),
        sender in any::<u32>(),
        epoch in any::<u64>(),
        seq0 in any::<u64>(),
    ) {
        let frames = build_frames(&msgs, buf_len, sender, epoch, seq0);
        let cap = buf_len.min(MAX_FRAME_BYTES);
        let sent: Vec<M> = frames.iter().flat_map(|f| f.msgs.iter().cloned()).collect();
        let expected: Vec<M> = msgs.iter().filter(|m| m.wire_len() <= cap - MIN_FRAME_BYTES).cloned().collect();
        prop_assert_eq!(&sent, &expected);
        for (i, f) in frames.iter().enumerate() {
            prop_assert_eq!(f.seq, seq0.wrapping_add(i as u64));
            prop_assert!(f.bytes.len() <= cap);
            let r = FrameReader::new(&f.bytes).expect("a built frame decodes");
            prop_assert_eq!((r.sender(), r.epoch(), r.packet_seq()), (sender, epoch, f.seq));
            prop_assert_eq!(r.header.magic.get(), MAGIC);
            prop_assert_eq!(r.header.version, VERSION);
            prop_assert_eq!(r.header.flags, 0);
            prop_assert_eq!(r.header.msg_count.get() as usize, f.msgs.len());
            prop_assert_eq!(r.header.payload_len.get() as usize, f.bytes.len() - MIN_FRAME_BYTES);
            prop_assert!(f.bytes[f.bytes.len() - TRAILER_BYTES..].iter().all(|&b| b == 0), "tag slot is zeroed");
            let got = exercise(&f.bytes).expect("a built frame decodes");
            prop_assert_eq!(&got, &f.msgs);
        }
    }

    #[test]
    fn prop_arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..2048)) {
        let _ = exercise(&bytes);
    }

    #[test]
    fn prop_random_payload_under_valid_header_never_panics(
        payload in vec(any::<u8>(), 0..1024),
        count in 0u16..64,
    ) {
        let _ = exercise(&raw_frame(count, &payload));
    }

    #[test]
    fn prop_structured_garbage_never_panics(msgs in vec(raw_garbage_msg(), 0..16), count_delta in -1i32..=1) {
        let count = (msgs.len() as i32 + count_delta).max(0) as u16;
        // On success `exercise` has checked that exactly `count` messages came out.
        let _ = exercise(&raw_frame(count, &msgs.concat()));
    }

    #[test]
    fn prop_mutated_frames_never_panic(
        msgs in vec(msg(), 1..20),
        flips in vec((any::<Index>(), 1u8..=255), 0..4),
        cut in prop::option::of(any::<Index>()),
        extra in vec(any::<u8>(), 0..32),
        fix_len in any::<bool>(),
    ) {
        let original = build_frames(&msgs, 4096, 1, 2, 3).swap_remove(0);
        let mut f = original.bytes.clone();
        for (at, x) in &flips {
            let i = at.index(f.len());
            f[i] ^= x;
        }
        if let Some(cut) = cut {
            f.truncate(cut.index(f.len() + 1));
        }
        f.extend_from_slice(&extra);
        if fix_len && f.len() >= MIN_FRAME_BYTES {
            // Keep the length consistent so the mutation reaches the message parser.
            let payload_len = (f.len() - MIN_FRAME_BYTES) as u32;
            set_payload_len(&mut f, payload_len);
        }
        let result = exercise(&f);
        if flips.is_empty() && cut.is_none() && extra.is_empty() {
            prop_assert_eq!(result.expect("unmutated frame decodes"), original.msgs);
        }
    }

    #[test]
    fn prop_tag_bytes_are_not_interpreted(msgs in vec(msg(), 0..20), tag in any::<[u8; TRAILER_BYTES]>()) {
        let original = build_frames(&msgs, 4096, 1, 2, 3).swap_remove(0);
        let mut f = original.bytes.clone();
        let at = f.len() - TRAILER_BYTES;
        f[at..].copy_from_slice(&tag);
        prop_assert_eq!(exercise(&f).expect("tag content does not matter"), original.msgs);
    }
}

#[test]
fn submit_round_trip() {
    let mut entries = Vec::new();
    encode_entry(
        &mut entries,
        &Entry {
            section: 5,
            key: 77,
            value: Some(b"abc"),
            private: false,
        },
    );
    let mut buf = vec![0u8; 512];
    let mut fb = FrameBuilder::new(&mut buf, 900, 0, 1);
    assert!(fb.push_submit(3, 42, (&entries, 1), (&[], 0)));
    let len = fb.finish();
    let f = FrameReader::new(&buf[..len]).expect("valid");
    check_visits(&f, &buf[..len]);
    let msgs: Vec<Msg<'_>> = f.msgs().collect();
    let [Msg::Submit(u)] = msgs.as_slice() else {
        panic!("one SUBMIT expected, got {msgs:?}")
    };
    assert_eq!((u.channel(), u.op()), (3, 42));
    let got: Vec<Entry<'_>> = u.entries().collect();
    assert_eq!(
        got,
        vec![Entry {
            section: 5,
            key: 77,
            value: Some(&b"abc"[..]),
            private: false
        }]
    );
}

// ---------------------------------------------------------------------------------------------
// UPDATE_RUN
// ---------------------------------------------------------------------------------------------

/// What a sender pushes in the run round trip: an op of a channel (its ID the channel's next,
/// or one after a gap), or another message between ops.
#[derive(Debug, Clone)]
enum Send {
    Op {
        channel: u32,
        gap: bool,
        public: Vec<E>,
        private: Vec<E>,
    },
    Other(M),
}

fn send() -> impl Strategy<Value = Send> {
    prop_oneof![
        8 => (0u32..3, prop::bool::weighted(0.1), vec(entry(), 0..3), vec(entry(), 0..2))
            .prop_map(|(channel, gap, public, private)| Send::Op { channel, gap, public, private }),
        1 => arb().prop_map(|a| Send::Other(M::Ack(a))),
        1 => arb().prop_map(|h| Send::Other(M::Heartbeat(h))),
    ]
}

/// A raw UPDATE_RUN body: `RunFixed`, then each op: its two counts and its entries as given.
fn run_body(first_op: u64, ops: &[(u8, u8, Vec<u8>)]) -> Vec<u8> {
    let fx = RunFixed {
        channel: 4.into(),
        first_op: first_op.into(),
    };
    let mut body = fx.as_bytes().to_vec();
    for (public, private, entries) in ops {
        body.extend([*public, *private]);
        body.extend_from_slice(entries);
    }
    body
}

proptest! {
    /// Ops pushed with `push_run_update` come back as the same updates, in order, with their op
    /// IDs and cookies (the sections of their public entries) derived; consecutive ops of one
    /// channel with nothing between them share one message.
    #[test]
    fn prop_runs_round_trip(
        sends in vec(send(), 1..120),
        first_op in 1u64..MAX_RUN_OP - 1_000,
        buf_len in prop_oneof![2600usize..9000, Just(MAX_FRAME_BYTES)],
    ) {
        let mut next_op = [first_op; 3];
        let mut buf = vec![0xA5u8; buf_len];
        let mut frames: Vec<(Vec<u8>, Vec<M>, usize)> = Vec::new();
        let (mut pending, mut msgs, mut prev): (Vec<M>, usize, Option<(u32, u64)>) = (Vec::new(), 0, None);
        let mut b = FrameBuilder::new(&mut buf, 1, 2, 3);
        for s in &sends {
            let (expect, joins) = match s {
                Send::Op { channel, gap, public, private } => {
                    let ch = *channel as usize;
                    next_op[ch] += 1 + u64::from(*gap);
                    let op = next_op[ch];
                    let cookie = public.iter().fold(0u64, |c, e| c | 1 << e.section);
                    let u = Upd { flags: 0, channel: *channel, op, cookie, public: public.clone(), private: private.clone() };
                    let joins = prev == Some((*channel, op - 1));
                    prev = Some((*channel, op));
                    (M::Update(u), joins)
                }
                Send::Other(m) => {
                    prev = None;
                    (m.clone(), false)
                }
            };
            let push = |b: &mut FrameBuilder<'_>| match (s, &expect) {
                (Send::Op { .. }, M::Update(u)) => {
                    let (public, n_public) = encode_entries(&u.public);
                    let (private, n_private) = encode_entries(&u.private);
                    b.push_run_update(u.channel, u.op, u.cookie, (&public, n_public), (&private, n_private))
                }
                (_, m) => m.push(b),
            };
            if push(&mut b) {
                msgs += usize::from(!joins);
            } else {
                prop_assert!(!b.is_empty(), "every generated message fits an empty frame");
                let n = b.finish();
                frames.push((buf[..n].to_vec(), std::mem::take(&mut pending), msgs));
                b = FrameBuilder::new(&mut buf, 1, 2, 3);
                prop_assert!(push(&mut b));
                msgs = 1;
            }
            pending.push(expect);
        }
        let n = b.finish();
        frames.push((buf[..n].to_vec(), pending, msgs));
        for (bytes, expected, msgs) in &frames {
            let r = FrameReader::new(bytes).expect("a built frame decodes");
            prop_assert_eq!(r.header.msg_count.get() as usize, *msgs);
            check_visits(&r, bytes);
            let got: Vec<M> = r.msgs().map(M::from_msg).collect();
            prop_assert_eq!(&got, expected);
        }
    }
}

#[test]
fn rejects_malformed_runs() {
    let one = entry_bytes(5, 300, Some(b"abc"));
    let run = |flags: u8, body: &[u8]| frame_of(&[raw_msg(Kind::UpdateRun as u8, flags, body)]);
    let good = run_body(7, &[(1, 0, one.clone()), (0, 1, one.clone())]);
    let msgs = exercise_run(&run(0, &good));
    assert_eq!(msgs.len(), 2);
    assert_eq!((msgs[0].op, msgs[0].cookie), (7, 1 << 5));
    assert_eq!(
        (msgs[1].op, msgs[1].cookie),
        (8, 0),
        "private entries make no cookie"
    );
    // Flags are reserved.
    assert_eq!(reject(&run(1, &good)), WireError::BadField);
    // No ops, or shorter than `RunFixed`.
    assert_eq!(reject(&run(0, &run_body(7, &[]))), WireError::BadBodyLength);
    assert_eq!(reject(&run(0, &good[..11])), WireError::BadBodyLength);
    // Op 0 does not exist; the last op may not pass `MAX_RUN_OP`.
    assert_eq!(
        reject(&run(0, &run_body(0, &[(1, 0, one.clone())]))),
        WireError::BadField
    );
    let two = [(1, 0, one.clone()), (1, 0, one.clone())];
    assert_eq!(
        reject(&run(0, &run_body(MAX_RUN_OP, &two))),
        WireError::BadField
    );
    assert_eq!(
        exercise_run(&run(0, &run_body(MAX_RUN_OP - 1, &two))).len(),
        2
    );
    assert_eq!(
        reject(&run(0, &run_body(u64::MAX, &two))),
        WireError::BadField
    );
    // Counts that the entries do not match, a truncated op, bytes left over.
    assert_eq!(
        reject(&run(0, &run_body(7, &[(2, 0, one.clone())]))),
        WireError::BadEntry
    );
    assert_eq!(
        reject(&run(0, &good[..good.len() - 1])),
        WireError::BadEntry
    );
    assert_eq!(
        reject(&run(0, &[&good[..], &[1]].concat())),
        WireError::BadEntry
    );
    // An op cut inside its counts.
    let cut = [&run_body(7, &[])[..], &[0]].concat();
    assert_eq!(reject(&run(0, &cut)), WireError::BadEntry);
}

/// Decodes a frame of runs, every message an update; returns them.
fn exercise_run(bytes: &[u8]) -> Vec<Upd> {
    let r = FrameReader::new(bytes).expect("valid run");
    check_visits(&r, bytes);
    r.msgs()
        .map(|m| match M::from_msg(m) {
            M::Update(u) => u,
            other => panic!("{other:?}"),
        })
        .collect()
}

/// A message pushed between two ops of a channel ends the run; a new frame starts a new one.
#[test]
fn a_run_holds_only_consecutive_ops_of_one_channel() {
    let mut e = Vec::new();
    encode_entry(
        &mut e,
        &Entry {
            section: 1,
            key: 9,
            value: Some(b"v"),
            private: false,
        },
    );
    let mut buf = vec![0u8; 4096];
    let mut b = FrameBuilder::new(&mut buf, 1, 2, 3);
    for (channel, op) in [
        (1, 10),
        (1, 11),
        (1, 12),
        (2, 13),
        (2, 14),
        (1, 13),
        (1, 15),
    ] {
        assert!(b.push_run_update(channel, op, 2, (&e, 1), (&[], 0)));
    }
    // Runs: ch 1 10..=12, ch 2 13..=14, ch 1 13, ch 1 15.
    assert_eq!(b.count(), 4);
    let ack = ChannelOp {
        channel: 1.into(),
        generation: 0.into(),
        op: 1.into(),
    };
    assert!(b.push(Kind::Ack, &ack));
    assert!(b.push_run_update(1, 16, 2, (&e, 1), (&[], 0)));
    assert_eq!(b.count(), 6, "the ack ended the run");
    let n = b.finish();
    let ops: Vec<(u32, u64)> = FrameReader::new(&buf[..n])
        .unwrap()
        .msgs()
        .filter_map(|m| match m {
            Msg::Update(u) => Some((u.channel(), u.op())),
            _ => None,
        })
        .collect();
    assert_eq!(
        ops,
        [
            (1, 10),
            (1, 11),
            (1, 12),
            (2, 13),
            (2, 14),
            (1, 13),
            (1, 15),
            (1, 16)
        ]
    );
}

/// An op with more entries than a run's one-byte counts hold goes as an UPDATE of its own,
/// between runs, and decodes the same.
#[test]
fn an_op_of_more_than_255_entries_goes_as_an_update() {
    let mut e = Vec::new();
    for key in 0..300u64 {
        encode_entry(
            &mut e,
            &Entry {
                section: 3,
                key,
                value: Some(b"v"),
                private: false,
            },
        );
    }
    let mut one = Vec::new();
    encode_entry(
        &mut one,
        &Entry {
            section: 1,
            key: 9,
            value: Some(b"v"),
            private: false,
        },
    );
    let mut buf = vec![0u8; 8192];
    let mut b = FrameBuilder::new(&mut buf, 1, 2, 3);
    assert!(b.push_run_update(1, 10, 1 << 1, (&one, 1), (&[], 0)));
    assert!(b.push_run_update(1, 11, 1 << 3, (&e, 300), (&[], 0)));
    assert!(b.push_run_update(1, 12, 1 << 1, (&one, 1), (&[], 0)));
    assert_eq!(b.count(), 3, "a run, an UPDATE, a new run");
    let n = b.finish();
    let ops: Vec<(u64, u64, usize)> = FrameReader::new(&buf[..n])
        .unwrap()
        .msgs()
        .map(|m| match m {
            Msg::Update(u) => (u.op(), u.cookie(), u.entries().count()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ops, [(10, 1 << 1, 1), (11, 1 << 3, 300), (12, 1 << 1, 1)]);
}

/// `copy_short` copies every length exactly, across each of its size classes and their edges,
/// and writes nothing past the end.
#[test]
fn copy_short_copies_every_length() {
    for n in 0..=130usize {
        let src: Vec<u8> = (0..n).map(|i| (i * 7 + n) as u8).collect();
        let mut dst = vec![0xEEu8; n + 8];
        copy_short(&mut dst[..n], &src);
        assert_eq!(&dst[..n], &src[..], "length {n}");
        assert!(
            dst[n..].iter().all(|&b| b == 0xEE),
            "length {n} wrote past the end"
        );
    }
}
