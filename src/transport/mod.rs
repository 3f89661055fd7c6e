//! UDP transport: moves datagrams between this process and its peers as cheaply as the kernel
//! allows.
//!
//! The protocol layer batches many small state changes into each datagram; the transport's job is
//! only to move those datagrams, and at millions of changes per second the cost per *datagram*
//! (syscalls, copies, allocations) is what matters. Hence:
//!
//! - **Zero-copy send.** [`Transport::tx_slot`] lends a fixed buffer to encode into;
//!   [`Transport::tx_commit`] queues it; [`Transport::flush`] hands all queued datagrams to the
//!   kernel in one batched call, as GSO trains where consecutive datagrams share a destination
//!   and size.
//! - **Batched receive.** [`Transport::poll_recv`] drains everything ready in as few syscalls as
//!   the backend allows (none, with io_uring, when completions are already queued), splitting
//!   GRO-coalesced buffers, and lends each datagram to a callback in place.
//! - **Two backends, picked at run time.** io_uring ([`IoKind::Uring`]: multishot receive into a
//!   provided-buffer ring) where the kernel and container allow it, `sendmmsg`/`recvmmsg`
//!   ([`IoKind::Mmsg`]) everywhere else. Both behave the same to the caller.
//! - **Bounded and allocation-free in steady state.** Every buffer and queue is sized at
//!   [`Transport::open`].
//! - **Fault injection** ([`FaultConfig`]) on the send side, for lab runs and drills on real
//!   sockets; free when disabled.
//!
//! A `Transport` is owned by one single-threaded event loop. It is `Send`, so it may be opened on
//! one thread and moved to the loop's thread, but with io_uring it must stay on the thread that
//! first flushes or polls it.

mod config;
mod fault;
mod mmsg;
mod stats;
mod sys;
mod tx;
mod uring;

#[cfg(test)]
mod tests;

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use socket2::Socket;
use thiserror::Error;

pub use config::{IoChoice, IoKind, NO_URING_ENV, ParseIoChoiceError, TransportConfig};
pub use fault::{FaultConfig, FaultStats};
pub use stats::TransportStats;

use fault::FaultLayer;
use mmsg::MmsgIo;
use sys::{GRO_PAYLOAD_BYTES, MAX_UDP_PAYLOAD};
use tx::{GsoState, Out, Payloads, TxSlots};
use uring::{MAX_RX_BUFFERS, UringIo, UringParams};

