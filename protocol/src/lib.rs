//! Everything Zoufang's devices and its server must agree on, byte for byte, and nothing else:
//! the wire messages and their compression ([`messages`]), the framing of attachment chunks
//! ([`frames`]), per-village checksums ([`checksum`]), the canonical JSON form every hash covers
//! ([`canonical`]), the audit trail's hash chain ([`audit`]) and proofs of holding a content
//! ([`possession`]). No I/O, no storage, no codecs:
//! the server links this and the model, not the mobile core.

pub mod audit;
pub mod canonical;
pub mod change_entry;
pub mod checksum;
pub mod feed_entry;
pub mod frames;
pub mod messages;
pub mod possession;
pub mod stream;
