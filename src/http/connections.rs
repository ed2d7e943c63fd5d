//! How many connections the server holds, and which one gives way when a
//! new one arrives at the cap (SPEC §6, 0.2).
//!
//! The cap comes from the descriptor limit minus a reserve for the loop, so
//! connections can never take the descriptors a job needs. At the cap the
//! oldest idle connection (no complete request yet, or between keep-alive
//! requests) is closed for the newcomer: a flood of connections that send
//! nothing cannot lock out the kubelet's probes. A connection serving a
//! request is never chosen; when every one is serving, newcomers wait in
//! the kernel's backlog until one is idle or closed.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use std::net::SocketAddr;

use axum::body::Body;
use axum::response::Response;
use axum::Router;
use tokio::sync::Notify;

use crate::limits::Descriptors;

/// Never more connections than this, however high the limit.
pub const MAX_CONNECTIONS: usize = 1024;
/// Never fewer, however low the limit: the probes need a few.
pub const MIN_CONNECTIONS: usize = 4;
/// Descriptors kept for the loop and the rest of the daemon.
///
/// Counted on a busy run: the job's spawn (stdin, two pipes with both
/// ends open until the fork returns, the exec-error pipe, a pidfd: 8), its
/// run log (1), a pre-run or rotate hook doing the same (9), the state
/// writer's temporary file and directory (2), a marker file (1), the
/// reaper's and the process metrics' `/proc` reads (3), the OTLP
/// exporter's sockets and its client's runtime (6), the two runtimes'
/// epoll and wake-up descriptors and the signal pipe opened after the
/// start count (6), systemd's notify socket (1): 37. Rounded up to 64 so a
/// hook that opens a few more, or a future feature, still fits.
pub const RESERVE: u64 = 64;
/// Connections being closed to make room linger a little (see
/// `EVICTION_GRACE` in the server); this many may be open above
/// the cap meanwhile, and the budget counts them.
pub const EVICTION_SLACK: usize = 16;

/// The connection cap for `descriptors`: the limit less what was open at
/// start, less [`RESERVE`] and [`EVICTION_SLACK`], kept within
/// [`MIN_CONNECTIONS`]..=[`MAX_CONNECTIONS`].
///
/// A budget below the minimum (a soft limit under ~90) keeps the minimum:
/// probes are answered at the cost of a few reserved descriptors.
pub fn connection_cap(descriptors: Descriptors) -> usize {
    let room = descriptors
        .limit
        .saturating_sub(descriptors.open)
        .saturating_sub(RESERVE)
        .saturating_sub(EVICTION_SLACK as u64);
    usize::try_from(room)
        .unwrap_or(usize::MAX)
        .clamp(MIN_CONNECTIONS, MAX_CONNECTIONS)
}

/// What the server knows of one connection.
pub struct Connection {
    /// Requests being served (from the complete head to the response).
    in_flight: AtomicUsize,
    /// Milliseconds since the registry's epoch when it last became idle.
    idle_since_ms: AtomicU64,
    /// Set once it was chosen to give way.
    evicted: AtomicBool,
    /// Wakes its task to close it.
    close: Notify,
}

impl Connection {
    /// Whether a request is being served on it.
    pub fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// Resolves once the connection was chosen to give way.
    pub async fn evicted(&self) {
        self.close.notified().await;
    }
}

/// The open connections, with a cap.
pub struct Registry {
    cap: usize,
    epoch: Instant,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Connection>>>,
    /// Woken when a connection closes or finishes a request: there may be
    /// room again.
    room: Notify,
}

/// A connection's place in the [`Registry`]; freed when dropped.
pub struct Admission {
    registry: Arc<Registry>,
    id: u64,
    /// The connection's shared state.
    pub connection: Arc<Connection>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
        self.registry.room.notify_one();
    }
}

impl Registry {
    /// An empty registry holding at most `cap` connections (plus
    /// [`EVICTION_SLACK`] on their way out).
    pub fn new(cap: usize) -> Arc<Registry> {
        Arc::new(Registry {
            cap,
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
            room: Notify::new(),
        })
    }

