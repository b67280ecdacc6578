//! `stencil ship`: send files (or stdin) through the pattern engine and the stream worker to an intake.
//! Without `--endpoint` it starts an embedded intake that rebuilds every file under `--out`, so the round
//! trip can be checked with `cmp`.

use anyhow::Context as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use stencil_agent::pipeline::{ShipOptions, Summary};
use stencil_agent::{BatchConfig, Mailbox};
use stencil_codec::Compression;
use stencil_intake::{FilesSink, IntakeConfig};

/// Flags of `stencil ship`.
#[derive(Args, Debug)]
pub struct ShipArgs {
    /// Files, globs, or `-` for stdin (each its own source, with the flags' attributes). Without any, the
    /// config file's `[[ship.sources]]` are run.
    #[arg(value_name = "PATH|GLOB|-")]
    paths: Vec<String>,
    /// Also accept newline-delimited logs on this TCP address (follow mode; repeatable). Lines are
    /// tagged `peer:IP:PORT`.
    #[arg(long, value_name = "ADDR")]
    tcp: Vec<SocketAddr>,
    /// Most TCP connections open at once; more are closed at once, with a warning.
    #[arg(long, default_value_t = 256)]
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
    /// Mutual TLS: this agent's client certificate (PEM), for an intake run with --tls-client-ca.
    #[arg(
        long,
        value_name = "PEM",
        requires = "tls_key",
        env = "STENCIL_TLS_CERT"
    )]
    tls_cert: Option<PathBuf>,
    /// Mutual TLS: the private key (PEM) of --tls-cert.
    #[arg(
        long,
        value_name = "PEM",
        requires = "tls_cert",
        env = "STENCIL_TLS_KEY"
    )]
    tls_key: Option<PathBuf>,
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
    #[arg(long, value_name = "LEVEL", default_value_t = stencil_codec::extensions::STREAM_LEVEL)]
    stream_level: i32,
    /// With `--wire auto`: send each JSON log as its document's fields and its message, wherever the
    /// message is among the members (the `json-order` extension; an intake without it gets those logs
    /// as their text), so that the intake's JSON Lines and NATS records carry the document and the
    /// message's template. Off by default: JSON logs then take the text path like any line, which sends
    /// fewer bytes on every JSON corpus measured (BENCHMARKS.md). `--wire v3` always sends a JSON log
    /// whose message is its last member as a document, for a Datadog intake's attributes.
    #[arg(long, env = "STENCIL_JSON_DOCUMENTS")]
    json_documents: bool,
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
    /// Status of every log (a Datadog status: error, warning, info, debug, …) unless detected.
    #[arg(long, default_value = "info")]
    status: String,
    /// Detect each log's status from its severity word (`ERROR`, `warn`, …) or JSON level field.
    #[arg(long)]
    detect_status: bool,
    /// Payload compression.
    #[arg(long, default_value = "zstd", value_parser = ["zstd", "gzip", "none"])]
    compression: String,
    /// Logs per batch.
    #[arg(long, default_value_t = 1000)]
    batch_lines: usize,
    /// Pipelines, each with its own engine and stream over one shared connection; every source belongs
    /// to exactly one (default: min(4, CPUs)). Each pipeline reads and runs its engine on a thread of its
    /// own and gets one async worker thread for its transport.
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
    /// Raw bytes per batch (a batch is sent before going over it); units allowed (`5MB`, `512KiB`).
    /// Longer lines are split to fit.
    #[arg(long, default_value = "5000000", value_parser = size_flag)]
    batch_bytes: u64,
    /// Follow mode: send a batch at the latest this many milliseconds after its first line.
    #[arg(long, default_value_t = 5000)]
    batch_wait_ms: u64,
    /// Keep checkpoints here: a rerun resumes each file after its last acked line (also after a crash).
    #[arg(long, value_name = "DIR", env = "STENCIL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Follow mode: how long a file rotated away (renamed or deleted) is read on after it last grew,
    /// for writers that keep writing to it until they reopen their log, in seconds.
    #[arg(long, default_value_t = 30)]
    rotate_wait_secs: u64,
    /// On SIGTERM or SIGINT, how long to wait for the last acks before giving up (the acked checkpoints
    /// are saved, the unacked lines are reported and read again next time, and the exit status is 1).
    /// A second signal exits at once.
    #[arg(long, default_value_t = 30)]
    shutdown_timeout_secs: u64,
    /// With --once: give up when nothing has been acked for this long while the intake is unreachable
    /// or refusing batches (a refused API key gives up at once), instead of retrying forever.
    #[arg(long, default_value_t = 60)]
    stall_timeout_secs: u64,
    /// How often acked checkpoints are written to --data-dir, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    checkpoint_interval_ms: u64,
    /// `[[ship.sources]]` of the config file (with the prefix of their errors).
    #[arg(skip)]
    sources: Vec<(String, stencil_config::sources::SourceConfig)>,
    /// Which settings the config file gave.
    #[arg(skip)]
    origins: stencil_config::file::Origins,
}

