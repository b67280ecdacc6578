//! `stencil ship`: send files (or stdin) through the pattern engine and the stream worker to an intake.
//! Without `--endpoint` it starts an embedded intake that rebuilds every file under `--out`, so the round
//! trip can be checked with `cmp`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Args;
use stencil_agent::ship::{Input, ShipOptions, Summary};
use stencil_agent::{BatchConfig, Mailbox};
use stencil_codec::Compression;
use stencil_intake::{FilesSink, IntakeConfig};

/// Flags of `stencil ship`.
#[derive(Args, Debug)]
pub struct ShipArgs {
    /// Files, globs, or `-` for stdin.
    #[arg(required_unless_present = "tcp", value_name = "PATH|GLOB|-")]
    paths: Vec<String>,
    /// Also accept newline-delimited logs on this TCP address (follow mode; repeatable). Lines are
    /// tagged `peer:IP:PORT`.
    #[arg(long, value_name = "ADDR")]
    tcp: Vec<SocketAddr>,
    /// Most TCP connections open at once; more are closed at once, with a warning.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    tcp_max_connections: u64,
    /// Remote intake, e.g. `https://intake.example.com:443`; repeat (or separate with commas) for
    /// several: streams spread over the healthy ones and move to another when theirs fails. Without
    /// it, an embedded intake writes the rebuilt files under --out. (Config file: `endpoints = [...]`.)
    #[arg(
        long = "endpoint",
        value_name = "URL",
        env = "STENCIL_ENDPOINT",
        value_delimiter = ','
    )]
    endpoints: Vec<String>,
    /// API key for --endpoint (`dd-api-key`).
    #[arg(long, env = "STENCIL_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// CA bundle (PEM) that signs the endpoint's certificate.
    #[arg(long, value_name = "PEM", env = "STENCIL_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Where the embedded intake writes rebuilt files (`/var/log/x` → `DIR/var/log/x`).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "./stencil-out",
        env = "STENCIL_OUT"
    )]
    out: PathBuf,
    /// Read every input to its end, wait until everything is acked, print a summary and exit. Without
    /// it, files are followed as they grow (rotation and truncation included) until SIGINT/SIGTERM.
    #[arg(long)]
    once: bool,
    /// In follow mode too, compare with a plain zstd-1 stream of the same lines in the summary (costs
    /// CPU).
    #[arg(long)]
    compare: bool,
    /// The wire: `auto` asks the intake for Stencil's extensions (stream-scoped zstd and the native
    /// columnar layout) and uses them on each stream whose intake echoes them, plain v3 elsewhere; `v3`
    /// never asks: the Datadog-compatible wire with the pattern engine's v3 settings.
    #[arg(long, value_enum, default_value_t = Wire::Auto, env = "STENCIL_WIRE")]
    wire: Wire,
    /// With `--wire auto`: the zstd level of each stream's compression context (1 = fastest, 19 =
    /// smallest). The default, 6, sends 6–11 % fewer bytes than level 1 for little of the agent's
    /// CPU.
    #[arg(
        long,
        value_name = "LEVEL",
        default_value_t = stencil_codec::extensions::STREAM_LEVEL,
        value_parser = clap::value_parser!(i32).range(1..=19)
    )]
    stream_level: i32,
    /// With --once, skip the zstd-1 stream comparison in the summary (saves its CPU, e.g. when
    /// benchmarking the agent).
    #[arg(long, conflicts_with = "compare")]
    no_compare: bool,
    /// Also write the summary as JSON to PATH.
    #[arg(long, value_name = "PATH")]
    summary_json: Option<PathBuf>,
    /// Service of every log.
    #[arg(long, env = "STENCIL_SERVICE")]
    service: Option<String>,
    /// Source (`ddsource:` tag) of every log.
    #[arg(long, env = "STENCIL_SOURCE")]
    source: Option<String>,
    /// Extra tags, `k:v,k2:v2`.
    #[arg(long, value_delimiter = ',', env = "STENCIL_TAGS")]
    tags: Vec<String>,
    /// Hostname tag (default: this machine's name).
    #[arg(long, env = "STENCIL_HOSTNAME")]
    hostname: Option<String>,
    /// Payload compression.
    #[arg(long, default_value = "zstd", value_parser = ["zstd", "gzip", "none"])]
    compression: String,
    /// Schema generation (the agent speaks v3).
    #[arg(long, default_value = "v3", value_parser = ["v3", "v2"])]
    schema: String,
    /// Logs per batch.
    #[arg(long, default_value_t = 1000)]
    batch_lines: usize,
    /// Pipelines, each with its own engine and stream over one shared connection; every source belongs
    /// to exactly one (default: min(4, CPUs)).
    #[arg(long, value_name = "N", env = "STENCIL_STREAMS")]
    streams: Option<usize>,
    /// Memory budget of each pipeline's pattern state (patterns, dictionary, JSON schemas), in MiB. At
    /// the budget the least recently used entries are evicted; nothing is lost, compression degrades.
    #[arg(
        long,
        value_name = "MIB",
        default_value_t = 16,
        env = "STENCIL_STATE_BUDGET_MIB"
    )]
    state_budget_mib: usize,
    /// Serve Prometheus /metrics and /health (the stream's state) on this address.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Raw bytes per batch (a batch is sent before going over it). Longer lines are split to fit.
    #[arg(long, default_value_t = 5_000_000, value_parser = clap::value_parser!(u64).range(256..=1 << 30))]
    batch_bytes: u64,
    /// Follow mode: send a batch at the latest this many milliseconds after its first line.
    #[arg(long, default_value_t = 5000)]
    batch_wait_ms: u64,
    /// Keep checkpoints here: a rerun resumes each file after its last acked line (also after a crash).
    #[arg(long, value_name = "DIR", env = "STENCIL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Follow mode: how long a file rotated away (renamed or deleted) is read on after it last grew,
    /// for writers that keep writing to it until they reopen their log, in seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    rotate_wait_secs: u64,
    /// On SIGTERM or SIGINT, how long to wait for the last acks before giving up (the acked checkpoints
    /// are saved, the unacked lines are reported and read again next time, and the exit status is 1).
    /// A second signal exits at once.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    shutdown_timeout_secs: u64,
    /// With --once: give up when nothing has been acked for this long while the intake is unreachable
    /// or refusing batches (a refused API key gives up at once), instead of retrying forever.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    stall_timeout_secs: u64,
    /// How often acked checkpoints are written to --data-dir, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    checkpoint_interval_ms: u64,
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

