//! The ADS server over gRPC, driven by envoy-types' own ADS client: ACK/NACK bookkeeping,
//! warming order, one response in flight per type, delta changes and removals, and a push
//! to many streams.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use doppel_engine::xds::build::{eds_cluster, endpoints, http_listener, weighted_route};
use doppel_engine::xds::{ResourceType, Snapshot, SnapshotCache};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(10);

struct Server {
    cache: Arc<SnapshotCache>,
    address: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn server() -> Server {
    let cache = Arc::new(SnapshotCache::new());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(doppel_engine::xds::serve(
        listener,
        Arc::clone(&cache),
        async {
            let _ = stopped.await;
        },
    ));
    Server {
        cache,
        address,
        _stop: stop,
    }
}

async fn client(address: SocketAddr) -> AggregatedDiscoveryServiceClient<Channel> {
    AggregatedDiscoveryServiceClient::connect(format!("http://{address}"))
        .await
        .expect("connect")
}

fn upstream() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9))
}

fn clusters_only(version: u64, shadow_timeout_s: u64, with_shadow: bool) -> Snapshot {
    let mut builder = Snapshot::builder(version)
        .cluster(&eds_cluster("primary", Duration::from_secs(1)))
        .endpoints(&endpoints("primary", &[upstream()]));
    if with_shadow {
        builder = builder
            .cluster(&eds_cluster(
                "shadow",
                Duration::from_secs(shadow_timeout_s),
            ))
            .endpoints(&endpoints("shadow", &[upstream()]));
    }
    builder.build().expect("builds")
}

/// A state-of-the-world stream: a request sender and the response stream.
struct Sotw {
    requests: mpsc::Sender<DiscoveryRequest>,
    responses: Streaming<DiscoveryResponse>,
}

impl Sotw {
    async fn open(client: &mut AggregatedDiscoveryServiceClient<Channel>) -> Sotw {
        let (requests, rx) = mpsc::channel(64);
        let responses = client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .expect("stream opens")
            .into_inner();
        Sotw {
            requests,
            responses,
        }
    }

    async fn send(&self, request: DiscoveryRequest) {
        self.requests.send(request).await.expect("stream open");
    }

    async fn subscribe(&self, node: &str, kind: ResourceType, names: &[&str]) {
        self.send(DiscoveryRequest {
            node: Some(Node {
                id: node.to_owned(),
                ..Default::default()
            }),
            type_url: kind.type_url().to_owned(),
            resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
            ..Default::default()
        })
        .await;
    }

    /// Answers `response`: an ACK, or a NACK when `error` is given.
    async fn answer(&self, response: &DiscoveryResponse, names: &[&str], error: Option<&str>) {
        self.send(DiscoveryRequest {
            version_info: response.version_info.clone(),
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
            error_detail: error.map(|message| RpcStatus {
                code: 3,
                message: message.to_owned(),
                details: Vec::new(),
            }),
            ..Default::default()
        })
        .await;
    }

    async fn next(&mut self) -> DiscoveryResponse {
        tokio::time::timeout(WAIT, self.responses.message())
            .await
            .expect("a response in time")
            .expect("stream healthy")
            .expect("stream open")
    }

    async fn nothing_within(&mut self, wait: Duration) {
        if let Ok(response) = tokio::time::timeout(wait, self.responses.message()).await {
            panic!("expected no response, got {response:?}");
        }
    }
}

fn names(response: &DiscoveryResponse) -> Vec<String> {
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use prost::Message;
    response
        .resources
        .iter()
        .map(|any| {
            Cluster::decode(any.value.as_slice())
                .map(|c| c.name)
                .unwrap_or_default()
        })
        .collect()
}

