//! The tokio driver of a stream worker: it turns I/O into [`Event`]s for the [`Core`] and carries out its
//! [`Effect`]s, with no protocol logic of its own. One task per worker; one task per stream epoch reads
//! acks. Dropping a stream's sender half-closes it; aborting its task cancels it.

use std::collections::HashMap;
use std::time::Duration;

use stencil_proto::stateful::stateful_intake_client::StatefulIntakeClient;
use stencil_proto::stateful::StatefulBatch;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use stencil_codec::extensions::{self, Extensions};

use crate::checkpoint::Mailbox;
use crate::core::{Core, CoreStats, Effect, Epoch, Event, Failure, Notice, State};
use crate::endpoints::Endpoints;
use crate::payload::Payload;

/// Headers sent when each stream opens (PROTOCOL.md §3).
#[derive(Debug, Clone)]
pub struct Headers {
    /// `dd-content-encoding`, taken from the encoder that builds the payloads.
    pub content_encoding: &'static str,
    /// `dd-evp-origin`.
    pub origin: String,
    /// `dd-evp-origin-version`.
    pub origin_version: String,
    /// `dd-protocol`, if configured.
    pub protocol: Option<String>,
    /// `stencil-extensions`: the wire extensions to ask for (not sent when empty).
    pub extensions: Extensions,
    /// Extra headers; they never override the ones above.
    pub extra: Vec<(String, String)>,
}

impl Headers {
    /// Stencil's defaults for a codec.
    pub fn new(content_encoding: &'static str) -> Self {
        Headers {
            content_encoding,
            origin: "stencil-agent".into(),
            origin_version: env!("CARGO_PKG_VERSION").into(),
            protocol: None,
            extensions: Extensions::default(),
            extra: Vec::new(),
        }
    }
}

/// What a worker hands back when it stops.
#[derive(Debug, Clone, Copy)]
pub struct WorkerReport {
    /// The core's counters.
    pub stats: CoreStats,
    /// Payloads still unacked at the stop (they will be re-read after a restart).
    pub unacked: usize,
    /// The wire of the last stream (`v3`, or the extensions it agreed).
    pub wire: &'static str,
    /// The last stream's sources sent as raw text and structured (see [`Core::source_forms`]).
    pub sources: (usize, usize),
}

/// A running worker.
pub struct Worker {
    stop: CancellationToken,
    join: JoinHandle<WorkerReport>,
    state: watch::Receiver<State>,
}

impl Worker {
    /// Asks the worker to stop now, gracefully: from `Active` it sends what it holds and waits for acks
    /// within the grace period; from `Connecting`, `Backoff` or `Paused` it stops at once (unacked logs
    /// are re-read after a restart). To deliver everything instead, close the input: the worker stops by
    /// itself once every payload is acked.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// A token that stops the worker as [`Worker::stop`] does, usable after the worker was moved.
    pub fn stopper(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// The worker's state, as it changes.
    pub fn state(&self) -> watch::Receiver<State> {
        self.state.clone()
    }

    /// Waits for the worker to finish.
    pub async fn join(self) -> WorkerReport {
        match self.join.await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "stream worker task failed");
                WorkerReport {
                    stats: CoreStats::default(),
                    unacked: 0,
                    wire: "v3",
                    sources: (0, 0),
                }
            }
        }
    }
}

struct Stream {
    tx: Option<mpsc::Sender<StatefulBatch>>,
    task: JoinHandle<()>,
    /// The endpoint it opened on.
    endpoint: usize,
    /// Whether an ack from it has marked its endpoint up since the stream opened.
    acked: bool,
}

