//! The attachment phase of the engine: which contents the server still needs (asked in
//! batches), chunks sized to the link, and resuming from what the server confirms after any
//! interruption — a chunk is never re-sent blindly.

use std::collections::BTreeMap;
use std::time::Duration;

use super::engine::{
    CHUNK_SECONDS, InFlight, MIN_CHUNK_BYTES, Moment, STATUS_BATCH, SyncEngine, Upload,
};
use super::local::LocalState;
use super::transport::{HttpRequest, HttpResponse};
use super::wire::{decode, encode, server_error};
use crate::error::{Error, Result};
use zoufang_protocol::frames::encode_frames;
use zoufang_protocol::messages::{
    AttachmentStatusRequest, AttachmentStatusResponse, ChunkResponse, ContentRef, ContentStatus,
    PROTOCOL_VERSION,
};

impl<L: LocalState + ?Sized> SyncEngine<'_, L> {
    /// The attachment phase's next request, or `None` when nothing is left to send.
    pub(super) fn next_upload_request(&mut self, now: Moment) -> Result<Option<HttpRequest>> {
        let alg = self.local.content_algorithm();
        loop {
            if let Some(up) = &mut self.uploads.current {
                if self.uploads.recheck {
                    let contents = vec![up.content.clone()];
                    return self.status_request(contents, true, now).map(Some);
                }
                if !up.checked {
                    if !self.local.content_intact(&up.content.content_hash)? {
                        self.uploads.current = None;
                        self.content_damaged();
                        continue;
                    }
                    up.checked = true;
                }
                let offset = up.received;
                let left = up.content.size_bytes.saturating_sub(offset);
                if left == 0 {
                    // The server holds every byte yet calls it incomplete: not ours to mend.
                    self.report.attachments_waiting += 1;
                    self.uploads.current = None;
                    continue;
                }
                let len = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(self.uploads.chunk);
                let path = format!(
                    "/v1/attachments/{}/{}?offset={offset}&size={}",
                    alg.as_str(),
                    up.content.content_hash,
                    up.content.size_bytes
                );
                let bytes = self
                    .local
                    .read_content(&up.content.content_hash, offset, len)?;
                self.report.attachment_bytes_sent += bytes.len() as u64;
                let flight = InFlight::Chunk {
                    offset,
                    len: bytes.len(),
                    started: now.elapsed,
                };
                let mut req = self.send("PUT", path, encode_frames(&bytes), flight, now);
                req.headers.retain(|(k, _)| {
                    !k.eq_ignore_ascii_case("content-encoding")
                        && !k.eq_ignore_ascii_case("content-type")
                });
                req.headers.push((
                    "Content-Type".to_owned(),
                    zoufang_protocol::frames::CONTENT_TYPE.to_owned(),
                ));
                return Ok(Some(req));
            }
            if let Some(next) = self.uploads.ready.pop_front() {
                self.uploads.current = Some(next);
                self.uploads.recheck = false;
                continue;
            }
            if self.uploads.unasked.is_empty() {
                return Ok(None);
            }
            let n = self.uploads.unasked.len().min(STATUS_BATCH);
            let contents: Vec<ContentRef> = self.uploads.unasked.drain(..n).collect();
            return self.status_request(contents, false, now).map(Some);
        }
    }

    fn status_request(
        &mut self,
        mut contents: Vec<ContentRef>,
        recheck: bool,
        now: Moment,
    ) -> Result<HttpRequest> {
        // A first question about a content carries the proof that this device holds it: the
        // server may hold it already (from another device) and says so only to a holder. A
        // recheck asks about this device's own upload in progress: no proof needed.
        let nonce = self.uploads.nonce.clone().filter(|_| !recheck);
        if let Some(nonce) = &nonce {
            for c in &mut contents {
                c.proof = Some(self.local.content_proof(&c.content_hash, nonce)?);
            }
        }
        let body = encode(&AttachmentStatusRequest {
            protocol: PROTOCOL_VERSION,
            hash_algorithm: self.local.content_algorithm(),
            contents: contents.clone(),
            possession_nonce: nonce,
        })?;
        Ok(self.send(
            "POST",
            "/v1/attachments/status".to_owned(),
            body,
            InFlight::ContentStatus { contents, recheck },
            now,
        ))
    }

    /// The chunk in flight went nowhere known: ask how far the server got before sending more.
    pub(super) fn chunk_interrupted(&mut self, reason: &str) -> Result<()> {
        self.uploads.recheck = true;
        self.uploads.stalled += 1;
        self.uploads.chunk = (self.uploads.chunk / 2).max(MIN_CHUNK_BYTES);
        self.report.attachment_interruptions += 1;
        tracing::debug!(
            stalled = self.uploads.stalled,
            "attachment chunk interrupted; asking the server how far it got"
        );
        if self.uploads.stalled > self.config.retry.attempts.max(1) {
            return Err(Error::Transport(reason.to_owned()));
        }
        Ok(())
    }

    /// Contents asked about without an answer: back at the front of the queue, in their order.
    /// (An unanswered recheck needs nothing: the flag stays set until an answer clears it.)
    pub(super) fn status_unanswered(&mut self, contents: Vec<ContentRef>) {
        for content in contents.into_iter().rev() {
            self.uploads.unasked.push_front(content);
        }
    }

    fn upload_progress(&mut self) {
        let current = self.uploads.current.as_ref().map_or(0, |u| u.received);
        self.phase_done = self.uploads.finished_bytes + current;
    }

    fn content_held(&mut self, content: &ContentRef) -> Result<()> {
        self.local.mark_uploaded(&content.content_hash)?;
        self.uploads.finished_bytes += content.size_bytes;
        Ok(())
    }

    pub(super) fn handle_content_status(
        &mut self,
        contents: Vec<ContentRef>,
        recheck: bool,
        response: &HttpResponse,
    ) -> Result<()> {
        let answer: AttachmentStatusResponse = match decode(response) {
            Ok(a) => a,
            Err(e) if !recheck => {
                self.status_unanswered(contents);
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let states: BTreeMap<&str, _> = answer
            .contents
            .iter()
            .map(|c| (c.content_hash.as_str(), (c.status, c.received)))
            .collect();
        for content in contents {
            let state = states.get(content.content_hash.as_str()).copied();
            match state {
                Some((ContentStatus::Complete, _)) => {
                    self.content_held(&content)?;
                    if recheck {
                        // The last chunk's answer was lost: the server finished it.
                        self.report.attachments_uploaded += 1;
                        self.uploads.current = None;
                    } else {
                        self.report.attachments_already_held += 1;
                    }
                }
                Some((ContentStatus::Receiving, received)) if received <= content.size_bytes => {
                    if recheck {
                        if let Some(up) = &mut self.uploads.current {
                            if received > up.received {
                                self.uploads.stalled = 0;
                            }
                            up.received = received;
                        }
                        self.uploads.recheck = false;
                    } else {
                        self.uploads.ready.push_back(Upload {
                            content,
                            received,
                            checked: false,
                        });
                    }
                }
                _ => {
                    self.report.attachments_waiting += 1;
                    if recheck {
                        self.uploads.current = None;
                    }
                }
            }
        }
        self.upload_progress();
        Ok(())
    }

    pub(super) fn handle_chunk(
        &mut self,
        offset: u64,
        len: usize,
        took: Duration,
        response: &HttpResponse,
    ) -> Result<()> {
        if response.status == 200 {
            let answer: ChunkResponse = decode(response)?;
            let Some(up) = self.uploads.current.as_mut() else {
                return Ok(());
            };
            if answer.received > offset {
                self.uploads.stalled = 0;
                // Follow the link: about CHUNK_SECONDS of what this chunk achieved.
                let secs = took.as_secs_f64().max(1e-3);
                let rate = (answer.received - offset) as f64 / secs;
                let max = self.config.max_chunk_bytes.max(MIN_CHUNK_BYTES);
                self.uploads.chunk = ((rate * CHUNK_SECONDS) as usize).clamp(MIN_CHUNK_BYTES, max);
            }
            up.received = answer.received;
            if answer.complete {
                let content = up.content.clone();
                self.uploads.current = None;
                self.content_held(&content)?;
                self.report.attachments_uploaded += 1;
            } else if answer.received < offset + len as u64 {
                // The server kept less than was sent (a cut or a refused frame on the way).
                self.report.attachment_interruptions += 1;
            }
            self.upload_progress();
            return Ok(());
        }
        match server_error(response) {
            // Not this device's to send (its visit unknown here, or out of its areas): later.
            Error::Server {
                status: 403 | 404, ..
            } => {
                self.report.attachments_waiting += 1;
                self.uploads.current = None;
                Ok(())
            }
            // The whole content arrived and did not match its hash; the server discarded it.
            // The same bytes would end the same way (and a content sent in several chunks would
            // make progress each round, never stall): no second try in this sync.
            Error::Server { code, .. } if code == "hash_mismatch" => self.whole_content_refused(),
            // A refused chunk (offset, a bad frame), a server failure or a rate limit: ask how
            // far it got, then go on from there.
            e => self.chunk_interrupted(&e.to_string()),
        }
    }

    fn whole_content_refused(&mut self) -> Result<()> {
        let Some(up) = self.uploads.current.take() else {
            return Ok(());
        };
        self.report.attachment_interruptions += 1;
        if self.local.content_intact(&up.content.content_hash)? {
            // Intact here, so altered on the way past every frame's checksum: the next sync
            // sends it again.
            self.report.attachments_waiting += 1;
        } else {
            self.content_damaged();
        }
        self.upload_progress();
        Ok(())
    }

    /// Its stored bytes no longer match their name (storage gone bad): kept, reported, not sent.
    fn content_damaged(&mut self) {
        // No hash in the log: a photo's content hash identifies the photo (it names it on the
        // server and in every device of the village).
        tracing::error!("a stored attachment no longer matches its hash; kept, not sent");
        self.report.attachments_damaged += 1;
    }
}
