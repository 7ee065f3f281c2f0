//! Attachment contents by hash. Knowing a hash grants nothing: a caller may ask about, send or
//! fetch a content only through a visit in its areas that names it (with that size, when the
//! caller states one: a visit that lies about a content's size cannot hold up its upload). To
//! anyone else it does not exist. The bytes live in the `BlobStore`, shared by every node.

use chrono::{DateTime, Utc};
use zoufang_protocol::audit::HashAlgorithm;
use zoufang_protocol::messages::{ContentRef, ContentState, ContentStatus};

use super::ts;
use crate::blobs::{BlobError, BlobStore, ContentKey, Held};
use crate::repo::{self, Transactions, Tx};
use crate::storage::{DeviceAuth, Result, ServerError};

/// The size of a content as a visit inside the caller's areas names it.
fn referenced_size(
    tx: &mut dyn Tx,
    auth: &DeviceAuth,
    key: &ContentKey,
    size: Option<u64>,
) -> Result<Option<u64>> {
    Ok(tx
        .naming_visits(key)?
        .into_iter()
        .find(|(village, named)| auth.covers(village) && size.is_none_or(|s| s == *named))
        .map(|(_, named)| named))
}

/// What the server holds of a content of `size` bytes, as the protocol says it.
fn content_state(key: &ContentKey, held: Held, size: u64) -> ContentState {
    let (status, received) = match held {
        Held::Complete => (ContentStatus::Complete, size),
        Held::Partial(n) => (ContentStatus::Receiving, n),
    };
    ContentState {
        content_hash: key.hash().to_owned(),
        status,
        received,
    }
}

fn unknown(c: &ContentRef) -> ContentState {
    ContentState {
        content_hash: c.content_hash.clone(),
        status: ContentStatus::Unknown,
        received: 0,
    }
}

/// How much of each content the server holds.
pub fn status(
    db: &dyn Transactions,
    blobs: &dyn BlobStore,
    auth: &DeviceAuth,
    algorithm: HashAlgorithm,
    contents: &[ContentRef],
    now: DateTime<Utc>,
) -> Result<Vec<ContentState>> {
    // One read for all: each content's size as a visit in the caller's areas names it, and
    // whether the server has recorded it complete.
    let named: Vec<Option<(ContentKey, u64, bool)>> = repo::read(db, |tx| {
        contents
            .iter()
            .map(|c| {
                let Some(key) = ContentKey::new(algorithm, &c.content_hash) else {
                    return Ok(None);
                };
                let Some(size) = referenced_size(tx, auth, &key, Some(c.size_bytes))? else {
                    return Ok(None);
                };
                let recorded = tx.content_recorded(&key)?;
                Ok(Some((key, size, recorded)))
            })
            .collect()
    })?;
    contents
        .iter()
        .zip(named)
        .map(|(c, named)| {
            let Some((key, size, recorded)) = named else {
                return Ok(unknown(c));
            };
            let held = blobs.held(&key).map_err(BlobError::from)?;
            if held == Held::Complete && !recorded {
                // Repairs a record lost between the file's completion and its row.
                repo::write(db, |tx| tx.record_content(&key, size, &ts(now)))?;
            }
            Ok(content_state(&key, held, size))
        })
        .collect()
}

/// Appends verified bytes of a content of `size` bytes at `offset` (exactly what the server
/// holds); reaching its size, the content is checked against its hash.
#[allow(clippy::too_many_arguments)]
pub fn append(
    db: &dyn Transactions,
    blobs: &dyn BlobStore,
    auth: &DeviceAuth,
    key: &ContentKey,
    size: u64,
    offset: u64,
    bytes: &[u8],
    now: DateTime<Utc>,
) -> Result<ContentState> {
    let size = repo::read(db, |tx| referenced_size(tx, auth, key, Some(size)))?
        .ok_or_else(|| ServerError::NotFound("attachment content".into()))?;
    let held = blobs.append(key, offset, size, bytes).inspect_err(|e| {
        if matches!(e, BlobError::HashMismatch) {
            tracing::warn!(device = %auth.device_id, "an uploaded content did not match its hash; discarded");
        }
    })?;
    if held == Held::Complete {
        repo::write(db, |tx| tx.record_content(key, size, &ts(now)))?;
        tracing::info!(device = %auth.device_id, bytes = size, "attachment content stored");
    }
    Ok(content_state(key, held, size))
}

/// A complete content, to a caller whose areas cover a visit naming it.
pub fn content(
    db: &dyn Transactions,
    blobs: &dyn BlobStore,
    auth: &DeviceAuth,
    key: &ContentKey,
) -> Result<Vec<u8>> {
    let not_found = || ServerError::NotFound("attachment content".into());
    repo::read(db, |tx| referenced_size(tx, auth, key, None))?.ok_or_else(not_found)?;
    blobs
        .read(key)
        .map_err(BlobError::from)?
        .ok_or_else(not_found)
}

pub fn awaiting(db: &dyn Transactions) -> Result<Vec<String>> {
    repo::read(db, |tx| tx.visits_awaiting_attachments())
}
