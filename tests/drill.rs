//! Drill rounds in CI: separate daemon processes on loopback, load from a separate load client,
//! the primary frozen and killed, the standby takes over, the old primary rejoins, and every
//! client converges with no committed op lost. A planted bug that discards committed ops must
//! be seen by the same drill (else its "lost 0" proves nothing). With three control units the
//! vote picks the successor and every standby must converge.

use statesync::cli::drill_checks::hook_records;
use std::process::{Command, Output};
use std::sync::Mutex;

/// One drill at a time: each runs several daemons and a load client with 50 ms failover
/// timeouts, and three of them at once on a 2-core CI machine starve each other into spurious
/// failovers (a standby took over before the round's committed set was read).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn drill(extra: &[&str]) -> (Output, String) {
    drill_with(Command::new(env!("CARGO_BIN_EXE_statesync")), extra)
}

/// A short drill run by `cmd` (a statesync binary), with `extra` arguments.
fn drill_with(mut cmd: Command, extra: &[&str]) -> (Output, String) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out = cmd
        .args([
            "drill",
            "--rounds",
            "2",
            "--clients",
            "2",
            "--channels-per-client",
            "2",
            "--rate",
            "5000",
        ])
        .args(extra)
        .output()
        .expect("run the drill");
    // What the drill printed, then how it ended and its standard error: a drill that fails
    // before its first line (a start failure) says why only there.
    let stdout = format!(
        "{}\n--- drill {}; its standard error:\n{}",
        String::from_utf8_lossy(&out.stdout),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (out, stdout)
}

/// The number after `key` on the summary line that has it.
fn number_after(stdout: &str, key: &str) -> u64 {
    let at = stdout
        .find(key)
        .unwrap_or_else(|| panic!("no '{key}' in:\n{stdout}"))
        + key.len();
    stdout[at..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after '{key}' in:\n{stdout}"))
}

/// Also draws the first round (`--plot`): its events come from the daemons' logs and status.
#[test]
fn kill_primary_rounds_converge_with_every_committed_op_checked() {
    let plot =
        std::env::temp_dir().join(format!("statesync-drill-plot-{}.svg", std::process::id()));
    let (out, stdout) = drill(&["--plot", plot.to_str().unwrap()]);
    assert!(out.status.success(), "drill failed:\n{stdout}");
    assert!(stdout.contains("rounds converged: 2 of 2"), "{stdout}");
    assert_eq!(number_after(&stdout, "committed ops lost:"), 0, "{stdout}");
    assert!(
        number_after(&stdout, "committed ops checked:") > 0,
        "{stdout}"
    );
    let svg = std::fs::read_to_string(&plot).expect("drill --plot wrote its SVG");
    let _ = std::fs::remove_file(&plot);
    for text in [
        "ms since the primary was stopped",
        "unit 1 (old primary)",
        "unit 2 (new primary)",
        "channel 3",
        "client 101",
        "primary frozen (SIGSTOP): t = 0",
        "failover: detection (queries sent) to takeover",
        "client follows the new epoch",
        "first accepted submit",
        "it rejoined: back in the sync set",
        "Bytes replayed per channel against a full resync",
    ] {
        assert!(svg.contains(text), "{text:?} missing from the drill plot");
    }
    // Every channel was resolved (a time read from the new primary's log).
    assert_eq!(
        svg.matches("in_sync (").count()
            + svg.matches("ahead (").count()
            + svg.matches("behind (").count()
            + svg.matches("unknown (").count(),
        4,
        "{svg}"
    );
}

#[test]
fn planted_discard_of_committed_ops_is_reported_lost() {
    // Its digests may never converge: do not wait the default 20 s for them.
    let (out, stdout) = drill(&[
        "--inject-bug",
        "discard-committed",
        "--converge-timeout-ms",
        "2000",
    ]);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("planted bug discard-committed"), "{stdout}");
    assert!(
        number_after(&stdout, "committed ops lost:") > 0,
        "the planted loss went unseen:\n{stdout}"
    );
    // Every round, not just one: the kill-time capture must see the discarded op each time.
    assert_eq!(number_after(&stdout, "(in "), 2, "{stdout}");
}

#[test]
fn three_control_units_kill_primary_rounds_converge() {
    // The vote picks the successor; every standby must end in sync with the new primary.
    let (out, stdout) = drill(&["--control-units", "3"]);
    assert!(out.status.success(), "drill failed:\n{stdout}");
    assert!(stdout.contains("3 control units"), "{stdout}");
    assert!(stdout.contains("rounds converged: 2 of 2"), "{stdout}");
    assert_eq!(number_after(&stdout, "committed ops lost:"), 0, "{stdout}");
    assert!(
        number_after(&stdout, "committed ops checked:") > 0,
        "{stdout}"
    );
    // The surviving standby was in sync: it keeps its state through the failover and takes
    // only what it lacks, not the full transfer every standby used to get. (A channel on which
    // it applied less than the successor had when it took over still gets a full transfer:
    // the successor no longer retains those ops. Half the full size leaves room for that.)
    let round1 = stdout
        .lines()
        .find(|l| l.starts_with("round  1:"))
        .unwrap_or_else(|| panic!("no round 1 in:\n{stdout}"));
    let sent = number_after(round1, "standby transfer");
    let at = round1.find("standby transfer").expect("checked above");
    let full = number_after(&round1[at..], "vs full");
    assert!(sent * 2 < full, "{round1}");
}

