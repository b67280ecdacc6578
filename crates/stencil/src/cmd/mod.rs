//! Subcommand implementations and what they share (diagnostic logging, runtime setup).

use anyhow::Context as _;
pub mod intake;
pub mod ship;

use tracing_subscriber::EnvFilter;

/// Diagnostics go to stderr, so that `--stdout` sinks keep stdout for data; `json` gives one JSON object
/// per event for log collectors.
pub fn init_tracing(level: &str, format: &str) {
    JSON_LOGS.store(format == "json", std::sync::atomic::Ordering::Relaxed);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    use std::io::IsTerminal;
    // Colours only for a person at a terminal: not in files, journald or a collector's pipe.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// `--log-format json`: every line on stderr is a JSON object, [`say`]'s lines included.
static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A line for the person running the command, on stderr: plain text, or with `--log-format json` an
/// event like every other, so that stderr stays JSON only.
pub fn say(text: &str) {
    if JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
        tracing::info!(target: "stencil", "{text}");
    } else {
        eprintln!("{text}");
    }
}

/// An error that ends the command, on stderr (see [`say`]).
pub fn fail(text: &str) {
    if JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
        tracing::error!(target: "stencil", "{text}");
    } else {
        eprintln!("{text}");
    }
}

/// A file-size limit (`ulimit -f`) must not kill a log pipeline. With SIGXFSZ ignored, a write past the
/// limit fails with `EFBIG` instead, which the sinks and the checkpoints handle as any write error: the
/// batch is not acked, and nothing is lost.
pub fn ignore_file_size_signal() {
    // SAFETY: `signal` with `SIG_IGN` only changes the disposition of one signal; it runs in `main`
    // before any thread exists, and touches no memory of ours.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// For the commands that only print a report (`bench`, `completions`): a closed stdout (`stencil bench
/// wire --json … | head`) ends the process quietly, as it does for other Unix tools, instead of a
/// panic in `println!`. The daemons keep SIGPIPE ignored: a peer that closes its socket must be a
/// write error, never the end of the process.
pub fn quit_on_closed_stdout() {
    // SAFETY: as in `ignore_file_size_signal`: one signal's disposition, set in `main` before any
    // thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Raises the soft limit on open files to the hard limit, as servers do: each connection, stream and
/// followed file costs a descriptor, and the common soft default of 1,024 is far below what the
/// connection limits allow. Failure is harmless: the old limit stays.
pub fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write only the struct passed by pointer, which lives on
    // this stack frame.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// A multi-threaded tokio runtime, or a clear error. `workers` sets its worker threads (default: one
/// per CPU).
pub fn runtime(workers: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        builder.worker_threads(n.max(1));
    }
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// SIGINT and SIGTERM, listened for from the moment this is made.
///
/// A handler that is installed lazily (inside a spawned task, on its first poll) leaves a window after
/// start-up in which a SIGTERM takes its default action and kills the process: under load, a SIGTERM
/// sent right after the intake printed its address ended streams with a broken connection instead of
/// `OK`. Make this before saying that the process is ready.
pub struct ShutdownSignal {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    /// Installs the handlers now. Needs a running tokio runtime.
    pub fn new() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(ShutdownSignal {
                term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
                int: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(ShutdownSignal {})
        }
    }

    /// Resolves at the next SIGINT or SIGTERM (one that came before this call counts).
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => {}
                _ = self.int.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Writes a man page for `command` and one for each subcommand (`stencil-ship.1`, …) into `dir`.
pub fn write_man_pages(command: clap::Command, dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    let command = command.version(env!("CARGO_PKG_VERSION"));
    let mut pages = vec![(command.get_name().to_owned(), command.clone())];
    for sub in command.get_subcommands() {
        pages.push((
            format!("{}-{}", command.get_name(), sub.get_name()),
            sub.clone(),
        ));
    }
    for (name, cmd) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd.name(name.clone()))
            .render(&mut out)
            .with_context(|| name.clone())?;
        std::fs::write(&path, out).with_context(|| path.display().to_string())?;
    }
    Ok(())
}
