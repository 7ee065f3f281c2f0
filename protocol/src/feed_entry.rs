//! `FeedEntry`'s decoding. On the wire an entry is one flat object: `seq`, `village_code`,
//! the item's `kind` and the item's fields. Our servers write `kind` right after the first two,
//! so the item's fields are read straight into their variant once `kind` is known; an object in
//! any other order takes the general (slower) way through a JSON value.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, de::value::MapAccessDeserializer};
use serde_json::{Map, Value as Json};

use crate::messages::{ConflictInfo, Entity, FeedEntry, FeedItem, RecordState, VisitRecord};

/// A variant's fields, and the entry's own two in case they come after `kind` (no
/// `#[serde(flatten)]`: it would buffer again).
macro_rules! variant {
    ($name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        #[derive(Deserialize)]
        struct $name {
            #[serde(default)]
            seq: Option<u64>,
            #[serde(default)]
            village_code: Option<String>,
            $($field: $ty),*
        }
    };
}

variant!(RecordItem {
    record: RecordState
});
variant!(FieldItem {
    entity: Entity,
    id: String,
    field: String,
    value: Json,
    version: u64
});
variant!(ConflictItem {
    conflict: ConflictInfo
});
variant!(VisitItem { visit: Box<VisitRecord> });
variant!(VisitStatusItem { id: String, status: String, reason: Option<String>, at: String });
variant!(MergedItem {
    merged: String,
    survivor: String
});

impl<'de> Deserialize<'de> for FeedEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(EntryVisitor)
    }
}

struct EntryVisitor;

/// The variant named `kind`, from the rest of the map.
fn item<'de, A: MapAccess<'de>>(
    kind: &str,
    rest: A,
) -> Result<(FeedItem, Option<u64>, Option<String>), A::Error> {
    fn read<'de, T: Deserialize<'de>, A: MapAccess<'de>>(rest: A) -> Result<T, A::Error> {
        T::deserialize(MapAccessDeserializer::new(rest))
    }
    Ok(match kind {
        "record" => {
            let i: RecordItem = read(rest)?;
            (FeedItem::Record { record: i.record }, i.seq, i.village_code)
        }
        "field" => {
            let i: FieldItem = read(rest)?;
            let item = FeedItem::Field {
                entity: i.entity,
                id: i.id,
                field: i.field,
                value: i.value,
                version: i.version,
            };
            (item, i.seq, i.village_code)
        }
        "conflict" => {
            let i: ConflictItem = read(rest)?;
            let item = FeedItem::Conflict {
                conflict: i.conflict,
            };
            (item, i.seq, i.village_code)
        }
        "visit" => {
            let i: VisitItem = read(rest)?;
            (FeedItem::Visit { visit: i.visit }, i.seq, i.village_code)
        }
        "visit_status" => {
            let i: VisitStatusItem = read(rest)?;
            let item = FeedItem::VisitStatus {
                id: i.id,
                status: i.status,
                reason: i.reason,
                at: i.at,
            };
            (item, i.seq, i.village_code)
        }
        "merged" => {
            let i: MergedItem = read(rest)?;
            let item = FeedItem::Merged {
                merged: i.merged,
                survivor: i.survivor,
            };
            (item, i.seq, i.village_code)
        }
        other => {
            return Err(de::Error::unknown_variant(
                other,
                &[
                    "record",
                    "field",
                    "conflict",
                    "visit",
                    "visit_status",
                    "merged",
                ],
            ));
        }
    })
}

impl<'de> Visitor<'de> for EntryVisitor {
    type Value = FeedEntry;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a feed entry")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FeedEntry, A::Error> {
        let (mut seq, mut village_code) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "seq" => seq = Some(map.next_value()?),
                "village_code" => village_code = Some(map.next_value()?),
                "kind" => {
                    let kind: String = map.next_value()?;
                    let (item, s, v) = item(&kind, map)?;
                    return finish(seq.or(s), village_code.or(v), item);
                }
                _ => return general(key, seq, village_code, map),
            }
        }
        Err(de::Error::missing_field("kind"))
    }
}

fn finish<E: de::Error>(
    seq: Option<u64>,
    village_code: Option<String>,
    item: FeedItem,
) -> Result<FeedEntry, E> {
    Ok(FeedEntry {
        seq: seq.ok_or_else(|| E::missing_field("seq"))?,
        village_code: village_code.ok_or_else(|| E::missing_field("village_code"))?,
        item,
    })
}

/// A `FeedItem` as serde writes it (`kind` first), decoded straight into its variant: the
/// server reads every entry it serves from storage, and serde's way for an internally tagged
/// enum buffers each whole item first (a fifth of a streamed pull's time on the server).
pub fn decode_item(json: &str) -> serde_json::Result<FeedItem> {
    let mut d = serde_json::Deserializer::from_str(json);
    let item = d.deserialize_map(ItemVisitor)?;
    d.end()?;
    Ok(item)
}

struct ItemVisitor;