#[tokio::test]
async fn xds_sotw_records_ack_and_nack_and_restores_the_last_good_version() {
    let server = server().await;
    let mut stream = Sotw::open(&mut client(server.address).await).await;
    stream
        .subscribe("envoy-1", ResourceType::Cluster, &[])
        .await;

    server
        .cache
        .set_snapshot("envoy-1", clusters_only(1, 1, true))
        .expect("v1");
    let v1 = stream.next().await;
    assert_eq!(v1.version_info, "1");
    assert_eq!(v1.type_url, ResourceType::Cluster.type_url());
    assert_eq!(names(&v1), ["primary", "shadow"]);
    stream.answer(&v1, &[], None).await;
    let status = server
        .cache
        .wait_status("envoy-1", |s| s.of(ResourceType::Cluster).acked == Some(1))
        .await;
    assert_eq!(status.streams, 1);

    server
        .cache
        .set_snapshot("envoy-1", clusters_only(2, 7, true))
        .expect("v2");
    let v2 = stream.next().await;
    assert_eq!(v2.version_info, "2");
    stream
        .answer(&v1, &[], Some("cluster shadow: bad timeout"))
        .await; // a stale nonce: no NACK of v2
    stream
        .answer(&v2, &[], Some("cluster shadow: bad timeout"))
        .await;
    let status = server
        .cache
        .wait_status("envoy-1", |s| s.of(ResourceType::Cluster).nacked.is_some())
        .await;
    let cds = status.of(ResourceType::Cluster);
    assert_eq!(cds.acked, Some(1));
    let nack = cds.nacked.clone().expect("nack");
    assert_eq!(
        (nack.version, nack.error.as_str()),
        (2, "cluster shadow: bad timeout")
    );
    assert!(cds.is_rejecting());
    stream.nothing_within(Duration::from_millis(200)).await;

    let restored = server.cache.restore_last_good("envoy-1").expect("restore");
    assert_eq!(restored, 3);
    let v3 = stream.next().await;
    assert_eq!(v3.version_info, "3");
    assert_eq!(v3.resources, v1.resources, "the last acknowledged content");
    stream.answer(&v3, &[], None).await;
    let status = server
        .cache
        .wait_status("envoy-1", |s| s.of(ResourceType::Cluster).acked == Some(3))
        .await;
    assert!(!status.of(ResourceType::Cluster).is_rejecting());
}

/// A snapshot where every type differs with `version`.
fn all_types_at(version: u64) -> Snapshot {
    let port = u16::try_from(version).expect("small version");
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let timeout = Duration::from_secs(version);
    Snapshot::builder(version)
        .cluster(&eds_cluster("primary", timeout))
        .cluster(&eds_cluster("shadow", timeout))
        .endpoints(&endpoints("primary", &[address]))
        .endpoints(&endpoints("shadow", &[address]))
        .listener(&http_listener("ingress", address, "routes", Vec::new()))
        .route(&weighted_route(
            "routes",
            &[("primary", 100), ("shadow", u32::from(port))],
        ))
        .build()
        .expect("builds")
}

