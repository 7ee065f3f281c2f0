//! The due-date rule. How often a household is visited follows its assistance category (低保,
//! 特困, ... at the frequencies the province configures, `zoufang admin visit-frequency`), not a
//! date typed by hand: when a visit of such a household arrives, or a reviewer changes its
//! category, the server sets `next_visit_due` from the last visit and the frequency, and the
//! phones receive it. A coordinator's own date for such a household is refused
//! (`server_owned_field`); households of no configured category keep the typed date.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::json;
use zoufang_protocol::messages::{Entity, Role, UserInfo};

use super::records::{FieldEdit, write_fields_as_server};
use super::{server_audit, ts};
use crate::repo::Tx;
use crate::storage::{DeviceAuth, Result, ServerError};

/// The longest visit frequency configurable: two years.
pub const MAX_FREQUENCY_DAYS: u32 = 730;

/// An administrator sets how often households of `category` are visited.
pub fn set_visit_frequency(
    tx: &mut dyn Tx,
    category: &str,
    days: u32,
    now: DateTime<Utc>,
) -> Result<()> {
    let named = !category.is_empty()
        && category.len() <= 32
        && category
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_');
    if !named || !(1..=MAX_FREQUENCY_DAYS).contains(&days) {
        return Err(ServerError::bad(
            "invalid_frequency",
            format!("a category code of [a-z_] and 1 to {MAX_FREQUENCY_DAYS} days"),
        ));
    }
    tx.put_visit_frequency(category, days, &ts(now))?;
    let detail = json!({"category": category, "days": days});
    server_audit::append(
        tx,
        now,
        "administrator",
        "visit_frequency_set",
        None,
        detail,
    )
}

/// The visit frequency that applies to a household, if its category has one.
pub fn frequency_of(tx: &mut dyn Tx, household: &str) -> Result<Option<u32>> {
    let category = tx
        .field(Entity::Household, household, "assistance_category")?
        .and_then(|f| f.value.as_str().map(str::to_owned));
    let Some(category) = category else {
        return Ok(None);
    };
    Ok(tx.visit_frequencies()?.get(&category).copied())
}

/// Why a device may not set this household's next due date, if it may not.
pub fn refusal(
    tx: &mut dyn Tx,
    auth: &DeviceAuth,
    e: &FieldEdit<'_>,
) -> Result<Option<&'static str>> {
    let ruled = e.entity == Entity::Household
        && e.field == "next_visit_due"
        && auth.user.role == Role::Coordinator
        && frequency_of(tx, e.id)?.is_some();
    Ok(ruled.then_some("the next visit follows the visit frequency of the household's category"))
}

/// The date of the household's last completed visit the server holds.
fn last_visit(tx: &mut dyn Tx, household: &str) -> Result<Option<NaiveDate>> {
    Ok(tx
        .visits_of_household(household)?
        .iter()
        .filter(|(_, v)| v.status != "void")
        .filter_map(|(_, v)| v.completed_at.as_deref().and_then(date_of))
        .max())
}

fn date_of(instant: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(instant.get(..10)?, "%Y-%m-%d").ok()
}

/// Sets the household's next due date from its last visit (or the day of `at` without one)
/// and its category's frequency; nothing when no frequency applies or the date already stands.
pub fn apply_rule(tx: &mut dyn Tx, household: &str, village: &str, at: &str) -> Result<()> {
    let Some(days) = frequency_of(tx, household)? else {
        return Ok(());
    };
    let Some(from) = last_visit(tx, household)?.or_else(|| date_of(at)) else {
        return Ok(());
    };
    let due = json!(
        (from + chrono::TimeDelta::days(i64::from(days)))
            .format("%Y-%m-%d")
            .to_string()
    );
    let current = tx.field(Entity::Household, household, "next_visit_due")?;
    if current.as_ref().map(|f| &f.value) == Some(&due) {
        return Ok(());
    }
    let server = DeviceAuth::new(
        "server",
        UserInfo {
            id: "server".into(),
            role: Role::Administrator,
            areas: Vec::new(),
        },
    );
    let record = (Entity::Household, household, village);
    write_fields_as_server(tx, &server, record, &[("next_visit_due", due)], at)
}
