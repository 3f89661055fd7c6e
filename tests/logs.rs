//! The daemons' log (issue 12 item 5): `--log-format json` writes only JSON lines, each with a
//! level, a time stamp and the node's id; a flood of garbage datagrams is counted in `status`
//! but logged as a few rate-limited lines, never one per datagram.

mod common;

use common::{status, wait_for};
use serde_json::Value;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_statesync");

/// A scratch directory with the nodes started in it; kills them and (unless the test
/// failed) removes the directory when dropped, printing the logs on failure.
struct Lab {
    dir: PathBuf,
    config: PathBuf,
    addrs: Vec<SocketAddr>,
    procs: Vec<(String, Child)>,
}

impl Lab {
    fn new(name: &str) -> Lab {
        let dir =
            std::env::temp_dir().join(format!("statesync-logs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let addrs = common::free_udp(3);
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
"#,
            addrs[0],
            addrs[1],
            addrs[2],
            dir.join("sock").display().to_string()
        );
        let config = dir.join("lab.toml");
        std::fs::write(&config, text).unwrap();
        Lab {
            dir,
            config,
            addrs,
            procs: Vec::new(),
        }
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log_path(name)).unwrap_or_default()
    }

    fn sock(&self, id: u32) -> PathBuf {
        self.dir.join("sock").join(format!("{id}.sock"))
    }

