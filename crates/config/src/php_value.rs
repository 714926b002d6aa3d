//! PHP values, and a reader for `bootstrap/cache/config.php`.
//!
//! `php artisan config:cache` writes the whole resolved configuration as
//! `<?php return var_export($config, true);`. When that file exists Laravel reads nothing else:
//! not `.env`, not `config/*.php`. So it is the most faithful source there is, and its format is
//! small and regular (PHP's own `var_export`), which this module reads exactly: arrays with
//! string or integer keys, `NULL`, `true`/`false`, integers (`PHP_INT_MIN` as
//! `-9223372036854775807-1`), floats (`1.0`, `1.0E+25`, `INF`, `NAN`), single-quoted strings with
//! only `\\` and `\'` escapes, strings joined with `.` around `"\0"`, and objects
//! (`(object) array(...)`, `\Foo::__set_state(array(...))`), read as their arrays.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

/// How deeply arrays in the configuration cache may nest. `var_export` of Laravel's
/// configuration nests a handful of levels; the reader recurses once per level, so a hostile
/// file nested a million deep must stop with an error rather than overflow the stack.
pub(super) const MAX_CACHE_DEPTH: usize = 256;

/// An array key: PHP turns integer-like strings into integers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum ArrayKey {
    Int(i64),
    Str(String),
}

impl fmt::Display for ArrayKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(i) => write!(f, "{i}"),
            Self::Str(s) => f.write_str(s),
        }
    }
}

/// A PHP value as configuration holds it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum PhpValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Array(Vec<(ArrayKey, PhpValue)>),
    /// A value of the app's `config/*.php` outside the PHP that order-expire evaluates (a method
    /// call, a closure, an unknown function). Laravel config files hold many values the worker
    /// never reads, so this is an error only when a setting the worker needs depends on it.
    Unevaluated(Box<Unevaluated>),
}

/// Where and why a config expression could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unevaluated {
    /// The config file that holds the expression.
    pub file: PathBuf,
    /// 1-based.
    pub line: u32,
    /// The expression's source text, shortened.
    pub expression: String,
    /// Why it could not be evaluated, with `(needed for <setting>)` once a setting needs it.
    pub reason: String,
}

impl fmt::Display for Unevaluated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: `{}` {}",
            self.file.display(),
            self.line,
            self.expression,
            self.reason
        )
    }
}

