//! The wire extensions at a real intake over loopback gRPC: the echo in the response headers, extension
//! batches accepted and rebuilt, and every refusal as `INVALID_ARGUMENT` with the earlier batches acked.

mod common;

use std::sync::Arc;

use common::*;
use stencil_codec::extensions::{Extensions, HEADER, MARKER};
use stencil_codec::{Compression, ExtEncoder, Generation};
use stencil_intake::{IntakeConfig, MemorySink};
use stencil_proto::stateful::stateful_intake_client::StatefulIntakeClient;
use stencil_proto::stateful::StatefulBatch;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request};

/// Opens a v3 zstd stream asking for `asked`; returns the client and the echoed header value.
async fn open_asking(
    intake: &stencil_intake::RunningIntake,
    asked: Option<&str>,
) -> (Client, Option<String>) {
    let url = format!("http://{}", intake.local_addr());
    let (tx, rx) = mpsc::channel::<StatefulBatch>(64);
    let mut request = Request::new(ReceiverStream::new(rx));
    let md = request.metadata_mut();
    md.insert("dd-api-key", KEY.parse().expect("ascii"));
    md.insert("dd-content-encoding", "zstd".parse().expect("ascii"));
    if let Some(a) = asked {
        md.insert(HEADER, a.parse().expect("ascii"));
    }
    let mut client = StatefulIntakeClient::connect(url).await.expect("connect");
    let response = client.stateful_stream(request).await.expect("opens");
    let echo = response
        .metadata()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (Client::from_parts(tx, response.into_inner()), echo)
}

#[tokio::test]
async fn the_intake_echoes_what_it_accepts_and_decodes_extension_batches() {
    let (intake, sink) = intake().await;
    let (mut c, echo) = open_asking(
        &intake,
        Some("native/3, stream-zstd;window-log=24, other/2"),
    )
    .await;
    let echo = echo.expect("echoed");
    assert_eq!(
        echo, "native/3, stream-zstd;window-log=20",
        "capped at the intake's window"
    );
    let agreed = Extensions::agreed(
        Extensions::parse("native/3, stream-zstd;window-log=24"),
        Extensions::parse(&echo),
    );
    c.send_ok(0, Vec::new()).await;
    c.send_ok(
        1,
        encode(
            Generation::V3,
            Compression::ZSTD,
            &sample_datums(1_000, 3, "env:a"),
        ),
    )
    .await;
    let mut ext =
        ExtEncoder::new(agreed, Compression::ZSTD, &sample_datums(0, 0, "env:a")).expect("encoder");
    for id in 2..6u32 {
        let data = ext
            .encode(&sample_datums(i64::from(id) * 1_000, 20, "env:a"))
            .expect("encode");
        assert_eq!(
            data.starts_with(&MARKER),
            id == 2,
            "only the switch batch is marked"
        );
        c.send_ok(id, data).await;
    }
    c.half_close();
    assert_eq!(c.finish().await.0, Code::Ok);
    assert_eq!(sink.messages().len(), 3 + 4 * 20);
    assert!(sink.messages().iter().all(|m| m.starts_with("user u")));
}

#[tokio::test]
async fn no_echo_when_not_asked_for_or_turned_off() {
    let (intake, _sink) = intake().await;
    assert_eq!(open_asking(&intake, None).await.1, None);
    assert_eq!(open_asking(&intake, Some("future/9")).await.1, None);
    let off = intake_with(
        IntakeConfig {
            extensions: false,
            ..IntakeConfig::default()
        },
        Arc::new(MemorySink::new()),
    )
    .await;
    assert_eq!(
        open_asking(&off, Some("native/3, stream-zstd")).await.1,
        None
    );
}

#[tokio::test]
async fn extension_batches_that_were_not_negotiated_or_are_damaged_are_invalid_argument() {
    let (intake, _sink) = intake().await;
    let mut ext = ExtEncoder::new(Extensions::ALL, Compression::ZSTD, &[]).expect("encoder");
    let first = ext.encode(&sample_datums(0, 5, "env:a")).expect("encode");
    let second = ext.encode(&sample_datums(100, 5, "env:a")).expect("encode");

    // Not negotiated: the marked batch is refused, batch 0 stays acked.
    let (mut c, _) = open_asking(&intake, None).await;
    c.send_ok(0, Vec::new()).await;
    c.send(1, first.clone()).await;
    let (code, message, acks) = c.finish().await;
    assert_eq!(code, Code::InvalidArgument, "{message}");
    assert!(message.contains("negotiated no extension"), "{message}");
    assert!(acks.is_empty());

    // Negotiated, but the second batch is cut inside its flushed block.
    let (mut c, echo) = open_asking(&intake, Some("native/3, stream-zstd;window-log=19")).await;
    assert!(echo.is_some());
    c.send_ok(0, Vec::new()).await;
    c.send_ok(1, first.clone()).await;
    c.send(2, second[..second.len() - 2].to_vec()).await;
    let (code, message, _) = c.finish().await;
    assert_eq!(code, Code::InvalidArgument, "{message}");

    // A window over what was echoed.
    let mut wide = ExtEncoder::new(
        Extensions {
            stream_zstd: Some(22),
            native: true,
            ..Extensions::default()
        },
        Compression::ZSTD,
        &[],
    )
    .expect("encoder");
    let data = wide.encode(&sample_datums(0, 5, "env:a")).expect("encode");
    let (mut c, _) = open_asking(&intake, Some("native/3, stream-zstd;window-log=19")).await;
    c.send_ok(0, Vec::new()).await;
    c.send(1, data).await;
    let (code, message, _) = c.finish().await;
    assert_eq!(code, Code::InvalidArgument, "{message}");
    assert!(message.contains("window"), "{message}");
}
