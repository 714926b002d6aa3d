//! A fault-injecting TCP proxy of our own: put it between the worker and Redis, or the worker
//! and MySQL (point the app's `REDIS_PORT` / `DB_PORT` at [`FaultProxy::port`]), and change
//! what the network does while a test runs:
//!
//! * [`FaultProxy::delay`]: every chunk waits before it is forwarded, in one direction or both;
//! * [`FaultProxy::blackhole`]: one direction's data is read and thrown away, the sockets stay
//!   open (a dead NAT entry, a one-way partition); both directions, and no close passed on
//!   either: [`FaultProxy::cut_off`] (a partition, a host that died);
//! * [`FaultProxy::swallow_reply_to`]: the next request holding a pattern (a `COMMIT`) is
//!   forwarded, its reply is thrown away, and that connection goes silent with both sockets
//!   open; [`FaultProxy::swallow_request`]: the request itself never arrives;
//! * [`FaultProxy::drop_all`] closes every open connection (FIN), [`FaultProxy::reset_all`]
//!   resets them (RST);
//! * [`FaultProxy::heal`] takes every standing fault away (connections already silenced by a
//!   swallow stay silent, as a lost packet stays lost).
//!
//! It runs on a thread and a runtime of its own, so a test that blocks its own thread (a
//! `std::thread::sleep`, a synchronous Redis call) never stalls the traffic it relays; it stops,
//! with every connection it holds, when dropped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

/// Which way data flows through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client (the worker) to the server.
    ToServer,
    /// From the server back to the client.
    ToClient,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Self::ToServer => 0,
            Self::ToClient => 1,
        }
    }
}

/// What a swallow throws away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Swallow {
    Request,
    Reply,
}

/// The standing faults.
#[derive(Default)]
struct Faults {
    delay: [Duration; 2],
    blackhole: [bool; 2],
    /// A partition: besides both blackholes, a side that closes is not closed on the other
    /// side either (as when the host behind it dies).
    cut: bool,
    /// Armed once: the pattern a request must hold, and what is thrown away.
    swallow: Option<(Vec<u8>, Swallow)>,
    /// Armed once: the pattern a request must hold, and what to run when it passes.
    hook: Option<(Vec<u8>, Hook)>,
}

/// What a test runs when a request passes the proxy (a signal to the worker that sent it).
type Hook = Box<dyn FnOnce() + Send>;

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("delay", &self.delay)
            .field("blackhole", &self.blackhole)
            .field("cut", &self.cut)
            .field("swallow", &self.swallow)
            .field("hook", &self.hook.as_ref().map(|(p, _)| p))
            .finish()
    }
}

/// How a connection is ended from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kill {
    Keep,
    Close,
    Reset,
}

/// One relayed connection, as its two directions share it.
#[derive(Debug, Default)]
struct Conn {
    /// Nothing is forwarded any more either way, and neither socket is closed by the proxy.
    silent: AtomicBool,
    /// The reply to the swallowed request is thrown away, and the connection silenced then.
    reply_swallowed: AtomicBool,
}

