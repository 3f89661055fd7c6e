//! The admin protocol (`docs/DAEMON.md`): JSON requests answered with JSON replies, served on
//! two kinds of listener, polled by the node's event loop through [`Admin`]:
//!
//! - always, a Unix stream socket ([`unix`]), one request per line: only root, the daemon's own
//!   user and the socket's group get in, which the kernel vouches for (`SO_PEERCRED`), so every
//!   request there may do everything;
//! - on request (a node's `admin = "IP:PORT"`), a UDP socket, one request per datagram: any
//!   host can send to it, spoof its source and read what others send, so `takeover` and
//!   `switchover` need a request MAC'd with the token of `admin.token_file` ([`mac`]: the token
//!   itself never travels; a timestamp and a replay cache stop a captured request from being
//!   sent again), and a sender without a valid MAC never gets a reply larger than its request
//!   (no amplification). A request carrying the token in clear (`"token"`, the old form) is
//!   refused.
//!
//! [`request`] is the client side used by `statesync status|switchover|admin` and the drill;
//! [`status`] types the `status` request and reply, and pages it rather than cutting it.

pub mod config;
pub mod dry_run;
pub mod mac;
pub mod status;
pub mod unix;
pub mod view;

pub use config::{AdminConfig, AdminToken, read_token_file};
pub use mac::UdpAuth;

use super::Clock;
use crate::proto::{NodeId, OpStatus, Role};
use crate::runtime::node::NodeRunner;
use serde::Deserialize;
use serde_json::{Value, json};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Largest request accepted (one datagram or one line); a longer one is refused as malformed.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Largest UDP reply sent: a status of more channels comes in pages (`next_channel`).
pub const MAX_REPLY_BYTES: usize = 65_000;
pub use unix::MAX_STREAM_REPLY_BYTES;
/// Requests handled per poll, so that a flood cannot starve the data plane.
const MAX_REQUESTS_PER_POLL: usize = 64;
/// Refusals logged one by one per [`REFUSAL_LOG_PERIOD_US`]; beyond that they are counted and
/// summed up in one line, so that a flood of refused requests cannot flood the log.
const REFUSAL_LOG_LINES_PER_PERIOD: u32 = 10;
const REFUSAL_LOG_PERIOD_US: u64 = 1_000_000;

#[derive(Debug, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
enum Request {
    /// One page of the status (see [`status`]).
    Status(status::StatusRequest),
    Takeover,
    Switchover {
        target: NodeId,
    },
    /// What a takeover by this unit would do now (see [`dry_run`]), with the clients'
    /// own answers where the caller asked them (`query_answer`).
    FailoverPreview {
        #[serde(default)]
        answers: Vec<dry_run::ClientAnswer>,
    },
    /// A client: what it would answer a takeover's query on each channel above the given op,
    /// without acting (see [`dry_run`]).
    QueryAnswer {
        channels: Vec<dry_run::QueryAbove>,
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

impl Request {
    /// Commands that change what the node does, as opposed to reading its state.
    fn is_control(&self) -> bool {
        matches!(self, Request::Takeover | Request::Switchover { .. })
    }

    fn name(&self) -> &'static str {
        match self {
            Request::Status(_) => "status",
            Request::Takeover => "takeover",
            Request::Switchover { .. } => "switchover",
            Request::FailoverPreview { .. } => "failover_preview",
            Request::QueryAnswer { .. } => "query_answer",
            Request::OpStatus { .. } => "op_status",
        }
    }
}

fn status_name(s: OpStatus) -> &'static str {
    match s {
        OpStatus::Committed => "committed",
        OpStatus::Pending => "pending",
        OpStatus::Discarded => "discarded",
        OpStatus::Unknown => "unknown",
    }
}

/// What the admin listeners have seen.
#[derive(Debug, Default, Clone, Copy)]
pub struct AdminStats {
    pub requests: u64,
    pub malformed: u64,
    pub failed: u64,
    pub reply_errors: u64,
    /// Unix connections refused: the peer is not root, the daemon's user or in the socket's
    /// group.
    pub refused_peer: u64,
    /// UDP requests refused for want of authentication: a control command (or a request whose
    /// reply grows with the channels) without a MAC, or any request with the token in clear.
    pub refused_token: u64,
    /// UDP requests whose MAC does not verify (or sent to a node without a token).
    pub refused_mac: u64,
    /// UDP requests whose MAC verified but whose timestamp is outside the window.
    pub refused_stale: u64,
    /// UDP requests whose MAC verified but were accepted before, or met a full replay cache.
    pub refused_replay: u64,
    /// UDP replies withheld from an unauthenticated sender because they were larger than its
    /// request (it got a short error or nothing).
    pub refused_size: u64,
    /// Unix connections closed for being idle, or turned away with every slot taken.
    pub connections_dropped: u64,
}

