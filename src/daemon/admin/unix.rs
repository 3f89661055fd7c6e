//! The Unix-socket admin listener: a stream socket at `<admin.socket_dir>/<id>.sock`, mode 0660,
//! that serves only the peers the kernel vouches for (`SO_PEERCRED`): root, the daemon's own
//! user and members of the socket's group. One JSON request per line, one JSON reply per line;
//! a connection may carry several requests, answered in order.
//!
//! The node's event loop polls it, so nothing here blocks: every socket is non-blocking, at
//! most [`MAX_CONNECTIONS`] are open, each holds at most one request and one reply, and each
//! poll answers at most one request per connection.

use super::config::check_socket_dir;
use super::{AdminStats, MAX_REQUEST_BYTES, RefusalLog, encode_reply};
use serde_json::{Value, json};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Largest reply on the stream socket: a status of about 40,000 channels. A status of more
/// comes in pages (`next_channel`), as over UDP at one datagram; any other reply this long is
/// an error.
pub const MAX_STREAM_REPLY_BYTES: usize = 16 << 20;
/// Connections served at once; more are answered with an error and closed, so that a stuck
/// or hostile local client cannot grow the daemon's memory.
pub const MAX_CONNECTIONS: usize = 16;
/// New connections taken per poll.
const MAX_ACCEPTS_PER_POLL: usize = 8;
/// A connection that neither sends nor takes a byte for this long is closed, so that idle
/// clients cannot hold every slot.
const IDLE_TIMEOUT_US: u64 = 10_000_000;
/// A connection active (accepted, read from or written to) this recently is [`UnixAdmin::busy`];
/// one idle longer waits for the normal poll period.
const BUSY_WINDOW_US: u64 = 5_000;
/// Bytes read per `read` call; at most [`MAX_READS_PER_POLL`] calls per connection per poll.
const READ_CHUNK_BYTES: usize = 16 * 1024;
const MAX_READS_PER_POLL: usize = 8;
/// Socket file mode: owner and group may connect, others may not.
const SOCKET_MODE: u32 = 0o660;
/// Mode of a socket directory the daemon creates.
const DIR_MODE: u32 = 0o750;

/// The credentials the kernel recorded for a connected peer.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

struct Conn {
    stream: UnixStream,
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    /// Close once the reply is out: the peer closed its side or sent an oversized request.
    closing: bool,
    eof: bool,
    last_active_us: u64,
}

/// The listening socket and its open connections.
pub struct UnixAdmin {
    listener: UnixListener,
    path: PathBuf,
    /// (device, inode) of the socket file bound: removed at drop only while still ours.
    ident: (u64, u64),
    /// The socket file's group: its members are served.
    gid: u32,
    /// The daemon's effective uid: that user is served.
    uid: u32,
    conns: Vec<Conn>,
    chunk: Vec<u8>,
}

impl std::fmt::Debug for UnixAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnixAdmin")
            .field("path", &self.path)
            .field("gid", &self.gid)
            .field("connections", &self.conns.len())
            .finish()
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Connects without blocking: a Unix stream connect either completes at once or fails with
/// `WouldBlock` when the listener's backlog is full (a stopped daemon), which must not hang
/// the caller. Returns a blocking stream.
pub fn connect(path: &Path) -> io::Result<UnixStream> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.connect(&SockAddr::unix(path)?)?;
    socket.set_nonblocking(false)?;
    Ok(UnixStream::from(socket))
}

