//! The narrow repositories the service layer works through. A storage implements them on its
//! transaction handle, so every rule of the server (`service`) is written once, whatever holds
//! the data: a service function takes `&mut dyn Tx` and the caller runs it inside one
//! transaction of the storage. Repositories only read and write; they decide nothing.
//!
//! SQLite implements them in `sqlite/` (one module per repository); a PostgreSQL storage is the
//! next to come (issue 11).

use serde_json::Value as Json;
use zoufang_protocol::audit::{AuditEntry, HashAlgorithm};
use zoufang_protocol::messages::{
    Ack, ConflictInfo, Entity, FeedEntry, FeedItem, FormPublication, Handover, RecordState,
    UserInfo, VisitRecord,
};

use zoufang_model::code_list::CodeList;

use crate::blobs::{BlobStore, ContentKey};
use crate::storage::{DeviceInfo, PossibleDuplicate, Result, Stats};

/// A one-time enrolment token as stored (by its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentToken {
    pub user_id: String,
    pub expires_at: String,
    pub used_at: Option<String>,
}

/// A device as authentication sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    pub id: String,
    /// Its own id, or the first device's of the line it succeeds.
    pub lineage: String,
    pub token_expires_at: String,
    pub revoked_at: Option<String>,
    pub wipe_requested_at: Option<String>,
    pub successor_id: Option<String>,
    pub user: UserInfo,
}

/// A device being enrolled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDevice<'a> {
    pub id: &'a str,
    pub user_id: &'a str,
    pub name: &'a str,
    pub token_hash: &'a str,
    pub token_expires_at: &'a str,
    pub enrolled_at: &'a str,
    /// For a successor: the device it succeeds, and that one's lineage.
    pub predecessor: Option<(&'a str, &'a str)>,
}

pub trait UsersRepo {
    /// `false` when a user with this id exists already.
    fn insert_user(&mut self, user: &UserInfo, created_at: &str) -> Result<bool>;
    /// `false` when there is no such user.
    fn set_areas(&mut self, user_id: &str, areas: &[String]) -> Result<bool>;
    fn users(&mut self) -> Result<Vec<UserInfo>>;
    fn user(&mut self, user_id: &str) -> Result<Option<UserInfo>>;
}

