//! The facade's side of sync: enrolling, syncing (the engine driven over a transport), what
//! the sync screen shows, conflicts and their resolution, and the outbox entries each user
//! action writes.

use std::collections::BTreeMap;
use std::io::{self, BufReader};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, Transaction};
use serde_json::Value as Json;

use super::{Action, Collector};
use crate::error::{Error, Result};
use crate::records::{Visit, VisitStatus, timestamp};
use crate::store::{self, households, outbox, server_view};
use crate::sync::apply;
use crate::sync::driver::{self, CancelFlag};
use crate::sync::engine::{SyncConfig, SyncEngine, SyncListener, SyncReport};
use crate::sync::hlc::Hlc;
use crate::sync::settings::SyncSettings;
use crate::sync::status::{PendingAttachments, RejectedChange, SyncStatus};
use crate::sync::transport::{RetryPolicy, Transport};

use zoufang_protocol::audit::HashAlgorithm;
use zoufang_protocol::messages::{
    Ack, AttachmentRecord, ChangeOp, ConflictInfo, ContentRef, Entity, Outcome, PullResponse,
    SnapshotResponse, UserInfo, VisitRecord,
};

/// Bytes read from the store per piece while verifying a content.
const READ_PIECE: usize = 256 * 1024;

impl Collector {
    pub(crate) fn sync_settings(&self) -> Result<SyncSettings> {
        self.read(SyncSettings::load)
    }

    /// When a form version was published, as the server last said (`None` before any sync).
    pub(crate) fn form_published_at(
        &self,
        form_id: &str,
        version: u32,
    ) -> Result<Option<DateTime<Utc>>> {
        self.read(|c| form_published_at(c, form_id, version))
    }

    pub(crate) fn update_settings(
        &self,
        f: impl FnOnce(&mut SyncSettings),
    ) -> Result<SyncSettings> {
        self.write(|tx| {
            let mut s = SyncSettings::load(tx)?;
            f(&mut s);
            s.save(tx)?;
            Ok(s)
        })
    }

    /// Continues the clock after a restart: never behind anything already stamped.
    pub(crate) fn restore_hlc(&self) -> Result<()> {
        let (from_outbox, stored) =
            self.read(|c| Ok((outbox::last_hlc(c)?, SyncSettings::load(c)?.hlc)))?;
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

    /// Queues an edit of one field with the server version its editor saw: `seen`, or the one
    /// the phone knows now.
    pub(crate) fn enqueue_field_edit(
        &self,
        tx: &Transaction<'_>,
        at: &str,
        (entity, id, field): (Entity, &str, &str),
        value: &Json,
        resolves: Option<(&str, u64)>,
        seen: Option<u64>,
    ) -> Result<()> {
        let seen = match seen {
            Some(v) => v,
            None => apply::server_field(tx, entity, id, field)?.map_or(0, |f| f.version),
        };
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
                match apply::apply_ack(tx, ack, &at)? {
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
            if response.more {
                store::bulk::begin_if_empty(tx)?;
            }
            apply::apply_pull(tx, response, &at)
        })
    }

    /// Builds what a first pull set aside (`store::bulk`); a no-op otherwise.
    pub(crate) fn finish_bulk_load(&self) -> Result<()> {
        store::bulk::finish(&mut self.db.writer.lock())
    }

    pub(crate) fn local_checksums(&self) -> Result<BTreeMap<String, u64>> {
        self.read(server_view::checksums)
    }