/// `--batch-bytes`: a size with or without a unit.
fn size_flag(text: &str) -> Result<u64, stencil_config::UnitError> {
    stencil_config::file::parse_size(text)
}

/// Applies the `[ship]` table of the config file to what the command line and environment left unset.
pub fn apply_config(
    args: &mut ShipArgs,
    matches: &clap::ArgMatches,
    file: &stencil_config::file::ConfigFile,
) -> anyhow::Result<()> {
    use stencil_config::file::{list, mib, millis, secs, size, value};
    args.origins = stencil_config::apply_keys!(file, "ship", matches, args;
        paths | "path" => list,
        tcp => list,
        tcp_max_connections => value,
        endpoints | "endpoint" => list,
        api_key => value,
        ca_file => value,
        tls_cert => value,
        tls_key => value,
        out => value,
        once => value,
        compare => value,
        wire => value,
        stream_level => value,
        json_documents => value,
        no_compare => value,
        summary_json => value,
        service => value,
        source => value,
        tags | "tag" => list,
        hostname => value,
        status => value,
        detect_status => value,
        compression => value,
        batch_lines => value,
        streams => value,
        state_budget_mib | "state_budget" => mib,
        metrics_listen => value,
        batch_bytes => size,
        batch_wait_ms | "batch_wait" => millis,
        data_dir => value,
        rotate_wait_secs | "rotate_wait" => secs,
        shutdown_timeout_secs | "shutdown_timeout" => secs,
        stall_timeout_secs | "stall_timeout" => secs,
        checkpoint_interval_ms | "checkpoint_interval" => millis,
        sources => stencil_config::sources::read,
    );
    Ok(())
}

