//! The hostile sender behind `statesync churn --hostile-rate N`: while the fabric runs, it fires
//! datagrams at every node with the source address of another node of the fabric (a raw IP
//! socket writes the IP and UDP headers itself, as an attacker on the sync network would), so
//! they pass the address check and must be refused by authentication. Needs root (CAP_NET_RAW).
//!
//! Classes, in turn: random bytes; a well-formed frame cut short; a well-formed frame without a
//! tag; a frame sealed with a key of another deployment; a frame naming an ended life of the
//! receiver. Replays of captured frames are exercised by `tests/daemons.rs`.

use crate::auth::{Auth, LinkKeys};
use crate::proto::NodeId;
use crate::rng::SplitMix64;
use crate::wire::{FRAME_FLAG_AUTH, FrameBuilder, TRAILER_BYTES};
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// One aim: datagrams to `dst` (node `dst_id`) that look as if `src` (node `claimed`) sent them.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub dst: SocketAddr,
    pub dst_id: NodeId,
    pub src: SocketAddr,
    pub claimed: NodeId,
}

pub const CLASSES: [&str; 5] = [
    "random",
    "truncated",
    "untagged",
    "wrong-key",
    "stale-session",
];

#[derive(Debug, Clone, Copy, Default)]
pub struct HostileReport {
    pub sent: u64,
    pub by_class: [u64; CLASSES.len()],
    pub send_errors: u64,
}

/// A raw IPv4 socket that writes its own headers.
struct RawSocket(i32);

impl RawSocket {
    fn open() -> io::Result<RawSocket> {
        // SAFETY: socket(2) with constant arguments; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(RawSocket(fd))
    }

