//! `jobloop status`: a short human-readable status from a running daemon
//! (`GET /state`) or from its state.json, readable over `kubectl exec`.
//!
//! Exit code: 0 when running and not halted, 1 when halted or stopped,
//! 2 when no state could be read, so it can serve as a health check too.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use crate::cli::StatusArgs;

const DEFAULT_URL: &str = "http://127.0.0.1:9464";
const DEFAULT_STATE_DIR: &str = "./jobloop-data/state";

/// Runs `jobloop status`.
pub fn run(args: &StatusArgs) -> ExitCode {
    let (state, source) = match (&args.url, &args.state_dir) {
        (Some(url), _) => (fetch(url), format!("GET {url}/state")),
        (None, Some(dir)) => (read_file(Path::new(dir)), format!("{dir}/state.json")),
        (None, None) => match fetch(DEFAULT_URL) {
            Ok(state) => (Ok(state), format!("GET {DEFAULT_URL}/state")),
            Err(_) => (
                read_file(Path::new(DEFAULT_STATE_DIR)),
                format!("{DEFAULT_STATE_DIR}/state.json"),
            ),
        },
    };
    let state = match state {
        Ok(state) => state,
        Err(error) => {
            eprintln!("jobloop status: {error}");
            return ExitCode::from(2);
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&state).unwrap_or_default()
        );
    } else {
        print!("{}", summary(&state, &source, SystemTime::now()));
    }
    match state["status"].as_str() {
        Some("unhealthy" | "token-expired" | "stopped") | None => ExitCode::from(1),
        Some(_) => ExitCode::SUCCESS,
    }
}

fn read_file(dir: &Path) -> Result<serde_json::Value, String> {
    let path = dir.join(crate::statefile::STATE_FILE);
    let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{} is not valid JSON: {e}", path.display()))
}

/// A plain HTTP/1.1 GET of `/state`; enough for loopback and a pod network.
fn fetch(url: &str) -> Result<serde_json::Value, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("only http:// URLs are supported: {url}"))?;
    let (authority, prefix) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    let address = authority
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("cannot resolve {authority}"))?;
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&address, timeout)
        .map_err(|e| format!("cannot reach {url}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).ok();
    let path = format!("/{}/state", prefix.trim_end_matches('/')).replace("//", "/");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("cannot send to {url}: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("cannot read from {url}: {e}"))?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("malformed HTTP answer")?;
    let head = String::from_utf8_lossy(&response[..split]);
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "{url}/state answered {}",
            head.lines().next().unwrap_or("")
        ));
    }
    serde_json::from_slice(&response[split + 4..])
        .map_err(|e| format!("{url}/state is not JSON: {e}"))
}

fn ago(value: &serde_json::Value, now: SystemTime) -> String {
    let Some(text) = value.as_str() else {
        return "never".to_string();
    };
    match humantime::parse_rfc3339(text) {
        Ok(time) => match now.duration_since(time) {
            Ok(elapsed) => format!(
                "{text} ({} ago)",
                humantime::format_duration(Duration::from_secs(elapsed.as_secs()))
            ),
            Err(_) => text.to_string(),
        },
        Err(_) => text.to_string(),
    }
}

/// The summary lines.
pub fn summary(state: &serde_json::Value, source: &str, now: SystemTime) -> String {
    let field = |key: &str| match &state[key] {
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut out = String::new();
    out.push_str(&format!("status:               {}", field("status")));
    if !state["reason"].is_null() {
        out.push_str(&format!(" ({})", field("reason")));
    }
    out.push('\n');
    out.push_str(&format!(
        "since:                {}\n",
        ago(&state["statusSince"], now)
    ));
    out.push_str(&format!("iteration:            {}\n", field("iteration")));
    out.push_str(&format!(
        "last run:             {} exit={} at {}\n",
        field("lastOutcome"),
        field("lastBatchExit"),
        ago(&state["lastBatchAt"], now)
    ));
    out.push_str(&format!(
        "last success:         {}\n",
        ago(&state["lastSuccessAt"], now)
    ));
    out.push_str(&format!(
        "consecutive failures: {}\n",
        field("consecutiveFailures")
    ));
    out.push_str(&format!(
        "backoff:              {}s\n",
        field("backoffSeconds")
    ));
    out.push_str(&format!("run log:              {}\n", field("runLog")));
    out.push_str(&format!("trace id:             {}\n", field("traceId")));
    out.push_str(&format!(
        "pid / job pid:        {} / {}\n",
        field("pid"),
        field("jobPid")
    ));
    out.push_str(&format!(
        "source:               {source} (jobloop {})\n",
        field("version")
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_the_essentials() {
        let state = serde_json::json!({
            "status": "token-expired", "reason": "pattern", "iteration": 7, "lastBatchExit": 0,
            "lastBatchAt": "2026-11-25T10:00:00.000Z", "consecutiveFailures": 0, "backoffSeconds": 0.0,
            "runLog": "/logs/runs/20261125T095959Z.log", "traceId": "abc", "pid": 1, "jobPid": null,
            "statusSince": "2026-11-25T10:00:00.000Z", "version": "0.1.0", "lastOutcome": "token_expired"
        });
        let now = humantime::parse_rfc3339("2026-11-25T10:01:00Z").unwrap();
        let text = summary(&state, "state.json", now);
        assert!(text.contains("token-expired (pattern)"), "{text}");
        assert!(text.contains("(1m ago)"), "{text}");
        assert!(text.contains("/logs/runs/20261125T095959Z.log"));
        assert!(text.contains("trace id:             abc"));
    }
}