impl PhpValue {
    /// `$array[$key]`, looking integer keys up by their decimal text as PHP does.
    pub(super) fn get(&self, key: &str) -> Option<&PhpValue> {
        match self {
            Self::Array(entries) => entries
                .iter()
                .rev()
                .find(|(k, _)| k.to_string() == key)
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// Laravel's `config('a.b.c')`. An [`PhpValue::Unevaluated`] value on the way is returned
    /// itself: what lies below it is unknown, and the caller must say so.
    pub(super) fn lookup(&self, dotted: &str) -> Option<&PhpValue> {
        let mut value = self;
        for key in dotted.split('.') {
            if matches!(value, Self::Unevaluated(_)) {
                return Some(value);
            }
            value = value.get(key)?;
        }
        Some(value)
    }

    /// PHP's `(bool)` cast.
    pub(super) fn truthy(&self) -> bool {
        !self.is_php_empty()
    }

    /// PHP's `(string)` cast; `None` for null, arrays and unevaluated values.
    pub(super) fn to_php_string(&self) -> Option<String> {
        match self {
            Self::Null | Self::Array(_) | Self::Unevaluated(_) => None,
            Self::Bool(true) => Some("1".into()),
            Self::Bool(false) => Some(String::new()),
            Self::Int(i) => Some(i.to_string()),
            Self::Float(f) if f.fract() == 0.0 && f.is_finite() => Some(format!("{f:.0}")),
            Self::Float(f) => Some(f.to_string()),
            Self::Str(s) => Some(s.clone()),
        }
    }

    /// PHP's `empty()`.
    pub(super) fn is_php_empty(&self) -> bool {
        match self {
            Self::Null | Self::Bool(false) => true,
            Self::Int(i) => *i == 0,
            Self::Float(f) => *f == 0.0,
            Self::Str(s) => s.is_empty() || s == "0",
            Self::Array(a) => a.is_empty(),
            Self::Bool(true) | Self::Unevaluated(_) => false,
        }
    }
}

/// A PHP array being built: insertion order kept, an existing key overwritten in place, and
/// the next integer key one past the largest so far.
#[derive(Debug, Default)]
pub(super) struct PhpArray {
    entries: Vec<(ArrayKey, PhpValue)>,
    /// Key -> position in `entries`, so that building an array of n entries costs n steps, not
    /// n squared (a config file may hold a million-entry array).
    positions: HashMap<ArrayKey, usize>,
    next: i64,
}

impl PhpArray {
    /// `$array[$key] = $value`, or `$array[] = $value` for `None`.
    pub(super) fn insert(&mut self, key: Option<ArrayKey>, value: PhpValue) {
        let key = key.unwrap_or(ArrayKey::Int(self.next));
        if let ArrayKey::Int(i) = key
            && i >= self.next
        {
            self.next = i.saturating_add(1);
        }
        match self.positions.get(&key) {
            Some(&at) => self.entries[at].1 = value,
            None => {
                self.positions.insert(key.clone(), self.entries.len());
                self.entries.push((key, value));
            }
        }
    }

    /// Adds `entries` as `array_merge` and `[...$spread]` do: string keys overwrite, integer
    /// keys are renumbered.
    pub(super) fn append(&mut self, entries: &[(ArrayKey, PhpValue)]) {
        for (k, v) in entries {
            match k {
                ArrayKey::Int(_) => self.insert(None, v.clone()),
                key => self.insert(Some(key.clone()), v.clone()),
            }
        }
    }

    pub(super) fn into_value(self) -> PhpValue {
        PhpValue::Array(self.entries)
    }
}

/// Reads the text of `bootstrap/cache/config.php`.
pub(super) fn parse_config_cache(source: &str) -> Result<PhpValue, String> {
    let mut p = Reader {
        s: source.as_bytes(),
        i: 0,
        depth: 0,
    };
    p.skip_ws();
    p.expect("<?php")?;
    p.skip_ws();
    p.expect("return")?;
    let value = p.value()?;
    p.skip_ws();
    p.expect(";")?;
    Ok(value)
}

struct Reader<'a> {
    s: &'a [u8],
    i: usize,
    /// Arrays open around the current position.
    depth: usize,
}

impl Reader<'_> {
    fn error(&self, what: &str) -> String {
        let line = self.s[..self.i.min(self.s.len())]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1;
        format!("line {line}: {what}")
    }

