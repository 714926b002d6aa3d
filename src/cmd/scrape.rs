//! A worker's own view, read from its HTTP endpoint (`--metrics-addr`): `/readyz`, and from
//! `/metrics` the lateness histogram's p99 and the queue depth.
//!
//! Bounded as a probe must be: the connect, and the whole exchange, each within a few seconds;
//! an answer of at most [`MAX_BODY`] bytes; one request per connection. The exposition is the
//! one `crate::stats` writes (Prometheus text format 0.0.4), read only as far as these two
//! series need.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::HOST;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How long the TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one request, its answer included, may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer read (the worker's `/metrics` is a few KiB).
const MAX_BODY: usize = 1024 * 1024;
/// The longest reason of a `/readyz` answer kept, in characters.
const MAX_REASON: usize = 300;

/// The lateness histogram's series and the queue depth's, as `crate::stats` names them.
const LATENESS_BUCKET: &str = "order_expire_lateness_seconds_bucket";
const QUEUE_DEPTH: &str = "order_expire_queue_depth";

/// What one worker's endpoint said.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WorkerView {
    /// `Ok` when `/readyz` answered 200, else its reason.
    pub(crate) ready: Result<(), String>,
    /// The 99th percentile of the lateness since the worker started, as Prometheus's
    /// `histogram_quantile` computes it; `None` before the first cancellation.
    pub(crate) lateness_p99: Option<Quantile>,
    /// The orders the histogram counts.
    pub(crate) lateness_count: u64,
    /// Expired orders waiting for a writer.
    pub(crate) queue_depth: Option<f64>,
}

/// Where a worker listening on `addr` is reached from this machine: an address of every
/// interface (`0.0.0.0`, `::`) on the loopback.
pub(crate) fn reachable(addr: SocketAddr) -> SocketAddr {
    if !addr.ip().is_unspecified() {
        return addr;
    }
    let loopback = if addr.is_ipv4() {
        Ipv4Addr::LOCALHOST.into()
    } else {
        Ipv6Addr::LOCALHOST.into()
    };
    SocketAddr::new(loopback, addr.port())
}

/// Reads `/readyz` and `/metrics` from the endpoint at `addr` (`host:port`).
pub(crate) async fn read(addr: &str) -> Result<WorkerView, String> {
    let (status, reason) = get(addr, "/readyz").await?;
    let ready = if status == StatusCode::OK {
        Ok(())
    } else {
        let reason = crate::logging::one_line(&reason);
        Err(reason.chars().take(MAX_REASON).collect())
    };
    let (status, text) = get(addr, "/metrics").await?;
    if status != StatusCode::OK {
        return Err(format!("GET /metrics answered {status}"));
    }
    let buckets = lateness_buckets(&text);
    Ok(WorkerView {
        ready,
        lateness_p99: quantile(0.99, &buckets),
        lateness_count: buckets.last().map_or(0, |(_, n)| *n as u64),
        queue_depth: sample(&text, QUEUE_DEPTH),
    })
}

/// `GET path` on a connection of its own: the status and the body, within the bounds above.
async fn get(addr: &str, path: &str) -> Result<(StatusCode, String), String> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(format!("cannot connect: {e}")),
        Err(_) => {
            return Err(format!(
                "no connection within {} s",
                CONNECT_TIMEOUT.as_secs()
            ));
        }
    };
    let exchange = async {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let driver = tokio::spawn(connection);
        let request = Request::get(path)
            .header(HOST, addr)
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("GET {path}: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("GET {path}: {e}"));
        let result = match response {
            Ok(response) => {
                let status = response.status();
                Limited::new(response.into_body(), MAX_BODY)
                    .collect()
                    .await
                    .map(|body| (status, body.to_bytes()))
                    .map_err(|e| format!("GET {path}: reading the answer: {e}"))
            }
            Err(e) => Err(e),
        };
        driver.abort();
        let (status, body) = result?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "GET {path}: no answer within {} s",
                EXCHANGE_TIMEOUT.as_secs()
            ))
        })
}

