//! Validation: every problem of the answers at once (required, types, choices, domain
//! checks, constraints, repeat counts), each with its path, code and messages.

use chrono::NaiveDate;
use serde_json::{Map, Value as Json};

use super::{Evaluation, Problem, json_to_value};
use crate::domain;
use crate::expr::Value;
use crate::form::{Container, FieldInfo, FieldKind, ItemRef, Severity};

/// How far a recorded time may lie ahead of the phone's clock (clock drift between readings).
const FUTURE_ALLOWANCE: chrono::TimeDelta = chrono::TimeDelta::minutes(10);
/// Slack for clocks around a form's publication (the server's own bound is the same).
const PUBLICATION_ALLOWANCE: chrono::TimeDelta = chrono::TimeDelta::days(1);

impl Evaluation<'_> {
    /// The built-in check of a field's kind on one canonical value, whatever the rest of the
    /// answers say (for direct household and member edits). Returns the failing code.
    pub fn check_value(&self, field: usize, value: &Json) -> Option<&'static str> {
        let f = self.form.fields.get(field)?;
        let Ok(v) = json_to_value(f.kind, value) else {
            return Some("type_mismatch");
        };
        if v.is_empty() {
            return None;
        }
        let mut warnings = Vec::new();
        self.kind_check(field, f, &[], &v, &mut warnings)
    }

    /// Every problem at once, in form order.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let form = self.form;
        let mut visit = |item: ItemRef, ctx: &[usize]| match item {
            ItemRef::Field(id) => self.check_field(id, ctx, &mut problems),
            ItemRef::Repeat(r) => self.check_repeat(r, ctx, &mut problems),
            ItemRef::Group(_) => {}
        };
        self.walk(&form.items, &mut Vec::new(), &mut visit);
        self.check_unknown_keys(self.answers, &[], "", &mut problems);
        problems
    }

    /// Answers the form has no place for (an unknown name, or a name used in the wrong
    /// repeat) are reported as warnings; a repeat that is not a list of objects is an error.
    fn check_unknown_keys(
        &self,
        scope: &Map<String, Json>,
        chain: &[usize],
        prefix: &str,
        out: &mut Vec<Problem>,
    ) {
        for (key, value) in scope {
            let path = format!("{prefix}{key}");
            match self.form.lookup(key) {
                Some(ItemRef::Field(f))
                    if self.form.fields.get(f).is_some_and(|f| f.chain == chain) => {}
                Some(ItemRef::Repeat(r))
                    if self
                        .form
                        .repeats
                        .get(r)
                        .is_some_and(|rep| rep.chain == chain) =>
                {
                    let Some(list) = value.as_array() else {
                        out.push(problem(path, "type_mismatch", Severity::Error));
                        continue;
                    };
                    let inner: Vec<usize> = chain.iter().copied().chain([r]).collect();
                    for (i, instance) in list.iter().enumerate() {
                        match instance.as_object() {
                            Some(obj) => {
                                self.check_unknown_keys(obj, &inner, &format!("{path}[{i}]."), out)
                            }
                            None => out.push(problem(
                                format!("{path}[{i}]"),
                                "type_mismatch",
                                Severity::Error,
                            )),
                        }
                    }
                }
                _ => out.push(problem(path, "unknown_field", Severity::Warning)),
            }
        }
    }

    fn check_repeat(&self, r: usize, ctx: &[usize], out: &mut Vec<Problem>) {
        let Some(rep) = self.form.repeats.get(r) else {
            return;
        };
        if !self.container_relevant(Some(Container::Repeat(r)), ctx) {
            return;
        }
        let path = self.repeat_path(r, ctx);
        let n = self.instance_count(r, ctx);
        let required = rep.always_required
            || rep
                .required
                .as_ref()
                .is_some_and(|e| e.eval(self, ctx, &Value::Null).is_true());
        let min = rep.min_count.max(u32::from(required)) as usize;
        if n < min {
            let code = if n == 0 { "required" } else { "repeat_too_few" };
            out.push(problem(path.clone(), code, Severity::Error));
        }
        if rep.max_count.is_some_and(|max| n > max as usize) {
            out.push(problem(path.clone(), "repeat_too_many", Severity::Error));
        }
        if let Some(c) = &rep.constraint
            && !c.eval(self, ctx, &Value::Null).is_true()
        {
            out.push(self.constraint_problem(path, r, true, rep.constraint_severity));
        }
    }

    fn constraint_problem(
        &self,
        path: String,
        id: usize,
        is_repeat: bool,
        severity: Severity,
    ) -> Problem {
        let def = if is_repeat {
            self.repeat_def(id)
        } else {
            self.form.field_def(id)
        };
        let message = def.and_then(|d| d.constraint_message.clone());
        let mut p = problem(path, "constraint", severity);
        if let Some(m) = message {
            p.message_en = m.en.clone().unwrap_or_else(|| p.message_en.clone());
            p.message_zh = m.zh;
        }
        p
    }

    fn repeat_def(&self, r: usize) -> Option<&crate::form::ItemDef> {
        let name = &self.form.repeats.get(r)?.name;
        find_def(&self.form.definition.sections, name)
    }

    fn check_field(&self, id: usize, ctx: &[usize], out: &mut Vec<Problem>) {
        let Some(f) = self.form.fields.get(id) else {
            return;
        };
        if !f.kind.has_answer() || !self.is_relevant(id, ctx) {
            return;
        }
        let path = self.path_of(f, ctx);
        if f.calculate.is_none()
            && let Some(raw) = self.raw(f, ctx)
            && json_to_value(f.kind, raw).is_err()
        {
            out.push(problem(path, "type_mismatch", Severity::Error));
            return;
        }
        let value = self.value(id, ctx);
        if value.is_empty() {
            if self.is_required(id, ctx) {
                out.push(problem(path, "required", Severity::Error));
            }
            return;
        }
        if let Some(code) = self.kind_check(id, f, ctx, &value, out) {
            out.push(problem(path.clone(), code, Severity::Error));
            return;
        }
        if let Some(c) = &f.constraint
            && !c.eval(self, ctx, &value).is_true()
        {
            out.push(self.constraint_problem(path, id, false, f.constraint_severity));
        }
    }

    /// The built-in check of a field kind; returns the code of the first failure.
    fn kind_check(
        &self,
        id: usize,
        f: &FieldInfo,
        ctx: &[usize],
        value: &Value,
        out: &mut Vec<Problem>,
    ) -> Option<&'static str> {
        let def = self.form.field_def(id)?;
        let text = match value {
            Value::Text(s) => Some(s.as_str()),
            _ => None,
        };
        match (f.kind, value) {
            (FieldKind::SelectOne | FieldKind::SelectMultiple, _) => {
                self.check_choices(def, f, ctx, value, out)
            }
            (FieldKind::Money, Value::Number(n)) if *n < 0.0 => Some("money_negative"),
            (FieldKind::ResidentId, _) => text.and_then(|s| {
                domain::ResidentId::parse(s, self.today)
                    .err()
                    .map(|e| e.code())
            }),
            (FieldKind::RegionCode, _) => {
                text.and_then(|s| domain::check_region_code(s).err().map(|e| e.code()))
            }
            (FieldKind::Phone, _) => text
                .filter(|s| !domain::is_valid_phone(s))
                .map(|_| "phone_invalid"),
            (FieldKind::PersonName, _) => {
                text.and_then(|s| domain::check_person_name(s).err().map(|e| e.code()))
            }
            (FieldKind::DisabilityCertificate, _) => {
                let holder = f.id_field.and_then(|id| match self.value(id, ctx) {
                    Value::Text(s) => Some(s),
                    _ => None,
                });
                text.and_then(|s| {
                    domain::check_disability_certificate(s, holder.as_deref(), self.today)
                        .err()
                        .map(|e| e.code())
                })
            }
            (FieldKind::Date, Value::Date(d)) if *d > self.today + chrono::Days::new(3650) => {
                Some("date_out_of_range")
            }
            (FieldKind::Date, Value::Date(d))
                if *d < NaiveDate::from_ymd_opt(1880, 1, 1).unwrap_or(NaiveDate::MIN) =>
            {
                Some("date_out_of_range")
            }
            (FieldKind::Geopoint, Value::Geopoint(g)) => self.check_geopoint(g, f, ctx, out),
            (FieldKind::Photo | FieldKind::Signature, _) => text
                .filter(|s| uuid::Uuid::parse_str(s).is_err())
                .map(|_| "attachment_reference"),
            (FieldKind::Text, _) => text.and_then(|s| {
                if s.chars().count() > 2000 {
                    Some("text_too_long")
                } else if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
                    // A NUL or an escape sequence typed into a note is never meant.
                    Some("text_control_character")
                } else {
                    None
                }
            }),
            (FieldKind::Datetime, Value::DateTime(t)) if *t > self.now + FUTURE_ALLOWANCE => {
                Some("datetime_in_future")
            }
            (FieldKind::Datetime, Value::DateTime(t))
                if self
                    .not_before
                    .is_some_and(|p| *t < p - PUBLICATION_ALLOWANCE) =>
            {
                Some("datetime_before_form")
            }
            _ => None,
        }
    }

    /// Each choice known (to the form's list or the code list), none twice. A code list this
    /// device does not hold yet is a warning, not a refusal.
    fn check_choices(
        &self,
        def: &crate::form::ItemDef,
        f: &FieldInfo,
        ctx: &[usize],
        value: &Value,
        out: &mut Vec<Problem>,
    ) -> Option<&'static str> {
        let chosen: Vec<&str> = match value {
            Value::Text(s) => vec![s.as_str()],
            Value::Choices(c) => c.iter().map(String::as_str).collect(),
            _ => vec![],
        };
        let mut seen = std::collections::HashSet::new();
        if !chosen.iter().all(|c| seen.insert(*c)) {
            return Some("choice_duplicate");
        }
        for c in chosen {
            let known = match (&def.choices, &def.code_list) {
                (Some(list), _) => self
                    .form
                    .choice_list(list)
                    .map(|l| l.iter().any(|x| x.value == c)),
                (None, Some(list)) => self.code_lists.contains(list, c),
                (None, None) => Some(false),
            };
            match known {
                Some(true) => {}
                Some(false) => return Some("choice_unknown"),
                None => {
                    let path = self.path_of(f, ctx);
                    out.push(problem(path, "code_list_unavailable", Severity::Warning));
                    return None;
                }
            }
        }
        None
    }

    /// A position on Earth; a mock location (a faking app) is flagged, not refused.
    fn check_geopoint(
        &self,
        g: &crate::expr::GeoPoint,
        f: &FieldInfo,
        ctx: &[usize],
        out: &mut Vec<Problem>,
    ) -> Option<&'static str> {
        if !(-90.0..=90.0).contains(&g.lat)
            || !(-180.0..=180.0).contains(&g.lon)
            || g.accuracy_m.is_some_and(|a| a < 0.0)
        {
            return Some("geopoint_range");
        }
        if g.mock {
            out.push(problem(
                self.path_of(f, ctx),
                "geopoint_mock",
                Severity::Warning,
            ));
        }
        None
    }
}

