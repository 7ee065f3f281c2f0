//! What the server publishes to devices: form definitions (checked whole before they are
//! published; a version, once published, never changes) and code lists, and the catalog a
//! device asks for (only what it lacks).

use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use zoufang_model::code_list::CodeList;
use zoufang_model::form::Form;
use zoufang_protocol::messages::CatalogRequest;

use super::ts;
use crate::repo::Tx;
use crate::storage::{Result, ServerError, Stats};

/// Publishes a form definition; the same version again is a no-op if identical, refused if
/// not. Returns its (id, version).
pub fn publish_form(
    tx: &mut dyn Tx,
    definition_json: &str,
    now: DateTime<Utc>,
) -> Result<(String, u32)> {
    let form = Form::from_json(definition_json)
        .map_err(|e| ServerError::bad("form_invalid", e.to_string()))?;
    let canonical = serde_json::to_string(&form.definition)?;
    let (id, version) = (form.id().to_owned(), form.version());
    match tx.form_definition(&id, version)? {
        Some(e) if e == canonical => {}
        Some(_) => {
            return Err(ServerError::bad(
                "form_version_conflict",
                "this form version is published with other content",
            ));
        }
        None => tx.insert_form(&id, version, &canonical, &ts(now))?,
    }
    Ok((id, version))
}

pub fn publish_code_list(tx: &mut dyn Tx, list: &CodeList, now: DateTime<Utc>) -> Result<()> {
    tx.put_code_list(list, &ts(now))
}

/// The forms and code lists a device does not hold yet (by the versions it names).
pub fn catalog(tx: &mut dyn Tx, request: &CatalogRequest) -> Result<(Vec<Json>, Vec<CodeList>)> {
    let mut forms = Vec::new();
    for (id, version, definition) in tx.forms()? {
        if !request.forms.iter().any(|(i, v)| *i == id && *v == version) {
            forms.push(serde_json::from_str(&definition)?);
        }
    }
    let lists = tx
        .latest_code_lists()?
        .into_iter()
        .filter(|l| {
            request
                .code_lists
                .get(&l.name)
                .is_none_or(|v| *v < l.version)
        })
        .collect();
    Ok((forms, lists))
}

pub fn stats(tx: &mut dyn Tx) -> Result<Stats> {
    tx.stats()
}
