//! The shipped household visit form: it loads, every expression compiles, and the visit-type
//! rules, derived values and domain checks behave as domain.md says.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use chrono::{DateTime, Utc};
use serde_json::{Map, Value as Json, json};
use zoufang_model::code_list::CodeLists;
use zoufang_model::default_form::{default_code_lists, household_visit_form};
use zoufang_model::engine::{Evaluation, Problem, set_answer};
use zoufang_model::expr::Value;
use zoufang_model::form::{Form, ItemRef};
use zoufang_model::text::Lang;

fn now() -> DateTime<Utc> {
    "2026-11-28T03:00:00Z".parse().unwrap()
}

fn form() -> Form {
    household_visit_form().unwrap_or_else(|e| panic!("default form: {:#?}", e.problems))
}

fn lists() -> CodeLists {
    default_code_lists().unwrap()
}

fn obj(v: Json) -> Map<String, Json> {
    v.as_object().cloned().unwrap()
}

/// A routine visit, completed, with everything its short form needs.
fn routine() -> Json {
    json!({
        "visit_type": "routine", "trigger_source": "schedule",
        "village_code": "513431104201", "village_code_year": 2023,
        "started_at": "2026-11-28T09:00:00+08:00", "ended_at": "2026-11-28T09:20:00+08:00",
        "location": {"lat": 27.9, "lon": 102.2, "accuracy_m": 12.0, "provider": "gps", "mock": false},
        "outcome": "completed", "interviewee_name": "阿呷·木呷",
        "urban_rural": "rural",
        "basic_living_difficulty": "no", "risk_level": "low", "recommendation": "monitor", "emergency": "no",
        "next_visit_due": "2027-02-28", "investigator_1_name": "吉克曲布", "consent_privacy": "yes"
    })
}

fn member(name: &str, id: &str, relationship: &str) -> Json {
    json!({"name": name, "id_type": "resident_id", "id_number": id, "relationship": relationship,
           "lives_together": "yes", "health": "healthy", "ethnicity": "07"})
}

/// An application survey with six members, income, assets, expenditure, two investigators and
/// the interviewee's signature.
fn application_survey() -> Json {
    let mut v = routine();
    let o = v.as_object_mut().unwrap();
    o.insert("visit_type".into(), json!("application_survey"));
    o.insert("recommendation".into(), json!("apply"));
    o.insert("explanation".into(), json!("主要劳动力重病"));
    o.insert("cadre_related".into(), json!("no"));
    o.insert("consent_verification".into(), json!("yes"));
    o.insert(
        "members".into(),
        json!([
            member("吉克阿呷", "11010519491231002X", "02"),
            member("吉克曲布", "440524188001010014", "10"),
            member("吉克木呷", "513431201501010013", "20"),
            member("吉克阿果", "513431201801010023", "30"),
            member("吉克拉且", "513431199001010017", "20"),
            member("吉克阿支", "51343119920101002X", "30"),
        ]),
    );
    for child in [2, 3] {
        let m = o["members"][child].as_object_mut().unwrap();
        m.insert("father_situation".into(), json!("away_working"));
        m.insert("mother_situation".into(), json!("present"));
        m.insert("actual_caregiver".into(), json!("parent"));
    }
    o.insert(
        "income_items".into(),
        json!([
            {"income_kind": "wages", "income_amount": 2_400_000},
            {"income_kind": "transfer", "income_amount": 600_000}
        ]),
    );
    o.insert(
        "asset_items".into(),
        json!([{"asset_kind": "house", "house_structure": "earth_wood", "unsafe_grade": "c"}]),
    );
    o.insert(
        "expense_items".into(),
        json!([{"expense_kind": "medical", "expense_amount": 2_200_000}]),
    );
    o.insert(
        "investigator_1_signature".into(),
        json!("018f0000-0000-7000-8000-000000000001"),
    );
    o.insert("investigator_2_name".into(), json!("马海木呷"));
    o.insert(
        "investigator_2_signature".into(),
        json!("018f0000-0000-7000-8000-000000000002"),
    );
    o.insert(
        "interviewee_signature".into(),
        json!("018f0000-0000-7000-8000-000000000003"),
    );
    v
}

fn problems(form: &Form, answers: &Json) -> Vec<Problem> {
    let a = obj(answers.clone());
    let l = lists();
    Evaluation::new(form, &a, &l, now()).validate()
}

