//! `statesync failover --dry-run`: what a takeover by a standby would do now, per channel,
//! without acting. The standby runs the same cut decision as a real takeover
//! ([`ControlUnit::failover_preview`]) on the clients' own answers: the command first asks
//! each client what it would answer the takeover's query (`query_answer`, read-only, through
//! [`Client::query_answer`]), then hands those answers to the standby. A client that cannot be
//! reached is taken to be at its last acknowledged op, and the channel is marked unsure where
//! that guess cannot tell.

use super::config::{AdminToken, read_token_file};
use super::status::resolution_name;
use super::view::admin_target;
use super::{request, role_name};
use crate::daemon::config::{DeploymentConfig, load};
use crate::proto::{Client, ControlUnit, NodeId, OpId, Role, SectionMask};
use crate::wire::{LA_FLAG_UNKNOWN, LaReplyBody};
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
    /// Clients the command could not ask (their channels use the acked-op guess).
    #[serde(default)]
    pub client_errors: Vec<String>,
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
    pub replay_sections: SectionMask,
    pub replay_bytes: u64,
    pub full_replay_bytes: u64,
    /// The client's own answer was used (else its last acknowledged op).
    #[serde(default)]
    pub answered: bool,
    /// False where only the client's own answer can tell and it was not had.
    pub sure: bool,
}

/// A channel and the op above which a client is asked what it applied (the standby's highest
/// held op, as a takeover's query asks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryAbove {
    pub channel: u32,
    pub above: u64,
}

/// A client's answer to a takeover's query: the fields of its `LA_REPLY`, in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientAnswer {
    pub channel: u32,
    /// The op the question was asked above: the answer fits a preview only at that op.
    pub above: u64,
    /// The client has no history to offer (it would get a full replay).
    pub unknown: bool,
    pub last_applied: u64,
    pub cookie_above: u64,
    pub data_epoch: u64,
}

impl ClientAnswer {
    fn from_reply(above: u64, r: &LaReplyBody) -> Self {
        ClientAnswer {
            channel: r.channel.get(),
            above,
            unknown: r.flags.get() & LA_FLAG_UNKNOWN != 0,
            last_applied: r.last_applied.get(),
            cookie_above: r.cookie_above.get(),
            data_epoch: r.data_epoch.get(),
        }
    }

    fn to_reply(self) -> LaReplyBody {
        LaReplyBody {
            channel: self.channel.into(),
            flags: if self.unknown { LA_FLAG_UNKNOWN } else { 0 }.into(),
            last_applied: self.last_applied.into(),
            cookie_above: self.cookie_above.into(),
            data_epoch: self.data_epoch.into(),
        }
    }
}

/// The reply to `{"cmd": "query_answer"}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueryAnswerReply {
    pub ok: bool,
    pub node: NodeId,
    pub answers: Vec<ClientAnswer>,
}

pub const SCHEMA_VERSION: u32 = 2;

/// A client's answers, for channels it owns (at most one per channel it owns: a longer list is
/// refused, so a request's work stays bounded by the node's own size).
pub fn answer(client: &Client, asked: &[QueryAbove]) -> Result<QueryAnswerReply, String> {
    let owned = client.channels().count();
    if asked.len() > owned {
        return Err(format!(
            "{} channels asked; this client owns {owned}",
            asked.len()
        ));
    }
    let answers = asked
        .iter()
        .map(|q| {
            client
                .query_answer(q.channel, OpId::new(q.above))
                .map(|r| ClientAnswer::from_reply(q.above, &r))
                .ok_or_else(|| format!("channel {} is not this client's", q.channel))
        })
        .collect::<Result<_, _>>()?;
    Ok(QueryAnswerReply {
        ok: true,
        node: client.id,
        answers,
    })
}

