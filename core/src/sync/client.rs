//! The device side of sync as operations on the store: the outbox written with each change,
//! the server's view of each record (bases for edits, checksums), and applying what the
//! server sends. Every apply is one transaction, so an interrupted sync resumes cleanly.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use super::hlc::Hlc;
use crate::collector::{
    Collector, load_visit, parse_object, refresh_head, store_household_field, store_member_field,
    timestamp,
};
use crate::error::{Error, Result};
use crate::records::{Visit, VisitStatus};
use zoufang_protocol::checksum::field_hash;
use zoufang_protocol::messages::{
    Ack, AttachmentRecord, ChangeOp, ConflictInfo, ConflictStatus, Entity, FeedItem, FieldValue,
    Outcome, PullResponse, RecordState, SnapshotResponse, UserInfo, VisitRecord,
};

/// What the device remembers about its server, in `meta` under `sync`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncSettings {
    pub device_id: Option<String>,
    pub device_token: Option<String>,
    pub user: Option<UserInfo>,
    #[serde(default)]
    pub cursors: BTreeMap<String, u64>,
    pub clock_offset_ms: Option<i64>,
    pub last_sync_at: Option<String>,
    pub hlc: Option<String>,
}

/// What a sync screen shows before and after a sync.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncStatus {
    pub enrolled: bool,
    pub user: Option<UserInfo>,
    pub device_id: Option<String>,
    pub pending_changes: u64,
    pub open_conflicts: u64,
    pub rejected_changes: u64,
    pub last_sync_at: Option<String>,
    /// Server time minus device time, measured at the last sync.
    pub clock_offset_ms: Option<i64>,
    /// Attachment contents of completed visits the server does not hold yet, and their bytes.
    pub pending_attachments: u64,
    pub pending_attachment_bytes: u64,
}

/// A change the server refused: kept and listed, never dropped.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RejectedChange {
    pub seq: u64,
    pub change: Json,
    pub code: String,
    pub message: String,
    pub rejected_at: String,
}

fn table(entity: Entity) -> &'static str {
    match entity {
        Entity::Household => "households",
        Entity::Member => "members",
    }
}

fn load_server_state(
    tx: &Transaction<'_>,
    entity: Entity,
    id: &str,
) -> Result<Option<Map<String, Json>>> {
    let sql = format!("SELECT server_state FROM {} WHERE id = ?1", table(entity));
    let text: Option<String> = tx
        .prepare_cached(&sql)?
        .query_row([id], |r| r.get(0))
        .optional()?;
    text.map(|t| parse_object(&t)).transpose()
}

