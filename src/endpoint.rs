//! The HTTP endpoint (`--metrics-addr`, `ORDER_EXPIRE_METRICS_ADDR`): three GET paths for
//! Prometheus and for probes.
//!
//! * `/metrics`: every metric in Prometheus text format 0.0.4 ([`crate::stats`]);
//! * `/healthz`: 200 `ok` while the worker's loops run and move, else 503 with which do not;
//! * `/readyz`: 200 `ready` while every Redis node the worker must hear is subscribed and MySQL
//!   answers, else 503 with the reason. Both reasons are one line.
//!
//! hyper parses the requests. The endpoint is for a scraper and a prober on a private network,
//! and is bounded like one, in a way no client can use to lock the probes out: every connection
//! is accepted at once; one request per connection (`Connection: close`), its headers within
//! 2 s and 16 KiB, the whole connection within 5 s; at most 64 connections, and when a new one
//! would be the 65th, the oldest that has not sent its request yet (else the oldest) is closed.
//! A probe's request arrives right after its connection, so idle, slow or keep-alive clients
//! cannot keep it waiting; answering takes no server round trip (the health is kept in memory).
//! Whatever the path or method, nothing is written anywhere.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::logging::one_line;
use crate::stats::{self, Stats};

/// Connections open at once; a new one past that closes the oldest idle one.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send a request's headers.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest a connection is kept, its one request and answer included.
pub(crate) const CONNECTION_LIFETIME: Duration = Duration::from_secs(5);
/// The largest request head read (hyper's minimum is 8 KiB).
const MAX_REQUEST: usize = 16 * 1024;

/// An open connection, as the accept loop sees it.
struct Open {
    /// Closes it.
    close: CancellationToken,
    /// Its request has arrived: it is being answered, not idle.
    answering: Arc<AtomicBool>,
}

/// The open connections by the order they were accepted in.
#[derive(Default)]
struct Connections {
    open: Mutex<BTreeMap<u64, Open>>,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Open>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes room for one more: closes the oldest connection that has not sent its request (or
    /// the oldest of all) while [`MAX_CONNECTIONS`] are open.
    fn make_room(&self) {
        let mut open = self.lock();
        while open.len() >= MAX_CONNECTIONS {
            let victim = open
                .iter()
                .find(|(_, c)| !c.answering.load(Ordering::Relaxed))
                .or_else(|| open.iter().next())
                .map(|(seq, _)| *seq);
            let Some(seq) = victim else { break };
            if let Some(closed) = open.remove(&seq) {
                closed.close.cancel();
            }
        }
    }
}

/// Removes a connection from [`Connections`] when its task ends, however it ends.
struct Registered {
    connections: Arc<Connections>,
    seq: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.connections.lock().remove(&self.seq);
    }
}

/// The endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The address is taken, or not one of this machine's.
    #[error(
        "cannot listen on {addr} for /metrics, /healthz and /readyz: {cause}; set --metrics-addr (ORDER_EXPIRE_METRICS_ADDR) to a free port of this machine, or leave it unset"
    )]
    Bind { addr: SocketAddr, cause: String },
}

/// A bound endpoint, not yet serving.
pub(crate) struct Endpoint {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Endpoint {
    /// Binds `addr` (port 0: a free port); fails at once when the port is taken.
    pub(crate) async fn bind(addr: SocketAddr) -> Result<Self, EndpointError> {
        let bind_error = |e: std::io::Error| EndpointError::Bind {
            addr,
            cause: e.to_string(),
        };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        Ok(Self { listener, addr })
    }

    /// Serves `stats` until the task is dropped.
    pub(crate) async fn serve(self, stats: Arc<Stats>) {
        tracing::info!(event = "metrics_listening", addr = %self.addr,
            "serving /metrics, /healthz and /readyz");
        let connections = Arc::new(Connections::default());
        let mut seq: u64 = 0;
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    tracing::debug!(error = %e, "accepting a connection to the metrics endpoint");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            connections.make_room();
            seq += 1;
            let close = CancellationToken::new();
            let answering = Arc::new(AtomicBool::new(false));
            connections.lock().insert(
                seq,
                Open {
                    close: close.clone(),
                    answering: Arc::clone(&answering),
                },
            );
            let registered = Registered {
                connections: Arc::clone(&connections),
                seq,
            };
            tokio::spawn(serve_one(
                stream,
                Arc::clone(&stats),
                close,
                answering,
                registered,
            ));
        }
    }
}

/// Answers the one request of a connection, within [`CONNECTION_LIFETIME`] or until `close`.
async fn serve_one(
    stream: TcpStream,
    stats: Arc<Stats>,
    close: CancellationToken,
    answering: Arc<AtomicBool>,
    _registered: Registered,
) {
    let service = hyper::service::service_fn(move |request| {
        answering.store(true, Ordering::Relaxed);
        let response = respond(&stats, &request);
        async move { Ok::<_, Infallible>(response) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .keep_alive(false)
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_REQUEST)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        done = tokio::time::timeout(CONNECTION_LIFETIME, connection) => {
            if let Ok(Err(e)) = done {
                tracing::debug!(error = %e, "metrics endpoint connection");
            }
        }
        () = close.cancelled() => {}
    }
}

/// The answer to one request.
fn respond<B>(stats: &Stats, request: &Request<B>) -> Response<Full<Bytes>> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are served".into(),
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match request.uri().path() {
        "/metrics" => {
            let mut response = Response::new(Full::new(Bytes::from(stats.encode())));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(stats::CONTENT_TYPE));
            response
        }
        "/healthz" => probe(stats.health.liveness(), "ok"),
        "/readyz" => probe(stats.health.readiness(), "ready"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: the paths are /metrics, /healthz and /readyz".into(),
        ),
    }
}

/// 200 with `fine`, or 503 with the reason, each one line.
fn probe(result: Result<(), String>, fine: &str) -> Response<Full<Bytes>> {
    match result {
        Ok(()) => text(StatusCode::OK, fine.into()),
        Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, one_line(&reason)),
    }
}

fn text(status: StatusCode, line: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(line + "\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