/// Where a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The Unix socket: the kernel vouched for the peer at connect, so it may do everything.
    Local,
    /// The UDP listener: anyone may have sent it, from any source address.
    Network,
}

/// A handled request.
#[derive(Debug)]
pub struct Outcome {
    pub reply: Value,
    /// The request came over the Unix socket or carried a valid MAC: its reply may be of any
    /// size.
    pub authenticated: bool,
    /// Why it was refused, for the log (also counted in [`AdminStats`]).
    pub refused: Option<String>,
}

/// Logs refusals without letting a flood of them flood the log: the first
/// [`REFUSAL_LOG_LINES_PER_PERIOD`] of each period one line each, the rest as one count.
#[derive(Debug)]
pub struct RefusalLog {
    id: NodeId,
    period_start_us: u64,
    logged: u32,
    unlogged: u64,
}

impl RefusalLog {
    pub fn new(id: NodeId) -> RefusalLog {
        RefusalLog {
            id,
            period_start_us: 0,
            logged: 0,
            unlogged: 0,
        }
    }

    /// Logs one refusal (already counted by the caller), or counts it for the summary line.
    pub fn refuse(&mut self, now_us: u64, msg: std::fmt::Arguments<'_>) {
        self.flush(now_us);
        if self.logged < REFUSAL_LOG_LINES_PER_PERIOD {
            self.logged += 1;
            tracing::warn!(node = self.id, "admin: {msg}");
        } else {
            self.unlogged += 1;
        }
    }

    /// Starts a new period once the current one is over, summing up what was not logged.
    pub fn flush(&mut self, now_us: u64) {
        if now_us.saturating_sub(self.period_start_us) < REFUSAL_LOG_PERIOD_US {
            return;
        }
        if self.unlogged > 0 {
            tracing::warn!(
                node = self.id,
                "admin: {} more refusals not logged one by one (see the admin counters of status)",
                self.unlogged
            );
        }
        self.period_start_us = now_us;
        self.logged = 0;
        self.unlogged = 0;
    }
}

/// The node's admin listeners.
#[derive(Debug)]
pub struct Admin {
    unix: unix::UnixAdmin,
    udp: Option<UdpSocket>,
    /// The UDP listener's MAC key and replay cache (`None`: no token, no MAC is valid).
    auth: Option<UdpAuth>,
    buf: Vec<u8>,
    pub stats: AdminStats,
    refusals: RefusalLog,
    /// The lags in time that `status` reports, sampled at each poll.
    lags: status::Lags,
}

impl Admin {
    /// Binds the Unix socket at `socket_path` and, if `udp` names one, the UDP listener.
    /// `token` authenticates UDP control commands (`None`: none is ever accepted over UDP).
    pub fn open(
        id: NodeId,
        socket_path: &Path,
        udp: Option<SocketAddr>,
        token: Option<AdminToken>,
    ) -> Result<Admin, String> {
        let unix = unix::UnixAdmin::bind(socket_path)?;
        let udp = match udp {
            None => None,
            Some(addr) => {
                let bind = || -> io::Result<UdpSocket> {
                    let s = UdpSocket::bind(addr)?;
                    s.set_nonblocking(true)?;
                    Ok(s)
                };
                Some(bind().map_err(|e| format!("admin UDP socket {addr}: {e}"))?)
            }
        };
        Ok(Admin {
            unix,
            udp,
            auth: token.as_ref().map(UdpAuth::new),
            buf: vec![0; MAX_REQUEST_BYTES],
            stats: AdminStats::default(),
            refusals: RefusalLog::new(id),
            lags: status::Lags::default(),
        })
    }

    pub fn socket_path(&self) -> &Path {
        self.unix.path()
    }

    /// Whether a Unix connection was active in the last few milliseconds: its request or the
    /// rest of its reply is likely due at once, so the caller should poll again soon.
    pub fn busy(&self, now_us: u64) -> bool {
        self.unix.busy(now_us)
    }