pub trait DevicesRepo {
    fn insert_enrollment_token(
        &mut self,
        token_hash: &str,
        user_id: &str,
        expires_at: &str,
    ) -> Result<()>;
    fn enrollment_token(&mut self, token_hash: &str) -> Result<Option<EnrollmentToken>>;
    fn mark_enrollment_token_used(&mut self, token_hash: &str, at: &str) -> Result<()>;
    fn insert_device(&mut self, device: &NewDevice<'_>) -> Result<()>;
    fn device_by_token(&mut self, token_hash: &str) -> Result<Option<DeviceRecord>>;
    /// `false` when the device has a successor already.
    fn set_successor(&mut self, device_id: &str, successor_id: &str) -> Result<bool>;
    fn renew_device_token(&mut self, device_id: &str, expires_at: &str) -> Result<()>;
    /// The lineage of a device (see [`DeviceRecord::lineage`]).
    fn device_lineage(&mut self, device_id: &str) -> Result<Option<String>>;
    /// `false` when there is no such device, or it is revoked already.
    fn revoke_device(&mut self, device_id: &str, at: &str) -> Result<bool>;
    /// `false` when there is no such active device, or a wipe is ordered already.
    fn order_wipe(&mut self, device_id: &str, at: &str) -> Result<bool>;
    fn devices(&mut self) -> Result<Vec<DeviceInfo>>;
}

/// The server's own chain of administrative events.
pub trait ServerAuditRepo {
    fn last_server_audit(&mut self) -> Result<Option<(u64, String)>>;
    fn append_server_audit(&mut self, entry: &AuditEntry) -> Result<()>;
}

/// Published forms and code lists (several versions side by side).
pub trait CatalogRepo {
    fn form_definition(&mut self, form_id: &str, version: u32) -> Result<Option<String>>;
    fn insert_form(
        &mut self,
        form_id: &str,
        version: u32,
        definition: &str,
        at: &str,
    ) -> Result<()>;
    /// Every published form as (id, version, definition JSON), by id and version.
    fn forms(&mut self) -> Result<Vec<(String, u32, String)>>;
    /// When each form version was published, by id and version.
    fn form_publications(&mut self) -> Result<Vec<FormPublication>>;
    fn form_published_at(&mut self, form_id: &str, version: u32) -> Result<Option<String>>;
    fn put_code_list(&mut self, list: &CodeList, at: &str) -> Result<()>;
    /// The newest version of every code list.
    fn latest_code_lists(&mut self) -> Result<Vec<CodeList>>;
    /// How often a household of an assistance category is visited, in days.
    fn put_visit_frequency(&mut self, category: &str, days: u32, at: &str) -> Result<()>;
    fn visit_frequencies(&mut self) -> Result<std::collections::BTreeMap<String, u32>>;
    /// The totals `zoufang admin stats` shows.
    fn stats(&mut self) -> Result<Stats>;
}

/// Each device's audit chain as uploaded (append-only), and its alerts.
pub trait AuditRepo {
    /// The newest entry held for a device: (seq, hash, the chain's hash algorithm).
    fn device_audit_head(
        &mut self,
        device_id: &str,
    ) -> Result<Option<(u64, String, Option<HashAlgorithm>)>>;
    /// The hash of one held entry.
    fn device_audit_hash(&mut self, device_id: &str, seq: u64) -> Result<Option<String>>;
    fn append_device_audit(
        &mut self,
        device_id: &str,
        algorithm: HashAlgorithm,
        entry: &AuditEntry,
        received_at: &str,
    ) -> Result<()>;
    fn set_audit_alert(&mut self, device_id: &str, problem: &str) -> Result<()>;
    /// Marks a device ordered wiped as wiped (and revoked); `false` if no wipe was ordered.
    fn confirm_wipe(&mut self, device_id: &str, at: &str) -> Result<bool>;
    fn device_audit(&mut self, device_id: &str) -> Result<Vec<AuditEntry>>;
    /// Every device's chain: (device, algorithm, entries in order).
    fn device_chains(&mut self) -> Result<Vec<(String, HashAlgorithm, Vec<AuditEntry>)>>;
    fn server_audit_entries(&mut self) -> Result<Vec<AuditEntry>>;
    /// (device, problem) of every refused upload.
    fn audit_alerts(&mut self) -> Result<Vec<(String, String)>>;
}

/// Which visits name which attachment contents, and the contents held whole and verified
/// (their bytes are in the `BlobStore`).
pub trait ContentsRepo {
    /// Every visit that names this content.
    fn naming_visits(&mut self, key: &ContentKey) -> Result<Vec<NamingVisit>>;
    /// Has this device proved it holds the content's bytes (uploaded them, or answered a
    /// possession challenge)?
    fn is_holder(&mut self, key: &ContentKey, device_id: &str) -> Result<bool>;
    fn record_holder(&mut self, key: &ContentKey, device_id: &str, at: &str) -> Result<()>;
    /// The deployment's secret of this name (every node of a deployment shares it).
    fn server_secret(&mut self, name: &str) -> Result<Option<Vec<u8>>>;
    /// Makes the secret from `fresh` unless another node made it first; returns the one kept.
    fn create_server_secret(&mut self, name: &str, fresh: &[u8]) -> Result<Vec<u8>>;
    fn record_content(&mut self, key: &ContentKey, size: u64, at: &str) -> Result<()>;
    /// Visits naming a content the server does not hold whole yet.
    fn visits_awaiting_attachments(&mut self) -> Result<Vec<String>>;
}

/// A visit naming a content: its village, the size it names, and the device that pushed it
/// (`None` for a visit pushed before possession was recorded: such a reference was readable by
/// the rules of its day and stays so).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamingVisit {
    pub village_code: String,
    pub size_bytes: u64,
    pub pushed_by: Option<String>,
}

