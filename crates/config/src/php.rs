//! The two bits of PHP's loose typing that decide what Laravel does with a config string.
//!
//! Laravel keeps most settings as strings and lets PHP convert them late: phpredis `SELECT`s
//! `(int) $database`, and the cache stores a value raw only when `is_numeric()` says so. Reading
//! the same strings, we must convert them the same way, or `REDIS_CACHE_DB=01` would send us to a
//! different database than the app.

/// PHP's `(int)` cast of a string (PHP 8): the longest numeric prefix after leading whitespace,
/// truncated toward zero; `"01"` is 1, `"1e2"` is 100, `"1.9"` is 1, `"abc"` is 0. Out-of-range
/// values saturate as PHP's float-to-int conversion does on 64-bit builds.
pub(super) fn int_cast(s: &str) -> i64 {
    let s = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let len = numeric_prefix_len(s);
    let number = &s[..len];
    if number.is_empty() {
        return 0;
    }
    if number.contains(['.', 'e', 'E']) {
        // `as` saturates and maps NaN to 0, which is what PHP does for these inputs.
        number.parse::<f64>().map(|f| f as i64).unwrap_or(0)
    } else {
        number.parse::<i64>().unwrap_or_else(|_| {
            if number.starts_with('-') {
                i64::MIN
            } else {
                i64::MAX
            }
        })
    }
}

/// PHP's `(float)` cast of a string: the longest numeric prefix after leading whitespace, else 0.
pub(super) fn float_cast(s: &str) -> f64 {
    let s = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    s[..numeric_prefix_len(s)].parse().unwrap_or(0.0)
}

/// PHP 8's `is_numeric()` for a string: optional surrounding whitespace, a sign, digits with an
/// optional fraction, and an optional exponent. Hexadecimal, `INF` and the empty string are not
/// numeric.
pub fn is_numeric(s: &str) -> bool {
    let ws = [' ', '\t', '\n', '\r', '\x0b', '\x0c'];
    let s = s.trim_start_matches(ws).trim_end_matches(ws);
    !s.is_empty() && numeric_prefix_len(s) == s.len()
}

/// Length of the longest prefix of `s` that PHP reads as a number (`[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?`).
fn numeric_prefix_len(s: &str) -> usize {
    let b = s.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'+' | b'-')) {
        i += 1;
    }
    let int_start = i;
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    let mut digits = i - int_start;
    if b.get(i) == Some(&b'.') {
        let frac_start = i + 1;
        let mut j = frac_start;
        while b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        if digits > 0 || j > frac_start {
            digits += j - frac_start;
            i = j;
        }
    }
    if digits == 0 {
        return 0;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        let exp_start = j;
        while b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        if j > exp_start {
            i = j;
        }
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_cast_follows_php() {
        for (input, expected) in [
            ("1", 1),
            ("01", 1),
            (" 7", 7),
            ("1e2", 100),
            ("1.9", 1),
            ("-3", -3),
            ("12abc", 12),
            ("abc", 0),
            ("", 0),
            ("0x1A", 0),
            (".5", 0),
            ("99999999999999999999", i64::MAX),
        ] {
            assert_eq!(int_cast(input), expected, "(int) {input:?}");
        }
    }

    #[test]
    fn is_numeric_follows_php() {
        for yes in [
            "7", "-7", "+7", "1.5", "1.", ".5", "1e3", "1E-3", " 7", "7 ", "0",
        ] {
            assert!(is_numeric(yes), "{yes:?} is numeric");
        }
        for no in ["", " ", ".", "abc", "7a", "0x1A", "1e", "INF", "1 2", "--1"] {
            assert!(!is_numeric(no), "{no:?} is not numeric");
        }
    }
}
