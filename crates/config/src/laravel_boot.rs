//! Asking the app's own Laravel for its configuration, where our evaluator cannot compute it.
//!
//! An app's config file may call a helper the app defines, read a package's class constant, or
//! anything else PHP can do. Where a value the worker needs depends on such a construct, and
//! the host has `php` and the app's `vendor/autoload.php` (as a host that ran
//! `php artisan order:expire` has), the surest reading is Laravel's own: `laravel_boot.php`,
//! shipped inside the binary, boots the app's Laravel only as far as its configuration
//! (LoadEnvironmentVariables and LoadConfiguration; no service provider is booted, nothing
//! connected) and prints the settings order-expire reads, in the format of
//! `php artisan config:cache`, which [`parse_config_cache`] reads exactly. The run is bounded
//! in time and output (`php_runtime`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::bounded::MAX_CONFIG_BYTES;
use super::php_runtime;
use super::php_value::{PhpValue, parse_config_cache};
use super::version::PhpVersion;

/// The script, run as `php -- <root> <.env>` with it on standard input.
const SCRIPT: &str = include_str!("laravel_boot.php");

/// How long the boot may take. Laravel loads its configuration in well under a second; a
/// config file that waits on the network is not one we wait for.
const BOOT_TIMEOUT: Duration = Duration::from_secs(30);

/// What the app's Laravel said.
#[derive(Debug)]
pub(super) struct Booted {
    /// Its `app`, `cache`, `database` and `queue` settings.
    pub config: PhpValue,
    /// The PHP it ran on.
    pub php: PhpVersion,
    /// Its `Application::VERSION`, e.g. `8.83.27`.
    pub laravel: Option<String>,
}

/// Why the app's own Laravel cannot be asked, if it cannot: no `php` here, or no
/// `vendor/autoload.php` in the app.
pub(super) fn unavailable(php: Option<&Path>, root: &Path) -> Option<String> {
    let autoload = root.join("vendor/autoload.php");
    match php {
        None => Some("there is no php on this host (PATH, or ORDER_EXPIRE_PHP)".into()),
        Some(_) if !autoload.is_file() => Some(format!(
            "the app has no {} (composer install)",
            autoload.display()
        )),
        Some(_) => None,
    }
}

/// Boots the app at `root`, whose `.env` is `env_file`, with `php`, as far as its
/// configuration.
pub(super) fn boot(php: &Path, root: &Path, env_file: &Path) -> Result<Booted, String> {
    // `--env .env` makes the root the empty path: the current folder, which PHP must run in.
    let absolute = |path: &Path| {
        let path = if path.as_os_str().is_empty() {
            Path::new(".")
        } else {
            path
        };
        std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
    };
    let (root, env_file): (PathBuf, PathBuf) = (absolute(root), absolute(env_file));
    let (root_arg, env_arg) = (root.display().to_string(), env_file.display().to_string());
    let output = php_runtime::run(
        php,
        &[
            "-d",
            "display_errors=stderr",
            "-d",
            "log_errors=0",
            "-d",
            "html_errors=0",
            "-d",
            "memory_limit=512M",
            "--",
            &root_arg,
            &env_arg,
        ],
        SCRIPT.as_bytes(),
        Some(&root),
        (BOOT_TIMEOUT, MAX_CONFIG_BYTES as usize),
    )?;
    let text = String::from_utf8_lossy(&output.stdout);
    let answer = parse_config_cache(&text)
        .map_err(|e| format!("the app's Laravel printed what order-expire cannot read ({e})"))?;
    let text_of = |key: &str| answer.get(key).and_then(PhpValue::to_php_string);
    let php_text = text_of("php").unwrap_or_default();
    let php = PhpVersion::new(&php_text, "Laravel itself")
        .ok_or_else(|| format!("the app's Laravel named no PHP version ({php_text:?})"))?;
    let config = answer
        .get("config")
        .cloned()
        .ok_or("the app's Laravel printed no configuration")?;
    Ok(Booted {
        config,
        php,
        laravel: text_of("laravel"),
    })
}
