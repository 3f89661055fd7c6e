//! Counters a transport keeps, for operators and benchmarks.

use super::FaultStats;

/// Counters since open. Datagram counts are of datagrams on the wire: a GSO train of 10 counts
/// 10, a duplicated datagram 2, a fault-dropped one 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    pub datagrams_sent: u64,
    pub bytes_sent: u64,
    pub datagrams_received: u64,
    pub bytes_received: u64,
    /// Kernel entries made to send (`sendmmsg`, or `io_uring_enter` from `flush`).
    pub send_syscalls: u64,
    /// Kernel entries made to receive (`recvmmsg`, `ppoll`, or `io_uring_enter` from a poll).
    pub recv_syscalls: u64,
    /// Sends that carried a GSO train of two or more datagrams.
    pub gso_sends: u64,
    /// Received buffers that held two or more GRO-coalesced datagrams.
    pub gro_receives: u64,
    /// GSO trains the kernel refused and that were resent as plain datagrams.
    pub gso_fallbacks: u64,
    /// Datagrams dropped because the socket send buffer was full.
    pub send_eagain: u64,
    /// Datagrams dropped because the device or qdisc queue was full.
    pub send_enobufs: u64,
    /// Datagrams dropped for any other per-datagram error (unreachable, wrong family, ...).
    pub send_errors: u64,
    /// Received datagrams larger than a receive buffer, dropped.
    pub recv_truncated: u64,
    /// Receive errors that were not fatal (bad address, queued ICMP error, ...).
    pub recv_errors: u64,
    /// io_uring multishot receives armed (the first arm included).
    pub recv_rearms: u64,
    /// io_uring receives ended because every provided buffer was in use (data stays queued).
    pub recv_buffers_exhausted: u64,
    pub faults: FaultStats,
}

impl TransportStats {
    /// All kernel entries, send and receive.
    pub fn syscalls(&self) -> u64 {
        self.send_syscalls + self.recv_syscalls
    }

    pub(crate) fn note_sent(&mut self, datagrams: u64, bytes: u64) {
        self.datagrams_sent += datagrams;
        self.bytes_sent += bytes;
        self.gso_sends += u64::from(datagrams > 1);
    }

    pub(crate) fn note_congested(&mut self, enobufs: bool, datagrams: u64) {
        if enobufs {
            self.send_enobufs += datagrams;
        } else {
            self.send_eagain += datagrams;
        }
    }
}
