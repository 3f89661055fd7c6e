//! The daemons' log (issue 12 item 5): `tracing` records on stderr, each with the node's id in
//! the field `node`, as text or JSON lines (`--log-format`), down to `--log-level`.
//!
//! Levels: `error` for what stops the node (a persistence failure, a transport error, a bad
//! config); `warn` for what an operator should look at (rejected datagrams, at most one line a
//! second per reason; `--insecure`; a dropped standby); `info` for starts, role changes,
//! failovers, joins and replays; `debug` for the per-channel steps of a state transfer.

use crate::proto::NodeId;
use crate::runtime::node::NodeRunner;
use std::fmt::{self, Write as _};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// How log records are written to stderr.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One line per record: `<RFC 3339 UTC time> <LEVEL> node <id>: <message>`.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `node`, `message`, and the record's
    /// other fields (e.g. `reason` and `count` of a rejection line).
    Json,
}

/// The least severe records written.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogLevel {
    /// Only what stops the node.
    Error,
    /// Also what an operator should look at (rejected datagrams, `--insecure`).
    Warn,
    /// Also starts, role changes, failovers, joins and replays.
    #[default]
    Info,
    /// Also per-channel state-transfer steps and per-channel role changes.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    fn filter(self) -> LevelFilter {
        match self {
            LogLevel::Error => LevelFilter::ERROR,
            LogLevel::Warn => LevelFilter::WARN,
            LogLevel::Info => LevelFilter::INFO,
            LogLevel::Debug => LevelFilter::DEBUG,
            LogLevel::Trace => LevelFilter::TRACE,
        }
    }
}

/// Sends this process's `tracing` records to stderr. Once per process: a later call (a test
/// that runs several nodes in one process) leaves the first one in place.
pub fn init(format: LogFormat, level: LogLevel) {
    let b = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level.filter());
    let _ = match format {
        LogFormat::Text => b.event_format(Text).try_init(),
        LogFormat::Json => b
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_target(false)
            .with_timer(Stamp)
            .try_init(),
    };
}

/// The log's time stamps: the daemons' one time format, [`super::format_unix_us`].
struct Stamp;

impl FormatTime for Stamp {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        w.write_str(&super::format_unix_us(super::unix_now_us()))
    }
}

/// `--log-format text`: the message after the node's id, no other field (the message says
/// it all), so that a line ends with its message.
struct Text;

impl<S, N> FormatEvent<S, N> for Text
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut f = TextFields::default();
        event.record(&mut f);
        Stamp.format_time(&mut w)?;
        write!(w, " {:>5} ", event.metadata().level())?;
        if let Some(node) = f.node {
            write!(w, "node {node}: ")?;
        }
        writeln!(w, "{}", f.message)
    }
}

#[derive(Default)]
struct TextFields {
    node: Option<u64>,
    message: String,
}

impl Visit for TextFields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "node" {
            self.node = Some(value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == "node" {
            self.node = u64::try_from(value).ok();
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        }
    }
}

/// How often the rejection counters are looked at.
const REJECTION_CHECK_US: u64 = 100_000;
/// At most one rejection line per reason in this period.
const REJECTION_PERIOD_US: u64 = 1_000_000;

/// Rejected datagrams at `warn`: per reason of [`super::metrics::rejections`], at most one
/// line a second with the count since the reason's last line; never a line per datagram.
#[derive(Debug)]
pub struct RejectionLog {
    logged: [u64; super::metrics::REJECTION_REASONS],
    last_us: [u64; super::metrics::REJECTION_REASONS],
    next_check_us: u64,
}

impl RejectionLog {
    /// `now_us`: the node's clock at start (the first line of a reason counts from here).
    pub fn new(now_us: u64) -> RejectionLog {
        RejectionLog {
            logged: [0; super::metrics::REJECTION_REASONS],
            last_us: [now_us; super::metrics::REJECTION_REASONS],
            next_check_us: 0,
        }
    }

    /// Logs the reasons whose count rose, each at most once per [`REJECTION_PERIOD_US`].
    pub fn poll(&mut self, id: NodeId, runner: &NodeRunner, now_us: u64) {
        if now_us < self.next_check_us {
            return;
        }
        self.next_check_us = now_us + REJECTION_CHECK_US;
        for (i, (reason, total)) in super::metrics::rejections(runner).into_iter().enumerate() {
            let count = total.saturating_sub(self.logged[i]);
            let since = now_us.saturating_sub(self.last_us[i]);
            if count == 0 || since < REJECTION_PERIOD_US {
                continue;
            }
            let window = if since < REJECTION_PERIOD_US * 3 / 2 {
                "last second".to_owned()
            } else {
                format!("last {} s", since.div_ceil(1_000_000))
            };
            // A key mismatch fails closed: frames are dropped, never believed. Say so loudly.
            let alarm = if reason.starts_with("auth_") {
                "ALARM: "
            } else {
                ""
            };
            tracing::warn!(
                node = id,
                reason,
                count,
                "{alarm}rejected {count} datagrams: {reason} ({window})"
            );
            self.logged[i] = total;
            self.last_us[i] = now_us;
        }
    }
}
