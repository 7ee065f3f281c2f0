//! The canonical JSON form: RFC 8785 (JCS). Every hash that covers a JSON value — an audit
//! entry, a field in a village checksum, the content a signature binds to — hashes these bytes,
//! so the hash does not depend on a serializer's map order (serde_json's `preserve_order`
//! feature, switched on by any crate in a build, would reorder keys), its float formatting or
//! the platform. Object keys are sorted by UTF-16 code units, numbers are written as
//! ECMAScript writes them, strings with the minimal escapes.
//!
//! For the values Zoufang hashed before this rule was written down (ASCII keys, integers and
//! strings), the bytes equal serde_json's compact output: existing audit chains still verify.

use serde::Serialize;

/// The canonical bytes of `value`. A value that cannot be canonicalised (a float that is NaN
/// or infinite, which serde_json's `Value` cannot hold anyway) gives the empty form, so two
/// such values still hash alike instead of panicking.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    serde_jcs::to_vec(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value as Json;

    #[test]
    fn rfc8785_examples() {
        // RFC 8785 section 3.2.2 (numbers as ECMAScript writes them, minimal escapes) and
        // 3.2.3 (keys sorted by UTF-16 code units: U+1F600 is D83D DE00, so it sorts before
        // U+E000 although its code point is larger; byte order would say the opposite).
        let v: Json = serde_json::from_str(
            r#"{"b":[1E21,1.0,-0.0,0.000001,1e-7],"a":"\u0007\n\"é","\ue000":3,"😀":1,"":2}"#,
        )
        .unwrap();
        let expected = "{\"\":2,\"a\":\"\\u0007\\n\\\"é\",\"b\":[1e+21,1,0,0.000001,1e-7],\"😀\":1,\"\u{e000}\":3}";
        assert_eq!(String::from_utf8(to_vec(&v)).unwrap(), expected);
    }

    fn json_leaf() -> impl Strategy<Value = Json> {
        prop_oneof![
            Just(Json::Null),
            any::<bool>().prop_map(Json::from),
            (-(1i64 << 53)..(1i64 << 53)).prop_map(Json::from),
            "[a-z\\x00-\\x1f\"\\\\é走访ꆈꌠ]{0,12}".prop_map(Json::from),
        ]
    }

    fn json_value() -> impl Strategy<Value = Json> {
        json_leaf().prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Json::from),
                prop::collection::btree_map("[a-z_]{1,8}", inner, 0..6)
                    .prop_map(|m| Json::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// What Zoufang hashed before the rule was written down (ASCII keys, integers, strings
        /// with any escapes) has exactly the bytes serde_json wrote, so old hashes still hold;
        /// and the canonical form parses back to the same value.
        #[test]
        fn equals_serde_json_on_the_values_hashed_so_far(v in json_value()) {
            let canonical = to_vec(&v);
            prop_assert_eq!(&canonical, &serde_json::to_vec(&v).unwrap());
            prop_assert_eq!(serde_json::from_slice::<Json>(&canonical).unwrap(), v);
        }
    }
}
