//! `statesync status`: one node's status as text or JSON, or (`--cluster`) one table of every
//! node of a deployment, refreshed with `--watch`.

use super::status::{FetchError, NodeKind, SCHEMA_VERSION, StatusReply, fetch};
use super::{AdminToken, Target, read_token_file};
use crate::daemon::config::{DeploymentConfig, load};
use crate::daemon::format_unix_us;
use crate::proto::NodeId;
use serde::{Deserialize, Serialize};
use std::fmt::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// What `statesync status` was asked (the command line, parsed by `daemon::cli`).
#[derive(Debug, Clone)]
pub struct StatusCommand<'a> {
    /// One node's admin socket or UDP listener (`None` with `cluster`).
    pub addr: Option<&'a str>,
    /// The deployment config: every node of it (`--cluster --config`).
    pub cluster: Option<&'a Path>,
    /// Refresh every so many seconds until interrupted.
    pub watch: Option<f64>,
    pub token_file: Option<&'a Path>,
    pub json: bool,
    pub timeout: Duration,
}

/// Runs `statesync status`.
pub fn run(c: &StatusCommand<'_>) -> ExitCode {
    let token = match c.token_file.map(|f| read_token_file(f, "--token-file")) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            eprintln!("statesync status: {e}");
            return ExitCode::from(2);
        }
    };
    let cfg = match c.cluster.map(load) {
        None => None,
        Some(Ok(cfg)) => Some(cfg),
        Some(Err(e)) => {
            eprintln!("statesync status: {e}");
            return ExitCode::from(2);
        }
    };
    let target = match (c.addr, &cfg) {
        (Some(a), None) => match Target::parse(a) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("statesync status: {e}");
                return ExitCode::from(2);
            }
        },
        (None, Some(_)) => None,
        _ => {
            eprintln!("statesync status: give a node's admin socket, or --cluster --config FILE");
            return ExitCode::from(2);
        }
    };
    loop {
        let (text, ok) = match (&cfg, &target) {
            (Some(cfg), _) => {
                let view = cluster(cfg, token.as_ref(), c.timeout);
                let text = if c.json {
                    serde_json::to_string(&view).unwrap_or_default() + "\n"
                } else {
                    format_cluster(&view)
                };
                (text, true)
            }
            (None, Some(t)) => match fetch(t, token.as_ref(), c.timeout) {
                Ok(r) if c.json => (serde_json::to_string(&r).unwrap_or_default() + "\n", true),
                Ok(r) => (format_status(&r), true),
                // The node's own refusal, as it came (e.g. "permission denied").
                Err(FetchError::Refused { reply, .. }) if c.json => (format!("{reply}\n"), false),
                Err(FetchError::Refused { reply, .. }) => (
                    format!("error: {}\n", reply["error"].as_str().unwrap_or("refused")),
                    false,
                ),
                Err(e) => {
                    eprintln!("statesync status: {e}");
                    if c.watch.is_none() {
                        return ExitCode::FAILURE;
                    }
                    (format!("{}: {e}\n", t), false)
                }
            },
            (None, None) => unreachable!("checked above"),
        };
        let Some(secs) = c.watch else {
            print!("{text}");
            return if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        };
        if c.json {
            print!("{text}");
        } else {
            // Clear the screen and home the cursor, then the new view.
            print!(
                "\x1b[2J\x1b[H{}  (every {secs} s; Ctrl-C to stop)\n{text}",
                format_unix_us(crate::daemon::unix_now_us())
            );
        }
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        std::thread::sleep(Duration::from_secs_f64(secs.max(0.1)));
    }
}

// ---------------------------------------------------------------------------------------------
// The cluster view.

/// Where a node stands against the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    /// The primary (the one of the highest epoch, should two claim it).
    Primary,
    /// A standby in the primary's sync set; a client following the primary's epoch with
    /// every channel known.
    InSync,
    /// Anything else: a standby out of the sync set (joining, transferring), a candidate, a
    /// stale primary, a client of another epoch or with a channel awaiting a full replay.
    Behind,
    /// No reply from the node, or no primary to compare it with.
    Unknown,
}

impl SyncState {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncState::Primary => "primary",
            SyncState::InSync => "in sync",
            SyncState::Behind => "behind",
            SyncState::Unknown => "-",
        }
    }
}

