//! io_uring backend: batched `SENDMSG` (with `UDP_SEGMENT` GSO trains) and one multishot
//! `RECVMSG` feeding a registered provided-buffer ring.
//!
//! Why this shape:
//! - **Multishot receive + buffer ring.** One armed request keeps receiving into buffers the
//!   kernel picks from a ring we refill by bumping a tail index: no per-datagram SQE and no
//!   per-poll syscall when completions are already in the CQ. When the ring runs dry the kernel
//!   ends the multishot with `ENOBUFS`; data stays queued in the socket, so we recycle buffers
//!   and re-arm, losing nothing.
//! - **`DEFER_TASKRUN` + `SINGLE_ISSUER`** (6.1+): receive work runs only when we enter the
//!   kernel, in our own thread, so it never preempts the event loop and batches naturally. The
//!   ring starts disabled and is enabled by the first flush or poll, which binds it to that
//!   thread: the Transport may be built on one thread and moved to its event loop before use.
//! - **Sends wait for their completions** within `flush`, so the caller may reuse the transmit
//!   slots as soon as `flush` returns, exactly as with `sendmmsg`. `MSG_DONTWAIT` makes a full
//!   socket fail fast (`EAGAIN`, counted) instead of parking the request.
//! - **GRO**: with `UDP_GRO` on, one buffer may hold a coalesced train; the `UDP_GRO` control
//!   message gives the segment size and [`deliver`] splits it.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::types::{BufRingEntry, RecvMsgOut};
use io_uring::{IoUring, Probe, cqueue, opcode, squeue, types};

use super::sys::{Mmap, NAME_CAP, RX_CMSG_SPACE};
use super::tx::{GsoState, Out, Payloads, SendFailure, TxBatch, classify_send_error};
use super::{TransportError, TransportStats, deliver};

/// Buffer group id of our provided-buffer ring (one per ring, so any value works).
const BGID: u16 = 7;
const UD_RECV: u64 = 1 << 63;
const UD_SEND: u64 = 1 << 62;
const UD_CANCEL: u64 = 1 << 61;
const UD_INDEX: u64 = (1 << 32) - 1;
/// `struct io_uring_recvmsg_out`, which the kernel writes at the start of each buffer.
const RECVMSG_OUT_BYTES: usize = 16;
/// Extra kernel entries one poll makes while receive work is still pending.
const MAX_RECV_PASSES: usize = 8;
/// Most entries a provided-buffer ring may have.
pub(crate) const MAX_RX_BUFFERS: usize = 32_768;

/// Sizes for [`UringIo::open`].
pub(crate) struct UringParams {
    pub fd: RawFd,
    pub v6: bool,
    /// Datagrams per send batch.
    pub batch: usize,
    /// Provided buffers (rounded up to a power of two).
    pub rx_buffers: usize,
    /// Payload room per buffer.
    pub payload_cap: usize,
    pub gro: bool,
}

/// The provided-buffer ring: `entries` descriptors in one page-aligned mapping, and as many
/// equal buffers in another.
struct BufRing {
    ring: Mmap,
    bufs: Mmap,
    entries: usize,
    mask: u16,
    buf_bytes: usize,
    /// Our tail, published to the kernel by [`publish`](Self::publish).
    tail: u16,
}

impl BufRing {
    fn new(entries: usize, buf_bytes: usize) -> io::Result<BufRing> {
        debug_assert!(entries.is_power_of_two() && entries <= MAX_RX_BUFFERS);
        let mut br = BufRing {
            ring: Mmap::new(entries * size_of::<BufRingEntry>())?,
            bufs: Mmap::new(entries * buf_bytes)?,
            entries,
            mask: (entries - 1) as u16,
            buf_bytes,
            tail: 0,
        };
        for bid in 0..entries {
            br.push(bid as u16);
        }
        br.publish();
        Ok(br)
    }

    fn base(&self) -> *mut BufRingEntry {
        self.ring.as_ptr().cast()
    }

