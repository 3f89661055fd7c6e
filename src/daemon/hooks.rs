//! Role-change hooks (`[hooks] on_primary`, `on_standby`, `on_fault`), like keepalived's
//! `notify_master`/`notify_backup`/`notify_fault`: an operator's command run on each
//! transition, with the node id, role, epoch and reason in its environment.
//!
//! The event loop never waits for a hook: it hands the transition to a hook thread through a
//! bounded channel and goes on. When that channel is full (hooks slower than transitions), the
//! transition is dropped, counted and logged, never queued without bound. The hook thread runs
//! one command at a time under `/bin/sh -c`, kills it when `timeout_ms` passes, and logs how it
//! ended.

use crate::proto::NodeId;
use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use serde::Deserialize;
use std::process::{Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Transitions waiting for the hook thread; more are dropped (and counted).
const QUEUE: usize = 16;
/// Default limit on one hook's run time.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// How often a running hook is checked for its end.
const WAIT_POLL: Duration = Duration::from_millis(5);

/// `[hooks]` exactly as in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHooks {
    on_primary: Option<String>,
    on_standby: Option<String>,
    on_fault: Option<String>,
    timeout_ms: Option<u64>,
}

/// The commands to run on transitions (each a `/bin/sh -c` command line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HooksConfig {
    pub on_primary: Option<String>,
    pub on_standby: Option<String>,
    /// Run when a control unit falls out of sync (joining: it needs a state transfer before
    /// it can take over again), and when a node stops on an error.
    pub on_fault: Option<String>,
    pub timeout_ms: u64,
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            on_primary: None,
            on_standby: None,
            on_fault: None,
            timeout_ms: DEFAULT_TIMEOUT_MS,
        }
    }
}

impl HooksConfig {
    pub fn is_empty(&self) -> bool {
        self.on_primary.is_none() && self.on_standby.is_none() && self.on_fault.is_none()
    }

    /// Every configured hook with its field name.
    pub fn commands(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("hooks.on_primary", &self.on_primary),
            ("hooks.on_standby", &self.on_standby),
            ("hooks.on_fault", &self.on_fault),
        ]
        .into_iter()
        .filter_map(|(f, c)| c.as_deref().map(|c| (f, c)))
    }
}

/// Checks `[hooks]`: non-empty commands, a timeout within 1 ms..=10 min.
pub fn validate_config(raw: &RawHooks) -> Result<HooksConfig, String> {
    let cmd = |field: &str, v: &Option<String>| -> Result<Option<String>, String> {
        match v {
            Some(s) if s.trim().is_empty() => Err(format!(
                "hooks.{field}: empty; name a command or leave it out"
            )),
            Some(s) if s.contains('\0') => Err(format!("hooks.{field}: contains a NUL byte")),
            other => Ok(other.clone()),
        }
    };
    let timeout_ms = raw.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    if !(1..=600_000).contains(&timeout_ms) {
        return Err(format!(
            "hooks.timeout_ms: must be within 1..=600000, got {timeout_ms}"
        ));
    }
    Ok(HooksConfig {
        on_primary: cmd("on_primary", &raw.on_primary)?,
        on_standby: cmd("on_standby", &raw.on_standby)?,
        on_fault: cmd("on_fault", &raw.on_fault)?,
        timeout_ms,
    })
}

/// Which hook a transition runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    Primary,
    Standby,
    Fault,
}

/// One transition handed to the hook thread.
#[derive(Debug, Clone)]
pub struct Transition {
    pub kind: HookKind,
    /// `STATESYNC_ROLE`: the role now (`primary`, `standby`, `joining`, or `stopped`).
    pub role: &'static str,
    pub epoch: u64,
    /// `STATESYNC_REASON`: why, e.g. `start`, `failover: candidate -> primary`.
    pub reason: String,
}

/// The hook thread and the event loop's end of its queue.
pub struct Hooks {
    id: NodeId,
    tx: Option<Sender<Transition>>,
    thread: Option<JoinHandle<()>>,
    /// Transitions dropped because the queue was full.
    pub dropped: u64,
}

impl Hooks {
    /// Starts the hook thread (`None` when no hook is configured).
    pub fn start(id: NodeId, cfg: &HooksConfig) -> Result<Option<Hooks>, String> {
        if cfg.is_empty() {
            return Ok(None);
        }
        let (tx, rx) = bounded(QUEUE);
        let cfg = cfg.clone();
        let thread = std::thread::Builder::new()
            .name(format!("hooks-{id}"))
            .spawn(move || run_hooks(id, &cfg, &rx))
            .map_err(|e| format!("hook thread: {e}"))?;
        Ok(Some(Hooks {
            id,
            tx: Some(tx),
            thread: Some(thread),
            dropped: 0,
        }))
    }

