//! A fault-injecting TCP proxy (tokio) to put between a component and Postgres.
//!
//! Modes: pass-through, added latency, blackhole (connections stay open but no byte moves in
//! either direction, like a network partition; data flows again on restore), down (every open
//! connection is cut and new ones are closed at once) and a one-off cut of open connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy currently does to traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward everything at once.
    Pass,
    /// Forward every chunk after this delay.
    Latency(Duration),
    /// Hold every byte; connections stay open.
    Blackhole,
    /// Refuse: open connections are cut, new ones closed at once.
    Down,
}

#[derive(Clone, Copy, Debug)]
struct State {
    mode: Mode,
    /// Bumped by every cut; a connection that sees a new value closes.
    cuts: u64,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<watch::Sender<State>>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Listen on a free loopback port and forward to `upstream`; panics when it cannot (tests).
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        FaultProxy::bind(upstream).await.expect("fault proxy: no loopback port to listen on")
    }

    /// Listen on a free loopback port and forward to `upstream`.
    pub async fn bind(upstream: SocketAddr) -> std::io::Result<FaultProxy> {
        // A port from the allocator: one taken by the kernel's `:0` could be a port already
        // handed out to a server that has not bound it yet.
        let listener = loop {
            match TcpListener::bind(syncline_embedded_pg::free_addr()?).await {
                Ok(l) => break l,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(e) => return Err(e),
            }
        };
        let addr = listener.local_addr()?;
        let (tx, _) = watch::channel(State { mode: Mode::Pass, cuts: 0 });
        let state = Arc::new(tx);
        let st = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                let rx = st.subscribe();
                if rx.borrow().mode == Mode::Down {
                    drop(client);
                    continue;
                }
                tokio::spawn(connection(client, upstream, rx));
            }
        });
        Ok(FaultProxy { addr, state, accept })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.state.borrow().mode
    }

    /// Forward normally again (held bytes of a blackhole flow on).
    pub fn restore(&self) {
        self.set(Mode::Pass);
    }

    /// Delay every chunk by `d`.
    pub fn latency(&self, d: Duration) {
        self.set(Mode::Latency(d));
    }

    /// Hold all traffic, keeping connections open.
    pub fn blackhole(&self) {
        self.set(Mode::Blackhole);
    }

    /// Cut every open connection and refuse new ones until [`restore`](Self::restore).
    pub fn down(&self) {
        self.state.send_modify(|s| {
            s.mode = Mode::Down;
            s.cuts += 1;
        });
    }

    /// Cut every open connection once; new connections are accepted as before.
    pub fn cut(&self) {
        self.state.send_modify(|s| s.cuts += 1);
    }

    fn set(&self, mode: Mode) {
        self.state.send_modify(|s| s.mode = mode);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.down();
    }
}

async fn connection(client: TcpStream, upstream: SocketAddr, rx: watch::Receiver<State>) {
    let Ok(server) = TcpStream::connect(upstream).await else { return };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let cuts = rx.borrow().cuts;
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    // Each direction stops on its own cut notice; dropping both halves closes the sockets.
    let up = tokio::spawn(pump(cr, sw, rx.clone(), cuts));
    let down = tokio::spawn(pump(sr, cw, rx, cuts));
    let _ = tokio::join!(up, down);
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut rx: watch::Receiver<State>,
    cuts: u64,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r { Ok(0) | Err(_) => return, Ok(n) => n },
            _ = cut_seen(&mut rx, cuts) => return,
        };
        // Hold the chunk while blackholed; deliver it late under latency.
        loop {
            let st = *rx.borrow_and_update();
            if st.cuts != cuts {
                return;
            }
            match st.mode {
                Mode::Pass => break,
                Mode::Latency(d) => {
                    tokio::select! {
                        _ = tokio::time::sleep(d) => break,
                        _ = cut_seen(&mut rx, cuts) => return,
                    }
                }
                Mode::Blackhole | Mode::Down => {
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Resolves once a cut newer than `cuts` happened (or the proxy is gone).
async fn cut_seen(rx: &mut watch::Receiver<State>, cuts: u64) {
    loop {
        if rx.borrow().cuts != cuts {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}
