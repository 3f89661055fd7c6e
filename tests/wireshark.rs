//! The Wireshark dissector (`tools/wireshark/statesync.lua`) on a real capture.
//!
//! `tools/check-dissector.sh` captures a short `churn` run, an unauthenticated one and a `drill`
//! round on loopback and checks with `tshark` that every message kind and frame type appears and
//! that every field decodes, with no expert error. That proves the fields are there, not that
//! they are right: a field read at the wrong offset still decodes. So this test then decodes
//! every captured datagram again with the Rust decoder (`statesync::wire`, the source of truth)
//! and compares every value `tshark` printed with it.
//!
//! A capture holds what the daemons happened to send. A second test builds frames itself with
//! `FrameBuilder` (UPDATE_RUN through `push_run_update` with narrow and wide keys, empty and
//! 3-byte-length values, deletes, private entries, ops of 0 and 255 entries and runs that end and
//! restart; an op of more than 255 entries, which goes as an UPDATE; PREAPPLIED UPDATE and
//! SUBMIT; a GSO datagram) and malformed ones next to them (among them run ops whose counts
//! disagree with the entry bytes), has `tools/check-dissector.sh --decode` dissect them, and
//! checks the same: every value equal to the Rust decoder's, and an expert error exactly on the
//! frames the Rust decoder rejects.
//!
//! Skips, saying why, where `tshark`/`dumpcap` are absent or capturing is not permitted (the
//! built frames need `tshark` only).

use statesync::wire::{
    AuthTrailer, ChannelOp, ENTRY_HEAD_DELETE, ENTRY_HEAD_WIDE_KEY, Entry, FRAME_FLAG_AUTH,
    FrameBuilder, FrameReader, HEADER_BYTES, Kind, MAX_FRAME_BYTES, MAX_RUN_OP, Msg, RunFixed,
    TRAILER_BYTES, UPDATE_FLAG_PREAPPLIED, encode_entry, entry_head_offsets,
};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use zerocopy::FromBytes;

/// Exit status of the script when it cannot run here.
const SKIPPED: i32 = 77;

/// Runs `tools/check-dissector.sh` with `args`, its output in `out`; returns its standard
/// output, or `None` (having said why) when the script cannot run here. Panics when it fails.
fn check_dissector(args: &[&Path], out: &Path) -> Option<String> {
    let root = env!("CARGO_MANIFEST_DIR");
    let run = Command::new(format!("{root}/tools/check-dissector.sh"))
        .args(args)
        .env("STATESYNC_BIN", env!("CARGO_BIN_EXE_statesync"))
        .env("CHECK_DISSECTOR_OUT", out)
        .output()
        .expect("run tools/check-dissector.sh");
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&run.stderr);
    if run.status.code() == Some(SKIPPED) {
        println!("SKIPPED: the dissector check cannot run here:\n{stdout}{stderr}");
        eprintln!("SKIPPED: the dissector check cannot run here:\n{stdout}{stderr}");
        return None;
    }
    assert!(
        run.status.success(),
        "tools/check-dissector.sh {args:?} failed:\n{stdout}\n{stderr}"
    );
    Some(stdout)
}

