//! The HTTP API (axum). Handlers are thin: extractors give them the authenticated device
//! (`Device`, `WipedDevice`) and the decoded message (`Msg`, its protocol version checked);
//! they run the storage call on the blocking pool and answer zstd-compressed JSON. Errors are
//! JSON with a stable code. Logs carry routes, device ids, counts and timings — never personal
//! data. Attachment uploads and downloads are in `attachments.rs`.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use zoufang_protocol::messages::{
    self, CatalogRequest, CatalogResponse, ConflictsResponse, DuplicatesResponse, EnrollRequest,
    EnrollResponse, ErrorBody, ErrorDetail, PROTOCOL_VERSION, PullRequest, PushRequest,
    PushResponse, ResolveRequest, SnapshotRequest,
};

mod attachments;
mod streams;

use crate::blobs::ContentKey;
use crate::storage::{DeviceAuth, ServerError, Storage};
use attachments::{attachment_status, get_attachment, put_chunk};

/// Largest request body accepted, compressed.
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// Most changes in one push.
pub const MAX_PUSH_CHANGES: usize = 5000;
/// Most content bytes in one attachment chunk (devices send at most 1 MB).
pub const MAX_CHUNK_CONTENT: usize = 4 * 1024 * 1024;
/// Most contents asked about in one status request.
pub const MAX_STATUS_CONTENTS: usize = 1000;
/// Longest a request may take, its body included: a 1 MB chunk at 20 KB/s needs 50 s, a
/// large village's snapshot a little more on 2G. Past it the answer is 408 and the device
/// resumes.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Clone)]
pub struct AppState {
    pub storage: Arc<dyn Storage>,
    pub clock: Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>,
    pub limits: Arc<RateLimits>,
    /// Behind a reverse proxy: the client is the last address of `X-Forwarded-For` (the one the
    /// proxy appended), not the proxy's socket. Off unless the proxy is ours.
    pub trust_forwarded_for: bool,
    pub uploads: Arc<UploadsInFlight>,
    /// How long a device token lives without a sync (each sync renews it).
    pub device_token_lifetime: Duration,
}

/// The chunk being received for each content. A device whose connection dropped mid-chunk
/// asks at once how far the server got; the answer must wait until what arrived before the
/// cut is written, or the device would resume from too early and be refused.
#[derive(Debug, Default)]
pub struct UploadsInFlight {
    locks: parking_lot::Mutex<std::collections::HashMap<ContentKey, Arc<tokio::sync::Mutex<()>>>>,
}

/// How long a status question waits for a chunk still being received (a connection that died
/// without the server noticing is given up on after [`CHUNK_IDLE`]).
const STATUS_WAIT: Duration = Duration::from_secs(10);
/// A chunk whose body stops arriving for this long is treated as cut.
const CHUNK_IDLE: Duration = Duration::from_secs(30);

impl UploadsInFlight {
    fn lock_of(&self, key: &ContentKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock();
        if locks.len() > 10_000 {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(key.clone()).or_default().clone()
    }

    /// Waits (bounded) until no chunk of `key` is being received.
    async fn settled(&self, key: &ContentKey) {
        let lock = self.lock_of(key);
        let _ = tokio::time::timeout(STATUS_WAIT, lock.lock()).await;
    }
}

/// Per-address budgets for the doors an attacker would knock on: enrolment attempts (an
/// enrolment token is the one secret a person types) and failed authentications. A device with
/// a valid token is never slowed down by them.
pub struct RateLimits {
    enroll: governor::DefaultKeyedRateLimiter<IpAddr>,
    auth_failures: governor::DefaultKeyedRateLimiter<IpAddr>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RateLimits")
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        Self::per_minute(10, 30)
    }
}

impl RateLimits {
    /// `enrollments` attempts and `auth_failures` failed authentications per address and
    /// minute, each also the burst allowed at once.
    pub fn per_minute(enrollments: u32, auth_failures: u32) -> Self {
        let quota =
            |n: u32| governor::Quota::per_minute(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN));
        Self {
            enroll: governor::RateLimiter::keyed(quota(enrollments)),
            auth_failures: governor::RateLimiter::keyed(quota(auth_failures)),
        }
    }

    fn check(
        limiter: &governor::DefaultKeyedRateLimiter<IpAddr>,
        ip: IpAddr,
    ) -> Result<(), ServerError> {
        use governor::clock::{Clock, DefaultClock};
        if limiter.len() > 100_000 {
            limiter.retain_recent();
        }
        limiter.check_key(&ip).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            tracing::warn!(
                route_budget = "exhausted",
                "rate limit reached for an address"
            );
            ServerError::RateLimited {
                retry_after_s: wait.as_secs().max(1),
            }
        })
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppState")
    }
}

