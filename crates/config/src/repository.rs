//! The app's configuration, assembled as Laravel's `LoadConfiguration` assembles it.
//!
//! Laravel reads one of two things: the configuration cache (`bootstrap/cache/config.php`, or
//! `APP_CONFIG_CACHE`), which holds every value already resolved, or else its `config/*.php`
//! files, evaluated with the `.env` in the environment. Laravel 11+ first loads its own framework
//! copies of those files and merges the app's over them (`array_merge` at the top level, and one
//! level deeper for `database.connections` and `cache.stores`), so a slim app without
//! `config/database.php` still has one.
//!
//! We read the same three files the worker needs (`app`, `cache`, `database`). When the app has
//! no `config/` folder at all (a `.env` copied next to the worker), we evaluate the stock files
//! of the app's Laravel version instead, kept in `crates/config/src/stock/`: the `.env` then means
//! what it means with an unmodified app.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::bounded;
use super::environment::Environment;
use super::error::{ConfigError, is_secret_name};
use super::php_eval::{Context, evaluate_file};
use super::php_value::{ArrayKey, PhpArray, PhpValue, Unevaluated, parse_config_cache};

/// The config files the worker reads (`queue` for dispatching jobs).
const FILES: [&str; 4] = ["app", "cache", "database", "queue"];

/// Where the configuration came from, as `check` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// No `config/` folder: the stock files of the app's Laravel version, with its `.env`.
    Env,
    /// The app's own `config/*.php`, evaluated with its `.env`.
    Config,
    /// The configuration cache at this path; `.env` is not read for Laravel's settings.
    ConfigCache(PathBuf),
}

impl ConfigSource {
    /// The source as `check` names it: `.env`, `config` or `config-cache`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Env => ".env",
            Self::Config => "config",
            Self::ConfigCache(_) => "config-cache",
        }
    }
}

/// Where one top-level config file (`database`) came from: a file, or a stock copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Origin {
    File(PathBuf),
    Stock { major: u32 },
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Stock { major } => write!(f, "Laravel {major}'s stock config files"),
        }
    }
}

/// The configuration, like Laravel's `config()` repository.
#[derive(Debug, Clone)]
pub(super) struct Repository {
    pub source: ConfigSource,
    values: PhpValue,
    /// Dotted path -> the `env()` variable its value was read from.
    from_env: BTreeMap<String, String>,
    /// Top-level key (`database`) -> where it was read.
    origins: BTreeMap<String, Origin>,
    /// Dotted path -> the line of the app's config file that wrote its value.
    lines: BTreeMap<String, u32>,
}

impl Repository {
    /// Loads the configuration of the app at `root` as Laravel `major` would: its configuration
    /// cache (`cache_file`) if that exists, else its `config/` files, else the stock files.
    pub(super) fn load(
        root: &Path,
        env: &Environment,
        major: u32,
        cache_file: &Path,
    ) -> Result<Self, ConfigError> {
        // Laravel's test is `file_exists()`: a cache path that is a directory or a device is
        // an error to report, not a reason to read other files.
        if cache_file.exists() {
            return Self::from_cache(cache_file);
        }
        let config_dir = root.join("config");
        if !config_dir.is_dir() {
            return Self::stock(root, env, major);
        }
        Self::assemble(root, env, major, Some(&config_dir))
    }

    /// Reads `php artisan config:cache` output.
    pub(super) fn from_cache(cache_file: &Path) -> Result<Self, ConfigError> {
        let bad = |reason: String| ConfigError::ConfigCache {
            path: cache_file.to_path_buf(),
            reason,
        };
        let text = bounded::read_text(cache_file, bounded::MAX_CONFIG_BYTES)
            .map_err(|e| bad(e.to_string()))?;
        let values = parse_config_cache(&text).map_err(bad)?;
        let origins = match &values {
            PhpValue::Array(entries) => entries
                .iter()
                .map(|(k, _)| (k.to_string(), Origin::File(cache_file.to_path_buf())))
                .collect(),
            _ => BTreeMap::new(),
        };
        Ok(Self {
            source: ConfigSource::ConfigCache(cache_file.to_path_buf()),
            values,
            from_env: BTreeMap::new(),
            origins,
            lines: BTreeMap::new(),
        })
    }

