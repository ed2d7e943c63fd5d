//! Run logs (SPEC §3): names and collision suffixes, the header, the job's
//! bytes exactly, mode 0640, RUN_LOG, planted symlinks, retention by each
//! limit, truncation.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::util::{self, daemon, Harness};

const SECS_10: Duration = Duration::from_secs(10);

/// A job script that counts its runs and exits 3 (token expired, a halt)
/// on run `halt_at`, else runs `each` and exits 0.
fn job_halting_at(h: &Harness, halt_at: u32, each: &str) -> String {
    let count = h.path("count");
    let body = format!(
        "n=$(cat '{count}' 2>/dev/null || echo 0)\nn=$((n+1))\necho $n > '{count}'\n{each}\n[ $n -ge {halt_at} ] && exit 3\nexit 0",
        count = count.display()
    );
    h.script("job.sh", &body).to_str().unwrap().to_string()
}

/// Whether a file name has the run-log form `YYYYMMDDTHHMMSSZ(-N)?.log`;
/// returns (stamp, suffix).
fn parse_name(name: &str) -> Option<(String, u32)> {
    let stem = name.strip_suffix(".log")?;
    let (stamp, suffix) = match stem.split_once('-') {
        Some((stamp, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            (stamp, n.parse().ok()?)
        }
        Some(_) => return None,
        None => (stem, 0),
    };
    let b = stamp.as_bytes();
    let ok = b.len() == 16
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z';
    ok.then(|| (stamp.to_string(), suffix))
}

/// The file name of a path.
fn name_of(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().to_string()
}

/// Run logs written by the daemon (regular files with a header), oldest first.
fn daemon_logs(h: &Harness) -> Vec<PathBuf> {
    h.run_logs()
        .into_iter()
        .filter(|p| {
            std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_file())
                && util::read(p).starts_with("# jobloop iteration=")
        })
        .collect()
}

/// Writes a header-less run log named `name` with `size` bytes, modified at `mtime`.
fn plant_log(h: &Harness, name: &str, size: usize, mtime: SystemTime) -> PathBuf {
    let runs = h.path("logs/runs");
    std::fs::create_dir_all(&runs).unwrap();
    let path = runs.join(name);
    std::fs::write(&path, vec![b'p'; size]).unwrap();
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(mtime).unwrap();
    path
}

fn days_ago(days: u64) -> SystemTime {
    SystemTime::now() - Duration::from_secs(days * 86_400)
}

// See: SPEC §3, run-log names and the header.
#[test]
fn run_logs_are_named_after_their_utc_start_second_and_start_with_the_header() {
    let mut h = Harness::new();
    h.env("AGENT_IDLE_SLEEP", "10ms");
    let job = job_halting_at(&h, 4, "echo run $JOBLOOP_ITERATION");
    h.start(&[], &[&job]);
    h.wait_status("token-expired", SECS_10);
    let logs = h.run_logs();
    assert_eq!(logs.len(), 4, "{logs:?}");
    let mut trace_ids = Vec::new();
    let mut span_ids = Vec::new();
    let mut previous_start = 0;
    for (n, log) in (1..).zip(&logs) {
        let name = name_of(log);
        let (stamp, _) = parse_name(&name).unwrap_or_else(|| panic!("bad name {name}"));
        let header = util::run_log_header(log);
        assert_eq!(header.iteration, n, "{name}");
        assert_eq!(
            stamp,
            util::stamp_of_ms(header.start_ms),
            "name is the start second"
        );
        assert!(header.start_ms >= previous_start, "starts in order");
        previous_start = header.start_ms;
        assert_eq!(util::run_log_body(log), format!("run {n}\n").as_bytes());
        trace_ids.push(header.trace_id);
        span_ids.push(header.span_id);
    }
    trace_ids.dedup();
    span_ids.dedup();
    assert_eq!(trace_ids.len(), 4, "a new trace id per run");
    assert_eq!(span_ids.len(), 4, "a new span id per run");
    let state = h.state().unwrap();
    assert_eq!(state["runLog"], logs[3].to_str().unwrap(), "{state}");
    assert_eq!(state["traceId"].as_str(), Some(trace_ids[3].as_str()));
}

