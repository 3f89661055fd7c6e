//! Seed inputs: what real nodes send each other, recorded from a small fault-free cluster.
//!
//! Every node of [`super::topology`] runs for real; all datagrams are delivered at once, in
//! order. Each node's inputs (clock advances, datagrams, submits, drains) are written as ops
//! of the fuzz input format, so a seed replays that node's life and the fuzzer starts from
//! deep states (a replicating standby, a failover, a replay, a state transfer) instead of
//! having to discover valid frames. A few scenarios add a crash, a restart or a switchover.

use super::{CLIENTS, CONTROL_UNITS, OpWriter, SUBMITTER, proto_config};
use crate::proto::{Client, ControlUnit, Node, NodeId, Role};
use crate::wire::{Entry, FrameBuilder, MAX_FRAME_BYTES, encode_entry};

/// A seed is cut off once it reaches this many bytes (libFuzzer's `-max_len` must allow it).
pub const MAX_SEED_BYTES: usize = 24 * 1024;

/// A node of the cluster; `None` while it is down.
type Slot = Option<Node>;

struct Recorder {
    /// The harness target the recording is for.
    target: &'static str,
    name: String,
    w: OpWriter,
    /// Clock of the recorded node as the harness will see it.
    last_us: u64,
    full: bool,
}

struct Cluster {
    setup: u8,
    now_us: u64,
    nodes: Vec<(NodeId, Slot)>,
    /// Open recording of each node (same index as `nodes`).
    rec: Vec<Option<Recorder>>,
    done: Vec<Recorder>,
    /// Every datagram sent (for the `decode` seeds).
    datagrams: Vec<Vec<u8>>,
    buf: Vec<u8>,
    submit_seq: u64,
}

/// What happens in a scenario, at which step (steps are 2 ms apart).
#[derive(Clone, Copy)]
enum Fault {
    None,
    /// The primary stops at this step and never comes back.
    CrashPrimary(usize),
    /// This node restarts without state at this step.
    Restart(usize, NodeId),
    /// The operator asks the primary to hand over to this unit at this step.
    Switchover(usize, NodeId),
}

impl Cluster {
    fn new(setup: u8, scenario: &str) -> Self {
        let cfg = proto_config(setup);
        let mut nodes = Vec::new();
        let mut rec = Vec::new();
        for (i, &id) in CONTROL_UNITS.iter().enumerate() {
            nodes.push((
                id,
                Some(Node::Cu(Box::new(ControlUnit::new(
                    cfg.clone(),
                    id,
                    true,
                    0,
                    0,
                )))),
            ));
            rec.push(Some(Recorder {
                target: "control_unit",
                name: format!("{scenario}-s{setup}-cu{id}"),
                w: OpWriter::new(setup, i as u8),
                last_us: 0,
                full: false,
            }));
        }
        for (i, &id) in CLIENTS.iter().enumerate() {
            nodes.push((
                id,
                Some(Node::Client(Box::new(Client::new(
                    cfg.clone(),
                    id,
                    false,
                    0,
                    0,
                )))),
            ));
            rec.push(Some(Recorder {
                target: "client",
                name: format!("{scenario}-s{setup}-client{id}"),
                w: OpWriter::new(setup, i as u8),
                last_us: 0,
                full: false,
            }));
        }
        Cluster {
            setup,
            now_us: 0,
            nodes,
            rec,
            done: Vec::new(),
            datagrams: Vec::new(),
            buf: vec![0; MAX_FRAME_BYTES],
            submit_seq: 0,
        }
    }

    fn record(&mut self, i: usize, f: impl FnOnce(&mut OpWriter)) {
        if let Some(r) = &mut self.rec[i]
            && !r.full
        {
            f(&mut r.w);
            r.full = r.w.len() >= MAX_SEED_BYTES;
        }
    }

    fn close(&mut self, i: usize) {
        if let Some(r) = self.rec[i].take() {
            self.done.push(r);
        }
    }

    fn tick(&mut self, dt_us: u64) {
        self.now_us += dt_us;
        let now = self.now_us;
        for i in 0..self.nodes.len() {
            let Some(n) = &mut self.nodes[i].1 else {
                continue;
            };
            n.handle_timeout(now);
            if let Some(r) = &mut self.rec[i]
                && !r.full
            {
                let dt = now - r.last_us;
                r.last_us = now;
                r.w.advance(dt.min(u32::MAX as u64) as u32);
                r.full = r.w.len() >= MAX_SEED_BYTES;
            }
        }
    }

