//! Labels in Chinese with optional Nuosu Yi (`ii`) and English; Yi and English fall back to Chinese.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Text {
    pub zh: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ii: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub en: Option<String>,
}

/// A display language of the apps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    Zh,
    Ii,
    En,
}

impl Lang {
    pub fn parse(code: &str) -> Option<Self> {
        match code {
            "zh" => Some(Self::Zh),
            "ii" => Some(Self::Ii),
            "en" => Some(Self::En),
            _ => None,
        }
    }
}

impl Text {
    pub fn zh(zh: impl Into<String>) -> Self {
        Self {
            zh: zh.into(),
            ii: None,
            en: None,
        }
    }

    /// The label in `lang`, or the Chinese one when that language is missing.
    pub fn get(&self, lang: Lang) -> &str {
        let pick = match lang {
            Lang::Zh => None,
            Lang::Ii => self.ii.as_deref(),
            Lang::En => self.en.as_deref(),
        };
        pick.filter(|s| !s.is_empty()).unwrap_or(&self.zh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falls_back_to_chinese() {
        let t = Text {
            zh: "走访".into(),
            ii: Some("ꀀ".into()),
            en: None,
        };
        assert_eq!(t.get(Lang::Ii), "ꀀ");
        assert_eq!(t.get(Lang::En), "走访");
        let empty_yi = Text {
            zh: "走访".into(),
            ii: Some(String::new()),
            en: None,
        };
        assert_eq!(empty_yi.get(Lang::Ii), "走访");
    }
}
