//! `REDIS_URL` / `DATABASE_URL` as Laravel reads them (`Illuminate\Support\ConfigurationUrlParser`,
//! the same in Laravel 8-12): PHP's `parse_url`, every component `rawurldecode`d and then
//! JSON-decoded when it is valid JSON (`6380` becomes a number, `null` null), merged over the
//! connection's other keys, with the query string (`?database=5&timeout=2`) merged last.

use std::collections::BTreeMap;

/// A URL component after Laravel's decoding.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum UrlValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

/// The parts of a connection URL Laravel merges over the connection's keys.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct UrlParts {
    /// `driver`, from the scheme with Laravel's aliases (`redis` -> `tcp`, `rediss` -> `tls`,
    /// `mysql2` -> `mysql`...).
    pub driver: Option<String>,
    /// `host`, `port`, `username`, `password`, `database` (the path without its `/`), when present.
    pub primary: BTreeMap<&'static str, UrlValue>,
    /// Query-string options, which win over everything.
    pub query: BTreeMap<String, UrlValue>,
}

impl UrlParts {
    /// The merged value of `key`: the query string first, then the URL's own parts.
    #[cfg(test)]
    pub(super) fn get(&self, key: &str) -> Option<&UrlValue> {
        self.query.get(key).or_else(|| self.primary.get(key))
    }
}

/// Parses `url` as Laravel does; `Err` for what PHP's `parse_url` rejects.
pub(super) fn parse(url: &str) -> Result<UrlParts, String> {
    // The value is already in the message, with its password masked; never repeat it here.
    let malformed =
        || "the URL is malformed (expected scheme://user:password@host:port/database)".to_string();
    // parse_url needs a scheme here; Laravel rewrites sqlite:/// only.
    let (scheme, rest) = url.split_once("://").ok_or_else(malformed)?;
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return Err(malformed());
    }
    let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i..])),
        None => (rest, None),
    };
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let (host, port) = if let Some(stripped) = hostport.strip_prefix('[') {
        let end = stripped.find(']').ok_or_else(malformed)?;
        let after = &stripped[end + 1..];
        (&hostport[..end + 2], after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let mut primary = BTreeMap::new();
    if !host.is_empty() {
        primary.insert("host", decode(host));
    }
    if let Some(port) = port.filter(|p| !p.is_empty()) {
        let port: i64 = port.parse().map_err(|_| malformed())?;
        if !(0..=65535).contains(&port) {
            return Err(malformed());
        }
        primary.insert("port", UrlValue::Int(port));
    }
    if let Some(userinfo) = userinfo {
        let (user, pass) = match userinfo.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (userinfo, None),
        };
        primary.insert("username", decode(user));
        if let Some(pass) = pass {
            primary.insert("password", decode(pass));
        }
    }
    if let Some(path) = path.filter(|p| *p != "/") {
        primary.insert("database", decode(&path[1..]));
    }
    let mut parsed_query = BTreeMap::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        // parse_str decodes '+' as a space, unlike rawurldecode.
        let k = percent_decode(&k.replace('+', " "));
        let v = percent_decode(&v.replace('+', " "));
        parsed_query.insert(k, json_or_string(&v));
    }
    let driver = match scheme.to_ascii_lowercase().as_str() {
        "redis" => "tcp",
        "rediss" => "tls",
        "mysql2" => "mysql",
        "postgres" | "postgresql" => "pgsql",
        "sqlite3" => "sqlite",
        "mssql" => "sqlsrv",
        other => other,
    }
    .to_string();
    Ok(UrlParts {
        driver: Some(driver),
        primary,
        query: parsed_query,
    })
}

/// `rawurldecode`, then JSON-decode when the result is valid JSON.
fn decode(component: &str) -> UrlValue {
    json_or_string(&percent_decode(component))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        if let Some(b) = hex {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What PHP's `json_decode($v, true)` gives for a scalar, or the string when it is not JSON.
fn json_or_string(s: &str) -> UrlValue {
    match serde_json::from_str::<serde_json::Value>(s) {
        Ok(serde_json::Value::Null) => UrlValue::Null,
        Ok(serde_json::Value::Bool(b)) => UrlValue::Bool(b),
        Ok(serde_json::Value::Number(n)) => n
            .as_i64()
            .map(UrlValue::Int)
            .or_else(|| n.as_f64().map(UrlValue::Float))
            .unwrap_or_else(|| UrlValue::Str(s.to_string())),
        Ok(serde_json::Value::String(inner)) => UrlValue::Str(inner),
        // Arrays and objects only come from exotic URLs; keep the text.
        _ => UrlValue::Str(s.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_urls() {
        let p = parse("redis://user:p%40ss@cache.example:6380/2?timeout=2.5").expect("valid");
        assert_eq!(p.driver.as_deref(), Some("tcp"));
        assert_eq!(p.get("host"), Some(&UrlValue::Str("cache.example".into())));
        assert_eq!(p.get("port"), Some(&UrlValue::Int(6380)));
        assert_eq!(p.get("username"), Some(&UrlValue::Str("user".into())));
        assert_eq!(p.get("password"), Some(&UrlValue::Str("p@ss".into())));
        assert_eq!(p.get("database"), Some(&UrlValue::Int(2)));
        assert_eq!(p.get("timeout"), Some(&UrlValue::Float(2.5)));

        let p = parse("rediss://:secret@h").expect("valid");
        assert_eq!(p.driver.as_deref(), Some("tls"));
        assert_eq!(p.get("username"), Some(&UrlValue::Str(String::new())));
        assert_eq!(p.get("database"), None);
        assert_eq!(p.get("port"), None);

        let p = parse("redis://h:6379/?database=5").expect("valid");
        assert_eq!(p.get("database"), Some(&UrlValue::Int(5)));
        let p = parse("redis://h/null").expect("valid");
        assert_eq!(p.get("database"), Some(&UrlValue::Null));
    }

    #[test]
    fn mysql_urls() {
        let p =
            parse("mysql://shop:s%2Fcret@db.internal:3307/shop_db?charset=utf8mb4").expect("valid");
        assert_eq!(p.driver.as_deref(), Some("mysql"));
        assert_eq!(p.get("password"), Some(&UrlValue::Str("s/cret".into())));
        assert_eq!(p.get("database"), Some(&UrlValue::Str("shop_db".into())));
        assert_eq!(
            parse("mysql2://h/db").expect("valid").driver.as_deref(),
            Some("mysql")
        );
        assert!(parse("not a url").is_err());
        assert!(parse("redis://h:99999").is_err());
    }
}
