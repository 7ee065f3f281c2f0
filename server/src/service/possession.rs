//! Possession challenges. A device proves it holds a content's bytes by a keyed hash of them
//! under a nonce the server issued to that device (`zoufang_protocol::possession`). Nonces are
//! stateless: the time of issue and a MAC of (device, time) under the deployment's secret, so
//! any node can check one, and one issued to a device is worthless to another.

use chrono::{DateTime, Utc};
use zoufang_protocol::possession::hmac_sha256;

use crate::repo::{self, Transactions};
use crate::storage::Result;

const SECRET: &str = "possession_nonce";
/// How long a nonce answers for: a sync over a weak link may take hours.
const VALID_SECONDS: i64 = 24 * 3600;

/// The deployment's nonce key: read (the common case, no write lock), made once.
pub fn secret(db: &dyn Transactions) -> Result<Vec<u8>> {
    if let Some(s) = repo::read(db, |tx| tx.server_secret(SECRET))? {
        return Ok(s);
    }
    let fresh: [u8; 32] = rand::random();
    repo::write(db, |tx| tx.create_server_secret(SECRET, &fresh))
}

fn mac(secret: &[u8], device_id: &str, issued: i64) -> String {
    let message = format!("{device_id}\n{issued}");
    hex::encode(
        hmac_sha256(secret, message.as_bytes())
            .get(..16)
            .unwrap_or_default(),
    )
}

/// A nonce for `device_id`, issued now.
pub fn issue(secret: &[u8], device_id: &str, now: DateTime<Utc>) -> String {
    let issued = now.timestamp();
    format!("{issued}.{}", mac(secret, device_id, issued))
}

/// Was `nonce` issued by this deployment to `device_id`, and is it still fresh?
pub fn valid(secret: &[u8], device_id: &str, nonce: &str, now: DateTime<Utc>) -> bool {
    let Some((issued, claimed)) = nonce.split_once('.') else {
        return false;
    };
    let Ok(issued) = issued.parse::<i64>() else {
        return false;
    };
    let age = now.timestamp().saturating_sub(issued);
    if !(-300..=VALID_SECONDS).contains(&age) {
        return false;
    }
    let expected = mac(secret, device_id, issued);
    // Both sides are hex of equal length; compare without an early exit.
    expected.len() == claimed.len()
        && expected
            .bytes()
            .zip(claimed.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_answers_for_its_device_for_a_day() {
        let now = Utc::now();
        let n = issue(b"secret", "dev-a", now);
        assert!(valid(b"secret", "dev-a", &n, now));
        assert!(valid(
            b"secret",
            "dev-a",
            &n,
            now + chrono::Duration::hours(23)
        ));
        assert!(!valid(
            b"secret",
            "dev-a",
            &n,
            now + chrono::Duration::hours(25)
        ));
        assert!(!valid(b"secret", "dev-b", &n, now));
        assert!(!valid(b"other", "dev-a", &n, now));
        assert!(!valid(b"secret", "dev-a", "garbage", now));
        let forged = format!("{}.{}", now.timestamp(), "0".repeat(32));
        assert!(!valid(b"secret", "dev-a", &forged, now));
    }
}
