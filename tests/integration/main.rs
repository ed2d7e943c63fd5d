//! The one integration test binary: black-box tests that drive the built
//! `jobloop` with small shell jobs, millisecond settings and a free port on
//! 127.0.0.1. Every wait polls with a deadline.

/// Harness: temp dir, daemon start/stop, polling, HTTP client.
mod util;

/// Settings: each bad value's one-line exit-78 error, flag beats variable, `check`.
mod cli;
/// The loop: classification paths, backoff sequence, halts and resumes.
mod loop_;
/// Run logs: names, header, exact bytes, mode, symlinks, retention, truncation.
mod runlog;
/// The child: environment, process groups, timeout, auth kill, spawn failures.
mod process;
/// Signals and shutdown: SIGTERM during a job, second signal, SIGHUP.
mod signals;
/// state.json: atomic under a polling reader, interrupted iterations.
mod statefile;
/// HTTP over TCP: every path and status, /resume tokens, idle connections.
mod http;
/// Metrics after scripted scenarios, and promtool on a real scrape.
mod metrics;
/// Traces: a real OTLP receiver (gRPC and HTTP) gets one span per iteration.
mod traces;
/// Secrets never reach metrics, spans, the daemon's log or /state.
mod secrets;