/// One field of a household or member as the server holds it, with who wrote it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredField {
    pub value: Json,
    pub version: u64,
    pub writer: StoredWriter,
    pub conflict_id: Option<String>,
}

/// Who wrote a value, for the conflict list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWriter {
    pub device: String,
    pub seq: u64,
    pub user: String,
    pub received_at: String,
    pub device_time: String,
    pub skewed: bool,
}

/// Households and members, field by field, each field with the server sequence number
/// (version) that set it.
pub trait RecordsRepo {
    /// The server sequence number that created the record, if it exists.
    fn record_created(&mut self, entity: Entity, id: &str) -> Result<Option<u64>>;
    /// A record's village and household (a member's household; a household's own id).
    fn locate(&mut self, entity: Entity, id: &str) -> Result<Option<(String, String)>>;
    fn insert_record(
        &mut self,
        entity: Entity,
        id: &str,
        household_id: Option<&str>,
        village: &str,
        created_seq: u64,
    ) -> Result<()>;
    fn field(&mut self, entity: Entity, id: &str, field: &str) -> Result<Option<StoredField>>;
    fn put_field(
        &mut self,
        entity: Entity,
        id: &str,
        field: &str,
        stored: &StoredField,
    ) -> Result<()>;
    /// Every record of a village with its fields.
    fn village_records(&mut self, village: &str) -> Result<Vec<RecordState>>;
}

/// The feed devices pull, in server receive order, and the per-village checksums.
pub trait FeedRepo {
    /// The newest server sequence number (0 for none).
    fn feed_head(&mut self) -> Result<u64>;
    fn append_feed(
        &mut self,
        seq: u64,
        village: &str,
        origin_device: &str,
        item: &FeedItem,
    ) -> Result<()>;
    /// Up to `limit` entries of the villages starting with `area`, after `after` and up to
    /// `through`, leaving out what `device` itself sent (except conflicts, which it must see).
    fn feed_page(
        &mut self,
        area: &str,
        after: u64,
        through: u64,
        device: &str,
        limit: usize,
    ) -> Result<Vec<FeedEntry>>;
    fn checksum(&mut self, village: &str) -> Result<u64>;
    fn set_checksum(&mut self, village: &str, sum: u64) -> Result<()>;
    /// (village, checksum) of every village starting with `area`.
    fn checksums_in(&mut self, area: &str) -> Result<Vec<(String, u64)>>;
}

pub trait ConflictsRepo {
    fn conflict(&mut self, id: &str) -> Result<Option<ConflictInfo>>;
    fn save_conflict(&mut self, conflict: &ConflictInfo) -> Result<()>;
    /// Open conflicts of the villages starting with `area`, by id.
    fn open_conflicts_in(&mut self, area: &str) -> Result<Vec<ConflictInfo>>;
}

/// Submitted visits (immutable but for their status) and the contents they name.
pub trait VisitsRepo {
    /// A visit's village, server sequence number and body.
    fn visit(&mut self, id: &str) -> Result<Option<(String, u64, VisitRecord)>>;
    /// Stores a new visit, pushed by `device_id`, and the attachment contents it names.
    fn insert_visit(&mut self, visit: &VisitRecord, seq: u64, device_id: &str) -> Result<()>;
    fn update_visit(&mut self, visit: &VisitRecord, seq: u64) -> Result<()>;
}

/// What each device sent, for idempotency: the answer given to each (device, change).
pub trait DeviceChangesRepo {
    fn previous_ack(&mut self, device_id: &str, seq: u64) -> Result<Option<Ack>>;
    fn record_ack(&mut self, device_id: &str, seq: u64, ack: &Ack) -> Result<()>;
    fn device_seen(&mut self, device_id: &str, at: &str, clock_offset_ms: i64) -> Result<()>;
}