    /// The stock `app`, `cache` and `database` files of Laravel `major`, evaluated with `env`.
    pub(super) fn stock(root: &Path, env: &Environment, major: u32) -> Result<Self, ConfigError> {
        Self::assemble(root, env, major, None)
    }

    /// Evaluates the app's files in `config_dir` (if any), with the stock copy of each file
    /// where Laravel `major` would use it: for a file the app lacks, and from Laravel 11 under
    /// every file, which is merged over it.
    fn assemble(
        root: &Path,
        env: &Environment,
        major: u32,
        config_dir: Option<&Path>,
    ) -> Result<Self, ConfigError> {
        let ctx = Context {
            env,
            base_path: root,
        };
        let mut repository = Self {
            source: if config_dir.is_some() {
                ConfigSource::Config
            } else {
                ConfigSource::Env
            },
            values: PhpValue::Array(Vec::new()),
            from_env: BTreeMap::new(),
            origins: BTreeMap::new(),
            lines: BTreeMap::new(),
        };
        for (name, (stock_path, stock_source)) in FILES.into_iter().zip(stock_files(major)) {
            let app = match config_dir {
                // Only a worker that dispatches jobs needs `queue`: its absence is no news.
                Some(dir) => {
                    read_app_file(&dir.join(format!("{name}.php")), major, name != "queue")?
                }
                None => None,
            };
            if app.is_none() || major >= 11 {
                let file = evaluate_file(Path::new(stock_path), stock_source, &ctx)
                    .map_err(ConfigError::Unsupported)?;
                repository.set(name, file.value, file.from_env, Origin::Stock { major });
            }
            if let Some((path, source)) = app {
                let file = evaluate_file(&path, &source, &ctx).map_err(ConfigError::Unsupported)?;
                repository.set_lines(name, file.lines);
                repository.merge_file(name, file.value, file.from_env, Origin::File(path), major);
            }
        }
        Ok(repository)
    }

    /// Replaces the top-level key `name`.
    fn set(
        &mut self,
        name: &str,
        value: PhpValue,
        from_env: BTreeMap<String, String>,
        origin: Origin,
    ) {
        self.from_env.retain(|path, _| !under(path, name));
        self.from_env.extend(
            from_env
                .into_iter()
                .map(|(path, var)| (format!("{name}.{path}"), var)),
        );
        self.origins.insert(name.to_string(), origin);
        if let PhpValue::Array(entries) = &mut self.values {
            match entries.iter_mut().find(|(k, _)| k.to_string() == name) {
                Some(entry) => entry.1 = value,
                None => entries.push((ArrayKey::Str(name.to_string()), value)),
            }
        }
    }

    /// Puts the app's file `name` in place: instead of the stock copy up to Laravel 10, merged
    /// over the framework's copy from 11 as `LoadConfiguration::mergeConfig` does
    /// (`array_merge`, and once more for `database.connections` and `cache.stores`).
    fn merge_file(
        &mut self,
        name: &str,
        app: PhpValue,
        mut app_env: BTreeMap<String, String>,
        origin: Origin,
        major: u32,
    ) {
        let base = self.values.get(name).cloned().unwrap_or(PhpValue::Null);
        let (true, PhpValue::Array(base_entries), PhpValue::Array(app_entries)) =
            (major >= 11, &base, &app)
        else {
            return self.set(name, app, app_env, origin);
        };
        let mut merged = PhpArray::default();
        merged.append(base_entries);
        merged.append(app_entries);
        // Keys (relative to the file) whose framework value the app's replaces.
        let mut replaced: Vec<String> = app_entries.iter().map(|(k, _)| k.to_string()).collect();
        let nested = match name {
            "database" => Some("connections"),
            "cache" => Some("stores"),
            "queue" => Some("connections"),
            _ => None,
        };
        if let Some(key) = nested
            && let (Some(PhpValue::Array(base_inner)), Some(PhpValue::Array(app_inner))) =
                (base.get(key), app.get(key))
        {
            let mut inner = PhpArray::default();
            inner.append(base_inner);
            inner.append(app_inner);
            merged.insert(Some(ArrayKey::Str(key.into())), inner.into_value());
            replaced.retain(|k| k != key);
            replaced.extend(app_inner.iter().map(|(k, _)| format!("{key}.{k}")));
        }
        // Where the framework's values that survive came from stays known.
        let inherited: Vec<(String, String)> = self
            .from_env
            .iter()
            .filter_map(|(path, var)| Some((path.strip_prefix(name)?.strip_prefix('.')?, var)))
            .filter(|(path, _)| !replaced.iter().any(|r| under(path, r)))
            .map(|(path, var)| (path.to_string(), var.clone()))
            .collect();
        app_env.extend(inherited);
        self.set(name, merged.into_value(), app_env, origin);
    }

