//! Running nodes as an operator does, with the real `statesync` binary: `statesync check`
//! before a start, Prometheus `/metrics` scraped over HTTP, role-change hooks writing a file
//! per transition through a switchover, and systemd's notify protocol (READY, STATUS,
//! WATCHDOG) read from a NOTIFY_SOCKET.

mod common;

use common::{Submitter, status, submit_frame, wait_for};
use serde_json::{Value, json};
use statesync::daemon::admin::request_unix;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_statesync");

/// A scratch directory, removed at the end unless the test fails.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("statesync-ops-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn keygen(config: &Path) {
    let out = Command::new(BIN)
        .args(["keygen", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "keygen: {out:?}");
}

/// `statesync check` with `args`: its exit code and what it printed.
fn check(config: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(["check", "--config", config.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// `configs/router-small.toml` with `edit` applied, written (with fresh keys) into `dir`.
fn router_small(dir: &Path, edit: impl FnOnce(String) -> String) -> PathBuf {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/configs/router-small.toml"
    ))
    .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("router-small.toml");
    // Each copy gets its own admin socket directory.
    let text = text.replace(
        "/tmp/statesync-router-small",
        dir.join("sock").to_str().unwrap(),
    );
    std::fs::write(&path, edit(text)).unwrap();
    path
}

#[test]
fn check_accepts_router_small_and_names_each_broken_config() {
    let s = Scratch::new("check");

    // The shipped example, unchanged, with keys from `statesync keygen`.
    let shipped = s.0.join("shipped");
    std::fs::create_dir_all(&shipped).unwrap();
    let path = shipped.join("router-small.toml");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/configs/router-small.toml"),
        &path,
    )
    .unwrap();
    keygen(&path);
    let (code, out) = check(&path, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("OK"), "{out}");
    let (code, out) = check(&path, &["--id", "2"]);
    assert_eq!(code, Some(0), "{out}");

    // Each broken config: what to break, and what the message must name.
    let mut cases: Vec<(&str, PathBuf, Vec<&str>, &str)> = Vec::new();
    let case = |name: &str| s.0.join(name);

    // 1. A misspelt key.
    let p = router_small(&case("typo"), |t| t.replace("rto_ms", "rto_msec"));
    cases.push(("typo", p, vec![], "rto_msec"));

    // 2. A key file missing.
    let p = router_small(&case("no-key"), |t| t);
    keygen(&p);
    std::fs::remove_file(case("no-key").join("keys/node-101.key")).unwrap();
    cases.push(("missing key file", p, vec![], "node 101: keys"));

    // 3. A key file others can read.
    let p = router_small(&case("mode"), |t| t);
    keygen(&p);
    let k = case("mode").join("keys/node-2.key");
    std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o644)).unwrap();
    cases.push(("key mode 0644", p, vec![], "chmod 600"));

    // 4. Another node's key file.
    let p = router_small(&case("wrong-node"), |t| t);
    keygen(&p);
    let keys = case("wrong-node").join("keys");
    std::fs::copy(keys.join("node-1.key"), keys.join("node-2.key")).unwrap();
    cases.push(("wrong node's key", p, vec![], "for node 1, not 2"));

    // 5. Keys made before a line card was added: no key for the link to it.
    let p = router_small(&case("peer"), |t| t);
    let fewer = router_small(&case("peer-old"), |t| {
        let start = t.find("[[clients]]\nid = 102").unwrap();
        let end = start + t[start..].find("channels = [6, 7]\n").unwrap() + 18;
        format!("{}{}", &t[..start], &t[end..])
    });
    keygen(&fewer);
    std::fs::rename(case("peer-old").join("keys"), case("peer").join("keys")).unwrap();
    cases.push(("key for a peer missing", p, vec![], "102"));

    // 6. A data address another process holds.
    let held = UdpSocket::bind("127.0.0.1:0").unwrap();
    let held_addr = held.local_addr().unwrap().to_string();
    let p = router_small(&case("in-use"), |t| {
        t.replace("127.0.0.1:17201", &held_addr)
    });
    keygen(&p);
    cases.push(("address in use", p, vec![], "already in use"));

    // 7. A node checked for this host whose address is not on it.
    let p = router_small(&case("not-local"), |t| {
        t.replace("127.0.0.1:17102", "192.0.2.7:17102")
    });
    keygen(&p);
    cases.push((
        "address not local",
        p,
        vec!["--id", "2"],
        "not an address of this host",
    ));

    // 8. The state directory is a file (the example's, moved with its socket directory).
    let p = router_small(&case("state"), |t| t);
    keygen(&p);
    std::fs::create_dir_all(case("state").join("sock")).unwrap();
    std::fs::write(case("state").join("sock/state"), "").unwrap();
    cases.push(("state dir is a file", p, vec![], "state.dir"));

    // 9. An admin socket directory every user may write.
    let p = router_small(&case("sockdir"), |t| t);
    keygen(&p);
    let sock = case("sockdir").join("sock");
    std::fs::create_dir_all(&sock).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).unwrap();
    cases.push(("socket dir world-writable", p, vec![], "admin.socket_dir"));

    // 10. A hook whose program does not exist.
    let p = router_small(&case("hook"), |t| {
        format!("{t}\n[hooks]\non_primary = \"/nonexistent/notify-primary.sh\"\n")
    });
    keygen(&p);
    cases.push(("hook program missing", p, vec![], "hooks.on_primary"));

    // 11. Two nodes on one host with one metrics address.
    let p = router_small(&case("metrics"), |t| {
        format!("{t}\n[metrics]\nlisten = \"127.0.0.1:9310\"\n")
    });
    cases.push(("metrics address shared", p, vec![], "metrics"));

    for (what, path, args, needle) in &cases {
        let (code, out) = check(path, args);
        assert_eq!(code, Some(2), "{what}: expected exit 2:\n{out}");
        assert!(out.contains(needle), "{what}: no {needle:?} in:\n{out}");
    }
    drop(held);
}

