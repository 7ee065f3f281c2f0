//! The records the API hands out: households, members, visits and summaries.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use uuid::Uuid;

/// Relationship code of the household head (GB/T 4761-2008).
pub const HEAD_RELATIONSHIP: &str = "02";

/// How the store writes an instant: UTC, RFC 3339, milliseconds.
pub(crate) fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A new record id: UUIDv7, so ids sort by creation.
pub(crate) fn new_id() -> String {
    Uuid::now_v7().to_string()
}

/// Where a visit is in its life. Queued and synced states come with sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VisitStatus {
    Draft,
    Completed,
    Signed,
    Void,
}

impl VisitStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Completed => "completed",
            Self::Signed => "signed",
            Self::Void => "void",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "draft" => Self::Draft,
            "completed" => Self::Completed,
            "signed" => Self::Signed,
            "void" => Self::Void,
            _ => return None,
        })
    }
}

/// A household as a list shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HouseholdSummary {
    pub id: String,
    pub village_code: String,
    pub head_name: Option<String>,
    pub next_visit_due: Option<String>,
    /// `active`, or what ended its visits (`moved_away`, `all_deceased`...).
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Member {
    pub id: String,
    pub household_id: String,
    /// The member's fields by record name (`name`, `id_number`, `relationship`...).
    pub fields: Map<String, Json>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Household {
    pub id: String,
    pub village_code: String,
    pub head_name: Option<String>,
    pub next_visit_due: Option<String>,
    /// The household's fields by record name (`phone`, `urban_rural`, `address`...).
    pub fields: Map<String, Json>,
    /// Members present.
    pub members: Vec<Member>,
    /// Members who left the household, died or were found duplicates (their `status` says
    /// which): kept, never deleted.
    pub former_members: Vec<Member>,
    pub created_at: String,
    pub updated_at: String,
}

/// What a desk user or an import supplies to create a household.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewHousehold {
    pub village_code: String,
    #[serde(default)]
    pub fields: Map<String, Json>,
    #[serde(default)]
    pub members: Vec<Map<String, Json>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Visit {
    pub id: String,
    pub household_id: Option<String>,
    pub form_id: String,
    pub form_version: u32,
    pub visit_type: String,
    pub status: VisitStatus,
    pub answers: Map<String, Json>,
    pub author: String,
    pub revision_of: Option<String>,
    pub void_reason: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub completed_at: Option<String>,
    pub signed_at: Option<String>,
}

/// A prefilled value someone else changed after the draft was opened: completing leaves it as
/// they set it unless the coordinator changed it too (then the server keeps both, a conflict).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangedSinceOpened {
    /// The answer's path in the draft (`household_phone`, `members[1].id_number`).
    pub path: String,
    /// The record's value the draft was opened with (its prefilled answer).
    pub opened_with: Json,
    /// The record's value now (a colleague's correction, a reviewer's resolution).
    pub now: Json,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VisitSummary {
    pub id: String,
    pub household_id: Option<String>,
    pub visit_type: String,
    pub status: VisitStatus,
    pub author: String,
    pub updated_at: String,
}

/// Totals for a coordinator's home screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StoreCounts {
    /// Active households.
    pub households: u64,
    /// Households that moved away, died out, were merged or registered in error.
    pub households_inactive: u64,
    /// Members present.
    pub members: u64,
    pub drafts: u64,
    pub completed: u64,
    pub signed: u64,
    pub void: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachmentKind {
    Photo,
    Signature,
}

impl AttachmentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Photo => "photo",
            Self::Signature => "signature",
        }
    }
}

/// The metadata of a photo or signature being added to a draft. Capture time and location
/// belong in `metadata`, not in the image file (which is stripped of them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAttachment {
    /// The answer it fills, e.g. `house_exterior_photo`.
    pub field_path: String,
    pub kind: AttachmentKind,
    /// SHA-256 of the stored file, lowercase hex.
    pub content_hash: String,
    pub size_bytes: u64,
    pub mime_type: String,
    #[serde(default)]
    pub metadata: Map<String, Json>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attachment {
    pub id: String,
    pub visit_id: String,
    pub field_path: String,
    pub kind: AttachmentKind,
    pub content_hash: String,
    pub size_bytes: u64,
    pub mime_type: String,
    pub metadata: Map<String, Json>,
    pub created_at: String,
}
