//! The HTTP server: metrics, health, probes, state and resume (SPEC §6).
//!
//! Handlers read only the published [`Snapshot`] and the metrics registry,
//! and talk to the loop only through its command channel, so no request can
//! hold the loop up. Connections are capped and slow clients timed out; the
//! server runs on its own thread's runtime, apart from the loop's.

mod handlers;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use crate::command::Command;
use crate::metrics::Metrics;
use crate::state::Snapshot;

/// Connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 1024;
/// Longest wait for a request's headers (slowloris).
const HEADER_TIMEOUT: Duration = Duration::from_secs(8);
/// Longest life of one connection, keep-alive included.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);
/// Largest request head accepted (hyper's minimum is 8 KiB).
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Whether the loop answers, with a cache so a flood of probes costs the
/// loop at most one ping per half second.
pub struct Liveness {
    epoch: Instant,
    last_answer_ms: AtomicU64,
    deadline: Duration,
}

impl Liveness {
    /// An answer younger than this is reused.
    const FRESH: Duration = Duration::from_millis(500);

    /// A check that gives the loop `deadline` to answer a ping.
    pub fn new(deadline: Duration) -> Liveness {
        Liveness {
            epoch: Instant::now(),
            last_answer_ms: AtomicU64::new(0),
            deadline,
        }
    }

    /// Asks the loop whether it is alive.
    pub async fn check(&self, commands: &mpsc::Sender<Command>) -> Result<(), &'static str> {
        let last = self.last_answer_ms.load(Ordering::Relaxed);
        let now = self.epoch.elapsed().as_millis() as u64;
        if last > 0 && now.saturating_sub(last) < Self::FRESH.as_millis() as u64 {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        if commands.try_send(Command::Ping(reply)).is_err() {
            // A full queue means the loop is not reading it: stuck, or very busy.
            return Err("the supervisor loop does not read its commands");
        }
        match tokio::time::timeout(self.deadline, answer).await {
            Ok(Ok(())) => {
                self.last_answer_ms.store(
                    self.epoch.elapsed().as_millis().max(1) as u64,
                    Ordering::Relaxed,
                );
                Ok(())
            }
            Ok(Err(_)) => Err("the supervisor loop has ended"),
            Err(_) => Err("the supervisor loop did not answer in time"),
        }
    }
}

/// What every handler may read.
#[derive(Clone)]
pub struct AppState {
    /// The newest snapshot the loop published.
    pub snapshot: watch::Receiver<Snapshot>,
    /// The loop's command channel.
    pub commands: mpsc::Sender<Command>,
    /// The registry.
    pub metrics: Arc<Metrics>,
    /// Token `POST /resume` needs; `None` = resume disabled.
    pub admin_token: Option<Arc<str>>,
    /// The liveness check.
    pub liveness: Arc<Liveness>,
}

/// The routes of SPEC §6.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(handlers::metrics))
        .route("/health", get(handlers::health))
        .route("/livez", get(handlers::livez))
        .route("/readyz", get(handlers::readyz))
        .route("/state", get(handlers::state))
        .route("/resume", post(handlers::resume))
        .fallback(handlers::not_found)
        .with_state(state)
}

/// Nice value of the thread that serves HTTP.
const HTTP_NICENESS: i32 = 10;

/// Lowers the calling thread's scheduling priority (Linux keeps a nice
/// value per thread), so that on a busy machine a flood of requests takes
/// CPU from the HTTP server before it takes any from the loop and its jobs
/// (SPEC §6: the server can never slow the loop down). Call it on the HTTP
/// thread after the other threads were started: new threads inherit it.
pub fn lower_this_thread_priority() {
    let tid = rustix::process::Pid::from_raw(nix::unistd::gettid().as_raw());
    if let Err(error) = rustix::process::setpriority_process(tid, HTTP_NICENESS) {
        tracing::debug!(%error, "cannot lower the HTTP thread's priority");
    }
}

/// Binds the listener.
///
/// # Errors
///
/// When the address cannot be bound (port taken, no permission).
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