#[tokio::test]
async fn xds_sotw_pushes_in_warming_order_and_one_response_per_type_in_flight() {
    let server = server().await;
    server
        .cache
        .set_snapshot("envoy-2", all_types_at(1))
        .expect("v1");
    let mut stream = Sotw::open(&mut client(server.address).await).await;
    // Subscribed in reverse warming order; each is answered and acknowledged.
    let subscriptions: [(ResourceType, &[&str]); 4] = [
        (ResourceType::Route, &["routes"]),
        (ResourceType::Listener, &[]),
        (ResourceType::Endpoint, &["primary", "shadow"]),
        (ResourceType::Cluster, &[]),
    ];
    for (kind, names) in subscriptions {
        stream.subscribe("envoy-2", kind, names).await;
        let response = stream.next().await;
        assert_eq!(response.type_url, kind.type_url());
        assert_eq!(response.version_info, "1");
        stream.answer(&response, names, None).await;
    }
    server
        .cache
        .wait_status("envoy-2", |s| {
            ResourceType::ALL[..4]
                .iter()
                .all(|kind| s.of(*kind).acked == Some(1))
        })
        .await;

    // One snapshot changing every type: pushed CDS, EDS, LDS, RDS.
    server
        .cache
        .set_snapshot("envoy-2", all_types_at(2))
        .expect("v2");
    let mut order = Vec::new();
    let mut routes = None;
    for _ in 0..4 {
        let response = stream.next().await;
        let kind = ResourceType::from_type_url(&response.type_url).expect("known type");
        order.push(kind);
        if kind == ResourceType::Route {
            routes = Some(response);
        }
    }
    assert_eq!(
        order,
        [
            ResourceType::Cluster,
            ResourceType::Endpoint,
            ResourceType::Listener,
            ResourceType::Route
        ]
    );

    // Nothing acknowledged yet: newer snapshots wait, and coalesce into the newest.
    server
        .cache
        .set_snapshot("envoy-2", all_types_at(3))
        .expect("v3");
    server
        .cache
        .set_snapshot("envoy-2", all_types_at(4))
        .expect("v4");
    stream.nothing_within(Duration::from_millis(200)).await;
    let routes = routes.expect("routes pushed");
    stream.answer(&routes, &["routes"], None).await;
    let next = stream.next().await;
    assert_eq!(next.type_url, ResourceType::Route.type_url());
    assert_eq!(next.version_info, "4", "v3 was skipped");
}

/// A delta stream.
struct Delta {
    requests: mpsc::Sender<DeltaDiscoveryRequest>,
    responses: Streaming<DeltaDiscoveryResponse>,
}

impl Delta {
    async fn open(
        client: &mut AggregatedDiscoveryServiceClient<Channel>,
        node: &str,
        held: &[(&str, &str)],
    ) -> Delta {
        let (requests, rx) = mpsc::channel(64);
        let responses = client
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
            .expect("stream opens")
            .into_inner();
        let delta = Delta {
            requests,
            responses,
        };
        delta
            .send(DeltaDiscoveryRequest {
                node: Some(Node {
                    id: node.to_owned(),
                    ..Default::default()
                }),
                type_url: ResourceType::Cluster.type_url().to_owned(),
                initial_resource_versions: held
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                    .collect(),
                ..Default::default()
            })
            .await;
        delta
    }

    async fn send(&self, request: DeltaDiscoveryRequest) {
        self.requests.send(request).await.expect("stream open");
    }

    async fn ack(&self, response: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            ..Default::default()
        })
        .await;
    }

    async fn next(&mut self) -> DeltaDiscoveryResponse {
        tokio::time::timeout(WAIT, self.responses.message())
            .await
            .expect("a response in time")
            .expect("stream healthy")
            .expect("stream open")
    }
}

fn delta_names(response: &DeltaDiscoveryResponse) -> Vec<&str> {
    response.resources.iter().map(|r| r.name.as_str()).collect()
}

#[tokio::test]
async fn xds_delta_sends_only_changes_and_removals() {
    let server = server().await;
    let mut grpc = client(server.address).await;
    server
        .cache
        .set_snapshot("envoy-3", clusters_only(1, 1, true))
        .expect("v1");
    let mut stream = Delta::open(&mut grpc, "envoy-3", &[]).await;
    let v1 = stream.next().await;
    assert_eq!(delta_names(&v1), ["primary", "shadow"]);
    assert_eq!(v1.system_version_info, "1");
    stream.ack(&v1).await;

    server
        .cache
        .set_snapshot("envoy-3", clusters_only(2, 9, true))
        .expect("v2");
    let v2 = stream.next().await;
    assert_eq!(delta_names(&v2), ["shadow"], "only the changed cluster");
    assert!(v2.removed_resources.is_empty());
    stream.ack(&v2).await;

    server
        .cache
        .set_snapshot("envoy-3", clusters_only(3, 9, false))
        .expect("v3");
    let v3 = stream.next().await;
    assert!(v3.resources.is_empty());
    assert_eq!(v3.removed_resources, ["shadow"]);
    stream.ack(&v3).await;
    server
        .cache
        .wait_status("envoy-3", |s| s.of(ResourceType::Cluster).acked == Some(3))
        .await;

    // A reconnecting client that already holds the current primary gets nothing new.
    let primary_version = v1.resources[0].version.clone();
    let mut again = Delta::open(&mut grpc, "envoy-3", &[("primary", &primary_version)]).await;
    let first = again.next().await;
    assert!(first.resources.is_empty(), "{first:?}");
    assert!(first.removed_resources.is_empty());
}

