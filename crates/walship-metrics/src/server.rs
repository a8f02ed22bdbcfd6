//! The HTTP endpoints: `/metrics`, `/healthz`, `/readyz`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{Health, Metrics};

/// The `Content-Type` of `/metrics`: Prometheus text exposition format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long open connections may take to finish once shutdown is requested. A scrape
/// takes milliseconds; the bound only keeps a stuck client from holding up the daemon's
/// exit.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

fn router(metrics: Arc<Metrics>, health: Arc<Health>) -> Router {
    // Unknown paths get axum's default empty 404; a known path with another method gets
    // 405. GET routes answer HEAD too.
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, health })
}

async fn metrics_handler(State(state): State<AppState>) -> Response {
    state.metrics.observe_readiness(&state.health);
    match state.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(error) => {
            tracing::error!(%error, "encoding metrics failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "encoding metrics failed").into_response()
        }
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.health.readiness() {
        Ok(()) => "ready".into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason).into_response(),
    }
}

/// Serves the endpoints on `listener` until `shutdown` is cancelled.
///
/// `GET /metrics` answers the exposition ([`CONTENT_TYPE`]), `GET /healthz` answers 200
/// `ok` while the process runs, `GET /readyz` answers 200 `ready` or 503 with the reasons
/// from [`Health::readiness`]; every other path is 404. On cancellation the server stops
/// accepting, lets open requests finish (for at most a few seconds) and returns `Ok`.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving metrics and health");
    }
    let server = axum::serve(listener, router(metrics, health))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        result = server => result?,
        () = deadline => {
            tracing::warn!("metrics connections still open after the shutdown grace period; dropping them");
        }
    }
    tracing::info!("metrics and health server stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Reply {
        status: u16,
        headers: String,
        body: String,
    }

    /// One HTTP/1.1 request on a fresh connection; `Connection: close` lets us read the
    /// reply to EOF instead of parsing lengths.
    async fn request(addr: std::net::SocketAddr, method: &str, path: &str) -> Reply {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read");
        let raw = String::from_utf8(raw).expect("utf-8 reply");
        let (head, body) = raw.split_once("\r\n\r\n").expect("head and body");
        let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status code");
        Reply {
            status,
            headers: headers.to_ascii_lowercase(),
            body: body.to_owned(),
        }
    }

    #[tokio::test]
    async fn serves_metrics_health_and_readiness_then_shuts_down() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::new(Duration::ZERO));
        let token = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            metrics.clone(),
            health.clone(),
            token.clone(),
        ));

        metrics.segments_archived_total.inc_by(7);
        let reply = request(addr, "GET", "/metrics").await;
        assert_eq!(reply.status, 200);
        assert!(
            reply
                .headers
                .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
            "{}",
            reply.headers
        );
        assert!(reply.body.contains("walship_segments_archived_total 7"));
        assert!(
            reply
                .body
                .contains("# TYPE walship_upload_duration_seconds histogram")
        );

        let reply = request(addr, "GET", "/healthz").await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "ok"));

        let reply = request(addr, "GET", "/readyz").await;
        assert_eq!(reply.status, 503);
        assert!(
            reply.body.contains("configuration not loaded"),
            "{}",
            reply.body
        );

        health.set_config_loaded(true);
        health.record_store_probe(true);
        let reply = request(addr, "GET", "/readyz").await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "ready"));

        health.record_upload_failure();
        let reply = request(addr, "GET", "/readyz").await;
        assert_eq!(reply.status, 503);
        assert!(reply.body.contains("uploads failing"), "{}", reply.body);

        assert_eq!(request(addr, "GET", "/").await.status, 404);
        assert_eq!(request(addr, "GET", "/metrics/x").await.status, 404);

        token.cancel();
        let result = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("server exits after cancellation")
            .expect("server task did not panic");
        assert!(result.is_ok(), "{result:?}");
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn cancellation_before_any_request_stops_the_server() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let token = CancellationToken::new();
        token.cancel();
        let result = serve(
            listener,
            Arc::new(Metrics::new()),
            Arc::new(Health::new(Duration::from_secs(1))),
            token,
        )
        .await;
        assert!(result.is_ok());
    }
}