impl ShipArgs {
    /// Refuses values that make no sense, whether from flags, the environment or the config file.
    fn validate(&self) -> anyhow::Result<()> {
        let n = |field: &str| self.origins.name(field, &field.replace('_', "-"));
        fn range<T: PartialOrd + std::fmt::Display>(
            name: &str,
            v: T,
            lo: T,
            hi: T,
            unit: &str,
        ) -> anyhow::Result<()> {
            if v < lo || v > hi {
                anyhow::bail!("{name} = {v}{unit}: must be between {lo} and {hi}{unit}");
            }
            Ok(())
        }
        range(&n("batch_lines"), self.batch_lines, 1, 1_000_000, "")?;
        range(&n("batch_bytes"), self.batch_bytes, 256, 1 << 30, " bytes")?;
        range(&n("batch_wait_ms"), self.batch_wait_ms, 1, 3_600_000, " ms")?;
        range(&n("streams"), self.streams.unwrap_or(1), 1, 256, "")?;
        range(
            &n("state_budget_mib"),
            self.state_budget_mib,
            1,
            16_384,
            " MiB",
        )?;
        range(&n("stream_level"), self.stream_level, 1, 19, "")?;
        range(
            &n("tcp_max_connections"),
            self.tcp_max_connections,
            1,
            65_536,
            "",
        )?;
        range(
            &n("rotate_wait_secs"),
            self.rotate_wait_secs,
            1,
            86_400,
            " s",
        )?;
        range(
            &n("shutdown_timeout_secs"),
            self.shutdown_timeout_secs,
            1,
            3_600,
            " s",
        )?;
        range(
            &n("stall_timeout_secs"),
            self.stall_timeout_secs,
            1,
            86_400,
            " s",
        )?;
        range(
            &n("checkpoint_interval_ms"),
            self.checkpoint_interval_ms,
            10,
            3_600_000,
            " ms",
        )?;
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            anyhow::bail!("tls_cert and tls_key go together");
        }
        if self.json_documents && self.wire == Wire::V3 {
            anyhow::bail!(
                "{} needs {} auto: v3 already sends a JSON log whose message is last as a document, \
                 and cannot carry the message elsewhere",
                n("json_documents"),
                n("wire")
            );
        }
        if !["zstd", "gzip", "none"].contains(&self.compression.as_str()) {
            anyhow::bail!(
                "{} = {:?}: one of zstd, gzip, none",
                n("compression"),
                self.compression
            );
        }
        stencil_config::sources::check_status(&self.status)
            .with_context(|| n("status").to_string())?;
        Ok(())
    }

    /// The sources to run: the positional paths and `--tcp` addresses (each its own source, with the
    /// flags' attributes), or else the config file's `[[ship.sources]]`.
    fn sources(&self) -> anyhow::Result<Vec<stencil_agent::Source>> {
        use stencil_agent::SourceInput;
        let defaults = stencil_config::sources::Defaults {
            service: self.service.clone(),
            source: self.source.clone(),
            hostname: self.hostname.clone().or_else(hostname),
            tags: self.tags.clone(),
            status: stencil_config::sources::check_status(&self.status)?,
            detect_status: self.detect_status,
        };
        let mut out = Vec::new();
        if self.paths.is_empty() && self.tcp.is_empty() {
            for (at, config) in &self.sources {
                out.push(config.build(at, &defaults)?);
            }
            if out.is_empty() {
                anyhow::bail!("nothing to ship: give files, globs or `-` (stdin), --tcp ADDR, or `[[ship.sources]]` in --config");
            }
        } else if !self.sources.is_empty() {
            tracing::info!(
                "paths given on the command line: the config file's sources are not run"
            );
        }
        for p in &self.paths {
            let input = match p.as_str() {
                "-" => SourceInput::Stdin,
                _ => SourceInput::Files {
                    include: vec![p.clone()],
                    exclude: Vec::new(),
                },
            };
            out.push(defaults.source(if p == "-" { "stdin".into() } else { p.clone() }, input));
        }
        for addr in &self.tcp {
            let listener =
                std::net::TcpListener::bind(addr).with_context(|| format!("--tcp {addr}"))?;
            out.push(defaults.source(format!("tcp:{addr}"), SourceInput::Tcp(Arc::new(listener))));
        }
        if out
            .iter()
            .filter(|s| matches!(s.input, SourceInput::Stdin))
            .count()
            > 1
        {
            anyhow::bail!("standard input is named twice");
        }
        if self.once {
            if out.iter().any(|s| matches!(s.input, SourceInput::Tcp(_))) {
                anyhow::bail!("--tcp is a follow-mode input: drop --once");
            }
            if out
                .iter()
                .any(|s| s.start_position == stencil_agent::StartPosition::End)
            {
                anyhow::bail!("start_position = \"end\" is for follow mode: drop --once");
            }
        }
        Ok(out)
    }
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
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
    let sources = s.raw_sources + s.structured_sources;
    let forms = if sources > 0 {
        format!(" ({} of {sources} sources as raw text)", s.raw_sources)
    } else {
        String::new()
    };
    let mut joined = String::new();
    if s.logs != s.lines {
        joined = format!(" ({} logs", s.logs);
        if s.excluded > 0 {
            joined += &format!(", {} excluded by rules", s.excluded);
        }
        joined += ")";
    }
    super::say(&format!(
        "shipped {} lines{joined}, {} raw bytes as {} wire bytes on {}{forms} (raw/wire {:.2}:1{comparison}) in {:.2}s ({:.0} lines/s); {} patterns, {} payloads replayed, {} lines split, {} dropped, {} files skipped",
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
    ));
    if let Some(out) = embedded_out {
        super::say(&format!(
            "rebuilt files are under {} (compare with `cmp`)",
            out.display()
        ));
    }
}

