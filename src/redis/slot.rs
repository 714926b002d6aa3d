//! Redis Cluster's hash slots: which of the 16384 slots a key lives in.
//!
//! A cluster refuses a command for a key held by another master (`MOVED`), and a pipeline whose
//! keys span several masters fails. So the commands we send for many keys at once (`PTTL`,
//! `EXISTS`) are split per master, which needs each key's slot computed exactly as the server
//! does: CRC16 (XMODEM) of the key, or of its hash tag, modulo 16384 (the cluster
//! specification's `HASH_SLOT`).

/// The number of hash slots of a Redis Cluster.
pub(crate) const SLOTS: usize = 16384;

/// The slot of `key`: of its hash tag when it has one (the bytes between the first `{` and the
/// first `}` after it, if not empty), else of the whole key.
pub(crate) fn key_slot(key: &[u8]) -> u16 {
    let hashed = hash_tag(key).unwrap_or(key);
    // SLOTS is a power of two, so the modulo keeps the low 14 bits.
    crc16(hashed) & (SLOTS as u16 - 1)
}

/// `{tag}` in `key`, as the server reads it: only the first `{` counts, and an empty `{}` means
/// no tag (the whole key is hashed).
fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|b| *b == b'{')?;
    let rest = &key[open + 1..];
    let close = rest.iter().position(|b| *b == b'}')?;
    (close > 0).then(|| &rest[..close])
}

/// CRC16/XMODEM (polynomial 0x1021, initial value 0), the checksum the cluster hashes keys with.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for byte in bytes {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_is_xmodem() {
        // The check value of CRC16/XMODEM, also the cluster specification's example.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(crc16(b""), 0);
    }

    #[test]
    fn slots_match_the_server() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.0.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"hello"), 866);
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(
            key_slot(b"laravel_database_laravel_cache:ORDER_CONFIRM:1"),
            key_slot(b"laravel_database_laravel_cache:ORDER_CONFIRM:1")
        );
    }

    #[test]
    fn a_hash_tag_picks_the_slot() {
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"{user1000}.followers"), key_slot(b"user1000"));
        // Only the first `{` counts, and the first `}` after it.
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
        // An empty tag, or no closing brace: the whole key.
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") & 0x3FFF);
        assert_eq!(key_slot(b"foo{bar"), crc16(b"foo{bar") & 0x3FFF);
    }

    #[test]
    fn every_slot_is_in_range() {
        for n in 0..5000u32 {
            assert!(usize::from(key_slot(n.to_string().as_bytes())) < SLOTS);
        }
    }
}
