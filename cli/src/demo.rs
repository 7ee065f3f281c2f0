//! `zoufang demo`: the whole story on one machine. First the offline store:  A coordinator in 昭觉县 records
//! visits offline: the form in Chinese and Yi, households, an application survey whose bad
//! resident ID is caught with its field path, a short routine visit, a newly discovered
//! household. Then sync: an embedded server on loopback, two coordinators on two devices who edit
//! the same household offline, merge field by field, see a conflict on both devices and on the
//! server, resolve it, and converge. Each step says what happened; any unmet expectation makes
//! the exit non-zero.

use serde::Serialize;
use serde_json::{Map, Value as Json, json};
use zoufang_core::model::default_form::household_visit_form;
use zoufang_core::model::engine::Problem;
use zoufang_core::model::text::Lang;
use zoufang_core::records::{NewHousehold, VisitStatus};
use zoufang_core::{Collector, Error, StoreOptions};

use crate::sample::{self, Rng};
use crate::{CliResult, Failure, fail, problem_lines};

#[derive(Serialize)]
struct Step {
    step: usize,
    what: String,
    ok: bool,
    detail: Json,
}

struct Story {
    json: bool,
    steps: Vec<Step>,
}

impl Story {
    fn say(&mut self, what: impl Into<String>, ok: bool, detail: Json, human: &str) {
        let what = what.into();
        let n = self.steps.len() + 1;
        if !self.json {
            let mark = if ok { "✓" } else { "✗ EXPECTATION FAILED:" };
            outln!("{n:>2}. {mark} {what}");
            for line in human.lines().filter(|l| !l.is_empty()) {
                outln!("      {line}");
            }
        }
        self.steps.push(Step {
            step: n,
            what,
            ok,
            detail,
        });
    }
}

fn obj(v: Json) -> Map<String, Json> {
    v.as_object().cloned().unwrap_or_default()
}

