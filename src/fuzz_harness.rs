//! Fuzz harnesses: one function per fuzz target, taking the fuzzer's raw bytes.
//!
//! They live in the library, not in `fuzz/`, so that two callers run exactly the same code:
//! the `cargo fuzz` targets in `fuzz/fuzz_targets/` (nightly, libFuzzer, overflow checks on)
//! and the stable test `tests/fuzz_corpus.rs`, which replays every committed corpus file
//! (`fuzz/corpus/<target>/*`) so that CI keeps the corpora passing without nightly.
//!
//! Every harness must return normally for *any* input: a panic, an arithmetic overflow (the
//! fuzz build has overflow checks on) or a loop that does not end is a bug in the code under
//! test. The `assert!`s in this module are the oracle, checking promises the code makes (a
//! decoded frame keeps every promise of validation; output drains to nothing); they are not
//! reachable from production paths.
//!
//! Targets (see [`TARGETS`]):
//! - [`decode`]: one datagram through [`FrameReader::new`], then every field of every message;
//! - [`control_unit`] and [`client`]: one sans-IO node of a fixed small topology
//!   ([`topology`]) driven by a sequence of [`Op`]s decoded from the input: datagrams (raw,
//!   or a payload wrapped in a valid header from a chosen sender and epoch), clock advances
//!   with `handle_timeout`, and drains of `poll_transmit` / `poll_event`;
//! - [`config`]: the deployment-config parser ([`crate::daemon::config::parse_offline`]).
//!
//! [`seed_inputs`] builds the seed corpora from a small fault-free cluster of real nodes (see
//! `fuzz/README.md`).

use crate::proto::{Client, ControlUnit, CutPolicy, Epoch, Node, NodeId, ProtoConfig, Topology};
use crate::wire::{
    BULK_FLAG_PRIVATE, BulkEntry, Entry, FrameHeader, FrameReader, HEADER_BYTES, Kind, MAGIC,
    MAX_FRAME_BYTES, MIN_FRAME_BYTES, MSG_HEADER_BYTES, Msg, SECTIONS, TRAILER_BYTES,
    UPDATE_FLAG_PREAPPLIED, UpdateView, VERSION, entry_wire_len,
};
use zerocopy::{Immutable, IntoBytes};

/// A harness: takes the fuzzer's bytes, returns normally or panics on a finding.
pub type Harness = fn(&[u8]);

/// Every fuzz target by name (the directory name under `fuzz/corpus/`) with its harness.
pub const TARGETS: &[(&str, Harness)] = &[
    ("decode", decode),
    ("control_unit", control_unit),
    ("client", client),
    ("config", config),
    ("auth", auth),
    ("admin", admin),
];

// ---------------------------------------------------------------------------------------------
// decode

/// Folds every byte of a fixed body (so every field is read) into a value the optimiser keeps.
fn fold<T: IntoBytes + Immutable>(body: &T) -> u64 {
    fold_bytes(body.as_bytes())
}

fn fold_bytes(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0u64, |acc, &b| acc.rotate_left(5) ^ b as u64)
}

fn check_update(u: &UpdateView<'_>) -> u64 {
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
        bytes += entry_wire_len(&e);
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

fn check_bulk_entry(e: &BulkEntry, value: &[u8]) -> u64 {
    assert_eq!(e.value_len.get() as usize, value.len());
    assert!((e.section as usize) < SECTIONS);
    assert_eq!(e.flags & !BULK_FLAG_PRIVATE, 0);
    fold(e) ^ fold_bytes(value)
}

/// Target `decode`: one datagram. The decoder must never panic, and a frame it accepts must
/// keep every promise of validation while every field of every message is read.
pub fn decode(data: &[u8]) {
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
            Msg::Update(u) | Msg::Submit(u) => check_update(&u),
            Msg::Ack(b) | Msg::FwdAck(b) | Msg::LaQuery(b) => fold(&b),
            Msg::Commit(b) => fold(&b),
            Msg::Nack(b) => {
                assert!(b.from.get() <= b.to.get());
                fold(&b)
            }
            Msg::Heartbeat(b) => fold(&b),
            Msg::LaReply(b) => fold(&b),
            Msg::ReplayBegin(b) | Msg::XferBegin(b) => fold(&b),
            Msg::ReplayEntry(e, v) | Msg::XferEntry(e, v) => check_bulk_entry(&e, v),
            Msg::ReplayEnd(b) | Msg::XferEnd(b) => fold(&b),
            Msg::ReplayAck(b) | Msg::XferAck(b) => fold(&b),
            Msg::XferHistory(b) => fold(&b),
        };
        acc = acc.rotate_left(11) ^ x;
    }
    // An UPDATE_RUN comes out as one update per op (at least one): never fewer messages.
    assert!(count >= frame.header.msg_count.get() as usize);
    // The header-only scan agrees with the parsed messages.
    assert_eq!(frame.contains(Kind::Heartbeat), heartbeats > 0);
    std::hint::black_box(acc);
}

