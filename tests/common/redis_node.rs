//! One Redis process of a topology test (a cluster node, a master or replica, a sentinel): its
//! own config file and log in the topology's temp dir, a free loopback port, answered before it
//! is handed out, killed on drop (and by the kernel with the test process).
//!
//! Connections made here have connect, read and write timeouts, so that a test never hangs on a
//! node that is paused (a cluster manual failover pauses its master's clients) or killed.

use std::fmt::Write as _;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::die_with_parent;
use super::servers;

/// The password every server of a topology test requires (`requirepass`, and `masterauth` for
/// its replicas), as a Laravel app sets `REDIS_PASSWORD`. Sentinels themselves have none.
pub const PASSWORD: &str = "topology-secret";

/// How long one command may take before the harness gives up on a node.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// What a node runs as: both are the chosen `redis-server` ([`servers::redis`]), a sentinel
/// with `--sentinel` (Redis and Valkey alike; a separate `redis-sentinel` program is only a link
/// to the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    Server,
    Sentinel,
}

/// A running `redis-server` or sentinel.
pub struct RedisNode {
    child: Option<Child>,
    pub port: u16,
    log: PathBuf,
}

impl RedisNode {
    /// Starts `process` with a config file made of `config` plus the port, loopback bind,
    /// working dir and log file, and waits until it answers `PING` (after `AUTH` when
    /// `password` is set). `None` when it exits first, which is how a taken port shows.
    pub fn spawn(
        process: Process,
        dir: &Path,
        port: u16,
        config: &str,
        password: Option<&str>,
    ) -> Option<Self> {
        let node_dir = dir.join(format!("node-{port}"));
        fs::create_dir_all(&node_dir).expect("node dir");
        let log = node_dir.join("redis.log");
        let conf = node_dir.join("redis.conf");
        let mut text = String::new();
        let _ = writeln!(text, "port {port}");
        let _ = writeln!(text, "bind 127.0.0.1");
        let _ = writeln!(text, "dir \"{}\"", node_dir.display());
        let _ = writeln!(text, "logfile \"{}\"", log.display());
        text.push_str(config);
        fs::write(&conf, text).expect("write node config");

        let program = &servers::redis().program;
        let mut command = Command::new(program);
        command.arg(&conf);
        if process == Process::Sentinel {
            command.arg("--sentinel");
        }
        command.stdout(Stdio::null()).stderr(Stdio::null());
        die_with_parent(&mut command);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(_)) = child.try_wait() {
                return None;
            }
            let answers = connect(port, password)
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok();
            if answers {
                return Some(Self {
                    child: Some(child),
                    port,
                    log,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Whether the process still runs (not killed by the test).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops the process at once (SIGKILL): what a crashed or unplugged server looks like.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last lines of the node's own log, for a failure message.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(15);
        format!("{}:\n{}", self.port, lines[from..].join("\n"))
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A connection to the Redis process on loopback `port`, authenticated with `password` when
/// given; every command on it times out after a few seconds.
pub fn connect(port: u16, password: Option<&str>) -> redis::RedisResult<redis::Connection> {
    connect_db(port, password, 0)
}

/// The same, on database `db` (a server's cache database, as Laravel's `REDIS_CACHE_DB`).
pub fn connect_db(
    port: u16,
    password: Option<&str>,
    db: u32,
) -> redis::RedisResult<redis::Connection> {
    let url = match password {
        Some(password) => format!("redis://:{password}@127.0.0.1:{port}/{db}"),
        None => format!("redis://127.0.0.1:{port}/{db}"),
    };
    let conn = redis::Client::open(url)?.get_connection_with_timeout(IO_TIMEOUT)?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(conn)
}

/// A loopback port nobody listens on.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A loopback port that is free together with its cluster bus port (port + 10000).
pub fn free_port_with_bus() -> u16 {
    for _ in 0..200 {
        let port = fastrand::u16(20_000..=55_000);
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
    panic!("no free loopback port pair (port and port + 10000) found");
}

/// Polls `check` every 100 ms until it is true; fails the test after `timeout`, with `detail()`
/// (say, the nodes' logs) in the message.
pub fn wait_for(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> bool,
    detail: impl Fn() -> String,
) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}\n{}",
            detail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Subscriptions to `__keyevent@<db>__:expired` on several nodes at once, each on its own
/// thread, recording which node published which key: what a test needs to see where Redis
/// publishes an expiry. A subscription the server drops is not renewed (start a new watch
/// after a change that drops clients). Stopped on drop.
pub struct ExpiredWatch {
    seen: Arc<Mutex<Vec<(u16, String)>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl ExpiredWatch {
    /// Subscribes on every port of `ports` (authenticated with `password`); returns once every
    /// subscription is in place.
    pub fn start(ports: &[u16], password: Option<&str>, db: u32) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let threads = ports
            .iter()
            .map(|&port| {
                let (seen, stop, ready) = (seen.clone(), stop.clone(), ready_tx.clone());
                let password = password.map(str::to_string);
                std::thread::spawn(move || {
                    let mut conn = match connect(port, password.as_deref()) {
                        Ok(conn) => conn,
                        Err(e) => return drop(ready.send(Err(format!("{port}: {e}")))),
                    };
                    let mut pubsub = conn.as_pubsub();
                    if let Err(e) = pubsub.subscribe(format!("__keyevent@{db}__:expired")) {
                        return drop(ready.send(Err(format!("{port}: {e}"))));
                    }
                    let _ = pubsub.set_read_timeout(Some(Duration::from_millis(100)));
                    let _ = ready.send(Ok(()));
                    while !stop.load(Ordering::Relaxed) {
                        match pubsub.get_message() {
                            Ok(message) => {
                                if let Ok(key) = message.get_payload::<String>() {
                                    seen.lock().expect("seen").push((port, key));
                                }
                            }
                            Err(e) if e.is_timeout() => {}
                            // Disconnected (sentinels cut the pub/sub clients of the servers they
                            // reconfigure): this subscription is over; start a new watch.
                            Err(_) => return,
                        }
                    }
                })
            })
            .collect();
        for _ in ports {
            match ready_rx.recv_timeout(Duration::from_secs(15)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("cannot subscribe to expired events on {e}"),
                Err(e) => panic!("a subscription to expired events did not start: {e}"),
            }
        }
        Self {
            seen,
            stop,
            threads,
        }
    }

    /// Which nodes published `key` expired so far.
    pub fn publishers_of(&self, key: &str) -> Vec<u16> {
        self.seen
            .lock()
            .expect("seen")
            .iter()
            .filter(|(_, k)| k == key)
            .map(|(port, _)| *port)
            .collect()
    }

    /// Waits until some node publishes `key` expired, then a little longer for any other node
    /// that would also publish it; returns every publisher.
    pub fn wait_for(&self, key: &str, timeout: Duration) -> Vec<u16> {
        wait_for(
            timeout,
            &format!("an expired event for {key}"),
            || !self.publishers_of(key).is_empty(),
            || format!("seen so far: {:?}", self.seen.lock().map(|s| s.clone())),
        );
        std::thread::sleep(Duration::from_millis(500));
        self.publishers_of(key)
    }
}

impl Drop for ExpiredWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