#[test]
fn dissector_decodes_every_field_of_a_real_capture_as_the_rust_decoder_does() {
    let out = std::env::temp_dir().join(format!("statesync-wireshark-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let Some(stdout) = check_dissector(&[], &out) else {
        return;
    };
    println!("{stdout}");

    let datagrams = udp_payloads(&out.join("cap.pcap"));
    let tsv = std::fs::read_to_string(out.join("fields.tsv")).expect("read fields.tsv");
    let (frames, compared) = compare_with_rust(&tsv, |number| {
        datagrams
            .get(number - 1)
            .and_then(|d| d.as_deref())
            .unwrap_or_else(|| panic!("frame {number}: no UDP payload in cap.pcap"))
    });
    println!("{frames} datagrams, {compared} field values equal to the Rust decoder's");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn dissector_decodes_built_frames_and_flags_malformed_ones_as_the_rust_decoder_does() {
    let out =
        std::env::temp_dir().join(format!("statesync-wireshark-built-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).expect("create output directory");
    let good = good_datagrams();
    let bad = malformed_datagrams();
    for (i, d) in good.iter().enumerate() {
        for frame in gso_segments(d) {
            if let Err(e) = FrameReader::new(frame) {
                panic!("built datagram {i}: the Rust decoder rejects it: {e}");
            }
        }
    }
    for (what, d) in &bad {
        assert!(
            FrameReader::new(d).is_err(),
            "{what}: the Rust decoder accepts it"
        );
    }
    let datagrams: Vec<&[u8]> = good
        .iter()
        .map(Vec::as_slice)
        .chain(bad.iter().map(|(_, d)| d.as_slice()))
        .collect();
    let pcap = out.join("built.pcap");
    write_pcap(&pcap, &datagrams);
    if check_dissector(&[Path::new("--decode"), &pcap], &out).is_none() {
        return;
    }
    let tsv = std::fs::read_to_string(out.join("fields.tsv")).expect("read fields.tsv");

    // Every row has a datagram; those the Rust decoder rejects must carry the dissector's
    // malformed-frame error (and no Lua error); the others go through the full comparison.
    let header: Vec<&str> = tsv
        .lines()
        .next()
        .expect("fields.tsv header")
        .split('\t')
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("fields.tsv has no column {name}"))
    };
    let (number_col, malformed_col, lua_col) = (
        col("frame.number"),
        col("statesync.malformed"),
        col("_ws.lua.error"),
    );
    let mut good_rows = vec![tsv.lines().next().expect("header").to_string()];
    let mut seen = 0;
    let mut wrong = Vec::new();
    for line in tsv.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let number: usize = cols[number_col].parse().expect("frame number");
        seen += 1;
        if cols.get(lua_col).is_some_and(|c| !c.is_empty()) {
            wrong.push(format!("frame {number}: Lua error {}", cols[lua_col]));
        }
        match number.checked_sub(good.len() + 1) {
            None => good_rows.push(line.to_string()),
            Some(b) => {
                if cols.get(malformed_col).is_none_or(|c| c.is_empty()) {
                    wrong.push(format!(
                        "frame {number} ({}): no malformed-frame error",
                        bad[b].0
                    ));
                }
            }
        }
    }
    assert_eq!(seen, datagrams.len(), "tshark did not show every datagram");
    assert!(
        wrong.is_empty(),
        "dissector wrong on built frames:\n{}",
        wrong.join("\n")
    );
    let (frames, compared) =
        compare_with_rust(&good_rows.join("\n"), |number| datagrams[number - 1]);
    println!(
        "{frames} built datagrams, {compared} field values equal to the Rust decoder's; {} malformed \
         ones flagged",
        bad.len()
    );
    let _ = std::fs::remove_dir_all(&out);
}

/// Compares every statesync column of `tsv` (tshark's fields, a row per datagram) with what the
/// Rust decoder reads in the datagram of that frame number; returns the number of rows and of
/// values compared, panicking on the first disagreements.
fn compare_with_rust<'a>(tsv: &str, datagram: impl Fn(usize) -> &'a [u8]) -> (usize, usize) {
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
        let bytes = datagram(number);
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
    (frames, compared)
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

    // Message headers, walked by hand (the reader hands out bodies only, and an UPDATE_RUN as
    // one update per op).
    let mut at = HEADER_BYTES;
    let end = HEADER_BYTES + h.payload_len.get() as usize;
    let mut msgs = frame.msgs();
    while at < end {
        let (kind, flags) = (bytes[at], bytes[at + 1]);
        let body_len = u16::from_le_bytes([bytes[at + 2], bytes[at + 3]]);
        let body = &bytes[at + 4..at + 4 + body_len as usize];
        at += 4 + body_len as usize;
        put("statesync.msg.kind", kind.to_string());
        put("statesync.msg.flags", flags.to_string());
        put("statesync.msg.body_len", body_len.to_string());
        if kind == Kind::UpdateRun as u8 {
            let (fx, _) = RunFixed::read_from_prefix(body).map_err(|_| "run fixed part")?;
            put("statesync.run.channel", fx.channel.get().to_string());
            put("statesync.run.first_op", fx.first_op.get().to_string());
            // The run's ops, walked here: each is its two count bytes, then its entries; each
            // must be the next update the reader hands out, with those very counts and entry
            // bytes, and together they must use up the body.
            let mut rest = &body[size_of::<RunFixed>()..];
            let mut ops = 0usize;
            while !rest.is_empty() {
                let Some(Msg::Update(u)) = msgs.next() else {
                    return Err(format!(
                        "UPDATE_RUN: {} bytes left and no update",
                        rest.len()
                    ));
                };
                let (public, private) = (u.fixed.public_count.get(), u.fixed.private_count.get());
                let op_len = 2 + u.entry_bytes.len();
                let op = rest
                    .get(..op_len)
                    .ok_or("UPDATE_RUN: updates longer than the run")?;
                if [u16::from(op[0]), u16::from(op[1])] != [public, private]
                    || !std::ptr::eq(op[2..].as_ptr(), u.entry_bytes.as_ptr())
                {
                    return Err(format!(
                        "UPDATE_RUN: op {} is not where the run's bytes put it",
                        u.op()
                    ));
                }
                rest = &rest[op_len..];
                ops += 1;
                if u.channel() != fx.channel.get() || u.flags != 0 {
                    return Err("UPDATE_RUN: update of another channel or with flags".into());
                }
                put("statesync.runop.op", u.op().to_string());
                put("statesync.runop.cookie", u.cookie().to_string());
                put("statesync.runop.public_count", public.to_string());
                put("statesync.runop.private_count", private.to_string());
                put_entries(&mut put, u.entries());
            }
            put("statesync.run.op_count", ops.to_string());
            continue;
        }
        let msg = msgs.next().ok_or("fewer messages than headers")?;
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
                put_entries(&mut put, u.entries());
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
    if msgs.next().is_some() {
        return Err("more messages than headers".into());
    }
    Ok(())
}

/// The fields of entries (UPDATE, SUBMIT, an UPDATE_RUN op) in the order they occur.
fn put_entries<'a>(
    put: &mut impl FnMut(&'static str, String),
    entries: impl Iterator<Item = Entry<'a>>,
) {
    for e in entries {
        let delete = e.value.is_none();
        let wide = e.key > u64::from(u32::MAX);
        let head = e.section
            | if delete { ENTRY_HEAD_DELETE } else { 0 }
            | if wide { ENTRY_HEAD_WIDE_KEY } else { 0 };
        put("statesync.entry.private", u8::from(e.private).to_string());
        put("statesync.entry.head", head.to_string());
        put("statesync.entry.section", e.section.to_string());
        put("statesync.entry.delete", u8::from(delete).to_string());
        put("statesync.entry.wide_key", u8::from(wide).to_string());
        put("statesync.entry.key", e.key.to_string());
        // A delete has no value length on the wire.
        if let Some(value) = e.value {
            put("statesync.entry.value_len", value.len().to_string());
            if !value.is_empty() {
                put("statesync.entry.value", hex(value));
            }
        }
    }
}

/// An entry in its wire encoding.
fn entry(section: u8, key: u64, value: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_entry(
        &mut out,
        &Entry {
            section,
            key,
            value,
            private: false,
        },
    );
    out
}

/// Several encoded entries and their count, as `push_*` take them.
fn entries(list: &[Vec<u8>]) -> (Vec<u8>, u16) {
    (list.concat(), list.len() as u16)
}

/// The cookie of an op whose public entries are `public` (encoded): the sections they write.
fn cookie(public: &(Vec<u8>, u16)) -> u64 {
    statesync::wire::codec_entry_iter(&public.0, public.1)
        .take(public.1 as usize)
        .fold(0, |c, e| c | 1 << e.section)
}

/// A value of `len` bytes that differ from one another.
fn value(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Builds one frame with `fill`; `auth` sets the frame's authentication flag and boot nonces
/// (the tag stays zero: the dissector shows it without checking it).
fn build(sender: u32, seq: u64, auth: bool, fill: impl FnOnce(&mut FrameBuilder<'_>)) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_FRAME_BYTES];
    let mut fb = FrameBuilder::new(&mut buf, sender, 3, seq);
    fill(&mut fb);
    let len = fb.finish();
    buf.truncate(len);
    if auth {
        buf[5] = FRAME_FLAG_AUTH;
        let t = len - TRAILER_BYTES;
        buf[t..t + 8].copy_from_slice(&0x0123_4567_89ab_cdefu64.to_le_bytes());
        buf[t + 8..t + 16].copy_from_slice(&0x0fed_cba9_8765_4321u64.to_le_bytes());
        buf[t + 16..].fill(0x5a);
    }
    buf
}

/// Well-formed datagrams: UPDATE_RUNs as the primary builds them, the other update kinds next
/// to them, and entries with narrow and wide keys, deletes and values of every length width.
fn good_datagrams() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let big = value(20_000, 7);
    let none: (&[u8], u16) = (&[], 0);
    // One run of five ops: public and private entries, deletes, an empty op, narrow keys up to
    // u32::MAX and wide ones from u32::MAX + 1 up, empty, short and long values.
    out.push(build(1, 1, true, |fb| {
        let op1 = entries(&[
            entry(0, 0, Some(&value(1, 1))),
            entry(5, u64::from(u32::MAX), Some(&value(127, 2))),
            entry(63, 128, None),
        ]);
        let op1_private = entries(&[entry(2, 16_384, Some(&value(128, 3)))]);
        let op3 = entries(&[
            entry(1, u64::MAX, Some(&value(300, 4))),
            entry(62, u64::from(u32::MAX) + 1, None),
        ]);
        let op4_private = entries(&[entry(3, 1 << 35, Some(&[])), entry(4, 1 << 56, None)]);
        let op5 = entries(&[entry(10, 99, Some(&big))]);
        assert!(fb.push_run_update(
            7,
            1,
            cookie(&op1),
            (&op1.0, op1.1),
            (&op1_private.0, op1_private.1)
        ));
        assert!(fb.push_run_update(7, 2, 0, none, none));
        assert!(fb.push_run_update(7, 3, cookie(&op3), (&op3.0, op3.1), none));
        assert!(fb.push_run_update(7, 4, 0, none, (&op4_private.0, op4_private.1)));
        assert!(fb.push_run_update(7, 5, cookie(&op5), (&op5.0, op5.1), none));
    }));
    // Runs that end and restart (another channel, another message, a gap in the op IDs) and
    // every other update kind; ops of 255 entries (the most a run's count byte holds) and of
    // 256 and 300 (sent as UPDATEs of their own, between runs).
    out.push(build(2, 2, true, |fb| {
        let a = entries(&[entry(1, 1, Some(b"a")), entry(2, 2, Some(b"bb"))]);
        let b = entries(&[entry(9, 300, None)]);
        let p = entries(&[entry(33, 70_000, Some(&value(40, 9)))]);
        let many = |n: u64, section: u8| {
            entries(
                &(0..n)
                    .map(|k| {
                        entry(
                            section + (k % 3) as u8,
                            k,
                            (k % 2 == 0).then_some(&b"v"[..]),
                        )
                    })
                    .collect::<Vec<_>>(),
            )
        };
        let (m255, m256, m300) = (many(255, 20), many(256, 40), many(300, 50));
        let ack = ChannelOp {
            channel: 1.into(),
            generation: 0.into(),
            op: 99.into(),
        };
        assert!(fb.push(Kind::Ack, &ack));
        assert!(fb.push_run_update(1, 100, cookie(&a), (&a.0, a.1), (&p.0, p.1)));
        assert!(fb.push_run_update(1, 101, cookie(&b), (&b.0, b.1), none));
        assert!(fb.push_run_update(2, 7, cookie(&b), (&b.0, b.1), none));
        assert!(fb.push_run_update(1, 102, cookie(&a), (&a.0, a.1), none));
        assert!(fb.push_update(UPDATE_FLAG_PREAPPLIED, 1, 50, 0xdead, none, none));
        assert!(fb.push_update(0, 3, 9, 0x206, (&a.0, a.1), (&p.0, p.1)));
        assert!(fb.push_submit(4, 77, (&b.0, b.1), (&p.0, p.1)));
        assert!(fb.push_run_update(1, 103, 0, none, (&p.0, p.1)));
        assert!(fb.push_run_update(1, 105, cookie(&b), (&b.0, b.1), none));
        assert!(fb.push_run_update(1, 106, cookie(&m255), (&m255.0, m255.1), (&m255.0, m255.1)));
        assert!(fb.push_run_update(1, 107, cookie(&m256), (&m256.0, m256.1), none));
        assert!(fb.push_run_update(1, 108, cookie(&b), (&b.0, b.1), none));
        assert!(fb.push_run_update(1, 109, cookie(&b), (&b.0, b.1), (&m300.0, m300.1)));
    }));
    // The highest ops a run may name (the last one is 2^62), unauthenticated.
    out.push(build(3, 3, false, |fb| {
        let a = entries(&[entry(0, 5, Some(b"x"))]);
        for op in MAX_RUN_OP - 2..=MAX_RUN_OP {
            assert!(fb.push_run_update(5, op, 1, (&a.0, a.1), none));
        }
    }));
    // A frame full of small ops: one run, as long as the frame allows.
    out.push(build(4, 4, true, |fb| {
        let mut op = 1;
        loop {
            let e = entries(&[entry(
                (op % 64) as u8,
                op * 977,
                Some(&value((op % 20) as usize, 5)),
            )]);
            if !fb.push_run_update(9, op, cookie(&e), (&e.0, e.1), none) {
                break;
            }
            op += 1;
        }
        assert!(op > 2000, "only {op} ops fit");
    }));
    // A GSO send: two frames in one datagram.
    let gso = [
        build(5, 5, true, |fb| {
            let a = entries(&[entry(4, 4, Some(b"four"))]);
            assert!(fb.push_run_update(6, 40, 1 << 4, (&a.0, a.1), none));
        }),
        build(5, 6, true, |fb| {
            let a = entries(&[entry(4, 4, None)]);
            assert!(fb.push_run_update(6, 41, 1 << 4, (&a.0, a.1), none));
            assert!(fb.push_run_update(6, 42, 1 << 4, (&a.0, a.1), (&a.0, a.1)));
        }),
    ];
    out.push(gso.concat());
    out
}

/// Datagrams the Rust decoder rejects, each with what is wrong with it.
fn malformed_datagrams() -> Vec<(&'static str, Vec<u8>)> {
    let run = |first_op: u64, ops: &[u8]| {
        build(7, 1, true, |fb| {
            let fx = RunFixed {
                channel: 8.into(),
                first_op: first_op.into(),
            };
            assert!(fb.push_tail(Kind::UpdateRun, &fx, ops));
        })
    };
    let update = |kind: Kind, public: &[u8], count: u16| {
        build(7, 2, true, |fb| {
            let pushed = if kind == Kind::Submit {
                fb.push_submit(8, 1, (public, count), (&[], 0))
            } else {
                fb.push_update(0, 8, 1, 0, (public, count), (&[], 0))
            };
            assert!(pushed);
        })
    };
    let good_run = || {
        build(7, 3, true, |fb| {
            let a = entries(&[entry(3, 1000, Some(b"v")), entry(4, 1, None)]);
            assert!(fb.push_run_update(8, 10, 1 << 3 | 1 << 4, (&a.0, a.1), (&[], 0)));
            assert!(fb.push_run_update(8, 11, 0, (&[], 0), (&a.0, a.1)));
        })
    };
    // A good run with the head of its last entry (a delete of a narrow key, at the end of the
    // body) changed by `f`.
    let last_head = |f: fn(u8) -> u8| {
        let mut d = good_run();
        let body = &d[HEADER_BYTES + 4..d.len() - TRAILER_BYTES];
        let head = *entry_head_offsets(Kind::UpdateRun, body)
            .last()
            .expect("entries");
        let at = HEADER_BYTES + 4 + head;
        d[at] = f(d[at]);
        d
    };
    // A good run with the private count of its second op raised by one or lowered by one: the
    // count disagrees with the entry bytes.
    let second_private_count = |by: i8| {
        let mut d = good_run();
        let body = &d[HEADER_BYTES + 4..d.len() - TRAILER_BYTES];
        let at = HEADER_BYTES + 4 + entry_head_offsets(Kind::UpdateRun, body)[2] - 1;
        assert_eq!(d[at], 2, "the second op's private count");
        d[at] = d[at].wrapping_add_signed(by);
        d
    };
    let mut run_flags = good_run();
    run_flags[HEADER_BYTES + 1] = 1;
    let mut version1 = good_run();
    version1[4] = 1;
    // Head, value length, key, value.
    let wide_small = [
        &[0x81u8, 0x01, 0x00][..],
        &u64::from(u32::MAX).to_le_bytes(),
        b"v",
    ]
    .concat();
    vec![
        (
            "wide-key bit set on a narrow key at the end of the body",
            last_head(|h| h | ENTRY_HEAD_WIDE_KEY),
        ),
        (
            "delete bit cleared at the end of the body",
            last_head(|h| h & !ENTRY_HEAD_DELETE),
        ),
        ("UPDATE_RUN with message flags", run_flags),
        ("version 1", version1),
        (
            "wide key that fits 4 bytes (a write)",
            update(Kind::Update, &wide_small, 1),
        ),
        (
            "wide key that fits 4 bytes (a delete)",
            update(Kind::Submit, &[0xc1, 5, 0, 0, 0, 0, 0, 0, 0], 1),
        ),
        (
            "wide key that fits 4 bytes, in a run",
            run(1, &[[0x01, 0x00].as_slice(), &wide_small].concat()),
        ),
        (
            "key cut off by the end of the body",
            run(1, &[0x01, 0x00, 0x01, 0x00, 0x00, 0x05, 0x00]),
        ),
        (
            "wide key cut off by the end of the body",
            run(1, &[0x01, 0x00, 0xc1, 0, 0, 0, 0, 1, 0, 0]),
        ),
        (
            "value length cut off by the end of the body",
            run(1, &[0x01, 0x00, 0x01, 0x05]),
        ),
        (
            "value past the body",
            run(1, &[0x01, 0x00, 0x01, 0x05, 0x00, 1, 0, 0, 0, 0x61, 0x62]),
        ),
        (
            "value past the body of an UPDATE",
            update(Kind::Update, &[0x01, 0x05, 0x00, 1, 0, 0, 0, 0x61], 1),
        ),
        ("UPDATE_RUN without ops", run(1, &[])),
        ("UPDATE_RUN from op 0", run(0, &[0x00, 0x00])),
        (
            "UPDATE_RUN past op 2^62",
            run(MAX_RUN_OP, &[0x00, 0x00, 0x00, 0x00]),
        ),
        (
            "UPDATE_RUN ops wrapping past 2^64",
            run(u64::MAX, &[0x00, 0x00, 0x00, 0x00]),
        ),
        ("op private count cut off", run(1, &[0x00])),
        (
            "a stray byte after the last op",
            run(1, &[0x00, 0x00, 0x00]),
        ),
        (
            "op counting more entries than the body holds",
            run(1, &[0x02, 0x00, 0x41, 5, 0, 0, 0]),
        ),
        (
            "second op cut off",
            run(1, &[0x00, 0x00, 0x01, 0x00, 0x41, 0x05, 0x00, 0x00]),
        ),
        ("op private count one too high", second_private_count(1)),
        ("op private count one too low", second_private_count(-1)),
        (
            "UPDATE_RUN shorter than its fixed part",
            build(7, 4, true, |fb| {
                assert!(fb.push_tail(Kind::UpdateRun, &[0u8; 8], &[]))
            }),
        ),
        (
            "bytes after the last entry",
            update(Kind::Update, &[0x41, 0x05, 0, 0, 0, 0xff], 1),
        ),
        (
            "delete followed by a value length",
            update(Kind::Submit, &[0x41, 0x02, 0x00, 5, 0, 0, 0], 1),
        ),
        (
            "fewer entries than counted",
            update(Kind::Update, &[0x41, 0x05, 0, 0, 0], 2),
        ),
    ]
}

/// A classic pcap of `datagrams` as IPv4/UDP over Ethernet to port 7100 (a statesync port).
fn write_pcap(path: &Path, datagrams: &[&[u8]]) {
    let mut out = Vec::new();
    for v in [
        0xa1b2_c3d4u32.to_le_bytes(),
        [2, 0, 4, 0],
        [0; 4],
        [0; 4],
        262_144u32.to_le_bytes(),
        1u32.to_le_bytes(),
    ] {
        out.extend_from_slice(&v);
    }
    for (i, d) in datagrams.iter().enumerate() {
        let udp_len = 8 + d.len();
        let ip_len = 20 + udp_len;
        let mut rec = vec![0u8; 12];
        rec.extend_from_slice(&[0x08, 0x00]);
        rec.extend_from_slice(&[0x45, 0]);
        rec.extend_from_slice(&(ip_len as u16).to_be_bytes());
        rec.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1]);
        rec.extend_from_slice(&40_000u16.to_be_bytes());
        rec.extend_from_slice(&7100u16.to_be_bytes());
        rec.extend_from_slice(&(udp_len as u16).to_be_bytes());
        rec.extend_from_slice(&[0, 0]);
        rec.extend_from_slice(d);
        out.extend_from_slice(&(i as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(rec.len() as u32).to_le_bytes());
        out.extend_from_slice(&(rec.len() as u32).to_le_bytes());
        out.extend_from_slice(&rec);
    }
    std::fs::write(path, out).expect("write built.pcap");
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
