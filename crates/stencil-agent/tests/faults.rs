//! Fault tests through a TCP proxy between the real worker and a real intake: connections reset every
//! few hundred milliseconds, acks stalled past the drain timeout, a rotation every second under load, and
//! a stop while draining. Every log must arrive at least once, in order, with duplicates only from
//! replays of unacked payloads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use common::assert_delivered;
use stencil_agent::{Checkpoint, Core, CoreConfig, Headers, Mailbox, Payload, State};
use stencil_codec::{BatchEncoder, Compression, Generation};
use stencil_intake::{IntakeConfig, MemorySink};
use stencil_patterns::{Engine, EngineConfig, Meta};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// A TCP proxy that can reset every connection, or stall the intake → agent direction (acks).
struct Proxy {
    addr: std::net::SocketAddr,
    stalled: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: std::net::SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stalled = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (c, s) = (conns.clone(), stalled.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let stalled = s.clone();
                let task = tokio::spawn(async move {
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = async move {
                        let mut buf = vec![0u8; 64 << 10];
                        while let Ok(n) = cr.read(&mut buf).await {
                            if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    };
                    let down = async move {
                        let mut buf = vec![0u8; 64 << 10];
                        loop {
                            match sr.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    // Hold what the intake sent (acks) while stalled.
                                    while stalled.load(Ordering::SeqCst) {
                                        tokio::time::sleep(Duration::from_millis(10)).await;
                                    }
                                    if cw.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                    };
                    tokio::select! { _ = up => {}, _ = down => {} }
                });
                if let Ok(mut list) = c.lock() {
                    list.push(task);
                }
            }
        });
        Proxy {
            addr,
            stalled,
            conns,
            accept,
        }
    }

    /// Drops every open connection (both sides see a reset or EOF).
    fn reset_all(&self) {
        if let Ok(mut list) = self.conns.lock() {
            for t in list.drain(..) {
                t.abort();
            }
        }
    }

    fn stall(&self, on: bool) {
        self.stalled.store(on, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.reset_all();
    }
}

const KEY: &str = "k";

fn lines(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                "op {i} on shard-{} status {} took {}ms",
                i % 5,
                ["ok", "retry", "fail"][i % 3],
                i % 97
            )
        })
        .collect()
}

fn payloads(lines: &[String], per: usize) -> Vec<Payload> {
    let encoder = BatchEncoder::new(Generation::V3, Compression::ZSTD);
    let mut engine = Engine::new(EngineConfig::default());
    lines
        .chunks(per)
        .enumerate()
        .map(|(n, chunk)| {
            let mut datums = Vec::new();
            for (i, l) in chunk.iter().enumerate() {
                let meta = Meta {
                    timestamp: (n * per + i) as i64,
                    tags: &["env:test"],
                    ..Meta::default()
                };
                engine.encode(l.as_bytes(), &meta, &mut datums);
            }
            let cp = vec![Checkpoint {
                source: Arc::from("src"),
                offset: ((n + 1) * per) as u64,
            }];
            Payload::build(n as u64 + 1, datums, cp, 0, &encoder).expect("encodes")
        })
        .collect()
}

struct Run {
    worker: stencil_agent::Worker,
    input: Option<mpsc::Sender<Payload>>,
    _key: watch::Sender<String>,
    mailbox: Mailbox,
}

fn start(addr: std::net::SocketAddr, config: CoreConfig) -> Run {
    let channel = stencil_agent::channel(&format!("http://{addr}"), None).expect("channel");
    let encoder = BatchEncoder::new(Generation::V3, Compression::ZSTD);
    let (tx, rx) = mpsc::channel(4);
    let (key_tx, key_rx) = watch::channel(KEY.to_owned());
    let mailbox = Mailbox::new();
    let worker = stencil_agent::spawn(
        Core::new(config, encoder, 9),
        stencil_agent::Endpoints::new(vec![("intake".into(), channel)]),
        Headers::new(encoder.content_encoding()),
        key_rx,
        rx,
        mailbox.clone(),
    );
    Run {
        worker,
        input: Some(tx),
        _key: key_tx,
        mailbox,
    }
}

