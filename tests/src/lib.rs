// Test support: a failure to set up must stop the test loudly.
#![allow(
    missing_debug_implementations,
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic
)]
//! Helpers for the end-to-end tests: a real server on loopback and enrolled devices.
//! The tests themselves live in `tests/tests/`; helper programs in `src/bin/`.

/// The loopback link with faults (crate `zoufang-link`, shared with `zoufang bench`).
pub use zoufang_link as fault_proxy;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use chrono::{DateTime, TimeDelta, Utc};
use zoufang_core::protocol::messages::{Role, UserInfo};
use zoufang_core::sync::{HttpRequest, HttpResponse, ReqwestTransport, Transport, TransportError};
use zoufang_core::{Collector, StoreOptions};
use zoufang_server::at_rest::{AtRest, CipherSuite, ServerKey};
use zoufang_server::{AppState, BackgroundServer, PgStorage, SqliteStorage, Storage};

/// The environment variable naming a PostgreSQL cluster (a libpq connection string for an
/// administrative database): set, the server suites run on a fresh database of it instead
/// of SQLite. `scripts/with-postgres.sh` starts a throwaway cluster and sets it.
pub const POSTGRES_ENV: &str = "ZOUFANG_TEST_POSTGRES";

/// Which storage the suites run on.
pub fn backend() -> &'static str {
    if std::env::var_os(POSTGRES_ENV).is_some() {
        "postgres"
    } else {
        "sqlite"
    }
}

/// A new, empty PostgreSQL database of the test cluster, as a connection string.
pub fn fresh_postgres_database(admin: &str) -> String {
    let name = format!("zf_{}", uuid::Uuid::new_v4().simple());
    let mut client = postgres::Client::connect(admin, postgres::NoTls).expect("test cluster");
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .expect("test database");
    format!("{admin} dbname={name}")
}

/// The server storage of a test: SQLite in `dir`, or a fresh PostgreSQL database (attachment
/// contents in `dir` either way).
pub fn open_storage(dir: &std::path::Path) -> Arc<dyn Storage> {
    open_storage_at(
        dir,
        &std::env::var(POSTGRES_ENV)
            .ok()
            .map(|a| fresh_postgres_database(&a)),
    )
}

/// The server key of the tests' servers (64 hex digits; a real one comes from
/// `zoufang admin new-key`).
pub const TEST_SERVER_KEY: &str =
    "3c1f6a0e9b7d25c48e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f";

/// How the tests' servers keep their data: encrypted (AES-256), as a deployment should.
pub fn test_at_rest() -> AtRest {
    AtRest::Encrypted(Arc::new(
        ServerKey::parse(TEST_SERVER_KEY, CipherSuite::Aes256).expect("test key"),
    ))
}

/// A storage over `dir` and, when given, that PostgreSQL database.
fn open_storage_at(dir: &std::path::Path, database: &Option<String>) -> Arc<dyn Storage> {
    open_storage_kept(dir, database, &test_at_rest())
}

fn open_storage_kept(
    dir: &std::path::Path,
    database: &Option<String>,
    at_rest: &AtRest,
) -> Arc<dyn Storage> {
    match database {
        Some(url) => Arc::new(PgStorage::open(url, dir, at_rest).expect("postgres storage")),
        None => Arc::new(SqliteStorage::open(dir, at_rest).expect("server storage")),
    }
}

/// Where a test's server data lives, so that several server nodes can open the same: a
/// directory (SQLite, and the attachment contents) and, on PostgreSQL, one database.
pub struct SharedData {
    pub dir: tempfile::TempDir,
    database: Option<String>,
}

impl SharedData {
    pub fn new() -> Self {
        let database = std::env::var(POSTGRES_ENV)
            .ok()
            .map(|admin| fresh_postgres_database(&admin));
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
            database,
        }
    }

    /// One more node's storage over the same data.
    pub fn open_node(&self) -> Arc<dyn Storage> {
        open_storage_at(self.dir.path(), &self.database)
    }
}

impl Default for SharedData {
    fn default() -> Self {
        Self::new()
    }
}

