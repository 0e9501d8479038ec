//! TLS and mutual TLS on the engine's gRPC servers (`doppel_engine::tls`), with certificates
//! made at test time: a client holding a certificate from the client CA is served; a client
//! without one, with one from another CA, or speaking plaintext is refused. Also `doppel serve`'s
//! flags: TLS on both gRPC servers, a bad key refused at start-up, and a non-loopback API address
//! refused without `--allow-remote-api`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use doppel_engine::ingest::{self, ClusterRegistry, StoreConfig, WindowStore};
use doppel_engine::tls::{ServerTls, TlsFiles};
use doppel_engine::xds::build::{eds_cluster, endpoints};
use doppel_engine::xds::{ResourceType, Snapshot, SnapshotCache};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::metrics::v3::StreamMetricsMessage;
use envoy_types::pb::envoy::service::metrics::v3::metrics_service_client::MetricsServiceClient;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::serve_process::{self, serve_command};

/// The name the server's certificate is issued for, and the clients check.
const SERVER_NAME: &str = "doppel-engine";
const WAIT: Duration = Duration::from_secs(10);

/// A certificate and its key, PEM.
struct Pair {
    cert: String,
    key: String,
}

/// A CA that issues server and client certificates.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn issue(&self, name: &str, usage: ExtendedKeyUsagePurpose) -> Pair {
        let mut params = CertificateParams::new(vec![name.to_owned()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// The test PKI: the CA that signs the engine and the Envoys, their certificates, and a client
/// certificate from an unrelated CA.
struct Pki {
    ca: String,
    server: Pair,
    client: Pair,
    stranger: Pair,
}

fn pki() -> Pki {
    let ca = Ca::new("doppel test CA");
    let other = Ca::new("someone else's CA");
    Pki {
        ca: ca.pem(),
        server: ca.issue(SERVER_NAME, ExtendedKeyUsagePurpose::ServerAuth),
        client: ca.issue("envoy-1", ExtendedKeyUsagePurpose::ClientAuth),
        stranger: other.issue("envoy-1", ExtendedKeyUsagePurpose::ClientAuth),
    }
}

impl Pki {
    fn server_tls(&self, mutual: bool) -> ServerTls {
        ServerTls::from_pem(
            self.server.cert.as_bytes(),
            self.server.key.as_bytes(),
            mutual.then_some(self.ca.as_bytes()),
        )
    }

    /// A client TLS config trusting the CA, presenting `identity` if given.
    fn client_tls(&self, identity: Option<&Pair>) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .domain_name(SERVER_NAME);
        if let Some(pair) = identity {
            config = config.identity(Identity::from_pem(&pair.cert, &pair.key));
        }
        config
    }

    /// Writes the engine's files into `dir`: (cert, key, client CA).
    fn write(&self, dir: &Path) -> TlsFiles {
        let files = TlsFiles {
            cert: dir.join("engine.pem"),
            key: dir.join("engine-key.pem"),
            client_ca: Some(dir.join("ca.pem")),
        };
        std::fs::write(&files.cert, &self.server.cert).expect("cert");
        std::fs::write(&files.key, &self.server.key).expect("key");
        if let Some(ca) = &files.client_ca {
            std::fs::write(ca, &self.ca).expect("ca");
        }
        files
    }
}

/// How a test client connects.
enum Dial<'a> {
    Plaintext,
    Tls(&'a Pki, Option<&'a Pair>),
}

/// A channel to `address`, connected lazily so a refused handshake shows as the call's error.
fn channel(address: SocketAddr, dial: Dial<'_>) -> Channel {
    let endpoint = match dial {
        Dial::Plaintext => Endpoint::from_shared(format!("http://{address}")).expect("uri"),
        Dial::Tls(pki, identity) => Endpoint::from_shared(format!("https://{address}"))
            .expect("uri")
            .tls_config(pki.client_tls(identity))
            .expect("client tls"),
    };
    endpoint.timeout(WAIT).connect_timeout(WAIT).connect_lazy()
}

/// The MetricsService on an ephemeral port with `tls`; stops when the sender drops.
async fn metrics_server(tls: Option<ServerTls>) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let store = Arc::new(WindowStore::new(
        StoreConfig::default(),
        ClusterRegistry::new(),
    ));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(ingest::serve_with(listener, store, tls, async {
        let _ = stopped.await;
    }));
    (address, stop)
}

/// One MetricsService stream of one message; the server answers once it has read the stream.
async fn send_metrics(channel: Channel) -> Result<(), tonic::Status> {
    let message = StreamMetricsMessage {
        identifier: None,
        envoy_metrics: Vec::new(),
    };
    MetricsServiceClient::new(channel)
        .stream_metrics(tokio_stream::iter(vec![message]))
        .await
        .map(|_| ())
}

