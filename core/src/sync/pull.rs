//! The pull phase: the feed of the user's areas, page by page. From a server that streams
//! (its catalog says so), one request brings many pages (`zoufang_protocol::stream`), each
//! applied in its own transaction with its cursors as it is read: a cut link costs the page in
//! flight, and the pages before it count, so requests can be long (few round trips) without a
//! cut throwing them away.

use std::io::Read;

use super::engine::{InFlight, Moment, SyncEngine, SyncPhase};
use super::local::LocalState;
use super::transport::HttpResponse;
use super::wire::{encode, server_error};
use crate::error::{Error, Result};
use zoufang_protocol::messages::{PROTOCOL_VERSION, PullRequest, PullResponse};
use zoufang_protocol::stream::StreamReader;

impl<L: LocalState + ?Sized> SyncEngine<'_, L> {
    pub(super) fn pull_request(&mut self) -> Result<(&'static str, Vec<u8>, InFlight)> {
        let limit = self.link.pull.current;
        let page = self.link.streams.then(|| self.link.pull_page());
        let body = encode(&PullRequest {
            protocol: PROTOCOL_VERSION,
            cursors: self.local.cursors()?,
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
            page: page.map(|p| u32::try_from(p).unwrap_or(u32::MAX)),
        })?;
        Ok(("/v1/pull", body, InFlight::Pull))
    }

    /// Applies the pages of an answer (`complete`: it arrived whole; otherwise the link cut
    /// it and only its whole pages count); returns the entries applied.
    pub(super) fn handle_pull(&mut self, response: &HttpResponse, complete: bool) -> Result<usize> {
        if response.status != 200 {
            return Err(server_error(response));
        }
        let read = self.apply_pages(response.body.as_slice())?;
        if complete {
            read.whole()?;
        }
        Ok(read.entries)
    }

    /// Applies the pages of a body as they arrive, until it ends, fails or the feed ends.
    fn apply_pages(&mut self, body: impl Read) -> Result<PagesRead> {
        let mut pages = StreamReader::new(body);
        let mut read = PagesRead::default();
        while self.phase() == SyncPhase::Pull {
            match pages.next_message::<PullResponse>() {
                None => break,
                Some(Ok(page)) => {
                    read.pages += 1;
                    read.entries += self.apply_page(&page)?;
                }
                // A cut (what came whole is applied, the rest comes again) or a bad page: the
                // caller knows which.
                Some(Err(e)) => {
                    read.stopped = Some(e.to_string());
                    break;
                }
            }
        }
        Ok(read)
    }

    /// A streamed pull's answer as it arrives (`Transport::send_streaming`): its pages are
    /// applied while the rest is on its way. A cut body counts as a cut answer whose whole
    /// pages arrived.
    pub(super) fn handle_pull_stream(&mut self, body: &mut dyn Read, now: Moment) -> Result<()> {
        let mut counted = Counted {
            body,
            bytes: 0,
            failure: None,
        };
        let read = self.apply_pages(&mut counted)?;
        let bytes = counted.bytes;
        if let Some(reason) = counted.failure {
            self.report.bytes_received += bytes as u64;
            if self.pull_cut_kept(read.entries, now) {
                return Ok(());
            }
            return self.handle_cut(&reason, None, now);
        }
        read.whole()?;
        self.answered_pull(bytes, read.entries, now)
    }

    /// A pull cut after `entries` were applied: progress if any were (or the last, empty page
    /// was read), and the request is over; otherwise the caller counts it as a cut for nothing.
    pub(super) fn pull_cut_kept(&mut self, entries: usize, now: Moment) -> bool {
        let kept = entries > 0 || self.phase() != SyncPhase::Pull;
        if kept {
            self.in_flight = None;
            self.link.cut_after_progress(now.elapsed);
        }
        kept
    }

    /// One page of the feed, applied with its cursors; returns its entries. The last page
    /// (`more` false) compares the villages' checksums and moves on to verifying.
    fn apply_page(&mut self, pulled: &PullResponse) -> Result<usize> {
        self.local.apply_pull(pulled)?;
        let n = pulled.entries.len() as u64;
        self.report.pulled += n;
        self.phase_done += n;
        let more = if pulled.more {
            self.link.pull.current as u64
        } else {
            0
        };
        self.phase_total = self.phase_done + more;
        if !pulled.more {
            // A household moved out of the user's areas by a reviewer leaves with this sync.
            self.report.households_left += self.local.leave_former_areas()?;
            let local = self.local.checksums()?;
            self.pull_ended = true;
            self.to_repair = pulled
                .checksums
                .iter()
                .filter(|(village, sum)| local.get(*village).copied().unwrap_or(0) != **sum)
                .map(|(village, _)| village.clone())
                .collect();
            let n = self.to_repair.len() as u64;
            self.enter(SyncPhase::Verify, n);
        }
        Ok(pulled.entries.len())
    }
}

/// What [`SyncEngine::apply_pages`] read of a body.
#[derive(Debug, Default)]
struct PagesRead {
    pages: usize,
    entries: usize,
    /// Why reading stopped before the body's end, if it did.
    stopped: Option<String>,
}

impl PagesRead {
    /// For an answer that arrived whole: a page that does not decode, or no page at all, is the
    /// server's fault, not the link's.
    fn whole(&self) -> Result<()> {
        let bad = |message: String| Error::Server {
            status: 200,
            code: "bad_message".into(),
            message,
        };
        if let Some(e) = &self.stopped {
            return Err(bad(e.clone()));
        }
        if self.pages == 0 {
            return Err(bad("the pull's answer holds no page".into()));
        }
        Ok(())
    }
}

/// A body read through: its bytes counted, and the link's failure kept (a cut is not a bad
/// page).
pub(super) struct Counted<'a> {
    pub body: &'a mut dyn Read,
    pub bytes: usize,
    pub failure: Option<String>,
}

impl Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.body.read(buf) {
            Ok(n) => {
                self.bytes += n;
                Ok(n)
            }
            Err(e) => {
                self.failure = Some(e.to_string());
                Err(e)
            }
        }
    }
}
