//! The I/O around the engine: [`Collector::sync`] and [`Collector::enroll`] feed the engine the
//! time and each answer of a [`Transport`], retry what may be retried, sleep where the engine
//! says, stop when cancelled, and destroy the store on a wipe order. One sync per store at a
//! time: a second call gets `sync_running` instead of pushing the same changes twice.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::engine::{Moment, SyncConfig, SyncEngine, SyncListener, SyncReport};
use super::local::LocalState;
use super::transport::{HttpRequest, HttpResponse, RetryPolicy, Transport};
use super::wire::{request, server_error};
use crate::collector::Collector;
use crate::error::{Error, Result};
use zoufang_protocol::audit::{HashAlgorithm, is_hex_digest};
use zoufang_protocol::messages::UserInfo;

/// Lets another thread stop a sync between two requests.
#[derive(Debug, Default)]
pub struct CancelFlag(AtomicBool);

impl CancelFlag {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Sends with retries: no answer, 5xx and 429 are retried with backoff; other answers return.
pub(crate) fn send_with_retry(
    transport: &dyn Transport,
    request: &HttpRequest,
    policy: &RetryPolicy,
    cancel: Option<&CancelFlag>,
) -> Result<HttpResponse> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let failure = match transport.send(request) {
            Ok(r) if r.status >= 500 || r.status == 429 => server_error(&r).to_string(),
            Ok(r) => return Ok(r),
            Err(e) => e.message,
        };
        if attempt >= policy.attempts.max(1) {
            return Err(Error::Transport(failure));
        }
        if cancel.is_some_and(CancelFlag::is_cancelled) {
            return Err(Error::Cancelled);
        }
        tracing::debug!(attempt, "request failed; retrying after a pause");
        std::thread::sleep(policy.delay(attempt));
    }
}

/// Runs an engine to its end over `transport`.
fn drive<L: LocalState + ?Sized>(
    engine: &mut SyncEngine<'_, L>,
    transport: &dyn Transport,
    retry: &RetryPolicy,
    clock: &dyn Fn() -> chrono::DateTime<chrono::Utc>,
    listener: Option<&dyn SyncListener>,
    cancel: Option<&CancelFlag>,
) -> Result<()> {
    let started = Instant::now();
    let now = || Moment {
        wall: clock(),
        elapsed: started.elapsed(),
    };
    while let Some(req) = engine.next_request(now())? {
        if cancel.is_some_and(CancelFlag::is_cancelled) {
            return Err(Error::Cancelled);
        }
        let answer = if engine.send_once() {
            transport
                .send(&req)
                .map_err(|e| Error::Transport(e.message))
        } else {
            send_with_retry(transport, &req, retry, cancel)
        };
        match answer {
            Ok(response) => engine.handle_response(&response, now())?,
            Err(Error::Transport(reason)) => engine.handle_interruption(&reason)?,
            Err(e) => return Err(e),
        }
        if let Some(l) = listener {
            l.on_progress(engine.progress());
        }
        if let Some(pause) = engine.pause() {
            std::thread::sleep(pause);
        }
    }
    if let Some(l) = listener {
        l.on_progress(engine.progress());
    }
    Ok(())
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
        let mut engine = SyncEngine::enrolment(self, enrollment_token, device_name);
        let clock = || self.now();
        drive(
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
        let clock = || self.now();
        drive(
            &mut engine,
            transport,
            &config.retry,
            &clock,
            listener,
            cancel,
        )?;
        if engine.wiped() {
            drop(engine);
            self.db.destroy()?;
            return Err(Error::DeviceWiped);
        }
        engine.finish()
    }

    /// Downloads a complete attachment content from the server (a reviewer opening a visit's
    /// photo) and checks it against its hash.
    pub fn fetch_attachment_content(
        &self,
        transport: &dyn Transport,
        algorithm: HashAlgorithm,
        content_hash: &str,
    ) -> Result<Vec<u8>> {
        if !is_hex_digest(content_hash) {
            return Err(Error::InvalidInput(
                "a content hash is a lowercase hex digest".into(),
            ));
        }
        let (_, token) = self.credentials()?.ok_or(Error::NotEnrolled)?;
        let path = format!("/v1/attachments/{}/{content_hash}", algorithm.as_str());
        let mut request = request("GET", &path, Some(&token), Vec::new());
        request
            .headers
            .retain(|(k, _)| k.eq_ignore_ascii_case("authorization"));
        let response = send_with_retry(transport, &request, &RetryPolicy::default(), None)?;
        if response.status != 200 {
            return Err(server_error(&response));
        }
        if algorithm.digest(&response.body) != content_hash {
            return Err(Error::Server {
                status: 200,
                code: "hash_mismatch".into(),
                message: "the downloaded content does not match its hash".into(),
            });
        }
        Ok(response.body)
    }
}
