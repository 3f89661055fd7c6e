//! `statesync failover --dry-run`: what a takeover by a standby would do now, per channel,
//! without acting. The standby runs the same cut decision as a real takeover
//! ([`ControlUnit::failover_preview`]); this module carries its answer over the admin socket
//! and prints it.

use super::config::{AdminToken, read_token_file};
use super::status::resolution_name;
use super::view::admin_target;
use super::{request, role_name, with_token};
use crate::daemon::config::{DeploymentConfig, load};
use crate::proto::{ControlUnit, NodeId, Role};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// The reply to `{"cmd": "failover_preview"}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DryRunReply {
    pub schema_version: u32,
    pub ok: bool,
    pub node: NodeId,
    pub role: String,
    /// Whether this unit may take over now (a standby in the sync set).
    pub eligible: bool,
    pub epoch: u64,
    pub channels: Vec<DryRunChannel>,
    /// Sums over the channels.
    pub replay_bytes: u64,
    pub full_replay_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DryRunChannel {
    pub channel: u32,
    pub client: NodeId,
    /// `in_sync`, `behind`, `ahead` or `unknown`, as `status` names a past failover's.
    pub resolution: String,
    pub client_op: Option<u64>,
    pub cut: u64,
    pub held: u64,
    pub replay_sections: u64,
    pub replay_bytes: u64,
    pub full_replay_bytes: u64,
    /// False where only the client's own answer can tell.
    pub sure: bool,
}

pub const SCHEMA_VERSION: u32 = 1;

pub fn build(cu: &ControlUnit) -> DryRunReply {
    let channels: Vec<DryRunChannel> = cu
        .failover_preview()
        .into_iter()
        .map(|p| {
            let (resolution, client_op) = resolution_name(p.resolution, p.cut);
            DryRunChannel {
                channel: p.channel,
                client: p.client,
                resolution: resolution.to_owned(),
                client_op,
                cut: p.cut,
                held: p.held,
                replay_sections: p.replay_sections,
                replay_bytes: p.replay_bytes,
                full_replay_bytes: p.full_replay_bytes,
                sure: p.sure,
            }
        })
        .collect();
    DryRunReply {
        schema_version: SCHEMA_VERSION,
        ok: true,
        node: cu.id,
        role: role_name(cu.role()).to_owned(),
        eligible: cu.is_eligible(),
        epoch: cu.epoch(),
        replay_bytes: channels.iter().map(|c| c.replay_bytes).sum(),
        full_replay_bytes: channels.iter().map(|c| c.full_replay_bytes).sum(),
        channels,
    }
}

/// One line per channel, then the totals.
pub fn format(r: &DryRunReply) -> String {
    let mut out = format!(
        "failover dry run on node {} ({}, epoch {}{}):\n  channel  client  resolution  client_op       cut      held  replay sections     replay bytes  of full\n",
        r.node,
        r.role,
        r.epoch,
        if r.eligible {
            ", eligible"
        } else {
            ", NOT eligible: it would not take over now"
        }
    );
    for c in &r.channels {
        out += &format!(
            "  {:>7}  {:>6}  {:<10}  {:>9}  {:>8}  {:>8}  {:#018x}  {:>12}  {:>7}{}\n",
            c.channel,
            c.client,
            c.resolution,
            c.client_op.map_or("-".to_owned(), |o| o.to_string()),
            c.cut,
            c.held,
            c.replay_sections,
            c.replay_bytes,
            c.full_replay_bytes,
            if c.sure {
                ""
            } else {
                "  (the client acked ops this unit never held: its answer decides)"
            }
        );
    }
    out += &format!(
        "  total: replay {} bytes, against {} bytes for a full resync of every channel\n",
        r.replay_bytes, r.full_replay_bytes
    );
    out
}

/// Asks node `id` for its preview.
fn ask(
    cfg: &DeploymentConfig,
    id: NodeId,
    token: Option<&AdminToken>,
    timeout: Duration,
) -> Result<DryRunReply, String> {
    let target = admin_target(cfg, id, token);
    let mut req = serde_json::json!({"cmd": "failover_preview"});
    if let (super::Target::Udp(_), Some(t)) = (&target, token) {
        req = with_token(&req, t);
    }
    let v = request(&target, &req, timeout).map_err(|e| format!("node {id}: {e}"))?;
    if v["ok"] != true {
        return Err(format!(
            "node {id}: {}",
            v["error"].as_str().unwrap_or("refused")
        ));
    }
    serde_json::from_value(v).map_err(|e| format!("node {id}: unreadable reply: {e}"))
}

/// `statesync failover --dry-run --config FILE [--id N]`: asks node `id`, or else the control
/// units in priority order until one is an eligible standby (the one a failover now would
/// most likely elect).
pub fn run(
    config: &Path,
    id: Option<NodeId>,
    token_file: Option<&Path>,
    json: bool,
    timeout: Duration,
) -> ExitCode {
    let fail = |e: String| {
        eprintln!("statesync failover: {e}");
        ExitCode::from(2)
    };
    let cfg = match load(config) {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    let token = match token_file.map(|f| read_token_file(f, "--token-file")) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => return fail(e),
    };
    let ids: Vec<NodeId> = match id {
        Some(id) => vec![id],
        None => cfg.control_units.iter().map(|n| n.id).collect(),
    };
    let mut errors = Vec::new();
    let mut fallback = None;
    for id in ids.iter().copied() {
        match ask(&cfg, id, token.as_ref(), timeout) {
            Ok(r) if r.eligible || ids.len() == 1 => return print(&r, json),
            Ok(r) => {
                if r.role == role_name(Role::Standby) && fallback.is_none() {
                    fallback = Some(r);
                }
            }
            Err(e) => errors.push(e),
        }
    }
    match fallback {
        Some(r) => print(&r, json),
        None => fail(format!(
            "no standby answered ({})",
            if errors.is_empty() {
                "every unit that answered is the primary or joining".to_owned()
            } else {
                errors.join("; ")
            }
        )),
    }
}

fn print(r: &DryRunReply, json: bool) -> ExitCode {
    if json {
        println!("{}", serde_json::to_string(r).unwrap_or_default());
    } else {
        print!("{}", format(r));
    }
    ExitCode::SUCCESS
}
