//! Running one node of a deployment as its own process: the shared TOML config, the node's
//! event loop, the admin JSON protocol and the commands behind `statesync primary|standby|
//! client|status|switchover`. The contract is `docs/DAEMON.md`.

pub mod admin;
pub mod check;
pub mod cli;
pub mod config;
pub mod hooks;
pub mod metrics;
pub mod notify;
pub mod run;
pub mod state;

pub use config::{ConfigError, DeploymentConfig, load};
pub use run::{DaemonError, Mode, run_node};

use std::time::{Instant, SystemTime, UNIX_EPOCH};

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

/// `2024-05-01T12:00:00.123456Z` for a Unix time in microseconds.
pub fn format_unix_us(us: u64) -> String {
    let secs = us / 1_000_000;
    let micros = us % 1_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The Unix time in microseconds of a [`format_unix_us`] stamp (`2024-05-01T12:00:00.123456Z`),
/// as every daemon log line starts with; `None` for anything else.
pub fn parse_unix_us(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 27
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[19] != b'.'
        || b[26] != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss, us) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..26)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days-from-civil (Howard Hinnant's algorithm), the inverse of `format_unix_us`.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    u64::try_from(secs).ok().map(|s| s * 1_000_000 + us as u64)
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
        assert_eq!(parse_unix_us("2024-02-29T12:34:56.00004Z"), None);
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
