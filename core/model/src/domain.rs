//! Self-validating domain values: resident ID (GB 11643-1999), 12-digit statistical region
//! codes, phone numbers, disability certificates and personal names.
//!
//! Every check returns a stable code rather than a message with the value in it: the values
//! are personal data and must never reach a log or an error string.

use std::collections::HashSet;
use std::sync::LazyLock;

use chrono::NaiveDate;
use unicode_normalization::UnicodeNormalization;

const ID_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const ID_CHECK_CHARS: [char; 11] = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'];

/// Why a resident ID was refused. The `code()` strings are stable and part of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResidentIdError {
    Length,
    Characters,
    CheckCharacter,
    BirthDate,
}

impl ResidentIdError {
    pub fn code(self) -> &'static str {
        match self {
            Self::Length => "resident_id_length",
            Self::Characters => "resident_id_characters",
            Self::CheckCharacter => "resident_id_check",
            Self::BirthDate => "resident_id_birth_date",
        }
    }
}

/// Sex as encoded in digit 17 of a resident ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sex {
    Male,
    Female,
}

impl Sex {
    /// The choice value used by forms (GB/T 2261.1: 1 = male, 2 = female).
    pub fn code(self) -> &'static str {
        match self {
            Self::Male => "1",
            Self::Female => "2",
        }
    }
}

/// A checked 18-character resident ID (also covers HK/Macao/Taiwan residence permits, 81/82/83,
/// and the 2023 foreign permanent residence card, 9x, which share the layout and check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResidentId {
    normalized: String,
    birth_date: NaiveDate,
    sex: Sex,
}

impl ResidentId {
    /// Trims, uppercases a trailing `x`, then checks length, digits, the ISO 7064 MOD 11-2 check
    /// character and a real, non-future birth date. Retired region prefixes are accepted on purpose:
    /// people keep their numbers when counties are renamed.
    pub fn parse(raw: &str, today: NaiveDate) -> Result<Self, ResidentIdError> {
        let normalized = normalize_resident_id(raw);
        let chars: Vec<char> = normalized.chars().collect();
        if chars.len() != 18 {
            return Err(ResidentIdError::Length);
        }
        let (body, last) = chars.split_at(17);
        let mut sum = 0u32;
        for (c, w) in body.iter().zip(ID_WEIGHTS) {
            let d = c.to_digit(10).ok_or(ResidentIdError::Characters)?;
            sum += d * w;
        }
        let last = last.first().copied().ok_or(ResidentIdError::Length)?;
        if !(last.is_ascii_digit() || last == 'X') {
            return Err(ResidentIdError::Characters);
        }
        let expected = ID_CHECK_CHARS
            .get((sum % 11) as usize)
            .copied()
            .ok_or(ResidentIdError::CheckCharacter)?;
        if last != expected {
            return Err(ResidentIdError::CheckCharacter);
        }
        let birth_digits: String = body
            .get(6..14)
            .ok_or(ResidentIdError::Length)?
            .iter()
            .collect();
        let birth_date = NaiveDate::parse_from_str(&birth_digits, "%Y%m%d")
            .map_err(|_| ResidentIdError::BirthDate)?;
        if birth_date > today
            || birth_date < NaiveDate::from_ymd_opt(1880, 1, 1).unwrap_or(NaiveDate::MIN)
        {
            return Err(ResidentIdError::BirthDate);
        }
        let sex_digit = body
            .get(16)
            .and_then(|c| c.to_digit(10))
            .ok_or(ResidentIdError::Characters)?;
        let sex = if sex_digit % 2 == 1 {
            Sex::Male
        } else {
            Sex::Female
        };
        Ok(Self {
            normalized,
            birth_date,
            sex,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.normalized
    }
    pub fn birth_date(&self) -> NaiveDate {
        self.birth_date
    }
    pub fn sex(&self) -> Sex {
        self.sex
    }
}

/// The check character for the first 17 digits of a resident ID (ISO 7064 MOD 11-2), or `None`
/// when `body` is not 17 ASCII digits. For generating test and demo data.
pub fn resident_id_check_char(body: &str) -> Option<char> {
    if body.len() != 17 {
        return None;
    }
    let mut sum = 0;
    for (c, w) in body.chars().zip(ID_WEIGHTS) {
        sum += c.to_digit(10)? * w;
    }
    ID_CHECK_CHARS.get((sum % 11) as usize).copied()
}

/// The canonical spelling of a resident ID: trimmed, lowercase `x` raised, full-width digits
/// (common from Chinese IMEs) folded to ASCII.
pub fn normalize_resident_id(raw: &str) -> String {
    raw.trim()
        .chars()
        .map(|c| match c {
            'x' | 'ｘ' | 'Ｘ' => 'X',
            '０'..='９' => char::from_u32(c as u32 - '０' as u32 + '0' as u32).unwrap_or(c),
            other => other,
        })
        .collect()
}

/// Liangshan townships (9-digit prefixes of 12-digit codes), from the project's copy of the
/// 2023 division table.
static LIANGSHAN_TOWNSHIPS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../data/liangshan-townships.csv")
        .lines()
        .skip(1)
        .filter_map(|line| line.split(',').next())
        .filter(|code| code.len() == 9)
        .collect()
});

