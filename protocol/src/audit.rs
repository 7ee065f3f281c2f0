//! The audit trail's hash chain, shared by devices and the server: each entry's hash covers the
//! previous entry's hash and the entry itself, so removing, reordering or altering an entry
//! breaks every hash after it. SHA-256, or SM3 in the national-crypto mode.
//!
//! Entries say who did what to which record, never the values: `detail` holds field names and
//! counts only.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use sha2::Digest;

/// The hash a store uses for its audit chain and its attachments' content addresses: SHA-256,
/// or SM3 in the national-crypto mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HashAlgorithm {
    #[default]
    Sha256,
    Sm3,
}

impl HashAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            HashAlgorithm::Sha256 => "sha256",
            HashAlgorithm::Sm3 => "sm3",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sha256" => Some(HashAlgorithm::Sha256),
            "sm3" => Some(HashAlgorithm::Sm3),
            _ => None,
        }
    }

    /// The hex digest of `bytes`.
    pub fn digest(self, bytes: &[u8]) -> String {
        let mut h = self.hasher();
        h.update(bytes);
        h.finish()
    }

    /// An incremental hasher, for contents read piece by piece.
    pub fn hasher(self) -> ContentHasher {
        match self {
            HashAlgorithm::Sha256 => ContentHasher::Sha256(sha2::Sha256::new()),
            HashAlgorithm::Sm3 => ContentHasher::Sm3(sm3::Sm3::new()),
        }
    }
}

/// Hashes a content piece by piece (see [`HashAlgorithm::hasher`]).
#[derive(Debug, Clone)]
pub enum ContentHasher {
    Sha256(sha2::Sha256),
    Sm3(sm3::Sm3),
}

impl ContentHasher {
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            ContentHasher::Sha256(h) => h.update(bytes),
            ContentHasher::Sm3(h) => h.update(bytes),
        }
    }

    /// The hex digest.
    pub fn finish(self) -> String {
        match self {
            ContentHasher::Sha256(h) => hex::encode(h.finalize()),
            ContentHasher::Sm3(h) => hex::encode(h.finalize()),
        }
    }
}

/// A hasher is a writer, so any reader hashes with `io::copy`.
impl std::io::Write for ContentHasher {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Is `s` a lowercase hex digest of either algorithm (32 bytes)?
pub fn is_hex_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The `prev_hash` of the first entry.
pub const GENESIS: &str = "";

/// What is audited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    SignIn,
    Create,
    View,
    Edit,
    Complete,
    Sign,
    Void,
    Sync,
    Purge,
    Wipe,
    KeyRotation,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::SignIn => "sign_in",
            AuditAction::Create => "create",
            AuditAction::View => "view",
            AuditAction::Edit => "edit",
            AuditAction::Complete => "complete",
            AuditAction::Sign => "sign",
            AuditAction::Void => "void",
            AuditAction::Sync => "sync",
            AuditAction::Purge => "purge",
            AuditAction::Wipe => "wipe",
            AuditAction::KeyRotation => "key_rotation",
        }
    }
}

/// One entry, as stored and as uploaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// 1, 2, 3... without gaps on a device.
    pub seq: u64,
    pub at: String,
    pub user_id: String,
    pub action: String,
    pub entity: Option<String>,
    pub entity_id: Option<String>,
    pub detail: Json,
    /// Both hashes follow from the entries before and the entry itself: an upload may leave
    /// them out (empty) and name only its last entry's hash (`head`), and the server computes
    /// them (see [`rehash`]). They are a third of an entry's bytes and do not compress.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prev_hash: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
}

/// The bytes hashed for an entry: the previous hash, a separator, then the entry's fields in
/// fixed order as a JSON array in the canonical form (RFC 8785, see [`crate::canonical`]).
fn preimage(e: &AuditEntry) -> Vec<u8> {
    let fields = (
        e.seq,
        &e.at,
        &e.user_id,
        &e.action,
        &e.entity,
        &e.entity_id,
        &e.detail,
    );
    let mut bytes = e.prev_hash.as_bytes().to_vec();
    bytes.push(0x1e);
    bytes.extend(crate::canonical::to_vec(&fields));
    bytes
}

