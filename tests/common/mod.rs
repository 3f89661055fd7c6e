//! Helpers shared by the integration tests that drive real daemons.

// Each test file uses some of them.
#![allow(dead_code)]

use serde_json::{Value, json};
use statesync::auth::{Auth, LinkKeys};
use statesync::daemon::admin::request_unix;
use statesync::wire::{Entry, FrameBuilder, encode_entry};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

/// Distinct free loopback UDP addresses (all held until every one is picked).
pub fn free_udp(n: usize) -> Vec<SocketAddr> {
    let socks: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    socks.iter().map(|s| s.local_addr().unwrap()).collect()
}

/// A node's status over its Unix admin socket, if it answers `ok`.
pub fn status(sock: &Path) -> Option<Value> {
    request_unix(sock, &json!({"cmd": "status"}), Duration::from_millis(300))
        .ok()
        .filter(|v| v["ok"] == true)
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A load client's change: one public and one private entry.
pub fn submit_frame(buf: &mut [u8], seq: u64, channel: u32) -> usize {
    let value = format!("value-{seq}");
    let mut public = Vec::new();
    encode_entry(
        &mut public,
        &Entry {
            section: (seq % 4) as u8,
            key: seq,
            value: Some(value.as_bytes()),
            private: false,
        },
    );
    let mut private = Vec::new();
    encode_entry(
        &mut private,
        &Entry {
            section: 0,
            key: 1_000_000 + seq,
            value: Some(b"secret"),
            private: true,
        },
    );
    // Packet sequence 1 is the session opener's (see `Submitter`).
    let mut fb = FrameBuilder::new(buf, 900, 256, seq + 1);
    assert!(fb.push_submit(channel, seq, (&public, 1), (&private, 1)));
    fb.finish()
}

/// Submitter 900 with its key file: opens a session with each control unit (an opener, then
/// the unit's hello), then seals every frame for the unit it goes to.
pub struct Submitter {
    sock: UdpSocket,
    auth: Auth,
    cus: Vec<(u32, SocketAddr)>,
}

impl Submitter {
    /// `cus`: each control unit's ID and data address; `key_file`: submitter 900's keys.
    pub fn new(cus: &[(u32, SocketAddr)], key_file: &Path) -> Submitter {
        let keys = LinkKeys::load(key_file, 900).expect("submitter key file");
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut s = Submitter {
            sock,
            auth: Auth::new(&keys),
            cus: cus.to_vec(),
        };
        let mut buf = vec![0u8; 256];
        let deadline = Instant::now() + Duration::from_secs(5);
        while s.cus.iter().any(|&(id, _)| s.auth.peer_boot(id) == 0) {
            assert!(Instant::now() < deadline, "no hello from the control units");
            for (id, addr) in s.cus.clone() {
                let n = FrameBuilder::new(&mut buf, 900, 0, 1).finish();
                // The opener is sealed once per unit (its sequence number may not repeat).
                if s.auth.peer_boot(id) == 0 && s.auth.seal(id, &mut buf[..n]) {
                    s.sock.send_to(&buf[..n], addr).unwrap();
                }
            }
            let mut rx = [0u8; 256];
            if let Ok((n, src)) = s.sock.recv_from(&mut rx) {
                let id = s.cus.iter().find(|c| c.1 == src).map(|c| c.0);
                s.auth.open(0, src, id, &rx[..n]);
            }
        }
        s
    }

    pub fn send(&mut self, frame: &mut [u8]) {
        for (id, addr) in self.cus.clone() {
            assert!(self.auth.seal(id, frame));
            self.sock.send_to(frame, addr).unwrap();
        }
    }
}

/// The daemons of one test, each started from its command line and logging to its own file in
/// the test's directory (`<name>.log`; a restart under the same name appends). Kills what still
/// runs when dropped, and prints every log if the test is failing.
pub struct Children {
    pub dir: std::path::PathBuf,
    procs: Vec<(String, std::process::Child)>,
}

impl Children {
    /// A fresh directory for the test `name`.
    pub fn new(name: &str) -> Children {
        let dir = std::env::temp_dir().join(format!("statesync-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Children {
            dir,
            procs: Vec::new(),
        }
    }

    pub fn log_path(&self, name: &str) -> std::path::PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    /// Starts `statesync ARGS` as `name`.
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(&mut self, name: &str, args: &[S]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(name))
            .unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_statesync"))
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        self.procs.push((name.to_owned(), child));
    }

    /// SIGKILL: a crash, no clean shutdown. The process is reaped and forgotten (its log
    /// stays).
    pub fn crash(&mut self, name: &str) {
        let i = self
            .procs
            .iter()
            .position(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} is not running"));
        let (_, mut c) = self.procs.remove(i);
        c.kill().unwrap();
        c.wait().unwrap();
    }

    /// The process ID of the running child `name`.
    pub fn pid(&self, name: &str) -> u32 {
        self.procs
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} is not running"))
            .1
            .id()
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log_path(name)).unwrap_or_default()
    }

    /// Every log of the test's directory, each under its name.
    pub fn logs(&self) -> String {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|f| f.strip_suffix(".log").map(str::to_owned))
            .collect();
        names.sort();
        names
            .iter()
            .map(|n| format!("---- {n} ----\n{}", self.log(n)))
            .collect()
    }

    /// SIGTERMs every running child and waits (up to `timeout`) for each to exit: its exit
    /// status, or `None` if it did not.
    pub fn terminate(
        &mut self,
        timeout: Duration,
    ) -> Vec<(String, Option<std::process::ExitStatus>)> {
        for (_, c) in &self.procs {
            // SAFETY: plain kill(2) on a child we spawned and have not reaped yet.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        }
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        for (name, c) in &mut self.procs {
            let status = loop {
                match c.try_wait().unwrap() {
                    Some(s) => break Some(s),
                    None if Instant::now() >= deadline => break None,
                    None => std::thread::sleep(Duration::from_millis(10)),
                }
            };
            out.push((name.clone(), status));
        }
        out
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, c) in &mut self.procs {
            if c.try_wait().ok().flatten().is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
