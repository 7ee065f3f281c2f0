//! The device side of sync as operations on the store: the outbox written with each change,
//! the server's view of each record (bases for edits, checksums), and applying what the
//! server sends. Every apply is one transaction, so an interrupted sync resumes cleanly.

use std::collections::BTreeMap;

use rusqlite::{Connection, Transaction};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use super::hlc::Hlc;
use crate::collector::Action;
use crate::collector::Collector;
use crate::error::{Error, Result};
use crate::records::{Visit, VisitStatus, timestamp};
use crate::store::{self, households, meta, outbox, server_view};
use zoufang_protocol::checksum::field_hash;
use zoufang_protocol::messages::{
    Ack, AttachmentRecord, ChangeOp, ConflictInfo, Entity, FeedItem, FieldValue, Outcome,
    PullResponse, RecordState, SnapshotResponse, UserInfo, VisitRecord,
};

pub use crate::store::outbox::RejectedChange;

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

fn field_value(state: &Map<String, Json>, field: &str) -> Option<FieldValue> {
    state
        .get(field)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

pub(crate) fn server_field(
    conn: &Connection,
    entity: Entity,
    id: &str,
    field: &str,
) -> Result<Option<FieldValue>> {
    Ok(server_view::state(conn, entity, id)?.and_then(|s| field_value(&s, field)))
}

/// Moves a village's checksum from one field hash to another.
fn adjust_checksum(
    conn: &Connection,
    village: &str,
    remove: Option<u64>,
    add: Option<u64>,
) -> Result<()> {
    // Wrapping u64 arithmetic in Rust: SQLite would turn an overflowing integer sum into a float.
    let sum = server_view::checksum(conn, village)?
        .wrapping_sub(remove.unwrap_or(0))
        .wrapping_add(add.unwrap_or(0));
    server_view::set_checksum(conn, village, sum)
}

/// Records the server's value of one field (unless what we hold is newer) and, when no local
/// edit of it is pending, shows it. Keeps the village checksum in step.
fn set_server_field(
    conn: &Connection,
    entity: Entity,
    id: &str,
    field: &str,
    value: &Json,
    version: u64,
    at: &str,
) -> Result<()> {
    let Some(mut state) = server_view::state(conn, entity, id)? else {
        return Ok(());
    };
    let old = field_value(&state, field);
    if old.as_ref().is_none_or(|o| version > o.version) {
        if let Some(village) = households::village_of(conn, entity, id)? {
            let remove = old
                .as_ref()
                .map(|o| field_hash(entity, id, field, o.version, &o.value));
            let add = Some(field_hash(entity, id, field, version, value));
            adjust_checksum(conn, &village, remove, add)?;
        }
        let fv = FieldValue {
            value: value.clone(),
            version,
        };
        state.insert(field.to_owned(), serde_json::to_value(fv)?);
        server_view::save_state(conn, entity, id, &state)?;
    }
    if outbox::pending_for_field(conn, entity, id, field)?.is_none()
        && let Some(current) = field_value(&state, field)
    {
        households::store_field(conn, entity, id, field, &current.value, at)?;
    }
    Ok(())
}

fn apply_conflict(conn: &Connection, c: &ConflictInfo, at: &str) -> Result<()> {
    let value = c.resolution.as_ref().unwrap_or(&c.provisional);
    set_server_field(conn, c.entity, &c.entity_id, &c.field, value, c.version, at)?;
    server_view::upsert_conflict(conn, c)
}

/// Inserts a record the device did not have, or merges the server's fields into it.
fn apply_record(conn: &Connection, r: &RecordState, at: &str) -> Result<()> {
    if households::record_exists(conn, r.entity, &r.id)? {
        for (field, fv) in &r.fields {
            set_server_field(conn, r.entity, &r.id, field, &fv.value, fv.version, at)?;
        }
        return Ok(());
    }
    // A new record is written whole: its server view, local view and checksum in one go.
    let fields: Map<String, Json> = r
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect();
    let state: Map<String, Json> = r
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or(Json::Null)))
        .collect();
    let state = Json::Object(state).to_string();
    match r.entity {
        Entity::Household => {
            households::insert_household(conn, &r.id, &r.village_code, &fields, Some(&state), at)?;
        }
        Entity::Member => {
            // A member arrives after its household; one whose household is not here is not ours.
            let Some(household) = r.household_id.as_deref() else {
                return Ok(());
            };
            if !households::exists(conn, household)? {
                return Ok(());
            }
            households::insert_member(conn, &r.id, household, &fields, Some(&state), at)?;
        }
    }
    let sum = r.fields.iter().fold(0u64, |acc, (k, v)| {
        acc.wrapping_add(field_hash(r.entity, &r.id, k, v.version, &v.value))
    });
    adjust_checksum(conn, &r.village_code, None, Some(sum))
}

