//! End to end over loopback: the real `statesync` binary as primary, standby and client, a fake
//! submitter, the admin protocol, an operator takeover and a clean SIGTERM shutdown.

use serde_json::{Value, json};
use statesync::daemon::admin::request;
use statesync::wire::{Entry, FrameBuilder, encode_entry};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_statesync");

/// Kills every child still running when dropped (on any failure path), and prints their logs
/// if the test is failing.
struct Children {
    dir: PathBuf,
    procs: Vec<(String, Child)>,
}

impl Children {
    fn new(name: &str) -> Children {
        let dir = std::env::temp_dir().join(format!("statesync-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Children {
            dir,
            procs: Vec::new(),
        }
    }

    fn spawn(&mut self, name: &str, args: &[&str]) {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        self.procs.push((name.to_owned(), child));
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for (name, _) in &self.procs {
            let text =
                std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
            s += &format!("---- {name} ----\n{text}");
        }
        s
    }

    /// SIGTERMs every child and waits (up to `timeout`) for each to exit.
    fn terminate(&mut self, timeout: Duration) -> Vec<(String, Option<ExitStatus>)> {
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

/// Distinct free loopback UDP ports (all held until every one is picked).
fn free_ports(n: usize) -> Vec<u16> {
    let socks: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    socks
        .iter()
        .map(|s| s.local_addr().unwrap().port())
        .collect()
}

fn status(addr: SocketAddr) -> Option<Value> {
    request(addr, &json!({"cmd": "status"}), Duration::from_millis(300))
        .ok()
        .filter(|v| v["ok"] == true)
}

/// Polls `f` until it returns `Some` or `timeout` passes.
fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn role_is(addr: SocketAddr, role: &str) -> Option<Value> {
    status(addr).filter(|v| v["role"] == role)
}

struct Lab {
    path: PathBuf,
    cu_data: [SocketAddr; 2],
    cu_admin: [SocketAddr; 2],
    client_admin: SocketAddr,
}

fn write_config(dir: &Path) -> Lab {
    let p = free_ports(6);
    let a = |i: usize| -> SocketAddr { format!("127.0.0.1:{}", p[i]).parse().unwrap() };
    // Generous timeouts: the test machine may be busy, and a spurious failover would make
    // the standby primary before the operator asks.
    let text = format!(
        r#"
[[control_units]]
id = 1
addr = "{}"
admin = "{}"
[[control_units]]
id = 2
addr = "{}"
admin = "{}"
[[clients]]
id = 100
addr = "{}"
admin = "{}"
channels = [0, 1, 2]
[submitters]
ids = [900]
[timing]
heartbeat_ms = 20
failover_timeout_ms = 1000
drop_timeout_ms = 2000
query_timeout_ms = 100
rto_ms = 50
"#,
        a(0),
        a(1),
        a(2),
        a(3),
        a(4),
        a(5)
    );
    let path = dir.join("lab.toml");
    std::fs::write(&path, text).unwrap();
    Lab {
        path,
        cu_data: [a(0), a(2)],
        cu_admin: [a(1), a(3)],
        client_admin: a(5),
    }
}

/// A load client's change: one public and one private entry.
fn submit_frame(buf: &mut [u8], seq: u64, channel: u32) -> usize {
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
    let mut fb = FrameBuilder::new(buf, 900, 256, seq);
    assert!(fb.push_submit(channel, seq, (&public, 1), (&private, 1)));
    fb.finish()
}

fn digests(v: &Value, field: &str) -> Vec<(u64, String)> {
    v["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["channel"].as_u64().unwrap(),
                c[field].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn primary_standby_client_submit_takeover_sigterm() {
    let t0 = Instant::now();
    let mut kids = Children::new("daemons");
    let lab = write_config(&kids.dir);
    let cfg = lab.path.to_str().unwrap().to_owned();
    let up = Duration::from_secs(5);

    kids.spawn("primary", &["primary", "--config", &cfg, "--id", "1"]);
    wait_for("primary up", up, || role_is(lab.cu_admin[0], "primary"));
    kids.spawn("standby", &["standby", "--config", &cfg, "--id", "2"]);
    kids.spawn("client", &["client", "--config", &cfg, "--id", "100"]);
    wait_for("standby up", up, || role_is(lab.cu_admin[1], "standby"));
    // The standby is in the primary's sync set (it may have had to re-join by transfer).
    wait_for("standby in sync set", up, || {
        role_is(lab.cu_admin[0], "primary").filter(|v| v["sync_mask"].as_u64() == Some(2))
    });
    let c = wait_for("client up", up, || status(lab.client_admin));
    assert_eq!(c["kind"], "client");
    assert_eq!(c["epoch"], 256);

    // Fake submitter 900: every change to both control units; the primary takes it.
    let sub = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut buf = vec![0u8; 1472];
    let n_submits = 30u64;
    for seq in 1..=n_submits {
        let len = submit_frame(&mut buf, seq, (seq % 3) as u32);
        for dst in lab.cu_data {
            sub.send_to(&buf[..len], dst).unwrap();
        }
    }
    let p = wait_for("client digests equal the primary's", up, || {
        let p = status(lab.cu_admin[0])?;
        let c = status(lab.client_admin)?;
        (p["submits"]["accepted"].as_u64() == Some(n_submits)
            && digests(&p, "public_digest") == digests(&c, "public_digest"))
        .then_some(p)
    });
    assert_eq!(p["role"], "primary");
    let chans = p["channels"].as_array().unwrap();
    assert_eq!(chans.len(), 3);
    for ch in chans {
        assert_eq!(ch["next_op"], n_submits / 3 + 1, "{ch}");
    }
    // Committed everywhere, and the standby holds the same full state (private entries too).
    wait_for("standby state equals the primary's", up, || {
        let p = status(lab.cu_admin[0])?;
        let s = status(lab.cu_admin[1])?;
        let committed = p["channels"]
            .as_array()?
            .iter()
            .all(|c| c["commit"] == n_submits / 3);
        (committed && digests(&p, "full_digest") == digests(&s, "full_digest")).then_some(())
    });
    let s = status(lab.cu_admin[1]).unwrap();
    assert_eq!(
        s["submits"]["rejected"], n_submits,
        "the standby refuses submissions"
    );

    // The CLI status command, human and JSON.
    let out = Command::new(BIN)
        .args(["status", &lab.cu_admin[0].to_string()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("role primary"), "{text}");
    assert!(
        text.contains(chans[0]["public_digest"].as_str().unwrap()),
        "{text}"
    );
    let out = Command::new(BIN)
        .args(["status", &lab.client_admin.to_string(), "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kind"], "client");

    // Operator takeover of the standby through `statesync switchover`.
    let out = Command::new(BIN)
        .args(["switchover", "--standby", &lab.cu_admin[1].to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "switchover failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = wait_for("standby is primary of a higher epoch", up, || {
        role_is(lab.cu_admin[1], "primary").filter(|v| {
            v["epoch"].as_u64().unwrap() > 256 && !v["failover"]["finished_unix_us"].is_null()
        })
    });
    let f = &s["failover"];
    assert!(f["started_unix_us"].as_u64().unwrap() <= f["finished_unix_us"].as_u64().unwrap());
    let new_epoch = s["epoch"].as_u64().unwrap();
    // The client follows the new primary and still agrees on every digest.
    wait_for("client follows the new primary", up, || {
        let c = status(lab.client_admin)?;
        let s = status(lab.cu_admin[1])?;
        (c["epoch"] == new_epoch && digests(&s, "public_digest") == digests(&c, "public_digest"))
            .then_some(())
    });

    for (name, st) in kids.terminate(Duration::from_secs(3)) {
        let st = st.unwrap_or_else(|| panic!("{name} did not exit after SIGTERM"));
        assert_eq!(st.code(), Some(0), "{name} exited with {st}");
    }
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t0.elapsed()
    );
}

#[test]
fn bad_config_exits_2_naming_the_field() {
    let kids = Children::new("badcfg");
    let path = kids.dir.join("bad.toml");
    std::fs::write(
        &path,
        r#"
[[control_units]]
id = 1
addr = "127.0.0.1:1"
admin = "127.0.0.1:2"
[[clients]]
id = 100
addr = "127.0.0.1:3"
admin = "127.0.0.1:4"
channels = [0, 2]
"#,
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["primary", "--config", path.to_str().unwrap(), "--id", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("clients[0].channels"), "{err}");

    // A good config but the wrong id for the mode.
    std::fs::write(
        &path,
        "[[control_units]]\nid = 1\naddr = \"127.0.0.1:1\"\nadmin = \"127.0.0.1:2\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["client", "--config", path.to_str().unwrap(), "--id", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--id 1"), "{err}");
}

/// SIGKILLs one child (a crash: no clean shutdown) and waits for it.
fn crash(kids: &mut Children, name: &str) {
    let (_, c) = kids
        .procs
        .iter_mut()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name} is not running"));
    c.kill().unwrap();
    c.wait().unwrap();
}

fn epoch_in_file(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Issue 10 item 6: with `[state] dir`, a control unit persists the highest epoch it has seen
/// and a restarted one reads it back: its status never shows a lower one, its next takeover is
/// above it, and a corrupt state file stops it from starting.
#[test]
fn restarted_control_unit_keeps_its_epoch() {
    let mut kids = Children::new("epochstate");
    let lab = write_config(&kids.dir);
    let mut text = std::fs::read_to_string(&lab.path).unwrap();
    text += "[state]\ndir = \"state\"\n";
    std::fs::write(&lab.path, text).unwrap();
    let cfg = lab.path.to_str().unwrap().to_owned();
    let file = |id: u32| kids.dir.join("state").join(format!("{id}.epoch"));
    let (file1, file2) = (file(1), file(2));
    let up = Duration::from_secs(5);
    // The primary counts the standby in its sync set, and the standby knows it (may take over).
    let in_sync = |primary: usize, standby: usize| {
        wait_for("standby in the sync set", up, || {
            role_is(lab.cu_admin[primary], "primary").filter(|v| v["sync_mask"] == 1 << standby)?;
            status(lab.cu_admin[standby]).filter(|v| v["eligible"] == true)
        })
    };

    kids.spawn("cu1", &["primary", "--config", &cfg, "--id", "1"]);
    wait_for("primary up", up, || role_is(lab.cu_admin[0], "primary"));
    kids.spawn("cu2", &["standby", "--config", &cfg, "--id", "2"]);
    in_sync(0, 1);
    assert_eq!(epoch_in_file(&file1), Some(256));
    assert_eq!(epoch_in_file(&file2), Some(256));

    // Unit 2 takes over: a new epoch, persisted by both.
    let v = request(
        lab.cu_admin[1],
        &json!({"cmd": "takeover"}),
        Duration::from_secs(1),
    )
    .unwrap();
    let e2 = v["epoch"].as_u64().unwrap();
    assert!(e2 > 256, "{v}");
    in_sync(1, 0);
    assert_eq!(epoch_in_file(&file2), Some(e2));
    assert_eq!(epoch_in_file(&file1), Some(e2));

    // Crash unit 2 and restart it: before it hears anyone it already knows its epoch.
    crash(&mut kids, "cu2");
    kids.spawn(
        "cu2-again",
        &["standby", "--config", &cfg, "--id", "2", "--rejoin"],
    );
    let s = wait_for("restarted unit 2 answers", up, || status(lab.cu_admin[1]));
    assert!(s["highest_epoch"].as_u64().unwrap() >= e2, "{s}");
    let log = std::fs::read_to_string(kids.dir.join("cu2-again.log")).unwrap();
    assert!(
        log.contains(&format!("restored highest epoch {e2}")) || s["epoch"].as_u64().unwrap() > e2,
        "{log}"
    );

    // Unit 1 takes over from the lost primary; unit 2 re-joins it.
    let e1 = wait_for("unit 1 primary of a later epoch", up, || {
        role_is(lab.cu_admin[0], "primary")
            .and_then(|v| v["epoch"].as_u64())
            .filter(|&e| e > e2)
    });
    in_sync(0, 1);
    let s = status(lab.cu_admin[1]).unwrap();
    assert_eq!(s["epoch"], e1);
    assert_eq!(s["highest_epoch"], e1);

    // Unit 2's next candidacy is above everything it persisted.
    let v = request(
        lab.cu_admin[1],
        &json!({"cmd": "takeover"}),
        Duration::from_secs(1),
    )
    .unwrap();
    let e3 = v["epoch"].as_u64().unwrap();
    assert!(e3 > e1 && e3 > e2, "{v}");
    wait_for("unit 2 primary again", up, || {
        role_is(lab.cu_admin[1], "primary")
    });
    assert_eq!(epoch_in_file(&file2), Some(e3));

    // A corrupt state file: unit 2 refuses to start, naming the file.
    crash(&mut kids, "cu2-again");
    std::fs::write(&file2, "not an epoch\n").unwrap();
    let out = Command::new(BIN)
        .args(["standby", "--config", &cfg, "--id", "2", "--rejoin"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&file2.display().to_string()), "{err}");

    // A unit that has seen a later epoch cannot start in the initial one.
    crash(&mut kids, "cu1");
    let out = Command::new(BIN)
        .args(["primary", "--config", &cfg, "--id", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&file1.display().to_string()) && err.contains("--rejoin"),
        "{err}"
    );
}
