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

pub const CLASSES: [&str; 5] = ["random", "truncated", "untagged", "wrong-key", "stale-session"];

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
    fn send(&self, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8], buf: &mut Vec<u8>) -> bool {
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

/// Fires hostile datagrams at `rate` per second across `targets` until `stop` is set.
pub fn flood(targets: &[Target], rate: f64, stop: &Arc<AtomicBool>) -> io::Result<HostileReport> {
    let raw = RawSocket::open()
        .map_err(|e| io::Error::new(e.kind(), format!("raw socket (needs root): {e}")))?;
    let mut report = HostileReport::default();
    if targets.is_empty() {
        return Ok(report);
    }
    let mut rng = SplitMix64::new(0x5eed_f00d);
    let mut frame = vec![0u8; 1024];
    let mut packet = Vec::with_capacity(2048);
    // Keys of another deployment, for every pair aimed at.
    let mut links: Vec<(NodeId, NodeId)> = targets.iter().map(|t| (t.claimed, t.dst_id)).collect();
    links.sort_unstable();
    links.dedup();
    let mut wrong: Vec<Auth> = LinkKeys::generate(&links)
        .map_err(io::Error::other)?
        .iter()
        .map(Auth::new)
        .collect();
    let start = Instant::now();
    let mut seq = 1u64;
    while !stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        if report.sent >= due {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        let t = targets[(report.sent % targets.len() as u64) as usize];
        let class = ((report.sent / targets.len() as u64) % CLASSES.len() as u64) as usize;
        seq += 1;
        let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (t.src, t.dst) else {
            report.send_errors += 1;
            report.sent += 1;
            continue;
        };
        // A well-formed frame claiming the sender, with an epoch far above any real one.
        let mut fb = FrameBuilder::new(&mut frame, t.claimed, 0x7f01, seq);
        let _ = fb.push_submit(0, seq, (&[], 0), (&[], 0));
        let len = fb.finish();
        let bytes: &[u8] = match class {
            0 => {
                let n = 16 + rng.below(200) as usize;
                for b in &mut frame[..n] {
                    *b = rng.next_u64() as u8;
                }
                &frame[..n]
            }
            1 => &frame[..len - 1 - rng.below(len as u64 - 1) as usize],
            2 => &frame[..len],
            3 => {
                let sealed = wrong
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
                frame[at..at + 8].copy_from_slice(&rng.next_u64().to_le_bytes());
                // An ended life of the receiver.
                frame[at + 8..at + 16].copy_from_slice(&1u64.to_le_bytes());
                &frame[..len]
            }
        };
        if !raw.send(src, dst, bytes, &mut packet) {
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
