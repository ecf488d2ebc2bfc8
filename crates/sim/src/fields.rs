//! Field ownership for the simulated server-side apply: which fields an apply changed, and
//! how one field manager's labels and annotations merge with everyone else's.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// The applier's labels (or annotations) over the live ones: keys it set before and no longer
/// sets are removed, everyone else's are kept.
pub(crate) fn merge_owned(
    live: Option<BTreeMap<String, String>>,
    owned_before: &BTreeSet<String>,
    desired: BTreeMap<String, String>,
) -> Option<BTreeMap<String, String>> {
    let mut merged = live.unwrap_or_default();
    merged.retain(|k, _| !owned_before.contains(k) || desired.contains_key(k));
    merged.extend(desired);
    (!merged.is_empty()).then_some(merged)
}

/// The value at `path` (keys through maps), if there is one.
pub(crate) fn lookup<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter()
        .try_fold(value, |v, k| v.get(k))
        .filter(|v| !v.is_null())
}

/// Sets the value at `path`, making the maps on the way.
pub(crate) fn insert(value: &mut Value, path: &[String], leaf: Value) {
    let Some((last, through)) = path.split_last() else {
        return;
    };
    let mut at = value;
    for k in through {
        if !at.is_object() {
            *at = Value::Object(serde_json::Map::new());
        }
        at = at
            .as_object_mut()
            .expect("a map")
            .entry(k.clone())
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
    }
    if let Some(map) = at.as_object_mut() {
        map.insert(last.clone(), leaf);
    }
}

/// The fields (paths through maps; anything else is one field) that differ from `old` to
/// `new`: the new value, or `None` where `new` has none.
pub(crate) fn changed_leaves(
    old: &Value,
    new: &Value,
    at: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, Option<Value>)>,
) {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let keys: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
            for k in keys {
                at.push(k.clone());
                changed_leaves(
                    o.get(k).unwrap_or(&Value::Null),
                    n.get(k).unwrap_or(&Value::Null),
                    at,
                    out,
                );
                at.pop();
            }
        }
        (o, n) if o != n => out.push((at.clone(), (!n.is_null()).then(|| n.clone()))),
        _ => {}
    }
}
