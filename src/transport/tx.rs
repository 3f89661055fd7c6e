//! Transmit staging shared by both backends.
//!
//! The caller encodes straight into fixed [`TxSlots`] (no copy on the send path). At flush time
//! the committed slots become a *plan*: an ordered list of [`Out`] entries, each naming where its
//! bytes live (a slot, or a copy held by the fault layer). Backends walk the plan, group runs of
//! equal-size datagrams to one destination into GSO trains, and describe them to the kernel
//! through the preallocated `msghdr` arrays of a [`TxBatch`]. Nothing here allocates after setup.

use std::net::{Ipv4Addr, SocketAddr};

use super::sys::{self, CmsgBuf, GSO_MAX_SEGMENTS, MAX_UDP_PAYLOAD};

/// Fixed transmit slots of `slot_bytes` each, filled in order and emptied by a flush.
pub(crate) struct TxSlots {
    buf: Box<[u8]>,
    slot_bytes: usize,
    lens: Box<[u32]>,
    dsts: Box<[SocketAddr]>,
    committed: usize,
}

impl TxSlots {
    pub(crate) fn new(count: usize, slot_bytes: usize) -> TxSlots {
        let unspec = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0);
        TxSlots {
            buf: vec![0; count * slot_bytes].into_boxed_slice(),
            slot_bytes,
            lens: vec![0; count].into_boxed_slice(),
            dsts: vec![unspec; count].into_boxed_slice(),
            committed: 0,
        }
    }

    /// The next free slot, or `None` when every slot is committed.
    pub(crate) fn slot_mut(&mut self) -> Option<&mut [u8]> {
        if self.committed == self.lens.len() {
            return None;
        }
        let start = self.committed * self.slot_bytes;
        Some(&mut self.buf[start..start + self.slot_bytes])
    }

    /// Commits the slot last returned by [`slot_mut`](Self::slot_mut).
    ///
    /// Panics (a caller bug, never network input) if no slot is free or `len` exceeds a slot.
    pub(crate) fn commit(&mut self, len: usize, dst: SocketAddr) {
        assert!(
            self.committed < self.lens.len(),
            "tx_commit without a free tx slot"
        );
        assert!(
            len <= self.slot_bytes,
            "tx_commit len {len} > max_datagram_bytes {}",
            self.slot_bytes
        );
        self.lens[self.committed] = len as u32;
        self.dsts[self.committed] = dst;
        self.committed += 1;
    }

    pub(crate) fn len(&self) -> usize {
        self.committed
    }

    pub(crate) fn clear(&mut self) {
        self.committed = 0;
    }

    /// Length and destination of committed slot `i`.
    pub(crate) fn meta(&self, i: usize) -> (u32, SocketAddr) {
        (self.lens[i], self.dsts[i])
    }

    /// The bytes of committed slot `i`.
    pub(crate) fn data(&self, i: usize) -> &[u8] {
        let start = i * self.slot_bytes;
        &self.buf[start..start + self.lens[i] as usize]
    }

    pub(crate) fn pool(&self) -> &[u8] {
        &self.buf
    }

    /// Appends every committed slot to `plan`, in order: the plan when no faults are injected.
    pub(crate) fn plan_all(&self, plan: &mut Vec<Out>) {
        for i in 0..self.committed {
            plan.push(Out {
                src: Src::Tx(i as u32),
                len: self.lens[i],
                dst: self.dsts[i],
            });
        }
    }
}

/// Where a planned datagram's bytes live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Src {
    /// A committed transmit slot.
    Tx(u32),
    /// A buffer in the fault layer's holding pool.
    Held(u32),
}

/// One datagram to put on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Out {
    pub src: Src,
    pub len: u32,
    pub dst: SocketAddr,
}

/// Resolves [`Out`] entries to bytes. Both pools use the same stride (`max_datagram_bytes`).
pub(crate) struct Payloads<'a> {
    pub tx: &'a [u8],
    pub held: &'a [u8],
    pub stride: usize,
}

impl<'a> Payloads<'a> {
    pub(crate) fn get(&self, o: &Out) -> &'a [u8] {
        let (pool, i) = match o.src {
            Src::Tx(i) => (self.tx, i),
            Src::Held(i) => (self.held, i),
        };
        let start = i as usize * self.stride;
        &pool[start..start + o.len as usize]
    }
}

/// What the kernel has told us about GSO on this socket so far.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GsoState {
    /// Off when not configured, not supported, or the kernel refused a train outright.
    pub enabled: bool,
    /// Largest segment the path accepted; lowered when a train fails with `EMSGSIZE` (segment
    /// plus headers above the route MTU), so other sizes keep using GSO.
    pub max_seg: usize,
}

