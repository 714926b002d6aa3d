//! A `.env` parser with the exact rules of phpdotenv 5 (vlucas/phpdotenv 5.4), which Laravel 8-12
//! use to load the app's `.env`.
//!
//! Why not the dotenvy crate: on inputs real apps have, it reads a different value than Laravel.
//! `DB_PASSWORD=p@ss#word` is `p@ss` to Laravel (`#` starts a comment anywhere in an unquoted
//! value) and `p@ss#word` to dotenvy; `pa$word` is literal to Laravel and substituted by dotenvy;
//! an undefined `${X}` stays `${X}` in Laravel and becomes empty in dotenvy; `APP_NAME=My Shop`
//! is an error in Laravel ("The environment file is invalid!") and accepted by dotenvy; for a
//! duplicated key Laravel keeps the last value and dotenvy the first. A drop-in replacement must
//! read the credentials Laravel reads, so this module follows phpdotenv step by step:
//!
//! 1. split into lines on `\r\n`, `\n` or a lone `\r`;
//! 2. join multi-line double-quoted values (a line with `="` whose quote is not closed starts a
//!    block that ends at the next line with an unescaped `"`; a block that never ends drops that
//!    entry and every following line, silently, as phpdotenv does);
//! 3. skip blank lines and lines starting with `#`;
//! 4. split each entry at the first `=`, trim both sides; no `=` means "unset this variable";
//! 5. read the name (optional `export `, optional quotes, `[a-zA-Z0-9_.]+`);
//! 6. run the value through phpdotenv's lexer and state machine (unquoted, single-quoted,
//!    double-quoted with escapes, comments, whitespace), remembering where each unescaped `$`
//!    was;
//! 7. at those positions replace `${NAME}` with the variable's value (the process environment
//!    first, then earlier lines), leaving unknown names as they are.

use std::collections::HashMap;

/// One error, with the 1-based line number where the bad entry starts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {message}")]
pub struct DotenvError {
    pub line: usize,
    pub message: String,
}

/// Parses `.env` text the way Laravel 8-12 (phpdotenv 5.4) loads it and returns the variables the
/// file defines, in the order of first definition, with their final values as Laravel's
/// immutable repository would hold them. `process_env` answers for variables already in the
/// process environment: those are never overwritten by the file (so they are left out of the
/// result) and they win when `${NAME}` is interpolated. A name that the file unsets (a line with
/// no `=`) is absent from the result.
pub fn parse(
    text: &str,
    process_env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, DotenvError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut order: Vec<String> = Vec::new();
    let mut loaded: HashMap<String, Option<String>> = HashMap::new();
    for (line, entry) in entries(text) {
        let (name, value) = split_entry(&entry).map_err(|message| DotenvError { line, message })?;
        let name = parse_name(name).map_err(|message| DotenvError { line, message })?;
        // The repository is immutable for variables defined outside the file.
        let external = process_env(&name).is_some();
        let value = match value {
            None => None,
            Some(raw) => {
                let parsed = parse_value(raw).map_err(|message| DotenvError { line, message })?;
                Some(parsed.resolve(&|var: &str| {
                    process_env(var).or_else(|| loaded.get(var).cloned().flatten())
                }))
            }
        };
        if external {
            continue;
        }
        if !loaded.contains_key(&name) {
            order.push(name.clone());
        }
        loaded.insert(name, value);
    }
    Ok(order
        .into_iter()
        .filter_map(|name| {
            let value = loaded.remove(&name).flatten()?;
            Some((name, value))
        })
        .collect())
}

/// Steps 1-3: the entries of the file, each with the line it starts on.
fn entries(text: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut rest = text;
    loop {
        match rest.find(['\r', '\n']) {
            Some(i) => {
                lines.push(&rest[..i]);
                let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = &rest[i + skip..];
            }
            None => {
                lines.push(rest);
                break;
            }
        }
    }

    let mut out = Vec::new();
    let mut buffer: Vec<&str> = Vec::new();
    let mut buffer_start = 0;
    for (index, line) in lines.into_iter().enumerate() {
        let number = index + 1;
        let started = buffer.is_empty() && looks_like_multiline_start(line);
        let entry = if started || !buffer.is_empty() {
            if buffer.is_empty() {
                buffer_start = number;
            }
            buffer.push(line);
            if looks_like_multiline_stop(line, started) {
                let joined = buffer.join("\n");
                buffer.clear();
                Some((buffer_start, joined))
            } else {
                None
            }
        } else {
            Some((number, line.to_string()))
        };
        if let Some((number, entry)) = entry {
            let trimmed = entry.trim();
            if !trimmed.is_empty() && !trimmed.starts_with('#') {
                out.push((number, entry));
            }
        }
    }
    // An unterminated block is dropped with everything after it, without an error.
    out
}

