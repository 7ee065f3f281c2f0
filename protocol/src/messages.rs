//! The sync protocol's messages, shared by the device and the server so both sides always
//! agree on the wire format. Bodies are JSON compressed with zstd; every message carries the
//! protocol version. `docs/protocol.md` describes the exchanges.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use zoufang_model::code_list::CodeList;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest decompressed message either side accepts (a defence against zip bombs).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Coordinator,
    TownshipStaff,
    CountyReviewer,
    Administrator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Coordinator => "coordinator",
            Self::TownshipStaff => "township_staff",
            Self::CountyReviewer => "county_reviewer",
            Self::Administrator => "administrator",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "coordinator" => Self::Coordinator,
            "township_staff" => Self::TownshipStaff,
            "county_reviewer" => Self::CountyReviewer,
            "administrator" => Self::Administrator,
            _ => return None,
        })
    }
    /// Who may resolve conflicts from the review screen (devices resolve through a push).
    pub fn can_review(self) -> bool {
        !matches!(self, Self::Coordinator)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub id: String,
    pub role: Role,
    /// Region-code prefixes the user may read and write (e.g. a village's 12 digits).
    pub areas: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    pub protocol: u32,
    pub enrollment_token: String,
    pub device_name: String,
    /// A store enrolled before (its token expired after a season offline, say) names the
    /// device it was: the new device is that one's successor, and its unsent changes, audit
    /// chain and uploads continue where they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predecessor: Option<Predecessor>,
}

impl EnrollRequest {
    /// A first enrolment (no predecessor).
    pub fn new(enrollment_token: &str, device_name: &str) -> Self {
        Self {
            protocol: PROTOCOL_VERSION,
            enrollment_token: enrollment_token.to_owned(),
            device_name: device_name.to_owned(),
            predecessor: None,
        }
    }
}

/// The device a store was enrolled as, proved by its token (an expired one still proves it).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Predecessor {
    pub device_id: String,
    pub device_token: String,
}

impl std::fmt::Debug for Predecessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Predecessor")
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollResponse {
    pub protocol: u32,
    pub device_id: String,
    /// Shown once; the server keeps only its hash.
    pub device_token: String,
    pub token_expires_at: String,
    pub user: UserInfo,
    pub server_time: String,
    /// The device this one succeeds, when the request named one and the server accepted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predecessor: Option<String>,
}

/// The record kinds that are edited field by field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entity {
    Household,
    Member,
}

impl Entity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Household => "household",
            Self::Member => "member",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "household" => Some(Self::Household),
            "member" => Some(Self::Member),
            _ => None,
        }
    }
}

/// A completed visit as it travels: immutable once submitted, idempotent by id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisitRecord {
    pub id: String,
    pub household_id: Option<String>,
    pub village_code: String,
    pub form_id: String,
    pub form_version: u32,
    pub visit_type: String,
    pub status: String,
    pub answers: Map<String, Json>,
    pub author: String,
    pub revision_of: Option<String>,
    pub void_reason: Option<String>,
    pub created_at: String,
    pub completed_at: Option<String>,
    pub signed_at: Option<String>,
    /// The photos and signatures the answers name; their contents follow separately
    /// (`/v1/attachments`), and the server holds the visit complete once it has them all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<AttachmentRecord>,
}

/// A photo or signature as it travels with its visit: the content is named by its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttachmentRecord {
    pub id: String,
    pub field_path: String,
    /// `photo` or `signature`.
    pub kind: String,
    pub hash_algorithm: crate::audit::HashAlgorithm,
    pub content_hash: String,
    pub size_bytes: u64,
    pub mime_type: String,
    /// Capture time and place, image size; a signature's signed-content hash.
    pub metadata: Map<String, Json>,
    pub created_at: String,
}