/// Liangshan Yi Autonomous Prefecture: codes 5134xx.
pub const LIANGSHAN_PREFIX: &str = "5134";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionCodeError {
    Syntax,
    UnknownTownship,
}

impl RegionCodeError {
    pub fn code(self) -> &'static str {
        match self {
            Self::Syntax => "region_code_syntax",
            Self::UnknownTownship => "region_code_unknown_township",
        }
    }
}

/// Checks a 12-digit statistical division code (province 2, prefecture 2, county 2, township 3,
/// village 3). For Liangshan the township must exist in the shipped table; elsewhere only the
/// syntax is checked because the project carries no other table.
pub fn check_region_code(code: &str) -> Result<(), RegionCodeError> {
    if code.len() != 12 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RegionCodeError::Syntax);
    }
    // Province, prefecture and county segments are never 00 at village level.
    if code.get(0..2) == Some("00") || code.get(2..4) == Some("00") || code.get(4..6) == Some("00")
    {
        return Err(RegionCodeError::Syntax);
    }
    if code.starts_with(LIANGSHAN_PREFIX) {
        let township = code.get(0..9).unwrap_or_default();
        if !LIANGSHAN_TOWNSHIPS.contains(township) {
            return Err(RegionCodeError::UnknownTownship);
        }
    }
    Ok(())
}

/// Checks a region-code prefix naming a whole division: a province (2 digits), prefecture (4),
/// county (6), township (9) or village (12, checked as [`check_region_code`]).
pub fn check_region_prefix(prefix: &str) -> Result<(), RegionCodeError> {
    if !prefix.bytes().all(|b| b.is_ascii_digit()) || prefix.starts_with("00") {
        return Err(RegionCodeError::Syntax);
    }
    match prefix.len() {
        12 => check_region_code(prefix),
        2 | 4 | 6 | 9 => Ok(()),
        _ => Err(RegionCodeError::Syntax),
    }
}

/// Number of Liangshan townships in the shipped table (for tests and the CLI).
pub fn liangshan_township_count() -> usize {
    LIANGSHAN_TOWNSHIPS.len()
}

/// Mobile `^1[3-9]\d{9}$` or landline `^0\d{2,3}-?\d{7,8}$`. Spaces and dashes typed inside
/// a mobile number are tolerated by [`normalize_phone`] first.
pub fn is_valid_phone(phone: &str) -> bool {
    let b = phone.as_bytes();
    let all_digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    let mobile = b.len() == 11
        && b.first() == Some(&b'1')
        && matches!(b.get(1), Some(b'3'..=b'9'))
        && all_digits(b);
    if mobile {
        return true;
    }
    if b.first() != Some(&b'0') {
        return false;
    }
    let (area, rest): (&[u8], &[u8]) = match phone.split_once('-') {
        Some((a, r)) => (a.as_bytes(), r.as_bytes()),
        None => {
            // Without a dash the split is ambiguous; accept any split that fits.
            return (3..=4).any(|area_len| {
                b.len() > area_len && {
                    let (a, r) = b.split_at(area_len);
                    all_digits(a) && all_digits(r) && (7..=8).contains(&r.len())
                }
            });
        }
    };
    (3..=4).contains(&area.len())
        && all_digits(area)
        && all_digits(rest)
        && (7..=8).contains(&rest.len())
}

