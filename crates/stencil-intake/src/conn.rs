//! Connections: admission, and closing the ones that hold a slot without using it.
//!
//! gRPC streams have their own limits ([`crate::service`]), but a TCP connection costs a file
//! descriptor before any stream exists. Without a bound, 1,100 idle connections used up the process's
//! descriptors and healthy clients then failed with nothing logged. So the accept loop here:
//! - refuses connections past `max_connections` at once, and logs and counts every refusal;
//! - logs and counts accept errors (`EMFILE` and the like) and backs off instead of spinning;
//! - wraps each connection so that it closes after `connection_idle_timeout` without an open stream.
//!   A connection that never completes its handshake, or whose client keeps it open between streams
//!   forever, is closed the same way. Streams report themselves with [`Connections::stream_opened`].
//!
//! Dead peers are found by HTTP/2 keepalive pings (set on the server in [`crate::server`]); a TLS
//! handshake has its own timeout there too.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::metrics as m;
use crate::throttle::Throttle;

/// The open connections, by peer address.
pub(crate) struct Connections {
    open: Mutex<HashMap<SocketAddr, Arc<ConnState>>>,
    max: usize,
    idle_timeout: Duration,
    started: Instant,
    refusals: Throttle,
}

/// What a connection's wrapper and the streams on it share.
struct ConnState {
    /// Streams open on this connection.
    streams: AtomicUsize,
    /// Milliseconds after [`Connections::started`] when the connection last had a stream end or
    /// began.
    last_busy: AtomicU64,
}

impl Connections {
    /// At most `max` connections, each closed after `idle_timeout` without a stream.
    pub(crate) fn new(max: usize, idle_timeout: Duration) -> Arc<Self> {
        Arc::new(Connections {
            open: Mutex::new(HashMap::new()),
            max,
            idle_timeout,
            started: Instant::now(),
            refusals: Throttle::new(Duration::from_secs(10)),
        })
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Counts a stream on the connection from `peer` until the guard is dropped.
    pub(crate) fn stream_opened(self: &Arc<Self>, peer: Option<SocketAddr>) -> StreamOnConn {
        let state = peer.and_then(|p| self.lock().get(&p).cloned());
        if let Some(state) = &state {
            state.streams.fetch_add(1, Ordering::SeqCst);
            state.last_busy.store(self.now_ms(), Ordering::Relaxed);
        }
        StreamOnConn {
            state,
            conns: self.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Arc<ConnState>>> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Admits a new connection, or refuses it (and says why).
    fn admit(self: &Arc<Self>, io: TcpStream, peer: SocketAddr) -> Option<Conn> {
        let state = Arc::new(ConnState {
            streams: AtomicUsize::new(0),
            last_busy: AtomicU64::new(self.now_ms()),
        });
        {
            let mut open = self.lock();
            if open.len() >= self.max {
                drop(open);
                metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => "max_connections")
                    .increment(1);
                if let Some(not_logged) = self.refusals.allow() {
                    tracing::warn!(
                        %peer,
                        max_connections = self.max,
                        refusals_not_logged = not_logged,
                        "refused a connection: the intake is at max_connections"
                    );
                }
                return None;
            }
            open.insert(peer, state.clone());
        }
        metrics::gauge!(m::CONNECTIONS_OPEN).increment(1.0);
        Some(Conn {
            io,
            peer,
            state,
            conns: self.clone(),
            idle: Box::pin(tokio::time::sleep(self.idle_timeout)),
        })
    }
}

/// Holds a stream's place on its connection, which is not idle while any is held.
pub(crate) struct StreamOnConn {
    state: Option<Arc<ConnState>>,
    conns: Arc<Connections>,
}

impl Drop for StreamOnConn {
    fn drop(&mut self) {
        if let Some(state) = &self.state {
            state
                .last_busy
                .store(self.conns.now_ms(), Ordering::Relaxed);
            state.streams.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// A TCP connection that ends itself after a while without streams.
pub(crate) struct Conn {
    io: TcpStream,
    peer: SocketAddr,
    state: Arc<ConnState>,
    conns: Arc<Connections>,
    idle: Pin<Box<Sleep>>,
}

impl Conn {
    /// Whether the connection has been without a stream for the idle timeout. When not, the timer is
    /// set again for the earliest moment it could be.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        while self.idle.as_mut().poll(cx).is_ready() {
            let timeout = self.conns.idle_timeout;
            if self.state.streams.load(Ordering::SeqCst) > 0 {
                self.idle
                    .as_mut()
                    .reset(tokio::time::Instant::now() + timeout);
                continue;
            }
            let since = Duration::from_millis(
                self.conns
                    .now_ms()
                    .saturating_sub(self.state.last_busy.load(Ordering::Relaxed)),
            );
            if since >= timeout {
                return true;
            }
            self.idle
                .as_mut()
                .reset(tokio::time::Instant::now() + (timeout - since));
        }
        false
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.conns.lock().remove(&self.peer);
        metrics::gauge!(m::CONNECTIONS_OPEN).decrement(1.0);
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.idle_expired(cx) {
            metrics::counter!(m::CONNECTIONS_CLOSED, "reason" => "idle").increment(1);
            tracing::debug!(peer = %self.peer, "closing a connection without streams (connection_idle_timeout)");
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection idle without a stream",
            )));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.io.connect_info()
    }
}

/// Accepts connections until `shutdown`, handing the admitted ones to the server. The listener is
/// dropped when this ends, so the port stops accepting at once.
pub(crate) fn accept_loop(
    listener: TcpListener,
    conns: Arc<Connections>,
    shutdown: CancellationToken,
) -> mpsc::Receiver<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let errors = Throttle::new(Duration::from_secs(10));
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tx.closed() => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((io, peer)) => {
                    let _ = io.set_nodelay(true);
                    if let Some(conn) = conns.admit(io, peer) {
                        if tx.send(Ok(conn)).await.is_err() {
                            break;
                        }
                    }
                }
                Err(e) => {
                    // Out of descriptors or memory, or a connection reset before it was accepted:
                    // say so, and give the process a moment instead of spinning on the error.
                    metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => "accept_error")
                        .increment(1);
                    if let Some(not_logged) = errors.allow() {
                        tracing::warn!(error = %e, errors_not_logged = not_logged, "accepting a connection failed; is the process out of file descriptors?");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    rx
}
