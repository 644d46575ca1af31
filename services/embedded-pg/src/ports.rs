//! Free loopback ports, never the same one twice in this process, and outside the kernel's
//! ephemeral range.

use std::net::{SocketAddr, TcpListener};
use std::sync::Mutex;

/// Ports this process handed out; the kernel may offer a just-released port again, and two
/// servers given one port would race for it.
static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// Lowest port handed out: above the registered services most hosts run.
const LOWEST: u16 = 10_000;

/// The first port of the kernel's ephemeral range (outgoing connections take their local
/// port from it), or the Linux default when it cannot be read.
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(32_768)
}

/// A free loopback port that no earlier call in this process returned.
///
/// A port the kernel picks for `bind(0)` comes from the ephemeral range, where any outgoing
/// connection (a database session, another process's client) may take it in the moment
/// between our check and the server binding it. Ports below that range are only ever taken
/// by an explicit bind, so they are tried first (at random, checked free); the kernel's pick
/// is the fallback where that range is too small.
pub fn free_port() -> std::io::Result<u16> {
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let top = ephemeral_start();
    if top > LOWEST + 1_000 {
        for _ in 0..200 {
            let port = rand::random_range(LOWEST..top);
            if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
                given.push(port);
                return Ok(port);
            }
        }
    }
    loop {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if !given.contains(&port) {
            given.push(port);
            return Ok(port);
        }
    }
}

/// A free loopback address (see [`free_port`]).
pub fn free_addr() -> std::io::Result<SocketAddr> {
    Ok(SocketAddr::from(([127, 0, 0, 1], free_port()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_never_handed_out_twice() {
        // Each listener is dropped at once, so the kernel is free to offer its port again.
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            assert!(seen.insert(free_port().unwrap()), "a port was handed out twice");
        }
    }

    #[test]
    fn ports_come_from_below_the_ephemeral_range() {
        // Outgoing connections take their local ports from the ephemeral range; a port
        // handed out there can be taken before the server binds it.
        let top = ephemeral_start();
        if top > LOWEST + 1_000 {
            for _ in 0..100 {
                let p = free_port().unwrap();
                assert!((LOWEST..top).contains(&p), "port {p} is in the ephemeral range (from {top})");
            }
        }
    }
}