/// The samples of the exposition `text`: each line's series (name and labels) and value;
/// comments and lines that are not a sample are left out.
fn samples(text: &str) -> impl Iterator<Item = (&str, f64)> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.trim_end().rsplit_once(' ')?;
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().ok()?,
            };
            Some((series, value))
        })
}

/// The value of the series named exactly `name` (no labels).
fn sample(text: &str, name: &str) -> Option<f64> {
    samples(text)
        .find(|(series, _)| *series == name)
        .map(|(_, v)| v)
}

/// The lateness histogram's cumulative buckets, `(le, count)`, by upper bound.
fn lateness_buckets(text: &str) -> Vec<(f64, f64)> {
    let mut buckets: Vec<(f64, f64)> = samples(text)
        .filter_map(|(series, count)| {
            let labels = series.strip_prefix(LATENESS_BUCKET)?.strip_prefix('{')?;
            let le = labels.split_once("le=\"")?.1.split_once('"')?.0;
            let le = match le {
                "+Inf" => f64::INFINITY,
                bound => bound.parse().ok()?,
            };
            Some((le, count))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

/// A quantile of a histogram, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Quantile {
    pub(crate) seconds: f64,
    /// It lies beyond the last finite bucket: `seconds` is that bucket's bound, a floor.
    pub(crate) beyond: bool,
}

/// The `q` quantile of cumulative `buckets` (sorted by bound, the last one `+Inf`) as
/// Prometheus's `histogram_quantile` computes it: linear within the bucket that holds the
/// rank, from 0 in the first one; beyond the last finite bound, that bound. `None` when the
/// histogram is empty.
fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<Quantile> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (bound, count) in buckets {
        if *count >= rank && bound.is_finite() {
            let within = (rank - below) / (count - below);
            return Some(Quantile {
                seconds: lower + (bound - lower) * within,
                beyond: false,
            });
        }
        if bound.is_infinite() {
            break;
        }
        (lower, below) = (*bound, *count);
    }
    Some(Quantile {
        seconds: lower,
        beyond: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = "# HELP order_expire_lateness_seconds Seconds late.\n\
        # TYPE order_expire_lateness_seconds histogram\n\
        order_expire_lateness_seconds_sum 12.5\n\
        order_expire_lateness_seconds_count 100\n\
        order_expire_lateness_seconds_bucket{le=\"0.1\"} 50\n\
        order_expire_lateness_seconds_bucket{le=\"0.25\"} 90\n\
        order_expire_lateness_seconds_bucket{le=\"1.0\"} 100\n\
        order_expire_lateness_seconds_bucket{le=\"+Inf\"} 100\n\
        # TYPE order_expire_queue_depth gauge\n\
        order_expire_queue_depth 7\n";

    #[test]
    fn the_p99_is_interpolated_within_its_bucket() {
        let buckets = lateness_buckets(EXPOSITION);
        assert_eq!(buckets.len(), 4);
        // Rank 99 of 100 lies in (0.25, 1.0], nine tenths of the way.
        let p99 = quantile(0.99, &buckets).expect("a p99");
        assert!((p99.seconds - 0.925).abs() < 1e-9 && !p99.beyond, "{p99:?}");
        let p50 = quantile(0.5, &buckets).expect("a p50");
        assert!((p50.seconds - 0.1).abs() < 1e-9, "{p50:?}");
        assert_eq!(sample(EXPOSITION, QUEUE_DEPTH), Some(7.0));
    }

    #[test]
    fn an_empty_or_overflowing_histogram_says_so() {
        assert_eq!(quantile(0.99, &[(0.1, 0.0), (f64::INFINITY, 0.0)]), None);
        assert_eq!(quantile(0.99, &[]), None);
        assert_eq!(
            quantile(0.99, &[(0.1, 1.0), (f64::INFINITY, 10.0)]),
            Some(Quantile {
                seconds: 0.1,
                beyond: true
            })
        );
    }
}