    /// Delivers everything the nodes send until they are quiet (bounded).
    fn pump(&mut self) {
        for _round in 0..64 {
            let mut out: Vec<(NodeId, Vec<u8>)> = Vec::new();
            for i in 0..self.nodes.len() {
                let now = self.now_us;
                let buf = &mut self.buf;
                let mut sent = false;
                for _ in 0..super::MAX_DRAIN_FRAMES {
                    let Some(t) = self.nodes[i]
                        .1
                        .as_mut()
                        .and_then(|n| n.poll_transmit(now, buf))
                    else {
                        break;
                    };
                    out.push((t.dst, buf[..t.len].to_vec()));
                    sent = true;
                }
                while self.nodes[i]
                    .1
                    .as_mut()
                    .and_then(Node::poll_event)
                    .is_some()
                {}
                if sent {
                    self.record(i, |w| {
                        w.drain();
                    });
                }
            }
            if out.is_empty() {
                return;
            }
            for (dst, bytes) in out {
                self.deliver(dst, &bytes);
                self.datagrams.push(bytes);
            }
        }
    }

    fn deliver(&mut self, dst: NodeId, bytes: &[u8]) {
        let now = self.now_us;
        let Some(i) = self.nodes.iter().position(|(id, _)| *id == dst) else {
            return;
        };
        let Some(n) = &mut self.nodes[i].1 else {
            return;
        };
        n.handle_datagram(now, bytes);
        self.record(i, |w| {
            w.frame_of(bytes);
        });
    }

    fn primary(&self) -> Option<usize> {
        self.nodes.iter().position(|(_, s)| {
            s.as_ref()
                .and_then(Node::as_cu)
                .is_some_and(|c| c.role() == Role::Primary)
        })
    }

    /// One change on the primary: directly (the daemon's `submit`), or every third time as a
    /// SUBMIT frame from the load client to every control unit.
    fn submit(&mut self, step: usize) {
        self.submit_seq += 1;
        let channel = (step % 3) as u32;
        let value = [step as u8; 5];
        let key = (step % 16) as u8;
        let section = (step % 4) as u8;
        if step % 3 == 2 {
            let mut entries = Vec::new();
            encode_entry(
                &mut entries,
                &Entry {
                    section,
                    key: key as u64,
                    value: Some(&value),
                    private: false,
                },
            );
            let mut buf = vec![0u8; 1024];
            let mut fb = FrameBuilder::new(&mut buf, SUBMITTER, 0, self.submit_seq);
            fb.push_submit(channel, self.submit_seq, (&entries, 1), (&[], 0));
            let len = fb.finish();
            buf.truncate(len);
            for &cu in &CONTROL_UNITS {
                self.deliver(cu, &buf);
            }
            self.datagrams.push(buf);
            return;
        }
        let Some(p) = self.primary() else { return };
        let now = self.now_us;
        let Some(c) = self.nodes[p].1.as_mut().and_then(Node::as_cu_mut) else {
            return;
        };
        let value_ref: &[u8] = &value;
        // A delete now and then.
        let v = (step % 7 != 6).then_some(value_ref);
        let e = [Entry {
            section,
            key: key as u64,
            value: v,
            private: step % 5 == 4,
        }];
        let _ = c.submit(now, channel, &e);
        self.record(p, |w| {
            w.submit(channel as u8, &[(section, key, v)]);
        });
    }

    fn run(&mut self, steps: usize, fault: Fault) {
        let cfg = proto_config(self.setup);
        for step in 0..steps {
            match fault {
                Fault::CrashPrimary(at) if at == step => {
                    if let Some(p) = self.primary() {
                        self.nodes[p].1 = None;
                        self.close(p);
                    }
                }
                Fault::Restart(at, id) if at == step => {
                    let i = self.nodes.iter().position(|(n, _)| *n == id).unwrap_or(0);
                    self.close(i);
                    let now = self.now_us;
                    let (slot, target, node) =
                        if let Some(ci) = CONTROL_UNITS.iter().position(|&c| c == id) {
                            (
                                Some(Node::Cu(Box::new(ControlUnit::new(
                                    cfg.clone(),
                                    id,
                                    false,
                                    1,
                                    now,
                                )))),
                                "control_unit",
                                ci as u8 | 4 | (1 << 3),
                            )
                        } else {
                            let ci = CLIENTS.iter().position(|&c| c == id).unwrap_or(0);
                            (
                                Some(Node::Client(Box::new(Client::new(
                                    cfg.clone(),
                                    id,
                                    true,
                                    1,
                                    now,
                                )))),
                                "client",
                                ci as u8 | 4 | (1 << 3),
                            )
                        };
                    self.nodes[i].1 = slot;
                    // The harness starts the node at time 0; its first advance jumps to `now`.
                    self.rec[i] = Some(Recorder {
                        target,
                        name: format!("restart-s{}-{id}", self.setup),
                        w: OpWriter::new(self.setup, node),
                        last_us: 0,
                        full: false,
                    });
                }
                Fault::Switchover(at, to) if at == step => {
                    if let Some(p) = self.primary()
                        && let Some(c) = self.nodes[p].1.as_mut().and_then(Node::as_cu_mut)
                        && c.request_switchover(to).is_ok()
                    {
                        let arg =
                            2 * CONTROL_UNITS.iter().position(|&c| c == to).unwrap_or(0) as u8;
                        self.record(p, |w| {
                            w.operator(arg);
                        });
                    }
                }
                _ => {}
            }
            self.tick(2_000);
            self.pump();
            if step % 2 == 0 {
                self.submit(step);
                self.pump();
            }
        }
        for i in 0..self.rec.len() {
            self.close(i);
        }
    }
}

