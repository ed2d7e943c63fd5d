//! systemd's notification protocol, with a unix datagram socket the test
//! binds as NOTIFY_SOCKET: READY=1 after the preflight, STATUS= with the
//! state, WATCHDOG=1 from the loop (SPEC §4).

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use crate::util::{self, daemon, Harness};

fn receive_until(
    socket: &UnixDatagram,
    deadline: Duration,
    mut done: impl FnMut(&[String]) -> bool,
) -> Vec<String> {
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut messages = Vec::new();
    let mut buffer = [0u8; 4096];
    // The read timeout paces the loop. The caller asserts on what came.
    util::poll_every(Duration::ZERO, deadline, || {
        if done(&messages) {
            return true;
        }
        if let Ok(count) = socket.recv(&mut buffer) {
            messages.push(String::from_utf8_lossy(&buffer[..count]).to_string());
        }
        false
    });
    messages
}

#[test]
fn ready_status_and_watchdog_reach_the_notify_socket() {
    let mut h = Harness::new();
    let path = h.path("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    h.env("NOTIFY_SOCKET", path.to_str().unwrap())
        .env("WATCHDOG_USEC", "200000")
        .env("AGENT_PREFLIGHT_CMD", "true")
        .env("AGENT_IDLE_SLEEP", "1h");
    h.start(&[], &["true"]);
    let messages = receive_until(&socket, Duration::from_secs(10), |m| {
        m.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3
            && m.iter().any(|m| m.contains("STATUS=idle"))
    });
    let ready = messages
        .iter()
        .position(|m| m.contains("READY=1"))
        .expect("READY=1 sent");
    let running = messages
        .iter()
        .position(|m| m.contains("STATUS=running"))
        .expect("STATUS=running sent");
    assert!(
        ready < running,
        "READY=1 comes after the preflight, before the first job: {messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("STATUS=idle")),
        "{messages:?}"
    );
    assert!(
        messages.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3,
        "watchdog pings while idle: {messages:?}"
    );
    assert!(h.stop().success());
    let after = receive_until(&socket, Duration::from_secs(2), |m| {
        m.iter().any(|m| m.contains("STOPPING=1"))
    });
    assert!(after.iter().any(|m| m.contains("STOPPING=1")), "{after:?}");
}

#[test]
fn without_notify_socket_nothing_is_sent_and_nothing_fails() {
    let mut h = daemon(&[("WATCHDOG_USEC", "100000")]);
    h.wait_status("idle", Duration::from_secs(10));
    assert!(h.stop().success());
}
