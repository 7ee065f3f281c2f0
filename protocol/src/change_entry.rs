//! `Change`'s decoding. On the wire a change is one flat object: `seq`, `hlc`, `device_time`,
//! the op's tag `op` and the op's fields. Our devices write `op` right after the first three
//! (and store a `ChangeOp` with `op` first), so the op's fields are read straight into their
//! variant once `op` is known; an object in any other order takes the general (slower) way
//! through a JSON value. serde's own way (`#[serde(flatten)]` over an internally tagged enum)
//! buffers every change twice: a tenth of the server's time in a push.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor, value::MapAccessDeserializer};
use serde_json::{Map, Value as Json};

use crate::messages::{Change, ChangeOp, Entity, VisitRecord};

/// The change's own fields, wherever they come in the object.
#[derive(Default)]
struct Head {
    seq: Option<u64>,
    hlc: Option<String>,
    device_time: Option<String>,
}

impl Head {
    fn or(self, later: Head) -> Head {
        Head {
            seq: self.seq.or(later.seq),
            hlc: self.hlc.or(later.hlc),
            device_time: self.device_time.or(later.device_time),
        }
    }

    fn change<E: de::Error>(self, op: ChangeOp) -> Result<Change, E> {
        Ok(Change {
            seq: self.seq.ok_or_else(|| E::missing_field("seq"))?,
            hlc: self.hlc.ok_or_else(|| E::missing_field("hlc"))?,
            device_time: self
                .device_time
                .ok_or_else(|| E::missing_field("device_time"))?,
            op,
        })
    }
}

