//! The primitives, in safe Rust (RustCrypto): what SQLCipher's providers and the server's
//! objects call. Every function checks its sizes and answers `None`/`false` instead of panicking:
//! a bad call from C becomes SQLITE_ERROR, never an abort.

use aes::Aes256;
use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, StreamCipher, StreamCipherSeek};
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Sha256, Sha512};
use sm3::Sm3;

use crate::CipherSuite;

/// The MAC (and the PBKDF2 PRF) a SQLCipher store names, by SQLCipher's numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Digest {
    Sha1,
    Sha256,
    Sha512,
    Sm3,
}

impl Digest {
    /// SQLCipher's `SQLCIPHER_HMAC_SHA1` (0), `_SHA256` (1), `_SHA512` (2).
    pub(crate) fn of_sqlcipher(algorithm: i32) -> Option<Self> {
        match algorithm {
            0 => Some(Self::Sha1),
            1 => Some(Self::Sha256),
            2 => Some(Self::Sha512),
            _ => None,
        }
    }

    pub(crate) fn len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 | Self::Sm3 => 32,
            Self::Sha512 => 64,
        }
    }
}

fn mac_into<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]], out: &mut [u8]) -> bool {
    let Ok(mut mac) = <M as KeyInit>::new_from_slice(key) else {
        return false;
    };
    for part in parts {
        mac.update(part);
    }
    let tag = mac.finalize().into_bytes();
    if tag.len() != out.len() {
        return false;
    }
    out.copy_from_slice(&tag);
    true
}

/// HMAC of the concatenated `parts` into `out`, which must be exactly the digest's length.
pub(crate) fn hmac(digest: Digest, key: &[u8], parts: &[&[u8]], out: &mut [u8]) -> bool {
    match digest {
        Digest::Sha1 => mac_into::<Hmac<Sha1>>(key, parts, out),
        Digest::Sha256 => mac_into::<Hmac<Sha256>>(key, parts, out),
        Digest::Sha512 => mac_into::<Hmac<Sha512>>(key, parts, out),
        Digest::Sm3 => mac_into::<Hmac<Sm3>>(key, parts, out),
    }
}

/// PBKDF2 with HMAC of `digest`; at least one round.
pub(crate) fn pbkdf2(
    digest: Digest,
    pass: &[u8],
    salt: &[u8],
    rounds: u32,
    out: &mut [u8],
) -> bool {
    if rounds == 0 {
        return false;
    }
    let done = match digest {
        Digest::Sha1 => pbkdf2::pbkdf2::<Hmac<Sha1>>(pass, salt, rounds, out),
        Digest::Sha256 => pbkdf2::pbkdf2::<Hmac<Sha256>>(pass, salt, rounds, out),
        Digest::Sha512 => pbkdf2::pbkdf2::<Hmac<Sha512>>(pass, salt, rounds, out),
        Digest::Sm3 => pbkdf2::pbkdf2::<Hmac<Sm3>>(pass, salt, rounds, out),
    };
    done.is_ok()
}

/// AES-256-CBC without padding, in place: SQLCipher's page cipher. `data` is whole blocks.
pub(crate) fn aes256_cbc(encrypt: bool, key: &[u8], iv: &[u8], data: &mut [u8]) -> bool {
    if !data.len().is_multiple_of(16) {
        return false;
    }
    if encrypt {
        let Ok(c) = cbc::Encryptor::<Aes256>::new_from_slices(key, iv) else {
            return false;
        };
        let len = data.len();
        c.encrypt_padded_mut::<NoPadding>(data, len).is_ok()
    } else {
        let Ok(c) = cbc::Decryptor::<Aes256>::new_from_slices(key, iv) else {
            return false;
        };
        // One call over the whole page: CBC decrypts its blocks in parallel (AES-NI pipelines).
        c.decrypt_padded_mut::<NoPadding>(data).is_ok()
    }
}

/// A block cipher of a suite in CTR mode (128-bit big-endian counter, as OpenSSL and
/// NIST SP 800-38A count), from byte `position` of the stream whose first counter block is
/// `iv`; in place, the same operation both ways.
pub fn ctr(suite: CipherSuite, key: &[u8], iv: &[u8], position: u64, data: &mut [u8]) -> bool {
    fn run(mut c: impl StreamCipher + StreamCipherSeek, position: u64, data: &mut [u8]) -> bool {
        c.try_seek(position).is_ok() && c.try_apply_keystream(data).is_ok()
    }
    match suite {
        CipherSuite::Aes256 => {
            ctr::Ctr128BE::<Aes256>::new_from_slices(key, iv).is_ok_and(|c| run(c, position, data))
        }
        CipherSuite::Sm4 => crate::sm4_ctr::ctr(key, iv, position, data),
    }
}

/// Fills `out` from the operating system's generator.
pub fn random_bytes(out: &mut [u8]) -> bool {
    getrandom::fill(out).is_ok()
}

/// SM3 of `data` (GB/T 32905).
pub fn sm3(data: &[u8]) -> [u8; 32] {
    use sm3::Digest as _;
    Sm3::digest(data).into()
}

/// The suite's keyed derivation: HMAC-SHA256, or HMAC-SM3 in the national mode.
pub fn derive(suite: CipherSuite, key: &[u8], label: &[u8]) -> Option<[u8; 32]> {
    let digest = match suite {
        CipherSuite::Aes256 => Digest::Sha256,
        CipherSuite::Sm4 => Digest::Sm3,
    };
    let mut out = [0u8; 32];
    hmac(digest, key, &[label], &mut out).then_some(out)
}
