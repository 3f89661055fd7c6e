//! The `statesync` command.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

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
    /// Run the deterministic fault simulator over many seeds.
    Sim(statesync::cli::sim::SimArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Churn(a) => statesync::cli::churn::run(a),
        Cmd::Sim(a) => statesync::cli::sim::run(a),
    }
}