/// Runs `stencil ship`.
pub fn run(args: ShipArgs) -> ExitCode {
    match run_inner(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            super::fail(&format!("stencil ship: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

fn run_inner(args: ShipArgs) -> anyhow::Result<()> {
    args.validate()?;
    let sources = args.sources()?;
    let options = ShipOptions {
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
    let health = Arc::new(std::sync::Mutex::new(Vec::<stencil_agent::State>::new()));
    let abort = tokio_util::sync::CancellationToken::new();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let options = ShipOptions {
        health: Some(health.clone()),
        tcp_max_connections: usize::try_from(args.tcp_max_connections).unwrap_or(256),
        pipelines: args.streams.unwrap_or(cpus.min(4)).max(1),
        compare: args.compare || (args.once && !args.no_compare),
        abort: Some(abort.clone()),
        stall_timeout: args
            .once
            .then(|| std::time::Duration::from_secs(args.stall_timeout_secs)),
        core: {
            let defaults = stencil_agent::CoreConfig::default();
            stencil_agent::CoreConfig {
                stream_level: args.stream_level,
                // The stream's own grace (send the rest, wait for acks, then half-close and wait for
                // the trailer) fits in the shutdown timeout, so that the half-close comes before the
                // pipeline gives up rather than racing it.
                grace_period: std::time::Duration::from_secs(args.shutdown_timeout_secs)
                    .saturating_sub(defaults.close_timeout)
                    .max(std::time::Duration::from_secs(1)),
                ..defaults
            }
        },
        extensions: match args.wire {
            Wire::Auto => stencil_codec::Extensions {
                // Asked for only when the engine may place a message: without it, no stream keeps
                // the state it would render those logs from.
                json_order: args.json_documents,
                ..stencil_codec::Extensions::ALL
            },
            Wire::V3 => stencil_codec::Extensions::default(),
        },
        engine: {
            let engine = stencil_patterns::EngineConfig::with_state_budget(
                args.state_budget_mib.saturating_mul(1 << 20),
            );
            match args.wire {
                Wire::Auto => engine.for_default_wire(args.json_documents),
                Wire::V3 => engine,
            }
        },
        ..options
    };
    // The endpoints exist once the runtime runs; /ready shows them from then on.
    let endpoint_cell: Arc<std::sync::OnceLock<stencil_agent::Endpoints>> = Arc::default();
    // Each pipeline reads and runs its pattern engine on a thread of its own; the runtime runs the
    // pipelines' transports (the wire encoding of each batch) and the gRPC I/O. One worker per
    // pipeline (and one for an embedded intake's decoding), up to the CPUs: more workers only spread a
    // pipeline's task over more threads, each with its own allocator arena holding its peak (with
    // `--streams 1` on `bench cardinality`, two workers held 4-9 MiB more peak RSS than one).
    let embedded = usize::from(args.endpoints.is_empty());
    let rt = super::runtime(Some((options.pipelines + embedded).min(cpus)))?;
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
                .with_context(|| format!("--metrics-listen {addr}"))?;
            stencil_telemetry::build_info("ship");
            tracing::info!(%bound, "metrics on /metrics, liveness on /health, readiness on /ready");
        }
        let (endpoints, key, embedded) = if !args.endpoints.is_empty() {
            let key = args
                .api_key
                .clone()
                .context("--endpoint needs --api-key (or STENCIL_API_KEY)")?;
            let read = |flag: &str, p: &Option<PathBuf>| -> anyhow::Result<Option<Vec<u8>>> {
                p.as_ref()
                    .map(|p| std::fs::read(p).with_context(|| format!("--{flag} {}", p.display())))
                    .transpose()
            };
            let ca = read("ca-file", &args.ca_file)?;
            let client_cert = read("tls-cert", &args.tls_cert)?;
            let client_key = read("tls-key", &args.tls_key)?;
            let identity = client_cert.as_deref().zip(client_key.as_deref());
            let mut list = Vec::new();
            for url in &args.endpoints {
                let scheme_ok = ["http://", "https://"]
                    .iter()
                    .any(|s| url.starts_with(s) && url.len() > s.len());
                if !scheme_ok {
                    anyhow::bail!(
                        "--endpoint {url:?}: give the scheme and address, e.g. https://intake.example.com:443 (or http:// on a trusted network)"
                    );
                }
                if list.iter().any(|(u, _)| u == url) {
                    anyhow::bail!("--endpoint {url}: given twice");
                }
                let channel = stencil_agent::tls_channel(url, ca.as_deref(), identity)
                    .with_context(|| format!("--endpoint {url}"))?;
                list.push((url.clone(), channel));
            }
            (stencil_agent::Endpoints::new(list), key, None)
        } else {
            let key = format!("embedded-{}", std::process::id());
            let mut sink = FilesSink::new(&args.out, false).context("--out")?;
            // Without checkpoints every run reads its files from the start: it rebuilds them anew.
            if args.data_dir.is_none() {
                sink = sink.rewrite();
            }
            let config = IntakeConfig {
                api_keys: vec![key.clone()],
                ..IntakeConfig::default()
            };
            let intake = stencil_intake::bind("127.0.0.1:0", config, Arc::new(sink))
                .await
                ?;
            let addr: SocketAddr = intake.local_addr();
            let url = format!("http://{addr}");
            let channel = stencil_agent::channel(&url, None)?;
            (
                stencil_agent::Endpoints::new(vec![(url, channel)]),
                key,
                Some(intake),
            )
        };
        let _ = endpoint_cell.set(endpoints.clone());
        let mailbox = Mailbox::new();
        let progress = progress(&mailbox);
        // One shutdown signal for the readers: cancelled on the first SIGINT/SIGTERM.
        let stop = tokio_util::sync::CancellationToken::new();
        {
            // First signal: stop reading, send the rest, and give up after the shutdown timeout (with
            // --once, give up at once). Second signal: exit now.
            let (flag, abort) = (stop.clone(), abort.clone());
            let timeout = std::time::Duration::from_secs(args.shutdown_timeout_secs);
            let once = args.once;
            // Installed now, before any reading starts: a signal never finds the default action.
            let mut signals = super::ShutdownSignal::new()?;
            tokio::spawn(async move {
                signals.recv().await;
                flag.cancel();
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
                signals.recv().await;
                super::fail("stencil ship: second signal: exiting now; unacked lines are read again on the next run");
                std::process::exit(130);
            });
        }
        let summary = if args.once {
            stencil_agent::pipeline::ship_once(sources, options, endpoints, key, mailbox.clone()).await?
        } else {
            super::say(&format!(
                "stencil ship: following {} (Ctrl-C to stop)",
                sources
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            stencil_agent::pipeline::ship_follow(
                sources,
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
            intake.shutdown().await?;
        }
        print_summary(&summary, args.endpoints.is_empty().then_some(&args.out));
        if let Some(path) = &args.summary_json {
            std::fs::write(path, summary.to_json().to_string())
                .with_context(|| format!("--summary-json {}", path.display()))?;
        }
        if let Some(why) = &summary.gave_up {
            anyhow::bail!(
                "gave up: {why}. {} lines were not acked; with --data-dir they are read again on the next run",
                summary.unacked
            );
        }
        // In follow mode a skipped file is retried (and counted each time it is warned about); a pass
        // with --once that skipped one did not ship everything.
        let skipped = if args.once { summary.skipped_files } else { 0 };
        if summary.dropped > 0 || skipped > 0 {
            anyhow::bail!(
                "not everything was shipped: {} logs dropped, {skipped} files skipped (see the warnings above)",
                summary.dropped
            );
        }
        Ok(())
    })
}