fn inputs(paths: &[String]) -> Result<Vec<Input>, String> {
    let mut out = Vec::new();
    for p in paths {
        if p == "-" {
            out.push(Input::Stdin);
        } else if stencil_agent::glob::is_pattern(p) {
            let matches = stencil_agent::glob::expand(p)?;
            if matches.is_empty() {
                return Err(format!("{p:?} matches no file"));
            }
            out.extend(matches.into_iter().map(Input::File));
        } else {
            let path = PathBuf::from(p);
            if !path.exists() {
                return Err(format!("{p}: no such file (pass `-` for stdin)"));
            }
            // An unreadable or odd file is reported and skipped when it is read, with the others
            // shipped.
            out.push(Input::File(path));
        }
    }
    Ok(out)
}

/// A progress line on the terminal (none when stdout is not a TTY): logs acked so far, and the rate.
fn progress(mailbox: &Mailbox) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {pos} lines acked ({per_sec}) {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let (b, m) = (bar.clone(), mailbox.clone());
    std::thread::spawn(move || {
        while !b.is_finished() {
            b.set_position(m.acked());
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    });
    Some(bar)
}

/// `--wire`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Wire {
    /// Negotiate the Stencil extensions; plain v3 with intakes that do not echo them.
    Auto,
    /// Plain v3 only (what a Datadog intake speaks).
    V3,
}

