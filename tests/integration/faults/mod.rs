//! Fault tests (issue 6): each file injects one kind of fault into a real
//! daemon and checks what jobloop promises under it. Their support code
//! (CI-aware skips, tmpfs mounts, /proc sampling, a seeded random source)
//! is in `crate::util::faults`, their OTLP collectors in `crate::util::otlp`.
//!
//! A fault that cannot be injected here prints `SKIPPED: why`, except under
//! CI (`CI` set), where it fails. `JOBLOOP_FULL_FAULTS=1` runs the long
//! variants.

/// A misbehaving job: daemonising, stdout-closing, flooding, crashing; held pipes.
mod child;
/// SIGKILL at random moments, restart, repeat; nothing lost or left behind.
mod crash;
/// A full log disk, a read-only state dir, bad and linked directories.
mod disk;
/// Secrets everywhere a daemon speaks, file modes, planted symlinks.
mod files;
/// HTTP floods, slowloris, oversized heads, wrk against the loop's pace.
mod http;
/// An OTLP collector that is down, black-holing or slow.
mod otlp;
/// jobloop as PID 1 in a PID namespace: orphans reaped, SIGTERM honoured.
mod pid1;
/// Absurd but valid settings (factor 1000, no failure limit, 1 ms idle).
mod settings;
/// The daemon's own stderr broken or full.
mod stderr;
