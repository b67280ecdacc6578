//! What runs around a pipeline's readers: one stream worker per pipeline over the shared endpoints,
//! the registry's flush task, health reporting, and the watchdog that gives a run up (a shutdown timeout,
//! a refused key, or a `--once` run that stalls). It waits for the last ack and adds up the summary.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stencil_codec::{BatchEncoder, Generation};
use tokio::sync::{mpsc, watch};

use super::summary::{ReadStats, Summary};
use super::{seed, ShipError, ShipOptions};
use crate::checkpoint::Mailbox;
use crate::core::{Core, CoreConfig};
use crate::driver::Headers;
use crate::endpoints::Endpoints;
use crate::payload::Payload;
use crate::registry::Registry;
use crate::sources::Source;

/// A reading side: fills one pipeline's payload channel (runs on a blocking thread), counting the
/// lines it reads in the shared counter.
pub(super) type Producer = Box<
    dyn FnOnce(
            ShipOptions,
            Arc<[Source]>,
            mpsc::Sender<Payload>,
            Arc<AtomicU64>,
        ) -> Result<ReadStats, ShipError>
        + Send,
>;

/// Aborts a background task when dropped.
pub(crate) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs one stream worker per producer (all over `endpoints`) and the registry, and waits for the last ack.
pub(super) async fn run_pipeline(
    options: ShipOptions,
    sources: Arc<[Source]>,
    endpoints: Endpoints,
    api_key: String,
    mailbox: Mailbox,
    registry: Option<Arc<Mutex<Registry>>>,
    producers: Vec<Producer>,
) -> Result<Summary, ShipError> {
    let started = Instant::now();
    crate::metrics::describe();
    let stop_registry = tokio_util::sync::CancellationToken::new();
    let registry_task = match &registry {
        Some(reg) => {
            reg.lock()
                .map_err(|_| ShipError::RegistryPoisoned)?
                .persist()
                .map_err(ShipError::Checkpoints)?;
            let every = if options.checkpoint_interval.is_zero() {
                Duration::from_secs(1)
            } else {
                options.checkpoint_interval
            };
            Some(tokio::spawn(Registry::run(
                reg.clone(),
                mailbox.clone(),
                every,
                stop_registry.clone(),
            )))
        }
        None => None,
    };
    let encoder = BatchEncoder::new(Generation::V3, options.compression);
    let (_key_tx, key_rx) = watch::channel(api_key);
    // Probes bring endpoints that failed back into use; they end with the pipelines.
    let _probes = AbortOnDrop(endpoints.spawn_probes());
    let mut workers = Vec::new();
    let mut readers = Vec::new();
    let read_lines: Arc<AtomicU64> = Arc::default();
    for (i, producer) in producers.into_iter().enumerate() {
        // One finished payload waits while the reader builds the next: enough to keep both threads
        // busy. Each queued payload holds a whole batch of datums (about 1 MiB for 1,000 lines of
        // new templates), so a deeper queue only held memory when encoding for the wire is the slower
        // side (`bench cardinality`: 4 queued held 4-5 MiB more peak RSS for the same throughput).
        let (tx, rx) = mpsc::channel(1);
        let core = Core::new(
            CoreConfig {
                extensions: options.extensions,
                pipeline: i,
                ..options.core.clone()
            },
            encoder,
            seed() ^ (i as u64).wrapping_mul(0x9E37_79B9),
        );
        let worker = crate::driver::spawn(
            core,
            endpoints.clone(),
            Headers {
                extensions: options.extensions,
                ..Headers::new(encoder.content_encoding())
            },
            key_rx.clone(),
            rx,
            mailbox.clone(),
        );
        if let Some(health) = options.health.clone() {
            if let Ok(mut h) = health.lock() {
                h.resize(i + 1, crate::core::State::Idle);
            }
            let mut states = worker.state();
            tokio::spawn(async move {
                loop {
                    if let Ok(mut h) = health.lock() {
                        if let Some(slot) = h.get_mut(i) {
                            *slot = *states.borrow();
                        }
                    }
                    if states.changed().await.is_err() {
                        break;
                    }
                }
            });
        }
        let (opts, srcs, read) = (options.clone(), sources.clone(), read_lines.clone());
        readers.push(tokio::task::spawn_blocking(move || {
            producer(opts, srcs, tx, read)
        }));
        workers.push(worker);
    }
    let states: Vec<watch::Receiver<crate::core::State>> =
        workers.iter().map(|w| w.state()).collect();
    let give_up = tokio_util::sync::CancellationToken::new();
    let reason: Arc<Mutex<Option<String>>> = Arc::default();
    let watchdog = tokio::spawn(watch_for_giving_up(
        options.abort.clone(),
        options.stall_timeout,
        states,
        mailbox.clone(),
        give_up.clone(),
        reason.clone(),
    ));
    // Once given up, the workers stop at once (and their inputs close, which ends the readers).
    let stopper = {
        let give_up = give_up.clone();
        let stops: Vec<_> = workers.iter().map(|w| w.stopper()).collect();
        tokio::spawn(async move {
            give_up.cancelled().await;
            for stop in stops {
                stop.cancel();
            }
        })
    };
    let mut read = ReadStats::default();
    let mut first_error = None;
    for r in readers {
        match r
            .await
            .map_err(|e| ShipError::Task {
                task: "a reader",
                error: e.to_string(),
            })
            .and_then(|x| x)
        {
            Ok(s) => read.add(&s),
            Err(e) => {
                if !give_up.is_cancelled() {
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    let mut summary = Summary::default();
    for w in workers {
        // A run given up does not wait on a stalled stream: what is unacked stays unacked.
        let report = if give_up.is_cancelled() {
            match tokio::time::timeout(Duration::from_secs(5), w.join()).await {
                Ok(report) => report,
                Err(_) => continue,
            }
        } else {
            let stop = give_up.clone();
            let join = w.join();
            tokio::pin!(join);
            tokio::select! {
                report = &mut join => report,
                _ = stop.cancelled() => match tokio::time::timeout(Duration::from_secs(5), join).await {
                    Ok(report) => report,
                    Err(_) => continue,
                },
            }
        };
        if summary.wire.is_empty() {
            summary.wire = report.wire.to_string();
        } else if summary.wire != report.wire {
            summary.wire = "mixed".into();
        }
        summary.raw_sources += report.sources.0 as u64;
        summary.structured_sources += report.sources.1 as u64;
        summary.wire_bytes += report.stats.bytes_sent;
        summary.replayed += report.stats.replayed;
        summary.dropped += report.stats.dropped_logs;
    }
    watchdog.abort();
    stopper.abort();
    if give_up.is_cancelled() {
        summary.gave_up = reason.lock().ok().and_then(|r| r.clone());
        summary.unacked = read_lines
            .load(Ordering::Relaxed)
            .saturating_sub(mailbox.acked());
    }
    stop_registry.cancel();
    if let Some(task) = registry_task {
        task.await.map_err(|e| ShipError::Task {
            task: "the checkpoint registry",
            error: e.to_string(),
        })?;
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    summary.lines = read.lines;
    summary.logs = read.logs;
    summary.excluded = read.excluded;
    summary.raw_bytes = read.raw;
    summary.zstd1_bytes = read.zstd1;
    summary.seconds = started.elapsed().as_secs_f64();
    summary.patterns = read.patterns;
    summary.split_lines = read.split;
    summary.dropped += read.dropped;
    summary.skipped_files = read.skipped_files;
    Ok(summary)
}

/// Cancels `give_up` (with the reason) when `abort` is cancelled, when a stream is refused its API key
/// and `stall` is set, or when nothing was acked for `stall` while some stream is not connected.
async fn watch_for_giving_up(
    abort: Option<tokio_util::sync::CancellationToken>,
    stall: Option<Duration>,
    states: Vec<watch::Receiver<crate::core::State>>,
    mailbox: Mailbox,
    give_up: tokio_util::sync::CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
) {
    use crate::core::{Pause, State};
    let abort = abort.unwrap_or_default();
    let mut acked = mailbox.acked();
    let mut progress_at = Instant::now();
    let why = loop {
        tokio::select! {
            _ = abort.cancelled() => break "the shutdown timeout ran out before every line was acked".to_string(),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        let Some(stall) = stall else { continue };
        let now_states: Vec<State> = states.iter().map(|s| *s.borrow()).collect();
        if now_states.contains(&State::Paused(Pause::Auth)) {
            break "the intake refused the API key (UNAUTHENTICATED or PERMISSION_DENIED): check --api-key".to_string();
        }
        let now_acked = mailbox.acked();
        let all_connected = now_states.iter().all(|s| {
            matches!(
                s,
                State::Active | State::Draining | State::Stopped | State::Closing
            )
        });
        if now_acked != acked || all_connected {
            acked = now_acked;
            progress_at = Instant::now();
        } else if progress_at.elapsed() >= stall {
            break format!(
                "nothing was acked for {} s and the intake is not reachable or keeps refusing batches (see the errors above)",
                stall.as_secs()
            );
        }
    };
    if let Ok(mut r) = reason.lock() {
        *r = Some(why);
    }
    give_up.cancel();
}
