//! The HTTP server: metrics, health, probes, state and resume (SPEC §6).
//!
//! Handlers read only the published [`Snapshot`] and the metrics registry,
//! and talk to the loop only through its command channel, so no request can
//! hold the loop up. Connections are capped by the descriptor budget (see
//! [`connection_cap`]), idle ones give way to new ones at the cap, and slow
//! clients are timed out; `/livez` checks share one ping to the loop. The
//! server runs on its own thread's runtime, apart from the loop's.

pub mod auth;
pub mod connections;
mod handlers;
mod scrapes;

pub use auth::AdminToken;
pub use connections::{connection_cap, Peer};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use self::connections::{Admission, Registry, Tracked};
pub use self::scrapes::Scrapes;
use crate::limits::Descriptors;

use crate::command::Command;
use crate::metrics::Metrics;
use crate::state::Snapshot;

/// Longest wait for a request's headers (slowloris).
const HEADER_TIMEOUT: Duration = Duration::from_secs(8);
/// Longest life of one connection, keep-alive included.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);
/// Largest request head accepted (hyper's minimum is 8 KiB).
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// What one ping found: `Err` says why the loop is not alive.
type PingAnswer = Result<(), &'static str>;

/// Whether the loop answers, with a cache so a flood of probes costs the
/// loop at most one ping per half second, and at most one ping in flight:
/// every check made while a ping is out waits for that ping's answer, so
/// probes can never fill the command channel (a full channel would have
/// answered 503 for a healthy loop).
pub struct Liveness {
    epoch: Instant,
    last_answer_ms: AtomicU64,
    deadline: Duration,
    /// The answer to the ping in flight (`None` inside while it is out).
    in_flight: Mutex<Option<watch::Receiver<Option<PingAnswer>>>>,
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
            in_flight: Mutex::new(None),
        }
    }

    /// Asks the loop whether it is alive: `Err` within the deadline if it
    /// does not answer.
    pub async fn check(&self, commands: &mpsc::Sender<Command>) -> PingAnswer {
        let last = self.last_answer_ms.load(Ordering::Relaxed);
        let now = self.epoch.elapsed().as_millis() as u64;
        if last > 0 && now.saturating_sub(last) < Self::FRESH.as_millis() as u64 {
            return Ok(());
        }
        let mut answer = self.join_or_send_ping(commands);
        let result = match answer.wait_for(Option::is_some).await {
            Ok(answer) => answer.unwrap_or(Err("the supervisor loop did not answer in time")),
            // The pinging task ended without an answer (runtime shutting down).
            Err(_) => Err("the supervisor loop did not answer in time"),
        };
        if result.is_ok() {
            self.last_answer_ms.store(
                self.epoch.elapsed().as_millis().max(1) as u64,
                Ordering::Relaxed,
            );
        }
        result
    }

    /// The answer to come of the ping in flight, sending one if none is.
    fn join_or_send_ping(
        &self,
        commands: &mpsc::Sender<Command>,
    ) -> watch::Receiver<Option<PingAnswer>> {
        let mut in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(answer) = in_flight.as_ref() {
            // Still out: no answer yet and its task still holds the sender.
            if answer.borrow().is_none() && answer.has_changed().is_ok() {
                return answer.clone();
            }
        }
        let (publish, answer) = watch::channel(None);
        let commands = commands.clone();
        let deadline = self.deadline;
        // Its own task: the checks waiting for it may be dropped (their
        // clients hang up) without leaving the others without an answer.
        tokio::spawn(async move {
            let _ = publish.send(Some(ping(&commands, deadline).await));
        });
        *in_flight = Some(answer.clone());
        answer
    }
}

