//! A `.env` parser with the exact rules of phpdotenv 5 (vlucas/phpdotenv), which Laravel 8-12
//! use to load the app's `.env`: the 5.4 rules (Laravel 8-10) or the 5.5+ rules (Laravel 11-12),
//! see [`DotenvRules`].
//!
//! Why not the dotenvy crate: on inputs real apps have, it reads a different value than Laravel.
//! `DB_PASSWORD=p@ss#word` is `p@ss` to Laravel (`#` starts a comment anywhere in an unquoted
//! value) and `p@ss#word` to dotenvy; `pa$word` is literal to Laravel and substituted by dotenvy;
//! an undefined `${X}` stays `${X}` in Laravel and becomes empty in dotenvy; `APP_NAME=My Shop`
//! is an error in Laravel ("The environment file is invalid!") and accepted by dotenvy; for a
//! duplicated key Laravel keeps the last value and dotenvy the first. A drop-in replacement must
//! read the credentials Laravel reads, so this module follows phpdotenv step by step:
//!
//! 0. decode the bytes as phpdotenv's `Str::utf8` does (`mb_convert_encoding` to UTF-8, each
//!    invalid sequence becomes `?`), then drop a UTF-8 byte order mark;
//! 1. split into lines on `\r\n`, `\n` or a lone `\r`;
//! 2. join multi-line double-quoted values (a line with `="` whose quote is not closed starts a
//!    block that ends at the next line with an unescaped `"`; a block that never ends drops that
//!    entry and every following line, silently, as phpdotenv does);
//! 3. skip blank lines and lines starting with `#`;
//! 4. split each entry at the first `=`, trim both sides; no `=` means "unset this variable";
//! 5. read the name (optional `export `, optional quotes, then the name grammar of the rules);
//! 6. run the value through phpdotenv's lexer and state machine (unquoted, single-quoted,
//!    double-quoted with escapes, comments, whitespace), remembering where each unescaped `$`
//!    was;
//! 7. at those positions replace `${NAME}` with the variable's value (the process environment
//!    first, then earlier lines), leaving unknown names as they are.
//!
//! Whitespace is PHP's, which is ASCII only: `trim()` strips space, `\t`, `\n`, `\r`, NUL and
//! `\v` (not `\f`), and the lexer's and `ctype_space()`'s whitespace is space, `\t`, `\n`,
//! `\r`, `\v` and `\f`. A no-break space is an ordinary character of a value to Laravel, so it
//! is one here too; Rust's Unicode-aware `trim()` and `is_whitespace()` are never used.
//!
//! Errors never contain a value (a broken line is often a password), only the line number, the
//! variable name when it is valid, and what is wrong.

use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;

pub use super::version::DotenvRules;

/// One error, with the 1-based line number where the bad entry starts and the variable's name
/// when the name itself is valid. It never holds the value.
#[derive(Debug, PartialEq, Eq)]
pub struct DotenvError {
    /// The 1-based line where the bad entry starts.
    pub line: usize,
    /// The variable's name, when the name itself is valid.
    pub name: Option<String>,
    /// What is wrong with the entry.
    pub problem: Problem,
}

/// What phpdotenv rejects, in its own words ("Encountered ...") with the fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// An entry has nothing before its `=`.
    UnexpectedEquals,
    /// A name outside the grammar of these rules (5.5 also accepts Unicode letters and marks).
    InvalidName(DotenvRules),
    /// An unquoted value has whitespace followed by something other than a `#` comment.
    UnexpectedWhitespace,
    /// A double-quoted value has a `\` before a character that is not an allowed escape.
    UnexpectedEscape,
    /// A quoted value (or an escape at its end) is not closed by the end of the entry.
    MissingClosingQuote,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UnexpectedEquals => "an unexpected equals: a line starts with `=`, give the variable a name",
            Self::InvalidName(DotenvRules::Before5_5) => {
                "an invalid name: phpdotenv 5.4 accepts ASCII letters, digits, `_` and `.`"
            }
            Self::InvalidName(DotenvRules::From5_5) => {
                "an invalid name: phpdotenv 5.5+ accepts letters, marks, digits, `_` and `.`"
            }
            Self::UnexpectedWhitespace => {
                "unexpected whitespace in the value: put a value with spaces in double quotes"
            }
            Self::UnexpectedEscape => {
                "an unexpected escape sequence in the double-quoted value: only \\\\, \\\", \\$, \\f, \\n, \\r, \\t and \\v are allowed"
            }
            Self::MissingClosingQuote => "a missing closing quote in the value",
        })
    }
}