fn field_value(state: &Map<String, Json>, field: &str) -> Option<FieldValue> {
    state
        .get(field)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

pub(crate) fn server_field(
    tx: &Transaction<'_>,
    entity: Entity,
    id: &str,
    field: &str,
) -> Result<Option<FieldValue>> {
    Ok(load_server_state(tx, entity, id)?.and_then(|s| field_value(&s, field)))
}

/// The newest outbox entry still waiting that touches this field (an edit of it, or the
/// creation of its record).
fn pending_after(
    tx: &Transaction<'_>,
    entity: Entity,
    id: &str,
    field: &str,
) -> Result<Option<u64>> {
    let seq: Option<i64> = tx
        .prepare_cached("SELECT max(seq) FROM outbox WHERE entity = ?1 AND entity_id = ?2 AND (field = ?3 OR field IS NULL)")?
        .query_row(params![entity.as_str(), id, field], |r| r.get(0))?;
    Ok(seq.map(|s| s as u64))
}

fn record_village(tx: &Transaction<'_>, entity: Entity, id: &str) -> Result<Option<String>> {
    let sql = match entity {
        Entity::Household => "SELECT village_code FROM households WHERE id = ?1",
        Entity::Member => {
            "SELECT h.village_code FROM members m JOIN households h ON h.id = m.household_id WHERE m.id = ?1"
        }
    };
    Ok(tx
        .prepare_cached(sql)?
        .query_row([id], |r| r.get(0))
        .optional()?)
}

fn adjust_checksum(
    tx: &Transaction<'_>,
    village: &str,
    remove: Option<u64>,
    add: Option<u64>,
) -> Result<()> {
    // Wrapping u64 arithmetic in Rust: SQLite would turn an overflowing integer sum into a float.
    let current: Option<i64> = tx
        .prepare_cached("SELECT sum FROM scope_checksums WHERE village_code = ?1")?
        .query_row([village], |r| r.get(0))
        .optional()?;
    let sum = (current.unwrap_or(0) as u64)
        .wrapping_sub(remove.unwrap_or(0))
        .wrapping_add(add.unwrap_or(0));
    tx.prepare_cached(
        "INSERT OR REPLACE INTO scope_checksums (village_code, sum) VALUES (?1, ?2)",
    )?
    .execute(params![village, sum as i64])?;
    Ok(())
}

pub(crate) fn store_local_field(
    tx: &Transaction<'_>,
    entity: Entity,
    id: &str,
    field: &str,
    value: &Json,
    at: &str,
) -> Result<()> {
    match entity {
        Entity::Household => store_household_field(tx, id, field, value, at),
        Entity::Member => store_member_field(tx, id, field, value, at),
    }
}

/// Records the server's value of one field (unless what we hold is newer) and, when no local
/// edit of it is pending, shows it. Keeps the village checksum in step.
fn set_server_field(
    tx: &Transaction<'_>,
    entity: Entity,
    id: &str,
    field: &str,
    value: &Json,
    version: u64,
    at: &str,
) -> Result<()> {
    let Some(mut state) = load_server_state(tx, entity, id)? else {
        return Ok(());
    };
    let old = field_value(&state, field);
    if old.as_ref().is_none_or(|o| version > o.version) {
        if let Some(village) = record_village(tx, entity, id)? {
            let remove = old
                .as_ref()
                .map(|o| field_hash(entity, id, field, o.version, &o.value));
            adjust_checksum(
                tx,
                &village,
                remove,
                Some(field_hash(entity, id, field, version, value)),
            )?;
        }
        let fv = FieldValue {
            value: value.clone(),
            version,
        };
        state.insert(field.to_owned(), serde_json::to_value(fv)?);
        let sql = format!(
            "UPDATE {} SET server_state = ?2 WHERE id = ?1",
            table(entity)
        );
        tx.prepare_cached(&sql)?
            .execute(params![id, Json::Object(state.clone()).to_string()])?;
    }
    if pending_after(tx, entity, id, field)?.is_none()
        && let Some(current) = field_value(&state, field)
    {
        store_local_field(tx, entity, id, field, &current.value, at)?;
    }
    Ok(())
}

fn upsert_conflict(tx: &Transaction<'_>, c: &ConflictInfo) -> Result<()> {
    let status = if c.status == ConflictStatus::Open {
        "open"
    } else {
        "resolved"
    };
    tx.prepare_cached(
        "INSERT INTO sync_conflicts (id, village_code, status, info) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (id) DO UPDATE SET status = ?3, info = ?4",
    )?
    .execute(params![
        c.id,
        c.village_code,
        status,
        serde_json::to_string(c)?
    ])?;
    Ok(())
}

fn apply_conflict(tx: &Transaction<'_>, c: &ConflictInfo, at: &str) -> Result<()> {
    let value = c.resolution.as_ref().unwrap_or(&c.provisional);
    set_server_field(tx, c.entity, &c.entity_id, &c.field, value, c.version, at)?;
    upsert_conflict(tx, c)
}

/// Inserts a record the device did not have, or merges the server's fields into it.
fn apply_record(tx: &Transaction<'_>, r: &RecordState, at: &str) -> Result<()> {
    let exists: Option<i64> = tx
        .prepare_cached(&format!("SELECT 1 FROM {} WHERE id = ?1", table(r.entity)))?
        .query_row([&r.id], |row| row.get(0))
        .optional()?;
    if exists.is_none() {
        let fields: Map<String, Json> = r
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), v.value.clone()))
            .collect();
        // A new record is written whole: its server view, local view and checksum in one go.
        let state: Map<String, Json> = r
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or(Json::Null)))
            .collect();
        let state = Json::Object(state).to_string();
        let sum = r.fields.iter().fold(0u64, |acc, (k, v)| {
            acc.wrapping_add(field_hash(r.entity, &r.id, k, v.version, &v.value))
        });
        match r.entity {
            Entity::Household => {
                let due = fields
                    .get("next_visit_due")
                    .and_then(Json::as_str)
                    .map(str::to_owned);
                tx.prepare_cached(
                    "INSERT INTO households (id, village_code, next_visit_due, fields, server_state, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                )?
                .execute(params![r.id, r.village_code, due, Json::Object(fields).to_string(), state, at])?;
            }
            Entity::Member => {
                let Some(household) = r.household_id.as_deref() else {
                    return Ok(());
                };
                let has_household: Option<i64> = tx
                    .query_row(
                        "SELECT 1 FROM households WHERE id = ?1",
                        [household],
                        |row| row.get(0),
                    )
                    .optional()?;
                if has_household.is_none() {
                    return Ok(());
                }
                let text = |k: &str| fields.get(k).and_then(Json::as_str).map(str::to_owned);
                tx.prepare_cached(
                    "INSERT INTO members (id, household_id, name, id_number, relationship, fields, server_state, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
                )?
                .execute(params![r.id, household, text("name"), text("id_number"), text("relationship"), Json::Object(fields.clone()).to_string(), state, at])?;
                if text("relationship").as_deref() == Some(crate::collector::HEAD_RELATIONSHIP) {
                    refresh_head(tx, household)?;
                }
            }
        }
        adjust_checksum(tx, &r.village_code, None, Some(sum))?;
        return Ok(());
    }
    for (field, fv) in &r.fields {
        set_server_field(tx, r.entity, &r.id, field, &fv.value, fv.version, at)?;
    }
    Ok(())
}

