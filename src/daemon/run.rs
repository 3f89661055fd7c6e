//! One node's process: open the data socket and the admin socket, then loop — receive, run
//! timers, transmit, answer admin requests, log significant events — until SIGINT or SIGTERM.

use super::admin::{Admin, role_name};
use super::config::{ConfigError, DeploymentConfig, NodeKind};
use super::hooks::{HookKind, Hooks, Transition};
use super::logs::RejectionLog;
use super::metrics::{MetricsFeed, MetricsServer};
use super::notify::Notifier;
use super::state::{EpochFile, StateError};
use super::{Clock, format_unix_us, unix_now_us};
use crate::proto::Node;
use crate::proto::{Client, ControlUnit, Event, InjectedBug, NodeId, RestoreError, Role};
use crate::runtime::node::NodeRunner;
use crate::transport::{Transport, TransportError};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use thiserror::Error;
use tracing::{debug, error, info, warn};

/// How a node starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The initial primary: must be `control_units[0]`.
    Primary,
    /// A standby: `rejoin` = restarted without state, joins through a state transfer.
    Standby { rejoin: bool },
    /// A client: `fresh` = restarted without state, asks for a full replay.
    Client { fresh: bool },
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Primary => "primary",
            Mode::Standby { rejoin: false } => "standby",
            Mode::Standby { rejoin: true } => "standby --rejoin",
            Mode::Client { fresh: false } => "client",
            Mode::Client { fresh: true } => "client --fresh",
        })
    }
}

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The command line does not fit the config (wrong id for the mode, ...).
    #[error("{0}")]
    Usage(String),
    #[error("data socket {addr}: {source}")]
    Transport {
        addr: SocketAddr,
        #[source]
        source: TransportError,
    },
    /// The admin socket could not be opened; the message names the socket or the field.
    #[error("{0}")]
    Admin(String),
    #[error("installing signal handlers: {0}")]
    Signal(#[source] io::Error),
    /// The epoch state file (`[state] dir`) is unusable: at start, or a write while running
    /// (the unit stops rather than transmit an epoch it could not persist).
    #[error(transparent)]
    State(#[from] StateError),
    /// The metrics server or the hook thread could not start (the message names which).
    #[error("{0}")]
    Service(String),
}

impl DaemonError {
    /// 2 for a bad config or command line, 1 for a failure while running.
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Config(_)
            | DaemonError::Usage(_)
            | DaemonError::State(StateError::Corrupt { .. }) => 2,
            _ => 1,
        }
    }
}

/// Longest wait for input in one loop turn: bounds the latency of timers and admin requests.
const MAX_WAIT_US: u64 = 200;
/// Admin socket polling period.
const ADMIN_PERIOD_US: u64 = 1_000;
/// Admin polling period while a Unix admin connection is busy ([`Admin::busy`]).
const ADMIN_BUSY_PERIOD_US: u64 = 100;

/// Runs node `id` until SIGINT or SIGTERM. `inject` plants a protocol bug (a test aid that
/// only the command line sets; `InjectedBug::None` in any real deployment).
pub fn run_node(
    cfg: &DeploymentConfig,
    id: NodeId,
    mode: Mode,
    inject: InjectedBug,
    insecure: bool,
) -> Result<(), DaemonError> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while shutting down exits at once.
        signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&stop))
            .map_err(DaemonError::Signal)?;
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(DaemonError::Signal)?;
    }
    run_node_until(cfg, id, mode, inject, insecure, &stop)
}

/// This node's frame authentication: its keys from `[security] key_dir`. Without keys a node
/// starts only when `insecure` says so, and then says loudly that anyone can forge frames.
fn authentication(
    cfg: &DeploymentConfig,
    id: NodeId,
    insecure: bool,
) -> Result<Option<crate::auth::Auth>, DaemonError> {
    if insecure {
        warn!(
            node = id,
            "WARNING: --insecure: frames are neither authenticated nor checked; anyone who can reach {} can forge state changes and elections",
            cfg.node(id)
                .map_or("this node".to_owned(), |(_, n)| n.addr.to_string())
        );
        return Ok(None);
    }
    match cfg.load_keys(id) {
        Ok(Some(keys)) => Ok(Some(crate::auth::Auth::new(&keys))),
        Ok(None) => Err(DaemonError::Usage(format!(
            "{}: no [security] key_dir: run `statesync keygen --config {} --dir DIR`, set key_dir = \"DIR\", or start with --insecure (frames unauthenticated)",
            cfg.path.display(),
            cfg.path.display()
        ))),
        Err(e) => Err(DaemonError::Usage(format!("keys of node {id}: {e}"))),
    }
}

