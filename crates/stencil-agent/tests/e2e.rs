//! End to end: the real worker (core + tokio driver + tonic) against a real intake on loopback, with the
//! pattern engine producing the payloads. Faults: the intake restarted mid-stream, a wrong API key then
//! corrected, and stops while the intake is unreachable.

use std::sync::Arc;
use std::time::Duration;

mod common;

use common::assert_delivered;
use stencil_agent::{Checkpoint, Core, CoreConfig, Headers, Mailbox, Payload, State};
use stencil_codec::{BatchEncoder, Compression, Generation};
use stencil_intake::{IntakeConfig, MemorySink, RunningIntake};
use stencil_patterns::{Engine, EngineConfig, Meta};
use tokio::sync::{mpsc, watch};

const KEY: &str = "agent-key";

fn lines(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                "request {i} from 10.0.{}.{} took {} ms user=u{}",
                i % 7,
                i % 250,
                i * 3 % 997,
                i % 13
            )
        })
        .collect()
}

/// Payloads of 20 lines each, built by one engine (so later payloads reference earlier defines).
fn payloads(lines: &[String]) -> Vec<Payload> {
    let encoder = BatchEncoder::new(Generation::V3, Compression::ZSTD);
    let mut engine = Engine::new(EngineConfig::default());
    lines
        .chunks(20)
        .enumerate()
        .map(|(n, chunk)| {
            let mut datums = Vec::new();
            let mut raw = 0;
            for (i, l) in chunk.iter().enumerate() {
                let meta = Meta {
                    timestamp: 1_700_000_000_000 + (n * 20 + i) as i64,
                    tags: &["filename:/var/log/app.log"],
                    ..Meta::default()
                };
                engine.encode(l.as_bytes(), &meta, &mut datums);
                raw += l.len();
            }
            let cp = vec![Checkpoint {
                source: Arc::from("/var/log/app.log"),
                offset: ((n + 1) * 20) as u64,
            }];
            Payload::build(n as u64 + 1, datums, cp, raw, &encoder).expect("encodes")
        })
        .collect()
}

fn fast() -> CoreConfig {
    CoreConfig {
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_millis(300),
        connect_timeout: Duration::from_secs(2),
        grace_period: Duration::from_secs(5),
        recheck_interval: Duration::from_secs(60),
        ..CoreConfig::default()
    }
}

async fn intake_on(addr: &str) -> (RunningIntake, MemorySink) {
    let sink = MemorySink::new();
    let config = IntakeConfig {
        api_keys: vec![KEY.into()],
        ..IntakeConfig::default()
    };
    let intake = stencil_intake::bind(addr, config, Arc::new(sink.clone()))
        .await
        .expect("intake starts");
    (intake, sink)
}

struct Agent {
    worker: stencil_agent::Worker,
    input: Option<mpsc::Sender<Payload>>,
    key: watch::Sender<String>,
    mailbox: Mailbox,
}

fn agent(addr: std::net::SocketAddr, key: &str) -> Agent {
    let channel = stencil_agent::channel(&format!("http://{addr}"), None).expect("channel");
    let encoder = BatchEncoder::new(Generation::V3, Compression::ZSTD);
    let core = Core::new(fast(), encoder, 42);
    let (tx, rx) = mpsc::channel(4);
    let (key_tx, key_rx) = watch::channel(key.to_owned());
    let mailbox = Mailbox::new();
    let worker = stencil_agent::spawn(
        core,
        stencil_agent::Endpoints::new(vec![("intake".into(), channel)]),
        Headers::new(encoder.content_encoding()),
        key_rx,
        rx,
        mailbox.clone(),
    );
    Agent {
        worker,
        input: Some(tx),
        key: key_tx,
        mailbox,
    }
}

impl Agent {
    async fn send(&self, p: Payload) {
        if let Some(tx) = &self.input {
            tx.send(p).await.expect("worker alive");
        }
    }
    /// Closes the input; the worker stops by itself once everything is acked.
    async fn finish(
        self,
    ) -> (
        stencil_agent::WorkerReport,
        std::collections::BTreeMap<Arc<str>, u64>,
    ) {
        self.end(false).await
    }

