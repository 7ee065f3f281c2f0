//! The pull phase: the feed of the user's areas, page by page. From a server that streams
//! (its catalog says so), one request brings many pages (`zoufang_protocol::stream`), each
//! applied in its own transaction with its cursors as it is read: a cut link costs the page in
//! flight, and the pages before it count, so requests can be long (few round trips) without a
//! cut throwing them away.

use super::engine::{InFlight, SyncEngine, SyncPhase};
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
        let mut pages = StreamReader::new(response.body.as_slice());
        let (mut entries, mut read) = (0, 0);
        while self.phase() == SyncPhase::Pull {
            match pages.next_message::<PullResponse>() {
                None => break,
                Some(Ok(page)) => {
                    read += 1;
                    entries += self.apply_page(&page)?;
                }
                // The link's doing: what came whole is applied, the rest comes again.
                Some(Err(_)) if !complete => break,
                Some(Err(e)) => {
                    return Err(Error::Server {
                        status: 200,
                        code: "bad_message".into(),
                        message: e.to_string(),
                    });
                }
            }
        }
        if complete && read == 0 {
            return Err(Error::Server {
                status: 200,
                code: "bad_message".into(),
                message: "the pull's answer holds no page".into(),
            });
        }
        Ok(entries)
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
