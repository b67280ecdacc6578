//! Several intakes for one agent: which endpoint each new stream opens on, and which endpoints are
//! down.
//!
//! Intakes keep state per stream only, so a fleet scales them out behind several addresses. Each
//! pipeline's stream opens on the healthy endpoint with the fewest streams of this agent. A stream that
//! ends with a failure of the endpoint (transport error, `UNAVAILABLE` and its kin) marks it down; the
//! core's own backoff then opens the next stream, which goes to a healthy endpoint, and replays its
//! unacked payloads there (re-encoded, as on any new stream).
//!
//! A down endpoint comes back through a probe ([`Endpoints::spawn_probes`]): once its down time has
//! passed (doubling per consecutive failure, up to [`MAX_DOWN`]), a gRPC health check is sent to it;
//! any gRPC answer (even "unimplemented", from an intake without the health service) marks it healthy,
//! and it takes new streams again (each stream rotates at its lifetime, so load comes back to it). An
//! ack from it resets the doubling. When no endpoint is healthy, the one whose down time ends first is
//! tried.
//!
//! This is the driver's concern, not the core's: the core knows streams, not addresses.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::transport::Channel;

use crate::core::Failure;

/// The first down time after a failure; it doubles per consecutive failure.
const FIRST_DOWN: Duration = Duration::from_secs(1);
/// The longest an endpoint is left out after failures.
pub const MAX_DOWN: Duration = Duration::from_secs(30);

/// Metric: streams open on each endpoint.
const STREAMS: &str = "stencil_agent_endpoint_streams";
/// Metric: 1 while an endpoint takes new streams, 0 while it is left out after failures.
const UP: &str = "stencil_agent_endpoint_up";
/// Metric: stream failures charged to each endpoint.
const FAILURES: &str = "stencil_agent_endpoint_failures_total";

struct Endpoint {
    url: String,
    channel: Channel,
    streams: usize,
    failures: u32,
    down_until: Option<Instant>,
}

/// What `/ready` and the summary show of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointStatus {
    /// The endpoint's URL.
    pub url: String,
    /// Whether it takes new streams now.
    pub up: bool,
    /// Streams of this agent open on it.
    pub streams: usize,
    /// Consecutive failures (0 after an ack).
    pub failures: u32,
}

/// The agent's endpoints, shared by every pipeline.
#[derive(Clone)]
pub struct Endpoints {
    inner: Arc<Mutex<Vec<Endpoint>>>,
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.status().iter().map(|s| &s.url))
            .finish()
    }
}

/// Whether a stream's end says that its endpoint failed (rather than the batch, or a clean end).
pub fn is_endpoint_failure(f: &Failure) -> bool {
    use tonic::Code;
    match f.code {
        None => true,
        Some(c) => matches!(
            Code::from_i32(c),
            Code::Unavailable
                | Code::Unknown
                | Code::Internal
                | Code::Cancelled
                | Code::DeadlineExceeded
        ),
    }
}