/// One node of the cluster view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterNode {
    pub id: NodeId,
    /// As the config says.
    pub kind: NodeKind,
    /// Where it was asked.
    pub admin: String,
    pub reachable: bool,
    /// Why there is no status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `primary`, `standby`, `candidate`, `joining` or `client`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    pub sync: SyncState,
    /// The worst channel's lag in ops: the primary's commit lag; a control unit's ops behind
    /// the primary's highest; a client's ops not acknowledged to the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_ops: Option<u64>,
    /// The worst channel's lag in time, in ms: the age of the oldest op counted (for a standby
    /// in the sync set, bounded by the primary's commit lag: every op it lacks is uncommitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_ms: Option<u64>,
    /// The node's whole status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusReply>,
}

/// Every node of a deployment, as `statesync status --cluster` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub schema_version: u32,
    pub config: String,
    pub now_unix_us: u64,
    /// The primary the others are compared with.
    pub primary: Option<NodeId>,
    pub nodes: Vec<ClusterNode>,
}

/// Where to ask node `id`: its UDP listener when it has one and a token is given, else its
/// Unix socket.
pub(super) fn admin_target(
    cfg: &DeploymentConfig,
    id: NodeId,
    token: Option<&AdminToken>,
) -> Target {
    match cfg.node(id).and_then(|(_, n)| n.admin) {
        Some(a) if token.is_some() => Target::Udp(a),
        _ => Target::Unix(cfg.admin.socket_path(id)),
    }
}

/// Asks every node of `cfg` for its status (all at once, each within `timeout`) and compares
/// each with the primary.
pub fn cluster(
    cfg: &DeploymentConfig,
    token: Option<&AdminToken>,
    timeout: Duration,
) -> ClusterStatus {
    let nodes: Vec<(NodeId, NodeKind, Target)> = cfg
        .control_units
        .iter()
        .map(|n| (n.id, NodeKind::ControlUnit))
        .chain(cfg.clients.iter().map(|c| (c.node.id, NodeKind::Client)))
        .map(|(id, k)| (id, k, admin_target(cfg, id, token)))
        .collect();
    let replies: Vec<Result<StatusReply, FetchError>> = std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|(_, _, t)| {
                s.spawn(move || match t {
                    // No socket: the node is not running here (no point waiting for it).
                    Target::Unix(p) if !p.exists() => Err(FetchError::Unreachable(format!(
                        "{}: no such socket (node not running?)",
                        p.display()
                    ))),
                    _ => fetch(t, token, timeout),
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(FetchError::Bad("status thread panicked".into())))
            })
            .collect()
    });
    assemble(cfg.path.display().to_string(), nodes, replies)
}

/// The cluster view from each node's reply.
fn assemble(
    config: String,
    nodes: Vec<(NodeId, NodeKind, Target)>,
    replies: Vec<Result<StatusReply, FetchError>>,
) -> ClusterStatus {
    let primary = replies
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .filter(|r| r.is_primary())
        .max_by_key(|r| r.epoch);
    let out: Vec<ClusterNode> = nodes
        .iter()
        .zip(&replies)
        .map(|((id, kind, target), r)| {
            let mut n = ClusterNode {
                id: *id,
                kind: *kind,
                admin: target.to_string(),
                reachable: false,
                error: None,
                role: None,
                epoch: None,
                sync: SyncState::Unknown,
                lag_ops: None,
                lag_ms: None,
                status: None,
            };
            match r {
                Err(e) => n.error = Some(e.to_string()),
                Ok(s) => {
                    n.reachable = true;
                    n.role = Some(s.role_str().to_owned());
                    n.epoch = Some(s.epoch);
                    let (sync, ops, ms) = compare(s, primary);
                    (n.sync, n.lag_ops, n.lag_ms) = (sync, ops, ms);
                    n.status = Some(s.clone());
                }
            }
            n
        })
        .collect();
    ClusterStatus {
        schema_version: SCHEMA_VERSION,
        config,
        now_unix_us: crate::daemon::unix_now_us(),
        primary: primary.map(|p| p.id),
        nodes: out,
    }
}

