//! A hostile-but-legitimate app configuration: config files built to exhaust the stack or
//! memory, bad values given every way a setting can be given, secrets in bad values. Each must
//! end in one error line (exit 1) that names the true source and never shows a secret.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{App, BIN, run_bounded};

/// The stock Laravel 8 config files, as a freshly installed app has them.
const STOCK: [(&str, &str); 3] = [
    (
        "app.php",
        include_str!("../crates/config/src/stock/laravel8/app.php"),
    ),
    (
        "cache.php",
        include_str!("../crates/config/src/stock/laravel8/cache.php"),
    ),
    (
        "database.php",
        include_str!("../crates/config/src/stock/laravel8/database.php"),
    ),
];

/// Settings that resolve on their own: only what a test changes can be wrong.
const GOOD_ENV: &str = "APP_NAME=Shop\nCACHE_DRIVER=redis\nREDIS_HOST=127.0.0.1\nREDIS_PORT=6379\nDB_HOST=127.0.0.1\nDB_DATABASE=shop\nDB_USERNAME=shop\nDB_PASSWORD=S3cretDbPass\n";

/// An app with the stock config files, `replaced` files written over them.
fn app_with_config(env: &str, replaced: &[(&str, &str)]) -> App {
    let app = App::with_env(env);
    let config = root(&app).join("config");
    std::fs::create_dir_all(&config).expect("mkdir config");
    for (name, text) in STOCK.iter().chain(replaced) {
        std::fs::write(config.join(name), text).expect("write config file");
    }
    app
}

fn root(app: &App) -> PathBuf {
    app.env_file()
        .parent()
        .expect("the .env is in the app root")
        .to_path_buf()
}

/// `order-expire --env <app>/.env ARGS` with exactly `process_env` as its environment, bounded.
fn run(app: &App, process_env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .envs(process_env.iter().copied())
        .arg("--env")
        .arg(app.env_file())
        .args(args);
    run_bounded(command, Duration::from_secs(60))
}

/// The one error line of a failed start: exit status 1 and nothing else on stderr.
fn one_error_line(output: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(1),
        "{what}: exit 1 (not a crash: 134 is a stack overflow, 137 a kill); stderr:\n{stderr:.2000}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: one line on stderr:\n{stderr:.2000}"
    );
    let line = lines[0];
    assert!(
        line.starts_with("order-expire: error: "),
        "{what}: an error line: {line:.500}"
    );
    assert!(
        line.len() < 1000,
        "{what}: a line a person can read: {line:.2000}"
    );
    line.to_string()
}

fn check_fails(app: &App, process_env: &[(&str, &str)], args: &[&str], what: &str) -> String {
    let mut all = vec!["check", "--no-connect"];
    all.extend_from_slice(args);
    let started = Instant::now();
    let output = run(app, process_env, &all);
    let line = one_error_line(&output, what);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{what}: took {:?}",
        started.elapsed()
    );
    line
}

