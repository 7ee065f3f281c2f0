//! Times a visit claims, checked against what the server knows: a visit is not completed (or
//! signed) before its form version was published, nor after the moment its device sent it.
//! Each time is read twice — on the server's clock, and on the sender's as its push reports
//! it (`device_time`) — and refused only when both readings are impossible: a phone whose clock
//! is days off, or whose clock was corrected between the visit and the push, is not refused
//! for that, while a visit dated years away is. The draft's creation stamp is not judged: a
//! clock reset to 2000 when the draft was opened is the phone's fault, not a lie, and the
//! visit's own times were checked on the phone before it could be completed.

use chrono::{DateTime, TimeDelta, Utc};
use zoufang_protocol::messages::{Ack, VisitRecord};

use super::records::{PushContext, rejected};
use crate::repo::Tx;
use crate::storage::Result;

/// Slack for clocks around a form's publication (a phone set a little wrong that day).
const PUBLICATION_ALLOWANCE: TimeDelta = TimeDelta::days(1);
/// How far after its sending a visit time may lie (the device's own allowance).
const FUTURE_ALLOWANCE: TimeDelta = TimeDelta::minutes(10);

fn parse(t: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t).ok().map(|t| t.to_utc())
}

/// The refusal of a visit whose form is unknown here or whose times cannot be true.
pub fn visit_time_refusal(
    tx: &mut dyn Tx,
    ctx: &PushContext<'_>,
    seq: u64,
    visit: &VisitRecord,
) -> Result<Option<Ack>> {
    let Some(published) = ctx.form_published_at(tx, &visit.form_id, visit.form_version)? else {
        let m = "the visit's form version is not published on this server";
        return Ok(Some(rejected(seq, "unknown_form", m)));
    };
    let (Some(published), Some(received)) = (parse(&published), parse(&ctx.received_at)) else {
        return Ok(None);
    };
    let times = [visit.completed_at.as_ref(), visit.signed_at.as_ref()];
    for t in times.into_iter().flatten() {
        let Some(t) = parse(t) else {
            let m = "a visit time is not an RFC 3339 time";
            return Ok(Some(rejected(seq, "invalid_value", m)));
        };
        let readings = [t, t - ctx.clock_offset];
        if readings
            .iter()
            .all(|t| *t < published - PUBLICATION_ALLOWANCE)
        {
            let m = "the visit is dated before its form version was published";
            return Ok(Some(rejected(seq, "implausible_time", m)));
        }
        if readings.iter().all(|t| *t > received + FUTURE_ALLOWANCE) {
            let m = "the visit is dated after the moment it was sent";
            return Ok(Some(rejected(seq, "implausible_time", m)));
        }
    }
    Ok(None)
}