impl AppState {
    pub fn new(storage: Arc<dyn Storage>) -> Self {
        Self {
            storage,
            clock: Arc::new(Utc::now),
            limits: Arc::new(RateLimits::default()),
            trust_forwarded_for: false,
            uploads: Arc::default(),
            device_token_lifetime: crate::service::access::DEVICE_TOKEN_LIFETIME,
        }
    }
}

struct ApiError(ServerError);

impl From<ServerError> for ApiError {
    fn from(e: ServerError) -> Self {
        Self(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(code = self.0.code(), "request failed: {}", self.0);
        }
        let body = ErrorBody {
            protocol: PROTOCOL_VERSION,
            error: ErrorDetail {
                code: self.0.code().to_owned(),
                message: self.0.to_string(),
            },
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            json,
        )
            .into_response();
        if let ServerError::RateLimited { retry_after_s } = self.0 {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
        }
        response
    }
}

type ApiResult = Result<Response, ApiError>;

fn message<T: DeserializeOwned>(body: &[u8]) -> Result<T, ServerError> {
    match messages::protocol_of(body) {
        Some(PROTOCOL_VERSION) => {}
        Some(got) => {
            return Err(ServerError::Protocol {
                got,
                supported: PROTOCOL_VERSION,
            });
        }
        None => {
            return Err(ServerError::bad(
                "bad_message",
                "the body is not a Zoufang message with a protocol version",
            ));
        }
    }
    messages::decode(body).map_err(|e| ServerError::bad("bad_message", e.to_string()))
}

fn reply<T: Serialize>(value: &T) -> ApiResult {
    let body = messages::encode(value).map_err(|e| ServerError::Storage(e.to_string()))?;
    Ok((
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CONTENT_ENCODING, HeaderValue::from_static("zstd")),
        ],
        body,
    )
        .into_response())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ServerError> + Send + 'static,
) -> Result<T, ServerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ServerError::Storage("a storage task failed".into()))?
}

/// The address a request comes from (see [`AppState::trust_forwarded_for`]).
fn client_ip(state: &AppState, headers: &HeaderMap, peer: SocketAddr) -> IpAddr {
    if state.trust_forwarded_for {
        let forwarded = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|ip| ip.trim().parse().ok());
        if let Some(ip) = forwarded {
            return ip;
        }
    }
    peer.ip()
}

/// The device of the bearer token. Failures count against the address's budget; past it the
/// answer is 429 instead of 401. With `audit_upload`, a device ordered wiped is let through to
/// hand over its audit trail (its last words) instead of getting 410.
async fn authenticate_as(
    state: &AppState,
    headers: &HeaderMap,
    peer: SocketAddr,
    audit_upload: bool,
) -> Result<DeviceAuth, ServerError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let (storage, now) = (state.storage.clone(), (state.clock)());
    let result = match token {
        Some(token) if audit_upload => {
            blocking(move || storage.authenticate_for_audit(&token, now)).await
        }
        Some(token) => blocking(move || storage.authenticate(&token, now)).await,
        None => Err(ServerError::Unauthorized("missing bearer token")),
    };
    if let Err(ServerError::Unauthorized(_)) = &result {
        RateLimits::check(&state.limits.auth_failures, client_ip(state, headers, peer))?;
    }
    result
}

/// The device of the bearer token, as a handler argument: failures count against the
/// address's budget (429 past it, 401 before).
struct Device(DeviceAuth);

impl FromRequestParts<AppState> for Device {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        device_of(parts, state, false).await.map(Self)
    }
}

/// As [`Device`], letting a device ordered wiped through: its audit upload is the wipe's last
/// words.
struct WipedDevice(DeviceAuth);

impl FromRequestParts<AppState> for WipedDevice {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        device_of(parts, state, true).await.map(Self)
    }
}