/// Defect 5: config files that nest 100,000 deep crashed the process with a stack overflow
/// (exit 134); `$a = $a . $a;` forty times allocated until killed.
#[test]
fn config_files_beyond_the_evaluator_limits_fail_with_one_line() {
    let n = 100_000;
    let chain = |op: &str| vec!["1"; n].join(op);
    let bombs = [
        ("1 + 1 + ...", chain(" + "), "deeper than 256 levels"),
        ("'a' . 'a' . ...", chain(" . "), "deeper than 256 levels"),
        (
            "!!!...1",
            format!("{}1", "!".repeat(n)),
            "deeper than 256 levels",
        ),
        (
            "((((1))))",
            format!("{}1{}", "(".repeat(n), ")".repeat(n)),
            "PHP parser's limit",
        ),
        (
            "[[[[1]]]]",
            format!("{}1{}", "[".repeat(n), "]".repeat(n)),
            "PHP parser's limit",
        ),
    ];
    for (what, expression, limit) in bombs {
        let app_php = format!("<?php\n\nreturn [\n    'name' => {expression},\n];\n");
        let app = app_with_config(GOOD_ENV, &[("app.php", &app_php)]);
        let line = check_fails(&app, &[], &[], what);
        let file = root(&app).join("config/app.php");
        assert!(
            line.contains(&format!("{}:4:", file.display())),
            "{what}: names the file and line: {line}"
        );
        assert!(line.contains(limit), "{what}: names the limit: {line}");
    }

    let doubling = format!(
        "<?php\n\n$a = 'x';\n{}return ['name' => $a];\n",
        "$a = $a . $a;\n".repeat(40)
    );
    let app = app_with_config(GOOD_ENV, &[("app.php", &doubling)]);
    let line = check_fails(&app, &[], &[], "$a = $a . $a; x40");
    assert!(
        line.contains("config/app.php:24:") && line.contains("longer than 1 MiB"),
        "the 21st doubling passes 1 MiB: {line}"
    );

    let nesting = format!(
        "<?php\n\n$a = 1;\n{}return ['name' => $a];\n",
        "$a = [$a];\n".repeat(100_000)
    );
    let app = app_with_config(GOOD_ENV, &[("cache.php", &nesting)]);
    let line = check_fails(&app, &[], &[], "$a = [$a]; x100000");
    assert!(
        line.contains("config/cache.php:") && line.contains("nested deeper than 256"),
        "{line}"
    );
}

/// The configuration cache is read by its own reader, which must not overflow either.
#[test]
fn a_configuration_cache_nested_too_deep_fails_with_one_line() {
    let n = 100_000;
    let cache = format!(
        "<?php return {}{};\n",
        "array ( 0 => ".repeat(n),
        "1, )".repeat(n)
    );
    let app = App::with_env(GOOD_ENV);
    let bootstrap = root(&app).join("bootstrap/cache");
    std::fs::create_dir_all(&bootstrap).expect("mkdir bootstrap/cache");
    std::fs::write(bootstrap.join("config.php"), cache).expect("write config cache");
    let line = check_fails(&app, &[], &[], "config cache");
    assert!(
        line.contains("bootstrap/cache/config.php") && line.contains("deeper than 256"),
        "{line}"
    );
}

/// Defect 7: a bad value given by a flag or the process environment was reported as coming
/// from the `.env`. Each source is named as it is.
#[test]
fn bad_values_name_where_they_were_given() {
    let too_long = "1000000000000000";
    let app = app_with_config(&format!("{GOOD_ENV}ORDER_EXPIRE_TTL=900\n"), &[]);
    let env_file = app.env_file().display().to_string();

    let flag = check_fails(&app, &[], &["--order-ttl", too_long], "flag");
    assert!(
        flag.contains(&format!("--order-ttl=\"{too_long}\" on the command line:")),
        "{flag}"
    );
    assert!(flag.contains("1 to 31536000"), "names the range: {flag}");
    assert!(!flag.contains(&env_file), "not the .env: {flag}");

    let process = check_fails(&app, &[("ORDER_EXPIRE_TTL", too_long)], &[], "process env");
    assert!(
        process.contains(&format!(
            "ORDER_EXPIRE_TTL=\"{too_long}\" in the process environment:"
        )),
        "{process}"
    );

    let interval = check_fails(&app, &[], &["--sweep-interval", "86401"], "interval");
    assert!(
        interval.contains("--sweep-interval=\"86401\" on the command line:")
            && interval.contains("1 to 86400"),
        "{interval}"
    );

    let status = check_fails(
        &app,
        &[("ORDER_EXPIRE_CANCELLED_STATUS", "2.5")],
        &[],
        "status",
    );
    assert!(
        status.contains("ORDER_EXPIRE_CANCELLED_STATUS=\"2.5\" in the process environment:"),
        "{status}"
    );

    let port = check_fails(&app, &[("REDIS_PORT", "abc")], &[], "Laravel variable");
    assert!(
        port.contains("REDIS_PORT=\"abc\" in the process environment:"),
        "the process environment wins over the .env, and is named: {port}"
    );

    let in_file = app_with_config(&format!("{GOOD_ENV}ORDER_EXPIRE_SWEEP_INTERVAL=0\n"), &[]);
    let dotenv = check_fails(&in_file, &[], &[], ".env");
    assert!(
        dotenv.contains(&format!(
            "ORDER_EXPIRE_SWEEP_INTERVAL=\"0\" in {}:",
            in_file.env_file().display()
        )),
        "{dotenv}"
    );

    // A hard-coded value in a config file: the file and the line that wrote it.
    let database = STOCK[2].1.replace("env('REDIS_PORT', '6379')", "'abc'");
    let port_line = database
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("'port' => 'abc'"))
        .nth(1)
        .map(|(i, _)| i + 1)
        .expect("the cache connection's port");
    let app = app_with_config(GOOD_ENV, &[("database.php", &database)]);
    let config = check_fails(&app, &[], &[], "config file");
    let file = root(&app).join("config/database.php");
    assert!(
        config.contains(&format!(
            "database.redis.cache.port=\"abc\" in {}:{port_line}:",
            file.display()
        )),
        "{config}"
    );
}