    /// Hands `t` to the hook thread without waiting; drops it (counted, logged) when full.
    pub fn send(&mut self, t: Transition) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(t) {
            Ok(()) => {}
            Err(TrySendError::Full(t) | TrySendError::Disconnected(t)) => {
                self.dropped += 1;
                tracing::warn!(
                    node = self.id,
                    "hooks: queue full, transition to {} (epoch {}, {}) dropped without running its hook ({} dropped so far)",
                    t.role,
                    t.epoch,
                    t.reason,
                    self.dropped
                );
            }
        }
    }

    /// Lets the queued hooks finish (each within its timeout), then stops the thread.
    pub fn finish(mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Hooks {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run_hooks(id: NodeId, cfg: &HooksConfig, rx: &Receiver<Transition>) {
    let timeout = Duration::from_millis(cfg.timeout_ms);
    for t in rx {
        let (field, cmd) = match t.kind {
            HookKind::Primary => ("on_primary", &cfg.on_primary),
            HookKind::Standby => ("on_standby", &cfg.on_standby),
            HookKind::Fault => ("on_fault", &cfg.on_fault),
        };
        let Some(cmd) = cmd else { continue };
        let outcome = run_one(id, cmd, &t, timeout);
        if outcome == "exit 0" {
            tracing::info!(
                node = id,
                "hook {field} (role {}, epoch {}, {}): {outcome}",
                t.role,
                t.epoch,
                t.reason
            );
        } else {
            tracing::warn!(
                node = id,
                "hook {field} (role {}, epoch {}, {}): {outcome}",
                t.role,
                t.epoch,
                t.reason
            );
        }
    }
}

/// Runs one hook to its end or its timeout; says how it ended.
fn run_one(id: NodeId, cmd: &str, t: &Transition, timeout: Duration) -> String {
    let mut child = match Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .env("STATESYNC_NODE_ID", id.to_string())
        .env("STATESYNC_ROLE", t.role)
        .env("STATESYNC_EPOCH", t.epoch.to_string())
        .env("STATESYNC_REASON", &t.reason)
        // The hook is not the service: it must not speak for it to systemd.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return format!("could not start: {e}"),
    };
    let deadline = Instant::now() + timeout;
    let status: std::io::Result<ExitStatus> = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Ok(s),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return format!("killed after its timeout of {} ms", timeout.as_millis());
            }
            Ok(None) => std::thread::sleep(WAIT_POLL),
            Err(e) => break Err(e),
        }
    };
    match status {
        Ok(s) if s.success() => "exit 0".to_owned(),
        Ok(s) => format!("FAILED: {s}"),
        Err(e) => format!("could not wait for it: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_checked() {
        let raw = RawHooks {
            on_primary: Some("true".into()),
            on_standby: None,
            on_fault: Some(" ".into()),
            timeout_ms: None,
        };
        let e = validate_config(&raw).unwrap_err();
        assert!(e.contains("hooks.on_fault: empty"), "{e}");
        let raw = RawHooks {
            on_fault: None,
            timeout_ms: Some(0),
            ..raw
        };
        assert!(
            validate_config(&raw)
                .unwrap_err()
                .contains("hooks.timeout_ms")
        );
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let cfg = HooksConfig {
            on_primary: Some("exec sleep 5".into()),
            timeout_ms: 10,
            ..HooksConfig::default()
        };
        let mut h = Hooks::start(9, &cfg).unwrap().unwrap();
        let started = Instant::now();
        for epoch in 0..(QUEUE as u64 + 4) {
            h.send(Transition {
                kind: HookKind::Primary,
                role: "primary",
                epoch,
                reason: "test".into(),
            });
        }
        // The sender never waited for the hooks: the 17 queued or running take 170 ms or more.
        assert!(started.elapsed() < Duration::from_millis(150));
        assert!(h.dropped >= 3, "{}", h.dropped);
        h.finish();
    }

    #[test]
    fn hook_sees_its_environment_and_is_killed_on_timeout() {
        let dir = std::env::temp_dir().join(format!("statesync-hooks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("env");
        let t = Transition {
            kind: HookKind::Primary,
            role: "primary",
            epoch: 513,
            reason: "failover: candidate -> primary".into(),
        };
        let cmd = format!(
            "echo \"$STATESYNC_NODE_ID $STATESYNC_ROLE $STATESYNC_EPOCH $STATESYNC_REASON\" > {}",
            out.display()
        );
        assert_eq!(run_one(7, &cmd, &t, Duration::from_secs(5)), "exit 0");
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "7 primary 513 failover: candidate -> primary\n"
        );
        assert!(run_one(7, "exit 3", &t, Duration::from_secs(5)).contains("FAILED"));
        let started = Instant::now();
        let r = run_one(7, "exec sleep 10", &t, Duration::from_millis(100));
        assert!(r.contains("killed"), "{r}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
