//! [`Collector`]: the one handle the CLI, the bindings and the tests use. Every user action is
//! one SQLite transaction covering the data and its change-log entry.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use parking_lot::{Mutex, RwLock};
use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};
use serde_json::{Map, Value as Json, json};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::records::{
    Attachment, AttachmentKind, Household, HouseholdSummary, Member, NewAttachment, NewHousehold,
    StoreCounts, Visit, VisitStatus, VisitSummary,
};
use crate::store::{self, Connections, StoreOptions};
use zoufang_model::code_list::{CodeList, CodeLists};
use zoufang_model::default_form::{HOUSEHOLD_VISIT_FORM_JSON, default_code_lists};
use zoufang_model::engine::{self, Evaluation, Problem};
use zoufang_model::form::{FieldKind, Form, ItemRef};
use zoufang_protocol::audit::{self, AuditAction, AuditEntry, HashAlgorithm};
use zoufang_protocol::messages::Entity;

/// The form a visit uses unless told otherwise.
pub const HOUSEHOLD_VISIT_FORM_ID: &str = "household_visit";
/// Relationship code of the household head (GB/T 4761-2008).
pub const HEAD_RELATIONSHIP: &str = "02";
/// The visit type that finds a household unknown to the system.
pub const NEW_DISCOVERY: &str = "new_discovery";
/// Most rows a list or search returns at once.
pub const MAX_PAGE: u32 = 500;

type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The offline store of one signed-in user, with its forms and code lists.
pub struct Collector {
    pub(crate) db: Connections,
    forms: Mutex<HashMap<(String, u32), Arc<Form>>>,
    code_lists: RwLock<Arc<CodeLists>>,
    user: RwLock<Option<String>>,
    pub(crate) clock: Clock,
    /// Orders this device's changes; see `sync::hlc`.
    pub(crate) hlc: Mutex<crate::sync::hlc::Hlc>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector").finish_non_exhaustive()
    }
}

pub(crate) fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) fn new_id() -> String {
    Uuid::now_v7().to_string()
}

pub(crate) fn not_found(entity: &'static str, id: &str) -> Error {
    // Ids are UUIDs we issued; cap the length so a hostile argument cannot flood a log line.
    Error::NotFound {
        entity,
        id: id.chars().take(64).collect(),
    }
}

/// A change-log entry, written in the caller's transaction.
struct Change<'a> {
    entity: &'static str,
    entity_id: &'a str,
    op: &'static str,
    field: Option<&'a str>,
    value: Option<&'a Json>,
}

/// Which form fields a completed visit writes into the household and member records.
pub(crate) struct RecordBindings {
    /// household record field → form field id
    household: Vec<(String, usize)>,
    /// member record field → form field id (inside the members repeat)
    member: Vec<(String, usize)>,
    members_repeat: Option<usize>,
}

fn record_bindings(form: &Form) -> RecordBindings {
    let mut b = RecordBindings {
        household: Vec::new(),
        member: Vec::new(),
        members_repeat: None,
    };
    for (id, _) in form.fields.iter().enumerate() {
        let Some(record) = form.field_def(id).and_then(|d| d.record.clone()) else {
            continue;
        };
        if let Some(name) = record.strip_prefix("household.") {
            b.household.push((name.to_owned(), id));
        } else if let Some(name) = record.strip_prefix("member.") {
            b.member.push((name.to_owned(), id));
        }
    }
    if let Some(ItemRef::Repeat(r)) = form.lookup("members") {
        b.members_repeat = Some(r);
    }
    b
}

impl Collector {
    /// Opens (creating and migrating if needed) the store at `path`, and installs the shipped
    /// form and code lists on first use.
    pub fn open(path: &Path, options: &StoreOptions) -> Result<Self> {
        Self::open_with_clock(path, options, Arc::new(Utc::now))
    }

