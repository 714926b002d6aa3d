//! Laravel's `Str::slug($title, $separator)` (language `en`), which derives the default Redis and
//! cache prefixes from `APP_NAME`: `Str::slug(env('APP_NAME', 'laravel'), '_')`.
//!
//! Getting it wrong means listening for keys the app never writes, so this follows Laravel 8's
//! implementation step by step, including its transliteration: `voku/portable-ascii`'s
//! `ASCII::to_ascii($title, 'en')` replaces known characters (`é` -> `e`, `ß` -> `ss`, Cyrillic,
//! Greek digraphs...) and **removes** the rest (`Mall 商城` -> `Mall `), with the table in
//! `ascii_table` generated from that package.

use super::ascii_table::ASCII_EN;

/// `Str::slug($title, $separator)` as Laravel 8-12.0 computes it.
pub fn slug(title: &str, separator: char) -> String {
    let ascii = to_ascii(title);
    let flip = if separator == '-' { '_' } else { '-' };
    let sep = separator.to_string();

    // Convert all dashes/underscores into the separator.
    let mut s = String::with_capacity(ascii.len());
    let mut in_flip = false;
    for c in ascii.chars() {
        if c == flip {
            if !in_flip {
                s.push(separator);
            }
            in_flip = true;
        } else {
            s.push(c);
            in_flip = false;
        }
    }
    // Replace @ with the word 'at'.
    let s = s.replace('@', &format!("{sep}at{sep}"));
    // Remove everything that is not the separator, a letter, a digit or whitespace.
    let s: String = s
        .to_lowercase()
        .chars()
        .filter(|c| *c == separator || c.is_alphanumeric() || is_pcre_space(*c))
        .collect();
    // Replace runs of separators and whitespace by one separator, and trim it.
    let mut out = String::with_capacity(s.len());
    let mut in_run = false;
    for c in s.chars() {
        if c == separator || is_pcre_space(c) {
            if !in_run {
                out.push(separator);
            }
            in_run = true;
        } else {
            out.push(c);
            in_run = false;
        }
    }
    out.trim_matches(separator).to_string()
}

/// PCRE's `\s`.
fn is_pcre_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// The characters `to_ascii` leaves alone: tab, newline, carriage return, the two odd control
/// characters 0x10 and 0x13 (sic, in voku's pattern), and printable ASCII.
fn kept(c: char) -> bool {
    matches!(c, '\t' | '\x10' | '\x13' | '\n' | '\r' | ' '..='~')
}

fn lookup(key: &str) -> Option<&'static str> {
    ASCII_EN
        .binary_search_by(|(from, _)| from.as_bytes().cmp(key.as_bytes()))
        .ok()
        .map(|i| ASCII_EN[i].1)
}

/// `ASCII::to_ascii($s, 'en')`: replace known sequences of three, then two, then one non-ASCII
/// characters (in the order they occur), then turn line breaks and tabs into spaces and drop
/// whatever is still not ASCII.
fn to_ascii(input: &str) -> String {
    let mut s = input.to_string();
    let matches: Vec<char> = input.chars().filter(|c| !kept(*c)).collect();
    let mut done: Vec<String> = Vec::new();
    for n in [3usize, 2, 1] {
        for window in matches.windows(n) {
            let key: String = window.iter().collect();
            if done.contains(&key) || !s.contains(&key) {
                continue;
            }
            if let Some(replacement) = lookup(&key) {
                s = s.replace(&key, replacement);
                done.push(key);
            }
        }
    }
    let s = s.replace("\n\r", " ").replace(['\n', '\r', '\t'], " ");
    s.chars().filter(|c| kept(*c)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_for_binary_search() {
        assert!(
            ASCII_EN
                .windows(2)
                .all(|w| w[0].0.as_bytes() < w[1].0.as_bytes())
        );
    }

    #[test]
    fn laravel_8_slugs() {
        for (title, expected) in [
            ("Laravel", "laravel"),
            ("My Shop", "my_shop"),
            ("Mall 商城", "mall"),
            ("商城", ""),
            ("日本語", ""),
            ("Café Zürich", "cafe_zurich"),
            ("ÄÖÜ ß", "aou_ss"),
            ("Straße", "strasse"),
            ("foo-bar_baz", "foo_bar_baz"),
            ("A@B", "a_at_b"),
            ("O'Reilly & Sons", "oreilly_sons"),
            ("Dr. Who", "dr_who"),
            ("Привет мир", "privet_mir"),
            ("emoji 🚀 shop", "emoji_shop"),
            ("", ""),
            ("  --__  ", ""),
            ("Tab\tNew\nLine", "tab_new_line"),
        ] {
            assert_eq!(slug(title, '_'), expected, "Str::slug({title:?}, '_')");
        }
        assert_eq!(slug("My Shop_2", '-'), "my-shop-2");
    }
}
