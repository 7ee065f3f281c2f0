//! Attachment contents by hash. Knowing a hash grants nothing. A caller may send a content, or
//! ask about it, only through a visit in its areas that names it (with that size: a visit that
//! lies about a content's size cannot hold up its upload). It may read a content only through
//! a visit in its areas whose pushing device proved it holds the bytes: it uploaded every one,
//! or answered a possession challenge (`possession`). Status answers say `complete` only to a
//! device that proved possession itself; to any other, a content the server holds looks like
//! one it never saw. The bytes live in the `BlobStore`, shared by every node.

use chrono::{DateTime, Utc};
use zoufang_protocol::audit::HashAlgorithm;
use zoufang_protocol::messages::{ContentRef, ContentState, ContentStatus};
use zoufang_protocol::possession::ContentProof;

use super::{possession, ts};
use crate::blobs::{BlobError, BlobStore, ContentKey, Held};
use crate::repo::{self, Transactions, Tx};
use crate::storage::{DeviceAuth, Result, ServerError};

/// The size of a content as a visit inside the caller's areas names it.
fn referenced_size(
    tx: &mut dyn Tx,
    auth: &DeviceAuth,
    key: &ContentKey,
    size: u64,
) -> Result<Option<u64>> {
    Ok(tx
        .naming_visits(key)?
        .into_iter()
        .find(|v| auth.covers(&v.village_code) && v.size_bytes == size)
        .map(|v| v.size_bytes))
}

/// May the caller read this content: does a visit in its areas name it, pushed by a device
/// that proved it holds the bytes? (A reference from before possession was recorded counts.)
fn readable(tx: &mut dyn Tx, auth: &DeviceAuth, key: &ContentKey) -> Result<bool> {
    for v in tx.naming_visits(key)? {
        if !auth.covers(&v.village_code) {
            continue;
        }
        match &v.pushed_by {
            None => return Ok(true),
            Some(device) if tx.is_holder(key, device)? => return Ok(true),
            Some(_) => {}
        }
    }
    Ok(false)
}

fn state(c: &ContentRef, status: ContentStatus, received: u64) -> ContentState {
    ContentState {
        content_hash: c.content_hash.clone(),
        status,
        received,
    }
}

/// What the caller may learn of one content, read in one transaction.
struct Asked {
    key: ContentKey,
    size: u64,
    holder: bool,
    /// The proof sent, under a nonce that was this device's and fresh.
    proof: Option<String>,
}

/// How much of each content the caller's own upload holds, or that it is complete for it.
/// A proof of possession (under `nonce`) makes the caller a holder of a content the server has.
pub fn status(
    db: &dyn Transactions,
    blobs: &dyn BlobStore,
    auth: &DeviceAuth,
    algorithm: HashAlgorithm,
    contents: &[ContentRef],
    nonce: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Vec<ContentState>> {
    let nonce_ok = match nonce {
        Some(n) => possession::valid(&possession::secret(db)?, &auth.device_id, n, now),
        None => false,
    };
    let asked: Vec<Option<Asked>> = repo::read(db, |tx| {
        contents
            .iter()
            .map(|c| {
                let Some(key) = ContentKey::new(algorithm, &c.content_hash) else {
                    return Ok(None);
                };
                let Some(size) = referenced_size(tx, auth, &key, c.size_bytes)? else {
                    return Ok(None);
                };
                let holder = tx.is_holder(&key, &auth.lineage)?;
                let proof = c.proof.clone().filter(|_| nonce_ok);
                Ok(Some(Asked {
                    key,
                    size,
                    holder,
                    proof,
                }))
            })
            .collect()
    })?;
    contents
        .iter()
        .zip(asked)
        .map(|(c, asked)| {
            let Some(a) = asked else {
                return Ok(state(c, ContentStatus::Unknown, 0));
            };
            let complete = blobs.complete(&a.key).map_err(BlobError::from)?;
            let proven = complete
                && !a.holder
                && match (&a.proof, nonce) {
                    (Some(proof), Some(nonce)) => proves(blobs, &a.key, nonce, proof)?,
                    _ => false,
                };
            if proven {
                repo::write(db, |tx| {
                    tx.record_holder(&a.key, &auth.lineage, &ts(now))?;
                    tx.record_content(&a.key, a.size, &ts(now))
                })?;
                tracing::debug!(device = %auth.device_id, "possession of a content proven");
            }
            if complete && (a.holder || proven) {
                return Ok(state(c, ContentStatus::Complete, a.size));
            }
            let held = blobs
                .partial(&a.key, &auth.lineage)
                .map_err(BlobError::from)?;
            Ok(state(c, ContentStatus::Receiving, held))
        })
        .collect()
}

/// Does `proof` answer the challenge `nonce` for the content the server holds?
fn proves(blobs: &dyn BlobStore, key: &ContentKey, nonce: &str, proof: &str) -> Result<bool> {
    let Some(bytes) = blobs.read(key).map_err(BlobError::from)? else {
        return Ok(false);
    };
    let mut expected = ContentProof::new(key.algorithm, nonce);
    expected.update(&bytes);
    Ok(expected.verify(proof))
}

/// Appends verified bytes of a content of `size` bytes at `offset` of the caller's upload
/// (exactly what it holds); reaching its size, the upload is checked against its hash and the
/// caller becomes a holder.
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
    let size = repo::read(db, |tx| referenced_size(tx, auth, key, size))?
        .ok_or_else(|| ServerError::NotFound("attachment content".into()))?;
    let held = blobs
        .append(key, &auth.lineage, offset, size, bytes)
        .inspect_err(|e| {
            if matches!(e, BlobError::HashMismatch) {
                tracing::warn!(device = %auth.device_id, "an uploaded content did not match its hash; discarded");
            }
        })?;
    let (status, received) = match held {
        Held::Complete => {
            repo::write(db, |tx| {
                tx.record_content(key, size, &ts(now))?;
                tx.record_holder(key, &auth.lineage, &ts(now))
            })?;
            tracing::info!(device = %auth.device_id, bytes = size, "attachment content stored");
            (ContentStatus::Complete, size)
        }
        Held::Partial(n) => (ContentStatus::Receiving, n),
    };
    Ok(ContentState {
        content_hash: key.hash().to_owned(),
        status,
        received,
    })
}

/// A complete content, to a caller whose areas cover a visit naming it whose device holds it.
pub fn content(
    db: &dyn Transactions,
    blobs: &dyn BlobStore,
    auth: &DeviceAuth,
    key: &ContentKey,
) -> Result<Vec<u8>> {
    let not_found = || ServerError::NotFound("attachment content".into());
    if !repo::read(db, |tx| readable(tx, auth, key))? {
        return Err(not_found());
    }
    blobs
        .read(key)
        .map_err(BlobError::from)?
        .ok_or_else(not_found)
}

pub fn awaiting(db: &dyn Transactions) -> Result<Vec<String>> {
    repo::read(db, |tx| tx.visits_awaiting_attachments())
}
