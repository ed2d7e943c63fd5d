//! Every `jobloop_*` metric family, registered in one place, and the
//! `/metrics` rendering.
//!
//! Gauges are views of the [`Snapshot`]: the supervisor calls
//! [`Metrics::observe`] each time it publishes one, so the metrics can never
//! disagree with state.json. Counters count events. Labels come only from
//! closed sets (outcome, state, result, hook); paths, pids and trace ids go
//! to spans and logs instead. Trace ids reach `/metrics` only as
//! exemplars, in the OpenMetrics answer (`metrics/openmetrics.rs`).

mod collectors;
mod openmetrics;

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use prometheus::{
    Counter, Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use collectors::{BusyCounter, CachedProcessCollector};

use crate::state::{Hook, Outcome, PreflightResult, Snapshot, Status};

pub use openmetrics::{RunTrace, CONTENT_TYPE as OPENMETRICS_CONTENT_TYPE};

/// Buckets of `jobloop_iteration_duration_seconds`.
///
/// Jobs run from a fraction of a second (an empty queue) to an hour (an
/// agent working a ticket): roughly ×2–×3 steps from 100 ms to 1 h give a
/// usable p50/p95/p99 across that range with 14 buckets.
const DURATION_BUCKETS: [f64; 14] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// The registry and every family in it.
pub struct Metrics {
    registry: Registry,
    /// Finished iterations by outcome.
    pub iterations: IntCounterVec,
    /// Wall time of each run by outcome.
    pub iteration_duration: HistogramVec,
    consecutive_failures: IntGauge,
    backoff_seconds: Gauge,
    token_expired: IntGauge,
    unhealthy: IntGauge,
    state: IntGaugeVec,
    iteration_in_progress: IntGauge,
    iteration_start: Gauge,
    last_iteration: Gauge,
    last_success: Gauge,
    last_exit_code: IntGauge,
    preflight_checks: IntCounterVec,
    /// Job output bytes read.
    pub run_log_bytes: IntCounter,
    /// Runs that hit AGENT_RUN_LOG_MAX_BYTES.
    pub run_log_truncated: IntCounter,
    /// Run logs deleted by retention.
    pub run_logs_deleted: IntCounter,
    /// Iterations found interrupted at start.
    pub interrupted_iterations: IntCounter,
    hook_failures: IntCounterVec,
    /// Runs whose log could not be created or written.
    pub run_log_write_errors: IntCounter,
    /// Failed writes of state.json or a marker.
    pub state_write_errors: IntCounter,
    /// Jobs jobloop could not start for lack of its own resources.
    pub spawn_errors: IntCounter,
    /// `POST /resume` attempts refused for a missing or wrong token.
    pub resume_rejected: IntCounter,
    job_cpu_seconds: Counter,
    job_max_rss_bytes: IntGauge,
    busy_seconds: BusyCounter,
    /// The latest run's exemplar on each iteration counter and bucket.
    exemplars: Mutex<openmetrics::Exemplars>,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
}

impl Metrics {
    /// Registers every family, with every label value pre-created so that
    /// dashboards and alerts see zeros instead of missing series.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let iterations = IntCounterVec::new(
            opts(
                "jobloop_iterations_total",
                "Finished iterations by outcome.",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let iteration_duration = HistogramVec::new(
            HistogramOpts::new(
                "jobloop_iteration_duration_seconds",
                "Wall time of each run by outcome.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["outcome"],
        )
        .expect("valid metric");
        for outcome in Outcome::ALL {
            iterations.with_label_values(&[outcome.as_str()]);
            iteration_duration.with_label_values(&[outcome.as_str()]);
        }
        let state = IntGaugeVec::new(
            opts(
                "jobloop_state",
                "1 for the daemon's current state, 0 for the others.",
            ),
            &["state"],
        )
        .expect("valid metric");
        for status in Status::ALL {
            state.with_label_values(&[status.as_str()]);
        }
        let preflight_checks = IntCounterVec::new(
            opts(
                "jobloop_preflight_checks_total",
                "Preflight runs by result.",
            ),
            &["result"],
        )
        .expect("valid metric");
        for result in PreflightResult::ALL {
            preflight_checks.with_label_values(&[result.as_str()]);
        }
        let hook_failures = IntCounterVec::new(
            opts(
                "jobloop_hook_failures_total",
                "Rotate and cleanup commands that failed.",
            ),
            &["hook"],
        )
        .expect("valid metric");
        for hook in Hook::ALL {
            hook_failures.with_label_values(&[hook.as_str()]);
        }
        let build_info = IntGaugeVec::new(
            opts(
                "jobloop_build_info",
                "Always 1; the version label says which jobloop runs.",
            ),
            &["version"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        let metrics = Metrics {
            iterations,
            iteration_duration,
            consecutive_failures: IntGauge::new(
                "jobloop_consecutive_failures",
                "Consecutive failed runs, as in state.json.",
            )
            .expect("valid metric"),
            backoff_seconds: Gauge::new(
                "jobloop_backoff_seconds",
                "The backoff being slept now, 0 when none.",
            )
            .expect("valid metric"),
            token_expired: IntGauge::new(
                "jobloop_token_expired",
                "1 while halted for expired credentials.",
            )
            .expect("valid metric"),
            unhealthy: IntGauge::new("jobloop_unhealthy", "1 while halted as unhealthy.")
                .expect("valid metric"),
            state,
            iteration_in_progress: IntGauge::new(
                "jobloop_iteration_in_progress",
                "1 while a job runs.",
            )
            .expect("valid metric"),
            iteration_start: Gauge::new(
                "jobloop_iteration_start_timestamp_seconds",
                "Start of the running job as a Unix time, 0 when none runs.",
            )
            .expect("valid metric"),
            last_iteration: Gauge::new(
                "jobloop_last_iteration_timestamp_seconds",
                "End of the last finished iteration as a Unix time.",
            )
            .expect("valid metric"),
            last_success: Gauge::new(
                "jobloop_last_success_timestamp_seconds",
                "End of the last successful iteration as a Unix time.",
            )
            .expect("valid metric"),
            last_exit_code: IntGauge::new(
                "jobloop_last_exit_code",
                "Exit code of the last run (128+N for signal N).",
            )
            .expect("valid metric"),
            preflight_checks,
            run_log_bytes: IntCounter::new("jobloop_run_log_bytes_total", "Job output bytes read.")
                .expect("valid metric"),
            run_log_truncated: IntCounter::new(
                "jobloop_run_log_truncated_total",
                "Runs whose output hit AGENT_RUN_LOG_MAX_BYTES.",
            )
            .expect("valid metric"),
            run_logs_deleted: IntCounter::new(
                "jobloop_run_logs_deleted_total",
                "Run logs deleted by retention.",
            )
            .expect("valid metric"),
            interrupted_iterations: IntCounter::new(
                "jobloop_interrupted_iterations_total",
                "Iterations found interrupted at start (state.json left at running).",
            )
            .expect("valid metric"),
            hook_failures,
            run_log_write_errors: IntCounter::new(
                "jobloop_run_log_write_errors_total",
                "Runs whose log could not be created or fully written.",
            )
            .expect("valid metric"),
            state_write_errors: IntCounter::new(
                "jobloop_state_write_errors_total",
                "Failed writes of state.json or a marker file.",
            )
            .expect("valid metric"),
            spawn_errors: IntCounter::new(
                "jobloop_spawn_errors_total",
                "Jobs jobloop could not start for lack of its own resources (EMFILE, ENFILE, EAGAIN, ENOMEM).",
            )
            .expect("valid metric"),
            resume_rejected: IntCounter::new(
                "jobloop_resume_rejected_total",
                "POST /resume attempts refused for a missing or wrong bearer token.",
            )
            .expect("valid metric"),
            job_cpu_seconds: Counter::new(
                "jobloop_job_cpu_seconds_total",
                "User and system CPU of finished jobs and the descendants they waited for.",
            )
            .expect("valid metric"),
            job_max_rss_bytes: IntGauge::new(
                "jobloop_job_max_rss_bytes",
                "Peak resident memory of the last finished job (the largest of it and its waited-for descendants).",
            )
            .expect("valid metric"),
            busy_seconds: BusyCounter::new(),
            exemplars: Mutex::new(openmetrics::Exemplars::default()),
            registry,
        };
        let r = &metrics.registry;
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(metrics.iterations.clone()),
            Box::new(metrics.iteration_duration.clone()),
            Box::new(metrics.consecutive_failures.clone()),
            Box::new(metrics.backoff_seconds.clone()),
            Box::new(metrics.token_expired.clone()),
            Box::new(metrics.unhealthy.clone()),
            Box::new(metrics.state.clone()),
            Box::new(metrics.iteration_in_progress.clone()),
            Box::new(metrics.iteration_start.clone()),
            Box::new(metrics.last_iteration.clone()),
            Box::new(metrics.last_success.clone()),
            Box::new(metrics.last_exit_code.clone()),
            Box::new(metrics.preflight_checks.clone()),
            Box::new(metrics.run_log_bytes.clone()),
            Box::new(metrics.run_log_truncated.clone()),
            Box::new(metrics.run_logs_deleted.clone()),
            Box::new(metrics.interrupted_iterations.clone()),
            Box::new(metrics.hook_failures.clone()),
            Box::new(metrics.run_log_write_errors.clone()),
            Box::new(metrics.state_write_errors.clone()),
            Box::new(metrics.spawn_errors.clone()),
            Box::new(metrics.resume_rejected.clone()),
            Box::new(metrics.job_cpu_seconds.clone()),
            Box::new(metrics.job_max_rss_bytes.clone()),
            Box::new(metrics.busy_seconds.clone()),
            Box::new(build_info),
            Box::new(CachedProcessCollector::new()),
        ];
        for collector in collectors {
            r.register(collector)
                .expect("each family is registered once");
        }
        metrics
    }

    /// Sets every gauge from the snapshot.
    pub fn observe(&self, snapshot: &Snapshot) {
        let seconds = |time: Option<SystemTime>| {
            time.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(0.0, |d| d.as_secs_f64())
        };
        let running = snapshot.status == Status::Running;
        self.consecutive_failures
            .set(i64::from(snapshot.consecutive_failures));
        self.backoff_seconds.set(snapshot.backoff_seconds);
        self.token_expired
            .set(i64::from(snapshot.status == Status::TokenExpired));
        self.unhealthy
            .set(i64::from(snapshot.status == Status::Unhealthy));
        for status in Status::ALL {
            self.state
                .with_label_values(&[status.as_str()])
                .set(i64::from(snapshot.status == status));
        }
        self.iteration_in_progress.set(i64::from(running));
        self.iteration_start.set(if running {
            seconds(snapshot.current_batch_started_at)
        } else {
            0.0
        });
        self.last_iteration.set(seconds(snapshot.last_batch_at));
        self.last_success.set(seconds(snapshot.last_success_at));
        self.last_exit_code
            .set(i64::from(snapshot.last_batch_exit.unwrap_or(0)));
        self.busy_seconds.observe(snapshot.busy);
    }

    /// Records what a finished job cost (SPEC §7): its CPU time added to
    /// the total, its peak memory as the gauge's value.
    pub fn record_job_usage(&self, cpu: Duration, max_rss_bytes: u64) {
        self.job_cpu_seconds.inc_by(cpu.as_secs_f64());
        self.job_max_rss_bytes
            .set(i64::try_from(max_rss_bytes).unwrap_or(i64::MAX));
    }

    /// Records one finished run, without an exemplar.
    pub fn record_run(&self, outcome: Outcome, seconds: f64) {
        self.observe_iteration(outcome, seconds, None);
    }

    /// Records one finished run and, with its span's ids, makes it the
    /// exemplar of its counter series and of the duration bucket it fell in.
    pub fn observe_iteration(&self, outcome: Outcome, seconds: f64, trace: Option<RunTrace<'_>>) {
        // Counts first, exemplar second: a scrape in between shows the run
        // counted under the previous exemplar, never an exemplar on a
        // bucket that has not counted it.
        self.iterations.with_label_values(&[outcome.as_str()]).inc();
        self.iteration_duration
            .with_label_values(&[outcome.as_str()])
            .observe(seconds);
        if let Some(trace) = trace {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.lock_exemplars()
                .record(outcome.as_str(), &DURATION_BUCKETS, seconds, now, trace);
        }
    }

    fn lock_exemplars(&self) -> std::sync::MutexGuard<'_, openmetrics::Exemplars> {
        // A panic while holding it cannot leave it half-written in a way
        // that matters: at worst one exemplar is missing.
        self.exemplars
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts one preflight run.
    pub fn record_preflight(&self, result: PreflightResult) {
        self.preflight_checks
            .with_label_values(&[result.as_str()])
            .inc();
    }

    /// Counts one failed hook.
    pub fn record_hook_failure(&self, hook: Hook) {
        self.hook_failures.with_label_values(&[hook.as_str()]).inc();
    }

    /// The Prometheus text format (0.0.4).
    pub fn render(&self) -> String {
        let mut buffer = Vec::with_capacity(8 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("encoding into memory cannot fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }

    /// OpenMetrics 1.0.0 with exemplars, `# EOF` last.
    pub fn render_openmetrics(&self) -> String {
        // Gathered before the lock: the `/proc` reads of the process
        // collector must not hold up the loop's next `observe_iteration`.
        let families = self.registry.gather();
        // A copy, so that the loop never waits for an encoding.
        let exemplars = self.lock_exemplars().clone();
        openmetrics::encode(&families, &exemplars)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cost of one scrape's rendering in each format, after a few runs
    /// of every outcome (each with its exemplar): run by hand, figures in
    /// docs/benchmarks.md. `cargo test --release --lib render_cost --
    /// --ignored --nocapture`
    #[test]
    #[ignore = "a measurement, not a test"]
    fn render_cost() {
        let metrics = Metrics::new();
        metrics.observe(&Snapshot::starting(SystemTime::now()));
        let trace = RunTrace {
            trace_id: "0af7651916cd43dd8448eb211c80319c",
            span_id: "b7ad6b7169203331",
        };
        for (i, outcome) in Outcome::ALL.into_iter().enumerate() {
            for seconds in [0.05, 0.7, 42.0, 5000.0] {
                metrics.observe_iteration(outcome, seconds * (i + 1) as f64, Some(trace));
            }
        }
        let time = |name: &str, render: &dyn Fn() -> String| {
            let rounds = 20_000;
            let mut bytes = 0;
            let started = std::time::Instant::now();
            for _ in 0..rounds {
                bytes = std::hint::black_box(render()).len();
            }
            let each = started.elapsed() / rounds;
            println!("{name}: {each:?} per scrape, {bytes} bytes");
        };
        time("text 0.0.4", &|| metrics.render());
        time("OpenMetrics", &|| metrics.render_openmetrics());
        time("text 0.0.4", &|| metrics.render());
        time("OpenMetrics", &|| metrics.render_openmetrics());
    }

    /// The names live once, in [`Metrics::new`]; the golden exposition
    /// in tests/ pins them to SPEC §7. Here: every registered family is
    /// rendered, and every label value comes from its enum, pre-created.
    #[test]
    fn every_family_is_rendered_with_its_label_values() {
        let metrics = Metrics::new();
        metrics.observe(&Snapshot::starting(SystemTime::now()));
        let text = metrics.render();
        let families = metrics.registry.gather();
        let ours: Vec<_> = families
            .iter()
            .map(|family| family.name())
            .filter(|name| name.starts_with("jobloop_"))
            .collect();
        assert_eq!(ours.len(), 26, "{ours:?}");
        for name in ours {
            assert!(text.contains(&format!("# TYPE {name} ")), "missing {name}");
        }
        for status in Status::ALL {
            let value = i64::from(status == Status::Starting);
            let line = format!("jobloop_state{{state=\"{}\"}} {value}", status.as_str());
            assert!(text.contains(&line), "missing {line}");
        }
        for outcome in Outcome::ALL {
            let line = format!(
                "jobloop_iterations_total{{outcome=\"{}\"}} 0",
                outcome.as_str()
            );
            assert!(text.contains(&line), "missing {line}");
        }
        for result in PreflightResult::ALL {
            let line = format!(
                "jobloop_preflight_checks_total{{result=\"{}\"}} 0",
                result.as_str()
            );
            assert!(text.contains(&line), "missing {line}");
        }
        for hook in Hook::ALL {
            let line = format!(
                "jobloop_hook_failures_total{{hook=\"{}\"}} 0",
                hook.as_str()
            );
            assert!(text.contains(&line), "missing {line}");
        }
    }
}