/// Serves `app` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: wait a little rather than spin.
                    tracing::debug!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES)
                .keep_alive(true);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::ResumeAnswer;
    use crate::state::Status;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use std::time::SystemTime;
    use tower::ServiceExt;

    /// A router over a snapshot in `status`, with a fake loop that answers
    /// pings (when `alive`) and resumes (Resumed when halted).
    fn app(status: Status, token: Option<&str>, alive: bool) -> Router {
        let mut snapshot = Snapshot::starting(SystemTime::now());
        snapshot.status = status;
        let metrics = Arc::new(Metrics::new());
        metrics.observe(&snapshot);
        let (_publisher, receiver) = watch::channel(snapshot);
        // Keep the sender alive for the test's duration.
        std::mem::forget(_publisher);
        let (sender, mut commands) = mpsc::channel(8);
        tokio::spawn(async move {
            while let Some(command) = commands.recv().await {
                match command {
                    Command::Ping(reply) if alive => {
                        let _ = reply.send(());
                    }
                    Command::Ping(reply) => std::mem::forget(reply),
                    Command::Resume {
                        reply: Some(reply), ..
                    } => {
                        let answer = if status.is_halted() {
                            ResumeAnswer::Resumed
                        } else {
                            ResumeAnswer::NotHalted
                        };
                        let _ = reply.send(answer);
                    }
                    _ => {}
                }
            }
        });
        router(AppState {
            snapshot: receiver,
            commands: sender,
            metrics,
            admin_token: token.map(Arc::from),
            liveness: Arc::new(Liveness::new(Duration::from_millis(200))),
        })
    }

    async fn call(
        app: Router,
        method: &str,
        uri: &str,
        auth: Option<&str>,
    ) -> (StatusCode, String) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = app
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).to_string())
    }

    #[tokio::test]
    async fn health_is_503_only_while_halted() {
        for status in Status::ALL {
            let (code, body) = call(app(status, None, true), "GET", "/health", None).await;
            let expected = if status.is_halted() { 503 } else { 200 };
            assert_eq!(code.as_u16(), expected, "{status:?}");
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(json["status"], status.as_str());
        }
    }

    #[tokio::test]
    async fn readyz_is_200_only_while_taking_work() {
        for status in Status::ALL {
            let (code, _) = call(app(status, None, true), "GET", "/readyz", None).await;
            let expected = if matches!(status, Status::Running | Status::Idle | Status::Backoff) {
                200
            } else {
                503
            };
            assert_eq!(code.as_u16(), expected, "{status:?}");
        }
    }

    #[tokio::test]
    async fn livez_follows_the_loop_not_the_state() {
        for status in [
            Status::Running,
            Status::Unhealthy,
            Status::TokenExpired,
            Status::Backoff,
        ] {
            let (code, _) = call(app(status, None, true), "GET", "/livez", None).await;
            assert_eq!(code, StatusCode::OK, "{status:?}");
        }
        let (code, body) = call(
            app(Status::Idle, None, false),
            "GET",
            "/livez?verbose",
            None,
        )
        .await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("[-]supervisor-loop failed"), "{body}");
    }

    #[tokio::test]
    async fn verbose_lists_each_check() {
        let (code, body) = call(
            app(Status::TokenExpired, None, true),
            "GET",
            "/readyz?verbose",
            None,
        )
        .await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("[+]supervisor-loop ok"), "{body}");
        assert!(
            body.contains("[-]state failed: halted (token-expired)"),
            "{body}"
        );
        let (_, body) = call(app(Status::Idle, None, true), "GET", "/livez?verbose", None).await;
        assert!(body.contains("[+]supervisor-loop ok"), "{body}");
    }

    #[tokio::test]
    async fn state_metrics_404_405() {
        let (code, body) = call(app(Status::Unhealthy, None, true), "GET", "/state", None).await;
        assert_eq!(code, StatusCode::OK);
        assert!(body.contains("\"status\": \"unhealthy\""), "{body}");
        let (code, body) = call(app(Status::Idle, None, true), "GET", "/metrics", None).await;
        assert_eq!(code, StatusCode::OK);
        assert!(body.contains("jobloop_state{state=\"idle\"} 1"));
        let (code, _) = call(app(Status::Idle, None, true), "GET", "/nope", None).await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        let (code, _) = call(app(Status::Idle, None, true), "POST", "/metrics", None).await;
        assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
        let (code, _) = call(app(Status::Idle, None, true), "GET", "/resume", None).await;
        assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn resume_needs_the_right_token() {
        let token = Some("s3cret");
        let (code, _) = call(
            app(Status::Unhealthy, None, true),
            "POST",
            "/resume",
            Some("Bearer s3cret"),
        )
        .await;
        assert_eq!(code, StatusCode::FORBIDDEN, "no token configured");
        let (code, _) = call(app(Status::Unhealthy, token, true), "POST", "/resume", None).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "missing");
        let (code, _) = call(
            app(Status::Unhealthy, token, true),
            "POST",
            "/resume",
            Some("Bearer wrong"),
        )
        .await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "wrong");
        let (code, _) = call(
            app(Status::Unhealthy, token, true),
            "POST",
            "/resume",
            Some("s3cret"),
        )
        .await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "not a bearer");
        let (code, _) = call(
            app(Status::Unhealthy, token, true),
            "POST",
            "/resume",
            Some("Bearer s3cret"),
        )
        .await;
        assert_eq!(code, StatusCode::OK, "right");
        let (code, _) = call(
            app(Status::Idle, token, true),
            "POST",
            "/resume",
            Some("Bearer s3cret"),
        )
        .await;
        assert_eq!(code, StatusCode::CONFLICT, "not halted");
    }
}
