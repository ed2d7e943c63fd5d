//! Secrets: a credential in the job's environment and arguments, printed by
//! the job in the line that matches the auth pattern, reaches no metric, no
//! span attribute or event, no daemon log line and not /state (SPEC §8).

use std::time::Duration;

use crate::util::otlp::grpc_receiver;
use crate::util::{read, Harness};

const SECRET: &str = "sk-live-9f8e7d6c5b4a39281706";

#[test]
fn a_printed_credential_reaches_no_metric_span_log_or_state() {
    let receiver = grpc_receiver();
    let mut h = Harness::new();
    let job = h.script("job.sh", "echo \"using $API_TOKEN and $1\"\necho \"authentication failed for key $API_TOKEN\" >&2\nexit 1");
    h.env("API_TOKEN", SECRET)
        .env("AGENT_ADMIN_TOKEN", "admin-secret-4242")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("AGENT_LOG_LEVEL", "debug");
    let argument = format!("--key={SECRET}");
    h.start(&[], &[job.to_str().unwrap(), &argument]);
    h.wait_status("token-expired", Duration::from_secs(15));
    let (_, metrics) = h.get("/metrics");
    let (_, state) = h.get("/state");
    let (_, health) = h.get("/health");
    assert!(h.stop().success());

    let run_log = read(&h.run_logs()[0]);
    assert!(
        run_log.contains(SECRET),
        "the run log keeps the job's output as it was"
    );
    for (place, text) in [
        ("metrics", &metrics),
        ("/state", &state),
        ("/health", &health),
        ("daemon log", &h.stderr()),
    ] {
        assert!(
            !text.contains(SECRET),
            "{place} leaks the credential:\n{text}"
        );
        assert!(
            !text.contains("admin-secret-4242"),
            "{place} leaks the admin token"
        );
        assert!(
            !text.contains("authentication failed for"),
            "{place} repeats the matched line"
        );
    }
    let spans = receiver.received.spans();
    assert!(!spans.is_empty());
    for span in spans {
        let everything = format!("{:?} {:?} {}", span.attributes, span.events, span.name);
        assert!(
            !everything.contains(SECRET),
            "span {} leaks the credential: {everything}",
            span.name
        );
        assert!(
            !everything.contains("authentication failed"),
            "span repeats the matched line"
        );
    }
}
