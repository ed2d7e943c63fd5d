//! jobloop runs a worker command over and over, one job per run, and makes
//! every run visible: Prometheus metrics, Kubernetes probes, one
//! OpenTelemetry span and one log file per run.
//!
//! # Data flow
//!
//! Everything goes one way, and only the supervisor writes the state:
//!
//! ```text
//! cli -> config::Settings -> supervisor (owns Snapshot, Backoff)
//! supervisor -> runner (one child at a time, its whole stop policy)
//!            -> RunReport -> classify -> Next
//! supervisor -> watch<Snapshot> -> statefile writer thread (state.json)
//!                               -> http handlers (read-only)
//!            -> metrics (gauges derived from each Snapshot), markers, spans
//! http /resume, /livez, signals -> mpsc<command::Command> -> supervisor
//! ```
//!
//! # Layers
//!
//! A module imports only modules below it; nothing calls up.
//!
//! - leaves: [`state`] (the snapshot, its words, state.json read back),
//!   [`command`] (what http and signals send the loop), [`naming`] (run-log
//!   names, retention as a value), [`exit_policy`] (what exit codes
//!   mean), [`backoff`], [`files`], [`notify`];
//! - settings: [`cli`], [`config`];
//! - services: [`runner`], [`runlog`], [`statefile`], [`metrics`],
//!   [`telemetry`], [`http`], [`signals`], [`status`];
//! - [`supervisor`], which drives the services; this file wires it all.
//!
//! # Threads
//!
//! The supervisor runs on a current-thread runtime of its own; the HTTP
//! server, the signal forwarding and the OTLP exporter on the main thread's;
//! state.json is written on a third; everything in AGENT_LOG_DIR (run-log
//! headers, the job's output, the last line and close, retention's listing
//! and deletes) on a fourth, the run-log writer, fed by a bounded set of
//! reused buffers. A flood of requests or a slow disk therefore cannot
//! slow the loop down: a blocked log directory holds up the job's output
//! (its pipe fills and the job waits), while the loop goes on answering
//! `/livez`, signals and `/resume`.

pub mod backoff;
pub mod cli;
pub mod command;
pub mod config;
pub mod exit_policy;
pub mod files;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod naming;
pub mod notify;
pub mod runlog;
pub mod runner;
pub mod signals;
pub mod state;
pub mod statefile;
pub mod status;
pub mod supervisor;
pub mod telemetry;

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tokio::sync::{mpsc, oneshot, watch};

use config::Settings;
use metrics::Metrics;
use state::Snapshot;
use statefile::{StateDir, StateWriter};
use supervisor::{Supervisor, SupervisorParts};

/// How long `/livez` waits for the loop to answer a ping.
const LIVENESS_DEADLINE: Duration = Duration::from_secs(2);

/// Runs the daemon until it is stopped, or until a halt under
/// AGENT_HALT_ACTION=exit; returns the process's exit code (0, or the
/// halt's 69 or 77).
///
/// # Errors
///
/// Fatal start-up errors: a directory that cannot be written, a port that is
/// taken, an exporter that cannot be built. Each names what and where.
pub fn run(settings: Settings) -> anyhow::Result<u8> {
    // First, before any runtime or thread opens descriptors (SPEC §6).
    let descriptors = limits::raise_nofile_limit();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("jobloop-http")
        .build()
        .context("cannot start the async runtime")?;
    let mut settings = settings;
    // Absolute paths: the job may change directory, and RUN_LOG, the span
    // and state.json should name the run log the same way wherever read.
    settings.log_dir = std::path::absolute(&settings.log_dir).with_context(|| {
        format!(
            "cannot resolve AGENT_LOG_DIR {}",
            settings.log_dir.display()
        )
    })?;
    settings.state_dir = std::path::absolute(&settings.state_dir).with_context(|| {
        format!(
            "cannot resolve AGENT_STATE_DIR {}",
            settings.state_dir.display()
        )
    })?;
    let result = runtime.block_on(run_async(Arc::new(settings), descriptors));
    // A span flush stuck on a collector that never answers runs on a
    // blocking thread; dropping the runtime would wait for it and break
    // the shutdown's bound (SPEC §5).
    runtime.shutdown_background();
    result
}