    /// Queues buffer `bid` for the kernel (visible after [`publish`](Self::publish)).
    fn push(&mut self, bid: u16) {
        let idx = usize::from(self.tail & self.mask);
        // SAFETY: `idx < entries`, so the entry lies inside the mapping. At most `entries`
        // buffers exist and `bid` was consumed by the kernel (or never published), so the kernel
        // has moved its head past this slot and does not read it until we publish the new tail.
        // The setters write only addr/len/bid; the `resv` field that doubles as the ring's tail
        // (in entry 0) is untouched here and only ever written atomically by `publish`.
        let e = unsafe { &mut *self.base().add(idx) };
        e.set_addr(
            self.bufs
                .as_ptr()
                .wrapping_add(usize::from(bid) * self.buf_bytes) as u64,
        );
        e.set_len(self.buf_bytes as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes pushed buffers visible to the kernel.
    fn publish(&self) {
        // SAFETY: `tail` gives the address of the tail field inside the first entry of our live,
        // page-aligned mapping (so aligned for u16). The kernel only reads it, with acquire
        // semantics, and we only write it here, atomically.
        let tail = unsafe { AtomicU16::from_ptr(BufRingEntry::tail(self.base()).cast_mut()) };
        tail.store(self.tail, Ordering::Release);
    }

    /// The first `len` bytes of buffer `bid`, or `None` for an id the ring never had.
    fn buffer(&self, bid: u16, len: usize) -> Option<&[u8]> {
        if usize::from(bid) >= self.entries {
            return None;
        }
        // SAFETY: the kernel handed `bid` to us in a CQE and writes it again only after we push
        // it back, which needs `&mut self` and so cannot happen while this borrow lives.
        unsafe {
            self.bufs
                .slice(usize::from(bid) * self.buf_bytes, len.min(self.buf_bytes))
        }
    }
}

pub(crate) struct UringIo {
    /// Declared first so it is dropped first: the ring must be gone before the memory it was
    /// given (buffer ring, receive buffers) is unmapped.
    ring: IoUring,
    fd: RawFd,
    v6: bool,
    /// The ring was created disabled (`SINGLE_ISSUER`) and needs enabling on first use.
    needs_enable: bool,
    started: bool,
    /// A multishot receive is in flight (the last CQE we saw for it had `F_MORE`).
    armed: bool,
    /// Template for the multishot receive; only the name and control lengths matter.
    rx_hdr: Box<libc::msghdr>,
    bufs: BufRing,
    /// Receive CQEs reaped while waiting for send completions, as (result, flags). Bounded:
    /// each holds one of the ring's buffers, plus the one terminal CQE of a multishot.
    pending: VecDeque<(i32, u32)>,
    tx: TxBatch,
    /// GSO trains to resend as plain datagrams, as (plan index, count); at most one batch.
    resend: Vec<(u32, u32)>,
}

// SAFETY: every raw pointer inside (msghdr templates, iovecs, the mmaps) points at memory owned
// by this struct or its owning Transport, and is used only through `&mut self`. The io_uring
// ring itself is Send. The ring's binding to one thread (SINGLE_ISSUER) happens at first use,
// so moving the struct before that is fine, and moving it after only yields EEXIST errors.
unsafe impl Send for UringIo {}

/// Builds the ring with the best setup flags this kernel accepts. Returns whether it was
/// created disabled.
fn build_ring(sq: u32, cq: u32) -> Result<(IoUring, bool), String> {
    let fail = |e: io::Error| format!("io_uring_setup: {e}");
    let einval = |e: &io::Error| e.raw_os_error() == Some(libc::EINVAL);
    match IoUring::builder()
        .setup_cqsize(cq)
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_taskrun_flag()
        .setup_r_disabled()
        .build(sq)
    {
        Ok(r) => return Ok((r, true)),
        Err(e) if einval(&e) => {}
        Err(e) => return Err(fail(e)),
    }
    match IoUring::builder()
        .setup_cqsize(cq)
        .setup_coop_taskrun()
        .setup_taskrun_flag()
        .build(sq)
    {
        Ok(r) => return Ok((r, false)),
        Err(e) if einval(&e) => {}
        Err(e) => return Err(fail(e)),
    }
    IoUring::builder()
        .setup_cqsize(cq)
        .build(sq)
        .map(|r| (r, false))
        .map_err(fail)
}

impl UringIo {
    /// Creates the ring, probes what we need and registers the buffer ring. Any failure is
    /// reported as a reason string, for the caller to fall back or to report.
    pub(crate) fn open(p: &UringParams) -> Result<UringIo, String> {
        let sq = (p.batch + 2).next_power_of_two().max(8) as u32;
        let entries = p.rx_buffers.clamp(1, MAX_RX_BUFFERS).next_power_of_two();
        let cq = (2 * (entries as u32 + sq)).next_power_of_two();
        let (ring, needs_enable) = build_ring(sq, cq)?;
        if !ring.params().is_feature_ext_arg() {
            return Err("kernel lacks IORING_FEAT_EXT_ARG (needs 5.11+)".into());
        }
        let mut probe = Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(|e| format!("IORING_REGISTER_PROBE: {e}"))?;
        for (code, name) in [
            (opcode::SendMsg::CODE, "SENDMSG"),
            (opcode::RecvMsg::CODE, "RECVMSG"),
            // Multishot RECVMSG cannot be probed; SEND_ZC arrived in the same release (6.0).
            (
                opcode::SendZc::CODE,
                "SEND_ZC (stand-in for multishot RECVMSG, 6.0+)",
            ),
        ] {
            if !probe.is_supported(code) {
                return Err(format!("opcode {name} unsupported"));
            }
        }
        let controllen = if p.gro { RX_CMSG_SPACE } else { 0 };
        let buf_bytes =
            (RECVMSG_OUT_BYTES + NAME_CAP + controllen + p.payload_cap).next_multiple_of(64);
        let bufs =
            BufRing::new(entries, buf_bytes).map_err(|e| format!("buffer ring memory: {e}"))?;
        // SAFETY: the descriptor ring is a live, page-aligned mapping of `entries` entries, and it
        // outlives the registration: Drop unregisters it (or closes the ring) before unmapping.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                bufs.ring.as_ptr() as u64,
                entries as u16,
                BGID,
                0,
            )
        }
        .map_err(|e| format!("IORING_REGISTER_PBUF_RING: {e}"))?;
        // SAFETY: msghdr is a plain C struct; all-zero (null pointers) is valid.
        let mut rx_hdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        rx_hdr.msg_namelen = NAME_CAP as libc::socklen_t;
        rx_hdr.msg_controllen = controllen as _;
        Ok(UringIo {
            ring,
            fd: p.fd,
            v6: p.v6,
            needs_enable,
            started: false,
            armed: false,
            rx_hdr,
            bufs,
            pending: VecDeque::with_capacity(entries + 8),
            tx: TxBatch::new(p.batch),
            resend: Vec::with_capacity(p.batch),
        })
    }

