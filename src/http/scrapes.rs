//! `/metrics` renders, shared and paced, so that a flood of scrapes costs
//! the loop next to nothing (SPEC §6: the server never slows the loop).
//!
//! A render is the only costly thing the server does (tens of µs), and on a
//! small machine any CPU it burns slows the loop, whatever its nice value:
//! one nice-19 busy thread left a 2-vCPU loop 26% slower. So:
//! - scrapes that wait together share one render, and every answer comes
//!   from a render that began after its request arrived (never stale);
//! - after a render that took `d`, the next one waits until `d × (SHARE -
//!   1)` has passed, which keeps renders under 1/SHARE of one core however
//!   many scrapers push. A Prometheus scraping every few seconds never
//!   waits; a flood gets its answers in batches, milliseconds apart.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::metrics::Metrics;

/// Renders may take at most one part in `SHARE` of one core's time.
const SHARE: u32 = 20;

/// The two formats `/metrics` answers in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text 0.0.4.
    Text,
    /// OpenMetrics 1.0.0 with exemplars.
    OpenMetrics,
}

/// One paced render per format.
pub struct Scrapes {
    metrics: Arc<Metrics>,
    text: watch::Sender<Slot>,
    openmetrics: watch::Sender<Slot>,
}

/// What one format's scrapes share. Watchers are woken when a render is
/// stored or abandoned.
struct Slot {
    /// Requests numbered as they arrive.
    arrivals: u64,
    /// The latest body answers every request numbered up to this.
    covers: u64,
    body: Bytes,
    /// A request has taken on the next render (it may be waiting its turn).
    claimed: bool,
    /// When the next render may start.
    next_at: Instant,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            arrivals: 0,
            covers: 0,
            body: Bytes::new(),
            claimed: false,
            next_at: Instant::now(),
        }
    }
}

/// Hands the render back if the request that claimed it is dropped (its
/// client went away) before storing it, so that another request takes it.
struct Claim<'a>(Option<&'a watch::Sender<Slot>>);

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.0 {
            slot.send_modify(|slot| slot.claimed = false);
        }
    }
}

impl Scrapes {
    /// Paced renders of `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Scrapes {
        Scrapes {
            metrics,
            text: watch::Sender::new(Slot::new()),
            openmetrics: watch::Sender::new(Slot::new()),
        }
    }

    /// A body rendered after this call began, shared with the requests
    /// that wait with it.
    pub async fn render(&self, format: Format) -> Bytes {
        let slot = match format {
            Format::Text => &self.text,
            Format::OpenMetrics => &self.openmetrics,
        };
        let mut ticket = 0;
        slot.send_if_modified(|slot| {
            slot.arrivals += 1;
            ticket = slot.arrivals;
            false
        });
        let mut changes = slot.subscribe();
        loop {
            // Seen before looking, so that a render stored after the look
            // wakes the wait below.
            changes.borrow_and_update();
            let mut answer = None;
            let mut start_at = None;
            slot.send_if_modified(|slot| {
                if slot.covers >= ticket {
                    answer = Some(slot.body.clone());
                } else if !slot.claimed {
                    slot.claimed = true;
                    start_at = Some(slot.next_at);
                }
                false
            });
            if let Some(body) = answer {
                return body;
            }
            let Some(start_at) = start_at else {
                // Another request renders; ignore an error: `slot` is ours.
                let _ = changes.changed().await;
                continue;
            };
            let claim = Claim(Some(slot));
            tokio::time::sleep_until(start_at).await;
            return self.render_now(format, claim);
        }
    }

    /// Renders for every request that arrived so far and wakes them.
    fn render_now(&self, format: Format, mut claim: Claim<'_>) -> Bytes {
        let slot = claim.0.take().expect("a claim is used once");
        let covers = slot.borrow().arrivals;
        let started = Instant::now();
        let body = Bytes::from(match format {
            Format::Text => self.metrics.render(),
            Format::OpenMetrics => self.metrics.render_openmetrics(),
        });
        let took = started.elapsed();
        let pause = took.saturating_mul(SHARE - 1).min(MAX_PAUSE);
        slot.send_modify(|slot| {
            slot.covers = covers;
            slot.body = body.clone();
            slot.claimed = false;
            slot.next_at = Instant::now() + pause;
        });
        body
    }
}

/// A bound on the pause after a render that a stall (a preempted thread, a
/// suspended VM) made look long: a scraper never waits more than this for
/// its turn.
const MAX_PAUSE: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;

    fn scrapes() -> Arc<Scrapes> {
        Arc::new(Scrapes::new(Arc::new(Metrics::new())))
    }

    /// Holds the next render of `slot` back for `length`.
    fn pause(slot: &watch::Sender<Slot>, length: Duration) {
        slot.send_modify(|slot| slot.next_at = Instant::now() + length);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_is_rendered_after_its_request_arrived() {
        let scrapes = scrapes();
        let before = scrapes.render(Format::Text).await;
        assert!(before.starts_with(b"# HELP"));
        scrapes.metrics.spawn_errors.inc();
        let after = scrapes.render(Format::Text).await;
        let line = "jobloop_spawn_errors_total 1";
        assert!(!String::from_utf8_lossy(&before).contains(line));
        assert!(String::from_utf8_lossy(&after).contains(line));
    }

    #[tokio::test(start_paused = true)]
    async fn requests_that_wait_together_share_one_render() {
        let scrapes = scrapes();
        // Eight requests come during a pause after a render, and wait.
        scrapes.render(Format::OpenMetrics).await;
        pause(&scrapes.openmetrics, Duration::from_millis(10));
        let mut waiting = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let scrapes = scrapes.clone();
            waiting.spawn(async move { scrapes.render(Format::OpenMetrics).await });
        }
        tokio::task::yield_now().await;
        scrapes.metrics.spawn_errors.inc();
        let bodies = waiting.join_all().await;
        for body in &bodies {
            assert!(String::from_utf8_lossy(body).contains("jobloop_spawn_errors_total 1"));
            // One render: the very same buffer.
            assert_eq!(body.as_ptr(), bodies[0].as_ptr());
        }
        assert!(bodies[0].ends_with(b"# EOF\n"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_request_hands_its_render_on() {
        let scrapes = scrapes();
        scrapes.render(Format::Text).await;
        // Force a pause, then drop the request that claimed the render
        // while it waits out the pause.
        pause(&scrapes.text, MAX_PAUSE);
        let claimer = {
            let scrapes = scrapes.clone();
            tokio::spawn(async move { scrapes.render(Format::Text).await })
        };
        tokio::task::yield_now().await;
        assert!(scrapes.text.borrow().claimed);
        claimer.abort();
        let _ = claimer.await;
        assert!(!scrapes.text.borrow().claimed);
        let body = tokio::time::timeout(Duration::from_secs(1), scrapes.render(Format::Text))
            .await
            .expect("the next request renders");
        assert!(body.starts_with(b"# HELP"));
    }
}
