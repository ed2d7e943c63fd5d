//! Secrets and files (issue 6 item 9): a credential in the job's
//! environment, its arguments, the text that matches the auth pattern and
//! the OTLP settings reaches no metric, span, daemon log line (text or
//! JSON), probe answer, `/state`, `jobloop status` or `jobloop check`;
//! run logs are 0640, the state dir 0750 and its files 0640; symlinks
//! planted at the next run-log names, at `state.json.tmp`, at `state.json`
//! and at a marker are never followed.
//!
//! Extends tests/integration/secrets.rs (metrics, spans, text log, /state,
//! /health) to the JSON log, the probes' verbose answers, `status`, `check`
//! and the OTLP endpoint's own credentials; and a crafted state.json whose
//! `runLog` points outside `runs/` makes jobloop write nothing there.

use std::path::Path;
use std::time::Duration;

use crate::util::faults::{mode, umask};
use crate::util::otlp::grpc_receiver;
use crate::util::{self, jobloop, Harness};

const SECS_20: Duration = Duration::from_secs(20);
const SECRET: &str = "sk-live-5e4d3c2b1a0f9e8d7c6b";
const ARG_SECRET: &str = "arg-secret-1a2b3c4d5e6f";
const ADMIN: &str = "admin-secret-0n3-tw0";

/// Fails if `text` holds any of the secrets or the matched line.
fn assert_clean(place: &str, text: &str, extra: &[&str]) {
    for needle in [SECRET, ARG_SECRET, ADMIN, "authentication failed for"]
        .iter()
        .chain(extra)
    {
        assert!(!text.contains(needle), "{place} leaks {needle:?}:\n{text}");
    }
}

// See: issue 6 item 9; SPEC §8 "No secret ever goes into a span, metric or log line".
#[test]
fn secrets_reach_no_json_log_line_probe_state_status_check_or_span() {
    let receiver = grpc_receiver();
    let mut h = Harness::new();
    let job = h.script(
        "job.sh",
        "echo \"token $API_TOKEN arg $1\"\necho \"authentication failed for key $API_TOKEN\" >&2\nexit 1",
    );
    h.env("API_TOKEN", SECRET)
        .env("AGENT_ADMIN_TOKEN", ADMIN)
        .env("AGENT_LOG_FORMAT", "json")
        .env("AGENT_LOG_LEVEL", "trace")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100");
    let argument = format!("--key={ARG_SECRET}");
    let job = job.to_str().unwrap().to_string();
    h.start(&[], &[&job, &argument]);
    h.wait_status("token-expired", SECS_20);
    h.wait_http();
    let mut answers = Vec::new();
    for path in [
        "/metrics",
        "/state",
        "/health",
        "/livez?verbose",
        "/readyz?verbose",
        "/nowhere",
    ] {
        let (_, body) = h.get(path);
        answers.push((path.to_string(), body));
    }
    let (code, body) = h.post("/resume", &[("Authorization", "Bearer wrong")]);
    answers.push((format!("POST /resume with a wrong token ({code})"), body));
    let url = format!("http://127.0.0.1:{}", h.port);
    let status = jobloop(&["status", "--url", &url], &[]);
    answers.push((
        "jobloop status --url".into(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&status.stdout),
            String::from_utf8_lossy(&status.stderr)
        ),
    ));
    let state_dir = h.path("state");
    let status = jobloop(&["status", "--state-dir", state_dir.to_str().unwrap()], &[]);
    answers.push((
        "jobloop status --state-dir".into(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&status.stdout),
            String::from_utf8_lossy(&status.stderr)
        ),
    ));
    // README: `check` prints the program and its number of arguments.
    let check = jobloop(
        &["check", "--", &job, &argument],
        &[("API_TOKEN", SECRET), ("AGENT_ADMIN_TOKEN", ADMIN)],
    );
    assert_eq!(check.status.code(), Some(0));
    answers.push((
        "jobloop check".into(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        ),
    ));
    assert_eq!(h.stop().code(), Some(0));

    let run_log = util::read(&h.run_logs()[0]);
    assert!(
        run_log.contains(SECRET) && run_log.contains(ARG_SECRET),
        "the run log keeps the output"
    );
    for (place, text) in &answers {
        assert_clean(place, text, &[]);
    }
    let stderr = h.stderr();
    assert!(stderr.lines().count() >= 3, "{stderr}");
    for line in stderr.lines() {
        let parsed: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a JSON log line that is not JSON ({e}): {line}"));
        assert!(parsed.is_object());
        assert_clean("the JSON daemon log", line, &[]);
    }
    let spans = receiver.received.spans();
    assert!(!spans.is_empty(), "spans arrived");
    for span in spans {
        let everything = format!("{} {:?} {:?}", span.name, span.attributes, span.events);
        assert_clean(&format!("span {}", span.name), &everything, &[]);
    }
    let state = util::read(&h.path("state/state.json"));
    assert_clean("state.json", &state, &[]);
}