/// Seed inputs of one target, by name; empty for an unknown target.
pub fn seed_inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    if target == "config" {
        return config_seeds();
    }
    if target == "auth" {
        return auth_seeds();
    }
    if target == "admin" {
        return [
            (0u8, r#"{"cmd":"status"}"#),
            (1, r#"{"cmd":"status"}"#),
            (1, r#"{"cmd":"takeover"}"#),
            (3, r#"{"cmd":"takeover","token":"fuzz-token-0123456789"}"#),
            (7, r#"{"cmd":"takeover"}"#),
            (7, r#"{"cmd":"status"}"#),
            (3, r#"{"mac":"00","body":"{\"cmd\":\"takeover\"}"}"#),
            (3, r#"{"cmd":"switchover","target":3,"token":"wrong"}"#),
            (
                0,
                r#"{"cmd":"op_status","channel":1,"epoch":256,"from":1,"to":99}"#,
            ),
            (
                0,
                r#"{"cmd":"op_status","channel":4000000000,"epoch":256,"op":1}"#,
            ),
        ]
        .iter()
        .enumerate()
        .map(|(i, (sel, req))| (format!("seed-{i}"), [&[*sel][..], req.as_bytes()].concat()))
        .collect();
    }
    let scenarios: [(&str, u8, usize, Fault); 8] = [
        ("steady", 0, 40, Fault::None),
        ("steady", 0b0000_1101, 40, Fault::None),
        ("crash", 0, 100, Fault::CrashPrimary(20)),
        ("crash", 0b0001_1110, 100, Fault::CrashPrimary(20)),
        ("crash", 0b0000_0011, 100, Fault::CrashPrimary(20)),
        ("restart-client", 0b0001_0100, 60, Fault::Restart(10, 100)),
        ("restart-cu", 0b0001_0000, 80, Fault::Restart(10, 3)),
        ("switchover", 0, 60, Fault::Switchover(10, 2)),
    ];
    let mut out = Vec::new();
    let mut datagrams = Vec::new();
    for (name, setup, steps, fault) in scenarios {
        let mut c = Cluster::new(setup, name);
        c.run(steps, fault);
        for r in c.done {
            if r.target == target && !r.w.is_empty() {
                out.push((r.name, r.w.into_bytes()));
            }
        }
        datagrams.extend(c.datagrams);
    }
    if target == "decode" {
        return decode_seeds(datagrams);
    }
    if target == "control_unit" {
        // Unit 2, a standby from the start, hears its primary (unit 1) only through frames
        // that fail authentication, for 3 s: the takeover is withheld (VRRP's rule).
        let mut w = OpWriter::new(0, 1);
        for _ in 0..600 {
            w.unauthenticated(0).advance(5_000);
        }
        out.push(("key-mismatch-cu2".to_owned(), w.into_bytes()));
    }
    out
}

/// Distinct datagrams, at most a few per combination of sender and message kinds.
fn decode_seeds(datagrams: Vec<Vec<u8>>) -> Vec<(String, Vec<u8>)> {
    let mut seen = std::collections::HashMap::<(u32, u32), usize>::new();
    let mut out = Vec::new();
    for d in datagrams {
        let Ok(f) = crate::wire::FrameReader::new(&d) else {
            continue;
        };
        let kinds = f.msgs().fold(0u32, |acc, m| acc | 1 << kind_of(&m));
        let n = seen.entry((f.sender(), kinds)).or_insert(0);
        if *n < 3 && d.len() <= MAX_SEED_BYTES {
            *n += 1;
            out.push((format!("frame-{}-{kinds:x}-{n}", f.sender()), d));
        }
    }
    out
}

fn kind_of(m: &crate::wire::Msg<'_>) -> u32 {
    use crate::wire::Msg::*;
    match m {
        Update(_) => 1,
        Ack(_) => 2,
        FwdAck(_) => 3,
        Commit(_) => 4,
        Nack(_) => 5,
        Heartbeat(_) => 6,
        LaQuery(_) => 7,
        LaReply(_) => 8,
        ReplayBegin(_) => 9,
        ReplayEntry(..) => 10,
        ReplayEnd(_) => 11,
        ReplayAck(_) => 12,
        XferBegin(_) => 13,
        XferEntry(..) => 14,
        XferEnd(_) => 15,
        XferAck(_) => 16,
        XferHistory(_) => 17,
        Submit(_) => 18,
    }
}

const CONFIG_BASE: &str = r#"[[control_units]]
id = 1
addr = "127.0.0.1:17101"
admin = "127.0.0.1:17001"
[[control_units]]
id = 2
addr = "[::1]:17102"
admin = "127.0.0.1:17002"
[[clients]]
id = 100
addr = "127.0.0.1:17200"
admin = "127.0.0.1:17300"
channels = [0, 2]
[[clients]]
id = 101
addr = "127.0.0.1:17201"
admin = "127.0.0.1:17301"
channels = [1]
"#;

const CONFIG_OPTIONAL: &str = r#"
[submitters]
ids = [900, 901]
[timing]
heartbeat_ms = 5
failover_timeout_ms = 30
drop_timeout_ms = 60
query_timeout_ms = 20
rto_ms = 10
startup_grace_ms = 250
[protocol]
cut_policy = "weighted:16"
window_ops = 64
max_datagram_bytes = 9000
[runtime]
io = "mmsg"
cores = [1, 2]
rcvbuf_bytes = 4194304
[faults]
drop = 0.1
duplicate = 0.01
reorder = 0.02
delay = 0.05
delay_us = 300
seed = 7
"#;

fn config_seeds() -> Vec<(String, Vec<u8>)> {
    let shipped = include_str!("../../configs/router-small.toml");
    let mut out = vec![
        ("router-small".to_string(), shipped),
        ("base".to_string(), CONFIG_BASE),
    ]
    .into_iter()
    .map(|(n, t)| (n, t.as_bytes().to_vec()))
    .collect::<Vec<_>>();
    out.push((
        "optional".into(),
        format!("{CONFIG_BASE}{CONFIG_OPTIONAL}").into_bytes(),
    ));
    for (name, extra) in [
        (
            "fast",
            "[protocol]\ncut_policy = \"fast\"\nwindow_ops = 2\nmax_datagram_bytes = 512\n",
        ),
        (
            "complete",
            "[protocol]\ncut_policy = \"complete\"\n[runtime]\nio = \"uring\"\n",
        ),
        (
            "timing-edge",
            "[timing]\nheartbeat_ms = 1\nfailover_timeout_ms = 2\ndrop_timeout_ms = 3600000\nquery_timeout_ms = 3600000\nrto_ms = 1\nstartup_grace_ms = 0\n",
        ),
        (
            "bad-gap",
            "[[clients]]\nid = 102\naddr = \"127.0.0.1:1\"\nadmin = \"127.0.0.1:2\"\nchannels = [5]\n",
        ),
        (
            "security-state",
            "[security]\nkey_dir = \"keys\"\n[state]\ndir = \"/var/lib/statesync\"\n",
        ),
        (
            "hostname",
            "[[clients]]\nid = 102\naddr = \"localhost:7001\"\nadmin = \"127.0.0.1:2\"\nchannels = [3]\n",
        ),
    ] {
        out.push((name.into(), format!("{CONFIG_BASE}{extra}").into_bytes()));
    }
    out
}

/// Seeds of the `auth` target: each op kind (raw datagram, sealed frame, changed frame,
/// replay, time) at least once.
fn auth_seeds() -> Vec<(String, Vec<u8>)> {
    let body: Vec<u8> = (0..64).collect();
    let sealed = [&[1u8][..], &body, &[]].concat();
    vec![
        ("sealed".into(), sealed.clone()),
        ("changed".into(), [&[1u8][..], &body, &[5, 77]].concat()),
        ("replay".into(), [&sealed[..], &[0, 0, 2]].concat()),
        ("raw".into(), [&[0u8, 20][..], &[0u8; 80]].concat()),
        (
            "time".into(),
            [&[3u8, 0x20, 0x4e][..], &sealed, &[0, 0, 2]].concat(),
        ),
    ]
}
