//! Issue 12 item 1: one command line per node. Every node of a 2-control-unit, 2-client
//! deployment runs as `statesync node --config F --id N`; the primary and a line card are
//! SIGKILLed and started again with exactly the same command line, and both find their way
//! back on their own (the unit re-joins by state transfer, the line card asks for a full
//! replay) until every control unit and client agrees on every digest.

mod common;

use common::{Children, Submitter, status, submit_frame, wait_for};
use serde_json::Value;
use statesync::auth::HELLO_INTERVAL_US;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_statesync");

const CUS: [u32; 2] = [1, 2];
const CLIENTS: [u32; 2] = [100, 101];

/// The lab's config (data addresses `addrs`: the units, then the clients), with `state` as
/// its `[state]` section; its keys are written next to it.
fn write_config(dir: &Path, addrs: &[SocketAddr], state: &str) -> PathBuf {
    let text = format!(
        r#"
[[control_units]]
id = 1
addr = "{}"
[[control_units]]
id = 2
addr = "{}"
[[clients]]
id = 100
addr = "{}"
channels = [0, 1, 2]
[[clients]]
id = 101
addr = "{}"
channels = [3, 4]
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
{state}
"#,
        addrs[0],
        addrs[1],
        addrs[2],
        addrs[3],
        dir.join("sock").display().to_string(),
    );
    let path = dir.join("lab.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(BIN)
        .args(["keygen", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "keygen: {out:?}");
    path
}

fn sock(dir: &Path, id: u32) -> PathBuf {
    dir.join("sock").join(format!("{id}.sock"))
}

/// `(channel, digest)` of every channel in a status reply.
fn digests(v: &Value, field: &str) -> Vec<(u64, String)> {
    v["channels"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["channel"].as_u64().unwrap(),
                c[field].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// Sends changes `seqs` (over channels 0..5) to both control units, in a fresh submitter
/// session (the units may have restarted since the last one).
fn submit(dir: &Path, cus: &[(u32, SocketAddr)], seqs: std::ops::RangeInclusive<u64>) {
    // A unit answers submitter 900's openers with at most one hello per HELLO_INTERVAL_US,
    // and `Submitter` sends its opener once: a session opened right after the last one would
    // wait for a hello that never comes.
    std::thread::sleep(Duration::from_micros(2 * HELLO_INTERVAL_US));
    let mut sub = Submitter::new(cus, &dir.join("keys/node-900.key"));
    let mut buf = vec![0u8; 1472];
    for seq in seqs {
        let len = submit_frame(&mut buf, seq, (seq % 5) as u32);
        sub.send(&mut buf[..len]);
    }
}

/// Every control unit and client agrees: `primary` (an admin socket) is primary with every
/// change `accepted` and every channel committed through its last op, the other unit holds
/// the same full state, each client the same public state of its channels.
fn converged(dir: &Path, primary: u32, accepted: u64) -> Option<Value> {
    let p = status(&sock(dir, primary)).filter(|v| v["role"] == "primary")?;
    if p["submits"]["accepted"].as_u64() != Some(accepted) {
        return None;
    }
    let chans = p["channels"].as_array()?;
    let committed = |c: &Value| match (c["commit"].as_u64(), c["next_op"].as_u64()) {
        (Some(commit), Some(next)) => commit + 1 == next,
        _ => false,
    };
    if chans.len() != 5 || !chans.iter().all(committed) {
        return None;
    }
    for other in CUS.iter().filter(|&&id| id != primary) {
        let s = status(&sock(dir, *other)).filter(|v| v["role"] == "standby")?;
        if digests(&s, "full_digest") != digests(&p, "full_digest") {
            return None;
        }
    }
    let public = digests(&p, "public_digest");
    for id in CLIENTS {
        let c = status(&sock(dir, id))?;
        if c["epoch"] != p["epoch"] {
            return None;
        }
        for (ch, d) in digests(&c, "public_digest") {
            if c["channels"]
                .as_array()?
                .iter()
                .any(|x| x["channel"] == ch && x["unknown"] == true)
                || !public.contains(&(ch, d))
            {
                return None;
            }
        }
    }
    Some(p)
}

/// Waits until every node of a first start answers: unit 1 primary, unit 2 an eligible
/// standby (it answers a submitter's opener: the submitter sends it once), both clients
/// following the first epoch.
fn wait_for_first_lives(dir: &Path, up: Duration) {
    wait_for("unit 1 primary", up, || {
        status(&sock(dir, 1)).filter(|v| v["role"] == "primary" && v["sync_mask"] == 2)
    });
    wait_for("unit 2 an eligible standby", up, || {
        status(&sock(dir, 2)).filter(|v| v["role"] == "standby" && v["eligible"] == true)
    });
    for id in CLIENTS {
        wait_for("client following the first epoch", up, || {
            status(&sock(dir, id)).filter(|c| c["epoch"] == 256)
        });
    }
}

#[test]
fn every_node_restarts_with_its_first_command_line() {
    let t0 = Instant::now();
    let mut nodes = Children::new("node-restart");
    let dir = nodes.dir.clone();
    let addrs = common::free_udp(4);
    let cfg = write_config(&dir, &addrs, "[state]\ndir = \"state\"\n");
    let cus = [(1, addrs[0]), (2, addrs[1])];
    let up = Duration::from_secs(8);
    // The one command line of each node, used for its first start and every restart.
    let line = |id: u32| -> Vec<String> {
        [
            "node",
            "--config",
            cfg.to_str().unwrap(),
            "--id",
            &id.to_string(),
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let name = |id: u32| format!("node-{id}");

    // First start: the first unit becomes the initial primary, the other an initial standby,
    // both clients start in sync in the first epoch.
    for id in CUS.into_iter().chain(CLIENTS) {
        nodes.spawn(&name(id), &line(id));
    }
    wait_for_first_lives(&dir, up);
    for id in CUS.into_iter().chain(CLIENTS) {
        let log = nodes.log(&name(id));
        assert!(log.contains("first start: no earlier life"), "{id}: {log}");
        assert!(
            dir.join("state").join(format!("{id}.started")).exists(),
            "{id}: no marker"
        );
    }
    assert!(nodes.log(&name(1)).contains("starting as primary"));
    assert!(nodes.log(&name(2)).contains("starting as standby\n"));
    assert!(nodes.log(&name(100)).contains("starting as client\n"));

    let first = 40;
    submit(&dir, &cus, 1..=first);
    wait_for("every node agrees after the first changes", up, || {
        converged(&dir, 1, first)
    });

    // Crash the primary and a line card; a supervisor starts both again with the same line.
    nodes.crash(&name(1));
    nodes.crash(&name(100));
    nodes.spawn(&name(1), &line(1));
    nodes.spawn(&name(100), &line(100));
    let p = wait_for("unit 2 primary of a later epoch", up, || {
        status(&sock(&dir, 2)).filter(|v| v["role"] == "primary" && v["epoch"].as_u64() > Some(256))
    });
    let epoch = p["epoch"].as_u64().unwrap();
    wait_for("unit 1 back in unit 2's sync set", up, || {
        status(&sock(&dir, 2)).filter(|v| v["role"] == "primary" && v["sync_mask"] == 1)
    });
    for (id, mode) in [(1, "standby --rejoin"), (100, "client --fresh")] {
        let log = nodes.log(&name(id));
        assert!(log.contains("records an earlier life"), "{id}: {log}");
        assert!(log.contains(&format!("starting as {mode}")), "{id}: {log}");
    }

    // More changes, to the new primary; then everyone agrees again.
    let more = 40;
    submit(&dir, &cus, first + 1..=first + more);
    let p = wait_for("every node agrees after the restarts", up, || {
        converged(&dir, 2, more)
    });
    assert_eq!(p["epoch"], epoch, "no further failover: {p}");
    for c in p["channels"].as_array().unwrap() {
        assert_eq!(c["next_op"], (first + more) / 5 + 1, "{c}");
    }
    // The restarted unit took the state from the primary, and did not go back in epoch.
    let s = status(&sock(&dir, 1)).unwrap();
    assert_eq!(s["epoch"], epoch, "{s}");
    assert!(s["highest_epoch"].as_u64() >= Some(epoch), "{s}");
    // The restarted line card lost everything at the kill and holds every change again
    // (`converged`): the primary replayed it.
    assert!(p["counters"]["replays_started"].as_u64() > Some(0), "{p}");

    // The same status through the `status` command, as an operator would read it.
    let out = Command::new(BIN)
        .args(["status", sock(&dir, 100).to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["epoch"], epoch);

    for (name, st) in nodes.terminate(Duration::from_secs(3)) {
        assert_eq!(st.and_then(|s| s.code()), Some(0), "{name}");
    }
    let took = t0.elapsed();
    eprintln!("node_restart: {took:?}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

/// A client without `[state] dir` cannot tell a first start from a restart: `statesync node`
/// takes every start of it as a restart (a full replay from the primary), which is right both
/// times. The control units run under the older subcommands (no state dir, no `node`).
#[test]
fn a_client_without_state_dir_always_asks_for_a_replay() {
    let mut nodes = Children::new("node-stateless-client");
    let dir = nodes.dir.clone();
    let addrs = common::free_udp(4);
    let cfg = write_config(&dir, &addrs, "");
    let cfg = cfg.to_str().unwrap().to_owned();
    let cus = [(1, addrs[0]), (2, addrs[1])];
    let up = Duration::from_secs(8);
    let args = |cmd: &str, id: u32| -> Vec<String> {
        [cmd, "--config", &cfg, "--id", &id.to_string()]
            .map(str::to_owned)
            .to_vec()
    };
    nodes.spawn("cu-1", &args("primary", 1));
    nodes.spawn("cu-2", &args("standby", 2));
    nodes.spawn("node-100", &args("node", 100));
    nodes.spawn("client-101", &args("client", 101));
    wait_for_first_lives(&dir, up);
    submit(&dir, &cus, 1..=20);
    wait_for("every node agrees", up, || converged(&dir, 1, 20));
    nodes.crash("node-100");
    nodes.spawn("node-100", &args("node", 100));
    submit(&dir, &cus, 21..=30);
    wait_for("every node agrees after the restart", up, || {
        converged(&dir, 1, 30)
    });
    let log = nodes.log("node-100");
    assert_eq!(
        log.matches("takes every start as a restart: starting as client --fresh")
            .count(),
        2,
        "{log}"
    );
    assert!(!dir.join("state").exists());
    for (name, st) in nodes.terminate(Duration::from_secs(3)) {
        assert_eq!(st.and_then(|s| s.code()), Some(0), "{name}");
    }
}

/// `statesync node` refuses, exit 2, what it cannot decide: a control unit without
/// `[state] dir`, an id the config lacks.
#[test]
fn node_refuses_what_it_cannot_tell() {
    let nodes = Children::new("node-refuses");
    let cfg = write_config(&nodes.dir, &common::free_udp(4), "");
    let cfg = cfg.to_str().unwrap();
    for (id, says) in [("1", "[state] dir"), ("7", "--id 7")] {
        let out = Command::new(BIN)
            .args(["node", "--config", cfg, "--id", id])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{id}: {err}");
        assert!(err.contains(says), "{id}: {err}");
    }
    assert!(!nodes.dir.join("state").exists());

    // A start that fails before it transmits (its data address is taken) leaves no marker:
    // the next start is still a first one.
    let addrs = common::free_udp(4);
    let cfg = write_config(&nodes.dir, &addrs, "[state]\ndir = \"state\"\n");
    let held = UdpSocket::bind(addrs[1]).unwrap();
    let out = Command::new(BIN)
        .args(["node", "--config", cfg.to_str().unwrap(), "--id", "2"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("first start: no earlier life"), "{err}");
    assert!(!nodes.dir.join("state/2.started").exists(), "{err}");
    drop(held);
}

/// Issue 12 item 7: `statesync failover --dry-run` asks the standby what a takeover now would
/// do, and then a takeover does exactly that: per channel the same resolution, cut and replay.
#[test]
fn a_failover_dry_run_predicts_the_takeover() {
    let mut nodes = Children::new("dry-run");
    let dir = nodes.dir.clone();
    let addrs = common::free_udp(4);
    let cfg = write_config(&dir, &addrs, "[state]\ndir = \"state\"\n");
    let cus = [(1, addrs[0]), (2, addrs[1])];
    let up = Duration::from_secs(8);
    for id in CUS.into_iter().chain(CLIENTS) {
        let args = [
            "node",
            "--config",
            cfg.to_str().unwrap(),
            "--id",
            &id.to_string(),
        ];
        nodes.spawn(&format!("node-{id}"), &args.map(str::to_owned));
    }
    wait_for_first_lives(&dir, up);
    submit(&dir, &cus, 1..=40);
    wait_for("every node agrees", up, || converged(&dir, 1, 40));

    let out = Command::new(BIN)
        .args(["failover", "--dry-run", "--json", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let preview: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        preview["node"], 2,
        "the eligible standby answers: {preview}"
    );
    assert_eq!(preview["eligible"], true);
    let chans = preview["channels"].as_array().unwrap();
    assert_eq!(chans.len(), 5);
    for c in chans {
        // Everything acked and held: nothing to cut, nothing to replay.
        assert_eq!(c["resolution"], "in_sync", "{c}");
        assert_eq!(c["replay_bytes"], 0, "{c}");
        assert_eq!(c["sure"], true, "{c}");
    }
    // The table form names the node and every channel.
    let table = Command::new(BIN)
        .args(["failover", "--dry-run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("failover dry run on node 2"), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.contains("in_sync")).count(),
        5,
        "{text}"
    );

    // Now the takeover itself.
    let st = Command::new(BIN)
        .args(["switchover", "--standby"])
        .arg(sock(&dir, 2))
        .status()
        .unwrap();
    assert!(st.success());
    let p = wait_for("unit 2 primary, every channel resolved", up, || {
        status(&sock(&dir, 2)).filter(|v| {
            v["role"] == "primary"
                && v["channels"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().all(|c| c["last_failover"].is_object()))
        })
    });
    for c in p["channels"].as_array().unwrap() {
        let f = &c["last_failover"];
        let ch = c["channel"].as_u64().unwrap() as usize;
        let want = &chans[ch];
        assert_eq!(
            f["resolution"], want["resolution"],
            "channel {ch}: {f} vs {want}"
        );
        assert_eq!(f["cut"], want["cut"], "channel {ch}: {f} vs {want}");
        assert_eq!(
            f["replay_bytes"], want["replay_bytes"],
            "channel {ch}: {f} vs {want}"
        );
    }
}
