//! Feeds arbitrary datagrams to the decoder. It must never panic, and a frame it accepts must
//! keep every promise of validation while every field of every message is read.

#![no_main]

use libfuzzer_sys::fuzz_target;
use statesync::wire::{
    BULK_FLAG_PRIVATE, BulkEntry, FrameReader, Kind, MIN_FRAME_BYTES, Msg, SECTIONS,
    UPDATE_FLAG_PREAPPLIED, UpdateView, entry_wire_len,
};
use zerocopy::{Immutable, IntoBytes};

/// Folds every byte of a fixed body (so every field is read) into a value the optimiser must keep.
fn fold<T: IntoBytes + Immutable>(body: &T) -> u64 {
    body.as_bytes()
        .iter()
        .fold(0u64, |acc, &b| acc.rotate_left(5) ^ b as u64)
}

fn fold_bytes(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0u64, |acc, &b| acc.rotate_left(3) ^ b as u64)
}

fn update(u: &UpdateView<'_>) -> u64 {
    assert_eq!(u.flags & !UPDATE_FLAG_PREAPPLIED, 0);
    let n_public = u.fixed.public_count.get() as usize;
    let n_all = n_public + u.fixed.private_count.get() as usize;
    let mut acc = fold(&u.fixed) ^ u.channel() as u64 ^ u.op() ^ u.cookie();
    let (mut n, mut bytes) = (0usize, 0usize);
    if n_public == 0 {
        assert_eq!(u.public_len, 0);
    }
    for e in u.entries() {
        assert_eq!(e.private, n >= n_public, "public entries come first");
        assert!((e.section as usize) < SECTIONS);
        bytes += entry_wire_len(e.value.map_or(0, <[u8]>::len));
        if n + 1 == n_public {
            assert_eq!(bytes, u.public_len);
        }
        acc = acc.rotate_left(7) ^ e.section as u64 ^ e.key ^ e.value.map_or(u64::MAX, fold_bytes);
        n += 1;
    }
    assert_eq!(n, n_all);
    assert_eq!(bytes, u.entry_bytes.len());
    acc
}

fn bulk_entry(e: &BulkEntry, value: &[u8]) -> u64 {
    assert_eq!(e.value_len.get() as usize, value.len());
    assert!((e.section as usize) < SECTIONS);
    assert_eq!(e.flags & !BULK_FLAG_PRIVATE, 0);
    fold(e) ^ fold_bytes(value)
}

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = FrameReader::new(data) else {
        return;
    };
    assert_eq!(
        data.len(),
        MIN_FRAME_BYTES + frame.header.payload_len.get() as usize
    );
    let mut acc = fold(&frame.header) ^ frame.sender() as u64 ^ frame.epoch() ^ frame.packet_seq();
    let mut count = 0usize;
    let mut heartbeats = 0usize;
    for msg in frame.msgs() {
        count += 1;
        heartbeats += usize::from(matches!(msg, Msg::Heartbeat(_)));
        let x = match msg {
            Msg::Update(u) | Msg::Submit(u) => update(&u),
            Msg::Ack(b) | Msg::FwdAck(b) | Msg::LaQuery(b) => fold(&b),
            Msg::Commit(b) => fold(&b),
            Msg::Nack(b) => {
                assert!(b.from.get() <= b.to.get());
                fold(&b)
            }
            Msg::Heartbeat(b) => fold(&b),
            Msg::LaReply(b) => fold(&b),
            Msg::ReplayBegin(b) | Msg::XferBegin(b) => fold(&b),
            Msg::ReplayEntry(e, v) | Msg::XferEntry(e, v) => bulk_entry(&e, v),
            Msg::ReplayEnd(b) | Msg::XferEnd(b) => fold(&b),
            Msg::ReplayAck(b) | Msg::XferAck(b) => fold(&b),
            Msg::XferHistory(b) => fold(&b),
        };
        acc = acc.rotate_left(11) ^ x;
    }
    assert_eq!(count, frame.header.msg_count.get() as usize);
    // The header-only scan agrees with the parsed messages.
    assert_eq!(frame.contains(Kind::Heartbeat), heartbeats > 0);
    std::hint::black_box(acc);
});
