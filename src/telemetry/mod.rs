//! The daemon's own log (stderr, text or JSON) and its OpenTelemetry
//! traces: one `jobloop.iteration` span per run, `jobloop.preflight` and
//! `jobloop.backoff` spans, exported over OTLP when an endpoint is set.
//!
//! The only module that touches `opentelemetry*` (their APIs move between
//! releases). Spans are built with `tracing` and turned into OpenTelemetry
//! spans by tracing-opentelemetry. Each layer has its own filter: a global
//! one would drop the spans whenever the log level is above info.
//! A tracer provider is installed even without an exporter, so that every
//! run has real W3C ids for its run-log header and the job's TRACEPARENT.

mod exporter;

use std::io::IsTerminal;
use std::time::Duration;

use opentelemetry::trace::{Status as SpanStatus, TraceContextExt, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::Level;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::{LogFormat, Settings};

/// The tracing target of the spans that become OpenTelemetry spans.
const SPAN_TARGET: &str = "jobloop::span";

/// Handle on the tracer provider, to flush spans at shutdown.
pub struct Telemetry {
    provider: SdkTracerProvider,
    exporting: bool,
}

/// Spans the batch processor queues at most unless
/// `OTEL_BSP_MAX_QUEUE_SIZE` says otherwise, instead of the SDK's 2,048.
/// The queue is a ring of `SpanData` slots that the spans' passage touches
/// one by one, so 2,048 slots kept ~0.4 MiB more resident after a few
/// thousand runs (docs/benchmarks.md, issue #14). A full queue drops new
/// spans; 512 fill only if a collector falls behind by 512 runs (minutes at
/// a real pace, ~0.7 s at idle 0 with `/bin/true`).
const DEFAULT_MAX_QUEUE_SIZE: usize = 512;

/// Spans sent in one export unless `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` says
/// otherwise, instead of the SDK's 512. A batch is held in three forms
/// while it is sent (the spans, their protobuf structs, the encoded body),
/// so batches of 512 kept ~1 MiB more resident than batches of 64
/// (docs/benchmarks.md, issue #14).
/// jobloop makes one span per run: 64 runs between exports is still few
/// exports at any real pace, and the 5 s schedule sends smaller batches
/// anyway.
const DEFAULT_MAX_EXPORT_BATCH_SIZE: usize = 64;

/// The batch span processor, with [`DEFAULT_MAX_QUEUE_SIZE`] and
/// [`DEFAULT_MAX_EXPORT_BATCH_SIZE`]; every `OTEL_BSP_*` variable the SDK
/// can read still wins.
fn batch_processor<E>(exporter: E) -> BatchSpanProcessor
where
    E: opentelemetry_sdk::trace::SpanExporter + Send + 'static,
{
    let mut config = BatchConfigBuilder::default();
    if !sdk_reads_count("OTEL_BSP_MAX_QUEUE_SIZE") {
        config = config.with_max_queue_size(DEFAULT_MAX_QUEUE_SIZE);
    }
    if !sdk_reads_count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") {
        config = config.with_max_export_batch_size(DEFAULT_MAX_EXPORT_BATCH_SIZE);
    }
    BatchSpanProcessor::builder(exporter)
        .with_batch_config(config.build())
        .build()
}

/// Whether the SDK takes the count in variable `name`: it parses it as an
/// unsigned integer and ignores it otherwise (as the OpenTelemetry spec
/// asks), so an unreadable value gets jobloop's default, not the SDK's.
fn sdk_reads_count(name: &str) -> bool {
    std::env::var(name).is_ok_and(|value| value.parse::<usize>().is_ok())
}

/// Installs the daemon's log and the tracer. Must run inside the Tokio
/// runtime that will keep running until [`Telemetry::shutdown`] (the gRPC
/// exporter's connection lives there). `instance` is state.json's
/// `instance`, the resource's `service.instance.id`.
///
/// # Errors
///
/// When the OTLP exporter cannot be built from the `OTEL_*` settings.
pub fn init(settings: &Settings, instance: &str) -> anyhow::Result<Telemetry> {
    let mut provider = SdkTracerProvider::builder().with_resource(resource(instance));
    let exporting = settings.otlp.endpoint.is_some();
    if exporting {
        let exporter = exporter::build(&settings.otlp)?;
        provider = provider.with_span_processor(batch_processor(exporter));
    }
    let provider = provider.build();
    let tracer = provider.tracer("jobloop");

    let otel_layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        // busy_ns / idle_ns are the library's bookkeeping, not the run's.
        .with_tracked_inactivity(false)
        .with_level(false)
        .with_target(false)
        .with_filter(Targets::new().with_target(SPAN_TARGET, Level::INFO));
    let log_filter = || {
        // The exporter's own events are reported by ReportingExporter, at
        // most once a minute, instead of on every failed batch.
        EnvFilter::try_new(format!(
            "{},{SPAN_TARGET}=off,opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off,\
             opentelemetry-otlp=off,tonic=off,h2=off,hyper=off,hyper_util=off,reqwest=off,tower=off,\
             rustls=off,tokio_rustls=off,hyper_rustls=off",
            settings.log_level
        ))
        .expect("the log level was validated with the settings")
    };
    let ansi = std::io::stderr().is_terminal();
    let log_layer = match settings.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .with_filter(log_filter())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(log_filter())
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(log_layer)
        .with(otel_layer)
        .try_init()?;
    Ok(Telemetry {
        provider,
        exporting,
    })
}