    /// The cap.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Connections open now, those on their way out included.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Connection>>> {
        // The map stays consistent whatever panicked while holding it.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether [`admit`](Registry::admit) would take a newcomer now.
    fn has_room(&self) -> bool {
        let open = self.lock();
        if open.len() >= self.cap + EVICTION_SLACK {
            return false;
        }
        let evictable = |c: &&Arc<Connection>| !c.busy() && !c.evicted.load(Ordering::Acquire);
        let live = open
            .values()
            .filter(|c| !c.evicted.load(Ordering::Acquire))
            .count();
        live < self.cap || open.values().any(|c| evictable(&c))
    }

    /// Resolves once a newcomer can be admitted: below the cap, or at it
    /// with an idle connection to give way. Meanwhile new connections wait
    /// in the kernel's backlog, which costs no descriptor of ours, rather
    /// than being accepted and reset.
    pub async fn room(&self) {
        loop {
            // Registered before the check, so no wake-up is lost between.
            let woken = self.room.notified();
            if self.has_room() {
                return;
            }
            woken.await;
        }
    }

    /// Makes room for a new connection: below the cap at once; at the cap
    /// by telling the oldest idle connection to close. `None` when every
    /// connection is serving a request (or too many are still closing):
    /// the newcomer is then refused.
    pub fn admit(self: &Arc<Registry>) -> Option<Admission> {
        let mut open = self.lock();
        if open.len() >= self.cap + EVICTION_SLACK {
            return None;
        }
        let live = open
            .values()
            .filter(|c| !c.evicted.load(Ordering::Acquire))
            .count();
        if live >= self.cap {
            let oldest_idle = open
                .values()
                .filter(|c| !c.busy() && !c.evicted.load(Ordering::Acquire))
                .min_by_key(|c| c.idle_since_ms.load(Ordering::Acquire))?;
            oldest_idle.evicted.store(true, Ordering::Release);
            // notify_one keeps a permit if the task is not waiting yet.
            oldest_idle.close.notify_one();
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let connection = Arc::new(Connection {
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(self.now_ms()),
            evicted: AtomicBool::new(false),
            close: Notify::new(),
        });
        open.insert(id, connection.clone());
        Some(Admission {
            registry: self.clone(),
            id,
            connection,
        })
    }
}

/// Marks its connection busy while it lives.
struct Busy {
    registry: Arc<Registry>,
    connection: Arc<Connection>,
}

impl Busy {
    fn enter(registry: Arc<Registry>, connection: Arc<Connection>) -> Busy {
        connection.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy {
            registry,
            connection,
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.connection
            .idle_since_ms
            .store(self.registry.now_ms(), Ordering::Release);
        self.connection.in_flight.fetch_sub(1, Ordering::AcqRel);
        // An idle connection may now give way to a waiting newcomer.
        self.registry.room.notify_one();
    }
}

/// The client's address, in each request's extensions (for the log line
/// of a rejected `POST /resume`).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The router, marking the connection busy while it serves a request.
#[derive(Clone)]
pub struct Tracked {
    app: Router,
    peer: SocketAddr,
    registry: Arc<Registry>,
    connection: Arc<Connection>,
}

impl Tracked {
    /// `app` serving the connection from `peer` that `admission` stands for.
    pub fn new(app: Router, peer: SocketAddr, admission: &Admission) -> Tracked {
        Tracked {
            app,
            peer,
            registry: admission.registry.clone(),
            connection: admission.connection.clone(),
        }
    }
}

impl tower::Service<hyper::Request<hyper::body::Incoming>> for Tracked {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // A Router is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        let busy = Busy::enter(self.registry.clone(), self.connection.clone());
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(Peer(self.peer));
        let response = tower::Service::call(&mut self.app, request);
        Box::pin(async move {
            let response = response.await;
            // Busy until the response is handed to hyper; the eviction
            // grace covers writing it out.
            drop(busy);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptors(limit: u64, open: u64) -> Descriptors {
        Descriptors { limit, open }
    }

    #[test]
    fn the_cap_is_the_limit_less_the_open_ones_and_the_reserve() {
        // 256 - 4 - 64 - 16
        assert_eq!(connection_cap(descriptors(256, 4)), 172);
        assert_eq!(connection_cap(descriptors(1024, 10)), 934);
        // Descriptors inherited at start count.
        assert_eq!(connection_cap(descriptors(256, 100)), 76);
    }

    #[test]
    fn the_cap_stays_between_the_bounds() {
        assert_eq!(connection_cap(descriptors(1_048_576, 5)), MAX_CONNECTIONS);
        assert_eq!(connection_cap(descriptors(65_536, 5)), MAX_CONNECTIONS);
        assert_eq!(connection_cap(descriptors(64, 3)), MIN_CONNECTIONS);
        assert_eq!(connection_cap(descriptors(0, 3)), MIN_CONNECTIONS);
        // The reserve is kept in full as long as the minimum allows it.
        let cap = connection_cap(descriptors(200, 20)) as u64;
        assert_eq!(cap + 20 + RESERVE + EVICTION_SLACK as u64, 200);
    }

    #[test]
    fn at_the_cap_the_oldest_idle_connection_gives_way() {
        let registry = Registry::new(3);
        let first = registry.admit().unwrap();
        let second = registry.admit().unwrap();
        let third = registry.admit().unwrap();
        // The first one serves a request: not a candidate.
        let busy = Busy::enter(registry.clone(), first.connection.clone());
        // Make the third the oldest idle one.
        third.connection.idle_since_ms.store(0, Ordering::Release);
        second.connection.idle_since_ms.store(5, Ordering::Release);
        let fourth = registry.admit().unwrap();
        fourth
            .connection
            .idle_since_ms
            .store(1000, Ordering::Release);
        assert!(third.connection.evicted.load(Ordering::Acquire));
        assert!(!second.connection.evicted.load(Ordering::Acquire));
        assert!(!first.connection.evicted.load(Ordering::Acquire));
        assert_eq!(registry.len(), 4, "the evicted one counts until closed");
        drop(third);
        assert_eq!(registry.len(), 3);
        // Next to go: the second (the fourth is newer); never the busy one.
        let _fifth = registry.admit().unwrap();
        assert!(second.connection.evicted.load(Ordering::Acquire));
        drop(second);
        assert!(!fourth.connection.evicted.load(Ordering::Acquire));
        drop(busy);
        assert!(!first.connection.busy());
    }

    #[tokio::test]
    async fn when_every_connection_is_busy_newcomers_wait_for_one_to_be_idle() {
        let registry = Registry::new(2);
        let a = registry.admit().unwrap();
        let b = registry.admit().unwrap();
        let busy_a = Busy::enter(registry.clone(), a.connection.clone());
        let _busy_b = Busy::enter(registry.clone(), b.connection.clone());
        assert!(!registry.has_room());
        assert!(registry.admit().is_none());
        assert_eq!(registry.len(), 2);
        let waiting = tokio::spawn({
            let registry = registry.clone();
            async move { registry.room().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        // A finished request makes its connection idle: room again.
        drop(busy_a);
        tokio::time::timeout(std::time::Duration::from_secs(1), waiting)
            .await
            .expect("room")
            .unwrap();
        assert!(registry.admit().is_some());
        assert!(a.connection.evicted.load(Ordering::Acquire));
    }

    #[tokio::test]
    async fn an_evicted_connection_is_woken_even_if_it_was_not_waiting_yet() {
        let registry = Registry::new(1);
        let old = registry.admit().unwrap();
        let _new = registry.admit().unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), old.connection.evicted())
            .await
            .expect("woken");
    }

    #[test]
    fn closing_connections_beyond_the_slack_refuse_newcomers() {
        let registry = Registry::new(1);
        let mut held = vec![registry.admit().unwrap()];
        // Each newcomer evicts the previous one, which stays open.
        for _ in 0..EVICTION_SLACK {
            held.push(registry.admit().unwrap());
        }
        assert_eq!(registry.len(), 1 + EVICTION_SLACK);
        assert!(!registry.has_room());
        assert!(registry.admit().is_none());
        held.remove(0);
        assert!(registry.has_room());
        assert!(registry.admit().is_some());
    }
}