    fn spawn(&mut self, name: &str, args: &[&str]) {
        let log = std::fs::File::create(self.log_path(name)).unwrap();
        let child = Command::new(BIN)
            .args(args)
            .args(["--insecure", "--config", self.config.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.procs.push((name.to_owned(), child));
    }

    /// SIGTERM to `name`, then waits for it to exit (so that its last lines are written).
    fn stop(&mut self, name: &str) {
        let (_, c) = self.procs.iter_mut().find(|(n, _)| n == name).unwrap();
        // SAFETY: kill(2) on the pid of a child this test started and has not reaped yet.
        let r = unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(r, 0);
        let st = c.wait().unwrap();
        assert!(st.success(), "{name} exited with {st}");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, c) in &mut self.procs {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            for (name, _) in &self.procs {
                eprintln!("---- {name} ----\n{}", self.log(name));
            }
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Every line of a `--log-format json` log, parsed; panics on a line that is not a JSON object
/// with a level, an RFC 3339 time stamp, the node's id and a message.
fn json_lines(log: &str, id: u64) -> Vec<Value> {
    log.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"));
            assert!(
                ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"]
                    .contains(&v["level"].as_str().unwrap_or("")),
                "level: {l}"
            );
            let stamp = v["timestamp"].as_str().unwrap_or("");
            assert!(
                statesync::daemon::parse_unix_us(stamp).is_some(),
                "timestamp: {l}"
            );
            assert_eq!(v["node"].as_u64(), Some(id), "node: {l}");
            assert!(v["message"].is_string(), "message: {l}");
            v
        })
        .collect()
}

fn messages(lines: &[Value]) -> Vec<&str> {
    lines.iter().filter_map(|v| v["message"].as_str()).collect()
}

#[test]
fn json_log_lines_carry_a_level_a_time_and_the_node() {
    let mut lab = Lab::new("json");
    lab.spawn("primary", &["primary", "--id", "1", "--log-format", "json"]);
    let up = Duration::from_secs(20);
    wait_for("the primary answers", up, || status(&lab.sock(1)));
    // A re-joining standby: a state transfer, whose per-channel steps are `debug` records.
    lab.spawn(
        "standby",
        &[
            "standby",
            "--rejoin",
            "--id",
            "2",
            "--log-format",
            "json",
            "--log-level",
            "debug",
        ],
    );
    wait_for("the standby re-joins", up, || {
        status(&lab.sock(2)).filter(|v| v["role"] == "standby")
    });
    wait_for("the primary logs the join", up, || {
        lab.log("primary")
            .contains("joined the sync set")
            .then_some(())
    });
    lab.stop("standby");
    lab.stop("primary");

    let primary = json_lines(&lab.log("primary"), 1);
    let m = messages(&primary);
    assert!(
        m.iter().any(|m| m.starts_with("started as primary")),
        "{m:?}"
    );
    assert!(m.iter().any(|m| m.contains("joined the sync set")), "{m:?}");
    assert!(m.iter().any(|m| m.starts_with("stopping:")), "{m:?}");
    // --insecure is a warning; the default level is info: no debug records.
    assert!(
        primary
            .iter()
            .any(|v| v["level"] == "WARN" && v["message"].as_str().unwrap().contains("--insecure")),
        "{m:?}"
    );
    assert!(!primary.iter().any(|v| v["level"] == "DEBUG"), "{m:?}");

    let standby = json_lines(&lab.log("standby"), 2);
    let m = messages(&standby);
    assert!(
        m.iter()
            .any(|m| m.starts_with("started as standby --rejoin")),
        "{m:?}"
    );
    assert!(
        m.iter().any(|m| m.starts_with("state transfer complete")),
        "{m:?}"
    );
    // --log-level debug adds the per-channel steps of the transfer.
    assert!(standby.iter().any(|v| v["level"] == "DEBUG"), "{m:?}");
}

/// `n` pseudo-random bytes (xorshift), different for each `seed`.
fn garbage(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The rejection lines of a JSON log: `(reason, count)` each.
fn rejection_lines(path: &Path) -> Vec<(String, u64)> {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    json_lines(&log, 1)
        .into_iter()
        .filter(|v| v["message"].as_str().unwrap().contains("datagrams:"))
        .map(|v| {
            assert_eq!(v["level"], "WARN", "{v}");
            (
                v["reason"].as_str().unwrap().to_owned(),
                v["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_flood_of_garbage_is_counted_but_logged_at_most_once_a_second() {
    let mut lab = Lab::new("flood");
    lab.spawn("primary", &["primary", "--id", "1", "--log-format", "json"]);
    let up = Duration::from_secs(20);
    wait_for("the primary answers", up, || status(&lab.sock(1)));
    // From standby 2's address (it is not running): the runner lets the datagrams through to
    // the protocol core, which rejects them (no authentication: --insecure).
    let sock = UdpSocket::bind(lab.addrs[1]).unwrap();
    const FLOOD: u64 = 5_000;
    let start = Instant::now();
    for i in 0..FLOOD {
        let len = 16 + (i as usize * 37) % 300;
        sock.send_to(&garbage(i + 1, len), lab.addrs[0]).unwrap();
        // 100 datagrams every 50 ms: 2.5 s of flood, without overrunning the receive buffer.
        if i % 100 == 99 {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let flood_s = start.elapsed().as_secs_f64();
    let rejected = |v: &Value| v["counters"]["rejected"].as_u64().unwrap_or(0);
    let s = wait_for("the status counts the flood", up, || {
        status(&lab.sock(1)).filter(|v| rejected(v) >= FLOOD * 9 / 10)
    });
    let counted = rejected(&s);
    // Every rejection is eventually in a log line's count: the sum catches up with the
    // counters within about a second of the flood's end.
    let lines = wait_for("the log accounts for every rejection", up, || {
        let lines = rejection_lines(&lab.log_path("primary"));
        let sum: u64 = lines.iter().map(|l| l.1).sum();
        let now = rejected(&status(&lab.sock(1))?);
        (sum == now && sum >= counted).then_some(lines)
    });
    lab.stop("primary");
    // At most one line a second per reason (plus the first one): a handful, never thousands.
    let reasons: std::collections::BTreeSet<&str> = lines.iter().map(|l| l.0.as_str()).collect();
    let most = reasons.len() as f64 * (flood_s + 3.0);
    assert!(
        (lines.len() as f64) <= most && lines.len() <= 20,
        "{} rejection lines for {counted} rejections in {flood_s:.1} s: {lines:?}",
        lines.len()
    );
    println!(
        "{} rejection lines for {counted} rejections in {flood_s:.1} s: {lines:?}",
        lines.len()
    );
    assert!(
        lines.iter().any(|l| l.1 > 100),
        "a line sums up many datagrams: {lines:?}"
    );
}
