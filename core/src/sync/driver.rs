//! The I/O around the engine: [`drive`] feeds it the time and each answer of a [`Transport`],
//! retries what may be retried, sleeps where the engine says and stops at the next step when
//! cancelled. `Collector::sync` and `Collector::enroll` (`collector/sync.rs`) run it, one at a
//! time per store, and destroy the store on a wipe order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::engine::{Moment, SyncEngine, SyncListener};
use super::local::LocalState;
use super::transport::{Cut, HttpRequest, HttpResponse, RetryPolicy, Transport};
use super::wire::server_error;
use crate::error::{Error, Result};

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

/// Sends, retrying a busy server: 5xx and 429 answers are retried with backoff; no answer at
/// all (with what of a cut answer arrived) goes back to the engine, which builds the request
/// again to suit the link (`adapt.rs`).
pub(crate) fn send_with_retry(
    transport: &dyn Transport,
    request: &HttpRequest,
    policy: &RetryPolicy,
    cancel: Option<&CancelFlag>,
) -> Result<std::result::Result<HttpResponse, Cut>> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let failure = match transport.send_keeping_partial(request) {
            Ok(r) if r.status >= 500 || r.status == 429 => server_error(&r).to_string(),
            answer => return Ok(answer),
        };
        if attempt >= policy.attempts.max(1) {
            return Err(Error::Transport(failure));
        }
        if cancel.is_some_and(CancelFlag::is_cancelled) {
            return Err(Error::Cancelled);
        }
        tracing::debug!(attempt, "the server is busy; retrying after a pause");
        std::thread::sleep(policy.delay(attempt));
    }
}

/// Runs an engine to its end over `transport`.
pub(crate) fn drive<L: LocalState + ?Sized>(
    engine: &mut SyncEngine<'_, L>,
    transport: &dyn Transport,
    retry: &RetryPolicy,
    clock: &dyn Fn() -> chrono::DateTime<chrono::Utc>,
    listener: Option<&dyn SyncListener>,
    cancel: Option<&CancelFlag>,
) -> Result<()> {
    engine.set_reads_while_sending(transport.reads_while_sending());
    let started = Instant::now();
    let now = || Moment {
        wall: clock(),
        elapsed: started.elapsed(),
    };
    while let Some(req) = engine.next_request(now())? {
        if cancel.is_some_and(CancelFlag::is_cancelled) {
            return Err(Error::Cancelled);
        }
        if engine.receives_stream() {
            receive_stream(engine, transport, &req, &now)?;
        } else {
            let answer = if engine.send_once() {
                Ok(transport.send_keeping_partial(&req))
            } else {
                send_with_retry(transport, &req, retry, cancel)
            };
            match answer {
                Ok(Ok(response)) => engine.handle_response(&response, now())?,
                Ok(Err(cut)) => {
                    engine.handle_cut(&cut.error.message, cut.partial.as_ref(), now())?;
                }
                Err(Error::Transport(reason)) => engine.handle_interruption(&reason, now())?,
                Err(e) => return Err(e),
            }
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

/// Sends a streamed request and applies its answer's messages as they arrive.
fn receive_stream<L: LocalState + ?Sized>(
    engine: &mut SyncEngine<'_, L>,
    transport: &dyn Transport,
    request: &HttpRequest,
    now: &dyn Fn() -> Moment,
) -> Result<()> {
    let mut handled = None;
    let sent = transport.send_streaming(request, &mut |status, body| {
        handled = Some(engine.handle_stream(status, body, now));
    });
    match (handled, sent) {
        (Some(outcome), _) => outcome,
        (None, Err(cut)) => engine.handle_interruption(&cut.error.message, now()),
        (None, Ok(())) => Err(Error::Transport(
            "the transport gave no answer and no error".into(),
        )),
    }
}
