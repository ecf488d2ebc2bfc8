//! Which Fleet an object belongs to, and what another Fleet may do with it.
//!
//! A Fleet stamps its name (and, on objects that live outside its namespace, its namespace) on
//! every object it writes. Another Fleet never writes or deletes such an object: it holds the
//! change and says whose it is. Two exceptions:
//!
//! - package versions are immutable, so one already present with the same spec satisfies any
//!   Fleet, whoever wrote it (one with another spec is held like any other object);
//! - an object annotated [`TRANSFER_ANNOTATION`] with a Fleet's `namespace/name` is handed
//!   to that Fleet: its next write relabels it, and the first Fleet holds it from then on.
//!
//! Each Fleet also writes under its own field manager, so that the API server itself reports
//! a field that two Fleets set.

use std::fmt;

use endstate_api::labels::{OWNER_LABEL, OWNER_NAMESPACE_LABEL, TRANSFER_ANNOTATION};

use crate::hash::Fnv1a;
use crate::object::FleetObject;

/// The longest field manager the API server accepts.
const MAX_FIELD_MANAGER: usize = 128;

/// A Fleet: its namespace and name.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FleetId {
    /// The Fleet's namespace.
    pub namespace: String,
    /// The Fleet's name.
    pub name: String,
}

impl FleetId {
    /// The Fleet `name` in `namespace`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        FleetId {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The Fleet an object's labels name, if any. Without the namespace label, the object
    /// belongs to the Fleet of that name in the object's own namespace.
    pub fn owner_of(object: &FleetObject) -> Option<FleetId> {
        let meta = object.meta();
        let labels = meta.labels.as_ref()?;
        let name = labels.get(OWNER_LABEL)?;
        let namespace = labels
            .get(OWNER_NAMESPACE_LABEL)
            .or(meta.namespace.as_ref())
            .cloned()
            .unwrap_or_default();
        Some(FleetId::new(namespace, name.clone()))
    }

    /// The labels this Fleet stamps on an object that lives in `namespace`.
    pub fn labels(&self, namespace: &str) -> Vec<(String, String)> {
        let mut labels = vec![(OWNER_LABEL.to_owned(), self.name.clone())];
        if namespace != self.namespace {
            labels.push((OWNER_NAMESPACE_LABEL.to_owned(), self.namespace.clone()));
        }
        labels
    }

    /// The field manager of this Fleet's writes: `endstate/<namespace>/<name>`, or, past the
    /// API server's 128 characters, its beginning and a hash of the whole.
    pub fn field_manager(&self) -> String {
        let whole = format!("endstate/{}/{}", self.namespace, self.name);
        if whole.len() <= MAX_FIELD_MANAGER {
            return whole;
        }
        let hash = Fnv1a::new().write(whole.bytes()).finish();
        let mut cut = MAX_FIELD_MANAGER - 17;
        while !whole.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}-{hash:016x}", &whole[..cut])
    }
}

impl fmt::Display for FleetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Whose a live object is, as a Fleet about to write it sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This Fleet's, or no Fleet's: it may be written.
    Free,
    /// Another Fleet's, annotated to be handed to this one: it may be written, and the
    /// write makes it this Fleet's.
    HandedOver(FleetId),
    /// Another Fleet's: it is not written.
    Taken(FleetId),
}

impl Claim {
    /// Whose `live` is, for `fleet`.
    pub fn of(live: &FleetObject, fleet: &FleetId) -> Claim {
        match FleetId::owner_of(live) {
            None => Claim::Free,
            Some(owner) if owner == *fleet => Claim::Free,
            Some(owner) if handed_to(live, fleet) => Claim::HandedOver(owner),
            Some(owner) => Claim::Taken(owner),
        }
    }
}

/// Whether the object carries the Fleet's ownership labels: only such objects are pruned.
pub fn owned_by(object: &FleetObject, fleet: &FleetId) -> bool {
    FleetId::owner_of(object).as_ref() == Some(fleet)
}

/// Whether the object is annotated to be handed over to `fleet`.
pub fn handed_to(object: &FleetObject, fleet: &FleetId) -> bool {
    object
        .meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(TRANSFER_ANNOTATION))
        .is_some_and(|to| {
            to.split_once('/')
                .is_some_and(|(ns, name)| ns == fleet.namespace && name == fleet.name)
        })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use endstate_api::Machine;

    use super::*;

    fn machine(
        namespace: &str,
        labels: &[(&str, &str)],
        annotations: &[(&str, &str)],
    ) -> FleetObject {
        let mut m = Machine::test("m1").namespace(namespace).build();
        let map = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        m.metadata.labels = map(labels);
        m.metadata.annotations = map(annotations);
        FleetObject::Machine(Arc::new(m))
    }

    #[test]
    fn an_object_names_its_fleet_with_its_namespace_or_a_label() {
        let local = machine("prod", &[(OWNER_LABEL, "f")], &[]);
        assert_eq!(FleetId::owner_of(&local), Some(FleetId::new("prod", "f")));
        let remote = machine(
            "machines",
            &[(OWNER_LABEL, "f"), (OWNER_NAMESPACE_LABEL, "prod")],
            &[],
        );
        assert_eq!(FleetId::owner_of(&remote), Some(FleetId::new("prod", "f")));
        assert_eq!(FleetId::owner_of(&machine("prod", &[], &[])), None);
        // What the Fleet stamps reads back as the Fleet, wherever the object lives.
        let f = FleetId::new("prod", "f");
        assert_eq!(f.labels("prod").len(), 1);
        let stamped = f.labels("machines");
        let labels: Vec<(&str, &str)> = stamped
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            FleetId::owner_of(&machine("machines", &labels, &[])),
            Some(f)
        );
    }

    #[test]
    fn another_fleets_object_is_taken_until_it_is_handed_over() {
        let f = FleetId::new("prod", "f");
        let g = FleetId::new("prod", "g");
        let theirs = machine("prod", &[(OWNER_LABEL, "f")], &[]);
        assert_eq!(Claim::of(&theirs, &f), Claim::Free);
        assert_eq!(Claim::of(&theirs, &g), Claim::Taken(f.clone()));
        let handed = machine(
            "prod",
            &[(OWNER_LABEL, "f")],
            &[(TRANSFER_ANNOTATION, "prod/g")],
        );
        assert_eq!(Claim::of(&handed, &g), Claim::HandedOver(f.clone()));
        assert_eq!(
            Claim::of(&handed, &FleetId::new("other", "g")),
            Claim::Taken(f.clone())
        );
        assert_eq!(Claim::of(&machine("prod", &[], &[]), &g), Claim::Free);
        assert!(owned_by(&theirs, &f) && !owned_by(&theirs, &g) && !owned_by(&handed, &g));
    }

    #[test]
    fn a_field_manager_fits_the_api_servers_limit_and_stays_distinct() {
        assert_eq!(FleetId::new("prod", "f").field_manager(), "endstate/prod/f");
        let long = |c: &str| FleetId::new("ns", c.repeat(200));
        let (a, b) = (long("a").field_manager(), long("b").field_manager());
        assert_eq!(a.len(), 128);
        assert_ne!(a, b);
        assert_eq!(a, long("a").field_manager());
    }
}