fn looks_like_multiline_start(line: &str) -> bool {
    line.contains("=\"") && !looks_like_multiline_stop(line, true)
}

/// phpdotenv counts the `"` preceded by a character other than `\` (after deleting `\\` pairs);
/// a line that opened a block needs two of them to also close it.
fn looks_like_multiline_stop(line: &str, started: bool) -> bool {
    if line == "\"" {
        return true;
    }
    let cleaned = line.replace("\\\\", "");
    let bytes = cleaned.as_bytes();
    let count = bytes
        .windows(2)
        .filter(|w| w[1] == b'"' && w[0] != b'\\')
        .count();
    if started { count > 1 } else { count >= 1 }
}

/// Step 4: `(name, Some(value))`, or `(name, None)` for a line without `=`.
fn split_entry(entry: &str) -> Result<(&str, Option<&str>), String> {
    let (name, value) = match entry.split_once('=') {
        Some((name, value)) => (name.trim(), Some(value.trim())),
        None => (entry.trim(), None),
    };
    if name.is_empty() {
        return Err(error_message("an unexpected equals", entry));
    }
    Ok((name, value))
}

/// Step 5.
fn parse_name(name: &str) -> Result<String, String> {
    let mut name = name;
    // phpdotenv strips `export` only when the whole name part is longer than 8 characters.
    if name.chars().count() > 8
        && name.starts_with("export")
        && name[6..].starts_with(|c: char| c.is_ascii_whitespace())
    {
        name = name[6..].trim_start();
    }
    let quoted = name.chars().count() >= 3
        && ((name.starts_with('"') && name.ends_with('"'))
            || (name.starts_with('\'') && name.ends_with('\'')));
    if quoted {
        name = &name[1..name.len() - 1];
    }
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
    if !valid {
        return Err(error_message("an invalid name", name));
    }
    Ok(name.to_string())
}

fn error_message(cause: &str, subject: &str) -> String {
    let first_line = subject.split('\n').next().unwrap_or(subject);
    format!("Failed to parse dotenv file. Encountered {cause} at [{first_line}].")
}

/// A parsed value: its characters and the byte offsets of unescaped `$` (interpolation points).
struct Value {
    chars: String,
    vars: Vec<usize>,
}

impl Value {
    /// Step 7: replaces `${NAME}` at each `$` position, from the last to the first so that
    /// earlier offsets stay valid; unknown names are left as written.
    fn resolve(self, lookup: &dyn Fn(&str) -> Option<String>) -> String {
        let mut s = self.chars;
        for &at in self.vars.iter().rev() {
            let tail = &s[at..];
            let Some(inner) = tail.strip_prefix("${") else {
                continue;
            };
            let len = inner
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'.')
                .count();
            if len == 0 || inner.as_bytes().get(len) != Some(&b'}') {
                continue;
            }
            let name = &inner[..len];
            if let Some(value) = lookup(name) {
                let end = at + 2 + len + 1;
                s = format!("{}{}{}", &s[..at], value, &s[end..]);
            }
        }
        s
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Initial,
    Unquoted,
    SingleQuoted,
    DoubleQuoted,
    Escape,
    Whitespace,
    Comment,
}

/// phpdotenv's lexer: runs of newlines, runs of other whitespace, and the single characters
/// `\`, `'`, `"`, `#`, `$`; everything else in runs.
fn lex(value: &str) -> Vec<&str> {
    #[derive(PartialEq)]
    enum Class {
        Newline,
        Space,
        Single,
        Other,
    }
    let class = |c: char| match c {
        '\r' | '\n' => Class::Newline,
        '\\' | '\'' | '"' | '#' | '$' => Class::Single,
        c if c.is_whitespace() => Class::Space,
        _ => Class::Other,
    };
    let mut tokens = Vec::new();
    let mut chars = value.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        let kind = class(c);
        let mut end = start + c.len_utf8();
        if kind != Class::Single {
            while let Some(&(j, d)) = chars.peek() {
                if class(d) != kind {
                    break;
                }
                end = j + d.len_utf8();
                chars.next();
            }
        }
        tokens.push(&value[start..end]);
    }
    tokens
}

