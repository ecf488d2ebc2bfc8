//! Failure domains, and spreading an order evenly across them.

use std::collections::BTreeMap;

use endstate_core::FleetObject;

/// The failure domain of an object: a spec field (`idc`) or, failing that, a label.
pub fn domain(object: &FleetObject, spread_by: &str) -> String {
    if let FleetObject::Machine(m) = object {
        match spread_by {
            "idc" => return m.spec.idc.clone(),
            "cluster" => return m.spec.cluster.clone(),
            _ => {}
        }
    }
    object
        .meta()
        .labels
        .as_ref()
        .and_then(|l| l.get(spread_by))
        .cloned()
        .unwrap_or_default()
}

/// Orders objects so that every prefix is spread evenly across failure domains: round robin
/// over the domains (in name order), each domain in name order.
pub(super) fn spread<'a>(
    objects: Vec<&'a FleetObject>,
    spread_by: Option<&str>,
) -> Vec<&'a FleetObject> {
    let Some(spread_by) = spread_by else {
        return objects;
    };
    let mut domains: BTreeMap<String, Vec<&FleetObject>> = BTreeMap::new();
    for object in objects {
        domains
            .entry(domain(object, spread_by))
            .or_default()
            .push(object);
    }
    let total = domains.values().map(Vec::len).sum();
    let mut queues: Vec<std::vec::IntoIter<&FleetObject>> =
        domains.into_values().map(Vec::into_iter).collect();
    let mut out = Vec::with_capacity(total);
    while out.len() < total {
        for q in &mut queues {
            if let Some(o) = q.next() {
                out.push(o);
            }
        }
    }
    out
}
