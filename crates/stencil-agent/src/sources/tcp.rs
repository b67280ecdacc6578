//! The TCP source: newline-delimited logs from many connections (`stencil ship --tcp ADDR`).
//!
//! One tokio task accepts, one task reads each connection, and at most `max_connections` are open at
//! once: past it, a new connection is closed at once, with a warning (at most every 10 s) and a count.
//! (It used to be an OS thread per connection with no cap.) Lines are framed like file lines (split
//! past the line cap, terminators kept) and tagged `peer:IP:PORT`. A network input cannot resume after
//! a restart, so its lines carry no checkpoint.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::sources::files::{Eol, Splitter};

/// One line from a connection: the line, its terminator, and the connection's `peer:` tag.
pub type NetLine = (Vec<u8>, Eol, Arc<str>);

/// Counter of TCP connections refused because `max_connections` were open.
pub const TCP_REFUSED: &str = "stencil_agent_tcp_connections_refused_total";

/// Accepts on `listener` until `stop` is cancelled, sending every line to `lines`. Must be called from
/// within a tokio runtime (a blocking thread of one is fine).
pub fn spawn(
    listener: &std::net::TcpListener,
    max_connections: usize,
    max_line: usize,
    lines: mpsc::Sender<NetLine>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let std_listener = listener.try_clone()?;
    std_listener.set_nonblocking(true)?;
    let handle = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
    let _guard = handle.enter();
    let listener = tokio::net::TcpListener::from_std(std_listener)?;
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    handle.spawn(async move {
        let mut last_refusal_log: Option<Instant> = None;
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stop.cancelled() => return,
            };
            let (conn, peer) = match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                metrics::counter!(TCP_REFUSED).increment(1);
                if last_refusal_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    last_refusal_log = Some(Instant::now());
                    tracing::warn!(%peer, max_connections, "refused a TCP connection: too many open");
                }
                drop(conn);
                continue;
            };
            let (lines, stop) = (lines.clone(), stop.clone());
            tokio::spawn(async move {
                read_connection(conn, Arc::from(format!("peer:{peer}")), max_line, lines, stop)
                    .await;
                drop(permit);
            });
        }
    });
    Ok(())
}

async fn read_connection(
    mut conn: tokio::net::TcpStream,
    peer: Arc<str>,
    max_line: usize,
    lines: mpsc::Sender<NetLine>,
    stop: CancellationToken,
) {
    let mut splitter = Splitter::new(0, max_line);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = tokio::select! {
            n = conn.read(&mut buf) => n,
            _ = stop.cancelled() => break,
        };
        let n = match n {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut out = Vec::new();
        splitter.feed(&buf[..n], &mut |line, eol, _| {
            out.push((line.to_vec(), eol, peer.clone()))
        });
        for line in out {
            if lines.send(line).await.is_err() {
                return;
            }
        }
    }
    let mut out = Vec::new();
    splitter.flush(&mut |line, eol, _| out.push((line.to_vec(), eol, peer.clone())));
    for line in out {
        let _ = lines.send(line).await;
    }
}
