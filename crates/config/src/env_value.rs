//! Laravel's `env()`: how a raw string from `.env` (or the process environment) becomes a PHP
//! value (`Illuminate\Support\Env::get`, identical in Laravel 8-12).
//!
//! The mapping is what makes `REDIS_PASSWORD=null` mean "no password" and `REDIS_PREFIX=` mean
//! "no prefix" while an unset `REDIS_PREFIX` means "the default prefix": the difference between
//! finding the app's keys and listening to nothing.

/// What `env()` returns for a variable that is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum EnvValue {
    Null,
    Bool(bool),
    Str(String),
}

/// What Laravel's `env('X')` returns for the raw string `raw`: `true`/`(true)`,
/// `false`/`(false)`, `empty`/`(empty)` and `null`/`(null)` (any case) are keywords; a value
/// wrapped in one pair of matching quotes loses them (`\A(['"])(.*)\1\z`, where `.` does not
/// match a newline); anything else is the string unchanged.
pub(super) fn interpret(raw: &str) -> EnvValue {
    match raw.to_ascii_lowercase().as_str() {
        "true" | "(true)" => return EnvValue::Bool(true),
        "false" | "(false)" => return EnvValue::Bool(false),
        "empty" | "(empty)" => return EnvValue::Str(String::new()),
        "null" | "(null)" => return EnvValue::Null,
        _ => {}
    }
    let bytes = raw.as_bytes();
    if bytes.len() >= 2 {
        let (first, last) = (bytes[0], bytes[bytes.len() - 1]);
        // Both ends are ASCII quotes, so slicing one byte off each end stays on char boundaries.
        if (first == b'"' || first == b'\'') && first == last {
            let inner = &raw[1..raw.len() - 1];
            if !inner.contains('\n') {
                return EnvValue::Str(inner.to_string());
            }
        }
    }
    EnvValue::Str(raw.to_string())
}

impl EnvValue {
    /// PHP's `(string)` cast: `None` for null (callers decide what null means), `"1"` for
    /// true, `""` for false.
    pub(super) fn to_php_string(&self) -> Option<String> {
        match self {
            Self::Null => None,
            Self::Bool(true) => Some("1".into()),
            Self::Bool(false) => Some(String::new()),
            Self::Str(s) => Some(s.clone()),
        }
    }

    /// PHP's `empty()`: null, false, `""` and `"0"`.
    #[cfg(test)]
    pub(super) fn is_php_empty(&self) -> bool {
        match self {
            Self::Null | Self::Bool(false) => true,
            Self::Bool(true) => false,
            Self::Str(s) => s.is_empty() || s == "0",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laravel_env_mapping() {
        let s = |v: &str| EnvValue::Str(v.to_string());
        for (raw, expected) in [
            ("true", EnvValue::Bool(true)),
            ("(TRUE)", EnvValue::Bool(true)),
            ("False", EnvValue::Bool(false)),
            ("(false)", EnvValue::Bool(false)),
            ("empty", s("")),
            ("(Empty)", s("")),
            ("null", EnvValue::Null),
            ("(NULL)", EnvValue::Null),
            ("", s("")),
            ("6379", s("6379")),
            ("'quoted'", s("quoted")),
            ("\"quoted\"", s("quoted")),
            ("\"'both'\"", s("'both'")),
            ("'mismatched\"", s("'mismatched\"")),
            ("\"", s("\"")),
            ("\"\"", s("")),
            ("\"multi\nline\"", s("\"multi\nline\"")),
            ("nullable", s("nullable")),
            ("商城", s("商城")),
            ("'商城'", s("商城")),
        ] {
            assert_eq!(interpret(raw), expected, "env() of {raw:?}");
        }
    }

    #[test]
    fn php_casts() {
        assert_eq!(EnvValue::Null.to_php_string(), None);
        assert_eq!(EnvValue::Bool(true).to_php_string().as_deref(), Some("1"));
        assert_eq!(EnvValue::Bool(false).to_php_string().as_deref(), Some(""));
        for empty in [
            EnvValue::Null,
            EnvValue::Bool(false),
            EnvValue::Str(String::new()),
            EnvValue::Str("0".into()),
        ] {
            assert!(empty.is_php_empty(), "{empty:?}");
        }
        for full in [
            EnvValue::Bool(true),
            EnvValue::Str("00".into()),
            EnvValue::Str(" ".into()),
        ] {
            assert!(!full.is_php_empty(), "{full:?}");
        }
    }
}