/// A transport that sends each request to the next server of a list in turn: a device
/// behind a load balancer that lands on another node every time.
pub struct RoundRobin {
    pub nodes: Vec<ReqwestTransport>,
    next: AtomicU64,
}

impl RoundRobin {
    pub fn new(urls: &[&str]) -> Self {
        Self {
            nodes: urls
                .iter()
                .map(|u| ReqwestTransport::new(u).expect("transport"))
                .collect(),
            next: AtomicU64::new(0),
        }
    }
}

impl Transport for RoundRobin {
    fn send(&self, request: &HttpRequest) -> Result<HttpResponse, TransportError> {
        let n = self.next.fetch_add(1, Ordering::SeqCst) as usize;
        match self.nodes.get(n % self.nodes.len().max(1)) {
            Some(node) => node.send(request),
            None => Err(TransportError {
                message: "no server node".into(),
            }),
        }
    }
}

/// A server on a loopback port, stopped when dropped.
pub struct TestServer {
    pub url: String,
    pub storage: Arc<dyn Storage>,
    pub dir: tempfile::TempDir,
    database: Option<String>,
    _server: BackgroundServer,
}

impl TestServer {
    pub fn start() -> Self {
        Self::start_kept(&test_at_rest())
    }

    /// A server keeping its data as `at_rest` says.
    pub fn start_kept(at_rest: &AtRest) -> Self {
        let database = std::env::var(POSTGRES_ENV)
            .ok()
            .map(|admin| fresh_postgres_database(&admin));
        Self::start_on(at_rest, database, None)
    }

    /// A server on SQLite whatever the suite's backend (its whole data in one directory).
    pub fn start_on_sqlite(at_rest: &AtRest) -> Self {
        Self::start_on(at_rest, None, None)
    }

    /// A server whose clock reads `calendar` (months pass in a test).
    pub fn start_on_calendar(calendar: &Calendar) -> Self {
        let database = std::env::var(POSTGRES_ENV)
            .ok()
            .map(|admin| fresh_postgres_database(&admin));
        Self::start_on(&test_at_rest(), database, Some(calendar))
    }

    fn start_on(at_rest: &AtRest, database: Option<String>, calendar: Option<&Calendar>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let storage = open_storage_kept(dir.path(), &database, at_rest);
        zoufang_server::publish_defaults(storage.as_ref()).expect("publish the default form");
        let mut state = AppState::new(storage.clone());
        if let Some(calendar) = calendar {
            state.clock = calendar.clock();
        }
        let server = BackgroundServer::start(state, "127.0.0.1:0").expect("server started");
        Self {
            url: server.url.clone(),
            storage,
            dir,
            database,
            _server: server,
        }
    }

    /// Stops the server and closes its storage, leaving its data directory.
    pub fn stop(self) -> tempfile::TempDir {
        let Self {
            dir,
            storage,
            _server,
            ..
        } = self;
        drop(_server);
        drop(storage);
        dir
    }

    /// A second node over the same storage (nodes keep no state of their own).
    pub fn another_node(&self) -> BackgroundServer {
        let storage = open_storage_at(self.dir.path(), &self.database);
        BackgroundServer::start(AppState::new(storage), "127.0.0.1:0").expect("server started")
    }

    /// Creates a user with areas and returns a fresh enrolment token for them.
    pub fn user(&self, id: &str, role: Role, areas: &[&str]) -> String {
        let user = UserInfo {
            id: id.to_owned(),
            role,
            areas: areas.iter().map(|a| a.to_string()).collect(),
        };
        let _ = self.storage.create_user(&user, Utc::now());
        self.storage
            .issue_enrollment(id, std::time::Duration::from_secs(3600), Utc::now())
            .expect("enrolment token")
    }

    pub fn transport(&self) -> ReqwestTransport {
        ReqwestTransport::new(&self.url).expect("transport")
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self._server.addr
    }
}

/// A calendar a test moves forward by days: the server's and the phones' clocks read it.
#[derive(Clone, Default)]
pub struct Calendar(Arc<AtomicI64>);