/// The peer's credentials, as recorded by the kernel when it connected.
pub fn peer_cred(stream: &UnixStream) -> io::Result<Peer> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: the fd is open for the call (borrowed from `stream`); SO_PEERCRED writes at most
    // `len` bytes, one `ucred`, into `cred`, which outlives the call, and updates `len`.
    let r = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    if len as usize != size_of::<libc::ucred>() {
        return Err(io::Error::other("SO_PEERCRED returned a short ucred"));
    }
    Ok(Peer {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// `SO_PEERGROUPS` (Linux 4.13): the peer's supplementary groups. The value of the generic
/// and x86 ABIs; architectures that differ (mips, sparc, parisc) get `ENOPROTOOPT` at worst,
/// and then only the peer's primary group counts.
const SO_PEERGROUPS: libc::c_int = 59;
/// Most supplementary groups a process can have (`NGROUPS_MAX`).
const MAX_GROUPS: usize = 65_536;

/// The peer's supplementary groups.
fn peer_groups(stream: &UnixStream) -> io::Result<Vec<libc::gid_t>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 32];
    loop {
        let mut len = (groups.len() * size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: the fd is open for the call; the kernel writes at most `len` bytes into
        // `groups`, which holds exactly `len` bytes and outlives the call, and updates `len`
        // (to the size needed, with ERANGE, when the buffer is too small).
        let r = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / size_of::<libc::gid_t>();
        if r == 0 {
            groups.truncate(n.min(groups.len()));
            return Ok(groups);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ERANGE) && n > groups.len() && n <= MAX_GROUPS {
            groups.resize(n, 0);
            continue;
        }
        return Err(e);
    }
}

/// Writes a one-line reply without blocking, at most once; for connections about to close.
fn write_and_close(stream: &UnixStream, v: Value) {
    let mut bytes = serde_json::to_vec(&v).unwrap_or_default();
    bytes.push(b'\n');
    let _ = (&*stream).write(&bytes);
}

impl UnixAdmin {
    /// Creates the socket directory if missing, replaces a stale socket left by a killed
    /// daemon, and binds. Refuses a socket another live process serves, a path that is not a
    /// socket, and an unsafe directory (see [`check_socket_dir`]). Messages name
    /// `admin.socket_dir` where the directory is at fault.
    pub fn bind(path: &Path) -> Result<UnixAdmin, String> {
        let shown = path.display();
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let uid = euid();
        if let Err(e) = std::fs::metadata(dir) {
            if e.kind() != io::ErrorKind::NotFound {
                return Err(format!("admin.socket_dir: {}: {e}", dir.display()));
            }
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(dir)
                .map_err(|e| {
                    format!(
                        "admin.socket_dir: cannot create {}: {e} (set [admin] socket_dir to a directory this user may create)",
                        dir.display()
                    )
                })?;
        }
        check_socket_dir(dir, uid)?;
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                match connect(path) {
                    Ok(_) => {
                        return Err(format!(
                            "admin socket {shown}: another process serves it (is a node with this id already running?)"
                        ));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Err(format!(
                            "admin socket {shown}: another process listens on it (its backlog is full: stopped?)"
                        ));
                    }
                    // Nobody listens: a socket left by a daemon that was killed.
                    Err(_) => {}
                }
                std::fs::remove_file(path).map_err(|e| {
                    format!("admin socket {shown}: cannot remove the stale socket: {e}")
                })?;
            }
            Ok(_) => {
                return Err(format!(
                    "admin socket {shown}: exists and is not a socket; remove it or change admin.socket_dir"
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("admin socket {shown}: {e}")),
        }
        let listener =
            UnixListener::bind(path).map_err(|e| format!("admin socket {shown}: {e}"))?;
        let setup = || -> io::Result<std::fs::Metadata> {
            listener.set_nonblocking(true)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))?;
            std::fs::metadata(path)
        };
        let meta = match setup() {
            Ok(m) => m,
            Err(e) => {
                let _ = std::fs::remove_file(path);
                return Err(format!("admin socket {shown}: {e}"));
            }
        };
        Ok(UnixAdmin {
            listener,
            path: path.to_owned(),
            ident: (meta.dev(), meta.ino()),
            gid: meta.gid(),
            uid,
            conns: Vec::new(),
            chunk: vec![0; READ_CHUNK_BYTES],
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Whether a connection was active within [`BUSY_WINDOW_US`]. Bounded: a client that
    /// connects and then idles makes the node poll faster for that window only.
    pub fn busy(&self, now_us: u64) -> bool {
        self.conns
            .iter()
            .any(|c| now_us.saturating_sub(c.last_active_us) < BUSY_WINDOW_US)
    }

    /// Why `peer` may not use the admin protocol, if it may not.
    fn refusal(&self, stream: &UnixStream, peer: &Peer) -> Option<String> {
        if peer.uid == 0 || peer.uid == self.uid || peer.gid == self.gid {
            return None;
        }
        match peer_groups(stream) {
            Ok(g) if g.contains(&self.gid) => None,
            Ok(_) => Some(format!(
                "uid {} is not root, not the daemon's uid {} and not in the socket's group {}",
                peer.uid, self.uid, self.gid
            )),
            Err(e) => Some(format!(
                "uid {} is not root, not the daemon's uid {}, its primary group is not the socket's group {} (supplementary groups unknown: {e})",
                peer.uid, self.uid, self.gid
            )),
        }
    }

    /// Accepts new connections, sends pending replies, and answers at most `budget` requests,
    /// at most one per connection. Returns how many were answered.
    pub fn poll(
        &mut self,
        budget: usize,
        now_us: u64,
        stats: &mut AdminStats,
        refusals: &mut RefusalLog,
        handle: &mut dyn FnMut(&[u8], &mut AdminStats) -> Value,
    ) -> usize {
        self.accept(now_us, stats, refusals);
        let mut handled = 0;
        let mut i = 0;
        while i < self.conns.len() {
            let may_answer = handled < budget;
            match serve(
                &mut self.conns[i],
                &mut self.chunk,
                may_answer,
                now_us,
                stats,
                handle,
            ) {
                Served::Keep { answered } => {
                    handled += usize::from(answered);
                    i += 1;
                }
                Served::Close { answered } => {
                    handled += usize::from(answered);
                    self.conns.swap_remove(i);
                }
            }
        }
        handled
    }

    fn accept(&mut self, now_us: u64, stats: &mut AdminStats, refusals: &mut RefusalLog) {
        for _ in 0..MAX_ACCEPTS_PER_POLL {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // ECONNABORTED, EMFILE and the like: try again at the next poll.
                Err(_) => {
                    stats.reply_errors += 1;
                    return;
                }
            };
            if stream.set_nonblocking(true).is_err() {
                stats.reply_errors += 1;
                continue;
            }
            let peer = match peer_cred(&stream) {
                Ok(p) => p,
                Err(e) => {
                    stats.refused_peer += 1;
                    refusals.refuse(
                        now_us,
                        format_args!("refused a Unix admin connection: no peer credentials: {e}"),
                    );
                    continue;
                }
            };
            if let Some(why) = self.refusal(&stream, &peer) {
                stats.refused_peer += 1;
                refusals.refuse(
                    now_us,
                    format_args!(
                        "refused a Unix admin connection from pid {} uid {} gid {}: {why}",
                        peer.pid, peer.uid, peer.gid
                    ),
                );
                write_and_close(
                    &stream,
                    json!({"ok": false, "error": format!("permission denied: {why}")}),
                );
                continue;
            }
            if self.conns.len() >= MAX_CONNECTIONS {
                stats.connections_dropped += 1;
                write_and_close(
                    &stream,
                    json!({"ok": false, "error": format!("busy: {MAX_CONNECTIONS} admin connections are open; retry")}),
                );
                continue;
            }
            self.conns.push(Conn {
                stream,
                input: Vec::new(),
                output: Vec::new(),
                written: 0,
                closing: false,
                eof: false,
                last_active_us: now_us,
            });
        }
    }
}

enum Served {
    Keep { answered: bool },
    Close { answered: bool },
}

/// Sends what is pending; else reads and, when a whole request is in and `may_answer`,
/// answers it.
fn serve(
    c: &mut Conn,
    chunk: &mut [u8],
    may_answer: bool,
    now_us: u64,
    stats: &mut AdminStats,
    handle: &mut dyn FnMut(&[u8], &mut AdminStats) -> Value,
) -> Served {
    let idle = now_us.saturating_sub(c.last_active_us) > IDLE_TIMEOUT_US;
    match flush(c, now_us) {
        Err(()) => return Served::Close { answered: false },
        Ok(false) if idle => {
            stats.connections_dropped += 1;
            return Served::Close { answered: false };
        }
        Ok(false) => return Served::Keep { answered: false },
        Ok(true) if c.closing => return Served::Close { answered: false },
        Ok(true) => {}
    }
    if !c.eof && !c.input.contains(&b'\n') {
        for _ in 0..MAX_READS_PER_POLL {
            match (&c.stream).read(chunk) {
                Ok(0) => {
                    c.eof = true;
                    break;
                }
                Ok(n) => {
                    c.input.extend_from_slice(&chunk[..n]);
                    c.last_active_us = now_us;
                    if chunk[..n].contains(&b'\n') || c.input.len() > MAX_REQUEST_BYTES {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Served::Close { answered: false },
            }
        }
    }
    let line_end = c.input.iter().position(|&b| b == b'\n');
    let oversized = line_end.map_or(c.input.len(), |p| p) > MAX_REQUEST_BYTES;
    if oversized {
        stats.requests += 1;
        stats.malformed += 1;
        c.input = Vec::new();
        c.closing = true;
        c.output = encode_line(
            json!({"ok": false, "error": format!("request longer than {MAX_REQUEST_BYTES} bytes")}),
        );
        return match flush(c, now_us) {
            Ok(true) | Err(()) => Served::Close { answered: false },
            Ok(false) => Served::Keep { answered: false },
        };
    }
    let request: Option<Vec<u8>> = match line_end {
        Some(p) if may_answer => {
            let mut line: Vec<u8> = c.input.drain(..=p).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            Some(line)
        }
        // What came before the peer closed its side is the last request.
        None if c.eof && may_answer && !c.input.is_empty() => {
            c.closing = true;
            Some(std::mem::take(&mut c.input))
        }
        None if c.eof && c.input.is_empty() => return Served::Close { answered: false },
        _ if idle => {
            stats.connections_dropped += 1;
            return Served::Close { answered: false };
        }
        _ => None,
    };
    let Some(request) = request else {
        return Served::Keep { answered: false };
    };
    c.output = encode_line(handle(&request, stats));
    c.last_active_us = now_us;
    match flush(c, now_us) {
        Err(()) => Served::Close { answered: true },
        Ok(true) if c.closing => Served::Close { answered: true },
        Ok(_) => Served::Keep { answered: true },
    }
}

fn encode_line(v: Value) -> Vec<u8> {
    let mut bytes = encode_reply(v, MAX_STREAM_REPLY_BYTES);
    bytes.push(b'\n');
    bytes
}

/// Writes what the socket takes of the pending reply. `Ok(true)`: nothing left to send;
/// `Err`: the peer is gone.
fn flush(c: &mut Conn, now_us: u64) -> Result<bool, ()> {
    while c.written < c.output.len() {
        match (&c.stream).write(&c.output[c.written..]) {
            Ok(0) => return Err(()),
            Ok(n) => {
                c.written += n;
                c.last_active_us = now_us;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(()),
        }
    }
    c.output = Vec::new();
    c.written = 0;
    Ok(true)
}

impl Drop for UnixAdmin {
    /// Removes the socket file, unless another daemon has replaced it since.
    fn drop(&mut self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path)
            && (m.dev(), m.ino()) == self.ident
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
