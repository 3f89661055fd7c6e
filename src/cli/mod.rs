//! Command implementations behind the `statesync` binary (kept in the library so that tests can
//! run them).

pub mod churn;
pub mod drill;
pub mod drill_checks;
pub mod hiccups;
pub mod hostile;
pub mod ledger;
pub mod load;
pub mod platform;
pub mod plot;
pub mod sim;
pub mod units;

/// `--json` means the same in every command: the report as JSON on standard output. `churn` and
/// `drill`, which also print a text report and progress, take `--json FILE` too: the JSON then
/// goes to FILE and the text stays on standard output. With a bare `--json` their text goes to
/// standard error, so that standard output is the JSON alone.
pub const JSON_STDOUT: &str = "-";

static TEXT_TO_STDERR: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Where a command's text report goes: standard error once `--json` claimed standard output.
pub fn text_to_stderr() -> bool {
    TEXT_TO_STDERR.load(std::sync::atomic::Ordering::Relaxed)
}

/// Reads a `--json [FILE]` argument: with a bare `--json`, the text goes to standard error
/// from now on.
pub fn claim_stdout_for_json(json: Option<&std::path::Path>) {
    if json.is_some_and(|p| p.as_os_str() == JSON_STDOUT) {
        TEXT_TO_STDERR.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Writes a command's JSON report where `--json` said: standard output or a file.
pub fn write_json(path: &std::path::Path, report: &serde_json::Value) -> Result<(), String> {
    let text = serde_json::to_string_pretty(report).map_err(|e| format!("--json: {e}"))?;
    if path.as_os_str() == JSON_STDOUT {
        println!("{text}");
        Ok(())
    } else {
        std::fs::write(path, text).map_err(|e| format!("--json {}: {e}", path.display()))
    }
}

/// `println!` for a command's text report: to standard error when `--json` took standard
/// output (see [`claim_stdout_for_json`]).
macro_rules! say {
    ($($arg:tt)*) => {
        if $crate::cli::text_to_stderr() {
            eprintln!($($arg)*)
        } else {
            println!($($arg)*)
        }
    };
}
pub(crate) use say;