/// Starts a worker: `core` over `endpoints` (each stream on the one [`Endpoints::pick`] chooses),
/// reading payloads from `input`, posting released checkpoints to `mailbox`. `api_key` is read at
/// every open; a change is an `ApiKeyReloaded` event.
pub fn spawn(
    core: Core,
    endpoints: Endpoints,
    headers: Headers,
    api_key: watch::Receiver<String>,
    input: mpsc::Receiver<Payload>,
    mailbox: Mailbox,
) -> Worker {
    let stop = CancellationToken::new();
    let (state_tx, state_rx) = watch::channel(core.state());
    let join = tokio::spawn(run(
        core,
        endpoints,
        headers,
        api_key,
        input,
        mailbox,
        stop.clone(),
        state_tx,
    ));
    Worker {
        stop,
        join,
        state: state_rx,
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    mut core: Core,
    endpoints: Endpoints,
    headers: Headers,
    mut api_key: watch::Receiver<String>,
    mut input: mpsc::Receiver<Payload>,
    mailbox: Mailbox,
    stop: CancellationToken,
    state: watch::Sender<State>,
) -> WorkerReport {
    let (events_tx, mut events) = mpsc::unbounded_channel::<Event>();
    let pipeline = core.config().pipeline.to_string();
    metrics::counter!("stencil_agent_logs_acked_total", "pipeline" => pipeline.clone()).absolute(0);
    let mut streams: HashMap<Epoch, Stream> = HashMap::new();
    let mut input_open = true;
    let mut stop_sent = false;
    let mut effects = core.handle(Event::Start, tokio::time::Instant::now().into_std());
    loop {
        for effect in effects.drain(..) {
            match effect {
                Effect::Open(epoch) => {
                    let (tx, rx) = mpsc::channel(256);
                    let key = api_key.borrow().clone();
                    let Some((endpoint, channel)) =
                        endpoints.pick(tokio::time::Instant::now().into_std())
                    else {
                        tracing::error!("no endpoint to open a stream on");
                        continue;
                    };
                    let task = tokio::spawn(stream_task(
                        epoch,
                        StatefulIntakeClient::new(channel),
                        rx,
                        headers.clone(),
                        key,
                        events_tx.clone(),
                    ));
                    if let Some(old) = streams.insert(
                        epoch,
                        Stream {
                            tx: Some(tx),
                            task,
                            endpoint,
                            acked: false,
                        },
                    ) {
                        endpoints.released(old.endpoint);
                    }
                }
                Effect::Send {
                    epoch,
                    batch_id,
                    data,
                } => {
                    if let Some(tx) = streams.get(&epoch).and_then(|s| s.tx.as_ref()) {
                        let batch = StatefulBatch { batch_id, data };
                        if tx.try_send(batch).is_err() {
                            tracing::warn!(
                                epoch,
                                batch_id,
                                "stream send queue unavailable; the stream will be replaced"
                            );
                        }
                    }
                }
                Effect::HalfClose(epoch) => {
                    if let Some(mut s) = streams.remove(&epoch) {
                        endpoints.released(s.endpoint);
                        s.tx = None;
                        // Let the old stream finish in the background, bounded by the close timeout.
                        tokio::spawn(async move {
                            if tokio::time::timeout(Duration::from_secs(5), &mut s.task)
                                .await
                                .is_err()
                            {
                                s.task.abort();
                            }
                        });
                    }
                }
                Effect::Cancel(epoch) => {
                    if let Some(s) = streams.remove(&epoch) {
                        endpoints.released(s.endpoint);
                        s.task.abort();
                    }
                }
                Effect::Release {
                    checkpoints, logs, ..
                } => {
                    mailbox.post(&checkpoints);
                    mailbox.add_acked(logs as u64);
                    metrics::counter!("stencil_agent_logs_acked_total", "pipeline" => pipeline.clone())
                        .increment(logs as u64);
                }
                Effect::Dropped {
                    seq,
                    checkpoints,
                    logs,
                    reason,
                } => {
                    mailbox.post(&checkpoints);
                    metrics::counter!(crate::metrics::LOGS_DROPPED, "reason" => "poison")
                        .increment(logs as u64);
                    tracing::error!(
                        seq,
                        logs,
                        reason,
                        "dropped logs the intake rejects even alone and as raw text (poison)"
                    );
                }
                Effect::Notice(notice) => log_notice(&notice),
                Effect::State(s) => {
                    let previous = *state.borrow();
                    metrics::gauge!("stencil_agent_stream_state", "state" => previous.name(), "pipeline" => pipeline.clone())
                        .set(0.0);
                    metrics::gauge!("stencil_agent_stream_state", "state" => s.name(), "pipeline" => pipeline.clone())
                        .set(1.0);
                    let _ = state.send(s);
                }
            }
        }
        publish(&core, &pipeline);
        if core.state() == State::Stopped {
            break;
        }
        // Input closed and everything acked: nothing is left to do, so stop gracefully.
        if !input_open && !stop_sent && core.inflight().0 == 0 {
            stop_sent = true;
            effects = core.handle(Event::Stop, tokio::time::Instant::now().into_std());
            continue;
        }
        let deadline = core.next_deadline();
        let now = || tokio::time::Instant::now().into_std();
        tokio::select! {
            biased;
            Some(event) = events.recv() => {
                observe_endpoint(&endpoints, &mut streams, &event);
                effects = core.handle(event, now());
            }
            _ = stop.cancelled(), if !stop_sent => {
                stop_sent = true;
                effects = core.handle(Event::Stop, now());
            }
            Ok(()) = api_key.changed() => effects = core.handle(Event::ApiKeyReloaded, now()),
            next = input.recv(), if input_open && core.wants_input() => {
                effects = match next {
                    Some(p) => core.handle(Event::Payload(p), now()),
                    None => {
                        input_open = false;
                        core.handle(Event::InputClosed, now())
                    }
                };
            }
            _ = sleep_until(deadline.map(|(at, _)| at)) => {
                let timer = deadline.map(|(_, t)| t);
                effects = timer.map(|t| core.handle(Event::Timer(t), now())).unwrap_or_default();
            }
        }
    }
    for (_, s) in streams.drain() {
        endpoints.released(s.endpoint);
        s.task.abort();
    }
    WorkerReport {
        stats: core.stats(),
        unacked: core.inflight().0,
        wire: core.wire_name(),
        sources: core.source_forms(),
    }
}

/// Charges a stream's end to its endpoint when the endpoint failed, and marks the endpoint up on the
/// stream's first ack.
fn observe_endpoint(endpoints: &Endpoints, streams: &mut HashMap<Epoch, Stream>, event: &Event) {
    match event {
        Event::Ended(epoch, failure) => {
            if let Some(s) = streams.get(epoch) {
                if crate::endpoints::is_endpoint_failure(failure) {
                    endpoints.failed(s.endpoint, std::time::Instant::now(), failure);
                }
            }
        }
        Event::Ack(epoch, _, _) => {
            if let Some(s) = streams.get_mut(epoch).filter(|s| !s.acked) {
                s.acked = true;
                endpoints.succeeded(s.endpoint);
            }
        }
        _ => {}
    }
}

/// Publishes the core's counters and gauges (TRANSPORT.md §12 names), labelled with its pipeline.
fn publish(core: &Core, pipeline: &str) {
    let s = core.stats();
    let p = || ("pipeline", pipeline.to_owned());
    for (name, value) in [
        ("stencil_agent_batches_sent_total", s.batches_sent),
        ("stencil_agent_batch_wire_bytes_total", s.bytes_sent),
        ("stencil_agent_payloads_acked_total", s.released),
        ("stencil_agent_payloads_replayed_total", s.replayed),
        ("stencil_agent_dangling_references_total", s.dangling),
        ("stencil_agent_stream_failures_total", s.failures),
        ("stencil_agent_stream_rotations_total", s.rotations),
        ("stencil_agent_state_rotations_total", s.state_rotations),
        ("stencil_agent_extension_batches_total", s.ext_batches),
        ("stencil_agent_extension_wire_bytes_total", s.ext_bytes),
        ("stencil_agent_extension_streams_total", s.ext_streams),
        ("stencil_agent_json_documents_as_text_total", s.json_as_text),
        ("stencil_agent_poison_steps_total", s.poison_steps),
    ] {
        metrics::counter!(name, &[p()]).absolute(value);
    }
    let (payloads, bytes) = core.inflight();
    metrics::gauge!("stencil_agent_inflight_payloads", &[p()]).set(payloads as f64);
    metrics::gauge!("stencil_agent_inflight_bytes", &[p()]).set(bytes as f64);
    metrics::gauge!("stencil_agent_stream_error_count", &[p()]).set(f64::from(core.error_count()));
    let (raw, structured) = core.source_forms();
    for (form, n) in [("raw", raw), ("structured", structured)] {
        metrics::gauge!(
            "stencil_agent_stream_sources",
            &[p(), ("form", form.to_owned())]
        )
        .set(n as f64);
    }
}

async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

fn failure(status: tonic::Status) -> Failure {
    Failure {
        code: Some(status.code() as i32),
        message: status.message().to_owned(),
    }
}

async fn stream_task(
    epoch: Epoch,
    mut client: StatefulIntakeClient<Channel>,
    rx: mpsc::Receiver<StatefulBatch>,
    headers: Headers,
    api_key: String,
    events: mpsc::UnboundedSender<Event>,
) {
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    let md = request.metadata_mut();
    for (k, v) in &headers.extra {
        if let (Ok(name), Ok(value)) = (
            k.parse::<tonic::metadata::MetadataKey<_>>(),
            MetadataValue::try_from(v.as_str()),
        ) {
            md.insert(name, value);
        }
    }
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = MetadataValue::try_from(value) {
            md.insert(name, v);
        }
    };
    set("dd-api-key", &api_key);
    set("dd-content-encoding", headers.content_encoding);
    set("dd-evp-origin", &headers.origin);
    set("dd-evp-origin-version", &headers.origin_version);
    if let Some(p) = &headers.protocol {
        set("dd-protocol", p);
    }
    if !headers.extensions.is_empty() {
        set(extensions::HEADER, &headers.extensions.to_string());
    }
    // Send first: many servers (grpc-go's among them) send their response headers only with the first
    // ack, so waiting for them before batch 0 would never end. The batches queue in `rx` and flow as
    // soon as the connection is up; an open that fails ends the stream like any other failure.
    let _ = events.send(Event::Opened(epoch));
    let mut acks = match client.stateful_stream(request).await {
        Ok(resp) => {
            let echo = resp
                .metadata()
                .get(extensions::HEADER)
                .and_then(|v| v.to_str().ok())
                .map(Extensions::parse)
                .unwrap_or_default();
            let _ = events.send(Event::Echo(epoch, echo));
            resp.into_inner()
        }
        Err(status) => {
            let _ = events.send(Event::Ended(epoch, failure(status)));
            return;
        }
    };
    loop {
        match acks.message().await {
            Ok(Some(ack)) => {
                let _ = events.send(Event::Ack(epoch, ack.batch_id, ack.status));
            }
            Ok(None) => {
                let _ = events.send(Event::Ended(epoch, Failure::ok()));
                return;
            }
            Err(status) => {
                let _ = events.send(Event::Ended(epoch, failure(status)));
                return;
            }
        }
    }
}

