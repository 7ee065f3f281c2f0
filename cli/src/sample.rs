//! Synthetic but realistic sample data for the demo and the benchmarks: Liangshan villages,
//! Nuosu names, valid resident IDs. Deterministic for a given seed, so runs are comparable.

use serde_json::{Map, Value as Json, json};
use zoufang_core::model::domain::resident_id_check_char;
use zoufang_core::records::NewHousehold;

/// splitmix64: a tiny, well-known generator; good enough to vary sample data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        items.get(self.below(items.len() as u64) as usize)
    }
}

pub const SURNAMES: [&str; 16] = [
    "吉克", "阿说", "马海", "沙马", "俄木", "阿苦", "吉伍", "海来", "曲比", "勒格", "罗洪", "阿的",
    "瓦其", "日火", "吉木", "阿尔",
];
const GIVEN: [&str; 16] = [
    "阿呷", "木呷", "曲布", "拉且", "阿支", "日哈", "伍各", "尔古", "阿果", "石且", "约达", "子莫",
    "么惹", "阿牛", "拉则", "尔日",
];

/// Villages of 昭觉县 (513431): 比尔镇 (104) and 日哈乡 (244), villages 201–230.
pub fn village(rng: &mut Rng) -> String {
    let township = if rng.below(2) == 0 { "104" } else { "244" };
    format!("513431{township}{:03}", 201 + rng.below(30))
}

pub fn name(rng: &mut Rng) -> String {
    format!(
        "{}{}",
        rng.pick(&SURNAMES).unwrap_or(&"吉克"),
        rng.pick(&GIVEN).unwrap_or(&"阿呷")
    )
}

/// A valid resident ID for a person born in `year`, registered in 昭觉县.
pub fn resident_id(rng: &mut Rng, year: u64, male: bool) -> String {
    // Digits 15–17 are the sequence; the 17th is odd for men.
    let sex_digit = rng.below(5) * 2 + u64::from(male);
    let body = format!(
        "513431{year:04}{:02}{:02}{:02}{sex_digit}",
        1 + rng.below(12),
        1 + rng.below(28),
        rng.below(100)
    );
    let check = resident_id_check_char(&body).unwrap_or('0');
    format!("{body}{check}")
}

fn member(rng: &mut Rng, surname: &str, relationship: &str, year: u64) -> Map<String, Json> {
    let male = rng.below(2) == 0;
    let given = rng.pick(&GIVEN).unwrap_or(&"阿呷");
    json!({
        "name": format!("{surname}{given}"),
        "id_type": "resident_id",
        "id_number": resident_id(rng, year, male),
        "relationship": relationship,
        "ethnicity": "07",
        "lives_together": "yes",
        "health": "healthy"
    })
    .as_object()
    .cloned()
    .unwrap_or_default()
}

/// A household of 2–6 members in a Liangshan village.
pub fn household(rng: &mut Rng) -> NewHousehold {
    let surname = *rng.pick(&SURNAMES).unwrap_or(&"吉克");
    let size = 2 + rng.below(5);
    let head_year = 1950 + rng.below(40);
    let mut members = vec![member(rng, surname, "02", head_year)];
    for i in 1..size {
        let (rel, year) = if i == 1 {
            ("10", 1950 + rng.below(40))
        } else {
            ("20", 1995 + rng.below(25))
        };
        members.push(member(rng, surname, rel, year));
    }
    let due = format!("2026-{:02}-{:02}", 1 + rng.below(12), 1 + rng.below(28));
    NewHousehold {
        village_code: village(rng),
        fields: json!({"urban_rural": "rural", "phone": format!("13{:09}", rng.below(1_000_000_000)), "next_visit_due": due})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        members,
    }
}

