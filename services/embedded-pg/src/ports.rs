//! Free loopback ports, never the same one twice in this process.

use std::net::{SocketAddr, TcpListener};
use std::sync::Mutex;

/// Ports this process handed out; the kernel may offer a just-released port again, and two
/// servers given one port would race for it.
static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// A free loopback port that no earlier call in this process returned.
pub fn free_port() -> std::io::Result<u16> {
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
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
}
