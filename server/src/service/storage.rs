//! The `Storage` the HTTP layer calls, for any storage with transactions over the
//! repositories: each call opens one transaction and runs the service function in it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use zoufang_model::code_list::CodeList;
use zoufang_protocol::audit::{AuditEntry, HashAlgorithm};
use zoufang_protocol::messages::{
    Ack, AuditUploadRequest, AuditUploadResponse, CatalogRequest, Change, ConflictInfo, ContentRef,
    ContentState, EnrollRequest, Entity, PullRequest, PullResponse, RecordState, SnapshotResponse,
    UserInfo,
};

use super::{
    access, admin, attachments, audit, catalog, due, handover, merges, possession, pull, push,
};
use crate::blobs::ContentKey;
use crate::repo::{self, Transactions};
use crate::storage::{DeviceAuth, DeviceInfo, Enrolled, PossibleDuplicate, Result, Stats, Storage};

/// Every storage that offers transactions over the repositories is a `Storage`: the rules are
/// the service's, the same for each.
impl<D: Transactions + 'static> Storage for D {
    fn create_user(&self, user: &UserInfo, now: DateTime<Utc>) -> Result<()> {
        repo::write(self, |tx| admin::create_user(tx, user, now))
    }

    fn set_areas(&self, user_id: &str, areas: &[String]) -> Result<()> {
        repo::write(self, |tx| admin::set_areas(tx, user_id, areas, Utc::now()))
    }

    fn users(&self) -> Result<Vec<UserInfo>> {
        repo::read(self, |tx| admin::users(tx))
    }

    fn issue_enrollment(
        &self,
        user_id: &str,
        valid_for: Duration,
        now: DateTime<Utc>,
    ) -> Result<String> {
        repo::write(self, |tx| {
            admin::issue_enrollment(tx, user_id, valid_for, now)
        })
    }

    fn revoke_device(&self, device_id: &str, now: DateTime<Utc>) -> Result<()> {
        repo::write(self, |tx| admin::revoke_device(tx, device_id, now))
    }

    fn devices(&self) -> Result<Vec<DeviceInfo>> {
        repo::read(self, |tx| admin::devices(tx))
    }

    fn publish_form(&self, definition_json: &str, now: DateTime<Utc>) -> Result<(String, u32)> {
        repo::write(self, |tx| catalog::publish_form(tx, definition_json, now))
    }

    fn publish_code_list(&self, list: &CodeList, now: DateTime<Utc>) -> Result<()> {
        repo::write(self, |tx| catalog::publish_code_list(tx, list, now))
    }

    fn attachment_status(
        &self,
        auth: &DeviceAuth,
        algorithm: HashAlgorithm,
        contents: &[ContentRef],
        nonce: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Vec<ContentState>> {
        attachments::status(self, self.blobs(), auth, algorithm, contents, nonce, now)
    }

    fn possession_nonce(&self, auth: &DeviceAuth, now: DateTime<Utc>) -> Result<String> {
        Ok(possession::issue(
            &possession::secret(self)?,
            &auth.device_id,
            now,
        ))
    }

    fn append_attachment(
        &self,
        auth: &DeviceAuth,
        key: &ContentKey,
        size: u64,
        offset: u64,
        bytes: &[u8],
        now: DateTime<Utc>,
    ) -> Result<ContentState> {
        let blobs = self.blobs();
        attachments::append(self, blobs, auth, key, size, offset, bytes, now)
    }

    fn attachment_content(&self, auth: &DeviceAuth, key: &ContentKey) -> Result<Vec<u8>> {
        attachments::content(self, self.blobs(), auth, key)
    }

    fn visits_awaiting_attachments(&self) -> Result<Vec<String>> {
        attachments::awaiting(self)
    }

    fn stats(&self) -> Result<Stats> {
        repo::read(self, |tx| catalog::stats(tx))
    }

    fn enroll(
        &self,
        request: &EnrollRequest,
        lifetime: Duration,
        now: DateTime<Utc>,
    ) -> Result<Enrolled> {
        repo::write(self, |tx| access::enroll(tx, request, lifetime, now))
    }

    fn renew_token(
        &self,
        auth: &DeviceAuth,
        lifetime: Duration,
        now: DateTime<Utc>,
    ) -> Result<String> {
        match &auth.token_expires_at {
            // Most syncs: nothing to write, no write transaction taken.
            Some(current) if !access::renewal_due(auth, lifetime, now) => Ok(current.clone()),
            _ => repo::write(self, |tx| access::renew(tx, auth, lifetime, now)),
        }
    }

    fn authenticate(&self, device_token: &str, now: DateTime<Utc>) -> Result<DeviceAuth> {
        repo::read(self, |tx| {
            access::authenticate(tx, device_token, now, false)
        })
    }

    fn authenticate_for_audit(&self, device_token: &str, now: DateTime<Utc>) -> Result<DeviceAuth> {
        repo::read(self, |tx| access::authenticate(tx, device_token, now, true))
    }

    fn request_wipe(&self, device_id: &str, now: DateTime<Utc>) -> Result<()> {
        repo::write(self, |tx| admin::request_wipe(tx, device_id, now))
    }

    fn upload_audit(
        &self,
        auth: &DeviceAuth,
        request: &AuditUploadRequest,
        now: DateTime<Utc>,
    ) -> Result<AuditUploadResponse> {
        repo::write(self, |tx| audit::upload(tx, auth, request, now))
    }

    fn device_audit(&self, device_id: &str) -> Result<Vec<AuditEntry>> {
        repo::read(self, |tx| audit::device_audit(tx, device_id))
    }

    fn verify_audit(&self) -> Result<Vec<String>> {
        repo::read(self, |tx| audit::verify(tx))
    }

    fn catalog(&self, request: &CatalogRequest) -> Result<(Vec<Json>, Vec<CodeList>)> {
        repo::read(self, |tx| catalog::catalog(tx, request))
    }

    fn form_publications(&self) -> Result<Vec<zoufang_protocol::messages::FormPublication>> {
        repo::read(self, |tx| tx.form_publications())
    }

    fn push(
        &self,
        auth: &DeviceAuth,
        changes: &[Change],
        device_now: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Ack>> {
        repo::write(self, |tx| push::push(tx, auth, changes, device_now, now))
    }

    fn recorded_acks(&self, auth: &DeviceAuth, seqs: &[u64]) -> Result<(Vec<Ack>, u64)> {
        repo::read(self, |tx| push::recorded_acks(tx, auth, seqs))
    }

    fn pull(
        &self,
        auth: &DeviceAuth,
        request: &PullRequest,
        now: DateTime<Utc>,
    ) -> Result<PullResponse> {
        repo::read(self, |tx| pull::pull(tx, auth, request, now))
    }

    fn snapshot(
        &self,
        auth: &DeviceAuth,
        village_code: &str,
        now: DateTime<Utc>,
    ) -> Result<SnapshotResponse> {
        repo::read(self, |tx| pull::snapshot(tx, auth, village_code, now))
    }

    fn conflicts(&self, auth: &DeviceAuth) -> Result<Vec<ConflictInfo>> {
        repo::read(self, |tx| pull::conflicts(tx, auth))
    }

    fn set_visit_frequency(&self, category: &str, days: u32, now: DateTime<Utc>) -> Result<()> {
        repo::write(self, |tx| due::set_visit_frequency(tx, category, days, now))
    }

    fn visit_frequencies(&self) -> Result<std::collections::BTreeMap<String, u32>> {
        repo::read(self, |tx| tx.visit_frequencies())
    }

    fn handovers(&self, auth: &DeviceAuth) -> Result<Vec<zoufang_protocol::messages::Handover>> {
        repo::read(self, |tx| handover::handovers(tx, auth))
    }

    fn possible_duplicates(&self, auth: &DeviceAuth) -> Result<Vec<PossibleDuplicate>> {
        repo::read(self, |tx| pull::possible_duplicates(tx, auth))
    }

    fn resolve_conflict(
        &self,
        auth: &DeviceAuth,
        conflict_id: &str,
        value: &Json,
        now: DateTime<Utc>,
    ) -> Result<ConflictInfo> {
        repo::write(self, |tx| {
            pull::resolve_conflict(tx, auth, conflict_id, value, now)
        })
    }

    fn merge_households(
        &self,
        auth: &DeviceAuth,
        survivor: &str,
        merged: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        repo::write(self, |tx| {
            merges::merge_households(tx, auth, (survivor, merged), now)
        })
    }

    fn merge_members(
        &self,
        auth: &DeviceAuth,
        survivor: &str,
        merged: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        repo::write(self, |tx| {
            merges::merge_members(tx, auth, (survivor, merged), now)
        })
    }

    fn move_household(
        &self,
        auth: &DeviceAuth,
        household: &str,
        to_village: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        repo::write(self, |tx| {
            merges::move_household(tx, auth, (household, to_village), now)
        })
    }

    fn record(&self, entity: Entity, id: &str) -> Result<Option<RecordState>> {
        repo::read(self, |tx| pull::record(tx, entity, id))
    }
}