impl Endpoints {
    /// The endpoints, in the order given: `(url, channel)`.
    pub fn new(list: Vec<(String, Channel)>) -> Self {
        let endpoints: Vec<Endpoint> = list
            .into_iter()
            .map(|(url, channel)| Endpoint {
                url,
                channel,
                streams: 0,
                failures: 0,
                down_until: None,
            })
            .collect();
        for e in &endpoints {
            metrics::gauge!(UP, "endpoint" => e.url.clone()).set(1.0);
            metrics::gauge!(STREAMS, "endpoint" => e.url.clone()).set(0.0);
            metrics::counter!(FAILURES, "endpoint" => e.url.clone()).absolute(0);
        }
        Endpoints {
            inner: Arc::new(Mutex::new(endpoints)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Endpoint>> {
        // A panic while holding this lock leaves counters only: keep going with them.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The endpoint a new stream opens on (its index and channel): the healthy endpoint with the fewest
    /// streams (the first in order on a tie), or, when none is healthy, the one whose down time ends
    /// first. `None` only for an empty list.
    pub fn pick(&self, now: Instant) -> Option<(usize, Channel)> {
        let mut list = self.lock();
        let chosen = list
            .iter()
            .enumerate()
            .filter(|(_, e)| e.down_until.is_none())
            .min_by_key(|(i, e)| (e.streams, *i))
            .or_else(|| {
                list.iter()
                    .enumerate()
                    .min_by_key(|(_, e)| e.down_until.unwrap_or(now))
            })
            .map(|(i, _)| i)?;
        let e = &mut list[chosen];
        e.streams += 1;
        metrics::gauge!(STREAMS, "endpoint" => e.url.clone()).set(e.streams as f64);
        Some((chosen, e.channel.clone()))
    }

    /// A stream on endpoint `i` closed.
    pub fn released(&self, i: usize) {
        if let Some(e) = self.lock().get_mut(i) {
            e.streams = e.streams.saturating_sub(1);
            metrics::gauge!(STREAMS, "endpoint" => e.url.clone()).set(e.streams as f64);
        }
    }

    /// A stream on endpoint `i` failed in a way that blames the endpoint: leave it out for a while.
    pub fn failed(&self, i: usize, now: Instant, why: &Failure) {
        let n = self.len();
        if let Some(e) = self.lock().get_mut(i) {
            e.failures = e.failures.saturating_add(1);
            let down = FIRST_DOWN
                .saturating_mul(1u32 << (e.failures - 1).min(16))
                .min(MAX_DOWN);
            e.down_until = Some(now + down);
            metrics::counter!(FAILURES, "endpoint" => e.url.clone()).increment(1);
            metrics::gauge!(UP, "endpoint" => e.url.clone()).set(0.0);
            if n > 1 {
                tracing::warn!(endpoint = %e.url, failures = e.failures, down_secs = down.as_secs_f64(), error = %why.message, "endpoint failed; new streams go to the others meanwhile");
            }
        }
    }

    /// Endpoint `i` acked a batch: it is healthy, and its failures are forgotten.
    pub fn succeeded(&self, i: usize) {
        if let Some(e) = self.lock().get_mut(i) {
            if e.failures > 0 || e.down_until.is_some() {
                e.failures = 0;
                e.down_until = None;
                metrics::gauge!(UP, "endpoint" => e.url.clone()).set(1.0);
            }
        }
    }

    /// Endpoint `i` answered a probe: it takes new streams again (its failure count stays until an
    /// ack, so that an endpoint that answers probes but fails streams is left out longer each time).
    fn answered(&self, i: usize) {
        if let Some(e) = self.lock().get_mut(i) {
            if e.down_until.take().is_some() {
                metrics::gauge!(UP, "endpoint" => e.url.clone()).set(1.0);
                tracing::info!(endpoint = %e.url, "endpoint answers again; it takes new streams");
            }
        }
    }

    /// Down endpoints whose down time has passed: (index, channel).
    fn due(&self, now: Instant) -> Vec<(usize, Channel)> {
        self.lock()
            .iter()
            .enumerate()
            .filter(|(_, e)| e.down_until.is_some_and(|t| t <= now))
            .map(|(i, e)| (i, e.channel.clone()))
            .collect()
    }

    /// Starts the probes of down endpoints (see the module doc); abort the task to stop them.
    pub fn spawn_probes(&self) -> tokio::task::JoinHandle<()> {
        let endpoints = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                for (i, channel) in endpoints.due(Instant::now()) {
                    match probe(channel).await {
                        Ok(()) => endpoints.answered(i),
                        Err(why) => endpoints.failed(i, Instant::now(), &why),
                    }
                }
            }
        })
    }

    /// How many endpoints there are.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every endpoint's status, in order.
    pub fn status(&self) -> Vec<EndpointStatus> {
        self.lock()
            .iter()
            .map(|e| EndpointStatus {
                url: e.url.clone(),
                up: e.down_until.is_none(),
                streams: e.streams,
                failures: e.failures,
            })
            .collect()
    }
}

/// One gRPC health check, bounded in time. Any gRPC answer is an answer: an intake without the health
/// service says "unimplemented", which still shows that it is there.
async fn probe(channel: Channel) -> Result<(), Failure> {
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let mut client = HealthClient::new(channel);
    let check = client.check(HealthCheckRequest {
        service: String::new(),
    });
    match tokio::time::timeout(Duration::from_secs(5), check).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) => {
            let failure = Failure {
                code: Some(status.code() as i32),
                message: format!("health probe: {}", status.message()),
            };
            if is_endpoint_failure(&failure) {
                Err(failure)
            } else {
                Ok(())
            }
        }
        Err(_) => Err(Failure {
            code: None,
            message: "health probe: no answer within 5 s".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(n: usize) -> Endpoints {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _guard = rt.enter();
        Endpoints::new(
            (0..n)
                .map(|i| {
                    let url = format!("http://127.0.0.1:{}", 1000 + i);
                    let ch = tonic::transport::Endpoint::from_shared(url.clone())
                        .expect("url")
                        .connect_lazy();
                    (url, ch)
                })
                .collect(),
        )
    }

    fn unavailable() -> Failure {
        Failure {
            code: Some(tonic::Code::Unavailable as i32),
            message: "down".into(),
        }
    }

    #[test]
    fn streams_spread_and_leave_a_failed_endpoint_until_it_is_back() {
        let e = endpoints(3);
        let t0 = Instant::now();
        let picks: Vec<usize> = (0..6).map(|_| e.pick(t0).expect("pick").0).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2], "spread by stream count");
        e.failed(1, t0, &unavailable());
        e.released(1);
        assert_ne!(
            e.pick(t0).expect("pick").0,
            1,
            "a failed endpoint is left out"
        );
        assert!(!e.status()[1].up);
        // Its down time passes: it is due for a probe, but not picked while others are healthy.
        let later = t0 + FIRST_DOWN + Duration::from_millis(1);
        let due: Vec<usize> = e.due(later).iter().map(|(i, _)| *i).collect();
        assert_eq!(due, [1]);
        assert_ne!(e.pick(later).expect("pick").0, 1);
        // It answers a probe: it takes new streams again (it has the fewest).
        e.answered(1);
        assert_eq!(e.pick(later).expect("pick").0, 1);
        // Consecutive failures double the down time, bounded; an ack clears them.
        for _ in 0..10 {
            e.failed(2, t0, &unavailable());
        }
        assert!(e.due(t0 + MAX_DOWN - Duration::from_millis(1)).is_empty());
        assert_eq!(e.due(t0 + MAX_DOWN).len(), 1);
        e.succeeded(2);
        assert!(e.status()[2].up && e.status()[2].failures == 0);
    }

    #[test]
    fn with_every_endpoint_down_the_one_back_first_is_tried() {
        let e = endpoints(2);
        let t0 = Instant::now();
        e.failed(0, t0, &unavailable());
        e.failed(0, t0, &unavailable()); // 2 s
        e.failed(1, t0, &unavailable()); // 1 s
        assert_eq!(e.pick(t0).expect("pick").0, 1);
    }

    #[test]
    fn only_endpoint_failures_blame_the_endpoint() {
        assert!(is_endpoint_failure(&unavailable()));
        assert!(is_endpoint_failure(&Failure {
            code: None,
            message: "reset".into()
        }));
        for c in [
            tonic::Code::Ok,
            tonic::Code::InvalidArgument,
            tonic::Code::Unauthenticated,
        ] {
            assert!(!is_endpoint_failure(&Failure {
                code: Some(c as i32),
                message: String::new()
            }));
        }
    }
}