/// Distinct free loopback TCP addresses, for metrics listeners (all held until picked).
fn free_tcp(n: usize) -> Vec<SocketAddr> {
    let s: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    s.iter().map(|s| s.local_addr().unwrap()).collect()
}

struct Kids {
    dir: PathBuf,
    procs: Vec<(String, Child)>,
}

impl Kids {
    fn spawn(&mut self, name: &str, args: &[&str], env: &[(&str, &str)]) {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new(BIN)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.procs.push((name.to_owned(), child));
    }
}

impl Drop for Kids {
    fn drop(&mut self) {
        for (_, c) in &mut self.procs {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            for (name, _) in &self.procs {
                let log = std::fs::read_to_string(self.dir.join(format!("{name}.log")))
                    .unwrap_or_default();
                eprintln!("---- {name} ----\n{log}");
            }
        }
    }
}

fn scrape(addr: SocketAddr) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nAccept: */*\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP response");
    (
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

/// The exposition text as `(name, labels) -> value`, and `# TYPE` per family. Enough of the
/// text format for the output of `prometheus-client`: one sample per line.
type Samples = BTreeMap<(String, String), f64>;

fn parse_exposition(body: &str) -> (Samples, BTreeMap<String, String>) {
    let mut samples = BTreeMap::new();
    let mut types = BTreeMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap();
            types.insert(name.to_owned(), ty.to_owned());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        samples.insert((name.to_owned(), labels.to_owned()), value);
    }
    (samples, types)
}

fn get(s: &Samples, name: &str, labels: &str) -> f64 {
    *s.get(&(name.to_owned(), labels.to_owned()))
        .unwrap_or_else(|| panic!("no sample {name}{{{labels}}} in {s:?}"))
}

/// Every metric the operator's dashboard reads, by the name it is scraped under.
const METRICS: [&str; 15] = [
    "statesync_role",
    "statesync_epoch",
    "statesync_commit_lag_ops",
    "statesync_commit_lag_seconds",
    "statesync_retention_used_ratio",
    "statesync_datagrams_total",
    "statesync_bytes_total",
    "statesync_retransmits_total",
    "statesync_nacks_total",
    "statesync_rejected_total",
    "statesync_failovers_total",
    "statesync_failover_seconds",
    "statesync_replay_bytes_total",
    "statesync_transfer_bytes_total",
    "statesync_peer_last_seen_seconds",
];

/// Every hook file written: `(node, role, epoch, reason)` (the drill's reader: the files have
/// the format of its hooks).
fn hook_records(dir: &Path) -> Vec<(u64, String, u64, String)> {
    statesync::cli::drill_checks::hook_records(dir)
        .into_iter()
        .map(|h| (u64::from(h.node), h.role, h.epoch, h.reason))
        .collect()
}

#[test]
fn metrics_hooks_and_notify_through_a_switchover() {
    let s = Scratch::new("run");
    let d = common::free_udp(3);
    let m = free_tcp(3);
    let hooks = s.0.join("hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    let staging = s.0.join("hooks-staging");
    std::fs::create_dir_all(&staging).unwrap();
    // One file per transition (mktemp never reuses a name), moved in once written so that the
    // test never reads one half-written.
    let hook = format!(
        "f=$(mktemp {}/$STATESYNC_NODE_ID.XXXXXX) && echo \"$STATESYNC_NODE_ID $STATESYNC_ROLE $STATESYNC_EPOCH $STATESYNC_REASON\" > $f && mv $f {}/",
        staging.display(),
        hooks.display()
    );
    let sock = s.0.join("sock");
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
[submitters]
ids = [900]
# Long timeouts: the standby is frozen for a moment below, and only the operator moves roles.
[timing]
heartbeat_ms = 20
failover_timeout_ms = 3000
drop_timeout_ms = 6000
query_timeout_ms = 100
rto_ms = 50
[security]
key_dir = "keys"
[admin]
socket_dir = {:?}
[metrics.node]
1 = "{}"
2 = "{}"
100 = "{}"
[hooks]
on_primary = {hook:?}
on_standby = {hook:?}
on_fault = {hook:?}
timeout_ms = 2000
"#,
        d[0],
        d[1],
        d[2],
        sock.display().to_string(),
        m[0],
        m[1],
        m[2]
    );
    let cfg = s.0.join("lab.toml");
    std::fs::write(&cfg, text).unwrap();
    keygen(&cfg);
    let (code, out) = check(&cfg, &[]);
    assert_eq!(code, Some(0), "{out}");

    // systemd's side of the notify protocol, for node 1.
    let notify_path = s.0.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // Read as systemd does, all along: a full socket queue would block the sender.
    let (notify_tx, notify_rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match notify.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if notify_tx.send(msg).is_err() {
                        return;
                    }
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    // Stop once the test no longer listens.
                    if notify_tx.send(String::new()).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });

    let c = cfg.to_str().unwrap();
    let mut kids = Kids {
        dir: s.0.clone(),
        procs: Vec::new(),
    };
    let up = Duration::from_secs(10);
    kids.spawn(
        "primary",
        &["primary", "--config", c, "--id", "1"],
        &[
            ("NOTIFY_SOCKET", notify_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "100000"),
        ],
    );
    let admin1 = sock.join("1.sock");
    let admin2 = sock.join("2.sock");
    wait_for("primary up", up, || {
        status(&admin1).filter(|v| v["role"] == "primary")
    });
    kids.spawn("standby", &["standby", "--config", c, "--id", "2"], &[]);
    kids.spawn("client", &["client", "--config", c, "--id", "100"], &[]);
    let p = wait_for("standby in sync set and client heard", up, || {
        status(&admin1).filter(|v| v["sync_mask"].as_u64() == Some(2))?;
        let c = status(&sock.join("100.sock"))?;
        let v = status(&admin1)?;
        (c["epoch"] == v["epoch"]).then_some(v)
    });
    let epoch1 = p["epoch"].as_u64().unwrap();

    // Scrape the primary: every metric, with real values.
    let (samples, types) = wait_for("both peers in the primary's metrics", up, || {
        let (status_line, body) = scrape(m[0]);
        assert!(status_line.contains("200"), "{status_line}");
        let (samples, types) = parse_exposition(&body);
        let peers = samples
            .keys()
            .filter(|(n, _)| n == "statesync_peer_last_seen_seconds")
            .count();
        (peers == 2).then_some((samples, types))
    });
    for name in METRICS {
        let found = samples
            .keys()
            .any(|(n, _)| n == name || n.strip_prefix(name).is_some_and(|s| s.starts_with('_')));
        assert!(found, "{name} not in the scrape: {samples:?}");
    }
    assert_eq!(
        types.get("statesync_failover_seconds").map(String::as_str),
        Some("histogram")
    );
    // The shipped Grafana dashboard reads only series that exist.
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/grafana-statesync.json"
        ))
        .unwrap(),
    )
    .unwrap();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for (i, _) in expr.match_indices("statesync_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    samples.keys().any(|(n, _)| *n == name),
                    "dashboard panel {} reads {name}, which the node does not serve",
                    p["title"]
                );
            }
        }
    }
    assert_eq!(get(&samples, "statesync_role", "role=\"primary\""), 1.0);
    assert_eq!(get(&samples, "statesync_role", "role=\"standby\""), 0.0);
    assert_eq!(get(&samples, "statesync_epoch", ""), epoch1 as f64);
    assert!(get(&samples, "statesync_datagrams_total", "direction=\"tx\"") > 0.0);
    assert!(get(&samples, "statesync_datagrams_total", "direction=\"rx\"") > 0.0);
    assert!(get(&samples, "statesync_bytes_total", "direction=\"rx\"") > 0.0);
    for ch in 0..3 {
        get(
            &samples,
            "statesync_commit_lag_ops",
            &format!("channel=\"{ch}\""),
        );
        get(
            &samples,
            "statesync_commit_lag_seconds",
            &format!("channel=\"{ch}\""),
        );
    }
    for peer in [2, 100] {
        let age = get(
            &samples,
            "statesync_peer_last_seen_seconds",
            &format!("peer=\"{peer}\""),
        );
        // Heartbeats every 20 ms; the feed is at most 100 ms old.
        assert!(
            (0.0..2.0).contains(&age),
            "peer {peer} last seen {age} s ago"
        );
    }
    assert_eq!(get(&samples, "statesync_failovers_total", ""), 0.0);
    assert_eq!(get(&samples, "statesync_failover_seconds_count", ""), 0.0);
    // The client serves its own.
    let (_, body) = scrape(m[2]);
    let (cs, _) = parse_exposition(&body);
    assert_eq!(get(&cs, "statesync_role", "role=\"client\""), 1.0);

    // Commit lag, for real: freeze the standby (no acks, so nothing commits), submit, and
    // watch the primary's lag in ops and in time; thaw it, and the lag goes back to 0.
    let mut sub = Submitter::new(&[(1, d[0]), (2, d[1])], &s.0.join("keys/node-900.key"));
    let standby_pid = kids.procs[1].1.id() as i32;
    // SAFETY: kill(2) on a child we spawned and have not reaped.
    unsafe { libc::kill(standby_pid, libc::SIGSTOP) };
    let mut buf = vec![0u8; 1472];
    for seq in 1..=6u64 {
        let len = submit_frame(&mut buf, seq, (seq % 3) as u32);
        sub.send(&mut buf[..len]);
    }
    let lagging = std::panic::catch_unwind(|| {
        wait_for("the primary's commit lag", Duration::from_secs(2), || {
            let (samples, _) = parse_exposition(&scrape(m[0]).1);
            let ops: f64 = (0..3)
                .map(|ch| {
                    get(
                        &samples,
                        "statesync_commit_lag_ops",
                        &format!("channel=\"{ch}\""),
                    )
                })
                .sum();
            let secs = (0..3)
                .map(|ch| {
                    get(
                        &samples,
                        "statesync_commit_lag_seconds",
                        &format!("channel=\"{ch}\""),
                    )
                })
                .fold(0f64, f64::max);
            (ops == 6.0 && secs >= 0.1).then_some((ops, secs))
        })
    });
    // SAFETY: as above.
    unsafe { libc::kill(standby_pid, libc::SIGCONT) };
    let (ops, secs) = lagging.unwrap_or_else(|e| std::panic::resume_unwind(e));
    assert!(secs < 3.0, "lag of {ops} ops for {secs} s");
    wait_for("the lag back to 0 once the standby acks", up, || {
        let (samples, _) = parse_exposition(&scrape(m[0]).1);
        (0..3)
            .all(|ch| {
                get(
                    &samples,
                    "statesync_commit_lag_ops",
                    &format!("channel=\"{ch}\""),
                ) == 0.0
                    && get(
                        &samples,
                        "statesync_commit_lag_seconds",
                        &format!("channel=\"{ch}\""),
                    ) == 0.0
            })
            .then_some(())
    });
    wait_for("standby back in the sync set", up, || {
        status(&admin1).filter(|v| v["sync_mask"].as_u64() == Some(2) && v["role"] == "primary")
    });

    // Switchover: node 2 leads a failover and takes over.
    let v = request_unix(&admin2, &json!({"cmd": "takeover"}), Duration::from_secs(2)).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    let s2 = wait_for("node 2 primary", up, || {
        status(&admin2)
            .filter(|v| v["role"] == "primary" && !v["failover"]["finished_unix_us"].is_null())
    });
    let epoch2 = s2["epoch"].as_u64().unwrap();
    assert!(epoch2 > epoch1);
    let f = &s2["failover"];
    let took_s = (f["finished_unix_us"].as_u64().unwrap() - f["started_unix_us"].as_u64().unwrap())
        as f64
        / 1e6;
    let samples2 = wait_for("node 2's metrics count the failover", up, || {
        let (samples, _) = parse_exposition(&scrape(m[1]).1);
        (samples.get(&("statesync_failovers_total".into(), String::new())) == Some(&1.0))
            .then_some(samples)
    });
    assert_eq!(get(&samples2, "statesync_role", "role=\"primary\""), 1.0);
    assert_eq!(get(&samples2, "statesync_epoch", ""), epoch2 as f64);
    assert_eq!(get(&samples2, "statesync_failover_seconds_count", ""), 1.0);
    let sum = get(&samples2, "statesync_failover_seconds_sum", "");
    assert!((sum - took_s).abs() < 1e-6, "sum {sum} vs status {took_s}");

    // The hooks: one file per transition, with node, role, epoch and reason.
    let recs = wait_for("hook files of the switchover", up, || {
        let r = hook_records(&hooks);
        let n2 = r
            .iter()
            .any(|(n, role, e, _)| *n == 2 && role == "primary" && *e == epoch2);
        let n1 = r
            .iter()
            .any(|(n, role, e, _)| *n == 1 && role != "primary" && *e == epoch2);
        (n2 && n1).then_some(r)
    });
    let has = |node: u64, role: &str, epoch: u64, why: &str| {
        recs.iter()
            .any(|(n, r, e, reason)| *n == node && r == role && *e == epoch && reason.contains(why))
    };
    assert!(has(1, "primary", epoch1, "start: primary"), "{recs:?}");
    assert!(has(2, "primary", epoch2, "switchover"), "{recs:?}");
    assert!(
        recs.iter()
            .any(|(n, r, _, _)| *n == 2 && (r == "standby" || r == "joining")),
        "{recs:?}"
    );
    assert!(
        !recs.iter().any(|(n, ..)| *n == 100),
        "clients have no role hooks"
    );
    // The exit status is logged once the hook has ended (just after it wrote its file).
    wait_for("node 2 logs its on_primary hook's exit", up, || {
        let logs = std::fs::read_to_string(s.0.join("standby.log")).ok()?;
        logs.lines()
            .any(|l| l.contains("hook on_primary") && l.ends_with("exit 0"))
            .then_some(())
    });

    // Node 1 told "systemd": READY with its role, STATUS on the change, and WATCHDOG beats.
    let msgs: Vec<String> = notify_rx.try_iter().filter(|m| !m.is_empty()).collect();
    drop(notify_rx);
    let _ = reader.join();
    let all = msgs.join("|");
    assert!(
        msgs[0].contains("READY=1") && msgs[0].contains(&format!("STATUS=primary, epoch {epoch1}")),
        "{all}"
    );
    assert!(
        msgs.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3,
        "{all}"
    );
    let changed: BTreeSet<&str> = msgs
        .iter()
        .filter_map(|m| m.lines().find(|l| l.starts_with("STATUS=")))
        .collect();
    assert!(
        changed
            .iter()
            .any(|l| l.contains(&format!("epoch {epoch2}"))),
        "{all}"
    );
}

#[test]
fn a_node_that_fails_runs_its_fault_hook() {
    let s = Scratch::new("fault");
    let d = common::free_udp(3);
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let out = s.0.join("fault.txt");
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
channels = [0]
[admin]
socket_dir = {:?}
[metrics.node]
1 = "{}"
[hooks]
on_fault = "echo \"$STATESYNC_NODE_ID $STATESYNC_ROLE $STATESYNC_EPOCH $STATESYNC_REASON\" > {}"
"#,
        d[0],
        d[1],
        d[2],
        s.0.join("sock").display().to_string(),
        held.local_addr().unwrap(),
        out.display()
    );
    let cfg = s.0.join("lab.toml");
    std::fs::write(&cfg, text).unwrap();
    // The metrics address is taken: the node starts its sockets, fails, runs on_fault, exits 1.
    let st = Command::new(BIN)
        .args([
            "primary",
            "--insecure",
            "--config",
            cfg.to_str().unwrap(),
            "--id",
            "1",
        ])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(1));
    let line = std::fs::read_to_string(&out).unwrap();
    assert!(line.starts_with("1 stopped "), "{line}");
    assert!(line.contains("error: metrics"), "{line}");
    assert!(line.contains("in use"), "{line}");
    drop(held);
}
