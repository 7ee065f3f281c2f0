//! `households` and `members`: the local records, edited field by field. The indexed columns
//! (village, head's name, due date, a member's name, ID number and relationship) are copies of
//! fields kept for the coordinator's lists and searches; `fields` (JSON) is the record itself.
//! The server's view of the same records (`server_state`) is `server_view`'s.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value as Json};

use super::{not_found, parse_object};
use crate::error::{Error, Result};
use crate::records::{HEAD_RELATIONSHIP, Household, HouseholdSummary, Member};
use zoufang_protocol::messages::Entity;

fn text(fields: &Map<String, Json>, key: &str) -> Option<String> {
    fields.get(key).and_then(Json::as_str).map(str::to_owned)
}

/// A household's status column: its `status` field, `active` when unset.
fn household_status(fields: &Map<String, Json>) -> String {
    text(fields, "status").unwrap_or_else(|| "active".into())
}

/// Whether a member has left the household (by its `status` field): kept, not listed.
fn member_removed(fields: &Map<String, Json>) -> bool {
    text(fields, "status").is_some_and(|s| s != "present")
}

/// What inserting a record did. The lookups a caller would otherwise make first (is the id
/// taken? is the member's household here?) are the insert's own checks: a township's pull
/// inserts 250,000 records, and each lookup was a b-tree search of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Insert {
    Done,
    IdTaken,
    /// A member whose household is not in the store (the foreign key refused it).
    NoHousehold,
}

impl Insert {
    /// For a record the device makes (a fresh id, a household it checked): anything but
    /// `Done` is a fault.
    pub(crate) fn required(self) -> Result<()> {
        match self {
            Self::Done => Ok(()),
            Self::IdTaken => Err(Error::Storage("a new record's id is already used".into())),
            Self::NoHousehold => Err(Error::Storage(
                "a new member's household is not in the store".into(),
            )),
        }
    }
}

fn inserted(changed: rusqlite::Result<usize>) -> Result<Insert> {
    match changed {
        Ok(0) => Ok(Insert::IdTaken),
        Ok(_) => Ok(Insert::Done),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY =>
        {
            Ok(Insert::NoHousehold)
        }
        Err(e) => Err(e.into()),
    }
}

/// A new household row. `server_state` is the server's view when the record came from it.
pub(crate) fn insert_household(
    conn: &Connection,
    id: &str,
    village_code: &str,
    fields: &Map<String, Json>,
    server_state: Option<&str>,
    at: &str,
) -> Result<Insert> {
    inserted(conn.prepare_cached(
        "INSERT INTO households (id, village_code, next_visit_due, status, fields, server_state, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, coalesce(?6, '{}'), ?7, ?7) ON CONFLICT (id) DO NOTHING",
    )?
    .execute(params![
        id,
        village_code,
        text(fields, "next_visit_due"),
        household_status(fields),
        serde_json::to_string(fields)?,
        server_state,
        at
    ]))
}

/// A new member row; the household's head name follows when the member is its head.
pub(crate) fn insert_member(
    conn: &Connection,
    id: &str,
    household_id: &str,
    fields: &Map<String, Json>,
    server_state: Option<&str>,
    at: &str,
) -> Result<Insert> {
    let done = inserted(conn.prepare_cached(
        "INSERT INTO members (id, household_id, name, id_number, relationship, fields, removed, server_state, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, coalesce(?8, '{}'), ?9, ?9) ON CONFLICT (id) DO NOTHING",
    )?
    .execute(params![
        id,
        household_id,
        text(fields, "name"),
        text(fields, "id_number"),
        text(fields, "relationship"),
        serde_json::to_string(fields)?,
        member_removed(fields),
        server_state,
        at
    ]))?;
    if done == Insert::Done && text(fields, "relationship").as_deref() == Some(HEAD_RELATIONSHIP) {
        refresh_head(conn, household_id)?;
    }
    Ok(done)
}

pub(crate) fn exists(conn: &Connection, id: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM households WHERE id = ?1")?
        .query_row([id], |r| r.get::<_, i64>(0))
        .optional()?
        .is_some())
}

/// `Ok` if the household is in the store, `not_found` otherwise.
pub(crate) fn require(conn: &Connection, id: &str) -> Result<()> {
    if exists(conn, id)? {
        Ok(())
    } else {
        Err(not_found("household", id))
    }
}