impl Calendar {
    pub fn set_day(&self, day: i64) {
        self.0.store(day, Ordering::SeqCst);
    }

    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + TimeDelta::days(self.0.load(Ordering::SeqCst))
    }

    pub fn clock(&self) -> Arc<dyn Fn() -> DateTime<Utc> + Send + Sync> {
        let days = self.0.clone();
        Arc::new(move || Utc::now() + TimeDelta::days(days.load(Ordering::SeqCst)))
    }
}

/// A phone: its own store, enrolled with the server.
pub struct Device {
    pub collector: Collector,
    pub path: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Device {
    pub fn enrolled(server: &TestServer, user: &str, role: Role, areas: &[&str]) -> Self {
        let token = server.user(user, role, areas);
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("device.db");
        let collector = Collector::open(&path, &StoreOptions::default()).expect("device store");
        collector
            .enroll(&server.transport(), &token, &format!("{user}-phone"))
            .expect("enrol");
        Self {
            collector,
            path,
            dir,
        }
    }
}

/// A transport wrapper that counts requests and bytes, and can fail requests on demand:
/// a stand-in for a link that drops.
pub struct FlakyTransport<T: Transport> {
    pub inner: T,
    pub requests: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    /// Requests numbered in this set (1-based) get no answer...
    pub fail: parking_lot::Mutex<Vec<u64>>,
    /// ...and with this flag the request reaches the server but the answer is lost.
    pub lose_answer: bool,
}

impl<T: Transport> FlakyTransport<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            requests: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            fail: parking_lot::Mutex::new(Vec::new()),
            lose_answer: false,
        }
    }
}

impl<T: Transport> Transport for FlakyTransport<T> {
    fn send(&self, request: &HttpRequest) -> Result<HttpResponse, TransportError> {
        let n = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
        let failing = self.fail.lock().contains(&n);
        if failing && !self.lose_answer {
            return Err(TransportError {
                message: "link down".into(),
            });
        }
        self.bytes_sent
            .fetch_add(request.body.len() as u64, Ordering::SeqCst);
        let response = self.inner.send(request)?;
        if failing {
            return Err(TransportError {
                message: "answer lost".into(),
            });
        }
        self.bytes_received
            .fetch_add(response.body.len() as u64, Ordering::SeqCst);
        Ok(response)
    }
}