/// Members of the province sharing a resident ID, and the pairs flagged for reviewers.
pub trait DuplicatesRepo {
    /// Members other than `except`, not marked gone, whose `id_number` field holds `value`
    /// (its stored JSON text): (member, household, village).
    fn members_with_id_number(
        &mut self,
        value: &str,
        except: &str,
    ) -> Result<Vec<(String, String, String)>>;
    /// Records a pair (in member-id order); `false` when it was recorded already.
    fn flag_duplicate(&mut self, d: &PossibleDuplicate) -> Result<bool>;
    /// Open pairs with either village starting with `area`.
    fn duplicates_in(&mut self, area: &str) -> Result<Vec<PossibleDuplicate>>;
}

/// What a reviewer's merge moves: the members and the visits of a household.
pub trait MergesRepo {
    /// Files every member of `merged` under `survivor`; returns their ids.
    fn repoint_members(&mut self, merged: &str, survivor: &str) -> Result<Vec<String>>;
    /// The visits of a household: (server sequence number, body).
    fn visits_of_household(&mut self, household: &str) -> Result<Vec<(u64, VisitRecord)>>;
    /// Files a household and its members under another village.
    fn move_household_records(&mut self, household: &str, village: &str) -> Result<()>;
}

/// Reassignment: a user's former areas, and the changes handed to their villages' reviewers.
pub trait HandoversRepo {
    /// Records that `user_id` held `area` until `until` (replacing an earlier record).
    fn set_former_area(&mut self, user_id: &str, area: &str, until: &str) -> Result<()>;
    /// Forgets a former area the user holds again.
    fn drop_former_area(&mut self, user_id: &str, area: &str) -> Result<()>;
    /// The areas a user held, with when they stop counting.
    fn former_areas(&mut self, user_id: &str) -> Result<Vec<(String, String)>>;
    /// Keeps a handed-over change (`false`: kept already).
    fn insert_handover(&mut self, h: &Handover) -> Result<bool>;
    /// Handed-over changes of the villages starting with `area`, oldest first.
    fn handovers_in(&mut self, area: &str) -> Result<Vec<Handover>>;
}

/// The `members_with_id_number` query, the same on both storages (`$1`/`?1` alike).
pub(crate) const MEMBERS_WITH_ID_NUMBER: &str =
    "SELECT f.id, r.household_id, r.village_code FROM fields f
     JOIN records r ON r.entity = f.entity AND r.id = f.id
     WHERE f.entity = 'member' AND f.field = 'id_number' AND f.value = $1 AND f.id <> $2
       AND NOT EXISTS (SELECT 1 FROM fields s WHERE s.entity = 'member' AND s.id = f.id
                       AND s.field = 'status' AND s.value NOT IN ('\"present\"', 'null'))
     ORDER BY f.id LIMIT 20";

/// Everything a service function may touch inside one transaction.
pub trait Tx:
    UsersRepo
    + DevicesRepo
    + ServerAuditRepo
    + CatalogRepo
    + AuditRepo
    + ContentsRepo
    + RecordsRepo
    + FeedRepo
    + ConflictsRepo
    + VisitsRepo
    + DeviceChangesRepo
    + DuplicatesRepo
    + MergesRepo
    + HandoversRepo
{
}

impl<T> Tx for T where
    T: UsersRepo
        + DevicesRepo
        + ServerAuditRepo
        + CatalogRepo
        + AuditRepo
        + ContentsRepo
        + RecordsRepo
        + FeedRepo
        + ConflictsRepo
        + VisitsRepo
        + DeviceChangesRepo
        + DuplicatesRepo
        + MergesRepo
        + HandoversRepo
{
}

/// A storage's transactions: each runs `f` and commits, or rolls back on an error.
pub trait Transactions: Send + Sync {
    /// Where attachment contents live (shared by every node of a deployment).
    fn blobs(&self) -> &dyn BlobStore;
    /// A consistent snapshot for reading.
    fn read_tx(&self, f: &mut dyn FnMut(&mut dyn Tx) -> Result<()>) -> Result<()>;
    /// A transaction that writes, serialised with every other writer of what it touches.
    fn write_tx(&self, f: &mut dyn FnMut(&mut dyn Tx) -> Result<()>) -> Result<()>;
}