/// The hash an entry must carry (hex).
pub fn entry_hash(alg: HashAlgorithm, e: &AuditEntry) -> String {
    alg.digest(&preimage(e))
}

/// Where a chain stops being intact.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error("audit entry {expected} is missing (got {got})")]
    Missing { expected: u64, got: u64 },
    #[error("audit entry {seq} does not follow the previous entry")]
    Unlinked { seq: u64 },
    #[error("audit entry {seq} was altered")]
    Altered { seq: u64 },
}

/// Checks `entries` continue a chain whose last entry was `(last_seq, last_hash)`.
pub fn verify(
    alg: HashAlgorithm,
    mut last_seq: u64,
    last_hash: &str,
    entries: &[AuditEntry],
) -> Result<(), ChainBreak> {
    let mut last_hash = last_hash.to_owned();
    for e in entries {
        if e.seq != last_seq + 1 {
            return Err(ChainBreak::Missing {
                expected: last_seq + 1,
                got: e.seq,
            });
        }
        if e.prev_hash != last_hash {
            return Err(ChainBreak::Unlinked { seq: e.seq });
        }
        if entry_hash(alg, e) != e.hash {
            return Err(ChainBreak::Altered { seq: e.seq });
        }
        last_seq = e.seq;
        last_hash.clone_from(&e.hash);
    }
    Ok(())
}

/// Fills in the hashes of entries that travelled without them, from `prev_hash` (the hash of the
/// entry before the first), and checks the last one is the `head` the device named: the
/// entries are then exactly the device's chain, as if every hash had been sent and checked.
pub fn rehash(
    alg: HashAlgorithm,
    prev_hash: &str,
    entries: &mut [AuditEntry],
    head: &str,
) -> Result<(), ChainBreak> {
    let mut prev = prev_hash.to_owned();
    for e in entries.iter_mut() {
        e.prev_hash = std::mem::take(&mut prev);
        e.hash = entry_hash(alg, e);
        prev.clone_from(&e.hash);
    }
    match entries.last() {
        Some(last) if last.hash != head => Err(ChainBreak::Altered { seq: last.seq }),
        _ => Ok(()),
    }
}

/// The same entries without their hashes, for an upload that names its `head` instead.
pub fn strip_hashes(entries: &mut [AuditEntry]) {
    for e in entries {
        e.prev_hash.clear();
        e.hash.clear();
    }
}