/// Every file under `dir`, at any depth.
pub fn files_under(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("a directory") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// A JSON object literal as a map.
pub fn obj(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    v.as_object().cloned().expect("an object literal")
}

/// A household of one head in `village`, as the sync tests use it.
pub fn new_household(c: &Collector, village: &str) -> String {
    use serde_json::json;
    c.add_household(zoufang_core::records::NewHousehold {
        village_code: village.into(),
        fields: obj(json!({"phone": "13812345678", "urban_rural": "rural", "address": "三组", "next_visit_due": "2026-12-01"})),
        members: vec![obj(json!({"name": "吉克阿呷", "id_type": "resident_id", "id_number": "11010519491231002X",
                                 "relationship": "02", "lives_together": "yes", "health": "healthy"}))],
    })
    .expect("household added")
}

/// A routine visit of `household` with what the coordinator asks at the door (nobody at
/// risk), still a draft. Returns its id.
pub fn routine_draft(c: &Collector, household: &str) -> String {
    use serde_json::json;
    let v = c
        .start_visit(Some(household), "routine")
        .expect("visit started");
    c.set_answers(
        &v.id,
        &obj(json!({
            "trigger_source": "schedule", "outcome": "completed", "interviewee_name": "吉克阿呷",
            "location_missing_reason": "no_signal", "basic_living_difficulty": "no", "risk_level": "low",
            "recommendation": "monitor", "emergency": "no", "next_visit_due": "2027-03-01",
            "investigator_1_name": "马海木呷", "consent_privacy": "yes"
        })),
    )
    .expect("answers saved");
    v.id
}

/// A completed routine visit of `household`, nobody at risk.
pub fn routine_visit(c: &Collector, household: &str) -> String {
    let v = routine_draft(c, household);
    c.complete_visit(&v).expect("visit completed");
    v
}

/// A routine visit signed by its interviewee on the draft, completed, then marked signed.
pub fn signed_routine_visit(c: &Collector, household: &str) -> String {
    let v = routine_draft(c, household);
    c.add_signature(&v, "interviewee_signature", &signature_png(7))
        .expect("signature added");
    c.complete_visit(&v).expect("visit completed");
    c.sign_visit(&v).expect("visit signed");
    v
}

/// Sends a request with a phone's own credentials, as a tampered or a reviewer's app would.
pub fn send_as(
    server: &TestServer,
    phone: &Device,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> HttpResponse {
    use zoufang_core::sync::LocalState;
    let (_, token) = phone
        .collector
        .credentials()
        .expect("credentials")
        .expect("enrolled");
    server
        .transport()
        .send(&HttpRequest {
            method: method.into(),
            path: path.into(),
            headers: vec![("Authorization".into(), format!("Bearer {token}"))],
            body,
        })
        .expect("an answer")
}

/// A camera JPEG of `w`×`h` pixels of noise: noise hardly compresses, so a test gets the size
/// it asks for.
pub fn noisy_jpeg(w: u32, h: u32, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let img = image::RgbImage::from_fn(w, h, |_, _| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let [a, b, c, _] = state.to_le_bytes();
        image::Rgb([a, b, c])
    });
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
        .encode_image(&img)
        .expect("JPEG encoded");
    jpeg
}

/// A signature image (strokes on a transparent ground).
pub fn signature_png(seed: u32) -> Vec<u8> {
    let strokes = image::GrayAlphaImage::from_fn(500, 160, |x, y| {
        image::LumaA([
            0,
            if (x + 2 * y + seed).is_multiple_of(13) {
                255
            } else {
                0
            },
        ])
    });
    let mut png = Vec::new();
    strokes
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("PNG encoded");
    png
}

/// Completes an application survey of a newly found household in `village` with `photo` as the
/// house's outside photo (stored within `limits`) and the three signatures it needs. Returns the
/// visit's id and the photo's attachment.
pub fn survey_with_photo(
    c: &Collector,
    village: &str,
    photo: &[u8],
    limits: &zoufang_core::media::PhotoLimits,
) -> (String, zoufang_core::records::Attachment) {
    use serde_json::json;
    let v = c
        .start_visit(None, "application_survey")
        .expect("visit started")
        .id;
    let member = |name: &str, id: &str, relationship: &str| {
        json!({"name": name, "id_type": "resident_id", "id_number": id, "relationship": relationship,
               "lives_together": "yes", "health": "healthy", "ethnicity": "07"})
    };
    c.set_answers(
        &v,
        &obj(json!({
            "trigger_source": "schedule", "village_code": village, "outcome": "completed",
            "interviewee_name": "吉克阿呷", "urban_rural": "rural",
            "location": {"lat": 27.9, "lon": 102.2, "accuracy_m": 12.0, "provider": "gps", "mock": false},
            "members": [member("吉克阿呷", "11010519491231002X", "02"), member("吉克曲布", "440524188001010014", "10")],
            "income_items": [{"income_kind": "wages", "income_amount": 2_400_000}],
            "asset_items": [{"asset_kind": "house", "house_structure": "earth_wood", "unsafe_grade": "c"}],
            "expense_items": [{"expense_kind": "medical", "expense_amount": 2_200_000}],
            "basic_living_difficulty": "yes", "risk_level": "high", "recommendation": "apply",
            "explanation": "主要劳动力重病", "cadre_related": "no", "consent_verification": "yes",
            "emergency": "no", "next_visit_due": "2027-03-01", "consent_privacy": "yes",
            "investigator_1_name": "马海木呷", "investigator_2_name": "吉克曲布"
        })),
    )
    .expect("answers saved");
    let attachment = c
        .add_photo(&v, "house_exterior_photo", photo, limits)
        .expect("photo added");
    for (i, field) in [
        "investigator_1_signature",
        "investigator_2_signature",
        "interviewee_signature",
    ]
    .into_iter()
    .enumerate()
    {
        c.add_signature(&v, field, &signature_png(i as u32))
            .expect("signature added");
    }
    if let Err(e) = c.complete_visit(&v) {
        panic!("the survey does not complete: {e:?}");
    }
    (v, attachment)
}
