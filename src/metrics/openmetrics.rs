//! The OpenMetrics 1.0.0 rendering of the registry's gathered families, with
//! the exemplars that link `jobloop_iterations_total` and
//! `jobloop_iteration_duration_seconds` to the run's trace (SPEC §6, §7).
//!
//! The `prometheus` crate has no OpenMetrics encoder and no exemplars, so
//! the registry stays as it is and this small encoder walks its families;
//! the exemplars live beside it in [`Exemplars`], written when a run ends.
//! What differs from the text format 0.0.4: counters are announced without
//! their `_total` suffix (the sample keeps it), HELP escapes `"` too,
//! exemplars follow ` # ` on counter and bucket samples, and `# EOF` ends
//! the answer. Series names, labels and `le` values are the same in both
//! formats, so a Prometheus 2.x that switches format keeps its series (it
//! does not normalise `le="1"` to `le="1.0"`).

use std::fmt::Write as _;

use prometheus::proto::{Metric, MetricFamily, MetricType};

/// The content type of the OpenMetrics answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The family whose samples carry the iteration's exemplar.
const ITERATIONS: &str = "jobloop_iterations_total";
/// The histogram whose buckets carry the iteration's exemplar.
const DURATION: &str = "jobloop_iteration_duration_seconds";
/// The label both are split by.
const OUTCOME: &str = "outcome";

/// One exemplar: the ids of the run it comes from, its value and when.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    trace_id: String,
    span_id: String,
    value: f64,
    /// Seconds since the Unix epoch.
    timestamp: f64,
}

/// The W3C ids of a run's span, as its run-log header carries them.
#[derive(Debug, Clone, Copy)]
pub struct RunTrace<'a> {
    /// 32 lower-case hex digits.
    pub trace_id: &'a str,
    /// 16 lower-case hex digits.
    pub span_id: &'a str,
}

impl RunTrace<'_> {
    /// True for ids a trace backend can look up: lower-case hex of the right
    /// length, not all zeros (the invalid span context).
    fn is_valid(&self) -> bool {
        let hex = |s: &str, n: usize| {
            s.len() == n
                && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                && s.bytes().any(|b| b != b'0')
        };
        hex(self.trace_id, 32) && hex(self.span_id, 16)
    }
}

/// The latest exemplars of one outcome's series.
#[derive(Debug, Clone)]
struct Latest {
    outcome: &'static str,
    /// On `jobloop_iterations_total{outcome}`.
    counter: Option<Exemplar>,
    /// On each bucket: the finite bounds in order, then `+Inf`.
    buckets: Vec<Option<Exemplar>>,
}

/// The latest exemplar of each counter series and each bucket, by outcome.
#[derive(Debug, Default, Clone)]
pub struct Exemplars {
    by_outcome: Vec<Latest>,
}

impl Exemplars {
    /// Records the run of `outcome` that took `seconds`, ended at
    /// `timestamp`: the counter's exemplar (value 1, the increment) and that
    /// of the bucket the run fell in, the first whose bound is at least
    /// `seconds` (the rule of the Prometheus client libraries).
    pub fn record(
        &mut self,
        outcome: &'static str,
        bounds: &[f64],
        seconds: f64,
        timestamp: f64,
        trace: RunTrace<'_>,
    ) {
        if !trace.is_valid() {
            return;
        }
        let exemplar = |value| Exemplar {
            trace_id: trace.trace_id.to_owned(),
            span_id: trace.span_id.to_owned(),
            value,
            timestamp,
        };
        let index = match self.by_outcome.iter().position(|l| l.outcome == outcome) {
            Some(index) => index,
            None => {
                self.by_outcome.push(Latest {
                    outcome,
                    counter: None,
                    buckets: vec![None; bounds.len() + 1],
                });
                self.by_outcome.len() - 1
            }
        };
        let latest = &mut self.by_outcome[index];
        latest.counter = Some(exemplar(1.0));
        let bucket = bounds
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(bounds.len());
        if let Some(slot) = latest.buckets.get_mut(bucket) {
            *slot = Some(exemplar(seconds));
        }
    }

    fn of(&self, outcome: &str) -> Option<&Latest> {
        self.by_outcome.iter().find(|l| l.outcome == outcome)
    }

    fn counter(&self, outcome: &str) -> Option<&Exemplar> {
        self.of(outcome).and_then(|l| l.counter.as_ref())
    }

    fn bucket(&self, outcome: &str, index: usize) -> Option<&Exemplar> {
        self.of(outcome)
            .and_then(|l| l.buckets.get(index))
            .and_then(Option::as_ref)
    }
}

