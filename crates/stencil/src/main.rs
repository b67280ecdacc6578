//! The `stencil` command line. Subcommands land with their issues; until then each says so plainly
//! instead of pretending to work.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Ship logs cheaply and safely over the stateful-encoding gRPC logs protocol.
#[derive(Parser)]
#[command(name = "stencil", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tail files (or stdin) and ship them to an intake (not yet implemented).
    Ship {
        /// Files, globs, or `-` for stdin.
        paths: Vec<String>,
    },
    /// Run an intake server (not yet implemented).
    Intake,
    /// Run a benchmark (not yet implemented).
    Bench,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let name = match cli.command {
        Command::Ship { .. } => "ship",
        Command::Intake => "intake",
        Command::Bench => "bench",
    };
    eprintln!(
        "stencil {name}: not yet. The protocol codec (stencil-codec) is built; the agent, intake and CLI land \
         with their issues."
    );
    ExitCode::from(2)
}