/// Plants, at the plain name of each of the next seconds, what `plant`
/// makes; runs a fast job until a run starts in the last planted second;
/// returns the stamps planted.
fn run_through_planted_names(h: &mut Harness, plant: impl Fn(&Path)) -> Vec<String> {
    let runs = h.path("logs/runs");
    std::fs::create_dir_all(&runs).unwrap();
    let now = SystemTime::now();
    let stamps: Vec<String> = (0..3)
        .map(|i| util::utc_stamp(now + Duration::from_secs(i)))
        .collect();
    for stamp in &stamps {
        plant(&runs.join(format!("{stamp}.log")));
    }
    h.env("AGENT_IDLE_SLEEP", "20ms");
    h.start(&[], &["echo", "job output"]);
    let last = stamps[2].clone();
    h.wait_until("a run in the last planted second", SECS_10, |h| {
        daemon_logs(h)
            .iter()
            .any(|p| parse_name(&name_of(p)).is_some_and(|(stamp, _)| stamp >= last))
    });
    assert_eq!(h.stop().code(), Some(0));
    stamps
}

// See: SPEC §3 and BASELINE Q2: a taken name gets -1, -2, ...; nothing is
// overwritten.
#[test]
fn a_taken_run_log_name_gets_the_next_suffix_and_is_never_overwritten() {
    let mut h = Harness::new();
    let stamps = run_through_planted_names(&mut h, |path| {
        std::fs::write(path, "planted\n").unwrap();
    });
    for stamp in &stamps {
        let planted = h.path("logs/runs").join(format!("{stamp}.log"));
        assert_eq!(util::read(&planted), "planted\n", "{stamp}: overwritten");
    }
    let logs = daemon_logs(&h);
    assert!(logs.len() >= 3, "{logs:?}");
    // Within one second the runs take 0 (unless planted), 1, 2, ... in order.
    let mut by_stamp: std::collections::BTreeMap<String, Vec<(u64, u32)>> = Default::default();
    for log in &logs {
        let (stamp, suffix) = parse_name(&name_of(log)).unwrap();
        let header = util::run_log_header(log);
        assert_eq!(stamp, util::stamp_of_ms(header.start_ms));
        by_stamp
            .entry(stamp)
            .or_default()
            .push((header.iteration, suffix));
    }
    let mut saw_collision = false;
    for (stamp, mut runs) in by_stamp {
        runs.sort();
        let first = u32::from(stamps.contains(&stamp));
        let suffixes: Vec<u32> = runs.iter().map(|r| r.1).collect();
        let expected: Vec<u32> = (first..first + runs.len() as u32).collect();
        assert_eq!(suffixes, expected, "suffixes of {stamp} in run order");
        saw_collision |= runs.len() >= 2 || first == 1;
    }
    assert!(saw_collision, "some second had more than one run");
}