/// Step 6: phpdotenv's value state machine.
fn parse_value(raw: &str) -> Result<Value, String> {
    let mut value = Value {
        chars: String::new(),
        vars: Vec::new(),
    };
    if raw.trim().is_empty() {
        return Ok(value);
    }
    let mut state = State::Initial;
    for token in lex(raw) {
        let is_space = token.chars().all(char::is_whitespace);
        let (text, var, next): (&str, bool, State) = match state {
            State::Initial => match token {
                "'" => ("", false, State::SingleQuoted),
                "\"" => ("", false, State::DoubleQuoted),
                "#" => ("", false, State::Comment),
                "$" => (token, true, State::Unquoted),
                _ => (token, false, State::Unquoted),
            },
            State::Unquoted => match token {
                "#" => ("", false, State::Comment),
                _ if is_space => ("", false, State::Whitespace),
                "$" => (token, true, State::Unquoted),
                _ => (token, false, State::Unquoted),
            },
            State::SingleQuoted => match token {
                "'" => ("", false, State::Whitespace),
                _ => (token, false, State::SingleQuoted),
            },
            State::DoubleQuoted => match token {
                "\"" => ("", false, State::Whitespace),
                "\\" => ("", false, State::Escape),
                "$" => (token, true, State::DoubleQuoted),
                _ => (token, false, State::DoubleQuoted),
            },
            State::Escape => match token {
                "\"" | "\\" | "$" => (token, false, State::DoubleQuoted),
                _ => {
                    let mut chars = token.chars();
                    let escaped = match chars.next() {
                        Some('f') => '\x0c',
                        Some('n') => '\n',
                        Some('r') => '\r',
                        Some('t') => '\t',
                        Some('v') => '\x0b',
                        _ => return Err(error_message("an unexpected escape sequence", raw)),
                    };
                    value.chars.push(escaped);
                    value.chars.push_str(chars.as_str());
                    state = State::DoubleQuoted;
                    continue;
                }
            },
            State::Whitespace => match token {
                "#" => ("", false, State::Comment),
                _ if is_space => ("", false, State::Whitespace),
                _ => return Err(error_message("unexpected whitespace", raw)),
            },
            State::Comment => ("", false, State::Comment),
        };
        if var {
            value.vars.push(value.chars.len());
        }
        value.chars.push_str(text);
        state = next;
    }
    match state {
        State::SingleQuoted | State::DoubleQuoted | State::Escape => {
            Err(error_message("a missing closing quote", raw))
        }
        _ => Ok(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Vec<(String, String)>, DotenvError> {
        parse(text, &|_| None)
    }

    fn get(text: &str, name: &str) -> Option<String> {
        load(text)
            .expect("valid .env")
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    fn fails(text: &str) -> String {
        load(text).expect_err("must be rejected").to_string()
    }

    #[test]
    fn unquoted_values() {
        let cases = [
            ("A=plain", "plain"),
            ("A = spaced ", "spaced"),
            ("P=p@ss#word", "p@ss"),
            ("P=pa$word", "pa$word"),
            ("A=$HOME_X", "$HOME_X"),
            ("A=C:\\path", "C:\\path"),
            ("A=a\"b", "a\"b"),
            ("A=a'b", "a'b"),
            ("A=x # comment", "x"),
            ("A=(null)", "(null)"),
            ("A=${NAME:-x}", "${NAME:-x}"),
            ("A=a=b", "a=b"),
        ];
        for (line, expected) in cases {
            assert_eq!(
                get(line, "A").or_else(|| get(line, "P")).as_deref(),
                Some(expected),
                "{line}"
            );
        }
    }

    #[test]
    fn quoted_values() {
        let cases = [
            ("A='single $X ${Y} \\n'", "single $X ${Y} \\n"),
            ("A=\"x\\ty\"", "x\ty"),
            ("A=\"a\\\"b\\\\c\"", "a\"b\\c"),
            ("A=\"\\$X\"", "$X"),
            ("A=\"f\\fv\\vr\\rn\\n\"", "f\x0cv\x0br\rn\n"),
            ("A=\"My Shop\"", "My Shop"),
            ("A=\"x\" # comment", "x"),
            ("A=\"p@ss#word\"", "p@ss#word"),
            ("A=\"pa$word\"", "pa$word"),
        ];
        for (line, expected) in cases {
            assert_eq!(get(line, "A").as_deref(), Some(expected), "{line}");
        }
    }

    #[test]
    fn empty_values() {
        for line in ["A=", "A=\"\"", "A=''", "A= # c", "A=#c"] {
            assert_eq!(get(line, "A").as_deref(), Some(""), "{line}");
        }
    }

    #[test]
    fn invalid_entries_are_errors_as_in_laravel() {
        assert_eq!(
            fails("APP_NAME=My Shop"),
            "line 1: Failed to parse dotenv file. Encountered unexpected whitespace at [My Shop]."
        );
        assert!(fails("A=\"x\"y").contains("unexpected whitespace"));
        assert!(fails("A=\"x\"\"y\"").contains("unexpected whitespace"));
        assert!(fails("A=a\\ b").contains("unexpected whitespace"));
        assert!(fails("A=\"\\q\"").contains("an unexpected escape sequence"));
        assert!(fails("A='it''s'").contains("unexpected whitespace"));
        assert!(fails("OK=1\n=x").starts_with("line 2:"));
        assert!(fails("export A=1").contains("an invalid name"));
        assert!(fails("A-B=1").contains("an invalid name"));
        assert!(fails("A='multi\nline'").contains("missing closing quote"));
    }

    #[test]
    fn names() {
        assert_eq!(get("export AB=1", "AB").as_deref(), Some("1"));
        assert_eq!(get("export\tLONGER=1", "LONGER").as_deref(), Some("1"));
        assert_eq!(get("\"QUOTED\"=1", "QUOTED").as_deref(), Some("1"));
        assert_eq!(get("'Q'=1", "Q").as_deref(), Some("1"));
        assert!(
            fails("''=1").contains("an invalid name"),
            "a quoted name needs 3 characters"
        );
        assert_eq!(get("1A=x", "1A").as_deref(), Some("x"));
        assert_eq!(get("a.b=x", "a.b").as_deref(), Some("x"));
    }

    #[test]
    fn lines_comments_and_line_endings() {
        let text = "\u{feff}# comment\r\nA=1\rB=2\n\n   # indented comment\nC=3";
        let vars = load(text).expect("valid");
        assert_eq!(
            vars,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "2".into()),
                ("C".into(), "3".into())
            ]
        );
    }

    #[test]
    fn multi_line_double_quotes() {
        assert_eq!(
            get("A=\"line1\nline2\"\nB=2", "A").as_deref(),
            Some("line1\nline2")
        );
        assert_eq!(get("A=\"line1\nline2\"\nB=2", "B").as_deref(), Some("2"));
        // Never closed: that entry and everything after it disappear without an error.
        let vars = load("Z=0\nA=\"x\nB=2").expect("no error");
        assert_eq!(vars, vec![("Z".into(), "0".into())]);
    }

    #[test]
    fn duplicates_last_wins_and_bare_names_unset() {
        assert_eq!(get("A=1\nA=2", "A").as_deref(), Some("2"));
        assert_eq!(get("A=1\nA", "A"), None);
        let vars = load("A=1\nB=2\nA=3").expect("valid");
        assert_eq!(
            vars,
            vec![("A".into(), "3".into()), ("B".into(), "2".into())]
        );
    }

    #[test]
    fn interpolation() {
        assert_eq!(get("A=x\nB=${A}y", "B").as_deref(), Some("xy"));
        assert_eq!(get("A=x\nB=\"${A} ${A}\"", "B").as_deref(), Some("x x"));
        assert_eq!(get("B=${UNDEF}", "B").as_deref(), Some("${UNDEF}"));
        assert_eq!(
            get("B=${A}\nA=x", "B").as_deref(),
            Some("${A}"),
            "no forward references"
        );
        assert_eq!(get("A=x\nB=$A", "B").as_deref(), Some("$A"));
        assert_eq!(get("A=x\nB=\"\\${A}\"", "B").as_deref(), Some("${A}"));
        assert_eq!(get("A=x\nB='${A}'", "B").as_deref(), Some("${A}"));
    }

    #[test]
    fn the_process_environment_is_immutable_and_wins() {
        let process = |name: &str| (name == "HOST").then(|| "from-process".to_string());
        let vars = parse("HOST=from-file\nURL=http://${HOST}/", &process).expect("valid");
        assert_eq!(vars, vec![("URL".into(), "http://from-process/".into())]);
    }
}
