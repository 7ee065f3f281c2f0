//! `zoufang`: Zoufang at a desk. Forms, stores, households and visits from the command line,
//! the demo story and the benchmarks. `--json` gives machine-readable output; errors are one
//! line on stderr with a stable code, and a non-zero exit.

/// `println!` that stops quietly when the reader went away (`zoufang ... | head`) instead of
/// panicking on a broken pipe.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod bench;
mod bench_attachments;
mod bench_crypto;
mod bench_link;
mod bench_server;
mod bench_sync;
mod bench_whole;
mod demo;
mod net;
mod sample;
mod server_key;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde::Serialize;
use serde_json::{Map, Value as Json, json};
use zoufang_core::model::default_form::HOUSEHOLD_VISIT_FORM_JSON;
use zoufang_core::model::engine::Problem;
use zoufang_core::model::form::{Form, ItemDef};
use zoufang_core::model::text::Lang;
use zoufang_core::records::NewHousehold;
use zoufang_core::{Cipher, Collector, Error, StoreOptions};

#[derive(Parser, Debug)]
#[command(
    name = "zoufang",
    version,
    about = "Zoufang (走访): household visits, offline first"
)]
struct Cli {
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    json: bool,
    /// The store file.
    #[arg(long, global = true, env = "ZOUFANG_STORE")]
    store: Option<PathBuf>,
    /// The store's encryption key (64 hex digits, or a passphrase). From the environment rather
    /// than the command line, so that it stays out of shell history and process lists.
    #[arg(long, global = true, env = "ZOUFANG_STORE_KEY", hide_env_values = true)]
    store_key: Option<String>,
    /// The store is encrypted with SM4 (the national-crypto mode) rather than AES-256.
    #[arg(long, global = true)]
    sm4: bool,
    /// Keep the data in clear: a new store without a key, or the server's data without a
    /// server key. Refused without it: households' names, ID numbers and photos are personal.
    #[arg(long, global = true)]
    plaintext: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Form definitions.
    #[command(subcommand)]
    Form(FormCommand),
    /// Create a store and sign a user in.
    Init {
        /// The coordinator's user id.
        #[arg(long)]
        user: String,
    },
    /// Households: add, list, search, show, edit.
    #[command(subcommand)]
    Household(HouseholdCommand),
    /// Visits: start, answer, validate, complete, sign, void, list.
    #[command(subcommand)]
    Visit(VisitCommand),
    /// Totals of the store.
    Counts,
    /// Run the provincial sync server on a data directory.
    Serve {
        #[arg(long, env = "ZOUFANG_DATA")]
        data: Option<PathBuf>,
        /// PostgreSQL instead of the SQLite file (`postgres://user@host/db`); --data then holds
        /// only the attachment contents, which every node must share.
        #[arg(long, env = "ZOUFANG_DATABASE")]
        database: Option<String>,
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// PEM certificate chain: serve HTTPS (rustls) instead of plain HTTP. With --tls-key.
        #[arg(long, env = "ZOUFANG_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key of the certificate.
        #[arg(long, env = "ZOUFANG_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Behind our own reverse proxy: rate limits key on the last X-Forwarded-For address.
        #[arg(long)]
        behind_proxy: bool,
        /// Days a device token lives without a sync; each sync renews it, so only a device
        /// silent this long must enrol again (keeping its unsent work).
        #[arg(long, env = "ZOUFANG_DEVICE_TOKEN_DAYS", default_value_t = 180,
              value_parser = clap::value_parser!(u32).range(1..=3650))]
        device_token_days: u32,
        #[command(flatten)]
        at_rest: server_key::AtRestArgs,
    },
    /// Administer a server's data directory: users, areas, enrolment tokens, forms, devices.
    Admin {
        #[arg(long, env = "ZOUFANG_DATA", global = true)]
        data: Option<PathBuf>,
        /// PostgreSQL instead of the SQLite file, as for `serve`.
        #[arg(long, env = "ZOUFANG_DATABASE", global = true)]
        database: Option<String>,
        #[command(flatten)]
        at_rest: server_key::AtRestArgs,
        #[command(subcommand)]
        command: net::AdminCommand,
    },
    /// A phone at a desk: enrol, sync, conflicts (households and visits: the commands above).
    Device {
        #[arg(long, env = "ZOUFANG_SERVER", global = true)]
        server: Option<String>,
        /// PEM root certificate to trust besides the public ones (a provincial private CA).
        #[arg(long, env = "ZOUFANG_CA_CERT", global = true)]
        ca_cert: Option<PathBuf>,
        #[command(subcommand)]
        command: net::DeviceCommand,
    },
    /// The demo story: a store, households, visits, Yi and Chinese labels, a bad ID caught.
    Demo,
    /// Benchmarks, reported as ratios against baselines measured in the same run.
    Bench {
        /// Households in the large store.
        #[arg(long, default_value_t = 50_000)]
        households: usize,
        /// Repetitions of each timed step.
        #[arg(long, default_value_t = 40)]
        rounds: usize,
        /// Which benchmarks, comma-separated: store, sync, server, crypto (encrypted against
        /// plaintext), attachments (photo uploads), whole (the whole sync at three sizes against
        /// a floor), link (the sync through a weak link in real time, minutes) or all.
        #[arg(long, default_value = "all")]
        suite: String,
        /// Visits pushed in the sync benchmark (the link benchmark takes at most 2,000).
        #[arg(long, default_value_t = 10_000)]
        visits: usize,
        /// Devices pushing at once in the server throughput benchmark.
        #[arg(long, default_value_t = 100)]
        devices: usize,
    },
    /// Internal: the Rust side of the bindings' validate benchmark (bindings/bench.sh). With
    /// `--prepare`, writes a full application survey draft into the store and prints its id;
    /// otherwise times `validate_visit` on VISIT and prints the per-call times as JSON.
    #[command(hide = true)]
    BenchValidate {
        #[arg(long)]
        prepare: bool,
        #[arg(long)]
        visit: Option<String>,
        #[arg(long, default_value_t = 2_000)]
        rounds: usize,
    },
    /// Internal: the pulling phone of `bench`, run as its own process to measure its memory.
    #[command(hide = true)]
    BenchPullProbe {
        #[arg(long)]
        server: String,
        #[arg(long)]
        token: String,
        #[arg(long)]
        store: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum FormCommand {
    /// Print the default household visit form (or FILE): an outline, or the JSON with --json.
    Print {
        file: Option<PathBuf>,
        /// Label language: zh, ii (Yi) or en.
        #[arg(long, default_value = "zh")]
        lang: String,
    },
    /// Check a form definition file; every problem is listed with its path.
    Check { file: PathBuf },
    /// Install a form definition into the store.
    Install { file: PathBuf },
}

#[derive(Subcommand, Debug)]
enum HouseholdCommand {
    /// Add a household: village code, then optional JSON for fields and members.
    Add {
        #[arg(long)]
        village: String,
        /// Household fields as a JSON object, e.g. '{"phone": "13812345678"}'.
        #[arg(long)]
        fields: Option<String>,
        /// One member as a JSON object; repeat for each member.
        #[arg(long = "member")]
        members: Vec<String>,
    },
    /// Households of a village.
    List {
        #[arg(long)]
        village: String,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long, default_value_t = 0)]
        offset: u32,
    },
    /// Search by the start of a member's name or resident ID (active households; --all for
    /// those that moved away, died out...).
    Search {
        query: String,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        all: bool,
    },
    /// Households with a visit due on or before a date (YYYY-MM-DD).
    Due {
        #[arg(long)]
        before: String,
        #[arg(long)]
        village: Option<String>,
    },
    /// A household with its members and visits.
    Show { id: String },
    /// Set one household field to a JSON value (null clears it).
    Edit {
        id: String,
        field: String,
        value: String,
    },
    /// Set a household's status (active, moved_away, migrant_away, all_deceased,
    /// registered_in_error), or with --member a member's (present, left_household, deceased,
    /// duplicate).
    Status {
        /// The household's id, or the member's with --member.
        id: String,
        status: String,
        #[arg(long)]
        member: bool,
        #[arg(long)]
        reason: Option<String>,
        /// YYYY-MM-DD; today when left out.
        #[arg(long)]
        date: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum VisitCommand {
    /// Start a draft visit of a type, for a household or (without one) a new discovery.
    Start {
        #[arg(long = "type")]
        visit_type: String,
        #[arg(long)]
        household: Option<String>,
    },
    /// Set answers: from a JSON file shaped like the answers, or one PATH and JSON VALUE.
    Set {
        visit: String,
        #[arg(long)]
        answers: Option<PathBuf>,
        path: Option<String>,
        value: Option<String>,
    },
    /// Every problem of the visit's answers.
    /// Prefilled values someone else changed since the draft was opened, with both values.
    Changes {
        visit: String,
    },
    /// Start a correction of a completed or signed visit (a new draft naming it).
    Revise {
        visit: String,
    },
    Validate {
        visit: String,
        #[arg(long, default_value = "zh")]
        lang: String,
    },
    /// Complete a draft (refused while a blocking problem remains).
    Complete {
        visit: String,
    },
    Sign {
        visit: String,
    },
    Void {
        visit: String,
        #[arg(long)]
        reason: String,
    },
    Show {
        visit: String,
    },
    /// Add a photo (a scanned document, say) to a draft's photo field from a JPEG or PNG file:
    /// made upright, bounded in size, stripped of its metadata.
    AddPhoto {
        visit: String,
        field: String,
        file: PathBuf,
        /// Longest side in pixels.
        #[arg(long, default_value_t = 1600)]
        max_side: u32,
        /// Largest stored size in KB.
        #[arg(long, default_value_t = 500)]
        max_kb: usize,
    },
    /// Add a signature or thumbprint image (PNG) to a draft's signature field; it signs what
    /// the draft holds at that moment.
    AddSignature {
        visit: String,
        field: String,
        file: PathBuf,
    },
    /// A visit's photos and signatures.
    Attachments {
        visit: String,
    },
    /// Visits of a household, or the signed-in user's drafts.
    List {
        #[arg(long)]
        household: Option<String>,
    },
}

/// A failure of the CLI: a stable code and a one-line message.
#[derive(Debug)]
pub(crate) struct Failure {
    code: String,
    message: String,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Self {
            code: e.code().to_owned(),
            message: e.to_string(),
        }
    }
}