fn errors(form: &Form, answers: &Json) -> Vec<(String, String)> {
    problems(form, answers)
        .into_iter()
        .filter(Problem::blocks_completion)
        .map(|p| (p.path, p.code))
        .collect()
}

fn field(form: &Form, name: &str) -> usize {
    match form.lookup(name) {
        Some(ItemRef::Field(id)) => id,
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn default_form_loads_with_every_expression_compiled() {
    let f = form();
    assert_eq!(f.id(), "household_visit");
    assert!(f.fields.len() > 90, "fields: {}", f.fields.len());
    // Every field that declares an expression has it compiled.
    for (id, info) in f.fields.iter().enumerate() {
        let def = f.field_def(id).unwrap();
        assert_eq!(
            def.relevant.is_some(),
            info.relevant.is_some(),
            "{}",
            info.name
        );
        assert_eq!(
            def.calculate.is_some(),
            info.calculate.is_some(),
            "{}",
            info.name
        );
        assert_eq!(
            def.constraint.is_some(),
            info.constraint.is_some(),
            "{}",
            info.name
        );
        assert_eq!(
            def.default.is_some(),
            info.default.is_some(),
            "{}",
            info.name
        );
    }
    let code_lists = lists();
    for id in 0..f.fields.len() {
        if let Some(list) = &f.field_def(id).unwrap().code_list {
            assert!(
                code_lists.get(list).is_some(),
                "code list {list} is shipped"
            );
        }
    }
}

#[test]
fn section_titles_and_outcomes_have_yi_labels() {
    let f = form();
    for section in &f.definition.sections {
        let yi = section.label.ii.as_deref().unwrap_or_default();
        assert!(
            !yi.is_empty() && yi.chars().all(|c| ('\u{A000}'..='\u{A48F}').contains(&c)),
            "{}",
            section.name
        );
        assert_ne!(section.label.get(Lang::Ii), section.label.get(Lang::Zh));
    }
    for choice in f.choice_list("visit_outcome").unwrap() {
        assert!(
            choice
                .label
                .ii
                .as_deref()
                .is_some_and(|s| s.chars().all(|c| ('\u{A000}'..='\u{A48F}').contains(&c)))
        );
    }
    // Fields without Yi fall back to Chinese.
    let def = f.field_def(field(&f, "village_code")).unwrap();
    assert_eq!(def.label.get(Lang::Ii), "村（社区）区划代码");
}

#[test]
fn a_complete_routine_visit_uses_the_short_form() {
    let f = form();
    assert_eq!(errors(&f, &routine()), vec![]);
    // Members, income and signatures are not asked on a routine visit.
    let a = obj(routine());
    let l = lists();
    let ev = Evaluation::new(&f, &a, &l, now());
    assert!(!ev.is_relevant(field(&f, "income_window_months"), &[]));
    assert!(!ev.is_required(field(&f, "interviewee_signature"), &[]));
}

#[test]
fn an_application_survey_needs_members_income_assets_expenditure_two_investigators_and_a_signature()
{
    let f = form();
    let mut v = routine();
    v["visit_type"] = json!("application_survey");
    v["recommendation"] = json!("apply");
    v["explanation"] = json!("x");
    let errs = errors(&f, &v);
    for path in [
        "members",
        "income_items",
        "asset_items",
        "expense_items",
        "investigator_2_name",
        "investigator_1_signature",
        "investigator_2_signature",
        "interviewee_signature",
        "consent_verification",
        "cadre_related",
    ] {
        assert!(
            errs.contains(&(path.to_owned(), "required".to_owned())),
            "{path} missing from {errs:?}"
        );
    }
    assert_eq!(errors(&f, &application_survey()), vec![]);
}

#[test]
fn a_non_completed_visit_has_a_short_form() {
    let f = form();
    let v = json!({
        "visit_type": "application_survey", "trigger_source": "schedule",
        "village_code": "513431104201", "started_at": "2026-11-28T09:00:00+08:00",
        "location_missing_reason": "no_signal", "outcome": "nobody_home"
    });
    assert_eq!(errors(&f, &v), vec![]);
}

#[test]
fn derived_values_sex_birth_age_self_care_income_and_rigid_spending() {
    let f = form();
    let mut v = application_survey();
    v["members"][0]["health"] = json!("disabled");
    v["members"][0]["disability_certificate"] = json!("11010519491231002X13");
    v["members"][0]["self_care_failed"] = json!(["eating", "dressing", "bathing", "walking"]);
    v["members"][1]["self_care_failed"] = json!(["bathing"]);
    let a = obj(v.clone());
    let l = lists();
    let ev = Evaluation::new(&f, &a, &l, now());
    assert_eq!(ev.value(field(&f, "sex"), &[0]), Value::Text("2".into()));
    assert_eq!(ev.value(field(&f, "sex"), &[1]), Value::Text("1".into()));
    assert_eq!(
        ev.value(field(&f, "birth_date"), &[0]),
        Value::Date("1949-12-31".parse().unwrap())
    );
    assert_eq!(ev.value(field(&f, "age"), &[0]), Value::Number(76.0));
    assert_eq!(ev.value(field(&f, "age"), &[2]), Value::Number(11.0));
    assert_eq!(ev.value(field(&f, "is_child"), &[2]), Value::Bool(true));
    assert!(ev.is_relevant(field(&f, "father_situation"), &[2]));
    assert!(!ev.is_relevant(field(&f, "father_situation"), &[4]));
    assert_eq!(
        ev.value(field(&f, "self_care_class"), &[0]),
        Value::Text("full_loss".into())
    );
    assert_eq!(
        ev.value(field(&f, "self_care_class"), &[1]),
        Value::Text("partial_loss".into())
    );
    assert_eq!(
        ev.value(field(&f, "self_care_class"), &[4]),
        Value::Null,
        "not relevant for a healthy adult"
    );
    // 30,000 yuan over 12 months for 6 people: 416.67 yuan = 41,667 fen per person per month.
    assert_eq!(
        ev.value(field(&f, "per_capita_monthly_income"), &[]),
        Value::Number(41_667.0)
    );
    assert_eq!(
        ev.value(field(&f, "income_vs_standard"), &[]),
        Value::Text("below_standard".into())
    );
    // 22,000 of 30,000 yuan = 0.733 ≥ 0.7.
    assert_eq!(
        ev.value(field(&f, "rigid_spending_ratio"), &[]),
        Value::Number(0.733)
    );
    assert_eq!(
        ev.value(field(&f, "rigid_spending_level"), &[]),
        Value::Text("above_high".into())
    );
    // The children need their module answered.
    for child in [2, 3] {
        v["members"][child]
            .as_object_mut()
            .unwrap()
            .remove("father_situation");
        v["members"][child]
            .as_object_mut()
            .unwrap()
            .remove("actual_caregiver");
    }
    let errs = errors(&f, &v);
    assert!(
        errs.contains(&("members[2].father_situation".into(), "required".into())),
        "{errs:?}"
    );
    assert!(
        errs.contains(&("members[3].actual_caregiver".into(), "required".into())),
        "{errs:?}"
    );

    // Urban standard and a 3-month window change the verdicts.
    let mut u = application_survey();
    u["urban_rural"] = json!("urban");
    u["income_window_months"] = json!("3");
    let a = obj(u);
    let ev = Evaluation::new(&f, &a, &l, now());
    // 30,000 yuan over 3 months for 6 = 1,666.67 yuan/month > 1.5 × 760.
    assert_eq!(
        ev.value(field(&f, "income_vs_standard"), &[]),
        Value::Text("above".into())
    );
    assert_eq!(
        ev.value(field(&f, "rigid_spending_level"), &[]),
        Value::Text("below".into())
    );
}

#[test]
fn domain_rules_are_reported_with_their_field_paths() {
    let f = form();
    let mut v = application_survey();
    v["members"][2]["id_number"] = json!("513431201501010014"); // wrong check character
    v["members"][1]["sex"] = json!("2"); // the ID says male
    v["members"][3]["name"] = json!("吉克3");
    v["members"][4]["relationship"] = json!("02"); // a second head
    v["members"][5]["health"] = json!("disabled");
    v["members"][5]["disability_certificate"] = json!("11010519491231002X13"); // someone else's
    v["household_phone"] = json!("12345");
    v["village_code"] = json!("513431999201");
    v["income_items"][0]["income_amount"] = json!(-5);
    v["investigator_2_name"] = json!("吉克曲布");
    let errs = errors(&f, &v);
    let expect = [
        ("members[2].id_number", "resident_id_check"),
        // Without a valid ID, sex and birth date cannot be derived and must be typed.
        ("members[2].sex", "required"),
        ("members[2].birth_date", "required"),
        ("members[1].sex", "constraint"),
        ("members[3].name", "name_characters"),
        ("members", "constraint"),
        (
            "members[5].disability_certificate",
            "disability_certificate_other_person",
        ),
        ("household_phone", "phone_invalid"),
        ("village_code", "region_code_unknown_township"),
        ("income_items[0].income_amount", "money_negative"),
        ("investigator_2_name", "constraint"),
    ];
    for (path, code) in expect {
        assert!(
            errs.contains(&(path.to_owned(), code.to_owned())),
            "{path} {code} not in {errs:?}"
        );
    }
    assert_eq!(errs.len(), expect.len(), "{errs:?}");
    let all = problems(&f, &v);
    let sex = all.iter().find(|p| p.path == "members[1].sex").unwrap();
    assert_eq!(sex.message_zh, "性别与身份证号不符");
    assert_eq!(sex.message_en, "Sex does not match the resident ID");
}

#[test]
fn warnings_do_not_block() {
    let f = form();
    let mut v = routine();
    v["ended_at"] = json!("2026-11-28T09:01:00+08:00"); // one minute
    v["location"]["mock"] = json!(true);
    let all = problems(&f, &v);
    let codes: Vec<_> = all
        .iter()
        .map(|p| (p.path.as_str(), p.code.as_str(), p.blocks_completion()))
        .collect();
    assert!(
        codes.contains(&("ended_at", "constraint", false)),
        "{codes:?}"
    );
    assert!(
        codes.contains(&("location", "geopoint_mock", false)),
        "{codes:?}"
    );
    assert_eq!(errors(&f, &v), vec![]);
}

#[test]
fn set_answer_normalises_and_rejects_wrong_shapes() {
    let f = form();
    let mut a = Map::new();
    set_answer(&f, &mut a, "members[0].name", json!(" 阿呷•木呷 ")).unwrap();
    set_answer(
        &f,
        &mut a,
        "members[0].id_number",
        json!("11010519491231002x"),
    )
    .unwrap();
    set_answer(&f, &mut a, "household_phone", json!("138 1234 5678")).unwrap();
    set_answer(&f, &mut a, "started_at", json!("2026-11-28T09:00:00+08:00")).unwrap();
    assert_eq!(a["members"][0]["name"], json!("阿呷·木呷"));
    assert_eq!(a["members"][0]["id_number"], json!("11010519491231002X"));
    assert_eq!(a["household_phone"], json!("13812345678"));
    assert_eq!(a["started_at"], json!("2026-11-28T01:00:00.000Z"));
    let err = |path: &str, v: Json| set_answer(&f, &mut a.clone(), path, v).unwrap_err().code();
    assert_eq!(err("members[2].name", json!("x")), "answer_repeat_index");
    assert_eq!(err("income_amount", json!(5)), "answer_path");
    assert_eq!(err("members[0].age", json!(5)), "answer_read_only");
    assert_eq!(err("assistance_status", json!("低保")), "answer_read_only");
    assert_eq!(err("nope", json!(1)), "answer_unknown_field");
    assert_eq!(err("village_code_year", json!("2023")), "answer_type");
    assert_eq!(err("members[x].name", json!("a")), "answer_path");
    assert_eq!(
        err("outcome", json!("x".repeat(20_000))),
        "answer_too_large"
    );
    set_answer(&f, &mut a, "household_phone", Json::Null).unwrap();
    assert!(!a.contains_key("household_phone"));
}

#[test]
fn every_engine_rule_is_reported_with_its_code() {
    let f = form();
    let mut v = application_survey();
    v["village_code_year"] = json!("2023"); // a string where a number belongs
    v["colour"] = json!("red"); // not part of the form
    v["risk_level"] = json!("extreme"); // not a choice
    v["suggested_programmes"] = json!(["dibao", "dibao"]);
    v["members"][0]["ethnicity"] = json!("07");
    v["next_visit_due"] = json!("2099-01-01");
    v["location"] = json!({"lat": 95.0, "lon": 102.2});
    v["investigator_1_signature"] = json!("not-an-attachment-id");
    v["explanation"] = json!("很".repeat(2001));
    v["hukou_region_code"] = json!("5134311042");
    v["address"] = json!("三组\u{0}12号"); // a NUL typed into a text
    v["started_at"] = json!("2099-01-01T08:00:00Z"); // a phone whose clock ran decades ahead
    v["ended_at"] = json!("2026-11-28T03:09:00Z"); // within the allowance: fine
    v["members"][1]["id_number"] = json!("440524203001010017"); // born 2030
    v["difficulty_items"] = json!(
        (0..51)
            .map(|_| json!({"difficulty_type": "medical", "difficulty_severity": "mild"}))
            .collect::<Vec<_>>()
    );
    let all = problems(&f, &v);
    let has = |path: &str, code: &str| all.iter().any(|p| p.path == path && p.code == code);
    let drift = all
        .iter()
        .any(|p| p.path == "ended_at" && p.code == "datetime_in_future");
    assert!(!drift, "nine minutes ahead is drift, not a lie");
    for (path, code) in [
        ("village_code_year", "type_mismatch"),
        ("colour", "unknown_field"),
        ("risk_level", "choice_unknown"),
        ("suggested_programmes", "choice_duplicate"),
        ("next_visit_due", "date_out_of_range"),
        ("location", "geopoint_range"),
        ("investigator_1_signature", "attachment_reference"),
        ("explanation", "text_too_long"),
        ("hukou_region_code", "region_code_syntax"),
        ("address", "text_control_character"),
        ("started_at", "datetime_in_future"),
        ("members[1].id_number", "resident_id_birth_date"),
        ("difficulty_items", "repeat_too_many"),
    ] {
        assert!(
            has(path, code),
            "{path} {code} missing: {:?}",
            all.iter().map(|p| (&p.path, &p.code)).collect::<Vec<_>>()
        );
    }
    // A visit dated before its form version existed: refused; on the day itself: fine.
    let published = DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z")
        .unwrap()
        .to_utc();
    let mut early = application_survey();
    early["started_at"] = json!("2019-03-01T08:00:00Z");
    early["ended_at"] = json!("2026-05-31T09:00:00Z");
    let early = obj(early);
    let dated = Evaluation::new(&f, &early, &lists(), now())
        .published_at(Some(published))
        .validate();
    let before: Vec<&str> = dated
        .iter()
        .filter(|p| p.code == "datetime_before_form")
        .map(|p| p.path.as_str())
        .collect();
    assert_eq!(before, ["started_at"]);
    assert!(
        dated
            .iter()
            .any(|p| p.code == "datetime_before_form" && p.blocks_completion())
    );

    // A code list the device has not received yet is a warning, not a block.
    let a = obj(application_survey());
    let none = CodeLists::default();
    let without_lists = Evaluation::new(&f, &a, &none, now()).validate();
    let unavailable: Vec<_> = without_lists
        .iter()
        .filter(|p| p.code == "code_list_unavailable")
        .collect();
    assert!(
        unavailable
            .iter()
            .any(|p| p.path == "members[0].relationship")
    );
    assert!(unavailable.iter().all(|p| !p.blocks_completion()));
    // ...but the exactly-one-head rule still holds without the list.
    assert!(
        !without_lists.iter().any(|p| p.blocks_completion()),
        "{without_lists:?}"
    );
}

#[test]
fn messages_never_contain_the_answers() {
    let f = form();
    let mut v = application_survey();
    v["members"][0]["id_number"] = json!("11010519491231002Y");
    v["members"][0]["name"] = json!("吉克3号");
    v["household_phone"] = json!("99999");
    for p in problems(&f, &v) {
        for secret in ["11010519491231002Y", "吉克3号", "99999"] {
            assert!(
                !p.message_zh.contains(secret)
                    && !p.message_en.contains(secret)
                    && !p.path.contains(secret)
            );
        }
    }
}

#[test]
fn answers_in_the_wrong_scope_are_flagged() {
    let f = form();
    let mut v = routine();
    v["id_number"] = json!("11010519491231002X"); // a member field at the top level
    v["members"] = json!([{"visit_type": "routine"}]); // a top-level field inside a member
    let all = problems(&f, &v);
    let flagged: Vec<_> = all
        .iter()
        .filter(|p| p.code == "unknown_field")
        .map(|p| p.path.as_str())
        .collect();
    assert_eq!(flagged, vec!["id_number", "members[0].visit_type"]);
}
