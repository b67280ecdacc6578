//! NATS JetStream sink: each rebuilt log becomes one message in a JetStream stream, so that a fleet of
//! intakes hands its logs to a distributed log that consumers already read, instead of to local files.
//!
//! The body of a message is the same JSON object as a `--jsonl` line ([`super::jsonl::record_json`]),
//! without the newline. Its subject comes from a template (`stencil.logs`, or with `{service}`,
//! `{source}` and `{host}` tokens filled from the log).
//!
//! At-least-once end to end: a batch is acked to the agent only after JetStream has acked (PubAck)
//! every message of it. The messages of a batch are published without waiting, with their acks in
//! flight together, and then awaited; a batch whose acks do not all arrive within the ack timeout (a
//! JetStream outage, a lost leader) is a sink error: the stream ends with `UNAVAILABLE` and the agent
//! replays the batch elsewhere. A replay may store a log twice (consumers see duplicates, never gaps).
//!
//! A log whose object is larger than the server's `max_payload` (1 MiB by default) is never refused
//! and never truncated: it is published as several messages in a row on its subject, each carrying a
//! piece of the object's bytes and two headers, `Stencil-Chunk: I/N` (1-based) and
//! `Stencil-Chunk-Group: ID` (the same for the pieces of one log, unique per log). A consumer that
//! sees the header concatenates the N pieces of a group in order; every other message is one whole log.
//!
//! At start the sink creates the stream if it is absent, and checks that an existing stream's subjects
//! take what the template publishes, so that a misconfiguration fails at start with the fix in the
//! message rather than as unacked batches later.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind};
use stencil_codec::LogRecord;

use super::{Sink, SinkError, StreamInfo};

/// Publishes a batch may have waiting for their acks before it awaits the oldest one.
const WINDOW: usize = 4096;
/// Acks in flight over all streams of the process (the client's bound; a stream that finds it full
/// awaits its own oldest ack and tries again).
const MAX_ACK_INFLIGHT: usize = 65_536;

/// The header of a piece of a log too large for one message: `I/N`.
pub const CHUNK_HEADER: &str = "Stencil-Chunk";
/// The header that ties the pieces of one log together.
pub const CHUNK_GROUP_HEADER: &str = "Stencil-Chunk-Group";
/// Bytes of a message kept for the chunk headers.
const CHUNK_HEADROOM: usize = 256;

/// Where and how to publish.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// Seed URLs of the cluster (`nats://host:4222`, `tls://…`).
    pub urls: Vec<String>,
    /// JetStream stream name.
    pub stream: String,
    /// Subject template: dot-separated tokens; a token may be `{service}`, `{source}` or `{host}`.
    pub subject: String,
    /// Replicas of the stream when the sink creates it.
    pub replicas: usize,
    /// A `.creds` file (JWT and NKey seed).
    pub credentials: Option<PathBuf>,
    /// A file that holds a token.
    pub token_file: Option<PathBuf>,
    /// A PEM file of CAs to trust for TLS.
    pub ca_file: Option<PathBuf>,
    /// Require TLS.
    pub tls: bool,
    /// How long a batch waits for all its PubAcks before the stream gets `UNAVAILABLE`.
    pub ack_timeout: Duration,
    /// How long start-up waits for JetStream to answer (a new cluster answers once it has elected
    /// its meta leader, and a cluster that lost its quorum not at all). A server that cannot be
    /// reached at all is an error at once.
    pub start_timeout: Duration,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            urls: vec!["nats://127.0.0.1:4222".into()],
            stream: "STENCIL".into(),
            subject: "stencil.logs".into(),
            replicas: 1,
            credentials: None,
            token_file: None,
            ca_file: None,
            tls: false,
            ack_timeout: Duration::from_secs(30),
            start_timeout: Duration::from_secs(60),
        }
    }
}

/// One token of a subject template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(String),
    Service,
    Source,
    Host,
}

/// A parsed `--nats-subject`.
#[derive(Debug, Clone)]
struct Template(Vec<Token>);

