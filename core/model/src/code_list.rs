//! Code lists: server-delivered dictionaries (difficulty types, illness categories,
//! relationships...) with `zh` and optional `ii` labels, versioned apart from forms.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::form::Choice;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeList {
    pub name: String,
    pub version: u32,
    pub entries: Vec<Choice>,
}

/// The code lists available to validation, by name.
#[derive(Debug, Clone, Default)]
pub struct CodeLists {
    lists: BTreeMap<String, CodeList>,
}

impl CodeLists {
    pub fn insert(&mut self, list: CodeList) {
        self.lists.insert(list.name.clone(), list);
    }

    pub fn get(&self, name: &str) -> Option<&CodeList> {
        self.lists.get(name)
    }

    /// `None` when the list itself is not available on this device.
    pub fn contains(&self, name: &str, value: &str) -> Option<bool> {
        self.lists
            .get(name)
            .map(|l| l.entries.iter().any(|c| c.value == value))
    }

    pub fn iter(&self) -> impl Iterator<Item = &CodeList> {
        self.lists.values()
    }
}

impl FromIterator<CodeList> for CodeLists {
    fn from_iter<T: IntoIterator<Item = CodeList>>(iter: T) -> Self {
        let mut lists = Self::default();
        for l in iter {
            lists.insert(l);
        }
        lists
    }
}