pub(crate) fn fail(code: &str, message: impl Into<String>) -> Failure {
    Failure {
        code: code.to_owned(),
        message: message.into(),
    }
}

pub(crate) type CliResult = Result<(), Failure>;

/// Largest signature image file read (a signature pad's PNG is tens of KB).
const MAX_SIGNATURE_FILE: u64 = 8 * 1024 * 1024;

/// Reads at most `limit` bytes of a file: a larger one (or `/dev/zero`) is refused, not read
/// until memory runs out.
pub(crate) fn read_bounded(path: &std::path::Path, limit: u64) -> Result<Vec<u8>, Failure> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(limit + 1).read_to_end(&mut bytes))
        .map_err(|e| fail("io", format!("cannot read {}: {e}", path.display())))?;
    if bytes.len() as u64 > limit {
        let m = format!("{} is larger than {} KB", path.display(), limit / 1024);
        return Err(fail("file_too_large", m));
    }
    Ok(bytes)
}

pub(crate) struct Out {
    pub(crate) json: bool,
}

impl Out {
    /// Prints `value` as JSON with --json, else the human text.
    pub(crate) fn emit(&self, value: &impl Serialize, human: impl FnOnce() -> String) -> CliResult {
        if self.json {
            let text =
                serde_json::to_string_pretty(value).map_err(|e| fail("output", e.to_string()))?;
            outln!("{text}");
        } else {
            outln!("{}", human());
        }
        Ok(())
    }
}

