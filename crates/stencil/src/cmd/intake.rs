//! `stencil intake`: serve both protocol generations and write rebuilt logs to one sink.

use anyhow::Context as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use stencil_intake::{FilesSink, IntakeConfig, JsonLinesSink, Sink, TlsFiles};

/// Flags of `stencil intake`.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("sink").args(["out", "jsonl", "stdout", "nats_urls"])))]
pub struct IntakeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:10600", env = "STENCIL_INTAKE_LISTEN")]
    listen: String,
    /// Write rebuilt lines to one file per source under DIR (`/var/log/x` → `DIR/var/log/x`).
    #[arg(long, value_name = "DIR", env = "STENCIL_INTAKE_OUT")]
    out: Option<PathBuf>,
    /// Append one JSON object per log to PATH.
    #[arg(long, value_name = "PATH", env = "STENCIL_INTAKE_JSONL")]
    jsonl: Option<PathBuf>,
    /// Print one JSON object per log to stdout (the default sink).
    #[arg(long, env = "STENCIL_INTAKE_STDOUT")]
    stdout: bool,
    /// Publish each log into a NATS JetStream stream (the `--jsonl` object as the body) via these
    /// cluster seed URLs; a batch is acked only once JetStream has acked every log of it.
    #[arg(
        long = "nats-url",
        value_name = "URL",
        value_delimiter = ',',
        env = "STENCIL_INTAKE_NATS_URLS"
    )]
    nats_urls: Vec<String>,
    /// JetStream stream to publish into (created if absent, with subjects `<first token>.>`).
    #[arg(
        long,
        default_value = "STENCIL",
        requires = "nats_urls",
        env = "STENCIL_INTAKE_NATS_STREAM"
    )]
    nats_stream: String,
    /// Subject of each message: dot-separated tokens, any of which may be `{service}`, `{source}` or
    /// `{host}` (filled from the log).
    #[arg(
        long,
        default_value = "stencil.logs",
        requires = "nats_urls",
        env = "STENCIL_INTAKE_NATS_SUBJECT"
    )]
    nats_subject: String,
    /// Replicas of the stream when the intake creates it.
    #[arg(
        long,
        default_value_t = 1,
        requires = "nats_urls",
        env = "STENCIL_INTAKE_NATS_REPLICAS"
    )]
    nats_replicas: u64,
    /// NATS credentials file (`.creds`: JWT and NKey seed).
    #[arg(
        long,
        value_name = "FILE",
        requires = "nats_urls",
        env = "STENCIL_INTAKE_NATS_CREDS"
    )]
    nats_creds: Option<PathBuf>,
    /// File holding a NATS token.
    #[arg(
        long,
        value_name = "FILE",
        requires = "nats_urls",
        env = "STENCIL_INTAKE_NATS_TOKEN_FILE"
    )]
    nats_token_file: Option<PathBuf>,
    /// PEM file of CAs to trust for NATS over TLS (implies --nats-tls).
    #[arg(
        long,
        value_name = "PEM",
        requires = "nats_urls",
        env = "STENCIL_INTAKE_NATS_CA_FILE"
    )]
    nats_ca_file: Option<PathBuf>,
    /// Require TLS to the NATS servers.
    #[arg(long, requires = "nats_urls", env = "STENCIL_INTAKE_NATS_TLS")]
    nats_tls: bool,
    /// How long a batch waits for JetStream to ack all its logs before its stream ends with
    /// UNAVAILABLE (the agent replays it elsewhere).
    #[arg(
        long,
        default_value_t = 30,
        requires = "nats_urls",
        env = "STENCIL_INTAKE_NATS_ACK_TIMEOUT_SECS"
    )]
    nats_ack_timeout_secs: u64,
    /// How long start-up waits for JetStream to answer: a new cluster answers once it has elected its
    /// leader, a cluster without a quorum not at all. An unreachable server is an error at once.
    #[arg(
        long,
        default_value_t = 60,
        requires = "nats_urls",
        env = "STENCIL_INTAKE_NATS_START_TIMEOUT_SECS"
    )]
    nats_start_timeout_secs: u64,
    /// Sync every batch to disk before acking it (slower, survives power loss).
    #[arg(long, env = "STENCIL_INTAKE_FSYNC")]
    fsync: bool,
    /// Accepted API key (repeat for several; in the environment, comma-separated). Without any (and
    /// without --api-key-file), every non-empty key is accepted.
    #[arg(
        long = "api-key",
        value_name = "KEY",
        env = "STENCIL_INTAKE_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    api_keys: Vec<String>,
    /// TLS certificate chain (PEM). Requires --tls-key.
    #[arg(long, requires = "tls_key", env = "STENCIL_INTAKE_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM). Requires --tls-cert.
    #[arg(long, requires = "tls_cert", env = "STENCIL_INTAKE_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Mutual TLS: accept only agents whose client certificate is signed by a CA in this PEM file.
    #[arg(
        long,
        value_name = "PEM",
        requires = "tls_cert",
        env = "STENCIL_INTAKE_TLS_CLIENT_CA"
    )]
    tls_client_ca: Option<PathBuf>,
    /// File of accepted API keys, one per line (`#` starts a comment), read again on SIGHUP: keys are
    /// added and revoked without a restart, and stay out of `ps`.
    #[arg(long, value_name = "FILE", env = "STENCIL_INTAKE_API_KEY_FILE")]
    api_key_file: Option<PathBuf>,
    /// With --out: how each log's file is named under DIR, from `{host}`, `{service}`, `{source}` and
    /// `{path}` (the log's file path), e.g. `{host}/{path}` so that hosts with the same paths stay apart.
    #[arg(
        long,
        value_name = "LAYOUT",
        default_value = "{path}",
        env = "STENCIL_INTAKE_OUT_LAYOUT",
        requires = "out"
    )]
    out_layout: String,
    /// Serve Prometheus /metrics, /health and /patterns (logs per pattern) on this address.
    #[arg(long, value_name = "ADDR", env = "STENCIL_INTAKE_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// On shutdown, write the number of logs per pattern (template with `<*>` holes, its stable hash,
    /// and an example line) to FILE as JSON.
    #[arg(long, value_name = "FILE", env = "STENCIL_INTAKE_PATTERNS_REPORT")]
    patterns_report: Option<PathBuf>,
    /// Maximum gRPC message size in bytes.
    #[arg(long, default_value_t = 16 << 20, env = "STENCIL_INTAKE_MAX_MESSAGE_BYTES")]
    max_message_bytes: usize,
    /// Maximum decompressed size of one batch, in bytes.
    #[arg(long, default_value_t = 64 << 20, env = "STENCIL_INTAKE_MAX_BATCH_BYTES")]
    max_batch_bytes: usize,
    /// Maximum state bytes per stream.
    #[arg(long, default_value_t = 64 << 20, env = "STENCIL_INTAKE_MAX_STATE_BYTES")]
    max_state_bytes: usize,
    /// Maximum concurrent streams.
    #[arg(long, default_value_t = 1024, env = "STENCIL_INTAKE_MAX_STREAMS")]
    max_streams: usize,
    /// End a stream (with OK) after this many seconds without a batch, or without reading its acks.
    #[arg(long, default_value_t = 300, env = "STENCIL_INTAKE_IDLE_TIMEOUT_SECS")]
    idle_timeout_secs: u64,
    /// Memory that all streams' decoders may hold at once (state, buffers, rebuilt logs), in MiB.
    /// Past it, streams and batches that do not fit get UNAVAILABLE and agents retry.
    #[arg(long, default_value_t = 2048, env = "STENCIL_INTAKE_MEMORY_BUDGET_MIB")]
    memory_budget_mib: u64,
    /// Maximum open TCP connections; more are closed at once (and logged).
    #[arg(long, default_value_t = 4096, env = "STENCIL_INTAKE_MAX_CONNECTIONS")]
    max_connections: u64,
    /// Close a connection after this many seconds without an open stream.
    #[arg(
        long,
        default_value_t = 120,
        env = "STENCIL_INTAKE_CONNECTION_IDLE_TIMEOUT_SECS"
    )]
    connection_idle_timeout_secs: u64,
    /// Seconds between HTTP/2 keepalive pings; a peer silent 20 s after a ping is disconnected.
    #[arg(long, default_value_t = 60, env = "STENCIL_INTAKE_KEEPALIVE_SECS")]
    keepalive_secs: u64,
    /// On SIGTERM/SIGINT, seconds to let in-flight batches finish.
    #[arg(long, default_value_t = 30, env = "STENCIL_INTAKE_GRACE_SECS")]
    grace_secs: u64,
    /// Never echo the Stencil wire extensions (stream-zstd, native/3): every stream stays plain v3, as
    /// with a Datadog intake.
    #[arg(long, env = "STENCIL_INTAKE_NO_EXTENSIONS")]
    no_extensions: bool,
    /// Largest stream-zstd window an agent may use, as a power of two (10..=27; 20 = 1 MiB per stream,
    /// counted in --max-state-bytes).
    #[arg(long, default_value_t = 20, env = "STENCIL_INTAKE_MAX_WINDOW_LOG")]
    max_window_log: u32,
    /// Which settings the config file gave.
    #[arg(skip)]
    origins: stencil_config::file::Origins,
}