fn find_def<'d>(items: &'d [crate::form::ItemDef], name: &str) -> Option<&'d crate::form::ItemDef> {
    items.iter().find_map(|d| {
        if d.name == name {
            Some(d)
        } else {
            find_def(&d.items, name)
        }
    })
}

fn problem(path: String, code: &str, severity: Severity) -> Problem {
    let (zh, en) = message(code);
    Problem {
        path,
        code: code.to_owned(),
        severity,
        message_zh: zh.to_owned(),
        message_en: en.to_owned(),
    }
}

/// The standard wording of each problem code, in Chinese and English.
pub fn message(code: &str) -> (&'static str, &'static str) {
    match code {
        "required" => ("此项必填", "This answer is required"),
        "type_mismatch" => ("答案格式不正确", "The answer has the wrong format"),
        "unknown_field" => ("表单中没有此项", "This answer is not part of the form"),
        "choice_unknown" => ("选项不在列表中", "The choice is not in the list"),
        "choice_duplicate" => ("选项重复", "A choice is selected twice"),
        "code_list_unavailable" => (
            "代码表尚未下载，无法核对",
            "The code list is not on this device yet; the choice was not checked",
        ),
        "money_negative" => ("金额不能为负数", "Amounts of money cannot be negative"),
        "resident_id_length" => ("身份证号应为18位", "A resident ID has 18 characters"),
        "resident_id_characters" => (
            "身份证号只能包含数字，最后一位可为X",
            "A resident ID is digits, with X allowed last",
        ),
        "resident_id_check" => (
            "身份证号校验位不正确",
            "The resident ID's check character is wrong",
        ),
        "resident_id_birth_date" => (
            "身份证号中的出生日期无效",
            "The birth date in the resident ID is not a real past date",
        ),
        "region_code_syntax" => ("区划代码应为12位数字", "A region code has 12 digits"),
        "region_code_unknown_township" => (
            "区划代码中的乡镇不存在",
            "The township in this region code does not exist",
        ),
        "phone_invalid" => (
            "电话号码格式不正确",
            "The phone number is not a valid mobile or landline number",
        ),
        "name_empty" => ("姓名不能为空", "The name is empty"),
        "name_too_long" => ("姓名过长", "The name is too long"),
        "name_characters" => (
            "姓名含有不允许的字符",
            "The name contains characters a name cannot have",
        ),
        "disability_certificate_length" => (
            "残疾证号应为20位",
            "A disability certificate number has 20 characters",
        ),
        "disability_certificate_id" => (
            "残疾证号前18位不是有效身份证号",
            "The first 18 characters are not a valid resident ID",
        ),
        "disability_certificate_other_person" => (
            "残疾证号与本人身份证号不符",
            "The certificate belongs to a different ID than this member's",
        ),
        "disability_certificate_category" => {
            ("残疾类别应为1至7", "The disability category must be 1 to 7")
        }
        "disability_certificate_level" => {
            ("残疾等级应为1至4", "The disability level must be 1 to 4")
        }
        "date_out_of_range" => ("日期超出合理范围", "The date is out of the plausible range"),
        "geopoint_range" => ("位置坐标无效", "The location coordinates are invalid"),
        "geopoint_mock" => (
            "位置可能来自模拟定位",
            "The location may come from a mock-location app",
        ),
        "attachment_reference" => ("附件引用无效", "The attachment reference is invalid"),
        "text_too_long" => ("文字过长", "The text is too long"),
        "text_control_character" => (
            "文字中含有不可见的控制字符",
            "The text contains an invisible control character",
        ),
        "datetime_in_future" => (
            "时间晚于现在，请检查手机时间",
            "The time is later than now; check the phone's clock",
        ),
        "datetime_before_form" => (
            "时间早于本表单发布，请检查时间",
            "The time is before this form was published; check it",
        ),
        "repeat_too_few" => ("条目数量不足", "Too few entries"),
        "repeat_too_many" => ("条目数量过多", "Too many entries"),
        "constraint" => ("答案不符合要求", "The answer does not meet the form's rule"),
        _ => ("答案有问题", "There is a problem with this answer"),
    }
}