fn apply_visit(tx: &Transaction<'_>, v: &VisitRecord, seq: u64) -> Result<()> {
    let form: Option<i64> = tx
        .query_row(
            "SELECT 1 FROM form_definitions WHERE form_id = ?1 AND version = ?2",
            params![v.form_id, v.form_version],
            |r| r.get(0),
        )
        .optional()?;
    let household_known = match &v.household_id {
        Some(h) => tx
            .query_row("SELECT 1 FROM households WHERE id = ?1", [h], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?
            .is_some(),
        None => true,
    };
    if form.is_none() || !household_known {
        // Read-only copies of others' visits; the form arrives with the catalog next time.
        tracing::debug!(visit = %v.id, "visit from the server skipped: form or household not on the device");
        return Ok(());
    }
    tx.prepare_cached(
        "INSERT INTO visits (id, household_id, form_id, form_version, visit_type, status, answers, author, revision_of, void_reason,
                             created_at, updated_at, completed_at, signed_at, synced_seq)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, ?12, ?13, ?14)
         ON CONFLICT (id) DO NOTHING",
    )?
    .execute(params![
        v.id,
        v.household_id,
        v.form_id,
        v.form_version,
        v.visit_type,
        v.status,
        Json::Object(v.answers.clone()).to_string(),
        v.author,
        v.revision_of,
        v.void_reason,
        v.created_at,
        v.completed_at,
        v.signed_at,
        seq as i64
    ])?;
    Ok(())
}

