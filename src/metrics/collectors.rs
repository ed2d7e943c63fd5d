//! The collectors whose values are worked out at scrape time rather than
//! set by the loop: the busy seconds (the running job's time so far added
//! to the finished total, so the counter grows scrape by scrape while a job
//! runs) and the cached `process_*` metrics.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::Counter;

use crate::state::Busy;

/// `jobloop_busy_seconds_total`: a counter whose value is the [`Busy`] of
/// the latest published snapshot as of the scrape. The loop publishes only
/// at a job's start and end; the time in between is added here, by the
/// reader, so the state keeps its one writer.
#[derive(Clone)]
pub(super) struct BusyCounter {
    /// Only the family's name, help and type: the value is set at collect.
    counter: Counter,
    seen: Arc<Mutex<Seen>>,
}

/// The latest busy time published, and the highest value reported.
#[derive(Default)]
struct Seen {
    busy: Busy,
    reported: f64,
}

impl BusyCounter {
    pub(super) fn new() -> BusyCounter {
        BusyCounter {
            counter: Counter::new(
                "jobloop_busy_seconds_total",
                "Seconds a job was running (growing while it runs); rate() is the worker's utilisation.",
            )
            .expect("valid metric"),
            seen: Arc::new(Mutex::new(Seen::default())),
        }
    }

    /// Takes the busy time of a published snapshot.
    pub(super) fn observe(&self, busy: Busy) {
        self.lock().busy = busy;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        // Plain values: a panic elsewhere cannot leave them half-written.
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Collector for BusyCounter {
    fn desc(&self) -> Vec<&Desc> {
        self.counter.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut seen = self.lock();
        // A scrape between the job's end and the snapshot that says so
        // counts a moment the finished total leaves out: never go back
        // (a counter that drops looks like a restart to Prometheus).
        let value = seen
            .busy
            .at(Instant::now())
            .as_secs_f64()
            .max(seen.reported);
        seen.reported = value;
        let mut families = self.counter.collect();
        for family in &mut families {
            for metric in family.mut_metric() {
                let mut counter = prometheus::proto::Counter::default();
                counter.set_value(value);
                metric.set_counter(counter);
            }
        }
        families
    }
}

/// The `process_*` metrics, read from `/proc` at most once a second: each
/// read costs more than the rest of a scrape, and a flood of scrapes must
/// not turn into a flood of `/proc` reads.
pub(super) struct CachedProcessCollector {
    inner: prometheus::process_collector::ProcessCollector,
    cache: std::sync::Mutex<Option<(std::time::Instant, Vec<MetricFamily>)>>,
}

impl CachedProcessCollector {
    const FRESH: std::time::Duration = std::time::Duration::from_secs(1);

    pub(super) fn new() -> CachedProcessCollector {
        CachedProcessCollector {
            inner: prometheus::process_collector::ProcessCollector::for_self(),
            cache: std::sync::Mutex::new(None),
        }
    }
}

impl Collector for CachedProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.inner.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((at, families)) = cache.as_ref() {
            if at.elapsed() < Self::FRESH {
                return families.clone();
            }
        }
        let families = self.inner.collect();
        *cache = Some((std::time::Instant::now(), families.clone()));
        families
    }
}