    /// `config('a.b.c')`: `Ok(None)` when it is not set, an error when it (or something it is
    /// inside) could not be evaluated.
    pub(super) fn get(&self, path: &str) -> Result<Option<&PhpValue>, ConfigError> {
        match self.values.lookup(path) {
            Some(PhpValue::Unevaluated(u)) => Err(unsupported(u, path)),
            other => Ok(other),
        }
    }

    /// `config('a.b.c')` as a string (`None` for unset and null).
    pub(super) fn string(&self, path: &str) -> Result<Option<String>, ConfigError> {
        Ok(self.get(path)?.and_then(PhpValue::to_php_string))
    }

    /// The line of the app's config file that wrote the value at `path`, when known.
    pub(super) fn line(&self, path: &str) -> Option<u32> {
        self.lines.get(path).copied()
    }

    /// Where the app's file `name` wrote each value (paths relative to the file).
    fn set_lines(&mut self, name: &str, lines: BTreeMap<String, u32>) {
        self.lines.retain(|path, _| !under(path, name));
        self.lines.extend(
            lines
                .into_iter()
                .map(|(path, line)| (format!("{name}.{path}"), line)),
        );
    }

    /// The `env()` variable the value at `path` was read from, if it was.
    pub(super) fn env_name(&self, path: &str) -> Option<&str> {
        self.from_env.get(path).map(String::as_str)
    }

    /// Where Laravel's settings were read, in order: files, or the stock copies.
    pub(super) fn read_from(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for name in FILES {
            if let Some(origin) = self.origins.get(name) {
                let text = origin.to_string();
                if !out.contains(&text) {
                    out.push(text);
                }
            }
        }
        out
    }

    /// The file that holds `path`.
    pub(super) fn origin(&self, path: &str) -> Option<&Origin> {
        self.origins.get(path.split('.').next().unwrap_or(path))
    }
}

/// The error for a needed value that could not be evaluated. The expression of a secret
/// (`database.redis.cache.password`) is not shown: it may hold the password itself.
pub(super) fn unsupported(u: &Unevaluated, path: &str) -> ConfigError {
    let mut u = u.clone();
    u.reason = format!("{} (needed for {path})", u.reason);
    if is_secret_name(path) {
        u.expression = "***".into();
    }
    ConfigError::Unsupported(u)
}

