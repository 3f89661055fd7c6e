//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/*`) through the same
//! harness function the `cargo fuzz` target calls (`statesync::fuzz_harness`), on the stable
//! toolchain, so CI keeps every input the fuzzers found interesting (and every crash that was
//! fixed) passing. Also runs the generated seeds, so the seed generator keeps working.
//!
//! `cargo test --release --test fuzz_corpus -- --ignored write_seeds` rewrites the seed
//! inputs into `fuzz/seeds/<target>/` (see `fuzz/README.md`).

use statesync::fuzz_harness::{Harness, TARGETS, seed_inputs};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn replay(target: &str, run: Harness) -> usize {
    let dir = fuzz_dir().join("corpus").join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (corpora are committed)", dir.display()));
    let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut n = 0;
    for path in files.iter().filter(|p| p.is_file()) {
        let data = std::fs::read(path).unwrap();
        // A panic names the file: rerun it with `cargo fuzz run <target> <file>`.
        eprintln!("{}", path.display());
        run(&data);
        n += 1;
    }
    assert!(n > 0, "{}: no corpus files", dir.display());
    n
}

fn target(name: &str) -> Harness {
    TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .unwrap()
}

#[test]
fn corpus_decode() {
    replay("decode", target("decode"));
}

#[test]
fn corpus_control_unit() {
    replay("control_unit", target("control_unit"));
}

#[test]
fn corpus_client() {
    replay("client", target("client"));
}

#[test]
fn corpus_config() {
    replay("config", target("config"));
}

#[test]
fn corpus_auth() {
    replay("auth", target("auth"));
}

#[test]
fn corpus_admin() {
    replay("admin", target("admin"));
}

#[test]
fn every_target_has_a_corpus_test() {
    let names: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "decode",
            "control_unit",
            "client",
            "config",
            "auth",
            "admin"
        ]
    );
}

#[test]
fn seeds_run() {
    for (name, run) in TARGETS {
        let seeds = seed_inputs(name);
        assert!(!seeds.is_empty(), "{name}: no seeds");
        for (_, data) in &seeds {
            run(data);
        }
    }
}

/// Writes the generated seeds to `fuzz/seeds/<target>/<name>` (not committed; merged into
/// the corpora with `cargo fuzz cmin`).
#[test]
#[ignore]
fn write_seeds() {
    for (name, _) in TARGETS {
        let dir = fuzz_dir().join("seeds").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (file, data) in seed_inputs(name) {
            std::fs::write(dir.join(file), data).unwrap();
        }
    }
}

/// The seeds reach the deep states they were recorded for: the harness node, fed what its
/// real counterpart received, ends where that node ended.
#[test]
fn seeds_reach_deep_states() {
    use statesync::fuzz_harness::{run_client, run_control_unit};
    use statesync::proto::Role;
    let cu: Vec<(String, Vec<u8>)> = seed_inputs("control_unit");
    let get = |name: &str| &cu.iter().find(|(n, _)| n == name).unwrap().1;
    let c = run_control_unit(get("crash-s0-cu2"));
    assert_eq!(c.role(), Role::Primary, "the successor took over");
    assert!(c.epoch() > statesync::proto::INITIAL_EPOCH);
    let c = run_control_unit(get("crash-s0-cu3"));
    assert_eq!(c.role(), Role::Standby);
    let c = run_control_unit(get("restart-s16-3"));
    assert_eq!(c.role(), Role::Standby, "the restarted unit joined");
    let c = run_control_unit(get("switchover-s0-cu2"));
    assert_eq!(c.role(), Role::Primary, "the switchover target took over");
    let c = run_control_unit(get("steady-s0-cu1"));
    assert!(c.next_op(0) > 1, "the primary took submits");
    let c = run_control_unit(get("key-mismatch-cu2"));
    assert_eq!(c.role(), Role::Standby, "no takeover on a key mismatch");
    assert_eq!(c.key_mismatch(), Some(1));
    let cl: Vec<(String, Vec<u8>)> = seed_inputs("client");
    let get = |name: &str| &cl.iter().find(|(n, _)| n == name).unwrap().1;
    let c = run_client(get("restart-s20-100"));
    assert!(
        !c.is_unknown(0) && !c.is_unknown(2),
        "the restarted client was replayed"
    );
    let c = run_client(get("crash-s0-client100"));
    assert_eq!(c.primary(), Some(2));
    assert!(c.applied(0).unwrap() > statesync::proto::OpId::ZERO);
}
