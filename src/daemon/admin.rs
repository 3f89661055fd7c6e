//! The admin protocol (`docs/DAEMON.md`): one JSON object per UDP datagram, answered to the
//! sender. The server side ([`Admin`]) is polled by the node's event loop; [`request`] is the
//! client side used by `statesync status` and `statesync switchover`.

use super::Clock;
use crate::proto::{ControlUnit, Counters, NodeId, OpStatus, Role};
use crate::runtime::node::{Machine, NodeRunner};
use serde::Deserialize;
use serde_json::{Value, json};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Largest request accepted (one datagram); anything longer is truncated and so malformed.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Largest reply sent: a status of many channels is cut to fit (`channels_truncated`).
pub const MAX_REPLY_BYTES: usize = 65_000;
/// Requests handled per poll, so that a flood cannot starve the data plane.
const MAX_REQUESTS_PER_POLL: usize = 64;

#[derive(Debug, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
enum Request {
    Status,
    Takeover,
    Switchover {
        target: NodeId,
    },
    /// One op (`op`), or every op of `from..=to` counted per status.
    OpStatus {
        channel: u32,
        epoch: u64,
        op: Option<u64>,
        from: Option<u64>,
        to: Option<u64>,
    },
}

fn status_name(s: OpStatus) -> &'static str {
    match s {
        OpStatus::Committed => "committed",
        OpStatus::Pending => "pending",
        OpStatus::Discarded => "discarded",
        OpStatus::Unknown => "unknown",
    }
}

/// What the admin endpoint has seen.
#[derive(Debug, Default, Clone, Copy)]
pub struct AdminStats {
    pub requests: u64,
    pub malformed: u64,
    pub failed: u64,
    pub reply_errors: u64,
}

/// The node's admin socket.
#[derive(Debug)]
pub struct Admin {
    socket: UdpSocket,
    buf: Vec<u8>,
    pub stats: AdminStats,
}