/// A variant's fields, and the change's own three in case they come after `op` (no
/// `#[serde(flatten)]`: it would buffer again).
macro_rules! variant {
    ($name:ident { $($(#[$m:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        #[derive(Deserialize)]
        struct $name {
            #[serde(default)]
            seq: Option<u64>,
            #[serde(default)]
            hlc: Option<String>,
            #[serde(default)]
            device_time: Option<String>,
            $($(#[$m])* $field: $ty),*
        }

        impl $name {
            fn head(&mut self) -> Head {
                Head {
                    seq: self.seq.take(),
                    hlc: self.hlc.take(),
                    device_time: self.device_time.take(),
                }
            }
        }
    };
}

variant!(CreateHousehold {
    id: String,
    village_code: String,
    fields: Map<String, Json>,
});
variant!(CreateMember {
    id: String,
    household_id: String,
    fields: Map<String, Json>,
});
variant!(SetField {
    entity: Entity,
    id: String,
    field: String,
    value: Json,
    base: u64,
    #[serde(default)]
    resolves: Option<String>,
    #[serde(default)]
    after: Option<u64>,
});
variant!(SubmitVisit {
    visit: Box<VisitRecord>
});
variant!(SetVisitStatus {
    id: String,
    status: String,
    reason: Option<String>,
    at: String,
});

const OPS: &[&str] = &[
    "create_household",
    "create_member",
    "set_field",
    "submit_visit",
    "set_visit_status",
];

/// The op named `op`, from the rest of the map, and any of the change's own fields in it.
fn op<'de, A: MapAccess<'de>>(op: &str, rest: A) -> Result<(ChangeOp, Head), A::Error> {
    fn read<'de, T: Deserialize<'de>, A: MapAccess<'de>>(rest: A) -> Result<T, A::Error> {
        T::deserialize(MapAccessDeserializer::new(rest))
    }
    Ok(match op {
        "create_household" => {
            let mut v: CreateHousehold = read(rest)?;
            let head = v.head();
            let op = ChangeOp::CreateHousehold {
                id: v.id,
                village_code: v.village_code,
                fields: v.fields,
            };
            (op, head)
        }
        "create_member" => {
            let mut v: CreateMember = read(rest)?;
            let head = v.head();
            let op = ChangeOp::CreateMember {
                id: v.id,
                household_id: v.household_id,
                fields: v.fields,
            };
            (op, head)
        }
        "set_field" => {
            let mut v: SetField = read(rest)?;
            let head = v.head();
            let op = ChangeOp::SetField {
                entity: v.entity,
                id: v.id,
                field: v.field,
                value: v.value,
                base: v.base,
                resolves: v.resolves,
                after: v.after,
            };
            (op, head)
        }
        "submit_visit" => {
            let mut v: SubmitVisit = read(rest)?;
            let head = v.head();
            (ChangeOp::SubmitVisit { visit: v.visit }, head)
        }
        "set_visit_status" => {
            let mut v: SetVisitStatus = read(rest)?;
            let head = v.head();
            let op = ChangeOp::SetVisitStatus {
                id: v.id,
                status: v.status,
                reason: v.reason,
                at: v.at,
            };
            (op, head)
        }
        other => return Err(de::Error::unknown_variant(other, OPS)),
    })
}

/// The rest of an object whose keys came in another order: all of it as a value, the
/// change's own fields taken out, the op from what remains (serde's general way).
fn general<'de, A: MapAccess<'de>>(
    mut all: Map<String, Json>,
    mut map: A,
) -> Result<(ChangeOp, Head), A::Error> {
    while let Some((k, v)) = map.next_entry::<String, Json>()? {
        all.insert(k, v);
    }
    fn take<T: de::DeserializeOwned, E: de::Error>(
        all: &mut Map<String, Json>,
        key: &str,
    ) -> Result<Option<T>, E> {
        let value = all.remove(key).map(serde_json::from_value).transpose();
        value.map_err(E::custom)
    }
    let head = Head {
        seq: take(&mut all, "seq")?,
        hlc: take(&mut all, "hlc")?,
        device_time: take(&mut all, "device_time")?,
    };
    let op = ChangeOp::deserialize(Json::Object(all)).map_err(de::Error::custom)?;
    Ok((op, head))
}

impl<'de> Deserialize<'de> for Change {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ChangeVisitor)
    }
}

struct ChangeVisitor;

impl<'de> Visitor<'de> for ChangeVisitor {
    type Value = Change;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a change")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Change, A::Error> {
        let mut head = Head::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "seq" => head.seq = Some(map.next_value()?),
                "hlc" => head.hlc = Some(map.next_value()?),
                "device_time" => head.device_time = Some(map.next_value()?),
                "op" => {
                    let name: String = map.next_value()?;
                    let (op, later) = op(&name, map)?;
                    return head.or(later).change(op);
                }
                _ => {
                    let mut all = Map::new();
                    all.insert(key, map.next_value()?);
                    let (op, later) = general(all, map)?;
                    return head.or(later).change(op);
                }
            }
        }
        Err(de::Error::missing_field("op"))
    }
}

/// A `ChangeOp` as serde writes it (`op` first), decoded straight into its variant: devices
/// keep each change of their outbox this way and read it back to send and to acknowledge.
pub fn decode_op(json: &str) -> serde_json::Result<ChangeOp> {
    let mut d = serde_json::Deserializer::from_str(json);
    let op = d.deserialize_map(OpVisitor)?;
    d.end()?;
    Ok(op)
}

struct OpVisitor;

