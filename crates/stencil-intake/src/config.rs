//! Intake configuration: authentication keys and every limit, each with a sane default
//! (PROTOCOL.md §15), plus optional TLS.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use stencil_codec::Limits;

/// How the intake authenticates and bounds its streams.
#[derive(Debug, Clone)]
pub struct IntakeConfig {
    /// Accepted `dd-api-key` values. Empty = any non-empty key is accepted (an open intake; a warning is
    /// logged at startup).
    pub api_keys: Vec<String>,
    /// Keys that are known but not allowed on this intake: `PERMISSION_DENIED`.
    pub denied_api_keys: Vec<String>,
    /// More accepted keys, which can be replaced while the intake runs (a key file reloaded on
    /// SIGHUP). With it, the intake is never open, even when it holds no key.
    pub reloadable_keys: Option<ApiKeys>,
    /// Decoder limits per stream and per batch.
    pub limits: Limits,
    /// Maximum gRPC message size accepted (default 16 MiB; tonic's own default is 4 MiB).
    pub max_message_bytes: usize,
    /// Bytes that the decoders of all streams may hold at once: state, decompression buffers, stream-zstd
    /// contexts and rebuilt logs (default 2 GiB). Over it, new streams and the batches that do not fit
    /// get `UNAVAILABLE`, which agents retry; streams that fit keep working.
    pub memory_budget: usize,
    /// Maximum concurrent streams over both generations (default 1,024). Past it, new streams get
    /// `UNAVAILABLE`, which agents retry.
    pub max_concurrent_streams: usize,
    /// A stream that sends no batch for this long is ended gracefully with `OK` (default 300 s). A
    /// client that does not read its acks for this long loses its stream too.
    pub idle_timeout: Duration,
    /// Maximum open TCP connections (default 4,096). Past it, new connections are closed at once, and
    /// each refusal is counted and logged.
    pub max_connections: usize,
    /// A connection without an open stream for this long is closed (default 120 s). This covers
    /// clients that connect and never send, or never finish their handshake.
    pub connection_idle_timeout: Duration,
    /// Interval of HTTP/2 keepalive pings; a peer that does not answer within 20 s is disconnected
    /// (default 60 s).
    pub keepalive_interval: Duration,
    /// Longest TLS handshake (default 10 s).
    pub handshake_timeout: Duration,
    /// On shutdown, how long in-flight batches get to finish and be acked (default 30 s).
    pub shutdown_grace: Duration,
    /// Serve TLS with this certificate chain and key (PEM files). `None` = plaintext.
    pub tls: Option<TlsFiles>,
    /// Echo the Stencil wire extensions (`stream-zstd`, `native/3`) an agent asks for (default on). Off,
    /// every stream is plain v3, as with a Datadog intake.
    pub extensions: bool,
    /// Largest `stream-zstd` window an agent may use, as a power of two (default 20, 1 MiB). The
    /// context's memory counts against the stream's `max_state_bytes`.
    pub max_window_log: u32,
}

/// Accepted API keys that can be replaced at run time: each stream is checked against the set current
/// when it opens (streams already open keep running).
#[derive(Debug, Clone, Default)]
pub struct ApiKeys(Arc<RwLock<Arc<[String]>>>);

impl ApiKeys {
    /// A set holding `keys`.
    pub fn new(keys: Vec<String>) -> Self {
        ApiKeys(Arc::new(RwLock::new(keys.into())))
    }

    /// Replaces the set.
    pub fn replace(&self, keys: Vec<String>) {
        if let Ok(mut k) = self.0.write() {
            *k = keys.into();
        }
    }

    /// The current set.
    pub fn current(&self) -> Arc<[String]> {
        self.0
            .read()
            .map(|k| k.clone())
            .unwrap_or_else(|_| Arc::from(Vec::new()))
    }
}

/// PEM files for a TLS listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
    /// Mutual TLS: CA certificates (PEM) that sign the agents' client certificates. With it, a client
    /// without a certificate signed by one of them is refused in the handshake.
    pub client_ca: Option<PathBuf>,
}

impl Default for IntakeConfig {
    fn default() -> Self {
        IntakeConfig {
            api_keys: Vec::new(),
            denied_api_keys: Vec::new(),
            reloadable_keys: None,
            limits: Limits::default(),
            max_message_bytes: 16 << 20,
            max_concurrent_streams: 1024,
            memory_budget: 2 << 30,
            idle_timeout: Duration::from_secs(300),
            max_connections: 4096,
            connection_idle_timeout: Duration::from_secs(120),
            keepalive_interval: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            tls: None,
            extensions: true,
            max_window_log: 20,
        }
    }
}
