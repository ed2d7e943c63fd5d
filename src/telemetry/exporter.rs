//! The OTLP span exporter: gRPC (tonic) or HTTP/protobuf (a blocking
//! reqwest client), with TLS (rustls and ring; no OpenSSL) when the
//! endpoint is `https://`, gzip and a timeout when asked, and a wrapper that
//! logs export failures at most once a minute with every credential hidden.
//!
//! TLS is set up only for an `https://` endpoint, so a daemon that exports
//! over plain HTTP, or not at all, never reads a certificate store. A
//! collector whose certificate does not verify fails each export like a
//! collector that is down: the batch processor's thread drops the spans and
//! the loop never waits for it.
//!
//! The headers (`OTEL_EXPORTER_OTLP_HEADERS` and its TRACES_ variant) are
//! read from the environment by the exporter itself, with the same
//! precedence config checked them with.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig, Identity};
use opentelemetry_otlp::{Compression, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;

use crate::config::{OtlpCompression, OtlpProtocol, OtlpSettings};

/// Export failures are logged at most this often.
const EXPORT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// The exporter's own default, used for the HTTP client we build.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the exporter could not be built; every text has its credentials
/// hidden.
#[derive(Debug, thiserror::Error)]
pub enum ExporterError {
    /// A certificate or key file went away or changed since the settings
    /// were checked.
    #[error("cannot read {variable} {path}: {reason}")]
    File {
        /// The setting that named the file.
        variable: &'static str,
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The exporter itself refused the settings.
    #[error("cannot set up the OTLP exporter: {0}")]
    Build(String),
}

/// Builds the exporter `otlp` describes, wrapped in [`ReportingExporter`].
///
/// # Errors
///
/// A certificate file that cannot be read or parsed, or settings the
/// exporter refuses.
pub fn build(
    otlp: &OtlpSettings,
) -> Result<ReportingExporter<opentelemetry_otlp::SpanExporter>, ExporterError> {
    let timeout = otlp.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let built = match otlp.protocol {
        OtlpProtocol::Grpc => {
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_timeout(timeout);
            if otlp.compression == OtlpCompression::Gzip {
                builder = builder.with_compression(Compression::Gzip);
            }
            if otlp.is_https() {
                builder = builder.with_tls_config(grpc_tls(otlp)?);
            }
            builder.build()
        }
        OtlpProtocol::HttpProtobuf => {
            let client = http_client(otlp, timeout)?;
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_http_client(client)
                .with_timeout(timeout);
            if otlp.compression == OtlpCompression::Gzip {
                builder = builder.with_compression(Compression::Gzip);
            }
            builder.build()
        }
    };
    let exporter = built.map_err(|error| ExporterError::Build(otlp.redact(&error.to_string())))?;
    Ok(ReportingExporter::new(exporter, otlp.clone()))
}

fn read(variable: &'static str, path: &std::path::Path) -> Result<Vec<u8>, ExporterError> {
    std::fs::read(path).map_err(|error| ExporterError::File {
        variable,
        path: path.display().to_string(),
        reason: error.to_string(),
    })
}

/// A client certificate (chain) and its key, both PEM.
type ClientPem = (Vec<u8>, Vec<u8>);

/// The client identity for mTLS, when both files are set.
fn client_files(otlp: &OtlpSettings) -> Result<Option<ClientPem>, ExporterError> {
    match (&otlp.client_certificate, &otlp.client_key) {
        (Some(certificate), Some(key)) => Ok(Some((
            read("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", certificate)?,
            read("OTEL_EXPORTER_OTLP_CLIENT_KEY", key)?,
        ))),
        _ => Ok(None),
    }
}

/// tonic's TLS: the given CA bundle, else the system's roots.
fn grpc_tls(otlp: &OtlpSettings) -> Result<ClientTlsConfig, ExporterError> {
    let mut tls = match &otlp.certificate {
        Some(path) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            path,
        )?)),
        None => ClientTlsConfig::new().with_native_roots(),
    };
    if let Some((certificate, key)) = client_files(otlp)? {
        tls = tls.identity(Identity::from_pem(certificate, key));
    }
    Ok(tls)
}

/// The blocking HTTP client, with the CA bundle (only it) or the system's
/// roots (rustls-platform-verifier) and the client identity.
fn http_client(
    otlp: &OtlpSettings,
    timeout: Duration,
) -> Result<reqwest::blocking::Client, ExporterError> {
    // reqwest builds a rustls configuration with every client, https or
    // not, and needs a process-wide provider for it: ring, as tonic uses.
    // Err means one is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let https = otlp.is_https();
    let certificate = match (&otlp.certificate, https) {
        (Some(path), true) => Some(read("OTEL_EXPORTER_OTLP_CERTIFICATE", path)?),
        _ => None,
    };
    let identity = if https { client_files(otlp)? } else { None };
    let build = move || -> Result<reqwest::blocking::Client, String> {
        let mut builder = reqwest::blocking::Client::builder().timeout(timeout);
        if let Some(pem) = certificate {
            let roots = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|error| format!("OTEL_EXPORTER_OTLP_CERTIFICATE: {error}"))?;
            builder = builder.tls_certs_only(roots);
        }
        if let Some((certificate, key)) = identity {
            let mut pem = certificate;
            pem.push(b'\n');
            pem.extend_from_slice(&key);
            let identity = reqwest::Identity::from_pem(&pem)
                .map_err(|error| format!("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE/KEY: {error}"))?;
            builder = builder.identity(identity);
        }
        builder.build().map_err(|error| error.to_string())
    };
    // The blocking client starts a runtime of its own, which may not be
    // built from inside this one's thread.
    std::thread::Builder::new()
        .name("jobloop-otlp-init".into())
        .spawn(build)
        .map_err(|error| ExporterError::Build(error.to_string()))?
        .join()
        .map_err(|_| ExporterError::Build("the HTTP client's set-up panicked".into()))?
        .map_err(|error| ExporterError::Build(otlp.redact(&error)))
}

/// Wraps the OTLP exporter to log its failures at most once a minute, with
/// the number of spans dropped since the last report and every credential
/// of the settings hidden from the error text.
#[derive(Debug)]
pub struct ReportingExporter<E> {
    inner: E,
    otlp: OtlpSettings,
    reports: Mutex<ExportReports>,
}

#[derive(Debug, Default)]
struct ExportReports {
    last_logged: Option<Instant>,
    dropped_since: u64,
}

impl<E: SpanExporter> ReportingExporter<E> {
    fn new(inner: E, otlp: OtlpSettings) -> Self {
        ReportingExporter {
            inner,
            otlp,
            reports: Mutex::new(ExportReports::default()),
        }
    }
}

impl<E: SpanExporter> SpanExporter for ReportingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let count = batch.len() as u64;
        let result = self.inner.export(batch).await;
        if let Err(error) = &result {
            let mut reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
            reports.dropped_since += count;
            let due = reports
                .last_logged
                .is_none_or(|at| at.elapsed() >= EXPORT_ERROR_LOG_INTERVAL);
            if due {
                let error = self.otlp.redact(&format!("{error:#}"));
                tracing::warn!(%error, dropped_spans = reports.dropped_since,
                    "cannot export spans to the OTLP endpoint; dropping them (logged at most once a minute)");
                reports.last_logged = Some(Instant::now());
                reports.dropped_since = 0;
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
