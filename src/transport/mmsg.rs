//! Portable backend: `sendmmsg(2)` / `recvmmsg(2)`, with `ppoll(2)` for timed waits.
//!
//! This is what runs where io_uring is blocked (container seccomp profiles, hardened kernels,
//! `kernel.io_uring_disabled`). It still amortises one syscall over a whole batch, uses GSO
//! trains on send and GRO on receive, and shares the plan, GSO grouping and error accounting
//! with the io_uring backend so the two behave the same from the caller's side.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::Duration;

use super::sys::{self, CmsgBuf, Mmap, RX_CMSG_SPACE};
use super::tx::{GsoState, Out, Payloads, SendFailure, TxBatch, classify_send_error};
use super::{TransportError, TransportStats, deliver};

/// Extra `recvmmsg` rounds per poll while every round fills the whole batch. Bounded so one poll
/// under a flood still returns to the event loop (which has sends and timers to run too).
const MAX_RECV_ROUNDS: usize = 8;

pub(crate) struct MmsgIo {
    fd: RawFd,
    v6: bool,
    tx: TxBatch,
    rx_msgs: Box<[libc::mmsghdr]>,
    rx_iovs: Box<[libc::iovec]>,
    rx_addrs: Box<[libc::sockaddr_storage]>,
    rx_cmsgs: Box<[CmsgBuf]>,
    /// `batch` receive buffers of `rx_cap` bytes each.
    rx_buf: Mmap,
    rx_cap: usize,
    gro: bool,
}

// SAFETY: the raw pointers inside the msghdr/iovec arrays point only into memory this struct (or
// the owning Transport) owns, and are used only by syscalls made through `&mut self`; nothing is
// shared with another thread, so moving the whole struct between threads is sound.
unsafe impl Send for MmsgIo {}

impl MmsgIo {
    /// `rx_cap` is the payload room per receive buffer: the max datagram size, or 64 KiB with GRO
    /// so a coalesced train is never truncated.
    pub(crate) fn new(
        fd: RawFd,
        v6: bool,
        batch: usize,
        rx_cap: usize,
        gro: bool,
    ) -> io::Result<MmsgIo> {
        let rx_buf = Mmap::new(batch * rx_cap)?;
        // SAFETY: plain C structs for which all-zero (null pointers, zero lengths) is valid.
        let (msg, addr) = unsafe {
            (
                std::mem::zeroed::<libc::mmsghdr>(),
                std::mem::zeroed::<libc::sockaddr_storage>(),
            )
        };
        let rx_iovs = (0..batch)
            .map(|k| libc::iovec {
                iov_base: rx_buf.as_ptr().wrapping_add(k * rx_cap).cast(),
                iov_len: rx_cap,
            })
            .collect();
        Ok(MmsgIo {
            fd,
            v6,
            tx: TxBatch::new(batch),
            rx_msgs: vec![msg; batch].into_boxed_slice(),
            rx_iovs,
            rx_addrs: vec![addr; batch].into_boxed_slice(),
            rx_cmsgs: vec![CmsgBuf::default(); batch].into_boxed_slice(),
            rx_buf,
            rx_cap,
            gro,
        })
    }

    /// Sends the whole plan, `batch` datagrams per `sendmmsg`.
    ///
    /// A full socket (`EAGAIN`/`ENOBUFS`) drops the rest of that batch, counted: retrying at
    /// once would only burn syscalls, and the protocol above recovers losses anyway.
    pub(crate) fn send(
        &mut self,
        plan: &[Out],
        data: &Payloads<'_>,
        gso: &mut GsoState,
        stats: &mut TransportStats,
    ) -> Result<(), TransportError> {
        let mut pos = 0;
        while pos < plan.len() {
            let (nmsg, end) = self.tx.fill(plan, data, pos, gso, self.v6);
            let mut next = end;
            let mut off = 0;
            while off < nmsg {
                // SAFETY: msgs[off..nmsg] were filled by `fill` just now and point at live
                // addresses, iovecs and control buffers in `self.tx`, and at payload bytes in
                // `data`, all of which outlive this synchronous call.
                let r = unsafe {
                    libc::sendmmsg(
                        self.fd,
                        self.tx.msgs.as_mut_ptr().add(off),
                        (nmsg - off) as libc::c_uint,
                        libc::MSG_DONTWAIT,
                    )
                };
                stats.send_syscalls += 1;
                if r > 0 {
                    for k in off..off + r as usize {
                        stats.note_sent(self.tx.segs[k] as u64, u64::from(self.tx.msgs[k].msg_len));
                    }
                    off += r as usize;
                    continue;
                }
                let errno = if r == 0 { libc::EIO } else { sys::errno() };
                let segs = self.tx.segs[off] as usize;
                let seg = plan[self.tx.first[off] as usize].len as usize;
                match classify_send_error(errno, segs, seg, gso) {
                    SendFailure::Retry => {}
                    SendFailure::Congested { enobufs } => {
                        let dropped: u64 =
                            self.tx.segs[off..nmsg].iter().map(|&s| u64::from(s)).sum();
                        stats.note_congested(enobufs, dropped);
                        off = nmsg;
                    }
                    SendFailure::Gso => {
                        // Nothing from `off` on went out; rebuild from there without that train.
                        stats.gso_fallbacks += 1;
                        next = self.tx.first[off] as usize;
                        break;
                    }
                    SendFailure::Fatal => {
                        return Err(TransportError::Send(io::Error::from_raw_os_error(errno)));
                    }
                    SendFailure::Other => {
                        stats.send_errors += segs as u64;
                        off += 1;
                    }
                }
            }
            pos = next;
        }
        Ok(())
    }

