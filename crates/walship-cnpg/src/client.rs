//! The client side of the plugin's socket: what `walship cnpg healthcheck unix` (the
//! sidecar's startup probe) asks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A channel to the plugin's socket (HTTP/2 without TLS; the URI is a placeholder the
/// connector ignores).
pub async fn connect(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let socket: PathBuf = socket.to_owned();
    Endpoint::from_static("http://plugin.socket")
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await
}

/// Asks grpc.health.v1 on `socket`: `Ok` only for SERVING, otherwise what was wrong.
pub async fn healthcheck(socket: &Path, timeout: Duration) -> Result<(), String> {
    let ask = async {
        let channel = connect(socket)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", socket.display()))?;
        let reply = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map_err(|e| format!("health check on {} failed: {e}", socket.display()))?;
        match reply.into_inner().status() {
            ServingStatus::Serving => Ok(()),
            other => Err(format!("{} answers {other:?}", socket.display())),
        }
    };
    tokio::time::timeout(timeout, ask)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer from {} within {timeout:?}",
                socket.display()
            ))
        })
}
