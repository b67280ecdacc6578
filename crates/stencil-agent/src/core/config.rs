//! The worker's timings and limits (TRANSPORT.md §13), with their defaults.

use std::time::Duration;

use stencil_codec::Extensions;

/// Timings and limits (TRANSPORT.md §13 defaults).
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Stream lifetime before rotation.
    pub lifetime: Duration,
    /// ± jitter on the lifetime (0.10 = ±10 %).
    pub lifetime_jitter: f64,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// How long a draining stream waits for its acks.
    pub drain_timeout: Duration,
    /// How long a half-closed stream waits for its trailer.
    pub close_timeout: Duration,
    /// Uptime (with an ack) after which the error count resets.
    pub stability_window: Duration,
    /// First backoff step.
    pub backoff_base: Duration,
    /// Backoff cap.
    pub backoff_max: Duration,
    /// Retry interval while paused.
    pub recheck_interval: Duration,
    /// Shutdown grace period.
    pub grace_period: Duration,
    /// Most payloads in flight.
    pub max_inflight_payloads: usize,
    /// Most encoded bytes in flight.
    pub max_inflight_bytes: usize,
    /// Most memory held by payloads in flight ([`Payload::memory`](crate::Payload::memory), an estimate of their heap): new
    /// templates make payloads hold several times their wire size. The core sends what it takes at
    /// once, so when encoding for the wire is the slow step, acks queue behind it and this limit, not
    /// the network, decides how much is held. 4 MiB is about eight 1,000-line batches of 130-byte
    /// lines; on `bench cardinality` 16 MiB held about 20 MiB more RSS for no more throughput.
    pub max_inflight_memory: usize,
    /// Rejections of the same payload per poison-ladder step.
    pub poison_threshold: u32,
    /// Largest encoded batch 0; past it, batch 0 carries the longest ordered prefix that fits and the
    /// rest travels as payload prefixes.
    pub max_batch_bytes: usize,
    /// Wire extensions to ask for (`stencil-extensions`); used on a stream only once the intake echoes
    /// them. Empty (the default) = plain v3.
    pub extensions: Extensions,
    /// The zstd level of the `stream-zstd` context, once agreed.
    pub stream_level: i32,
    /// With extensions asked, how long a new stream's data batches may wait for the intake's first
    /// answer (batch 0 never waits). Response headers come at the latest with the first ack, so this
    /// bounds the wait only for an intake that neither sends headers early nor acks batch 0.
    pub echo_wait: Duration,
    /// v3 keeps deletes off the wire, so an intake's state for a stream grows until the stream ends.
    /// Past this many defines sent on one stream, it is rotated (like a lifetime rotation) so that the
    /// intake never reaches its own limits (100,000 patterns per stream by default).
    pub max_stream_entries: usize,
    /// The same, in define bytes (the intake's default limit is 64 MiB per stream).
    pub max_stream_state_bytes: usize,
    /// Index of the worker's pipeline: the `pipeline` label of its metrics, so that the series of
    /// several pipelines add up instead of overwriting each other.
    pub pipeline: usize,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            lifetime: Duration::from_secs(900),
            lifetime_jitter: 0.10,
            connect_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(5),
            close_timeout: Duration::from_secs(5),
            stability_window: Duration::from_secs(30),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(120),
            recheck_interval: Duration::from_secs(300),
            grace_period: Duration::from_secs(30),
            max_inflight_payloads: 50,
            max_inflight_bytes: 32 << 20,
            max_inflight_memory: 4 << 20,
            poison_threshold: 3,
            max_batch_bytes: 4 << 20,
            extensions: Extensions::default(),
            stream_level: stencil_codec::extensions::STREAM_LEVEL,
            echo_wait: Duration::from_secs(1),
            max_stream_entries: 10_000,
            max_stream_state_bytes: 8 << 20,
            pipeline: 0,
        }
    }
}