/// A household with its members, head first: those present, and those who left, died or were
/// found duplicates.
pub(crate) fn load(conn: &Connection, id: &str) -> Result<Household> {
    let row = conn
        .prepare_cached(
            "SELECT id, village_code, head_name, next_visit_due, fields, created_at, updated_at FROM households WHERE id = ?1",
        )?
        .query_row([id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
            ))
        })
        .optional()?
        .ok_or_else(|| not_found("household", id))?;
    let mut stmt = conn.prepare_cached(
        "SELECT id, fields, removed FROM members WHERE household_id = ?1 ORDER BY relationship, created_at",
    )?;
    let (mut members, mut former_members) = (Vec::new(), Vec::new());
    let rows = stmt.query_map([id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, bool>(2)?,
        ))
    })?;
    for row in rows {
        let (mid, fields, removed) = row?;
        let member = Member {
            id: mid,
            household_id: id.to_owned(),
            fields: parse_object(&fields)?,
        };
        if removed {
            former_members.push(member);
        } else {
            members.push(member);
        }
    }
    Ok(Household {
        id: row.0,
        village_code: row.1,
        head_name: row.2,
        next_visit_due: row.3,
        fields: parse_object(&row.4)?,
        members,
        former_members,
        created_at: row.5,
        updated_at: row.6,
    })
}

/// A household's fields.
pub(crate) fn fields(conn: &Connection, id: &str) -> Result<Map<String, Json>> {
    let fields: String = conn
        .prepare_cached("SELECT fields FROM households WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?
        .ok_or_else(|| not_found("household", id))?;
    parse_object(&fields)
}

/// A member's fields, if it belongs to that household.
pub(crate) fn member_fields(
    conn: &Connection,
    member_id: &str,
    household_id: &str,
) -> Result<Option<Map<String, Json>>> {
    let fields: Option<String> = conn
        .prepare_cached("SELECT fields FROM members WHERE id = ?1 AND household_id = ?2")?
        .query_row(params![member_id, household_id], |r| r.get(0))
        .optional()?;
    fields.map(|f| parse_object(&f)).transpose()
}

/// The village a household or member record belongs to.
pub(crate) fn village_of(conn: &Connection, entity: Entity, id: &str) -> Result<Option<String>> {
    let sql = match entity {
        Entity::Household => "SELECT village_code FROM households WHERE id = ?1",
        Entity::Member => {
            "SELECT h.village_code FROM members m JOIN households h ON h.id = m.household_id WHERE m.id = ?1"
        }
    };
    Ok(conn
        .prepare_cached(sql)?
        .query_row([id], |r| r.get(0))
        .optional()?)
}

/// Is this household or member record in the store?
pub(crate) fn record_exists(conn: &Connection, entity: Entity, id: &str) -> Result<bool> {
    let sql = match entity {
        Entity::Household => "SELECT 1 FROM households WHERE id = ?1",
        Entity::Member => "SELECT 1 FROM members WHERE id = ?1",
    };
    Ok(conn
        .prepare_cached(sql)?
        .query_row([id], |r| r.get::<_, i64>(0))
        .optional()?
        .is_some())
}

/// Keeps the denormalised head name in step with the members.
pub(crate) fn refresh_head(conn: &Connection, household_id: &str) -> Result<()> {
    conn.prepare_cached(
        "UPDATE households SET head_name = (SELECT name FROM members WHERE household_id = ?1 AND removed = 0 AND relationship = ?2
                                            ORDER BY created_at LIMIT 1) WHERE id = ?1",
    )?
    .execute(params![household_id, HEAD_RELATIONSHIP])?;
    Ok(())
}

fn put(fields: &mut Map<String, Json>, field: &str, value: &Json) {
    if value.is_null() {
        fields.remove(field);
    } else {
        fields.insert(field.to_owned(), value.clone());
    }
}

/// Writes one field of a local record and its indexed copies (no log, no outbox: also used to
/// show what the server sent). Null clears the field.
pub(crate) fn store_field(
    conn: &Connection,
    entity: Entity,
    id: &str,
    field: &str,
    value: &Json,
    at: &str,
) -> Result<()> {
    match entity {
        Entity::Household => store_household_field(conn, id, field, value, at),
        Entity::Member => store_member_field(conn, id, field, value, at),
    }
}