pub fn run(json_output: bool) -> CliResult {
    let dir = tempfile::tempdir().map_err(|e| fail("io", e.to_string()))?;
    let path = dir.path().join("coordinator.db");
    let mut story = Story {
        json: json_output,
        steps: Vec::new(),
    };
    let result = tell(&mut story, &path).and_then(|()| tell_sync(&mut story, dir.path()));
    let failed = story.steps.iter().filter(|s| !s.ok).count();
    if json_output {
        let out = json!({"ok": failed == 0 && result.is_ok(), "steps": story.steps});
        outln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else if failed == 0 && result.is_ok() {
        outln!("\nAll {} steps went as expected.", story.steps.len());
    } else {
        outln!();
    }
    result?;
    if failed > 0 {
        return Err(fail(
            "demo_failed",
            format!("{failed} expectation(s) failed"),
        ));
    }
    Ok(())
}

/// A store's options with a fresh random 256-bit key, as an app gets one from the Android
/// Keystore or the iOS Keychain.
fn keyed() -> StoreOptions {
    let key: [u8; 32] = rand::random();
    StoreOptions {
        encryption_key: Some(hex::encode(key)),
        ..StoreOptions::default()
    }
}

fn tell(story: &mut Story, path: &std::path::Path) -> Result<(), Failure> {
    let mut rng = Rng::new(2026);
    let c = Collector::open(path, &keyed())?;
    c.sign_in("zhaojue-coordinator-01")?;
    story.say(
        "Opened an encrypted offline store (SQLCipher AES-256 with the key a phone's keystore would hold; WAL, synchronous=FULL) and signed in a coordinator",
        c.integrity_check()? == "ok",
        json!({"forms": c.installed_forms()?}),
        "the shipped household visit form and code lists are installed",
    );

    // The form, in Chinese and Nuosu Yi.
    let form = household_visit_form().map_err(Error::from)?;
    let mut lines = String::new();
    let mut labels = Vec::new();
    for s in &form.definition.sections {
        lines.push_str(&format!(
            "{:<14} {}\n",
            s.label.get(Lang::Zh),
            s.label.get(Lang::Ii)
        ));
        labels.push(json!({"zh": s.label.get(Lang::Zh), "ii": s.label.get(Lang::Ii)}));
    }
    let outcomes: Vec<String> = form
        .choice_list("visit_outcome")
        .unwrap_or_default()
        .iter()
        .map(|c| format!("{} / {}", c.label.get(Lang::Zh), c.label.get(Lang::Ii)))
        .collect();
    lines.push_str(&format!("outcomes: {}", outcomes.join("，")));
    let yi_ok = form
        .definition
        .sections
        .iter()
        .all(|s| s.label.get(Lang::Ii) != s.label.get(Lang::Zh));
    story.say(
        format!(
            "The form has {} sections and {} fields, labelled in Chinese and Yi",
            form.definition.sections.len(),
            form.fields.len()
        ),
        yi_ok,
        json!({"sections": labels, "outcomes": outcomes}),
        &lines,
    );

    // Households of one village.
    let village = "513431104201";
    let head_id = sample::resident_id(&mut rng, 1962, true);
    let spouse_id = sample::resident_id(&mut rng, 1965, false);
    let child1 = sample::resident_id(&mut rng, 2012, true);
    let child2 = sample::resident_id(&mut rng, 2016, false);
    let member = |name: &str, id: &str, rel: &str| {
        obj(
            json!({"name": name, "id_type": "resident_id", "id_number": id, "relationship": rel,
                   "ethnicity": "07", "lives_together": "yes", "health": "healthy"}),
        )
    };
    let household_a = c.add_household(NewHousehold {
        village_code: village.into(),
        fields: obj(
            json!({"urban_rural": "rural", "phone": "13881234567", "next_visit_due": "2026-11-30"}),
        ),
        members: vec![
            member("吉克曲布", &head_id, "02"),
            member("吉克阿呷", &spouse_id, "10"),
            member("吉克木呷", &child1, "20"),
            member("吉克阿果", &child2, "30"),
        ],
    })?;
    let mut others = Vec::new();
    for _ in 0..2 {
        let mut h = sample::household(&mut rng);
        h.village_code = village.into();
        others.push(c.add_household(h)?);
    }
    let listed = c.households_in_village(village, 50, 0)?;
    story.say(
        format!("Added 3 households in village {village}"),
        listed.len() == 3,
        json!({"households": listed}),
        &listed
            .iter()
            .map(|h| format!("{} head {}", h.id, h.head_name.as_deref().unwrap_or("-")))
            .collect::<Vec<_>>()
            .join("\n"),
    );

    // An application survey with a mistyped resident ID.
    let survey = c.start_visit(Some(&household_a), "application_survey")?;
    let prefilled = survey
        .answers
        .get("members")
        .and_then(Json::as_array)
        .map_or(0, Vec::len);
    let mut answers = sample::application_survey(&mut rng);
    answers.remove("members");
    answers.insert("village_code".into(), json!(village));
    c.set_answers(&survey.id, &answers)?;
    for child in [2, 3] {
        for (field, value) in [
            ("school_stage", "primary"),
            ("father_situation", "away_working"),
            ("mother_situation", "present"),
            ("actual_caregiver", "parent"),
        ] {
            c.set_answer(
                &survey.id,
                &format!("members[{child}].{field}"),
                json!(value),
            )?;
        }
    }
    let mut typo: Vec<char> = child1.chars().collect();
    if let Some(last) = typo.last_mut() {
        *last = if *last == '1' { '2' } else { '1' };
    }
    let typo: String = typo.into_iter().collect();
    c.set_answer(&survey.id, "members[2].id_number", json!(typo))?;
    let problems = c.validate_visit(&survey.id)?;
    let caught: Vec<&Problem> = problems.iter().filter(|p| p.blocks_completion()).collect();
    // The typo is reported at its path; sex and birth date, no longer derivable, follow it.
    let caught_ok = caught
        .iter()
        .any(|p| p.path == "members[2].id_number" && p.code == "resident_id_check")
        && caught.iter().all(|p| p.path.starts_with("members[2]."));
    story.say(
        format!("Started an application survey prefilled with the household's {prefilled} members; a mistyped resident ID is caught"),
        caught_ok && prefilled == 4,
        json!({"visit": survey.id, "problems": problems}),
        &problem_lines(&problems, Lang::Zh),
    );
    let refused = matches!(
        c.complete_visit(&survey.id),
        Err(Error::VisitHasProblems { .. })
    );
    story.say(
        "Completion is refused while the error remains",
        refused,
        json!({}),
        "",
    );

    c.set_answer(&survey.id, "members[2].id_number", json!(child1))?;
    // Two investigators and the family sign the survey on the screen before it is completed.
    for (hand, field) in [
        "investigator_1_signature",
        "investigator_2_signature",
        "interviewee_signature",
    ]
    .iter()
    .enumerate()
    {
        c.add_signature(&survey.id, field, &signature_png(hand as i64 + 2)?)?;
    }
    let done = c.complete_visit(&survey.id)?;
    c.sign_visit(&survey.id)?;
    let derived = [
        "per_capita_monthly_income",
        "income_vs_standard",
        "rigid_spending_ratio",
        "rigid_spending_level",
    ]
    .iter()
    .map(|k| {
        (
            k.to_string(),
            done.answers.get(*k).cloned().unwrap_or(Json::Null),
        )
    })
    .collect::<Map<_, _>>();
    let household = c.household(&household_a)?;
    let updated = household.next_visit_due.as_deref() == Some("2026-12-28");
    story.say(
        "Corrected the ID; the survey completed and was signed; its answers updated the household record",
        done.status == VisitStatus::Completed && updated && derived.get("income_vs_standard").is_some_and(|v| !v.is_null()),
        json!({"derived": derived, "next_visit_due": household.next_visit_due}),
        &format!(
            "per-capita monthly income {} fen ({}); rigid-spending ratio {} ({})",
            derived.get("per_capita_monthly_income").unwrap_or(&Json::Null),
            derived.get("income_vs_standard").and_then(Json::as_str).unwrap_or("-"),
            derived.get("rigid_spending_ratio").unwrap_or(&Json::Null),
            derived.get("rigid_spending_level").and_then(Json::as_str).unwrap_or("-"),
        ),
    );

    // A routine visit where nobody was home: the short form.
    let routine = c.start_visit(others.first().map(String::as_str), "routine")?;
    c.set_answers(
        &routine.id,
        &obj(json!({"trigger_source": "schedule", "outcome": "nobody_home", "outcome_note": "家中无人，邻居说在山上放牧",
                    "location": {"lat": 28.01, "lon": 102.84, "accuracy_m": 15.0, "provider": "gps"}})),
    )?;
    let short = c.complete_visit(&routine.id);
    story.say(
        "A routine visit with nobody home completes on the short form",
        short.is_ok(),
        json!({"visit": routine.id}),
        "",
    );

    // A newly discovered household.
    let discovery = c.start_visit(None, "new_discovery")?;
    let new_head = sample::resident_id(&mut rng, 1948, false);
    c.set_answers(
        &discovery.id,
        &obj(json!({
            "village_code": village, "outcome": "completed", "interviewee_name": "阿说阿支", "location_missing_reason": "no_signal",
            "urban_rural": "rural",
            "members": [{"name": "阿说阿支", "id_type": "resident_id", "id_number": new_head, "relationship": "02",
                         "lives_together": "yes", "health": "chronic", "illness_category": "hypertension",
                         "self_care_failed": ["bathing", "walking", "toilet", "transfer"]}],
            "basic_living_difficulty": "yes", "risk_level": "high", "recommendation": "apply", "explanation": "独居老人，无人照料",
            "emergency": "yes", "next_visit_due": "2026-12-05", "investigator_1_name": "马海木呷", "consent_privacy": "yes"
        })),
    )?;
    let found = c.complete_visit(&discovery.id)?;
    let class = found
        .answers
        .get("members")
        .and_then(|m| m.get(0))
        .and_then(|m| m.get("self_care_class"))
        .cloned();
    story.say(
        "A newly discovered household was created by its first visit",
        found.household_id.is_some() && class == Some(json!("full_loss")),
        json!({"household": found.household_id, "self_care_class": class}),
        "four of six daily activities failed: self-care class full_loss (derived, not typed)",
    );

    let search = c.search_households("吉克", 10)?;
    let due = c.households_due("2026-12-31", Some(village), 50)?;
    let counts = c.counts()?;
    story.say(
        "Search by name prefix, visits due, and totals",
        search.iter().any(|h| h.id == household_a) && counts.households == 4 && counts.signed == 1 && counts.completed == 2,
        json!({"search": search.len(), "due": due.len(), "counts": counts}),
        &format!(
            "search '吉克': {} household(s); due by 2026-12-31: {}; households {}, visits completed {}, signed {}; changes waiting for the server {}",
            search.len(),
            due.len(),
            counts.households,
            counts.completed,
            counts.signed,
            c.sync_status()?.pending_changes
        ),
    );
    Ok(())
}

fn record_routine_visit(c: &Collector, household: &str, hand: i64) -> Result<String, Failure> {
    let v = c.start_visit(Some(household), "routine")?;
    c.set_answers(
        &v.id,
        &obj(json!({
            "trigger_source": "schedule", "outcome": "completed", "interviewee_name": "吉克阿呷",
            "location": {"lat": 28.01, "lon": 102.84, "accuracy_m": 12.0, "provider": "gps"},
            "basic_living_difficulty": "no", "risk_level": "low", "recommendation": "monitor", "emergency": "no",
            "next_visit_due": "2027-03-01", "investigator_1_name": "马海木呷", "consent_privacy": "yes"
        })),
    )?;
    // The investigator signs on the screen: kept lossless.
    c.add_signature(&v.id, "investigator_1_signature", &signature_png(hand)?)?;
    c.complete_visit(&v.id)?;
    Ok(v.id)
}

/// A signature pad's PNG, each hand its own strokes.
fn signature_png(hand: i64) -> Result<Vec<u8>, Failure> {
    let strokes = image::GrayAlphaImage::from_fn(480, 160, |x, y| {
        let on = (y as i64 - 80 - ((x as i64 / hand) % 30 - 15)).abs() < 3;
        image::LumaA([0, if on { 255 } else { 0 }])
    });
    let mut png = Vec::new();
    strokes
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| fail("demo_failed", e.to_string()))?;
    Ok(png)
}

