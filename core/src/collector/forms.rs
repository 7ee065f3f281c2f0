//! Forms and code lists: installed, versioned side by side, loaded once and cached.

use std::sync::Arc;

use super::{Collector, HOUSEHOLD_VISIT_FORM_ID};
use crate::error::{Error, Result};
use crate::records::timestamp;
use crate::store;
use zoufang_model::code_list::{CodeList, CodeLists};
use zoufang_model::default_form::{HOUSEHOLD_VISIT_FORM_JSON, default_code_lists};
use zoufang_model::form::Form;

fn form_not_found(form_id: &str, version: u32) -> Error {
    Error::FormNotFound {
        form_id: form_id.chars().take(64).collect(),
        version,
    }
}

impl Collector {
    pub(super) fn install_defaults(&self) -> Result<()> {
        if self.read(|c| store::forms::version_count(c, HOUSEHOLD_VISIT_FORM_ID))? == 0 {
            self.install_form(HOUSEHOLD_VISIT_FORM_JSON)?;
            let lists = default_code_lists()?;
            for list in lists.iter() {
                self.install_code_list(list)?;
            }
        }
        Ok(())
    }

    pub(crate) fn reload_code_lists(&self) -> Result<()> {
        let lists = self.read(store::forms::latest_code_lists)?;
        *self.code_lists.write() = Arc::new(lists);
        Ok(())
    }

    /// Checks and installs a form definition. Installing the same version again with the same
    /// content is a no-op; with different content it is refused.
    pub fn install_form(&self, json: &str) -> Result<Arc<Form>> {
        let form = Form::from_json(json)?;
        let canonical = serde_json::to_string(&form.definition)?;
        let (id, version) = (form.id().to_owned(), form.version());
        let now = timestamp(self.now());
        self.write(|tx| match store::forms::definition(tx, &id, version)? {
            Some(e) if e == canonical => Ok(()),
            Some(_) => Err(Error::FormVersionConflict {
                form_id: id.clone(),
                version,
            }),
            None => store::forms::insert_definition(tx, &id, version, &canonical, &now),
        })?;
        tracing::info!(form = %id, version, "form installed");
        let form = Arc::new(form);
        self.forms.lock().insert((id, version), form.clone());
        Ok(form)
    }

    /// A form version, loaded once and cached.
    pub fn form(&self, form_id: &str, version: u32) -> Result<Arc<Form>> {
        if let Some(f) = self.forms.lock().get(&(form_id.to_owned(), version)) {
            return Ok(f.clone());
        }
        let json = self
            .read(|c| store::forms::definition(c, form_id, version))?
            .ok_or_else(|| form_not_found(form_id, version))?;
        let form = Arc::new(Form::from_json(&json)?);
        self.forms
            .lock()
            .insert((form_id.to_owned(), version), form.clone());
        Ok(form)
    }

    /// The newest installed version of a form.
    pub fn latest_form(&self, form_id: &str) -> Result<Arc<Form>> {
        let version = self
            .read(|c| store::forms::latest_version(c, form_id))?
            .ok_or_else(|| form_not_found(form_id, 0))?;
        self.form(form_id, version)
    }

    /// Installed forms as (id, version), newest first per form.
    pub fn installed_forms(&self) -> Result<Vec<(String, u32)>> {
        self.read(store::forms::installed)
    }

    pub fn install_code_list(&self, list: &CodeList) -> Result<()> {
        if list.name.is_empty() || list.name.len() > 64 {
            return Err(Error::InvalidInput(
                "a code list needs a name of 1 to 64 characters".into(),
            ));
        }
        let now = timestamp(self.now());
        self.write(|tx| store::forms::put_code_list(tx, list, &now))?;
        self.reload_code_lists()
    }

    pub fn code_lists(&self) -> Arc<CodeLists> {
        self.code_lists.read().clone()
    }
}
