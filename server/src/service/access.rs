//! Who is calling: enrolment (a one-time token exchanged for a device token), authentication
//! of every request (unknown, revoked, expired, or ordered wiped), and the areas a user's
//! role and assignment cover. Tokens are stored hashed; the device token is shown once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::RngCore;
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use super::{server_audit, ts};
use crate::repo::{NewDevice, Tx};
use crate::storage::{DeviceAuth, Enrolled, Result, ServerError};

/// How long a device token lives before the device must enrol again.
pub const DEVICE_TOKEN_LIFETIME: Duration = Duration::from_secs(180 * 24 * 3600);

/// Tokens are 256 random bits; a plain SHA-256 is the right hash for such secrets (no
/// dictionary to guess from), and it is what the server stores.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new secret token: 256 random bits, with a prefix that says what it is.
pub fn new_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// Areas are region-code prefixes; nested ones are redundant and would send entries twice.
pub fn normalize_areas(areas: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for a in areas {
        let a = a.trim();
        if a.is_empty() || a.len() > 12 || !a.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ServerError::bad(
                "invalid_area",
                "an area is 1 to 12 digits of a region code",
            ));
        }
        out.push(a.to_owned());
    }
    out.sort();
    out.dedup();
    let all = out.clone();
    out.retain(|a| !all.iter().any(|b| b != a && a.starts_with(b.as_str())));
    Ok(out)
}

/// Exchanges a one-time enrolment token for a new device and its token.
pub fn enroll(
    tx: &mut dyn Tx,
    enrollment_token: &str,
    device_name: &str,
    now: DateTime<Utc>,
) -> Result<Enrolled> {
    let name: String = device_name
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(100)
        .collect();
    let token_hash = hash_token(enrollment_token);
    let Some(token) = tx.enrollment_token(&token_hash)? else {
        return Err(ServerError::Unauthorized(
            "the enrolment token is not valid",
        ));
    };
    if token.used_at.is_some() {
        return Err(ServerError::Unauthorized(
            "the enrolment token was already used",
        ));
    }
    if token.expires_at < ts(now) {
        return Err(ServerError::Unauthorized("the enrolment token has expired"));
    }
    tx.mark_enrollment_token_used(&token_hash, &ts(now))?;
    let device_token = new_token("zfd_");
    let expires = now
        + chrono::TimeDelta::from_std(DEVICE_TOKEN_LIFETIME)
            .unwrap_or(chrono::TimeDelta::days(180));
    let device_id = uuid::Uuid::now_v7().to_string();
    tx.insert_device(&NewDevice {
        id: &device_id,
        user_id: &token.user_id,
        name: &name,
        token_hash: &hash_token(&device_token),
        token_expires_at: &ts(expires),
        enrolled_at: &ts(now),
    })?;
    let user = tx
        .user(&token.user_id)?
        .ok_or_else(|| ServerError::Storage("an enrolment token names no user".into()))?;
    let subject = Some(("device", device_id.as_str()));
    server_audit::append(tx, now, &user.id, "device_enrolled", subject, Json::Null)?;
    Ok(Enrolled {
        device_id,
        device_token,
        token_expires_at: ts(expires),
        user,
    })
}

/// The device of a token. A device an administrator ordered wiped may only upload its audit
/// trail (the wipe's last words, `audit_upload`); every other request gets `410 device_wiped`.
pub fn authenticate(
    tx: &mut dyn Tx,
    device_token: &str,
    now: DateTime<Utc>,
    audit_upload: bool,
) -> Result<DeviceAuth> {
    let Some(device) = tx.device_by_token(&hash_token(device_token))? else {
        return Err(ServerError::Unauthorized("unknown device token"));
    };
    if device.revoked_at.is_some() {
        return Err(ServerError::Unauthorized("this device was revoked"));
    }
    if device.token_expires_at < ts(now) {
        return Err(ServerError::Unauthorized(
            "the device token has expired; enrol again",
        ));
    }
    if device.wipe_requested_at.is_some() && !audit_upload {
        return Err(ServerError::Wiped);
    }
    Ok(DeviceAuth {
        device_id: device.id,
        user: device.user,
    })
}
