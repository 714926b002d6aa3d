//! Which Laravel the app runs: the cache key format depends on it.
//!
//! Laravel 8-10's `RedisStore` appends `:` to a non-empty cache prefix; 11+ uses the prefix
//! verbatim, and the default prefixes and environment variable names changed across skeleton
//! versions. The framework's own `Application::VERSION` is the truth; `composer.lock` and
//! `composer.json` are the fallbacks.
//!
//! The phpdotenv version decides how the `.env` itself is read ([`DotenvVersion`]): 5.5 changed
//! which variable names are valid and how a multi-line value ends.

use std::fmt;
use std::path::Path;

/// A Laravel framework version (major and the rest as written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaravelVersion {
    /// The major version, which picks the key format, the stock files and the `.env` rules.
    pub major: u32,
    /// As found, e.g. `8.83.26`, or `^8.0` from composer.json.
    pub text: String,
    /// Where it was found.
    pub source: &'static str,
}

impl fmt::Display for LaravelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (from {})", self.text, self.source)
    }
}

impl LaravelVersion {
    /// From `--laravel-version` / `ORDER_EXPIRE_LARAVEL_VERSION`: `8`, `10.48`, `v11.0.3`.
    pub fn given(text: &str) -> Option<Self> {
        Some(Self {
            major: leading_number(text.trim_start_matches(['v', 'V', '^', '~', '=', '>', ' ']))?,
            text: text.to_string(),
            source: "the setting",
        })
    }

    /// Detects the version of the app at `root`; `None` when nothing says.
    pub fn detect(root: &Path) -> Option<Self> {
        let application =
            root.join("vendor/laravel/framework/src/Illuminate/Foundation/Application.php");
        let vendored = read_small(&application).and_then(|text| application_version(&text));
        if let Some(version) = vendored {
            return Some(Self {
                major: leading_number(&version)?,
                text: version,
                source: "vendor/laravel/framework",
            });
        }
        if let Some(version) = composer_lock_version(root) {
            return Some(version);
        }
        composer_json_constraint(root)
    }

    /// The minor version, when the text has one (`9.52.16` -> 52; `^9.0` -> 0).
    pub fn minor(&self) -> Option<u32> {
        let rest = self.text.trim_start_matches(|c: char| !c.is_ascii_digit());
        let (_, after) = rest.split_once('.')?;
        leading_number(after)
    }

    /// Laravel 8-10 append `:` to the cache prefix (`RedisStore::setPrefix`); 11+ do not.
    pub fn cache_prefix_colon(&self) -> bool {
        self.major <= 10
    }
}

/// `const VERSION = '8.83.26';` in Application.php.
fn application_version(source: &str) -> Option<String> {
    let after = source.split("const VERSION").nth(1)?;
    let quoted = after.split(['\'', '"']).nth(1)?;
    Some(quoted.to_string())
}

fn composer_lock_version(root: &Path) -> Option<LaravelVersion> {
    let text = read_small(&root.join("composer.lock"))?;
    let lock: serde_json::Value = serde_json::from_str(&text).ok()?;
    let package = lock["packages"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == "laravel/framework")?;
    let version = package["version"]
        .as_str()?
        .trim_start_matches('v')
        .to_string();
    Some(LaravelVersion {
        major: leading_number(&version)?,
        text: version,
        source: "composer.lock",
    })
}

fn composer_json_constraint(root: &Path) -> Option<LaravelVersion> {
    let text = read_small(&root.join("composer.json"))?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let constraint = json["require"]["laravel/framework"].as_str()?.to_string();
    // The lowest major the constraint allows: `^8.0`, `^8.75`, `8.*`, `^9.0|^10.0`.
    let major = constraint
        .split(['|', ',', ' '])
        .filter_map(|part| leading_number(part.trim_start_matches(['^', '~', '>', '=', 'v'])))
        .min()?;
    Some(LaravelVersion {
        major,
        text: constraint,
        source: "composer.json",
    })
}

/// Which of phpdotenv's rule sets reads the `.env`. They differ in two places (both changed in
/// vlucas/phpdotenv v5.5.0, commit 1a7ea2a "Add support for unicode variable names" and the
/// multi-line fix in `Lines::multilineProcess` released with it):
///
/// * variable names: 5.4 accepts `[a-zA-Z0-9_.]+`; 5.5+ accept
///   `(*UTF8)[\p{Ll}\p{Lu}\p{M}\p{N}_.]+` (`EntryParser::isValidName`);
/// * a line inside an open multi-line value that itself looks like the start of one
///   (`X="abc`) needs two quotes to close the value in 5.4 and one from 5.5 on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DotenvRules {
    /// phpdotenv 5.0 to 5.4 (Laravel 8, 9 and 10 require `^5.4.1`).
    Before5_5,
    /// phpdotenv 5.5 and later (Laravel 11 and 12 require `^5.6.1`).
    From5_5,
}

/// The phpdotenv version whose rules read the app's `.env`, and where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DotenvVersion {
    /// The rules this version reads a `.env` with.
    pub rules: DotenvRules,
    /// As found (`5.4.1`), or the lowest version a Laravel version requires (`^5.6.1`).
    pub text: String,
    /// `composer.lock`, or the Laravel version it was inferred from.
    pub source: String,
}

impl fmt::Display for DotenvVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.text, self.source)
    }
}

