//! A fault-injecting TCP proxy for tests: forwards to a target and can reset every open connection, refuse all
//! connections for a while (a network cut), or delay traffic.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy; clones control the same one.
#[derive(Clone)]
pub struct FaultProxy {
    /// `host:port` to point the client at instead of the target.
    pub addr: String,
    down: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
    /// Bumped to close every open connection.
    reset: watch::Sender<u64>,
    /// Connections accepted and forwarded so far.
    pub connections: Arc<AtomicU64>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards each connection to `target` (`host:port`).
    pub async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (reset, _) = watch::channel(0u64);
        let p = FaultProxy { addr, down: Arc::default(), delay_ms: Arc::default(), reset, connections: Arc::default() };
        let q = p.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { return };
                if q.down.load(SeqCst) {
                    drop(client); // refused: closed at once
                    continue;
                }
                q.connections.fetch_add(1, SeqCst);
                let Ok(server) = TcpStream::connect(&target).await else { continue };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                for (mut from, mut to) in [
                    (
                        Box::new(cr) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                        Box::new(sw) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
                    ),
                    (Box::new(sr), Box::new(cw)),
                ] {
                    let (mut reset, delay) = (q.reset.subscribe(), q.delay_ms.clone());
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 32 * 1024];
                        loop {
                            let n = tokio::select! {
                                r = from.read(&mut buf) => match r { Ok(0) | Err(_) => return, Ok(n) => n },
                                _ = reset.changed() => return,
                            };
                            let d = delay.load(SeqCst);
                            if d > 0 {
                                tokio::time::sleep(Duration::from_millis(d)).await;
                            }
                            if to.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
        p
    }

    /// Closes every open connection (a reset mid-stream).
    pub fn reset_all(&self) {
        self.reset.send_modify(|v| *v += 1);
    }

    /// Cuts the network: open connections close and new ones are refused until [`FaultProxy::restore`].
    pub fn cut(&self) {
        self.down.store(true, SeqCst);
        self.reset_all();
    }

    /// Ends a [`FaultProxy::cut`]: new connections are forwarded again.
    pub fn restore(&self) {
        self.down.store(false, SeqCst);
    }

    /// Holds every chunk of traffic, both ways, for `d` before forwarding it (`Duration::ZERO` ends it).
    pub fn delay(&self, d: Duration) {
        self.delay_ms.store(d.as_millis() as u64, SeqCst);
    }
}
