//! The ADS server over real gRPC on loopback: a tonic client against the
//! server pilot-discovery runs, including what a broken or hostile client sends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use api::mesh::MeshConfig;
use api::xds::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use api::xds::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use pilot::config::dir::snapshot_from_texts;
use pilot::xds::fixtures::{mesh_yaml, push_from_yaml, sidecar_node};
use pilot::xds::metrics::XdsMetrics;
use pilot::xds::push::PushContext;
use pilot::xds::resource::{CLUSTER, ENDPOINT};
use pilot::xds::server::DiscoveryServer;
use pilot::xds::server::grpc::AdsService;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::Code;

struct Server {
    addr: String,
    push: watch::Sender<Arc<PushContext>>,
    clients: pilot::xds::server::Clients,
    _shutdown: tokio_util::sync::DropGuard,
}

async fn serve() -> Server {
    let push = push_from_yaml(1, &mesh_yaml(3, 2), MeshConfig::default());
    serve_with(watch::channel(Arc::new(push)).0, watch::channel(true).1, 10).await
}

async fn serve_with(
    push: watch::Sender<Arc<PushContext>>,
    ready: watch::Receiver<bool>,
    throttle: usize,
) -> Server {
    let shutdown = CancellationToken::new();
    let server = DiscoveryServer::new(
        push.subscribe(),
        ready,
        XdsMetrics::new(&mesh::metrics::Metrics::default()),
        shutdown.clone(),
        throttle,
    );
    let clients = server.clients();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let stop = shutdown.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(AdsService::new(server))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop.cancelled())
            .await
    });
    Server {
        addr,
        push,
        clients,
        _shutdown: shutdown.drop_guard(),
    }
}

