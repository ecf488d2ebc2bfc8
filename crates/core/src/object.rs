//! Typed fleet objects as rendered from a repository, and their identities.

use std::fmt;

use endstate_api::{
    Cluster, ClusterPackageVersion, Machine, MachinePackageVersion, ObjectMeta, RolloutPolicy,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The identity of an object: kind, namespace (empty when unset) and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    /// The kind, e.g. `Machine`.
    pub kind: String,
    /// The namespace; empty when the repository leaves it to the `Fleet`'s namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl ObjectRef {
    /// An identity.
    pub fn new(kind: &str, namespace: &str, name: &str) -> Self {
        ObjectRef {
            kind: kind.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// Reads the identity of an untyped object, as far as it has one.
    pub fn of_value(value: &Value) -> Self {
        let meta = &value["metadata"];
        ObjectRef {
            kind: value["kind"].as_str().unwrap_or_default().to_owned(),
            namespace: meta["namespace"].as_str().unwrap_or_default().to_owned(),
            name: meta["name"].as_str().unwrap_or_default().to_owned(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.kind, self.name)
        } else {
            write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// One typed object of a fleet repository (boxed: a rendered fleet moves and sorts
/// 100k of these, and the kinds differ a lot in size).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum FleetObject {
    /// A node component version.
    MachinePackageVersion(Box<MachinePackageVersion>),
    /// A control-plane release.
    ClusterPackageVersion(Box<ClusterPackageVersion>),
    /// A business cluster.
    Cluster(Box<Cluster>),
    /// A worker node.
    Machine(Box<Machine>),
    /// How changes roll out.
    RolloutPolicy(Box<RolloutPolicy>),
}

impl FleetObject {
    /// The object's metadata.
    pub fn meta(&self) -> &ObjectMeta {
        match self {
            FleetObject::MachinePackageVersion(o) => &o.metadata,
            FleetObject::ClusterPackageVersion(o) => &o.metadata,
            FleetObject::Cluster(o) => &o.metadata,
            FleetObject::Machine(o) => &o.metadata,
            FleetObject::RolloutPolicy(o) => &o.metadata,
        }
    }

    /// The kind.
    pub fn kind(&self) -> &'static str {
        match self {
            FleetObject::MachinePackageVersion(_) => "MachinePackageVersion",
            FleetObject::ClusterPackageVersion(_) => "ClusterPackageVersion",
            FleetObject::Cluster(_) => "Cluster",
            FleetObject::Machine(_) => "Machine",
            FleetObject::RolloutPolicy(_) => "RolloutPolicy",
        }
    }

    /// The identity as borrowed strings, for sorting and lookups without allocating.
    pub fn key(&self) -> (&'static str, &str, &str) {
        let meta = self.meta();
        (
            self.kind(),
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        )
    }

    /// The identity.
    pub fn id(&self) -> ObjectRef {
        let meta = self.meta();
        ObjectRef::new(
            self.kind(),
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        )
    }

    /// Decodes an untyped object of a known kind, refusing unknown fields.
    ///
    /// The error is serde's message prefixed with the path of the offending field.
    pub fn from_value(kind: &str, value: Value) -> Result<Self, String> {
        fn decode<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, String> {
            serde_path_to_error::deserialize(value).map_err(|err| {
                let path = err.path().to_string();
                if path == "." {
                    err.inner().to_string()
                } else {
                    format!("{path}: {}", err.inner())
                }
            })
        }
        Ok(match kind {
            "MachinePackageVersion" => FleetObject::MachinePackageVersion(Box::new(decode(value)?)),
            "ClusterPackageVersion" => FleetObject::ClusterPackageVersion(Box::new(decode(value)?)),
            "Cluster" => FleetObject::Cluster(Box::new(decode(value)?)),
            "Machine" => FleetObject::Machine(Box::new(decode(value)?)),
            "RolloutPolicy" => FleetObject::RolloutPolicy(Box::new(decode(value)?)),
            other => return Err(format!("kind {other:?} is not a fleet kind")),
        })
    }
}