/// Why a `--nats-subject` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum SubjectError {
    #[error("`{0}` has an empty token (two dots, or a dot at an end)")]
    EmptyToken(String),
    #[error("`{subject}`: `{token}` mixes a placeholder with text; a placeholder ({{service}}, {{source}} or {{host}}) must be a whole token between dots")]
    MixedPlaceholder { subject: String, token: String },
    #[error("`{subject}`: `{token}` has a wildcard, a space or a control character")]
    BadCharacter { subject: String, token: String },
}

impl Template {
    fn parse(text: &str) -> Result<Template, SubjectError> {
        let mut tokens = Vec::new();
        for part in text.split('.') {
            tokens.push(match part {
                "{service}" => Token::Service,
                "{source}" => Token::Source,
                "{host}" => Token::Host,
                "" => return Err(SubjectError::EmptyToken(text.to_owned())),
                p if p.contains(['{', '}']) => {
                    return Err(SubjectError::MixedPlaceholder {
                        subject: text.to_owned(),
                        token: p.to_owned(),
                    })
                }
                p if p.contains(['*', '>'])
                    || p.chars().any(|c| c.is_whitespace() || c.is_control()) =>
                {
                    return Err(SubjectError::BadCharacter {
                        subject: text.to_owned(),
                        token: p.to_owned(),
                    })
                }
                p => Token::Literal(p.to_owned()),
            });
        }
        Ok(Template(tokens))
    }

    /// The subject filter that covers every subject this template publishes (placeholders as `*`).
    fn filter(&self) -> String {
        let parts: Vec<&str> = self
            .0
            .iter()
            .map(|t| match t {
                Token::Literal(s) => s.as_str(),
                _ => "*",
            })
            .collect();
        parts.join(".")
    }

    /// The subjects a stream created by the sink takes: everything under the first token
    /// (`stencil.>`), or the template's filter when it has one token.
    fn stream_subject(&self) -> String {
        match self.0.as_slice() {
            [Token::Literal(first), _, ..] => format!("{first}.>"),
            _ => self.filter(),
        }
    }

    fn render(&self, record: &LogRecord) -> String {
        let mut out = String::new();
        for (i, t) in self.0.iter().enumerate() {
            if i > 0 {
                out.push('.');
            }
            match t {
                Token::Literal(s) => out.push_str(s),
                Token::Service => push_token(&mut out, record.service.as_deref()),
                Token::Source => push_token(
                    &mut out,
                    record.tag("ddsource").or_else(|| record.tag("source")),
                ),
                Token::Host => push_token(&mut out, record.tag("hostname")),
            }
        }
        out
    }
}

/// Appends a value as one subject token: characters a token cannot hold (dots, wildcards, spaces,
/// controls) become `_`, and a missing or empty value is `_`.
fn push_token(out: &mut String, value: Option<&str>) {
    match value.filter(|v| !v.is_empty()) {
        None => out.push('_'),
        Some(v) => out.extend(v.chars().map(|c| {
            if matches!(c, '.' | '*' | '>') || c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })),
    }
}

/// Whether every subject that matches `filter` also matches the stream subject `pattern` (NATS
/// wildcards: `*` one token, `>` one or more at the end).
fn covers(pattern: &str, filter: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let f: Vec<&str> = filter.split('.').collect();
    for (i, pt) in p.iter().enumerate() {
        if *pt == ">" {
            return f.len() > i;
        }
        match f.get(i) {
            None => return false,
            Some(ft) if *pt == "*" => {
                if *ft == ">" {
                    return false;
                }
            }
            Some(ft) => {
                if ft != pt {
                    return false;
                }
            }
        }
    }
    p.len() == f.len()
}

/// Publishes rebuilt logs into a JetStream stream.
pub struct NatsSink {
    js: jetstream::Context,
    /// For the server's current `max_payload`.
    client: async_nats::Client,
    /// Unique per process, for chunk group ids.
    chunk_seed: u64,
    chunks: std::sync::atomic::AtomicU64,
    subject: Template,
    ack_timeout: Duration,
    handle: tokio::runtime::Handle,
}

impl std::fmt::Debug for NatsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSink")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

