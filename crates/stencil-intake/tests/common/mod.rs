//! Test harness: a real intake on a loopback port, and real tonic clients built from our own protos.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use stencil_codec::datum::*;
use stencil_codec::{BatchEncoder, Compression, Generation};
use stencil_intake::{IntakeConfig, MemorySink, RunningIntake, Sink};
use stencil_proto::stateful::stateful_intake_client::StatefulIntakeClient;
use stencil_proto::stateful::stateful_logs_service_client::StatefulLogsServiceClient;
use stencil_proto::stateful::{BatchStatus, StatefulBatch};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Status, Streaming};

pub const KEY: &str = "test-key";

/// Starts an intake on 127.0.0.1:0 with `config` (the test key is always accepted) and `sink`.
pub async fn intake_with(mut config: IntakeConfig, sink: Arc<dyn Sink>) -> RunningIntake {
    config.api_keys.push(KEY.into());
    stencil_intake::bind("127.0.0.1:0", config, sink)
        .await
        .expect("intake starts")
}

/// An intake with default limits and a memory sink.
pub async fn intake() -> (RunningIntake, MemorySink) {
    let sink = MemorySink::new();
    (
        intake_with(IntakeConfig::default(), Arc::new(sink.clone())).await,
        sink,
    )
}

/// One open stream: a sender of batches and the stream of acks.
pub struct Client {
    tx: Option<mpsc::Sender<StatefulBatch>>,
    pub acks: Streaming<BatchStatus>,
}

/// Opens a stream of `generation` with `key` and `encoding` headers (None = header absent).
pub async fn open(
    intake: &RunningIntake,
    generation: Generation,
    key: Option<&str>,
    encoding: Option<&str>,
) -> Result<Client, Status> {
    let url = format!("http://{}", intake.local_addr());
    let (tx, rx) = mpsc::channel(64);
    let mut request = Request::new(ReceiverStream::new(rx));
    if let Some(key) = key {
        request
            .metadata_mut()
            .insert("dd-api-key", key.parse().expect("ascii"));
    }
    if let Some(encoding) = encoding {
        request
            .metadata_mut()
            .insert("dd-content-encoding", encoding.parse().expect("ascii"));
    }
    let acks = match generation {
        Generation::V3 => {
            let mut client = StatefulIntakeClient::connect(url)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            client = client.max_encoding_message_size(64 << 20);
            client.stateful_stream(request).await?.into_inner()
        }
        Generation::V2 => {
            let mut client = StatefulLogsServiceClient::connect(url)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            client = client.max_encoding_message_size(64 << 20);
            client.logs_stream(request).await?.into_inner()
        }
    };
    Ok(Client { tx: Some(tx), acks })
}

/// Opens a v3 zstd stream with the test key.
pub async fn open_v3(intake: &RunningIntake) -> Client {
    open(intake, Generation::V3, Some(KEY), Some("zstd"))
        .await
        .expect("stream opens")
}

impl Client {
    /// A client over an already opened stream.
    pub fn from_parts(tx: mpsc::Sender<StatefulBatch>, acks: Streaming<BatchStatus>) -> Self {
        Client { tx: Some(tx), acks }
    }

    /// Sends one batch.
    pub async fn send(&mut self, batch_id: u32, data: Vec<u8>) {
        if let Some(tx) = &self.tx {
            let _ = tx
                .send(StatefulBatch {
                    batch_id,
                    data: data.into(),
                })
                .await;
        }
    }

    /// The next ack, or the status that ended the stream (`Ok(None)` = ended with OK).
    pub async fn next(&mut self) -> Result<Option<BatchStatus>, Status> {
        tokio::time::timeout(Duration::from_secs(20), self.acks.message())
            .await
            .unwrap_or_else(|_| {
                Err(Status::deadline_exceeded(
                    "test timed out waiting for the intake",
                ))
            })
    }

    /// Sends a batch and expects its OK ack.
    pub async fn send_ok(&mut self, batch_id: u32, data: Vec<u8>) {
        self.send(batch_id, data).await;
        let ack = self.next().await.expect("no error").expect("an ack");
        assert_eq!(ack.batch_id, batch_id);
        assert_eq!(ack.status, 1, "status OK");
    }

    /// Half-closes the request side.
    pub fn half_close(&mut self) {
        self.tx = None;
    }

    /// Reads until the stream ends; returns the final status code (`Code::Ok` for a clean end) and any acks
    /// seen on the way.
    pub async fn finish(&mut self) -> (Code, String, Vec<u32>) {
        let mut acks = Vec::new();
        loop {
            match self.next().await {
                Ok(Some(a)) => acks.push(a.batch_id),
                Ok(None) => return (Code::Ok, String::new(), acks),
                Err(s) => return (s.code(), s.message().to_string(), acks),
            }
        }
    }
}

/// Canonical datums for a small data batch: a pattern, a dictionary entry, and `n` logs.
pub fn sample_datums(first: i64, n: usize, tag: &str) -> Vec<Datum> {
    let mut datums = vec![
        Datum::PatternDefine(PatternDefine {
            id: 1,
            template: "user  logged in from ".into(),
            pos_list: vec![5, 21],
        }),
        Datum::DictDefine(DictDefine {
            id: 2,
            value: "info".into(),
        }),
        Datum::DictDefine(DictDefine {
            id: 3,
            value: tag.into(),
        }),
    ];
    for i in 0..n {
        datums.push(Datum::Log(Log {
            timestamp: first + i as i64 * 10,
            status: Some(Value::Dict(2)),
            service: None,
            tags: Some(Value::Dict(3)),
            content: Content::Pattern {
                id: 1,
                values: vec![
                    Value::Str(format!("u{i}")).into(),
                    Value::Str(format!("10.0.0.{i}")).into(),
                ],
            },
            json: None,
            uuid: None,
        }));
    }
    datums
}

/// Encodes datums for a generation and codec.
pub fn encode(generation: Generation, compression: Compression, datums: &[Datum]) -> Vec<u8> {
    BatchEncoder::new(generation, compression)
        .encode(datums)
        .expect("encodable")
        .data
}

/// A healthy v3 zstd payload with `n` logs.
pub fn healthy(n: usize, tag: &str) -> Vec<u8> {
    encode(
        Generation::V3,
        Compression::ZSTD,
        &sample_datums(1_700_000_000_000, n, tag),
    )
}