async fn run_async(
    settings: Arc<Settings>,
    descriptors: limits::Descriptors,
) -> anyhow::Result<u8> {
    let signal_handlers =
        signals::SignalHandlers::install().context("cannot install signal handlers")?;
    // The instance id is made first: the spans' resource carries it.
    let initial = Snapshot::starting(SystemTime::now());
    let telemetry = telemetry::init(&settings, &initial.instance)?;
    prepare_log_dir(&settings.log_dir)?;
    let state_dir = StateDir::new(&settings.state_dir);
    state_dir.create().with_context(|| {
        format!(
            "cannot create AGENT_STATE_DIR {}",
            settings.state_dir.display()
        )
    })?;
    let previous_state = state_dir.read_state();
    state_dir.write_state(&initial.to_json()).with_context(|| {
        format!(
            "cannot write state.json in AGENT_STATE_DIR {}",
            settings.state_dir.display()
        )
    })?;
    let listener = http::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on AGENT_LISTEN {}", settings.listen))?;
    if let Err(error) = runner::reaper::become_subreaper() {
        tracing::warn!(%error, "cannot become a child subreaper; escaped grandchildren will not be reaped here");
    }

    let metrics = Arc::new(Metrics::new());
    metrics.observe(&initial);
    let (publisher, snapshots) = watch::channel(initial);
    let (command_sender, commands) = mpsc::channel(64);
    let write_errors = metrics.clone();
    let writer = StateWriter::spawn(state_dir.clone(), snapshots.clone(), move || {
        write_errors.state_write_errors.inc();
    })
    .context("cannot start the state writer thread")?;

    let app = http::router(http::AppState {
        snapshot: snapshots,
        commands: command_sender.clone(),
        scrapes: Arc::new(http::Scrapes::new(metrics.clone())),
        metrics: metrics.clone(),
        admin_token: settings
            .admin_token
            .as_deref()
            .map(|token| Arc::new(http::AdminToken::new(token))),
        liveness: Arc::new(http::Liveness::new(LIVENESS_DEADLINE)),
    });
    let (http_stop, http_stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(http::serve(listener, app, descriptors, async move {
        let _ = http_stopped.await;
    }));
    tracing::info!(
        listen = %settings.listen,
        // The program only: arguments may carry credentials (SPEC §8).
        program = %settings.command[0],
        arguments = settings.command.len() - 1,
        log_dir = %settings.log_dir.display(),
        state_dir = %settings.state_dir.display(),
        otlp = %settings.otlp.endpoint.as_deref().map_or_else(|| "off".to_string(), config::redact_url),
        version = env!("CARGO_PKG_VERSION"),
        "jobloop started"
    );

    let (loop_done, loop_finished) = oneshot::channel::<supervisor::Ending>();
    let parts = SupervisorParts {
        settings: settings.clone(),
        state_dir,
        metrics,
        publisher,
        commands,
        notifier: notify::Notifier::from_env(),
        previous_state,
        runner: runner::Os,
        log_writer: runlog::RunLogWriter::spawn()
            .context("cannot start the run-log writer thread")?,
    };
    let loop_thread = std::thread::Builder::new()
        .name("jobloop-loop".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime builds");
            let ending = runtime.block_on(async move { Supervisor::new(parts).run().await });
            let _ = loop_done.send(ending);
        })
        .context("cannot start the supervisor thread")?;

    // The loop and state threads exist now and keep the normal priority.
    http::lower_this_thread_priority();
    let forwarding = tokio::spawn(signal_handlers.forward(command_sender));
    let ending = loop_finished.await.unwrap_or_default();
    let _ = loop_thread.join();
    forwarding.abort();
    // The flush gets what is left of the shutdown's one budget.
    telemetry
        .shutdown(ending.flush_limit(std::time::Instant::now()))
        .await;
    let _ = http_stop.send(());
    let _ = server.await;
    writer.join();
    Ok(ending.exit_code())
}

/// Creates `AGENT_LOG_DIR/runs` (0750) and proves it writable, so a bad
/// directory stops jobloop at start with one line instead of failing every
/// run (BASELINE Q8).
fn prepare_log_dir(log_dir: &Path) -> anyhow::Result<()> {
    let runs = log_dir.join("runs");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(&runs)
        .with_context(|| format!("cannot create AGENT_LOG_DIR {}", runs.display()))?;
    probe_writable(&runs)
        .with_context(|| format!("AGENT_LOG_DIR {} is not writable", runs.display()))
}

/// How many names the write probe tries before it gives up.
const PROBE_ATTEMPTS: u32 = 16;

/// Creates and removes a file in `dir`. The name is new at each attempt
/// (pid, clock, attempt), and one that is taken is skipped: a probe left
/// by a killed jobloop (always pid 1 in a container) or a name planted
/// there can never block the start.
fn probe_writable(dir: &Path) -> std::io::Result<()> {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut last = None;
    for attempt in 0..PROBE_ATTEMPTS {
        let probe = dir.join(format!(
            ".jobloop-write-probe-{}-{nanos}-{attempt}",
            std::process::id()
        ));
        match files::create_new(&probe) {
            Ok(_) => return std::fs::remove_file(&probe),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => last = Some(error),
            Err(error) => return Err(error),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free probe name")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_write_probe_steps_over_taken_names() {
        let dir = tempfile::tempdir().unwrap();
        // The old fixed name of a PID 1, and a few of the new form.
        let pid = std::process::id();
        std::fs::write(dir.path().join(".jobloop-write-probe-1"), "").unwrap();
        std::fs::write(dir.path().join(format!(".jobloop-write-probe-{pid}")), "").unwrap();
        probe_writable(dir.path()).unwrap();
        probe_writable(dir.path()).unwrap();
        let left = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(left, 2, "the probe removes its own file");
    }
}