#[tokio::test]
async fn xds_refuses_a_stream_whose_first_request_has_no_node() {
    let server = server().await;
    let mut grpc = client(server.address).await;
    let (requests, rx) = mpsc::channel(4);
    let mut responses = grpc
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .expect("stream opens")
        .into_inner();
    requests
        .send(DiscoveryRequest {
            type_url: ResourceType::Cluster.type_url().to_owned(),
            ..Default::default()
        })
        .await
        .expect("sent");
    let status = tokio::time::timeout(WAIT, responses.message())
        .await
        .expect("in time")
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("node.id"), "{}", status.message());
}

/// A quick check, not a benchmark: one snapshot reaches 1,000 streams of one node, and a
/// second push reaches them all again. Prints the time each push took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xds_push_reaches_1000_streams() {
    const STREAMS: usize = 1000;
    const CONNECTIONS: usize = 10;
    let server = server().await;
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        clients.push(client(server.address).await);
    }
    let mut streams = Vec::new();
    for i in 0..STREAMS {
        let stream = Sotw::open(&mut clients[i % CONNECTIONS]).await;
        stream.subscribe("fleet", ResourceType::Cluster, &[]).await;
        streams.push(stream);
    }
    server
        .cache
        .wait_status("fleet", |s| s.streams == STREAMS)
        .await;

    for version in 1..=2u64 {
        let started = Instant::now();
        server
            .cache
            .set_snapshot("fleet", clusters_only(version, version, true))
            .expect("set");
        let mut tasks = Vec::new();
        for mut stream in streams.drain(..) {
            tasks.push(tokio::spawn(async move {
                let response = stream.next().await;
                stream.answer(&response, &[], None).await;
                (stream, response.version_info)
            }));
        }
        for task in tasks {
            let (stream, seen) = task.await.expect("stream task");
            assert_eq!(seen, version.to_string());
            streams.push(stream);
        }
        eprintln!(
            "xds push v{version} reached {STREAMS} streams in {:?}",
            started.elapsed()
        );
        server
            .cache
            .wait_status("fleet", |s| {
                s.of(ResourceType::Cluster).acked == Some(version)
            })
            .await;
    }
}

#[tokio::test]
async fn xds_serve_ends_open_streams_and_returns_on_shutdown() {
    let cache = Arc::new(SnapshotCache::new());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(doppel_engine::xds::serve(
        listener,
        Arc::clone(&cache),
        async {
            let _ = stopped.await;
        },
    ));
    cache
        .set_snapshot("envoy-4", clusters_only(1, 1, true))
        .expect("v1");
    let mut stream = Sotw::open(&mut client(address).await).await;
    stream
        .subscribe("envoy-4", ResourceType::Cluster, &[])
        .await;
    let v1 = stream.next().await;
    stream.answer(&v1, &[], None).await;

    stop.send(()).expect("server running");
    let ended = tokio::time::timeout(WAIT, stream.responses.message())
        .await
        .expect("the stream ends in time");
    let status = ended.expect_err("ended with a status");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    tokio::time::timeout(WAIT, server)
        .await
        .expect("serve returns in time")
        .expect("joined")
        .expect("clean shutdown");
    let status = cache.status("envoy-4").expect("known node");
    assert_eq!(status.streams, 0);
}