impl GsoState {
    pub(crate) fn new(enabled: bool) -> GsoState {
        GsoState {
            enabled,
            max_seg: MAX_UDP_PAYLOAD,
        }
    }

    /// Adjusts after a GSO train of `seg`-byte segments failed with `errno`. Returns true when
    /// the failure was GSO's fault, so the train should be resent as plain datagrams.
    pub(crate) fn on_train_error(&mut self, errno: i32, seg: usize) -> bool {
        match errno {
            libc::EMSGSIZE => {
                self.max_seg = self.max_seg.min(seg.saturating_sub(1));
                true
            }
            libc::EINVAL | libc::EIO | libc::EOPNOTSUPP | libc::ENOPROTOOPT => {
                self.enabled = false;
                true
            }
            _ => false,
        }
    }
}

/// Number of datagrams at the head of `plan` that can go as one GSO train: same destination,
/// same size (the last may be shorter, as the kernel allows), at most `max_segs`, and at most one
/// maximal UDP payload in total. Returns 1 when GSO does not apply, 0 for an empty plan.
pub(crate) fn train_len(plan: &[Out], gso: &GsoState, max_segs: usize) -> usize {
    let Some(first) = plan.first() else { return 0 };
    let seg = first.len as usize;
    if !gso.enabled || max_segs < 2 || seg == 0 || seg > gso.max_seg {
        return 1;
    }
    let mut total = seg;
    let mut n = 1;
    for o in &plan[1..] {
        let len = o.len as usize;
        if n == max_segs
            || o.dst != first.dst
            || len == 0
            || len > seg
            || total + len > MAX_UDP_PAYLOAD
        {
            break;
        }
        total += len;
        n += 1;
        if len < seg {
            break; // a short segment can only be the last one
        }
    }
    n
}

/// How a failed send is handled; shared so both backends count errors the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SendFailure {
    /// Interrupted: try the same message again.
    Retry,
    /// The socket or device queue is full (`EAGAIN`, `ENOBUFS`): drop and count.
    Congested { enobufs: bool },
    /// A GSO train the kernel refused; resend it as plain datagrams.
    Gso,
    /// The socket itself is unusable: report to the caller.
    Fatal,
    /// Per-destination problem (unreachable, wrong family, ...): drop this message and count.
    Other,
}

pub(crate) fn classify_send_error(
    errno: i32,
    segs: usize,
    seg: usize,
    gso: &mut GsoState,
) -> SendFailure {
    match errno {
        libc::EINTR => SendFailure::Retry,
        libc::EAGAIN => SendFailure::Congested { enobufs: false },
        libc::ENOBUFS => SendFailure::Congested { enobufs: true },
        libc::EBADF | libc::ENOTSOCK | libc::EFAULT => SendFailure::Fatal,
        e if segs > 1 && gso.on_train_error(e, seg) => SendFailure::Gso,
        _ => SendFailure::Other,
    }
}

/// Preallocated `msghdr`s, iovecs, addresses and control buffers for one batch of sends.
///
/// One message per GSO train (or single datagram), one iovec per datagram, so a batch of `n`
/// messages never needs more than `n` iovecs. The raw pointers inside are rewritten on every
/// [`fill`](Self::fill) and only dereferenced by the kernel during the send that follows.
pub(crate) struct TxBatch {
    pub msgs: Box<[libc::mmsghdr]>,
    iovs: Box<[libc::iovec]>,
    addrs: Box<[libc::sockaddr_storage]>,
    cmsgs: Box<[CmsgBuf]>,
    /// Plan index of each message's first datagram.
    pub first: Box<[u32]>,
    /// Datagrams in each message.
    pub segs: Box<[u32]>,
}

impl TxBatch {
    pub(crate) fn new(batch: usize) -> TxBatch {
        // SAFETY: mmsghdr, iovec and sockaddr_storage are plain C structs for which all-zero
        // (null pointers, zero lengths) is a valid value.
        let (msg, iov, addr) = unsafe {
            (
                std::mem::zeroed::<libc::mmsghdr>(),
                std::mem::zeroed::<libc::iovec>(),
                std::mem::zeroed::<libc::sockaddr_storage>(),
            )
        };
        TxBatch {
            msgs: vec![msg; batch].into_boxed_slice(),
            iovs: vec![iov; batch].into_boxed_slice(),
            addrs: vec![addr; batch].into_boxed_slice(),
            cmsgs: vec![CmsgBuf::default(); batch].into_boxed_slice(),
            first: vec![0; batch].into_boxed_slice(),
            segs: vec![0; batch].into_boxed_slice(),
        }
    }

