//! `statesync node|primary|standby|client|status|switchover`.

use super::admin::{Target, read_token_file, request, with_token};
use super::config::load;
use super::format_unix_us;
use super::logs::{LogFormat, LogLevel};
use super::run::{Mode, node_mode, run_node};
use crate::proto::{InjectedBug, NodeId};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args, Debug, Clone)]
pub struct NodeArgs {
    /// Deployment config (TOML, shared by every node).
    #[arg(long)]
    pub config: PathBuf,
    /// This node's id in the config.
    #[arg(long)]
    pub id: NodeId,
    /// Test aid: run with a deliberately planted protocol bug (a name from
    /// `statesync::proto::INJECTED_BUGS`, e.g. `discard-committed`), so that a drill can prove
    /// its checks catch it. Command line only: no config file can set it. Never in production.
    #[arg(long, value_name = "NAME", default_value = "none")]
    pub inject_bug: InjectedBug,
    /// Run without frame authentication (no `[security] key_dir` needed). Anyone who can
    /// reach the node's address can then forge frames: for labs only.
    #[arg(long)]
    pub insecure: bool,
    /// How the log on stderr is written: `text` (`<time> <LEVEL> node <id>: <message>`) or
    /// `json` (one object per line with `timestamp`, `level`, `node`, `message` and fields).
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// The least severe log records written: `error`, `warn` (adds rejected datagrams, at
    /// most a line a second per reason), `info` (adds starts, role changes, failovers, joins),
    /// `debug` (adds per-channel state-transfer steps), `trace`.
    #[arg(long, value_enum, value_name = "LEVEL", default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,
}

/// `statesync node`: the same flags as every daemon subcommand, and no flag that differs
/// between a first start and a restart.
#[derive(clap::Args, Debug, Clone)]
pub struct NodeCmdArgs {
    #[command(flatten)]
    pub node: NodeArgs,
}

#[derive(clap::Args, Debug, Clone)]
pub struct PrimaryArgs {
    #[command(flatten)]
    pub node: NodeArgs,
}

#[derive(clap::Args, Debug, Clone)]
pub struct StandbyArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// A restarted control unit: start without state and join through a state transfer.
    #[arg(long)]
    pub rejoin: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ClientArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// A restarted client: start without state and ask for a full replay.
    #[arg(long)]
    pub fresh: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct StatusArgs {
    /// The node's admin socket: its Unix socket path (`<admin.socket_dir>/<id>.sock`, e.g.
    /// /run/statesync/1.sock), or IP:PORT of its UDP admin listener.
    pub addr: String,
    /// Over UDP: a file holding the admin token (`admin.token_file`). Without it a UDP status
    /// gets no reply: a reply larger than its request only goes to an authenticated sender.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Print the raw JSON reply.
    #[arg(long)]
    pub json: bool,
    /// How long to wait for the reply, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
}

#[derive(clap::Args, Debug, Clone)]
pub struct SwitchoverArgs {
    /// Admin socket of the standby that should take over: its Unix socket path, or IP:PORT
    /// of its UDP admin listener (then `--token-file` is needed).
    #[arg(long)]
    pub standby: String,
    /// Over UDP: a file holding the admin token (`admin.token_file`).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// How long to wait for the reply, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
}