fn run<T>(
    db: &dyn Transactions,
    write: bool,
    f: impl FnOnce(&mut dyn Tx) -> Result<T>,
) -> Result<T> {
    let mut f = Some(f);
    let mut out = None;
    let mut body = |tx: &mut dyn Tx| -> Result<()> {
        if let Some(f) = f.take() {
            out = Some(f(tx)?);
        }
        Ok(())
    };
    if write {
        db.write_tx(&mut body)?;
    } else {
        db.read_tx(&mut body)?;
    }
    out.ok_or_else(|| crate::storage::ServerError::Storage("a transaction did not run".into()))
}

/// Runs `f` in a read transaction of `db`.
pub fn read<T>(db: &dyn Transactions, f: impl FnOnce(&mut dyn Tx) -> Result<T>) -> Result<T> {
    run(db, false, f)
}

/// Runs `f` in a write transaction of `db`.
pub fn write<T>(db: &dyn Transactions, f: impl FnOnce(&mut dyn Tx) -> Result<T>) -> Result<T> {
    run(db, true, f)
}

// ----- what every storage needs the same way ----------------------------------------------

/// A stored sequence number or count as the databases' signed 64-bit integer.
pub(crate) fn to_db(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A stored sequence number or count back (never negative as written).
pub(crate) fn from_db(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The upper bound of an area's range: codes are ASCII digits compared bytewise, so every code
/// starting with `prefix` sorts in [prefix, prefix + '~').
pub(crate) fn area_upper(prefix: &str) -> String {
    format!("{prefix}~")
}

/// A user row (id, role, areas as JSON).
pub(crate) fn user_from_row(id: String, role: &str, areas: &str) -> Result<UserInfo> {
    Ok(UserInfo {
        id,
        role: zoufang_protocol::messages::Role::parse(role)
            .ok_or_else(|| crate::storage::ServerError::Storage("unknown role stored".into()))?,
        areas: serde_json::from_str(areas)?,
    })
}

/// The kind column of a feed entry.
pub(crate) fn feed_kind(item: &FeedItem) -> &'static str {
    match item {
        FeedItem::Record { .. } => "record",
        FeedItem::Field { .. } => "field",
        FeedItem::Conflict { .. } => "conflict",
        FeedItem::Visit { .. } => "visit",
        FeedItem::VisitStatus { .. } => "visit_status",
        FeedItem::Merged { .. } => "merged",
    }
}

/// A village's records from its record rows (entity, id, household) and field rows (entity,
/// id, field, value JSON, version); fields of records not listed are left out.
pub(crate) fn assemble_records(
    village: &str,
    records: Vec<(String, String, Option<String>)>,
    fields: Vec<(String, String, String, String, u64)>,
) -> Result<Vec<RecordState>> {
    let mut out: std::collections::BTreeMap<(Entity, String), RecordState> =
        std::collections::BTreeMap::new();
    for (entity, id, household_id) in records {
        let entity = Entity::parse(&entity)
            .ok_or_else(|| crate::storage::ServerError::Storage("unknown entity stored".into()))?;
        let record = RecordState {
            entity,
            id: id.clone(),
            household_id,
            village_code: village.to_owned(),
            fields: std::collections::BTreeMap::new(),
        };
        out.insert((entity, id), record);
    }
    for (entity, id, field, value, version) in fields {
        let Some(entity) = Entity::parse(&entity) else {
            continue;
        };
        if let Some(rec) = out.get_mut(&(entity, id)) {
            let fv = zoufang_protocol::messages::FieldValue {
                value: serde_json::from_str(&value)?,
                version,
            };
            rec.fields.insert(field, fv);
        }
    }
    Ok(out.into_values().collect())
}