    /// Enables the ring (binding it to this thread) and arms the receive, once.
    fn start(&mut self, stats: &mut TransportStats) -> Result<(), TransportError> {
        if self.started {
            return Ok(());
        }
        if self.needs_enable {
            self.ring
                .submitter()
                .register_enable_rings()
                .map_err(TransportError::Uring)?;
        }
        self.started = true;
        self.arm(stats);
        Ok(())
    }

    /// Queues a multishot receive (submitted by the next enter).
    fn arm(&mut self, stats: &mut TransportStats) {
        let sqe = opcode::RecvMsgMulti::new(types::Fd(self.fd), &*self.rx_hdr, BGID)
            .build()
            .user_data(UD_RECV);
        self.push(&sqe);
        self.armed = true;
        stats.recv_rearms += 1;
    }

    fn push(&mut self, sqe: &squeue::Entry) {
        // SAFETY: our SQEs reference only memory that outlives their completion: the receive
        // template and buffer ring (owned by self, freed after the ring), and send msghdrs whose
        // completions `send_range` waits for before its memory can change.
        let pushed = unsafe { self.ring.submission().push(sqe) };
        // The SQ has room for a whole batch plus the re-arm, and `send_range` submits before
        // each batch, so a full SQ here is a bug, not a runtime condition.
        assert!(pushed.is_ok(), "io_uring submission queue overflow");
    }