/// Sends the loop one ping and waits at most `deadline` for the answer,
/// the wait for room in its channel included.
async fn ping(commands: &mpsc::Sender<Command>, deadline: Duration) -> PingAnswer {
    let (reply, answer) = oneshot::channel();
    let exchange = async {
        commands
            .send(Command::Ping(reply))
            .await
            .map_err(|_| "the supervisor loop has ended")?;
        answer.await.map_err(|_| "the supervisor loop has ended")
    };
    match tokio::time::timeout(deadline, exchange).await {
        Ok(answer) => answer,
        Err(_) => Err("the supervisor loop did not answer in time"),
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
    /// Its `/metrics` renders, shared and paced.
    pub scrapes: Arc<Scrapes>,
    /// Token `POST /resume` needs; `None` = resume disabled.
    pub admin_token: Option<Arc<AdminToken>>,
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

/// Nice value of the thread that serves HTTP: the lowest, weight 15
/// against the loop's 1024, so a flood of scrapes gets ~1.5% of a core
/// the loop wants (nice 10, weight 110, left the loop ~11% slower under
/// `wrk`), and probes are still answered on a busy machine, which
/// SCHED_IDLE would not promise.
const HTTP_NICENESS: i32 = 19;

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

/// How long a connection chosen to give way may take to close when it is
/// not serving a request: an idle one closes at once; this lets a response
/// just handed over be written out, and a half-received head be dropped.
const EVICTION_GRACE: Duration = Duration::from_millis(100);
/// First pause after a failed accept (EMFILE and friends): the pending
/// connection stays queued, so retrying at once would spin.
const ACCEPT_PAUSE_MIN: Duration = Duration::from_millis(10);
/// Longest pause after failed accepts in a row.
const ACCEPT_PAUSE_MAX: Duration = Duration::from_millis(500);

/// Serves `app` on `listener` until `shutdown` resolves, with at most
/// [`connection_cap`]`(descriptors)` connections: at the cap the oldest
/// idle connection gives way to a new one (SPEC §6, 0.2).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    descriptors: Descriptors,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let registry = Registry::new(connection_cap(descriptors));
    tracing::debug!(
        descriptor_limit = descriptors.limit,
        open_at_start = descriptors.open,
        connection_cap = registry.cap(),
        "HTTP connections capped"
    );
    let mut accept_pause = ACCEPT_PAUSE_MIN;
    tokio::pin!(shutdown);
    loop {
        // At the cap with no idle connection to give way, or with too many
        // still closing: accept nothing until there is room.
        tokio::select! {
            () = registry.room() => {}
            _ = &mut shutdown => return,
        }
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::debug!(%error, pause = ?accept_pause, "accept failed");
                    tokio::time::sleep(accept_pause).await;
                    accept_pause = (accept_pause * 2).min(ACCEPT_PAUSE_MAX);
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        accept_pause = ACCEPT_PAUSE_MIN;
        // Only if every idle connection became busy since the wait above.
        let Some(admission) = registry.admit() else {
            drop(stream);
            continue;
        };
        tokio::spawn(serve_connection(stream, peer, app.clone(), admission));
        // Let the connections run between accepts: one chosen to give way
        // closes now, and a newcomer's head is read before a burst of
        // accepts could make it the oldest idle connection.
        tokio::task::yield_now().await;
    }
}

/// Serves one connection until it ends, times out, or is chosen to give
/// way; its place in the registry is freed when this returns.
async fn serve_connection(stream: TcpStream, peer: SocketAddr, app: Router, admission: Admission) {
    let _ = stream.set_nodelay(true);
    let service = TowerToHyperService::new(Tracked::new(app, peer, &admission));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let lifetime = tokio::time::sleep(CONNECTION_LIFETIME);
    tokio::pin!(lifetime);
    tokio::select! {
        biased;
        _ = connection.as_mut() => return,
        _ = &mut lifetime => return,
        _ = admission.connection.evicted() => {}
    }
    // Chosen to give way: hyper closes an idle connection at once and lets
    // one serving a request finish it first.
    connection.as_mut().graceful_shutdown();
    loop {
        tokio::select! {
            biased;
            _ = connection.as_mut() => return,
            _ = &mut lifetime => return,
            _ = tokio::time::sleep(EVICTION_GRACE) => {
                if !admission.connection.busy() {
                    return;
                }
            }
        }
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
            scrapes: Arc::new(Scrapes::new(metrics.clone())),
            metrics,
            admin_token: token.map(|token| Arc::new(AdminToken::new(token))),
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

    /// A fake loop that answers pings after `delay` (never when `None`)
    /// and counts them.
    fn pinged_loop(delay: Option<Duration>) -> (mpsc::Sender<Command>, Arc<AtomicU64>) {
        // The daemon's capacity: 64.
        let (sender, mut commands) = mpsc::channel(64);
        let pings = Arc::new(AtomicU64::new(0));
        let counted = pings.clone();
        tokio::spawn(async move {
            while let Some(command) = commands.recv().await {
                if let Command::Ping(reply) = command {
                    counted.fetch_add(1, Ordering::SeqCst);
                    match delay {
                        Some(delay) => {
                            tokio::spawn(async move {
                                tokio::time::sleep(delay).await;
                                let _ = reply.send(());
                            });
                        }
                        None => std::mem::forget(reply),
                    }
                }
            }
        });
        (sender, pings)
    }

    async fn concurrent_checks(
        liveness: &Arc<Liveness>,
        commands: &mpsc::Sender<Command>,
        n: usize,
    ) -> Vec<PingAnswer> {
        let mut checks = tokio::task::JoinSet::new();
        for _ in 0..n {
            let liveness = liveness.clone();
            let commands = commands.clone();
            checks.spawn(async move { liveness.check(&commands).await });
        }
        checks.join_all().await
    }

    #[tokio::test]
    async fn concurrent_livez_checks_share_one_ping() {
        let (commands, pings) = pinged_loop(Some(Duration::from_millis(100)));
        let liveness = Arc::new(Liveness::new(Duration::from_secs(2)));
        // 200 checks, more than the channel holds: before, all past the
        // 64th answered 503 for a healthy loop.
        let answers = concurrent_checks(&liveness, &commands, 200).await;
        assert!(answers.iter().all(Result::is_ok), "{answers:?}");
        assert_eq!(pings.load(Ordering::SeqCst), 1);
        // Fresh: no new ping.
        let answers = concurrent_checks(&liveness, &commands, 50).await;
        assert!(answers.iter().all(Result::is_ok));
        assert_eq!(pings.load(Ordering::SeqCst), 1);
        // Stale: one new ping for all of them again.
        tokio::time::sleep(Liveness::FRESH + Duration::from_millis(50)).await;
        let answers = concurrent_checks(&liveness, &commands, 100).await;
        assert!(answers.iter().all(Result::is_ok));
        assert_eq!(pings.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_stuck_loop_fails_every_waiting_check_within_the_deadline() {
        let (commands, pings) = pinged_loop(None);
        let deadline = Duration::from_millis(200);
        let liveness = Arc::new(Liveness::new(deadline));
        let started = Instant::now();
        let answers = concurrent_checks(&liveness, &commands, 100).await;
        assert!(answers.iter().all(Result::is_err), "{answers:?}");
        assert!(started.elapsed() < deadline * 3, "{:?}", started.elapsed());
        assert_eq!(pings.load(Ordering::SeqCst), 1);
        // The next check sends a new ping rather than reuse the failure.
        assert!(liveness.check(&commands).await.is_err());
        assert_eq!(pings.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_full_channel_fails_the_check_within_the_deadline() {
        // A loop that reads nothing: the channel fills, the ping waits.
        let (commands, _unread) = mpsc::channel(1);
        commands
            .try_send(Command::Ping(oneshot::channel().0))
            .unwrap();
        let deadline = Duration::from_millis(200);
        let liveness = Liveness::new(deadline);
        let started = Instant::now();
        assert_eq!(
            liveness.check(&commands).await,
            Err("the supervisor loop did not answer in time")
        );
        assert!(started.elapsed() < deadline * 3);
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