/// Builds the next entry of a chain.
pub fn next_entry(
    alg: HashAlgorithm,
    last: Option<(u64, &str)>,
    at: String,
    user_id: String,
    action: AuditAction,
    entity: Option<(&str, &str)>,
    detail: Json,
) -> AuditEntry {
    let (seq, prev) = last.map_or((1, GENESIS), |(s, h)| (s + 1, h));
    let mut e = AuditEntry {
        seq,
        at,
        user_id,
        action: action.as_str().to_owned(),
        entity: entity.map(|(e, _)| e.to_owned()),
        entity_id: entity.map(|(_, id)| id.to_owned()),
        detail,
        prev_hash: prev.to_owned(),
        hash: String::new(),
    };
    e.hash = entry_hash(alg, &e);
    e
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const PINNED_SHA256: &str = "d9f4edb0bba0ac6948a5d066317986e991e44eaec540c30a83f3199f11ee390c";

    fn chain(alg: HashAlgorithm, n: usize) -> Vec<AuditEntry> {
        let mut out: Vec<AuditEntry> = Vec::new();
        for i in 0..n {
            let last = out.last().map(|e| (e.seq, e.hash.as_str()));
            let e = next_entry(
                alg,
                last,
                format!("2026-11-28T10:00:{:02}Z", i % 60),
                "coord-1".into(),
                if i % 2 == 0 {
                    AuditAction::View
                } else {
                    AuditAction::Edit
                },
                Some(("household", "h1")),
                json!({"field": "phone"}),
            );
            out.push(e);
        }
        out
    }

    #[test]
    fn the_hashes_are_the_standard_ones() {
        let e = &chain(HashAlgorithm::Sha256, 1)[0];
        let bytes = preimage(e);
        assert_eq!(e.hash, hex::encode(sha2::Sha256::digest(&bytes)));
        assert_eq!(e.hash.len(), 64);
        let s = &chain(HashAlgorithm::Sm3, 1)[0];
        assert_ne!(s.hash, e.hash);
        // SM3 of "abc" (GB/T 32905-2016, appendix A) through the same crate.
        assert_eq!(
            hex::encode(sm3::Sm3::digest(b"abc")),
            "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
        );
    }

    /// Chains written by any earlier build must verify in every later one, on every platform:
    /// the hash of a known entry is fixed here forever.
    #[test]
    fn a_known_entry_keeps_its_hash() {
        let e = &chain(HashAlgorithm::Sha256, 1)[0];
        assert_eq!(e.hash, PINNED_SHA256);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// An intact chain verifies, from the start or from any point; removing an entry before
        /// the last, altering any, or swapping two is detected. (Cutting the tail leaves a valid
        /// shorter chain: the server holds every entry already uploaded, and the device's
        /// triggers and encryption guard the rest.)
        #[test]
        fn any_removal_alteration_or_swap_is_detected(
            n in 2usize..30, at in 0usize..30, sm3 in any::<bool>(), how in 0u8..3,
        ) {
            let alg = if sm3 { HashAlgorithm::Sm3 } else { HashAlgorithm::Sha256 };
            let entries = chain(alg, n);
            prop_assert!(verify(alg, 0, GENESIS, &entries).is_ok());
            let k = at % n;
            let (prev_seq, prev_hash) =
                if k == 0 { (0, GENESIS.to_owned()) } else { (entries[k - 1].seq, entries[k - 1].hash.clone()) };
            prop_assert!(verify(alg, prev_seq, &prev_hash, &entries[k..]).is_ok());
            let mut broken = entries.clone();
            match how {
                0 => { broken.remove(k.min(n - 2)); }
                1 => { broken[k].detail = json!({"field": "address"}); }
                _ => { let j = (k + 1) % n; broken.swap(k, j); }
            }
            prop_assert!(verify(alg, 0, GENESIS, &broken).is_err());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Entries sent without hashes are the device's chain again once rehashed from the entry
        /// before them, when the head matches; any alteration, removal or swap among them makes
        /// the head not match (the server then treats the chain as broken).
        #[test]
        fn rehashed_entries_match_the_chain_or_the_head_does_not(
            n in 1usize..30, from in 0usize..30, sm3 in any::<bool>(), how in 0u8..4,
        ) {
            let alg = if sm3 { HashAlgorithm::Sm3 } else { HashAlgorithm::Sha256 };
            let entries = chain(alg, n);
            let k = from % n;
            let prev = if k == 0 { GENESIS.to_owned() } else { entries[k - 1].hash.clone() };
            let head = entries[n - 1].hash.clone();
            let mut sent = entries[k..].to_vec();
            strip_hashes(&mut sent);
            prop_assert!(sent.iter().all(|e| e.hash.is_empty() && e.prev_hash.is_empty()));
            let mut whole = sent.clone();
            prop_assert!(rehash(alg, &prev, &mut whole, &head).is_ok());
            prop_assert_eq!(&whole[..], &entries[k..]);
            let m = sent.len();
            let j = (k * 7) % m;
            match how {
                0 => { sent[j].detail = json!({"field": "address"}); }
                1 if m > 1 => { sent.remove(j.min(m - 2)); }
                2 if m > 1 => { sent.swap(j, (j + 1) % m); }
                _ => { sent[j].user_id = "coord-2".into(); }
            }
            prop_assert!(rehash(alg, &prev, &mut sent, &head).is_err());
        }
    }
}