fn store_household_field(
    conn: &Connection,
    id: &str,
    field: &str,
    value: &Json,
    at: &str,
) -> Result<()> {
    let mut fields = fields(conn, id)?;
    put(&mut fields, field, value);
    conn.prepare_cached(
        "UPDATE households SET fields = ?2, village_code = ?3, next_visit_due = ?4, status = ?5, updated_at = ?6 WHERE id = ?1",
    )?
    .execute(params![
        id,
        Json::Object(fields.clone()).to_string(),
        text(&fields, "village_code").unwrap_or_default(),
        text(&fields, "next_visit_due"),
        household_status(&fields),
        at
    ])?;
    Ok(())
}

fn store_member_field(
    conn: &Connection,
    id: &str,
    field: &str,
    value: &Json,
    at: &str,
) -> Result<()> {
    let (household_id, fields): (String, String) = conn
        .prepare_cached("SELECT household_id, fields FROM members WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .ok_or_else(|| not_found("member", id))?;
    let mut fields = parse_object(&fields)?;
    put(&mut fields, field, value);
    conn.prepare_cached(
        "UPDATE members SET fields = ?2, name = ?3, id_number = ?4, relationship = ?5, removed = ?6, updated_at = ?7 WHERE id = ?1",
    )?
    .execute(params![
        id,
        Json::Object(fields.clone()).to_string(),
        text(&fields, "name"),
        text(&fields, "id_number"),
        text(&fields, "relationship"),
        member_removed(&fields),
        at
    ])?;
    refresh_head(conn, &household_id)
}

const SUMMARY: &str =
    "SELECT h.id, h.village_code, h.head_name, h.next_visit_due, h.status FROM households h";

/// Which households a list holds: the active ones (the default everywhere), or all of them
/// (finding a family that moved away).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    Active,
    All,
}

impl Scope {
    fn all(self) -> bool {
        self == Self::All
    }
}

