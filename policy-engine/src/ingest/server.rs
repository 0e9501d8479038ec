//! The MetricsService gRPC server every Envoy streams its stats into.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use envoy_types::pb::envoy::service::metrics::v3::StreamMetricsResponse;
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::{ClientStreamingService, NamedService};
use tonic::{Request, Response, Status, Streaming};

use super::body::Messages;
use super::error::IngestError;
use super::raw::{RawCodec, RawMessage};
use super::registry::ClusterRegistry;
use super::store::WindowStore;
use crate::accesslog::SampleStore;
use crate::rollout::now_ms;
use crate::tls::ServerTls;

/// The largest message accepted. Envoy sends every stat it has in one message per flush, and
/// the first also carries the node (about 64 KB): a large Envoy needs more than tonic's 4 MB.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The HTTP/2 flow-control windows of a metrics connection and of each of its streams: how
/// much a peer may send ahead of what the engine has read, hence the most an Envoy can make
/// the engine hold when the engine is behind (hyper's default is 1 MiB each). A typical flush
/// (tens to a few hundred KB) fits in one window; a larger one flows as the engine reads it.
pub const WINDOW_BYTES: u32 = 128 * 1024;

/// How often an idle connection is pinged, and how long a ping may go unanswered.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// Serves Envoy's MetricsService on `listener` into `store`, in plaintext, until `shutdown`
/// completes; then ends every open stream and returns once the connections are closed.
pub async fn serve(
    listener: TcpListener,
    store: Arc<WindowStore>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    serve_with(listener, store, None, shutdown).await
}

/// [`serve`], over TLS (mutual when `tls` has a client CA) when `tls` is given.
pub async fn serve_with(
    listener: TcpListener,
    store: Arc<WindowStore>,
    tls: Option<ServerTls>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    serve_with_access_logs(listener, store, tls, None, shutdown).await
}

/// [`serve_with`], and when `access_logs` is given, Envoy's AccessLogService on the same port:
/// the doppel ids of sampled requests go into the [`SampleStore`], judged by the registry.
pub async fn serve_with_access_logs(
    listener: TcpListener,
    store: Arc<WindowStore>,
    tls: Option<ServerTls>,
    access_logs: Option<(Arc<SampleStore>, Arc<ClusterRegistry>)>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    if let Ok(address) = listener.local_addr() {
        tracing::info!(
            %address,
            tls = tls.is_some(),
            mutual_tls = tls.as_ref().is_some_and(ServerTls::mutual),
            "metrics server listening"
        );
    }
    let (stop, stopped) = watch::channel(false);
    let access_logs = access_logs.map(|(samples, registry)| {
        crate::accesslog::server::service(samples, registry, stopped.clone())
    });
    let service = RawServer(Arc::new(MetricsSink {
        store,
        stop: stopped,
    }));
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &tls {
        builder = tls.apply(builder)?;
    }
    builder
        // An Envoy that vanished without closing its connection is noticed, and its stream
        // (with its state) ends.
        .http2_keepalive_interval(Some(KEEPALIVE))
        .http2_keepalive_timeout(Some(KEEPALIVE))
        .initial_stream_window_size(WINDOW_BYTES)
        .initial_connection_window_size(WINDOW_BYTES)
        .add_service(service)
        .add_optional_service(access_logs)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            shutdown.await;
            // Envoy never ends its stream: end each one so the connections can drain.
            let _ = stop.send(true);
        })
        .await
}

/// What `next` yields, or `None` as soon as `stop` turns true (Envoy never ends its streams
/// itself, so shutdown must end them).
pub(crate) async fn until_stopped<T>(
    next: impl Future<Output = Option<T>>,
    stop: &mut watch::Receiver<bool>,
) -> Option<T> {
    tokio::select! {
        next = next => next,
        _ = stop.wait_for(|stopped| *stopped) => None,
    }
}

/// A client-streaming gRPC method Envoy calls with one long stream per connection
/// (MetricsService's `StreamMetrics`, AccessLogService's `StreamAccessLogs`), served without
/// envoy-types' generated server: that one reads each stream through a tonic `Streaming`, which
/// keeps a buffer the size of the largest message for the stream's life. Here the stream's
/// messages are read by [`Messages`], which holds nothing between them, and the sink decodes each.
pub(crate) trait StreamSink: Send + Sync + 'static {
    /// The gRPC service, `package.Service`.
    const SERVICE: &'static str;
    /// The method's path, `/package.Service/Method`.
    const PATH: &'static str;
    /// The answer once the stream ends.
    type Answer: Message + Default + Send + 'static;

    /// Reads the stream from `peer` until it ends or the server stops.
    fn stream(
        self: Arc<Self>,
        peer: String,
        messages: Messages,
    ) -> impl Future<Output = Result<Response<Self::Answer>, Status>> + Send;
}