impl Admin {
    pub fn bind(addr: SocketAddr) -> io::Result<Admin> {
        let socket = UdpSocket::bind(addr)?;
        socket.set_nonblocking(true)?;
        Ok(Admin {
            socket,
            buf: vec![0; MAX_REQUEST_BYTES],
            stats: AdminStats::default(),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Answers every pending request (up to a bound). Returns how many were handled.
    pub fn poll(&mut self, runner: &mut NodeRunner, clock: &Clock, now_us: u64) -> usize {
        let mut handled = 0;
        while handled < MAX_REQUESTS_PER_POLL {
            let (len, src) = match self.socket.recv_from(&mut self.buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // ICMP errors from an earlier reply and the like: not ours to stop for.
                Err(_) => {
                    self.stats.reply_errors += 1;
                    break;
                }
            };
            handled += 1;
            let reply = handle_request(&self.buf[..len], runner, clock, now_us, &mut self.stats);
            let bytes = encode_reply(reply);
            if self.socket.send_to(&bytes, src).is_err() {
                self.stats.reply_errors += 1;
            }
        }
        handled
    }
}

fn error_reply(msg: impl Into<String>) -> Value {
    json!({"ok": false, "error": msg.into()})
}

/// Handles one request datagram; never panics on its content.
pub fn handle_request(
    bytes: &[u8],
    runner: &mut NodeRunner,
    clock: &Clock,
    now_us: u64,
    stats: &mut AdminStats,
) -> Value {
    stats.requests += 1;
    let req: Request = match serde_json::from_slice(bytes) {
        Ok(r) => r,
        Err(e) => {
            stats.malformed += 1;
            return error_reply(format!("malformed request: {e}"));
        }
    };
    let reply = match req {
        Request::Status => Ok(status(runner, clock, now_us, stats)),
        Request::Takeover => match runner.machine.as_cu_mut() {
            None => Err("takeover: this node is a client, not a control unit".to_owned()),
            Some(cu) => cu
                .operator_takeover(now_us)
                .map(|()| json!({"ok": true, "epoch": cu.epoch()}))
                .map_err(|e| format!("takeover refused: {e} (role {})", role_name(cu.role()))),
        },
        Request::Switchover { target } => match runner.machine.as_cu_mut() {
            None => Err("switchover: this node is a client, not a control unit".to_owned()),
            Some(cu) => cu
                .request_switchover(target)
                .map(|()| json!({"ok": true}))
                .map_err(|e| format!("switchover to {target} refused: {e}")),
        },
        Request::OpStatus {
            channel,
            epoch,
            op,
            from,
            to,
        } => match runner.machine.as_cu() {
            None => Err("op_status: this node is a client, not a control unit".to_owned()),
            Some(cu) if channel as usize >= cu.config().topology.channels() => {
                Err(format!("op_status: no channel {channel}"))
            }
            Some(cu) => match (op, from, to) {
                (Some(op), None, None) => {
                    Ok(json!({"ok": true, "status": status_name(cu.op_status(channel, epoch, op))}))
                }
                (None, Some(from), Some(to)) if from <= to => {
                    let n = cu.op_status_counts(channel, epoch, from, to);
                    Ok(json!({"ok": true, "counts": {
                        "committed": n.committed,
                        "pending": n.pending,
                        "discarded": n.discarded,
                        "unknown": n.unknown,
                    }}))
                }
                _ => Err(
                    "op_status: give either \"op\", or \"from\" and \"to\" with from <= to"
                        .to_owned(),
                ),
            },
        },
    };
    reply.unwrap_or_else(|e| {
        stats.failed += 1;
        error_reply(e)
    })
}

pub fn role_name(r: Role) -> &'static str {
    match r {
        Role::Primary => "primary",
        Role::Standby => "standby",
        Role::Candidate => "candidate",
        Role::Joining => "joining",
    }
}

pub fn hex_digest(d: u64) -> String {
    format!("{d:016x}")
}

fn counters_json(c: &Counters) -> Value {
    json!({
        "frames_rx": c.frames_rx,
        "frames_tx": c.frames_tx,
        "bytes_tx": c.bytes_tx,
        "rejected_malformed": c.rejected_malformed,
        "rejected_stale_epoch": c.rejected_stale_epoch,
        "rejected_unknown_sender": c.rejected_unknown_sender,
        "rejected_unexpected": c.rejected_unexpected,
        "updates_applied": c.updates_applied,
        "retransmits": c.retransmits,
        "nacks_sent": c.nacks_sent,
        "replays_started": c.replays_started,
        "replay_bytes": c.replay_bytes,
        "xfer_bytes": c.xfer_bytes,
        "xfer_catch_ups": c.xfer_catch_ups,
        "submits_accepted": c.submits_accepted,
        "submits_rejected": c.submits_rejected,
    })
}

fn cu_status(cu: &ControlUnit, clock: &Clock) -> Value {
    let unix = |t: u64| clock.to_unix_us(t);
    let t = cu.timing;
    // A failover never starts at time 0: the clock starts at `Clock::ORIGIN_US`.
    let failover = if t.started_us == 0 {
        json!({"started_unix_us": null, "finished_unix_us": null, "last_primary_rx_unix_us": null})
    } else {
        json!({
            "started_unix_us": unix(t.started_us),
            "finished_unix_us": t.finished_us.map(unix),
            "last_primary_rx_unix_us": (t.last_primary_rx_us != 0).then(|| unix(t.last_primary_rx_us)),
        })
    };
    let primary = cu.role() == Role::Primary;
    let channels: Vec<Value> = (0..cu.config().topology.channels() as u32)
        .map(|ch| {
            let (applied, held) = if primary {
                let top = cu.next_op(ch) - 1;
                (top, top)
            } else {
                cu.standby_position(ch)
            };
            let state = cu.state(ch);
            json!({
                "channel": ch,
                "next_op": cu.next_op(ch),
                "commit": cu.commit_watermark(ch),
                "client_acked": cu.client_acked(ch),
                "applied": applied,
                "held": held,
                "public_digest": hex_digest(state.map_or(0, |s| s.public_digest())),
                "full_digest": hex_digest(state.map_or(0, |s| s.full_digest())),
                // Which epoch assigned which ops: `[epoch, first_op]` per segment, so that an
                // op position read here can be named (epoch, op) for `op_status` later.
                "history": cu.history(ch).segments().map(|(e, s)| [e, s]).collect::<Vec<_>>(),
                "state_bytes": state.map_or(0, state_wire_bytes),
                "last_failover": cu.last_failover(ch).map(failover_json),
            })
        })
        .collect();
    json!({
        "ok": true,
        "id": cu.id,
        "kind": "control_unit",
        "role": role_name(cu.role()),
        "epoch": cu.epoch(),
        // What the unit persists (see `ControlUnit::highest_epoch`): never lower after a
        // restart with `[state] dir` set, even while `epoch` is 0 (joining, nothing heard).
        "highest_epoch": cu.highest_epoch(),
        "eligible": cu.is_eligible(),
        "failover": failover,
        "sync_mask": cu.sync_mask(),
        "channels": channels,
        "counters": counters_json(&cu.counters),
        "submits": {
            "accepted": cu.counters.submits_accepted,
            "rejected": cu.counters.submits_rejected,
        },
    })
}

fn status(runner: &NodeRunner, clock: &Clock, now_us: u64, stats: &AdminStats) -> Value {
    let mut v = match &runner.machine {
        Machine::Cu(cu) => cu_status(cu, clock),
        Machine::Client(c) => {
            let channels: Vec<Value> = c
                .channels()
                .map(|ch| {
                    json!({
                        "channel": ch,
                        "applied": c.applied(ch).unwrap_or(0),
                        "unknown": c.is_unknown(ch),
                        "public_digest": hex_digest(c.state(ch).map_or(0, |s| s.public_digest())),
                    })
                })
                .collect();
            json!({
                "ok": true,
                "id": c.id,
                "kind": "client",
                "epoch": c.epoch(),
                "primary": c.primary(),
                "channels": channels,
                "counters": counters_json(&c.counters),
            })
        }
    };
    let obj = v.as_object_mut().expect("status is an object");
    obj.insert("now_unix_us".into(), json!(clock.to_unix_us(now_us)));
    obj.insert(
        "uptime_us".into(),
        json!(now_us.saturating_sub(Clock::ORIGIN_US)),
    );
    obj.insert(
        "transport".into(),
        json!({
            "io": runner.transport.kind().to_string(),
            "rejected_unknown_addr": runner.rejected_unknown_addr,
            "datagrams_sent": runner.transport.stats().datagrams_sent,
            "datagrams_received": runner.transport.stats().datagrams_received,
        }),
    );
    obj.insert(
        "admin".into(),
        json!({
            "requests": stats.requests,
            "malformed": stats.malformed,
            "failed": stats.failed,
        }),
    );
    v
}

/// Serializes a reply, cutting the channel list if it would not fit in one datagram.
pub fn encode_reply(mut v: Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(&v).unwrap_or_default();
    if bytes.len() <= MAX_REPLY_BYTES {
        return bytes;
    }
    let total = v["channels"].as_array().map_or(0, |a| a.len());
    let mut keep = total;
    while bytes.len() > MAX_REPLY_BYTES && keep > 0 {
        keep /= 2;
        if let Some(a) = v.get_mut("channels").and_then(|c| c.as_array_mut()) {
            a.truncate(keep);
        }
        if let Some(o) = v.as_object_mut() {
            o.insert("channels_truncated".into(), json!(total - keep));
        }
        bytes = serde_json::to_vec(&v).unwrap_or_default();
    }
    if bytes.len() > MAX_REPLY_BYTES {
        bytes = serde_json::to_vec(&error_reply("reply too large for one datagram"))
            .unwrap_or_default();
    }
    bytes
}

// ---------------------------------------------------------------------------------------------
// Client side.

#[derive(Debug, Error)]
pub enum RequestError {
    #[error("admin socket: {0}")]
    Io(#[from] io::Error),
    #[error("no reply from {addr} within {timeout:?} ({attempts} attempt(s))")]
    Timeout {
        addr: SocketAddr,
        timeout: Duration,
        attempts: u32,
    },
    #[error("reply from {addr} is not JSON: {message}")]
    BadReply { addr: SocketAddr, message: String },
}

/// Sends `req` to the admin socket at `addr` and waits up to `timeout` for the reply.
/// Read-only requests (`status`, `op_status`) are retried twice within that time; a takeover or
/// switchover is sent once, since repeating it is not harmless.
pub fn request(addr: SocketAddr, req: &Value, timeout: Duration) -> Result<Value, RequestError> {
    let local: IpAddr = match addr {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind(SocketAddr::new(local, 0))?;
    let payload = serde_json::to_vec(req).map_err(io::Error::other)?;
    let idempotent = matches!(
        req.get("cmd").and_then(|c| c.as_str()),
        Some("status" | "op_status")
    );
    let attempts: u32 = if idempotent { 3 } else { 1 };
    let per_attempt = (timeout / attempts).max(Duration::from_millis(1));
    let mut buf = vec![0u8; MAX_REQUEST_BYTES];
    for _ in 0..attempts {
        socket.send_to(&payload, addr)?;
        let deadline = Instant::now() + per_attempt;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            socket.set_read_timeout(Some(left))?;
            match socket.recv_from(&mut buf) {
                Ok((len, src)) => {
                    if src.port() != addr.port() {
                        continue;
                    }
                    return serde_json::from_slice(&buf[..len]).map_err(|e| {
                        RequestError::BadReply {
                            addr,
                            message: e.to_string(),
                        }
                    });
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                // ECONNREFUSED from an ICMP port-unreachable: nobody listens (yet); retry.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    std::thread::sleep(left.min(Duration::from_millis(20)));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Err(RequestError::Timeout {
        addr,
        timeout,
        attempts,
    })
}

/// What a full replay of this channel's client-visible state would put on the wire.
fn state_wire_bytes(s: &crate::proto::ChannelState) -> u64 {
    let all = crate::proto::state::ALL_SECTIONS_MASK;
    s.value_bytes(all) + s.entry_count(all) * (size_of::<crate::wire::BulkEntry>() as u64 + 4)
}

fn failover_json(f: crate::proto::ChannelFailover) -> Value {
    use crate::proto::Resolution;
    let (resolution, client_op) = match f.resolution {
        Resolution::Behind { client_op } if client_op == f.cut => ("in_sync", Some(client_op)),
        Resolution::Behind { client_op } => ("behind", Some(client_op)),
        Resolution::Ahead { client_op } => ("ahead", Some(client_op)),
        Resolution::Unknown => ("unknown", None),
    };
    json!({
        "epoch": f.epoch,
        "resolution": resolution,
        "client_op": client_op,
        "cut": f.cut,
        "replay_sections": f.replay_sections,
        "replay_bytes": f.replay_bytes,
        "full_replay_bytes": f.full_replay_bytes,
        "resent_ops": f.resent_ops,
        "resent_bytes": f.resent_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::config;
    use crate::transport::{IoChoice, Transport, TransportConfig};

    fn runner(id: NodeId) -> NodeRunner {
        let cfg = config::parse(config::TEST_CONFIG, "t").unwrap();
        let clock = Clock::new();
        let now = clock.now_us();
        let machine = if id == 100 {
            Machine::Client(Box::new(crate::proto::Client::new(
                cfg.proto_config(),
                id,
                false,
                7,
                now,
            )))
        } else {
            Machine::Cu(Box::new(ControlUnit::new(
                cfg.proto_config(),
                id,
                true,
                7,
                now,
            )))
        };
        let transport = Transport::open(TransportConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            io: IoChoice::Mmsg,
            ..Default::default()
        })
        .unwrap();
        NodeRunner::new(machine, transport, [])
    }

    fn ask(r: &mut NodeRunner, req: &[u8], stats: &mut AdminStats) -> Value {
        let clock = Clock::new();
        let now = clock.now_us();
        handle_request(req, r, &clock, now, stats)
    }

    #[test]
    fn status_of_primary_and_client() {
        let mut stats = AdminStats::default();
        let mut p = runner(1);
        let v = ask(&mut p, br#"{"cmd":"status"}"#, &mut stats);
        assert_eq!(v["role"], "primary");
        assert_eq!(v["kind"], "control_unit");
        assert_eq!(v["epoch"], 256);
        assert_eq!(v["channels"].as_array().unwrap().len(), 2);
        assert_eq!(
            v["channels"][0]["public_digest"].as_str().unwrap().len(),
            16
        );
        assert!(v["failover"]["started_unix_us"].is_null());
        assert!(v["now_unix_us"].as_u64().unwrap() > 1_600_000_000_000_000);
        assert_eq!(v["submits"]["accepted"], 0);
        let mut c = runner(100);
        let v = ask(&mut c, br#"{"cmd":"status"}"#, &mut stats);
        assert_eq!(v["kind"], "client");
        assert_eq!(v["channels"][1]["channel"], 1);
        assert_eq!(v["channels"][1]["unknown"], false);
    }

    #[test]
    fn bad_requests_are_answered_and_counted() {
        let mut stats = AdminStats::default();
        let mut p = runner(1);
        for req in [
            &b""[..],
            b"\xff\xfe",
            b"[]",
            br#"{"cmd":"fly"}"#,
            br#"{"cmd":"switchover"}"#,
            br#"{"cmd":"op_status","channel":"x"}"#,
            br#"{"nocmd":1}"#,
        ] {
            let v = ask(&mut p, req, &mut stats);
            assert_eq!(v["ok"], false, "{req:?}");
            assert!(v["error"].as_str().unwrap().contains("malformed"));
        }
        assert_eq!(stats.malformed, 7);
        // Valid but refused.
        let v = ask(&mut p, br#"{"cmd":"takeover"}"#, &mut stats);
        assert_eq!(v["ok"], false);
        let v = ask(
            &mut p,
            br#"{"cmd":"op_status","channel":9,"epoch":256,"op":1}"#,
            &mut stats,
        );
        assert_eq!(v["ok"], false);
        let v = ask(
            &mut p,
            br#"{"cmd":"op_status","channel":1,"epoch":256,"op":1}"#,
            &mut stats,
        );
        assert_eq!(v["status"], "unknown");
        let v = ask(
            &mut p,
            br#"{"cmd":"op_status","channel":1,"epoch":256,"from":1,"to":5}"#,
            &mut stats,
        );
        assert_eq!(v["counts"]["unknown"], 5, "{v}");
        assert_eq!(v["counts"]["committed"], 0, "{v}");
        for req in [
            &br#"{"cmd":"op_status","channel":1,"epoch":256,"from":5,"to":1}"#[..],
            br#"{"cmd":"op_status","channel":1,"epoch":256,"from":5}"#,
            br#"{"cmd":"op_status","channel":1,"epoch":256,"op":1,"from":1,"to":2}"#,
            br#"{"cmd":"op_status","channel":1,"epoch":256}"#,
        ] {
            let v = ask(&mut p, req, &mut stats);
            assert_eq!(v["ok"], false, "{v}");
        }
        let v = ask(&mut p, br#"{"cmd":"switchover","target":2}"#, &mut stats);
        assert_eq!(v["ok"], true, "{v}");
        let mut s = runner(2);
        let v = ask(&mut s, br#"{"cmd":"takeover"}"#, &mut stats);
        assert_eq!(v["ok"], true, "{v}");
        assert!(v["epoch"].as_u64().unwrap() > 256);
        let mut c = runner(100);
        let v = ask(&mut c, br#"{"cmd":"takeover"}"#, &mut stats);
        assert_eq!(v["ok"], false);
    }

    #[test]
    fn oversized_reply_is_truncated() {
        let channels: Vec<Value> = (0..5000)
            .map(|c| json!({"channel": c, "public_digest": hex_digest(c)}))
            .collect();
        let bytes = encode_reply(json!({"ok": true, "channels": channels}));
        assert!(bytes.len() <= MAX_REPLY_BYTES);
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(v["channels_truncated"].as_u64().unwrap() > 0);
    }

    #[test]
    fn request_round_trip_and_timeout() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            let (n, src) = server.recv_from(&mut buf).unwrap();
            let v: Value = serde_json::from_slice(&buf[..n]).unwrap();
            assert_eq!(v["cmd"], "status");
            server.send_to(br#"{"ok":true}"#, src).unwrap();
        });
        let v = request(addr, &json!({"cmd":"status"}), Duration::from_secs(2)).unwrap();
        assert_eq!(v["ok"], true);
        t.join().unwrap();
        // Nobody answers now.
        let e = request(addr, &json!({"cmd":"status"}), Duration::from_millis(60)).unwrap_err();
        assert!(matches!(e, RequestError::Timeout { .. }), "{e}");
    }
}
