//! OTLP collectors for the tests, on 127.0.0.1: a gRPC receiver (the
//! generated tonic `TraceService`, optionally slow), an HTTP/protobuf
//! receiver (axum + prost), and a black hole that accepts connections and
//! never answers. Each lives on its own runtime or thread and stops when
//! dropped with the test.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::AnyValue;
use prost::Message;

use super::Harness;

/// Everything a receiver got, one entry per export request.
#[derive(Clone, Default)]
pub struct Received(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

/// One received span, flattened.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub status_code: i32,
    pub attributes: HashMap<String, String>,
    pub events: Vec<String>,
    pub resource: HashMap<String, String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

impl Received {
    fn push(&self, request: ExportTraceServiceRequest) {
        self.0.lock().unwrap().push(request);
    }

    /// How many export requests arrived.
    pub fn exports(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// Every span received, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        let requests = self.0.lock().unwrap();
        let mut spans = Vec::new();
        for request in requests.iter() {
            for resource_spans in &request.resource_spans {
                let resource: HashMap<String, String> = resource_spans
                    .resource
                    .iter()
                    .flat_map(|r| r.attributes.iter())
                    .map(|kv| (kv.key.clone(), text(&kv.value)))
                    .collect();
                for scope in &resource_spans.scope_spans {
                    for span in &scope.spans {
                        spans.push(ReceivedSpan {
                            name: span.name.clone(),
                            trace_id: hex(&span.trace_id),
                            span_id: hex(&span.span_id),
                            parent_span_id: hex(&span.parent_span_id),
                            status_code: span.status.as_ref().map_or(0, |s| s.code),
                            attributes: span
                                .attributes
                                .iter()
                                .map(|kv| (kv.key.clone(), text(&kv.value)))
                                .collect(),
                            events: span.events.iter().map(|e| e.name.clone()).collect(),
                            resource: resource.clone(),
                        });
                    }
                }
            }
        }
        spans
    }

    /// The `jobloop.iteration` spans, by iteration number.
    pub fn iterations(&self) -> Vec<ReceivedSpan> {
        let mut spans: Vec<_> = self
            .spans()
            .into_iter()
            .filter(|s| s.name == "jobloop.iteration")
            .collect();
        spans.sort_by_key(|s| {
            s.attributes
                .get("jobloop.iteration")
                .and_then(|i| i.parse::<u64>().ok())
        });
        spans
    }
}

/// The gRPC service: keeps every request, answers after `delay`.
struct GrpcSink {
    received: Received,
    delay: Duration,
}

#[tonic::async_trait]
impl TraceService for GrpcSink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.received.push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// A receiver on its own runtime; dropped at the end of the test.
pub struct Receiver {
    /// What it got.
    pub received: Received,
    /// `http://127.0.0.1:PORT`, for OTEL_EXPORTER_OTLP_ENDPOINT.
    pub endpoint: String,
    _runtime: tokio::runtime::Runtime,
}

fn runtime_and_listener() -> (tokio::runtime::Runtime, tokio::net::TcpListener, SocketAddr) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let address = listener.local_addr().unwrap();
    (runtime, listener, address)
}

/// A gRPC trace receiver that answers at once.
pub fn grpc_receiver() -> Receiver {
    slow_grpc_receiver(Duration::ZERO)
}

/// A gRPC trace receiver that answers every export after `delay`.
pub fn slow_grpc_receiver(delay: Duration) -> Receiver {
    let (runtime, listener, address) = runtime_and_listener();
    let received = Received::default();
    let sink = GrpcSink {
        received: received.clone(),
        delay,
    };
    runtime.spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(sink))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    Receiver {
        received,
        endpoint: format!("http://{address}"),
        _runtime: runtime,
    }
}

/// An HTTP/protobuf trace receiver on `POST /v1/traces`.
pub fn http_receiver() -> Receiver {
    use axum::routing::post;
    let (runtime, listener, address) = runtime_and_listener();
    let received = Received::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                match ExportTraceServiceRequest::decode(body) {
                    Ok(request) => {
                        sink.push(request);
                        let response = ExportTraceServiceResponse {
                            partial_success: None,
                        }
                        .encode_to_vec();
                        (
                            axum::http::StatusCode::OK,
                            [("content-type", "application/x-protobuf")],
                            response,
                        )
                    }
                    Err(_) => (
                        axum::http::StatusCode::BAD_REQUEST,
                        [("content-type", "text/plain")],
                        Vec::new(),
                    ),
                }
            }
        }),
    );
    runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver {
        received,
        endpoint: format!("http://{address}"),
        _runtime: runtime,
    }
}

/// Accepts TCP connections and never answers, for as long as it lives.
pub struct BlackHole {
    /// Where it listens.
    pub address: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl BlackHole {
    /// Listens on a free loopback port.
    pub fn new() -> BlackHole {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            listener.set_nonblocking(true).unwrap();
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => held.push(stream),
                    // The accept loop's pace, not a synchronisation.
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        BlackHole { address, stop }
    }

    /// `http://ADDRESS`, for OTEL_EXPORTER_OTLP_ENDPOINT.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The settings that export spans to `endpoint` over `protocol` (`grpc`,
/// `http/protobuf`), flushing a batch every 100 ms.
pub fn otlp_env<'a>(endpoint: &'a str, protocol: &'a str) -> [(&'a str, &'a str); 3] {
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ]
}

impl Harness {
    /// Sets [`otlp_env`]: spans go to `endpoint` over `protocol`.
    pub fn otlp(&mut self, endpoint: &str, protocol: &str) -> &mut Harness {
        self.envs(&otlp_env(endpoint, protocol))
    }
}
