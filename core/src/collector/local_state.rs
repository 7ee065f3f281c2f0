//! The store as the sync engine sees it: [`LocalState`] for [`Collector`].

use std::collections::BTreeMap;

use super::Collector;
use crate::error::Result;
use crate::records::timestamp;
use crate::sync::engine::SyncReport;
use crate::sync::local::LocalState;
use zoufang_protocol::audit::{AuditAction, AuditEntry, HashAlgorithm};
use zoufang_protocol::messages::{
    Ack, CatalogResponse, Change, ContentRef, EnrollResponse, PullResponse, SnapshotResponse,
};

impl LocalState for Collector {
    fn credentials(&self) -> Result<Option<(String, String)>> {
        let s = self.sync_settings()?;
        Ok(s.device_id.zip(s.device_token))
    }

    fn save_enrolment(&self, enrolled: &EnrollResponse) -> Result<()> {
        self.update_settings(|s| {
            s.device_id = Some(enrolled.device_id.clone());
            s.device_token = Some(enrolled.device_token.clone());
            s.user = Some(enrolled.user.clone());
            s.token_expires_at = Some(enrolled.token_expires_at.clone());
            if enrolled.predecessor.is_none() {
                s.cursors.clear();
            }
        })?;
        self.sign_in(&enrolled.user.id)
    }

    fn save_token_expiry(&self, expires_at: &str) -> Result<()> {
        self.update_settings(|s| s.token_expires_at = Some(expires_at.to_owned()))?;
        Ok(())
    }

    fn installed_forms(&self) -> Result<Vec<(String, u32)>> {
        Collector::installed_forms(self)
    }

    fn code_list_versions(&self) -> Result<BTreeMap<String, u32>> {
        Ok(self
            .code_lists()
            .iter()
            .map(|l| (l.name.clone(), l.version))
            .collect())
    }

    fn install_catalog(&self, catalog: &CatalogResponse) -> Result<()> {
        for form in &catalog.forms {
            self.install_form(&form.to_string())?;
        }
        for list in &catalog.code_lists {
            self.install_code_list(list)?;
        }
        if let Some(user) = &catalog.user {
            self.take_user(user)?;
        }
        let frequencies = catalog.visit_frequencies.clone();
        let publications = catalog.form_publications.clone();
        self.update_settings(|s| {
            s.visit_frequencies = frequencies;
            // An older server says nothing: what it said before stands.
            if !publications.is_empty() {
                s.form_publications = publications;
            }
        })?;
        Ok(())
    }

    fn leave_former_areas(&self) -> Result<u64> {
        Collector::leave_former_areas(self)
    }

    fn outbox_batch(&self, limit: usize) -> Result<Vec<Change>> {
        Collector::outbox_batch(self, limit)
    }

    fn outbox_len(&self) -> Result<u64> {
        Collector::outbox_len(self)
    }

    fn apply_acks(&self, acks: &[Ack]) -> Result<(u64, u64, u64)> {
        Collector::apply_acks(self, acks)
    }

    fn cursors(&self) -> Result<BTreeMap<String, u64>> {
        Ok(self.sync_settings()?.cursors)
    }

    fn apply_pull(&self, pulled: &PullResponse) -> Result<()> {
        Collector::apply_pull(self, pulled)
    }

    fn pull_finished(&self) -> Result<()> {
        self.finish_bulk_load()
    }

    fn checksums(&self) -> Result<BTreeMap<String, u64>> {
        self.local_checksums()
    }

    fn apply_snapshot(&self, village: &str, snapshot: &SnapshotResponse) -> Result<()> {
        Collector::apply_snapshot(self, village, snapshot)
    }

    fn audit_chain_hash(&self) -> Result<HashAlgorithm> {
        Collector::audit_chain_hash(self)
    }

    fn pending_audit(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        Collector::pending_audit(self, limit)
    }

    fn pending_audit_count(&self) -> Result<u64> {
        Collector::pending_audit_count(self)
    }

    fn audit_uploaded_through(&self, seq: u64) -> Result<()> {
        Collector::audit_uploaded_through(self, seq)
    }

    fn content_algorithm(&self) -> HashAlgorithm {
        self.hash_algorithm()
    }

    fn uploadable_contents(&self) -> Result<Vec<ContentRef>> {
        Collector::uploadable_contents(self)
    }

    fn content_intact(&self, content_hash: &str) -> Result<bool> {
        Collector::content_intact(self, content_hash)
    }

    fn read_content(&self, content_hash: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        Collector::read_content(self, content_hash, offset, len)
    }

    fn content_proof(&self, content_hash: &str, nonce: &str) -> Result<String> {
        Collector::content_proof(self, content_hash, nonce)
    }

    fn mark_uploaded(&self, content_hash: &str) -> Result<()> {
        Collector::mark_uploaded(self, content_hash)
    }

    fn record_wipe_order(&self) -> Result<()> {
        tracing::warn!("the server ordered this device wiped");
        let detail = serde_json::json!({"ordered_by": "server"});
        self.audit_now(AuditAction::Wipe, None, detail)
    }

    fn record_sync(&self, r: &SyncReport) -> Result<()> {
        self.audit_now(
            AuditAction::Sync,
            None,
            serde_json::json!({"pushed": r.pushed, "pulled": r.pulled, "conflicts": r.conflicts,
                               "rejected": r.rejected, "audit_uploaded": r.audit_uploaded,
                               "attachments_uploaded": r.attachments_uploaded}),
        )?;
        let now = timestamp(self.now());
        let hlc = self.hlc.lock().to_string();
        let offset = r.clock_offset_ms;
        self.update_settings(|s| {
            s.last_sync_at = Some(now);
            s.hlc = Some(hlc);
            if offset.is_some() {
                s.clock_offset_ms = offset;
            }
        })?;
        Ok(())
    }
}