/// Checks that `mode` fits what the config says node `id` is.
fn check_mode(cfg: &DeploymentConfig, id: NodeId, mode: Mode) -> Result<NodeKind, DaemonError> {
    let path = cfg.path.display();
    let Some((kind, _)) = cfg.node(id) else {
        return Err(DaemonError::Usage(format!(
            "--id {id}: no control unit or client with this id in {path}"
        )));
    };
    let first = cfg.control_units[0].id;
    match (mode, kind) {
        (Mode::Primary, NodeKind::ControlUnit { index: 0 }) => {}
        (Mode::Primary, NodeKind::ControlUnit { .. }) => {
            return Err(DaemonError::Usage(format!(
                "--id {id}: only control_units[0] (id {first}) starts as primary; start this one as `standby`"
            )));
        }
        (Mode::Standby { rejoin: false }, NodeKind::ControlUnit { index: 0 }) => {
            return Err(DaemonError::Usage(format!(
                "--id {id} is control_units[0], the initial primary: start it with `primary`, or with `standby --rejoin` after a restart"
            )));
        }
        (Mode::Standby { .. }, NodeKind::ControlUnit { .. }) => {}
        (Mode::Client { .. }, NodeKind::Client) => {}
        (Mode::Primary | Mode::Standby { .. }, NodeKind::Client) => {
            return Err(DaemonError::Usage(format!(
                "--id {id} is a client in {path}; start it with `client`"
            )));
        }
        (Mode::Client { .. }, NodeKind::ControlUnit { .. }) => {
            return Err(DaemonError::Usage(format!(
                "--id {id} is a control unit in {path}; start it with `primary` or `standby`"
            )));
        }
    }
    Ok(kind)
}

/// What `statesync node` starts node `id` as, from the config and the node's `[state] dir`
/// (issue 12 item 1), and why (for the log):
///
/// | node | no earlier life | an earlier life (marker or epoch file) |
/// |---|---|---|
/// | `control_units[0]` | `primary` | `standby --rejoin` |
/// | other control unit | `standby` | `standby --rejoin` |
/// | client | `client` | `client --fresh` (asks for a full replay) |
///
/// Without `[state] dir` a control unit cannot be told apart (either guess can be wrong in a
/// harmful way: a restarted initial unit acting in the first epoch without its state, or a
/// whole new deployment of units all waiting to re-join): a usage error. A client can: it takes
/// every start as a restart, which costs a full replay at the first start and is always right.
pub fn node_mode(cfg: &DeploymentConfig, id: NodeId) -> Result<(Mode, String), DaemonError> {
    let path = cfg.path.display();
    let Some((kind, _)) = cfg.node(id) else {
        return Err(DaemonError::Usage(format!(
            "--id {id}: no control unit or client with this id in {path}"
        )));
    };
    let Some(dir) = &cfg.state_dir else {
        return match kind {
            NodeKind::Client => Ok((
                Mode::Client { fresh: true },
                format!(
                    "no [state] dir in {path}: a client cannot tell a first start from a restart, so it takes every start as a restart"
                ),
            )),
            NodeKind::ControlUnit { .. } => Err(DaemonError::Usage(format!(
                "--id {id}: `statesync node` needs [state] dir in {path} to tell a control unit's first start from a restart; set it, or start this unit with `primary`/`standby` (first start) or `standby --rejoin` (restart)"
            ))),
        };
    };
    let marker = super::state::started_marker(dir, id);
    if super::state::ran_before(dir, id)? {
        let mode = match kind {
            NodeKind::ControlUnit { .. } => Mode::Standby { rejoin: true },
            NodeKind::Client => Mode::Client { fresh: true },
        };
        let found = if marker.exists() {
            marker.display().to_string()
        } else {
            dir.join(format!("{id}.epoch")).display().to_string()
        };
        return Ok((mode, format!("restart: {found} records an earlier life")));
    }
    let mode = match kind {
        NodeKind::ControlUnit { index: 0 } => Mode::Primary,
        NodeKind::ControlUnit { .. } => Mode::Standby { rejoin: false },
        NodeKind::Client => Mode::Client { fresh: false },
    };
    Ok((
        mode,
        format!("first start: no earlier life recorded in {}", dir.display()),
    ))
}