    /// Sends `payload` as a UDP datagram from `src` to `dst` (IPv4 only).
    fn send(
        &self,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        payload: &[u8],
        buf: &mut Vec<u8>,
    ) -> bool {
        buf.clear();
        let total = 20 + 8 + payload.len();
        // IPv4 header: the kernel fills the checksum and the packet ID (IP_HDRINCL).
        buf.extend_from_slice(&[0x45, 0]);
        buf.extend_from_slice(&(total as u16).to_be_bytes());
        buf.extend_from_slice(&[0, 0, 0x40, 0, 64, libc::IPPROTO_UDP as u8, 0, 0]);
        buf.extend_from_slice(&src.ip().octets());
        buf.extend_from_slice(&dst.ip().octets());
        // UDP header; checksum 0 = none (allowed over IPv4).
        buf.extend_from_slice(&src.port().to_be_bytes());
        buf.extend_from_slice(&dst.port().to_be_bytes());
        buf.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(payload);
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(dst.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: `buf` is valid for `buf.len()` bytes and `sa` is a valid sockaddr_in whose
        // size is passed; the fd is ours and open.
        let n = unsafe {
            libc::sendto(
                self.0,
                buf.as_ptr().cast(),
                buf.len(),
                0,
                (&sa as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        n == buf.len() as isize
    }
}

impl Drop for RawSocket {
    fn drop(&mut self) {
        // SAFETY: closing the fd this struct owns, once.
        unsafe { libc::close(self.0) };
    }
}

/// Builds and sends hostile datagrams of every class (see the module docs).
pub struct Forger {
    raw: RawSocket,
    rng: SplitMix64,
    /// Keys of another deployment, for every pair aimed at.
    wrong: Vec<Auth>,
    frame: Vec<u8>,
    packet: Vec<u8>,
    seq: u64,
}

impl std::fmt::Debug for Forger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forger")
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl Forger {
    /// A forger for `targets` (needs root: a raw socket).
    pub fn new(targets: &[Target]) -> io::Result<Forger> {
        let raw = RawSocket::open()
            .map_err(|e| io::Error::new(e.kind(), format!("raw socket (needs root): {e}")))?;
        let mut links: Vec<(NodeId, NodeId)> =
            targets.iter().map(|t| (t.claimed, t.dst_id)).collect();
        links.sort_unstable();
        links.dedup();
        let wrong = LinkKeys::generate(&links)
            .map_err(io::Error::other)?
            .iter()
            .map(Auth::new)
            .collect();
        Ok(Forger {
            raw,
            rng: SplitMix64::new(0x5eed_f00d),
            wrong,
            frame: vec![0u8; 1024],
            packet: Vec::with_capacity(2048),
            seq: 1,
        })
    }

    /// Sends one datagram of class `class` (an index into [`CLASSES`]) at `t`, spoofed from
    /// `t.src`. False when it could not be sent.
    pub fn fire(&mut self, t: &Target, class: usize) -> bool {
        self.seq += 1;
        let seq = self.seq;
        let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (t.src, t.dst) else {
            return false;
        };
        let frame = &mut self.frame;
        // A well-formed frame claiming the sender, with an epoch far above any real one.
        let mut fb = FrameBuilder::new(frame, t.claimed, 0x7f01, seq);
        let _ = fb.push_submit(0, seq, (&[], 0), (&[], 0));
        let len = fb.finish();
        let bytes: &[u8] = match class {
            0 => {
                let n = 16 + self.rng.below(200) as usize;
                for b in &mut frame[..n] {
                    *b = self.rng.next_u64() as u8;
                }
                &frame[..n]
            }
            1 => &frame[..len - 1 - self.rng.below(len as u64 - 1) as usize],
            2 => &frame[..len],
            3 => {
                let sealed = self
                    .wrong
                    .iter_mut()
                    .find(|a| a.node() == t.claimed)
                    .is_some_and(|a| a.seal(t.dst_id, &mut frame[..len]));
                if !sealed {
                    frame[5] |= FRAME_FLAG_AUTH;
                }
                &frame[..len]
            }
            _ => {
                frame[5] |= FRAME_FLAG_AUTH;
                let at = len - TRAILER_BYTES;
                frame[at..at + 8].copy_from_slice(&self.rng.next_u64().to_le_bytes());
                // An ended life of the receiver.
                frame[at + 8..at + 16].copy_from_slice(&1u64.to_le_bytes());
                &frame[..len]
            }
        };
        self.raw.send(src, dst, bytes, &mut self.packet)
    }
}

/// Fires hostile datagrams at `rate` per second across `targets` until `stop` is set.
pub fn flood(targets: &[Target], rate: f64, stop: &Arc<AtomicBool>) -> io::Result<HostileReport> {
    let mut report = HostileReport::default();
    if targets.is_empty() {
        return Ok(report);
    }
    let mut forger = Forger::new(targets)?;
    let start = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        if report.sent >= due {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        let t = targets[(report.sent % targets.len() as u64) as usize];
        let class = ((report.sent / targets.len() as u64) % CLASSES.len() as u64) as usize;
        if !forger.fire(&t, class) {
            report.send_errors += 1;
        }
        report.by_class[class] += 1;
        report.sent += 1;
    }
    Ok(report)
}

/// UDP datagrams the kernel dropped for full receive buffers, system-wide (`/proc/net/snmp`).
pub fn udp_rcvbuf_errors() -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/net/snmp") else {
        return 0;
    };
    let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// `statesync probe --config FILE`: canaries for a running deployment.
#[derive(clap::Args, Debug, Clone)]
pub struct ProbeArgs {
    /// The deployment's config (every node is probed; its admin sockets are read).
    #[arg(long)]
    pub config: std::path::PathBuf,
    /// Canaries of each class per node.
    #[arg(long, default_value_t = 3)]
    pub count: u32,
}

/// Sends every class of hostile datagram to every node of a deployment, spoofed from the
/// address of one of its peers, plus one from a stranger's address, and reads each node's
/// `status` before and after: every canary must show up as a refusal. Exit 0 when all were
/// refused, 1 when any was not, 2 when the probe could not run.
pub fn run_probe(a: ProbeArgs) -> std::process::ExitCode {
    use std::process::ExitCode;
    match probe(&a) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("statesync probe: {e}");
            ExitCode::from(2)
        }
    }
}

/// The refusal counters of one node's status: (authentication rejects, unknown addresses).
fn refusals(v: &serde_json::Value) -> Option<(u64, u64)> {
    Some((
        v["auth"]["rejected"].as_u64().unwrap_or(0) + v["counters"]["rejected"].as_u64()?,
        v["transport"]["rejected_unknown_addr"].as_u64()?,
    ))
}

fn probe(a: &ProbeArgs) -> Result<bool, String> {
    let cfg = crate::daemon::config::load(&a.config).map_err(|e| e.to_string())?;
    let status = |id: NodeId| {
        let t = crate::daemon::admin::Target::Unix(cfg.admin.socket_path(id));
        crate::daemon::admin::request(
            &t,
            &serde_json::json!({"cmd": "status"}),
            None,
            Duration::from_millis(1000),
        )
        .map_err(|e| format!("status of node {id}: {e}"))
    };
    let mut targets = Vec::new();
    for n in cfg.nodes() {
        let peer = cfg
            .peers_of(n.id)
            .into_iter()
            .find_map(|p| cfg.node(p).map(|(_, s)| (p, s.addr)));
        if let Some((p, addr)) = peer {
            targets.push(Target {
                dst: n.addr,
                dst_id: n.id,
                src: addr,
                claimed: p,
            });
        }
    }
    let mut forger = Forger::new(&targets).map_err(|e| e.to_string())?;
    let stranger = std::net::UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    let mut all_ok = true;
    println!(
        "probe: {} canaries of each of {} classes per node, spoofed from a peer's address, and 1 from a stranger's",
        a.count,
        CLASSES.len()
    );
    for t in &targets {
        let before = status(t.dst_id)?;
        let (r0, u0) = refusals(&before).ok_or("status without counters")?;
        let auth_on = before["auth"]["enabled"].as_bool().unwrap_or(false);
        let (role0, epoch0) = (before["role"].clone(), before["epoch"].clone());
        let mut sent = 0u64;
        for class in 0..CLASSES.len() {
            for _ in 0..a.count {
                if forger.fire(t, class) {
                    sent += 1;
                }
            }
        }
        let _ = stranger.send_to(&[0u8; 64], t.dst);
        std::thread::sleep(Duration::from_millis(300));
        let after = status(t.dst_id)?;
        let (r1, u1) = refusals(&after).ok_or("status without counters")?;
        let refused = r1.saturating_sub(r0);
        let unmoved = after["role"] == role0 && after["epoch"] == epoch0;
        let ok = auth_on && refused >= sent && u1 > u0 && unmoved;
        all_ok &= ok;
        println!(
            "node {:>5} at {}: {sent} canaries as node {} -> {refused} refused; stranger -> {}; role and epoch {}; authentication {} -> {}",
            t.dst_id,
            t.dst,
            t.claimed,
            if u1 > u0 { "refused" } else { "NOT REFUSED" },
            if unmoved { "unchanged" } else { "CHANGED" },
            if auth_on { "on" } else { "OFF (--insecure)" },
            if ok { "ok" } else { "FAILED" }
        );
    }
    println!(
        "probe: {}",
        if all_ok {
            "every canary refused"
        } else {
            "FAILED: some canaries were not refused"
        }
    );
    Ok(all_ok)
}