fn tell_sync(story: &mut Story, dir: &std::path::Path) -> Result<(), Failure> {
    use std::sync::Arc;
    use zoufang_core::protocol::messages::{Role, UserInfo};
    use zoufang_core::sync::ReqwestTransport;
    use zoufang_server::{AppState, BackgroundServer, DeviceAuth, SqliteStorage, Storage};

    let server_err = |e: zoufang_server::ServerError| fail(e.code(), e.to_string());
    let village = "513431104201";
    let storage = Arc::new(
        SqliteStorage::open(
            &dir.join("server"),
            &crate::server_key::ephemeral(zoufang_server::at_rest::CipherSuite::Aes256)?,
        )
        .map_err(server_err)?,
    );
    zoufang_server::publish_defaults(storage.as_ref()).map_err(server_err)?;
    let server = BackgroundServer::start(AppState::new(storage.clone()), "127.0.0.1:0")
        .map_err(|e| fail("io", e.to_string()))?;
    let now = chrono::Utc::now();
    let mut devices = Vec::new();
    for (user, file) in [("coord-aga", "aga.db"), ("coord-muga", "muga.db")] {
        storage
            .create_user(
                &UserInfo {
                    id: user.into(),
                    role: Role::Coordinator,
                    areas: vec![village.into()],
                },
                now,
            )
            .map_err(server_err)?;
        let token = storage
            .issue_enrollment(user, std::time::Duration::from_secs(3600), now)
            .map_err(server_err)?;
        let c = Collector::open(&dir.join(file), &keyed())?;
        c.enroll(
            &ReqwestTransport::new(&server.url).map_err(|e| fail("transport", e.message))?,
            &token,
            user,
        )?;
        devices.push(c);
    }
    let t = ReqwestTransport::new(&server.url).map_err(|e| fail("transport", e.message))?;
    let (a, b) = match devices.as_slice() {
        [a, b] => (a, b),
        _ => return Err(fail("demo_failed", "two devices expected")),
    };
    story.say(
        format!("Started a provincial server on {} and enrolled two coordinators' phones for village {village}", server.url),
        a.sync_status()?.enrolled && b.sync_status()?.enrolled,
        json!({"server": server.url}),
        "",
    );

    let h = a.add_household(NewHousehold {
        village_code: village.into(),
        fields: obj(json!({"phone": "13812345678", "urban_rural": "rural", "address": "三组", "next_visit_due": "2026-12-01"})),
        members: vec![obj(json!({"name": "吉克阿呷", "id_type": "resident_id", "id_number": "11010519491231002X",
                                  "relationship": "02", "lives_together": "yes", "health": "healthy"}))],
    })?;
    let ra = a.sync(&t, None, None)?;
    let rb = b.sync(&t, None, None)?;
    let shared = b.household(&h).is_ok();
    story.say(
        "Phone A recorded a household and synced; phone B synced and received it",
        shared,
        json!({"a": ra, "b": rb}),
        &format!(
            "A sent {} changes in {} round trips ({} B); B received {} entries ({} B)",
            ra.pushed, ra.round_trips, ra.bytes_sent, rb.pulled, rb.bytes_received
        ),
    );

    a.edit_household_field(&h, "address", json!("三组8号"))?;
    b.edit_household_field(&h, "address", json!("三组8号"))?;
    a.edit_household_field(&h, "phone", json!("13900000001"))?;
    b.edit_household_field(&h, "phone", json!("13900000002"))?;
    b.edit_household_field(&h, "supporters_elsewhere", json!(2))?;
    let va = record_routine_visit(a, &h, 6)?;
    let vb = record_routine_visit(b, &h, 7)?;
    let waiting = a.visits_with_pending_attachments()?;
    story.say(
        "Both went offline: both set the address to the same value, each typed a different phone, B alone recorded supporters; each recorded a signed visit",
        a.sync_status()?.pending_changes > 0 && b.sync_status()?.pending_changes > 0 && waiting.len() == 1,
        json!({"pending_a": a.sync_status()?.pending_changes, "pending_b": b.sync_status()?.pending_changes,
               "attachments_waiting_a": waiting}),
        &format!(
            "A shows {} visit whose signature image has not gone up yet ({} B)",
            waiting.len(),
            waiting.iter().map(|w| w.bytes).sum::<u64>()
        ),
    );

    let ra = a.sync(&t, None, None)?;
    let rb = b.sync(&t, None, None)?;
    let ra2 = a.sync(&t, None, None)?;
    story.say(
        "Back in coverage they synced: the same address and B's one-sided edit merged; the phone is a conflict",
        ra.conflicts == 0 && rb.conflicts == 1 && rb.rejected == 0,
        json!({"a": ra, "b": rb, "a_again": ra2}),
        &format!("A: {} accepted; B: {} accepted, {} in conflict", ra.accepted, rb.accepted, rb.conflicts),
    );
    let held = storage.stats().map_err(server_err)?;
    story.say(
        "Each visit's signature image went up after its data, checked against its hash by the server",
        ra.attachments_uploaded == 1
            && rb.attachments_uploaded == 1
            && a.visits_with_pending_attachments()?.is_empty()
            && held.attachment_contents == 2
            && held.visits_awaiting_attachments == 0,
        json!({"contents": held.attachment_contents, "bytes": held.attachment_bytes}),
        &format!(
            "the server holds {} images ({} B); no visit waits for one",
            held.attachment_contents, held.attachment_bytes
        ),
    );

    let reviewer = DeviceAuth::new(
        "review-desk",
        UserInfo {
            id: "county-reviewer".into(),
            role: Role::CountyReviewer,
            areas: vec![village.into()],
        },
    );
    let on_server = storage.conflicts(&reviewer).map_err(server_err)?;
    let on_a = a.conflicts()?;
    let on_b = b.conflicts()?;
    let lines: Vec<String> = on_a
        .iter()
        .flat_map(|c| {
            c.values.iter().map(move |v| {
                format!(
                    "{}: {} typed by {} (received {})",
                    c.field, v.value, v.user, v.received_at
                )
            })
        })
        .collect();
    story.say(
        "The conflict shows on both phones and on the server, with every value and who typed it; nothing was dropped",
        on_a.len() == 1 && on_b.len() == 1 && on_server.len() == 1 && on_a.first().is_some_and(|c| c.values.len() == 2),
        json!({"conflicts": on_a.len(), "on_server": on_server.len()}),
        &format!("{}\nmeanwhile the record shows the last value received", lines.join("\n")),
    );

    if let Some(c) = on_a.first() {
        a.resolve_conflict(&c.id, json!("13900000001"))?;
    }
    a.sync(&t, None, None)?;
    b.sync(&t, None, None)?;
    let server_fields: Map<String, Json> = storage
        .record(zoufang_core::protocol::messages::Entity::Household, &h)
        .map_err(server_err)?
        .map(|r| r.fields.into_iter().map(|(k, v)| (k, v.value)).collect())
        .unwrap_or_default();
    let converged =
        a.household(&h)?.fields == server_fields && b.household(&h)?.fields == server_fields;
    let visits_everywhere = a.visit(&vb).is_ok() && b.visit(&va).is_ok();
    let no_conflicts = a.conflicts()?.is_empty()
        && b.conflicts()?.is_empty()
        && storage.conflicts(&reviewer).map_err(server_err)?.is_empty();
    story.say(
        "A resolved it; after one more sync each, both phones and the server hold the same household and both visits",
        converged && visits_everywhere && no_conflicts && server_fields.get("phone") == Some(&json!("13900000001")),
        json!({"household": server_fields.keys().collect::<Vec<_>>()}),
        &format!(
            "phone {}, address {}, supporters {}",
            server_fields.get("phone").unwrap_or(&Json::Null),
            server_fields.get("address").unwrap_or(&Json::Null),
            server_fields.get("supporters_elsewhere").unwrap_or(&Json::Null)
        ),
    );
    Ok(())
}
