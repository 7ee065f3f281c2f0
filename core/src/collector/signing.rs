//! Signatures bound to what was signed: when a signature is added to a draft, it records a hash
//! of the visit's content at that moment — the answers as typed (without signature fields,
//! calculated values and the end time, which completion fills) and the content hashes of its
//! other attachments. If an answer or a photo changes afterwards, the signature no longer
//! matches: it is listed as stale and the visit cannot be completed until it is signed again.

use std::collections::HashSet;

use serde_json::{Map, Value as Json};

use super::Collector;
use crate::error::Result;
use crate::store;
use zoufang_model::engine::Problem;
use zoufang_model::form::{FieldKind, Form, Severity};

/// Metadata key of a signature attachment holding the content hash it signed.
pub(crate) const SIGNED_CONTENT: &str = "signed_content";

/// A signature of a visit and whether it still matches the visit's content.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SignatureState {
    pub field_path: String,
    pub attachment_id: String,
    pub valid: bool,
}

/// The answers without what signing does not cover (hashed in the canonical JSON form).
fn signed_answers(form: &Form, answers: &Map<String, Json>) -> Json {
    fn strip(unsigned: &HashSet<&str>, value: &Json) -> Json {
        match value {
            Json::Object(map) => Json::Object(
                map.iter()
                    .filter(|(k, _)| !unsigned.contains(k.as_str()))
                    .map(|(k, v)| (k.clone(), strip(unsigned, v)))
                    .collect(),
            ),
            Json::Array(items) => Json::Array(items.iter().map(|v| strip(unsigned, v)).collect()),
            other => other.clone(),
        }
    }
    let unsigned: HashSet<&str> = form
        .fields
        .iter()
        .filter(|f| matches!(f.kind, FieldKind::Signature | FieldKind::Calculate))
        .map(|f| f.name.as_str())
        .chain(["ended_at"])
        .collect();
    strip(&unsigned, &Json::Object(answers.clone()))
}

impl Collector {
    /// The hash signatures bind to: answers as typed and the other attachments' contents.
    pub(crate) fn visit_content_hash(
        &self,
        conn: &rusqlite::Connection,
        form: &Form,
        visit_id: &str,
        answers: &Map<String, Json>,
    ) -> Result<String> {
        let attachments = store::attachments::photo_hashes(conn, visit_id)?;
        let content = serde_json::json!({
            "answers": signed_answers(form, answers),
            "attachments": attachments,
        });
        Ok(self.content_hash(&zoufang_protocol::canonical::to_vec(&content)))
    }

    /// Every signature of a visit, and whether it still matches the visit's content.
    pub fn signatures(&self, visit_id: &str) -> Result<Vec<SignatureState>> {
        let visit = self.load_visit(visit_id)?;
        let form = self.form(&visit.form_id, visit.form_version)?;
        let mut states =
            self.read(|c| self.signature_states(c, &form, visit_id, &visit.answers))?;
        if visit.status != crate::records::VisitStatus::Draft {
            // Completion refuses stale signatures, then fills the end time, defaults and
            // household links, and the visit never changes again: its signatures stand as
            // checked at completion.
            for s in &mut states {
                s.valid = true;
            }
        }
        Ok(states)
    }

    pub(crate) fn signature_states(
        &self,
        conn: &rusqlite::Connection,
        form: &Form,
        visit_id: &str,
        answers: &Map<String, Json>,
    ) -> Result<Vec<SignatureState>> {
        let now = self.visit_content_hash(conn, form, visit_id, answers)?;
        let rows = store::attachments::signatures(conn, visit_id)?;
        Ok(rows
            .into_iter()
            .map(|(attachment_id, field_path, metadata)| {
                let signed = serde_json::from_str::<Json>(&metadata).ok().and_then(|m| {
                    m.get(SIGNED_CONTENT)
                        .and_then(Json::as_str)
                        .map(str::to_owned)
                });
                SignatureState {
                    valid: signed.as_deref() == Some(now.as_str()),
                    field_path,
                    attachment_id,
                }
            })
            .collect())
    }

    /// Problems for signatures that no longer match (they block completion).
    pub(crate) fn stale_signature_problems(
        &self,
        conn: &rusqlite::Connection,
        form: &Form,
        visit_id: &str,
        answers: &Map<String, Json>,
    ) -> Result<Vec<Problem>> {
        Ok(self
            .signature_states(conn, form, visit_id, answers)?
            .into_iter()
            .filter(|s| !s.valid)
            .map(|s| Problem {
                path: s.field_path,
                code: "signature_stale".into(),
                severity: Severity::Error,
                message_zh: "签名后内容已修改，请重新签名".into(),
                message_en: "The visit changed after this signature; sign again".into(),
            })
            .collect())
    }
}
