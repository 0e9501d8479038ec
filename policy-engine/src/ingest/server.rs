//! The MetricsService gRPC server every Envoy streams its stats into.

use std::future::Future;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::service::metrics::v3::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use envoy_types::pb::envoy::service::metrics::v3::{StreamMetricsMessage, StreamMetricsResponse};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, Streaming};

use super::error::IngestError;
use super::store::WindowStore;

/// The largest message accepted. Envoy sends every stat it has in one message per flush, and
/// the first also carries the node (about 64 KB): a large Envoy needs more than tonic's 4 MB.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Serves Envoy's MetricsService on `listener` into `store` until `shutdown` completes; then
/// ends every open stream and returns once the connections are closed.
pub async fn serve(
    listener: TcpListener,
    store: Arc<WindowStore>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (stop, stopped) = watch::channel(false);
    let sink = MetricsSink {
        store,
        stop: stopped,
    };
    let service = MetricsServiceServer::new(sink).max_decoding_message_size(MAX_MESSAGE_BYTES);
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            shutdown.await;
            // Envoy never ends its stream: end each one so the connections can drain.
            let _ = stop.send(true);
        })
        .await
}

/// The MetricsService implementation: one task per Envoy stream, no state kept per Envoy
/// beyond its name for logs.
#[derive(Debug)]
struct MetricsSink {
    store: Arc<WindowStore>,
    stop: watch::Receiver<bool>,
}

#[tonic::async_trait]
impl MetricsService for MetricsSink {
    async fn stream_metrics(
        &self,
        request: Request<Streaming<StreamMetricsMessage>>,
    ) -> Result<Response<StreamMetricsResponse>, Status> {
        let peer = request
            .remote_addr()
            .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        let mut stream = request.into_inner();
        let mut stop = self.stop.clone();
        let mut node: Option<String> = None;
        loop {
            let next = tokio::select! {
                next = stream.message() => next,
                _ = stop.wait_for(|stopped| *stopped) => break,
            };
            let message = match next {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(status) => {
                    let error = IngestError::Stream {
                        message: status.message().to_owned(),
                    };
                    self.store.counts().reject(error.code());
                    tracing::warn!(%peer, node = node.as_deref(), code = error.code(), error = %error, "metrics stream failed");
                    return Err(status);
                }
            };
            if node.is_none() {
                node = Some(
                    match message.identifier.as_ref().and_then(|i| i.node.as_ref()) {
                        Some(n) => format!("{}/{}", n.id, n.cluster),
                        None => {
                            let error = IngestError::MissingNode;
                            self.store.counts().reject(error.code());
                            tracing::warn!(%peer, code = error.code(), error = %error, "metrics stream without node");
                            peer.clone()
                        }
                    },
                );
                tracing::info!(%peer, node = node.as_deref(), "metrics stream opened");
            }
            let name = node.as_deref().unwrap_or(&peer);
            let report = self.store.ingest(now_ms(), message, name);
            tracing::debug!(
                node = name,
                accepted = report.accepted,
                ignored = report.ignored,
                rejected = report.rejected,
                "metrics flush"
            );
        }
        tracing::info!(%peer, node = node.as_deref(), "metrics stream closed");
        Ok(Response::new(StreamMetricsResponse {}))
    }
}

/// The wall clock in Unix milliseconds (0 before 1970).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
