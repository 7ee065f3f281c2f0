//! Who is calling: enrolment (a one-time token exchanged for a device token), authentication
//! of every request (unknown, revoked, expired, or ordered wiped), and the areas a user's
//! role and assignment cover. Tokens are stored hashed; the device token is shown once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::RngCore;
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use super::{server_audit, ts};
use zoufang_protocol::messages::{EnrollRequest, Predecessor};

use crate::repo::{DeviceRecord, NewDevice, Tx};
use crate::storage::{DeviceAuth, Enrolled, Result, ServerError};

/// How long a device token lives without a sync, unless the deployment says otherwise
/// (`zoufang server serve --device-token-days`): each sync renews it, so only a device silent
/// this long must enrol again.
pub const DEVICE_TOKEN_LIFETIME: Duration = Duration::from_secs(180 * 24 * 3600);

/// A token's expiry is written again only when it would move by more than this: a device that
/// syncs every hour costs one write a day, not one per sync.
const RENEWAL_STEP: chrono::TimeDelta = chrono::TimeDelta::days(1);

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
        if zoufang_model::domain::check_region_prefix(a).is_err() {
            return Err(ServerError::bad(
                "invalid_area",
                "an area is a region code's province (2 digits), prefecture (4), county (6), township (9) or village (12)",
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

fn expiry(now: DateTime<Utc>, lifetime: Duration) -> DateTime<Utc> {
    now + chrono::TimeDelta::from_std(lifetime).unwrap_or(chrono::TimeDelta::days(180))
}

/// Exchanges a one-time enrolment token for a new device and its token. A request naming a
/// predecessor (a store enrolled before, proved by its token, expired or not) enrols its
/// successor: same user, not revoked, not ordered wiped, not succeeded already. The
/// predecessor's token stops working; the successor continues its lineage.
pub fn enroll(
    tx: &mut dyn Tx,
    request: &EnrollRequest,
    lifetime: Duration,
    now: DateTime<Utc>,
) -> Result<Enrolled> {
    let name: String = request
        .device_name
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(100)
        .collect();
    let token_hash = hash_token(&request.enrollment_token);
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
    let predecessor = match &request.predecessor {
        Some(p) => check_predecessor(tx, p, &token.user_id)?,
        None => None,
    };
    tx.mark_enrollment_token_used(&token_hash, &ts(now))?;
    let device_token = new_token("zfd_");
    let expires = expiry(now, lifetime);
    let device_id = uuid::Uuid::now_v7().to_string();
    tx.insert_device(&NewDevice {
        id: &device_id,
        user_id: &token.user_id,
        name: &name,
        token_hash: &hash_token(&device_token),
        token_expires_at: &ts(expires),
        enrolled_at: &ts(now),
        predecessor: predecessor
            .as_ref()
            .map(|p| (p.id.as_str(), p.lineage.as_str())),
    })?;
    let user = tx
        .user(&token.user_id)?
        .ok_or_else(|| ServerError::Storage("an enrolment token names no user".into()))?;
    let subject = Some(("device", device_id.as_str()));
    let detail = match &predecessor {
        Some(p) => {
            if !tx.set_successor(&p.id, &device_id)? {
                return Err(successor_refused("the device was enrolled again already"));
            }
            serde_json::json!({"predecessor": p.id})
        }
        None => Json::Null,
    };
    server_audit::append(tx, now, &user.id, "device_enrolled", subject, detail)?;
    Ok(Enrolled {
        device_id,
        device_token,
        token_expires_at: ts(expires),
        user,
        predecessor: predecessor.map(|p| p.id),
    })
}

fn successor_refused(why: &str) -> ServerError {
    ServerError::Forbidden(format!(
        "this store cannot be enrolled again as its former device: {why}"
    ))
}

/// The device a re-enrolment succeeds, if its token proves it and nothing forbids it. A former
/// device this server never knew (the store was enrolled with another server) is no
/// predecessor: the enrolment is a first one.
fn check_predecessor(
    tx: &mut dyn Tx,
    p: &Predecessor,
    user_id: &str,
) -> Result<Option<DeviceRecord>> {
    let Some(device) = tx.device_by_token(&hash_token(&p.device_token))? else {
        if tx.device_lineage(&p.device_id)?.is_none() {
            return Ok(None);
        }
        return Err(ServerError::Unauthorized(
            "the former device's token is not valid",
        ));
    };
    if device.id != p.device_id {
        return Err(ServerError::Unauthorized(
            "the former device's token is not valid",
        ));
    }
    if device.user.id != user_id {
        return Err(successor_refused("the enrolment code is for another user"));
    }
    if device.revoked_at.is_some() {
        return Err(successor_refused("an administrator revoked it"));
    }
    if device.wipe_requested_at.is_some() {
        return Err(successor_refused("an administrator ordered it wiped"));
    }
    if device.successor_id.is_some() {
        return Err(successor_refused("it was enrolled again already"));
    }
    Ok(Some(device))
}

/// Moves the token's expiry to `now + lifetime`; the new expiry. Callers write only when
/// [`renewal_due`].
pub fn renew(
    tx: &mut dyn Tx,
    auth: &DeviceAuth,
    lifetime: Duration,
    now: DateTime<Utc>,
) -> Result<String> {
    let renewed = ts(expiry(now, lifetime));
    tx.renew_device_token(&auth.device_id, &renewed)?;
    Ok(renewed)
}

/// Whether a renewal is worth a write: the expiry in force is more than a day short of a full
/// lifetime from now.
pub fn renewal_due(auth: &DeviceAuth, lifetime: Duration, now: DateTime<Utc>) -> bool {
    auth.token_expires_at
        .as_ref()
        .is_none_or(|current| *current < ts(expiry(now, lifetime) - RENEWAL_STEP))
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
    if device.successor_id.is_some() {
        return Err(ServerError::Unauthorized(
            "this store was enrolled again; the former device's token no longer works",
        ));
    }
    if device.token_expires_at < ts(now) {
        return Err(ServerError::TokenExpired);
    }
    if device.wipe_requested_at.is_some() && !audit_upload {
        return Err(ServerError::Wiped);
    }
    Ok(DeviceAuth {
        device_id: device.id,
        lineage: device.lineage,
        token_expires_at: Some(device.token_expires_at),
        user: device.user,
    })
}