// ---------------------------------------------------------------------------------------------
// config

/// Target `config`: config text through the parser and validator. Any input must give `Ok`
/// or an error, never a panic; an accepted config must yield a valid protocol config and a
/// transport config for every node. Host names are not resolved (see
/// [`crate::daemon::config::parse_offline`]): a name lookup per input would be slow and
/// depend on the machine.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = crate::daemon::config::parse_offline(text, "fuzz.toml") else {
        return;
    };
    let proto = cfg.proto_config();
    assert!(proto.validate().is_ok(), "an accepted config is valid");
    for n in cfg.nodes() {
        assert!(cfg.node(n.id).is_some());
        assert!(cfg.transport_config(n.id).is_some());
    }
}

// ---------------------------------------------------------------------------------------------
// State machines: a fixed topology and an op language.

/// Control units of the fuzzed topology, in priority order (index 0 is the initial primary).
pub const CONTROL_UNITS: [NodeId; 3] = [1, 2, 3];
/// Clients of the fuzzed topology.
pub const CLIENTS: [NodeId; 2] = [100, 101];
/// The load client allowed to send SUBMIT frames.
pub const SUBMITTER: NodeId = 900;
/// Senders an [`Op::Frame`] can name (by index, modulo the length): every configured node,
/// the submitter, and two IDs nobody configured.
pub const SENDERS: [NodeId; 8] = [1, 2, 3, 100, 101, SUBMITTER, 0, 7];

/// Three control units, two clients owning three channels (client 100 owns 0 and 2), one
/// submitter: the smallest topology with a choice of successor and a client of two channels.
pub fn topology() -> Topology {
    Topology {
        control_units: CONTROL_UNITS.to_vec(),
        clients: CLIENTS.to_vec(),
        channel_owner: vec![100, 101, 100],
        submitters: vec![SUBMITTER],
    }
}

/// The protocol config chosen by the first input byte. Timings are the simulator's; the bits
/// pick the cut policy, frame size, window sizes, event switches and start-up grace, so that
/// small windows (wrap-around, backpressure) are reachable within a short input.
pub fn proto_config(setup: u8) -> ProtoConfig {
    let mut cfg = ProtoConfig::new(topology());
    cfg.heartbeat_interval_us = 10_000;
    cfg.failover_timeout_us = 50_000;
    cfg.drop_timeout_us = 100_000;
    cfg.query_timeout_us = 40_000;
    cfg.rto_us = 15_000;
    cfg.nack_interval_us = cfg.rto_us / 2;
    cfg.tick_us = 2_000;
    cfg.cut_policy = match setup & 3 {
        0 => CutPolicy::Complete,
        1 => CutPolicy::Fast,
        2 => CutPolicy::Weighted { max_ops: 2 },
        _ => CutPolicy::Weighted { max_ops: 0 },
    };
    cfg.max_frame_bytes = if setup & 4 == 0 { 1472 } else { 600 };
    cfg.window_ops = if setup & 8 == 0 { 64 } else { 8 };
    cfg.bulk_window = if setup & 16 == 0 { 32 } else { 4 };
    cfg.ack_events = setup & 32 != 0;
    cfg.startup_grace_us = if setup & 64 == 0 { 0 } else { 200_000 };
    cfg.client_apply_events = setup & 128 == 0;
    cfg.standby_apply_events = setup & 128 == 0;
    debug_assert!(cfg.validate().is_ok());
    cfg
}

/// Most frames one drain may take from `poll_transmit`. Output is bounded by construction
/// (cursors and windows, nothing queued per message), so a node that is still not dry after
/// this many frames is a bug the harness reports.
pub const MAX_DRAIN_FRAMES: usize = 100_000;

