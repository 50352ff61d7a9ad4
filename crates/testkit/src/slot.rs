//! The Redis Cluster hash-slot function, computed locally.
//!
//! Taskline promises that every script touches the keys of exactly one queue,
//! and that all of a queue's keys share one hash tag. Tests check that promise
//! key by key with [`hash_slot`], without needing a cluster-enabled server;
//! `RedisServer::key_slot` asks a real server the same question.

/// Number of hash slots in a Redis Cluster.
pub const SLOT_COUNT: u16 = 16384;

/// Returns the Redis Cluster hash slot (`0..16384`) of `key`.
///
/// This is the algorithm of the Redis Cluster specification: CRC16 (XMODEM
/// variant) of the key, modulo 16384. If the key contains a `{` followed later
/// by a `}` with at least one byte between them, only the bytes between the
/// first `{` and the first `}` after it are hashed (the *hash tag*). An empty
/// tag (`foo{}{bar}`) means the whole key is hashed.
///
/// ```
/// use taskline_testkit::hash_slot;
///
/// assert_eq!(hash_slot(b"foo"), 12182);
/// assert_eq!(hash_slot(b"{user1000}.following"), hash_slot(b"{user1000}.followers"));
/// ```
pub fn hash_slot(key: &[u8]) -> u16 {
    crc16_xmodem(hash_tag(key)) % SLOT_COUNT
}

/// The part of `key` that decides its slot: the hash tag if there is a
/// non-empty one, otherwise the whole key.
fn hash_tag(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|&b| b == b'{') else {
        return key;
    };
    let after_open = &key[open + 1..];
    match after_open.iter().position(|&b| b == b'}') {
        Some(len) if len > 0 => &after_open[..len],
        _ => key,
    }
}

/// CRC16, polynomial 0x1021, initial value 0, no reflection (XMODEM), as in
/// the `crc16.c` that ships with Redis. Bitwise rather than table-driven:
/// keys in tests are short and clarity wins.
fn crc16_xmodem(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_matches_the_specification_check_value() {
        // The Redis Cluster spec gives this check value for its CRC16.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
        assert_eq!(crc16_xmodem(b""), 0);
    }

    // Every expected slot below was read from `CLUSTER KEYSLOT` on a
    // cluster-enabled redis-server 7.0.15; `tests/server.rs` also compares
    // this function against a live server.
    #[test]
    fn known_slots() {
        assert_eq!(hash_slot(b"foo"), 12182);
        assert_eq!(hash_slot(b"bar"), 5061);
        assert_eq!(hash_slot(b""), 0);
        assert_eq!(hash_slot(b"123456789"), 12739);
        assert_eq!(hash_slot(b"user1000"), 3443);
        assert_eq!(hash_slot(b"{user1000}.following"), 3443);
        assert_eq!(hash_slot(b"taskline:{emails}:ready"), 3728);
    }

    #[test]
    fn keys_with_the_same_tag_share_a_slot() {
        assert_eq!(hash_slot(b"{user1000}.following"), hash_slot(b"{user1000}.followers"));
        assert_eq!(hash_slot(b"taskline:{emails}:ready"), hash_slot(b"taskline:{emails}:job:42"));
        assert_eq!(hash_slot(b"taskline:{emails}:ready"), hash_slot(b"emails"));
    }

    #[test]
    fn empty_tag_hashes_the_whole_key() {
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_slot(b"foo{}{bar}"), 8363);
        assert_ne!(hash_slot(b"foo{}{bar}"), hash_slot(b"bar"));
    }

    #[test]
    fn tag_runs_to_the_first_closing_brace() {
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_slot(b"foo{{bar}}zap"), 4015);
        assert_eq!(hash_slot(b"foo{{bar}}zap"), hash_slot(b"{bar"));
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_slot(b"foo{bar}{zap}"), 5061);
    }

    #[test]
    fn unbalanced_braces_hash_the_whole_key() {
        assert_eq!(hash_tag(b"foo{bar"), b"foo{bar");
        assert_eq!(hash_tag(b"foo}bar{"), b"foo}bar{");
        assert_eq!(hash_tag(b"{"), b"{");
    }
}