/// The gRPC service of one [`StreamSink`].
#[derive(Debug)]
pub(crate) struct RawServer<S>(pub Arc<S>);

impl<S> Clone for RawServer<S> {
    fn clone(&self) -> Self {
        RawServer(Arc::clone(&self.0))
    }
}

impl<S: StreamSink> NamedService for RawServer<S> {
    const NAME: &'static str = S::SERVICE;
}

impl<S: StreamSink> Service<http::Request<Body>> for RawServer<S> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let sink = Arc::clone(&self.0);
        Box::pin(async move {
            if request.uri().path() != S::PATH {
                let only = format!("{} has only {}", S::SERVICE, S::PATH);
                return Ok(Status::unimplemented(only).into_http());
            }
            // The body is read by `Messages`, which holds nothing between messages; tonic gets
            // the request without it, checks its headers and encodes the answer.
            let (parts, body) = request.into_parts();
            let messages = Messages::new(body, MAX_MESSAGE_BYTES);
            let request = http::Request::from_parts(parts, Body::empty());
            let mut grpc = tonic::server::Grpc::new(RawCodec::<S::Answer>::new());
            Ok(grpc
                .client_streaming(OneStream(sink, Some(messages)), request)
                .await)
        })
    }
}

/// One call of a [`StreamSink`]'s method, with its request body.
struct OneStream<S>(Arc<S>, Option<Messages>);

impl<S: StreamSink> ClientStreamingService<RawMessage> for OneStream<S> {
    type Response = S::Answer;
    type Future = BoxFuture<Response<S::Answer>, Status>;

    /// `request`'s body is empty: its messages come from the `Messages` taken here.
    fn call(&mut self, request: Request<Streaming<RawMessage>>) -> Self::Future {
        let sink = Arc::clone(&self.0);
        let messages = self.1.take();
        Box::pin(async move {
            let peer = request
                .remote_addr()
                .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
            match messages {
                Some(messages) => sink.stream(peer, messages).await,
                None => Err(Status::internal("the request body was already read")),
            }
        })
    }
}

/// The MetricsService implementation: one task per Envoy stream, whose [`super::Stream`] state
/// goes when the stream ends. Each message is decoded as a [`RawMessage`]: the families doppel
/// does not read stay undecoded.
#[derive(Debug)]
struct MetricsSink {
    store: Arc<WindowStore>,
    stop: watch::Receiver<bool>,
}

impl StreamSink for MetricsSink {
    const SERVICE: &'static str = "envoy.service.metrics.v3.MetricsService";
    const PATH: &'static str = "/envoy.service.metrics.v3.MetricsService/StreamMetrics";
    type Answer = StreamMetricsResponse;

    async fn stream(
        self: Arc<Self>,
        peer: String,
        mut messages: Messages,
    ) -> Result<Response<StreamMetricsResponse>, Status> {
        let mut stop = self.stop.clone();
        let mut state = self.store.open_stream(peer.clone());
        while let Some(next) = until_stopped(messages.next(), &mut stop).await {
            let report = match next.and_then(|bytes| {
                let message =
                    RawMessage::decode(bytes).map_err(|e| Status::internal(e.to_string()))?;
                self.store
                    .ingest_raw(now_ms(), message, &mut state)
                    .map_err(|e| Status::internal(e.to_string()))
            }) {
                Ok(report) => report,
                Err(status) => {
                    let error = IngestError::Stream {
                        message: status.message().to_owned(),
                    };
                    self.store.counts().reject(error.code());
                    tracing::warn!(%peer, node = state.node(), code = error.code(), error = %error, "metrics stream failed");
                    return Err(status);
                }
            };
            if state.messages() == 1 {
                tracing::info!(%peer, node = state.node(), "metrics stream opened");
            }
            tracing::debug!(
                node = state.node(),
                accepted = report.accepted,
                ignored = report.ignored,
                rejected = report.rejected,
                "metrics flush"
            );
        }
        tracing::info!(%peer, node = state.node(), "metrics stream closed");
        Ok(Response::new(StreamMetricsResponse {}))
    }
}