    /// The UDP listener's address, if there is one.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp.as_ref().and_then(|s| s.local_addr().ok())
    }

    /// Answers pending requests on both listeners (up to a bound). Returns how many were
    /// handled.
    pub fn poll(&mut self, runner: &mut NodeRunner, clock: &Clock, now_us: u64) -> usize {
        let Admin {
            unix,
            udp,
            auth,
            buf,
            stats,
            refusals,
            lags,
        } = self;
        lags.update(runner, now_us);
        let lags = &*lags;
        let mut handled = unix.poll(
            MAX_REQUESTS_PER_POLL,
            now_us,
            stats,
            refusals,
            &mut |bytes, stats| {
                handle_request_with_lags(
                    bytes,
                    Caller::Local,
                    None,
                    runner,
                    clock,
                    now_us,
                    stats,
                    Some(lags),
                )
                .reply
            },
        );
        if let Some(socket) = udp {
            while handled < MAX_REQUESTS_PER_POLL {
                let (len, src) = match socket.recv_from(buf) {
                    Ok(r) => r,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // ICMP errors from an earlier reply and the like: not ours to stop for.
                    Err(_) => {
                        stats.reply_errors += 1;
                        break;
                    }
                };
                handled += 1;
                let request = &buf[..len];
                let out = handle_request_with_lags(
                    request,
                    Caller::Network,
                    auth.as_mut(),
                    runner,
                    clock,
                    now_us,
                    stats,
                    Some(lags),
                );
                if let Some(why) = &out.refused {
                    refusals.refuse(
                        now_us,
                        format_args!("refused a UDP request from {src}: {why}"),
                    );
                }
                let bytes = if out.authenticated {
                    encode_reply(out.reply, MAX_REPLY_BYTES)
                } else {
                    let bytes = encode_reply(out.reply, MAX_REPLY_BYTES);
                    if bytes.len() <= len {
                        bytes
                    } else {
                        stats.refused_size += 1;
                        refusals.refuse(
                            now_us,
                            format_args!(
                                "withheld a {}-byte reply from {src}: larger than its {len}-byte request without a valid \"mac\"",
                                bytes.len()
                            ),
                        );
                        match short_refusal(len) {
                            Some(b) => b,
                            None => continue,
                        }
                    }
                };
                if socket.send_to(&bytes, src).is_err() {
                    stats.reply_errors += 1;
                }
            }
        }
        refusals.flush(now_us);
        handled
    }
}

/// The longest of the short refusals that fits in `limit` bytes, if any: a sender that is not
/// authenticated never gets more bytes than it sent, and no padding is asked for.
fn short_refusal(limit: usize) -> Option<Vec<u8>> {
    [
        &br#"{"ok":false,"error":"unauthenticated: the reply would be larger than the request; MAC it with the token or use the Unix socket"}"#[..],
        br#"{"ok":false,"error":"unauthenticated"}"#,
    ]
    .into_iter()
    .find(|b| b.len() <= limit)
    .map(<[u8]>::to_vec)
}

fn error_reply(msg: impl Into<String>) -> Value {
    json!({"ok": false, "error": msg.into()})
}

/// Handles one request; never panics on its content. Over the network (`auth`: the node's MAC
/// key and replay cache, `None` without a token), a request in the MAC envelope ([`mac`]) must
/// open, one with the token in clear is refused, and `takeover` and `switchover` need the
/// envelope. A status built here reports no lags in time (the node's [`Admin`] keeps the
/// trackers for those).
pub fn handle_request(
    bytes: &[u8],
    caller: Caller,
    auth: Option<&mut UdpAuth>,
    runner: &mut NodeRunner,
    clock: &Clock,
    now_us: u64,
    stats: &mut AdminStats,
) -> Outcome {
    handle_request_with_lags(bytes, caller, auth, runner, clock, now_us, stats, None)
}

/// A MAC'd UDP request, as [`mac`] describes it; nothing else may be beside the two fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    mac: String,
    body: String,
}

/// A refused request: the reply and the log line say why (the caller counted it).
fn refusal(why: String) -> Outcome {
    Outcome {
        reply: error_reply(why.clone()),
        authenticated: false,
        refused: Some(why),
    }
}

/// The most bytes a reply to this caller may have: no practical limit on the Unix socket; one
/// datagram over UDP, and no more than the request to a sender without a valid token.
fn reply_limit(caller: Caller, authenticated: bool, request_len: usize) -> usize {
    match caller {
        Caller::Local => MAX_STREAM_REPLY_BYTES,
        Caller::Network if authenticated => MAX_REPLY_BYTES,
        Caller::Network => MAX_REPLY_BYTES.min(request_len),
    }
}