/// The ADS server on an ephemeral port with `tls`, node `tls-node` holding a cluster snapshot.
async fn ads_server(tls: Option<ServerTls>) -> (SocketAddr, oneshot::Sender<()>) {
    let cache = Arc::new(SnapshotCache::new());
    let upstream = SocketAddr::from(([127, 0, 0, 1], 9));
    let snapshot = Snapshot::builder(7)
        .cluster(&eds_cluster("primary", Duration::from_secs(1)))
        .endpoints(&endpoints("primary", &[upstream]))
        .build()
        .expect("snapshot");
    cache.set_snapshot("tls-node", snapshot).expect("set");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(doppel_engine::xds::serve_with(
        listener,
        cache,
        tls,
        async {
            let _ = stopped.await;
        },
    ));
    (address, stop)
}

/// An open ADS stream: the request side (kept open, or the stream would end) and the responses.
type AdsStream = (
    tokio::sync::mpsc::Sender<DiscoveryRequest>,
    tonic::Streaming<envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse>,
);

/// Opens an ADS stream as `node` asking for clusters; fails if the server refuses the client.
async fn open_ads(channel: Channel, node: &str) -> Result<AdsStream, tonic::Status> {
    let request = DiscoveryRequest {
        node: Some(Node {
            id: node.to_owned(),
            ..Default::default()
        }),
        type_url: ResourceType::Cluster.type_url().to_owned(),
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(request)
        .await
        .map_err(|_| tonic::Status::internal("request queue closed"))?;
    let responses = AggregatedDiscoveryServiceClient::new(channel)
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok((tx, responses))
}

/// Opens an ADS stream as `tls-node`, asks for clusters; the first response's version.
async fn fetch_clusters(channel: Channel) -> Result<String, tonic::Status> {
    let (tx, mut responses) = open_ads(channel, "tls-node").await?;
    let response = tokio::time::timeout(WAIT, responses.message())
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("no ADS response"))??
        .ok_or_else(|| tonic::Status::unavailable("ADS stream ended"))?;
    drop(tx);
    Ok(response.version_info)
}

#[tokio::test]
async fn tls_mutual_client_with_certificate_is_served() {
    let pki = pki();
    let (metrics, _stop_metrics) = metrics_server(Some(pki.server_tls(true))).await;
    send_metrics(channel(metrics, Dial::Tls(&pki, Some(&pki.client))))
        .await
        .expect("a client with a certificate from the client CA is served");
    let (ads, _stop_ads) = ads_server(Some(pki.server_tls(true))).await;
    let version = fetch_clusters(channel(ads, Dial::Tls(&pki, Some(&pki.client))))
        .await
        .expect("ADS over mutual TLS");
    assert_eq!(version, "7");
}

#[tokio::test]
async fn tls_mutual_server_refuses_a_client_without_certificate() {
    let pki = pki();
    let (metrics, _stop_metrics) = metrics_server(Some(pki.server_tls(true))).await;
    let refused = send_metrics(channel(metrics, Dial::Tls(&pki, None))).await;
    assert!(refused.is_err(), "no client certificate: {refused:?}");
    let (ads, _stop_ads) = ads_server(Some(pki.server_tls(true))).await;
    let refused = fetch_clusters(channel(ads, Dial::Tls(&pki, None))).await;
    assert!(refused.is_err(), "no client certificate: {refused:?}");
    // The same server still serves a client that has one: the refusal is about the client.
    send_metrics(channel(metrics, Dial::Tls(&pki, Some(&pki.client))))
        .await
        .expect("served with a certificate");
}

#[tokio::test]
async fn tls_mutual_server_refuses_a_certificate_from_another_ca() {
    let pki = pki();
    let (metrics, _stop_metrics) = metrics_server(Some(pki.server_tls(true))).await;
    let refused = send_metrics(channel(metrics, Dial::Tls(&pki, Some(&pki.stranger)))).await;
    assert!(refused.is_err(), "a stranger's certificate: {refused:?}");
    let (ads, _stop_ads) = ads_server(Some(pki.server_tls(true))).await;
    let refused = fetch_clusters(channel(ads, Dial::Tls(&pki, Some(&pki.stranger)))).await;
    assert!(refused.is_err(), "a stranger's certificate: {refused:?}");
}

#[tokio::test]
async fn tls_server_refuses_a_plaintext_client() {
    let pki = pki();
    // Server-only TLS: a TLS client without a certificate is served, plaintext is not.
    let (metrics, _stop_metrics) = metrics_server(Some(pki.server_tls(false))).await;
    send_metrics(channel(metrics, Dial::Tls(&pki, None)))
        .await
        .expect("TLS without a client certificate, no client CA configured");
    let refused = send_metrics(channel(metrics, Dial::Plaintext)).await;
    assert!(refused.is_err(), "plaintext to a TLS server: {refused:?}");
    let (ads, _stop_ads) = ads_server(Some(pki.server_tls(true))).await;
    let refused = fetch_clusters(channel(ads, Dial::Plaintext)).await;
    assert!(refused.is_err(), "plaintext to an mTLS server: {refused:?}");
    // And the plaintext server, unchanged, still serves plaintext.
    let (plain, _stop_plain) = ads_server(None).await;
    assert_eq!(
        fetch_clusters(channel(plain, Dial::Plaintext))
            .await
            .expect("plaintext ADS"),
        "7"
    );
}

