//! The gRPC AccessLogService Envoy streams its HTTP access logs into: each entry that carries a
//! doppel id becomes a [`Sample`](super::Sample) in the [`SampleStore`]. It runs on the
//! MetricsService's port and server (see `crate::ingest::serve`).

use std::sync::Arc;

use envoy_types::pb::envoy::service::accesslog::v3::access_log_service_server::{
    AccessLogService, AccessLogServiceServer,
};
use envoy_types::pb::envoy::service::accesslog::v3::stream_access_logs_message::LogEntries;
use envoy_types::pb::envoy::service::accesslog::v3::{
    StreamAccessLogsMessage, StreamAccessLogsResponse,
};
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

use super::{SampleStore, sample};
use crate::ingest::ClusterRegistry;
use crate::ingest::server::next_message;

/// The AccessLogService over `samples`, judging clusters by `registry`; streams end when
/// `stop` turns true.
pub fn service(
    samples: Arc<SampleStore>,
    registry: Arc<ClusterRegistry>,
    stop: watch::Receiver<bool>,
) -> AccessLogServiceServer<AccessLogSink> {
    AccessLogServiceServer::new(AccessLogSink {
        samples,
        registry,
        stop,
    })
    .max_decoding_message_size(crate::ingest::MAX_MESSAGE_BYTES)
}

/// The AccessLogService implementation.
#[derive(Debug)]
pub struct AccessLogSink {
    samples: Arc<SampleStore>,
    registry: Arc<ClusterRegistry>,
    stop: watch::Receiver<bool>,
}

#[tonic::async_trait]
impl AccessLogService for AccessLogSink {
    async fn stream_access_logs(
        &self,
        request: Request<Streaming<StreamAccessLogsMessage>>,
    ) -> Result<Response<StreamAccessLogsResponse>, Status> {
        let mut stream = request.into_inner();
        let mut stop = self.stop.clone();
        while let Some(next) = next_message(&mut stream, &mut stop).await {
            let message = match next {
                Ok(message) => message,
                Err(status) => {
                    tracing::debug!(error = %status, "an access-log stream ended");
                    break;
                }
            };
            let Some(LogEntries::HttpLogs(logs)) = message.log_entries else {
                continue;
            };
            for entry in &logs.log_entry {
                if let Some((service, sample)) = sample(entry, &self.registry) {
                    self.samples.record(&service, sample);
                }
            }
        }
        Ok(Response::new(StreamAccessLogsResponse {}))
    }
}
