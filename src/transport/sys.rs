//! Raw-socket plumbing shared by both backends: socket setup, socket-address and control-message
//! encoding, and owned anonymous memory for buffers the kernel writes into.
//!
//! Everything that parses bytes written by the kernel on behalf of a remote peer lives here, so
//! the bounds checks sit in one place and no parser can panic on what arrives off the network.

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

use socket2::{Domain, Protocol, Socket, Type};

use super::{TransportConfig, TransportError};

/// Largest UDP payload an IPv4 datagram can carry; also the cap on one GSO train.
pub(crate) const MAX_UDP_PAYLOAD: usize = 65_507;
/// Segments per GSO send. Linux accepted 64 (`UDP_MAX_SEGMENTS`) until 6.x raised it; 64 works
/// everywhere and already amortises the per-send cost well.
pub(crate) const GSO_MAX_SEGMENTS: usize = 64;
/// Receive-buffer payload size when GRO is on: a coalesced train is at most one 64 KiB skb.
pub(crate) const GRO_PAYLOAD_BYTES: usize = 65_536;
/// Room reserved for a peer's address: `sockaddr_in6` (28 bytes) rounded up to 8.
pub(crate) const NAME_CAP: usize = 32;

const USIZE: usize = size_of::<usize>();
const CMSG_HDR: usize = size_of::<libc::cmsghdr>();

const fn cmsg_align(n: usize) -> usize {
    (n + USIZE - 1) & !(USIZE - 1)
}

/// `CMSG_SPACE(sizeof(u16))`: one `UDP_SEGMENT` control message.
pub(crate) const GSO_CMSG_SPACE: usize = cmsg_align(CMSG_HDR) + cmsg_align(2);
/// Control space for received messages: one `UDP_GRO` int, with room to spare for any other
/// control message the kernel might add, so a surprise never truncates the one we need.
pub(crate) const RX_CMSG_SPACE: usize = 64;

/// A control-message buffer aligned like `cmsghdr`, sized for the largest one we use.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub(crate) struct CmsgBuf(pub [u8; RX_CMSG_SPACE]);

impl Default for CmsgBuf {
    fn default() -> Self {
        CmsgBuf([0; RX_CMSG_SPACE])
    }
}

/// Writes a `UDP_SEGMENT` control message telling the kernel to cut the send into `seg`-byte
/// datagrams. Returns the `msg_controllen` to use.
pub(crate) fn write_gso_cmsg(buf: &mut CmsgBuf, seg: u16) -> usize {
    let len = cmsg_align(CMSG_HDR) + 2; // CMSG_LEN(2)
    let b = &mut buf.0;
    b[..USIZE].copy_from_slice(&len.to_ne_bytes());
    b[USIZE..USIZE + 4].copy_from_slice(&libc::SOL_UDP.to_ne_bytes());
    b[USIZE + 4..USIZE + 8].copy_from_slice(&libc::UDP_SEGMENT.to_ne_bytes());
    let data = cmsg_align(CMSG_HDR);
    b[data..data + 2].copy_from_slice(&seg.to_ne_bytes());
    GSO_CMSG_SPACE
}

/// Finds the `UDP_GRO` segment size in a control buffer filled by the kernel.
///
/// Returns `None` when there is none or the buffer is malformed; never panics.
pub(crate) fn gro_segment_size(control: &[u8]) -> Option<usize> {
    let data_off = cmsg_align(CMSG_HDR);
    let mut off = 0usize;
    // Each round advances by at least CMSG_HDR bytes, so this ends within len/CMSG_HDR rounds.
    while control.len().saturating_sub(off) >= CMSG_HDR {
        let hdr = &control[off..off + CMSG_HDR];
        let len = usize::from_ne_bytes(hdr[..USIZE].try_into().ok()?);
        let level = i32::from_ne_bytes(hdr[USIZE..USIZE + 4].try_into().ok()?);
        let ty = i32::from_ne_bytes(hdr[USIZE + 4..USIZE + 8].try_into().ok()?);
        if len < CMSG_HDR || len > control.len() - off {
            return None;
        }
        if level == libc::SOL_UDP && ty == libc::UDP_GRO {
            let data = control.get(off + data_off..off + len)?;
            let seg = match data.len() {
                4.. => i32::from_ne_bytes(data[..4].try_into().ok()?).max(0) as usize,
                2..=3 => u16::from_ne_bytes(data[..2].try_into().ok()?) as usize,
                _ => return None,
            };
            return (seg > 0).then_some(seg);
        }
        off = off.checked_add(cmsg_align(len))?;
    }
    None
}

