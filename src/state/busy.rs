//! The jobs' busy time (`jobloop_busy_seconds_total`), carried by the
//! [`Snapshot`](super::Snapshot) but kept out of state.json: an `Instant`
//! means nothing outside this process.

use std::time::{Duration, Instant};

/// How long jobs have been running: the finished ones' total and the start
/// of the one running now, so that a reader (a scrape) adds the running
/// job's time so far without the loop having to publish every second.
///
/// Only the job counts: not the preflight, the hooks or the sleeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Busy {
    /// Run time of the finished jobs.
    pub finished: Duration,
    /// When the running job started; `None` while no job runs.
    pub since: Option<Instant>,
}

impl Busy {
    /// The busy time as of `now`: the finished total plus the running
    /// job's time so far.
    pub fn at(&self, now: Instant) -> Duration {
        let running = self
            .since
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        self.finished.saturating_add(running)
    }

    /// Marks a job started at `at`.
    pub fn start(&mut self, at: Instant) {
        self.since = Some(at);
    }

    /// Marks the running job ended at `at`, adding its time to the total.
    pub fn stop(&mut self, at: Instant) {
        self.finished = self.at(at);
        self.since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_time_adds_the_running_job() {
        let start = Instant::now();
        let mut busy = Busy::default();
        assert_eq!(busy.at(start), Duration::ZERO);
        busy.start(start);
        assert_eq!(
            busy.at(start + Duration::from_secs(2)),
            Duration::from_secs(2)
        );
        // A reader whose clock is behind the start sees no time, not a panic.
        assert_eq!(busy.at(start - Duration::from_millis(1)), Duration::ZERO);
        busy.stop(start + Duration::from_secs(3));
        assert_eq!(busy.since, None);
        assert_eq!(
            busy.at(start + Duration::from_secs(60)),
            Duration::from_secs(3)
        );
        busy.start(start + Duration::from_secs(60));
        assert_eq!(
            busy.at(start + Duration::from_secs(61)),
            Duration::from_secs(4)
        );
    }
}