/// [`run_node`] without signal handlers: runs until `stop` is set. A node that stops on an
/// error runs its `on_fault` hook (and waits for the queued hooks) before it returns.
pub fn run_node_until(
    cfg: &DeploymentConfig,
    id: NodeId,
    mode: Mode,
    inject: InjectedBug,
    insecure: bool,
    stop: &AtomicBool,
) -> Result<(), DaemonError> {
    let kind = check_mode(cfg, id, mode)?;
    let mut hooks = Hooks::start(id, &cfg.hooks).map_err(DaemonError::Service)?;
    let mut epoch = 0;
    let r = run_started(
        cfg, id, kind, mode, inject, insecure, stop, &mut hooks, &mut epoch,
    );
    if let Some(mut h) = hooks {
        if let Err(e) = &r {
            h.send(Transition {
                kind: HookKind::Fault,
                role: "stopped",
                epoch,
                reason: format!("error: {e}"),
            });
        }
        h.finish();
    }
    r
}

/// Which hook a control unit's role runs (`None`: a candidate, a passing state).
fn hook_kind(role: Role) -> Option<HookKind> {
    match role {
        Role::Primary => Some(HookKind::Primary),
        Role::Standby => Some(HookKind::Standby),
        Role::Joining => Some(HookKind::Fault),
        Role::Candidate => None,
    }
}

/// The `STATUS=` line systemd shows.
fn status_line(m: &Node) -> String {
    match m {
        Node::Cu(c) => format!("{}, epoch {}", role_name(c.role()), c.epoch()),
        Node::Client(c) => format!(
            "client, epoch {}, primary {}",
            c.epoch(),
            c.primary().map_or("none".to_owned(), |p| p.to_string())
        ),
    }
}