/// Encodes `addr` for `sendmsg`. On an IPv6 socket an IPv4 destination becomes its v4-mapped
/// form, so a dual-stack socket can reach both families.
pub(crate) fn encode_sockaddr(
    addr: SocketAddr,
    v6_socket: bool,
    out: &mut libc::sockaddr_storage,
) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) if !v6_socket => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: `sockaddr_storage` is larger than `sockaddr_in` and at least as aligned, and
            // `out` is a unique reference, so writing one in place of the other is in bounds.
            unsafe {
                std::ptr::from_mut(out)
                    .cast::<libc::sockaddr_in>()
                    .write(sin)
            };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V4(a) => encode_v6(a.ip().to_ipv6_mapped(), a.port(), 0, 0, out),
        SocketAddr::V6(a) => encode_v6(*a.ip(), a.port(), a.flowinfo(), a.scope_id(), out),
    }
}

fn encode_v6(
    ip: Ipv6Addr,
    port: u16,
    flowinfo: u32,
    scope_id: u32,
    out: &mut libc::sockaddr_storage,
) -> libc::socklen_t {
    let sin6 = libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: port.to_be(),
        sin6_flowinfo: flowinfo.to_be(),
        sin6_addr: libc::in6_addr {
            s6_addr: ip.octets(),
        },
        sin6_scope_id: scope_id,
    };
    // SAFETY: `sockaddr_storage` is larger than `sockaddr_in6` and at least as aligned, and `out`
    // is a unique reference, so writing one in place of the other is in bounds.
    unsafe {
        std::ptr::from_mut(out)
            .cast::<libc::sockaddr_in6>()
            .write(sin6)
    };
    size_of::<libc::sockaddr_in6>() as libc::socklen_t
}

/// Parses a socket address the kernel wrote (`msg_name`). v4-mapped IPv6 sources are reported
/// as IPv4, so replies and peer tables see one spelling per peer. `None` on anything malformed.
pub(crate) fn parse_sockaddr(bytes: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(bytes.get(..2)?.try_into().ok()?);
    match i32::from(family) {
        libc::AF_INET => {
            let b = bytes.get(..8)?;
            let port = u16::from_be_bytes([b[2], b[3]]);
            let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
            Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        }
        libc::AF_INET6 => {
            let b = bytes.get(..28)?;
            let port = u16::from_be_bytes([b[2], b[3]]);
            let flowinfo = u32::from_be_bytes(b[4..8].try_into().ok()?);
            let octets: [u8; 16] = b[8..24].try_into().ok()?;
            let scope_id = u32::from_ne_bytes(b[24..28].try_into().ok()?);
            let ip = Ipv6Addr::from(octets);
            match ip.to_ipv4_mapped() {
                Some(v4) => Some(SocketAddr::V4(SocketAddrV4::new(v4, port))),
                None => Some(SocketAddr::V6(SocketAddrV6::new(
                    ip, port, flowinfo, scope_id,
                ))),
            }
        }
        _ => None,
    }
}

/// Views a plain C struct as bytes, for handing kernel-written structures to the parsers above.
pub(crate) fn struct_bytes<T: Copy>(value: &T, len: usize) -> &[u8] {
    let len = len.min(size_of::<T>());
    // SAFETY: `value` is a live, initialised `T` (these are libc structs with no padding the
    // kernel leaves undefined: they were zeroed at allocation), and `len` is clamped to its size.
    unsafe { std::slice::from_raw_parts(std::ptr::from_ref(value).cast::<u8>(), len) }
}

/// The bound socket and which offloads it actually got.
pub(crate) struct SocketSetup {
    pub socket: Socket,
    pub local_addr: SocketAddr,
    pub v6: bool,
    /// `UDP_SEGMENT` is supported by this kernel (and was asked for).
    pub gso: bool,
    /// `UDP_GRO` was switched on (and was asked for).
    pub gro: bool,
}