pub(crate) fn parse_json(what: &str, text: &str) -> Result<Json, Failure> {
    serde_json::from_str(text).map_err(|e| {
        fail(
            "invalid_json",
            format!(
                "{what} is not valid JSON (line {} column {})",
                e.line(),
                e.column()
            ),
        )
    })
}

fn parse_object(what: &str, text: &str) -> Result<Map<String, Json>, Failure> {
    match parse_json(what, text)? {
        Json::Object(m) => Ok(m),
        _ => Err(fail(
            "invalid_json",
            format!("{what} must be a JSON object"),
        )),
    }
}

/// Largest text file the CLI reads (an answers file, a form): a form is ~30 KB.
const MAX_TEXT_FILE: u64 = 4 * 1024 * 1024;

/// Reads a UTF-8 text file of at most 4 MB (a larger one, or `/dev/zero`, is refused).
pub(crate) fn read_file(path: &std::path::Path) -> Result<String, Failure> {
    let bytes = read_bounded(path, MAX_TEXT_FILE)?;
    String::from_utf8(bytes).map_err(|_| {
        fail(
            "invalid_input",
            format!("{} is not UTF-8 text", path.display()),
        )
    })
}

fn lang(code: &str) -> Result<Lang, Failure> {
    Lang::parse(code).ok_or_else(|| fail("invalid_input", "--lang is zh, ii or en"))
}