impl Collector {
    fn settings_in(conn: &rusqlite::Connection) -> Result<SyncSettings> {
        let text: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'sync'", [], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(text
            .map(|t| serde_json::from_str(&t))
            .transpose()?
            .unwrap_or_default())
    }

    pub(crate) fn sync_settings(&self) -> Result<SyncSettings> {
        Self::settings_in(&self.db.reader.lock())
    }

    pub(crate) fn save_settings(tx: &Transaction<'_>, settings: &SyncSettings) -> Result<()> {
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('sync', ?1)",
            [serde_json::to_string(settings)?],
        )?;
        Ok(())
    }

    pub(crate) fn update_settings(
        &self,
        f: impl FnOnce(&mut SyncSettings),
    ) -> Result<SyncSettings> {
        self.write(|tx| {
            let mut s = Self::settings_in(tx)?;
            f(&mut s);
            Self::save_settings(tx, &s)?;
            Ok(s)
        })
    }

    /// Continues the clock after a restart: never behind anything already stamped.
    pub(crate) fn restore_hlc(&self) -> Result<()> {
        let conn = self.db.reader.lock();
        // Entries are stamped in seq order, so the newest seq holds the newest stamp (and the
        // rowid lookup keeps opening a store with a long outbox instant).
        let from_outbox: Option<String> = conn
            .query_row(
                "SELECT hlc FROM outbox ORDER BY seq DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let stored = Self::settings_in(&conn)?.hlc;
        let best = [from_outbox, stored]
            .into_iter()
            .flatten()
            .filter_map(|h| Hlc::parse(&h))
            .max();
        if let Some(h) = best {
            *self.hlc.lock() = h;
        }
        Ok(())
    }

    pub(crate) fn enqueue(
        &self,
        tx: &Transaction<'_>,
        at: &str,
        key: Option<(Entity, &str, Option<&str>)>,
        op: ChangeOp,
    ) -> Result<()> {
        let physical = self.now().timestamp_millis().max(0) as u64;
        let hlc = self.hlc.lock().tick(physical).to_string();
        tx.prepare_cached("INSERT INTO outbox (entity, entity_id, field, hlc, device_time, change) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?
            .execute(params![
                key.map(|k| k.0.as_str()),
                key.map(|k| k.1),
                key.and_then(|k| k.2),
                hlc,
                at,
                serde_json::to_string(&op)?
            ])?;
        Ok(())
    }

    /// Queues an edit of one field with the server version its editor saw.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn enqueue_field_edit(
        &self,
        tx: &Transaction<'_>,
        at: &str,
        entity: Entity,
        id: &str,
        field: &str,
        value: &Json,
        resolves: Option<(&str, u64)>,
    ) -> Result<()> {
        let seen = server_field(tx, entity, id, field)?.map_or(0, |f| f.version);
        let base = resolves.map_or(seen, |(_, v)| v.max(seen));
        let after = pending_after(tx, entity, id, field)?;
        let op = ChangeOp::SetField {
            entity,
            id: id.to_owned(),
            field: field.to_owned(),
            value: value.clone(),
            base,
            resolves: resolves.map(|(c, _)| c.to_owned()),
            after,
        };
        self.enqueue(tx, at, Some((entity, id, Some(field))), op)
    }

    /// A completed visit as it travels.
    pub(crate) fn visit_record(&self, tx: &Transaction<'_>, v: &Visit) -> Result<VisitRecord> {
        let from_answers = v
            .answers
            .get("village_code")
            .and_then(Json::as_str)
            .map(str::to_owned);
        let village = match (from_answers, &v.household_id) {
            (Some(code), _) => code,
            (None, Some(h)) => tx.query_row(
                "SELECT village_code FROM households WHERE id = ?1",
                [h],
                |r| r.get(0),
            )?,
            (None, None) => String::new(),
        };
        Ok(VisitRecord {
            id: v.id.clone(),
            household_id: v.household_id.clone(),
            village_code: village,
            form_id: v.form_id.clone(),
            form_version: v.form_version,
            visit_type: v.visit_type.clone(),
            status: v.status.as_str().to_owned(),
            answers: v.answers.clone(),
            author: v.author.clone(),
            revision_of: v.revision_of.clone(),
            void_reason: v.void_reason.clone(),
            created_at: v.created_at.clone(),
            completed_at: v.completed_at.clone(),
            signed_at: v.signed_at.clone(),
            attachments: crate::collector::load_attachments(tx, &v.id)?
                .into_iter()
                .map(|a| AttachmentRecord {
                    id: a.id,
                    field_path: a.field_path,
                    kind: a.kind.as_str().to_owned(),
                    hash_algorithm: self.hash_algorithm(),
                    content_hash: a.content_hash,
                    size_bytes: a.size_bytes,
                    mime_type: a.mime_type,
                    metadata: a.metadata,
                    created_at: a.created_at,
                })
                .collect(),
        })
    }

    /// A visit as it travels to the server (for tools that measure or inspect the wire).
    pub fn visit_submission(&self, visit_id: &str) -> Result<VisitRecord> {
        let visit = self.load_visit(visit_id)?;
        self.write(|tx| self.visit_record(tx, &visit))
    }

    /// The oldest waiting changes, at most `limit`.
    pub(crate) fn outbox_batch(
        &self,
        limit: usize,
    ) -> Result<Vec<zoufang_protocol::messages::Change>> {
        let conn = self.db.reader.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT seq, hlc, device_time, change FROM outbox ORDER BY seq LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        rows.map(|row| {
            let (seq, hlc, device_time, change) = row?;
            Ok(zoufang_protocol::messages::Change {
                seq: seq as u64,
                hlc,
                device_time,
                op: serde_json::from_str(&change)?,
            })
        })
        .collect()
    }

    pub(crate) fn outbox_len(&self) -> Result<u64> {
        Ok(self
            .db
            .reader
            .lock()
            .query_row("SELECT count(*) FROM outbox", [], |r| r.get::<_, i64>(0))?
            .max(0) as u64)
    }

    /// Applies the server's acknowledgements: each named entry leaves the outbox, in the same
    /// transaction as its effect. Returns (applied or unchanged, conflicts, rejected).
    pub(crate) fn apply_acks(&self, acks: &[Ack]) -> Result<(u64, u64, u64)> {
        let at = timestamp(self.now());
        self.write(|tx| {
            let mut counts = (0, 0, 0);
            for ack in acks {
                let change: Option<String> = tx
                    .prepare_cached("SELECT change FROM outbox WHERE seq = ?1")?
                    .query_row([ack.seq as i64], |r| r.get(0))
                    .optional()?;
                let Some(change) = change else { continue };
                tx.prepare_cached("DELETE FROM outbox WHERE seq = ?1")?.execute([ack.seq as i64])?;
                let op: ChangeOp = serde_json::from_str(&change)?;
                if ack.outcome == Outcome::Rejected {
                    counts.2 += 1;
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO rejected_changes (seq, change, code, message, rejected_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![
                        ack.seq as i64,
                        change,
                        ack.code.as_deref().unwrap_or("rejected"),
                        ack.message.as_deref().unwrap_or(""),
                        at
                    ])?;
                    if let ChangeOp::SetField { entity, id, field, .. } = &op {
                        // The record shows the server's value again; the typed one stays listed.
                        if pending_after(tx, *entity, id, field)?.is_none() {
                            let server = server_field(tx, *entity, id, field)?.map_or(Json::Null, |f| f.value);
                            store_local_field(tx, *entity, id, field, &server, &at)?;
                        }
                    }
                    continue;
                }
                if ack.outcome == Outcome::Conflict {
                    counts.1 += 1;
                } else {
                    counts.0 += 1;
                }
                let Some(version) = ack.version else { continue };
                match &op {
                    ChangeOp::SetField { entity, id, field, value, .. } => {
                        let value = ack.value.as_ref().unwrap_or(value);
                        set_server_field(tx, *entity, id, field, value, version, &at)?;
                    }
                    ChangeOp::CreateHousehold { id, fields, .. } if ack.outcome == Outcome::Applied => {
                        for (field, value) in fields {
                            set_server_field(tx, Entity::Household, id, field, value, version, &at)?;
                        }
                    }
                    ChangeOp::CreateMember { id, fields, .. } if ack.outcome == Outcome::Applied => {
                        for (field, value) in fields {
                            set_server_field(tx, Entity::Member, id, field, value, version, &at)?;
                        }
                    }
                    ChangeOp::SubmitVisit { visit } => {
                        tx.prepare_cached("UPDATE visits SET synced_seq = ?2 WHERE id = ?1")?.execute(params![visit.id, version as i64])?;
                    }
                    _ => {}
                }
                if let Some(c) = &ack.conflict {
                    upsert_conflict(tx, c)?;
                }
            }
            Ok(counts)
        })
    }

    /// Applies one pull batch and moves the cursors, in one transaction.
    pub(crate) fn apply_pull(&self, response: &PullResponse) -> Result<()> {
        let at = timestamp(self.now());
        self.write(|tx| {
            for entry in &response.entries {
                match &entry.item {
                    FeedItem::Record { record } => apply_record(tx, record, &at)?,
                    FeedItem::Field { entity, id, field, value, version } => set_server_field(tx, *entity, id, field, value, *version, &at)?,
                    FeedItem::Conflict { conflict } => apply_conflict(tx, conflict, &at)?,
                    FeedItem::Visit { visit } => apply_visit(tx, visit, entry.seq)?,
                    FeedItem::VisitStatus { id, status, reason, at: when } => {
                        tx.prepare_cached(
                            "UPDATE visits SET status = ?2, void_reason = coalesce(?3, void_reason),
                                 signed_at = CASE WHEN ?2 = 'signed' THEN ?4 ELSE signed_at END, updated_at = ?4
                             WHERE id = ?1 AND status != 'draft'",
                        )?
                        .execute(params![id, status, reason, when])?;
                    }
                }
            }
            let mut settings = Self::settings_in(tx)?;
            for (area, cursor) in &response.cursors {
                settings.cursors.insert(area.clone(), *cursor);
            }
            Self::save_settings(tx, &settings)
        })
    }

    pub(crate) fn local_checksums(&self) -> Result<BTreeMap<String, u64>> {
        let conn = self.db.reader.lock();
        let mut stmt = conn.prepare("SELECT village_code, sum FROM scope_checksums")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Replaces the server view of one village with the server's snapshot and recomputes its
    /// checksum. Local edits still waiting in the outbox stay on top.
    pub(crate) fn apply_snapshot(&self, village: &str, snapshot: &SnapshotResponse) -> Result<()> {
        let at = timestamp(self.now());
        self.write(|tx| {
            tx.execute("UPDATE households SET server_state = '{}' WHERE village_code = ?1", [village])?;
            tx.execute(
                "UPDATE members SET server_state = '{}' WHERE household_id IN (SELECT id FROM households WHERE village_code = ?1)",
                [village],
            )?;
            let households = snapshot.records.iter().filter(|r| r.entity == Entity::Household);
            let members = snapshot.records.iter().filter(|r| r.entity == Entity::Member);
            for r in households.chain(members) {
                apply_record(tx, r, &at)?;
            }
            for c in &snapshot.conflicts {
                upsert_conflict(tx, c)?;
            }
            // Recount from scratch: the incremental sum is what diverged.
            let mut sum = 0u64;
            let mut stmt = tx.prepare(
                "SELECT 'household', id, server_state FROM households WHERE village_code = ?1
                 UNION ALL
                 SELECT 'member', m.id, m.server_state FROM members m JOIN households h ON h.id = m.household_id WHERE h.village_code = ?1",
            )?;
            let rows = stmt.query_map([village], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?;
            for row in rows {
                let (entity, id, state) = row?;
                let entity = Entity::parse(&entity).unwrap_or(Entity::Household);
                for (field, fv) in parse_object(&state)? {
                    if let Ok(fv) = serde_json::from_value::<FieldValue>(fv) {
                        sum = sum.wrapping_add(field_hash(entity, &id, &field, fv.version, &fv.value));
                    }
                }
            }
            drop(stmt);
            tx.execute("INSERT OR REPLACE INTO scope_checksums (village_code, sum) VALUES (?1, ?2)", params![village, sum as i64])?;
            Ok(())
        })
    }

    // ----- the public face ----------------------------------------------------------------

    pub fn sync_status(&self) -> Result<SyncStatus> {
        let settings = self.sync_settings()?;
        let (pending_attachments, pending_attachment_bytes) = self.pending_upload_totals()?;
        let conn = self.db.reader.lock();
        let n = |sql: &str| {
            conn.query_row(sql, [], |r| r.get::<_, i64>(0))
                .map(|v| v.max(0) as u64)
        };
        Ok(SyncStatus {
            enrolled: settings.device_token.is_some(),
            user: settings.user,
            device_id: settings.device_id,
            pending_changes: n("SELECT count(*) FROM outbox")?,
            open_conflicts: n("SELECT count(*) FROM sync_conflicts WHERE status = 'open'")?,
            rejected_changes: n("SELECT count(*) FROM rejected_changes")?,
            last_sync_at: settings.last_sync_at,
            clock_offset_ms: settings.clock_offset_ms,
            pending_attachments,
            pending_attachment_bytes,
        })
    }

    /// Open conflicts on this device: every competing value with who and when, and the
    /// provisional value the record shows meanwhile.
    pub fn conflicts(&self) -> Result<Vec<ConflictInfo>> {
        let conn = self.db.reader.lock();
        let mut stmt =
            conn.prepare("SELECT info FROM sync_conflicts WHERE status = 'open' ORDER BY id")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.map(|i| Ok(serde_json::from_str(&i?)?)).collect()
    }

    /// Resolves a conflict with one of its values or a new one. It syncs like any edit; the
    /// conflict closes when the server confirms.
    pub fn resolve_conflict(&self, conflict_id: &str, value: Json) -> Result<()> {
        self.require_user()?;
        let info: Option<String> = self
            .db
            .reader
            .lock()
            .query_row(
                "SELECT info FROM sync_conflicts WHERE id = ?1 AND status = 'open'",
                [conflict_id],
                |r| r.get(0),
            )
            .optional()?;
        let info: ConflictInfo = match info {
            Some(i) => serde_json::from_str(&i)?,
            None => {
                return Err(Error::NotFound {
                    entity: "open conflict",
                    id: conflict_id.chars().take(64).collect(),
                });
            }
        };
        let value = self.checked_record_value(info.entity, &info.field, value)?;
        let at = timestamp(self.now());
        self.write(|tx| {
            store_local_field(tx, info.entity, &info.entity_id, &info.field, &value, &at)?;
            self.log_change(
                tx,
                &at,
                info.entity.as_str(),
                &info.entity_id,
                "resolve_conflict",
                Some(&info.field),
                Some(&value),
            )?;
            self.enqueue_field_edit(
                tx,
                &at,
                info.entity,
                &info.entity_id,
                &info.field,
                &value,
                Some((&info.id, info.version)),
            )
        })
    }

    /// Changes the server refused, newest first.
    pub fn rejected_changes(&self) -> Result<Vec<RejectedChange>> {
        let conn = self.db.reader.lock();
        let mut stmt = conn.prepare("SELECT seq, change, code, message, rejected_at FROM rejected_changes ORDER BY seq DESC")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?;
        rows.map(|row| {
            let (seq, change, code, message, rejected_at) = row?;
            Ok(RejectedChange {
                seq: seq as u64,
                change: serde_json::from_str(&change)?,
                code,
                message,
                rejected_at,
            })
        })
        .collect()
    }

    /// Whether a visit's submission has been acknowledged by the server.
    pub fn visit_synced(&self, visit_id: &str) -> Result<bool> {
        let v = load_visit(&self.db.reader.lock(), visit_id)?;
        if v.status == VisitStatus::Draft {
            return Ok(false);
        }
        let seq: Option<i64> = self.db.reader.lock().query_row(
            "SELECT synced_seq FROM visits WHERE id = ?1",
            [visit_id],
            |r| r.get(0),
        )?;
        Ok(seq.is_some())
    }
}
