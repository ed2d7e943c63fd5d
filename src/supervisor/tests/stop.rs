//! Stop policies on the paused clock (SPEC §2 halt, §5): the drain, the
//! second and third requests, the one shutdown budget, and the halt action
//! `exit`.

use super::*;
use crate::config::{HaltAction, StopMode};
use crate::supervisor::SHUTDOWN_SLACK;

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// A rig with the given stop mode and graces of 25 s and 10 s.
fn rig_with(mode: StopMode, jobs: &[Script]) -> Rig {
    let mut rig = Rig::new().jobs(jobs);
    rig.settings.stop_mode = mode;
    rig.settings.shutdown_grace = SECS(25);
    rig.settings.kill_grace = SECS(10);
    rig
}

/// Holds the command channel open (its closing would be a shutdown) until
/// the loop ends on its own.
async fn until_the_loop_ends(mut loop_: Running) {
    while loop_.snapshots.changed().await.is_ok() {}
}

async fn running(loop_: &mut Running) {
    loop_
        .until(|s| s.status == Status::Running && s.job_pid.is_some())
        .await;
}

impl Rig {
    /// When the only job ended (after `began`) and its exit code.
    fn job_ended(&self, began: Instant) -> (Duration, i32) {
        let ended = self.world.0.ended.borrow();
        assert_eq!(ended.len(), 1, "one job");
        (ended[0].0 - began, ended[0].1)
    }
}

/// Where a test closure leaves the instant of a shutdown request (leaked:
/// a few bytes per test, and the closure can copy it).
type Began = &'static std::cell::Cell<Option<Instant>>;

fn noted() -> Began {
    Box::leak(Box::default())
}

/// Waits for the job, asks for a shutdown and notes when.
async fn shut_down_the_job(loop_: &mut Running, began: Began) {
    running(loop_).await;
    ask(loop_, began).await;
}

