//! One drill round in CI: separate daemon processes on loopback, load from a separate load
//! client, the primary killed with SIGKILL, the standby takes over, the old primary rejoins,
//! and every client converges with no committed op lost.

use std::process::Command;

#[test]
fn one_kill_primary_round_converges() {
    let out = Command::new(env!("CARGO_BIN_EXE_statesync"))
        .args([
            "drill",
            "--rounds",
            "1",
            "--clients",
            "2",
            "--channels-per-client",
            "2",
            "--rate",
            "5000",
        ])
        .output()
        .expect("run the drill");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "drill failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("rounds converged: 1 of 1"), "{stdout}");
    assert!(stdout.contains("committed ops lost: 0"), "{stdout}");
}