async fn device_of(
    parts: &Parts,
    state: &AppState,
    audit_upload: bool,
) -> Result<DeviceAuth, Response> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .ok_or_else(|| ApiError(ServerError::Storage("no peer address".into())).into_response())?;
    authenticate_as(state, &parts.headers, peer, audit_upload)
        .await
        .map_err(|e| ApiError(e).into_response())
}

/// A protocol message in the body, decoded after its version is checked; with the body's
/// compressed size, for the logs.
struct Msg<T>(T, usize);

impl<T: DeserializeOwned> FromRequest<AppState> for Msg<T> {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &AppState) -> Result<Self, Response> {
        // axum's body limit answers 413 from here.
        let body = Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let value = message(&body).map_err(|e| ApiError(e).into_response())?;
        Ok(Self(value, body.len()))
    }
}

async fn enroll(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    RateLimits::check(&state.limits.enroll, client_ip(&state, &headers, peer))?;
    let req: EnrollRequest = message(&body)?;
    let (storage, now) = (state.storage.clone(), (state.clock)());
    let lifetime = state.device_token_lifetime;
    let enrolled = blocking(move || storage.enroll(&req, lifetime, now)).await?;
    match &enrolled.predecessor {
        Some(former) => tracing::info!(
            device = %enrolled.device_id,
            user = %enrolled.user.id,
            predecessor = %former,
            "device enrolled again, succeeding its former enrolment"
        ),
        None => {
            tracing::info!(device = %enrolled.device_id, user = %enrolled.user.id, "device enrolled");
        }
    }
    reply(&EnrollResponse {
        protocol: PROTOCOL_VERSION,
        device_id: enrolled.device_id,
        device_token: enrolled.device_token,
        token_expires_at: enrolled.token_expires_at,
        user: enrolled.user,
        server_time: now.to_rfc3339(),
        predecessor: enrolled.predecessor,
    })
}

/// An audit batch riding on another request, as the `/v1/audit` upload it stands for.
fn audit_upload(auth: &DeviceAuth, batch: messages::AuditBatch) -> messages::AuditUploadRequest {
    messages::AuditUploadRequest {
        protocol: PROTOCOL_VERSION,
        device_id: auth.device_id.clone(),
        chain_hash: batch.chain_hash,
        entries: batch.entries,
        head: batch.head,
    }
}

async fn catalog(
    State(state): State<AppState>,
    Device(auth): Device,
    Msg(mut req, _): Msg<CatalogRequest>,
) -> ApiResult {
    let (storage, now) = (state.storage.clone(), (state.clock)());
    let lifetime = state.device_token_lifetime;
    let response = blocking(move || {
        let audit = match req.audit.take() {
            Some(batch) => Some(storage.upload_audit(&auth, &audit_upload(&auth, batch), now)?),
            None => None,
        };
        let (forms, code_lists) = storage.catalog(&req)?;
        Ok(CatalogResponse {
            protocol: PROTOCOL_VERSION,
            server_time: now.to_rfc3339(),
            forms,
            code_lists,
            audit,
            visit_frequencies: storage.visit_frequencies()?,
            possession_nonce: Some(storage.possession_nonce(&auth, now)?),
            // Every sync starts here: the sliding renewal of the device's token.
            token_expires_at: Some(storage.renew_token(&auth, lifetime, now)?),
            form_publications: storage.form_publications()?,
            compact_audit: true,
            streams: true,
            answers_as_applied: true,
            user: Some(auth.user),
        })
    })
    .await?;
    reply(&response)
}

/// The checks a push passes before anything is applied: the body's device is the token's, the
/// batch is within bounds, the device's clock reading is an instant.
fn checked_push(auth: &DeviceAuth, req: &PushRequest) -> Result<DateTime<Utc>, ServerError> {
    if req.device_id != auth.device_id {
        tracing::warn!(device = %auth.device_id, "push refused: the body names another device");
        return Err(ServerError::Forbidden(
            "the push names another device than the token's (a replayed body?)".into(),
        ));
    }
    if req.changes.len() > MAX_PUSH_CHANGES || req.held.len() > MAX_PUSH_CHANGES {
        return Err(ServerError::bad(
            "too_many_changes",
            format!("at most {MAX_PUSH_CHANGES} changes per push"),
        ));
    }
    DateTime::parse_from_rfc3339(&req.device_time)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| ServerError::bad("bad_message", "device_time is not an RFC 3339 instant"))
}