/// An out-of-sync round: clients are ahead of the standby on every loaded channel when it takes
/// over. `failover --dry-run`, asked as the standby resumes (with each client's own answer),
/// must predict per channel the resolution, cut, sections and bytes the failover then replays.
/// The drill's role-change hooks write one file per transition, read here from the directory.
#[test]
fn out_of_sync_failover_does_what_the_dry_run_predicted_and_hooks_write_each_transition() {
    let tmp = std::env::temp_dir().join(format!("statesync-drill-oos-{}", std::process::id()));
    let hooks = tmp.join("hooks");
    let json = tmp.join("report.json");
    std::fs::create_dir_all(&hooks).unwrap();
    let (out, stdout) = drill(&[
        "--variant",
        "out-of-sync",
        // The dry run is asked in the half failover timeout before the standby takes over:
        // 100 ms, so that a busy machine still answers it in time.
        "--failover-timeout-ms",
        "200",
        "--hook-dir",
        hooks.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "drill failed:\n{stdout}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("drill --json wrote its report"))
            .unwrap();
    // Every hook file ("node role epoch reason"), read as the drill reads them.
    let files: Vec<(u64, String, u64, String)> = hook_records(&hooks)
        .into_iter()
        .map(|h| (u64::from(h.node), h.role, h.epoch, h.reason))
        .collect();
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(
        files.iter().any(|(n, r, e, why)| *n == 1
            && r == "primary"
            && *e == 256
            && why == "start: primary"),
        "{files:?}"
    );
    for round in report["per_round"].as_array().unwrap() {
        let new_primary = round["new_primary"].as_u64().unwrap();
        let killed = round["killed"].as_u64().unwrap();
        assert_eq!(round["primary_hook"], true, "{round}");
        // The takeover, and the killed unit's way back (joining, then standby), each a file.
        let took_over = files
            .iter()
            .find(|(n, r, _, why)| {
                *n == new_primary && r == "primary" && why.starts_with("failover")
            })
            .unwrap_or_else(|| panic!("no takeover hook file: {files:?}"));
        for role in ["joining", "standby"] {
            assert!(
                files.iter().any(|(n, r, e, _)| *n == killed
                    && r == role
                    && (role == "joining" || *e == took_over.2)),
                "no {role} hook file of unit {killed}: {files:?}"
            );
        }
        let d = &round["dry_run"];
        assert_eq!(d["missed"], false, "{round}");
        let channels = d["channels"].as_u64().unwrap();
        assert!(
            channels > 0 && round["out_of_sync_channels"].as_u64().unwrap() > 0,
            "{round}"
        );
        assert_eq!(d["matching"].as_u64(), Some(channels), "{d}");
        assert_eq!(d["answered"].as_u64(), Some(channels), "{d}");
        assert_eq!(d["predicted_replay_bytes"], d["replayed_bytes"], "{d}");
    }
}

/// `cargo install` puts the binary far from the repository's `tools/`: the namespace lab must
/// not need them. A copy of the binary in a bare directory, run from there, builds the lab (one
/// network namespace per node), runs two rounds across it and tears it down. Needs root and
/// iproute2, as `drill --netns` does; without them the test says so and checks nothing.
#[test]
fn an_installed_binary_runs_the_namespace_lab() {
    // SAFETY: geteuid takes no arguments, touches no memory and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let ip = Command::new("ip").args(["netns", "list"]).output();
    if !root || !ip.is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED: drill --netns needs root and iproute2");
        return;
    }
    let bare = std::env::temp_dir().join(format!("statesync-installed-{}", std::process::id()));
    std::fs::create_dir_all(&bare).unwrap();
    let exe = bare.join("statesync");
    std::fs::copy(env!("CARGO_BIN_EXE_statesync"), &exe).unwrap();
    let mut cmd = Command::new(&exe);
    cmd.current_dir(&bare);
    let (out, stdout) = drill_with(cmd, &["--netns"]);
    let _ = std::fs::remove_dir_all(&bare);
    assert!(out.status.success(), "drill --netns failed:\n{stdout}");
    assert!(stdout.contains("network namespaces"), "{stdout}");
    assert!(stdout.contains("rounds converged: 2 of 2"), "{stdout}");
    let left = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(
        !left.lines().any(|l| l.starts_with("ss-")),
        "the lab was not torn down: {left}"
    );
}