fn apply_visit(conn: &Connection, v: &VisitRecord, seq: u64) -> Result<()> {
    let form_known = store::forms::has_version(conn, &v.form_id, v.form_version)?;
    let household_known = match &v.household_id {
        Some(h) => households::exists(conn, h)?,
        None => true,
    };
    if !form_known || !household_known {
        // Read-only copies of others' visits; the form arrives with the catalog next time.
        tracing::debug!(visit = %v.id, "visit from the server skipped: form or household not on the device");
        return Ok(());
    }
    store::visits::insert_from_server(conn, v, seq)
}

/// Applies one acknowledgement: the entry leaves the outbox in the same transaction as its
/// effect. Returns its outcome, or `None` for an entry already gone (an ack seen twice).
fn apply_ack(conn: &Connection, ack: &Ack, at: &str) -> Result<Option<Outcome>> {
    let Some(change) = outbox::take(conn, ack.seq)? else {
        return Ok(None);
    };
    let op: ChangeOp = serde_json::from_str(&change)?;
    if ack.outcome == Outcome::Rejected {
        let code = ack.code.as_deref().unwrap_or("rejected");
        let message = ack.message.as_deref().unwrap_or("");
        outbox::reject(conn, ack.seq, &change, code, message, at)?;
        if let ChangeOp::SetField {
            entity, id, field, ..
        } = &op
        {
            // The record shows the server's value again; the typed one stays listed.
            if outbox::pending_for_field(conn, *entity, id, field)?.is_none() {
                let server =
                    server_field(conn, *entity, id, field)?.map_or(Json::Null, |f| f.value);
                households::store_field(conn, *entity, id, field, &server, at)?;
            }
        }
        return Ok(Some(Outcome::Rejected));
    }
    if let Some(version) = ack.version {
        let created = ack.outcome == Outcome::Applied;
        match &op {
            ChangeOp::SetField {
                entity,
                id,
                field,
                value,
                ..
            } => {
                let value = ack.value.as_ref().unwrap_or(value);
                set_server_field(conn, *entity, id, field, value, version, at)?;
            }
            ChangeOp::CreateHousehold { id, fields, .. } if created => {
                for (field, value) in fields {
                    set_server_field(conn, Entity::Household, id, field, value, version, at)?;
                }
            }
            ChangeOp::CreateMember { id, fields, .. } if created => {
                for (field, value) in fields {
                    set_server_field(conn, Entity::Member, id, field, value, version, at)?;
                }
            }
            ChangeOp::SubmitVisit { visit } => store::visits::set_synced(conn, &visit.id, version)?,
            _ => {}
        }
        if let Some(c) = &ack.conflict {
            server_view::upsert_conflict(conn, c)?;
        }
    }
    Ok(Some(ack.outcome))
}

