//! The one integration test binary: black-box tests that drive the built
//! `jobloop` with small shell jobs, millisecond settings and a free port on
//! 127.0.0.1. Every wait polls with a deadline.

/// Harness: temp dir, daemon start/stop, one polling loop with diagnostics,
/// HTTP client, OTLP receivers, fault-injection support.
mod util;

/// Settings: each bad value's one-line exit-78 error, flag beats variable, `check`.
mod cli;
/// HTTP over TCP: every path and status, /resume tokens, idle connections.
mod http;
/// An independent OTLP collector (rotel) between jobloop and the test's receiver.
mod interop;
/// The loop: classification paths, backoff sequence, halts and resumes.
mod loop_;
/// Metrics after scripted scenarios, the golden exposition, promtool on a real scrape.
mod metrics;
/// `/metrics` negotiation: OpenMetrics with exemplars for Prometheus, text otherwise.
mod openmetrics;
/// The child: environment, process groups, timeout, auth kill, spawn failures.
mod process;
/// Run logs: names, header, exact bytes, mode, symlinks, retention, truncation.
mod runlog;
/// Secrets never reach metrics, spans, the daemon's log or /state.
mod secrets;
/// Settings hardening: 100-year cap, zero timeouts, hidden hook arguments, `status` caps and escapes.
mod settings_hardening;
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
/// OTLP over TLS and mTLS, gzip, TRACES_* variables, exit 78 on bad files, no credentials printed.
mod traces_tls;

/// Running a fleet: exit policies and `skipped`, busy seconds, each run's CPU and memory.
mod fleet_policy;

/// Faults injected on purpose (issue 6): misbehaving jobs, crashes, full
/// disks, HTTP and OTLP abuse, PID 1, absurd settings, a broken stderr.
mod faults;
/// Fleet stop policies: drain, the one shutdown budget, halt action exit (69/77).
mod fleet_stop;
/// Disk hardening: a run-log writer stalled on a FIFO holds the job, never the loop's answers.
mod hardening_disk;
/// Hardening: idle connections against a low RLIMIT_NOFILE, probes during the flood.
mod hardening_http;
/// Hardening of the start: odd state.json, leftover probe, token kept from children, spawn errors.
mod hardening_start;