/// A full application survey: six members with the children's module, income, assets,
/// expenditure, difficulties, needs, two investigators and signatures (about 150 answers).
pub fn application_survey(rng: &mut Rng) -> Map<String, Json> {
    let surname = *rng.pick(&SURNAMES).unwrap_or(&"吉克");
    let mut members: Vec<Json> = vec![
        Json::Object(member(rng, surname, "02", 1960)),
        Json::Object(member(rng, surname, "10", 1962)),
        Json::Object(member(rng, surname, "20", 1990)),
        Json::Object(member(rng, surname, "30", 1993)),
        Json::Object(member(rng, surname, "20", 2015)),
        Json::Object(member(rng, surname, "30", 2018)),
    ];
    for (i, m) in members.iter_mut().enumerate() {
        let Some(m) = m.as_object_mut() else { continue };
        m.insert(
            "marital_status".into(),
            json!(if i < 2 { "married" } else { "unmarried" }),
        );
        if i >= 4 {
            m.insert("school_stage".into(), json!("primary"));
            m.insert("father_situation".into(), json!("away_working"));
            m.insert("mother_situation".into(), json!("present"));
            m.insert("actual_caregiver".into(), json!("grandparent"));
        } else {
            m.insert(
                "labour_capacity".into(),
                json!(if i == 0 { "partial" } else { "full" }),
            );
            m.insert(
                "employment".into(),
                json!(if i == 2 { "migrant_work" } else { "farming" }),
            );
        }
    }
    if let Some(head) = members.first_mut().and_then(Json::as_object_mut) {
        head.insert("health".into(), json!("serious"));
        head.insert("illness_category".into(), json!("uremia"));
        head.insert("self_care_failed".into(), json!(["bathing", "walking"]));
    }
    json!({
        "visit_type": "application_survey", "trigger_source": "self_report",
        "village_code": village(rng), "village_code_year": 2023, "village_group": "三组", "address": "三组12号",
        "started_at": hours_ago(1.2), "ended_at": hours_ago(0.1),
        "location": {"lat": 28.0108, "lon": 102.8456, "accuracy_m": 9.5, "provider": "gps", "mock": false},
        "outcome": "completed", "language_used": "ii", "interviewee_name": format!("{surname}阿呷"), "interviewee_relation": "02",
        "urban_rural": "rural", "household_phone": "13812345678", "cadre_related": "no", "supporters_elsewhere": 1,
        "members": members,
        "income_window_months": "12",
        "income_items": [
            {"income_kind": "wages", "income_member": format!("{surname}曲布"), "income_amount": 1_800_000},
            {"income_kind": "business", "income_amount": 300_000},
            {"income_kind": "transfer", "income_amount": 420_000}
        ],
        "asset_items": [
            {"asset_kind": "house", "asset_description": "土木结构住房", "asset_quantity": 1, "house_structure": "earth_wood", "unsafe_grade": "c"},
            {"asset_kind": "livestock", "asset_description": "牛", "asset_quantity": 2, "asset_value": 1_200_000},
            {"asset_kind": "land", "asset_description": "耕地", "asset_quantity": 4.5}
        ],
        "expense_items": [
            {"expense_kind": "medical", "expense_amount": 1_650_000},
            {"expense_kind": "education", "expense_amount": 180_000}
        ],
        "difficulty_items": [
            {"difficulty_type": "medical", "difficulty_severity": "severe", "difficulty_since": "2025-06-01"},
            {"difficulty_type": "low_income", "difficulty_severity": "moderate", "difficulty_since": "2025-01-01"}
        ],
        "need_items": [
            {"need_type": "medical_aid", "need_urgency": "urgent"},
            {"need_type": "living_allowance", "need_urgency": "soon"}
        ],
        "basic_living_difficulty": "yes", "risk_level": "high", "suggested_programmes": ["dibao", "medical"],
        "recommendation": "apply", "emergency": "no", "explanation": "户主患尿毒症，透析费用高，家庭收入低",
        "next_visit_due": "2026-12-28",
        "investigator_1_name": "马海木呷", "investigator_1_signature": "018f0000-0000-7000-8000-000000000001",
        "investigator_2_name": "沙马拉且", "investigator_2_signature": "018f0000-0000-7000-8000-000000000002",
        "other_participants": [{"participant_role": "village_cadre", "participant_name": "吉伍日哈"}],
        "consent_privacy": "yes", "consent_verification": "yes", "interviewee_cannot_sign": "no",
        "interviewee_signature": "018f0000-0000-7000-8000-000000000003"
    })
    .as_object()
    .cloned()
    .unwrap_or_default()
}