fn summaries(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<HouseholdSummary>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params, |r| {
        Ok(HouseholdSummary {
            id: r.get(0)?,
            village_code: r.get(1)?,
            head_name: r.get(2)?,
            next_visit_due: r.get(3)?,
            status: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Households of a village, by head's name.
pub(crate) fn in_village(
    conn: &Connection,
    village_code: &str,
    (limit, offset): (u32, u32),
    scope: Scope,
) -> Result<Vec<HouseholdSummary>> {
    summaries(
        conn,
        &format!(
            "{SUMMARY} WHERE h.village_code = ?1 AND (?4 OR h.status = 'active')
             ORDER BY h.head_name, h.id LIMIT ?2 OFFSET ?3"
        ),
        params![village_code, limit, offset, scope.all()],
    )
}

/// Active households due on or before a date (YYYY-MM-DD), soonest first, optionally in one
/// village.
pub(crate) fn due(
    conn: &Connection,
    on_or_before: &str,
    village_code: Option<&str>,
    limit: u32,
) -> Result<Vec<HouseholdSummary>> {
    summaries(
        conn,
        &format!(
            "{SUMMARY} WHERE h.next_visit_due IS NOT NULL AND h.next_visit_due <= ?1 AND h.status = 'active'
             AND (?2 IS NULL OR h.village_code = ?2) ORDER BY h.next_visit_due, h.id LIMIT ?3"
        ),
        params![on_or_before, village_code, limit],
    )
}

/// What a household search matches: a member's name, or a member's resident ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MemberKey {
    Name,
    IdNumber,
}

/// Households with a member whose name or ID starts with `prefix` (normalised by the caller).
pub(crate) fn with_member_prefix(
    conn: &Connection,
    key: MemberKey,
    prefix: &str,
    limit: u32,
    scope: Scope,
) -> Result<Vec<HouseholdSummary>> {
    let column = match key {
        MemberKey::Name => "name",
        MemberKey::IdNumber => "id_number",
    };
    // A range scan on the index: every string with this prefix sorts in [prefix, prefix+U+10FFFF).
    let upper = format!("{prefix}\u{10FFFF}");
    let sql = format!(
        "{SUMMARY} WHERE h.id IN (SELECT household_id FROM members WHERE {column} >= ?1 AND {column} < ?2 AND (?4 OR removed = 0) LIMIT ?3)
         AND (?4 OR h.status = 'active') ORDER BY h.head_name, h.id"
    );
    summaries(conn, &sql, params![prefix, upper, limit, scope.all()])
}

/// Present members holding a resident ID (normalised by the caller): (member, household).
pub(crate) fn holders_of_id_number(
    conn: &Connection,
    id_number: &str,
) -> Result<Vec<(String, String)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, household_id FROM members WHERE id_number = ?1 AND removed = 0 ORDER BY created_at LIMIT 20",
    )?;
    let rows = stmt.query_map([id_number], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One household's summary line.
pub(crate) fn summary(conn: &Connection, id: &str) -> Result<HouseholdSummary> {
    summaries(conn, &format!("{SUMMARY} WHERE h.id = ?1"), [id])?
        .pop()
        .ok_or_else(|| not_found("household", id))
}

/// Applies a reviewer's merge: the members and visits (drafts included) of `merged` now belong
/// to `survivor`, when this phone holds it (the server merges within one village, so a phone
/// that pulled the merge holds both).
pub(crate) fn apply_merge(conn: &Connection, merged: &str, survivor: &str) -> Result<()> {
    if !exists(conn, survivor)? {
        return Ok(());
    }
    conn.prepare_cached("UPDATE members SET household_id = ?2 WHERE household_id = ?1")?
        .execute(params![merged, survivor])?;
    conn.prepare_cached("UPDATE visits SET household_id = ?2 WHERE household_id = ?1")?
        .execute(params![merged, survivor])?;
    refresh_head(conn, survivor)?;
    refresh_head(conn, merged)
}

/// The villages this phone holds households of.
pub(crate) fn villages(conn: &Connection) -> Result<Vec<String>> {
    // A skip scan of the village index: one seek per village, however many households each
    // holds (every sync asks, twice).
    let mut stmt = conn.prepare_cached(
        "WITH RECURSIVE v(code) AS (
             SELECT min(village_code) FROM households
             UNION ALL
             SELECT (SELECT min(village_code) FROM households WHERE village_code > v.code)
             FROM v WHERE v.code IS NOT NULL
         )
         SELECT code FROM v WHERE code IS NOT NULL",
    )?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Removes a village from this phone: its households, members, visits, their attachments and
/// contents, its conflicts and checksum — but a household with a draft (typed work is never
/// dropped), which stays until the draft is completed or voided, and one the server never
/// took. Returns the households removed.
pub(crate) fn drop_village(conn: &Connection, village: &str) -> Result<u64> {
    // Only what the server holds goes: a household it never took (refused, still listed with
    // its rejected change) stays with the coordinator, as does one with a draft.
    const GOING: &str = "(SELECT h.id FROM households h WHERE h.village_code = ?1 AND h.server_state != '{}'
         AND NOT EXISTS (SELECT 1 FROM visits d WHERE d.household_id = h.id AND d.status = 'draft'))";
    let visits = format!("(SELECT id FROM visits WHERE household_id IN {GOING})");
    for sql in [
        format!("DELETE FROM attachments WHERE visit_id IN {visits}"),
        format!("UPDATE visits SET revision_of = NULL WHERE revision_of IN {visits}"),
        format!("DELETE FROM visits WHERE household_id IN {GOING}"),
        format!("DELETE FROM members WHERE household_id IN {GOING}"),
    ] {
        conn.execute(&sql, [village])?;
    }
    let n = conn.execute(
        &format!("DELETE FROM households WHERE id IN {GOING}"),
        [village],
    )?;
    if !conn
        .prepare_cached("SELECT 1 FROM households WHERE village_code = ?1")?
        .exists([village])?
    {
        conn.execute(
            "DELETE FROM sync_conflicts WHERE village_code = ?1",
            [village],
        )?;
        conn.execute(
            "DELETE FROM scope_checksums WHERE village_code = ?1",
            [village],
        )?;
    }
    for table in ["blobs", "pending_contents"] {
        conn.execute(
            &format!("DELETE FROM {table} WHERE hash NOT IN (SELECT content_hash FROM attachments WHERE content_hash IS NOT NULL)"),
            [],
        )?;
    }
    Ok(n as u64)
}
