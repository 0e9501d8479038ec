//! The gRPC AccessLogService Envoy streams its HTTP access logs into: each entry that carries a
//! doppel id becomes a [`Sample`](super::Sample) in the [`SampleStore`]. It runs on the
//! MetricsService's port and server (see `crate::ingest::serve`), read the same way: a stream's
//! messages through `crate::ingest::body::Messages`, which holds no buffer between them.

use std::sync::Arc;

use envoy_types::pb::envoy::service::accesslog::v3::stream_access_logs_message::LogEntries;
use envoy_types::pb::envoy::service::accesslog::v3::{
    StreamAccessLogsMessage, StreamAccessLogsResponse,
};
use prost::Message;
use tokio::sync::watch;
use tonic::{Response, Status};

use super::{SampleStore, sample};
use crate::ingest::ClusterRegistry;
use crate::ingest::body::Messages;
use crate::ingest::server::{RawServer, StreamSink, until_stopped};

/// The AccessLogService over `samples`, judging clusters by `registry`; streams end when
/// `stop` turns true.
pub(crate) fn service(
    samples: Arc<SampleStore>,
    registry: Arc<ClusterRegistry>,
    stop: watch::Receiver<bool>,
) -> RawServer<AccessLogSink> {
    RawServer(Arc::new(AccessLogSink {
        samples,
        registry,
        stop,
    }))
}

/// The AccessLogService implementation.
#[derive(Debug)]
pub(crate) struct AccessLogSink {
    samples: Arc<SampleStore>,
    registry: Arc<ClusterRegistry>,
    stop: watch::Receiver<bool>,
}

impl StreamSink for AccessLogSink {
    const SERVICE: &'static str = "envoy.service.accesslog.v3.AccessLogService";
    const PATH: &'static str = "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs";
    type Answer = StreamAccessLogsResponse;

    async fn stream(
        self: Arc<Self>,
        peer: String,
        mut messages: Messages,
    ) -> Result<Response<StreamAccessLogsResponse>, Status> {
        let mut stop = self.stop.clone();
        while let Some(next) = until_stopped(messages.next(), &mut stop).await {
            let message = match next.and_then(|bytes| {
                StreamAccessLogsMessage::decode(bytes).map_err(|e| Status::internal(e.to_string()))
            }) {
                Ok(message) => message,
                Err(status) => {
                    tracing::debug!(%peer, error = %status, "an access-log stream ended");
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
