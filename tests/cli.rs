//! The command line as a user meets it: human units, choices checked when read, shell
//! completions and the man page.

use std::process::Command;

fn statesync(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_statesync"))
        .args(args)
        .output()
        .expect("run statesync")
}

#[test]
fn completions_and_man_page_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let out = statesync(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("churn") && text.contains("drill"),
            "{shell}: {text:.200}"
        );
    }
    let man = statesync(&["man"]);
    assert!(man.status.success());
    let text = String::from_utf8_lossy(&man.stdout);
    assert!(text.contains(".TH statesync 1"), "{text:.200}");
}

#[test]
fn units_and_choices_are_checked_when_read() {
    let out = statesync(&["churn", "--rate", "fast"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("400k"));
    let out = statesync(&["drill", "--variant", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("double-fault"));
    // A tiny real run with every human unit.
    let out = statesync(&[
        "churn",
        "--duration",
        "300ms",
        "--rate",
        "20k",
        "--no-prefill",
        "--keys",
        "4096",
        "--channels",
        "4",
        "--workers",
        "1",
        "--json",
    ]);
    // A bare --json: standard output is the JSON report alone, the text goes to standard error
    // (as `status --json` and `failover --dry-run --json` print JSON alone).
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("verdict: OK"), "{text}");
    assert!(
        !text.contains("prefill:"),
        "--no-prefill still prefilled: {text}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(report["digests_equal"], true, "{report}");
    assert_eq!(report["lost_committed"], 0, "{report}");
}

#[test]
fn hiccups_reports_every_core_as_text_and_json() {
    let out = statesync(&["hiccups", "--duration", "200ms", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let cores = report["cores"].as_array().expect("cores");
    assert!(!cores.is_empty());
    for c in cores {
        let elapsed = c["elapsed_ns"].as_u64().unwrap();
        assert!(elapsed >= 200_000_000, "{c}");
        assert!(c["lost_ns"].as_u64().unwrap() <= elapsed, "{c}");
        assert_eq!(c["floors"].as_array().unwrap().len(), 2, "{c}");
    }
    // The text went to standard error, a line per core and the floor it sets.
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        text.matches("floor for a latency tail").count(),
        cores.len(),
        "{text}"
    );
    let out = statesync(&["hiccups", "--cores", "100000", "--duration", "10ms"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cores"));
}