fn run_daemon(node: &NodeArgs, mode: Option<Mode>) -> ExitCode {
    super::logs::init(node.log_format, node.log_level);
    let id = node.id;
    let cfg = match load(&node.config) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(node = id, "statesync: {e}");
            return ExitCode::from(2);
        }
    };
    // `statesync node`: what the node is and whether it ran before decide its mode.
    let mode = match mode {
        Some(m) => m,
        None => match node_mode(&cfg, id) {
            Ok((m, why)) => {
                tracing::info!(node = id, "{why}: starting as {m}");
                m
            }
            Err(e) => {
                tracing::error!(node = id, "statesync: {e}");
                return ExitCode::from(e.exit_code());
            }
        },
    };
    if node.inject_bug != InjectedBug::None {
        tracing::warn!(
            node = id,
            "statesync: test aid: running with the planted bug '{}'",
            node.inject_bug
        );
    }
    match run_node(&cfg, id, mode, node.inject_bug, node.insecure) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(node = id, "statesync: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// `statesync node`: one command line for every start of a node (see [`node_mode`]).
pub fn run_node_cmd(a: NodeCmdArgs) -> ExitCode {
    run_daemon(&a.node, None)
}

pub fn run_primary(a: PrimaryArgs) -> ExitCode {
    run_daemon(&a.node, Some(Mode::Primary))
}

pub fn run_standby(a: StandbyArgs) -> ExitCode {
    run_daemon(&a.node, Some(Mode::Standby { rejoin: a.rejoin }))
}

pub fn run_client(a: ClientArgs) -> ExitCode {
    run_daemon(&a.node, Some(Mode::Client { fresh: a.fresh }))
}

/// Sends one request to `addr` (a Unix socket path or a UDP IP:PORT), with the token of
/// `token_file` when it goes over UDP (the Unix socket needs none).
pub fn ask(
    addr: &str,
    req: Value,
    token_file: Option<&std::path::Path>,
    timeout_ms: u64,
) -> Result<Value, String> {
    let target = Target::parse(addr)?;
    let req = match (&target, token_file) {
        (Target::Udp(_), Some(f)) => with_token(&req, &read_token_file(f, "--token-file")?),
        _ => req,
    };
    request(&target, &req, Duration::from_millis(timeout_ms)).map_err(|e| e.to_string())
}

pub fn run_status(a: StatusArgs) -> ExitCode {
    let v = match ask(
        &a.addr,
        json!({"cmd": "status"}),
        a.token_file.as_deref(),
        a.timeout_ms,
    ) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("statesync status: {e}");
            return ExitCode::FAILURE;
        }
    };
    if a.json {
        println!("{v}");
    } else {
        print!("{}", format_status(&v));
    }
    if v["ok"] == false {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

pub fn run_switchover(a: SwitchoverArgs) -> ExitCode {
    match ask(
        &a.standby,
        json!({"cmd": "takeover"}),
        a.token_file.as_deref(),
        a.timeout_ms,
    ) {
        Ok(v) if v["ok"] == true => {
            println!(
                "{}: taking over, epoch {}",
                a.standby,
                v["epoch"]
                    .as_u64()
                    .map_or("?".to_owned(), |e| e.to_string())
            );
            ExitCode::SUCCESS
        }
        Ok(v) => {
            eprintln!(
                "statesync switchover: {}: {}",
                a.standby,
                v["error"].as_str().unwrap_or("refused")
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("statesync switchover: {e}");
            ExitCode::FAILURE
        }
    }
}

fn num(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn unix_field(v: &Value) -> String {
    v.as_u64().map_or("-".to_owned(), format_unix_us)
}

/// The human-readable form of a status reply.
pub fn format_status(v: &Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if v["ok"] == false {
        let _ = writeln!(out, "error: {}", num(&v["error"]));
        return out;
    }
    let epoch = v["epoch"].as_u64().unwrap_or(0);
    let kind = v["kind"].as_str().unwrap_or("?");
    if kind == "client" {
        let _ = writeln!(
            out,
            "node {} (client)  epoch {epoch} (counter {}), primary {}",
            num(&v["id"]),
            epoch >> 8,
            num(&v["primary"])
        );
        let _ = writeln!(
            out,
            "{:>7} {:>12} {:>8}  public_digest",
            "channel", "applied", "unknown"
        );
        for c in v["channels"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "{:>7} {:>12} {:>8}  {}",
                num(&c["channel"]),
                num(&c["applied"]),
                num(&c["unknown"]),
                num(&c["public_digest"])
            );
        }
    } else {
        let _ = writeln!(
            out,
            "node {} (control unit)  role {}  epoch {epoch} (counter {}, owner index {})  sync_mask {:#b}",
            num(&v["id"]),
            num(&v["role"]),
            epoch >> 8,
            epoch & 0xff,
            v["sync_mask"].as_u64().unwrap_or(0)
        );
        let f = &v["failover"];
        if f["started_unix_us"].is_null() {
            let _ = writeln!(out, "failover: none");
        } else {
            let took = match (
                f["started_unix_us"].as_u64(),
                f["finished_unix_us"].as_u64(),
            ) {
                (Some(s), Some(e)) => format!(" ({:.1} ms)", e.saturating_sub(s) as f64 / 1e3),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "failover: started {}, finished {}{took}; last heard from the old primary {}",
                unix_field(&f["started_unix_us"]),
                unix_field(&f["finished_unix_us"]),
                unix_field(&f["last_primary_rx_unix_us"])
            );
        }
        let _ = writeln!(
            out,
            "{:>7} {:>10} {:>10} {:>10} {:>10} {:>10}  {:<16}  full_digest",
            "channel", "next_op", "commit", "acked", "applied", "held", "public_digest"
        );
        for c in v["channels"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "{:>7} {:>10} {:>10} {:>10} {:>10} {:>10}  {:<16}  {}",
                num(&c["channel"]),
                num(&c["next_op"]),
                num(&c["commit"]),
                num(&c["client_acked"]),
                num(&c["applied"]),
                num(&c["held"]),
                num(&c["public_digest"]),
                num(&c["full_digest"])
            );
        }
        let _ = writeln!(
            out,
            "submits: {} accepted, {} rejected",
            num(&v["submits"]["accepted"]),
            num(&v["submits"]["rejected"])
        );
    }
    if let Some(n) = v["channels_truncated"].as_u64() {
        let _ = writeln!(out, "({n} more channels not shown: reply cut to fit)");
    }
    let c = &v["counters"];
    let _ = writeln!(
        out,
        "frames rx {} tx {}; rejected: malformed {}, stale epoch {}, unknown sender {}, unexpected {}; retransmits {}, replays {}",
        num(&c["frames_rx"]),
        num(&c["frames_tx"]),
        num(&c["rejected_malformed"]),
        num(&c["rejected_stale_epoch"]),
        num(&c["rejected_unknown_sender"]),
        num(&c["rejected_unexpected"]),
        num(&c["retransmits"]),
        num(&c["replays_started"])
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_both_kinds() {
        let cu = json!({"ok":true,"id":1,"kind":"control_unit","role":"primary","epoch":512,
            "failover":{"started_unix_us":1_000_000,"finished_unix_us":1_002_500,"last_primary_rx_unix_us":990_000},
            "sync_mask":2,"channels":[{"channel":0,"next_op":18,"commit":17,"client_acked":17,"applied":17,"held":17,
            "public_digest":"0123456789abcdef","full_digest":"fedcba9876543210"}],
            "counters":{"frames_rx":5},"submits":{"accepted":3,"rejected":1}});
        let s = format_status(&cu);
        assert!(s.contains("role primary"), "{s}");
        assert!(s.contains("0123456789abcdef"), "{s}");
        assert!(s.contains("(2.5 ms)"), "{s}");
        let cl = json!({"ok":true,"id":100,"kind":"client","epoch":256,"primary":1,
            "channels":[{"channel":3,"applied":9,"unknown":false,"public_digest":"00000000000000aa"}]});
        let s = format_status(&cl);
        assert!(
            s.contains("(client)") && s.contains("00000000000000aa"),
            "{s}"
        );
        let s = format_status(&json!({"ok":false,"error":"x"}));
        assert!(s.contains("error: x"));
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct KeygenArgs {
    /// Deployment config (TOML): every link of it gets a fresh random key.
    #[arg(long)]
    pub config: PathBuf,
    /// Where to write the key files (one per node, `node-<id>.key`, mode 0600; created if
    /// missing). Default: the config's `[security] key_dir`.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// `statesync keygen`: one key file per node (control units, clients and submitters), each
/// holding only that node's links.
pub fn run_keygen(a: KeygenArgs) -> ExitCode {
    match keygen(&a) {
        Ok(msg) => {
            println!("{msg}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("statesync keygen: {e}");
            ExitCode::from(2)
        }
    }
}

fn keygen(a: &KeygenArgs) -> Result<String, String> {
    let cfg = load(&a.config).map_err(|e| e.to_string())?;
    let dir = a.dir.clone().or(cfg.key_dir.clone()).ok_or_else(|| {
        format!(
            "--dir: not given, and {} has no [security] key_dir",
            a.config.display()
        )
    })?;
    write_keys(&cfg, &dir)
}

/// Writes fresh key files for every node of `cfg` into `dir`; returns a summary line.
pub fn write_keys(
    cfg: &super::config::DeploymentConfig,
    dir: &std::path::Path,
) -> Result<String, String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("{}: cannot create: {e}", dir.display()))?;
    let links = cfg.links();
    let all = crate::auth::LinkKeys::generate(&links).map_err(|e| e.to_string())?;
    for k in &all {
        k.write(&crate::auth::LinkKeys::path_in(dir, k.node()))
            .map_err(|e| e.to_string())?;
    }
    Ok(format!(
        "wrote {} key files ({} links) into {}; give each node only its own file",
        all.len(),
        links.len(),
        dir.display()
    ))
}