/// Renders `families` as OpenMetrics 1.0.0 with `exemplars`, `# EOF` last.
pub fn encode(families: &[MetricFamily], exemplars: &Exemplars) -> String {
    let mut out = String::with_capacity(12 * 1024);
    for family in families {
        let name = family.name();
        let kind = family.get_field_type();
        // OpenMetrics names a counter family without its `_total`.
        let family_name = match kind {
            MetricType::COUNTER => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        if !family.help().is_empty() {
            let _ = writeln!(out, "# HELP {family_name} {}", escape(family.help()));
        }
        let _ = writeln!(out, "# TYPE {family_name} {}", type_word(kind));
        for metric in family.get_metric() {
            match kind {
                MetricType::COUNTER => {
                    let exemplar = (name == ITERATIONS)
                        .then(|| outcome(metric).and_then(|o| exemplars.counter(o)))
                        .flatten();
                    sample(
                        &mut out,
                        &format!("{family_name}_total"),
                        metric,
                        None,
                        metric.get_counter().get_value(),
                        exemplar,
                    );
                }
                MetricType::GAUGE => {
                    sample(
                        &mut out,
                        name,
                        metric,
                        None,
                        metric.get_gauge().get_value(),
                        None,
                    );
                }
                // The crate's own text encoder panics on these; nothing
                // here registers one, so they are announced and left empty.
                MetricType::UNTYPED => {}
                MetricType::HISTOGRAM => histogram(&mut out, name, metric, exemplars),
                MetricType::SUMMARY => summary(&mut out, name, metric),
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

fn type_word(kind: MetricType) -> &'static str {
    match kind {
        MetricType::COUNTER => "counter",
        MetricType::GAUGE => "gauge",
        MetricType::HISTOGRAM => "histogram",
        MetricType::SUMMARY => "summary",
        MetricType::UNTYPED => "unknown",
    }
}

fn outcome(metric: &Metric) -> Option<&str> {
    metric
        .get_label()
        .iter()
        .find(|pair| pair.name() == OUTCOME)
        .map(|pair| pair.value())
}

fn histogram(out: &mut String, name: &str, metric: &Metric, exemplars: &Exemplars) {
    let histogram = metric.get_histogram();
    let outcome = (name == DURATION).then(|| outcome(metric)).flatten();
    let exemplar = |index| outcome.and_then(|o| exemplars.bucket(o, index));
    let bucket_name = format!("{name}_bucket");
    let buckets = histogram.get_bucket();
    let mut previous = 0;
    let mut inf_seen = false;
    for (index, bucket) in buckets.iter().enumerate() {
        let bound = bucket.upper_bound();
        inf_seen |= bound == f64::INFINITY;
        let count = bucket.cumulative_count();
        // Only a bucket that counted a run carries one: with cumulative
        // counts, one whose own count is zero did not.
        let own = exemplar(index).filter(|_| count > previous);
        previous = count;
        let le = number(bound);
        sample(
            out,
            &bucket_name,
            metric,
            Some(("le", &le)),
            count as f64,
            own,
        );
    }
    if !inf_seen {
        let count = histogram.get_sample_count();
        let own = exemplar(buckets.len()).filter(|_| count > previous);
        sample(
            out,
            &bucket_name,
            metric,
            Some(("le", "+Inf")),
            count as f64,
            own,
        );
    }
    sample(
        out,
        &format!("{name}_sum"),
        metric,
        None,
        histogram.get_sample_sum(),
        None,
    );
    let count = histogram.get_sample_count() as f64;
    sample(out, &format!("{name}_count"), metric, None, count, None);
}

fn summary(out: &mut String, name: &str, metric: &Metric) {
    let summary = metric.get_summary();
    for quantile in summary.get_quantile() {
        let q = number(quantile.quantile());
        sample(
            out,
            name,
            metric,
            Some(("quantile", &q)),
            quantile.value(),
            None,
        );
    }
    sample(
        out,
        &format!("{name}_sum"),
        metric,
        None,
        summary.sample_sum(),
        None,
    );
    let count = summary.sample_count() as f64;
    sample(out, &format!("{name}_count"), metric, None, count, None);
}

/// One sample line: name, labels (plus `extra`), value, and the exemplar.
fn sample(
    out: &mut String,
    name: &str,
    metric: &Metric,
    extra: Option<(&str, &str)>,
    value: f64,
    exemplar: Option<&Exemplar>,
) {
    out.push_str(name);
    let labels = metric
        .get_label()
        .iter()
        .map(|pair| (pair.name(), pair.value()))
        .chain(extra);
    let mut separator = '{';
    for (label, text) in labels {
        let _ = write!(out, "{separator}{label}=\"{}\"", escape(text));
        separator = ',';
    }
    if separator == ',' {
        out.push('}');
    }
    let _ = write!(out, " {}", number(value));
    if let Some(e) = exemplar {
        let _ = write!(
            out,
            " # {{trace_id=\"{}\",span_id=\"{}\"}} {} {:.3}",
            e.trace_id,
            e.span_id,
            number(e.value),
            e.timestamp
        );
    }
    out.push('\n');
}

/// A number as both formats write it; OpenMetrics spells infinities
/// `+Inf`/`-Inf` and not-a-number `NaN`, where Rust writes `inf` and `NaN`.
fn number(value: f64) -> String {
    if value == f64::INFINITY {
        "+Inf".to_owned()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        value.to_string()
    }
}

/// Escapes a label value or HELP text: backslash, double quote, newline.
fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(['\\', '"', '\n']) {
        return text.into();
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

    const TRACE: RunTrace<'static> = RunTrace {
        trace_id: "0af7651916cd43dd8448eb211c80319c",
        span_id: "b7ad6b7169203331",
    };

    fn registry() -> (Registry, IntCounterVec, HistogramVec) {
        let registry = Registry::new();
        let counter =
            IntCounterVec::new(Opts::new(ITERATIONS, "Runs \"by\" outcome."), &[OUTCOME]).unwrap();
        let histogram = HistogramVec::new(
            HistogramOpts::new(DURATION, "Wall time.").buckets(vec![0.1, 1.0, 10.0]),
            &[OUTCOME],
        )
        .unwrap();
        registry.register(Box::new(counter.clone())).unwrap();
        registry.register(Box::new(histogram.clone())).unwrap();
        (registry, counter, histogram)
    }

    #[test]
    fn the_exemplar_goes_on_the_bucket_the_run_fell_in() {
        let (registry, counter, histogram) = registry();
        let mut exemplars = Exemplars::default();
        counter.with_label_values(&["failure"]).inc();
        histogram.with_label_values(&["failure"]).observe(0.5);
        exemplars.record("failure", &[0.1, 1.0, 10.0], 0.5, 1_700_000_000.25, TRACE);
        counter.with_label_values(&["success"]);
        let text = encode(&registry.gather(), &exemplars);
        let expected = "\
# HELP jobloop_iteration_duration_seconds Wall time.
# TYPE jobloop_iteration_duration_seconds histogram
jobloop_iteration_duration_seconds_bucket{outcome=\"failure\",le=\"0.1\"} 0
jobloop_iteration_duration_seconds_bucket{outcome=\"failure\",le=\"1\"} 1 # {trace_id=\"0af7651916cd43dd8448eb211c80319c\",span_id=\"b7ad6b7169203331\"} 0.5 1700000000.250
jobloop_iteration_duration_seconds_bucket{outcome=\"failure\",le=\"10\"} 1
jobloop_iteration_duration_seconds_bucket{outcome=\"failure\",le=\"+Inf\"} 1
jobloop_iteration_duration_seconds_sum{outcome=\"failure\"} 0.5
jobloop_iteration_duration_seconds_count{outcome=\"failure\"} 1
# HELP jobloop_iterations Runs \\\"by\\\" outcome.
# TYPE jobloop_iterations counter
jobloop_iterations_total{outcome=\"failure\"} 1 # {trace_id=\"0af7651916cd43dd8448eb211c80319c\",span_id=\"b7ad6b7169203331\"} 1 1700000000.250
jobloop_iterations_total{outcome=\"success\"} 0
# EOF
";
        assert_eq!(text, expected);
    }

    #[test]
    fn a_run_past_the_last_bound_marks_the_inf_bucket_and_the_latest_wins() {
        let mut exemplars = Exemplars::default();
        let bounds = [1.0];
        exemplars.record("success", &bounds, 5.0, 1.0, TRACE);
        let later = RunTrace {
            trace_id: "11111111111111111111111111111111",
            span_id: "2222222222222222",
        };
        exemplars.record("success", &bounds, 7.0, 2.0, later);
        let inf = exemplars.bucket("success", 1).unwrap();
        assert_eq!((inf.trace_id.as_str(), inf.value), (later.trace_id, 7.0));
        assert!(exemplars.bucket("success", 0).is_none());
        assert_eq!(exemplars.counter("success").unwrap().span_id, later.span_id);
    }

    #[test]
    fn invalid_ids_leave_no_exemplar() {
        let mut exemplars = Exemplars::default();
        let zero = RunTrace {
            trace_id: "00000000000000000000000000000000",
            span_id: "0000000000000000",
        };
        exemplars.record("success", &[1.0], 0.5, 1.0, zero);
        let short = RunTrace {
            trace_id: "abc",
            span_id: "b7ad6b7169203331",
        };
        exemplars.record("success", &[1.0], 0.5, 1.0, short);
        assert!(exemplars.counter("success").is_none());
    }

    #[test]
    fn samples_and_values_match_the_text_format() {
        let (registry, counter, histogram) = registry();
        counter.with_label_values(&["a\"b\\c\nd"]).inc_by(3);
        histogram.with_label_values(&["x"]).observe(100.0);
        let families = registry.gather();
        let open = encode(&families, &Exemplars::default());
        let mut plain = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&families, &mut plain)
            .unwrap();
        let samples = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|line| !line.starts_with('#'))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(samples(&open), samples(&String::from_utf8(plain).unwrap()));
        assert!(open.ends_with("# EOF\n"));
    }

    #[test]
    fn numbers_use_the_openmetrics_spelling() {
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(2.5), "2.5");
        assert_eq!(number(3.0), "3");
    }
}