/// Asks for a shutdown (one more) and notes when.
async fn ask(loop_: &mut Running, when: Began) {
    when.set(Some(Instant::now()));
    loop_.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_drained_job_finishes_on_its_own_and_is_counted() {
    let mut rig = rig_with(StopMode::Drain, &[exits(0, 20)]);
    let began = noted();
    let last = rig
        .run(|mut loop_| async move {
            shut_down_the_job(&mut loop_, began).await;
            let draining = loop_.until(|s| s.status == Status::Stopping).await;
            assert_eq!(draining.reason, Some(Reason::Draining));
            assert_eq!(draining.iteration, 1);
            loop_.until(|s| s.status == Status::Stopped).await;
            assert!(loop_.counted(Outcome::Success));
        })
        .await;
    // Not signalled: it ran its whole 20 s.
    assert_eq!(rig.job_ended(began.get().unwrap()), (SECS(20), 0));
    assert_eq!(last.last_batch_exit, Some(0));
    assert_eq!(last.last_outcome, Some(Outcome::Success));
    assert_eq!(rig.started(), ["job work hard"], "no new job");
    assert_eq!(rig.ending.unwrap().exit_code(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_drain_whose_grace_runs_out_terminates_then_kills() {
    // Acts on SIGTERM: it comes at the end of the shutdown grace.
    let mut rig = rig_with(StopMode::Drain, &[exits(0, 3600)]);
    let began = noted();
    let last = rig
        .run(|mut loop_| async move {
            shut_down_the_job(&mut loop_, began).await;
            loop_.until(|s| s.status == Status::Stopped).await;
        })
        .await;
    let ended = rig.job_ended(began.get().unwrap());
    assert_eq!(ended, (SECS(25) + TERM_TAKES, 143));
    assert_eq!(last.last_batch_exit, Some(143));

    // Ignores SIGTERM: SIGKILL after the kill grace.
    let mut rig = rig_with(StopMode::Drain, &[deaf(3600)]);
    let began = noted();
    let last = rig
        .run(|mut loop_| async move {
            shut_down_the_job(&mut loop_, began).await;
            loop_.until(|s| s.status == Status::Stopped).await;
        })
        .await;
    assert_eq!(rig.job_ended(began.get().unwrap()), (SECS(25 + 10), 137));
    assert_eq!(last.last_outcome, Some(Outcome::Failure));
}

#[tokio::test(start_paused = true)]
async fn a_second_request_ends_the_drain_and_a_third_kills() {
    let mut rig = rig_with(StopMode::Drain, &[exits(0, 3600)]);
    let second = noted();
    rig.run(|mut loop_| async move {
        shut_down_the_job(&mut loop_, noted()).await;
        loop_.until(|s| s.reason == Some(Reason::Draining)).await;
        tokio::time::sleep(SECS(5)).await;
        ask(&mut loop_, second).await;
        let ended = loop_.until(|s| s.reason != Some(Reason::Draining)).await;
        assert_eq!(ended.status, Status::Stopping);
        loop_.until(|s| s.status == Status::Stopped).await;
    })
    .await;
    // SIGTERM at once.
    assert_eq!(rig.job_ended(second.get().unwrap()), (TERM_TAKES, 143));

    let mut rig = rig_with(StopMode::Drain, &[deaf(3600)]);
    let third = noted();
    rig.run(|mut loop_| async move {
        shut_down_the_job(&mut loop_, noted()).await;
        tokio::time::sleep(SECS(1)).await;
        ask(&mut loop_, noted()).await;
        tokio::time::sleep(SECS(1)).await;
        assert_eq!(loop_.snapshots.borrow().status, Status::Stopping);
        ask(&mut loop_, third).await;
        loop_.until(|s| s.status == Status::Stopped).await;
    })
    .await;
    // SIGKILL at once.
    assert_eq!(rig.job_ended(third.get().unwrap()), (Duration::ZERO, 137));
}

#[tokio::test(start_paused = true)]
async fn under_terminate_the_grace_counts_from_the_first_request() {
    let mut rig = rig_with(StopMode::Terminate, &[deaf(3600)]);
    let began = noted();
    rig.run(|mut loop_| async move {
        shut_down_the_job(&mut loop_, began).await;
        let stopping = loop_.until(|s| s.status == Status::Stopping).await;
        assert_eq!(stopping.reason, None, "no drain under terminate");
        tokio::time::sleep(SECS(3)).await;
        // A second request kills at once.
        loop_.shutdown().await;
        loop_.until(|s| s.status == Status::Stopped).await;
    })
    .await;
    assert_eq!(rig.job_ended(began.get().unwrap()), (SECS(3), 137));

    let mut rig = rig_with(StopMode::Terminate, &[deaf(3600)]);
    let began = noted();
    rig.run(|mut loop_| async move {
        shut_down_the_job(&mut loop_, began).await;
        loop_.until(|s| s.status == Status::Stopped).await;
    })
    .await;
    assert_eq!(rig.job_ended(began.get().unwrap()), (SECS(25), 137));
}

#[tokio::test(start_paused = true)]
async fn a_drain_without_a_running_job_stops_at_once() {
    let mut rig = rig_with(StopMode::Drain, &[exits(0, 1)]);
    rig.settings.idle_sleep = SECS(3600);
    rig.run(|mut loop_| async move {
        loop_.until(|s| s.status == Status::Idle).await;
        let began = Instant::now();
        loop_.shutdown().await;
        let last = loop_.until(|s| s.status == Status::Stopped).await;
        assert_eq!(began.elapsed(), Duration::ZERO);
        assert_eq!(last.reason, None);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn escaped_processes_and_the_flush_share_what_is_left_of_the_budget() {
    let mut rig = rig_with(StopMode::Drain, &[deaf(3600)]);
    let began = noted();
    rig.run(|mut loop_| async move {
        shut_down_the_job(&mut loop_, began).await;
        loop_.until(|s| s.status == Status::Stopped).await;
    })
    .await;
    let began = began.get().unwrap();
    let end = began + SECS(25 + 10) + SHUTDOWN_SLACK;
    // The job was killed at 35 s; what escaped it gets SIGTERM after the
    // run log's close and a floor of a second (the two graces are over),
    // well before the budget's end.
    let adopted = rig.world.0.adopted.borrow().clone();
    assert_eq!(adopted.len(), 1);
    let (asked, kill_at) = adopted[0];
    assert!(
        asked >= began + SECS(35) && asked <= began + SECS(37),
        "{:?}",
        asked - began
    );
    assert_eq!(kill_at, Some(asked + SECS(1)));
    let ending = rig.ending.unwrap();
    assert_eq!(ending.deadline, Some(end.into_std()));
    // The flush: the shutdown grace within 1..10 s, but no more than what
    // is left less half a second: nothing past the end.
    let at = |secs: u64| (began + SECS(secs)).into_std();
    assert_eq!(ending.flush_limit(at(37)), Duration::from_millis(2500));
    assert_eq!(ending.flush_limit(at(40)), Duration::ZERO);
    assert_eq!(ending.flush_limit(at(0)), SECS(10));
    let short = Ending {
        flush_max: SECS(1),
        ..ending
    };
    assert_eq!(short.flush_limit(at(37)), SECS(1));
    assert_eq!(short.flush_limit(at(39)), Duration::from_millis(500));

    // With graces of 0 the floor still fits: SIGKILL by the budget's end
    // less the flush's reserve.
    let mut rig = rig_with(StopMode::Terminate, &[exits(0, 1)]);
    rig.settings.shutdown_grace = Duration::ZERO;
    rig.settings.kill_grace = Duration::ZERO;
    let began = noted();
    rig.run(|mut loop_| async move {
        loop_.until(|s| s.status == Status::Idle).await;
        began.set(Some(Instant::now()));
        loop_.shutdown().await;
        loop_.until(|s| s.status == Status::Stopped).await;
    })
    .await;
    let (asked, kill_at) = rig.world.0.adopted.borrow()[0];
    assert_eq!(asked, began.get().unwrap());
    assert_eq!(kill_at, Some(asked + SECS(1)));
}

#[tokio::test(start_paused = true)]
async fn halt_exit_keeps_the_halt_stops_what_is_left_and_picks_the_code() {
    for (job, status, code) in [
        (exits(1, 0), Status::Unhealthy, 69),
        (exits(3, 0), Status::TokenExpired, 77),
    ] {
        let mut rig = rig_with(StopMode::Terminate, &[job, job]);
        rig.settings.max_failures = 2;
        rig.settings.halt_action = HaltAction::Exit;
        let last = rig.run(until_the_loop_ends).await;
        assert_eq!(last.status, status, "state.json keeps the halt");
        assert!(rig.marker(if code == 69 {
            statefile::UNHEALTHY
        } else {
            statefile::TOKEN_EXPIRED
        }));
        let ending = rig.ending.unwrap();
        assert_eq!(ending.halt, Some(status));
        assert_eq!(ending.exit_code(), code);
        assert_eq!(
            rig.world.0.adopted.borrow().len(),
            1,
            "escaped processes stopped"
        );
        assert_eq!(last.iteration, if code == 69 { 2 } else { 1 });
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_preflight_with_halt_exit_exits_69_before_any_job() {
    let mut rig = rig_with(StopMode::Terminate, &[]).shells(&[exits(1, 0)]);
    rig.settings.preflight_cmd = Some("check".into());
    rig.settings.halt_action = HaltAction::Exit;
    let last = rig.run(until_the_loop_ends).await;
    assert_eq!(last.status, Status::Unhealthy);
    assert_eq!(last.reason, Some(Reason::PreflightFailed));
    assert_eq!(rig.ending.unwrap().exit_code(), 69);
    assert!(rig.marker(statefile::UNHEALTHY));
    assert_eq!(rig.started(), ["sh check"]);
}

#[test]
fn the_exit_code_is_a_function_of_the_halt_status() {
    for status in Status::ALL {
        let code = status.halt_exit_code();
        match status {
            Status::Unhealthy => assert_eq!(code, Some(69)),
            Status::TokenExpired => assert_eq!(code, Some(77)),
            _ => assert_eq!(code, None, "{status:?} is no halt"),
        }
    }
    let after_shutdown = Ending::default();
    assert_eq!(after_shutdown.exit_code(), 0);
}