impl<'de> Visitor<'de> for OpVisitor {
    type Value = ChangeOp;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a change")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ChangeOp, A::Error> {
        let Some(first) = map.next_key::<String>()? else {
            return Err(de::Error::missing_field("op"));
        };
        if first == "op" {
            let name: String = map.next_value()?;
            return op(&name, map).map(|(op, _)| op);
        }
        let mut all = Map::new();
        all.insert(first, map.next_value()?);
        general(all, map).map(|(op, _)| op)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn changes() -> Vec<Change> {
        let fields: Map<String, Json> = [("head_name".to_owned(), json!("吉克阿呷"))]
            .into_iter()
            .collect();
        let visit: VisitRecord = serde_json::from_value(json!({
            "id": "0190b6b2-0000-7000-8000-000000000001",
            "form_id": "routine_visit", "form_version": 3, "visit_type": "routine",
            "household_id": "h-1", "village_code": "513431104201",
            "author": "u-1", "status": "completed", "revision_of": null, "void_reason": null,
            "created_at": "2026-12-01T08:00:00Z", "completed_at": "2026-12-01T09:00:00Z",
            "signed_at": null, "answers": {"living_condition": "difficult"}
        }))
        .unwrap();
        [
            ChangeOp::CreateHousehold {
                id: "h-1".into(),
                village_code: "513431104201".into(),
                fields: fields.clone(),
            },
            ChangeOp::CreateMember {
                id: "m-1".into(),
                household_id: "h-1".into(),
                fields,
            },
            ChangeOp::SetField {
                entity: Entity::Member,
                id: "m-1".into(),
                field: "phone".into(),
                value: json!("13900000000"),
                base: 4,
                resolves: Some("c-1".into()),
                after: None,
            },
            ChangeOp::SetField {
                entity: Entity::Household,
                id: "h-1".into(),
                field: "address".into(),
                value: Json::Null,
                base: 0,
                resolves: None,
                after: Some(9),
            },
            ChangeOp::SubmitVisit {
                visit: Box::new(visit),
            },
            ChangeOp::SetVisitStatus {
                id: "v-1".into(),
                status: "void".into(),
                reason: None,
                at: "2026-12-02T08:00:00Z".into(),
            },
        ]
        .into_iter()
        .enumerate()
        .map(|(i, op)| Change {
            seq: i as u64 + 1,
            hlc: format!("0000017f-{i:04}"),
            device_time: "2026-12-02T08:00:00Z".into(),
            op,
        })
        .collect()
    }

    /// The objects of `value` with their keys in every rotation.
    fn rotations(value: &Json) -> Vec<String> {
        let Json::Object(map) = value else {
            panic!("an object");
        };
        let mut keys: Vec<&String> = map.keys().collect();
        (0..keys.len())
            .map(|_| {
                keys.rotate_left(1);
                let body: Vec<String> = keys
                    .iter()
                    .map(|k| format!("{}:{}", json!(k), map[*k]))
                    .collect();
                format!("{{{}}}", body.join(","))
            })
            .collect()
    }

    #[test]
    fn changes_read_back_as_written_in_any_key_order() {
        for c in changes() {
            let text = serde_json::to_string(&c).unwrap();
            assert_eq!(serde_json::from_str::<Change>(&text).unwrap(), c, "{text}");
            for text in rotations(&serde_json::to_value(&c).unwrap()) {
                assert_eq!(serde_json::from_str::<Change>(&text).unwrap(), c, "{text}");
            }
        }
    }

    #[test]
    fn stored_ops_decode_as_serde_does_in_any_key_order() {
        for c in changes() {
            let text = serde_json::to_string(&c.op).unwrap();
            assert!(text.starts_with("{\"op\":"), "{text}");
            assert_eq!(decode_op(&text).unwrap(), c.op);
            for text in rotations(&serde_json::to_value(&c.op).unwrap()) {
                assert_eq!(decode_op(&text).unwrap(), c.op, "{text}");
            }
        }
    }

    #[test]
    fn bad_changes_are_errors() {
        for text in [
            r#"{"seq":1,"hlc":"h","device_time":"t","op":"nope"}"#,
            r#"{"seq":1,"hlc":"h","device_time":"t"}"#,
            r#"{"hlc":"h","device_time":"t","op":"set_visit_status","id":"v","status":"void","reason":null,"at":"t"}"#,
            r#"{"seq":1,"hlc":"h","device_time":"t","op":"set_visit_status","id":"v"}"#,
            r#"{"seq":"1","hlc":"h","device_time":"t","op":"set_visit_status","id":"v","status":"void","reason":null,"at":"t"}"#,
            r#"[1,2]"#,
        ] {
            assert!(serde_json::from_str::<Change>(text).is_err(), "{text}");
        }
        assert!(decode_op(r#"{"op":"nonsense"}"#).is_err());
        assert!(decode_op("{}").is_err());
        assert!(
            decode_op(
                r#"{"op":"set_visit_status","id":"v","status":"void","reason":null,"at":"t"} x"#
            )
            .is_err()
        );
    }
}
