//! The Wireshark dissector (`tools/wireshark/statesync.lua`) on a real capture.
//!
//! `tools/check-dissector.sh` captures a short `churn` run, an unauthenticated one and a `drill`
//! round on loopback and checks with `tshark` that every message kind and frame type appears and
//! that every field decodes, with no expert error. That proves the fields are there, not that
//! they are right: a field read at the wrong offset still decodes. So this test then decodes
//! every captured datagram again with the Rust decoder (`statesync::wire`, the source of truth)
//! and compares every value `tshark` printed with it.
//!
//! Skips, saying why, where `tshark`/`dumpcap` are absent or capturing is not permitted.

use statesync::wire::{
    AuthTrailer, FRAME_FLAG_AUTH, FrameReader, HEADER_BYTES, Msg, TRAILER_BYTES,
};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use zerocopy::FromBytes;

/// Exit status of the script when it cannot run here.
const SKIPPED: i32 = 77;

#[test]
fn dissector_decodes_every_field_of_a_real_capture_as_the_rust_decoder_does() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::env::temp_dir().join(format!("statesync-wireshark-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = Command::new(format!("{root}/tools/check-dissector.sh"))
        .env("STATESYNC_BIN", env!("CARGO_BIN_EXE_statesync"))
        .env("CHECK_DISSECTOR_OUT", &out)
        .output()
        .expect("run tools/check-dissector.sh");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    if run.status.code() == Some(SKIPPED) {
        println!("SKIPPED: the dissector check cannot run here:\n{stdout}{stderr}");
        eprintln!("SKIPPED: the dissector check cannot run here:\n{stdout}{stderr}");
        return;
    }
    assert!(
        run.status.success(),
        "tools/check-dissector.sh failed:\n{stdout}\n{stderr}"
    );
    println!("{stdout}");

    let datagrams = udp_payloads(&out.join("cap.pcap"));
    let tsv = std::fs::read_to_string(out.join("fields.tsv")).expect("read fields.tsv");
    let mut lines = tsv.lines();
    let header: Vec<&str> = lines
        .next()
        .expect("fields.tsv header")
        .split('\t')
        .collect();
    let mut compared = 0usize;
    let mut frames = 0usize;
    let mut wrong = Vec::new();
    for line in lines {
        let cols: Vec<&str> = line.split('\t').collect();
        let number: usize = cols[0].parse().expect("frame number");
        let bytes = datagrams
            .get(number - 1)
            .and_then(|d| d.as_deref())
            .unwrap_or_else(|| panic!("frame {number}: no UDP payload in cap.pcap"));
        let mut expected = BTreeMap::new();
        for frame in gso_segments(bytes) {
            expected_fields(frame, &mut expected)
                .unwrap_or_else(|e| panic!("frame {number}: the Rust decoder rejects it: {e}"));
        }
        frames += 1;
        if let Some(f) = expected.keys().find(|f| !header.contains(f)) {
            panic!("fields.tsv has no column {f}: tools/check-dissector.sh must ask tshark for it");
        }
        // Every statesync column (frame.number, udp.length and the expert columns are the
        // script's).
        for (i, name) in header.iter().enumerate() {
            if !name.starts_with("statesync.") {
                continue;
            }
            let got: Vec<String> = match cols.get(i).copied().unwrap_or("") {
                "" => Vec::new(),
                s => s.split(',').map(normalize).collect(),
            };
            let want = expected.get(name).cloned().unwrap_or_default();
            compared += want.len();
            if got != want && wrong.len() < 10 {
                wrong.push(format!(
                    "frame {number} {name}: tshark {got:?}, Rust {want:?}"
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "dissector and Rust decoder disagree (first {}):\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(frames > 0 && compared > 0, "nothing compared");
    println!("{frames} datagrams, {compared} field values equal to the Rust decoder's");
    let _ = std::fs::remove_dir_all(&out);
}

/// tshark prints integers in decimal or (base.HEX fields) as 0x…, booleans as 1/0 or
/// True/False, bytes as hex with or without colons: all become decimal or bare lower hex.
fn normalize(s: &str) -> String {
    if let Some(hex) = s.strip_prefix("0x") {
        return u64::from_str_radix(hex, 16).map_or_else(|_| s.into(), |v| v.to_string());
    }
    match s {
        "True" => "1".into(),
        "False" => "0".into(),
        _ => s.replace(':', "").to_ascii_lowercase(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The frames of a captured datagram. A UDP GSO send (`UDP_SEGMENT`) is captured on loopback
/// before the kernel cuts it into datagrams, as one datagram holding every segment: each is a
/// whole frame, as long as its header says. A length that runs past the end is left for the
/// decoder to reject.
fn gso_segments(mut bytes: &[u8]) -> Vec<&[u8]> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let len = bytes
            .get(12..16)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
            .map_or(bytes.len(), |payload| {
                (HEADER_BYTES + payload + TRAILER_BYTES).min(bytes.len())
            });
        let (frame, rest) = bytes.split_at(len);
        frames.push(frame);
        bytes = rest;
    }
    frames
}

/// Appends every field the dissector shows of one frame, as the Rust decoder reads it, to `m`:
/// each field's values in the order they occur (one per frame, per message or per entry).
fn expected_fields(
    bytes: &[u8],
    m: &mut BTreeMap<&'static str, Vec<String>>,
) -> Result<(), String> {
    let frame = FrameReader::new(bytes).map_err(|e| e.to_string())?;
    let mut put = |name: &'static str, v: String| m.entry(name).or_default().push(v);
    let h = frame.header;
    let (trailer, _) = AuthTrailer::read_from_prefix(&bytes[bytes.len() - TRAILER_BYTES..])
        .map_err(|_| "trailer")?;
    let seq = h.packet_seq.get();
    let frame_type = if h.flags & FRAME_FLAG_AUTH == 0 {
        "unauthenticated"
    } else if seq >> 63 == 1 {
        "hello"
    } else if trailer.receiver_boot.get() == 0 {
        "opener"
    } else {
        "data"
    };
    put("statesync.frame_type", frame_type.into());
    put("statesync.magic", h.magic.get().to_string());
    put("statesync.version", h.version.to_string());
    put("statesync.flags", h.flags.to_string());
    put(
        "statesync.flags.auth",
        (h.flags & FRAME_FLAG_AUTH).to_string(),
    );
    put("statesync.msg_count", h.msg_count.get().to_string());
    put("statesync.sender", h.sender.get().to_string());
    put("statesync.payload_len", h.payload_len.get().to_string());
    put("statesync.epoch", h.epoch.get().to_string());
    put("statesync.packet_seq", seq.to_string());
    put(
        "statesync.auth.sender_boot",
        trailer.sender_boot.get().to_string(),
    );
    put(
        "statesync.auth.receiver_boot",
        trailer.receiver_boot.get().to_string(),
    );
    put("statesync.auth.tag", hex(&trailer.tag));

    // Message headers, walked by hand (the reader hands out bodies only).
    let mut at = HEADER_BYTES;
    for msg in frame.msgs() {
        let (kind, flags) = (bytes[at], bytes[at + 1]);
        let body_len = u16::from_le_bytes([bytes[at + 2], bytes[at + 3]]);
        at += 4 + body_len as usize;
        put("statesync.msg.kind", kind.to_string());
        put("statesync.msg.flags", flags.to_string());
        put("statesync.msg.body_len", body_len.to_string());
        match msg {
            Msg::Update(u) | Msg::Submit(u) => {
                put("statesync.update.preapplied", (flags & 1).to_string());
                put("statesync.update.channel", u.channel().to_string());
                put(
                    "statesync.update.public_count",
                    u.fixed.public_count.get().to_string(),
                );
                put(
                    "statesync.update.private_count",
                    u.fixed.private_count.get().to_string(),
                );
                put("statesync.update.op", u.op().to_string());
                put("statesync.update.cookie", u.cookie().to_string());
                for e in u.entries() {
                    put("statesync.entry.private", u8::from(e.private).to_string());
                    put("statesync.entry.section", e.section.to_string());
                    let delete = u8::from(e.value.is_none());
                    put("statesync.entry.flags", delete.to_string());
                    put("statesync.entry.delete", delete.to_string());
                    let value = e.value.unwrap_or(&[]);
                    put("statesync.entry.value_len", value.len().to_string());
                    put("statesync.entry.key", e.key.to_string());
                    if !value.is_empty() {
                        put("statesync.entry.value", hex(value));
                    }
                }
            }
            Msg::Ack(c) | Msg::FwdAck(c) | Msg::LaQuery(c) => {
                put("statesync.chanop.channel", c.channel.get().to_string());
                put(
                    "statesync.chanop.generation",
                    c.generation.get().to_string(),
                );
                put("statesync.chanop.op", c.op.get().to_string());
            }
            Msg::Commit(c) => {
                put("statesync.commit.channel", c.channel.get().to_string());
                put("statesync.commit.reserved", c.reserved.get().to_string());
                put("statesync.commit.applied", c.applied.get().to_string());
                put("statesync.commit.held", c.held.get().to_string());
            }
            Msg::Nack(n) => {
                put("statesync.nack.channel", n.channel.get().to_string());
                put("statesync.nack.generation", n.generation.get().to_string());
                put("statesync.nack.from", n.from.get().to_string());
                put("statesync.nack.to", n.to.get().to_string());
            }
            Msg::Heartbeat(b) => {
                put("statesync.hb.role", b.role.to_string());
                put("statesync.hb.flags", b.flags.to_string());
                put("statesync.hb.flags.primary_lost", (b.flags & 1).to_string());
                put(
                    "statesync.hb.flags.needs_transfer",
                    (b.flags >> 1 & 1).to_string(),
                );
                put("statesync.hb.flags.joined", (b.flags >> 2 & 1).to_string());
                put(
                    "statesync.hb.flags.switchover",
                    (b.flags >> 3 & 1).to_string(),
                );
                put(
                    "statesync.hb.sync_version",
                    b.sync_version.get().to_string(),
                );
                put("statesync.hb.sync_mask", b.sync_mask.get().to_string());
                put(
                    "statesync.hb.boot_or_target",
                    b.boot_or_target.get().to_string(),
                );
                put("statesync.hb.vote", b.vote.get().to_string());
                put("statesync.hb.view_epoch", b.view_epoch.get().to_string());
            }
            Msg::LaReply(r) => {
                put("statesync.lareply.channel", r.channel.get().to_string());
                put("statesync.lareply.flags", r.flags.get().to_string());
                put(
                    "statesync.lareply.flags.unknown",
                    (r.flags.get() & 1).to_string(),
                );
                put(
                    "statesync.lareply.last_applied",
                    r.last_applied.get().to_string(),
                );
                put(
                    "statesync.lareply.cookie_above",
                    r.cookie_above.get().to_string(),
                );
                put(
                    "statesync.lareply.data_epoch",
                    r.data_epoch.get().to_string(),
                );
            }
            Msg::ReplayBegin(b) | Msg::XferBegin(b) => {
                put("statesync.begin.channel", b.channel.get().to_string());
                put("statesync.begin.stream", b.stream.get().to_string());
                put("statesync.begin.sections", b.sections.get().to_string());
                put("statesync.begin.base_op", b.base_op.get().to_string());
                put("statesync.begin.acked_op", b.acked_op.get().to_string());
            }
            Msg::ReplayEntry(e, value) | Msg::XferEntry(e, value) => {
                put("statesync.bentry.channel", e.channel.get().to_string());
                put("statesync.bentry.stream", e.stream.get().to_string());
                put("statesync.bentry.index", e.index.get().to_string());
                put("statesync.bentry.section", e.section.to_string());
                put("statesync.bentry.flags", e.flags.to_string());
                put("statesync.bentry.flags.private", (e.flags & 1).to_string());
                put("statesync.bentry.value_len", e.value_len.get().to_string());
                put("statesync.bentry.key", e.key.get().to_string());
                if !value.is_empty() {
                    put("statesync.bentry.value", hex(value));
                }
            }
            Msg::ReplayEnd(e) | Msg::XferEnd(e) => {
                put("statesync.end.channel", e.channel.get().to_string());
                put("statesync.end.stream", e.stream.get().to_string());
                put("statesync.end.total", e.total.get().to_string());
                put("statesync.end.reserved", e.reserved.get().to_string());
                put("statesync.end.base_op", e.base_op.get().to_string());
            }
            Msg::ReplayAck(a) | Msg::XferAck(a) => {
                put("statesync.bulkack.channel", a.channel.get().to_string());
                put("statesync.bulkack.stream", a.stream.get().to_string());
                put(
                    "statesync.bulkack.next_index",
                    a.next_index.get().to_string(),
                );
                put("statesync.bulkack.done", a.done.get().to_string());
            }
            Msg::XferHistory(x) => {
                put("statesync.history.channel", x.channel.get().to_string());
                put("statesync.history.stream", x.stream.get().to_string());
                put("statesync.history.index", x.index.get().to_string());
                put("statesync.history.reserved", x.reserved.get().to_string());
                put("statesync.history.epoch", x.epoch.get().to_string());
                put("statesync.history.start_op", x.start_op.get().to_string());
            }
        }
    }
    Ok(())
}

/// The UDP payload of every record of a classic pcap file (`None` for a record that is not
/// IPv4/UDP), in record order: index i is tshark's frame number i + 1.
fn udp_payloads(path: &Path) -> Vec<Option<Vec<u8>>> {
    let data = std::fs::read(path).expect("read cap.pcap");
    assert!(data.len() >= 24, "cap.pcap too short");
    let magic = u32::from_le_bytes(data[0..4].try_into().expect("4 bytes"));
    assert!(
        magic == 0xa1b2_c3d4 || magic == 0xa1b2_3c4d,
        "cap.pcap is not a little-endian classic pcap (magic {magic:#x})"
    );
    let linktype = u32::from_le_bytes(data[20..24].try_into().expect("4 bytes"));
    assert_eq!(linktype, 1, "loopback capture should be Ethernet framed");
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let incl = u32::from_le_bytes(data[at + 8..at + 12].try_into().expect("4 bytes")) as usize;
        let orig = u32::from_le_bytes(data[at + 12..at + 16].try_into().expect("4 bytes")) as usize;
        let rec = &data[at + 16..(at + 16 + incl).min(data.len())];
        at += 16 + incl;
        out.push((incl == orig).then(|| udp_of_ethernet(rec)).flatten());
    }
    out
}

fn udp_of_ethernet(frame: &[u8]) -> Option<Vec<u8>> {
    let ip = frame.get(14..)?;
    if frame.get(12..14)? != [0x08, 0x00] || ip.first()? >> 4 != 4 || *ip.get(9)? != 17 {
        return None;
    }
    let udp = ip.get(((ip[0] & 0x0f) as usize) * 4..)?;
    let len = u16::from_be_bytes([*udp.get(4)?, *udp.get(5)?]) as usize;
    udp.get(8..len).map(<[u8]>::to_vec)
}