/// [`handle_request`] with the node's lag trackers.
#[allow(clippy::too_many_arguments)]
pub fn handle_request_with_lags(
    bytes: &[u8],
    caller: Caller,
    auth: Option<&mut UdpAuth>,
    runner: &mut NodeRunner,
    clock: &Clock,
    now_us: u64,
    stats: &mut AdminStats,
    lags: Option<&status::Lags>,
) -> Outcome {
    stats.requests += 1;
    let malformed = |stats: &mut AdminStats, e: serde_json::Error, authenticated| {
        stats.malformed += 1;
        Outcome {
            reply: error_reply(format!("malformed request: {e}")),
            authenticated,
            refused: None,
        }
    };
    let v: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => return malformed(stats, e, caller == Caller::Local),
    };
    // Over the network the request is the MAC envelope's body once it opened, else the
    // datagram itself, unauthenticated.
    let (v, authenticated) = match caller {
        Caller::Local => (v, true),
        Caller::Network if v.get("token").is_some() => {
            stats.refused_token += 1;
            return refusal(
                "the token travels in clear (\"token\"): refused, anyone on the path could replay it; upgrade the client, which MACs the request with the token (--token-file)".into(),
            );
        }
        Caller::Network if v.get("mac").is_none() => (v, false),
        Caller::Network => {
            let env = match Envelope::deserialize(&v) {
                Ok(e) => e,
                Err(e) => return malformed(stats, e, false),
            };
            let Some(auth) = auth else {
                stats.refused_mac += 1;
                return refusal("this node has no admin.token_file, so no MAC is valid".into());
            };
            match auth.open(&env.mac, &env.body, super::unix_now_us()) {
                Ok(body) => (body, true),
                Err(r) => {
                    let (counter, why) = match r {
                        mac::MacRefusal::BadMac(w) => (&mut stats.refused_mac, w),
                        mac::MacRefusal::Stale(w) => (&mut stats.refused_stale, w),
                        mac::MacRefusal::Replayed(w) => (&mut stats.refused_replay, w),
                    };
                    *counter += 1;
                    return refusal(why);
                }
            }
        }
    };
    let req = match Request::deserialize(&v) {
        Ok(r) => r,
        Err(e) => return malformed(stats, e, authenticated),
    };
    // A preview is not control, but its reply grows with the channels: like a control
    // command it needs the MAC over UDP.
    let needs_mac = req.is_control()
        || matches!(
            req,
            Request::FailoverPreview { .. } | Request::QueryAnswer { .. }
        );
    if !authenticated && needs_mac {
        stats.refused_token += 1;
        return refusal(format!(
            "{}: needs a request MAC'd with the token of admin.token_file (--token-file) over UDP, or the Unix socket",
            req.name()
        ));
    }
    let reply = match req {
        Request::Status(req) => {
            let limit = reply_limit(caller, authenticated, bytes.len());
            let reply = status::build(runner, clock, now_us, stats, lags, &req, limit);
            serde_json::to_value(reply).map_err(|e| format!("status: {e}"))
        }
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
        Request::FailoverPreview { answers } => match runner.machine.as_cu() {
            None => Err("failover_preview: this node is a client, not a control unit".to_owned()),
            Some(cu) => dry_run::build(cu, &answers)
                .and_then(|r| serde_json::to_value(r).map_err(|e| e.to_string()))
                .map_err(|e| format!("failover_preview: {e}")),
        },
        Request::QueryAnswer { channels } => match runner.machine.as_client() {
            None => Err("query_answer: this node is a control unit, not a client".to_owned()),
            Some(c) => dry_run::answer(c, &channels)
                .and_then(|r| serde_json::to_value(r).map_err(|e| e.to_string()))
                .map_err(|e| format!("query_answer: {e}")),
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
    Outcome {
        reply: reply.unwrap_or_else(|e| {
            stats.failed += 1;
            error_reply(e)
        }),
        authenticated,
        refused: None,
    }
}

pub fn role_name(r: Role) -> &'static str {
    match r {
        Role::Primary => "primary",
        Role::Standby => "standby",
        Role::Candidate => "candidate",
        Role::Joining => "joining",
    }
}

pub use status::hex_digest;

/// Serializes a reply; one longer than `limit` bytes (one datagram, or
/// [`MAX_STREAM_REPLY_BYTES`] on the Unix socket) becomes an error. A status never is: it is
/// built in pages that fit ([`status::build`]).
pub fn encode_reply(v: Value, limit: usize) -> Vec<u8> {
    let bytes = serde_json::to_vec(&v).unwrap_or_default();
    if bytes.len() <= limit {
        return bytes;
    }
    serde_json::to_vec(&error_reply(format!("reply longer than {limit} bytes"))).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Client side.

/// Where a client sends admin requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A node's Unix socket (`<admin.socket_dir>/<id>.sock`).
    Unix(PathBuf),
    /// A node's UDP admin listener (`admin = "IP:PORT"`).
    Udp(SocketAddr),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Unix(p) => write!(f, "{}", p.display()),
            Target::Udp(a) => write!(f, "{a}"),
        }
    }
}

impl Target {
    /// A socket path (anything with a `/`, or an existing file) or `IP:PORT` / `HOST:PORT`.
    pub fn parse(s: &str) -> Result<Target, String> {
        if s.contains('/') {
            return Ok(Target::Unix(PathBuf::from(s)));
        }
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(Target::Udp(a));
        }
        if Path::new(s).exists() {
            return Ok(Target::Unix(PathBuf::from(s)));
        }
        match s.to_socket_addrs() {
            Ok(mut it) => it
                .next()
                .map(Target::Udp)
                .ok_or_else(|| format!("{s}: resolves to no address")),
            Err(e) => Err(format!(
                "{s}: neither a Unix socket path (e.g. /run/statesync/1.sock) nor IP:PORT: {e}"
            )),
        }
    }
}