fn print_summary(s: &Summary, embedded_out: Option<&PathBuf>) {
    let j = s.to_json();
    let comparison = if s.zstd1_bytes > 0 {
        format!(
            ", zstd-1/wire {:.2}:1 with a zstd-1 stream = {} bytes",
            j["ratio_to_stream_zstd1"].as_f64().unwrap_or(0.0),
            s.zstd1_bytes
        )
    } else {
        String::new()
    };
    eprintln!(
        "shipped {} lines, {} raw bytes as {} wire bytes on {} (raw/wire {:.2}:1{comparison}) in {:.2}s ({:.0} lines/s); {} patterns, {} payloads replayed, {} lines split, {} dropped, {} files skipped",
        s.lines,
        s.raw_bytes,
        s.wire_bytes,
        if s.wire.is_empty() { "v3" } else { &s.wire },
        j["ratio_to_raw"].as_f64().unwrap_or(0.0),
        s.seconds,
        j["lines_per_sec"].as_f64().unwrap_or(0.0),
        s.patterns,
        s.replayed,
        s.split_lines,
        s.dropped,
        s.skipped_files,
    );
    if let Some(out) = embedded_out {
        eprintln!(
            "rebuilt files are under {} (compare with `cmp`)",
            out.display()
        );
    }
}