/// Sets up only the daemon's log, for commands that trace nothing.
pub fn init_log_only(level: &str) {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info")))
        .try_init();
}

/// The resource of every span: the service (named `jobloop` unless the
/// user names it), its version, and `service.instance.id` = state.json's
/// `instance`, so a span leads to the process that made it.
fn resource(instance: &str) -> Resource {
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    let builder = Resource::builder()
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .with_attribute(KeyValue::new("service.instance.id", instance.to_string()));
    if named {
        builder.build()
    } else {
        builder.with_service_name("jobloop").build()
    }
}

impl Telemetry {
    /// Flushes the spans still queued and stops the exporter, waiting at
    /// most `limit`; spans not sent by then are dropped.
    pub async fn shutdown(self, limit: Duration) {
        if !self.exporting {
            return;
        }
        let provider = self.provider;
        // Off the runtime's threads: the gRPC exporter needs this runtime
        // running while the provider shuts down.
        let flush = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(limit));
        match tokio::time::timeout(limit, flush).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::warn!(%error, "spans were not all flushed at shutdown"),
            _ => {
                tracing::warn!(limit = ?limit, "span flush did not finish within the shutdown grace")
            }
        }
    }
}

/// The W3C ids of a span, as the run log and TRACEPARENT carry them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanIds {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// Sampled flag.
    pub sampled: bool,
}

impl SpanIds {
    /// The W3C `traceparent` value.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{}",
            self.trace_id,
            self.span_id,
            if self.sampled { "01" } else { "00" }
        )
    }
}

/// A span of the loop (iteration, preflight, backoff), ended when dropped.
pub struct LoopSpan {
    span: tracing::Span,
}

impl LoopSpan {
    /// Starts the `jobloop.iteration` span of iteration `n`.
    pub fn iteration(n: u64) -> LoopSpan {
        let span = tracing::info_span!(target: SPAN_TARGET, parent: None, "jobloop.iteration");
        span.set_attribute("jobloop.iteration", n as i64);
        LoopSpan { span }
    }

    /// Starts the `jobloop.preflight` span.
    pub fn preflight() -> LoopSpan {
        LoopSpan {
            span: tracing::info_span!(target: SPAN_TARGET, parent: None, "jobloop.preflight"),
        }
    }

    /// Starts a `jobloop.backoff` span, a child of the iteration that failed.
    pub fn backoff(after: Option<&SpanIds>, seconds: f64, iteration: u64) -> LoopSpan {
        let span = tracing::info_span!(target: SPAN_TARGET, parent: None, "jobloop.backoff");
        if let Some(parent) = after.and_then(remote_context) {
            let _ = span.set_parent(parent);
        }
        span.set_attribute("jobloop.backoff.seconds", seconds);
        span.set_attribute("jobloop.iteration", iteration as i64);
        LoopSpan { span }
    }

    /// The span's W3C ids.
    pub fn ids(&self) -> SpanIds {
        let context = self.span.context();
        let span = context.span();
        let span_context = span.span_context();
        SpanIds {
            trace_id: span_context.trace_id().to_string(),
            span_id: span_context.span_id().to_string(),
            sampled: span_context.is_sampled(),
        }
    }

    /// Sets a string attribute.
    pub fn set_str(&self, key: &'static str, value: impl Into<String>) {
        self.span.set_attribute(key, value.into());
    }

    /// Sets an integer attribute.
    pub fn set_int(&self, key: &'static str, value: i64) {
        self.span.set_attribute(key, value);
    }

    /// Sets a floating-point attribute.
    pub fn set_f64(&self, key: &'static str, value: f64) {
        self.span.set_attribute(key, value);
    }

    /// Adds an event with no attributes.
    pub fn event(&self, name: &'static str) {
        self.span.add_event(name, Vec::new());
    }

    /// Marks the span failed, with a short fixed description (never job
    /// output: no secret may reach a span).
    pub fn set_error(&self, description: &'static str) {
        self.span.set_status(SpanStatus::error(description));
    }

    /// Marks the span successful.
    pub fn set_ok(&self) {
        self.span.set_status(SpanStatus::Ok);
    }
}

fn remote_context(ids: &SpanIds) -> Option<opentelemetry::Context> {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    let trace_id = TraceId::from_hex(&ids.trace_id).ok()?;
    let span_id = SpanId::from_hex(&ids.span_id).ok()?;
    let flags = if ids.sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let context = SpanContext::new(trace_id, span_id, flags, false, TraceState::default());
    Some(opentelemetry::Context::new().with_remote_span_context(context))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_format() {
        let ids = SpanIds {
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            span_id: "b7ad6b7169203331".into(),
            sampled: true,
        };
        assert_eq!(
            ids.traceparent(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
    }
}
