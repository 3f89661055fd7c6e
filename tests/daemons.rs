//! End to end over loopback: the real `statesync` binary as primary, standby and client, a fake
//! submitter, the admin protocol, an operator takeover and a clean SIGTERM shutdown; and the
//! admin sockets' protection: strangers refused on the Unix socket, no control and no amplified
//! reply over UDP without the token.

mod common;

use common::{Children, Submitter, status, submit_frame, wait_for};
use serde_json::{Value, json};
use statesync::auth::{Auth, LinkKeys};
use statesync::daemon::admin::request_unix;
use statesync::wire::FrameBuilder;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_statesync");

fn role_is(sock: &Path, role: &str) -> Option<Value> {
    status(sock).filter(|v| v["role"] == role)
}

struct Lab {
    path: PathBuf,
    cu_data: [SocketAddr; 2],
    /// The line card's data address.
    client_data: SocketAddr,
    /// Unix admin sockets.
    cu_admin: [PathBuf; 2],
    client_admin: PathBuf,
    /// UDP admin listeners (the config names them; only some tests do).
    cu_udp: [SocketAddr; 2],
    client_udp: SocketAddr,
}

/// The lab's config, with `extra` appended (e.g. an `[admin]` token file). `udp`: every node
/// also gets a UDP admin listener.
fn write_config(dir: &Path, udp: bool, extra: &str) -> Lab {
    let p = common::free_udp(6);
    let a = |i: usize| -> SocketAddr { p[i] };
    let admin = |i: usize| {
        if udp {
            format!("admin = \"{}\"", a(i))
        } else {
            String::new()
        }
    };
    let sock = dir.join("sock");
    // Generous timeouts: the test machine may be busy, and a spurious failover would make
    // the standby primary before the operator asks.
    let text = format!(
        r#"
[[control_units]]
id = 1
addr = "{}"
{}
[[control_units]]
id = 2
addr = "{}"
{}
[[clients]]
id = 100
addr = "{}"
{}
channels = [0, 1, 2]
[submitters]
ids = [900]
[timing]
heartbeat_ms = 20
failover_timeout_ms = 1000
drop_timeout_ms = 2000
query_timeout_ms = 100
rto_ms = 50
[security]
key_dir = "keys"
[admin]
socket_dir = {:?}
{extra}
"#,
        a(0),
        admin(1),
        a(2),
        admin(3),
        a(4),
        admin(5),
        sock.display().to_string(),
    );
    let path = dir.join("lab.toml");
    std::fs::write(&path, text).unwrap();
    // Every link gets a key: the daemons refuse to start without.
    let out = Command::new(BIN)
        .args(["keygen", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "keygen: {out:?}");
    Lab {
        path,
        cu_data: [a(0), a(2)],
        client_data: a(4),
        cu_admin: [sock.join("1.sock"), sock.join("2.sock")],
        client_admin: sock.join("100.sock"),
        cu_udp: [a(1), a(3)],
        client_udp: a(5),
    }
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
    let lab = write_config(&kids.dir, false, "");
    let cfg = lab.path.to_str().unwrap().to_owned();
    let up = Duration::from_secs(5);

    kids.spawn("primary", &["primary", "--config", &cfg, "--id", "1"]);
    wait_for("primary up", up, || role_is(&lab.cu_admin[0], "primary"));
    kids.spawn("standby", &["standby", "--config", &cfg, "--id", "2"]);
    kids.spawn("client", &["client", "--config", &cfg, "--id", "100"]);
    wait_for("standby up", up, || role_is(&lab.cu_admin[1], "standby"));
    // The standby is in the primary's sync set (it may have had to re-join by transfer).
    wait_for("standby in sync set", up, || {
        role_is(&lab.cu_admin[0], "primary").filter(|v| v["sync_mask"].as_u64() == Some(2))
    });
    let c = wait_for("client up", up, || status(&lab.client_admin));
    assert_eq!(c["kind"], "client");
    assert_eq!(c["epoch"], 256);

    // Fake submitter 900: every change to both control units; the primary takes it.
    let mut sub = Submitter::new(
        &[(1, lab.cu_data[0]), (2, lab.cu_data[1])],
        &lab.path.parent().unwrap().join("keys/node-900.key"),
    );
    let mut buf = vec![0u8; 1472];
    let n_submits = 30u64;
    for seq in 1..=n_submits {
        let len = submit_frame(&mut buf, seq, (seq % 3) as u32);
        sub.send(&mut buf[..len]);
    }
    let p = wait_for("client digests equal the primary's", up, || {
        let p = status(&lab.cu_admin[0])?;
        let c = status(&lab.client_admin)?;
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
        let p = status(&lab.cu_admin[0])?;
        let s = status(&lab.cu_admin[1])?;
        let committed = p["channels"]
            .as_array()?
            .iter()
            .all(|c| c["commit"] == n_submits / 3);
        (committed && digests(&p, "full_digest") == digests(&s, "full_digest")).then_some(())
    });
    let s = status(&lab.cu_admin[1]).unwrap();
    assert_eq!(
        s["submits"]["rejected"], n_submits,
        "the standby refuses submissions"
    );

    // The CLI status command, human and JSON.
    let out = Command::new(BIN)
        .args(["status", lab.cu_admin[0].to_str().unwrap()])
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
        .args(["status", lab.client_admin.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kind"], "client");

    // Operator takeover of the standby through `statesync switchover`.
    let out = Command::new(BIN)
        .args(["switchover", "--standby", lab.cu_admin[1].to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "switchover failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = wait_for("standby is primary of a higher epoch", up, || {
        role_is(&lab.cu_admin[1], "primary").filter(|v| {
            v["epoch"].as_u64().unwrap() > 256 && !v["failover"]["finished_unix_us"].is_null()
        })
    });
    let f = &s["failover"];
    assert!(f["started_unix_us"].as_u64().unwrap() <= f["finished_unix_us"].as_u64().unwrap());
    let new_epoch = s["epoch"].as_u64().unwrap();
    // The client follows the new primary and still agrees on every digest.
    wait_for("client follows the new primary", up, || {
        let c = status(&lab.client_admin)?;
        let s = status(&lab.cu_admin[1])?;
        (c["epoch"] == new_epoch && digests(&s, "public_digest") == digests(&c, "public_digest"))
            .then_some(())
    });

    for (name, st) in kids.terminate(Duration::from_secs(3)) {
        let st = st.unwrap_or_else(|| panic!("{name} did not exit after SIGTERM"));
        assert_eq!(st.code(), Some(0), "{name} exited with {st}");
    }
    for sock in lab.cu_admin.iter().chain([&lab.client_admin]) {
        assert!(!sock.exists(), "{} left behind at shutdown", sock.display());
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

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The uid and gid a stranger runs as: `nobody`/`nogroup` on Debian-like systems; any
/// unprivileged ids do.
const STRANGER: u32 = 65_534;

/// `statesync ARGS` as another user (`uid`, `gid`, no supplementary groups), from a copy of
/// the binary that user may execute.
fn run_as(bin: &Path, uid: u32, gid: u32, args: &[&str]) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    Command::new(bin)
        .args(args)
        .uid(uid)
        .gid(gid)
        .output()
        .unwrap()
}

/// Waits until the primary has the standby in its sync set (asked over the Unix socket).
fn start_primary_and_standby(kids: &mut Children, lab: &Lab, up: Duration) {
    let cfg = lab.path.to_str().unwrap().to_owned();
    kids.spawn("primary", &["primary", "--config", &cfg, "--id", "1"]);
    wait_for("primary up", up, || role_is(&lab.cu_admin[0], "primary"));
    kids.spawn("standby", &["standby", "--config", &cfg, "--id", "2"]);
    kids.spawn("client", &["client", "--config", &cfg, "--id", "100"]);
    wait_for("standby up", up, || role_is(&lab.cu_admin[1], "standby"));
    wait_for("client up", up, || status(&lab.client_admin));
    wait_for("standby in sync set", up, || {
        role_is(&lab.cu_admin[0], "primary").filter(|v| v["sync_mask"].as_u64() == Some(2))
    });
}

#[test]
fn unix_admin_socket_refuses_strangers() {
    if !is_root() {
        eprintln!(
            "SKIPPED unix_admin_socket_refuses_strangers: needs root to run a client as another uid"
        );
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let mut kids = Children::new("stranger");
    let lab = write_config(&kids.dir, false, "");
    // A traversable socket directory (the daemon would create it 0750), so that the socket's
    // own mode and the daemon's credential check are what keep a stranger out.
    let sock_dir = kids.dir.join("sock");
    std::fs::create_dir_all(&sock_dir).unwrap();
    std::fs::set_permissions(&sock_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = kids.dir.join("statesync");
    std::fs::copy(BIN, &bin).unwrap();
    std::fs::set_permissions(&kids.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = lab.path.to_str().unwrap().to_owned();
    kids.spawn("primary", &["primary", "--config", &cfg, "--id", "1"]);
    let sock = lab.cu_admin[0].clone();
    let sock_s = sock.to_str().unwrap();
    let up = Duration::from_secs(5);
    // Root (the test) is served.
    wait_for("primary up", up, || role_is(&sock, "primary"));
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "socket mode {mode:o}");
    let status_args = ["status", sock_s, "--json", "--timeout-ms", "2000"];

    // A stranger cannot even connect: the socket is 0660, root's.
    let out = run_as(&bin, STRANGER, STRANGER, &status_args);
    assert!(!out.status.success(), "a stranger got a status");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ermission denied"), "{err}");

    // A member of the socket's group (here: primary group 0) is served.
    let out = run_as(&bin, STRANGER, 0, &status_args);
    assert!(
        out.status.success(),
        "a group member was refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["role"], "primary");

    // With the socket opened to everyone (a mistake), the daemon still refuses the stranger,
    // counts and logs it; a takeover or switchover from it does nothing.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = run_as(&bin, STRANGER, STRANGER, &status_args);
    assert!(!out.status.success(), "a stranger got a status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("permission denied"), "{text}");
    let out = run_as(
        &bin,
        STRANGER,
        STRANGER,
        &["admin", sock_s, r#"{"cmd":"switchover","target":2}"#],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("permission denied"),
        "{out:?}"
    );
    let v = status(&sock).unwrap();
    assert_eq!(v["admin"]["refused_peer"], 2, "{v}");
    assert_eq!(v["epoch"], 256);
    let log = std::fs::read_to_string(kids.dir.join("primary.log")).unwrap();
    assert!(
        log.contains("refused a Unix admin connection from pid")
            && log.contains(&format!("uid {STRANGER} gid {STRANGER}")),
        "{log}"
    );
    for (name, st) in kids.terminate(Duration::from_secs(3)) {
        assert_eq!(st.and_then(|s| s.code()), Some(0), "{name}");
    }
    assert!(!sock.exists(), "socket left behind");
}

/// Sends `req` from a fresh UDP socket and returns the reply, if one comes within 300 ms.
///
/// The socket is connected to `to`, so only `to`'s reply is read: tests run in parallel, and
/// a fresh ephemeral port can be one another test's lab names as a peer that is not running,
/// whose heartbeats would otherwise be read here as the reply (CI of 71d2932).
fn udp_ask(to: SocketAddr, req: &[u8]) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect(to).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    s.send(req).unwrap();
    let mut buf = vec![0u8; 65_536];
    s.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
}

/// A request in the MAC envelope of `admin::mac`, built here from its documented wire form
/// (not with the crate's own `seal`), with the token `token` as the HMAC-SHA256 key.
fn mac_request(token: &str, req: Value, ts_us: u64, nonce: u64) -> String {
    use ring::hmac;
    let mut body = req;
    body["ts_us"] = json!(ts_us);
    body["nonce"] = json!(format!("{nonce:016x}"));
    let body = body.to_string();
    let key = hmac::Key::new(hmac::HMAC_SHA256, token.as_bytes());
    let tag = hmac::sign(&key, body.as_bytes());
    let mac: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    json!({"mac": mac, "body": body}).to_string()
}

fn unix_now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

#[test]
fn udp_admin_needs_the_token_and_never_amplifies() {
    use std::os::unix::fs::PermissionsExt;
    let mut kids = Children::new("udpadmin");
    let token_file = kids.dir.join("admin.token");
    std::fs::write(&token_file, "correct-horse-battery-staple\n").unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let lab = write_config(
        &kids.dir,
        true,
        &format!("token_file = {:?}", token_file.display().to_string()),
    );
    let up = Duration::from_secs(5);
    start_primary_and_standby(&mut kids, &lab, up);
    let [p_udp, s_udp] = lab.cu_udp;

    // Nothing without a valid MAC: no control action, no reply larger than the request. The
    // token in clear is refused even when right; a MAC made with another token, or one an
    // hour old (a captured request sent again), is refused.
    const TOKEN: &str = "correct-horse-battery-staple";
    let wrong = r#""token":"correct-horse-battery-stapl3""#;
    let takeover = json!({"cmd": "takeover"});
    let hour_us = 3_600_000_000;
    for (to, req) in [
        (s_udp, r#"{"cmd":"takeover"}"#.to_owned()),
        (s_udp, format!(r#"{{"cmd":"takeover",{wrong}}}"#)),
        (s_udp, format!(r#"{{"cmd":"takeover","token":"{TOKEN}"}}"#)),
        (
            s_udp,
            mac_request(
                "correct-horse-battery-stapl3",
                takeover.clone(),
                unix_now_us(),
                1,
            ),
        ),
        (
            s_udp,
            mac_request(TOKEN, takeover.clone(), unix_now_us() - hour_us, 2),
        ),
        (p_udp, r#"{"cmd":"switchover","target":2}"#.to_owned()),
        (
            p_udp,
            format!(r#"{{"cmd":"switchover","target":2,{wrong}}}"#),
        ),
        (p_udp, r#"{"cmd":"status"}"#.to_owned()),
        (p_udp, format!(r#"{{"cmd":"status",{wrong}}}"#)),
        (lab.client_udp, r#"{"cmd":"status"}"#.to_owned()),
        (p_udp, "not json".to_owned()),
        (
            p_udp,
            r#"{"cmd":"op_status","channel":0,"epoch":256,"from":1,"to":1000000}"#.to_owned(),
        ),
    ] {
        if let Some(reply) = udp_ask(to, req.as_bytes()) {
            assert!(
                reply.len() <= req.len(),
                "{} reply bytes to a {}-byte unauthenticated request {req}: {}",
                reply.len(),
                req.len(),
                String::from_utf8_lossy(&reply)
            );
            let v: Value = serde_json::from_slice(&reply).unwrap();
            assert_eq!(v["ok"], false, "{req}: {v}");
        }
    }
    // A padded status gets a short error, still no larger than the request.
    let padded = format!(r#"{{"cmd":"status","pad":"{}"}}"#, "x".repeat(200));
    let reply = udp_ask(p_udp, padded.as_bytes()).expect("a short error");
    assert!(reply.len() <= padded.len());
    std::thread::sleep(Duration::from_millis(300));
    let p = status(&lab.cu_admin[0]).unwrap();
    let s = status(&lab.cu_admin[1]).unwrap();
    assert_eq!(
        (p["role"].as_str(), p["epoch"].as_u64()),
        (Some("primary"), Some(256))
    );
    assert_eq!(
        (s["role"].as_str(), s["epoch"].as_u64()),
        (Some("standby"), Some(256))
    );
    assert_eq!(s["admin"]["refused_token"], 3, "{s}");
    assert_eq!(s["admin"]["refused_mac"], 1, "{s}");
    assert_eq!(s["admin"]["refused_stale"], 1, "{s}");
    assert_eq!(p["admin"]["refused_token"], 3, "{p}");
    assert!(p["admin"]["refused_size"].as_u64().unwrap() >= 3, "{p}");
    let log = std::fs::read_to_string(kids.dir.join("standby.log")).unwrap();
    assert!(
        log.contains("refused a UDP request from 127.0.0.1:"),
        "{log}"
    );

    // A request MAC'd as documented gets its whole reply, larger than itself.
    let req = mac_request(TOKEN, json!({"cmd": "status"}), unix_now_us(), 3);
    let reply = udp_ask(p_udp, req.as_bytes()).expect("a status");
    assert!(reply.len() > req.len());
    let v: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(v["role"], "primary", "{v}");

    // The CLI over UDP: without the token no status comes back; with it, all of it.
    let s_addr = s_udp.to_string();
    let tf = token_file.to_str().unwrap();
    let out = Command::new(BIN)
        .args(["status", &s_addr, "--timeout-ms", "300"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = Command::new(BIN)
        .args(["status", &s_addr, "--token-file", tf])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("role standby"));
    // A token file others may read is refused by name.
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(BIN)
        .args(["switchover", "--standby", &s_addr, "--token-file", tf])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--token-file:"),
        "{out:?}"
    );
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    // The CLI's switchover, through a relay here that reads what travels (as a sniffer on the
    // path would): the token does not, the takeover is done, and the captured datagram sent
    // again is refused as a replay, with no reply larger than itself.
    let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
    relay
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let cli = Command::new(BIN)
        .args(["switchover", "--standby"])
        .arg(relay.local_addr().unwrap().to_string())
        .args(["--token-file", tf, "--timeout-ms", "3000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = vec![0u8; 65_536];
    // The first JSON datagram is the CLI's; a data frame (magic "SSYN") is another test's
    // node heartbeating a peer whose port the relay happens to hold (see `udp_ask`).
    let (captured, cli_addr) = loop {
        let (n, from) = relay.recv_from(&mut buf).unwrap();
        if !buf[..n].starts_with(b"SSYN") {
            break (buf[..n].to_vec(), from);
        }
    };
    let text = String::from_utf8_lossy(&captured).into_owned();
    assert!(
        !text.contains(TOKEN) && text.contains(r#""mac":"#),
        "{text}"
    );
    let reply = udp_ask(s_udp, &captured).expect("the takeover's reply");
    relay.send_to(&reply, cli_addr).unwrap();
    let out = cli.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "switchover with the token failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply = udp_ask(s_udp, &captured).expect("a short refusal");
    assert!(reply.len() <= captured.len());
    let v: Value = serde_json::from_slice(&reply).unwrap();
    assert!(
        v["ok"] == false && v["error"].as_str().unwrap().contains("replayed"),
        "{v}"
    );
    wait_for("the standby takes over", up, || {
        role_is(&lab.cu_admin[1], "primary").filter(|v| v["epoch"].as_u64().unwrap() > 256)
    });
    let s = status(&lab.cu_admin[1]).unwrap();
    assert_eq!(s["admin"]["refused_replay"], 1, "{s}");
    for (name, st) in kids.terminate(Duration::from_secs(3)) {
        assert_eq!(st.and_then(|s| s.code()), Some(0), "{name}");
    }
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
    let lab = write_config(&kids.dir, false, "");
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
            role_is(&lab.cu_admin[primary], "primary")
                .filter(|v| v["sync_mask"] == 1 << standby)?;
            status(&lab.cu_admin[standby]).filter(|v| v["eligible"] == true)
        })
    };

    kids.spawn("cu1", &["primary", "--config", &cfg, "--id", "1"]);
    wait_for("primary up", up, || role_is(&lab.cu_admin[0], "primary"));
    kids.spawn("cu2", &["standby", "--config", &cfg, "--id", "2"]);
    in_sync(0, 1);
    assert_eq!(epoch_in_file(&file1), Some(256));
    assert_eq!(epoch_in_file(&file2), Some(256));

    // Unit 2 takes over: a new epoch, persisted by both.
    let v = request_unix(
        &lab.cu_admin[1],
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
    kids.crash("cu2");
    kids.spawn(
        "cu2-again",
        &["standby", "--config", &cfg, "--id", "2", "--rejoin"],
    );
    let s = wait_for("restarted unit 2 answers", up, || status(&lab.cu_admin[1]));
    assert!(s["highest_epoch"].as_u64().unwrap() >= e2, "{s}");
    let log = std::fs::read_to_string(kids.dir.join("cu2-again.log")).unwrap();
    assert!(
        log.contains(&format!("restored highest epoch {e2}")) || s["epoch"].as_u64().unwrap() > e2,
        "{log}"
    );

    // Unit 1 takes over from the lost primary; unit 2 re-joins it.
    let e1 = wait_for("unit 1 primary of a later epoch", up, || {
        role_is(&lab.cu_admin[0], "primary")
            .and_then(|v| v["epoch"].as_u64())
            .filter(|&e| e > e2)
    });
    in_sync(0, 1);
    let s = status(&lab.cu_admin[1]).unwrap();
    assert_eq!(s["epoch"], e1);
    assert_eq!(s["highest_epoch"], e1);

    // Unit 2's next candidacy is above everything it persisted.
    let v = request_unix(
        &lab.cu_admin[1],
        &json!({"cmd": "takeover"}),
        Duration::from_secs(1),
    )
    .unwrap();
    let e3 = v["epoch"].as_u64().unwrap();
    assert!(e3 > e1 && e3 > e2, "{v}");
    wait_for("unit 2 primary again", up, || {
        role_is(&lab.cu_admin[1], "primary")
    });
    assert_eq!(epoch_in_file(&file2), Some(e3));

    // A corrupt state file: unit 2 refuses to start, naming the file.
    kids.crash("cu2-again");
    std::fs::write(&file2, "not an epoch\n").unwrap();
    let out = Command::new(BIN)
        .args(["standby", "--config", &cfg, "--id", "2", "--rejoin"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&file2.display().to_string()), "{err}");

    // A unit that has seen a later epoch cannot start in the initial one.
    kids.crash("cu1");
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

/// A line card holding its own keys, on its own address (its daemon not running: the test
/// holds the socket), and a stranger, fire every class of hostile frame at the primary. Every
/// one is refused and counted, and no control unit's role or epoch moves.
#[test]
fn forged_replayed_and_foreign_frames_change_no_role() {
    let mut kids = Children::new("hostile");
    let lab = write_config(&kids.dir, false, "");
    let cfg = lab.path.to_str().unwrap().to_owned();
    let up = Duration::from_secs(5);
    kids.spawn("primary", &["primary", "--config", &cfg, "--id", "1"]);
    wait_for("primary up", up, || role_is(&lab.cu_admin[0], "primary"));
    kids.spawn("standby", &["standby", "--config", &cfg, "--id", "2"]);
    wait_for("standby in sync set", up, || {
        role_is(&lab.cu_admin[0], "primary").filter(|v| v["sync_mask"].as_u64() == Some(2))
    });
    let p0 = status(&lab.cu_admin[0]).unwrap();
    let s0 = status(&lab.cu_admin[1]).unwrap();

    // The line card's own session with the primary: opener, then the primary's hello.
    let keys = LinkKeys::load(&kids.dir.join("keys/node-100.key"), 100).unwrap();
    let mut card = Auth::new(&keys);
    let sock = UdpSocket::bind(lab.client_data).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let primary = lab.cu_data[0];
    let mut buf = vec![0u8; 512];
    let mut seq = 1u64;
    let deadline = Instant::now() + up;
    while card.peer_boot(1) == 0 {
        assert!(Instant::now() < deadline, "no hello from the primary");
        let n = FrameBuilder::new(&mut buf, 100, 0, seq).finish();
        seq += 1;
        assert!(card.seal(1, &mut buf[..n]));
        sock.send_to(&buf[..n], primary).unwrap();
        let mut rx = [0u8; 256];
        if let Ok((n, src)) = sock.recv_from(&mut rx) {
            card.open(0, src, Some(1), &rx[..n]);
        }
    }
    let mut sent = 0u64;
    let mut send = |b: &[u8]| {
        sock.send_to(b, primary).unwrap();
        sent += 1;
    };
    // A higher epoch owned by the standby, claimed by the line card itself (authentic: the
    // core must refuse the claim), then replayed.
    let n = FrameBuilder::new(&mut buf, 100, 0x0201, seq).finish();
    seq += 1;
    assert!(card.seal(1, &mut buf[..n]));
    let claim = buf[..n].to_vec();
    send(&claim);
    send(&claim);
    // Claiming to be the standby, from the line card's address, with the line card's key.
    let n = FrameBuilder::new(&mut buf, 2, 0x0201, seq).finish();
    assert!(card.seal(1, &mut buf[..n]));
    send(&buf[..n]);
    // Sealed with a key of another deployment.
    let other = LinkKeys::generate(&[(100, 1)]).unwrap().pop().unwrap();
    let mut wrong = Auth::new(&other);
    let n = FrameBuilder::new(&mut buf, 100, 0x0201, seq).finish();
    assert!(wrong.seal(1, &mut buf[..n]));
    send(&buf[..n]);
    // No tag; truncated; random bytes.
    let n = FrameBuilder::new(&mut buf, 100, 0x0201, seq + 1).finish();
    send(&buf[..n]);
    send(&claim[..claim.len() - 1]);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..200 {
        let junk: Vec<u8> = (0..64)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        send(&junk);
    }
    // Longer than the configured datagram size: dropped before anything is parsed.
    sock.send_to(&[0u8; 4000], primary).unwrap();
    // A stranger's address: refused before anything is parsed.
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    stranger.send_to(&claim, primary).unwrap();

    let p = wait_for("every hostile datagram counted", up, || {
        let p = status(&lab.cu_admin[0])?;
        let a = &p["auth"];
        let refused = a["rejected"].as_u64()?;
        (refused >= sent - 1 && p["transport"]["rejected_unknown_addr"].as_u64()? >= 1).then_some(p)
    });
    let a = &p["auth"];
    assert_eq!(a["rejected_replay"], 1, "{a}");
    assert_eq!(a["rejected_sender_mismatch"], 1, "{a}");
    assert!(a["rejected_bad_tag"].as_u64().unwrap() >= 1, "{a}");
    assert_eq!(a["rejected_unauthenticated"], 1, "{a}");
    assert!(a["rejected_malformed"].as_u64().unwrap() >= 1, "{a}");
    assert_eq!(
        p["counters"]["rejected_foreign_epoch"], 1,
        "the one authentic claim reached the core and was refused: {p}"
    );
    // Nothing moved.
    let s = status(&lab.cu_admin[1]).unwrap();
    assert_eq!(p["role"], "primary");
    assert_eq!(p["epoch"], p0["epoch"]);
    assert_eq!(p["sync_mask"], p0["sync_mask"]);
    assert_eq!(s["role"], "standby");
    assert_eq!(s["epoch"], s0["epoch"]);
}

/// VRRP's lesson (issue 10): a key mismatch fails closed and raises an alarm; it never elects.
/// The primary crashes, and frames claiming to be it keep coming from its address, sealed with
/// a key of another deployment (as from a primary restarted with the wrong key file): the
/// standby refuses them, raises the alarm (status, log) and does not take over. Once they
/// stop, the primary is lost and the standby takes over as usual.
#[test]
fn a_key_mismatch_with_the_primary_raises_an_alarm_and_elects_nobody() {
    let mut kids = Children::new("key-mismatch");
    let lab = write_config(&kids.dir, false, "");
    let up = Duration::from_secs(5);
    start_primary_and_standby(&mut kids, &lab, up);
    // An in-sync standby that has heard its primary (the configured initial sync set names it
    // before any frame has passed).
    let s = wait_for("the standby to hear its primary", up, || {
        role_is(&lab.cu_admin[1], "standby")
            .filter(|s| s["eligible"] == true && s["counters"]["frames_rx"].as_u64() > Some(10))
    });
    let epoch = s["epoch"].as_u64().unwrap();
    kids.crash("primary");
    let wrong = LinkKeys::generate(&[(1, 2)]).unwrap();
    let mut impostor = wrong.iter().map(Auth::new).find(|a| a.node() == 1).unwrap();
    // The crashed primary's port is free once the kernel has torn down its io_uring.
    let sock = wait_for("the primary's port to be free", up, || {
        UdpSocket::bind(lab.cu_data[0]).ok()
    });
    let mut buf = vec![0u8; 512];
    // Three failover timeouts (1 s each in this lab) of a heartbeat's pace of such frames.
    let start = Instant::now();
    let mut seq = 1u64;
    let mut alarm = None;
    while start.elapsed() < Duration::from_secs(3) {
        let n = FrameBuilder::new(&mut buf, 1, epoch, seq).finish();
        seq += 1;
        assert!(impostor.seal(2, &mut buf[..n]));
        sock.send_to(&buf[..n], lab.cu_data[1]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let s = status(&lab.cu_admin[1]).unwrap();
        assert_eq!(s["role"], "standby", "elected on a key mismatch: {s}");
        if s["key_mismatch"] == 1 {
            alarm = Some(s);
        }
    }
    let s = alarm.expect("no key-mismatch alarm in the standby's status");
    assert_eq!(s["counters"]["takeovers_withheld_key_mismatch"], 1, "{s}");
    assert!(s["auth"]["rejected_bad_tag"].as_u64().unwrap() > 100, "{s}");
    assert!(
        kids.log("standby").contains("key mismatch"),
        "no alarm logged"
    );
    // The frames stop: a failover timeout later the primary is lost, and the standby stands.
    drop(sock);
    let p = wait_for("the standby to take over", up, || {
        role_is(&lab.cu_admin[1], "primary")
    });
    assert!(p.get("key_mismatch").is_none(), "{p}");
}

/// A node without keys refuses to start (exit 2, saying how to fix it); `keygen` writes one
/// 0600 file per node holding only its own links, and a file others can read is refused.
#[test]
fn keys_are_required_and_kept_private() {
    use std::os::unix::fs::PermissionsExt;
    let kids = Children::new("keys");
    let path = kids.dir.join("nokeys.toml");
    std::fs::write(
        &path,
        "[[control_units]]\nid = 1\naddr = \"127.0.0.1:1\"\n[[clients]]\nid = 100\naddr = \"127.0.0.1:3\"\nchannels = [0]\n[submitters]\nids = [900]\n",
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let out = Command::new(BIN)
        .args(["primary", "--config", p, "--id", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("key_dir") && err.contains("--insecure"),
        "{err}"
    );

    let dir = kids.dir.join("k");
    let out = Command::new(BIN)
        .args(["keygen", "--config", p, "--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // Control unit 1 talks to the client and the submitter; each of those only to it.
    let cu = LinkKeys::load(&dir.join("node-1.key"), 1).unwrap();
    assert_eq!(cu.peers().collect::<Vec<_>>(), vec![100, 900]);
    let card = LinkKeys::load(&dir.join("node-100.key"), 100).unwrap();
    assert_eq!(card.peers().collect::<Vec<_>>(), vec![1]);
    for f in ["node-1.key", "node-100.key", "node-900.key"] {
        let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    std::fs::set_permissions(
        dir.join("node-100.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let e = LinkKeys::load(&dir.join("node-100.key"), 100).unwrap_err();
    assert!(e.to_string().contains("chmod 600"), "{e}");
    assert!(
        LinkKeys::load(&dir.join("node-1.key"), 2).is_err(),
        "a file of another node"
    );
}

/// `statesync probe` against a running deployment: every canary refused, exit 0 (root: the
/// canaries carry spoofed sources).
#[test]
fn probe_sees_every_canary_refused() {
    if !is_root() {
        eprintln!("skipped: probe needs root (raw socket)");
        return;
    }
    let mut kids = Children::new("probe");
    let lab = write_config(&kids.dir, false, "");
    start_primary_and_standby(&mut kids, &lab, Duration::from_secs(5));
    let out = Command::new(BIN)
        .args(["probe", "--config", lab.path.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("every canary refused"), "{text}");
    assert_eq!(text.matches("-> ok").count(), 3, "{text}");
}
