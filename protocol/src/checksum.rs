//! Per-village checksums of the server's field state. Order-independent (a wrapping sum of
//! per-field hashes), so both sides maintain them incrementally: subtract the old field's hash,
//! add the new one.

use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use crate::messages::Entity;

/// The hash of one field's server state.
pub fn field_hash(entity: Entity, id: &str, field: &str, version: u64, value: &Json) -> u64 {
    let mut h = Sha256::new();
    h.update(entity.as_str().as_bytes());
    h.update([0]);
    h.update(id.as_bytes());
    h.update([0]);
    h.update(field.as_bytes());
    h.update([0]);
    h.update(version.to_le_bytes());
    // Canonical JSON, so equal values hash equally on both sides whatever the serializer.
    h.update(crate::canonical::to_vec(value));
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(digest.get(..8).unwrap_or(&[0; 8]));
    u64::from_le_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The sum does not depend on the order fields are added, and removing a field undoes it.
        #[test]
        fn order_independent_and_reversible(fields in prop::collection::vec(("[a-z]{1,4}", 0u64..100, any::<i32>()), 0..20)) {
            let hashes: Vec<u64> = fields.iter().map(|(f, v, x)| field_hash(Entity::Household, "h", f, *v, &Json::from(*x))).collect();
            let forward = hashes.iter().fold(0u64, |a, h| a.wrapping_add(*h));
            let backward = hashes.iter().rev().fold(0u64, |a, h| a.wrapping_add(*h));
            prop_assert_eq!(forward, backward);
            let removed = hashes.iter().fold(forward, |a, h| a.wrapping_sub(*h));
            prop_assert_eq!(removed, 0);
        }
    }

    #[test]
    fn any_difference_changes_the_hash() {
        let base = field_hash(
            Entity::Household,
            "h1",
            "phone",
            3,
            &Json::from("13812345678"),
        );
        assert_ne!(
            base,
            field_hash(Entity::Member, "h1", "phone", 3, &Json::from("13812345678"))
        );
        assert_ne!(
            base,
            field_hash(
                Entity::Household,
                "h2",
                "phone",
                3,
                &Json::from("13812345678")
            )
        );
        assert_ne!(
            base,
            field_hash(
                Entity::Household,
                "h1",
                "phone",
                4,
                &Json::from("13812345678")
            )
        );
        assert_ne!(
            base,
            field_hash(
                Entity::Household,
                "h1",
                "phone",
                3,
                &Json::from("13812345679")
            )
        );
    }
}