fn config() -> CoreConfig {
    CoreConfig {
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        connect_timeout: Duration::from_secs(2),
        drain_timeout: Duration::from_millis(300),
        ..CoreConfig::default()
    }
}

async fn intake() -> (stencil_intake::RunningIntake, MemorySink) {
    let sink = MemorySink::new();
    let config = IntakeConfig {
        api_keys: vec![KEY.into()],
        ..IntakeConfig::default()
    };
    (
        stencil_intake::bind("127.0.0.1:0", config, Arc::new(sink.clone()))
            .await
            .expect("intake"),
        sink,
    )
}

async fn feed_and_finish(
    run: Run,
    payloads: Vec<Payload>,
    mut between: impl FnMut(usize),
) -> (stencil_agent::WorkerReport, u64) {
    let Run {
        worker,
        mut input,
        _key,
        mailbox,
    } = run;
    for (i, p) in payloads.into_iter().enumerate() {
        between(i);
        if let Some(tx) = &input {
            tx.send(p).await.expect("worker alive");
        }
    }
    input = None;
    drop(input);
    let report = tokio::time::timeout(Duration::from_secs(60), worker.join())
        .await
        .expect("the worker finishes");
    let offset = mailbox.take().get("src").copied().unwrap_or(0);
    (report, offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_reset_every_few_hundred_ms() {
    let (intake, sink) = intake().await;
    let proxy = Arc::new(Proxy::start(intake.local_addr()).await);
    let lines = lines(3000);
    let run = start(proxy.addr, config());
    let p = proxy.clone();
    let resetter = tokio::spawn(async move {
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            p.reset_all();
        }
    });
    let (report, offset) = feed_and_finish(run, payloads(&lines, 25), |_| {}).await;
    resetter.await.expect("resetter");
    assert_delivered(&sink.messages(), &lines);
    assert_eq!(offset, 3000);
    assert_eq!(report.stats.dangling, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_stalled_past_the_drain_timeout() {
    let (intake, sink) = intake().await;
    let proxy = Arc::new(Proxy::start(intake.local_addr()).await);
    let lines = lines(600);
    let cfg = CoreConfig {
        lifetime: Duration::from_millis(400),
        lifetime_jitter: 0.1,
        ..config()
    };
    let run = start(proxy.addr, cfg);
    // Stall only once the stream is up, so that acks (not the stream's opening) are what is held.
    let mut state = run.worker.state();
    tokio::time::timeout(
        Duration::from_secs(5),
        state.wait_for(|s| *s == State::Active),
    )
    .await
    .expect("active in time")
    .expect("state channel open");
    let p = proxy.clone();
    let (report, offset) = feed_and_finish(run, payloads(&lines, 20), move |i| {
        if i == 5 {
            p.stall(true);
            let p = p.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                p.stall(false);
            });
        }
    })
    .await;
    assert_delivered(&sink.messages(), &lines);
    assert_eq!(offset, 600);
    assert!(report.stats.rotations > 0, "draining rotated the stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_every_second_under_load() {
    let (intake, sink) = intake().await;
    let lines = lines(4000);
    let cfg = CoreConfig {
        lifetime: Duration::from_millis(300),
        lifetime_jitter: 0.1,
        ..config()
    };
    let run = start(intake.local_addr(), cfg);
    let all = payloads(&lines, 10);
    let (report, offset) =
        feed_and_finish(run, all, |_| std::thread::sleep(Duration::from_millis(4))).await;
    assert_delivered(&sink.messages(), &lines);
    assert_eq!(offset, 4000);
    assert_eq!(report.stats.dangling, 0);
    assert!(
        report.stats.rotations >= 1,
        "rotations happened: {:?}",
        report.stats
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_while_draining_stops_cleanly() {
    let (intake, sink) = intake().await;
    let proxy = Proxy::start(intake.local_addr()).await;
    // The first stream lives 0.5–1.1 × 1 s: long enough to ack payload 1 and stall before it expires.
    let cfg = CoreConfig {
        lifetime: Duration::from_secs(1),
        lifetime_jitter: 0.0,
        drain_timeout: Duration::from_secs(10),
        grace_period: Duration::from_millis(500),
        close_timeout: Duration::from_millis(500),
        ..config()
    };
    let run = start(proxy.addr, cfg);
    let mut state = run.worker.state();
    let lines = lines(100);
    for p in payloads(&lines, 50).into_iter().take(1) {
        run.input
            .as_ref()
            .expect("input")
            .send(p)
            .await
            .expect("alive");
    }
    // Let the first payload be acked, then stall acks so the next lifetime expiry drains.
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.stall(true);
    for p in payloads(&lines, 50).into_iter().skip(1) {
        run.input
            .as_ref()
            .expect("input")
            .send(p)
            .await
            .expect("alive");
    }
    tokio::time::timeout(
        Duration::from_secs(5),
        state.wait_for(|s| *s == State::Draining),
    )
    .await
    .expect("draining in time")
    .expect("state channel open");
    run.worker.stop();
    let report = tokio::time::timeout(Duration::from_secs(10), run.worker.join())
        .await
        .expect("stops within the grace period");
    assert!(report.unacked <= 1);
    assert!(!sink.messages().is_empty());
    drop(run.input);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_killed_and_restarted_mid_stream() {
    let (first, sink_a) = intake().await;
    let addr = first.local_addr();
    let lines = lines(1000);
    let all = payloads(&lines, 20);
    let run = start(addr, config());
    let input = run.input.clone().expect("input");
    for p in all[..20].iter().cloned() {
        input.send(p).await.expect("alive");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    first.abort(); // no graceful end, no acks for what was in flight
    for p in all[20..30].iter().cloned() {
        input.send(p).await.expect("alive");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let config = IntakeConfig {
        api_keys: vec![KEY.into()],
        ..IntakeConfig::default()
    };
    let sink_b = MemorySink::new();
    let _second = stencil_intake::bind(&addr.to_string(), config, Arc::new(sink_b.clone()))
        .await
        .expect("restart");
    drop(input);
    let (report, offset) = feed_and_finish(run, all[30..].to_vec(), |_| {}).await;
    let mut got = sink_a.messages();
    got.extend(sink_b.messages());
    assert_delivered(&got, &lines);
    assert_eq!(offset, 1000);
    assert!(report.stats.failures > 0, "the kill was seen as a failure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_response_headers_neither_block_sending_nor_stop() {
    let (intake, _sink) = intake().await;
    let proxy = Proxy::start(intake.local_addr()).await;
    proxy.stall(true); // response headers never arrive
    let cfg = CoreConfig {
        connect_timeout: Duration::from_secs(30),
        grace_period: Duration::from_millis(500),
        close_timeout: Duration::from_millis(500),
        ..config()
    };
    let run = start(proxy.addr, cfg);
    let mut state = run.worker.state();
    // The agent does not wait for response headers (grpc-go servers send them with the first ack):
    // the stream is active and batch 0 is on its way at once.
    tokio::time::timeout(
        Duration::from_secs(5),
        state.wait_for(|s| *s == State::Active),
    )
    .await
    .expect("active without response headers")
    .expect("open");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    run.worker.stop();
    let report = tokio::time::timeout(Duration::from_secs(5), run.worker.join())
        .await
        .expect("stops");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "stopped within the grace period: {:?}",
        started.elapsed()
    );
    assert!(report.stats.batches_sent >= 1, "batch 0 was sent");
    assert_eq!(report.stats.released, 0);
    drop(run.input);
}