#[derive(Debug, Error)]
pub enum RequestError {
    #[error("admin socket {target}: {source}")]
    Io {
        target: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "no reply from {target} within {timeout:?} ({attempts} attempt(s)); over UDP a request without a valid MAC gets no reply larger than itself (give --token-file, or use the Unix socket)"
    )]
    Timeout {
        target: String,
        timeout: Duration,
        attempts: u32,
    },
    #[error("reply from {target} is not JSON: {message}")]
    BadReply { target: String, message: String },
}

/// Sends `req` to `target` and waits up to `timeout` for the reply. Over UDP with a `token`,
/// the request goes MAC'd with it ([`mac::seal_now`]; a control command needs that); the Unix
/// socket needs no token and `token` is ignored there.
pub fn request(
    target: &Target,
    req: &Value,
    token: Option<&AdminToken>,
    timeout: Duration,
) -> Result<Value, RequestError> {
    match target {
        Target::Unix(p) => request_unix(p, req, timeout),
        Target::Udp(a) => request_udp(*a, req, token, timeout),
    }
}

/// One request over a node's Unix socket: a line out, a line back. A connection that cannot
/// be made yet (no socket, nobody listening, a full backlog) is retried until `timeout`: the
/// request was not sent, so even a takeover is safe to retry.
pub fn request_unix(path: &Path, req: &Value, timeout: Duration) -> Result<Value, RequestError> {
    let target = || path.display().to_string();
    let io_err = |source: io::Error| RequestError::Io {
        target: target(),
        source,
    };
    let deadline = Instant::now() + timeout;
    let mut attempts = 0;
    let mut stream = loop {
        attempts += 1;
        match unix::connect(path) {
            Ok(s) => break s,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound
                        | io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::Interrupted
                ) =>
            {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(if e.kind() == io::ErrorKind::WouldBlock {
                        RequestError::Timeout {
                            target: target(),
                            timeout,
                            attempts,
                        }
                    } else {
                        io_err(e)
                    });
                }
                std::thread::sleep(left.min(Duration::from_millis(20)));
            }
            Err(e) => return Err(io_err(e)),
        }
    };
    let left = |now: Instant| {
        Some(
            deadline
                .saturating_duration_since(now)
                .max(Duration::from_millis(1)),
        )
    };
    let mut line = serde_json::to_vec(req).map_err(|e| io_err(io::Error::other(e)))?;
    line.push(b'\n');
    stream
        .set_write_timeout(left(Instant::now()))
        .map_err(io_err)?;
    // A refused peer may find the socket closed before its request is in; the refusal it was
    // sent is still there to read.
    let sent = stream.write_all(&line);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut reply = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(RequestError::Timeout {
                target: target(),
                timeout,
                attempts,
            });
        }
        stream.set_read_timeout(left(now)).map_err(io_err)?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                reply.extend_from_slice(&chunk[..n]);
                if chunk[..n].contains(&b'\n') {
                    break;
                }
                if reply.len() > MAX_STREAM_REPLY_BYTES + 1 {
                    return Err(RequestError::BadReply {
                        target: target(),
                        message: format!("longer than {MAX_STREAM_REPLY_BYTES} bytes"),
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(io_err(e)),
        }
    }
    if reply.is_empty() {
        sent.map_err(io_err)?;
        return Err(RequestError::BadReply {
            target: target(),
            message: "the node closed the connection without a reply".into(),
        });
    }
    let end = reply
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(reply.len());
    serde_json::from_slice(&reply[..end]).map_err(|e| RequestError::BadReply {
        target: target(),
        message: e.to_string(),
    })
}