/// Runs `stencil ship`.
pub fn run(args: ShipArgs) -> ExitCode {
    match run_inner(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stencil ship: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_inner(args: ShipArgs) -> Result<(), String> {
    if args.schema == "v2" {
        return Err(
            "--schema v2: the Stencil agent speaks v3 only (the intake accepts both)".into(),
        );
    }
    let inputs = if args.once {
        inputs(&args.paths)?
    } else {
        Vec::new()
    };
    let options = ShipOptions {
        service: args.service.clone(),
        source: args.source.clone(),
        hostname: args.hostname.clone().or_else(hostname),
        tags: args.tags.clone(),
        compression: match args.compression.as_str() {
            "gzip" => Compression::GZIP,
            "none" => Compression::Identity,
            _ => Compression::ZSTD,
        },
        batch: BatchConfig {
            max_logs: args.batch_lines.max(1),
            max_wait: std::time::Duration::from_millis(args.batch_wait_ms.max(1)),
            max_raw_bytes: usize::try_from(args.batch_bytes).unwrap_or(usize::MAX),
            ..BatchConfig::default()
        },
        data_dir: args.data_dir.clone(),
        rotate_wait: std::time::Duration::from_secs(args.rotate_wait_secs),
        checkpoint_interval: std::time::Duration::from_millis(args.checkpoint_interval_ms.max(1)),
        ..ShipOptions::default()
    };
    if args.once && !args.tcp.is_empty() {
        return Err("--tcp is a follow-mode input: drop --once".into());
    }
    let mut tcp = Vec::new();
    for addr in &args.tcp {
        let listener =
            std::net::TcpListener::bind(addr).map_err(|e| format!("--tcp {addr}: {e}"))?;
        tcp.push(Arc::new(listener));
    }
    let health = Arc::new(std::sync::Mutex::new(Vec::<stencil_agent::State>::new()));
    let abort = tokio_util::sync::CancellationToken::new();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let options = ShipOptions {
        health: Some(health.clone()),
        tcp,
        tcp_max_connections: usize::try_from(args.tcp_max_connections).unwrap_or(256),
        pipelines: args.streams.unwrap_or(cpus.min(4)).max(1),
        compare: args.compare || (args.once && !args.no_compare),
        abort: Some(abort.clone()),
        stall_timeout: args
            .once
            .then(|| std::time::Duration::from_secs(args.stall_timeout_secs)),
        core: stencil_agent::CoreConfig {
            stream_level: args.stream_level,
            ..stencil_agent::CoreConfig::default()
        },
        extensions: match args.wire {
            Wire::Auto => stencil_codec::Extensions::ALL,
            Wire::V3 => stencil_codec::Extensions::default(),
        },
        engine: {
            let engine = stencil_patterns::EngineConfig::with_state_budget(
                args.state_budget_mib.saturating_mul(1 << 20),
            );
            match args.wire {
                // The native layout's columns do the value dictionary's job, and a define costs less
                // than a raw first line in a compressed stream.
                Wire::Auto => stencil_patterns::EngineConfig {
                    define_after: 1,
                    admit_after: u8::MAX,
                    merge_slots: false,
                    ..engine
                },
                Wire::V3 => engine,
            }
        },
        ..options
    };
    // The endpoints exist once the runtime runs; /ready shows them from then on.
    let endpoint_cell: Arc<std::sync::OnceLock<stencil_agent::Endpoints>> = Arc::default();
    let rt = super::runtime()?;
    rt.block_on(async move {
        if let Some(addr) = args.metrics_listen {
            let shown_endpoints = endpoint_cell.clone();
            let states = {
                let health = health.clone();
                move || health.lock().map(|s| s.clone()).unwrap_or_default()
            };
            let names = |states: &[stencil_agent::State]| {
                states
                    .iter()
                    .map(|s| format!("\"{}\"", s.name()))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            // Liveness: the process works (no pipeline is backing off or paused).
            let live = states.clone();
            let report = Arc::new(move || {
                let states = live();
                let degraded = states.iter().find(|s| {
                    matches!(
                        s,
                        stencil_agent::State::Backoff | stencil_agent::State::Paused(_)
                    )
                });
                let shown = degraded
                    .or(states.first())
                    .copied()
                    .unwrap_or(stencil_agent::State::Idle);
                (
                    if degraded.is_some() { 503 } else { 200 },
                    format!(
                        "{{\"status\":\"{}\",\"stream\":\"{}\",\"streams\":[{}]}}",
                        if degraded.is_some() { "degraded" } else { "ok" },
                        shown.name(),
                        names(&states)
                    ),
                )
            });
            // Readiness: every pipeline's stream is connected.
            let routes: stencil_telemetry::RoutesFn = Arc::new(move |path: &str| {
                (path == "/ready").then(|| {
                    let states = states();
                    let ready = !states.is_empty()
                        && states.iter().all(|s| {
                            matches!(s, stencil_agent::State::Active | stencil_agent::State::Draining)
                        });
                    let endpoints = shown_endpoints
                        .get()
                        .map(|e| e.status())
                        .unwrap_or_default()
                        .iter()
                        .map(|e| {
                            serde_json::json!({
                                "url": e.url,
                                "up": e.up,
                                "streams": e.streams,
                                "failures": e.failures,
                            })
                            .to_string()
                        })
                        .collect::<Vec<_>>()
                        .join(",");
                    (
                        if ready { 200 } else { 503 },
                        format!(
                            "{{\"ready\":{ready},\"streams\":[{}],\"endpoints\":[{endpoints}]}}",
                            names(&states)
                        ),
                    )
                })
            });
            let (bound, _task) = stencil_telemetry::bind_and_serve_with_routes(addr, report, routes)
                .await
                .map_err(|e| format!("--metrics-listen {addr}: {e}"))?;
            stencil_telemetry::build_info("ship");
            tracing::info!(%bound, "metrics on /metrics, liveness on /health, readiness on /ready");
        }
        let (endpoints, key, embedded) = if !args.endpoints.is_empty() {
            let key = args
                .api_key
                .clone()
                .ok_or("--endpoint needs --api-key (or STENCIL_API_KEY)")?;
            let ca = match &args.ca_file {
                Some(p) => Some(
                    std::fs::read(p).map_err(|e| format!("--ca-file {}: {e}", p.display()))?,
                ),
                None => None,
            };
            let mut list = Vec::new();
            for url in &args.endpoints {
                let scheme_ok = ["http://", "https://"]
                    .iter()
                    .any(|s| url.starts_with(s) && url.len() > s.len());
                if !scheme_ok {
                    return Err(format!(
                        "--endpoint {url:?}: give the scheme and address, e.g. https://intake.example.com:443 (or http:// on a trusted network)"
                    ));
                }
                if list.iter().any(|(u, _)| u == url) {
                    return Err(format!("--endpoint {url}: given twice"));
                }
                let channel = stencil_agent::channel(url, ca.as_deref())
                    .map_err(|e| format!("--endpoint {url}: {e}"))?;
                list.push((url.clone(), channel));
            }
            (stencil_agent::Endpoints::new(list), key, None)
        } else {
            let key = format!("embedded-{}", std::process::id());
            let sink = FilesSink::new(&args.out, false).map_err(|e| format!("--out: {e}"))?;
            let config = IntakeConfig {
                api_keys: vec![key.clone()],
                ..IntakeConfig::default()
            };
            let intake = stencil_intake::bind("127.0.0.1:0", config, Arc::new(sink))
                .await
                .map_err(|e| e.to_string())?;
            let addr: SocketAddr = intake.local_addr();
            let url = format!("http://{addr}");
            let channel = stencil_agent::channel(&url, None).map_err(|e| e.to_string())?;
            (
                stencil_agent::Endpoints::new(vec![(url, channel)]),
                key,
                Some(intake),
            )
        };
        let _ = endpoint_cell.set(endpoints.clone());
        let mailbox = Mailbox::new();
        let progress = progress(&mailbox);
        let stop = Arc::new(AtomicBool::new(false));
        {
            // First signal: stop reading, send the rest, and give up after the shutdown timeout (with
            // --once, give up at once). Second signal: exit now.
            let (flag, abort) = (stop.clone(), abort.clone());
            let timeout = std::time::Duration::from_secs(args.shutdown_timeout_secs);
            let once = args.once;
            tokio::spawn(async move {
                super::shutdown_signal().await;
                flag.store(true, Ordering::SeqCst);
                if once {
                    tracing::warn!("shutdown requested: giving up on what is not acked yet");
                    abort.cancel();
                } else {
                    tracing::info!(
                        timeout_secs = timeout.as_secs(),
                        "shutdown requested: sending what was read, waiting for acks (a second signal exits at once)"
                    );
                    let give_up = abort.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(timeout).await;
                        give_up.cancel();
                    });
                }
                super::shutdown_signal().await;
                eprintln!("stencil ship: second signal: exiting now; unacked lines are read again on the next run");
                std::process::exit(130);
            });
        }
        let summary = if args.once {
            stencil_agent::ship::ship_once(inputs, options, endpoints, key, mailbox.clone()).await?
        } else {
            eprintln!(
                "stencil ship: following {} (Ctrl-C to stop)",
                args.paths.join(" ")
            );
            stencil_agent::ship::ship_follow(
                args.paths.clone(),
                options,
                endpoints,
                key,
                mailbox.clone(),
                stop,
            )
            .await?
        };
        if let Some(bar) = progress {
            bar.finish_and_clear();
        }
        if let Some(intake) = embedded {
            intake.shutdown().await.map_err(|e| e.to_string())?;
        }
        print_summary(&summary, args.endpoints.is_empty().then_some(&args.out));
        if let Some(path) = &args.summary_json {
            std::fs::write(path, summary.to_json().to_string())
                .map_err(|e| format!("--summary-json {}: {e}", path.display()))?;
        }
        if let Some(why) = &summary.gave_up {
            return Err(format!(
                "gave up: {why}. {} lines were not acked; with --data-dir they are read again on the next run",
                summary.unacked
            ));
        }
        // In follow mode a skipped file is retried (and counted each time it is warned about); a pass
        // with --once that skipped one did not ship everything.
        let skipped = if args.once { summary.skipped_files } else { 0 };
        if summary.dropped > 0 || skipped > 0 {
            return Err(format!(
                "not everything was shipped: {} logs dropped, {skipped} files skipped (see the warnings above)",
                summary.dropped
            ));
        }
        Ok(())
    })
}
