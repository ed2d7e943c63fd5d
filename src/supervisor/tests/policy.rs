//! The loop under AGENT_EXIT_POLICY, and what each run costs and how long
//! jobs were busy, on the fake runner's paused clock.

use std::time::Duration;

use tokio::time::Instant;

use super::fake::{exits, FAKE_RSS};
use super::Rig;
use crate::exit_policy::ExitPolicy;
use crate::state::{Outcome, Reason, Status};
use crate::statefile;

/// The value of a series without labels in a text scrape.
fn value(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{scrape}"))
}

#[tokio::test(start_paused = true)]
async fn a_skip_leaves_failures_and_backoff_as_they_were() {
    let mut rig = Rig::new().jobs(&[exits(1, 0), exits(75, 0), exits(75, 0), exits(1, 0)]);
    rig.settings.max_failures = 3;
    rig.settings.exit_policy = ExitPolicy::parse("75=skip").unwrap();
    rig.run(|mut loop_| async move {
        let began = Instant::now();
        let skipped = loop_
            .until(|s| s.iteration == 2 && s.status == Status::Idle)
            .await;
        assert_eq!(skipped.last_outcome, Some(Outcome::Skipped));
        assert_eq!(skipped.consecutive_failures, 1);
        assert_eq!(skipped.reason, None);
        assert_eq!(skipped.last_batch_exit, Some(75));
        assert_eq!(skipped.backoff_seconds, 0.0);
        assert_eq!(skipped.last_success_at, None);
        assert!(loop_.counted(Outcome::Skipped));
        assert!(!loop_.counted(Outcome::Success));
        // The failure after two skips backs off 10 s, the second step: the
        // skips neither reset nor advanced the sequence.
        let failed = loop_
            .until(|s| s.iteration == 4 && s.status == Status::Backoff)
            .await;
        assert_eq!(failed.backoff_seconds, 10.0);
        assert_eq!(failed.consecutive_failures, 2);
        // A backoff of 5 s and two idle sleeps of 2 s.
        assert_eq!(began.elapsed(), Duration::from_secs(9));
        loop_.shutdown().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_halt_rule_halts_at_once_as_unhealthy() {
    let mut rig = Rig::new().jobs(&[exits(2, 0)]);
    rig.settings.exit_policy = ExitPolicy::parse("2=halt").unwrap();
    rig.run(|mut loop_| async move {
        let began = Instant::now();
        let halted = loop_.until(|s| s.status == Status::Unhealthy).await;
        assert_eq!(began.elapsed(), Duration::ZERO);
        assert_eq!(halted.reason, Some(Reason::ExitPolicy));
        assert_eq!(halted.last_outcome, Some(Outcome::Failure));
        assert_eq!(halted.consecutive_failures, 1);
        loop_.shutdown().await;
    })
    .await;
    assert!(rig.marker(statefile::UNHEALTHY));
}

#[tokio::test(start_paused = true)]
async fn usage_and_busy_time_of_the_job_alone() {
    let mut rig = Rig::new()
        .jobs(&[exits(0, 4), exits(1, 2)])
        .shells(&[exits(0, 3)]);
    rig.settings.preflight_cmd = Some("check".to_string());
    rig.run(|mut loop_| async move {
        loop_
            .until(|s| s.iteration == 2 && s.status == Status::Backoff)
            .await;
        let scrape = loop_.metrics.render();
        // 2 s + 1 s of CPU; the preflight's 3 s run is not a job's.
        assert_eq!(value(&scrape, "jobloop_job_cpu_seconds_total"), 3.0);
        assert_eq!(value(&scrape, "jobloop_job_max_rss_bytes"), FAKE_RSS as f64);
        // The jobs' 4 s + 2 s; not the preflight, nor the idle sleep.
        assert_eq!(value(&scrape, "jobloop_busy_seconds_total"), 6.0);
        loop_.shutdown().await;
    })
    .await;
}