/// The node after its mode was checked and its hook thread started; `epoch` follows the
/// node's epoch for the caller's fault hook.
#[allow(clippy::too_many_arguments)]
fn run_started(
    cfg: &DeploymentConfig,
    id: NodeId,
    kind: NodeKind,
    mode: Mode,
    inject: InjectedBug,
    insecure: bool,
    stop: &AtomicBool,
    hooks: &mut Option<Hooks>,
    last_epoch: &mut u64,
) -> Result<(), DaemonError> {
    let auth = authentication(cfg, id, insecure)?;
    let secured = auth.is_some();
    let Some((_, spec)) = cfg.node(id) else {
        return Err(DaemonError::Usage(format!("--id {id}: no such node")));
    };
    let spec = spec.clone();
    // Read before any socket opens: a bad token file is a config error (exit 2).
    let token = cfg.admin.read_token().map_err(|message| {
        DaemonError::Config(ConfigError::Invalid {
            path: cfg.path.clone(),
            message,
        })
    })?;
    let clock = Clock::new();
    // Differs between restarts of the same node.
    let boot_id = (unix_now_us() & 0xffff_ffff) as u32;
    let now = clock.now_us();
    let mut proto = cfg.proto_config();
    // Per-op events would only be discarded here (the log skips them).
    proto.standby_apply_events = false;
    proto.inject = inject;
    let mut machine = match mode {
        Mode::Primary => Node::Cu(Box::new(ControlUnit::new(proto, id, true, boot_id, now))),
        Mode::Standby { rejoin } => {
            Node::Cu(Box::new(ControlUnit::new(proto, id, !rejoin, boot_id, now)))
        }
        Mode::Client { fresh } => {
            proto.client_apply_events = false;
            Node::Client(Box::new(Client::new(proto, id, fresh, boot_id, now)))
        }
    };
    let mut epoch_file = match machine.as_cu_mut() {
        Some(cu) => restore_epoch(cfg, cu)?,
        None => None,
    };
    let peers: Vec<(NodeId, SocketAddr)> = match kind {
        NodeKind::ControlUnit { .. } => cfg
            .nodes()
            .filter(|n| n.id != id)
            .map(|n| (n.id, n.addr))
            .collect(),
        NodeKind::Client => cfg.control_units.iter().map(|n| (n.id, n.addr)).collect(),
    };
    // The admin socket first: it refuses to start a second daemon with this id (one that
    // still serves the socket) before that one's data socket is touched.
    let mut admin = Admin::open(id, &cfg.admin.socket_path(id), spec.admin, token)
        .map_err(DaemonError::Admin)?;
    let tcfg = cfg.transport_config(id).expect("node exists");
    let transport = Transport::open(tcfg).map_err(|source| DaemonError::Transport {
        addr: spec.addr,
        source,
    })?;
    let io_kind = transport.kind();
    if let Some(why) = transport.fallback() {
        warn!(node = id, "{why}");
    }
    let mut runner = NodeRunner::new(machine, transport, peers).with_auth(auth);
    // Metrics: the loop feeds the families; a thread of their own serves them.
    let mut feed = cfg.metrics.listen_of(id).map(|_| MetricsFeed::new());
    let _metrics_server = match (cfg.metrics.listen_of(id), &mut feed) {
        (Some(addr), Some(f)) => {
            f.update(&runner, clock.now_us());
            let srv = MetricsServer::start(addr, f.registry(), id).map_err(DaemonError::Service)?;
            info!(
                node = id,
                "serving metrics on http://{}/metrics",
                srv.addr()
            );
            Some(srv)
        }
        _ => None,
    };
    let mut notifier = Notifier::from_env(id);
    let admin_udp = admin
        .udp_addr()
        .map_or(String::new(), |a| format!(" and UDP {a}"));
    if let Some(&core) = cfg.cores.first() {
        if core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
            info!(node = id, "pinned to core {core}");
        } else {
            warn!(node = id, "could not pin to core {core}; running unpinned");
        }
    }
    info!(
        node = id,
        "started as {mode} on {} (io {io_kind}, frames {}), admin {}{admin_udp}, boot {boot_id:08x}, epoch {}",
        spec.addr,
        if secured {
            "authenticated"
        } else {
            "UNAUTHENTICATED"
        },
        admin.socket_path().display(),
        runner.machine.epoch()
    );
    let terr = |source| DaemonError::Transport {
        addr: spec.addr,
        source,
    };
    // From here on this life may have told others something: any later start of this node
    // is a restart (`statesync node` reads the marker). Nothing was sent before this point,
    // so a start that failed earlier (a bad key, a busy address) leaves no marker.
    if let Some(dir) = &cfg.state_dir
        && let Some(path) = super::state::mark_started(
            dir,
            id,
            &format!(
                "node {id} started as {mode} at {}, boot {boot_id:08x}; later starts are restarts",
                format_unix_us(unix_now_us())
            ),
        )?
    {
        info!(
            node = id,
            "recorded this life in {}: later starts of this node are restarts",
            path.display()
        );
    }
    persist_epoch(id, &mut epoch_file, &runner.machine)?;
    let mut next_admin_us = 0;
    let mut rejections = RejectionLog::new(clock.now_us());
    let mut client_epoch = runner.machine.epoch();
    let mut role = runner.machine.as_cu().map_or(Role::Standby, |c| c.role());
    *last_epoch = runner.machine.epoch();
    if let (Some(h), Some(k), Some(cu)) = (hooks.as_mut(), hook_kind(role), runner.machine.as_cu())
    {
        h.send(Transition {
            kind: k,
            role: role_name(role),
            epoch: cu.epoch(),
            reason: format!("start: {mode}"),
        });
    }
    // Why the next role change happens, from the events that precede it.
    let mut why: Option<&'static str> = None;
    let mut ready = false;
    let mut notified = (None, 0);
    while !stop.load(Ordering::Relaxed) {
        let now = clock.now_us();
        runner.tick(now);
        // The steps that can raise the epoch have all run by now: this turn's timers, the
        // datagrams received at the end of the last turn, an admin takeover (which starts a
        // new turn at once). Nothing of a new epoch may leave before it is on disk.
        persist_epoch(id, &mut epoch_file, &runner.machine)?;
        runner.transmit(now).map_err(terr)?;
        // Role changes and transfer completions are logged once per turn: a transfer of many
        // channels moves through joining and standby once per channel.
        let mut transferred = None;
        while let Some(e) = runner.machine.poll_event() {
            match e {
                Event::TransferComplete { epoch } => {
                    why = Some("state transfer complete");
                    transferred = Some(epoch)
                }
                Event::FailoverStarted { operator, .. } => {
                    why = Some(if operator { "switchover" } else { "failover" });
                }
                // The alarm of a key mismatch: the on_fault hook runs, the role stays.
                Event::KeyMismatch { .. } => {
                    if let (Some(h), Node::Cu(c)) = (hooks.as_mut(), &runner.machine) {
                        h.send(Transition {
                            kind: HookKind::Fault,
                            role: role_name(c.role()),
                            epoch: c.epoch(),
                            reason: e.to_string(),
                        });
                    }
                }
                _ => {}
            }
            log_event(id, &e);
        }
        if let Some(epoch) = transferred {
            info!(node = id, "state transfer complete (epoch {epoch})");
        }
        if let Node::Cu(c) = &runner.machine
            && c.role() != role
        {
            info!(
                node = id,
                "role {} -> {} (epoch {})",
                role_name(role),
                role_name(c.role()),
                c.epoch()
            );
            // A candidate is a passing state: no hook, and the reason waits for what follows.
            if let (Some(h), Some(k)) = (hooks.as_mut(), hook_kind(c.role())) {
                h.send(Transition {
                    kind: k,
                    role: role_name(c.role()),
                    epoch: c.epoch(),
                    reason: format!(
                        "{}: {} -> {}",
                        why.take().unwrap_or("role change"),
                        role_name(role),
                        role_name(c.role())
                    ),
                });
            } else if c.role() != Role::Candidate {
                why = None;
            }
            role = c.role();
        }
        *last_epoch = runner.machine.epoch();
        if let Some(f) = &mut feed {
            f.maybe_update(&runner, now);
        }
        if notifier.enabled() {
            // Sockets open, state restored, first turn run: ready. The status line is built
            // only when what it shows changed.
            let shown = (runner.machine.as_cu().map(|c| c.role()), *last_epoch);
            if !ready {
                notifier.ready(status_line(&runner.machine));
                ready = true;
            } else if shown != notified {
                notifier.status(status_line(&runner.machine));
            }
            notified = shown;
            notifier.tick(now);
        }
        if let Node::Client(c) = &runner.machine
            && c.epoch() != client_epoch
        {
            client_epoch = c.epoch();
            info!(
                node = id,
                "following epoch {client_epoch} (primary {})",
                c.primary().map_or("none".to_owned(), |p| p.to_string())
            );
        }
        // Rejected datagrams (forged, replayed, stale, malformed, from strangers): a line
        // per reason at most once a second, with the count since the reason's last line.
        rejections.poll(id, &runner, now);
        if now >= next_admin_us {
            let handled = admin.poll(&mut runner, &clock, now);
            // A Unix client sends its request just after it connects, and reads its reply
            // in pieces: while one is that busy, look again soon rather than a period later.
            next_admin_us = now
                + if admin.busy(now) {
                    ADMIN_BUSY_PERIOD_US
                } else {
                    ADMIN_PERIOD_US
                };
            if handled > 0 {
                // A takeover or switchover has work to send now.
                continue;
            }
        }
        let due = runner.machine.poll_timeout();
        let wait = due.min(next_admin_us).saturating_sub(now).min(MAX_WAIT_US);
        let wait = (wait > 0).then(|| Duration::from_micros(wait));
        runner.receive(wait, &|| clock.now_us()).map_err(terr)?;
    }
    notifier.stopping();
    let s = runner.transport.stats();
    info!(
        node = id,
        "stopping: {} datagrams sent, {} received; admin requests {} ({} malformed), refused: {} peers, {} unauthenticated, {} bad MACs, {} stale, {} replays, {} oversized replies",
        s.datagrams_sent,
        s.datagrams_received,
        admin.stats.requests,
        admin.stats.malformed,
        admin.stats.refused_peer,
        admin.stats.refused_token,
        admin.stats.refused_mac,
        admin.stats.refused_stale,
        admin.stats.refused_replay,
        admin.stats.refused_size
    );
    Ok(())
}