fn nats_error(context: impl Into<String>, e: impl std::fmt::Display) -> SinkError {
    SinkError::io(context, std::io::Error::other(e.to_string()))
}

/// Why the stream could not be set up at start.
enum Setup {
    /// A configuration the stream refuses: retrying cannot help.
    Fatal(SinkError),
    /// JetStream did not answer, or answered that it cannot now: retried until the start timeout.
    NotReady(String),
}

/// Whether a refused stream creation may succeed later: JetStream was not there or its cluster was
/// not complete (a new cluster, too few peers up for the replicas). A refusal of the configuration
/// itself (replicas on a single server, an invalid name) is final.
fn creation_may_heal(kind: jetstream::context::CreateStreamErrorKind) -> bool {
    use jetstream::context::CreateStreamErrorKind as K;
    use jetstream::ErrorCode as C;
    match kind {
        K::JetStreamUnavailable | K::TimedOut | K::Response => true,
        K::JetStream(e) => [
            C::CLUSTER_NOT_AVAILABLE,
            C::CLUSTER_NO_PEERS,
            C::CLUSTER_INCOMPLETE,
            C::INSUFFICIENT_RESOURCES,
        ]
        .contains(&e.error_code()),
        _ => false,
    }
}

/// Finds the stream and checks that it takes the subject, or creates it.
async fn ensure_stream(
    js: &jetstream::Context,
    config: &NatsConfig,
    subject: &Template,
    filter: &str,
) -> Result<(), Setup> {
    match js.get_stream(&config.stream).await {
        Ok(mut stream) => {
            let info = stream
                .info()
                .await
                .map_err(|e| Setup::NotReady(format!("reading stream {}: {e}", config.stream)))?;
            let subjects = &info.config.subjects;
            if !subjects.iter().any(|s| covers(s, filter)) {
                return Err(Setup::Fatal(nats_error(
                        format!("JetStream stream {}", config.stream),
                        format!(
                            "it exists with subjects {subjects:?}, which do not take `{filter}` (from --nats-subject {}): add the subject to the stream (`nats stream edit {} --subjects …`), or choose a --nats-subject its subjects take, or another --nats-stream",
                            config.subject, config.stream
                        ),
                    )));
            }
            if info.config.num_replicas != config.replicas {
                tracing::warn!(
                    stream = %config.stream,
                    replicas = info.config.num_replicas,
                    asked = config.replicas,
                    "the JetStream stream exists with another replica count; keeping it"
                );
            }
        }
        Err(e)
            if matches!(
                e.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            ) =>
        {
            let created = js
                .create_stream(jetstream::stream::Config {
                    name: config.stream.clone(),
                    subjects: vec![subject.stream_subject()],
                    num_replicas: config.replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| {
                    if creation_may_heal(e.kind()) {
                        Setup::NotReady(format!("creating stream {}: {e}", config.stream))
                    } else {
                        Setup::Fatal(nats_error(format!("creating stream {}", config.stream), e))
                    }
                })?;
            tracing::info!(stream = %created.cached_info().config.name, subjects = ?created.cached_info().config.subjects, replicas = config.replicas, "created the JetStream stream");
        }
        Err(e) => {
            return Err(Setup::NotReady(format!(
                "looking up stream {}: {e} (is JetStream enabled on the server, `-js`?)",
                config.stream
            )))
        }
    }
    Ok(())
}

impl NatsSink {
    /// Connects to the cluster, then creates the stream or checks the existing one. Must run inside
    /// the tokio runtime that later calls [`Sink::write_batch`] from its blocking pool.
    pub async fn connect(config: &NatsConfig) -> Result<NatsSink, SinkError> {
        let subject =
            Template::parse(&config.subject).map_err(|e| nats_error("--nats-subject", e))?;
        if config.stream.is_empty()
            || config
                .stream
                .chars()
                .any(|c| matches!(c, '.' | '*' | '>' | '/' | '\\') || c.is_whitespace())
        {
            return Err(nats_error(
                "--nats-stream",
                format!(
                    "`{}` is not a valid stream name (no dots, wildcards, slashes or spaces)",
                    config.stream
                ),
            ));
        }
        if config.urls.is_empty() {
            return Err(nats_error("--nats-url", "no URL given"));
        }
        let mut options = async_nats::ConnectOptions::new()
            .name("stencil-intake")
            .connection_timeout(Duration::from_secs(10))
            // Reconnect for ever: an outage makes batches wait and fail, never the process.
            .max_reconnects(None);
        if let Some(path) = &config.credentials {
            options = options
                .credentials_file(path)
                .await
                .map_err(|e| SinkError::io(format!("--nats-creds {}", path.display()), e))?;
        }
        if let Some(path) = &config.token_file {
            let token = std::fs::read_to_string(path)
                .map_err(|e| SinkError::io(format!("--nats-token-file {}", path.display()), e))?;
            options = options.token(token.trim().to_owned());
        }
        if let Some(path) = &config.ca_file {
            options = options.add_root_certificates(path.clone());
        }
        if config.tls {
            options = options.require_tls(true);
        }
        let urls = config.urls.join(",");
        let mut addrs = Vec::new();
        for url in &config.urls {
            addrs.push(
                url.parse::<async_nats::ServerAddr>()
                    .map_err(|e| nats_error(format!("--nats-url {url}"), e))?,
            );
        }
        let client = options.connect(addrs.as_slice()).await.map_err(|e| {
            nats_error(
                format!("connecting to NATS at {urls}"),
                format!("{e} (is nats-server running with JetStream enabled, `-js`?)"),
            )
        })?;
        let js_client = client.clone();
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(10))
            .ack_timeout(config.ack_timeout)
            .max_ack_inflight(MAX_ACK_INFLIGHT)
            .backpressure_on_inflight(false)
            .build(js_client);
        let filter = subject.filter();
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(250);
        loop {
            match ensure_stream(&js, config, &subject, &filter).await {
                Ok(()) => break,
                Err(Setup::Fatal(e)) => return Err(e),
                Err(Setup::NotReady(e)) => {
                    if started.elapsed() + pause > config.start_timeout {
                        return Err(nats_error(
                            format!("waiting for JetStream at {urls}"),
                            format!(
                                "{e}; no answer for {:?} (does the cluster have a quorum of its JetStream servers? --nats-start-timeout-secs waits longer)",
                                config.start_timeout
                            ),
                        ));
                    }
                    tracing::warn!(error = %e, retry_in = ?pause, "JetStream is not answering yet (a new cluster elects its leader first); waiting");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
        let chunk_seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ (u64::from(std::process::id()) << 32);
        Ok(NatsSink {
            js,
            client,
            chunk_seed,
            chunks: std::sync::atomic::AtomicU64::new(0),
            subject,
            ack_timeout: config.ack_timeout,
            handle: tokio::runtime::Handle::current(),
        })
    }

    /// The pieces of a log's object that is larger than the server takes (`None` when it fits in one
    /// message, the common case, which allocates nothing here).
    fn pieces(&self, body: &bytes::Bytes) -> Option<Vec<(async_nats::HeaderMap, bytes::Bytes)>> {
        let limit = self.client.max_payload();
        if limit == 0 || body.len() <= limit {
            return None;
        }
        let piece = limit.saturating_sub(CHUNK_HEADROOM).max(1);
        let n = body.len().div_ceil(piece);
        let group = format!(
            "{:016x}-{:x}",
            self.chunk_seed,
            self.chunks
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        Some(
            (0..n)
                .map(|i| {
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert(CHUNK_HEADER, format!("{}/{n}", i + 1).as_str());
                    headers.insert(CHUNK_GROUP_HEADER, group.as_str());
                    let end = ((i + 1) * piece).min(body.len());
                    (headers, body.slice(i * piece..end))
                })
                .collect(),
        )
    }

    async fn publish_batch(&self, logs: &[LogRecord]) -> Result<(), SinkError> {
        let mut pending = VecDeque::new();
        for record in logs {
            let body = serde_json::to_vec(&super::jsonl::record_json(record))
                .map_err(|e| nats_error("serializing a log", e))?;
            let subject = self.subject.render(record);
            let body = bytes::Bytes::from(body);
            match self.pieces(&body) {
                None => self.publish_one(&mut pending, &subject, None, body).await?,
                Some(pieces) => {
                    for (headers, piece) in pieces {
                        self.publish_one(&mut pending, &subject, Some(headers), piece)
                            .await?;
                    }
                }
            }
        }
        while let Some(ack) = pending.pop_front() {
            await_ack(Some(ack)).await?;
        }
        Ok(())
    }

    /// Publishes one message, its ack joining `pending`.
    async fn publish_one(
        &self,
        pending: &mut VecDeque<jetstream::context::PublishAckFuture>,
        subject: &str,
        headers: Option<async_nats::HeaderMap>,
        body: bytes::Bytes,
    ) -> Result<(), SinkError> {
        loop {
            if pending.len() >= WINDOW {
                await_ack(pending.pop_front()).await?;
            }
            let sent = match &headers {
                Some(h) => {
                    self.js
                        .publish_with_headers(subject.to_owned(), h.clone(), body.clone())
                        .await
                }
                None => self.js.publish(subject.to_owned(), body.clone()).await,
            };
            match sent {
                Ok(ack) => {
                    pending.push_back(ack);
                    break;
                }
                Err(e) if e.kind() == PublishErrorKind::MaxAckPending => {
                    // Every ack slot of the process is taken: settle one of ours, or wait for
                    // other streams to settle theirs.
                    if pending.is_empty() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    } else {
                        await_ack(pending.pop_front()).await?;
                    }
                }
                Err(e) => return Err(nats_error("publishing to JetStream", e)),
            }
        }
        Ok(())
    }
}

async fn await_ack(ack: Option<jetstream::context::PublishAckFuture>) -> Result<(), SinkError> {
    match ack {
        Some(ack) => ack
            .await
            .map(|_| ())
            .map_err(|e| nats_error("waiting for JetStream's ack", e)),
        None => Ok(()),
    }
}

impl Sink for NatsSink {
    fn write_batch(&self, _stream: &StreamInfo, logs: &[LogRecord]) -> Result<(), SinkError> {
        // Runs on the blocking pool: drive the publishes on the runtime, bounded in time as a whole.
        let limit = self.ack_timeout + Duration::from_secs(5);
        self.handle.block_on(async {
            match tokio::time::timeout(limit, self.publish_batch(logs)).await {
                Ok(result) => result,
                Err(_) => Err(nats_error(
                    "publishing to JetStream",
                    format!("no ack for every log of the batch within {limit:?}"),
                )),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_and_refuse_what_nats_cannot_route() {
        let t = Template::parse("stencil.{service}.logs").expect("parses");
        assert_eq!(t.filter(), "stencil.*.logs");
        assert_eq!(t.stream_subject(), "stencil.>");
        assert_eq!(
            Template::parse("logs").expect("parses").stream_subject(),
            "logs"
        );
        for bad in ["a..b", ".a", "a.", "a.x{service}", "a.*", "a.>", "a b"] {
            assert!(Template::parse(bad).is_err(), "{bad} is refused");
        }
    }

    #[test]
    fn subject_coverage_follows_nats_wildcards() {
        assert!(covers("stencil.>", "stencil.logs"));
        assert!(covers("stencil.>", "stencil.*.logs"));
        assert!(!covers("stencil.>", "stencil"));
        assert!(covers("stencil.*", "stencil.logs"));
        assert!(covers("stencil.*", "stencil.*"));
        assert!(!covers("stencil.*", "stencil.a.b"));
        assert!(covers("stencil.logs", "stencil.logs"));
        assert!(!covers("stencil.logs", "stencil.*"));
        assert!(!covers("other.>", "stencil.logs"));
        assert!(covers(">", "a.b.c"));
    }

    #[test]
    fn values_become_single_tokens() {
        let mut s = String::new();
        push_token(&mut s, Some("web.api *prod> x"));
        assert_eq!(s, "web_api__prod__x");
        let mut s = String::new();
        push_token(&mut s, Some(""));
        assert_eq!(s, "_");
    }
}