/// Applies a checked push and the audit entries riding on it (on the blocking pool).
fn apply_push(
    storage: &dyn Storage,
    auth: &DeviceAuth,
    req: PushRequest,
    device_now: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(Vec<messages::Ack>, Option<messages::AuditUploadResponse>), ServerError> {
    let mut acks = held_acks(storage, auth, &req.held)?;
    acks.extend(storage.push(auth, &req.changes, device_now, now)?);
    // The trail's entries riding along: a transaction of their own, after the changes (a
    // cut between the two leaves them pending on the device, sent again and deduplicated).
    let audit = match req.audit {
        Some(batch) => Some(storage.upload_audit(auth, &audit_upload(auth, batch), now)?),
        None => None,
    };
    Ok((acks, audit))
}

/// What was recorded for the changes a device takes the server to hold (`PushRequest::held`);
/// refused if one did not arrive, so nothing is applied after a gap.
fn held_acks(
    storage: &dyn Storage,
    auth: &DeviceAuth,
    held: &[u64],
) -> Result<Vec<messages::Ack>, ServerError> {
    if held.is_empty() {
        return Ok(Vec::new());
    }
    let (acks, _) = storage.recorded_acks(auth, held)?;
    let recorded: std::collections::HashSet<u64> = acks.iter().map(|a| a.seq).collect();
    if held.iter().any(|seq| !recorded.contains(seq)) {
        return Err(ServerError::Conflict {
            code: "not_held",
            message: "changes the device took as arrived had not; they must be sent again".into(),
        });
    }
    Ok(acks)
}

async fn push(
    State(state): State<AppState>,
    Device(auth): Device,
    Msg(req, bytes): Msg<PushRequest>,
) -> ApiResult {
    let started = Instant::now();
    let device_now = checked_push(&auth, &req)?;
    let now = (state.clock)();
    let storage = state.storage.clone();
    let device = auth.device_id.clone();
    let count = req.changes.len();
    let (acks, audit) =
        blocking(move || apply_push(storage.as_ref(), &auth, req, device_now, now)).await?;
    tracing::info!(device = %device, changes = count, bytes = bytes, ms = started.elapsed().as_millis() as u64, "push");
    reply(&PushResponse {
        protocol: PROTOCOL_VERSION,
        server_time: now.to_rfc3339(),
        acks,
        audit,
    })
}

/// What the server recorded for some of the device's changes: after a push cut on the way,
/// the device learns which of its changes arrived without sending them again.
async fn recorded_acks(
    State(state): State<AppState>,
    Device(auth): Device,
    Msg(req, _): Msg<messages::AcksRequest>,
) -> ApiResult {
    if req.device_id != auth.device_id {
        return Err(ServerError::Forbidden(
            "the request names another device than the token's".into(),
        )
        .into());
    }
    if req.seqs.len() > MAX_PUSH_CHANGES * streams::MAX_STREAM_MESSAGES {
        return Err(ServerError::bad("too_many_changes", "too many changes asked about").into());
    }
    let (storage, now) = (state.storage.clone(), (state.clock)());
    let (acks, audit_through) = blocking(move || storage.recorded_acks(&auth, &req.seqs)).await?;
    reply(&PushResponse {
        protocol: PROTOCOL_VERSION,
        server_time: now.to_rfc3339(),
        acks,
        audit: Some(messages::AuditUploadResponse {
            protocol: PROTOCOL_VERSION,
            server_time: now.to_rfc3339(),
            accepted_through: audit_through,
            chain_break: None,
        }),
    })
}

async fn pull(
    State(state): State<AppState>,
    Device(auth): Device,
    Msg(req, _): Msg<PullRequest>,
) -> ApiResult {
    if let Some(page) = req.page {
        return streams::pull_stream(&state, auth, req, page).await;
    }
    let started = Instant::now();
    let (storage, now) = (state.storage.clone(), (state.clock)());
    let device = auth.device_id.clone();
    let response = blocking(move || storage.pull(&auth, &req, now)).await?;
    tracing::info!(device = %device, entries = response.entries.len(), more = response.more, ms = started.elapsed().as_millis() as u64, "pull");
    reply(&response)
}

async fn snapshot(
    State(state): State<AppState>,
    Device(auth): Device,
    Msg(req, _): Msg<SnapshotRequest>,
) -> ApiResult {
    let (storage, now) = (state.storage.clone(), (state.clock)());
    let device = auth.device_id.clone();
    let response = blocking(move || storage.snapshot(&auth, &req.village_code, now)).await?;
    tracing::info!(device = %device, records = response.records.len(), "snapshot");
    reply(&response)
}

async fn conflicts(State(state): State<AppState>, Device(auth): Device) -> ApiResult {
    let storage = state.storage.clone();
    let conflicts = blocking(move || storage.conflicts(&auth)).await?;
    reply(&ConflictsResponse {
        protocol: PROTOCOL_VERSION,
        conflicts,
    })
}

async fn duplicates(State(state): State<AppState>, Device(auth): Device) -> ApiResult {
    let storage = state.storage.clone();
    let duplicates = blocking(move || storage.possible_duplicates(&auth)).await?;
    reply(&DuplicatesResponse {
        protocol: PROTOCOL_VERSION,
        duplicates,
    })
}

async fn resolve(
    State(state): State<AppState>,
    Device(auth): Device,
    Path(id): Path<String>,
    Msg(req, _): Msg<ResolveRequest>,
) -> ApiResult {
    let (storage, now) = (state.storage.clone(), (state.clock)());
    let user = auth.user.id.clone();
    let resolved = blocking(move || storage.resolve_conflict(&auth, &id, &req.value, now)).await?;
    tracing::info!(conflict = %resolved.id, reviewer = %user, "conflict resolved by a reviewer");
    reply(&resolved)
}

async fn handovers(State(state): State<AppState>, Device(auth): Device) -> ApiResult {
    let storage = state.storage.clone();
    let handovers = blocking(move || storage.handovers(&auth)).await?;
    reply(&messages::HandoversResponse {
        protocol: PROTOCOL_VERSION,
        handovers,
    })
}

async fn merge(
    State(state): State<AppState>,
    Device(auth): Device,
    Msg(req, _): Msg<messages::MergeRequest>,
) -> ApiResult {
    let (storage, now) = (state.storage.clone(), (state.clock)());
    let user = auth.user.id.clone();
    let (survivor, merged) = (req.survivor.clone(), req.merged.clone());
    blocking(move || storage.merge_households(&auth, &survivor, &merged, now)).await?;
    tracing::info!(survivor = %req.survivor, merged = %req.merged, reviewer = %user, "households merged");
    reply(&serde_json::json!({"protocol": PROTOCOL_VERSION, "merged": req.merged}))
}

async fn merge_members(
    State(state): State<AppState>,
    Device(auth): Device,
    Msg(req, _): Msg<messages::MergeRequest>,
) -> ApiResult {
    let (storage, now) = (state.storage.clone(), (state.clock)());
    let user = auth.user.id.clone();
    let (survivor, merged) = (req.survivor.clone(), req.merged.clone());
    blocking(move || storage.merge_members(&auth, &survivor, &merged, now)).await?;
    tracing::info!(survivor = %req.survivor, merged = %req.merged, reviewer = %user, "members merged");
    reply(&serde_json::json!({"protocol": PROTOCOL_VERSION, "merged": req.merged}))
}

async fn move_household(
    State(state): State<AppState>,
    Device(auth): Device,
    Msg(req, _): Msg<messages::MoveRequest>,
) -> ApiResult {
    let (storage, now) = (state.storage.clone(), (state.clock)());
    let user = auth.user.id.clone();
    let (household, village) = (req.household.clone(), req.village_code.clone());
    blocking(move || storage.move_household(&auth, &household, &village, now)).await?;
    tracing::info!(household = %req.household, reviewer = %user, "household moved");
    reply(&serde_json::json!({"protocol": PROTOCOL_VERSION, "moved": req.household}))
}

async fn audit(
    State(state): State<AppState>,
    WipedDevice(auth): WipedDevice,
    Msg(req, _): Msg<messages::AuditUploadRequest>,
) -> ApiResult {
    let (storage, now) = (state.storage.clone(), (state.clock)());
    let device = auth.device_id.clone();
    let count = req.entries.len();
    let response = blocking(move || storage.upload_audit(&auth, &req, now)).await?;
    tracing::info!(device = %device, entries = count, through = response.accepted_through, broken = response.chain_break.is_some(), "audit upload");
    reply(&response)
}

async fn health() -> &'static str {
    "ok"
}

