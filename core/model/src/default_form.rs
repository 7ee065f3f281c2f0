//! The household visit form and the code lists shipped with the core, so a phone can record
//! visits before its first sync. The server may deliver newer versions of both.

use super::code_list::{CodeList, CodeLists};
use super::form::{Form, FormLoadError};

/// The default household visit form definition (JSON).
pub const HOUSEHOLD_VISIT_FORM_JSON: &str = include_str!("../forms/household_visit.json");

/// The default code lists (JSON array of code lists).
pub const DEFAULT_CODE_LISTS_JSON: &str = include_str!("../data/code-lists.json");

/// Loads the shipped household visit form. It is checked by the test suite, so an error here
/// means the binary was built from a broken tree.
pub fn household_visit_form() -> Result<Form, FormLoadError> {
    Form::from_json(HOUSEHOLD_VISIT_FORM_JSON)
}

pub fn default_code_lists() -> Result<CodeLists, serde_json::Error> {
    let lists: Vec<CodeList> = serde_json::from_str(DEFAULT_CODE_LISTS_JSON)?;
    Ok(lists.into_iter().collect())
}