    /// Closes the input and, with `stop`, asks the worker to stop now.
    async fn end(
        mut self,
        stop: bool,
    ) -> (
        stencil_agent::WorkerReport,
        std::collections::BTreeMap<Arc<str>, u64>,
    ) {
        self.input = None;
        if stop {
            self.worker.stop();
        }
        let report = tokio::time::timeout(Duration::from_secs(30), self.worker.join())
            .await
            .expect("the worker stops");
        (report, self.mailbox.take())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_log_is_delivered_and_checkpoints_advance_after_acks() {
    let (intake, sink) = intake_on("127.0.0.1:0").await;
    let lines = lines(400);
    let agent = agent(intake.local_addr(), KEY);
    for p in payloads(&lines) {
        agent.send(p).await;
    }
    let (report, checkpoints) = agent.finish().await;
    assert_eq!(
        sink.messages(),
        lines,
        "exactly once without faults, in order"
    );
    assert_eq!(report.stats.dangling, 0);
    assert_eq!(report.unacked, 0);
    assert_eq!(checkpoints.get("/var/log/app.log"), Some(&400));
    for (_, log) in sink.logs() {
        assert_eq!(log.tag("filename"), Some("/var/log/app.log"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_restarted_mid_stream_loses_nothing() {
    let (first, sink_a) = intake_on("127.0.0.1:0").await;
    let addr = first.local_addr();
    let lines = lines(600);
    let all = payloads(&lines);
    let agent = agent(addr, KEY);
    for p in all[..10].iter().cloned() {
        agent.send(p).await;
    }
    // Wait until the first half is acked, then restart the intake on the same port.
    for _ in 0..200 {
        if sink_a.messages().len() >= 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.shutdown().await.expect("first intake stops");
    for p in all[10..20].iter().cloned() {
        agent.send(p).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_second, sink_b) = intake_on(&addr.to_string()).await;
    for p in all[20..].iter().cloned() {
        agent.send(p).await;
    }
    let (report, checkpoints) = agent.finish().await;
    assert!(
        !sink_b.messages().is_empty(),
        "the restarted intake received the rest"
    );
    assert!(
        report.stats.rotations + report.stats.failures > 0,
        "the worker saw the restart"
    );
    let mut got = sink_a.messages();
    got.extend(sink_b.messages());
    assert_delivered(&got, &lines);
    assert_eq!(report.stats.dangling, 0);
    assert_eq!(checkpoints.get("/var/log/app.log"), Some(&600));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_api_key_pauses_then_a_corrected_key_resumes() {
    let (intake, sink) = intake_on("127.0.0.1:0").await;
    let lines = lines(100);
    let agent = agent(intake.local_addr(), "wrong-key");
    let mut state = agent.worker.state();
    for p in payloads(&lines) {
        agent.send(p).await;
    }
    tokio::time::timeout(
        Duration::from_secs(10),
        state.wait_for(|s| *s == State::Paused(stencil_agent::core::Pause::Auth)),
    )
    .await
    .expect("paused in time")
    .expect("state channel open");
    assert!(sink.messages().is_empty());
    agent.key.send(KEY.into()).expect("worker listening");
    let (report, _) = agent.finish().await;
    assert_eq!(sink.messages(), lines);
    assert_eq!(report.unacked, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_while_the_intake_is_unreachable_is_clean() {
    // Nothing listens on this port: the worker cycles through connecting and backoff.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let agent = agent(port, KEY);
    let mut state = agent.worker.state();
    for p in payloads(&lines(40)) {
        agent.send(p).await;
    }
    tokio::time::timeout(
        Duration::from_secs(10),
        state.wait_for(|s| *s == State::Backoff),
    )
    .await
    .expect("backoff in time")
    .expect("state channel open");
    let started = std::time::Instant::now();
    let (report, checkpoints) = agent.end(true).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stops at once from backoff"
    );
    assert_eq!(report.stats.released, 0);
    assert!(
        checkpoints.is_empty(),
        "nothing released without an ack: unacked data is re-read after a restart"
    );
}
