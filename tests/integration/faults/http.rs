//! HTTP abuse (issue 6 item 6): 1,000 concurrent connections, more than
//! the cap, slowloris clients, idle connections, oversized heads, and wrk
//! hammering `/metrics` while the loop's pace is measured.
//!
//! Promised: every request is answered or its connection closed in
//! bounded time (heads must arrive within 5 s, README); the server's memory
//! stays bounded; the loop's pace does not depend on the HTTP load.
//! CI measures 5 s windows and asks only that the loop goes on (no timed
//! assertion on a shared 2-core box; bench/run.sh measures the pace);
//! `JOBLOOP_FULL_FAULTS=1` measures 20 s windows and holds the 10 %.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::util::faults::{full, iteration, pace, peak_rss_kib, rss_kib, skip};
use crate::util::{daemon, http, Harness};

const SECS_20: Duration = Duration::from_secs(20);

/// A daemon on a fast `true` loop (idle sleep 20 ms), serving HTTP, two
/// iterations done.
fn fast_loop() -> Harness {
    daemon(&[("AGENT_IDLE_SLEEP", "20ms")]).ready(2)
}

fn address(h: &Harness) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], h.port))
}

/// What became of one request.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Fate {
    /// Answered with this status.
    Answered(u16),
    /// Closed (EOF or reset) without an answer.
    Closed,
    /// Still open, unanswered, at the deadline.
    Hung,
}

/// Reads the answer on `stream` until `deadline`.
fn fate(stream: &mut TcpStream, deadline: Instant) -> Fate {
    let mut response = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Fate::Hung;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buffer[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Fate::Hung
            }
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&response);
    match text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
    {
        Some(code) => Fate::Answered(code),
        None => Fate::Closed,
    }
}

fn request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
}

