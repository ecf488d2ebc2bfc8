//! The fleet kinds as typed Kubernetes resources, and the conversions between them and
//! [`FleetObject`].

use std::fmt::Debug;

use endstate_api::{Cluster, ClusterPackageVersion, Machine, MachinePackageVersion, RolloutPolicy};
use std::sync::Arc;

use endstate_core::{FleetObject, Kind};
use kube::Resource;
use kube::core::NamespaceResourceScope;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A fleet kind the backend caches and writes.
pub(crate) trait FleetKind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// The kind.
    const KIND: Kind;
    /// Wraps an object of this kind.
    fn into_fleet(self) -> FleetObject;
    /// Wraps a shared object of this kind, without copying it.
    fn share(object: Arc<Self>) -> FleetObject;
}

macro_rules! fleet_kind {
    ($($kind:ident),*) => {$(
        impl FleetKind for $kind {
            const KIND: Kind = Kind::$kind;
            fn into_fleet(self) -> FleetObject {
                FleetObject::$kind(Arc::new(self))
            }
            fn share(object: Arc<Self>) -> FleetObject {
                FleetObject::$kind(object)
            }
        }
    )*};
}

fleet_kind!(
    MachinePackageVersion,
    ClusterPackageVersion,
    Cluster,
    Machine,
    RolloutPolicy
);

/// Runs `$body` with `$kind` bound to the typed resource of the [`Kind`] `$name`.
macro_rules! with_kind {
    ($name:expr, |$kind:ident| $body:expr) => {
        $crate::kinds::with_kind!(
            @arms $name, $kind, $body,
            MachinePackageVersion, ClusterPackageVersion, Cluster, Machine, RolloutPolicy
        )
    };
    (@arms $name:expr, $kind:ident, $body:expr, $($each:ident),*) => {
        match $name {
            $(endstate_core::Kind::$each => {
                type $kind = endstate_api::$each;
                $body
            })*
        }
    };
}
pub(crate) use with_kind;