/// The unit's preview, with the clients' answers where given for the op it now holds.
pub fn build(cu: &ControlUnit, answers: &[ClientAnswer]) -> Result<DryRunReply, String> {
    let n = cu.config().topology.channels();
    if answers.len() > n {
        return Err(format!("{} answers for {n} channels", answers.len()));
    }
    let mut by_channel: Vec<Option<ClientAnswer>> = vec![None; n];
    for a in answers {
        if let Some(slot) = by_channel.get_mut(a.channel as usize) {
            *slot = Some(*a);
        }
    }
    let preview = cu.failover_preview(|ch, held| {
        by_channel
            .get(ch as usize)
            .copied()
            .flatten()
            .filter(|a| a.above == held)
            .map(ClientAnswer::to_reply)
    });
    let channels: Vec<DryRunChannel> = preview
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
                answered: p.answered,
                sure: p.sure,
            }
        })
        .collect();
    Ok(DryRunReply {
        schema_version: SCHEMA_VERSION,
        ok: true,
        node: cu.id,
        role: role_name(cu.role()).to_owned(),
        eligible: cu.is_eligible(),
        epoch: cu.epoch(),
        replay_bytes: channels.iter().map(|c| c.replay_bytes).sum(),
        full_replay_bytes: channels.iter().map(|c| c.full_replay_bytes).sum(),
        client_errors: Vec::new(),
        channels,
    })
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
                "  (unsure: the client did not answer, and it acked ops this unit never held)"
            }
        );
    }
    out += &format!(
        "  total: replay {} bytes, against {} bytes for a full resync of every channel\n",
        r.replay_bytes, r.full_replay_bytes
    );
    for e in &r.client_errors {
        out += &format!("  not asked (its channels assume its last acked op): {e}\n");
    }
    out
}

/// One admin request to node `id`, MAC'd with the token over UDP, refused replies as errors.
fn ask<T: serde::de::DeserializeOwned>(
    cfg: &DeploymentConfig,
    id: NodeId,
    token: Option<&AdminToken>,
    timeout: Duration,
    req: serde_json::Value,
) -> Result<T, String> {
    let target = admin_target(cfg, id, token);
    let v = request(&target, &req, token, timeout).map_err(|e| format!("node {id}: {e}"))?;
    if v["ok"] != true {
        return Err(format!(
            "node {id}: {}",
            v["error"].as_str().unwrap_or("refused")
        ));
    }
    serde_json::from_value(v).map_err(|e| format!("node {id}: unreadable reply: {e}"))
}

/// Node `id`'s preview on its clients' own answers: asks the unit what it holds, asks each
/// client what it would answer a query above that, and asks the unit again with the answers.
/// A client that cannot be asked is named in `client_errors`.
pub fn preview(
    cfg: &DeploymentConfig,
    id: NodeId,
    token: Option<&AdminToken>,
    timeout: Duration,
) -> Result<DryRunReply, String> {
    let first: DryRunReply = ask(
        cfg,
        id,
        token,
        timeout,
        serde_json::json!({"cmd": "failover_preview"}),
    )?;
    let mut clients: Vec<NodeId> = first.channels.iter().map(|c| c.client).collect();
    clients.sort_unstable();
    clients.dedup();
    let mut answers = Vec::new();
    let mut client_errors = Vec::new();
    for client in clients {
        let asked: Vec<QueryAbove> = first
            .channels
            .iter()
            .filter(|c| c.client == client)
            .map(|c| QueryAbove {
                channel: c.channel,
                above: c.held,
            })
            .collect();
        let req = serde_json::json!({"cmd": "query_answer", "channels": asked});
        match ask::<QueryAnswerReply>(cfg, client, token, timeout, req) {
            Ok(r) => answers.extend(r.answers),
            Err(e) => client_errors.push(e),
        }
    }
    let mut r: DryRunReply = ask(
        cfg,
        id,
        token,
        timeout,
        serde_json::json!({"cmd": "failover_preview", "answers": answers}),
    )?;
    r.client_errors = client_errors;
    Ok(r)
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
        match preview(&cfg, id, token.as_ref(), timeout) {
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
