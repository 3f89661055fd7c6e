//! `statesync status` for people, against real daemons on loopback: three control units and a
//! line card, `status --cluster --config` (one row per node, one primary, a node that does not
//! answer is a row, not an error), and a status too large for one datagram that still comes
//! back whole, over UDP (paged) and over the Unix socket.

mod common;

use common::{Children, Submitter, status, submit_frame, wait_for};
use serde_json::Value;
use statesync::daemon::admin::status::{StatusReply, fetch, fetch_with};
use statesync::daemon::admin::{MAX_REPLY_BYTES, Target, read_token_file};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_statesync");

/// Channels of the line card: enough that a control unit's status is well over one datagram.
const CHANNELS: u32 = 800;

/// Three control units (1 the initial primary), line card 100 with [`CHANNELS`] channels, and
/// control unit 4 that the config names but nobody runs. Unit 2 also has a UDP admin listener.
/// Returns the config, unit 2's UDP admin address and the running units' data addresses.
fn write_config(dir: &Path) -> (PathBuf, SocketAddr, Vec<(u32, SocketAddr)>) {
    let a = common::free_udp(6);
    let token = dir.join("admin.token");
    std::fs::write(&token, "status-test-token-0123456789\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let channels: Vec<String> = (0..CHANNELS).map(|c| c.to_string()).collect();
    let text = format!(
        r#"
[[control_units]]
id = 1
addr = "{}"
[[control_units]]
id = 2
addr = "{}"
admin = "{}"
[[control_units]]
id = 3
addr = "{}"
[[control_units]]
id = 4
addr = "{}"
[[clients]]
id = 100
addr = "{}"
channels = [{}]
[submitters]
ids = [900]
[security]
key_dir = "keys"
[timing]
heartbeat_ms = 20
failover_timeout_ms = 1500
drop_timeout_ms = 3000
query_timeout_ms = 100
rto_ms = 50
[admin]
socket_dir = {:?}
token_file = "admin.token"
"#,
        a[0],
        a[1],
        a[5],
        a[2],
        a[3],
        a[4],
        channels.join(", "),
        dir.join("sock").display().to_string(),
    );
    let path = dir.join("lab.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN)
        .args(["keygen", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "keygen: {out:?}");
    (path, a[5], vec![(1, a[0]), (2, a[1]), (3, a[2])])
}

fn cluster_json(cfg: &str) -> Value {
    let out = Command::new(BIN)
        .args([
            "status",
            "--cluster",
            "--config",
            cfg,
            "--json",
            "--timeout-ms",
            "300",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn cluster_table_and_statuses_larger_than_a_datagram() {
    let t0 = Instant::now();
    let mut kids = Children::new("status");
    let (path, udp2, data) = write_config(&kids.dir);
    let cfg = path.to_str().unwrap().to_owned();
    let dir = kids.dir.clone();
    let sock = |id: u32| dir.join("sock").join(format!("{id}.sock"));
    let up = Duration::from_secs(10);
    let node = |mode: &str, id: &str| -> Vec<String> {
        [mode, "--config", &cfg, "--id", id]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let args = node("primary", "1");
    kids.spawn("cu1", &args.iter().map(String::as_str).collect::<Vec<_>>());
    wait_for("primary up", up, || {
        status(&sock(1)).filter(|v| v["role"] == "primary")
    });
    for (name, mode, id) in [
        ("cu2", "standby", "2"),
        ("cu3", "standby", "3"),
        ("client", "client", "100"),
    ] {
        let args = node(mode, id);
        kids.spawn(name, &args.iter().map(String::as_str).collect::<Vec<_>>());
    }
    // Units 2 and 3 in the primary's sync set (unit 4 never runs).
    wait_for("standbys in the sync set", up, || {
        status(&sock(1)).filter(|v| v["sync_set"] == serde_json::json!([2, 3]))
    });
    wait_for("client up", up, || status(&sock(100)));
    // Some changes, so that there are positions to compare.
    let mut sub = Submitter::new(&data, &dir.join("keys/node-900.key"));
    let mut buf = vec![0u8; 1472];
    let n_submits = 300u64;
    for seq in 1..=n_submits {
        let len = submit_frame(&mut buf, seq, (seq * 7 % u64::from(CHANNELS)) as u32);
        sub.send(&mut buf[..len]);
    }
    wait_for("every change committed", up, || {
        status(&sock(1)).filter(|v| {
            let ch = v["channels"].as_array().unwrap();
            let committed: u64 = ch.iter().map(|c| c["commit"].as_u64().unwrap()).sum();
            v["submits"]["accepted"] == n_submits && committed == n_submits
        })
    });

    // The cluster view: every node of the config is a row; one primary; the unit nobody runs
    // is a row saying so, and the command still succeeds.
    let v = wait_for("every running node in sync", up, || {
        let v = cluster_json(&cfg);
        let rows = v["nodes"].as_array()?;
        let ok = rows
            .iter()
            .filter(|r| r["id"] != 4)
            .all(|r| r["sync"] == "in_sync" || r["sync"] == "primary");
        ok.then_some(v)
    });
    let rows = v["nodes"].as_array().unwrap();
    let ids: Vec<u64> = rows.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [1, 2, 3, 4, 100], "{v}");
    let row = |id: u64| rows.iter().find(|r| r["id"] == id).unwrap();
    let primaries: Vec<u64> = rows
        .iter()
        .filter(|r| r["role"] == "primary")
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(primaries, [1], "{v}");
    assert_eq!(v["primary"], 1);
    for (id, role, kind) in [
        (1, "primary", "control_unit"),
        (2, "standby", "control_unit"),
        (3, "standby", "control_unit"),
        (100, "client", "client"),
    ] {
        let r = row(id);
        assert_eq!(
            (&r["role"], &r["kind"]),
            (&role.into(), &kind.into()),
            "{r}"
        );
        assert_eq!(r["reachable"], true, "{r}");
        assert_eq!(r["epoch"], 256, "{r}");
        assert!(r["lag_ops"].is_u64() && r["lag_ms"].is_u64(), "{r}");
        // Each row carries the node's whole status, every channel of it.
        let st: StatusReply = serde_json::from_value(r["status"].clone()).unwrap();
        assert_eq!(st.channels.len() as u32, st.channels_total, "{id}");
    }
    assert_eq!(row(4)["reachable"], false);
    assert!(row(4)["error"].as_str().unwrap().contains("4.sock"), "{v}");
    // Peers by ID with when last heard.
    let p: StatusReply = serde_json::from_value(row(1)["status"].clone()).unwrap();
    let heard = |id: u32| p.peers.iter().find(|x| x.id == id).unwrap();
    assert!(heard(2).last_heard_ms.is_some_and(|ms| ms < 1000), "{p:?}");
    assert_eq!(heard(2).in_sync_set, Some(true));
    assert_eq!(heard(4).last_heard_ms, None);
    assert_eq!(heard(4).in_sync_set, Some(false));
    assert_eq!(p.sync_mask, Some(0b110));

    // The table for people.
    let out = Command::new(BIN)
        .args(["status", "--cluster", "--config", &cfg])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert_eq!(text.lines().count(), 2 + 5, "{text}");
    assert!(text.contains("5 nodes, 4 reachable, primary 1"), "{text}");
    let line = |id: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .unwrap_or_else(|| panic!("no row {id}: {text}"))
            .to_owned()
    };
    assert!(line("1").contains("primary"), "{text}");
    assert!(line("2").contains("standby") && line("2").contains("in sync"));
    assert!(line("4").contains("no:"), "{text}");

    // --watch redraws the table until interrupted.
    let w = Command::new(BIN)
        .args(["status", "--cluster", "--config", &cfg, "--watch=0.3"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    // SIGTERM, not SIGINT: a test run started in the background by a non-interactive shell
    // (as CI may be) inherits SIGINT ignored, and the watch would then never stop.
    // SAFETY: plain kill(2) on a child we spawned and have not reaped yet.
    unsafe { libc::kill(w.id() as libc::pid_t, libc::SIGTERM) };
    let out = w.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.matches("\x1b[2J").count() >= 2, "{text}");
    assert!(text.matches("primary 1").count() >= 2, "{text}");

    // Unit 3 frozen (SIGSTOP) under changes: nothing commits, so the primary's commit lag
    // grows in ops and in time; unit 3 does not answer (a row saying so); unit 2, in the sync
    // set, has everything. Resumed well before the failover timeout.
    let pid3 = kids.pid("cu3") as libc::pid_t;
    // SAFETY: plain kill(2) on a child we spawned and have not reaped yet.
    unsafe { libc::kill(pid3, libc::SIGSTOP) };
    let frozen = Instant::now();
    for seq in n_submits + 1..=n_submits + 20 {
        let len = submit_frame(&mut buf, seq, (seq % 4) as u32);
        sub.send(&mut buf[..len]);
    }
    std::thread::sleep(Duration::from_millis(150));
    let v = cluster_json(&cfg);
    let out = Command::new(BIN)
        .args([
            "status",
            "--cluster",
            "--config",
            &cfg,
            "--timeout-ms",
            "300",
        ])
        .output()
        .unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(pid3, libc::SIGCONT) };
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        frozen.elapsed() < Duration::from_millis(1200),
        "froze too long"
    );
    let rows = v["nodes"].as_array().unwrap();
    let row = |id: u64| rows.iter().find(|r| r["id"] == id).unwrap();
    assert_eq!(row(1)["sync"], "primary", "{v}");
    assert!(row(1)["lag_ops"].as_u64().unwrap() >= 5, "{}", row(1));
    assert!(row(1)["lag_ms"].as_u64().unwrap() >= 50, "{}", row(1));
    assert_eq!(row(3)["reachable"], false, "{}", row(3));
    assert_eq!(row(2)["sync"], "in_sync", "{}", row(2));
    wait_for("the changes committed after the resume", up, || {
        let v = cluster_json(&cfg);
        let r = v["nodes"].as_array()?.first()?.clone();
        (r["lag_ops"] == 0
            && v["nodes"]
                .as_array()?
                .iter()
                .all(|r| r["id"] == 4 || r["sync"] != "behind"))
        .then_some(())
    });

    // One node for people: its role, sync set by ID, per-channel lags, peers last heard.
    let out = Command::new(BIN)
        .arg("status")
        .arg(sock(1))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{}", text.lines().take(5).collect::<Vec<_>>().join("\n"));
    assert!(
        text.contains("role primary") && text.contains("sync set [2, 3]"),
        "{text}"
    );
    assert!(
        text.contains("peers heard: 2 ") && text.contains("4 never"),
        "{text}"
    );

    // A control unit's status is far larger than one datagram: over UDP (with the token) it
    // comes in pages, each within a datagram, and is assembled whole.
    let full = fetch(&Target::Unix(sock(2)), None, Duration::from_secs(2)).unwrap();
    assert_eq!(full.channels.len() as u32, CHANNELS);
    assert!(!full.assembled, "the Unix socket has no datagram limit");
    let one_reply = serde_json::to_vec(&full).unwrap().len();
    assert!(one_reply > 2 * MAX_REPLY_BYTES, "{one_reply} bytes");
    let token = read_token_file(&dir.join("admin.token"), "t").unwrap();
    let paged = fetch(&Target::Udp(udp2), Some(&token), Duration::from_secs(2)).unwrap();
    assert!(paged.assembled);
    let ids: Vec<u32> = paged.channels.iter().map(|c| c.channel).collect();
    assert_eq!(ids, (0..CHANNELS).collect::<Vec<_>>());
    assert_eq!(paged.channels_truncated, None);
    // Small pages on the Unix socket too (a test of the paging itself).
    let small = fetch_with(
        &Target::Unix(sock(1)),
        None,
        Duration::from_secs(2),
        Some(4000),
    )
    .unwrap();
    assert!(small.assembled);
    assert_eq!(small.channels.len() as u32, CHANNELS);
    // The CLI over UDP assembles it too.
    let out = Command::new(BIN)
        .args(["status", &udp2.to_string(), "--json", "--token-file"])
        .arg(dir.join("admin.token"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: StatusReply = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.channels.len() as u32, CHANNELS);
    // Without the token nothing larger than the request comes back: no status over UDP.
    let out = Command::new(BIN)
        .args(["status", &udp2.to_string(), "--timeout-ms", "300"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    eprintln!("took {:?}", t0.elapsed());
}
