//! Starting and stopping the intake: one port serving both generations, gRPC health and reflection.
//!
//! Shutdown is graceful: [`RunningIntake::shutdown`] stops accepting streams, lets every stream finish the
//! batch it is handling (acked as usual), ends each stream with `OK` so that agents rotate without backoff,
//! and waits up to the grace period for connections to close.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;

use stencil_codec::MemoryBudget;
use stencil_proto::stateful::stateful_intake_server::StatefulIntakeServer;
use stencil_proto::stateful::stateful_logs_service_server::StatefulLogsServiceServer;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::config::IntakeConfig;
use crate::conn::{accept_loop, Connections};
use crate::service::{IntakeService, Shared};
use crate::sink::Sink;
use crate::throttle::Throttle;

/// Why the intake could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}. Is another process using the port?")]
    Bind {
        /// The address.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TLS files could not be read or used.
    #[error("TLS setup failed: {0}. Check the certificate and key PEM files.")]
    Tls(String),
    /// The gRPC server failed.
    #[error("gRPC server error: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// Reflection could not be built from the embedded descriptors (a build bug).
    #[error("gRPC reflection setup failed: {0}")]
    Reflection(String),
}

/// A running intake.
pub struct RunningIntake {
    addr: SocketAddr,
    shutdown: CancellationToken,
    grace: std::time::Duration,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl RunningIntake {
    /// The address the intake listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A token that starts a graceful shutdown when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops at once, like a crash: connections are dropped, nothing is flushed or acked. For fault tests
    /// and emergencies; use [`RunningIntake::shutdown`] otherwise.
    pub fn abort(self) {
        self.shutdown.cancel();
        self.task.abort();
    }

    /// Shuts down gracefully and waits, at most the grace period, for streams and connections to end.
    pub async fn shutdown(self) -> Result<(), IntakeError> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the intake stops (after a shutdown was requested through the token), bounded by the
    /// grace period once shutdown has started.
    pub async fn wait(self) -> Result<(), IntakeError> {
        let RunningIntake {
            shutdown,
            grace,
            mut task,
            ..
        } = self;
        tokio::select! {
            done = &mut task => return flatten(done),
            _ = shutdown.cancelled() => {}
        }
        match tokio::time::timeout(grace, &mut task).await {
            Ok(done) => flatten(done),
            Err(_) => {
                tracing::warn!(
                    ?grace,
                    "grace period over; closing the remaining connections"
                );
                task.abort();
                Ok(())
            }
        }
    }
}

fn flatten(
    done: Result<Result<(), tonic::transport::Error>, tokio::task::JoinError>,
) -> Result<(), IntakeError> {
    match done {
        Ok(result) => result.map_err(IntakeError::from),
        Err(e) if e.is_cancelled() => Ok(()),
        Err(e) => Err(IntakeError::Reflection(format!("server task failed: {e}"))),
    }
}

/// Binds `addr` and starts serving. See [`start`].
pub async fn bind(
    addr: &str,
    config: IntakeConfig,
    sink: Arc<dyn Sink>,
) -> Result<RunningIntake, IntakeError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| IntakeError::Bind {
            addr: addr.to_string(),
            source,
        })?;
    start(listener, config, sink).await
}

/// Starts serving both generations, health and reflection on `listener`.
pub async fn start(
    listener: TcpListener,
    config: IntakeConfig,
    sink: Arc<dyn Sink>,
) -> Result<RunningIntake, IntakeError> {
    crate::metrics::describe();
    let addr = listener.local_addr().map_err(|source| IntakeError::Bind {
        addr: "listener".into(),
        source,
    })?;
    if config.api_keys.is_empty() && config.reloadable_keys.is_none() {
        tracing::warn!("no API keys configured: any non-empty dd-api-key is accepted");
    }
    let shutdown = CancellationToken::new();
    let grace = config.shutdown_grace;
    let max_message = config.max_message_bytes;
    let tls = config.tls.clone();
    let keepalive = config.keepalive_interval;
    let memory_budget = config.memory_budget;
    let handshake_timeout = config.handshake_timeout;
    let conns = Connections::new(config.max_connections, config.connection_idle_timeout);
    let incoming = ReceiverStream::new(accept_loop(listener, conns.clone(), shutdown.clone()));
    let service = IntakeService {
        shared: Arc::new(Shared {
            config,
            sink,
            open_streams: AtomicUsize::new(0),
            next_stream: AtomicU64::new(1),
            shutdown: shutdown.clone(),
            auth_log: Throttle::new(std::time::Duration::from_secs(10)),
            conns,
            budget: MemoryBudget::new(memory_budget),
        }),
    };
    let v3 = StatefulIntakeServer::new(service.clone())
        .max_decoding_message_size(max_message)
        .accept_compressed(CompressionEncoding::Gzip);
    let v2 = StatefulLogsServiceServer::new(service)
        .max_decoding_message_size(max_message)
        .accept_compressed(CompressionEncoding::Gzip);
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<StatefulIntakeServer<IntakeService>>()
        .await;
    health_reporter
        .set_serving::<StatefulLogsServiceServer<IntakeService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(stencil_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| IntakeError::Reflection(e.to_string()))?;

    let mut builder = Server::builder()
        .http2_keepalive_interval(Some(keepalive))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)));
    if let Some(tls) = tls {
        let cert = std::fs::read(&tls.cert)
            .map_err(|e| IntakeError::Tls(format!("{}: {e}", tls.cert.display())))?;
        let key = std::fs::read(&tls.key)
            .map_err(|e| IntakeError::Tls(format!("{}: {e}", tls.key.display())))?;
        let mut config = ServerTlsConfig::new()
            .identity(Identity::from_pem(cert, key))
            .timeout(handshake_timeout);
        if let Some(ca) = &tls.client_ca {
            let pem = std::fs::read(ca)
                .map_err(|e| IntakeError::Tls(format!("{}: {e}", ca.display())))?;
            config = config.client_ca_root(tonic::transport::Certificate::from_pem(pem));
        }
        builder = builder
            .tls_config(config)
            .map_err(|e| IntakeError::Tls(e.to_string()))?;
    }
    let router = builder
        .add_service(health)
        .add_service(reflection)
        .add_service(v3)
        .add_service(v2);
    let token = shutdown.clone();
    let task = tokio::spawn(async move {
        let health_on_shutdown = health_reporter.clone();
        let signal = async move {
            token.cancelled().await;
            health_on_shutdown
                .set_not_serving::<StatefulIntakeServer<IntakeService>>()
                .await;
            health_on_shutdown
                .set_not_serving::<StatefulLogsServiceServer<IntakeService>>()
                .await;
        };
        router.serve_with_incoming_shutdown(incoming, signal).await
    });
    tracing::info!(%addr, "intake listening (v3 StatefulIntake/StatefulStream, v2 StatefulLogsService/LogsStream)");
    Ok(RunningIntake {
        addr,
        shutdown,
        grace,
        task,
    })
}
