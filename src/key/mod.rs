//! The transform between Redis keys and order ids.
//!
//! Laravel stores `Cache::store('redis')->put('ORDER_CONFIRM:'.$id, ...)` under
//! `<connection prefix><cache prefix>:ORDER_CONFIRM:<id>`, and the `expired` event carries that
//! full key. Both prefixes may contain `:`, so we never split on `:` (the PHP command does, and so
//! misreads keys whenever a prefix has a colon or is empty); we strip the exact prefix we computed
//! from the app's configuration and accept only a plain decimal id after it.

use std::fmt;

use crate::config::KeySettings;

/// What an expired key means to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParsedKey<'a> {
    /// One of our orders: cancel it if still unpaid.
    Order(u64),
    /// Some other cache entry (another key type, another app, a session...): not ours.
    Unrelated,
    /// Our prefix, but what follows is not an order id. Logged as a warning, nothing written.
    Malformed { id: &'a [u8], reason: &'static str },
}

/// The full key prefix of one app's order keys, e.g. `laravel_database_laravel_cache:ORDER_CONFIRM:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPattern {
    prefix: String,
}

impl KeyPattern {
    pub fn new(keys: &KeySettings) -> Self {
        Self {
            prefix: format!(
                "{}{}{}:",
                keys.connection_prefix, keys.store_prefix, keys.key_type
            ),
        }
    }

    /// Classifies one expired key. Ids are digits only: MySQL would read `7abc` as 7 (Eloquent's
    /// `find('7abc')` does cancel order 7), which must not happen to a key we do not understand.
    pub fn parse<'a>(&self, key: &'a [u8]) -> ParsedKey<'a> {
        let Some(id) = key.strip_prefix(self.prefix.as_bytes()) else {
            return ParsedKey::Unrelated;
        };
        if id.is_empty() {
            return ParsedKey::Malformed {
                id,
                reason: "no order id after the key type",
            };
        }
        if !id.iter().all(u8::is_ascii_digit) {
            return ParsedKey::Malformed {
                id,
                reason: "the order id is not a decimal number",
            };
        }
        // Only ASCII digits remain, so the text is valid UTF-8 and the sole failure is overflow.
        match std::str::from_utf8(id)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        {
            Some(order) => ParsedKey::Order(order),
            None => ParsedKey::Malformed {
                id,
                reason: "the order id is out of range for an unsigned 64-bit column",
            },
        }
    }

    /// The key Redis holds for `order` (what `put()` writes and `expired` reports).
    pub fn key_for(&self, order: u64) -> String {
        format!("{}{order}", self.prefix)
    }

    /// The prefix every order key starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// The key pattern as users write it: `prefix*`.
impl fmt::Display for KeyPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}*", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(connection: &str, store: &str) -> KeyPattern {
        KeyPattern::new(&KeySettings {
            connection_prefix: connection.into(),
            cache_prefix: store.trim_end_matches(':').into(),
            store_prefix: store.into(),
            key_type: "ORDER_CONFIRM".into(),
        })
    }

    #[test]
    fn parses_laravel_8_default_keys() {
        let p = pattern("laravel_database_", "laravel_cache:");
        assert_eq!(
            p.parse(b"laravel_database_laravel_cache:ORDER_CONFIRM:7"),
            ParsedKey::Order(7)
        );
        assert_eq!(
            p.key_for(7),
            "laravel_database_laravel_cache:ORDER_CONFIRM:7"
        );
        assert_eq!(
            p.to_string(),
            "laravel_database_laravel_cache:ORDER_CONFIRM:*"
        );
        assert_eq!(
            p.parse(b"laravel_database_laravel_cache:ORDER_CONFIRM:18446744073709551615"),
            ParsedKey::Order(u64::MAX)
        );
    }

    #[test]
    fn prefixes_with_colons_and_empty_prefixes() {
        let p = pattern("shop:v2:", "a:b:");
        assert_eq!(
            p.parse(b"shop:v2:a:b:ORDER_CONFIRM:42"),
            ParsedKey::Order(42)
        );
        let p = pattern("", "");
        assert_eq!(p.parse(b"ORDER_CONFIRM:42"), ParsedKey::Order(42));
        assert_eq!(p.parse(b"x:ORDER_CONFIRM:42"), ParsedKey::Unrelated);
    }

    #[test]
    fn other_keys_are_unrelated() {
        let p = pattern("laravel_database_", "laravel_cache:");
        for key in [
            &b"other_database_laravel_cache:ORDER_CONFIRM:7"[..],
            b"laravel_database_laravel_cache:ORDER_OTHEREVENT:7",
            b"laravel_database_laravel_cache:ORDER_CONFIRMED:7",
            b"laravel_database_laravel_cache:5c785c036466adea360111aa28563bfd556b5fba:timer",
            b"laravel_database_ORDER_CONFIRM:7",
            b"",
        ] {
            assert_eq!(
                p.parse(key),
                ParsedKey::Unrelated,
                "{}",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn bad_ids_are_malformed() {
        let p = pattern("laravel_database_", "laravel_cache:");
        for id in [
            "",
            "7abc",
            "-7",
            "+7",
            " 7",
            "7.0",
            "1e3",
            "18446744073709551616",
            "７",
        ] {
            let key = format!("laravel_database_laravel_cache:ORDER_CONFIRM:{id}");
            assert!(
                matches!(p.parse(key.as_bytes()), ParsedKey::Malformed { .. }),
                "{id:?} must be malformed"
            );
        }
    }
}