/// What coordinators write in a routine visit's explanation, a few phrases at a time.
const NOTES: [&str; 18] = [
    "户主身体状况稳定",
    "老人独居，子女在外务工",
    "家中有在校学生",
    "今年玉米收成一般",
    "已提醒按时服药",
    "房屋漏雨，已报村委",
    "低保金按月到账",
    "孩子由祖父母照看",
    "申请了临时救助",
    "医保已续缴",
    "家里养了两头牛",
    "需要跟进残疾证办理",
    "饮水问题已解决",
    "建议下次带翻译",
    "邻居反映夜里无人照看",
    "外出务工收入不稳定",
    "已联系乡卫生院",
    "本人不愿多谈",
];
const INVESTIGATORS: [&str; 6] = [
    "马海木呷",
    "沙马拉且",
    "吉克伍各",
    "阿说子莫",
    "海来尔古",
    "曲比阿果",
];

/// A routine visit's answers as different coordinators record them: who answered, where and
/// when, what they saw and wrote. Visits differ as real ones do, so the bytes a batch of them
/// compresses to are not flattered by identical records.
pub fn routine_visit(rng: &mut Rng, next_due: &str) -> Map<String, Json> {
    let pick = |rng: &mut Rng, items: &[&'static str]| -> &'static str {
        rng.pick(items).copied().unwrap_or_default()
    };
    let notes: Vec<&str> = (0..1 + rng.below(3)).map(|_| pick(rng, &NOTES)).collect();
    let start = 1.0 + rng.below(600) as f64 / 100.0;
    let trigger = pick(
        rng,
        &["schedule", "schedule", "platform_alert", "discovered"],
    );
    let mut answers = json!({
        "trigger_source": trigger,
        "outcome": "completed", "interviewee_name": name(rng),
        "location": {
            "lat": 27.8 + rng.below(60_000) as f64 / 100_000.0,
            "lon": 102.5 + rng.below(70_000) as f64 / 100_000.0,
            "accuracy_m": 3.0 + rng.below(400) as f64 / 10.0, "provider": "gps", "mock": false
        },
        "language_used": pick(rng, &["ii", "ii", "zh"]),
        "basic_living_difficulty": pick(rng, &["no", "no", "yes"]),
        "risk_level": pick(rng, &["low", "low", "medium"]),
        "recommendation": pick(rng, &["monitor", "monitor", "refer", "resolved"]),
        "emergency": "no", "explanation": notes.join("，"), "next_visit_due": next_due,
        "investigator_1_name": pick(rng, &INVESTIGATORS), "consent_privacy": "yes",
        "started_at": hours_ago(start), "ended_at": hours_ago(start - 0.3 - rng.below(50) as f64 / 100.0)
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
    if trigger == "platform_alert" {
        answers.insert(
            "task_id".into(),
            json!(format!("YJ2026{:06}", rng.below(1_000_000))),
        );
        answers.insert(
            "alert_verdict".into(),
            json!(pick(
                rng,
                &["confirmed", "not_confirmed", "already_assisted"]
            )),
        );
    }
    answers
}

/// A time `hours` before now, as the form's datetime answers hold it: sample visits happen
/// today, after the form they use was published.
pub fn hours_ago(hours: f64) -> String {
    let ago = chrono::TimeDelta::seconds((hours * 3600.0) as i64);
    (chrono::Utc::now() - ago).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// How many answers (leaf values) a visit-shaped object holds.
pub fn answer_count(answers: &Map<String, Json>) -> usize {
    answers
        .values()
        .map(|v| match v {
            Json::Array(items) if items.iter().all(Json::is_object) && !items.is_empty() => items
                .iter()
                .filter_map(Json::as_object)
                .map(answer_count)
                .sum(),
            _ => 1,
        })
        .sum()
}
