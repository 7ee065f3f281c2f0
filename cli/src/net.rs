//! The networked commands: `serve` (the provincial server), `admin` (acting on a server's data
//! directory) and `device` (a phone at a desk: enrol, sync, conflicts).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;
use serde_json::json;
use zoufang_core::Collector;
use zoufang_core::protocol::messages::{Role, UserInfo};
use zoufang_core::sync::{ReqwestTransport, SyncListener, SyncPhase, SyncProgress};
use zoufang_server::{AppState, PgStorage, SqliteStorage, Storage};

use crate::server_key::{self, AtRestArgs};
use crate::{CliResult, Failure, Out, fail, parse_json, read_file};
use zoufang_server::at_rest::AtRest;

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Make a server key: 32 random bytes as 64 hex digits, into a new owner-only file (or to
    /// stdout). Keep a copy offline: without it the data cannot be read.
    NewKey {
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Re-encrypt a stopped server's data (database and photos) under a new key, from the
    /// current key or, with --plaintext, from clear. Run again after an interruption.
    RotateKey {
        #[arg(long)]
        new_key_file: PathBuf,
        /// The new key's suite: aes256 or sm4.
        #[arg(long, default_value = "aes256")]
        new_cipher: String,
    },
    /// Create a user with a role and areas (region-code prefixes).
    UserAdd {
        id: String,
        #[arg(long)]
        role: String,
        #[arg(long = "area", required = true)]
        areas: Vec<String>,
    },
    /// Replace a user's areas.
    UserAreas {
        id: String,
        #[arg(long = "area", required = true)]
        areas: Vec<String>,
    },
    UserList,
    /// Issue a one-time enrolment token for a user's new device.
    EnrollToken {
        user: String,
        #[arg(long, default_value_t = 7)]
        days: u64,
    },
    /// Publish a form definition (a new version), checked first.
    FormPublish {
        file: PathBuf,
    },
    DeviceList,
    DeviceRevoke {
        id: String,
    },
    /// Order a device wiped: at its next contact it uploads its audit trail, then destroys its
    /// store, and the app destroys the key.
    DeviceWipe {
        id: String,
    },
    /// A device's audit trail as the server holds it.
    DeviceAudit {
        id: String,
    },
    /// Re-verify every audit chain (each device's and the server's own); exit 1 on a break.
    AuditVerify,
    Stats,
    /// Merge two registrations of one family (same village): members and visits move to the
    /// survivor, the merged household stays as a tombstone naming it.
    MergeHouseholds {
        survivor: String,
        merged: String,
    },
    /// Move a household (members, visits) to another village: the old village's phones lose
    /// it, the new village's gain it.
    MoveHousehold {
        household: String,
        village: String,
    },
    /// How often households of an assistance category (a `programme` code: dibao, tekun...)
    /// are visited, in days: their next due date then follows from each visit. Without
    /// arguments, lists the frequencies.
    VisitFrequency {
        category: Option<String>,
        days: Option<u32>,
    },
    /// Changes handed to an area's reviewers by phones whose users were moved away.
    Handovers {
        #[arg(long, default_value = "51")]
        area: String,
    },
    /// Members holding one resident ID in two households (open pairs), within an area.
    Duplicates {
        /// A region-code prefix; the whole province (`51`) when left out.
        #[arg(long, default_value = "51")]
        area: String,
    },
    /// Visits whose photos or signatures have not all arrived (verified) yet.
    AwaitingAttachments,
    /// Copy this SQLite data directory's server into an empty PostgreSQL database (devices go
    /// on syncing without enrolling again; attachment contents stay in the data directory,
    /// which the PostgreSQL nodes then use as theirs).
    CopyToPostgres {
        /// The target, `postgres://user@host/db`.
        #[arg(long)]
        to: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum DeviceCommand {
    /// Enrol this store with a server using an enrolment token.
    Enroll {
        #[arg(long)]
        token: String,
        #[arg(long, default_value = "desk")]
        name: String,
    },
    /// Sync with the server, with a progress bar.
    Sync,
    /// Enrolment, pending changes, conflicts, last sync, clock offset.
    Status,
    /// Open conflicts: every competing value with who and when.
    Conflicts,
    /// Resolve a conflict with a JSON value (one of the competing values, or a new one).
    Resolve { conflict: String, value: String },
    /// Changes the server refused (kept, never dropped).
    Rejected,
    /// Completed visits whose photos or signatures have not all reached the server.
    PendingAttachments,
    /// Download an attachment content by its hash (reviewers), checked against the hash.
    FetchAttachment {
        content_hash: String,
        #[arg(long)]
        out: PathBuf,
        /// The hash's algorithm: sha256, or sm3 for a store in the national mode.
        #[arg(long, default_value = "sha256")]
        algorithm: String,
    },
}

/// Where a server's data is and how it is kept.
pub struct ServerData {
    pub data: Option<PathBuf>,
    pub database: Option<String>,
    pub at_rest: AtRest,
}

impl ServerData {
    fn dir(&self) -> Result<&PathBuf, Failure> {
        self.data
            .as_ref()
            .ok_or_else(|| fail("no_data_dir", "give --data DIR or set ZOUFANG_DATA"))
    }

    /// The server's storage: SQLite in the data directory, or, with `--database
    /// postgres://...`, PostgreSQL (the data directory then holds only the attachment
    /// contents, shared by nodes).
    fn storage(&self) -> Result<Arc<dyn Storage>, Failure> {
        let dir = self.dir()?;
        let opened: Result<Arc<dyn Storage>, zoufang_server::ServerError> = match &self.database {
            Some(url) => {
                PgStorage::open(url, dir, &self.at_rest).map(|s| Arc::new(s) as Arc<dyn Storage>)
            }
            None => {
                SqliteStorage::open(dir, &self.at_rest).map(|s| Arc::new(s) as Arc<dyn Storage>)
            }
        };
        opened.map_err(|e| fail(e.code(), e.to_string()))
    }
}

fn copy_to_postgres(server: &ServerData, to: &str, out: &Out) -> CliResult {
    let dir = server.dir()?;
    if !dir.join("server.db").exists() {
        return Err(fail("no_data_dir", "the data directory holds no server.db"));
    }
    zoufang_server::at_rest::check_directory(dir, &server.at_rest).map_err(server_failure)?;
    let target = PgStorage::open(to, dir, &server.at_rest).map_err(server_failure)?;
    let report = target
        .copy_from_sqlite(dir, &server.at_rest)
        .map_err(server_failure)?;
    let rows: u64 = report.iter().map(|(_, n)| n).sum();
    out.emit(&report, || {
        format!(
            "copied {rows} rows in {} tables into PostgreSQL",
            report.len()
        )
    })
}

fn server_failure(e: zoufang_server::ServerError) -> Failure {
    fail(e.code(), e.to_string())
}

/// Logs go to stderr as structured lines; `RUST_LOG` tunes them. They carry no personal data.
pub fn init_logs() {
    // The caps come last, so they win over the same targets in RUST_LOG.
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
    let filter =
        tracing_subscriber::EnvFilter::try_new(format!("{spec},{}", zoufang_server::LOG_CAPS))
            .unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(format!("info,{}", zoufang_server::LOG_CAPS))
            });
    // Colours only on a terminal: a log file or journal gets plain text to search.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// How `serve` runs, besides where its data is.
pub struct ServeOptions {
    pub tls: Option<zoufang_server::TlsFiles>,
    pub behind_proxy: bool,
    pub device_token_lifetime: Duration,
}

pub fn serve(server: &ServerData, listen: &str, options: ServeOptions) -> CliResult {
    let ServeOptions {
        tls,
        behind_proxy,
        device_token_lifetime,
    } = options;
    let storage = server.storage()?;
    if let Some(key) = server.at_rest.key() {
        tracing::info!(key = %key.id(), "server data encrypted at rest");
    }
    if storage
        .catalog(&zoufang_core::protocol::messages::CatalogRequest {
            protocol: zoufang_core::protocol::messages::PROTOCOL_VERSION,
            forms: vec![],
            code_lists: Default::default(),
            audit: None,
        })
        .map_err(server_failure)?
        .0
        .is_empty()
    {
        zoufang_server::publish_defaults(storage.as_ref()).map_err(server_failure)?;
    }
    let runtime = tokio::runtime::Runtime::new().map_err(|e| fail("io", e.to_string()))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| fail("io", format!("cannot listen on {listen}: {e}")))?;
        let shutdown = zoufang_server::shutdown_signal();
        let state = AppState {
            trust_forwarded_for: behind_proxy,
            device_token_lifetime,
            ..AppState::new(storage)
        };
        let served = match tls {
            Some(tls) => {
                let listener = listener.into_std().map_err(|e| fail("io", e.to_string()))?;
                zoufang_server::serve_tls(state, listener, &tls, shutdown).await
            }
            None => zoufang_server::serve(state, listener, shutdown).await,
        };
        served.map_err(|e| fail("io", e.to_string()))?;
        tracing::info!("zoufang server stopped");
        Ok(())
    })
}