/// The text of the app's config file at `path`; `None` when the app has none (Laravel 11+
/// then use the framework's copy; older versions would have no such configuration, and the
/// stock file is the best reading of the `.env`).
fn read_app_file(
    path: &Path,
    major: u32,
    warn_missing: bool,
) -> Result<Option<(PathBuf, String)>, ConfigError> {
    match bounded::read_text(path, bounded::MAX_CONFIG_BYTES) {
        Ok(source) => Ok(Some((path.to_path_buf(), source))),
        Err(e) if e.kind() == Some(std::io::ErrorKind::NotFound) => {
            if major <= 10 && warn_missing {
                tracing::warn!(
                    "{} is missing; using Laravel {major}'s stock copy with the .env",
                    path.display()
                );
            }
            Ok(None)
        }
        Err(e) => Err(ConfigError::ConfigFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

/// `path` is `prefix` or lies below it (`database.redis` is under `database`).
fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// The stock `app`, `cache` and `database` files of Laravel `major` (path for messages, text).
/// Laravel 9 and 10 share their skeleton's files, 11 and later the framework's.
fn stock_files(major: u32) -> [(&'static str, &'static str); 4] {
    macro_rules! stock {
        ($app:literal, $cache:literal, $database:literal, $queue:literal) => {
            [
                (concat!("crates/config/src/", $app), include_str!($app)),
                (concat!("crates/config/src/", $cache), include_str!($cache)),
                (
                    concat!("crates/config/src/", $database),
                    include_str!($database),
                ),
                (concat!("crates/config/src/", $queue), include_str!($queue)),
            ]
        };
    }
    match major {
        0..=8 => stock!(
            "stock/laravel8/app.php",
            "stock/laravel8/cache.php",
            "stock/laravel8/database.php",
            "stock/laravel8/queue.php"
        ),
        9 | 10 => stock!(
            "stock/laravel9/app.php",
            "stock/laravel9/cache.php",
            "stock/laravel9/database.php",
            "stock/laravel9/queue.php"
        ),
        11 => stock!(
            "stock/laravel11/app.php",
            "stock/laravel11/cache.php",
            "stock/laravel11/database.php",
            "stock/laravel11/queue.php"
        ),
        _ => stock!(
            "stock/laravel12/app.php",
            "stock/laravel11/cache.php",
            "stock/laravel11/database.php",
            "stock/laravel11/queue.php"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(text: &str) -> Environment {
        Environment::parse(text, Box::new(|_| None)).expect("valid .env")
    }

    #[test]
    fn every_stock_file_evaluates() {
        for major in [8, 9, 10, 11, 12, 13] {
            let r = Repository::stock(Path::new("/app"), &env(""), major).expect("stock");
            for path in [
                "app.timezone",
                "cache.default",
                "cache.prefix",
                "database.default",
                "database.redis.options.prefix",
                "database.redis.cache.database",
            ] {
                assert!(
                    r.string(path).expect("evaluates").is_some(),
                    "Laravel {major}: {path}"
                );
            }
        }
    }

    #[test]
    fn laravel_11_merges_the_apps_files_over_the_frameworks() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("config")).expect("config dir");
        // Only a custom mysql connection and a redis section without `cache`.
        std::fs::write(
            dir.path().join("config/database.php"),
            "<?php return ['connections' => ['mysql' => ['driver' => 'mysql', 'host' => 'db.internal', 'prefix' => 'shop_']], 'redis' => ['default' => ['host' => 'r']]];",
        )
        .expect("write");
        let r = Repository::load(
            dir.path(),
            &env("DB_CONNECTION=mysql"),
            11,
            &dir.path().join("bootstrap/cache/config.php"),
        )
        .expect("loads");
        assert_eq!(r.source, ConfigSource::Config);
        assert_eq!(
            r.string("database.default").expect("ok").as_deref(),
            Some("mysql")
        );
        assert_eq!(
            r.string("database.connections.mysql.prefix")
                .expect("ok")
                .as_deref(),
            Some("shop_")
        );
        assert_eq!(
            r.get("database.connections.mysql.port").expect("ok"),
            None,
            "the app's connection replaces the framework's wholesale"
        );
        assert!(
            r.get("database.connections.mariadb").expect("ok").is_some(),
            "the framework's other connections stay"
        );
        assert_eq!(
            r.get("database.redis.cache").expect("ok"),
            None,
            "database.redis is not deep-merged"
        );
        assert_eq!(r.env_name("database.default"), Some("DB_CONNECTION"));
        assert_eq!(r.env_name("database.connections.mysql.port"), None);
        assert_eq!(r.env_name("cache.default"), Some("CACHE_STORE"));
    }
}
