//! [`Collector`]: the one handle the CLI, the bindings and the tests use. A facade: it checks
//! who is signed in and what the input is, opens one transaction per user action, and composes
//! the store's operations (`crate::store`, where every SQL statement lives) and the model's
//! rules inside it. Split by what the user acts on: forms, households, visits, attachments.

mod attachments;
mod duplicates;
mod forms;
mod households;
mod lifecycle;
pub use lifecycle::ProposedStatus;
mod local_state;
mod reassignment;
mod retention;
mod seen;
pub mod signing;
mod sync;
mod visits;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use parking_lot::{Mutex, RwLock};
use rusqlite::{Transaction, TransactionBehavior};
use serde_json::{Value as Json, json};

use crate::error::{Error, Result};
use crate::records::{StoreCounts, timestamp};
use crate::store::{self, Connections, StoreOptions, meta};
use zoufang_model::code_list::CodeLists;
use zoufang_model::form::Form;
use zoufang_protocol::audit::{self, AuditAction, AuditEntry, HashAlgorithm};

pub use crate::records::HEAD_RELATIONSHIP;
pub(crate) use households::RecordBindings;

/// The form a visit uses unless told otherwise.
pub const HOUSEHOLD_VISIT_FORM_ID: &str = "household_visit";
/// The visit type that finds a household unknown to the system.
pub const NEW_DISCOVERY: &str = "new_discovery";
/// Most rows a list or search returns at once.
pub const MAX_PAGE: u32 = 500;

type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// What a user did to a record, as the audit trail names it (never with the value).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Action<'a> {
    pub entity: &'static str,
    pub entity_id: &'a str,
    pub op: &'static str,
    pub field: Option<&'a str>,
}

/// The offline store of one signed-in user, with its forms and code lists.
pub struct Collector {
    pub(crate) db: Connections,
    forms: Mutex<HashMap<(String, u32), Arc<Form>>>,
    code_lists: RwLock<Arc<CodeLists>>,
    user: RwLock<Option<String>>,
    pub(crate) clock: Clock,
    /// Orders this device's changes; see `sync::hlc`.
    pub(crate) hlc: Mutex<crate::sync::hlc::Hlc>,
    /// Held by the one sync (or enrolment) running on this store.
    pub(crate) sync_lock: Mutex<()>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector").finish_non_exhaustive()
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
            sync_lock: Mutex::new(()),
        };
        collector.restore_hlc()?;
        collector.install_defaults()?;
        collector.reload_code_lists()?;
        let user = collector.read(|c| meta::get(c, meta::CURRENT_USER))?;
        *collector.user.write() = user;
        Ok(collector)
    }

    /// Counts what SQLite does while `f` runs on this thread (a sync, say): statements, VM
    /// steps, rows read by full scans. Tests and benchmarks use it to show that a cost follows
    /// the work, not the store's history (`store::stats`).
    #[cfg(feature = "sql-stats")]
    pub fn measure_sql<T>(&self, f: impl FnOnce() -> T) -> (T, store::stats::SqlStats) {
        for conn in [&self.db.writer, &self.db.reader] {
            store::stats::trace(&conn.lock(), true);
        }
        store::stats::start();
        let out = f();
        let stats = store::stats::stop();
        for conn in [&self.db.writer, &self.db.reader] {
            store::stats::trace(&conn.lock(), false);
        }
        (out, stats)
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction on the writer: all of it or nothing.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.db.writer.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Runs `f` on the reader connection (lists and lookups while a write goes on).
    pub(crate) fn read<T>(&self, f: impl FnOnce(&rusqlite::Connection) -> Result<T>) -> Result<T> {
        f(&self.db.reader.lock())
    }

    // ----- audit --------------------------------------------------------------------------

    /// Appends an entry to the audit trail, inside the action's own transaction.
    pub(crate) fn audit(
        &self,
        tx: &Transaction<'_>,
        action: AuditAction,
        entity: Option<(&str, &str)>,
        detail: Json,
    ) -> Result<()> {
        let alg = self.chain_hash(tx)?;
        let last = store::audit::last(tx)?;
        let user = self.current_user().unwrap_or_else(|| "system".to_owned());
        let entry = audit::next_entry(
            alg,
            last.as_ref().map(|(s, h)| (*s, h.as_str())),
            timestamp(self.now()),
            user,
            action,
            entity,
            detail,
        );
        store::audit::append(tx, &entry)
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
        if let Some(alg) = store::audit::chain_hash(tx)? {
            return Ok(alg);
        }
        let alg = self.hash_algorithm();
        store::audit::set_chain_hash(tx, alg)?;
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
        Ok(self
            .read(store::audit::chain_hash)?
            .unwrap_or_else(|| self.hash_algorithm()))
    }

    /// The device's audit entries not yet acknowledged by the server, oldest first.
    pub fn pending_audit(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        self.read(|c| store::audit::pending(c, limit))
    }

    /// How many audit entries wait for the server.
    pub fn pending_audit_count(&self) -> Result<u64> {
        self.read(store::audit::pending_count)
    }

    /// The whole audit trail of this device, oldest first, and whether its chain is intact.
    pub fn audit_trail(&self) -> Result<(Vec<AuditEntry>, bool)> {
        let all = self.read(store::audit::all)?;
        let alg = self.audit_chain_hash()?;
        let intact = audit::verify(alg, 0, audit::GENESIS, &all).is_ok();
        Ok((all, intact))
    }

    /// Marks entries up to `seq` as received by the server.
    pub(crate) fn audit_uploaded_through(&self, seq: u64) -> Result<()> {
        self.write(|tx| store::audit::mark_uploaded_through(tx, seq))
    }

    /// Audits a user's change of a record, naming the field, never the value. Draft answers are
    /// not records yet: a draft's creation and its completion are what is audited.
    pub(crate) fn audit_action(&self, tx: &Transaction<'_>, action: Action<'_>) -> Result<()> {
        let audited = match action.op {
            "set_answer" | "set_answers" | "remove_instance" => None,
            "create" | "revise" => Some(AuditAction::Create),
            "complete" => Some(AuditAction::Complete),
            "sign" => Some(AuditAction::Sign),
            "void" => Some(AuditAction::Void),
            _ => Some(AuditAction::Edit),
        };
        let Some(audited) = audited else {
            return Ok(());
        };
        let detail = match action.field {
            Some(field) => json!({"op": action.op, "field": field}),
            None => json!({"op": action.op}),
        };
        self.audit(tx, audited, Some((action.entity, action.entity_id)), detail)
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
            match meta::get(tx, meta::OWNER_USER)? {
                Some(owner) if owner != user => return Err(Error::WrongUser),
                Some(_) => {}
                None => meta::set(tx, meta::OWNER_USER, user)?,
            }
            meta::set(tx, meta::CURRENT_USER, user)?;
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

    // ----- the store as a whole ---------------------------------------------------------------

    pub fn counts(&self) -> Result<StoreCounts> {
        self.read(store::counts)
    }

    /// SQLite's own consistency check of the file (`ok` when sound).
    pub fn integrity_check(&self) -> Result<String> {
        self.read(store::integrity_check)
    }
}
