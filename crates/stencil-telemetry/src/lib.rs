//! Telemetry plumbing shared by the agent and the intake: one process-wide Prometheus recorder for the
//! `metrics` facade, and a tiny HTTP/1 endpoint that serves `/metrics` (Prometheus text format) and
//! `/health` (a JSON status from the caller).
//!
//! It exists so that both binaries expose the same endpoints the same way, without the exporter's own
//! listener (which would pull TLS dependencies we do not want).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once) and returns a handle that renders it.
///
/// Safe to call many times (tests start several servers in one process): later calls return the first
/// handle. If another recorder was installed by someone else, metrics go there and this handle renders an
/// empty page.
pub fn recorder() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            handle
        })
        .clone()
}

/// Sets `stencil_build_info{version, command} 1`, so that dashboards can tell which build runs where.
pub fn build_info(command: &'static str) {
    metrics::describe_gauge!(
        "stencil_build_info",
        "Always 1; the labels tell the version and the command (ship, intake)"
    );
    metrics::gauge!("stencil_build_info", "version" => env!("CARGO_PKG_VERSION"), "command" => command)
        .set(1.0);
}

/// What `/health` reports: an HTTP status (200 healthy, 503 not) and a JSON body.
pub type HealthFn = Arc<dyn Fn() -> (u16, String) + Send + Sync>;

/// A health function that always reports `{"status":"ok"}`.
pub fn always_healthy() -> HealthFn {
    Arc::new(|| (200, r#"{"status":"ok"}"#.to_string()))
}

/// More JSON endpoints: given a path, `Some((status, body))` when it serves it.
pub type RoutesFn = Arc<dyn Fn(&str) -> Option<(u16, String)> + Send + Sync>;

/// Serves `/metrics` and `/health` on `listener` until the task is aborted.
pub fn serve(listener: TcpListener, health: HealthFn) -> JoinHandle<()> {
    serve_with_routes(listener, health, Arc::new(|_: &str| None))
}

/// Serves `/metrics`, `/health` and the JSON endpoints of `routes` on `listener`.
pub fn serve_with_routes(
    listener: TcpListener,
    health: HealthFn,
    routes: RoutesFn,
) -> JoinHandle<()> {
    let handle = recorder();
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    continue;
                }
            };
            let handle = handle.clone();
            let health = health.clone();
            let routes = routes.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let response = route(req.uri().path(), &handle, &health, &routes);
                        async move { Ok::<_, Infallible>(response) }
                    });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "metrics endpoint: connection ended with an error");
                }
            });
        }
    })
}

/// Binds `addr` and serves on it; returns the bound address (useful with port 0) and the task.
pub async fn bind_and_serve(
    addr: SocketAddr,
    health: HealthFn,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    bind_and_serve_with_routes(addr, health, Arc::new(|_: &str| None)).await
}

/// Binds `addr` and serves `/metrics`, `/health` and `routes` on it.
pub async fn bind_and_serve_with_routes(
    addr: SocketAddr,
    health: HealthFn,
    routes: RoutesFn,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((local, serve_with_routes(listener, health, routes)))
}

fn route(
    path: &str,
    handle: &PrometheusHandle,
    health: &HealthFn,
    routes: &RoutesFn,
) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match path {
        "/metrics" => (200, "text/plain; version=0.0.4", handle.render()),
        "/health" | "/healthz" => {
            let (status, body) = health();
            (status, "application/json", body)
        }
        other => match routes(other) {
            Some((status, body)) => (status, "application/json", body),
            None => (
                404,
                "text/plain",
                "not found: try /metrics or /health\n".to_string(),
            ),
        },
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}