/// Creates, configures and binds the UDP socket.
///
/// Buffer sizes first try `SO_*BUFFORCE`, which only root (CAP_NET_ADMIN) may use but which
/// ignores `net.core.[rw]mem_max`; the plain option is the fallback and is silently capped.
pub(crate) fn open_socket(cfg: &TransportConfig) -> Result<SocketSetup, TransportError> {
    let err = |what: &'static str| move |source: io::Error| TransportError::Socket { what, source };
    let domain = Domain::for_address(cfg.bind);
    let socket = Socket::new(domain, Type::DGRAM.nonblocking(), Some(Protocol::UDP))
        .map_err(err("socket"))?;
    let v6 = cfg.bind.is_ipv6();
    if v6 && cfg.bind.ip().is_unspecified() {
        // Dual stack, so one socket serves IPv4 peers too. Best effort: some hosts forbid it.
        let _ = socket.set_only_v6(false);
    }
    // SO_REUSEADDR only for a configured port: a node restarted at once must rebind it while
    // the dead process's socket may still be held (an io_uring ring lets go of its files
    // only when its teardown work has run). Never for port 0: on UDP the option lets the
    // kernel hand out a port another SO_REUSEADDR socket already holds, and unicast datagrams
    // then reach only one of the two (a churn shard whose primary never heard a thing, 1 run
    // in ~80 with 16 sockets).
    if cfg.bind.port() != 0 {
        socket
            .set_reuse_address(true)
            .map_err(err("SO_REUSEADDR"))?;
    }
    if cfg.sndbuf_bytes > 0 {
        set_buf(&socket, libc::SO_SNDBUFFORCE, cfg.sndbuf_bytes)
            .or_else(|_| socket.set_send_buffer_size(cfg.sndbuf_bytes))
            .map_err(err("SO_SNDBUF"))?;
    }
    if cfg.rcvbuf_bytes > 0 {
        set_buf(&socket, libc::SO_RCVBUFFORCE, cfg.rcvbuf_bytes)
            .or_else(|_| socket.set_recv_buffer_size(cfg.rcvbuf_bytes))
            .map_err(err("SO_RCVBUF"))?;
    }
    socket.bind(&cfg.bind.into()).map_err(err("bind"))?;
    let local_addr = socket
        .local_addr()
        .map_err(err("getsockname"))?
        .as_socket()
        .ok_or_else(|| TransportError::Socket {
            what: "getsockname",
            source: io::Error::new(io::ErrorKind::InvalidData, "not an IP socket address"),
        })?;
    let gso = cfg.gso && get_int(&socket, libc::SOL_UDP, libc::UDP_SEGMENT).is_ok();
    let gro = cfg.gro && set_int(&socket, libc::SOL_UDP, libc::UDP_GRO, 1).is_ok();
    Ok(SocketSetup {
        socket,
        local_addr: unmap(local_addr),
        v6,
        gso,
        gro,
    })
}

fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => addr,
        },
        v4 => v4,
    }
}

fn set_buf(socket: &Socket, opt: libc::c_int, bytes: usize) -> io::Result<()> {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    set_int(socket, libc::SOL_SOCKET, opt, v)
}