/// A lazily connected channel to `url` with the protocol's keepalive (30 s ping, 5 s timeout, also
/// without streams) and no gRPC message compression. `ca_pem` adds a custom CA for TLS.
pub fn channel(url: &str, ca_pem: Option<&[u8]>) -> Result<Channel, tonic::transport::Error> {
    tls_channel(url, ca_pem, None)
}

/// [`channel`], plus a client certificate and key (PEM) for an intake that asks for one (mutual TLS).
pub fn tls_channel(
    url: &str,
    ca_pem: Option<&[u8]>,
    identity: Option<(&[u8], &[u8])>,
) -> Result<Channel, tonic::transport::Error> {
    let mut endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())?
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true)
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("stencil-agent/", env!("CARGO_PKG_VERSION")))?;
    if url.starts_with("https://") {
        let mut tls = tonic::transport::ClientTlsConfig::new().with_native_roots();
        if let Some(ca) = ca_pem {
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = identity {
            tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        endpoint = endpoint.tls_config(tls)?;
    }
    Ok(endpoint.connect_lazy())
}

/// Logs what the core had to say.
fn log_notice(notice: &Notice) {
    match notice {
        Notice::StreamFailed {
            code,
            message,
            state,
        } => tracing::warn!(code = ?code, message = %message, state, "stream failed"),
        Notice::ExtensionsUnavailable(error) => {
            tracing::warn!(error = %error, "wire extensions unavailable; staying on v3")
        }
        Notice::ExtensionEncodingFailed(error) => tracing::error!(
            error = %error,
            "extension encoding failed; replacing the stream with plain v3"
        ),
        Notice::Dangling(refs) => tracing::error!(
            refs,
            "a payload references ids no define resolves; sending its logs raw"
        ),
        Notice::SnapshotRejected => {
            tracing::error!("the snapshot keeps being rejected; pausing")
        }
        Notice::SentRaw { reason } => {
            tracing::warn!(reason = %reason, "sending a rejected log as raw text")
        }
    }
}