// See: SPEC §3 "never through a symlink".
#[test]
fn a_symlink_planted_at_the_next_run_log_name_is_not_followed() {
    let mut h = Harness::new();
    let victim = h.path("victim.txt");
    std::fs::write(&victim, "victim\n").unwrap();
    let dangling = h.path("created-through-a-link");
    let victim_for_plant = victim.clone();
    let dangling_for_plant = dangling.clone();
    let stamps = run_through_planted_names(&mut h, move |path| {
        std::os::unix::fs::symlink(&victim_for_plant, path).unwrap();
        let next = path.with_file_name(name_of(path).replace(".log", "-1.log"));
        std::os::unix::fs::symlink(&dangling_for_plant, next).unwrap();
    });
    assert_eq!(
        util::read(&victim),
        "victim\n",
        "written through a planted link"
    );
    assert!(
        !dangling.exists(),
        "a file was created through a dangling link"
    );
    let runs = h.path("logs/runs");
    for stamp in &stamps {
        for name in [format!("{stamp}.log"), format!("{stamp}-1.log")] {
            let meta = std::fs::symlink_metadata(runs.join(&name)).unwrap();
            assert!(
                meta.file_type().is_symlink(),
                "{name} is still the planted link"
            );
        }
    }
    let logs = daemon_logs(&h);
    assert!(!logs.is_empty());
    let in_planted_seconds = logs
        .iter()
        .filter(|p| stamps.contains(&parse_name(&name_of(p)).unwrap().0))
        .count();
    assert!(in_planted_seconds > 0, "no run started in a planted second");
    // The shutdown may stop the last job before it writes anything.
    let last = logs
        .iter()
        .map(|log| util::run_log_header(log).iteration)
        .max();
    for log in &logs {
        let (stamp, suffix) = parse_name(&name_of(log)).unwrap();
        if stamps.contains(&stamp) {
            assert!(suffix >= 2, "{} reused a planted name", name_of(log));
        }
        let body = util::run_log_body(log);
        if Some(util::run_log_header(log).iteration) == last && body.is_empty() {
            continue;
        }
        assert_eq!(body, b"job output\n", "{}", name_of(log));
    }
}

// See: SPEC §3 "the job's output follows byte for byte".
#[test]
fn the_run_log_holds_the_jobs_bytes_exactly_including_invalid_utf8_and_no_final_newline() {
    let mut h = Harness::new();
    h.env("AGENT_IDLE_SLEEP", "30s");
    let mut payload: Vec<u8> = (0..=255u8).collect();
    payload.extend_from_slice(b"\n\xff\xfe invalid \xc3\x28 utf-8\r\n\0\0nul\0");
    payload.extend_from_slice("ünïcödé ✓\n".as_bytes());
    payload.extend_from_slice(b"no final newline");
    let file = h.path("payload.bin");
    std::fs::write(&file, &payload).unwrap();
    h.start(&[], &["cat", file.to_str().unwrap()]);
    h.wait_status("idle", SECS_10);
    let body = util::run_log_body(&h.run_logs()[0]);
    assert_eq!(body, payload);
}

#[test]
fn stdout_and_stderr_go_to_the_run_log_in_arrival_order() {
    let mut h = Harness::new();
    h.env("AGENT_IDLE_SLEEP", "30s");
    h.start(
        &[],
        &[
            "sh",
            "-c",
            "echo out1; echo err1 >&2; echo out2; echo err2 >&2",
        ],
    );
    h.wait_status("idle", SECS_10);
    let body = util::run_log_body(&h.run_logs()[0]);
    assert_eq!(String::from_utf8_lossy(&body), "out1\nerr1\nout2\nerr2\n");
}

#[test]
fn a_10_mb_line_is_copied_to_the_run_log_exactly() {
    let mut h = Harness::new();
    h.env("AGENT_IDLE_SLEEP", "30s");
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut payload: Vec<u8> = (0..10 * 1024 * 1024)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            b'!' + (seed % 90) as u8
        })
        .collect();
    payload.extend_from_slice(b"\ntail without newline");
    let file = h.path("payload.bin");
    std::fs::write(&file, &payload).unwrap();
    h.start(&[], &["cat", file.to_str().unwrap()]);
    h.wait_status("idle", Duration::from_secs(30));
    let body = util::run_log_body(&h.run_logs()[0]);
    assert_eq!(body.len(), payload.len(), "length of the copied output");
    assert!(body == payload, "the 10 MB line differs");
}

#[test]
fn run_logs_are_created_with_mode_0640() {
    let mut h = daemon(&[("AGENT_IDLE_SLEEP", "30s")]);
    h.wait_status("idle", SECS_10);
    let log = &h.run_logs()[0];
    let mode = std::fs::metadata(log).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640, "mode {mode:o}");
}