    /// Receives what is queued; if nothing is and `wait` is non-zero, waits up to `wait` once.
    pub(crate) fn recv(
        &mut self,
        wait: Option<Duration>,
        f: &mut dyn FnMut(SocketAddr, &[u8]),
        stats: &mut TransportStats,
    ) -> Result<usize, TransportError> {
        let mut total = 0;
        let mut msgs_total = 0;
        let mut waited = false;
        for _ in 0..MAX_RECV_ROUNDS + 1 {
            let (msgs, got) = self.recv_round(f, stats)?;
            total += got;
            msgs_total += msgs;
            if msgs == self.rx_msgs.len() {
                continue; // a full batch: probably more queued
            }
            // Wait only if this whole call found nothing (not merely this round: a round after a
            // full one often finds the socket just emptied).
            if msgs_total > 0 || waited {
                break;
            }
            match wait {
                Some(t) if !t.is_zero() => {
                    if !self.wait_readable(t, stats)? {
                        break;
                    }
                    waited = true;
                }
                _ => break,
            }
        }
        Ok(total)
    }

    /// One `recvmmsg`. Returns (messages received, datagrams delivered).
    fn recv_round(
        &mut self,
        f: &mut dyn FnMut(SocketAddr, &[u8]),
        stats: &mut TransportStats,
    ) -> Result<(usize, usize), TransportError> {
        let n = self.rx_msgs.len();
        for k in 0..n {
            let hdr = &mut self.rx_msgs[k].msg_hdr;
            hdr.msg_name = std::ptr::from_mut(&mut self.rx_addrs[k]).cast();
            hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_iov = std::ptr::from_mut(&mut self.rx_iovs[k]);
            hdr.msg_iovlen = 1;
            if self.gro {
                hdr.msg_control = std::ptr::from_mut(&mut self.rx_cmsgs[k]).cast();
                hdr.msg_controllen = RX_CMSG_SPACE as _;
            } else {
                hdr.msg_control = std::ptr::null_mut();
                hdr.msg_controllen = 0;
            }
            hdr.msg_flags = 0;
        }
        // SAFETY: every header points at a live address slot, control buffer and one iovec
        // covering `rx_cap` bytes of `rx_buf`, all owned by `self` and unaliased during the call.
        let r = unsafe {
            libc::recvmmsg(
                self.fd,
                self.rx_msgs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        stats.recv_syscalls += 1;
        if r < 0 {
            return match sys::errno() {
                libc::EAGAIN | libc::EINTR => Ok((0, 0)),
                e @ (libc::EBADF | libc::ENOTSOCK | libc::EFAULT | libc::EINVAL) => {
                    Err(TransportError::Recv(io::Error::from_raw_os_error(e)))
                }
                _ => {
                    stats.recv_errors += 1; // e.g. a queued ICMP error; not fatal for UDP
                    Ok((0, 0))
                }
            };
        }
        let r = r as usize;
        let mut got = 0;
        for k in 0..r.min(n) {
            let m = &self.rx_msgs[k];
            if m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                stats.recv_truncated += 1;
                continue;
            }
            let name = sys::struct_bytes(&self.rx_addrs[k], m.msg_hdr.msg_namelen as usize);
            let Some(src) = sys::parse_sockaddr(name) else {
                stats.recv_errors += 1;
                continue;
            };
            let seg = if self.gro {
                // `msg_controllen` is usize on glibc but u32 on musl; the cast keeps both building.
                #[allow(clippy::unnecessary_cast)]
                let clen = (m.msg_hdr.msg_controllen as usize).min(RX_CMSG_SPACE);
                sys::gro_segment_size(&self.rx_cmsgs[k].0[..clen])
            } else {
                None
            };
            let len = (m.msg_len as usize).min(self.rx_cap);
            // SAFETY: `recvmmsg` has returned, and the kernel writes `rx_buf` only during the next
            // call, which needs `&mut self` and so cannot overlap this borrow.
            let Some(payload) = (unsafe { self.rx_buf.slice(k * self.rx_cap, len) }) else {
                stats.recv_errors += 1;
                continue;
            };
            got += deliver(src, payload, seg, f, stats);
        }
        Ok((r, got))
    }

    /// Waits until the socket is readable or `t` passes. Returns whether it became readable.
    fn wait_readable(
        &mut self,
        t: Duration,
        stats: &mut TransportStats,
    ) -> Result<bool, TransportError> {
        let mut pfd = libc::pollfd {
            fd: self.fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ts = libc::timespec {
            tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: t.subsec_nanos() as libc::c_long,
        };
        // SAFETY: one valid pollfd and a valid timespec, both live for the call; no signal mask.
        let r = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
        stats.recv_syscalls += 1;
        match r {
            0 => Ok(false),
            r if r > 0 => Ok(true),
            _ => match sys::errno() {
                libc::EINTR => Ok(false),
                e => Err(TransportError::Recv(io::Error::from_raw_os_error(e))),
            },
        }
    }
}