async fn sink(args: &IntakeArgs) -> anyhow::Result<Arc<dyn Sink>> {
    Ok(if !args.nats_urls.is_empty() {
        let config = stencil_intake::NatsConfig {
            urls: args.nats_urls.clone(),
            stream: args.nats_stream.clone(),
            subject: args.nats_subject.clone(),
            replicas: usize::try_from(args.nats_replicas).unwrap_or(1),
            credentials: args.nats_creds.clone(),
            token_file: args.nats_token_file.clone(),
            ca_file: args.nats_ca_file.clone(),
            tls: args.nats_tls || args.nats_ca_file.is_some(),
            ack_timeout: Duration::from_secs(args.nats_ack_timeout_secs),
            start_timeout: Duration::from_secs(args.nats_start_timeout_secs),
        };
        let sink = stencil_intake::NatsSink::connect(&config).await?;
        tracing::info!(urls = ?config.urls, stream = %config.stream, subject = %config.subject, "publishing into NATS JetStream");
        Arc::new(sink)
    } else if let Some(dir) = &args.out {
        let layout: stencil_intake::Layout = args.out_layout.parse().context("--out-layout")?;
        Arc::new(
            FilesSink::new(dir, args.fsync)
                .context("--out")?
                .with_layout(layout),
        )
    } else if let Some(path) = &args.jsonl {
        Arc::new(JsonLinesSink::to_file(path, args.fsync).context("--jsonl")?)
    } else {
        Arc::new(JsonLinesSink::stdout())
    })
}