    /// Sends the whole plan; returns once the kernel has completed every send.
    pub(crate) fn send(
        &mut self,
        plan: &[Out],
        data: &Payloads<'_>,
        gso: &mut GsoState,
        stats: &mut TransportStats,
    ) -> Result<(), TransportError> {
        self.start(stats)?;
        self.send_range(plan, 0, plan.len(), data, gso, stats, true)
    }

    #[allow(clippy::too_many_arguments)]
    fn send_range(
        &mut self,
        plan: &[Out],
        from: usize,
        to: usize,
        data: &Payloads<'_>,
        gso: &mut GsoState,
        stats: &mut TransportStats,
        top: bool,
    ) -> Result<(), TransportError> {
        let mut pos = from;
        while pos < to {
            if !self.ring.submission().is_empty() {
                self.enter(0, stats)?; // e.g. a pending re-arm: make room for a full batch
            }
            let (nmsg, end) = self.tx.fill(&plan[..to], data, pos, gso, self.v6);
            for k in 0..nmsg {
                let hdr = std::ptr::from_ref(&self.tx.msgs[k].msg_hdr);
                let sqe = opcode::SendMsg::new(types::Fd(self.fd), hdr)
                    .flags(libc::MSG_DONTWAIT as u32)
                    .build()
                    .user_data(UD_SEND | k as u64);
                self.push(&sqe);
            }
            self.resend.clear();
            let mut left = nmsg;
            let mut fatal = None;
            while left > 0 {
                // Must not return before every send completed: the kernel reads our memory.
                self.enter(left, stats)?;
                for cqe in self.ring.completion() {
                    let (ud, res, flags) = (cqe.user_data(), cqe.result(), cqe.flags());
                    if ud & UD_SEND != 0 {
                        let k = (ud & UD_INDEX) as usize;
                        if k >= nmsg {
                            continue; // not ours to count; cannot happen
                        }
                        left -= 1;
                        let segs = self.tx.segs[k];
                        if res >= 0 {
                            stats.note_sent(u64::from(segs), res as u64);
                            continue;
                        }
                        let first = self.tx.first[k];
                        let seg = plan[first as usize].len as usize;
                        match classify_send_error(-res, segs as usize, seg, gso) {
                            SendFailure::Gso | SendFailure::Retry if top => {
                                stats.gso_fallbacks += u64::from(segs > 1);
                                self.resend.push((first, segs));
                            }
                            SendFailure::Congested { enobufs } => {
                                stats.note_congested(enobufs, u64::from(segs))
                            }
                            SendFailure::Fatal => fatal = Some(-res),
                            _ => stats.send_errors += u64::from(segs),
                        }
                    } else if ud & UD_RECV != 0 {
                        Self::stash(&mut self.pending, &mut self.bufs, res, flags, stats);
                    }
                }
            }
            if let Some(e) = fatal {
                return Err(TransportError::Send(io::Error::from_raw_os_error(e)));
            }
            if !self.resend.is_empty() {
                // Our own list is reused by nothing below (`top` is false there); take it to
                // iterate while `self` is borrowed mutably, then put its storage back.
                let list = std::mem::take(&mut self.resend);
                for &(first, n) in &list {
                    let a = first as usize;
                    self.send_range(plan, a, a + n as usize, data, gso, stats, false)?;
                }
                self.resend = list;
            }
            pos = end;
        }
        Ok(())
    }

