//! Typed fleet objects as rendered from a repository, and their identities.

use std::fmt;
use std::sync::Arc;

use endstate_api::labels::CLUSTER_LABEL;
use endstate_api::{
    Cluster, ClusterPackageVersion, Machine, MachinePackageVersion, ObjectMeta, RolloutPolicy,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::invalid::Invalid;

/// The kinds a fleet repository holds. They order by name, as rendered output is sorted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// A business cluster.
    Cluster,
    /// A control-plane release.
    ClusterPackageVersion,
    /// A worker node.
    Machine,
    /// A node component version.
    MachinePackageVersion,
    /// How changes roll out.
    RolloutPolicy,
}

impl Kind {
    /// Every kind, by name.
    pub const ALL: [Kind; 5] = [
        Kind::Cluster,
        Kind::ClusterPackageVersion,
        Kind::Machine,
        Kind::MachinePackageVersion,
        Kind::RolloutPolicy,
    ];

    /// The kind's name, as in `kind:`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::MachinePackageVersion => "MachinePackageVersion",
            Kind::ClusterPackageVersion => "ClusterPackageVersion",
            Kind::Cluster => "Cluster",
            Kind::Machine => "Machine",
            Kind::RolloutPolicy => "RolloutPolicy",
        }
    }

    /// The kind named `name`, if it is a fleet kind.
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Its index in [`Kind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl AsRef<str> for Kind {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// The identity of a fleet object: kind, namespace (empty when unset), name, and the business
/// cluster it is placed in (empty for an object of the Fleet's own API server).
///
/// It serialises with the kind as its name (`"kind": "Machine"`), as persisted state has it,
/// and without `cluster` when it is empty.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    /// The kind.
    pub kind: Kind,
    /// The namespace; empty when the repository leaves it to the `Fleet`'s namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
    /// The business cluster the object is placed in (its [`CLUSTER_LABEL`]); empty when it
    /// lives beside the Fleet.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster: String,
}

impl ObjectRef {
    /// An identity on the Fleet's own API server.
    pub fn new(kind: Kind, namespace: &str, name: &str) -> Self {
        ObjectRef {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            cluster: String::new(),
        }
    }

    /// The identity placed in business cluster `cluster`.
    pub fn in_cluster(mut self, cluster: &str) -> Self {
        self.cluster = cluster.to_owned();
        self
    }

    /// Reads the namespace and name of an untyped object of `kind`.
    pub fn of_value(kind: Kind, value: &Value) -> Self {
        let meta = &value["metadata"];
        ObjectRef::new(
            kind,
            meta["namespace"].as_str().unwrap_or_default(),
            meta["name"].as_str().unwrap_or_default(),
        )
    }

    /// Whether the identity is of `kind`.
    pub fn is(&self, kind: Kind) -> bool {
        self.kind == kind
    }
}

impl fmt::Display for ObjectRef {
    /// `Machine/ns/m-1`, and `Machine/ns/m-1@a` in business cluster `a`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.kind, self.name)?;
        } else {
            write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)?;
        }
        if !self.cluster.is_empty() {
            write!(f, "@{}", self.cluster)?;
        }
        Ok(())
    }
}

/// One typed object of a fleet repository or of the live fleet.
///
/// The object is shared (`Arc`): a rendered fleet moves and sorts 100k of these, the render
/// cache, the desired set and the live caches hand the same objects around, and the kinds
/// differ a lot in size. Changing one copies it first ([`Arc::make_mut`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum FleetObject {
    /// A node component version.
    MachinePackageVersion(Arc<MachinePackageVersion>),
    /// A control-plane release.
    ClusterPackageVersion(Arc<ClusterPackageVersion>),
    /// A business cluster.
    Cluster(Arc<Cluster>),
    /// A worker node.
    Machine(Arc<Machine>),
    /// How changes roll out.
    RolloutPolicy(Arc<RolloutPolicy>),
}

/// Runs `$body` with `$o` bound to the inner object of every variant of `$object`.
macro_rules! each {
    ($object:expr, $o:ident => $body:expr) => {
        match $object {
            FleetObject::MachinePackageVersion($o) => $body,
            FleetObject::ClusterPackageVersion($o) => $body,
            FleetObject::Cluster($o) => $body,
            FleetObject::Machine($o) => $body,
            FleetObject::RolloutPolicy($o) => $body,
        }
    };
}

impl FleetObject {
    /// The object's metadata.
    pub fn meta(&self) -> &ObjectMeta {
        each!(self, o => &o.metadata)
    }

    /// The object's metadata, to change (the object is copied first if it is shared).
    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        each!(self, o => &mut Arc::make_mut(o).metadata)
    }

    /// The kind.
    pub fn kind(&self) -> Kind {
        match self {
            FleetObject::MachinePackageVersion(_) => Kind::MachinePackageVersion,
            FleetObject::ClusterPackageVersion(_) => Kind::ClusterPackageVersion,
            FleetObject::Cluster(_) => Kind::Cluster,
            FleetObject::Machine(_) => Kind::Machine,
            FleetObject::RolloutPolicy(_) => Kind::RolloutPolicy,
        }
    }

    /// The name (empty when unset).
    pub fn name(&self) -> &str {
        self.meta().name.as_deref().unwrap_or_default()
    }

    /// The business cluster the object is placed in (its [`CLUSTER_LABEL`]), empty when it
    /// lives beside the Fleet.
    pub fn cluster(&self) -> &str {
        self.meta()
            .labels
            .as_ref()
            .and_then(|l| l.get(CLUSTER_LABEL))
            .map_or("", String::as_str)
    }

    /// The identity as borrowed strings, for sorting and lookups without allocating: kind,
    /// namespace, name, business cluster.
    pub fn key(&self) -> (Kind, &str, &str, &str) {
        let meta = self.meta();
        (
            self.kind(),
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
            self.cluster(),
        )
    }

    /// The identity.
    pub fn id(&self) -> ObjectRef {
        let (kind, namespace, name, cluster) = self.key();
        ObjectRef::new(kind, namespace, name).in_cluster(cluster)
    }

    /// Whether both are the same kind with equal specs (metadata and status aside).
    pub fn same_spec(&self, other: &FleetObject) -> bool {
        match (self, other) {
            (FleetObject::MachinePackageVersion(a), FleetObject::MachinePackageVersion(b)) => {
                a.spec == b.spec
            }
            (FleetObject::ClusterPackageVersion(a), FleetObject::ClusterPackageVersion(b)) => {
                a.spec == b.spec
            }
            (FleetObject::Cluster(a), FleetObject::Cluster(b)) => a.spec == b.spec,
            (FleetObject::Machine(a), FleetObject::Machine(b)) => a.spec == b.spec,
            (FleetObject::RolloutPolicy(a), FleetObject::RolloutPolicy(b)) => a.spec == b.spec,
            _ => false,
        }
    }

    /// Gives this object `other`'s spec; nothing happens when the kinds differ.
    pub fn copy_spec_from(&mut self, other: &FleetObject) {
        match (self, other) {
            (FleetObject::MachinePackageVersion(a), FleetObject::MachinePackageVersion(b)) => {
                Arc::make_mut(a).spec = b.spec.clone();
            }
            (FleetObject::ClusterPackageVersion(a), FleetObject::ClusterPackageVersion(b)) => {
                Arc::make_mut(a).spec = b.spec.clone();
            }
            (FleetObject::Cluster(a), FleetObject::Cluster(b)) => {
                Arc::make_mut(a).spec = b.spec.clone();
            }
            (FleetObject::Machine(a), FleetObject::Machine(b)) => {
                Arc::make_mut(a).spec = b.spec.clone();
            }
            (FleetObject::RolloutPolicy(a), FleetObject::RolloutPolicy(b)) => {
                Arc::make_mut(a).spec = b.spec.clone();
            }
            _ => {}
        }
    }

    /// The spec as JSON.
    pub fn spec_value(&self) -> serde_json::Value {
        let value = match self {
            FleetObject::MachinePackageVersion(o) => serde_json::to_value(&o.spec),
            FleetObject::ClusterPackageVersion(o) => serde_json::to_value(&o.spec),
            FleetObject::Cluster(o) => serde_json::to_value(&o.spec),
            FleetObject::Machine(o) => serde_json::to_value(&o.spec),
            FleetObject::RolloutPolicy(o) => serde_json::to_value(&o.spec),
        };
        value.unwrap_or(serde_json::Value::Null)
    }

    /// Gives this object the spec `value` (as JSON); fails, changing nothing, when it is not
    /// a spec of the object's kind.
    pub fn set_spec_value(&mut self, value: serde_json::Value) -> Result<(), Invalid> {
        fn parse<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, Invalid> {
            serde_json::from_value(value).map_err(|e| Invalid(format!("not a valid spec: {e}")))
        }
        match self {
            FleetObject::MachinePackageVersion(o) => Arc::make_mut(o).spec = parse(value)?,
            FleetObject::ClusterPackageVersion(o) => Arc::make_mut(o).spec = parse(value)?,
            FleetObject::Cluster(o) => Arc::make_mut(o).spec = parse(value)?,
            FleetObject::Machine(o) => Arc::make_mut(o).spec = parse(value)?,
            FleetObject::RolloutPolicy(o) => Arc::make_mut(o).spec = parse(value)?,
        }
        Ok(())
    }

    /// Drops the status (Machines and Clusters have one).
    pub fn clear_status(&mut self) {
        match self {
            FleetObject::Machine(m) if m.status.is_some() => Arc::make_mut(m).status = None,
            FleetObject::Cluster(c) if c.status.is_some() => Arc::make_mut(c).status = None,
            _ => {}
        }
    }

    /// Decodes an untyped object of a known kind, refusing unknown fields.
    ///
    /// The error is serde's message prefixed with the path of the offending field.
    pub fn from_value(kind: Kind, value: Value) -> Result<Self, Invalid> {
        fn decode<T: serde::de::DeserializeOwned>(value: Value) -> Result<Arc<T>, Invalid> {
            serde_path_to_error::deserialize(value)
                .map(Arc::new)
                .map_err(|err| {
                    let path = err.path().to_string();
                    if path == "." {
                        err.inner().to_string()
                    } else {
                        format!("{path}: {}", err.inner())
                    }
                })
                .map_err(Invalid)
        }
        Ok(match kind {
            Kind::MachinePackageVersion => FleetObject::MachinePackageVersion(decode(value)?),
            Kind::ClusterPackageVersion => FleetObject::ClusterPackageVersion(decode(value)?),
            Kind::Cluster => FleetObject::Cluster(decode(value)?),
            Kind::Machine => FleetObject::Machine(decode(value)?),
            Kind::RolloutPolicy => FleetObject::RolloutPolicy(decode(value)?),
        })
    }
}

macro_rules! from_kind {
    ($($kind:ident),*) => {$(
        impl From<$kind> for FleetObject {
            fn from(object: $kind) -> Self {
                FleetObject::$kind(Arc::new(object))
            }
        }
    )*};
}

from_kind!(
    MachinePackageVersion,
    ClusterPackageVersion,
    Cluster,
    Machine,
    RolloutPolicy
);

/// Where an object was declared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The resource file.
    pub file: String,
    /// The 1-based line its document starts at.
    pub line: usize,
}

/// One rendered object and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct RenderedObject {
    /// The object after every patch and transformation.
    pub object: FleetObject,
    /// Its declaration.
    pub origin: Origin,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_name_themselves_and_parse_back() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
            assert_eq!(Kind::ALL[kind.index()], kind);
        }
        assert_eq!(Kind::parse("Deployment"), None);
        assert_eq!(
            serde_json::to_string(&Kind::Machine).unwrap(),
            "\"Machine\""
        );
        assert!(ObjectRef::new(Kind::Machine, "", "m").is(Kind::Machine));
    }
}
