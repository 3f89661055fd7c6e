//! The `statesync` command.

use clap::{CommandFactory, Parser, Subcommand};
use std::process::ExitCode;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "statesync",
    version,
    about = "State-synchronization fabric with selective replay"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the whole fabric in one process over loopback UDP under load, and report.
    Churn(statesync::cli::churn::ChurnArgs),
    /// Measure how often and how long this machine takes its cores away from a spinning thread
    /// (interrupts, other tasks, the hypervisor): the floor under any latency tail here.
    Hiccups(statesync::cli::hiccups::HiccupsArgs),
    /// Run the deterministic fault simulator over many seeds.
    Sim(statesync::cli::sim::SimArgs),
    /// Run one node, first start or restart alike: the one command line for a supervisor
    ///
    /// The node works out what it is from the config (control_units[0] is the initial
    /// primary, the other control units initial standbys, [[clients]] line cards) and whether
    /// it ran before from its [state] dir (`<dir>/<id>.started`, written atomically when its
    /// first life starts; or an `<id>.epoch` file). It then starts exactly as the older
    /// subcommands would:
    ///
    ///   control_units[0], first start    `primary`
    ///   other control unit, first start  `standby`
    ///   control unit, restart            `standby --rejoin` (state transfer; highest epoch restored)
    ///   client, first start              `client`
    ///   client, restart                  `client --fresh` (full replay from the primary)
    ///
    /// A control unit needs [state] dir (exit 2 without). A client without one takes every
    /// start as a restart. If every control unit lost its state at once, none can re-join the
    /// others: clear the state dirs to start a new deployment (docs/DAEMON.md).
    #[command(verbatim_doc_comment)]
    Node(statesync::daemon::cli::NodeCmdArgs),
    /// Run the initial primary control unit of a deployment (must be control_units[0]); `node`
    /// picks this by itself.
    Primary(statesync::daemon::cli::PrimaryArgs),
    /// Run a standby control unit (--rejoin after a restart: joins by state transfer); `node`
    /// picks this by itself.
    Standby(statesync::daemon::cli::StandbyArgs),
    /// Run a client (--fresh after a restart: asks for a full replay); `node` picks this by
    /// itself.
    Client(statesync::daemon::cli::ClientArgs),
    /// Ask a node's admin socket for its status: role, epoch, per-channel positions, lags,
    /// digests; or (--cluster --config) every node of a deployment, as one table.
    Status(statesync::daemon::cli::StatusArgs),
    /// Planned switchover: tell that standby to take over now.
    Switchover(statesync::daemon::cli::SwitchoverArgs),
    /// Failover dry run (--dry-run): ask a standby what a takeover now would do, per channel:
    /// its resolution, the cut, and which sections it would replay to which client, with the
    /// bytes. Nothing is changed.
    Failover(statesync::daemon::cli::FailoverArgs),
    /// Failover drill: real daemons, kill -9 under load, measured detection and recovery.
    Drill(statesync::cli::drill::DrillArgs),
    /// Send one raw admin request (JSON) and print the reply.
    Admin(AdminArgs),
    /// Write a fresh key file for every node of a deployment (one key per link).
    Keygen(statesync::daemon::cli::KeygenArgs),
    /// Check everything a node needs at start (config, key files, addresses, directories,
    /// hooks) without starting it; exit 0 when all is well, 2 naming each problem.
    Check(statesync::daemon::check::CheckArgs),
    /// Send hostile canaries (spoofed, untagged, wrong-key, stale, random) to every node of a
    /// running deployment and check that each is refused (needs root).
    Probe(statesync::cli::hostile::ProbeArgs),
    /// Draw a churn run's latency (its --hdr-log directory or --json report) as an SVG:
    /// percentile curves of every stage, the commit rate and the p99 of each second.
    Plot(statesync::cli::plot::PlotArgs),
    /// Print a shell completion script: `statesync completions bash > /etc/bash_completion.d/statesync`.
    Completions(CompletionsArgs),
    /// Print the man page (roff): `statesync man > /usr/local/share/man/man1/statesync.1`.
    Man,
}

#[derive(clap::Args)]
struct CompletionsArgs {
    /// The shell to complete for.
    shell: clap_complete::Shell,
}

#[derive(clap::Args)]
struct AdminArgs {
    /// The node's Unix socket path (`<admin.socket_dir>/<id>.sock`) or IP:PORT of its UDP
    /// admin listener.
    addr: String,
    /// The request, e.g. '{"cmd":"op_status","channel":0,"epoch":256,"op":17}'.
    request: String,
    /// Over UDP: a file holding the admin token (`admin.token_file`): the request goes MAC'd
    /// with it (the token itself is never sent).
    #[arg(long, value_name = "FILE")]
    token_file: Option<std::path::PathBuf>,
    /// How long to wait for the reply, in milliseconds.
    #[arg(long, default_value_t = 500)]
    timeout_ms: u64,
}

fn admin(a: AdminArgs) -> ExitCode {
    let req: serde_json::Value = match serde_json::from_str(&a.request) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("statesync admin: request is not JSON: {e}");
            return ExitCode::from(2);
        }
    };
    match statesync::daemon::cli::ask(&a.addr, req, a.token_file.as_deref(), a.timeout_ms) {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("statesync admin: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Churn(a) => statesync::cli::churn::run(a),
        Cmd::Sim(a) => statesync::cli::sim::run(a),
        Cmd::Hiccups(a) => statesync::cli::hiccups::run(a),
        Cmd::Node(a) => statesync::daemon::cli::run_node_cmd(a),
        Cmd::Primary(a) => statesync::daemon::cli::run_primary(a),
        Cmd::Standby(a) => statesync::daemon::cli::run_standby(a),
        Cmd::Client(a) => statesync::daemon::cli::run_client(a),
        Cmd::Status(a) => statesync::daemon::cli::run_status(a),
        Cmd::Switchover(a) => statesync::daemon::cli::run_switchover(a),
        Cmd::Failover(a) => statesync::daemon::cli::run_failover(a),
        Cmd::Drill(a) => statesync::cli::drill::run(a),
        Cmd::Admin(a) => admin(a),
        Cmd::Keygen(a) => statesync::daemon::cli::run_keygen(a),
        Cmd::Probe(a) => statesync::cli::hostile::run_probe(a),
        Cmd::Check(a) => statesync::daemon::check::run_check(a),
        Cmd::Plot(a) => statesync::cli::plot::run(a),
        Cmd::Completions(a) => {
            clap_complete::generate(
                a.shell,
                &mut Cli::command(),
                "statesync",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Cmd::Man => match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("statesync man: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Issue 12: help text on every flag (and positional) of every command.
    #[test]
    fn every_argument_of_every_command_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for s in cmd.get_subcommands() {
                walk(s, &format!("{path} {}", s.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "statesync", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:#?}");
    }
}
