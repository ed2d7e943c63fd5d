//! `jobloop status`: a short human-readable status from a running daemon
//! (`GET /state`) or from its state.json, readable over `kubectl exec`.
//!
//! Exit code: 0 when running and not halted, 1 when halted or stopped,
//! 2 when no state could be read, so it can serve as a health check too.
//!
//! What it reads is not trusted to be well-behaved: a state file or an
//! answer larger than [`MAX_READ`] is refused with one line, a state file
//! that is a symlink, FIFO or device is not opened through or waited on
//! ([`crate::statefile::read_state_file`]), and control
//! characters in anything printed from them are escaped, so a planted
//! state.json or a hostile server cannot drive the terminal.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use crate::cli::StatusArgs;
use crate::config::table::setting;
use crate::state::{rfc3339, Outcome, Status, StoredState};

/// Where `status` looks when neither flag nor AGENT_STATE_DIR is given.
const DEFAULT_URL: &str = "http://127.0.0.1:9464";

/// Largest state file or HTTP answer `status` reads. state.json is about
/// 1 KiB; anything near this is not one.
pub const MAX_READ: u64 = 1 << 20;

/// Longest a whole HTTP exchange may take, so a server that trickles its
/// answer cannot hold `status` (or a probe using it) forever.
const HTTP_DEADLINE: Duration = Duration::from_secs(10);

/// Runs `jobloop status`: `--url` first, then `--state-dir`, then
/// AGENT_STATE_DIR from the environment, then the default URL with the
/// default state directory as the fallback.
pub fn run(args: &StatusArgs) -> ExitCode {
    let state_dir_env = std::env::var("AGENT_STATE_DIR")
        .ok()
        .filter(|dir| !dir.is_empty());
    let (state, source) = match (
        &args.url,
        args.state_dir.as_ref().or(state_dir_env.as_ref()),
    ) {
        (Some(url), _) => (fetch(url), format!("GET {url}/state")),
        (None, Some(dir)) => (read_file(Path::new(dir)), format!("{dir}/state.json")),
        (None, None) => match fetch(DEFAULT_URL) {
            Ok(state) => (Ok(state), format!("GET {DEFAULT_URL}/state")),
            Err(_) => {
                let dir = setting("AGENT_STATE_DIR").default.unwrap_or(".");
                (read_file(Path::new(dir)), format!("{dir}/state.json"))
            }
        },
    };
    let state = match state {
        Ok(state) => state,
        Err(error) => {
            eprintln!("jobloop status: {}", escape(&error));
            return ExitCode::from(2);
        }
    };
    let stored = match StoredState::from_value(state.clone()) {
        Ok(stored) => stored,
        Err(error) => {
            eprintln!(
                "jobloop status: {}: {}",
                escape(&source),
                escape(&error.to_string())
            );
            return ExitCode::from(2);
        }
    };
    if args.json {
        println!(
            "{}",
            escape_json(&serde_json::to_string_pretty(&state).unwrap_or_default())
        );
    } else {
        print!("{}", summary(&stored, &escape(&source), SystemTime::now()));
    }
    match stored.status {
        Some(Status::Unhealthy | Status::TokenExpired | Status::Stopped) | None => {
            ExitCode::from(1)
        }
        Some(_) => ExitCode::SUCCESS,
    }
}

/// Whether `c` would be acted on by a terminal rather than shown: C0 and C1
/// controls, DEL, and the bidirectional overrides that reorder a line.
fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every unsafe character written as a Rust escape (`\u{1b}`).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_unsafe(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Pretty JSON with the unsafe characters serde_json leaves alone (DEL,
/// C1 controls, bidi overrides) written as JSON escapes: still the same
/// JSON, but inert on a terminal. Newlines of the layout stay.
fn escape_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c != '\n' && is_unsafe(c) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// Reads at most [`MAX_READ`] bytes of `reader`; more is an error naming
/// `what`.
fn read_capped(reader: impl Read, what: &str) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_READ + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {what}: {e}"))?;
    if bytes.len() as u64 > MAX_READ {
        return Err(format!("{what} is larger than 1 MiB; not a jobloop state"));
    }
    Ok(bytes)
}

/// Reads `dir`/state.json the way the daemon does at start: no symlink
/// followed, no wait on a FIFO or device, nothing over 1 MiB.
fn read_file(dir: &Path) -> Result<serde_json::Value, String> {
    let path = dir.join(crate::statefile::STATE_FILE);
    let bytes = crate::statefile::read_state_file(&path).map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{} is not valid JSON: {e}", path.display()))
}

/// A reader over a socket that gives up at a deadline, however slowly the
/// peer sends.
struct DeadlineReader {
    stream: TcpStream,
    deadline: Instant,
}

impl Read for DeadlineReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no complete answer within {}s", HTTP_DEADLINE.as_secs()),
            ));
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
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
    let deadline = Instant::now() + HTTP_DEADLINE;
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))
        .map_err(|e| format!("cannot reach {url}: {e}"))?;
    stream.set_write_timeout(Some(Duration::from_secs(5))).ok();
    let path = format!("/{}/state", prefix.trim_end_matches('/')).replace("//", "/");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("cannot send to {url}: {e}"))?;
    let response = read_capped(
        DeadlineReader { stream, deadline },
        &format!("the answer of {url}/state"),
    )?;
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