/// A node against the primary: where it stands, its worst lag in ops and in ms.
fn compare(
    s: &StatusReply,
    primary: Option<&StatusReply>,
) -> (SyncState, Option<u64>, Option<u64>) {
    let Some(p) = primary else {
        return (SyncState::Unknown, None, None);
    };
    if s.id == p.id {
        let ops = p.channels.iter().filter_map(|c| c.lag_ops).max();
        let ms = p.channels.iter().filter_map(|c| c.lag_ms).max();
        return (SyncState::Primary, ops.or(Some(0)), ms);
    }
    match s.kind {
        NodeKind::ControlUnit => {
            // Ops it has not applied of those the primary assigned.
            let behind = |ch: &super::status::ChannelStatus| {
                s.channel(ch.channel)
                    .map_or(ch.top(), |c| ch.top().saturating_sub(c.applied))
            };
            let ops = p.channels.iter().map(behind).max().unwrap_or(0);
            let in_sync = s.role == Some(super::status::RoleName::Standby)
                && s.epoch == p.epoch
                && p.in_sync_set(s.id);
            if !in_sync {
                return (SyncState::Behind, Some(ops), (ops == 0).then_some(0));
            }
            // Every op it lacks is uncommitted: the primary's commit lag bounds its age.
            let ms = p
                .channels
                .iter()
                .filter(|c| behind(c) > 0)
                .filter_map(|c| c.lag_ms)
                .max()
                .unwrap_or(0);
            (SyncState::InSync, Some(ops), Some(ms))
        }
        NodeKind::Client => {
            let mine = s.channels.iter().filter_map(|c| p.channel(c.channel));
            let ops = mine.clone().filter_map(|c| c.client_lag_ops).max();
            let ms = mine.filter_map(|c| c.client_lag_ms).max();
            let in_sync = s.epoch == p.epoch && s.channels.iter().all(|c| c.unknown != Some(true));
            let sync = if in_sync {
                SyncState::InSync
            } else {
                SyncState::Behind
            };
            (sync, ops.or(Some(0)), ms)
        }
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// The cluster view as one table.
pub fn format_cluster(v: &ClusterStatus) -> String {
    let mut out = String::new();
    let reachable = v.nodes.iter().filter(|n| n.reachable).count();
    let primary = match v.primary {
        Some(p) => format!("primary {p}"),
        None => "no primary reachable".to_owned(),
    };
    let _ = writeln!(
        out,
        "{}: {} nodes, {reachable} reachable, {primary}",
        v.config,
        v.nodes.len()
    );
    let _ = writeln!(
        out,
        "{:>6}  {:<12}  {:<9}  {:>10}  {:<7}  {:>9}  {:>8}  reachable",
        "node", "kind", "role", "epoch", "sync", "lag_ops", "lag_ms"
    );
    for n in &v.nodes {
        let reach = match &n.error {
            None => "yes".to_owned(),
            Some(e) => format!("no: {e}"),
        };
        let _ = writeln!(
            out,
            "{:>6}  {:<12}  {:<9}  {:>10}  {:<7}  {:>9}  {:>8}  {reach}",
            n.id,
            n.kind.as_str(),
            n.role.as_deref().unwrap_or("-"),
            opt(n.epoch),
            n.sync.as_str(),
            opt(n.lag_ops),
            opt(n.lag_ms),
        );
    }
    out
}

// ---------------------------------------------------------------------------------------------
// One node.

fn unix_field(v: Option<u64>) -> String {
    v.map_or("-".to_owned(), format_unix_us)
}

/// The human-readable form of one node's status.
pub fn format_status(v: &StatusReply) -> String {
    let mut out = String::new();
    let epoch = v.epoch;
    if v.kind == NodeKind::Client {
        let _ = writeln!(
            out,
            "node {} (client)  epoch {epoch} (counter {}), primary {}",
            v.id,
            epoch >> 8,
            v.primary.map_or("-".to_owned(), |p| p.to_string())
        );
        let _ = writeln!(
            out,
            "{:>7} {:>12} {:>8}  public_digest",
            "channel", "applied", "unknown"
        );
        for c in &v.channels {
            let _ = writeln!(
                out,
                "{:>7} {:>12} {:>8}  {}",
                c.channel,
                c.applied,
                c.unknown.map_or("-".to_owned(), |u| u.to_string()),
                c.public_digest
            );
        }
    } else {
        let sync_set = match &v.sync_set {
            Some(s) => format!(
                "  sync set [{}]",
                s.iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "node {} (control unit)  role {}  epoch {epoch} (counter {}, owner index {}){sync_set}",
            v.id,
            v.role_str(),
            epoch >> 8,
            epoch & 0xff,
        );
        if let Some(p) = v.key_mismatch {
            let _ = writeln!(
                out,
                "ALARM: key mismatch: primary {p} is heard only through frames that fail authentication; takeover withheld"
            );
        }
        let f = v.failover.unwrap_or_default();
        match f.started_unix_us {
            None => {
                let _ = writeln!(out, "failover: none");
            }
            Some(s) => {
                let took = match f.finished_unix_us {
                    Some(e) => format!(" ({:.1} ms)", e.saturating_sub(s) as f64 / 1e3),
                    None => String::new(),
                };
                let _ = writeln!(
                    out,
                    "failover: started {}, finished {}{took}; last heard from the old primary {}",
                    unix_field(Some(s)),
                    unix_field(f.finished_unix_us),
                    unix_field(f.last_primary_rx_unix_us)
                );
            }
        }
        let _ = writeln!(
            out,
            "{:>7} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8} {:>7} {:>10} {:>9}  {:<16}  full_digest",
            "channel",
            "next_op",
            "commit",
            "acked",
            "applied",
            "held",
            "lag_ops",
            "lag_ms",
            "cl_lag_ops",
            "cl_lag_ms",
            "public_digest"
        );
        for c in &v.channels {
            let _ = writeln!(
                out,
                "{:>7} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8} {:>7} {:>10} {:>9}  {:<16}  {}",
                c.channel,
                opt(c.next_op),
                opt(c.commit),
                opt(c.client_acked),
                c.applied,
                opt(c.held),
                opt(c.lag_ops),
                opt(c.lag_ms),
                opt(c.client_lag_ops),
                opt(c.client_lag_ms),
                c.public_digest,
                c.full_digest.as_deref().unwrap_or("-")
            );
        }
        if let Some(s) = v.submits {
            let _ = writeln!(
                out,
                "submits: {} accepted, {} rejected",
                s.accepted, s.rejected
            );
        }
    }
    if let Some(n) = v.channels_truncated {
        let _ = writeln!(out, "({n} more channels not shown: reply cut to fit)");
    }
    if !v.peers.is_empty() {
        let peers: Vec<String> = v
            .peers
            .iter()
            .map(|p| {
                let heard = p
                    .last_heard_ms
                    .map_or("never".to_owned(), |ms| format!("{ms} ms ago"));
                let sync = match p.in_sync_set {
                    Some(true) => ", in sync set",
                    Some(false) => ", not in sync set",
                    None => "",
                };
                format!("{} {heard}{sync}", p.id)
            })
            .collect();
        let _ = writeln!(out, "peers heard: {}", peers.join("; "));
    }
    let c = &v.counters.core;
    let _ = writeln!(
        out,
        "frames rx {} tx {}; rejected: malformed {}, stale epoch {}, unknown sender {}, unexpected {}; retransmits {}, replays {}",
        c.frames_rx,
        c.frames_tx,
        c.rejected_malformed,
        c.rejected_stale_epoch,
        c.rejected_unknown_sender,
        c.rejected_unexpected,
        c.retransmits,
        c.replays_started
    );
    out
}

#[cfg(test)]
mod tests {
    use super::super::status::{ChannelStatus, parse_reply};
    use super::*;
    use serde_json::json;

    #[test]
    fn formats_both_kinds() {
        let cu = parse_reply(&json!({"ok":true,"id":1,"kind":"control_unit","role":"primary","epoch":512,
            "failover":{"started_unix_us":1_000_000,"finished_unix_us":1_002_500,"last_primary_rx_unix_us":990_000},
            "sync_mask":2,"sync_set":[2],"channels":[{"channel":0,"next_op":18,"commit":17,"client_acked":17,"applied":17,"held":17,
            "public_digest":"0123456789abcdef","full_digest":"fedcba9876543210","lag_ops":1,"lag_ms":3}],
            "peers":[{"id":2,"kind":"control_unit","last_heard_ms":4,"in_sync_set":true}],
            "counters":{"frames_rx":5},"submits":{"accepted":3,"rejected":1}}))
        .unwrap();
        assert_eq!(cu.schema_version, 1, "no schema_version: an old node");
        let s = format_status(&cu);
        assert!(s.contains("role primary"), "{s}");
        assert!(s.contains("sync set [2]"), "{s}");
        assert!(s.contains("0123456789abcdef"), "{s}");
        assert!(s.contains("(2.5 ms)"), "{s}");
        assert!(s.contains("2 4 ms ago, in sync set"), "{s}");
        let cl = parse_reply(&json!({"ok":true,"id":100,"kind":"client","epoch":256,"primary":1,
            "channels":[{"channel":3,"applied":9,"unknown":false,"public_digest":"00000000000000aa"}]}))
        .unwrap();
        let s = format_status(&cl);
        assert!(
            s.contains("(client)") && s.contains("00000000000000aa"),
            "{s}"
        );
        assert_eq!(
            parse_reply(&json!({"ok":false,"error":"x"})).unwrap_err(),
            "x"
        );
    }

    fn cu(
        id: NodeId,
        role: &str,
        epoch: u64,
        applied: u64,
        sync_set: Option<Vec<NodeId>>,
    ) -> StatusReply {
        let mut v = json!({"ok":true,"schema_version":2,"id":id,"kind":"control_unit","role":role,
            "epoch":epoch,"channels":[]});
        if let Some(s) = sync_set {
            v["sync_set"] = json!(s);
        }
        let mut r = parse_reply(&v).unwrap();
        r.channels = (0..2)
            .map(|ch| ChannelStatus {
                channel: ch,
                next_op: Some(applied + 1),
                applied,
                lag_ops: Some(0),
                lag_ms: Some(0),
                client_lag_ops: Some(ch as u64),
                client_lag_ms: Some(7),
                ..Default::default()
            })
            .collect();
        r
    }

    #[test]
    fn cluster_rows_against_the_primary() {
        let mut p = cu(1, "primary", 512, 40, Some(vec![2]));
        p.channels[1].lag_ops = Some(3);
        p.channels[1].lag_ms = Some(12);
        let s = cu(2, "standby", 512, 38, None);
        let stale = cu(4, "primary", 256, 10, Some(vec![]));
        let client = parse_reply(&json!({"ok":true,"id":100,"kind":"client","epoch":512,
            "channels":[{"channel":1,"applied":39,"unknown":false,"public_digest":"0"}]}))
        .unwrap();
        let t = |i: u32| Target::Unix(format!("/run/statesync/{i}.sock").into());
        let view = assemble(
            "lab.toml".into(),
            vec![
                (1, NodeKind::ControlUnit, t(1)),
                (2, NodeKind::ControlUnit, t(2)),
                (3, NodeKind::ControlUnit, t(3)),
                (4, NodeKind::ControlUnit, t(4)),
                (100, NodeKind::Client, t(100)),
            ],
            vec![
                Ok(p),
                Ok(s),
                Err(FetchError::Unreachable("no such socket".into())),
                Ok(stale),
                Ok(client),
            ],
        );
        assert_eq!(view.primary, Some(1));
        let row = |id: NodeId| view.nodes.iter().find(|n| n.id == id).unwrap();
        assert_eq!(row(1).sync, SyncState::Primary);
        assert_eq!((row(1).lag_ops, row(1).lag_ms), (Some(3), Some(12)));
        assert_eq!(row(2).sync, SyncState::InSync);
        assert_eq!((row(2).lag_ops, row(2).lag_ms), (Some(2), Some(12)));
        assert!(!row(3).reachable);
        assert_eq!(row(3).sync, SyncState::Unknown);
        assert_eq!(row(4).sync, SyncState::Behind);
        assert_eq!(row(4).lag_ops, Some(30));
        assert_eq!(row(100).sync, SyncState::InSync);
        assert_eq!((row(100).lag_ops, row(100).lag_ms), (Some(1), Some(7)));
        let text = format_cluster(&view);
        assert!(text.contains("5 nodes, 4 reachable, primary 1"), "{text}");
        assert!(text.contains("no: no such socket"), "{text}");
        assert_eq!(text.lines().count(), 7, "{text}");
    }
}