/// Reads the control unit's state file back into `cu` (`[state] dir` set), or warns that its
/// epoch will not survive a restart (unset).
fn restore_epoch(
    cfg: &DeploymentConfig,
    cu: &mut ControlUnit,
) -> Result<Option<EpochFile>, DaemonError> {
    let id = cu.id;
    let Some(dir) = &cfg.state_dir else {
        warn!(
            node = id,
            "warning: no [state] dir in {}: the highest epoch is not persisted, so after a restart this unit may reuse an epoch it already announced",
            cfg.path.display()
        );
        return Ok(None);
    };
    let file = EpochFile::open(dir, id)?;
    let persisted = file.persisted();
    cu.restore_highest_epoch(persisted).map_err(|e| match e {
        RestoreError::InitialAfterLaterEpoch { .. } => DaemonError::Usage(format!(
            "--id {id}: state file {}: {e} (`standby --rejoin`)",
            file.path().display()
        )),
        _ => DaemonError::State(StateError::Corrupt {
            path: file.path().to_owned(),
            why: e.to_string(),
        }),
    })?;
    if persisted > 0 {
        info!(
            node = id,
            "restored highest epoch {persisted} from {}",
            file.path().display()
        );
    }
    Ok(Some(file))
}

/// Persists the control unit's highest epoch if it rose (a no-op without a state file).
fn persist_epoch(id: NodeId, file: &mut Option<EpochFile>, m: &Node) -> Result<(), DaemonError> {
    if let (Some(f), Some(cu)) = (file.as_mut(), m.as_cu())
        && let Some(epoch) = f.sync(cu)?
    {
        info!(
            node = id,
            "persisted epoch {epoch} to {}",
            f.path().display()
        );
    }
    Ok(())
}