// See: issue 6 item 9, "credentials in the environment": the OTLP
// endpoint's user info and OTEL_EXPORTER_OTLP_HEADERS are credentials too.
#[test]
fn otlp_credentials_in_the_endpoint_and_headers_reach_no_log_line_or_check_output() {
    const PASSWORD: &str = "otlp-pass-7f6e5d";
    const HEADER: &str = "otlp-header-secret-4c3b2a";
    let mut h = Harness::new();
    let endpoint = format!("http://jobloop:{PASSWORD}@127.0.0.1:{}", util::free_port());
    let headers = format!("authorization=Bearer {HEADER}");
    h.env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_EXPORTER_OTLP_HEADERS", &headers)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("AGENT_LOG_LEVEL", "debug")
        .env("AGENT_IDLE_SLEEP", "20ms")
        .env("AGENT_SHUTDOWN_GRACE", "1s");
    h.start(&[], &["true"]);
    h.wait_iteration(3, SECS_20);
    h.wait_http();
    let (_, state) = h.get("/state");
    let (_, metrics) = h.get("/metrics");
    assert_eq!(h.stop().code(), Some(0));
    let check = jobloop(
        &["check", "--", "true"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_HEADERS", &headers),
        ],
    );
    let check_output = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let mut leaks = Vec::new();
    for (place, text) in [
        ("the daemon log", h.stderr()),
        ("jobloop check", check_output),
        ("/state", state),
        ("/metrics", metrics),
    ] {
        for needle in [PASSWORD, HEADER] {
            if let Some(line) = text.lines().find(|l| l.contains(needle)) {
                leaks.push(format!("{place} leaks {needle:?}: {line}"));
            }
        }
    }
    assert!(leaks.is_empty(), "{}", leaks.join("\n"));
}

// See: issue 6 item 9, "run logs are 0640 and the state dir files 0640/0750".
#[test]
fn run_logs_state_files_and_markers_have_their_modes() {
    let mut h = Harness::new();
    h.env("AGENT_MAX_FAILURES", "2")
        .env("AGENT_BACKOFF_START", "10ms");
    h.start(&[], &["false"]);
    h.wait_status("unhealthy", SECS_20);
    assert!(h.marker("UNHEALTHY"));
    let mask = umask();
    let file_mode = 0o640 & !mask;
    let dir_mode = 0o750 & !mask;
    assert_eq!(
        mode(&h.path("state")),
        dir_mode,
        "state dir (umask {mask:o})"
    );
    assert_eq!(mode(&h.path("logs/runs")), dir_mode, "runs dir");
    assert_eq!(mode(&h.path("state/state.json")), file_mode, "state.json");
    assert_eq!(mode(&h.path("state/UNHEALTHY")), file_mode, "UNHEALTHY");
    let logs = h.run_logs();
    assert_eq!(logs.len(), 2);
    for log in &logs {
        assert_eq!(mode(log), file_mode, "{}", log.display());
    }
    assert_eq!(h.stop().code(), Some(0));
    assert_eq!(
        mode(&h.path("state/state.json")),
        file_mode,
        "state.json after the stop"
    );
}

