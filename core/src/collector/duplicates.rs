//! One resident ID belongs to one present member. The phone warns while the coordinator types
//! when its own store already holds the ID (another member, another household, or twice in one
//! visit); across villages the server flags the pair to the reviewers whose areas cover both.

use rusqlite::Connection;
use serde_json::{Map, Value as Json};

use super::Collector;
use super::households::RecordBindings;
use crate::error::Result;
use crate::records::HouseholdSummary;
use crate::store;
use zoufang_model::domain::normalize_resident_id;
use zoufang_model::engine::Problem;
use zoufang_model::form::{Form, Severity};

impl Collector {
    /// The households on this phone with a present member holding `id_number`: for the
    /// household screen, to warn before the same person is registered twice.
    pub fn households_holding_id_number(&self, id_number: &str) -> Result<Vec<HouseholdSummary>> {
        let id = normalize_resident_id(id_number);
        self.read(|c| {
            let holders = store::households::holders_of_id_number(c, &id)?;
            let mut out: Vec<HouseholdSummary> = Vec::new();
            for (_, household) in holders {
                if !out.iter().any(|h| h.id == household) {
                    out.push(store::households::summary(c, &household)?);
                }
            }
            Ok(out)
        })
    }
}

/// Warnings for the members of a draft whose resident ID another present member on this phone
/// holds, or another instance of the same draft.
pub(crate) fn id_number_problems(
    conn: &Connection,
    form: &Form,
    answers: &Map<String, Json>,
) -> Result<Vec<Problem>> {
    let b = RecordBindings::of(form);
    let Some(repeat) = b.members_repeat.and_then(|r| form.repeats.get(r)) else {
        return Ok(Vec::new());
    };
    let Some(Json::Array(instances)) = answers.get(&repeat.name) else {
        return Ok(Vec::new());
    };
    let mut problems = Vec::new();
    let mut typed: Vec<String> = Vec::new();
    for (i, instance) in instances.iter().enumerate() {
        let Some(raw) = instance.get("id_number").and_then(Json::as_str) else {
            continue;
        };
        let id = normalize_resident_id(raw);
        let own = instance.get("member_id").and_then(Json::as_str);
        let elsewhere = store::households::holders_of_id_number(conn, &id)?
            .into_iter()
            .any(|(member, _)| Some(member.as_str()) != own);
        if elsewhere || typed.contains(&id) {
            problems.push(Problem {
                path: format!("{}[{i}].id_number", repeat.name),
                code: "id_number_registered".into(),
                severity: Severity::Warning,
                message_zh: "此身份证号已登记在另一成员名下，请核对是否重复登记".into(),
                message_en: "Another member already holds this ID number; check for a duplicate"
                    .into(),
            });
        }
        typed.push(id);
    }
    Ok(problems)
}