    /// Keeps a receive CQE reaped during a send for the next poll. The queue cannot overflow
    /// (see `pending`); if it ever did, the buffer goes back to the ring and the datagram is
    /// counted as a receive error rather than growing memory.
    fn stash(
        pending: &mut VecDeque<(i32, u32)>,
        bufs: &mut BufRing,
        res: i32,
        flags: u32,
        stats: &mut TransportStats,
    ) {
        if pending.len() < pending.capacity() {
            pending.push_back((res, flags));
        } else {
            stats.recv_errors += 1;
            if let Some(bid) = cqueue::buffer_select(flags) {
                bufs.push(bid);
                bufs.publish();
            }
        }
    }

    /// Submits what is queued and waits for `want` completions (0: just submit and run pending
    /// receive work). Interruptions and a full CQ backlog are not errors: the caller reaps and
    /// comes back.
    fn enter(&mut self, want: usize, stats: &mut TransportStats) -> Result<(), TransportError> {
        let r = self.ring.submit_and_wait(want);
        stats.send_syscalls += 1;
        match r {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::EBUSY | libc::EAGAIN)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(TransportError::Uring(e)),
        }
    }

    /// Delivers ready datagrams; if none and `wait` is non-zero, waits up to `wait` once.
    pub(crate) fn recv(
        &mut self,
        wait: Option<Duration>,
        f: &mut dyn FnMut(SocketAddr, &[u8]),
        stats: &mut TransportStats,
    ) -> Result<usize, TransportError> {
        self.start(stats)?;
        let mut n = 0;
        let mut waited = false;
        let mut passes = 0;
        loop {
            n += self.drain(f, stats)?;
            if !self.armed {
                self.arm(stats);
            }
            // Receive work is pending: the kernel deferred a datagram's receive to us (say, one
            // another node of this thread sent a moment ago), a multishot receive requeued
            // itself after a burst of completions, or a re-arm (after the buffer ring ran dry)
            // waits in the SQ. Run it now, a bounded number of times, rather than leave those
            // datagrams, often the last and most urgent of a turn, for the next poll.
            let more = !self.ring.submission().is_empty() || self.ring.submission().taskrun();
            if more && passes < MAX_RECV_PASSES {
                passes += 1;
                self.enter_recv(None, stats)?;
                continue;
            }
            if n > 0 || waited {
                break;
            }
            match wait {
                Some(t) if !t.is_zero() => {
                    waited = true;
                    self.enter_recv(Some(t), stats)?;
                }
                _ => break,
            }
        }
        if !self.ring.submission().is_empty() {
            self.enter_recv(None, stats)?; // a re-arm queued after the last enter
        }
        Ok(n)
    }

    fn enter_recv(
        &mut self,
        wait: Option<Duration>,
        stats: &mut TransportStats,
    ) -> Result<(), TransportError> {
        stats.recv_syscalls += 1;
        let r = match wait {
            None => self.ring.submit(),
            Some(t) => {
                let ts = types::Timespec::from(t);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
        };
        match r {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(TransportError::Uring(e)),
        }
    }

    /// Delivers stashed receive CQEs, then those in the CQ; recycles their buffers.
    fn drain(
        &mut self,
        f: &mut dyn FnMut(SocketAddr, &[u8]),
        stats: &mut TransportStats,
    ) -> Result<usize, TransportError> {
        let mut n = 0;
        let UringIo {
            pending,
            ring,
            bufs,
            rx_hdr,
            armed,
            ..
        } = self;
        let mut handle = |res: i32, flags: u32| {
            Self::handle_recv(bufs, rx_hdr, armed, res, flags, f, stats).map(|k| n += k)
        };
        let mut result = Ok(());
        while let Some((res, flags)) = pending.pop_front() {
            result = handle(res, flags);
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            // One pass over what the CQ holds now; anything later waits for the next poll.
            for cqe in ring.completion() {
                if cqe.user_data() & UD_RECV == 0 {
                    continue; // a late cancel result; sends are all reaped by `send_range`
                }
                result = handle(cqe.result(), cqe.flags());
                if result.is_err() {
                    break;
                }
            }
        }
        bufs.publish();
        result.map(|()| n)
    }

    /// Handles one receive CQE. Never panics on what the peer sent: every length is checked by
    /// `RecvMsgOut::parse` and the parsers in `sys`.
    fn handle_recv(
        bufs: &mut BufRing,
        rx_hdr: &libc::msghdr,
        armed: &mut bool,
        res: i32,
        flags: u32,
        f: &mut dyn FnMut(SocketAddr, &[u8]),
        stats: &mut TransportStats,
    ) -> Result<usize, TransportError> {
        if !cqueue::more(flags) {
            *armed = false; // the multishot ended; `recv` re-arms
        }
        let bid = cqueue::buffer_select(flags);
        if res < 0 {
            if let Some(b) = bid {
                bufs.push(b);
            }
            return match -res {
                libc::ENOBUFS => {
                    stats.recv_buffers_exhausted += 1;
                    Ok(0)
                }
                libc::ECANCELED | libc::EINTR | libc::EAGAIN => Ok(0),
                e @ (libc::EBADF
                | libc::ENOTSOCK
                | libc::EINVAL
                | libc::EOPNOTSUPP
                | libc::EFAULT) => Err(TransportError::Recv(io::Error::from_raw_os_error(e))),
                _ => {
                    stats.recv_errors += 1;
                    Ok(0)
                }
            };
        }
        let Some(bid) = bid else {
            stats.recv_errors += 1;
            return Ok(0);
        };
        let mut n = 0;
        match bufs
            .buffer(bid, res as usize)
            .map(|b| RecvMsgOut::parse(b, rx_hdr))
        {
            Some(Ok(out)) if out.is_payload_truncated() => stats.recv_truncated += 1,
            Some(Ok(out)) => match super::sys::parse_sockaddr(out.name_data()) {
                Some(src) => {
                    let seg = super::sys::gro_segment_size(out.control_data());
                    n = deliver(src, out.payload_data(), seg, f, stats);
                }
                None => stats.recv_errors += 1,
            },
            _ => stats.recv_errors += 1,
        }
        bufs.push(bid);
        Ok(n)
    }
}