/// Opens `n` connections, then sends a request on each, then collects
/// every answer: (fates, seconds).
fn flood(h: &Harness, n: usize) -> (Vec<Fate>, f64) {
    let started = Instant::now();
    let mut streams: Vec<Option<TcpStream>> = (0..n)
        .map(|_| TcpStream::connect_timeout(&address(h), Duration::from_secs(5)).ok())
        .collect();
    for (i, stream) in streams.iter_mut().enumerate() {
        let path = if i % 2 == 0 { "/metrics" } else { "/state" };
        if let Some(s) = stream {
            if s.write_all(request(path).as_bytes()).is_err() {
                *stream = None;
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let fates = streams
        .iter_mut()
        .map(|s| match s {
            Some(s) => fate(s, deadline),
            None => Fate::Closed,
        })
        .collect();
    (fates, started.elapsed().as_secs_f64())
}

// See: issue 6 item 6, "1,000 concurrent connections".
#[test]
fn a_thousand_concurrent_connections_are_all_answered_and_the_loop_goes_on() {
    let mut h = fast_loop();
    let before = iteration(&h);
    let rss_before = rss_kib(h.pid());
    let (fates, seconds) = flood(&h, 1000);
    let answered = fates.iter().filter(|f| **f == Fate::Answered(200)).count();
    let peak = peak_rss_kib(h.pid());
    println!(
        "faults_http: 1000 concurrent connections, {answered} answered 200 in {seconds:.2} s; \
         RSS {rss_before} KiB before, peak {peak} KiB"
    );
    assert_eq!(
        answered,
        1000,
        "every one of 1,000 concurrent requests is answered: {:?}",
        fates
            .iter()
            .filter(|f| **f != Fate::Answered(200))
            .collect::<Vec<_>>()
    );
    h.wait_iteration(before + 5, SECS_20);
    assert!(
        peak < rss_before + 128 * 1024,
        "RSS peaked at {peak} KiB from {rss_before} KiB"
    );
    assert_eq!(h.stop().code(), Some(0));
}

// See: README "At most 1024 connections are served at once (more are closed)".
#[test]
fn connections_over_the_cap_are_answered_or_closed_never_left_hanging() {
    let mut h = fast_loop();
    let (fates, seconds) = flood(&h, 1500);
    let answered = fates.iter().filter(|f| **f == Fate::Answered(200)).count();
    let closed = fates.iter().filter(|f| **f == Fate::Closed).count();
    let hung = fates.iter().filter(|f| **f == Fate::Hung).count();
    println!(
        "faults_http: 1500 connections: {answered} answered, {closed} closed, {hung} hung, \
         {seconds:.2} s"
    );
    assert_eq!(hung, 0, "every request answered or closed in bounded time");
    assert_eq!(answered + closed, 1500, "{fates:?}");
    // How many are answered depends on how fast earlier ones free their
    // slots; most must be.
    assert!(answered >= 500, "most are answered: {answered}");
    let (code, _) = h.get("/state");
    assert_eq!(code, 200, "served again once the flood is gone");
    let before = iteration(&h);
    h.wait_iteration(before + 3, SECS_20);
    assert_eq!(h.stop().code(), Some(0));
}

/// Whether the server closed `stream` (EOF or error), without blocking.
fn closed(stream: &mut TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let result = match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).unwrap();
    result
}

// See: issue 6 item 6, "slowloris clients sending one header byte per second";
// README "request heads ... must arrive within 5 s".
#[test]
fn slowloris_and_idle_connections_are_closed_in_bounded_time_while_others_are_served() {
    let mut h = fast_loop();
    let slow_count = 200;
    let idle_count = 50;
    let head =
        b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let started = Instant::now();
    let mut slow: Vec<(TcpStream, Option<f64>)> = (0..slow_count)
        .map(|_| (TcpStream::connect(address(&h)).unwrap(), None))
        .collect();
    let mut idle: Vec<(TcpStream, Option<f64>)> = (0..idle_count)
        .map(|_| (TcpStream::connect(address(&h)).unwrap(), None))
        .collect();
    let before = iteration(&h);
    let mut worst_get = Duration::ZERO;
    let mut gets = 0;
    for tick in 0..20 {
        let now = started.elapsed().as_secs_f64();
        for (stream, closed_at) in slow.iter_mut() {
            if closed_at.is_some() {
                continue;
            }
            let byte = &head[tick.min(head.len() - 1)..tick.min(head.len() - 1) + 1];
            if stream.write_all(byte).is_err() || closed(stream) {
                *closed_at = Some(now);
            }
        }
        for (stream, closed_at) in idle.iter_mut() {
            if closed_at.is_none() && closed(stream) {
                *closed_at = Some(now);
            }
        }
        // A well-behaved client is served promptly meanwhile.
        let asked = Instant::now();
        let (code, _) = http(h.port, "GET", "/state", &[]).expect("GET /state");
        assert_eq!(code, 200);
        worst_get = worst_get.max(asked.elapsed());
        gets += 1;
        if slow.iter().chain(idle.iter()).all(|(_, c)| c.is_some()) {
            break;
        }
        // One byte per second: the fault's own pace.
        std::thread::sleep(Duration::from_secs(1));
    }
    let latest = |v: &[(TcpStream, Option<f64>)]| {
        v.iter()
            .map(|(_, c)| c.unwrap_or(f64::INFINITY))
            .fold(0.0, f64::max)
    };
    let (slow_latest, idle_latest) = (latest(&slow), latest(&idle));
    println!(
        "faults_http: {slow_count} slowloris closed by {slow_latest:.1} s, {idle_count} idle \
         closed by {idle_latest:.1} s; {gets} GETs meanwhile, slowest {worst_get:?}"
    );
    assert!(
        slow_latest <= 12.0,
        "slowloris connections still open after {slow_latest} s"
    );
    assert!(
        idle_latest <= 12.0,
        "idle connections that never send a request still open after {idle_latest} s"
    );
    assert!(
        worst_get < Duration::from_secs(2),
        "a normal GET took {worst_get:?}"
    );
    h.wait_iteration(before + 5, SECS_20);
    assert_eq!(h.stop().code(), Some(0));
}

/// Sends `head` (written in pieces, the server may close early) and
/// returns the fate of the request.
fn send_head(h: &Harness, head: &[u8]) -> Fate {
    let mut stream = TcpStream::connect(address(h)).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    for piece in head.chunks(4096) {
        if stream.write_all(piece).is_err() {
            break;
        }
    }
    fate(&mut stream, Instant::now() + Duration::from_secs(10))
}

// See: issue 6 item 6, "oversized headers"; README "request heads are limited to 16 KiB".
#[test]
fn oversized_request_heads_get_431_or_a_close_and_the_server_goes_on() {
    let h = fast_loop();
    let with = |headers: &str| -> Vec<u8> {
        format!("GET /state HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Connection: close\r\n\r\n")
            .into_bytes()
    };
    let normal = send_head(&h, &with(&format!("X-Fine: {}\r\n", "a".repeat(4096))));
    assert_eq!(normal, Fate::Answered(200), "a 4 KiB header is fine");
    let cases = [
        (
            "one 20 KiB header",
            format!("X-Big: {}\r\n", "a".repeat(20 * 1024)),
        ),
        (
            "one 64 KiB header",
            format!("X-Big: {}\r\n", "a".repeat(64 * 1024)),
        ),
        (
            "one 1 MiB header",
            format!("X-Big: {}\r\n", "a".repeat(1 << 20)),
        ),
        (
            "600 headers of 50 bytes",
            (0..600)
                .map(|i| format!("X-Many-{i}: {}\r\n", "b".repeat(40)))
                .collect(),
        ),
    ];
    for (what, headers) in cases {
        let asked = Instant::now();
        let outcome = send_head(&h, &with(&headers));
        assert!(
            matches!(outcome, Fate::Answered(431) | Fate::Closed),
            "{what}: {outcome:?}"
        );
        assert!(
            asked.elapsed() < Duration::from_secs(6),
            "{what} took {:?}",
            asked.elapsed()
        );
        println!("faults_http: {what}: {outcome:?} in {:?}", asked.elapsed());
        let (code, _) = h.get("/state");
        assert_eq!(code, 200, "served after {what}");
    }
}

/// Runs wrk on `/metrics` for `seconds` and returns its report.
fn wrk(h: &Harness, seconds: u64) -> Result<String, String> {
    let out = std::process::Command::new("wrk")
        .args([
            "-t1",
            "-c32",
            &format!("-d{seconds}s"),
            "--timeout",
            "5s",
            &format!("http://127.0.0.1:{}/metrics", h.port),
        ])
        .output()
        .map_err(|e| format!("wrk: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A number after `label` in wrk's report.
fn wrk_figure(report: &str, label: &str) -> Option<f64> {
    let rest = &report[report.find(label)? + label.len()..];
    rest.split_whitespace()
        .next()?
        .trim_end_matches(',')
        .parse()
        .ok()
}

// See: issue 6 item 6, "10,000 requests per second to /metrics ... the loop's
// iteration pace stays within 10% of an unloaded run"; SPEC §6. The pace is
// measured by bench/run.sh; here the loop must go on and memory stay flat.
#[test]
fn wrk_on_metrics_does_not_starve_the_loop() {
    if std::process::Command::new("wrk")
        .arg("--version")
        .output()
        .is_err()
    {
        return skip("wrk is not installed (Debian package wrk)");
    }
    let window = if full() { 20 } else { 5 };
    let mut h = fast_loop();
    let rss_before = rss_kib(h.pid());
    let unloaded_before = pace(&mut h, Duration::from_secs(window));
    let first = iteration(&h);
    let started = Instant::now();
    let report = std::thread::scope(|scope| {
        let load = scope.spawn(|| wrk(&h, window));
        load.join().unwrap()
    });
    let loaded = (iteration(&h) - first) as f64 / started.elapsed().as_secs_f64();
    let report = report.unwrap_or_else(|e| panic!("wrk failed: {e}"));
    let unloaded_after = pace(&mut h, Duration::from_secs(window));
    let unloaded = (unloaded_before + unloaded_after) / 2.0;
    let ratio = loaded / unloaded;
    let rps = wrk_figure(&report, "Requests/sec:").unwrap_or(0.0);
    let peak = peak_rss_kib(h.pid());
    println!(
        "faults_http: wrk /metrics {rps:.0} req/s for {window} s; loop {unloaded_before:.1} and \
         {unloaded_after:.1} it/s unloaded, {loaded:.1} it/s loaded, ratio {ratio:.3}; RSS \
         {rss_before} KiB before, peak {peak} KiB\n{report}"
    );
    assert!(
        !report.contains("Non-2xx"),
        "every request answered 200:\n{report}"
    );
    if let Some(timeouts) = report
        .lines()
        .find(|l| l.contains("Socket errors"))
        .and_then(|l| wrk_figure(l, "timeout"))
    {
        assert_eq!(timeouts, 0.0, "no request timed out:\n{report}");
    }
    assert!(rps > 1000.0, "the load was real: {rps} req/s");
    // Starvation, not speed: the loop keeps running jobs while the server
    // is flooded. How much slower it runs is a figure of bench/run.sh
    // (docs/benchmarks.md), not a timed assertion on a shared machine;
    // JOBLOOP_FULL_FAULTS=1 keeps the 10% check for a quiet machine.
    let done_under_load = iteration(&h) - first;
    assert!(
        done_under_load >= 10,
        "the loop ran {done_under_load} jobs in {window} s of load ({loaded:.1} it/s)"
    );
    if full() {
        assert!(
            ratio >= 0.9,
            "the loop ran at {loaded:.1} it/s under load vs {unloaded:.1} unloaded ({ratio:.2} < 0.9)"
        );
    }
    assert!(
        peak < rss_before + 64 * 1024,
        "RSS peaked at {peak} KiB from {rss_before} KiB"
    );
    assert_eq!(h.stop().code(), Some(0));
}

// See: issue 6 item 6 (abuse): a request body far larger than any answer
// needs is not buffered: the answer comes at once and memory stays flat.
#[test]
fn a_huge_request_body_is_not_buffered() {
    let mut h = fast_loop();
    let rss_before = rss_kib(h.pid());
    let mut stream = TcpStream::connect(address(&h)).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let head = "POST /resume HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer x\r\n\
                Content-Length: 1073741824\r\nConnection: close\r\n\r\n";
    stream.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b'x'; 1 << 20];
    let started = Instant::now();
    let mut sent = 0usize;
    while sent < 64 << 20 && started.elapsed() < Duration::from_secs(10) {
        match stream.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    let outcome = fate(&mut stream, Instant::now() + Duration::from_secs(10));
    let peak = peak_rss_kib(h.pid());
    println!(
        "faults_http: a 1 GiB body announced, {} MiB sent: {outcome:?}; RSS {rss_before} KiB \
         before, peak {peak} KiB",
        sent >> 20
    );
    assert!(
        matches!(outcome, Fate::Answered(_) | Fate::Closed),
        "{outcome:?}"
    );
    assert!(
        peak < rss_before + 16 * 1024,
        "the body was buffered: RSS peaked at {peak} KiB from {rss_before} KiB"
    );
    let (code, _) = h.get("/state");
    assert_eq!(code, 200);
    let before = iteration(&h);
    h.wait_iteration(before + 3, SECS_20);
}