/// Replaces the server view of one village with a snapshot and recounts its checksum; local
/// edits still waiting in the outbox stay on top.
fn apply_snapshot_in(
    conn: &Connection,
    village: &str,
    snapshot: &SnapshotResponse,
    at: &str,
) -> Result<()> {
    server_view::clear_village(conn, village)?;
    let households = snapshot
        .records
        .iter()
        .filter(|r| r.entity == Entity::Household);
    let members = snapshot
        .records
        .iter()
        .filter(|r| r.entity == Entity::Member);
    for r in households.chain(members) {
        apply_record(conn, r, at)?;
    }
    for c in &snapshot.conflicts {
        server_view::upsert_conflict(conn, c)?;
    }
    // Recount from scratch: the incremental sum is what diverged.
    let mut sum = 0u64;
    for (entity, id, state) in server_view::village_states(conn, village)? {
        for (field, fv) in state {
            if let Ok(fv) = serde_json::from_value::<FieldValue>(fv) {
                sum = sum.wrapping_add(field_hash(entity, &id, &field, fv.version, &fv.value));
            }
        }
    }
    server_view::set_checksum(conn, village, sum)
}

impl Collector {
    fn settings_in(conn: &Connection) -> Result<SyncSettings> {
        Ok(meta::get(conn, meta::SYNC)?
            .map(|t| serde_json::from_str(&t))
            .transpose()?
            .unwrap_or_default())
    }

    pub(crate) fn sync_settings(&self) -> Result<SyncSettings> {
        self.read(Self::settings_in)
    }

    pub(crate) fn save_settings(conn: &Connection, settings: &SyncSettings) -> Result<()> {
        meta::set(conn, meta::SYNC, &serde_json::to_string(settings)?)
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
        let (from_outbox, stored) =
            self.read(|c| Ok((outbox::last_hlc(c)?, Self::settings_in(c)?.hlc)))?;
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

    /// Queues a change for the server, stamped by the device's clock, in the caller's
    /// transaction.
    pub(crate) fn enqueue(
        &self,
        tx: &Transaction<'_>,
        at: &str,
        key: outbox::RecordKey<'_>,
        op: ChangeOp,
    ) -> Result<()> {
        let physical = u64::try_from(self.now().timestamp_millis()).unwrap_or(0);
        let hlc = self.hlc.lock().tick(physical).to_string();
        outbox::push(tx, key, &hlc, at, &op)
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
        let after = outbox::pending_for_field(tx, entity, id, field)?;
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
    pub(crate) fn visit_record(&self, conn: &Connection, v: &Visit) -> Result<VisitRecord> {
        let from_answers = v
            .answers
            .get("village_code")
            .and_then(Json::as_str)
            .map(str::to_owned);
        let village = match (from_answers, &v.household_id) {
            (Some(code), _) => code,
            (None, Some(h)) => {
                households::village_of(conn, Entity::Household, h)?.unwrap_or_default()
            }
            (None, None) => String::new(),
        };
        let attachments = store::attachments::of_visit(conn, &v.id)?
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
            .collect();
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
            attachments,
        })
    }

    /// A visit as it travels to the server (for tools that measure or inspect the wire).
    pub fn visit_submission(&self, visit_id: &str) -> Result<VisitRecord> {
        let visit = self.load_visit(visit_id)?;
        self.read(|c| self.visit_record(c, &visit))
    }

    /// The oldest waiting changes, at most `limit`.
    pub(crate) fn outbox_batch(
        &self,
        limit: usize,
    ) -> Result<Vec<zoufang_protocol::messages::Change>> {
        self.read(|c| outbox::batch(c, limit))
    }

    pub(crate) fn outbox_len(&self) -> Result<u64> {
        self.read(outbox::len)
    }

