//! AES-256-GCM and SM4-GCM (NIST SP 800-38D; SM4-GCM as in RFC 8998): the server's attachment
//! objects. 96-bit nonces, 128-bit tags, the associated data given in parts.

use aes::Aes256;
use aes_gcm::aead::consts::{U12, U16};
use aes_gcm::aead::{AeadCore, AeadMutInPlace, Nonce, Tag};
use aes_gcm::{AesGcm, KeyInit};
use sm4::Sm4;

use crate::CipherSuite;

/// Bytes of a nonce.
pub const NONCE: usize = 12;
/// Bytes of a tag.
pub const TAG: usize = 16;

fn run<A>(
    key: &[u8],
    seal: bool,
    nonce: &[u8],
    aad: &[u8],
    data: &mut [u8],
    tag: &mut [u8; TAG],
) -> bool
where
    A: KeyInit + AeadMutInPlace + AeadCore<NonceSize = U12, TagSize = U16>,
{
    if nonce.len() != NONCE {
        return false;
    }
    let Ok(mut c) = <A as KeyInit>::new_from_slice(key) else {
        return false;
    };
    let nonce = Nonce::<A>::from_slice(nonce);
    if seal {
        match c.encrypt_in_place_detached(nonce, aad, data) {
            Ok(t) => {
                tag.copy_from_slice(&t);
                true
            }
            Err(_) => false,
        }
    } else {
        c.decrypt_in_place_detached(nonce, aad, data, Tag::<A>::from_slice(tag))
            .is_ok()
    }
}

/// Encrypts `data` in place and returns its tag; `None` for a key or nonce of the wrong size.
pub fn seal(
    suite: CipherSuite,
    key: &[u8],
    nonce: &[u8],
    aad: &[u8],
    data: &mut [u8],
) -> Option<[u8; TAG]> {
    let mut tag = [0u8; TAG];
    let done = match suite {
        CipherSuite::Aes256 => run::<AesGcm<Aes256, U12>>(key, true, nonce, aad, data, &mut tag),
        CipherSuite::Sm4 => run::<AesGcm<Sm4, U12>>(key, true, nonce, aad, data, &mut tag),
    };
    done.then_some(tag)
}

/// Decrypts `data` in place if `tag` authenticates it with `aad`; `false` (data unspecified)
/// otherwise.
pub fn open(
    suite: CipherSuite,
    key: &[u8],
    nonce: &[u8],
    aad: &[u8],
    data: &mut [u8],
    tag: &[u8],
) -> bool {
    let Ok(mut tag) = <[u8; TAG]>::try_from(tag) else {
        return false;
    };
    match suite {
        CipherSuite::Aes256 => run::<AesGcm<Aes256, U12>>(key, false, nonce, aad, data, &mut tag),
        CipherSuite::Sm4 => run::<AesGcm<Sm4, U12>>(key, false, nonce, aad, data, &mut tag),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn aes_gcm_matches_nist() {
        // NIST GCM test vectors (gcmEncryptExtIV256), Count 0 with 128-bit plaintext and AAD.
        let key = hex::decode("92e11dcdaa866f5ce790fd24501f92509aacf4cb8b1339d50c9c1240935dd08b")
            .unwrap();
        let nonce = hex::decode("ac93a1a6145299bde902f21a").unwrap();
        let aad = hex::decode("1e0889016f67601c8ebea4943bc23ad6").unwrap();
        let mut data = hex::decode("2d71bcfa914e4ac045b2aa60955fad24").unwrap();
        let tag = seal(CipherSuite::Aes256, &key, &nonce, &aad, &mut data).unwrap();
        assert_eq!(hex::encode(&data), "8995ae2e6df3dbf96fac7b7137bae67f");
        assert_eq!(hex::encode(tag), "eca5aa77d51d4a0a14d9c51e1da474ab");
        assert!(open(
            CipherSuite::Aes256,
            &key,
            &nonce,
            &aad,
            &mut data,
            &tag
        ));
        assert_eq!(hex::encode(&data), "2d71bcfa914e4ac045b2aa60955fad24");
    }

    #[test]
    fn sm4_gcm_matches_rfc_8998() {
        // RFC 8998, appendix A.1.
        let key = hex::decode("0123456789ABCDEFFEDCBA9876543210").unwrap();
        let nonce = hex::decode("00001234567800000000ABCD").unwrap();
        let aad = hex::decode("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2").unwrap();
        let plain = hex::decode(
            "AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDDEEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA",
        )
        .unwrap();
        let mut data = plain.clone();
        let tag = seal(CipherSuite::Sm4, &key, &nonce, &aad, &mut data).unwrap();
        assert_eq!(
            hex::encode_upper(&data),
            "17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D"
        );
        assert_eq!(hex::encode_upper(tag), "83DE3541E4C2B58177E065A9BF7B62EC");
        let mut bad = tag;
        bad[0] ^= 1;
        assert!(!open(
            CipherSuite::Sm4,
            &key,
            &nonce,
            &aad,
            &mut data.clone(),
            &bad
        ));
        assert!(open(CipherSuite::Sm4, &key, &nonce, &aad, &mut data, &tag));
        assert_eq!(data, plain);
    }
}