fn request(type_url: &str, names: &[&str], ack: Option<&DiscoveryResponse>) -> DiscoveryRequest {
    DiscoveryRequest {
        node: Some(sidecar_node("10.100.0.2", "svc-0-0", false)),
        type_url: type_url.into(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        version_info: ack.map(|r| r.version_info.clone()).unwrap_or_default(),
        response_nonce: ack.map(|r| r.nonce.clone()).unwrap_or_default(),
        error_detail: None,
    }
}

async fn next(stream: &mut tonic::Streaming<DiscoveryResponse>) -> DiscoveryResponse {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a response in time")
        .expect("stream open")
        .expect("a response, not an error")
}

/// A stream that has asked for clusters; the sender keeps it open.
async fn open_cds_stream(
    server: &Server,
) -> (
    mpsc::Sender<DiscoveryRequest>,
    tonic::Streaming<DiscoveryResponse>,
) {
    let mut client = AggregatedDiscoveryServiceClient::connect(server.addr.clone())
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(4);
    tx.send(request(CLUSTER, &[], None)).await.unwrap();
    let responses = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (tx, responses)
}

fn cluster_names(cds: &DiscoveryResponse) -> Vec<String> {
    cds.resources
        .iter()
        .map(|a| Cluster::decode(a.value.clone()).unwrap().name)
        .collect()
}

/// A well-behaved client still gets its clusters.
async fn still_serves(client: &mut AggregatedDiscoveryServiceClient<tonic::transport::Channel>) {
    let mut good = client
        .stream_aggregated_resources(tokio_stream::iter(vec![request(CLUSTER, &[], None)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut good).await.type_url, CLUSTER);
}

#[tokio::test]
async fn state_of_the_world_over_grpc() {
    let server = serve().await;
    let (tx, mut responses) = open_cds_stream(&server).await;

    let cds = next(&mut responses).await;
    assert_eq!(cds.type_url, CLUSTER);
    let names = cluster_names(&cds);
    assert!(
        names.contains(&"outbound|8080|v1|svc-2.default.svc.cluster.local".to_string()),
        "{names:?}"
    );

    // ACK, subscribe to one load assignment, and see a push when the endpoints move.
    tx.send(request(CLUSTER, &[], Some(&cds))).await.unwrap();
    let eds_name = "outbound|8080||svc-1.default.svc.cluster.local";
    tx.send(request(ENDPOINT, &[eds_name], None)).await.unwrap();
    let eds = next(&mut responses).await;
    assert_eq!((eds.type_url.as_str(), eds.resources.len()), (ENDPOINT, 1));
    tx.send(request(ENDPOINT, &[eds_name], Some(&eds)))
        .await
        .unwrap();

    let moved = push_from_yaml(
        2,
        &mesh_yaml(3, 2).replace("10.100.1.3", "10.100.1.77"),
        MeshConfig::default(),
    );
    let started = Instant::now();
    let current = server.push.borrow().clone();
    server
        .push
        .send_replace(Arc::new(pilot::xds::generate::endpoint_push(
            &current,
            2,
            &moved.model,
            Instant::now(),
        )));
    let pushed = next(&mut responses).await;
    assert_eq!(
        pushed.type_url, ENDPOINT,
        "only EDS is pushed for an endpoint change"
    );
    assert_ne!(pushed.version_info, eds.version_info);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn a_bad_node_closes_only_its_own_stream() {
    let server = serve().await;
    let mut client = AggregatedDiscoveryServiceClient::connect(server.addr.clone())
        .await
        .unwrap();
    let mut bad = request(CLUSTER, &[], None);
    bad.node = Some(api::xds::Node {
        id: "not-a-node-id".into(),
        ..Default::default()
    });
    let mut responses = client
        .stream_aggregated_resources(tokio_stream::iter(vec![bad]))
        .await
        .unwrap()
        .into_inner();
    let status = tokio::time::timeout(Duration::from_secs(10), responses.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("not-a-node-id"), "{status}");

    still_serves(&mut client).await;
}

/// Sends raw bytes as the request message, to put broken protobuf on the wire.
#[derive(Default)]
struct RawCodec;

struct RawEncoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = DiscoveryResponse;
    type Encoder = RawEncoder;
    type Decoder = tonic_prost::ProstDecoder<DiscoveryResponse>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic::codec::Codec::decoder(&mut tonic_prost::ProstCodec::<
            DiscoveryRequest,
            DiscoveryResponse,
        >::default())
    }
}

#[tokio::test]
async fn broken_protobuf_is_refused_and_the_server_stays_up() {
    let server = serve().await;
    let channel = tonic::transport::Endpoint::from_shared(server.addr.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(
        "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
    );
    // Field 2 (node) claims 127 bytes and the message ends after one.
    let garbage = vec![0x12, 0x7f, 0x0a];
    let result = grpc
        .streaming(
            tonic::Request::new(tokio_stream::iter(vec![garbage])),
            path,
            RawCodec,
        )
        .await;
    let status = match result {
        Err(status) => status,
        Ok(response) => {
            let mut stream = response.into_inner();
            let item = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .unwrap();
            item.expect("the stream ends with a status")
                .expect_err("no response to garbage")
        }
    };
    assert_ne!(status.code(), Code::Ok);
    assert!(status.message().contains("decode"), "{status}");

    let mut client = AggregatedDiscoveryServiceClient::connect(server.addr.clone())
        .await
        .unwrap();
    still_serves(&mut client).await;
}

#[tokio::test]
async fn delta_xds_is_refused_clearly() {
    let server = serve().await;
    let mut client = AggregatedDiscoveryServiceClient::connect(server.addr.clone())
        .await
        .unwrap();
    let status = client
        .delta_aggregated_resources(tokio_stream::iter(
            Vec::<api::xds::DeltaDiscoveryRequest>::new(),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    assert!(status.message().contains("state-of-the-world"));
}

/// Until the registries have synced, a connecting proxy is told nothing: an
/// empty mesh would make a reconnecting Envoy drop every cluster it has.
#[tokio::test]
async fn xds_waits_until_the_registries_have_synced() {
    use pilot::debounce::{Builder, Debounce, Inputs};
    let empty = pilot::xds::generate::build_push(
        0,
        &Default::default(),
        Arc::default(),
        Arc::default(),
        "cluster.local",
        Instant::now(),
    );
    let (push_tx, _) = watch::channel(Arc::new(empty));
    let (ready_tx, ready_rx) = watch::channel(false);
    let server = serve_with(push_tx.clone(), ready_rx, 10).await;
    let snap = snapshot_from_texts(&[("mesh.yaml", &mesh_yaml(3, 2))]);
    let (_config_tx, config_rx) = watch::channel(Some(snap.config.clone()));
    // The registry has not listed anything yet: a slow API server.
    let (registry_tx, registry_rx) = watch::channel(None);
    let builder = Builder {
        mesh: Arc::default(),
        domain: "cluster.local".into(),
        debounce: Debounce::default(),
        metrics: XdsMetrics::new(&mesh::metrics::Metrics::default()),
    };
    let inputs = Inputs {
        config: config_rx,
        registries: vec![registry_rx],
    };
    let stop = CancellationToken::new();
    tokio::spawn(builder.run(inputs, push_tx, ready_tx, stop.clone()));
    let _stop = stop.drop_guard();

    let (_requests, mut responses) = open_cds_stream(&server).await;
    let early = tokio::time::timeout(Duration::from_millis(500), responses.next()).await;
    assert!(
        early.is_err(),
        "answered before the registry synced: {early:?}"
    );

    registry_tx.send_replace(Some(snap.cluster.clone()));
    let cds = next(&mut responses).await;
    let names = cluster_names(&cds);
    assert!(
        names.contains(&"outbound|8080||svc-2.default.svc.cluster.local".to_string()),
        "the first answer is the synced mesh: {names:?}"
    );
}

/// A proxy that stops reading blocks only its own stream: with a throttle of
/// one, a stuck stream holding the permit would stall every other proxy.
#[tokio::test]
async fn a_client_that_never_reads_does_not_stall_the_others() {
    let server = serve_with(
        watch::channel(Arc::new(push_from_yaml(
            1,
            &mesh_yaml(200, 2),
            MeshConfig::default(),
        )))
        .0,
        watch::channel(true).1,
        1,
    )
    .await;
    // Small HTTP/2 windows so that the stuck stream fills up quickly.
    let channel = tonic::transport::Endpoint::from_shared(server.addr.clone())
        .unwrap()
        .initial_stream_window_size(Some(65_535))
        .initial_connection_window_size(Some(65_535))
        .connect()
        .await
        .unwrap();
    let mut stuck = AggregatedDiscoveryServiceClient::new(channel);
    let (stuck_tx, rx) = mpsc::channel(1);
    stuck_tx.send(request(CLUSTER, &[], None)).await.unwrap();
    let mut stuck_responses = stuck
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut stuck_responses).await.type_url, CLUSTER);
    // From here on the stuck client reads nothing.

    let seen = |version: u64| {
        let clients = server.clients.lock().unwrap();
        clients.values().any(|c| c.push_version >= version)
    };
    let mut blocked = false;
    for version in 2..40u64 {
        let push = push_from_yaml(
            version,
            &mesh_yaml(200 + version as usize, 2),
            MeshConfig::default(),
        );
        server.push.send_replace(Arc::new(push));
        let deadline = Instant::now() + Duration::from_secs(2);
        while !seen(version) && Instant::now() < deadline {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if !seen(version) {
            blocked = true;
            break;
        }
    }
    assert!(
        blocked,
        "the stuck stream never filled up; the test proves nothing"
    );

    let mut client = AggregatedDiscoveryServiceClient::connect(server.addr.clone())
        .await
        .unwrap();
    still_serves(&mut client).await;
    drop(stuck_tx);
}