/// Strips spaces and full-width digits from a typed phone number; keeps one landline dash.
pub fn normalize_phone(raw: &str) -> String {
    raw.trim()
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| match c {
            '０'..='９' => char::from_u32(c as u32 - '０' as u32 + '0' as u32).unwrap_or(c),
            '－' => '-',
            other => other,
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisabilityCertificateError {
    Length,
    ResidentId,
    OtherPerson,
    Category,
    Level,
}

impl DisabilityCertificateError {
    pub fn code(self) -> &'static str {
        match self {
            Self::Length => "disability_certificate_length",
            Self::ResidentId => "disability_certificate_id",
            Self::OtherPerson => "disability_certificate_other_person",
            Self::Category => "disability_certificate_category",
            Self::Level => "disability_certificate_level",
        }
    }
}

/// A disability certificate number is the holder's 18-character ID, the category (1–7) and the
/// level (1–4). `holder_id` is the member's own ID when known.
pub fn check_disability_certificate(
    raw: &str,
    holder_id: Option<&str>,
    today: NaiveDate,
) -> Result<(u8, u8), DisabilityCertificateError> {
    let normalized = normalize_resident_id(raw);
    if normalized.chars().count() != 20 || !normalized.is_ascii() {
        return Err(DisabilityCertificateError::Length);
    }
    let (id_part, tail) = normalized.split_at(18);
    let id =
        ResidentId::parse(id_part, today).map_err(|_| DisabilityCertificateError::ResidentId)?;
    if let Some(holder) = holder_id
        && normalize_resident_id(holder) != id.as_str()
    {
        return Err(DisabilityCertificateError::OtherPerson);
    }
    let mut digits = tail.chars().map(|c| c.to_digit(10));
    let category = digits.next().flatten().filter(|d| (1..=7).contains(d));
    let category = category.ok_or(DisabilityCertificateError::Category)?;
    let level = digits.next().flatten().filter(|d| (1..=4).contains(d));
    let level = level.ok_or(DisabilityCertificateError::Level)?;
    Ok((category as u8, level as u8))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersonNameError {
    Empty,
    TooLong,
    Characters,
}

impl PersonNameError {
    pub fn code(self) -> &'static str {
        match self {
            Self::Empty => "name_empty",
            Self::TooLong => "name_too_long",
            Self::Characters => "name_characters",
        }
    }
}

/// Normalises a personal name to NFC, trims it and folds the look-alike middle dots that IMEs
/// produce (`•`, `・`, `．`) to `·` (U+00B7), as used in minority and transliterated names.
pub fn normalize_person_name(raw: &str) -> String {
    let folded: String = raw
        .trim()
        .chars()
        .map(|c| match c {
            '•' | '・' | '‧' | '∙' | '．' | '⋅' => '·',
            other => other,
        })
        .collect();
    folded.nfc().collect()
}

/// A name is letters of any script (CJK including the supplementary-plane extensions, Yi
/// syllables U+A000–U+A48F, Latin, Tibetan, Uyghur...), combining marks, `·` and spaces between
/// Latin parts. Digits and punctuation are refused: they signal a mistyped field.
pub fn check_person_name(name: &str) -> Result<(), PersonNameError> {
    if name.is_empty() {
        return Err(PersonNameError::Empty);
    }
    if name.chars().count() > 64 {
        return Err(PersonNameError::TooLong);
    }
    let ok = name.chars().all(|c| {
        c.is_alphabetic()
            || c == '·'
            || c == ' '
            || ('\u{A000}'..='\u{A48F}').contains(&c)
            || ('\u{0300}'..='\u{036F}').contains(&c)
            // Ideographic variation selectors pick glyph variants of rare name characters.
            || ('\u{E0100}'..='\u{E01EF}').contains(&c)
    });
    let edge_ok = !name.starts_with('·') && !name.ends_with('·') && !name.contains("··");
    if ok && edge_ok {
        Ok(())
    } else {
        Err(PersonNameError::Characters)
    }
}

/// Household fields that only the server side writes (reviewers, administrators, imports) and
/// that flow down to devices: a coordinator's edit of one is refused (`server_owned_field`).
pub const SERVER_OWNED_HOUSEHOLD_FIELDS: &[&str] = &["assistance_status", "assistance_category"];

/// Whether `field` of a household may be written by a user of `role` through a field edit.
/// The village is never edited: a household moves between villages only by a reviewer's
/// explicit operation on the server.
pub fn household_field_writable(field: &str, is_coordinator: bool) -> Result<(), &'static str> {
    if field == "village_code" {
        return Err("a household moves to another village only by a reviewer's operation");
    }
    if is_coordinator && SERVER_OWNED_HOUSEHOLD_FIELDS.contains(&field) {
        return Err("this field is set by the township or county, not on a coordinator's phone");
    }
    Ok(())
}

/// A household's lifecycle (`status` field, with `status_reason` and `status_date`). Only an
/// active household is due for visits and counted; the others stay findable.
pub const HOUSEHOLD_STATUSES: &[&str] = &[
    "active",
    "moved_away",
    "migrant_away",
    "all_deceased",
    "merged",
    "registered_in_error",
];

