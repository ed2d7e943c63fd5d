//! One small function per route; each reads the snapshot or asks the loop
//! through its channel, never anything else.

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use tokio::sync::oneshot;

use super::scrapes::Format;
use super::{AppState, Peer};
use crate::command::{Command, ResumeAnswer};

fn json(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// `GET /metrics`: OpenMetrics with exemplars when the `Accept` header asks
/// for it (as Prometheus does), else the Prometheus text format 0.0.4.
pub async fn metrics(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let (content_type, format) = if wants_openmetrics(&accept) {
        (
            crate::metrics::OPENMETRICS_CONTENT_TYPE,
            Format::OpenMetrics,
        )
    } else {
        ("text/plain; version=0.0.4; charset=utf-8", Format::Text)
    };
    let body = app.scrapes.render(format).await;
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// True when `accept` prefers `application/openmetrics-text` (any version)
/// at least as much as the text format: its best `q` is above zero and not
/// below that of `text/plain`, `text/*` or `*/*`.
fn wants_openmetrics(accept: &str) -> bool {
    let mut openmetrics = 0.0_f64;
    let mut text = 0.0_f64;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|param| param.split_once('='))
            .find(|(key, _)| key.trim().eq_ignore_ascii_case("q"))
            .map_or(1.0, |(_, value)| value.trim().parse().unwrap_or(0.0));
        match media.as_str() {
            "application/openmetrics-text" => openmetrics = openmetrics.max(q),
            "text/plain" | "text/*" | "*/*" => text = text.max(q),
            _ => {}
        }
    }
    openmetrics > 0.0 && openmetrics >= text
}

/// `GET /health`: the state JSON; 503 while halted (the seed's health server).
pub async fn health(State(app): State<AppState>) -> Response {
    let snapshot = app.snapshot.borrow().clone();
    let status = if snapshot.status.is_halted() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json(status, snapshot.to_json())
}

/// `GET /state`: the state JSON, always 200.
pub async fn state(State(app): State<AppState>) -> Response {
    json(StatusCode::OK, app.snapshot.borrow().to_json())
}

/// One named check of a probe.
struct Check {
    name: &'static str,
    result: Result<(), String>,
}

fn probe(checks: Vec<Check>, query: Option<String>) -> Response {
    let healthy = checks.iter().all(|check| check.result.is_ok());
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let verbose = query.is_some_and(|q| {
        q.split('&')
            .any(|pair| pair == "verbose" || pair.starts_with("verbose="))
    });
    if !verbose {
        return text(
            status,
            if healthy {
                "ok\n".into()
            } else {
                "failed\n".into()
            },
        );
    }
    let mut body = String::new();
    for check in &checks {
        match &check.result {
            Ok(()) => body.push_str(&format!("[+]{} ok\n", check.name)),
            Err(why) => body.push_str(&format!("[-]{} failed: {why}\n", check.name)),
        }
    }
    body.push_str(if healthy {
        "check passed\n"
    } else {
        "check failed\n"
    });
    text(status, body)
}

/// `GET /livez`: 200 while the loop answers, halted or not.
pub async fn livez(State(app): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let result = app
        .liveness
        .check(&app.commands)
        .await
        .map_err(str::to_string);
    probe(
        vec![Check {
            name: "supervisor-loop",
            result,
        }],
        query,
    )
}

/// `GET /readyz`: 200 while the daemon can take work.
pub async fn readyz(State(app): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let status = app.snapshot.borrow().status;
    let alive = app
        .liveness
        .check(&app.commands)
        .await
        .map_err(str::to_string);
    let ready = if status.is_ready() {
        Ok(())
    } else if status.is_halted() {
        Err(format!("halted ({})", status.as_str()))
    } else {
        Err(format!("not taking work ({})", status.as_str()))
    };
    probe(
        vec![
            Check {
                name: "supervisor-loop",
                result: alive,
            },
            Check {
                name: "state",
                result: ready,
            },
        ],
        query,
    )
}

/// `POST /resume`: leaves a halt; needs the admin token.
pub async fn resume(
    State(app): State<AppState>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
) -> Response {
    let Some(expected) = app.admin_token.as_deref() else {
        return text(
            StatusCode::FORBIDDEN,
            "resume is disabled: no AGENT_ADMIN_TOKEN is set\n".into(),
        );
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or("");
    // Constant time, length included: the answer's timing must not tell
    // how much matched, nor how long the token is.
    let rejected = if given.is_empty() {
        Some("no bearer token")
    } else if !expected.matches(given) {
        Some("wrong bearer token")
    } else {
        None
    };
    if let Some(why) = rejected {
        // Counted every time, logged at most once a window: the counter is
        // what an alert on guessing watches.
        app.metrics.resume_rejected.inc();
        expected.rejected(peer.map(|Extension(Peer(address))| address), why);
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a valid bearer token is required\n",
        )
            .into_response();
    }
    let (reply, answer) = oneshot::channel();
    if app
        .commands
        .send(Command::Resume {
            source: "POST /resume",
            reply: Some(reply),
        })
        .await
        .is_err()
    {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the supervisor loop has ended\n".into(),
        );
    }
    match tokio::time::timeout(std::time::Duration::from_secs(10), answer).await {
        Ok(Ok(ResumeAnswer::Resumed)) => json(StatusCode::OK, b"{\"resumed\":true}\n".to_vec()),
        Ok(Ok(ResumeAnswer::NotHalted)) => {
            let status = app.snapshot.borrow().status;
            json(
                StatusCode::CONFLICT,
                format!("{{\"resumed\":false,\"status\":\"{}\"}}\n", status.as_str()).into_bytes(),
            )
        }
        _ => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the supervisor loop did not answer\n".into(),
        ),
    }
}

/// Any other path.
pub async fn not_found() -> Response {
    text(
        StatusCode::NOT_FOUND,
        "not found: try /metrics, /health, /livez, /readyz, /state\n".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::wants_openmetrics;

    #[test]
    fn negotiation_follows_the_accept_header() {
        // What Prometheus 2.x sends.
        assert!(wants_openmetrics(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        assert!(wants_openmetrics("application/openmetrics-text"));
        assert!(wants_openmetrics(
            "text/plain;q=0.5, Application/OpenMetrics-Text; version=1.0.0"
        ));
        assert!(!wants_openmetrics(""));
        assert!(!wants_openmetrics("*/*"));
        assert!(!wants_openmetrics("text/plain;version=0.0.4"));
        assert!(!wants_openmetrics("application/openmetrics-text;q=0"));
        assert!(!wants_openmetrics(
            "text/plain, application/openmetrics-text;q=0.5"
        ));
    }
}
