//! The command line: the full run (`cargo bench --bench burst`, which passes `--bench`), the
//! smoke run (without `--bench`, as `cargo test --all-targets` runs it, or `--smoke`), and the
//! options that narrow either.

/// What a run measures and where it writes.
#[derive(Debug, Clone)]
pub struct Options {
    pub smoke: bool,
    /// Burst sizes, each through the floor and every worker count.
    pub sizes: Vec<usize>,
    /// Worker counts (replicas started with the same `.env`).
    pub workers: Vec<usize>,
    /// The worker's connections, which the floor client uses too.
    pub connections: usize,
    pub steady_seconds: u64,
    /// Other keys with a TTL in the cache database for the lateness section.
    pub lateness_keys: usize,
    /// Orders of the pending-memory burst; `None` skips it.
    pub million: Option<usize>,
    pub php: bool,
    /// Burst sizes through the PHP command (default: the same sizes).
    pub php_sizes: Vec<usize>,
    /// Extra worker arguments.
    pub worker_args: Vec<String>,
    /// Write `docs/bench` and the numbers of `docs/performance.md`: the default full run does, a
    /// narrowed or smoke run does not unless `--write` is given.
    pub write: bool,
    /// Burst sizes of the PostgreSQL part (`pgsql.rs`); empty skips it.
    pub pgsql_sizes: Vec<usize>,
    /// `--only-pgsql`: the PostgreSQL part alone.
    pub only_pgsql: bool,
}

const USAGE: &str = "\
cargo bench --bench burst [-- OPTIONS]    the full run (about 12 minutes on 2 cores)
cargo bench --bench burst -- --smoke      small sizes, every section (what CI runs)
  --sizes 10000,100000    burst sizes (default 10000,50000,100000,200000)
  --workers 1,2,4         worker counts per burst size (default 1,2,4)
  --steady-seconds N      length of the 1,000 events/s section (default 60)
  --million | --no-million   the 1,000,000-order memory burst (default on)
  --no-php                skip the PHP command; --php-sizes 10000,50000 to choose its sizes
  --worker-args \"...\"     extra worker arguments, e.g. \"--concurrency 8\"
  --write                 write docs/bench and docs/performance.md even for a narrowed run
  --only-pgsql            only the PostgreSQL part (floor, 1 and 2 workers); with --write,
                          only its table on docs/performance.md is rewritten
  --pgsql-sizes 100000    its burst sizes (default 100000); --no-pgsql skips it";

impl Options {
    fn full() -> Self {
        let sizes = vec![10_000, 50_000, 100_000, 200_000];
        Self {
            smoke: false,
            php_sizes: sizes.clone(),
            sizes,
            workers: vec![1, 2, 4],
            connections: 4,
            steady_seconds: 60,
            lateness_keys: 100_000,
            million: Some(1_000_000),
            php: true,
            worker_args: Vec::new(),
            write: true,
            pgsql_sizes: vec![100_000],
            only_pgsql: false,
        }
    }

    fn smoke() -> Self {
        Self {
            smoke: true,
            sizes: vec![1_000, 5_000],
            workers: vec![1, 2],
            steady_seconds: 3,
            lateness_keys: 10_000,
            million: Some(20_000),
            php_sizes: vec![1_000],
            write: false,
            pgsql_sizes: vec![1_000],
            ..Self::full()
        }
    }

    /// Reads the arguments; unknown ones (such as the `--nocapture` `scripts/test` passes to
    /// every target) are reported and ignored.
    pub fn parse(args: &[String]) -> Self {
        let smoke = !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--smoke");
        let mut o = if smoke { Self::smoke() } else { Self::full() };
        let mut narrowed = false;
        let mut php_sizes = None;
        let mut write = false;
        let mut it = args.iter();
        let list = |v: Option<&String>| -> Vec<usize> {
            v.map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
                .unwrap_or_default()
        };
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--bench" | "--smoke" => {}
                "--sizes" => {
                    o.sizes = list(it.next());
                    narrowed = true;
                }
                "--workers" => {
                    o.workers = list(it.next()).into_iter().filter(|w| *w > 0).collect();
                    narrowed = true;
                }
                "--steady-seconds" => {
                    o.steady_seconds = it.next().and_then(|s| s.parse().ok()).unwrap_or(60);
                    narrowed = true;
                }
                "--million" => o.million = Some(o.million.unwrap_or(1_000_000)),
                "--no-million" => {
                    o.million = None;
                    narrowed = true;
                }
                "--no-php" => {
                    o.php = false;
                    narrowed = true;
                }
                "--php-sizes" => {
                    php_sizes = Some(list(it.next()));
                    narrowed = true;
                }
                "--worker-args" => {
                    o.worker_args = it
                        .next()
                        .map(|a| a.split_whitespace().map(str::to_string).collect())
                        .unwrap_or_default();
                    narrowed = true;
                }
                "--write" => write = true,
                "--only-pgsql" => {
                    o.only_pgsql = true;
                    narrowed = true;
                }
                "--no-pgsql" => {
                    o.pgsql_sizes.clear();
                    narrowed = true;
                }
                "--pgsql-sizes" => {
                    o.pgsql_sizes = list(it.next());
                    narrowed = true;
                }
                "--help" | "-h" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => eprintln!("ignoring unknown argument {other}"),
            }
        }
        o.php_sizes = php_sizes.unwrap_or_else(|| {
            if smoke {
                o.php_sizes.clone()
            } else {
                o.sizes.clone()
            }
        });
        o.connections = concurrency(&o.worker_args).unwrap_or(o.connections);
        o.write = write || (!smoke && !narrowed);
        o
    }
}

/// `--concurrency N` among the worker's arguments: the floor client then uses N connections.
fn concurrency(worker_args: &[String]) -> Option<usize> {
    let at = worker_args.iter().position(|a| a == "--concurrency")?;
    worker_args.get(at + 1)?.parse().ok()
}
