//! The gRPC face: envoy-types' generated `AggregatedDiscoveryService`, both methods handing
//! their stream to the one loop in [`super::stream`].

use std::future::Future;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

use super::cache::SnapshotCache;
use super::protocol::{Delta, Sotw};
use super::stream::{self, Protocol};
use crate::tls::ServerTls;

/// Responses queued per stream before the loop waits for the client to read.
const STREAM_BUFFER: usize = 16;

/// The ADS service over a [`SnapshotCache`].
#[derive(Debug, Clone)]
pub struct AdsService {
    cache: Arc<SnapshotCache>,
    closing: watch::Receiver<bool>,
}

impl AdsService {
    /// A service serving `cache`'s snapshots; its streams end when `closing` turns true
    /// (ADS streams never end on their own, so a graceful shutdown needs them to).
    pub fn new(cache: Arc<SnapshotCache>, closing: watch::Receiver<bool>) -> AdsService {
        AdsService { cache, closing }
    }

    /// The tonic server wrapping this service, to add to a `tonic::transport::Server`.
    pub fn into_server(self) -> AggregatedDiscoveryServiceServer<AdsService> {
        AggregatedDiscoveryServiceServer::new(self)
    }

    fn spawn<P: Protocol + 'static>(
        &self,
        requests: Streaming<P::Request>,
    ) -> ReceiverStream<Result<P::Response, Status>>
    where
        Streaming<P::Request>: Send,
    {
        let (out, responses) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(stream::run::<P>(
            Arc::clone(&self.cache),
            requests,
            out,
            self.closing.clone(),
        ));
        ReceiverStream::new(responses)
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsService {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Ok(Response::new(self.spawn::<Sotw>(request.into_inner())))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Ok(Response::new(self.spawn::<Delta>(request.into_inner())))
    }
}

/// Serves ADS for `cache` on `listener` in plaintext until `shutdown` completes; then ends
/// every stream (Envoy keeps its config and reconnects) and returns.
pub async fn serve(
    listener: TcpListener,
    cache: Arc<SnapshotCache>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    serve_with(listener, cache, None, shutdown).await
}

/// [`serve`], over TLS (mutual when `tls` has a client CA) when `tls` is given.
pub async fn serve_with(
    listener: TcpListener,
    cache: Arc<SnapshotCache>,
    tls: Option<ServerTls>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    if let Ok(address) = listener.local_addr() {
        tracing::info!(
            %address,
            tls = tls.is_some(),
            mutual_tls = tls.as_ref().is_some_and(ServerTls::mutual),
            "xds server listening"
        );
    }
    let (closing, closed) = watch::channel(false);
    let signal = async move {
        shutdown.await;
        tracing::info!("xds server shutting down");
        closing.send_replace(true);
    };
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &tls {
        builder = tls.apply(builder)?;
    }
    builder
        .add_service(AdsService::new(cache, closed).into_server())
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), signal)
        .await
}
