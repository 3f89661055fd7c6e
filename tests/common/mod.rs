//! Helpers shared by the integration tests that drive real daemons.

use serde_json::{Value, json};
use statesync::auth::{Auth, LinkKeys};
use statesync::daemon::admin::request_unix;
use statesync::wire::{Entry, FrameBuilder, encode_entry};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

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