/// Op tags (the tag byte modulo [`OP_COUNT`]).
const OP_RAW: u8 = 0;
const OP_FRAME: u8 = 1;
const OP_ADVANCE: u8 = 2;
const OP_WAKE: u8 = 3;
const OP_DRAIN: u8 = 4;
const OP_SUBMIT: u8 = 5;
const OP_OPERATOR: u8 = 6;
const OP_UNAUTHENTICATED: u8 = 7;
const OP_COUNT: u8 = 8;

/// One step of a state-machine input, as decoded by [`parse_ops`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op<'a> {
    /// `handle_datagram` with these exact bytes.
    Raw(&'a [u8]),
    /// `handle_datagram` with `payload` between a valid header and a zero trailer: magic, version,
    /// payload length and message count (counted by walking the message headers) are right,
    /// so mutations of the payload reach the message parsers and the protocol.
    Frame {
        /// Index into [`SENDERS`] (modulo its length).
        sender: u8,
        /// 0: the node's current epoch; 1: the current epoch counter owned by the sender;
        /// 2: the next counter owned by the sender; 3: `raw`.
        epoch_sel: u8,
        raw_epoch: u64,
        payload: &'a [u8],
    },
    /// Advance the clock by this many µs, then `handle_timeout`.
    Advance(u32),
    /// Advance the clock to the node's `poll_timeout` (if later), then `handle_timeout`.
    Wake,
    /// Take every frame from `poll_transmit` and every event from `poll_event`.
    Drain,
    /// Control unit: `submit` a change of up to four entries `(section, key, value)`;
    /// a client ignores it.
    Submit {
        channel: u8,
        entries: Vec<(u8, u64, Option<&'a [u8]>)>,
    },
    /// Control unit: an operator command (even: switchover to the control unit of that
    /// index; odd: take over now); a client ignores it.
    Operator(u8),
    /// The host reports a datagram from this sender (index into [`SENDERS`], modulo its
    /// length) whose authentication tag failed (`Node::note_unauthenticated`).
    Unauthenticated(u8),
}

/// A cursor over the fuzzer's bytes; every read past the end yields zeros / short slices.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        (self.u32() as u64) | ((self.u32() as u64) << 32)
    }
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }
}

/// Decodes a state-machine input: `setup` byte (see [`proto_config`]), `node` byte (which
/// node and how it starts; see [`control_unit`] and [`client`]), then ops until the bytes run
/// out. Each op consumes at least its tag byte, so the op count is bounded by the input length.
pub fn parse_ops(data: &[u8]) -> (u8, u8, Vec<Op<'_>>) {
    let mut r = Reader { data };
    let setup = r.u8();
    let node = r.u8();
    let mut ops = Vec::new();
    while !r.data.is_empty() {
        let op = match r.u8() % OP_COUNT {
            OP_RAW => {
                let n = r.u16() as usize;
                Op::Raw(r.bytes(n))
            }
            OP_FRAME => {
                let sender = r.u8();
                let epoch_sel = r.u8() % 4;
                let raw_epoch = if epoch_sel == 3 { r.u64() } else { 0 };
                let n = r.u16() as usize;
                Op::Frame {
                    sender,
                    epoch_sel,
                    raw_epoch,
                    payload: r.bytes(n.min(MAX_FRAME_BYTES - MIN_FRAME_BYTES)),
                }
            }
            OP_ADVANCE => Op::Advance(r.u32()),
            OP_WAKE => Op::Wake,
            OP_DRAIN => Op::Drain,
            OP_SUBMIT => {
                let channel = r.u8();
                let n = r.u8() % 5;
                let entries = (0..n)
                    .map(|_| {
                        let section = r.u8();
                        let key = r.u8() as u64;
                        let len = r.u8();
                        let value = (len != 0xff).then(|| r.bytes(len as usize % 64));
                        (section, key, value)
                    })
                    .collect();
                Op::Submit { channel, entries }
            }
            OP_OPERATOR => Op::Operator(r.u8()),
            _ => Op::Unauthenticated(r.u8()),
        };
        ops.push(op);
    }
    (setup, node, ops)
}

/// Builds inputs in the format [`parse_ops`] reads (for seed corpora and tests).
#[derive(Debug, Clone)]
pub struct OpWriter {
    bytes: Vec<u8>,
}

