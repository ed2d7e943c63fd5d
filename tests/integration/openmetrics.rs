//! `/metrics` negotiation (SPEC §6) and exemplars (SPEC §7): the answer to
//! Prometheus's `Accept` header is OpenMetrics that a strict parser (Python
//! `prometheus_client`) accepts, with exemplars whose ids are the run-log
//! headers'; without that header the text format 0.0.4 is unchanged.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{self, Harness, RunLogHeader};

const WAIT: Duration = Duration::from_secs(15);

/// What Prometheus 2.x sends.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// `GET /metrics` with an `Accept` header: (content type, body).
fn scrape(h: &Harness, accept: Option<&str>) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", h.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    let request =
        format!("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{accept}\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let content_type = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_default();
    (content_type, body.to_string())
}

/// Fails twice, then succeeds and idles: two failure runs and one success.
fn two_failures_then_success() -> Harness {
    let mut h = Harness::new();
    let job = h.script("job.sh", "[ \"$JOBLOOP_ITERATION\" -ge 3 ]");
    h.env("AGENT_IDLE_SLEEP", "1h");
    h.env("AGENT_MAX_FAILURES", "10");
    h.start(&[], &[job.to_str().unwrap()]);
    h.wait_status("idle", WAIT);
    h
}

/// A Python that can import `prometheus_client`; in CI its absence is a
/// failure, elsewhere a loud skip.
fn strict_parser() -> Option<&'static str> {
    let found = Command::new("python3")
        .args(["-c", "import prometheus_client.openmetrics.parser"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none_or(|v| v.is_empty()),
            "python3 with prometheus_client is missing in CI (.ci/run installs it in .ci/venv)"
        );
        println!("SKIPPED: no python3 with prometheus_client; `pip install prometheus_client`");
        eprintln!("SKIPPED: no python3 with prometheus_client; `pip install prometheus_client`");
        return None;
    }
    Some("python3")
}

/// Parses `text` with the strict OpenMetrics parser; returns one line per
/// exemplar: `sample-name outcome le trace_id span_id value`.
const PARSE: &str = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        if s.exemplar is not None:
            e = s.exemplar
            print(s.name, s.labels.get("outcome", "-"), s.labels.get("le", "-"),
                  e.labels["trace_id"], e.labels["span_id"], repr(e.value), sorted(e.labels))
"#;

/// One exemplar as the parser read it.
#[derive(Debug)]
struct Seen {
    sample: String,
    outcome: String,
    le: String,
    trace_id: String,
    span_id: String,
    value: f64,
}

fn parse_strictly(python: &str, text: &str) -> Vec<Seen> {
    let output = util::run_with_input(python, &["-c", PARSE], text);
    assert!(
        output.status.success(),
        "the strict parser rejects the answer: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.splitn(7, ' ').collect();
            assert_eq!(
                fields[6], "['span_id', 'trace_id']",
                "exemplar labels: {line}"
            );
            Seen {
                sample: fields[0].into(),
                outcome: fields[1].into(),
                le: fields[2].into(),
                trace_id: fields[3].into(),
                span_id: fields[4].into(),
                value: fields[5].parse().unwrap(),
            }
        })
        .collect()
}

fn header_of(headers: &[RunLogHeader], iteration: u64) -> &RunLogHeader {
    headers
        .iter()
        .find(|header| header.iteration == iteration)
        .unwrap_or_else(|| panic!("no run log of iteration {iteration}: {headers:?}"))
}

#[test]
fn prometheus_gets_openmetrics_that_a_strict_parser_accepts() {
    let Some(python) = strict_parser() else {
        return;
    };
    let h = two_failures_then_success();
    let (content_type, body) = scrape(&h, Some(PROMETHEUS_ACCEPT));
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(body.ends_with("\n# EOF\n"), "{body}");
    assert_eq!(body.matches("# EOF").count(), 1);
    assert!(
        body.contains("# TYPE jobloop_iterations counter\n"),
        "{body}"
    );
    parse_strictly(python, &body);
}

/// The exemplars are the latest run's of each series, with the run-log
/// header's ids; OTLP is off here: the ids are there all the same.
#[test]
fn exemplars_carry_the_ids_of_the_latest_run_of_each_series() {
    let Some(python) = strict_parser() else {
        return;
    };
    let h = two_failures_then_success();
    let (_, body) = scrape(&h, Some("application/openmetrics-text"));
    let seen = parse_strictly(python, &body);
    let headers = h.headers();
    let failure = header_of(&headers, 2);
    let success = header_of(&headers, 3);

    let counters: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.sample == "jobloop_iterations_total")
        .collect();
    assert_eq!(counters.len(), 2, "{seen:?}");
    for (outcome, header) in [("failure", failure), ("success", success)] {
        let counter = counters
            .iter()
            .find(|s| s.outcome == outcome)
            .unwrap_or_else(|| panic!("no {outcome} counter exemplar: {seen:?}"));
        assert_eq!(
            (&counter.trace_id, &counter.span_id, counter.value),
            (&header.trace_id, &header.span_id, 1.0)
        );

        // Exactly one bucket per outcome carries the run: the first whose
        // bound holds its duration (which bucket depends on the machine's
        // speed, so the rule is checked, not the bucket).
        let buckets: Vec<&Seen> = seen
            .iter()
            .filter(|s| s.sample == "jobloop_iteration_duration_seconds_bucket")
            .filter(|s| s.outcome == outcome)
            .collect();
        assert_eq!(buckets.len(), 1, "{outcome}: {seen:?}");
        let bucket = buckets[0];
        assert_eq!(
            (&bucket.trace_id, &bucket.span_id),
            (&header.trace_id, &header.span_id)
        );
        let le: f64 = if bucket.le == "+Inf" {
            f64::INFINITY
        } else {
            bucket.le.parse().unwrap()
        };
        assert!(bucket.value > 0.0 && bucket.value <= le, "{bucket:?}");
        let bounds = [
            0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
        ];
        let smaller = bounds.iter().filter(|b| **b < le).fold(0.0, |_, b| *b);
        assert!(bucket.value > smaller, "not the first bucket: {bucket:?}");
    }
    // No exemplar on an outcome that never ran, nor on any other family.
    assert!(
        seen.iter()
            .all(|s| s.outcome == "failure" || s.outcome == "success"),
        "{seen:?}"
    );
}

/// Without the header, or asking for text, the answer is the text format
/// 0.0.4 as before: no exemplar, no `# EOF`, `_total` in TYPE lines.
#[test]
fn other_clients_get_the_text_format_unchanged() {
    let h = two_failures_then_success();
    for accept in [None, Some("text/plain;version=0.0.4"), Some("*/*")] {
        let (content_type, body) = scrape(&h, accept);
        assert_eq!(
            content_type, "text/plain; version=0.0.4; charset=utf-8",
            "{accept:?}"
        );
        assert!(!body.contains("# EOF"), "{accept:?}");
        assert!(!body.contains("trace_id"), "{accept:?}");
        assert!(body.contains("# TYPE jobloop_iterations_total counter\n"));
    }
}
