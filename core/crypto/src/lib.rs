//! Every cipher of Zoufang, from one implementation (RustCrypto): SQLCipher's page crypto as two
//! providers — AES-256-CBC with the HMAC and KDF a store names (SQLCipher's standard suite; it
//! opens stores written by SQLCipher's OpenSSL provider), and the national suite (SM4-CTR pages,
//! HMAC-SM3 page authentication, PBKDF2-HMAC-SM3 key derivation) for deployments that must pass
//! a commercial-cryptography (密评) assessment — and the server's object AEAD (AES-256-GCM,
//! SM4-GCM), CTR streams, keyed derivation and randomness.
//!
//! Why providers: SQLCipher already encrypts every page of the database and of the WAL, keeps a
//! random IV and a MAC per page, and supports `rekey`; all it delegates is the primitives, through
//! its provider interface. Supplying them keeps that whole, tested page machinery, and leaves
//! OpenSSL out of the library (it was half the size of the Android library). A page-encrypting
//! VFS would have to re-implement what SQLCipher does around WAL frames, page 1 and the journal.
//!
//! SQLCipher picks a connection's provider when the key is applied, from a process-wide default
//! (the AES one, [`provider::zoufang_sqlcipher_setup`]). [`with_suite`] makes the SM provider the
//! default only while one connection is keyed, under a process-wide lock, so stores of both
//! suites can be open in one process.

use parking_lot::Mutex;

pub mod aead;
mod primitives;
#[allow(unsafe_code)]
mod provider;
mod sm4_ctr;

pub use primitives::{ctr, derive, random_bytes, sm3};

/// The cipher suite of an encrypted store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CipherSuite {
    /// AES-256-CBC pages; the MAC and KDF are the ones the store names (SQLCipher's settings).
    #[default]
    Aes256,
    /// SM4-CTR, HMAC-SM3, PBKDF2-HMAC-SM3 (GB/T 32907, GB/T 32905).
    Sm4,
}

impl CipherSuite {
    /// Bytes of a raw (already random) key for this suite.
    pub fn key_len(self) -> usize {
        match self {
            CipherSuite::Aes256 => 32,
            CipherSuite::Sm4 => 16,
        }
    }

    /// The name SQLCipher reports in `PRAGMA cipher_provider` for a store keyed with this suite.
    pub fn provider_name(self) -> &'static str {
        match self {
            // libsqlite3-sys builds SQLCipher on CommonCrypto there, which SQLCipher prefers.
            CipherSuite::Aes256 if cfg!(target_vendor = "apple") => "commoncrypto",
            CipherSuite::Aes256 => "zoufang-aes",
            CipherSuite::Sm4 => "zoufang-sm",
        }
    }
}

/// SQLCipher could not be initialised or refused the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderError(pub String);

impl std::fmt::Display for ProviderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProviderError {}

/// Serialises keying: while it is held with the SM suite, the SM provider is SQLCipher's default.
static KEYING: Mutex<()> = Mutex::new(());

/// Links SQLCipher's default provider into this program; call it before the first SQLite
/// open. SQLCipher's C code refers to [`provider::zoufang_sqlcipher_setup`], and a static
/// linker pulls an archive member only for a symbol something has already asked for: without a
/// call from Rust the link could fail, depending on the order of the archives. Free.
pub fn init() {
    provider::keep_setup();
}

