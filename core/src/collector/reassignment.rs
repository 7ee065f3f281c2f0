//! A coordinator moved to another village. The catalog of every sync says who the user is
//! now; the phone takes the new areas at once (it no longer claims the old village). Its
//! pending changes for the old village still go up — the server hands them to that village's
//! reviewers — and once the outbox is empty the old village leaves the phone: households,
//! visits, photos, conflicts. A household with a draft on the phone stays until the draft is
//! completed or voided (typed work is never dropped). The next pull brings the new area.

use super::Collector;
use crate::error::Result;
use crate::store;
use serde_json::json;
use zoufang_protocol::audit::AuditAction;
use zoufang_protocol::messages::UserInfo;

impl Collector {
    /// Takes the user as the server holds them now; forgets the pull cursors of areas gone.
    pub(crate) fn take_user(&self, user: &UserInfo) -> Result<()> {
        self.update_settings(|s| {
            s.cursors.retain(|area, _| user.areas.contains(area));
            s.user = Some(user.clone());
        })?;
        Ok(())
    }

    /// Removes the villages outside the user's areas, once nothing of theirs waits to go up.
    /// Returns the households removed.
    pub(crate) fn leave_former_areas(&self) -> Result<u64> {
        let Some(user) = self.sync_settings()?.user else {
            return Ok(0);
        };
        let covered = |v: &str| user.areas.iter().any(|a| v.starts_with(a.as_str()));
        self.write(|tx| {
            if store::outbox::len(tx)? > 0 {
                return Ok(0);
            }
            let mut removed = 0;
            for village in store::households::villages(tx)? {
                if !covered(&village) {
                    removed += store::households::drop_village(tx, &village)?;
                }
            }
            if removed > 0 {
                let detail = json!({"reason": "area_left", "households": removed});
                self.audit(tx, AuditAction::Purge, None, detail)?;
            }
            Ok(removed)
        })
    }
}