/// One change of a device's outbox (decoded by `crate::change_entry`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// Numbered per device, never reused: the server deduplicates on (device, seq).
    pub seq: u64,
    /// Hybrid logical clock of the device when the change was made.
    pub hlc: String,
    /// The device's wall clock then (UTC), for display; ordering uses server sequence numbers.
    pub device_time: String,
    #[serde(flatten)]
    pub op: ChangeOp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ChangeOp {
    CreateHousehold {
        id: String,
        village_code: String,
        fields: Map<String, Json>,
    },
    CreateMember {
        id: String,
        household_id: String,
        fields: Map<String, Json>,
    },
    /// One field of one record. `base` is the server version of the field the editor last saw
    /// (0: never seen). `resolves` names the conflict this edit settles.
    SetField {
        entity: Entity,
        id: String,
        field: String,
        value: Json,
        base: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resolves: Option<String>,
        /// The device's own earlier change of this field still waiting for its acknowledgement:
        /// its result is not a competing value.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<u64>,
    },
    SubmitVisit {
        visit: Box<VisitRecord>,
    },
    SetVisitStatus {
        id: String,
        status: String,
        reason: Option<String>,
        at: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushRequest {
    pub protocol: u32,
    /// The sending device, which must be the device of the bearer token: a body captured from
    /// one device and replayed with another device's token is refused.
    pub device_id: String,
    /// The device's clock when sending, to measure its offset from the server.
    pub device_time: String,
    pub changes: Vec<Change>,
    /// Audit entries written with these changes, riding in the same compressed body (their
    /// record ids are the changes' ids, so they cost little more): answered in
    /// [`PushResponse::audit`]. What is left goes up with `/v1/audit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditBatch>,
    /// Changes of this device the device takes the server to hold already: they went in the
    /// last moments before a cut took their answers. The server answers them first with what it
    /// recorded, and applies this message only if it holds every one; otherwise it refuses with
    /// `not_held` (409) and the device sends them again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Applied as sent.
    Applied,
    /// Someone else had already set the same value: nothing to do, no conflict.
    Unchanged,
    /// Another value landed since the base: both are kept, a person decides.
    Conflict,
    /// Refused (out of area, invalid, not allowed); the device keeps and lists it.
    Rejected,
}

/// The server's answer to one change, named by its device sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    pub seq: u64,
    pub outcome: Outcome,
    /// Server sequence number of the accepted change (the field's version afterwards).
    pub version: Option<u64>,
    /// The field's server value afterwards (the provisional value in a conflict).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict: Option<ConflictInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushResponse {
    pub protocol: u32,
    pub server_time: String,
    pub acks: Vec<Ack>,
    /// The answer to the request's audit entries (absent from a server that ignored them:
    /// they stay pending on the device and go up with `/v1/audit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditUploadResponse>,
}

/// One message of a streamed push's answer when the device asks for the answer as a stream
/// too (`Accept: application/vnd.zoufang.stream`): each applied message's acknowledgements,
/// sent the moment it is applied, while the rest of the push is still on its way; or, last,
/// why the server stopped. A cut then costs the device only the messages whose answers had
/// not come back, which it sends again (the server acknowledges a change it holds again,
/// without applying it twice) instead of asking what arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PushStreamAnswer {
    Applied(PushResponse),
    Refused(StreamRefusal),
}

/// Why the server stopped reading a streamed push whose answer had begun: the status and
/// error it would have answered with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRefusal {
    pub protocol: u32,
    pub status: u16,
    pub error: ErrorDetail,
}

/// `POST /v1/push/acks`: what the server recorded for these changes of the device (after a
/// streamed push was cut, the device learns which of its messages arrived). Answered as a
/// [`PushResponse`] with the acknowledgements the server holds (changes it never received are
/// absent) and, in `audit`, how far it holds the device's audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcksRequest {
    pub protocol: u32,
    pub device_id: String,
    pub seqs: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullRequest {
    pub protocol: u32,
    /// Last server sequence number applied, per assigned area (region-code prefix).
    pub cursors: BTreeMap<String, u64>,
    pub limit: u32,
    /// Entries per page of a streamed answer: with it, the answer is a message stream
    /// ([`crate::stream`]) of pages of at most `page` entries, `limit` in all, each page usable
    /// as soon as it arrives; without it (older devices), one [`PullResponse`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullResponse {
    pub protocol: u32,
    pub server_time: String,
    pub entries: Vec<FeedEntry>,
    pub cursors: BTreeMap<String, u64>,
    pub more: bool,
    /// Per village in scope, once the device is up to date (`more == false`): the checksum of
    /// the server's field state, to detect divergence and repair only that village.
    #[serde(default)]
    pub checksums: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldValue {
    pub value: Json,
    pub version: u64,
}

/// The full server state of one household or member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordState {
    pub entity: Entity,
    pub id: String,
    pub household_id: Option<String>,
    pub village_code: String,
    pub fields: BTreeMap<String, FieldValue>,
}