impl OpWriter {
    pub fn new(setup: u8, node: u8) -> Self {
        OpWriter {
            bytes: vec![setup, node],
        }
    }
    pub fn raw(&mut self, datagram: &[u8]) -> &mut Self {
        let n = datagram.len().min(u16::MAX as usize);
        self.bytes.push(OP_RAW);
        self.bytes.extend_from_slice(&(n as u16).to_le_bytes());
        self.bytes.extend_from_slice(&datagram[..n]);
        self
    }
    /// The messages of a real datagram as an [`Op::Frame`] from the same sender with the same
    /// (raw) epoch, so that the fuzzer mutates its payload behind a valid header. A datagram
    /// too short to be a frame, or from a sender outside [`SENDERS`], is written raw.
    pub fn frame_of(&mut self, datagram: &[u8]) -> &mut Self {
        let Ok(f) = FrameReader::new(datagram) else {
            return self.raw(datagram);
        };
        let Some(sender) = SENDERS.iter().position(|&s| s == f.sender()) else {
            return self.raw(datagram);
        };
        let payload = &datagram[HEADER_BYTES..datagram.len() - TRAILER_BYTES];
        self.frame(sender as u8, 3, f.epoch(), payload)
    }
    pub fn frame(
        &mut self,
        sender: u8,
        epoch_sel: u8,
        raw_epoch: u64,
        payload: &[u8],
    ) -> &mut Self {
        let n = payload.len().min(u16::MAX as usize);
        self.bytes.extend_from_slice(&[OP_FRAME, sender, epoch_sel]);
        if epoch_sel % 4 == 3 {
            self.bytes.extend_from_slice(&raw_epoch.to_le_bytes());
        }
        self.bytes.extend_from_slice(&(n as u16).to_le_bytes());
        self.bytes.extend_from_slice(&payload[..n]);
        self
    }
    pub fn advance(&mut self, us: u32) -> &mut Self {
        self.bytes.push(OP_ADVANCE);
        self.bytes.extend_from_slice(&us.to_le_bytes());
        self
    }
    pub fn wake(&mut self) -> &mut Self {
        self.bytes.push(OP_WAKE);
        self
    }
    pub fn drain(&mut self) -> &mut Self {
        self.bytes.push(OP_DRAIN);
        self
    }
    /// Values longer than 63 bytes are cut (the op language's limit).
    pub fn submit(&mut self, channel: u8, entries: &[(u8, u8, Option<&[u8]>)]) -> &mut Self {
        let n = entries.len().min(4);
        self.bytes.extend_from_slice(&[OP_SUBMIT, channel, n as u8]);
        for (section, key, value) in &entries[..n] {
            self.bytes.extend_from_slice(&[*section, *key]);
            match value {
                Some(v) => {
                    let v = &v[..v.len().min(63)];
                    self.bytes.push(v.len() as u8);
                    self.bytes.extend_from_slice(v);
                }
                None => self.bytes.push(0xff),
            }
        }
        self
    }
    pub fn operator(&mut self, arg: u8) -> &mut Self {
        self.bytes.extend_from_slice(&[OP_OPERATOR, arg]);
        self
    }
    /// A datagram from `SENDERS[sender]` failed authentication.
    pub fn unauthenticated(&mut self, sender: u8) -> &mut Self {
        self.bytes.extend_from_slice(&[OP_UNAUTHENTICATED, sender]);
        self
    }
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.bytes.len() <= 2
    }
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// Wraps `payload` in a valid frame header (sender, epoch, packet sequence) and a zero
/// authentication trailer (as a node with authentication off sends it; the sans-IO nodes never
/// see the trailer, `crate::auth` checks it before them).
/// `msg_count` is the number of message headers found by walking the body lengths, so a
/// well-formed payload makes a well-formed frame.
pub fn wrap_payload(sender: NodeId, epoch: u64, packet_seq: u64, payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(MAX_FRAME_BYTES - MIN_FRAME_BYTES)];
    let mut count = 0u16;
    let mut at = 0usize;
    while at + MSG_HEADER_BYTES <= payload.len() && count < u16::MAX {
        let body = u16::from_le_bytes([payload[at + 2], payload[at + 3]]) as usize;
        at += MSG_HEADER_BYTES + body;
        count += 1;
    }
    let h = FrameHeader {
        magic: MAGIC.into(),
        version: VERSION,
        flags: 0,
        msg_count: count.into(),
        sender: sender.into(),
        payload_len: (payload.len() as u32).into(),
        epoch: epoch.into(),
        packet_seq: packet_seq.into(),
    };
    let mut out = Vec::with_capacity(MIN_FRAME_BYTES + payload.len());
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len() + TRAILER_BYTES, 0);
    out
}