impl Drop for UringIo {
    /// Cancels the multishot receive and unregisters the buffer ring before the memory behind
    /// them is unmapped. Bounded: if the ring cannot be driven from this thread (`EEXIST` under
    /// `SINGLE_ISSUER`), closing the ring cancels everything anyway.
    fn drop(&mut self) {
        const CANCEL_WAITS: usize = 16;
        const CANCEL_WAIT: Duration = Duration::from_millis(5);
        let cancel = opcode::AsyncCancel::new(UD_RECV)
            .build()
            .user_data(UD_CANCEL);
        // SAFETY: a cancel SQE references no memory.
        if self.started && self.armed && unsafe { self.ring.submission().push(&cancel) }.is_ok() {
            for _ in 0..CANCEL_WAITS {
                let ts = types::Timespec::from(CANCEL_WAIT);
                let args = types::SubmitArgs::new().timespec(&ts);
                if let Err(e) = self.ring.submitter().submit_with_args(1, &args)
                    && e.raw_os_error() != Some(libc::ETIME)
                {
                    break; // e.g. EEXIST: dropped on another thread than the one that used it
                }
                for cqe in self.ring.completion() {
                    if cqe.user_data() == UD_RECV && !cqueue::more(cqe.flags()) {
                        self.armed = false;
                    }
                }
                if !self.armed {
                    break;
                }
            }
        }
        let _ = self.ring.submitter().unregister_buf_ring(BGID);
    }
}
