//! Connection-level limits against the real server (#16 item 4): connections without streams are
//! closed, connections past `max_connections` are refused, and a client that reads no acks loses its
//! stream slot after the idle timeout. Each test then checks that a healthy client is served.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use stencil_intake::{IntakeConfig, MemorySink, RunningIntake};
use stencil_proto::stateful::stateful_intake_client::StatefulIntakeClient;
use stencil_proto::stateful::StatefulBatch;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_stream::wrappers::ReceiverStream;

async fn start(config: IntakeConfig) -> RunningIntake {
    intake_with(config, Arc::new(MemorySink::new())).await
}

/// How long until the intake closes `conn` (reads until EOF or an error); `None` past `limit`.
async fn closed_within(conn: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((started + limit).into(), conn.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            // The server's HTTP/2 preface (SETTINGS) arrives first; keep reading.
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_streams_is_closed() {
    let intake = start(IntakeConfig {
        connection_idle_timeout: Duration::from_millis(500),
        ..Default::default()
    })
    .await;
    let mut idle = TcpStream::connect(intake.local_addr())
        .await
        .expect("connects");
    let took = closed_within(&mut idle, Duration::from_secs(10))
        .await
        .expect("the idle connection is closed");
    assert!(
        took >= Duration::from_millis(400),
        "not before the timeout: {took:?}"
    );

    // A connection with a stream is not idle, however long the stream is quiet.
    let mut stream = open_v3(&intake).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stream.send_ok(0, healthy(3, "env:a")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_refused_and_the_idle_ones_freed() {
    let intake = start(IntakeConfig {
        max_connections: 3,
        connection_idle_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            TcpStream::connect(intake.local_addr())
                .await
                .expect("connects"),
        );
    }
    // Let the accept loop admit the three.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut over = TcpStream::connect(intake.local_addr())
        .await
        .expect("tcp connects");
    let took = closed_within(&mut over, Duration::from_secs(5))
        .await
        .expect("the fourth connection is closed");
    assert!(
        took < Duration::from_millis(900),
        "refused at once, not idled out: {took:?}"
    );
    // The idle ones are closed after a second, and then a real client is served.
    for conn in &mut held {
        closed_within(conn, Duration::from_secs(10))
            .await
            .expect("an idle connection is closed");
    }
    let mut stream = open_v3(&intake).await;
    stream.send_ok(0, healthy(3, "env:a")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_no_acks_loses_its_slot() {
    let intake = start(IntakeConfig {
        max_concurrent_streams: 1,
        idle_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    // A client whose HTTP/2 receive window never opens: the intake cannot hand over a single ack.
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", intake.local_addr()))
            .expect("url")
            .initial_stream_window_size(Some(0))
            .connect()
            .await
            .expect("connects");
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert("dd-api-key", KEY.parse().expect("ascii"));
    request
        .metadata_mut()
        .insert("dd-content-encoding", "zstd".parse().expect("ascii"));
    let _acks_never_read = StatefulIntakeClient::new(channel)
        .stateful_stream(request)
        .await
        .expect("the stalled stream opens");
    for id in 0..200u32 {
        let data = if id == 0 {
            healthy(1, "env:stalled")
        } else {
            healthy_more(id)
        };
        tx.send(StatefulBatch {
            batch_id: id,
            data: data.into(),
        })
        .await
        .expect("queued");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The only slot is taken...
    assert!(
        !served(&intake).await,
        "the stalled stream holds the only slot"
    );
    // ...until the idle timeout frees it.
    let started = Instant::now();
    while !served(&intake).await {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the stalled client kept the only slot"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(tx);
}

/// Whether a new stream is opened and its first batch acked.
async fn served(intake: &RunningIntake) -> bool {
    let Ok(mut stream) = open(
        intake,
        stencil_codec::Generation::V3,
        Some(KEY),
        Some("zstd"),
    )
    .await
    else {
        return false;
    };
    stream.send(0, healthy(2, "env:healthy")).await;
    matches!(stream.next().await, Ok(Some(ack)) if ack.batch_id == 0)
}

/// A small data batch that only uses the state batch 0 defined.
fn healthy_more(id: u32) -> Vec<u8> {
    use stencil_codec::datum::*;
    encode(
        stencil_codec::Generation::V3,
        stencil_codec::Compression::ZSTD,
        &[Datum::Log(Log {
            timestamp: i64::from(id),
            status: None,
            service: None,
            tags: None,
            content: Content::Raw(format!("line {id}")),
            json: None,
            uuid: None,
        })],
    )
}
