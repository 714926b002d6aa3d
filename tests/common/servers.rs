//! Which server programs the harness starts: this machine's own `redis-server` and MariaDB,
//! or one of the servers `scripts/servers fetch` keeps under `target/servers` (the matrix).
//!
//! * `ORDER_EXPIRE_TEST_REDIS_SERVER`: the `redis-server` of [`crate::common::RedisServer`],
//!   of every cluster node and of every sentinel (started as `<server> <conf> --sentinel`,
//!   which Redis and Valkey both understand): a name of `scripts/servers list`
//!   (`valkey-8.1`) or a path to a program.
//! * `ORDER_EXPIRE_TEST_DB`: the server family and version of
//!   [`crate::common::MariaServer`], the private database server of the tests that stop and
//!   restart it (`mysql-9.7`, `mariadb-10.5`). The shared server [`crate::common::TestDb`]
//!   creates its databases on is `ORDER_EXPIRE_TEST_MYSQL_URL`, which the matrix points at a
//!   server of the same name.
//!
//! A name that was not fetched fails the test with the command that fetches it: a server the
//! matrix asks for is never silently replaced by another one.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A Redis-protocol server program and what it is.
#[derive(Debug, Clone)]
pub struct RedisProgram {
    pub program: PathBuf,
    /// `redis` or `valkey`.
    pub family: String,
    /// The version the binary reports, e.g. `8.2.3`.
    pub version: String,
}

impl RedisProgram {
    /// Whether the server is `major.minor` or newer.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        version_at_least(&self.version, major, minor)
    }
}

/// The database server family of [`crate::common::MariaServer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbFamily {
    MariaDb,
    MySql,
}

/// A database server's programs and what it is.
#[derive(Debug, Clone)]
pub struct DbProgram {
    pub family: DbFamily,
    /// `mariadbd` or `mysqld`.
    pub server: PathBuf,
    /// `mariadb-install-db` (MariaDB; MySQL initialises its datadir with `mysqld` itself).
    pub install_db: PathBuf,
    /// The version the binary reports (`10.11.19`).
    pub version: String,
}

impl DbProgram {
    /// Whether the server has `FOR UPDATE SKIP LOCKED` (MySQL 8.0.1+, MariaDB 10.6+), as its
    /// name in the matrix says.
    pub fn has_skip_locked(&self) -> bool {
        match self.family {
            DbFamily::MySql => true,
            DbFamily::MariaDb => version_at_least(&self.version, 10, 6),
        }
    }
}

/// The Redis server of this test run, read once.
pub fn redis() -> &'static RedisProgram {
    static CHOICE: OnceLock<RedisProgram> = OnceLock::new();
    CHOICE.get_or_init(|| match std::env::var("ORDER_EXPIRE_TEST_REDIS_SERVER") {
        Ok(chosen) if !chosen.is_empty() => redis_program(&chosen),
        _ => redis_program_of(PathBuf::from("redis-server")),
    })
}

/// The database server family and programs of [`crate::common::MariaServer`], read once.
pub fn database() -> &'static DbProgram {
    static CHOICE: OnceLock<DbProgram> = OnceLock::new();
    CHOICE.get_or_init(|| match std::env::var("ORDER_EXPIRE_TEST_DB") {
        Ok(name) if !name.is_empty() => {
            let dir = fetched(&name);
            let family = match read(&dir, "family").as_str() {
                "mysql" => DbFamily::MySql,
                "mariadb" => DbFamily::MariaDb,
                other => panic!("ORDER_EXPIRE_TEST_DB={name} is a {other} server, not a database"),
            };
            DbProgram {
                family,
                server: dir.join("bin/server"),
                install_db: dir.join("bin/install-db"),
                version: read(&dir, "version"),
            }
        }
        _ => DbProgram {
            family: DbFamily::MariaDb,
            server: "mariadbd".into(),
            install_db: "mariadb-install-db".into(),
            version: own_mariadb_version(),
        },
    })
}

/// Where `scripts/servers fetch` keeps the servers.
fn servers_dir() -> PathBuf {
    std::env::var_os("ORDER_EXPIRE_TEST_SERVERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/servers"))
}

/// The folder of the fetched server `name`; fails the test if it was not fetched.
fn fetched(name: &str) -> PathBuf {
    let dir = servers_dir().join(name);
    assert!(
        dir.join("version").is_file(),
        "the server {name} is not fetched (looked in {}): run `scripts/servers fetch {name}`",
        dir.display()
    );
    dir
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{}/{file}: {e}", dir.display()))
        .trim()
        .to_string()
}

fn redis_program(chosen: &str) -> RedisProgram {
    if chosen.contains('/') {
        return redis_program_of(PathBuf::from(chosen));
    }
    let dir = fetched(chosen);
    let family = read(&dir, "family");
    assert!(
        family == "redis" || family == "valkey",
        "ORDER_EXPIRE_TEST_REDIS_SERVER={chosen} is a {family} server, not Redis or Valkey"
    );
    RedisProgram {
        program: dir.join("bin/server"),
        family,
        version: read(&dir, "version"),
    }
}

/// Asks `program --version` what it is (`Redis server v=7.0.15 ...`, `Valkey server v=...`).
fn redis_program_of(program: PathBuf) -> RedisProgram {
    let output = std::process::Command::new(&program)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{} must be installed (scripts/test installs redis-server): {e}",
                program.display()
            )
        });
    let text = String::from_utf8_lossy(&output.stdout);
    let (family, rest) = if let Some(rest) = text.strip_prefix("Valkey server v=") {
        ("valkey", rest)
    } else if let Some(rest) = text.strip_prefix("Redis server v=") {
        ("redis", rest)
    } else {
        panic!("{} --version says {text:?}", program.display())
    };
    let version = rest
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    RedisProgram {
        program,
        family: family.to_string(),
        version,
    }
}

/// `mariadbd --version` of this machine's MariaDB: `... Ver 10.11.19-MariaDB-0+deb12u1 ...`.
fn own_mariadb_version() -> String {
    let output = std::process::Command::new("mariadbd")
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("mariadbd must be installed (scripts/test installs it): {e}"));
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace()
        .skip_while(|word| *word != "Ver")
        .nth(1)
        .and_then(|v| v.split('-').next())
        .unwrap_or_default()
        .to_string()
}

/// Whether `version` (`7.4.1`) is `major.minor` or newer.
pub fn version_at_least(version: &str, major: u32, minor: u32) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let have = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    have >= (major, minor)
}
