//! The one integration test binary: black-box tests that drive the built
//! `jobloop` with small shell jobs, millisecond settings and a free port on
//! 127.0.0.1. Every wait polls with a deadline.

/// Harness: temp dir, daemon start/stop, polling, HTTP client.
mod util;

/// Settings: each bad value's one-line exit-78 error, flag beats variable, `check`.
mod cli;
/// HTTP over TCP: every path and status, /resume tokens, idle connections.
mod http;
/// The loop: classification paths, backoff sequence, halts and resumes.
mod loop_;
/// Metrics after scripted scenarios, and promtool on a real scrape.
mod metrics;
/// The child: environment, process groups, timeout, auth kill, spawn failures.
mod process;
/// Run logs: names, header, exact bytes, mode, symlinks, retention, truncation.
mod runlog;
/// Secrets never reach metrics, spans, the daemon's log or /state.
mod secrets;
/// Signals and shutdown: SIGTERM during a job, second signal, SIGHUP.
mod signals;
/// state.json: atomic under a polling reader, interrupted iterations.
mod statefile;
/// `jobloop status` and the daemon's JSON log.
mod status;
/// systemd notifications on a NOTIFY_SOCKET the test binds.
mod systemd;
/// Traces: a real OTLP receiver (gRPC and HTTP) gets one span per iteration.
mod traces;

/// Faults: daemonising, stdout-closing, flooding, crashing jobs; held pipes.
mod faults_child;
/// Faults: SIGKILL at random moments, restart, repeat; nothing lost or left behind.
mod faults_crash;
/// Faults: a full log disk, a read-only state dir, bad and linked directories.
mod faults_disk;
/// Faults: secrets everywhere a daemon speaks, file modes, planted symlinks.
mod faults_files;
/// Faults: HTTP floods, slowloris, oversized heads, wrk against the loop's pace.
mod faults_http;
/// Faults: an OTLP collector that is down, black-holing or slow.
mod faults_otlp;
/// Faults: jobloop as PID 1 in a PID namespace: orphans reaped, SIGTERM honoured.
mod faults_pid1;
/// Faults: absurd but valid settings (factor 1000, no failure limit, 1 ms idle).
mod faults_settings;
/// Faults: the daemon's own stderr broken or full.
mod faults_stderr;
/// Fault tests' helpers: CI-aware skips, tmpfs mounts, /proc sampling.
mod faults_support;
/// Hardening: idle connections against a low RLIMIT_NOFILE, probes during the flood.
mod hardening_http;