/// A file outside the daemon's directories that must stay as it is.
fn victim(dir: &Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, "victim: must stay untouched\n").unwrap();
    path
}

fn assert_untouched(path: &Path) {
    assert_eq!(
        util::read(path),
        "victim: must stay untouched\n",
        "{} was written through a symlink",
        path.display()
    );
}

// See: issue 6 item 9, "a planted symlink in runs/ ... is not followed"; SPEC §3.
#[test]
fn symlinks_planted_at_the_next_run_log_names_are_never_followed() {
    let mut h = Harness::new();
    let outside = tempfile::tempdir().unwrap();
    let target = victim(outside.path(), "victim.txt");
    let dangling = outside.path().join("never-created.txt");
    let runs = h.path("logs/runs");
    std::fs::create_dir_all(&runs).unwrap();
    // Every name the next runs could take: this second and the next ten,
    // plain and with the first suffixes, alternately to the victim and to a
    // file that does not exist.
    let now = std::time::SystemTime::now();
    let mut planted = Vec::new();
    for offset in 0..12u64 {
        let stamp = util::utc_stamp(now + Duration::from_secs(offset) - Duration::from_secs(1));
        for suffix in 0..3 {
            let name = if suffix == 0 {
                format!("{stamp}.log")
            } else {
                format!("{stamp}-{suffix}.log")
            };
            let to = if (offset + suffix) % 2 == 0 {
                &target
            } else {
                &dangling
            };
            std::os::unix::fs::symlink(to, runs.join(&name)).unwrap();
            planted.push((runs.join(name), to.clone()));
        }
    }
    // A crafted previous state: interrupted, its run log one of the links.
    std::fs::create_dir_all(h.path("state")).unwrap();
    let first_link = planted
        .iter()
        .find(|(_, to)| *to == target)
        .map(|(link, _)| link.clone())
        .unwrap();
    std::fs::write(
        h.path("state/state.json"),
        serde_json::json!({
            "status": "running", "iteration": 3, "pid": 999_999, "jobPid": null,
            "runLog": first_link.to_str().unwrap(), "traceId": null
        })
        .to_string(),
    )
    .unwrap();
    h.env("AGENT_IDLE_SLEEP", "10ms").env("AGENT_LOG_KEEP", "2");
    let job = h.script("job.sh", "echo written by the job");
    h.start(&[], &[job.to_str().unwrap()]);
    h.wait_iteration(5, SECS_20);
    assert_eq!(h.stop().code(), Some(0));

    assert_untouched(&target);
    assert!(!dangling.exists(), "a dangling link's target was created");
    for (link, to) in &planted {
        let meta = std::fs::symlink_metadata(link)
            .unwrap_or_else(|e| panic!("planted link {} is gone: {e}", link.display()));
        assert!(meta.file_type().is_symlink(), "{}", link.display());
        assert_eq!(&std::fs::read_link(link).unwrap(), to);
    }
    let logs: Vec<_> = std::fs::read_dir(&runs)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.path())
        .collect();
    assert!(!logs.is_empty(), "the runs found names of their own");
    let stamps: Vec<String> = planted
        .iter()
        .map(|(link, _)| link.file_name().unwrap().to_string_lossy()[..16].to_string())
        .collect();
    assert!(
        logs.iter()
            .any(|l| stamps.contains(&l.file_name().unwrap().to_string_lossy()[..16].to_string())),
        "some run had to step over the planted names: {logs:?}"
    );
    // The shutdown may stop the last job before it writes its line.
    let last = logs
        .iter()
        .filter_map(|log| util::parse_header(util::read(log).lines().next()?))
        .map(|header| header.iteration)
        .max();
    for log in &logs {
        let text = util::read(log);
        let header = util::parse_header(text.lines().next().unwrap_or_default());
        let stopped_early = header.is_some_and(|head| Some(head.iteration) == last)
            && util::run_log_body(log).is_empty();
        assert!(
            text.starts_with("# jobloop iteration=")
                && (stopped_early || text.ends_with("written by the job\n")),
            "{}: {text}",
            log.display()
        );
    }
    assert!(
        h.stderr().contains("interrupted"),
        "the crafted interrupted state was noticed:\n{}",
        h.stderr()
    );
}