    /// Applies the server's acknowledgements: each named entry leaves the outbox, in the same
    /// transaction as its effect. Returns (applied or unchanged, conflicts, rejected).
    pub(crate) fn apply_acks(&self, acks: &[Ack]) -> Result<(u64, u64, u64)> {
        let at = timestamp(self.now());
        self.write(|tx| {
            let mut counts = (0, 0, 0);
            for ack in acks {
                match apply_ack(tx, ack, &at)? {
                    None => {}
                    Some(Outcome::Rejected) => counts.2 += 1,
                    Some(Outcome::Conflict) => counts.1 += 1,
                    Some(_) => counts.0 += 1,
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
                    FeedItem::Field {
                        entity,
                        id,
                        field,
                        value,
                        version,
                    } => set_server_field(tx, *entity, id, field, value, *version, &at)?,
                    FeedItem::Conflict { conflict } => apply_conflict(tx, conflict, &at)?,
                    FeedItem::Visit { visit } => apply_visit(tx, visit, entry.seq)?,
                    FeedItem::VisitStatus {
                        id,
                        status,
                        reason,
                        at: when,
                    } => store::visits::set_status_from_server(
                        tx,
                        id,
                        status,
                        reason.as_deref(),
                        when,
                    )?,
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
        self.read(server_view::checksums)
    }

    /// Replaces the server view of one village with the server's snapshot and recomputes its
    /// checksum. Local edits still waiting in the outbox stay on top.
    pub(crate) fn apply_snapshot(&self, village: &str, snapshot: &SnapshotResponse) -> Result<()> {
        let at = timestamp(self.now());
        self.write(|tx| apply_snapshot_in(tx, village, snapshot, &at))
    }

    // ----- the public face ----------------------------------------------------------------

    pub fn sync_status(&self) -> Result<SyncStatus> {
        let settings = self.sync_settings()?;
        let (pending_attachments, pending_attachment_bytes) = self.pending_upload_totals()?;
        let (pending_changes, open_conflicts, rejected_changes) = self.read(|c| {
            Ok((
                outbox::len(c)?,
                server_view::open_conflict_count(c)?,
                outbox::rejected_count(c)?,
            ))
        })?;
        Ok(SyncStatus {
            enrolled: settings.device_token.is_some(),
            user: settings.user,
            device_id: settings.device_id,
            pending_changes,
            open_conflicts,
            rejected_changes,
            last_sync_at: settings.last_sync_at,
            clock_offset_ms: settings.clock_offset_ms,
            pending_attachments,
            pending_attachment_bytes,
        })
    }

    /// Open conflicts on this device: every competing value with who and when, and the
    /// provisional value the record shows meanwhile.
    pub fn conflicts(&self) -> Result<Vec<ConflictInfo>> {
        self.read(server_view::open_conflicts)
    }

    /// Resolves a conflict with one of its values or a new one. It syncs like any edit; the
    /// conflict closes when the server confirms.
    pub fn resolve_conflict(&self, conflict_id: &str, value: Json) -> Result<()> {
        self.require_user()?;
        let info = self
            .read(|c| server_view::open_conflict(c, conflict_id))?
            .ok_or_else(|| Error::NotFound {
                entity: "open conflict",
                id: conflict_id.chars().take(64).collect(),
            })?;
        let value = self.checked_record_value(info.entity, &info.field, value)?;
        let at = timestamp(self.now());
        self.write(|tx| {
            households::store_field(tx, info.entity, &info.entity_id, &info.field, &value, &at)?;
            let action = Action {
                entity: info.entity.as_str(),
                entity_id: &info.entity_id,
                op: "resolve_conflict",
                field: Some(&info.field),
            };
            self.audit_action(tx, action)?;
            let resolves = Some((info.id.as_str(), info.version));
            self.enqueue_field_edit(
                tx,
                &at,
                info.entity,
                &info.entity_id,
                &info.field,
                &value,
                resolves,
            )
        })
    }

    /// Changes the server refused, newest first.
    pub fn rejected_changes(&self) -> Result<Vec<RejectedChange>> {
        self.read(outbox::rejected)
    }

    /// Whether a visit's submission has been acknowledged by the server.
    pub fn visit_synced(&self, visit_id: &str) -> Result<bool> {
        let v = self.load_visit(visit_id)?;
        if v.status == VisitStatus::Draft {
            return Ok(false);
        }
        self.read(|c| store::visits::is_synced(c, visit_id))
    }
}