impl fmt::Display for DotenvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "line {} ({name}): {}", self.line, self.problem),
            None => write!(f, "line {}: {}", self.line, self.problem),
        }
    }
}

impl std::error::Error for DotenvError {}

/// The text phpdotenv parses from the file's bytes: `Str::utf8` converts them with
/// `mb_convert_encoding($input, 'UTF-8')`, which replaces each invalid UTF-8 sequence with `?`
/// (checked against PHP 8.2 by the parity test), then drops a byte order mark. So a value with
/// a stray Latin-1 byte becomes the same `?` bytes Laravel builds its keys and passwords from.
pub fn decode(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        text.push_str(chunk.valid());
        if !chunk.invalid().is_empty() {
            text.push('?');
        }
    }
    match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    }
}

/// Parses `.env` text (see [`decode`]) the way phpdotenv with `rules` loads it and returns the
/// variables the file defines, in the order of first definition, with their final values as
/// Laravel's immutable repository would hold them. `process_env` answers for variables already
/// in the process environment: those are never overwritten by the file (so they are left out of
/// the result) and they win when `${NAME}` is interpolated. A name that the file unsets (a line
/// with no `=`) is absent from the result.
pub fn parse(
    text: &str,
    rules: DotenvRules,
    process_env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, DotenvError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut order: Vec<String> = Vec::new();
    let mut loaded: HashMap<String, Option<String>> = HashMap::new();
    for (line, entry) in entries(text, rules) {
        let fail = |name: Option<&str>, problem| DotenvError {
            line,
            name: name.map(str::to_string),
            problem,
        };
        let (name, value) = split_entry(&entry).map_err(|problem| fail(None, problem))?;
        let name = parse_name(name, rules).map_err(|problem| fail(None, problem))?;
        // The repository is immutable for variables defined outside the file.
        let external = process_env(&name).is_some();
        let value = match value {
            None => None,
            Some(raw) => {
                let parsed = parse_value(raw).map_err(|problem| fail(Some(&name), problem))?;
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

/// PHP's `trim()` with its default characters: space, `\t`, `\n`, `\r`, NUL, `\v`.
fn php_trim(s: &str) -> &str {
    s.trim_matches([' ', '\t', '\n', '\r', '\0', '\x0b'])
}

/// PHP's `ctype_space()` (C locale): a non-empty run of space, `\t`, `\n`, `\r`, `\v`, `\f`.
fn ctype_space(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_ascii_space)
}

fn is_ascii_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c')
}

/// Steps 1-3: the entries of the file, each with the line it starts on.
fn entries(text: &str, rules: DotenvRules) -> Vec<(usize, String)> {
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
        // phpdotenv before 5.5 asks "does this line start a value?" even inside an open one
        // (Lines::multilineProcess in v5.4.1), and such a line then needs two quotes to close.
        let may_start = buffer.is_empty() || rules == DotenvRules::Before5_5;
        let started = may_start && looks_like_multiline_start(line);
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
            let trimmed = php_trim(&entry);
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
fn split_entry(entry: &str) -> Result<(&str, Option<&str>), Problem> {
    let (name, value) = match entry.split_once('=') {
        Some((name, value)) => (php_trim(name), Some(php_trim(value))),
        None => (php_trim(entry), None),
    };
    if name.is_empty() {
        return Err(Problem::UnexpectedEquals);
    }
    Ok((name, value))
}

/// Step 5.
fn parse_name(name: &str, rules: DotenvRules) -> Result<String, Problem> {
    let mut name = name;
    // phpdotenv strips `export` only when the whole name part is longer than 8 characters and
    // the 7th character is ASCII whitespace (`ctype_space`).
    if name.chars().count() > 8
        && name.starts_with("export")
        && name[6..].starts_with(|c: char| c.is_ascii() && is_ascii_space(c as u8))
    {
        name = name[6..].trim_start_matches([' ', '\t', '\n', '\r', '\0', '\x0b']);
    }
    let quoted = name.chars().count() >= 3
        && ((name.starts_with('"') && name.ends_with('"'))
            || (name.starts_with('\'') && name.ends_with('\'')));
    if quoted {
        name = &name[1..name.len() - 1];
    }
    if !is_valid_name(name, rules) {
        return Err(Problem::InvalidName(rules));
    }
    Ok(name.to_string())
}

/// `EntryParser::isValidName`: `~\A[a-zA-Z0-9_.]+\z~` before 5.5,
/// `~(*UTF8)\A[\p{Ll}\p{Lu}\p{M}\p{N}_.]+\z~` from 5.5 (so `AlbertÅberg` is a name there, and
/// `名前`, whose letters are `Lo`, is not).
pub fn is_valid_name(name: &str, rules: DotenvRules) -> bool {
    static UNICODE_NAME: LazyLock<Option<regex::Regex>> =
        LazyLock::new(|| regex::Regex::new(r"\A[\p{Ll}\p{Lu}\p{M}\p{N}_.]+\z").ok());
    match rules {
        DotenvRules::Before5_5 => {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        }
        DotenvRules::From5_5 => UNICODE_NAME
            .as_ref()
            .is_some_and(|pattern| pattern.is_match(name)),
    }
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

/// phpdotenv's lexer (`Lexer::PATTERNS`, PCRE without the `u` flag, so whitespace is ASCII):
/// runs of newlines, runs of space, `\t`, `\v` and `\f`, and the single characters `\`, `'`, `"`,
/// `#`, `$`; everything else, a no-break space included, in runs.
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
        ' ' | '\t' | '\x0b' | '\x0c' => Class::Space,
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
fn parse_value(raw: &str) -> Result<Value, Problem> {
    let mut value = Value {
        chars: String::new(),
        vars: Vec::new(),
    };
    if php_trim(raw).is_empty() {
        return Ok(value);
    }
    let mut state = State::Initial;
    for token in lex(raw) {
        let is_space = ctype_space(token);
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
                        _ => return Err(Problem::UnexpectedEscape),
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
                _ => return Err(Problem::UnexpectedWhitespace),
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
            Err(Problem::MissingClosingQuote)
        }
        _ => Ok(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Vec<(String, String)>, DotenvError> {
        parse(text, DotenvRules::Before5_5, &|_| None)
    }

    fn load_5_5(text: &str) -> Result<Vec<(String, String)>, DotenvError> {
        parse(text, DotenvRules::From5_5, &|_| None)
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
            "line 1 (APP_NAME): unexpected whitespace in the value: put a value with spaces in double quotes"
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
        let vars = parse(
            "HOST=from-file\nURL=http://${HOST}/",
            DotenvRules::Before5_5,
            &process,
        )
        .expect("valid");
        assert_eq!(vars, vec![("URL".into(), "http://from-process/".into())]);
    }

    #[test]
    fn whitespace_is_ascii_as_in_php() {
        // A no-break space or an ideographic space is an ordinary character of a value.
        assert_eq!(
            get("SHOP_NAME=Mall\u{a0}Shop", "SHOP_NAME").as_deref(),
            Some("Mall\u{a0}Shop")
        );
        assert_eq!(get("A=x\u{3000}y", "A").as_deref(), Some("x\u{3000}y"));
        // trim() keeps a trailing no-break space and a leading form feed.
        assert_eq!(get("A=x\u{a0}", "A").as_deref(), Some("x\u{a0}"));
        assert_eq!(get("A=\x0cx", "A").as_deref(), Some("\x0cx"));
        // A line of a form feed alone is not blank to trim(), and has no name.
        assert!(fails("\x0c").contains("an invalid name"));
        assert!(fails("NAME\u{a0}=x").contains("an invalid name"));
        assert!(fails("X=\"x\"\u{a0}# note").contains("unexpected whitespace"));
        // ASCII whitespace still separates: \v and \f end an unquoted value like a space.
        assert!(fails("A=x\x0by").contains("unexpected whitespace"));
        assert_eq!(get("A=x\x0b# c", "A").as_deref(), Some("x"));
    }

    #[test]
    fn invalid_utf8_becomes_question_marks_as_mb_convert_encoding_makes_it() {
        assert_eq!(decode(b"A=a\xffb\xc3"), "A=a?b?");
        assert_eq!(decode(b"\xef\xbb\xbfA=1"), "A=1");
        assert_eq!(decode("A=商城".as_bytes()), "A=商城");
    }

    #[test]
    fn unicode_names_from_5_5_only() {
        // phpdotenv v5.5.0 (commit 1a7ea2a, EntryParser::isValidName): letters Ll/Lu, marks,
        // numbers, `_` and `.`; its own fixture has `AlbertÅberg=Skybert`.
        assert!(fails("AlbertÅberg=Skybert").contains("phpdotenv 5.4"));
        let vars =
            load_5_5("AlbertÅberg=Skybert\nÉTÉ_2=x\nNAÏVE=y\nA\u{301}=z").expect("5.5 names");
        let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["AlbertÅberg", "ÉTÉ_2", "NAÏVE", "A\u{301}"]);
        // Other letters (Lo, Lt, Lm) and symbols are still invalid.
        for line in ["名前=x", "ǅ=x", "A-B=x", "A\u{a0}=x", "€=x"] {
            let error = load_5_5(line).expect_err(line);
            assert_eq!(
                error.problem,
                Problem::InvalidName(DotenvRules::From5_5),
                "{line}"
            );
        }
        assert!(!is_valid_name("", DotenvRules::From5_5));
    }

    #[test]
    fn a_start_inside_a_multi_line_value_closes_it_from_5_5() {
        // Inside an open value, `B="y` looks like a new start. phpdotenv 5.4 then needs two
        // quotes on the line (so the value goes on); 5.5 closes the value with the one quote
        // (Lines::multilineProcess, `$startsOnCurrentLine`).
        let text = "A=\"x\n=\" # c\nB=1\"";
        let a = ("A".to_string(), "x\n=".to_string());
        assert_eq!(load(text).expect("5.4"), vec![a.clone()]);
        assert_eq!(
            load_5_5(text).expect("5.5"),
            vec![a, ("B".to_string(), "1\"".to_string())]
        );
        let text = "A=\"x\nB=\"y\nC=2";
        assert_eq!(load(text).expect("5.4 drops the open block"), vec![]);
        assert_eq!(
            load_5_5(text).expect_err("5.5 closes it").problem,
            Problem::UnexpectedWhitespace
        );
    }

    #[test]
    fn errors_never_print_a_value() {
        for text in [
            "DB_PASSWORD=p@ss word X",
            "DB_PASSWORD='p@ss word X",
            "DB_PASSWORD=\"p@ss\\qword X\"",
            "p@ss word X",
            "p@ss=word X",
            "=p@ss word X",
        ] {
            let message = fails(text);
            assert!(!message.contains("p@ss"), "{text:?} -> {message}");
            assert!(message.starts_with("line 1"), "{message}");
        }
        assert!(fails("DB_PASSWORD=p@ss word X").contains("(DB_PASSWORD)"));
    }

    /// Random `.env` bytes from a fixed seed, rich in the characters the parser branches on.
    fn random_env(rng: &mut fastrand::Rng) -> Vec<u8> {
        const PIECES: &[&[u8]] = &[
            b"=",
            b"\"",
            b"'",
            b"$",
            b"{",
            b"}",
            b"${A}",
            b"\\",
            b"\n",
            b"\r",
            b"\r\n",
            b"#",
            b" ",
            b"\t",
            b"\x0b",
            b"\x0c",
            b"\0",
            "\u{a0}".as_bytes(),
            "\u{3000}".as_bytes(),
            b"\xff",
            b"\xc3",
            b"\xe2\x82",
            b"\xef\xbb\xbf",
            b"export ",
            b"A",
            b"B_1",
            b"a.b",
            "Å".as_bytes(),
            "名".as_bytes(),
            b"SECRET",
            b"x",
            b"0",
            b"-",
        ];
        let len = rng.usize(0..48);
        (0..len)
            .flat_map(|_| PIECES[rng.usize(..PIECES.len())].iter().copied())
            .collect()
    }

    #[test]
    fn random_bytes_never_panic_and_only_valid_names_are_accepted() {
        let mut rng = fastrand::Rng::with_seed(0x0e_5e_ed);
        let mut accepted = 0;
        for _ in 0..4000 {
            let bytes = random_env(&mut rng);
            let text = decode(&bytes);
            for rules in [DotenvRules::Before5_5, DotenvRules::From5_5] {
                let process = |name: &str| (name == "B_1").then(|| "p".to_string());
                match parse(&text, rules, &process) {
                    Ok(vars) => {
                        accepted += 1;
                        for (name, _) in vars {
                            assert!(is_valid_name(&name, rules), "{name:?} from {bytes:?}");
                        }
                    }
                    Err(error) => {
                        // A secret after the name is never echoed.
                        let secret = [b"PASSWORD=zz".as_slice(), &bytes].concat();
                        if let Err(e) = parse(&decode(&secret), rules, &process) {
                            assert!(!e.to_string().contains("zz"), "{e}");
                        }
                        assert!(error.line >= 1);
                    }
                }
            }
        }
        assert!(
            accepted > 100,
            "the generator must also make valid files: {accepted}"
        );
    }
}