impl DotenvVersion {
    /// The version the app's `composer.lock` pins (package `vlucas/phpdotenv`), if it says.
    pub fn locked(root: &Path) -> Option<Self> {
        let text = read_small(&root.join("composer.lock"))?;
        let lock: serde_json::Value = serde_json::from_str(&text).ok()?;
        let version = lock["packages"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == "vlucas/phpdotenv")?["version"]
            .as_str()?
            .trim_start_matches('v')
            .to_string();
        Some(Self {
            rules: Self::rules_of(&version)?,
            text: version,
            source: "composer.lock".into(),
        })
    }

    /// The lowest phpdotenv the framework's composer.json requires: `^5.4.1` up to Laravel 10,
    /// `^5.6.1` from 11 (laravel/framework's composer.json on the 8.x-12.x branches). Laravel 8
    /// rules apply when the version is unknown, as elsewhere.
    pub fn required_by(laravel: Option<&LaravelVersion>) -> Self {
        let (major, source) = match laravel {
            Some(v) => (v.major, format!("required by Laravel {}", v.major)),
            None => (8, "required by Laravel 8, the default".to_string()),
        };
        let (rules, text) = if major >= 11 {
            (DotenvRules::From5_5, "^5.6.1")
        } else {
            (DotenvRules::Before5_5, "^5.4.1")
        };
        Self {
            rules,
            text: text.into(),
            source,
        }
    }

    /// `5.4.1` -> before 5.5; `5.6.1`, `6.0.0` -> from 5.5; a dev branch name is not a version.
    pub fn rules_of(version: &str) -> Option<DotenvRules> {
        let major = leading_number(version)?;
        let minor = version
            .split_once('.')
            .and_then(|(_, rest)| leading_number(rest))
            .unwrap_or(0);
        Some(if (major, minor) >= (5, 5) {
            DotenvRules::From5_5
        } else {
            DotenvRules::Before5_5
        })
    }
}

/// The largest composer.lock or Application.php we read: far above a real one, and a bound on
/// what a stray file can make us allocate.
const MAX_METADATA_BYTES: u64 = 16 * 1024 * 1024;

/// The text of a small regular file, or `None` (these files only refine a guess).
fn read_small(path: &Path) -> Option<String> {
    let bytes = super::bounded::read(path, MAX_METADATA_BYTES).ok()?;
    String::from_utf8(bytes).ok()
}

fn leading_number(s: &str) -> Option<u32> {
    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_source() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        assert_eq!(LaravelVersion::detect(dir.path()), None);

        std::fs::write(
            dir.path().join("composer.json"),
            r#"{"require":{"laravel/framework":"^9.2|^10.0"}}"#,
        )
        .expect("write");
        let v = LaravelVersion::detect(dir.path()).expect("from composer.json");
        assert_eq!((v.major, v.source), (9, "composer.json"));

        std::fs::write(
            dir.path().join("composer.lock"),
            r#"{"packages":[{"name":"laravel/framework","version":"v10.48.4"}]}"#,
        )
        .expect("write");
        let v = LaravelVersion::detect(dir.path()).expect("from composer.lock");
        assert_eq!((v.major, v.text.as_str()), (10, "10.48.4"));

        let app = dir
            .path()
            .join("vendor/laravel/framework/src/Illuminate/Foundation");
        std::fs::create_dir_all(&app).expect("dirs");
        std::fs::write(
            app.join("Application.php"),
            "<?php\nclass Application {\n    const VERSION = '11.56.0';\n}\n",
        )
        .expect("write");
        let v = LaravelVersion::detect(dir.path()).expect("from vendor");
        assert_eq!((v.major, v.source), (11, "vendor/laravel/framework"));
        assert!(!v.cache_prefix_colon());
    }

    #[test]
    fn dotenv_rules_from_the_lock_else_the_laravel_version() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        assert_eq!(DotenvVersion::locked(dir.path()), None);
        let laravel = |major: &str| LaravelVersion::given(major);
        assert_eq!(
            DotenvVersion::required_by(None).rules,
            DotenvRules::Before5_5
        );
        assert_eq!(
            DotenvVersion::required_by(laravel("10").as_ref()).rules,
            DotenvRules::Before5_5
        );
        let eleven = DotenvVersion::required_by(laravel("11").as_ref());
        assert_eq!(eleven.rules, DotenvRules::From5_5);
        assert_eq!(eleven.to_string(), "^5.6.1 (required by Laravel 11)");
        for (locked, rules) in [
            ("v5.4.1", DotenvRules::Before5_5),
            ("v5.5.0", DotenvRules::From5_5),
            ("5.6.1", DotenvRules::From5_5),
        ] {
            std::fs::write(
                dir.path().join("composer.lock"),
                format!(r#"{{"packages":[{{"name":"vlucas/phpdotenv","version":"{locked}"}}]}}"#),
            )
            .expect("write");
            let found = DotenvVersion::locked(dir.path()).expect("from composer.lock");
            assert_eq!(
                (found.rules, found.source.as_str()),
                (rules, "composer.lock")
            );
        }
    }

    #[test]
    fn given_versions() {
        assert_eq!(LaravelVersion::given("v8.83.26").map(|v| v.major), Some(8));
        assert_eq!(LaravelVersion::given("12").map(|v| v.major), Some(12));
        assert_eq!(LaravelVersion::given("latest"), None);
    }
}