fn config(args: &IntakeArgs, keys: Option<stencil_intake::ApiKeys>) -> IntakeConfig {
    let mut config = IntakeConfig {
        api_keys: args.api_keys.clone(),
        reloadable_keys: keys,
        max_message_bytes: args.max_message_bytes,
        max_concurrent_streams: args.max_streams,
        idle_timeout: Duration::from_secs(args.idle_timeout_secs),
        memory_budget: usize::try_from(args.memory_budget_mib << 20).unwrap_or(usize::MAX),
        max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
        connection_idle_timeout: Duration::from_secs(args.connection_idle_timeout_secs),
        keepalive_interval: Duration::from_secs(args.keepalive_secs),
        shutdown_grace: Duration::from_secs(args.grace_secs),
        tls: match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: args.tls_client_ca.clone(),
            }),
            _ => None,
        },
        extensions: !args.no_extensions,
        max_window_log: args.max_window_log,
        ..IntakeConfig::default()
    };
    config.limits.max_decompressed_bytes = args.max_batch_bytes;
    config.limits.max_state_bytes = args.max_state_bytes;
    config
}

/// Applies the `[intake]` table of the config file to what the command line and environment left unset.
pub fn apply_config(
    args: &mut IntakeArgs,
    matches: &clap::ArgMatches,
    file: &stencil_config::file::ConfigFile,
) -> anyhow::Result<()> {
    use stencil_config::file::{list, mib, secs, size, value};
    args.origins = stencil_config::apply_keys!(file, "intake", matches, args;
        listen => value,
        out => value,
        jsonl => value,
        stdout => value,
        nats_urls | "nats_url" => list,
        nats_stream => value,
        nats_subject => value,
        nats_replicas => value,
        nats_creds => value,
        nats_token_file => value,
        nats_ca_file => value,
        nats_tls => value,
        nats_ack_timeout_secs | "nats_ack_timeout" => secs,
        nats_start_timeout_secs | "nats_start_timeout" => secs,
        fsync => value,
        api_keys | "api_key" => list,
        tls_cert => value,
        tls_key => value,
        tls_client_ca => value,
        api_key_file => value,
        out_layout => value,
        metrics_listen => value,
        patterns_report => value,
        max_message_bytes => size,
        max_batch_bytes => size,
        max_state_bytes => size,
        max_streams => value,
        idle_timeout_secs | "idle_timeout" => secs,
        memory_budget_mib | "memory_budget" => mib,
        max_connections => value,
        connection_idle_timeout_secs | "connection_idle_timeout" => secs,
        keepalive_secs | "keepalive" => secs,
        grace_secs | "grace" => secs,
        no_extensions => value,
        max_window_log => value,
    );
    Ok(())
}