/// Decoded by hand (`feed_entry.rs`): serde's flatten of an internally tagged enum buffers and
/// clones every entry, a quarter of a pull's time on the phone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeedEntry {
    pub seq: u64,
    pub village_code: String,
    #[serde(flatten)]
    pub item: FeedItem,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FeedItem {
    Record {
        record: RecordState,
    },
    Field {
        entity: Entity,
        id: String,
        field: String,
        value: Json,
        version: u64,
    },
    Conflict {
        conflict: ConflictInfo,
    },
    Visit {
        visit: Box<VisitRecord>,
    },
    VisitStatus {
        id: String,
        status: String,
        reason: Option<String>,
        at: String,
    },
    /// A reviewer merged two registrations of one family: every member and visit of `merged`
    /// (drafts included, on a device) now belongs to `survivor`; `merged` stays as a tombstone.
    Merged {
        merged: String,
        survivor: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompetingValue {
    pub value: Json,
    pub user: String,
    pub device: String,
    /// When the server received it.
    pub received_at: String,
    /// The editing device's clock at the edit.
    pub device_time: String,
    pub seq: u64,
    /// The device's clock was far from the server's when it sent this.
    pub clock_skewed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictStatus {
    Open,
    Resolved,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConflictInfo {
    pub id: String,
    pub entity: Entity,
    pub entity_id: String,
    pub household_id: String,
    pub village_code: String,
    pub field: String,
    /// Every competing value, in server receive order.
    pub values: Vec<CompetingValue>,
    /// What the record shows until a person decides: the last value received.
    pub provisional: Json,
    pub status: ConflictStatus,
    pub resolution: Option<Json>,
    pub resolved_by: Option<String>,
    /// A resolving edit must have seen this version (its base covers every competing value).
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRequest {
    pub protocol: u32,
    pub village_code: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotResponse {
    pub protocol: u32,
    pub server_time: String,
    pub records: Vec<RecordState>,
    pub conflicts: Vec<ConflictInfo>,
    pub checksum: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogRequest {
    pub protocol: u32,
    /// Form versions the device has.
    pub forms: Vec<(String, u32)>,
    /// Code-list versions the device has.
    pub code_lists: BTreeMap<String, u32>,
    /// The first batch of the device's pending audit entries, riding on the request every sync
    /// makes first, so that a sync needs no round trip of its own for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditBatch>,
}

/// Audit entries of the sending device, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditBatch {
    pub chain_hash: crate::audit::HashAlgorithm,
    pub entries: Vec<crate::audit::AuditEntry>,
    /// With entries sent without their hashes: the hash of the last one (`audit::rehash`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogResponse {
    pub protocol: u32,
    pub server_time: String,
    /// Form definitions (JSON documents) the device does not have yet.
    pub forms: Vec<Json>,
    pub code_lists: Vec<CodeList>,
    /// The answer to the request's audit batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditUploadResponse>,
    /// The device's user as the server holds them now (their areas may have changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserInfo>,
    /// Days between visits per assistance category: a household of one has its next due date
    /// set by the server, not typed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub visit_frequencies: BTreeMap<String, u32>,
    /// The challenge this device answers to prove it holds an attachment's bytes (a server
    /// never tells a device it holds a content the device has not proved it has).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub possession_nonce: Option<String>,
    /// When the device's token expires now: each sync renews it (sliding expiry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_expires_at: Option<String>,
    /// When each form version was published (all of them, installed or not): a visit dated
    /// before its form existed is implausible.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub form_publications: Vec<FormPublication>,
    /// This server computes audit hashes itself and takes audit entries riding on pushes: the
    /// device may send entries without their hashes (`AuditBatch::head`) and with its changes.
    #[serde(default)]
    pub compact_audit: bool,
    /// The server answers a pull with a `page` as a message stream, and takes pushes as message
    /// streams (`crate::stream`).
    #[serde(default)]
    pub streams: bool,
    /// The server answers a streamed push as it applies it ([`PushStreamAnswer`]), when asked
    /// to: after a cut the device sends again what was not acknowledged instead of asking.
    #[serde(default)]
    pub answers_as_applied: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormPublication {
    pub form_id: String,
    pub version: u32,
    pub published_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConflictsResponse {
    pub protocol: u32,
    pub conflicts: Vec<ConflictInfo>,
}

/// Two present members holding one resident ID, flagged for the reviewers whose areas cover
/// both households (a coordinator is told only that the ID is registered elsewhere).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PossibleDuplicate {
    /// The smaller member id of the pair.
    pub member_a: String,
    pub household_a: String,
    pub village_a: String,
    pub member_b: String,
    pub household_b: String,
    pub village_b: String,
    pub found_at: String,
}

/// A change a device sent for a village its user no longer covers (their areas changed while it
/// waited in the outbox): kept for that village's reviewers instead of being refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Handover {
    pub device_id: String,
    pub seq: u64,
    pub user_id: String,
    pub village_code: String,
    pub change: Change,
    pub received_at: String,
}

/// `GET /v1/handovers`: the changes handed to a reviewer's villages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandoversResponse {
    pub protocol: u32,
    pub handovers: Vec<Handover>,
}

/// `GET /v1/duplicates`: a reviewer's open possible duplicates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DuplicatesResponse {
    pub protocol: u32,
    pub duplicates: Vec<PossibleDuplicate>,
}

/// `POST /v1/households/merge`: a reviewer merges `merged` into `survivor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeRequest {
    pub protocol: u32,
    pub survivor: String,
    pub merged: String,
}

/// `POST /v1/households/move`: a reviewer moves a household to another village they cover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveRequest {
    pub protocol: u32,
    pub household: String,
    pub village_code: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolveRequest {
    pub protocol: u32,
    pub value: Json,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// A content a device holds, by hash, with its size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentRef {
    pub content_hash: String,
    pub size_bytes: u64,
    /// The device's answer to the request's possession challenge: a keyed hash of the whole
    /// content under its nonce (`possession::ContentProof`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
}

/// `POST /v1/attachments/status`: how much of each content the server holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentStatusRequest {
    pub protocol: u32,
    pub hash_algorithm: crate::audit::HashAlgorithm,
    pub contents: Vec<ContentRef>,
    /// The nonce the contents' proofs answer, as the catalog issued it to this device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub possession_nonce: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentStatus {
    /// Stored, verified, and this device proved it holds it (it sent every byte, or answered
    /// the possession challenge): never to be sent again by it.
    Complete,
    /// Send from `received` on (this device's own upload; the server may hold the content
    /// from elsewhere, and says so only to a device that proves possession).
    Receiving,
    /// No visit the caller may see names this content (its visit is not pushed yet, or was
    /// refused): nothing to send now.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentState {
    pub content_hash: String,
    pub status: ContentStatus,
    /// Bytes the server holds, confirmed on its disk.
    pub received: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentStatusResponse {
    pub protocol: u32,
    pub contents: Vec<ContentState>,
}

/// The answer to `PUT /v1/attachments/{algorithm}/{hash}?offset=N`: what the server holds now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkResponse {
    pub protocol: u32,
    pub received: u64,
    pub complete: bool,
}

/// `POST /v1/audit`: the device's audit entries not yet acknowledged, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditUploadRequest {
    pub protocol: u32,
    pub device_id: String,
    pub chain_hash: crate::audit::HashAlgorithm,
    pub entries: Vec<crate::audit::AuditEntry>,
    /// With entries sent without their hashes: the hash of the last one (`audit::rehash`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditUploadResponse {
    pub protocol: u32,
    pub server_time: String,
    /// The server holds every entry up to this one.
    pub accepted_through: u64,
    /// Set when the entries do not continue the chain the server holds (an entry removed or
    /// altered on the device): the server keeps an alert for administrators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_break: Option<String>,
}

/// The body of every non-2xx response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub protocol: u32,
    pub error: ErrorDetail,
}

