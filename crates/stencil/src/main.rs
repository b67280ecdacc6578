//! The `stencil` command line: `ship` sends logs, `intake` receives them, `bench` measures.

mod cmd;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// jemalloc, not the system allocator: the engine allocates a few small values per log and frees them a
/// batch later, a pattern glibc's allocator serves slowly (BENCHMARKS.md section 2, session 18).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Ship logs cheaply and safely over the stateful-encoding gRPC logs protocol.
#[derive(Parser)]
#[command(name = "stencil", version, about, after_help = EXAMPLES)]
struct Cli {
    /// Log level for stencil's own diagnostics (error, warn, info, debug, trace). RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info", env = "STENCIL_LOG_LEVEL")]
    log_level: String,
    /// TOML file with `[ship]` / `[intake]` tables of flag values (flags and STENCIL_* env vars win).
    #[arg(long, global = true, value_name = "FILE", env = "STENCIL_CONFIG")]
    config: Option<std::path::PathBuf>,
    /// Format of stencil's own diagnostics on stderr: text or json.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"], env = "STENCIL_LOG_FORMAT")]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "Examples:
  stencil intake --listen 127.0.0.1:10600 --out ./rebuilt --api-key secret
  stencil intake --listen 0.0.0.0:10600 --jsonl logs.jsonl --tls-cert cert.pem --tls-key key.pem
  stencil bench patterns --loghub ../shared/corpus/loghub-2k
  stencil ship --once /var/log/syslog   (rebuilds it under ./stencil-out/var/log/syslog)
  stencil ship --once --endpoint https://intake:10600 --api-key KEY 'logs/*.log'";

const SHIP_EXAMPLES: &str = "Examples:
  stencil ship --once examples/sample.log            rebuild it under ./stencil-out and print a summary
  stencil ship --once --summary-json s.json 'logs/*.log'
  stencil ship --data-dir /var/lib/stencil /var/log/syslog          follow until Ctrl-C, resume after restarts
  stencil ship --endpoint https://intake:10600 --api-key KEY --ca-file ca.pem '/var/log/*.log'
  cat app.log | stencil ship --once -
  journalctl -f | stencil ship --endpoint https://intake:10600 --api-key KEY -
  stencil --config examples/stencil.toml ship";

const INTAKE_EXAMPLES: &str = "Examples:
  stencil intake --listen 127.0.0.1:10600 --out ./rebuilt --api-key secret
  stencil intake --listen 0.0.0.0:10600 --jsonl logs.jsonl --tls-cert cert.pem --tls-key key.pem
  stencil intake --stdout --metrics-listen 127.0.0.1:9100";

#[derive(Subcommand)]
enum Command {
    /// Ship files (or stdin) to an intake; without --endpoint, to an embedded one that rebuilds them.
    #[command(after_help = SHIP_EXAMPLES)]
    Ship(Box<cmd::ship::ShipArgs>),
    /// Run an intake: receive both protocol generations and write the rebuilt logs to a sink.
    #[command(after_help = INTAKE_EXAMPLES)]
    Intake(Box<cmd::intake::IntakeArgs>),
    /// Run a benchmark.
    #[command(
        after_help = "Examples:\n  stencil bench patterns --loghub ../shared/corpus/loghub-2k\n  stencil bench patterns --json --loghub ../shared/corpus/loghub-2k"
    )]
    #[command(subcommand)]
    Bench(stencil_bench::BenchCommand),
    /// Print a shell completion script (`stencil completions bash > /etc/bash_completion.d/stencil`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (stencil.1, stencil-ship.1, …) generated from the command line's definition.
    Man {
        /// Folder to write them into.
        #[arg(long, value_name = "DIR", default_value = ".")]
        dir: std::path::PathBuf,
    },
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    cmd::init_tracing(&cli.log_level, &cli.log_format);
    if let Err(e) = apply_config(&mut cli, &matches) {
        cmd::fail(&format!("stencil: {e:#}"));
        return ExitCode::FAILURE;
    }
    cmd::ignore_file_size_signal();
    cmd::raise_fd_limit();
    if matches!(cli.command, Command::Bench(_) | Command::Completions { .. }) {
        cmd::quit_on_closed_stdout();
    }
    match cli.command {
        Command::Intake(args) => cmd::intake::run(*args),
        Command::Bench(b) => stencil_bench::run(b),
        Command::Ship(args) => cmd::ship::run(*args),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "stencil",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Command::Man { dir } => match cmd::write_man_pages(Cli::command(), &dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                cmd::fail(&format!("stencil man: {e:#}"));
                ExitCode::FAILURE
            }
        },
    }
}

/// `--config FILE`: the subcommand's table fills what flags and environment left unset.
fn apply_config(cli: &mut Cli, matches: &clap::ArgMatches) -> anyhow::Result<()> {
    let Some(path) = cli.config.clone() else {
        return Ok(());
    };
    let file = stencil_config::ConfigFile::load(&path, &["ship", "intake"])?;
    match (&mut cli.command, matches.subcommand()) {
        (Command::Ship(args), Some((_, m))) => cmd::ship::apply_config(args, m, &file),
        (Command::Intake(args), Some((_, m))) => cmd::intake::apply_config(args, m, &file),
        _ => Ok(()),
    }
}