/// Where the store is and how to open it.
struct StoreArgs {
    path: Option<PathBuf>,
    options: StoreOptions,
    /// A new store may be created without a key.
    plaintext: bool,
}

fn open(store: &StoreArgs) -> Result<Collector, Failure> {
    let path = store
        .path
        .as_ref()
        .ok_or_else(|| fail("no_store", "give --store PATH or set ZOUFANG_STORE"))?;
    match (&store.options.encryption_key, store.plaintext) {
        (Some(_), true) => {
            return Err(fail(
                "invalid_input",
                "--plaintext and a store key exclude each other",
            ));
        }
        (None, false) if !path.exists() => {
            return Err(fail(
                "plaintext_refused",
                "no store key: set ZOUFANG_STORE_KEY (64 hex digits from the platform keystore, or a passphrase) to create an encrypted store, or give --plaintext to keep it in clear",
            ));
        }
        _ => {}
    }
    Ok(Collector::open(path, &store.options)?)
}

pub(crate) fn problem_lines(problems: &[Problem], lang: Lang) -> String {
    if problems.is_empty() {
        return "no problems".into();
    }
    problems
        .iter()
        .map(|p| {
            let level = if p.blocks_completion() {
                "ERROR  "
            } else {
                "warning"
            };
            let msg = if lang == Lang::En {
                &p.message_en
            } else {
                &p.message_zh
            };
            format!("{level} {:<34} {:<30} {msg}", p.path, p.code)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn outline(items: &[ItemDef], lang: Lang, depth: usize, out: &mut String) {
    for item in items {
        let indent = "  ".repeat(depth);
        let label = item.label.get(lang);
        let req = match &item.required {
            Some(zoufang_core::model::form::Condition::Fixed(true)) => " *",
            Some(zoufang_core::model::form::Condition::Expr(_)) => " (*)",
            _ => "",
        };
        out.push_str(&format!(
            "{indent}{label}  [{} {}]{req}\n",
            item.item_type, item.name
        ));
        outline(&item.items, lang, depth + 1, out);
    }
}

fn run(cli: Cli) -> CliResult {
    let out = Out { json: cli.json };
    let store = StoreArgs {
        path: cli.store.clone(),
        options: StoreOptions {
            encryption_key: cli.store_key.clone(),
            cipher: if cli.sm4 { Cipher::Sm4 } else { Cipher::Aes256 },
        },
        plaintext: cli.plaintext,
    };
    match cli.command {
        Command::Form(FormCommand::Print { file, lang: l }) => {
            let l = lang(&l)?;
            let text = match &file {
                Some(f) => read_file(f)?,
                None => HOUSEHOLD_VISIT_FORM_JSON.to_owned(),
            };
            let form = Form::from_json(&text).map_err(Error::from)?;
            out.emit(&form.definition, || {
                let mut s = format!("{} (v{})\n", form.definition.title.get(l), form.version());
                outline(&form.definition.sections, l, 0, &mut s);
                s.trim_end().to_owned()
            })
        }
        Command::Form(FormCommand::Check { file }) => match Form::from_json(&read_file(&file)?) {
            Ok(form) => out.emit(&json!({"ok": true, "id": form.id(), "version": form.version(), "fields": form.fields.len()}), || {
                format!("ok: {} v{} with {} fields; every expression compiled", form.id(), form.version(), form.fields.len())
            }),
            Err(e) => {
                if cli.json {
                    out.emit(&json!({"ok": false, "problems": e.problems}), String::new)?;
                } else {
                    for p in &e.problems {
                        eprintln!("{p}");
                    }
                }
                Err(fail("form_invalid", format!("{} problem(s) in the form definition", e.problems.len())))
            }
        },
        Command::Form(FormCommand::Install { file }) => {
            let c = open(&store)?;
            let form = c.install_form(&read_file(&file)?)?;
            out.emit(&json!({"id": form.id(), "version": form.version()}), || format!("installed {} v{}", form.id(), form.version()))
        }
        Command::Init { user } => {
            let c = open(&store)?;
            c.sign_in(&user)?;
            let forms = c.installed_forms()?;
            out.emit(&json!({"user": user, "forms": forms}), || format!("store ready; signed in as {user}"))
        }
        Command::Household(cmd) => household(cmd, &open(&store)?, &out),
        Command::Visit(cmd) => visit(cmd, &open(&store)?, &out),
        Command::Counts => {
            let counts = open(&store)?.counts()?;
            out.emit(&counts, || format!("{counts:#?}"))
        }
        Command::Serve { data, database, listen, tls_cert, tls_key, behind_proxy, device_token_days, at_rest } => {
            let tls = tls_cert.zip(tls_key).map(|(certificate_chain, private_key)| {
                zoufang_server::TlsFiles { certificate_chain, private_key }
            });
            net::init_logs();
            let server = net::ServerData { data, database, at_rest: at_rest.at_rest(cli.plaintext)? };
            let options = net::ServeOptions {
                tls,
                behind_proxy,
                device_token_lifetime: std::time::Duration::from_secs(u64::from(device_token_days) * 24 * 3600),
            };
            net::serve(&server, &listen, options)
        }
        Command::Admin { data, database, at_rest, command } => {
            net::admin(command, &data, &database, &at_rest, cli.plaintext, &out)
        }
        Command::Device { server, ca_cert, command } => {
            net::device(command, &open(&store)?, &server, ca_cert.as_deref(), &out)
        }
        Command::Demo => demo::run(cli.json),
        Command::Bench { households, rounds, suite, visits, devices } => {
            const SUITES: [&str; 8] = ["store", "sync", "server", "crypto", "attachments", "whole", "link", "all"];
            let chosen: Vec<&str> = suite.split(',').map(str::trim).collect();
            if !chosen.iter().all(|s| SUITES.contains(s)) {
                return Err(fail("invalid_input", "--suite is one or more (comma-separated) of store, sync, server, crypto, attachments, whole, link, all"));
            }
            let wants = |name: &str| chosen.iter().any(|s| *s == name || *s == "all");
            let mut report = Vec::new();
            if wants("store") {
                report.extend(bench::run(households, rounds, cli.json)?);
            }
            if wants("sync") {
                report.extend(bench_sync::run(households, visits, devices, cli.json)?);
            }
            if wants("server") {
                report.extend(bench_server::run(devices, cli.json)?);
            }
            if wants("crypto") {
                report.extend(bench_crypto::run(households / 5, rounds, devices, cli.json)?);
            }
            if wants("attachments") {
                report.extend(bench_attachments::run(rounds, cli.json)?);
            }
            if wants("whole") {
                report.extend(bench_whole::run(visits, cli.json)?);
            }
            if wants("link") {
                report.extend(bench_link::run(visits, cli.json)?);
            }
            if cli.json {
                outln!("{}", serde_json::to_string_pretty(&json!({"benchmarks": report})).unwrap_or_default());
            }
            Ok(())
        }
        Command::BenchPullProbe { server, token, store } => bench_sync::pull_probe(&server, &token, &store),
        Command::BenchValidate { prepare, visit, rounds } => {
            bench::validate_probe(&open(&store)?, prepare, visit.as_deref(), rounds)
        }
    }
}

fn household(cmd: HouseholdCommand, c: &Collector, out: &Out) -> CliResult {
    match cmd {
        HouseholdCommand::Add {
            village,
            fields,
            members,
        } => {
            let fields = fields
                .map(|f| parse_object("--fields", &f))
                .transpose()?
                .unwrap_or_default();
            let members = members
                .iter()
                .map(|m| parse_object("--member", m))
                .collect::<Result<Vec<_>, _>>()?;
            let id = c.add_household(NewHousehold {
                village_code: village,
                fields,
                members,
            })?;
            out.emit(&json!({"id": id}), || id.clone())
        }
        HouseholdCommand::List {
            village,
            limit,
            offset,
        } => {
            let list = c.households_in_village(&village, limit, offset)?;
            out.emit(&list, || summary_lines(&list))
        }
        HouseholdCommand::Search { query, limit, all } => {
            let list = if all {
                c.search_all_households(&query, limit)?
            } else {
                c.search_households(&query, limit)?
            };
            out.emit(&list, || summary_lines(&list))
        }
        HouseholdCommand::Due { before, village } => {
            let list = c.households_due(
                &before,
                village.as_deref(),
                zoufang_core::collector::MAX_PAGE,
            )?;
            out.emit(&list, || summary_lines(&list))
        }
        HouseholdCommand::Show { id } => {
            let h = c.household(&id)?;
            let visits = c.visits_of_household(&id)?;
            out.emit(&json!({"household": h, "visits": visits}), || {
                let mut s = format!("household {} in {}\n", h.id, h.village_code);
                for (k, v) in &h.fields {
                    s.push_str(&format!("  {k}: {v}\n"));
                }
                for m in &h.members {
                    let name = m.fields.get("name").and_then(Json::as_str).unwrap_or("?");
                    let rel = m
                        .fields
                        .get("relationship")
                        .and_then(Json::as_str)
                        .unwrap_or("?");
                    s.push_str(&format!("  member {} {name} (relationship {rel})\n", m.id));
                }
                for v in &visits {
                    s.push_str(&format!(
                        "  visit {} {} {}\n",
                        v.id,
                        v.visit_type,
                        v.status.as_str()
                    ));
                }
                s.trim_end().to_owned()
            })
        }
        HouseholdCommand::Edit { id, field, value } => {
            c.edit_household_field(&id, &field, parse_json("VALUE", &value)?)?;
            out.emit(&json!({"ok": true}), || "saved".to_owned())
        }
        HouseholdCommand::Status {
            id,
            status,
            member,
            reason,
            date,
        } => {
            let (reason, date) = (reason.as_deref(), date.as_deref());
            if member {
                c.set_member_status(&id, &status, reason, date)?;
            } else {
                c.set_household_status(&id, &status, reason, date)?;
            }
            out.emit(&json!({"ok": true}), || format!("status {status} saved"))
        }
    }
}

fn summary_lines(list: &[zoufang_core::records::HouseholdSummary]) -> String {
    if list.is_empty() {
        return "no households".into();
    }
    list.iter()
        .map(|h| {
            format!(
                "{}  {}  {}  due {}",
                h.id,
                h.village_code,
                h.head_name.as_deref().unwrap_or("-"),
                h.next_visit_due.as_deref().unwrap_or("-")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn visit(cmd: VisitCommand, c: &Collector, out: &Out) -> CliResult {
    match cmd {
        VisitCommand::Start {
            visit_type,
            household,
        } => {
            let v = c.start_visit(household.as_deref(), &visit_type)?;
            out.emit(
                &json!({"id": v.id, "form": v.form_id, "version": v.form_version}),
                || v.id.clone(),
            )
        }
        VisitCommand::Set {
            visit,
            answers,
            path,
            value,
        } => {
            match (answers, path, value) {
                (Some(file), None, None) => c.set_answers(
                    &visit,
                    &parse_object("the answers file", &read_file(&file)?)?,
                )?,
                (None, Some(path), Some(value)) => {
                    c.set_answer(&visit, &path, parse_json("VALUE", &value)?)?
                }
                _ => {
                    return Err(fail(
                        "invalid_input",
                        "give --answers FILE, or PATH and a JSON VALUE",
                    ));
                }
            }
            out.emit(&json!({"ok": true}), || "saved".to_owned())
        }
        VisitCommand::Changes { visit } => {
            let changed = c.changes_since_opened(&visit)?;
            out.emit(&changed, || {
                changed
                    .iter()
                    .map(|ch| {
                        format!(
                            "{}: opened with {}, now {}",
                            ch.path, ch.opened_with, ch.now
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        VisitCommand::Revise { visit } => {
            let v = c.revise_visit(&visit)?;
            out.emit(&v, || format!("revision {} of {visit} started", v.id))
        }
        VisitCommand::Validate { visit, lang: l } => {
            let problems = c.validate_visit(&visit)?;
            out.emit(&problems, || {
                problem_lines(&problems, lang(&l).unwrap_or(Lang::Zh))
            })
        }
        VisitCommand::Complete { visit } => match c.complete_visit(&visit) {
            Ok(v) => out.emit(
                &json!({"id": v.id, "status": v.status, "household": v.household_id}),
                || {
                    format!(
                        "completed; household {}",
                        v.household_id.as_deref().unwrap_or("-")
                    )
                },
            ),
            Err(Error::VisitHasProblems { problems }) => {
                if out.json {
                    out.emit(&json!({"ok": false, "problems": problems}), String::new)?;
                } else {
                    eprintln!("{}", problem_lines(&problems, Lang::Zh));
                }
                Err(Error::VisitHasProblems { problems }.into())
            }
            Err(e) => Err(e.into()),
        },
        VisitCommand::Sign { visit } => {
            c.sign_visit(&visit)?;
            out.emit(&json!({"ok": true}), || "signed".to_owned())
        }
        VisitCommand::Void { visit, reason } => {
            c.void_visit(&visit, &reason)?;
            out.emit(&json!({"ok": true}), || "voided".to_owned())
        }
        VisitCommand::Show { visit } => {
            let v = c.visit(&visit)?;
            out.emit(&v, || serde_json::to_string_pretty(&v).unwrap_or_default())
        }
        VisitCommand::AddPhoto {
            visit,
            field,
            file,
            max_side,
            max_kb,
        } => {
            let limits = zoufang_core::media::PhotoLimits {
                max_long_side: max_side,
                max_bytes: max_kb.saturating_mul(1024),
            };
            let a = c.add_photo_file(&visit, &field, &file, &limits)?;
            out.emit(&a, || {
                format!(
                    "photo {} stored: {} B, content {}",
                    a.id, a.size_bytes, a.content_hash
                )
            })
        }
        VisitCommand::AddSignature { visit, field, file } => {
            let image = read_bounded(&file, MAX_SIGNATURE_FILE)?;
            let a = c.add_signature(&visit, &field, &image)?;
            out.emit(&a, || format!("signature {} stored", a.id))
        }
        VisitCommand::Attachments { visit } => {
            let list = c.attachments_of_visit(&visit)?;
            out.emit(&list, || {
                list.iter()
                    .map(|a| {
                        format!(
                            "{}  {} {} {} B {}",
                            a.id,
                            a.kind.as_str(),
                            a.field_path,
                            a.size_bytes,
                            a.content_hash
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        VisitCommand::List { household } => {
            let list = match household {
                Some(h) => c.visits_of_household(&h)?,
                None => c.my_drafts()?,
            };
            out.emit(&list, || {
                if list.is_empty() {
                    return "no visits".to_owned();
                }
                list.iter()
                    .map(|v| {
                        format!(
                            "{}  {}  {}  {}",
                            v.id,
                            v.visit_type,
                            v.status.as_str(),
                            v.updated_at
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    // Every command honours RUST_LOG (to stderr), so an administrator can see what a desk sync
    // did; without it only `serve` logs (at info).
    if std::env::var_os("RUST_LOG").is_some() {
        net::init_logs();
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if json {
                eprintln!(
                    "{}",
                    json!({"error": {"code": f.code, "message": f.message}})
                );
            } else {
                eprintln!("error[{}]: {}", f.code, f.message);
            }
            ExitCode::FAILURE
        }
    }
}
