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
            client_ca: None,
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

/// A CA, and a leaf it signs for `names` (server) or for a client.
fn ca_and_leaf(names: &[&str]) -> (rcgen::Certificate, rcgen::KeyPair, String, String) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
    let leaf_params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("leaf params");
    let leaf = leaf_params
        .signed_by(&leaf_key, &ca, &ca_key)
        .expect("signed leaf");
    (ca, ca_key, leaf.pem(), leaf_key.serialize_pem())
}

/// Mutual TLS: an intake with `client_ca` refuses an agent without a client certificate, and one whose
/// certificate another CA signed; it serves one whose certificate its client CA signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_accepts_only_clients_signed_by_the_client_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server_ca, _, server_cert, server_key) = ca_and_leaf(&["127.0.0.1", "localhost"]);
    let (client_ca, _, client_cert, client_key) = ca_and_leaf(&["agent-1"]);
    let (_, _, rogue_cert, rogue_key) = ca_and_leaf(&["rogue"]);
    let path = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p
    };
    let sink = MemorySink::new();
    let config = IntakeConfig {
        api_keys: vec!["k".into()],
        tls: Some(TlsFiles {
            cert: path("server.pem", &server_cert),
            key: path("server.key", &server_key),
            client_ca: Some(path("client-ca.pem", &client_ca.pem())),
        }),
        ..IntakeConfig::default()
    };
    let intake = stencil_intake::bind("127.0.0.1:0", config, Arc::new(sink.clone()))
        .await
        .expect("mTLS intake");
    let url = format!("https://127.0.0.1:{}", intake.local_addr().port());
    let ca = server_ca.pem();
    let attempt = |identity: Option<(&str, &str)>| {
        let channel = stencil_agent::tls_channel(
            &url,
            Some(ca.as_bytes()),
            identity.map(|(c, k)| (c.as_bytes(), k.as_bytes())),
        )
        .expect("channel");
        async move {
            let mut client =
                stencil_proto::stateful::stateful_intake_client::StatefulIntakeClient::new(channel);
            let mut request = tonic::Request::new(tokio_stream::iter(vec![
                stencil_proto::stateful::StatefulBatch {
                    batch_id: 0,
                    data: Default::default(),
                },
            ]));
            request
                .metadata_mut()
                .insert("dd-api-key", "k".parse().expect("header"));
            match client.stateful_stream(request).await {
                Ok(response) => {
                    use tokio_stream::StreamExt;
                    let mut acks = response.into_inner();
                    matches!(acks.next().await, Some(Ok(_)))
                }
                Err(_) => false,
            }
        }
    };
    assert!(!attempt(None).await, "no client certificate: refused");
    assert!(
        !attempt(Some((&rogue_cert, &rogue_key))).await,
        "a certificate of another CA: refused"
    );
    assert!(
        attempt(Some((&client_cert, &client_key))).await,
        "a certificate of the client CA: served (batch 0 acked)"
    );
}
