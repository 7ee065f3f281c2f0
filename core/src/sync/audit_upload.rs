//! The audit trail's way up. Entries ride on requests the sync makes anyway: the first batch on
//! the catalog, then with each push a share of the trail proportional to the changes it
//! carries (entries and changes are written together, so they share record ids and compress
//! together); what is left (views, the last sync's own entry) goes up in `/v1/audit` batches
//! after the data. To a server that computes hashes itself (`compact_audit` in the catalog),
//! entries travel without their two hashes — a third of an entry's bytes, and incompressible —
//! and the batch names its last hash (`head`), which the server checks after recomputing them.

use super::engine::{InFlight, SyncEngine, SyncPhase};
use super::local::LocalState;
use super::transport::HttpResponse;
use super::wire::{decode, encode};
use crate::error::{Error, Result};
use zoufang_protocol::audit::strip_hashes;
use zoufang_protocol::messages::{
    AuditBatch, AuditUploadRequest, AuditUploadResponse, PROTOCOL_VERSION,
};

/// Most audit entries riding on one push.
const MAX_RIDING: usize = 1000;

impl<L: LocalState + ?Sized> SyncEngine<'_, L> {
    /// The oldest pending entries (at most `limit`) as a batch, and the last one's number.
    pub(super) fn audit_batch(
        &self,
        limit: usize,
        compact: bool,
    ) -> Result<(Option<AuditBatch>, Option<u64>)> {
        if limit == 0 || self.report.audit_chain_broken {
            return Ok((None, None));
        }
        let mut entries = self.local.pending_audit(limit)?;
        let Some(last) = entries.last() else {
            return Ok((None, None));
        };
        let (seq, head) = (last.seq, last.hash.clone());
        let head = compact.then(|| {
            strip_hashes(&mut entries);
            head
        });
        let batch = AuditBatch {
            chain_hash: self.local.audit_chain_hash()?,
            entries,
            head,
        };
        Ok((Some(batch), Some(seq)))
    }

    /// The audit entries to ride on a push of `changes` changes: the trail's share of them.
    pub(super) fn riding_audit(&self, changes: usize) -> Result<(Option<AuditBatch>, Option<u64>)> {
        if !self.compact_audit {
            return Ok((None, None));
        }
        let share = (changes as f64 * self.audit_per_change).ceil() as usize;
        self.audit_batch(share.min(MAX_RIDING), true)
    }

    /// The audit entries to ride on a streamed push of `changes` changes in messages of
    /// `frame`: the trail's share, split evenly over the messages, each naming its own last
    /// hash (the server checks each as it arrives); and the last entry's number.
    pub(super) fn riding_audit_split(
        &self,
        changes: usize,
        frame: usize,
    ) -> Result<(Vec<AuditBatch>, Option<u64>)> {
        if !self.compact_audit || self.report.audit_chain_broken {
            return Ok((Vec::new(), None));
        }
        let messages = changes.div_ceil(frame.max(1));
        let share = (changes as f64 * self.audit_per_change).ceil() as usize;
        let mut entries = self.local.pending_audit(share.min(MAX_RIDING * messages))?;
        let Some(last) = entries.last().map(|e| e.seq) else {
            return Ok((Vec::new(), None));
        };
        let chain_hash = self.local.audit_chain_hash()?;
        let per = entries.len().div_ceil(messages.max(1));
        let mut out = Vec::with_capacity(messages);
        while !entries.is_empty() {
            let rest = entries.split_off(per.min(entries.len()));
            let mut batch = std::mem::replace(&mut entries, rest);
            let head = batch.last().map(|e| e.hash.clone());
            strip_hashes(&mut batch);
            out.push(AuditBatch {
                chain_hash,
                entries: batch,
                head,
            });
        }
        Ok((out, Some(last)))
    }

    /// The next audit batch, or `None` when nothing is left to send (or the server refused the
    /// chain: it keeps an alert, and sending more would be refused the same way).
    pub(super) fn audit_request(&mut self) -> Result<Option<(&'static str, Vec<u8>, InFlight)>> {
        let (Some(batch), Some(last)) =
            self.audit_batch(self.link.audit.current, self.compact_audit)?
        else {
            return Ok(None);
        };
        let body = encode(&AuditUploadRequest {
            protocol: PROTOCOL_VERSION,
            device_id: self.device_id(),
            chain_hash: batch.chain_hash,
            entries: batch.entries,
            head: batch.head,
        })?;
        Ok(Some(("/v1/audit", body, InFlight::Audit(last))))
    }

    /// Applies an upload's acknowledgement; returns the entries it acknowledged.
    pub(super) fn handle_audit(&mut self, last: u64, response: &HttpResponse) -> Result<usize> {
        let uploaded: AuditUploadResponse = decode(response)?;
        let before = self.report.audit_uploaded;
        self.apply_audit_ack(&uploaded, last)?;
        self.phase_done += self.report.audit_uploaded - before;
        if !self.report.audit_chain_broken && self.report.audit_uploaded == before {
            return Err(Error::Server {
                status: 200,
                code: "no_audit_progress".into(),
                message: "the server acknowledged no audit entry".into(),
            });
        }
        Ok(usize::try_from(self.report.audit_uploaded - before).unwrap_or(usize::MAX))
    }

    /// The audit trail going up before a wipe: anything but progress ends it.
    pub(super) fn handle_wipe_flush(
        &mut self,
        flight: &InFlight,
        response: &HttpResponse,
    ) -> Result<()> {
        let InFlight::Audit(last) = *flight else {
            return Ok(());
        };
        let before = self.report.audit_uploaded;
        let moved = match decode::<AuditUploadResponse>(response) {
            Ok(ack) => {
                self.apply_audit_ack(&ack, last)?;
                self.report.audit_uploaded > before && ack.chain_break.is_none()
            }
            Err(_) => false,
        };
        self.phase_done += self.report.audit_uploaded - before;
        if !moved {
            self.wiped = true;
            self.enter(SyncPhase::Done, 0);
        }
        Ok(())
    }

    /// Marks what the server acknowledged of an audit batch ending at `last`.
    pub(super) fn apply_audit_ack(&mut self, ack: &AuditUploadResponse, last: u64) -> Result<()> {
        let first_pending = self
            .local
            .pending_audit(1)?
            .first()
            .map_or(u64::MAX, |e| e.seq);
        let through = ack.accepted_through.min(last);
        if through >= first_pending {
            self.local.audit_uploaded_through(through)?;
            self.report.audit_uploaded += through + 1 - first_pending;
        }
        if ack.chain_break.is_some() {
            tracing::warn!("the server refused this device's audit chain");
            self.report.audit_chain_broken = true;
        }
        Ok(())
    }
}