/// Runs `apply_key` (which must issue `PRAGMA key` on one connection) with `suite` as the
/// provider SQLCipher gives that connection.
pub fn with_suite<R>(
    suite: CipherSuite,
    apply_key: impl FnOnce() -> R,
) -> Result<R, ProviderError> {
    init();
    let providers = provider::installed()?;
    let _keying = KEYING.lock();
    match suite {
        CipherSuite::Aes256 => Ok(apply_key()),
        CipherSuite::Sm4 => {
            let _restore = provider::SmDefault::activate(providers)?;
            Ok(apply_key())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use primitives::{Digest, hmac, pbkdf2};

    fn hmac_sm3(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
        let mut out = [0u8; 32];
        assert!(hmac(Digest::Sm3, key, parts, &mut out));
        out
    }

    #[test]
    fn sm4_matches_the_standards_example() {
        // GB/T 32907-2016, appendix A, example 1: E_k(p) for one block. The first CTR block of a
        // zero page under counter p is E_k(p).
        let key = hex::decode("0123456789abcdeffedcba9876543210").unwrap();
        let mut page = vec![0u8; 32];
        assert!(ctr(CipherSuite::Sm4, &key, &key, 0, &mut page));
        assert_eq!(hex::encode(&page[..16]), "681edf34d206965e86b3e94f536e4246");
        // The same operation decrypts.
        assert!(ctr(CipherSuite::Sm4, &key, &key, 0, &mut page));
        assert_eq!(page, vec![0u8; 32]);
    }

    #[test]
    fn aes_ctr_matches_nist() {
        // NIST SP 800-38A, F.5.5 (CTR-AES256.Encrypt), blocks 1 and 2; block 2 also from its
        // offset, as the server's partial uploads read it.
        let key = hex::decode("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
            .unwrap();
        let iv = hex::decode("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff").unwrap();
        let plain = hex::decode("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51")
            .unwrap();
        let mut data = plain.clone();
        assert!(ctr(CipherSuite::Aes256, &key, &iv, 0, &mut data));
        assert_eq!(
            hex::encode(&data),
            "601ec313775789a5b7a7f504bbf3d228f443e3ca4d62b59aca84e990cacaf5c5"
        );
        let mut second = plain[16..].to_vec();
        assert!(ctr(CipherSuite::Aes256, &key, &iv, 16, &mut second));
        assert_eq!(second, data[16..]);
    }

    #[test]
    fn aes_cbc_matches_nist() {
        // NIST SP 800-38A, F.2.5 (CBC-AES256.Encrypt), blocks 1 and 2.
        let key = hex::decode("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
            .unwrap();
        let iv = hex::decode("000102030405060708090a0b0c0d0e0f").unwrap();
        let plain = hex::decode("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51")
            .unwrap();
        let mut data = plain.clone();
        assert!(primitives::aes256_cbc(true, &key, &iv, &mut data));
        assert_eq!(
            hex::encode(&data),
            "f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d"
        );
        assert!(primitives::aes256_cbc(false, &key, &iv, &mut data));
        assert_eq!(data, plain);
        assert!(!primitives::aes256_cbc(true, &key, &iv, &mut data[..17]));
    }

    #[test]
    fn hmac_and_pbkdf2_use_sm3() {
        let mac = hmac_sm3(b"key", &[b"ab", b"c"]);
        assert_eq!(mac, hmac_sm3(b"key", &[b"abc"]), "parts are concatenated");
        assert_ne!(mac, hmac_sm3(b"kez", &[b"abc"]));
        let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
        assert!(pbkdf2(Digest::Sm3, b"pass", b"salt", 2, &mut a));
        assert!(pbkdf2(Digest::Sm3, b"pass", b"salt", 3, &mut b));
        assert_ne!(a, b);
        // PBKDF2 with one round is HMAC(pass, salt || 1): ties both to SM3.
        assert!(pbkdf2(Digest::Sm3, b"pass", b"salt", 1, &mut a));
        let first = hmac_sm3(b"pass", &[b"salt", &[0, 0, 0, 1]]);
        assert_eq!(a[..], first[..16]);
        assert!(!pbkdf2(Digest::Sm3, b"pass", b"salt", 0, &mut a));
    }

    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        // RFC 4231, test case 2.
        let mut out = [0u8; 32];
        assert!(hmac(
            Digest::Sha256,
            b"Jefe",
            &[b"what do ya want ", b"for nothing?"],
            &mut out
        ));
        assert_eq!(
            hex::encode(out),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let mut short = [0u8; 20];
        assert!(!hmac(Digest::Sha256, b"Jefe", &[b"x"], &mut short));
    }

    #[test]
    fn sm3_matches_the_standards_example() {
        // GB/T 32905-2016, appendix A, example 1.
        assert_eq!(
            hex::encode(sm3(b"abc")),
            "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
        );
    }

    #[test]
    fn bad_keys_and_ivs_are_refused() {
        let mut data = [0u8; 32];
        assert!(!ctr(CipherSuite::Sm4, &[0; 32], &[0; 16], 0, &mut data));
        assert!(!ctr(CipherSuite::Sm4, &[0; 16], &[0; 8], 0, &mut data));
        assert!(!primitives::aes256_cbc(true, &[0; 16], &[0; 16], &mut data));
    }
}