// See: issue 6 item 9, "a planted symlink ... at state.json.tmp is not followed".
#[test]
fn symlinks_planted_at_state_json_tmp_state_json_and_a_marker_are_never_followed() {
    let mut h = Harness::new();
    let outside = tempfile::tempdir().unwrap();
    let at_tmp = victim(outside.path(), "tmp-victim.txt");
    let at_state = victim(outside.path(), "state-victim.txt");
    let at_marker = victim(outside.path(), "marker-victim.txt");
    let state = h.path("state");
    std::fs::create_dir_all(&state).unwrap();
    std::os::unix::fs::symlink(&at_tmp, state.join("state.json.tmp")).unwrap();
    std::os::unix::fs::symlink(&at_state, state.join("state.json")).unwrap();
    std::os::unix::fs::symlink(&at_marker, state.join("UNHEALTHY")).unwrap();
    let flag = h.path("fail");
    let job = h.script(
        "job.sh",
        &format!("if [ -e '{}' ]; then exit 1; fi\nexit 0", flag.display()),
    );
    h.env("AGENT_IDLE_SLEEP", "10ms")
        .env("AGENT_MAX_FAILURES", "1")
        .env("AGENT_PREFLIGHT_CMD", "true");
    h.start(&[], &[job.to_str().unwrap()]);
    h.wait_iteration(3, SECS_20);
    // Planted again while it runs: every write must remove, not follow, it.
    for _ in 0..20 {
        let link = state.join("state.json.tmp");
        let _ = std::os::unix::fs::symlink(&at_tmp, &link);
        let before = crate::util::faults::iteration(&h);
        h.wait_iteration(before + 1, SECS_20);
        assert_untouched(&at_tmp);
    }
    // A halt writes the UNHEALTHY marker where a link was planted (the
    // passing preflight removed the first one, not its target).
    assert_untouched(&at_marker);
    std::os::unix::fs::symlink(&at_marker, state.join("UNHEALTHY")).unwrap();
    std::fs::write(&flag, "").unwrap();
    h.wait_status("unhealthy", SECS_20);
    assert!(h.marker("UNHEALTHY"));
    assert_eq!(h.stop().code(), Some(0));
    for victim in [&at_tmp, &at_state, &at_marker] {
        assert_untouched(victim);
    }
    let meta = std::fs::symlink_metadata(state.join("state.json")).unwrap();
    assert!(
        meta.file_type().is_file(),
        "state.json is a regular file again"
    );
    assert_eq!(h.state().unwrap()["status"], "stopped");
}

// See: README "append ... to that run log" (only jobloop's own): a crafted
// or stale state.json must not make jobloop write to a file elsewhere.
#[test]
fn an_interrupted_state_naming_a_file_outside_runs_is_counted_but_the_file_is_untouched() {
    let mut h = Harness::new();
    let outside = tempfile::tempdir().unwrap();
    let target = victim(outside.path(), "not-a-run-log.txt");
    let beside = victim(&h.path(""), "beside-runs.log");
    std::fs::create_dir_all(h.path("state")).unwrap();
    for (round, run_log) in [&target, &beside].into_iter().enumerate() {
        std::fs::write(
            h.path("state/state.json"),
            serde_json::json!({
                "status": "running", "iteration": 2, "pid": 999_999, "jobPid": null,
                "runLog": run_log.to_str().unwrap(), "traceId": null
            })
            .to_string(),
        )
        .unwrap();
        h.env("AGENT_IDLE_SLEEP", "60s");
        h.start(&[], &["true"]);
        h.wait_status("idle", SECS_20);
        h.wait_http();
        assert_eq!(
            h.scrape("jobloop_interrupted_iterations_total"),
            1.0,
            "round {round}: still counted"
        );
        assert_eq!(h.stop().code(), Some(0));
        assert_untouched(run_log);
    }
}