// See: SPEC §4, RUN_LOG as in the seed.
#[test]
fn run_log_in_the_jobs_environment_is_the_absolute_path_of_its_run_log() {
    let mut h = Harness::new();
    h.env("AGENT_IDLE_SLEEP", "10ms");
    let seen = h.path("seen");
    std::fs::create_dir(&seen).unwrap();
    let job = job_halting_at(
        &h,
        3,
        &format!(
            "printf '%s' \"$RUN_LOG\" > '{}'/$JOBLOOP_ITERATION",
            seen.display()
        ),
    );
    h.start(&[], &[&job]);
    let state = h.wait_status("token-expired", SECS_10);
    let logs = h.run_logs();
    assert_eq!(logs.len(), 3);
    for (n, log) in (1..).zip(&logs) {
        let run_log = util::read(&seen.join(n.to_string()));
        assert!(Path::new(&run_log).is_absolute(), "{run_log}");
        assert_eq!(Path::new(&run_log), log.as_path(), "RUN_LOG of run {n}");
    }
    assert_eq!(state["runLog"], logs[2].to_str().unwrap());
}

// See: SPEC §3 retention, AGENT_LOG_KEEP.
#[test]
fn retention_keeps_the_newest_log_keep_run_logs() {
    let mut h = Harness::new();
    for day in 1..=5 {
        plant_log(&h, &format!("2020010{day}T000000Z.log"), 10, days_ago(1));
    }
    h.env("AGENT_LOG_KEEP", "3").env("AGENT_IDLE_SLEEP", "10ms");
    let job = job_halting_at(&h, 6, "echo run $n");
    h.start(&[], &[&job]);
    h.wait_status("token-expired", SECS_10);
    let logs = h.run_logs();
    let iterations: Vec<u64> = logs
        .iter()
        .map(|p| util::run_log_header(p).iteration)
        .collect();
    assert_eq!(iterations, [4, 5, 6], "{logs:?}");
}

// See: SPEC §2 "once before the first iteration".
#[test]
fn retention_runs_once_at_start_before_any_job() {
    let mut h = Harness::new();
    for day in 1..=5 {
        plant_log(&h, &format!("2020010{day}T000000Z.log"), 10, days_ago(1));
    }
    h.env("AGENT_LOG_KEEP", "2")
        .env("AGENT_PREFLIGHT_CMD", "exit 1");
    h.start(&[], &["true"]);
    h.wait_status("unhealthy", SECS_10);
    let names: Vec<String> = h.run_logs().iter().map(|p| name_of(p)).collect();
    assert_eq!(names, ["20200104T000000Z.log", "20200105T000000Z.log"]);
}

// See: SPEC §3 retention by age, and the `jobs/` links.
#[test]
fn retention_deletes_run_logs_older_than_max_age_and_the_job_links_to_them() {
    let mut h = Harness::new();
    let old: Vec<PathBuf> = (1..=3)
        .map(|day| plant_log(&h, &format!("2020010{day}T000000Z.log"), 10, days_ago(3)))
        .collect();
    let jobs = h.path("logs/jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    std::os::unix::fs::symlink(&old[0], jobs.join("old-job.log")).unwrap();
    // A link out of AGENT_LOG_DIR, to an old file: never followed or deleted.
    let outside = h.path("outside.log");
    std::fs::write(&outside, "outside\n").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&outside)
        .unwrap()
        .set_modified(days_ago(3))
        .unwrap();
    std::os::unix::fs::symlink(&outside, jobs.join("outside.log")).unwrap();

    h.env("AGENT_LOG_MAX_AGE", "1d")
        .env("AGENT_IDLE_SLEEP", "10ms");
    let job = job_halting_at(
        &h,
        2,
        &format!("ln -s \"$RUN_LOG\" '{}'/job-$n.log", jobs.display()),
    );
    h.start(&[], &[&job]);
    h.wait_status("token-expired", SECS_10);
    let logs = h.run_logs();
    assert_eq!(logs.len(), 2, "only this session's logs are left: {logs:?}");
    for path in &old {
        assert!(!path.exists(), "{} was kept", path.display());
    }
    assert!(
        std::fs::symlink_metadata(jobs.join("old-job.log")).is_err(),
        "the link to a deleted run log was kept"
    );
    for n in 1..=2 {
        let link = jobs.join(format!("job-{n}.log"));
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            logs[n - 1],
            "job-{n}.log"
        );
    }
    assert_eq!(
        util::read(&outside),
        "outside\n",
        "a file outside the log dir was touched"
    );
    assert!(std::fs::symlink_metadata(jobs.join("outside.log")).is_ok());
}

