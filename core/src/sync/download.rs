//! Downloading one attachment content (a reviewer opening a visit's photo) as a state of the
//! engine: the same credentials, retries and wipe orders as a sync, and the bytes checked
//! against their hash before anyone sees them.

use super::engine::{InFlight, Moment, SyncEngine, SyncPhase};
use super::local::LocalState;
use super::transport::{HttpRequest, HttpResponse};
use super::wire::server_error;
use crate::error::{Error, Result};
use zoufang_protocol::audit::{HashAlgorithm, is_hex_digest};

/// The content asked for, and once it came, its bytes.
#[derive(Debug)]
pub(super) struct Download {
    algorithm: HashAlgorithm,
    content_hash: String,
    content: Option<Vec<u8>>,
}

impl<'a, L: LocalState + ?Sized> SyncEngine<'a, L> {
    /// A machine that downloads one complete content and is done; the bytes are then taken
    /// with [`Self::take_download`].
    pub fn download(local: &'a L, algorithm: HashAlgorithm, content_hash: &str) -> Result<Self> {
        if !is_hex_digest(content_hash) {
            return Err(Error::InvalidInput(
                "a content hash is a lowercase hex digest".into(),
            ));
        }
        let mut engine = Self::new(local, Default::default())?;
        engine.enter(SyncPhase::Download, 0);
        engine.download = Some(Download {
            algorithm,
            content_hash: content_hash.to_owned(),
            content: None,
        });
        Ok(engine)
    }

    /// The content, once downloaded and checked.
    pub fn take_download(&mut self) -> Option<Vec<u8>> {
        self.download.as_mut().and_then(|d| d.content.take())
    }

    /// The GET for the content, or `None` once it is here.
    pub(super) fn download_request(&mut self, now: Moment) -> Option<HttpRequest> {
        let d = self.download.as_ref().filter(|d| d.content.is_none())?;
        let path = format!(
            "/v1/attachments/{}/{}",
            d.algorithm.as_str(),
            d.content_hash
        );
        let mut req = self.send("GET", path, Vec::new(), InFlight::Download, now);
        // The content is sent as stored (already compressed images), not as a message.
        req.headers
            .retain(|(k, _)| k.eq_ignore_ascii_case("authorization"));
        Some(req)
    }

    pub(super) fn handle_download(&mut self, response: &HttpResponse) -> Result<()> {
        if response.status != 200 {
            return Err(server_error(response));
        }
        let d = self
            .download
            .as_mut()
            .ok_or_else(|| Error::InvalidInput("a download answer without a download".into()))?;
        if d.algorithm.digest(&response.body) != d.content_hash {
            return Err(Error::Server {
                status: 200,
                code: "hash_mismatch".into(),
                message: "the downloaded content does not match its hash".into(),
            });
        }
        d.content = Some(response.body.clone());
        self.phase_done = response.body.len() as u64;
        Ok(())
    }
}