/// Sends `req` to the UDP admin listener at `addr`, MAC'd with `token` when given, and waits up
/// to `timeout` for the reply. Read-only requests (`status`, `op_status`) are retried twice
/// within that time, each attempt MAC'd anew (the node refuses a datagram it saw as a replay);
/// a takeover or switchover is sent once, since repeating it is not harmless.
pub fn request_udp(
    addr: SocketAddr,
    req: &Value,
    token: Option<&AdminToken>,
    timeout: Duration,
) -> Result<Value, RequestError> {
    let io_err = |source: io::Error| RequestError::Io {
        target: addr.to_string(),
        source,
    };
    let local: IpAddr = match addr {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind(SocketAddr::new(local, 0)).map_err(io_err)?;
    let idempotent = matches!(
        req.get("cmd").and_then(|c| c.as_str()),
        Some("status" | "op_status")
    );
    let attempts: u32 = if idempotent { 3 } else { 1 };
    let per_attempt = (timeout / attempts).max(Duration::from_millis(1));
    let mut buf = vec![0u8; MAX_REQUEST_BYTES];
    for _ in 0..attempts {
        let payload = match token {
            Some(t) => mac::seal_now(req, t).to_string().into_bytes(),
            None => serde_json::to_vec(req).map_err(|e| io_err(io::Error::other(e)))?,
        };
        socket.send_to(&payload, addr).map_err(io_err)?;
        let deadline = Instant::now() + per_attempt;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            socket.set_read_timeout(Some(left)).map_err(io_err)?;
            match socket.recv_from(&mut buf) {
                Ok((len, src)) => {
                    if src.port() != addr.port() {
                        continue;
                    }
                    return serde_json::from_slice(&buf[..len]).map_err(|e| {
                        RequestError::BadReply {
                            target: addr.to_string(),
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
                Err(e) => return Err(io_err(e)),
            }
        }
    }
    Err(RequestError::Timeout {
        target: addr.to_string(),
        timeout,
        attempts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::config;
    use crate::proto::ControlUnit;
    use crate::proto::Node;
    use crate::transport::{IoChoice, Transport, TransportConfig};

    fn runner(id: NodeId) -> NodeRunner {
        let cfg = config::parse(config::TEST_CONFIG, "t").unwrap();
        let clock = Clock::new();
        let now = clock.now_us();
        let machine = if id == 100 {
            Node::Client(Box::new(crate::proto::Client::new(
                cfg.proto_config(),
                id,
                false,
                7,
                now,
            )))
        } else {
            Node::Cu(Box::new(ControlUnit::new(
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
        handle_request(req, Caller::Local, None, r, &clock, now, stats).reply
    }

    fn ask_udp(
        r: &mut NodeRunner,
        req: &[u8],
        auth: Option<&mut UdpAuth>,
        stats: &mut AdminStats,
    ) -> Outcome {
        let clock = Clock::new();
        let now = clock.now_us();
        handle_request(req, Caller::Network, auth, r, &clock, now, stats)
    }

    /// A token from a file of its own (`name`): tests run in parallel.
    fn token(name: &str) -> AdminToken {
        let dir = std::env::temp_dir().join(format!("statesync-admin-t-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join(name);
        std::fs::write(&f, "0123456789abcdef-token\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        read_token_file(&f, "admin.token_file").unwrap()
    }

    #[test]
    fn network_control_needs_a_valid_mac() {
        let t = token("network_control");
        let wrong = AdminToken::from_text("0123456789abcdef-tokeX");
        let mut auth = UdpAuth::new(&t);
        let mut stats = AdminStats::default();
        let mut s = runner(2);
        let takeover = json!({"cmd": "takeover"});
        let now = crate::daemon::unix_now_us();
        let sealed = |tok, ts_us, nonce| mac::seal(&takeover, tok, ts_us, nonce).to_string();
        // No MAC, the token in clear (right or wrong), a wrong MAC, a stale or unparseable
        // envelope, a MAC where no token is configured: refused, nothing done.
        let hour_us = 3_600_000_000;
        let cases: Vec<(String, bool, &str)> = vec![
            (r#"{"cmd":"takeover"}"#.into(), true, "token"),
            (
                r#"{"cmd":"takeover","token":"0123456789abcdef-token"}"#.into(),
                true,
                "token",
            ),
            (r#"{"cmd":"status","token":7}"#.into(), true, "token"),
            (sealed(&wrong, now, 1), true, "mac"),
            (sealed(&t, now, 1), false, "mac"),
            (sealed(&t, now - hour_us, 1), true, "stale"),
            (
                r#"{"mac":"00","body":"{}","pad":1}"#.into(),
                true,
                "malformed",
            ),
        ];
        for (req, with_auth, why) in &cases {
            let a = with_auth.then_some(&mut auth);
            let o = ask_udp(&mut s, req.as_bytes(), a, &mut stats);
            assert!(!o.authenticated, "{req}: {o:?}");
            assert_eq!(o.reply["ok"], false, "{req}: {o:?}");
            assert_eq!(o.refused.is_some(), *why != "malformed", "{req}: {o:?}");
        }
        let count = |why| cases.iter().filter(|c| c.2 == why).count() as u64;
        assert_eq!(
            (
                stats.refused_token,
                stats.refused_mac,
                stats.refused_stale,
                stats.malformed
            ),
            (count("token"), count("mac"), count("stale"), 1)
        );
        assert_eq!(s.machine.as_cu().unwrap().role(), Role::Standby);
        // Read-only without a MAC: answered, but marked unauthenticated (size-limited).
        let o = ask_udp(&mut s, br#"{"cmd":"status"}"#, Some(&mut auth), &mut stats);
        assert!(!o.authenticated && o.refused.is_none());
        assert_eq!(o.reply["role"], "standby");
        // A valid MAC: done, once; the same datagram again is a replay.
        let req = sealed(&t, now, 2);
        let o = ask_udp(&mut s, req.as_bytes(), Some(&mut auth), &mut stats);
        assert!(o.authenticated, "{o:?}");
        assert_eq!(o.reply["ok"], true, "{o:?}");
        let epoch = s.machine.as_cu().unwrap().epoch();
        let o = ask_udp(&mut s, req.as_bytes(), Some(&mut auth), &mut stats);
        assert!(!o.authenticated, "{o:?}");
        assert!(o.refused.unwrap().contains("replayed"));
        assert_eq!(stats.refused_replay, 1);
        assert_eq!(s.machine.as_cu().unwrap().epoch(), epoch);
        // The Unix socket needs no token.
        let mut s = runner(2);
        let v = ask(&mut s, br#"{"cmd":"takeover"}"#, &mut stats);
        assert_eq!(v["ok"], true, "{v}");
    }

    #[test]
    fn short_refusals_never_exceed_the_request() {
        assert!(short_refusal(10).is_none());
        assert_eq!(short_refusal(38).unwrap().len(), 38);
        for n in [38, 60, 200, 4000] {
            let b = short_refusal(n).unwrap();
            assert!(b.len() <= n);
            let v: Value = serde_json::from_slice(&b).unwrap();
            assert_eq!(v["ok"], false);
        }
    }

    #[test]
    fn target_parse() {
        assert_eq!(
            Target::parse("/run/statesync/1.sock").unwrap(),
            Target::Unix("/run/statesync/1.sock".into())
        );
        assert_eq!(
            Target::parse("127.0.0.1:7001").unwrap(),
            Target::Udp("127.0.0.1:7001".parse().unwrap())
        );
        assert!(Target::parse("no-such-thing").is_err());
    }

    /// Both listeners of a real [`Admin`], polled here while a thread asks.
    #[test]
    fn admin_serves_unix_and_udp() {
        let dir = std::env::temp_dir().join(format!("statesync-admin-u-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sock").join("2.sock");
        let t = token("serves_unix_and_udp");
        let mut admin = Admin::open(
            2,
            &path,
            Some("127.0.0.1:0".parse().unwrap()),
            Some(t.clone()),
        )
        .unwrap();
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        let m = std::fs::metadata(&path).unwrap();
        assert!(m.file_type().is_socket());
        assert_eq!(m.permissions().mode() & 0o777, 0o660);
        // A second daemon with the same id is refused.
        let e = Admin::open(2, &path, None, None).unwrap_err();
        assert!(e.contains("another process serves it"), "{e}");
        let udp = admin.udp_addr().unwrap();
        let mut r = runner(2);
        let clock = Clock::new();
        let p = path.clone();
        let asker = std::thread::spawn(move || {
            let long = Duration::from_secs(5);
            let st = request(
                &Target::Unix(p.clone()),
                &json!({"cmd": "status"}),
                None,
                long,
            )
            .unwrap();
            assert_eq!(st["role"], "standby", "{st}");
            // Several requests on one connection, one per line, and a malformed one.
            let mut s = unix::connect(&p).unwrap();
            s.write_all(b"{\"cmd\":\"status\"}\n[]\n{\"cmd\":\"status\"}")
                .unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let mut all = String::new();
            s.read_to_string(&mut all).unwrap();
            let lines: Vec<Value> = all
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(lines.len(), 3, "{all}");
            assert_eq!(lines[0]["ok"], true);
            assert_eq!(lines[1]["ok"], false);
            assert_eq!(lines[2]["ok"], true);
            // UDP status without a token: nothing larger than the request comes back.
            let short = Duration::from_millis(300);
            let e = request(&Target::Udp(udp), &json!({"cmd": "status"}), None, short).unwrap_err();
            assert!(matches!(e, RequestError::Timeout { .. }), "{e}");
            let padded = json!({"cmd": "status", "pad": "x".repeat(80)});
            let v = request(&Target::Udp(udp), &padded, None, short).unwrap();
            assert_eq!(v["ok"], false, "{v}");
            assert!(
                serde_json::to_vec(&v).unwrap().len() <= serde_json::to_vec(&padded).unwrap().len()
            );
            // MAC'd with the token, all of it.
            let v = request(&Target::Udp(udp), &json!({"cmd": "status"}), Some(&t), long).unwrap();
            assert_eq!(v["role"], "standby", "{v}");
            let v = request(&Target::Unix(p), &json!({"cmd": "status"}), None, long).unwrap();
            v["admin"].clone()
        });
        let counters = loop {
            admin.poll(&mut r, &clock, clock.now_us());
            if asker.is_finished() {
                break asker.join().unwrap();
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        assert_eq!(counters["refused_size"], 4, "{counters}");
        assert_eq!(counters["malformed"], 1, "{counters}");
        // The asker's last connection closes after it read its reply: the admin reaps it at a
        // later poll (on a busy machine, not necessarily the one before the asker finished).
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while admin.unix.connections() > 0 && std::time::Instant::now() < deadline {
            admin.poll(&mut r, &clock, clock.now_us());
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(admin.unix.connections(), 0);
        drop(admin);
        assert!(!path.exists(), "the socket is removed at shutdown");
        let _ = std::fs::remove_dir_all(&dir);
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

    /// The dry run's two requests: a client answers for its own channels only, never more of
    /// them than it owns; a unit takes at most one answer per channel; each is refused by the
    /// other kind of node.
    #[test]
    fn query_answer_and_preview_with_answers() {
        let mut stats = AdminStats::default();
        let mut c = runner(100);
        let v = ask(
            &mut c,
            br#"{"cmd":"query_answer","channels":[{"channel":1,"above":0}]}"#,
            &mut stats,
        );
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["answers"][0]["channel"], 1, "{v}");
        assert_eq!(v["answers"][0]["last_applied"], 0, "{v}");
        let v = ask(
            &mut c,
            br#"{"cmd":"query_answer","channels":[{"channel":7,"above":0}]}"#,
            &mut stats,
        );
        assert!(
            v["error"].as_str().unwrap().contains("not this client's"),
            "{v}"
        );
        let many: Vec<_> = (0..3).map(|_| json!({"channel": 0, "above": 0})).collect();
        let req = json!({"cmd": "query_answer", "channels": many}).to_string();
        let v = ask(&mut c, req.as_bytes(), &mut stats);
        assert!(v["error"].as_str().unwrap().contains("owns 2"), "{v}");
        let v = ask(&mut c, br#"{"cmd":"failover_preview"}"#, &mut stats);
        assert_eq!(v["ok"], false, "{v}");

        let mut p = runner(1);
        let v = ask(
            &mut p,
            br#"{"cmd":"query_answer","channels":[]}"#,
            &mut stats,
        );
        assert_eq!(v["ok"], false, "{v}");
        let answer = json!({"channel": 0, "above": 0, "unknown": false, "last_applied": 0,
            "cookie_above": 0, "data_epoch": 0});
        let req = json!({"cmd": "failover_preview", "answers": [answer]}).to_string();
        let v = ask(&mut p, req.as_bytes(), &mut stats);
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["channels"][0]["answered"], true, "{v}");
        assert_eq!(v["channels"][1]["answered"], false, "{v}");
        let req = json!({"cmd": "failover_preview", "answers": [answer, answer, answer]});
        let v = ask(&mut p, req.to_string().as_bytes(), &mut stats);
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("3 answers for 2 channels"),
            "{v}"
        );
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
    fn status_comes_in_pages_never_cut() {
        let mut stats = AdminStats::default();
        let mut p = runner(1);
        let full = ask(&mut p, br#"{"cmd":"status"}"#, &mut stats);
        assert_eq!(full["schema_version"], status::SCHEMA_VERSION);
        assert_eq!(full["channels"].as_array().unwrap().len(), 2);
        assert!(full.get("next_channel").is_none(), "{full}");
        // Pages as small as asked, at least one channel each.
        let v = ask(&mut p, br#"{"cmd":"status","page_bytes":1}"#, &mut stats);
        assert_eq!(v["channels"].as_array().unwrap().len(), 1, "{v}");
        assert_eq!(
            (v["channels_total"].as_u64(), v["next_channel"].as_u64()),
            (Some(2), Some(1))
        );
        let v = ask(
            &mut p,
            br#"{"cmd":"status","page_bytes":1,"channels_from":1}"#,
            &mut stats,
        );
        assert_eq!(v["channels"][0]["channel"], 1, "{v}");
        assert!(v.get("next_channel").is_none(), "{v}");
        let v = ask(&mut p, br#"{"cmd":"status","channels_from":7}"#, &mut stats);
        assert!(v["channels"].as_array().unwrap().is_empty(), "{v}");
        // Over UDP without a token: a page no larger than the request, padded to fit one
        // channel but not two; the rule "no reply larger than the request" still holds.
        let len = |v: &Value| serde_json::to_vec(v).unwrap().len();
        let one = ask(&mut p, br#"{"cmd":"status","page_bytes":1}"#, &mut stats);
        let size = (len(&one) + len(&full)) / 2;
        let mut req = r#"{"cmd":"status","pad":""}"#.to_owned();
        req.insert_str(req.len() - 2, &"x".repeat(size - req.len()));
        assert_eq!(req.len(), size);
        let o = ask_udp(&mut p, req.as_bytes(), None, &mut stats);
        assert!(!o.authenticated && o.refused.is_none(), "{o:?}");
        assert!(len(&o.reply) <= size, "{} > {size}", len(&o.reply));
        assert_eq!(o.reply["next_channel"], 1, "{}", o.reply);
        // Replies other than a status are never cut either: too long is an error.
        let bytes = encode_reply(json!({"ok": true, "x": "y".repeat(100)}), 50);
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["ok"], false);
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
        let v = request_udp(addr, &json!({"cmd":"status"}), None, Duration::from_secs(2)).unwrap();
        assert_eq!(v["ok"], true);
        t.join().unwrap();
        // Nobody answers now.
        let e = request_udp(
            addr,
            &json!({"cmd":"status"}),
            None,
            Duration::from_millis(60),
        )
        .unwrap_err();
        assert!(matches!(e, RequestError::Timeout { .. }), "{e}");
    }
}
