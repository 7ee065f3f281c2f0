//! Photos and signatures of a draft: prepared by `media`, stored content-addressed in the store
//! with the answer that names them, in one transaction.

use std::path::Path;

use serde_json::{Map, Value as Json, json};

use super::Action;
use super::Collector;
use crate::error::{Error, Result};
use crate::media::{self, MediaError, PhotoLimits, PreparedImage};
use crate::records::{Attachment, AttachmentKind, NewAttachment, new_id, timestamp};
use crate::store;
use zoufang_model::engine;
use zoufang_model::form::{FieldKind, ItemRef};

/// The largest content a store takes: far above the ~500 KB a recompressed photo needs.
const MAX_CONTENT_BYTES: u64 = 50 * 1024 * 1024;

fn media_error(e: MediaError) -> Error {
    Error::InvalidValue {
        field: "image".into(),
        code: e.code(),
    }
}

/// Checks what a caller says of an attachment before anything is stored.
fn check_new(new: &NewAttachment) -> Result<()> {
    let hash_ok =
        new.content_hash.len() == 64 && new.content_hash.bytes().all(|b| b.is_ascii_hexdigit());
    if !hash_ok {
        return Err(Error::InvalidValue {
            field: "content_hash".into(),
            code: "attachment_hash",
        });
    }
    if new.size_bytes > MAX_CONTENT_BYTES {
        return Err(Error::InvalidValue {
            field: "size_bytes".into(),
            code: "attachment_size",
        });
    }
    if !matches!(
        new.mime_type.as_str(),
        "image/jpeg" | "image/png" | "image/webp"
    ) {
        return Err(Error::InvalidValue {
            field: "mime_type".into(),
            code: "attachment_type",
        });
    }
    Ok(())
}

impl Collector {
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
        limits: &PhotoLimits,
    ) -> Result<Attachment> {
        let prepared = media::prepare_photo(image, limits).map_err(media_error)?;
        self.store_prepared(visit_id, field_path, AttachmentKind::Photo, prepared)
    }

    /// As [`Self::add_photo`], from the file the camera wrote (read once, bounded in size).
    pub fn add_photo_file(
        &self,
        visit_id: &str,
        field_path: &str,
        file: &Path,
        limits: &PhotoLimits,
    ) -> Result<Attachment> {
        let too_large = std::fs::metadata(file)
            .map(|m| m.len() > media::MAX_INPUT_BYTES as u64)
            .map_err(|_| Error::InvalidInput("the photo file cannot be read".into()))?;
        if too_large {
            return Err(media_error(MediaError::TooLarge));
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
        let prepared = media::prepare_signature(image).map_err(media_error)?;
        self.store_prepared(visit_id, field_path, AttachmentKind::Signature, prepared)
    }

    fn store_prepared(
        &self,
        visit_id: &str,
        field_path: &str,
        kind: AttachmentKind,
        prepared: PreparedImage,
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
        self.read(|c| store::attachments::blob(c, content_hash))
    }

    /// Removes an attachment from a draft: its answer is cleared, and its content deleted once no
    /// attachment names it.
    pub fn remove_attachment(&self, visit_id: &str, attachment_id: &str) -> Result<()> {
        self.require_user()?;
        self.edit_draft(
            visit_id,
            |tx, form, answers| {
                let (path, hash) = store::attachments::find(tx, visit_id, attachment_id)?;
                engine::set_answer(form, answers, &path, Json::Null)?;
                store::attachments::delete(tx, attachment_id, hash.as_deref())
            },
            ("remove_attachment", None),
        )?;
        tracing::debug!(attachment = %attachment_id, "attachment removed from a draft");
        Ok(())
    }

    fn insert_attachment(
        &self,
        visit_id: &str,
        new: &NewAttachment,
        content: Option<&[u8]>,
    ) -> Result<Attachment> {
        self.require_user()?;
        check_new(new)?;
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
                    return Err(Error::InvalidValue {
                        field: "field_path".into(),
                        code: "attachment_field",
                    });
                }
                // A signature binds to the visit as it is now (signature fields aside).
                if new.kind == AttachmentKind::Signature {
                    let signed = self.visit_content_hash(tx, form, visit_id, answers)?;
                    attachment
                        .metadata
                        .insert(super::signing::SIGNED_CONTENT.into(), Json::from(signed));
                }
                let answer = Json::from(attachment.id.clone());
                engine::set_answer(form, answers, &new.field_path, answer)?;
                // A new photo in the field replaces the one it held; its content goes once
                // nothing names it (after the new row, which may name the same content).
                let replaced = store::attachments::ids(tx, visit_id, Some(&new.field_path))?;
                if let Some(bytes) = content {
                    store::attachments::put_blob(
                        tx,
                        &attachment.content_hash,
                        bytes,
                        &attachment.created_at,
                    )?;
                }
                for (old, _) in &replaced {
                    store::attachments::delete(tx, old, None)?;
                }
                store::attachments::insert(tx, &attachment)?;
                let action = Action {
                    entity: "attachment",
                    entity_id: &attachment.id,
                    op: "create",
                    field: Some(visit_id),
                };
                self.audit_action(tx, action)?;
                for (_, hash) in &replaced {
                    store::attachments::collect_blob(tx, hash.as_deref())?;
                }
                Ok(())
            },
            ("set_answer", Some(&new.field_path)),
        )?;
        Ok(attachment)
    }

    /// The attachments recorded for a visit, oldest first.
    pub fn attachments_of_visit(&self, visit_id: &str) -> Result<Vec<Attachment>> {
        self.read(|c| store::attachments::of_visit(c, visit_id))
    }
}