/// A member's lifecycle. Removing a member is setting one of the last three: a field edit
/// that merges like any other, never a deletion.
pub const MEMBER_STATUSES: &[&str] = &["present", "left_household", "deceased", "duplicate"];

/// The lifecycle fields of households and members.
pub const LIFECYCLE_FIELDS: &[&str] = &["status", "status_reason", "status_date"];

/// Checks a value of a lifecycle field (any other field passes): a known status, a reason of at
/// most 500 characters, a `YYYY-MM-DD` date; null clears a reason or a date.
pub fn check_lifecycle_value(
    household: bool,
    field: &str,
    value: &serde_json::Value,
) -> Result<(), &'static str> {
    match (field, value) {
        ("status", serde_json::Value::String(s)) => check_status(household, s),
        ("status", _) => Err("a status is one of the known values"),
        ("status_reason" | "status_date", serde_json::Value::Null) => Ok(()),
        ("status_reason", serde_json::Value::String(s)) if s.chars().count() <= 500 => Ok(()),
        ("status_reason", _) => Err("a status reason is a text of at most 500 characters"),
        ("status_date", serde_json::Value::String(s))
            if NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok() && s.len() == 10 =>
        {
            Ok(())
        }
        ("status_date", _) => Err("a status date is a YYYY-MM-DD date"),
        _ => Ok(()),
    }
}

