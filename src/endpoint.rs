//! The HTTP endpoint (`--metrics-addr`, `ORDER_EXPIRE_METRICS_ADDR`): three GET paths for
//! Prometheus and for probes.
//!
//! * `/metrics`: every metric in Prometheus text format 0.0.4 ([`crate::stats`]);
//! * `/healthz`: 200 `ok` while the worker's loops run and move, else 503 with which do not;
//! * `/readyz`: 200 `ready` while every Redis node the worker must hear is subscribed and MySQL
//!   answers, else 503 with the reason. Both reasons are one line.
//!
//! hyper parses the requests. The endpoint is for a scraper and a prober on a private network,
//! and is bounded like one: a few connections at a time, headers within 5 s and 16 KiB, a
//! connection at most a minute. Whatever the path or method, nothing is written anywhere.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::logging::one_line;
use crate::stats::{self, Stats};

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 16;
/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a connection is kept, however many requests it carries.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// The largest request head read (hyper's minimum is 8 KiB).
const MAX_REQUEST: usize = 16 * 1024;

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
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    tracing::debug!(error = %e, "accepting a connection to the metrics endpoint");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let stats = Arc::clone(&stats);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let response = respond(&stats, &request);
                    async move { Ok::<_, Infallible>(response) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .max_buf_size(MAX_REQUEST)
                    .serve_connection(TokioIo::new(stream), service);
                if let Ok(Err(e)) = tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
                    tracing::debug!(error = %e, "metrics endpoint connection");
                }
                drop(permit);
            });
        }
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