pub fn admin(
    cmd: AdminCommand,
    data: &Option<PathBuf>,
    database: &Option<String>,
    at_rest: &AtRestArgs,
    plaintext: bool,
    out: &Out,
) -> CliResult {
    if let AdminCommand::NewKey { out: file } = &cmd {
        return server_key::new_key(file.as_deref(), out);
    }
    let server = ServerData {
        data: data.clone(),
        database: database.clone(),
        at_rest: at_rest.at_rest(plaintext)?,
    };
    match &cmd {
        AdminCommand::CopyToPostgres { to } => return copy_to_postgres(&server, to, out),
        AdminCommand::RotateKey {
            new_key_file,
            new_cipher,
        } => {
            let dir = server.dir()?;
            return server_key::rotate_key(dir, &server.at_rest, new_key_file, new_cipher, out);
        }
        _ => {}
    }
    let s = server.storage()?;
    let now = chrono::Utc::now();
    match cmd {
        AdminCommand::UserAdd { id, role, areas } => {
            let role = Role::parse(&role).ok_or_else(|| {
                fail(
                    "invalid_input",
                    "role is coordinator, township_staff, county_reviewer or administrator",
                )
            })?;
            s.create_user(
                &UserInfo {
                    id: id.clone(),
                    role,
                    areas,
                },
                now,
            )
            .map_err(server_failure)?;
            out.emit(&json!({"ok": true}), || format!("user {id} created"))
        }
        AdminCommand::UserAreas { id, areas } => {
            s.set_areas(&id, &areas).map_err(server_failure)?;
            out.emit(&json!({"ok": true}), || format!("areas of {id} set"))
        }
        AdminCommand::UserList => {
            let users = s.users().map_err(server_failure)?;
            out.emit(&users, || {
                users
                    .iter()
                    .map(|u| format!("{}  {}  {}", u.id, u.role.as_str(), u.areas.join(",")))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        AdminCommand::EnrollToken { user, days } => {
            let token = s
                .issue_enrollment(&user, Duration::from_secs(days * 24 * 3600), now)
                .map_err(server_failure)?;
            out.emit(&json!({"token": token}), || token.clone())
        }
        AdminCommand::FormPublish { file } => {
            let (id, version) = s
                .publish_form(&read_file(&file)?, now)
                .map_err(server_failure)?;
            out.emit(&json!({"id": id, "version": version}), || {
                format!("published {id} v{version}")
            })
        }
        AdminCommand::DeviceList => {
            let devices = s.devices().map_err(server_failure)?;
            out.emit(&devices, || {
                devices
                    .iter()
                    .map(|d| {
                        let succeeded = match &d.successor_id {
                            Some(next) => format!("  enrolled again as {next}"),
                            None => String::new(),
                        };
                        format!(
                            "{}  {}  {}  token until {}  revoked {}{succeeded}",
                            d.id,
                            d.user_id,
                            d.name,
                            d.token_expires_at,
                            d.revoked_at.as_deref().unwrap_or("no")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        AdminCommand::DeviceRevoke { id } => {
            s.revoke_device(&id, now).map_err(server_failure)?;
            out.emit(&json!({"ok": true}), || format!("device {id} revoked"))
        }
        AdminCommand::DeviceWipe { id } => {
            s.request_wipe(&id, now).map_err(server_failure)?;
            out.emit(&json!({"ok": true}), || {
                format!("device {id} will wipe itself at its next contact")
            })
        }
        AdminCommand::DeviceAudit { id } => {
            let entries = s.device_audit(&id).map_err(server_failure)?;
            out.emit(&entries, || {
                entries
                    .iter()
                    .map(|e| {
                        format!(
                            "{:>6}  {}  {:<14} {:<12} {} {}",
                            e.seq,
                            e.at,
                            e.user_id,
                            e.action,
                            e.entity.as_deref().unwrap_or("-"),
                            e.entity_id.as_deref().unwrap_or("")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        AdminCommand::AuditVerify => {
            let problems = s.verify_audit().map_err(server_failure)?;
            out.emit(&json!({"problems": problems}), || {
                if problems.is_empty() {
                    "every audit chain is intact".to_owned()
                } else {
                    problems.join("\n")
                }
            })?;
            if problems.is_empty() {
                Ok(())
            } else {
                Err(fail("audit_chain_broken", "an audit chain is broken"))
            }
        }
        AdminCommand::Stats => {
            let stats = s.stats().map_err(server_failure)?;
            out.emit(&stats, || format!("{stats:#?}"))
        }
        AdminCommand::MergeHouseholds { survivor, merged } => {
            let auth = admin_auth("51".into());
            s.merge_households(&auth, &survivor, &merged, chrono::Utc::now())
                .map_err(server_failure)?;
            out.emit(&json!({"ok": true}), || {
                format!("{merged} merged into {survivor}")
            })
        }
        AdminCommand::MoveHousehold { household, village } => {
            let auth = admin_auth("51".into());
            s.move_household(&auth, &household, &village, chrono::Utc::now())
                .map_err(server_failure)?;
            out.emit(&json!({"ok": true}), || {
                format!("{household} moved to {village}")
            })
        }
        AdminCommand::VisitFrequency { category, days } => {
            if let (Some(category), Some(days)) = (&category, days) {
                s.set_visit_frequency(category, days, chrono::Utc::now())
                    .map_err(server_failure)?;
            } else if category.is_some() {
                return Err(fail("invalid_input", "give a category and its days"));
            }
            let all = s.visit_frequencies().map_err(server_failure)?;
            out.emit(&all, || {
                all.iter()
                    .map(|(c, d)| format!("{c}: every {d} days"))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        AdminCommand::Handovers { area } => {
            let list = s.handovers(&admin_auth(area)).map_err(server_failure)?;
            out.emit(&list, || format!("{} handed-over change(s)", list.len()))
        }
        AdminCommand::Duplicates { area } => {
            let auth = admin_auth(area);
            let pairs = s.possible_duplicates(&auth).map_err(server_failure)?;
            out.emit(&pairs, || {
                let lines: Vec<String> = pairs
                    .iter()
                    .map(|d| {
                        format!(
                            "member {} (household {}, {}) and member {} (household {}, {})",
                            d.member_a,
                            d.household_a,
                            d.village_a,
                            d.member_b,
                            d.household_b,
                            d.village_b
                        )
                    })
                    .collect();
                if lines.is_empty() {
                    "no possible duplicates".into()
                } else {
                    lines.join("\n")
                }
            })
        }
        AdminCommand::CopyToPostgres { .. }
        | AdminCommand::NewKey { .. }
        | AdminCommand::RotateKey { .. } => Ok(()),
        AdminCommand::AwaitingAttachments => {
            let visits = s.visits_awaiting_attachments().map_err(server_failure)?;
            out.emit(&visits, || {
                if visits.is_empty() {
                    "no visit waits for its attachments".to_owned()
                } else {
                    visits.join("\n")
                }
            })
        }
    }
}

struct Bar(indicatif::ProgressBar);

impl SyncListener for Bar {
    fn on_progress(&self, p: SyncProgress) {
        let phase = match p.phase {
            SyncPhase::Enroll => "enrolling",
            SyncPhase::Catalog => "forms",
            SyncPhase::Push => "sending",
            SyncPhase::Pull => "receiving",
            SyncPhase::Verify => "checking",
            SyncPhase::Audit => "audit trail",
            SyncPhase::Attachments => "photos",
            SyncPhase::Download => "downloading",
            SyncPhase::Wipe => "wiping (ordered by the server)",
            SyncPhase::Done => "done",
        };
        self.0.set_length(p.total.max(1));
        self.0.set_position(p.done);
        self.0.set_message(format!(
            "{phase}  ↑{} B ↓{} B",
            p.bytes_sent, p.bytes_received
        ));
    }
}

pub fn device(
    cmd: DeviceCommand,
    c: &Collector,
    server: &Option<String>,
    ca_cert: Option<&std::path::Path>,
    out: &Out,
) -> CliResult {
    let transport = || -> Result<ReqwestTransport, Failure> {
        let url = server
            .as_ref()
            .ok_or_else(|| fail("no_server", "give --server URL or set ZOUFANG_SERVER"))?;
        match ca_cert {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| fail("io", format!("cannot read the CA certificate: {e}")))?;
                ReqwestTransport::with_root_certificate(url, &pem)
            }
            None => ReqwestTransport::new(url),
        }
        .map_err(|e| fail("transport", e.message))
    };
    match cmd {
        DeviceCommand::Enroll { token, name } => {
            let user = c.enroll(&transport()?, &token, &name)?;
            out.emit(&user, || {
                format!(
                    "enrolled as {} ({}) for areas {}",
                    user.id,
                    user.role.as_str(),
                    user.areas.join(",")
                )
            })
        }
        DeviceCommand::Sync => {
            let bar = indicatif::ProgressBar::new(1);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            if out.json {
                bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
            let listener = Bar(bar);
            let report = c.sync(&transport()?, Some(&listener), None)?;
            listener.0.finish_and_clear();
            out.emit(&report, || {
                format!(
                    "synced: sent {} change(s) ({} accepted, {} in conflict, {} refused), received {}, {} attachment(s) uploaded ({} already on the server, {} waiting), {} round trips, {} B up / {} B down{}",
                    report.pushed,
                    report.accepted,
                    report.conflicts,
                    report.rejected,
                    report.pulled,
                    report.attachments_uploaded,
                    report.attachments_already_held,
                    report.attachments_waiting,
                    report.round_trips,
                    report.bytes_sent,
                    report.bytes_received,
                    if report.clock_skewed { "; this device's clock is far off" } else { "" }
                )
            })
        }
        DeviceCommand::Status => {
            let status = c.sync_status()?;
            out.emit(&status, || format!("{status:#?}"))
        }
        DeviceCommand::Conflicts => {
            let conflicts = c.conflicts()?;
            out.emit(&conflicts, || {
                if conflicts.is_empty() {
                    return "no open conflicts".to_owned();
                }
                conflicts
                    .iter()
                    .map(|k| {
                        let values: Vec<String> = k
                            .values
                            .iter()
                            .map(|v| format!("{} by {} at {}", v.value, v.user, v.received_at))
                            .collect();
                        format!(
                            "{}  {} {} field {}: {} (showing {})",
                            k.id,
                            k.entity.as_str(),
                            k.entity_id,
                            k.field,
                            values.join(" | "),
                            k.provisional
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        DeviceCommand::Resolve { conflict, value } => {
            c.resolve_conflict(&conflict, parse_json("VALUE", &value)?)?;
            out.emit(&json!({"ok": true}), || {
                "resolved locally; it reaches the server with the next sync".to_owned()
            })
        }
        DeviceCommand::PendingAttachments => {
            let pending = c.visits_with_pending_attachments()?;
            out.emit(&pending, || {
                if pending.is_empty() {
                    return "every attachment is on the server".to_owned();
                }
                pending
                    .iter()
                    .map(|p| {
                        format!(
                            "{}  {} attachment(s), {} B{}",
                            p.visit_id,
                            p.attachments,
                            p.bytes,
                            if p.visit_synced {
                                ""
                            } else {
                                " (visit not sent yet)"
                            }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        DeviceCommand::FetchAttachment {
            content_hash,
            out: file,
            algorithm,
        } => {
            let algorithm = zoufang_core::protocol::audit::HashAlgorithm::parse(&algorithm)
                .ok_or_else(|| fail("invalid_input", "the algorithm is sha256 or sm3"))?;
            let bytes = c.fetch_attachment_content(&transport()?, algorithm, &content_hash)?;
            std::fs::write(&file, &bytes)
                .map_err(|e| fail("io", format!("cannot write the file: {e}")))?;
            out.emit(&json!({"bytes": bytes.len()}), || {
                format!("{} B written, hash checked", bytes.len())
            })
        }
        DeviceCommand::Rejected => {
            let rejected = c.rejected_changes()?;
            out.emit(&rejected, || {
                if rejected.is_empty() {
                    return "no refused changes".to_owned();
                }
                rejected
                    .iter()
                    .map(|r| format!("#{} {} {}", r.seq, r.code, r.message))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
    }
}

/// The administrator acting from the command line, over `area`.
fn admin_auth(area: String) -> zoufang_server::DeviceAuth {
    zoufang_server::DeviceAuth::new(
        "admin-cli",
        UserInfo {
            id: "admin-cli".into(),
            role: Role::Administrator,
            areas: vec![area],
        },
    )
}
