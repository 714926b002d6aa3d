//! The `.env` and config files under hostile but legitimate use: values Laravel reads that a
//! Unicode-minded parser would not, parse errors on lines holding a password, and paths that
//! are not regular files or are far too large. Each run must end at once with exit 1 and one
//! stderr line, or resolve what Laravel resolves.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{App, BIN, run_bounded};

/// A start-up error must come at once, not after reading for a while.
const PROMPTLY: Duration = Duration::from_secs(5);

/// Runs `order-expire --env <env> <args>` with an empty process environment, bounded.
fn run_with_env(env: &Path, args: &[&str]) -> (Output, Duration) {
    let mut command = Command::new(BIN);
    command.env_clear().arg("--env").arg(env).args(args);
    let started = Instant::now();
    let output = run_bounded(command, Duration::from_secs(20));
    (output, started.elapsed())
}

/// The error line of a run that must fail with exit 1: the last on stderr (warnings about the
/// app, such as a missing config file, may come before it).
fn last_error_line(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "exit 1; stderr:\n{stderr}");
    let last = stderr.lines().last().unwrap_or_default().to_string();
    assert!(last.starts_with("order-expire: error: "), "{stderr}");
    last
}

/// The single stderr line of a run that must fail with exit 1.
fn single_error_line(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "exit 1; stderr:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line on stderr, got:\n{stderr}");
    lines[0].to_string()
}

/// `check --json --no-connect` on an app whose `.env` is `bytes`: the report, which must exist.
fn report(app: &App, bytes: &[u8]) -> serde_json::Value {
    std::fs::write(app.env_file(), bytes).expect("write .env");
    let (output, _) = run_with_env(&app.env_file(), &["check", "--json", "--no-connect"]);
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "check --json prints one JSON object ({e}):\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

const BASE: &str = "APP_NAME=Laravel\nCACHE_DRIVER=redis\nDB_DATABASE=shop\n";

#[test]
fn a_parse_error_names_file_line_and_variable_but_never_the_password() {
    let app = App::with_env(&format!(
        "{BASE}DB_USERNAME=shop\nDB_PASSWORD=p@ss word X\n"
    ));
    let (output, _) = run_with_env(&app.env_file(), &["check", "--no-connect"]);
    let line = single_error_line(&output);
    assert!(!line.contains("p@ss"), "the password is printed: {line}");
    assert!(!line.contains("word X"), "the password is printed: {line}");
    assert!(line.contains(".env"), "names the file: {line}");
    assert!(line.contains("line 5"), "names the line: {line}");
    assert!(line.contains("DB_PASSWORD"), "names the variable: {line}");
    assert!(line.contains("unexpected whitespace"), "says what: {line}");
}

#[test]
fn a_device_a_fifo_a_directory_or_a_huge_file_as_env_is_one_line_at_once() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let fifo = dir.path().join("fifo.env");
    let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: a valid NUL-terminated path; mkfifo only creates a file.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
    let huge = dir.path().join("huge.env");
    let mut text = BASE.as_bytes().to_vec();
    text.resize(2 * 1024 * 1024, b'\n');
    std::fs::write(&huge, text).expect("write");
    for (env, what) in [
        (Path::new("/dev/zero"), "character device"),
        (fifo.as_path(), "named pipe"),
        (dir.path(), "directory"),
        (huge.as_path(), "larger than 1 MiB"),
    ] {
        let (output, took) = run_with_env(env, &["check", "--no-connect"]);
        let line = single_error_line(&output);
        assert!(took < PROMPTLY, "{} took {took:?}", env.display());
        assert!(
            line.contains(&env.display().to_string()),
            "names it: {line}"
        );
        assert!(line.contains(what), "says it is {what}: {line}");
    }
}

#[test]
fn config_files_and_the_config_cache_must_be_regular_files() {
    let app = App::with_env(BASE);
    let config = app.env_file().with_file_name("config");
    std::fs::create_dir(&config).expect("config dir");
    let database = config.join("database.php");
    std::os::unix::fs::symlink("/dev/zero", &database).expect("symlink");
    let (output, took) = run_with_env(&app.env_file(), &["check", "--no-connect"]);
    let line = last_error_line(&output);
    assert!(took < PROMPTLY, "took {took:?}");
    assert!(line.contains("database.php"), "names the file: {line}");
    assert!(line.contains("character device"), "says why: {line}");

    std::fs::remove_file(&database).expect("remove");
    let cache = app.env_file().with_file_name("bootstrap/cache");
    std::fs::create_dir_all(&cache).expect("cache dir");
    std::os::unix::fs::symlink("/dev/zero", cache.join("config.php")).expect("symlink");
    let (output, took) = run_with_env(&app.env_file(), &["check", "--no-connect"]);
    let line = last_error_line(&output);
    assert!(took < PROMPTLY, "took {took:?}");
    assert!(line.contains("config.php"), "names the file: {line}");
    assert!(line.contains("character device"), "says why: {line}");
}

#[test]
fn prefixes_with_no_break_spaces_and_stray_bytes_are_laravel_s_bytes() {
    let app = App::with_env("");
    // phpdotenv's whitespace is ASCII: the no-break space and the trailing one belong to the
    // value; a byte that is not UTF-8 becomes `?` (mb_convert_encoding), as Laravel's key has it.
    let mut env = BASE.as_bytes().to_vec();
    env.extend_from_slice("REDIS_PREFIX=Mall\u{a0}Shop_\u{a0}\n".as_bytes());
    env.extend_from_slice(b"CACHE_PREFIX=caf\xe9\n");
    let report = report(&app, &env);
    assert_eq!(
        report["key_pattern"], "Mall\u{a0}Shop_\u{a0}caf?:ORDER_CONFIRM:*",
        "{report:#}"
    );
}

#[test]
fn the_phpdotenv_rules_come_from_composer_lock_else_the_laravel_version() {
    // Laravel 11's stock config reads CACHE_STORE and defaults to SQLite.
    let unicode_name =
        format!("{BASE}AlbertÅberg=Skybert\nCACHE_STORE=redis\nDB_CONNECTION=mysql\n");
    let app = App::with_env(&unicode_name);
    // Laravel 8 requires phpdotenv ^5.4.1, which rejects the name.
    let (output, _) = run_with_env(&app.env_file(), &["check", "--no-connect"]);
    let line = single_error_line(&output);
    assert!(
        line.contains("line 4") && line.contains("phpdotenv 5.4"),
        "{line}"
    );

    // A Laravel 11 app (set in the .env itself) requires ^5.6.1, which accepts it.
    let eleven = report(
        &app,
        format!("{unicode_name}ORDER_EXPIRE_LARAVEL_VERSION=11\n").as_bytes(),
    );
    assert_eq!(
        eleven["dotenv"], "^5.6.1 (required by Laravel 11)",
        "{eleven:#}"
    );

    // composer.lock says what is installed, whatever the Laravel version.
    std::fs::write(
        app.env_file().with_file_name("composer.lock"),
        r#"{"packages":[{"name":"laravel/framework","version":"v10.48.0"},{"name":"vlucas/phpdotenv","version":"v5.6.1"}]}"#,
    )
    .expect("write composer.lock");
    let locked = report(&app, unicode_name.as_bytes());
    assert_eq!(locked["dotenv"], "5.6.1 (composer.lock)", "{locked:#}");
    assert_eq!(locked["laravel"]["major"], 10);

    let (output, _) = run_with_env(&app.env_file(), &["check", "--no-connect"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("phpdotenv 5.6.1 (composer.lock)"), "{text}");
}