fn set_int(
    socket: &Socket,
    level: libc::c_int,
    opt: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: passes a pointer to a live c_int and its exact size; the fd is owned by `socket`.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            opt,
            std::ptr::from_ref(&v).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn get_int(socket: &Socket, level: libc::c_int, opt: libc::c_int) -> io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: passes a pointer to a live c_int and its size; the kernel writes at most `len`.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            level,
            opt,
            std::ptr::from_mut(&mut v).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(v)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Owned, page-aligned anonymous memory that the kernel reads or writes behind our back
/// (buffer rings, receive buffers).
///
/// It is held as a raw pointer, never as a Rust slice, so that the kernel writing one buffer
/// while we read another never overlaps a live Rust reference; slices are made only for a
/// region the kernel has handed back to us.
pub(crate) struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mmap {
    /// Maps `len` zeroed bytes (rounded up to whole pages by the kernel).
    pub(crate) fn new(len: usize) -> io::Result<Mmap> {
        let len = len.max(1);
        // SAFETY: an anonymous private mapping with no address hint touches no existing memory;
        // the result is checked for MAP_FAILED before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mmap { ptr, len })
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Borrows `len` bytes at `off`, or `None` if that runs past the mapping.
    ///
    /// # Safety
    /// Nothing (in particular the kernel) may write the region while the slice lives.
    pub(crate) unsafe fn slice(&self, off: usize, len: usize) -> Option<&[u8]> {
        if off.checked_add(len)? > self.len {
            return None;
        }
        // SAFETY: in bounds (checked above) of a live mapping; the caller guarantees no writer.
        Some(unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(off), len) })
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region mapped in `new`; owners drop this only after the
        // kernel can no longer access it (see the backends' Drop impls).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

// SAFETY: `Mmap` uniquely owns its mapping; the raw pointer is not shared with other Rust values,
// so moving it to another thread is as safe as moving a `Box<[u8]>`.
unsafe impl Send for Mmap {}

/// Errno of the last failed libc call.
pub(crate) fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_roundtrip_v4_v6_and_mapped() {
        let mut st: libc::sockaddr_storage =
            // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
            unsafe { std::mem::zeroed() };
        let cases: [SocketAddr; 3] = [
            "127.0.0.1:4000".parse().unwrap(),
            "[::1]:5000".parse().unwrap(),
            "[fe80::1%3]:6000".parse().unwrap(),
        ];
        for a in cases {
            let n = encode_sockaddr(a, a.is_ipv6(), &mut st);
            assert_eq!(parse_sockaddr(struct_bytes(&st, n as usize)), Some(a));
        }
        // An IPv4 destination on an IPv6 socket goes out v4-mapped and parses back as IPv4.
        let a: SocketAddr = "10.1.2.3:9".parse().unwrap();
        let n = encode_sockaddr(a, true, &mut st);
        assert_eq!(n as usize, size_of::<libc::sockaddr_in6>());
        assert_eq!(parse_sockaddr(struct_bytes(&st, n as usize)), Some(a));
    }

    /// Every socket bound to port 0 gets a port of its own. With SO_REUSEADDR set, Linux may
    /// hand out one already held: 400 sockets then collide in nearly every run (about 2.8
    /// expected collisions over the 28,232 ports of the default ephemeral range).
    #[test]
    fn sockets_bound_to_port_zero_never_share_a_port() {
        let cfg = TransportConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            sndbuf_bytes: 0,
            rcvbuf_bytes: 0,
            ..TransportConfig::default()
        };
        let mut ports = std::collections::HashSet::new();
        let mut held = Vec::new();
        for _ in 0..400 {
            let s = open_socket(&cfg).expect("a socket");
            assert!(
                ports.insert(s.local_addr.port()),
                "port {} handed out twice",
                s.local_addr.port()
            );
            held.push(s);
        }
    }

    #[test]
    fn parsers_reject_garbage_without_panicking() {
        assert_eq!(parse_sockaddr(&[]), None);
        assert_eq!(parse_sockaddr(&[2, 0, 1]), None);
        assert_eq!(gro_segment_size(&[]), None);
        assert_eq!(gro_segment_size(&[0xff; 40]), None);
        // Deterministic pseudo-random junk of every length.
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut buf = [0u8; 96];
        for n in 0..=buf.len() {
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            let _ = gro_segment_size(&buf[..n]);
            let _ = parse_sockaddr(&buf[..n]);
        }
    }

    #[test]
    fn gro_cmsg_is_found_after_another_cmsg() {
        let mut c = [0u8; 64];
        // First an unrelated cmsg (SOL_SOCKET/SO_MARK with a 4-byte int), then UDP_GRO = 1200.
        let first_len = CMSG_HDR + 4;
        c[..8].copy_from_slice(&first_len.to_ne_bytes());
        c[8..12].copy_from_slice(&libc::SOL_SOCKET.to_ne_bytes());
        c[12..16].copy_from_slice(&libc::SO_MARK.to_ne_bytes());
        let o = cmsg_align(first_len);
        c[o..o + 8].copy_from_slice(&(CMSG_HDR + 4).to_ne_bytes());
        c[o + 8..o + 12].copy_from_slice(&libc::SOL_UDP.to_ne_bytes());
        c[o + 12..o + 16].copy_from_slice(&libc::UDP_GRO.to_ne_bytes());
        c[o + 16..o + 20].copy_from_slice(&1200i32.to_ne_bytes());
        assert_eq!(gro_segment_size(&c[..o + 24]), Some(1200));
        // Truncated: the length field runs past the buffer.
        assert_eq!(gro_segment_size(&c[..o + 10]), None);
    }

    #[test]
    fn gso_cmsg_layout() {
        let mut b = CmsgBuf::default();
        assert_eq!(write_gso_cmsg(&mut b, 1472), GSO_CMSG_SPACE);
        assert_eq!(
            usize::from_ne_bytes(b.0[..8].try_into().unwrap()),
            CMSG_HDR + 2
        );
        assert_eq!(u16::from_ne_bytes(b.0[16..18].try_into().unwrap()), 1472);
    }
}