impl IntakeArgs {
    /// Refuses values that make no sense, whether from flags, the environment or the config file.
    fn validate(&self) -> anyhow::Result<()> {
        let n = |field: &str| self.origins.name(field, &field.replace('_', "-"));
        fn range(name: &str, v: u64, lo: u64, hi: u64) -> anyhow::Result<()> {
            if v < lo || v > hi {
                anyhow::bail!("{name} = {v}: must be between {lo} and {hi}");
            }
            Ok(())
        }
        let sinks = [
            self.out.is_some(),
            self.jsonl.is_some(),
            self.stdout,
            !self.nats_urls.is_empty(),
        ];
        if sinks.iter().filter(|s| **s).count() > 1 {
            anyhow::bail!("give one sink: out, jsonl, stdout or nats_urls");
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            anyhow::bail!("tls_cert and tls_key go together");
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            anyhow::bail!("tls_client_ca needs tls_cert and tls_key (mutual TLS is TLS first)");
        }
        range(&n("nats_replicas"), self.nats_replicas, 1, 5)?;
        range(
            &n("nats_ack_timeout_secs"),
            self.nats_ack_timeout_secs,
            1,
            3600,
        )?;
        range(
            &n("nats_start_timeout_secs"),
            self.nats_start_timeout_secs,
            1,
            86_400,
        )?;
        range(
            &n("max_message_bytes"),
            self.max_message_bytes as u64,
            1024,
            1 << 30,
        )?;
        range(
            &n("max_batch_bytes"),
            self.max_batch_bytes as u64,
            1024,
            4 << 30,
        )?;
        range(
            &n("max_state_bytes"),
            self.max_state_bytes as u64,
            1 << 16,
            4 << 30,
        )?;
        range(&n("max_streams"), self.max_streams as u64, 1, 1 << 20)?;
        range(&n("idle_timeout_secs"), self.idle_timeout_secs, 1, 86_400)?;
        range(&n("memory_budget_mib"), self.memory_budget_mib, 16, 1 << 20)?;
        range(&n("max_connections"), self.max_connections, 1, 1 << 20)?;
        range(
            &n("connection_idle_timeout_secs"),
            self.connection_idle_timeout_secs,
            1,
            86_400,
        )?;
        range(&n("keepalive_secs"), self.keepalive_secs, 1, 86_400)?;
        range(&n("grace_secs"), self.grace_secs, 0, 3600)?;
        range(&n("max_window_log"), u64::from(self.max_window_log), 10, 27)?;
        Ok(())
    }
}