    /// As [`Collector::open`], with a clock (tests and simulations move time).
    pub fn open_with_clock(path: &Path, options: &StoreOptions, clock: Clock) -> Result<Self> {
        let db = store::open(path, options)?;
        let collector = Self {
            db,
            forms: Mutex::new(HashMap::new()),
            code_lists: RwLock::new(Arc::new(CodeLists::default())),
            user: RwLock::new(None),
            clock,
            hlc: Mutex::new(crate::sync::hlc::Hlc::default()),
        };
        collector.restore_hlc()?;
        collector.install_defaults()?;
        collector.reload_code_lists()?;
        let user: Option<String> = collector
            .db
            .reader
            .lock()
            .query_row(
                "SELECT value FROM meta WHERE key = 'current_user'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        *collector.user.write() = user;
        Ok(collector)
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    fn install_defaults(&self) -> Result<()> {
        let installed: i64 = self.db.reader.lock().query_row(
            "SELECT count(*) FROM form_definitions WHERE form_id = ?1",
            [HOUSEHOLD_VISIT_FORM_ID],
            |r| r.get(0),
        )?;
        if installed == 0 {
            self.install_form(HOUSEHOLD_VISIT_FORM_JSON)?;
            let lists = default_code_lists()?;
            for list in lists.iter() {
                self.install_code_list(list)?;
            }
        }
        Ok(())
    }

    pub(crate) fn reload_code_lists(&self) -> Result<()> {
        let conn = self.db.reader.lock();
        let mut stmt = conn.prepare(
            "SELECT c.name, c.version, c.entries FROM code_lists c
             WHERE c.version = (SELECT max(version) FROM code_lists d WHERE d.name = c.name)",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut lists = CodeLists::default();
        for row in rows {
            let (name, version, entries) = row?;
            lists.insert(CodeList {
                name,
                version,
                entries: serde_json::from_str(&entries)?,
            });
        }
        *self.code_lists.write() = Arc::new(lists);
        Ok(())
    }

    pub(crate) fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.db.writer.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Appends an entry to the audit trail, inside the action's own transaction.
    pub(crate) fn audit(
        &self,
        tx: &Transaction<'_>,
        action: AuditAction,
        entity: Option<(&str, &str)>,
        detail: Json,
    ) -> Result<()> {
        let alg = self.chain_hash(tx)?;
        let last: Option<(i64, String)> = tx
            .prepare_cached("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let user = self.current_user().unwrap_or_else(|| "system".to_owned());
        let entry = audit::next_entry(
            alg,
            last.as_ref()
                .map(|(s, h)| (u64::try_from(*s).unwrap_or(0), h.as_str())),
            timestamp(self.now()),
            user,
            action,
            entity,
            detail,
        );
        tx.prepare_cached(
            "INSERT INTO audit_log (seq, at, user_id, action, entity, entity_id, detail, prev_hash, hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            i64::try_from(entry.seq).unwrap_or(i64::MAX),
            entry.at,
            entry.user_id,
            entry.action,
            entry.entity,
            entry.entity_id,
            entry.detail.to_string(),
            entry.prev_hash,
            entry.hash
        ])?;
        Ok(())
    }

    /// As [`Self::audit`], in a transaction of its own (views, syncs).
    pub(crate) fn audit_now(
        &self,
        action: AuditAction,
        entity: Option<(&str, &str)>,
        detail: Json,
    ) -> Result<()> {
        self.write(|tx| self.audit(tx, action, entity, detail))
    }

    /// The chain's hash, fixed when the first entry is written: SM3 in an SM4 store.
    fn chain_hash(&self, tx: &Transaction<'_>) -> Result<HashAlgorithm> {
        if let Some(alg) = stored_chain_hash(tx)? {
            return Ok(alg);
        }
        let alg = self.hash_algorithm();
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('audit_hash', ?1)",
            [alg.as_str()],
        )?;
        Ok(alg)
    }

    /// The store's hash, fixed by its cipher suite: SM3 in an SM4 store, SHA-256 otherwise. It
    /// names attachment contents and starts the audit chain.
    pub fn hash_algorithm(&self) -> HashAlgorithm {
        if self.db.national_crypto() {
            HashAlgorithm::Sm3
        } else {
            HashAlgorithm::Sha256
        }
    }

    /// The audit chain's hash of this store.
    pub(crate) fn audit_chain_hash(&self) -> Result<HashAlgorithm> {
        Ok(stored_chain_hash(&self.db.reader.lock())?.unwrap_or_else(|| self.hash_algorithm()))
    }

    /// The device's audit entries not yet acknowledged by the server, oldest first.
    pub fn pending_audit(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        let conn = self.db.reader.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT seq, at, user_id, action, entity, entity_id, detail, prev_hash, hash
             FROM audit_log WHERE uploaded = 0 ORDER BY seq LIMIT ?1",
        )?;
        let rows = stmt.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], audit_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// How many audit entries wait for the server.
    pub fn pending_audit_count(&self) -> Result<u64> {
        let n: i64 = self.db.reader.lock().query_row(
            "SELECT count(*) FROM audit_log WHERE uploaded = 0",
            [],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The whole audit trail of this device, oldest first, and whether its chain is intact.
    pub fn audit_trail(&self) -> Result<(Vec<AuditEntry>, bool)> {
        let all = {
            let conn = self.db.reader.lock();
            let mut stmt = conn.prepare_cached(
                "SELECT seq, at, user_id, action, entity, entity_id, detail, prev_hash, hash FROM audit_log ORDER BY seq",
            )?;
            let rows = stmt.query_map([], audit_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        let alg = self.audit_chain_hash()?;
        let intact = audit::verify(alg, 0, audit::GENESIS, &all).is_ok();
        Ok((all, intact))
    }

    /// Marks entries up to `seq` as received by the server.
    pub(crate) fn audit_uploaded_through(&self, seq: u64) -> Result<()> {
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        self.write(|tx| {
            tx.execute(
                "UPDATE audit_log SET uploaded = 1 WHERE seq <= ?1 AND uploaded = 0",
                [seq],
            )?;
            Ok(())
        })
    }

    fn log(&self, tx: &Transaction<'_>, at: &str, change: Change<'_>) -> Result<()> {
        let author = self
            .user
            .read()
            .clone()
            .unwrap_or_else(|| "system".to_owned());
        tx.prepare_cached(
            "INSERT INTO change_log (entity, entity_id, op, field, value, author, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            change.entity,
            change.entity_id,
            change.op,
            change.field,
            change.value.map(Json::to_string),
            author,
            at
        ])?;
        // The audit trail follows every user change of a record, naming the field, never the
        // value. Draft answers are not records yet: their completion is what is audited.
        let action = match (change.entity, change.op) {
            (_, "set_answer" | "set_answers" | "remove_instance") | ("form" | "code_list", _) => {
                None
            }
            (_, "create" | "revise") => Some(AuditAction::Create),
            (_, "complete") => Some(AuditAction::Complete),
            (_, "sign") => Some(AuditAction::Sign),
            (_, "void") => Some(AuditAction::Void),
            _ => Some(AuditAction::Edit),
        };
        if let Some(action) = action {
            let detail = match change.field {
                Some(field) => json!({"op": change.op, "field": field}),
                None => json!({"op": change.op}),
            };
            self.audit(tx, action, Some((change.entity, change.entity_id)), detail)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn log_change(
        &self,
        tx: &Transaction<'_>,
        at: &str,
        entity: &'static str,
        entity_id: &str,
        op: &'static str,
        field: Option<&str>,
        value: Option<&Json>,
    ) -> Result<()> {
        self.log(
            tx,
            at,
            Change {
                entity,
                entity_id,
                op,
                field,
                value,
            },
        )
    }

    /// Checks a value for a household or member field and returns its canonical spelling.
    pub(crate) fn checked_record_value(
        &self,
        entity: Entity,
        field: &str,
        value: Json,
    ) -> Result<Json> {
        let (form, b) = self.household_form()?;
        let bindings = match entity {
            Entity::Household => &b.household,
            Entity::Member => &b.member,
        };
        self.check_record_value(&form, bindings, field, value)
    }

    // ----- user ---------------------------------------------------------------------------

    /// Re-encrypts the whole store with `new_key` (same cipher suite). Atomic: if the process
    /// dies during the rotation, the old key still opens the store until the commit, the new one
    /// after it; the app keeps both until this returns.
    pub fn rotate_key(&self, new_key: &str) -> Result<()> {
        self.db.rotate_key(new_key)?;
        tracing::info!("store key rotated");
        self.audit_now(AuditAction::KeyRotation, None, json!({}))
    }

    /// Records who is using this store; every later change is attributed to them. A store
    /// belongs to the first user who signs in: each user of a shared phone has their own store
    /// and key, and another user is refused (`wrong_user`).
    pub fn sign_in(&self, user_id: &str) -> Result<()> {
        let user = user_id.trim();
        if user.is_empty() || user.len() > 128 || user.chars().any(char::is_control) {
            return Err(Error::InvalidInput(
                "a user id is 1 to 128 printable characters".into(),
            ));
        }
        self.write(|tx| {
            let owner: Option<String> = tx
                .query_row("SELECT value FROM meta WHERE key = 'owner_user'", [], |r| {
                    r.get(0)
                })
                .optional()?;
            match owner {
                Some(owner) if owner != user => return Err(Error::WrongUser),
                Some(_) => {}
                None => {
                    tx.execute(
                        "INSERT INTO meta (key, value) VALUES ('owner_user', ?1)",
                        [user],
                    )?;
                }
            }
            tx.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('current_user', ?1)",
                [user],
            )?;
            *self.user.write() = Some(user.to_owned());
            self.audit(tx, AuditAction::SignIn, None, json!({}))
        })
    }

    pub fn current_user(&self) -> Option<String> {
        self.user.read().clone()
    }

    pub(crate) fn require_user(&self) -> Result<String> {
        self.current_user().ok_or(Error::NotSignedIn)
    }

    // ----- forms and code lists -------------------------------------------------------------

    /// Checks and installs a form definition. Installing the same version again with the same
    /// content is a no-op; with different content it is refused.
    pub fn install_form(&self, json: &str) -> Result<Arc<Form>> {
        let form = Form::from_json(json)?;
        let canonical = serde_json::to_string(&form.definition)?;
        let (id, version) = (form.id().to_owned(), form.version());
        let now = timestamp(self.now());
        self.write(|tx| {
            let existing: Option<String> = tx
                .query_row(
                    "SELECT definition FROM form_definitions WHERE form_id = ?1 AND version = ?2",
                    params![id, version],
                    |r| r.get(0),
                )
                .optional()?;
            match existing {
                Some(e) if e == canonical => Ok(()),
                Some(_) => Err(Error::FormVersionConflict { form_id: id.clone(), version }),
                None => {
                    tx.execute(
                        "INSERT INTO form_definitions (form_id, version, definition, installed_at) VALUES (?1, ?2, ?3, ?4)",
                        params![id, version, canonical, now],
                    )?;
                    self.log(tx, &now, Change { entity: "form", entity_id: &id, op: "install", field: None, value: Some(&Json::from(version)) })
                }
            }
        })?;
        tracing::info!(form = %id, version, "form installed");
        let form = Arc::new(form);
        self.forms.lock().insert((id, version), form.clone());
        Ok(form)
    }

    /// A form version, loaded once and cached.
    pub fn form(&self, form_id: &str, version: u32) -> Result<Arc<Form>> {
        if let Some(f) = self.forms.lock().get(&(form_id.to_owned(), version)) {
            return Ok(f.clone());
        }
        let json: Option<String> = self
            .db
            .reader
            .lock()
            .query_row(
                "SELECT definition FROM form_definitions WHERE form_id = ?1 AND version = ?2",
                params![form_id, version],
                |r| r.get(0),
            )
            .optional()?;
        let json = json.ok_or_else(|| Error::FormNotFound {
            form_id: form_id.chars().take(64).collect(),
            version,
        })?;
        let form = Arc::new(Form::from_json(&json)?);
        self.forms
            .lock()
            .insert((form_id.to_owned(), version), form.clone());
        Ok(form)
    }

    /// The newest installed version of a form.
    pub fn latest_form(&self, form_id: &str) -> Result<Arc<Form>> {
        let version: Option<u32> = self.db.reader.lock().query_row(
            "SELECT max(version) FROM form_definitions WHERE form_id = ?1",
            [form_id],
            |r| r.get(0),
        )?;
        let version = version.ok_or_else(|| Error::FormNotFound {
            form_id: form_id.chars().take(64).collect(),
            version: 0,
        })?;
        self.form(form_id, version)
    }

    /// Installed forms as (id, version), newest first per form.
    pub fn installed_forms(&self) -> Result<Vec<(String, u32)>> {
        let conn = self.db.reader.lock();
        let mut stmt = conn.prepare(
            "SELECT form_id, version FROM form_definitions ORDER BY form_id, version DESC",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn install_code_list(&self, list: &CodeList) -> Result<()> {
        if list.name.is_empty() || list.name.len() > 64 {
            return Err(Error::InvalidInput(
                "a code list needs a name of 1 to 64 characters".into(),
            ));
        }
        let entries = serde_json::to_string(&list.entries)?;
        let now = timestamp(self.now());
        self.write(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO code_lists (name, version, entries, installed_at) VALUES (?1, ?2, ?3, ?4)",
                params![list.name, list.version, entries, now],
            )?;
            self.log(tx, &now, Change { entity: "code_list", entity_id: &list.name, op: "install", field: None, value: Some(&Json::from(list.version)) })
        })?;
        self.reload_code_lists()
    }

    pub fn code_lists(&self) -> Arc<CodeLists> {
        self.code_lists.read().clone()
    }

    // ----- households -----------------------------------------------------------------------

    /// Checks one household or member field against the kind of the form field bound to it,
    /// and returns its canonical spelling.
    fn check_record_value(
        &self,
        form: &Form,
        bindings: &[(String, usize)],
        field: &str,
        value: Json,
    ) -> Result<Json> {
        let Some((_, id)) = bindings.iter().find(|(name, _)| name == field) else {
            return Err(Error::InvalidInput(format!(
                "'{}' is not a field of this record",
                field.chars().take(64).collect::<String>()
            )));
        };
        if value.is_null() {
            return Ok(value);
        }
        let info = form
            .fields
            .get(*id)
            .ok_or_else(|| Error::InvalidInput("unknown field".into()))?;
        let canonical =
            engine::canonical_answer(info.kind, value).map_err(|_| Error::InvalidValue {
                field: field.to_owned(),
                code: "type_mismatch",
            })?;
        let lists = self.code_lists();
        let empty = Map::new();
        let ev = Evaluation::new(form, &empty, &lists, self.now());
        if let Some(code) = ev.check_value(*id, &canonical) {
            return Err(Error::InvalidValue {
                field: field.to_owned(),
                code,
            });
        }
        Ok(canonical)
    }

    pub(crate) fn household_form(&self) -> Result<(Arc<Form>, RecordBindings)> {
        let form = self.latest_form(HOUSEHOLD_VISIT_FORM_ID)?;
        let bindings = record_bindings(&form);
        Ok((form, bindings))
    }

    fn insert_household(
        &self,
        tx: &Transaction<'_>,
        form: &Form,
        b: &RecordBindings,
        new: NewHousehold,
        at: &str,
    ) -> Result<String> {
        let id = new_id();
        let mut fields = Map::new();
        let village = self.check_record_value(
            form,
            &b.household,
            "village_code",
            Json::String(new.village_code),
        )?;
        fields.insert("village_code".into(), village.clone());
        for (k, v) in new.fields {
            if k != "village_code" {
                let v = self.check_record_value(form, &b.household, &k, v)?;
                fields.insert(k, v);
            }
        }
        let due = fields
            .get("next_visit_due")
            .and_then(Json::as_str)
            .map(str::to_owned);
        tx.prepare_cached(
            "INSERT INTO households (id, village_code, next_visit_due, fields, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        )?
        .execute(params![id, village.as_str(), due, Json::Object(fields.clone()).to_string(), at])?;
        self.log(
            tx,
            at,
            Change {
                entity: "household",
                entity_id: &id,
                op: "create",
                field: None,
                value: Some(&Json::Object(fields.clone())),
            },
        )?;
        let key = Some((Entity::Household, id.as_str(), None));
        let village_code = village.as_str().unwrap_or_default().to_owned();
        self.enqueue(
            tx,
            at,
            key,
            zoufang_protocol::messages::ChangeOp::CreateHousehold {
                id: id.clone(),
                village_code,
                fields,
            },
        )?;
        for m in new.members {
            self.insert_member(tx, form, b, &id, m, at)?;
        }
        refresh_head(tx, &id)?;
        Ok(id)
    }

    fn insert_member(
        &self,
        tx: &Transaction<'_>,
        form: &Form,
        b: &RecordBindings,
        household_id: &str,
        fields: Map<String, Json>,
        at: &str,
    ) -> Result<String> {
        let id = new_id();
        let mut clean = Map::new();
        for (k, v) in fields {
            if k == "id" {
                continue;
            }
            let v = self.check_record_value(form, &b.member, &k, v)?;
            clean.insert(k, v);
        }
        let text = |k: &str| clean.get(k).and_then(Json::as_str).map(str::to_owned);
        tx.prepare_cached(
            "INSERT INTO members (id, household_id, name, id_number, relationship, fields, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
        )?
        .execute(params![id, household_id, text("name"), text("id_number"), text("relationship"), Json::Object(clean.clone()).to_string(), at])?;
        self.log(
            tx,
            at,
            Change {
                entity: "member",
                entity_id: &id,
                op: "create",
                field: Some(household_id),
                value: Some(&Json::Object(clean.clone())),
            },
        )?;
        let op = zoufang_protocol::messages::ChangeOp::CreateMember {
            id: id.clone(),
            household_id: household_id.to_owned(),
            fields: clean,
        };
        self.enqueue(tx, at, Some((Entity::Member, id.as_str(), None)), op)?;
        refresh_head(tx, household_id)?;
        Ok(id)
    }

    /// Creates a household with its members (one action, one transaction).
    pub fn add_household(&self, new: NewHousehold) -> Result<String> {
        self.require_user()?;
        let (form, b) = self.household_form()?;
        let at = timestamp(self.now());
        self.write(|tx| self.insert_household(tx, &form, &b, new, &at))
    }

    /// Creates many households in one transaction (first download, imports, benchmarks).
    pub fn import_households(&self, households: Vec<NewHousehold>) -> Result<Vec<String>> {
        self.require_user()?;
        let (form, b) = self.household_form()?;
        let at = timestamp(self.now());
        self.write(|tx| {
            households
                .into_iter()
                .map(|h| self.insert_household(tx, &form, &b, h, &at))
                .collect()
        })
    }

    /// Sets one household field (`phone`, `address`, `next_visit_due`...), or clears it with null.
    pub fn edit_household_field(&self, household_id: &str, field: &str, value: Json) -> Result<()> {
        self.require_user()?;
        let (form, b) = self.household_form()?;
        let value = self.check_record_value(&form, &b.household, field, value)?;
        if field == "village_code" && value.is_null() {
            return Err(Error::InvalidValue {
                field: field.to_owned(),
                code: "required",
            });
        }
        let at = timestamp(self.now());
        self.write(|tx| {
            set_record_field(
                self,
                tx,
                Entity::Household,
                household_id,
                field,
                &value,
                &at,
            )
        })
    }

    /// Sets one member field, or clears it with null.
    pub fn edit_member_field(&self, member_id: &str, field: &str, value: Json) -> Result<()> {
        self.require_user()?;
        let (form, b) = self.household_form()?;
        let value = self.check_record_value(&form, &b.member, field, value)?;
        let at = timestamp(self.now());
        self.write(|tx| set_record_field(self, tx, Entity::Member, member_id, field, &value, &at))
    }

    pub fn add_member(&self, household_id: &str, fields: Map<String, Json>) -> Result<String> {
        self.require_user()?;
        let (form, b) = self.household_form()?;
        let at = timestamp(self.now());
        self.write(|tx| {
            household_exists(tx, household_id)?;
            let id = self.insert_member(tx, &form, &b, household_id, fields, &at)?;
            refresh_head(tx, household_id)?;
            Ok(id)
        })
    }

    /// A household with its members, for display: the view is recorded in the audit trail.
    pub fn household(&self, id: &str) -> Result<Household> {
        let household = self.load_household(id)?;
        self.audit_now(AuditAction::View, Some(("household", id)), json!({}))?;
        Ok(household)
    }

    pub(crate) fn load_household(&self, id: &str) -> Result<Household> {
        let conn = self.db.reader.lock();
        let row = conn
            .query_row(
                "SELECT id, village_code, head_name, next_visit_due, fields, created_at, updated_at FROM households WHERE id = ?1",
                [id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, String>(6)?,
                    ))
                },
            )
            .optional()?
            .ok_or_else(|| not_found("household", id))?;
        let mut stmt = conn.prepare_cached(
            "SELECT id, fields FROM members WHERE household_id = ?1 AND removed = 0 ORDER BY relationship, created_at",
        )?;
        let members = stmt
            .query_map([id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?
            .map(|m| {
                let (mid, fields) = m?;
                Ok(Member {
                    id: mid,
                    household_id: id.to_owned(),
                    fields: parse_object(&fields)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Household {
            id: row.0,
            village_code: row.1,
            head_name: row.2,
            next_visit_due: row.3,
            fields: parse_object(&row.4)?,
            members,
            created_at: row.5,
            updated_at: row.6,
        })
    }

    /// Households of a village, by head's name.
    pub fn households_in_village(
        &self,
        village_code: &str,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<HouseholdSummary>> {
        self.summaries(
            "SELECT id, village_code, head_name, next_visit_due FROM households WHERE village_code = ?1
             ORDER BY head_name, id LIMIT ?2 OFFSET ?3",
            params![village_code, limit.min(MAX_PAGE), offset],
        )
    }

    /// Households whose next visit is due on or before `date` (YYYY-MM-DD), soonest first;
    /// optionally within one village.
    pub fn households_due(
        &self,
        on_or_before: &str,
        village_code: Option<&str>,
        limit: u32,
    ) -> Result<Vec<HouseholdSummary>> {
        self.summaries(
            "SELECT id, village_code, head_name, next_visit_due FROM households
             WHERE next_visit_due IS NOT NULL AND next_visit_due <= ?1 AND (?2 IS NULL OR village_code = ?2)
             ORDER BY next_visit_due, id LIMIT ?3",
            params![on_or_before, village_code, limit.min(MAX_PAGE)],
        )
    }

    /// Households with a member whose name starts with `query`, or whose resident ID starts
    /// with it when the query looks like an ID.
    pub fn search_households(&self, query: &str, limit: u32) -> Result<Vec<HouseholdSummary>> {
        let q = query.trim();
        if q.is_empty() {
            return Ok(Vec::new());
        }
        let looks_like_id = q
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, 'x' | 'X' | '０'..='９'));
        let (column, prefix) = if looks_like_id {
            ("id_number", zoufang_model::domain::normalize_resident_id(q))
        } else {
            ("name", zoufang_model::domain::normalize_person_name(q))
        };
        // A range scan on the index: every string with this prefix sorts in [prefix, prefix+U+10FFFF).
        let upper = format!("{prefix}\u{10FFFF}");
        let sql = format!(
            "SELECT h.id, h.village_code, h.head_name, h.next_visit_due FROM households h
             WHERE h.id IN (SELECT household_id FROM members WHERE {column} >= ?1 AND {column} < ?2 AND removed = 0 LIMIT ?3)
             ORDER BY h.head_name, h.id"
        );
        self.summaries(&sql, params![prefix, upper, limit.min(MAX_PAGE)])
    }

    fn summaries(&self, sql: &str, params: impl rusqlite::Params) -> Result<Vec<HouseholdSummary>> {
        let conn = self.db.reader.lock();
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params, |r| {
            Ok(HouseholdSummary {
                id: r.get(0)?,
                village_code: r.get(1)?,
                head_name: r.get(2)?,
                next_visit_due: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // ----- visits ---------------------------------------------------------------------------

    /// Starts a draft visit of `visit_type` for a household (or, with `None`, for a household
    /// being discovered), prefilled with what the store knows of the household.
    pub fn start_visit(&self, household_id: Option<&str>, visit_type: &str) -> Result<Visit> {
        let author = self.require_user()?;
        let form = self.latest_form(HOUSEHOLD_VISIT_FORM_ID)?;
        let known_type = form
            .choice_list("visit_type")
            .is_some_and(|l| l.iter().any(|c| c.value == visit_type));
        if !known_type {
            return Err(Error::InvalidValue {
                field: "visit_type".into(),
                code: "choice_unknown",
            });
        }
        let household = household_id.map(|h| self.load_household(h)).transpose()?;
        let now = self.now();
        let mut answers = Map::new();
        let put = |answers: &mut Map<String, Json>,
                   name: &str,
                   indices: &[usize],
                   value: Json|
         -> Result<()> {
            let Some(ItemRef::Field(f)) = form.lookup(name) else {
                return Ok(());
            };
            let Some(info) = form.fields.get(f) else {
                return Ok(());
            };
            // A stored value that no longer fits the form (an older form's choice) is left out.
            let _ = engine::put_answer(&form, answers, info, indices, name, value);
            Ok(())
        };
        put(&mut answers, "visit_type", &[], Json::from(visit_type))?;
        put(&mut answers, "started_at", &[], Json::from(timestamp(now)))?;
        if visit_type == NEW_DISCOVERY {
            put(
                &mut answers,
                "trigger_source",
                &[],
                Json::from("discovered"),
            )?;
        }
        if let Some(h) = &household {
            let b = record_bindings(&form);
            for (record, field) in &b.household {
                if let (Some(v), Some(info)) = (h.fields.get(record), form.fields.get(*field)) {
                    put(&mut answers, &info.name, &[], v.clone())?;
                }
            }
            for (i, m) in h.members.iter().enumerate() {
                for (record, field) in &b.member {
                    let Some(info) = form.fields.get(*field) else {
                        continue;
                    };
                    let v = if record == "id" {
                        Some(Json::from(m.id.clone()))
                    } else {
                        m.fields.get(record).cloned()
                    };
                    if let Some(v) = v {
                        let _ = engine::put_answer(&form, &mut answers, info, &[i], &info.name, v);
                    }
                }
            }
        }
        let visit = Visit {
            id: new_id(),
            household_id: household.map(|h| h.id),
            form_id: form.id().to_owned(),
            form_version: form.version(),
            visit_type: visit_type.to_owned(),
            status: VisitStatus::Draft,
            answers,
            author,
            revision_of: None,
            void_reason: None,
            created_at: timestamp(now),
            updated_at: timestamp(now),
            completed_at: None,
            signed_at: None,
        };
        self.store_new_visit(&visit, "create", Some(&visit.visit_type))?;
        Ok(visit)
    }

    fn store_new_visit(&self, visit: &Visit, op: &'static str, field: Option<&str>) -> Result<()> {
        self.write(|tx| {
            insert_visit(tx, visit)?;
            let change = Change {
                entity: "visit",
                entity_id: &visit.id,
                op,
                field,
                value: None,
            };
            self.log(tx, &visit.created_at, change)
        })
    }

    /// Starts a correction of a completed or signed visit: a new draft that names the visit it
    /// replaces, with its answers.
    pub fn revise_visit(&self, visit_id: &str) -> Result<Visit> {
        let author = self.require_user()?;
        let old = self.load_visit(visit_id)?;
        if !matches!(old.status, VisitStatus::Completed | VisitStatus::Signed) {
            return Err(Error::VisitWrongStatus {
                id: old.id,
                status: old.status.as_str(),
                action: "revised",
            });
        }
        let now = timestamp(self.now());
        let visit = Visit {
            id: new_id(),
            status: VisitStatus::Draft,
            author,
            revision_of: Some(old.id.clone()),
            created_at: now.clone(),
            updated_at: now,
            completed_at: None,
            signed_at: None,
            void_reason: None,
            ..old
        };
        self.store_new_visit(&visit, "revise", visit.revision_of.as_deref())?;
        Ok(visit)
    }

    /// Autosaves one answer of a draft (`members[2].id_number`); `null` clears it. One
    /// transaction: a crash loses at most this answer.
    pub fn set_answer(&self, visit_id: &str, path: &str, value: Json) -> Result<()> {
        self.require_user()?;
        let logged = value.clone();
        self.edit_draft(
            visit_id,
            |_, form, answers| Ok(engine::set_answer(form, answers, path, value)?),
            "set_answer",
            Some(path),
            Some(&logged),
        )
    }

    /// Sets many answers in one action: `answers` is shaped like a visit's answers (repeats as
    /// arrays of objects); it is merged into the draft.
    pub fn set_answers(&self, visit_id: &str, answers: &Map<String, Json>) -> Result<()> {
        self.require_user()?;
        let keys = Json::Array(answers.keys().map(|k| Json::from(k.clone())).collect());
        self.edit_draft(
            visit_id,
            |_, form, draft| {
                let mut paths = Vec::new();
                flatten_answers(form, answers, "", &mut paths);
                for (path, value) in paths {
                    engine::set_answer(form, draft, &path, value)?;
                }
                Ok(())
            },
            "set_answers",
            None,
            Some(&keys),
        )
    }

    /// Records a photo or signature for a draft's field (`house_exterior_photo`,
    /// `interviewee_signature`): its metadata row and the answer that references it, in one
    /// transaction. The file itself is stored by the attachments layer, content-addressed.
    pub fn add_attachment(&self, visit_id: &str, new: &NewAttachment) -> Result<Attachment> {
        self.insert_attachment(visit_id, new, None)
    }

    /// Adds a photo to a draft's photo field from the camera's file: made upright, at most
    /// `limits` in size, stripped of its metadata (capture time and position are kept in the
    /// attachment's metadata instead), stored content-addressed in the store, in one
    /// transaction with the answer. A photo already in the field is replaced.
    pub fn add_photo(
        &self,
        visit_id: &str,
        field_path: &str,
        image: &[u8],
        limits: &crate::media::PhotoLimits,
    ) -> Result<Attachment> {
        let prepared = crate::media::prepare_photo(image, limits).map_err(media_error)?;
        self.store_prepared(visit_id, field_path, AttachmentKind::Photo, prepared)
    }

    /// As [`Self::add_photo`], from the file the camera wrote (read once, bounded in size).
    pub fn add_photo_file(
        &self,
        visit_id: &str,
        field_path: &str,
        file: &Path,
        limits: &crate::media::PhotoLimits,
    ) -> Result<Attachment> {
        let too_large = std::fs::metadata(file)
            .map(|m| m.len() > crate::media::MAX_INPUT_BYTES as u64)
            .map_err(|_| Error::InvalidInput("the photo file cannot be read".into()))?;
        if too_large {
            return Err(media_error(crate::media::MediaError::TooLarge));
        }
        let image = std::fs::read(file)
            .map_err(|_| Error::InvalidInput("the photo file cannot be read".into()))?;
        self.add_photo(visit_id, field_path, &image, limits)
    }

    /// Adds a signature or thumbprint image (PNG, lossless) to a draft's signature field.
    pub fn add_signature(
        &self,
        visit_id: &str,
        field_path: &str,
        image: &[u8],
    ) -> Result<Attachment> {
        let prepared = crate::media::prepare_signature(image).map_err(media_error)?;
        self.store_prepared(visit_id, field_path, AttachmentKind::Signature, prepared)
    }

    fn store_prepared(
        &self,
        visit_id: &str,
        field_path: &str,
        kind: AttachmentKind,
        prepared: crate::media::PreparedImage,
    ) -> Result<Attachment> {
        let mut metadata = Map::new();
        metadata.insert("width".into(), Json::from(prepared.width));
        metadata.insert("height".into(), Json::from(prepared.height));
        if let Some(at) = &prepared.captured_at {
            metadata.insert("captured_at".into(), Json::from(at.clone()));
        }
        if let Some((lat, lon)) = prepared.location {
            metadata.insert("location".into(), json!({"lat": lat, "lon": lon}));
        }
        let new = NewAttachment {
            field_path: field_path.to_owned(),
            kind,
            content_hash: self.content_hash(&prepared.bytes),
            size_bytes: prepared.bytes.len() as u64,
            mime_type: prepared.mime_type.to_owned(),
            metadata,
        };
        self.insert_attachment(visit_id, &new, Some(&prepared.bytes))
    }

    /// The content address of attachment bytes: SHA-256, or SM3 in an SM4 store.
    pub fn content_hash(&self, bytes: &[u8]) -> String {
        self.hash_algorithm().digest(bytes)
    }

    /// The stored bytes of an attachment's content.
    pub fn attachment_content(&self, content_hash: &str) -> Result<Vec<u8>> {
        self.db
            .reader
            .lock()
            .query_row(
                "SELECT bytes FROM blobs WHERE hash = ?1",
                [content_hash],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| not_found("attachment content", content_hash))
    }

    /// Removes an attachment from a draft: its answer is cleared, and its content deleted once no
    /// attachment names it.
    pub fn remove_attachment(&self, visit_id: &str, attachment_id: &str) -> Result<()> {
        self.require_user()?;
        let logged = Json::from(attachment_id.to_owned());
        let mut field = None;
        self.edit_draft(
            visit_id,
            |tx, form, answers| {
                let row: Option<(String, Option<String>)> = tx
                    .query_row(
                        "SELECT field_path, content_hash FROM attachments WHERE id = ?1 AND visit_id = ?2",
                        params![attachment_id, visit_id],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                let (path, hash) = row.ok_or_else(|| not_found("attachment", attachment_id))?;
                engine::set_answer(form, answers, &path, Json::Null)?;
                tx.execute("DELETE FROM attachments WHERE id = ?1", [attachment_id])?;
                collect_blob(tx, hash.as_deref())?;
                field = Some(path);
                Ok(())
            },
            "remove_attachment",
            None,
            Some(&logged),
        )?;
        tracing::debug!(attachment = %attachment_id, field = ?field, "attachment removed from a draft");
        Ok(())
    }

    fn insert_attachment(
        &self,
        visit_id: &str,
        new: &NewAttachment,
        content: Option<&[u8]>,
    ) -> Result<Attachment> {
        self.require_user()?;
        let hash_ok =
            new.content_hash.len() == 64 && new.content_hash.bytes().all(|b| b.is_ascii_hexdigit());
        if !hash_ok {
            return Err(Error::InvalidValue {
                field: "content_hash".into(),
                code: "attachment_hash",
            });
        }
        // Far above the ~500 KB a recompressed photo takes; keeps the column in i64.
        let size = i64::try_from(new.size_bytes)
            .ok()
            .filter(|s| *s <= 50 * 1024 * 1024);
        let size = size.ok_or_else(|| Error::InvalidValue {
            field: "size_bytes".into(),
            code: "attachment_size",
        })?;
        if !matches!(
            new.mime_type.as_str(),
            "image/jpeg" | "image/png" | "image/webp"
        ) {
            return Err(Error::InvalidValue {
                field: "mime_type".into(),
                code: "attachment_type",
            });
        }
        let mut attachment = Attachment {
            id: new_id(),
            visit_id: visit_id.to_owned(),
            field_path: new.field_path.clone(),
            kind: new.kind,
            content_hash: new.content_hash.to_ascii_lowercase(),
            size_bytes: new.size_bytes,
            mime_type: new.mime_type.clone(),
            metadata: new.metadata.clone(),
            created_at: timestamp(self.now()),
        };
        let logged = Json::from(attachment.id.clone());
        self.edit_draft(
            visit_id,
            |tx, form, answers| {
                let target = engine::parse_path(form, &new.field_path)?;
                let kind = match target.item {
                    ItemRef::Field(f) => form.fields.get(f).map(|f| f.kind),
                    _ => None,
                };
                let expected = match new.kind {
                    AttachmentKind::Photo => FieldKind::Photo,
                    AttachmentKind::Signature => FieldKind::Signature,
                };
                if kind != Some(expected) {
                    return Err(Error::InvalidValue { field: "field_path".into(), code: "attachment_field" });
                }
                // A signature binds to the visit as it is now (signature fields aside).
                if new.kind == AttachmentKind::Signature {
                    let signed = self.visit_content_hash(tx, form, visit_id, answers)?;
                    attachment.metadata.insert(crate::signing::SIGNED_CONTENT.into(), Json::from(signed));
                }
                engine::set_answer(form, answers, &new.field_path, Json::from(attachment.id.clone()))?;
                // A new photo in the field replaces the one it held.
                let replaced: Vec<(String, Option<String>)> = tx
                    .prepare("SELECT id, content_hash FROM attachments WHERE visit_id = ?1 AND field_path = ?2")?
                    .query_map(params![visit_id, new.field_path], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                for (old, _) in &replaced {
                    tx.execute("DELETE FROM attachments WHERE id = ?1", [old])?;
                }
                if let Some(bytes) = content {
                    tx.execute(
                        "INSERT OR IGNORE INTO blobs (hash, size, bytes, created_at) VALUES (?1, ?2, ?3, ?4)",
                        params![attachment.content_hash, size, bytes, attachment.created_at],
                    )?;
                }
                tx.execute(
                    "INSERT INTO attachments (id, visit_id, field_path, kind, content_hash, size_bytes, mime_type, metadata, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![
                        attachment.id,
                        visit_id,
                        attachment.field_path,
                        attachment.kind.as_str(),
                        attachment.content_hash,
                        size,
                        attachment.mime_type,
                        Json::Object(attachment.metadata.clone()).to_string(),
                        attachment.created_at
                    ],
                )?;
                self.log(
                    tx,
                    &attachment.created_at,
                    Change { entity: "attachment", entity_id: &attachment.id, op: "create", field: Some(visit_id), value: None },
                )?;
                for (_, hash) in &replaced {
                    collect_blob(tx, hash.as_deref())?;
                }
                Ok(())
            },
            "set_answer",
            Some(&new.field_path),
            Some(&logged),
        )?;
        Ok(attachment)
    }

    /// The attachments recorded for a visit, oldest first.
    pub fn attachments_of_visit(&self, visit_id: &str) -> Result<Vec<Attachment>> {
        load_attachments(&self.db.reader.lock(), visit_id)
    }

    /// Removes one repeat instance of a draft (`members[3]`).
    pub fn remove_repeat_instance(&self, visit_id: &str, path: &str) -> Result<()> {
        self.require_user()?;
        self.edit_draft(
            visit_id,
            |_, form, answers| Ok(engine::remove_instance(form, answers, path)?),
            "remove_instance",
            Some(path),
            None,
        )
    }

    fn edit_draft(
        &self,
        visit_id: &str,
        edit: impl FnOnce(&Transaction<'_>, &Form, &mut Map<String, Json>) -> Result<()>,
        op: &'static str,
        field: Option<&str>,
        value: Option<&Json>,
    ) -> Result<()> {
        let now = timestamp(self.now());
        self.write(|tx| {
            let (form_id, version, status, answers) = tx
                .prepare_cached(
                    "SELECT form_id, form_version, status, answers FROM visits WHERE id = ?1",
                )?
                .query_row([visit_id], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, u32>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })
                .optional()?
                .ok_or_else(|| not_found("visit", visit_id))?;
            let status = VisitStatus::parse(&status).unwrap_or(VisitStatus::Void);
            if status != VisitStatus::Draft {
                return Err(Error::VisitNotEditable {
                    id: visit_id.to_owned(),
                    status: status.as_str(),
                });
            }
            let form = self.form(&form_id, version)?;
            let mut answers = parse_object(&answers)?;
            edit(tx, &form, &mut answers)?;
            let answers = Json::Object(answers).to_string();
            drop_unreferenced_attachments(tx, visit_id, &answers)?;
            tx.prepare_cached("UPDATE visits SET answers = ?2, updated_at = ?3 WHERE id = ?1")?
                .execute(params![visit_id, answers, now])?;
            self.log(
                tx,
                &now,
                Change {
                    entity: "visit",
                    entity_id: visit_id,
                    op,
                    field,
                    value,
                },
            )
        })
    }

    /// A visit with its answers, for display: the view is recorded in the audit trail.
    pub fn visit(&self, id: &str) -> Result<Visit> {
        let visit = self.load_visit(id)?;
        self.audit_now(AuditAction::View, Some(("visit", id)), json!({}))?;
        Ok(visit)
    }

    pub(crate) fn load_visit(&self, id: &str) -> Result<Visit> {
        load_visit(&self.db.reader.lock(), id)
    }

    /// Every problem of a visit's answers, as the form and the domain rules see them now.
    pub fn validate_visit(&self, visit_id: &str) -> Result<Vec<Problem>> {
        let visit = self.load_visit(visit_id)?;
        let form = self.form(&visit.form_id, visit.form_version)?;
        let lists = self.code_lists();
        let mut problems = Evaluation::new(&form, &visit.answers, &lists, self.now()).validate();
        let conn = self.db.reader.lock();
        problems.extend(self.stale_signature_problems(&conn, &form, visit_id, &visit.answers)?);
        Ok(problems)
    }

    /// For the UI: which fields are relevant and required now, per answer path.
    pub fn field_states(&self, visit_id: &str) -> Result<Vec<FieldState>> {
        let visit = self.load_visit(visit_id)?;
        let form = self.form(&visit.form_id, visit.form_version)?;
        let lists = self.code_lists();
        let ev = Evaluation::new(&form, &visit.answers, &lists, self.now());
        Ok(ev
            .field_instances()
            .into_iter()
            .map(|(id, ctx)| {
                let info = form.fields.get(id);
                FieldState {
                    path: info.map(|f| ev.path_of(f, &ctx)).unwrap_or_default(),
                    relevant: ev.is_relevant(id, &ctx),
                    required: ev.is_relevant(id, &ctx) && ev.is_required(id, &ctx),
                    value: ev.value(id, &ctx).to_json(),
                }
            })
            .collect())
    }

    /// Completes a draft: refuses it while any blocking problem remains; stamps the end time if
    /// unset; stores calculated values; writes its household and member answers into the
    /// household's records as field edits (creating the household for a new discovery). One
    /// transaction.
    pub fn complete_visit(&self, visit_id: &str) -> Result<Visit> {
        self.require_user()?;
        // Read, check and write under the writer lock: an autosave racing with completion is
        // either in the completed visit or refused as "not editable", never lost.
        let visit = self.write(|tx| {
            let mut visit = load_visit(tx, visit_id)?;
            if visit.status != VisitStatus::Draft {
                return Err(Error::VisitWrongStatus { id: visit.id, status: visit.status.as_str(), action: "completed" });
            }
            let form = self.form(&visit.form_id, visit.form_version)?;
            let now = self.now();
            if visit.answers.get("ended_at").is_none_or(Json::is_null) {
                let _ = engine::set_answer(&form, &mut visit.answers, "ended_at", Json::from(timestamp(now)));
            }
            let lists = self.code_lists();
            let ev = Evaluation::new(&form, &visit.answers, &lists, now);
            let mut problems = ev.validate();
            problems.extend(self.stale_signature_problems(tx, &form, visit_id, &visit.answers)?);
            if problems.iter().any(Problem::blocks_completion) {
                return Err(Error::VisitHasProblems { problems });
            }
            let completed = ev.value_by_name("completed").is_true();
            let mut answers = ev.materialize(true);
            let at = timestamp(now);
            if completed {
                let b = record_bindings(&form);
                let household = self.apply_to_household(tx, &form, &b, visit.household_id.as_deref(), &mut answers, &at)?;
                visit.household_id = Some(household);
            }
            let answers_json = Json::Object(answers.clone()).to_string();
            drop_unreferenced_attachments(tx, visit_id, &answers_json)?;
            tx.execute(
                "UPDATE visits SET status = 'completed', answers = ?2, household_id = ?3, completed_at = ?4, updated_at = ?4
                 WHERE id = ?1",
                params![visit_id, answers_json, visit.household_id, at],
            )?;
            self.log(tx, &at, Change { entity: "visit", entity_id: visit_id, op: "complete", field: None, value: None })?;
            visit.answers = answers;
            visit.status = VisitStatus::Completed;
            visit.completed_at = Some(at.clone());
            visit.updated_at = at.clone();
            let record = self.visit_record(tx, &visit)?;
            self.enqueue(tx, &at, None, zoufang_protocol::messages::ChangeOp::SubmitVisit { visit: Box::new(record) })?;
            Ok(visit)
        })?;
        // Ids only: answers are personal data and never reach a log.
        tracing::debug!(visit = %visit.id, household = ?visit.household_id, "visit completed");
        Ok(visit)
    }

    /// Writes a completed visit's household and member answers into the records, field by field
    /// through the same path as a direct edit. Returns the household id.
    fn apply_to_household(
        &self,
        tx: &Transaction<'_>,
        form: &Form,
        b: &RecordBindings,
        household_id: Option<&str>,
        answers: &mut Map<String, Json>,
        at: &str,
    ) -> Result<String> {
        let read_only = |id: usize| engine::is_read_only(form, id);
        let household_id = match household_id {
            Some(h) => h.to_owned(),
            None => {
                let village = answers
                    .get("village_code")
                    .and_then(Json::as_str)
                    .unwrap_or_default()
                    .to_owned();
                self.insert_household(
                    tx,
                    form,
                    b,
                    NewHousehold {
                        village_code: village,
                        ..NewHousehold::default()
                    },
                    at,
                )?
            }
        };
        let current: String = tx.query_row(
            "SELECT fields FROM households WHERE id = ?1",
            [&household_id],
            |r| r.get(0),
        )?;
        let current = parse_object(&current)?;
        for (record, id) in &b.household {
            let Some(info) = form.fields.get(*id) else {
                continue;
            };
            if read_only(*id) || !info.chain.is_empty() {
                continue;
            }
            if let Some(v) = answers.get(&info.name).filter(|v| !v.is_null())
                && current.get(record) != Some(v)
            {
                set_record_field(self, tx, Entity::Household, &household_id, record, v, at)?;
            }
        }
        let Some(members_repeat) = b.members_repeat else {
            return Ok(household_id);
        };
        let members_name = form
            .repeats
            .get(members_repeat)
            .map(|r| r.name.clone())
            .unwrap_or_default();
        let Some(Json::Array(instances)) = answers.get_mut(&members_name) else {
            return Ok(household_id);
        };
        for instance in instances.iter_mut() {
            let Some(obj) = instance.as_object_mut() else {
                continue;
            };
            let bound: Vec<(String, Json)> = b
                .member
                .iter()
                .filter(|(record, id)| record != "id" && !read_only(*id))
                .filter_map(|(record, id)| {
                    let name = &form.fields.get(*id)?.name;
                    obj.get(name)
                        .filter(|v| !v.is_null())
                        .map(|v| (record.clone(), v.clone()))
                })
                .collect();
            let existing = obj
                .get("member_id")
                .and_then(Json::as_str)
                .map(str::to_owned);
            let member_fields: Option<String> = match &existing {
                Some(mid) => tx
                    .query_row(
                        "SELECT fields FROM members WHERE id = ?1 AND household_id = ?2",
                        params![mid, household_id],
                        |r| r.get(0),
                    )
                    .optional()?,
                None => None,
            };
            match (existing, member_fields) {
                (Some(mid), Some(fields)) => {
                    let fields = parse_object(&fields)?;
                    for (record, v) in bound {
                        if fields.get(&record) != Some(&v) {
                            set_record_field(self, tx, Entity::Member, &mid, &record, &v, at)?;
                        }
                    }
                }
                _ => {
                    let new_id = self.insert_member(
                        tx,
                        form,
                        b,
                        &household_id,
                        bound.into_iter().collect(),
                        at,
                    )?;
                    obj.insert("member_id".into(), Json::from(new_id));
                }
            }
        }
        Ok(household_id)
    }

    /// Marks a completed visit as signed. (Binding signatures to content hashes comes with
    /// the attachments work.)
    pub fn sign_visit(&self, visit_id: &str) -> Result<()> {
        self.require_user()?;
        self.transition(visit_id, &[VisitStatus::Completed], "signed", "sign", None)
    }

    /// Voids a visit with a reason; the visit stays in the store.
    pub fn void_visit(&self, visit_id: &str, reason: &str) -> Result<()> {
        self.require_user()?;
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > 500 {
            return Err(Error::InvalidValue {
                field: "void_reason".into(),
                code: "required",
            });
        }
        self.transition(
            visit_id,
            &[
                VisitStatus::Draft,
                VisitStatus::Completed,
                VisitStatus::Signed,
            ],
            "void",
            "void",
            Some(reason),
        )
    }

    fn transition(
        &self,
        visit_id: &str,
        from: &[VisitStatus],
        to: &'static str,
        op: &'static str,
        reason: Option<&str>,
    ) -> Result<()> {
        let at = timestamp(self.now());
        self.write(|tx| {
            let status: String = tx
                .query_row("SELECT status FROM visits WHERE id = ?1", [visit_id], |r| {
                    r.get(0)
                })
                .optional()?
                .ok_or_else(|| not_found("visit", visit_id))?;
            let status = VisitStatus::parse(&status).unwrap_or(VisitStatus::Void);
            if !from.contains(&status) {
                return Err(Error::VisitWrongStatus {
                    id: visit_id.to_owned(),
                    status: status.as_str(),
                    action: if to == "void" { "voided" } else { "signed" },
                });
            }
            tx.execute(
                "UPDATE visits SET status = ?2, updated_at = ?3,
                     signed_at = CASE WHEN ?2 = 'signed' THEN ?3 ELSE signed_at END,
                     voided_at = CASE WHEN ?2 = 'void' THEN ?3 ELSE voided_at END,
                     void_reason = coalesce(?4, void_reason)
                 WHERE id = ?1",
                params![visit_id, to, at, reason],
            )?;
            let logged = reason.map(Json::from);
            self.log(
                tx,
                &at,
                Change {
                    entity: "visit",
                    entity_id: visit_id,
                    op,
                    field: None,
                    value: logged.as_ref(),
                },
            )?;
            // A draft never left the device; a completed visit's status follows it to the server.
            if status != VisitStatus::Draft {
                let change = zoufang_protocol::messages::ChangeOp::SetVisitStatus {
                    id: visit_id.to_owned(),
                    status: to.to_owned(),
                    reason: reason.map(str::to_owned),
                    at: at.clone(),
                };
                self.enqueue(tx, &at, None, change)?;
            }
            Ok(())
        })
    }

    /// A household's visits, newest first.
    pub fn visits_of_household(&self, household_id: &str) -> Result<Vec<VisitSummary>> {
        self.visit_summaries(
            "SELECT id, household_id, visit_type, status, author, updated_at FROM visits WHERE household_id = ?1 ORDER BY created_at DESC",
            params![household_id],
        )
    }

    /// The signed-in user's drafts, most recently edited first.
    pub fn my_drafts(&self) -> Result<Vec<VisitSummary>> {
        let user = self.require_user()?;
        self.visit_summaries(
            "SELECT id, household_id, visit_type, status, author, updated_at FROM visits WHERE author = ?1 AND status = 'draft' ORDER BY updated_at DESC",
            params![user],
        )
    }

    fn visit_summaries(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<VisitSummary>> {
        let conn = self.db.reader.lock();
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params, |r| {
            let status: String = r.get(3)?;
            Ok(VisitSummary {
                id: r.get(0)?,
                household_id: r.get(1)?,
                visit_type: r.get(2)?,
                status: VisitStatus::parse(&status).unwrap_or(VisitStatus::Void),
                author: r.get(4)?,
                updated_at: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn counts(&self) -> Result<StoreCounts> {
        let conn = self.db.reader.lock();
        let n = |sql: &str| {
            conn.query_row(sql, [], |r| r.get::<_, i64>(0))
                .map(|v| v.max(0) as u64)
        };
        Ok(StoreCounts {
            households: n("SELECT count(*) FROM households")?,
            members: n("SELECT count(*) FROM members WHERE removed = 0")?,
            drafts: n("SELECT count(*) FROM visits WHERE status = 'draft'")?,
            completed: n("SELECT count(*) FROM visits WHERE status = 'completed'")?,
            signed: n("SELECT count(*) FROM visits WHERE status = 'signed'")?,
            void: n("SELECT count(*) FROM visits WHERE status = 'void'")?,
            changes: n("SELECT count(*) FROM change_log")?,
        })
    }

    /// SQLite's own consistency check of the file (`ok` when sound).
    pub fn integrity_check(&self) -> Result<String> {
        Ok(self
            .db
            .reader
            .lock()
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
    }
}

/// What the UI needs to draw one field instance.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FieldState {
    pub path: String,
    pub relevant: bool,
    pub required: bool,
    /// The current value (answer, default or calculated), null when none.
    pub value: Json,
}

pub(crate) fn parse_object(text: &str) -> Result<Map<String, Json>> {
    match serde_json::from_str(text)? {
        Json::Object(m) => Ok(m),
        _ => Err(Error::Storage(
            "a stored record is not a JSON object".into(),
        )),
    }
}

fn household_exists(tx: &Transaction<'_>, id: &str) -> Result<()> {
    let found: Option<i64> = tx
        .query_row("SELECT 1 FROM households WHERE id = ?1", [id], |r| r.get(0))
        .optional()?;
    found.map(|_| ()).ok_or_else(|| not_found("household", id))
}

/// Keeps the denormalised head name in step with the members.
pub(crate) fn refresh_head(tx: &Transaction<'_>, household_id: &str) -> Result<()> {
    tx.prepare_cached(
        "UPDATE households SET head_name = (SELECT name FROM members WHERE household_id = ?1 AND removed = 0 AND relationship = ?2
                                            ORDER BY created_at LIMIT 1) WHERE id = ?1",
    )?
    .execute(params![household_id, HEAD_RELATIONSHIP])?;
    Ok(())
}

/// A direct edit of one household or member field: the record, the change log and the outbox,
/// in the caller's transaction.
fn set_record_field(
    c: &Collector,
    tx: &Transaction<'_>,
    entity: Entity,
    id: &str,
    field: &str,
    value: &Json,
    at: &str,
) -> Result<()> {
    crate::sync::client::store_local_field(tx, entity, id, field, value, at)?;
    let change = Change {
        entity: entity.as_str(),
        entity_id: id,
        op: "set_field",
        field: Some(field),
        value: Some(value),
    };
    c.log(tx, at, change)?;
    c.enqueue_field_edit(tx, at, entity, id, field, value, None)
}

/// Writes one field of the local household record and its indexed copies (no log, no outbox:
/// also used to apply what the server sent).
pub(crate) fn store_household_field(
    tx: &Transaction<'_>,
    id: &str,
    field: &str,
    value: &Json,
    at: &str,
) -> Result<()> {
    let fields: String = tx
        .query_row("SELECT fields FROM households WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()?
        .ok_or_else(|| not_found("household", id))?;
    let mut fields = parse_object(&fields)?;
    if value.is_null() {
        fields.remove(field);
    } else {
        fields.insert(field.to_owned(), value.clone());
    }
    let village = fields
        .get("village_code")
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_owned();
    let due = fields
        .get("next_visit_due")
        .and_then(Json::as_str)
        .map(str::to_owned);
    tx.prepare_cached("UPDATE households SET fields = ?2, village_code = ?3, next_visit_due = ?4, updated_at = ?5 WHERE id = ?1")?
        .execute(params![id, Json::Object(fields).to_string(), village, due, at])?;
    Ok(())
}

/// Writes one field of the local member record and its indexed copies (no log, no outbox).
pub(crate) fn store_member_field(
    tx: &Transaction<'_>,
    id: &str,
    field: &str,
    value: &Json,
    at: &str,
) -> Result<()> {
    let (household_id, fields): (String, String) = tx
        .query_row(
            "SELECT household_id, fields FROM members WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .ok_or_else(|| not_found("member", id))?;
    let mut fields = parse_object(&fields)?;
    if value.is_null() {
        fields.remove(field);
    } else {
        fields.insert(field.to_owned(), value.clone());
    }
    let text = |k: &str| fields.get(k).and_then(Json::as_str).map(str::to_owned);
    let (name, id_number, relationship) = (text("name"), text("id_number"), text("relationship"));
    tx.prepare_cached("UPDATE members SET fields = ?2, name = ?3, id_number = ?4, relationship = ?5, updated_at = ?6 WHERE id = ?1")?
        .execute(params![id, Json::Object(fields).to_string(), name, id_number, relationship, at])?;
    refresh_head(tx, &household_id)
}

fn insert_visit(tx: &Transaction<'_>, v: &Visit) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO visits (id, household_id, form_id, form_version, visit_type, status, answers, author, revision_of, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        v.id,
        v.household_id,
        v.form_id,
        v.form_version,
        v.visit_type,
        v.status.as_str(),
        Json::Object(v.answers.clone()).to_string(),
        v.author,
        v.revision_of,
        v.created_at,
        v.updated_at
    ])?;
    Ok(())
}

pub(crate) fn load_visit(conn: &rusqlite::Connection, id: &str) -> Result<Visit> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, household_id, form_id, form_version, visit_type, status, answers, author, revision_of, void_reason,
                created_at, updated_at, completed_at, signed_at FROM visits WHERE id = ?1",
    )?;
    stmt.query_row([id], visit_row)
        .optional()?
        .ok_or_else(|| not_found("visit", id))?
}

fn visit_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Visit>> {
    let status: String = r.get(5)?;
    let answers: String = r.get(6)?;
    let answers = match parse_object(&answers) {
        Ok(a) => a,
        Err(e) => return Ok(Err(e)),
    };
    Ok(Ok(Visit {
        id: r.get(0)?,
        household_id: r.get(1)?,
        form_id: r.get(2)?,
        form_version: r.get(3)?,
        visit_type: r.get(4)?,
        status: VisitStatus::parse(&status).unwrap_or(VisitStatus::Void),
        answers,
        author: r.get(7)?,
        revision_of: r.get(8)?,
        void_reason: r.get(9)?,
        created_at: r.get(10)?,
        updated_at: r.get(11)?,
        completed_at: r.get(12)?,
        signed_at: r.get(13)?,
    }))
}

/// Turns a visit-shaped JSON object into (path, value) pairs, repeats expanded by index.
fn flatten_answers(
    form: &Form,
    answers: &Map<String, Json>,
    prefix: &str,
    out: &mut Vec<(String, Json)>,
) {
    for (key, value) in answers {
        match (form.lookup(key), value) {
            (Some(ItemRef::Repeat(_)), Json::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Json::Object(obj) => {
                            flatten_answers(form, obj, &format!("{prefix}{key}[{i}]."), out)
                        }
                        // Reported by set_answer as a path error.
                        other => out.push((format!("{prefix}{key}[{i}]"), other.clone())),
                    }
                }
            }
            (_, other) => out.push((format!("{prefix}{key}"), other.clone())),
        }
    }
}

/// An `audit_log` row (columns seq, at, user_id, action, entity, entity_id, detail, prev_hash,
/// hash).
fn audit_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
        at: r.get(1)?,
        user_id: r.get(2)?,
        action: r.get(3)?,
        entity: r.get(4)?,
        entity_id: r.get(5)?,
        detail: serde_json::from_str(&r.get::<_, String>(6)?).unwrap_or(Json::Null),
        prev_hash: r.get(7)?,
        hash: r.get(8)?,
    })
}

/// Removes the attachments of a draft its answers no longer name (an answer cleared or
/// overwritten, a repeat instance removed) and the contents nothing names any more: a photo
/// the visit does not hold neither travels nor stays on the phone.
fn drop_unreferenced_attachments(
    tx: &Transaction<'_>,
    visit_id: &str,
    answers_json: &str,
) -> Result<()> {
    let attached: Vec<(String, Option<String>)> = tx
        .prepare_cached("SELECT id, content_hash FROM attachments WHERE visit_id = ?1")?
        .query_map([visit_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (id, hash) in attached {
        // Ids are UUIDs: as a quoted JSON string they occur only where an answer names them.
        if !answers_json.contains(&format!("\"{id}\"")) {
            tx.execute("DELETE FROM attachments WHERE id = ?1", [&id])?;
            collect_blob(tx, hash.as_deref())?;
        }
    }
    Ok(())
}

/// Deletes a content no attachment names any more.
pub(crate) fn collect_blob(tx: &Transaction<'_>, hash: Option<&str>) -> Result<()> {
    if let Some(hash) = hash {
        tx.execute(
            "DELETE FROM blobs WHERE hash = ?1 AND NOT EXISTS (SELECT 1 FROM attachments WHERE content_hash = ?1)",
            [hash],
        )?;
    }
    Ok(())
}

fn media_error(e: crate::media::MediaError) -> Error {
    Error::InvalidValue {
        field: "image".into(),
        code: e.code(),
    }
}

/// The chain's hash recorded in the store once its first entry was written.
fn stored_chain_hash(conn: &rusqlite::Connection) -> Result<Option<HashAlgorithm>> {
    let stored: Option<String> = conn
        .prepare_cached("SELECT value FROM meta WHERE key = 'audit_hash'")?
        .query_row([], |r| r.get(0))
        .optional()?;
    Ok(stored.as_deref().and_then(HashAlgorithm::parse))
}

/// The attachments recorded for a visit, oldest first.
pub(crate) fn load_attachments(
    conn: &rusqlite::Connection,
    visit_id: &str,
) -> Result<Vec<Attachment>> {
    let mut stmt = conn.prepare_cached(
            "SELECT id, visit_id, field_path, kind, content_hash, size_bytes, mime_type, metadata, created_at
             FROM attachments WHERE visit_id = ?1 ORDER BY created_at, id",
        )?;
    let rows = stmt.query_map([visit_id], |r| {
        let kind: String = r.get(3)?;
        let metadata: String = r.get(7)?;
        Ok((
            Attachment {
                id: r.get(0)?,
                visit_id: r.get(1)?,
                field_path: r.get(2)?,
                kind: if kind == "signature" {
                    AttachmentKind::Signature
                } else {
                    AttachmentKind::Photo
                },
                content_hash: r.get(4)?,
                size_bytes: r.get::<_, i64>(5)?.max(0) as u64,
                mime_type: r.get(6)?,
                metadata: Map::new(),
                created_at: r.get(8)?,
            },
            metadata,
        ))
    })?;
    rows.map(|row| {
        let (mut a, metadata) = row?;
        a.metadata = parse_object(&metadata)?;
        Ok(a)
    })
    .collect()
}