/// A submit as the harness makes it: only a control unit takes one.
fn submit(node: &mut Node, now_us: u64, channel: u32, entries: &[Entry<'_>]) {
    if let Some(cu) = node.as_cu_mut() {
        let _ = cu.submit(now_us, channel, entries);
    }
}

/// An operator request (`arg`: even asks for a switchover to a unit, odd for a takeover);
/// only a control unit takes one.
fn operator(node: &mut Node, now_us: u64, arg: u8) {
    let Some(cu) = node.as_cu_mut() else { return };
    if arg.is_multiple_of(2) {
        let target = CONTROL_UNITS[(arg as usize / 2) % CONTROL_UNITS.len()];
        let _ = cu.request_switchover(target);
    } else {
        let _ = cu.operator_takeover(now_us);
    }
}

/// Takes every frame and event out of `node`; each frame it sends must decode.
fn drain(node: &mut Node, now_us: u64, buf: &mut [u8]) {
    let mut frames = 0usize;
    while let Some(t) = node.poll_transmit(now_us, buf) {
        assert!(t.len <= buf.len(), "transmit length within the buffer");
        assert!(
            FrameReader::new(&buf[..t.len]).is_ok(),
            "a node sends only frames that decode"
        );
        frames += 1;
        assert!(frames < MAX_DRAIN_FRAMES, "poll_transmit does not run dry");
    }
    // The queue is bounded (`proto::MAX_EVENTS`), so this ends; the bound only guards a bug.
    for _ in 0..=(1usize << 21) {
        if node.poll_event().is_none() {
            return;
        }
    }
    panic!("poll_event does not run dry");
}

/// Runs the decoded ops against `node`. The clock starts at 0 and only moves forward.
fn drive(node: &mut Node, ops: &[Op<'_>]) {
    let mut now_us: u64 = 0;
    let mut seq = [0u64; SENDERS.len()];
    let mut buf = vec![0u8; MAX_FRAME_BYTES];
    for op in ops {
        match op {
            Op::Raw(bytes) => node.handle_datagram(now_us, bytes),
            Op::Frame {
                sender,
                epoch_sel,
                raw_epoch,
                payload,
            } => {
                let si = *sender as usize % SENDERS.len();
                let id = SENDERS[si];
                // The sender's priority index owns the epochs it makes (0 for a non-unit).
                let owner = CONTROL_UNITS.iter().position(|&c| c == id).unwrap_or(0);
                let counter = Epoch::from(node.epoch())
                    .counter()
                    .max(Epoch::INITIAL.counter());
                // The node's counter is at most `MAX_EPOCH_COUNTER` (larger ones are refused),
                // so both epochs exist; the raw one stands in if that ever changes.
                let ours = Epoch::new(counter, owner);
                let epoch = match epoch_sel % 4 {
                    0 => node.epoch(),
                    1 => ours.map_or(*raw_epoch, Epoch::get),
                    2 => ours
                        .and_then(|e| e.next_counter(owner))
                        .map_or(*raw_epoch, Epoch::get),
                    _ => *raw_epoch,
                };
                seq[si] += 1;
                let frame = wrap_payload(id, epoch, seq[si], payload);
                node.handle_datagram(now_us, &frame);
            }
            Op::Advance(us) => {
                // Saturating: an input cannot hold enough advances to get near the end of
                // time, but the harness must not be the thing that overflows.
                now_us = now_us.saturating_add(*us as u64);
                node.handle_timeout(now_us);
            }
            Op::Wake => {
                now_us = now_us.max(node.poll_timeout());
                node.handle_timeout(now_us);
            }
            Op::Drain => drain(node, now_us, &mut buf),
            Op::Submit { channel, entries } => {
                let entries: Vec<Entry<'_>> = entries
                    .iter()
                    .map(|&(section, key, value)| Entry {
                        section,
                        key,
                        value,
                        private: false,
                    })
                    .collect();
                submit(node, now_us, *channel as u32, &entries);
            }
            Op::Operator(arg) => operator(node, now_us, *arg),
            Op::Unauthenticated(sender) => {
                node.note_unauthenticated(now_us, SENDERS[*sender as usize % SENDERS.len()])
            }
        }
    }
    drain(node, now_us, &mut buf);
}

/// Target `control_unit`: one control unit of [`topology`] fed a sequence of [`Op`]s. The
/// `node` byte picks the unit (`node % 3`: 0 is the initial primary), whether it is present
/// from the start (`node & 4 == 0`) or (re)starts without state and joins, and its boot ID
/// (`node >> 3`).
pub fn control_unit(data: &[u8]) {
    std::hint::black_box(run_control_unit(data));
}

/// [`control_unit`], returning the node at the end (tests check where a seed leads).
pub fn run_control_unit(data: &[u8]) -> ControlUnit {
    let (setup, node, ops) = parse_ops(data);
    let id = CONTROL_UNITS[node as usize % CONTROL_UNITS.len()];
    let initial = node & 4 == 0;
    let cu = ControlUnit::new(proto_config(setup), id, initial, (node >> 3) as u32, 0);
    let mut n = Node::Cu(Box::new(cu));
    drive(&mut n, &ops);
    match n {
        Node::Cu(cu) => *cu,
        Node::Client(_) => unreachable!("drive keeps the node's kind"),
    }
}

/// Target `client`: one client of [`topology`] fed a sequence of [`Op`]s. The `node` byte
/// picks the client (`node % 2`), whether it starts fresh, without state (`node & 4 != 0`),
/// and its boot ID (`node >> 3`).
pub fn client(data: &[u8]) {
    std::hint::black_box(run_client(data));
}

/// [`client`], returning the node at the end (tests check where a seed leads).
pub fn run_client(data: &[u8]) -> Client {
    let (setup, node, ops) = parse_ops(data);
    let id = CLIENTS[node as usize % CLIENTS.len()];
    let fresh = node & 4 != 0;
    let c = Client::new(proto_config(setup), id, fresh, (node >> 3) as u32, 0);
    let mut n = Node::Client(Box::new(c));
    drive(&mut n, &ops);
    match n {
        Node::Client(c) => *c,
        Node::Cu(_) => unreachable!("drive keeps the node's kind"),
    }
}

mod seeds;
pub use seeds::{MAX_SEED_BYTES, seed_inputs};

// ---------------------------------------------------------------------------------------------
// auth

/// The first `n` bytes of `r` (fewer at its end), advancing it.
fn take<'a>(r: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (x, y) = r.split_at(n.min(r.len()));
    *r = y;
    x
}

/// Frame authentication (`crate::auth`): a node holding real keys, with a session open to its
/// peer, is fed a sequence of ops from the input: arbitrary datagrams (as if from the peer's
/// address), frames the peer sealed with bytes of the input changed, replays of the last
/// sealed frame, and time. A datagram the peer did not seal, or one changed after sealing, must
/// never be delivered; a sealed one is delivered exactly once.
pub fn auth(data: &[u8]) {
    use crate::auth::{Auth, LinkKeys, Verdict};
    use crate::wire::FrameBuilder;
    use std::net::SocketAddr;
    const A: NodeId = 1;
    const B: NodeId = 100;
    let secret = [0x42u8; 32];
    let mut a = Auth::with_boot(&LinkKeys::from_secrets(A, [(B, secret)]), 1 << 20);
    let mut b = Auth::with_boot(&LinkKeys::from_secrets(B, [(A, secret)]), 2 << 20);
    let from_a = SocketAddr::from(([127, 0, 0, 1], 1));
    let from_b = SocketAddr::from(([127, 0, 0, 1], 2));
    // Open the session: an opener from A, B's hello back.
    let mut buf = vec![0u8; 4096];
    let mut seq = 1u64;
    let n = FrameBuilder::new(&mut buf, A, 0, seq).finish();
    assert!(a.seal(B, &mut buf[..n]));
    assert_eq!(b.open(0, from_a, Some(A), &buf[..n]), Verdict::Consumed);
    let mut hello = [0u8; 128];
    let (n, _, _) = b
        .poll_hello(0, &mut hello)
        .expect("a hello answers the opener");
    assert_eq!(a.open(0, from_b, Some(B), &hello[..n]), Verdict::Consumed);
    let mut now_us = 0u64;
    let mut last: Option<Vec<u8>> = None;
    let mut r = data;
    while let Some((&op, rest)) = r.split_first() {
        r = rest;
        match op % 4 {
            0 => {
                let len = take(&mut r, 1).first().copied().unwrap_or(0) as usize * 4;
                let bytes = take(&mut r, len);
                let v = b.open(now_us, from_a, Some(A), bytes);
                assert_ne!(v, Verdict::Deliver, "an unsealed datagram was delivered");
            }
            1 => {
                // A sealed frame with one message whose body comes from the input, then
                // changed at the positions the input names.
                seq += 1;
                let body = take(&mut r, 64);
                let mut fb = FrameBuilder::new(&mut buf, A, 0x100, seq);
                let _ = fb.push_submit(0, seq, (body, 0), (&[], 0));
                let n = fb.finish();
                assert!(a.seal(B, &mut buf[..n]));
                let flips = take(&mut r, 2);
                let mut f = buf[..n].to_vec();
                for &x in flips {
                    let at = x as usize % n;
                    f[at] ^= 1 << (x % 8);
                }
                let changed = f != buf[..n];
                let v = b.open(now_us, from_a, Some(A), &f);
                if changed {
                    assert_ne!(v, Verdict::Deliver, "a changed frame was delivered");
                } else {
                    assert_eq!(v, Verdict::Deliver, "a sealed frame was refused");
                    last = Some(f);
                }
            }
            2 => {
                if let Some(f) = &last {
                    let v = b.open(now_us, from_a, Some(A), f);
                    assert_ne!(v, Verdict::Deliver, "a replay was delivered");
                }
            }
            _ => {
                let d = take(&mut r, 2);
                now_us += u16::from_le_bytes([
                    d.first().copied().unwrap_or(0),
                    d.get(1).copied().unwrap_or(0),
                ]) as u64;
                let _ = b.poll_hello(now_us, &mut hello);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// admin

/// One admin request, as the daemon's listeners hand it over, to a control unit of the fuzz
/// topology (its socket opened once per process). The first byte picks the caller (the Unix
/// socket or the network) and whether a token is configured; the rest is the request (bit 2:
/// sealed here with the token as a fresh MAC envelope, so that the fuzzer reaches what lies
/// behind the MAC check). It must never panic, and a network caller without a valid MAC must
/// never take over.
pub fn admin(data: &[u8]) {
    use crate::daemon::Clock;
    use crate::daemon::admin::config::AdminToken;
    use crate::daemon::admin::{AdminStats, Caller, UdpAuth, handle_request, mac};
    use crate::runtime::node::NodeRunner;
    use std::cell::RefCell;
    thread_local! {
        static NODE: RefCell<Option<(NodeRunner, Clock)>> = const { RefCell::new(None) };
    }
    let Some((&sel, request)) = data.split_first() else {
        return;
    };
    NODE.with(|n| {
        let mut n = n.borrow_mut();
        let (runner, clock) = n.get_or_insert_with(|| {
            let clock = Clock::new();
            let cu = ControlUnit::new(proto_config(0), CONTROL_UNITS[1], true, 7, clock.now_us());
            let transport = crate::transport::Transport::open(crate::transport::TransportConfig {
                bind: "127.0.0.1:0".parse().expect("literal"),
                io: crate::transport::IoChoice::Mmsg,
                ..Default::default()
            })
            .expect("a loopback socket");
            (
                NodeRunner::new(Node::Cu(Box::new(cu)), transport, []),
                clock,
            )
        });
        let caller = if sel & 1 == 0 {
            Caller::Local
        } else {
            Caller::Network
        };
        let token = AdminToken::from_text("fuzz-token-0123456789");
        let mut auth = (sel & 2 != 0).then(|| UdpAuth::new(&token));
        let sealed;
        let request = match serde_json::from_slice::<serde_json::Value>(request) {
            Ok(v) if sel & 4 != 0 => {
                sealed = mac::seal_now(&v, &token).to_string();
                sealed.as_bytes()
            }
            _ => request,
        };
        let epoch = runner.machine.as_cu().map(|c| c.epoch());
        let mut stats = AdminStats::default();
        let now = clock.now_us();
        let out = handle_request(
            request,
            caller,
            auth.as_mut(),
            runner,
            clock,
            now,
            &mut stats,
        );
        if caller == Caller::Network && !out.authenticated {
            assert_eq!(
                runner.machine.as_cu().map(|c| c.epoch()),
                epoch,
                "an unauthenticated network request changed the epoch"
            );
        }
    });
}