/// Defect 7: error messages never print a secret, whichever way it was given.
#[test]
fn errors_never_show_a_secret() {
    let secret = "S3cretInUrl";
    let app = app_with_config(GOOD_ENV, &[]);
    let cases: [(&str, &[(&str, &str)]); 3] = [
        (
            "REDIS_URL",
            &[("REDIS_URL", "redis://worker:S3cretInUrl@cache:notaport")],
        ),
        (
            "DATABASE_URL",
            &[("DATABASE_URL", "mysql://shop:S3cretInUrl@db:notaport/shop")],
        ),
        (
            "REDIS_URL",
            &[("REDIS_URL", "worker:S3cretInUrl@cache:notaport")],
        ),
    ];
    for (name, process_env) in cases {
        let line = check_fails(&app, process_env, &[], name);
        assert!(line.contains(name), "names the setting: {line}");
        assert!(!line.contains(secret), "masks the password: {line}");
        assert!(line.contains(":***@"), "shows where it was: {line}");
    }

    // A value read from DB_PASSWORD used where a port belongs: named, never shown.
    let database = STOCK[2]
        .1
        .replace("env('DB_PORT', '3306')", "env('DB_PASSWORD')");
    let app = app_with_config(GOOD_ENV, &[("database.php", &database)]);
    let line = check_fails(&app, &[], &[], "DB_PASSWORD as a port");
    assert!(line.contains("DB_PASSWORD=***"), "{line}");
    assert!(!line.contains("S3cretDbPass"), "{line}");

    // A password written into a config file as PHP order-expire does not evaluate: the file
    // and line are named, the expression (which holds the password) is not shown.
    let database = STOCK[2].1.replace(
        "'password' => env('DB_PASSWORD', ''),",
        "'password' => decrypt('S3cretInConfig'),",
    );
    assert!(
        database.contains("S3cretInConfig"),
        "the stock file was edited"
    );
    let app = app_with_config(GOOD_ENV, &[("database.php", &database)]);
    let line = check_fails(&app, &[], &[], "password in PHP");
    assert!(line.contains("config/database.php:"), "{line}");
    assert!(line.contains("connections.mysql.password"), "{line}");
    assert!(!line.contains("S3cretInConfig"), "{line}");
}

/// The limits leave real config files alone: the stock files of a fresh app still resolve.
#[test]
fn the_stock_config_files_still_resolve() {
    let app = app_with_config(GOOD_ENV, &[]);
    let output = run(&app, &[], &["check", "--no-connect", "--json"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("check --json prints one object");
    assert_eq!(report["source"], "config");
    assert_eq!(
        report["key_pattern"],
        "shop_database_shop_cache:ORDER_CONFIRM:*"
    );
}