/// One record per significant event, at its level: failovers, take-overs, joins and replays at
/// `info`, a dropped standby at `warn`, the noisy per-channel transfer steps and role changes
/// at `debug` (the caller logs a role change and a completed transfer once per turn at `info`).
/// Per-op events are not logged.
fn log_event(id: NodeId, e: &Event) {
    match e {
        _ if e.is_per_op() => {}
        // The caller's "state transfer complete (epoch E)" says it.
        Event::TransferComplete { .. } => {}
        Event::RoleChanged { .. } | Event::ChannelTransferred { .. } => debug!(node = id, "{e}"),
        Event::StandbyDropped { .. } => warn!(node = id, "{e}"),
        Event::KeyMismatch { .. } => error!(node = id, "{e}"),
        _ => info!(node = id, "{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> DeploymentConfig {
        crate::daemon::config::parse(crate::daemon::config::TEST_CONFIG, "t.toml").unwrap()
    }

    #[test]
    fn node_mode_follows_the_config_and_the_state_dir() {
        let dir = std::env::temp_dir().join(format!("ss-node-mode-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut c = cfg();
        // Without [state] dir: a control unit refuses, a client takes every start as a restart.
        let e = node_mode(&c, 1).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("[state] dir"), "{e}");
        assert_eq!(node_mode(&c, 100).unwrap().0, Mode::Client { fresh: true });
        assert!(node_mode(&c, 7).unwrap_err().to_string().contains("--id 7"));
        c.state_dir = Some(dir.clone());
        // First lives.
        assert_eq!(node_mode(&c, 1).unwrap().0, Mode::Primary);
        assert_eq!(node_mode(&c, 2).unwrap().0, Mode::Standby { rejoin: false });
        assert_eq!(node_mode(&c, 100).unwrap().0, Mode::Client { fresh: false });
        // Earlier lives: the marker, or (older commands) only the epoch file.
        for id in [1, 100] {
            crate::daemon::state::mark_started(&dir, id, "test").unwrap();
        }
        crate::daemon::state::EpochFile::open(&dir, 2)
            .unwrap()
            .store(256)
            .unwrap();
        let (m, why) = node_mode(&c, 1).unwrap();
        assert_eq!(m, Mode::Standby { rejoin: true });
        assert!(why.contains("1.started"), "{why}");
        let (m, why) = node_mode(&c, 2).unwrap();
        assert_eq!(m, Mode::Standby { rejoin: true });
        assert!(why.contains("2.epoch"), "{why}");
        assert_eq!(node_mode(&c, 100).unwrap().0, Mode::Client { fresh: true });
        for id in [1, 2, 100] {
            let (m, _) = node_mode(&c, id).unwrap();
            assert!(check_mode(&c, id, m).is_ok(), "{id}: {m}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn mode_must_fit_the_node() {
        let c = cfg();
        assert!(check_mode(&c, 1, Mode::Primary).is_ok());
        assert!(check_mode(&c, 1, Mode::Standby { rejoin: true }).is_ok());
        assert!(check_mode(&c, 2, Mode::Standby { rejoin: false }).is_ok());
        assert!(check_mode(&c, 100, Mode::Client { fresh: true }).is_ok());
        for (id, mode) in [
            (2, Mode::Primary),
            (1, Mode::Standby { rejoin: false }),
            (100, Mode::Primary),
            (1, Mode::Client { fresh: false }),
            (7, Mode::Client { fresh: false }),
        ] {
            let e = check_mode(&c, id, mode).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains(&format!("--id {id}")), "{e}");
        }
    }
}
