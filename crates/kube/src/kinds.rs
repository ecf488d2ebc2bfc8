//! The fleet kinds as typed Kubernetes resources, and the conversions between them and
//! [`FleetObject`].

use std::fmt::Debug;

use endstate_api::{Cluster, ClusterPackageVersion, Machine, MachinePackageVersion, RolloutPolicy};
use std::sync::Arc;

use endstate_core::FleetObject;
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
    /// The kind's name.
    const KIND: &'static str;
    /// Wraps an object of this kind.
    fn into_fleet(self) -> FleetObject;
    /// Wraps a shared object of this kind, without copying it.
    fn share(object: Arc<Self>) -> FleetObject;
}

macro_rules! fleet_kind {
    ($($kind:ident),*) => {$(
        impl FleetKind for $kind {
            const KIND: &'static str = stringify!($kind);
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

/// Runs `$body` with `$kind` bound to the typed resource of the [`Kind`] `$name`, or
/// evaluates `$otherwise` when it is `None`.
macro_rules! with_kind {
    ($name:expr, |$kind:ident| $body:expr, $otherwise:expr) => {
        $crate::kinds::with_kind!(
            @arms $name, $kind, $body, $otherwise,
            MachinePackageVersion, ClusterPackageVersion, Cluster, Machine, RolloutPolicy
        )
    };
    (@arms $name:expr, $kind:ident, $body:expr, $otherwise:expr, $($each:ident),*) => {
        match $name {
            $(Some(endstate_core::Kind::$each) => {
                type $kind = endstate_api::$each;
                $body
            })*
            None => $otherwise,
        }
    };
}
pub(crate) use with_kind;
