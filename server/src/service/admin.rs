//! What an administrator does (`zoufang admin`): users and their areas, enrolment tokens,
//! devices, revocation and remote wipe. Every device-level action enters the server's audit
//! chain.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use zoufang_protocol::messages::UserInfo;

use super::access::{hash_token, new_token, normalize_areas};
use super::{server_audit, ts};
use crate::repo::Tx;
use crate::storage::{DeviceInfo, Result, ServerError};

pub fn create_user(tx: &mut dyn Tx, user: &UserInfo, now: DateTime<Utc>) -> Result<()> {
    if user.id.trim().is_empty() || user.id.len() > 128 {
        return Err(ServerError::bad(
            "invalid_user",
            "a user id is 1 to 128 characters",
        ));
    }
    let user = UserInfo {
        areas: normalize_areas(&user.areas)?,
        ..user.clone()
    };
    if !tx.insert_user(&user, &ts(now))? {
        return Err(ServerError::bad(
            "user_exists",
            "a user with this id exists",
        ));
    }
    Ok(())
}

/// Changes a user's areas; the areas taken away still take their phones' pending changes for a
/// season (`handover.rs`).
pub fn set_areas(
    tx: &mut dyn Tx,
    user_id: &str,
    areas: &[String],
    now: DateTime<Utc>,
) -> Result<()> {
    let before = tx
        .user(user_id)?
        .ok_or_else(|| ServerError::NotFound("user".into()))?
        .areas;
    let after = normalize_areas(areas)?;
    if !tx.set_areas(user_id, &after)? {
        return Err(ServerError::NotFound("user".into()));
    }
    super::handover::record_area_change(tx, user_id, (&before, &after), now)
}

pub fn users(tx: &mut dyn Tx) -> Result<Vec<UserInfo>> {
    tx.users()
}

/// A one-time enrolment token for a user, valid for `valid_for` (a week when unsaid).
pub fn issue_enrollment(
    tx: &mut dyn Tx,
    user_id: &str,
    valid_for: Duration,
    now: DateTime<Utc>,
) -> Result<String> {
    if tx.user(user_id)?.is_none() {
        return Err(ServerError::NotFound("user".into()));
    }
    let token = new_token("zfe_");
    let expires =
        now + chrono::TimeDelta::from_std(valid_for).unwrap_or(chrono::TimeDelta::days(7));
    tx.insert_enrollment_token(&hash_token(&token), user_id, &ts(expires))?;
    Ok(token)
}

pub fn revoke_device(tx: &mut dyn Tx, device_id: &str, now: DateTime<Utc>) -> Result<()> {
    if !tx.revoke_device(device_id, &ts(now))? {
        return Err(ServerError::NotFound("device".into()));
    }
    let subject = Some(("device", device_id));
    server_audit::append(
        tx,
        now,
        "administrator",
        "device_revoked",
        subject,
        Json::Null,
    )
}

/// Orders a device wiped at its next contact.
pub fn request_wipe(tx: &mut dyn Tx, device_id: &str, now: DateTime<Utc>) -> Result<()> {
    if !tx.order_wipe(device_id, &ts(now))? {
        return Err(ServerError::NotFound("active device".into()));
    }
    let subject = Some(("device", device_id));
    server_audit::append(
        tx,
        now,
        "administrator",
        "wipe_ordered",
        subject,
        Json::Null,
    )
}

pub fn devices(tx: &mut dyn Tx) -> Result<Vec<DeviceInfo>> {
    tx.devices()
}
