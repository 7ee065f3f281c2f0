//! What the device remembers about its server (`meta` under `sync`): its credentials, the
//! user and areas it enrolled for, the pull cursors, the last sync and the clock.

use std::collections::BTreeMap;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::store::meta;
use zoufang_protocol::messages::{FormPublication, UserInfo};

/// What the device remembers about its server, in `meta` under `sync`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncSettings {
    pub device_id: Option<String>,
    pub device_token: Option<String>,
    /// When the token expires unless a sync renews it first.
    #[serde(default)]
    pub token_expires_at: Option<String>,
    pub user: Option<UserInfo>,
    #[serde(default)]
    pub cursors: BTreeMap<String, u64>,
    pub clock_offset_ms: Option<i64>,
    pub last_sync_at: Option<String>,
    pub hlc: Option<String>,
    /// Days between visits per assistance category, as the server last said: a household of
    /// one has its next due date set by the server.
    #[serde(default)]
    pub visit_frequencies: BTreeMap<String, u32>,
    /// When each form version was published, as the server last said: a visit dated before
    /// its form existed is a validation error.
    #[serde(default)]
    pub form_publications: Vec<FormPublication>,
}

impl SyncSettings {
    pub(crate) fn load(conn: &Connection) -> Result<Self> {
        Ok(meta::get(conn, meta::SYNC)?
            .map(|t| serde_json::from_str(&t))
            .transpose()?
            .unwrap_or_default())
    }

    pub(crate) fn save(&self, conn: &Connection) -> Result<()> {
        meta::set(conn, meta::SYNC, &serde_json::to_string(self)?)
    }
}