    /// Describes `plan[pos..]` into messages, as many as fit. Returns (messages, plan end).
    ///
    /// The iovecs point into `data`; the caller must finish the send before `data`'s pools
    /// change.
    pub(crate) fn fill(
        &mut self,
        plan: &[Out],
        data: &Payloads<'_>,
        pos: usize,
        gso: &GsoState,
        v6: bool,
    ) -> (usize, usize) {
        let cap = self.msgs.len();
        let mut p = pos;
        let mut nmsg = 0;
        let mut niov = 0;
        while p < plan.len() && nmsg < cap && niov < cap {
            let n = train_len(&plan[p..], gso, (cap - niov).min(GSO_MAX_SEGMENTS));
            for (j, o) in plan[p..p + n].iter().enumerate() {
                let b = data.get(o);
                self.iovs[niov + j] = libc::iovec {
                    iov_base: b.as_ptr().cast_mut().cast(),
                    iov_len: b.len(),
                };
            }
            let namelen = sys::encode_sockaddr(plan[p].dst, v6, &mut self.addrs[nmsg]);
            let hdr = &mut self.msgs[nmsg].msg_hdr;
            hdr.msg_name = std::ptr::from_mut(&mut self.addrs[nmsg]).cast();
            hdr.msg_namelen = namelen;
            hdr.msg_iov = std::ptr::from_mut(&mut self.iovs[niov]);
            hdr.msg_iovlen = n as _;
            hdr.msg_flags = 0;
            if n > 1 {
                let clen = sys::write_gso_cmsg(&mut self.cmsgs[nmsg], plan[p].len as u16);
                hdr.msg_control = std::ptr::from_mut(&mut self.cmsgs[nmsg]).cast();
                hdr.msg_controllen = clen as _;
            } else {
                hdr.msg_control = std::ptr::null_mut();
                hdr.msg_controllen = 0;
            }
            self.msgs[nmsg].msg_len = 0;
            self.first[nmsg] = p as u32;
            self.segs[nmsg] = n as u32;
            p += n;
            niov += n;
            nmsg += 1;
        }
        (nmsg, p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(len: u32, port: u16) -> Out {
        Out {
            src: Src::Tx(0),
            len,
            dst: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port),
        }
    }

    #[test]
    fn trains_group_equal_sizes_to_one_destination() {
        let on = GsoState::new(true);
        let plan = [
            out(100, 1),
            out(100, 1),
            out(100, 1),
            out(60, 1),
            out(100, 1),
        ];
        assert_eq!(train_len(&plan, &on, 64), 4); // the short one ends the train
        assert_eq!(train_len(&plan[4..], &on, 64), 1);
        let plan = [out(100, 1), out(100, 2)];
        assert_eq!(train_len(&plan, &on, 64), 1); // another destination
        let plan = [out(100, 1), out(200, 1)];
        assert_eq!(train_len(&plan, &on, 64), 1); // a longer one cannot follow
        assert_eq!(train_len(&[out(100, 1); 100], &on, 64), 64);
        assert_eq!(train_len(&[out(100, 1); 100], &on, 7), 7);
        assert_eq!(train_len(&[out(100, 1); 100], &GsoState::new(false), 64), 1);
        assert_eq!(train_len(&[out(0, 1); 4], &on, 64), 1);
        assert_eq!(train_len(&[], &on, 64), 0);
    }

    #[test]
    fn trains_stay_within_one_udp_payload() {
        let on = GsoState::new(true);
        let n = train_len(&[out(16_384, 1); 10], &on, 64);
        assert_eq!(n, 3);
        let n = train_len(&[out(1472, 1); 64], &on, 64);
        assert_eq!(n, MAX_UDP_PAYLOAD / 1472);
    }

    #[test]
    fn gso_errors_adjust_state() {
        let mut g = GsoState::new(true);
        assert_eq!(
            classify_send_error(libc::EMSGSIZE, 4, 9000, &mut g),
            SendFailure::Gso
        );
        assert!(g.enabled && g.max_seg == 8999);
        assert_eq!(train_len(&[out(9000, 1); 4], &g, 64), 1);
        assert_eq!(train_len(&[out(1000, 1); 4], &g, 64), 4);
        assert_eq!(
            classify_send_error(libc::EMSGSIZE, 1, 9000, &mut g),
            SendFailure::Other
        );
        assert_eq!(
            classify_send_error(libc::EIO, 4, 1000, &mut g),
            SendFailure::Gso
        );
        assert!(!g.enabled);
        assert_eq!(
            classify_send_error(libc::ENOBUFS, 4, 1000, &mut g),
            SendFailure::Congested { enobufs: true }
        );
    }
}
