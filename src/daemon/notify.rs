//! systemd's notify protocol (`Type=notify`), through the `sd-notify` crate: `READY=1` once the
//! node's sockets are open and its loop runs, `WATCHDOG=1` from the event loop itself (so a
//! wedged loop is restarted by `WatchdogSec`), `STATUS=` when the role or epoch changes, and
//! `STOPPING=1` at shutdown. Without `NOTIFY_SOCKET` (not under systemd) every call is a no-op.

use crate::proto::NodeId;
use sd_notify::NotifyState;

pub struct Notifier {
    id: NodeId,
    enabled: bool,
    /// Half of `WATCHDOG_USEC`, as systemd advises; `None`: no watchdog asked for.
    watchdog_period_us: Option<u64>,
    next_watchdog_us: u64,
    status: String,
    /// A failed send is logged once, not once per turn.
    failed: bool,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from the environment.
    pub fn from_env(id: NodeId) -> Notifier {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
        let watchdog_period_us = sd_notify::watchdog_enabled()
            .filter(|_| enabled)
            .map(|d| (d.as_micros() as u64 / 2).max(1));
        Notifier {
            id,
            enabled,
            watchdog_period_us,
            next_watchdog_us: 0,
            status: String::new(),
            failed: false,
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn send(&mut self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(states)
            && !self.failed
        {
            self.failed = true;
            tracing::error!(
                node = self.id,
                "sd_notify to $NOTIFY_SOCKET failed: {e} (not logged again)"
            );
        }
    }

    /// `READY=1` with the first `STATUS=`.
    pub fn ready(&mut self, status: String) {
        self.send(&[NotifyState::Ready, NotifyState::Status(&status)]);
        self.status = status;
    }

    /// `STATUS=` when it differs from the last one sent.
    pub fn status(&mut self, status: String) {
        if status != self.status {
            self.send(&[NotifyState::Status(&status)]);
            self.status = status;
        }
    }

    /// `WATCHDOG=1` when its period is due; called from every loop turn.
    pub fn tick(&mut self, now_us: u64) {
        if let Some(p) = self.watchdog_period_us
            && now_us >= self.next_watchdog_us
        {
            self.next_watchdog_us = now_us + p;
            self.send(&[NotifyState::Watchdog]);
        }
    }

    pub fn stopping(&mut self) {
        self.send(&[NotifyState::Stopping]);
    }
}