/// Why opening, sending or receiving failed. Per-datagram send and receive problems are not
/// errors; they are counted in [`TransportStats`].
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TransportError {
    #[error("invalid transport config: {0}")]
    Config(&'static str),
    #[error("socket setup failed at {what}: {source}")]
    Socket {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("io_uring unavailable: {0}")]
    UringUnavailable(String),
    #[error("allocating transport buffers: {0}")]
    Memory(#[source] io::Error),
    #[error("datagram of {len} bytes exceeds max_datagram_bytes ({max})")]
    TooLarge { len: usize, max: usize },
    #[error("send failed: {0}")]
    Send(#[source] io::Error),
    #[error("receive failed: {0}")]
    Recv(#[source] io::Error),
    #[error("io_uring failed: {0}")]
    Uring(#[source] io::Error),
}

enum Backend {
    Uring(Box<UringIo>),
    Mmsg(MmsgIo),
}

/// A bound UDP socket with batched, zero-copy send and receive. See the [module docs](self).
pub struct Transport {
    /// Declared before `socket`: the backend's requests must end before the socket closes.
    backend: Backend,
    socket: Socket,
    kind: IoKind,
    local_addr: SocketAddr,
    max_datagram_bytes: usize,
    tx: TxSlots,
    /// Reused send plan; capacity fixed at open.
    plan: Vec<Out>,
    gso: GsoState,
    gro: bool,
    fault: Option<FaultLayer>,
    stats: TransportStats,
    /// Stand-in for "now" when faults need no clock.
    epoch: Instant,
    /// Why io_uring is not in use although it was not ruled out by the config.
    fallback: Option<String>,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("kind", &self.kind)
            .field("local_addr", &self.local_addr)
            .field("fd", &self.socket.as_raw_fd())
            .field("max_datagram_bytes", &self.max_datagram_bytes)
            .field("gso", &self.gso.enabled)
            .field("gro", &self.gro)
            .finish_non_exhaustive()
    }
}

/// Whether the value of [`NO_URING_ENV`] asks to avoid io_uring.
fn no_uring_requested(value: Option<&OsStr>) -> bool {
    value.is_some_and(|v| !v.is_empty() && v != "0")
}

/// Prints the backend choice to stderr once per distinct outcome per process, so a process
/// opening many transports says it once, yet a surprise (a fallback) is never hidden. A
/// process that logs through `tracing` (a daemon) is not printed to: it logs the choice
/// itself, as a record of its node ([`Transport::kind`], [`Transport::fallback`]).
fn log_once(slot: usize, msg: &str) {
    static LOGGED: [AtomicBool; 4] = [const { AtomicBool::new(false) }; 4];
    if !tracing::dispatcher::has_been_set() && !LOGGED[slot].swap(true, Ordering::Relaxed) {
        eprintln!("{msg}");
    }
}

/// How many datagrams the fault layer may hold: enough for a burst of delays, bounded in bytes.
fn fault_hold_capacity(max_datagram_bytes: usize) -> usize {
    ((16 << 20) / max_datagram_bytes).clamp(16, 1024)
}

impl Transport {
    /// Opens and binds the socket and picks the backend (see [`IoChoice`]), honouring
    /// [`NO_URING_ENV`].
    pub fn open(cfg: TransportConfig) -> Result<Transport, TransportError> {
        let no_uring = no_uring_requested(std::env::var_os(NO_URING_ENV).as_deref());
        Transport::open_with(cfg, no_uring)
    }

    /// [`open`](Self::open) with the environment override passed in, so tests need not touch
    /// process-global environment variables.
    pub(crate) fn open_with(
        cfg: TransportConfig,
        no_uring: bool,
    ) -> Result<Transport, TransportError> {
        if !(1..=MAX_UDP_PAYLOAD).contains(&cfg.max_datagram_bytes) {
            return Err(TransportError::Config(
                "max_datagram_bytes must be 1..=65507",
            ));
        }
        if !(1..=1024).contains(&cfg.batch) {
            return Err(TransportError::Config("batch must be 1..=1024"));
        }
        if cfg.rx_buffers > MAX_RX_BUFFERS {
            return Err(TransportError::Config("rx_buffers must be at most 32768"));
        }
        let setup = sys::open_socket(&cfg)?;
        let fd = setup.socket.as_raw_fd();
        let payload_cap = if setup.gro {
            GRO_PAYLOAD_BYTES
        } else {
            cfg.max_datagram_bytes
        };
        let mmsg = || {
            MmsgIo::new(fd, setup.v6, cfg.batch, payload_cap, setup.gro)
                .map(Backend::Mmsg)
                .map_err(TransportError::Memory)
        };
        let uring = || {
            // The ring is consumed FIFO, so every buffer is touched once per lap: a small ring
            // stays in cache. On the loopback bench, 32 GRO buffers (2 MiB) received 64 x 1472 B
            // in 12 us where 128 took 18 us and 512 took 27 us. A burst beyond the ring only
            // ends the multishot (ENOBUFS) until the next poll re-arms it; nothing is lost.
            let rx_buffers = match cfg.rx_buffers {
                0 if setup.gro => 32,
                0 => (cfg.batch * 2).max(64),
                n => n,
            };
            UringIo::open(&UringParams {
                fd,
                v6: setup.v6,
                batch: cfg.batch,
                rx_buffers,
                payload_cap,
                gro: setup.gro,
            })
            .map(|u| Backend::Uring(Box::new(u)))
        };
        let mut fallback = None;
        let backend = match (cfg.io, no_uring) {
            (IoChoice::Mmsg, _) => {
                log_once(0, "statesync: io=mmsg (requested)");
                mmsg()?
            }
            (IoChoice::Uring, true) => {
                return Err(TransportError::UringUnavailable(format!(
                    "disabled by {NO_URING_ENV}"
                )));
            }
            (IoChoice::Uring, false) => {
                let b = uring().map_err(TransportError::UringUnavailable)?;
                log_once(1, "statesync: io=uring");
                b
            }
            (IoChoice::Auto, true) => {
                let why = format!("io_uring disabled by {NO_URING_ENV}, using sendmmsg/recvmmsg");
                log_once(2, &format!("statesync: {why}"));
                fallback = Some(why);
                mmsg()?
            }
            (IoChoice::Auto, false) => match uring() {
                Ok(b) => {
                    log_once(1, "statesync: io=uring");
                    b
                }
                Err(reason) => {
                    let why = format!("io_uring unavailable ({reason}), using sendmmsg/recvmmsg");
                    log_once(3, &format!("statesync: {why}"));
                    fallback = Some(why);
                    mmsg()?
                }
            },
        };
        let kind = match backend {
            Backend::Uring(_) => IoKind::Uring,
            Backend::Mmsg(_) => IoKind::Mmsg,
        };
        let (fault, plan_cap) = if cfg.faults.is_enabled() {
            let cap = fault_hold_capacity(cfg.max_datagram_bytes);
            (
                Some(FaultLayer::new(&cfg.faults, cfg.max_datagram_bytes, cap)),
                FaultLayer::max_plan(cfg.batch, cap),
            )
        } else {
            (None, cfg.batch)
        };
        Ok(Transport {
            backend,
            socket: setup.socket,
            kind,
            local_addr: setup.local_addr,
            max_datagram_bytes: cfg.max_datagram_bytes,
            tx: TxSlots::new(cfg.batch, cfg.max_datagram_bytes),
            plan: Vec::with_capacity(plan_cap),
            gso: GsoState::new(setup.gso),
            gro: setup.gro,
            fault,
            stats: TransportStats::default(),
            epoch: Instant::now(),
            fallback,
        })
    }

    /// The backend in use.
    pub fn kind(&self) -> IoKind {
        self.kind
    }

    /// Why the backend is sendmmsg/recvmmsg although the config allowed io_uring (`None`
    /// when io_uring is in use or mmsg was asked for).
    pub fn fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// The bound address (with the port the kernel picked, if 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Size of each transmit slot.
    pub fn max_datagram_bytes(&self) -> usize {
        self.max_datagram_bytes
    }

    /// Whether sends currently use GSO trains (configured, supported, and not refused so far).
    pub fn gso_enabled(&self) -> bool {
        self.gso.enabled
    }

    /// Whether the socket receives GRO-coalesced buffers.
    pub fn gro_enabled(&self) -> bool {
        self.gro
    }

    /// Lends the next free transmit slot (`max_datagram_bytes` long, holding stale bytes) to
    /// encode a datagram into, then [`tx_commit`](Self::tx_commit) it. `None` when every slot is
    /// committed: [`flush`](Self::flush) first.
    pub fn tx_slot(&mut self) -> Option<&mut [u8]> {
        self.tx.slot_mut()
    }

    /// Queues the first `len` bytes of the slot last lent by [`tx_slot`](Self::tx_slot) for
    /// `dst`. Nothing is sent until [`flush`](Self::flush).
    ///
    /// # Panics
    /// If no slot is free or `len > max_datagram_bytes`: both are caller bugs.
    pub fn tx_commit(&mut self, len: usize, dst: SocketAddr) {
        self.tx.commit(len, dst);
    }

    /// Datagrams committed and not yet flushed.
    pub fn tx_pending(&self) -> usize {
        self.tx.len()
    }

    /// Copies `data` into a slot and commits it, flushing first if every slot is taken. For
    /// callers (tests, tools) that already hold the bytes.
    pub fn queue(&mut self, data: &[u8], dst: SocketAddr) -> Result<(), TransportError> {
        if data.len() > self.max_datagram_bytes {
            return Err(TransportError::TooLarge {
                len: data.len(),
                max: self.max_datagram_bytes,
            });
        }
        if self.tx.slot_mut().is_none() {
            self.flush()?;
        }
        if let Some(slot) = self.tx.slot_mut() {
            slot[..data.len()].copy_from_slice(data);
            self.tx.commit(data.len(), dst);
        }
        Ok(())
    }

    /// Sends every committed datagram (and any fault-delayed ones now due), batched, as GSO
    /// trains where consecutive datagrams share a destination and size. Returns the datagrams
    /// put on the wire. The slots are free again when this returns. A full socket or an
    /// unreachable destination drops the datagrams concerned and counts them; only a broken
    /// socket is an error.
    pub fn flush(&mut self) -> Result<usize, TransportError> {
        self.plan.clear();
        match &mut self.fault {
            None => self.tx.plan_all(&mut self.plan),
            Some(fl) => {
                let now = if fl.uses_clock() {
                    Instant::now()
                } else {
                    self.epoch
                };
                fl.plan_flush(&self.tx, now, &mut self.plan);
            }
        }
        let r = self.send_plan();
        self.tx.clear();
        r
    }

    fn send_plan(&mut self) -> Result<usize, TransportError> {
        if self.plan.is_empty() {
            return Ok(0);
        }
        let before = self.stats.datagrams_sent;
        let data = Payloads {
            tx: self.tx.pool(),
            held: self.fault.as_ref().map_or(&[][..], |f| f.pool()),
            stride: self.max_datagram_bytes,
        };
        let r = match &mut self.backend {
            Backend::Uring(u) => u.send(&self.plan, &data, &mut self.gso, &mut self.stats),
            Backend::Mmsg(m) => m.send(&self.plan, &data, &mut self.gso, &mut self.stats),
        };
        if let Some(fl) = &mut self.fault {
            fl.recycle(&self.plan);
        }
        self.plan.clear();
        r.map(|()| (self.stats.datagrams_sent - before) as usize)
    }

    /// Receives what is ready, calling `f(source, datagram)` for each datagram (the slice is
    /// only valid during the call). If nothing is ready, waits up to `timeout` for the first
    /// datagram (`None` or zero: do not wait). Returns the datagrams delivered.
    ///
    /// Also sends fault-delayed datagrams that fall due, waking up for them while waiting.
    pub fn poll_recv(
        &mut self,
        timeout: Option<Duration>,
        f: &mut dyn FnMut(SocketAddr, &[u8]),
    ) -> Result<usize, TransportError> {
        let deadline = timeout.filter(|t| !t.is_zero()).map(|t| Instant::now() + t);
        loop {
            let mut wait = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if let Some(fl) = &mut self.fault
                && fl.next_release().is_some()
            {
                let now = Instant::now();
                self.plan.clear();
                fl.release_due(now, &mut self.plan);
                let next = fl.next_release();
                self.send_plan()?;
                if let (Some(w), Some(at)) = (wait, next) {
                    wait = Some(w.min(at.saturating_duration_since(now)));
                }
            }
            let got = match &mut self.backend {
                Backend::Uring(u) => u.recv(wait, f, &mut self.stats)?,
                Backend::Mmsg(m) => m.recv(wait, f, &mut self.stats)?,
            };
            match deadline {
                Some(d) if got == 0 && Instant::now() < d => continue,
                _ => return Ok(got),
            }
        }
    }

    /// When the fault layer next has a delayed datagram due (for the event loop's timer), if
    /// any. [`poll_recv`](Self::poll_recv) and [`flush`](Self::flush) send it once due.
    pub fn next_fault_release(&self) -> Option<Instant> {
        self.fault.as_ref().and_then(FaultLayer::next_release)
    }

    /// Counters since open.
    pub fn stats(&self) -> TransportStats {
        let mut s = self.stats;
        if let Some(fl) = &self.fault {
            s.faults = fl.stats;
        }
        s
    }
}

/// Hands one received buffer to `f`, split into its datagrams if GRO coalesced several
/// (`seg`: the segment size from the `UDP_GRO` control message). Returns datagrams delivered.
pub(crate) fn deliver(
    src: SocketAddr,
    payload: &[u8],
    seg: Option<usize>,
    f: &mut dyn FnMut(SocketAddr, &[u8]),
    stats: &mut TransportStats,
) -> usize {
    stats.bytes_received += payload.len() as u64;
    match seg {
        Some(seg) if seg > 0 && seg < payload.len() => {
            let mut n = 0;
            for d in payload.chunks(seg) {
                f(src, d);
                n += 1;
            }
            stats.datagrams_received += n as u64;
            stats.gro_receives += 1;
            n
        }
        _ => {
            f(src, payload);
            stats.datagrams_received += 1;
            1
        }
    }
}
