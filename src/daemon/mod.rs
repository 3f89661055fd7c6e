//! Running one node of a deployment as its own process: the shared TOML config, the node's
//! event loop, the admin JSON protocol and the commands behind `statesync primary|standby|
//! client|status|switchover`. The contract is `docs/DAEMON.md`.

pub mod admin;
pub mod check;
pub mod cli;
pub mod config;
pub mod hooks;
pub mod logs;
pub mod metrics;
pub mod notify;
pub mod run;
pub mod state;

pub use config::{ConfigError, DeploymentConfig, load};
pub use run::{DaemonError, Mode, run_node};

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, now.
pub fn unix_now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The node's clock: monotonic microseconds for the protocol core, with the Unix time it
/// started at, so that admin replies can report protocol times as Unix microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    start_unix_us: u64,
}

impl Clock {
    /// The protocol clock's value at start. Not 0, so that 0 can mean "never" in timings.
    pub const ORIGIN_US: u64 = 1_000_000;

    pub fn new() -> Clock {
        Clock {
            start: Instant::now(),
            start_unix_us: unix_now_us(),
        }
    }

    pub fn now_us(&self) -> u64 {
        Self::ORIGIN_US + self.start.elapsed().as_micros() as u64
    }

    /// A protocol time as Unix microseconds.
    pub fn to_unix_us(&self, t: u64) -> u64 {
        (self.start_unix_us + t).saturating_sub(Self::ORIGIN_US)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// `2024-05-01T12:00:00.123456Z` for a Unix time in microseconds: the one way the daemons
/// write a time (log stamps, `status`, the start marker).
pub fn format_unix_us(us: u64) -> String {
    humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_micros(us)).to_string()
}

/// The Unix time in microseconds of an RFC 3339 UTC stamp such as [`format_unix_us`] writes
/// (`2024-05-01T12:00:00.123456Z`), as every text log line starts with; `None` for anything
/// else.
pub fn parse_unix_us(s: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339(s).ok()?;
    t.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_micros()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_formats() {
        for us in [
            0,
            1_709_210_096_000_042,
            1_795_000_000_123_456,
            951_782_400_999_999,
        ] {
            assert_eq!(parse_unix_us(&format_unix_us(us)), Some(us), "{us}");
        }
        assert_eq!(
            parse_unix_us("2024-02-29T12:34:56.00004Z"),
            Some(1_709_210_096_000_040)
        );
        assert_eq!(parse_unix_us("2024-13-29T12:34:56.000042Z"), None);
        assert_eq!(parse_unix_us("node 1: hello"), None);
    }

    #[test]
    fn formats_unix_time() {
        assert_eq!(format_unix_us(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            format_unix_us(1_709_210_096_000_042),
            "2024-02-29T12:34:56.000042Z"
        );
    }

    #[test]
    fn clock_maps_to_unix() {
        let c = Clock::new();
        let now = c.now_us();
        assert!(now >= Clock::ORIGIN_US);
        let diff = c.to_unix_us(now).abs_diff(unix_now_us());
        assert!(diff < 1_000_000, "{diff}");
    }
}
