//! The `Fleet`'s status: where the rollout state survives a restart.
//!
//! Saves are JSON merge patches on the `status` subresource, computed against the status the
//! server holds, so fields the new status no longer has are removed (`null`) rather than left
//! behind. The patch carries the `resourceVersion` it was computed against; if the `Fleet`
//! changed meanwhile the server answers 409 and the save is recomputed on a fresh read.

use serde_json::{Map, Value};

/// The JSON merge patch (RFC 7386) that turns `old` into `new`; `None` when they are equal.
///
/// Merge patches cannot express a `null` member of an object (it means "remove"), so such
/// members of `new` are absent after the patch.
pub(crate) fn merge_patch(old: &Value, new: &Value) -> Option<Value> {
    if old == new {
        return None;
    }
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            let mut patch = Map::new();
            for (key, value) in new {
                match old.get(key) {
                    Some(before) => {
                        if let Some(change) = merge_patch(before, value) {
                            patch.insert(key.clone(), change);
                        }
                    }
                    None => {
                        patch.insert(key.clone(), value.clone());
                    }
                }
            }
            for key in old.keys().filter(|key| !new.contains_key(*key)) {
                patch.insert(key.clone(), Value::Null);
            }
            Some(Value::Object(patch))
        }
        (_, new) => Some(new.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Applies a merge patch as RFC 7386 defines it.
    fn apply(target: &Value, patch: &Value) -> Value {
        let Value::Object(patch) = patch else {
            return patch.clone();
        };
        let mut out = match target {
            Value::Object(map) => map.clone(),
            _ => Map::new(),
        };
        for (key, value) in patch {
            if value.is_null() {
                out.remove(key);
            } else {
                let merged = apply(out.get(key).unwrap_or(&Value::Null), value);
                out.insert(key.clone(), merged);
            }
        }
        Value::Object(out)
    }

    #[test]
    fn the_patch_turns_old_into_new_and_removes_what_is_gone() {
        let old = json!({"rollout": {"commit": "a", "wave": 2, "state": {"x": 1}}, "breaker": {"state": "closed"}, "history": [1, 2]});
        let new =
            json!({"rollout": {"commit": "a", "wave": 3}, "history": [2], "lastGoodCommit": "a"});
        let patch = merge_patch(&old, &new).unwrap();
        assert_eq!(
            patch,
            json!({"rollout": {"wave": 3, "state": null}, "breaker": null, "history": [2], "lastGoodCommit": "a"})
        );
        assert_eq!(apply(&old, &patch), new);
        assert_eq!(merge_patch(&new, &new), None);
    }
}