    /// Replaces the server view of one village with the server's snapshot and recomputes its
    /// checksum. Local edits still waiting in the outbox stay on top.
    pub(crate) fn apply_snapshot(&self, village: &str, snapshot: &SnapshotResponse) -> Result<()> {
        let at = timestamp(self.now());
        self.write(|tx| apply::apply_snapshot(tx, village, snapshot, &at))
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
            token_expires_at: settings.token_expires_at,
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
            let target = (info.entity, info.entity_id.as_str(), info.field.as_str());
            self.enqueue_field_edit(tx, &at, target, &value, resolves, None)
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

impl Collector {
    /// Completed visits whose attachments have not all reached the server, oldest first: what
    /// the app shows as "photos still to send".
    pub fn visits_with_pending_attachments(&self) -> Result<Vec<PendingAttachments>> {
        let rows = self.read(store::attachments::pending_by_visit)?;
        Ok(rows
            .into_iter()
            .map(
                |(visit_id, attachments, bytes, visit_synced)| PendingAttachments {
                    visit_id,
                    attachments,
                    bytes,
                    visit_synced,
                },
            )
            .collect())
    }

    /// Contents waiting for upload, with their byte total (each content counted once).
    pub(crate) fn pending_upload_totals(&self) -> Result<(u64, u64)> {
        self.read(store::attachments::pending_totals)
    }

    /// Contents to upload now: not yet held by the server, named by a visit the server has
    /// acknowledged (a visit's data goes first; its attachments follow). Oldest first.
    pub(crate) fn uploadable_contents(&self) -> Result<Vec<ContentRef>> {
        self.read(store::attachments::uploadable)
    }

    /// `len` bytes of a content from `offset` (fewer at its end).
    pub(crate) fn read_content(
        &self,
        content_hash: &str,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>> {
        self.read(|conn| {
            let blob = store::attachments::open_blob(conn, content_hash)?;
            let start = usize::try_from(offset)
                .ok()
                .filter(|s| *s <= blob.len())
                .ok_or_else(|| Error::InvalidInput("an offset beyond the content".into()))?;
            let mut buf = vec![0; len.min(blob.len() - start)];
            blob.read_at_exact(&mut buf, start)?;
            Ok(buf)
        })
    }

    /// Does the stored content still hash to its name? Checked before uploading, so a damaged
    /// content is reported on the device instead of being refused by the server at its end.
    pub(crate) fn content_intact(&self, content_hash: &str) -> Result<bool> {
        let mut hasher = self.hash_algorithm().hasher();
        self.read(|conn| {
            let blob = store::attachments::open_blob(conn, content_hash)?;
            io::copy(&mut BufReader::with_capacity(READ_PIECE, blob), &mut hasher)
                .map_err(|e| Error::Storage(format!("a stored content could not be read ({e})")))?;
            Ok(())
        })?;
        Ok(hasher.finish() == content_hash)
    }

    /// The keyed hash of a whole stored content under `nonce` (a possession proof).
    pub(crate) fn content_proof(&self, content_hash: &str, nonce: &str) -> Result<String> {
        let mut proof =
            zoufang_protocol::possession::ContentProof::new(self.hash_algorithm(), nonce);
        self.read(|conn| {
            let blob = store::attachments::open_blob(conn, content_hash)?;
            io::copy(&mut BufReader::with_capacity(READ_PIECE, blob), &mut proof)
                .map_err(|e| Error::Storage(format!("a stored content could not be read ({e})")))?;
            Ok(())
        })?;
        Ok(proof.finish())
    }

    /// The server holds this content whole and verified.
    pub(crate) fn mark_uploaded(&self, content_hash: &str) -> Result<()> {
        self.write(|tx| store::attachments::mark_uploaded(tx, content_hash))
    }
}

impl Collector {
    /// Enrols this device with a server using a one-time enrolment token from an
    /// administrator, and signs its user in.
    pub fn enroll(
        &self,
        transport: &dyn Transport,
        enrollment_token: &str,
        device_name: &str,
    ) -> Result<UserInfo> {
        let _running = self.sync_lock.try_lock().ok_or(Error::SyncRunning)?;
        let mut engine = SyncEngine::enrolment(self, enrollment_token, device_name)?;
        let clock = || self.now();
        driver::drive(
            &mut engine,
            transport,
            &RetryPolicy::default(),
            &clock,
            None,
            None,
        )?;
        engine
            .enrolled()
            .cloned()
            .ok_or_else(|| Error::Transport("enrolment got no answer".into()))
    }

    /// Syncs with the server: safe to interrupt at any point and to run while the user keeps
    /// editing. Progress goes to `listener`; `cancel` stops it at the next step.
    pub fn sync(
        &self,
        transport: &dyn Transport,
        listener: Option<&dyn SyncListener>,
        cancel: Option<&CancelFlag>,
    ) -> Result<SyncReport> {
        self.sync_with(transport, SyncConfig::default(), listener, cancel)
    }

    pub fn sync_with(
        &self,
        transport: &dyn Transport,
        config: SyncConfig,
        listener: Option<&dyn SyncListener>,
        cancel: Option<&CancelFlag>,
    ) -> Result<SyncReport> {
        let _running = self.sync_lock.try_lock().ok_or(Error::SyncRunning)?;
        let mut engine = SyncEngine::new(self, config)?;
        self.run(&mut engine, transport, &config.retry, listener, cancel)?;
        engine.finish()
    }

    /// Downloads a complete attachment content from the server (a reviewer opening a visit's
    /// photo), checked against its hash. A wipe order met on the way is carried out.
    pub fn fetch_attachment_content(
        &self,
        transport: &dyn Transport,
        algorithm: HashAlgorithm,
        content_hash: &str,
    ) -> Result<Vec<u8>> {
        let _running = self.sync_lock.try_lock().ok_or(Error::SyncRunning)?;
        let mut engine = SyncEngine::download(self, algorithm, content_hash)?;
        self.run(&mut engine, transport, &RetryPolicy::default(), None, None)?;
        engine
            .take_download()
            .ok_or_else(|| Error::Transport("the download got no answer".into()))
    }

    /// Drives `engine` to its end, and destroys the store if the server ordered a wipe.
    fn run(
        &self,
        engine: &mut SyncEngine<'_, Self>,
        transport: &dyn Transport,
        retry: &RetryPolicy,
        listener: Option<&dyn SyncListener>,
        cancel: Option<&CancelFlag>,
    ) -> Result<()> {
        let clock = || self.now();
        let driven = driver::drive(engine, transport, retry, &clock, listener, cancel);
        // A pull that ended early (a cut, a failure) leaves no index set aside; the sync's own
        // error, if any, is the one reported.
        let finished = if engine.wiped() {
            Ok(())
        } else {
            self.finish_bulk_load()
        };
        driven?;
        finished?;
        if engine.wiped() {
            self.db.destroy()?;
            return Err(Error::DeviceWiped);
        }
        Ok(())
    }
}

/// When a form version was published, as the sync settings in `conn` hold it.
pub(crate) fn form_published_at(
    conn: &Connection,
    form_id: &str,
    version: u32,
) -> Result<Option<DateTime<Utc>>> {
    Ok(SyncSettings::load(conn)?
        .form_publications
        .iter()
        .find(|p| p.form_id == form_id && p.version == version)
        .and_then(|p| DateTime::parse_from_rfc3339(&p.published_at).ok())
        .map(|t| t.to_utc()))
}
