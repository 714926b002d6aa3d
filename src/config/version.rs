//! Which Laravel the app runs: the cache key format depends on it.
//!
//! Laravel 8-10's `RedisStore` appends `:` to a non-empty cache prefix; 11+ uses the prefix
//! verbatim, and the default prefixes and environment variable names changed across skeleton
//! versions. The framework's own `Application::VERSION` is the truth; `composer.lock` and
//! `composer.json` are the fallbacks.

use std::fmt;
use std::path::Path;

/// A Laravel framework version (major and the rest as written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaravelVersion {
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
        let vendored = std::fs::read_to_string(&application)
            .ok()
            .and_then(|text| application_version(&text));
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
    let text = std::fs::read_to_string(root.join("composer.lock")).ok()?;
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
    let text = std::fs::read_to_string(root.join("composer.json")).ok()?;
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
    fn given_versions() {
        assert_eq!(LaravelVersion::given("v8.83.26").map(|v| v.major), Some(8));
        assert_eq!(LaravelVersion::given("12").map(|v| v.major), Some(12));
        assert_eq!(LaravelVersion::given("latest"), None);
    }
}
