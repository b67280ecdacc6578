//! TLS end to end: the intake serves a certificate from a private CA (here self-signed), and the agent
//! trusts it through the custom CA option. Two workers share one HTTP/2 channel.

use std::sync::Arc;
use std::time::Duration;

use stencil_agent::{Checkpoint, Core, CoreConfig, Headers, Mailbox, Payload};
use stencil_codec::datum::{Datum, Log};
use stencil_codec::{BatchEncoder, Compression, Generation};
use stencil_intake::{IntakeConfig, MemorySink, TlsFiles};
use tokio::sync::{mpsc, watch};

fn payload(seq: u64, text: &str) -> Payload {
    let encoder = BatchEncoder::new(Generation::V3, Compression::ZSTD);
    let datums = vec![Datum::Log(Log::raw(seq as i64, text))];
    let cp = vec![Checkpoint {
        source: Arc::from(text),
        offset: seq,
    }];
    Payload::build(seq, datums, cp, text.len(), &encoder).expect("encodes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_custom_ca_and_two_workers_on_one_channel() {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("certificate");
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).expect("write key");
    let sink = MemorySink::new();
    let config = IntakeConfig {
        api_keys: vec!["k".into()],
        tls: Some(TlsFiles {
            cert: cert_path,
            key: key_path,
        }),
        ..IntakeConfig::default()
    };
    let intake = stencil_intake::bind("127.0.0.1:0", config, Arc::new(sink.clone()))
        .await
        .expect("TLS intake");
    let url = format!("https://127.0.0.1:{}", intake.local_addr().port());

    // Without the CA, the handshake fails and the worker backs off.
    let untrusted = stencil_agent::channel(&url, None).expect("channel");
    let mut client =
        stencil_proto::stateful::stateful_intake_client::StatefulIntakeClient::new(untrusted);
    let request = tonic::Request::new(tokio_stream::iter(Vec::<
        stencil_proto::stateful::StatefulBatch,
    >::new()));
    assert!(
        client.stateful_stream(request).await.is_err(),
        "an untrusted certificate is refused"
    );

    let channel = stencil_agent::channel(&url, Some(cert.cert.pem().as_bytes())).expect("channel");
    let mut workers = Vec::new();
    for w in 0..2u64 {
        let encoder = BatchEncoder::new(Generation::V3, Compression::ZSTD);
        let (tx, rx) = mpsc::channel(4);
        let (_key_tx, key_rx) = watch::channel("k".to_owned());
        let worker = stencil_agent::spawn(
            Core::new(CoreConfig::default(), encoder, w),
            stencil_agent::Endpoints::new(vec![("intake".into(), channel.clone())]),
            Headers::new(encoder.content_encoding()),
            key_rx,
            rx,
            Mailbox::new(),
        );
        for seq in 1..=5 {
            tx.send(payload(seq, &format!("worker {w} line {seq}")))
                .await
                .expect("alive");
        }
        drop(tx);
        workers.push((worker, _key_tx));
    }
    for (worker, _key) in workers {
        let report = tokio::time::timeout(Duration::from_secs(20), worker.join())
            .await
            .expect("finishes");
        assert_eq!(report.stats.released, 5);
    }
    let mut got = sink.messages();
    got.sort();
    let mut want: Vec<String> = (0..2)
        .flat_map(|w| (1..=5).map(move |s| format!("worker {w} line {s}")))
        .collect();
    want.sort();
    assert_eq!(got, want);
    let streams: std::collections::BTreeSet<u64> = sink.logs().iter().map(|(s, _)| s.id).collect();
    assert_eq!(streams.len(), 2, "one stream per worker");
}
