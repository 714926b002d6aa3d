//! A TCP proxy for fault injection: forwards 127.0.0.1:<port> to an upstream, and can
//! `blackhole()` every connection (keep the sockets open but stop forwarding, as a dead NAT
//! entry or a crashed host behind a load balancer does), or `resume()`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct Proxy {
    pub port: u16,
    /// Connections accepted before a blackhole stop forwarding for good; later ones work again
    /// after `resume()`.
    generation: Arc<AtomicU64>,
    blackholed: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let generation = Arc::new(AtomicU64::new(0));
        let blackholed = Arc::new(AtomicBool::new(false));
        let (gen2, hole2) = (Arc::clone(&generation), Arc::clone(&blackholed));
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)).await else {
                    continue;
                };
                let born = gen2.load(Ordering::SeqCst);
                let (g, h) = (Arc::clone(&gen2), Arc::clone(&hole2));
                tokio::spawn(pipe(client, server, born, g, h));
            }
        });
        Self {
            port,
            generation,
            blackholed,
            task,
        }
    }

    /// Stops forwarding on every open connection, without closing any.
    pub fn blackhole(&self) {
        self.blackholed.store(true, Ordering::SeqCst);
    }

    /// New connections work again; the blackholed ones stay dead.
    pub fn resume(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.blackholed.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies both ways; once this connection is blackholed, data is read and dropped, so the peer
/// sees a silent but open socket.
async fn pipe(
    mut client: TcpStream,
    mut server: TcpStream,
    born: u64,
    generation: Arc<AtomicU64>,
    hole: Arc<AtomicBool>,
) {
    let dead = move || hole.load(Ordering::SeqCst) || generation.load(Ordering::SeqCst) != born;
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let mut a = [0u8; 16 * 1024];
    let mut b = [0u8; 16 * 1024];
    loop {
        tokio::select! {
            n = cr.read(&mut a) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if !dead() && sw.write_all(&a[..n]).await.is_err() { return },
            },
            n = sr.read(&mut b) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => if !dead() && cw.write_all(&b[..n]).await.is_err() { return },
            },
        }
    }
}
