//! A TCP proxy that misbehaves on command, for fault tests of whatever cityops talks to
//! (ClickHouse over HTTP, a broker): it passes traffic, delays every chunk, stalls (holds
//! every byte with the connections open), loses the answers (the server did the work, the
//! client never hears, and its connection stays open and silent for good, as behind a dead
//! middlebox), cuts every open connection, or cuts requests in the middle (half of a client's
//! chunk reaches the server, then both sides are closed).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const PASS: u8 = 0;
const DELAY: u8 = 1;
const STALL: u8 = 2;
const LOSE_RESPONSES: u8 = 3;

struct Shared {
    mode: AtomicU8,
    delay_ms: AtomicU64,
    /// Client chunks still to cut in the middle.
    cuts_pending: AtomicU64,
    /// Requests cut so far (by [`FaultProxy::cut_mid_request`]).
    cuts_done: AtomicU64,
    /// Bumped by [`FaultProxy::cut_all`]: connections of an older generation close.
    generation: watch::Sender<u64>,
}

/// The proxy; dropped, it stops accepting and every connection closes.
pub struct FaultProxy {
    port: u16,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `127.0.0.1:upstream`, passing.
    pub async fn start(upstream: u16) -> anyhow::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            mode: AtomicU8::new(PASS),
            delay_ms: AtomicU64::new(0),
            cuts_pending: AtomicU64::new(0),
            cuts_done: AtomicU64::new(0),
            generation: watch::channel(0).0,
        });
        let accepting = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let shared = Arc::clone(&accepting);
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await {
                        connection(client, server, shared).await;
                    }
                });
            }
        });
        Ok(FaultProxy { port, shared, task })
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Forwards everything as it comes.
    pub fn pass(&self) {
        self.shared.mode.store(PASS, Ordering::SeqCst);
    }

    /// Holds each chunk `delay` before forwarding it, in both directions.
    pub fn delay(&self, delay: Duration) {
        self.shared
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
        self.shared.mode.store(DELAY, Ordering::SeqCst);
    }

    /// Forwards nothing: connections stay open, bytes wait (a hung server or network).
    pub fn stall(&self) {
        self.shared.mode.store(STALL, Ordering::SeqCst);
    }

    /// Forwards requests but loses every answer: the server acts, the client hears nothing.
    /// A connection that lost an answer stays open and silent for good, also after
    /// [`FaultProxy::pass`] (only new connections work again).
    pub fn lose_responses(&self) {
        self.shared.mode.store(LOSE_RESPONSES, Ordering::SeqCst);
    }

    /// Closes every open connection now; new ones are accepted.
    pub fn cut_all(&self) {
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// Cuts the next `n` client chunks in the middle: half reaches the server, then both
    /// sides of that connection are closed.
    pub fn cut_mid_request(&self, n: u64) {
        self.shared.cuts_pending.fetch_add(n, Ordering::SeqCst);
    }

    /// Requests cut in the middle so far.
    pub fn cuts_done(&self) -> u64 {
        self.shared.cuts_done.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut_all();
    }
}

async fn connection(client: TcpStream, server: TcpStream, shared: Arc<Shared>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut generation = shared.generation.subscribe();
    let born = *generation.borrow_and_update();
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let upstream = pump(client_read, server_write, Arc::clone(&shared), true);
    let downstream = pump(server_read, client_write, Arc::clone(&shared), false);
    let closed = async move {
        let _ = generation.wait_for(|g| *g != born).await;
    };
    tokio::pin!(upstream, downstream, closed);
    // Returning drops both sockets: a cut closes the client's side too.
    tokio::select! {
        cut = &mut upstream => {
            if !cut {
                tokio::select! {
                    _ = &mut downstream => {}
                    () = &mut closed => {}
                }
            }
        }
        _ = &mut downstream => {}
        () = &mut closed => {}
    }
}

/// Copies one direction under the proxy's mode until its source closes; true if it cut the
/// request in the middle.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    shared: Arc<Shared>,
    up: bool,
) -> bool {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut silenced = false;
    loop {
        let n = match from.read(&mut buffer).await {
            // A silenced connection does not pass the server's close on either: the client
            // waits for an answer that never comes (until `cut_all`).
            Ok(0) | Err(_) if silenced => std::future::pending().await,
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        silenced |= !up && shared.mode.load(Ordering::SeqCst) == LOSE_RESPONSES;
        if silenced {
            continue;
        }
        loop {
            match shared.mode.load(Ordering::SeqCst) {
                STALL => tokio::time::sleep(Duration::from_millis(10)).await,
                DELAY => {
                    let ms = shared.delay_ms.load(Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    break;
                }
                _ => break,
            }
        }
        if up
            && n > 1
            && shared
                .cuts_pending
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| c.checked_sub(1))
                .is_ok()
        {
            let _ = to.write_all(&buffer[..n / 2]).await;
            let _ = to.flush().await;
            shared.cuts_done.fetch_add(1, Ordering::SeqCst);
            return true;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
    false
}