#[test]
fn tls_load_names_the_bad_file() {
    let pki = pki();
    let dir = tempfile::tempdir().expect("tempdir");
    let files = pki.write(dir.path());
    let loaded = ServerTls::load(&files).expect("a good setup loads");
    assert!(loaded.mutual());

    let missing = TlsFiles {
        key: dir.path().join("nope.pem"),
        ..files.clone()
    };
    let error = ServerTls::load(&missing).expect_err("missing key");
    assert_eq!(error.code(), "tls_read");
    assert!(error.to_string().contains("nope.pem"), "{error}");

    // A key that is not the certificate's.
    let other = dir.path().join("other-key.pem");
    std::fs::write(&other, &pki.client.key).expect("write");
    let mismatched = TlsFiles {
        key: other,
        ..files.clone()
    };
    let error = ServerTls::load(&mismatched).expect_err("mismatched key");
    assert_eq!(error.code(), "tls_refused", "{error}");

    // A certificate where the key should be.
    let swapped = TlsFiles {
        key: files.cert.clone(),
        ..files
    };
    let error = ServerTls::load(&swapped).expect_err("not a key");
    assert_eq!(error.code(), "tls_not_pem", "{error}");
    assert!(error.to_string().contains("engine.pem"), "{error}");
}

/// A minimal serve config: no services, one node.
fn serve_config(dir: &Path) -> std::path::PathBuf {
    let config = dir.join("serve.yaml");
    std::fs::write(
        &config,
        "steering: filter_only\nfilter: { kind: wasm, path: /unused/doppel.wasm }\nnodes: [tls-test]\nservices: []\n",
    )
    .expect("config");
    config
}

fn doppel() -> Command {
    Command::new(env!("CARGO_BIN_EXE_doppel"))
}

#[test]
fn tls_serve_refuses_a_remote_api_without_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = serve_config(dir.path());
    let out = doppel()
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--store")
        .arg(dir.path().join("s.redb"))
        .args(["--xds", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
        .args(["--api", "0.0.0.0:0"])
        .env_remove("DOPPEL_API_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("--allow-remote-api"), "{stderr}");
    assert!(stderr.contains("0.0.0.0:0"), "{stderr}");

    // --tls-client-ca alone is refused by the argument parser: it needs a certificate.
    let out = doppel()
        .args(["serve", "--tls-client-ca", "ca.pem", "--config"])
        .arg(&config)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--tls-cert"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `doppel serve` with the TLS flags: both gRPC servers require a client certificate, and a
/// key that does not match is refused before anything listens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serve_flags_protect_both_grpc_servers() {
    let pki = pki();
    let dir = tempfile::tempdir().expect("tempdir");
    let files = pki.write(dir.path());
    let config = serve_config(dir.path());
    let mut command = serve_command(&config, &dir.path().join("s.redb"));
    command
        .arg("--tls-cert")
        .arg(&files.cert)
        .arg("--tls-key")
        .arg(&files.key)
        .arg("--tls-client-ca")
        .arg(files.client_ca.as_deref().expect("ca"));
    let engine = serve_process::start(command, dir.path());
    let address = |name: &str| engine.address(name);
    let metrics = address("metrics");
    let xds = address("xds");
    send_metrics(channel(metrics, Dial::Tls(&pki, Some(&pki.client))))
        .await
        .expect("metrics over mTLS");
    assert!(
        send_metrics(channel(metrics, Dial::Plaintext))
            .await
            .is_err()
    );
    assert!(
        send_metrics(channel(metrics, Dial::Tls(&pki, None)))
            .await
            .is_err()
    );
    // The engine's xDS server: plaintext and certificate-less clients are refused; a client
    // with a certificate gets its stream.
    assert!(fetch_clusters(channel(xds, Dial::Plaintext)).await.is_err());
    assert!(
        fetch_clusters(channel(xds, Dial::Tls(&pki, None)))
            .await
            .is_err()
    );
    open_ads(channel(xds, Dial::Tls(&pki, Some(&pki.client))), "tls-test")
        .await
        .expect("an ADS stream over mTLS opens");
    drop(engine);

    // A key that does not match the certificate: refused at start-up, naming the files.
    let out = serve_command(&config, &dir.path().join("s2.redb"))
        .arg("--tls-cert")
        .arg(&files.cert)
        .arg("--tls-key")
        .arg(files.client_ca.as_deref().expect("ca"))
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("ca.pem"), "{stderr}");
}