    fn skip_ws(&mut self) {
        while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        if self.s[self.i..].starts_with(token.as_bytes()) {
            self.i += token.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, token: &str) -> Result<(), String> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(self.error(&format!("expected `{token}`")))
        }
    }

    fn value(&mut self) -> Result<PhpValue, String> {
        self.skip_ws();
        let first = self.scalar_or_array()?;
        // `'a' . "\0" . 'b'`: var_export's way of writing NUL bytes.
        let mut joined: Option<String> = None;
        while self.eat(".") {
            let next = self.scalar_or_array()?;
            let text = joined.get_or_insert_with(|| first.to_php_string().unwrap_or_default());
            text.push_str(&next.to_php_string().unwrap_or_default());
        }
        Ok(joined.map_or(first, PhpValue::Str))
    }

    fn scalar_or_array(&mut self) -> Result<PhpValue, String> {
        self.skip_ws();
        let rest = &self.s[self.i..];
        if rest.starts_with(b"'") {
            return self.single_quoted().map(PhpValue::Str);
        }
        if rest.starts_with(b"\"") {
            return self.double_quoted().map(PhpValue::Str);
        }
        if self.eat("array") {
            return self.array_body();
        }
        if self.eat("(object)") {
            self.expect("array")?;
            return self.array_body();
        }
        if rest.starts_with(b"\\") {
            // \Class::__set_state(array( ... ))
            while self.s.get(self.i).is_some_and(|b| *b != b'(') {
                self.i += 1;
            }
            self.expect("(")?;
            self.expect("array")?;
            let inner = self.array_body()?;
            self.expect(")")?;
            return Ok(inner);
        }
        for (word, value) in [
            ("NULL", PhpValue::Null),
            ("null", PhpValue::Null),
            ("true", PhpValue::Bool(true)),
            ("false", PhpValue::Bool(false)),
            ("INF", PhpValue::Float(f64::INFINITY)),
            ("-INF", PhpValue::Float(f64::NEG_INFINITY)),
            ("NAN", PhpValue::Float(f64::NAN)),
        ] {
            if rest.starts_with(word.as_bytes())
                && !rest
                    .get(word.len())
                    .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
            {
                self.i += word.len();
                return Ok(value);
            }
        }
        self.number()
    }

    fn number(&mut self) -> Result<PhpValue, String> {
        let start = self.i;
        while self
            .s
            .get(self.i)
            .is_some_and(|b| b.is_ascii_digit() || b"+-.eE".contains(b))
        {
            // A `-` after digits is `-9223372036854775807-1`, handled below.
            if self.i > start
                && self.s[self.i] == b'-'
                && !matches!(self.s[self.i - 1], b'e' | b'E')
            {
                break;
            }
            self.i += 1;
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).map_err(|e| e.to_string())?;
        if text.is_empty() {
            return Err(self.error("expected a value"));
        }
        if text.contains(['.', 'e', 'E']) {
            return text
                .parse::<f64>()
                .map(PhpValue::Float)
                .map_err(|_| self.error(&format!("bad number `{text}`")));
        }
        let n: i64 = text
            .parse()
            .map_err(|_| self.error(&format!("bad number `{text}`")))?;
        if self.eat("-1") {
            return Ok(PhpValue::Int(n - 1)); // PHP_INT_MIN
        }
        Ok(PhpValue::Int(n))
    }

    fn single_quoted(&mut self) -> Result<String, String> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            match self.s.get(self.i) {
                None => return Err(self.error("unterminated string")),
                Some(b'\'') => {
                    self.i += 1;
                    break;
                }
                Some(b'\\') if matches!(self.s.get(self.i + 1), Some(b'\\' | b'\'')) => {
                    out.push(self.s[self.i + 1]);
                    self.i += 2;
                }
                Some(b) => {
                    out.push(*b);
                    self.i += 1;
                }
            }
        }
        String::from_utf8(out).map_err(|_| self.error("a string is not UTF-8"))
    }

    /// var_export only writes `"\0"`; other simple escapes are read for good measure.
    fn double_quoted(&mut self) -> Result<String, String> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            match self.s.get(self.i) {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => {
                    self.i += 1;
                    break;
                }
                Some(b'\\') => {
                    let escaped = match self.s.get(self.i + 1) {
                        Some(b'0') => 0,
                        Some(b'n') => b'\n',
                        Some(b't') => b'\t',
                        Some(b'r') => b'\r',
                        Some(b) => *b,
                        None => return Err(self.error("unterminated string")),
                    };
                    out.push(escaped);
                    self.i += 2;
                }
                Some(b) => {
                    out.push(*b);
                    self.i += 1;
                }
            }
        }
        String::from_utf8(out).map_err(|_| self.error("a string is not UTF-8"))
    }

    /// After `array`: `( key => value, ... )`, at most [`MAX_CACHE_DEPTH`] arrays deep.
    fn array_body(&mut self) -> Result<PhpValue, String> {
        if self.depth >= MAX_CACHE_DEPTH {
            return Err(self.error(&format!(
                "arrays nest deeper than {MAX_CACHE_DEPTH} levels, which Laravel's configuration never does"
            )));
        }
        self.depth += 1;
        let body = self.array_entries();
        self.depth -= 1;
        body
    }

    fn array_entries(&mut self) -> Result<PhpValue, String> {
        self.expect("(")?;
        let mut entries = PhpArray::default();
        loop {
            if self.eat(")") {
                return Ok(entries.into_value());
            }
            let key = match self.value()? {
                PhpValue::Int(i) => ArrayKey::Int(i),
                PhpValue::Str(s) => match s.parse::<i64>() {
                    Ok(i) if i.to_string() == s => ArrayKey::Int(i),
                    _ => ArrayKey::Str(s),
                },
                other => return Err(self.error(&format!("unexpected array key {other:?}"))),
            };
            self.expect("=>")?;
            let value = self.value()?;
            entries.insert(Some(key), value);
            if !self.eat(",") {
                self.expect(")")?;
                return Ok(entries.into_value());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"<?php return array (
  'app' => 
  array (
    'name' => 'It\'s a \\ shop',
    'timezone' => 'Asia/Shanghai',
    'debug' => false,
    'providers' => 
    array (
      0 => 'Illuminate\\Bus\\BusServiceProvider',
    ),
  ),
  'database' => 
  array (
    'redis' => 
    array (
      'options' => 
      array (
        'prefix' => 'a' . "\0" . 'b',
      ),
      'cache' => 
      array (
        'url' => NULL,
        'port' => '6390',
        'database' => '2',
      ),
    ),
    'connections' => 
    array (
      'mysql' => 
      array (
        'options' => 
        array (
          1009 => '/ca.pem',
        ),
        'min' => -9223372036854775807-1,
        'ratio' => 1.0E+25,
        'half' => 0.5,
        'obj' => 
        (object) array(
           'x' => 1,
        ),
        'state' => 
        \Foo\Bar::__set_state(array(
           'y' => true,
        )),
      ),
    ),
  ),
);
"#;

    #[test]
    fn reads_var_export_output() {
        let config = parse_config_cache(SAMPLE).expect("parses");
        let s = |path: &str| config.lookup(path).and_then(PhpValue::to_php_string);
        assert_eq!(s("app.name").as_deref(), Some("It's a \\ shop"));
        assert_eq!(s("app.timezone").as_deref(), Some("Asia/Shanghai"));
        assert_eq!(config.lookup("app.debug"), Some(&PhpValue::Bool(false)));
        assert_eq!(
            s("app.providers.0").as_deref(),
            Some("Illuminate\\Bus\\BusServiceProvider")
        );
        assert_eq!(s("database.redis.options.prefix").as_deref(), Some("a\0b"));
        assert_eq!(
            config.lookup("database.redis.cache.url"),
            Some(&PhpValue::Null)
        );
        assert_eq!(s("database.redis.cache.port").as_deref(), Some("6390"));
        assert_eq!(
            s("database.connections.mysql.options.1009").as_deref(),
            Some("/ca.pem")
        );
        assert_eq!(
            config.lookup("database.connections.mysql.min"),
            Some(&PhpValue::Int(i64::MIN))
        );
        assert_eq!(
            config.lookup("database.connections.mysql.ratio"),
            Some(&PhpValue::Float(1.0e25))
        );
        assert_eq!(
            config.lookup("database.connections.mysql.obj.x"),
            Some(&PhpValue::Int(1))
        );
        assert_eq!(
            config.lookup("database.connections.mysql.state.y"),
            Some(&PhpValue::Bool(true))
        );
    }

    #[test]
    fn deep_or_huge_caches_fail_cleanly() {
        let n = 100_000;
        let deep = format!(
            "<?php return {}{};",
            "array ( 0 => ".repeat(n),
            "1, )".repeat(n)
        );
        let err = parse_config_cache(&deep).expect_err("too deep");
        assert!(err.contains("deeper than 256"), "{err}");

        // 300k entries, duplicates overwritten in place: linear, as PHP's own arrays.
        let mut big = String::from("<?php return array (\n");
        for i in 0..300_000 {
            big.push_str(&format!("  {} => 'v{i}',\n", i % 150_000));
        }
        big.push_str(");");
        let started = std::time::Instant::now();
        let config = parse_config_cache(&big).expect("parses");
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        assert!(matches!(&config, PhpValue::Array(e) if e.len() == 150_000));
        assert_eq!(
            config
                .lookup("7")
                .and_then(PhpValue::to_php_string)
                .as_deref(),
            Some("v150007")
        );
    }

    /// Mutated caches (bytes changed, dropped, repeated, cut), from a fixed seed: the reader
    /// returns a value or an error, and never panics.
    #[test]
    fn mutated_caches_never_panic() {
        let mut rng = fastrand::Rng::with_seed(9);
        let alphabet = b"()',.=>\\\"0-9eE aArrayNULL\n\0\xff";
        for _ in 0..3000 {
            let mut bytes = SAMPLE.as_bytes().to_vec();
            for _ in 0..rng.usize(1..8) {
                if bytes.is_empty() {
                    break;
                }
                let at = rng.usize(..bytes.len());
                match rng.u8(..4) {
                    0 => bytes[at] = alphabet[rng.usize(..alphabet.len())],
                    1 => {
                        bytes.remove(at);
                    }
                    2 => {
                        let end = (at + rng.usize(1..40)).min(bytes.len());
                        let piece = bytes[at..end].to_vec();
                        bytes.splice(at..at, piece);
                    }
                    _ => bytes.truncate(at.max(1)),
                }
            }
            let _ = parse_config_cache(&String::from_utf8_lossy(&bytes));
        }
    }

    #[test]
    fn rejects_what_is_not_var_export() {
        assert!(parse_config_cache("<?php return getenv('X');").is_err());
        assert!(parse_config_cache("<?php return array ('a' => 'b'").is_err());
        assert!(parse_config_cache("return array ();").is_err());
    }
}
