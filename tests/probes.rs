//! The endpoint's probes cannot be locked out: with 16 keep-alive clients asking `/healthz`
//! every 3 s, 100 idle connections and 10 clients sending their headers a byte a second, every
//! probe (a fresh connection, 2 s to answer, as the shipped Kubernetes manifest's) is answered,
//! and the idle connections are closed within the header timeout. Prints one JSON line with what
//! it measured.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{App, RedisServer, TestDb};

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET path` on a fresh connection, everything within [`PROBE_TIMEOUT`]: the status code, or
/// `None` when it did not come in time.
fn probe(addr: SocketAddr, path: &str) -> Option<u16> {
    let start = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).ok()?;
    let left = PROBE_TIMEOUT.checked_sub(start.elapsed())?;
    stream.set_read_timeout(Some(left)).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = PROBE_TIMEOUT.checked_sub(start.elapsed())?;
        stream.set_read_timeout(Some(left)).ok()?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
        if answer.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let head = String::from_utf8_lossy(&answer);
    head.split(' ').nth(1)?.parse().ok()
}

/// A client that keeps its connection and asks `/healthz` on it every 3 s, reconnecting when
/// the server closes it, until `stop`.
fn keep_alive_client(addr: SocketAddr, stop: Arc<AtomicBool>, answered: Arc<AtomicUsize>) {
    let mut conn: Option<TcpStream> = None;
    while !stop.load(Ordering::Relaxed) {
        if conn.is_none() {
            conn = TcpStream::connect(addr).ok();
        }
        if let Some(stream) = conn.as_mut() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
            let sent = write!(
                stream,
                "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: keep-alive\r\n\r\n"
            );
            let mut buf = [0u8; 1024];
            match (sent, stream.read(&mut buf)) {
                (Ok(()), Ok(n)) if n > 0 => {
                    answered.fetch_add(1, Ordering::Relaxed);
                }
                _ => conn = None,
            }
        }
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A client that sends a request's headers one byte a second, until `stop`.
fn slow_client(addr: SocketAddr, stop: Arc<AtomicBool>) {
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nX-Slow: {}\r\n\r\n",
        "s".repeat(64)
    );
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut stream) = TcpStream::connect(addr) else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        for byte in request.as_bytes() {
            if stop.load(Ordering::Relaxed) || stream.write_all(&[*byte]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// Whether the server closed `stream` (a read sees the end, or a reset).
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(10)));
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn probes_are_answered_whatever_other_clients_hold() {
    let redis = RedisServer::start();
    let db = TestDb::create().await;
    let app = App::new(&redis, &db, "ORDER_EXPIRE_METRICS_ADDR=127.0.0.1:0");
    let mut worker = app.start_worker(&[]);
    let addr: SocketAddr = worker.metrics_addr().parse().expect("an address");
    common::wait_until(Duration::from_secs(20), "the worker ready", || async {
        probe(addr, "/readyz") == Some(200)
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let keep_alive_answers = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..16 {
        let (stop, answered) = (Arc::clone(&stop), Arc::clone(&keep_alive_answers));
        clients.push(std::thread::spawn(move || {
            keep_alive_client(addr, stop, answered)
        }));
    }
    for _ in 0..10 {
        let stop = Arc::clone(&stop);
        clients.push(std::thread::spawn(move || slow_client(addr, stop)));
    }
    std::thread::sleep(Duration::from_millis(500));
    let opened = Instant::now();
    let mut idle: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(addr).expect("an idle connection"))
        .collect();

    let mut answered = 0;
    let mut slowest = Duration::ZERO;
    let probes = 20;
    for i in 0..probes {
        let path = if i % 2 == 0 { "/healthz" } else { "/readyz" };
        let start = Instant::now();
        if probe(addr, path) == Some(200) {
            answered += 1;
            slowest = slowest.max(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let idle_closed = idle.iter_mut().map(closed_by_server).filter(|c| *c).count();
    let idle_held_for = opened.elapsed();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.join();
    }
    drop(idle);
    worker.stop(Duration::from_secs(20));
    println!(
        "{}",
        serde_json::json!({
            "test": "probes_under_connection_pressure",
            "probes": probes,
            "answered": answered,
            "slowest_probe_ms": slowest.as_millis(),
            "keep_alive_clients": 16,
            "keep_alive_answers": keep_alive_answers.load(Ordering::Relaxed),
            "slow_clients": 10,
            "idle_connections": 100,
            "idle_closed_by_server": idle_closed,
            "idle_checked_after_ms": idle_held_for.as_millis(),
        })
    );
    assert_eq!(answered, probes, "every probe answered within 2 s");
    assert_eq!(idle_closed, 100, "the idle connections are closed");
}
