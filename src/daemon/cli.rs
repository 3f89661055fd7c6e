//! `statesync node|primary|standby|client|status|switchover`.

use super::admin::{Target, read_token_file, request};
use super::config::load;
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
    #[arg(required_unless_present = "cluster", conflicts_with = "cluster")]
    pub addr: Option<String>,
    /// One table of every node of the deployment (`--config`): id, kind, role, epoch, in sync
    /// or behind, worst lag in ops and ms, reachable or not.
    #[arg(long, requires = "config")]
    pub cluster: bool,
    /// The deployment config, for `--cluster`: each node is asked on its Unix socket (on its
    /// UDP admin listener instead when it has one and `--token-file` is given).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Refresh every SECS seconds (default 2), clearing the screen, until Ctrl-C.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
    pub watch: Option<f64>,
    /// Over UDP: a file holding the admin token (`admin.token_file`). Without it a UDP status
    /// gets no reply: a reply larger than its request only goes to an authenticated sender.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Print the status as JSON (`admin::status::StatusReply`; with `--cluster`,
    /// `admin::view::ClusterStatus`).
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

/// Sends one request to `addr` (a Unix socket path or a UDP IP:PORT), MAC'd with the token of
/// `token_file` when it goes over UDP (the Unix socket needs none).
pub fn ask(
    addr: &str,
    req: Value,
    token_file: Option<&std::path::Path>,
    timeout_ms: u64,
) -> Result<Value, String> {
    let target = Target::parse(addr)?;
    let token = match (&target, token_file) {
        (Target::Udp(_), Some(f)) => Some(read_token_file(f, "--token-file")?),
        _ => None,
    };
    request(
        &target,
        &req,
        token.as_ref(),
        Duration::from_millis(timeout_ms),
    )
    .map_err(|e| e.to_string())
}

pub fn run_status(a: StatusArgs) -> ExitCode {
    super::admin::view::run(&super::admin::view::StatusCommand {
        addr: a.addr.as_deref(),
        cluster: a.cluster.then_some(a.config.as_deref()).flatten(),
        watch: a.watch,
        token_file: a.token_file.as_deref(),
        json: a.json,
        timeout: Duration::from_millis(a.timeout_ms),
    })
}

#[derive(clap::Args, Debug, Clone)]
pub struct FailoverArgs {
    /// Only report what a takeover now would do; change nothing. Required: to act, use
    /// `switchover` (planned) or let the fabric fail over.
    #[arg(long, required = true)]
    pub dry_run: bool,
    /// Deployment config (TOML): where to find each control unit's admin socket.
    #[arg(long)]
    pub config: PathBuf,
    /// Ask this control unit (default: the control units in priority order, until one is an
    /// eligible standby).
    #[arg(long)]
    pub id: Option<NodeId>,
    /// Over UDP admin listeners: a file holding the admin token (`admin.token_file`).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Print the reply as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// How long to wait for each reply, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
}

pub fn run_failover(a: FailoverArgs) -> ExitCode {
    super::admin::dry_run::run(
        &a.config,
        a.id,
        a.token_file.as_deref(),
        a.json,
        Duration::from_millis(a.timeout_ms),
    )
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