/// Runs the intake until SIGINT or SIGTERM, then shuts down gracefully and exits 0.
pub fn run(args: IntakeArgs) -> ExitCode {
    match run_inner(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            super::fail(&format!("stencil intake: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// The keys of an API key file: one per line, blank lines and `#` comments skipped.
fn read_key_file(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--api-key-file {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

/// Listens for SIGHUP from now on (its default action would end the process), or says why it cannot.
fn sighup() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    signal(SignalKind::hangup())
        .inspect_err(|e| {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: the API key file will not be reloaded");
        })
        .ok()
}

/// Reads the key file again on each SIGHUP. A file that cannot be read leaves the keys as they were.
async fn reload_keys_on_sighup(
    mut hup: tokio::signal::unix::Signal,
    keys: stencil_intake::ApiKeys,
    path: PathBuf,
) {
    while hup.recv().await.is_some() {
        match read_key_file(&path) {
            Ok(new) => {
                tracing::info!(file = %path.display(), keys = new.len(), "reloaded the API key file");
                keys.replace(new);
            }
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "reloading the API key file failed; the keys stay as they were"
                )
            }
        }
    }
}

fn run_inner(args: IntakeArgs) -> anyhow::Result<()> {
    args.validate()?;
    let rt = super::runtime(None)?;
    let sink = rt.block_on(sink(&args))?;
    // Pattern counts cost a hash lookup per log: kept when a report or the metrics port can show them.
    let stats = (args.patterns_report.is_some() || args.metrics_listen.is_some())
        .then(stencil_intake::PatternStats::new);
    let sink: Arc<dyn Sink> = match &stats {
        Some(stats) => Arc::new(stencil_intake::PatternsSink::new(sink, stats.clone())),
        None => sink,
    };
    let keys = match &args.api_key_file {
        Some(path) => Some(stencil_intake::ApiKeys::new(read_key_file(path)?)),
        None => None,
    };
    let config = config(&args, keys.clone());
    if config.tls.is_none() {
        tracing::warn!(
            "serving plaintext gRPC: pass --tls-cert and --tls-key outside a trusted network"
        );
    }
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    rt.block_on(async move {
        if let Some(addr) = args.metrics_listen {
            let shown = stats.clone();
            let serving = ready.clone();
            let routes: stencil_telemetry::RoutesFn = Arc::new(move |path: &str| match (path, &shown) {
                ("/patterns", Some(stats)) => Some((200, stats.report().to_string())),
                // Readiness: listening and not shutting down.
                ("/ready", _) => {
                    let ready = serving.load(std::sync::atomic::Ordering::SeqCst);
                    Some((if ready { 200 } else { 503 }, format!("{{\"ready\":{ready}}}")))
                }
                _ => None,
            });
            let (bound, _task) = stencil_telemetry::bind_and_serve_with_routes(
                addr,
                stencil_telemetry::always_healthy(),
                routes,
            )
            .await
            .with_context(|| format!("--metrics-listen {addr}"))?;
            stencil_telemetry::build_info("intake");
            tracing::info!(%bound, "metrics on /metrics, liveness on /health, readiness on /ready, pattern counts on /patterns");
        }
        // Signal handlers before the address is announced: from then on, a SIGTERM means a graceful stop.
        let mut shutdown = super::ShutdownSignal::new()?;
        let hup = keys.is_some().then(sighup).flatten();
        let running = stencil_intake::bind(&args.listen, config, sink)
            .await
            ?;
        // Ready before the address is announced: whoever reads it may ask `/ready` at once.
        ready.store(true, std::sync::atomic::Ordering::SeqCst);
        // Tests and scripts read the bound address (useful with port 0) from this line on stderr.
        super::say(&format!("stencil intake: listening on {}", running.local_addr()));
        if let (Some(keys), Some(path), Some(hup)) = (keys, args.api_key_file.clone(), hup) {
            tokio::spawn(reload_keys_on_sighup(hup, keys, path));
        }
        let token = running.shutdown_token();
        let serving = ready.clone();
        tokio::spawn(async move {
            shutdown.recv().await;
            serving.store(false, std::sync::atomic::Ordering::SeqCst);
            tracing::info!("shutdown requested; finishing in-flight batches");
            token.cancel();
        });
        running.wait().await?;
        if let (Some(path), Some(stats)) = (&args.patterns_report, &stats) {
            stats
                .write_report(path)
                .with_context(|| format!("--patterns-report {}", path.display()))?;
            tracing::info!(file = %path.display(), "wrote the pattern report");
        }
        tracing::info!("intake stopped");
        Ok(())
    })
}