// See: SPEC §3 retention, AGENT_LOG_MAX_BYTES.
#[test]
fn retention_keeps_the_total_size_of_runs_under_log_max_bytes() {
    let mut h = Harness::new();
    // Each log is a ~130-byte header plus 1000 bytes: two fit in 2500.
    h.env("AGENT_LOG_MAX_BYTES", "2500")
        .env("AGENT_IDLE_SLEEP", "10ms");
    let job = job_halting_at(&h, 6, "head -c 1000 /dev/zero");
    h.start(&[], &[&job]);
    h.wait_status("token-expired", SECS_10);
    let logs = h.run_logs();
    let total: u64 = logs
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(total <= 2500, "total {total}");
    let iterations: Vec<u64> = logs
        .iter()
        .map(|p| util::run_log_header(p).iteration)
        .collect();
    assert_eq!(iterations, [5, 6]);
}

#[test]
fn retention_never_deletes_the_newest_run_log() {
    let mut h = Harness::new();
    h.env("AGENT_LOG_MAX_BYTES", "100")
        .env("AGENT_LOG_KEEP", "1")
        .env("AGENT_IDLE_SLEEP", "10ms");
    let job = job_halting_at(&h, 3, "head -c 1000 /dev/zero");
    h.start(&[], &[&job]);
    let state = h.wait_status("token-expired", SECS_10);
    let logs = h.run_logs();
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert_eq!(util::run_log_header(&logs[0]).iteration, 3);
    assert_eq!(state["runLog"], logs[0].to_str().unwrap());
}

// See: SPEC §3 truncation.
#[test]
fn output_past_run_log_max_bytes_is_dropped_with_one_closing_line() {
    let mut h = Harness::new();
    h.env("AGENT_RUN_LOG_MAX_BYTES", "1KiB")
        .env("AGENT_IDLE_SLEEP", "30s");
    h.start(&[], &["sh", "-c", "head -c 5000 /dev/zero | tr '\\0' a"]);
    h.wait_status("idle", SECS_10);
    let body = util::run_log_body(&h.run_logs()[0]);
    let mut expected = vec![b'a'; 1024];
    expected.extend_from_slice(b"\n# jobloop truncated: dropped=3976 limit=1024\n");
    assert_eq!(
        String::from_utf8_lossy(&body),
        String::from_utf8_lossy(&expected)
    );
}

#[test]
fn truncated_output_is_still_drained_so_a_large_writer_finishes() {
    let mut h = Harness::new();
    let finished = h.path("finished");
    h.env("AGENT_RUN_LOG_MAX_BYTES", "1KiB")
        .env("AGENT_IDLE_SLEEP", "30s");
    h.start(
        &[],
        &[
            "sh",
            "-c",
            &format!(
                "echo first line; head -c 5000000 /dev/zero; touch '{}'",
                finished.display()
            ),
        ],
    );
    let state = h.wait_status("idle", Duration::from_secs(20));
    assert_eq!(state["lastBatchExit"], 0, "{state}");
    assert!(finished.exists(), "the job finished writing");
    let body = util::run_log_body(&h.run_logs()[0]);
    let last = String::from_utf8_lossy(&body)
        .lines()
        .last()
        .unwrap()
        .to_string();
    let dropped = 5_000_000 + "first line\n".len() - 1024;
    assert_eq!(
        last,
        format!("# jobloop truncated: dropped={dropped} limit=1024")
    );
    assert!(body.starts_with(b"first line\n\0\0"));
}