#[derive(Debug, Default)]
struct Control {
    faults: Mutex<Faults>,
    conns: Mutex<Vec<(u64, watch::Sender<Kill>)>>,
    next_id: AtomicU64,
    accepted: AtomicU64,
    swallowed: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Control {
    /// What to do with `chunk` going `direction` on `conn`: how long to wait first, and
    /// whether to forward it.
    fn decide(&self, direction: Direction, conn: &Conn, chunk: &[u8]) -> (Duration, bool) {
        let mut faults = lock(&self.faults);
        let delay = faults.delay[direction.index()];
        if conn.silent.load(Ordering::SeqCst) {
            return (delay, false);
        }
        if direction == Direction::ToClient && conn.reply_swallowed.load(Ordering::SeqCst) {
            conn.silent.store(true, Ordering::SeqCst);
            return (delay, false);
        }
        if direction == Direction::ToServer
            && let Some((pattern, _)) = &faults.hook
            && contains(chunk, pattern)
            && let Some((_, hook)) = faults.hook.take()
        {
            hook();
        }
        if direction == Direction::ToServer
            && let Some((pattern, _)) = &faults.swallow
            && contains(chunk, pattern)
        {
            let (_, what) = faults.swallow.take().expect("armed");
            self.swallowed.fetch_add(1, Ordering::SeqCst);
            match what {
                Swallow::Request => {
                    conn.silent.store(true, Ordering::SeqCst);
                    return (delay, false);
                }
                Swallow::Reply => {
                    conn.reply_swallowed.store(true, Ordering::SeqCst);
                    return (delay, !faults.blackhole[direction.index()]);
                }
            }
        }
        (delay, !faults.blackhole[direction.index()])
    }

    fn kill_all(&self, kill: Kill) {
        for (_, sender) in lock(&self.conns).iter() {
            let _ = sender.send(kill);
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// MySQL's `COMMIT` as a client sends it (a `COM_QUERY` packet, the first of its command),
/// for [`FaultProxy::swallow_request`] and its kin: the text alone would also match
/// `SET TRANSACTION ISOLATION LEVEL READ COMMITTED`.
pub const MYSQL_COMMIT: &[u8] = b"\x07\x00\x00\x00\x03COMMIT";

/// PostgreSQL's `COMMIT` as tokio-postgres sends it (a simple Query message: `Q`, its length,
/// the text and its NUL): the text alone would also match `BEGIN ISOLATION LEVEL READ
/// COMMITTED`.
pub const PG_COMMIT: &[u8] = b"Q\x00\x00\x00\x0bCOMMIT\x00";

/// The proxy; see the module doc.
pub struct FaultProxy {
    /// The loopback port it listens on.
    pub port: u16,
    control: Arc<Control>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// A proxy on a free loopback port to `127.0.0.1:upstream_port`.
    pub fn start(upstream_port: u16) -> Self {
        Self::start_to(SocketAddr::from(([127, 0, 0, 1], upstream_port)))
    }

    /// A proxy on a free loopback port to `upstream`.
    pub fn start_to(upstream: SocketAddr) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let port = listener.local_addr().expect("proxy address").port();
        let control = Arc::new(Control::default());
        let (stop, stopped) = oneshot::channel();
        let serving = Arc::clone(&control);
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{port}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the fault proxy's runtime");
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("tokio listener");
                    tokio::select! {
                        () = accept(listener, upstream, serving) => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime drops every connection task, and their sockets.
            })
            .expect("the fault proxy's thread");
        Self {
            port,
            control,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Every chunk going `direction` (both when `None`) waits `delay` before it is forwarded;
    /// `Duration::ZERO` takes the delay away.
    pub fn delay(&self, direction: Option<Direction>, delay: Duration) {
        let mut faults = lock(&self.control.faults);
        for d in [Direction::ToServer, Direction::ToClient] {
            if direction.is_none_or(|only| only == d) {
                faults.delay[d.index()] = delay;
            }
        }
    }

    /// Data going `direction` is read and thrown away, on open and new connections alike;
    /// the sockets stay open.
    pub fn blackhole(&self, direction: Direction) {
        lock(&self.control.faults).blackhole[direction.index()] = true;
    }

    /// Both directions blackholed, and a side that closes its socket is not closed on the
    /// other side: a network partition, or a host that died, behind which nothing closes.
    pub fn cut_off(&self) {
        let mut faults = lock(&self.control.faults);
        faults.blackhole = [true, true];
        faults.cut = true;
    }

    /// The next request (client to server) holding `pattern` is forwarded; its reply is thrown
    /// away and that connection goes silent, both sockets left open (the worker's `COMMIT` done
    /// by the server, its OK lost).
    pub fn swallow_reply_to(&self, pattern: &[u8]) {
        lock(&self.control.faults).swallow = Some((pattern.to_vec(), Swallow::Reply));
    }

    /// The next request holding `pattern` never arrives; that connection goes silent, both
    /// sockets left open (the server keeps waiting for the rest of the transaction).
    pub fn swallow_request(&self, pattern: &[u8]) {
        lock(&self.control.faults).swallow = Some((pattern.to_vec(), Swallow::Request));
    }

    /// Runs `hook` (once) when the next request holding `pattern` passes, before that request
    /// is forwarded or swallowed: a test freezes the worker that sent it, say.
    pub fn on_request(&self, pattern: &[u8], hook: impl FnOnce() + Send + 'static) {
        lock(&self.control.faults).hook = Some((pattern.to_vec(), Box::new(hook)));
    }

    /// How many swallows have happened.
    pub fn swallowed(&self) -> u64 {
        self.control.swallowed.load(Ordering::SeqCst)
    }

    /// How many connections were accepted so far.
    pub fn accepted(&self) -> u64 {
        self.control.accepted.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        lock(&self.control.conns).len()
    }

    /// Closes every open connection, both sides (FIN).
    pub fn drop_all(&self) {
        self.control.kill_all(Kill::Close);
    }

    /// Resets every open connection, both sides (RST).
    pub fn reset_all(&self) {
        self.control.kill_all(Kill::Reset);
    }

    /// Takes every standing fault away (delays, blackholes, an armed swallow).
    pub fn heal(&self) {
        *lock(&self.control.faults) = Faults::default();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept(listener: TcpListener, upstream: SocketAddr, control: Arc<Control>) {
    while let Ok((client, _)) = listener.accept().await {
        control.accepted.fetch_add(1, Ordering::SeqCst);
        let control = Arc::clone(&control);
        tokio::spawn(async move {
            let connect = TcpStream::connect(upstream);
            let Ok(Ok(server)) = tokio::time::timeout(Duration::from_secs(10), connect).await
            else {
                return;
            };
            let id = control.next_id.fetch_add(1, Ordering::SeqCst);
            let (kill, killed) = watch::channel(Kill::Keep);
            lock(&control.conns).push((id, kill));
            relay(client, server, &control, killed).await;
            lock(&control.conns).retain(|(other, _)| *other != id);
        });
    }
}

/// Relays one connection both ways until either side closes (a silenced connection keeps the
/// other side open) or it is killed.
async fn relay(
    mut client: TcpStream,
    mut server: TcpStream,
    control: &Control,
    mut killed: watch::Receiver<Kill>,
) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let conn = Conn::default();
    let kill = {
        let (cr, cw) = client.split();
        let (sr, sw) = server.split();
        tokio::select! {
            () = forward(cr, sw, Direction::ToServer, &conn, control) => Kill::Close,
            () = forward(sr, cw, Direction::ToClient, &conn, control) => Kill::Close,
            kill = killed.wait_for(|k| *k != Kill::Keep) => kill.map(|k| *k).unwrap_or(Kill::Close),
        }
    };
    if kill == Kill::Reset {
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
}

async fn forward<R, W>(mut from: R, mut to: W, direction: Direction, conn: &Conn, control: &Control)
where
    R: AsyncReadExt + Unpin,
    W: AsyncWriteExt + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let (delay, forward) = control.decide(direction, conn, &buf[..n]);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if forward && to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    // A silenced connection is not closed on the other side: the peer keeps its socket open
    // and hears nothing, as behind a lost packet.
    if conn.silent.load(Ordering::SeqCst) || lock(&control.faults).cut {
        conn.silent.store(true, Ordering::SeqCst);
        std::future::pending::<()>().await;
    }
}
