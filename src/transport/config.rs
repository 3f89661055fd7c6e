//! What to open: the backend choice and the socket and buffer settings.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;

use thiserror::Error;

use super::FaultConfig;

/// Environment variable that, when set to anything but `0` or empty, keeps [`IoChoice::Auto`]
/// off io_uring (and makes [`IoChoice::Uring`] fail), to exercise the fallback.
pub const NO_URING_ENV: &str = "STATESYNC_NO_URING";

/// Which I/O backend to use. Parses from `auto`, `uring` or `mmsg` (for command lines).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum IoChoice {
    /// io_uring if this kernel and sandbox allow it, else sendmmsg/recvmmsg.
    #[default]
    Auto,
    /// io_uring or an error saying why it is unavailable.
    Uring,
    /// sendmmsg/recvmmsg.
    Mmsg,
}

impl FromStr for IoChoice {
    type Err = ParseIoChoiceError;

    fn from_str(s: &str) -> Result<IoChoice, ParseIoChoiceError> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(IoChoice::Auto),
            "uring" | "io_uring" | "io-uring" => Ok(IoChoice::Uring),
            "mmsg" | "sendmmsg" => Ok(IoChoice::Mmsg),
            _ => Err(ParseIoChoiceError(s.to_owned())),
        }
    }
}

impl fmt::Display for IoChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IoChoice::Auto => "auto",
            IoChoice::Uring => "uring",
            IoChoice::Mmsg => "mmsg",
        })
    }
}

/// An `--io` value that is not `auto`, `uring` or `mmsg`.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("unknown io backend {0:?}: expected auto, uring or mmsg")]
pub struct ParseIoChoiceError(String);

/// The backend actually in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IoKind {
    Uring,
    Mmsg,
}

impl fmt::Display for IoKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IoKind::Uring => "uring",
            IoKind::Mmsg => "mmsg",
        })
    }
}

/// How to open a [`Transport`](super::Transport). Start from `Default` and set what differs.
#[derive(Clone, Debug, PartialEq)]
pub struct TransportConfig {
    /// Local address; port 0 picks a free one. An unspecified IPv6 address is dual-stack.
    pub bind: SocketAddr,
    pub io: IoChoice,
    /// Largest datagram sent (the size of each transmit slot) and, without GRO, received. 1472
    /// fits a 1500-byte Ethernet MTU under IPv4; loopback takes up to 65507.
    pub max_datagram_bytes: usize,
    /// Transmit slots, which is also the datagrams handed to the kernel per syscall. At most 1024.
    pub batch: usize,
    /// `SO_SNDBUF` / `SO_RCVBUF` request (forced past the sysctl caps when running as root);
    /// 0 keeps the system default. Deep receive buffers absorb bursts between polls.
    pub sndbuf_bytes: usize,
    pub rcvbuf_bytes: usize,
    /// Send runs of equal-size datagrams to one destination as one GSO train (`UDP_SEGMENT`),
    /// if the kernel supports it.
    pub gso: bool,
    /// Let the kernel coalesce received datagrams (`UDP_GRO`), if supported. Costs 64 KiB per
    /// receive buffer, since a coalesced train must fit one.
    pub gro: bool,
    /// io_uring provided receive buffers (rounded up to a power of two); 0 picks a default sized
    /// to stay cache-resident (32 with GRO, else twice `batch`).
    pub rx_buffers: usize,
    pub faults: FaultConfig,
}

impl Default for TransportConfig {
    fn default() -> TransportConfig {
        TransportConfig {
            bind: SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0),
            io: IoChoice::Auto,
            max_datagram_bytes: 1472,
            batch: 64,
            sndbuf_bytes: 4 << 20,
            rcvbuf_bytes: 4 << 20,
            gso: true,
            gro: true,
            rx_buffers: 0,
            faults: FaultConfig::default(),
        }
    }
}