/// Whether `value` is a status a device may set for a household (`household`) or a member.
/// `merged` is set by a reviewer's merge on the server, never by a device.
pub fn check_status(household: bool, value: &str) -> Result<(), &'static str> {
    let known = if household {
        HOUSEHOLD_STATUSES
    } else {
        MEMBER_STATUSES
    };
    if !known.contains(&value) {
        return Err("not a known status");
    }
    if value == "merged" {
        return Err("a household is merged by a reviewer's operation on the server");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 28).unwrap_or_default()
    }

    #[test]
    fn gb11643_vectors_from_the_standard() {
        let a = ResidentId::parse("11010519491231002X", today()).expect("vector 1");
        assert_eq!(
            a.birth_date(),
            NaiveDate::from_ymd_opt(1949, 12, 31).expect("date")
        );
        assert_eq!(a.sex(), Sex::Female);
        let b = ResidentId::parse("440524188001010014", today()).expect("vector 2");
        assert_eq!(
            b.birth_date(),
            NaiveDate::from_ymd_opt(1880, 1, 1).expect("date")
        );
        assert_eq!(b.sex(), Sex::Male);
    }

    #[test]
    fn lowercase_x_and_fullwidth_digits_are_normalised() {
        let id = ResidentId::parse(" 11010519491231002x ", today()).expect("lowercase x");
        assert_eq!(id.as_str(), "11010519491231002X");
        let full =
            ResidentId::parse("１１０１０５１９４９１２３１００２Ｘ", today()).expect("full width");
        assert_eq!(full.as_str(), "11010519491231002X");
    }

    #[test]
    fn wrong_check_character_is_refused() {
        assert_eq!(
            ResidentId::parse("110105194912310021", today()),
            Err(ResidentIdError::CheckCharacter)
        );
        assert_eq!(
            ResidentId::parse("440524188001010015", today()),
            Err(ResidentIdError::CheckCharacter)
        );
    }

    #[test]
    fn length_and_characters_are_refused() {
        assert_eq!(
            ResidentId::parse("11010519491231002", today()),
            Err(ResidentIdError::Length)
        );
        assert_eq!(
            ResidentId::parse("1101051949123100X2", today()),
            Err(ResidentIdError::Characters)
        );
        assert_eq!(
            ResidentId::parse("11010519491231002Y", today()),
            Err(ResidentIdError::Characters)
        );
        assert_eq!(ResidentId::parse("", today()), Err(ResidentIdError::Length));
    }

    /// Builds an ID with a correct check character, so only the date is wrong.
    fn with_check(body17: &str) -> String {
        let sum: u32 = body17
            .chars()
            .zip(ID_WEIGHTS)
            .map(|(c, w)| c.to_digit(10).unwrap_or(0) * w)
            .sum();
        format!("{body17}{}", ID_CHECK_CHARS[(sum % 11) as usize])
    }

    #[test]
    fn region_prefixes_name_whole_divisions() {
        for ok in ["51", "5134", "513431", "513431104", "513431104201"] {
            assert_eq!(check_region_prefix(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "5",
            "513",
            "5134311",
            "5134311042",
            "51343110420",
            "00",
            "51a431",
        ] {
            assert_eq!(
                check_region_prefix(bad),
                Err(RegionCodeError::Syntax),
                "{bad:?}"
            );
        }
        // A village of an unknown Liangshan township is refused like a whole code.
        assert_eq!(
            check_region_prefix("513431999201"),
            Err(RegionCodeError::UnknownTownship)
        );
    }

    #[test]
    fn impossible_and_future_birth_dates_are_refused() {
        let feb30 = with_check("51342219900230001");
        assert_eq!(
            ResidentId::parse(&feb30, today()),
            Err(ResidentIdError::BirthDate)
        );
        let future = with_check("51342220300101001");
        assert_eq!(
            ResidentId::parse(&future, today()),
            Err(ResidentIdError::BirthDate)
        );
        let leap = with_check("51342220000229001");
        assert!(ResidentId::parse(&leap, today()).is_ok());
    }

    #[test]
    fn retired_prefix_and_permits_are_accepted() {
        // 513425 (会理县) became 513402 (会理市); old numbers stay valid.
        assert!(ResidentId::parse(&with_check("51342519850315002"), today()).is_ok());
        assert!(ResidentId::parse(&with_check("81000019900101001"), today()).is_ok());
        assert!(ResidentId::parse(&with_check("93000019900101002"), today()).is_ok());
    }

    #[test]
    fn region_codes() {
        assert_eq!(liangshan_township_count(), 304);
        // 513401001 北城街道 exists.
        assert_eq!(check_region_code("513401001001"), Ok(()));
        assert_eq!(
            check_region_code("513401999001"),
            Err(RegionCodeError::UnknownTownship)
        );
        assert_eq!(
            check_region_code("51340100100"),
            Err(RegionCodeError::Syntax)
        );
        assert_eq!(
            check_region_code("51340100100a"),
            Err(RegionCodeError::Syntax)
        );
        assert_eq!(
            check_region_code("510000000000"),
            Err(RegionCodeError::Syntax)
        );
        // Outside Liangshan only the syntax is checked.
        assert_eq!(check_region_code("510104001001"), Ok(()));
    }

    #[test]
    fn phones() {
        for ok in [
            "13812345678",
            "19912345678",
            "0834-1234567",
            "08341234567",
            "028-12345678",
            "010-1234567",
        ] {
            assert!(is_valid_phone(ok), "{ok}");
        }
        for bad in [
            "12812345678",
            "1381234567",
            "138123456789",
            "834-1234567",
            "0834-123456",
            "phone",
            "",
        ] {
            assert!(!is_valid_phone(bad), "{bad}");
        }
        assert_eq!(normalize_phone(" 138 1234 5678 "), "13812345678");
        assert_eq!(normalize_phone("０８３４－１２３４５６７"), "0834-1234567");
    }

    #[test]
    fn disability_certificates() {
        let id = "11010519491231002X";
        assert_eq!(
            check_disability_certificate("11010519491231002X13", Some(id), today()),
            Ok((1, 3))
        );
        assert_eq!(
            check_disability_certificate(
                "11010519491231002X13",
                Some("440524188001010014"),
                today()
            ),
            Err(DisabilityCertificateError::OtherPerson)
        );
        assert_eq!(
            check_disability_certificate("11010519491231002X83", None, today()),
            Err(DisabilityCertificateError::Category)
        );
        assert_eq!(
            check_disability_certificate("11010519491231002X15", None, today()),
            Err(DisabilityCertificateError::Level)
        );
        assert_eq!(
            check_disability_certificate("11010519491231002113", None, today()),
            Err(DisabilityCertificateError::ResidentId)
        );
        assert_eq!(
            check_disability_certificate("11010519491231002X1", None, today()),
            Err(DisabilityCertificateError::Length)
        );
    }

    #[test]
    fn names() {
        // Decomposed é (e + U+0301) becomes the composed form.
        assert_eq!(normalize_person_name("Jose\u{0301}"), "José");
        assert_eq!(normalize_person_name(" 阿呷•木呷 "), "阿呷·木呷");
        for ok in [
            "张三",
            "阿呷·木呷",
            "𠮷野",
            "ꀉꂿ",
            "𪚥",
            "José",
            "吉克·曲布",
        ] {
            assert_eq!(
                check_person_name(&normalize_person_name(ok)),
                Ok(()),
                "{ok}"
            );
        }
        assert_eq!(check_person_name(""), Err(PersonNameError::Empty));
        assert_eq!(check_person_name("张3"), Err(PersonNameError::Characters));
        assert_eq!(check_person_name("·张"), Err(PersonNameError::Characters));
        assert_eq!(
            check_person_name(&"张".repeat(65)),
            Err(PersonNameError::TooLong)
        );
    }
}