impl<'de> Visitor<'de> for ItemVisitor {
    type Value = FeedItem;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a feed item")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FeedItem, A::Error> {
        let Some(first) = map.next_key::<String>()? else {
            return Err(de::Error::missing_field("kind"));
        };
        if first == "kind" {
            let kind: String = map.next_value()?;
            return item(&kind, map).map(|(item, _, _)| item);
        }
        // Written some other way: the general path.
        let mut all = Map::new();
        all.insert(first, map.next_value()?);
        while let Some((k, v)) = map.next_entry::<String, Json>()? {
            all.insert(k, v);
        }
        FeedItem::deserialize(Json::Object(all)).map_err(de::Error::custom)
    }
}

/// An item field before `kind`: the whole object as a value, then the item from it.
fn general<'de, A: MapAccess<'de>>(
    first: String,
    mut seq: Option<u64>,
    mut village_code: Option<String>,
    mut map: A,
) -> Result<FeedEntry, A::Error> {
    let mut rest = Map::new();
    rest.insert(first, map.next_value()?);
    while let Some((k, v)) = map.next_entry::<String, Json>()? {
        rest.insert(k, v);
    }
    let take = |rest: &mut Map<String, Json>, k: &str| rest.remove(k);
    if let Some(s) = take(&mut rest, "seq") {
        seq = Some(serde_json::from_value(s).map_err(de::Error::custom)?);
    }
    if let Some(v) = take(&mut rest, "village_code") {
        village_code = Some(serde_json::from_value(v).map_err(de::Error::custom)?);
    }
    let item = FeedItem::deserialize(Json::Object(rest)).map_err(de::Error::custom)?;
    finish(seq, village_code, item)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn entries() -> Vec<FeedEntry> {
        let record = RecordState {
            entity: Entity::Household,
            id: "h-1".into(),
            household_id: None,
            village_code: "513431104201".into(),
            fields: BTreeMap::new(),
        };
        [
            FeedItem::Record { record },
            FeedItem::Field {
                entity: Entity::Member,
                id: "m-1".into(),
                field: "phone".into(),
                value: json!("13900000000"),
                version: 7,
            },
            FeedItem::VisitStatus {
                id: "v-1".into(),
                status: "void".into(),
                reason: Some("wrong household".into()),
                at: "2026-12-01T08:00:00Z".into(),
            },
            FeedItem::Merged {
                merged: "h-2".into(),
                survivor: "h-1".into(),
            },
        ]
        .into_iter()
        .enumerate()
        .map(|(i, item)| FeedEntry {
            seq: i as u64 + 1,
            village_code: "513431104201".into(),
            item,
        })
        .collect()
    }

    #[test]
    fn entries_read_back_as_written() {
        for e in entries() {
            let text = serde_json::to_string(&e).unwrap();
            assert_eq!(
                serde_json::from_str::<FeedEntry>(&text).unwrap(),
                e,
                "{text}"
            );
        }
    }

    /// JSON objects are unordered: any order of the keys reads the same entry.
    #[test]
    fn any_key_order_reads_the_same() {
        for e in entries() {
            let Json::Object(map) = serde_json::to_value(&e).unwrap() else {
                panic!("an object");
            };
            let mut keys: Vec<String> = map.keys().cloned().collect();
            for turn in 0..keys.len() {
                keys.rotate_left(1);
                let body: Vec<String> = keys
                    .iter()
                    .map(|k| format!("{}:{}", json!(k), map[k]))
                    .collect();
                let text = format!("{{{}}}", body.join(","));
                let back: FeedEntry = serde_json::from_str(&text).unwrap();
                assert_eq!(back, e, "turn {turn}: {text}");
            }
        }
    }

    #[test]
    fn bad_entries_are_errors() {
        for text in [
            r#"{"seq":1,"village_code":"x","kind":"nope"}"#,
            r#"{"seq":1,"village_code":"x"}"#,
            r#"{"village_code":"x","kind":"merged","merged":"a","survivor":"b"}"#,
            r#"{"seq":1,"village_code":"x","kind":"merged","merged":"a"}"#,
            r#"[1,2]"#,
        ] {
            assert!(serde_json::from_str::<FeedEntry>(text).is_err(), "{text}");
        }
    }

    #[test]
    fn a_stored_item_decodes_as_serde_does_in_any_field_order() {
        for entry in entries() {
            let text = serde_json::to_string(&entry.item).unwrap();
            assert_eq!(decode_item(&text).unwrap(), entry.item);
            // The same object with `kind` last takes the general way to the same item.
            let Json::Object(mut m) = serde_json::to_value(&entry.item).unwrap() else {
                panic!("an item is an object");
            };
            let kind = m.remove("kind").unwrap();
            let rest = serde_json::to_string(&m).unwrap();
            let reordered = format!("{},\"kind\":{kind}}}", rest.strip_suffix('}').unwrap());
            assert!(!reordered.starts_with("{\"kind\""));
            assert_eq!(decode_item(&reordered).unwrap(), entry.item);
        }
        assert!(decode_item("{\"kind\":\"nonsense\"}").is_err());
        assert!(decode_item("{}").is_err());
        assert!(
            decode_item("{\"kind\":\"merged\",\"merged\":\"a\",\"survivor\":\"b\"} x").is_err()
        );
    }
}
