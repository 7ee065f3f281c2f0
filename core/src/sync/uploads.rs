//! The device's side of attachment uploads: which contents still wait for the server, their
//! bytes read piece by piece straight from the store (incremental blob I/O: a 5 MB photo is
//! never copied whole to send 64 KB of it), and the mark once the server holds a content whole.

use std::io::{self, BufReader};

use serde::Serialize;

use crate::collector::Collector;
use crate::error::{Error, Result};
use crate::records::timestamp;
use crate::store;
use zoufang_protocol::messages::ContentRef;

/// A visit whose photos or signatures have not all reached the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingAttachments {
    pub visit_id: String,
    /// Attachments whose content the server does not hold yet.
    pub attachments: u64,
    pub bytes: u64,
    /// The server has the visit's data (its attachments go at the next sync); otherwise the
    /// visit itself is still waiting to be pushed.
    pub visit_synced: bool,
}

/// Bytes read from the store per piece while verifying a content.
const READ_PIECE: usize = 256 * 1024;

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

    /// The server holds this content whole and verified.
    pub(crate) fn mark_uploaded(&self, content_hash: &str) -> Result<()> {
        let at = timestamp(self.now());
        self.write(|tx| store::attachments::mark_uploaded(tx, content_hash, &at))
    }
}