/// The API's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/enroll", post(enroll))
        .route("/v1/catalog", post(catalog))
        .route("/v1/push", post(push))
        .route("/v1/push/stream", post(streams::push_stream))
        .route("/v1/push/acks", post(recorded_acks))
        .route("/v1/pull", post(pull))
        .route("/v1/snapshot", post(snapshot))
        .route("/v1/conflicts", get(conflicts))
        .route("/v1/duplicates", get(duplicates))
        .route("/v1/households/merge", post(merge))
        .route("/v1/households/move", post(move_household))
        .route("/v1/members/merge", post(merge_members))
        .route("/v1/handovers", get(handovers))
        .route("/v1/conflicts/{id}/resolve", post(resolve))
        .route("/v1/audit", post(audit))
        .route("/v1/attachments/status", post(attachment_status))
        .route(
            "/v1/attachments/{algorithm}/{hash}",
            put(put_chunk).get(get_attachment),
        )
        // axum's own limit, applied as the body is read: a sender past it still reads its 413
        // (tower-http's RequestBodyLimitLayer answers from the Content-Length and closes, and
        // a device that cannot read the answer would retry the same body on a weak link).
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                |request: &axum::http::Request<axum::body::Body>| {
                    // The route, never the path: a path can name a photo's content hash.
                    let route = request
                        .extensions()
                        .get::<axum::extract::MatchedPath>()
                        .map_or("unmatched", axum::extract::MatchedPath::as_str);
                    tracing::info_span!("request", method = %request.method(), route = %route)
                },
            ),
        )
        .with_state(state)
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (what a service manager or a container runtime
/// sends): the server stops accepting, finishes the requests in flight, then returns.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutdown requested; finishing the requests in flight");
}

