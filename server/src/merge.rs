//! The field-merge rule, as a pure decision: what happens to an edit of one field given the
//! field's server state. Storage implementations apply the decision; they never re-decide.
//!
//! An edit carries the version of the field its editor last saw (`base`). If nothing landed
//! since, it applies. If something landed since and the values agree, there is nothing to do.
//! If they differ, both values are kept and the field is in conflict until a person resolves
//! it, which is an edit whose base covers every competing value.

use serde_json::Value as Json;

/// The server's state of one field, as the rule needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldNow<'a> {
    /// `None`: the field was never set.
    pub value: Option<&'a Json>,
    pub version: u64,
    /// The device and device sequence number of the change that last set it.
    pub writer: Option<(&'a str, u64)>,
    /// An open conflict: the version a resolution must have seen, and its competing values.
    pub conflict: Option<(u64, &'a [Json])>,
}

/// One incoming edit.
#[derive(Debug, Clone, PartialEq)]
pub struct Edit<'a> {
    pub value: &'a Json,
    pub base: u64,
    pub device: &'a str,
    /// The device's own earlier, still unacknowledged change of this field, if any: the device
    /// had not seen its result, but it is not a competitor.
    pub after: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Set the value; the field's version becomes this change's sequence number.
    Apply,
    /// The field already holds this value: acknowledge, change nothing.
    Unchanged,
    /// Another value landed since the base: keep both, open a conflict.
    OpenConflict,
    /// The field is in conflict and this editor had not seen all of it: add the value.
    JoinConflict,
    /// The editor saw every competing value: this settles the conflict.
    Resolve,
    /// The base is from the future: the device is confused; refuse and keep it for review.
    RejectFutureBase,
}

pub fn decide(now: &FieldNow<'_>, edit: &Edit<'_>) -> Decision {
    if edit.base > now.version {
        return Decision::RejectFutureBase;
    }
    // The device's own unacknowledged write counts as seen.
    let own_previous =
        matches!((now.writer, edit.after), (Some((d, s)), Some(a)) if d == edit.device && s == a);
    let base = if own_previous { now.version } else { edit.base };
    if let Some((conflict_version, competing)) = now.conflict {
        if base >= conflict_version {
            return Decision::Resolve;
        }
        if competing.contains(edit.value) {
            return Decision::Unchanged;
        }
        return Decision::JoinConflict;
    }
    if now.value == Some(edit.value) {
        return Decision::Unchanged;
    }
    if base == now.version {
        Decision::Apply
    } else {
        Decision::OpenConflict
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn edit<'a>(value: &'a Json, base: u64) -> Edit<'a> {
        Edit {
            value,
            base,
            device: "d1",
            after: None,
        }
    }

    #[test]
    fn the_rules() {
        let (a, b, c) = (json!("a"), json!("b"), json!("c"));
        let never = FieldNow {
            value: None,
            version: 0,
            writer: None,
            conflict: None,
        };
        assert_eq!(decide(&never, &edit(&a, 0)), Decision::Apply);
        let at5 = FieldNow {
            value: Some(&a),
            version: 5,
            writer: Some(("d2", 1)),
            conflict: None,
        };
        assert_eq!(
            decide(&at5, &edit(&b, 5)),
            Decision::Apply,
            "base is current"
        );
        assert_eq!(
            decide(&at5, &edit(&b, 3)),
            Decision::OpenConflict,
            "something landed since"
        );
        assert_eq!(
            decide(&at5, &edit(&a, 3)),
            Decision::Unchanged,
            "same value: no conflict"
        );
        assert_eq!(decide(&at5, &edit(&b, 6)), Decision::RejectFutureBase);
        let competing = [a.clone(), b.clone()];
        let conflicted = FieldNow {
            value: Some(&b),
            version: 8,
            writer: Some(("d2", 2)),
            conflict: Some((8, &competing)),
        };
        assert_eq!(decide(&conflicted, &edit(&c, 5)), Decision::JoinConflict);
        assert_eq!(
            decide(&conflicted, &edit(&a, 5)),
            Decision::Unchanged,
            "already among the competitors"
        );
        assert_eq!(decide(&conflicted, &edit(&c, 8)), Decision::Resolve);
        assert_eq!(
            decide(&conflicted, &edit(&a, 8)),
            Decision::Resolve,
            "picking a competitor resolves too"
        );
    }

    #[test]
    fn a_devices_own_unacknowledged_write_is_not_a_competitor() {
        let (a, b) = (json!("a"), json!("b"));
        let mine = FieldNow {
            value: Some(&a),
            version: 9,
            writer: Some(("d1", 4)),
            conflict: None,
        };
        let second = Edit {
            value: &b,
            base: 5,
            device: "d1",
            after: Some(4),
        };
        assert_eq!(decide(&mine, &second), Decision::Apply);
        let other_device = Edit {
            value: &b,
            base: 5,
            device: "d3",
            after: Some(4),
        };
        assert_eq!(decide(&mine, &other_device), Decision::OpenConflict);
    }
}
