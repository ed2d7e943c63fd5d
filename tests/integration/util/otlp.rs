//! OTLP collectors for the tests, on 127.0.0.1: a gRPC receiver (the
//! generated tonic `TraceService`, optionally slow), an HTTP/protobuf
//! receiver (axum + prost), and a black hole that accepts connections and
//! never answers. Each lives on its own runtime or thread and stops when
//! dropped with the test. Both receivers accept gzip and record each
//! request's encoding; [`tls_front`] puts TLS (and optionally mTLS) made
//! from a throw-away [`TestPki`] in front of either.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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

/// Everything a receiver got, one entry per export request, and the
/// content encoding of each request (`identity` when none).
#[derive(Clone, Default)]
pub struct Received(
    Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    Arc<Mutex<Vec<String>>>,
);

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

    fn encoding(&self, encoding: Option<&str>) {
        self.1
            .lock()
            .unwrap()
            .push(encoding.unwrap_or("identity").to_string());
    }

    /// The `grpc-encoding` / `Content-Encoding` of each request received.
    pub fn encodings(&self) -> Vec<String> {
        self.1.lock().unwrap().clone()
    }

    /// How many export requests arrived.
    pub fn exports(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// How many spans each export request carried, in arrival order.
    pub fn spans_per_export(&self) -> Vec<usize> {
        let requests = self.0.lock().unwrap();
        requests
            .iter()
            .map(|request| {
                request
                    .resource_spans
                    .iter()
                    .flat_map(|r| &r.scope_spans)
                    .map(|scope| scope.spans.len())
                    .sum()
            })
            .collect()
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
        self.received.encoding(
            request
                .metadata()
                .get("grpc-encoding")
                .and_then(|v| v.to_str().ok()),
        );
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
            .add_service(
                TraceServiceServer::new(sink)
                    .accept_compressed(tonic::codec::CompressionEncoding::Gzip),
            )
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
        post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let sink = sink.clone();
                async move {
                    let encoding = headers
                        .get("content-encoding")
                        .and_then(|v| v.to_str().ok());
                    sink.encoding(encoding);
                    let body = if encoding == Some("gzip") {
                        let mut plain = Vec::new();
                        std::io::Read::read_to_end(
                            &mut flate2::read::GzDecoder::new(&body[..]),
                            &mut plain,
                        )
                        .map(|_| axum::body::Bytes::from(plain))
                        .unwrap_or_default()
                    } else {
                        body
                    };
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
            },
        ),
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

/// A throw-away PKI made with the `openssl` command line: a CA (EC P-256,
/// v3, `basicConstraints=critical,CA:TRUE`), a server certificate for
/// `IP:127.0.0.1,DNS:localhost`, a client certificate, and a second CA
/// that signed nothing here (a CA that does not trust the server).
pub struct TestPki {
    _dir: tempfile::TempDir,
    /// The CA's certificate (PEM).
    pub ca: PathBuf,
    /// Another CA's certificate, which did not sign the server's.
    pub other_ca: PathBuf,
    /// Server certificate and key.
    pub server_cert: PathBuf,
    /// Server key (PKCS#8).
    pub server_key: PathBuf,
    /// Client certificate, signed by the CA.
    pub client_cert: PathBuf,
    /// Client key (PKCS#8).
    pub client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command line");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl TestPki {
    /// Makes the CA and certificates in a temporary directory.
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let key = |name: &str| {
            openssl(
                d,
                &[
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-out",
                    name,
                ],
            )
        };
        for (ca, cn) in [("ca", "jobloop test CA"), ("other", "another test CA")] {
            key(&format!("{ca}.key"));
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-new",
                    "-key",
                    &format!("{ca}.key"),
                    "-sha256",
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN={cn}"),
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                    "-out",
                    &format!("{ca}.pem"),
                ],
            );
        }
        std::fs::write(
            d.join("server.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        std::fs::write(
            d.join("client.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=clientAuth\n",
        )
        .unwrap();
        for (leaf, cn) in [("server", "localhost"), ("client", "jobloop")] {
            key(&format!("{leaf}.key"));
            openssl(
                d,
                &[
                    "req",
                    "-new",
                    "-key",
                    &format!("{leaf}.key"),
                    "-subj",
                    &format!("/CN={cn}"),
                    "-out",
                    &format!("{leaf}.csr"),
                ],
            );
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{leaf}.csr"),
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-sha256",
                    "-extfile",
                    &format!("{leaf}.ext"),
                    "-out",
                    &format!("{leaf}.pem"),
                ],
            );
        }
        TestPki {
            ca: d.join("ca.pem"),
            other_ca: d.join("other.pem"),
            server_cert: d.join("server.pem"),
            server_key: d.join("server.key"),
            client_cert: d.join("client.pem"),
            client_key: d.join("client.key"),
            _dir: dir,
        }
    }
}

/// TLS in front of a plain receiver: terminates TLS (rustls, ring) with the
/// test PKI's server certificate, optionally demands a client certificate
/// signed by the CA, and pipes each connection to the receiver. Counts the
/// handshakes, so a test can tell "refused by TLS" from "never tried".
pub struct TlsFront {
    /// `https://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Handshakes that succeeded.
    pub accepted: Arc<AtomicUsize>,
    /// Handshakes that failed (untrusted server, missing client certificate).
    pub refused: Arc<AtomicUsize>,
    /// The receiver behind it.
    pub receiver: Receiver,
    _runtime: tokio::runtime::Runtime,
}

/// Puts TLS in front of `receiver`; `grpc` picks the ALPN protocol (`h2`
/// or `http/1.1`), `client_auth` demands a client certificate.
pub fn tls_front(receiver: Receiver, pki: &TestPki, grpc: bool, client_auth: bool) -> TlsFront {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.server_cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&pki.server_key).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if client_auth {
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(&pki.ca).unwrap() {
            roots.add(ca.unwrap()).unwrap();
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_single_cert(certs, key).unwrap();
    config.alpn_protocols = vec![if grpc {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let backend: SocketAddr = receiver
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let (runtime, listener, address) = runtime_and_listener();
    let accepted = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let (ok, bad) = (accepted.clone(), refused.clone());
    runtime.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, ok, bad) = (acceptor.clone(), ok.clone(), bad.clone());
            tokio::spawn(async move {
                match acceptor.accept(stream).await {
                    Ok(mut tls) => {
                        ok.fetch_add(1, Ordering::SeqCst);
                        if let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await {
                            let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                        }
                    }
                    Err(_) => {
                        bad.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    TlsFront {
        endpoint: format!("https://{address}"),
        accepted,
        refused,
        receiver,
        _runtime: runtime,
    }
}
