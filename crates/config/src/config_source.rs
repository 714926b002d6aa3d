//! Where Laravel's settings are read from, and the PHP they are read for.
//!
//! Laravel reads its configuration cache when there is one, else its `config/*.php`. We read
//! the cache exactly, and evaluate the files ourselves (`php_eval`), which covers the PHP config
//! files are written in. Where a value the worker needs is written in PHP we do not evaluate
//! (a helper of the app, a package's constant...), the app's own Laravel is asked
//! (`laravel_boot`) if the host has `php` and the app its `vendor/autoload.php`; else the error
//! names the construct, the setting it feeds and the two ways out. `ORDER_EXPIRE_CONFIG_SOURCE`
//! forces one source for operators who want to know which.
//!
//! The app's PHP version ([`Php`]) is found first: `PHP_VERSION_ID` and the PDO attribute
//! numbers in the files and in the cache depend on it.

use std::path::{Path, PathBuf};

use super::error::ConfigError;
use super::laravel_boot;
use super::php_runtime;
use super::repository::Repository;
use super::version::{LaravelVersion, PhpVersion};

/// Our settings' names; `settings::keys` lists them with the others.
pub(super) mod keys {
    /// Where Laravel's settings come from: `auto`, `config-cache`, `laravel` or `evaluator`.
    pub const CONFIG_SOURCE: &str = "ORDER_EXPIRE_CONFIG_SOURCE";
    /// The `php` binary (a path, or a name looked up in `PATH`; default `php`).
    pub const PHP: &str = "ORDER_EXPIRE_PHP";
    /// The app's PHP version (`8.3`), when it cannot be asked of the `php` binary.
    pub const PHP_VERSION: &str = "ORDER_EXPIRE_PHP_VERSION";
}

/// `ORDER_EXPIRE_CONFIG_SOURCE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceChoice {
    /// The configuration cache if there is one, else the config files through our evaluator,
    /// and the app's own Laravel for what that cannot evaluate.
    Auto,
    /// The configuration cache only: it must exist.
    ConfigCache,
    /// The app's own Laravel, always (it reads the cache itself when there is one).
    Laravel,
    /// Never run PHP: the configuration cache if there is one, else our evaluator alone.
    Evaluator,
}

impl SourceChoice {
    /// The setting's value for this choice.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::ConfigCache => "config-cache",
            Self::Laravel => "laravel",
            Self::Evaluator => "evaluator",
        }
    }
}

/// Reads one of our settings (flag, else `.env`).
pub(super) type OurSetting<'a> = &'a dyn Fn(&str) -> Option<String>;
/// A bad value of one of our settings, named as it was given.
pub(super) type OurError<'a> = &'a dyn Fn(&str, &str, String) -> ConfigError;

/// `ORDER_EXPIRE_CONFIG_SOURCE`, `auto` when unset.
pub(super) fn choice(
    ours: OurSetting<'_>,
    invalid: OurError<'_>,
) -> Result<SourceChoice, ConfigError> {
    let Some(value) = ours(keys::CONFIG_SOURCE) else {
        return Ok(SourceChoice::Auto);
    };
    [
        SourceChoice::Auto,
        SourceChoice::ConfigCache,
        SourceChoice::Laravel,
        SourceChoice::Evaluator,
    ]
    .into_iter()
    .find(|c| c.name() == value.trim())
    .ok_or_else(|| {
        invalid(
            keys::CONFIG_SOURCE,
            &value,
            "expected auto, config-cache, laravel or evaluator".into(),
        )
    })
}

/// The app's PHP on this host: its binary (none when there is none, or when PHP must not
/// run), and its version.
#[derive(Debug, Clone)]
pub(super) struct Php {
    pub binary: Option<PathBuf>,
    pub version: PhpVersion,
}

/// Finds the app's PHP. Its version: `ORDER_EXPIRE_PHP_VERSION`, else what the `php` binary
/// says (unless it is older than the app can run on), else the lowest the app runs on: the
/// higher of composer.json's (the platform it pins, else the lowest its `require.php` allows)
/// and its Laravel version's.
pub(super) fn php(
    ours: OurSetting<'_>,
    invalid: OurError<'_>,
    choice: SourceChoice,
    (root, laravel): (&Path, Option<&LaravelVersion>),
) -> Result<Php, ConfigError> {
    let given = ours(keys::PHP);
    let binary = match (&given, choice) {
        (_, SourceChoice::Evaluator) => None,
        (Some(given), _) => Some(php_runtime::find(Some(given)).ok_or_else(|| {
            invalid(
                keys::PHP,
                given,
                "no executable php there (a path, or a name found in PATH)".into(),
            )
        })?),
        (None, _) => php_runtime::find(None),
    };
    if let Some(text) = ours(keys::PHP_VERSION) {
        let version = PhpVersion::new(&text, keys::PHP_VERSION)
            .filter(|v| v.id >= 80000)
            .ok_or_else(|| {
                invalid(
                    keys::PHP_VERSION,
                    &text,
                    "expected a PHP 8 version such as 8.3 or 8.5.1".into(),
                )
            })?;
        return Ok(Php { binary, version });
    }
    // The lowest PHP the app can run on: a php below it is not the app's.
    let floor = PhpVersion::from_composer(root)
        .into_iter()
        .chain([PhpVersion::required_by(laravel)])
        .max_by_key(|v| v.id)
        .unwrap_or_else(|| PhpVersion::required_by(laravel));
    let asked = binary
        .as_deref()
        .and_then(|php| match php_runtime::version(php) {
            Ok(version) if version.id >= floor.id => Some(version),
            Ok(version) => {
                tracing::debug!(
                    "{} is PHP {}, older than the app runs on ({floor}): reading the app for {}",
                    php.display(),
                    version.text,
                    floor.text
                );
                None
            }
            Err(e) => {
                tracing::debug!("the app's PHP version is not known from {e}");
                None
            }
        });
    Ok(Php {
        binary,
        version: asked.unwrap_or(floor),
    })
}

/// What the app's own Laravel computed, as a configuration, and its exact version; asked
/// `because` of what that says (the construct our evaluator could not compute, or the setting).
pub(super) fn ask_laravel(
    php: &Php,
    (root, env_file): (&Path, &Path),
    because: String,
) -> Result<(Repository, Option<LaravelVersion>), ConfigError> {
    let failed = |reason: String| ConfigError::Laravel {
        because: because.clone(),
        reason,
    };
    if let Some(why) = laravel_boot::unavailable(php.binary.as_deref(), root) {
        return Err(failed(why));
    }
    let binary = php.binary.as_deref().unwrap_or(Path::new("php"));
    let booted = laravel_boot::boot(binary, root, env_file).map_err(failed)?;
    let version = booted.laravel.as_deref().and_then(|text| {
        let mut version = LaravelVersion::given(text)?;
        version.source = "Laravel itself";
        Some(version)
    });
    Ok((
        Repository::from_laravel(booted.config, booted.php, because),
        version,
    ))
}