/// Serves until `shutdown` completes. Returns the bound address through `bound` first.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(address = ?addr, "zoufang server listening");
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// PEM files of the server's certificate chain and private key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub certificate_chain: std::path::PathBuf,
    pub private_key: std::path::PathBuf,
}

/// As [`serve`], over TLS (rustls: TLS 1.3 and 1.2 with its safe defaults, ALPN h2 and
/// http/1.1). The certificate is read once at start.
pub async fn serve_tls(
    state: AppState,
    listener: std::net::TcpListener,
    tls: &TlsFiles,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // One process-wide provider: ring, the one the HTTP client already links.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(
        &tls.certificate_chain,
        &tls.private_key,
    )
    .await?;
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    tracing::info!(address = ?listener.local_addr().ok(), "zoufang server listening (TLS)");
    listener.set_nonblocking(true)?;
    axum_server::from_tcp_rustls(listener, config)?
        .handle(handle)
        .serve(router(state).into_make_service_with_connect_info::<SocketAddr>())
        .await
}

/// A server running on its own thread and runtime: for the CLI's demo and for tests.
/// Stops when dropped.
pub struct BackgroundServer {
    pub url: String,
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for BackgroundServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackgroundServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl BackgroundServer {
    /// Binds `addr` (use port 0 for any free port) and serves on a new thread.
    pub fn start(state: AppState, addr: &str) -> std::io::Result<Self> {
        Self::start_with(state, addr, None)
    }

    /// As [`BackgroundServer::start`], over TLS; the URL is `https://`.
    pub fn start_tls(state: AppState, addr: &str, tls: TlsFiles) -> std::io::Result<Self> {
        Self::start_with(state, addr, Some(tls))
    }

    fn start_with(state: AppState, addr: &str, tls: Option<TlsFiles>) -> std::io::Result<Self> {
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let bound = std_listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let shutdown = async {
                    let _ = stopped.await;
                };
                let served = match tls {
                    Some(tls) => serve_tls(state, std_listener, &tls, shutdown).await,
                    None => match tokio::net::TcpListener::from_std(std_listener) {
                        Ok(listener) => serve(state, listener, shutdown).await,
                        Err(e) => Err(e),
                    },
                };
                if let Err(e) = served {
                    tracing::error!("server stopped: {e}");
                }
            });
        });
        Ok(Self {
            url: format!("{scheme}://{bound}"),
            addr: bound,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for BackgroundServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