fn ago(time: Option<SystemTime>, now: SystemTime) -> String {
    let Some(time) = time else {
        return "never".to_string();
    };
    let text = rfc3339(time);
    match now.duration_since(time) {
        Ok(elapsed) => format!(
            "{text} ({} ago)",
            humantime::format_duration(Duration::from_secs(elapsed.as_secs()))
        ),
        Err(_) => text,
    }
}

/// A field's value for the summary: `-` when absent or of the wrong type,
/// control characters escaped.
fn shown<T: std::fmt::Display>(value: &Option<T>) -> String {
    value
        .as_ref()
        .map_or_else(|| "-".to_string(), |v| escape(&v.to_string()))
}

/// The summary lines of a state read back; every text from it has its
/// control characters escaped.
pub fn summary(state: &StoredState, source: &str, now: SystemTime) -> String {
    let word = |w: Option<&'static str>| w.unwrap_or("-");
    let mut out = String::new();
    out.push_str(&format!(
        "status:               {}",
        word(state.status.map(Status::as_str))
    ));
    if let Some(reason) = state.reason {
        out.push_str(&format!(" ({})", reason.as_str()));
    }
    out.push('\n');
    out.push_str(&format!(
        "since:                {}\n",
        ago(state.status_since, now)
    ));
    out.push_str(&format!(
        "iteration:            {}\n",
        shown(&state.iteration)
    ));
    out.push_str(&format!(
        "last run:             {} exit={} at {}\n",
        word(state.last_outcome.map(Outcome::as_str)),
        shown(&state.last_batch_exit),
        ago(state.last_batch_at, now)
    ));
    out.push_str(&format!(
        "last success:         {}\n",
        ago(state.last_success_at, now)
    ));
    out.push_str(&format!(
        "consecutive failures: {}\n",
        shown(&state.consecutive_failures)
    ));
    out.push_str(&format!(
        "backoff:              {}s\n",
        shown(&state.backoff_seconds)
    ));
    out.push_str(&format!(
        "run log:              {}\n",
        shown(&state.run_log)
    ));
    out.push_str(&format!(
        "trace id:             {}\n",
        shown(&state.trace_id)
    ));
    out.push_str(&format!(
        "pid / job pid:        {} / {}\n",
        shown(&state.pid),
        shown(&state.job_pid)
    ));
    out.push_str(&format!(
        "source:               {source} (jobloop {})\n",
        shown(&state.version)
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
        let state = StoredState::from_value(state).unwrap();
        let text = summary(&state, "state.json", now);
        assert!(text.contains("token-expired (pattern)"), "{text}");
        assert!(text.contains("(1m ago)"), "{text}");
        assert!(text.contains("/logs/runs/20261125T095959Z.log"));
        assert!(text.contains("trace id:             abc"));
    }

    #[test]
    fn nothing_from_the_state_reaches_the_terminal_raw() {
        let state = serde_json::json!({
            "status": "idle\u{1b}[2J", "reason": "x\u{9b}31m", "runLog": "/x\u{7}\u{202e}gol.exe",
            "lastBatchAt": "\u{1b}]0;pwned\u{7}", "iteration": {"k": "\u{85}"},
        });
        let stored = StoredState::from_value(state.clone()).unwrap();
        let text = summary(&stored, "state.json", SystemTime::now());
        assert!(!text.chars().any(|c| is_unsafe(c) && c != '\n'), "{text:?}");
        // Words that are not the contract's are not shown at all.
        assert!(text.contains("status:               -\n"), "{text}");
        assert!(text.contains("/x\\u{7}\\u{202e}gol.exe"), "{text}");
        let json = escape_json(&serde_json::to_string_pretty(&state).unwrap());
        assert!(!json.chars().any(|c| is_unsafe(c) && c != '\n'), "{json:?}");
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back, state, "the escaped JSON is the same JSON");
    }

    #[test]
    fn reads_stop_at_one_mebibyte() {
        let limit = MAX_READ as usize;
        assert_eq!(
            read_capped(&vec![b' '; limit][..], "x").unwrap().len(),
            limit
        );
        let error = read_capped(std::io::repeat(b' '), "the answer").unwrap_err();
        assert_eq!(
            error,
            "the answer is larger than 1 MiB; not a jobloop state"
        );
    }
}