/// Compresses a message body.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, std::io::Error> {
    let json = serde_json::to_vec(message)?;
    zstd::bulk::compress(&json, 3)
}

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// The JSON of a body: zstd frames are decompressed (bounded); anything else is taken as plain
/// JSON, so error bodies stay readable with any HTTP tool.
fn json_bytes(body: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, DecodeError> {
    if body.starts_with(&ZSTD_MAGIC) {
        // Streamed, so memory grows with the real content; `bulk::decompress` would reserve the
        // whole 64 MB bound for every body, however small (found by fuzzing: 400 decodes/s).
        use std::io::Read;
        let mut json = Vec::new();
        zstd::stream::read::Decoder::new(body)
            .and_then(|d| d.take(MAX_MESSAGE_BYTES as u64 + 1).read_to_end(&mut json))
            .map_err(|_| DecodeError::Compression)?;
        if json.len() > MAX_MESSAGE_BYTES {
            return Err(DecodeError::Compression);
        }
        Ok(std::borrow::Cow::Owned(json))
    } else if body.len() > MAX_MESSAGE_BYTES {
        Err(DecodeError::Compression)
    } else {
        Ok(std::borrow::Cow::Borrowed(body))
    }
}

/// Parses one message's JSON (already decompressed), without quoting it in errors.
pub fn decode_json<T: for<'de> Deserialize<'de>>(json: &[u8]) -> Result<T, DecodeError> {
    serde_json::from_slice(json).map_err(|e| {
        // Position and category only: serde's own text can quote the offending value.
        DecodeError::Json(format!(
            "{:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ))
    })
}

/// Decompresses (bounded) and parses a message body.
pub fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, DecodeError> {
    decode_json(&json_bytes(body)?)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the body is not valid zstd, or too large once decompressed")]
    Compression,
    #[error("the body is not a valid message: {0}")]
    Json(String),
}

/// Reads the `protocol` field before anything else, so an old or future client gets a clear
/// "unsupported protocol" error rather than a parse error.
pub fn protocol_of(body: &[u8]) -> Option<u32> {
    #[derive(Deserialize)]
    struct Probe {
        protocol: u32,
    }
    let json = json_bytes(body).ok()?;
    serde_json::from_slice::<Probe>(&json)
        .ok()
        .map(|p| p.protocol)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bodies_decode_within_bounds_or_fail_cleanly() {
        let pull = PullRequest {
            protocol: PROTOCOL_VERSION,
            cursors: [("513431".to_owned(), 7)].into(),
            limit: 10,
            page: None,
        };
        let body = encode(&pull).unwrap();
        assert_eq!(decode::<PullRequest>(&body).unwrap(), pull);
        assert_eq!(
            decode::<PullRequest>(&serde_json::to_vec(&pull).unwrap()).unwrap(),
            pull
        );
        // Truncated frame, a frame followed by garbage, and a small body inflating past the bound.
        assert_eq!(
            decode::<PullRequest>(&body[..body.len() - 3]).unwrap_err(),
            DecodeError::Compression
        );
        let mut trailing = body.clone();
        trailing.extend_from_slice(b"garbage");
        assert_eq!(
            decode::<PullRequest>(&trailing).unwrap_err(),
            DecodeError::Compression
        );
        let bomb = zstd::bulk::compress(&vec![b' '; MAX_MESSAGE_BYTES + 1], 19).unwrap();
        assert!(bomb.len() < 64 * 1024);
        assert_eq!(
            decode::<PullRequest>(&bomb).unwrap_err(),
            DecodeError::Compression
        );
        assert_eq!(protocol_of(&bomb), None);
    }

    /// Both shapes of a streamed push's answer read back as themselves, an ack that carries a
    /// value and a conflict included; a message of neither shape is an error.
    #[test]
    fn a_streamed_push_answer_is_acks_or_a_refusal() {
        let applied = PushStreamAnswer::Applied(PushResponse {
            protocol: PROTOCOL_VERSION,
            server_time: "2026-12-06T03:00:00Z".into(),
            acks: vec![Ack {
                seq: 7,
                outcome: Outcome::Applied,
                version: Some(3),
                value: Some(serde_json::json!({"error": "a value named like a refusal"})),
                conflict: None,
                code: None,
                message: None,
            }],
            audit: None,
        });
        let refused = PushStreamAnswer::Refused(StreamRefusal {
            protocol: PROTOCOL_VERSION,
            status: 400,
            error: ErrorDetail {
                code: "bad_message".into(),
                message: "line 1".into(),
            },
        });
        for answer in [applied, refused] {
            let json = serde_json::to_vec(&answer).unwrap();
            assert_eq!(
                serde_json::from_slice::<PushStreamAnswer>(&json).unwrap(),
                answer
            );
        }
        assert!(serde_json::from_str::<PushStreamAnswer>(r#"{"protocol":1}"#).is_err());
    }
}