#[test]
fn output_past_the_run_log_limit_is_still_scanned_for_the_auth_pattern() {
    let mut h = Harness::new();
    h.env("AGENT_RUN_LOG_MAX_BYTES", "1KiB");
    h.start(
        &[],
        &[
            "sh",
            "-c",
            "head -c 4000 /dev/zero | tr '\\0' b; echo; echo invalid_api_key",
        ],
    );
    let state = h.wait_status("token-expired", SECS_10);
    assert_eq!(state["reason"], "pattern", "{state}");
    let body = util::run_log_body(&h.run_logs()[0]);
    assert!(!String::from_utf8_lossy(&body).contains("invalid_api_key"));
}

#[test]
fn truncation_at_a_line_end_adds_no_extra_newline() {
    let mut h = Harness::new();
    h.env("AGENT_RUN_LOG_MAX_BYTES", "8")
        .env("AGENT_IDLE_SLEEP", "30s");
    h.start(&[], &["printf", "1234567\\n89\\n"]);
    h.wait_status("idle", SECS_10);
    let body = util::run_log_body(&h.run_logs()[0]);
    assert_eq!(
        String::from_utf8_lossy(&body),
        "1234567\n# jobloop truncated: dropped=3 limit=8\n"
    );
}

#[test]
fn output_within_the_limit_is_not_marked_truncated() {
    let mut h = Harness::new();
    h.env("AGENT_RUN_LOG_MAX_BYTES", "8")
        .env("AGENT_IDLE_SLEEP", "30s");
    h.start(&[], &["printf", "1234567\\n"]);
    h.wait_status("idle", SECS_10);
    assert_eq!(util::run_log_body(&h.run_logs()[0]), b"1234567\n");
}

// See: SPEC §1, AGENT_LOG_KEEP 0 = no count limit (and max age 0 = none).
#[test]
fn zero_limits_switch_retention_off() {
    let mut h = Harness::new();
    for day in 1..=5 {
        plant_log(&h, &format!("2020010{day}T000000Z.log"), 10, days_ago(400));
    }
    h.env("AGENT_LOG_KEEP", "0")
        .env("AGENT_LOG_MAX_AGE", "0")
        .env("AGENT_LOG_MAX_BYTES", "0")
        .env("AGENT_IDLE_SLEEP", "10ms");
    let job = job_halting_at(&h, 3, "echo run $n");
    h.start(&[], &[&job]);
    h.wait_status("token-expired", SECS_10);
    assert_eq!(h.run_logs().len(), 8, "{:?}", h.run_logs());
}

#[test]
fn run_log_is_absolute_even_when_the_log_dir_is_relative() {
    let mut h = Harness::new();
    let seen = h.path("seen");
    h.env("AGENT_LOG_DIR", "relative-logs")
        .env("AGENT_IDLE_SLEEP", "30s");
    h.start(
        &[],
        &[
            "sh",
            "-c",
            &format!("printf '%s' \"$RUN_LOG\" > '{}'", seen.display()),
        ],
    );
    let state = h.wait_status("idle", SECS_10);
    let run_log = util::read(&seen);
    assert!(Path::new(&run_log).is_absolute(), "{run_log}");
    assert!(run_log.starts_with(h.path("relative-logs/runs").to_str().unwrap()));
    assert!(Path::new(&run_log).is_file());
    assert_eq!(state["runLog"], run_log.as_str());
}
