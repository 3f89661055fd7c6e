//! Feeds arbitrary datagrams to the decoder. It must never panic, and a frame it accepts must
//! keep every promise of validation while each field of each message is read.

#![no_main]

use libfuzzer_sys::fuzz_target;
use statesync::wire::{
    BULK_FLAG_PRIVATE, BulkEntry, FrameReader, MIN_FRAME_BYTES, Msg, SECTIONS, UPDATE_FLAG_PREAPPLIED, entry_wire_len,
};

fn bulk_entry(e: &BulkEntry, value: &[u8]) -> u64 {
    assert_eq!(e.value_len.get() as usize, value.len());
    assert!((e.section as usize) < SECTIONS);
    assert_eq!(e.flags & !BULK_FLAG_PRIVATE, 0);
    let sum = value.iter().map(|&b| b as u64).sum::<u64>();
    (e.channel.get() as u64) ^ (e.stream.get() as u64) ^ (e.index.get() as u64) ^ e.key.get() ^ sum
}

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = FrameReader::new(data) else { return };
    let h = &frame.header;
    assert_eq!(data.len(), MIN_FRAME_BYTES + h.payload_len.get() as usize);
    let mut acc = h.flags as u64 ^ frame.sender() as u64 ^ frame.epoch() ^ frame.packet_seq();
    let mut count = 0usize;
    for msg in frame.msgs() {
        count += 1;
        acc = acc.rotate_left(7)
            ^ match msg {
                Msg::Update(u) => {
                    assert_eq!(u.flags & !UPDATE_FLAG_PREAPPLIED, 0);
                    let n_public = u.fixed.public_count.get() as usize;
                    let n_all = n_public + u.fixed.private_count.get() as usize;
                    let (mut n, mut bytes, mut x) = (0usize, 0usize, u.channel() as u64 ^ u.op() ^ u.cookie());
                    for e in u.entries() {
                        assert_eq!(e.private, n >= n_public);
                        assert!((e.section as usize) < SECTIONS);
                        bytes += entry_wire_len(e.value.map_or(0, <[u8]>::len));
                        if n + 1 == n_public {
                            assert_eq!(bytes, u.public_len);
                        }
                        let sum = e.value.map_or(u64::MAX, |v| v.iter().map(|&b| b as u64).sum());
                        x ^= e.section as u64 ^ e.key ^ sum;
                        n += 1;
                    }
                    assert_eq!(n, n_all);
                    assert_eq!(bytes, u.entry_bytes.len());
                    x
                }
                Msg::Ack(b) | Msg::FwdAck(b) | Msg::LaQuery(b) => {
                    b.channel.get() as u64 ^ b.reserved.get() as u64 ^ b.op.get()
                }
                Msg::Commit(b) => b.channel.get() as u64 ^ b.reserved.get() as u64 ^ b.applied.get() ^ b.held.get(),
                Msg::Nack(b) => {
                    assert!(b.from.get() <= b.to.get());
                    b.channel.get() as u64 ^ b.reserved.get() as u64 ^ b.from.get() ^ b.to.get()
                }
                Msg::Heartbeat(b) => {
                    b.role as u64
                        ^ b.flags as u64
                        ^ b.reserved.get() as u64
                        ^ b.sync_mask.get() as u64
                        ^ b.target.get() as u64
                        ^ b.reserved2.get() as u64
                }
                Msg::LaReply(b) => {
                    b.channel.get() as u64 ^ b.flags.get() as u64 ^ b.last_applied.get() ^ b.cookie_above.get()
                }
                Msg::ReplayBegin(b) | Msg::XferBegin(b) => {
                    b.channel.get() as u64
                        ^ b.stream.get() as u64
                        ^ b.sections.get()
                        ^ b.base_op.get()
                        ^ b.acked_op.get()
                }
                Msg::ReplayEntry(e, v) | Msg::XferEntry(e, v) => bulk_entry(&e, v),
                Msg::ReplayEnd(b) | Msg::XferEnd(b) => {
                    b.channel.get() as u64
                        ^ b.stream.get() as u64
                        ^ b.total.get() as u64
                        ^ b.reserved.get() as u64
                        ^ b.base_op.get()
                }
                Msg::ReplayAck(b) | Msg::XferAck(b) => {
                    b.channel.get() as u64 ^ b.stream.get() as u64 ^ b.next_index.get() as u64 ^ b.done.get() as u64
                }
                Msg::XferHistory(b) => {
                    b.channel.get() as u64
                        ^ b.stream.get() as u64
                        ^ b.index.get() as u64
                        ^ b.reserved.get() as u64
                        ^ b.epoch.get()
                        ^ b.start_op.get()
                }
            };
    }
    assert_eq!(count, h.msg_count.get() as usize);
    std::hint::black_box(acc);
});
