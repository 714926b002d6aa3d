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
pub(crate) enum ParsedKey<'a> {
    /// One of our orders: cancel it if still unpaid.
    Order(u64),
    /// Some other cache entry (another key type, another app, a session...): not ours.
    Unrelated,
    /// Our prefix, but what follows is not an order id. Logged as a warning, nothing written.
    Malformed { id: &'a [u8], reason: &'static str },
}

/// The full key prefix of one app's order keys, e.g. `laravel_database_laravel_cache:ORDER_CONFIRM:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyPattern {
    prefix: String,
}

impl KeyPattern {
    pub(crate) fn new(keys: &KeySettings) -> Self {
        Self::of_type(keys, &keys.key_type)
    }

    /// The keys of another type under the same prefixes (`ORDER_EXPIRE_ON_<TYPE>`), read with
    /// the same rules: canonical ids only.
    pub(crate) fn of_type(keys: &KeySettings, key_type: &str) -> Self {
        Self {
            prefix: format!("{}{}{key_type}:", keys.connection_prefix, keys.store_prefix),
        }
    }

    /// Classifies one expired key. Only the canonical decimal form PHP writes for an integer id
    /// (`'ORDER_CONFIRM:'.$order->id`) is an order: ASCII digits, no sign, no leading zero, in
    /// range. MySQL would read `7abc` as 7 and `05` as 5 (Eloquent's `find('7abc')` does cancel
    /// order 7), which must not happen to a key Laravel never wrote: `...:05` expiring would
    /// otherwise cancel order 5 while order 5's own key still has minutes to live.
    pub(crate) fn parse<'a>(&self, key: &'a [u8]) -> ParsedKey<'a> {
        let Some(id) = key.strip_prefix(self.prefix.as_bytes()) else {
            return ParsedKey::Unrelated;
        };
        match canonical_id(id) {
            Ok(order) => ParsedKey::Order(order),
            Err(reason) => ParsedKey::Malformed { id, reason },
        }
    }

    /// The key Redis holds for `order` (what `put()` writes and `expired` reports).
    pub(crate) fn key_for(&self, order: u64) -> String {
        format!("{}{order}", self.prefix)
    }

    /// The prefix every order key starts with.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// The most digits an order id has: `u64::MAX` is 20 digits long.
pub(crate) const MAX_ID_DIGITS: usize = 20;

/// Reads `id` as PHP's decimal form of an unsigned 64-bit integer, or says why it is not one.
/// An order id given on the command line (`schedule ORDER_ID`), read by the rules of a key's:
/// `05` is refused, not taken for order 5 (its key would be `...:05`, which is not order 5's).
pub(crate) fn order_id_argument(text: &str) -> Result<u64, String> {
    canonical_id(text.as_bytes()).map_err(|reason| {
        format!("{reason}: give the order id as Laravel writes it, e.g. 5 (not 05, +5 or 5.0)")
    })
}

fn canonical_id(id: &[u8]) -> Result<u64, &'static str> {
    if id.is_empty() {
        return Err("no order id after the key type");
    }
    if id.len() > MAX_ID_DIGITS {
        return Err("longer than any order id Laravel writes");
    }
    if !id.iter().all(u8::is_ascii_digit) {
        return Err("the order id is not a decimal number");
    }
    if id.len() > 1 && id[0] == b'0' {
        return Err("the order id has a leading zero, which Laravel never writes");
    }
    id.iter()
        .try_fold(0u64, |n, digit| {
            n.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
        })
        .ok_or("the order id is out of range for an unsigned 64-bit column")
}

/// At most this many bytes of a key from outside are shown in a log line.
const SHOWN_KEY_BYTES: usize = 120;

/// A key from outside as a log field: lossy UTF-8, cut to [`SHOWN_KEY_BYTES`] with its full
/// length noted, so a 1 MB key costs a short line, not a 2 MB one. Control characters are
/// escaped by the log formatter.
pub(crate) fn shown(key: &[u8]) -> String {
    if key.len() <= SHOWN_KEY_BYTES {
        return String::from_utf8_lossy(key).into_owned();
    }
    format!(
        "{}... ({} bytes)",
        String::from_utf8_lossy(&key[..SHOWN_KEY_BYTES]),
        key.len()
    )
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
    fn other_key_types_share_the_prefixes_and_the_id_rules() {
        let keys = KeySettings {
            connection_prefix: "laravel_database_".into(),
            cache_prefix: "laravel_cache".into(),
            store_prefix: "laravel_cache:".into(),
            key_type: "ORDER_CONFIRM".into(),
        };
        let other = KeyPattern::of_type(&keys, "ORDER_OTHEREVENT");
        assert_eq!(
            other.parse(b"laravel_database_laravel_cache:ORDER_OTHEREVENT:42"),
            ParsedKey::Order(42)
        );
        assert!(matches!(
            other.parse(b"laravel_database_laravel_cache:ORDER_OTHEREVENT:05"),
            ParsedKey::Malformed { .. }
        ));
        assert_eq!(
            other.parse(b"laravel_database_laravel_cache:ORDER_CONFIRM:42"),
            ParsedKey::Unrelated
        );
        assert_eq!(
            KeyPattern::new(&keys).parse(b"laravel_database_laravel_cache:ORDER_OTHEREVENT:42"),
            ParsedKey::Unrelated
        );
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
    fn zero_is_canonical_and_keys_are_shown_short() {
        let p = pattern("laravel_database_", "laravel_cache:");
        assert_eq!(
            p.parse(b"laravel_database_laravel_cache:ORDER_CONFIRM:0"),
            ParsedKey::Order(0)
        );
        let long = vec![b'7'; 1 << 20];
        let shown = shown(&long);
        assert!(shown.len() < 200, "{}", shown.len());
        assert!(shown.ends_with(&format!("({} bytes)", 1 << 20)));
    }

    /// Random bytes after the prefix: never a panic, and an id only for the canonical form.
    #[test]
    fn random_keys_yield_only_canonical_ids() {
        let p = pattern("laravel_database_", "laravel_cache:");
        let mut rng = fastrand::Rng::with_seed(0x0e0e_2026);
        let alphabet = b"0123456789-+ \n\t.eExX:\x00\xff\xc2\xa0";
        for _ in 0..200_000 {
            let len = rng.usize(0..26);
            let mut key = p.prefix().as_bytes().to_vec();
            for _ in 0..len {
                key.push(if rng.bool() {
                    alphabet[rng.usize(..alphabet.len())]
                } else {
                    rng.u8(..)
                });
            }
            if rng.u8(..) < 8 {
                key.truncate(rng.usize(..=key.len()));
            }
            if let ParsedKey::Order(id) = p.parse(&key) {
                assert_eq!(
                    key,
                    p.key_for(id).as_bytes(),
                    "only the canonical form is an order"
                );
            }
        }
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
            "05",
            "00",
            "007",
            "0x1F",
            "٣",
            "1\n",
            "123456789012345678901",
        ] {
            let key = format!("laravel_database_laravel_cache:ORDER_CONFIRM:{id}");
            assert!(
                matches!(p.parse(key.as_bytes()), ParsedKey::Malformed { .. }),
                "{id:?} must be malformed"
            );
        }
    }
}
