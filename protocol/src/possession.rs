//! Proof that a device holds a content's bytes, not just its name. A content hash is not a
//! secret (it travels in every visit record), so the server lets a device read or claim a
//! content only after it proved possession: by uploading the bytes, or, when the server may
//! already hold them, by answering a challenge only the bytes can answer — a keyed hash of the
//! whole content under a nonce the server issued to that device.

use hmac::{Hmac, Mac};

use crate::audit::HashAlgorithm;

/// A keyed hash (HMAC) of a content, fed piece by piece: HMAC-SHA256, or HMAC-SM3 in the
/// national mode (the content's own hash algorithm).
#[derive(Clone)]
pub enum ContentProof {
    Sha256(Hmac<sha2::Sha256>),
    Sm3(Hmac<sm3::Sm3>),
}

impl std::fmt::Debug for ContentProof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContentProof")
    }
}

impl ContentProof {
    /// A proof of a content under `nonce`, the challenge the server issued.
    pub fn new(algorithm: HashAlgorithm, nonce: &str) -> Self {
        // HMAC takes a key of any length; these cannot fail.
        match algorithm {
            HashAlgorithm::Sha256 => ContentProof::Sha256(
                Hmac::new_from_slice(nonce.as_bytes()).unwrap_or_else(|_| unreachable!()),
            ),
            HashAlgorithm::Sm3 => ContentProof::Sm3(
                Hmac::new_from_slice(nonce.as_bytes()).unwrap_or_else(|_| unreachable!()),
            ),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            ContentProof::Sha256(m) => m.update(bytes),
            ContentProof::Sm3(m) => m.update(bytes),
        }
    }

    /// The proof, as hex.
    pub fn finish(self) -> String {
        match self {
            ContentProof::Sha256(m) => hex::encode(m.finalize().into_bytes()),
            ContentProof::Sm3(m) => hex::encode(m.finalize().into_bytes()),
        }
    }

    /// Does `claimed` (hex) equal this proof? In constant time.
    pub fn verify(self, claimed: &str) -> bool {
        let Ok(bytes) = hex::decode(claimed) else {
            return false;
        };
        match self {
            ContentProof::Sha256(m) => m.verify_slice(&bytes).is_ok(),
            ContentProof::Sm3(m) => m.verify_slice(&bytes).is_ok(),
        }
    }

    /// The proof of a content held whole in memory.
    pub fn of(algorithm: HashAlgorithm, nonce: &str, content: &[u8]) -> String {
        let mut p = Self::new(algorithm, nonce);
        p.update(content);
        p.finish()
    }
}

impl std::io::Write for ContentProof {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// HMAC-SHA256 of `message` under `key`, as bytes: the server's own keyed hashes (its nonces).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    m.update(message);
    m.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_proof_depends_on_the_bytes_and_the_nonce() {
        for alg in [HashAlgorithm::Sha256, HashAlgorithm::Sm3] {
            let photo = vec![9u8; 5_000];
            let p = ContentProof::of(alg, "n1", &photo);
            let mut pieces = ContentProof::new(alg, "n1");
            pieces.update(&photo[..1_000]);
            pieces.update(&photo[1_000..]);
            assert!(pieces.verify(&p));
            assert_ne!(ContentProof::of(alg, "n2", &photo), p);
            let mut other = photo.clone();
            other[4_999] = 8;
            assert!(!ContentProof::new(alg, "n1").verify(&ContentProof::of(alg, "n1", &other)));
            // The hash of the content itself is no proof.
            assert!(!ContentProof::new(alg, "n1").verify(&alg.digest(&photo)));
            assert!(!ContentProof::new(alg, "n1").verify("not hex"));
        }
    }

    #[test]
    fn hmac_sha256_matches_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
